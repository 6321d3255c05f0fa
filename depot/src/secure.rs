//! The secure port: TLS 1.3 with the client's proxy chain, then `AUTH` with
//! a depot grant from the L-Bone, checked against the depot's VO policy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ibp_auth::tls::{ClientAuth, ProxyClientVerifier};
use ibp_auth::tokens::DepotGrant;
use ibp_auth::{Identity, TrustStore};
use ibp_proto::{Auth, IbpError, Reply};
use rustls::CipherSuite;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, VoPolicy};
use crate::journal::{Owner, MAX_OWNER_FIELD};
use crate::server::{timed, Conn, Failure, Transport};
use crate::Depot;

/// What the depot needs to serve the secure port.
pub struct Secure {
    pub trust: Arc<TrustStore>,
    /// The `host:port` grants must name.
    pub grant_name: String,
    /// The bound TLS port (written into capabilities handed out there).
    pub port: u16,
    /// The VOs served, by name.
    pub vos: HashMap<String, VoPolicy>,
}

/// An authenticated session: who, and what their VO may do here.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub owner: Owner,
    pub policy: VoPolicy,
    /// When the grant stops being valid.
    pub not_after: i64,
}

/// Loads the trust directory, the certificate and key, and builds the TLS
/// acceptor and the secure settings.
pub fn load(cfg: &Config, hostname: &str, port: u16) -> anyhow::Result<(TlsAcceptor, Secure)> {
    let (Some(cert), Some(key), Some(trust_dir)) = (&cfg.tls_cert, &cfg.tls_key, &cfg.trust_dir)
    else {
        anyhow::bail!("tls_listen needs tls_cert, tls_key and trust_dir");
    };
    let trust = Arc::new(
        TrustStore::load(trust_dir)
            .with_context(|| format!("load trust directory {}", trust_dir.display()))?,
    );
    let tls = server_config(trust.clone(), cert, key)?;
    let grant_name = cfg
        .grant_name
        .clone()
        .unwrap_or_else(|| format!("{hostname}:{port}"));
    let vos = cfg
        .vos
        .iter()
        .map(|v| (v.name.clone(), v.clone()))
        .collect();
    Ok((
        TlsAcceptor::from(Arc::new(tls)),
        Secure {
            trust,
            grant_name,
            port,
            vos,
        },
    ))
}

fn server_config(
    trust: Arc<TrustStore>,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("read private key {}", key.display()))?;
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

/// The TLS handshake (bounded by the I/O timeout); `None` closes the
/// connection.
pub async fn handshake(
    depot: &Depot,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<Conn> {
    let secure = depot.secure.as_ref()?;
    let tls = match timed(depot.io_timeout, acceptor.accept(stream)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
    };
    let identity = ibp_auth::tls::peer_identity(
        tls.get_ref().1.peer_certificates(),
        &secure.trust,
        ibp_auth::unix_now(),
    );
    let identity = match identity {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err("no client certificate".to_owned()),
        Err(e) => Err(format!("client credential refused: {e}")),
    };
    let mut conn = Conn::with_transport(
        Transport::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
        peer,
        depot.io_timeout,
    );
    conn.peer_identity = Some(identity);
    Some(conn)
}

/// AUTH: the grant must be validly signed by a trusted L-Bone key, within
/// its lifetime, name this depot, be bound to the TLS peer's key, carry the
/// peer's verified VO and VO ID, and the VO must be served here.
pub async fn auth(depot: &Depot, conn: &mut Conn, a: Auth) -> Result<(), Failure> {
    let refuse = |why: String| Failure::Refused(IbpError::CapAccessDenied, why);
    let secure = depot
        .secure
        .as_ref()
        .ok_or_else(|| refuse("no secure port".into()))?;
    let identity = match &conn.peer_identity {
        Some(Ok(id)) => id.clone(),
        Some(Err(why)) => return Err(refuse(why.clone())),
        None => return Err(refuse("no verified client credential".into())),
    };
    let now = ibp_auth::unix_now();
    let grant = DepotGrant::verify(
        &a.grant,
        &secure.trust,
        &secure.grant_name,
        &identity.key_hash,
        now,
    )
    .map_err(|e| refuse(format!("depot grant refused: {e}")))?;
    if grant.vo != identity.vo || grant.vo_id != identity.vo_id {
        return Err(refuse(format!(
            "depot grant is for {}/{}, the credential is {}/{}",
            grant.vo, grant.vo_id, identity.vo, identity.vo_id
        )));
    }
    if grant.vo.len() > MAX_OWNER_FIELD || grant.vo_id.len() > MAX_OWNER_FIELD {
        return Err(refuse("VO name or VO ID too long".into()));
    }
    let policy = secure
        .vos
        .get(&grant.vo)
        .cloned()
        .ok_or_else(|| refuse(format!("VO {} is not served by this depot", grant.vo)))?;
    tracing::info!(peer = %conn.peer, vo = %grant.vo, vo_id = %grant.vo_id, subject = %identity.subject, "IBP_auth session");
    conn.session = Some(Session {
        owner: Owner {
            vo: grant.vo,
            vo_id: grant.vo_id,
        },
        identity,
        policy,
        not_after: grant.not_after,
    });
    conn.reply(&Reply::Ok).await?;
    Ok(())
}
