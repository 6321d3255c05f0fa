//! `ibp-grid`: a complete storage grid on loopback, from the same binaries
//! and configurations an operator deploys.
//!
//! - `ibp-grid demo` starts the grid, logs a user in, uploads a generated
//!   file with 2+1 erasure coding at the full-crypto level, kills a depot
//!   (SIGKILL), downloads, verifies, and prints every step with its timing;
//! - `ibp-grid up` starts the grid and keeps it running, printing the
//!   environment `lors` needs in another terminal; Ctrl-C stops every
//!   process it started;
//! - `ibp-grid wan` measures `lors` throughput across emulated WAN round
//!   trips on a grid on hosts (`ibp_grid::grid::wan`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ibp_grid::grid::{Grid, GridOptions, VO};
use ibp_grid::run_bounded;

/// The demo's file, and how long one `lors` command may take.
const LORS_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Parser)]
#[command(
    name = "ibp-grid",
    version,
    about = "A complete storage grid on loopback: online CA, L-Bone, metadata manager and depots as real processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a grid, upload a file with 2+1 erasure coding at the
    /// full-crypto level, kill a depot, download and verify; then stop.
    Demo {
        /// Size of the generated file in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        #[command(flatten)]
        grid: GridArgs,
    },
    /// Start a grid and keep it running until Ctrl-C, printing the
    /// environment for `lors` in another terminal.
    Up {
        #[command(flatten)]
        grid: GridArgs,
    },
    /// Measure `lors upload`/`download` across emulated WAN round trips
    /// on a grid on hosts (network namespaces; needs root and iproute2),
    /// and the `--threads` that recovers the rate.
    Wan {
        /// Size of the file in MiB.
        #[arg(long, default_value_t = 128)]
        size_mib: u64,
        /// Round trips in milliseconds.
        #[arg(long, value_delimiter = ',', default_value = "0,5,20,50")]
        rtts_ms: Vec<u64>,
        /// `--threads` values tried to recover the rate.
        #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
        threads: Vec<usize>,
        /// Runs of each measurement (the best counts).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Use debug builds instead of release builds.
        #[arg(long)]
        debug: bool,
        /// Also compare `--copies 3` with `--copies 1` uploads with the
        /// client's link limited to each of these rates (Mbit/s): the
        /// depots copy the replicas, so the client sends each byte once.
        #[arg(long, value_delimiter = ',')]
        copies_mbit: Vec<u64>,
    },
}

#[derive(clap::Args)]
struct GridArgs {
    /// Number of depots.
    #[arg(long, default_value_t = 3)]
    depots: usize,
    /// Grid directory (must be new or empty; default a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the grid directory (configurations, logs, data) on exit.
    #[arg(long)]
    keep: bool,
    /// Use debug builds of the daemons instead of release builds.
    #[arg(long)]
    debug: bool,
}

impl GridArgs {
    fn options(&self) -> GridOptions {
        GridOptions {
            depots: self.depots,
            users: vec!["admin".into(), "demo".into()],
            admins: vec!["admin".into()],
            release: !self.debug,
            // A status page that reacts within seconds, without busy polls.
            lbone_poll_interval: Duration::from_secs(1),
            // Every security level works, `--security crypto` included.
            data_port: true,
            dir: self.dir.clone(),
            ..GridOptions::default()
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Demo { size_mib, grid } => demo(&grid, size_mib),
        Cmd::Up { grid } => up(&grid),
        Cmd::Wan {
            size_mib,
            rtts_ms,
            threads,
            reps,
            debug,
            copies_mbit,
        } => ibp_grid::grid::wan::run(
            &ibp_grid::grid::wan::WanOptions {
                mib: size_mib,
                rtts_ms,
                threads,
                reps,
                release: !debug,
                copies_mbit,
            },
            &mut |line| println!("{line}"),
        )
        .map(|_| ()),
    };
    if let Err(e) = result {
        eprintln!("ibp-grid: error: {e:#}");
        std::process::exit(1);
    }
}

/// Prints numbered steps with their durations.
struct Report {
    n: usize,
    started: Instant,
}

impl Report {
    fn new() -> Report {
        Report {
            n: 0,
            started: Instant::now(),
        }
    }

    fn step(&mut self, what: &str, took: Duration) {
        self.n += 1;
        println!("[{:>2}] {:>8.3} s  {what}", self.n, took.as_secs_f64());
    }

    fn detail(&self, text: &str) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            println!("                {line}");
        }
    }
}

fn start(args: &GridArgs, report: &mut Report) -> anyhow::Result<Grid> {
    if args.keep {
        std::env::set_var("IBP_GRID_KEEP", "1");
    }
    let t = Instant::now();
    let release = !args.debug;
    ibp_grid::grid::binaries(release)?;
    report.step(
        &format!(
            "daemon binaries ready ({} build of ibp-depot, lbone, metadata-manager, online-ca, lors)",
            if release { "release" } else { "debug" }
        ),
        t.elapsed(),
    );
    let grid = Grid::start(args.options())?;
    for (what, took) in &grid.steps {
        report.step(what, *took);
    }
    report.detail(&format!("grid directory {}", grid.dir.display()));
    Ok(grid)
}

/// Runs `lors` as `user`, printing the command line; fails on a non-zero
/// exit unless `expect` names the expected code.
fn lors(
    grid: &Grid,
    user: &str,
    args: &[&str],
    expect: i32,
    report: &mut Report,
    what: &str,
) -> anyhow::Result<Output> {
    let mut cmd = grid.lors(user);
    cmd.args(args);
    let t = Instant::now();
    let out = run_bounded(capture(cmd), LORS_TIMEOUT)
        .with_context(|| format!("run lors {}", args.join(" ")))?;
    let took = t.elapsed();
    let code = out.status.code().unwrap_or(-1);
    if code != expect {
        bail!(
            "lors {} exited with {code} (expected {expect}):\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    report.step(what, took);
    report.detail(&format!("$ lors {}", args.join(" ")));
    Ok(out)
}

fn capture(mut cmd: Command) -> Command {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn demo(args: &GridArgs, size_mib: u64) -> anyhow::Result<()> {
    if args.depots < 3 {
        bail!("the demo needs 3 depots (2+1 erasure coding on distinct depots)");
    }
    println!("ibp-grid demo: a grid on loopback, then a file through it\n");
    let mut report = Report::new();
    let mut grid = start(args, &mut report)?;
    let user = "demo";
    let (src, digest) = demo_prepare(&grid, user, size_mib, &mut report)?;
    let path = demo_upload(&grid, user, &src, size_mib, &mut report)?;
    demo_lose_a_depot(&mut grid, user, &path, size_mib, &digest, &mut report)?;
    println!(
        "\nDone in {:.1} s. Every process is stopped now; `ibp-grid up` keeps a grid running.",
        report.started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The demo user logs in, shows its proxy, makes its key pair and a file
/// of random data; returns the file and its digest.
fn demo_prepare(
    grid: &Grid,
    user: &str,
    size_mib: u64,
    report: &mut Report,
) -> anyhow::Result<(PathBuf, blake3::Hash)> {
    let t = Instant::now();
    grid.login(user)?;
    report.step(
        &format!("{user} logs in at the online CA with a password: a proxy certificate with VO {VO} attributes"),
        t.elapsed(),
    );
    report.detail(&format!(
        "$ lors login --method local --ca {} --vo {VO} --user {user}",
        grid.ca_url
    ));
    lors(
        grid,
        user,
        &["proxy-info"],
        0,
        report,
        "the proxy: subject, VO, groups, lifetime",
    )
    .map(|o| report.detail(&String::from_utf8_lossy(&o.stdout)))?;
    lors(
        grid,
        user,
        &["keys", "init"],
        0,
        report,
        "an X25519 key pair for wrapping data keys (~/.config/lors/key)",
    )?;

    let t = Instant::now();
    let src = grid.user(user).dir.join("demo.bin");
    let digest = write_random(&src, size_mib << 20)?;
    report.step(
        &format!("{size_mib} MiB of random data written to {}", src.display()),
        t.elapsed(),
    );
    Ok((src, digest))
}

/// A directory of the user's own, the upload (2+1, full crypto) and its
/// exNode's mappings; returns the file's path at the metadata manager.
fn demo_upload(
    grid: &Grid,
    user: &str,
    src: &Path,
    size_mib: u64,
    report: &mut Report,
) -> anyhow::Result<String> {
    let dir = format!("/{VO}/{user}");
    lors(
        grid,
        user,
        &["mkdir", &dir],
        0,
        report,
        "a directory of demo's own at the metadata manager (the VO root is writable by its members)",
    )?;
    let path = format!("{dir}/demo.bin");
    let src_s = src.display().to_string();
    let t = Instant::now();
    lors(
        grid,
        user,
        &["upload", &src_s, &path, "--ec", "2+1", "--security", "full"],
        0,
        report,
        "upload: AES-128-CTR per block, Reed-Solomon 2+1 on 3 distinct depots, TLS 1.3 to every depot, exNode to the metadata manager",
    )?;
    report.detail(&format!(
        "{:.0} MiB/s",
        (size_mib as f64) / t.elapsed().as_secs_f64()
    ));
    let out = lors(
        grid,
        user,
        &["stat", &path, "--mappings"],
        0,
        report,
        "the exNode: every block's pieces and where they are",
    )?;
    report.detail(&summarize_mappings(&String::from_utf8_lossy(&out.stdout)));
    Ok(path)
}

/// Kills a depot, downloads the file (rebuilt from parity), verifies it
/// against `digest` and shows `lors stat --check` reporting the loss.
fn demo_lose_a_depot(
    grid: &mut Grid,
    user: &str,
    path: &str,
    size_mib: u64,
    digest: &blake3::Hash,
    report: &mut Report,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let victim = 1;
    let name = grid.depots[victim].name.clone();
    let addr = grid.depots[victim].tls_addr.clone().unwrap_or_default();
    grid.kill_depot(victim);
    report.step(
        &format!("{name} ({addr}) killed with SIGKILL: a third of every block's pieces are gone"),
        t.elapsed(),
    );

    let dst = grid.user(user).dir.join("demo.out");
    let dst_s = dst.display().to_string();
    let t = Instant::now();
    lors(
        grid,
        user,
        &["download", path, &dst_s],
        0,
        report,
        "download: a metadata-manager ticket for the file, pieces verified (BLAKE3), the lost ones rebuilt from parity",
    )?;
    report.detail(&format!(
        "{:.0} MiB/s",
        (size_mib as f64) / t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    let got = hash_file(&dst)?;
    if got != *digest {
        bail!("the downloaded file differs from the uploaded one");
    }
    report.step(
        &format!(
            "verified: the download is byte for byte the upload (BLAKE3 {})",
            &digest.to_hex()[..16]
        ),
        t.elapsed(),
    );
    lors(
        grid,
        user,
        &["stat", path, "--check"],
        11,
        report,
        "lors stat --check reports the unreadable pieces (exit 11); `lors repair` would recreate them on a spare depot",
    )?;
    Ok(())
}

/// "N mappings on depots A, B, C" from `lors stat --mappings` output.
fn summarize_mappings(text: &str) -> String {
    let mut depots: Vec<&str> = Vec::new();
    let mut n = 0;
    for word in text.split_whitespace() {
        if let Some(rest) = word.strip_prefix("127.0.0.1:") {
            if rest.chars().all(|c| c.is_ascii_digit()) {
                n += 1;
                if !depots.contains(&word) {
                    depots.push(word);
                }
            }
        }
    }
    if n == 0 {
        return text.lines().take(8).collect::<Vec<_>>().join("\n");
    }
    format!(
        "{n} pieces on {} depots: {}",
        depots.len(),
        depots.join(", ")
    )
}

fn write_random(path: &Path, len: u64) -> anyhow::Result<blake3::Hash> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("create {}", path.display()))?,
    );
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let k = (left as usize).min(buf.len());
        rand::Rng::fill(&mut rand::thread_rng(), &mut buf[..k]);
        f.write_all(&buf[..k])?;
        hasher.update(&buf[..k]);
        left -= k as u64;
    }
    f.flush()?;
    Ok(hasher.finalize())
}

fn hash_file(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hasher.finalize())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn up(args: &GridArgs) -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut report = Report::new();
    let grid = start(args, &mut report)?;
    let user = grid.user("demo");
    let bin_dir = grid
        .bins
        .lors
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    println!("\nThe grid is up. Its daemons:");
    println!("  online CA          {}", grid.ca_url);
    println!(
        "  L-Bone             {}  (status page: {}/status)",
        grid.lbone_url, grid.lbone_url
    );
    println!("  metadata manager   {}", grid.mdm_url);
    for d in &grid.depots {
        println!(
            "  {:<18} ibp://{}  TLS {}",
            d.name,
            d.legacy_addr,
            d.tls_addr.as_deref().unwrap_or("-")
        );
    }
    println!(
        "\nIn another terminal, as user `demo` (password `{}`; `admin` is the VO admin):\n",
        user.password
    );
    println!("export PATH={}:$PATH", bin_dir.display());
    for (k, v) in grid.env("demo") {
        // HOME stays the caller's own.
        if k != "HOME" && k != "XDG_CONFIG_HOME" {
            println!("export {k}={v}");
        }
    }
    println!("lors keys init");
    println!("lors mkdir /{VO}/demo");
    println!("lors upload FILE /{VO}/demo/FILE --ec 2+1");
    println!("lors download /{VO}/demo/FILE COPY");
    println!("lors login --method local --user demo    # when the proxy expires");
    println!(
        "\nLogs and configurations are under {}. Ctrl-C stops every process.",
        grid.dir.display()
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nibp-grid: stopping {} processes", grid.pids().len());
    drop(grid);
    Ok(())
}
