//! Import of the real exNodes LoRS 0.82 wrote (copied from the project's
//! reference set into tests/fixtures/lors-exnodes, so the tests need nothing
//! outside the repository), and their round trip through our writer.

use exnode::{capability_address, from_xml, to_xml, Exnode, Function, Value};

const MIB: u64 = 1024 * 1024;
const SIZE_10M: u64 = 10_485_760;
const SIZE_100M: u64 = 104_857_600;

const NONE: &[u8] = include_bytes!("fixtures/lors-exnodes/10M_none.xnd");
const DEFAULT: &[u8] = include_bytes!("fixtures/lors-exnodes/10M_default.xnd");
const ZLIB: &[u8] = include_bytes!("fixtures/lors-exnodes/10M_zlib.xnd");
const C2_B2M_K_A: &[u8] = include_bytes!("fixtures/lors-exnodes/10M_c2_b2M_k_a.xnd");
const C2_K_100M: &[u8] = include_bytes!("fixtures/lors-exnodes/100M_c2_k.xnd");

/// Parses, checks what every LoRS file has in common, and round-trips.
fn import(doc: &[u8], size: u64, filename: &str, extent_len: u64, replicas: usize) -> Exnode {
    let x = from_xml(doc).expect("LoRS exNode parses");
    assert_eq!(x.size, size);
    assert_eq!(x.filename.as_deref(), Some(filename));
    assert_eq!(x.file, None);
    assert_eq!(x.version, 0);
    assert_eq!(x.encryption, None);
    assert!(x.ec_groups.is_empty());
    assert_eq!(
        x.metadata("lorsversion"),
        Some(&Value::Double("0.828000".into()))
    );
    assert_eq!(x.metadata.len(), 1, "only lorsversion is not modelled");
    x.validate().expect("LoRS exNode validates");

    let extents = x.extents();
    assert_eq!(extents.len() as u64, size / extent_len);
    let mut next = 0;
    for e in &extents {
        assert_eq!(e.offset, next, "extents are contiguous from 0");
        assert_eq!(e.length, extent_len);
        assert_eq!(
            e.mappings.len(),
            replicas,
            "replicas of [{}, +{})",
            e.offset,
            e.length
        );
        assert!(e.group.is_none());
        let mut depots: Vec<&str> = e.mappings.iter().map(|m| m.depot.as_str()).collect();
        depots.dedup();
        assert_eq!(depots.len(), replicas, "replicas on different depots");
        next += e.length;
    }
    assert_eq!(next, size);

    for (i, m) in x.mappings.iter().enumerate() {
        let read = m.read.as_deref().expect("read capability");
        assert_eq!(
            Some(m.depot.as_str()),
            capability_address(read),
            "mapping {i}"
        );
        assert!(["127.0.0.1:6714", "localhost:6715"].contains(&m.depot.as_str()));
        assert!(m.write.as_deref().unwrap().ends_with("/WRITE"));
        assert!(m.manage.as_deref().unwrap().ends_with("/MANAGE"));
        assert_eq!(m.alloc_offset, 0);
        assert_eq!(m.security, None);
        assert_eq!(m.expires, None);
        assert_eq!(m.checksum, None);
        assert_eq!(m.share, None);
        assert!(m.metadata.is_empty());
    }

    let written = to_xml(&x);
    let again = from_xml(written.as_bytes()).expect("our form of a LoRS exNode parses");
    assert_eq!(again, x, "round trip\n{written}");
    assert_eq!(to_xml(&again), written);
    x
}

fn arg_int(f: &Function, name: &str) -> i64 {
    match f.argument(name).map(|a| &a.value) {
        Some(Value::Integer(i)) => *i,
        other => panic!("{}: argument {name}: {other:?}", f.name),
    }
}

fn arg_str<'a>(f: &'a Function, name: &str) -> &'a str {
    match f.argument(name).map(|a| &a.value) {
        Some(Value::String(s)) => s,
        other => panic!("{}: argument {name}: {other:?}", f.name),
    }
}

#[test]
fn ten_mib_without_functions() {
    let x = import(NONE, SIZE_10M, "f10M", SIZE_10M / 2, 1);
    assert!(!x.has_cleartext_keys());
    assert_eq!(x.mappings.len(), 2);
    // LoRS lists the second half first.
    assert_eq!(x.mappings[0].logical_offset, 5 * MIB);
    assert_eq!(x.mappings[0].depot, "127.0.0.1:6714");
    assert_eq!(x.mappings[1].logical_offset, 0);
    assert_eq!(x.mappings[1].depot, "localhost:6715");
    for m in &x.mappings {
        assert!(m.functions.is_empty());
        assert_eq!(m.alloc_length, 5 * MIB);
        assert_eq!(m.e2e_blocksize, 0);
    }
}

#[test]
fn ten_mib_zlib_option_leaves_no_function() {
    // `lors_upload -n -z` compressed nothing that it recorded: raw mappings.
    let x = import(ZLIB, SIZE_10M, "f10M", SIZE_10M / 2, 1);
    assert_eq!(x.mappings.len(), 2);
    for m in &x.mappings {
        assert!(m.functions.is_empty());
        assert_eq!(m.alloc_length, 5 * MIB);
    }
}

#[test]
fn ten_mib_default_is_des_inside_checksum() {
    let x = import(DEFAULT, SIZE_10M, "f10M", SIZE_10M / 2, 1);
    assert!(x.has_cleartext_keys());
    assert_eq!(x.mappings.len(), 2);
    let keys: Vec<&str> = x
        .mappings
        .iter()
        .map(|m| {
            assert_eq!(m.e2e_blocksize, MIB);
            assert_eq!(m.alloc_length, 5_243_055);
            assert_eq!(m.functions.len(), 1);
            let checksum = &m.functions[0];
            assert_eq!(checksum.name, "checksum");
            assert_eq!(checksum.arguments.len(), 1);
            assert_eq!(arg_int(checksum, "blocksize"), 1_048_611);
            assert_eq!(checksum.inner.len(), 1);
            let des = &checksum.inner[0];
            assert_eq!(des.name, "des_encrypt");
            assert!(des.inner.is_empty());
            assert_eq!(arg_int(des, "blocksize"), 1_048_578);
            assert_eq!(des.arguments[0].name, "KEY", "argument order kept");
            arg_str(des, "KEY")
        })
        .collect();
    // The DES keys LoRS stores in clear, entities decoded.
    assert_eq!(keys, ["9\\vn1/^", "{,^mQ'&"]);
}

#[test]
fn ten_mib_two_copies_aes_around_checksum() {
    let x = import(C2_B2M_K_A, SIZE_10M, "f10M", 2 * MIB, 2);
    assert!(x.has_cleartext_keys());
    assert_eq!(x.mappings.len(), 10);
    for e in x.extents() {
        // Both replicas of a block carry the same key: it encrypts the block
        // once, before it is copied.
        let keys: Vec<&str> = e
            .mappings
            .iter()
            .map(|m| {
                assert_eq!(m.alloc_length, 2_097_250);
                assert_eq!(m.e2e_blocksize, MIB);
                assert_eq!(m.functions.len(), 1);
                let aes = &m.functions[0];
                assert_eq!(aes.name, "aes_encrypt");
                assert_eq!(arg_int(aes, "blocksize"), 1_048_640);
                assert_eq!(aes.inner.len(), 1);
                let checksum = &aes.inner[0];
                assert_eq!(checksum.name, "checksum");
                assert_eq!(arg_int(checksum, "blocksize"), 1_048_609);
                assert!(checksum.inner.is_empty());
                let key = arg_str(aes, "KEY");
                assert_eq!(key.len(), 32);
                assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
                key
            })
            .collect();
        assert_eq!(keys[0], keys[1]);
    }
}

#[test]
fn hundred_mib_two_copies() {
    let x = import(C2_K_100M, SIZE_100M, "f100M", 5 * MIB, 2);
    assert!(!x.has_cleartext_keys());
    assert_eq!(x.mappings.len(), 40);
    for m in &x.mappings {
        assert!(m.functions.is_empty());
        assert_eq!(m.alloc_length, 5 * MIB);
        assert_eq!(m.e2e_blocksize, 0);
    }
}

#[test]
fn our_form_keeps_the_lors_layout() {
    // Apart from our added metadata, what we write is what LoRS wrote.
    let x = from_xml(DEFAULT).unwrap();
    let ours = to_xml(&x);
    let lors = std::str::from_utf8(DEFAULT).unwrap();
    let filtered: String = ours
        .lines()
        .filter(|l| !l.contains("name=\"size\"") && !l.contains("name=\"depot\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(filtered, lors);
}
