//! Whole trees: `lors cp -r` and `lors sync`, in both directions (a local
//! directory to a metadata-manager path, or back), for the CLI, liblors
//! and the Python package alike.
//!
//! - The destination is checked before any data moves ([`resolve`]): a
//!   missing parent directory (not found), a file where a directory must
//!   be (usage), no write right (refused) fail at once, in a few requests.
//! - `cp -r` destinations are cp's: into an existing directory as
//!   `DEST/NAME` (NAME: the source's last component), else as the new name
//!   `DEST` (its parent must exist). `sync SRC DEST` makes DEST the copy
//!   of SRC (rsync's `SRC/ DEST`).
//! - Files go in parallel, at most [`TreeOptions::jobs`] at once; each is
//!   an ordinary upload or download (registered only once complete, so a
//!   file at the destination is whole or absent).
//! - Modification times: an upload records the local file's mtime (whole
//!   seconds) in the exNode as the top-level integer metadata `mtime`,
//!   which the metadata manager shows as the entry's `mtime`; a download
//!   sets the local file's mtime from it (else from the version's
//!   `updated_at`).
//! - `sync` skips a file whose destination has the same size and mtime
//!   (with `checksum`: the same bytes, read from both sides), and with
//!   `delete` removes what the source does not have. It resumes an
//!   interrupted copy without a journal of its own: every file that
//!   reached the destination is complete (a grid file is registered after
//!   all its blocks are stored; a local file is renamed from its part file
//!   when complete) and carries the source's size and mtime, so a re-run
//!   skips exactly those and copies the rest.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use metadata_api::files::EntryKind;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::output::{download_to_path, Part};
use super::{need_mdm, FileReader, Grid, ReaderOptions, Source, UploadControl, UploadSettings};
use crate::credentials::Error;
use crate::transfer::Progress;

/// Default number of files copied at once.
pub const DEFAULT_JOBS: usize = 8;
/// Most files copied at once.
pub const MAX_JOBS: usize = 64;

/// One side of a tree copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// A local file or directory.
    Local(PathBuf),
    /// A metadata-manager path (`/VO/dir`).
    Grid(String),
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Side::Local(p) => write!(f, "{}", p.display()),
            Side::Grid(p) => f.write_str(p),
        }
    }
}

/// `cp -r` or `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every file copied; cp-style destination.
    Copy,
    /// Unchanged files skipped; DEST is the copy of SRC.
    Sync,
}

/// Called as each file is done (copied, skipped, deleted or failed).
pub type OnFile = Arc<dyn Fn(&Done) + Send + Sync>;

/// How a tree is copied.
#[derive(Clone)]
pub struct TreeOptions {
    pub mode: Mode,
    /// A directory source is copied only with it (`-r`).
    pub recursive: bool,
    /// Files at once (1..=[`MAX_JOBS`]).
    pub jobs: usize,
    /// Sync: compare contents instead of size and mtime.
    pub checksum: bool,
    /// Sync: remove what the source does not have.
    pub delete: bool,
    /// Plan only: [`TreeSummary::actions`] lists what would be done.
    pub dry_run: bool,
    /// Uploads' settings (`filename` is set per file).
    pub settings: UploadSettings,
    /// Blocks in flight per download.
    pub threads: usize,
    /// Cancelled: no new file starts; uploads in flight stop and release
    /// what they allocated, downloads in flight stop and remove their part
    /// files.
    pub cancel: CancellationToken,
    /// Bytes moved, over the whole tree.
    pub progress: Option<Progress>,
    pub on_file: Option<OnFile>,
}

/// What is done with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Mkdir,
    Copy,
    Skip,
    Delete,
    Rmdir,
}

/// One entry's action (relative path; `""` is the root).
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub op: Op,
    pub path: String,
    pub size: u64,
    /// A copy: the source's mtime (set on a downloaded file).
    #[serde(skip)]
    pub mtime: Option<i64>,
    /// An upload of several files ([`upload_files`]): the local file,
    /// which is not under the source root.
    #[serde(skip)]
    pub from: Option<PathBuf>,
    /// An upload over an existing grid file: its UUID and current version
    /// as the destination's listing said (the upload then asks the
    /// metadata manager nothing before its put).
    #[serde(skip)]
    pub over: Option<(uuid::Uuid, u64)>,
}

/// A file done.
#[derive(Debug, Clone)]
pub struct Done {
    pub op: Op,
    pub path: String,
    pub size: u64,
    pub error: Option<String>,
}

/// An entry that failed, with the exit code of its error.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub path: String,
    pub error: String,
    pub code: u8,
}

/// What a tree copy did (or, dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct TreeSummary {
    pub mode: Mode,
    pub source: String,
    /// The destination root (`DEST/NAME` for a copy into a directory).
    pub dest: String,
    pub dry_run: bool,
    pub dirs_created: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub skipped_bytes: u64,
    pub deleted: u64,
    pub failed: Vec<Failure>,
    /// Local entries that are neither files nor directories (symbolic
    /// links, devices, sockets): not copied.
    pub ignored: Vec<String>,
    /// Stopped by [`TreeOptions::cancel`] before every file was done.
    pub interrupted: bool,
    /// Dry run: every action planned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    pub seconds: f64,
    /// Files copied per second.
    pub files_per_s: f64,
}

impl TreeSummary {
    /// Nothing done yet.
    fn new(mode: Mode, source: String, dest: String, dry_run: bool) -> TreeSummary {
        TreeSummary {
            mode,
            source,
            dest,
            dry_run,
            dirs_created: 0,
            copied: 0,
            copied_bytes: 0,
            skipped: 0,
            skipped_bytes: 0,
            deleted: 0,
            failed: Vec::new(),
            ignored: Vec::new(),
            interrupted: false,
            actions: Vec::new(),
            seconds: 0.0,
            files_per_s: 0.0,
        }
    }

    /// The exit code: 0, or the first failure's.
    pub fn exit_code(&self) -> u8 {
        self.failed.first().map_or(crate::exit::OK, |f| f.code)
    }
}

/// A file or directory of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File {
        size: u64,
        mtime: Option<i64>,
        /// A grid file: its UUID and current version (an upload over it
        /// then asks the metadata manager nothing before its put).
        id: Option<(uuid::Uuid, u64)>,
    },
}

/// A tree by relative path (`a/b`, `""` the root), parents before
/// children.
type Listing = BTreeMap<String, Node>;

fn join_grid(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_owned()
    } else {
        format!("{}/{rel}", root.trim_end_matches('/'))
    }
}

fn join_local(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The last component of a side (what `cp` names the copy after).
fn base_name(side: &Side) -> Option<String> {
    match side {
        Side::Local(p) => {
            let abs;
            let p = if p.file_name().is_none() {
                abs = std::fs::canonicalize(p).ok()?;
                abs.as_path()
            } else {
                p.as_path()
            };
            p.file_name()?.to_str().map(str::to_owned)
        }
        Side::Grid(p) => p
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    }
}

/// What a side's path is now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Missing,
    Dir { writable: Option<bool> },
    File { writable: Option<bool> },
}

async fn look(grid: &Grid, side: &Side) -> Result<Found, Error> {
    match side {
        Side::Local(p) => match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Ok(Found::Dir {
                writable: Some(local_writable(p)),
            }),
            Ok(m) => Ok(Found::File {
                writable: Some(
                    !m.permissions().readonly() && p.parent().is_none_or(local_writable_or_cwd),
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Missing),
            Err(e) => Err(Error::Local(format!("{}: {e}", p.display()))),
        },
        Side::Grid(p) => match need_mdm(grid)?.stat(p).await {
            Ok(e) => {
                let writable = e.rights.as_deref().map(|r| r.contains('w'));
                Ok(if e.kind == EntryKind::Dir {
                    Found::Dir { writable }
                } else {
                    Found::File { writable }
                })
            }
            Err(Error::NotFound(_)) => Ok(Found::Missing),
            // No read right there: the copy itself says what it may do.
            Err(Error::Forbidden(_)) => Ok(Found::Dir { writable: None }),
            Err(e) => Err(e),
        },
    }
}

fn local_writable_or_cwd(d: &Path) -> bool {
    local_writable(if d.as_os_str().is_empty() {
        Path::new(".")
    } else {
        d
    })
}

/// Whether files can be created in `d` (a probe file made and removed:
/// ACLs and read-only file systems count).
fn local_writable(d: &Path) -> bool {
    tempfile::Builder::new()
        .prefix(".lors-write-check")
        .tempfile_in(d)
        .is_ok()
}

fn parent_of(side: &Side) -> Option<Side> {
    match side {
        Side::Local(p) => {
            let parent = p.parent()?;
            Some(Side::Local(if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            }))
        }
        Side::Grid(p) => {
            let (parent, _) = p.trim_end_matches('/').rsplit_once('/')?;
            (!parent.is_empty()).then(|| Side::Grid(parent.to_owned()))
        }
    }
}

fn child_of(side: &Side, name: &str) -> Side {
    match side {
        Side::Local(p) => Side::Local(p.join(name)),
        Side::Grid(p) => Side::Grid(join_grid(p, name)),
    }
}

fn no_write(what: &Side, why: &str) -> Error {
    Error::Forbidden(format!("no write right on {what}: {why}"))
}

/// The source's kind and the destination root, checked (see the module
/// documentation): before any data moves.
async fn resolve(grid: &Grid, src: &Side, dest: &Side, mode: Mode) -> Result<(bool, Side), Error> {
    let src_dir = match look(grid, src).await? {
        Found::Missing => return Err(Error::NotFound(format!("{src}: no such file or directory"))),
        Found::Dir { .. } => true,
        Found::File { .. } => false,
    };
    let mut root = dest.clone();
    let mut found = look(grid, dest).await?;
    if mode == Mode::Copy {
        if let Found::Dir { .. } = found {
            let name = base_name(src)
                .ok_or_else(|| Error::Usage(format!("{src}: no name to copy it under")))?;
            root = child_of(dest, &name);
            found = look(grid, &root).await?;
        }
    }
    match found {
        Found::Dir { writable } => {
            if !src_dir {
                return Err(Error::Usage(format!(
                    "{root} is a directory and {src} a file: give the file's destination path"
                )));
            }
            if writable == Some(false) {
                return Err(no_write(&root, "copying into it needs it"));
            }
        }
        Found::File { writable } => {
            if src_dir {
                return Err(Error::Usage(format!(
                    "{root} exists and is a file, not a directory: {src} cannot be copied there"
                )));
            }
            if writable == Some(false) {
                return Err(no_write(&root, "replacing it needs it"));
            }
        }
        Found::Missing => {
            let Some(parent) = parent_of(&root) else {
                return Err(Error::Usage(format!("{root}: not a path to create")));
            };
            match look(grid, &parent).await? {
                Found::Missing => {
                    let hint = match &parent {
                        Side::Grid(p) => format!(" (create it first: lors mkdir -p {p})"),
                        Side::Local(_) => String::new(),
                    };
                    return Err(Error::NotFound(format!(
                        "{parent}: no such directory{hint}"
                    )));
                }
                Found::File { .. } => {
                    return Err(Error::Usage(format!(
                        "{parent} is a file, not a directory: {root} cannot be created in it"
                    )))
                }
                Found::Dir { writable } => {
                    if writable == Some(false) {
                        return Err(no_write(&parent, &format!("creating {root} needs it")));
                    }
                }
            }
        }
    }
    Ok((src_dir, root))
}

/// A local tree's listing; entries that are not files or directories go
/// to `ignored`, names that are not UTF-8 to `failed`.
fn list_local(
    root: &Path,
    is_dir: bool,
    ignored: &mut Vec<String>,
    failed: &mut Vec<Failure>,
) -> Result<Listing, Error> {
    let mut out = Listing::new();
    let read = |p: &Path| {
        std::fs::symlink_metadata(p).map_err(|e| Error::Local(format!("{}: {e}", p.display())))
    };
    if !is_dir {
        let m = std::fs::metadata(root)
            .map_err(|e| Error::Local(format!("{}: {e}", root.display())))?;
        out.insert(
            String::new(),
            Node::File {
                size: m.len(),
                mtime: Some(m.mtime()),
                id: None,
            },
        );
        return Ok(out);
    }
    out.insert(String::new(), Node::Dir);
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = join_local(root, &rel);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::Local(format!("{}: {e}", dir.display())))?;
        for e in entries {
            let e = e.map_err(|e| Error::Local(format!("{}: {e}", dir.display())))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                failed.push(Failure {
                    path: e.path().display().to_string(),
                    error: "the name is not UTF-8, which grid paths must be".into(),
                    code: crate::exit::USAGE,
                });
                continue;
            };
            let child = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let m = read(&e.path())?;
            if m.is_dir() {
                out.insert(child.clone(), Node::Dir);
                stack.push(child);
            } else if m.is_file() {
                out.insert(
                    child,
                    Node::File {
                        size: m.len(),
                        mtime: Some(m.mtime()),
                        id: None,
                    },
                );
            } else {
                ignored.push(child);
            }
        }
    }
    Ok(out)
}

/// A grid file's UUID and current version, as a listing shows them.
fn grid_id(e: &metadata_api::files::EntryInfo) -> Option<(uuid::Uuid, u64)> {
    let id = uuid::Uuid::parse_str(&e.id).ok()?;
    (e.version > 0).then_some((id, e.version))
}

/// A grid tree's listing, one `list` per directory, `jobs` at once.
async fn list_grid(grid: &Grid, root: &str, is_dir: bool, jobs: usize) -> Result<Listing, Error> {
    let mdm = need_mdm(grid)?.clone();
    let mut out = Listing::new();
    if !is_dir {
        let e = mdm.stat(root).await?;
        out.insert(
            String::new(),
            Node::File {
                size: e.size,
                mtime: e.mtime.or(Some(e.updated_at)),
                id: grid_id(&e),
            },
        );
        return Ok(out);
    }
    out.insert(String::new(), Node::Dir);
    let prefix = format!("{}/", root.trim_end_matches('/'));
    let mut pending = vec![root.trim_end_matches('/').to_owned()];
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.len() < jobs.max(1) {
            let Some(dir) = pending.pop() else { break };
            let mdm = mdm.clone();
            set.spawn(async move { mdm.list(&dir).await });
        }
        let Some(r) = set.join_next().await else {
            break;
        };
        let entries = r.map_err(|e| Error::Local(format!("a listing task failed: {e}")))??;
        for e in entries {
            let Some(rel) = e.path.strip_prefix(&prefix) else {
                continue;
            };
            match e.kind {
                EntryKind::Dir => {
                    out.insert(rel.to_owned(), Node::Dir);
                    pending.push(e.path.clone());
                }
                EntryKind::File => {
                    out.insert(
                        rel.to_owned(),
                        Node::File {
                            size: e.size,
                            mtime: e.mtime.or(Some(e.updated_at)),
                            id: grid_id(&e),
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

async fn listing(
    grid: &Grid,
    side: &Side,
    is_dir: bool,
    jobs: usize,
    ignored: &mut Vec<String>,
    failed: &mut Vec<Failure>,
) -> Result<Listing, Error> {
    match side {
        Side::Local(p) => list_local(p, is_dir, ignored, failed),
        Side::Grid(p) => list_grid(grid, p, is_dir, jobs).await,
    }
}

/// The destination's listing if it exists (else empty).
async fn dest_listing(grid: &Grid, root: &Side, jobs: usize) -> Result<Listing, Error> {
    let mut ignored = Vec::new();
    let mut failed = Vec::new();
    match look(grid, root).await? {
        Found::Missing => Ok(Listing::new()),
        Found::Dir { .. } => listing(grid, root, true, jobs, &mut ignored, &mut failed).await,
        Found::File { .. } => listing(grid, root, false, jobs, &mut ignored, &mut failed).await,
    }
}

/// Copies the tree `src` to `dest` (see the module documentation). An
/// error is the whole operation's (the source or destination refused, a
/// listing failed); each file's failure is in [`TreeSummary::failed`].
pub async fn copy_tree(
    grid: &Grid,
    src: &Side,
    dest: &Side,
    opts: &TreeOptions,
) -> Result<TreeSummary, Error> {
    let started = Instant::now();
    let jobs = opts.jobs.clamp(1, MAX_JOBS);
    match (src, dest) {
        (Side::Local(_), Side::Grid(_)) | (Side::Grid(_), Side::Local(_)) => {}
        _ => {
            return Err(Error::Usage(
                "one side must be local and the other a grid path (/VO/...)".into(),
            ))
        }
    }
    let (src_dir, root) = resolve(grid, src, dest, opts.mode).await?;
    if src_dir && !opts.recursive {
        return Err(Error::Usage(format!(
            "{src} is a directory: give -r to copy it"
        )));
    }
    let mut ignored = Vec::new();
    let mut failed = Vec::new();
    let have = listing(grid, src, src_dir, jobs, &mut ignored, &mut failed).await?;
    let there = dest_listing(grid, &root, jobs).await?;
    let plan = plan(&have, &there, opts);
    let mut summary = TreeSummary {
        failed,
        ignored,
        ..TreeSummary::new(opts.mode, src.to_string(), root.to_string(), opts.dry_run)
    };
    for (rel, why) in &plan.conflicts {
        summary.failed.push(Failure {
            path: join_side(&root, rel),
            error: why.clone(),
            code: crate::exit::USAGE,
        });
    }
    let checks: Vec<&Action> = plan.actions.iter().filter(|a| a.op == Op::Skip).collect();
    let mut actions = plan.actions.clone();
    if opts.checksum && !checks.is_empty() {
        // Same size: the same bytes decide.
        let differ = differing(grid, src, &root, &checks, jobs, &opts.cancel).await;
        for a in actions.iter_mut() {
            if a.op == Op::Skip && differ.contains(&a.path) {
                a.op = Op::Copy;
            }
        }
    }
    if opts.dry_run {
        summary.skipped = actions.iter().filter(|a| a.op == Op::Skip).count() as u64;
        summary.actions = actions;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    run(grid, src, &root, &actions, opts, jobs, &mut summary).await;
    summary.interrupted = opts.cancel.is_cancelled();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.files_per_s = summary.copied as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// `lors upload A B C DIR`: local files, each into the existing grid
/// directory `dir` as `DIR/NAME` (NAME: its last component), like
/// `cp A B C DIR`. The destination is checked before any data moves: a
/// missing directory is not found, a file usage (several sources need a
/// directory), no write right refused. One `list` of `dir` tells which
/// names exist, so that each file of one block then costs the metadata
/// manager one put: a new name is created, an existing file gets a new
/// version over the current one the listing showed (see
/// [`UploadControl::hint`]). A source that is not a
/// regular file, a name given twice or a directory in the way at the
/// destination is that file's failure; the others go on, `jobs` at once,
/// as in [`copy_tree`].
pub async fn upload_files(
    grid: &Grid,
    srcs: &[PathBuf],
    dir: &str,
    opts: &TreeOptions,
) -> Result<TreeSummary, Error> {
    let started = Instant::now();
    let jobs = opts.jobs.clamp(1, MAX_JOBS);
    let dir = dir.trim_end_matches('/');
    let root = Side::Grid(dir.to_owned());
    match look(grid, &root).await? {
        Found::Missing => {
            return Err(Error::NotFound(format!(
                "{dir}: no such directory (several files are uploaded into an existing directory; create it first: lors mkdir -p {dir})"
            )))
        }
        Found::File { .. } => {
            return Err(Error::Usage(format!(
                "{dir} is a file, not a directory: several files are uploaded into an existing directory, as DIR/NAME each"
            )))
        }
        Found::Dir { writable: Some(false) } => {
            return Err(no_write(&root, "uploading into it needs it"))
        }
        Found::Dir { .. } => {}
    }
    let mut failed = Vec::new();
    let fail = |failed: &mut Vec<Failure>, path: String, e: &Error| {
        failed.push(Failure {
            path,
            error: e.to_string(),
            code: e.exit_code(),
        })
    };
    // The sources: regular files, each name once.
    let mut actions: Vec<Action> = Vec::new();
    for src in srcs {
        let shown = src.display().to_string();
        let m = match std::fs::metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let e = Error::NotFound(format!("{shown}: no such file"));
                fail(&mut failed, shown, &e);
                continue;
            }
            Err(e) => {
                fail(
                    &mut failed,
                    shown.clone(),
                    &Error::Local(format!("{shown}: {e}")),
                );
                continue;
            }
        };
        if m.is_dir() {
            let e = Error::Usage(format!(
                "{shown} is a directory: upload it with lors cp -r {shown} lors:{dir}"
            ));
            fail(&mut failed, shown, &e);
            continue;
        }
        if !m.is_file() {
            let e = Error::Usage(format!("{shown} is not a regular file"));
            fail(&mut failed, shown, &e);
            continue;
        }
        let Some(name) = base_name(&Side::Local(src.clone())) else {
            let e = Error::Usage(format!("{shown}: no UTF-8 file name to upload it under"));
            fail(&mut failed, shown, &e);
            continue;
        };
        if actions.iter().any(|a| a.path == name) {
            let e = Error::Usage(format!(
                "{shown}: another source is uploaded as {}/{name} in this command",
                dir
            ));
            fail(&mut failed, shown, &e);
            continue;
        }
        actions.push(Action {
            op: Op::Copy,
            path: name,
            size: m.len(),
            mtime: Some(m.mtime()),
            from: Some(src.clone()),
            over: None,
        });
    }
    // What is there already: one listing.
    let there = match need_mdm(grid)?.list(dir).await {
        Ok(l) => l,
        // No read right on the directory: each put says what it may do.
        Err(Error::Forbidden(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let prefix = format!("{dir}/");
    let source = srcs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let mut summary = TreeSummary::new(Mode::Copy, source, dir.to_owned(), opts.dry_run);
    actions.retain_mut(|a| {
        let Some(e) = there
            .iter()
            .find(|e| e.path.strip_prefix(&prefix) == Some(a.path.as_str()))
        else {
            return true;
        };
        if e.kind == EntryKind::Dir {
            failed.push(Failure {
                path: join_grid(dir, &a.path),
                error: format!("{} is a directory in the way of this file", e.path),
                code: crate::exit::USAGE,
            });
            return false;
        }
        a.over = grid_id(e);
        true
    });
    summary.failed = failed;
    if opts.dry_run {
        summary.actions = actions;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let src = Side::Local(PathBuf::new());
    run(grid, &src, &root, &actions, opts, jobs, &mut summary).await;
    summary.interrupted = opts.cancel.is_cancelled();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.files_per_s = summary.copied as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

fn join_side(root: &Side, rel: &str) -> String {
    match root {
        Side::Local(p) => join_local(p, rel).display().to_string(),
        Side::Grid(p) => join_grid(p, rel),
    }
}

struct Plan {
    actions: Vec<Action>,
    /// Entries whose kind differs on the two sides.
    conflicts: Vec<(String, String)>,
}

/// What to do, from the two listings: directories to make (parents
/// first), files to copy or skip, and (delete) files and directories to
/// remove (children first).
fn plan(have: &Listing, there: &Listing, opts: &TreeOptions) -> Plan {
    let mut actions = Vec::new();
    let mut conflicts = Vec::new();
    let mut blocked: Vec<String> = Vec::new();
    let under = |rel: &str, dirs: &[String]| {
        dirs.iter()
            .any(|d| rel == d || (d.is_empty() || rel.starts_with(&format!("{d}/"))))
    };
    for (rel, node) in have {
        if under(rel, &blocked) {
            continue;
        }
        match (node, there.get(rel)) {
            (Node::Dir, None) => actions.push(Action {
                op: Op::Mkdir,
                path: rel.clone(),
                size: 0,
                mtime: None,
                from: None,
                over: None,
            }),
            (Node::Dir, Some(Node::Dir)) => {}
            (Node::Dir, Some(Node::File { .. })) => {
                conflicts.push((
                    rel.clone(),
                    "a file is in the way of this directory (remove it, or sync with --delete)"
                        .into(),
                ));
                blocked.push(rel.clone());
            }
            (Node::File { .. }, Some(Node::Dir)) => {
                conflicts.push((rel.clone(), "a directory is in the way of this file".into()))
            }
            (
                Node::File { size, mtime, .. },
                Some(Node::File {
                    size: s2,
                    mtime: m2,
                    id,
                }),
            ) => {
                let same = size == s2 && (opts.checksum || (mtime.is_some() && mtime == m2));
                let op = if opts.mode == Mode::Sync && same {
                    Op::Skip
                } else {
                    Op::Copy
                };
                actions.push(Action {
                    op,
                    path: rel.clone(),
                    size: *size,
                    mtime: *mtime,
                    from: None,
                    over: *id,
                });
            }
            (Node::File { size, mtime, .. }, None) => actions.push(Action {
                op: Op::Copy,
                path: rel.clone(),
                size: *size,
                mtime: *mtime,
                from: None,
                over: None,
            }),
        }
    }
    if opts.delete && opts.mode == Mode::Sync {
        // Children first: the reverse of the listing's order.
        for (rel, node) in there.iter().rev() {
            let kept = matches!(
                (node, have.get(rel)),
                (Node::Dir, Some(Node::Dir)) | (Node::File { .. }, Some(Node::File { .. }))
            );
            if kept || rel.is_empty() {
                continue;
            }
            actions.push(Action {
                op: if *node == Node::Dir {
                    Op::Rmdir
                } else {
                    Op::Delete
                },
                path: rel.clone(),
                size: match node {
                    Node::File { size, .. } => *size,
                    Node::Dir => 0,
                },
                mtime: None,
                from: None,
                over: None,
            });
        }
        // With the things in their way gone, the conflicts are copies.
        for (rel, _) in conflicts.drain(..) {
            match have.get(&rel) {
                Some(Node::Dir) => {
                    for (r, n) in have.range(rel.clone()..) {
                        if r != &rel && !r.starts_with(&format!("{rel}/")) {
                            break;
                        }
                        actions.push(match n {
                            Node::Dir => Action {
                                op: Op::Mkdir,
                                path: r.clone(),
                                size: 0,
                                mtime: None,
                                from: None,
                                over: None,
                            },
                            Node::File { size, mtime, .. } => Action {
                                op: Op::Copy,
                                path: r.clone(),
                                size: *size,
                                mtime: *mtime,
                                from: None,
                                over: None,
                            },
                        });
                    }
                }
                Some(Node::File { size, mtime, .. }) => actions.push(Action {
                    op: Op::Copy,
                    path: rel,
                    size: *size,
                    mtime: *mtime,
                    from: None,
                    over: None,
                }),
                None => {}
            }
        }
    }
    Plan { actions, conflicts }
}

/// The relative paths among `checks` whose contents differ (or cannot be
/// compared) between the two sides.
async fn differing(
    grid: &Grid,
    src: &Side,
    root: &Side,
    checks: &[&Action],
    jobs: usize,
    cancel: &CancellationToken,
) -> std::collections::HashSet<String> {
    use futures_util::StreamExt;
    let pairs: Vec<(String, Side, Side)> = checks
        .iter()
        .map(|a| {
            let s = match src {
                Side::Local(p) => Side::Local(join_local(p, &a.path)),
                Side::Grid(p) => Side::Grid(join_grid(p, &a.path)),
            };
            let d = match root {
                Side::Local(p) => Side::Local(join_local(p, &a.path)),
                Side::Grid(p) => Side::Grid(join_grid(p, &a.path)),
            };
            (a.path.clone(), s, d)
        })
        .collect();
    let results: Vec<(String, bool)> = futures_util::stream::iter(pairs)
        .map(|(rel, s, d)| async move {
            if cancel.is_cancelled() {
                return (rel, false);
            }
            let same = match (&s, &d) {
                (Side::Local(l), Side::Grid(g)) | (Side::Grid(g), Side::Local(l)) => {
                    same_content(grid, g, l).await.unwrap_or(false)
                }
                _ => false,
            };
            (rel, same)
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    results
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(r, _)| r)
        .collect()
}

/// Whether the grid file and the local file hold the same bytes (both
/// read whole, in 1 MiB pieces).
async fn same_content(grid: &Grid, gpath: &str, local: &Path) -> Result<bool, Error> {
    use tokio::io::AsyncReadExt;
    let src = Source::Path {
        path: gpath.to_owned(),
        version: None,
    };
    let r = FileReader::open(grid, &src, ReaderOptions::default()).await?;
    let mut f = tokio::fs::File::open(local)
        .await
        .map_err(|e| Error::Local(format!("{}: {e}", local.display())))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| Error::Local(format!("{}: {e}", local.display())))?
        .len();
    if len != r.size() {
        return Ok(false);
    }
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = r.read_at(off, &mut a).await?;
        if n == 0 {
            return Ok(false);
        }
        f.read_exact(&mut b[..n])
            .await
            .map_err(|e| Error::Local(format!("{}: {e}", local.display())))?;
        if a[..n] != b[..n] {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// Shared by the tasks of one run.
struct Tally {
    failed: Mutex<Vec<Failure>>,
    copied: AtomicU64,
    copied_bytes: AtomicU64,
    deleted: AtomicU64,
}

impl Tally {
    fn fail(&self, path: String, e: &Error) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Failure {
                path,
                error: e.to_string(),
                code: e.exit_code(),
            });
    }
}

fn done(opts: &TreeOptions, op: Op, path: &str, size: u64, error: Option<&Error>) {
    if let Some(f) = &opts.on_file {
        f(&Done {
            op,
            path: path.to_owned(),
            size,
            error: error.map(Error::to_string),
        });
    }
}

/// Carries out `actions`: removals, directories, then files `jobs` at
/// once.
async fn run(
    grid: &Grid,
    src: &Side,
    root: &Side,
    actions: &[Action],
    opts: &TreeOptions,
    jobs: usize,
    summary: &mut TreeSummary,
) {
    let tally = Arc::new(Tally {
        failed: Mutex::new(std::mem::take(&mut summary.failed)),
        copied: AtomicU64::new(0),
        copied_bytes: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
    });
    // Removals first (children first): what is in the way of the copy
    // goes before it.
    remove(grid, root, actions, opts, jobs, &tally).await;
    // Directories, parents first; a directory that cannot be made fails
    // what is under it.
    let mut broken: Vec<String> = Vec::new();
    for a in actions.iter().filter(|a| a.op == Op::Mkdir) {
        if opts.cancel.is_cancelled() {
            break;
        }
        let r = match root {
            Side::Local(p) => std::fs::create_dir_all(join_local(p, &a.path))
                .map_err(|e| Error::Local(format!("{}: {e}", join_local(p, &a.path).display()))),
            Side::Grid(p) => match need_mdm(grid) {
                Ok(mdm) => mdm.mkdir(&join_grid(p, &a.path), true).await.map(|_| ()),
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(()) => summary.dirs_created += 1,
            Err(e) => {
                tally.fail(join_side(root, &a.path), &e);
                broken.push(a.path.clone());
            }
        }
    }
    let is_broken = |rel: &str| {
        broken
            .iter()
            .any(|d| d.is_empty() || rel.starts_with(&format!("{d}/")))
    };
    for a in actions.iter().filter(|a| a.op == Op::Skip) {
        summary.skipped += 1;
        summary.skipped_bytes += a.size;
        done(opts, Op::Skip, &a.path, a.size, None);
    }
    // Files.
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    for a in actions.iter().filter(|a| a.op == Op::Copy) {
        if is_broken(&a.path) {
            continue;
        }
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p,
            () = opts.cancel.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        if opts.cancel.is_cancelled() {
            break;
        }
        let (grid, src, root, a, opts, tally) = (
            grid.clone(),
            src.clone(),
            root.clone(),
            a.clone(),
            opts.clone(),
            tally.clone(),
        );
        set.spawn(async move {
            let r = copy_one(&grid, &src, &root, &a, &opts).await;
            match &r {
                Ok(()) => {
                    tally.copied.fetch_add(1, Ordering::Relaxed);
                    tally.copied_bytes.fetch_add(a.size, Ordering::Relaxed);
                }
                Err(e) if opts.cancel.is_cancelled() => {
                    // Interrupted: not a failure of this file.
                    tracing::info!(path = %a.path, error = %e, "stopped");
                }
                Err(e) => tally.fail(join_side(&root, &a.path), e),
            }
            done(&opts, Op::Copy, &a.path, a.size, r.as_ref().err());
            drop(permit);
        });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            // A task that panicked: a bug, said as one failure.
            let e = Error::Local(format!("a copy task failed: {e}"));
            tally.fail(root.to_string(), &e);
        }
    }
    summary.copied = tally.copied.load(Ordering::Relaxed);
    summary.copied_bytes = tally.copied_bytes.load(Ordering::Relaxed);
    summary.deleted = tally.deleted.load(Ordering::Relaxed);
    summary.failed = std::mem::take(&mut *tally.failed.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Copies one file; a download sets the local mtime.
async fn copy_one(
    grid: &Grid,
    src: &Side,
    root: &Side,
    a: &Action,
    opts: &TreeOptions,
) -> Result<(), Error> {
    match (src, root) {
        (Side::Local(from), Side::Grid(to)) => {
            let path = a.from.clone().unwrap_or_else(|| join_local(from, &a.path));
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
            let m = f
                .metadata()
                .await
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
            let mut s = opts.settings.clone();
            s.filename = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let mut ctl = UploadControl::default();
            ctl.cancel = opts.cancel.child_token();
            ctl.mtime = Some(m.mtime());
            ctl.hint = a.over;
            let dest = super::Dest::Path(join_grid(to, &a.path));
            super::upload_controlled(
                grid,
                f,
                Some(m.len()),
                &dest,
                &s,
                opts.progress.clone(),
                &ctl,
            )
            .await
            .map(|_| ())
        }
        (Side::Grid(from), Side::Local(to)) => {
            let gpath = join_grid(from, &a.path);
            let dest = join_local(to, &a.path);
            let source = Source::Path {
                path: gpath.clone(),
                version: None,
            };
            let fetch = download_to_path(grid, &source, &dest, opts.threads, opts.progress.clone());
            let got = tokio::select! {
                r = fetch => r,
                () = opts.cancel.cancelled() => {
                    // The download was dropped mid-way: its part file goes.
                    if let Ok(p) = Part::of(&dest) {
                        p.remove();
                    }
                    return Err(Error::Local("interrupted".into()));
                }
            };
            got?;
            // The mtime the upload recorded, else the version's time.
            match a.mtime {
                Some(t) => set_mtime(&dest, t),
                None => Ok(()),
            }
        }
        _ => Err(Error::Usage("one side must be local".into())),
    }
}

fn set_mtime(path: &Path, secs: i64) -> Result<(), Error> {
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .map_err(|e| Error::Local(format!("cannot set the time of {}: {e}", path.display())))
}

/// Sync `--delete`: files (grid: with their allocations released), then
/// directories, children first. Nothing once cancelled.
async fn remove(
    grid: &Grid,
    root: &Side,
    actions: &[Action],
    opts: &TreeOptions,
    jobs: usize,
    tally: &Arc<Tally>,
) {
    use futures_util::StreamExt;
    if opts.cancel.is_cancelled() {
        return;
    }
    let files: Vec<&Action> = actions.iter().filter(|a| a.op == Op::Delete).collect();
    let access = tokio::sync::OnceCell::new();
    let results: Vec<(&Action, Result<(), Error>)> = futures_util::stream::iter(files)
        .map(|a| {
            let access = &access;
            async move {
                let r = match root {
                    Side::Local(p) => std::fs::remove_file(join_local(p, &a.path)).map_err(|e| {
                        Error::Local(format!("{}: {e}", join_local(p, &a.path).display()))
                    }),
                    Side::Grid(p) => delete_grid_file(grid, &join_grid(p, &a.path), access).await,
                };
                (a, r)
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    for (a, r) in results {
        match &r {
            Ok(()) => {
                tally.deleted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.fail(join_side(root, &a.path), e),
        }
        done(opts, Op::Delete, &a.path, a.size, r.as_ref().err());
    }
    for a in actions.iter().filter(|a| a.op == Op::Rmdir) {
        let r = match root {
            Side::Local(p) => std::fs::remove_dir(join_local(p, &a.path))
                .map_err(|e| Error::Local(format!("{}: {e}", join_local(p, &a.path).display()))),
            Side::Grid(p) => match need_mdm(grid) {
                Ok(mdm) => mdm.delete(&join_grid(p, &a.path), None).await.map(|_| ()),
                Err(e) => Err(e),
            },
        };
        match &r {
            Ok(()) => {
                tally.deleted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.fail(join_side(root, &a.path), e),
        }
        done(opts, Op::Rmdir, &a.path, 0, r.as_ref().err());
    }
}

/// `lors rm` of one file: deleted at the metadata manager, its
/// allocations released on the depots (grants from the L-Bone, asked
/// once per run).
async fn delete_grid_file(
    grid: &Grid,
    path: &str,
    access: &tokio::sync::OnceCell<Option<crate::release::SecureAccess>>,
) -> Result<(), Error> {
    let mdm = need_mdm(grid)?;
    let removal = crate::release::delete_and_release(mdm, path, None, async {
        access
            .get_or_init(|| async {
                let (Some(url), Some(trust), Some(cred)) =
                    (&grid.lbone, &grid.trust, &grid.credential)
                else {
                    return None;
                };
                let q = crate::depots::DepotQuery::default();
                let offer = crate::depots::query_offer(url, trust, cred, &q)
                    .await
                    .ok()?;
                crate::release::SecureAccess::from_offer(&offer, trust, cred).ok()
            })
            .await
            .clone()
    })
    .await?;
    if removal.all_freed() {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "{path}: deleted, but some of its allocations were not freed (they expire at the end of their duration)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: Mode, delete: bool) -> TreeOptions {
        TreeOptions {
            mode,
            recursive: true,
            jobs: 1,
            checksum: false,
            delete,
            dry_run: true,
            settings: UploadSettings {
                block_size: 1 << 20,
                redundancy: crate::transfer::Redundancy::Copies(1),
                threads: 1,
                security: exnode::Security::Full,
                encrypt: true,
                placement: Default::default(),
                filename: None,
            },
            threads: 1,
            cancel: CancellationToken::new(),
            progress: None,
            on_file: None,
        }
    }

    fn file(size: u64, mtime: i64) -> Node {
        Node::File {
            size,
            mtime: Some(mtime),
            id: None,
        }
    }

    fn ops(p: &Plan) -> Vec<(Op, &str)> {
        p.actions.iter().map(|a| (a.op, a.path.as_str())).collect()
    }

    #[test]
    fn sync_skips_same_size_and_mtime_and_deletes_children_first() {
        let have: Listing = [
            ("".into(), Node::Dir),
            ("a".into(), Node::Dir),
            ("a/x".into(), file(3, 10)),
            ("a/y".into(), file(3, 10)),
            ("b".into(), file(5, 10)),
        ]
        .into();
        let there: Listing = [
            ("".into(), Node::Dir),
            ("a".into(), Node::Dir),
            ("a/x".into(), file(3, 10)),
            ("a/y".into(), file(3, 11)),
            ("old".into(), Node::Dir),
            ("old/z".into(), file(1, 1)),
        ]
        .into();
        let p = plan(&have, &there, &opts(Mode::Sync, true));
        assert_eq!(
            ops(&p),
            [
                (Op::Skip, "a/x"),
                (Op::Copy, "a/y"),
                (Op::Copy, "b"),
                (Op::Delete, "old/z"),
                (Op::Rmdir, "old"),
            ]
        );
        // cp copies everything and deletes nothing.
        let p = plan(&have, &there, &opts(Mode::Copy, true));
        assert_eq!(
            ops(&p),
            [(Op::Copy, "a/x"), (Op::Copy, "a/y"), (Op::Copy, "b")]
        );
    }

    #[test]
    fn kinds_in_the_way_are_conflicts_unless_deleted() {
        let have: Listing = [
            ("".into(), Node::Dir),
            ("d".into(), Node::Dir),
            ("d/f".into(), file(1, 1)),
        ]
        .into();
        let there: Listing = [("".into(), Node::Dir), ("d".into(), file(1, 1))].into();
        let p = plan(&have, &there, &opts(Mode::Sync, false));
        assert!(p.actions.is_empty(), "{:?}", ops(&p));
        assert_eq!(p.conflicts.len(), 1);
        let p = plan(&have, &there, &opts(Mode::Sync, true));
        assert!(p.conflicts.is_empty());
        assert_eq!(
            ops(&p),
            [(Op::Delete, "d"), (Op::Mkdir, "d"), (Op::Copy, "d/f")]
        );
    }
}
