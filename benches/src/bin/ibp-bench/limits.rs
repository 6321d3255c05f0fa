//! This machine's limits, measured in the run that reports against them:
//! loopback TCP, TLS 1.3 on loopback, AES-128-CTR (lors's own keystream),
//! BLAKE3 and a durable disk write (write + fdatasync).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ibp_benches::pki::Pki;
use ibp_benches::{gbps, loopback_tcp, median_of, payload, MIB};

/// Runs per limit (median).
const LIMIT_REPS: usize = 5;

/// Throughputs in GB/s (10^9 B/s).
#[derive(Debug, Clone)]
pub struct Limits {
    pub tcp: f64,
    pub tls: f64,
    pub tls_suite: String,
    pub aes_ctr: f64,
    pub blake3: f64,
    pub disk_durable: f64,
    /// p50 of a 100-byte request and reply over one loopback connection
    /// (an echo server on a tokio runtime, as the depot), seconds: the
    /// floor of any round trip such as an Allocate.
    pub rtt: f64,
}

impl Limits {
    /// The rows of the report: (name, GB/s, what it is).
    pub fn rows(&self) -> Vec<(&'static str, f64, String)> {
        vec![
            (
                "loopback TCP",
                self.tcp,
                "one connection, 1 MiB writes".into(),
            ),
            (
                "TLS 1.3 loopback",
                self.tls,
                format!("one connection, {}", self.tls_suite),
            ),
            (
                "AES-128-CTR",
                self.aes_ctr,
                "lors's keystream, one core".into(),
            ),
            ("BLAKE3", self.blake3, "one core".into()),
            (
                "durable disk write",
                self.disk_durable,
                "1 MiB writes then fdatasync, in the output directory".into(),
            ),
        ]
    }
}

pub async fn measure(pki: &Pki, scratch: &Path, bytes: usize) -> anyhow::Result<Limits> {
    let limit_bytes = bytes;
    let tcp = gbps(
        limit_bytes,
        median_of(LIMIT_REPS, || loopback_tcp(limit_bytes, MIB))?.as_secs_f64(),
    );
    let (tls, tls_suite) =
        ibp_benches::secure::raw_tls(pki, limit_bytes, 256 * 1024, LIMIT_REPS).await?;
    let mut data = payload(limit_bytes);
    let key = lors::crypto::DataKey::from_bytes([7; 16]);
    let file = uuid::Uuid::from_u128(0x6f0e_1d2c_3b4a_4958_8776_a5b4_c3d2_e1f0);
    let aes = median_of(LIMIT_REPS, || {
        let t = Instant::now();
        for (i, block) in data.chunks_mut(MIB).enumerate() {
            lors::crypto::apply_keystream(&key, &file, i as u64, block)
                .map_err(|e| anyhow::anyhow!("AES-CTR: {e}"))?;
        }
        Ok(t.elapsed())
    })?;
    let b3 = median_of(LIMIT_REPS, || {
        let t = Instant::now();
        std::hint::black_box(blake3::hash(std::hint::black_box(&data)));
        Ok(t.elapsed())
    })?;
    let disk = median_of(3, || durable_write(scratch, &data))?;
    let unpinned = ibp_benches::Placement {
        name: "unpinned",
        cpus: None,
    };
    let rtt = ibp_benches::loopback_rtt_tokio(RTT_N, RTT_LEN, unpinned)
        .await?
        .median();
    Ok(Limits {
        tcp,
        tls,
        tls_suite: tls_suite
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .to_owned(),
        aes_ctr: gbps(limit_bytes, aes.as_secs_f64()),
        blake3: gbps(limit_bytes, b3.as_secs_f64()),
        disk_durable: gbps(limit_bytes, disk.as_secs_f64()),
        rtt,
    })
}

/// Round trips timed for [`Limits::rtt`], and their size each way.
const RTT_N: usize = 2000;
const RTT_LEN: usize = 100;

/// Writes `data` to a new file in `dir` and makes it durable.
fn durable_write(dir: &Path, data: &[u8]) -> anyhow::Result<Duration> {
    let path = dir.join("durable-write.bin");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path)?;
        for piece in data.chunks(MIB) {
            f.write_all(piece)?;
        }
        f.sync_data()?;
    }
    let d = t.elapsed();
    std::fs::remove_file(&path)?;
    Ok(d)
}
