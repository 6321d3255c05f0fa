//! Upload: blocks read from the source, encrypted, replicated or erasure
//! coded, stored on distinct depots in parallel, and described by a new
//! exNode.
//!
//! At most `threads` blocks are in memory (read, being encoded or being
//! stored) at any time, so memory is bounded by
//! `threads × block_size × (1 + pieces)` whatever the file size.
//!
//! When a depot fails (it does not answer, or refuses the allocation or the
//! store), the piece goes to another depot of the list that holds nothing
//! of that block yet, and the failed depot is tried last for later blocks.
//! When no depot is left the upload fails and every allocation it made is
//! released (best effort: one not released expires at the end of its
//! duration).
//!
//! An upload whose [`UploadOptions::cancel`] token is cancelled (Ctrl-C)
//! stops reading, allocates nothing more, abandons the stores in flight
//! and takes the same failure path: [`TransferError::Interrupted`], with
//! what it made released (or, journaled, the stored blocks kept).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use exnode::{EcGroup, Encryption, Exnode, IvDerivation, Mapping, Security, Share};
use ibp_proto::Reliability;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::direct::{DirectIo, DIRECT_ALIGN};
use super::pool::Pool;
use super::{codec, now, Progress, Redundancy, Refusal, Target, TransferError};
use crate::crypto::{self, DataKey};
use ibp_depot_client::ClientError;
use ibp_proto::IbpError;

/// Largest block size accepted (the IV derivation's limit is 64 GiB; a
/// block is held in memory, so far less is sensible).
pub const MAX_BLOCK_SIZE: u64 = 1 << 30;

/// What an upload reads, a block at a time: any [`AsyncRead`] (standard
/// input, a network stream, bytes in memory), or a regular file as a
/// [`FileInput`], read straight into the block's buffer.
pub trait Input {
    /// Reads the next block, up to `max` bytes (up to the end of the
    /// input), into `buf` and gives `buf` back with the count `n`. `buf`
    /// may hold anything when given (an earlier block's bytes) and has
    /// room for `max + DIRECT_ALIGN` bytes; the block is the last `n`
    /// bytes of `buf` when given back: a reader may put up to
    /// `DIRECT_ALIGN - 1` bytes before it, so that it starts at an
    /// aligned address (direct reads).
    fn read_block(
        &mut self,
        buf: Vec<u8>,
        max: usize,
    ) -> impl Future<Output = (Vec<u8>, std::io::Result<usize>)>;
}

impl<R: AsyncRead + Unpin> Input for R {
    async fn read_block(
        &mut self,
        mut buf: Vec<u8>,
        max: usize,
    ) -> (Vec<u8>, std::io::Result<usize>) {
        buf.clear();
        let r = (&mut *self).take(max as u64).read_to_end(&mut buf).await;
        (buf, r)
    }
}

/// A regular file to upload, read on a blocking thread directly into each
/// block's buffer: with direct I/O ([`DirectIo`]: by default a file of at
/// least [`super::direct::DIRECT_MIN_FILE`] on a local disk), else with plain reads (the
/// file system's copy is the only one; `tokio::fs::File` reads into a
/// buffer of its own and copies that again).
pub struct FileInput {
    /// `None` once a read was abandoned (the upload stopped).
    src: Option<FileSource>,
}

struct FileSource {
    file: std::fs::File,
    /// The same file opened with `O_DIRECT`, while direct reads work.
    direct: Option<std::fs::File>,
    /// Offset of the next block.
    at: u64,
    /// Whether `file`'s own position is behind `at` (direct reads and
    /// reads at an offset do not move it).
    seek: bool,
}

impl FileInput {
    /// Reads `file` with direct I/O as `LORS_DIRECT_IO` says
    /// ([`DirectIo::from_env`]).
    pub fn new(file: std::fs::File) -> FileInput {
        FileInput::with_direct_io(file, DirectIo::from_env())
    }

    pub fn with_direct_io(file: std::fs::File, mode: DirectIo) -> FileInput {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let direct = mode.open(&file, size, false);
        FileInput {
            src: Some(FileSource {
                file,
                direct,
                at: 0,
                seek: false,
            }),
        }
    }

    /// Whether blocks are read with direct I/O (for now).
    pub fn is_direct(&self) -> bool {
        self.src.as_ref().is_some_and(|s| s.direct.is_some())
    }
}

impl FileSource {
    fn read(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        let align = DIRECT_ALIGN as usize;
        let lead = buf.as_ptr().align_offset(align);
        if self.direct.is_some() && max % align == 0 && lead < align && buf.capacity() >= lead + max
        {
            return self.read_direct(buf, lead, max);
        }
        self.read_buffered(buf, max)
    }

    /// Plain reads into `buf`'s spare capacity (not zeroed first).
    fn read_buffered(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        use std::io::{Read, Seek};
        if self.seek {
            (&self.file).seek(std::io::SeekFrom::Start(self.at))?;
            self.seek = false;
        }
        buf.clear();
        let n = (&self.file).take(max as u64).read_to_end(buf)?;
        self.at += n as u64;
        Ok(n)
    }

    /// Direct reads into `buf` from `lead` (an aligned address; `max` a
    /// multiple of the alignment). The buffer is extended to `lead + max`
    /// (only bytes it never held are zeroed), read into and cut to what
    /// was read. A read the file system refuses turns direct reads off;
    /// the block's tail at the end of the file (a short read, unaligned)
    /// and everything after a refusal go through the page cache.
    fn read_direct(
        &mut self,
        buf: &mut Vec<u8>,
        lead: usize,
        max: usize,
    ) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        buf.resize(lead + max, 0);
        let mut got = 0;
        while got < max {
            let dst = &mut buf[lead + got..lead + max];
            let at = self.at + got as u64;
            let r = match &self.direct {
                Some(d) if got as u64 % DIRECT_ALIGN == 0 => d.read_at(dst, at),
                _ => self.file.read_at(dst, at),
            };
            match r {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.direct.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(error = %e, "direct read refused; reading through the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        buf.truncate(lead + got);
        self.at += got as u64;
        self.seek = true;
        Ok(got)
    }
}

impl Input for FileInput {
    async fn read_block(
        &mut self,
        mut buf: Vec<u8>,
        max: usize,
    ) -> (Vec<u8>, std::io::Result<usize>) {
        let Some(mut src) = self.src.take() else {
            return (
                buf,
                Err(std::io::Error::other("an earlier read was abandoned")),
            );
        };
        let done = tokio::task::spawn_blocking(move || {
            let r = src.read(&mut buf, max);
            (src, buf, r)
        })
        .await;
        match done {
            Ok((src, buf, r)) => {
                self.src = Some(src);
                (buf, r)
            }
            Err(e) => (
                Vec::new(),
                Err(std::io::Error::other(format!("reading task failed: {e}"))),
            ),
        }
    }
}

/// What to upload and how.
#[derive(Clone)]
pub struct UploadOptions {
    /// The file's UUID (new for a new file, the file's for a new version).
    pub file: Uuid,
    /// The version this exNode will describe (the metadata manager sets it
    /// again on put).
    pub version: u64,
    pub filename: Option<String>,
    pub block_size: u64,
    pub redundancy: Redundancy,
    /// Blocks in flight at once.
    pub threads: usize,
    /// Allocation lifetime, seconds.
    pub duration: i64,
    pub reliability: Reliability,
    /// The data key (a fresh one per version); `None` stores cleartext.
    pub key: Option<Arc<DataKey>>,
    /// Names the wrapped key of this version (recorded in the exNode).
    pub key_id: String,
    /// A resumed upload: blocks already stored (read past, not sent) and
    /// their mappings and groups, merged into the exNode.
    pub done: Option<Arc<DoneBlocks>>,
    /// Called when a block is stored (a journal for `--resume`); with it,
    /// a failed upload keeps the allocations of the blocks it reported
    /// (they are the journal's) and releases only the others.
    pub on_block: Option<BlockHook>,
    /// Cancelled, the upload stops between blocks and pieces (a store in
    /// flight is abandoned) and fails with [`TransferError::Interrupted`]
    /// after its clean-up. `CancellationToken::default()`: never.
    pub cancel: CancellationToken,
}

/// Called with a stored block's index, mappings and group.
pub type BlockHook = Arc<dyn Fn(u64, &[Mapping], Option<&EcGroup>) + Send + Sync>;

/// Called with each allocation made (its depot, security level and MANAGE
/// capability) as soon as the depot answers the ALLOCATE, before anything
/// is stored into it: the journal of allocations in flight that `lors
/// cleanup` releases after a killed upload.
pub type AllocHook = Arc<dyn Fn(&str, Security, &str) + Send + Sync>;

/// What earlier runs of a resumed upload stored.
#[derive(Debug, Default, Clone)]
pub struct DoneBlocks {
    pub blocks: HashSet<u64>,
    pub mappings: Vec<Mapping>,
    pub groups: Vec<EcGroup>,
}

/// One allocation made, for the clean-up of a failed upload.
#[derive(Debug, Clone)]
pub(crate) struct Made {
    pub depot: String,
    pub security: Security,
    pub manage: String,
    /// The block it holds a piece of (`u64::MAX`: not tracked).
    pub block: u64,
}

/// What a stored piece became.
pub(crate) struct Stored {
    pub target: usize,
    pub read: String,
    pub write: Option<String>,
    pub manage: String,
    pub expires: i64,
}

impl Stored {
    /// `template` (range, share, checksum) moved to this allocation.
    pub fn mapping(self, template: &Mapping, target: &Target) -> Mapping {
        Mapping {
            read: Some(self.read),
            write: self.write,
            manage: Some(self.manage),
            depot: target.depot.clone(),
            security: Some(target.security),
            expires: Some(self.expires),
            ..template.clone()
        }
    }
}

/// Uploads `src` to `targets` and returns the exNode describing it. On
/// error nothing is left allocated (best effort).
pub async fn upload<R>(
    src: R,
    targets: &[Target],
    pool: Arc<Pool>,
    opts: &UploadOptions,
    progress: Option<Progress>,
) -> Result<Exnode, TransferError>
where
    R: Input,
{
    upload_tracked(src, targets, pool, opts, progress, None).await
}

/// [`upload`], calling `on_alloc` with each allocation as soon as it is
/// made (before the store into it starts).
pub async fn upload_tracked<R>(
    mut src: R,
    targets: &[Target],
    pool: Arc<Pool>,
    opts: &UploadOptions,
    progress: Option<Progress>,
    on_alloc: Option<AllocHook>,
) -> Result<Exnode, TransferError>
where
    R: Input,
{
    check_options(opts, targets)?;
    let made: Arc<Mutex<Vec<Made>>> = Arc::default();
    let stored: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let result = run(
        &mut src, targets, &pool, opts, progress, &made, &stored, on_alloc,
    )
    .await;
    pool.free_spare();
    match result {
        Ok(x) => Ok(x),
        Err(e) => {
            let mut made = std::mem::take(&mut *made.lock().unwrap_or_else(|p| p.into_inner()));
            let mut kept = 0;
            if opts.on_block.is_some() {
                // Journaled blocks stay for --resume.
                let stored = stored.lock().unwrap_or_else(|p| p.into_inner());
                made.retain(|m| !stored.contains(&m.block));
                kept = stored.len() + opts.done.as_ref().map_or(0, |d| d.blocks.len());
            }
            let not_freed = release_all(&pool, &made).await;
            let e = match e {
                TransferError::Interrupted { .. } => TransferError::Interrupted {
                    released: made.len().saturating_sub(not_freed.len()),
                    kept_blocks: kept,
                },
                e => e,
            };
            Err(with_not_freed(e, not_freed))
        }
    }
}

/// The error of an upload stopped by its token (counts filled in by
/// [`upload`]'s clean-up).
fn interrupted() -> TransferError {
    TransferError::Interrupted {
        released: 0,
        kept_blocks: 0,
    }
}

fn check_options(opts: &UploadOptions, targets: &[Target]) -> Result<(), TransferError> {
    if opts.block_size == 0 || opts.block_size > MAX_BLOCK_SIZE {
        return Err(TransferError::Usage(format!(
            "block size {} is not within 1 byte..{} bytes",
            opts.block_size, MAX_BLOCK_SIZE
        )));
    }
    if opts.threads == 0 {
        return Err(TransferError::Usage("threads must be at least 1".into()));
    }
    match opts.redundancy {
        Redundancy::Copies(0) => {
            return Err(TransferError::Usage("copies must be at least 1".into()))
        }
        Redundancy::Ec { k, m } => codec::check(k as usize, m as usize)?,
        Redundancy::Copies(_) => {}
    }
    let distinct: HashSet<&str> = targets.iter().map(|t| t.depot.as_str()).collect();
    let need = opts.redundancy.pieces();
    if distinct.len() < need || distinct.len() != targets.len() {
        return Err(TransferError::NotEnoughDepots {
            redundancy: opts.redundancy,
            need,
            have: distinct.len(),
        });
    }
    Ok(())
}

/// Frees allocations (DECR with their MANAGE capabilities, confirmed by a
/// PROBE: [`super::maintain::free_allocation`]), at most the pool's
/// timeout each. Returns those not freed as `depot: reason`.
pub(crate) async fn release_all(pool: &Arc<Pool>, made: &[Made]) -> Vec<String> {
    let mut not_freed: Vec<String> = release_each(pool, made)
        .await
        .into_iter()
        .flatten()
        .collect();
    not_freed.sort();
    not_freed
}

/// [`release_all`], one outcome per allocation in `made`'s order: `None`
/// freed, else `depot: reason`. At most
/// [`super::maintain::MANAGE_IN_FLIGHT`] at once (each holds a depot
/// connection; thousands at once would pass the depots' per-address
/// connection limits).
pub(crate) async fn release_each(pool: &Arc<Pool>, made: &[Made]) -> Vec<Option<String>> {
    let sem = Arc::new(Semaphore::new(super::maintain::MANAGE_IN_FLIGHT));
    let mut set = JoinSet::new();
    for (i, m) in made.iter().cloned().enumerate() {
        let (pool, sem) = (pool.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t = pool.timeout();
            let r = if pool.is_down(&m.depot) {
                Err("the depot did not answer earlier".to_owned())
            } else {
                tokio::time::timeout(
                    t,
                    super::maintain::free_allocation(&pool, &m.depot, m.security, &m.manage),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", t.as_secs())))
            };
            (i, r.err().map(|why| format!("{}: {why}", m.depot)))
        });
    }
    let mut out: Vec<Option<String>> = made
        .iter()
        .map(|m| Some(format!("{}: clean-up task failed", m.depot)))
        .collect();
    while let Some(r) = set.join_next().await {
        if let Ok((i, r)) = r {
            out[i] = r;
        }
    }
    out
}

/// `e`, with the allocations its clean-up could not free (if any).
pub(crate) fn with_not_freed(e: TransferError, not_freed: Vec<String>) -> TransferError {
    if not_freed.is_empty() {
        e
    } else {
        TransferError::NotFreed {
            source: Box::new(e),
            not_freed,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run<R>(
    src: &mut R,
    targets: &[Target],
    pool: &Arc<Pool>,
    opts: &UploadOptions,
    progress: Option<Progress>,
    made: &Arc<Mutex<Vec<Made>>>,
    stored: &Arc<Mutex<HashSet<u64>>>,
    on_alloc: Option<AllocHook>,
) -> Result<Exnode, TransferError>
where
    R: Input,
{
    let targets: Arc<Vec<Target>> = Arc::new(targets.to_vec());
    let done = opts.done.clone().unwrap_or_default();
    let sem = Arc::new(Semaphore::new(opts.threads));
    let mut tasks: JoinSet<Result<BlockResult, TransferError>> = JoinSet::new();
    let mut mappings = done.mappings.clone();
    let mut groups = done.groups.clone();
    let mut offset = 0u64;
    let mut index = 0u64;
    let cancel = &opts.cancel;
    let mut stopped = false;
    let capacity = match opts.redundancy {
        Redundancy::Ec { k, m } => codec::coded_capacity(opts.block_size, k as usize, m as usize),
        Redundancy::Copies(_) => opts.block_size as usize,
    };
    loop {
        if cancel.is_cancelled() {
            stopped = true;
            break;
        }
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                stopped = true;
                break;
            }
            p = sem.clone().acquire_owned() => {
                p.map_err(|_| TransferError::Input("upload cancelled".into()))?
            }
        };
        // Capacity, not zeroed bytes: a small file does not touch a whole
        // block's pages, a large one is not memset before being read. A
        // block buffer of an earlier block is reused (`Pool::recycle`);
        // erasure coded, with room for the padding and parity shares the
        // block is coded into in place (`codec::encode_in_place`).
        // Room for the block coded in place, after up to DIRECT_ALIGN - 1
        // bytes of lead (see `Input`).
        let mut block = pool.buffer_as_is();
        let room = capacity + DIRECT_ALIGN as usize;
        block.reserve(room.saturating_sub(block.len()));
        let (block, n) = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                stopped = true;
                break;
            }
            (block, r) = src.read_block(block, opts.block_size as usize) => {
                let n = r.map_err(|e| TransferError::Input(format!("cannot read the source: {e}")))?;
                (block, n)
            }
        };
        if n == 0 {
            pool.recycle(block);
            break;
        }
        // The block is the last n bytes of the buffer.
        let Some(lead) = block.len().checked_sub(n) else {
            return Err(TransferError::Input(format!(
                "the source said it read {n} bytes into a buffer of {}",
                block.len()
            )));
        };
        if done.blocks.contains(&index) {
            // Stored by an earlier run: read past it.
            drop(permit);
            if let Some(p) = &progress {
                p(n as u64);
            }
            offset += n as u64;
            index += 1;
            if (n as u64) < opts.block_size {
                break;
            }
            continue;
        }
        let ctx = BlockCtx {
            index,
            offset,
            targets: targets.clone(),
            pool: pool.clone(),
            opts: opts.clone(),
            made: made.clone(),
            on_alloc: on_alloc.clone(),
            progress: progress.clone(),
        };
        let (hook, stored, this) = (opts.on_block.clone(), stored.clone(), index);
        tasks.spawn(async move {
            let r = ctx.process(block, lead).await;
            if let (Ok((m, g)), Some(hook)) = (&r, &hook) {
                hook(this, m, g.as_ref());
                stored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(this);
            }
            drop(permit);
            r
        });
        offset += n as u64;
        index += 1;
        // Surface a failure early instead of reading the rest.
        while let Some(done) = tasks.try_join_next() {
            match joined(done) {
                Ok((m, g)) => {
                    mappings.extend(m);
                    groups.extend(g);
                }
                Err(TransferError::Interrupted { .. }) => stopped = true,
                Err(e) => return Err(e),
            }
        }
        if stopped || (n as u64) < opts.block_size {
            break;
        }
    }
    if stopped {
        // Let the blocks in flight stop (they check the token before each
        // allocation) so that every allocation made is known and released.
        while tasks.join_next().await.is_some() {}
        return Err(interrupted());
    }
    while let Some(done) = tasks.join_next().await {
        let (m, g) = joined(done)?;
        mappings.extend(m);
        groups.extend(g);
    }
    mappings.sort_by_key(|m| (m.logical_offset, m.share.map(|s| s.index)));
    groups.sort_by_key(|g| g.id);
    let x = Exnode {
        file: Some(opts.file),
        version: opts.version,
        size: offset,
        filename: opts.filename.clone(),
        block_size: Some(opts.block_size),
        encryption: opts.key.as_ref().map(|_| Encryption {
            cipher: exnode::Cipher::Aes128Ctr,
            key_id: opts.key_id.clone(),
            iv: IvDerivation::UuidBlock,
        }),
        ec_groups: groups,
        mappings,
        metadata: Vec::new(),
    };
    x.validate()
        .map_err(|e| TransferError::Exnode(format!("the upload made an invalid exNode: {e}")))?;
    Ok(x)
}

fn joined<T>(
    r: Result<Result<T, TransferError>, tokio::task::JoinError>,
) -> Result<T, TransferError> {
    match r {
        Ok(v) => v,
        Err(e) => Err(TransferError::Input(format!("an upload task failed: {e}"))),
    }
}

/// A block's mappings and, erasure coded, its group.
type BlockResult = (Vec<Mapping>, Option<EcGroup>);
/// One piece to store: its number, bytes, checksum and share index.
type Piece = (usize, Slice, exnode::Checksum, Option<u16>);

/// The bytes of one piece: a range of its block's buffer (the whole block
/// for a copy, one share of the block coded in place for erasure coding),
/// shared by the stores of the block's pieces.
#[derive(Clone)]
struct Slice {
    buf: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Slice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

struct BlockCtx {
    index: u64,
    offset: u64,
    targets: Arc<Vec<Target>>,
    pool: Arc<Pool>,
    opts: UploadOptions,
    made: Arc<Mutex<Vec<Made>>>,
    on_alloc: Option<AllocHook>,
    progress: Option<Progress>,
}

impl BlockCtx {
    /// Stores the block `block[lead..]`.
    async fn process(
        self,
        block: Vec<u8>,
        lead: usize,
    ) -> Result<(Vec<Mapping>, Option<EcGroup>), TransferError> {
        if self.opts.cancel.is_cancelled() {
            return Err(interrupted());
        }
        let len = (block.len() - lead) as u64;
        let key = self.opts.key.clone();
        let file = self.opts.file;
        let index = self.index;
        let redundancy = self.opts.redundancy;
        let offset = self.offset;
        // Encryption, erasure coding and checksums off the I/O threads.
        // Erasure coded in place: every share is a slice of the block's
        // buffer, no share copied.
        let pieces = tokio::task::spawn_blocking(move || -> Result<_, TransferError> {
            let mut block = block;
            if let Some(key) = &key {
                crypto::apply_keystream(key, &file, index, &mut block[lead..])?;
            }
            let ranges: Vec<std::ops::Range<usize>> = match redundancy {
                Redundancy::Copies(_) => std::iter::once(lead..block.len()).collect(),
                Redundancy::Ec { k, m } => {
                    let size =
                        codec::encode_in_place_from(&mut block, lead, k as usize, m as usize)?;
                    (0..(k + m) as usize)
                        .map(|j| lead + j * size..lead + (j + 1) * size)
                        .collect()
                }
            };
            let block = Arc::new(block);
            let ec = matches!(redundancy, Redundancy::Ec { .. });
            let pieces = ranges
                .into_iter()
                .map(|range| Slice {
                    buf: block.clone(),
                    range,
                })
                .enumerate()
                .map(|(j, p)| {
                    // Bound to the range and share the mapping will hold
                    // (as in the Mapping built below).
                    let place = exnode::Place {
                        logical_offset: offset,
                        logical_length: len,
                        share: ec.then_some(Share {
                            group: index as u32,
                            index: j as u16,
                        }),
                    };
                    let sum = crypto::checksum_at(&place, &p);
                    (p, sum)
                })
                .collect::<Vec<_>>();
            Ok(pieces)
        })
        .await
        .map_err(|e| TransferError::Input(format!("encoding task failed: {e}")))??;

        let claimed = Arc::new(Mutex::new(HashSet::new()));
        let n_targets = self.targets.len();
        let mut set = JoinSet::new();
        let plan: Vec<Piece> = match redundancy {
            Redundancy::Copies(n) => (0..n as usize)
                .map(|r| (r, pieces[0].0.clone(), pieces[0].1, None))
                .collect(),
            Redundancy::Ec { .. } => pieces
                .iter()
                .enumerate()
                .map(|(j, (p, s))| (j, p.clone(), *s, Some(j as u16)))
                .collect(),
        };
        // Preferred depots first, claimed before any store starts, so that
        // a fallback never takes another piece's preferred depot.
        {
            let mut c = claimed.lock().unwrap_or_else(|p| p.into_inner());
            for (j, ..) in &plan {
                c.insert(
                    self.targets[(self.index as usize + j) % n_targets]
                        .depot
                        .clone(),
                );
            }
        }
        // Replicas: the client stores the first one, the depots COPY it to
        // the others (each falling back to a send by the client).
        let by_copy = matches!(redundancy, Redundancy::Copies(n) if n > 1);
        let mut plan = plan;
        let replicas: Vec<usize> = if by_copy {
            plan.drain(1..)
                .map(|(j, ..)| (self.index as usize + j) % n_targets)
                .collect()
        } else {
            Vec::new()
        };
        for (j, data, sum, share) in plan {
            let preferred = (self.index as usize + j) % n_targets;
            let replicas = replicas.clone();
            let placer = Placer {
                targets: self.targets.clone(),
                pool: self.pool.clone(),
                claimed: claimed.clone(),
                made: self.made.clone(),
                on_alloc: self.on_alloc.clone(),
                opts_duration: self.opts.duration,
                reliability: self.opts.reliability,
                uuid: self.opts.file.to_string(),
                block: self.index,
                cancel: self.opts.cancel.clone(),
            };
            set.spawn(async move {
                let stored = placer.place(Some(preferred), &data).await?;
                let len = data.len() as u64;
                if replicas.is_empty() {
                    return Ok::<_, TransferError>(vec![(stored, sum, share, len)]);
                }
                let placer = Arc::new(placer);
                let t = &placer.targets[stored.target];
                let from = CopyFrom {
                    depot: t.depot.clone(),
                    security: t.security,
                    read: stored.read.clone(),
                    offset: 0,
                    size: len,
                    others: replicas
                        .iter()
                        .map(|&r| placer.targets[r].depot.clone())
                        .collect(),
                };
                let mut copies = JoinSet::new();
                for r in replicas {
                    let (placer, from, data) = (placer.clone(), from.clone(), data.clone());
                    copies.spawn(async move {
                        if from.reaches(placer.targets[r].security) {
                            placer.copy_or_place(r, &from, &data).await
                        } else {
                            placer.place(Some(r), &data).await
                        }
                    });
                }
                let mut all = vec![(stored, sum, share, len)];
                let mut failed = None;
                while let Some(c) = copies.join_next().await {
                    match joined(c) {
                        Ok(s) => all.push((s, sum, share, len)),
                        // The first failure; the others are awaited so that
                        // each allocation they made is recorded.
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(all),
                }
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            let pieces = match joined(r) {
                Ok(v) => v,
                Err(TransferError::Interrupted { .. }) => {
                    // The other pieces stop too: wait for them, so that
                    // each allocation they made is recorded.
                    while set.join_next().await.is_some() {}
                    return Err(interrupted());
                }
                Err(e @ TransferError::Refused { .. }) => {
                    while set.join_next().await.is_some() {}
                    return Err(e);
                }
                Err(TransferError::PlacementFailed { last, .. }) => {
                    return Err(TransferError::PlacementFailed {
                        offset: self.offset,
                        last,
                    })
                }
                Err(e) => return Err(e),
            };
            for (stored, sum, share, alloc_len) in pieces {
                let t = &self.targets[stored.target];
                out.push(Mapping {
                    logical_offset: self.offset,
                    logical_length: len,
                    alloc_offset: 0,
                    alloc_length: alloc_len,
                    e2e_blocksize: 0,
                    read: Some(stored.read),
                    write: stored.write,
                    manage: Some(stored.manage),
                    depot: t.depot.clone(),
                    security: Some(t.security),
                    expires: Some(stored.expires),
                    checksum: Some(sum),
                    share: share.map(|index| Share {
                        group: self.index as u32,
                        index,
                    }),
                    functions: Vec::new(),
                    metadata: Vec::new(),
                });
            }
        }
        let group = match redundancy {
            Redundancy::Ec { k, m } => Some(EcGroup {
                id: self.index as u32,
                k,
                m,
                logical_offset: self.offset,
                logical_length: len,
                shard_size: codec::shard_size(len, k as usize),
            }),
            Redundancy::Copies(_) => None,
        };
        // Every store is done: the block's buffer (every piece is a slice
        // of it) is ours again.
        for (p, _) in pieces {
            if let Ok(b) = Arc::try_unwrap(p.buf) {
                self.pool.recycle(b);
            }
        }
        if let Some(p) = &self.progress {
            p(len);
        }
        Ok((out, group))
    }
}

/// Places one piece on a depot, falling back to the others.
pub(crate) struct Placer {
    pub targets: Arc<Vec<Target>>,
    pub pool: Arc<Pool>,
    /// Depots that already hold (or are about to hold) a piece of the
    /// block: never chosen again.
    pub claimed: Arc<Mutex<HashSet<String>>>,
    pub made: Arc<Mutex<Vec<Made>>>,
    /// Told of each allocation before the store into it.
    pub on_alloc: Option<AllocHook>,
    pub opts_duration: i64,
    pub reliability: Reliability,
    pub uuid: String,
    /// The block the pieces belong to (for a resumable upload's clean-up).
    pub block: u64,
    /// Cancelled: no new allocation, and a store in flight is abandoned.
    pub cancel: CancellationToken,
}

impl Placer {
    /// Stores `data` on `preferred` (an index into `targets`, already
    /// claimed), else on another unclaimed depot.
    pub async fn place(
        &self,
        preferred: Option<usize>,
        data: &[u8],
    ) -> Result<Stored, TransferError> {
        let mut candidate = preferred.or_else(|| self.next_candidate());
        let mut last = format!(
            "each of the {} depot(s) offered already holds a piece of this block: \
             more pieces need more depots (fewer --copies, or more depots with --depot or \
             registered at the L-Bone)",
            self.targets.len()
        );
        let mut refusals = Refusals::default();
        while let Some(t) = candidate {
            if self.cancel.is_cancelled() {
                return Err(interrupted());
            }
            match self.store_on(t, data).await {
                Ok(s) => return Ok(s),
                Err(e @ TransferError::Interrupted { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("storing on {} failed: {e}", self.targets[t].depot);
                    refusals.note(&e);
                    last = e.to_string();
                }
            }
            candidate = self.next_candidate();
        }
        Err(refusals
            .all_alike()
            .unwrap_or(TransferError::PlacementFailed { offset: 0, last }))
    }

    /// An unclaimed depot, those not known to be down first; claims it.
    pub(crate) fn next_candidate(&self) -> Option<usize> {
        let mut c = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.targets.len();
        let pick = (0..n)
            .filter(|&i| !c.contains(&self.targets[i].depot))
            .min_by_key(|&i| self.pool.is_down(&self.targets[i].depot));
        if let Some(i) = pick {
            c.insert(self.targets[i].depot.clone());
        }
        pick
    }

    /// An allocation of `size` bytes on depot `t`, recorded (in `made`
    /// and to the allocation hook) before anything goes into it; the
    /// connection it was made on.
    async fn allocate_on(
        &self,
        t: usize,
        size: u64,
    ) -> Result<(ibp_depot_client::Connection, ibp_depot_client::Caps, Made), TransferError> {
        let target = &self.targets[t];
        let (depot, level) = (target.depot.as_str(), target.security);
        let mut conn = self.pool.get(depot, level).await?;
        let r = conn
            .allocate(self.reliability, self.opts_duration, size)
            .await;
        let caps = self.pool.check(depot, r)?;
        let made = Made {
            depot: depot.to_owned(),
            security: level,
            manage: caps.manage.to_string(),
            block: self.block,
        };
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(made.clone());
        if let Some(hook) = &self.on_alloc {
            hook(depot, level, &made.manage);
        }
        Ok((conn, caps, made))
    }

    async fn store_on(&self, t: usize, data: &[u8]) -> Result<Stored, TransferError> {
        let target = &self.targets[t];
        let (depot, level) = (target.depot.as_str(), target.security);
        let (mut conn, caps, made) = self.allocate_on(t, data.len() as u64).await?;
        let manage = made.manage;
        let expires = now().saturating_add(self.opts_duration);
        // The allocation is recorded: the store may be abandoned (and the
        // connection with it) without losing track of it.
        let r = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(interrupted()),
            r = conn.store(&caps.write, &self.uuid, data) => r,
        };
        let n = self.pool.finish(depot, level, conn, r)?;
        if n != data.len() as u64 {
            return Err(TransferError::Depot(super::DepotError::Client {
                depot: depot.to_owned(),
                source: ibp_depot_client::ClientError::Io(std::io::Error::other(format!(
                    "stored {n} of {} bytes",
                    data.len()
                ))),
            }));
        }
        Ok(Stored {
            target: t,
            read: caps.read.to_string(),
            // Secure allocations: a WRITE capability is of no use to
            // readers of the exNode; legacy ones keep it (LoRS writes it).
            write: (level == Security::Legacy).then(|| caps.write.to_string()),
            manage,
            expires,
        })
    }
}

/// A stored piece that the depots copy to the other replicas.
#[derive(Clone)]
pub(crate) struct CopyFrom {
    pub depot: String,
    pub security: Security,
    /// Its READ capability.
    pub read: String,
    pub offset: u64,
    pub size: u64,
    /// The depots it is about to copy to (their grants in one request).
    pub others: Vec<String>,
}

impl CopyFrom {
    /// Whether a depot COPY can reach a `level` target: legacy to legacy
    /// (the legacy port cannot reach secure allocations), secure to secure.
    pub fn reaches(&self, level: Security) -> bool {
        (self.security == Security::Legacy) == (level == Security::Legacy)
    }
}

impl Placer {
    /// A new allocation on depot `t` (already claimed) filled by depot
    /// COPY from `from` (`size` bytes; byte for byte, so the piece's
    /// checksum is the source's). A COPY that fails releases the
    /// allocation (best effort) and is the error: the caller sends the
    /// piece itself.
    pub async fn copy_on(&self, t: usize, from: &CopyFrom) -> Result<Stored, TransferError> {
        let target = &self.targets[t];
        let (depot, level) = (target.depot.as_str(), target.security);
        let (conn, caps, made) = self.allocate_on(t, from.size).await?;
        self.pool.put(depot, level, conn);
        let manage = made.manage.clone();
        let expires = now().saturating_add(self.opts_duration);
        let copied = async {
            let read = super::pool::parse_cap(&from.depot, &from.read)?;
            let others: Vec<String> = from
                .others
                .iter()
                .filter(|o| *o != depot)
                .cloned()
                .collect();
            let n = self
                .pool
                .copy(
                    &from.depot,
                    from.security,
                    &read,
                    depot,
                    &caps.write,
                    from.offset,
                    from.size,
                    &self.uuid,
                    &others,
                )
                .await?;
            if n != from.size {
                return Err(super::DepotError::Client {
                    depot: from.depot.clone(),
                    source: ClientError::Io(std::io::Error::other(format!(
                        "copied {n} of {} bytes",
                        from.size
                    ))),
                });
            }
            Ok(())
        };
        let r = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(interrupted()),
            r = copied => r,
        };
        if let Err(e) = r {
            // What the failed COPY left is of no use: released now, not
            // kept until the upload ends.
            if release_all(&self.pool, std::slice::from_ref(&made))
                .await
                .is_empty()
            {
                self.made
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|m| m.manage != made.manage);
            }
            return Err(e.into());
        }
        self.pool.copied(from.size);
        Ok(Stored {
            target: t,
            read: caps.read.to_string(),
            write: (level == Security::Legacy).then(|| caps.write.to_string()),
            manage,
            expires,
        })
    }

    /// [`copy_on`](Self::copy_on), else (the COPY failed, or one between
    /// these depots failed before) the piece sent by the client: to `t`
    /// again, else to another unclaimed depot.
    pub async fn copy_or_place(
        &self,
        t: usize,
        from: &CopyFrom,
        data: &[u8],
    ) -> Result<Stored, TransferError> {
        if !self.pool.copy_usable(&from.depot, &self.targets[t].depot) {
            return self.place(Some(t), data).await;
        }
        match self.copy_on(t, from).await {
            Ok(s) => Ok(s),
            Err(e @ TransferError::Interrupted { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(
                    "depot COPY from {} to {} failed ({e}): the client sends this replica itself",
                    from.depot,
                    self.targets[t].depot
                );
                self.pool.copy_failed(&from.depot, &self.targets[t].depot);
                self.place(Some(t), data).await
            }
        }
    }
}

/// The refusals of the depots tried for one piece: when all of them
/// refused for the same reason of policy (a quota, the duration), that
/// reason is the error, not "no depot left".
#[derive(Default)]
struct Refusals {
    kind: Option<Refusal>,
    /// A failure of another kind (or of another reason) was seen.
    mixed: bool,
    details: Vec<String>,
}

impl Refusals {
    fn note(&mut self, e: &TransferError) {
        let kind = match e {
            TransferError::Depot(super::DepotError::Client { source, .. }) => match source {
                ClientError::Refused {
                    error: IbpError::WouldExceedLimit,
                    reason,
                } if reason.contains("quota") => Some(Refusal::Quota),
                c if c.ibp() == Some(IbpError::LongDuration) => Some(Refusal::Duration),
                _ => None,
            },
            _ => None,
        };
        match (kind, self.kind) {
            (Some(k), None) if !self.mixed && self.details.is_empty() => self.kind = Some(k),
            (Some(k), Some(had)) if k == had => {}
            _ => self.mixed = true,
        }
        self.details.push(e.to_string());
    }

    fn all_alike(self) -> Option<TransferError> {
        let kind = self.kind.filter(|_| !self.mixed)?;
        Some(TransferError::Refused {
            kind,
            detail: self.details.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::DepotError;

    fn refused(error: IbpError, reason: &str) -> TransferError {
        TransferError::Depot(DepotError::Client {
            depot: "d:1".into(),
            source: ClientError::Refused {
                error,
                reason: reason.into(),
            },
        })
    }

    /// A file read block by block through `FileInput` gives the same
    /// blocks as through `AsyncRead`, appended to the buffer given.
    #[tokio::test]
    async fn a_file_input_reads_the_same_blocks_as_async_read() {
        use std::io::Write;
        // Larger than DIRECT_MIN_FILE and not a multiple of the alignment,
        // so the last block ends with an unaligned tail.
        let size = super::super::direct::DIRECT_MIN_FILE as usize + 12_345;
        let data: Vec<u8> = (0..size as u32).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        let local = super::super::direct::local_disk(f.as_file());
        // Aligned blocks (direct reads where the file system has them),
        // then blocks no direct read can take.
        for (max, mode) in [
            (4 << 20, DirectIo::On),
            (4 << 20, DirectIo::Off),
            (3_000_000, DirectIo::On),
        ] {
            let mut file = FileInput::with_direct_io(f.reopen().unwrap(), mode);
            if mode == DirectIo::On && local {
                assert!(file.is_direct(), "ext4/XFS take O_DIRECT reads");
            }
            let mut stream = &data[..];
            let mut at = 0;
            // Each buffer comes dirty, as a recycled one does: longer or
            // shorter than the block, with stale bytes.
            let mut dirty = vec![0xEE; 7];
            loop {
                let mut buf = std::mem::take(&mut dirty);
                buf.reserve(max + DIRECT_ALIGN as usize);
                let (a, n) = file.read_block(buf, max).await;
                let (b, m) = stream.read_block(vec![0xEE; 3], max).await;
                let (n, m) = (n.unwrap(), m.unwrap());
                assert_eq!(n, m, "{max}-byte blocks, {mode:?}, at {at}");
                assert_eq!(b, &data[at..at + m], "an AsyncRead gives the block alone");
                assert!(
                    a.len() - n < DIRECT_ALIGN as usize,
                    "lead below the alignment"
                );
                assert!(
                    a[a.len() - n..] == data[at..at + n],
                    "block at {at} differs"
                );
                at += n;
                dirty = a;
                dirty.extend_from_slice(&[0xEE; 100]);
                if n < max {
                    break;
                }
            }
            assert_eq!(at, data.len(), "{max}-byte blocks, {mode:?}");
        }
    }

    #[test]
    fn every_depot_refusing_alike_is_that_refusal_else_no_depot_left() {
        let quota = || refused(IbpError::WouldExceedLimit, "user quota exceeded: ...");
        let mut r = Refusals::default();
        r.note(&quota());
        r.note(&quota());
        let e = r.all_alike().expect("a quota refusal");
        assert!(matches!(
            e,
            TransferError::Refused {
                kind: Refusal::Quota,
                ..
            }
        ));
        let err = crate::credentials::Error::from(e);
        assert_eq!(err.exit_code(), crate::exit::REFUSED);
        assert!(err.to_string().contains("quota refusal"), "{err}");

        let mut r = Refusals::default();
        r.note(&TransferError::Depot(DepotError::Client {
            depot: "d:1".into(),
            source: ClientError::Ibp(IbpError::LongDuration),
        }));
        let err = crate::credentials::Error::from(r.all_alike().expect("a duration refusal"));
        assert_eq!(err.exit_code(), crate::exit::USAGE);
        assert!(err.to_string().contains("--duration"), "{err}");

        // Mixed reasons, a full depot (no quota named) or a depot that did
        // not answer: no depot left, as before.
        let mut r = Refusals::default();
        r.note(&quota());
        r.note(&refused(IbpError::LongDuration, "duration 9s is over"));
        assert!(r.all_alike().is_none());
        let mut r = Refusals::default();
        r.note(&refused(IbpError::WouldExceedLimit, "no space"));
        assert!(r.all_alike().is_none());
        let mut r = Refusals::default();
        r.note(&TransferError::Input("x".into()));
        r.note(&quota());
        assert!(r.all_alike().is_none());
        assert!(Refusals::default().all_alike().is_none());
    }
}
