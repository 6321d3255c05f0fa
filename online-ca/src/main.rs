//! `online-ca`: the command line of the online CA (`init`, `serve`,
//! `admin`) over the `online_ca` library. See `docs/online-ca.md`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use online_ca::{admin, config, init, server};

#[derive(Debug, Parser)]
#[command(name = "online-ca", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: ibp_service::logging::LogArgs,
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
    /// What a service host runs: its trust directory, its certificate
    /// (enrolled with a token), renewal (exit 0 renewed, 1 CA unavailable,
    /// 2 usage or local files, 3 not due, 4 refused: see docs/online-ca.md).
    HostCert {
        #[command(subcommand)]
        cmd: online_ca::host_cert::HostCertCmd,
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
    let cli = Cli::parse();
    ibp_service::logging::init_daemon_with("info", cli.log);
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
    if let Cmd::HostCert { cmd } = cli.cmd {
        return match rt.block_on(online_ca::host_cert::run(cmd)) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("online-ca host-cert: {e}");
                ExitCode::from(e.code())
            }
        };
    }
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
            let listener = server::bind(&cfg).await?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            ibp_service::signals::spawn_cancel_on_signals(shutdown.clone())
                .context("install the SIGTERM/SIGINT handlers")?;
            let reload: server::Reload = Box::new(move || config::Config::load(&config));
            server::run(listener, cfg, shutdown, Some(reload)).await
        }
        Cmd::Admin { config, cmd } => admin::run(&config, cmd).await,
        Cmd::HostCert { .. } => Ok(()),
    }
}
