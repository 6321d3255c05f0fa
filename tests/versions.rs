//! Versions and retention on a real grid (issue 19, "Files that stay alive
//! unattended"): refreshes do not multiply what `lors usage` counts (it
//! equals what the depots hold), `lors versions` lists exactly the
//! versions the directory's retention keeps, the allocations only a
//! dropped version named are released on the depots, `rm --version` of an
//! old version sharing allocations with the current one leaves the file
//! whole, and `ls -l` shows expiry and marks expired and damaged files.

mod common;

use std::time::Duration;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};
use serde_json::Value;

fn json(o: std::process::Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Bytes of allocation data on every depot.
fn depots_hold(g: &Grid) -> u64 {
    (0..g.depots.len()).map(|i| depot_data_bytes(g, i)).sum()
}

/// alice's `stored` in `lors usage --json` (her own row, the only one a
/// member who is not an admin sees; none before her first file).
fn usage_stored(g: &Grid) -> u64 {
    let u = json(lors(g, "alice", &["usage", "--json"]));
    match u["users"].as_array().map(Vec::as_slice) {
        Some([]) => 0,
        Some([me]) => me["stored"]
            .as_u64()
            .unwrap_or_else(|| panic!("no stored bytes: {u}")),
        _ => panic!("not alice's row alone: {u}"),
    }
}

/// The version numbers `lors versions --json` lists, newest first, and
/// the current one.
fn versions(g: &Grid, path: &str) -> (Vec<u64>, u64) {
    let v = json(lors(g, "alice", &["versions", "--json", path]));
    let list: Vec<u64> = v["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions: {v}"))
        .iter()
        .map(|r| r["version"].as_u64().expect("a number"))
        .collect();
    let current: Vec<u64> = v["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["current"] == true)
        .map(|r| r["version"].as_u64().expect("a number"))
        .collect();
    assert_eq!(current.len(), 1, "one current version: {v}");
    assert_eq!(v["current_version"], current[0], "{v}");
    (list, current[0])
}

/// Usage equals what the depots hold (each allocation counted once).
#[track_caller]
fn usage_is_depot_state(g: &Grid, what: &str) -> u64 {
    let held = depots_hold(g);
    assert_eq!(usage_stored(g), held, "{what}: usage vs the depots");
    held
}

#[test]
fn refreshes_do_not_multiply_usage_and_retention_releases_what_only_old_versions_used() {
    let _timer = Timer::start(
        "refreshes_do_not_multiply_usage_and_retention_releases_what_only_old_versions_used",
    );
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice/v"]));
    let out = ok(lors(
        &g,
        "alice",
        &["versions", "--keep", "2", "/vo1/alice/v"],
    ));
    assert_eq!(
        out,
        "/vo1/alice/v keeps 2 versions of each file (set on /vo1/alice/v)\n"
    );
    assert_eq!(depots_hold(&g), 0);

    let f = "/vo1/alice/v/f";
    let first = bytes(300_000, 1);
    upload(
        &g,
        "alice",
        "first",
        &first,
        f,
        &["--block-size", "64KiB", "--copies", "2"],
    );
    let one = usage_is_depot_state(&g, "after the upload");
    assert!(one >= 600_000, "two copies of 300 kB: {one}");
    // Refreshes make versions that share every allocation.
    for n in 2..=4u64 {
        ok(lors(&g, "alice", &["refresh", "-q", f, "--duration", "2d"]));
        assert_eq!(usage_is_depot_state(&g, "after a refresh"), one);
        let (list, current) = versions(&g, f);
        assert_eq!(current, n);
        assert_eq!(
            list,
            (n.saturating_sub(1).max(1)..=n).rev().collect::<Vec<_>>()
        );
    }
    // What usage used to say: every kept version's bytes added up.
    let v = json(lors(&g, "alice", &["versions", "--json", f]));
    let summed: u64 = v["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["stored"].as_u64())
        .sum();
    eprintln!(
        "after 3 refreshes: usage stored {} B, depots hold {} B, the kept versions' bytes added up {summed} B",
        usage_stored(&g),
        depots_hold(&g)
    );
    assert_eq!(summed, 2 * one, "two versions kept, the same allocations");
    // New content: new allocations; the old ones are still named by
    // version 4, kept.
    let second = bytes(200_000, 2);
    upload(
        &g,
        "alice",
        "second",
        &second,
        f,
        &["--block-size", "64KiB"],
    );
    assert_eq!(versions(&g, f), (vec![5, 4], 5));
    let both = usage_is_depot_state(&g, "old and new content");
    assert!(both >= one + 200_000, "{both}");
    // A refresh drops version 4, the last naming the first content's
    // allocations: released on the depots.
    ok(lors(&g, "alice", &["refresh", "-q", f, "--duration", "2d"]));
    assert_eq!(versions(&g, f), (vec![6, 5], 6));
    let now = usage_is_depot_state(&g, "after the retention dropped version 4");
    assert_eq!(now, both - one, "the first content's allocations are freed");
    download_is(&g, "alice", f, &second, "after the retention");

    // Augment to two copies, then trim one depot's copies away: usage
    // follows the depots (the trim releases what it dropped, and older
    // versions naming it no longer count it).
    ok(lors(&g, "alice", &["augment", "-q", f, "--copies", "2"]));
    let two = usage_is_depot_state(&g, "after augment");
    assert!(two >= now + 200_000, "{two}");
    let maps = mappings(&stat_json(&g, "alice", f));
    let depot = maps[maps.len() - 1]["depot"]
        .as_str()
        .expect("a depot")
        .to_owned();
    ok(lors(&g, "alice", &["trim", "-q", f, "--depot", &depot]));
    assert_eq!(versions(&g, f), (vec![8, 7], 8));
    let trimmed = usage_is_depot_state(&g, "after trim");
    assert!(trimmed < two, "{trimmed} < {two}");

    // rm --version of version 7 (the augment), whose allocations version 8
    // uses or the trim released: nothing is released and the file reads
    // back whole.
    let o = lors(&g, "alice", &["rm", "--version", "7", f]);
    assert_eq!(
        ok(o),
        format!("deleted {f} (version 7); freed 0 of 0 allocation(s)\n")
    );
    assert_eq!(versions(&g, f), (vec![8], 8));
    assert_eq!(usage_is_depot_state(&g, "after rm --version"), trimmed);
    download_is(&g, "alice", f, &second, "after rm --version 7");

    // stat lists the versions; ls -l shows the expiry, with no mark.
    let st = ok(lors(&g, "alice", &["stat", f]));
    assert!(st.contains("versions  : 1\n"), "{st}");
    assert!(st.lines().any(|l| l.starts_with("*8 ")), "{st}");
    let ls = ok(lors(&g, "alice", &["ls", "-l", "-h", "/vo1/alice/v"]));
    assert!(ls.contains("195.3 KiB"), "-h: {ls}");
    assert!(!ls.contains("EXPIRED") && !ls.contains("DAMAGED"), "{ls}");
    // Times carry their UTC offset: the change and the expiry.
    let line = ls.lines().find(|l| l.ends_with(" f")).expect("f listed");
    assert_eq!(offsets(line), 2, "{line}");

    // Deleting the file frees everything.
    ok(lors(&g, "alice", &["rm", f]));
    assert_eq!(usage_is_depot_state(&g, "after rm"), 0);
}

/// How many words of `line` are UTC offsets (`+01:00`).
fn offsets(line: &str) -> usize {
    line.split_whitespace()
        .filter(|w| {
            let b = w.as_bytes();
            b.len() == 6
                && (b[0] == b'+' || b[0] == b'-')
                && b[1..3].iter().all(u8::is_ascii_digit)
                && b[3] == b':'
                && b[4..].iter().all(u8::is_ascii_digit)
        })
        .count()
}

/// The health `ls -l --json` gives `name` in `dir`.
fn health(g: &Grid, dir: &str, name: &str) -> Option<String> {
    let l = json(lors(g, "alice", &["ls", "-l", "--json", dir]));
    l.as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("/{name}")))
        })
        .and_then(|e| e["health"].as_str().map(str::to_owned))
}

/// The line of `ls -l` naming `name`.
fn ls_line(g: &Grid, dir: &str, name: &str) -> String {
    let out = ok(lors(g, "alice", &["ls", "-l", dir]));
    out.lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .to_owned()
}

#[test]
fn ls_l_shows_expiry_and_marks_expired_and_damaged_files() {
    let _timer = Timer::start("ls_l_shows_expiry_and_marks_expired_and_damaged_files");
    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    let dir = "/vo1/alice/e";
    ok(lors(&g, "alice", &["mkdir", "-p", dir]));
    let data = bytes(100_000, 3);
    upload(
        &g,
        "alice",
        "short",
        &data,
        &format!("{dir}/short"),
        &["--duration", "3s"],
    );
    // Two copies for an hour, then a third that lives 3 s: when it has
    // expired the file is damaged (a piece gone), not expired.
    upload(
        &g,
        "alice",
        "long",
        &data,
        &format!("{dir}/long"),
        &["--duration", "1h"],
    );
    ok(lors(
        &g,
        "alice",
        &[
            "augment",
            "-q",
            &format!("{dir}/long"),
            "--copies",
            "2",
            "--duration",
            "3s",
        ],
    ));
    let line = ls_line(&g, dir, "long");
    assert_eq!(offsets(&line), 2, "change and expiry times: {line}");

    wait_until(Duration::from_secs(60), "short is marked expired", || {
        health(&g, dir, "short").as_deref() == Some("expired")
    });
    assert!(
        ls_line(&g, dir, "short").contains(" EXPIRED short"),
        "{}",
        ls_line(&g, dir, "short")
    );
    wait_until(Duration::from_secs(60), "long is marked damaged", || {
        health(&g, dir, "long").as_deref() == Some("damaged")
    });
    assert!(
        ls_line(&g, dir, "long").contains(" DAMAGED long"),
        "{}",
        ls_line(&g, dir, "long")
    );
    // Damaged, still readable from its live copy.
    download_is(&g, "alice", &format!("{dir}/long"), &data, "a damaged file");
    // stat says it too.
    let st = ok(lors(&g, "alice", &["stat", &format!("{dir}/long")]));
    assert!(
        st.lines()
            .any(|l| l.starts_with("expires") && l.ends_with("DAMAGED")),
        "{st}"
    );
}
