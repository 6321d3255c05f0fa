//! `online-ca serve` as a library call: [`bind`], then [`run`] until
//! `shutdown` is cancelled (the binary cancels it on SIGTERM/SIGINT
//! through `ibp_service::signals`, and reloads on SIGHUP). HTTPS serving: rustls (TLS 1.3, client certificates optional and
//! verified by `ibp_auth::tls::ProxyClientVerifier`) through `ibp-https`,
//! which gives handlers the verified peer chain and the remote address as
//! request extensions.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use ibp_auth::TrustStore;
use tokio::net::TcpListener;

use crate::api::{router, App, Live};
use crate::ca::Ca;
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

/// Reads the configuration file again, for SIGHUP.
pub type Reload = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// The trust directory, and the TLS configuration with the server
/// certificate and key (`<dir>/server.pem`, `server.key`), of `cfg`.
fn load_tls(cfg: &Config) -> anyhow::Result<(TrustStore, rustls::ServerConfig)> {
    let trust_dir = cfg.trust_dir();
    let trust = TrustStore::load(&trust_dir)
        .with_context(|| format!("load trust directory {}", trust_dir.display()))?;
    if trust.ca_certificates().is_empty() {
        tracing::warn!(dir = %trust_dir.display(), "no trusted CA: /v1/attributes and /v1/hosts/renew will accept no client certificate");
    }
    let chain = ibp_auth::keys::read_certificates(&cfg.dir.join("server.pem"))?;
    let server_key = ibp_auth::keys::read_private_key(&cfg.dir.join("server.key"))?;
    let tls = ibp_auth::tls::https_server_config(&trust, chain, server_key)
        .context("TLS configuration (server certificate and key)")?;
    Ok((trust, tls))
}

/// SIGHUP: the server certificate and key, the trust directory, and the
/// `[vos.*]` and `[hosts]` sections read again and put in force for new
/// connections and requests; the rest (the CA and AA keys, `listen`,
/// `database`, lifetimes, authenticators, limits) needs a restart, and a
/// change there is logged as such. Nothing changes unless all of it loads.
fn apply_reload(
    app: &App,
    tls: &ibp_https::Current<rustls::ServerConfig>,
    started: &Config,
    reload: &Reload,
) -> Result<String, String> {
    let new = reload().map_err(|e| format!("{e:#}"))?;
    if new.dir != started.dir {
        return Err(format!(
            "dir changed ({} to {}): restart the CA to serve another CA directory",
            started.dir.display(),
            new.dir.display()
        ));
    }
    new.check_vos(app.ca.vos()).map_err(|e| format!("{e:#}"))?;
    let (trust, config) = load_tls(&new).map_err(|e| format!("{e:#}"))?;
    let cas = trust.ca_certificates().len();
    tls.replace(config);
    app.trust.replace(trust);
    app.live.replace(Live::of(&new));
    ibp_service::signals::warn_if_restart_needed(
        &new,
        started,
        "trust_dir, [vos.*] and [hosts]",
        |rest, started| {
            rest.trust_dir = started.trust_dir.clone();
            rest.vos = started.vos.clone();
            rest.hosts = started.hosts.clone();
        },
    );
    Ok(format!(
        "server certificate and key, trust directory ({cas} CAs), [vos.*] and [hosts] read again"
    ))
}

/// Builds everything from the configuration and serves on `listener` until
/// `shutdown` is cancelled; says `listening on ADDR:PORT` on stdout once
/// ready. With `reload`, SIGHUP reads the configuration again
/// ([`apply_reload`] says what changes without a restart).
pub async fn run(
    listener: TcpListener,
    cfg: Config,
    shutdown: tokio_util::sync::CancellationToken,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let ca = Ca::load(&cfg.dir, &cfg.org)?;
    cfg.check_vos(ca.vos())?;
    let (trust, tls) = load_tls(&cfg)?;
    let tls = Arc::new(ibp_https::Current::new(tls));

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
        live: ibp_https::Current::new(Live::of(&cfg)),
        cfg,
        ca,
        store,
        trust: ibp_https::Current::new(trust),
        local,
        radius,
        oidc,
        limiter,
        crl: Default::default(),
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

    if let Some(reload) = reload {
        let (a, t, started) = (app.clone(), tls.clone(), app.cfg.clone());
        ibp_service::signals::spawn_reload_on_sighup(shutdown.clone(), move || {
            apply_reload(&a, &t, &started, &reload)
        })
        .context("watch SIGHUP")?;
    }
    ibp_https::serve_reloadable(listener, tls, router, shutdown, opts).await;
    tracing::info!("online CA stopped");
    Ok(())
}
