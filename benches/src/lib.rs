//! Shared helpers for the depot benchmarks: finding (and if needed building)
//! the release `ibp-depot` binary, running real depot processes on loopback,
//! CPU accounting from `/proc`, percentiles, and the machine baselines
//! (loopback TCP, memcpy, page-cache file write/read) that results are
//! compared against.
//!
//! Sizes follow the decimal convention: 1 MB = 1,000,000 bytes and
//! 1 GB/s = 10^9 bytes per second.

pub mod lors_ops;
pub mod peers;
pub mod pki;
pub mod secure;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ibp_proto::{Capability, Expect, Load, Reply, Request, Store};

/// 1 MB in this crate: 10^6 bytes.
pub const MB: usize = 1_000_000;
/// 1 MiB, the write/read chunk of the baselines (the depot's own chunk size).
pub const MIB: usize = 1 << 20;

// Shared with the grid harness (cargo decides staleness; same target
// directory).
pub use ibp_testkit::grid::{target_dir, workspace_root};

/// Where the depot binary came from and how it was obtained.
#[derive(Debug, Clone)]
pub struct DepotBinary {
    pub path: PathBuf,
    /// Human-readable note: "from IBP_DEPOT_BIN", "from cargo in 0.4 s".
    pub note: String,
}

/// The release depot binary, from `cargo build --release -p ibp-depot`
/// (cargo rebuilds it when stale). `IBP_DEPOT_BIN` names a binary to use
/// as is.
pub fn depot_binary() -> anyhow::Result<DepotBinary> {
    release_binary("ibp-depot", "ibp-depot", "IBP_DEPOT_BIN")
}

/// The release binary `bin` of `package`: from the environment variable
/// `env` if set, else as cargo builds it (`cargo build --release -p
/// <package> --bin <bin>`, which rebuilds it when any of its sources
/// changed).
pub fn release_binary(package: &str, bin: &str, env: &str) -> anyhow::Result<DepotBinary> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if !path.is_file() {
            bail!("{env}={} is not a file", path.display());
        }
        return Ok(DepotBinary {
            path,
            note: format!("from {env}"),
        });
    }
    let t = Instant::now();
    let mut built = ibp_testkit::grid::cargo_binaries(&[(package, bin)], true)
        .with_context(|| format!("cargo build --release -p {package} --bin {bin}"))?;
    let path = built
        .remove(bin)
        .with_context(|| format!("cargo reported no executable for {bin}"))?;
    Ok(DepotBinary {
        path,
        note: format!("from cargo in {:.1} s", t.elapsed().as_secs_f64()),
    })
}

/// A depot process serving one resource on `127.0.0.1`, killed on drop.
pub struct DepotProcess {
    child: Child,
    /// `127.0.0.1:PORT` as printed by the depot.
    pub addr: String,
    /// The resource's data directory.
    pub data: PathBuf,
    /// The depot's stderr (its log).
    pub log: PathBuf,
    // Kept open so the depot never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl DepotProcess {
    /// Starts `bin serve` in legacy mode with batch sync on a free loopback
    /// port, data in `data`, log in `log`; waits for `listening on ADDR:PORT`.
    pub fn start(bin: &Path, data: &Path, log: &Path) -> anyhow::Result<DepotProcess> {
        fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
        let log_file = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--hostname",
                "127.0.0.1",
                "--hard-size",
                "2GiB",
                "--max-duration",
                "1h",
                "--sync",
                "batch",
                // The paper's sequence allocates on the legacy port: the
                // whole resource is its budget here.
                "--legacy-max-size",
                "100%",
                "--legacy-per-address-bytes",
                "100%",
                "--legacy-per-address-allocations",
                "1000000",
            ])
            .arg("--data")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("depot stdout was not captured");
        };
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        let read = stdout.read_line(&mut first);
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_owned);
        match (read, addr) {
            (Ok(_), Some(addr)) => Ok(DepotProcess {
                child,
                addr,
                data: data.to_path_buf(),
                log: log.to_path_buf(),
                _stdout: stdout,
            }),
            (r, _) => {
                let _ = child.kill();
                let status = child.wait();
                let log_text = fs::read_to_string(log).unwrap_or_default();
                bail!(
                    "depot did not report its address (first line {first:?}, read {r:?}, exit {status:?}); log:\n{log_text}"
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU used by the depot so far.
    pub fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot::of(&self.child.id().to_string())
    }

    /// Kills the depot (SIGKILL) and reaps it.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill the depot")?;
        self.child.wait().context("wait for the depot")?;
        Ok(())
    }
}

impl Drop for DepotProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU time of a process: precise on-CPU time summed over its live threads
/// (`/proc/PID/task/*/schedstat`, nanoseconds) and the tick-based user and
/// system times of the whole process (`/proc/PID/stat`, including exited
/// threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub on_cpu: Duration,
    pub user: Duration,
    pub system: Duration,
}

impl CpuSnapshot {
    /// `pid` is a number or `self`.
    pub fn of(pid: &str) -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        let proc_dir = Path::new("/proc").join(pid);
        if let Ok(tasks) = fs::read_dir(proc_dir.join("task")) {
            let mut ns = 0u64;
            for t in tasks.flatten() {
                if let Ok(s) = fs::read_to_string(t.path().join("schedstat")) {
                    ns += s
                        .split_whitespace()
                        .next()
                        .and_then(|f| f.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
            snap.on_cpu = Duration::from_nanos(ns);
        }
        if let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) {
            // Fields after the parenthesised command name start at field 3.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
                if let (Some(u), Some(s)) = (ticks(11), ticks(12)) {
                    snap.user = Duration::from_secs_f64(u / clock_ticks());
                    snap.system = Duration::from_secs_f64(s / clock_ticks());
                }
            }
        }
        snap
    }

    /// CPU of this (the benchmark) process.
    pub fn current() -> CpuSnapshot {
        CpuSnapshot::of("self")
    }

    /// `self - earlier`, saturating.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    pub fn add(&mut self, other: &CpuSnapshot) {
        self.on_cpu += other.on_cpu;
        self.user += other.user;
        self.system += other.system;
    }
}

/// Busy and steal time of the whole machine (all CPUs) from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCpu {
    /// user + nice, summed over CPUs.
    pub user: Duration,
    /// system + irq + softirq, summed over CPUs.
    pub system: Duration,
    /// Time the hypervisor ran something else while our vCPUs wanted to run.
    pub steal: Duration,
}

impl SystemCpu {
    pub fn now() -> SystemCpu {
        let Ok(stat) = fs::read_to_string("/proc/stat") else {
            return SystemCpu::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return SystemCpu::default();
        };
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
        let secs = |ticks: f64| Duration::from_secs_f64(ticks / clock_ticks());
        SystemCpu {
            user: secs(get(0) + get(1)),
            system: secs(get(2) + get(5) + get(6)),
            steal: secs(get(7)),
        }
    }

    pub fn since(&self, earlier: &SystemCpu) -> SystemCpu {
        SystemCpu {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    pub fn add(&mut self, other: &SystemCpu) {
        self.user += other.user;
        self.system += other.system;
        self.steal += other.steal;
    }
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A taskset(1) CPU list naming every online CPU, e.g. `0-1`: the
/// kernel's list, not this thread's affinity (which a pin narrows), so
/// that restoring affinity with it undoes a pin.
pub fn all_cpus() -> String {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("0-{}", cpu_count().saturating_sub(1)))
}

/// Restricts thread `id` (or, with `all_threads`, every thread of process
/// `id`) to the CPUs in `cpus` (a taskset(1) list such as `0` or `0-1`).
/// Returns false when taskset is missing or refuses.
pub fn set_affinity(id: u32, cpus: &str, all_threads: bool) -> bool {
    let mut c = Command::new("taskset");
    if all_threads {
        c.arg("-a");
    }
    c.args(["-p", "-c", cpus])
        .arg(id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The kernel thread id of the calling thread.
pub fn current_tid() -> Option<u32> {
    fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// Restricts the calling thread to `cpus`; threads it starts later inherit this.
pub fn pin_current_thread(cpus: &str) -> bool {
    current_tid().is_some_and(|tid| set_affinity(tid, cpus, false))
}

/// Where the two ends of a request/reply exchange run: taskset CPU lists for
/// the client (the calling thread) and the server, or `None` for wherever the
/// scheduler puts them.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub name: &'static str,
    pub cpus: Option<(&'static str, &'static str)>,
}

/// Latency samples with interpolated percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    secs: Vec<f64>,
    sorted: bool,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.secs.push(d.as_secs_f64());
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.secs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secs.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.secs.sort_by(f64::total_cmp);
            self.sorted = true;
        }
    }

    /// The `p`-th percentile (0..=100) in seconds, linearly interpolated
    /// between the closest ranks; NaN when empty.
    pub fn percentile(&mut self, p: f64) -> f64 {
        self.sort();
        let n = self.secs.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
        let lo = rank.floor() as usize;
        let hi = rank.ceil() as usize;
        let w = rank - lo as f64;
        self.secs[lo] * (1.0 - w) + self.secs[hi] * w
    }

    pub fn median(&mut self) -> f64 {
        self.percentile(50.0)
    }

    pub fn min(&mut self) -> f64 {
        self.percentile(0.0)
    }

    pub fn max(&mut self) -> f64 {
        self.percentile(100.0)
    }

    pub fn total(&self) -> f64 {
        self.secs.iter().sum()
    }
}

/// Bytes per second expressed in GB/s (10^9 bytes per second).
pub fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// A deterministic, incompressible-looking payload of `len` bytes.
pub fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let take = (len - v.len()).min(8);
        v.extend_from_slice(&x[..take]);
    }
    v
}

/// Median of `reps` runs of `f`, which returns the time of one run.
pub fn median_of<F>(reps: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> anyhow::Result<Duration>,
{
    let mut s = Samples::default();
    for _ in 0..reps.max(1) {
        s.push(f()?);
    }
    Ok(Duration::from_secs_f64(s.median()))
}

/// Baseline: moves `total` bytes over one loopback TCP connection between two
/// threads, written and read in `chunk`-byte pieces. Returns the time from
/// the first write to the last byte received (connection set-up excluded).
pub fn loopback_tcp(total: usize, chunk: usize) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback listener")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> anyhow::Result<Instant> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; chunk];
        let mut left = total;
        while left > 0 {
            let want = left.min(buf.len());
            let n = s.read(&mut buf[..want])?;
            if n == 0 {
                bail!("loopback sender closed early");
            }
            left -= n;
        }
        let done = Instant::now();
        // Tell the sender we are done, like the depot's count reply.
        s.write_all(b"k")?;
        Ok(done)
    });
    let mut s = TcpStream::connect(addr).context("connect loopback")?;
    s.set_nodelay(true)?;
    let data = payload(chunk);
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        s.write_all(&data[..n])?;
        left -= n;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    let done = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("loopback receiver panicked"))??;
    Ok(done.saturating_duration_since(start))
}

/// Baseline: one in-memory copy of `src` into an already faulted-in buffer.
pub fn memcpy(src: &[u8], dst: &mut [u8]) -> Duration {
    let t = Instant::now();
    dst.copy_from_slice(std::hint::black_box(src));
    std::hint::black_box(&dst);
    t.elapsed()
}

/// Baseline: the cost of `Vec::clear` + `Vec::resize(n, 0)` on a buffer with
/// enough capacity, which the client's `load_into` does before every LOAD.
pub fn zero_fill(buf: &mut Vec<u8>, n: usize) -> Duration {
    let t = Instant::now();
    buf.clear();
    buf.resize(n, 0);
    std::hint::black_box(&buf);
    t.elapsed()
}

/// [`file_write_read`]'s measures.
#[derive(Debug, Clone, Copy)]
pub struct FileBaseline {
    /// Wall time of the write (the file's creation included).
    pub write: Duration,
    /// Wall time of the read back.
    pub read: Duration,
    /// Machine-wide CPU (`/proc/stat`, user + system) of the write and the
    /// read loops alone: not the file's creation, opening, removal or the
    /// comparison.
    pub cpu: Duration,
}

/// Baseline: write `data` to a new file in `dir` in 1 MiB pieces (no fsync,
/// like batch mode), then read it back into `readback` and compare. The
/// file is removed afterwards.
pub fn file_write_read(
    dir: &Path,
    data: &[u8],
    readback: &mut [u8],
) -> anyhow::Result<FileBaseline> {
    let path = dir.join("baseline.bin");
    let busy = |since: &SystemCpu| {
        let used = SystemCpu::now().since(since);
        used.user + used.system
    };
    let t = Instant::now();
    let write_cpu = {
        let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let before = SystemCpu::now();
        for piece in data.chunks(MIB) {
            f.write_all(piece)?;
        }
        busy(&before)
    };
    let write = t.elapsed();
    let t = Instant::now();
    let read_cpu = {
        let mut f = File::open(&path)?;
        let before = SystemCpu::now();
        for piece in readback[..data.len()].chunks_mut(MIB) {
            f.read_exact(piece)?;
        }
        busy(&before)
    };
    let read = t.elapsed();
    fs::remove_file(&path)?;
    if readback[..data.len()] != *data {
        bail!("page-cache baseline read back different bytes");
    }
    Ok(FileBaseline {
        write,
        read,
        cpu: write_cpu + read_cpu,
    })
}

/// Baseline: round-trip latency of `n` request/reply exchanges of `len`
/// bytes each way over one loopback TCP connection between two plain
/// threads with blocking sockets and `TCP_NODELAY` (the kernel's floor for
/// ALLOCATE and STATUS), the two ends placed as `at` says.
pub fn loopback_rtt_std(n: usize, len: usize, at: Placement) -> anyhow::Result<Samples> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback listener")?;
    let addr = listener.local_addr()?;
    let server_cpus = at.cpus.map(|c| c.1);
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        if let Some(cpus) = server_cpus {
            pin_current_thread(cpus);
        }
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; len];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    });
    if let Some((client, _)) = at.cpus {
        pin_current_thread(client);
    }
    let result = (|| -> anyhow::Result<Samples> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let msg = vec![b'x'; len];
        let mut back = vec![0u8; len];
        let mut samples = Samples::default();
        for i in 0..n + n / 10 {
            let t = Instant::now();
            s.write_all(&msg)?;
            s.read_exact(&mut back)?;
            if i >= n / 10 {
                samples.push(t.elapsed());
            }
        }
        Ok(samples)
    })();
    if at.cpus.is_some() {
        pin_current_thread(&all_cpus());
    }
    let samples = result?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))??;
    Ok(samples)
}

/// Baseline: the same round trip with the depot's and the client's shapes of
/// async runtime: an echo server on a 2-worker multi-thread tokio runtime,
/// the caller a task on the caller's runtime (the benchmark uses a
/// current-thread runtime, like a simple client).
pub async fn loopback_rtt_tokio(n: usize, len: usize, at: Placement) -> anyhow::Result<Samples> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Worker threads inherit the affinity of the thread that builds the runtime.
    if let Some((_, server)) = at.cpus {
        pin_current_thread(server);
    }
    // Unpinned again on every way out, an early error's included.
    struct Unpin(bool);
    impl Drop for Unpin {
        fn drop(&mut self) {
            if self.0 {
                pin_current_thread(&all_cpus());
            }
        }
    }
    let _unpin = Unpin(at.cpus.is_some());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match at.cpus {
        Some((client, _)) => pin_current_thread(client),
        None => true,
    };
    let server_rt = server_rt?;
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback listener")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    server_rt.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        if let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; len];
            while s.read_exact(&mut buf).await.is_ok() {
                if s.write_all(&buf).await.is_err() {
                    break;
                }
            }
        }
    });
    let result = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let msg = vec![b'x'; len];
        let mut back = vec![0u8; len];
        let mut samples = Samples::default();
        for i in 0..n + n / 10 {
            let t = Instant::now();
            s.write_all(&msg).await?;
            s.read_exact(&mut back).await?;
            if i >= n / 10 {
                samples.push(t.elapsed());
            }
        }
        anyhow::Ok(samples)
    }
    .await;
    server_rt.shutdown_background();
    result
}

/// A minimal blocking IBP client (std sockets, one connection) for STORE and
/// LOAD only. It reads LOAD data straight into the caller's buffer without
/// zero-filling it first, so comparing it with [`ibp_depot_client::IbpClient`]
/// separates the depot's cost from the async client's.
pub struct RawClient {
    conn: BufReader<TcpStream>,
}

impl RawClient {
    pub fn connect(addr: &str) -> anyhow::Result<RawClient> {
        let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        Ok(RawClient {
            conn: BufReader::with_capacity(64 * 1024, s),
        })
    }

    fn reply(&mut self, expect: Expect) -> anyhow::Result<Reply> {
        let mut line = Vec::with_capacity(128);
        self.conn.read_until(b'\n', &mut line)?;
        match Reply::parse(&line, expect)? {
            Reply::Error(e) | Reply::StatusError(e) => bail!("{e}"),
            r => Ok(r),
        }
    }

    fn send(&mut self, req: &Request) -> anyhow::Result<()> {
        self.conn.get_mut().write_all(req.encode().as_bytes())?;
        Ok(())
    }

    /// STORE `data` with a WRITE capability; returns the acknowledged count.
    pub fn store(&mut self, cap: &Capability, data: &[u8]) -> anyhow::Result<u64> {
        self.send(&Request::Store(Store {
            cap: cap.cap.clone(),
            size: data.len() as u64,
            timeout: 300,
        }))?;
        self.reply(Expect::Ok)?;
        self.conn.get_mut().write_all(data)?;
        match self.reply(Expect::Count)? {
            Reply::Count(n) => Ok(n),
            r => bail!("unexpected STORE reply {r:?}"),
        }
    }

    /// LOAD `buf.len()` bytes from offset 0 with a READ capability into `buf`.
    pub fn load(&mut self, cap: &Capability, buf: &mut [u8]) -> anyhow::Result<u64> {
        self.send(&Request::Load(Load {
            cap: cap.cap.clone(),
            offset: 0,
            size: buf.len() as u64,
            timeout: 300,
        }))?;
        match self.reply(Expect::Payload)? {
            Reply::Payload(n) if n == buf.len() as u64 => {
                self.conn.read_exact(buf)?;
                Ok(n)
            }
            r => bail!("unexpected LOAD reply {r:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let mut s = Samples::default();
        for ms in [4, 1, 3, 2] {
            s.push(Duration::from_millis(ms));
        }
        assert!((s.median() - 0.0025).abs() < 1e-12);
        assert!((s.min() - 0.001).abs() < 1e-12);
        assert!((s.max() - 0.004).abs() < 1e-12);
        assert!((s.percentile(90.0) - 0.0037).abs() < 1e-12);
    }

    #[test]
    fn payload_is_deterministic() {
        assert_eq!(payload(13), payload(13));
        assert_eq!(payload(13).len(), 13);
        assert_ne!(payload(16)[..8], payload(16)[8..]);
    }
}

// ---------------------------------------------------------------------------
// Measured child processes and files (the `lors_ops` benchmark)

/// How a child process ran: exit, output, wall time and the kernel's
/// accounting of it (`wait4`): peak resident set and CPU times.
#[derive(Debug, Clone)]
pub struct ChildRun {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From spawn to exit.
    pub wall: Duration,
    /// Peak resident set size, bytes: the largest `VmHWM` of
    /// `/proc/PID/status` sampled every 10 ms while the child ran (growth in
    /// its last 10 ms can be missed).
    pub max_rss: u64,
    /// `ru_maxrss` from `wait4`, bytes. Linux carries the parent's peak
    /// over the fork/exec into it, so it is at least this process's own
    /// peak: trust it only above that.
    pub ru_maxrss: u64,
    pub user: Duration,
    pub system: Duration,
}

impl ChildRun {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// User plus system CPU time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }
}

/// Runs `cmd` (stdin closed, stderr captured; stdout captured unless
/// `discard_stdout`, then `/dev/null`), killing it after `timeout`, and
/// returns its [`ChildRun`]. The child is reaped with `wait4`, so its CPU
/// times are its own (not its children's).
pub fn run_measured(
    mut cmd: Command,
    discard_stdout: bool,
    timeout: Duration,
) -> anyhow::Result<ChildRun> {
    use std::sync::{Arc, Mutex};
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    if discard_stdout {
        cmd.stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped());
    }
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("start {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    // The watchdog kills the child only while it is not reaped (checked
    // under the lock), so it never signals a reused pid.
    // It also samples the child's VmHWM.
    let exited = Arc::new(Mutex::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let exited = exited.clone();
        let deadline = start + timeout;
        std::thread::spawn(move || {
            let status = format!("/proc/{pid}/status");
            let mut hwm = 0u64;
            loop {
                if let Ok(s) = fs::read_to_string(&status) {
                    if let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        hwm = hwm.max(kib * 1024);
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left.min(Duration::from_millis(10))) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                        let done = exited.lock().unwrap_or_else(|e| e.into_inner());
                        if !*done {
                            // SAFETY: plain kill(2) of our own unreaped child.
                            unsafe {
                                libc::kill(pid, libc::SIGKILL);
                            }
                        }
                        return hwm;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return hwm,
                }
            }
        })
    };
    // Wait for the exit without reaping, then reap with the accounting.
    // SAFETY: waitid/wait4 on our own child with valid out-pointers.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waitid");
        }
    }
    let wall = start.elapsed();
    *exited.lock().unwrap_or_else(|e| e.into_inner()) = true;
    let _ = tx.send(());
    let hwm = watchdog.join().unwrap_or(0);
    let mut status: libc::c_int = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    // The child is reaped: std must not wait for it again.
    std::mem::forget(child);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(ChildRun {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout,
        stderr,
        wall,
        max_rss: hwm,
        ru_maxrss: ru.ru_maxrss as u64 * 1024,
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
    })
}

/// Writes `len` random bytes to `path` (a SplitMix64 stream seeded from
/// the OS, so every run has different data), in 8 MiB chunks.
pub fn random_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut seed = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("read /dev/urandom")?;
    let mut state = u64::from_le_bytes(seed);
    let mut f = std::io::BufWriter::with_capacity(
        8 << 20,
        File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut chunk = vec![0u8; 8 << 20];
    let mut left = len;
    while left > 0 {
        for w in chunk.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            w.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Whether two files hold the same bytes (compared in 8 MiB chunks).
pub fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let mut ba = vec![0u8; 8 << 20];
    let mut bb = vec![0u8; 8 << 20];
    loop {
        let n = read_up_to(&mut fa, &mut ba)?;
        let m = read_up_to(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
