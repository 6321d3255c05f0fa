//! `ibp-depot serve`: the depot daemon. `ibp-depot demo`: start a depot on
//! loopback and run a real round trip against it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ibp_depot::config::{Config, Overrides, SyncMode};
use ibp_depot::{metrics, server, Depot};
use tokio_util::sync::CancellationToken;

mod demo;

#[derive(Parser)]
#[command(
    name = "ibp-depot",
    version,
    about = "IBP depot: time-limited byte allocations behind capabilities"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the depot. The first line on stdout is `listening on ADDR:PORT`
    /// (the legacy port, or the TLS port when `legacy = false`); with a TLS
    /// port, the next is `tls listening on ADDR:PORT`.
    Serve {
        /// TOML configuration file (see docs/depot.md, "Configuration file").
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Box<Overrides>,
    },
    /// Start a depot on loopback with embedded defaults and run an
    /// ALLOCATE / STORE / LOAD / COPY round trip against it.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ibp-depot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Serve { config, overrides } => serve(config, *overrides).await,
            Cmd::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ibp-depot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let cfg = match &config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    }
    .apply(&overrides)?;
    let listener = if cfg.legacy {
        let l = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("bind {}", cfg.listen))?;
        Some(l)
    } else {
        None
    };
    let tls_listener = match cfg.tls_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind TLS address {addr}"))?,
        ),
        None => None,
    };
    let data_listener = match cfg.data_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind data address {addr}"))?,
        ),
        None => None,
    };
    let data_bound = match &data_listener {
        Some(l) => Some(l.local_addr().context("read bound data address")?),
        None => None,
    };
    let legacy_bound = match &listener {
        Some(l) => Some(l.local_addr().context("read bound address")?),
        None => None,
    };
    let tls_bound = match &tls_listener {
        Some(l) => Some(l.local_addr().context("read bound TLS address")?),
        None => None,
    };
    // Config::apply guarantees at least one of the two.
    let bound = legacy_bound
        .or(tls_bound)
        .context("neither the legacy nor the TLS port is configured")?;
    let mut depot = Depot::open(&cfg, bound)?;
    depot.data_port = data_bound.map(|a| a.port());
    let acceptor = match tls_bound {
        Some(t) => {
            let (acceptor, secure) = ibp_depot::secure::load(&cfg, &depot.hostname, t.port())?;
            tracing::info!(grant_name = %secure.grant_name, vos = secure.vos.len(), "secure port configured");
            depot.secure = Some(secure);
            Some(acceptor)
        }
        None => None,
    };
    let depot = Arc::new(depot);
    let shutdown = CancellationToken::new();

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

    spawn_signal_handler(shutdown.clone())?;
    spawn_reaper(depot.clone(), &cfg, shutdown.clone());
    if cfg.sync == SyncMode::Batch {
        spawn_batch_syncer(
            depot.clone(),
            Duration::from_millis(cfg.batch_interval_ms.max(1)),
            shutdown.clone(),
        );
    }

    let grace = cfg.shutdown_grace.as_duration();
    let legacy_port = listener.map(|l| {
        tokio::spawn(server::run(
            l,
            depot.clone(),
            cfg.max_connections,
            shutdown.clone(),
            grace,
        ))
    });
    let secure_port = tls_listener.zip(acceptor).map(|(l, a)| {
        tokio::spawn(server::run_secure(
            l,
            a,
            depot.clone(),
            cfg.max_connections,
            shutdown.clone(),
            grace,
        ))
    });
    let data_port = data_listener.map(|l| {
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

fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
        }
        shutdown.cancel();
    });
    Ok(())
}

fn spawn_reaper(depot: Arc<Depot>, cfg: &Config, shutdown: CancellationToken) {
    let every = cfg
        .reap_interval
        .as_duration()
        .max(Duration::from_millis(100));
    let grace = cfg.recycle_grace.0 as i64;
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
