//! `lors mount` against a real grid with real FUSE (as root, no libfuse):
//!
//! - files of several sizes written through the mount with `std::fs`
//!   (uploaded while written, or from the stage after a seek back) read
//!   back through it, from a second mount of the same directory (a second
//!   host) and with `lors download`; random-offset reads; a partial
//!   overwrite and a truncation of an existing file; rename, delete,
//!   mkdir and rmdir; no plaintext written through the mount on any depot;
//! - two mounts writing one file: the second close fails with EBUSY and
//!   the metadata manager keeps the first one's content;
//! - a depot killed while a file (two copies) is read through the mount;
//!   with every depot dead, a close fails with EIO and registers nothing;
//! - the proxy expiring under a mount: EACCES with one log line, and
//!   working again once a fresh proxy is there;
//! - unmounting by SIGTERM and by `fusermount3 -u`: lors exits 0 and the
//!   mount is gone.
//!
//! Nothing skips: without /dev/fuse (or fusermount3) these tests fail.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

/// The tests of this file run one at a time: a `lors` child that another
/// test thread forks inherits every descriptor open in this process, and
/// its exec closes them, which makes the kernel send FLUSH for a file open
/// for writing through a mount, committing it early (as for any process
/// that forks with such a file open; docs/mount.md). The tests assert on
/// exactly which versions get registered.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn opts() -> GridOptions {
    GridOptions {
        depots: 3,
        lbone_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A running `lors mount`: unmounted and killed when dropped (a failing
/// test leaves no mount behind).
struct Mount {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

fn mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// `lors mount /vo1/GRIDDIR DIR` as alice, with `env` and `args` added;
/// returns once the kernel shows the mount.
fn mount(
    g: &Grid,
    tmp: &Path,
    name: &str,
    griddir: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Mount {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need FUSE"
    );
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("make the mount point");
    let log = tmp.join(format!("{name}.log"));
    let stage = tmp.join(format!("{name}-stage"));
    let mut c = lors_cmd(
        g,
        "alice",
        &[
            "mount",
            griddir,
            s(&dir),
            "--staging-dir",
            s(&stage),
            "--attr-ttl",
            "0",
            "--json",
        ],
    );
    c.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).expect("the log file"));
    let child = c.spawn().expect("lors mount starts");
    let mut m = Mount {
        child: Some(child),
        dir,
        log,
    };
    wait_until(Duration::from_secs(30), "the mount appears", || {
        if let Some(Ok(Some(st))) = m.child.as_mut().map(Child::try_wait) {
            panic!("lors mount ended ({st}): {}", m.log_text());
        }
        mounted(&m.dir)
    });
    let mode = std::fs::metadata(&stage)
        .expect("the staging dir")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700,
        "the staging directory is owner-only"
    );
    m
}

impl Mount {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for lors to exit after an unmount; its exit code and stdout.
    fn wait_exit(&mut self) -> (i32, String) {
        let mut child = self.child.take().expect("still running");
        wait_until(Duration::from_secs(30), "lors mount exits", || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        let mut out = String::new();
        if let Some(mut so) = child.stdout.take() {
            let _ = so.read_to_string(&mut out);
        }
        let st = child.wait().expect("the exit status");
        (st.code().unwrap_or(-1), out)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (name, nice) of each thread of process `pid`, from /proc.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the mount's threads") {
        let Ok(t) = t else { continue };
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ..." : nice is the 19th field, the 17th
        // after the ')' that ends the name.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let nice = stat[close + 1..]
            .split_whitespace()
            .nth(16)
            .and_then(|v| v.parse().ok())
            .expect("a nice value");
        out.push((name, nice));
    }
    out
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// close(2) of `f`, its result (std's drop ignores it).
fn close(f: File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`: we own it and
    // close it once.
    let r = unsafe { libc::close(fd) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read {len} at {offset} of {}: {e}", path.display()));
    buf
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` holding `needle`.
fn files_with(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(_) => {
                    if std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
                        found.push(p);
                    }
                }
                Err(_) => {}
            }
        }
    }
    found
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn files_written_through_the_mount_read_back_everywhere() {
    let _serial = one_at_a_time();
    let _t = Timer::start("files_written_through_the_mount_read_back_everywhere");
    let g = start(opts());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/m"]));
    let tmp = tempfile::tempdir().expect("a temp dir");
    let block = [("LORS_BLOCK_SIZE", "1MiB")];
    let mut a = mount(&g, tmp.path(), "a", "/vo1/m", &block, &[]);

    // Several sizes (empty, under a page, around block edges, many blocks
    // of 1 MiB) written with ordinary file APIs.
    let sizes = [0usize, 1, 4095, 4097, (1 << 20) + 3, (5 << 20) + 777];
    let mut files = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let data = bytes(*n, 100 + i as u64);
        let name = format!("f{i}");
        std::fs::write(a.p(&name), &data).unwrap_or_else(|e| panic!("write {name}: {e}"));
        files.push((name, data));
    }
    for (name, data) in &files {
        let got = std::fs::read(a.p(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert!(got == *data, "{name} reads back through the mount");
        assert_eq!(
            std::fs::metadata(a.p(name)).expect("stat").len(),
            data.len() as u64
        );
        download_is(&g, "alice", &format!("/vo1/m/{name}"), data, name);
    }
    let listed = names(&a.dir);
    for (name, _) in &files {
        assert!(listed.contains(name), "{name} listed: {listed:?}");
    }
    // The uploads ran on threads of their own at nice 10 (the default
    // `--upload-nice`), the FUSE threads at the mount's own priority.
    let pid = a.child.as_ref().expect("the mount runs").id();
    let nices = thread_nices(pid);
    assert!(
        nices.iter().any(|(n, v)| n == "lors-upload" && *v == 10),
        "upload threads at nice 10: {nices:?}"
    );
    assert!(
        nices
            .iter()
            .filter(|(n, _)| n.starts_with("fuser"))
            .all(|(_, v)| *v == 0)
            && nices.iter().any(|(n, _)| n.starts_with("fuser")),
        "FUSE threads at nice 0: {nices:?}"
    );

    // Random-offset reads of the largest file.
    let (big, big_data) = files.last().expect("files").clone();
    for (off, len) in [
        (0u64, 10usize),
        (4093, 9),
        (1 << 20, 4096),
        (3_000_001, 70_000),
        ((5 << 20) + 700, 77),
    ] {
        let got = read_at(&a.p(&big), off, len);
        assert!(
            got[..] == big_data[off as usize..off as usize + len],
            "{len} bytes at {off} of {big}"
        );
    }

    // A partial overwrite of an existing file (its content copied into the
    // stage first), then a truncation.
    let mut f = OpenOptions::new()
        .write(true)
        .open(a.p("f4"))
        .expect("open f4 for writing");
    f.seek(SeekFrom::Start(1000)).expect("seek");
    f.write_all(b"OVERWRITTEN").expect("write");
    close(f).expect("close commits the overwrite");
    let mut want4 = files[4].1.clone();
    want4[1000..1011].copy_from_slice(b"OVERWRITTEN");
    download_is(&g, "alice", "/vo1/m/f4", &want4, "f4 overwritten at 1000");
    let f = OpenOptions::new()
        .write(true)
        .open(a.p("f3"))
        .expect("open f3 for writing");
    f.set_len(100).expect("truncate");
    f.sync_all().expect("fsync commits the truncation");
    drop(f);
    download_is(
        &g,
        "alice",
        "/vo1/m/f3",
        &files[3].1[..100],
        "f3 cut to 100 bytes",
    );

    // Written in order, then a seek back: the upload streamed while
    // writing is abandoned and the file stored from the stage.
    let mut want = bytes(3 << 20, 9);
    let mut f = File::create(a.p("seek-back")).expect("create seek-back");
    f.write_all(&want).expect("write in order");
    f.seek(SeekFrom::Start(100)).expect("seek back");
    f.write_all(b"AGAIN").expect("write at 100");
    close(f).expect("close stores seek-back");
    want[100..105].copy_from_slice(b"AGAIN");
    download_is(&g, "alice", "/vo1/m/seek-back", &want, "seek-back");

    // A program started while a file is open for writing (its child
    // closes the copy of the descriptor at exec: a FLUSH from another
    // process) stores nothing; the opener's close stores the whole file,
    // as one version.
    let whole = bytes(300_000, 77);
    let mut f = File::create(a.p("forked")).expect("create forked");
    f.write_all(&whole[..100_000]).expect("first part");
    let st = Command::new("true").status().expect("run true");
    assert!(st.success());
    let early = lors(&g, "alice", &["stat", "/vo1/m/forked"]);
    assert_eq!(
        code(&early),
        7,
        "not stored by the child's close: {}",
        text(&early)
    );
    f.write_all(&whole[100_000..]).expect("second part");
    close(f).expect("the opener's close stores forked");
    download_is(&g, "alice", "/vo1/m/forked", &whole, "forked");
    let st: serde_json::Value =
        serde_json::from_str(&ok(lors(&g, "alice", &["stat", "--json", "/vo1/m/forked"])))
            .expect("stat --json");
    assert_eq!(st["version"], 1, "one version: {st}");

    // A second host (a second mount of the same directory) sees them.
    let mut b = mount(&g, tmp.path(), "b", "/vo1/m", &[], &[]);
    assert!(
        std::fs::read(b.p(&big)).expect("read on b") == big_data,
        "b reads {big}"
    );
    assert!(
        std::fs::read(b.p("f4")).expect("read on b") == want4,
        "b reads f4"
    );

    // Rename and delete, seen by the other mount and the metadata manager.
    std::fs::rename(a.p("f2"), a.p("renamed")).expect("rename");
    assert!(std::fs::read(b.p("renamed")).expect("b reads the renamed file") == files[2].1);
    assert_eq!(
        std::fs::metadata(b.p("f2")).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    std::fs::remove_file(a.p("f1")).expect("unlink");
    assert_eq!(
        std::fs::metadata(b.p("f1")).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    let o = lors(&g, "alice", &["stat", "/vo1/m/f1"]);
    assert_eq!(
        code(&o),
        7,
        "f1 is gone from the metadata manager: {}",
        text(&o)
    );

    // mkdir, rmdir (refused while not empty).
    std::fs::create_dir(a.p("d")).expect("mkdir");
    std::fs::write(a.p("d/x"), b"inside").expect("write d/x");
    assert_eq!(std::fs::read(b.p("d/x")).expect("b reads d/x"), b"inside");
    let e = std::fs::remove_dir(a.p("d")).expect_err("rmdir of a non-empty directory");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    std::fs::remove_file(a.p("d/x")).expect("unlink d/x");
    std::fs::remove_dir(a.p("d")).expect("rmdir");
    assert_eq!(
        std::fs::metadata(b.p("d")).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );

    // Two hosts write one file: the second close fails, the first's
    // content stays.
    std::fs::write(a.p("shared"), b"base").expect("write shared");
    let mut fa = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.p("shared"))
        .expect("open on a");
    let mut fb = OpenOptions::new()
        .read(true)
        .write(true)
        .open(b.p("shared"))
        .expect("open on b");
    fa.write_all(b"from host a").expect("write on a");
    fb.write_all(b"from host b").expect("write on b");
    close(fa).expect("the first close commits");
    let e = close(fb).expect_err("the second close is refused");
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
    download_is(
        &g,
        "alice",
        "/vo1/m/shared",
        b"from host a",
        "the first writer's version",
    );
    assert!(
        b.log_text().contains("another writer stored a version"),
        "b logs the conflict: {}",
        b.log_text()
    );

    // No plaintext written through the mount is on any depot.
    let marker = b"PLAINTEXT-MARKER-of-lors-mount-4f1c9e";
    let mut secret = Vec::new();
    for _ in 0..2000 {
        secret.extend_from_slice(marker);
    }
    std::fs::write(a.p("secret"), &secret).expect("write the marker file");
    download_is(&g, "alice", "/vo1/m/secret", &secret, "the marker file");
    for d in &g.depots {
        let hits = files_with(&d.data_dir, marker);
        assert!(hits.is_empty(), "plaintext on a depot: {hits:?}");
    }

    // Unmount by SIGTERM (a) and by fusermount3 -u (b): exit 0, gone.
    signal(a.child.as_ref().expect("running"), libc::SIGTERM);
    let (code_a, out_a) = a.wait_exit();
    assert_eq!(code_a, 0, "lors mount after SIGTERM: {}", a.log_text());
    assert!(!mounted(&a.dir), "a is unmounted");
    let summary: serde_json::Value = serde_json::from_str(&out_a).expect("the JSON summary");
    assert!(
        summary["versions_committed"].as_u64() >= Some(9),
        "{summary}"
    );
    assert_eq!(summary["conflicts"], 0, "{summary}");
    // The new files written in order were uploaded while being written.
    assert!(
        summary["versions_streamed"].as_u64() >= Some(5),
        "{summary}"
    );
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&b.dir)
        .status()
        .expect("fusermount3 runs");
    assert!(st.success(), "fusermount3 -u");
    let (code_b, out_b) = b.wait_exit();
    assert_eq!(
        code_b,
        0,
        "lors mount after fusermount3 -u: {}",
        b.log_text()
    );
    assert!(!mounted(&b.dir), "b is unmounted");
    let summary: serde_json::Value = serde_json::from_str(&out_b).expect("the JSON summary");
    assert_eq!(summary["conflicts"], 1, "{summary}");
}

#[test]
fn a_depot_killed_while_reading_through_the_mount() {
    let _serial = one_at_a_time();
    let _t = Timer::start("a_depot_killed_while_reading_through_the_mount");
    let mut g = start(opts());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/k"]));
    let tmp = tempfile::tempdir().expect("a temp dir");
    let env = [("LORS_COPIES", "2"), ("LORS_BLOCK_SIZE", "256KiB")];
    let m = mount(
        &g,
        tmp.path(),
        "k",
        "/vo1/k",
        &env,
        &["--read-ahead", "1", "--cache", "1MiB"],
    );
    let data = bytes(12 << 20, 7);
    std::fs::write(m.p("two-copies"), &data).expect("write through the mount");
    assert!(
        depot_data_bytes(&g, 0) > 0,
        "depot 0 holds blocks of the file"
    );
    let mut f = File::open(m.p("two-copies")).expect("open for reading");
    let mut got = vec![0u8; 1 << 20];
    f.read_exact(&mut got).expect("the first MiB");
    g.kill_depot(0);
    let mut rest = Vec::new();
    f.read_to_end(&mut rest)
        .expect("the rest, after the depot died");
    got.extend_from_slice(&rest);
    assert!(got == data, "the file reads back whole with depot 0 dead");

    // With every depot dead, a commit fails: close says EIO and nothing
    // is registered.
    g.kill_depot(1);
    g.kill_depot(2);
    let mut f = File::create(m.p("lost")).expect("create lost");
    f.write_all(&bytes(1 << 20, 8)).expect("staged");
    let e = close(f).expect_err("close with no depot alive");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let o = lors(&g, "alice", &["stat", "/vo1/k/lost"]);
    assert_eq!(code(&o), 7, "nothing registered: {}", text(&o));
    assert!(
        m.log_text().contains("/vo1/k/lost: not stored"),
        "{}",
        m.log_text()
    );
}

#[test]
fn an_expired_proxy_fails_with_eacces_then_recovers() {
    let _serial = one_at_a_time();
    let _t = Timer::start("an_expired_proxy_fails_with_eacces_then_recovers");
    let g = start(opts());
    keys_init(&g, "alice");
    ok(lors(&g, "alice", &["mkdir", "/vo1/p"]));
    let tmp = tempfile::tempdir().expect("a temp dir");
    let proxy = tmp.path().join("proxy.pem");
    std::fs::copy(g.proxy("alice"), &proxy).expect("copy the proxy");
    let m = mount(&g, tmp.path(), "p", "/vo1/p", &[], &["--proxy", s(&proxy)]);
    std::fs::write(m.p("before"), b"written before").expect("write with a good proxy");

    expired_proxy(&g, "alice", &proxy);
    for _ in 0..3 {
        let e = std::fs::read_dir(&m.dir).expect_err("listing with an expired proxy");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }
    let e = std::fs::write(m.p("during"), b"x").expect_err("writing with an expired proxy");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let log = m.log_text();
    assert_eq!(
        log.matches("operations fail with EACCES").count(),
        1,
        "one log line for the expiry: {log}"
    );

    std::fs::copy(g.proxy("alice"), &proxy).expect("a fresh proxy");
    assert_eq!(names(&m.dir), ["before"]);
    std::fs::write(m.p("after"), b"written after").expect("write with the fresh proxy");
    download_is(
        &g,
        "alice",
        "/vo1/p/after",
        b"written after",
        "after renewal",
    );
    assert!(
        m.log_text().contains("operations work again"),
        "{}",
        m.log_text()
    );
}
