//! `ibp-depot demo`: a real depot process on loopback and a real round trip.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use ibp_depot::units::ByteSize;
use ibp_depot_client::IbpClient;
use ibp_proto::{Reliability, Rid};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bytes to upload.
    #[arg(long, default_value = "64MiB")]
    size: ByteSize,
}

fn mbps(bytes: u64, t: std::time::Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let size = args.size.0;
    let dir = tempfile::tempdir().context("create a temporary grid directory")?;
    let exe = std::env::current_exe().context("find the ibp-depot binary")?;
    let data = dir.path().join("depot1");
    let t0 = Instant::now();
    let mut child = Command::new(&exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "127.0.0.1",
            "--max-duration",
            "1h",
        ])
        .arg("--hard-size")
        .arg(format!("{}", size * 2 + (1 << 20)))
        // The demo allocates on the legacy port: let it use the whole resource.
        .args([
            "--legacy-max-size",
            "100%",
            "--legacy-per-address-bytes",
            "100%",
        ])
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the depot")?;
    let result = async {
        let stdout = child.stdout.take().context("depot stdout")?;
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .context("read the depot's address")?;
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .context("depot did not print its address")?
            .to_owned();
        println!(
            "1. depot started at {addr} (pid {}, data in {}) in {:.1} ms",
            child.id(),
            data.display(),
            t0.elapsed().as_secs_f64() * 1e3
        );

        let mut c = IbpClient::connect(&addr).await?;
        let t = Instant::now();
        let st = c.status(Rid(0)).await?;
        println!(
            "2. STATUS: {} bytes hard capacity, max duration {} s ({:.2} ms)",
            st.hard_configured,
            st.max_duration,
            t.elapsed().as_secs_f64() * 1e3
        );

        let t = Instant::now();
        let caps = c.allocate(Rid(0), Reliability::Hard, 3600, size).await?;
        println!(
            "3. ALLOCATE {size} bytes HARD for 1 h ({:.2} ms)\n   read cap: {}",
            t.elapsed().as_secs_f64() * 1e3,
            caps.read
        );

        let payload: Vec<u8> = (0..size)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let t = Instant::now();
        let n = c.store(&caps.write, &payload).await?;
        let el = t.elapsed();
        println!(
            "4. STORE {n} bytes in {:.1} ms ({:.0} MB/s)",
            el.as_secs_f64() * 1e3,
            mbps(n, el)
        );

        let t = Instant::now();
        let back = c.load(&caps.read, 0, size).await?;
        let el = t.elapsed();
        if back != payload {
            bail!("LOAD returned different bytes");
        }
        println!(
            "5. LOAD {} bytes in {:.1} ms ({:.0} MB/s), identical to what was stored",
            back.len(),
            el.as_secs_f64() * 1e3,
            mbps(size, el)
        );

        let copy = c.allocate(Rid(0), Reliability::Hard, 3600, size).await?;
        let t = Instant::now();
        let n = c.copy(&caps.read, &copy.write, 0, size).await?;
        let el = t.elapsed();
        let copied = c.load(&copy.read, 0, size).await?;
        if copied != payload {
            bail!("the COPY target holds different bytes");
        }
        println!(
            "6. COPY {n} bytes depot-to-depot in {:.1} ms ({:.0} MB/s), verified",
            el.as_secs_f64() * 1e3,
            mbps(n, el)
        );

        let p = c.probe(&caps.manage).await?;
        println!(
            "7. PROBE: size {} of {}, {} s left, read refs {}",
            p.size, p.max_size, p.seconds_left, p.read_refs
        );
        c.decr(&caps.manage, 1).await?;
        c.decr(&copy.manage, 1).await?;
        match c.probe(&caps.manage).await {
            Err(ibp_depot_client::ClientError::Ibp(e)) => {
                println!("8. DECR deleted both allocations (PROBE now answers {e})")
            }
            other => bail!("allocation still there after DECR: {other:?}"),
        }
        anyhow::Ok(())
    }
    .await;
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().context("wait for the depot")?;
    result?;
    println!(
        "9. depot stopped on SIGTERM ({status}); all steps passed in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
