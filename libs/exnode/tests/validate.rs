//! `Exnode::validate` and `Exnode::extents` on hand-made layouts: each
//! `InvalidExnode` variant, and the layouts that must pass.

use exnode::{
    Cipher, EcGroup, Encryption, Exnode, InvalidExnode, IvDerivation, Mapping, Share, MAX_EC_SHARES,
};
use uuid::Uuid;

fn m(offset: u64, length: u64, depot: u16) -> Mapping {
    Mapping {
        logical_offset: offset,
        logical_length: length,
        alloc_length: length,
        read: Some(format!("ibp://d{depot}:6714/0#k{offset}/0/READ")),
        depot: format!("d{depot}:6714"),
        ..Mapping::default()
    }
}

fn share(offset: u64, length: u64, group: u32, index: u16) -> Mapping {
    Mapping {
        share: Some(Share { group, index }),
        ..m(offset, length, index)
    }
}

fn group(id: u32, k: u16, m: u16, offset: u64, length: u64) -> EcGroup {
    EcGroup {
        id,
        k,
        m,
        logical_offset: offset,
        logical_length: length,
        shard_size: length.div_ceil(u64::from(k.max(1))),
    }
}

fn exnode(size: u64, mappings: Vec<Mapping>) -> Exnode {
    Exnode {
        size,
        mappings,
        ..Exnode::default()
    }
}

fn bad_group(x: &Exnode) -> (u32, String) {
    match x.validate() {
        Err(InvalidExnode::BadGroup { group, reason }) => (group, reason),
        other => panic!("expected BadGroup, got {other:?}"),
    }
}

#[test]
fn replicas_are_accepted() {
    let x = exnode(
        300,
        vec![
            m(100, 100, 1),
            m(0, 100, 1),
            m(0, 100, 2),
            m(200, 100, 3),
            m(100, 100, 2),
            m(200, 100, 1),
            m(0, 100, 3),
        ],
    );
    assert_eq!(x.validate(), Ok(()));
    let e = x.extents();
    let shape: Vec<(u64, u64, usize)> = e
        .iter()
        .map(|e| (e.offset, e.length, e.mappings.len()))
        .collect();
    assert_eq!(shape, [(0, 100, 3), (100, 100, 2), (200, 100, 2)]);
    assert!(e.iter().all(|e| e.group.is_none()));
}

#[test]
fn empty_file_is_valid() {
    assert_eq!(exnode(0, vec![]).validate(), Ok(()));
    assert!(exnode(0, vec![]).extents().is_empty());
}

#[test]
fn erasure_coded_group_is_accepted() {
    let mut x = exnode(
        250,
        vec![
            share(0, 200, 3, 2),
            share(0, 200, 3, 0),
            share(0, 200, 3, 1),
            m(200, 50, 4),
            m(200, 50, 5),
        ],
    );
    x.ec_groups.push(group(3, 2, 1, 0, 200));
    assert_eq!(x.validate(), Ok(()));
    let e = x.extents();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].group, Some(&x.ec_groups[0]));
    assert_eq!(e[0].mappings.len(), 3);
    assert_eq!(e[1].group, None);
    assert_eq!(e[1].mappings.len(), 2);

    // k shares suffice; a lost parity share is no error, nor a replicated share.
    x.mappings.remove(0);
    x.mappings.push(share(0, 200, 3, 1));
    assert_eq!(x.validate(), Ok(()));
}

#[test]
fn beyond_size() {
    let x = exnode(100, vec![m(0, 60, 1), m(60, 50, 1)]);
    assert_eq!(
        x.validate(),
        Err(InvalidExnode::BeyondSize {
            index: 1,
            end: 110,
            size: 100
        })
    );
    // An end past u64::MAX is beyond any size.
    let x = exnode(u64::MAX, vec![m(0, u64::MAX, 1), m(u64::MAX - 1, 10, 1)]);
    assert!(matches!(
        x.validate(),
        Err(InvalidExnode::BeyondSize { index: 1, .. })
    ));
}

#[test]
fn empty_mapping() {
    let x = exnode(100, vec![m(0, 100, 1), m(50, 0, 1)]);
    assert_eq!(x.validate(), Err(InvalidExnode::Empty { index: 1 }));
}

#[test]
fn inconsistent_overlap() {
    let x = exnode(100, vec![m(0, 60, 1), m(50, 50, 2)]);
    assert_eq!(
        x.validate(),
        Err(InvalidExnode::Overlap {
            a: 0,
            b: 1,
            a_start: 0,
            a_end: 60,
            b_start: 50,
            b_end: 100
        })
    );
    // Same start, different length.
    let x = exnode(100, vec![m(0, 100, 1), m(0, 50, 2), m(50, 50, 2)]);
    assert!(matches!(x.validate(), Err(InvalidExnode::Overlap { .. })));
    // Contained, not adjacent in order.
    let x = exnode(100, vec![m(0, 100, 1), m(0, 100, 2), m(40, 10, 3)]);
    assert!(matches!(x.validate(), Err(InvalidExnode::Overlap { .. })));
}

#[test]
fn gaps() {
    let x = exnode(100, vec![m(0, 40, 1), m(50, 50, 1)]);
    assert_eq!(x.validate(), Err(InvalidExnode::Gap { start: 40, end: 50 }));
    let x = exnode(100, vec![m(10, 90, 1)]);
    assert_eq!(x.validate(), Err(InvalidExnode::Gap { start: 0, end: 10 }));
    let x = exnode(100, vec![m(0, 90, 1)]);
    assert_eq!(
        x.validate(),
        Err(InvalidExnode::Gap {
            start: 90,
            end: 100
        })
    );
    let x = exnode(100, vec![]);
    assert_eq!(x.validate(), Err(InvalidExnode::Gap { start: 0, end: 100 }));
}

#[test]
fn unknown_group() {
    let mut x = exnode(100, vec![share(0, 100, 1, 0), share(0, 100, 2, 1)]);
    x.ec_groups.push(group(1, 1, 1, 0, 100));
    assert_eq!(
        x.validate(),
        Err(InvalidExnode::UnknownGroup { index: 1, group: 2 })
    );
}

#[test]
fn bad_share_index() {
    let mut x = exnode(
        100,
        vec![
            share(0, 100, 1, 0),
            share(0, 100, 1, 1),
            share(0, 100, 1, 3),
        ],
    );
    x.ec_groups.push(group(1, 2, 1, 0, 100));
    assert_eq!(
        x.validate(),
        Err(InvalidExnode::BadShare {
            index: 2,
            group: 1,
            share: 3,
            total: 3
        })
    );
}

#[test]
fn bad_groups() {
    let base = || {
        let mut x = exnode(
            100,
            vec![
                share(0, 100, 1, 0),
                share(0, 100, 1, 1),
                share(0, 100, 1, 2),
            ],
        );
        x.ec_groups.push(group(1, 2, 1, 0, 100));
        x
    };
    assert_eq!(base().validate(), Ok(()));

    let mut x = base();
    x.ec_groups[0].k = 0;
    assert_eq!(bad_group(&x), (1, "k must be at least 1".into()));

    let mut x = base();
    x.ec_groups[0].m = MAX_EC_SHARES as u16;
    assert_eq!(bad_group(&x).1, "more than 255 shares");

    let mut x = base();
    x.ec_groups[0].k = u16::MAX;
    x.ec_groups[0].m = u16::MAX;
    assert_eq!(bad_group(&x).1, "more than 255 shares");

    let mut x = base();
    x.ec_groups[0].shard_size = 49;
    assert!(bad_group(&x).1.contains("cannot hold"));

    let mut x = base();
    x.ec_groups[0].logical_length = 101;
    x.ec_groups[0].shard_size = 51;
    assert!(bad_group(&x).1.contains("beyond the file size"));

    let mut x = base();
    x.ec_groups[0].logical_offset = u64::MAX;
    assert!(bad_group(&x).1.contains("beyond the file size"));

    let mut x = base();
    x.ec_groups.push(group(1, 2, 1, 0, 100));
    assert!(bad_group(&x).1.contains("id used twice"));

    let mut x = base();
    x.size = 150;
    x.mappings.push(m(100, 50, 1));
    x.mappings[1].logical_length = 150;
    x.mappings[1].logical_offset = 0;
    assert!(bad_group(&x).1.contains("mapping 1 does not cover"));

    // Fewer than k distinct shares: the range cannot be rebuilt.
    let mut x = base();
    x.mappings[1].share = Some(Share { group: 1, index: 0 });
    x.mappings.pop();
    assert!(bad_group(&x).1.contains("1 distinct shares"));

    // A declared group that no mapping holds.
    let mut x = base();
    x.size = 200;
    x.ec_groups.push(group(2, 1, 1, 100, 100));
    x.mappings.push(m(100, 100, 1));
    assert_eq!(bad_group(&x).0, 2);

    // A plain replica mixed into a group's extent.
    let mut x = base();
    x.mappings.push(m(0, 100, 7));
    assert!(bad_group(&x).1.contains("same range"));

    // Two groups over the same range.
    let mut x = base();
    x.ec_groups.push(group(2, 1, 0, 0, 100));
    x.mappings.push(share(0, 100, 2, 0));
    assert!(bad_group(&x).1.contains("same range"));
}

#[test]
fn no_read_capability() {
    let mut x = exnode(100, vec![m(0, 100, 1), m(0, 100, 2)]);
    x.mappings[1].read = None;
    assert_eq!(
        x.validate(),
        Err(InvalidExnode::NoReadCapability { index: 1 })
    );
}

#[test]
fn encrypted_without_uuid() {
    let mut x = exnode(100, vec![m(0, 100, 1)]);
    x.encryption = Some(Encryption {
        cipher: Cipher::Aes128Ctr,
        key_id: "k".into(),
        iv: IvDerivation::UuidBlock,
    });
    assert_eq!(x.validate(), Err(InvalidExnode::EncryptedWithoutUuid));
    x.file = Some(Uuid::nil());
    assert_eq!(x.validate(), Ok(()));
}

#[test]
fn stored_bytes_and_manage_capabilities() {
    let mut x = exnode(100, vec![m(0, 100, 1), m(0, 100, 2)]);
    x.mappings[0].manage = Some("ibp://d1:6714/0#a/0/MANAGE".into());
    x.mappings[1].manage = Some("ibp://d1:6714/0#a/0/MANAGE".into());
    assert_eq!(x.stored_bytes(), 200);
    assert_eq!(x.manage_capabilities(), ["ibp://d1:6714/0#a/0/MANAGE"]);
}

// TooManyMappings is not exercised: MAX_MAPPINGS + 1 mappings take about a
// gigabyte. The XML reader refuses the mapping past the limit before
// allocating it, and no document under MAX_DOCUMENT can hold that many.
