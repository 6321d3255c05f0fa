//! `lors mount`: a directory of the metadata manager as a POSIX file
//! system (FUSE, the pure-Rust `fuser`, no libfuse).
//!
//! - The namespace (directories, files, sizes, modification times) is the
//!   metadata manager's, asked on each lookup (the kernel keeps answers
//!   [`MountOptions::attr_ttl`]); permissions are the mounting user's
//!   rights (`r`, `w`) as the manager reports them, as owner bits.
//! - Inode numbers are stable per path for the life of a mount (a rename
//!   moves the number with the entry); they are never reused.
//! - Reads go through [`FileReader`](crate::files::FileReader), one per
//!   open file handle, opened at the first read and pinned to the version
//!   current at open: only the blocks needed, with its cache, read-ahead,
//!   verification, decryption and failover.
//! - A file opened for writing is staged in a local file
//!   ([`FileWriter`](crate::files::FileWriter): owner-only, unlinked at
//!   once, in [`MountOptions::staging_dir`]; all writers together at most
//!   [`MountOptions::staging_max_bytes`], ENOSPC past it). Opened without
//!   `O_TRUNC`, its current content is copied into the stage first. It is
//!   committed as a new version on `close` (FUSE flush) and `fsync`, with
//!   the configured redundancy and security (a file written in order is
//!   uploaded while it is written, see `stream.rs`); a commit that fails returns
//!   an error from that `close`/`fsync` and registers nothing. Files open
//!   for writing are direct I/O (no copy into the kernel's page cache), and
//!   a write is answered before its bytes are staged: a stage write that
//!   fails breaks the writer, whose next write and commit fail with EIO.
//! - Optimistic concurrency: a commit replaces only the version that was
//!   current when the file was opened (or the one its previous commit
//!   stored); another host's version stored meanwhile fails the commit
//!   with EBUSY and one log line, never a silent overwrite.
//! - Credentials: every operation takes its session from
//!   [`Client::grid`], which reloads a renewed proxy file; an expired one
//!   fails operations with EACCES (one log line when it starts, one when
//!   a fresh proxy makes them work again).

mod fs;
mod inodes;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::client::Client;
use crate::credentials::Error;
use crate::files::ReaderOptions;

pub use fs::GridFs;

/// How a mount behaves.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Where files open for writing are staged (default: the system's
    /// temporary directory). Each stage is an unlinked owner-only file.
    pub staging_dir: Option<PathBuf>,
    /// Bytes all files open for writing may stage together (default
    /// 8 GiB); a write past it fails with ENOSPC.
    pub staging_max_bytes: u64,
    /// Cache and read-ahead of each open file's reader.
    pub reader: ReaderOptions,
    /// Threads serving FUSE requests (default 4).
    pub threads: usize,
    /// How long the kernel may keep attributes and names (default 1 s):
    /// longer is faster, shorter shows other hosts' changes sooner.
    pub attr_ttl: Duration,
    /// The nice value (0-19) of the threads that upload what is written
    /// (default 10). Uploads run on a runtime of their own whose threads
    /// yield the CPU to the threads answering the kernel: a program
    /// writing to the mount is not slowed by the encryption and sending
    /// of what it wrote before (see docs/mount.md, "Performance").
    pub upload_nice: i32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            staging_dir: None,
            staging_max_bytes: 8 << 30,
            reader: ReaderOptions::default(),
            threads: 4,
            attr_ttl: Duration::from_secs(1),
            upload_nice: 10,
        }
    }
}

/// What a mount did, counted while it runs (see [`GridFs::stats`]).
#[derive(Debug, Default)]
pub struct MountStats {
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub versions_committed: AtomicU64,
    /// Of those, uploaded while being written (see `stream.rs`).
    pub versions_streamed: AtomicU64,
    pub commits_failed: AtomicU64,
    pub conflicts: AtomicU64,
}

/// [`MountStats`] at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MountSummary {
    pub gridpath: String,
    pub mountpoint: String,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub versions_committed: u64,
    pub versions_streamed: u64,
    pub commits_failed: u64,
    pub conflicts: u64,
}

impl MountStats {
    pub fn summary(&self, gridpath: &str, mountpoint: &Path) -> MountSummary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MountSummary {
            gridpath: gridpath.to_owned(),
            mountpoint: mountpoint.display().to_string(),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            versions_committed: get(&self.versions_committed),
            versions_streamed: get(&self.versions_streamed),
            commits_failed: get(&self.commits_failed),
            conflicts: get(&self.conflicts),
        }
    }
}

/// A mounted file system: [`Unmounter::unmount`] (or an outside
/// `umount`, `fusermount3 -u`) ends it, and [`Mounted::wait`] returns then.
pub struct Mounted {
    unmounter: Unmounter,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    stats: Arc<MountStats>,
}

/// Unmounts a [`Mounted`] from any thread.
#[derive(Clone)]
pub struct Unmounter(Arc<std::sync::Mutex<fuser::SessionUnmounter>>);

impl Unmounter {
    /// Unmounts (files still open lose what they did not commit); no
    /// error when already unmounted.
    pub fn unmount(&self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).unmount()
    }
}

impl Mounted {
    /// What unmounts this mount.
    pub fn unmounter(&self) -> Unmounter {
        self.unmounter.clone()
    }

    /// The mount's counters (live).
    pub fn stats(&self) -> Arc<MountStats> {
        self.stats.clone()
    }

    /// Whether the session has ended (unmounted).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the session to end.
    pub fn wait(self) -> std::io::Result<()> {
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("the FUSE session thread panicked"))?
    }
}

/// Mounts `gridpath` of the metadata manager at `mountpoint` with the
/// credentials of `client`; FUSE requests are served by threads that run
/// their grid operations on `rt`. Returns once mounted.
pub fn mount(
    client: Arc<Client>,
    gridpath: &str,
    mountpoint: &Path,
    opts: MountOptions,
    rt: tokio::runtime::Handle,
) -> Result<Mounted, Error> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Local(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container the device".into(),
        ));
    }
    let root = normalize(gridpath)?;
    let threads = opts.threads.max(1);
    let uploads = upload_runtime(opts.upload_nice)?;
    let fs = GridFs::new(client, root.clone(), opts, rt, uploads);
    let stats = fs.stats();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("lors:{root}")),
        fuser::MountOption::Subtype("lors".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    config.n_threads = Some(threads);
    let mut session = fuser::Session::new(fs, mountpoint, &config).map_err(|e| {
        Error::Local(format!(
            "cannot mount {root} at {}: {e}",
            mountpoint.display()
        ))
    })?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("lors-mount".into())
        .spawn(move || session.run())
        .map_err(|e| Error::Local(format!("cannot start the FUSE session: {e}")))?;
    Ok(Mounted {
        unmounter: Unmounter(Arc::new(std::sync::Mutex::new(unmounter))),
        thread,
        stats,
    })
}

/// The runtime that commits and streams what is written: its threads
/// (workers and blocking pool, where blocks are encrypted) run at nice
/// `nice`, below the FUSE threads, so that answering a `write` never
/// waits behind the upload of earlier ones for a CPU.
fn upload_runtime(nice: i32) -> Result<tokio::runtime::Runtime, Error> {
    if !(0..=19).contains(&nice) {
        return Err(Error::Usage(format!(
            "the upload threads' nice value must be 0 to 19, not {nice}"
        )));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lors-upload")
        .on_thread_start(move || {
            // Linux: the calling thread. Raising one's own nice value is
            // always allowed; a failure only leaves it at the default.
            if let Err(e) = rustix::process::setpriority_process(None, nice) {
                tracing::debug!("lors mount: cannot lower an upload thread's priority: {e}");
            }
        })
        .build()
        .map_err(|e| Error::Local(format!("cannot start the upload runtime: {e}")))
}

/// `/vo/dir` without a trailing slash; `/` stays.
fn normalize(p: &str) -> Result<String, Error> {
    if !p.starts_with('/') {
        return Err(Error::Usage(format!(
            "{p}: a metadata-manager path starts with / (e.g. /vo1/alice)"
        )));
    }
    let t = p.trim_end_matches('/');
    Ok(if t.is_empty() { "/".into() } else { t.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("/vo1/alice/").unwrap(), "/vo1/alice");
        assert_eq!(normalize("/").unwrap(), "/");
        assert!(matches!(normalize("vo1"), Err(Error::Usage(_))));
    }
}
