//! Interrupting `lors upload` against a real grid (online CA, L-Bone,
//! metadata manager, depots: each its own process):
//!
//! - SIGINT (Ctrl-C) or SIGTERM during an upload without `--resume`: exit
//!   130 / 143, the allocations it made released (the depots hold what they
//!   held before), and it says so;
//! - with `--resume`: exit 130, the journal and the stored blocks kept, and
//!   the same command with `--resume` completes a file that reads back
//!   whole;
//! - a second SIGINT while the upload releases exits at once;
//! - an upload to a destination it could not be registered at (missing
//!   parent, a directory, no write right; an `--xnd` file likewise) is
//!   refused before any depot is contacted: the depots' state (allocation
//!   files and journals) does not change by a byte.
//!
//! Every wait is on a condition and bounded; assertions are on exit codes,
//! messages, depot state and bytes read back.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

fn opts() -> GridOptions {
    GridOptions {
        depots: 3,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// Allocation bytes held by all the grid's depots.
fn grid_data_bytes(g: &Grid) -> u64 {
    (0..g.depots.len()).map(|i| depot_data_bytes(g, i)).sum()
}

/// The test file: big enough, in small blocks, to take seconds to upload
/// in a debug build.
const SIZE: usize = SLOW_UPLOAD_SIZE;
const UPLOAD_ARGS: &[&str] = SLOW_UPLOAD_ARGS;

/// Starts `lors upload SRC DEST UPLOAD_ARGS extra` as alice.
fn spawn_upload(g: &Grid, src: &str, dest: &str, extra: &[&str]) -> Child {
    let mut c = slow_upload_cmd(g, src, dest, extra);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("lors upload starts")
}

/// Waits (bounded) until the depots hold `at_least` more bytes than
/// `baseline` while `child` still runs; panics if it ended first.
fn wait_for_progress(g: &Grid, child: &mut Child, baseline: u64, at_least: u64) {
    wait_until(
        Duration::from_secs(60),
        "the depots receive part of the upload",
        || matches!(child.try_wait(), Ok(Some(_))) || grid_data_bytes(g) >= baseline + at_least,
    );
    if let Ok(Some(st)) = child.try_wait() {
        panic!("the upload ended ({st}) before it could be interrupted: the file is too small");
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on the pid of our own child, which has not been
    // reaped yet (so the pid is still its own).
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Waits (bounded) for `child` to exit; its output.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                panic!("the interrupted upload did not exit within 60 s");
            }
        }
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout).expect("stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr).expect("stderr");
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `path` is not registered at the metadata manager.
#[track_caller]
fn not_registered(g: &Grid, path: &str) {
    let o = lors(g, "alice", &["stat", path]);
    assert_eq!(code(&o), 7, "{path} was not registered: {}", text(&o));
}

/// Interrupts an upload without `--resume` with `sig`: exit `want`, every
/// allocation released.
fn interrupted_upload_releases(g: &Grid, src: &str, dest: &str, sig: i32, want: i32) {
    let baseline = grid_data_bytes(g);
    let mut child = spawn_upload(g, src, dest, &[]);
    wait_for_progress(g, &mut child, baseline, 1 << 20);
    let sent_at = grid_data_bytes(g);
    signal(&child, sig);
    let o = finish(child);
    eprintln!(
        "signal {sig} with {} bytes stored: {}",
        sent_at - baseline,
        text(&o)
    );
    assert_eq!(
        code(&o),
        want,
        "exit status after signal {sig}: {}",
        text(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("lors: interrupted: stopping the upload and releasing the allocations"),
        "says it stops and releases: {err}"
    );
    let released = err
        .split("released the ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("says how many allocations it released: {err}"));
    assert!(
        released >= (1 << 20) / (128 << 10),
        "released at least the blocks seen stored ({released}): {err}"
    );
    assert!(
        err.contains("nothing of this upload is left on the depots"),
        "{err}"
    );
    assert_eq!(
        grid_data_bytes(g),
        baseline,
        "the depots hold what they held before the upload"
    );
    assert!(stdout(&o).is_empty(), "no summary: {}", text(&o));
    not_registered(g, dest);
}

#[test]
fn an_interrupted_upload_releases_what_it_allocated_or_keeps_it_for_resume() {
    let _timer =
        Timer::start("an_interrupted_upload_releases_what_it_allocated_or_keeps_it_for_resume");
    let g = start(opts());
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    // Something stored before: the baseline is not zero.
    upload(&g, "alice", "small", &bytes(300_000, 7), "/vo1/small", &[]);
    let data = bytes(SIZE, 1);
    let src = write(&dir, "big", &data);

    interrupted_upload_releases(&g, s(&src), "/vo1/big-int", libc::SIGINT, 130);
    interrupted_upload_releases(&g, s(&src), "/vo1/big-term", libc::SIGTERM, 143);

    // --resume: interrupted, the stored blocks and the journal stay.
    let baseline = grid_data_bytes(&g);
    let mut child = spawn_upload(&g, s(&src), "/vo1/big-resume", &["--resume"]);
    wait_for_progress(&g, &mut child, baseline, 1 << 20);
    signal(&child, libc::SIGINT);
    let o = finish(child);
    eprintln!("--resume interrupted: {}", text(&o));
    assert_eq!(code(&o), 130, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("lors: interrupted: stopping the upload; the blocks stored so far are kept"),
        "{err}"
    );
    assert!(
        err.contains("run the same command with --resume to continue"),
        "{err}"
    );
    let journal: PathBuf = err
        .split("(journal ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("names the journal: {err}"));
    assert!(
        journal.is_file(),
        "the journal {} is kept",
        journal.display()
    );
    let kept = grid_data_bytes(&g) - baseline;
    assert!(kept >= 1 << 20, "the stored blocks are kept ({kept} bytes)");
    not_registered(&g, "/vo1/big-resume");

    // The same command with --resume completes it.
    let mut args = vec!["upload", s(&src), "/vo1/big-resume"];
    args.extend_from_slice(UPLOAD_ARGS);
    args.push("--resume");
    let out = ok(lors(&g, "alice", &args));
    assert!(out.contains("uploaded"), "{out}");
    assert!(!journal.exists(), "the journal is gone once registered");
    download_is(&g, "alice", "/vo1/big-resume", &data, "resumed upload");
    assert_eq!(
        grid_data_bytes(&g) - baseline,
        SIZE as u64,
        "one copy of each block is stored, the kept ones not sent again"
    );
}

/// Sends `sig` to every depot of the grid.
fn signal_depots(g: &Grid, sig: i32) {
    for d in &g.depots {
        let pid = d.pid().expect("the depot runs");
        let pid = i32::try_from(pid).expect("a pid");
        // SAFETY: kill(2) on a depot process the grid started and still
        // holds (not reaped).
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill({pid}, {sig})");
    }
}

#[test]
fn a_second_interrupt_while_releasing_exits_at_once() {
    let _timer = Timer::start("a_second_interrupt_while_releasing_exits_at_once");
    let g = start(opts());
    keys_init(&g, "alice");
    let data = bytes(SIZE, 2);
    let src = write(&g.user("alice").dir, "big", &data);
    let baseline = grid_data_bytes(&g);
    let mut child = spawn_upload(&g, s(&src), "/vo1/twice", &[]);
    wait_for_progress(&g, &mut child, baseline, 1 << 20);
    // Depots that do not answer: the release (DECR) hangs until the
    // client's timeout, so the second interrupt comes while releasing.
    signal_depots(&g, libc::SIGSTOP);
    let mut stderr = child.stderr.take().expect("stderr piped");
    signal(&child, libc::SIGINT);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if all.contains("stopping the upload") {
                        let _ = tx.send(());
                    }
                }
            }
        }
        all
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    let t = Instant::now();
    if first.is_ok() {
        signal(&child, libc::SIGINT);
    }
    let o = finish(child);
    let exited_after = t.elapsed();
    signal_depots(&g, libc::SIGCONT);
    let err = reader.join().expect("stderr reader");
    eprintln!(
        "second interrupt: exit {:?} {:.2} s after it: {err}",
        o.status.code(),
        exited_after.as_secs_f64()
    );
    assert!(first.is_ok(), "the first interrupt is acknowledged: {err}");
    assert_eq!(code(&o), 130, "{err}");
    assert!(
        err.contains(
            "lors: interrupted again: exiting now; allocations of this upload may be left"
        ),
        "{err}"
    );
    assert!(
        !err.contains("nothing of this upload is left"),
        "the release did not finish: {err}"
    );
    assert!(
        exited_after < Duration::from_secs(5),
        "exits at once, not after the release: {exited_after:?}"
    );
    not_registered(&g, "/vo1/twice");
}

/// Bytes of each depot's whole resource directory: allocation files and
/// the allocation journal (which grows with every allocation made or
/// freed, so that an allocation made and released shows).
fn depot_state(g: &Grid) -> Vec<u64> {
    g.depots.iter().map(|d| bytes_under(&d.data_dir)).collect()
}

#[test]
fn an_upload_to_a_bad_destination_is_refused_before_any_data_moves() {
    let _timer = Timer::start("an_upload_to_a_bad_destination_is_refused_before_any_data_moves");
    let g = start(opts());
    keys_init(&g, "alice");
    keys_init(&g, "bob");
    ok(lors(&g, "alice", &["mkdir", "/vo1/adir"]));
    upload(
        &g,
        "alice",
        "mine",
        &bytes(100_000, 3),
        "/vo1/adir/mine",
        &[],
    );
    let data = bytes(2 << 20, 4);
    let a_src = write(&g.user("alice").dir, "src", &data);
    let b_src = write(&g.user("bob").dir, "src", &data);
    // Bob may read alice's file (so that he can stat it), not write it.
    ok(lors(
        &g,
        "alice",
        &["acl", "set", "/vo1/adir/mine", "--access", "vo:vo1=r"],
    ));
    let before = depot_state(&g);

    let cases: Vec<(&str, &str, Vec<&str>, i32, &str)> = vec![
        (
            "missing parent",
            "alice",
            vec!["/vo1/nodir/f"],
            7,
            "/vo1/nodir: no such directory",
        ),
        (
            "missing parents",
            "alice",
            vec!["/vo1/nodir/deeper/f"],
            7,
            "/vo1/nodir/deeper: no such directory",
        ),
        (
            "a directory",
            "alice",
            vec!["/vo1/adir"],
            2,
            "/vo1/adir is a directory",
        ),
        (
            "a file as the parent",
            "alice",
            vec!["/vo1/adir/mine/f"],
            2,
            "/vo1/adir/mine is a file, not a directory",
        ),
        (
            "no write right on the parent",
            "bob",
            vec!["/vo1/adir/bobs"],
            3,
            "no write right on /vo1/adir",
        ),
        (
            "no write right on the file",
            "bob",
            vec!["/vo1/adir/mine"],
            3,
            "no write right on /vo1/adir/mine",
        ),
        (
            "--xnd in a missing directory",
            "alice",
            vec!["--xnd", "nodir/f.xnd", "--security", "legacy"],
            7,
            "nodir: no such directory",
        ),
        (
            "--xnd naming a directory",
            "alice",
            vec!["--xnd", ".", "--security", "legacy"],
            2,
            ". is a directory",
        ),
    ];
    for (what, user, dest, want, says) in cases {
        let src = if user == "bob" { s(&b_src) } else { s(&a_src) };
        let mut args = vec!["upload", src];
        args.extend(dest);
        args.extend_from_slice(&["--block-size", "256KiB"]);
        let o = lors(&g, user, &args);
        eprintln!("{what}: {}", text(&o));
        assert_eq!(
            depot_state(&g),
            before,
            "{what}: no depot was contacted (no allocation made, not even released): {}",
            text(&o)
        );
        assert_eq!(code(&o), want, "{what}: {}", text(&o));
        assert!(
            stderr(&o).contains(says),
            "{what}: says {says:?}: {}",
            text(&o)
        );
    }
    // The checks refuse only what the put would: bob can still upload where
    // he may write, and alice into her directory.
    let b = upload(&g, "bob", "ok", &data, "/vo1/bobs-own", &[]);
    assert!(b.contains("uploaded"), "{b}");
    download_is(
        &g,
        "alice",
        "/vo1/adir/mine",
        &bytes(100_000, 3),
        "unchanged",
    );
}
