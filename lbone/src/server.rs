//! `lbone serve` as a library call: [`bind`], then [`run`] loads the
//! configuration's files, opens the database, starts the poller and serves
//! the API until `shutdown` is cancelled (the binary cancels it on
//! SIGTERM/SIGINT through `ibp_service::signals`).

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context;
use ibp_auth::keys::{load_signing_key, read_certificates, read_private_key};
use ibp_auth::TrustStore;
use ring::signature::KeyPair;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{router, App};
use crate::config::Config;
use crate::liveness::Liveness;
use crate::poller::Poller;
use crate::store::{redact, Store};

/// Database connections of the poller (besides the API's).
const POLLER_DB_CONNECTIONS: u32 = 2;

/// Depots verify the L-Bone's certificate as a TLS client certificate when
/// it polls their TLS port: one whose extended key usage leaves out
/// clientAuth is refused there. Said once at start, not per poll.
fn warn_without_client_auth(chain: &[rustls_pki_types::CertificateDer<'_>]) {
    let Some(leaf) = chain.first() else { return };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return;
    };
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if !eku.value.client_auth && !eku.value.any {
            tracing::warn!(
                "the server certificate lacks the clientAuth extended key usage: depots will \
                 refuse it when the L-Bone polls their TLS ports (they are then reported down); \
                 issue it with clientAuth as well as serverAuth"
            );
        }
    }
}

/// Binds the configuration's `listen` address (port 0: any free port).
pub async fn bind(cfg: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))
}

/// Reads the configuration file again, for SIGHUP.
pub type Reload = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// What the trust directory and the server certificate and key make.
struct Loaded {
    trust: TrustStore,
    /// The HTTPS server's configuration.
    server: rustls::ServerConfig,
    /// The poller's (the same certificate presented to depots).
    poller: rustls::ClientConfig,
}

fn load_tls(cfg: &Config) -> anyhow::Result<Loaded> {
    let mut trust = TrustStore::load(&cfg.trust_dir)
        .with_context(|| format!("load trust directory {}", cfg.trust_dir.display()))?;
    if let Some(dir) = &cfg.vomsdir {
        trust.load_vomsdir(dir)?;
    }
    if trust.ca_certificates().is_empty() {
        tracing::warn!(dir = %cfg.trust_dir.display(), "no trusted CA: every client certificate will be refused");
    }
    let chain = read_certificates(&cfg.server_cert).context("load the server certificate")?;
    let key = read_private_key(&cfg.server_key).context("load the server key")?;
    warn_without_client_auth(&chain);
    // The poller presents the same certificate to depots' TLS ports.
    let poller = crate::poller::tls_config(&trust, chain.clone(), key.clone())
        .context("TLS client configuration of the poller (server certificate and key)")?;
    let server = ibp_auth::tls::https_server_config(&trust, chain, key)
        .context("TLS configuration (server certificate and key)")?;
    Ok(Loaded {
        trust,
        server,
        poller,
    })
}

/// SIGHUP: the server certificate and key and the trust directory read
/// again and put in force for new connections, requests and polls; the
/// rest of the configuration needs a restart, and a change there is
/// logged as such. Nothing changes unless all of it loads.
fn apply_reload(
    app: &App,
    tls: &ibp_https::Current<rustls::ServerConfig>,
    poll_tls: &ibp_https::Current<rustls::ClientConfig>,
    started: &Config,
    reload: &Reload,
) -> Result<String, String> {
    let new = reload().map_err(|e| format!("{e:#}"))?;
    let loaded = load_tls(&new).map_err(|e| format!("{e:#}"))?;
    let cas = loaded.trust.ca_certificates().len();
    tls.replace(loaded.server);
    poll_tls.replace(loaded.poller);
    app.trust.replace(loaded.trust);
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
    let loaded = load_tls(&cfg)?;
    let tls = Arc::new(ibp_https::Current::new(loaded.server));
    let poll_tls = Arc::new(ibp_https::Current::new(loaded.poller));
    let trust = loaded.trust;
    let signing_key = load_signing_key(&cfg.signing_key).context("load the grant-signing key")?;
    let public = ibp_auth::keys::format_public_key(
        &<[u8; 32]>::try_from(signing_key.public_key().as_ref())
            .context("Ed25519 public key length")?,
    );
    let metrics = ibp_https::metrics::HttpMetrics::new("lbone");
    let store = Store::open(cfg.database_url())
        .await?
        .with_metrics(metrics.clone());
    tracing::info!(database = %redact(cfg.database_url()), backend = ?store.backend(), "database ready");

    let liveness = Liveness {
        poll_interval: cfg.poll_interval.0,
        poll_timeout: cfg.poll_timeout.0,
        missed_polls_down: cfg.missed_polls_down,
    };
    // The poller's own database connections: a flood of API requests
    // cannot keep it from recording what it found.
    let poll_store = Store::connect(cfg.database_url(), POLLER_DB_CONNECTIONS)
        .await
        .context("open the poller's database connections")?
        .with_metrics(metrics.clone());
    let bound = listener.local_addr().context("read the bound address")?;
    let poller = Poller::new(
        poll_store.clone(),
        liveness,
        cfg.poll_concurrency,
        Some(poll_tls.clone()),
        crate::poller::instance_name(bound),
    );
    let app = Arc::new(App {
        store: store.clone(),
        trust: ibp_https::Current::new(trust),
        signing_key,
        liveness,
        grant_lifetime: cfg.grant_lifetime.0,
        admin_group: cfg.admin_group.clone(),
        poll_now: poller.waker(),
        depot_tls: Some(poll_tls.clone()),
        depot_keys: Default::default(),
    });

    let render = crate::api::metrics_render(&metrics, &app);
    let addr = listener.local_addr().context("read the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}").context("write to stdout")?;
        out.flush().context("flush stdout")?;
    }
    if let Some(a) = &cfg.metrics_listen {
        let bound = ibp_https::metrics::spawn_metrics(a, render, shutdown.clone())
            .await
            .with_context(|| format!("metrics_listen {a}"))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on {bound}").context("write to stdout")?;
        out.flush().context("flush stdout")?;
    }
    tracing::info!(%addr, grant_key = %public.trim(), poll_interval = ?cfg.poll_interval.0, "L-Bone serving HTTPS");

    let polling = tokio::spawn(poller.run(shutdown.clone()));
    let opts = ibp_https::ServeOptions {
        max_connections: cfg.max_connections,
        max_connections_per_address: cfg.max_connections_per_address,
        handshake_timeout: cfg.handshake_timeout.0,
        header_timeout: cfg.header_timeout.0,
        body_timeout: cfg.body_timeout.0,
        body_min_rate: cfg.body_min_rate,
        metrics: Some(metrics),
        ..ibp_https::ServeOptions::default()
    };
    if let Some(reload) = reload {
        let (a, t, p, started) = (app.clone(), tls.clone(), poll_tls, cfg.clone());
        ibp_service::signals::spawn_reload_on_sighup(shutdown.clone(), move || {
            apply_reload(&a, &t, &p, &started, &reload)
        })
        .context("watch SIGHUP")?;
    }
    ibp_https::serve_reloadable(listener, tls, router(app), shutdown.clone(), opts).await;
    shutdown.cancel();
    if let Err(e) = polling.await {
        tracing::error!(error = %e, "poller task failed");
    }
    // Closing waits for connections in use; a dead database server must
    // not hold the process.
    let closing = async { tokio::join!(store.close(), poll_store.close()) };
    if tokio::time::timeout(std::time::Duration::from_secs(5), closing)
        .await
        .is_err()
    {
        tracing::warn!("database connections did not close within 5 s");
    }
    tracing::info!("L-Bone stopped");
    Ok(())
}
