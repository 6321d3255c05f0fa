//! `lors mount GRIDPATH MOUNTPOINT`: a metadata-manager directory as a
//! file system (FUSE) until unmounted: Ctrl-C, SIGTERM, `fusermount3 -u
//! MOUNTPOINT` or `umount MOUNTPOINT` (see `docs/mount.md` and
//! [`lors::mount`]).

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ibp_service::units::parse_size;
use lors::client::Client;
use lors::config::Config;
use lors::credentials::Error;
use lors::exit;
use lors::files::ReaderOptions;
use lors::mount::{self, MountOptions};

use crate::cli_files::print_json;
use crate::cli_transfer::GridArgs;

#[derive(Args)]
pub struct MountArgs {
    /// The metadata-manager directory to show, e.g. /vo1/alice
    gridpath: String,
    /// An existing local directory to mount it on
    mountpoint: PathBuf,
    /// Where files open for writing are staged (owner-only files, unlinked
    /// at once; default: the system's temporary directory)
    #[arg(long, value_name = "DIR")]
    staging_dir: Option<PathBuf>,
    /// Bytes all files open for writing may stage together (a write past
    /// it fails with ENOSPC)
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = parse_size)]
    staging_max: u64,
    /// Decrypted data each open file keeps cached
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    cache: u64,
    /// Blocks each open file reads ahead of a sequential reader
    #[arg(long, value_name = "N", default_value_t = 4)]
    read_ahead: usize,
    /// Threads serving the kernel's requests
    #[arg(long, value_name = "N", default_value_t = 4)]
    threads: usize,
    /// Seconds the kernel keeps names and attributes (longer: faster;
    /// shorter: other hosts' changes seen sooner)
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    attr_ttl: u64,
    /// Nice value (0-19) of the threads uploading what is written: above
    /// 0, a program writing to the mount is not slowed by the uploads
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    upload_nice: i32,
    #[command(flatten)]
    grid: GridArgs,
}

/// Runs in the foreground until unmounted; exit 0 after a clean unmount
/// (the summary on standard output with --json).
pub fn mount(a: MountArgs) -> Result<u8, Error> {
    let cfg = Config::load()?;
    let overrides = a.grid.overrides(&cfg);
    let client = Arc::new(Client::new(cfg, overrides)?);
    let grid = client.grid()?;
    let rt = crate::runtime_mt()?;
    let mdm = grid.mdm.as_ref().ok_or_else(|| {
        Error::Usage("no metadata manager: give --mdm or $LORS_METADATA_URL".into())
    })?;
    let root = rt.block_on(mdm.stat(&a.gridpath))?;
    if root.kind != lors::metadata::EntryKind::Dir {
        return Err(Error::Usage(format!("{}: not a directory", a.gridpath)));
    }
    if !a.mountpoint.is_dir() {
        return Err(Error::Usage(format!(
            "{}: not a directory (a mount point must exist; after a crash, `fusermount3 -u {}` first)",
            a.mountpoint.display(),
            a.mountpoint.display()
        )));
    }
    if let Some(d) = &a.staging_dir {
        // Owner-only when made here; an existing directory is taken as it is
        // (the staged files in it are owner-only and unlinked at once).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(|e| Error::Local(format!("cannot make {}: {e}", d.display())))?;
    }
    let opts = MountOptions {
        staging_dir: a.staging_dir.clone(),
        staging_max_bytes: a.staging_max,
        reader: ReaderOptions {
            cache_bytes: a.cache,
            read_ahead: a.read_ahead,
        },
        threads: a.threads,
        attr_ttl: Duration::from_secs(a.attr_ttl),
        upload_nice: a.upload_nice,
    };
    opts.reader.check()?;
    let mounted = mount::mount(
        client,
        &a.gridpath,
        &a.mountpoint,
        opts,
        rt.handle().clone(),
    )?;
    if !a.grid.quiet && !a.grid.json {
        eprintln!(
            "lors: {} mounted at {} (unmount: Ctrl-C, or fusermount3 -u {})",
            a.gridpath,
            a.mountpoint.display(),
            a.mountpoint.display()
        );
    }
    let stats = mounted.stats();
    let unmounter = mounted.unmounter();
    rt.spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            tracing::error!("lors mount: cannot catch SIGTERM/SIGINT; unmount with fusermount3 -u");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("lors mount: signal received, unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::error!("lors mount: unmount failed: {e}");
        }
    });
    let ended = mounted.wait();
    let summary = stats.summary(&a.gridpath, &a.mountpoint);
    if a.grid.json {
        print_json(&summary)?;
    } else if !a.grid.quiet {
        eprintln!(
            "lors: {} unmounted: {} version(s) stored, {} failed ({} conflict(s)), {} bytes read, {} bytes written",
            a.mountpoint.display(),
            summary.versions_committed,
            summary.commits_failed,
            summary.conflicts,
            summary.bytes_read,
            summary.bytes_written
        );
    }
    ended.map_err(|e| Error::Local(format!("the FUSE session failed: {e}")))?;
    Ok(exit::OK)
}
