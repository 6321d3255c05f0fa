//! `ibp-bench`: benchmarks reported against this machine's limits,
//! measured in the same run.
//!
//! - `ibp-bench paper`: the paper's depot experiment (Table 1 and Figures
//!   1-3: Allocate, Store, Load, Allocate, Copy at 1 to 100 MB in the legacy,
//!   crypto and full-crypto modes) on two depots it starts, with a CSV of
//!   every sample, a Markdown report and SVG and PNG plots.
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
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ibp-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
