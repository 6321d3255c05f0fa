//! Revocation lists in the trust directory (`ca/*.crl`): a certificate a
//! trusted CA revoked is refused as a TLS server (every client
//! configuration) and as the end-entity certificate of a proxy chain
//! (every service); a list that does not verify against its CA fails
//! closed; certificates the list does not name, and CAs without a list,
//! are unaffected; `TrustStore::load` reads the lists from `ca/`.

mod common;

use std::sync::Arc;

use common::{build_proxy, ders, handshake, Grid, HandshakeError, ProxySpec};
use ibp_auth::pki::Authority;
use ibp_auth::tls::{client_config, server_config, ClientAuth};
use ibp_auth::verify::verify_chain;
use ibp_auth::TrustStore;
use rustls_pki_types::CertificateDer;

fn serial_of(der: &[u8]) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.raw_serial().to_vec()
}

/// A server certificate of `g`'s CA for localhost, and the client and
/// server configurations of a handshake with it; the client trusts
/// `client_trust`.
fn server_handshake(
    g: &Grid,
    server: &ibp_auth::pki::Issued,
    client_trust: &TrustStore,
) -> Result<(), HandshakeError> {
    let scfg = server_config(
        Arc::new(g.trust.clone()),
        vec![CertificateDer::from(server.cert_der.clone())],
        server.key_pkcs8.clone(),
        ClientAuth::Optional,
    )
    .unwrap();
    let ccfg = client_config(client_trust, None).unwrap();
    handshake(scfg, ccfg).1
}

fn revoked_message(r: Result<(), HandshakeError>) -> String {
    match r {
        Err(HandshakeError::Client(e)) => e.to_string(),
        other => panic!("expected the client to refuse the server: {other:?}"),
    }
}

#[test]
fn a_revoked_server_certificate_is_refused_by_clients() {
    let g = Grid::new();
    let server = g.ca.issue_server(&["localhost"], 30).unwrap();
    let other = g.ca.issue_server(&["localhost"], 30).unwrap();
    // Without a list both are accepted.
    server_handshake(&g, &server, &g.trust).expect("no list: accepted");

    let crl =
        g.ca.revocation_list(
            &[(serial_of(&server.cert_der), g.now - 10)],
            g.now - 60,
            g.now + 86_400,
            1,
        )
        .unwrap();
    let mut trust = g.trust.clone();
    trust.add_crl(crl.clone()).unwrap();
    let msg = revoked_message(server_handshake(&g, &server, &trust));
    assert!(msg.contains("Revoked"), "{msg}");
    // A certificate the list does not name still works.
    server_handshake(&g, &other, &trust).expect("not listed: accepted");

    // An outdated list still revokes what it lists.
    let old =
        g.ca.revocation_list(
            &[(serial_of(&server.cert_der), g.now - 7200)],
            g.now - 7200,
            g.now - 3600,
            1,
        )
        .unwrap();
    let mut trust = g.trust.clone();
    trust.add_crl(old).unwrap();
    let msg = revoked_message(server_handshake(&g, &server, &trust));
    assert!(msg.contains("Revoked"), "{msg}");
}

#[test]
fn a_list_not_signed_by_its_ca_fails_closed() {
    let g = Grid::new();
    let server = g.ca.issue_server(&["localhost"], 30).unwrap();
    // Another CA with the same name: its list names g's CA as issuer but
    // is signed by another key.
    let impostor = Authority::new_ca("Test Grid", "Test CA", 30).unwrap();
    let forged = impostor
        .revocation_list(&[], g.now - 60, g.now + 86_400, 1)
        .unwrap();
    let mut trust = g.trust.clone();
    trust.add_crl(forged).unwrap();
    let msg = revoked_message(server_handshake(&g, &server, &trust));
    assert!(
        msg.to_lowercase().contains("crl") || msg.contains("Signature"),
        "{msg}"
    );
}

#[test]
fn a_proxy_of_a_revoked_certificate_is_refused_by_services() {
    let g = Grid::new();
    let chain = g.chain(&ProxySpec::with_attributes(g.ext()));
    verify_chain(&chain, &g.trust, g.now).expect("not revoked");

    let crl =
        g.ca.revocation_list(
            &[(serial_of(&g.user.cert_der), g.now - 10)],
            g.now - 60,
            g.now + 86_400,
            2,
        )
        .unwrap();
    let mut trust = g.trust.clone();
    trust.add_crl(crl).unwrap();
    let e = verify_chain(&chain, &trust, g.now).unwrap_err();
    assert!(e.to_string().contains("Revoked"), "{e}");

    // Another user of the same CA is unaffected.
    let bob = g.ca.issue_user("Test Grid", "Bob", 3600).unwrap();
    let (proxy, _) = build_proxy(
        &bob.cert_der,
        &bob.key_pkcs8,
        &ProxySpec::with_attributes(g.aa.sign_attributes(&g.attrs_for(&bob.cert_der)).unwrap()),
    );
    verify_chain(&ders(&[proxy, bob.cert_der.clone()]), &trust, g.now).expect("bob");
}

#[test]
fn the_trust_directory_loads_lists_from_ca() {
    let g = Grid::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    let pem = |tag: &str, der: &[u8]| pem::encode(&pem::Pem::new(tag, der.to_vec()));
    std::fs::write(
        dir.path().join("ca/ca.pem"),
        pem("CERTIFICATE", &g.ca.cert_der),
    )
    .unwrap();
    let server = g.ca.issue_server(&["localhost"], 30).unwrap();
    let crl =
        g.ca.revocation_list(
            &[(serial_of(&server.cert_der), g.now)],
            g.now - 60,
            g.now + 86_400,
            1,
        )
        .unwrap();
    std::fs::write(dir.path().join("ca/ca.crl"), pem("X509 CRL", &crl)).unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    assert_eq!(trust.crl_ders().len(), 1);
    let msg = revoked_message(server_handshake(&g, &server, &trust));
    assert!(msg.contains("Revoked"), "{msg}");

    // Something else than a revocation list under that name is an error
    // naming the file, not a silently empty list.
    std::fs::write(dir.path().join("ca/ca.crl"), pem("X509 CRL", b"not a list")).unwrap();
    let e = TrustStore::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("ca.crl"), "{e}");
}
