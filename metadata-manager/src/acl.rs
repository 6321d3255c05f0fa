//! Access control: how a caller's rights on an entry are worked out. Pure
//! logic; the store keeps the entries. Rights, principals and ACL entries
//! as they are written are the `metadata_api` crate's (one grammar for the
//! server and its clients; docs/metadata-manager.md).

use ibp_auth::Identity;
pub use metadata_api::{AclEntry, Principal, Rights};

/// The principal of a caller.
pub fn user_of(id: &Identity) -> Principal {
    Principal::user(&id.vo, &id.vo_id)
}

/// Whether the caller is this principal or belongs to it.
pub fn matches(p: &Principal, who: &Identity) -> bool {
    match p {
        Principal::User { vo, id } => *vo == who.vo && *id == who.vo_id,
        Principal::Group { vo, id } => *vo == who.vo && who.groups.iter().any(|g| g.id == *id),
        Principal::Vo(vo) => *vo == who.vo,
    }
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub principal: Principal,
    pub rights: Rights,
}

impl From<&Entry> for AclEntry {
    fn from(e: &Entry) -> AclEntry {
        AclEntry {
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
    if matches(owner, who) {
        return Rights::ALL;
    }
    let mut r = acl
        .iter()
        .filter(|e| matches(&e.principal, who))
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
            scope: ibp_auth::Scope::Full,
            others: Default::default(),
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
