//! LoRS 0.82 end-to-end functions: sizes against the real exNodes written
//! by `lors_upload`, round trips, known answers and damaged input.

use exnode::{Function, Metadata, Value};
use lors::lors_e2e::{
    decode, des_string_to_key, encode, layout, stored_length, supported, E2eError, FunctionSpec,
};

const FIXTURES: &[&str] = &[
    "10M_none",
    "10M_default",
    "10M_zlib",
    "10M_c2_b2M_k_a",
    "100M_c2_k",
];

fn fixture(name: &str) -> exnode::Exnode {
    let path = format!(
        "{}/../libs/exnode/tests/fixtures/lors-exnodes/{name}.xnd",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    exnode::from_xml(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Deterministic test data.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn blocksize_arg(f: &Function) -> Option<u64> {
    match f.argument("blocksize")?.value {
        Value::Integer(n) => Some(n as u64),
        _ => None,
    }
}

fn key_arg(f: &Function) -> String {
    match &f.argument("KEY").expect("KEY").value {
        Value::String(s) => s.clone(),
        v => panic!("KEY {v:?}"),
    }
}

/// The functions of a chain, outermost first.
fn flatten(functions: &[Function]) -> Vec<&Function> {
    let mut out = Vec::new();
    let mut level = functions;
    while let [f] = level {
        out.push(f);
        level = &f.inner;
    }
    out
}

/// The spec that reproduces a recorded chain (same keys).
fn spec_of(functions: &[Function]) -> Vec<FunctionSpec> {
    flatten(functions)
        .into_iter()
        .map(|f| match f.name.as_str() {
            "checksum" => FunctionSpec::Checksum,
            "des_encrypt" => FunctionSpec::DesEncrypt { key: key_arg(f) },
            "aes_encrypt" => FunctionSpec::AesEncrypt {
                key: hex(&key_arg(f)).try_into().unwrap(),
                iv: None,
            },
            "xor_encrypt" => FunctionSpec::XorEncrypt { key: key_arg(f) },
            "zlib_compress" => FunctionSpec::ZlibCompress,
            other => panic!("{other}"),
        })
        .collect()
}

// ------------------------------------------------------------ fixtures

#[test]
fn fixture_sizes_match_lors() {
    let mut with_functions = 0;
    for name in FIXTURES {
        let x = fixture(name);
        assert!(!x.mappings.is_empty(), "{name}");
        for (i, m) in x.mappings.iter().enumerate() {
            supported(&m.functions).unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
            let stored = stored_length(&m.functions, m.e2e_blocksize, m.logical_length)
                .unwrap()
                .expect("no compression in the fixtures' chains");
            assert_eq!(stored, m.alloc_length, "{name} mapping {i}: alloc_length");
            if m.functions.is_empty() {
                assert_eq!(m.alloc_length, m.logical_length, "{name} #{i}");
                continue;
            }
            with_functions += 1;
            let sizes = layout(&m.functions, m.e2e_blocksize, m.logical_length).unwrap();
            let recorded = flatten(&m.functions);
            assert_eq!(sizes.len(), recorded.len());
            for (s, f) in sizes.iter().zip(&recorded) {
                assert_eq!(s.name, f.name);
                assert_eq!(s.blocksize, blocksize_arg(f), "{name} #{i}: {}", f.name);
            }
            assert_eq!(sizes.last().unwrap().input_length, Some(m.logical_length));
        }
    }
    // 10M_default: 2 mappings; 10M_c2_b2M_k_a: 10.
    assert_eq!(with_functions, 12);
}

#[test]
fn fixture_numbers_spelled_out() {
    // The LoRS default, `checksum` ⊃ `des_encrypt`, 1 MiB e2e blocks.
    let x = fixture("10M_default");
    let m = &x.mappings[0];
    assert_eq!((m.logical_length, m.e2e_blocksize), (5242880, 1048576));
    let sizes = layout(&m.functions, m.e2e_blocksize, m.logical_length).unwrap();
    assert_eq!(sizes[0].name, "checksum");
    assert_eq!(sizes[0].blocksize, Some(1048611)); // 1048578 + 33
    assert_eq!(sizes[1].name, "des_encrypt");
    assert_eq!(sizes[1].blocksize, Some(1048578)); // 1048576 + "0:"
    assert_eq!(sizes[1].output_length, Some(5 * 1048578));
    assert_eq!(sizes[0].output_length, Some(5243055));

    // `-k -a`: `aes_encrypt` ⊃ `checksum`.
    let x = fixture("10M_c2_b2M_k_a");
    let m = &x.mappings[0];
    assert_eq!((m.logical_length, m.e2e_blocksize), (2097152, 1048576));
    let sizes = layout(&m.functions, m.e2e_blocksize, m.logical_length).unwrap();
    assert_eq!(sizes[1].name, "checksum");
    assert_eq!(sizes[1].blocksize, Some(1048609));
    assert_eq!(sizes[1].output_length, Some(2 * 1048609));
    assert_eq!(sizes[0].name, "aes_encrypt");
    // 1048609 rounded up to 16 is 1048624, + 16 bytes of IV.
    assert_eq!(sizes[0].blocksize, Some(1048640));
    // AES blocks of 1048624 bytes straddle the checksum blocks:
    // 1048624 + 16 and (2097218 - 1048624) + 16.
    assert_eq!(sizes[0].output_length, Some(2097250));
}

/// Encoding with the fixture's own keys gives the recorded tree and
/// `alloc_length`; decoding with the recorded tree gives the data back.
#[test]
fn fixture_chains_round_trip() {
    for (name, index) in [("10M_default", 1), ("10M_c2_b2M_k_a", 2)] {
        let x = fixture(name);
        let m = &x.mappings[index];
        let logical = data(m.logical_length as usize, 7);
        let (stored, tree) = encode(&spec_of(&m.functions), m.e2e_blocksize, &logical).unwrap();
        assert_eq!(stored.len() as u64, m.alloc_length, "{name}");
        assert_eq!(tree, m.functions, "{name}: recorded functions");
        let back = decode(&m.functions, m.e2e_blocksize, m.logical_length, &stored).unwrap();
        assert!(back == logical, "{name}: round trip");
    }
}

#[test]
fn fixture_mappings_without_functions_are_identity() {
    let x = fixture("10M_zlib");
    let m = &x.mappings[0];
    assert!(m.functions.is_empty());
    let logical = data(1000, 1);
    assert_eq!(decode(&[], 0, 1000, &logical).unwrap(), logical);
    assert!(matches!(
        decode(&[], 0, 1001, &logical),
        Err(E2eError::Corrupt(_))
    ));
    let (stored, tree) = encode(&[], 0, &logical).unwrap();
    assert_eq!((stored, tree), (logical, vec![]));
}

// ---------------------------------------------------------- round trips

fn aes(key: u8) -> FunctionSpec {
    FunctionSpec::AesEncrypt {
        key: [key; 16],
        iv: None,
    }
}

fn des(key: &str) -> FunctionSpec {
    FunctionSpec::DesEncrypt { key: key.into() }
}

fn xor(key: &str) -> FunctionSpec {
    FunctionSpec::XorEncrypt { key: key.into() }
}

fn specs() -> Vec<Vec<FunctionSpec>> {
    use FunctionSpec::*;
    vec![
        vec![Checksum],
        vec![des("9\\vn1/^")],
        vec![aes(0x42)],
        vec![xor("{,^mQ'&")],
        vec![ZlibCompress],
        vec![Checksum, des("9\\vn1/^")],
        vec![aes(7), Checksum],
        vec![Checksum, aes(9)],
        vec![des("abc"), Checksum],
        vec![Checksum, xor("k")],
        vec![Checksum, ZlibCompress],
        vec![ZlibCompress, Checksum],
        vec![aes(1), ZlibCompress, Checksum],
        vec![Checksum, des("x"), aes(3), xor("key")],
    ]
}

#[test]
fn round_trips_every_function_and_combination() {
    let lengths = [
        1usize, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 100, 1000, 4099,
    ];
    let blocksizes = [1u64, 3, 8, 15, 16, 17, 20, 64, 1000, 1 << 20];
    for spec in specs() {
        for &len in &lengths {
            for &bs in &blocksizes {
                let logical = data(len, len as u32 ^ bs as u32);
                let (stored, tree) = encode(&spec, bs, &logical)
                    .unwrap_or_else(|e| panic!("{spec:?} len {len} bs {bs}: {e}"));
                supported(&tree).unwrap();
                let has_zlib = spec.contains(&FunctionSpec::ZlibCompress);
                let expected = stored_length(&tree, bs, len as u64).unwrap();
                if has_zlib {
                    assert_eq!(expected, None);
                } else {
                    assert_eq!(expected, Some(stored.len() as u64), "{spec:?} {len} {bs}");
                }
                // With compression LoRS records the mapping's e2e_blocksize
                // as its logical length; the blocksize arguments suffice.
                let e2e = if has_zlib { len as u64 } else { bs };
                let back = decode(&tree, e2e, len as u64, &stored)
                    .unwrap_or_else(|e| panic!("{spec:?} len {len} bs {bs}: {e}"));
                assert!(back == logical, "{spec:?} len {len} bs {bs}");
            }
        }
    }
}

#[test]
fn recorded_tree_has_lors_shape() {
    let (_, tree) = encode(&[FunctionSpec::Checksum, des("9\\vn1/^")], 1024, &[5; 3000]).unwrap();
    assert_eq!(tree.len(), 1);
    assert_eq!(tree[0].name, "checksum");
    assert_eq!(
        tree[0].arguments,
        vec![Metadata {
            name: "blocksize".into(),
            value: Value::Integer(1024 + 2 + 33)
        }]
    );
    let inner = &tree[0].inner[0];
    assert_eq!(inner.name, "des_encrypt");
    assert_eq!(inner.arguments[0].name, "KEY");
    assert_eq!(inner.arguments[0].value, Value::String("9\\vn1/^".into()));
    assert_eq!(inner.arguments[1].value, Value::Integer(1026));
    assert!(inner.inner.is_empty());

    // An AES key is recorded as 32 lowercase hex digits.
    let (_, tree) = encode(&[aes(0xab)], 16, &[1; 10]).unwrap();
    assert_eq!(tree[0].arguments[0].value, Value::String("ab".repeat(16)));
    assert_eq!(tree[0].arguments[1].value, Value::Integer(32));
}

#[test]
fn aes_ivs_are_fresh_per_block() {
    let logical = [0u8; 64];
    let (a, _) = encode(&[aes(1)], 32, &logical).unwrap();
    let (b, _) = encode(&[aes(1)], 32, &logical).unwrap();
    assert_ne!(a[..16], b[..16]);
    assert_ne!(a[..16], a[48..64]);
}

// -------------------------------------------------------- known answers

/// `DES_string_to_key` as computed by OpenSSL's libcrypto (the keys are
/// the two from 10M_default.xnd and one longer than 16 characters).
#[test]
fn des_string_to_key_matches_openssl() {
    assert_eq!(
        des_string_to_key(b"9\\vn1/^").to_vec(),
        hex("70a4febfe504a1cd")
    );
    assert_eq!(
        des_string_to_key(b"{,^mQ'&").to_vec(),
        hex("d07c20320202b38a")
    );
    assert_eq!(
        des_string_to_key(b"abcdefghijklmnopqrstu").to_vec(),
        hex("d5c4944f6b8a9720")
    );
}

/// DES-CBC blocks computed with libcrypto's DES (ECB, chained by hand):
/// 20 bytes in blocks of 12: "4:" + 16 bytes, "0:" + 8 bytes.
#[test]
fn des_known_answer() {
    let logical: Vec<u8> = (0..20).collect();
    let expected = hex("343a36efecf13482cbf08ce5a5b7e8768058303aa3a9e514f7a34ed1");
    let (stored, tree) = encode(&[des("{,^mQ'&")], 12, &logical).unwrap();
    assert_eq!(stored, expected);
    assert_eq!(tree[0].arguments[1].value, Value::Integer(18));
    assert_eq!(decode(&tree, 12, 20, &expected).unwrap(), logical);
}

/// AES blocks computed with an independent (Python `cryptography`)
/// implementation of LoRS's CBC with ciphertext stealing; the key is the
/// one of 10M_c2_b2M_k_a.xnd.
#[test]
fn aes_known_answers() {
    let key: [u8; 16] = hex("7449a9ed277300eee364c36693a2dc6e").try_into().unwrap();
    let iv: [u8; 16] = std::array::from_fn(|i| 100 + i as u8);
    let spec = [FunctionSpec::AesEncrypt { key, iv: Some(iv) }];
    // 53 bytes, block size 20 → 32: a 32-byte block (plain CBC) and a
    // 21-byte block (one block and 5 stolen bytes).
    let logical: Vec<u8> = (0..53).collect();
    let expected = hex(
        "6465666768696a6b6c6d6e6f7071727300dc75a55e156ea1f6e89a6a9ed37ce1\
         d74d928e0226b85ca2618eebe69afbc26465666768696a6b6c6d6e6f70717273\
         e081681891152c573abd08ed1c0b399e52f85a84af",
    );
    let (stored, tree) = encode(&spec, 20, &logical).unwrap();
    assert_eq!(stored, expected);
    assert_eq!(decode(&tree, 20, 53, &expected).unwrap(), logical);
    // 40 bytes, block size 32: a 32-byte block and an 8-byte one (stored
    // as the IV's first 8 bytes and one cipher block).
    let logical: Vec<u8> = (0..40).collect();
    let expected = hex(
        "6465666768696a6b6c6d6e6f7071727300dc75a55e156ea1f6e89a6a9ed37ce1\
         d74d928e0226b85ca2618eebe69afbc26465666768696a6bc0731d2249d0e3d9\
         05ff62ccfd74abec",
    );
    let (stored, tree) = encode(&spec, 32, &logical).unwrap();
    assert_eq!(stored, expected);
    assert_eq!(decode(&tree, 32, 40, &expected).unwrap(), logical);
}

#[test]
fn checksum_known_answer() {
    let (stored, _) = encode(&[FunctionSpec::Checksum], 1 << 20, b"hello").unwrap();
    assert_eq!(stored, b"5d41402abc4b2a76b9719d911017c592:hello".to_vec());
}

/// LoRS's XOR loop simulated literally (key plus its NUL, the index
/// reset "for compatibility"): even offsets of each block XORed with the
/// last key character, odd offsets untouched.
#[test]
fn xor_known_answer() {
    let logical: Vec<u8> = (0..11).collect();
    let (stored, tree) = encode(&[xor("{,^mQ'&")], 5, &logical).unwrap();
    assert_eq!(stored, hex("2601240322230621082f2c"));
    assert_eq!(decode(&tree, 5, 11, &stored).unwrap(), logical);
}

/// A stream from C zlib's `compress()` (via Python) decodes.
#[test]
fn zlib_known_answer() {
    let logical = b"LoRS ".repeat(40);
    let stored = hex("3030303030303030303230303a789cf3c90f0a56f019fa0400a2413c01");
    let tree = vec![Function {
        name: "zlib_compress".into(),
        arguments: vec![Metadata {
            name: "blocksize".into(),
            value: Value::Integer(stored.len() as i64),
        }],
        inner: vec![],
    }];
    assert_eq!(decode(&tree, 200, 200, &stored).unwrap(), logical);
    let (mine, my_tree) = encode(&[FunctionSpec::ZlibCompress], 200, &logical).unwrap();
    assert_eq!(mine[..13], stored[..13]);
    assert_eq!(decode(&my_tree, 200, 200, &mine).unwrap(), logical);
}

// ---------------------------------------------------------- bad input

#[test]
fn flipped_byte_under_checksum_is_corrupt() {
    use FunctionSpec::*;
    for spec in [
        vec![Checksum],
        vec![Checksum, des("9\\vn1/^")],
        vec![aes(5), Checksum],
        vec![Checksum, ZlibCompress],
    ] {
        let logical = data(300, 3);
        let (stored, tree) = encode(&spec, 64, &logical).unwrap();
        let e2e = if spec.contains(&ZlibCompress) {
            300
        } else {
            64
        };
        for pos in 0..stored.len() {
            let mut bad = stored.clone();
            bad[pos] ^= 0x20;
            match decode(&tree, e2e, 300, &bad) {
                Err(E2eError::Corrupt(_)) => {}
                other => panic!("{spec:?}: flip at {pos}: {other:?}"),
            }
        }
    }
    // The message names the block.
    let (mut stored, tree) = encode(&[Checksum], 100, &data(450, 4)).unwrap();
    stored[3 * 133 + 40] ^= 1;
    let err = decode(&tree, 100, 450, &stored).unwrap_err();
    assert!(err.to_string().contains("block 3"), "{err}");
}

#[test]
fn truncated_or_extended_input_is_an_error() {
    for spec in specs() {
        let has_zlib = spec.contains(&FunctionSpec::ZlibCompress);
        let logical = data(200, 9);
        let (stored, tree) = encode(&spec, 48, &logical).unwrap();
        let e2e = if has_zlib { 200 } else { 48 };
        for cut in 0..stored.len() {
            assert!(
                decode(&tree, e2e, 200, &stored[..cut]).is_err(),
                "{spec:?}: cut at {cut}"
            );
        }
        let mut longer = stored.clone();
        longer.push(0);
        assert!(
            decode(&tree, e2e, 200, &longer).is_err(),
            "{spec:?}: longer"
        );
        // A wrong logical length is refused too.
        assert!(decode(&tree, e2e, 199, &stored).is_err(), "{spec:?}: 199");
    }
}

#[test]
fn garbage_never_panics() {
    for spec in specs() {
        let (stored, tree) = encode(&spec, 32, &data(100, 2)).unwrap();
        for seed in 0..50 {
            for len in [0, 1, 13, 33, 34, stored.len(), stored.len() + 17] {
                let junk = data(len, seed);
                let _ = decode(&tree, 32, 100, &junk);
                let _ = decode(&tree, 100, 100, &junk);
                let _ = decode(&tree, 0, 0, &junk);
            }
        }
    }
}

#[test]
fn zlib_header_lies_are_corrupt() {
    let logical = data(500, 5);
    let (stored, tree) = encode(&[FunctionSpec::ZlibCompress], 500, &logical).unwrap();
    // Announces another length.
    let mut bad = stored.clone();
    bad[11] = b'1';
    assert!(matches!(
        decode(&tree, 500, 500, &bad),
        Err(E2eError::Corrupt(_))
    ));
    // Not digits.
    let mut bad = stored.clone();
    bad[0] = b'x';
    assert!(matches!(
        decode(&tree, 500, 500, &bad),
        Err(E2eError::Corrupt(_))
    ));
    // A bomb: a huge announced length under a checksum is bounded.
    let big = vec![0u8; 1 << 20];
    let (stored, tree) = encode(
        &[FunctionSpec::Checksum, FunctionSpec::ZlibCompress],
        1 << 22,
        &big,
    )
    .unwrap();
    assert!(matches!(
        decode(&tree, 100, 100, &stored),
        Err(E2eError::Corrupt(_))
    ));
}

// ----------------------------------------------------- bad descriptions

fn function(name: &str, args: Vec<(&str, Value)>, inner: Vec<Function>) -> Function {
    Function {
        name: name.into(),
        arguments: args
            .into_iter()
            .map(|(n, value)| Metadata {
                name: n.into(),
                value,
            })
            .collect(),
        inner,
    }
}

#[test]
fn unknown_functions_are_unsupported() {
    let unknown = function("rot13", vec![("blocksize", Value::Integer(10))], vec![]);
    let err = supported(std::slice::from_ref(&unknown)).unwrap_err();
    assert!(
        matches!(&err, E2eError::Unsupported(n) if n == "rot13"),
        "{err:?}"
    );

    // Nested under a known one.
    let outer = function(
        "checksum",
        vec![("blocksize", Value::Integer(43))],
        vec![unknown.clone()],
    );
    assert!(matches!(
        supported(std::slice::from_ref(&outer)),
        Err(E2eError::Unsupported(n)) if n == "rot13"
    ));
    assert!(matches!(
        decode(&[outer], 10, 10, &[0; 43]),
        Err(E2eError::Unsupported(_))
    ));

    // Two functions side by side.
    let c = function("checksum", vec![("blocksize", Value::Integer(43))], vec![]);
    assert!(matches!(
        supported(&[c.clone(), c]),
        Err(E2eError::Unsupported(_))
    ));

    // zlib inside zlib.
    let z = |inner| {
        function(
            "zlib_compress",
            vec![("blocksize", Value::Integer(9))],
            inner,
        )
    };
    assert!(matches!(
        supported(&[z(vec![z(vec![])])]),
        Err(E2eError::Unsupported(_))
    ));
    assert!(matches!(
        encode(
            &[FunctionSpec::ZlibCompress, FunctionSpec::ZlibCompress],
            4,
            b"abc"
        ),
        Err(E2eError::Unsupported(_))
    ));
}

#[test]
fn bad_arguments_are_refused() {
    let aes_with = |key: Value| {
        function(
            "aes_encrypt",
            vec![("KEY", key), ("blocksize", Value::Integer(32))],
            vec![],
        )
    };
    for key in [
        Value::String("7449a9ed277300eee364c36693a2dc".into()), // 15 bytes
        Value::String("7449a9ed277300eee364c36693a2dc6eff".into()), // 17
        Value::String("7449a9ed277300eee364c36693a2dcxx".into()),
        Value::String(String::new()),
        Value::Integer(12),
    ] {
        assert!(
            matches!(
                supported(&[aes_with(key.clone())]),
                Err(E2eError::BadArgument(_))
            ),
            "{key:?}"
        );
    }
    // Upper-case hex is accepted (LoRS reads it with %2x).
    supported(&[aes_with(Value::String(
        "7449A9ED277300EEE364C36693A2DC6E".into(),
    ))])
    .unwrap();

    // No KEY.
    let no_key = function(
        "des_encrypt",
        vec![("blocksize", Value::Integer(10))],
        vec![],
    );
    assert!(matches!(
        supported(&[no_key]),
        Err(E2eError::BadArgument(_))
    ));
    // A blocksize that is not a positive integer.
    for bs in [
        Value::String("1048611".into()),
        Value::Integer(0),
        Value::Integer(-3),
    ] {
        let c = function("checksum", vec![("blocksize", bs.clone())], vec![]);
        assert!(
            matches!(supported(&[c]), Err(E2eError::BadArgument(_))),
            "{bs:?}"
        );
    }
    // A recorded blocksize that does not fit the mapping's e2e_blocksize.
    let logical = data(100, 1);
    let (stored, mut tree) = encode(&[FunctionSpec::Checksum], 50, &logical).unwrap();
    tree[0].arguments[0].value = Value::Integer(84);
    assert!(matches!(
        decode(&tree, 50, 100, &stored),
        Err(E2eError::BadArgument(_))
    ));
    // Functions need data and a block size.
    assert!(matches!(
        encode(&[FunctionSpec::Checksum], 0, b"x"),
        Err(E2eError::BadArgument(_))
    ));
    assert!(matches!(
        encode(&[FunctionSpec::Checksum], 8, b""),
        Err(E2eError::BadArgument(_))
    ));
    assert!(matches!(
        encode(&[des("")], 8, b"x"),
        Err(E2eError::BadArgument(_))
    ));
}

#[test]
fn random_keys_look_like_lors_keys() {
    for _ in 0..100 {
        let k = lors::lors_e2e::random_lors_key();
        assert_eq!(k.len(), 7);
        assert!(k
            .bytes()
            .all(|c| (33..=126).contains(&c) && c != b'<' && c != b'>'));
    }
}
