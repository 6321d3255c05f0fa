//! Host certificates from the grid's online CA, end to end: the depot's,
//! the L-Bone's and the metadata manager's certificates replaced by ones the hosts request with
//! `online-ca host-cert request` (a token from `online-ca admin hosts
//! allow`, the key made on the host), put in force by SIGHUP, renewed
//! with `online-ca host-cert renew`; `lors upload` and `download` go
//! through them.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibp_grid::grid::{Daemon, GridOptions};

/// The certificate (DER) a new TLS connection to `addr` is served with,
/// verified against the grid's trust directory as `name`.
fn served(trust_dir: &Path, addr: &str, name: &str) -> Vec<u8> {
    let trust = ibp_auth::TrustStore::load(trust_dir).expect("the trust directory");
    let cfg = ibp_auth::tls::client_config(&trust, None).expect("a TLS configuration");
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("a name");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
    })
}

fn wait_served(trust_dir: &Path, addr: &str, name: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while served(trust_dir, addr, name) != want {
        assert!(
            Instant::now() < deadline,
            "{addr} does not serve the new certificate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The certificate's subject as rcgen reads it (CN and O values, in
/// Debug form).
fn subject(der: &[u8]) -> String {
    let p = rcgen::CertificateParams::from_ca_cert_der(&der.to_vec().into()).expect("parse");
    let get = |t: rcgen::DnType| format!("{:?}", p.distinguished_name.get(&t));
    format!(
        "O={} CN={}",
        get(rcgen::DnType::OrganizationName),
        get(rcgen::DnType::CommonName)
    )
}

#[test]
fn services_serve_certificates_requested_from_the_online_ca() {
    let _t = Timer::start("services_serve_certificates_requested_from_the_online_ca");
    let g = start(GridOptions {
        depots: 1,
        ..GridOptions::default()
    });
    keys_init(&g, "alice");
    let d = &g.depots[0];
    let tls_addr = d.tls_addr.clone().expect("a TLS port");
    let (key, cert) = (d.dir.join("server.key"), d.dir.join("server.pem"));
    let before = served(&g.trust_dir, &tls_addr, "localhost");

    // The depot's host: allowed at the CA, its certificate requested with
    // the token, SIGHUP.
    let new = g
        .request_host_certificate("localhost", "depot", &["127.0.0.1"], &key, &cert)
        .expect("online-ca host-cert request");
    assert_ne!(new, before);
    let subj = subject(&new);
    assert!(
        subj.contains("\"Test Grid\"") && subj.contains("\"localhost\""),
        "{subj}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        served(&g.trust_dir, &tls_addr, "localhost"),
        before,
        "not before SIGHUP"
    );
    g.reload_depot(0).expect("SIGHUP");
    wait_served(&g.trust_dir, &tls_addr, "localhost", &new);
    let data = bytes(3 << 20, 1);
    upload(&g, "alice", "one", &data, "/vo1/one", &[]);
    download_is(&g, "alice", "/vo1/one", &data, "through the enrolled depot");

    // The L-Bone's host, under a name of its own and the address clients
    // use; its poller presents the new certificate to the depot.
    let lbone_dir = g.dir.join("lbone");
    let lbone_addr = g.lbone_url.trim_start_matches("https://").to_owned();
    let lbone_cert = g
        .request_host_certificate(
            "lbone.grid.test",
            "lbone",
            &["127.0.0.1"],
            &lbone_dir.join("server.key"),
            &lbone_dir.join("server.pem"),
        )
        .expect("the L-Bone's certificate");
    g.reload_service(Daemon::Lbone).expect("SIGHUP");
    wait_served(&g.trust_dir, &lbone_addr, "127.0.0.1", &lbone_cert);
    let subj = subject(&lbone_cert);
    assert!(subj.contains("\"lbone.grid.test\""), "{subj}");

    // The metadata manager's host likewise.
    let mdm_dir = g.dir.join("mdm");
    let mdm_addr = g.mdm_url.trim_start_matches("https://").to_owned();
    let mdm_cert = g
        .request_host_certificate(
            "mdm.grid.test",
            "mdm",
            &["127.0.0.1"],
            &mdm_dir.join("server.key"),
            &mdm_dir.join("server.pem"),
        )
        .expect("the metadata manager's certificate");
    g.reload_service(Daemon::MetadataManager).expect("SIGHUP");
    wait_served(&g.trust_dir, &mdm_addr, "127.0.0.1", &mdm_cert);
    download_is(
        &g,
        "alice",
        "/vo1/one",
        &data,
        "through the enrolled L-Bone and metadata manager",
    );

    // Renewal: not due yet (exit 3, nothing written), then forced.
    let not_due = g
        .host_cert(&["renew", "--key", s(&key), "--cert", s(&cert)])
        .expect_err("not due");
    assert!(
        format!("{not_due:#}").contains("exit status: 3"),
        "{not_due:#}"
    );
    assert_eq!(std::fs::read(&cert).map(|b| !b.is_empty()).ok(), Some(true));
    g.host_cert(&["renew", "--key", s(&key), "--cert", s(&cert), "--force"])
        .expect("online-ca host-cert renew --force");
    let renewed =
        ibp_auth::keys::read_certificates(&cert).expect("the renewed certificate")[0].to_vec();
    assert_ne!(renewed, new);
    g.reload_depot(0).expect("SIGHUP");
    wait_served(&g.trust_dir, &tls_addr, "localhost", &renewed);

    let data = bytes(2 << 20, 2);
    upload(&g, "alice", "two", &data, "/vo1/two", &[]);
    download_is(&g, "alice", "/vo1/two", &data, "after the renewal");
    download_is(
        &g,
        "alice",
        "/vo1/one",
        &bytes(3 << 20, 1),
        "the first file",
    );

    // Revoked before it expires: the CA's revocation list names the
    // depot's certificates, the trust directory is refreshed from the CA
    // (as the hosts' daily timer does) and a client refuses the depot.
    g.ca_admin(&["hosts", "revoke", "localhost"])
        .expect("online-ca admin hosts revoke");
    let out = g
        .refresh_trust_from_ca()
        .expect("online-ca host-cert trust");
    assert!(out.contains("ca.crl"), "{out}");
    let refused = lors(&g, "alice", &["download", "/vo1/one", "-"]);
    assert_ne!(code(&refused), 0, "{}", text(&refused));
    assert!(
        stderr(&refused).contains("Revoked") || stderr(&refused).contains("revoked"),
        "{}",
        text(&refused)
    );
    // The L-Bone, reloaded, no longer offers it: its poller refuses the
    // revoked certificate.
    g.reload_service(Daemon::Lbone).expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = g.lbone_status().expect("status.json");
        let entry = status["vos"][0]["depots"][0]["status"].clone();
        if entry["available"] == false
            && entry["last_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("revoked"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the L-Bone still offers the revoked depot: {entry}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
