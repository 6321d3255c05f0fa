//! Throughput of `lors upload` / `lors download` across emulated WAN
//! links (issue 20 item 4), for `ibp-grid wan` and the `wan` benchmark
//! (`cargo bench -p ibp-benches --bench wan`).
//!
//! A grid on hosts ([`GridOptions::hosts`], [`super::netns`]), three
//! depots, full security (TLS to the depots, encrypted data) and the
//! `lors` defaults (8 MiB blocks, one copy, 4 blocks or ranges in flight).
//! For each round trip (every host's link delayed by half of it each way)
//! it times an upload and a download of one random file (best of
//! [`WanOptions::reps`] runs) with the default
//! parallelism; then, for each round trip above the first, `--threads`
//! from [`WanOptions::threads`] until the rate is back within 90 % of the
//! first round trip's (the parallelism that recovers it). Every download
//! is compared with the input; a mismatch is an error.
//!
//! The relays end TCP on each host: a connection's handshake is not
//! delayed and its window is the relay's 8 MiB queue, not the kernel's
//! congestion control over the long path. The figures show what the
//! protocol's round trips cost: an upper bound for a real WAN.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{Grid, GridOptions, HostsOptions, Role};
use crate::run_bounded;

const USER: &str = "alice";
const MIB: u64 = 1 << 20;
const LIMIT: Duration = Duration::from_secs(900);
/// A rate within this share of the first round trip's is recovered.
pub const RECOVERED: f64 = 0.9;

/// What to measure.
#[derive(Debug, Clone)]
pub struct WanOptions {
    /// The file's size in MiB (default 128).
    pub mib: u64,
    /// Round trips in milliseconds (default 0, 5, 20, 50).
    pub rtts_ms: Vec<u64>,
    /// `--threads` values tried to recover the rate (default 8, 16, 32).
    pub threads: Vec<usize>,
    /// Runs of each measurement; the best rate counts (default 3: on a
    /// shared machine, the slow runs are other load).
    pub reps: usize,
    /// Release binaries (default) or debug ones.
    pub release: bool,
    /// Client link rates (Mbit/s) at which `--copies 3` is compared with
    /// `--copies 1` ([`copies`]); empty: not measured.
    pub copies_mbit: Vec<u64>,
}

impl Default for WanOptions {
    fn default() -> Self {
        WanOptions {
            mib: 128,
            rtts_ms: vec![0, 5, 20, 50],
            threads: vec![8, 16, 32],
            reps: 3,
            release: true,
            copies_mbit: Vec::new(),
        }
    }
}

/// One measurement: MiB/s up and down.
#[derive(Debug, Clone)]
pub struct WanRow {
    pub rtt_ms: u64,
    /// `None`: the default parallelism.
    pub threads: Option<usize>,
    pub up: f64,
    pub down: f64,
}

/// `--copies 3` against `--copies 1` at one client link rate.
#[derive(Debug, Clone)]
pub struct CopiesRow {
    /// The client link's rate, Mbit/s each way.
    pub mbit: u64,
    /// Upload MiB/s with `--copies 1` and `--copies 3` (best of the reps).
    pub one: f64,
    pub three: f64,
    /// Bytes the client put on its link per byte of the file, for one
    /// `--copies 3` upload (1.0 and a little: each byte once; about 3:
    /// the client sent every replica).
    pub sent_per_byte: f64,
}

/// What [`run`] measured.
#[derive(Debug, Clone, Default)]
pub struct WanReport {
    pub rows: Vec<WanRow>,
    pub copies: Vec<CopiesRow>,
}

/// Runs `lors ARGS` as the user; seconds it took.
fn timed_lors(g: &Grid, args: &[&str]) -> anyhow::Result<f64> {
    let mut c = g.lors(USER);
    c.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let t = Instant::now();
    let o = run_bounded(c, LIMIT)?;
    let secs = t.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "lors {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(secs)
}

fn random_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut f = BufWriter::new(File::create(path)?);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    let mut rng = rand::thread_rng();
    while left > 0 {
        rand::RngCore::fill_bytes(&mut rng, &mut buf[..]);
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The best upload and download rates (MiB/s) of `reps` runs.
fn best_of(
    g: &Grid,
    src: &Path,
    opts: &WanOptions,
    tag: &str,
    threads: Option<usize>,
) -> anyhow::Result<(f64, f64)> {
    let mut best = (0.0f64, 0.0f64);
    for i in 0..opts.reps.max(1) {
        let (u, d) = measure(g, src, opts.mib, &format!("{tag}-{i}"), threads)?;
        best = (best.0.max(u), best.1.max(d));
    }
    Ok(best)
}

/// Upload and download rates (MiB/s) with `threads` (None: the default).
fn measure(
    g: &Grid,
    src: &Path,
    mib: u64,
    tag: &str,
    threads: Option<usize>,
) -> anyhow::Result<(f64, f64)> {
    let dest = format!("/vo1/wan/{tag}");
    let out = g.user(USER).dir.join(format!("out-{tag}"));
    let t = threads.map(|t| t.to_string());
    let extra: Vec<&str> = t.iter().flat_map(|t| ["--threads", t.as_str()]).collect();
    let mut up = vec!["upload", "-q", src.to_str().context("path")?, &dest];
    up.extend(&extra);
    let up_s = timed_lors(g, &up)?;
    let out_s = out.to_str().context("path")?.to_owned();
    let mut down = vec!["download", "-q", &dest, &out_s];
    down.extend(&extra);
    let down_s = timed_lors(g, &down)?;
    if !same_file(src, &out)? {
        bail!("{tag}: the download differs from the input");
    }
    std::fs::remove_file(&out)?;
    timed_lors(g, &["rm", &dest])?;
    Ok((mib as f64 / up_s, mib as f64 / down_s))
}

/// Runs the benchmark, saying each line to `say` as it goes.
pub fn run(opts: &WanOptions, say: &mut dyn FnMut(&str)) -> anyhow::Result<WanReport> {
    let g = Grid::start(GridOptions {
        release: opts.release,
        users: vec![USER.into()],
        hosts: Some(HostsOptions::default()),
        ..GridOptions::default()
    })?;
    let net = g.network().context("a grid on hosts")?;
    timed_lors(&g, &["keys", "init"])?;
    timed_lors(&g, &["mkdir", "/vo1/wan"])?;
    let src = g.user(USER).dir.join("wan.bin");
    random_file(&src, opts.mib * MIB)?;
    say(&format!(
        "wan: {} MiB file, lors defaults (8 MiB blocks, 1 copy, 4 in flight), full security, 3 depots, {} build, best of {}",
        opts.mib,
        if opts.release { "release" } else { "debug" },
        opts.reps.max(1),
    ));
    say("(stat_ms: one `lors stat`, the fixed cost of a command's sequential round trips)");
    say(&format!(
        "{:>8} {:>8} {:>12} {:>12}",
        "rtt_ms", "threads", "up_MiB/s", "down_MiB/s"
    ));
    let mut rows = Vec::new();
    let mut base: Option<(f64, f64)> = None;
    for &rtt in &opts.rtts_ms {
        for h in &net.hosts {
            net.set_delay(h.role, Duration::from_micros(rtt * 500))?;
        }
        let mut stat = f64::MAX;
        for _ in 0..opts.reps.max(1) {
            stat = stat.min(timed_lors(&g, &["stat", "/vo1/wan"])?);
        }
        let (up, down) = best_of(&g, &src, opts, &format!("r{rtt}-default"), None)?;
        say(&format!(
            "{rtt:>8} {:>8} {up:>12.1} {down:>12.1}   stat_ms {:.0}",
            "default",
            stat * 1000.0
        ));
        rows.push(WanRow {
            rtt_ms: rtt,
            threads: None,
            up,
            down,
        });
        let Some((bu, bd)) = base else {
            base = Some((up, down));
            continue;
        };
        let (mut up_ok, mut down_ok) = (up >= RECOVERED * bu, down >= RECOVERED * bd);
        for &t in &opts.threads {
            if up_ok && down_ok {
                break;
            }
            let (u, d) = best_of(&g, &src, opts, &format!("r{rtt}-t{t}"), Some(t))?;
            say(&format!("{rtt:>8} {t:>8} {u:>12.1} {d:>12.1}"));
            rows.push(WanRow {
                rtt_ms: rtt,
                threads: Some(t),
                up: u,
                down: d,
            });
            if !up_ok && u >= RECOVERED * bu {
                say(&format!(
                    "  upload at {rtt} ms: recovered with --threads {t}"
                ));
                up_ok = true;
            }
            if !down_ok && d >= RECOVERED * bd {
                say(&format!(
                    "  download at {rtt} ms: recovered with --threads {t}"
                ));
                down_ok = true;
            }
        }
        for (ok, what) in [(up_ok, "upload"), (down_ok, "download")] {
            if !ok {
                say(&format!(
                    "  {what} at {rtt} ms: not recovered with --threads up to {:?}",
                    opts.threads
                ));
            }
        }
    }
    let copies = if opts.copies_mbit.is_empty() {
        Vec::new()
    } else {
        for h in &net.hosts {
            net.set_delay(h.role, Duration::ZERO)?;
        }
        copies(&g, &src, opts, say)?
    };
    Ok(WanReport { rows, copies })
}

/// Replication by depot COPY where it matters: the client's link limited
/// to each of [`WanOptions::copies_mbit`] (`tc tbf` on the client host's
/// veth, both ways; the depots' links are not limited), no delay, an
/// upload with `--copies 1` and one with `--copies 3` (alternated, best of
/// the reps), the bytes the client host put on its link during the last
/// `--copies 3` upload, and that file downloaded and compared.
fn copies(
    g: &Grid,
    src: &Path,
    opts: &WanOptions,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<CopiesRow>> {
    let net = g.network().context("a grid on hosts")?;
    let client = net.host(Role::Client)?;
    let size = opts.mib * MIB;
    say(&format!(
        "copies: `--copies 3` against `--copies 1`, {} MiB, the client's link limited (depots not), best of {}",
        opts.mib,
        opts.reps.max(1)
    ));
    say(&format!(
        "{:>10} {:>14} {:>14} {:>7} {:>22}",
        "link_Mbit", "copies1_MiB/s", "copies3_MiB/s", "ratio", "client_sent/file_bytes"
    ));
    let mut rows = Vec::new();
    let result = (|| {
        for &mbit in &opts.copies_mbit {
            net.set_rate(Role::Client, Some(mbit * 1_000_000))?;
            let (mut one, mut three, mut sent) = (0.0f64, 0.0f64, 0.0f64);
            for i in 0..opts.reps.max(1) {
                for n in [1, 3] {
                    let dest = format!("/vo1/wan/copies-{mbit}-{n}-{i}");
                    let n_s = n.to_string();
                    let before = client.link_bytes_out()?;
                    let secs = timed_lors(
                        g,
                        &[
                            "upload",
                            "-q",
                            "--copies",
                            &n_s,
                            src.to_str().context("path")?,
                            &dest,
                        ],
                    )?;
                    let out = client.link_bytes_out()?.saturating_sub(before);
                    let rate = opts.mib as f64 / secs;
                    if n == 1 {
                        one = one.max(rate);
                        timed_lors(g, &["rm", &dest])?;
                        continue;
                    }
                    three = three.max(rate);
                    sent = out as f64 / size as f64;
                    if i + 1 < opts.reps.max(1) {
                        timed_lors(g, &["rm", &dest])?;
                        continue;
                    }
                    let back = g.user(USER).dir.join(format!("copies-{mbit}.out"));
                    let back_s = back.to_str().context("path")?.to_owned();
                    net.set_rate(Role::Client, None)?;
                    timed_lors(g, &["download", "-q", &dest, &back_s])?;
                    if !same_file(src, &back)? {
                        bail!("copies at {mbit} Mbit/s: the download differs from the input");
                    }
                    std::fs::remove_file(&back)?;
                    timed_lors(g, &["rm", &dest])?;
                    net.set_rate(Role::Client, Some(mbit * 1_000_000))?;
                }
            }
            say(&format!(
                "{mbit:>10} {one:>14.1} {three:>14.1} {:>7.2} {sent:>22.2}",
                three / one
            ));
            rows.push(CopiesRow {
                mbit,
                one,
                three,
                sent_per_byte: sent,
            });
        }
        anyhow::Ok(())
    })();
    net.set_rate(Role::Client, None)?;
    result.map(|_| rows)
}
