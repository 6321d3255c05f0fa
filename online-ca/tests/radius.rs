//! Logins through a real FreeRADIUS (PAP), started on loopback for each
//! test. Without FreeRADIUS these tests fail, with a message saying what
//! to install.

mod common;

use common::*;
use serde_json::Value;

const SECRET: &str = "s3cret-for-tests";

fn radius_config(server: &str, secret: &str) -> String {
    format!(
        "[radius]\nserver = \"{server}\"\nsecret = \"{secret}\"\ntimeout = \"1s\"\nretries = 0\n"
    )
}

async fn login(srv: &Server, ca_der: &[u8], user: &str, pw: &str, csr: &str) -> Answer {
    https(
        srv.addr,
        ca_der,
        None,
        "POST",
        "/v1/login",
        Some(&login_body("radius", user, pw, "vo1", csr)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn radius_good_and_bad_password() {
    let fr = FreeRadius::start(
        SECRET,
        &[("alice@uni.example", "wonderland"), ("bob", "builder")],
    );
    let ca = CaDir::init();
    ca.configure(&radius_config(&fr.server(), SECRET));
    let vo_id = ca.add_member("vo1", "radius:alice@uni.example", &["--group", "eduroam"]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();

    let (csr, key) = new_csr();
    let a = login(&srv, &ca_der, "alice@uni.example", "wonderland", &csr).await;
    assert_eq!(a.status, 200, "{:?}\n{}", a.json, srv.log());
    assert_eq!(a.json["vo_id"], vo_id.as_str());
    let id = verify_login(&a.json, &key, &ca.trust());
    assert_eq!(id.vo_id, vo_id);
    assert_eq!(id.groups[0].name, "eduroam");
    assert!(
        id.subject.contains("CN=radius:alice@uni.example"),
        "{}",
        id.subject
    );

    // A second login (another key) keeps the VO ID.
    let (csr2, key2) = new_csr();
    let a = login(&srv, &ca_der, "alice@uni.example", "wonderland", &csr2).await;
    assert_eq!(a.status, 200);
    assert_eq!(verify_login(&a.json, &key2, &ca.trust()).vo_id, vo_id);

    // Wrong password and unknown user: 401.
    let a = login(&srv, &ca_der, "alice@uni.example", "wrong", &csr).await;
    assert_eq!(a.status, 401, "{:?}", a.json);
    let a = login(&srv, &ca_der, "mallory", "wonderland", &csr).await;
    assert_eq!(a.status, 401);
    // Bob authenticates with RADIUS but is not a member: 403.
    let a = login(&srv, &ca_der, "bob", "builder", &csr).await;
    assert_eq!(a.status, 403, "{:?}", a.json);

    // FreeRADIUS saw the logins.
    let out = fr.output.lock().unwrap().join("\n");
    assert!(out.contains("Login OK"), "{out}");
    assert!(out.contains("Login incorrect"), "{out}");
    assert!(!srv.log().contains("wonderland"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_radius_secret_is_not_a_wrong_password() {
    let fr = FreeRadius::start(SECRET, &[("alice", "wonderland")]);
    let ca = CaDir::init();
    ca.configure(&format!(
        "{}[rate_limit]\nmax_failures = 2\n",
        radius_config(&fr.server(), "not-the-secret")
    ));
    ca.add_member("vo1", "radius:alice", &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let (csr, _) = new_csr();
    // Right password, wrong shared secret: FreeRADIUS drops the request
    // (its Message-Authenticator does not verify). That is a gateway
    // error, logged as a configuration problem, and not counted as a
    // failed login.
    for _ in 0..3 {
        let a = login(&srv, &ca_der, "alice", "wonderland", &csr).await;
        assert_eq!(a.status, 502, "{:?}", a.json);
        let e = a.json["error"].as_str().unwrap();
        assert!(e.contains("RADIUS") && !e.contains("password"), "{e}");
    }
    let log = srv.log();
    assert!(log.contains("shared secret"), "{log}");
    let out = fr.output.lock().unwrap().join("\n");
    assert!(out.contains("Shared secret is incorrect"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn radius_server_down_is_a_gateway_error() {
    // A port where nothing answers.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = sock.local_addr().unwrap().to_string();
    let ca = CaDir::init();
    ca.configure(&radius_config(&server, SECRET));
    ca.add_member("vo1", "radius:alice", &[]);
    let srv = ca.serve();
    let (csr, _) = new_csr();
    let a = login(&srv, &ca.ca_der(), "alice", "wonderland", &csr).await;
    assert_eq!(a.status, 502, "{:?}", a.json);
    drop(sock);
    let _: &Value = &a.json;
}
