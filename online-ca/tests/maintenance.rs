//! Maintenance grants at the real `online-ca` binary (docs/maintenance.md):
//! enroll over mutual TLS with a login proxy, exchange the token for a
//! maintenance-only certificate (attribute scope `maintenance`, no groups),
//! refusals (a maintenance proxy enrolling, wrong tokens, revoked grants),
//! the rate limit, and no token in the log.

mod common;

use common::*;
use ibp_auth::Scope;
use serde_json::{json, Value};

const ATTACKER: &str = "127.0.0.2";

/// Logs `user` in (method local) and returns its proxy (as `lors login`
/// makes it).
async fn login_proxy(
    srv: &Server,
    ca_der: &[u8],
    user: &str,
    pw: &str,
) -> ibp_auth::ProxyCredential {
    let (csr, key) = new_csr();
    let a = https(
        srv.addr,
        ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", user, pw, "vo1", &csr)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let cert = pem_cert(a.json["certificate"].as_str().unwrap());
    proxy(&[cert], &key, b64d(a.json["attributes"].as_str().unwrap()))
}

async fn post(
    srv: &Server,
    ca_der: &[u8],
    from: Option<&str>,
    cred: Option<&ibp_auth::ProxyCredential>,
    path: &str,
    body: &Value,
) -> Answer {
    https_from(
        from.map(|f| f.parse().unwrap()),
        srv.addr,
        ca_der,
        cred,
        "POST",
        path,
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_exchange_refuse_and_revoke() {
    let ca = CaDir::init();
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &["--group", "admins"]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let trust = ca.trust();
    let login = login_proxy(&srv, &ca_der, "alice", "wonderland").await;

    // Enroll: needs mutual TLS.
    let a = post(
        &srv,
        &ca_der,
        None,
        None,
        "/v1/maintenance/enroll",
        &json!({"vo": "vo1"}),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.json);
    let a = post(
        &srv,
        &ca_der,
        None,
        Some(&login),
        "/v1/maintenance/enroll",
        &json!({"vo": "vo1", "valid": 86_400}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let grant = a.json["grant"].as_str().unwrap().to_owned();
    let token = a.json["token"].as_str().unwrap().to_owned();
    let expires = a.json["expires_at"].as_i64().unwrap();
    assert!(
        (expires - ibp_auth::unix_now() - 86_400).abs() < 60,
        "{}",
        a.json
    );

    // Exchange: a certificate named after the grant, attributes of scope
    // maintenance without the admin group.
    let (csr, key) = new_csr();
    let a = post(
        &srv,
        &ca_der,
        None,
        None,
        "/v1/maintenance/proxy",
        &json!({"grant": grant, "token": token, "csr": csr, "lifetime": 7200}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["groups"], json!([]), "{}", a.json);
    let not_after = a.json["not_after"].as_i64().unwrap();
    assert!(
        not_after <= ibp_auth::unix_now() + 3600 + 5,
        "capped at an hour: {}",
        a.json
    );
    let cert = pem_cert(a.json["certificate"].as_str().unwrap());
    let (_, c) = x509_parser::parse_x509_certificate(&cert).unwrap();
    assert!(
        c.subject()
            .to_string()
            .contains(&format!("CN=maintenance:{grant}")),
        "{}",
        c.subject()
    );
    let maint = proxy(
        std::slice::from_ref(&cert),
        &key,
        b64d(a.json["attributes"].as_str().unwrap()),
    );
    let id = ibp_auth::verify_chain(&maint.chain_der(), &trust, ibp_auth::unix_now()).unwrap();
    assert_eq!(id.scope, Scope::Maintenance);
    assert!(id.groups.is_empty());
    let full = ibp_auth::verify_chain(&login.chain_der(), &trust, ibp_auth::unix_now()).unwrap();
    assert_eq!(full.scope, Scope::Full);
    assert_eq!(id.vo_id, full.vo_id);

    // A maintenance proxy cannot enroll, nor get full attributes.
    let a = post(
        &srv,
        &ca_der,
        None,
        Some(&maint),
        "/v1/maintenance/enroll",
        &json!({"vo": "vo1"}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("maintenance-only"),
        "{}",
        a.json
    );
    let a = post(
        &srv,
        &ca_der,
        None,
        Some(&maint),
        "/v1/attributes",
        &json!({"vo": "vo1"}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.json);

    // Status with the token.
    let a = post(
        &srv,
        &ca_der,
        None,
        None,
        "/v1/maintenance/status",
        &json!({"grant": grant, "token": token}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["grants"][0]["state"], "active", "{}", a.json);
    assert!(a.json["grants"][0]["last_used_at"].is_i64(), "{}", a.json);

    // Wrong tokens and an unknown grant: one answer, counted; then 429
    // even for the right token from that address.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let mut said = Vec::new();
    for g in [grant.as_str(), unknown] {
        let a = post(
            &srv,
            &ca_der,
            Some(ATTACKER),
            None,
            "/v1/maintenance/status",
            &json!({"grant": g, "token": "wrong"}),
        )
        .await;
        assert_eq!(a.status, 401, "{}", a.json);
        said.push(a.json["error"].as_str().unwrap().to_owned());
    }
    assert_eq!(said[0], said[1]);
    assert_eq!(
        said[0],
        "maintenance grant refused: unknown grant or wrong token"
    );
    let mut last = 0;
    for _ in 0..5 {
        let (csr, _) = new_csr();
        let a = post(
            &srv,
            &ca_der,
            Some(ATTACKER),
            None,
            "/v1/maintenance/proxy",
            &json!({"grant": grant, "token": "guess", "csr": csr}),
        )
        .await;
        last = a.status;
        if last == 429 {
            assert!(a.headers.get("retry-after").is_some());
            break;
        }
        assert_eq!(last, 401, "{}", a.json);
    }
    assert_eq!(last, 429, "guessing is rate limited");
    let a = post(
        &srv,
        &ca_der,
        Some(ATTACKER),
        None,
        "/v1/maintenance/status",
        &json!({"grant": grant, "token": token}),
    )
    .await;
    assert_eq!(
        a.status, 429,
        "refused before the token is looked at: {}",
        a.json
    );

    // Revoked with the token: the next exchange names the revocation.
    let a = post(
        &srv,
        &ca_der,
        None,
        None,
        "/v1/maintenance/revoke",
        &json!({"grant": grant, "token": token}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["revoked"], 1);
    let (csr, _) = new_csr();
    let a = post(
        &srv,
        &ca_der,
        None,
        None,
        "/v1/maintenance/proxy",
        &json!({"grant": grant, "token": token, "csr": csr}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.json);
    let e = a.json["error"].as_str().unwrap();
    assert!(
        e.contains("was revoked at") && e.contains("by token"),
        "{e}"
    );

    // Audited, and the token never logged.
    let kinds: Vec<String> = ca
        .audit()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"maintenance-grant".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"maintenance".to_owned()), "{kinds:?}");
    let log = srv.log();
    assert!(log.contains("enrolled a maintenance grant"), "{log}");
    assert!(!log.contains(&token), "the token is in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_grants_are_refused() {
    let ca = CaDir::init();
    ca.configure("[maintenance]\nenabled = false\n");
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let login = login_proxy(&srv, &ca_der, "alice", "wonderland").await;
    let a = post(
        &srv,
        &ca_der,
        None,
        Some(&login),
        "/v1/maintenance/enroll",
        &json!({"vo": "vo1"}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert!(
        a.json["error"].as_str().unwrap().contains("disabled"),
        "{}",
        a.json
    );
}
