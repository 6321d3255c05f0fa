//! `ibp-depot serve` as a library call: [`Listeners::bind`] the ports of a
//! configuration, then [`run`] the depot on them until `shutdown` is
//! cancelled. The binary's `main` is `Config::load`, `Listeners::bind`,
//! `ibp_service::signals`, `run`; tests and grids can call the same.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SyncMode};
use crate::{metrics, server, Depot};

/// The bound ports of a configuration: the legacy port (unless `legacy =
/// false`), the TLS port and the data port (when configured).
pub struct Listeners {
    pub legacy: Option<TcpListener>,
    pub tls: Option<TcpListener>,
    pub data: Option<TcpListener>,
}

impl Listeners {
    /// Binds every port `cfg` names.
    pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        let legacy = if cfg.legacy {
            Some(
                TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("bind {}", cfg.listen))?,
            )
        } else {
            None
        };
        let tls = match cfg.tls_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind TLS address {addr}"))?,
            ),
            None => None,
        };
        let data = match cfg.data_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind data address {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { legacy, tls, data })
    }
}

fn local(l: &Option<TcpListener>, what: &str) -> anyhow::Result<Option<SocketAddr>> {
    l.as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .with_context(|| format!("read the bound {what}address"))
}

/// Opens the depot of `cfg` (its resources, journals and secure-port
/// policy), says `listening on ADDR:PORT` (then `tls listening on`, `data
/// listening on`, `metrics on` as configured) on stdout, and serves until
/// `shutdown` is cancelled; then finishes in-flight requests (at most
/// `shutdown_grace`) and syncs the journals.
pub async fn run(
    listeners: Listeners,
    cfg: Config,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let legacy_bound = local(&listeners.legacy, "")?;
    let tls_bound = local(&listeners.tls, "TLS ")?;
    let data_bound = local(&listeners.data, "data ")?;
    // Config::apply guarantees at least one of the two.
    let bound = legacy_bound
        .or(tls_bound)
        .context("neither the legacy nor the TLS port is configured")?;
    let mut depot = Depot::open(&cfg, bound)?;
    depot.data_port = data_bound.map(|a| a.port());
    if let Some(t) = tls_bound {
        let secure = crate::secure::load(&cfg, &depot.hostname, t.port())?;
        tracing::info!(grant_name = %secure.grant_name, vos = secure.vos.len(), "secure port configured");
        depot.secure = Some(crate::secure::SecurePort::new(secure));
    }
    let depot = Arc::new(depot);
    if let Some(reload) = reload {
        let (d, started) = (depot.clone(), cfg.clone());
        ibp_service::signals::spawn_reload_on_sighup(shutdown.clone(), move || {
            apply_reload(&d, &started, &reload)
        })
        .context("watch SIGHUP")?;
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {bound}").context("write to stdout")?;
        if let Some(t) = tls_bound {
            writeln!(out, "tls listening on {t}").context("write to stdout")?;
        }
        if let Some(d) = data_bound {
            writeln!(out, "data listening on {d}").context("write to stdout")?;
        }
        out.flush().context("flush stdout")?;
    }
    if let Some(addr) = cfg.metrics_listen {
        let l = metrics::bind(addr)
            .await
            .with_context(|| format!("bind metrics address {addr}"))?;
        let maddr = l.local_addr().context("read metrics address")?;
        tracing::info!(%maddr, "metrics endpoint at http://{maddr}/metrics");
        println!("metrics on {maddr}");
        let (d, s) = (depot.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, d, s).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!(%bound, tls = ?tls_bound, hostname = %depot.hostname, resources = depot.resources().len(), sync = ?cfg.sync, "depot serving");

    spawn_reaper(depot.clone(), &cfg, shutdown.clone());
    if cfg.sync == SyncMode::Batch {
        spawn_batch_syncer(
            depot.clone(),
            Duration::from_millis(cfg.batch_interval_ms.max(1)),
            shutdown.clone(),
        );
    }

    let grace = cfg.shutdown_grace.as_duration();
    let legacy_port = listeners.legacy.map(|l| {
        tokio::spawn(server::run(
            l,
            depot.clone(),
            cfg.max_connections,
            shutdown.clone(),
            grace,
        ))
    });
    let secure_port = listeners.tls.map(|l| {
        tokio::spawn(server::run_secure(
            l,
            depot.clone(),
            cfg.max_connections,
            shutdown.clone(),
            grace,
        ))
    });
    let data_port = listeners.data.map(|l| {
        tokio::spawn(server::run_data(
            l,
            depot.clone(),
            cfg.max_connections,
            shutdown.clone(),
            grace,
        ))
    });
    for task in [legacy_port, secure_port, data_port].into_iter().flatten() {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "accept loop failed");
        }
    }
    for r in depot.resources() {
        if let Err(e) = r.sync_journal().await {
            tracing::error!(rid = r.rid.0, error = %e, "final journal sync failed");
        }
    }
    tracing::info!("depot stopped");
    Ok(())
}

/// Reads the configuration again (the file, then the command line's
/// overrides), for SIGHUP.
pub type Reload = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// SIGHUP: puts in force the reloaded configuration's secure-port
/// settings (certificate and key, trust directory, `grant_name`, `[[vo]]`
/// policies) and quotas (`[[vo]]` and `[[user]]`); the rest needs a
/// restart, and a change there is logged as such. Nothing changes unless
/// all of it loads.
fn apply_reload(depot: &Depot, started: &Config, reload: &Reload) -> Result<String, String> {
    let new = reload().map_err(|e| format!("{e:#}"))?;
    let secure = match (&depot.secure, started.tls_listen) {
        (Some(port), Some(_)) => {
            let tls_port = port.current().port;
            Some(
                crate::secure::load(&new, &depot.hostname, tls_port)
                    .map_err(|e| format!("{e:#}"))?,
            )
        }
        _ => None,
    };
    let mut summary = format!(
        "{} VO policies, {} user quotas",
        new.vos.len(),
        new.users.len()
    );
    if let (Some(port), Some(s)) = (&depot.secure, secure) {
        port.replace(s);
        summary.push_str("; certificate, key and trust directory read again");
    }
    depot.quotas.set_limits(&new);
    ibp_service::signals::warn_if_restart_needed(
        &new,
        started,
        "tls_cert, tls_key, trust_dir, vomsdir, grant_name, [[vo]] and [[user]]",
        |rest, started| {
            rest.tls_cert = started.tls_cert.clone();
            rest.tls_key = started.tls_key.clone();
            rest.trust_dir = started.trust_dir.clone();
            rest.vomsdir = started.vomsdir.clone();
            rest.grant_name = started.grant_name.clone();
            rest.vos = started.vos.clone();
            rest.users = started.users.clone();
        },
    );
    Ok(summary)
}

/// Expired allocations to the recycle area, every `reap_interval`.
fn spawn_reaper(depot: Arc<Depot>, cfg: &Config, shutdown: CancellationToken) {
    let every = cfg
        .reap_interval
        .as_duration()
        .max(Duration::from_millis(100));
    let grace = cfg.recycle_grace.as_i64();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for r in depot.resources() {
                let r = r.clone();
                let _ = tokio::task::spawn_blocking(move || r.reap(grace)).await;
            }
        }
    });
}

/// With `sync = "batch"`: the journals fsynced every `every`.
fn spawn_batch_syncer(depot: Arc<Depot>, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for r in depot.resources() {
                if let Err(e) = r.sync_journal().await {
                    tracing::error!(rid = r.rid.0, error = %e, "journal sync failed");
                }
            }
        }
    });
}
