//! `lors download`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use lors::credentials::Error;
use lors::exit;
use lors::files::{self, DownloadSummary, Provenance, Source};
use lors::transfer::Sink;

use super::{config, human_size, print_json, progress_bar, GridArgs, DEFAULT_THREADS};

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
    /// Download a directory tree: `lors cp -r lors:SRC DEST` (see `lors cp`)
    #[arg(short = 'r', long, conflicts_with_all = ["xnd", "resume", "version"])]
    recursive: bool,
    #[command(flatten)]
    grid: GridArgs,
}

pub fn download(a: DownloadArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let mut grid = a.grid.grid(&cfg)?;
    if let Some(f) = &a.escrow_key {
        grid.escrow = Some(Arc::new(lors::keys::load(f)?));
    }
    let (src, dest) = source_and_dest(&a)?;
    let threads = a
        .threads
        .or(cfg.threads.map(|t| t as usize))
        .unwrap_or(DEFAULT_THREADS)
        .max(1);
    if let (true, Source::Path { path, .. }) = (a.recursive, &src) {
        let session = crate::cli_tree::Session {
            settings: lors::client::default_settings(&cfg, &grid),
            grid,
            jobs: lors::files::tree::DEFAULT_JOBS,
            threads,
            json: a.grid.json,
            quiet: a.grid.quiet,
        };
        return crate::cli_tree::download_r(session, path.clone(), dest);
    }
    let to_stdout = dest.as_os_str() == "-";
    if a.resume && to_stdout {
        return Err(Error::Usage("--resume needs an output file, not -".into()));
    }
    let out = if to_stdout {
        None
    } else {
        Some(files::Output::for_path(&dest)?)
    };
    let part = out.as_ref().and_then(files::Output::part);
    if a.resume && out.is_some() && part.is_none() {
        return Err(Error::Usage(format!(
            "--resume needs a regular file to continue, and {} is not one",
            dest.display()
        )));
    }
    let sink = match &out {
        None => Sink::Stream(Box::new(tokio::io::stdout())),
        Some(o) => o.sink(a.resume)?,
    };
    let resume = part.map(|p| files::Resume {
        journal: p.journal.clone(),
        resume: a.resume,
    });
    let bar = progress_bar(None, a.grid.quiet || to_stdout, a.grid.json, "download");
    // The total is known once the exNode is read: a bar with an ETA from
    // then on.
    let set_total = bar.as_ref().map(|(b, _)| {
        let b = b.clone();
        move |n: u64| super::bar_total(&b, n)
    });
    let rt = crate::runtime_mt()?;
    let r = rt.block_on(files::download_sized(
        &grid,
        &src,
        sink,
        threads,
        bar.as_ref().map(|(_, p)| p.clone()),
        resume.as_ref(),
        set_total.as_ref().map(|f| f as &(dyn Fn(u64) + Sync)),
    ));
    if let Some((b, _)) = &bar {
        b.finish_and_clear();
    }
    let summary = match (r, part) {
        (Ok(s), _) => s,
        (Err(e), Some(p)) => {
            if let Some(kept) = p.keep_for_resume_or_remove() {
                eprintln!(
                    "lors: the part downloaded is kept in {}: run the same command with --resume to continue",
                    kept.display()
                );
            }
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    if let Some(p) = part {
        p.complete()?;
    }
    if let (Provenance::Unsigned, Some(f), false) =
        (&summary.exnode_signature, &a.xnd, a.grid.quiet)
    {
        eprintln!("{}", super::stat::unsigned_note(f));
    }
    if a.grid.json && !to_stdout {
        print_json(&summary)?;
    } else {
        print_summary(&summary, to_stdout, a.grid.quiet);
    }
    Ok(exit::OK)
}

/// The exNode to read and the destination (a file or `-`).
fn source_and_dest(a: &DownloadArgs) -> Result<(Source, PathBuf), Error> {
    match (&a.paths[..], &a.xnd) {
        ([p, d], None) => Ok((
            Source::Path {
                path: p.clone(),
                version: a.version,
            },
            PathBuf::from(d),
        )),
        ([d], Some(f)) => Ok((Source::Xnd(f.clone()), PathBuf::from(d))),
        (_, Some(_)) => Err(Error::Usage(
            "with --xnd FILE give only the destination (a file or -)".into(),
        )),
        _ => Err(Error::Usage(
            "give the source path and the destination (a file or -), or --xnd FILE and the destination".into(),
        )),
    }
}

fn print_summary(summary: &DownloadSummary, to_stdout: bool, quiet: bool) {
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
    if quiet {
        // Nothing on success.
    } else if to_stdout {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    for c in &summary.report.corrupt {
        eprintln!("lors: warning: corrupt copy skipped: {c} (run lors repair)");
    }
}
