//! `ibp-bench`: benchmarks reported against this machine's limits,
//! measured in the same run.
//!
//! - `ibp-bench paper`: the paper's depot experiment (Table 1 and Figures
//!   1-3: Allocate, Store, Load, Allocate, Copy at 1 to 100 MB in the legacy,
//!   crypto and full-crypto modes) on two depots it starts, with a CSV of
//!   every sample, a Markdown report and SVG and PNG plots.
//! - `ibp-bench lors`: whole files, small files, memory and CPU of `lors`
//!   on a grid it starts, and the peers that are installed (Tahoe-LAFS)
//!   measured beside it (`ibp_benches::lors_ops`).
//!
//! See docs/performance.md.

mod limits;
mod paper;
mod plot;
mod report;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ibp-bench",
    about = "Benchmarks of the IBP stack, each figure beside this machine's limit measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The paper's experiment: Allocate, Store, Load, Allocate, Copy at
    /// each size in the legacy, crypto and full-crypto modes, on two depots
    /// started here; Table 1 (IBP_auth, Allocate) and Figures 1-3
    Paper(PaperArgs),
    /// `lors` on a grid of release binaries started here: big files (EC
    /// 2+1 and 2 copies, full security), legacy transfers, small files,
    /// a block-size sweep, peak RSS and CPU; Tahoe-LAFS measured beside it
    /// when `tahoe` is on PATH (else "not measured")
    Lors(LorsArgs),
}

#[derive(Args, Clone)]
pub struct LorsArgs {
    /// MiB of the big files
    #[arg(long, default_value_t = 1024)]
    pub big_mib: u64,
    /// MiB of the sweep's file
    #[arg(long, default_value_t = 256)]
    pub sweep_mib: u64,
    /// MiB of the legacy transfers
    #[arg(long, default_value_t = 100)]
    pub legacy_mib: u64,
    /// MiB of the file moved through the peers (default: --big-mib)
    #[arg(long)]
    pub peer_mib: Option<u64>,
    /// MiB of the copies section's file
    #[arg(long, default_value_t = 256)]
    pub copies_mib: u64,
    /// Repetitions of each transfer (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Scales the small-file counts
    #[arg(long, default_value_t = 1.0)]
    pub small_scale: f64,
    /// Sections to run
    #[arg(long, value_delimiter = ',', default_value = ibp_benches::lors_ops::SECTIONS)]
    pub sections: Vec<String>,
    /// Where report.md goes
    #[arg(long, default_value = "bench-out/lors")]
    pub out: PathBuf,
}

#[derive(Args, Clone)]
pub struct PaperArgs {
    /// Repetitions of the sequence per size and mode (the paper: 500)
    #[arg(long, default_value_t = 500)]
    pub reps: usize,
    /// Block sizes in MB (10^6 bytes)
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,50,100")]
    pub sizes: Vec<u64>,
    /// Fresh TLS handshakes + AUTH timed for IBP_auth
    #[arg(long, default_value_t = 300)]
    pub auth_reps: usize,
    /// Legacy Allocates timed back to back on one connection, with the
    /// scheduler placing client and depot and then with both on CPU 0
    #[arg(long, default_value_t = 2000)]
    pub alone: usize,
    /// MB each machine limit is measured over (median of 5 runs; the
    /// durable write of 3)
    #[arg(long, default_value_t = 100)]
    pub limit_mb: usize,
    /// Where the CSV, the report and the plots go
    #[arg(long, default_value = "bench-out/paper")]
    pub out: PathBuf,
    /// The ibp-depot binary (default: $IBP_DEPOT_BIN, else a release
    /// build by cargo)
    #[arg(long)]
    pub depot_bin: Option<PathBuf>,
    /// A TrueType font for the PNG plots' text (default: $IBP_BENCH_FONT,
    /// else DejaVu Sans from /usr/share/fonts)
    #[arg(long)]
    pub font: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Paper(a) => paper::run(&a),
        Cmd::Lors(a) => ibp_benches::lors_ops::run(&ibp_benches::lors_ops::Config {
            big_mib: a.big_mib,
            sweep_mib: a.sweep_mib,
            legacy_mib: a.legacy_mib,
            peer_mib: a.peer_mib.unwrap_or(a.big_mib),
            copies_mib: a.copies_mib,
            reps: a.reps,
            small_scale: a.small_scale,
            sections: a.sections,
            out: Some(a.out),
        }),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ibp-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
