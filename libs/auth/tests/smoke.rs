//! End-to-end: CA, AA, user, proxy with attributes, verification, TLS.

use std::sync::Arc;

use ibp_auth::pki::Authority;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::tls::{client_config, peer_identity, server_config, ClientAuth};
use ibp_auth::tokens::{DepotGrant, FileTicket};
use ibp_auth::trust::TokenSigner;
use ibp_auth::{unix_now, verify_chain, Group, ProxyCredential, TrustStore, VoAttributes};
use rustls_pki_types::{CertificateDer, ServerName};

#[test]
fn proxy_with_attributes_verifies_and_tls_carries_identity() {
    let ca = Authority::new_ca("Test Grid", "Test CA", 30).unwrap();
    let aa = ca.new_aa("Test Grid", "vo1", 30).unwrap();
    let user = ca.issue_user("Test Grid", "Alice", 12 * 3600).unwrap();
    let (_, ee) = x509_parser::parse_x509_certificate(&user.cert_der).unwrap();
    let now = unix_now();
    let attrs = VoAttributes {
        vo: "vo1".into(),
        vo_id: "vo1:0001".into(),
        groups: vec![Group {
            id: "g1".into(),
            name: "admins".into(),
        }],
        holder_issuer: ee.issuer().as_raw().to_vec(),
        holder_serial: ee.raw_serial().to_vec(),
        not_before: now - 60,
        not_after: now + 3600,
    };
    let ext = aa.sign_attributes(&attrs).unwrap();
    let cred = ProxyCredential::create(
        std::slice::from_ref(&user.cert_der),
        &user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(ext),
            path_len: None,
        },
    )
    .unwrap();
    let mut trust = TrustStore::new();
    trust.add_ca(ca.cert_der.clone()).unwrap();
    trust.pin_aa("vo1", aa.cert_der.clone());
    let id = verify_chain(&cred.chain_der(), &trust, now).unwrap();
    assert_eq!(id.vo, "vo1");
    assert_eq!(id.vo_id, "vo1:0001");
    assert_eq!(id.groups[0].name, "admins");
    assert_eq!(id.key_hash, cred.key_hash().unwrap());
    assert!(id.subject.contains("Alice"), "{}", id.subject);

    // A proxy of the proxy still verifies and keeps the attributes.
    let inner = ProxyCredential::create(
        &cred.chain,
        &cred.key_pkcs8,
        &ProxyOptions {
            lifetime: 600,
            attributes: None,
            path_len: None,
        },
    )
    .unwrap();
    let id2 = verify_chain(&inner.chain_der(), &trust, now).unwrap();
    assert_eq!(id2.vo_id, "vo1:0001");
    assert_ne!(id2.key_hash, id.key_hash);

    // Tokens.
    let lbone_key = ibp_auth::keys::generate_ed25519().unwrap();
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(&lbone_key).unwrap();
    trust.add_token_key(
        TokenSigner::LBone,
        ibp_auth::keys::ed25519_public(&lbone_key).unwrap(),
    );
    let grant = DepotGrant {
        depot: "127.0.0.1:6715".into(),
        vo: "vo1".into(),
        vo_id: "vo1:0001".into(),
        holder: id.key_hash,
        issued: now,
        not_after: now + 600,
    };
    let text = grant.sign(&kp);
    assert_eq!(
        DepotGrant::verify(&text, &trust, "127.0.0.1:6715", &id.key_hash, now).unwrap(),
        grant
    );
    assert!(FileTicket::verify(&text, &trust, "x", &id.key_hash, now).is_err());

    // TLS 1.3 with the proxy chain as client certificate.
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let trust = Arc::new(trust);
    let scfg = server_config(
        trust.clone(),
        vec![CertificateDer::from(server.cert_der.clone())],
        server.key_pkcs8.clone(),
        ClientAuth::Required,
    )
    .unwrap();
    let ccfg = client_config(&trust, Some(&cred)).unwrap();
    let mut sconn = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
    let mut cconn =
        rustls::ClientConnection::new(Arc::new(ccfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut buf = Vec::new();
    for _ in 0..10 {
        buf.clear();
        while cconn.wants_write() {
            cconn.write_tls(&mut buf).unwrap();
        }
        sconn.read_tls(&mut buf.as_slice()).unwrap();
        sconn.process_new_packets().unwrap();
        buf.clear();
        while sconn.wants_write() {
            sconn.write_tls(&mut buf).unwrap();
        }
        cconn.read_tls(&mut buf.as_slice()).unwrap();
        cconn.process_new_packets().unwrap();
        if !sconn.is_handshaking() && !cconn.is_handshaking() {
            break;
        }
    }
    assert!(!sconn.is_handshaking());
    let peer = peer_identity(sconn.peer_certificates(), &trust, now)
        .unwrap()
        .unwrap();
    assert_eq!(peer.vo_id, "vo1:0001");
    assert_eq!(peer.key_hash, id.key_hash);
}
