//! Request lines: parse and format.
//!
//! Formatting reproduces the bytes of the IBP 1.4 client library exactly,
//! including the trailing space that some commands carry before `\n`.

use crate::{
    CapRef, Capability, IbpError, ProtoError, Reliability, Reply, Rid, StorageType, Version,
    MAX_LINE, MAX_PASSWORD_LEN,
};

/// Command numbers of the first two fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Allocate,
    Store,
    Status,
    Copy,
    Load,
    Manage,
    Write,
}

impl Command {
    pub fn number(self) -> u32 {
        match self {
            Command::Allocate => 1,
            Command::Store => 2,
            Command::Status => 4,
            Command::Copy => 5,
            Command::Load => 8,
            Command::Manage => 9,
            Command::Write => 13,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Allocate => "ALLOCATE",
            Command::Store => "STORE",
            Command::Status => "STATUS",
            Command::Copy => "COPY",
            Command::Load => "LOAD",
            Command::Manage => "MANAGE",
            Command::Write => "WRITE",
        }
    }

    pub(crate) fn from_token(t: &str) -> Option<Command> {
        Some(match t {
            "1" => Command::Allocate,
            "2" => Command::Store,
            "4" => Command::Status,
            "5" => Command::Copy,
            "8" => Command::Load,
            "9" => Command::Manage,
            "13" => Command::Write,
            _ => return None,
        })
    }
}

/// ALLOCATE: `1 1 <rid> <rel> <type> <duration> <size> <timeout>\n` (v1) or
/// `0 1 <rel> <type> <duration> <size> <timeout>\n` (v0, default resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocate {
    pub version: Version,
    /// `None` in the v0 form: the depot's default resource.
    pub rid: Option<Rid>,
    pub reliability: Reliability,
    pub storage: StorageType,
    /// Relative seconds; `-1` asks for the resource's maximum.
    pub duration: i64,
    pub size: u64,
    pub timeout: i64,
}

/// STORE (append): `0 2 <rid>#<key> <typekey> <size> <timeout> \n`, then
/// `<size>` bytes after the depot's `1 \n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub cap: CapRef,
    pub size: u64,
    pub timeout: i64,
}

/// WRITE at an offset: `0 13 <rid>#<key> <typekey> <offset> <size> <timeout> \n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub cap: CapRef,
    pub offset: u64,
    pub size: u64,
    pub timeout: i64,
}

/// LOAD: `0 8 <rid>#<key> <typekey> <offset> <size> <timeout> \n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub cap: CapRef,
    pub offset: u64,
    pub size: u64,
    pub timeout: i64,
}

/// COPY (IBP SEND, depot to depot):
/// `0 5 <rid>#<key> <target WRITE cap> <typekey> <offset> <size> <src_to> <tgt_to> <dm_to> \n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The source READ capability (rid, key and typekey).
    pub source: CapRef,
    pub target: Capability,
    pub offset: u64,
    pub size: u64,
    pub source_timeout: i64,
    pub target_timeout: i64,
    pub mover_timeout: i64,
}

/// The attribute fields of MANAGE PROBE and CHNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// New maximum size (CHNG); `0` keeps it.
    pub max_size: u64,
    /// New duration in relative seconds (CHNG); `0` keeps it, `-1` is the maximum.
    pub duration: i64,
    /// New reliability number (CHNG); `0` keeps it.
    pub reliability: i64,
}

/// MANAGE sub-commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManageOp {
    /// 40: report the allocation's state (the attribute fields are ignored).
    Probe(Attributes),
    /// 41: increment the reference count of the capability type.
    Incr,
    /// 42: decrement it; the allocation is deleted when the READ count hits 0.
    Decr,
    /// 43: change size, duration and reliability.
    Change(Attributes),
}

impl ManageOp {
    pub fn number(self) -> u32 {
        match self {
            ManageOp::Probe(_) => 40,
            ManageOp::Incr => 41,
            ManageOp::Decr => 42,
            ManageOp::Change(_) => 43,
        }
    }
}

/// MANAGE: `0 9 <rid>#<key> <typekey> <op> <captype> [<size> <duration> <rel>] <timeout>\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manage {
    /// The MANAGE capability.
    pub cap: CapRef,
    pub op: ManageOp,
    /// 1 READ, 2 WRITE (the reference count INCR/DECR act on); LoRS sends 0.
    pub cap_type: u8,
    pub timeout: i64,
}

/// STATUS sub-commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusOp {
    /// 1: the v1.4 tagged summary of a resource.
    Inquire { rid: Option<Rid>, password: String },
    /// 2: change a resource's capacities; a second line follows with
    /// `<hard> <soft> <max_duration> \n`.
    Change { rid: Option<Rid>, password: String },
    /// 3 (v1 only): the depot's RIDs.
    Resources,
    /// 4 (v1 only): counters since the given time.
    Stats { since: i64 },
    /// 5 (v1 only): the version text.
    Version,
}

impl StatusOp {
    pub fn number(&self) -> u32 {
        match self {
            StatusOp::Inquire { .. } => 1,
            StatusOp::Change { .. } => 2,
            StatusOp::Resources => 3,
            StatusOp::Stats { .. } => 4,
            StatusOp::Version => 5,
        }
    }
}

/// STATUS: `1 4 <rid> <op> <password> <timeout>\n` or `0 4 <op> <password> <timeout>\n`,
/// and the v1 forms `1 4 3 <timeout>\n`, `1 4 4 <since> <timeout>\n`, `1 4 5 <timeout>\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: Version,
    pub op: StatusOp,
    pub timeout: i64,
}

/// One parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Allocate(Allocate),
    Store(Store),
    Write(Write),
    Load(Load),
    Copy(Copy),
    Manage(Manage),
    Status(Status),
}

/// A request line that failed to parse, with the command when it was known
/// (the error reply's format depends on it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct RequestError {
    pub command: Option<Command>,
    pub kind: ProtoError,
}

impl RequestError {
    pub fn ibp_error(&self) -> IbpError {
        self.kind.ibp_error()
    }

    /// The reply a depot sends before closing the connection.
    pub fn reply(&self) -> Reply {
        match self.command {
            Some(Command::Status) => Reply::StatusError(self.ibp_error()),
            _ => Reply::Error(self.ibp_error()),
        }
    }
}

impl Request {
    pub fn command(&self) -> Command {
        match self {
            Request::Allocate(_) => Command::Allocate,
            Request::Store(_) => Command::Store,
            Request::Write(_) => Command::Write,
            Request::Load(_) => Command::Load,
            Request::Copy(_) => Command::Copy,
            Request::Manage(_) => Command::Manage,
            Request::Status(_) => Command::Status,
        }
    }

    /// The request line exactly as IBP 1.4's client library writes it.
    pub fn encode(&self) -> String {
        match self {
            Request::Allocate(a) => match (a.version, a.rid) {
                (Version::V1, rid) => format!(
                    "1 1 {} {} {} {} {} {}\n",
                    rid.unwrap_or(Rid(0)),
                    a.reliability.number(),
                    a.storage.number(),
                    a.duration,
                    a.size,
                    a.timeout
                ),
                (Version::V0, _) => format!(
                    "0 1 {} {} {} {} {}\n",
                    a.reliability.number(),
                    a.storage.number(),
                    a.duration,
                    a.size,
                    a.timeout
                ),
            },
            Request::Store(s) => format!(
                "0 2 {} {} {} {} \n",
                s.cap.rid_key(),
                s.cap.typekey,
                s.size,
                s.timeout
            ),
            Request::Write(w) => format!(
                "0 13 {} {} {} {} {} \n",
                w.cap.rid_key(),
                w.cap.typekey,
                w.offset,
                w.size,
                w.timeout
            ),
            Request::Load(l) => format!(
                "0 8 {} {} {} {} {} \n",
                l.cap.rid_key(),
                l.cap.typekey,
                l.offset,
                l.size,
                l.timeout
            ),
            Request::Copy(c) => format!(
                "0 5 {} {} {} {} {} {} {} {} \n",
                c.source.rid_key(),
                c.target,
                c.source.typekey,
                c.offset,
                c.size,
                c.source_timeout,
                c.target_timeout,
                c.mover_timeout
            ),
            Request::Manage(m) => match m.op {
                ManageOp::Probe(a) | ManageOp::Change(a) => format!(
                    "0 9 {} {} {} {} {} {} {} {}\n",
                    m.cap.rid_key(),
                    m.cap.typekey,
                    m.op.number(),
                    m.cap_type,
                    a.max_size,
                    a.duration,
                    a.reliability,
                    m.timeout
                ),
                ManageOp::Incr | ManageOp::Decr => format!(
                    "0 9 {} {} {} {} {}\n",
                    m.cap.rid_key(),
                    m.cap.typekey,
                    m.op.number(),
                    m.cap_type,
                    m.timeout
                ),
            },
            Request::Status(s) => {
                let v = s.version.number();
                match &s.op {
                    StatusOp::Inquire { rid, password } | StatusOp::Change { rid, password } => {
                        match (s.version, rid) {
                            (Version::V1, rid) => format!(
                                "1 4 {} {} {} {}\n",
                                rid.unwrap_or(Rid(0)),
                                s.op.number(),
                                password,
                                s.timeout
                            ),
                            (Version::V0, _) => {
                                format!("0 4 {} {} {}\n", s.op.number(), password, s.timeout)
                            }
                        }
                    }
                    StatusOp::Resources | StatusOp::Version => {
                        format!("{v} 4 {} {}\n", s.op.number(), s.timeout)
                    }
                    StatusOp::Stats { since } => format!("{v} 4 4 {since} {}\n", s.timeout),
                }
            }
        }
    }
}

/// Parses one request line (with or without its final `\n`).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let fail = |command, kind| RequestError { command, kind };
    let text = line_text(line).map_err(|k| fail(None, k))?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let (version, command) = match tokens.as_slice() {
        [] => return Err(fail(None, ProtoError::Empty)),
        [_] => return Err(fail(None, ProtoError::FieldCount("request"))),
        [v, c, ..] => (*v, *c),
    };
    let command_kind = Command::from_token(command)
        .ok_or_else(|| fail(None, ProtoError::UnknownCommand(command.into())))?;
    let version = match version {
        "0" => Version::V0,
        "1" => Version::V1,
        other => {
            return Err(fail(
                Some(command_kind),
                ProtoError::UnknownVersion(other.into()),
            ))
        }
    };
    let args = &tokens[2..];
    parse_command(version, command_kind, args).map_err(|kind| fail(Some(command_kind), kind))
}

fn line_text(line: &[u8]) -> Result<&str, ProtoError> {
    line_text_max(line, MAX_LINE)
}

pub(crate) fn line_text_max(line: &[u8], max: usize) -> Result<&str, ProtoError> {
    // The limit counts the final `\n`, whether or not the caller passed it.
    let terminated = line.ends_with(b"\n");
    if line.len() + usize::from(!terminated) > max {
        return Err(ProtoError::LineTooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
    {
        return Err(ProtoError::NotText);
    }
    std::str::from_utf8(line).map_err(|_| ProtoError::NotText)
}

fn parse_command(version: Version, command: Command, args: &[&str]) -> Result<Request, ProtoError> {
    let name = command.name();
    // Only ALLOCATE and STATUS have a v1 form.
    if version == Version::V1 && !matches!(command, Command::Allocate | Command::Status) {
        return Err(ProtoError::UnknownVersion("1".into()));
    }
    Ok(match command {
        Command::Allocate => {
            let (rid, rest) = match (version, args.len()) {
                // <rid> <rel> <type> <duration> <size> <timeout>
                (Version::V1, 6) => (Some(Rid(uint32(args[0], "rid")?)), &args[1..]),
                // <rel> <type> <duration> <size> <timeout>
                (Version::V0, 5) => (None, args),
                _ => return Err(ProtoError::FieldCount(name)),
            };
            let reliability = Reliability::from_number(int(rest[0], "reliability")?)
                .ok_or(ProtoError::OutOfRange("reliability"))?;
            let storage = StorageType::from_number(int(rest[1], "type")?)
                .ok_or(ProtoError::OutOfRange("type"))?;
            Request::Allocate(Allocate {
                version,
                rid,
                reliability,
                storage,
                duration: int(rest[2], "duration")?,
                size: uint(rest[3], "size")?,
                timeout: int(rest[4], "timeout")?,
            })
        }
        Command::Store => {
            let [cap, tk, size, to] = fields(args, name)?;
            Request::Store(Store {
                cap: cap_ref(cap, tk)?,
                size: uint(size, "size")?,
                timeout: int(to, "timeout")?,
            })
        }
        Command::Write => {
            let [cap, tk, off, size, to] = fields(args, name)?;
            Request::Write(Write {
                cap: cap_ref(cap, tk)?,
                offset: uint(off, "offset")?,
                size: uint(size, "size")?,
                timeout: int(to, "timeout")?,
            })
        }
        Command::Load => {
            let [cap, tk, off, size, to] = fields(args, name)?;
            Request::Load(Load {
                cap: cap_ref(cap, tk)?,
                offset: uint(off, "offset")?,
                size: uint(size, "size")?,
                timeout: int(to, "timeout")?,
            })
        }
        Command::Copy => {
            let [cap, target, tk, off, size, sto, tto, dto] = fields(args, name)?;
            Request::Copy(Copy {
                source: cap_ref(cap, tk)?,
                target: target.parse()?,
                offset: uint(off, "offset")?,
                size: uint(size, "size")?,
                source_timeout: int(sto, "source timeout")?,
                target_timeout: int(tto, "target timeout")?,
                mover_timeout: int(dto, "data mover timeout")?,
            })
        }
        Command::Manage => {
            if args.len() < 4 {
                return Err(ProtoError::FieldCount(name));
            }
            let cap = cap_ref(args[0], args[1])?;
            let cap_type = u8::try_from(uint(args[3], "captype")?)
                .map_err(|_| ProtoError::OutOfRange("captype"))?;
            let (op, timeout) = match (args[2], &args[4..]) {
                ("40" | "43", [size, dur, rel, to]) => {
                    let attrs = Attributes {
                        max_size: uint(size, "max size")?,
                        duration: int(dur, "duration")?,
                        reliability: int(rel, "reliability")?,
                    };
                    let op = if args[2] == "40" {
                        ManageOp::Probe(attrs)
                    } else {
                        ManageOp::Change(attrs)
                    };
                    (op, int(to, "timeout")?)
                }
                ("41", [to]) => (ManageOp::Incr, int(to, "timeout")?),
                ("42", [to]) => (ManageOp::Decr, int(to, "timeout")?),
                ("40" | "41" | "42" | "43", _) => return Err(ProtoError::FieldCount(name)),
                (other, _) => return Err(ProtoError::UnknownCommand(format!("MANAGE {other}"))),
            };
            Request::Manage(Manage {
                cap,
                op,
                cap_type,
                timeout,
            })
        }
        Command::Status => parse_status(version, args)?,
    })
}

fn rid_op(rid: Option<Rid>, op: &str, pw: &str) -> Result<StatusOp, ProtoError> {
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(ProtoError::OutOfRange("password"));
    }
    let password = pw.to_owned();
    match op {
        "1" => Ok(StatusOp::Inquire { rid, password }),
        "2" => Ok(StatusOp::Change { rid, password }),
        other => Err(ProtoError::UnknownCommand(format!("STATUS {other}"))),
    }
}

/// `<rid> <op> <password>` of a STATUS INQ or CHANGE with a RID.
pub(crate) fn parse_status_rid(rid: &str, op: &str, pw: &str) -> Result<StatusOp, ProtoError> {
    rid_op(Some(Rid(uint32(rid, "rid")?)), op, pw)
}

fn parse_status(version: Version, args: &[&str]) -> Result<Request, ProtoError> {
    let (op, timeout) = match (version, args) {
        (Version::V1, [rid, op, pw, to]) => (rid_op(Some(Rid(uint32(rid, "rid")?)), op, pw)?, *to),
        (Version::V0, [op, pw, to]) => (rid_op(None, op, pw)?, *to),
        (Version::V1, ["3", to]) => (StatusOp::Resources, *to),
        (Version::V1, ["5", to]) => (StatusOp::Version, *to),
        (Version::V1, ["4", since, to]) => (
            StatusOp::Stats {
                since: int(since, "since")?,
            },
            *to,
        ),
        _ => return Err(ProtoError::FieldCount("STATUS")),
    };
    Ok(Request::Status(Status {
        version,
        op,
        timeout: int(timeout, "timeout")?,
    }))
}

/// Parses the second line of STATUS CHANGE: `<hard> <soft> <max_duration>`.
pub fn parse_status_change_values(line: &[u8]) -> Result<(u64, u64, i64), ProtoError> {
    let text = line_text(line)?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let [hard, soft, dur] = fields(&tokens, "STATUS CHANGE values")?;
    Ok((
        uint(hard, "hard size")?,
        uint(soft, "soft size")?,
        int(dur, "max duration")?,
    ))
}

pub(crate) fn fields<'a, const N: usize>(
    args: &[&'a str],
    name: &'static str,
) -> Result<[&'a str; N], ProtoError> {
    <[&str; N]>::try_from(args).map_err(|_| ProtoError::FieldCount(name))
}

pub(crate) fn cap_ref(rid_key: &str, typekey: &str) -> Result<CapRef, ProtoError> {
    let typekey = typekey
        .parse::<u32>()
        .map_err(|_| ProtoError::BadCapability("typekey is not a number"))?;
    CapRef::parse_rid_key(rid_key, typekey)
}

/// Whether `digits` is one or more ASCII digits.
fn all_digits(digits: &str) -> bool {
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn int(token: &str, field: &'static str) -> Result<i64, ProtoError> {
    if !all_digits(token.strip_prefix('-').unwrap_or(token)) {
        return Err(ProtoError::NotNumber(field));
    }
    token
        .parse::<i64>()
        .map_err(|_| ProtoError::OutOfRange(field))
}

pub(crate) fn uint(token: &str, field: &'static str) -> Result<u64, ProtoError> {
    if token.starts_with('-') {
        // A well-formed negative number is a bad value (-30), not a bad format.
        let n = int(token, field)?;
        return u64::try_from(n).map_err(|_| ProtoError::OutOfRange(field));
    }
    if !all_digits(token) {
        return Err(ProtoError::NotNumber(field));
    }
    token
        .parse::<u64>()
        .map_err(|_| ProtoError::OutOfRange(field))
}

pub(crate) fn uint32(token: &str, field: &'static str) -> Result<u32, ProtoError> {
    u32::try_from(uint(token, field)?).map_err(|_| ProtoError::OutOfRange(field))
}
