//! Whole trees against a real grid (online CA, L-Bone, metadata manager,
//! depots: each its own process), through the `lors` CLI:
//!
//! - a generated tree of 1,000 files (four sizes, the empty one included,
//!   nested directories, empty directories, distinct modification times)
//!   copied with `lors cp -r`, interrupted (SIGINT once some files are
//!   registered), resumed with `lors sync`, synced again with nothing to
//!   do (zero copied), copied back with `lors cp -r` and compared byte for
//!   byte and mtime for mtime;
//! - `sync --dry-run` changes nothing and lists what `sync --delete` then
//!   does, in both directions;
//! - destinations refused before any data moves (missing parent, a file
//!   where a directory must be, no write right): in well under a second
//!   of the command's own time, the depots' state unchanged by a byte;
//! - `upload -r` and `download -r` are `cp -r`.
//!
//! Every wait is on a condition and bounded. The figures (files/s of the
//! copy, seconds of the no-change sync) are printed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

fn opts() -> GridOptions {
    GridOptions {
        depots: 2,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// File sizes of the tree, by file index.
const SIZES: [usize; 4] = [0, 100, 4096, 20_000];

/// A tree of `dirs` x `subdirs` x `files` files under `root`, plus two
/// empty directories; every file with its own content and mtime.
fn make_tree(root: &Path, dirs: usize, subdirs: usize, files: usize) -> usize {
    let mut n = 0;
    for d in 0..dirs {
        for s in 0..subdirs {
            let dir = root.join(format!("d{d}/s{s}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            for f in 0..files {
                let p = dir.join(format!("f{f}"));
                std::fs::write(&p, bytes(SIZES[n % SIZES.len()], n as u64 + 1)).expect("write");
                set_mtime(&p, 1_600_000_000 + n as i64 * 61);
                n += 1;
            }
        }
    }
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    std::fs::create_dir_all(root.join("d0/empty too")).expect("mkdir");
    n
}

fn set_mtime(p: &Path, secs: i64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64);
    std::fs::File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File { hash: String, mtime: i64 },
}

/// A local tree: relative path -> directory, or file content hash and
/// mtime (whole seconds).
fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let r = rel.join(e.file_name());
            let m = e.metadata().expect("metadata");
            let key = r.to_str().expect("UTF-8").to_owned();
            if m.is_dir() {
                out.insert(key, Entry::Dir);
                stack.push(r);
            } else {
                let data = std::fs::read(e.path()).expect("read");
                out.insert(
                    key,
                    Entry::File {
                        hash: blake3::hash(&data).to_hex().to_string(),
                        mtime: m.mtime(),
                    },
                );
            }
        }
    }
    out
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path, what: &str) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    assert_eq!(sa.len(), sb.len(), "{what}: entries");
    for (k, v) in &sa {
        assert_eq!(Some(v), sb.get(k), "{what}: {k}");
    }
}

/// `lors ARGS --json` as alice; the JSON and the output.
#[track_caller]
fn json(g: &Grid, args: &[&str]) -> (serde_json::Value, Output) {
    let mut a = args.to_vec();
    a.push("--json");
    let o = lors(g, "alice", &a);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o)));
    (v, o)
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Waits (bounded) for `child` to exit; its output.
fn finish(child: Child) -> Output {
    let what = "the interrupted copy exits";
    let start = Instant::now();
    let out = child.wait_with_output().expect(what);
    assert!(start.elapsed() < Duration::from_secs(120), "{what}");
    out
}

/// Files registered under a grid directory (recursively), by `lors ls`
/// of each of the tree's leaf directories (`d0/s0`...).
fn registered(g: &Grid, root: &str, dirs: usize, subdirs: usize) -> usize {
    let mut total = 0;
    for d in 0..dirs {
        for s in 0..subdirs {
            let o = lors(g, "alice", &["ls", "--json", &format!("{root}/d{d}/s{s}")]);
            if !o.status.success() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ls --json");
            total += v
                .as_array()
                .or_else(|| v["entries"].as_array())
                .map_or(0, |a| a.iter().filter(|e| e["kind"] == "file").count());
        }
    }
    total
}

#[test]
fn a_tree_of_1000_files_is_copied_interrupted_resumed_synced_and_copied_back() {
    let _timer = Timer::start("a_tree_of_1000_files");
    let g = start(opts());
    keys_init(&g, "alice");
    let home = g.user("alice").dir.clone();
    let src = home.join("tree");
    let (dirs, subdirs, files) = (10, 10, 10);
    assert_eq!(make_tree(&src, dirs, subdirs, files), 1000);

    // cp -r to a new name, interrupted once some files are registered.
    let mut c = lors_cmd(
        &g,
        "alice",
        &["cp", "-r", s(&src), "lors:/vo1/t", "--jobs", "8"],
    );
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("lors cp starts");
    wait_until(
        Duration::from_secs(120),
        "some files of the copy are registered",
        || {
            matches!(child.try_wait(), Ok(Some(_)))
                || lors(&g, "alice", &["stat", "/vo1/t/d0/s2/f0"])
                    .status
                    .success()
        },
    );
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the copy ended before it could be interrupted"
    );
    signal(&child, libc::SIGINT);
    let o = finish(child);
    assert_eq!(code(&o), 130, "interrupted: {}", text(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", text(&o));
    let done = registered(&g, "/vo1/t", dirs, subdirs);
    assert!((20..1000).contains(&done), "{done} files registered");
    // The files in flight released what they had stored: no journal of
    // allocations in flight is left for `lors cleanup`.
    let (v, o) = json(&g, &["cleanup", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        v["journals"].as_array().map(Vec::len),
        Some(0),
        "nothing left to clean up: {v}"
    );
    // The metadata manager shows the source's mtime.
    let (v, _) = json(&g, &["stat", "/vo1/t/d0/s0/f1"]);
    let mtime = v["mtime"].as_i64().or_else(|| v["entry"]["mtime"].as_i64());
    assert_eq!(mtime, Some(1_600_000_061), "{v}");

    // Resumed: sync copies exactly what is missing.
    let t = Instant::now();
    let (v, o) = json(&g, &["sync", s(&src), "lors:/vo1/t", "--jobs", "8"]);
    let resume_s = t.elapsed().as_secs_f64();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(n(&v, "copied") as usize, 1000 - done, "{v}");
    assert_eq!(n(&v, "skipped") as usize, done, "{v}");
    assert_eq!(registered(&g, "/vo1/t", dirs, subdirs), 1000);
    eprintln!(
        "FIGURE resume: {} files in {resume_s:.2} s wall ({:.1} files/s)",
        1000 - done,
        (1000 - done) as f64 / resume_s
    );

    // Nothing to do.
    let t = Instant::now();
    let (v, o) = json(&g, &["sync", s(&src), "lors:/vo1/t"]);
    let nochange_s = t.elapsed().as_secs_f64();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(n(&v, "copied"), 0, "{v}");
    assert_eq!(n(&v, "skipped"), 1000, "{v}");
    assert_eq!(n(&v, "dirs_created"), 0, "{v}");
    eprintln!(
        "FIGURE no-change sync of 1000 files: {nochange_s:.2} s wall ({:.2} s in lors)",
        v["seconds"].as_f64().unwrap_or(-1.0)
    );

    // A whole copy (cp -r of the full tree to a second name): files/s.
    let t = Instant::now();
    let (v, o) = json(&g, &["cp", "-r", s(&src), "lors:/vo1/t2", "--jobs", "8"]);
    let cp_s = t.elapsed().as_secs_f64();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(n(&v, "copied"), 1000, "{v}");
    eprintln!(
        "FIGURE cp -r of 1000 files: {cp_s:.2} s wall, {:.1} files/s",
        1000.0 / cp_s
    );

    // Back: a new local name; same bytes, same mtimes, empty directories.
    let back = home.join("back");
    let (v, o) = json(&g, &["cp", "-r", "lors:/vo1/t", s(&back)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(n(&v, "copied"), 1000, "{v}");
    assert_same_tree(&src, &back, "copied back");
    let (v, _) = json(&g, &["sync", "lors:/vo1/t", s(&back)]);
    assert_eq!(n(&v, "copied"), 0, "{v}");

    // Changes: one file rewritten (same size, new mtime), one removed,
    // one added.
    let changed = src.join("d0/s0/f2");
    let new_content = bytes(4096, 999);
    std::fs::write(&changed, &new_content).expect("write");
    set_mtime(&changed, 1_700_000_000);
    std::fs::remove_file(src.join("d9/s9/f9")).expect("rm");
    std::fs::write(src.join("new.txt"), b"new").expect("write");

    // --dry-run: lists, changes nothing.
    let (v, o) = json(
        &g,
        &["sync", s(&src), "lors:/vo1/t", "--delete", "--dry-run"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let mut planned: Vec<(String, String)> = v["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["op"] != "skip")
        .map(|a| {
            (
                a["op"].as_str().unwrap_or("").to_owned(),
                a["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    planned.sort();
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        planned,
        want(&[
            ("copy", "d0/s0/f2"),
            ("copy", "new.txt"),
            ("delete", "d9/s9/f9")
        ]),
        "{v}"
    );
    assert!(lors(&g, "alice", &["stat", "/vo1/t/d9/s9/f9"])
        .status
        .success());
    assert_eq!(code(&lors(&g, "alice", &["stat", "/vo1/t/new.txt"])), 7);

    // --delete for real.
    let (v, o) = json(&g, &["sync", s(&src), "lors:/vo1/t", "--delete"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!((n(&v, "copied"), n(&v, "deleted")), (2, 1), "{v}");
    assert_eq!(code(&lors(&g, "alice", &["stat", "/vo1/t/d9/s9/f9"])), 7);
    download_is(
        &g,
        "alice",
        "/vo1/t/d0/s0/f2",
        &new_content,
        "the changed file",
    );

    // And back to the local copy, which becomes the source again.
    let (v, o) = json(&g, &["sync", "lors:/vo1/t", s(&back), "--delete"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!((n(&v, "copied"), n(&v, "deleted")), (2, 1), "{v}");
    assert_same_tree(&src, &back, "synced back");
}

/// Allocation files and journals of every depot.
fn depot_state(g: &Grid) -> Vec<u64> {
    g.depots.iter().map(|d| bytes_under(&d.data_dir)).collect()
}

#[test]
fn tree_destinations_are_refused_before_any_data_moves() {
    let _timer = Timer::start("tree_destinations_are_refused_before_any_data_moves");
    let g = start(opts());
    keys_init(&g, "alice");
    keys_init(&g, "bob");
    let home = g.user("alice").dir.clone();
    let small = home.join("small");
    assert_eq!(make_tree(&small, 1, 2, 2), 4);
    ok(lors(&g, "alice", &["mkdir", "/vo1/adir"]));
    upload(&g, "alice", "afile", b"a file", "/vo1/adir/afile", &[]);
    // Bob may read alice's directory, not write in it.
    ok(lors(
        &g,
        "alice",
        &["acl", "set", "/vo1/adir", "--access", "vo:vo1=r"],
    ));
    let bob_small = g.user("bob").dir.join("small");
    make_tree(&bob_small, 1, 1, 1);
    let a_file = write(&home, "plain", b"x");
    let before = depot_state(&g);

    let missing = home.join("nodir/x");
    let cases: Vec<(&str, &str, Vec<&str>, i32, &str)> = vec![
        (
            "grid: missing parent",
            "alice",
            vec!["cp", "-r", s(&small), "lors:/vo1/nodir/x"],
            7,
            "/vo1/nodir: no such directory",
        ),
        (
            "grid: sync onto a file",
            "alice",
            vec!["sync", s(&small), "lors:/vo1/adir/afile"],
            2,
            "/vo1/adir/afile exists and is a file",
        ),
        (
            "grid: no write right",
            "bob",
            vec!["cp", "-r", s(&bob_small), "lors:/vo1/adir"],
            3,
            "no write right on /vo1/adir",
        ),
        (
            "grid: a directory without -r",
            "alice",
            vec!["cp", s(&small), "lors:/vo1/adir"],
            2,
            "give -r",
        ),
        (
            "local: missing parent",
            "alice",
            vec!["cp", "-r", "lors:/vo1/adir", s(&missing)],
            7,
            "no such directory",
        ),
        (
            "local: sync onto a file",
            "alice",
            vec!["sync", "lors:/vo1/adir", s(&a_file)],
            2,
            "exists and is a file",
        ),
        (
            "both local",
            "alice",
            vec!["sync", s(&small), s(&a_file)],
            2,
            "one side must be local",
        ),
    ];
    for (what, user, args, want, says) in cases {
        let t = Instant::now();
        let o = lors(&g, user, &args);
        let took = t.elapsed();
        eprintln!("{what}: {took:?}: {}", text(&o));
        assert_eq!(code(&o), want, "{what}: {}", text(&o));
        assert!(
            stderr(&o).contains(says),
            "{what}: says {says:?}: {}",
            text(&o)
        );
        assert_eq!(
            depot_state(&g),
            before,
            "{what}: no allocation was made (nor released)"
        );
        // The process with its TLS connections, in a debug build: well
        // under the time of one upload.
        assert!(took < Duration::from_secs(2), "{what}: {took:?}");
    }
    assert!(!missing.exists());

    // upload -r and download -r are cp -r: into existing directories.
    let o = lors(&g, "alice", &["upload", "-r", s(&small), "/vo1/adir"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = home.join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let o = lors(&g, "alice", &["download", "-r", "/vo1/adir/small", s(&out)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_same_tree(&small, &out.join("small"), "upload -r, download -r");

    // One file, without -r: into a directory, and back under a new name,
    // its mtime kept.
    set_mtime(&a_file, 1_500_000_000);
    let (v, o) = json(&g, &["cp", s(&a_file), "lors:/vo1/adir"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(v["dest"], "/vo1/adir/plain", "{v}");
    let one = home.join("one");
    let o = lors(&g, "alice", &["cp", "lors:/vo1/adir/plain", s(&one)]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_file_is(&one, b"x", "one file back");
    assert_eq!(
        std::fs::metadata(&one).expect("metadata").mtime(),
        1_500_000_000
    );

    // --checksum: a file rewritten with the same size and mtime is
    // unchanged by size and mtime, changed by its contents.
    let f = small.join("d0/s0/f1");
    let mtime = std::fs::metadata(&f).expect("metadata").mtime();
    let new = bytes(SIZES[1], 4242);
    std::fs::write(&f, &new).expect("write");
    set_mtime(&f, mtime);
    let (v, o) = json(&g, &["sync", s(&small), "lors:/vo1/adir/small"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!((n(&v, "copied"), n(&v, "skipped")), (0, 4), "{v}");
    let (v, o) = json(
        &g,
        &["sync", "--checksum", s(&small), "lors:/vo1/adir/small"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!((n(&v, "copied"), n(&v, "skipped")), (1, 3), "{v}");
    download_is(&g, "alice", "/vo1/adir/small/d0/s0/f1", &new, "--checksum");

    // A partial failure: a directory where one file goes. That file is
    // named with its reason, the others are copied, the exit code is the
    // failure's (usage, 2).
    ok(lors(
        &g,
        "alice",
        &["mkdir", "-p", "/vo1/adir/conf/d0/s0/f0"],
    ));
    let (v, o) = json(&g, &["sync", s(&small), "lors:/vo1/adir/conf"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(n(&v, "copied"), 3, "{v}");
    let failed = v["failed"].as_array().expect("failed");
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["path"], "/vo1/adir/conf/d0/s0/f0", "{v}");
    assert!(
        stderr(&o).contains("/vo1/adir/conf/d0/s0/f0: a directory is in the way"),
        "{}",
        text(&o)
    );
}
