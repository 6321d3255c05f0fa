//! One client cannot hold the depot down: at each listener (legacy, TLS,
//! data) an address gets at most `max_connections_per_address`
//! connections (more are closed at once), a new connection must send its
//! first complete request line within `first_request_timeout` (however
//! slowly it trickles bytes), the TLS handshake must finish within
//! `handshake_timeout`, and a later request line within
//! `request_line_timeout` of its first byte. Meanwhile a client at another
//! address is served at once.
//!
//! The attacker is 127.0.0.2 (Linux routes all of 127.0.0.0/8 over
//! loopback); the legitimate client is 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DepotProc, Pki};
use ibp_depot_client::{DataClient, IbpClient, SecureClient};
use ibp_proto::{Expect, Reply, Rid};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The depot's limits in these tests (short deadlines, small caps).
const LIMITS: &str = "max_connections = 24\nmax_connections_per_address = 8\nfirst_request_timeout = \"2s\"\nhandshake_timeout = \"2s\"\nrequest_line_timeout = \"2s\"\ndata_listen = \"127.0.0.1:0\"";
const PER_ADDRESS: usize = 8;
const DEADLINE: Duration = Duration::from_secs(2);
/// More connections than the depot's `max_connections` (24).
const ATTACKERS: usize = 30;
/// How fast the attacker trickles: far faster than any per-byte timeout.
const GAP: Duration = Duration::from_millis(250);
/// How long an attacker waits for the depot to close its connection.
const GIVE_UP: Duration = Duration::from_secs(15);

fn attacker() -> IpAddr {
    "127.0.0.2".parse().unwrap()
}

/// Holds `s`, writing one byte of `bytes` (cycled; no newline) every
/// [`GAP`], until the depot closes it; returns how long after `since` that
/// was (`None`: still open after [`GIVE_UP`]).
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    bytes: &'static [u8],
    since: tokio::time::Instant,
    closed: Arc<AtomicUsize>,
) -> Option<Duration> {
    let mut buf = [0u8; 512];
    let mut i = 0;
    let give_up = since + GIVE_UP;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                // An error reply: the close follows.
                Ok(_) => continue,
            },
            _ = tokio::time::sleep_until(next) => {
                let b = [bytes[i % bytes.len()]];
                i += 1;
                next += GAP;
                if s.write_all(&b).await.is_err() || s.flush().await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(give_up) => return None,
        }
    }
    closed.fetch_add(1, Ordering::SeqCst);
    Some(since.elapsed())
}

/// The attack's outcome: connections closed at once, and how long each of
/// the others was held.
struct Outcome {
    at_once: usize,
    held: Vec<Option<Duration>>,
}

async fn outcome(tasks: Vec<tokio::task::JoinHandle<Option<Duration>>>) -> Outcome {
    let mut at_once = 0;
    let mut held = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Some(d) if d < Duration::from_secs(1) => at_once += 1,
            other => held.push(other),
        }
    }
    Outcome { at_once, held }
}

/// Every held connection was closed by its deadline, not earlier (the
/// trickle is progress) and not much later.
fn check_outcome(o: &Outcome, port: &str) {
    assert_eq!(
        o.at_once,
        ATTACKERS - PER_ADDRESS,
        "{port}: connections beyond the per-address cap are closed at once (held: {:?})",
        o.held
    );
    assert_eq!(o.held.len(), PER_ADDRESS, "{port}: held {:?}", o.held);
    for d in &o.held {
        let d = d.unwrap_or_else(|| {
            panic!(
                "{port}: a trickling connection was still open after {GIVE_UP:?}: {:?}",
                o.held
            )
        });
        assert!(
            d >= DEADLINE - Duration::from_millis(300) && d < DEADLINE + Duration::from_secs(3),
            "{port}: a trickling connection was closed after {d:?}, the deadline is {DEADLINE:?}"
        );
    }
}

/// `GET /metrics`; the value of sample `name`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect_timeout(&addr, common::IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in {text}"))
}

fn spawn_depot(pki: &Pki) -> DepotProc {
    pki.depot(LIMITS).data_port().metrics().spawn()
}

/// Waits (bounded) until `n` attacker connections were closed.
async fn closed_at_least(closed: &AtomicUsize, n: usize) {
    let t = Instant::now();
    while closed.load(Ordering::SeqCst) < n {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "only {} of the {n} connections over the cap were closed",
            closed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens [`ATTACKERS`] raw TCP connections from 127.0.0.2 to `to`, each
/// trickling `bytes`.
async fn raw_attack(
    to: SocketAddr,
    bytes: &'static [u8],
    closed: &Arc<AtomicUsize>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Option<Duration>>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let s = common::tcp_from(attacker(), to).await.unwrap();
        let since = tokio::time::Instant::now();
        tasks.push(tokio::spawn(trickle(s, bytes, since, closed.clone())));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_the_legacy_port() {
    let pki = Pki::new();
    let depot = spawn_depot(&pki);
    let rss_before = common::vm_rss_kib(depot.pid());
    // A legitimate client's kept-alive connection, used before the attack.
    let mut kept = IbpClient::connect(&depot.addr.to_string()).await.unwrap();
    kept.set_timeout(Duration::from_secs(10));
    assert!(kept.status(Rid(0)).await.is_ok());

    let closed = Arc::new(AtomicUsize::new(0));
    let tasks = raw_attack(depot.addr, b"1 4 0 1 ibp 3", &closed, ATTACKERS).await;
    closed_at_least(&closed, ATTACKERS - PER_ADDRESS).await;
    // While 127.0.0.2 holds all it may, 127.0.0.1 is served at once.
    let t = Instant::now();
    let mut c = IbpClient::connect(&depot.addr.to_string()).await.unwrap();
    c.set_timeout(Duration::from_secs(1));
    let st = c.status(Rid(0)).await.unwrap();
    assert!(st.total_available > 0);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "served in {:?}",
        t.elapsed()
    );
    assert_eq!(
        closed.load(Ordering::SeqCst),
        ATTACKERS - PER_ADDRESS,
        "the attacker's connections were still held while the client was served"
    );
    eprintln!("legacy: 127.0.0.1 served in {:?}", t.elapsed());
    let o = outcome(tasks).await;
    eprintln!("legacy: {} closed at once, held {:?}", o.at_once, o.held);
    check_outcome(&o, "legacy");

    // A connection that completed a request keeps the idle timeout: it
    // outlived the first-request deadline ...
    assert!(kept.status(Rid(0)).await.is_ok());
    // ... but the rest of a request line must follow its first byte in time.
    let mut slow = common::tcp_from("127.0.0.1".parse().unwrap(), depot.addr)
        .await
        .unwrap();
    slow.write_all(b"1 4 0 1 ibp 30\n").await.unwrap();
    let mut reply = vec![0u8; 4096];
    let n = slow.read(&mut reply).await.unwrap();
    assert!(reply[..n].starts_with(b"1 "), "{:?}", &reply[..n]);
    // Drain the status body (one write with its header).
    let since = tokio::time::Instant::now();
    let one = Arc::new(AtomicUsize::new(0));
    let held = trickle(slow, b"1 4 0 1 ibp 3", since, one).await;
    let held = held.expect("a trickled second request line is cut off");
    assert!(
        held < DEADLINE + Duration::from_secs(3),
        "second request line held {held:?}"
    );

    let m = depot.metrics.unwrap();
    assert!(
        metric(m, "ibp_connections_refused_per_address_total") >= (ATTACKERS - PER_ADDRESS) as u64
    );
    assert!(metric(m, "ibp_connections_timed_out_total") > PER_ADDRESS as u64);
    let rss_after = common::vm_rss_kib(depot.pid());
    eprintln!("depot RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "depot RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_the_tls_port() {
    let pki = Pki::new();
    let depot = spawn_depot(&pki);
    let to = depot.tls_addr.unwrap();
    let rss_before = common::vm_rss_kib(depot.pid());
    let closed = Arc::new(AtomicUsize::new(0));
    // A VO member without rights completes the handshake on some
    // connections and trickles a request line ...
    let mallory = pki.tls_config(Some(&pki.user("mallory")));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let tls = common::tls_from(attacker(), to, &mallory).await.unwrap();
        let since = tokio::time::Instant::now();
        tasks.push(tokio::spawn(trickle(
            tls,
            b"2 4 0 1 ibp 3",
            since,
            closed.clone(),
        )));
    }
    // ... and trickles a ClientHello (no credential needed) on the rest.
    tasks.extend(
        raw_attack(
            to,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            &closed,
            ATTACKERS - 4,
        )
        .await,
    );
    closed_at_least(&closed, ATTACKERS - PER_ADDRESS).await;
    let t = Instant::now();
    let mut c = SecureClient::connect(
        &to.to_string(),
        "127.0.0.1",
        &pki.client_trust,
        &pki.service("lbone.example.org"),
    )
    .await
    .unwrap();
    c.set_timeout(Duration::from_secs(1));
    assert_eq!(
        c.raw("2 4 3 30\n", Expect::Resources).await.unwrap(),
        Reply::Resources(vec![Rid(0)])
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "served in {:?}",
        t.elapsed()
    );
    assert_eq!(closed.load(Ordering::SeqCst), ATTACKERS - PER_ADDRESS);
    eprintln!("TLS: 127.0.0.1 served in {:?}", t.elapsed());
    let o = outcome(tasks).await;
    eprintln!("TLS: {} closed at once, held {:?}", o.at_once, o.held);
    check_outcome(&o, "TLS");
    let m = depot.metrics.unwrap();
    assert!(
        metric(m, "ibp_connections_refused_per_address_total") >= (ATTACKERS - PER_ADDRESS) as u64
    );
    assert!(metric(m, "ibp_connections_timed_out_total") >= PER_ADDRESS as u64);
    let rss_after = common::vm_rss_kib(depot.pid());
    eprintln!("depot RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "depot RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_the_data_port() {
    let pki = Pki::new();
    let depot = spawn_depot(&pki);
    let data = depot.data_addr.unwrap();
    let rss_before = common::vm_rss_kib(depot.pid());
    // The legitimate client's crypto session, opened before the attack.
    let alice = pki.user("alice");
    let mut c = SecureClient::connect(
        &depot.tls_addr.unwrap().to_string(),
        "127.0.0.1",
        &pki.client_trust,
        &alice,
    )
    .await
    .unwrap();
    c.set_timeout(Duration::from_secs(10));
    c.auth(&pki.grant(&depot, &alice, "vo1:alice"))
        .await
        .unwrap();
    let cs = c.open_crypto().await.unwrap();

    let closed = Arc::new(AtomicUsize::new(0));
    let tasks = raw_attack(data, b"3 22 00112233", &closed, ATTACKERS).await;
    closed_at_least(&closed, ATTACKERS - PER_ADDRESS).await;
    let t = Instant::now();
    let mut d = DataClient::connect(&data.to_string(), &cs).await.unwrap();
    d.set_timeout(Duration::from_secs(1));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "joined in {:?}",
        t.elapsed()
    );
    assert_eq!(closed.load(Ordering::SeqCst), ATTACKERS - PER_ADDRESS);
    eprintln!("data: 127.0.0.1 joined in {:?}", t.elapsed());
    let o = outcome(tasks).await;
    eprintln!("data: {} closed at once, held {:?}", o.at_once, o.held);
    check_outcome(&o, "data");
    let m = depot.metrics.unwrap();
    assert!(
        metric(m, "ibp_connections_refused_per_address_total") >= (ATTACKERS - PER_ADDRESS) as u64
    );
    assert!(metric(m, "ibp_connections_timed_out_total") >= PER_ADDRESS as u64);
    let rss_after = common::vm_rss_kib(depot.pid());
    eprintln!("depot RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "depot RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// A STORE body that trickles a byte every [`GAP`], well inside
/// `io_timeout`, is cut off by the transfer's pace (`min_transfer_rate`:
/// `io_timeout` plus a second per `min_transfer_rate` bytes), and nothing of
/// it is acknowledged; the depot serves others meanwhile. Before the pace, a
/// byte per `io_timeout` held the connection for as long as the body was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_store_body_is_cut_off_by_the_pace() {
    const IO: Duration = Duration::from_secs(2);
    let pki = Pki::new();
    let depot = pki
        .depot("io_timeout = \"2s\"\nmin_transfer_rate = \"64KiB\"")
        .spawn();
    let mut owner = IbpClient::connect(&depot.addr.to_string()).await.unwrap();
    owner.set_timeout(Duration::from_secs(10));
    let size = 64 * 1024;
    let caps = owner
        .allocate(Rid(0), ibp_proto::Reliability::Hard, 3600, size)
        .await
        .unwrap();
    let store = ibp_proto::Request::Store(ibp_proto::Store {
        cap: caps.write.cap.clone(),
        size,
        timeout: 30,
    });
    let mut s = common::tcp_from(attacker(), depot.addr).await.unwrap();
    s.write_all(store.encode().as_bytes()).await.unwrap();
    let mut go = [0u8; 3];
    s.read_exact(&mut go).await.unwrap();
    assert_eq!(&go, b"1 \n", "the go-ahead");
    let since = tokio::time::Instant::now();
    let closed = Arc::new(AtomicUsize::new(0));
    let body = tokio::spawn(trickle(s, b"x", since, closed));

    // The depot serves another client while the body trickles.
    let t = Instant::now();
    let mut other = IbpClient::connect(&depot.addr.to_string()).await.unwrap();
    other.set_timeout(Duration::from_secs(1));
    assert!(other.status(Rid(0)).await.unwrap().total_available > 0);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "served in {:?}",
        t.elapsed()
    );

    let held = body
        .await
        .unwrap()
        .expect("a trickled STORE body is cut off, not held until GIVE_UP");
    eprintln!("trickled STORE body cut off after {held:?}");
    // io_timeout, plus a few bytes' worth of a second at 64 KiB/s.
    assert!(
        held >= IO - Duration::from_millis(300) && held < IO + Duration::from_secs(3),
        "cut off after {held:?}"
    );
    let p = owner.probe(&caps.manage).await.unwrap();
    assert_eq!(p.size, 0, "nothing of the cut-off body is acknowledged");
}
