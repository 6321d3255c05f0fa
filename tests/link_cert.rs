//! `lors link-cert` on a real grid (issue 21: "members link an extra
//! certificate to their VO ID themselves by proving possession of both"):
//! alice links a grid certificate of another CA (RSA, made with
//! `openssl` as grid CAs make them) with her login proxy; a proxy made
//! from that certificate with `lors proxy-init` then acts as alice (same
//! VO ID, her files) at the metadata manager, the L-Bone and the depots.
//! Before the link the certificate gets nothing; another member cannot
//! link it again; a key that is not the certificate's is refused.

mod common;
#[path = "../libs/auth/tests/voms_tools/mod.rs"]
mod voms_tools;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

fn whoami(g: &Grid, user: &str, env: &[(&str, &std::path::Path)]) -> serde_json::Value {
    let mut c = lors_cmd(g, user, &["whoami", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    serde_json::from_str(&ok(run_limited(c, LORS_LIMIT))).expect("whoami --json")
}

#[test]
fn a_linked_grid_certificate_acts_as_the_member() {
    let _timer = Timer::start("a_linked_grid_certificate_acts_as_the_member");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gridca = voms_tools::new_ca(dir, "gridca", "/O=Grid Test/CN=Grid Test CA");
    let cert = voms_tools::issue(
        dir,
        "alice-grid",
        "/O=Grid Test/OU=People/CN=Alice Liddell",
        &gridca,
        "clientAuth",
    );
    let other = voms_tools::issue(
        dir,
        "other",
        "/O=Grid Test/OU=People/CN=Someone Else",
        &gridca,
        "clientAuth",
    );
    let g = start(GridOptions {
        depots: 1,
        users: vec!["alice".into(), "bob".into()],
        extra_cas: vec![gridca.cert.clone()],
        ..Default::default()
    });
    keys_init(&g, "alice");
    let alice = whoami(&g, "alice", &[]);
    let data = bytes(150_000, 21);
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice"]));
    upload(&g, "alice", "f.bin", &data, "/vo1/alice/f", &[]);

    let grid_proxy = g.user("alice").dir.join("grid-proxy.pem");
    let proxy_init = || {
        let mut c = lors_cmd(
            &g,
            "alice",
            &[
                "proxy-init",
                "--cert",
                s(&cert.cert),
                "--key",
                s(&cert.key),
                "--json",
            ],
        );
        c.env("X509_USER_PROXY", &grid_proxy);
        run_limited(c, LORS_LIMIT)
    };
    // Not linked: the CA gives the certificate no attributes (exit 3).
    let o = proxy_init();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("not a member of VO vo1"), "{}", text(&o));

    // A key that is not the certificate's: refused before asking (exit 2).
    let o = lors(
        &g,
        "alice",
        &["link-cert", "--cert", s(&cert.cert), "--key", s(&other.key)],
    );
    assert_eq!(code(&o), 2, "{}", text(&o));

    // Linked with alice's login proxy and the certificate's key.
    let o = ok(lors(
        &g,
        "alice",
        &[
            "link-cert",
            "--cert",
            s(&cert.cert),
            "--key",
            s(&cert.key),
            "--json",
        ],
    ));
    let linked: serde_json::Value = serde_json::from_str(&o).expect("link-cert --json");
    assert_eq!(linked["status"], "linked", "{o}");
    assert_eq!(linked["vo"], "vo1");
    assert_eq!(linked["vo_id"], alice["vo_id"]);
    assert!(
        linked["identity"]
            .as_str()
            .unwrap()
            .contains("Alice Liddell"),
        "{o}"
    );

    // Bob, holding the key too, cannot take it over (exit 8, conflict).
    let o = lors(
        &g,
        "bob",
        &["link-cert", "--cert", s(&cert.cert), "--key", s(&cert.key)],
    );
    assert_eq!(code(&o), 8, "{}", text(&o));
    assert!(text(&o).contains("another member"), "{}", text(&o));

    // A proxy of the grid certificate is alice: same VO ID, her file.
    let o = proxy_init();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let p: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p["vo_id"], alice["vo_id"]);
    let env = [("X509_USER_PROXY", grid_proxy.as_path())];
    let me = whoami(&g, "alice", &env);
    assert_eq!(me["vo_id"], alice["vo_id"]);
    let out = g.user("alice").dir.join("read-back");
    let mut c = lors_cmd(&g, "alice", &["download", "/vo1/alice/f", s(&out)]);
    c.env("X509_USER_PROXY", &grid_proxy);
    ok(run_limited(c, LORS_LIMIT));
    assert_file_is(&out, &data, "alice's file through the linked certificate");
    // And it writes as her: a file uploaded with it is hers.
    let src = write(&g.user("alice").dir, "g.bin", &data[..1000]);
    let mut c = lors_cmd(&g, "alice", &["upload", s(&src), "/vo1/alice/g"]);
    c.env("X509_USER_PROXY", &grid_proxy);
    ok(run_limited(c, LORS_LIMIT));
    download_is(
        &g,
        "alice",
        "/vo1/alice/g",
        &data[..1000],
        "written via the grid certificate",
    );
}
