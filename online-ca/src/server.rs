//! HTTPS serving: rustls (TLS 1.3, client certificates optional and
//! verified by `ibp_auth::tls::ProxyClientVerifier`) under hyper 1 and an
//! axum router. The verified peer chain and address of each connection are
//! given to the handlers as a request extension ([`ConnInfo`]).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ibp_auth::tls::ClientAuth;
use ibp_auth::TrustStore;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{router, App};
use crate::ca::{read_pem_cert, read_pem_key, Ca};
use crate::config::Config;
use crate::local::LocalUsers;
use crate::oidc::Oidc;
use crate::radius_auth::RadiusAuth;
use crate::ratelimit::RateLimiter;
use crate::store::Store;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The client's certificate chain (leaf first), verified during the
    /// handshake; `None` when it presented none.
    pub peer: Option<Arc<Vec<CertificateDer<'static>>>>,
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Builds everything from the configuration and serves until SIGTERM/SIGINT.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let ca = Ca::load(&cfg.dir, &cfg.org)?;
    let trust_dir = cfg.trust_dir();
    let trust = TrustStore::load(&trust_dir)
        .with_context(|| format!("load trust directory {}", trust_dir.display()))?;
    if trust.ca_certificates().is_empty() {
        tracing::warn!(dir = %trust_dir.display(), "no trusted CA: /v1/attributes will accept no client certificate");
    }
    let server_cert = read_pem_cert(&cfg.dir.join("server.pem"))?;
    let server_key = read_pem_key(&cfg.dir.join("server.key"))?;
    let trust = Arc::new(trust);
    let mut tls = ibp_auth::tls::server_config(
        trust.clone(),
        vec![CertificateDer::from(server_cert)],
        server_key,
        ClientAuth::Optional,
    )
    .context("TLS configuration")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let store = Store::open(&cfg.database_url()).await?;
    let local = match &cfg.local {
        Some(l) => Some(Arc::new(LocalUsers::new(l.users_file.clone())?)),
        None => None,
    };
    let radius = cfg.radius.clone().map(RadiusAuth::new);
    let oidc = match &cfg.oidc {
        Some(o) => Some(Oidc::new(o)?),
        None => None,
    };
    let limiter = RateLimiter::new(
        cfg.rate_limit.max_failures,
        cfg.rate_limit.window.duration(),
    );
    let methods: Vec<&str> = [
        local.as_ref().map(|_| "local"),
        radius.as_ref().map(|_| "radius"),
        oidc.as_ref().map(|_| "oidc"),
    ]
    .into_iter()
    .flatten()
    .collect();
    tracing::info!(vos = ?ca.vos().collect::<Vec<_>>(), ?methods, "online CA ready");

    let max_connections = cfg.max_connections;
    let listen = cfg.listen.clone();
    let app = Arc::new(App {
        cfg,
        ca,
        store,
        trust,
        local,
        radius,
        oidc,
        limiter,
    });
    let router = router(app.clone());

    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "serving HTTPS");

    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => p?,
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = tls.get_ref().1.peer_certificates().map(|certs| {
                Arc::new(
                    certs
                        .iter()
                        .map(|c| c.clone().into_owned())
                        .collect::<Vec<_>>(),
                )
            });
            let info = ConnInfo { remote, peer };
            let svc = TowerToHyperService::new(router.layer(axum::Extension(info)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), svc);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "connection ended with an error")
                }
                Err(_) => tracing::debug!(%remote, "connection open too long, closed"),
            }
        });
    }
    tracing::info!("shutting down");
    app.store.close().await;
    Ok(())
}
