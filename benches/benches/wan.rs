//! `lors upload` / `lors download` throughput across emulated WAN links
//! (issue 20 item 4): a grid on hosts (`GridOptions::hosts`, every daemon
//! in its own network namespace, `lors` on a client host; release
//! binaries), three depots, full security (TLS to the depots, encrypted
//! data), the `lors` defaults (8 MiB blocks, one copy, 4 blocks or ranges
//! in flight).
//!
//! For each round trip (0, 5, 20, 50 ms: every host's link delayed by half
//! of it each way, by the relay of src/grid/netns.rs) it measures the wall
//! time of an upload and a download of one file (128 MiB) with the default
//! parallelism; then, for each round trip above 0, `--threads` 8, 16, 32
//! until the rate is back within 90 % of the 0 ms one (the parallelism
//! that recovers it). Every download is compared with the input; a
//! mismatch fails the benchmark.
//!
//! Run (as root, iproute2 installed) with `cargo bench -p ibp-benches
//! --bench wan`. Environment: `WAN_MIB` (128), `WAN_RTTS_MS` (0,5,20,50),
//! `WAN_THREADS` (8,16,32).
//!
//! The relay ends TCP on each host: a connection's handshake is not
//! delayed and its window is the relay's 8 MiB queue, not the kernel's
//! congestion control over the long path; the figures show what the
//! protocol's round trips cost, an upper bound for a real WAN.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ibp_benches::{random_file, same_file};
use ibp_testkit::grid::{Grid, GridOptions, HostsOptions};
use ibp_testkit::run_bounded;

const USER: &str = "alice";
const MIB: u64 = 1 << 20;
const LIMIT: Duration = Duration::from_secs(900);
const RECOVERED: f64 = 0.9;

fn env_list<T: std::str::FromStr>(key: &str, default: &str) -> Vec<T> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
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
    let extra: Vec<&str> = match &t {
        Some(t) => vec!["--threads", t.as_str()],
        None => Vec::new(),
    };
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

fn main() -> anyhow::Result<()> {
    let mib: u64 = env_list("WAN_MIB", "128").first().copied().unwrap_or(128);
    let rtts: Vec<u64> = env_list("WAN_RTTS_MS", "0,5,20,50");
    let sweep: Vec<usize> = env_list("WAN_THREADS", "8,16,32");
    let g = Grid::start(GridOptions {
        release: true,
        users: vec![USER.into()],
        hosts: Some(HostsOptions::default()),
        ..GridOptions::default()
    })?;
    let net = g.network().context("a grid on hosts")?;
    let mut keys = g.lors(USER);
    keys.args(["keys", "init"]);
    let o = run_bounded(keys, LIMIT)?;
    if !o.status.success() {
        bail!("lors keys init: {}", String::from_utf8_lossy(&o.stderr));
    }
    timed_lors(&g, &["mkdir", "/vo1/wan"])?;
    let src = g.user(USER).dir.join("wan.bin");
    random_file(&src, mib * MIB)?;

    println!(
        "wan: {mib} MiB, lors defaults (8 MiB blocks, 1 copy, 4 in flight), full security, 3 depots"
    );
    println!(
        "{:>8} {:>8} {:>12} {:>12}",
        "rtt_ms", "threads", "up_MiB/s", "down_MiB/s"
    );
    let mut base: Option<(f64, f64)> = None;
    for rtt in rtts {
        let one_way = Duration::from_micros(rtt * 500);
        for h in &net.hosts {
            net.set_delay(h.role, one_way)?;
        }
        let (up, down) = measure(&g, &src, mib, &format!("r{rtt}-default"), None)?;
        println!("{rtt:>8} {:>8} {up:>12.1} {down:>12.1}", "default");
        let (bu, bd) = *base.get_or_insert((up, down));
        if rtt == 0 {
            continue;
        }
        let (mut up_ok, mut down_ok) = (up >= RECOVERED * bu, down >= RECOVERED * bd);
        for &t in &sweep {
            if up_ok && down_ok {
                break;
            }
            let (u, d) = measure(&g, &src, mib, &format!("r{rtt}-t{t}"), Some(t))?;
            println!("{rtt:>8} {t:>8} {u:>12.1} {d:>12.1}");
            if !up_ok && u >= RECOVERED * bu {
                println!("         upload at {rtt} ms recovered with --threads {t}");
                up_ok = true;
            }
            if !down_ok && d >= RECOVERED * bd {
                println!("         download at {rtt} ms recovered with --threads {t}");
                down_ok = true;
            }
        }
        if !up_ok {
            println!("         upload at {rtt} ms not recovered with --threads up to {sweep:?}");
        }
        if !down_ok {
            println!("         download at {rtt} ms not recovered with --threads up to {sweep:?}");
        }
    }
    Ok(())
}
