//! Download: every range of the file fetched in parallel from the best live
//! replica, or rebuilt from erasure-coded shares, verified against its
//! checksum before anything else is done with it, decrypted, and written
//! to a file (at its offset) or to a stream (in order).
//!
//! A replica or share that cannot be read (depot down, refusal, timeout,
//! short read) or whose checksum does not match is skipped and the next
//! one tried; the depot is then tried last for later ranges. At most
//! `threads` ranges are in memory at once.

use futures_util::stream::{FuturesUnordered, StreamExt};

pub use super::direct::DirectIo;
use super::direct::DIRECT_ALIGN;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use exnode::{Exnode, Mapping, Security};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::pool::{parse_cap, Pool};
use super::{codec, Progress, TransferError};
use crate::crypto::{self, DataKey};
use crate::lors_e2e;

/// Largest allocation (or erasure-coding block) read at once.
pub const MAX_PIECE: u64 = super::upload::MAX_BLOCK_SIZE;

#[derive(Clone, Default)]
pub struct DownloadOptions {
    /// Ranges in flight at once (at least 1).
    pub threads: usize,
    /// The metadata manager's ticket for the file (secure depots need it).
    pub ticket: Option<String>,
    /// The same, renewed before it expires (long downloads); takes the
    /// place of `ticket` when set.
    pub tickets: Option<Arc<Tickets>>,
    /// The data key of an encrypted exNode.
    pub key: Option<Arc<DataKey>>,
    /// Ranges (by offset) already in the output file: not fetched again
    /// (`--resume`; file sinks only).
    pub skip: Arc<std::collections::HashSet<u64>>,
    /// Called with a range's offset once it is written to the output file.
    pub on_written: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// Seconds before its expiry at which a download's ticket is renewed.
pub const TICKET_RENEW_MARGIN: i64 = 120;

type Renewal =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(String, i64), String>> + Send>>;

/// A download's file ticket, renewed from the metadata manager when it
/// comes within [`TICKET_RENEW_MARGIN`] of its expiry, so a download
/// longer than a ticket's lifetime goes on (and stops once renewal is
/// refused: revocation reaches running downloads too).
pub struct Tickets {
    current: tokio::sync::Mutex<(String, i64)>,
    renew: Box<dyn Fn() -> Renewal + Send + Sync>,
}

impl Tickets {
    /// `ticket` valid until `not_after` (Unix seconds); `renew` fetches a
    /// new one with its expiry.
    pub fn new(
        ticket: String,
        not_after: i64,
        renew: impl Fn() -> Renewal + Send + Sync + 'static,
    ) -> Tickets {
        Tickets {
            current: tokio::sync::Mutex::new((ticket, not_after)),
            renew: Box::new(renew),
        }
    }

    /// The ticket to send now (renewed first if it is about to expire; a
    /// failed renewal keeps the old one, which the depot judges).
    pub async fn get(&self) -> String {
        let mut cur = self.current.lock().await;
        if cur.1 - super::now() < TICKET_RENEW_MARGIN {
            match (self.renew)().await {
                Ok(t) => *cur = t,
                Err(e) => tracing::warn!(error = %e, "cannot renew the file ticket"),
            }
        }
        cur.0.clone()
    }
}

/// An extent of the exNode, owned (computed once per download).
pub(crate) struct Range {
    pub offset: u64,
    pub length: u64,
    pub group: Option<exnode::EcGroup>,
    pub mappings: Vec<Mapping>,
}

impl Range {
    pub fn all(x: &Exnode) -> Vec<Range> {
        x.extents()
            .into_iter()
            .map(|e| Range {
                offset: e.offset,
                length: e.length,
                group: e.group.cloned(),
                mappings: e.mappings.into_iter().cloned().collect(),
            })
            .collect()
    }
}

/// Where the bytes go.
pub enum Sink {
    /// Written at their offsets (the file is set to the exNode's size).
    File(std::fs::File),
    /// Written in order.
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
    /// Fetched, verified and dropped.
    Discard,
}

/// What a download did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DownloadReport {
    pub bytes: u64,
    /// Replicas or shares skipped because they failed or were corrupt.
    pub failovers: u64,
    /// Ranges rebuilt with parity shares.
    pub rebuilt: u64,
    /// Mappings whose bytes did not match their checksum: `depot` and the
    /// range's offset.
    pub corrupt: Vec<String>,
    /// Ranges found already done in the output (`--resume`).
    pub resumed: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    failovers: AtomicU64,
    rebuilt: AtomicU64,
    corrupt: Mutex<Vec<String>>,
}

/// Downloads the file `x` describes into `sink`.
pub async fn download(
    x: &Exnode,
    pool: Arc<Pool>,
    opts: &DownloadOptions,
    sink: Sink,
    progress: Option<Progress>,
) -> Result<DownloadReport, TransferError> {
    let r = download_ranges(x, pool.clone(), opts, sink, progress).await;
    pool.free_spare();
    r
}

async fn download_ranges(
    x: &Exnode,
    pool: Arc<Pool>,
    opts: &DownloadOptions,
    sink: Sink,
    progress: Option<Progress>,
) -> Result<DownloadReport, TransferError> {
    check_readable(x, opts)?;
    let x = Arc::new(x.clone());
    let ranges = Arc::new(Range::all(&x));
    if !opts.skip.is_empty() && !matches!(sink, Sink::File(_)) {
        return Err(TransferError::Usage("resuming needs an output file".into()));
    }
    let counters = Arc::new(Counters::default());
    let sem = Arc::new(Semaphore::new(opts.threads.max(1)));
    let (tx, rx) = mpsc::channel::<(u64, Parts, OwnedSemaphorePermit)>(opts.threads.max(1));
    // A file is written by the tasks themselves, in parallel at their
    // offsets; a stream by one writer, in order.
    let (file, sink) = match sink {
        Sink::File(f) => {
            let size = x.size;
            // Resuming keeps what is there; set_len only grows or cuts.
            let f = tokio::task::spawn_blocking(move || {
                f.set_len(size)?;
                Ok::<_, std::io::Error>(FileOut::new(f, size, DirectIo::from_env()))
            })
            .await
            .map_err(|e| TransferError::Output(e.to_string()))?
            .map_err(|e| TransferError::Output(format!("cannot write the output: {e}")))?;
            (Some(Arc::new(f)), Sink::Discard)
        }
        s => (None, s),
    };
    let to_file = file.is_some();
    let writer = tokio::spawn(write_out(sink, rx, pool.clone()));
    let mut tasks: JoinSet<Result<(), TransferError>> = JoinSet::new();
    let mut failure = None;
    for i in 0..ranges.len() {
        if opts.skip.contains(&ranges[i].offset) {
            if let Some(p) = &progress {
                p(ranges[i].length);
            }
            continue;
        }
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let file = file.clone();
        let ranges = ranges.clone();
        let (x, pool, opts, counters, tx, progress) = (
            x.clone(),
            pool.clone(),
            opts.clone(),
            counters.clone(),
            tx.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let e = &ranges[i];
            // The extent's pieces (its data shares, erasure coded) as
            // fetched: written where they belong, never joined.
            let data = fetch_extent_parts(&x, e, i, &pool, &opts, &counters).await?;
            let len = parts_len(&data);
            match file {
                Some(f) => {
                    write_range(&f, data, e.offset, &pool, permit).await?;
                    if let Some(w) = &opts.on_written {
                        w(e.offset);
                    }
                }
                None => tx
                    .send((e.offset, data, permit))
                    .await
                    .map_err(|_| TransferError::Output("the output was closed".into()))?,
            }
            if let Some(p) = &progress {
                p(len);
            }
            Ok(())
        });
        while let Some(r) = tasks.try_join_next() {
            if let Err(e) = flatten(r) {
                failure = Some(e);
                break;
            }
        }
        if failure.is_some() {
            break;
        }
    }
    if failure.is_none() {
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = flatten(r) {
                failure = Some(e);
                break;
            }
        }
    }
    tasks.abort_all();
    drop(tx);
    let written = writer
        .await
        .map_err(|e| TransferError::Output(format!("writer failed: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let written = written?;
    // A file's ranges were written by the tasks (they sent empty buffers).
    let bytes = if to_file { x.size } else { written };
    let corrupt = std::mem::take(&mut *counters.corrupt.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(DownloadReport {
        bytes,
        failovers: counters.failovers.load(Ordering::Relaxed),
        rebuilt: counters.rebuilt.load(Ordering::Relaxed),
        corrupt,
        resumed: 0,
    })
}

/// Ranges staged for direct writes at once ([`FileOut::stage`]): one
/// being written, one waiting (direct writes into one file take turns).
const DIRECT_STAGED: usize = 2;

/// The output file of a download, written at offsets by the range tasks.
///
/// A large output (at least [`super::direct::DIRECT_MIN_FILE`]) is written with direct
/// I/O (`O_DIRECT`, a second descriptor of the same file): each range's
/// page-aligned middle is copied into an aligned buffer
/// ([`FileOut::stage`], after which the range's own buffers go back and
/// the next range is fetched meanwhile) and written from there to the
/// disk without passing through the page cache; its unaligned head and
/// tail (and everything, where the file system refuses direct I/O) go
/// through the page cache. Filling the page cache with fresh pages is the
/// slowest part of writing a file on some machines (a virtual machine
/// whose free memory was handed back to the host pays a fault per page),
/// and a download of gigabytes then does not push everything else out of
/// the cache either. The bytes written are the same either way; a range's
/// head and tail pages are never written directly, so the two paths never
/// write the same page.
pub(crate) struct FileOut {
    file: std::fs::File,
    /// The same file opened with `O_DIRECT`, if that worked; unused after
    /// a direct write failed ([`FileOut::direct_ok`]).
    direct: Option<std::fs::File>,
    direct_ok: std::sync::atomic::AtomicBool,
    /// Ranges staged (holding an aligned buffer) at once: [`DIRECT_STAGED`].
    staged: Arc<Semaphore>,
    /// Spare aligned buffers (each used from its first aligned byte).
    spare: Mutex<Vec<Vec<u8>>>,
}

/// A range's aligned middle, copied into an aligned buffer, to be written
/// directly at `at` ([`FileOut::write_staged`]).
pub(crate) struct Staged {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    at: u64,
}

impl FileOut {
    pub(crate) fn new(file: std::fs::File, size: u64, mode: DirectIo) -> FileOut {
        let direct = mode.open(&file, size, true);
        FileOut {
            direct_ok: std::sync::atomic::AtomicBool::new(direct.is_some()),
            file,
            direct,
            staged: Arc::new(Semaphore::new(DIRECT_STAGED)),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Whether direct writes are in use.
    fn is_direct(&self) -> bool {
        self.direct.is_some() && self.direct_ok.load(Ordering::Relaxed)
    }

    /// Writes `parts` (consecutive, from `at`) through the page cache,
    /// except their page-aligned middle when direct writes are in use,
    /// which is copied into an aligned buffer and returned, to be written
    /// by [`FileOut::write_staged`].
    pub(crate) fn stage(&self, parts: &[Vec<u8>], at: u64) -> std::io::Result<Option<Staged>> {
        use std::os::unix::fs::FileExt;
        let end = at + parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let a = at.next_multiple_of(DIRECT_ALIGN).min(end);
        let b = (end / DIRECT_ALIGN * DIRECT_ALIGN).max(a);
        let mut staged = None;
        if self.is_direct() && b - a >= DIRECT_ALIGN {
            let len = (b - a) as usize;
            let mut buf = self
                .spare
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            if buf.len() < len + DIRECT_ALIGN as usize {
                buf = vec![0u8; len + DIRECT_ALIGN as usize];
            }
            let start = buf.as_ptr().align_offset(DIRECT_ALIGN as usize);
            staged = Some(Staged {
                buf,
                start,
                len,
                at: a,
            });
        }
        let mut pos = at;
        for p in parts {
            let (p_start, p_end) = (pos, pos + p.len() as u64);
            pos = p_end;
            let Some(s) = staged.as_mut() else {
                self.file.write_all_at(p, p_start)?;
                continue;
            };
            // The part's bytes before a, within [a, b), and from b.
            let cut = |x: u64| (x.clamp(p_start, p_end) - p_start) as usize;
            let (i, j) = (cut(a), cut(b));
            if i > 0 {
                self.file.write_all_at(&p[..i], p_start)?;
            }
            if j > i {
                let to = s.start + (p_start + i as u64 - a) as usize;
                s.buf[to..to + (j - i)].copy_from_slice(&p[i..j]);
            }
            if j < p.len() {
                self.file.write_all_at(&p[j..], p_start + j as u64)?;
            }
        }
        Ok(staged)
    }

    /// Writes a staged middle directly (through the page cache once a
    /// direct write failed) and keeps its buffer for a later range.
    pub(crate) fn write_staged(&self, s: Staged) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let bytes = &s.buf[s.start..s.start + s.len];
        let mut done = 0;
        if let (Some(d), true) = (&self.direct, self.is_direct()) {
            match d.write_at(bytes, s.at) {
                Ok(n) => done = n,
                Err(e) => {
                    // Not for this file system after all (or a real error,
                    // which the write below reports).
                    tracing::debug!(error = %e, "direct write refused; writing through the page cache");
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
            }
        }
        let r = if done < bytes.len() {
            self.file.write_all_at(&bytes[done..], s.at + done as u64)
        } else {
            Ok(())
        };
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < DIRECT_STAGED {
            spare.push(s.buf);
        }
        r
    }

    /// Writes all of `parts` from `at` (staged and written at once).
    #[cfg(test)]
    fn write_all_at(&self, parts: &[Vec<u8>], at: u64) -> std::io::Result<()> {
        match self.stage(parts, at)? {
            Some(s) => self.write_staged(s),
            None => Ok(()),
        }
    }
}

/// Writes the range at `offset` (its `parts`) into `f`. The range's
/// buffers go back to `pool` and its `permit` (its place among the ranges
/// in flight) is released as soon as its bytes are written or staged,
/// before a staged middle is written: at most [`DIRECT_STAGED`] ranges
/// wait in aligned buffers.
async fn write_range(
    f: &Arc<FileOut>,
    parts: Parts,
    offset: u64,
    pool: &Pool,
    permit: OwnedSemaphorePermit,
) -> Result<(), TransferError> {
    let err = |e: std::io::Error| TransferError::Output(format!("cannot write the output: {e}"));
    let joined = |e: tokio::task::JoinError| TransferError::Output(e.to_string());
    let slot = if f.is_direct() {
        Some(
            f.staged
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| TransferError::Output("the output was closed".into()))?,
        )
    } else {
        None
    };
    let g = f.clone();
    let (parts, staged) = tokio::task::spawn_blocking(move || {
        let r = g.stage(&parts, offset);
        (parts, r)
    })
    .await
    .map_err(joined)?;
    for p in parts {
        pool.recycle(p);
    }
    drop(permit);
    if let Some(s) = staged.map_err(err)? {
        let g = f.clone();
        tokio::task::spawn_blocking(move || g.write_staged(s))
            .await
            .map_err(joined)?
            .map_err(err)?;
    }
    drop(slot);
    Ok(())
}

/// Refuses an exNode this client cannot read: invalid, encrypted without
/// a key, end-to-end functions it does not know, or pieces larger than it
/// reads at once (every piece is held in memory, and an exNode may come
/// from anyone).
fn check_readable(x: &Exnode, opts: &DownloadOptions) -> Result<(), TransferError> {
    x.validate()
        .map_err(|e| TransferError::Exnode(e.to_string()))?;
    if x.encryption.is_some() && opts.key.is_none() {
        return Err(TransferError::Usage(
            "the file is encrypted and no data key was given".into(),
        ));
    }
    for m in &x.mappings {
        lors_e2e::supported(&m.functions)?;
        if m.alloc_length > MAX_PIECE || m.logical_length > MAX_PIECE {
            return Err(TransferError::Exnode(format!(
                "a mapping of {} bytes at {} is larger than the {MAX_PIECE} bytes lors reads at once",
                m.alloc_length.max(m.logical_length),
                m.logical_offset
            )));
        }
    }
    for g in &x.ec_groups {
        if g.shard_size > MAX_PIECE || g.logical_length > MAX_PIECE {
            return Err(TransferError::Exnode(format!(
                "erasure-coding group {} is larger than the {MAX_PIECE} bytes lors reads at once",
                g.id
            )));
        }
    }
    Ok(())
}

/// One extent at a time, for readers that want only some bytes of a file
/// (`crate::files::FileReader`): each [`fetch`](ExtentReader::fetch) reads
/// one extent from its best live replica or rebuilds it from erasure-coded
/// shares, verifies and decrypts it, exactly as [`download`] does.
pub struct ExtentReader {
    x: Exnode,
    ranges: Vec<Range>,
    pool: Arc<Pool>,
    opts: DownloadOptions,
    counters: Counters,
}

impl ExtentReader {
    /// A reader of `x` (checked as [`download`] checks it) through `pool`;
    /// `opts.threads`, `skip` and `on_written` are not used.
    pub fn new(
        x: &Exnode,
        pool: Arc<Pool>,
        opts: DownloadOptions,
    ) -> Result<ExtentReader, TransferError> {
        check_readable(x, &opts)?;
        Ok(ExtentReader {
            ranges: Range::all(x),
            x: x.clone(),
            pool,
            opts,
            counters: Counters::default(),
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.x.size
    }

    /// The extents, as `(offset, length)`, in file order.
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|r| (r.offset, r.length))
    }

    /// The number of extents.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the file has no extents (it is empty).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Extent `i` as `(offset, length)`, if there is one.
    pub fn extent(&self, i: usize) -> Option<(u64, u64)> {
        self.ranges.get(i).map(|r| (r.offset, r.length))
    }

    /// The index of the extent holding byte `offset`, if any.
    pub fn extent_at(&self, offset: u64) -> Option<usize> {
        let i = self
            .ranges
            .partition_point(|r| r.offset + r.length <= offset);
        self.ranges
            .get(i)
            .filter(|r| r.offset <= offset && offset < r.offset + r.length)
            .map(|_| i)
    }

    /// The bytes of extent `i`, verified and decrypted.
    pub async fn fetch(&self, i: usize) -> Result<Vec<u8>, TransferError> {
        let e = self
            .ranges
            .get(i)
            .ok_or_else(|| TransferError::Usage(format!("no extent {i}")))?;
        let parts =
            fetch_extent_parts(&self.x, e, i, &self.pool, &self.opts, &self.counters).await?;
        Ok(join_parts(parts, &self.pool))
    }

    /// Failovers, rebuilds and corrupt mappings met so far.
    pub fn report(&self) -> DownloadReport {
        DownloadReport {
            bytes: 0,
            failovers: self.counters.failovers.load(Ordering::Relaxed),
            rebuilt: self.counters.rebuilt.load(Ordering::Relaxed),
            corrupt: self
                .counters
                .corrupt
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
            resumed: 0,
        }
    }
}

fn flatten(
    r: Result<Result<(), TransferError>, tokio::task::JoinError>,
) -> Result<(), TransferError> {
    match r {
        Ok(v) => v,
        Err(e) => Err(TransferError::Output(format!(
            "a download task failed: {e}"
        ))),
    }
}

async fn write_out(
    sink: Sink,
    mut rx: mpsc::Receiver<(u64, Parts, OwnedSemaphorePermit)>,
    pool: Arc<Pool>,
) -> Result<u64, TransferError> {
    let mut total = 0u64;
    let out_err =
        |e: std::io::Error| TransferError::Output(format!("cannot write the output: {e}"));
    match sink {
        Sink::Stream(mut w) => {
            let mut pending: BTreeMap<u64, (Parts, OwnedSemaphorePermit)> = BTreeMap::new();
            let mut next = 0u64;
            while let Some((offset, data, permit)) = rx.recv().await {
                pending.insert(offset, (data, permit));
                while let Some((data, permit)) = pending.remove(&next) {
                    for p in data {
                        w.write_all(&p).await.map_err(out_err)?;
                        next += p.len() as u64;
                        total += p.len() as u64;
                        pool.recycle(p);
                    }
                    drop(permit);
                }
            }
            w.flush().await.map_err(out_err)?;
        }
        // Files (written by the tasks, which send empty buffers) and
        // verification only.
        Sink::File(_) | Sink::Discard => {
            while let Some((_, data, permit)) = rx.recv().await {
                for p in data {
                    total += p.len() as u64;
                    pool.recycle(p);
                }
                drop(permit);
            }
        }
    }
    Ok(total)
}

/// What a mapping whose bytes fail verification is reported as: corrupt
/// data on the depot, or an exNode whose mappings were altered (moved to
/// another range or share: `blake3-placed` checksums bind each to its place).
pub(crate) const CHECKSUM_MISMATCH: &str =
    "integrity check failed: checksum mismatch (the bytes read are not those the exNode records for this range)";

/// Why one mapping could not be used.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The depot failed or refused.
    Depot(String),
    /// The bytes did not match the checksum.
    Corrupt,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Depot(e) => f.write_str(e),
            FetchError::Corrupt => f.write_str(CHECKSUM_MISMATCH),
        }
    }
}

/// The bytes a mapping's allocation holds for it, checked against the
/// mapping's checksum.
pub(crate) async fn fetch_stored(
    pool: &Pool,
    m: &Mapping,
    ticket: Option<&str>,
) -> Result<Vec<u8>, FetchError> {
    let level = m.security.unwrap_or(Security::Legacy);
    let cap_text = m
        .read
        .as_deref()
        .ok_or_else(|| FetchError::Depot("no read capability".into()))?;
    let cap = parse_cap(&m.depot, cap_text).map_err(|e| FetchError::Depot(e.to_string()))?;
    let mut buf = pool.buffer();
    let (mut conn, reused) = pool
        .checkout(&m.depot, level)
        .await
        .map_err(|e| FetchError::Depot(e.to_string()))?;
    let mut r = conn
        .load_into(&cap, m.alloc_offset, m.alloc_length, ticket, &mut buf)
        .await;
    if reused && matches!(&r, Err(e) if e.ibp().is_none()) {
        // A kept connection the depot closed meanwhile (idle timeout,
        // restart): once more on a new one.
        conn = pool
            .fresh(&m.depot, level)
            .await
            .map_err(|e| FetchError::Depot(e.to_string()))?;
        r = conn
            .load_into(&cap, m.alloc_offset, m.alloc_length, ticket, &mut buf)
            .await;
    }
    let n = pool
        .finish(&m.depot, level, conn, r)
        .map_err(|e| FetchError::Depot(e.to_string()))?;
    if n != m.alloc_length {
        return Err(FetchError::Depot(format!(
            "{}: {n} of {} bytes",
            m.depot, m.alloc_length
        )));
    }
    if m.checksum.is_some() {
        let m = m.clone();
        let (ok, buf) =
            tokio::task::spawn_blocking(move || (crypto::verify_mapping(&m, &buf), buf))
                .await
                .map_err(|e| FetchError::Depot(e.to_string()))?;
        if !ok {
            return Err(FetchError::Corrupt);
        }
        return Ok(buf);
    }
    Ok(buf)
}

/// Candidates in the order to try: not known down first, then rotated by
/// `spread` so that ranges are spread over the replicas.
fn order<'a>(pool: &Pool, ms: &[&'a Mapping], spread: usize) -> Vec<&'a Mapping> {
    let n = ms.len().max(1);
    let mut v: Vec<(bool, usize, &Mapping)> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| (pool.is_down(&m.depot), (i + n - spread % n) % n, *m))
        .collect();
    v.sort_by_key(|(down, rot, _)| (*down, *rot));
    v.into_iter().map(|(_, _, m)| m).collect()
}

/// The bytes of an extent in consecutive pieces: one replica's bytes, or
/// an erasure-coded block's data shares (cut to the block's length), as
/// they were loaded: a file sink writes each at its offset, so the shares
/// are never copied into one block (see [`join_parts`] for readers that
/// want one buffer).
pub(crate) type Parts = Vec<Vec<u8>>;

fn parts_len(parts: &Parts) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

/// `parts` in one buffer: the first one, the others appended (and
/// recycled).
fn join_parts(parts: Parts, pool: &Pool) -> Vec<u8> {
    let mut parts = parts.into_iter();
    let mut out = parts.next().unwrap_or_default();
    for p in parts {
        out.extend_from_slice(&p);
        pool.recycle(p);
    }
    out
}

/// The logical bytes of extent `e` (index `i`), decrypted, in pieces.
async fn fetch_extent_parts(
    x: &Exnode,
    e: &Range,
    i: usize,
    pool: &Pool,
    opts: &DownloadOptions,
    counters: &Counters,
) -> Result<Parts, TransferError> {
    let renewed = match &opts.tickets {
        Some(t) => Some(t.get().await),
        None => None,
    };
    let ticket = renewed.as_deref().or(opts.ticket.as_deref());
    let mut data = match &e.group {
        None => vec![fetch_replica(e, i, pool, ticket, counters).await?],
        Some(g) => fetch_group(g, e, pool, ticket, counters).await?,
    };
    if let (Some(_), Some(key), Some(file)) = (&x.encryption, &opts.key, x.file) {
        decrypt(x, e.offset, key.clone(), file, &mut data).await?;
    }
    Ok(data)
}

/// Decrypts the pieces of the block at `offset`, each in place at its
/// offset in the block.
async fn decrypt(
    x: &Exnode,
    offset: u64,
    key: Arc<DataKey>,
    file: Uuid,
    data: &mut Parts,
) -> Result<(), TransferError> {
    let bs = x
        .block_size
        .filter(|&b| b > 0)
        .ok_or_else(|| TransferError::Exnode("an encrypted exNode without a block size".into()))?;
    if offset % bs != 0 || parts_len(data) > bs {
        return Err(TransferError::Exnode(format!(
            "range at {offset} is not one block of {bs} bytes: cannot decrypt"
        )));
    }
    let index = offset / bs;
    let mut parts = std::mem::take(data);
    let r = tokio::task::spawn_blocking(move || {
        let mut at = 0u64;
        let mut r = Ok(());
        for p in parts.iter_mut() {
            r = r.and_then(|()| crypto::apply_keystream_at(&key, &file, index, at, p));
            at += p.len() as u64;
        }
        (r, parts)
    })
    .await
    .map_err(|e| TransferError::Output(e.to_string()))?;
    r.0?;
    *data = r.1;
    Ok(())
}

async fn fetch_replica(
    e: &Range,
    i: usize,
    pool: &Pool,
    ticket: Option<&str>,
    counters: &Counters,
) -> Result<Vec<u8>, TransferError> {
    let mut last = String::from("no replica");
    let ms: Vec<&Mapping> = e.mappings.iter().collect();
    for m in order(pool, &ms, i) {
        match fetch_stored(pool, m, ticket).await {
            Ok(stored) => {
                if m.functions.is_empty() {
                    if stored.len() as u64 == e.length {
                        return Ok(stored);
                    }
                    last = format!(
                        "{}: holds {} bytes, expected {}",
                        m.depot,
                        stored.len(),
                        e.length
                    );
                } else {
                    match lors_e2e::decode(&m.functions, m.e2e_blocksize, m.logical_length, &stored)
                    {
                        Ok(d) => return Ok(d),
                        Err(err) => {
                            last = format!("{}: {err}", m.depot);
                            record_corrupt(counters, m);
                        }
                    }
                }
            }
            Err(FetchError::Corrupt) => {
                record_corrupt(counters, m);
                last = format!("{}: {CHECKSUM_MISMATCH}", m.depot);
            }
            Err(err) => last = err.to_string(),
        }
        tracing::warn!("range at {}: {last}; trying another replica", e.offset);
        counters.failovers.fetch_add(1, Ordering::Relaxed);
    }
    Err(TransferError::Lost {
        offset: e.offset,
        end: e.offset + e.length,
        detail: last,
    })
}

fn record_corrupt(counters: &Counters, m: &Mapping) {
    counters
        .corrupt
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{} (range at {})", m.depot, m.logical_offset));
}

/// At least `k` verified shares of group `g`, data shares first; the
/// range's bytes as its data shares (rebuilt only when one is missing).
async fn fetch_group(
    g: &exnode::EcGroup,
    e: &Range,
    pool: &Pool,
    ticket: Option<&str>,
    counters: &Counters,
) -> Result<Parts, TransferError> {
    let k = g.k as usize;
    let ms: Vec<&Mapping> = e.mappings.iter().collect();
    let (mut have, last) = collect_shares(g, &ms, pool, ticket, counters).await;
    if have.len() < k {
        return Err(TransferError::Lost {
            offset: e.offset,
            end: e.offset + e.length,
            detail: format!("{} of {k} shares readable; last error: {last}", have.len()),
        });
    }
    if have.keys().any(|&i| i >= k) {
        counters.rebuilt.fetch_add(1, Ordering::Relaxed);
    }
    let (len, m, size) = (g.logical_length, g.m as usize, g.shard_size as usize);
    let missing = (0..k).filter(|i| !have.contains_key(i)).count();
    if missing > 0 {
        // Reed-Solomon only for a missing data share, into recycled
        // buffers.
        let mut spare: Vec<Vec<u8>> = (0..missing).map(|_| pool.buffer()).collect();
        have = tokio::task::spawn_blocking(move || {
            let mut have = have;
            codec::restore(k, m, size, &mut have, || spare.pop().unwrap_or_default()).map(|()| have)
        })
        .await
        .map_err(|e| TransferError::Output(e.to_string()))??;
    }
    Ok(data_parts(have, k, size, len, pool))
}

/// The first `len` bytes of the data shares `0..k` of `have` (each `size`
/// bytes), as they are (cut at `len`); the other buffers recycled.
fn data_parts(
    mut have: BTreeMap<usize, Vec<u8>>,
    k: usize,
    size: usize,
    len: u64,
    pool: &Pool,
) -> Parts {
    let mut parts = Vec::with_capacity(k);
    let mut left = len as usize;
    for i in 0..k {
        if let Some(mut s) = have.remove(&i) {
            let n = left.min(size);
            left -= n;
            if n == 0 {
                pool.recycle(s);
                continue;
            }
            s.truncate(n);
            parts.push(s);
        }
    }
    for (_, s) in have {
        pool.recycle(s);
    }
    parts
}

/// Fetches shares of `g` until `k` distinct indices verified or none left:
/// `k` at a time in parallel, one more for each that fails.
pub(crate) async fn collect_shares(
    g: &exnode::EcGroup,
    mappings: &[&Mapping],
    pool: &Pool,
    ticket: Option<&str>,
    counters: &Counters,
) -> (BTreeMap<usize, Vec<u8>>, String) {
    let k = g.k as usize;
    let mut cands: Vec<&Mapping> = mappings.to_vec();
    // Data shares first (no decoding needed), live depots first.
    cands.sort_by_key(|m| {
        (
            pool.is_down(&m.depot),
            m.share.map_or(u16::MAX, |s| s.index) as usize >= k,
            m.share.map_or(u16::MAX, |s| s.index),
        )
    });
    let mut have: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut last = String::from("no share");
    let mut next = 0usize;
    let mut running = FuturesUnordered::new();
    let mut in_flight = std::collections::BTreeSet::new();
    loop {
        while have.len() + running.len() < k && next < cands.len() {
            let m = cands[next];
            next += 1;
            let idx = m.share.map_or(usize::MAX, |s| s.index as usize);
            if have.contains_key(&idx) || in_flight.contains(&idx) {
                continue;
            }
            in_flight.insert(idx);
            running.push(async move { (idx, m, fetch_stored(pool, m, ticket).await) });
        }
        let Some((idx, m, r)) = running.next().await else {
            break;
        };
        in_flight.remove(&idx);
        match r {
            Ok(bytes) if bytes.len() as u64 == g.shard_size => {
                have.insert(idx, bytes);
            }
            Ok(bytes) => {
                last = format!(
                    "{}: share of {} bytes, expected {}",
                    m.depot,
                    bytes.len(),
                    g.shard_size
                );
                counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            Err(FetchError::Corrupt) => {
                record_corrupt(counters, m);
                last = format!("{}: {CHECKSUM_MISMATCH}", m.depot);
                counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                last = err.to_string();
                counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
        }
        if have.len() >= k {
            break;
        }
    }
    (have, last)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::direct::{local_disk, DIRECT_MIN_FILE};

    use super::*;

    fn tickets(not_after: i64, ok: bool, calls: Arc<AtomicUsize>) -> Tickets {
        Tickets::new("old".into(), not_after, move || {
            let calls = calls.clone();
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if ok {
                    Ok((format!("new{n}"), super::super::now() + 600))
                } else {
                    Err("refused: removed from the VO".into())
                }
            })
        })
    }

    /// An encrypted erasure-coded block read back as its data shares,
    /// each decrypted on its own at its offset, is the block: for every
    /// k-subset of the shares (Reed-Solomon only when a data share is
    /// missing).
    #[tokio::test]
    async fn data_shares_decrypted_apart_are_the_block() {
        let pool = Pool::new(
            super::super::SecureSetup::default(),
            std::time::Duration::from_secs(1),
        );
        let key = Arc::new(DataKey::from_bytes([7u8; 16]));
        let file = Uuid::from_u128(0x1234);
        let block_size = 3 * codec::SEGMENT as u64 + 1001;
        for len in [1u64, 999, 2 * codec::SEGMENT as u64, block_size] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let mut cipher = plain.clone();
            crypto::apply_keystream(&key, &file, 2, &mut cipher).unwrap();
            let (k, m) = (3usize, 2usize);
            let shares = codec::encode(&cipher, k, m).unwrap();
            let size = codec::shard_size(len, k) as usize;
            let x = Exnode {
                block_size: Some(block_size),
                ..Exnode::default()
            };
            for drop in [vec![3usize, 4], vec![0, 4], vec![1, 2]] {
                let mut have: BTreeMap<usize, Vec<u8>> = shares
                    .iter()
                    .cloned()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .collect();
                codec::restore(k, m, size, &mut have, Vec::new).unwrap();
                let mut parts = data_parts(have, k, size, len, &pool);
                assert_eq!(parts_len(&parts), len);
                decrypt(&x, 2 * block_size, key.clone(), file, &mut parts)
                    .await
                    .unwrap();
                assert_eq!(
                    join_parts(parts, &pool),
                    plain,
                    "{len} bytes, {drop:?} lost"
                );
            }
        }
    }

    /// Ranges of every alignment, written at once from several threads,
    /// direct or not, read back as written (heads and tails through the
    /// page cache, the middles direct).
    #[test]
    fn file_out_writes_every_range_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let size = DIRECT_MIN_FILE + 12345;
        let content: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        // Cut points: aligned, just off, one byte ranges, a long one.
        let mut cuts = vec![0u64, 1, 4095, 4096, 4097, 8192, 3 << 20];
        cuts.extend([(9 << 20) + 7, 9 << 20 | 4096, DIRECT_MIN_FILE - 1, size]);
        cuts.sort();
        cuts.dedup();
        let ranges: Vec<(u64, u64)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
        for direct in [true, false] {
            let path = dir.path().join(format!("out-{direct}"));
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(size).unwrap();
            let mode = if direct { DirectIo::On } else { DirectIo::Off };
            let out = Arc::new(FileOut::new(f, size, mode));
            if !direct {
                assert!(!out.is_direct());
            }
            std::thread::scope(|s| {
                for chunk in ranges.chunks(3) {
                    let (out, content) = (out.clone(), &content);
                    s.spawn(move || {
                        for &(a, b) in chunk.iter().rev() {
                            // As one part, and as several (cut anywhere).
                            let r = &content[a as usize..b as usize];
                            let parts: Vec<Vec<u8>> = if r.len() % 2 == 0 {
                                vec![r.to_vec()]
                            } else {
                                let c = [r.len() / 3, r.len() / 2];
                                vec![
                                    r[..c[0]].to_vec(),
                                    r[c[0]..c[1]].to_vec(),
                                    r[c[1]..].to_vec(),
                                ]
                            };
                            out.write_all_at(&parts, a).unwrap();
                        }
                    });
                }
            });
            drop(out);
            assert!(std::fs::read(&path).unwrap() == content, "direct {direct}");
        }
    }

    /// `auto` writes directly on local disk file systems only (a memory
    /// file system never), `off` nowhere; small files never.
    #[test]
    fn direct_io_auto_is_for_local_disks_only() {
        assert_eq!(DirectIo::parse(None), DirectIo::Auto);
        assert_eq!(DirectIo::parse(Some("off")), DirectIo::Off);
        assert_eq!(DirectIo::parse(Some(" on")), DirectIo::On);
        assert_eq!(DirectIo::parse(Some("sometimes")), DirectIo::Auto);
        let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
        let f = std::fs::File::create(shm.path().join("out")).unwrap();
        assert!(!local_disk(&f), "tmpfs is not a local disk");
        let out = FileOut::new(f, DIRECT_MIN_FILE, DirectIo::Auto);
        assert!(!out.is_direct(), "auto: no direct writes on tmpfs");
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("out")).unwrap();
        let local = local_disk(&f);
        let g = f.try_clone().unwrap();
        assert!(!FileOut::new(f, DIRECT_MIN_FILE, DirectIo::Off).is_direct());
        assert!(!FileOut::new(g, DIRECT_MIN_FILE - 1, DirectIo::On).is_direct());
        if local {
            let f = std::fs::File::create(dir.path().join("out2")).unwrap();
            assert!(FileOut::new(f, DIRECT_MIN_FILE, DirectIo::Auto).is_direct());
        }
    }

    #[tokio::test]
    async fn a_ticket_is_renewed_only_near_its_expiry() {
        let now = super::super::now();
        let calls = Arc::new(AtomicUsize::new(0));
        let fresh = tickets(now + 600, true, calls.clone());
        assert_eq!(fresh.get().await, "old");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let expiring = tickets(now + TICKET_RENEW_MARGIN - 1, true, calls.clone());
        assert_eq!(expiring.get().await, "new1");
        // Renewed once: the new one lasts.
        assert_eq!(expiring.get().await, "new1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_renewal_keeps_the_old_ticket_for_the_depot_to_judge() {
        let calls = Arc::new(AtomicUsize::new(0));
        let t = tickets(super::super::now() - 10, false, calls.clone());
        assert_eq!(t.get().await, "old");
        assert_eq!(t.get().await, "old");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "tried again each time");
    }
}
