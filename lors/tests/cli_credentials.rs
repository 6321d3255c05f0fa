//! The `lors` credential commands, run as a real binary against the
//! CONTRACT TEST SERVER in `common/` (a stand-in for the online CA that
//! checks the client side of the HTTP API; not the online CA itself).
//!
//! Every test sets `X509_USER_PROXY` to its own temporary path.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{lors, lors_env, TestCa, PASSWORD, TOKEN};
use ibp_auth::pki::Authority;
use ibp_auth::{unix_now, verify_chain, ProxyCredential};

fn login_args<'a>(ca: &'a TestCa, trust: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["login", "--ca", &ca.url, "--trust", trust, "--vo", "vo1"];
    v.extend_from_slice(extra);
    v
}

fn trust_str(ca: &TestCa) -> String {
    ca.trust_dir.to_str().unwrap().to_owned()
}

#[test]
fn login_writes_a_verifiable_proxy_mode_0600() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let pw = format!("{PASSWORD}\n");
    let r = lors(
        &proxy,
        &login_args(&ca, &trust, &["--user", "alice", "--password-stdin"]),
        Some(&pw),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("vo1:alice"), "{r:?}");
    assert!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD));
    assert!(!r.stderr.contains("warning"), "{r:?}");

    let mode = std::fs::metadata(&proxy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&proxy).unwrap();
    assert_eq!(text.matches("PRIVATE KEY").count(), 2, "one key block");
    let cred = ProxyCredential::load(&proxy).unwrap();
    // Proxy and user certificate; never the root.
    assert_eq!(cred.chain.len(), 2);
    assert!(!cred.chain.contains(&ca.ca.cert_der));
    let id = verify_chain(&cred.chain_der(), &ca.trust_store(), unix_now()).unwrap();
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vo_id, "vo1:alice");
    assert_eq!(id.groups[0].name, "users");
    let left = id.not_after - unix_now();
    assert!((12 * 3600 - 120..=12 * 3600).contains(&left), "{left}");

    // What the server was sent.
    let seen = ca.seen.lock().unwrap();
    let (path, req) = &seen.requests[0];
    assert_eq!(path, "/v1/login");
    assert_eq!(req["method"], "radius");
    assert_eq!(req["user"], "alice");
    assert_eq!(req["password"], "<present>");
    assert!(req.get("token").is_none());
    assert_eq!(req["lifetime"], 12 * 3600);
    assert!(req["csr"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
}

#[test]
fn wrong_password_exits_3_and_writes_nothing() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let r = lors(
        &proxy,
        &login_args(&ca, &trust, &["--password-stdin"]),
        Some("not-the-password\n"),
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    assert!(!r.stderr.contains("not-the-password"));
    assert!(!proxy.exists());
    // No stray temporary files either.
    let names: Vec<_> = std::fs::read_dir(ca.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().contains("x509up")),
        "{names:?}"
    );
}

#[test]
fn not_a_member_exits_3() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let r = lors(
        &proxy,
        &[
            "login",
            "--ca",
            &ca.url,
            "--trust",
            &trust,
            "--vo",
            "vo2",
            "--password-stdin",
        ],
        Some("secret\n"),
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("403"), "{r:?}");
    assert!(!proxy.exists());
}

#[test]
fn proxy_info_timeleft_exists_json_and_destroy() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let r = lors(
        &proxy,
        &login_args(&ca, &trust, &["--password-stdin", "--valid", "12:00"]),
        Some("secret"),
    );
    assert_eq!(r.code, 0, "{r:?}");

    let r = lors(&proxy, &["proxy-info", "--timeleft"], None);
    assert_eq!(r.code, 0, "{r:?}");
    let left: i64 = r.stdout.trim().parse().unwrap();
    assert!((12 * 3600 - 120..=12 * 3600).contains(&left), "{left}");

    let r = lors(&proxy, &["proxy-info", "--exists"], None);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = lors(
        &proxy,
        &["proxy-info", "--exists", "--valid", "11:00"],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = lors(
        &proxy,
        &["proxy-info", "--exists", "--valid", "24:00"],
        None,
    );
    assert_eq!((r.code, r.stdout.as_str()), (1, ""), "{r:?}");

    let r = lors(&proxy, &["proxy-info", "--json", "--trust", &trust], None);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["vo"], "vo1");
    assert_eq!(v["vo_id"], "vo1:alice");
    assert_eq!(v["groups"][0]["name"], "users");
    assert_eq!(v["verified"], true);
    assert_eq!(v["path"], proxy.to_str().unwrap());
    assert!(v["identity"].as_str().unwrap().contains("CN=alice"));

    // Default text; the trust directory also comes from LORS_TRUST_DIR.
    let r = lors_env(
        &proxy,
        &["proxy-info"],
        None,
        &[("LORS_TRUST_DIR", ca.trust_dir.as_os_str())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    for want in [
        "vo1:alice",
        "users",
        "verified  : yes",
        proxy.to_str().unwrap(),
    ] {
        assert!(r.stdout.contains(want), "{want}: {r:?}");
    }

    // Verification against a trust directory without the AA pinned fails.
    let other = ca.dir.path().join("other-trust");
    common::write(
        &other.join("ca/ca.pem"),
        &std::fs::read_to_string(ca.trust_dir.join("ca/ca.pem")).unwrap(),
    );
    let r = lors(
        &proxy,
        &["proxy-info", "--exists", "--trust", other.to_str().unwrap()],
        None,
    );
    assert_eq!(r.code, 1, "{r:?}");
    let r = lors(
        &proxy,
        &["proxy-info", "--trust", other.to_str().unwrap()],
        None,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("verified  : NO"), "{r:?}");

    let r = lors(&proxy, &["proxy-destroy"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!proxy.exists());
    let r = lors(&proxy, &["proxy-info", "--exists"], None);
    assert_eq!(r.code, 1, "{r:?}");
    let r = lors(&proxy, &["proxy-info", "--timeleft"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no proxy"), "{r:?}");
    // Destroying nothing is fine.
    let r = lors(&proxy, &["proxy-destroy"], None);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_world_readable_proxy_is_refused_not_used_silently() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let r = lors(
        &proxy,
        &login_args(&ca, &trust, &["--password-stdin"]),
        Some("secret\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let p = proxy.to_str().unwrap();
    let refusal =
        format!("proxy {p} has mode 644; it must be readable by its owner only (chmod 600 {p})");
    std::fs::set_permissions(&proxy, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Every command that uses the proxy refuses it with the credentials
    // exit code (1) before contacting anything; nothing is sent.
    let commands: [&[&str]; 4] = [
        &["proxy-info"],
        &["proxy-info", "--exists"],
        &[
            "depots",
            "--lbone",
            "https://127.0.0.1:9",
            "--trust",
            &trust,
        ],
        &[
            "ls",
            "/vo1",
            "--mdm",
            "https://127.0.0.1:9",
            "--trust",
            &trust,
        ],
    ];
    for args in commands {
        let r = lors(&proxy, args, None);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        if args != ["proxy-info", "--exists"] {
            assert!(r.stderr.contains(&refusal), "{args:?}: {r:?}");
        }
    }
    // Group-readable too; owner-only is used again.
    std::fs::set_permissions(&proxy, std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = lors(&proxy, &["proxy-info"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("has mode 640") && r.stderr.contains("chmod 600"),
        "{r:?}"
    );
    std::fs::set_permissions(&proxy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = lors(&proxy, &["proxy-info", "--exists"], None);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn short_validity_and_expired_proxy() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let r = lors(
        &proxy,
        &login_args(&ca, &trust, &["--password-stdin", "--valid", "0:05"]),
        Some("secret\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = lors(&proxy, &["proxy-info", "--timeleft"], None);
    let left: i64 = r.stdout.trim().parse().unwrap();
    assert!((300 - 120..=300).contains(&left), "{left}");
    let r = lors(&proxy, &["proxy-info", "--exists", "--valid", "1:00"], None);
    assert_eq!(r.code, 1);

    // A proxy that has expired: minted by hand below an expired user
    // certificate is awkward, so write one whose chain has run out.
    let now = unix_now();
    let cred = ca.pki.user_cert_between("old", now - 3600, now - 1);
    cred.save(&proxy).unwrap();
    let r = lors(&proxy, &["proxy-info", "--timeleft"], None);
    assert_eq!((r.code, r.stdout.trim()), (1, "0"), "{r:?}");
}

#[test]
fn oidc_login_with_token_file() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let token = ca.dir.path().join("token");
    std::fs::write(&token, format!("  {TOKEN}\n")).unwrap();
    let r = lors(
        &proxy,
        &login_args(
            &ca,
            &trust,
            &["--token-file", token.to_str().unwrap(), "--valid", "2:30"],
        ),
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN));
    let seen = ca.seen.lock().unwrap();
    assert_eq!(seen.requests[0].1["method"], "oidc");
    assert_eq!(seen.requests[0].1["token"], "<present>");
    assert_eq!(seen.requests[0].1["lifetime"], 9000);
    drop(seen);
    let cred = ProxyCredential::load(&proxy).unwrap();
    let id = verify_chain(&cred.chain_der(), &ca.trust_store(), unix_now()).unwrap();
    assert_eq!(id.vo_id, "vo1:alice");

    // A bad token is refused.
    std::fs::write(&token, "forged").unwrap();
    std::fs::remove_file(&proxy).unwrap();
    let r = lors(
        &proxy,
        &login_args(&ca, &trust, &["--token-file", token.to_str().unwrap()]),
        None,
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(!proxy.exists());
}

#[test]
fn proxy_init_gets_attributes_over_mutual_tls() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let (cert, key) = ca.user_files(&ca.ca, "bob");
    let r = lors(
        &proxy,
        &[
            "proxy-init",
            "--ca",
            &ca.url,
            "--trust",
            &trust,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--vo",
            "vo1",
            "--valid",
            "6:00",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::metadata(&proxy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cred = ProxyCredential::load(&proxy).unwrap();
    let id = verify_chain(&cred.chain_der(), &ca.trust_store(), unix_now()).unwrap();
    assert_eq!(id.vo_id, "vo1:bob");
    let left = id.not_after - unix_now();
    assert!((6 * 3600 - 120..=6 * 3600).contains(&left), "{left}");
    // The user's long-term key is not in the proxy file.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let proxy_pem = std::fs::read_to_string(&proxy).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!proxy_pem.replace('\n', "").contains(&key_body));
    let seen = ca.seen.lock().unwrap();
    assert_eq!(seen.requests[0].0, "/v1/attributes");
    assert_eq!(seen.requests[0].1["vo"], "vo1");
    assert_eq!(seen.requests[0].1["lifetime"], 6 * 3600);
}

#[test]
fn proxy_init_refusals() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let (cert, key) = ca.user_files(&ca.ca, "bob");
    let run = |cert: &str, key: &str, vo: &str| {
        lors(
            &proxy,
            &[
                "proxy-init",
                "--ca",
                &ca.url,
                "--trust",
                &trust,
                "--cert",
                cert,
                "--key",
                key,
                "--vo",
                vo,
            ],
            None,
        )
    };
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // Not a member of vo2: 403.
    let r = run(c, k, "vo2");
    assert_eq!(r.code, 3, "{r:?}");
    assert!(!proxy.exists());
    // A certificate from a CA the server does not trust: refused during TLS.
    let rogue = Authority::new_ca("Rogue", "Rogue CA", 1).unwrap();
    let (rc, rk) = ca.user_files(&rogue, "mallory");
    let r = run(rc.to_str().unwrap(), rk.to_str().unwrap(), "vo1");
    assert_eq!(r.code, 3, "{r:?}");
    assert!(!proxy.exists());
    // A key that does not match the certificate: usage error, no network.
    let r = run(c, rk.to_str().unwrap(), "vo1");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("does not belong"), "{r:?}");
    // Missing files.
    let r = run("/nonexistent/cert.pem", k, "vo1");
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn rate_limit_server_errors_and_bad_answers() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let run = |user: &str| {
        lors(
            &proxy,
            &login_args(&ca, &trust, &["--user", user, "--password-stdin"]),
            Some("secret\n"),
        )
    };
    let r = run("flood");
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("retry after 7 s"), "{r:?}");
    let r = run("crash");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("500"), "{r:?}");
    let r = run("huge");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("larger than"), "{r:?}");
    let r = run("garbage");
    assert_eq!(r.code, 4, "{r:?}");
    let r = run("swap");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("not for our key"), "{r:?}");
    assert!(!proxy.exists());
}

#[test]
fn unreachable_or_untrusted_ca_exits_4() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("https://{closed}");
    let r = lors(
        &proxy,
        &[
            "login",
            "--ca",
            &url,
            "--trust",
            &trust,
            "--vo",
            "vo1",
            "--password-stdin",
        ],
        Some("secret\n"),
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("cannot connect"), "{r:?}");

    // The server's certificate is not from the CA we trust.
    let rogue = Authority::new_ca("Rogue", "Rogue CA", 1).unwrap();
    let rogue_pem = ca.dir.path().join("rogue.pem");
    std::fs::write(
        &rogue_pem,
        pem::encode(&pem::Pem::new("CERTIFICATE", rogue.cert_der.clone())),
    )
    .unwrap();
    let r = lors(
        &proxy,
        &[
            "login",
            "--ca",
            &ca.url,
            "--ca-cert",
            rogue_pem.to_str().unwrap(),
            "--vo",
            "vo1",
            "--password-stdin",
        ],
        Some("secret\n"),
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("TLS"), "{r:?}");
    assert!(!proxy.exists());
}

#[test]
fn ca_cert_file_and_host_name() {
    let ca = TestCa::start();
    let proxy = ca.proxy_path("x509up_test");
    let ca_pem = ca.trust_dir.join("ca/ca.pem");
    // By name: the server certificate is for localhost and 127.0.0.1.
    let url = format!("https://localhost:{}/", ca.addr.port());
    let r = lors(
        &proxy,
        &[
            "login",
            "--ca",
            &url,
            "--ca-cert",
            ca_pem.to_str().unwrap(),
            "--vo",
            "vo1",
            "--method",
            "local",
            "--password-stdin",
        ],
        Some("secret\r\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(ca.seen.lock().unwrap().requests[0].1["method"], "local");
    let cred = ProxyCredential::load(&proxy).unwrap();
    verify_chain(&cred.chain_der(), &ca.trust_store(), unix_now()).unwrap();

    // LORS_TRUST_DIR stands in for --trust.
    std::fs::remove_file(&proxy).unwrap();
    let r = lors_env(
        &proxy,
        &["login", "--ca", &ca.url, "--vo", "vo1", "--password-stdin"],
        Some("secret\n"),
        &[("LORS_TRUST_DIR", ca.trust_dir.as_os_str())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(proxy.exists());
}

#[test]
fn usage_errors_exit_2() {
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_test");
    let cases: Vec<Vec<&str>> = vec![
        login_args(&ca, &trust, &["--password-stdin", "--valid", "12:60"]),
        login_args(&ca, &trust, &["--password-stdin", "--valid", "12"]),
        login_args(&ca, &trust, &["--password-stdin", "--valid", "0:00"]),
        login_args(&ca, &trust, &["--method", "oidc", "--password-stdin"]),
        login_args(&ca, &trust, &["--method", "radius", "--token-file", "/x"]),
        login_args(&ca, &trust, &["--token-file", "/nonexistent/token"]),
        // No password flag and stdin is not a terminal.
        login_args(&ca, &trust, &[]),
        vec![
            "login",
            "--ca",
            "http://127.0.0.1:1",
            "--trust",
            &trust,
            "--vo",
            "vo1",
            "--password-stdin",
        ],
        vec!["login", "--ca", &ca.url, "--vo", "vo1", "--password-stdin"],
        vec![
            "login",
            "--ca",
            &ca.url,
            "--trust",
            "/nonexistent",
            "--vo",
            "vo1",
            "--password-stdin",
        ],
        vec!["proxy-info", "--exists", "--json"],
        vec!["proxy-info", "--valid", "1:99"],
        vec!["no-such-command"],
    ];
    for args in cases {
        let r = lors(&proxy, &args, Some("secret\n"));
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(!proxy.exists(), "{args:?}");
    }
    assert!(ca.seen.lock().unwrap().requests.is_empty());
}

#[test]
fn proxy_destroy_zeroes_and_spares_symlink_targets() {
    let ca = TestCa::start();
    let proxy = ca.proxy_path("x509up_test");
    let target = ca.dir.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, &proxy).unwrap();
    let r = lors(&proxy, &["proxy-destroy"], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::symlink_metadata(&proxy).is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}

/// `--ca`, `--vo` and the trust directory may come from the config file
/// (`$LORS_CONFIG`); without them anywhere, a usage error names the flag.
#[test]
fn login_takes_the_ca_vo_and_trust_from_the_config_file() {
    let ca = TestCa::start();
    let proxy = ca.proxy_path("x509up_cfg");
    let cfg = ca.proxy_path("lors.toml");
    std::fs::write(
        &cfg,
        format!(
            "ca = \"{}\"\nvo = \"vo1\"\ntrust_dir = \"{}\"\n",
            ca.url,
            ca.trust_dir.display()
        ),
    )
    .unwrap();
    let pw = format!("{PASSWORD}\n");
    let r = lors_env(
        &proxy,
        &["login", "--user", "alice", "--password-stdin"],
        Some(&pw),
        &[("LORS_CONFIG", cfg.as_os_str())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("vo1:alice"), "{r:?}");

    let empty = ca.proxy_path("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let r = lors_env(
        &proxy,
        &["login", "--user", "alice", "--password-stdin"],
        Some(&pw),
        &[("LORS_CONFIG", empty.as_os_str())],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("--ca") || r.stderr.contains("--trust"),
        "{r:?}"
    );
}

/// Standard output closed by its reader before lors writes (`lors login |
/// head -0`): lors does its work, then ends quietly with 141 (128 + SIGPIPE,
/// what a shell reports), without a panic message. SIGPIPE itself stays
/// ignored, so that a write to a dead depot's socket fails over instead of
/// killing lors.
#[test]
fn a_closed_stdout_ends_lors_quietly_after_its_work() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let ca = TestCa::start();
    let trust = trust_str(&ca);
    let proxy = ca.proxy_path("x509up_closed_stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lors"))
        .args(login_args(&ca, &trust, &["--password-stdin"]))
        .env("X509_USER_PROXY", &proxy)
        .env_remove("LORS_TRUST_DIR")
        .env("USER", "alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away while lors waits for its password: its first
    // line of output meets a closed pipe.
    drop(child.stdout.take());
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(proxy.exists(), "the proxy was written before the output");
}
