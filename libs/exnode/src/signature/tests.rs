//! Canonical form round trip and tamper detection of each field class.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;
use crate::model::{Checksum, Mapping, Security};
use crate::{from_xml, to_xml};

const LORS_10M: &[u8] = include_bytes!("../../tests/fixtures/lors-exnodes/10M_c2_b2M_k_a.xnd");
const UUID: &str = "2f1e6a2c-0b7d-4c1e-9a55-3f4d2b8e6c01";
const NOW: i64 = 1_765_000_000;

fn key() -> (Ed25519KeyPair, [u8; 32]) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let k = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = k.public_key().as_ref().try_into().unwrap();
    (k, public)
}

/// Two blocks, two replicas each, with every field class set.
fn exnode() -> Exnode {
    let mut x = Exnode {
        file: Some(Uuid::parse_str(UUID).unwrap()),
        version: 3,
        size: 2000,
        filename: Some("r <&> \"s\".dat".into()),
        block_size: Some(1000),
        metadata: vec![Metadata {
            name: "lorsversion".into(),
            value: Value::Double("0.828000".into()),
        }],
        ..Exnode::default()
    };
    for block in 0..2u64 {
        for r in 0..2 {
            let cap = |k: &str| format!("ibp://depot{r}.example:6714/{block}#key{block}r{r}/0/{k}");
            x.mappings.push(Mapping {
                logical_offset: block * 1000,
                logical_length: 1000,
                alloc_offset: 0,
                alloc_length: 1000,
                read: Some(cap("READ")),
                write: Some(cap("WRITE")),
                manage: Some(cap("MANAGE")),
                depot: format!("depot{r}.example:6714"),
                security: Some(Security::Legacy),
                expires: Some(NOW + 86_400),
                checksum: Some(Checksum::Blake3Placed([block as u8; 32])),
                ..Mapping::default()
            });
        }
    }
    x.validate().unwrap();
    x
}

/// Parses a document and checks its signature.
fn check(doc: &str, trusted: &[[u8; 32]]) -> Result<Verified, SignatureError> {
    let mut x = from_xml(doc.as_bytes()).expect("the document parses");
    let sig = split(&mut x)?.ok_or(SignatureError::Malformed("unsigned".into()))?;
    verify(&x, &sig, trusted)
}

#[test]
fn a_signed_exnode_round_trips_and_verifies() {
    let (k, public) = key();
    let x = exnode();
    let doc = sign(x.clone(), &k, NOW).unwrap();
    let v = check(&doc, &[public]).unwrap();
    assert_eq!(v.file.to_string(), UUID);
    assert_eq!(v.version, 3);
    assert_eq!(v.signed_at, NOW);
    assert_eq!(v.key_id, key_id(&public));

    // The signed document is what the writer writes for the model with the
    // entry, and without it the canonical form of the original model.
    let mut y = from_xml(doc.as_bytes()).unwrap();
    assert_eq!(to_xml(&y), doc);
    let sig = split(&mut y).unwrap().unwrap();
    assert_eq!(y, x);
    assert_eq!(to_xml(&y), to_xml(&x));
    assert_eq!(sig.mappings(), 4);
    assert_eq!(Signature::parse(&sig.to_text()).unwrap(), sig);

    // Re-serialising a parsed signed document changes nothing.
    assert_eq!(
        to_xml(&from_xml(to_xml(&from_xml(doc.as_bytes()).unwrap()).as_bytes()).unwrap()),
        doc
    );

    // Signing again replaces the old signature rather than adding one.
    let again = sign(from_xml(doc.as_bytes()).unwrap(), &k, NOW + 1).unwrap();
    assert_eq!(again.matches(SIGNATURE_NAME).count(), 1);
    assert_eq!(check(&again, &[public]).unwrap().signed_at, NOW + 1);
}

#[test]
fn an_exnode_without_mappings_is_signed_too() {
    let (k, public) = key();
    let x = Exnode {
        file: Some(Uuid::parse_str(UUID).unwrap()),
        version: 1,
        ..Exnode::default()
    };
    let doc = sign(x, &k, NOW).unwrap();
    assert_eq!(to_xml(&from_xml(doc.as_bytes()).unwrap()), doc);
    check(&doc, &[public]).unwrap();
}

#[test]
fn a_lors_exnode_is_unsigned_and_can_be_signed_once_it_has_a_uuid() {
    let (k, public) = key();
    let mut x = from_xml(LORS_10M).unwrap();
    assert_eq!(split(&mut x), Ok(None), "LoRS exNodes carry no signature");
    assert_eq!(sign(x.clone(), &k, NOW), Err(SignatureError::NoFile));
    x.file = Some(Uuid::parse_str(UUID).unwrap());
    x.version = 1;
    let doc = sign(x, &k, NOW).unwrap();
    check(&doc, &[public]).unwrap();
}

/// Replaces the `nth` occurrence of `from` in `doc` (which must exist).
fn edit(doc: &str, from: &str, to: &str, nth: usize) -> String {
    let (at, _) = doc
        .match_indices(from)
        .nth(nth)
        .unwrap_or_else(|| panic!("{from:?} #{nth} not in the document"));
    format!("{}{to}{}", &doc[..at], &doc[at + from.len()..])
}

fn altered(doc: &str, public: [u8; 32]) -> Vec<Part> {
    match check(doc, &[public]) {
        Err(SignatureError::Altered(parts)) => parts,
        other => panic!("expected Altered, got {other:?}"),
    }
}

#[test]
fn each_field_class_altered_is_named() {
    let (k, public) = key();
    let doc = sign(exnode(), &k, NOW).unwrap();
    // A capability of mapping 1 (block 0, replica 1).
    let d = edit(&doc, "#key0r1/0/READ", "#key0r9/0/READ", 0);
    assert_eq!(altered(&d, public), vec![Part::Capabilities(1)]);
    let d = edit(&doc, "#key1r0/0/MANAGE", "#key1r0/0/MANAGX", 0);
    assert_eq!(altered(&d, public), vec![Part::Capabilities(2)]);
    // An offset: mapping 3 moved (its logical offset).
    let d = edit(
        &doc,
        "name=\"exnode_offset\" type=\"integer\">1000<",
        "name=\"exnode_offset\" type=\"integer\">1001<",
        1,
    );
    assert_eq!(altered(&d, public), vec![Part::Range(3)]);
    // A length (allocation length of mapping 0).
    let d = edit(
        &doc,
        "name=\"alloc_length\" type=\"integer\">1000<",
        "name=\"alloc_length\" type=\"integer\">999<",
        0,
    );
    assert_eq!(altered(&d, public), vec![Part::Range(0)]);
    // The depot a mapping names.
    let d = edit(&doc, ">depot0.example:6714<", ">evil.example:6714<", 0);
    assert_eq!(altered(&d, public), vec![Part::Placement(0)]);
    // The size.
    let d = edit(&doc, "type=\"integer\">2000<", "type=\"integer\">1999<", 0);
    assert_eq!(altered(&d, public), vec![Part::Description]);
    // Two mappings swapped: both named.
    let mut x = from_xml(doc.as_bytes()).unwrap();
    x.mappings.swap(0, 2);
    let parts = altered(&to_xml(&x), public);
    assert!(parts.contains(&Part::Range(0)) && parts.contains(&Part::Range(2)));
    // A mapping removed.
    let mut x = from_xml(doc.as_bytes()).unwrap();
    x.mappings.pop();
    assert_eq!(
        check(&to_xml(&x), &[public]),
        Err(SignatureError::MappingCount {
            signed: 4,
            found: 3
        })
    );
}

#[test]
fn a_changed_uuid_or_version_is_named() {
    let (k, public) = key();
    let doc = sign(exnode(), &k, NOW).unwrap();
    let other = "00000000-0000-4000-8000-000000000001";
    let d = edit(&doc, &format!(">{UUID}<"), &format!(">{other}<"), 0);
    assert!(matches!(
        check(&d, &[public]),
        Err(SignatureError::FileChanged { found, .. }) if found == other
    ));
    let d = edit(&doc, "type=\"integer\">3<", "type=\"integer\">4<", 0);
    assert_eq!(
        check(&d, &[public]),
        Err(SignatureError::VersionChanged {
            signed: 3,
            found: 4
        })
    );
    // Both the exNode and the signature block changed: the description no
    // longer matches the manifest.
    let d = edit(&doc, "version=3 ", "version=4 ", 0);
    let d = edit(&d, "type=\"integer\">3<", "type=\"integer\">4<", 0);
    assert_eq!(
        check(&d, &[public]),
        Err(SignatureError::Altered(vec![Part::Description]))
    );
    // Only the signature block's version changed: the signature fails.
    let d = edit(&doc, "version=3 ", "version=4 ", 0);
    assert_eq!(
        check(&d, &[public]),
        Err(SignatureError::VersionChanged {
            signed: 4,
            found: 3
        })
    );
}

#[test]
fn forged_and_untrusted_signatures_are_refused() {
    let (k, public) = key();
    let (other, other_public) = key();
    let doc = sign(exnode(), &k, NOW).unwrap();
    // Another metadata manager's key.
    let by_other = sign(exnode(), &other, NOW).unwrap();
    assert_eq!(
        check(&by_other, &[public]),
        Err(SignatureError::UntrustedKey {
            key_id: hex(&key_id(&other_public))
        })
    );
    assert!(check(&by_other, &[public, other_public]).is_ok());
    assert!(matches!(
        check(&doc, &[]),
        Err(SignatureError::UntrustedKey { .. })
    ));
    // The time of signing changed.
    let d = edit(
        &doc,
        &format!("time={NOW} "),
        &format!("time={} ", NOW + 1),
        0,
    );
    assert_eq!(check(&d, &[public]), Err(SignatureError::BadSignature));
    // The signature value changed.
    let mut x = from_xml(doc.as_bytes()).unwrap();
    let mut sig = split(&mut x).unwrap().unwrap();
    sig.value[10] ^= 1;
    assert_eq!(
        verify(&x, &sig, &[public]),
        Err(SignatureError::BadSignature)
    );
    // A capability changed and the manifest recomputed to match: the
    // signature (over the full canonical form) still fails.
    let mut x = from_xml(doc.as_bytes()).unwrap();
    let mut sig = split(&mut x).unwrap().unwrap();
    x.mappings[0].read = Some("ibp://evil.example:6714/0#k/0/READ".into());
    sig.parts = digests(&x).manifest;
    assert_eq!(
        verify(&x, &sig, &[public]),
        Err(SignatureError::BadSignature)
    );
    // The other key's signature over our manifest and key id.
    let mut x = from_xml(doc.as_bytes()).unwrap();
    let mut sig = split(&mut x).unwrap().unwrap();
    let msg = message(
        &sig.key_id,
        &sig.file,
        3,
        NOW,
        &digests(&x).content,
        &sig.parts,
    );
    sig.value.copy_from_slice(other.sign(&msg).as_ref());
    assert_eq!(
        verify(&x, &sig, &[public]),
        Err(SignatureError::BadSignature)
    );
}

#[test]
fn malformed_or_repeated_signature_entries_are_refused() {
    let (k, _) = key();
    let doc = sign(exnode(), &k, NOW).unwrap();
    let mut x = from_xml(doc.as_bytes()).unwrap();
    let entry = x
        .metadata
        .iter()
        .find(|m| m.name == SIGNATURE_NAME)
        .unwrap()
        .clone();
    x.metadata.push(entry);
    assert_eq!(split(&mut x.clone()), Err(SignatureError::Several(2)));
    for bad in [
        "",
        "v2 key=00",
        "v1 key=0011223344556677",
        "v1 key=zz11223344556677 file=x version=1 time=1 parts=AAAA sig=AA",
        "v1 key=0011223344556677 key=0011223344556677",
        "v1 nonsense",
    ] {
        assert!(
            matches!(Signature::parse(bad), Err(SignatureError::Malformed(_))),
            "{bad:?}"
        );
    }
    let mut y = exnode();
    y.metadata.push(Metadata {
        name: SIGNATURE_NAME.into(),
        value: Value::Integer(1),
    });
    assert!(matches!(split(&mut y), Err(SignatureError::Malformed(_))));
    assert!(y.metadata.iter().all(|m| m.name != SIGNATURE_NAME));
}

/// The cost of signing and verifying a 1000-mapping exNode (printed; run
/// with `--release -- --nocapture sign_and_verify_cost`).
#[test]
fn sign_and_verify_cost() {
    let (k, public) = key();
    let mut x = exnode();
    let m = x.mappings[0].clone();
    x.mappings = (0..1000u64)
        .map(|i| Mapping {
            logical_offset: i * 1000,
            read: Some(format!(
                "ibp://depot.example:6714/{i}#{}/0/READ",
                "k".repeat(40)
            )),
            write: Some(format!(
                "ibp://depot.example:6714/{i}#{}/0/WRITE",
                "w".repeat(40)
            )),
            manage: Some(format!(
                "ibp://depot.example:6714/{i}#{}/0/MANAGE",
                "m".repeat(40)
            )),
            ..m.clone()
        })
        .collect();
    x.size = 1_000_000;
    let plain = to_xml(&x);
    // The fastest of n runs of each (the machine may be busy).
    fn fastest<T>(n: usize, mut f: impl FnMut() -> T) -> (std::time::Duration, T) {
        let mut best = std::time::Duration::MAX;
        let mut out = None;
        for _ in 0..n {
            let t = std::time::Instant::now();
            out = Some(f());
            best = best.min(t.elapsed());
        }
        (best, out.expect("n > 0"))
    }
    let (signing, doc) = fastest(10, || sign(x.clone(), &k, NOW).unwrap());
    let (writing, _) = fastest(10, || to_xml(&x));
    let (parsing, _) = fastest(10, || from_xml(doc.as_bytes()).unwrap());
    let (checking, _) = fastest(10, || check(&doc, &[public]).unwrap());
    let small = exnode();
    let (small_signing, small_doc) = fastest(100, || sign(small.clone(), &k, NOW).unwrap());
    let (small_checking, _) = fastest(100, || check(&small_doc, &[public]).unwrap());
    println!(
        "4 mappings, {} bytes signed: sign (incl. write) {small_signing:?}, parse+verify {small_checking:?}",
        small_doc.len()
    );
    println!(
        "1000 mappings, {} bytes unsigned, {} signed: write {writing:?}, sign (incl. write) {signing:?}, \
         parse {parsing:?}, parse+verify {checking:?}",
        plain.len(),
        doc.len()
    );
}
