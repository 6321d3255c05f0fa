//! The `lors` data commands: `upload`, `download`, `augment`, `trim`,
//! `refresh`, `repair` and `stat --mappings/--check`. Argument parsing,
//! progress and output only; the work is [`lors::files`]. Every option
//! falls back on the environment and `~/.config/lors/config.toml`
//! ([`lors::config`]), then on the defaults below. See docs/lors.md.
//!
//! One module per command group: `upload`, `download`, `maintain`
//! (`augment`, `trim`, `refresh`, `repair`) and `stat`; this one holds
//! the options they share.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use exnode::Security;
use lors::config::Config;
use lors::credentials::Error;
use lors::depots::{self, Near};
use lors::files::{Grid, Placement, Source};
use lors::transfer::Progress;
use serde::Serialize;

mod download;
mod maintain;
mod stat;
mod upload;

pub use download::{download, DownloadArgs};
pub use maintain::{
    augment, refresh, repair, trim, AugmentArgs, RefreshArgs, RepairArgs, TrimArgs,
};
pub use stat::{check, stat, CheckArgs, StatArgs};
pub use upload::{upload, UploadArgs};

pub use lors::client::{DEFAULT_BLOCK_SIZE, DEFAULT_DURATION, DEFAULT_THREADS};

/// Services and credentials: every data command takes these.
#[derive(Args, Clone, Default)]
pub struct GridArgs {
    /// The L-Bone, e.g. https://lbone.example.org:6767 (default: $LORS_LBONE_URL, config `lbone`)
    #[arg(long, value_name = "URL")]
    lbone: Option<String>,
    /// The metadata manager (default: $LORS_METADATA_URL, config `metadata`)
    #[arg(long, value_name = "URL")]
    mdm: Option<String>,
    /// Trust directory authenticating the servers (default: $LORS_TRUST_DIR, config `trust_dir`)
    #[arg(long, value_name = "DIR")]
    trust: Option<PathBuf>,
    /// The proxy credential (default: $X509_USER_PROXY, config `proxy`, /tmp/x509up_u<uid>)
    #[arg(long, value_name = "FILE")]
    proxy: Option<PathBuf>,
    /// Your key-wrapping private key (default: $LORS_KEY_FILE, config `key_file`, ~/.config/lors/key.pem)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seconds allowed for each depot operation
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Print the result as JSON (no progress bar)
    #[arg(long)]
    pub(crate) json: bool,
    /// Print nothing on success: no summary, no progress bar (errors and
    /// warnings still go to stderr; --json still prints its JSON; `stat`
    /// prints what was asked for)
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

impl GridArgs {
    /// The services this command can use (each only if configured).
    /// A proxy that is there must not have expired (refused here, before
    /// any request); none at all is fine until something needs one
    /// (plain IBP depots and exNode files do not).
    /// These options over the configuration, for a long-lived
    /// [`lors::client::Client`] (`lors mount`).
    pub(crate) fn overrides(&self, cfg: &Config) -> lors::client::Overrides {
        let proxy = self.proxy.clone().unwrap_or_else(|| cfg.proxy_path());
        let _ = PROXY_PATH.set(proxy.clone());
        lors::client::Overrides {
            lbone: self.lbone.clone(),
            mdm: self.mdm.clone(),
            trust: self.trust.clone(),
            proxy: Some(proxy),
            key: self.key.clone(),
            timeout: Some(Duration::from_secs(self.timeout.max(1))),
        }
    }

    pub(crate) fn grid(&self, cfg: &Config) -> Result<Grid, Error> {
        let proxy = self.proxy.clone().unwrap_or_else(|| cfg.proxy_path());
        let _ = PROXY_PATH.set(proxy.clone());
        let grid = lors::client::grid_for(
            cfg,
            &lors::client::Overrides {
                lbone: self.lbone.clone(),
                mdm: self.mdm.clone(),
                trust: self.trust.clone(),
                proxy: Some(proxy.clone()),
                key: self.key.clone(),
                timeout: Some(Duration::from_secs(self.timeout.max(1))),
            },
        )?;
        if let Some(c) = &grid.credential {
            lors::credentials::refuse_expired(c, &proxy, ibp_auth::unix_now())?;
        }
        Ok(grid)
    }
}

/// The proxy file the data command looked for. The library names the
/// default one (`$X509_USER_PROXY`, else `/tmp/x509up_u<uid>`) when an
/// operation finds none; [`name_proxy`] puts this one in its place.
static PROXY_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// `e`, with [`Error::NoProxy`] naming the file this command looked for
/// (`--proxy`, or `proxy` in the config file).
pub fn name_proxy(e: Error) -> Error {
    match (e, PROXY_PATH.get()) {
        (Error::NoProxy(_), Some(p)) => Error::NoProxy(p.clone()),
        (e, _) => e,
    }
}

/// Where new allocations go.
#[derive(Args, Clone, Default)]
pub struct PlaceArgs {
    /// Use these depots (HOST:PORT, repeatable; legacy ports for
    /// --security legacy, else matched against the L-Bone's depots)
    #[arg(long = "depot", value_name = "HOST:PORT")]
    depots: Vec<String>,
    /// Where you are (LAT,LON or a place at the L-Bone): nearest depots first
    #[arg(long, value_name = "LAT,LON|PLACE", value_parser = Near::parse, allow_hyphen_values = true)]
    near: Option<Near>,
    /// Allocation lifetime, e.g. 3600, 90m, 7d [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = depots::parse_duration)]
    duration: Option<u64>,
    /// hard (kept until expiry) or soft (may be reclaimed) [default: hard]
    #[arg(long, value_enum)]
    reliability: Option<depots::Reliability>,
}

impl PlaceArgs {
    fn placement(&self, cfg: &Config) -> Placement {
        Placement {
            depots: self.depots.clone(),
            near: self.near.clone().or_else(|| cfg.location.clone()),
            duration: self.duration.or(cfg.duration).unwrap_or(DEFAULT_DURATION),
            reliability: self.reliability.or(cfg.reliability).unwrap_or_default(),
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Level {
    /// Plain IBP: bearer capabilities, no authentication
    Legacy,
    /// Authenticated TLS control connection, sealed request lines on a
    /// plain data connection, bulk data (already encrypted) in clear
    Crypto,
    /// Everything inside TLS 1.3
    Full,
}

impl From<Level> for Security {
    fn from(l: Level) -> Security {
        match l {
            Level::Legacy => Security::Legacy,
            Level::Crypto => Security::Crypto,
            Level::Full => Security::Full,
        }
    }
}

/// A file to maintain: a path, or `--xnd FILE`.
#[derive(Args)]
pub struct SourceArgs {
    /// The file in the metadata manager (/VO/dir/name)
    #[arg(required_unless_present = "xnd")]
    path: Option<String>,
    /// An exNode file instead (rewritten in place)
    #[arg(long, value_name = "FILE", conflicts_with = "path")]
    xnd: Option<PathBuf>,
}

impl SourceArgs {
    fn source(&self) -> Result<Source, Error> {
        match (&self.path, &self.xnd) {
            (Some(p), None) => Ok(Source::Path {
                path: p.clone(),
                version: None,
            }),
            (None, Some(f)) => Ok(Source::Xnd(f.clone())),
            _ => Err(Error::Usage("give a path or --xnd FILE".into())),
        }
    }
}

fn config() -> Result<Config, Error> {
    Config::load()
}

/// A progress bar on a terminal (stderr), else nothing.
fn progress_bar(
    total: Option<u64>,
    quiet: bool,
    json: bool,
    what: &str,
) -> Option<(indicatif::ProgressBar, Progress)> {
    if quiet || json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => {
            let b = indicatif::ProgressBar::new(n);
            b.set_style(bar_style());
            b
        }
        None => {
            // Until the total is known (bar_total): bytes and rate only.
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b
        }
    };
    bar.set_message(what.to_owned());
    let b = bar.clone();
    let f: Progress = Arc::new(move |n| b.inc(n));
    Some((bar, f))
}

/// The bar with a total: position, total, rate and ETA.
fn bar_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Gives a spinner its total once known: it becomes a bar with an ETA.
fn bar_total(bar: &indicatif::ProgressBar, total: u64) {
    bar.set_length(total);
    bar.set_style(bar_style());
    bar.reset_eta();
}

/// SIGINT or SIGTERM during a transfer: the first one is recorded in
/// `signal` (for the exit status), `first` is said and `cancel` cancelled
/// (the transfer stops and releases what it allocated); a second one says
/// `again` and exits at once (128 + the signal). Messages go above the
/// progress bar if there is one.
///
/// Only these two signals are caught; SIGPIPE stays as it is (ignored,
/// see `quiet_on_closed_stdout` in main.rs).
pub(crate) fn watch_signals(
    cancel: tokio_util::sync::CancellationToken,
    signal: Arc<std::sync::atomic::AtomicI32>,
    bar: Option<indicatif::ProgressBar>,
    first: &'static str,
    again: &'static str,
) -> Result<(), Error> {
    use std::sync::atomic::Ordering;
    use tokio::signal::unix::{signal as listen, SignalKind};
    let listen_err = |e: std::io::Error| Error::Local(format!("cannot catch signals: {e}"));
    let mut int = listen(SignalKind::interrupt()).map_err(listen_err)?;
    let mut term = listen(SignalKind::terminate()).map_err(listen_err)?;
    let say = move |msg: &str| match &bar {
        Some(b) => b.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    };
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = int.recv() => libc::SIGINT,
                Some(()) = term.recv() => libc::SIGTERM,
                else => return,
            };
            if signal
                .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                say(first);
                cancel.cancel();
            } else {
                say(again);
                std::process::exit(128 + sig);
            }
        }
    });
    Ok(())
}

fn print_json<T: Serialize>(v: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Local(format!("cannot format the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

fn human_size(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
