//! What `ibp-bench paper` writes: `samples.csv` (every timed operation),
//! `report.md` (the limits, Table 1 beside the paper's values, and per
//! operation, mode and size the median and p90 with the throughput and its
//! ratio to the limit that bounds it) and the plots (`plot.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ibp_benches::{Samples, MB};

use crate::limits::Limits;
use crate::paper::{Mode, Op};
use crate::PaperArgs;

/// The paper's Table 1 (milliseconds).
pub const PAPER_AUTH_MS: f64 = 14.5;
pub const PAPER_ALLOC_LEGACY_MS: f64 = 0.62;
pub const PAPER_ALLOC_CRYPTO_MS: f64 = 1.10;

/// One timed operation.
#[derive(Debug, Clone)]
pub struct Sample {
    pub mode: Mode,
    pub op: Op,
    pub size_mb: u64,
    pub rep: usize,
    pub secs: f64,
}

pub struct Report {
    pub args: PaperArgs,
    pub limits: Limits,
    pub auth: Samples,
    pub samples: Vec<Sample>,
    pub alone: Vec<crate::paper::Alone>,
    pub seconds: f64,
}

/// Median and p90 of one (operation, mode, size).
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub p90: f64,
    pub n: usize,
}

/// Statistics by (operation, mode, size in MB).
pub fn stats(samples: &[Sample]) -> BTreeMap<(Op, Mode, u64), Stat> {
    let mut by: BTreeMap<(Op, Mode, u64), Samples> = BTreeMap::new();
    for s in samples {
        by.entry((s.op, s.mode, s.size_mb))
            .or_default()
            .push(std::time::Duration::from_secs_f64(s.secs));
    }
    by.into_iter()
        .map(|(k, mut v)| {
            let n = v.len();
            (
                k,
                Stat {
                    median: v.median(),
                    p90: v.percentile(90.0),
                    n,
                },
            )
        })
        .collect()
}

/// The limit that bounds an operation's throughput in a mode: (name, GB/s).
pub fn limit_for(l: &Limits, op: Op, mode: Mode) -> Option<(&'static str, f64)> {
    match (op, mode) {
        (Op::Allocate | Op::Allocate2, _) => None,
        // Data in clear on a plain TCP connection.
        (Op::Store | Op::Load, Mode::Legacy | Mode::Crypto) | (Op::Copy, Mode::Legacy) => {
            Some(("loopback TCP", l.tcp))
        }
        (Op::Store | Op::Load, Mode::Full) | (Op::Copy, Mode::Crypto | Mode::Full) => {
            Some(("TLS 1.3", l.tls))
        }
    }
}

/// Median of every Allocate (both depots, every size) of `mode`, and p90.
fn allocate_stat(samples: &[Sample], modes: &[Mode]) -> Stat {
    let mut s = Samples::default();
    for x in samples
        .iter()
        .filter(|x| matches!(x.op, Op::Allocate | Op::Allocate2) && modes.contains(&x.mode))
    {
        s.push(std::time::Duration::from_secs_f64(x.secs));
    }
    let n = s.len();
    Stat {
        median: if n == 0 { f64::NAN } else { s.median() },
        p90: if n == 0 { f64::NAN } else { s.percentile(90.0) },
        n,
    }
}

/// Writes the CSV, the report and the plots into `out`; returns the paths.
pub fn write(r: &Report, out: &Path, font: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let csv = out.join("samples.csv");
    let mut text = String::from("mode,operation,size_mb,rep,seconds\n");
    for s in &r.samples {
        let _ = writeln!(
            text,
            "{},{},{},{},{:.9}",
            s.mode.name(),
            s.op.name(),
            s.size_mb,
            s.rep,
            s.secs
        );
    }
    std::fs::write(&csv, text).with_context(|| format!("write {}", csv.display()))?;
    written.push(csv);

    let st = stats(&r.samples);
    let plots = crate::plot::write_all(&st, &r.args.sizes, out, font);
    let md = out.join("report.md");
    std::fs::write(&md, markdown(r, &st, &plots))
        .with_context(|| format!("write {}", md.display()))?;
    written.push(md);
    for p in plots.iter().flat_map(|p| p.files.iter()) {
        written.push(p.clone());
    }
    if let Some(e) = plots.iter().find_map(|p| p.error.as_ref()) {
        anyhow::bail!("plots: {e} (the CSV and report.md were written)");
    }
    Ok(written)
}

fn markdown(
    r: &Report,
    st: &BTreeMap<(Op, Mode, u64), Stat>,
    plots: &[crate::plot::Plotted],
) -> String {
    let mut m = String::new();
    let a = &r.args;
    let _ = writeln!(m, "# ibp-bench paper\n");
    let _ = writeln!(
        m,
        "Command: `ibp-bench paper --reps {} --sizes {} --auth-reps {} --limit-mb {}` ({} CPUs, {:.0} s). \
         Sizes in MB (10^6 bytes), throughputs in GB/s (10^9 B/s). Two depots on \
         loopback (`--sync batch`), started by the benchmark; the limits below were \
         measured in the same run.\n",
        a.reps,
        a.sizes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        a.auth_reps,
        a.limit_mb,
        ibp_benches::cpu_count(),
        r.seconds
    );
    if cfg!(debug_assertions) {
        let _ = writeln!(
            m,
            "**Debug build: these figures are not representative.** Run `cargo run --release -p ibp-benches --bin ibp-bench -- paper`.\n"
        );
    }
    let _ = writeln!(m, "## This machine's limits\n");
    let _ = writeln!(m, "| limit | GB/s | how |\n|---|---:|---|");
    for (name, v, how) in r.limits.rows() {
        let _ = writeln!(m, "| {name} | {v:.2} | {how} |");
    }
    let mut auth = r.auth.clone();
    let legacy = allocate_stat(&r.samples, &[Mode::Legacy]);
    let crypto = allocate_stat(&r.samples, &[Mode::Crypto, Mode::Full]);
    let _ = writeln!(m, "\n## Table 1\n");
    let _ = writeln!(
        m,
        "| operation | paper (ms) | p50 (ms) | p90 (ms) | samples |\n|---|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        m,
        "| IBP_auth (TLS 1.3 handshake + AUTH) | {PAPER_AUTH_MS} | {:.3} | {:.3} | {} |",
        auth.median() * 1e3,
        auth.percentile(90.0) * 1e3,
        auth.len()
    );
    for (name, paper, s) in [
        ("Allocate, legacy", PAPER_ALLOC_LEGACY_MS, legacy),
        (
            "Allocate, crypto (in a TLS session)",
            PAPER_ALLOC_CRYPTO_MS,
            crypto,
        ),
    ] {
        let _ = writeln!(
            m,
            "| {name} | {paper} | {:.3} | {:.3} | {} |",
            s.median * 1e3,
            s.p90 * 1e3,
            s.n
        );
    }
    let _ = writeln!(
        m,
        "\nThe floor of any request and reply, measured in the same run: a loopback round \
         trip of 100 bytes each way on one connection (an echo server on a tokio runtime, \
         as the depot) takes {:.3} ms at p50; Allocate p50 is {:.1}x that (legacy) and \
         {:.1}x (crypto). Issue 16's target, Allocate p50 <= 0.05 ms, is {}.",
        r.limits.rtt * 1e3,
        legacy.median / r.limits.rtt,
        crypto.median / r.limits.rtt,
        if legacy.median <= 0.05e-3 {
            "met".to_owned()
        } else if r.limits.rtt > 0.05e-3 {
            format!(
                "below the round trip itself on this machine ({:.3} ms): not reachable here",
                r.limits.rtt * 1e3
            )
        } else {
            "missed".to_owned()
        }
    );
    let _ = writeln!(
        m,
        "\n### Allocate alone\n\nLegacy Allocates one after another on one connection \
         (each released right after, untimed), and the same echo round trip beside them: \
         first with the scheduler placing this process and the depot, then with both on \
         CPU 0, where a reply does not wait for another CPU to wake (on this VM a \
         cross-CPU wake-up costs about as much as the depot's work).\n"
    );
    let _ = writeln!(
        m,
        "| placement | Allocate p50 (ms) | p90 (ms) | round trip p50 (ms) | Allocate / round trip | samples | target <= 0.05 ms |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for alone in &r.alone {
        match &alone.measured {
            Ok((alloc, rtt)) => {
                let (mut alloc, mut rtt) = (alloc.clone(), rtt.clone());
                let p50 = alloc.median();
                let _ = writeln!(
                    m,
                    "| {} | {:.4} | {:.4} | {:.4} | {:.2} | {} | {} |",
                    alone.placement,
                    p50 * 1e3,
                    alloc.percentile(90.0) * 1e3,
                    rtt.median() * 1e3,
                    p50 / rtt.median(),
                    alloc.len(),
                    if p50 <= 0.05e-3 { "met" } else { "missed" }
                );
            }
            Err(why) => {
                let _ = writeln!(m, "| {} | not measured: {why} | | | | | |", alone.placement);
            }
        }
    }
    for (fig, op) in [(1, Op::Load), (2, Op::Store), (3, Op::Copy)] {
        let _ = writeln!(m, "\n## Figure {fig}: {}\n", title(op));
        let _ = writeln!(
            m,
            "| MB | mode | p50 (ms) | p90 (ms) | GB/s at p50 | limit | of limit |\n|---:|---|---:|---:|---:|---|---:|"
        );
        for &mb in &a.sizes {
            for mode in Mode::ALL {
                let Some(s) = st.get(&(op, mode, mb)) else {
                    continue;
                };
                let rate = (mb as usize * MB) as f64 / s.median / 1e9;
                let (lname, lv) = limit_for(&r.limits, op, mode).unwrap_or(("-", f64::NAN));
                let _ = writeln!(
                    m,
                    "| {mb} | {} | {:.3} | {:.3} | {rate:.2} | {lname} | {:.0}% |",
                    mode.name(),
                    s.median * 1e3,
                    s.p90 * 1e3,
                    100.0 * rate / lv
                );
            }
        }
        if let Some(p) = plots.iter().find(|p| p.op == op) {
            for f in &p.files {
                if let Some(name) = f.file_name().and_then(|n| n.to_str()) {
                    if name.ends_with(".svg") {
                        let _ = writeln!(m, "\n![{}]({name})", title(op));
                    }
                }
            }
        }
    }
    let _ = writeln!(
        m,
        "\nThe paper gives Figures 1-3 as plots only; compare their shapes with the plots \
         here. At the crypto and full-crypto levels Copy is the same secure COPY (depot to \
         depot over TLS, the source authenticated by its own certificate and a grant bound \
         to its key), measured separately in each mode's turn."
    );
    m
}

pub fn title(op: Op) -> &'static str {
    match op {
        Op::Load => "Load",
        Op::Store => "Store",
        Op::Copy => "Copy (depot to depot)",
        Op::Allocate => "Allocate",
        Op::Allocate2 => "Allocate (target)",
    }
}
