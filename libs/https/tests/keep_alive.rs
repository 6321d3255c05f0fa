//! Keep-alive between `Client` and `serve_with`: requests share connections,
//! concurrent requests each get one, connections the server closed (idle
//! timeout, `Connection: close`, connection age) do not fail the next
//! request, and keep-alive 0 opens a connection per request.
//!
//! A connection is recognised by the client's TCP port, which every handler
//! returns (`RemoteAddr`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::CONNECTION;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ibp_auth::tls::client_config;
use ibp_https::{serve_with, BaseUrl, Client, RemoteAddr, ServeOptions};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod common;
use common::{pki, Pki};

/// The client's port and the `Connection` header it sent.
async fn port(Extension(r): Extension<RemoteAddr>, headers: HeaderMap) -> Json<Value> {
    let connection = headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Json(json!({ "port": r.0.port(), "connection": connection }))
}

async fn slow_port(Extension(r): Extension<RemoteAddr>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Json(json!({ "port": r.0.port() }))
}

async fn echo(Extension(r): Extension<RemoteAddr>, Json(v): Json<Value>) -> Json<Value> {
    Json(json!({ "port": r.0.port(), "echo": v }))
}

async fn closing(Extension(r): Extension<RemoteAddr>) -> impl IntoResponse {
    ([(CONNECTION, "close")], Json(json!({ "port": r.0.port() })))
}

/// Refuses without reading the request body, as a busy server does.
async fn refuse_unread(Extension(r): Extension<RemoteAddr>) -> impl IntoResponse {
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "port": r.0.port() })),
    )
}

fn router() -> Router {
    Router::new()
        .route("/refuse", post(refuse_unread))
        .route("/port", get(port))
        .route("/slow", get(slow_port))
        .route("/echo", post(echo))
        .route("/closing", get(closing))
}

struct Server {
    addr: std::net::SocketAddr,
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

fn client(pki: &Pki, addr: std::net::SocketAddr, keep_alive: usize) -> Client {
    let url = BaseUrl::parse(&format!("https://localhost:{}", addr.port())).unwrap();
    let tls = client_config(&pki.trust, Some(&pki.user)).unwrap();
    let mut c = Client::new(url, tls, true).with_keep_alive(keep_alive);
    c.total_timeout = Duration::from_secs(10);
    c
}

async fn port_of(c: &Client, path: &str) -> u16 {
    let r = c.get(path).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message(200));
    r.json::<Value>().unwrap()["port"].as_u64().unwrap() as u16
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let c = client(&pki, server.addr, 4);
    let mut ports = HashSet::new();
    for i in 0..20 {
        // A clone shares the kept connection.
        let c = c.clone();
        let r = c.get("/port").await.unwrap();
        let v: Value = r.json().unwrap();
        assert_eq!(v["connection"], "keep-alive");
        ports.insert(v["port"].as_u64().unwrap());
        let r = c.post_json("/echo", &json!({ "i": i })).await.unwrap();
        let v: Value = r.json().unwrap();
        assert_eq!(v["echo"]["i"], i);
        ports.insert(v["port"].as_u64().unwrap());
    }
    assert_eq!(ports.len(), 1, "{ports:?}");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_requests_each_take_a_connection() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let c = client(&pki, server.addr, 8);
    let round = |c: Client| async move {
        let t = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { port_of(&c, "/slow").await })
            })
            .collect();
        let mut ports = HashSet::new();
        for t in tasks {
            ports.insert(t.await.unwrap());
        }
        // In parallel, not one after the other on a shared connection.
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        ports
    };
    let first = round(c.clone()).await;
    assert_eq!(first.len(), 4, "{first:?}");
    let second = round(c.clone()).await;
    assert_eq!(second, first);
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_closed_by_the_server_are_replaced() {
    let pki = pki();
    let opts = ServeOptions {
        header_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = Server::start(&pki, opts).await;
    let c = client(&pki, server.addr, 4);
    let a = port_of(&c, "/port").await;
    assert_eq!(port_of(&c, "/port").await, a);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let b = port_of(&c, "/port").await;
    assert_ne!(a, b, "the server should have closed the idle connection");
    let r = c.post_json("/echo", &json!(1)).await.unwrap();
    assert_eq!(r.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn connection_close_from_the_server_is_honoured() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let c = client(&pki, server.addr, 4);
    let mut ports = HashSet::new();
    for _ in 0..3 {
        ports.insert(port_of(&c, "/closing").await);
    }
    assert_eq!(ports.len(), 3, "{ports:?}");
    server.stop().await;
}

/// A response sent before the request body was read closes the connection
/// and says so (`Connection: close`): the client does not keep it, so the
/// next request neither fails on it ("broken pipe") nor waits for it.
#[tokio::test]
async fn a_refusal_before_the_body_is_read_closes_the_connection() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let c = client(&pki, server.addr, 4);
    let big = json!({ "pad": "x".repeat(1 << 20) });
    for i in 0..10 {
        let r = c.post_json("/refuse", &big).await.unwrap();
        assert_eq!(r.status, 503);
        let refused_on = r.json::<Value>().unwrap()["port"].as_u64().unwrap();
        // The next request, at once: on a new connection.
        let r = c.post_json("/echo", &json!({ "i": i })).await.unwrap();
        let v: Value = r.json().unwrap();
        assert_eq!(v["echo"]["i"], i);
        assert_ne!(v["port"], refused_on, "connection reused after a refusal");
    }
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_zero_opens_a_connection_per_request() {
    let pki = pki();
    let server = Server::start(&pki, ServeOptions::default()).await;
    let c = client(&pki, server.addr, 0);
    let mut ports = HashSet::new();
    for _ in 0..3 {
        let r = c.get("/port").await.unwrap();
        let v: Value = r.json().unwrap();
        assert_eq!(v["connection"], "close");
        ports.insert(v["port"].as_u64().unwrap());
    }
    assert_eq!(ports.len(), 3, "{ports:?}");
    server.stop().await;
}

/// Reaching `connection_timeout` in the middle of a request lets that
/// request finish; the connection is closed after it.
#[tokio::test]
async fn connection_age_limit_finishes_the_request_in_flight() {
    let pki = pki();
    let opts = ServeOptions {
        connection_timeout: Duration::from_millis(400),
        ..ServeOptions::default()
    };
    let server = Server::start(&pki, opts).await;
    let c = client(&pki, server.addr, 4);
    let a = port_of(&c, "/port").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still running (300 ms) at the connection's 400 ms deadline.
    assert_eq!(port_of(&c, "/slow").await, a);
    let b = port_of(&c, "/port").await;
    assert_ne!(a, b);
    server.stop().await;
}
