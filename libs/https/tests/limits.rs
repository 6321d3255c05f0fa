//! The limits that keep one slow or greedy client from holding the server:
//! connections per address, the header deadline, the body deadline with
//! its minimum rate; and the client's own cap on its connections. Short
//! deadlines here; `tests/slow_clients.rs` at the workspace root attacks
//! the real daemons with the defaults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use ibp_auth::tls::client_config;
use ibp_https::{serve_with, BaseUrl, Client, ServeOptions};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod common;
use common::{pki, Pki};

const OTHER: [u8; 4] = [127, 0, 0, 2];

fn router() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/len",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        // Refuses without reading the body, as a busy server does.
        .route(
            "/refuse",
            post(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy") }),
        )
}

struct Server {
    addr: SocketAddr,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(pki: &Pki, opts: ServeOptions) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            listener,
            Arc::new(pki.server.clone()),
            router(),
            token.clone(),
            opts,
        ));
        Server { addr, token, task }
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn client(pki: &Pki, addr: SocketAddr) -> Client {
    let url = BaseUrl::parse(&format!("https://localhost:{}", addr.port())).unwrap();
    let mut c = Client::new(url, client_config(&pki.trust, None).unwrap(), false);
    c.total_timeout = Duration::from_secs(10);
    c
}

async fn tcp_from(ip: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((ip, 0))).unwrap();
    s.connect(addr).await.unwrap()
}

async fn tls_from(
    pki: &Pki,
    ip: [u8; 4],
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tcp_from(ip, addr).await;
    let cfg = client_config(&pki.trust, None).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes (within `bound`); returns what it sent
/// and when it closed.
async fn until_closed<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    bound: Duration,
) -> (String, Instant) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(end, r.read(&mut buf)).await {
            Err(_) => panic!(
                "not closed within {bound:?}; got {:?}",
                String::from_utf8_lossy(&all)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&all).into_owned(), Instant::now())
            }
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_per_address_share_are_closed_at_once() {
    let pki = pki();
    let opts = ServeOptions {
        max_connections: 8,
        max_connections_per_address: 2,
        ..ServeOptions::default()
    };
    let server = Server::start(&pki, opts).await;
    // Two silent connections hold 127.0.0.2's share (for the 5 s handshake
    // deadline); a third is closed before any handshake.
    let _a = tcp_from(OTHER, server.addr).await;
    let _b = tcp_from(OTHER, server.addr).await;
    let mut third = tcp_from(OTHER, server.addr).await;
    let t = Instant::now();
    let (got, closed) = until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(closed - t < Duration::from_secs(1), "{:?}", closed - t);
    // Another address is served at once.
    let t = Instant::now();
    let r = client(&pki, server.addr).get("/ok").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_header_is_cut_at_the_header_deadline() {
    let pki = pki();
    let opts = ServeOptions {
        header_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    };
    let server = Server::start(&pki, opts).await;
    let mut tls = tls_from(&pki, OTHER, server.addr).await;
    let t = Instant::now();
    tls.write_all(b"GET /ok HTTP/1.1\r\nHo").await.unwrap();
    tls.flush().await.unwrap();
    let (_, closed) = until_closed(&mut tls, Duration::from_secs(5)).await;
    let held = closed - t;
    assert!(
        held >= Duration::from_millis(400) && held < Duration::from_secs(3),
        "{held:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_cut_and_a_fast_one_is_not() {
    let pki = pki();
    let opts = ServeOptions {
        body_timeout: Duration::from_millis(500),
        body_min_rate: 1000,
        ..ServeOptions::default()
    };
    let server = Server::start(&pki, opts).await;
    let mut tls = tls_from(&pki, OTHER, server.addr).await;
    tls.write_all(b"POST /len HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nx")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let t = Instant::now();
    let (answer, closed) = until_closed(&mut tls, Duration::from_secs(5)).await;
    let held = closed - t;
    // 500 ms, plus 1 ms for the one byte.
    assert!(
        held >= Duration::from_millis(400) && held < Duration::from_secs(3),
        "{held:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("request body too slow"), "{answer}");

    // 256 KiB at loopback speed: far above the minimum rate.
    let big = serde_json::Value::String("y".repeat(256 * 1024));
    let r = client(&pki, server.addr)
        .post_json("/len", &big)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message(200));
    server.stop().await;
}

/// A response sent before the body was read still reaches a client that
/// writes its whole body before reading (as a busy client's HTTP stack may
/// do): the server closes its side, then drains what the client is still
/// sending, so the client's writes succeed and the response is there to
/// read. Closing with the body unread would answer the client's next
/// segments with a reset, which fails its write ("broken pipe") and, on
/// most stacks, discards the response (the metadata manager's CI saw it
/// with a 630 KiB exNode refused before it was read).
#[tokio::test]
async fn a_refusal_before_a_large_body_is_read_reaches_a_client_still_writing() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let body = vec![b'x'; 8 << 20];
    let mut tls = tls_from(&pki, OTHER, server.addr).await;
    tls.write_all(
        format!(
            "POST /refuse HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), tls.write_all(&body))
        .await
        .expect("the server drains the body")
        .expect("the body is written without a reset");
    let (answer, _) = until_closed(&mut tls, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("busy"), "{answer}");
    server.stop().await;
}

/// The drain is bounded: a client that keeps sending past the drain's
/// limit after a refusal is cut off.
#[tokio::test]
async fn the_drain_after_a_refusal_is_bounded() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let mut tls = tls_from(&pki, OTHER, server.addr).await;
    tls.write_all(
        b"POST /refuse HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0u64;
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if tls.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len() as u64;
        }
    })
    .await;
    assert!(cut.is_ok(), "still draining after {sent} bytes");
    assert!(
        sent <= ibp_https::server::LINGER_MAX_BYTES + (16 << 20),
        "{sent} bytes drained"
    );
    server.stop().await;
}

/// A response sent before the request body was read says `Connection:
/// close` and the server closes: a keep-alive client that kept the
/// connection would send its next request into a closing socket (seen as
/// "broken pipe" by the metadata manager's busy refusals). A response to a
/// request whose body was read keeps the connection.
#[tokio::test]
async fn a_response_before_the_body_is_read_says_connection_close() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let mut tls = tls_from(&pki, OTHER, server.addr).await;
    tls.write_all(
        b"POST /refuse HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\
          Content-Length: 100000\r\n\r\nxyz",
    )
    .await
    .unwrap();
    let (answer, _) = until_closed(&mut tls, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );

    // The body read: kept alive, no `Connection: close`.
    let mut tls = tls_from(&pki, OTHER, server.addr).await;
    tls.write_all(
        b"POST /len HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\
          Content-Length: 3\r\n\r\nxyz",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"3") {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    server.stop().await;
}

/// A client's burst of requests stays within its connection cap, so a
/// server's per-address share does not refuse it.
#[tokio::test]
async fn a_burst_from_one_client_queues_within_its_connection_cap() {
    let pki = pki();
    let opts = ServeOptions {
        max_connections_per_address: 3,
        ..ServeOptions::default()
    };
    let server = Server::start(&pki, opts).await;
    let c = client(&pki, server.addr)
        .with_max_connections(3)
        .with_keep_alive(3);
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/ok").await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, 200);
    }
    server.stop().await;
}
