//! STATUS before AUTH on the secure port: a peer whose certificate chain
//! verified in the TLS handshake (a plain service certificate such as the
//! L-Bone's, or a user's proxy) may ask STATUS INQ (`2 4 <rid> 1 <pw> <to>`)
//! and RES (`2 4 3 <to>`) without a depot grant; every other command still
//! needs AUTH, and a peer without a client certificate gets nothing at all.

mod common;

use std::time::Duration;

use common::Pki;
use ibp_depot_client::{ClientError, SecureClient};
use ibp_proto::{Expect, IbpError, Reliability, Reply, Rid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tls_addr(d: &common::DepotProc) -> String {
    d.tls_addr.expect("TLS port").to_string()
}

async fn connect(
    pki: &Pki,
    depot: &common::DepotProc,
    cred: &ibp_auth::ProxyCredential,
) -> SecureClient {
    let mut c = SecureClient::connect(&tls_addr(depot), "127.0.0.1", &pki.client_trust, cred)
        .await
        .unwrap();
    c.set_timeout(Duration::from_secs(10));
    c
}

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (IbpError, String) {
    match r {
        Err(ClientError::Refused { error, reason }) => (error, reason),
        Err(ClientError::Ibp(e)) => (e, String::new()),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn service_certificate_gets_status_before_auth() {
    let pki = Pki::new();
    let depot = pki.depot("").spawn();
    let lbone = pki.service("lbone.example.org");
    let mut c = connect(&pki, &depot, &lbone).await;
    // RES: the depot's resources, as the legacy `1 4 3` answers.
    assert_eq!(
        c.raw("2 4 3 30\n", Expect::Resources).await.unwrap(),
        Reply::Resources(vec![Rid(0)])
    );
    // INQ on the same connection: the tagged summary of resource 0.
    let st = c.status(Rid(0)).await.unwrap();
    assert!(st.total_available > 0, "{st:?}");
    assert_eq!(st.total_used, 0);
    // An unknown resource is an error, as on the legacy port, and closes
    // the connection.
    let (e, _) = refused(c.raw("2 4 9 1 ibp 30\n", Expect::Payload).await);
    assert_eq!(e, IbpError::ResourceUnavailable);
    assert!(c.status(Rid(0)).await.is_err());

    // A user's proxy (VO attributes, no grant yet) may ask too.
    let alice = pki.user("alice");
    let mut u = connect(&pki, &depot, &alice).await;
    assert_eq!(
        u.raw("2 4 3 30\n", Expect::Resources).await.unwrap(),
        Reply::Resources(vec![Rid(0)])
    );
    assert!(u.status(Rid(0)).await.is_ok());
    // ... and after AUTH as before.
    u.auth(&pki.grant(&depot, &alice, "vo1:alice"))
        .await
        .unwrap();
    let caps = u
        .allocate(Rid(0), Reliability::Hard, 600, 1000)
        .await
        .unwrap();
    assert_eq!(u.probe(&caps.manage).await.unwrap().max_size, 1000);
    assert_eq!(
        u.raw("2 4 3 30\n", Expect::Resources).await.unwrap(),
        Reply::Resources(vec![Rid(0)])
    );
    // The service's next INQ (a new connection: the error reply above
    // closed the first) sees the allocation.
    let mut c = connect(&pki, &depot, &lbone).await;
    assert_eq!(c.status(Rid(0)).await.unwrap().total_used, 1000);
}

#[tokio::test]
async fn allocate_before_auth_is_still_refused_after_status() {
    let pki = Pki::new();
    let depot = pki.depot("").spawn();
    for cred in [pki.service("lbone.example.org"), pki.user("alice")] {
        let mut c = connect(&pki, &depot, &cred).await;
        assert!(c.status(Rid(0)).await.is_ok());
        let (e, reason) = refused(c.allocate(Rid(0), Reliability::Hard, 600, 1024).await);
        assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
        assert!(reason.contains("before AUTH"), "{reason}");
        // The refusal closed the connection.
        assert!(c.status(Rid(0)).await.is_err());
        // MANAGE and COPY-free commands are no exception either.
        let mut c = connect(&pki, &depot, &cred).await;
        let line = "2 9 0#IBP-abc 1 40 1 0 0 0 300\n";
        let (e, _) = refused(c.raw(line, Expect::Probe).await);
        assert_eq!(e, IbpError::CapAccessDenied);
        // CRYPTO needs a session too.
        let mut c = connect(&pki, &depot, &cred).await;
        let (e, reason) = refused(c.open_crypto().await.map(drop));
        assert_eq!(e, IbpError::CapAccessDenied, "{reason}");
    }
    // Other STATUS forms are refused on the secure port, session or not.
    let mut c = connect(&pki, &depot, &pki.service("lbone.example.org")).await;
    let (e, _) = refused(c.raw("2 4 0 2 pw 30\n", Expect::Ok).await);
    assert_eq!(e, IbpError::InvalidCommand);
    let mut c = connect(&pki, &depot, &pki.service("lbone.example.org")).await;
    let (e, _) = refused(c.raw("2 4 5 30\n", Expect::Payload).await);
    assert_eq!(e, IbpError::InvalidCommand);
    // The depot serves on.
    let mut c = connect(&pki, &depot, &pki.user("bob")).await;
    assert!(c.status(Rid(0)).await.is_ok());
}

/// Connects with `cfg`, sends `line`, and expects no reply: the TLS 1.3
/// handshake fails at the depot (the client may finish its side of it
/// before the depot refuses; then its first read fails).
async fn gets_nothing(
    to: std::net::SocketAddr,
    cfg: &std::sync::Arc<rustls::ClientConfig>,
    line: &str,
    who: &str,
) {
    let Ok(mut tls) = common::tls_from("127.0.0.1".parse().unwrap(), to, cfg).await else {
        return;
    };
    let _ = tls.write_all(line.as_bytes()).await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{who} got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => panic!("the depot kept the connection of {who} open"),
    }
}

/// A client that presents no certificate, or one the depot cannot verify
/// as a client certificate, never gets a reply.
#[tokio::test]
async fn peer_without_client_certificate_never_gets_past_the_handshake() {
    let pki = Pki::new();
    let depot = pki.depot("").spawn();
    let to = depot.tls_addr.unwrap();
    let none = pki.tls_config(None);
    for line in ["2 4 3 30\n", "2 4 0 1 ibp 30\n"] {
        gets_nothing(to, &none, line, "a peer without a certificate").await;
    }
    // A certificate from another CA.
    let other = ibp_auth::pki::Authority::new_ca("Elsewhere", "Other CA", 30).unwrap();
    let stranger = other.issue_user("Elsewhere", "mallory", 3600).unwrap();
    let cred = ibp_auth::ProxyCredential {
        chain: vec![stranger.cert_der],
        key_pkcs8: stranger.key_pkcs8,
    };
    let cfg = pki.tls_config(Some(&cred));
    gets_nothing(to, &cfg, "2 4 3 30\n", "a certificate of an untrusted CA").await;
    // A server certificate of the depot's own CA without the clientAuth
    // extended key usage (what `issue_server` mints): a service that polls
    // depots needs serverAuth and clientAuth.
    let server_only = pki.ca.issue_server(&["lbone.example.org"], 30).unwrap();
    let cred = ibp_auth::ProxyCredential {
        chain: vec![server_only.cert_der],
        key_pkcs8: server_only.key_pkcs8,
    };
    let cfg = pki.tls_config(Some(&cred));
    gets_nothing(to, &cfg, "2 4 3 30\n", "a serverAuth-only certificate").await;
    // Everyone else is served.
    let mut c = connect(&pki, &depot, &pki.service("lbone.example.org")).await;
    assert!(c.status(Rid(0)).await.is_ok());
}
