//! Bad input and misbehaving clients: every one gets an error reply (or a
//! closed connection) and the depot keeps serving everybody else.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A fresh connection can still ALLOCATE, STORE and LOAD.
fn assert_serving(d: &DepotProc) {
    let mut c = d.connect();
    let a = c.allocate(2, 600, 16);
    c.store(&a.write, b"still serving!!!");
    assert_eq!(c.load(&a.read, 0, 16), b"still serving!!!");
}

/// Sends raw bytes on a fresh connection, expects exactly `reply` and then
/// a closed connection; the depot still serves a new connection afterwards.
fn bad(d: &DepotProc, bytes: &[u8], reply: &str) {
    let mut c = d.connect();
    // The depot may answer and close before it has read everything (then
    // the rest of the write fails): the reply is what counts.
    let _ = c.try_send(bytes);
    assert_eq!(
        c.read_line(),
        reply,
        "reply to {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
    );
    c.expect_closed();
    assert_serving(d);
}

#[test]
fn overlong_request_line() {
    let d = DepotBuilder::new().spawn();
    // A connection opened before the bad input keeps working throughout.
    let mut good = d.connect();
    let a = good.allocate(2, 600, 100);

    // More than 4 KiB without a newline: -21 and close, without waiting
    // for the rest of the line.
    bad(&d, &[b'7'; 5000], " -21 \n");
    bad(&d, &vec![b'1'; 64 * 1024], " -21 \n");
    // 4097 bytes including the newline are one too many ...
    let mut line = b"1 1 0 2 1 600 100 300".to_vec();
    line.resize(4096, b' ');
    line.push(b'\n');
    bad(&d, &line, " -21 \n");
    // ... 4096 are fine (spaces are separators).
    let mut line = b"1 1 0 2 1 600 100 300".to_vec();
    line.resize(4095, b' ');
    line.push(b'\n');
    let mut c = d.connect();
    c.send(&line);
    let reply = c.read_line();
    parse_allocate_reply(&reply, "127.0.0.1", d.port(), 0);

    good.store(&a.write, b"ok");
    assert_eq!(good.probe(&a.manage).size, 2);
}

#[test]
fn malformed_requests_get_their_error_codes() {
    let d = DepotBuilder::new().spawn();
    let mut good = d.connect();
    let a = good.allocate(2, 600, 100);

    // Unknown command.
    bad(&d, b"0 99 x\n", " -25 \n");
    bad(&d, b"0 6 whatever\n", " -25 \n");
    bad(&d, b"0 9 0#IBP-abc 1 77 1 300\n", " -25 \n");
    // Unknown protocol version (STATUS errors have no leading space).
    bad(&d, b"7 1 0 2 1 3600 1024 300\n", " -27 \n");
    bad(&d, b"7 4 0 1 ibp 300\n", "-27 \n");
    // v1 exists only for ALLOCATE and STATUS.
    bad(
        &d,
        format!("1 {}", &store_line(&a.write, 1)[2..]).as_bytes(),
        " -27 \n",
    );
    // Negative values where a size is expected: -30.
    bad(&d, b"1 1 0 2 1 3600 -5 300\n", " -30 \n");
    bad(&d, b"0 1 2 1 3600 -1 300\n", " -30 \n");
    bad(
        &d,
        store_line(&a.write, 0)
            .replace(" 0 300", " -5 300")
            .as_bytes(),
        " -30 \n",
    );
    bad(
        &d,
        format!("0 8 {} -1 10 300 \n", cr(&a.read)).as_bytes(),
        " -30 \n",
    );
    // Not numbers, wrong field counts: -21.
    bad(&d, b"1 1 0 2 1 3600 lots 300\n", " -21 \n");
    bad(&d, b"1 1 0 2 1 3600\n", " -21 \n");
    bad(&d, b"1\n", " -21 \n");
    bad(&d, b"1 4 0 1 ibp\n", "-21 \n");
    // A malformed capability: -11.
    bad(&d, b"0 8 no-hash-here 1 0 10 300 \n", " -11 \n");
    bad(&d, b"0 8 0#IBP-abc notanumber 0 10 300 \n", " -11 \n");
    // A well-formed capability the depot does not know: -4.
    bad(
        &d,
        format!("0 8 0#IBP-{} 1 0 10 300 \n", "Q".repeat(KEY_ALNUM)).as_bytes(),
        " -4 \n",
    );
    // A capability of an unknown resource: -4.
    bad(
        &d,
        format!(
            "0 8 9#{} {} 0 10 300 \n",
            a.read.cap.key, a.read.cap.typekey
        )
        .as_bytes(),
        " -4 \n",
    );

    // The connection opened before all that still works.
    assert_eq!(good.probe(&a.manage).size, 0);
    good.store(&a.write, b"fine");
    assert_eq!(good.load(&a.read, 0, 100), b"fine");
}

#[test]
fn garbage_binary_and_empty_lines() {
    let d = DepotBuilder::new().spawn();
    let mut good = d.connect();
    let a = good.allocate(2, 600, 100);

    bad(&d, b"\n", " -21 \n");
    bad(&d, b"\r\n", " -21 \n");
    bad(&d, b"   \t  \n", " -21 \n");
    bad(&d, b"\x00\xff\x01\x02garbage\n", " -21 \n");
    bad(&d, b"1 1 0 2 1 3600 1024 300\x00\n", " -21 \n");
    bad(&d, "1 1 0 2 1 3600 1024 30\u{e9}\n".as_bytes(), " -21 \n");
    bad(&d, b"hello world\n", " -25 \n");
    bad(&d, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", " -25 \n");
    let noise: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .filter(|b| *b != b'\n')
        .chain(std::iter::once(b'\n'))
        .collect();
    bad(&d, &noise, " -21 \n");

    // A client that connects and closes without a request, or sends half
    // a line and closes: nothing to answer, nothing breaks.
    drop(d.connect());
    let mut c = d.connect();
    c.send(b"1 1 0 2 1 36");
    drop(c);
    assert_serving(&d);

    assert_eq!(good.probe(&a.manage).max_size, 100);
}

#[test]
fn idle_connection_times_out() {
    let d = DepotBuilder::new().args(["--idle-timeout", "1s"]).spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 600, 10);
    let t = Instant::now();
    c.expect_closed();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited <= Duration::from_secs(3),
        "idle connection closed after {waited:?}"
    );
    // A busy connection is not idle: requests 0.5 s apart keep it open.
    let mut c = d.connect();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(c.probe(&a.manage).max_size, 10);
    }
    assert_serving(&d);
}

/// Writes a configuration file with `io_timeout = 1` and one resource.
fn io_timeout_config(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let cfg = dir.join("depot.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    writeln!(
        f,
        "io_timeout = 1\n\n[[resource]]\nrid = 0\ndata = {:?}\nhard_size = \"16MiB\"\n",
        data.to_str().unwrap()
    )
    .unwrap();
    cfg
}

/// The single allocation file of a depot's resource directory.
fn only_data_file(data: &Path) -> PathBuf {
    let files = list_dir(&data.join("data"));
    assert_eq!(files.len(), 1, "data files: {files:?}");
    data.join("data").join(&files[0])
}

#[test]
fn stalled_store_is_dropped_and_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = io_timeout_config(dir.path());
    let d = DepotBuilder::new()
        .no_data()
        .arg("--config")
        .arg(&cfg)
        .spawn();
    let data_dir = dir.path().join("data");

    let mut c = d.connect();
    let a = c.allocate(2, 600, 1000);
    // STORE header and half the data, then stall.
    assert_eq!(c.request(&store_line(&a.write, 100)), "1 \n");
    c.send(&[b'x'; 50]);
    let t = Instant::now();
    c.expect_closed();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "stalled STORE dropped after {waited:?}"
    );
    // Nothing was acknowledged: the size is 0 and the file cut back.
    let mut c2 = d.connect();
    let p = c2.probe(&a.manage);
    assert_eq!((p.size, p.max_size), (0, 1000));
    let file = only_data_file(&data_dir);
    assert!(
        wait_until(IO_TIMEOUT, || std::fs::metadata(&file).unwrap().len() == 0),
        "unacknowledged bytes left in {}",
        file.display()
    );
    // The allocation is usable, from offset 0.
    c2.store(&a.write, b"after the stall");
    assert_eq!(c2.load(&a.read, 0, 1000), b"after the stall");

    // A request line that stalls half-way is dropped the same way.
    let mut c3 = d.connect();
    c3.send(b"1 1 0 2 1 ");
    c3.expect_closed();
    assert_serving(&d);
}

#[test]
fn client_disconnecting_mid_store_leaves_size_unchanged() {
    let d = DepotBuilder::new().spawn();
    let mut c = d.connect();
    let a = c.allocate(2, 600, 1 << 20);
    c.store(&a.write, b"0123456789abcdef");
    let file = only_data_file(&d.data);

    let mut c2 = d.connect();
    assert_eq!(c2.request(&store_line(&a.write, 500_000)), "1 \n");
    c2.send(&pattern(1, 0, 250_000));
    drop(c2);

    // The depot cuts the file back to the acknowledged 16 bytes.
    assert!(
        wait_until(IO_TIMEOUT, || std::fs::metadata(&file).unwrap().len() == 16),
        "file is {} bytes after an abandoned STORE",
        std::fs::metadata(&file).unwrap().len()
    );
    let p = c.probe(&a.manage);
    assert_eq!(p.size, 16);
    assert_eq!(c.load(&a.read, 0, 1 << 20), b"0123456789abcdef");
    // The next STORE appends right after the acknowledged bytes.
    c.store(&a.write, b"+more");
    assert_eq!(c.load(&a.read, 0, 1 << 20), b"0123456789abcdef+more");
}

#[test]
fn connection_limit() {
    let d = DepotBuilder::new().args(["--max-connections", "2"]).spawn();
    let mut c1 = d.connect();
    let a = c1.allocate(2, 600, 100);
    let mut c2 = d.connect();
    assert_eq!(c2.probe(&a.manage).max_size, 100);

    // A third connection is closed at once, without a reply.
    let t = Instant::now();
    let mut c3 = d.connect();
    c3.expect_closed();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // The first two keep working.
    c1.store(&a.write, b"one");
    c2.store(&a.write, b"two");
    assert_eq!(c1.load(&a.read, 0, 100), b"onetwo");

    // Once one closes, a new connection is served (the depot may take a
    // moment to notice the close).
    drop(c1);
    let mut served = None;
    assert!(
        wait_until(IO_TIMEOUT, || {
            let mut c = d.connect();
            if c.try_send(probe_line(&a.manage).as_bytes()).is_err() {
                return false;
            }
            match c.try_read_line() {
                Ok(Some(line)) => {
                    served = Some(line);
                    true
                }
                _ => false,
            }
        }),
        "no new connection served after closing one"
    );
    assert_eq!(Probe::parse(&served.unwrap()).size, 6);
    assert_eq!(c2.probe(&a.manage).size, 6);
}

#[test]
fn unknown_config_field_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "io_timout = 1\n[[resource]]\nrid = 0\ndata = {:?}\nhard_size = \"1MiB\"\n",
            dir.path().join("d").to_str().unwrap()
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = run_to_exit(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert!(!status.success(), "{status:?}");
    assert!(stdout.is_empty(), "printed {stdout:?} before failing");
    assert!(stderr.contains("unknown field"), "{stderr}");
    assert!(stderr.contains("io_timout"), "{stderr}");
    assert!(stderr.contains(cfg.to_str().unwrap()), "{stderr}");

    // Inside a [[resource]] table too.
    std::fs::write(
        &cfg,
        "[[resource]]\nrid = 0\ndata = \"/tmp/x\"\nhard_size = \"1MiB\"\nsoft = 1\n",
    )
    .unwrap();
    let (status, _, stderr) = run_to_exit(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert!(!status.success(), "{status:?}");
    assert!(
        stderr.contains("unknown field") && stderr.contains("soft"),
        "{stderr}"
    );
}

/// A tmpfs of `size` (`1m`) mounted on a temporary directory, unmounted
/// on drop.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new(size: &str) -> Result<TmpfsMount, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(TmpfsMount { dir })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Spare files give their bytes back when the file system has less free
/// than their budget (`--spare-bytes`): a file freed then is kept as a
/// spare without bytes, and the spares already kept are emptied. On a
/// real 4 MiB tmpfs: needs root (mount), like tests/multi_host.rs.
#[test]
fn spares_give_their_bytes_back_when_the_disk_is_nearly_full() {
    const KIB: u64 = 1024;
    let mount = TmpfsMount::new("4m")
        .unwrap_or_else(|e| panic!("this test mounts a 4 MiB tmpfs (root needed): {}", e.trim()));
    let d = DepotBuilder::new()
        .args(["--hard-size", "64MiB", "--spare-bytes", "1MiB"])
        .legacy_whole_resource()
        .data(mount.dir.path())
        .spawn();
    let spare_lens = || -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(d.data.join("spare"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        v.sort_unstable();
        v
    };
    let mut c = d.connect();
    let a = c.allocate(2, 600, 1024 * KIB);
    c.store(&a.write, &pattern(1, 0, 300_000));
    let b = c.allocate(2, 600, 4096 * KIB);
    c.store(&b.write, b"0123456789");
    let freed = c.allocate(2, 600, 1024 * KIB);
    c.store(&freed.write, &pattern(2, 0, 100_000));

    // About 3.7 MiB free: the freed file keeps its bytes.
    assert_eq!(c.request(&decr_line(&freed.manage, 1)), "1 \n");
    assert_eq!(spare_lens(), vec![100_000]);

    // B grows by 2.8 MiB (a WRITE into its own file): under 1 MiB free.
    let grow = pattern(3, 10, 2800 * KIB as usize);
    assert_eq!(
        c.request(&write_line(&b.write, 10, grow.len() as u64)),
        "1 \n"
    );
    c.send(&grow);
    assert_eq!(c.read_line(), format!("1 {}\n", grow.len()));

    // Freeing A now keeps its file without bytes and empties the other.
    assert_eq!(c.request(&decr_line(&a.manage, 1)), "1 \n");
    assert_eq!(spare_lens(), vec![0, 0], "no bytes kept on a full disk");
    // B is whole.
    let back = c.load(&b.read, 0, 10 + grow.len() as u64);
    assert_eq!(&back[..10], b"0123456789");
    assert!(back[10..] == grow[..], "B's bytes");
}

#[test]
fn full_disk_fails_the_store_cleanly() {
    const MIB: u64 = 1 << 20;
    // Fill a disk for real: a 1 MiB tmpfs (as root), or else RLIMIT_FSIZE
    // of 1 MiB on the depot process (writes past 1 MiB fail with EFBIG).
    let force_rlimit = std::env::var_os("IBP_TEST_DISK_FULL_RLIMIT").is_some();
    let mount = if force_rlimit {
        Err("IBP_TEST_DISK_FULL_RLIMIT is set".to_owned())
    } else {
        TmpfsMount::new("1m")
    };
    let plain_dir = tempfile::tempdir().unwrap();
    // Spares up to 256 KiB: the tmpfs then has room left to keep the
    // freed file below with its bytes (the default budget, a quarter of
    // 8 MiB, is more than the disk's free space, and keeps no bytes).
    let builder = DepotBuilder::new()
        .args(["--hard-size", "8MiB", "--spare-bytes", "256KiB"])
        .legacy_whole_resource();
    let d = match &mount {
        Ok(m) => {
            eprintln!(
                "full disk: using a 1 MiB tmpfs at {}",
                m.dir.path().display()
            );
            builder.data(m.dir.path()).spawn()
        }
        Err(e) => {
            eprintln!(
                "full disk: mount failed ({}); using RLIMIT_FSIZE = 1 MiB",
                e.trim()
            );
            builder.data(plain_dir.path()).fsize_limit(MIB).spawn()
        }
    };

    let mut c = d.connect();
    let a = c.allocate(2, 600, 6 * MIB);
    c.store(&a.write, b"acknowledged....");
    // A freed allocation's file, kept as a spare with its bytes
    // (docs/depot.md, "Storage layout").
    let freed = c.allocate(2, 600, MIB);
    c.store(&freed.write, &pattern(3, 0, 200_000));
    assert_eq!(c.request(&decr_line(&freed.manage, 1)), "1 \n");
    let spare_lens = || -> Vec<u64> {
        std::fs::read_dir(d.data.join("spare"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect()
    };
    assert_eq!(spare_lens(), vec![200_000]);

    // STORE 4 MiB: the go-ahead comes (the allocation has room), the write
    // fails part-way, and the depot answers -16 and closes.
    let mut s = d.connect();
    assert_eq!(s.request(&store_line(&a.write, 4 * MIB)), "1 \n");
    let mut w = s.stream().try_clone().unwrap();
    let payload = pattern(9, 0, 4 * MIB as usize);
    let writer = std::thread::spawn(move || {
        // The depot may close before everything is sent.
        let _ = w.write_all(&payload);
    });
    assert_eq!(s.read_line(), " -16 \n");
    s.expect_closed();
    writer.join().unwrap();

    // The failed write gave the spares' bytes back to the disk.
    assert_eq!(spare_lens(), vec![0], "a failed write empties the spares");

    // Nothing of the failed STORE is acknowledged or left on disk.
    let p = c.probe(&a.manage);
    assert_eq!((p.size, p.max_size), (16, 6 * MIB));
    assert_eq!(c.load(&a.read, 0, 100), b"acknowledged....");
    let file = only_data_file(&d.data);
    assert!(
        wait_until(IO_TIMEOUT, || std::fs::metadata(&file).unwrap().len() == 16),
        "file is {} bytes after the failed STORE",
        std::fs::metadata(&file).unwrap().len()
    );

    // A small STORE works again, and the depot keeps serving.
    c.store(&a.write, b"+small");
    assert_eq!(c.load(&a.read, 0, 100), b"acknowledged....+small");
    assert_eq!(c.probe(&a.manage).size, 22);
    let mut st = d.connect();
    st.send(b"1 4 0 1 ibp 300\n");
    let header = st.read_line();
    assert!(
        header.starts_with("1 ") && header.ends_with(" \n"),
        "{header:?}"
    );
    assert_serving(&d);
    drop(d);
    drop(mount);
}
