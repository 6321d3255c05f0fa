//! `ibp-depot serve`: the depot daemon. `ibp-depot demo`: start a depot on
//! loopback and run a real round trip against it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ibp_depot::config::{Config, Overrides};
use ibp_depot::daemon;
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
    #[command(flatten)]
    log: ibp_service::logging::LogArgs,
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
    ibp_service::logging::init_daemon_with("info", cli.log);
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
    let load = move || -> anyhow::Result<Config> {
        match &config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        }
        .apply(&overrides)
    };
    let cfg = load()?;
    let listeners = daemon::Listeners::bind(&cfg).await?;
    let shutdown = CancellationToken::new();
    ibp_service::signals::spawn_cancel_on_signals(shutdown.clone())
        .context("install the SIGTERM/SIGINT handlers")?;
    daemon::run(listeners, cfg, shutdown, Some(Box::new(load))).await
}
