//! Test PKI shared by the integration tests: a CA, an attribute authority
//! for "vo1", a server certificate for localhost and a user proxy.

#![allow(dead_code)]

use std::sync::Arc;

use ibp_auth::pki::Authority;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::tls::{server_config, ClientAuth};
use ibp_auth::{unix_now, Group, ProxyCredential, TrustStore, VoAttributes};
use rustls_pki_types::CertificateDer;

pub struct Pki {
    pub trust: TrustStore,
    pub server: rustls::ServerConfig,
    pub user: ProxyCredential,
}

pub fn pki() -> Pki {
    let ca = Authority::new_ca("Test Grid", "Test CA", 30).unwrap();
    let aa = ca.new_aa("Test Grid", "vo1", 30).unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let user = ca.issue_user("Test Grid", "Alice", 3600).unwrap();
    let (_, ee) = x509_parser::parse_x509_certificate(&user.cert_der).unwrap();
    let now = unix_now();
    let attrs = VoAttributes {
        vo: "vo1".into(),
        vo_id: "vo1:alice".into(),
        groups: vec![Group {
            id: "g1".into(),
            name: "users".into(),
        }],
        holder_issuer: ee.issuer().as_raw().to_vec(),
        holder_serial: ee.raw_serial().to_vec(),
        not_before: now - 60,
        not_after: now + 3600,
    };
    let proxy = ProxyCredential::create(
        std::slice::from_ref(&user.cert_der),
        &user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(aa.sign_attributes(&attrs).unwrap()),
            path_len: None,
        },
    )
    .unwrap();
    let mut trust = TrustStore::new();
    trust.add_ca(ca.cert_der.clone()).unwrap();
    trust.pin_aa("vo1", aa.cert_der.clone());
    let mut cfg = server_config(
        Arc::new(trust.clone()),
        vec![CertificateDer::from(server.cert_der.clone())],
        server.key_pkcs8.clone(),
        ClientAuth::Optional,
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        trust,
        server: cfg,
        user: proxy,
    }
}
