//! The Rust baseline of python/benches/seq_read.py: reads a file on the
//! grid from start to end through `lors::files::FileReader` in chunks of
//! the same size, with the same client settings (the configuration file
//! and `LORS_*` variables), and prints the rate.
//!
//! ```sh
//! cargo run --release -p lors-python --example seq_read -- /vo1/bench/big [CHUNK_BYTES] [RUNS]
//! ```

use std::time::Instant;

use lors::client::{Client, Overrides};
use lors::files::{FileReader, ReaderOptions, Source};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: seq_read PATH [CHUNK_BYTES] [RUNS]")?;
    let chunk: usize = args.next().map_or(Ok(8 << 20), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let client = Client::from_env(Overrides::default())?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut buf = vec![0u8; chunk];
    for _ in 0..runs {
        let t = Instant::now();
        let size = rt.block_on(async {
            let grid = client.grid()?;
            let src = Source::Path {
                path: path.clone(),
                version: None,
            };
            let r = FileReader::open(&grid, &src, ReaderOptions::default()).await?;
            let mut off = 0u64;
            loop {
                let n = r.read_at(off, &mut buf).await?;
                if n == 0 {
                    break;
                }
                off += n as u64;
            }
            Ok::<u64, lors::Error>(off)
        })?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "rust FileReader: {} MiB in {secs:.2} s: {:.1} MiB/s (chunk {chunk})",
            size >> 20,
            size as f64 / (1 << 20) as f64 / secs
        );
    }
    Ok(())
}
