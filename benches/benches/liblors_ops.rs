//! liblors measured through its C API from one process, on a real-process
//! grid of release binaries (`ibp_testkit::grid`: online CA, L-Bone,
//! metadata manager, three depots on loopback, all on this machine).
//!
//! liblors is installed (release) into a temporary prefix with
//! `scripts/install-liblors`, and `lors/examples/lors_bench.c` is compiled
//! against it with the system `cc -O2` through `pkg-config`; that one C
//! process does the work and prints its figures:
//! - **small files**: 4 KiB `lors_upload_buffer` then `lors_download_buffer`
//!   (full security, encrypted, one copy; every byte checked), 1, 8 and 32
//!   threads sharing one client: puts and gets per second (target
//!   >= 1,000 each);
//! - **random reads**: 4 KiB `lors_read_at` at random offsets of a 1 GiB
//!   file, 8 threads on one reader with no read-ahead and a cache of one
//!   extent (so a read of another block always misses), on the file
//!   uploaded with 256 KiB blocks (64 KiB would make an exNode of 16,384
//!   mappings, larger than the metadata manager's default limit) and with
//!   the default 8 MiB (target >= 2,000 per second);
//! - **sequential read**: the whole 1 GiB file with `lors_read` (8 MiB
//!   calls, default reader options) against `lors download PATH -` to
//!   /dev/null (target >= 90 %).
//!
//! Run with `cargo bench -p ibp-benches --bench liblors_ops` (set
//! `CARGO_TARGET_DIR` as for the other benches). Scale with
//! `LIBLORS_OPS_BIG_MIB` (1024), `LIBLORS_OPS_SMALL_SCALE` (1.0),
//! `LIBLORS_OPS_RANDOM_READS` (4000) and `LIBLORS_OPS_REPS` (3, for the
//! sequential comparison). Targets are printed next to the figures, never
//! fatal; a wrong byte or a failed call is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ibp_benches::{random_file, run_measured, ChildRun};
use ibp_testkit::grid::{target_dir, Grid, GridOptions};

const USER: &str = "alice";
const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(900);
const TARGET_SMALL: f64 = 1000.0;
const TARGET_RANDOM: f64 = 2000.0;
const TARGET_SEQ_RATIO: f64 = 0.9;

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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Installs liblors (release) under `prefix` and compiles lors_bench.c.
fn build_bench(prefix: &Path) -> anyhow::Result<PathBuf> {
    let mut c = Command::new(root().join("scripts/install-liblors"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "RUST_RECURSION_COUNT" {
            c.env_remove(&key);
        }
    }
    c.env("CARGO_TARGET_DIR", target_dir()).arg(prefix);
    let o = c.output().context("run scripts/install-liblors")?;
    if !o.status.success() {
        bail!(
            "install-liblors failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let pc = |args: &[&str]| -> anyhow::Result<Vec<String>> {
        let o = Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
            .args(args)
            .arg("lors")
            .output()
            .context("run pkg-config")?;
        if !o.status.success() {
            bail!(
                "pkg-config {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    };
    let exe = prefix.join("lors_bench");
    let o = Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(root().join("lors/examples/lors_bench.c"))
        .args(pc(&["--cflags", "--libs"])?)
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
        .output()
        .context("run cc")?;
    if !o.status.success() {
        bail!("cc lors_bench.c: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(exe)
}

struct Bench {
    grid: Grid,
    exe: PathBuf,
}

impl Bench {
    /// `lors_bench ARGS` as the user; its `key value` lines.
    fn c(&self, args: &[&str]) -> anyhow::Result<(HashMap<String, f64>, ChildRun)> {
        let mut c = Command::new(&self.exe);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("LORS_") || k.starts_with("X509_") {
                c.env_remove(&key);
            }
        }
        c.envs(self.grid.env(USER))
            .env("RUST_LOG", "warn")
            .current_dir(&self.grid.user(USER).dir)
            .args(args);
        let r = run_measured(c, false, TIMEOUT)?;
        if !r.success() {
            bail!(
                "lors_bench {args:?} failed (exit {:?}): {}",
                r.code,
                String::from_utf8_lossy(&r.stderr)
            );
        }
        let figures = String::from_utf8_lossy(&r.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect();
        Ok((figures, r))
    }

    fn lors(&self, args: &[&str], discard_stdout: bool) -> anyhow::Result<ChildRun> {
        let mut c = self.grid.lors(USER);
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
}

fn get(f: &HashMap<String, f64>, k: &str) -> anyhow::Result<f64> {
    f.get(k)
        .copied()
        .with_context(|| format!("lors_bench printed no {k}"))
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("liblors_ops: a benchmark; run it with `cargo bench -p ibp-benches --bench liblors_ops`");
        return Ok(());
    }
    let big = env_u64("LIBLORS_OPS_BIG_MIB", 1024) * MIB;
    let scale: f64 = std::env::var("LIBLORS_OPS_SMALL_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let random_reads = env_u64("LIBLORS_OPS_RANDOM_READS", 4000);
    let reps = env_u64("LIBLORS_OPS_REPS", 3).max(1);

    let work = tempfile::Builder::new().prefix("liblors-ops-").tempdir()?;
    let t = Instant::now();
    let exe = build_bench(&work.path().join("prefix"))?;
    println!(
        "liblors_ops: liblors (release) installed and lors_bench.c compiled in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let grid = Grid::start(GridOptions {
        release: true,
        depot_hard_size: 6 << 30,
        ..GridOptions::default()
    })?;
    let b = Bench { grid, exe };
    println!(
        "grid of {} depots; load average {}",
        b.grid.depots.len(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    b.lors(&["keys", "init"], false)?;
    b.lors(&["mkdir", "-p", "/vo1/lb"], false)?;

    println!("== small files: 4 KiB, full security, encrypted, one copy, one client ==");
    for (threads, n) in [(1usize, 300.0), (8, 1000.0), (32, 2000.0)] {
        let n = ((n * scale) as usize).max(threads);
        let dir = format!("/vo1/lb/small-{threads}");
        let (f, _) = b.c(&["small", &dir, &threads.to_string(), &n.to_string()])?;
        let (put, got) = (get(&f, "put_per_s")?, get(&f, "get_per_s")?);
        println!(
            "  {threads:>2} threads, {n} files: put {put:.0}/s ({}), get {got:.0}/s ({}) [target {TARGET_SMALL:.0}/s]",
            verdict(put >= TARGET_SMALL),
            verdict(got >= TARGET_SMALL)
        );
    }

    let input = work.path().join("big.bin");
    random_file(&input, big)?;
    let input_s = input.display().to_string();
    let up = b.lors(&["upload", &input_s, "/vo1/lb/big.dat"], false)?;
    println!(
        "uploaded {} MiB (8 MiB blocks) with lors in {:.1} s",
        big / MIB,
        up.wall.as_secs_f64()
    );
    let up = b.lors(
        &[
            "upload",
            &input_s,
            "/vo1/lb/big-256k.dat",
            "--block-size",
            "256KiB",
        ],
        false,
    )?;
    println!(
        "uploaded {} MiB (256 KiB blocks) with lors in {:.1} s",
        big / MIB,
        up.wall.as_secs_f64()
    );
    std::fs::remove_file(&input)?;

    println!("== random 4 KiB reads, 8 threads on one reader, no read-ahead, one extent cached ==");
    for (path, reads) in [
        ("/vo1/lb/big-256k.dat", random_reads),
        ("/vo1/lb/big.dat", (random_reads / 20).max(8)),
    ] {
        let (f, _) = b.c(&["random", path, "8", &reads.to_string()])?;
        let rate = get(&f, "random_reads_per_s")?;
        println!(
            "  {path}: {reads} reads, {rate:.0}/s ({}) [target {TARGET_RANDOM:.0}/s]",
            verdict(rate >= TARGET_RANDOM)
        );
    }

    println!(
        "== sequential read of {} MiB: lors_read vs lors download to /dev/null (best of {reps}) ==",
        big / MIB
    );
    let (mut c_best, mut cli_best) = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let (f, _) = b.c(&["seq", "/vo1/lb/big.dat"])?;
        if get(&f, "seq_bytes")? as u64 != big {
            bail!(
                "lors_bench seq read {} of {big} bytes",
                get(&f, "seq_bytes")?
            );
        }
        c_best = c_best.min(get(&f, "seq_seconds")?);
        let r = b.lors(&["download", "/vo1/lb/big.dat", "-"], true)?;
        cli_best = cli_best.min(r.wall.as_secs_f64());
    }
    let (c_rate, cli_rate) = (
        big as f64 / MIB as f64 / c_best,
        big as f64 / MIB as f64 / cli_best,
    );
    let ratio = c_rate / cli_rate;
    println!(
        "  lors_read {c_rate:.0} MiB/s, lors download {cli_rate:.0} MiB/s (process wall time): ratio {ratio:.2} ({}) [target {TARGET_SEQ_RATIO:.2}]",
        verdict(ratio >= TARGET_SEQ_RATIO)
    );
    Ok(())
}
