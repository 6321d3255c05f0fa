//! `online-ca serve` as a library call: [`bind`], then [`run`] until
//! `shutdown` is cancelled (the binary cancels it on SIGTERM/SIGINT
//! through `ibp_service::signals`). HTTPS serving: rustls (TLS 1.3, client certificates optional and
//! verified by `ibp_auth::tls::ProxyClientVerifier`) through `ibp-https`,
//! which gives handlers the verified peer chain and the remote address as
//! request extensions.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use ibp_auth::tls::ClientAuth;
use ibp_auth::TrustStore;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

use crate::api::{router, App};
use crate::ca::{read_pem_cert, Ca};
use crate::config::Config;
use crate::local::LocalUsers;
use crate::oidc::Oidc;
use crate::radius_auth::RadiusAuth;
use crate::ratelimit::RateLimiter;
use crate::store::Store;

/// Binds the configuration's `listen` address (port 0: any free port).
pub async fn bind(cfg: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))
}

/// Builds everything from the configuration and serves on `listener` until
/// `shutdown` is cancelled; says `listening on ADDR:PORT` on stdout once
/// ready.
pub async fn run(
    listener: TcpListener,
    cfg: Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let ca = Ca::load(&cfg.dir, &cfg.org)?;
    cfg.check_vos(ca.vos())?;
    let trust_dir = cfg.trust_dir();
    let trust = TrustStore::load(&trust_dir)
        .with_context(|| format!("load trust directory {}", trust_dir.display()))?;
    if trust.ca_certificates().is_empty() {
        tracing::warn!(dir = %trust_dir.display(), "no trusted CA: /v1/attributes will accept no client certificate");
    }
    let server_cert = read_pem_cert(&cfg.dir.join("server.pem"))?;
    let server_key = ibp_auth::keys::read_private_key(&cfg.dir.join("server.key"))?;
    let trust = Arc::new(trust);
    let mut tls = ibp_auth::tls::server_config(
        trust.clone(),
        vec![CertificateDer::from(server_cert)],
        server_key,
        ClientAuth::Optional,
    )
    .context("TLS configuration")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

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
    let limiter = RateLimiter::new(cfg.rate_limit.limits());
    let methods: Vec<&str> = [
        local.as_ref().map(|_| "local"),
        radius.as_ref().map(|_| "radius"),
        oidc.as_ref().map(|_| "oidc"),
    ]
    .into_iter()
    .flatten()
    .collect();
    tracing::info!(vos = ?ca.vos().collect::<Vec<_>>(), ?methods, "online CA ready");

    let metrics = ibp_https::metrics::HttpMetrics::new("ca");
    let opts = ibp_https::server::ServeOptions {
        max_connections: cfg.max_connections,
        max_connections_per_address: cfg.max_connections_per_address,
        handshake_timeout: cfg.handshake_timeout.as_duration(),
        header_timeout: cfg.header_timeout.as_duration(),
        body_timeout: cfg.body_timeout.as_duration(),
        body_min_rate: cfg.body_min_rate,
        metrics: Some(metrics.clone()),
        ..ibp_https::server::ServeOptions::default()
    };
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

    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    if let Some(a) = &app.cfg.metrics_listen {
        let bound = ibp_https::metrics::spawn_metrics(
            a,
            ibp_https::metrics::render_of(&metrics),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("metrics_listen {a}"))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on {bound}").context("write to stdout")?;
        out.flush().context("flush stdout")?;
    }
    tracing::info!(%addr, "serving HTTPS");

    ibp_https::server::serve_with(listener, Arc::new(tls), router, shutdown, opts).await;
    tracing::info!("online CA stopped");
    Ok(())
}
