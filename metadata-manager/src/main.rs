//! `metadata-manager`: the exNode store with ACLs and file tickets
//! (`serve`) and its setup (`init`). See docs/metadata-manager.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use metadata_manager::config::Config;

#[derive(Parser)]
#[command(
    name = "metadata-manager",
    version,
    about = "Metadata manager: exNodes by path per VO, ACLs, wrapped data keys and signed file tickets"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    log: ibp_service::logging::LogArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Copy the SQLite database consistently into FILE (owner-only), also
    /// while the server runs; PostgreSQL: use pg_dump
    Backup {
        /// TOML configuration file (its `database`)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Where the copy goes (must not exist)
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Serve the API. The first line on stdout is `listening on ADDR:PORT`.
    Serve {
        /// TOML configuration file (see docs/metadata-manager.md)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make the ticket-signing key (metadata.key, mode 0600), its public
    /// half (metadata.pub, for depots' trust directories) and a sample
    /// configuration (metadata.toml) in DIR
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing signing key
        #[arg(long)]
        force: bool,
    },
}

/// The server's `run` on its listener until SIGTERM/SIGINT.
async fn serve(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    let listener = metadata_manager::server::bind(&cfg).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    ibp_service::signals::spawn_cancel_on_signals(shutdown.clone())
        .context("install the SIGTERM/SIGINT handlers")?;
    let reload = Box::new(move || Config::load(&path));
    metadata_manager::server::run(listener, cfg, shutdown, Some(reload)).await
}

fn main() -> ExitCode {
    // Large puts parse and encode exNodes of megabytes on several threads;
    // with glibc's default of up to 8 malloc arenas per core, memory freed
    // in one thread's arena is not reused by the next request on another,
    // and the process keeps about twice the memory that
    // `max_buffered_bodies` allows for (measured: peak 267 MiB with the
    // default arenas, 159 MiB with two, for 24 puts of 8 MB).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes glibc's allocator, before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    ibp_service::logging::init_daemon_with("info", cli.log);
    let result = match cli.command {
        Cmd::Serve { config } => Config::load(&config).and_then(|cfg| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(serve(cfg, config)))
        }),
        Cmd::Backup { config, to } => Config::load(&config).and_then(|cfg| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let n = rt.block_on(metadata_manager::backup::backup(cfg.database_url(), &to))?;
            println!("backed up {n} bytes to {}", to.display());
            Ok(())
        }),
        Cmd::Init { dir, force } => metadata_manager::init::init(&dir, force).map(|out| {
            println!(
                "signing key: {}",
                dir.join(metadata_manager::init::KEY_FILE).display()
            );
            print!(
                "public key ({}): {}",
                metadata_manager::init::PUBLIC_FILE,
                out.public_key
            );
            if out.wrote_config {
                println!(
                    "sample configuration: {}",
                    dir.join(metadata_manager::init::CONFIG_FILE).display()
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadata-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}
