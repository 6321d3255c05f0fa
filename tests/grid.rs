//! Smoke test of the real-process grid: three depots seen by the L-Bone
//! through `lors depots`, `lors whoami` at the metadata manager, a depot
//! killed and restarted, and no process left behind. Fails (never skips)
//! when a binary is missing and cannot be built.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ibp_depot_client::IbpClient;
use ibp_grid::grid::{Grid, GridOptions};
use ibp_grid::run_bounded;
use ibp_proto::{Rid, StatusInfo};

/// Runs `cmd`; returns (success, stdout, stderr).
fn run(mut cmd: Command) -> (bool, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_bounded(cmd, Duration::from_secs(60)).expect("run lors");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lors(grid: &Grid, user: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = grid.lors(user);
    cmd.args(args);
    run(cmd)
}

fn status(rt: &tokio::runtime::Runtime, addr: &str) -> anyhow::Result<StatusInfo> {
    rt.block_on(async {
        let mut c = IbpClient::connect(addr).await?;
        Ok(tokio::time::timeout(Duration::from_secs(10), c.status(Rid(0))).await??)
    })
}

fn alive(pid: u32) -> bool {
    // A zombie is dead too: only reaped processes vanish from /proc, so
    // check the state letter.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[test]
fn three_depot_grid_serves_lors_and_survives_a_depot_restart() {
    let t = Instant::now();
    let mut grid = Grid::start(GridOptions::default()).expect("the grid starts");
    eprintln!(
        "grid of 3 depots started in {:.2} s ({:.2} s with finding the binaries)",
        grid.startup.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(grid.depots.len(), 3);
    for d in &grid.depots {
        assert!(d.tls_addr.is_some() && d.data_addr.is_none());
        assert!(d.data_dir.is_dir());
    }
    for u in ["alice", "bob", "carol"] {
        assert!(grid.proxy(u).is_file(), "{u} has a proxy");
    }

    // The L-Bone offers alice all three depots, with grants for their TLS ports.
    let lbone = grid.lbone_url.clone();
    let (ok, out, err) = lors(&grid, "alice", &["depots", "--lbone", &lbone]);
    assert!(ok, "lors depots: {out}\n{err}");
    assert!(out.starts_with("VO vo1: 3 depot(s)"), "{out}");
    for d in &grid.depots {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&d.name) && l.contains(d.address())),
            "{} at {} offered: {out}",
            d.name,
            d.address()
        );
    }

    // alice is a VO admin at the metadata manager; bob is a plain member.
    let (ok, out, err) = lors(&grid, "alice", &["whoami"]);
    assert!(ok, "lors whoami: {out}\n{err}");
    assert!(out.contains("vo        : vo1"), "{out}");
    assert!(
        out.contains(&format!("vo id     : {}", grid.user("alice").vo_id)),
        "{out}"
    );
    assert!(out.contains("vo admin  : yes"), "{out}");
    let (ok, out, err) = lors(&grid, "bob", &["whoami"]);
    assert!(ok, "lors whoami: {out}\n{err}");
    assert!(out.contains("vo admin  : no"), "{out}");

    // A depot killed stops answering; restarted, it serves again on the
    // same port and the L-Bone sees it up.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = grid.depots[1].legacy_addr.clone();
    let before = status(&rt, &addr).expect("STATUS before the kill");
    assert!(before.hard_configured > 0, "{before:?}");
    let old_pid = grid.depots[1].pid().expect("running");
    grid.kill_depot(1);
    assert!(!alive(old_pid), "killed and reaped");
    assert!(
        status(&rt, &addr).is_err(),
        "a killed depot does not answer"
    );
    grid.wait_lbone_sees_down(1, Duration::from_secs(10))
        .expect("the L-Bone sees the killed depot down");
    let (ok, out, err) = lors(&grid, "bob", &["depots", "--lbone", &lbone]);
    assert!(ok && out.starts_with("VO vo1: 2 depot(s)"), "{out}\n{err}");
    grid.restart_depot(1).expect("the depot restarts");
    assert_eq!(grid.depots[1].legacy_addr, addr);
    let after = status(&rt, &addr).expect("STATUS after the restart");
    assert_eq!(after.hard_configured, before.hard_configured);
    grid.wait_lbone_sees_all(Duration::from_secs(10))
        .expect("the L-Bone sees every depot up again");
    let (ok, out, err) = lors(&grid, "carol", &["depots", "--lbone", &lbone]);
    assert!(ok && out.starts_with("VO vo1: 3 depot(s)"), "{out}\n{err}");

    // The L-Bone and the metadata manager restart on their ports with
    // their databases: registrations and admins are still there.
    grid.kill_lbone();
    grid.kill_mdm();
    let (ok, _, _) = lors(&grid, "alice", &["whoami"]);
    assert!(!ok, "whoami without a metadata manager fails");
    grid.restart_lbone().expect("the L-Bone restarts");
    grid.restart_mdm().expect("the metadata manager restarts");
    grid.wait_lbone_sees_all(Duration::from_secs(10))
        .expect("the restarted L-Bone sees every depot");
    let (ok, out, err) = lors(&grid, "alice", &["whoami"]);
    assert!(ok && out.contains("vo admin  : yes"), "{out}\n{err}");
    grid.kill_ca();
    grid.restart_ca().expect("the online CA restarts");
    grid.login("bob").expect("bob logs in again");

    // Dropping the grid leaves no process and no directory behind.
    let pids = grid.pids();
    assert_eq!(pids.len(), 6, "CA, L-Bone, MDM and 3 depots");
    let dir = grid.dir.clone();
    drop(grid);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the grid");
    }
    if std::env::var_os("IBP_GRID_KEEP").is_none() && std::env::var_os("KEEP").is_none() {
        assert!(!Path::new(&dir).exists(), "{} removed", dir.display());
    }
}

#[test]
fn grid_variants_data_port_and_legacy_only() {
    let grid = Grid::start(GridOptions {
        depots: 1,
        data_port: true,
        users: vec!["alice".into()],
        ..GridOptions::default()
    })
    .expect("a grid with data ports starts");
    let d = &grid.depots[0];
    assert!(d.tls_addr.is_some() && d.data_addr.is_some());
    drop(grid);

    let grid = Grid::start(GridOptions {
        depots: 1,
        legacy_only: true,
        users: vec!["alice".into()],
        ..GridOptions::default()
    })
    .expect("a legacy-only grid starts");
    let d = &grid.depots[0];
    assert!(d.tls_addr.is_none() && d.data_addr.is_none());
    let lbone = grid.lbone_url.clone();
    let (ok, out, err) = lors(&grid, "alice", &["depots", "--lbone", &lbone]);
    assert!(ok, "lors depots: {out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("depot-0") && l.contains(&d.legacy_addr)),
        "{out}"
    );
}

/// A depot whose operator switched the legacy port off (`legacy = false`)
/// is polled by the L-Bone over TLS, reported up with its capacity,
/// offered, and stores and serves a file's copy. Before, such a depot
/// stayed "down" forever and was never offered.
#[test]
fn depot_without_legacy_port_is_polled_over_tls_and_serves() {
    let grid = Grid::start(GridOptions {
        depots: 2,
        legacy_off: vec![1],
        depot_hard_size: 256 << 20,
        users: vec!["alice".into()],
        ..GridOptions::default()
    })
    .expect("a grid with a depot without legacy port starts (all depots up)");
    let d = &grid.depots[1];
    assert!(!d.legacy && grid.depots[0].legacy);
    assert_eq!(Some(&d.legacy_addr), d.tls_addr.as_ref(), "no legacy port");
    let status = grid.lbone_status().expect("status.json");
    let port = d.tls_addr.as_deref().map(|a| {
        a.rsplit(':')
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap()
    });
    let entry = status["vos"][0]["depots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["port"].as_u64() == port)
        .unwrap_or_else(|| panic!("depot-1 in {status}"))
        .clone();
    assert_eq!(entry["status"]["state"], "up", "{entry}");
    assert_eq!(entry["status"]["hard"]["capacity"], 256u64 << 20, "{entry}");

    let lbone = grid.lbone_url.clone();
    let (ok, out, err) = lors(&grid, "alice", &["depots", "--lbone", &lbone]);
    assert!(ok, "lors depots: {out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("depot-1") && l.contains(d.address())),
        "{out}"
    );
    // A copy on each depot; both serve it.
    let dir = grid.user("alice").dir.clone();
    let src = dir.join("src");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let s = |p: &Path| p.display().to_string();
    let (ok, out, err) = lors(&grid, "alice", &["keys", "init"]);
    assert!(ok, "lors keys init: {out}\n{err}");
    let (ok, out, err) = lors(
        &grid,
        "alice",
        &["upload", &s(&src), "/vo1/both", "--copies", "2"],
    );
    assert!(ok, "lors upload: {out}\n{err}");
    let (ok, out, err) = lors(&grid, "alice", &["stat", "/vo1/both", "--mappings"]);
    assert!(ok, "lors stat: {out}\n{err}");
    assert!(out.contains(d.address()), "a copy on depot-1: {out}");
    let back = dir.join("back");
    let (ok, out, err) = lors(&grid, "alice", &["download", "/vo1/both", &s(&back)]);
    assert!(ok, "lors download: {out}\n{err}");
    assert_eq!(std::fs::read(&back).unwrap(), data);
}
