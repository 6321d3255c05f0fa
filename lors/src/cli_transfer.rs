//! The `lors` data commands: `upload`, `download`, `augment`, `trim`,
//! `refresh`, `repair` and `stat --mappings/--check`. Argument parsing,
//! progress and output only; the work is [`lors::files`]. Every option
//! falls back on the environment and `~/.config/lors/config.toml`
//! ([`lors::config`]), then on the defaults below. See docs/lors.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use exnode::Security;
use lors::config::Config;
use lors::credentials::{Error, TrustSource};
use lors::depots::{self, Near};
use lors::exit;
use lors::files::{self, Dest, Grid, Placement, Source, UploadSettings};
use lors::transfer::maintain::TrimSelect;
use lors::transfer::{Progress, Redundancy, Sink};
use lors::MetadataClient;
use serde::Serialize;

/// Default block size: see docs/lors.md "Choosing the block size" (the
/// `lors_ops` benchmark).
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// Default blocks in flight.
pub const DEFAULT_THREADS: usize = 4;
/// Default allocation lifetime: 7 days.
pub const DEFAULT_DURATION: u64 = 7 * 24 * 3600;

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
    json: bool,
    /// No progress bar even on a terminal
    #[arg(long)]
    quiet: bool,
}

impl GridArgs {
    /// The services this command can use (each only if configured).
    fn grid(&self, cfg: &Config) -> Result<Grid, Error> {
        let trust = match self.trust.clone().or_else(|| cfg.trust_dir.clone()) {
            Some(d) => Some(TrustSource::Dir(d).load()?),
            None => None,
        };
        let proxy = self.proxy.clone().unwrap_or_else(|| cfg.proxy_path());
        let credential = if proxy.exists() {
            Some(lors::credentials::load_proxy(&proxy)?)
        } else {
            None
        };
        let mdm = match (
            self.mdm.clone().or_else(|| cfg.metadata.clone()),
            &trust,
            &credential,
        ) {
            (Some(url), Some(t), Some(c)) => Some(MetadataClient::connect(&url, t, c)?),
            _ => None,
        };
        let key_path = self
            .key
            .clone()
            .or_else(|| cfg.key_file.clone())
            .unwrap_or_else(lors::keys::default_key_path);
        Ok(Grid {
            trust,
            credential,
            lbone: self.lbone.clone().or_else(|| cfg.lbone.clone()),
            mdm,
            key: files::load_key_if_present(&key_path)?,
            escrow: None,
            cache: Default::default(),
            timeout: Some(Duration::from_secs(self.timeout.max(1))),
        })
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

#[derive(Args)]
pub struct UploadArgs {
    /// The file to upload, or - for standard input
    src: PathBuf,
    /// Destination in the metadata manager: /VO/dir/name
    #[arg(required_unless_present = "xnd")]
    dest: Option<String>,
    /// Write the exNode to this file instead of the metadata manager
    #[arg(long, value_name = "FILE", conflicts_with = "dest")]
    xnd: Option<PathBuf>,
    /// Block size, e.g. 8MiB [default: 8MiB]
    #[arg(long, value_name = "SIZE", value_parser = depots::parse_size)]
    block_size: Option<u64>,
    /// Replicas of each block on distinct depots [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "ec")]
    copies: Option<u16>,
    /// Erasure coding: K data + M parity shares per block on distinct depots
    #[arg(long, value_name = "K+M", value_parser = lors::transfer::parse_ec)]
    ec: Option<Redundancy>,
    /// Depot security level [default: full with a proxy, else legacy]
    #[arg(long, value_enum)]
    security: Option<Level>,
    /// Store the data in clear (exNodes the LoRS 0.82 tools can read)
    #[arg(long)]
    no_encrypt: bool,
    /// Journal the upload so that, if it fails or is interrupted, the same
    /// command with --resume continues after the blocks already stored
    /// (kept until then; without --resume a failed upload releases them)
    #[arg(long)]
    resume: bool,
    /// Blocks in flight at once [default: 4]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    place: PlaceArgs,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct DownloadArgs {
    /// SRC DEST: SRC the file in the metadata manager (/VO/dir/name), DEST
    /// a file or - for standard output; with --xnd only DEST
    #[arg(value_name = "SRC DEST", num_args = 1..=2, required = true)]
    paths: Vec<String>,
    /// Read this exNode file (ours or LoRS 0.82) instead of the metadata manager
    #[arg(long, value_name = "FILE")]
    xnd: Option<PathBuf>,
    /// An older version
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Ranges in flight at once [default: 4]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// VO admins: decrypt with the VO's escrow private key (recovery of a
    /// member's file) instead of your own key
    #[arg(long, value_name = "FILE")]
    escrow_key: Option<PathBuf>,
    /// Continue an interrupted download into DEST: ranges already in
    /// `.DEST.lors-part` (per its journal, if of the same version) are
    /// not fetched again
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    grid: GridArgs,
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

#[derive(Args)]
pub struct AugmentArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Replicas wanted of every range (or of every share)
    #[arg(long, value_name = "N")]
    copies: u16,
    #[command(flatten)]
    place: PlaceArgs,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct TrimArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Drop every mapping on this depot (HOST:PORT as `stat --mappings` shows; repeatable)
    #[arg(
        long = "depot",
        value_name = "HOST:PORT",
        required_unless_present = "mappings"
    )]
    depots: Vec<String>,
    /// Drop these mappings (numbers as `stat --mappings` shows; repeatable)
    #[arg(long = "mapping", value_name = "N", conflicts_with = "depots")]
    mappings: Vec<usize>,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// New lifetime from now, e.g. 7d [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = depots::parse_duration)]
    duration: Option<u64>,
    /// PATH is a directory: refresh every file under it
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct RepairArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Mappings probed at once [default: 4]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    place: PlaceArgs,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct StatArgs {
    /// The file or directory in the metadata manager
    #[arg(required_unless_present = "xnd")]
    path: Option<String>,
    /// An exNode file instead
    #[arg(long, value_name = "FILE", conflicts_with = "path")]
    xnd: Option<PathBuf>,
    /// Physical view: every mapping with its depot, range, share and expiry
    #[arg(long)]
    mappings: bool,
    /// Read every mapping back and verify it (liveness and integrity)
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    grid: GridArgs,
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
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    let b = bar.clone();
    let f: Progress = Arc::new(move |n| b.inc(n));
    Some((bar, f))
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

pub fn upload(a: UploadArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let security: Security =
        a.security
            .map(Security::from)
            .or(cfg.security)
            .unwrap_or(if grid.credential.is_some() {
                Security::Full
            } else {
                Security::Legacy
            });
    let redundancy = match (a.copies, a.ec) {
        (Some(n), _) => Redundancy::Copies(n),
        (None, Some(r)) => r,
        (None, None) => match (cfg.ec, cfg.copies) {
            (Some(e), _) => Redundancy::Ec { k: e.k, m: e.m },
            (None, Some(n)) => Redundancy::Copies(u16::try_from(n).unwrap_or(u16::MAX)),
            (None, None) => Redundancy::Copies(1),
        },
    };
    // Encryption unless asked not to; a legacy upload without a key pair
    // is stored in clear, and says so.
    let mut encrypt = !a.no_encrypt;
    if encrypt && grid.key.is_none() && security == Security::Legacy {
        eprintln!(
            "lors: warning: no key pair (lors keys init): the data is stored in clear on the depots"
        );
        encrypt = false;
    }
    let dest = match (&a.dest, &a.xnd) {
        (Some(p), None) => Dest::Path(p.clone()),
        (None, Some(f)) => Dest::Xnd(f.clone()),
        _ => return Err(Error::Usage("give a destination path or --xnd FILE".into())),
    };
    let stdin = a.src.as_os_str() == "-";
    let size_hint = if stdin {
        None
    } else {
        Some(
            std::fs::metadata(&a.src)
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", a.src.display())))?
                .len(),
        )
    };
    let filename = if stdin {
        None
    } else {
        a.src.file_name().map(|n| n.to_string_lossy().into_owned())
    };
    let s = UploadSettings {
        block_size: a
            .block_size
            .or(cfg.block_size)
            .unwrap_or(DEFAULT_BLOCK_SIZE),
        redundancy,
        threads: a
            .threads
            .or(cfg.threads.map(|t| t as usize))
            .unwrap_or(DEFAULT_THREADS)
            .max(1),
        security,
        encrypt,
        placement: a.place.placement(&cfg),
        filename,
    };
    let journal = if a.resume {
        if stdin {
            return Err(Error::Usage(
                "--resume needs a file to upload, not standard input".into(),
            ));
        }
        Some(upload_journal_path(&a.src, &dest)?)
    } else {
        None
    };
    let bar = progress_bar(size_hint, a.grid.quiet, a.grid.json, "upload");
    let rt = crate::runtime_mt()?;
    let summary = rt.block_on(async {
        let progress = bar.as_ref().map(|(_, p)| p.clone());
        if stdin {
            files::upload(&grid, tokio::io::stdin(), None, &dest, &s, progress).await
        } else {
            let f = tokio::fs::File::open(&a.src)
                .await
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", a.src.display())))?;
            files::upload_with(&grid, f, size_hint, &dest, &s, progress, journal.as_deref()).await
        }
    });
    if let Some((b, _)) = &bar {
        b.finish_and_clear();
    }
    if let (Err(_), Some(j)) = (&summary, &journal) {
        if j.exists() {
            eprintln!(
                "lors: the blocks stored so far are kept (journal {}): run the same command with --resume to continue",
                j.display()
            );
        }
    }
    let summary = summary?;
    if a.grid.json {
        print_json(&summary)?;
    } else {
        println!(
            "uploaded {} to {}{} in {:.2} s ({:.1} MiB/s): {}, {} security, {}, {} mappings, {} stored",
            human_size(summary.size),
            summary.dest,
            if summary.version > 0 {
                format!(" (version {})", summary.version)
            } else {
                String::new()
            },
            summary.seconds,
            summary.mib_per_s,
            summary.redundancy,
            summary.security,
            if summary.encrypted { "encrypted" } else { "not encrypted" },
            summary.mappings,
            human_size(summary.stored),
        );
    }
    Ok(exit::OK)
}

/// Where `lors upload --resume` keeps the journal of uploading `src` to
/// `dest`: `$XDG_STATE_HOME/lors/uploads/` (else `~/.local/state/...`),
/// named after both.
fn upload_journal_path(src: &std::path::Path, dest: &Dest) -> Result<PathBuf, Error> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            Error::Usage("--resume: no $HOME or $XDG_STATE_HOME for the journal".into())
        })?;
    let abs = std::fs::canonicalize(src)
        .map_err(|e| Error::Local(format!("cannot read {}: {e}", src.display())))?;
    let dest = match dest {
        Dest::Path(p) => format!("mdm:{p}"),
        Dest::Xnd(f) => format!("xnd:{}", f.display()),
    };
    let mut h = blake3::Hasher::new();
    h.update(abs.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(dest.as_bytes());
    let name = h.finalize().to_hex()[..24].to_string();
    Ok(state.join("lors/uploads").join(format!("{name}.journal")))
}

pub fn download(a: DownloadArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let mut grid = a.grid.grid(&cfg)?;
    if let Some(f) = &a.escrow_key {
        grid.escrow = Some(Arc::new(lors::keys::load(f)?));
    }
    let (src, dest) = match (&a.paths[..], &a.xnd) {
        ([p, d], None) => (
            Source::Path {
                path: p.clone(),
                version: a.version,
            },
            PathBuf::from(d),
        ),
        ([d], Some(f)) => (Source::Xnd(f.clone()), PathBuf::from(d)),
        (_, Some(_)) => {
            return Err(Error::Usage(
                "with --xnd FILE give only the destination (a file or -)".into(),
            ))
        }
        _ => {
            return Err(Error::Usage(
                "give the source path and the destination (a file or -), or --xnd FILE and the destination".into(),
            ))
        }
    };
    let threads = a
        .threads
        .or(cfg.threads.map(|t| t as usize))
        .unwrap_or(DEFAULT_THREADS)
        .max(1);
    let to_stdout = dest.as_os_str() == "-";
    // A file is written under a temporary name and renamed when complete,
    // so a failed download never leaves a partial file under DEST.
    let part = if to_stdout {
        None
    } else {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", dest.display())))?;
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(".lors-part");
        Some(dest.with_file_name(n))
    };
    if a.resume && to_stdout {
        return Err(Error::Usage("--resume needs an output file, not -".into()));
    }
    let journal = part.as_ref().map(|p| {
        let mut j = p.as_os_str().to_owned();
        j.push(".journal");
        PathBuf::from(j)
    });
    let sink = match &part {
        None => Sink::Stream(Box::new(tokio::io::stdout())),
        Some(p) => Sink::File(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(!a.resume)
                .open(p)
                .map_err(|e| Error::Local(format!("cannot write {}: {e}", p.display())))?,
        ),
    };
    let resume = journal.clone().map(|journal| files::Resume {
        journal,
        resume: a.resume,
    });
    let bar = progress_bar(None, a.grid.quiet || to_stdout, a.grid.json, "download");
    let rt = crate::runtime_mt()?;
    let r = rt.block_on(files::download_with(
        &grid,
        &src,
        sink,
        threads,
        bar.as_ref().map(|(_, p)| p.clone()),
        resume.as_ref(),
    ));
    if let Some((b, _)) = &bar {
        b.finish_and_clear();
    }
    let summary = match r {
        Ok(s) => s,
        Err(e) => {
            // What was fetched stays for `--resume` (not under DEST);
            // nothing fetched (say, the metadata manager is down) leaves
            // nothing behind.
            let fetched = journal
                .as_ref()
                .is_some_and(|j| std::fs::read_to_string(j).is_ok_and(|t| t.lines().count() > 1));
            if !fetched {
                for f in part.iter().chain(journal.iter()) {
                    let _ = std::fs::remove_file(f);
                }
            } else if let Some(p) = &part {
                eprintln!(
                    "lors: the part downloaded is kept in {}: run the same command with --resume to continue",
                    p.display()
                );
            }
            return Err(e);
        }
    };
    if let Some(j) = &journal {
        let _ = std::fs::remove_file(j);
    }
    if let Some(p) = &part {
        std::fs::rename(p, &dest)
            .map_err(|e| Error::Local(format!("cannot write {}: {e}", dest.display())))?;
    }
    if a.grid.json && !to_stdout {
        print_json(&summary)?;
    } else {
        let line = format!(
            "downloaded {} from {} in {:.2} s ({:.1} MiB/s){}{}{}",
            human_size(summary.size),
            summary.source,
            summary.seconds,
            summary.mib_per_s,
            if summary.report.failovers > 0 {
                format!(", {} failovers", summary.report.failovers)
            } else {
                String::new()
            },
            if summary.report.rebuilt > 0 {
                format!(", {} blocks rebuilt from parity", summary.report.rebuilt)
            } else {
                String::new()
            },
            if summary.report.resumed > 0 {
                format!(
                    ", {} blocks already there (resumed)",
                    summary.report.resumed
                )
            } else {
                String::new()
            },
        );
        if to_stdout {
            if !a.grid.quiet {
                eprintln!("{line}");
            }
        } else {
            println!("{line}");
        }
        for c in &summary.report.corrupt {
            eprintln!("lors: warning: corrupt copy skipped: {c} (run lors repair)");
        }
    }
    Ok(exit::OK)
}

fn report(m: &files::Maintained, json: bool, what: &str) -> Result<u8, Error> {
    if json {
        print_json(m)?;
    } else {
        println!(
            "{what} {}: {} mapping(s) before, {} after{}{}",
            m.source,
            m.mappings_before,
            m.mappings_after,
            if m.added > 0 {
                format!(", {} added", m.added)
            } else {
                String::new()
            },
            if m.version > 0 {
                format!(", version {} registered", m.version)
            } else {
                String::new()
            }
        );
        if let Some(r) = &m.repair {
            println!(
                "checked {} mapping(s): {} bad, {} recreated",
                r.checked,
                r.bad.len(),
                r.recreated
            );
            for b in &r.bad {
                println!(
                    "  bad: {} bytes {}.. on {}: {:?}",
                    b.mapping, b.offset, b.depot, b.state
                );
            }
            for u in &r.unrecoverable {
                println!("  unrecoverable: {u}");
            }
        }
        // Refresh outcomes are MANAGE CHNG; the others free allocations.
        let failed = if what == "refreshed" {
            "not refreshed"
        } else {
            "not freed"
        };
        for o in m.outcomes.iter().filter(|o| !o.ok) {
            println!(
                "  {failed}: {} (range at {}): {}",
                o.depot,
                o.offset,
                o.error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(if m.complete() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

pub fn augment(a: AugmentArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let src = a.src.source()?;
    let m = crate::runtime_mt()?.block_on(files::augment(
        &grid,
        &src,
        a.copies.max(1) as usize,
        &a.place.placement(&cfg),
    ))?;
    report(&m, a.grid.json, "augmented")
}

pub fn trim(a: TrimArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let src = a.src.source()?;
    let select = if a.mappings.is_empty() {
        TrimSelect::Depots(a.depots.clone())
    } else {
        TrimSelect::Mappings(a.mappings.clone())
    };
    let m = crate::runtime_mt()?.block_on(files::trim(&grid, &src, &select))?;
    report(&m, a.grid.json, "trimmed")
}

pub fn refresh(a: RefreshArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let duration = a.duration.or(cfg.duration).unwrap_or(DEFAULT_DURATION);
    let rt = crate::runtime_mt()?;
    if a.all {
        let root = a
            .src
            .path
            .clone()
            .ok_or_else(|| Error::Usage("--all needs a directory path".into()))?;
        let mdm = grid
            .mdm
            .clone()
            .ok_or_else(|| Error::Usage("--all needs the metadata manager (--mdm)".into()))?;
        let files_under = rt.block_on(walk(&mdm, &root))?;
        let mut code = exit::OK;
        let mut all = Vec::new();
        for f in files_under {
            let src = Source::Path {
                path: f.clone(),
                version: None,
            };
            match rt.block_on(files::refresh(&grid, &src, duration)) {
                Ok(m) => {
                    if !m.complete() {
                        code = exit::PARTIAL;
                    }
                    all.push(m);
                }
                Err(e) => {
                    eprintln!("lors: {f}: {e}");
                    code = exit::PARTIAL;
                }
            }
        }
        if a.grid.json {
            print_json(&all)?;
        } else {
            for m in &all {
                report(m, false, "refreshed")?;
            }
        }
        return Ok(code);
    }
    let src = a.src.source()?;
    let m = rt.block_on(files::refresh(&grid, &src, duration))?;
    report(&m, a.grid.json, "refreshed")
}

/// Every file under a directory (depth first, bounded by the listing).
async fn walk(mdm: &MetadataClient, root: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut dirs = vec![root.trim_end_matches('/').to_owned()];
    while let Some(d) = dirs.pop() {
        for e in mdm.list(&d).await? {
            match e.kind {
                lors::metadata::EntryKind::Dir => dirs.push(e.path.clone()),
                _ => out.push(e.path.clone()),
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn repair(a: RepairArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let src = a.src.source()?;
    let threads = a.threads.unwrap_or(DEFAULT_THREADS).max(1);
    let m = crate::runtime_mt()?.block_on(files::repair(
        &grid,
        &src,
        &a.place.placement(&cfg),
        threads,
    ))?;
    report(&m, a.grid.json, "repaired")
}

/// `lors stat`: the metadata manager's view, or with `--mappings` /
/// `--check` / `--xnd` the exNode's physical view.
pub fn stat(a: StatArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let physical = a.mappings || a.check || a.xnd.is_some();
    if !physical {
        let path = a.path.clone().unwrap_or_default();
        let mdm = grid.mdm.as_ref().ok_or_else(|| {
            Error::Usage(
                "which metadata manager? give --mdm URL or set LORS_METADATA_URL (and a proxy and trust directory)".into(),
            )
        })?;
        let e = crate::runtime()?.block_on(mdm.stat(&path))?;
        if a.grid.json {
            print_json(&e)?;
        } else {
            print!("{}", crate::cli_files::format_stat(&e));
        }
        return Ok(exit::OK);
    }
    let src = match (&a.path, &a.xnd) {
        (Some(p), None) => Source::Path {
            path: p.clone(),
            version: None,
        },
        (None, Some(f)) => Source::Xnd(f.clone()),
        _ => return Err(Error::Usage("give a path or --xnd FILE".into())),
    };
    let rt = crate::runtime_mt()?;
    let (x, health) = if a.check {
        let (x, h) = rt.block_on(files::check(&grid, &src, DEFAULT_THREADS))?;
        (x, Some(h))
    } else {
        let o = rt.block_on(files::open(&grid, &src, false))?;
        (o.exnode, None)
    };
    if a.grid.json {
        #[derive(Serialize)]
        struct View<'a> {
            size: u64,
            stored: u64,
            file: Option<String>,
            version: u64,
            encrypted: bool,
            block_size: Option<u64>,
            mappings: Vec<MappingView<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            health: Option<&'a Vec<lors::transfer::maintain::Health>>,
        }
        #[derive(Serialize)]
        struct MappingView<'a> {
            offset: u64,
            length: u64,
            depot: &'a str,
            security: Option<&'static str>,
            share: Option<String>,
            expires: Option<i64>,
            stored: u64,
        }
        let v = View {
            size: x.size,
            stored: x.stored_bytes(),
            file: x.file.map(|u| u.to_string()),
            version: x.version,
            encrypted: x.encryption.is_some(),
            block_size: x.block_size,
            mappings: x
                .mappings
                .iter()
                .map(|m| MappingView {
                    offset: m.logical_offset,
                    length: m.logical_length,
                    depot: &m.depot,
                    security: m.security.map(|s| s.name()),
                    share: m.share.map(|s| format!("{}:{}", s.group, s.index)),
                    expires: m.expires,
                    stored: m.alloc_length,
                })
                .collect(),
            health: health.as_ref(),
        };
        print_json(&v)?;
    } else {
        println!(
            "size {} ({} bytes), stored {}, {} mapping(s), {}, block size {}",
            human_size(x.size),
            x.size,
            human_size(x.stored_bytes()),
            x.mappings.len(),
            if x.encryption.is_some() {
                "encrypted"
            } else {
                "not encrypted"
            },
            x.block_size.map_or("-".into(), human_size),
        );
        let now = ibp_auth::unix_now();
        println!("  #  offset        length      depot                  level   share  expires");
        for (i, m) in x.mappings.iter().enumerate() {
            let state = health
                .as_ref()
                .and_then(|h| h.iter().find(|h| h.mapping == i))
                .map(|h| match &h.state {
                    lors::transfer::maintain::State::Ok => "ok".to_string(),
                    lors::transfer::maintain::State::Corrupt => "CORRUPT".to_string(),
                    lors::transfer::maintain::State::Unreadable(e) => format!("UNREADABLE: {e}"),
                })
                .unwrap_or_default();
            println!(
                "{i:>3}  {:<12}  {:<10}  {:<21}  {:<6}  {:<5}  {}  {state}",
                m.logical_offset,
                m.logical_length,
                m.depot,
                m.security.map_or("legacy", |s| s.name()),
                m.share
                    .map_or("-".into(), |s| format!("{}:{}", s.group, s.index)),
                m.expires.map_or("-".into(), |e| {
                    if e <= now {
                        format!("EXPIRED {}", lors::validity::format_utc(e))
                    } else {
                        lors::validity::format_utc(e)
                    }
                }),
            );
        }
    }
    let bad = health.as_ref().is_some_and(|h| {
        h.iter()
            .any(|h| h.state != lors::transfer::maintain::State::Ok)
    });
    Ok(if bad { exit::PARTIAL } else { exit::OK })
}
