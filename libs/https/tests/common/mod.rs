//! Test PKI shared by the integration tests: a CA, an attribute authority
//! for "vo1", a server certificate for localhost and a user proxy.

#![allow(dead_code)]

use std::sync::Arc;

use ibp_auth::tls::{server_config, ClientAuth};
use ibp_auth::{ProxyCredential, TrustStore};
use rustls_pki_types::CertificateDer;

pub struct Pki {
    pub trust: TrustStore,
    pub server: rustls::ServerConfig,
    pub user: ProxyCredential,
}

pub fn pki() -> Pki {
    let pki = ibp_testkit::pki::Pki::new(&["vo1"]);
    let server = pki
        .ca
        .issue_server(&["localhost", "127.0.0.1"], 30)
        .unwrap();
    let user = pki
        .member("Alice", "vo1")
        .vo_id("vo1:alice")
        .groups(&[("g1", "users")])
        .attributes_valid(-60, 3600)
        .lifetimes(3600, 3600)
        .proxy();
    let trust = pki.trust_store();
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
        user,
    }
}
