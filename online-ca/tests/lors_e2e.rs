//! The real `lors` client against the real online CA and a real FreeRADIUS:
//! `lors login` (federated, RADIUS PAP), `lors proxy-info`, then the proxy
//! verified by ibp-auth; and `lors proxy-init` with the issued certificate
//! over mutual TLS yields the same VO ID.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{CaDir, FreeRadius};
use ibp_auth::{verify_chain, ProxyCredential};

const SECRET: &str = "e2e-secret";

fn lors_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_online-ca")).with_file_name("lors");
    assert!(
        bin.exists(),
        "the lors binary is not at {} (build the workspace: cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Runs lors with `X509_USER_PROXY` set; returns (exit code, stdout, stderr).
fn lors(proxy: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(lors_bin())
        .args(args)
        .env("X509_USER_PROXY", proxy)
        .env_remove("LORS_TRUST_DIR")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lors");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for lors");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lors_login_with_radius_then_proxy_init_with_the_issued_certificate() {
    let fr = FreeRadius::start(SECRET, &[("alice@uni.example", "wonderland")]);
    let ca = CaDir::init();
    ca.configure(&format!(
        "[radius]\nserver = \"{}\"\nsecret = \"{SECRET}\"\ntimeout = \"2s\"\nretries = 0\n",
        fr.server()
    ));
    let vo_id = ca.add_member("vo1", "radius:alice@uni.example", &["--group", "eduroam"]);
    let srv = ca.serve();
    let url = format!("https://127.0.0.1:{}", srv.addr.port());
    let trust_dir = ca.dir.join("trust");
    let trust_arg = trust_dir.to_str().expect("utf-8 path");
    let tmp = tempfile::tempdir().expect("tempdir");
    let proxy = tmp.path().join("x509up");

    // A wrong password: refused (exit 3) and nothing written.
    let (code, _, err) = lors(
        &proxy,
        &[
            "login",
            "--ca",
            &url,
            "--vo",
            "vo1",
            "--method",
            "radius",
            "--user",
            "alice@uni.example",
            "--password-stdin",
            "--trust",
            trust_arg,
        ],
        Some("not-the-password\n"),
    );
    assert_eq!(code, 3, "wrong password: {err}\n{}", srv.log());
    assert!(!proxy.exists());

    // The right one: a proxy with the VO attributes, mode 0600.
    let (code, out, err) = lors(
        &proxy,
        &[
            "login",
            "--ca",
            &url,
            "--vo",
            "vo1",
            "--method",
            "radius",
            "--user",
            "alice@uni.example",
            "--password-stdin",
            "--valid",
            "2:00",
            "--trust",
            trust_arg,
        ],
        Some("wonderland\n"),
    );
    assert_eq!(code, 0, "login: {out}\n{err}\n{}", srv.log());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&proxy)
        .expect("proxy written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let cred = ProxyCredential::load(&proxy).expect("load proxy");
    let id =
        verify_chain(&cred.chain_der(), &ca.trust(), ibp_auth::unix_now()).expect("proxy verifies");
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vo_id, vo_id);
    assert_eq!(id.groups[0].name, "eduroam");
    let left = id.not_after - ibp_auth::unix_now();
    assert!((7000..=7300).contains(&left), "2 h asked, {left} s granted");

    // proxy-info agrees.
    let (code, out, err) = lors(
        &proxy,
        &["proxy-info", "--json", "--trust", trust_arg],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(info["vo_id"], vo_id.as_str(), "{out}");
    let (code, _, _) = lors(&proxy, &["proxy-info", "--exists", "--valid", "3:00"], None);
    assert_eq!(code, 1, "a 2 h proxy is not valid for 3 h");

    // The issued certificate (auto-linked at login) gets the same VO ID via
    // proxy-init over mutual TLS. The user's key never left lors, so make a
    // fresh user certificate the same way lors does, through the API.
    let (csr, key) = common::new_csr();
    let answer = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(common::https(
            srv.addr,
            &ca.ca_der(),
            None,
            "POST",
            "/v1/login",
            Some(&common::login_body(
                "radius",
                "alice@uni.example",
                "wonderland",
                "vo1",
                &csr,
            )),
        ));
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    let cert_pem = answer.json["certificate"]
        .as_str()
        .expect("certificate")
        .to_owned();
    let cert_file = tmp.path().join("usercert.pem");
    let key_file = tmp.path().join("userkey.pem");
    std::fs::write(&cert_file, cert_pem).expect("write cert");
    ibp_auth::keys::write_secret(
        &key_file,
        pem::encode(&pem::Pem::new("PRIVATE KEY", key)).as_bytes(),
    )
    .expect("write key");
    let proxy2 = tmp.path().join("x509up-2");
    let (code, out, err) = lors(
        &proxy2,
        &[
            "proxy-init",
            "--cert",
            cert_file.to_str().expect("utf-8"),
            "--key",
            key_file.to_str().expect("utf-8"),
            "--vo",
            "vo1",
            "--ca",
            &url,
            "--trust",
            trust_arg,
            "--valid",
            "1:00",
        ],
        None,
    );
    assert_eq!(code, 0, "proxy-init: {out}\n{err}\n{}", srv.log());
    let cred2 = ProxyCredential::load(&proxy2).expect("load proxy");
    let id2 =
        verify_chain(&cred2.chain_der(), &ca.trust(), ibp_auth::unix_now()).expect("verifies");
    assert_eq!(id2.vo_id, vo_id, "same user, same VO ID");

    // proxy-destroy removes it.
    let (code, _, _) = lors(&proxy, &["proxy-destroy"], None);
    assert_eq!(code, 0);
    assert!(!proxy.exists());
}
