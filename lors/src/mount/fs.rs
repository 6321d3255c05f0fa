//! [`GridFs`]: the FUSE requests of a mount, each answered from the
//! metadata manager, a [`FileReader`] or a staged [`FileWriter`] (see the
//! module documentation of `mount`).
//!
//! Lock order: `inodes`, then `local`, then `handles`/`dirs` (each held
//! only to copy out of it, never across a grid operation); a write
//! handle's own (async) lock is taken with none of those held.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use metadata_api::{EntryInfo, EntryKind};

use super::inodes::{child, Inodes, ROOT};
use super::stream::Stream;
use super::{MountOptions, MountStats};
use crate::client::Client;
use crate::credentials::Error;
use crate::files::{self, Dest, FileReader, FileWriter, Grid, Source, UploadSettings};
use crate::metadata::MetadataClient;

mod ops;

/// Bytes copied at a time into the stage of a file opened for writing
/// without `O_TRUNC`.
const COPY_CHUNK: usize = 4 << 20;

/// How files open for writing are opened: direct I/O, so that a write
/// goes from the writer's buffer to the mount without a copy into the
/// kernel's page cache first (the stage is the file's cache while it is
/// written: reads of the open file are answered from it).
const WRITE_OPEN: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

/// The file system of one mount.
pub struct GridFs {
    client: Arc<Client>,
    opts: MountOptions,
    /// Requests' grid operations (lookups, reads, deletes).
    rt: tokio::runtime::Handle,
    /// Commits and streamed uploads, at a lower CPU priority
    /// (`MountOptions::upload_nice`). Owned here: it lives as long as
    /// the file system, and is dropped by the session thread, outside
    /// any runtime.
    uploads: tokio::runtime::Runtime,
    uid: u32,
    gid: u32,
    inodes: Mutex<Inodes>,
    /// Files open for writing, by inode: what `getattr` reports for them.
    local: Mutex<HashMap<u64, Local>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    /// Bytes staged by all files open for writing.
    staged: AtomicU64,
    /// The last operation found no usable proxy (logged once).
    no_proxy: AtomicBool,
    stats: Arc<MountStats>,
}

/// A file open for writing, as the other requests see it.
struct Local {
    writers: usize,
    size: u64,
    mtime: SystemTime,
}

enum Handle {
    Read(ReadHandle),
    Write(Box<tokio::sync::Mutex<WriteHandle>>),
}

struct ReadHandle {
    path: String,
    version: u64,
    size: u64,
    reader: tokio::sync::OnceCell<FileReader>,
}

struct WriteHandle {
    ino: u64,
    writer: FileWriter,
    /// Written since the last commit (a new or truncated file is dirty
    /// from the start: closing it stores it).
    dirty: bool,
    /// The last commit failed and was reported (to close or fsync), and
    /// nothing was written since: release does not try again.
    failed: bool,
    /// The version commits must replace (see `FileWriter::expect_version`).
    base: u64,
    settings: UploadSettings,
    /// Nothing written yet to an empty stage: a first write at offset 0
    /// starts streaming the upload ([`Stream`]).
    streamable: bool,
    stream: Option<Stream>,
    /// The process (thread group) that opened the handle: only its
    /// closes commit (FUSE FLUSH comes with the pid of the closing
    /// process, and a child forked while the file was open closes its copy
    /// at exec or exit). `None`: every close commits.
    opener: Option<u32>,
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: String,
}

/// The process (thread group ID) of thread `tid`, from
/// `/proc/TID/status`; `None` when it cannot be read (the thread gone).
fn thread_group(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The errno of a grid error; a few callers choose another for
/// [`Error::Conflict`] (EBUSY for a commit, ENOTEMPTY for rmdir).
fn errno(e: &Error) -> Errno {
    match e {
        Error::Usage(_) | Error::BadRequest(_) => Errno::EINVAL,
        Error::NoProxy(_) | Error::InvalidProxy(_) | Error::Refused(_) => Errno::EACCES,
        Error::Forbidden(m) if m.contains("quota") => Errno::EDQUOT,
        Error::Forbidden(_) => Errno::EACCES,
        Error::NotFound(_) => Errno::ENOENT,
        Error::Conflict(_) => Errno::EEXIST,
        Error::RateLimited { .. } => Errno::EAGAIN,
        Error::Unavailable(_) | Error::Local(_) | Error::Data(_) => Errno::EIO,
    }
}

fn time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    }
}

impl GridFs {
    pub(crate) fn new(
        client: Arc<Client>,
        root: String,
        opts: MountOptions,
        rt: tokio::runtime::Handle,
        uploads: tokio::runtime::Runtime,
    ) -> GridFs {
        GridFs {
            client,
            opts,
            rt,
            uploads,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            inodes: Mutex::new(Inodes::new(&root)),
            local: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            staged: AtomicU64::new(0),
            no_proxy: AtomicBool::new(false),
            stats: Arc::new(MountStats::default()),
        }
    }

    /// The mount's counters.
    pub fn stats(&self) -> Arc<MountStats> {
        self.stats.clone()
    }

    /// The session for one operation, reloading a renewed proxy; without
    /// a usable proxy EACCES, logged once until one works again.
    fn grid(&self) -> Result<Grid, Errno> {
        match self.client.grid() {
            Ok(g) => {
                if self.no_proxy.swap(false, Ordering::Relaxed) {
                    tracing::warn!("lors mount: a fresh proxy is there: operations work again");
                }
                Ok(g)
            }
            Err(e) => {
                let no_proxy = matches!(e, Error::NoProxy(_) | Error::InvalidProxy(_));
                if !no_proxy || !self.no_proxy.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "lors mount: {e}; operations fail with EACCES until a fresh proxy is there (lors login)"
                    );
                }
                Err(errno(&e))
            }
        }
    }

    fn mdm(grid: &Grid) -> Result<&MetadataClient, Errno> {
        grid.mdm.as_ref().ok_or_else(|| {
            tracing::error!("lors mount: no metadata manager configured");
            Errno::EIO
        })
    }

    fn path(&self, ino: INodeNo) -> Result<String, Errno> {
        lock(&self.inodes).path(ino.0).ok_or(Errno::ENOENT)
    }

    fn child_path(&self, parent: INodeNo, name: &OsStr) -> Result<String, Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        Ok(child(&self.path(parent)?, name))
    }

    /// A grid error, logged unless it is an ordinary answer.
    fn fail(&self, what: &str, path: &str, e: &Error) -> Errno {
        match e {
            Error::NotFound(_) => {}
            _ => tracing::warn!("lors mount: {what} {path}: {e}"),
        }
        errno(e)
    }

    fn attr_of(&self, ino: u64, e: &EntryInfo) -> FileAttr {
        let rights = e.rights.as_deref().unwrap_or("r");
        let (r, w) = (rights.contains('r'), rights.contains('w'));
        let dir = e.kind == EntryKind::Dir;
        let mut perm = 0u16;
        if r {
            perm |= if dir { 0o500 } else { 0o400 };
        }
        if w {
            perm |= 0o200;
        }
        let mtime = time(e.updated_at);
        FileAttr {
            ino: INodeNo(ino),
            size: e.size,
            blocks: e.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: time(e.created_at),
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm,
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 << 10,
            flags: 0,
        }
    }

    fn local_attr(&self, ino: u64) -> Option<FileAttr> {
        let local = lock(&self.local);
        let l = local.get(&ino)?;
        Some(FileAttr {
            ino: INodeNo(ino),
            size: l.size,
            blocks: l.size.div_ceil(512),
            atime: l.mtime,
            mtime: l.mtime,
            ctime: l.mtime,
            crtime: l.mtime,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 << 10,
            flags: 0,
        })
    }

    /// Attributes of `path` (number `ino`): of the open writer if there
    /// is one, else the metadata manager's.
    fn attr(&self, ino: u64, path: &str) -> Result<FileAttr, Errno> {
        if let Some(a) = self.local_attr(ino) {
            return Ok(a);
        }
        let grid = self.grid()?;
        let mdm = Self::mdm(&grid)?;
        let e = self
            .rt
            .block_on(mdm.stat(path))
            .map_err(|e| self.fail("stat", path, &e))?;
        Ok(self.attr_of(ino, &e))
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// A write handle of `ino` at `path`: a new file (`existing` None) or
    /// a version of one (copied into the stage unless `truncate`).
    fn open_writer(
        &self,
        grid: &Grid,
        ino: u64,
        path: &str,
        existing: Option<&EntryInfo>,
        truncate: bool,
    ) -> Result<WriteHandle, Errno> {
        if existing.is_some_and(|e| e.kind == EntryKind::Dir) {
            return Err(Errno::EISDIR);
        }
        if let Some(e) = existing {
            if !e.rights.as_deref().unwrap_or("w").contains('w') {
                return Err(Errno::EACCES);
            }
        }
        let mut settings = self.client.settings().map_err(|e| errno(&e))?;
        settings.filename = path.rsplit('/').next().map(str::to_owned);
        let mut writer = FileWriter::create(
            grid,
            Dest::Path(path.to_owned()),
            settings.clone(),
            self.opts.staging_dir.as_deref(),
        )
        .map_err(|e| {
            tracing::error!("lors mount: {e}");
            Errno::EIO
        })?;
        let base = existing.map_or(0, |e| e.version);
        writer.expect_version(Some(base));
        let mut copied = 0;
        if let Some(e) = existing.filter(|e| !truncate && e.version > 0 && e.size > 0) {
            self.reserve(0, e.size)?;
            copied = e.size;
            let src = Source::Path {
                path: path.to_owned(),
                version: Some(e.version),
            };
            let r = self.rt.block_on(async {
                let reader = FileReader::open(grid, &src, self.opts.reader).await?;
                let mut buf = vec![0u8; COPY_CHUNK];
                let mut at = 0u64;
                loop {
                    let n = reader.read_at(at, &mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    writer.write_at(at, &buf[..n]).await?;
                    at += n as u64;
                }
                Ok::<_, Error>(())
            });
            if let Err(err) = r {
                self.staged.fetch_sub(copied, Ordering::Relaxed);
                return Err(self.fail("copy the current version of", path, &err));
            }
        }
        let mut local = lock(&self.local);
        let l = local.entry(ino).or_insert(Local {
            writers: 0,
            size: copied,
            mtime: existing.map_or_else(SystemTime::now, |e| time(e.updated_at)),
        });
        l.writers += 1;
        if truncate || existing.is_none() {
            l.size = 0;
        }
        Ok(WriteHandle {
            ino,
            writer,
            dirty: truncate || existing.is_none(),
            failed: false,
            base,
            settings,
            streamable: truncate || existing.is_none_or(|e| e.size == 0),
            stream: None,
            opener: None,
        })
    }

    /// Counts `new - old` more staged bytes, refusing past the bound.
    fn reserve(&self, old: u64, new: u64) -> Result<(), Errno> {
        if new <= old {
            self.staged.fetch_sub(old - new, Ordering::Relaxed);
            return Ok(());
        }
        let more = new - old;
        let max = self.opts.staging_max_bytes;
        self.staged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                s.checked_add(more).filter(|t| *t <= max)
            })
            .map(|_| ())
            .map_err(|_| {
                tracing::warn!(
                    "lors mount: staging {more} more bytes would pass the bound of {max} bytes (--staging-max): ENOSPC"
                );
                Errno::ENOSPC
            })
    }

    /// Commits a dirty write handle as a new version of its file.
    fn commit(&self, w: &mut WriteHandle) -> Result<(), Errno> {
        if !w.dirty {
            return Ok(());
        }
        w.failed = true;
        let path = lock(&self.inodes).path(w.ino).ok_or(Errno::ENOENT)?;
        if let Some(st) = w.stream.take() {
            if st.sent == w.writer.written() && st.path == path {
                match self.uploads.block_on(st.finish()) {
                    Ok(s) => {
                        w.writer.expect_version(Some(s.version));
                        w.base = s.version;
                        w.dirty = false;
                        w.failed = false;
                        self.stats.versions_committed.fetch_add(1, Ordering::Relaxed);
                        self.stats.versions_streamed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            "lors mount: {path}: version {} stored ({} bytes, streamed)",
                            s.version,
                            s.size
                        );
                        return Ok(());
                    }
                    // Stored from the stage instead (which also tells a
                    // conflict apart from a failure).
                    Err(e) => tracing::info!(
                        "lors mount: {path}: the streaming upload failed ({e}); storing from the stage"
                    ),
                }
            } else {
                st.abandon();
            }
        }
        let grid = self.grid()?;
        w.writer.set_dest(Dest::Path(path.clone()));
        match self.uploads.block_on(w.writer.commit_in(&grid)) {
            Ok(s) => {
                w.dirty = false;
                w.failed = false;
                w.base = s.version;
                self.stats
                    .versions_committed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "lors mount: {path}: version {} stored ({} bytes)",
                    s.version,
                    s.size
                );
                Ok(())
            }
            Err(Error::Conflict(m)) => {
                self.stats.commits_failed.fetch_add(1, Ordering::Relaxed);
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "lors mount: {path}: not stored, another writer stored a version since it was opened (EBUSY): {m}"
                );
                Err(Errno::EBUSY)
            }
            Err(e) => {
                self.stats.commits_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("lors mount: {path}: not stored: {e}");
                Err(match errno(&e) {
                    Errno::EEXIST | Errno::ENOENT | Errno::EINVAL => Errno::EIO,
                    other => other,
                })
            }
        }
    }

    /// Ends a write handle: what `local` and the staging bound count.
    fn close_writer(&self, w: &WriteHandle) {
        self.staged.fetch_sub(
            w.writer.written().min(self.staged.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        let mut local = lock(&self.local);
        if let Some(l) = local.get_mut(&w.ino) {
            l.writers = l.writers.saturating_sub(1);
            if l.writers == 0 {
                local.remove(&w.ino);
            }
        }
    }

    fn with_writer<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&mut WriteHandle) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let h = self.handle(fh)?;
        match &*h {
            Handle::Write(w) => {
                let mut w = self.rt.block_on(w.lock());
                f(&mut w)
            }
            Handle::Read(_) => Err(Errno::EBADF),
        }
    }

    fn resize(&self, w: &mut WriteHandle, size: u64) -> Result<(), Errno> {
        w.streamable = false;
        if w.stream.as_ref().is_some_and(|s| s.sent != size) {
            if let Some(s) = w.stream.take() {
                s.abandon();
            }
        }
        let old = w.writer.written();
        self.reserve(old, size)?;
        if let Err(e) = w.writer.set_len(size) {
            self.reserve(size, old)?;
            tracing::error!("lors mount: {e}");
            return Err(Errno::EIO);
        }
        w.dirty = true;
        w.failed = false;
        if let Some(l) = lock(&self.local).get_mut(&w.ino) {
            l.size = size;
            l.mtime = SystemTime::now();
        }
        Ok(())
    }

    /// `truncate(2)` of a file no handle of ours has open for writing: a
    /// new version of `size` bytes, stored at once.
    fn truncate_closed(&self, ino: u64, path: &str, size: u64) -> Result<(), Errno> {
        let grid = self.grid()?;
        let mdm = Self::mdm(&grid)?;
        let e = self
            .rt
            .block_on(mdm.stat(path))
            .map_err(|e| self.fail("stat", path, &e))?;
        if e.size == size {
            return Ok(());
        }
        let mut w = self.open_writer(&grid, ino, path, Some(&e), size == 0)?;
        let r = self.resize(&mut w, size).and_then(|()| self.commit(&mut w));
        self.close_writer(&w);
        r
    }

    /// Starts streaming at the first write (at offset 0 of an empty
    /// stage), announces each write that follows the previous one (the
    /// upload reads it from the stage), and abandons the stream at any
    /// other write or when its upload failed.
    /// Called after `len` bytes were staged at `offset`.
    fn feed_stream(&self, w: &mut WriteHandle, offset: u64, len: u64) {
        if std::mem::take(&mut w.streamable) && offset == 0 {
            let path = lock(&self.inodes).path(w.ino);
            let stage = w.writer.stage_handle();
            match (self.client.grid(), path, stage) {
                (Ok(grid), Some(path), Ok(stage)) => {
                    w.stream = Some(Stream::start(
                        self.uploads.handle(),
                        grid,
                        path,
                        w.settings.clone(),
                        w.base,
                        stage,
                    ));
                }
                (_, _, Err(e)) => {
                    tracing::info!(
                        "lors mount: not streaming ({e}); storing from the stage at close"
                    )
                }
                _ => {}
            }
        }
        let Some(st) = w.stream.as_mut() else {
            return;
        };
        if offset != st.sent || !st.send(len) {
            if let Some(st) = w.stream.take() {
                st.abandon();
            }
        }
    }

    /// flush and fsync: a writer's stage stored as a new version (a
    /// reader has nothing to store), answered on `reply`. `closer`: the
    /// pid of a flush (a close), which commits only when it is the
    /// opener's (see [`WriteHandle::opener`]); `None` for fsync, which
    /// always commits.
    fn commit_handle(&self, fh: FileHandle, closer: Option<u32>, reply: fuser::ReplyEmpty) {
        let r = self.handle(fh).and_then(|h| match &*h {
            Handle::Read(_) => Ok(()),
            Handle::Write(w) => {
                let mut w = self.rt.block_on(w.lock());
                if let (Some(opener), Some(pid)) = (w.opener, closer) {
                    if thread_group(pid) != Some(opener) {
                        tracing::debug!(
                            "lors mount: close by process {pid}, not the opener {opener}: nothing stored until the opener closes"
                        );
                        return Ok(());
                    }
                }
                self.commit(&mut w)
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn writer_of(&self, ino: u64) -> Option<Arc<Handle>> {
        let handles = lock(&self.handles);
        handles
            .values()
            .find(|h| match &***h {
                Handle::Write(w) => w.try_lock().is_ok_and(|w| w.ino == ino),
                Handle::Read(_) => false,
            })
            .cloned()
    }

    fn read_into(&self, r: &ReadHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if offset >= r.size || r.version == 0 {
            return Ok(Vec::new());
        }
        let want = (size as u64).min(r.size - offset) as usize;
        let mut buf = vec![0u8; want];
        let got = self.rt.block_on(async {
            let reader = r
                .reader
                .get_or_try_init(|| async {
                    let grid = self.grid().map_err(|_| {
                        Error::InvalidProxy("no usable proxy to open the file".into())
                    })?;
                    let src = Source::Path {
                        path: r.path.clone(),
                        version: Some(r.version),
                    };
                    FileReader::open(&grid, &src, self.opts.reader).await
                })
                .await?;
            let mut got = 0;
            while got < want {
                let n = reader.read_at(offset + got as u64, &mut buf[got..]).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            Ok::<_, Error>(got)
        });
        match got {
            Ok(n) => {
                buf.truncate(n);
                self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                Ok(buf)
            }
            Err(e) => Err(self.fail("read", &r.path, &e)),
        }
    }

    fn list_dir(&self, ino: u64) -> Result<Vec<DirEntry>, Errno> {
        let path = lock(&self.inodes).path(ino).ok_or(Errno::ENOENT)?;
        let grid = self.grid()?;
        let mdm = Self::mdm(&grid)?;
        let entries = self
            .rt
            .block_on(mdm.list(&path))
            .map_err(|e| self.fail("list", &path, &e))?;
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push(DirEntry {
            ino,
            kind: FileType::Directory,
            name: ".".into(),
        });
        out.push(DirEntry {
            ino: ROOT.max(ino),
            kind: FileType::Directory,
            name: "..".into(),
        });
        let mut inodes = lock(&self.inodes);
        let mut seen = std::collections::HashSet::new();
        for e in entries {
            let Some(name) = e.path.rsplit('/').next().filter(|n| !n.is_empty()) else {
                continue;
            };
            let p = child(&path, name);
            seen.insert(p.clone());
            out.push(DirEntry {
                ino: inodes.ino_of(&p),
                kind: if e.kind == EntryKind::Dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                },
                name: name.to_owned(),
            });
        }
        // Files created here and not committed yet.
        let local: Vec<u64> = lock(&self.local).keys().copied().collect();
        for i in local {
            if let Some(p) = inodes.path(i) {
                let parent = p
                    .rsplit_once('/')
                    .map(|(d, _)| if d.is_empty() { "/" } else { d });
                if parent == Some(path.as_str()) && !seen.contains(&p) {
                    if let Some(name) = p.rsplit('/').next() {
                        out.push(DirEntry {
                            ino: i,
                            kind: FileType::RegularFile,
                            name: name.to_owned(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    fn delete_file(&self, grid: &Grid, path: &str) -> Result<(), Error> {
        let mdm = grid
            .mdm
            .as_ref()
            .ok_or_else(|| Error::Usage("no metadata manager configured".into()))?;
        let removal = self.rt.block_on(crate::release::delete_and_release(
            mdm,
            path,
            None,
            secure_access(grid),
        ))?;
        if !removal.all_freed() {
            tracing::warn!(
                "lors mount: {path}: deleted, some allocations not freed (they expire on their own; `lors cleanup` does not track them)"
            );
        }
        Ok(())
    }
}

/// The L-Bone's grants for releasing on secure ports (legacy ports only
/// without them), as `lors rm` does.
async fn secure_access(grid: &Grid) -> Option<crate::release::SecureAccess> {
    let (Some(trust), Some(cred), Some(_)) = (&grid.trust, &grid.credential, &grid.lbone) else {
        return None;
    };
    match files::offer(grid, 0, 0, None, crate::depots::Reliability::Hard).await {
        Ok(offer) => crate::release::SecureAccess::from_offer(&offer, trust, cred).ok(),
        Err(e) => {
            tracing::warn!(
                "lors mount: no depot grants from the L-Bone ({e}): releasing on legacy ports only"
            );
            None
        }
    }
}
