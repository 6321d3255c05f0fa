//! SIGHUP at a depot: its VO policy and quotas, its certificate and its
//! trust directory are read again without a restart. A secure session
//! opened before the reload stays open and its next request sees the new
//! policy; new connections get the new certificate; a configuration that
//! does not load changes nothing and says so in the log. The metadata
//! manager and the L-Bone serve a renewed certificate after SIGHUP.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibp_depot_client::SecureClient;
use ibp_grid::grid::{Daemon, Grid, GridOptions};

const VO: &str = "[[vo]]\nname = \"vo1\"\n";

fn set_config(g: &Grid, i: usize, f: impl FnOnce(String) -> String) {
    let path = &g.depots[i].config;
    let text = std::fs::read_to_string(path).expect("the depot's configuration");
    let changed = f(text.clone());
    assert_ne!(changed, text, "the configuration changes");
    std::fs::write(path, changed).expect("write the configuration");
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_depot_reloads_its_policy_and_certificate_on_sighup_keeping_sessions() {
    let _t = Timer::start("a_depot_reloads_its_policy_and_certificate_on_sighup_keeping_sessions");
    let g = start(GridOptions {
        depots: 1,
        ..GridOptions::default()
    });
    keys_init(&g, "alice");
    let env: HashMap<String, String> = g.env("alice").into_iter().collect();
    let trust = lors::credentials::TrustSource::Dir(env["LORS_TRUST_DIR"].clone().into())
        .load()
        .expect("the trust directory");
    let cred =
        ibp_auth::ProxyCredential::load(Path::new(&env["X509_USER_PROXY"])).expect("alice's proxy");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let tls_addr = g.depots[0].tls_addr.clone().expect("a TLS port");

    // A secure session, authenticated before any reload.
    let offered = rt
        .block_on(lors::depots::query(
            &g.lbone_url,
            &trust,
            &cred,
            &lors::depots::DepotQuery {
                vo: None,
                count: Some(1),
                size: 1 << 20,
                duration: 3600,
                reliability: Default::default(),
                near: None,
            },
        ))
        .expect("a depot and its grant");
    let grant = offered[0].grant.clone();
    let mut session = rt.block_on(async {
        let mut c = SecureClient::connect(&tls_addr, "localhost", &trust, &cred)
            .await
            .expect("connect");
        c.auth(&grant).await.expect("AUTH");
        c
    });
    let q = rt.block_on(session.quota()).expect("QUOTA");
    assert_eq!(q.user_limit, None, "no user quota yet: {q:?}");

    // A user quota of 1 MiB, put in force by SIGHUP: the open session's
    // next request sees it.
    set_config(&g, 0, |t| {
        t.replacen(VO, &format!("{VO}user_quota = \"1MiB\"\n"), 1)
    });
    g.reload_depot(0).expect("SIGHUP");
    wait_until("the open session sees the new quota", || {
        rt.block_on(session.quota())
            .expect("QUOTA on the session opened before the reload")
            .user_limit
            == Some(1 << 20)
    });
    // A refusal ends a session (the client closes it): asked on another.
    let refused = rt.block_on(async {
        let mut c = SecureClient::connect(&tls_addr, "localhost", &trust, &cred)
            .await
            .expect("connect");
        c.auth(&grant).await.expect("AUTH");
        c.allocate(
            ibp_proto::Rid(0),
            ibp_proto::Reliability::Hard,
            3600,
            2 << 20,
        )
        .await
    });
    let why = format!("{:?}", refused.expect_err("2 MiB over a 1 MiB quota"));
    assert!(why.contains("user quota exceeded"), "{why}");
    // New connections too: an upload of 2 MiB is refused for the quota.
    let o = lors(
        &g,
        "alice",
        &[
            "upload",
            s(&write(&g.user("alice").dir, "two", &bytes(2 << 20, 1))),
            "/vo1/two",
        ],
    );
    assert_eq!(code(&o), 3, "refused by the reloaded quota: {}", text(&o));
    assert!(text(&o).contains("quota"), "{}", text(&o));

    // A configuration that does not parse: nothing changes, the log says so.
    set_config(&g, 0, |t| t.replacen(VO, "[[vo]\n", 1));
    g.reload_depot(0).expect("SIGHUP");
    wait_until("the depot logs the refused reload", || {
        std::fs::read_to_string(&g.depots[0].log)
            .unwrap_or_default()
            .contains("SIGHUP: configuration not reloaded, the previous one stays in force")
    });
    let q = rt
        .block_on(session.quota())
        .expect("QUOTA after a failed reload");
    assert_eq!(
        q.user_limit,
        Some(1 << 20),
        "the previous policy stays: {q:?}"
    );

    // The quota lifted and the certificate renewed: after SIGHUP, new
    // connections get the new certificate, the open session goes on, and
    // the upload fits.
    set_config(&g, 0, |t| {
        t.replacen("[[vo]\n", VO, 1)
            .replacen("user_quota = \"1MiB\"\n", "", 1)
    });
    let new_cert = g.renew_depot_certificate(0).expect("a new certificate");
    g.reload_depot(0).expect("SIGHUP");
    wait_until("the quota is lifted", || {
        rt.block_on(session.quota())
            .expect("QUOTA")
            .user_limit
            .is_none()
    });
    let presented = rt.block_on(peer_certificate(&tls_addr, &trust, &cred));
    assert!(
        presented == new_cert,
        "new connections are served with the renewed certificate"
    );
    let data = bytes(2 << 20, 2);
    upload(&g, "alice", "two-again", &data, "/vo1/two", &[]);
    download_is(&g, "alice", "/vo1/two", &data, "two, after the reloads");
    rt.block_on(session.quota())
        .expect("the first session is still open");

    // The metadata manager and the L-Bone: a renewed certificate is served
    // to new connections after SIGHUP, and everything goes on working.
    for (which, url) in [
        (Daemon::MetadataManager, g.mdm_url.clone()),
        (Daemon::Lbone, g.lbone_url.clone()),
    ] {
        let addr = url.trim_start_matches("https://").to_owned();
        let before = rt.block_on(peer_certificate(&addr, &trust, &cred));
        let renewed = g
            .renew_service_certificate(which)
            .expect("a new certificate");
        assert_ne!(before, renewed);
        g.reload_service(which).expect("SIGHUP");
        wait_until("the renewed certificate is served", || {
            rt.block_on(peer_certificate(&addr, &trust, &cred)) == renewed
        });
    }
    let data = bytes(100_000, 3);
    upload(&g, "alice", "three", &data, "/vo1/three", &[]);
    download_is(
        &g,
        "alice",
        "/vo1/three",
        &data,
        "three, after the services reloaded",
    );
}

/// The certificate (DER) a new TLS connection to `addr` is served with.
async fn peer_certificate(
    addr: &str,
    trust: &ibp_auth::TrustStore,
    cred: &ibp_auth::ProxyCredential,
) -> Vec<u8> {
    let cfg = ibp_auth::tls::client_config(trust, Some(cred)).expect("a TLS configuration");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}
