//! `lors upload A B C DIR/`: several files in one process, against a real
//! grid (online CA, L-Bone, metadata manager, depots: each its own
//! process), through the `lors` CLI:
//!
//! - files of several sizes (the empty one, one block, several blocks)
//!   uploaded into an existing directory, each as DIR/NAME, with one
//!   summary (`--json`), and read back byte for byte;
//! - the same names again: a new version of each (over the version the
//!   directory's listing showed), read back with the new contents;
//! - one file over an existing path without knowing it first (the put
//!   answers conflict, the block is stored again under the file's UUID):
//!   a new version with the new contents;
//! - several sources to a file, or to a missing directory, fail before
//!   any data moves (the depots' state unchanged by a byte), exit 2 and 7;
//! - a missing source among others: the others are uploaded, the missing
//!   one is named, exit 7 (the first failure's code).

mod common;

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

/// Allocation files and journals of every depot.
fn depot_state(g: &Grid) -> Vec<u64> {
    g.depots.iter().map(|d| bytes_under(&d.data_dir)).collect()
}

/// `lors ARGS --json` as alice: exit code, JSON (Null if none), output.
fn json(g: &Grid, args: &[&str]) -> (i32, serde_json::Value, std::process::Output) {
    let mut a = args.to_vec();
    a.push("--json");
    let o = lors(g, "alice", &a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (code(&o), v, o)
}

fn version(g: &Grid, path: &str) -> u64 {
    stat_json(g, "alice", path)["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in stat of {path}"))
}

#[test]
fn several_files_go_into_a_directory_in_one_process() {
    let _timer = Timer::start("several_files_go_into_a_directory_in_one_process");
    let g = start(opts());
    keys_init(&g, "alice");
    let home = g.user("alice").dir.clone();
    ok(lors(&g, "alice", &["mkdir", "/vo1/many"]));

    // Sizes: empty, small, one block, several 64 KiB blocks.
    let sizes = [0usize, 100, 4096, 65_536, 200_000, 7, 4096, 1];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("f{i}.bin"), bytes(*n, i as u64 + 1)))
        .collect();
    let paths: Vec<_> = files.iter().map(|(n, d)| write(&home, n, d)).collect();
    let mut args = vec!["upload", "--block-size", "64KiB"];
    args.extend(paths.iter().map(|p| s(p)));
    args.push("/vo1/many/");
    let (c, v, o) = json(&g, &args);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(v["copied"], files.len() as u64, "{v}");
    assert_eq!(v["dest"], "/vo1/many", "{v}");
    assert_eq!(v["failed"].as_array().map(Vec::len), Some(0), "{v}");
    for (name, data) in &files {
        let p = format!("/vo1/many/{name}");
        download_is(&g, "alice", &p, data, "uploaded together");
        assert_eq!(version(&g, &p), 1, "{p}");
    }

    // The same names again (no trailing slash: several sources mean a
    // directory): a new version of each, the new contents read back.
    let again: Vec<(String, Vec<u8>)> = files[..3]
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), bytes(300 + i, 99 + i as u64)))
        .collect();
    let paths: Vec<_> = again.iter().map(|(n, d)| write(&home, n, d)).collect();
    let mut args = vec!["upload"];
    args.extend(paths.iter().map(|p| s(p)));
    args.push("/vo1/many");
    let (c, v, o) = json(&g, &args);
    assert_eq!(c, 0, "{}", text(&o));
    assert_eq!(v["copied"], again.len() as u64, "{v}");
    for (name, data) in &again {
        let p = format!("/vo1/many/{name}");
        download_is(&g, "alice", &p, data, "uploaded again");
        assert_eq!(version(&g, &p), 2, "{p}");
    }

    // One small file over an existing path, by the ordinary one-file
    // upload (which guesses a new file first): version 3.
    let third = bytes(5000, 1234);
    upload(&g, "alice", "third", &third, "/vo1/many/f0.bin", &[]);
    download_is(&g, "alice", "/vo1/many/f0.bin", &third, "one file over");
    assert_eq!(version(&g, "/vo1/many/f0.bin"), 3);

    // Several sources to a file, or to a missing directory: refused
    // before any data moves.
    let before = depot_state(&g);
    let (a, b) = (s(&paths[0]), s(&paths[1]));
    let cases = [
        (
            vec!["upload", a, b, "/vo1/many/f1.bin"],
            2,
            "is a file, not a directory",
        ),
        (
            vec!["upload", a, b, "/vo1/nodir"],
            7,
            "/vo1/nodir: no such directory",
        ),
        (vec!["upload", a, b, "--xnd", "x.xnd"], 2, "--xnd"),
    ];
    for (args, want, says) in cases {
        let o = lors(&g, "alice", &args);
        assert_eq!(code(&o), want, "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", text(&o));
        assert_eq!(depot_state(&g), before, "{args:?}: nothing moved");
    }
    assert_eq!(version(&g, "/vo1/many/f1.bin"), 2, "not replaced");

    // A missing source among others: the others go, exit 7.
    let new = write(&home, "new.bin", &bytes(3000, 77));
    let missing = home.join("missing.bin");
    let (c, v, o) = json(&g, &["upload", s(&missing), s(&new), "/vo1/many/"]);
    assert_eq!(c, 7, "{}", text(&o));
    assert_eq!(v["copied"], 1, "{v}");
    assert!(
        v["failed"][0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("missing.bin")),
        "{v}"
    );
    download_is(
        &g,
        "alice",
        "/vo1/many/new.bin",
        &bytes(3000, 77),
        "the others go",
    );
}
