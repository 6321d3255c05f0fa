//! Host certificates against a real `online-ca serve`: the allow-list
//! (`admin hosts allow|list|revoke`), `POST /v1/hosts/enroll` and
//! `/v1/hosts/renew`, and the host's commands (`host-cert trust`,
//! `request`, `renew`) with their exit codes; every refusal path.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Runs `online-ca host-cert ARGS`; (exit code, stdout, stderr).
fn host_cert(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("host-cert")
        .args(args)
        .output()
        .expect("run online-ca host-cert");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `admin hosts allow NAME ARGS --json`: the entry and its token.
fn allow(ca: &CaDir, name: &str, args: &[&str]) -> (Value, String) {
    let mut all = vec!["hosts", "allow", name];
    all.extend_from_slice(args);
    all.push("--json");
    let v: Value = serde_json::from_str(&ca.admin(&all)).expect("hosts allow --json");
    let token = v["token"].as_str().expect("a token").to_owned();
    (v, token)
}

fn hosts(ca: &CaDir) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ca.admin(&["hosts", "list", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

/// A CSR (PEM) asking for `sans` (DNS names, or IP addresses as text),
/// and its key (PKCS#8).
fn csr_for(sans: &[&str]) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "asked by the host");
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName((*s).try_into().unwrap()),
        })
        .collect();
    let csr = p.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), key.serialize_der())
}

/// A CSR signed by one key but carrying another's public key.
fn csr_with_foreign_key() -> String {
    let signer = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut der = p.serialize_request(&signer).unwrap().der().to_vec();
    let (mine, theirs) = (signer.public_key_der(), other.public_key_der());
    assert_eq!(mine.len(), theirs.len());
    let at = der
        .windows(mine.len())
        .position(|w| w == mine.as_slice())
        .expect("the CSR holds its public key");
    der[at..at + mine.len()].copy_from_slice(&theirs);
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

fn enroll_body(name: &str, token: &str, csr: &str) -> Value {
    json!({ "name": name, "token": token, "csr": csr })
}

/// A certificate signed by the CA's key directly (not through the API),
/// valid from `from` to `to` (Unix seconds): (certificate DER, key).
fn forged_by_ca_key(ca: &CaDir, cn: &str, from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
    let key_pem = std::fs::read_to_string(ca.dir.join("ca.key")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let ca_cert = rcgen::CertificateParams::from_ca_cert_pem(
        &std::fs::read_to_string(ca.dir.join("ca.pem")).unwrap(),
    )
    .unwrap()
    .self_signed(&ca_key)
    .unwrap();
    let mut p = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Test Grid");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn write_pair(dir: &Path, stem: &str, cert: &[u8], key: &[u8]) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, online_ca::ca::cert_pem(cert)).unwrap();
    ibp_auth::keys::write_secret(&k, online_ca::ca::key_pem(key).as_bytes()).unwrap();
    (c, k)
}

/// `POST /v1/hosts/renew` presenting `cert` (with `key`) through
/// `ibp_https::Client`; the status, or the transport error.
async fn renew_with(
    addr: std::net::SocketAddr,
    trust: &ibp_auth::TrustStore,
    cert: &[u8],
    key: &[u8],
) -> Result<(u16, String), ibp_https::HttpError> {
    let cred = ibp_auth::ProxyCredential {
        chain: vec![cert.to_vec()],
        key_pkcs8: key.to_vec(),
    };
    let tls = ibp_auth::tls::client_config(trust, Some(&cred)).unwrap();
    let c = ibp_https::Client::new(
        ibp_https::BaseUrl::parse(&format!("https://127.0.0.1:{}", addr.port())).unwrap(),
        tls,
        true,
    );
    let (csr, _) = csr_for(&[]);
    let r = c
        .post_json("/v1/hosts/renew", &json!({ "csr": csr }))
        .await?;
    Ok((r.status, r.error_message(400)))
}

fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn read_cert(path: &Path) -> Vec<u8> {
    pem_cert(&std::fs::read_to_string(path).unwrap())
}

fn sans(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    c.subject_alternative_name()
        .unwrap()
        .map(|e| {
            e.value
                .general_names
                .iter()
                .map(|g| match g {
                    GeneralName::DNSName(d) => format!("dns:{d}"),
                    GeneralName::IPAddress(b) => format!(
                        "ip:{}",
                        std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())
                    ),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_enroll_renew_and_every_refusal() {
    let ca = CaDir::init();
    ca.configure("[hosts]\nlifetime = \"40d\"\n");
    let srv = ca.serve();
    let url = format!("https://127.0.0.1:{}", srv.addr.port());
    let ca_der = ca.ca_der();
    let host = tempfile::tempdir().unwrap();
    let trust_dir = host.path().join("trust");

    // The host's trust directory, the CA pinned by its fingerprint; a
    // wrong fingerprint writes nothing (exit 4).
    let wrong = online_ca::host_cert::fingerprint(b"not the CA");
    let (code, _, err) = host_cert(&[
        "trust",
        "--ca",
        &url,
        "--fingerprint",
        &wrong,
        "--out",
        trust_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no CA certificate with fingerprint"), "{err}");
    assert!(!trust_dir.exists());
    let fp = online_ca::host_cert::fingerprint(&ca_der);
    let (code, out, err) = host_cert(&[
        "trust",
        "--ca",
        &url,
        "--fingerprint",
        &fp,
        "--out",
        trust_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(read_cert(&trust_dir.join("ca/ca.pem")), ca_der);
    for vo in ["vo1", "vo2"] {
        assert_eq!(
            std::fs::read(trust_dir.join(format!("vomsdir/{vo}/aa.pem"))).unwrap(),
            std::fs::read(ca.dir.join(format!("aa/{vo}.pem"))).unwrap(),
            "{vo}"
        );
    }

    let name = "depot1.example.org";
    let (entry, token) = allow(&ca, name, &["--role", "depot", "--ip", "10.1.2.3"]);
    assert_eq!(
        entry["names"],
        json!(["dns:depot1.example.org", "ip:10.1.2.3"])
    );
    // The token is not in the database, only its hash.
    let db = std::fs::read(ca.dir.join("ca.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));

    // A wrong token and a name not on the allow-list: the same 401.
    let (csr, _) = csr_for(&[]);
    let wrong_token = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&enroll_body(name, "not-the-token", &csr)),
    )
    .await;
    let unknown = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&enroll_body("other.example.org", &token, &csr)),
    )
    .await;
    assert_eq!(wrong_token.status, 401, "{:?}", wrong_token.json);
    assert_eq!(unknown.status, 401, "{:?}", unknown.json);
    assert_eq!(wrong_token.json, unknown.json);

    // The right token, but a CSR asking for a name not on the entry: 403,
    // and the token is not spent.
    let (csr, _) = csr_for(&[name, "www.example.org"]);
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&enroll_body(name, &token, &csr)),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("dns:www.example.org is not on the allow-list"),
        "{:?}",
        a.json
    );
    let (csr, _) = csr_for(&["10.9.9.9"]);
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&enroll_body(name, &token, &csr)),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.json);

    // A CSR whose public key is not the key that signed it: 400.
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&enroll_body(name, &token, &csr_with_foreign_key())),
    )
    .await;
    assert_eq!(a.status, 400, "{:?}", a.json);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{:?}",
        a.json
    );

    // The host's command: key and CSR made here, the certificate written.
    let (key, cert) = (
        host.path().join("server.key"),
        host.path().join("server.pem"),
    );
    let token_file = host.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let t0 = ibp_auth::unix_now();
    let (code, out, err) = host_cert(&[
        "request",
        "--ca",
        &url,
        "--trust",
        trust_dir.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--name",
        name,
        "--ip",
        "10.1.2.3",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = read_cert(&cert);
    let c = parse(&first);
    assert_eq!(c.subject().to_string(), format!("O=Test Grid, CN={name}"));
    assert_eq!(c.issuer().as_raw(), parse(&ca_der).subject().as_raw());
    assert_eq!(sans(&c), vec!["dns:depot1.example.org", "ip:10.1.2.3"]);
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth, "{eku:?}");
    let life = c.validity().not_after.timestamp() - t0;
    assert!(
        (40 * 86_400 - 60..=40 * 86_400 + 60).contains(&life),
        "{life}"
    );
    // The key written is the certificate's.
    let kp = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert_eq!(c.public_key().raw, kp.public_key_der().as_slice());
    // And it serves: a TLS server with it verifies against the trust dir.
    ibp_auth::verify::verify_certificates(
        &[rustls_pki_types::CertificateDer::from(first.clone())],
        &ibp_auth::TrustStore::load(&trust_dir).unwrap(),
        ibp_auth::unix_now(),
    )
    .expect("the host certificate verifies");

    // The token again: spent (exit 4, files untouched).
    let (code, _, err) = host_cert(&[
        "request",
        "--ca",
        &url,
        "--trust",
        trust_dir.to_str().unwrap(),
        "--token",
        &token,
        "--name",
        name,
        "--key",
        host.path().join("k2").to_str().unwrap(),
        "--cert",
        host.path().join("c2").to_str().unwrap(),
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("already used"), "{err}");
    assert!(!host.path().join("k2").exists());

    // Renewal: not due within 10 days (exit 3); due within 60 (exit 0), a
    // new key and certificate for the same names.
    let renew = |extra: &[&str]| {
        let mut args = vec![
            "renew",
            "--ca",
            &url,
            "--trust",
            trust_dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        host_cert(&args)
    };
    let (code, out, err) = renew(&[]);
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(read_cert(&cert), first);
    let old_key = std::fs::read(&key).unwrap();
    let (code, out, err) = renew(&["--before", "60d"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = read_cert(&cert);
    assert_ne!(second, first);
    assert_ne!(std::fs::read(&key).unwrap(), old_key, "a new key");
    assert_eq!(sans(&parse(&second)), sans(&c));
    assert_eq!(
        parse(&second).subject().to_string(),
        c.subject().to_string()
    );
    let trust = ibp_auth::TrustStore::load(&trust_dir).unwrap();

    // A certificate from the CA's key with the host's name, but not issued
    // as a host certificate: 403.
    let now = ibp_auth::unix_now();
    let (forged, forged_key) = forged_by_ca_key(&ca, name, now - 60, now + 86_400);
    let r = renew_with(srv.addr, &trust, &forged, &forged_key)
        .await
        .unwrap();
    assert_eq!(r.0, 403, "{r:?}");
    assert!(r.1.contains("not a host certificate"), "{r:?}");
    // Without a client certificate: 401.
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/renew",
        Some(&json!({ "csr": csr_for(&[]).0 })),
    )
    .await;
    assert_eq!(a.status, 401, "{:?}", a.json);

    // An expired certificate: the host's command refuses locally (exit 4,
    // re-enroll), and the CA refuses it in the handshake.
    let (expired, expired_key) = forged_by_ca_key(&ca, name, now - 10 * 86_400, now - 86_400);
    let (ec, ek) = write_pair(host.path(), "expired", &expired, &expired_key);
    let (code, _, err) = host_cert(&[
        "renew",
        "--ca",
        &url,
        "--trust",
        trust_dir.to_str().unwrap(),
        "--key",
        ek.to_str().unwrap(),
        "--cert",
        ec.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("expired") && err.contains("hosts allow"),
        "{err}"
    );
    match renew_with(srv.addr, &trust, &expired, &expired_key).await {
        Err(ibp_https::HttpError::CertificateRefused { .. } | ibp_https::HttpError::Tls { .. }) => {
        }
        other => panic!("an expired certificate renewed: {other:?}"),
    }

    // An allow-list entry whose token expired unused: 403 saying so.
    let (entry, late) = allow(
        &ca,
        "lbone.example.org",
        &["--role", "lbone", "--token-valid", "1s"],
    );
    let until = entry["token_expires_at"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ibp_auth::unix_now() <= until {
        assert!(Instant::now() < deadline, "the clock does not move");
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = https(
        srv.addr,
        &ca_der,
        None,
        "POST",
        "/v1/hosts/enroll",
        Some(&enroll_body("lbone.example.org", &late, &csr_for(&[]).0)),
    )
    .await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    assert!(
        a.json["error"].as_str().unwrap().contains("expired"),
        "{:?}",
        a.json
    );

    // A revoked host renews no more (exit 4); allowed again, its old
    // certificate cannot renew either, and the new token enrolls.
    ca.admin(&["hosts", "revoke", name]);
    let listed = hosts(&ca);
    let d1 = listed.iter().find(|h| h["name"] == name).unwrap();
    assert_eq!(d1["state"], "revoked");
    let (code, _, err) = renew(&["--force"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(read_cert(&cert), second, "nothing written");

    // Its certificates are revoked with it, before they expire: the CA's
    // revocation list names the current one, `host-cert trust` writes the
    // list, and a trust directory holding it refuses that certificate.
    let trusted = ibp_auth::TrustStore::load(&trust_dir).unwrap();
    let second_chain = [rustls_pki_types::CertificateDer::from(second.clone())];
    ibp_auth::verify::verify_certificates(&second_chain, &trusted, ibp_auth::unix_now())
        .expect("the list fetched before the revocation does not name it");
    let listed = https(srv.addr, &ca_der, None, "GET", "/v1/crl", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.headers["content-type"], "application/pkix-crl");
    let (_, crl) = x509_parser::parse_x509_crl(&listed.body).unwrap();
    let serials: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    // Both certificates it holds unexpired, the enrolled one and the renewed.
    assert_eq!(serials.len(), 2, "{serials:?}");
    assert!(serials.contains(&parse(&second).raw_serial().to_vec()));
    // A signing key fetched earlier that the CA no longer publishes goes
    // with the same refresh (a key placed by hand stays).
    let retired = trust_dir
        .join("metadata")
        .join(ibp_auth::trust::published_key_file_name("ed25519 RETIRED"));
    let by_hand = trust_dir.join("metadata").join("site.pub");
    std::fs::create_dir_all(trust_dir.join("metadata")).unwrap();
    std::fs::write(&retired, "ed25519 RETIRED\n").unwrap();
    std::fs::write(&by_hand, "ed25519 BYHAND\n").unwrap();
    let (code, out, err) = host_cert(&[
        "trust",
        "--ca",
        &url,
        "--fingerprint",
        &fp,
        "--out",
        trust_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ca.crl"), "{out}");
    assert!(out.contains("no longer published"), "{out}");
    assert!(!retired.exists() && by_hand.exists());
    std::fs::remove_file(&by_hand).unwrap();
    let trusted = ibp_auth::TrustStore::load(&trust_dir).unwrap();
    let e = ibp_auth::verify::verify_certificates(&second_chain, &trusted, ibp_auth::unix_now())
        .err()
        .expect("a revoked host certificate refused");
    assert!(e.to_string().contains("Revoked"), "{e}");
    let (_, again) = allow(&ca, name, &["--role", "depot", "--ip", "10.1.2.3"]);
    let (code, _, err) = renew(&["--force"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("allowed again"), "{err}");
    let (code, out, err) = host_cert(&[
        "request",
        "--ca",
        &url,
        "--trust",
        trust_dir.to_str().unwrap(),
        "--token",
        &again,
        "--name",
        name,
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let listed = hosts(&ca);
    let d1 = listed.iter().find(|h| h["name"] == name).unwrap();
    assert_eq!(d1["state"], "enrolled");
    assert_eq!(
        d1["cert_not_after"].as_i64(),
        Some(parse(&read_cert(&cert)).validity().not_after.timestamp())
    );

    // Every issued host certificate is in the audit log.
    let kinds: Vec<String> = ca
        .audit()
        .iter()
        .filter(|r| r["identity"] == format!("host:{name}"))
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["host-enroll", "host-renew", "host-enroll"]);
    // Tokens never reach the log.
    let log = srv.log();
    for t in [&token, &again, &late] {
        assert!(!log.contains(t.as_str()));
    }
}

#[test]
fn hosts_allow_refuses_bad_names_and_roles() {
    let ca = CaDir::init();
    let err = ca.admin_fails(&["hosts", "allow", "*.example.org", "--role", "depot"]);
    assert!(err.contains("not a host name"), "{err}");
    let err = ca.admin_fails(&["hosts", "allow", "10.0.0.1", "--role", "depot"]);
    assert!(err.contains("--ip"), "{err}");
    let err = ca.admin_fails(&["hosts", "allow", "d.example.org", "--role", "client"]);
    assert!(err.contains("depot, lbone or mdm"), "{err}");
    let err = ca.admin_fails(&["hosts", "revoke", "nobody.example.org"]);
    assert!(err.contains("no host"), "{err}");
}
