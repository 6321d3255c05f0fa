//! End-to-end fault tests against a real grid (online CA, L-Bone, metadata
//! manager, depots: each its own process), driven through the `lors`
//! command as a user would:
//!
//! - a depot SIGKILLed during an upload, then restarted;
//! - a depot SIGKILLed during an erasure-coded download, then restarted;
//! - a depot whose disk (resource) is full;
//! - allocations expiring: refreshed in time, or lost and repaired;
//! - a user removed from the VO in the middle of a session (and restored,
//!   with his files, at the end);
//! - an upload of thousands of blocks refused at registration, every
//!   allocation released.
//!
//! Every check is on content (bytes read back, exit codes, messages), every
//! wait is bounded, nothing is skipped.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

/// Bound on the L-Bone noticing a depot up or down again.
const LBONE_WAIT: Duration = Duration::from_secs(20);

fn opts(depots: usize) -> GridOptions {
    GridOptions {
        depots,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// Whether mapping `m` (of `stat --json`) lives on depot `i`.
fn on_depot(g: &Grid, m: &serde_json::Value, i: usize) -> bool {
    let d = &g.depots[i];
    let depot = m["depot"].as_str().unwrap_or_default();
    depot == d.legacy_addr || Some(depot) == d.tls_addr.as_deref() || depot == d.name
}

/// Runs a prepared command on its own thread (bounded by [`LORS_LIMIT`]).
fn in_background(c: std::process::Command) -> std::thread::JoinHandle<Output> {
    std::thread::spawn(move || run_limited(c, LORS_LIMIT))
}

#[test]
fn a_depot_killed_during_an_upload_leaves_a_whole_file_or_nothing_and_serves_again_after_restart() {
    let _timer = Timer::start("a_depot_killed_during_an_upload_leaves_a_whole_file_or_nothing_and_serves_again_after_restart");
    let mut g = start(opts(3));
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();

    // Files stored before the fault, with pieces on every depot.
    let before_ec = bytes(3 << 20, 1);
    upload(
        &g,
        "alice",
        "before-ec",
        &before_ec,
        "/vo1/before-ec",
        &["--ec", "2+1", "--block-size", "1MiB"],
    );
    let before_rep = bytes((2 << 20) + 333, 2);
    upload(
        &g,
        "alice",
        "before-rep",
        &before_rep,
        "/vo1/before-rep",
        &["--copies", "2", "--block-size", "256KiB"],
    );
    for i in 0..3 {
        assert!(
            depot_data_bytes(&g, i) > 0,
            "depot-{i} holds pieces of the earlier files"
        );
    }

    // 24 MiB, two copies of each 1 MiB block; depot-0 is killed once it has
    // received 2 MiB more of it.
    let data = bytes(24 << 20, 3);
    let src = write(&dir, "during", &data);
    let baseline = depot_data_bytes(&g, 0);
    let t = Instant::now();
    let up = in_background(lors_cmd(
        &g,
        "alice",
        &[
            "upload",
            s(&src),
            "/vo1/during",
            "--copies",
            "2",
            "--block-size",
            "1MiB",
            "--threads",
            "2",
        ],
    ));
    wait_until(
        Duration::from_secs(60),
        "depot-0 receives 2 MiB of the upload",
        || up.is_finished() || depot_data_bytes(&g, 0) >= baseline + (2 << 20),
    );
    assert!(
        !up.is_finished(),
        "the upload ended before depot-0 could be killed during it: {}",
        text(&up.join().expect("upload thread"))
    );
    g.kill_depot(0);
    eprintln!(
        "depot-0 killed {:.2} s into the upload",
        t.elapsed().as_secs_f64()
    );
    let o = up.join().expect("upload thread");
    eprintln!(
        "upload with depot-0 killed, ended after {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        text(&o)
    );
    let completed = o.status.success();
    if completed {
        // Completed on the other depots: readable in full, the dead
        // depot's pieces skipped.
        download_is(
            &g,
            "alice",
            "/vo1/during",
            &data,
            "upload completed despite the kill",
        );
    } else {
        // Failed: a message, and nothing registered.
        assert!(
            !stderr(&o).trim().is_empty(),
            "a failure says why: {}",
            text(&o)
        );
        let st = lors(&g, "alice", &["stat", "/vo1/during"]);
        assert_eq!(
            code(&st),
            7,
            "a failed upload registered something: {}",
            text(&st)
        );
        assert!(
            stderr(&st).to_lowercase().contains("not found"),
            "{}",
            text(&st)
        );
    }

    // The depot comes back on the same ports with every piece it
    // acknowledged.
    g.restart_depot(0).expect("depot-0 restarts");
    g.wait_lbone_sees_all(LBONE_WAIT)
        .expect("the L-Bone sees depot-0 up again");

    // Uploading again succeeds, and reads back identical.
    let after = bytes(8 << 20, 4);
    let out = upload(
        &g,
        "alice",
        "after",
        &after,
        "/vo1/after",
        &["--copies", "2", "--block-size", "1MiB", "--threads", "2"],
    );
    eprintln!("upload after the restart: {out}");
    download_is(
        &g,
        "alice",
        "/vo1/after",
        &after,
        "upload after the restart",
    );

    // What was stored before the kill is served again, every piece intact.
    download_is(
        &g,
        "alice",
        "/vo1/before-ec",
        &before_ec,
        "EC file stored before the kill",
    );
    download_is(
        &g,
        "alice",
        "/vo1/before-rep",
        &before_rep,
        "replicated file stored before the kill",
    );
    check_clean(
        &g,
        "alice",
        "/vo1/before-ec",
        "EC file stored before the kill",
    );
    check_clean(
        &g,
        "alice",
        "/vo1/before-rep",
        "replicated file stored before the kill",
    );
    if completed {
        // Pieces depot-0 acknowledged before it died are there too.
        check_clean(&g, "alice", "/vo1/during", "file uploaded across the kill");
    }
}

#[test]
fn an_erasure_coded_download_survives_a_depot_killed_during_it_and_checks_clean_after_restart() {
    let _timer = Timer::start("an_erasure_coded_download_survives_a_depot_killed_during_it_and_checks_clean_after_restart");
    let mut g = start(opts(3));
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    let data = bytes(32 << 20, 5);
    upload(
        &g,
        "alice",
        "ec",
        &data,
        "/vo1/ec",
        &["--ec", "2+1", "--block-size", "1MiB"],
    );
    let st = stat_json(&g, "alice", "/vo1/ec");
    let maps = mappings(&st);
    assert_eq!(maps.len(), 32 * 3, "32 groups of 3 shares: {st}");
    assert!(
        maps.iter().any(|m| on_depot(&g, m, 1)),
        "depot-1 holds shares: {st}"
    );

    let back = dir.join("ec.out");
    let part = dir.join(".ec.out.lors-part");
    let t = Instant::now();
    let down = in_background(lors_cmd(
        &g,
        "alice",
        &["download", "/vo1/ec", s(&back), "--threads", "1"],
    ));
    wait_until(Duration::from_secs(60), "the download writes 4 MiB", || {
        down.is_finished() || std::fs::metadata(&part).is_ok_and(|m| m.len() >= 4 << 20)
    });
    assert!(
        !down.is_finished(),
        "the download ended before depot-1 could be killed during it: {}",
        text(&down.join().expect("download thread"))
    );
    g.kill_depot(1);
    eprintln!(
        "depot-1 killed {:.2} s into the download",
        t.elapsed().as_secs_f64()
    );
    let o = down.join().expect("download thread");
    assert!(
        o.status.success(),
        "download with depot-1 killed: {}",
        text(&o)
    );
    assert_file_is(&back, &data, "EC download with a depot killed during it");
    assert!(!part.exists(), "the part file was renamed");

    // With depot-1 down its shares are unreadable...
    let o = lors(&g, "alice", &["stat", "--check", "/vo1/ec"]);
    assert_eq!(code(&o), 11, "{}", text(&o));
    assert!(stdout(&o).contains("UNREADABLE"), "{}", text(&o));
    // ...and back once it restarts: every share is intact.
    g.restart_depot(1).expect("depot-1 restarts");
    g.wait_lbone_sees_all(LBONE_WAIT)
        .expect("the L-Bone sees depot-1 up again");
    check_clean(&g, "alice", "/vo1/ec", "after depot-1 restarted");
    download_is(
        &g,
        "alice",
        "/vo1/ec",
        &data,
        "EC download after the restart",
    );
}

/// Whether an error message speaks of space.
fn mentions_space(msg: &str) -> bool {
    let m = msg.to_lowercase();
    ["space", "size", "full", "capacity", "no room"]
        .iter()
        .any(|w| m.contains(w))
}

#[test]
fn a_full_depot_is_avoided_and_refuses_clearly_while_others_keep_working() {
    let _timer =
        Timer::start("a_full_depot_is_avoided_and_refuses_clearly_while_others_keep_working");
    let g = start(GridOptions {
        depot_hard_sizes: vec![4 << 20, 2 << 30, 2 << 30],
        ..opts(3)
    });
    keys_init(&g, "alice");
    keys_init(&g, "bob");
    let small = g.depots[0].tls_addr.clone().expect("a TLS port");

    // 24 MiB in 8 MiB blocks, two copies: no block fits the 4 MiB depot.
    let data = bytes(24 << 20, 6);
    let src = write(&g.user("alice").dir, "big", &data);
    let o = lors(
        &g,
        "alice",
        &["upload", s(&src), "/vo1/big", "--copies", "2"],
    );
    if o.status.success() {
        let st = stat_json(&g, "alice", "/vo1/big");
        let maps = mappings(&st);
        assert_eq!(maps.len(), 3 * 2, "{st}");
        assert!(
            !maps.iter().any(|m| on_depot(&g, m, 0)),
            "a mapping on the 4 MiB depot: {st}"
        );
        download_is(
            &g,
            "alice",
            "/vo1/big",
            &data,
            "24 MiB beside a small depot",
        );
    } else {
        assert!(
            mentions_space(&stderr(&o)),
            "a failure names space: {}",
            text(&o)
        );
    }

    // Fill the small depot: four 1 MiB blocks on it alone.
    let fill = bytes(4 << 20, 7);
    upload(
        &g,
        "alice",
        "fill",
        &fill,
        "/vo1/fill",
        &["--depot", &small, "--block-size", "1MiB"],
    );
    let st = stat_json(&g, "alice", "/vo1/fill");
    assert!(
        mappings(&st).iter().all(|m| on_depot(&g, m, 0)),
        "--depot places everything on depot-0: {st}"
    );
    assert_eq!(depot_data_bytes(&g, 0), 4 << 20, "depot-0 is full");
    // The L-Bone learns it at its next poll: wait for that, so that the
    // refusal below is the L-Bone's, not a race with the poll.
    let port: u64 = g.depots[0]
        .legacy_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("depot-0's port");
    let deadline = Instant::now() + LBONE_WAIT;
    loop {
        let st = g.lbone_status().expect("L-Bone status");
        let free = st["vos"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|v| v["depots"].as_array().into_iter().flatten())
            .find(|d| d["port"].as_u64() == Some(port))
            .and_then(|d| d["status"]["hard"]["free"].as_u64());
        if free == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the L-Bone still reports {free:?} bytes free on the full depot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Another upload to it alone is refused, saying why, and nothing is
    // registered.
    let more = bytes(1 << 20, 8);
    let src = write(&g.user("alice").dir, "more", &more);
    let o = lors(
        &g,
        "alice",
        &[
            "upload",
            s(&src),
            "/vo1/more",
            "--depot",
            &small,
            "--block-size",
            "1MiB",
        ],
    );
    eprintln!("upload to the full depot: {}", text(&o));
    assert!(
        !o.status.success(),
        "an upload to a full depot succeeded: {}",
        text(&o)
    );
    assert_ne!(code(&o), -1, "killed by a signal: {}", text(&o));
    let refusal = o;
    let st = lors(&g, "alice", &["stat", "/vo1/more"]);
    assert_eq!(code(&st), 7, "{}", text(&st));

    // Other users' uploads keep working, on the depots with room.
    let bobs = bytes(5 << 20, 9);
    upload(
        &g,
        "bob",
        "bob",
        &bobs,
        "/vo1/bob",
        &["--copies", "2", "--block-size", "1MiB"],
    );
    let st = stat_json(&g, "bob", "/vo1/bob");
    assert!(
        !mappings(&st).iter().any(|m| on_depot(&g, m, 0)),
        "nothing of bob's on the full depot: {st}"
    );
    download_is(
        &g,
        "bob",
        "/vo1/bob",
        &bobs,
        "bob's upload beside a full depot",
    );
    // And what filled the depot reads back.
    download_is(
        &g,
        "alice",
        "/vo1/fill",
        &fill,
        "the file that filled depot-0",
    );

    // Checked last, so that everything above runs whatever it says: the
    // refusal of the full depot says it is about space.
    assert!(
        mentions_space(&stderr(&refusal)),
        "the refusal of an upload to the full depot names space: {}",
        text(&refusal)
    );
}

/// The `expires` (Unix seconds) of every mapping.
fn expiries(st: &serde_json::Value) -> Vec<i64> {
    mappings(st)
        .iter()
        .map(|m| {
            m["expires"]
                .as_i64()
                .unwrap_or_else(|| panic!("no expires in {m}"))
        })
        .collect()
}

#[test]
fn refreshed_allocations_outlive_their_first_expiry_and_expired_replicas_are_reported_and_repaired()
{
    let _timer = Timer::start("refreshed_allocations_outlive_their_first_expiry_and_expired_replicas_are_reported_and_repaired");
    let mut g = start(opts(3));
    // Reap every second instead of every 10 s (the depot's reap_interval, a
    // top-level key: it goes before the tables), on a wall clock the test
    // moves past the expiries instead of waiting for them.
    let clock = ibp_grid::clock::ProcessClock::new();
    for i in 0..g.depots.len() {
        let config = g.depots[i].config.clone();
        let text = std::fs::read_to_string(&config).expect("read depot.toml");
        std::fs::write(&config, format!("reap_interval = \"1s\"\n{text}"))
            .expect("write depot.toml");
        g.restart_depot_with_env(i, clock.env())
            .expect("the depot restarts with reap_interval 1s");
    }
    g.wait_lbone_sees_all(LBONE_WAIT)
        .expect("the L-Bone sees the restarted depots");
    keys_init(&g, "alice");
    let now = ibp_auth::unix_now;

    // A: two copies for 20 s, refreshed to an hour before they expire.
    let a = bytes((2 << 20) + 77, 10);
    let t0 = now();
    upload(
        &g,
        "alice",
        "a",
        &a,
        "/vo1/short",
        &["--copies", "2", "--block-size", "1MiB", "--duration", "20"],
    );
    let first = expiries(&stat_json(&g, "alice", "/vo1/short"));
    assert_eq!(first.len(), 3 * 2);
    assert!(
        first.iter().all(|&e| e >= t0 + 19 && e <= now() + 21),
        "20 s allocations: {first:?}"
    );

    // B: one copy for an hour, a second copy for 15 s.
    let b = bytes(2 << 20, 11);
    upload(
        &g,
        "alice",
        "b",
        &b,
        "/vo1/aug",
        &["--copies", "1", "--block-size", "1MiB", "--duration", "1h"],
    );
    ok(lors(
        &g,
        "alice",
        &["augment", "/vo1/aug", "--copies", "2", "--duration", "15"],
    ));
    let st = stat_json(&g, "alice", "/vo1/aug");
    let exp_b = expiries(&st);
    assert_eq!(exp_b.len(), 2 * 2, "{st}");
    let short: Vec<usize> = (0..exp_b.len())
        .filter(|&i| exp_b[i] <= now() + 16)
        .collect();
    assert_eq!(short.len(), 2, "two 15 s replicas: {st}");
    assert!(
        exp_b
            .iter()
            .enumerate()
            .all(|(i, &e)| short.contains(&i) || e >= now() + 3000),
        "the first copies keep their hour: {st}"
    );

    let o = lors(&g, "alice", &["refresh", "/vo1/short", "--duration", "1h"]);
    assert!(o.status.success(), "refresh: {}", text(&o));
    let refreshed = expiries(&stat_json(&g, "alice", "/vo1/short"));
    assert!(
        refreshed.iter().all(|&e| e >= now() + 3000),
        "refreshed to an hour: {refreshed:?}"
    );

    // Past every original expiry, and a reap or two.
    let until = first
        .iter()
        .chain(short.iter().map(|&i| &exp_b[i]))
        .max()
        .copied()
        .unwrap_or(0)
        + 4;
    let wait = (until - now()).max(0);
    assert!(wait < 40, "moving {wait} s");
    clock.advance(wait);
    // The depots reap within a second of their (monotonic) reap interval:
    // wait until stat --check sees B's short replicas gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while code(&lors(&g, "alice", &["stat", "--check", "/vo1/aug"])) != 11 {
        assert!(
            Instant::now() < deadline,
            "B's 15 s replicas still readable 30 s after the depots' clock passed them"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A survived its first expiry.
    download_is(
        &g,
        "alice",
        "/vo1/short",
        &a,
        "refreshed file past its first expiry",
    );
    check_clean(
        &g,
        "alice",
        "/vo1/short",
        "refreshed file past its first expiry",
    );

    // B lost its short-lived replicas: stat --check names them.
    let o = lors(&g, "alice", &["stat", "--check", "/vo1/aug"]);
    assert_eq!(
        code(&o),
        11,
        "stat --check after the replicas expired: {}",
        text(&o)
    );
    let out = stdout(&o);
    for i in 0..exp_b.len() {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{i} ")))
            .unwrap_or_else(|| panic!("no line for mapping {i}: {out}"));
        if short.contains(&i) {
            assert!(line.contains("UNREADABLE"), "expired mapping {i}: {out}");
        } else {
            assert!(line.trim_end().ends_with("ok"), "live mapping {i}: {out}");
        }
    }
    // The survivors rebuild them.
    let repair = lors(&g, "alice", &["repair", "/vo1/aug"]);
    assert!(
        stdout(&repair).contains("2 bad, 2 recreated"),
        "{}",
        text(&repair)
    );
    check_clean(&g, "alice", "/vo1/aug", "after repair");
    let st = stat_json(&g, "alice", "/vo1/aug");
    let exp = expiries(&st);
    assert_eq!(exp.len(), 2 * 2, "{st}");
    assert!(exp.iter().all(|&e| e >= now() + 3000), "{st}");
    download_is(&g, "alice", "/vo1/aug", &b, "repaired file");
    // Every lost replica was rebuilt: the repair succeeded. The expired
    // allocations it dropped are already gone from their depots (the
    // depot answers IBP_E_CAP_NOT_FOUND): nothing is left to release.
    assert_eq!(
        code(&repair),
        0,
        "a repair that rebuilt every lost replica: {}",
        text(&repair)
    );
}

#[test]
fn a_member_removed_from_the_vo_mid_session_is_refused_while_others_keep_working() {
    let _timer = Timer::start(
        "a_member_removed_from_the_vo_mid_session_is_refused_while_others_keep_working",
    );
    let g = start(opts(3));
    for u in ["alice", "bob", "carol"] {
        keys_init(&g, u);
    }
    let bobs = bytes(1 << 20, 12);
    upload(&g, "bob", "b1", &bobs, "/vo1/bob-1", &["--copies", "2"]);
    download_is(&g, "bob", "/vo1/bob-1", &bobs, "bob before the removal");

    // 1. The online CA: bob's login identity is removed from vo1; he can
    // log in no more.
    let ca_admin = |args: &[&str]| {
        let mut c = std::process::Command::new(&g.bins.online_ca);
        c.arg("admin").arg("--config").arg(&g.ca_config).args(args);
        run_limited(c, Duration::from_secs(60))
    };
    let o = ca_admin(&["member", "remove", "--vo", "vo1", "--identity", "local:bob"]);
    assert!(
        o.status.success(),
        "online-ca admin member remove: {}",
        text(&o)
    );
    // Bob's only identity is gone: the CA says so, and names the command
    // that refuses the proxy he still holds.
    let said = String::from_utf8_lossy(&o.stdout);
    let bob_id = &g.user("bob").vo_id;
    for want in [
        format!("VO ID {bob_id} has no identity left in VO vo1"),
        format!("lors members remove {bob_id} --vo vo1    (metadata manager and L-Bone)"),
    ] {
        assert!(said.contains(&want), "{want:?} in {}", text(&o));
    }
    let proxy = std::fs::read(g.proxy("bob")).expect("bob's proxy");
    let e = g.login("bob").expect_err("a removed member logs in");
    let e = format!("{e:#}");
    assert!(
        e.contains("exit status: 3"),
        "login refused with exit 3: {e}"
    );
    assert_eq!(
        std::fs::read(g.proxy("bob")).expect("bob's proxy"),
        proxy,
        "a refused login leaves the proxy as it was"
    );
    // The proxy bob already holds stays valid until it expires
    // (docs/vo-admin.md, "Removing a member"): report what it still does.
    let o = lors(
        &g,
        "bob",
        &["download", "/vo1/bob-1", s(&g.user("bob").dir.join("x"))],
    );
    eprintln!(
        "bob's download after the removal at the CA only: exit {:?}",
        o.status.code()
    );

    // 2. The metadata manager: alice, a VO admin, removes him there too.
    // (--mdm-only: this step alone; without it lors removes him at the
    // L-Bone as well, which step 3 does here with the L-Bone's own tool.)
    let o = ok(lors(
        &g,
        "alice",
        &["members", "remove", &g.user("bob").vo_id, "--mdm-only"],
    ));
    assert!(o.contains("not at the L-Bone (--mdm-only)"), "{o}");

    // 3. The L-Bone: until alice removes him there, his proxy still gets
    // depot grants; then no more.
    ok(lors(&g, "bob", &["depots"]));
    let lbone_admin = |args: &[&str]| {
        let mut c = std::process::Command::new(&g.bins.lbone);
        c.arg("admin")
            .args(["--lbone", &g.lbone_url])
            .arg("--proxy")
            .arg(g.proxy("alice"))
            .arg("--trust")
            .arg(&g.trust_dir)
            .args(args);
        run_limited(c, Duration::from_secs(60))
    };
    let o = lbone_admin(&["member", "remove", "--vo", "vo1", &g.user("bob").vo_id]);
    assert!(
        o.status.success(),
        "lbone admin member remove: {}",
        text(&o)
    );
    let o = lbone_admin(&["member", "list", "--vo", "vo1"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&g.user("bob").vo_id),
        "{}",
        text(&o)
    );
    let o = lors(&g, "bob", &["depots"]);
    assert_eq!(code(&o), 3, "bob's grants after removal: {}", text(&o));
    assert!(stderr(&o).contains("removed member"), "{}", text(&o));
    // Not an admin's doing for anyone else: carol still gets grants.
    ok(lors(&g, "carol", &["depots"]));
    // bob cannot undo it himself.
    let mut c = std::process::Command::new(&g.bins.lbone);
    c.arg("admin")
        .args(["--lbone", &g.lbone_url])
        .arg("--proxy")
        .arg(g.proxy("bob"))
        .arg("--trust")
        .arg(&g.trust_dir)
        .args(["member", "restore", "--vo", "vo1", &g.user("bob").vo_id]);
    let o = run_limited(c, Duration::from_secs(60));
    assert!(!o.status.success(), "bob restored himself: {}", text(&o));

    // Whatever needs a ticket (download) or registers (upload) is refused.
    let o = lors(
        &g,
        "bob",
        &["download", "/vo1/bob-1", s(&g.user("bob").dir.join("x"))],
    );
    assert_eq!(code(&o), 3, "bob's download after removal: {}", text(&o));
    assert!(!stderr(&o).trim().is_empty(), "{}", text(&o));
    let src = write(&g.user("bob").dir, "b2", &bytes(1 << 20, 13));
    let o = lors(
        &g,
        "bob",
        &["upload", s(&src), "/vo1/bob-2", "--copies", "2"],
    );
    assert_eq!(code(&o), 3, "bob's upload after removal: {}", text(&o));
    assert!(!stderr(&o).trim().is_empty(), "{}", text(&o));
    let st = lors(&g, "alice", &["stat", "/vo1/bob-2"]);
    assert_eq!(
        code(&st),
        7,
        "the refused upload registered nothing: {}",
        text(&st)
    );
    eprintln!("bob refused: {}", text(&o));

    // alice and carol carry on.
    for (i, u) in ["alice", "carol"].into_iter().enumerate() {
        let data = bytes((3 << 20) + i, 20 + i as u64);
        let path = format!("/vo1/{u}-after");
        upload(
            &g,
            u,
            "after",
            &data,
            &path,
            &["--ec", "2+1", "--block-size", "1MiB"],
        );
        download_is(&g, u, &path, &data, &format!("{u} after bob's removal"));
    }
    // bob's file is still there for the VO admin to see.
    ok(lors(&g, "alice", &["stat", "/vo1/bob-1"]));

    // 4. bob comes back: the CA links his login to his former VO ID (his
    // files are keyed by it), and the other two services restore him.
    let bob_vo_id = g.user("bob").vo_id.clone();
    let o = ca_admin(&["member", "list", "--vo", "vo1", "--former"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&bob_vo_id),
        "bob's VO ID among the former ones: {}",
        text(&o)
    );
    let o = ca_admin(&[
        "member",
        "add",
        "--vo",
        "vo1",
        "--identity",
        "local:bob",
        "--vo-id",
        &bob_vo_id,
    ]);
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains(&format!(
                "restored local:bob to VO vo1 with VO ID {bob_vo_id}"
            )),
        "online-ca admin member add --vo-id (restore): {}",
        text(&o)
    );
    g.login("bob").expect("bob logs in again after the restore");
    // One lors command restores him at the metadata manager and the L-Bone.
    let o = ok(lors(&g, "alice", &["members", "restore", &bob_vo_id]));
    for want in [
        format!("restored {bob_vo_id} in VO vo1 at the metadata manager"),
        "restored at the L-Bone".to_string(),
    ] {
        assert!(o.contains(&want), "{want:?}: {o}");
    }
    let o = lbone_admin(&["member", "list", "--vo", "vo1"]);
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains(&bob_vo_id),
        "bob no longer among the L-Bone's removed members: {}",
        text(&o)
    );
    download_is(
        &g,
        "bob",
        "/vo1/bob-1",
        &bobs,
        "bob's own file after his return",
    );
    ok(lors(&g, "bob", &["depots"]));
}

/// An upload of thousands of blocks whose registration is refused (here:
/// its directory does not exist) releases every allocation it made. The
/// release used to start one depot connection per allocation at once; the
/// depots' per-address connection limit refused most of them, and the
/// allocations stayed until they expired.
#[test]
fn a_refused_upload_of_thousands_of_blocks_releases_every_allocation() {
    let _timer = Timer::start("a_refused_upload_of_thousands_of_blocks_releases_every_allocation");
    let g = start(opts(1));
    keys_init(&g, "alice");
    let before = depot_data_bytes(&g, 0);
    let data = bytes(8 << 20, 7);
    let src = write(&g.user("alice").dir, "many-blocks", &data);
    let out = run_limited(
        lors_cmd(
            &g,
            "alice",
            &[
                "upload",
                s(&src),
                "/vo1/no-such-dir/f",
                "--block-size",
                "4K",
            ],
        ),
        LORS_LIMIT,
    );
    let said = text(&out);
    assert_ne!(code(&out), 0, "the upload cannot be registered: {said}");
    assert!(
        !said.contains("could not be freed"),
        "every allocation is released: {said}"
    );
    // 2,048 allocations of 4 KiB were stored, then released.
    assert_eq!(
        depot_data_bytes(&g, 0),
        before,
        "the depot holds what it held before: {said}"
    );
}
