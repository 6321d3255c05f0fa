//! Access control: rights, VO-qualified principals and how a caller's
//! rights on an entry are worked out. Pure logic; the store keeps the
//! entries.
//!
//! A principal is always qualified by its VO (`user:ID@VO`, `group:ID@VO`,
//! `vo:VO`), so an entry may name members of other VOs and one manager can
//! serve several VOs.

use std::fmt;

use ibp_auth::Identity;
use serde::{Deserialize, Serialize};

use crate::names::{is_identifier, is_member_id};

/// A set of rights, written as a subset of `rwda` in that order.
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

    /// Parses `rwda` letters in any order (`-` alone means none).
    pub fn parse(s: &str) -> Result<Rights, String> {
        if s == "-" {
            return Ok(Rights::NONE);
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
                        "bad rights {s:?}: letters r (read), w (write), d (delete), a (admin)"
                    ))
                }
            };
            r = r.union(bit);
        }
        if r.is_empty() {
            return Err("empty rights: give some of r, w, d, a".into());
        }
        Ok(r)
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

    /// The principal of a caller.
    pub fn user_of(id: &Identity) -> Principal {
        Principal::User {
            vo: id.vo.clone(),
            id: id.vo_id.clone(),
        }
    }

    /// Whether the caller is this principal or belongs to it.
    pub fn matches(&self, who: &Identity) -> bool {
        match self {
            Principal::User { vo, id } => *vo == who.vo && *id == who.vo_id,
            Principal::Group { vo, id } => *vo == who.vo && who.groups.iter().any(|g| g.id == *id),
            Principal::Vo(vo) => *vo == who.vo,
        }
    }

    pub fn vo(&self) -> &str {
        match self {
            Principal::User { vo, .. } | Principal::Group { vo, .. } | Principal::Vo(vo) => vo,
        }
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

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub principal: Principal,
    pub rights: Rights,
}

/// An ACL entry as it travels in JSON: `{"principal": "user:ID@VO",
/// "rights": "rw"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryJson {
    pub principal: String,
    pub rights: String,
}

impl From<&Entry> for EntryJson {
    fn from(e: &Entry) -> EntryJson {
        EntryJson {
            principal: e.principal.to_string(),
            rights: e.rights.to_string(),
        }
    }
}

/// What a caller may do with an entry: everything if they own it; the
/// union of the entries that match them; and, for the admins of the
/// entry's VO, admin and delete (so a VO can take back what a departed
/// member left, and every such change is logged).
pub fn effective(
    who: &Identity,
    owner: &Principal,
    entry_vo: &str,
    acl: &[Entry],
    vo_admin: bool,
) -> Rights {
    if owner.matches(who) {
        return Rights::ALL;
    }
    let mut r = acl
        .iter()
        .filter(|e| e.principal.matches(who))
        .fold(Rights::NONE, |acc, e| acc.union(e.rights));
    if vo_admin && who.vo == entry_vo {
        r = r.union(Rights::ADMIN).union(Rights::DELETE);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibp_auth::Group;

    fn who(vo: &str, id: &str, groups: &[&str]) -> Identity {
        Identity {
            vo: vo.into(),
            vo_id: id.into(),
            groups: groups
                .iter()
                .map(|g| Group {
                    id: g.to_string(),
                    name: format!("name-{g}"),
                })
                .collect(),
            subject: "CN=x".into(),
            key_hash: [0; 32],
            not_after: 0,
        }
    }

    #[test]
    fn rights_text() {
        assert_eq!(Rights::parse("ar").unwrap().to_string(), "ra");
        assert_eq!(Rights::parse("rwda").unwrap(), Rights::ALL);
        assert_eq!(Rights::NONE.to_string(), "-");
        assert!(Rights::parse("rx").is_err());
        assert!(Rights::parse("").is_err());
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
    fn evaluation() {
        let alice = who("vo1", "alice", &["g1"]);
        let bob = who("vo1", "bob", &[]);
        let eve = who("vo2", "alice", &["g1"]);
        let owner = Principal::parse("user:carol@vo1").unwrap();
        let acl = vec![
            Entry {
                principal: Principal::parse("group:g1@vo1").unwrap(),
                rights: Rights::READ,
            },
            Entry {
                principal: Principal::parse("user:alice@vo1").unwrap(),
                rights: Rights::WRITE,
            },
            Entry {
                principal: Principal::parse("vo:vo1").unwrap(),
                rights: Rights::NONE,
            },
        ];
        assert_eq!(
            effective(&alice, &owner, "vo1", &acl, false).to_string(),
            "rw"
        );
        assert_eq!(effective(&bob, &owner, "vo1", &acl, false), Rights::NONE);
        // Same VO ID and group ID in another VO match nothing.
        assert_eq!(effective(&eve, &owner, "vo1", &acl, false), Rights::NONE);
        assert_eq!(effective(&eve, &owner, "vo1", &acl, true), Rights::NONE);
        assert_eq!(effective(&bob, &owner, "vo1", &acl, true).to_string(), "da");
        let carol = who("vo1", "carol", &[]);
        assert_eq!(effective(&carol, &owner, "vo1", &[], false), Rights::ALL);
    }
}
