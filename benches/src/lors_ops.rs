//! The `lors` client's benchmark on a real-process grid (`ibp_testkit::grid`,
//! release binaries): online CA with real logins, L-Bone, metadata manager
//! and three depots on loopback, all on this machine.
//!
//! - **Baselines** measured in the same run: one loopback TCP connection,
//!   AES-128-CTR, BLAKE3 and Reed-Solomon 2+1 encoding on one core (the
//!   `lors` functions themselves).
//! - **Big files**: `lors upload` / `lors download` of a 1 GiB file with
//!   full security (TLS 1.3 + AUTH to the depots, client-side AES-128-CTR,
//!   BLAKE3 checksums), `--ec 2+1` and `--copies 2`; downloads to a file in
//!   a temporary directory and to standard output on `/dev/null`. Wall time
//!   of the `lors` process (start-up, login material, metadata manager and
//!   L-Bone included) and the rate `lors` reports itself; peak resident set
//!   (`VmHWM` sampled every 10 ms) and CPU of the `lors` process, CPU of the
//!   depots.
//! - **Small files**: 4 KiB files uploaded through the library
//!   (`lors::files::upload` to a metadata-manager path, full security,
//!   encrypted, one copy) with 1, 8 and 32 uploads in flight from one
//!   process sharing one `lors::files::Grid`; and a per-step breakdown of
//!   one upload (the steps of `files::upload` done one by one, timed).
//! - **Legacy**: `--security legacy --copies 1 --no-encrypt` 100 MiB up and
//!   down with `--depot` legacy ports and `--xnd`, no credentials, against
//!   the LoRS 0.82 anchors and loopback TCP.
//! - **Sweep**: block size 2, 4, 8, 16 MiB x threads 2, 4, 8 for an EC 2+1
//!   full-security upload and download (256 MiB file).
//!
//! Every input is generated once per run (random bytes); each
//! configuration's download is compared with its input at least once, and
//! a mismatch fails the benchmark. Targets are printed next to the figures,
//! never fatal.
//!
//! - **Copies**: `--copies 3` against `--copies 1` uploads of a
//!   `LORS_OPS_COPIES_MIB` (256) file at the full and legacy levels,
//!   alternated, medians (the depots copy the replicas: target >= 0.8x;
//!   that the client sends each byte once is asserted by
//!   tests/copy_replicas.rs), with the machine's CPU during them and, at
//!   the full level, the ceiling that CPU puts on the ratio here.
//! - **Peers** ([`crate::peers`]), measured in the same run, never
//!   quoted: Tahoe-LAFS 2-of-3 on a grid of its own on loopback when
//!   `tahoe` is on `PATH` (or `$IBP_BENCH_TAHOE`), the same big file up
//!   and down through its web API and 4 KiB files one after another;
//!   LoRS 0.82 is "not measured" (it needs a legacy L-Bone). An absent
//!   peer gets no figure.
//!
//! Run with `cargo run --release -p ibp-benches --bin ibp-bench -- lors`
//! (options for each of the settings below, and `--out DIR` for the
//! report), or `cargo bench -p ibp-benches --bench lors_ops` (set
//! `CARGO_TARGET_DIR` as for the other benches) with environment
//! variables: `LORS_OPS_BIG_MIB` (1024), `LORS_OPS_SWEEP_MIB` (256),
//! `LORS_OPS_LEGACY_MIB` (100), `LORS_OPS_REPS` (3),
//! `LORS_OPS_SMALL_SCALE` (1.0, scales the small-file counts),
//! `LORS_OPS_PEER_MIB` (the big size), `LORS_OPS_COPIES_MIB` (256) and
//! `LORS_OPS_SECTIONS` (comma list of baseline, legacy, small, big,
//! sweep, copies, peers).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::peers::{self, Tahoe};
use crate::{
    cpu_count, loopback_tcp, random_file, run_measured, same_file, ChildRun, CpuSnapshot, Samples,
    SystemCpu,
};
use anyhow::{anyhow, bail, Context};
use exnode::Security;
use ibp_testkit::grid::{Grid, GridOptions};
use lors::credentials::TrustSource;
use lors::crypto::{DataKey, WrapContext};
use lors::files::{self, Dest, Placement, Source, UploadSettings};
use lors::transfer::{self, Pool, Redundancy, Sink, UploadOptions};
use lors::MetadataClient;

const USER: &str = "alice";
const MIB: u64 = 1 << 20;
const CLI_TIMEOUT: Duration = Duration::from_secs(600);
/// The defaults of `lors upload`/`download` (lors/src/cli_transfer.rs).
const DEFAULT_BLOCK_MIB: u64 = 8;
const DEFAULT_THREADS: usize = 4;
const SMALL_SIZE: usize = 4096;
/// (uploads in flight, files) of the small-file runs.
const SMALL_RUNS: [(usize, usize); 3] = [(1, 300), (8, 800), (32, 1500)];
/// Bound on one small-file run.
const SMALL_CAP: Duration = Duration::from_secs(20);
/// Files of the per-step breakdown.
const BREAKDOWN_N: usize = 100;

/// Issue 16's targets for EC 2+1 at full security, 1 GiB: upload, and
/// download to a file.
const TARGET_UP: f64 = 650.0;
const TARGET_DOWN_FILE: f64 = 650.0;
const TARGET_SMALL: f64 = 1000.0;
const TARGET_RSS_MIB: f64 = 300.0;
/// Run budget: past half of it before the sweep, the sweep runs each point once.
const BUDGET: Duration = Duration::from_secs(600);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mibs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

fn mib_of(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = Samples::default();
    for x in v {
        s.push(Duration::from_secs_f64(*x));
    }
    s.median()
}

fn verdict(value: f64, target: f64, higher_is_better: bool) -> &'static str {
    let ok = if higher_is_better {
        value >= target
    } else {
        value < target
    };
    if ok {
        "meets target"
    } else {
        "BELOW TARGET"
    }
}

/// One `lors` process's measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Meas {
    /// Wall time of the process, seconds.
    wall: f64,
    /// The time `lors` reports (`seconds` of `--json`), when it does.
    inner: Option<f64>,
    /// Peak resident set, bytes.
    rss: u64,
    /// CPU of the `lors` process, seconds.
    cpu: f64,
    /// CPU of the depot processes during the run, seconds.
    depots_cpu: f64,
}

/// Medians and maxima of several [`Meas`].
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    wall: f64,
    inner: Option<f64>,
    rss_max: u64,
    cpu: f64,
    depots_cpu: f64,
}

fn summarize(v: &[Meas]) -> Summary {
    let inner: Vec<f64> = v.iter().filter_map(|m| m.inner).collect();
    Summary {
        wall: median(&v.iter().map(|m| m.wall).collect::<Vec<_>>()),
        inner: (!inner.is_empty()).then(|| median(&inner)),
        rss_max: v.iter().map(|m| m.rss).max().unwrap_or(0),
        cpu: median(&v.iter().map(|m| m.cpu).collect::<Vec<_>>()),
        depots_cpu: median(&v.iter().map(|m| m.depots_cpu).collect::<Vec<_>>()),
    }
}

struct Bench {
    grid: Grid,
    /// Inputs and downloads.
    work: tempfile::TempDir,
    /// The environment of the credential-less legacy runs.
    legacy_home: PathBuf,
    depot_pids: Vec<u32>,
    report: String,
}

impl Bench {
    fn say(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.report.push_str(line.as_ref());
        self.report.push('\n');
    }

    fn depots_cpu(&self) -> f64 {
        self.depot_pids
            .iter()
            .map(|p| CpuSnapshot::of(&p.to_string()).on_cpu.as_secs_f64())
            .sum()
    }

    /// `lors ARGS` as the grid user.
    fn lors(&self, args: &[&str]) -> Command {
        let mut c = self.grid.lors(USER);
        c.args(args);
        c
    }

    /// `lors ARGS` with no credentials, trust, services or key: only
    /// `PATH`, `HOME` and an empty configuration.
    fn lors_bare(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.grid.bins.lors);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.legacy_home)
            .env("XDG_CONFIG_HOME", self.legacy_home.join(".config"))
            .env("LORS_CONFIG", self.legacy_home.join("lors.toml"))
            .env("X509_USER_PROXY", self.legacy_home.join("no-proxy.pem"))
            .env("RUST_LOG", "warn")
            .current_dir(&self.legacy_home)
            .args(args);
        c
    }

    fn run(
        &self,
        cmd: Command,
        discard_stdout: bool,
        what: &str,
    ) -> anyhow::Result<(ChildRun, f64)> {
        let d0 = self.depots_cpu();
        let r = run_measured(cmd, discard_stdout, CLI_TIMEOUT).with_context(|| what.to_owned())?;
        let d1 = self.depots_cpu();
        if !r.success() {
            bail!(
                "{what} failed (exit {:?}, {:.1} s):\nstdout: {}\nstderr: {}",
                r.code,
                r.wall.as_secs_f64(),
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            );
        }
        Ok((r, d1 - d0))
    }

    fn meas(r: &ChildRun, depots_cpu: f64, json: bool) -> anyhow::Result<Meas> {
        let inner = if json {
            let v: serde_json::Value = serde_json::from_slice(&r.stdout).with_context(|| {
                format!("lors --json output: {}", String::from_utf8_lossy(&r.stdout))
            })?;
            v.get("seconds").and_then(|s| s.as_f64())
        } else {
            None
        };
        Ok(Meas {
            wall: r.wall.as_secs_f64(),
            inner,
            rss: r.max_rss,
            cpu: r.cpu().as_secs_f64(),
            depots_cpu,
        })
    }

    /// `lors upload SRC DEST --json EXTRA` (full security by default).
    fn upload(&self, src: &Path, dest: &str, extra: &[&str]) -> anyhow::Result<Meas> {
        let s = src.display().to_string();
        let mut args = vec!["upload", s.as_str(), dest, "--json", "--quiet"];
        args.extend_from_slice(extra);
        let (r, d) = self.run(self.lors(&args), false, &format!("lors {}", args.join(" ")))?;
        Self::meas(&r, d, true)
    }

    /// `lors download SRC DEST EXTRA`; DEST `-` is standard output on
    /// `/dev/null`.
    fn download(&self, src: &str, dest: &str, extra: &[&str]) -> anyhow::Result<Meas> {
        let to_null = dest == "-";
        let mut args = vec!["download", src, dest, "--quiet"];
        if !to_null {
            args.push("--json");
        }
        args.extend_from_slice(extra);
        let (r, d) = self.run(
            self.lors(&args),
            to_null,
            &format!("lors {}", args.join(" ")),
        )?;
        Self::meas(&r, d, !to_null)
    }

    fn rm(&self, path: &str) -> anyhow::Result<()> {
        self.run(self.lors(&["rm", path]), false, &format!("lors rm {path}"))?;
        Ok(())
    }

    /// Downloads `src` to a file, compares it with `input`, removes it.
    fn download_verified(&self, src: &str, input: &Path, extra: &[&str]) -> anyhow::Result<Meas> {
        let out = self.work.path().join("download.bin");
        let m = self.download(src, &out.display().to_string(), extra)?;
        check_same(input, &out, src)?;
        std::fs::remove_file(&out)?;
        Ok(m)
    }
}

fn check_same(input: &Path, out: &Path, what: &str) -> anyhow::Result<()> {
    if !same_file(input, out)? {
        bail!(
            "DATA MISMATCH: {what} downloaded to {} differs from the input {}",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Baselines

struct Baselines {
    tcp: f64,
    aes: f64,
    blake3: f64,
    rs: f64,
}

fn baselines(b: &mut Bench) -> anyhow::Result<Baselines> {
    let total = 1usize << 30;
    let mut s = Vec::new();
    for _ in 0..3 {
        s.push(loopback_tcp(total, 1 << 20)?.as_secs_f64());
    }
    let tcp = mibs(total as u64, median(&s));
    // One core each, 8 MiB blocks, 256 MiB.
    let block = 8usize << 20;
    let rounds = 32;
    let mut buf = crate::payload(block);
    let key = DataKey::generate().map_err(|e| anyhow!("{e}"))?;
    let file = uuid::Uuid::new_v4();
    let t = Instant::now();
    for i in 0..rounds {
        lors::crypto::apply_keystream(&key, &file, i as u64, &mut buf)
            .map_err(|e| anyhow!("{e}"))?;
    }
    let aes = mibs((block * rounds) as u64, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(lors::crypto::checksum(std::hint::black_box(&buf)));
    }
    let blake3 = mibs((block * rounds) as u64, t.elapsed().as_secs_f64());
    // As an upload codes a block: in place, in a reused buffer.
    let mut coded = Vec::with_capacity(transfer::codec::coded_capacity(block as u64, 2, 1));
    let t = Instant::now();
    for _ in 0..rounds {
        coded.clear();
        coded.extend_from_slice(&buf);
        std::hint::black_box(
            transfer::codec::encode_in_place(&mut coded, 2, 1).map_err(|e| anyhow!("{e}"))?,
        );
    }
    let rs = mibs((block * rounds) as u64, t.elapsed().as_secs_f64());
    b.say("== baselines (same run) ==");
    b.say(format!(
        "loopback TCP, 1 connection, 1 MiB writes: {tcp:.0} MiB/s (median of 3 x 1 GiB)"
    ));
    b.say(format!(
        "one core: AES-128-CTR {aes:.0} MiB/s, BLAKE3 {blake3:.0} MiB/s, Reed-Solomon 2+1 encode in place {rs:.0} MiB/s (of input, the copy into the reused buffer included), 8 MiB blocks"
    ));
    let pipeline = 1.0 / (1.0 / aes + 1.5 / blake3 + 1.0 / rs);
    b.say(format!(
        "=> client-side work of an EC 2+1 upload on one core (AES + RS + BLAKE3 of 1.5x): {pipeline:.0} MiB/s; {} cores on this machine shared by lors, 3 depots and the services",
        cpu_count()
    ));
    Ok(Baselines {
        tcp,
        aes,
        blake3,
        rs,
    })
}

// ---------------------------------------------------------------------------
// Big files

struct BigResult {
    label: &'static str,
    up: Summary,
    down_null: Summary,
    down_file: Summary,
    /// Medians of a plain write of the same size into the directory the
    /// download writes to, seconds: through the page cache, and direct.
    plain: f64,
    plain_direct: f64,
}

/// Writes `size` bytes into a new file in `dir` as a download writes one,
/// and removes it: `set_len`, then 8 MiB `pwrite`s in order, through the
/// page cache or (`direct`) with `O_DIRECT` from an aligned buffer (what
/// `lors download` does with a large file's aligned ranges). Returns the
/// seconds taken (the close included).
fn plain_write(dir: &Path, size: u64, direct: bool) -> anyhow::Result<f64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const CHUNK: usize = 8 << 20;
    const ALIGN: usize = 4096;
    let path = dir.join(if direct {
        "plain-direct.bin"
    } else {
        "plain.bin"
    });
    let mut buf = crate::payload(CHUNK + ALIGN);
    let start = buf.as_ptr().align_offset(ALIGN);
    let data = &mut buf[start..start + CHUNK];
    let t = Instant::now();
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o
        .open(&path)
        .with_context(|| format!("plain write: {}", path.display()))?;
    f.set_len(size)?;
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(CHUNK as u64) as usize;
        f.write_all_at(&data[..n], at)
            .with_context(|| format!("plain write: {}", path.display()))?;
        at += n as u64;
    }
    drop(f);
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(secs)
}

fn big(b: &mut Bench, input: &Path, size: u64, reps: usize) -> anyhow::Result<Vec<BigResult>> {
    let configs: [(&'static str, &'static str, [&str; 2]); 2] = [
        ("EC 2+1", "ec", ["--ec", "2+1"]),
        ("copies 2", "cp", ["--copies", "2"]),
    ];
    let mut out = Vec::new();
    for (label, tag, flags) in configs {
        let (mut ups, mut nulls, mut filesd) = (Vec::new(), Vec::new(), Vec::new());
        let (mut plains, mut directs) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let path = format!("/vo1/bench/big-{tag}-{rep}");
            let up = b.upload(input, &path, &flags)?;
            let dn = b.download(&path, "-", &[])?;
            // The limit of the download to a file, just before it, in the
            // directory it writes to.
            let plain = plain_write(b.work.path(), size, false)?;
            let direct = plain_write(b.work.path(), size, true)?;
            let df = b.download_verified(&path, input, &[])?;
            b.rm(&path)?;
            b.say(format!(
                "  {label} run {rep}: up {:.0} MiB/s (lors says {:.0}), down /dev/null {:.0}, down file {:.0} (lors says {:.0}; a plain write of {} MiB into that directory just before: {:.0} MiB/s through the page cache, {:.0} direct); peak RSS up {:.0} MiB, down {:.0}/{:.0} MiB; verified",
                mibs(size, up.wall),
                mibs(size, up.inner.unwrap_or(f64::NAN)),
                mibs(size, dn.wall),
                mibs(size, df.wall),
                mibs(size, df.inner.unwrap_or(f64::NAN)),
                size / MIB,
                mibs(size, plain),
                mibs(size, direct),
                mib_of(up.rss),
                mib_of(dn.rss),
                mib_of(df.rss),
            ));
            ups.push(up);
            nulls.push(dn);
            filesd.push(df);
            plains.push(plain);
            directs.push(direct);
        }
        out.push(BigResult {
            label,
            up: summarize(&ups),
            down_null: summarize(&nulls),
            down_file: summarize(&filesd),
            plain: median(&plains),
            plain_direct: median(&directs),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Legacy

struct LegacyResult {
    label: String,
    up: Summary,
    down_null: Summary,
    down_file: Summary,
}

fn legacy(
    b: &mut Bench,
    input: &Path,
    size: u64,
    reps: usize,
) -> anyhow::Result<Vec<LegacyResult>> {
    let all: Vec<String> = b
        .grid
        .depots
        .iter()
        .map(|d| d.legacy_addr.clone())
        .collect();
    let mut out = Vec::new();
    for depots in [&all[..1], &all[..]] {
        let label = format!("{} depot(s)", depots.len());
        let mut flags: Vec<String> = ["--security", "legacy", "--copies", "1", "--no-encrypt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for d in depots {
            flags.push("--depot".into());
            flags.push(d.clone());
        }
        let (mut ups, mut nulls, mut filesd) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let xnd = b
                .legacy_home
                .join(format!("legacy-{}-{rep}.xnd", depots.len()))
                .display()
                .to_string();
            let s = input.display().to_string();
            let mut args: Vec<&str> = vec![
                "upload",
                s.as_str(),
                "--xnd",
                xnd.as_str(),
                "--json",
                "--quiet",
            ];
            args.extend(flags.iter().map(String::as_str));
            let (r, d) = b.run(
                b.lors_bare(&args),
                false,
                &format!("lors {}", args.join(" ")),
            )?;
            let up = Bench::meas(&r, d, true)?;
            let args = ["download", "--xnd", xnd.as_str(), "-", "--quiet"];
            let (r, d) = b.run(
                b.lors_bare(&args),
                true,
                &format!("lors {}", args.join(" ")),
            )?;
            let dn = Bench::meas(&r, d, false)?;
            let dest = b.work.path().join("legacy.bin");
            let ds = dest.display().to_string();
            let args = [
                "download",
                "--xnd",
                xnd.as_str(),
                ds.as_str(),
                "--json",
                "--quiet",
            ];
            let (r, d) = b.run(
                b.lors_bare(&args),
                false,
                &format!("lors {}", args.join(" ")),
            )?;
            let df = Bench::meas(&r, d, true)?;
            check_same(input, &dest, &xnd)?;
            std::fs::remove_file(&dest)?;
            // Release the allocations (trim every mapping off each depot).
            for dep in depots {
                let args = ["trim", "--xnd", xnd.as_str(), "--depot", dep.as_str()];
                let _ = run_measured(b.lors_bare(&args), false, CLI_TIMEOUT);
            }
            b.say(format!(
                "  {label} run {rep}: up {:.0} MiB/s, down /dev/null {:.0}, down file {:.0}; verified",
                mibs(size, up.wall),
                mibs(size, dn.wall),
                mibs(size, df.wall)
            ));
            ups.push(up);
            nulls.push(dn);
            filesd.push(df);
        }
        out.push(LegacyResult {
            label,
            up: summarize(&ups),
            down_null: summarize(&nulls),
            down_file: summarize(&filesd),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Small files

/// The library's session for the grid user: one kept-alive metadata client.
fn library_grid(grid: &Grid) -> anyhow::Result<files::Grid> {
    let trust = TrustSource::Dir(grid.trust_dir.clone()).load()?;
    let credential = ibp_auth::ProxyCredential::load(&grid.proxy(USER))
        .map_err(|e| anyhow!("load the proxy: {e}"))?;
    let mdm = MetadataClient::connect(&grid.mdm_url, &trust, &credential)?;
    let key_file = grid.user(USER).dir.join("lors.key");
    let key = files::load_key_if_present(&key_file)?
        .ok_or_else(|| anyhow!("no key pair at {}", key_file.display()))?;
    Ok(files::Grid {
        trust: Some(trust),
        credential: Some(credential),
        lbone: Some(grid.lbone_url.clone()),
        mdm: Some(mdm),
        key: Some(key),
        escrow: None,
        timeout: Some(Duration::from_secs(30)),
        ..files::Grid::default()
    })
}

fn small_settings() -> UploadSettings {
    UploadSettings {
        block_size: DEFAULT_BLOCK_MIB * MIB,
        redundancy: Redundancy::Copies(1),
        threads: DEFAULT_THREADS,
        security: Security::Full,
        encrypt: true,
        placement: Placement {
            depots: Vec::new(),
            near: None,
            duration: 24 * 3600,
            reliability: lors::depots::Reliability::Hard,
        },
        filename: None,
    }
}

fn small_data(i: usize) -> Vec<u8> {
    let mut d = crate::payload(SMALL_SIZE);
    d[..8].copy_from_slice(&(i as u64).to_le_bytes());
    d
}

/// CPU per process of the grid (and of this process) between two points.
struct GridCpu {
    names: Vec<String>,
    pids: Vec<String>,
}

impl GridCpu {
    fn new(grid: &Grid) -> GridCpu {
        // Grid::pids: CA, L-Bone, metadata manager, then the depots.
        let mut names: Vec<String> = ["online CA", "L-Bone", "metadata manager"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.extend((0..grid.depots.len()).map(|i| format!("depot {i}")));
        let mut pids: Vec<String> = grid.pids().iter().map(u32::to_string).collect();
        names.push("bench process (lors library)".into());
        pids.push("self".into());
        GridCpu { names, pids }
    }

    fn snap(&self) -> Vec<f64> {
        self.pids
            .iter()
            .map(|p| CpuSnapshot::of(p).on_cpu.as_secs_f64())
            .collect()
    }

    /// "name X ms" per file, depots summed.
    fn per_file(&self, before: &[f64], after: &[f64], files: usize) -> String {
        let mut by: BTreeMap<usize, (String, f64)> = BTreeMap::new();
        for (i, (n, (a, b))) in self.names.iter().zip(after.iter().zip(before)).enumerate() {
            let (key, name) = if n.starts_with("depot") {
                (3, "depots".to_owned())
            } else {
                (i, n.clone())
            };
            let e = by.entry(key).or_insert((name, 0.0));
            e.1 += a - b;
        }
        let total: f64 = by.values().map(|(_, v)| v).sum();
        let mut s = by
            .values()
            .map(|(n, v)| format!("{n} {:.2}", v * 1e3 / files as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            s,
            "; total {:.2} ms CPU per file",
            total * 1e3 / files as f64
        );
        s
    }
}

/// The metadata manager's requests so far by route (`route status`), read
/// from its `/metrics` (plain HTTP on loopback); empty if it cannot say.
fn mdm_requests(grid: &Grid) -> BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut out = BTreeMap::new();
    let Ok(url) = grid.metrics_url(ibp_testkit::grid::Daemon::MetadataManager) else {
        return out;
    };
    let Some(addr) = url
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/metrics"))
    else {
        return out;
    };
    let mut text = String::new();
    let got = std::net::TcpStream::connect(addr).and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        c.read_to_string(&mut text)
    });
    if got.is_err() {
        return out;
    }
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("mdm_http_requests_total{") else {
            continue;
        };
        let Some((labels, n)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        if let (Some(route), Some(status), Ok(n)) =
            (label("route"), label("status"), n.trim().parse::<f64>())
        {
            *out.entry(format!("{route} {status}")).or_default() += n;
        }
    }
    out
}

/// Requests per file by route between two [`mdm_requests`] readings.
fn requests_per_file(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    files: usize,
) -> String {
    let mut parts = Vec::new();
    for (k, a) in after {
        let d = a - before.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            parts.push(format!("{k}: {:.2}", d / files.max(1) as f64));
        }
    }
    if parts.is_empty() {
        "not measured (no /metrics)".to_owned()
    } else {
        parts.join(", ")
    }
}

struct SmallResult {
    concurrency: usize,
    files: usize,
    secs: f64,
    p50: f64,
    p99: f64,
    cpu: String,
}

/// `n` uploads (files `{dir}/f{base}`, ...), `c` in flight, through
/// `files::upload` on one shared grid; stops early after [`SMALL_CAP`].
async fn small_run(
    g: Arc<files::Grid>,
    dir: &str,
    c: usize,
    n: usize,
    base: usize,
) -> anyhow::Result<(usize, f64, Samples)> {
    let end = base + n;
    let next = Arc::new(AtomicUsize::new(base));
    let lat = Arc::new(Mutex::new(Samples::default()));
    let start = Instant::now();
    let deadline = start + SMALL_CAP;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (g, next, lat) = (g.clone(), next.clone(), lat.clone());
        let dir = dir.to_owned();
        set.spawn(async move {
            let s = small_settings();
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end || Instant::now() > deadline {
                    return Ok::<usize, anyhow::Error>(done);
                }
                let data = small_data(i);
                let t = Instant::now();
                files::upload(
                    &g,
                    &data[..],
                    Some(SMALL_SIZE as u64),
                    &Dest::Path(format!("{dir}/f{i}")),
                    &s,
                    None,
                )
                .await
                .with_context(|| format!("files::upload {dir}/f{i}"))?;
                lat.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t.elapsed());
                done += 1;
            }
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let lat = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((total, secs, lat))
}

/// Downloads `{dir}/f{i}` through the library and compares it.
async fn small_verify(g: &files::Grid, work: &Path, dir: &str, i: usize) -> anyhow::Result<()> {
    let out = work.join("small.bin");
    let f = std::fs::File::create(&out)?;
    let src = Source::Path {
        path: format!("{dir}/f{i}"),
        version: None,
    };
    files::download(g, &src, Sink::File(f), DEFAULT_THREADS, None).await?;
    let got = std::fs::read(&out)?;
    std::fs::remove_file(&out)?;
    if got != small_data(i) {
        bail!("DATA MISMATCH: small file {dir}/f{i} differs from what was uploaded");
    }
    Ok(())
}

/// The steps of `files::upload` (Dest::Path, full, encrypted, one copy)
/// done one by one, each timed; medians in milliseconds.
async fn small_breakdown(g: &files::Grid, n: usize) -> anyhow::Result<(Vec<(String, f64)>, usize)> {
    let mdm = g.mdm.as_ref().ok_or_else(|| anyhow!("no mdm"))?;
    let me = g.key.clone().ok_or_else(|| anyhow!("no key"))?;
    let trust = g.trust.as_ref().ok_or_else(|| anyhow!("no trust"))?;
    let cred = g
        .credential
        .as_ref()
        .ok_or_else(|| anyhow!("no credential"))?;
    let s = small_settings();
    let steps = [
        "metadata manager get (NotFound), kept-alive",
        "data key (OS random)",
        "L-Bone query for depots + grants (new TLS connection, 2 TLS configs built)",
        "depot TLS 1.3 handshake + AUTH (new connection)",
        "depot ALLOCATE + STORE 4 KiB (AES, BLAKE3) on that connection",
        "exNode to XML",
        "metadata manager whoami, kept-alive",
        "metadata manager escrow key lookup (recipients), kept-alive",
        "wrap the data key (X25519) for each recipient",
        "metadata manager put_version, kept-alive",
    ];
    let mut samples: Vec<Samples> = vec![Samples::default(); steps.len() + 1];
    let mut other_depot = 0usize;
    for i in 0..n {
        let path = format!("/vo1/bench-steps/f{i}");
        let data = small_data(i);
        let t_all = Instant::now();
        let mut t = Instant::now();
        let mut lap = |k: usize, samples: &mut Vec<Samples>| {
            samples[k].push(t.elapsed());
            t = Instant::now();
        };
        match mdm.get(&path, None).await {
            Err(lors::Error::NotFound(_)) => {}
            Ok(_) => bail!("{path} exists"),
            Err(e) => return Err(e.into()),
        }
        lap(0, &mut samples);
        let key = Arc::new(DataKey::generate().map_err(|e| anyhow!("{e}"))?);
        let key_id = format!("k-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let file = uuid::Uuid::new_v4();
        lap(1, &mut samples);
        let (targets, setup) =
            files::targets(g, Security::Full, &s.placement, SMALL_SIZE as u64).await?;
        lap(2, &mut samples);
        let pool = Pool::new(setup, Duration::from_secs(30));
        let first = targets
            .first()
            .ok_or_else(|| anyhow!("no depots offered"))?;
        let conn = pool
            .get(&first.depot, Security::Full)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        pool.put(&first.depot, Security::Full, conn);
        lap(3, &mut samples);
        let opts = UploadOptions {
            file,
            version: 1,
            filename: None,
            block_size: s.block_size,
            redundancy: s.redundancy,
            threads: s.threads,
            duration: s.placement.duration as i64,
            reliability: ibp_proto::Reliability::Hard,
            key: Some(key.clone()),
            key_id: key_id.clone(),
            done: None,
            on_block: None,
            cancel: Default::default(),
        };
        let x = transfer::upload(&data[..], &targets, pool.clone(), &opts, None)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if x.mappings.iter().any(|m| m.depot != first.depot) {
            other_depot += 1;
        }
        lap(4, &mut samples);
        let xml = exnode::to_xml(&x);
        lap(5, &mut samples);
        let whoami = mdm.whoami().await?;
        lap(6, &mut samples);
        let recipients = lors::keys::upload_recipients(mdm, &me, &whoami).await?;
        lap(7, &mut samples);
        let ctx = WrapContext {
            file,
            key_id: &key_id,
        };
        let wrapped = lors::keys::wrap_for(&key, &ctx, &recipients)?;
        lap(8, &mut samples);
        mdm.put_version(&path, 0, &xml, &wrapped).await?;
        lap(9, &mut samples);
        samples[steps.len()].push(t_all.elapsed());
    }
    let mut out: Vec<(String, f64)> = steps
        .iter()
        .enumerate()
        .map(|(k, name)| (name.to_string(), samples[k].median() * 1e3))
        .collect();
    out.push((
        "all steps (one upload, sequential)".into(),
        samples[steps.len()].median() * 1e3,
    ));
    // Parts of the L-Bone step, and what a kept-alive L-Bone client costs.
    let mut cfg = Samples::default();
    for _ in 0..50 {
        let t = Instant::now();
        std::hint::black_box(
            ibp_auth::tls::client_config(trust, Some(cred)).map_err(|e| anyhow!("{e}"))?,
        );
        cfg.push(t.elapsed());
    }
    out.push((
        "  part: build one rustls client config (trust + proxy chain)".into(),
        cfg.median() * 1e3,
    ));
    let base = ibp_https::client::BaseUrl::parse(g.lbone.as_deref().unwrap_or_default())
        .map_err(|e| anyhow!("{e}"))?;
    let tls = ibp_auth::tls::client_config(trust, Some(cred)).map_err(|e| anyhow!("{e}"))?;
    let kept = ibp_https::client::Client::new(base, tls, true).with_keep_alive(4);
    let body = serde_json::json!({"size": SMALL_SIZE, "duration": 86400, "reliability": "hard"});
    let mut q = Samples::default();
    for i in 0..51 {
        let t = Instant::now();
        let r = kept
            .post_json("/v1/query", &body)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if !r.is_success() {
            bail!("L-Bone query: HTTP {}", r.status);
        }
        if i > 0 {
            q.push(t.elapsed());
        }
    }
    out.push((
        "  for comparison: the same L-Bone query on a kept-alive connection".into(),
        q.median() * 1e3,
    ));
    Ok((out, other_depot))
}

/// Per-step medians of the breakdown: (step, milliseconds).
type Steps = Vec<(String, f64)>;

fn small(b: &mut Bench, scale: f64) -> anyhow::Result<(Vec<SmallResult>, Steps)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let g = Arc::new(rt.block_on(async { library_grid(&b.grid) })?);
    let cpu = GridCpu::new(&b.grid);
    let mdm = g.mdm.clone().ok_or_else(|| anyhow!("no mdm"))?;
    rt.block_on(async {
        mdm.mkdir("/vo1/bench-steps", true).await?;
        for (c, _) in SMALL_RUNS {
            mdm.mkdir(&format!("/vo1/bench-small-{c}"), true).await?;
        }
        Ok::<_, lors::Error>(())
    })?;
    b.say("== small files: 4 KiB through lors::files::upload (full, encrypted, 1 copy, one shared files::Grid) ==");
    // Warm-up: connections, first L-Bone query, page faults.
    rt.block_on(small_run(g.clone(), "/vo1/bench-small-1", 1, 5, 0))?;
    let mut results = Vec::new();
    for (c, n) in SMALL_RUNS {
        let n = ((n as f64 * scale) as usize).max(c);
        let dir = format!("/vo1/bench-small-{c}");
        // Files 0..5 of the 1-in-flight directory are the warm-up's.
        let base = if c == 1 { 5 } else { 0 };
        let before = cpu.snap();
        let asked = mdm_requests(&b.grid);
        let (done, secs, mut lat) = rt.block_on(small_run(g.clone(), &dir, c, n, base))?;
        let after = cpu.snap();
        let requests = requests_per_file(&asked, &mdm_requests(&b.grid), done);
        rt.block_on(async {
            small_verify(&g, b.work.path(), &dir, base).await?;
            small_verify(&g, b.work.path(), &dir, base + done - 1).await
        })?;
        let r = SmallResult {
            concurrency: c,
            files: done,
            secs,
            p50: lat.median() * 1e3,
            p99: lat.percentile(99.0) * 1e3,
            cpu: cpu.per_file(&before, &after, done.max(1)),
        };
        b.say(format!(
            "  {c:>2} in flight: {done} files in {secs:.2} s = {:.0} files/s (target {TARGET_SMALL:.0}: {}); latency p50 {:.1} ms, p99 {:.1} ms; verified",
            done as f64 / secs,
            verdict(done as f64 / secs, TARGET_SMALL, true),
            r.p50,
            r.p99
        ));
        b.say(format!("      CPU ms per file: {}", r.cpu));
        b.say(format!(
            "      metadata-manager requests per file (route status: count): {requests}"
        ));
        results.push(r);
    }
    b.say(format!(
        "  per-step breakdown of one upload ({BREAKDOWN_N} sequential uploads, medians):"
    ));
    let (steps, other) = rt.block_on(small_breakdown(&g, BREAKDOWN_N))?;
    for (name, ms) in &steps {
        b.say(format!("    {ms:>8.3} ms  {name}"));
    }
    if other > 0 {
        b.say(format!(
            "    note: {other} of {BREAKDOWN_N} uploads stored on a depot other than the pre-connected one (their STORE step includes a handshake)"
        ));
    }
    Ok((results, steps))
}

// ---------------------------------------------------------------------------
// Sweep

struct SweepPoint {
    block_mib: u64,
    threads: usize,
    up: Summary,
    down: Summary,
}

fn sweep(b: &mut Bench, input: &Path, size: u64, reps: usize) -> anyhow::Result<Vec<SweepPoint>> {
    let mut out = Vec::new();
    for block_mib in [2u64, 4, 8, 16] {
        for threads in [2usize, 4, 8] {
            let bs = format!("{block_mib}MiB");
            let th = threads.to_string();
            let keep = format!("/vo1/bench/sweep-{block_mib}-{threads}");
            let flags = [
                "--ec",
                "2+1",
                "--block-size",
                bs.as_str(),
                "--threads",
                th.as_str(),
            ];
            let mut ups = Vec::new();
            for rep in 0..reps {
                let path = if rep == 0 {
                    keep.clone()
                } else {
                    format!("{keep}-{rep}")
                };
                ups.push(b.upload(input, &path, &flags)?);
                if rep > 0 {
                    b.rm(&path)?;
                }
            }
            let mut downs = Vec::new();
            for _ in 0..reps {
                downs.push(b.download(&keep, "-", &["--threads", th.as_str()])?);
            }
            b.download_verified(&keep, input, &["--threads", th.as_str()])?;
            b.rm(&keep)?;
            let p = SweepPoint {
                block_mib,
                threads,
                up: summarize(&ups),
                down: summarize(&downs),
            };
            b.say(format!(
                "  block {block_mib:>2} MiB, threads {threads}: up {:>5.0} MiB/s (peak RSS {:>4.0} MiB), down /dev/null {:>5.0} MiB/s (peak RSS {:>4.0} MiB); verified",
                mibs(size, p.up.wall),
                mib_of(p.up.rss_max),
                mibs(size, p.down.wall),
                mib_of(p.down.rss_max),
            ));
            out.push(p);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------

/// What a run measures: sizes in MiB, repetitions, sections.
#[derive(Debug, Clone)]
pub struct Config {
    pub big_mib: u64,
    pub sweep_mib: u64,
    pub legacy_mib: u64,
    /// The file moved through the peers (default: `big_mib`).
    pub peer_mib: u64,
    /// The file of the copies section.
    pub copies_mib: u64,
    pub reps: usize,
    /// Scales the small-file counts.
    pub small_scale: f64,
    /// Of baseline, legacy, small, big, sweep, copies, peers.
    pub sections: Vec<String>,
    /// Where `report.md` is written (nowhere if `None`).
    pub out: Option<PathBuf>,
}

/// Every section.
pub const SECTIONS: &str = "baseline,legacy,small,big,sweep,copies,peers";

impl Config {
    /// From the `LORS_OPS_*` variables (the bench's way).
    pub fn from_env() -> Config {
        let big_mib = env_u64("LORS_OPS_BIG_MIB", 1024);
        Config {
            big_mib,
            sweep_mib: env_u64("LORS_OPS_SWEEP_MIB", 256),
            legacy_mib: env_u64("LORS_OPS_LEGACY_MIB", 100),
            peer_mib: env_u64("LORS_OPS_PEER_MIB", big_mib),
            copies_mib: env_u64("LORS_OPS_COPIES_MIB", 256),
            reps: env_u64("LORS_OPS_REPS", 3).max(1) as usize,
            small_scale: std::env::var("LORS_OPS_SMALL_SCALE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1.0),
            sections: std::env::var("LORS_OPS_SECTIONS")
                .unwrap_or_else(|_| SECTIONS.into())
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
            out: None,
        }
    }
}

/// The `lors_ops` bench target: runs [`run`] under `cargo bench` only.
pub fn bench_main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; without it we are being run as a test
    // (`cargo test --all-targets`): build and run nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "lors_ops: a benchmark; run it with `cargo bench -p ibp-benches --bench lors_ops`"
        );
        return Ok(());
    }
    run(&Config::from_env())
}

/// Runs the benchmark: a grid of release binaries, then each section.
pub fn run(cfg: &Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let big_size = cfg.big_mib * MIB;
    let sweep_size = cfg.sweep_mib * MIB;
    let legacy_size = cfg.legacy_mib * MIB;
    let peer_size = cfg.peer_mib * MIB;
    let reps = cfg.reps.max(1);
    let scale = cfg.small_scale;
    let on = |s: &str| cfg.sections.iter().any(|x| x == s);

    let t = Instant::now();
    let grid = Grid::start(GridOptions {
        release: true,
        depot_hard_size: 6 << 30,
        ..GridOptions::default()
    })?;
    let grid_start = (grid.startup, t.elapsed());
    // The budget counts from here: a rebuild of stale binaries is not measured.
    let measuring = Instant::now();
    let work = tempfile::Builder::new().prefix("lors-ops-").tempdir()?;
    let legacy_home = work.path().join("legacy-home");
    std::fs::create_dir_all(legacy_home.join(".config"))?;
    std::fs::write(legacy_home.join("lors.toml"), "")?;
    let depot_pids = grid.depots.iter().filter_map(|d| d.pid()).collect();
    let mut b = Bench {
        grid,
        work,
        legacy_home,
        depot_pids,
        report: String::new(),
    };
    b.say(format!(
        "lors_ops: grid of {} depots (release binaries in {}) started in {:.2} s ({:.2} s with finding/building the binaries); {} CPUs; work dir {}",
        b.grid.depots.len(),
        b.grid.bins.lors.parent().map(|p| p.display().to_string()).unwrap_or_default(),
        grid_start.0.as_secs_f64(),
        grid_start.1.as_secs_f64(),
        cpu_count(),
        b.work.path().display()
    ));
    b.say(format!(
        "load average at start: {} (other jobs on the machine skew every figure)",
        loadavg()
    ));
    // The user's key pair (registered at the metadata manager) and the
    // benchmark's directory.
    b.run(b.lors(&["keys", "init"]), false, "lors keys init")?;
    b.run(b.lors(&["mkdir", "-p", "/vo1/bench"]), false, "lors mkdir")?;

    let base = if on("baseline") {
        Some(baselines(&mut b)?)
    } else {
        None
    };

    if on("legacy") {
        let input = b.work.path().join("legacy-input.bin");
        random_file(&input, legacy_size)?;
        b.say(format!(
            "== legacy: {} MiB, --security legacy --copies 1 --no-encrypt, --depot legacy ports, --xnd, no credentials (median of {reps}) ==",
            legacy_size / MIB
        ));
        let legacy_res = legacy(&mut b, &input, legacy_size, reps)?;
        std::fs::remove_file(&input)?;
        b.say(format!("  LoRS 0.82: {}", peers::lors082()));
        for r in &legacy_res {
            let (up, dn, df) = (
                mibs(legacy_size, r.up.wall),
                mibs(legacy_size, r.down_null.wall),
                mibs(legacy_size, r.down_file.wall),
            );
            b.say(format!(
                "  {}: up {up:.0} MiB/s, down /dev/null {dn:.0} MiB/s, down file {df:.0} MiB/s; peak RSS up {:.0} MiB, down {:.0} MiB",
                r.label,
                mib_of(r.up.rss_max),
                mib_of(r.down_null.rss_max.max(r.down_file.rss_max)),
            ));
            if let Some(base) = &base {
                b.say(format!(
                    "      vs loopback TCP {:.0} MiB/s: up {:.2}x, down {:.2}x",
                    base.tcp,
                    up / base.tcp,
                    dn / base.tcp
                ));
            }
        }
    }

    let mut small_res = (Vec::new(), Vec::new());
    if on("small") {
        small_res = small(&mut b, scale)?;
    }

    let mut big_res = Vec::new();
    if on("big") {
        let input = b.work.path().join("big-input.bin");
        random_file(&input, big_size)?;
        b.say(format!(
            "== big files: {} MiB, full security (TLS + AUTH, AES-128-CTR, BLAKE3), defaults {DEFAULT_BLOCK_MIB} MiB blocks x {DEFAULT_THREADS} threads (median of {reps}) ==",
            big_size / MIB
        ));
        big_res = big(&mut b, &input, big_size, reps)?;
        std::fs::remove_file(&input)?;
    }

    let mut sweep_res = Vec::new();
    if on("sweep") {
        let input = b.work.path().join("sweep-input.bin");
        random_file(&input, sweep_size)?;
        // 12 points x (reps uploads + reps downloads + 1 verified).
        let sweep_reps = if measuring.elapsed() > BUDGET / 2 {
            1
        } else {
            reps
        };
        b.say(format!(
            "== sweep: {} MiB, EC 2+1 full security, block size x threads (median of {sweep_reps}) ==",
            sweep_size / MIB
        ));
        sweep_res = sweep(&mut b, &input, sweep_size, sweep_reps)?;
        std::fs::remove_file(&input)?;
    }

    if on("copies") {
        let size = cfg.copies_mib * MIB;
        let input = b.work.path().join("copies-input.bin");
        random_file(&input, size)?;
        b.say(format!(
            "== copies: {} MiB, --copies 3 against --copies 1, encrypted, alternated (median of {reps}) ==",
            size / MIB
        ));
        copies(&mut b, &input, size, reps)?;
        std::fs::remove_file(&input)?;
    }

    let mut peer_res = None;
    if on("peers") {
        b.say(format!(
            "== peers: {} MiB up and down, and 4 KiB files, in the same run ==",
            peer_size / MIB
        ));
        peer_res = tahoe(&mut b, peer_size, scale)?;
    }

    // ------------------------------------------------------------ summary
    b.say("");
    b.say("================================ summary ================================");
    if let Some(base) = &base {
        b.say(format!(
            "baselines: loopback TCP {:.0} MiB/s; one core: AES-128-CTR {:.0}, BLAKE3 {:.0}, RS 2+1 encode {:.0} MiB/s",
            base.tcp, base.aes, base.blake3, base.rs
        ));
    }
    if !big_res.is_empty() {
        b.say(format!(
            "{:<10} {:>10} {:>10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10}",
            format!("{} MiB", big_size / MIB),
            "up MiB/s",
            "(in lors)",
            "down /dev/n",
            "down file",
            "RSS up",
            "RSS down",
            "CPU up s",
            "CPU down s",
            "depots CPU"
        ));
        for r in &big_res {
            b.say(format!(
                "{:<10} {:>10.0} {:>10.0} {:>12.0} {:>10.0} {:>8.0}M {:>8.0}M {:>9.1} {:>10.1} {:>5.1}/{:<4.1}",
                r.label,
                mibs(big_size, r.up.wall),
                mibs(big_size, r.up.inner.unwrap_or(f64::NAN)),
                mibs(big_size, r.down_null.wall),
                mibs(big_size, r.down_file.wall),
                mib_of(r.up.rss_max),
                mib_of(r.down_null.rss_max.max(r.down_file.rss_max)),
                r.up.cpu,
                r.down_null.cpu,
                r.up.depots_cpu,
                r.down_null.depots_cpu,
            ));
        }
        for r in &big_res {
            let (up, dn) = (mibs(big_size, r.up.wall), mibs(big_size, r.down_null.wall));
            let df = mibs(big_size, r.down_file.wall);
            let rss =
                r.up.rss_max
                    .max(r.down_null.rss_max)
                    .max(r.down_file.rss_max);
            let plain = format!(
                "the same directory takes {:.0} MiB/s for a plain write ({:.0} direct)",
                mibs(big_size, r.plain),
                mibs(big_size, r.plain_direct)
            );
            if r.label == "EC 2+1" {
                b.say(format!(
                    "  {}: up {up:.0} MiB/s vs target {TARGET_UP:.0}: {} ({:.2}x); down to a file {df:.0} MiB/s vs target {TARGET_DOWN_FILE:.0}: {} ({:.2}x), {plain}; down to /dev/null {dn:.0} MiB/s; peak RSS {:.0} MiB vs {TARGET_RSS_MIB:.0}: {}",
                    r.label,
                    verdict(up, TARGET_UP, true),
                    up / TARGET_UP,
                    verdict(df, TARGET_DOWN_FILE, true),
                    df / TARGET_DOWN_FILE,
                    mib_of(rss),
                    verdict(mib_of(rss), TARGET_RSS_MIB, false),
                ));
            } else {
                b.say(format!(
                    "  {}: up {up:.0} MiB/s; down to a file {df:.0} MiB/s, {plain}; down to /dev/null {dn:.0} MiB/s; peak RSS {:.0} MiB vs {TARGET_RSS_MIB:.0}: {}",
                    r.label,
                    mib_of(rss),
                    verdict(mib_of(rss), TARGET_RSS_MIB, false),
                ));
            }
            if let Some(base) = &base {
                b.say(format!(
                    "    vs loopback TCP {:.0} MiB/s: up {:.2}x, down {:.2}x",
                    base.tcp,
                    up / base.tcp,
                    dn / base.tcp,
                ));
                if let (Some(t), "EC 2+1") = (&peer_res, r.label) {
                    b.say(format!(
                        "    vs Tahoe-LAFS {}-of-{} ({}, same run, {} MiB): up {:.1}x, down to a file {:.1}x",
                        t.k,
                        t.n,
                        t.version,
                        peer_size / MIB,
                        up / t.up,
                        mibs(big_size, r.down_file.wall) / t.down
                    ));
                }
            }
        }
        b.say("  (down file: written to a file in a temporary directory on the root file system and deleted after comparison; lors writes a file of 32 MiB or more with O_DIRECT, so its limit is the direct plain write; the plain writes run just before each download to a file, set_len and 8 MiB pwrites)");
    }
    if !sweep_res.is_empty() {
        let best_up = sweep_res
            .iter()
            .min_by(|a, b| a.up.wall.total_cmp(&b.up.wall))
            .map(|p| (p.block_mib, p.threads, mibs(sweep_size, p.up.wall)));
        let best_down = sweep_res
            .iter()
            .min_by(|a, b| a.down.wall.total_cmp(&b.down.wall))
            .map(|p| (p.block_mib, p.threads, mibs(sweep_size, p.down.wall)));
        let best_both = sweep_res
            .iter()
            .min_by(|a, b| (a.up.wall + a.down.wall).total_cmp(&(b.up.wall + b.down.wall)))
            .map(|p| (p.block_mib, p.threads));
        let default = sweep_res
            .iter()
            .find(|p| p.block_mib == DEFAULT_BLOCK_MIB && p.threads == DEFAULT_THREADS);
        b.say(format!(
            "sweep ({} MiB EC 2+1 full), up MiB/s / down MiB/s / peak RSS up MiB:",
            sweep_size / MIB
        ));
        let mut header = format!("{:>8}", "block");
        for t in [2, 4, 8] {
            let _ = write!(header, " {:>22}", format!("threads {t}"));
        }
        b.say(header);
        for bm in [2u64, 4, 8, 16] {
            let mut line = format!("{:>6}Mi", bm);
            for t in [2usize, 4, 8] {
                if let Some(p) = sweep_res
                    .iter()
                    .find(|p| p.block_mib == bm && p.threads == t)
                {
                    let _ = write!(
                        line,
                        " {:>22}",
                        format!(
                            "{:.0} / {:.0} / {:.0}",
                            mibs(sweep_size, p.up.wall),
                            mibs(sweep_size, p.down.wall),
                            mib_of(p.up.rss_max)
                        )
                    );
                }
            }
            b.say(line);
        }
        if let (Some(u), Some(d), Some(both)) = (best_up, best_down, best_both) {
            b.say(format!(
                "  best upload: {} MiB x {} threads ({:.0} MiB/s); best download: {} MiB x {} threads ({:.0} MiB/s); best up+down time: {} MiB x {} threads",
                u.0, u.1, u.2, d.0, d.1, d.2, both.0, both.1
            ));
        }
        if let Some(p) = default {
            b.say(format!(
                "  current default {DEFAULT_BLOCK_MIB} MiB x {DEFAULT_THREADS} threads: up {:.0} MiB/s, down {:.0} MiB/s",
                mibs(sweep_size, p.up.wall),
                mibs(sweep_size, p.down.wall)
            ));
        }
    }
    if !small_res.0.is_empty() {
        for r in &small_res.0 {
            b.say(format!(
                "small 4 KiB files, {:>2} in flight: {:.0} files/s ({} files, p50 {:.1} ms, p99 {:.1} ms) vs target {TARGET_SMALL:.0}: {}",
                r.concurrency,
                r.files as f64 / r.secs,
                r.files,
                r.p50,
                r.p99,
                verdict(r.files as f64 / r.secs, TARGET_SMALL, true)
            ));
        }
    }
    b.say(format!(
        "lors_ops: done in {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    ));
    if let Some(dir) = &cfg.out {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("report.md");
        std::fs::write(&file, format!("```\n{}```\n", b.report))?;
        println!("report: {}", file.display());
    }
    Ok(())
}

/// `--copies 3` against `--copies 1` at the full and legacy levels: the
/// client stores each block once and the depots copy it to the other
/// replicas, so on a network the client's uplink carries it once; here,
/// on one machine, the depots' extra work shows.
///
/// Beside each ratio, the machine's CPU (all processes, `/proc/stat`)
/// during the uploads, and at the full level the ceiling that CPU puts on
/// the ratio: two more replicas cannot cost less than twice
/// [`replica_floor`], measured now; `--copies 3` then takes at least (CPU
/// of `--copies 1` + that) / CPUs.
fn copies(b: &mut Bench, input: &Path, size: u64, reps: usize) -> anyhow::Result<()> {
    const TARGET_COPIES_RATIO: f64 = 0.8;
    let cpus = cpu_count() as f64;
    for security in ["full", "legacy"] {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut walls: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut busy: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for rep in 0..reps {
            for (k, n) in ["1", "3"].into_iter().enumerate() {
                let path = format!("/vo1/bench/copies{n}-{security}-{rep}");
                let before = SystemCpu::now();
                let m = b.upload(input, &path, &["--copies", n, "--security", security])?;
                let used = SystemCpu::now().since(&before);
                rates[k].push(mibs(size, m.wall));
                walls[k].push(m.wall);
                busy[k].push((used.user + used.system).as_secs_f64());
                if rep + 1 == reps && n == "3" {
                    b.download_verified(&path, input, &[])?;
                }
                b.rm(&path)?;
            }
        }
        let (one, three) = (median(&rates[0]), median(&rates[1]));
        b.say(format!(
            "  {security}: copies 1 {one:.0} MiB/s, copies 3 {three:.0} MiB/s: ratio {:.2} vs target {TARGET_COPIES_RATIO}: {}",
            three / one,
            verdict(three / one, TARGET_COPIES_RATIO, true)
        ));
        let (wall1, cpu1) = (median(&walls[0]), median(&busy[0]));
        let (wall3, cpu3) = (median(&walls[1]), median(&busy[1]));
        b.say(format!(
            "    machine CPU: copies 1 {cpu1:.2} s in {wall1:.2} s ({:.1} of {cpus:.0} CPUs busy), copies 3 {cpu3:.2} s in {wall3:.2} s ({:.1} busy)",
            cpu1 / wall1,
            cpu3 / wall3
        ));
        if security == "full" {
            let floor = replica_floor(&b.work.path().join("floor"), size as usize)?;
            let least = (cpu1 + 2.0 * floor) / cpus;
            let ceiling = (wall1 / least).min(1.0);
            b.say(format!(
                "    ceiling here: a replica costs at least {floor:.2} CPU-s (AES-128-GCM seal and open, a loopback TCP transfer, a page-cache write and read of {} MiB, measured now; copies 3 used {cpu3:.2} CPU-s, {} copies 1 + 2 x that), so copies 3 takes >= ({cpu1:.2} + 2 x {floor:.2}) / {cpus:.0} = {least:.2} s: ratio <= {ceiling:.2}{}",
                size / MIB,
                if cpu3 >= cpu1 + 2.0 * floor {
                    "at least"
                } else {
                    "LESS than (the floor is too high: an estimate, not a bound, in this run)"
                },
                if ceiling < TARGET_COPIES_RATIO {
                    " (the target is out of reach on this machine; it is measured where the client's link is the bound: `ibp-grid wan --copies-mbit`)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

/// The least CPU (seconds) one more full-security replica of `size` bytes
/// costs on this machine, as the sum of what no implementation can skip
/// without kernel TLS: sealing and opening it with AES-128-GCM in 16 KiB
/// records (ring, one core), moving it over loopback TCP (machine-wide
/// CPU of a plain two-thread transfer in 1 MiB writes) and writing it to
/// a new file and reading it back (the page cache, no fsync, as the
/// depots in batch mode). Each part is the median of 3.
fn replica_floor(dir: &Path, size: usize) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let mut data = crate::payload(size);
    let mut readback = vec![0u8; size];
    // Machine-wide CPU (the loopback transfer's softirq work included),
    // median of 3.
    let busy = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut v = Vec::new();
        for _ in 0..3 {
            let before = SystemCpu::now();
            f()?;
            let used = SystemCpu::now().since(&before);
            v.push((used.user + used.system).as_secs_f64());
        }
        Ok(median(&v))
    };
    let tcp = busy(&mut || crate::loopback_tcp(size, MIB as usize).map(|_| ()))?;
    // Only the write and the read back: the file is made and removed, and
    // the bytes compared, outside the measure.
    let mut disk = Vec::new();
    for _ in 0..3 {
        let b = crate::file_write_read(dir, &data, &mut readback)?;
        disk.push(b.cpu.as_secs_f64());
    }
    // On one thread: this process's CPU time.
    let mut aead = Vec::new();
    for _ in 0..3 {
        let before = CpuSnapshot::current();
        seal_and_open(&mut data)?;
        aead.push(CpuSnapshot::current().since(&before).on_cpu.as_secs_f64());
    }
    std::fs::remove_dir_all(dir)?;
    Ok(tcp + median(&disk) + median(&aead))
}

/// Seals `data` in place with AES-128-GCM in 16 KiB records (TLS's), then
/// opens it again: the cipher work of one TLS transfer's two ends.
fn seal_and_open(data: &mut [u8]) -> anyhow::Result<()> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    const RECORD: usize = 16 * 1024;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[9; 16]).map_err(|_| anyhow!("AES-128-GCM key"))?,
    );
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut tags = Vec::with_capacity(data.len() / RECORD + 1);
    for (i, record) in data.chunks_mut(RECORD).enumerate() {
        let tag = key
            .seal_in_place_separate_tag(nonce(i), Aad::empty(), record)
            .map_err(|_| anyhow!("AES-128-GCM seal"))?;
        tags.push(tag);
    }
    for ((i, record), tag) in data.chunks_mut(RECORD).enumerate().zip(tags) {
        key.open_in_place_separate_tag(nonce(i), Aad::empty(), tag, record, 0..)
            .map_err(|_| anyhow!("AES-128-GCM open"))?;
    }
    Ok(())
}

/// Tahoe-LAFS measured: MiB/s up and down of the peer file, and 4 KiB
/// files per second.
struct PeerResult {
    version: String,
    k: usize,
    n: usize,
    up: f64,
    down: f64,
}

/// Tahoe-LAFS 2-of-3 on a grid of its own, beside ours: the same kind of
/// work (a big file up and down, verified; 4 KiB files one after
/// another). `None` (and a line saying why) when it is not installed.
fn tahoe(b: &mut Bench, size: u64, scale: f64) -> anyhow::Result<Option<PeerResult>> {
    let Some(bin) = peers::tahoe_binary() else {
        b.say("  Tahoe-LAFS: not measured: `tahoe` is not on PATH (nor $IBP_BENCH_TAHOE)");
        return Ok(None);
    };
    let t0 = Instant::now();
    let grid = Tahoe::start(&bin, &b.work.path().join("tahoe"), 2, 3)?;
    b.say(format!(
        "  Tahoe-LAFS ({}): introducer, 3 storage nodes and a client on loopback, 2-of-3, web API; started in {:.1} s",
        grid.version,
        t0.elapsed().as_secs_f64()
    ));
    let input = b.work.path().join("peer-input.bin");
    random_file(&input, size)?;
    let (up_t, cap) = grid.put(&input)?;
    let out = b.work.path().join("peer-output.bin");
    let down_t = grid.get(&cap, &out)?;
    if !same_file(&input, &out)? {
        bail!("Tahoe-LAFS gave back other bytes than were uploaded");
    }
    std::fs::remove_file(&out)?;
    std::fs::remove_file(&input)?;
    let (up, down) = (
        mibs(size, up_t.as_secs_f64()),
        mibs(size, down_t.as_secs_f64()),
    );
    b.say(format!(
        "  Tahoe-LAFS: up {up:.1} MiB/s, down (to a file) {down:.1} MiB/s"
    ));
    let files = ((200.0 * scale) as usize).max(10);
    let mut caps = Vec::with_capacity(files);
    let t = Instant::now();
    for i in 0..files {
        caps.push(grid.put_bytes(&small_content(i))?);
    }
    let put_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (i, cap) in caps.iter().enumerate() {
        if grid.get_bytes(cap)? != small_content(i) {
            bail!("Tahoe-LAFS gave back other bytes for small file {i}");
        }
    }
    let get_s = t.elapsed().as_secs_f64();
    b.say(format!(
        "  Tahoe-LAFS: 4 KiB files one after another: {:.0} uploads/s, {:.0} downloads/s ({files} files)",
        files as f64 / put_s,
        files as f64 / get_s
    ));
    Ok(Some(PeerResult {
        version: grid.version.clone(),
        k: grid.k,
        n: grid.n,
        up,
        down,
    }))
}

/// A small file's distinct content.
fn small_content(i: usize) -> Vec<u8> {
    let mut v = vec![0u8; SMALL_SIZE];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8;
    }
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}
