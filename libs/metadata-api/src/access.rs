//! Rights, VO-qualified principals and ACL entries as they are written
//! on the wire and on the command line.
//!
//! A principal is always qualified by its VO (`user:ID@VO`, `group:ID@VO`,
//! `vo:VO`), so an entry may name members of other VOs and one manager can
//! serve several VOs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest VO name or VO ID.
pub const MAX_ID: usize = 128;

/// Whether `s` is a usable VO name: 1-128 of `A-Za-z0-9._-`, not starting
/// with `.` or `-`.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `s` is a usable VO ID or group VO ID: 1-128 of
/// `A-Za-z0-9._:-`, not starting with `.`, `-` or `:` (the online CA's IDs
/// are UUIDs; other attribute authorities use forms like `vo1:0001`). `@`
/// and `/` never occur, so `user:ID@VO` parses back unambiguously.
pub fn is_member_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && !s.starts_with(['.', '-', ':'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// A set of rights. The grammar (client and server alike): `-` alone for
/// none, else one to four of the letters `r` (read), `w` (write), `d`
/// (delete), `a` (admin) in any order, each at most once. Written in the
/// order `rwda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rights(u8);

impl Rights {
    /// Files: get the exNode, a ticket and one's wrapped key. Directories:
    /// list.
    pub const READ: Rights = Rights(1);
    /// Files: put new versions. Directories: create entries in it and move
    /// entries into it.
    pub const WRITE: Rights = Rights(2);
    /// Delete (or move away) the entry.
    pub const DELETE: Rights = Rights(4);
    /// Show and change the ACL; share wrapped keys.
    pub const ADMIN: Rights = Rights(8);
    pub const NONE: Rights = Rights(0);
    pub const ALL: Rights = Rights(15);

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses the rights grammar (see [`Rights`]).
    pub fn parse(s: &str) -> Result<Rights, String> {
        if s == "-" {
            return Ok(Rights::NONE);
        }
        if s.is_empty() {
            return Err("empty rights: give some of r, w, d, a (or - for none)".into());
        }
        let mut r = Rights::NONE;
        for c in s.chars() {
            let bit = match c {
                'r' => Rights::READ,
                'w' => Rights::WRITE,
                'd' => Rights::DELETE,
                'a' => Rights::ADMIN,
                _ => {
                    return Err(format!(
                        "bad rights {s:?}: letters r (read), w (write), d (delete), a (admin), or -"
                    ))
                }
            };
            if r.contains(bit) {
                return Err(format!("bad rights {s:?}: {c} given twice"));
            }
            r = r.union(bit);
        }
        Ok(r)
    }

    /// The name of a single right (`read`, `write`, `delete`, `admin`).
    pub fn name(self) -> &'static str {
        if self == Rights::READ {
            "read"
        } else if self == Rights::WRITE {
            "write"
        } else if self == Rights::DELETE {
            "delete"
        } else {
            "admin"
        }
    }
}

impl FromStr for Rights {
    type Err = String;

    fn from_str(s: &str) -> Result<Rights, String> {
        Rights::parse(s)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (bit, c) in [
            (Rights::READ, 'r'),
            (Rights::WRITE, 'w'),
            (Rights::DELETE, 'd'),
            (Rights::ADMIN, 'a'),
        ] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Who an ACL entry is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// One user: VO ID at VO.
    User { vo: String, id: String },
    /// Members of a group: group VO ID at VO.
    Group { vo: String, id: String },
    /// Every member of a VO.
    Vo(String),
}

impl Principal {
    /// Parses `user:ID@VO`, `group:ID@VO` or `vo:VO`.
    pub fn parse(s: &str) -> Result<Principal, String> {
        let bad =
            || format!("bad principal {s:?}: expected user:VOID@VO, group:GROUPID@VO or vo:VO");
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let qualified = |rest: &str| -> Result<(String, String), String> {
            let (id, vo) = rest.rsplit_once('@').ok_or_else(bad)?;
            if !is_member_id(id) || !is_identifier(vo) {
                return Err(bad());
            }
            Ok((vo.to_owned(), id.to_owned()))
        };
        match kind {
            "user" => qualified(rest).map(|(vo, id)| Principal::User { vo, id }),
            "group" => qualified(rest).map(|(vo, id)| Principal::Group { vo, id }),
            "vo" if is_identifier(rest) => Ok(Principal::Vo(rest.to_owned())),
            _ => Err(bad()),
        }
    }

    /// The user `id@vo`.
    pub fn user(vo: &str, id: &str) -> Principal {
        Principal::User {
            vo: vo.to_owned(),
            id: id.to_owned(),
        }
    }

    pub fn vo(&self) -> &str {
        match self {
            Principal::User { vo, .. } | Principal::Group { vo, .. } | Principal::Vo(vo) => vo,
        }
    }
}

impl FromStr for Principal {
    type Err = String;

    fn from_str(s: &str) -> Result<Principal, String> {
        Principal::parse(s)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User { vo, id } => write!(f, "user:{id}@{vo}"),
            Principal::Group { vo, id } => write!(f, "group:{id}@{vo}"),
            Principal::Vo(vo) => write!(f, "vo:{vo}"),
        }
    }
}

/// One ACL entry as it travels in JSON: `{"principal": "user:ID@VO",
/// "rights": "rw"}`; on the command line `PRINCIPAL=RIGHTS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    pub principal: String,
    pub rights: String,
}

impl FromStr for AclEntry {
    type Err = String;

    /// `PRINCIPAL=RIGHTS`, e.g. `user:u1@vo1=rw`, `group:g7@vo1=r`,
    /// `vo:vo1=r`; rights in canonical order on output (`wr` → `rw`).
    fn from_str(s: &str) -> Result<AclEntry, String> {
        let (principal, rights) = s.rsplit_once('=').ok_or_else(|| {
            format!("bad ACL entry {s:?}: expected PRINCIPAL=RIGHTS, e.g. user:u1@vo1=rw")
        })?;
        Principal::parse(principal)?;
        let rights = Rights::parse(rights)?;
        Ok(AclEntry {
            principal: principal.to_owned(),
            rights: rights.to_string(),
        })
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.principal, self.rights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_text() {
        assert_eq!(Rights::parse("ar").unwrap().to_string(), "ra");
        assert_eq!(Rights::parse("rwda").unwrap(), Rights::ALL);
        assert_eq!(Rights::NONE.to_string(), "-");
        for s in ["-", "r", "rw", "rwda", "da"] {
            assert_eq!(s.parse::<Rights>().unwrap().to_string(), s);
        }
        for bad in ["", "rx", "R", "rr", "r-", "--"] {
            assert!(Rights::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn principals() {
        for s in [
            "user:u-1@vo1",
            "user:vo1:0001@vo1",
            "group:g.7@vo1",
            "vo:vo1",
        ] {
            assert_eq!(Principal::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "alice",
            "user:alice",
            "user:@vo",
            "user:a@",
            "vo:",
            "role:a@b",
            "user:a b@vo",
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn acl_entries_parse() {
        let e: AclEntry = "user:u1@vo1=rw".parse().unwrap();
        assert_eq!(e.principal, "user:u1@vo1");
        assert_eq!(e.rights, "rw");
        assert_eq!(
            "group:g.7@vo-1=ar".parse::<AclEntry>().unwrap().rights,
            "ra"
        );
        assert_eq!(
            "vo:vo1=r".parse::<AclEntry>().unwrap().to_string(),
            "vo:vo1=r"
        );
        assert_eq!("vo:vo1=-".parse::<AclEntry>().unwrap().rights, "-");
        assert_eq!("vo:vo1=wdar".parse::<AclEntry>().unwrap().rights, "rwda");
        for bad in [
            "",
            "user:u1@vo1",
            "user:u1@vo1=",
            "user:u1@vo1=rx",
            "user:u1@vo1=rr",
            "user:u1=rw",
            "user:@vo1=r",
            "vo:=r",
            "vo:a@b=r",
            "u1@vo1=r",
            "alien:x=r",
            "user:u1@vo/1=r",
            "user:-u@vo1=r",
            "=r",
            "user:u1@vo1=r-",
        ] {
            assert!(bad.parse::<AclEntry>().is_err(), "{bad:?} accepted");
        }
    }
}
