//! SIGHUP at the online CA: its server certificate and key, its trust
//! directory and the `[vos.*]` and `[hosts]` sections are read again and
//! put in force for new connections and requests; other changes are
//! logged as needing a restart; a configuration that does not load
//! changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Waits (bounded) until `f` holds.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new server certificate for localhost and 127.0.0.1 from the CA's
/// key, written over `server.pem`/`server.key`; returns it (DER).
fn renew_server_certificate(ca: &CaDir) -> Vec<u8> {
    let key_pem = std::fs::read_to_string(ca.dir.join("ca.key")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let ca_cert = rcgen::CertificateParams::from_ca_cert_pem(
        &std::fs::read_to_string(ca.dir.join("ca.pem")).unwrap(),
    )
    .unwrap()
    .self_signed(&ca_key)
    .unwrap();
    let p = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(ca.dir.join("server.pem"), cert.pem()).unwrap();
    ibp_auth::keys::write_secret(&ca.dir.join("server.key"), key.serialize_pem().as_bytes())
        .unwrap();
    cert.der().to_vec()
}

async fn login_cn(srv: &Server, ca_der: &[u8]) -> String {
    let (csr, _) = new_csr();
    let a = https(
        srv.addr,
        ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "pw-alice", "vo1", &csr)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    let der = pem_cert(a.json["certificate"].as_str().unwrap());
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    cn
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_reloads_its_certificate_trust_and_vo_settings_on_sighup() {
    let ca = CaDir::init();
    ca.add_user("alice", "pw-alice");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let before = served_cert(srv.addr, &ca_der).await;
    assert_eq!(login_cn(&srv, &ca_der).await, "local:alice");

    // A user of another CA: refused in the handshake while that CA is not
    // trusted.
    let other = ibp_auth::pki::Authority::new_ca("Other", "Other CA", 10).unwrap();
    let mallory = other.issue_user("Other", "mallory", 3600).unwrap();
    let cred = ibp_auth::ProxyCredential {
        chain: vec![mallory.cert_der.clone()],
        key_pkcs8: mallory.key_pkcs8.clone(),
    };
    let attrs = json!({ "vo": "vo1" });
    assert!(
        post_as(srv.addr, &ca_der, &cred, "/v1/attributes", &attrs)
            .await
            .is_err(),
        "another CA's certificate is refused before the reload"
    );

    // New certificate, trust directory, [vos.vo1] and [hosts]; and a
    // setting that needs a restart.
    let renewed = renew_server_certificate(&ca);
    std::fs::write(
        ca.dir.join("trust/ca/other.pem"),
        online_ca::ca::cert_pem(&other.cert_der),
    )
    .unwrap();
    ca.configure(
        "default_lifetime = \"2h\"\n[vos.vo1]\npseudonymous = true\n[hosts]\nenabled = false\n",
    );
    assert_eq!(
        served_cert(srv.addr, &ca_der).await,
        before,
        "not before SIGHUP"
    );
    srv.hup();
    let addr = srv.addr;
    wait_until("the renewed certificate is served", || {
        let r = renewed.clone();
        let ca_der = ca_der.clone();
        async move { served_cert(addr, &ca_der).await == r }
    })
    .await;
    assert!(login_cn(&srv, &ca_der).await.starts_with("pseudonym:"));
    let r = post_as(srv.addr, &ca_der, &cred, "/v1/attributes", &attrs)
        .await
        .expect("the other CA is trusted now");
    assert_eq!(r.0, 403, "trusted, but not a member: {r:?}");
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&json!({ "name": "d.example.org", "token": "t", "csr": new_csr().0 })),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("disabled"));
    let log = srv.log();
    assert!(log.contains("take effect at the next restart"), "{log}");

    // A configuration that does not load: nothing changes, the log says so.
    std::fs::write(&ca.config, "listen = [\n").unwrap();
    srv.hup();
    let s = &srv;
    wait_until("the refused reload is logged", move || async move {
        s.log()
            .contains("SIGHUP: configuration not reloaded, the previous one stays in force")
    })
    .await;
    assert_eq!(served_cert(srv.addr, &ca_der).await, renewed);
    assert!(login_cn(&srv, &ca_der).await.starts_with("pseudonym:"));
}
