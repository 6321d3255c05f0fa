//! `lors cp`, `lors sync` (and `upload -r`, `download -r`, which are `cp
//! -r`) and `lors import-exnodes`: argument parsing, the progress display
//! and the summary; the work is [`lors::files::tree`] and
//! [`lors::files::import`]. See docs/lors.md, "Whole trees".

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use clap::Args;
use exnode::Security;
use ibp_service::units::format_size;
use lors::credentials::Error;
use lors::exit;
use lors::files::import::{self, ImportOptions, ImportReport};
use lors::files::tree::{self, Mode, Op, Side, TreeOptions, TreeSummary};
use lors::files::{Grid, UploadSettings};
use lors::transfer::Redundancy;
use tokio_util::sync::CancellationToken;

use crate::cli_transfer::{GridArgs, Level};

/// The prefix that marks a grid (metadata-manager) path on the command
/// line of `cp` and `sync`.
pub const GRID_PREFIX: &str = "lors:";

/// Options of every tree command: how files are stored and how many move
/// at once.
#[derive(Args, Clone)]
pub struct TreeArgs {
    /// Files copied at once
    #[arg(short, long, value_name = "N", default_value_t = tree::DEFAULT_JOBS)]
    jobs: usize,
    /// Uploads: replicas of each block on distinct depots [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "ec")]
    copies: Option<u16>,
    /// Uploads: erasure coding, K data + M parity shares per block
    #[arg(long, value_name = "K+M", value_parser = lors::transfer::parse_ec)]
    ec: Option<Redundancy>,
    /// Uploads: depot security level [default: full with a proxy]
    #[arg(long, value_enum)]
    security: Option<Level>,
    /// Uploads: store the data in clear
    #[arg(long)]
    no_encrypt: bool,
    /// Uploads: block size, e.g. 8MiB [default: 8MiB]
    #[arg(long, value_name = "SIZE", value_parser = lors::depots::parse_size)]
    block_size: Option<u64>,
    /// Uploads: allocation lifetime, e.g. 3600, 90m, 7d [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = lors::depots::parse_duration)]
    duration: Option<u64>,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct CpArgs {
    /// Copy directories recursively (a directory without it is refused)
    #[arg(short = 'r', long)]
    recursive: bool,
    /// What to copy: a local path, or a grid path written lors:/VO/dir
    src: String,
    /// Where: into an existing directory as DEST/NAME, else as DEST (its
    /// parent must exist); lors:/VO/... for a grid path
    dest: String,
    #[command(flatten)]
    tree: TreeArgs,
}

#[derive(Args)]
pub struct SyncArgs {
    /// The tree to copy: a local directory, or lors:/VO/dir
    src: String,
    /// The tree made the same as SRC (created if missing; its parent must
    /// exist): lors:/VO/dir, or a local directory
    dest: String,
    /// Compare contents (both sides read whole) instead of size and mtime
    #[arg(short, long)]
    checksum: bool,
    /// Remove files and directories under DEST that SRC does not have
    #[arg(long)]
    delete: bool,
    /// List what would be done, do nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    tree: TreeArgs,
}

#[derive(Args)]
pub struct ImportArgs {
    /// A local directory of exNode files (NAME.xnd, searched recursively)
    dir: PathBuf,
    /// The metadata-manager directory they go under (/VO/dir): DIR/a/F.xnd
    /// becomes GRIDPATH/a/F (created if missing; its parent must exist)
    gridpath: String,
    /// Re-upload each file's data, encrypted, to the VO's depots instead
    /// of registering the exNode as it is
    #[arg(long)]
    copy: bool,
    #[command(flatten)]
    tree: TreeArgs,
}

/// A command-line side: `lors:/VO/...` is a grid path, anything else a
/// local one.
fn side(arg: &str) -> Side {
    match arg.strip_prefix(GRID_PREFIX) {
        Some(p) => Side::Grid(p.to_owned()),
        None => Side::Local(PathBuf::from(arg)),
    }
}

impl TreeArgs {
    fn settings(&self, cfg: &lors::config::Config, grid: &Grid) -> UploadSettings {
        let mut s = lors::client::default_settings(cfg, grid);
        if let Some(n) = self.copies {
            s.redundancy = Redundancy::Copies(n);
        }
        if let Some(r) = self.ec {
            s.redundancy = r;
        }
        if let Some(l) = self.security {
            s.security = Security::from(l);
        }
        if let Some(b) = self.block_size {
            s.block_size = b;
        }
        if let Some(d) = self.duration {
            s.placement.duration = d;
        }
        s.encrypt = !self.no_encrypt && (grid.key.is_some() || s.security != Security::Legacy);
        s
    }
}

/// What a tree command runs with.
pub struct Session {
    pub grid: Grid,
    pub settings: UploadSettings,
    pub jobs: usize,
    pub threads: usize,
    pub json: bool,
    pub quiet: bool,
}

impl TreeArgs {
    fn session(&self) -> Result<Session, Error> {
        let cfg = lors::config::Config::load()?;
        let grid = self.grid.grid(&cfg)?;
        Ok(Session {
            settings: self.settings(&cfg, &grid),
            grid,
            jobs: self.jobs,
            threads: lors::client::DEFAULT_THREADS,
            json: self.grid.json,
            quiet: self.grid.quiet,
        })
    }
}

/// What a tree command does.
struct Job {
    src: Side,
    dest: Side,
    mode: Mode,
    recursive: bool,
    checksum: bool,
    delete: bool,
    dry_run: bool,
    /// `lors upload A B C DIR`: these local files into the grid directory
    /// `dest` (`src` unused).
    files: Vec<PathBuf>,
}

/// `lors cp [-r] SRC DEST`.
pub fn cp(a: CpArgs) -> Result<u8, Error> {
    let job = Job {
        src: side(&a.src),
        dest: side(&a.dest),
        mode: Mode::Copy,
        recursive: a.recursive,
        checksum: false,
        delete: false,
        dry_run: false,
        files: Vec::new(),
    };
    run_tree(a.tree.session()?, job)
}

/// `lors upload -r DIR /VO/path`: `cp -r DIR lors:/VO/path`.
pub fn upload_r(s: Session, src: PathBuf, dest: String) -> Result<u8, Error> {
    let job = Job {
        src: Side::Local(src),
        dest: Side::Grid(dest),
        mode: Mode::Copy,
        recursive: true,
        checksum: false,
        delete: false,
        dry_run: false,
        files: Vec::new(),
    };
    run_tree(s, job)
}

/// `lors upload A B C /VO/dir`: each file into the existing directory as
/// `/VO/dir/NAME`, `jobs` at once, one summary
/// ([`tree::upload_files`]).
pub fn upload_files(s: Session, srcs: Vec<PathBuf>, dest: String) -> Result<u8, Error> {
    let job = Job {
        src: Side::Local(PathBuf::new()),
        dest: Side::Grid(dest),
        mode: Mode::Copy,
        recursive: false,
        checksum: false,
        delete: false,
        dry_run: false,
        files: srcs,
    };
    run_tree(s, job)
}

/// `lors download -r /VO/path DIR`: `cp -r lors:/VO/path DIR`.
pub fn download_r(s: Session, src: String, dest: PathBuf) -> Result<u8, Error> {
    let job = Job {
        src: Side::Grid(src),
        dest: Side::Local(dest),
        mode: Mode::Copy,
        recursive: true,
        checksum: false,
        delete: false,
        dry_run: false,
        files: Vec::new(),
    };
    run_tree(s, job)
}

/// `lors sync SRC DEST`.
pub fn sync(a: SyncArgs) -> Result<u8, Error> {
    let job = Job {
        src: side(&a.src),
        dest: side(&a.dest),
        mode: Mode::Sync,
        recursive: true,
        checksum: a.checksum,
        delete: a.delete,
        dry_run: a.dry_run,
        files: Vec::new(),
    };
    run_tree(a.tree.session()?, job)
}

fn run_tree(s: Session, job: Job) -> Result<u8, Error> {
    if matches!(
        (&job.src, &job.dest),
        (Side::Local(_), Side::Local(_)) | (Side::Grid(_), Side::Grid(_))
    ) {
        return Err(Error::Usage(format!(
            "one side must be local and the other a grid path, written {GRID_PREFIX}/VO/dir"
        )));
    }
    if s.jobs == 0 || s.jobs > tree::MAX_JOBS {
        return Err(Error::Usage(format!(
            "--jobs must be 1 to {}",
            tree::MAX_JOBS
        )));
    }
    let display = Display::new(s.quiet || job.dry_run, s.json);
    let cancel = CancellationToken::new();
    let opts = TreeOptions {
        mode: job.mode,
        recursive: job.recursive,
        jobs: s.jobs,
        checksum: job.checksum,
        delete: job.delete,
        dry_run: job.dry_run,
        settings: s.settings.clone(),
        threads: s.threads,
        cancel: cancel.clone(),
        progress: display.progress(),
        on_file: display.on_file(),
    };
    let rt = crate::runtime_mt()?;
    let signal = Arc::new(AtomicI32::new(0));
    let r = rt.block_on(async {
        // SIGINT or SIGTERM: no new file starts, uploads in flight
        // release what they allocated; a second signal exits at once.
        crate::cli_transfer::watch_signals(
            cancel.clone(),
            signal.clone(),
            display.bar.clone(),
            "lors: interrupted: finishing no new file; the files in flight stop and \
             release what they stored (interrupt again to exit at once). \
             `lors sync` with the same source and destination continues",
            "lors: interrupted again: exiting now; `lors cleanup` releases what the \
             files in flight left on the depots",
        )?;
        match &job.dest {
            Side::Grid(dir) if !job.files.is_empty() => {
                tree::upload_files(&s.grid, &job.files, dir, &opts).await
            }
            _ => tree::copy_tree(&s.grid, &job.src, &job.dest, &opts).await,
        }
    });
    drop(rt);
    display.finish();
    let summary = r?;
    let sig = signal.load(Ordering::SeqCst);
    report(&summary, s.json, s.quiet)?;
    if sig != 0 && summary.interrupted {
        return Ok(u8::try_from(128 + sig).unwrap_or(exit::LOCAL));
    }
    Ok(summary.exit_code())
}

/// The tree's one progress bar (bytes, with files done as its message),
/// on a terminal only.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    files: Arc<AtomicU64>,
}

impl Display {
    fn new(quiet: bool, json: bool) -> Display {
        let bar = (!quiet && !json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {spinner} {bytes} {bytes_per_sec} {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_message("listing");
            b
        });
        Display {
            bar,
            files: Arc::new(AtomicU64::new(0)),
        }
    }

    fn progress(&self) -> Option<lors::transfer::Progress> {
        let b = self.bar.clone()?;
        Some(Arc::new(move |n| b.inc(n)))
    }

    fn on_file(&self) -> Option<tree::OnFile> {
        let b = self.bar.clone()?;
        let files = self.files.clone();
        Some(Arc::new(move |d: &tree::Done| {
            let n = files.fetch_add(1, Ordering::Relaxed) + 1;
            b.set_message(format!("files {n}"));
            if let Some(e) = &d.error {
                b.suspend(|| eprintln!("lors: {}: {e}", d.path));
            }
        }))
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn report(s: &TreeSummary, json: bool, quiet: bool) -> Result<(), Error> {
    for f in &s.failed {
        eprintln!("lors: {}: {}", f.path, f.error);
    }
    for i in &s.ignored {
        eprintln!("lors: warning: {i}: not a file or directory (not copied)");
    }
    if json {
        let text = serde_json::to_string_pretty(s)
            .map_err(|e| Error::Local(format!("cannot format the answer: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if s.dry_run {
        for a in &s.actions {
            let what = match a.op {
                Op::Mkdir => "mkdir",
                Op::Copy => "copy",
                Op::Skip => continue,
                Op::Delete => "delete",
                Op::Rmdir => "rmdir",
            };
            println!("{what} {}", if a.path.is_empty() { "." } else { &a.path });
        }
        println!(
            "dry run: {} to copy ({}), {} unchanged, {} to delete ({} -> {})",
            s.actions.iter().filter(|a| a.op == Op::Copy).count(),
            format_size(
                s.actions
                    .iter()
                    .filter(|a| a.op == Op::Copy)
                    .map(|a| a.size)
                    .sum()
            ),
            s.skipped,
            s.actions
                .iter()
                .filter(|a| matches!(a.op, Op::Delete | Op::Rmdir))
                .count(),
            s.source,
            s.dest
        );
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    println!(
        "{} {} -> {}: {} file(s) copied ({}), {} unchanged, {} deleted, {} failed; {} dir(s) made; {:.2} s ({:.1} files/s){}",
        match s.mode {
            Mode::Copy => "cp",
            Mode::Sync => "sync",
        },
        s.source,
        s.dest,
        s.copied,
        format_size(s.copied_bytes),
        s.skipped,
        s.deleted,
        s.failed.len(),
        s.dirs_created,
        s.seconds,
        s.files_per_s,
        if s.interrupted { "; interrupted" } else { "" },
    );
    Ok(())
}

/// `lors import-exnodes DIR GRIDPATH`.
pub fn import_exnodes(a: ImportArgs) -> Result<u8, Error> {
    let s = a.tree.session()?;
    let opts = ImportOptions {
        copy: a.copy,
        jobs: s.jobs.clamp(1, tree::MAX_JOBS),
        settings: s.settings.clone(),
        threads: s.threads,
    };
    let r = crate::runtime_mt()?.block_on(import::import_exnodes(
        &s.grid,
        &a.dir,
        &a.gridpath,
        &opts,
    ))?;
    print_import(&r, s.json, s.quiet)?;
    Ok(r.exit_code())
}

fn print_import(r: &ImportReport, json: bool, quiet: bool) -> Result<(), Error> {
    for f in &r.failed {
        eprintln!("lors: not imported: {}: {}", f.xnd, f.reason);
    }
    for i in r.imported.iter().filter(|i| i.key_in_exnode) {
        eprintln!(
            "lors: warning: {}: its data is encrypted with a key written in the exNode itself \
             (now at the metadata manager): re-import with --copy to encrypt it properly",
            i.path
        );
    }
    if json {
        let text = serde_json::to_string_pretty(r)
            .map_err(|e| Error::Local(format!("cannot format the answer: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if quiet {
        return Ok(());
    }
    for i in &r.imported {
        println!("{} -> {}", i.xnd, i.path);
    }
    for s in &r.skipped {
        println!("{}: skipped: {} exists", s.xnd, s.path);
    }
    println!(
        "{} exNode(s) {} under {}, {} skipped, {} not imported; {:.2} s",
        r.imported.len(),
        if r.copied { "copied" } else { "registered" },
        r.dest,
        r.skipped.len(),
        r.failed.len(),
        r.seconds
    );
    Ok(())
}
