//! What the manager records about a version's allocations, read from its
//! exNode (pure; no I/O): each allocation once, by a stable name, with its
//! MANAGE capability and the bytes the version keeps in it; when the first
//! allocation expires; and until when every byte of the file can still be
//! read.
//!
//! An allocation is named `host:port/RID#key`: a capability
//! (`ibp://host:port/RID#key/typekey/KIND`) without its scheme, typekey and
//! kind, the same for the READ, WRITE and MANAGE capabilities of one
//! allocation. The database keeps a digest of the name ([`Allocation::id`]:
//! shorter, and without the key). A refresh keeps a file's allocations (it
//! only extends them), so the versions it makes name the same allocations
//! as their base; usage counts each allocation once.

use std::collections::BTreeMap;

use exnode::{Exnode, Mapping};

/// One allocation of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The first 16 bytes of the SHA-256 of its name ([`allocation_name`],
    /// `host:port/RID#key`), in hex.
    pub id: String,
    /// Its MANAGE capability, if the exNode has one (what releases it).
    pub manage: Option<String>,
    /// Bytes the version keeps in it (its mappings' stored lengths).
    pub bytes: u64,
}

/// What a version's exNode says about its allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Each allocation once.
    pub allocations: Vec<Allocation>,
    /// The earliest expiry of any allocation (Unix seconds); `None` when
    /// no mapping gives one.
    pub expires: Option<i64>,
    /// Until when every byte can still be read: per extent, the latest
    /// expiry among its replicas (erasure coded: the k-th latest of its
    /// shares), the earliest over the extents. `None` when no extent
    /// ever runs out by the expiry times known.
    pub readable_until: Option<i64>,
    /// The source file's modification time (Unix seconds), from the
    /// exNode's top-level integer metadata `mtime` (what `lors cp -r` and
    /// `lors sync` record); `None` without one.
    pub mtime: Option<i64>,
}

/// The stable name of a mapping's allocation, from any of its
/// capabilities (MANAGE first): `host:port/RID#key`. `None` when no
/// capability has the `ibp://.../<typekey>/<KIND>` shape.
pub fn allocation_name(m: &Mapping) -> Option<String> {
    [&m.manage, &m.read, &m.write]
        .into_iter()
        .flatten()
        .find_map(|cap| name_of(cap))
}

fn name_of(cap: &str) -> Option<String> {
    let rest = cap.strip_prefix("ibp://")?;
    let mut parts = rest.rsplitn(3, '/');
    let _kind = parts.next()?;
    let _typekey = parts.next()?;
    let name = parts.next()?;
    (name.contains('/') && !name.ends_with('/')).then(|| name.to_owned())
}

/// The stored id of an allocation name.
pub fn digest(name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The facts of an exNode (meaningful for a validated one).
pub fn facts(ex: &Exnode) -> Facts {
    let mut by_name: BTreeMap<String, Allocation> = BTreeMap::new();
    for (i, m) in ex.mappings.iter().enumerate() {
        // A mapping without a capability of the usual shape still counts,
        // under a name of its own (it cannot be shared or released).
        let name = allocation_name(m).unwrap_or_else(|| format!("mapping:{i}"));
        let a = by_name.entry(name).or_insert_with_key(|name| Allocation {
            id: digest(name),
            manage: None,
            bytes: 0,
        });
        a.bytes = a.bytes.saturating_add(m.alloc_length);
        if a.manage.is_none() {
            a.manage = m.manage.clone();
        }
    }
    let expires = ex.mappings.iter().filter_map(|m| m.expires).min();
    let groups: BTreeMap<u32, u16> = ex.ec_groups.iter().map(|g| (g.id, g.k)).collect();
    let mut readable_until: Option<i64> = None;
    for e in ex.extents() {
        // Unknown expiry: never runs out as far as we know.
        let mut ends: Vec<i64> = e
            .mappings
            .iter()
            .map(|m| m.expires.unwrap_or(i64::MAX))
            .collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let need = e
            .mappings
            .first()
            .and_then(|m| m.share)
            .and_then(|s| groups.get(&s.group))
            .map_or(1, |k| usize::from(*k).max(1));
        let until = ends.get(need - 1).copied().unwrap_or(i64::MIN);
        if until != i64::MAX {
            readable_until = Some(readable_until.map_or(until, |r| r.min(until)));
        }
    }
    let mtime = ex
        .metadata
        .iter()
        .find_map(|m| match (&m.name[..], &m.value) {
            ("mtime", exnode::Value::Integer(t)) => Some(*t),
            _ => None,
        });
    Facts {
        allocations: by_name.into_values().collect(),
        expires,
        readable_until,
        mtime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exnode::{EcGroup, Share};

    fn m(off: u64, len: u64, key: &str, expires: Option<i64>) -> Mapping {
        let cap = |kind: &str, tk: u32| format!("ibp://d1:6714/0#{key}/{tk}/{kind}");
        Mapping {
            logical_offset: off,
            logical_length: len,
            alloc_length: len,
            read: Some(cap("READ", 1)),
            write: Some(cap("WRITE", 2)),
            manage: Some(cap("MANAGE", 3)),
            depot: "d1:6714".into(),
            expires,
            ..Mapping::default()
        }
    }

    #[test]
    fn names_ignore_the_kind_and_typekey() {
        let a = m(0, 10, "IBP-k1", None);
        assert_eq!(allocation_name(&a).as_deref(), Some("d1:6714/0#IBP-k1"));
        let mut reader = a.clone();
        reader.manage = None;
        reader.write = None;
        assert_eq!(allocation_name(&reader), allocation_name(&a));
        assert_eq!(name_of("ibp://d1:6714/READ"), None);
        assert_eq!(name_of("http://d1:6714/0#k/1/READ"), None);
    }

    #[test]
    fn replicas_and_expiry() {
        let ex = Exnode {
            size: 20,
            mappings: vec![
                m(0, 10, "a", Some(100)),
                m(0, 10, "b", Some(300)),
                m(10, 10, "c", Some(200)),
                // The same allocation holding a second range.
                m(10, 10, "a", Some(100)),
            ],
            ..Exnode::default()
        };
        let f = facts(&ex);
        assert_eq!(f.allocations.len(), 3);
        assert_eq!(f.allocations[0].id, digest("d1:6714/0#a"));
        assert_eq!(f.allocations[0].id.len(), 32);
        assert_eq!(f.allocations[0].bytes, 20);
        assert_eq!(
            f.allocations[0].manage.as_deref(),
            Some("ibp://d1:6714/0#a/3/MANAGE")
        );
        assert_eq!(f.expires, Some(100));
        // [0,10) lives until 300, [10,20) until 200.
        assert_eq!(f.readable_until, Some(200));
    }

    #[test]
    fn the_source_mtime_is_the_integer_metadata_mtime() {
        let mut ex = Exnode {
            size: 10,
            mappings: vec![m(0, 10, "a", None)],
            ..Exnode::default()
        };
        assert_eq!(facts(&ex).mtime, None);
        ex.metadata.push(exnode::Metadata {
            name: "mtime".into(),
            value: exnode::Value::String("1600000000".into()),
        });
        assert_eq!(facts(&ex).mtime, None, "only an integer counts");
        ex.metadata.push(exnode::Metadata {
            name: "mtime".into(),
            value: exnode::Value::Integer(1_600_000_000),
        });
        assert_eq!(facts(&ex).mtime, Some(1_600_000_000));
        // And it survives the XML the manager stores.
        let back = exnode::from_xml(exnode::to_xml(&ex).as_bytes()).expect("parses");
        assert_eq!(facts(&back).mtime, Some(1_600_000_000));
    }

    #[test]
    fn erasure_coding_needs_k_shares_and_unknown_expiry_never_ends() {
        let share = |i: u16, key: &str, t: Option<i64>| Mapping {
            share: Some(Share { group: 1, index: i }),
            ..m(0, 10, key, t)
        };
        let ex = Exnode {
            size: 10,
            ec_groups: vec![EcGroup {
                id: 1,
                k: 2,
                m: 1,
                logical_offset: 0,
                logical_length: 10,
                shard_size: 5,
            }],
            mappings: vec![
                share(0, "s0", Some(100)),
                share(1, "s1", Some(300)),
                share(2, "s2", Some(200)),
            ],
            ..Exnode::default()
        };
        assert_eq!(facts(&ex).readable_until, Some(200));
        let ex = Exnode {
            size: 10,
            mappings: vec![m(0, 10, "a", None)],
            ..Exnode::default()
        };
        let f = facts(&ex);
        assert_eq!((f.expires, f.readable_until), (None, None));
    }
}
