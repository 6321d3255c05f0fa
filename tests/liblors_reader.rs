//! The `lors` library's random access against a real local grid:
//! [`FileReader`] (ranged reads at many offsets, byte for byte against the
//! source, for one copy, two copies, erasure coding 2+1 and an `--xnd`
//! exNode; fetch counts of sequential reads; the cache bound; concurrent
//! reads of one reader; a depot killed with SIGKILL while reading) and
//! [`FileWriter`] (written in chunks and committed; dropped; a failed
//! commit (missing directory, no write right, two writers racing for one
//! path) registers nothing and releases what it stored; the staging
//! bound).
//!
//! One grid for all cases (it takes longer to start than most cases take);
//! the depot is killed last.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};
use lors::client::{Client, Overrides};
use lors::config::Config;
use lors::files::{self, Dest, FileReader, FileWriter, ReaderOptions, Source, UploadSettings};
use lors::transfer::{Redundancy, Sink};
use lors::Error;

/// Block size of the uploads: files of about 1 MiB have 17 extents.
const BS: u64 = 64 << 10;
/// Bound on each library call of this test.
const LIMIT: Duration = Duration::from_secs(60);

/// A file of the test: where it is and what it holds.
struct TestFile {
    what: &'static str,
    src: Source,
    data: Vec<u8>,
}

impl TestFile {
    fn extents(&self) -> u64 {
        (self.data.len() as u64).div_ceil(BS)
    }
}

fn path(p: &str) -> Source {
    Source::Path {
        path: p.into(),
        version: None,
    }
}

/// xorshift: offsets and lengths that differ from run to run only with
/// the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {LIMIT:?}"))
}

async fn open(grid: &files::Grid, f: &TestFile, opts: ReaderOptions) -> FileReader {
    within("open", FileReader::open(grid, &f.src, opts))
        .await
        .unwrap_or_else(|e| panic!("{}: open: {e:#}", f.what))
}

/// Reads `len` bytes at `offset` and checks them against the source:
/// the count (less only at the end), the bytes, and nothing written past
/// the count.
async fn read_is(r: &FileReader, f: &TestFile, offset: u64, len: usize) {
    let size = f.data.len() as u64;
    let mut buf = vec![0xA5u8; len];
    let n = within("read_at", r.read_at(offset, &mut buf))
        .await
        .unwrap_or_else(|e| panic!("{}: read_at({offset}, {len}): {e:#}", f.what));
    let want = if offset >= size {
        0
    } else {
        len.min((size - offset) as usize)
    };
    assert_eq!(n, want, "{}: bytes read at {offset} of {len}", f.what);
    if n > 0 {
        let o = offset as usize;
        assert!(
            buf[..n] == f.data[o..o + n],
            "{}: the {n} bytes at {offset} differ from the source",
            f.what
        );
    }
    assert!(
        buf[n..].iter().all(|b| *b == 0xA5),
        "{}: read_at({offset}, {len}) wrote past the {n} bytes it returned",
        f.what
    );
}

/// Ranged reads at many offsets (extent boundaries, the last byte, past
/// the end, empty buffers, random) with `opts`; the cache stays within
/// its bound after every read.
async fn ranged_reads(grid: &files::Grid, f: &TestFile, opts: ReaderOptions, seed: u64) {
    let r = open(grid, f, opts).await;
    let size = f.data.len() as u64;
    assert_eq!(r.size(), size, "{}: size", f.what);
    let b = BS as usize;
    let mut cases: Vec<(u64, usize)> = vec![
        (0, 1),
        (0, 100),
        (1, b),
        (BS - 1, 2),
        (BS - 10, 20),
        (BS, b),
        (3 * BS - 100, 300),
        (2 * BS + 5, 3 * b + 7),
        (size - 1, 1),
        (size - 1, 10),
        (size - BS - 3, b + 100),
        (0, size as usize),
        (0, size as usize + 10),
        (size, 10),
        (size + 100, 10),
        (u64::MAX, 10),
        (5, 0),
        (size, 0),
    ];
    let mut rng = Rng(seed | 1);
    for _ in 0..40 {
        cases.push((rng.below(size), 1 + rng.below(3 * BS) as usize));
    }
    for (offset, len) in cases {
        read_is(&r, f, offset, len).await;
        let st = r.stats();
        assert!(
            st.cached_bytes <= opts.cache_bytes + BS,
            "{}: {} bytes cached with a cache of {} ({st:?})",
            f.what,
            st.cached_bytes,
            opts.cache_bytes
        );
        assert_eq!(st.failed, 0, "{}: {st:?}", f.what);
    }
    let st = r.stats();
    if opts.cache_bytes >= size {
        // Each extent fetched at most once: the cache holds the file.
        assert!(st.fetched <= f.extents(), "{}: {st:?}", f.what);
        assert!(st.hits > 0, "{}: {st:?}", f.what);
    }
    eprintln!("{} {opts:?}: {st:?}", f.what);
}

/// Reads the whole file from its start in `chunk`-byte reads; each extent
/// is fetched exactly once, all but the first by read-ahead when `chunk`
/// is smaller than an extent.
async fn sequential(grid: &files::Grid, f: &TestFile, opts: ReaderOptions, chunk: usize) {
    let r = open(grid, f, opts).await;
    let mut out = Vec::with_capacity(f.data.len());
    let mut buf = vec![0u8; chunk];
    loop {
        let n = within("read_at", r.read_at(out.len() as u64, &mut buf))
            .await
            .unwrap_or_else(|e| panic!("{}: sequential read at {}: {e:#}", f.what, out.len()));
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let st = r.stats();
        assert!(
            st.cached_bytes <= opts.cache_bytes.max(BS),
            "{}: {st:?}",
            f.what
        );
    }
    assert!(out == f.data, "{}: sequential read differs", f.what);
    let st = r.stats();
    let n = f.extents();
    eprintln!("{} sequential by {chunk} {opts:?}: {st:?}", f.what);
    assert_eq!(
        st.fetched, n,
        "{}: each extent fetched once: {st:?}",
        f.what
    );
    assert_eq!(st.failed, 0, "{}: {st:?}", f.what);
    if opts.read_ahead > 0 && opts.cache_bytes >= 2 * BS {
        // The first read is not sequential (nothing before it); a second
        // read that reaches into extent 1 fetches it itself.
        let by_ahead = if 2 * chunk as u64 <= BS { n - 1 } else { n - 2 };
        if (chunk as u64) < BS {
            assert!(
                st.read_ahead >= by_ahead,
                "{}: at least {by_ahead} extents read ahead: {st:?}",
                f.what
            );
        }
    }
    if opts.read_ahead == 0 {
        assert_eq!(st.read_ahead, 0, "{}: {st:?}", f.what);
    }
}

/// Eight tasks reading one extent at once fetch it once; eight tasks
/// reading interleaved chunks of the whole file get every byte, each
/// extent fetched once.
async fn concurrent(grid: &files::Grid, f: &TestFile) {
    let f = Arc::new(TestFile {
        what: f.what,
        src: f.src.clone(),
        data: f.data.clone(),
    });
    let r = open(grid, &f, ReaderOptions::default()).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (r, f) = (r.clone(), f.clone());
        set.spawn(async move { read_is(&r, &f, 5 * BS + 10, 1000).await });
    }
    while let Some(j) = set.join_next().await {
        j.expect("a reading task");
    }
    let st = r.stats();
    assert_eq!(st.fetched, 1, "{}: one fetch for 8 readers: {st:?}", f.what);

    let r = open(grid, &f, ReaderOptions::default()).await;
    const CHUNK: u64 = 10_000;
    let chunks = (f.data.len() as u64).div_ceil(CHUNK);
    for t in 0..8u64 {
        let (r, f) = (r.clone(), f.clone());
        set.spawn(async move {
            let mut c = t;
            while c < chunks {
                read_is(&r, &f, c * CHUNK, CHUNK as usize).await;
                c += 8;
            }
        });
    }
    while let Some(j) = set.join_next().await {
        j.expect("a reading task");
    }
    let st = r.stats();
    eprintln!("{}: 8 interleaved readers: {st:?}", f.what);
    assert_eq!(st.fetched, f.extents(), "{}: {st:?}", f.what);
    assert_eq!(st.failed, 0, "{}: {st:?}", f.what);
}

/// Bytes of allocation data on all depots.
fn stored(g: &Grid) -> u64 {
    (0..g.depots.len()).map(|i| depot_data_bytes(g, i)).sum()
}

async fn is_absent(grid: &files::Grid, p: &str, what: &str) {
    let mdm = grid.mdm.as_ref().expect("a metadata manager");
    match within("stat", mdm.stat(p)).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("{what}: {p} should not exist: {other:?}"),
    }
}

async fn writer_cases(g: &Grid, client: &Client, settings: &UploadSettings) {
    let grid = client.grid().expect("alice's session");

    // Written in chunks of many sizes, committed, read back.
    let data = bytes((700 << 10) + 99, 40);
    let mut w = FileWriter::create(
        &grid,
        Dest::Path("/vo1/rd/written".into()),
        settings.clone(),
        None,
    )
    .expect("a writer");
    let mut at = 0usize;
    for (i, n) in [1usize, 1000, 70_000, 3, 65_536, 200_000]
        .iter()
        .cycle()
        .enumerate()
    {
        if at == data.len() {
            break;
        }
        let n = (*n).min(data.len() - at);
        within("write", w.write(&data[at..at + n]))
            .await
            .unwrap_or_else(|e| panic!("write {i}: {e:#}"));
        at += n;
        assert_eq!(w.written(), at as u64);
    }
    let summary = within("commit", w.commit()).await.expect("commit");
    assert_eq!((summary.version, summary.size), (1, data.len() as u64));
    let f = TestFile {
        what: "written",
        src: path("/vo1/rd/written"),
        data,
    };
    sequential(&grid, &f, ReaderOptions::default(), 50_000).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("written");
    let file = std::fs::File::create(&out).expect("create the output");
    within(
        "download",
        files::download(&grid, &f.src, Sink::File(file), 2, None),
    )
    .await
    .expect("download what the writer committed");
    assert_file_is(&out, &f.data, "download of what the writer committed");

    // Dropped without a commit: nothing registered, nothing stored.
    let before = stored(g);
    let mut w = FileWriter::create(
        &grid,
        Dest::Path("/vo1/rd/dropped".into()),
        settings.clone(),
        None,
    )
    .expect("a writer");
    within("write", w.write(&bytes(300 << 10, 41)))
        .await
        .expect("write");
    drop(w);
    let w = FileWriter::create(
        &grid,
        Dest::Path("/vo1/rd/aborted".into()),
        settings.clone(),
        None,
    )
    .expect("a writer");
    w.abort();
    is_absent(&grid, "/vo1/rd/dropped", "a dropped writer").await;
    is_absent(&grid, "/vo1/rd/aborted", "an aborted writer").await;
    assert_eq!(stored(g), before, "a dropped writer stores nothing");

    // A commit into a directory that does not exist: refused, nothing
    // registered, the allocations it made released.
    let before = stored(g);
    let mut w = FileWriter::create(
        &grid,
        Dest::Path("/vo1/no-such-dir/file".into()),
        settings.clone(),
        None,
    )
    .expect("a writer");
    within("write", w.write(&bytes(400 << 10, 42)))
        .await
        .expect("write");
    let e = within("commit", w.commit())
        .await
        .expect_err("a commit into a missing directory fails");
    eprintln!("commit into a missing directory: {e}");
    assert_eq!(e.exit_code(), 7, "not found: {e}");
    is_absent(&grid, "/vo1/no-such-dir/file", "a failed commit").await;
    assert_eq!(stored(g), before, "a failed commit releases what it stored");

    // A commit into bob's directory, where alice may not write.
    ok(lors(g, "bob", &["mkdir", "/vo1/bobs"]));
    ok(lors(g, "bob", &["acl", "set", "/vo1/bobs", "--access"]));
    let before = stored(g);
    let mut w = FileWriter::create(
        &grid,
        Dest::Path("/vo1/bobs/from-alice".into()),
        settings.clone(),
        None,
    )
    .expect("a writer");
    within("write", w.write(&bytes(200 << 10, 43)))
        .await
        .expect("write");
    let e = within("commit", w.commit())
        .await
        .expect_err("a commit without the write right fails");
    eprintln!("commit without the write right: {e}");
    assert_eq!(e.exit_code(), 3, "refused: {e}");
    assert_eq!(
        stored(g),
        before,
        "a refused commit releases what it stored"
    );
    let listing = ok(lors(g, "bob", &["ls", "/vo1/bobs"]));
    assert!(
        !listing.contains("from-alice"),
        "a refused commit registers nothing: {listing}"
    );

    // Two writers of one new path committing at once: both start from
    // "no such file", so the second to register is refused (conflict) and
    // releases what it stored; the first's data is the file.
    let before = stored(g);
    let (da, db) = (bytes(300 << 10, 45), bytes(300 << 10, 46));
    let mut writers = Vec::new();
    for d in [&da, &db] {
        let mut w = FileWriter::create(
            &grid,
            Dest::Path("/vo1/rd/raced".into()),
            settings.clone(),
            None,
        )
        .expect("a writer");
        within("write", w.write(d)).await.expect("write");
        writers.push(w);
    }
    let (wb, wa) = (writers.pop(), writers.pop());
    let (ra, rb) = within("commits", async {
        tokio::join!(
            wa.expect("writer a").commit(),
            wb.expect("writer b").commit()
        )
    })
    .await;
    let (won, summary, e) = match (ra, rb) {
        (Ok(s), Err(e)) => (&da, s, e),
        (Err(e), Ok(s)) => (&db, s, e),
        (a, b) => panic!("one commit wins, one conflicts: {a:?} / {b:?}"),
    };
    eprintln!("the commit that lost the race: {e}");
    assert_eq!(e.exit_code(), 8, "conflict: {e}");
    assert_eq!(summary.version, 1);
    assert_eq!(
        stored(g),
        before + summary.stored,
        "only the winner's allocations remain"
    );
    let f = TestFile {
        what: "raced",
        src: path("/vo1/rd/raced"),
        data: won.clone(),
    };
    read_is(
        &open(&grid, &f, ReaderOptions::default()).await,
        &f,
        0,
        won.len(),
    )
    .await;

    // The staging bound: a write past it is refused whole; the writer
    // goes on.
    let mut w = FileWriter::create(
        &grid,
        Dest::Path("/vo1/rd/bounded".into()),
        settings.clone(),
        None,
    )
    .expect("a writer");
    w.set_max_bytes(Some(90));
    let data = bytes(100, 44);
    within("write", w.write(&data[..60])).await.expect("write");
    let e = within("write", w.write(&data[60..]))
        .await
        .map(|_| ())
        .expect_err("a write past the bound");
    within("write", w.write(&[])).await.expect("an empty write");
    assert_eq!(e.exit_code(), 2, "usage: {e}");
    assert_eq!(w.written(), 60);
    within("write", w.write(&data[60..]))
        .await
        .map(|_| ())
        .expect_err("still past the bound");
    w.set_max_bytes(None);
    within("write", w.write(&data[60..])).await.expect("write");
    within("commit", w.commit()).await.expect("commit");
    let f = TestFile {
        what: "bounded",
        src: path("/vo1/rd/bounded"),
        data,
    };
    read_is(&open(&grid, &f, ReaderOptions::default()).await, &f, 0, 200).await;
}

/// The index in the grid of the depot at `addr` (as a mapping names it).
fn depot_index(g: &Grid, addr: &str) -> Option<usize> {
    g.depots
        .iter()
        .position(|d| d.legacy_addr == addr || d.tls_addr.as_deref() == Some(addr))
}

/// A read-ahead that fails is not reported: the read that wants the
/// extent fetches it again. `f` has one copy per extent; the depot of an
/// extent in the read-ahead window is killed while it is read ahead, then
/// restarted before that extent is read. Its own session (and so its own
/// record of depots down), to leave the main one's alone.
fn failed_read_ahead_is_retried(
    g: &mut Grid,
    rt: &tokio::runtime::Runtime,
    cfg: Config,
    f: &TestFile,
) {
    let client = Client::new(cfg, Overrides::default()).expect("a client");
    let grid = client.grid().expect("alice's session");
    let opts = ReaderOptions::default();
    let (r, victim) = rt.block_on(async {
        let o = within("open", files::open(&grid, &f.src, false))
            .await
            .expect("the exNode");
        let extents = o.exnode.extents();
        let depot = |i: usize| {
            extents
                .get(i)
                .and_then(|e| e.mappings.first())
                .and_then(|m| depot_index(g, &m.depot))
                .expect("a depot of the grid")
        };
        let victim = (1..=opts.read_ahead)
            .map(depot)
            .find(|&d| d != depot(0))
            .expect("an extent read ahead on another depot than extent 0's");
        (open(&grid, f, opts).await, victim)
    });
    g.kill_depot(victim);
    rt.block_on(async {
        read_is(&r, f, 0, 1000).await;
        // Sequential: extents 1 to 4 are read ahead; some fail.
        read_is(&r, f, 1000, 1000).await;
        within("failed read-ahead", async {
            while r.stats().failed == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let st = r.stats();
        assert_eq!(st.read_ahead, opts.read_ahead as u64, "{st:?}");
    });
    g.restart_depot(victim).expect("restart the depot");
    rt.block_on(async {
        read_is(&r, f, 0, f.data.len()).await;
        let st = r.stats();
        eprintln!("read-ahead failed on depot-{victim}, then read: {st:?}");
        assert!(st.failed >= 1, "{st:?}");
        assert_eq!(
            st.fetched,
            f.extents() + st.failed,
            "each failed read-ahead fetched once more: {st:?}"
        );
    });
}

/// The depot to kill: one holding a data share of an erasure-coded group
/// not yet read (so that reading it rebuilds from parity) and the first
/// replica tried for a two-copy extent not yet read (so that reading it
/// fails over). Returns its index in the grid.
async fn depot_to_kill(
    g: &Grid,
    grid: &files::Grid,
    c2: &TestFile,
    ec: &TestFile,
    from: u64,
) -> usize {
    let mut score = vec![(0usize, 0usize); g.depots.len()];
    let index = |depot: &str| depot_index(g, depot);
    let o = within("open", files::open(grid, &ec.src, false))
        .await
        .expect("the EC exNode");
    for e in o.exnode.extents().iter().filter(|e| e.offset >= from) {
        let k = e.group.map_or(0, |g| g.k);
        for m in &e.mappings {
            if m.share.is_some_and(|s| s.index < k) {
                if let Some(i) = index(&m.depot) {
                    score[i].0 += 1;
                }
            }
        }
    }
    let o = within("open", files::open(grid, &c2.src, false))
        .await
        .expect("the two-copy exNode");
    for (n, e) in o.exnode.extents().iter().enumerate() {
        // The download engine tries extent n's replicas from mapping
        // n % copies on.
        if e.offset >= from && !e.mappings.is_empty() {
            if let Some(i) = index(&e.mappings[n % e.mappings.len()].depot) {
                score[i].1 += 1;
            }
        }
    }
    let best = (0..score.len())
        .max_by_key(|&i| score[i].0.min(score[i].1))
        .expect("depots");
    assert!(
        score[best].0 > 0 && score[best].1 > 0,
        "no depot both holds a data share and is the first replica of a two-copy extent after {from}: {score:?}"
    );
    best
}

#[test]
fn file_reader_and_writer_on_a_real_grid() {
    let _timer = Timer::start("file_reader_and_writer_on_a_real_grid");
    let mut g = start(GridOptions::default());
    keys_init(&g, "alice");
    ok(lors(&g, "bob", &["whoami"]));
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/rd"]));
    let env: HashMap<String, String> = g.env("alice").into_iter().collect();
    let cfg = Config::from_sources(None, |k| env.get(k).cloned()).expect("alice's configuration");
    let client = Client::new(cfg.clone(), Overrides::default()).expect("a client");
    let grid = client.grid().expect("alice's session");
    let mut settings = client.settings().expect("upload settings");
    settings.block_size = BS;
    settings.threads = 4;
    settings.placement.duration = 3600;
    assert!(settings.encrypt, "alice's uploads are encrypted");

    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let files: Vec<TestFile> = rt.block_on(async {
        let mut out = Vec::new();
        for (what, redundancy, size, seed) in [
            ("copies-1", Redundancy::Copies(1), (1 << 20) + 12_345, 1),
            ("copies-2", Redundancy::Copies(2), (1 << 20) + 777, 2),
            ("ec-2+1", Redundancy::Ec { k: 2, m: 1 }, (1 << 20) + 4097, 3),
            ("copies-2-big", Redundancy::Copies(2), (4 << 20) + 11, 5),
            (
                "ec-2+1-big",
                Redundancy::Ec { k: 2, m: 1 },
                (4 << 20) + 13,
                6,
            ),
        ] {
            let data = bytes(size, seed);
            let p = format!("/vo1/rd/{what}");
            let s = UploadSettings {
                redundancy,
                ..settings.clone()
            };
            within(
                "upload",
                files::upload(
                    &grid,
                    &data[..],
                    Some(size as u64),
                    &Dest::Path(p.clone()),
                    &s,
                    None,
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("upload {what}: {e:#}"));
            out.push(TestFile {
                what,
                src: path(&p),
                data,
            });
        }
        // An --xnd exNode (plain IBP, encrypted: its key beside it).
        let dir = g.user("alice").dir.join("xnd");
        std::fs::create_dir_all(&dir).expect("a directory");
        let xnd = dir.join("legacy.xnd");
        let data = bytes((300 << 10) + 5, 4);
        let s = UploadSettings {
            security: exnode::Security::Legacy,
            ..settings.clone()
        };
        within(
            "upload",
            files::upload(&grid, &data[..], None, &Dest::Xnd(xnd.clone()), &s, None),
        )
        .await
        .expect("upload to an exNode file");
        out.push(TestFile {
            what: "xnd",
            src: Source::Xnd(xnd),
            data,
        });
        out
    });
    let [c1, c2, ec, big2, bigec, xnd] = &files[..] else {
        panic!("six files");
    };

    rt.block_on(async {
        let small = ReaderOptions {
            cache_bytes: 3 * BS,
            read_ahead: 2,
        };
        let none = ReaderOptions {
            cache_bytes: 0,
            read_ahead: 0,
        };
        for (n, f) in [c1, c2, ec, xnd].into_iter().enumerate() {
            for (m, opts) in [ReaderOptions::default(), small, none]
                .into_iter()
                .enumerate()
            {
                ranged_reads(&grid, f, opts, (10 * n + m) as u64 + 1).await;
            }
        }
        for f in [c1, ec, xnd] {
            sequential(&grid, f, ReaderOptions::default(), 16 << 10).await;
        }
        sequential(&grid, c2, small, 10_000).await;
        sequential(&grid, ec, none, 10_000).await;
        sequential(&grid, c1, ReaderOptions::default(), 200 << 10).await;
        concurrent(&grid, c2).await;
        concurrent(&grid, ec).await;

        // Options out of range are refused before anything is fetched.
        for opts in [
            ReaderOptions {
                read_ahead: lors::files::MAX_READ_AHEAD + 1,
                ..Default::default()
            },
            ReaderOptions {
                cache_bytes: lors::files::MAX_CACHE_BYTES + 1,
                ..Default::default()
            },
        ] {
            match FileReader::open(&grid, &c1.src, opts).await {
                Err(e) => assert_eq!(e.exit_code(), 2, "{opts:?}: {e}"),
                Ok(_) => panic!("{opts:?} accepted"),
            }
        }
        match FileReader::open(&grid, &path("/vo1/rd/none"), ReaderOptions::default()).await {
            Err(e) => assert_eq!(e.exit_code(), 7, "a missing file: {e}"),
            Ok(_) => panic!("a missing file opened"),
        }

        writer_cases(&g, &client, &settings).await;
    });

    failed_read_ahead_is_retried(&mut g, &rt, cfg.clone(), c1);

    // A depot killed (SIGKILL) while two readers are part way through
    // (64 extents each, read in 16 KiB reads from two tasks): both read
    // back intact, by failing over to the other replica and rebuilding from
    // parity.
    let victim = rt.block_on(depot_to_kill(&g, &grid, big2, bigec, 32 * BS));
    // Each in its own session: a session remembers a depot that failed
    // and tries it last, so one reader's failover would spare the other.
    let grid2 = Client::new(cfg.clone(), Overrides::default())
        .and_then(|c| c.grid())
        .expect("a second session");
    let readers: Vec<(FileReader, &TestFile)> = rt.block_on(async {
        vec![
            (open(&grid, big2, ReaderOptions::default()).await, big2),
            (open(&grid2, bigec, ReaderOptions::default()).await, bigec),
        ]
    });
    let tasks: Vec<_> = readers
        .iter()
        .map(|(r, f)| {
            let (r, size) = (r.clone(), f.data.len());
            rt.spawn(async move {
                let mut out = Vec::with_capacity(size);
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = r.read_at(out.len() as u64, &mut buf).await?;
                    if n == 0 {
                        return Ok::<_, Error>(out);
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + LIMIT;
    while readers.iter().all(|(r, _)| r.stats().fetched < 8) {
        assert!(
            std::time::Instant::now() < deadline,
            "a reader fetches 8 extents"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    g.kill_depot(victim);
    let at_kill: Vec<u64> = readers.iter().map(|(r, _)| r.stats().fetched).collect();
    eprintln!("depot-{victim} killed; extents fetched by then: {at_kill:?}");
    assert!(!g.depots[victim].is_running(), "depot-{victim} killed");
    for (t, (_, f)) in tasks.into_iter().zip(&readers) {
        let out = rt
            .block_on(within("read", t))
            .expect("a reading task")
            .unwrap_or_else(|e| panic!("{}: reading across the kill: {e:#}", f.what));
        assert!(out == f.data, "{}: read across the kill differs", f.what);
    }
    for (n, (_, f)) in at_kill.iter().zip(&readers) {
        // Killed before the part read by the depot's extents was reached.
        assert!(
            *n < 32,
            "{}: {n} extents fetched before the kill: too late to test it",
            f.what
        );
    }
    let (rep2, repec) = (readers[0].0.report(), readers[1].0.report());
    eprintln!("across the kill: copies-2 {rep2:?}, ec-2+1 {repec:?}");
    assert!(rep2.failovers > 0, "copies-2 failed over: {rep2:?}");
    assert!(repec.rebuilt > 0, "ec-2+1 rebuilt from parity: {repec:?}");
    assert!(
        rep2.corrupt.is_empty() && repec.corrupt.is_empty(),
        "nothing corrupt"
    );
    rt.block_on(async {
        // Readers opened after the kill read everything too.
        for f in [c2, ec] {
            sequential(&grid, f, ReaderOptions::default(), 30_000).await;
            ranged_reads(&grid, f, ReaderOptions::default(), 99).await;
        }
        let rec = open(&grid, bigec, ReaderOptions::default()).await;
        read_is(&rec, bigec, 0, bigec.data.len()).await;
        assert!(rec.report().rebuilt > 0, "{:?}", rec.report());
    });
}
