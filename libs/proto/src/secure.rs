//! The secure port's request forms (protocol version `2`).
//!
//! Every request line on the TLS port starts with `2`. The session begins
//! with AUTH (the L-Bone's depot grant); STORE and WRITE carry the file UUID
//! the allocation is bound to, LOAD carries the metadata manager's file
//! ticket. Replies are those of the legacy protocol.

use crate::request::{cap_ref, fields, int, line_text_max, parse_status_rid, uint, uint32};
use crate::{
    Allocate, CapRef, Capability, Command, IbpError, Load, Manage, ProtoError, Reliability, Reply,
    Request, RequestError, Rid, Status, StatusOp, StorageType, Store, Version, Write,
};

/// Longest request line (including `\n`) on the secure port: a grant or a
/// ticket may be up to [`MAX_TOKEN_LEN`] characters.
pub const MAX_SECURE_LINE: usize = 8192;

/// Longest grant or ticket text.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The command number of AUTH.
pub const AUTH_COMMAND: u32 = 20;

/// The command number of CRYPTO (open a crypto-level session).
pub const CRYPTO_COMMAND: u32 = 21;

/// The command number of JOIN (first line of a crypto-level data connection).
pub const JOIN_COMMAND: u32 = 22;

/// The command number of QUOTA (the caller's own byte quotas at the depot).
pub const QUOTA_COMMAND: u32 = 23;

/// The answer to QUOTA: `1 <vo_used> <vo_limit> <user_used> <user_limit> \n`,
/// bytes, a limit of `-1` meaning none. `vo_*` is the caller's VO at this
/// depot, `user_*` the caller (VO ID) in it: what allocations made in
/// authenticated sessions reserve (their sizes), across every resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaInfo {
    pub vo_used: u64,
    pub vo_limit: Option<u64>,
    pub user_used: u64,
    pub user_limit: Option<u64>,
}

impl QuotaInfo {
    /// Bytes the caller may still allocate at the depot (`None`: no limit).
    pub fn remaining(&self) -> Option<u64> {
        let vo = self.vo_limit.map(|l| l.saturating_sub(self.vo_used));
        let user = self.user_limit.map(|l| l.saturating_sub(self.user_used));
        match (vo, user) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The reply line.
    pub fn encode(&self) -> String {
        let limit = |l: Option<u64>| l.map_or("-1".to_owned(), |v| v.to_string());
        format!(
            "1 {} {} {} {} \n",
            self.vo_used,
            limit(self.vo_limit),
            self.user_used,
            limit(self.user_limit)
        )
    }

    /// Parses the reply line (without or with its `\n`).
    pub fn parse(line: &str) -> Result<QuotaInfo, ProtoError> {
        let bad = ProtoError::BadReply("not a QUOTA reply");
        let w: Vec<&str> = line.split_ascii_whitespace().collect();
        let [ok, vu, vl, uu, ul] = w.as_slice() else {
            return Err(bad);
        };
        if *ok != "1" {
            return Err(bad);
        }
        let used = |t: &str| t.parse::<u64>().map_err(|_| bad.clone());
        let limit = |t: &str| match t {
            "-1" => Ok(None),
            t => t.parse::<u64>().map(Some).map_err(|_| bad.clone()),
        };
        Ok(QuotaInfo {
            vo_used: used(vu)?,
            vo_limit: limit(vl)?,
            user_used: used(uu)?,
            user_limit: limit(ul)?,
        })
    }
}

/// AUTH: `2 20 <grant> <timeout>\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub grant: String,
    pub timeout: i64,
}

/// STORE bound to a file: `2 2 <rid>#<key> <typekey> <size> <uuid> <timeout> \n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureStore {
    pub store: Store,
    /// Canonical hyphenated, lower-case UUID.
    pub uuid: String,
}

/// WRITE bound to a file: `2 13 <rid>#<key> <typekey> <offset> <size> <uuid> <timeout> \n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureWrite {
    pub write: Write,
    pub uuid: String,
}

/// LOAD with a file ticket: `2 8 <rid>#<key> <typekey> <offset> <size> <ticket> <timeout> \n`.
/// Without the ticket field the line parses (the depot then refuses the
/// LOAD with `-12`, saying a ticket is needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureLoad {
    pub load: Load,
    pub ticket: Option<String>,
}

/// Depot-to-depot COPY on the secure port:
/// `2 5 <rid>#<key> <typekey> <offset> <size> <target WRITE capability> <grant> <uuid> <timeout> \n`.
/// The source depot authenticates at the target with its own certificate
/// and `grant` (a depot grant for the target bound to the source depot's
/// key), then STOREs the bytes there bound to `uuid`; reply `1 <n>\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureCopy {
    /// The source READ capability.
    pub source: CapRef,
    pub offset: u64,
    pub size: u64,
    /// The target WRITE capability (its host and port are the target's secure port).
    pub target: Capability,
    /// Depot grant for the target, bound to the source depot's key.
    pub grant: String,
    /// Canonical hyphenated, lower-case UUID the source allocation is bound to.
    pub uuid: String,
    pub timeout: i64,
}

/// One request of the secure port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureRequest {
    Auth(Auth),
    /// `2 1 <rid> <rel> <type> <duration> <size> <timeout>\n`.
    Allocate(Allocate),
    Store(SecureStore),
    Write(SecureWrite),
    Load(SecureLoad),
    /// `2 9 ...` as the v0 MANAGE.
    Manage(Manage),
    /// STATUS: `2 4 <rid> 1 <password> <timeout>\n` (INQ: one resource's
    /// summary) or `2 4 3 <timeout>\n` (RES: the depot's RIDs, the reply of
    /// the legacy `1 4 3`). A verified TLS peer may send either before AUTH.
    Status(Status),
    Copy(SecureCopy),
    /// `2 21 <timeout>\n`: opens a crypto-level session for data
    /// connections; reply `1 <session id hex> \n`.
    Crypto {
        timeout: i64,
    },
    /// `2 23 <timeout>\n` (after AUTH): the caller's own quotas and use at
    /// this depot; reply [`QuotaInfo`].
    Quota {
        timeout: i64,
    },
}

/// Parses a UUID in its canonical 8-4-4-4-12 hexadecimal form; returns its
/// 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (b.get(i + 1).copied()? as char).to_digit(16)?;
        out[n] = (hi * 16 + lo) as u8;
        n += 1;
        i += 2;
    }
    Some(out)
}

/// The canonical (lower-case, hyphenated) text of a UUID.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn token(t: &str, field: &'static str) -> Result<String, ProtoError> {
    if t.is_empty() || t.len() > MAX_TOKEN_LEN {
        return Err(ProtoError::OutOfRange(field));
    }
    let ok = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok || t.bytes().filter(|b| *b == b'.').count() != 1 {
        return Err(ProtoError::OutOfRange(field));
    }
    Ok(t.to_owned())
}

fn uuid(t: &str) -> Result<String, ProtoError> {
    parse_uuid(t)
        .map(|u| format_uuid(&u))
        .ok_or(ProtoError::OutOfRange("uuid"))
}

impl SecureRequest {
    /// The legacy command this request corresponds to (`None` for AUTH).
    pub fn command(&self) -> Option<Command> {
        Some(match self {
            SecureRequest::Auth(_) | SecureRequest::Crypto { .. } | SecureRequest::Quota { .. } => {
                return None
            }
            SecureRequest::Allocate(_) => Command::Allocate,
            SecureRequest::Store(_) => Command::Store,
            SecureRequest::Write(_) => Command::Write,
            SecureRequest::Load(_) => Command::Load,
            SecureRequest::Manage(_) => Command::Manage,
            SecureRequest::Status(_) => Command::Status,
            SecureRequest::Copy(_) => Command::Copy,
        })
    }

    /// The name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            SecureRequest::Crypto { .. } => "CRYPTO",
            SecureRequest::Quota { .. } => "QUOTA",
            _ => self.command().map_or("AUTH", Command::name),
        }
    }

    /// The request line.
    pub fn encode(&self) -> String {
        match self {
            SecureRequest::Auth(a) => format!("2 20 {} {}\n", a.grant, a.timeout),
            SecureRequest::Crypto { timeout } => format!("2 21 {timeout}\n"),
            SecureRequest::Quota { timeout } => format!("2 23 {timeout}\n"),
            SecureRequest::Allocate(a) => format!(
                "2 1 {} {} {} {} {} {}\n",
                a.rid.unwrap_or(Rid(0)),
                a.reliability.number(),
                a.storage.number(),
                a.duration,
                a.size,
                a.timeout
            ),
            SecureRequest::Store(s) => format!(
                "2 2 {} {} {} {} {} \n",
                s.store.cap.rid_key(),
                s.store.cap.typekey,
                s.store.size,
                s.uuid,
                s.store.timeout
            ),
            SecureRequest::Write(w) => format!(
                "2 13 {} {} {} {} {} {} \n",
                w.write.cap.rid_key(),
                w.write.cap.typekey,
                w.write.offset,
                w.write.size,
                w.uuid,
                w.write.timeout
            ),
            SecureRequest::Load(l) => format!(
                "2 8 {} {} {} {} {}{} \n",
                l.load.cap.rid_key(),
                l.load.cap.typekey,
                l.load.offset,
                l.load.size,
                l.ticket
                    .as_ref()
                    .map(|t| format!("{t} "))
                    .unwrap_or_default(),
                l.load.timeout
            ),
            SecureRequest::Manage(m) => {
                let v0 = Request::Manage(m.clone()).encode();
                format!("2{}", &v0[1..])
            }
            SecureRequest::Status(s) => match &s.op {
                StatusOp::Resources => format!("2 4 3 {}\n", s.timeout),
                StatusOp::Inquire { rid, password } | StatusOp::Change { rid, password } => {
                    format!(
                        "2 4 {} {} {password} {}\n",
                        rid.unwrap_or(Rid(0)),
                        s.op.number(),
                        s.timeout
                    )
                }
                // Not served on the secure port (the parser refuses them),
                // written as their v1 forms with version 2.
                StatusOp::Version => format!("2 4 5 {}\n", s.timeout),
                StatusOp::Stats { since } => format!("2 4 4 {since} {}\n", s.timeout),
            },
            SecureRequest::Copy(c) => format!(
                "2 5 {} {} {} {} {} {} {} {} \n",
                c.source.rid_key(),
                c.source.typekey,
                c.offset,
                c.size,
                c.target,
                c.grant,
                c.uuid,
                c.timeout
            ),
        }
    }

    /// The error reply a depot sends for `e` in answer to this request.
    pub fn error_reply(&self, e: IbpError) -> Reply {
        match self {
            SecureRequest::Status(_) => Reply::StatusError(e),
            _ => Reply::Error(e),
        }
    }
}

/// The reply to a refused AUTH: the error code, then a short reason
/// (printable ASCII): ` <code> <reason>\n`. Legacy reply parsers read it as
/// the plain error.
pub fn auth_refusal(e: IbpError, reason: &str) -> String {
    let reason: String = reason
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(400)
        .collect();
    format!(" {} {}\n", e.code(), reason.trim())
}

/// Parses one line of the secure port (at most [`MAX_SECURE_LINE`] bytes).
pub fn parse_secure_request(line: &[u8]) -> Result<SecureRequest, RequestError> {
    let fail = |command, kind| RequestError { command, kind };
    let text = line_text_max(line, MAX_SECURE_LINE).map_err(|k| fail(None, k))?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let (version, command) = match tokens.as_slice() {
        [] => return Err(fail(None, ProtoError::Empty)),
        [_] => return Err(fail(None, ProtoError::FieldCount("request"))),
        [v, c, ..] => (*v, *c),
    };
    if command == "21" {
        if version != "2" {
            return Err(fail(None, ProtoError::UnknownVersion(version.into())));
        }
        let [to] = fields(&tokens[2..], "CRYPTO").map_err(|k| fail(None, k))?;
        let timeout = int(to, "timeout").map_err(|k| fail(None, k))?;
        return Ok(SecureRequest::Crypto { timeout });
    }
    if command == "23" {
        if version != "2" {
            return Err(fail(None, ProtoError::UnknownVersion(version.into())));
        }
        let [to] = fields(&tokens[2..], "QUOTA").map_err(|k| fail(None, k))?;
        let timeout = int(to, "timeout").map_err(|k| fail(None, k))?;
        return Ok(SecureRequest::Quota { timeout });
    }
    let cmd = match command {
        "20" => None,
        c => Some(
            Command::from_token(c)
                .ok_or_else(|| fail(None, ProtoError::UnknownCommand(c.into())))?,
        ),
    };
    if version != "2" {
        return Err(fail(cmd, ProtoError::UnknownVersion(version.into())));
    }
    let args = &tokens[2..];
    parse_secure(cmd, args).map_err(|kind| fail(cmd, kind))
}

fn parse_secure(cmd: Option<Command>, args: &[&str]) -> Result<SecureRequest, ProtoError> {
    let Some(cmd) = cmd else {
        let [grant, to] = fields(args, "AUTH")?;
        return Ok(SecureRequest::Auth(Auth {
            grant: token(grant, "grant")?,
            timeout: int(to, "timeout")?,
        }));
    };
    let name = cmd.name();
    Ok(match cmd {
        Command::Allocate => {
            let [rid, rel, ty, dur, size, to] = fields(args, name)?;
            SecureRequest::Allocate(Allocate {
                version: Version::V1,
                rid: Some(Rid(uint32(rid, "rid")?)),
                reliability: Reliability::from_number(int(rel, "reliability")?)
                    .ok_or(ProtoError::OutOfRange("reliability"))?,
                storage: StorageType::from_number(int(ty, "type")?)
                    .ok_or(ProtoError::OutOfRange("type"))?,
                duration: int(dur, "duration")?,
                size: uint(size, "size")?,
                timeout: int(to, "timeout")?,
            })
        }
        Command::Store => {
            let [cap, tk, size, id, to] = fields(args, name)?;
            SecureRequest::Store(SecureStore {
                store: Store {
                    cap: cap_ref(cap, tk)?,
                    size: uint(size, "size")?,
                    timeout: int(to, "timeout")?,
                },
                uuid: uuid(id)?,
            })
        }
        Command::Write => {
            let [cap, tk, off, size, id, to] = fields(args, name)?;
            SecureRequest::Write(SecureWrite {
                write: Write {
                    cap: cap_ref(cap, tk)?,
                    offset: uint(off, "offset")?,
                    size: uint(size, "size")?,
                    timeout: int(to, "timeout")?,
                },
                uuid: uuid(id)?,
            })
        }
        Command::Load => {
            let (cap, tk, off, size, ticket, to) = match args {
                [cap, tk, off, size, ticket, to] => (cap, tk, off, size, Some(ticket), to),
                [cap, tk, off, size, to] => (cap, tk, off, size, None, to),
                _ => return Err(ProtoError::FieldCount(name)),
            };
            SecureRequest::Load(SecureLoad {
                load: Load {
                    cap: cap_ref(cap, tk)?,
                    offset: uint(off, "offset")?,
                    size: uint(size, "size")?,
                    timeout: int(to, "timeout")?,
                },
                ticket: ticket.map(|t| token(t, "ticket")).transpose()?,
            })
        }
        Command::Manage => {
            // Same fields as the v0 MANAGE.
            let mut line = String::from("0 9");
            for a in args {
                line.push(' ');
                line.push_str(a);
            }
            match crate::parse_request(line.as_bytes()).map_err(|e| e.kind)? {
                Request::Manage(m) => SecureRequest::Manage(m),
                _ => return Err(ProtoError::FieldCount(name)),
            }
        }
        Command::Status => {
            let (op, to) = match args {
                // RES: the RIDs (as the legacy `1 4 3 <timeout>`).
                ["3", to] => (StatusOp::Resources, to),
                [rid, op, pw, to] => (parse_status_rid(rid, op, pw)?, to),
                [_, _] => {
                    return Err(ProtoError::UnknownCommand(
                        "STATUS (secure port: INQ or RES only)".into(),
                    ))
                }
                _ => return Err(ProtoError::FieldCount("STATUS")),
            };
            if !matches!(op, StatusOp::Inquire { .. } | StatusOp::Resources) {
                return Err(ProtoError::UnknownCommand(
                    "STATUS (secure port: INQ or RES only)".into(),
                ));
            }
            SecureRequest::Status(Status {
                version: Version::V1,
                op,
                timeout: int(to, "timeout")?,
            })
        }
        Command::Copy => {
            let [cap, tk, off, size, target, grant, id, to] = fields(args, name)?;
            SecureRequest::Copy(SecureCopy {
                source: cap_ref(cap, tk)?,
                offset: uint(off, "offset")?,
                size: uint(size, "size")?,
                target: target.parse()?,
                grant: token(grant, "grant")?,
                uuid: uuid(id)?,
                timeout: int(to, "timeout")?,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attributes, CapRef, ManageOp};

    const UUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const TOKEN: &str = "AAECAwQ_-w.c2lnbmF0dXJl";

    fn cap() -> CapRef {
        CapRef {
            rid: Rid(3),
            key: "IBP-abcDEF123".into(),
            typekey: 77,
        }
    }

    fn samples() -> Vec<SecureRequest> {
        vec![
            SecureRequest::Auth(Auth {
                grant: TOKEN.into(),
                timeout: 30,
            }),
            SecureRequest::Allocate(Allocate {
                version: Version::V1,
                rid: Some(Rid(3)),
                reliability: Reliability::Hard,
                storage: StorageType::ByteArray,
                duration: 3600,
                size: 1 << 20,
                timeout: 30,
            }),
            SecureRequest::Store(SecureStore {
                store: Store {
                    cap: cap(),
                    size: 10,
                    timeout: 30,
                },
                uuid: UUID.into(),
            }),
            SecureRequest::Write(SecureWrite {
                write: Write {
                    cap: cap(),
                    offset: 5,
                    size: 10,
                    timeout: 30,
                },
                uuid: UUID.into(),
            }),
            SecureRequest::Load(SecureLoad {
                load: Load {
                    cap: cap(),
                    offset: 0,
                    size: 10,
                    timeout: 30,
                },
                ticket: Some(TOKEN.into()),
            }),
            SecureRequest::Load(SecureLoad {
                load: Load {
                    cap: cap(),
                    offset: 0,
                    size: 10,
                    timeout: 30,
                },
                ticket: None,
            }),
            SecureRequest::Manage(Manage {
                cap: cap(),
                op: ManageOp::Probe(Attributes {
                    max_size: 0,
                    duration: 0,
                    reliability: 0,
                }),
                cap_type: 0,
                timeout: 30,
            }),
            SecureRequest::Manage(Manage {
                cap: cap(),
                op: ManageOp::Decr,
                cap_type: 1,
                timeout: 30,
            }),
            SecureRequest::Status(Status {
                version: Version::V1,
                op: StatusOp::Inquire {
                    rid: Some(Rid(3)),
                    password: "ibp".into(),
                },
                timeout: 30,
            }),
            SecureRequest::Crypto { timeout: 30 },
            SecureRequest::Status(Status {
                version: Version::V1,
                op: StatusOp::Resources,
                timeout: 30,
            }),
            SecureRequest::Copy(SecureCopy {
                source: cap(),
                offset: 2,
                size: 10,
                target: "ibp://depot2.example.org:6715/0#IBP-xyz/5/WRITE"
                    .parse()
                    .unwrap(),
                grant: TOKEN.into(),
                uuid: UUID.into(),
                timeout: 30,
            }),
        ]
    }

    #[test]
    fn round_trip() {
        for r in samples() {
            let line = r.encode();
            assert!(line.starts_with("2 "), "{line}");
            assert_eq!(parse_secure_request(line.as_bytes()).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn exact_lines() {
        let s = samples();
        assert_eq!(s[0].encode(), format!("2 20 {TOKEN} 30\n"));
        assert_eq!(s[1].encode(), "2 1 3 2 1 3600 1048576 30\n");
        assert_eq!(
            s[2].encode(),
            format!("2 2 3#IBP-abcDEF123 77 10 {UUID} 30 \n")
        );
        assert_eq!(
            s[4].encode(),
            format!("2 8 3#IBP-abcDEF123 77 0 10 {TOKEN} 30 \n")
        );
        assert_eq!(s[5].encode(), "2 8 3#IBP-abcDEF123 77 0 10 30 \n");
        assert_eq!(s[7].encode(), "2 9 3#IBP-abcDEF123 77 42 1 30\n");
        assert_eq!(s[8].encode(), "2 4 3 1 ibp 30\n");
        assert_eq!(s[10].encode(), "2 4 3 30\n");
    }

    #[test]
    fn refusals() {
        let bad = |l: &str| parse_secure_request(l.as_bytes()).unwrap_err();
        assert_eq!(
            bad("1 1 0 2 1 10 10 30\n").ibp_error(),
            IbpError::ProtocolVersion
        );
        assert_eq!(bad("2 99 x\n").ibp_error(), IbpError::InvalidCommand);
        assert_eq!(
            bad("2 20 notatoken 30\n").ibp_error(),
            IbpError::InvalidParameter
        );
        assert_eq!(
            bad("2 2 3#IBP-k 77 10 not-a-uuid 30 \n").ibp_error(),
            IbpError::InvalidParameter
        );
        assert_eq!(bad("2 4 0 2 pw 30\n").ibp_error(), IbpError::InvalidCommand);
        let long = format!("2 20 {}.{} 30\n", "a".repeat(4000), "b".repeat(95));
        assert!(long.len() > crate::MAX_LINE);
        assert!(parse_secure_request(long.as_bytes()).is_ok());
        let too_long = format!("2 20 {}.b 30\n", "a".repeat(MAX_SECURE_LINE));
        assert_eq!(bad(&too_long).ibp_error(), IbpError::BadFormat);
    }

    #[test]
    fn uuid_forms() {
        let u = parse_uuid("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0").unwrap();
        assert_eq!(format_uuid(&u), UUID);
        assert!(parse_uuid("0f1e2d3c4b5a69788796a5b4c3d2e1f0").is_none());
        assert!(parse_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg").is_none());
    }

    #[test]
    fn refusal_reply_parses_as_error() {
        let line = auth_refusal(IbpError::CapAccessDenied, "grant names another depot");
        assert_eq!(line, " -12 grant names another depot\n");
        assert_eq!(
            Reply::parse(line.as_bytes(), crate::Expect::Ok).unwrap(),
            Reply::Error(IbpError::CapAccessDenied)
        );
    }

    #[test]
    fn quota_request_and_reply() {
        let q = SecureRequest::Quota { timeout: 30 };
        assert_eq!(q.encode(), "2 23 30\n");
        assert_eq!(parse_secure_request(b"2 23 30\n").unwrap(), q);
        assert_eq!(q.name(), "QUOTA");
        assert_eq!(q.command(), None);
        assert_eq!(
            parse_secure_request(b"1 23 30\n").unwrap_err().ibp_error(),
            IbpError::ProtocolVersion
        );
        assert_eq!(
            parse_secure_request(b"2 23\n").unwrap_err().ibp_error(),
            IbpError::BadFormat
        );
        // The legacy port knows no command 23: its bytes are unchanged.
        assert_eq!(
            crate::parse_request(b"1 23 30\n").unwrap_err().ibp_error(),
            IbpError::InvalidCommand
        );
        let info = QuotaInfo {
            vo_used: 10,
            vo_limit: None,
            user_used: 4,
            user_limit: Some(6),
        };
        assert_eq!(info.encode(), "1 10 -1 4 6 \n");
        assert_eq!(QuotaInfo::parse(&info.encode()).unwrap(), info);
        assert_eq!(info.remaining(), Some(2));
        let over = QuotaInfo {
            vo_used: 9,
            vo_limit: Some(8),
            user_used: 0,
            user_limit: None,
        };
        assert_eq!(over.remaining(), Some(0));
        assert_eq!(
            QuotaInfo {
                vo_limit: None,
                user_limit: None,
                ..over
            }
            .remaining(),
            None
        );
        assert!(QuotaInfo::parse("1 x -1 0 -1").is_err());
        assert!(QuotaInfo::parse("1 1 -1 0").is_err());
        assert!(QuotaInfo::parse("-1 0 0 0 0").is_err());
    }
}
