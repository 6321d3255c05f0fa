//! `lors trust fetch` against the grid's real online CA (issue 19: "the
//! trust directory can be written from the online CA's `/v1/trust` by a
//! command, as the user guide says"), and against a server in between that
//! serves the real CA's bundle with its own certificate.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use common::*;
use ibp_grid::grid::GridOptions;

/// The certificates (DER) of a PEM file.
fn certs(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ibp_auth::trust::pem_certificates(&text).expect("PEM certificates")
}

fn fingerprint(der: &[u8]) -> String {
    lors::trust_fetch::fingerprint(der)
}

#[test]
fn trust_fetch_writes_what_the_ca_publishes_once_its_fingerprint_is_given() {
    let _timer =
        Timer::start("trust_fetch_writes_what_the_ca_publishes_once_its_fingerprint_is_given");
    let g = start(GridOptions {
        depots: 1,
        ..GridOptions::default()
    });
    let real_ca = certs(&g.trust_dir.join("ca/ca.pem"));
    assert_eq!(real_ca.len(), 1, "the grid's CA is one certificate");
    let fp = fingerprint(&real_ca[0]);
    let dir = g.user("alice").dir.join("fetched-trust");

    // Without a fingerprint: nothing written, the fingerprint shown.
    let o = lors(&g, "alice", &["trust", "fetch", s(&dir)]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        stderr(&o).contains(&format!("SHA256:{fp}")),
        "the real fingerprint is shown: {}",
        text(&o)
    );
    assert!(!dir.exists(), "nothing is written without a fingerprint");

    // A wrong fingerprint: refused, nothing written.
    let wrong = fingerprint(b"some other certificate");
    let o = lors(
        &g,
        "alice",
        &["trust", "fetch", s(&dir), "--fingerprint", &wrong],
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        stderr(&o).contains("no CA certificate with fingerprint"),
        "{}",
        text(&o)
    );
    assert!(!dir.exists(), "nothing is written with a wrong fingerprint");

    // The right one, spelled as openssl prints it in lower case: written.
    let spelled = format!("sha256 Fingerprint={}", fp.to_lowercase());
    let out = ok(lors(
        &g,
        "alice",
        &["trust", "fetch", s(&dir), "--fingerprint", &spelled],
    ));
    assert!(out.contains(&fp), "{out}");
    assert_eq!(certs(&dir.join("ca/ca.pem")), real_ca);
    assert_eq!(
        certs(&dir.join("vomsdir/vo1/aa.pem")),
        certs(&g.trust_dir.join("vomsdir/vo1/aa.pem")),
        "the VO's AA certificate as the CA keeps it"
    );

    // The fetched directory is enough to log in and to verify the proxy's
    // VO attributes (the AA pinned in vomsdir).
    let proxy = g.user("alice").dir.join("proxy-from-fetched");
    let mut c = lors_cmd(
        &g,
        "alice",
        &[
            "login",
            "--trust",
            s(&dir),
            "--vo",
            "vo1",
            "--method",
            "local",
            "--user",
            "alice",
            "--password-stdin",
            "--json",
        ],
    );
    c.env("X509_USER_PROXY", &proxy)
        .stdin(std::process::Stdio::piped());
    let o = run_with_stdin(c, &format!("{}\n", g.user("alice").password));
    assert_eq!(code(&o), 0, "login with the fetched trust: {}", text(&o));
    let new: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("login --json");
    assert_eq!(new["vo"], "vo1", "{new}");
    assert_eq!(new["proxy"], s(&proxy), "{new}");
    assert!(new["timeleft"].as_i64().unwrap_or(0) > 11 * 3600, "{new}");
    let mut c = lors_cmd(&g, "alice", &["proxy-info", "--json", "--trust", s(&dir)]);
    c.env("X509_USER_PROXY", &proxy);
    let info: serde_json::Value =
        serde_json::from_str(&ok(run_limited(c, LORS_LIMIT))).expect("proxy-info --json");
    assert_eq!(info["verified"], serde_json::json!(true), "{info}");

    // The signing keys the CA publishes are written: with the fetched
    // directory alone, a download checks the exNode's signature by the
    // metadata manager and the depots' tickets.
    let published = std::fs::read_dir(dir.join("metadata"))
        .expect("metadata/ written")
        .map(|e| std::fs::read_to_string(e.expect("an entry").path()).expect("a key"))
        .collect::<Vec<_>>();
    let grid_key = std::fs::read_to_string(g.trust_dir.join("metadata/metadata.pub"))
        .expect("the grid's metadata key");
    assert_eq!(published, vec![format!("{}\n", grid_key.trim())]);
    assert!(
        std::fs::read_dir(dir.join("lbone"))
            .expect("lbone/ written")
            .count()
            == 1
    );
    keys_init(&g, "alice");
    let data = bytes(50_000, 4);
    upload(&g, "alice", "fetched.bin", &data, "/vo1/fetched", &[]);
    let got = g.user("alice").dir.join("fetched.out");
    let mut c = lors_cmd(&g, "alice", &["download", "/vo1/fetched", s(&got)]);
    c.env("X509_USER_PROXY", &proxy).env("LORS_TRUST_DIR", &dir);
    ok(run_limited(c, LORS_LIMIT));
    assert_file_is(&got, &data, "downloaded with the fetched trust directory");

    for destroyed in [true, false] {
        let mut c = lors_cmd(&g, "alice", &["proxy-destroy", "--json"]);
        c.env("X509_USER_PROXY", &proxy);
        let v: serde_json::Value =
            serde_json::from_str(&ok(run_limited(c, LORS_LIMIT))).expect("proxy-destroy --json");
        assert_eq!(v["destroyed"], destroyed, "{v}");
    }
    assert!(!proxy.exists());

    // A different CA already in the directory is not replaced silently.
    let other = g.user("alice").dir.join("other-trust");
    std::fs::create_dir_all(other.join("ca")).unwrap();
    std::fs::copy(
        g.trust_dir.join("vomsdir/vo1/aa.pem"),
        other.join("ca/ca.pem"),
    )
    .unwrap();
    let o = lors(
        &g,
        "alice",
        &["trust", "fetch", s(&other), "--fingerprint", &fp],
    );
    assert_eq!(code(&o), 8, "{}", text(&o));
    assert!(stderr(&o).contains("--force"), "{}", text(&o));
    ok(lors(
        &g,
        "alice",
        &["trust", "fetch", s(&other), "--fingerprint", &fp, "--force"],
    ));
    assert_eq!(certs(&other.join("ca/ca.pem")), real_ca);
}

/// Runs `c` feeding `input` on its standard input.
fn run_with_stdin(mut c: std::process::Command, input: &str) -> std::process::Output {
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// A server in between: it copied the real CA's `/v1/trust` answer but can
/// only present a certificate of its own. The fingerprint check passes on
/// the copied answer; the second, authenticated request must then fail.
#[test]
fn a_server_in_between_serving_the_real_bundle_is_refused() {
    let _timer = Timer::start("a_server_in_between_serving_the_real_bundle_is_refused");
    let g = start(GridOptions {
        depots: 0,
        ..GridOptions::default()
    });
    let real_ca_pem = std::fs::read_to_string(g.trust_dir.join("ca/ca.pem")).unwrap();
    let fp = fingerprint(&certs(&g.trust_dir.join("ca/ca.pem"))[0]);
    let body = serde_json::json!({"ca": real_ca_pem, "aa": {}}).to_string();

    // The impostor's own certificate, for localhost.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(ibp_auth::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served2 = served.clone();
    std::thread::spawn(move || {
        // Two connections at most are expected; bounded either way.
        for stream in listener.incoming().take(4).flatten() {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            if req.is_empty() {
                continue;
            }
            served2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let dir = g.user("alice").dir.join("mitm-trust");
    let url = format!("https://localhost:{port}");
    let o = lors(
        &g,
        "alice",
        &[
            "trust",
            "fetch",
            s(&dir),
            "--ca",
            &url,
            "--fingerprint",
            &fp,
        ],
    );
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the copied bundle was fetched once, and the authenticated request never got an answer: {}",
        text(&o)
    );
    assert!(!dir.exists(), "nothing written: {}", text(&o));
}
