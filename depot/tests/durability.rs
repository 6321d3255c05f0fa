//! Time and durability: expiry into the recycle area, restart keeping
//! capabilities, SIGKILL in the middle of many concurrent STOREs (every
//! acknowledged byte survives, nothing unacknowledged is visible), and
//! SIGTERM letting an in-flight STORE finish.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ibp_depot_client::IbpClient;
use ibp_proto::{Reliability, Rid};
use ibp_testkit::clock::ProcessClock;

#[test]
fn expired_allocation_moves_to_recycle() {
    let d = DepotBuilder::new().args(["--reap-interval", "1s"]).spawn();
    let mut c = d.connect();
    let short = c.allocate(2, 2, 100);
    c.store(&short.write, b"short-lived");
    let long = c.allocate(2, 600, 100);
    c.store(&long.write, b"long-lived");
    let files = list_dir(&d.data.join("data"));
    assert_eq!(files.len(), 2, "{files:?}");
    let p = c.probe(&short.manage);
    assert!((1..=2).contains(&p.secs), "{p:?}");
    let expires = now() + p.secs;

    // Within ~4 s the allocation is gone ...
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(6), || {
            let mut c = d.connect();
            c.request(&probe_line(&short.manage)) == " -4 \n"
        }),
        "allocation still there after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    expect_error(&d, &load_line(&short.read, 0, 11), " -4 \n");
    expect_error(&d, &store_line(&short.write, 1), " -4 \n");

    // ... and its data has moved from data/ to recycle/<id>.<expired-at>.
    let recycle = d.data.join("recycle");
    assert!(
        wait_until(Duration::from_secs(4), || list_dir(&recycle).len() == 1),
        "recycle area: {:?}",
        list_dir(&recycle)
    );
    let recycled = list_dir(&recycle).remove(0);
    let (id, at) = recycled.split_once('.').expect("<id>.<expired-at>");
    assert!(files.contains(&id.to_owned()), "{recycled} vs {files:?}");
    let at: i64 = at.parse().unwrap();
    assert!(
        (expires - 1..=expires + 1).contains(&at),
        "{at} vs {expires}"
    );
    assert_eq!(
        std::fs::read(recycle.join(&recycled)).unwrap(),
        b"short-lived"
    );
    let left = list_dir(&d.data.join("data"));
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], id);

    // The long-lived allocation is untouched; the STATUS accounting has
    // released the expired one.
    let mut c = d.connect();
    assert_eq!(c.load(&long.read, 0, 100), b"long-lived");
    c.send(b"1 4 0 1 ibp 300\n");
    let _header = c.read_line();
    // The body is one line ending in " \n".
    let body = c.read_line();
    assert!(body.contains(" UT:100 "), "{body}");
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn restart_keeps_capabilities_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ProcessClock::new();
    let builder = DepotBuilder::new().data(dir.path()).clock(&clock);
    let mut d = builder.spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 200_000);
    let data = pattern(21, 0, 150_000);
    c.store(&a.write, &data);
    let b = c.allocate(1, 600, 10);
    c.store(&b.write, b"soft");
    assert_eq!(c.request(&incr_line(&b.manage, 1)), "1 \n");
    let gone = c.allocate(2, 600, 10);
    assert_eq!(c.request(&decr_line(&gone.manage, 1)), "1 \n");
    let p1 = c.probe(&a.manage);
    drop(c);

    // SIGTERM: exit code 0.
    d.sigterm();
    let status = d.wait_exit(IO_TIMEOUT);
    assert!(status.success(), "depot exited with {status:?}");
    // Two seconds pass between the two PROBEs.
    clock.advance(2);

    let d2 = builder.spawn();
    let mut c = d2.connect();
    // The same capabilities (the port in them is the old one; requests
    // carry only key and typekey) read the same bytes.
    assert_eq!(c.load(&a.read, 0, 200_000), data);
    let p2 = c.probe(&a.manage);
    assert_eq!(
        (p2.size, p2.max_size, p2.reliability),
        (150_000, 200_000, 2)
    );
    assert!(
        p2.secs < p1.secs && p2.secs >= p1.secs - 10,
        "seconds left {} before, {} after",
        p1.secs,
        p2.secs
    );
    let pb = c.probe(&b.manage);
    assert_eq!((pb.read_refs, pb.size, pb.reliability), (2, 4, 1));
    assert_eq!(c.load(&b.read, 0, 10), b"soft");
    // The WRITE capability still writes, and STORE appends after the data.
    c.store(&a.write, b"appended");
    assert_eq!(c.load(&a.read, 150_000, 100), b"appended");
    // The deleted one stays deleted.
    expect_error(&d2, &probe_line(&gone.manage), " -4 \n");
    // The accounting is recovered.
    let mut c = d2.connect();
    c.send(b"1 4 0 1 ibp 300\n");
    let _ = c.read_line();
    let body = c.read_line();
    assert!(body.contains(" UT:200010 "), "{body}");
    assert!(body.contains(" UH:200000 "), "{body}");
    // A new allocation gets a fresh key.
    let n = c.allocate(2, 60, 1);
    assert_ne!(n.read.cap.key, a.read.cap.key);
    assert_ne!(n.read.cap.key, gone.read.cap.key);
}

/// What a writer task knows about one allocation.
#[derive(Clone)]
struct Acked {
    caps: ibp_depot_client::Caps,
    seed: u64,
    /// Bytes whose STORE was acknowledged.
    acked: u64,
    /// A STORE of this many bytes was sent but its reply not yet read.
    in_flight: Option<u64>,
}

async fn writer(addr: String, task: u64, chunk: usize, max_size: u64, log: Arc<Mutex<Vec<Acked>>>) {
    let Ok(mut c) = IbpClient::connect(&addr).await else {
        return;
    };
    c.set_timeout(IO_TIMEOUT);
    for k in 0.. {
        let seed = task * 1_000_000 + k;
        let Ok(caps) = c.allocate(Rid(0), Reliability::Hard, 3600, max_size).await else {
            return;
        };
        let idx = {
            let mut l = log.lock().unwrap();
            l.push(Acked {
                caps: caps.clone(),
                seed,
                acked: 0,
                in_flight: None,
            });
            l.len() - 1
        };
        let mut at = 0u64;
        while at + chunk as u64 <= max_size {
            let data = pattern(seed, at, chunk);
            log.lock().unwrap()[idx].in_flight = Some(chunk as u64);
            match c.store(&caps.write, &data).await {
                Ok(n) => {
                    assert_eq!(n, chunk as u64);
                    at += n;
                    let mut l = log.lock().unwrap();
                    l[idx].acked = at;
                    l[idx].in_flight = None;
                }
                Err(_) => return,
            }
        }
    }
}

/// Starts `tasks` writers against a depot, SIGKILLs it after `run_for`,
/// restarts it on the same directory and checks every acknowledged
/// allocation and byte.
fn sigkill_during_stores(sync: &str, tasks: u64, chunk: usize, max_size: u64) {
    let dir = tempfile::tempdir().unwrap();
    let builder =
        DepotBuilder::new()
            .data(dir.path())
            .args(["--sync", sync, "--hard-size", "4GiB"]);
    let mut d = builder.spawn();
    let addr = d.addr_string();
    let log = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handles: Vec<_> = (0..tasks)
        .map(|t| rt.spawn(writer(addr.clone(), t, chunk, max_size, log.clone())))
        .collect();

    // Let the writers get going, then kill the depot mid-flight.
    let started = Instant::now();
    assert!(
        wait_until(IO_TIMEOUT, || {
            let l = log.lock().unwrap();
            l.len() as u64 >= tasks && l.iter().filter(|a| a.acked > 0).count() as u64 >= tasks / 2
        }),
        "writers made no progress"
    );
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    d.sigkill();
    let status = d.wait_exit(IO_TIMEOUT);
    assert!(!status.success());
    rt.block_on(async {
        for h in handles {
            tokio::time::timeout(IO_TIMEOUT * 2, h)
                .await
                .expect("writer task finishes after the kill")
                .expect("writer task did not panic");
        }
    });
    let log = log.lock().unwrap().clone();
    let in_flight = log.iter().filter(|a| a.in_flight.is_some()).count();
    let total: u64 = log.iter().map(|a| a.acked).sum();
    eprintln!(
        "sync={sync}: {} acknowledged allocations, {total} acknowledged bytes, {in_flight} STOREs in flight at the kill",
        log.len()
    );
    assert!(in_flight > 0, "the kill should interrupt some STOREs");

    // Restart and check everything that was acknowledged.
    let d2 = builder.spawn();
    let addr2 = d2.addr_string();
    let checked = rt.block_on(async {
        let log = Arc::new(log);
        let mut checks = Vec::new();
        for part in 0..4usize {
            let log = log.clone();
            let addr2 = addr2.clone();
            checks.push(tokio::spawn(async move {
                let mut c = IbpClient::connect(&addr2).await.unwrap();
                c.set_timeout(IO_TIMEOUT);
                let (mut extra, mut bytes) = (0, 0);
                for a in log.iter().skip(part).step_by(4) {
                    let p = c.probe(&a.caps.manage).await.unwrap_or_else(|e| {
                        panic!("acknowledged allocation lost after SIGKILL: {e}")
                    });
                    assert_eq!(p.max_size, max_size);
                    let ok =
                        p.size == a.acked || a.in_flight.is_some_and(|n| p.size == a.acked + n);
                    assert!(
                        ok,
                        "size {} after restart; acknowledged {}, in flight {:?}",
                        p.size, a.acked, a.in_flight
                    );
                    if p.size != a.acked {
                        extra += 1;
                    }
                    bytes += p.size;
                    let back = c.load(&a.caps.read, 0, max_size).await.unwrap();
                    assert_eq!(back.len() as u64, p.size);
                    assert!(
                        back == pattern(a.seed, 0, back.len()),
                        "allocation {} holds other bytes than were stored",
                        a.seed
                    );
                }
                (extra, bytes)
            }));
        }
        let (mut extra, mut bytes) = (0, 0);
        for h in checks {
            let (e, b) = tokio::time::timeout(IO_TIMEOUT * 3, h)
                .await
                .expect("verification finishes")
                .expect("verification");
            extra += e;
            bytes += b;
        }
        (extra, bytes)
    });
    eprintln!(
        "sync={sync}: {} allocations hold a STORE whose reply was not read",
        checked.0
    );
    // Recovery cut every data file to its acknowledged size: the files hold
    // exactly the bytes the allocations report, nothing unacknowledged.
    let on_disk: u64 = list_dir(&dir.path().join("data"))
        .iter()
        .map(|f| {
            std::fs::metadata(dir.path().join("data").join(f))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(
        on_disk, checked.1,
        "bytes in data files vs acknowledged sizes"
    );
}

#[test]
fn sigkill_during_concurrent_stores_batch() {
    sigkill_during_stores("batch", 60, 64 * 1024, 1 << 20);
}

#[test]
fn sigkill_during_concurrent_stores_always() {
    sigkill_during_stores("always", 50, 16 * 1024, 256 * 1024);
}

#[test]
fn sigterm_lets_an_in_flight_store_finish() {
    let dir = tempfile::tempdir().unwrap();
    let builder = DepotBuilder::new().data(dir.path()).legacy_whole_resource();
    let mut d = builder.spawn();
    let size = 32u64 << 20;
    let data = pattern(77, 0, size as usize);
    let mut idle = d.connect();
    let mut c = d.connect();
    let a = c.allocate(2, 3600, size);
    assert_eq!(c.request(&store_line(&a.write, size)), "1 \n");
    c.send(&data[..4 << 20]);

    d.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.running(), "depot exited with a STORE in flight");
    // An idle connection is closed at once; no new connections are accepted.
    idle.expect_closed();
    assert!(
        std::net::TcpStream::connect_timeout(&d.addr, IO_TIMEOUT).is_err(),
        "a new connection was accepted after SIGTERM"
    );

    c.send(&data[4 << 20..]);
    assert_eq!(c.read_line(), format!("1 {size}\n"));
    // After the reply the depot closes this connection and exits 0.
    c.expect_closed();
    let status = d.wait_exit(IO_TIMEOUT);
    assert!(status.success(), "{status:?}");

    // The acknowledged STORE is there after a restart.
    let d2 = builder.spawn();
    let mut c = d2.connect();
    assert_eq!(c.probe(&a.manage).size, size);
    assert!(c.load(&a.read, 0, size) == data, "stored bytes differ");
}

/// `strace -f -p PID -e trace=fdatasync`, attached to a running depot;
/// detached (SIGINT) on drop.
struct Strace {
    child: std::process::Child,
    log: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Strace {
    fn attach(pid: i32, dir: &std::path::Path, name: &str) -> Strace {
        let log = dir.join(format!("{name}.strace"));
        let err = dir.join(format!("{name}.strace-stderr"));
        let child = std::process::Command::new("strace")
            .args(["-f", "-e", "trace=fdatasync", "-o"])
            .arg(&log)
            .args(["-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test observes fdatasync(2) with strace, which could not be started: {e}"
                )
            });
        let s = Strace { child, log, err };
        assert!(
            wait_until(IO_TIMEOUT, || std::fs::read_to_string(&s.err)
                .unwrap_or_default()
                .contains("attached")),
            "strace did not attach: {}",
            std::fs::read_to_string(&s.err).unwrap_or_default()
        );
        s
    }

    /// fdatasync calls seen so far.
    fn fdatasyncs(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("fdatasync("))
            .count()
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `sync = "always"` every acknowledged request has its journal record
/// fsynced before the reply, also after the journal was compacted at run
/// time (records > 4 x live + 10,000).
#[test]
fn always_mode_fsyncs_after_journal_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("res");
    let cfg = dir.path().join("depot.toml");
    std::fs::write(
        &cfg,
        format!(
            "sync = \"always\"\nreap_interval = 1\n[[resource]]\nrid = 0\ndata = {:?}\nhard_size = \"1MiB\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let d = DepotBuilder::new()
        .no_data()
        .arg("--config")
        .arg(&cfg)
        .spawn();
    let journal = data.join("journal");
    let mut c = d.connect();
    let a = c.allocate(2, 3600, 100);

    // Control: an acknowledged INCR is preceded by an fdatasync.
    {
        let st = Strace::attach(d.pid(), dir.path(), "before");
        assert_eq!(c.request(&incr_line(&a.manage, 1)), "1 \n");
        assert!(
            wait_until(Duration::from_secs(2), || st.fdatasyncs() >= 1),
            "no fdatasync observed for an acknowledged INCR before compaction"
        );
    }

    // Grow the journal past the compaction threshold: 8 connections of
    // 1,260 pipelined INCR/DECR pairs' worth of records.
    let per_conn = 1260;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut c = d.connect();
            let line = incr_line(&a.manage, 2);
            std::thread::spawn(move || {
                c.send(line.repeat(per_conn).as_bytes());
                for _ in 0..per_conn {
                    assert_eq!(c.read_line(), "1 \n");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The reaper (every second) compacts it into a one-allocation
    // snapshot; it may already have, while the last replies were read, so
    // the growth is not measured by the file's size but by the records
    // acknowledged (the probe below) and the compaction by its log line.
    assert!(
        wait_until(Duration::from_secs(5), || {
            d.stderr().contains("journal compacted")
                && std::fs::metadata(&journal)
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX)
                    < 1000
        }),
        "journal was not compacted ({} bytes)",
        std::fs::metadata(&journal).unwrap().len()
    );
    let p = c.probe(&a.manage);
    assert_eq!(p.write_refs, 1 + 8 * per_conn as u64);

    // After compaction: an acknowledged INCR must again be fsynced.
    let synced_after_compaction = {
        let st = Strace::attach(d.pid(), dir.path(), "after");
        assert_eq!(c.request(&incr_line(&a.manage, 1)), "1 \n");
        wait_until(Duration::from_secs(2), || st.fdatasyncs() >= 1)
    };

    // The compacted journal plus the records after it survive a crash.
    let mut d = d;
    d.sigkill();
    d.wait_exit(IO_TIMEOUT);
    let d2 = DepotBuilder::new()
        .no_data()
        .arg("--config")
        .arg(&cfg)
        .spawn();
    let p = d2.connect().probe(&a.manage);
    assert_eq!(
        (p.read_refs, p.write_refs),
        (3, 1 + 8 * per_conn as u64),
        "state after compaction and restart"
    );

    assert!(
        synced_after_compaction,
        "an INCR was acknowledged with sync = always but the journal was never fdatasynced after the run-time compaction"
    );
}

#[test]
fn allocation_expired_while_down_is_recycled_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ProcessClock::new();
    let builder = DepotBuilder::new().data(dir.path()).clock(&clock);
    let mut d = builder.spawn();
    let mut c = d.connect();
    let short = c.allocate(2, 1, 10);
    c.store(&short.write, b"brief");
    let long = c.allocate(2, 600, 10);
    c.store(&long.write, b"lasting");
    drop(c);
    // SIGINT stops the depot like SIGTERM.
    d.signal(libc::SIGINT);
    assert!(d.wait_exit(IO_TIMEOUT).success());
    assert_eq!(list_dir(&dir.path().join("data")).len(), 2);
    clock.advance(3);

    let d2 = builder.spawn();
    expect_error(&d2, &probe_line(&short.manage), " -4 \n");
    let recycled = list_dir(&dir.path().join("recycle"));
    assert_eq!(recycled.len(), 1, "{recycled:?}");
    assert_eq!(
        std::fs::read(dir.path().join("recycle").join(&recycled[0])).unwrap(),
        b"brief"
    );
    assert_eq!(list_dir(&dir.path().join("data")).len(), 1);
    let mut c = d2.connect();
    assert_eq!(c.load(&long.read, 0, 10), b"lasting");
    c.send(b"1 4 0 1 ibp 300\n");
    let _ = c.read_line();
    assert!(c.read_line().contains(" UT:10 "));
}

/// Appends `bytes` to a resource's journal.
fn append_to_journal(data: &std::path::Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("journal"))
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn torn_journal_tail_is_cut_and_unknown_records_refused() {
    let dir = tempfile::tempdir().unwrap();
    let builder = DepotBuilder::new().data(dir.path());
    let mut d = builder.spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 600, 100);
    c.store(&a.write, b"before the crash");
    drop(c);
    d.sigkill();
    d.wait_exit(IO_TIMEOUT);

    // A crash in the middle of an append: a header promising more bytes
    // than follow.
    append_to_journal(dir.path(), &[40, 0, 0, 0, 1, 2, 3, 4, 2, 9, 9]);
    let mut d = builder.spawn();
    let mut c = d.connect();
    assert_eq!(c.load(&a.read, 0, 100), b"before the crash");
    c.store(&a.write, b"+after");
    drop(c);
    d.sigkill();
    d.wait_exit(IO_TIMEOUT);

    // A whole, checksummed record of a kind this depot does not know (as a
    // newer depot might write): refuse to start rather than drop it.
    let payload = [99u8, 1, 2, 3];
    let mut rec = (payload.len() as u32).to_le_bytes().to_vec();
    rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    rec.extend_from_slice(&payload);
    append_to_journal(dir.path(), &rec);
    let (status, stdout, stderr) = run_to_exit(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(!status.success(), "{status:?}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("journal"), "{stderr}");
    assert!(stderr.contains("does not know"), "{stderr}");
    // Nothing was lost by the refusal: the journal still holds the data's
    // records (cut the unknown record off and the depot serves them).
    let j = dir.path().join("journal");
    let len = std::fs::metadata(&j).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&j)
        .unwrap()
        .set_len(len - rec.len() as u64)
        .unwrap();
    let d = builder.spawn();
    assert_eq!(d.connect().load(&a.read, 0, 100), b"before the crash+after");
}
