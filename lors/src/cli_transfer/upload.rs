//! `lors upload`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use clap::Args;
use exnode::Security;
use lors::config::Config;
use lors::credentials::Error;
use lors::depots;
use lors::exit;
use lors::files::{self, Dest, Grid, UploadControl, UploadSettings, UploadSummary};
use lors::transfer::Redundancy;

use super::{
    config, human_size, print_json, progress_bar, watch_signals, GridArgs, Level, PlaceArgs,
    DEFAULT_BLOCK_SIZE, DEFAULT_THREADS,
};

#[derive(Args)]
pub struct UploadArgs {
    /// SRC... DEST: the file to upload (- for standard input; with -r a
    /// directory), then its destination in the metadata manager,
    /// /VO/dir/name. Several files (or a DEST ending in /) go into the
    /// existing directory DEST, each as DEST/NAME. With --xnd: SRC only
    #[arg(value_name = "SRC... DEST", required = true)]
    paths: Vec<PathBuf>,
    /// Write the exNode to this file instead of the metadata manager
    #[arg(long, value_name = "FILE")]
    xnd: Option<PathBuf>,
    /// Several files: how many are uploaded at once
    #[arg(short, long, value_name = "N", default_value_t = lors::files::tree::DEFAULT_JOBS)]
    jobs: usize,
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
    /// Upload a directory tree: `lors cp -r SRC lors:DEST` (see `lors cp`)
    #[arg(short = 'r', long, conflicts_with_all = ["xnd", "resume"])]
    recursive: bool,
    #[command(flatten)]
    place: PlaceArgs,
    #[command(flatten)]
    grid: GridArgs,
}

/// The sources and the destination path of `lors upload SRC... [DEST]`
/// (no DEST with --xnd).
fn sources(a: &UploadArgs) -> Result<(Vec<PathBuf>, Option<String>), Error> {
    let mut paths = a.paths.clone();
    if a.xnd.is_some() {
        if paths.len() != 1 {
            return Err(Error::Usage(
                "--xnd FILE takes one source and no destination path".into(),
            ));
        }
        return Ok((paths, None));
    }
    if paths.len() < 2 {
        return Err(Error::Usage("give a destination path or --xnd FILE".into()));
    }
    let dest = paths.pop().unwrap_or_default();
    let dest = dest
        .to_str()
        .ok_or_else(|| Error::Usage(format!("{}: not UTF-8", dest.display())))?
        .to_owned();
    Ok((paths, Some(dest)))
}

pub fn upload(a: UploadArgs) -> Result<u8, Error> {
    let (srcs, dest_path) = sources(&a)?;
    let src = srcs[0].clone();
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let stdin = src.as_os_str() == "-";
    let s = settings(&a, &src, &cfg, &grid, stdin);
    let session = |grid, s| crate::cli_tree::Session {
        grid,
        settings: s,
        jobs: a.jobs,
        threads: DEFAULT_THREADS,
        json: a.grid.json,
        quiet: a.grid.quiet,
    };
    if a.recursive {
        let dest =
            dest_path.ok_or_else(|| Error::Usage("upload -r needs a destination path".into()))?;
        if srcs.len() > 1 {
            return Err(Error::Usage(
                "upload -r takes one directory; lors cp -r for each, or put them in one".into(),
            ));
        }
        return crate::cli_tree::upload_r(session(grid, s), src, dest);
    }
    if let Some(dir) = dest_path
        .as_ref()
        .filter(|d| srcs.len() > 1 || d.ends_with('/'))
    {
        if srcs.iter().any(|p| p.as_os_str() == "-") {
            return Err(Error::Usage(
                "- (standard input) is uploaded alone, to a file path".into(),
            ));
        }
        if a.resume {
            return Err(Error::Usage(
                "--resume takes one file; several are uploaded again with the same command".into(),
            ));
        }
        return crate::cli_tree::upload_files(session(grid, s), srcs, dir.clone());
    }
    let dest = match (dest_path, &a.xnd) {
        (Some(p), None) => Dest::Path(p),
        (None, Some(f)) => Dest::Xnd(f.clone()),
        _ => return Err(Error::Usage("give a destination path or --xnd FILE".into())),
    };
    let size_hint = if stdin {
        None
    } else {
        Some(
            std::fs::metadata(&src)
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", src.display())))?
                .len(),
        )
    };
    let journal = if a.resume {
        if stdin {
            return Err(Error::Usage(
                "--resume needs a file to upload, not standard input".into(),
            ));
        }
        Some(upload_journal_path(&src, &dest)?)
    } else {
        None
    };
    let bar = progress_bar(size_hint, a.grid.quiet, a.grid.json, "upload");
    let rt = crate::runtime_mt()?;
    let ctl = UploadControl::journaled(journal.as_deref());
    let signal = Arc::new(AtomicI32::new(0));
    let summary = rt.block_on(async {
        // Ctrl-C or SIGTERM stops the upload, which releases what it
        // allocated (with --resume, keeps the blocks stored).
        watch_signals(
            ctl.cancel.clone(),
            signal.clone(),
            bar.as_ref().map(|(b, _)| b.clone()),
            if journal.is_some() {
                "lors: interrupted: stopping the upload; the blocks stored so far are kept \
                 (interrupt again to exit at once)"
            } else {
                "lors: interrupted: stopping the upload and releasing the allocations it made \
                 (interrupt again to exit at once, leaving them for `lors cleanup`)"
            },
            "lors: interrupted again: exiting now; allocations of this upload may be left \
             on the depots: `lors cleanup` releases them",
        )?;
        let progress = bar.as_ref().map(|(_, p)| p.clone());
        if stdin {
            let src = tokio::io::stdin();
            files::upload_controlled(&grid, src, None, &dest, &s, progress, &ctl).await
        } else {
            let f = tokio::fs::File::open(&src)
                .await
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", src.display())))?;
            // Read with plain reads straight into the blocks (no copy).
            let f = lors::transfer::FileInput::new(f.into_std().await);
            files::upload_controlled(&grid, f, size_hint, &dest, &s, progress, &ctl).await
        }
    });
    // The signal watcher ends with the runtime (a signal from here on is
    // caught and ignored: only the report below is left to do).
    drop(rt);
    if let Some((b, _)) = &bar {
        b.finish_and_clear();
    }
    let sig = signal.load(Ordering::SeqCst);
    if let (Err(e), true) = (&summary, sig != 0) {
        return Ok(report_interrupted(e, &ctl, sig, journal.as_deref()));
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
    } else if !a.grid.quiet {
        print_summary(&summary);
    }
    Ok(exit::OK)
}

/// Says what an upload stopped by `sig` released or kept; its exit
/// status: 128 + the signal (130 for SIGINT, 143 for SIGTERM), or
/// [`exit::RELEASE_FAILED`] if some allocations could not be freed.
fn report_interrupted(e: &Error, ctl: &UploadControl, sig: i32, journal: Option<&Path>) -> u8 {
    let code = u8::try_from(128 + sig).unwrap_or(exit::LOCAL);
    let Some(o) = ctl.interrupted() else {
        // Stopped before it allocated anything, or failed on its own.
        eprintln!("lors: interrupted: {e}");
        return code;
    };
    let kept = journal.filter(|j| j.exists());
    match kept {
        Some(j) => eprintln!(
            "lors: interrupted: the {} block(s) stored so far are kept (journal {}){}: \
             run the same command with --resume to continue",
            o.kept_blocks,
            j.display(),
            if o.released > 0 {
                format!(
                    "; released the {} allocation(s) of unfinished blocks",
                    o.released
                )
            } else {
                String::new()
            }
        ),
        None => eprintln!(
            "lors: interrupted: released the {} allocation(s) the upload had made",
            o.released
        ),
    }
    if o.not_freed.is_empty() {
        if kept.is_none() {
            eprintln!("lors: nothing of this upload is left on the depots");
        }
        return code;
    }
    eprintln!(
        "lors: {} allocation(s) could not be freed (`lors cleanup` tries again; else they expire at the end of their duration):",
        o.not_freed.len()
    );
    for line in &o.not_freed {
        eprintln!("  {line}");
    }
    exit::RELEASE_FAILED
}

/// The upload's settings: options, else configuration, else defaults.
fn settings(a: &UploadArgs, src: &Path, cfg: &Config, grid: &Grid, stdin: bool) -> UploadSettings {
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
    let filename = if stdin {
        None
    } else {
        src.file_name().map(|n| n.to_string_lossy().into_owned())
    };
    UploadSettings {
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
        placement: a.place.placement(cfg),
        filename,
    }
}

fn print_summary(summary: &UploadSummary) {
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
        if summary.encrypted {
            "encrypted"
        } else {
            "not encrypted"
        },
        summary.mappings,
        human_size(summary.stored),
    );
}

/// Where `lors upload --resume` keeps the journal of uploading `src` to
/// `dest`: `$XDG_STATE_HOME/lors/uploads/` (else `~/.local/state/...`),
/// named after both.
fn upload_journal_path(src: &Path, dest: &Dest) -> Result<PathBuf, Error> {
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
