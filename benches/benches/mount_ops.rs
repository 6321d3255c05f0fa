//! `lors mount` measured against the `lors` commands on a real-process
//! grid of release binaries (`ibp_testkit::grid`: online CA, L-Bone,
//! metadata manager, three depots on loopback, all on this machine), full
//! security, encrypted, one copy, 8 MiB blocks, one `lors mount` process
//! (default options, staging under a temporary directory):
//! - **sequential write**: a big file copied into the mount with 1 MiB
//!   writes, timed up to the end of its `close` (which stores the version)
//!   against `lors upload` of the same file (process wall time) (target:
//!   the mount >= 50 % of `lors upload`);
//! - **sequential read**: the file read from the mount with 1 MiB reads
//!   (every byte checked against the input's BLAKE3) against `lors
//!   download PATH -` to /dev/null (target >= 50 %);
//! - **random reads**: 4 KiB `pread` at random offsets of the file, 8
//!   threads on one open file (one reader in the mount), on a copy
//!   uploaded with 256 KiB blocks and on the 8 MiB one: reads per second
//!   (no target; the page cache is dropped for the file first by opening
//!   it anew: the mount does not keep pages across opens).
//!
//! Run with `cargo bench -p ibp-benches --bench mount_ops` as root (FUSE;
//! set `CARGO_TARGET_DIR` as for the other benches). Scale with
//! `MOUNT_OPS_BIG_MIB` (1024), `MOUNT_OPS_RANDOM_READS` (4000) and
//! `MOUNT_OPS_REPS` (2, best of, for the sequential comparisons); stage in
//! another directory (`--staging-dir`, e.g. a tmpfs) with
//! `MOUNT_OPS_STAGING_DIR` (default: under the benchmark's temporary
//! directory, on disk); give the mount's upload threads another nice
//! value (`--upload-nice`, default 10) with `MOUNT_OPS_UPLOAD_NICE`. Targets
//! are printed next to the figures, never fatal; a wrong byte or a failed
//! command is.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ibp_benches::{random_file, run_measured, ChildRun};
use ibp_testkit::grid::{Grid, GridOptions};

const USER: &str = "alice";
const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(900);
const TARGET_SEQ_RATIO: f64 = 0.5;
const THREADS: usize = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "meets target"
    } else {
        "BELOW TARGET"
    }
}

fn lors(grid: &Grid, args: &[&str], discard_stdout: bool) -> anyhow::Result<ChildRun> {
    let mut c = grid.lors(USER);
    c.args(args);
    let r = run_measured(c, discard_stdout, TIMEOUT)?;
    if !r.success() {
        bail!(
            "lors {args:?} failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    Ok(r)
}

fn mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A running `lors mount`, unmounted when dropped.
struct Mount {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(grid: &Grid, griddir: &str, work: &Path) -> anyhow::Result<Mount> {
        let dir = work.join("mnt");
        std::fs::create_dir_all(&dir)?;
        let log = work.join("mount.log");
        let stage = std::env::var_os("MOUNT_OPS_STAGING_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| work.join("stage"));
        let nice = std::env::var("MOUNT_OPS_UPLOAD_NICE").unwrap_or_else(|_| "10".into());
        println!(
            "staging in {}; upload threads at nice {nice}",
            stage.display()
        );
        let mut c = grid.lors(USER);
        c.args(["mount", griddir])
            .arg(&dir)
            .arg("--staging-dir")
            .arg(&stage)
            .args(["--upload-nice", &nice])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?);
        let mut child = c.spawn().context("start lors mount")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mounted(&dir) {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "lors mount ended ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("lors mount: no mount within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mount { child, dir, log })
    }

    fn unmount(mut self) -> anyhow::Result<()> {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .status()
            .context("run fusermount3")?;
        if !st.success() {
            bail!("fusermount3 -u failed");
        }
        let st = self.child.wait()?;
        if !st.success() {
            bail!(
                "lors mount exited {st}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn blake3_of(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Copies `src` into `dst` (in the mount) with 1 MiB writes; seconds
/// until its close returned.
fn write_through(src: &Path, dst: &Path) -> anyhow::Result<f64> {
    let mut input = File::open(src)?;
    let mut buf = vec![0u8; MIB as usize];
    let t = Instant::now();
    let mut out = File::create(dst).with_context(|| format!("create {}", dst.display()))?;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    // The version is stored by close; sync_all reports its error (drop
    // would not).
    out.sync_all()
        .context("fsync (the commit) through the mount")?;
    drop(out);
    Ok(t.elapsed().as_secs_f64())
}

/// Reads `path` with 1 MiB reads: seconds and the BLAKE3 of what was read.
fn read_through(path: &Path) -> anyhow::Result<(f64, u64, blake3::Hash)> {
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((t.elapsed().as_secs_f64(), total, h.finalize()))
}

/// `reads` 4 KiB preads at random offsets, [`THREADS`] threads sharing
/// one open file; each read checked against `input`. Reads per second.
fn random_reads(path: &Path, input: &Path, size: u64, reads: u64) -> anyhow::Result<f64> {
    let f = Arc::new(File::open(path)?);
    let local = Arc::new(File::open(input)?);
    let per = (reads / THREADS as u64).max(1);
    let t = Instant::now();
    let mut joins = Vec::new();
    for i in 0..THREADS {
        let (f, local) = (f.clone(), local.clone());
        joins.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
            let (mut got, mut want) = (vec![0u8; 4096], vec![0u8; 4096]);
            for _ in 0..per {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let off = (state % (size - 4096)) & !4095;
                f.read_exact_at(&mut got, off)?;
                local.read_exact_at(&mut want, off)?;
                if got != want {
                    bail!("wrong bytes at {off} through the mount");
                }
            }
            Ok(())
        }));
    }
    for j in joins {
        j.join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
    }
    Ok((per * THREADS as u64) as f64 / t.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "mount_ops: a benchmark; run it with `cargo bench -p ibp-benches --bench mount_ops`"
        );
        return Ok(());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: this benchmark mounts with FUSE");
    }
    let big = env_u64("MOUNT_OPS_BIG_MIB", 1024) * MIB;
    let reads = env_u64("MOUNT_OPS_RANDOM_READS", 4000);
    let reps = env_u64("MOUNT_OPS_REPS", 2).max(1);

    let work = tempfile::Builder::new().prefix("mount-ops-").tempdir()?;
    let grid = Grid::start(GridOptions {
        release: true,
        depot_hard_size: 8 << 30,
        ..GridOptions::default()
    })?;
    println!(
        "grid of {} depots; load average {}",
        grid.depots.len(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    lors(&grid, &["keys", "init"], false)?;
    lors(&grid, &["mkdir", "-p", "/vo1/mb"], false)?;
    let input = work.path().join("big.bin");
    random_file(&input, big)?;
    let want = blake3_of(&input)?;
    let input_s = input.display().to_string();
    let mnt = Mount::start(&grid, "/vo1/mb", work.path())?;

    println!(
        "== sequential write of {} MiB: through the mount vs lors upload (best of {reps}) ==",
        big / MIB
    );
    let (mut m_best, mut cli_best) = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let r = lors(&grid, &["upload", &input_s, "/vo1/mb/up.dat"], false)?;
        cli_best = cli_best.min(r.wall.as_secs_f64());
        m_best = m_best.min(write_through(&input, &mnt.dir.join("w.dat"))?);
    }
    let (m_rate, cli_rate) = (
        big as f64 / MIB as f64 / m_best,
        big as f64 / MIB as f64 / cli_best,
    );
    let ratio = m_rate / cli_rate;
    println!(
        "  mount {m_rate:.0} MiB/s, lors upload {cli_rate:.0} MiB/s: ratio {ratio:.2} ({}) [target {TARGET_SEQ_RATIO:.2}]",
        verdict(ratio >= TARGET_SEQ_RATIO)
    );

    println!(
        "== sequential read of {} MiB: through the mount vs lors download to /dev/null (best of {reps}) ==",
        big / MIB
    );
    let (mut m_best, mut cli_best) = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let r = lors(&grid, &["download", "/vo1/mb/w.dat", "-"], true)?;
        cli_best = cli_best.min(r.wall.as_secs_f64());
        let (secs, n, h) = read_through(&mnt.dir.join("w.dat"))?;
        if n != big || h != want {
            bail!("read {n} of {big} bytes through the mount, or wrong bytes");
        }
        m_best = m_best.min(secs);
    }
    let (m_rate, cli_rate) = (
        big as f64 / MIB as f64 / m_best,
        big as f64 / MIB as f64 / cli_best,
    );
    let ratio = m_rate / cli_rate;
    println!(
        "  mount {m_rate:.0} MiB/s, lors download {cli_rate:.0} MiB/s: ratio {ratio:.2} ({}) [target {TARGET_SEQ_RATIO:.2}]",
        verdict(ratio >= TARGET_SEQ_RATIO)
    );

    lors(
        &grid,
        &[
            "upload",
            &input_s,
            "/vo1/mb/small-blocks.dat",
            "--block-size",
            "256KiB",
        ],
        false,
    )?;
    println!("== random 4 KiB reads through the mount, {THREADS} threads on one open file ==");
    for (name, n) in [
        ("small-blocks.dat", reads),
        ("w.dat", (reads / 20).max(THREADS as u64)),
    ] {
        let rate = random_reads(&mnt.dir.join(name), &input, big, n)?;
        println!(
            "  {name} ({} blocks): {n} reads, {rate:.0}/s",
            if name == "w.dat" { "8 MiB" } else { "256 KiB" }
        );
    }
    mnt.unmount()?;
    Ok(())
}
