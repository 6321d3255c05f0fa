//! Multi-VO logins (`also` in `POST /v1/login`): one certificate with the
//! attributes of each VO, verified each on its own; refused for a VO the
//! login is not a member of, an unknown or repeated VO, and any
//! pseudonymous VO (docs/identity.md, "Several VOs in one proxy").

mod common;

use common::*;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::ProxyCredential;
use serde_json::{json, Value};

fn body(user: &str, vo: &str, also: &[&str], csr: &str) -> Value {
    let mut b = login_body("local", user, &format!("pw-of-{user}"), vo, csr);
    b["also"] = json!(also);
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn one_login_gives_attributes_of_each_vo() {
    let ca = CaDir::init();
    ca.add_user("alice", "pw-of-alice");
    ca.add_user("bob", "pw-of-bob");
    let alice1 = ca.add_member("vo1", "local:alice", &["--group", "admins"]);
    let alice2 = ca.add_member("vo2", "local:alice", &[]);
    ca.add_member("vo1", "local:bob", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let login = |b: Value| {
        let ca_der = ca_der.clone();
        async move { https(srv.addr, &ca_der, None, "POST", "/v1/login", Some(&b)).await }
    };

    let (csr, key) = new_csr();
    let a = login(body("alice", "vo1", &["vo2"], &csr)).await;
    assert_eq!(a.status, 200, "{:?}\n{}", a.json, srv.log());
    assert_eq!(a.json["vo_id"], alice1.as_str());
    assert_eq!(a.json["also"][0]["vo"], "vo2");
    assert_eq!(a.json["also"][0]["vo_id"], alice2.as_str());
    assert_eq!(a.json["also"][0]["groups"], json!([]));
    let cert = pem_cert(a.json["certificate"].as_str().unwrap());
    let p = ProxyCredential::create_multi_vo(
        std::slice::from_ref(&cert),
        &key,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(b64d(a.json["attributes"].as_str().unwrap())),
            path_len: None,
        },
        &[b64d(a.json["also"][0]["attributes"].as_str().unwrap())],
        &[],
    )
    .unwrap();
    let id = ibp_auth::verify_chain(&p.chain_der(), &ca.trust(), ibp_auth::unix_now()).unwrap();
    assert_eq!(id.vos(), ["vo1", "vo2"]);
    assert_eq!(id.groups[0].name, "admins");
    let in2 = id.for_vo("vo2").unwrap();
    assert_eq!(in2.vo_id, alice2);
    assert!(in2.groups.is_empty(), "vo1's admins group stays in vo1");
    // Audited per VO, for the one certificate.
    let (_, c) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let serial: String = c.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    let rows: Vec<Value> = ca
        .audit()
        .into_iter()
        .filter(|r| r["serial"] == serial.as_str())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r["vo"] == "vo1" && r["kind"] == "certificate"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r["vo"] == "vo2"
            && r["kind"] == "attributes"
            && r["vo_id"] == alice2.as_str()),
        "{rows:?}"
    );

    // Refusals, before any certificate is issued.
    let issued = ca.audit().len();
    let (csr, _) = new_csr();
    let r = login(body("bob", "vo1", &["vo2"], &csr)).await;
    assert_eq!(r.status, 403, "{:?}", r.json);
    assert!(
        r.json["error"]
            .as_str()
            .unwrap()
            .contains("not a member of VO vo2"),
        "{:?}",
        r.json
    );
    for (also, why) in [
        (&["vo3"][..], "unknown VO \"vo3\""),
        (&["vo1"][..], "asked for twice"),
        (&["vo2", "vo2"][..], "asked for twice"),
        (&["vo2"; 8][..], "at most 8 VOs"),
    ] {
        let r = login(body("alice", "vo1", also, &csr)).await;
        assert_eq!(r.status, 400, "{also:?}: {:?}", r.json);
        assert!(
            r.json["error"].as_str().unwrap().contains(why),
            "{also:?}: {:?}",
            r.json
        );
    }
    assert_eq!(ca.audit().len(), issued, "nothing issued");
    drop(srv);

    // A pseudonymous VO among them: refused, whichever comes first.
    ca.configure("[vos.vo2]\npseudonymous = true\n");
    let srv = ca.serve();
    let login = |b: Value| {
        let ca_der = ca_der.clone();
        async move { https(srv.addr, &ca_der, None, "POST", "/v1/login", Some(&b)).await }
    };
    for (vo, also) in [("vo1", "vo2"), ("vo2", "vo1")] {
        let r = login(body("alice", vo, &[also], &csr)).await;
        assert_eq!(r.status, 400, "{:?}", r.json);
        assert!(
            r.json["error"]
                .as_str()
                .unwrap()
                .contains("VO vo2 is pseudonymous"),
            "{:?}",
            r.json
        );
    }
    // Alone, it still logs in.
    let r = login(body("alice", "vo2", &[], &csr)).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
}
