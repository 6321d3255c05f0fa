//! End-to-end: what users see when a service is down or its clock is off.
//!
//! - The L-Bone down: uploads fail with a message naming the L-Bone;
//!   downloads of existing files still work (a LOAD's file ticket is its
//!   authorization, no depot grant needed).
//! - The metadata manager down: a message naming it; with `--xnd`,
//!   downloads still work.
//! - Clock skew: a service whose clock is a minute ahead is tolerated; ten
//!   minutes ahead (or behind) is refused with a message naming clock skew.
//!   The skew is real: the daemon runs under libfaketime (Debian package
//!   `faketime`, installed by scripts/test).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{bytes, download_is, lors, ok, s, text, write};
use ibp_grid::clock::skewed;
use ibp_grid::grid::{Daemon, Grid, GridOptions};

fn grid() -> Grid {
    common::start(GridOptions {
        depots: 3,
        // Crypto-level data ports too (bulk data in clear beside TLS).
        data_port: true,
        users: vec!["alice".into(), "bob".into()],
        ..Default::default()
    })
}

/// Fails with `code` and says `what` (case-insensitive) on stderr.
#[track_caller]
fn fails(o: Output, code: i32, what: &str) -> String {
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains(&what.to_lowercase()), "expected {what:?}: {t}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out_path(g: &Grid, user: &str, name: &str) -> PathBuf {
    g.user(user).dir.join(name)
}

/// alice with keys and a directory of her own.
fn set_up_alice(g: &Grid) {
    ok(lors(g, "alice", &["keys", "init"]));
    ok(lors(g, "alice", &["mkdir", "/vo1/alice"]));
}

/// alice set up, with `len` bytes (seed `seed`) written to her file `f`
/// and uploaded with two copies as /vo1/alice/f: the bytes and the local
/// source path.
fn alice_with_f(g: &Grid, len: usize, seed: u64) -> (Vec<u8>, String) {
    set_up_alice(g);
    let data = bytes(len, seed);
    let src = write(&g.user("alice").dir, "f", &data);
    let src = s(&src).to_owned();
    ok(lors(
        g,
        "alice",
        &["upload", &src, "/vo1/alice/f", "--copies", "2"],
    ));
    (data, src)
}

#[test]
fn with_the_lbone_down_uploads_fail_clearly_and_downloads_still_work() {
    let mut g = grid();
    set_up_alice(&g);
    let dir = g.user("alice").dir.clone();
    let ec = bytes(9 << 20, 1);
    let copies = bytes(3 << 20, 2);
    let src_ec = write(&dir, "ec", &ec);
    let src_ec = s(&src_ec).to_owned();
    let src_copies = write(&dir, "copies", &copies);
    let src_copies = s(&src_copies).to_owned();
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            &src_ec,
            "/vo1/alice/ec",
            "--ec",
            "2+1",
            "--block-size",
            "1MiB",
        ],
    ));
    ok(lors(
        &g,
        "alice",
        &["upload", &src_copies, "/vo1/alice/copies", "--copies", "2"],
    ));
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            &src_copies,
            "/vo1/alice/crypto",
            "--copies",
            "2",
            "--security",
            "crypto",
        ],
    ));
    // Shared with bob, who has never read anything (no cached session).
    ok(lors(&g, "bob", &["keys", "init"]));
    let bob = format!("user:{}@vo1", g.user("bob").vo_id);
    ok(lors(&g, "alice", &["share", "/vo1/alice/ec", &bob]));

    g.kill_lbone();

    // Uploads need the L-Bone (which depots, and grants for them).
    let o = lors(&g, "alice", &["upload", &src_copies, "/vo1/alice/new"]);
    let err = fails(o, 4, "L-Bone");
    assert!(err.contains(&g.lbone_url), "names the L-Bone's URL: {err}");
    // Nothing was registered.
    let o = lors(&g, "alice", &["stat", "/vo1/alice/new"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));

    // Downloads need only the metadata manager's ticket.
    download_is(&g, "alice", "/vo1/alice/ec", &ec, "ec.out");
    download_is(&g, "alice", "/vo1/alice/copies", &copies, "copies.out");
    // The crypto level's data ports want grants: read over TLS instead.
    download_is(&g, "alice", "/vo1/alice/crypto", &copies, "crypto.out");
    download_is(&g, "bob", "/vo1/alice/ec", &ec, "ec.bob");
    // Also with a depot down as well: parity still rebuilds.
    g.kill_depot(2);
    download_is(&g, "alice", "/vo1/alice/ec", &ec, "ec.out2");
    g.restart_depot(2).expect("depot restarts");

    // A VO admin's `lors members remove` does the metadata manager, then
    // says clearly that the L-Bone step is not done; --mdm-only undoes
    // the first.
    let bob_id = g.user("bob").vo_id.clone();
    let err = fails(
        lors(&g, "alice", &["members", "remove", &bob_id]),
        4,
        "L-Bone",
    );
    assert!(
        err.contains(&format!(
            "removed {bob_id} at the metadata manager, but not at the L-Bone"
        )),
        "{err}"
    );
    let o = ok(lors(
        &g,
        "alice",
        &["members", "restore", &bob_id, "--mdm-only"],
    ));
    assert!(o.contains(&format!("restored {bob_id} in VO vo1")), "{o}");
    download_is(&g, "bob", "/vo1/alice/ec", &ec, "ec.bob2");

    // Back up: uploads work again.
    g.restart_lbone().expect("L-Bone restarts");
    g.wait_lbone_sees_all(Duration::from_secs(30))
        .expect("the L-Bone sees the depots");
    ok(lors(
        &g,
        "alice",
        &["upload", &src_copies, "/vo1/alice/new"],
    ));
    download_is(&g, "alice", "/vo1/alice/new", &copies, "new.out");
    // Restoring bob at both: the L-Bone had never removed him, which is
    // not an error.
    let o = ok(lors(&g, "alice", &["members", "restore", &bob_id]));
    assert!(o.contains("had not removed them"), "{o}");
}

#[test]
fn with_the_metadata_manager_down_the_message_names_it_and_xnd_downloads_work() {
    let mut g = grid();
    let (data, src) = alice_with_f(&g, 5 << 20, 3);
    let dir = g.user("alice").dir.clone();
    // An exNode file of its own: legacy depots, no metadata manager.
    let xnd = dir.join("f.xnd").display().to_string();
    let depots = [
        g.depots[0].legacy_addr.clone(),
        g.depots[1].legacy_addr.clone(),
    ];
    ok(lors(
        &g,
        "alice",
        &[
            "upload",
            &src,
            "--xnd",
            &xnd,
            "--security",
            "legacy",
            "--copies",
            "2",
            "--depot",
            &depots[0],
            "--depot",
            &depots[1],
        ],
    ));

    g.kill_mdm();

    let back = out_path(&g, "alice", "f.out").display().to_string();
    let o = lors(&g, "alice", &["download", "/vo1/alice/f", &back]);
    let err = fails(o, 4, "metadata manager");
    assert!(err.contains(&g.mdm_url), "names its URL: {err}");
    assert!(!Path::new(&back).exists(), "no partial file under the name");
    let o = lors(&g, "alice", &["upload", &src, "/vo1/alice/g"]);
    fails(o, 4, "metadata manager");
    let o = lors(&g, "alice", &["ls", "/vo1/alice"]);
    fails(o, 4, "metadata manager");

    // The exNode file needs neither the metadata manager nor the L-Bone.
    ok(lors(&g, "alice", &["download", "--xnd", &xnd, &back]));
    assert!(std::fs::read(&back).expect("read") == data);
    std::fs::remove_file(&back).expect("remove");
    g.kill_lbone();
    ok(lors(&g, "alice", &["download", "--xnd", &xnd, &back]));
    assert!(std::fs::read(&back).expect("read") == data);

    g.restart_mdm().expect("metadata manager restarts");
    download_is(&g, "alice", "/vo1/alice/f", &data, "f.again");
}

#[test]
fn a_minute_of_clock_skew_is_tolerated_and_ten_minutes_are_refused_naming_it() {
    let mut g = grid();
    let (data, src) = alice_with_f(&g, 2 << 20, 4);

    // The metadata manager a minute ahead: its tickets are issued "in the
    // future" for the depots, within the allowance.
    g.restart_with_env(Daemon::MetadataManager, skewed("+60s"))
        .expect("metadata manager restarts skewed");
    download_is(&g, "alice", "/vo1/alice/f", &data, "f.1");
    // The L-Bone a minute behind: its grants still count at the depots,
    // and alice's proxy (back-dated) is valid there.
    g.restart_with_env(Daemon::Lbone, skewed("-60s"))
        .expect("L-Bone restarts skewed");
    ok(lors(
        &g,
        "alice",
        &["upload", &src, "/vo1/alice/g", "--copies", "2"],
    ));
    download_is(&g, "alice", "/vo1/alice/g", &data, "g.1");

    // Ten minutes ahead: the depots refuse its tickets, saying why.
    g.restart_with_env(Daemon::MetadataManager, skewed("+10m"))
        .expect("metadata manager restarts skewed");
    let back = out_path(&g, "alice", "f.10").display().to_string();
    let o = lors(&g, "alice", &["download", "/vo1/alice/f", &back]);
    let err = fails(o, 10, "clock skew");
    assert!(err.contains("ticket"), "{err}");
    // Ten minutes behind: alice's proxy is not valid yet at the L-Bone.
    g.restart_with_env(Daemon::MetadataManager, Vec::new())
        .expect("metadata manager restarts");
    g.restart_with_env(Daemon::Lbone, skewed("-10m"))
        .expect("L-Bone restarts skewed");
    let o = lors(
        &g,
        "alice",
        &["upload", &src, "/vo1/alice/h", "--copies", "2"],
    );
    let err = fails(o, 3, "clock skew");
    assert!(err.contains("L-Bone"), "{err}");

    // Clocks agree again: everything works.
    g.restart_with_env(Daemon::Lbone, Vec::new())
        .expect("L-Bone restarts");
    g.wait_lbone_sees_all(Duration::from_secs(30))
        .expect("the L-Bone sees the depots");
    ok(lors(
        &g,
        "alice",
        &["upload", &src, "/vo1/alice/h", "--copies", "2"],
    ));
    download_is(&g, "alice", "/vo1/alice/h", &data, "h.1");
}
