//! `lors upload` / `lors download` throughput across emulated WAN round
//! trips on a grid on hosts (every daemon in its own network namespace;
//! needs root and iproute2), and the `--threads` that recovers the rate:
//! `ibp_grid::grid::wan` (also `ibp-grid wan`), which documents the method.
//!
//! Run with `cargo bench -p ibp-benches --bench wan`. Environment:
//! `WAN_MIB` (128), `WAN_RTTS_MS` (0,5,20,50), `WAN_THREADS` (8,16,32),
//! `WAN_REPS` (3, the best run counts), `WAN_COPIES_MBIT` (client link
//! rates at which `--copies 3` is compared with `--copies 1`; none).

use ibp_testkit::grid::wan::{run, WanOptions};

fn env_list<T: std::str::FromStr>(key: &str) -> Option<Vec<T>> {
    let v = std::env::var(key).ok()?;
    Some(v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs benchmarks too: only `cargo bench`
    // (which passes --bench) measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("wan: a benchmark; run it with `cargo bench -p ibp-benches --bench wan`");
        return Ok(());
    }
    let d = WanOptions::default();
    let opts = WanOptions {
        mib: env_list("WAN_MIB")
            .and_then(|v| v.first().copied())
            .unwrap_or(d.mib),
        rtts_ms: env_list("WAN_RTTS_MS").unwrap_or(d.rtts_ms),
        threads: env_list("WAN_THREADS").unwrap_or(d.threads),
        reps: env_list("WAN_REPS")
            .and_then(|v| v.first().copied())
            .unwrap_or(d.reps),
        release: true,
        copies_mbit: env_list("WAN_COPIES_MBIT").unwrap_or(d.copies_mbit),
    };
    run(&opts, &mut |line| println!("{line}"))?;
    Ok(())
}
