//! Random access to a file on the grid: [`FileReader`] reads any byte range
//! of a file (by path at the metadata manager, or an `--xnd` exNode),
//! fetching only the extents that hold it, each verified and decrypted as
//! `download` does, failing over between replicas and rebuilding from
//! parity.
//!
//! An extent is the unit fetched: one block of the upload (its
//! `--block-size`), read whole from one replica or rebuilt from `k`
//! erasure-coded shares, checked against its checksums, then decrypted.
//! A reader keeps the decrypted extents it fetched in a cache bounded by
//! [`ReaderOptions::cache_bytes`] (least recently used first out), fetches
//! each extent once however many reads want it at the same moment, and
//! reads ahead of a sequential reader.
//!
//! Thread safety: a [`FileReader`] is `Send + Sync` and cheap to clone;
//! clones share one cache, and `read_at` may be called from several tasks
//! or threads at once, each inside a tokio runtime. A fetch runs as a task
//! of the runtime whose `read_at` started it (reads of one reader from
//! several runtimes wait on each other's fetches: keep those runtimes
//! alive, or use one). Fetches still running when the last clone is
//! dropped are aborted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::download::{open, renewed_tickets};
use super::{download_pool, Grid, Source};
use crate::credentials::Error;
use crate::transfer::{DownloadOptions, DownloadReport, ExtentReader};

/// Largest [`ReaderOptions::read_ahead`].
pub const MAX_READ_AHEAD: usize = 64;
/// Largest [`ReaderOptions::cache_bytes`]: 64 GiB.
pub const MAX_CACHE_BYTES: u64 = 64 << 30;

/// How a [`FileReader`] caches and reads ahead; checked by
/// [`FileReader::open`] (see [`ReaderOptions::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Bytes of decrypted extents kept for later reads, at most
    /// [`MAX_CACHE_BYTES`] (default 64 MiB). The last extent fetched is
    /// kept whatever this says, so 0 keeps exactly one extent.
    pub cache_bytes: u64,
    /// Extents fetched in the background ahead of a sequential reader, and
    /// fetched at once by one read spanning several extents (besides the
    /// one it is copying from); at most [`MAX_READ_AHEAD`] (default 4).
    /// Fewer when the cache cannot hold them: the extent being read plus
    /// those fetched ahead never exceed `cache_bytes`. 0: no read-ahead,
    /// one extent fetched at a time.
    pub read_ahead: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cache_bytes: 64 << 20,
            read_ahead: 4,
        }
    }
}

impl ReaderOptions {
    /// Refuses values out of range ([`Error::Usage`]).
    pub fn check(&self) -> Result<(), Error> {
        if self.read_ahead > MAX_READ_AHEAD {
            return Err(Error::Usage(format!(
                "read-ahead of {} extents: at most {MAX_READ_AHEAD}",
                self.read_ahead
            )));
        }
        if self.cache_bytes > MAX_CACHE_BYTES {
            return Err(Error::Usage(format!(
                "a cache of {} bytes: at most {MAX_CACHE_BYTES}",
                self.cache_bytes
            )));
        }
        Ok(())
    }
}

/// What a [`FileReader`] (all its clones) did so far, and holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Extent fetches from the depots started (by reads and read-ahead),
    /// whether they succeeded or not. Concurrent reads of one extent
    /// count one fetch.
    pub fetched: u64,
    /// Of `fetched`, those started as read-ahead.
    pub read_ahead: u64,
    /// Of `fetched`, those that failed (nothing cached; a read-ahead
    /// failure is retried once by the read that wants the extent, and only
    /// that retry's failure is returned).
    pub failed: u64,
    /// Extents a read found in the cache (no fetch, no wait).
    pub hits: u64,
    /// Bytes of decrypted extents in the cache now: at most `cache_bytes`,
    /// or one extent's when an extent is larger.
    pub cached_bytes: u64,
    /// Extents in the cache now.
    pub cached_extents: usize,
}

/// An open file for reading at any offset. Cheap to clone; clones share
/// the cache. `read_at` may be called from several tasks at once.
#[derive(Clone)]
pub struct FileReader {
    inner: Arc<Handle>,
}

/// What the clones of one reader share. The fetch tasks hold only
/// [`Shared`], so dropping the last clone drops the [`JoinSet`], which
/// aborts them.
struct Handle {
    shared: Arc<Shared>,
    tasks: Mutex<JoinSet<()>>,
}

struct Shared {
    extents: ExtentReader,
    opts: ReaderOptions,
    state: Mutex<State>,
    fetched: AtomicU64,
    read_ahead: AtomicU64,
    failed: AtomicU64,
    hits: AtomicU64,
}

type Bytes = Arc<Vec<u8>>;
/// A fetch's result once it ended (`None` before).
type Outcome = Option<Result<Bytes, Arc<Error>>>;

enum Slot {
    /// Cached; `tick` orders the LRU.
    Ready { data: Bytes, tick: u64 },
    /// Being fetched by the task of fetch number `flight`; its result
    /// comes on `rx`.
    Loading {
        flight: u64,
        rx: watch::Receiver<Outcome>,
        background: bool,
    },
}

#[derive(Default)]
struct State {
    slots: HashMap<usize, Slot>,
    /// The `Ready` slots by last use, oldest first.
    lru: BTreeMap<u64, usize>,
    cached: u64,
    tick: u64,
    flights: u64,
    /// Where the last read ended (sequential access continues there).
    last_end: Option<u64>,
}

/// A fetch registered as `Loading`, for its task to run.
struct Launch {
    index: usize,
    flight: u64,
    tx: watch::Sender<Outcome>,
}

impl State {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Marks a cached extent as just used.
    fn touch(&mut self, i: usize) {
        let t = self.next_tick();
        if let Some(Slot::Ready { tick, .. }) = self.slots.get_mut(&i) {
            self.lru.remove(tick);
            *tick = t;
            self.lru.insert(t, i);
        }
    }

    /// Registers a fetch of extent `i` (which has no slot).
    fn launch(&mut self, i: usize, background: bool) -> (watch::Receiver<Outcome>, Launch) {
        self.flights += 1;
        let flight = self.flights;
        let (tx, rx) = watch::channel(None);
        self.slots.insert(
            i,
            Slot::Loading {
                flight,
                rx: rx.clone(),
                background,
            },
        );
        (
            rx,
            Launch {
                index: i,
                flight,
                tx,
            },
        )
    }

    fn is_flight(&self, i: usize, flight: u64) -> bool {
        matches!(self.slots.get(&i), Some(Slot::Loading { flight: f, .. }) if *f == flight)
    }

    /// Caches extent `i`, then drops the least recently used extents
    /// until the cache holds at most `limit` bytes or only `i`.
    fn insert_ready(&mut self, i: usize, data: Bytes, limit: u64) {
        let t = self.next_tick();
        self.cached += data.len() as u64;
        self.slots.insert(i, Slot::Ready { data, tick: t });
        self.lru.insert(t, i);
        while self.cached > limit {
            let Some((&oldest, &j)) = self.lru.iter().next() else {
                break;
            };
            if j == i {
                // The newest: only it is left.
                break;
            }
            self.lru.remove(&oldest);
            if let Some(Slot::Ready { data, .. }) = self.slots.remove(&j) {
                self.cached -= data.len() as u64;
            }
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn length(&self, i: usize) -> u64 {
        self.extents.extent(i).map_or(0, |(_, len)| len)
    }

    /// Registers fetches of the extents of `range` not cached nor being
    /// fetched, while their bytes fit in `budget` (those already there
    /// count too); returns the fetches to start.
    fn plan(
        &self,
        range: std::ops::Range<usize>,
        mut budget: u64,
        background: bool,
    ) -> Vec<Launch> {
        let mut st = self.state();
        let mut out = Vec::new();
        for j in range {
            let len = self.length(j);
            if len > budget {
                break;
            }
            budget -= len;
            match st.slots.get(&j) {
                Some(Slot::Ready { .. }) => st.touch(j),
                Some(Slot::Loading { .. }) => {}
                None => out.push(st.launch(j, background).1),
            }
        }
        self.count_launches(out.len() as u64, background);
        out
    }

    fn count_launches(&self, n: u64, background: bool) {
        self.fetched.fetch_add(n, Ordering::Relaxed);
        if background {
            self.read_ahead.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The task of one fetch: fetches extent `l.index`, caches it (if its
    /// slot is still this fetch's) or forgets the slot on failure, then
    /// wakes whoever waits for it.
    async fn fly(self: Arc<Self>, l: Launch) {
        let outcome = match self.extents.fetch(l.index).await {
            Ok(mut data) => {
                // A recycled block buffer may be much larger than this
                // extent: the cache counts what it holds.
                if data.capacity() > data.len() + data.len() / 8 {
                    data.shrink_to_fit();
                }
                Ok(Arc::new(data))
            }
            Err(e) => Err(Arc::new(Error::from(e))),
        };
        {
            let mut st = self.state();
            let ours = st.is_flight(l.index, l.flight);
            match &outcome {
                Ok(data) if ours => st.insert_ready(l.index, data.clone(), self.opts.cache_bytes),
                Ok(_) => {}
                Err(_) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    if ours {
                        st.slots.remove(&l.index);
                    }
                }
            }
        }
        l.tx.send_replace(Some(outcome));
    }
}

impl FileReader {
    /// Opens `src` (its exNode, ticket and data key) for reading; `opts`
    /// out of range is a usage error.
    pub async fn open(grid: &Grid, src: &Source, opts: ReaderOptions) -> Result<FileReader, Error> {
        opts.check()?;
        let acting;
        let grid = match src {
            Source::Path { path, .. } => {
                acting = grid.in_vo_of(path);
                acting.as_ref()
            }
            Source::Xnd(_) => grid,
        };
        let o = open(grid, src, true).await?;
        let pool = download_pool(grid, &o.exnode).await?;
        let dl = DownloadOptions {
            threads: 1,
            ticket: o.ticket.clone(),
            tickets: renewed_tickets(grid, src, &o),
            key: o.key.clone(),
            ..Default::default()
        };
        let extents = ExtentReader::new(&o.exnode, pool, dl)?;
        Ok(FileReader::from_extents(extents, opts))
    }

    fn from_extents(extents: ExtentReader, opts: ReaderOptions) -> FileReader {
        FileReader {
            inner: Arc::new(Handle {
                shared: Arc::new(Shared {
                    extents,
                    opts,
                    state: Mutex::new(State::default()),
                    fetched: AtomicU64::new(0),
                    read_ahead: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    hits: AtomicU64::new(0),
                }),
                tasks: Mutex::new(JoinSet::new()),
            }),
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.shared.extents.size()
    }

    /// The options the reader was opened with.
    pub fn options(&self) -> ReaderOptions {
        self.inner.shared.opts
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were
    /// read (0 at or past the end of the file or for an empty `buf`, fewer
    /// than asked only at the end of the file). Must run in a tokio
    /// runtime (fetches are tasks of it).
    ///
    /// A read that starts where the previous one ended, or that reaches
    /// the end of an extent, starts fetching the next
    /// [`read_ahead`](ReaderOptions::read_ahead) extents in the background.
    pub async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let size = self.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Usage("FileReader::read_at must run in a tokio runtime".into()))?;
        let sh = &self.inner.shared;
        let want = (buf.len() as u64).min(size - offset) as usize;
        let end = offset + want as u64;
        let no_extent = |at: u64| Error::Data(format!("no extent of the exNode holds byte {at}"));
        let first = sh
            .extents
            .extent_at(offset)
            .ok_or_else(|| no_extent(offset))?;
        let last = sh
            .extents
            .extent_at(end - 1)
            .ok_or_else(|| no_extent(end - 1))?;
        let sequential = {
            let mut st = sh.state();
            let continues = st.last_end == Some(offset);
            st.last_end = Some(end);
            continues
                || sh
                    .extents
                    .extent(last)
                    .is_some_and(|(start, len)| start + len == end)
        };
        let ahead = sh.opts.read_ahead;
        let mut done = 0usize;
        for i in first..=last {
            let budget = sh.opts.cache_bytes.saturating_sub(sh.length(i));
            // This read's next extents, fetched while this one is awaited.
            let mut launches = sh.plan(i + 1..(last + 1).min(i + 1 + ahead), budget, false);
            if i == last && sequential {
                launches.extend(sh.plan(
                    last + 1..sh.extents.len().min(last + 1 + ahead),
                    budget,
                    true,
                ));
            }
            let data = self.extent(&rt, i, launches).await?;
            let at = offset + done as u64;
            let (start, len) = sh
                .extents
                .extent(i)
                .ok_or_else(|| Error::Data(format!("no extent {i}")))?;
            // Extents are contiguous (the exNode was validated), so `at` is
            // in extent `i`; checked all the same, as the data's length.
            let from = at
                .checked_sub(start)
                .filter(|&f| f < len)
                .ok_or_else(|| no_extent(at))? as usize;
            let n = ((len as usize) - from).min(want - done);
            let Some(bytes) = data.get(from..from + n) else {
                return Err(Error::Data(format!(
                    "extent {i} is shorter than the exNode says"
                )));
            };
            buf[done..done + n].copy_from_slice(bytes);
            done += n;
        }
        Ok(done)
    }

    /// Failovers, rebuilds and corrupt mappings met so far.
    pub fn report(&self) -> DownloadReport {
        self.inner.shared.extents.report()
    }

    /// Counters of fetches and cache use (see [`ReaderStats`]).
    pub fn stats(&self) -> ReaderStats {
        let sh = &self.inner.shared;
        let (cached_bytes, cached_extents) = {
            let st = sh.state();
            (st.cached, st.lru.len())
        };
        ReaderStats {
            fetched: sh.fetched.load(Ordering::Relaxed),
            read_ahead: sh.read_ahead.load(Ordering::Relaxed),
            failed: sh.failed.load(Ordering::Relaxed),
            hits: sh.hits.load(Ordering::Relaxed),
            cached_bytes,
            cached_extents,
        }
    }

    /// Starts the tasks of `launches`.
    fn start(&self, rt: &tokio::runtime::Handle, launches: Vec<Launch>) {
        if launches.is_empty() {
            return;
        }
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        for l in launches {
            tasks.spawn_on(self.inner.shared.clone().fly(l), rt);
        }
    }

    /// Extent `i`, from the cache, from the fetch already running, or
    /// fetched now (`launches` are started meanwhile). A read-ahead that
    /// failed is tried again once here.
    async fn extent(
        &self,
        rt: &tokio::runtime::Handle,
        i: usize,
        mut launches: Vec<Launch>,
    ) -> Result<Bytes, Error> {
        let sh = &self.inner.shared;
        let mut retried = false;
        loop {
            let (flight, rx, background) = {
                let mut st = sh.state();
                match st.slots.get(&i) {
                    Some(Slot::Ready { data, .. }) => {
                        let data = data.clone();
                        st.touch(i);
                        drop(st);
                        sh.hits.fetch_add(1, Ordering::Relaxed);
                        self.start(rt, launches);
                        return Ok(data);
                    }
                    Some(Slot::Loading {
                        flight,
                        rx,
                        background,
                    }) => (*flight, rx.clone(), *background),
                    None => {
                        let (rx, l) = st.launch(i, false);
                        let flight = l.flight;
                        drop(st);
                        sh.count_launches(1, false);
                        launches.insert(0, l);
                        (flight, rx, false)
                    }
                }
            };
            self.start(rt, std::mem::take(&mut launches));
            match wait(rx).await {
                Some(Ok(data)) => return Ok(data),
                Some(Err(e)) if background && !retried => {
                    tracing::debug!(extent = i, error = %e, "read-ahead failed; fetching again");
                    retried = true;
                }
                Some(Err(e)) => return Err(duplicate(&e)),
                None => {
                    // The task ended without an answer (aborted): forget
                    // its slot.
                    let mut st = sh.state();
                    if st.is_flight(i, flight) {
                        st.slots.remove(&i);
                    }
                    return Err(Error::Local(format!(
                        "the fetch of extent {i} was abandoned"
                    )));
                }
            }
        }
    }
}

/// The outcome of a fetch, once it ended; `None` if its task ended
/// without one.
async fn wait(mut rx: watch::Receiver<Outcome>) -> Option<Result<Bytes, Arc<Error>>> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

/// A copy of `e` for each reader that waited for one failed fetch (same
/// variant, so the same exit class).
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Usage(m) => Error::Usage(m.clone()),
        Error::NoProxy(p) => Error::NoProxy(p.clone()),
        Error::InvalidProxy(m) => Error::InvalidProxy(m.clone()),
        Error::BadRequest(m) => Error::BadRequest(m.clone()),
        Error::Refused(m) => Error::Refused(m.clone()),
        Error::Forbidden(m) => Error::Forbidden(m.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::RateLimited {
            retry_after,
            message,
        } => Error::RateLimited {
            retry_after: *retry_after,
            message: message.clone(),
        },
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Local(m) => Error::Local(m.clone()),
        Error::Data(m) => Error::Data(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use exnode::{Exnode, Mapping, Security};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::transfer::{Pool, SecureSetup};

    /// A stand-in for a depot that accepts connections and never answers:
    /// each accepted connection is handed to the test, which closes it (a
    /// failed LOAD) or watches it close (the client gave up).
    async fn silent_depot() -> (String, mpsc::UnboundedReceiver<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("its address").to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                if tx.send(c).is_err() {
                    break;
                }
            }
        });
        (addr, rx)
    }

    /// A reader of a legacy file of two 1000-byte extents at `addr`.
    fn reader(addr: &str, opts: ReaderOptions) -> FileReader {
        let cap = format!("ibp://{addr}/0#{}/1/READ", "k".repeat(32));
        let m = |offset| Mapping {
            logical_offset: offset,
            logical_length: 1000,
            alloc_length: 1000,
            read: Some(cap.clone()),
            depot: addr.to_owned(),
            security: Some(Security::Legacy),
            ..Default::default()
        };
        let x = Exnode {
            size: 2000,
            mappings: vec![m(0), m(1000)],
            ..Default::default()
        };
        let pool = Pool::new(SecureSetup::default(), Duration::from_secs(600));
        let dl = DownloadOptions {
            threads: 1,
            ..Default::default()
        };
        FileReader::from_extents(ExtentReader::new(&x, pool, dl).expect("an exNode"), opts)
    }

    async fn next(conns: &mut mpsc::UnboundedReceiver<TcpStream>) -> TcpStream {
        tokio::time::timeout(Duration::from_secs(10), conns.recv())
            .await
            .expect("a connection within 10 s")
            .expect("the depot runs")
    }

    /// Five reads of one extent at once make one fetch (one connection to
    /// the depot) and all get its error; the failure is not cached: the
    /// next read fetches again.
    #[tokio::test(flavor = "current_thread")]
    async fn reads_of_one_extent_share_one_fetch_and_a_failure_is_not_cached() {
        let (addr, mut conns) = silent_depot().await;
        let opts = ReaderOptions {
            cache_bytes: 1 << 20,
            read_ahead: 0,
        };
        let r = reader(&addr, opts);
        let mut set = JoinSet::new();
        for _ in 0..5 {
            let r = r.clone();
            set.spawn(async move { r.read_at(5, &mut [0u8; 10]).await });
        }
        let c = next(&mut conns).await;
        assert_eq!(r.stats().fetched, 1);
        drop(c);
        while let Some(j) = set.join_next().await {
            let e = j.expect("a reading task").expect_err("the fetch failed");
            assert_eq!(e.exit_code(), crate::exit::DATA, "{e}");
        }
        assert!(conns.try_recv().is_err(), "one connection for five reads");
        let st = r.stats();
        assert_eq!(
            (st.fetched, st.failed, st.cached_extents),
            (1, 1, 0),
            "{st:?}"
        );

        let again = tokio::spawn({
            let r = r.clone();
            async move { r.read_at(5, &mut [0u8; 10]).await }
        });
        drop(next(&mut conns).await);
        assert!(again.await.expect("a reading task").is_err());
        assert_eq!(r.stats().fetched, 2, "fetched again after the failure");
    }

    /// A read-ahead that fails is not reported by itself: the read that
    /// wants its extent fetches it again, once, and returns that fetch's
    /// error.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_read_ahead_is_fetched_again_once_by_the_read_that_wants_it() {
        let (addr, mut conns) = silent_depot().await;
        let opts = ReaderOptions {
            cache_bytes: 1 << 20,
            read_ahead: 1,
        };
        let r = reader(&addr, opts);
        // Up to the end of extent 0: extent 1 is read ahead.
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.read_at(0, &mut [0u8; 1000]).await }
        });
        let (a, b) = (next(&mut conns).await, next(&mut conns).await);
        let st = r.stats();
        assert_eq!((st.fetched, st.read_ahead), (2, 1), "{st:?}");
        let second = tokio::spawn({
            let r = r.clone();
            async move { r.read_at(1000, &mut [0u8; 10]).await }
        });
        tokio::task::yield_now().await;
        drop((a, b));
        assert!(first.await.expect("a reading task").is_err());
        let c = next(&mut conns).await;
        assert!(
            !second.is_finished(),
            "the read-ahead's failure is not returned"
        );
        drop(c);
        let e = second
            .await
            .expect("a reading task")
            .expect_err("the second fetch failed too");
        assert_eq!(e.exit_code(), crate::exit::DATA, "{e}");
        assert!(conns.try_recv().is_err(), "fetched again only once");
        let st = r.stats();
        assert_eq!((st.fetched, st.read_ahead, st.failed), (3, 1, 3), "{st:?}");
    }

    /// A read whose future is dropped leaves its fetch running; dropping
    /// the last clone of the reader aborts it (its connection closes long
    /// before the depot timeout of 600 s).
    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_last_clone_aborts_the_fetches() {
        let (addr, mut conns) = silent_depot().await;
        let r = reader(&addr, ReaderOptions::default());
        let read = tokio::spawn({
            let r = r.clone();
            async move { r.read_at(0, &mut [0u8; 10]).await }
        });
        let mut c = next(&mut conns).await;
        read.abort();
        assert!(read.await.is_err_and(|e| e.is_cancelled()));
        let clone = r.clone();
        drop(r);
        // A clone is left: the fetch still runs (the LOAD was sent).
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).await.expect("the LOAD");
        assert!(n > 0, "the client sent its LOAD");
        drop(clone);
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the fetch was aborted: its connection closed"
        );
    }

    fn data(n: usize) -> Bytes {
        Arc::new(vec![7; n])
    }

    #[test]
    fn the_cache_drops_the_least_recently_used_extents_past_its_bound() {
        let mut st = State::default();
        st.insert_ready(0, data(10), 25);
        st.insert_ready(1, data(10), 25);
        st.touch(0);
        st.insert_ready(2, data(10), 25);
        // 1 was used least recently.
        assert!(st.slots.contains_key(&0) && st.slots.contains_key(&2));
        assert!(!st.slots.contains_key(&1));
        assert_eq!(st.cached, 20);
        assert_eq!(st.lru.len(), 2);
    }

    #[test]
    fn one_extent_is_kept_even_when_larger_than_the_cache() {
        let mut st = State::default();
        st.insert_ready(0, data(10), 0);
        assert_eq!((st.cached, st.lru.len()), (10, 1));
        st.insert_ready(1, data(30), 0);
        assert_eq!((st.cached, st.lru.len()), (30, 1));
        assert!(st.slots.contains_key(&1));
    }

    #[test]
    fn options_out_of_range_are_refused() {
        assert!(ReaderOptions::default().check().is_ok());
        let o = ReaderOptions {
            read_ahead: MAX_READ_AHEAD + 1,
            ..Default::default()
        };
        assert!(matches!(o.check(), Err(Error::Usage(_))));
        let o = ReaderOptions {
            cache_bytes: MAX_CACHE_BYTES + 1,
            ..Default::default()
        };
        assert!(matches!(o.check(), Err(Error::Usage(_))));
        let o = ReaderOptions {
            cache_bytes: 0,
            read_ahead: 0,
        };
        assert!(o.check().is_ok());
    }

    #[tokio::test]
    async fn waiters_of_a_failed_fetch_each_get_its_error() {
        let (tx, rx) = watch::channel::<Outcome>(None);
        let a = tokio::spawn(wait(rx.clone()));
        let b = tokio::spawn(wait(rx));
        tx.send_replace(Some(Err(Arc::new(Error::Data("lost".into())))));
        for h in [a, b] {
            match h.await.expect("a waiter") {
                Some(Err(e)) => assert!(matches!(duplicate(&e), Error::Data(m) if m == "lost")),
                _ => panic!("the error"),
            }
        }
        let (tx, rx) = watch::channel::<Outcome>(None);
        drop(tx);
        assert!(wait(rx).await.is_none(), "an abandoned fetch");
    }
}
