//! Reply lines: format and parse.
//!
//! The byte shapes are those of the IBP 1.4 depot: `1 \n` (go-ahead or plain
//! success), `1 <n>\n` (bytes stored or copied, no trailing space),
//! `1 <n> \n` (a payload of n bytes follows), ` -N \n` (errors, with a leading
//! space) and `-N \n` (STATUS errors, without it).

use crate::{Capability, IbpError, ProtoError, Rid, MAX_LINE};

/// MANAGE PROBE results: `1 <readRef> <writeRef> <curSize> <maxSize> <secondsLeft> <rel> <type> \n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeInfo {
    pub read_refs: u32,
    pub write_refs: u32,
    pub size: u64,
    pub max_size: u64,
    pub seconds_left: i64,
    pub reliability: i32,
    pub storage: i32,
}

/// One reply line (a payload, if any, follows it on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `1 \n`: go-ahead for STORE/WRITE data, or success of MANAGE INCR/DECR/CHNG.
    Ok,
    /// `1 <n>\n`: bytes stored, written or copied.
    Count(u64),
    /// `1 <n> \n`: n bytes of payload follow (LOAD, STATUS INQ/VERSION/STATS).
    Payload(u64),
    /// `1 <READ> <WRITE> <MANAGE> \n`.
    Allocated {
        read: Capability,
        write: Capability,
        manage: Capability,
    },
    /// MANAGE PROBE.
    Probe(ProbeInfo),
    /// STATUS RES: `1 <count> <rid>... \n`.
    Resources(Vec<Rid>),
    /// ` -N \n`.
    Error(IbpError),
    /// `-N \n` (STATUS has no leading space).
    StatusError(IbpError),
}

/// What a client expects after its request (reply lines are not self-describing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ok,
    Count,
    Payload,
    Allocated,
    Probe,
    Resources,
}

impl Reply {
    /// The reply line exactly as the IBP 1.4 depot writes it.
    pub fn encode(&self) -> String {
        match self {
            Reply::Ok => "1 \n".to_owned(),
            Reply::Count(n) => format!("1 {n}\n"),
            Reply::Payload(n) => format!("1 {n} \n"),
            Reply::Allocated {
                read,
                write,
                manage,
            } => format!("1 {read} {write} {manage} \n"),
            Reply::Probe(p) => format!(
                "1 {} {} {} {} {} {} {} \n",
                p.read_refs,
                p.write_refs,
                p.size,
                p.max_size,
                p.seconds_left,
                p.reliability,
                p.storage
            ),
            Reply::Resources(rids) => {
                let mut s = format!("1 {}", rids.len());
                for rid in rids {
                    s.push_str(&format!(" {rid}"));
                }
                s.push_str(" \n");
                s
            }
            Reply::Error(e) => format!(" {} \n", e.code()),
            Reply::StatusError(e) => format!("{} \n", e.code()),
        }
    }

    /// Parses a reply line given what the request expects. An error reply is
    /// recognised whatever was expected.
    pub fn parse(line: &[u8], expect: Expect) -> Result<Reply, ProtoError> {
        if line.len() > MAX_LINE {
            return Err(ProtoError::LineTooLong);
        }
        let text = std::str::from_utf8(line).map_err(|_| ProtoError::NotText)?;
        let body = text
            .strip_suffix('\n')
            .ok_or(ProtoError::BadReply("no final newline"))?;
        let tokens: Vec<&str> = body.split_ascii_whitespace().collect();
        let first = *tokens.first().ok_or(ProtoError::Empty)?;
        if first.starts_with('-') {
            let code: i32 = first
                .parse()
                .map_err(|_| ProtoError::NotNumber("error code"))?;
            let err = IbpError::from_code(code).unwrap_or(IbpError::Generic);
            return Ok(if body.starts_with(' ') {
                Reply::Error(err)
            } else {
                Reply::StatusError(err)
            });
        }
        if first != "1" {
            return Err(ProtoError::BadReply("status is neither 1 nor negative"));
        }
        let rest = &tokens[1..];
        let trailing_space = body.ends_with(' ');
        let num = |t: &str, f| -> Result<u64, ProtoError> {
            t.parse().map_err(|_| ProtoError::NotNumber(f))
        };
        Ok(match (expect, rest) {
            (Expect::Ok, []) => Reply::Ok,
            (Expect::Count, [n]) => Reply::Count(num(n, "count")?),
            // LOAD always carries the trailing space; be lenient if a peer omits it.
            (Expect::Payload, [n]) => Reply::Payload(num(n, "length")?),
            (Expect::Allocated, [r, w, m]) if trailing_space => Reply::Allocated {
                read: r.parse()?,
                write: w.parse()?,
                manage: m.parse()?,
            },
            (Expect::Probe, [rr, wr, cur, max, left, rel, ty]) => Reply::Probe(ProbeInfo {
                read_refs: u32::try_from(num(rr, "readRef")?)
                    .map_err(|_| ProtoError::OutOfRange("readRef"))?,
                write_refs: u32::try_from(num(wr, "writeRef")?)
                    .map_err(|_| ProtoError::OutOfRange("writeRef"))?,
                size: num(cur, "curSize")?,
                max_size: num(max, "maxSize")?,
                seconds_left: left
                    .parse()
                    .map_err(|_| ProtoError::NotNumber("seconds left"))?,
                reliability: rel
                    .parse()
                    .map_err(|_| ProtoError::NotNumber("reliability"))?,
                storage: ty.parse().map_err(|_| ProtoError::NotNumber("type"))?,
            }),
            (Expect::Resources, [count, rids @ ..]) => {
                if num(count, "count")? != rids.len() as u64 {
                    return Err(ProtoError::BadReply("RID count does not match"));
                }
                let rids = rids
                    .iter()
                    .map(|r| {
                        r.parse::<u32>()
                            .map(Rid)
                            .map_err(|_| ProtoError::NotNumber("rid"))
                    })
                    .collect::<Result<_, _>>()?;
                Reply::Resources(rids)
            }
            _ => return Err(ProtoError::BadReply("unexpected field count")),
        })
    }
}
