//! The secure port's settings: the trust directory, the depot's TLS
//! certificate and key (also its client credential for secure COPYs) and
//! the VOs it serves, loaded from the configuration, and replaced whole on
//! SIGHUP ([`SecurePort::replace`]): connections already open keep the
//! settings they were accepted with, for the TLS session and its
//! certificate, and see the new VO policy and trust from their next
//! request. The handshake and `AUTH` are in `auth.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use ibp_auth::tls::{ClientAuth, ProxyClientVerifier};
use ibp_auth::{ProxyCredential, TrustStore};
use rustls::CipherSuite;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, VoPolicy};

/// The secure port's current settings, replaceable while serving.
pub struct SecurePort {
    current: RwLock<Arc<Secure>>,
}

impl SecurePort {
    pub fn new(s: Secure) -> SecurePort {
        SecurePort {
            current: RwLock::new(Arc::new(s)),
        }
    }

    /// The settings now in force (a request uses one snapshot throughout).
    pub fn current(&self) -> Arc<Secure> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `s` in force for new connections and the next requests.
    pub fn replace(&self, s: Secure) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}

/// What the depot needs to serve the secure port.
pub struct Secure {
    /// Accepts TLS connections with the depot's certificate, verifying
    /// clients against `trust`.
    pub acceptor: TlsAcceptor,
    pub trust: Arc<TrustStore>,
    /// The `host:port` grants must name.
    pub grant_name: String,
    /// The bound TLS port (written into capabilities handed out there).
    pub port: u16,
    /// The VOs served, by name.
    pub vos: HashMap<String, VoPolicy>,
    /// The depot's own certificate chain and key, presented as a TLS client
    /// certificate when it acts as the source of a secure COPY.
    pub credential: ProxyCredential,
    /// The TLS client configuration of those COPYs (trust and
    /// `credential`), built once per load.
    pub copy_client: Arc<rustls::ClientConfig>,
}

/// Loads the trust directory, the certificate and key, and builds the TLS
/// acceptor and the secure settings.
pub fn load(cfg: &Config, hostname: &str, port: u16) -> anyhow::Result<Secure> {
    let (Some(cert), Some(key), Some(trust_dir)) = (&cfg.tls_cert, &cfg.tls_key, &cfg.trust_dir)
    else {
        anyhow::bail!("tls_listen needs tls_cert, tls_key and trust_dir");
    };
    let mut trust = TrustStore::load(trust_dir)
        .with_context(|| format!("load trust directory {}", trust_dir.display()))?;
    if let Some(dir) = &cfg.vomsdir {
        trust.load_vomsdir(dir)?;
    }
    let trust = Arc::new(trust);
    // Refused unless owner-only (mode 0600), and PKCS#8: the same key
    // signs the TLS handshake and is the client key of secure COPYs.
    let key_pkcs8 = ibp_auth::keys::read_private_key(key).context("load tls_key")?;
    let tls = server_config(trust.clone(), cert, &key_pkcs8)?;
    let credential = ProxyCredential {
        chain: CertificateDer::pem_file_iter(cert)?
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()?,
        key_pkcs8,
    };
    let grant_name = cfg
        .grant_name
        .clone()
        .unwrap_or_else(|| format!("{hostname}:{port}"));
    let vos = cfg
        .vos
        .iter()
        .map(|v| (v.name.clone(), v.clone()))
        .collect();
    let copy_client = ibp_depot_client::SecureClient::config(&trust, &credential)
        .context("the TLS client configuration of secure COPYs")?;
    Ok(Secure {
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        trust,
        grant_name,
        port,
        vos,
        credential,
        copy_client,
    })
}

fn server_config(
    trust: Arc<TrustStore>,
    cert: &Path,
    key_pkcs8: &[u8],
) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    // AES-128-GCM first, and the server's order wins.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ProxyClientVerifier::new(
            trust,
            ClientAuth::Required,
        )))
        .with_single_cert(chain, key)
        .context("depot certificate and key")?;
    cfg.ignore_client_order = true;
    Ok(cfg)
}
