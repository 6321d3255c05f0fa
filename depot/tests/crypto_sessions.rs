//! Crypto-level sessions (CRYPTO, `2 21 <timeout>`) are bounded per TLS
//! connection (`max_crypto_sessions_per_connection`) and per client key
//! over all its connections (`max_crypto_sessions_per_peer`); beyond, CRYPTO
//! is refused with -19 and a reason. Closing a connection ends its sessions
//! and gives their memory back, so a flood of CRYPTO requests leaves the
//! depot as it was.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{DepotProc, Pki};
use ibp_depot_client::{ClientError, DataClient, SecureClient};
use ibp_proto::{IbpError, Rid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (IbpError, String) {
    match r {
        Err(ClientError::Refused { error, reason }) => (error, reason),
        Err(ClientError::Ibp(e)) => (e, String::new()),
        other => panic!("expected an error reply, got {other:?}"),
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

/// Waits (bounded, polling) until the depot holds `n` crypto sessions.
fn open_sessions_become(depot: &DepotProc, n: u64) {
    let m = depot.metrics.unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || metric(
            m,
            "ibp_crypto_sessions_open"
        ) == n),
        "open crypto sessions stayed at {} (want {n})",
        metric(m, "ibp_crypto_sessions_open")
    );
}

fn depot(pki: &Pki, per_connection: usize, per_peer: usize) -> DepotProc {
    pki.depot(&format!(
        "data_listen = \"127.0.0.1:0\"\nmax_crypto_sessions_per_connection = {per_connection}\nmax_crypto_sessions_per_peer = {per_peer}"
    ))
    .data_port()
    .metrics()
    .spawn()
}

async fn session(pki: &Pki, depot: &DepotProc, who: &str) -> SecureClient {
    let cred = pki.user(who);
    let mut c = SecureClient::connect(
        &depot.tls_addr.unwrap().to_string(),
        "127.0.0.1",
        &pki.client_trust,
        &cred,
    )
    .await
    .unwrap();
    c.set_timeout(Duration::from_secs(10));
    c.auth(&pki.grant(depot, &cred, &format!("vo1:{who}")))
        .await
        .unwrap();
    c
}

/// The same user (one proxy, so one client key) on a new connection.
async fn session_as(
    pki: &Pki,
    depot: &DepotProc,
    cred: &ibp_auth::ProxyCredential,
    vo_id: &str,
) -> SecureClient {
    let mut c = SecureClient::connect(
        &depot.tls_addr.unwrap().to_string(),
        "127.0.0.1",
        &pki.client_trust,
        cred,
    )
    .await
    .unwrap();
    c.set_timeout(Duration::from_secs(10));
    c.auth(&pki.grant(depot, cred, vo_id)).await.unwrap();
    c
}

#[tokio::test]
async fn crypto_sessions_beyond_the_connection_bound_are_refused() {
    let pki = Pki::new();
    let depot = depot(&pki, 4, 64);
    let mut c = session(&pki, &depot, "mallory").await;
    let mut first = None;
    for _ in 0..4 {
        first.get_or_insert(c.open_crypto().await.unwrap());
    }
    let (e, reason) = refused(c.open_crypto().await.map(drop));
    assert_eq!(e, IbpError::WouldExceedLimit, "{reason}");
    assert!(
        reason.contains("at most 4 per connection"),
        "reason {reason:?}"
    );
    // The refusal closed the connection, which ended its four sessions:
    // a data connection can no longer join them.
    assert!(c.status(Rid(0)).await.is_err());
    open_sessions_become(&depot, 0);
    let r = DataClient::connect(&depot.data_addr.unwrap().to_string(), &first.unwrap()).await;
    assert!(r.is_err(), "joined an ended session");
    // A new connection may open sessions again, up to the bound.
    let mut c = session(&pki, &depot, "mallory").await;
    let cs = c.open_crypto().await.unwrap();
    for _ in 0..3 {
        c.open_crypto().await.unwrap();
    }
    open_sessions_become(&depot, 4);
    let mut d = DataClient::connect(&depot.data_addr.unwrap().to_string(), &cs)
        .await
        .unwrap();
    d.set_timeout(Duration::from_secs(10));
    let (e, _) = refused(c.open_crypto().await.map(drop));
    assert_eq!(e, IbpError::WouldExceedLimit);
    assert!(metric(depot.metrics.unwrap(), "ibp_crypto_sessions_refused_total") == 2);
}

#[tokio::test]
async fn crypto_sessions_beyond_the_peer_bound_are_refused() {
    let pki = Pki::new();
    let depot = depot(&pki, 4, 6);
    let alice = pki.user("alice");
    let mut a = session_as(&pki, &depot, &alice, "vo1:alice").await;
    for _ in 0..4 {
        a.open_crypto().await.unwrap();
    }
    // A second connection of the same client key: 2 more, then refused.
    let mut b = session_as(&pki, &depot, &alice, "vo1:alice").await;
    b.open_crypto().await.unwrap();
    b.open_crypto().await.unwrap();
    let (e, reason) = refused(b.open_crypto().await.map(drop));
    assert_eq!(e, IbpError::WouldExceedLimit, "{reason}");
    assert!(
        reason.contains("at most 6 per client key"),
        "reason {reason:?}"
    );
    // b's two ended with it; a still holds four.
    open_sessions_become(&depot, 4);
    let mut c = session_as(&pki, &depot, &alice, "vo1:alice").await;
    c.open_crypto().await.unwrap();
    c.open_crypto().await.unwrap();
    let (e, _) = refused(c.open_crypto().await.map(drop));
    assert_eq!(e, IbpError::WouldExceedLimit);
    // Another user is not affected.
    let mut bob = session(&pki, &depot, "bob").await;
    for _ in 0..4 {
        bob.open_crypto().await.unwrap();
    }
    open_sessions_become(&depot, 8);
    // Once a's connection closes, alice may open six again.
    drop(a);
    open_sessions_become(&depot, 4);
    let mut d = session_as(&pki, &depot, &alice, "vo1:alice").await;
    for _ in 0..4 {
        d.open_crypto().await.unwrap();
    }
    let mut e2 = session_as(&pki, &depot, &alice, "vo1:alice").await;
    e2.open_crypto().await.unwrap();
    e2.open_crypto().await.unwrap();
    open_sessions_become(&depot, 10);
    let (e, _) = refused(e2.open_crypto().await.map(drop));
    assert_eq!(e, IbpError::WouldExceedLimit);
}

/// The attack that added 108 MB to a depot: CRYPTO requests pipelined on
/// TLS connections. Each connection gets exactly the bound, then -19 and
/// the close; after 20,000 requests the sessions are gone and the depot's
/// memory is what it was, give or take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_session_flood_is_cut_off_and_its_memory_returned() {
    const PER_CONNECTION: usize = 32;
    const ATTEMPTS: usize = 20_000;
    let pki = Pki::new();
    let depot = depot(&pki, PER_CONNECTION, 64);
    let mallory = pki.user("mallory");
    let grant = pki.grant(&depot, &mallory, "vo1:mallory");
    let cfg = pki.tls_config(Some(&mallory));
    let to = depot.tls_addr.unwrap();
    // Warm up (the first connections allocate the depot's buffers).
    for _ in 0..3 {
        let mut c = session_as(&pki, &depot, &mallory, "vo1:mallory").await;
        c.open_crypto().await.unwrap();
    }
    open_sessions_become(&depot, 0);
    let rss_before = common::vm_rss_kib(depot.pid());
    let started = Instant::now();
    let mut line = format!("2 20 {grant} 300\n");
    for _ in 0..=PER_CONNECTION {
        line.push_str("2 21 300\n");
    }
    let mut attempts = 0;
    while attempts < ATTEMPTS {
        let mut tls = common::tls_from("127.0.0.1".parse().unwrap(), to, &cfg)
            .await
            .unwrap();
        tls.write_all(line.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        attempts += PER_CONNECTION + 1;
        let mut out = Vec::new();
        // The depot closes the connection after the refusal.
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
            .await
            .expect("the depot closes the connection after the refusal");
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), PER_CONNECTION + 2, "{text}");
        assert_eq!(lines[0], "1 ", "AUTH");
        for l in &lines[1..=PER_CONNECTION] {
            assert!(l.starts_with("1 "), "CRYPTO reply {l:?}");
        }
        assert!(
            lines[PER_CONNECTION + 1].starts_with(" -19 crypto session limit"),
            "{:?}",
            lines[PER_CONNECTION + 1]
        );
    }
    let elapsed = started.elapsed();
    open_sessions_become(&depot, 0);
    let rss_after = common::vm_rss_kib(depot.pid());
    eprintln!(
        "{attempts} CRYPTO requests in {elapsed:?}; depot RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "depot RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The depot serves on.
    let mut c = session_as(&pki, &depot, &mallory, "vo1:mallory").await;
    c.open_crypto().await.unwrap();
}
