//! Signed exNodes on a real grid (issue 21, item 4; docs/identity.md
//! "Signed exNodes"):
//!
//! - `lors stat --export FILE.xnd PATH` saves the exNode the metadata
//!   manager signed; `lors download --xnd FILE.xnd` verifies it and reads
//!   the bytes back (an encrypted file too, with the key file exported
//!   beside it);
//! - the saved exNode altered (a capability, an offset, a length, a
//!   mapping removed, its file UUID or version) is refused with exit 10,
//!   naming what was altered; one signed by another key (not a trusted
//!   metadata-manager key) or with a forged signature value is refused;
//! - reads from the metadata manager are verified too: a trust directory
//!   without the manager's key, or with another manager's key only,
//!   refuses them;
//! - unsigned exNodes (LoRS 0.82's, and `upload --xnd`'s) still read, and
//!   stderr and the `--json` output say they are unsigned.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

fn opts() -> GridOptions {
    GridOptions {
        depots: 2,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

#[track_caller]
fn json(g: &Grid, args: &[&str]) -> (serde_json::Value, std::process::Output) {
    let mut a = args.to_vec();
    a.push("--json");
    let o = lors(g, "alice", &a);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o)));
    (v, o)
}

/// Replaces the `nth` occurrence of `from` in the exNode file `src`,
/// written to `dest`.
#[track_caller]
fn tampered(src: &Path, dest: &Path, from: &str, to: &str, nth: usize) -> PathBuf {
    let doc = std::fs::read_to_string(src).expect("read the exported exNode");
    let (at, _) = doc
        .match_indices(from)
        .nth(nth)
        .unwrap_or_else(|| panic!("{from:?} #{nth} not in {}", src.display()));
    let out = format!("{}{to}{}", &doc[..at], &doc[at + from.len()..]);
    std::fs::write(dest, out).expect("write the altered exNode");
    dest.to_path_buf()
}

/// `lors download --xnd XND OUT` must fail with exit 10 (an unusable
/// exNode), naming every phrase of `says`, and write nothing.
#[track_caller]
fn refused(g: &Grid, xnd: &Path, says: &[&str], what: &str) {
    let out = xnd.with_extension("out");
    let o = lors(g, "alice", &["download", "--xnd", s(xnd), s(&out)]);
    eprintln!("{what}: {}", stderr(&o).trim());
    assert_eq!(code(&o), 10, "{what}: {}", text(&o));
    for p in says {
        assert!(stderr(&o).contains(p), "{what}: no {p:?} in {}", text(&o));
    }
    assert!(!out.exists(), "{what}: nothing is written");
}

#[test]
fn exported_exnodes_are_signed_and_every_alteration_is_refused() {
    let _timer = Timer::start("signed_exnodes");
    let g = start(opts());
    keys_init(&g, "alice");
    let home = g.user("alice").dir.clone();
    let depot = g.depots[0].legacy_addr.clone();
    // Five 64 KiB blocks on a legacy depot (download --xnd reads legacy
    // depots only: secure ones need the metadata manager's ticket).
    let data = bytes(300_000, 7);
    upload(
        &g,
        "alice",
        "plain",
        &data,
        "/vo1/plain.dat",
        &[
            "--security",
            "legacy",
            "--depot",
            &depot,
            "--no-encrypt",
            "--block-size",
            "64KiB",
        ],
    );
    let st = stat_json(&g, "alice", "/vo1/plain.dat");
    let uuid = st["file"].as_str().expect("a file UUID").to_owned();
    assert_eq!(
        st["exnode_signature"]["status"], "signed",
        "a read from the metadata manager is verified: {st}"
    );

    // Export: the signed exNode, mode 0600 (it holds capabilities).
    let xnd = home.join("plain.xnd");
    let (v, o) = json(&g, &["stat", "--export", s(&xnd), "/vo1/plain.dat"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(v["signature"]["status"], "signed", "{v}");
    assert_eq!(v["signature"]["file"], uuid.as_str(), "{v}");
    assert_eq!(v["signature"]["version"], 1, "{v}");
    assert_eq!(v["version"], 1, "{v}");
    let doc = std::fs::read_to_string(&xnd).expect("the exported exNode");
    assert_eq!(doc.matches("name=\"exnode_signature\"").count(), 1, "{doc}");
    assert!(doc.contains(&uuid), "{doc}");
    let mode = std::fs::metadata(&xnd).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Downloaded from the saved exNode: verified, the bytes are the file's.
    let out = home.join("plain.out");
    let (v, o) = json(&g, &["download", "--xnd", s(&xnd), s(&out)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_file_is(&out, &data, "download --xnd of the exported exNode");
    assert_eq!(v["exnode_signature"]["status"], "signed", "{v}");
    assert_eq!(v["exnode_signature"]["file"], uuid.as_str(), "{v}");
    assert!(!stderr(&o).contains("unsigned"), "{}", text(&o));
    let o = lors(&g, "alice", &["stat", "--xnd", s(&xnd)]);
    assert!(
        ok(o).contains("exNode signed by metadata-manager key"),
        "stat --xnd names the signer"
    );

    // Every alteration is refused, naming what was altered.
    let bad = home.join("bad.xnd");
    let read_cap = doc
        .split("<exnode:read>")
        .nth(1)
        .and_then(|r| r.split("</exnode:read>").next())
        .expect("a read capability")
        .to_owned();
    let mut other_cap = read_cap.clone();
    other_cap.insert(other_cap.len() - "/READ".len(), 'x');
    let xb = tampered(&xnd, &bad, &read_cap, &other_cap, 0);
    refused(
        &g,
        &xb,
        &["exNode refused", "mapping 0: its capabilities"],
        "a capability altered",
    );
    let xb = tampered(
        &xnd,
        &bad,
        "name=\"exnode_offset\" type=\"integer\">65536<",
        "name=\"exnode_offset\" type=\"integer\">65537<",
        0,
    );
    refused(&g, &xb, &["mapping 1: its range"], "an offset altered");
    let xb = tampered(
        &xnd,
        &bad,
        "name=\"logical_length\" type=\"integer\">65536<",
        "name=\"logical_length\" type=\"integer\">65535<",
        2,
    );
    refused(&g, &xb, &["mapping 2: its range"], "a length altered");
    let (first, _) = doc.split_once("  <exnode:mapping>").expect("a mapping");
    let rest = doc
        .splitn(3, "  <exnode:mapping>")
        .nth(2)
        .expect("a second mapping");
    std::fs::write(&bad, format!("{first}  <exnode:mapping>{rest}")).expect("write");
    refused(
        &g,
        &bad,
        &["mappings added or removed", "covers 5"],
        "a mapping removed",
    );
    let other_uuid = "00000000-0000-4000-8000-000000000001";
    let xb = tampered(
        &xnd,
        &bad,
        &format!(">{uuid}<"),
        &format!(">{other_uuid}<"),
        0,
    );
    refused(
        &g,
        &xb,
        &["file UUID changed", other_uuid],
        "the UUID changed",
    );
    let xb = tampered(
        &xnd,
        &bad,
        "name=\"file_version\" type=\"integer\">1<",
        "name=\"file_version\" type=\"integer\">2<",
        0,
    );
    refused(&g, &xb, &["version changed"], "the version changed");

    // Signed by another key (another metadata manager's): refused as
    // untrusted. The same with a forged signature value: does not verify.
    let other = other_key();
    let mut x = exnode::from_xml(doc.as_bytes()).expect("parses");
    let mut sig = exnode::signature::split(&mut x)
        .expect("readable")
        .expect("signed");
    let by_other = exnode::signature::sign(x.clone(), &other, 1_765_000_000).expect("sign");
    std::fs::write(&bad, by_other).expect("write");
    refused(
        &g,
        &bad,
        &["not a trusted metadata-manager key"],
        "signed by another key",
    );
    sig.value[0] ^= 0x40;
    x.metadata.push(exnode::Metadata {
        name: exnode::signature::SIGNATURE_NAME.into(),
        value: exnode::Value::String(sig.to_text()),
    });
    std::fs::write(&bad, exnode::to_xml(&x)).expect("write");
    refused(&g, &bad, &["does not verify"], "a forged signature value");

    // Reads from the metadata manager are verified against the trust
    // directory: without the manager's key, or with another's only, the
    // exNode is refused (exit 10), naming why.
    let trust = home.join("trust-without-mdm");
    copy_dir(&g.trust_dir, &trust);
    std::fs::remove_dir_all(trust.join("metadata")).expect("rm metadata/");
    let o = run_limited(
        {
            let mut c = lors_cmd(&g, "alice", &["download", "/vo1/plain.dat", s(&out)]);
            c.env("LORS_TRUST_DIR", &trust);
            c
        },
        LORS_LIMIT,
    );
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(
        stderr(&o).contains("holds no metadata-manager key"),
        "{}",
        text(&o)
    );
    std::fs::create_dir(trust.join("metadata")).expect("mkdir");
    let public: [u8; 32] = ring::signature::KeyPair::public_key(&other)
        .as_ref()
        .try_into()
        .expect("32 bytes");
    std::fs::write(
        trust.join("metadata/other.pub"),
        ibp_auth::keys::format_public_key(&public),
    )
    .expect("write other.pub");
    let o = run_limited(
        {
            let mut c = lors_cmd(&g, "alice", &["stat", "--mappings", "/vo1/plain.dat"]);
            c.env("LORS_TRUST_DIR", &trust);
            c
        },
        LORS_LIMIT,
    );
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert!(
        stderr(&o).contains("not a trusted metadata-manager key"),
        "{}",
        text(&o)
    );

    // An encrypted file: the export writes the data key wrapped for the
    // caller beside the exNode, and download --xnd decrypts with it.
    let secret = bytes(90_000, 8);
    upload(
        &g,
        "alice",
        "secret",
        &secret,
        "/vo1/secret.dat",
        &["--security", "legacy", "--depot", &depot],
    );
    let sx = home.join("secret.xnd");
    let (v, o) = json(&g, &["stat", "--export", s(&sx), "/vo1/secret.dat"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        v["key_file"]
            .as_str()
            .is_some_and(|k| k.ends_with("secret.xnd.key")),
        "{v}"
    );
    let out2 = home.join("secret.out");
    ok(lors(&g, "alice", &["download", "--xnd", s(&sx), s(&out2)]));
    assert_file_is(&out2, &secret, "download --xnd of an encrypted export");
}

#[test]
fn unsigned_exnodes_still_read_and_say_they_are_unsigned() {
    let _timer = Timer::start("unsigned_exnodes");
    let g = start(opts());
    keys_init(&g, "alice");
    let home = g.user("alice").dir.clone();
    // A real LoRS 0.82 exNode (its depots do not exist here): stat reads it.
    let lors_xnd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("libs/exnode/tests/fixtures/lors-exnodes/10M_none.xnd");
    let (v, o) = json(&g, &["stat", "--xnd", s(&lors_xnd)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(v["exnode_signature"]["status"], "unsigned", "{v}");
    assert_eq!(v["size"], 10_485_760, "{v}");
    assert!(stderr(&o).contains("unsigned exNode"), "{}", text(&o));

    // An exNode `upload --xnd` wrote (no metadata manager involved):
    // downloaded, and said to be unsigned.
    let data = bytes(100_000, 9);
    let src = write(&home, "f", &data);
    let xnd = home.join("f.xnd");
    let depot = g.depots[1].legacy_addr.clone();
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            s(&src),
            "--xnd",
            s(&xnd),
            "--security",
            "legacy",
            "--depot",
            &depot,
            "--no-encrypt",
        ],
    ));
    let out = home.join("f.out");
    let (v, o) = json(&g, &["download", "--xnd", s(&xnd), s(&out)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_file_is(&out, &data, "download --xnd of an unsigned exNode");
    assert_eq!(v["exnode_signature"]["status"], "unsigned", "{v}");
    assert!(
        stderr(&o).contains("unsigned exNode (no metadata-manager signature)"),
        "{}",
        text(&o)
    );

    // Imported, the manager serves it signed.
    let dir = home.join("imp");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(&xnd, dir.join("f.xnd")).expect("copy");
    ok(lors(&g, "alice", &["import-exnodes", s(&dir), "/vo1/imp"]));
    let st = stat_json(&g, "alice", "/vo1/imp/f");
    assert_eq!(st["exnode_signature"]["status"], "signed", "{st}");
    download_is(&g, "alice", "/vo1/imp/f", &data, "the imported exNode");
}

/// A fresh Ed25519 key: another metadata manager's.
fn other_key() -> ring::signature::Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
    ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("load")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}
