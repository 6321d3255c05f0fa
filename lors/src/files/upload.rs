//! Uploads: a file (or stdin) to depots, its exNode registered as a new
//! version at the metadata manager (with the data key wrapped for its
//! recipients) or written to an `--xnd` file. The version is registered
//! only after every block is stored; if registering fails the allocations
//! are released. With a journal (`--resume`) a failed upload keeps the
//! blocks it stored and the same call continues after them. An upload
//! given a cancellation token ([`UploadControl`]) stops when it is
//! cancelled and cleans up the same way (Ctrl-C in `lors upload`). Every
//! allocation is written down as it is made in a journal of allocations
//! in flight ([`super::inflight`]), so that `lors cleanup` can release
//! what a killed upload left. Before any data moves, an upload of more
//! than one block checks its destination and the caller's quotas at the
//! depots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use exnode::{Exnode, Security};
use metadata_api::files::EntryKind;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::inflight::{self, InFlight};
use super::journal::{self, Journal, UploadBlock, UploadHeader};
use super::{
    key_sidecar, need_key, need_mdm, note_not_freed, placed, reliability, write_atomic,
    write_private, Grid, Placement,
};
use crate::credentials::Error;
use crate::crypto::{self, DataKey, WrapContext};
use crate::transfer::maintain;
use crate::transfer::{self, Pool, Progress, Redundancy, Target, TransferError, UploadOptions};
use ibp_service::units::{format_secs, format_size};

/// Upload settings.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub block_size: u64,
    pub redundancy: Redundancy,
    pub threads: usize,
    pub security: Security,
    pub encrypt: bool,
    pub placement: Placement,
    pub filename: Option<String>,
}

/// Where an upload's exNode goes.
#[derive(Debug, Clone)]
pub enum Dest {
    /// A path in the metadata manager (`/VO/dir/name`).
    Path(String),
    /// A local exNode file (with `F.key` beside it if encrypted).
    Xnd(PathBuf),
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadSummary {
    pub dest: String,
    pub file: Uuid,
    pub version: u64,
    pub size: u64,
    pub stored: u64,
    pub mappings: usize,
    pub redundancy: String,
    pub security: &'static str,
    pub encrypted: bool,
    pub seconds: f64,
    pub mib_per_s: f64,
}

/// How an upload run is controlled from outside: its journal (for
/// `--resume`) and a token that stops it.
#[derive(Debug, Default)]
pub struct UploadControl {
    /// Journal the upload here: a failed or interrupted upload keeps the
    /// blocks it stored, and the same call continues after them.
    pub journal: Option<PathBuf>,
    /// Cancelled, the upload stops between blocks (abandoning the stores in
    /// flight) and releases what it allocated (journaled: what is not in
    /// the journal); it then fails and [`UploadControl::interrupted`] says
    /// what it released.
    pub cancel: CancellationToken,
    /// The source file's modification time (Unix seconds), recorded in the
    /// exNode as the top-level integer metadata `mtime` (the metadata
    /// manager shows it as the entry's `mtime`; `lors cp -r` and `lors
    /// sync` compare it and set it on downloaded copies).
    pub mtime: Option<i64>,
    /// Store only over this version of the destination (0: the file must
    /// not exist yet): another current version refuses the upload with
    /// [`Error::Conflict`] before any data moves, and the put is based on
    /// it, so a version registered meanwhile makes the metadata manager
    /// refuse it too (409). `None`: over whatever version is current.
    pub base_version: Option<u64>,
    /// What the caller believes the destination's file UUID and current
    /// version are (from a listing): a one-block upload then asks the
    /// metadata manager nothing before its put, and if another version is
    /// current by then, asks and stores its block again, as when it guessed
    /// a new file (see [`upload_controlled`]). `None`: guessed new.
    pub hint: Option<(Uuid, u64)>,
    interrupted: Mutex<Option<Interrupted>>,
}

/// What an interrupted upload did with the allocations it had made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interrupted {
    /// Allocations released (DECR, confirmed).
    pub released: usize,
    /// Allocations that could not be freed, `depot: reason` each (they
    /// expire at the end of their duration).
    pub not_freed: Vec<String>,
    /// Journaled (`--resume`): blocks stored and kept for the next run.
    pub kept_blocks: usize,
}

impl UploadControl {
    /// Journaled in `journal` (if any), with a token never cancelled.
    pub fn journaled(journal: Option<&Path>) -> UploadControl {
        UploadControl {
            journal: journal.map(Path::to_path_buf),
            ..Default::default()
        }
    }

    /// The upload was stopped by [`UploadControl::cancel`]: what it
    /// released and kept. `None` if it was not (it succeeded, or failed
    /// for another reason).
    pub fn interrupted(&self) -> Option<Interrupted> {
        self.interrupted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note(&self, e: &TransferError) {
        let found = match e {
            TransferError::Interrupted {
                released,
                kept_blocks,
            } => Some(Interrupted {
                released: *released,
                not_freed: Vec::new(),
                kept_blocks: *kept_blocks,
            }),
            TransferError::NotFreed { source, not_freed } => match **source {
                TransferError::Interrupted {
                    released,
                    kept_blocks,
                } => Some(Interrupted {
                    released,
                    not_freed: not_freed.clone(),
                    kept_blocks,
                }),
                _ => None,
            },
            _ => None,
        };
        if found.is_some() {
            *self.interrupted.lock().unwrap_or_else(|p| p.into_inner()) = found;
        }
    }
}

/// A fresh key id: names this version's wrapped keys.
fn new_key_id() -> String {
    format!("k-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Uploads `src` (`size` bytes if known, for placement) to `dest`.
pub async fn upload<R>(
    grid: &Grid,
    src: R,
    size_hint: Option<u64>,
    dest: &Dest,
    s: &UploadSettings,
    progress: Option<Progress>,
) -> Result<UploadSummary, Error>
where
    R: transfer::Input,
{
    upload_with(grid, src, size_hint, dest, s, progress, None).await
}

/// What an upload writes: the file, the version it builds on and the data
/// key; resumed from a journal, also the blocks already stored; journaled,
/// the hook that records each stored block.
struct Plan {
    file: Uuid,
    base_version: u64,
    key_id: String,
    key: Option<Arc<DataKey>>,
    done: Option<Arc<transfer::DoneBlocks>>,
    on_block: Option<transfer::BlockHook>,
}

/// [`upload`], optionally journaled in `journal` for `--resume`: an
/// upload that fails keeps the blocks it stored (listed in the journal)
/// and the same call with the same journal continues after them.
pub async fn upload_with<R>(
    grid: &Grid,
    src: R,
    size_hint: Option<u64>,
    dest: &Dest,
    s: &UploadSettings,
    progress: Option<Progress>,
    journal: Option<&Path>,
) -> Result<UploadSummary, Error>
where
    R: transfer::Input,
{
    let ctl = UploadControl::journaled(journal);
    upload_controlled(grid, src, size_hint, dest, s, progress, &ctl).await
}

/// [`upload_with`], journaled in `ctl.journal` and stopped when
/// `ctl.cancel` is cancelled (then [`UploadControl::interrupted`] says what
/// it released or kept).
///
/// The metadata manager is asked once per small file: an upload of one
/// block to a path, not journaled and over whatever version is current,
/// reads its bytes first and is put as a new file (version 1, a fresh
/// UUID), or over what [`UploadControl::hint`] says, without asking
/// anything before. Only if that was wrong (the put answers conflict) is
/// its block released, the current version asked for, and the same bytes
/// stored again under the file's UUID (to which the depots bind them).
pub async fn upload_controlled<R>(
    grid: &Grid,
    src: R,
    size_hint: Option<u64>,
    dest: &Dest,
    s: &UploadSettings,
    progress: Option<Progress>,
    ctl: &UploadControl,
) -> Result<UploadSummary, Error>
where
    R: transfer::Input,
{
    let one_block = size_hint.is_some_and(|n| n <= s.block_size);
    let guess = matches!(dest, Dest::Path(_))
        && one_block
        && ctl.journal.is_none()
        && ctl.base_version.is_none();
    if !guess {
        return upload_known(grid, src, size_hint, dest, s, progress, ctl, None).await;
    }
    let mut src = src;
    let hint = size_hint.unwrap_or(0);
    let buf = Vec::with_capacity(usize::try_from(hint.saturating_add(1)).unwrap_or(0));
    let max = usize::try_from(s.block_size.saturating_add(1)).unwrap_or(usize::MAX);
    let (mut buf, r) = src.read_block(buf, max).await;
    let n = r.map_err(|e| Error::Local(format!("cannot read the source: {e}")))?;
    // The block is the last n bytes (a direct read may put some before).
    let lead = buf.len().saturating_sub(n);
    if lead > 0 {
        buf.drain(..lead);
    }
    if buf.len() as u64 > s.block_size {
        // Longer than its size said: an ordinary upload of it all.
        let all = Prefixed {
            head: buf,
            at: 0,
            rest: src,
        };
        return upload_known(grid, all, size_hint, dest, s, progress, ctl, None).await;
    }
    let n = Some(buf.len() as u64);
    let guess = Some(ctl.hint.unwrap_or_else(|| (Uuid::new_v4(), 0)));
    match upload_known(grid, &buf[..], n, dest, s, progress.clone(), ctl, guess).await {
        Err(Error::Conflict(why)) if !ctl.cancel.is_cancelled() => {
            tracing::debug!(dest = %dest_text(dest), %why, "exists: stored again under its UUID");
        }
        r => return r,
    }
    upload_known(grid, &buf[..], n, dest, s, progress, ctl, None).await
}

/// Bytes already read (`head` from `at`), then the rest of the input.
struct Prefixed<R> {
    head: Vec<u8>,
    at: usize,
    rest: R,
}

impl<R: transfer::Input> transfer::Input for Prefixed<R> {
    async fn read_block(
        &mut self,
        mut buf: Vec<u8>,
        max: usize,
    ) -> (Vec<u8>, std::io::Result<usize>) {
        let take = (self.head.len() - self.at).min(max);
        if take == 0 {
            return self.rest.read_block(buf, max).await;
        }
        buf.clear();
        buf.extend_from_slice(&self.head[self.at..self.at + take]);
        self.at += take;
        if take == max {
            return (buf, Ok(take));
        }
        // Once, at the head's end: the rest of this block read apart and
        // appended (it is the last bytes of what `rest` gives back).
        let (more, r) = self.rest.read_block(Vec::new(), max - take).await;
        match r {
            Ok(n) => {
                buf.extend_from_slice(&more[more.len() - n..]);
                (buf, Ok(take + n))
            }
            Err(e) => (buf, Err(e)),
        }
    }
}

/// [`upload_controlled`] with the file and base version `known` (else
/// asked, or given in `ctl`).
#[allow(clippy::too_many_arguments)]
async fn upload_known<R>(
    grid: &Grid,
    src: R,
    size_hint: Option<u64>,
    dest: &Dest,
    s: &UploadSettings,
    progress: Option<Progress>,
    ctl: &UploadControl,
    known: Option<(Uuid, u64)>,
) -> Result<UploadSummary, Error>
where
    R: transfer::Input,
{
    let journal = ctl.journal.as_deref();
    let started = Instant::now();
    // A path's VO is the VO the upload acts in (a multi-VO proxy).
    let acting;
    let grid = match dest {
        Dest::Path(p) => {
            acting = grid.in_vo_of(p);
            acting.as_ref()
        }
        Dest::Xnd(_) => grid,
    };
    refuse_secure_xnd(dest, s)?;
    // A one-block upload that must create the file moves at most that
    // block before the put says whether the path is free; a longer one
    // asks first (nothing moves if not).
    let one_block = size_hint.is_some_and(|n| n <= s.block_size);
    let known = known.or(match ctl.base_version {
        Some(0) if one_block && matches!(dest, Dest::Path(_)) => Some((Uuid::new_v4(), 0)),
        _ => None,
    });
    let (file, base_version) = match known {
        Some(k) => k,
        None => file_and_version(grid, dest, size_hint, s.block_size).await?,
    };
    if let Some(want) = ctl.base_version.filter(|w| *w != base_version) {
        return Err(Error::Conflict(format!(
            "{}: its current version is {base_version}, not {want} as when it was opened \
             (another writer stored a version meanwhile); nothing was stored",
            dest_text(dest)
        )));
    }
    let mut plan = Plan {
        file,
        base_version,
        key_id: new_key_id(),
        key: new_data_key(grid, s)?,
        done: None,
        on_block: None,
    };
    if let Some(jpath) = journal {
        plan = journaled(grid, jpath, dest, size_hint, s, plan)?;
    }
    let (targets, pool) = depots_for(grid, s, size_hint).await?;
    // Like the destination check, for more than one block: a one-block
    // upload that does not fit is refused by its one ALLOCATE.
    if let (Some(n), None) = (size_hint.filter(|n| *n > s.block_size), &plan.done) {
        check_quota(&targets, &pool, s, n).await?;
    }
    let inflight = start_inflight(dest, journal);
    let opts = UploadOptions {
        file: plan.file,
        version: plan.base_version + 1,
        filename: s.filename.clone(),
        block_size: s.block_size,
        redundancy: s.redundancy,
        threads: s.threads,
        duration: i64::try_from(s.placement.duration).unwrap_or(i64::MAX),
        reliability: reliability(s.placement.reliability),
        key: plan.key.clone(),
        key_id: plan.key_id.clone(),
        done: plan.done,
        on_block: plan.on_block,
        cancel: ctl.cancel.clone(),
    };
    let hook = inflight.as_ref().map(alloc_hook);
    let x = match transfer::upload_tracked(src, &targets, pool.clone(), &opts, progress, hook).await
    {
        Ok(x) => with_mtime(x, ctl.mtime),
        Err(e) => {
            ctl.note(&e);
            let left = matches!(e, TransferError::NotFreed { .. });
            let e = Error::from(e);
            return Err(end_inflight(inflight, left, journal, e));
        }
    };
    let xml = exnode::to_xml(&x);
    let key = plan.key.as_deref();
    let registered = register(grid, dest, &x, &xml, key, &plan.key_id, plan.base_version).await;
    if let Some(j) = journal {
        // Registered, or released below: nothing left to resume.
        let _ = std::fs::remove_file(j);
    }
    let (dest_text, version) = match registered {
        Ok(v) => v,
        Err(e) => {
            let outcomes = maintain::release_mappings(&pool, &x.mappings).await;
            let left = outcomes.iter().any(|o| !o.ok);
            let e = note_not_freed(e, &outcomes);
            return Err(end_inflight(inflight, left, None, e));
        }
    };
    if let Some(j) = inflight {
        release_strays(&j, &x, &pool).await;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(UploadSummary {
        dest: dest_text,
        file: plan.file,
        version,
        size: x.size,
        stored: x.stored_bytes(),
        mappings: x.mappings.len(),
        redundancy: s.redundancy.to_string(),
        security: s.security.name(),
        encrypted: key.is_some(),
        seconds: secs,
        mib_per_s: x.size as f64 / (1 << 20) as f64 / secs.max(1e-9),
    })
}

/// `x` recording the source's modification time (`mtime`), if known.
fn with_mtime(mut x: Exnode, mtime: Option<i64>) -> Exnode {
    if let Some(t) = mtime {
        x.metadata.push(exnode::Metadata {
            name: "mtime".into(),
            value: exnode::Value::Integer(t),
        });
    }
    x
}

/// The journal of this upload's allocations in flight (see
/// [`super::inflight`]), continuing the `--resume` journal's if any; none
/// (with a warning) if it cannot be made: the upload goes on without.
fn start_inflight(dest: &Dest, resume: Option<&Path>) -> Option<Arc<InFlight>> {
    let Some(dir) = inflight::state_dir() else {
        tracing::warn!("no $HOME or $XDG_STATE_HOME: this upload's allocations are not journaled (lors cleanup cannot find them if it is killed)");
        return None;
    };
    match InFlight::start(&dir, &dest_text(dest), resume) {
        Ok(j) => Some(Arc::new(j)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot journal this upload's allocations (lors cleanup cannot find them if it is killed)");
            None
        }
    }
}

/// Records each allocation in the journal as it is made.
fn alloc_hook(j: &Arc<InFlight>) -> transfer::AllocHook {
    let j = j.clone();
    Arc::new(move |depot: &str, level: Security, manage: &str| j.record(depot, level, manage))
}

/// The upload is registered: its journal of allocations goes. It may
/// list allocations the registered exNode does not use (a piece whose
/// store failed and went to another depot; for a resumed upload, the
/// pieces of blocks a killed run had not finished): they are released
/// now, and those that cannot be stay in the journal for `lors cleanup`.
async fn release_strays(j: &InFlight, x: &Exnode, pool: &Arc<Pool>) {
    let used: std::collections::HashSet<&str> = x
        .mappings
        .iter()
        .filter_map(|m| m.manage.as_deref())
        .collect();
    let mut strays = j.recorded();
    strays.retain(|m| !used.contains(m.manage.as_str()));
    if strays.is_empty() {
        return j.finish();
    }
    let outcomes = transfer::upload::release_each(pool, &strays).await;
    let left: Vec<_> = strays
        .into_iter()
        .zip(outcomes)
        .filter_map(|(m, o)| o.map(|_| m))
        .collect();
    j.keep_only(&left);
}

/// A failed upload's journal of allocations: removed if nothing of the
/// upload is left on the depots; kept if its clean-up `left` some (then
/// `e` says `lors cleanup` retries) or its `--resume` journal keeps
/// blocks for the next run.
fn end_inflight(j: Option<Arc<InFlight>>, left: bool, resume: Option<&Path>, e: Error) -> Error {
    let Some(j) = j else {
        return e;
    };
    if left {
        return e.with_note("`lors cleanup` tries to free them again");
    }
    if !resume.is_some_and(Path::exists) {
        j.finish();
    }
    e
}

/// Secure depots demand a metadata-manager ticket to read: an `--xnd`
/// upload to them could not be read back.
fn refuse_secure_xnd(dest: &Dest, s: &UploadSettings) -> Result<(), Error> {
    if s.security != Security::Legacy {
        if let Dest::Xnd(_) = dest {
            return Err(Error::Usage(
                "--xnd with secure depots: they demand a metadata-manager ticket to read, \
                 so the file could not be read back; use --security legacy or a metadata-manager path"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The file's identity and the version the upload builds on: the current
/// version's at the metadata manager, or a new file (version 0). An upload
/// of more than one block (or of unknown size) has its destination checked
/// first, before any depot is contacted (see [`check_dest`]); a one-block
/// upload skips the check's one or two requests (small files are bound by
/// the metadata manager's requests per file) and, refused by the put, has
/// moved and releases at most one block.
async fn file_and_version(
    grid: &Grid,
    dest: &Dest,
    size_hint: Option<u64>,
    block_size: u64,
) -> Result<(Uuid, u64), Error> {
    if size_hint.is_none_or(|n| n > block_size) {
        check_dest(grid, dest).await?;
    }
    match dest {
        Dest::Path(p) => {
            let mdm = need_mdm(grid)?;
            match mdm.get(p, None).await {
                Ok(fv) => Ok((
                    fv.exnode.file.ok_or_else(|| {
                        Error::Data(format!("{p}: the current exNode has no file UUID"))
                    })?,
                    fv.version,
                )),
                Err(Error::NotFound(_)) => Ok((Uuid::new_v4(), 0)),
                Err(e) => Err(e),
            }
        }
        Dest::Xnd(_) => Ok((Uuid::new_v4(), 0)),
    }
}

/// Refuses a destination the upload could not be registered at, before
/// any data moves: a directory (usage, exit 2), a missing parent
/// directory (not found, 7), or no write right on the existing file or
/// on the parent of a new one (refused, 3). At the metadata manager this
/// is `stat` of the path, then of its parent; a `stat` the caller may not
/// make (no read right there) leaves the decision to the put itself.
/// An `--xnd` file is checked the same way on the local file system.
async fn check_dest(grid: &Grid, dest: &Dest) -> Result<(), Error> {
    let p = match dest {
        Dest::Path(p) => p,
        Dest::Xnd(f) => return check_xnd_dest(f),
    };
    let mdm = need_mdm(grid)?;
    let no_write = |path: &str, rights: Option<&str>, why: &str| {
        Error::Forbidden(format!(
            "no write right on {path} (you have {}): {why}",
            rights.unwrap_or("-")
        ))
    };
    match mdm.stat(p).await {
        Ok(e) if e.kind == EntryKind::Dir => Err(Error::Usage(format!(
            "{p} is a directory: upload to a file path in it, e.g. {}/NAME",
            p.trim_end_matches('/')
        ))),
        Ok(e) => match e.rights.as_deref() {
            Some(r) if !r.contains('w') => Err(no_write(p, Some(r), "a new version needs it")),
            _ => Ok(()),
        },
        Err(Error::NotFound(_)) => {
            let Some((parent, _)) = p.trim_end_matches('/').rsplit_once('/') else {
                return Ok(());
            };
            if parent.is_empty() {
                return Ok(());
            }
            match mdm.stat(parent).await {
                Ok(e) if e.kind != EntryKind::Dir => Err(Error::Usage(format!(
                    "{parent} is a file, not a directory: {p} cannot be created in it"
                ))),
                Ok(e) => match e.rights.as_deref() {
                    Some(r) if !r.contains('w') => {
                        Err(no_write(parent, Some(r), &format!("creating {p} needs it")))
                    }
                    _ => Ok(()),
                },
                Err(Error::NotFound(_)) => Err(Error::NotFound(format!(
                    "{parent}: no such directory (create it first: lors mkdir -p {parent})"
                ))),
                Err(Error::Forbidden(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(Error::Forbidden(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// An `--xnd` destination: not a directory, in an existing directory the
/// user may write in.
fn check_xnd_dest(f: &Path) -> Result<(), Error> {
    if f.is_dir() {
        return Err(Error::Usage(format!(
            "{} is a directory: give the exNode file's path",
            f.display()
        )));
    }
    let parent = match f.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if !m.is_dir() => Err(Error::Usage(format!(
            "{} is not a directory: {} cannot be written in it",
            parent.display(),
            f.display()
        ))),
        Ok(_) if !writable(parent) => Err(Error::Forbidden(format!(
            "no write right on {}: {} cannot be written there",
            parent.display(),
            f.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(format!(
            "{}: no such directory",
            parent.display()
        ))),
        Err(e) => Err(Error::Local(format!("{}: {e}", parent.display()))),
    }
}

/// Whether the user may create files in directory `d`: a probe file made
/// and removed at once (which accounts for ACLs and read-only file
/// systems alike).
fn writable(d: &Path) -> bool {
    tempfile::Builder::new()
        .prefix(".lors-write-check")
        .tempfile_in(d)
        .is_ok()
}

/// A new data key if the upload is encrypted (which needs the user's key
/// pair to wrap it).
fn new_data_key(grid: &Grid, s: &UploadSettings) -> Result<Option<Arc<DataKey>>, Error> {
    if !s.encrypt {
        return Ok(None);
    }
    need_key(grid)?;
    DataKey::generate()
        .map(|k| Some(Arc::new(k)))
        .map_err(|e| Error::Local(e.to_string()))
}

fn journal_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local(format!("upload journal {}: {e}", path.display()))
}

/// `plan` journaled in `jpath`: continued from the journal there if it is
/// of this upload (its file, base version, key id, data key and stored
/// blocks), else started afresh with a new journal; each stored block is
/// then added to it.
fn journaled(
    grid: &Grid,
    jpath: &Path,
    dest: &Dest,
    size_hint: Option<u64>,
    s: &UploadSettings,
    mut plan: Plan,
) -> Result<Plan, Error> {
    let header = UploadHeader {
        v: 1,
        dest: dest_text(dest),
        size: size_hint,
        file: plan.file,
        base_version: plan.base_version,
        key_id: plan.key_id.clone(),
        wrapped: None,
        block_size: s.block_size,
        redundancy: s.redundancy.to_string(),
        security: s.security.name().to_owned(),
    };
    let j = if jpath.exists() {
        let (old, blocks) = read_upload_journal(jpath)?;
        if !old.continues(&header) {
            return Err(Error::Usage(format!(
                "the upload journal {} is of another upload (destination, size, settings or base version differ); remove it to start afresh",
                jpath.display()
            )));
        }
        plan.file = old.file;
        plan.base_version = old.base_version;
        plan.key_id = old.key_id.clone();
        plan.key = journal_key(grid, jpath, &old, s.encrypt)?;
        plan.done = Some(Arc::new(blocks));
        Journal::append(jpath).map_err(|e| journal_err(jpath, e))?
    } else {
        let mut h = header;
        if let Some(k) = &plan.key {
            let me = need_key(grid)?;
            let ctx = WrapContext {
                file: plan.file,
                key_id: &plan.key_id,
            };
            h.wrapped =
                Some(crypto::wrap(k, me.public(), &ctx).map_err(|e| Error::Local(e.to_string()))?);
        }
        Journal::create(jpath, &h).map_err(|e| journal_err(jpath, e))?
    };
    let file = plan.file;
    plan.on_block = Some(Arc::new(
        move |block, mappings: &[exnode::Mapping], group: Option<&exnode::EcGroup>| {
            let x = Exnode {
                file: Some(file),
                mappings: mappings.to_vec(),
                ec_groups: group.cloned().into_iter().collect(),
                ..Default::default()
            };
            j.add(&UploadBlock {
                block,
                xml: exnode::to_xml(&x),
            });
        },
    ));
    Ok(plan)
}

/// The data key of a journaled upload, unwrapped with the user's key; the
/// journal must have been made with encryption iff this upload encrypts.
fn journal_key(
    grid: &Grid,
    jpath: &Path,
    old: &UploadHeader,
    encrypt: bool,
) -> Result<Option<Arc<DataKey>>, Error> {
    match (&old.wrapped, encrypt) {
        (Some(w), true) => {
            let me = need_key(grid)?;
            let ctx = WrapContext {
                file: old.file,
                key_id: &old.key_id,
            };
            let key = crypto::unwrap(w, me, &ctx)
                .map_err(|e| journal_err(jpath, format!("cannot unwrap its data key: {e}")))?;
            Ok(Some(Arc::new(key)))
        }
        (None, false) => Ok(None),
        _ => Err(Error::Usage(format!(
            "the upload journal {} was made {} encryption; remove it to start afresh",
            jpath.display(),
            if old.wrapped.is_some() {
                "with"
            } else {
                "without"
            }
        ))),
    }
}

/// Reads an upload journal: its header and the blocks stored.
fn read_upload_journal(path: &Path) -> Result<(UploadHeader, transfer::DoneBlocks), Error> {
    let (header, blocks) = journal::read::<UploadBlock>(path).map_err(|e| journal_err(path, e))?;
    let header: UploadHeader =
        serde_json::from_str(&header).map_err(|e| journal_err(path, format!("bad header: {e}")))?;
    let mut done = transfer::DoneBlocks::default();
    for b in blocks {
        // A block whose exNode does not parse is sent again (its
        // allocations expire on their own).
        let Ok(x) = exnode::from_xml(b.xml.as_bytes()) else {
            continue;
        };
        if done.blocks.insert(b.block) {
            done.mappings.extend(x.mappings);
            done.groups.extend(x.ec_groups);
        }
    }
    Ok((header, done))
}

fn dest_text(dest: &Dest) -> String {
    match dest {
        Dest::Path(p) => p.clone(),
        Dest::Xnd(f) => f.display().to_string(),
    }
}

/// Depots with room for the upload's pieces (and a pool of connections to
/// them); an error saying why when there are fewer than its redundancy
/// needs.
async fn depots_for(
    grid: &Grid,
    s: &UploadSettings,
    size_hint: Option<u64>,
) -> Result<(Vec<Target>, Arc<Pool>), Error> {
    let piece = match s.redundancy {
        Redundancy::Copies(_) => s.block_size,
        Redundancy::Ec { k, .. } => transfer::codec::shard_size(s.block_size, k as usize),
    };
    let piece = size_hint.map_or(piece, |n| piece.min(n.max(1)));
    let (targets, pool) = placed(grid, s.security, &s.placement, piece).await?;
    if targets.len() >= s.redundancy.pieces() {
        return Ok((targets, pool));
    }
    let left_out: Vec<&str> = s
        .placement
        .depots
        .iter()
        .filter(|d| !targets.iter().any(|t| &t.depot == *d))
        .map(String::as_str)
        .collect();
    if s.security != Security::Legacy {
        if let Some(e) = too_long(grid, s, piece).await {
            return Err(e);
        }
        if let Some(e) = too_big(grid, s, piece).await {
            return Err(e);
        }
    }
    let why = if s.security == Security::Legacy {
        String::new()
    } else {
        format!(
            ": the L-Bone offers only depots that are up, serve the VO and have room \
             (free space) for a {piece}-byte piece for the duration asked; full depots \
             are left out{}",
            if left_out.is_empty() {
                String::new()
            } else {
                format!(" (not offered: {})", left_out.join(", "))
            }
        )
    };
    Err(Error::Unavailable(format!(
        "{} needs {} depots with room; {} available{why}",
        s.redundancy,
        s.redundancy.pieces(),
        targets.len(),
    )))
}

/// When the L-Bone offered too few depots for the duration asked but
/// offers enough for a shorter one: the error saying what the depots
/// allow and which option to pass. `None` when the duration is not why
/// (or the L-Bone cannot say).
async fn too_long(grid: &Grid, s: &UploadSettings, piece: u64) -> Option<Error> {
    let p = &s.placement;
    if p.duration == 0 {
        return None;
    }
    let offer = super::offer(grid, piece, 0, p.near.clone(), p.reliability)
        .await
        .ok()?;
    let usable: Vec<_> = offer
        .depots
        .iter()
        .filter(|d| d.tls_port.is_some())
        .filter(|d| {
            p.depots.is_empty()
                || p.depots.iter().any(|w| {
                    *w == d.address || *w == d.name || *w == format!("{}:{}", d.host, d.port)
                })
        })
        .collect();
    if usable.len() < s.redundancy.pieces() {
        return None;
    }
    // The longest duration enough depots allow: the pieces-th largest.
    let mut maxima: Vec<i64> = usable
        .iter()
        .map(|d| {
            if d.max_duration < 0 {
                i64::MAX
            } else {
                d.max_duration
            }
        })
        .collect();
    maxima.sort_unstable_by(|a, b| b.cmp(a));
    let allowed = maxima[s.redundancy.pieces() - 1];
    if allowed == i64::MAX || u64::try_from(allowed).is_ok_and(|a| a >= p.duration) {
        return None;
    }
    Some(Error::Usage(format!(
        "no depot grants allocations of {} ({} s) for {}: the longest the depots allow is {} \
         ({} s); pass --duration {} or less (then `lors refresh` extends the file's life)",
        format_secs(i64::try_from(p.duration).unwrap_or(i64::MAX)),
        p.duration,
        s.redundancy,
        format_secs(allowed),
        allowed,
        duration_option(allowed),
    )))
}

/// When the L-Bone offered too few depots with room for pieces this large
/// but enough for smaller ones: the error saying the largest piece enough
/// depots take and the `--block-size` to pass. `None` when the size is not
/// why.
async fn too_big(grid: &Grid, s: &UploadSettings, piece: u64) -> Option<Error> {
    let p = &s.placement;
    let offer = super::offer(grid, 1, p.duration, p.near.clone(), p.reliability)
        .await
        .ok()?;
    let pieces = s.redundancy.pieces();
    let mut room: Vec<u64> = offer
        .depots
        .iter()
        .filter(|d| d.tls_port.is_some())
        .filter(|d| {
            p.depots.is_empty()
                || p.depots.iter().any(|w| {
                    *w == d.address || *w == d.name || *w == format!("{}:{}", d.host, d.port)
                })
        })
        .map(|d| d.free)
        .collect();
    if room.len() < pieces {
        return None;
    }
    // The largest piece enough depots have room for: the pieces-th largest.
    room.sort_unstable_by(|a, b| b.cmp(a));
    let largest = room[pieces - 1];
    if largest >= piece || largest == 0 {
        return None;
    }
    let block = match s.redundancy {
        Redundancy::Copies(_) => largest,
        Redundancy::Ec { k, .. } => largest.saturating_mul(u64::from(k)),
    };
    let mib = 1u64 << 20;
    let suggest = if block >= mib {
        format!("{}MiB", block / mib)
    } else {
        format!("{}KiB", (block / 1024).max(1))
    };
    Some(Error::Usage(format!(
        "too few depots have room for pieces of {} ({} needs {pieces}): the largest piece \
         enough depots take is {}; pass --block-size {suggest} or less",
        ibp_service::units::format_size(piece),
        s.redundancy,
        ibp_service::units::format_size(largest),
    )))
}

/// A duration as `--duration` takes it: whole days, hours or seconds.
fn duration_option(secs: i64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => s.to_string(),
    }
}

/// Bytes an upload of `size` bytes reserves at the depots in all, and at
/// most on any one depot (which holds at most one piece of each block).
fn needed_bytes(size: u64, s: &UploadSettings) -> (u64, u64) {
    let bs = s.block_size.max(1);
    let (full, last) = (size / bs, size % bs);
    match s.redundancy {
        Redundancy::Copies(n) => (size.saturating_mul(u64::from(n)), size),
        Redundancy::Ec { k, m } => {
            let shard = |len: u64| transfer::codec::shard_size(len, k as usize);
            let one = full.saturating_mul(shard(bs)).saturating_add(if last > 0 {
                shard(last)
            } else {
                0
            });
            (one.saturating_mul(u64::from(k) + u64::from(m)), one)
        }
    }
}

/// Refuses, before any data moves, an upload whose bytes cannot fit in
/// the caller's quotas at the depots it would use: each secure depot is
/// asked (QUOTA, see docs/protocol.md) what the caller may still
/// allocate there; a depot that cannot say counts as unlimited. The
/// error says how much is needed and how much the quotas allow.
async fn check_quota(
    targets: &[Target],
    pool: &Arc<Pool>,
    s: &UploadSettings,
    size: u64,
) -> Result<(), Error> {
    let secure: Vec<Target> = targets
        .iter()
        .filter(|t| t.security != Security::Legacy)
        .cloned()
        .collect();
    if secure.is_empty() || size == 0 {
        return Ok(());
    }
    let (need, per_depot) = needed_bytes(size, s);
    let mut set = tokio::task::JoinSet::new();
    for t in secure {
        let pool = pool.clone();
        set.spawn(async move {
            let ask = async {
                let mut c = pool.get(&t.depot, t.security).await.ok()?;
                let r = c.quota().await;
                pool.finish(&t.depot, t.security, c, r).ok()
            };
            let q = tokio::time::timeout(pool.timeout(), ask)
                .await
                .ok()
                .flatten();
            (t.depot, q)
        });
    }
    let mut allow = 0u64;
    let mut limited = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok((depot, q)) = r else {
            return Ok(());
        };
        match q.and_then(|q| q.remaining().map(|left| (q, left))) {
            Some((q, left)) => {
                allow = allow.saturating_add(left.min(per_depot));
                let user_left = q.user_limit.map(|l| l.saturating_sub(q.user_used));
                let limit = match (q.user_limit, q.vo_limit) {
                    (Some(u), _) if user_left == Some(left) => {
                        format!("your quota of {}", format_size(u))
                    }
                    (_, Some(v)) => format!("the VO's quota of {}", format_size(v)),
                    _ => "the quota".to_owned(),
                };
                limited.push(format!("{depot}: {} left of {limit}", format_size(left)));
            }
            None => allow = allow.saturating_add(per_depot),
        }
    }
    if allow >= need {
        return Ok(());
    }
    limited.sort();
    Err(Error::Forbidden(format!(
        "not enough quota for this upload: it needs {} ({} x {}), your quotas at the depots \
         allow {} ({}); nothing was stored. Free space with `lors rm` (and `lors cleanup`), \
         or ask for a larger quota",
        format_size(need),
        format_size(size),
        s.redundancy,
        format_size(allow),
        limited.join("; ")
    )))
}

/// Registers an uploaded exNode (and its wrapped keys).
async fn register(
    grid: &Grid,
    dest: &Dest,
    x: &Exnode,
    xml: &str,
    key: Option<&DataKey>,
    key_id: &str,
    base_version: u64,
) -> Result<(String, u64), Error> {
    match dest {
        Dest::Path(p) => {
            let mdm = need_mdm(grid)?;
            let wrapped = match (key, x.file) {
                (Some(k), Some(file)) => {
                    let me = need_key(grid)?;
                    let mut cached = grid.cache.recipients.lock().await;
                    let recipients = match &*cached {
                        Some((vo, r)) if *vo == grid.vo => r.clone(),
                        _ => {
                            let whoami = mdm.whoami_in(grid.vo.as_deref()).await?;
                            let r = crate::keys::upload_recipients(mdm, me, &whoami).await?;
                            *cached = Some((grid.vo.clone(), r.clone()));
                            r
                        }
                    };
                    drop(cached);
                    let ctx = WrapContext { file, key_id };
                    crate::keys::wrap_for(k, &ctx, &recipients)?
                }
                _ => Vec::new(),
            };
            let r = mdm.put_version(p, base_version, xml, &wrapped).await?;
            super::release_pruned(grid, &r).await;
            Ok((r.path, r.version))
        }
        Dest::Xnd(f) => {
            if let (Some(k), Some(file)) = (key, x.file) {
                let me = need_key(grid)?;
                let ctx = WrapContext { file, key_id };
                let w =
                    crypto::wrap(k, me.public(), &ctx).map_err(|e| Error::Local(e.to_string()))?;
                write_private(&key_sidecar(f), format!("{w}\n").as_bytes())?;
            }
            write_atomic(f, xml.as_bytes())?;
            Ok((f.display().to_string(), x.version))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::Input;

    #[tokio::test]
    async fn prefixed_gives_the_head_then_the_rest() {
        let mut p = Prefixed {
            head: b"abcde".to_vec(),
            at: 0,
            rest: &b"fghij"[..],
        };
        let (b, r) = p.read_block(Vec::new(), 3).await;
        assert_eq!((b.as_slice(), r.unwrap()), (&b"abc"[..], 3));
        let (b, r) = p.read_block(Vec::new(), 4).await;
        assert_eq!((b.as_slice(), r.unwrap()), (&b"defg"[..], 4));
        let (b, r) = p.read_block(Vec::new(), 10).await;
        assert_eq!((b.as_slice(), r.unwrap()), (&b"hij"[..], 3));
        let (b, r) = p.read_block(b"stale".to_vec(), 10).await;
        assert_eq!((b.len(), r.unwrap()), (0, 0));
        // A buffer holding an earlier block's bytes: only the new block.
        let mut p = Prefixed {
            head: b"ab".to_vec(),
            at: 0,
            rest: &b"cd"[..],
        };
        let (b, r) = p.read_block(b"stale bytes".to_vec(), 3).await;
        assert_eq!((b.as_slice(), r.unwrap()), (&b"abc"[..], 3));
        let (b, r) = p.read_block(b"stale bytes".to_vec(), 3).await;
        assert_eq!((b.as_slice(), r.unwrap()), (&b"d"[..], 1));
    }
}
