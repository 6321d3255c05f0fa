//! A resource: one data directory holding allocation files, its journal and
//! its recycle area, with capacity accounting.
//!
//! Lock order (never taken the other way round): compaction `gate` →
//! `inner` → an allocation's `state` → the journal file; the depot's
//! [`Quotas`] mutex is taken under `inner` and never holds another lock.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use anyhow::Context;
use ibp_proto::{Attributes, CapKind, CapRef, IbpError, Reliability, Rid, StatusInfo};
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::config::{ResourceConfig, SyncMode};
use crate::journal::{self, Journal, Owner, Record};
use crate::quota::{LegacyLimits, LegacyUsage, Quotas, ShareOfHard};

/// Characters of random key after the `IBP-` prefix (as in IBP 1.4: 90
/// alphanumerics, about 536 bits; legacy clients size their buffers for it).
const KEY_CHARS: usize = 90;

/// Capacities of a resource (changeable by STATUS CHANGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub hard_size: u64,
    pub soft_size: u64,
    pub max_duration: i64,
}

/// The mutable part of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocState {
    /// Acknowledged bytes.
    pub size: u64,
    pub max_size: u64,
    /// Unix seconds.
    pub expires: i64,
    pub reliability: Reliability,
    pub read_refs: u32,
    pub write_refs: u32,
    /// Deleted, expired or reclaimed; handlers holding it must stop.
    pub gone: bool,
    /// The file UUID bound by the first authenticated STORE/WRITE.
    pub uuid: Option<[u8; 16]>,
}

/// One allocation. Capability keys are kept only as SHA-256 hashes.
pub struct Allocation {
    pub id: u64,
    pub rid: Rid,
    key_hash: [u8; 32],
    typekeys: [u32; 3],
    pub created: i64,
    /// Set for allocations made through an authenticated session.
    pub owner: Option<Owner>,
    /// The client address that made a legacy allocation (its per-address
    /// budget); `None` for owned ones and for legacy ones journaled before
    /// addresses were recorded.
    pub origin: Option<IpAddr>,
    state: Mutex<AllocState>,
    /// Serialises STORE and WRITE on this allocation.
    pub writer: tokio::sync::Mutex<()>,
    /// Whether the data file's directory entry is known to be durable.
    file_durable: AtomicBool,
    /// Transfers holding the data file open ([`FileUse`]), or [`RETIRED`]
    /// once the file was taken away as a spare: a file is made a spare
    /// only when nobody has it open, and nobody opens it afterwards, so
    /// no transfer of this allocation ever reads or writes the file of
    /// another.
    users: AtomicUsize,
}

/// [`Allocation::users`] once the data file was retired.
const RETIRED: usize = 1 << (usize::BITS - 1);

/// The data file of an allocation in use by a transfer (from before it is
/// opened until it is closed); see [`Allocation::use_file`].
pub struct FileUse(Arc<Allocation>);

impl Drop for FileUse {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Allocation {
    /// Marks the data file in use until the guard drops (take it before
    /// opening the file, keep it while the file is open); `None` (answer
    /// "not found") once the allocation was removed and its file retired.
    pub fn use_file(self: &Arc<Self>) -> Option<FileUse> {
        if self.users.fetch_add(1, Ordering::SeqCst) & RETIRED != 0 {
            self.users.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(FileUse(self.clone()))
    }

    /// Whether the data file may be made a spare: nobody has it open, and
    /// from now on nobody will ([`Allocation::use_file`] refuses).
    fn retire(&self) -> bool {
        self.users
            .compare_exchange(0, RETIRED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    pub fn state(&self) -> AllocState {
        *lock(&self.state)
    }

    pub fn typekey(&self, kind: CapKind) -> u32 {
        match kind {
            CapKind::Read => self.typekeys[0],
            CapKind::Write => self.typekeys[1],
            CapKind::Manage => self.typekeys[2],
        }
    }

    fn snapshot(&self) -> Record {
        let s = self.state();
        Record::Allocate {
            id: self.id,
            key_hash: self.key_hash,
            typekeys: self.typekeys,
            created: self.created,
            expires: s.expires,
            max_size: s.max_size,
            size: s.size,
            reliability: s.reliability,
            read_refs: s.read_refs,
            write_refs: s.write_refs,
            owner: self.owner.clone(),
            uuid: s.uuid,
            origin: self.origin,
        }
    }
}

/// The capabilities handed out by ALLOCATE (the key is never stored).
pub struct NewCaps {
    pub key: String,
    pub typekeys: [u32; 3],
}

struct Inner {
    allocs: HashMap<u64, Arc<Allocation>>,
    by_key: HashMap<[u8; 32], u64>,
    hard_used: u64,
    total_used: u64,
    next_id: u64,
    capacity: Capacity,
    /// What legacy (unowned) allocations reserve, in all and per address.
    legacy_used: LegacyUsage,
}

impl Inner {
    fn account(&mut self, rel: Reliability, size: u64, add: bool) {
        let apply = |v: &mut u64| {
            *v = if add {
                v.saturating_add(size)
            } else {
                v.saturating_sub(size)
            }
        };
        apply(&mut self.total_used);
        if rel == Reliability::Hard {
            apply(&mut self.hard_used);
        }
    }
}

/// Files of freed allocations kept per resource for new allocations
/// ([`Resource::retire_file`], [`Resource::open_data_for_write`]).
pub const SPARE_FILES: usize = 1024;

/// Most bytes the spare files of a resource keep by default (also at most
/// a quarter of the resource's size; `resource.spare_bytes` sets it): the
/// bytes of freed allocations, overwritten in place by the new ones.
pub const SPARE_BYTES: u64 = 1 << 30;

/// Bytes a new spare file may keep: what the budget leaves after the
/// spares already held, and no more than keeps `budget` free on the file
/// system (`free`, measured with the file's bytes still counted as used,
/// so that cutting it only frees more). An unknown `free` keeps nothing.
fn spare_room(budget: u64, held: u64, free: Option<u64>) -> u64 {
    match free {
        Some(free) => budget.saturating_sub(held).min(free.saturating_sub(budget)),
        None => 0,
    }
}

/// Bytes available to the depot on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a buffer of the size
    // statvfs(3) fills.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0: it filled `st`.
    let st = unsafe { st.assume_init() };
    // Both are u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(blocks.saturating_mul(size))
}

pub struct Resource {
    pub rid: Rid,
    data_dir: PathBuf,
    recycle_dir: PathBuf,
    /// Files of freed allocations, kept to become the files of new ones: a
    /// file system that pays for every inode it allocates or frees (ext4
    /// without a journal checks the recently freed ones one by one) then
    /// does neither while allocations come and go, and the new bytes go
    /// into pages and blocks already there ([`Resource::retire_file`]).
    /// Emptied at start.
    spare_dir: PathBuf,
    spares: Mutex<Spares>,
    /// `resource.spare_bytes`, when the operator set it.
    spare_bytes: Option<ShareOfHard>,
    journal: Journal,
    sync: SyncMode,
    gate: RwLock<()>,
    inner: Mutex<Inner>,
    /// The depot-wide quotas of authenticated owners.
    quotas: Arc<Quotas>,
    /// The legacy port's budget on this resource.
    legacy: LegacyLimits,
}

/// The files in the spare directory with their lengths, their total, and
/// the next name to give one.
#[derive(Default)]
struct Spares {
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
    next: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cuts every spare file to nothing (each keeps its inode for a new
/// allocation; its bytes go back to the file system).
fn empty_all(spares: &mut Spares) {
    for (path, len) in &mut spares.files {
        if *len > 0
            && fs::OpenOptions::new()
                .write(true)
                .open(&*path)
                .and_then(|f| f.set_len(0))
                .is_ok()
        {
            *len = 0;
        }
    }
    spares.bytes = spares.files.iter().map(|(_, len)| len).sum();
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn key_hash(key: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Why a resource refused an allocation or a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The IBP error to answer.
    #[error("{0}")]
    Ibp(IbpError),
    /// An owner's quota refused it, and says which (answered as `-19` with
    /// the reason on the secure port).
    #[error("quota: {0}")]
    Quota(String),
}

impl From<IbpError> for ResourceError {
    fn from(e: IbpError) -> ResourceError {
        ResourceError::Ibp(e)
    }
}

fn io_err(e: io::Error) -> IbpError {
    tracing::error!(error = %e, "journal append failed");
    IbpError::FileWrite
}

impl Resource {
    /// Opens (or creates) a resource and recovers its allocations: replays the
    /// journal, cuts unacknowledged bytes off data files, moves what expired to
    /// the recycle area, removes orphan files, and writes a fresh snapshot.
    pub fn open(
        cfg: &ResourceConfig,
        sync: SyncMode,
        quotas: Arc<Quotas>,
        legacy: LegacyLimits,
    ) -> anyhow::Result<Resource> {
        let rid = Rid(cfg.rid);
        let data_dir = cfg.data.join("data");
        let recycle_dir = cfg.data.join("recycle");
        let spare_dir = cfg.data.join("spare");
        for d in [&cfg.data, &data_dir, &recycle_dir, &spare_dir] {
            // Owner-only whatever the umask (0700 & ~umask).
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .with_context(|| format!("create directory {}", d.display()))?;
        }
        let journal_path = cfg.data.join("journal");
        // The resource directory itself is the operator's (it may hold
        // other things); what the depot keeps in it must be owner-only.
        check_owner_only(&[&data_dir, &recycle_dir, &spare_dir], &journal_path)?;
        // Spares hold only bytes of freed allocations: none is kept
        // across a restart.
        for entry in
            fs::read_dir(&spare_dir).with_context(|| format!("list {}", spare_dir.display()))?
        {
            let _ = fs::remove_file(entry?.path());
        }
        let records = journal::replay(&journal_path)
            .with_context(|| format!("replay journal {}", journal_path.display()))?;
        let mut live: HashMap<u64, Record> = HashMap::new();
        let mut next_id = 1;
        for rec in records {
            match rec {
                Record::Allocate { id, .. } => {
                    next_id = next_id.max(id + 1);
                    live.insert(id, rec);
                }
                Record::Size { id, size: new } => {
                    if let Some(Record::Allocate { size, .. }) = live.get_mut(&id) {
                        *size = new;
                    }
                }
                Record::Change {
                    id,
                    max_size: m,
                    expires: e,
                    reliability: r,
                } => {
                    if let Some(Record::Allocate {
                        max_size,
                        expires,
                        reliability,
                        ..
                    }) = live.get_mut(&id)
                    {
                        *max_size = m;
                        *expires = e;
                        *reliability = r;
                    }
                }
                Record::Refs {
                    id,
                    read_refs: rr,
                    write_refs: wr,
                } => {
                    if let Some(Record::Allocate {
                        read_refs,
                        write_refs,
                        ..
                    }) = live.get_mut(&id)
                    {
                        *read_refs = rr;
                        *write_refs = wr;
                    }
                }
                Record::Bind { id, uuid: u } => {
                    if let Some(Record::Allocate { uuid, .. }) = live.get_mut(&id) {
                        *uuid = Some(u);
                    }
                }
                Record::Delete { id } => {
                    live.remove(&id);
                }
            }
        }
        let t = now();
        let soft = cfg.soft_size.unwrap_or(cfg.hard_size);
        let mut inner = Inner {
            allocs: HashMap::new(),
            by_key: HashMap::new(),
            hard_used: 0,
            total_used: 0,
            next_id,
            capacity: Capacity {
                hard_size: cfg.hard_size.0,
                soft_size: soft.0,
                max_duration: cfg.max_duration.0 as i64,
            },
            legacy_used: LegacyUsage::default(),
        };
        let mut expired = 0;
        let mut tightened = 0;
        for (id, rec) in live {
            let Record::Allocate {
                key_hash,
                typekeys,
                created,
                expires,
                max_size,
                mut size,
                reliability,
                read_refs,
                write_refs,
                owner,
                uuid,
                origin,
                ..
            } = rec
            else {
                continue;
            };
            let path = data_dir.join(format!("{id:016x}"));
            if expires <= t {
                move_to_recycle(&path, &recycle_dir, id, expires);
                expired += 1;
                continue;
            }
            let meta = fs::metadata(&path);
            if let Ok(m) = &meta {
                // Written by a depot that left data files to the umask.
                if m.permissions().mode() & 0o077 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("chmod 600 {}", path.display()))?;
                    tightened += 1;
                }
            }
            match meta {
                Ok(m) if m.len() > size => {
                    // Bytes written but never acknowledged.
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(size))
                        .with_context(|| format!("truncate {}", path.display()))?;
                }
                Ok(m) if m.len() < size => {
                    tracing::error!(id, journaled = size, on_disk = m.len(), "allocation file is shorter than acknowledged; data was lost below the depot");
                    size = m.len();
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if size > 0 {
                        tracing::error!(
                            id,
                            journaled = size,
                            "allocation file is missing; data was lost below the depot"
                        );
                    }
                    size = 0;
                }
                Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
            }
            let alloc = Arc::new(Allocation {
                id,
                rid,
                key_hash,
                typekeys,
                created,
                owner,
                origin,
                state: Mutex::new(AllocState {
                    size,
                    max_size,
                    expires,
                    reliability,
                    read_refs,
                    write_refs,
                    gone: false,
                    uuid,
                }),
                writer: tokio::sync::Mutex::new(()),
                file_durable: AtomicBool::new(true),
                users: AtomicUsize::new(0),
            });
            inner.account(reliability, max_size, true);
            match &alloc.owner {
                Some(o) => quotas.add(o, max_size),
                None => inner.legacy_used.add(alloc.origin, max_size),
            }
            inner.by_key.insert(key_hash, id);
            inner.allocs.insert(id, alloc);
        }
        // Files that no journaled allocation owns were never acknowledged.
        let mut orphans = 0;
        for entry in
            fs::read_dir(&data_dir).with_context(|| format!("list {}", data_dir.display()))?
        {
            let entry = entry?;
            let owned = entry
                .file_name()
                .to_str()
                .and_then(|n| u64::from_str_radix(n, 16).ok())
                .is_some_and(|id| inner.allocs.contains_key(&id));
            if !owned {
                let _ = fs::remove_file(entry.path());
                orphans += 1;
            }
        }
        let snapshot: Vec<Record> = inner.allocs.values().map(|a| a.snapshot()).collect();
        let journal = Journal::create_from_snapshot(&journal_path, &snapshot)
            .with_context(|| format!("write journal snapshot {}", journal_path.display()))?;
        tracing::info!(
            rid = rid.0,
            data = %cfg.data.display(),
            allocations = inner.allocs.len(),
            expired,
            orphans,
            legacy_bytes = inner.legacy_used.bytes(),
            "resource recovered"
        );
        if tightened > 0 {
            tracing::warn!(
                rid = rid.0,
                files = tightened,
                "allocation files others could read were made owner-only (0600)"
            );
        }
        Ok(Resource {
            rid,
            data_dir,
            recycle_dir,
            spare_dir,
            spares: Mutex::new(Spares::default()),
            spare_bytes: cfg.spare_bytes,
            journal,
            sync,
            gate: RwLock::new(()),
            inner: Mutex::new(inner),
            quotas,
            legacy,
        })
    }

    pub fn data_path(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("{id:016x}"))
    }

    /// The data file of allocation `id`, opened for writing: the existing
    /// one, else a spare file linked in under its name (never over a file
    /// that exists), else a new one (mode 0600 whatever the umask).
    pub fn open_data_for_write(&self, id: u64) -> io::Result<fs::File> {
        let path = self.data_path(id);
        match fs::OpenOptions::new().write(true).open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => return r,
        }
        let spare = {
            let mut spares = lock(&self.spares);
            let spare = spares.files.pop();
            if let Some((_, len)) = &spare {
                spares.bytes -= len;
            }
            spare.map(|(path, _)| path)
        };
        if let Some(spare) = spare {
            // A link fails if the name exists; the spare's own name goes.
            let linked = fs::hard_link(&spare, &path);
            let _ = fs::remove_file(&spare);
            if let Err(e) = linked {
                tracing::debug!(error = %e, id, "spare allocation file not used");
            }
        }
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            // Owner-only whatever the umask.
            .mode(0o600)
            .open(&path)
    }

    /// Takes away the data file at `path` (of an allocation removed and
    /// retired: no transfer has it open) as a spare ([`SPARE_FILES`] at
    /// most), else deletes it; with a budget of 0 (`spare_bytes = 0`) it
    /// always deletes it. A spare keeps its bytes, within the budget for
    /// all spares ([`Resource::spare_budget`]) and while the file system
    /// keeps at least the budget free (it is cut to what fits; with less
    /// free than that, every spare is emptied: a spare then saves only
    /// the inode): the next allocation overwrites them where they
    /// are, in pages the page cache already holds and blocks the file
    /// system already allocated. They are never served: a transfer reads
    /// only below an allocation's acknowledged size, a WRITE past it first
    /// cuts the file there, and the file is cut to its data after every
    /// STORE or WRITE ([`Resource::cut_stale_tail`]).
    fn retire_file(&self, path: &Path, capacity: &Capacity) {
        let budget = self.spare_budget(capacity);
        let mut spares = lock(&self.spares);
        if budget > 0 && spares.files.len() < SPARE_FILES {
            let spare = self.spare_dir.join(format!("{:016x}", spares.next));
            let free = free_bytes(&self.spare_dir);
            if free.is_none_or(|f| f < budget) {
                empty_all(&mut spares);
            }
            let room = spare_room(budget, spares.bytes, free);
            let kept = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| {
                    let len = f.metadata()?.len();
                    if len > room {
                        f.set_len(room)?;
                    }
                    Ok(len.min(room))
                })
                .and_then(|len| fs::rename(path, &spare).map(|()| len));
            match kept {
                Ok(len) => {
                    spares.next += 1;
                    spares.bytes += len;
                    spares.files.push((spare, len));
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) => tracing::debug!(error = %e, "allocation file not kept as a spare"),
            }
        }
        drop(spares);
        let _ = fs::remove_file(path);
    }

    /// The most bytes all spare files may keep: `resource.spare_bytes`,
    /// else [`SPARE_BYTES`] and at most a quarter of the resource.
    fn spare_budget(&self, capacity: &Capacity) -> u64 {
        match self.spare_bytes {
            Some(share) => share.of(capacity.hard_size),
            None => SPARE_BYTES.min(capacity.hard_size.max(capacity.soft_size) / 4),
        }
    }

    /// Empties every spare file (after a failed write: the disk may be
    /// full, and the spares' bytes are the depot's to give back).
    pub fn empty_spares(&self) {
        empty_all(&mut lock(&self.spares));
    }

    /// Cuts the file to `size` when it is longer (a spare's old bytes past
    /// it): before a WRITE past the acknowledged size (so the gap reads as
    /// zeros, never as bytes a spare held), and after every STORE or WRITE
    /// (so a data file is never longer than its allocation's data once a
    /// transfer into it is over).
    pub fn cut_stale_tail(file: &fs::File, size: u64) -> io::Result<()> {
        if file.metadata()?.len() > size {
            file.set_len(size)?;
        }
        Ok(())
    }

    pub fn capacity(&self) -> Capacity {
        lock(&self.inner).capacity
    }

    fn gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes generation `gen` durable when the sync mode demands it.
    pub async fn commit(&self, gen: u64) -> Result<(), IbpError> {
        if self.sync == SyncMode::Always {
            self.journal.sync_through(gen).await.map_err(io_err)?;
        }
        Ok(())
    }

    pub async fn sync_journal(&self) -> io::Result<()> {
        self.journal.sync_all().await
    }

    /// Resolves a duration request: `-1` is the maximum, 0 and anything above
    /// the maximum are refused.
    fn expiry(&self, cap: &Capacity, duration: i64, t: i64) -> Result<i64, IbpError> {
        match duration {
            -1 => Ok(t.saturating_add(cap.max_duration)),
            d if d < -1 => Err(IbpError::InvalidParameterDuration),
            d if d == 0 || d > cap.max_duration => Err(IbpError::LongDuration),
            d => Ok(t + d),
        }
    }

    /// ALLOCATE. Returns the new allocation, its key and the journal generation
    /// to [`commit`](Self::commit) before replying. An owned allocation first
    /// reserves its size in the owner's quotas (`-19` with the quota's name
    /// when that is refused); a legacy one (no owner, made by `origin`) in
    /// the legacy budget (a plain `-19`, as a full IBP 1.4 depot answers);
    /// given back when the allocation fails after all.
    pub fn allocate(
        &self,
        reliability: Reliability,
        size: u64,
        duration: i64,
        owner: Option<Owner>,
        origin: Option<IpAddr>,
    ) -> Result<(Arc<Allocation>, NewCaps, u64), ResourceError> {
        let _gate = self.gate();
        let mut inner = lock(&self.inner);
        // A bad duration is that, whatever the budgets say.
        self.expiry(&inner.capacity, duration, now())?;
        match &owner {
            Some(o) => self.quotas.reserve(o, size).map_err(ResourceError::Quota)?,
            None => {
                let hard = inner.capacity.hard_size;
                if let Err(why) = inner
                    .legacy_used
                    .reserve(&self.legacy, hard, origin, size, true)
                {
                    tracing::info!(rid = self.rid.0, peer = ?origin, size, reason = %why, "legacy ALLOCATE refused");
                    return Err(IbpError::WouldExceedLimit.into());
                }
            }
        }
        let quota_owner = owner.clone();
        let r = self.allocate_locked(&mut inner, reliability, size, duration, owner, origin);
        if r.is_err() {
            match &quota_owner {
                Some(o) => self.quotas.release(o, size),
                None => inner.legacy_used.release(origin, size, true),
            }
        }
        r.map_err(ResourceError::from)
    }

    fn allocate_locked(
        &self,
        inner: &mut Inner,
        reliability: Reliability,
        size: u64,
        duration: i64,
        owner: Option<Owner>,
        origin: Option<IpAddr>,
    ) -> Result<(Arc<Allocation>, NewCaps, u64), IbpError> {
        let t = now();
        let cap = inner.capacity;
        let expires = self.expiry(&cap, duration, t)?;
        if size > cap.soft_size || (reliability == Reliability::Hard && size > cap.hard_size) {
            return Err(IbpError::WouldExceedLimit);
        }
        match reliability {
            Reliability::Hard => {
                if inner.hard_used + size > cap.hard_size {
                    return Err(IbpError::WouldExceedLimit);
                }
                if inner.total_used + size > cap.soft_size {
                    let need = inner.total_used + size - cap.soft_size;
                    // A legacy allocation never takes space from a session's.
                    self.reclaim_soft(inner, need, owner.is_none())?;
                }
            }
            Reliability::Soft => {
                if inner.total_used + size > cap.soft_size {
                    return Err(IbpError::WouldExceedLimit);
                }
            }
        }
        let mut rng = rand::thread_rng();
        let key = format!("IBP-{}", Alphanumeric.sample_string(&mut rng, KEY_CHARS));
        let hash = key_hash(&key);
        let mut typekeys = [0u32; 3];
        while typekeys[0] == typekeys[1] || typekeys[1] == typekeys[2] || typekeys[0] == typekeys[2]
        {
            typekeys = [(); 3].map(|_| rng.gen_range(1..i32::MAX as u32));
        }
        let id = inner.next_id;
        let alloc = Arc::new(Allocation {
            id,
            rid: self.rid,
            key_hash: hash,
            typekeys,
            created: t,
            owner,
            origin,
            state: Mutex::new(AllocState {
                size: 0,
                max_size: size,
                expires,
                reliability,
                read_refs: 1,
                write_refs: 1,
                gone: false,
                uuid: None,
            }),
            writer: tokio::sync::Mutex::new(()),
            file_durable: AtomicBool::new(false),
            users: AtomicUsize::new(0),
        });
        let gen = self.journal.append(&alloc.snapshot()).map_err(io_err)?;
        inner.next_id += 1;
        inner.account(reliability, size, true);
        inner.by_key.insert(hash, id);
        inner.allocs.insert(id, alloc.clone());
        Ok((alloc, NewCaps { key, typekeys }, gen))
    }

    /// Frees at least `need` bytes by reclaiming SOFT allocations,
    /// soonest-expiring first (only legacy ones when `legacy_only`);
    /// reclaims nothing if that cannot be enough.
    fn reclaim_soft(
        &self,
        inner: &mut Inner,
        need: u64,
        legacy_only: bool,
    ) -> Result<(), IbpError> {
        let mut soft: Vec<(i64, u64, u64)> = inner
            .allocs
            .values()
            .filter(|a| !legacy_only || a.owner.is_none())
            .filter_map(|a| {
                let s = a.state();
                (s.reliability == Reliability::Soft).then_some((s.expires, a.id, s.max_size))
            })
            .collect();
        if soft.iter().map(|s| s.2).sum::<u64>() < need {
            return Err(IbpError::WouldExceedLimit);
        }
        soft.sort_unstable();
        let mut freed = 0;
        for (_, id, _) in soft {
            if freed >= need {
                break;
            }
            if let Some(a) = inner.allocs.get(&id).cloned() {
                freed += a.state().max_size;
                self.remove_locked(inner, &a, false).map_err(io_err)?;
                tracing::info!(
                    rid = self.rid.0,
                    id,
                    "reclaimed SOFT allocation for a HARD one"
                );
            }
        }
        Ok(())
    }

    /// Removes an allocation (journal first, then memory, then its file).
    fn remove_locked(&self, inner: &mut Inner, a: &Allocation, recycle: bool) -> io::Result<()> {
        let mut st = lock(&a.state);
        if st.gone {
            return Ok(());
        }
        self.journal.append(&Record::Delete { id: a.id })?;
        st.gone = true;
        inner.account(st.reliability, st.max_size, false);
        match &a.owner {
            Some(o) => self.quotas.release(o, st.max_size),
            None => inner.legacy_used.release(a.origin, st.max_size, true),
        }
        inner.by_key.remove(&a.key_hash);
        inner.allocs.remove(&a.id);
        let path = self.data_path(a.id);
        if recycle {
            move_to_recycle(&path, &self.recycle_dir, a.id, st.expires);
        } else if a.retire() {
            self.retire_file(&path, &inner.capacity);
        } else {
            // Open in a transfer: only the name goes; the transfer ends on
            // the file it has, which nothing else will ever use.
            let _ = fs::remove_file(&path);
        }
        Ok(())
    }

    /// Finds the allocation of a capability and which of its three
    /// capabilities the typekey names. All three typekeys are compared in
    /// constant time; the lookup is by a hash of the key.
    pub fn find(&self, cap: &CapRef) -> Result<(Arc<Allocation>, Option<CapKind>), IbpError> {
        let hash = key_hash(&cap.key);
        let alloc = {
            let inner = lock(&self.inner);
            let id = inner.by_key.get(&hash).ok_or(IbpError::CapNotFound)?;
            inner.allocs.get(id).cloned().ok_or(IbpError::CapNotFound)?
        };
        let st = alloc.state();
        if st.gone || st.expires <= now() {
            return Err(IbpError::CapNotFound);
        }
        let tk = cap.typekey.to_le_bytes();
        let mut kind = None;
        for k in [CapKind::Read, CapKind::Write, CapKind::Manage] {
            let hit: bool = alloc.typekey(k).to_le_bytes().ct_eq(&tk).into();
            if hit {
                kind = Some(k);
            }
        }
        Ok((alloc, kind))
    }

    /// Records a new acknowledged size after data reached the file.
    pub fn commit_size(&self, a: &Allocation, size: u64) -> Result<u64, IbpError> {
        let _gate = self.gate();
        let mut st = lock(&a.state);
        if st.gone {
            drop(st);
            let _ = fs::remove_file(self.data_path(a.id));
            return Err(IbpError::CapNotFound);
        }
        let gen = self
            .journal
            .append(&Record::Size { id: a.id, size })
            .map_err(io_err)?;
        st.size = size;
        Ok(gen)
    }

    /// Binds the allocation to a file UUID for good (the first authenticated
    /// STORE/WRITE). Returns the journal generation to commit, or `None`
    /// when it is already bound to `uuid`; another UUID is refused.
    pub fn bind_uuid(&self, a: &Allocation, uuid: [u8; 16]) -> Result<Option<u64>, IbpError> {
        let _gate = self.gate();
        let mut st = lock(&a.state);
        if st.gone {
            return Err(IbpError::CapNotFound);
        }
        match st.uuid {
            Some(u) if u == uuid => Ok(None),
            Some(_) => Err(IbpError::CapAccessDenied),
            None => {
                let gen = self
                    .journal
                    .append(&Record::Bind { id: a.id, uuid })
                    .map_err(io_err)?;
                st.uuid = Some(uuid);
                Ok(Some(gen))
            }
        }
    }

    /// In `always` mode, makes a data file (and, once, its directory entry) durable.
    pub async fn sync_data(&self, a: &Allocation, file: &Arc<fs::File>) -> Result<(), IbpError> {
        if self.sync != SyncMode::Always {
            return Ok(());
        }
        let file = file.clone();
        let dir = (!a.file_durable.load(Ordering::Acquire)).then(|| self.data_dir.clone());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_data()?;
            if let Some(dir) = dir {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|_| IbpError::Internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "fsync of allocation data failed");
            IbpError::FileWrite
        })?;
        a.file_durable.store(true, Ordering::Release);
        Ok(())
    }

    /// MANAGE CHNG. Growing an owned allocation reserves the difference in
    /// its owner's quotas; shrinking gives it back.
    pub fn change(&self, a: &Allocation, attrs: &Attributes) -> Result<u64, ResourceError> {
        let t = now();
        let _gate = self.gate();
        let mut inner = lock(&self.inner);
        let cap = inner.capacity;
        let mut st = lock(&a.state);
        if st.gone {
            return Err(IbpError::CapNotFound.into());
        }
        let max_size = if attrs.max_size == 0 {
            st.max_size
        } else {
            attrs.max_size
        };
        let reliability = match attrs.reliability {
            0 => st.reliability,
            n => Reliability::from_number(n).ok_or(IbpError::InvalidParameterReliability)?,
        };
        let expires = match attrs.duration {
            0 => st.expires,
            d => self.expiry(&cap, d, t)?,
        };
        if max_size < st.size {
            return Err(IbpError::WouldDamageData.into());
        }
        let hard_after = inner.hard_used
            - if st.reliability == Reliability::Hard {
                st.max_size
            } else {
                0
            }
            + if reliability == Reliability::Hard {
                max_size
            } else {
                0
            };
        let total_after = inner.total_used - st.max_size + max_size;
        if (hard_after > cap.hard_size && hard_after > inner.hard_used)
            || (total_after > cap.soft_size && total_after > inner.total_used)
        {
            return Err(IbpError::WouldExceedLimit.into());
        }
        let grow = max_size.saturating_sub(st.max_size);
        if grow > 0 {
            match &a.owner {
                Some(o) => self.quotas.reserve(o, grow).map_err(ResourceError::Quota)?,
                None => {
                    let hard = cap.hard_size;
                    if let Err(why) =
                        inner
                            .legacy_used
                            .reserve(&self.legacy, hard, a.origin, grow, false)
                    {
                        tracing::info!(rid = self.rid.0, id = a.id, grow, reason = %why, "legacy CHNG refused");
                        return Err(IbpError::WouldExceedLimit.into());
                    }
                }
            }
        }
        let appended = self.journal.append(&Record::Change {
            id: a.id,
            max_size,
            expires,
            reliability,
        });
        let gen = match appended {
            Ok(g) => g,
            Err(e) => {
                if grow > 0 {
                    match &a.owner {
                        Some(o) => self.quotas.release(o, grow),
                        None => inner.legacy_used.release(a.origin, grow, false),
                    }
                }
                return Err(io_err(e).into());
            }
        };
        let shrink = st.max_size.saturating_sub(max_size);
        match &a.owner {
            Some(o) => self.quotas.release(o, shrink),
            None => inner.legacy_used.release(a.origin, shrink, false),
        }
        let old = *st;
        inner.account(old.reliability, old.max_size, false);
        inner.account(reliability, max_size, true);
        st.max_size = max_size;
        st.expires = expires;
        st.reliability = reliability;
        Ok(gen)
    }

    /// MANAGE INCR/DECR of the READ (1) or WRITE (2) count. The allocation is
    /// deleted when its READ count reaches zero.
    pub fn adjust_refs(&self, a: &Allocation, cap_type: u8, incr: bool) -> Result<u64, IbpError> {
        let _gate = self.gate();
        let mut inner = lock(&self.inner);
        let (read_refs, write_refs) = {
            let st = lock(&a.state);
            if st.gone {
                return Err(IbpError::CapNotFound);
            }
            let step = |v: u32| {
                if incr {
                    v.saturating_add(1)
                } else {
                    v.saturating_sub(1)
                }
            };
            match cap_type {
                1 => (step(st.read_refs), st.write_refs),
                2 => (st.read_refs, step(st.write_refs)),
                _ => return Err(IbpError::InvalidParameter),
            }
        };
        if read_refs == 0 {
            self.remove_locked(&mut inner, a, false).map_err(io_err)?;
            return Ok(self.journal.generation());
        }
        let gen = self
            .journal
            .append(&Record::Refs {
                id: a.id,
                read_refs,
                write_refs,
            })
            .map_err(io_err)?;
        let mut st = lock(&a.state);
        st.read_refs = read_refs;
        st.write_refs = write_refs;
        Ok(gen)
    }

    /// Moves expired allocations to the recycle area and purges recycled data
    /// older than `grace`. Returns how many allocations expired.
    pub fn reap(&self, grace: i64) -> usize {
        let t = now();
        let mut n = 0;
        {
            let _gate = self.gate();
            let mut inner = lock(&self.inner);
            let expired: Vec<Arc<Allocation>> = inner
                .allocs
                .values()
                .filter(|a| a.state().expires <= t)
                .cloned()
                .collect();
            for a in expired {
                match self.remove_locked(&mut inner, &a, true) {
                    Ok(()) => n += 1,
                    Err(e) => tracing::error!(error = %e, id = a.id, "could not journal an expiry"),
                }
            }
        }
        if n > 0 {
            tracing::info!(rid = self.rid.0, expired = n, "reaped expired allocations");
        }
        purge_recycle(&self.recycle_dir, t - grace);
        self.maybe_compact();
        n
    }

    /// Rewrites the journal as a snapshot when it has grown well past the
    /// number of live allocations.
    fn maybe_compact(&self) {
        let live = lock(&self.inner).allocs.len() as u64;
        if self.journal.records() <= 4 * live + 10_000 {
            return;
        }
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let snapshot: Vec<Record> = lock(&self.inner)
            .allocs
            .values()
            .map(|a| a.snapshot())
            .collect();
        match self.journal.compact(&snapshot) {
            Ok(()) => tracing::info!(
                rid = self.rid.0,
                records = snapshot.len(),
                "journal compacted"
            ),
            Err(e) => tracing::error!(error = %e, "journal compaction failed"),
        }
    }

    /// STATUS CHANGE.
    pub fn set_capacity(&self, c: Capacity) {
        lock(&self.inner).capacity = c;
    }

    /// The STATUS INQ body.
    pub fn status(&self) -> StatusInfo {
        let inner = lock(&self.inner);
        let c = inner.capacity;
        StatusInfo {
            rid: self.rid,
            resource_type: 1,
            total_configured: c.soft_size,
            total_served: c.soft_size,
            total_used: inner.total_used,
            total_available: c.soft_size.saturating_sub(inner.total_used),
            hard_configured: c.hard_size,
            hard_served: c.hard_size,
            hard_used: inner.hard_used,
            hard_available: c.hard_size.saturating_sub(inner.hard_used),
            max_duration: c.max_duration,
        }
    }

    pub fn allocation_count(&self) -> usize {
        lock(&self.inner).allocs.len()
    }

    /// The spare files kept and the bytes they hold (metrics).
    pub fn spare_usage(&self) -> (usize, u64) {
        let spares = lock(&self.spares);
        (spares.files.len(), spares.bytes)
    }
}

/// Refuses a resource whose directories or journal group or others may
/// access, naming each path, its mode and the `chmod` that fixes it (the
/// journal holds every allocation's key hash; the directories, the data).
fn check_owner_only(dirs: &[&Path], journal: &Path) -> anyhow::Result<()> {
    let mut bad = Vec::new();
    let mut fixes = Vec::new();
    let mode_of = |p: &Path| -> anyhow::Result<Option<u32>> {
        match fs::metadata(p) {
            Ok(m) => Ok(Some(m.permissions().mode() & 0o777)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("stat {}", p.display())),
        }
    };
    for d in dirs {
        if let Some(mode) = mode_of(d)?.filter(|m| m & 0o077 != 0) {
            bad.push(format!(
                "data directory {} has mode {mode:03o}",
                d.display()
            ));
            fixes.push(format!("chmod 700 {}", d.display()));
        }
    }
    if let Some(mode) = mode_of(journal)?.filter(|m| m & 0o077 != 0) {
        bad.push(format!("journal {} has mode {mode:03o}", journal.display()));
        fixes.push(format!("chmod 600 {}", journal.display()));
    }
    if !bad.is_empty() {
        anyhow::bail!(
            "{}; they must be accessible by their owner only (run: {})",
            bad.join(", "),
            fixes.join("; ")
        );
    }
    Ok(())
}

fn move_to_recycle(path: &Path, recycle_dir: &Path, id: u64, expired: i64) {
    let target = recycle_dir.join(format!("{id:016x}.{expired}"));
    match fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(error = %e, id, "could not move expired data to the recycle area; deleting it");
            let _ = fs::remove_file(path);
        }
    }
}

fn purge_recycle(dir: &Path, before: i64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let expired = name
            .to_str()
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, t)| t.parse::<i64>().ok());
        if expired.is_none_or(|t| t <= before) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::spare_room;

    #[test]
    fn a_spare_keeps_what_the_budget_and_the_free_disk_leave() {
        const MIB: u64 = 1 << 20;
        // Plenty of disk: the budget less what the spares hold.
        assert_eq!(spare_room(4 * MIB, 0, Some(100 * MIB)), 4 * MIB);
        assert_eq!(spare_room(4 * MIB, 3 * MIB, Some(100 * MIB)), MIB);
        assert_eq!(spare_room(4 * MIB, 5 * MIB, Some(100 * MIB)), 0);
        // Little disk: never less than the budget left free.
        assert_eq!(spare_room(4 * MIB, 0, Some(5 * MIB)), MIB);
        assert_eq!(spare_room(4 * MIB, 0, Some(4 * MIB)), 0);
        assert_eq!(spare_room(4 * MIB, 0, Some(MIB)), 0);
        // Free space unknown: nothing kept.
        assert_eq!(spare_room(4 * MIB, 0, None), 0);
        // A budget of 0 keeps nothing.
        assert_eq!(spare_room(0, 0, Some(100 * MIB)), 0);
    }
}
