//! What a killed `lors upload` leaves behind, and `lors cleanup`, against a
//! real grid (online CA, L-Bone, metadata manager, depots: each its own
//! process):
//!
//! - an upload SIGKILLed while its blocks are being stored leaves
//!   allocations on the depots and its journal of allocations in flight;
//!   `lors cleanup --dry-run` lists them without touching the depots;
//!   `lors cleanup` releases them all (the depots' used bytes and
//!   allocation files are back to what they were), and a second run has
//!   nothing to do;
//! - the journal of an upload still running is not touched by a
//!   concurrent `lors cleanup`, and that upload completes;
//! - a killed `--resume` upload's allocations are kept and listed (with
//!   how to resume) until `--include-resumable`; resumed, it completes and
//!   releases the pieces of the blocks the killed run had not finished;
//! - an upload that cannot fit in the user's quotas at the depots is
//!   refused before any allocation (exit 3, saying what it needs and what
//!   the quotas allow), one that fits goes through, and a quota refusal
//!   at ALLOCATE is reported as one;
//! - an upload asking for a longer duration than every depot grants is
//!   refused before any allocation (exit 2), naming the longest allowed
//!   and the option to pass.
//!
//! Every wait is on a condition and bounded; assertions are on exit codes,
//! messages, depot state and bytes read back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ibp_depot_client::IbpClient;
use ibp_grid::grid::{Grid, GridOptions};
use ibp_proto::Rid;

fn opts() -> GridOptions {
    GridOptions {
        depots: 3,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// What the depots hold: bytes reserved by live allocations (STATUS
/// `total_used`, summed) and allocation data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    used: u64,
    files: usize,
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| e.metadata().is_ok_and(|m| m.is_file()))
            .count()
    })
}

fn held(g: &Grid) -> Held {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let used = g
        .depots
        .iter()
        .map(|d| {
            rt.block_on(async {
                let mut c = IbpClient::connect(&d.legacy_addr)
                    .await
                    .expect("the depot's legacy port");
                tokio::time::timeout(Duration::from_secs(10), c.status(Rid(0)))
                    .await
                    .expect("STATUS in time")
                    .expect("STATUS")
                    .total_used
            })
        })
        .sum();
    let files = g
        .depots
        .iter()
        .map(|d| files_under(&d.data_dir.join("data")))
        .sum();
    Held { used, files }
}

/// The journals of allocations in flight (`HOME` is the grid directory).
fn journals(g: &Grid) -> Vec<PathBuf> {
    let dir = g.dir.join(".local/state/lors/inflight");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "alloc"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Checks that the depots hold what they held at `base`, up to the
/// allocations a killed upload had asked for without reading the reply
/// (the depot made them, the client never learned their capabilities, so
/// no journal can list them; they expire at the end of their duration):
/// at most one per block in flight (`--threads 2`, one copy), and none of
/// them holds data. Returns what the depots hold now.
#[track_caller]
fn back_to(g: &Grid, base: Held, what: &str) -> Held {
    let now = held(g);
    assert_eq!(
        now.files, base.files,
        "{what}: every allocation with data released"
    );
    let stray = now.used - base.used.min(now.used);
    assert!(
        now.used >= base.used && stray <= 2 * BLOCK && stray % BLOCK == 0,
        "{what}: the depots hold what they held before, but for at most 2 allocations \
         whose ALLOCATE reply the killed upload never read: {now:?} against {base:?}"
    );
    if stray > 0 {
        eprintln!(
            "{what}: {} allocation(s) of the killed upload were still being made",
            stray / BLOCK
        );
    }
    now
}

const BLOCK: u64 = 128 << 10;
const SIZE: usize = SLOW_UPLOAD_SIZE;
const UPLOAD_ARGS: &[&str] = SLOW_UPLOAD_ARGS;

fn spawn_upload(g: &Grid, src: &str, dest: &str, extra: &[&str]) -> Child {
    let mut c = slow_upload_cmd(g, src, dest, extra);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c.spawn().expect("lors upload starts")
}

/// Waits until the depots hold at least 1 MiB more than `base` for the
/// running `child`.
fn wait_for_allocations(g: &Grid, child: &mut Child, base: Held) {
    wait_until(
        Duration::from_secs(60),
        "the depots hold allocations of the upload",
        || matches!(child.try_wait(), Ok(Some(_))) || held(g).used >= base.used + (1 << 20),
    );
    if let Ok(Some(st)) = child.try_wait() {
        panic!("the upload ended ({st}) before it could be killed: the file is too small");
    }
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("the killed upload did not exit"),
        }
    }
}

/// `lors cleanup ARGS` as alice: exit code and output.
fn cleanup(g: &Grid, args: &[&str]) -> (i32, String) {
    let mut a = vec!["cleanup"];
    a.extend_from_slice(args);
    let o = lors(g, "alice", &a);
    eprintln!("lors cleanup {args:?}: {}", text(&o));
    (code(&o), text(&o))
}

#[test]
fn a_killed_upload_is_found_and_released_by_lors_cleanup() {
    let _timer = Timer::start("a_killed_upload_is_found_and_released_by_lors_cleanup");
    let g = start(opts());
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    // Something stored before: the baseline is not zero, and a finished
    // upload leaves no journal.
    upload(&g, "alice", "small", &bytes(300_000, 7), "/vo1/small", &[]);
    assert!(journals(&g).is_empty(), "{:?}", journals(&g));
    let (c, out) = cleanup(&g, &[]);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("nothing to clean up"), "{out}");
    let data = bytes(SIZE, 1);
    let src = write(&dir, "big", &data);
    let mut base = held(&g);

    // SIGKILL: nothing released, the journal stays.
    let mut child = spawn_upload(&g, s(&src), "/vo1/killed", &[]);
    wait_for_allocations(&g, &mut child, base);
    kill(child);
    let left = held(&g);
    assert!(left.used > base.used, "the killed upload left allocations");
    assert_eq!(journals(&g).len(), 1, "its journal stays");

    // --dry-run: listed, not released.
    let (c, out) = cleanup(&g, &["--dry-run"]);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("/vo1/killed") && out.contains("would release"),
        "{out}"
    );
    let o = lors(&g, "alice", &["cleanup", "--dry-run", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("--json: {e}: {}", text(&o)));
    let j = &v["journals"][0];
    assert_eq!(j["state"], "would-release", "{v}");
    assert_eq!(j["dest"], "/vo1/killed", "{v}");
    assert!(j["allocations"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(held(&g), left, "--dry-run touches nothing");

    // Released, every one.
    let (c, out) = cleanup(&g, &[]);
    assert_eq!(c, 0, "{out}");
    let released: usize = out
        .split("released ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("says how many it released: {out}"));
    assert!(
        released as u64 >= (1 << 20) / (128 << 10),
        "at least the blocks seen stored ({released}): {out}"
    );
    base = back_to(&g, base, "a killed upload cleaned up");
    assert!(journals(&g).is_empty(), "{:?}", journals(&g));
    let (c, out) = cleanup(&g, &[]);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("nothing to clean up"), "{out}");

    // A running upload's journal is not touched; the upload completes.
    let mut child = spawn_upload(&g, s(&src), "/vo1/running", &[]);
    wait_for_allocations(&g, &mut child, base);
    let (c, out) = cleanup(&g, &[]);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("/vo1/running: upload running") && out.contains("not touched"),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let st = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                panic!("the running upload did not finish");
            }
        }
    };
    assert!(st.success(), "the upload completes: {st}");
    download_is(
        &g,
        "alice",
        "/vo1/running",
        &data,
        "uploaded beside a cleanup",
    );
    assert!(
        journals(&g).is_empty(),
        "a registered upload leaves no journal"
    );
    ok(lors(&g, "alice", &["rm", "/vo1/running"]));
    assert_eq!(held(&g), base);

    // A killed --resume upload, resumed: the file is whole, and the
    // pieces of the blocks the killed run had not finished are released
    // (the depots hold the file's bytes, nothing more).
    let mut child = spawn_upload(&g, s(&src), "/vo1/resumed", &["--resume"]);
    wait_for_allocations(&g, &mut child, base);
    kill(child);
    let mut args = vec!["upload", s(&src), "/vo1/resumed", "--resume"];
    args.extend_from_slice(UPLOAD_ARGS);
    ok(lors(&g, "alice", &args));
    download_is(&g, "alice", "/vo1/resumed", &data, "resumed after SIGKILL");
    back_to(
        &g,
        Held {
            used: base.used + SIZE as u64,
            files: held(&g).files,
        },
        "the file's allocations and nothing else",
    );
    assert!(journals(&g).is_empty(), "{:?}", journals(&g));
    ok(lors(&g, "alice", &["rm", "/vo1/resumed"]));
    base = back_to(&g, base, "the resumed file removed");

    // --resume: kept and listed, released only when asked.
    let mut child = spawn_upload(&g, s(&src), "/vo1/resumable", &["--resume"]);
    wait_for_allocations(&g, &mut child, base);
    kill(child);
    let left = held(&g);
    let (c, out) = cleanup(&g, &[]);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("/vo1/resumable") && out.contains("kept for --resume"),
        "{out}"
    );
    assert!(out.contains("lors upload --resume"), "says how: {out}");
    assert_eq!(held(&g), left, "kept");
    let (c, out) = cleanup(&g, &["--include-resumable"]);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("/vo1/resumable") && out.contains("released"),
        "{out}"
    );
    back_to(&g, base, "released when asked");
    assert!(journals(&g).is_empty());
    let resume_journals = g.dir.join(".local/state/lors/uploads");
    assert_eq!(
        files_under(&resume_journals),
        0,
        "the --resume journal is gone too"
    );
}

/// Gives every depot of the grid a per-user quota of `quota` in vo1 and
/// restarts them.
fn set_user_quota(g: &mut Grid, quota: &str) {
    for i in 0..g.depots.len() {
        let path = g.depots[i].config.clone();
        let text = std::fs::read_to_string(&path).expect("the depot's configuration");
        let vo = "[[vo]]\nname = \"vo1\"\n";
        assert!(text.contains(vo), "{text}");
        let text = text.replacen(vo, &format!("{vo}user_quota = \"{quota}\"\n"), 1);
        std::fs::write(&path, text).expect("write the configuration");
        g.restart_depot(i).expect("the depot restarts");
    }
    g.wait_lbone_sees_all(Duration::from_secs(30))
        .expect("the L-Bone sees the depots again");
}

#[test]
fn an_upload_that_cannot_fit_the_quotas_or_the_duration_is_refused_before_any_data_moves() {
    let _timer = Timer::start(
        "an_upload_that_cannot_fit_the_quotas_or_the_duration_is_refused_before_any_data_moves",
    );
    let mut g = start(opts());
    keys_init(&g, "alice");
    set_user_quota(&mut g, "4MiB");
    let dir = g.user("alice").dir.clone();
    let base = held(&g);

    // 6 MiB x 3 copies = 18 MiB; each depot holds at most one copy of
    // each block, 4 MiB: 12 MiB.
    let big = write(&dir, "big", &bytes(6 << 20, 1));
    let o = lors(
        &g,
        "alice",
        &[
            "upload",
            s(&big),
            "/vo1/big",
            "--copies",
            "3",
            "--block-size",
            "1MiB",
        ],
    );
    eprintln!("too big for the quotas: {}", text(&o));
    assert_eq!(code(&o), 3, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not enough quota for this upload: it needs 18.0 MiB (6.0 MiB x 3 copies)")
            && err.contains("allow 12.0 MiB")
            && err.contains("left of your quota of 4.0 MiB"),
        "{err}"
    );
    assert_eq!(held(&g), base, "no allocation was made");
    assert!(journals(&g).is_empty(), "{:?}", journals(&g));

    // 2 MiB x 3 copies fits.
    let data = bytes(2 << 20, 2);
    let fits = write(&dir, "fits", &data);
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            s(&fits),
            "/vo1/fits",
            "--copies",
            "3",
            "--block-size",
            "1MiB",
        ],
    ));
    download_is(
        &g,
        "alice",
        "/vo1/fits",
        &data,
        "an upload within the quotas",
    );
    let after = held(&g);
    assert_eq!(after.used, base.used + 3 * (2 << 20));

    // One block of 3 MiB, 2 MiB left on each depot: no check before (a
    // single block), every ALLOCATE refused by the quota, and said so.
    let one = write(&dir, "one", &bytes(3 << 20, 3));
    let o = lors(
        &g,
        "alice",
        &["upload", s(&one), "/vo1/one", "--block-size", "4MiB"],
    );
    eprintln!("refused at ALLOCATE: {}", text(&o));
    assert_eq!(code(&o), 3, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("quota refusal") && err.contains("user quota exceeded"),
        "{err}"
    );
    assert!(!err.contains("no depot left"), "{err}");
    assert_eq!(held(&g), after, "nothing left allocated");

    // A duration no depot grants (they allow 30 days).
    let o = lors(
        &g,
        "alice",
        &["upload", s(&fits), "/vo1/long", "--duration", "60d"],
    );
    eprintln!("too long: {}", text(&o));
    assert_eq!(code(&o), 2, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no depot grants allocations of 60d")
            && err.contains("the longest the depots allow is 30d")
            && err.contains("pass --duration 30d or less"),
        "{err}"
    );
    assert!(!err.contains("no depot left"), "{err}");
    assert_eq!(held(&g), after, "no allocation was made");
    // What it says to pass works.
    ok(lors(
        &g,
        "alice",
        &["upload", s(&fits), "/vo1/long", "--duration", "30d"],
    ));
}
