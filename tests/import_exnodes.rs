//! `lors import-exnodes` against a real grid:
//!
//! - the LoRS 0.82 exNodes of `libs/exnode/tests/fixtures/lors-exnodes`
//!   (their depots do not exist here) are registered as metadata, each
//!   with a new file UUID and its size; a file that is not an exNode is
//!   reported with its reason and the exit code; those with a key written
//!   in the exNode are warned about; reading one fails clearly, naming
//!   the depot; a re-run skips what is there;
//! - a tree written by the legacy path (`lors upload --security legacy
//!   --xnd`, on the grid's legacy ports; one in clear, one encrypted with
//!   its key file) is imported and `lors download` by grid path reads the
//!   bytes back; the data was not copied (the depots hold what they held);
//! - `--copy` re-uploads them encrypted to the VO's secure depots, and
//!   the copies read back.

mod common;

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

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("libs/exnode/tests/fixtures/lors-exnodes")
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

fn list(v: &serde_json::Value, k: &str) -> Vec<serde_json::Value> {
    v[k].as_array()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .clone()
}

#[test]
fn lors_082_exnodes_are_registered_and_reading_them_names_the_missing_depot() {
    let _timer = Timer::start("lors_082_exnodes");
    let g = start(opts());
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.join("old");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    let mut names = Vec::new();
    for e in std::fs::read_dir(fixtures()).expect("fixtures") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "xnd") {
            let name = p.file_name().expect("name").to_owned();
            std::fs::copy(&p, dir.join("sub").join(&name)).expect("copy");
            names.push(name.to_string_lossy().trim_end_matches(".xnd").to_owned());
        }
    }
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    write(&dir, "junk.xnd", b"<not an exnode");

    let (v, o) = json(&g, &["import-exnodes", s(&dir), "/vo1/legacy"]);
    // One failure: exit with its code (an unusable exNode: 10).
    assert_eq!(code(&o), 10, "{}", text(&o));
    let failed = list(&v, "failed");
    assert_eq!(failed.len(), 1, "{v}");
    assert!(
        failed[0]["xnd"]
            .as_str()
            .unwrap_or("")
            .ends_with("junk.xnd"),
        "{v}"
    );
    assert!(
        stderr(&o).contains("not imported") && stderr(&o).contains("junk.xnd"),
        "{}",
        text(&o)
    );
    let imported = list(&v, "imported");
    assert_eq!(imported.len(), 5, "{v}");
    for name in &names {
        let path = format!("/vo1/legacy/sub/{name}");
        let st = stat_json(&g, "alice", &path);
        let want: u64 = if name.starts_with("100M") {
            104_857_600
        } else {
            10_485_760
        };
        assert_eq!(st["size"].as_u64(), Some(want), "{path}: {st}");
        assert!(
            st["file"].as_str().is_some_and(|id| id.len() == 36),
            "{path}: a file UUID was given: {st}"
        );
    }
    // The exNodes carrying their key in clear are named.
    assert!(
        stderr(&o).contains("/vo1/legacy/sub/10M_default")
            && stderr(&o).contains("key written in the exNode"),
        "{}",
        text(&o)
    );

    // Their depots are gone: reading fails, naming the depot.
    let out = g.user("alice").dir.join("none.out");
    let o = lors(
        &g,
        "alice",
        &["download", "/vo1/legacy/sub/10M_none", s(&out)],
    );
    eprintln!("reading an exNode whose depots are gone: {}", text(&o));
    assert_ne!(code(&o), 0, "{}", text(&o));
    // The exNode has a replica on each of two depots; the error names the
    // one tried last, which depends on the order of the attempts.
    assert!(
        stderr(&o).contains("127.0.0.1:6714") || stderr(&o).contains("localhost:6715"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());

    // A re-run: everything there is skipped; only the bad file fails again.
    let (v, o) = json(&g, &["import-exnodes", s(&dir), "/vo1/legacy"]);
    assert_eq!(code(&o), 10, "{}", text(&o));
    assert_eq!(list(&v, "imported").len(), 0, "{v}");
    assert_eq!(list(&v, "skipped").len(), 5, "{v}");

    // A destination whose parent is missing: refused before anything.
    let o = lors(&g, "alice", &["import-exnodes", s(&dir), "/vo1/nodir/x"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
}

#[test]
fn a_tree_written_by_the_legacy_path_is_imported_and_read_back_by_path() {
    let _timer = Timer::start("a_tree_written_by_the_legacy_path");
    let g = start(opts());
    keys_init(&g, "alice");
    let home = g.user("alice").dir.clone();
    let xdir = home.join("xnds");
    std::fs::create_dir_all(xdir.join("deep/er")).expect("mkdir");
    let depot = g.depots[0].legacy_addr.clone();
    let files = [
        ("a", bytes(300_000, 1), vec!["--no-encrypt"]),
        ("deep/er/b", bytes(5_000, 2), vec!["--no-encrypt"]),
        // Encrypted: the key file beside the exNode.
        ("deep/c", bytes(70_000, 3), vec![]),
    ];
    for (name, data, extra) in &files {
        let src = write(&home, &name.replace('/', "_"), data);
        let xnd = xdir.join(format!("{name}.xnd"));
        let mut args = vec![
            "upload",
            s(&src),
            "--xnd",
            s(&xnd),
            "--security",
            "legacy",
            "--depot",
            &depot,
            "--block-size",
            "64KiB",
        ];
        args.extend(extra.iter().copied());
        ok(lors(&g, "alice", &args));
    }
    assert!(xdir.join("deep/c.xnd.key").exists());
    let before: Vec<u64> = g.depots.iter().map(|d| bytes_under(&d.data_dir)).collect();

    let (v, o) = json(&g, &["import-exnodes", s(&xdir), "/vo1/imported"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(list(&v, "imported").len(), 3, "{v}");
    let after: Vec<u64> = g.depots.iter().map(|d| bytes_under(&d.data_dir)).collect();
    assert_eq!(before, after, "no data was copied");
    for (name, data, _) in &files {
        download_is(&g, "alice", &format!("/vo1/imported/{name}"), data, name);
    }
    // The same exNodes again elsewhere: their file UUIDs are taken (an
    // exNode of ours keeps its UUID: its checksums and IVs are bound to
    // it), so each is refused, saying so.
    let (v, o) = json(&g, &["import-exnodes", s(&xdir), "/vo1/again"]);
    eprintln!("imported twice: {}", text(&o));
    assert_eq!(code(&o), 8, "{}", text(&o));
    let failed = list(&v, "failed");
    assert_eq!(failed.len(), 3, "{v}");
    for f in &failed {
        assert!(
            f["reason"]
                .as_str()
                .is_some_and(|r| r.contains("file UUID") && r.contains("is taken")),
            "{v}"
        );
    }

    // --copy: downloaded through the exNodes, uploaded encrypted to the
    // secure depots.
    let (v, o) = json(&g, &["import-exnodes", s(&xdir), "/vo1/copied", "--copy"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(list(&v, "imported").len(), 3, "{v}");
    for (name, data, _) in &files {
        let path = format!("/vo1/copied/{name}");
        download_is(&g, "alice", &path, data, name);
        let st = stat_json(&g, "alice", &path);
        let m = mappings(&st);
        assert!(!m.is_empty(), "{st}");
        for x in &m {
            assert_ne!(x["security"], "legacy", "{path}: {st}");
        }
    }
}
