//! The server and the client against each other on loopback: the peer chain
//! reaches handlers, handshake timeouts free connection slots, shutdown lets
//! the request in flight finish and then stops accepting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Json, Router};
use ibp_auth::tls::client_config;
use ibp_https::{serve_with, BaseUrl, Client, HttpError, PeerChain, RemoteAddr, ServeOptions};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod common;
use common::{pki, Pki};

async fn peer(
    Extension(p): Extension<PeerChain>,
    Extension(r): Extension<RemoteAddr>,
) -> Json<Value> {
    Json(json!({
        "chain_len": p.0.map(|c| c.len()),
        "loopback": r.0.ip().is_loopback(),
    }))
}

async fn slow() -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(400)).await;
    Json(json!({ "done": true }))
}

fn router() -> Router {
    Router::new()
        .route("/peer", get(peer))
        .route("/slow", get(slow))
}

async fn start(
    pki: &Pki,
    opts: ServeOptions,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
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
    (addr, token, task)
}

fn client(pki: &Pki, addr: std::net::SocketAddr, with_cert: bool) -> Client {
    let url = BaseUrl::parse(&format!("https://localhost:{}", addr.port())).unwrap();
    let cred = with_cert.then_some(&pki.user);
    let tls = client_config(&pki.trust, cred).unwrap();
    let mut c = Client::new(url, tls, with_cert);
    c.total_timeout = Duration::from_secs(10);
    c
}

#[tokio::test]
async fn peer_chain_reaches_handlers() {
    let pki = pki();
    let (addr, token, task) = start(&pki, ServeOptions::default()).await;
    let anon = client(&pki, addr, false).get("/peer").await.unwrap();
    assert_eq!(anon.status, 200);
    let v: Value = anon.json().unwrap();
    assert_eq!(v["chain_len"], Value::Null);
    assert_eq!(v["loopback"], true);
    let with = client(&pki, addr, true).get("/peer").await.unwrap();
    let v: Value = with.json().unwrap();
    // The proxy and the user's certificate.
    assert_eq!(v["chain_len"], 2);
    let missing = client(&pki, addr, false).get("/nothing").await.unwrap();
    assert_eq!(missing.status, 404);
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn silent_connections_time_out_and_free_their_slot() {
    let pki = pki();
    let opts = ServeOptions {
        max_connections: 1,
        handshake_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let (addr, token, task) = start(&pki, opts).await;
    // Takes the only slot and never starts a handshake.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let r = client(&pki, addr, true).get("/peer").await.unwrap();
    assert_eq!(r.status, 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let pki = pki();
    let (addr, token, task) = start(&pki, ServeOptions::default()).await;
    let c = client(&pki, addr, true);
    let in_flight = tokio::spawn(async move { c.get("/slow").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json::<Value>().unwrap()["done"], true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    // The listener is gone.
    let after = client(&pki, addr, false).get("/peer").await;
    assert!(matches!(after, Err(HttpError::Connect { .. })), "{after:?}");
}
