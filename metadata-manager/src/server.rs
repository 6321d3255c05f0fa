//! `metadata-manager serve` as a library call: [`bind`], then [`run`]
//! loads the configuration's files, opens the database and serves the API
//! until `shutdown` is cancelled (the binary cancels it on SIGTERM/SIGINT
//! through `ibp_service::signals`).

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ibp_auth::TrustStore;
use ring::signature::KeyPair;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{router, App};
use crate::config::Config;
use crate::store::{redact, Store};

/// Binds the configuration's `listen` address (port 0: any free port).
pub async fn bind(cfg: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))
}

/// Reads the configuration file again, for SIGHUP.
pub type Reload = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// The trust directory, and the TLS configuration with the server
/// certificate and key, of `cfg`.
fn load_tls(cfg: &Config) -> anyhow::Result<(TrustStore, rustls::ServerConfig)> {
    let mut trust = TrustStore::load(&cfg.trust_dir)
        .with_context(|| format!("load trust directory {}", cfg.trust_dir.display()))?;
    if let Some(dir) = &cfg.vomsdir {
        trust.load_vomsdir(dir)?;
    }
    if trust.ca_certificates().is_empty() {
        tracing::warn!(dir = %cfg.trust_dir.display(), "no trusted CA: every client certificate will be refused");
    }
    let chain = ibp_auth::keys::read_certificates(&cfg.server_cert)?;
    let key = ibp_auth::keys::read_private_key(&cfg.server_key)?;
    let tls = ibp_auth::tls::https_server_config(&trust, chain, key)
        .context("TLS configuration (server certificate and key)")?;
    Ok((trust, tls))
}

/// SIGHUP: the server certificate and key and the trust directory read
/// again and put in force for new connections and requests (cached
/// identities forgotten); the rest of the configuration needs a restart,
/// and a change there is logged as such. Nothing changes unless all of it
/// loads.
fn apply_reload(
    app: &App,
    tls: &ibp_https::Current<rustls::ServerConfig>,
    started: &Config,
    reload: &Reload,
) -> Result<String, String> {
    let new = reload().map_err(|e| format!("{e:#}"))?;
    let (trust, config) = load_tls(&new).map_err(|e| format!("{e:#}"))?;
    let cas = trust.ca_certificates().len();
    tls.replace(config);
    app.trust.replace(trust);
    app.identities.clear();
    ibp_service::signals::warn_if_restart_needed(
        &new,
        started,
        "server_cert, server_key, trust_dir and vomsdir",
        |rest, started| {
            rest.trust_dir = started.trust_dir.clone();
            rest.vomsdir = started.vomsdir.clone();
            rest.server_cert = started.server_cert.clone();
            rest.server_key = started.server_key.clone();
        },
    );
    Ok(format!(
        "server certificate and key, trust directory ({cas} CAs) read again"
    ))
}

/// Serves on `listener` until `shutdown` is cancelled; says `listening on
/// ADDR:PORT` on stdout once ready.
pub async fn run(
    listener: TcpListener,
    cfg: Config,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let (trust, tls) = load_tls(&cfg)?;
    let tls = Arc::new(ibp_https::Current::new(tls));
    let signing_key = ibp_auth::keys::load_signing_key(&cfg.signing_key)?;
    let public = ibp_auth::keys::format_public_key(
        &<[u8; 32]>::try_from(signing_key.public_key().as_ref())
            .context("Ed25519 public key length")?,
    );
    let metrics = ibp_https::metrics::HttpMetrics::new("mdm");
    let store = Store::open(cfg.database_url(), cfg.db_connections, cfg.limits())
        .await?
        .with_retention(cfg.retention())
        .with_metrics(metrics.clone());
    tracing::info!(database = %redact(cfg.database_url()), backend = ?store.backend(), "database ready");

    let app = Arc::new(App {
        store: store.clone(),
        trust: ibp_https::Current::new(trust),
        identities: ibp_auth::cache::IdentityCache::new(10_000, 300),
        signing_key,
        ticket_lifetime: cfg.ticket_lifetime,
        max_exnode: usize::try_from(cfg.max_exnode).unwrap_or(usize::MAX),
        admin_group: cfg.admin_group.clone(),
        tickets: Mutex::new(Default::default()),
        signed: Mutex::new(Default::default()),
        groups_seen: Mutex::new(Default::default()),
        bodies: crate::api::BodyBudget::new(cfg.max_buffered_bodies, cfg.buffered_body_wait),
    });

    let addr = listener.local_addr().context("read the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}").context("write to stdout")?;
        out.flush().context("flush stdout")?;
    }
    if let Some(a) = &cfg.metrics_listen {
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
    tracing::info!(%addr, ticket_key = %public.trim(), ticket_lifetime = ?cfg.ticket_lifetime, max_exnode = cfg.max_exnode, max_buffered_bodies = cfg.max_buffered_bodies, limits = ?cfg.limits(), "metadata manager serving HTTPS");

    let opts = ibp_https::ServeOptions {
        max_connections: cfg.max_connections,
        max_connections_per_address: cfg.max_connections_per_address,
        handshake_timeout: cfg.handshake_timeout,
        header_timeout: cfg.header_timeout,
        body_timeout: cfg.body_timeout,
        body_min_rate: cfg.body_min_rate,
        metrics: Some(metrics),
        ..ibp_https::ServeOptions::default()
    };
    if let Some(reload) = reload {
        let (a, t, started) = (app.clone(), tls.clone(), cfg.clone());
        ibp_service::signals::spawn_reload_on_sighup(shutdown.clone(), move || {
            apply_reload(&a, &t, &started, &reload)
        })
        .context("watch SIGHUP")?;
    }
    ibp_https::serve_reloadable(listener, tls, router(app.clone()), shutdown.clone(), opts).await;
    if tokio::time::timeout(std::time::Duration::from_secs(5), store.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections did not close within 5 s");
    }
    tracing::info!("metadata manager stopped");
    Ok(())
}
