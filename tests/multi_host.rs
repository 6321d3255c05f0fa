//! The grid on hosts (issue 20 item 4): every daemon in its own network
//! namespace with its own address and name, certificates for those names,
//! `lors` on a client host, links with an emulated delay (the relay of
//! src/grid/netns.rs), `tbf` rates and partitions (link down).
//!
//! - `wan_links`: 20 ms round trips to every host; only the ports of the
//!   firewall matrix (docs/deployment.md) are reachable from another host;
//!   upload and download across the links; a depot partitioned during a
//!   download, which completes from the other copies; the L-Bone marks it
//!   down and offers it again when the link returns; a slow link (tbf)
//!   does not stall transfers to the fast depots.
//! - `mdm_replica_partitioned`: two metadata-manager replicas on one
//!   PostgreSQL database; one partitioned, `lors` carries on through the
//!   other.
//!
//! Needs root and iproute2 (`ip`, `tc`): without them the tests fail,
//! they never skip.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use ibp_grid::grid::netns::{CA_PORT, DEPOT_PORT, DEPOT_TLS_PORT, LBONE_PORT, MDM_PORT};
use ibp_grid::grid::{Grid, GridOptions, HostsOptions, Network, Role};
use ibp_testkit::pg::PgCluster;

const ONE_WAY: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(30);

fn net(g: &Grid) -> &Network {
    g.network().expect("a grid on hosts")
}

/// `name:6715` of depot `i` (its TLS port, by name).
fn depot_at(g: &Grid, i: usize) -> String {
    let h = g.depots[i].host.as_ref().expect("depot on a host");
    format!("{}:{DEPOT_TLS_PORT}", h.name)
}

/// Seconds from connecting to `addr` (from the root namespace, through
/// the host's relay) until the daemon's close of a connection we closed
/// comes back: one round trip over the link at least.
fn close_round_trip(addr: SocketAddr) -> Duration {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(b"\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    t.elapsed()
}

#[test]
fn wan_links() {
    let _t = Timer::start("wan_links");
    let g = start(GridOptions {
        depots: 3,
        users: vec!["alice".into()],
        lbone_poll_interval: Duration::from_millis(300),
        hosts: Some(HostsOptions {
            one_way_delay: ONE_WAY,
        }),
        ..GridOptions::default()
    });
    let n = net(&g);

    // Names, not addresses, everywhere a client looks.
    assert!(g.lbone_url.starts_with("https://lbone."), "{}", g.lbone_url);
    assert!(g.mdm_url.starts_with("https://mdm0."), "{}", g.mdm_url);
    assert!(g.ca_url.starts_with("https://ca."), "{}", g.ca_url);

    // The firewall matrix: each host exposes only its documented ports.
    let exposed = |r: Role| {
        let mut p = n.host(r).unwrap().exposed();
        p.sort();
        p
    };
    assert_eq!(exposed(Role::Ca), vec![CA_PORT]);
    assert_eq!(exposed(Role::Lbone), vec![LBONE_PORT]);
    assert_eq!(exposed(Role::Mdm(0)), vec![MDM_PORT]);
    for i in 0..3 {
        assert_eq!(exposed(Role::Depot(i)), vec![DEPOT_PORT, DEPOT_TLS_PORT]);
    }
    assert!(exposed(Role::Client).is_empty());
    // The L-Bone's metrics port listens on its host's loopback only: not
    // reachable from elsewhere.
    let lbone_host = n.host(Role::Lbone).unwrap();
    let log = std::fs::read_to_string(g.dir.join("lbone/stdout.log")).unwrap();
    let metrics_port: u16 = log
        .lines()
        .find_map(|l| l.strip_prefix("metrics on "))
        .and_then(|a| a.trim().rsplit(':').next()?.parse().ok())
        .expect("the L-Bone prints its metrics address");
    let refused = TcpStream::connect_timeout(
        &SocketAddr::from((lbone_host.ip, metrics_port)),
        Duration::from_secs(5),
    );
    assert!(
        refused.is_err(),
        "the metrics port is reachable from another host"
    );

    // The link delay is there: a round trip to a depot takes 20 ms.
    let d0: SocketAddr = g.depots[0].legacy_addr.parse().unwrap();
    let rt = close_round_trip(d0);
    assert!(rt >= 2 * ONE_WAY, "round trip {rt:?} over a 20 ms link");

    // Upload and download across the links, two copies of each block.
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/wan"]));
    let data = bytes(12 << 20, 7);
    upload(
        &g,
        "alice",
        "f.bin",
        &data,
        "/vo1/wan/f",
        &["--copies", "2", "--block-size", "1MiB"],
    );
    download_is(&g, "alice", "/vo1/wan/f", &data, "f across 20 ms links");

    // Depot 0 slowed down (so the download is still reading from it),
    // then partitioned once the download has read from it: the download
    // completes from the other copies.
    n.set_rate(Role::Depot(0), Some(16_000_000)).unwrap();
    let d0_host = n.host(Role::Depot(0)).unwrap().clone();
    let before = d0_host.bytes_sent();
    let out = g.user("alice").dir.join("dl-partition");
    let mut c = lors_cmd(
        &g,
        "alice",
        &["download", "/vo1/wan/f", s(&out), "--timeout", "5"],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("start lors download");
    wait_until(WAIT, "the download reads from depot 0", || {
        d0_host.bytes_sent() > before + (256 << 10)
    });
    n.set_link(Role::Depot(0), false).unwrap();
    let t = Instant::now();
    let o = wait_child(child, LORS_LIMIT);
    assert!(
        o.status.success(),
        "download with depot 0 partitioned: {}",
        text(&o)
    );
    assert_file_is(&out, &data, "f, read from the copies past the partition");
    eprintln!(
        "download finished {:.1} s after the partition",
        t.elapsed().as_secs_f64()
    );

    // The L-Bone marks it down, and offers it again once the link is back.
    g.wait_lbone_state(0, "down", WAIT)
        .expect("the L-Bone marks the partitioned depot down");
    let o = lors(&g, "alice", &["depots", "--json"]);
    assert!(
        !stdout(&o).contains(&n.host(Role::Depot(0)).unwrap().name),
        "a down depot is not offered: {}",
        stdout(&o)
    );
    n.set_link(Role::Depot(0), true).unwrap();
    n.set_rate(Role::Depot(0), None).unwrap();
    g.wait_lbone_state(0, "up", WAIT)
        .expect("the L-Bone offers the depot again");
    let o = ok(lors(&g, "alice", &["depots", "--json"]));
    assert!(
        o.contains(&n.host(Role::Depot(0)).unwrap().name),
        "offered again: {o}"
    );

    // A slow link does not stall transfers to the fast ones: while an
    // upload trickles into depot 2 at 1 Mbit/s, uploads and downloads on
    // depots 0 and 1 complete.
    n.set_rate(Role::Depot(2), Some(1_000_000)).unwrap();
    let slow = bytes(4 << 20, 11);
    let slow_src = write(&g.user("alice").dir, "slow.bin", &slow);
    let d2 = depot_at(&g, 2);
    let mut c = lors_cmd(
        &g,
        "alice",
        &["upload", s(&slow_src), "/vo1/wan/slow", "--depot", &d2],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let slow_child = c.spawn().expect("start the slow upload");
    let fast = bytes(6 << 20, 12);
    let (d0, d1) = (depot_at(&g, 0), depot_at(&g, 1));
    let t = Instant::now();
    upload(
        &g,
        "alice",
        "fast.bin",
        &fast,
        "/vo1/wan/fast",
        &["--depot", &d0, "--depot", &d1],
    );
    download_is(
        &g,
        "alice",
        "/vo1/wan/fast",
        &fast,
        "fast beside a slow link",
    );
    let fast_time = t.elapsed();
    let mut slow_child = slow_child;
    let slow_still_running = slow_child.try_wait().unwrap().is_none();
    assert!(
        slow_still_running,
        "the 4 MiB upload at 1 Mbit/s (32 s at least) ended in {fast_time:?}"
    );
    // 4 MiB at 1 Mbit/s is 34 s: the fast transfers did not wait for it.
    assert!(
        fast_time < Duration::from_secs(25),
        "fast transfers took {fast_time:?} beside the slow link"
    );
    let o = wait_child(slow_child, LORS_LIMIT);
    assert!(o.status.success(), "the slow upload: {}", text(&o));
    n.set_rate(Role::Depot(2), None).unwrap();
    download_is(&g, "alice", "/vo1/wan/slow", &slow, "slow, after its link");

    // Everything above went through the firewall matrix: no host refused
    // a connection. The matrix is enforced: a port is reached only from
    // where the matrix says.
    for h in &n.hosts {
        assert_eq!(h.refused(), 0, "{h:?} refused a connection the grid needed");
    }
    let at = |r: Role, port: u16| SocketAddr::from((n.host(r).unwrap().ip, port));
    let probes = [
        (Role::Client, at(Role::Mdm(0), MDM_PORT), true),
        (Role::Depot(1), at(Role::Mdm(0), MDM_PORT), false),
        (Role::Client, at(Role::Lbone, LBONE_PORT), true),
        (Role::Mdm(0), at(Role::Lbone, LBONE_PORT), false),
        (Role::Lbone, at(Role::Depot(0), DEPOT_TLS_PORT), true),
        (Role::Depot(1), at(Role::Depot(0), DEPOT_TLS_PORT), true),
        (Role::Mdm(0), at(Role::Depot(0), DEPOT_PORT), false),
        (Role::Depot(2), at(Role::Ca, CA_PORT), true),
    ];
    for (from, addr, want) in probes {
        let got = n.reachable_from(from, addr).unwrap();
        assert_eq!(
            got, want,
            "{from} -> {addr}: reachable {got}, matrix says {want}"
        );
    }
    assert_eq!(n.host(Role::Mdm(0)).unwrap().refused(), 1);
    assert_eq!(n.host(Role::Lbone).unwrap().refused(), 1);
}

#[test]
fn mdm_replica_partitioned() {
    let _t = Timer::start("mdm_replica_partitioned");
    let pg = PgCluster::start();
    let g = start(GridOptions {
        depots: 2,
        users: vec!["alice".into()],
        // The database over its Unix socket: reachable from every host.
        mdm_database: Some(pg.socket_url()),
        mdm_replicas: 2,
        hosts: Some(HostsOptions {
            one_way_delay: ONE_WAY,
        }),
        ..GridOptions::default()
    });
    let n = net(&g);
    assert_eq!(g.mdm_urls.len(), 2);
    assert!(
        g.mdm_urls[1].starts_with("https://mdm1."),
        "{:?}",
        g.mdm_urls
    );
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/r"]));
    let a = bytes(2 << 20, 1);
    upload(&g, "alice", "a.bin", &a, "/vo1/r/a", &[]);

    // The first replica partitioned: listing, reading and writing go on
    // through the second.
    n.set_link(Role::Mdm(0), false).unwrap();
    let ls = ok(lors(&g, "alice", &["ls", "/vo1/r"]));
    assert!(ls.contains('a'), "listed through the second replica: {ls}");
    download_is(&g, "alice", "/vo1/r/a", &a, "a, with replica 0 partitioned");
    let b = bytes(1 << 20, 2);
    upload(&g, "alice", "b.bin", &b, "/vo1/r/b", &[]);
    download_is(&g, "alice", "/vo1/r/b", &b, "b, written through replica 1");

    // Back: the first replica alone sees b (one database).
    n.set_link(Role::Mdm(0), true).unwrap();
    let mut only_first = lors_cmd(&g, "alice", &["stat", "/vo1/r/b"]);
    only_first.env("LORS_METADATA_URL", &g.mdm_urls[0]);
    let o = run_limited(only_first, LORS_LIMIT);
    assert!(o.status.success(), "the first replica sees b: {}", text(&o));
}

/// Waits for a spawned child within `limit` (killing it after), with its
/// output.
fn wait_child(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let o = child.wait_with_output().expect("output");
                panic!("not finished within {limit:?}: {}", text(&o));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What a killed run left (namespaces, bridge, hosts files of a process
/// that no longer runs) is removed when a network is made; a network's
/// own are removed on drop.
#[test]
fn stale_hosts_are_removed() {
    // pid_max is never a process id.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut p = pid_max;
    let mut b36 = String::new();
    loop {
        b36.insert(0, char::from_digit((p % 36) as u32, 36).unwrap());
        p /= 36;
        if p == 0 {
            break;
        }
    }
    let ns = format!("ibg-{pid_max}-0-depot0");
    let bridge = format!("ibg{b36}Z0br");
    let ip = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("run ip");
        assert!(o.status.success(), "ip {args:?}: {}", text(&o));
        stdout(&o)
    };
    ip(&["netns", "add", &ns]);
    ip(&["link", "add", &bridge, "type", "bridge"]);
    std::fs::create_dir_all(format!("/etc/netns/{ns}")).unwrap();
    std::fs::write(format!("/etc/netns/{ns}/hosts"), "").unwrap();

    let n = Network::create(&[Role::Client], &HostsOptions::default()).expect("a network");
    assert!(
        !ip(&["netns", "list"]).contains(&ns),
        "stale namespace left"
    );
    assert!(!ip(&["-o", "link"]).contains(&bridge), "stale bridge left");
    assert!(!Path::new(&format!("/etc/netns/{ns}")).exists());
    let mine = n.host(Role::Client).unwrap().ns.clone();
    assert!(ip(&["netns", "list"]).contains(&mine));
    drop(n);
    assert!(
        !ip(&["netns", "list"]).contains(&mine),
        "own namespace left"
    );
    assert!(!Path::new(&format!("/etc/netns/{mine}")).exists());
}
