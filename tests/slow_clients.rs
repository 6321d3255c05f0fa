//! Slow clients cannot hold the HTTPS daemons down (issue 14, item 3).
//!
//! A real grid (online CA, L-Bone, metadata manager; no depots). At each
//! daemon at once, an attacker binds to 127.0.0.2 (without credentials at
//! the online CA; with a VO member's proxy at the L-Bone and the metadata
//! manager, which refuse an anonymous request before reading its body) and
//! opens as many TLS connections as a daemon has slots (and a few more),
//! then trickles one byte a second on each: a third stop half-way through
//! the TLS handshake, a third trickle a request header, a third send a
//! header announcing a body and trickle the body. Meanwhile a client from
//! 127.0.0.1 must be answered within 1 second at each daemon, the
//! attacker's connections beyond its per-address share must be closed at
//! once, and every trickling connection must be closed by the handshake,
//! header or body deadline (the defaults of `ibp_https::ServeOptions`, which
//! the three daemons use).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ibp_auth::{ProxyCredential, TrustStore};
use ibp_grid::grid::{Grid, GridOptions};
use ibp_https::{BaseUrl, Client, ServeOptions};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// The attacker's address (all of 127/8 is on `lo`).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Connections the attacker opens beyond a daemon's `max_connections`.
const EXTRA: usize = 8;
/// Time the legitimate client may take for one answer.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// A connection closed this soon after connecting was refused outright.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);
/// Slack on top of a deadline (a loaded machine, 1 s trickle steps).
const SLACK: Duration = Duration::from_secs(4);
/// Bound on the whole wait for the attacker's connections to be closed.
const CLOSE_BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trickle {
    /// Part of a ClientHello, then the rest a byte a second.
    Handshake,
    /// A finished handshake, then a request header a byte a second.
    Header,
    /// A finished handshake and header (`Content-Length: 4096`), then the
    /// body a byte a second.
    Body,
}

#[derive(Debug)]
struct Outcome {
    kind: Trickle,
    /// Closed by the daemon this long after the connection was made.
    closed_after: Option<Duration>,
    /// Time from the start of the trickle (the end of the handshake, or of
    /// the header) to the close.
    trickled_for: Option<Duration>,
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// A request line for the header and body trickles (a route whose
    /// handler reads the body).
    post_path: &'static str,
    /// The attacker's TLS set-up: anonymous where the route reads its
    /// body before asking for a credential (the online CA's login); a VO
    /// member's proxy where an anonymous request is refused before its
    /// body is read (L-Bone, metadata manager), so that its body trickle
    /// meets the body deadline rather than a 401.
    attacker: Arc<rustls::ClientConfig>,
}

fn tls_config(trust: &TrustStore, cred: Option<&ProxyCredential>) -> Arc<rustls::ClientConfig> {
    Arc::new(ibp_auth::tls::client_config(trust, cred).expect("client TLS configuration"))
}

fn socket_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Writes whatever rustls has to send.
async fn flush_tls(
    sock: &mut TcpStream,
    tls: &mut rustls::ClientConnection,
) -> std::io::Result<()> {
    while tls.wants_write() {
        let mut out = Vec::new();
        tls.write_tls(&mut out)?;
        sock.write_all(&out).await?;
    }
    Ok(())
}

async fn handshake(
    sock: &mut TcpStream,
    tls: &mut rustls::ClientConnection,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flush_tls(sock, tls).await?;
        if !tls.is_handshaking() {
            return Ok(());
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        tls.read_tls(&mut &buf[..n])?;
        tls.process_new_packets()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    }
}

/// Sends `bytes` one a second (as TLS records when `tls` is given) until
/// the daemon closes the connection; returns when it did, or `None` if it
/// never did within [`CLOSE_BOUND`].
async fn trickle(
    sock: &mut TcpStream,
    mut tls: Option<&mut rustls::ClientConnection>,
    bytes: &[u8],
) -> Option<Instant> {
    let end = Instant::now() + CLOSE_BOUND;
    let mut buf = vec![0u8; 16 * 1024];
    let mut next = bytes.iter().cycle();
    while Instant::now() < end {
        let b = *next.next().unwrap_or(&b' ');
        let sent = match tls.as_deref_mut() {
            Some(t) => {
                let _ = std::io::Write::write_all(&mut t.writer(), &[b]);
                flush_tls(sock, t).await
            }
            None => sock.write_all(&[b]).await,
        };
        if sent.is_err() {
            return Some(Instant::now());
        }
        let tick = Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(tick, sock.read(&mut buf)).await {
                Err(_) => break,                                       // a second without news
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()), // closed
                Ok(Ok(_)) => continue, // an answer (400 and the like); the close follows
            }
        }
    }
    None
}

async fn attack_one(
    target: SocketAddr,
    post_path: &'static str,
    kind: Trickle,
    tls_cfg: Arc<rustls::ClientConfig>,
    settled: Arc<tokio::sync::Semaphore>,
) -> Outcome {
    let mut out = Outcome {
        kind,
        closed_after: None,
        trickled_for: None,
    };
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((ATTACKER, 0)))
        .expect("bind to 127.0.0.2");
    let t0 = Instant::now();
    let mut sock = match socket.connect(target).await {
        Ok(s) => s,
        Err(e) => panic!("connect to {target} from {ATTACKER}: {e}"),
    };
    let name = ServerName::IpAddress(target.ip().into());
    let mut tls = rustls::ClientConnection::new(tls_cfg, name).expect("client connection");
    // Settled: set up (or refused), or waiting in the daemon's queue.
    let mut settle = Some(());
    let mark_settled = |s: &mut Option<()>| {
        if s.take().is_some() {
            settled.add_permits(1);
        }
    };
    let closed_at = match kind {
        Trickle::Handshake => {
            let mut hello = Vec::new();
            let _ = tls.write_tls(&mut hello);
            let half = hello.len() / 2;
            let closed = sock.write_all(&hello[..half]).await.is_err();
            mark_settled(&mut settle);
            if closed {
                Some(Instant::now())
            } else {
                let start = Instant::now();
                let closed = trickle(&mut sock, None, &hello[half..]).await;
                out.trickled_for = closed.map(|c| c - start);
                closed
            }
        }
        Trickle::Header | Trickle::Body => {
            let setup =
                tokio::time::timeout(Duration::from_secs(3), handshake(&mut sock, &mut tls));
            match setup.await {
                Ok(Err(_)) => {
                    // Refused: closed during the handshake.
                    mark_settled(&mut settle);
                    Some(Instant::now())
                }
                Err(_) => {
                    // Queued by the daemon (no slot): wait for the handshake
                    // to finish, then trickle like the others.
                    mark_settled(&mut settle);
                    match tokio::time::timeout(CLOSE_BOUND, handshake(&mut sock, &mut tls)).await {
                        Ok(Ok(())) => {
                            trickle_request(&mut sock, &mut tls, kind, post_path, &mut out).await
                        }
                        Ok(Err(_)) => Some(Instant::now()),
                        Err(_) => None,
                    }
                }
                Ok(Ok(())) => {
                    mark_settled(&mut settle);
                    trickle_request(&mut sock, &mut tls, kind, post_path, &mut out).await
                }
            }
        }
    };
    out.closed_after = closed_at.map(|c| c - t0);
    out
}

async fn trickle_request(
    sock: &mut TcpStream,
    tls: &mut rustls::ClientConnection,
    kind: Trickle,
    post_path: &str,
    out: &mut Outcome,
) -> Option<Instant> {
    let header = format!(
        "POST {post_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    );
    let body = match kind {
        Trickle::Header => header.into_bytes(),
        _ => {
            let _ = std::io::Write::write_all(&mut tls.writer(), header.as_bytes());
            if flush_tls(sock, tls).await.is_err() {
                return Some(Instant::now());
            }
            b"{\"vo\": \"vo1\", \"padding\": \"".repeat(200)
        }
    };
    let start = Instant::now();
    let closed = trickle(sock, Some(tls), &body).await;
    out.trickled_for = closed.map(|c| c - start);
    closed
}

/// One legitimate request from 127.0.0.1; returns how long the answer took.
async fn legitimate(client: &Client, path: &str) -> Duration {
    let t = Instant::now();
    let r = client
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from 127.0.0.1 during the attack: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.error_message(200));
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_trickling_bytes_cannot_hold_the_https_daemons() {
    let grid = tokio::task::spawn_blocking(|| {
        Grid::start(GridOptions {
            depots: 0,
            users: vec!["alice".into()],
            admins: vec![],
            ..GridOptions::default()
        })
        .expect("the grid starts")
    })
    .await
    .expect("grid start task");
    let trust = TrustStore::load(&grid.trust_dir).expect("the grid's trust directory");
    let alice = ProxyCredential::load(&grid.proxy("alice")).expect("alice's proxy");
    let anonymous = tls_config(&trust, None);
    let member = tls_config(&trust, Some(&alice));
    let defaults = ServeOptions::default();
    let per_address = defaults.max_connections_per_address;
    let total = defaults.max_connections + EXTRA;

    let targets = [
        Target {
            name: "online CA",
            addr: socket_addr(&grid.ca_url),
            post_path: "/v1/login",
            attacker: anonymous.clone(),
        },
        Target {
            name: "L-Bone",
            addr: socket_addr(&grid.lbone_url),
            post_path: "/v1/query",
            attacker: member.clone(),
        },
        Target {
            name: "metadata manager",
            addr: socket_addr(&grid.mdm_url),
            post_path: "/v1/put",
            attacker: member.clone(),
        },
    ];

    // The attack: every daemon at once.
    let settled = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for t in &targets {
        for i in 0..total {
            let kind = [Trickle::Handshake, Trickle::Header, Trickle::Body][i % 3];
            tasks.push((
                t.name,
                tokio::spawn(attack_one(
                    t.addr,
                    t.post_path,
                    kind,
                    t.attacker.clone(),
                    settled.clone(),
                )),
            ));
        }
    }
    let all = u32::try_from(tasks.len()).expect("few tasks");
    let waited = tokio::time::timeout(Duration::from_secs(10), settled.acquire_many(all)).await;
    assert!(
        waited.is_ok(),
        "the attacker's connections did not settle within 10 s"
    );

    // Meanwhile, clients from 127.0.0.1 are served at once.
    let client = |url: &str, cred: Option<&ProxyCredential>| {
        let mut c = Client::new(
            BaseUrl::parse(url).expect("URL"),
            (*tls_config(&trust, cred)).clone(),
            cred.is_some(),
        );
        c.connect_timeout = SERVED_WITHIN * 3;
        c.total_timeout = SERVED_WITHIN * 3;
        c
    };
    let checks = [
        ("online CA", client(&grid.ca_url, None), "/v1/trust"),
        ("L-Bone", client(&grid.lbone_url, None), "/status.json"),
        (
            "metadata manager",
            client(&grid.mdm_url, Some(&alice)),
            "/v1/whoami",
        ),
    ];
    for round in 0..3 {
        for (name, c, path) in &checks {
            let took = legitimate(c, path).await;
            eprintln!("round {round}: {name} answered GET {path} in {took:?} during the attack");
            assert!(
                took < SERVED_WITHIN,
                "{name}: GET {path} from 127.0.0.1 took {took:?} while 127.0.0.2 trickled"
            );
        }
    }

    // Every connection of the attacker is closed: the extras at once, the
    // others by their deadline.
    let mut outcomes: Vec<(&str, Outcome)> = Vec::new();
    for (name, task) in tasks {
        outcomes.push((name, task.await.expect("attack task")));
    }
    for t in &targets {
        let mine: Vec<&Outcome> = outcomes
            .iter()
            .filter(|(n, _)| *n == t.name)
            .map(|(_, o)| o)
            .collect();
        let refused = mine
            .iter()
            .filter(|o| o.closed_after.is_some_and(|c| c < REFUSED_WITHIN))
            .count();
        eprintln!(
            "{}: {} connections from {ATTACKER}, {refused} closed within {REFUSED_WITHIN:?}",
            t.name,
            mine.len()
        );
        assert_eq!(
            refused,
            total - per_address,
            "{}: all but {per_address} connections from one address are closed at once",
            t.name
        );
        for o in &mine {
            let Some(closed) = o.closed_after else {
                panic!("{}: a {:?} trickle was never closed: {o:?}", t.name, o.kind);
            };
            if closed < REFUSED_WITHIN {
                continue;
            }
            let deadline = match o.kind {
                Trickle::Handshake => defaults.handshake_timeout,
                Trickle::Header => defaults.header_timeout,
                Trickle::Body => defaults.body_timeout,
            };
            let trickled = o.trickled_for.unwrap_or(closed);
            assert!(
                trickled <= deadline + SLACK,
                "{}: a {:?} trickle held its connection {trickled:?} (deadline {deadline:?}): {o:?}",
                t.name,
                o.kind
            );
            // Closed by that deadline, not by something else before it.
            assert!(
                trickled + Duration::from_secs(2) >= deadline,
                "{}: a {:?} trickle was closed after {trickled:?}, before its deadline {deadline:?}",
                t.name,
                o.kind
            );
        }
        for kind in [Trickle::Handshake, Trickle::Header, Trickle::Body] {
            let held: Vec<Duration> = mine
                .iter()
                .filter(|o| o.kind == kind && o.closed_after.is_some_and(|c| c >= REFUSED_WITHIN))
                .filter_map(|o| o.trickled_for)
                .collect();
            eprintln!(
                "{}: {} {kind:?} trickles held, closed after {:?} to {:?}",
                t.name,
                held.len(),
                held.iter().min(),
                held.iter().max()
            );
        }
    }
    drop(grid);
}
