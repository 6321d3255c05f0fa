//! The secure port's benchmark against a real `ibp-depot` process on
//! loopback (`--sync batch`), with a PKI minted here:
//!
//! - IBP_auth: TLS 1.3 handshake with a proxy chain + AUTH with a depot
//!   grant, p50 over fresh connections;
//! - ALLOCATE inside an authenticated session, p50;
//! - STORE and LOAD of 100 MB at the crypto level (sealed request lines on
//!   a plain data connection, data in clear) against the legacy port of the
//!   same depot;
//! - STORE and LOAD of 100 MB at full crypto (everything inside TLS) against
//!   the raw TLS 1.3 throughput of this machine (a tokio-rustls sender and
//!   receiver on loopback, AES-128-GCM like the depot), measured in the same
//!   run.
//!
//! Figures are printed next to their targets; missed targets are reported,
//! never fatal. Run with `cargo bench -p ibp-benches --bench secure_ops`.

use std::time::{Duration, Instant};

use anyhow::bail;
use ibp_benches::pki::mint;
use ibp_benches::secure::{grant, raw_tls, session, ticket, SecureDepot};
use ibp_benches::{depot_binary, gbps, payload, Samples, MB};
use ibp_depot_client::{DataClient, IbpClient, SecureClient};
use ibp_proto::{Reliability, Rid};

const FILE: &str = "6f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0";
const BULK: usize = 100 * MB;
const BULK_REPS: usize = 7;
const AUTH_N: usize = 300;
const ALLOC_N: usize = 2000;
const TLS_CHUNK: usize = 256 * 1024;

const TARGET_AUTH_MS: f64 = 1.0;
const PAPER_AUTH_MS: f64 = 14.5;
const TARGET_ALLOC_MS: f64 = 0.15;
const TARGET_CRYPTO_VS_LEGACY: f64 = 0.90;
const TARGET_FULL_VS_TLS: f64 = 0.70;

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; without it we are being run as a test
    // (`cargo test --all-targets`): do not build release binaries and run
    // a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "secure_ops: a benchmark; run it with `cargo bench -p ibp-benches --bench secure_ops`"
        );
        return Ok(());
    }
    let started = Instant::now();
    let bin = depot_binary()?;
    println!(
        "secure_ops: ibp-depot {} ({})",
        bin.path.display(),
        bin.note
    );
    let dir = tempfile::tempdir()?;
    let pki = mint(dir.path())?;
    let depot = SecureDepot::start(
        &bin.path,
        &dir.path().join("depot"),
        &dir.path().join("trust"),
        &pki,
        "depot",
    )?;
    let grant = grant(&pki, &depot.tls, pki.user.key_hash()?);
    let ticket = ticket(&pki, FILE)?;
    let _ = &pki.ca;
    // A client builds its TLS configuration once (roots, key) and reuses it.
    let cfg = SecureClient::config(&pki.client_trust, &pki.user)?;

    // IBP_auth: TLS handshake + AUTH on fresh connections.
    let mut auth = Samples::default();
    for _ in 0..AUTH_N {
        let t = Instant::now();
        let c = session(&cfg, &depot, &grant).await?;
        auth.push(t.elapsed());
        drop(c);
    }
    let auth_p50 = auth.median() * 1e3;

    // ALLOCATE inside a session.
    let mut c = session(&cfg, &depot, &grant).await?;
    let mut alloc = Samples::default();
    let mut to_free = Vec::with_capacity(ALLOC_N);
    for _ in 0..ALLOC_N {
        let t = Instant::now();
        let caps = c.allocate(Rid(0), Reliability::Hard, 600, 1000).await?;
        alloc.push(t.elapsed());
        to_free.push(caps.manage);
    }
    for m in &to_free {
        c.decr(m, 1).await?;
    }
    let alloc_p50 = alloc.median() * 1e3;

    let data = payload(BULK);
    let mut buf: Vec<u8> = Vec::with_capacity(BULK);

    // Legacy port.
    let mut legacy = IbpClient::connect(&depot.legacy).await?;
    legacy.set_timeout(Duration::from_secs(60));
    let lcaps = legacy
        .allocate(Rid(0), Reliability::Hard, 3600, BULK as u64)
        .await?;
    let caps = c
        .allocate(Rid(0), Reliability::Hard, 3600, BULK as u64)
        .await?;
    let cs = c.open_crypto().await?;
    let mut d = DataClient::connect(&depot.data, &cs).await?;
    d.set_timeout(Duration::from_secs(60));
    // The three levels take turns in every round, so that drift in the
    // machine's load affects them alike.
    let mut t = [(); 6].map(|_| Samples::default());
    for _ in 0..BULK_REPS {
        let s = Instant::now();
        legacy.write_at(&lcaps.write, 0, &data).await?;
        t[0].push(s.elapsed());
        // Crypto level: sealed lines on a data connection, data in clear.
        let s = Instant::now();
        d.write_at(&caps.write, 0, FILE, &data).await?;
        t[1].push(s.elapsed());
        // Full crypto: everything inside TLS.
        let s = Instant::now();
        c.write_at(&caps.write, 0, FILE, &data).await?;
        t[2].push(s.elapsed());
        let s = Instant::now();
        legacy
            .load_into(&lcaps.read, 0, BULK as u64, &mut buf)
            .await?;
        t[3].push(s.elapsed());
        let s = Instant::now();
        d.load_into(&caps.read, 0, BULK as u64, &ticket, &mut buf)
            .await?;
        t[4].push(s.elapsed());
        let s = Instant::now();
        let got = c
            .load_into(&caps.read, 0, BULK as u64, &ticket, &mut buf)
            .await?;
        t[5].push(s.elapsed());
        if got as usize != BULK {
            bail!("full-crypto LOAD returned {got} bytes");
        }
    }
    let [legacy_store, crypto_store, full_store, legacy_load, crypto_load, full_load] =
        t.map(|mut s| gbps(BULK, s.median()));
    let (tls_rate, suite) = raw_tls(&pki, BULK, TLS_CHUNK, BULK_REPS).await?;

    println!();
    println!("IBP_auth and sessions ({AUTH_N} handshakes, {ALLOC_N} ALLOCATEs):");
    println!(
        "  IBP_auth (TLS 1.3 handshake + AUTH) p50 {auth_p50:.3} ms  p90 {:.3} ms   target <= {TARGET_AUTH_MS} ms ({}), paper {PAPER_AUTH_MS} ms",
        auth.percentile(90.0) * 1e3,
        verdict(auth_p50 <= TARGET_AUTH_MS)
    );
    println!(
        "  ALLOCATE in a session           p50 {alloc_p50:.3} ms  p90 {:.3} ms   target <= {TARGET_ALLOC_MS} ms ({})",
        alloc.percentile(90.0) * 1e3,
        verdict(alloc_p50 <= TARGET_ALLOC_MS)
    );
    println!();
    println!("100 MB transfers (median of {BULK_REPS}; GB/s = 10^9 B/s):");
    let line = |name: &str, v: f64, base_name: &str, base: f64, target: f64| {
        let r = v / base;
        println!(
            "  {name:<26} {v:6.2} GB/s = {:5.1}% of {base_name} ({base:.2} GB/s)   target >= {:.0}% ({})",
            100.0 * r,
            100.0 * target,
            verdict(r >= target)
        );
    };
    println!(
        "  {:<26} {legacy_store:6.2} GB/s",
        "legacy STORE (WRITE at 0)"
    );
    println!("  {:<26} {legacy_load:6.2} GB/s", "legacy LOAD");
    line(
        "crypto STORE",
        crypto_store,
        "legacy",
        legacy_store,
        TARGET_CRYPTO_VS_LEGACY,
    );
    line(
        "crypto LOAD",
        crypto_load,
        "legacy",
        legacy_load,
        TARGET_CRYPTO_VS_LEGACY,
    );
    println!(
        "  {:<26} {tls_rate:6.2} GB/s  ({suite})",
        "raw TLS 1.3 loopback"
    );
    line(
        "full-crypto STORE",
        full_store,
        "raw TLS",
        tls_rate,
        TARGET_FULL_VS_TLS,
    );
    line(
        "full-crypto LOAD",
        full_load,
        "raw TLS",
        tls_rate,
        TARGET_FULL_VS_TLS,
    );
    println!();
    println!(
        "secure_ops finished in {:.1} s (missed targets are reported, never fatal)",
        started.elapsed().as_secs_f64()
    );
    drop(depot);
    Ok(())
}
