//! The online CA: federated login (RADIUS, OIDC, local users) to
//! short-lived certificates with signed VO attributes, attributes for
//! existing certificates over mutual TLS, and VO membership administration.
//!
//! See `docs/online-ca.md`.

mod admin;
mod api;
mod ca;
mod config;
mod init;
mod local;
mod md5;
mod oidc;
mod radius_auth;
mod ratelimit;
mod server;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "online-ca", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Creates the CA directory: CA and AA keys and certificates (keys mode
    /// 0600), server certificate, trust directory, users file, database and
    /// a sample config.toml. Existing keys are kept.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Organization of the CA (O= of its certificates).
        #[arg(long)]
        org: String,
        /// A VO this CA serves (repeatable): one attribute authority each.
        #[arg(long = "vo", required = true)]
        vos: Vec<String>,
        /// Name or address clients use to reach the server (repeatable).
        #[arg(long = "hostname", required = true)]
        hostnames: Vec<String>,
        /// `listen` of the sample configuration.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Validity of the CA and AA certificates, days.
        #[arg(long, default_value_t = 3650)]
        ca_days: i64,
        /// Validity of the server certificate, days.
        #[arg(long, default_value_t = 825)]
        server_days: i64,
    },
    /// Serves the HTTPS API.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Administration on the database and files of a configuration.
    Admin {
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("online-ca: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("online-ca: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Init {
            dir,
            org,
            vos,
            hostnames,
            listen,
            ca_days,
            server_days,
        } => {
            let lines = init::run(&init::InitOptions {
                dir: &dir,
                org: &org,
                vos: &vos,
                hostnames: &hostnames,
                ca_days,
                server_days,
                listen: &listen,
            })
            .await?;
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Serve { config } => {
            let cfg = config::Config::load(&config)?;
            server::serve(cfg).await
        }
        Cmd::Admin { config, cmd } => admin::run(&config, cmd).await,
    }
}
