//! Members link another certificate to their VO ID themselves
//! (`/v1/link/challenge`, `/v1/link`; docs/identity.md, "Linking a
//! certificate yourself"), against the real `online-ca serve`: the happy
//! path (the linked certificate then gets the member's VO ID at
//! `/v1/attributes`, verified by `ibp-auth`), every refusal, the approval
//! flow with `online-ca admin member pending|approve-link|deny-link`, the
//! audit records and the rate limiter.

mod common;

use base64::Engine;
use common::*;
use ibp_auth::pki::{Authority, Issued};
use ibp_auth::{unix_now, ProxyCredential};
use serde_json::{json, Value};

const INST_ORG: &str = "Example University";

/// A CA with users alice, bob, dave (vo1) and carol (vo2 only), and a
/// university CA the online CA trusts (its `trust/ca/`).
struct Fixture {
    ca: CaDir,
    inst: Authority,
}

fn fixture(extra_config: &str) -> Fixture {
    let ca = CaDir::init();
    let inst = Authority::new_ca(INST_ORG, "Example University CA", 30).unwrap();
    std::fs::write(
        ca.dir.join("trust/ca/university.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", inst.cert_der.clone())),
    )
    .unwrap();
    ca.configure(extra_config);
    for u in ["alice", "bob", "dave", "carol"] {
        ca.add_user(u, "pw");
    }
    for u in ["alice", "bob", "dave"] {
        ca.add_member("vo1", &format!("local:{u}"), &[]);
    }
    ca.add_member("vo2", "local:carol", &[]);
    Fixture { ca, inst }
}

fn pem_chain(cert: &Issued) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", cert.cert_der.clone()))
}

/// Logs `user` in to `vo`: a proxy of the issued certificate (what `lors
/// login` writes), and the VO ID.
async fn login(srv: &Server, ca_der: &[u8], user: &str, vo: &str) -> (ProxyCredential, String) {
    let (csr, key) = new_csr();
    let a = https(
        srv.addr,
        ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", user, "pw", vo, &csr)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    let cert = pem_cert(a.json["certificate"].as_str().unwrap());
    let cred = proxy(&[cert], &key, b64d(a.json["attributes"].as_str().unwrap()));
    (cred, a.json["vo_id"].as_str().unwrap().to_string())
}

async fn challenge(
    srv: &Server,
    ca_der: &[u8],
    who: Option<&ProxyCredential>,
    vo: &str,
    chain: &str,
) -> Answer {
    https(
        srv.addr,
        ca_der,
        who,
        "POST",
        "/v1/link/challenge",
        Some(&json!({"vo": vo, "chain": chain})),
    )
    .await
}

/// Signs the challenge of answer `ch` with the PKCS#8 key `key`.
fn sign(ch: &Answer, key: &[u8]) -> String {
    let msg = b64d(ch.json["challenge"].as_str().unwrap());
    // What was signed is what the client can rebuild from the parts.
    assert!(msg.starts_with(b"ibp-grid link-cert v1\0"));
    let sig = ibp_auth::keys::SigningKey::from_pkcs8(key)
        .unwrap()
        .sign(&msg)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(sig)
}

async fn link(
    srv: &Server,
    ca_der: &[u8],
    who: Option<&ProxyCredential>,
    vo: &str,
    chain: &str,
    nonce: &Value,
    signature: &str,
) -> Answer {
    https(
        srv.addr,
        ca_der,
        who,
        "POST",
        "/v1/link",
        Some(&json!({"vo": vo, "chain": chain, "nonce": nonce, "signature": signature})),
    )
    .await
}

/// `/v1/attributes` with the plain certificate `cert` (mutual TLS).
async fn attributes_of(srv: &Server, ca_der: &[u8], cert: &Issued, vo: &str) -> Answer {
    let plain = ProxyCredential {
        chain: vec![cert.cert_der.clone()],
        key_pkcs8: cert.key_pkcs8.clone(),
    };
    https(
        srv.addr,
        ca_der,
        Some(&plain),
        "POST",
        "/v1/attributes",
        Some(&json!({"vo": vo})),
    )
    .await
}

fn error(a: &Answer) -> String {
    a.json["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_links_a_certificate_by_proving_possession() {
    let f = fixture("");
    let ca = &f.ca;
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (alice, alice_id) = login(&srv, &ca_der, "alice", "vo1").await;
    let grid = f
        .inst
        .issue_user(INST_ORG, "Alice Liddell", 30 * 86_400)
        .unwrap();
    let chain = pem_chain(&grid);

    // Not linked yet: the certificate is nobody at the CA.
    assert_eq!(attributes_of(&srv, &ca_der, &grid, "vo1").await.status, 403);

    let ch = challenge(&srv, &ca_der, Some(&alice), "vo1", &chain).await;
    assert_eq!(ch.status, 200, "{:?}", ch.json);
    assert_eq!(ch.json["vo_id"], alice_id.as_str());
    let identity = ch.json["identity"].as_str().unwrap().to_string();
    assert!(
        identity.starts_with("cert:") && identity.contains("Alice Liddell"),
        "{identity}"
    );
    let expires = ch.json["expires_at"].as_i64().unwrap();
    assert!(expires > unix_now() && expires <= unix_now() + 300);
    let sig = sign(&ch, &grid.key_pkcs8);
    let a = link(
        &srv,
        &ca_der,
        Some(&alice),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sig,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}\n{}", a.json, srv.log());
    assert_eq!(a.json["status"], "linked");
    assert_eq!(a.json["vo_id"], alice_id.as_str());
    assert_eq!(a.json["identity"], identity.as_str());

    // The linked certificate now gets alice's VO ID, and a proxy of it
    // with those attributes verifies as alice.
    let at = attributes_of(&srv, &ca_der, &grid, "vo1").await;
    assert_eq!(at.status, 200, "{:?}", at.json);
    assert_eq!(at.json["vo_id"], alice_id.as_str());
    let p = proxy(
        std::slice::from_ref(&grid.cert_der),
        &grid.key_pkcs8,
        b64d(at.json["attributes"].as_str().unwrap()),
    );
    let mut trust = ca.trust();
    trust.add_ca(f.inst.cert_der.clone()).unwrap();
    let id = ibp_auth::verify_chain(&p.chain_der(), &trust, unix_now()).unwrap();
    assert_eq!(id.vo_id, alice_id);
    assert!(id.subject.contains("Alice Liddell"));
    // Not in another VO.
    assert_eq!(attributes_of(&srv, &ca_der, &grid, "vo2").await.status, 403);

    // The member list shows it, owned by alice's login; the audit log
    // has the link (who proved it, what was linked).
    let members = ca.members("vo1");
    assert!(
        members.iter().any(|m| m["identity"] == identity.as_str()
            && m["vo_id"] == alice_id.as_str()
            && m["linked_from"] == "local:alice"),
        "{members:?}"
    );
    let audit = ca.audit();
    let rec = audit
        .iter()
        .find(|r| r["kind"] == "link")
        .expect("a link audit record");
    assert_eq!(rec["subject"], identity.as_str());
    assert_eq!(rec["vo_id"], alice_id.as_str());
    assert!(rec["identity"].as_str().unwrap().contains("local:alice"));

    // Linking it again: 409, at the challenge already.
    let again = challenge(&srv, &ca_der, Some(&alice), "vo1", &chain).await;
    assert_eq!(again.status, 409, "{:?}", again.json);
    assert!(error(&again).contains("already linked to your VO ID"));

    // Replay: the operator removes the link; the very same signed request
    // sent again is refused (the challenge was spent), so nothing is
    // linked behind the member's back.
    ca.admin(&["member", "remove", "--vo", "vo1", "--identity", &identity]);
    let replay = link(
        &srv,
        &ca_der,
        Some(&alice),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sig,
    )
    .await;
    assert_eq!(replay.status, 401, "{:?}", replay.json);
    assert!(error(&replay).contains("already used"), "{:?}", replay.json);
    assert_eq!(attributes_of(&srv, &ca_der, &grid, "vo1").await.status, 403);

    // Linked again (a fresh challenge); removing alice's login identity
    // removes the link with it.
    let ch = challenge(&srv, &ca_der, Some(&alice), "vo1", &chain).await;
    let sig = sign(&ch, &grid.key_pkcs8);
    let a = link(
        &srv,
        &ca_der,
        Some(&alice),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sig,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(attributes_of(&srv, &ca_der, &grid, "vo1").await.status, 200);
    ca.admin(&[
        "member",
        "remove",
        "--vo",
        "vo1",
        "--identity",
        "local:alice",
    ]);
    assert_eq!(attributes_of(&srv, &ca_der, &grid, "vo1").await.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal() {
    let f = fixture("");
    let ca = &f.ca;
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (bob, bob_id) = login(&srv, &ca_der, "bob", "vo1").await;
    let (dave, _) = login(&srv, &ca_der, "dave", "vo1").await;
    let (carol, _) = login(&srv, &ca_der, "carol", "vo2").await;
    let bob_grid = f.inst.issue_user(INST_ORG, "Bob", 30 * 86_400).unwrap();
    let other = f.inst.issue_user(INST_ORG, "Mallory", 30 * 86_400).unwrap();
    let chain = pem_chain(&bob_grid);

    // No client credential: 401 at both steps.
    let a = challenge(&srv, &ca_der, None, "vo1", &chain).await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(error(&a).contains("client certificate is required"));
    let a = link(&srv, &ca_der, None, "vo1", &chain, &json!("x"), "AA==").await;
    assert_eq!(a.status, 401);

    // The linked certificate's own credential cannot stand in for a
    // member's: a certificate of a trusted CA that is nobody at the CA.
    let plain = ProxyCredential {
        chain: vec![other.cert_der.clone()],
        key_pkcs8: other.key_pkcs8.clone(),
    };
    let a = challenge(&srv, &ca_der, Some(&plain), "vo1", &chain).await;
    assert_eq!(a.status, 403, "{:?}", a.json);

    // A member of another VO only: 403.
    let a = challenge(&srv, &ca_der, Some(&carol), "vo1", &chain).await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(error(&a).contains("is not a member of VO vo1"));

    // A signature by another key: no possession, 401, and the challenge
    // is spent: the right signature afterwards is refused too.
    let ch = challenge(&srv, &ca_der, Some(&bob), "vo1", &chain).await;
    assert_eq!(ch.status, 200, "{:?}", ch.json);
    let a = link(
        &srv,
        &ca_der,
        Some(&bob),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sign(&ch, &other.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(error(&a).contains("possession not proven"), "{:?}", a.json);
    let a = link(
        &srv,
        &ca_der,
        Some(&bob),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sign(&ch, &bob_grid.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 401);
    assert!(error(&a).contains("already used"));

    // A challenge for one certificate does not link another (signed by
    // that other one's key).
    let ch = challenge(&srv, &ca_der, Some(&bob), "vo1", &chain).await;
    let a = link(
        &srv,
        &ca_der,
        Some(&bob),
        "vo1",
        &pem_chain(&other),
        &ch.json["nonce"],
        &sign(&ch, &other.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(error(&a).contains("another certificate"), "{:?}", a.json);
    // Nor for another member: dave cannot answer bob's challenge.
    let ch = challenge(&srv, &ca_der, Some(&bob), "vo1", &chain).await;
    let a = link(
        &srv,
        &ca_der,
        Some(&dave),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sign(&ch, &bob_grid.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    assert!(error(&a).contains("another VO, member"), "{:?}", a.json);

    // A certificate of a CA the online CA does not trust: 403.
    let rogue = Authority::new_ca("Rogue", "Rogue CA", 30).unwrap();
    let rogue_cert = rogue.issue_user("Rogue", "Bob", 30 * 86_400).unwrap();
    let a = challenge(&srv, &ca_der, Some(&bob), "vo1", &pem_chain(&rogue_cert)).await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(error(&a).contains("the certificate to link is refused"));

    // An expired certificate: 403.
    let expired = f.inst.issue_user(INST_ORG, "Bob", -200).unwrap();
    let a = challenge(&srv, &ca_der, Some(&bob), "vo1", &pem_chain(&expired)).await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(error(&a).contains("the certificate to link is refused"));

    // A proxy is not a certificate to link.
    let p = proxy(
        std::slice::from_ref(&bob_grid.cert_der),
        &bob_grid.key_pkcs8,
        Vec::new(),
    );
    let proxy_pem: String = p
        .chain
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone())))
        .collect();
    let a = challenge(&srv, &ca_der, Some(&bob), "vo1", &proxy_pem).await;
    assert_eq!(a.status, 400, "{:?}", a.json);
    assert!(error(&a).contains("a proxy cannot be linked"));

    // Bob links his certificate; dave, holding its key too, cannot link
    // it to his VO ID: 409.
    let ch = challenge(&srv, &ca_der, Some(&bob), "vo1", &chain).await;
    let a = link(
        &srv,
        &ca_der,
        Some(&bob),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sign(&ch, &bob_grid.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(a.json["vo_id"], bob_id.as_str());
    let a = challenge(&srv, &ca_der, Some(&dave), "vo1", &chain).await;
    assert_eq!(a.status, 409, "{:?}", a.json);
    assert!(error(&a).contains("another member"));
    // The login certificate of another member neither.
    let a = challenge(
        &srv,
        &ca_der,
        Some(&dave),
        "vo1",
        &pem::encode(&pem::Pem::new("CERTIFICATE", bob.chain[1].clone())),
    )
    .await;
    assert_eq!(a.status, 409, "{:?}", a.json);

    // A removed member: the challenge they got before is worth nothing,
    // and no new one is given.
    let dave_grid = f.inst.issue_user(INST_ORG, "Dave", 30 * 86_400).unwrap();
    let dchain = pem_chain(&dave_grid);
    let ch = challenge(&srv, &ca_der, Some(&dave), "vo1", &dchain).await;
    assert_eq!(ch.status, 200, "{:?}", ch.json);
    ca.admin(&[
        "member",
        "remove",
        "--vo",
        "vo1",
        "--identity",
        "local:dave",
    ]);
    let a = link(
        &srv,
        &ca_der,
        Some(&dave),
        "vo1",
        &dchain,
        &ch.json["nonce"],
        &sign(&ch, &dave_grid.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    let a = challenge(&srv, &ca_der, Some(&dave), "vo1", &dchain).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        attributes_of(&srv, &ca_der, &dave_grid, "vo1").await.status,
        403
    );
    // Only bob's link was made.
    assert_eq!(ca.audit().iter().filter(|r| r["kind"] == "link").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_required_pending_until_approved_or_denied() {
    let f = fixture("[vos.vo1]\nlink_approval = true\n");
    let ca = &f.ca;
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (alice, alice_id) = login(&srv, &ca_der, "alice", "vo1").await;
    let grid = f
        .inst
        .issue_user(INST_ORG, "Alice Liddell", 30 * 86_400)
        .unwrap();
    let second = f
        .inst
        .issue_user(INST_ORG, "Alice (laptop)", 30 * 86_400)
        .unwrap();

    let mut requests = Vec::new();
    for cert in [&grid, &second] {
        let chain = pem_chain(cert);
        let ch = challenge(&srv, &ca_der, Some(&alice), "vo1", &chain).await;
        assert_eq!(ch.status, 200, "{:?}", ch.json);
        let a = link(
            &srv,
            &ca_der,
            Some(&alice),
            "vo1",
            &chain,
            &ch.json["nonce"],
            &sign(&ch, &cert.key_pkcs8),
        )
        .await;
        assert_eq!(a.status, 202, "{:?}", a.json);
        assert_eq!(a.json["status"], "pending");
        requests.push(a.json["request"].as_str().unwrap().to_string());
        // Pending: not linked.
        assert_eq!(attributes_of(&srv, &ca_der, cert, "vo1").await.status, 403);
        // Asking again while it waits: 409.
        let ch = challenge(&srv, &ca_der, Some(&alice), "vo1", &chain).await;
        let a = link(
            &srv,
            &ca_der,
            Some(&alice),
            "vo1",
            &chain,
            &ch.json["nonce"],
            &sign(&ch, &cert.key_pkcs8),
        )
        .await;
        assert_eq!(a.status, 409, "{:?}", a.json);
        assert!(error(&a).contains("already waiting"));
    }

    let pending: Vec<Value> =
        serde_json::from_str(&ca.admin(&["member", "pending", "--vo", "vo1", "--json"])).unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending
        .iter()
        .all(|r| r["state"] == "pending" && r["vo_id"] == alice_id.as_str()));
    let text = ca.admin(&["member", "pending", "--vo", "vo1"]);
    assert!(
        text.contains(&requests[0]) && text.contains("Alice Liddell"),
        "{text}"
    );
    // Nothing pending in vo2.
    assert_eq!(
        ca.admin(&["member", "pending", "--vo", "vo2", "--json"])
            .trim(),
        "[]"
    );

    // Approved: linked, alice's VO ID.
    let out = ca.admin(&[
        "member",
        "approve-link",
        "--vo",
        "vo1",
        "--request",
        &requests[0],
    ]);
    assert!(out.contains("approved"), "{out}");
    let at = attributes_of(&srv, &ca_der, &grid, "vo1").await;
    assert_eq!(at.status, 200, "{:?}", at.json);
    assert_eq!(at.json["vo_id"], alice_id.as_str());
    // Decided once.
    let err = ca.admin_fails(&[
        "member",
        "deny-link",
        "--vo",
        "vo1",
        "--request",
        &requests[0],
    ]);
    assert!(err.contains("approved already"), "{err}");
    // A request of another VO is not found there.
    ca.admin_fails(&[
        "member",
        "approve-link",
        "--vo",
        "vo2",
        "--request",
        &requests[1],
    ]);

    // Denied: not linked, ever, by that request.
    ca.admin(&[
        "member",
        "deny-link",
        "--vo",
        "vo1",
        "--request",
        &requests[1],
    ]);
    assert_eq!(
        attributes_of(&srv, &ca_der, &second, "vo1").await.status,
        403
    );
    ca.admin_fails(&[
        "member",
        "approve-link",
        "--vo",
        "vo1",
        "--request",
        &requests[1],
    ]);
    assert_eq!(
        ca.admin(&["member", "pending", "--vo", "vo1", "--json"])
            .trim(),
        "[]"
    );
    let all: Vec<Value> =
        serde_json::from_str(&ca.admin(&["member", "pending", "--vo", "vo1", "--all", "--json"]))
            .unwrap();
    let states: Vec<&str> = all.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["approved", "denied"]);

    // Every step audited.
    let kinds: Vec<String> = ca
        .audit()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .filter(|k| k.starts_with("link"))
        .collect();
    assert_eq!(
        kinds,
        [
            "link-request",
            "link-request",
            "link-approved",
            "link-denied"
        ]
    );

    // A request whose member was removed before approval stays pending
    // and is not linked.
    let (bob, _) = login(&srv, &ca_der, "bob", "vo1").await;
    let bob_grid = f.inst.issue_user(INST_ORG, "Bob", 30 * 86_400).unwrap();
    let chain = pem_chain(&bob_grid);
    let ch = challenge(&srv, &ca_der, Some(&bob), "vo1", &chain).await;
    let a = link(
        &srv,
        &ca_der,
        Some(&bob),
        "vo1",
        &chain,
        &ch.json["nonce"],
        &sign(&ch, &bob_grid.key_pkcs8),
    )
    .await;
    assert_eq!(a.status, 202, "{:?}", a.json);
    let req = a.json["request"].as_str().unwrap().to_string();
    ca.admin(&["member", "remove", "--vo", "vo1", "--identity", "local:bob"]);
    let err = ca.admin_fails(&["member", "approve-link", "--vo", "vo1", "--request", &req]);
    assert!(err.contains("no longer a member"), "{err}");
    assert_eq!(
        attributes_of(&srv, &ca_der, &bob_grid, "vo1").await.status,
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_signatures_are_rate_limited() {
    let f = fixture("");
    let srv = f.ca.serve();
    let ca_der = f.ca.ca_der();
    let (alice, _) = login(&srv, &ca_der, "alice", "vo1").await;
    let grid = f.inst.issue_user(INST_ORG, "Alice", 30 * 86_400).unwrap();
    let wrong = f.inst.issue_user(INST_ORG, "Other", 30 * 86_400).unwrap();
    let chain = pem_chain(&grid);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let ch = challenge(&srv, &ca_der, Some(&alice), "vo1", &chain).await;
        if ch.status != 200 {
            statuses.push(ch.status);
            assert!(ch.headers.contains_key("retry-after"));
            break;
        }
        let a = link(
            &srv,
            &ca_der,
            Some(&alice),
            "vo1",
            &chain,
            &ch.json["nonce"],
            &sign(&ch, &wrong.key_pkcs8),
        )
        .await;
        statuses.push(a.status);
    }
    // Five failures (the CA's default budget per member and address),
    // then 429.
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "{}", srv.log());
}
