//! `from_xml(to_xml(x)) == x` for arbitrary models (strings needing escapes,
//! non-ASCII, metadata order and duplicates) and for valid layouts.

use exnode::xml::{MAPPING_NAMES, TOP_LEVEL_NAMES};
use exnode::{
    from_xml, to_xml, Checksum, Cipher, EcGroup, Encryption, Exnode, Function, IvDerivation,
    Mapping, Metadata, Security, Share, Value,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Text with everything XML must escape, control characters, CR, tab,
/// newline, leading/trailing spaces and non-ASCII; never NUL (XML cannot
/// carry it).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&\"';=:/\t\n\r\u{1}\u{1f}\u{7f}éß€\u{10FFFF}😀]{0,12}"
}

/// A capability-like string: no leading or trailing whitespace (the reader
/// trims capabilities), but escapes inside.
fn capability() -> impl Strategy<Value = String> {
    "ibp://[a-z]{1,8}:[0-9]{1,5}/[0-9]#[A-Za-z0-9<>&'\"é]{1,16}/[0-9]{1,10}/(READ|WRITE|MANAGE)"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::String),
        any::<i64>().prop_map(Value::Integer),
        text().prop_map(Value::Double),
        any::<f64>().prop_map(|f| Value::Double(format!("{f:.6}"))),
    ]
}

fn metadata(reserved: &'static [&'static str]) -> impl Strategy<Value = Metadata> {
    (
        prop_oneof![text(), Just("lorsversion".to_string())],
        value(),
    )
        .prop_filter("codec-owned name", move |(n, _)| {
            !reserved.contains(&n.as_str())
        })
        .prop_map(|(name, value)| Metadata { name, value })
}

fn function() -> impl Strategy<Value = Function> {
    let leaf =
        (text(), prop::collection::vec(metadata(&[]), 0..3)).prop_map(|(name, arguments)| {
            Function {
                name,
                arguments,
                inner: Vec::new(),
            }
        });
    // Depth at most 1 + 7 = MAX_FUNCTION_DEPTH.
    leaf.prop_recursive(7, 24, 2, |inner| {
        (
            text(),
            prop::collection::vec(metadata(&[]), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(name, arguments, inner)| Function {
                name,
                arguments,
                inner,
            })
    })
}

fn checksum() -> impl Strategy<Value = Checksum> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(Checksum::Blake3),
        any::<[u8; 32]>().prop_map(Checksum::Sha256),
        any::<[u8; 32]>().prop_map(Checksum::Blake3Placed),
    ]
}

fn security() -> impl Strategy<Value = Security> {
    prop_oneof![
        Just(Security::Legacy),
        Just(Security::Crypto),
        Just(Security::Full)
    ]
}

fn mapping() -> impl Strategy<Value = Mapping> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            prop::option::of(capability()),
            prop::option::of(capability()),
            prop::option::of(capability()),
            text(),
        ),
        (
            prop::option::of(security()),
            prop::option::of(any::<i64>()),
            prop::option::of(checksum()),
            prop::option::of(
                (any::<u32>(), any::<u16>()).prop_map(|(group, index)| Share { group, index }),
            ),
        ),
        prop::collection::vec(function(), 0..3),
        prop::collection::vec(metadata(&MAPPING_NAMES), 0..4),
    )
        .prop_map(
            |(
                (logical_offset, logical_length, alloc_offset, alloc_length, e2e_blocksize),
                (read, write, manage, depot),
                (security, expires, checksum, share),
                functions,
                metadata,
            )| Mapping {
                logical_offset,
                logical_length,
                alloc_offset,
                alloc_length,
                e2e_blocksize,
                read,
                write,
                manage,
                depot,
                security,
                expires,
                checksum,
                share,
                functions,
                metadata,
            },
        )
}

fn group() -> impl Strategy<Value = EcGroup> {
    (
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(id, k, m, logical_offset, logical_length, shard_size)| EcGroup {
                id,
                k,
                m,
                logical_offset,
                logical_length,
                shard_size,
            },
        )
}

fn exnode() -> impl Strategy<Value = Exnode> {
    (
        (
            prop::option::of(any::<u128>().prop_map(Uuid::from_u128)),
            any::<u64>(),
            any::<u64>(),
            prop::option::of(text()),
            prop::option::of(any::<u64>()),
        ),
        prop::option::of(text().prop_map(|key_id| Encryption {
            cipher: Cipher::Aes128Ctr,
            key_id,
            iv: IvDerivation::UuidBlock,
        })),
        prop::collection::vec(group(), 0..3),
        prop::collection::vec(mapping(), 0..5),
        prop::collection::vec(metadata(&TOP_LEVEL_NAMES), 0..5),
    )
        .prop_map(
            |(
                (file, version, size, filename, block_size),
                encryption,
                ec_groups,
                mappings,
                metadata,
            )| {
                Exnode {
                    file,
                    version,
                    size,
                    filename,
                    block_size,
                    encryption,
                    ec_groups,
                    mappings,
                    metadata,
                }
            },
        )
}

/// A valid file: `blocks` extents of `block` bytes (the last shorter), each
/// either replicated `copies` times or erasure coded k=2 m=1.
fn valid_exnode() -> impl Strategy<Value = Exnode> {
    (
        1u64..5_000_000,
        1u64..20,
        1usize..4,
        prop::collection::vec(any::<bool>(), 20),
        any::<u128>(),
    )
        .prop_map(|(block, blocks, copies, coded, uuid)| {
            let size = block * blocks - block / 2;
            let mut x = Exnode {
                file: Some(Uuid::from_u128(uuid)),
                version: 3,
                size,
                filename: Some("report <final> & \"signed\" — ©.pdf".into()),
                block_size: Some(block),
                encryption: Some(Encryption {
                    cipher: Cipher::Aes128Ctr,
                    key_id: "k-1".into(),
                    iv: IvDerivation::UuidBlock,
                }),
                ..Exnode::default()
            };
            let mut offset = 0;
            let mut n = 0u32;
            while offset < size {
                let length = block.min(size - offset);
                let cap = |n: u32, r: u16, kind: &str| {
                    format!("ibp://depot{r}.example:6714/{n}#key{n}r{r}/0/{kind}")
                };
                let mapping = |r: u16| Mapping {
                    logical_offset: offset,
                    logical_length: length,
                    alloc_length: length,
                    read: Some(cap(n, r, "READ")),
                    write: Some(cap(n, r, "WRITE")),
                    manage: Some(cap(n, r, "MANAGE")),
                    depot: format!("depot{r}.example:6715"),
                    security: Some(Security::Full),
                    expires: Some(1_900_000_000),
                    checksum: Some(Checksum::Blake3([n as u8; 32])),
                    ..Mapping::default()
                };
                if coded[n as usize] {
                    let shard = length.div_ceil(2);
                    x.ec_groups.push(EcGroup {
                        id: n,
                        k: 2,
                        m: 1,
                        logical_offset: offset,
                        logical_length: length,
                        shard_size: shard,
                    });
                    for index in 0..3 {
                        x.mappings.push(Mapping {
                            alloc_length: shard,
                            share: Some(Share { group: n, index }),
                            ..mapping(index)
                        });
                    }
                } else {
                    for r in 0..copies as u16 {
                        x.mappings.push(mapping(r));
                    }
                }
                offset += length;
                n += 1;
            }
            x
        })
}

/// One Ed25519 key for every case.
fn signing_key() -> &'static (ring::signature::Ed25519KeyPair, [u8; 32]) {
    use ring::signature::KeyPair;
    static KEY: std::sync::OnceLock<(ring::signature::Ed25519KeyPair, [u8; 32])> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let k = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = k.public_key().as_ref().try_into().unwrap();
        (k, public)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_model_round_trips(x in exnode()) {
        let doc = to_xml(&x);
        let back = from_xml(doc.as_bytes());
        prop_assert_eq!(back.as_ref(), Ok(&x), "{}", doc);
        prop_assert_eq!(to_xml(&back.unwrap()), doc);
    }

    /// The canonical form is reproducible from any signed document: what
    /// the metadata manager signs, a reader verifies.
    #[test]
    fn any_signed_model_verifies_after_a_round_trip(mut x in exnode(), uuid in any::<u128>()) {
        let (key, public) = signing_key();
        let public = *public;
        x.file = Some(Uuid::from_u128(uuid));
        let doc = exnode::signature::sign(x.clone(), key, 1_765_000_000).unwrap();
        let mut back = from_xml(doc.as_bytes()).unwrap();
        prop_assert_eq!(to_xml(&back), doc.clone());
        let sig = exnode::signature::split(&mut back).unwrap().unwrap();
        prop_assert_eq!(&back, &x);
        let v = exnode::signature::verify(&back, &sig, &[public]);
        prop_assert!(v.is_ok(), "{:?}\n{}", v, doc);
    }

    #[test]
    fn valid_layouts_round_trip(x in valid_exnode()) {
        prop_assert_eq!(x.validate(), Ok(()));
        let doc = to_xml(&x);
        let back = exnode::parse_and_validate(doc.as_bytes());
        prop_assert_eq!(back, Ok(x));
    }
}

#[test]
fn metadata_order_and_duplicates_are_kept() {
    let md = |name: &str, value: Value| Metadata {
        name: name.into(),
        value,
    };
    let x = Exnode {
        metadata: vec![
            md("zeta", Value::Integer(-1)),
            md("alpha", Value::String("a".into())),
            md("zeta", Value::Double("1e9".into())),
            md("", Value::String(String::new())),
            md("mid", Value::Integer(i64::MAX)),
        ],
        mappings: vec![Mapping {
            logical_length: 1,
            read: Some("ibp://h:1/0#k/0/READ".into()),
            depot: "h:1".into(),
            metadata: vec![md("y", Value::Integer(0)), md("x", Value::Integer(1))],
            ..Mapping::default()
        }],
        size: 1,
        ..Exnode::default()
    };
    let back = from_xml(to_xml(&x).as_bytes()).unwrap();
    assert_eq!(back, x);
}

#[test]
fn codec_names_in_metadata_are_not_written_twice() {
    // The modelled fields win over metadata entries of the codec's names.
    let md = |name: &str, value: Value| Metadata {
        name: name.into(),
        value,
    };
    let x = Exnode {
        size: 7,
        filename: Some("real".into()),
        metadata: vec![
            md("Version", Value::String("9.9".into())),
            md("size", Value::Integer(99)),
            md("filename", Value::String("fake".into())),
            md("kept", Value::Integer(1)),
        ],
        mappings: vec![Mapping {
            logical_length: 7,
            depot: "h:1".into(),
            metadata: vec![md("depot", Value::String("fake:1".into()))],
            ..Mapping::default()
        }],
        ..Exnode::default()
    };
    let doc = to_xml(&x);
    for name in ["Version", "size", "filename", "depot"] {
        assert_eq!(
            doc.matches(&format!("name=\"{name}\"")).count(),
            1,
            "{name}\n{doc}"
        );
    }
    let back = from_xml(doc.as_bytes()).unwrap();
    assert_eq!(back.size, 7);
    assert_eq!(back.filename.as_deref(), Some("real"));
    assert_eq!(back.mappings[0].depot, "h:1");
    assert!(back.mappings[0].metadata.is_empty());
    assert_eq!(back.metadata, vec![md("kept", Value::Integer(1))]);
}

#[test]
fn escapes_are_written_and_read() {
    let x = Exnode {
        filename: Some("a<b>&\"c'\r\n\t\u{1}é".into()),
        metadata: vec![Metadata {
            name: "we<ird\"\t\n".into(),
            value: Value::String("]]>".into()),
        }],
        ..Exnode::default()
    };
    let doc = to_xml(&x);
    assert!(
        doc.contains(r#"<exnode:metadata name="filename" type="string">a&lt;b&gt;&amp;"c'&#xD;"#),
        "{doc}"
    );
    assert!(doc.contains(r#"name="we&lt;ird&quot;&#x9;&#xA;""#), "{doc}");
    assert!(doc.contains("]]&gt;"), "{doc}");
    assert_eq!(from_xml(doc.as_bytes()).unwrap(), x);
}

#[test]
fn nul_is_written_as_replacement_character() {
    let x = Exnode {
        filename: Some("a\0b".into()),
        ..Exnode::default()
    };
    let back = from_xml(to_xml(&x).as_bytes()).unwrap();
    assert_eq!(back.filename.as_deref(), Some("a\u{FFFD}b"));
}

#[test]
fn example_document_layout() {
    let x = Exnode {
        file: Some(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
        version: 2,
        size: 10,
        filename: Some("f".into()),
        block_size: Some(10),
        mappings: vec![Mapping {
            logical_length: 10,
            alloc_length: 10,
            read: Some("ibp://h:6714/0#k/0/READ".into()),
            depot: "h:6715".into(),
            security: Some(Security::Crypto),
            share: Some(Share { group: 1, index: 2 }),
            functions: vec![Function {
                name: "f".into(),
                arguments: Vec::new(),
                inner: Vec::new(),
            }],
            ..Mapping::default()
        }],
        ..Exnode::default()
    };
    let expected = r#"<?xml version="1.0"?>
<exnode xmlns:exnode="http://loci.cs.utk.edu/exnode">
  <exnode:metadata name="Version" type="string">3.0</exnode:metadata>
  <exnode:metadata name="filename" type="string">f</exnode:metadata>
  <exnode:metadata name="file_uuid" type="string">01234567-89ab-cdef-0123-456789abcdef</exnode:metadata>
  <exnode:metadata name="file_version" type="integer">2</exnode:metadata>
  <exnode:metadata name="size" type="integer">10</exnode:metadata>
  <exnode:metadata name="block_size" type="integer">10</exnode:metadata>
  <exnode:mapping>
    <exnode:metadata name="alloc_length" type="integer">10</exnode:metadata>
    <exnode:metadata name="alloc_offset" type="integer">0</exnode:metadata>
    <exnode:metadata name="e2e_blocksize" type="integer">0</exnode:metadata>
    <exnode:metadata name="exnode_offset" type="integer">0</exnode:metadata>
    <exnode:metadata name="logical_length" type="integer">10</exnode:metadata>
    <exnode:metadata name="depot" type="string">h:6715</exnode:metadata>
    <exnode:metadata name="security" type="string">crypto</exnode:metadata>
    <exnode:metadata name="share" type="string">1:2</exnode:metadata>
    <exnode:function name="f"/>
    <exnode:read>ibp://h:6714/0#k/0/READ</exnode:read>
  </exnode:mapping>
</exnode>
"#;
    assert_eq!(to_xml(&x), expected);
}
