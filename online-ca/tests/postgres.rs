//! The online CA on PostgreSQL (a private cluster per test: initdb +
//! pg_ctl on a free loopback port; without PostgreSQL's server binaries,
//! `apt-get install postgresql`, this fails, it never skips). Two CA
//! processes share the database: membership, groups, pseudonyms, the audit
//! log, maintenance grants, host certificates and link challenges written
//! through one are what the other sees.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

async fn login(srv: &Server, ca_der: &[u8], vo: &str) -> (Value, Vec<u8>) {
    let (csr, key) = new_csr();
    let a = https(
        srv.addr,
        ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "pw-alice", vo, &csr)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    (a.json, key)
}

fn cn(answer: &Value) -> String {
    let der = pem_cert(answer["certificate"].as_str().unwrap());
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
async fn two_cas_on_one_postgresql_database() {
    let pg = ibp_testkit::pg::PgCluster::start();
    let ca = CaDir::init();
    ca.configure(&format!(
        "database = {:?}\n[vos.vo2]\npseudonymous = true\n",
        pg.url
    ));
    // A university CA the online CA trusts (a certificate alice links).
    let inst = ibp_auth::pki::Authority::new_ca("Uni", "Uni CA", 30).unwrap();
    std::fs::write(
        ca.dir.join("trust/ca/uni.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", inst.cert_der.clone())),
    )
    .unwrap();
    ca.add_user("alice", "pw-alice");
    // The admin CLI migrates and writes the PostgreSQL database.
    let vo_id = ca.add_member("vo1", "local:alice", &["--group", "analysis"]);
    ca.add_member("vo2", "local:alice", &[]);
    let members = ca.members("vo1");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["groups"], json!(["analysis"]));

    let a = ca.serve();
    let b = Server::start(&ca.config, &ca.tmp.path().join("serve-b.log"));
    let ca_der = ca.ca_der();
    let trust = ca.trust();

    // A login at either: the same VO ID and groups; a pseudonym drawn at
    // one is the one the other gives.
    let (la, key) = login(&a, &ca_der, "vo1").await;
    let id = verify_login(&la, &key, &trust);
    assert_eq!(id.vo_id, vo_id);
    assert_eq!(id.groups.len(), 1);
    let (lb, _) = login(&b, &ca_der, "vo1").await;
    assert_eq!(lb["vo_id"], json!(vo_id));
    let (p1, _) = login(&a, &ca_der, "vo2").await;
    let (p2, _) = login(&b, &ca_der, "vo2").await;
    assert!(cn(&p1).starts_with("pseudonym:"), "{}", cn(&p1));
    assert_eq!(cn(&p1), cn(&p2));

    // A maintenance grant enrolled at one is exchanged at the other.
    let cert = pem_cert(la["certificate"].as_str().unwrap());
    let login_proxy = proxy(&[cert], &key, b64d(la["attributes"].as_str().unwrap()));
    let g = https(
        a.addr,
        &ca_der,
        Some(&login_proxy),
        "POST",
        "/v1/maintenance/enroll",
        Some(&json!({"vo": "vo1"})),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.json);
    let m = https(
        b.addr,
        &ca_der,
        None,
        "POST",
        "/v1/maintenance/proxy",
        Some(&json!({"grant": g.json["grant"], "token": g.json["token"], "csr": new_csr().0})),
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.json);

    // A host enrolled at one renews at the other; revoked, at neither.
    let out = ca.admin(&[
        "hosts",
        "allow",
        "d1.example.org",
        "--role",
        "depot",
        "--json",
    ]);
    let token = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (csr, host_key) = new_csr();
    let e = https(
        a.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&json!({"name": "d1.example.org", "token": token, "csr": csr})),
    )
    .await;
    assert_eq!(e.status, 200, "{}", e.json);
    let host = ibp_auth::ProxyCredential {
        chain: vec![pem_cert(e.json["certificate"].as_str().unwrap())],
        key_pkcs8: host_key,
    };
    let renew = json!({"csr": new_csr().0});
    let r = post_as(b.addr, &ca_der, &host, "/v1/hosts/renew", &renew)
        .await
        .unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    // The token was spent at a: b refuses it too.
    let again = https(
        b.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&json!({"name": "d1.example.org", "token": token, "csr": new_csr().0})),
    )
    .await;
    assert_eq!(again.status, 403, "{}", again.json);
    ca.admin(&["hosts", "revoke", "d1.example.org"]);
    for srv in [&a, &b] {
        let r = post_as(srv.addr, &ca_der, &host, "/v1/hosts/renew", &renew)
            .await
            .unwrap();
        assert_eq!(r.0, 403, "{r:?}");
    }

    // A certificate linked by alice herself: challenge at one CA,
    // answered at the other (challenges live in the database), spent for
    // both; the link is seen by both.
    let uni = inst.issue_user("Uni", "Alice", 86_400).unwrap();
    let chain = pem::encode(&pem::Pem::new("CERTIFICATE", uni.cert_der.clone()));
    let ch = https(
        a.addr,
        &ca_der,
        Some(&login_proxy),
        "POST",
        "/v1/link/challenge",
        Some(&json!({"vo": "vo1", "chain": chain})),
    )
    .await;
    assert_eq!(ch.status, 200, "{}", ch.json);
    let sig = ibp_auth::keys::SigningKey::from_pkcs8(&uni.key_pkcs8)
        .unwrap()
        .sign(&b64d(ch.json["challenge"].as_str().unwrap()))
        .unwrap();
    let body = json!({"vo": "vo1", "chain": chain, "nonce": ch.json["nonce"],
                      "signature": base64::engine::general_purpose::STANDARD.encode(sig)});
    let l = https(
        b.addr,
        &ca_der,
        Some(&login_proxy),
        "POST",
        "/v1/link",
        Some(&body),
    )
    .await;
    assert_eq!(l.status, 200, "{}", l.json);
    assert_eq!(l.json["vo_id"], json!(vo_id));
    let replay = https(
        a.addr,
        &ca_der,
        Some(&login_proxy),
        "POST",
        "/v1/link",
        Some(&body),
    )
    .await;
    assert_eq!(replay.status, 401, "{}", replay.json);
    let plain = ibp_auth::ProxyCredential {
        chain: vec![uni.cert_der.clone()],
        key_pkcs8: uni.key_pkcs8.clone(),
    };
    for srv in [&a, &b] {
        let at = https(
            srv.addr,
            &ca_der,
            Some(&plain),
            "POST",
            "/v1/attributes",
            Some(&json!({"vo": "vo1"})),
        )
        .await;
        assert_eq!(at.status, 200, "{}", at.json);
        assert_eq!(at.json["vo_id"], json!(vo_id));
    }

    // One audit log: four logins, a grant, its certificate, two host
    // certificates, a link.
    let kinds: Vec<String> = ca
        .audit()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    for (kind, n) in [
        ("certificate", 4),
        ("maintenance-grant", 1),
        ("maintenance", 1),
        ("host-enroll", 1),
        ("host-renew", 1),
        ("link", 1),
    ] {
        assert_eq!(
            kinds.iter().filter(|k| *k == kind).count(),
            n,
            "{kind}: {kinds:?}"
        );
    }

    // All of it is in PostgreSQL.
    let store = online_ca::store::Store::open(&pg.url).await.unwrap();
    assert_eq!(store.audit_list().await.unwrap().len(), kinds.len());
    let hosts = store.host_list().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].revoked_at.is_some());
    assert_eq!(
        store
            .membership("vo1", "local:alice")
            .await
            .unwrap()
            .unwrap()
            .vo_id,
        vo_id
    );
    store.close().await;

    // Removed through the CLI: neither CA lets alice log in to vo1.
    ca.admin(&[
        "member",
        "remove",
        "--vo",
        "vo1",
        "--identity",
        "local:alice",
    ]);
    for srv in [&a, &b] {
        let (csr, _) = new_csr();
        let r = https(
            srv.addr,
            &ca_der,
            None,
            "POST",
            "/v1/login",
            Some(&login_body("local", "alice", "pw-alice", "vo1", &csr)),
        )
        .await;
        assert_eq!(r.status, 403, "{}", r.json);
    }
}
