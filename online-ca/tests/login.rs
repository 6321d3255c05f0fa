//! The real `online-ca` binary with the local users file: logins, the
//! returned credential verified by `ibp-auth`, stable VO IDs, attributes
//! for existing certificates over mutual TLS, CSR checks, lifetime caps,
//! rate limits and the audit log.

mod common;

use common::*;
use ibp_auth::pki::Authority;
use ibp_auth::{unix_now, ProxyCredential};
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

fn parse_cert(answer: &Value) -> Vec<u8> {
    pem_cert(answer["certificate"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn local_login_returns_a_credential_that_verifies() {
    let ca = CaDir::init();
    ca.add_user("alice", "wonderland");
    let vo_id = ca.add_member("vo1", "local:alice", &["--group", "admins"]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();

    // Trust bootstrap.
    let t = https(srv.addr, &ca_der, None, "GET", "/v1/trust", None).await;
    assert_eq!(t.status, 200, "{:?}", t.json);
    assert_eq!(pem_cert(t.json["ca"].as_str().unwrap()), ca_der);
    let aa1 = pem_cert(t.json["aa"]["vo1"].as_str().unwrap());
    assert!(t.json["aa"]["vo2"].is_string());

    let (csr, key) = new_csr();
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "wonderland", "vo1", &csr)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}\n{}", a.json, srv.log());
    assert_eq!(a.json["vo"], "vo1");
    assert_eq!(a.json["vo_id"], vo_id.as_str());
    assert_eq!(a.json["groups"][0]["name"], "admins");
    assert!(a.json["groups"][0]["id"].as_str().unwrap().len() >= 32);
    assert_eq!(pem_cert(a.json["chain"].as_str().unwrap()), ca_der);

    // The certificate: our subject, the CSR's key, clientAuth, 12 h.
    let der = parse_cert(&a.json);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let subject = cert.subject().to_string();
    assert!(
        subject.contains("O=Test Grid") && subject.contains("CN=local:alice"),
        "{subject}"
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);
    let na = cert.validity().not_after.timestamp();
    assert_eq!(a.json["not_after"].as_i64().unwrap(), na);
    let now = unix_now();
    assert!(
        na <= now + 12 * 3600 + 5 && na >= now + 12 * 3600 - 60,
        "{na} vs {now}"
    );
    let (csr_der, _) = (pem::parse(&csr).unwrap().into_contents(), ());
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der).unwrap();
    assert_eq!(
        cert.public_key().raw,
        req.certification_request_info.subject_pki.raw
    );

    // The credential verifies with ibp-auth: trust = CA + the AA pinned for vo1.
    let mut trust = ibp_auth::TrustStore::new();
    trust.add_ca(ca_der.clone()).unwrap();
    trust.pin_aa("vo1", aa1.clone());
    let id = verify_login(&a.json, &key, &trust);
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vo_id, vo_id);
    assert_eq!(id.groups[0].name, "admins");
    // And with the trust directory init wrote for other services.
    assert_eq!(verify_login(&a.json, &key, &ca.trust()).vo_id, vo_id);
    // The vo1 AA is not trusted for vo2.
    let mut wrong = ibp_auth::TrustStore::new();
    wrong.add_ca(ca_der.clone()).unwrap();
    wrong.pin_aa("vo2", aa1);
    let cred = proxy(
        &[parse_cert(&a.json)],
        &key,
        b64d(a.json["attributes"].as_str().unwrap()),
    );
    assert!(ibp_auth::verify_chain(&cred.chain_der(), &wrong, unix_now()).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_401_non_member_403_bad_requests_400() {
    let ca = CaDir::init();
    ca.add_user("alice", "wonderland");
    ca.add_user("bob", "builder");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    let post = |body: Value| {
        let ca_der = ca_der.clone();
        async move { https(srv.addr, &ca_der, None, "POST", "/v1/login", Some(&body)).await }
    };

    let a = post(login_body("local", "alice", "wrong", "vo1", &csr)).await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(a.json["error"].is_string());
    let a = post(login_body("local", "nobody", "wonderland", "vo1", &csr)).await;
    assert_eq!(a.status, 401);
    // Bob authenticates but is not a member of vo1; alice is not in vo2.
    let a = post(login_body("local", "bob", "builder", "vo1", &csr)).await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(a.json["error"].as_str().unwrap().contains("not a member"));
    let a = post(login_body("local", "alice", "wonderland", "vo2", &csr)).await;
    assert_eq!(a.status, 403);

    // Bad requests.
    let a = post(login_body("local", "alice", "wonderland", "nope", &csr)).await;
    assert_eq!(a.status, 400, "{:?}", a.json);
    let a = post(login_body("radius", "alice", "wonderland", "vo1", &csr)).await;
    assert_eq!(a.status, 400, "RADIUS is not configured: {:?}", a.json);
    let a = post(login_body("ldap", "alice", "wonderland", "vo1", &csr)).await;
    assert_eq!(a.status, 400);
    let a =
        post(json!({"method": "local", "user": "alice", "password": "wonderland", "vo": "vo1"}))
            .await;
    assert_eq!(a.status, 400);
    assert!(
        a.json["error"].as_str().unwrap().contains("csr"),
        "{:?}",
        a.json
    );
    let a = post(login_body(
        "local",
        "alice",
        "wonderland",
        "vo1",
        "not a csr",
    ))
    .await;
    assert_eq!(a.status, 400);
    let mut b = login_body("local", "alice", "wonderland", "vo1", &csr);
    b["lifetime"] = json!(-5);
    assert_eq!(post(b).await.status, 400);
    let mut b = login_body("local", "alice", "wonderland", "vo1", &csr);
    b["lifetime"] = json!(0);
    assert_eq!(post(b).await.status, 400);
    let a = https(srv.addr, &ca_der, None, "GET", "/v1/nothing", None).await;
    assert_eq!(a.status, 404);
    // The password never reaches the log.
    assert!(!srv.log().contains("wonderland"));
}

/// Replaces the public key of a CSR by another key's: its self-signature
/// no longer verifies.
fn csr_with_other_key(csr_pem: &str) -> String {
    let der = pem::parse(csr_pem).unwrap().into_contents();
    let (other, _) = new_csr();
    let other_der = pem::parse(&other).unwrap().into_contents();
    let spki = |d: &[u8]| {
        let (_, r) =
            x509_parser::certification_request::X509CertificationRequest::from_der(d).unwrap();
        r.certification_request_info.subject_pki.raw.to_vec()
    };
    let (mine, theirs) = (spki(&der), spki(&other_der));
    assert_eq!(mine.len(), theirs.len());
    let at = der
        .windows(mine.len())
        .position(|w| w == mine.as_slice())
        .unwrap();
    let mut forged = der.clone();
    forged[at..at + mine.len()].copy_from_slice(&theirs);
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", forged))
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_with_mismatched_key_or_bad_signature_refused() {
    let ca = CaDir::init();
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (good, _) = new_csr();

    let forged = csr_with_other_key(&good);
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "wonderland", "vo1", &forged)),
    )
    .await;
    assert_eq!(a.status, 400, "{:?}", a.json);
    assert_eq!(a.json["error"], "CSR signature does not verify");

    let mut der = pem::parse(&good).unwrap().into_contents();
    let n = der.len();
    der[n - 3] ^= 0x40;
    let corrupt = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "wonderland", "vo1", &corrupt)),
    )
    .await;
    assert_eq!(a.status, 400, "{:?}", a.json);

    // Nothing was issued.
    assert!(ca.audit().is_empty());
}

/// An RSA-1024 CSR used to be refused as "CSR signature does not verify";
/// the answer now names the key and the keys accepted. RSA-2048 is
/// accepted.
#[tokio::test(flavor = "multi_thread")]
async fn csr_with_a_weak_or_unsupported_key_is_refused_naming_the_key() {
    let ca = CaDir::init();
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let login = |file: &str| {
        let csr = std::fs::read_to_string(data.join(file)).unwrap();
        let ca_der = ca_der.clone();
        let srv = &srv;
        async move {
            https(
                srv.addr,
                &ca_der,
                None,
                "POST",
                "/v1/login",
                Some(&login_body("local", "alice", "wonderland", "vo1", &csr)),
            )
            .await
        }
    };
    let accepted = "use an ECDSA P-256, Ed25519 or RSA (2048 to 8192 bits) key";
    for (file, key) in [
        ("csr-rsa1024.pem", "an RSA key of 1024 bits"),
        ("csr-p384.pem", "an ECDSA P-384 key"),
    ] {
        let a = login(file).await;
        assert_eq!(a.status, 400, "{file}: {:?}", a.json);
        assert_eq!(
            a.json["error"],
            format!("CSR key not accepted: {key}; {accepted}"),
            "{file}"
        );
    }
    assert!(ca.audit().is_empty());
    let a = login("csr-rsa2048.pem").await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(ca.audit().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_is_capped_and_defaulted() {
    let ca = CaDir::init();
    ca.configure("default_lifetime = \"1h\"\nmax_lifetime = \"12h\"\n");
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();

    let lifetime_of = |a: &Value| {
        let der = parse_cert(a);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.validity().not_after.timestamp()
    };

    // 48 h asked, 12 h given.
    let (csr1, key1) = new_csr();
    let mut body = login_body("local", "alice", "wonderland", "vo1", &csr1);
    body["lifetime"] = json!(48 * 3600);
    let t0 = unix_now();
    let a = https(srv.addr, &ca_der, None, "POST", "/v1/login", Some(&body)).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    let na = lifetime_of(&a.json);
    assert!(na <= unix_now() + 12 * 3600, "not_after {na}, now {t0}");
    assert!(na >= t0 + 12 * 3600 - 5);
    // The attributes end with the certificate.
    let id = verify_login(&a.json, &key1, &ca.trust());
    assert!(id.not_after <= na);

    // Nothing asked: the default (1 h).
    let (csr2, _) = new_csr();
    let t0 = unix_now();
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "wonderland", "vo1", &csr2)),
    )
    .await;
    assert_eq!(a.status, 200);
    let na = lifetime_of(&a.json);
    assert!(na >= t0 + 3600 - 5 && na <= unix_now() + 3600, "{na}");

    // Absurd request: capped too.
    let (csr4, _) = new_csr();
    let mut body = login_body("local", "alice", "wonderland", "vo1", &csr4);
    body["lifetime"] = json!(u64::MAX);
    let a = https(srv.addr, &ca_der, None, "POST", "/v1/login", Some(&body)).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert!(lifetime_of(&a.json) <= unix_now() + 12 * 3600);

    // Short request honoured.
    let (csr3, _) = new_csr();
    let mut body = login_body("local", "alice", "wonderland", "vo1", &csr3);
    body["lifetime"] = json!(600);
    let t0 = unix_now();
    let a = https(srv.addr, &ca_der, None, "POST", "/v1/login", Some(&body)).await;
    let na = lifetime_of(&a.json);
    assert!(na >= t0 + 595 && na <= unix_now() + 600, "{na}");

    // The audit log records the capped lifetimes.
    let audit = ca.audit();
    let lifetimes: Vec<i64> = audit
        .iter()
        .map(|r| r["lifetime"].as_i64().unwrap())
        .collect();
    assert_eq!(lifetimes, vec![12 * 3600, 3600, 12 * 3600, 600]);
}

const ATTACKER: &str = "127.0.0.2";
const USER: &str = "127.0.0.1";

/// `POST /v1/login` (method local) from `from`: (status, error message,
/// Retry-After).
async fn login_from(
    srv: &Server,
    ca_der: &[u8],
    from: &str,
    user: &str,
    password: &str,
    csr: &str,
) -> (u16, String, Option<u64>) {
    let a = https_from(
        Some(from.parse().unwrap()),
        srv.addr,
        ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", user, password, "vo1", csr)),
    )
    .await;
    let retry = a
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        a.status,
        a.json["error"].as_str().unwrap_or("").to_string(),
        retry,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn brute_force_from_one_address_is_refused() {
    let ca = CaDir::init();
    ca.configure("[rate_limit]\nmax_failures = 5\nwindow = \"60s\"\n");
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    for i in 0..5 {
        let (status, msg, _) = login_from(&srv, &ca_der, ATTACKER, "alice", "guess", &csr).await;
        assert_eq!(status, 401, "attempt {i}: {msg}");
        assert_eq!(msg, "wrong user name or password");
    }
    let (status, msg, retry) = login_from(&srv, &ca_der, ATTACKER, "alice", "guess", &csr).await;
    assert_eq!(status, 429, "{msg}");
    assert_eq!(
        msg,
        "too many failed logins for this user from this address; try again later"
    );
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    // Refused before the password is looked at: the right one too.
    let (status, _, _) = login_from(&srv, &ca_der, ATTACKER, "alice", "wonderland", &csr).await;
    assert_eq!(status, 429);
    assert!(ca.audit().is_empty());
    assert!(srv.log().contains("login rate limited"), "{}", srv.log());
}

/// A third party's wrong passwords for a user, from another address, do
/// not keep the user out (they used to: 429 for 60 s, renewed at will).
#[tokio::test(flavor = "multi_thread")]
async fn third_party_failures_do_not_lock_a_user_out() {
    let ca = CaDir::init();
    ca.add_user("demo", "demo-password");
    ca.add_member("vo1", "local:demo", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    for _ in 0..5 {
        let (status, msg, _) = login_from(&srv, &ca_der, ATTACKER, "demo", "guess", &csr).await;
        assert_eq!(status, 401, "{msg}");
    }
    let (status, _, _) = login_from(&srv, &ca_der, ATTACKER, "demo", "guess", &csr).await;
    assert_eq!(status, 429, "the attacker is slowed down");
    // demo, from its own address, logs in.
    let (status, msg, _) = login_from(&srv, &ca_der, USER, "demo", "demo-password", &csr).await;
    assert_eq!(status, 200, "{msg}");
    // And once known there, the attacker cannot lock that address either.
    let (status, msg, _) = login_from(&srv, &ca_der, USER, "demo", "demo-password", &csr).await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(ca.audit().len(), 2);
}

/// One address guessing passwords of many users meets the per-address
/// budget; users elsewhere are not affected.
#[tokio::test(flavor = "multi_thread")]
async fn guessing_many_users_from_one_address_hits_the_address_budget() {
    let ca = CaDir::init();
    ca.configure("[rate_limit]\nmax_failures = 5\nmax_failures_per_address = 6\n");
    ca.add_user("bob", "builder");
    ca.add_member("vo1", "local:bob", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    for i in 0..6 {
        let user = format!("user{i}");
        let (status, msg, _) = login_from(&srv, &ca_der, ATTACKER, &user, "guess", &csr).await;
        assert_eq!(status, 401, "{user}: {msg}");
    }
    let (status, msg, retry) = login_from(&srv, &ca_der, ATTACKER, "user99", "guess", &csr).await;
    assert_eq!(status, 429, "{msg}");
    assert_eq!(
        msg,
        "too many failed logins from this address; try again later"
    );
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    let (status, _, _) = login_from(&srv, &ca_der, ATTACKER, "bob", "builder", &csr).await;
    assert_eq!(
        status, 429,
        "bob has never logged in from the attacker's address"
    );
    let (status, msg, _) = login_from(&srv, &ca_der, USER, "bob", "builder", &csr).await;
    assert_eq!(status, 200, "{msg}");
}

/// A distributed guess at one user's password (a few tries from each of
/// many addresses, under the per-(user, address) budget) hits the per-user
/// budget, and guesses at many users from many addresses hit the total one;
/// neither locks the user out of an address they logged in from before.
#[tokio::test(flavor = "multi_thread")]
async fn guessing_from_many_addresses_hits_the_user_and_total_budgets() {
    let ca = CaDir::init();
    ca.configure(
        "[rate_limit]\nmax_failures = 5\nmax_failures_per_address = 20\nmax_failures_per_user = 6\nmax_failures_total = 10\n",
    );
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    // alice's own address becomes a known one.
    let (status, msg, _) = login_from(&srv, &ca_der, USER, "alice", "wonderland", &csr).await;
    assert_eq!(status, 200, "{msg}");
    // Two wrong guesses from each of three addresses: six for alice.
    for a in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..2 {
            let (status, msg, _) = login_from(&srv, &ca_der, a, "alice", "guess", &csr).await;
            assert_eq!(status, 401, "{a}: {msg}");
        }
    }
    let (status, msg, retry) =
        login_from(&srv, &ca_der, "127.0.0.6", "alice", "wonderland", &csr).await;
    assert_eq!(
        status, 429,
        "a fresh address is refused once alice's budget is spent"
    );
    assert_eq!(
        msg,
        "too many failed logins for this user; try again later, or from an address this user logged in from before"
    );
    assert!(retry.is_some(), "Retry-After is sent");
    let (status, msg, _) = login_from(&srv, &ca_der, USER, "alice", "wonderland", &csr).await;
    assert_eq!(
        status, 200,
        "alice's known address bypasses the user budget: {msg}"
    );
    // Four more failures for other users from other addresses reach the
    // total budget of ten.
    for (i, a) in ["127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"]
        .iter()
        .enumerate()
    {
        let user = format!("user{i}");
        let (status, msg, _) = login_from(&srv, &ca_der, a, &user, "guess", &csr).await;
        assert_eq!(status, 401, "{user}: {msg}");
    }
    let (status, msg, _) = login_from(&srv, &ca_der, "127.0.0.11", "user9", "guess", &csr).await;
    assert_eq!(status, 429);
    assert_eq!(
        msg,
        "too many failed logins at this CA; try again later, or from an address this user logged in from before"
    );
    let (status, msg, _) = login_from(&srv, &ca_der, USER, "alice", "wonderland", &csr).await;
    assert_eq!(
        status, 200,
        "the total budget spares known addresses: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_per_user_are_forgotten_after_success() {
    let ca = CaDir::init();
    ca.configure("[rate_limit]\nmax_failures = 3\nwindow = \"60s\"\n");
    ca.add_user("alice", "wonderland");
    ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    let post = |pw: &'static str| {
        let (ca_der, csr) = (ca_der.clone(), csr.clone());
        let srv = &srv;
        async move { login_from(srv, &ca_der, USER, "alice", pw, &csr).await.0 }
    };
    assert_eq!(post("x").await, 401);
    assert_eq!(post("x").await, 401);
    assert_eq!(post("wonderland").await, 200);
    // The two failures are forgotten: three more are allowed, then 429.
    for _ in 0..3 {
        assert_eq!(post("x").await, 401);
    }
    assert_eq!(post("x").await, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn vo_id_stable_across_logins_and_linked_certificates() {
    let ca = CaDir::init();
    // A second CA the online CA trusts for /v1/attributes: alice's
    // institutional certificate.
    let inst = Authority::new_ca("Example University", "Example University CA", 30).unwrap();
    std::fs::write(
        ca.dir.join("trust/ca/university.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", inst.cert_der.clone())),
    )
    .unwrap();
    let alice_cert = inst
        .issue_user("Example University", "Alice Liddell", 30 * 86_400)
        .unwrap();
    let carol_cert = inst
        .issue_user("Example University", "Carol", 30 * 86_400)
        .unwrap();
    ca.add_user("alice", "wonderland");
    let vo_id = ca.add_member("vo1", "local:alice", &["--group", "analysis"]);
    ca.add_member("vo2", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();

    // Two logins, two keys: the same VO ID.
    let login = |csr: String| {
        let ca_der = ca_der.clone();
        async move {
            https(
                srv.addr,
                &ca_der,
                None,
                "POST",
                "/v1/login",
                Some(&login_body("local", "alice", "wonderland", "vo1", &csr)),
            )
            .await
        }
    };
    let (csr1, key1) = new_csr();
    let (csr2, key2) = new_csr();
    let a1 = login(csr1).await;
    let a2 = login(csr2).await;
    assert_eq!(a1.status, 200, "{:?}", a1.json);
    assert_eq!(a2.status, 200);
    assert_eq!(a1.json["vo_id"], vo_id.as_str());
    assert_eq!(a2.json["vo_id"], vo_id.as_str());
    assert_ne!(a1.json["certificate"], a2.json["certificate"]);
    assert_eq!(verify_login(&a2.json, &key2, &ca.trust()).vo_id, vo_id);
    // In another VO, another VO ID.
    let (csr3, _) = new_csr();
    let a3 = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", "alice", "wonderland", "vo2", &csr3)),
    )
    .await;
    assert_eq!(a3.status, 200);
    assert_ne!(a3.json["vo_id"], vo_id.as_str());

    // Trust for verifying: both CAs, the vo1 AA.
    let mut trust = ca.trust();
    trust.add_ca(inst.cert_der.clone()).unwrap();

    // Alice's university certificate, linked by the admin to her VO ID.
    let cert_file = ca.tmp.path().join("alice-university.pem");
    std::fs::write(
        &cert_file,
        pem::encode(&pem::Pem::new("CERTIFICATE", alice_cert.cert_der.clone())),
    )
    .unwrap();
    let identity = ca
        .admin(&["cert-identity", "--cert", cert_file.to_str().unwrap()])
        .trim()
        .to_string();
    assert!(
        identity.starts_with("cert:") && identity.contains("Alice Liddell"),
        "{identity}"
    );
    // Linking to a VO ID that does not exist is refused.
    ca.admin_fails(&[
        "member",
        "add",
        "--vo",
        "vo1",
        "--identity",
        &identity,
        "--vo-id",
        "no-such-id",
    ]);
    assert_eq!(ca.add_member("vo1", &identity, &["--vo-id", &vo_id]), vo_id);

    // Over mutual TLS with a proxy of the university certificate (its
    // attributes, if any, do not matter here).
    let plain = ProxyCredential {
        chain: vec![alice_cert.cert_der.clone()],
        key_pkcs8: alice_cert.key_pkcs8.clone(),
    };
    let p = ProxyCredential::create(
        &plain.chain,
        &plain.key_pkcs8,
        &ibp_auth::proxy::ProxyOptions {
            lifetime: 3600,
            attributes: None,
            path_len: None,
        },
    )
    .unwrap();
    for cred in [&p, &plain] {
        let a = https(
            srv.addr,
            &ca_der,
            Some(cred),
            "POST",
            "/v1/attributes",
            Some(&json!({"vo": "vo1", "lifetime": 7200})),
        )
        .await;
        assert_eq!(a.status, 200, "{:?}\n{}", a.json, srv.log());
        assert_eq!(a.json["vo"], "vo1");
        assert_eq!(a.json["vo_id"], vo_id.as_str());
        assert_eq!(a.json["groups"][0]["name"], "analysis");
        let na = a.json["not_after"].as_i64().unwrap();
        assert!(na <= unix_now() + 7200 && na >= unix_now() + 7100);
        // Bound to the end-entity certificate: a new proxy of it verifies.
        let cred = proxy(
            std::slice::from_ref(&alice_cert.cert_der),
            &alice_cert.key_pkcs8,
            b64d(a.json["attributes"].as_str().unwrap()),
        );
        let id = ibp_auth::verify_chain(&cred.chain_der(), &trust, unix_now()).unwrap();
        assert_eq!(id.vo_id, vo_id);
        assert!(id.subject.contains("Alice Liddell"));
    }

    // The certificate issued at login was linked automatically.
    let login_cred = ProxyCredential {
        chain: vec![parse_cert(&a1.json)],
        key_pkcs8: key1.clone(),
    };
    let a = https(
        srv.addr,
        &ca_der,
        Some(&login_cred),
        "POST",
        "/v1/attributes",
        Some(&json!({"vo": "vo1", "lifetime": 48 * 3600})),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(a.json["vo_id"], vo_id.as_str());
    // Capped by the certificate's own expiry.
    assert!(a.json["not_after"].as_i64().unwrap() <= a1.json["not_after"].as_i64().unwrap());
    let members = ca.members("vo1");
    assert!(members
        .iter()
        .any(|m| m["linked_from"] == "local:alice" && m["vo_id"] == vo_id.as_str()));

    // No client certificate: 401. Carol's certificate is not linked: 403.
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/attributes",
        Some(&json!({"vo": "vo1"})),
    )
    .await;
    assert_eq!(a.status, 401);
    let carol = ProxyCredential {
        chain: vec![carol_cert.cert_der.clone()],
        key_pkcs8: carol_cert.key_pkcs8.clone(),
    };
    let a = https(
        srv.addr,
        &ca_der,
        Some(&carol),
        "POST",
        "/v1/attributes",
        Some(&json!({"vo": "vo1"})),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.json);

    // Removing alice's login identity removes the automatic link too: the
    // login certificate no longer gets attributes; the admin link stays.
    ca.admin(&[
        "member",
        "remove",
        "--vo",
        "vo1",
        "--identity",
        "local:alice",
    ]);
    let a = https(
        srv.addr,
        &ca_der,
        Some(&login_cred),
        "POST",
        "/v1/attributes",
        Some(&json!({"vo": "vo1"})),
    )
    .await;
    assert_eq!(a.status, 403);
    let a = https(
        srv.addr,
        &ca_der,
        Some(&plain),
        "POST",
        "/v1/attributes",
        Some(&json!({"vo": "vo1"})),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["vo_id"], vo_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_issued_certificate_is_audited() {
    let ca = CaDir::init();
    ca.add_user("alice", "wonderland");
    let vo_id = ca.add_member("vo1", "local:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let mut serials = Vec::new();
    for _ in 0..2 {
        let (csr, _) = new_csr();
        let a = https(
            srv.addr,
            &ca_der,
            None,
            "POST",
            "/v1/login",
            Some(&login_body("local", "alice", "wonderland", "vo1", &csr)),
        )
        .await;
        assert_eq!(a.status, 200);
        let der = parse_cert(&a.json);
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let hex: String = c.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
        serials.push((
            hex,
            c.subject().to_string(),
            c.validity().not_after.timestamp(),
        ));
    }
    let audit = ca.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    for (row, (serial, subject, not_after)) in audit.iter().zip(&serials) {
        assert_eq!(row["kind"], "certificate");
        assert_eq!(row["serial"], serial.as_str());
        assert_eq!(row["subject"], subject.as_str());
        assert_eq!(row["identity"], "local:alice");
        assert_eq!(row["vo"], "vo1");
        assert_eq!(row["vo_id"], vo_id.as_str());
        assert_eq!(row["not_after"].as_i64().unwrap(), *not_after);
        assert_eq!(row["lifetime"], 12 * 3600);
        assert_eq!(row["remote"], "127.0.0.1");
    }
    // The text form lists them too.
    let text = ca.admin(&["audit", "list"]);
    for (serial, _, _) in &serials {
        assert!(text.contains(serial.as_str()), "{text}");
    }
}
