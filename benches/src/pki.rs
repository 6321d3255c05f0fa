//! A test PKI for the benchmarks, written under one directory: a CA, the
//! vo1 attribute authority, a server certificate for 127.0.0.1/localhost
//! (`depot.pem`, `depot.key`), L-Bone and metadata-manager signing keys, a
//! trust directory (`trust/` with ca/, vomsdir/vo1/, lbone/, metadata/) and
//! a proxy of user Alice (VO ID `vo1:0001`) with vo1 attributes.

use std::path::Path;

use ibp_auth::keys::{ed25519_public, format_public_key, generate_ed25519};
use ibp_auth::pki::Authority;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::{unix_now, ProxyCredential, TrustStore, VoAttributes};
use ring::signature::Ed25519KeyPair;

pub fn pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

pub struct Pki {
    pub ca: Authority,
    pub server_cert: Vec<u8>,
    pub server_key: Vec<u8>,
    pub lbone: Ed25519KeyPair,
    pub mdm: Ed25519KeyPair,
    pub user: ProxyCredential,
    pub client_trust: TrustStore,
}

pub fn mint(dir: &Path) -> anyhow::Result<Pki> {
    let ca = Authority::new_ca("Bench Grid", "Bench CA", 2)?;
    let aa = ca.new_aa("Bench Grid", "vo1", 2)?;
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 2)?;
    let lbone_key = generate_ed25519()?;
    let mdm_key = generate_ed25519()?;
    let trust = dir.join("trust");
    for sub in ["ca", "vomsdir/vo1", "lbone", "metadata"] {
        std::fs::create_dir_all(trust.join(sub))?;
    }
    std::fs::write(trust.join("ca/ca.pem"), pem("CERTIFICATE", &ca.cert_der))?;
    std::fs::write(
        trust.join("vomsdir/vo1/aa.pem"),
        pem("CERTIFICATE", &aa.cert_der),
    )?;
    std::fs::write(
        trust.join("lbone/lbone.pub"),
        format_public_key(&ed25519_public(&lbone_key)?),
    )?;
    std::fs::write(
        trust.join("metadata/mdm.pub"),
        format_public_key(&ed25519_public(&mdm_key)?),
    )?;
    std::fs::write(dir.join("depot.pem"), pem("CERTIFICATE", &server.cert_der))?;
    // Owner-only: the depot and the metadata manager refuse anything else.
    ibp_auth::keys::write_secret(
        &dir.join("depot.key"),
        pem("PRIVATE KEY", &server.key_pkcs8).as_bytes(),
    )?;
    let user = ca.issue_user("Bench Grid", "Alice", 12 * 3600)?;
    let (_, ee) = x509_parser::parse_x509_certificate(&user.cert_der)
        .map_err(|e| anyhow::anyhow!("parse user certificate: {e}"))?;
    let now = unix_now();
    let attrs = VoAttributes {
        vo: "vo1".into(),
        vo_id: "vo1:0001".into(),
        groups: vec![],
        holder_issuer: ee.issuer().as_raw().to_vec(),
        holder_serial: ee.raw_serial().to_vec(),
        not_before: now - 60,
        not_after: now + 3600,
    };
    let ext = aa.sign_attributes(&attrs)?;
    let proxy = ProxyCredential::create(
        std::slice::from_ref(&user.cert_der),
        &user.key_pkcs8,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(ext),
            path_len: None,
        },
    )?;
    let mut client_trust = TrustStore::new();
    client_trust.add_ca(ca.cert_der.clone())?;
    Ok(Pki {
        ca,
        server_cert: server.cert_der,
        server_key: server.key_pkcs8,
        lbone: Ed25519KeyPair::from_pkcs8(&lbone_key)
            .map_err(|e| anyhow::anyhow!("L-Bone key: {e}"))?,
        mdm: Ed25519KeyPair::from_pkcs8(&mdm_key).map_err(|e| anyhow::anyhow!("MDM key: {e}"))?,
        user: proxy,
        client_trust,
    })
}
