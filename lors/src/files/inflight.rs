//! Journals of allocations in flight, and `lors cleanup`, which releases
//! what a killed upload left behind.
//!
//! Every upload ([`super::upload_controlled`], so the CLI, liblors and
//! Python alike) keeps one journal file in the per-user state directory
//! (`$XDG_STATE_HOME/lors/inflight/`, else `~/.local/state/...`; the
//! directory 0700, the files 0600: they hold MANAGE capabilities). Its
//! first line is a header (destination, process, start time, the
//! `--resume` journal if any); then one line per allocation, written as
//! soon as the depot's ALLOCATE reply gives its MANAGE capability and
//! before any byte is stored into it. The process holds an exclusive lock
//! (`flock`) on the file for as long as the upload runs; the kernel drops
//! it when the process dies, however it dies.
//!
//! The journal is removed when the upload is registered, or when a failed
//! upload released everything it allocated. It stays when the process was
//! killed (SIGKILL, power loss, a second Ctrl-C), when a clean-up could not
//! free every allocation, and for `--resume` uploads until they complete
//! (a resumed run appends to the same journal). [`cleanup`] takes the
//! journals whose lock is free, releases their allocations and removes
//! them; a journal whose lock is held (its upload is running) is never
//! touched.
//!
//! Durability: each line is written (one `write`) before the store into
//! its allocation starts, so it survives the process being killed. A
//! background `fdatasync`, coalesced (one in flight at a time, covering
//! every line written before it started), makes it survive a power loss
//! too, without putting a disk flush on the data path. The flush starts
//! [`FLUSH_DELAY`] after the line (in a tokio runtime): an upload that is
//! over by then (a small file: a few milliseconds) has removed its journal
//! and flushes nothing, so a session uploading many small files puts no
//! disk flush per file on the machine. The window is that delay plus one
//! flush, and an allocation whose line is lost expires at the end of its
//! duration. Nor
//! can a journal list an allocation whose ALLOCATE was in flight when the
//! process died (the depot made it, the client never read the reply with
//! its capabilities): at most one per piece being placed (`threads` x
//! pieces per block), holding no data, expiring at the end of its
//! duration.
//!
//! Reuse: a finished journal (not a `--resume` one) is not removed but
//! emptied and kept, still locked, for the next upload of the same process
//! ([`IDLE_MAX`] at most): a session uploading many files in parallel
//! (liblors, `lors upload a b c DIR/`, `cp -r`) creates and removes no
//! file per upload, which on ext4 costs more than the upload of a small
//! file when dozens of threads take turns on the directory's lock. An
//! empty journal is never an upload's (its header comes first): one whose
//! lock is free was left by a process that is gone, and the first journal
//! a process starts in a directory ([`sweep`]), and `lors cleanup`,
//! remove those.
//!
//! Why a sibling of the `--resume` journal and not the same file: that one
//! lists finished blocks (to skip them), written after each store, and
//! lives beside the user's choice of resuming; this one lists every
//! allocation, written before its store, for every upload. A resumable
//! upload's journal names its `--resume` journal, and `cleanup` keeps both
//! (and says how to resume) unless asked to release them.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exnode::Security;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Grid;
use crate::credentials::Error;
use crate::transfer::upload::{release_each, Made};
use crate::transfer::{self, Pool};

/// How long after a line its flush starts (see the module's
/// "Durability").
pub const FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Finished journals kept (empty, locked) for the next uploads of this
/// process, in all directories.
pub const IDLE_MAX: usize = 64;

/// A finished journal kept for the next upload ([`InFlight::finish`]).
struct Idle {
    dir: PathBuf,
    path: PathBuf,
    file: Arc<File>,
}

/// The journals kept, and the directories this process has swept of
/// orphans ([`sweep`]).
static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
static SWEPT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The journals' file name extension.
const EXT: &str = "alloc";
/// Prefix of a journal being created (not yet under its name).
const TMP_PREFIX: &str = ".tmp-";
/// The header's `kind`.
const KIND: &str = "lors-inflight";

/// The directory of the in-flight journals: `$LORS_STATE_DIR`, else
/// `$XDG_STATE_HOME/lors/inflight`, else `~/.local/state/lors/inflight`.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LORS_STATE_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("inflight"));
    }
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|s| s.join("lors/inflight"))
}

/// A journal's first line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub kind: String,
    pub v: u32,
    /// Where the upload goes (a metadata-manager path or an `--xnd` file).
    pub dest: String,
    /// The process that made it (when it was made; informative).
    pub pid: u32,
    /// Unix seconds.
    pub started: i64,
    /// The `--resume` journal of this upload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<PathBuf>,
}

/// One allocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    depot: String,
    security: String,
    manage: String,
}

/// The journal of one running upload (locked while it lives).
pub struct InFlight {
    path: PathBuf,
    file: Arc<File>,
    /// Serializes the lines.
    write: Mutex<()>,
    /// A line was written since the last flush started.
    dirty: Arc<AtomicBool>,
    /// A flush is in flight.
    syncing: Arc<AtomicBool>,
    /// The directory was flushed (the journal's name is durable).
    dir_synced: Arc<AtomicBool>,
    /// The journal was removed or emptied for reuse
    /// ([`InFlight::finish`]): nothing more is written into it, and
    /// nothing to flush.
    finished: Arc<AtomicBool>,
    /// Kept for another upload when finished (not a `--resume` journal).
    reusable: bool,
    /// Flushes done (each `fdatasync` of the file).
    flushes: Arc<AtomicU64>,
}

fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory (made by an older version, or by hand) is
    // made private too: the journals hold MANAGE capabilities.
    let m = std::fs::metadata(dir)?;
    if m.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Locks `f` exclusively (`flock`) without waiting; `Ok(false)` if
/// another open file (another upload, or a clean-up) holds it.
fn try_lock(f: &File) -> io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the open file is still under a name (not removed by the one
/// that held the lock before us).
fn linked(f: &File) -> io::Result<bool> {
    Ok(f.metadata()?.nlink() > 0)
}

impl InFlight {
    /// Starts the journal of an upload to `dest` in `dir`: a new file, or
    /// for a `--resume` upload (`resume`: its journal) the file of that
    /// journal, continued. Refused if another running upload holds it.
    pub fn start(dir: &Path, dest: &str, resume: Option<&Path>) -> io::Result<InFlight> {
        let idle = resume.is_none().then(|| take_idle(dir)).flatten();
        if idle.is_none() {
            create_dir(dir)?;
            sweep(dir);
        }
        let name = match resume {
            Some(r) => format!(
                "r-{}.{EXT}",
                blake3::hash(r.as_os_str().as_encoded_bytes()).to_hex()[..24].to_owned()
            ),
            None => format!("{}.{EXT}", Uuid::new_v4().simple()),
        };
        let path = dir.join(name);
        let header = Header {
            kind: KIND.into(),
            v: 1,
            dest: dest.to_owned(),
            pid: std::process::id(),
            started: transfer::now(),
            resume: resume.map(Path::to_path_buf),
        };
        if let Some(idle) = idle {
            // Empty and locked by this process since its last upload: the
            // header makes it this upload's.
            let line = format!("{}\n", serde_json::to_string(&header)?);
            (&*idle.file).write_all(line.as_bytes())?;
            let mut j = InFlight::of(idle.path, idle.file, false);
            j.reusable = true;
            return Ok(j);
        }
        // A name appears only once its file is locked and has its header:
        // a clean-up never sees a journal half made.
        for _ in 0..4 {
            if resume.is_some() {
                match OpenOptions::new().read(true).append(true).open(&path) {
                    Ok(f) => {
                        if !try_lock(&f)? {
                            return Err(io::Error::other(format!(
                                "{} is in use by another running upload (or lors cleanup)",
                                path.display()
                            )));
                        }
                        if !linked(&f)? {
                            continue;
                        }
                        return Ok(InFlight::of(path, Arc::new(f), true));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let tmp = dir.join(format!("{TMP_PREFIX}{}", Uuid::new_v4().simple()));
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let made = (|| {
                if !try_lock(&f)? {
                    return Err(io::Error::other(
                        "a new journal is locked by another process",
                    ));
                }
                writeln!(f, "{}", serde_json::to_string(&header)?)?;
                std::fs::hard_link(&tmp, &path)
            })();
            let _ = std::fs::remove_file(&tmp);
            match made {
                Ok(()) => {
                    let mut j = InFlight::of(path, Arc::new(f), false);
                    j.reusable = resume.is_none();
                    return Ok(j);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && resume.is_some() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "{}: could not take the journal (it keeps changing hands)",
            path.display()
        )))
    }

    fn of(path: PathBuf, file: Arc<File>, existing: bool) -> InFlight {
        InFlight {
            path,
            file,
            write: Mutex::new(()),
            dirty: Arc::default(),
            syncing: Arc::default(),
            dir_synced: Arc::new(AtomicBool::new(existing)),
            finished: Arc::default(),
            reusable: false,
            flushes: Arc::default(),
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records an allocation (before anything is stored into it), and
    /// schedules a flush. Best effort: an allocation not recorded expires
    /// at the end of its duration.
    pub fn record(&self, depot: &str, security: Security, manage: &str) {
        let r = Record {
            depot: depot.to_owned(),
            security: security.name().to_owned(),
            manage: manage.to_owned(),
        };
        let Ok(mut line) = serde_json::to_string(&r) else {
            return;
        };
        line.push('\n');
        {
            let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
            if self.finished.load(Ordering::SeqCst) {
                // Emptied for another upload (or removed): not this one's.
                return;
            }
            if let Err(e) = (&*self.file).write_all(line.as_bytes()) {
                tracing::warn!(journal = %self.path.display(), error = %e, "cannot record an allocation in flight");
                return;
            }
        }
        self.flush_later();
    }

    /// Flushes the file (and, the first time, its directory) off the
    /// caller's thread, [`FLUSH_DELAY`] later unless the journal is gone
    /// by then; one flush at a time, covering every line written before it
    /// started.
    fn flush_later(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        if self.syncing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (file, dirty, syncing, dir_synced, flushes) = (
            self.file.clone(),
            self.dirty.clone(),
            self.syncing.clone(),
            self.dir_synced.clone(),
            self.flushes.clone(),
        );
        let dir = self.path.parent().map(Path::to_path_buf);
        let flush = move || loop {
            dirty.store(false, Ordering::SeqCst);
            let _ = file.sync_data();
            flushes.fetch_add(1, Ordering::SeqCst);
            if !dir_synced.swap(true, Ordering::SeqCst) {
                if let Some(d) = &dir {
                    let _ = File::open(d).and_then(|d| d.sync_all());
                }
            }
            syncing.store(false, Ordering::SeqCst);
            if !dirty.load(Ordering::SeqCst) || syncing.swap(true, Ordering::SeqCst) {
                return;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let (finished, syncing) = (self.finished.clone(), self.syncing.clone());
                h.spawn(async move {
                    tokio::time::sleep(FLUSH_DELAY).await;
                    if finished.load(Ordering::SeqCst) {
                        syncing.store(false, Ordering::SeqCst);
                        return;
                    }
                    let _ = tokio::task::spawn_blocking(flush).await;
                });
            }
            Err(_) => flush(),
        }
    }

    /// Flushes done so far.
    #[cfg(test)]
    fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// The upload is over and nothing of it is left to release: the
    /// journal is removed (while still locked, so that a clean-up waiting
    /// for the lock finds it gone).
    ///
    /// A journal that cannot be removed is emptied instead: it must not
    /// list allocations a registered version uses (`lors cleanup` leaves a
    /// journal without a header alone).
    pub fn finish(&self) {
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.reusable && self.file.set_len(0).is_ok() {
            let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_MAX {
                idle.push(Idle {
                    dir: self
                        .path
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    path: self.path.clone(),
                    file: self.file.clone(),
                });
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(journal = %self.path.display(), error = %e, "cannot remove the journal of allocations in flight");
            let _ = self.file.set_len(0);
        }
    }

    /// The allocations recorded so far (by every run, for a `--resume`
    /// upload's journal).
    pub fn recorded(&self) -> Vec<Made> {
        if self.finished.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let Ok(f) = File::open(&self.path) else {
            return Vec::new();
        };
        read(&f).map_or_else(Vec::new, |(_, records)| made_of(&records))
    }

    /// Ends the journal keeping only `left` (allocations a clean-up could
    /// not free), for `lors cleanup` to try again; nothing left: removed.
    pub fn keep_only(&self, left: &[Made]) {
        if left.is_empty() || self.finished.load(Ordering::SeqCst) {
            return self.finish();
        }
        let header = File::open(&self.path)
            .ok()
            .and_then(|f| read(&f))
            .map(|(h, _)| h);
        let records: Vec<Record> = left
            .iter()
            .map(|m| Record {
                depot: m.depot.clone(),
                security: m.security.name().to_owned(),
                manage: m.manage.clone(),
            })
            .collect();
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        match header.map(|h| rewrite(&self.file, &h, &records)) {
            Some(Ok(())) => {}
            _ => {
                // Unreadable or not rewritten: it must not keep listing
                // allocations a registered version uses.
                drop(_one);
                self.finish();
            }
        }
    }
}

/// Removes the journals this process keeps for reuse (at the end of a
/// command, or when a library client is freed): a process that is done
/// uploading leaves none. Those of a process that dies are removed by the
/// next one ([`sweep`]) or by `lors cleanup`.
pub fn release_idle() {
    let idle = std::mem::take(&mut *IDLE.lock().unwrap_or_else(|p| p.into_inner()));
    for j in idle {
        // Still locked by us: no clean-up or upload has it.
        let _ = std::fs::remove_file(&j.path);
    }
}

/// A journal kept for reuse in `dir`, if any.
fn take_idle(dir: &Path) -> Option<Idle> {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    let i = idle.iter().position(|j| j.dir == dir)?;
    Some(idle.swap_remove(i))
}

/// Removes, once per directory and process, the empty journals whose
/// lock is free: kept for reuse by a process that is gone.
fn sweep(dir: &Path) {
    if !SWEPT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(dir.to_path_buf())
    {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == EXT) && e.metadata().is_ok_and(|m| m.len() == 0) {
            remove_if_orphan(&path);
        }
    }
}

/// Removes the journal at `path` if it is empty and no process holds its
/// lock; whether it was one.
fn remove_if_orphan(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().read(true).open(path) else {
        return false;
    };
    // Locked, still empty (a reused journal gets its header under its
    // lock) and still under that name.
    let orphan = try_lock(&f).unwrap_or(false)
        && f.metadata().is_ok_and(|m| m.len() == 0)
        && linked(&f).unwrap_or(false);
    orphan && std::fs::remove_file(path).is_ok()
}

/// The allocations of journal records.
fn made_of(records: &[Record]) -> Vec<Made> {
    records
        .iter()
        .map(|r| Made {
            depot: r.depot.clone(),
            security: Security::from_name(&r.security).unwrap_or(Security::Legacy),
            manage: r.manage.clone(),
            block: u64::MAX,
        })
        .collect()
}

/// What `lors cleanup` does.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Only say what would be released.
    pub dry_run: bool,
    /// Also release the allocations kept for `--resume` (and remove those
    /// journals).
    pub include_resumable: bool,
}

/// What became of one journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalState {
    /// Every allocation freed (or already gone): journal removed.
    Freed,
    /// Some could not be freed: the journal keeps them for another try.
    NotFreed,
    /// Its upload is running (the lock is held): not touched.
    InUse,
    /// A `--resume` upload's: kept for the next run.
    Resumable,
    /// `--dry-run`: these would be released.
    WouldRelease,
    /// Unreadable (no header): left alone.
    Unreadable,
}

/// One journal's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct JournalOutcome {
    pub journal: PathBuf,
    pub state: JournalState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Allocations it lists.
    pub allocations: usize,
    /// Allocations freed now (DECR, then a PROBE finding it gone).
    pub freed: usize,
    /// `depot: reason` of those not freed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_freed: Vec<String>,
    /// The `--resume` journal it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<PathBuf>,
}

impl JournalOutcome {
    fn of(journal: PathBuf, state: JournalState) -> JournalOutcome {
        JournalOutcome {
            journal,
            state,
            dest: None,
            started: None,
            pid: None,
            allocations: 0,
            freed: 0,
            not_freed: Vec::new(),
            resume: None,
        }
    }
}

/// What [`cleanup`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    pub dir: Option<PathBuf>,
    pub journals: Vec<JournalOutcome>,
}

impl CleanupReport {
    /// Whether every allocation it tried to release was freed.
    pub fn all_freed(&self) -> bool {
        self.journals.iter().all(|j| j.not_freed.is_empty())
    }
}

/// Reads a journal: its header and its allocations (each once; a torn
/// last line is ignored: the process was killed while writing it).
fn read(f: &File) -> Option<(Header, Vec<Record>)> {
    let text = io::read_to_string(f).ok()?;
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    let mut lines = complete.lines();
    let header: Header = serde_json::from_str(lines.next()?).ok()?;
    if header.kind != KIND {
        return None;
    }
    let mut seen = BTreeSet::new();
    let records = lines
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter(|r| seen.insert(r.manage.clone()))
        .collect();
    Some((header, records))
}

/// Rewrites a locked journal with only `left` (the allocations not freed).
fn rewrite(f: &File, header: &Header, left: &[Record]) -> io::Result<()> {
    f.set_len(0)?;
    let mut text = serde_json::to_string(header)? + "\n";
    for r in left {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    (&*f).write_all(text.as_bytes())?;
    f.sync_data()
}

/// Releases the allocations of uploads that ended without cleaning up
/// (killed, or their clean-up failed): every journal in [`state_dir`]
/// whose lock is free. Journals of running uploads are not touched;
/// `--resume` uploads' are kept (listed) unless
/// [`CleanupOptions::include_resumable`].
pub async fn cleanup(grid: &Grid, opts: &CleanupOptions) -> Result<CleanupReport, Error> {
    let Some(dir) = state_dir() else {
        return Err(Error::Usage(
            "no $HOME, $XDG_STATE_HOME or $LORS_STATE_DIR: no journals of allocations to look at"
                .into(),
        ));
    };
    cleanup_in(grid, &dir, opts).await
}

/// [`cleanup`] of the journals in `dir`.
pub async fn cleanup_in(
    grid: &Grid,
    dir: &Path,
    opts: &CleanupOptions,
) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport {
        dir: Some(dir.to_path_buf()),
        journals: Vec::new(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::Local(format!("{}: {e}", dir.display()))),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut pool: Option<Arc<Pool>> = None;
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        let locked = try_lock(&f).map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
        if name.starts_with(TMP_PREFIX) {
            // A journal its maker did not get to name: nothing in it.
            if locked && !opts.dry_run {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != EXT) {
            continue;
        }
        if f.metadata().is_ok_and(|m| m.len() == 0) {
            // Kept for reuse: by a running process (locked, nothing to
            // say), or by one that is gone (removed).
            if locked && !opts.dry_run {
                drop(f);
                remove_if_orphan(&path);
            }
            continue;
        }
        if !locked {
            let mut o = JournalOutcome::of(path.clone(), JournalState::InUse);
            if let Some((h, r)) = read(&f) {
                (o.dest, o.started, o.pid, o.allocations) =
                    (Some(h.dest), Some(h.started), Some(h.pid), r.len());
            }
            report.journals.push(o);
            continue;
        }
        if !linked(&f).unwrap_or(false) {
            // Its upload finished (and removed it) while we opened it.
            continue;
        }
        let Some((header, records)) = read(&f) else {
            report
                .journals
                .push(JournalOutcome::of(path.clone(), JournalState::Unreadable));
            continue;
        };
        let mut o = JournalOutcome::of(path.clone(), JournalState::WouldRelease);
        (o.dest, o.started, o.pid, o.allocations, o.resume) = (
            Some(header.dest.clone()),
            Some(header.started),
            Some(header.pid),
            records.len(),
            header.resume.clone(),
        );
        let resumable = header.resume.as_deref().is_some_and(Path::exists);
        if resumable && !opts.include_resumable {
            o.state = JournalState::Resumable;
            report.journals.push(o);
            continue;
        }
        if opts.dry_run {
            report.journals.push(o);
            continue;
        }
        let made = made_of(&records);
        let outcomes = if made.is_empty() {
            Vec::new()
        } else {
            // One pool (one L-Bone query) for all, unless a journal names
            // a secure depot the first answer had no grant for.
            let stale = pool.as_ref().is_none_or(|p| {
                made.iter()
                    .any(|m| m.security != Security::Legacy && !p.has_grant(&m.depot))
            });
            if stale {
                pool = Some(release_pool(grid, &made).await?);
            }
            let Some(p) = pool.clone() else {
                continue;
            };
            release_each(&p, &made).await
        };
        let not_freed: Vec<String> = outcomes.iter().flatten().cloned().collect();
        o.freed = made.len() - not_freed.len();
        if not_freed.is_empty() {
            if let Some(r) = &header.resume {
                let _ = std::fs::remove_file(r);
            }
            let _ = std::fs::remove_file(&path);
            o.state = JournalState::Freed;
        } else {
            let left: Vec<Record> = records
                .into_iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.is_some())
                .map(|(r, _)| r)
                .collect();
            if let Err(e) = rewrite(&f, &header, &left) {
                tracing::warn!(journal = %path.display(), error = %e, "cannot rewrite the journal");
            }
            o.state = JournalState::NotFreed;
            o.not_freed = not_freed;
        }
        report.journals.push(o);
    }
    Ok(report)
}

/// A pool reaching every depot the allocations are on: the L-Bone's
/// grants for the secure ones.
async fn release_pool(grid: &Grid, made: &[Made]) -> Result<Arc<Pool>, Error> {
    let x = exnode::Exnode {
        mappings: made
            .iter()
            .map(|m| exnode::Mapping {
                depot: m.depot.clone(),
                security: Some(m.security),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let setup = super::access_for(grid, &x).await?;
    Ok(super::pool(grid, setup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_is_private_locked_and_read_back_without_its_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("inflight");
        let j = InFlight::start(&dir, "/vo1/f", None).unwrap();
        j.record("d1:6715", Security::Full, "ibp://d1:6715/1#k/1/MANAGE");
        j.record("d2:6715", Security::Legacy, "ibp://d2:6715/1#k/1/MANAGE");
        j.record("d2:6715", Security::Legacy, "ibp://d2:6715/1#k/1/MANAGE");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(j.path()), 0o600);
        // Held by the running upload: another open file cannot lock it.
        let other = File::open(j.path()).unwrap();
        assert!(!try_lock(&other).unwrap());
        // A torn last line (killed while writing) is ignored.
        (&*j.file).write_all(b"{\"depot\":\"d3").unwrap();
        let (h, r) = read(&File::open(j.path()).unwrap()).unwrap();
        assert_eq!(h.dest, "/vo1/f");
        assert_eq!(h.pid, std::process::id());
        assert_eq!(r.len(), 2, "each allocation once: {r:?}");
        assert_eq!(r[1].security, "legacy");
        let path = j.path().to_path_buf();
        drop(j);
        // Its process gone (the file closed), the lock is free.
        assert!(try_lock(&other).unwrap());
        assert!(path.exists());
        // Nothing but the journal in the directory (no temporary left).
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    /// Waits (bounded) until `j` has made `n` flushes; they run on a
    /// blocking thread, in real time.
    async fn flushed(j: &InFlight, n: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while j.flushes() < n && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        j.flushes() >= n
    }

    #[tokio::test(start_paused = true)]
    async fn a_journal_is_flushed_after_the_delay_unless_the_upload_is_over() {
        let d = tempfile::tempdir().unwrap();
        // Over before the delay (a small file): never flushed.
        let quick = InFlight::start(d.path(), "/vo1/small", None).unwrap();
        quick.record("d1:6715", Security::Full, "ibp://d1:6715/1#a/1/MANAGE");
        quick.finish();
        // Still running after the delay: flushed once, covering both lines.
        let slow = InFlight::start(d.path(), "/vo1/big", None).unwrap();
        slow.record("d1:6715", Security::Full, "ibp://d1:6715/2#b/1/MANAGE");
        slow.record("d2:6715", Security::Full, "ibp://d2:6715/3#c/1/MANAGE");
        tokio::time::sleep(FLUSH_DELAY / 2).await;
        assert_eq!(slow.flushes(), 0, "not before the delay");
        tokio::time::sleep(FLUSH_DELAY).await;
        assert!(flushed(&slow, 1).await, "flushed after the delay");
        assert_eq!(quick.flushes(), 0, "a finished journal is not flushed");
        // A line after the flush: flushed again, after its own delay.
        slow.record("d3:6715", Security::Full, "ibp://d3:6715/4#d/1/MANAGE");
        tokio::time::sleep(FLUSH_DELAY * 2).await;
        assert!(flushed(&slow, 2).await, "the next line flushed too");
        assert_eq!(slow.recorded().len(), 3);
    }

    #[test]
    fn a_finished_journal_is_kept_empty_for_the_next_upload_and_orphans_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("inflight");
        create_dir(&dir).unwrap();
        // Left by processes that are gone: an empty journal (kept for
        // reuse), and one with an upload's allocations.
        std::fs::write(dir.join("gone.alloc"), b"").unwrap();
        let full = dir.join("killed.alloc");
        std::fs::write(&full, b"{\"kind\":\"lors-inflight\"}\n").unwrap();
        // A running process's kept one: empty, locked.
        let held = dir.join("held.alloc");
        std::fs::write(&held, b"").unwrap();
        let held_f = File::open(&held).unwrap();
        assert!(try_lock(&held_f).unwrap());

        let one = InFlight::start(&dir, "/vo1/a", None).unwrap();
        assert!(!dir.join("gone.alloc").exists(), "an orphan is swept");
        assert!(full.exists() && held.exists(), "only empty, unlocked ones");
        one.record("d1:6715", Security::Full, "ibp://d1:6715/1#a/1/MANAGE");
        let path = one.path().to_path_buf();
        one.finish();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied");
        assert!(
            !try_lock(&File::open(&path).unwrap()).unwrap(),
            "still ours"
        );
        // A line after the end is nobody's.
        one.record("d1:6715", Security::Full, "ibp://d1:6715/9#z/1/MANAGE");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);

        let two = InFlight::start(&dir, "/vo1/b", None).unwrap();
        assert_eq!(two.path(), path, "the same file, no new one");
        two.record("d2:6715", Security::Full, "ibp://d2:6715/2#b/1/MANAGE");
        let (h, r) = read(&File::open(&path).unwrap()).unwrap();
        assert_eq!(h.dest, "/vo1/b");
        assert_eq!(r.len(), 1, "only this upload's: {r:?}");
        assert_eq!(two.recorded().len(), 1);
        assert!(one.recorded().is_empty());
        two.finish();
        // The end of the process's uploads: none left behind.
        release_idle();
        assert!(!path.exists());
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["held.alloc", "killed.alloc"]);
    }

    #[test]
    fn a_finished_journal_is_removed_and_a_resumable_one_continued() {
        let d = tempfile::tempdir().unwrap();
        let resume = d.path().join("uploads/x.journal");
        let j = InFlight::start(d.path(), "/vo1/f", Some(&resume)).unwrap();
        j.record("d1:6715", Security::Full, "ibp://d1:6715/1#a/1/MANAGE");
        // A second run while the first holds it is refused.
        assert!(InFlight::start(d.path(), "/vo1/f", Some(&resume)).is_err());
        let path = j.path().to_path_buf();
        drop(j);
        let j = InFlight::start(d.path(), "/vo1/f", Some(&resume)).unwrap();
        assert_eq!(j.path(), path);
        j.record("d1:6715", Security::Full, "ibp://d1:6715/2#b/1/MANAGE");
        let (h, r) = read(&File::open(&path).unwrap()).unwrap();
        assert_eq!(h.resume.as_deref(), Some(resume.as_path()));
        assert_eq!(r.len(), 2, "both runs' allocations");
        let all = j.recorded();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].security, Security::Full);
        // Only what a clean-up could not free stays; then a record more.
        j.keep_only(&all[1..]);
        j.record("d2:6715", Security::Full, "ibp://d2:6715/3#c/1/MANAGE");
        let (h2, r) = read(&File::open(&path).unwrap()).unwrap();
        assert_eq!(h2, h);
        let caps: Vec<&str> = r.iter().map(|r| r.manage.as_str()).collect();
        assert_eq!(
            caps,
            ["ibp://d1:6715/2#b/1/MANAGE", "ibp://d2:6715/3#c/1/MANAGE"]
        );
        j.keep_only(&[]);
        assert!(!path.exists(), "nothing left: removed");
    }
}
