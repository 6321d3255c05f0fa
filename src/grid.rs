//! A whole storage grid of real processes on loopback, for the `lors`
//! integration tests, end-to-end fault tests and benchmarks.
//!
//! [`Grid::start`] runs, each from its real binary and in its own directory
//! under one temporary grid directory:
//!
//! - the **online CA** (`online-ca init`, then `online-ca serve` with the
//!   local users file), VO `vo1` with its attribute authority;
//! - the **L-Bone** (`lbone init`, `lbone serve`) polling depots every
//!   [`GridOptions::lbone_poll_interval`];
//! - the **metadata manager** (`metadata-manager init`, `serve`);
//! - [`GridOptions::depots`] **depots** (`ibp-depot serve --config`), with a
//!   legacy port, a TLS port (unless [`GridOptions::legacy_only`]) and a
//!   crypto-level data port (with [`GridOptions::data_port`]), serving `vo1`.
//!
//! Every daemon listens on `127.0.0.1:0`; the addresses come from the
//! `listening on` lines of its stdout. Its stderr goes to `stderr.log` and
//! its stdout to `stdout.log` in its directory; a daemon that fails to start
//! makes [`Grid::start`] fail with the tail of its log.
//!
//! **PKI.** The CA and the VO's attribute authority are the online CA's own
//! (`online-ca init`); the trust directory `trust/` is the CA's `trust/`
//! plus the L-Bone's `lbone.pub` in `trust/lbone/` and the metadata
//! manager's `metadata.pub` in `trust/metadata/`, as docs/lbone.md and
//! docs/metadata-manager.md say, so depots accept L-Bone grants and MDM
//! tickets. The L-Bone, the metadata manager and every depot get their own
//! server certificate for `localhost`/`127.0.0.1` from that CA (serverAuth
//! and clientAuth, so a depot can be the source of a secure COPY). Every
//! service and every client use the same `trust/`.
//!
//! **Users** log in for real: each user of [`GridOptions::users`] is made a
//! member of `vo1` with `online-ca admin member add` (the
//! [`GridOptions::admins`], by default alice, also in group `admins`, the
//! default `admin_group` of both the L-Bone and the metadata manager, so
//! they are VO admins at both), and gets its proxy with
//! `lors login --method local --password-stdin` against the running CA.
//! One shortcut: the users file entries (`name:<argon2id PHC hash>`) are
//! written by the harness with cheap argon2id parameters (64 KiB, one pass)
//! instead of `online-ca admin user add`, whose default parameters (19 MiB,
//! two passes) take seconds per hash in a debug build; the CA verifies them
//! like any other (the parameters travel in the PHC string).
//!
//! **Depots** are registered with the L-Bone by the first admin through
//! `lbone admin register` (the VO admin's way), with a vo1 policy of
//! `depot_hard_size` bytes and 30 days, and the grid waits until the L-Bone
//! reports all of them `up`.
//!
//! **Binaries** are found in the cargo target directory (`CARGO_TARGET_DIR`,
//! relative to the workspace root; else the target directory of the running
//! test executable; else `<workspace>/target`), profile `debug` or
//! `release` ([`GridOptions::release`]), and built with
//! `cargo build -p <pkg> --bin <name> [--release]` when missing or older
//! than their sources (the benches' staleness rule: newest mtime under the
//! package's and the shared libraries' sources and `Cargo.lock`).
//! `IBP_GRID_BIN_DIR` names a directory holding all five binaries to use as
//! they are. A failed build falls back to existing (stale) binaries with a
//! warning; missing binaries are an error, never a skip.
//!
//! **Files.** The grid directory holds every party's secrets (the CA's
//! key, users' proxies, the metadata manager's database with every file's
//! capabilities), so it is private whatever the caller's umask: the grid
//! directory and every directory the harness makes are created 0700, every
//! file it writes (configurations, keys, users file, copied trust files,
//! logs) 0600, and every process it starts (daemons, `init`s, `lors`)
//! runs with umask 077, so what they create (databases, data, logs) is
//! owner-only too.
//!
//! **Processes** are killed (SIGKILL) and reaped when the [`Grid`] is
//! dropped; they are also spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so they die with the test process even if
//! it is killed. The grid directory is removed on drop unless
//! `IBP_GRID_KEEP` (or `KEEP`) is set to a non-empty value other than `0`.
//!
//! Every wait is bounded in time.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::run_bounded;

/// The VO of the grid.
pub const VO: &str = "vo1";
/// `O=` of the grid's certificates.
pub const ORG: &str = "Test Grid";
/// The admin group (the L-Bone's and the metadata manager's default).
pub const ADMIN_GROUP: &str = "admins";

/// Bound on a daemon printing its `listening on` lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one CLI invocation (init, admin, login, register).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on building the binaries.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
/// Bound on the L-Bone seeing the depots during [`Grid::start`].
const LBONE_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of a log shown in an error.
const LOG_TAIL: usize = 40;

/// What to start.
#[derive(Debug, Clone)]
pub struct GridOptions {
    /// Number of depots (default 3).
    pub depots: usize,
    /// Bytes of the one resource of each depot (HARD and total), also the
    /// vo1 `max_size` at the depot and in the L-Bone policy (default 2 GiB).
    pub depot_hard_size: u64,
    /// Depots without a TLS port (plain IBP only; registered without one).
    pub legacy_only: bool,
    /// Indices of depots whose legacy port is switched off (`legacy =
    /// false`): they serve only the TLS port, which the L-Bone polls. Their
    /// [`Depot::legacy_addr`] is their TLS address.
    pub legacy_off: Vec<usize>,
    /// Depots with a crypto-level data port (`data_listen`).
    pub data_port: bool,
    /// Users of vo1 (default alice, bob, carol).
    pub users: Vec<String>,
    /// Users who are also in the `admins` group of vo1: VO admins at the
    /// L-Bone and the metadata manager (default alice). The first one
    /// registers the depots.
    pub admins: Vec<String>,
    /// Release binaries (benchmarks) instead of debug ones (tests).
    pub release: bool,
    /// The L-Bone's `poll_interval` (default 500 ms); `missed_polls_down`
    /// is 2 and `poll_timeout` 2 s.
    pub lbone_poll_interval: Duration,
    /// Per-depot overrides of [`GridOptions::depot_hard_size`] (index =
    /// depot): a depot with a small resource fills up.
    pub depot_hard_sizes: Vec<u64>,
    /// Where to make the grid directory (default: a new temporary
    /// directory). It must not exist or be empty.
    pub dir: Option<PathBuf>,
}

impl GridOptions {
    /// The hard size of depot `i`.
    pub fn hard_size(&self, i: usize) -> u64 {
        self.depot_hard_sizes
            .get(i)
            .copied()
            .unwrap_or(self.depot_hard_size)
    }
}

/// The HTTPS daemons of a grid (for [`Grid::restart_with_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    OnlineCa,
    Lbone,
    MetadataManager,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            depots: 3,
            depot_hard_size: 2 << 30,
            legacy_only: false,
            legacy_off: Vec::new(),
            data_port: false,
            users: vec!["alice".into(), "bob".into(), "carol".into()],
            admins: vec!["alice".into()],
            release: false,
            lbone_poll_interval: Duration::from_millis(500),
            depot_hard_sizes: Vec::new(),
            dir: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Binaries

/// The five binaries a grid runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub depot: PathBuf,
    pub lbone: PathBuf,
    pub mdm: PathBuf,
    pub online_ca: PathBuf,
    pub lors: PathBuf,
}

/// (package, binary, package directory).
const BINS: [(&str, &str, &str); 5] = [
    ("ibp-depot", "ibp-depot", "depot"),
    ("lbone", "lbone", "lbone"),
    ("metadata-manager", "metadata-manager", "metadata-manager"),
    ("online-ca", "online-ca", "online-ca"),
    ("lors", "lors", "lors"),
];

/// Sources every binary is built from besides its own package.
const SHARED_SOURCES: [&str; 12] = [
    "Cargo.lock",
    "Cargo.toml",
    "libs/proto/src",
    "libs/proto/Cargo.toml",
    "libs/auth/src",
    "libs/auth/Cargo.toml",
    "libs/https/src",
    "libs/https/Cargo.toml",
    "libs/service/src",
    "libs/service/Cargo.toml",
    "libs/exnode/src",
    "libs/exnode/Cargo.toml",
];

/// The workspace root (this package's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative paths from the
/// workspace root); else the one holding the running executable when it is
/// a test or bench (`<target>/<profile>/deps/<exe>`) or a binary of the
/// workspace (`<target>/<profile>/ibp-grid`); else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            d
        } else {
            workspace_root().join(d)
        };
    }
    if let Ok(exe) = std::env::current_exe() {
        let deps = exe.parent();
        if deps.and_then(Path::file_name).and_then(|n| n.to_str()) == Some("deps") {
            if let Some(target) = deps.and_then(Path::parent).and_then(Path::parent) {
                return target.to_path_buf();
            }
        }
        let profile = deps.and_then(Path::file_name).and_then(|n| n.to_str());
        if matches!(profile, Some("debug" | "release")) {
            if let Some(target) = deps.and_then(Path::parent) {
                return target.to_path_buf();
            }
        }
    }
    workspace_root().join("target")
}

/// Raises `newest` to the newest modification time under `path`.
pub fn newest_mtime(path: &Path, newest: &mut SystemTime) {
    let Ok(meta) = fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                newest_mtime(&e.path(), newest);
            }
        }
    } else if let Ok(m) = meta.modified() {
        if m > *newest {
            *newest = m;
        }
    }
}

/// Whether `bin` is missing or older than the sources of `pkg_dir`.
fn is_stale(root: &Path, bin: &Path, pkg_dir: &str) -> bool {
    let Some(built) = fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return true;
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut sources = vec![format!("{pkg_dir}/src"), format!("{pkg_dir}/Cargo.toml")];
    if pkg_dir == "lors" {
        // lors links the depot's client library.
        sources.extend(["depot/src".to_owned(), "depot/Cargo.toml".to_owned()]);
    }
    for s in sources.iter().map(String::as_str).chain(SHARED_SOURCES) {
        newest_mtime(&root.join(s), &mut newest);
    }
    built < newest
}

/// The grid's binaries for the profile, built first when missing or stale
/// (once per process and profile; later calls return the same paths).
pub fn binaries(release: bool) -> anyhow::Result<Binaries> {
    static CACHE: Mutex<[Option<Binaries>; 2]> = Mutex::new([None, None]);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = &cache[release as usize] {
        return Ok(b.clone());
    }
    let b = find_binaries(release)?;
    cache[release as usize] = Some(b.clone());
    Ok(b)
}

fn find_binaries(release: bool) -> anyhow::Result<Binaries> {
    let paths: Vec<PathBuf>;
    if let Some(dir) = std::env::var_os("IBP_GRID_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        paths = BINS.iter().map(|(_, bin, _)| dir.join(bin)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            bail!("IBP_GRID_BIN_DIR: {} does not exist", missing.display());
        }
    } else {
        let root = workspace_root();
        let target = target_dir();
        let dir = target.join(if release { "release" } else { "debug" });
        paths = BINS.iter().map(|(_, bin, _)| dir.join(bin)).collect();
        let stale = BINS
            .iter()
            .zip(&paths)
            .any(|((_, _, pkg_dir), path)| is_stale(&root, path, pkg_dir));
        if stale {
            // All five at once, always: one feature unification, so
            // successive builds never recompile dependencies with other
            // features.
            let all: Vec<(&str, &str)> = BINS.iter().map(|(p, b, _)| (*p, *b)).collect();
            let started = SystemTime::now();
            let built = build(&root, &target, &all, release);
            if built.is_ok() {
                // Cargo leaves an up-to-date binary untouched: record that it
                // was checked now (as of the start of the build, so a source
                // saved during the build still counts as newer).
                for p in &paths {
                    if let Ok(f) = fs::File::open(p) {
                        let _ = f.set_modified(started);
                    }
                }
            }
            if let Err(e) = built {
                match paths.iter().find(|p| !p.is_file()) {
                    Some(missing) => bail!(
                        "{} does not exist and could not be built: {e:#}",
                        missing.display()
                    ),
                    None => eprintln!("ibp-grid: warning: using existing binaries: {e:#}"),
                }
            }
        }
    }
    let mut it = paths.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(Binaries {
        depot: next(),
        lbone: next(),
        mdm: next(),
        online_ca: next(),
        lors: next(),
    })
}

fn build(root: &Path, target: &Path, bins: &[(&str, &str)], release: bool) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // What cargo set for the running test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
    // ...) must not reach the build: build scripts watch some of those and
    // would be rerun here and again in the next ordinary build.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k == "OUT_DIR"
            || k == "RUST_RECURSION_COUNT"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(root)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if release {
        cmd.arg("--release");
    }
    let mut what = String::new();
    for (pkg, bin) in bins {
        cmd.args(["-p", pkg, "--bin", bin]);
        what.push_str(&format!(" -p {pkg} --bin {bin}"));
    }
    let what = format!(
        "cargo build{}{what}",
        if release { " --release" } else { "" }
    );
    eprintln!(
        "ibp-grid: a binary is missing or stale: {what} (CARGO_TARGET_DIR={})",
        target.display()
    );
    let t = Instant::now();
    let out = run_bounded(cmd, BUILD_TIMEOUT).with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}):\n{}", out.status, tail(&err, LOG_TAIL));
    }
    eprintln!("ibp-grid: built in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------
// Processes

type SpawnRequest = (Command, Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, the child
/// asking the kernel for SIGKILL when that thread (so the process) dies.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(111);
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("ibp-grid-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            eprintln!("ibp-grid: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn file_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => tail(&String::from_utf8_lossy(&b), LOG_TAIL),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A daemon process: killed (SIGKILL) and reaped on drop.
struct Proc {
    what: String,
    child: Child,
    stderr_log: PathBuf,
    // In a mutex so a Grid is Sync (tests share it between threads).
    lines: Mutex<Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout lines sent to [`Proc::lines`] and appended
    /// to `dir/stdout.log`, stderr appended to `dir/stderr.log`.
    fn spawn(what: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
        let stderr_log = dir.join("stderr.log");
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(PRIVATE_FILE)
                .open(p)
                .with_context(|| format!("open {}", p.display()))
        };
        let mut err = open(&stderr_log)?;
        let mut out_log = open(&dir.join("stdout.log"))?;
        let _ = writeln!(err, "=== ibp-grid: starting {what} ===");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .current_dir(dir);
        let mut child = spawn_tied(cmd).with_context(|| format!("start {what}"))?;
        let stdout = child.stdout.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out_log, "{line}");
                let _ = tx.send(line);
            }
        });
        Ok(Proc {
            what: what.to_owned(),
            child,
            stderr_log,
            lines: Mutex::new(lines),
        })
    }

    /// Waits until stdout has printed a line starting with each of
    /// `prefixes`; returns the rest of each line, in the order given. On
    /// timeout or exit the process is killed and the error shows its log.
    fn wait_for(&mut self, prefixes: &[&str], deadline: Instant) -> anyhow::Result<Vec<String>> {
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        let mut seen = Vec::new();
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self
                .lines
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(left);
            let why = match got {
                Ok(line) => {
                    for (p, slot) in prefixes.iter().zip(found.iter_mut()) {
                        if let Some(rest) = line.strip_prefix(p) {
                            *slot = Some(rest.trim().to_owned());
                        }
                    }
                    seen.push(line);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    format!("no {prefixes:?} line within the start timeout")
                }
                Err(RecvTimeoutError::Disconnected) => "its stdout closed".to_owned(),
            };
            let status = self.kill();
            bail!(
                "{} did not start: {why} (stdout so far {seen:?}, exit {status}); stderr tail \
                 ({}; IBP_GRID_KEEP=1 keeps the grid directory):\n{}",
                self.what,
                self.stderr_log.display(),
                file_tail(&self.stderr_log)
            );
        }
        Ok(found.into_iter().flatten().collect())
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap; describes how it ended.
    fn kill(&mut self) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a one-shot command within [`CLI_TIMEOUT`] with `input` on stdin;
/// returns its stdout, or an error with its output if it fails.
fn run_cli(what: &str, mut cmd: Command, input: Option<&str>) -> anyhow::Result<String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = spawn_tied(cmd).with_context(|| format!("start {what}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut b);
            }
            String::from_utf8_lossy(&b).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status: Option<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => bail!("{what} failed ({s}):\nstdout: {out}\nstderr: {err}"),
        None => {
            bail!("{what} did not finish within {CLI_TIMEOUT:?}:\nstdout: {out}\nstderr: {err}")
        }
    }
}

/// A command with the variables `lors` and the services read from the
/// developer's environment removed.
fn clean_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    // SAFETY: umask(2) is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("LORS_") || k.starts_with("X509_") || k == "LBONE_URL" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

// ---------------------------------------------------------------------------
// Files

/// Mode of every directory the harness makes.
const PRIVATE_DIR: u32 = 0o700;
/// Mode of every file the harness writes.
const PRIVATE_FILE: u32 = 0o600;

/// Creates `path` and its missing parents 0700 (whatever the umask).
fn private_dir(path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .with_context(|| format!("create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes `path` (its directory made private first), created 0600 and
/// kept so (never readable by others, not even for a moment).
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        private_dir(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A key, password hashes: the same as [`write_file`] (every file the
/// harness writes is owner-only); the name says why it matters.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    write_file(path, text)
}

/// Copies a file, the copy 0600 (`fs::copy` would copy the mode).
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let data = fs::read(from).with_context(|| format!("read {}", from.display()))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    f.write_all(&data)
        .with_context(|| format!("write {}", to.display()))?;
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("chmod {}", to.display()))
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    private_dir(to)?;
    for e in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            copy_private(&src, &dst)?;
        }
    }
    Ok(())
}

/// A TOML string for a path.
fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The online CA's CA, to issue the services' certificates.
struct Issuer {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Issuer {
    fn load(ca_dir: &Path) -> anyhow::Result<Issuer> {
        let cert_pem = fs::read_to_string(ca_dir.join("ca.pem")).context("read ca.pem")?;
        let key_pem = fs::read_to_string(ca_dir.join("ca.key")).context("read ca.key")?;
        let key = rcgen::KeyPair::from_pem(&key_pem).context("parse ca.key")?;
        let cert = rcgen::CertificateParams::from_ca_cert_pem(&cert_pem)
            .context("parse ca.pem")?
            .self_signed(&key)
            .context("rebuild the CA certificate")?;
        Ok(Issuer { cert, key })
    }

    /// `dir/server.pem` and `dir/server.key` for localhost and 127.0.0.1,
    /// serverAuth and clientAuth.
    fn server_cert(&self, cn: &str, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::OrganizationName, ORG);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(3600)).into();
        p.not_after = (now + Duration::from_secs(30 * 86_400)).into();
        let key = rcgen::KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        write_file(&cert_path, &cert.pem())?;
        // Created 0600 (never world-readable, even for a moment): the
        // daemons refuse a key that group or others may read.
        ibp_auth::keys::write_secret(&key_path, key.serialize_pem().as_bytes())?;
        Ok((cert_path, key_path))
    }
}

/// A users-file line `name:<argon2id PHC>` with cheap parameters.
fn users_line(name: &str, password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64, 1, 1, None).map_err(|e| anyhow!("argon2: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow!("{e}"))?;
    let hash = a
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("argon2: {e}"))?;
    Ok(format!("{name}:{hash}\n"))
}

// ---------------------------------------------------------------------------
// The grid

/// A user of vo1 with a proxy from a real `lors login`.
#[derive(Debug, Clone)]
pub struct GridUser {
    pub name: String,
    /// The VO ID the online CA gave the user.
    pub vo_id: String,
    /// In group `admins`: a VO admin.
    pub admin: bool,
    /// The local password at the online CA.
    pub password: String,
    /// The proxy file (`X509_USER_PROXY`).
    pub proxy: PathBuf,
    /// The user's directory under the grid directory.
    pub dir: PathBuf,
}

/// One running (or killed) depot.
pub struct Depot {
    /// Its name at the L-Bone (`depot-<i>`).
    pub name: String,
    /// Whether it serves the legacy port (see [`GridOptions::legacy_off`]).
    pub legacy: bool,
    /// `127.0.0.1:PORT` of the legacy (plain IBP) port; for a depot without
    /// one, its TLS address (what it registers as its port).
    pub legacy_addr: String,
    /// `127.0.0.1:PORT` of the secure port, unless `legacy_only`.
    pub tls_addr: Option<String>,
    /// `127.0.0.1:PORT` of the crypto-level data port, with `data_port`.
    pub data_addr: Option<String>,
    /// The depot's directory (configuration, certificate, logs).
    pub dir: PathBuf,
    /// The resource's data directory.
    pub data_dir: PathBuf,
    /// Its configuration (ports fixed after the first start).
    pub config: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    proc: Option<Proc>,
}

impl Depot {
    /// The address grants name: the TLS port if there is one, else legacy.
    pub fn address(&self) -> &str {
        self.tls_addr.as_deref().unwrap_or(&self.legacy_addr)
    }

    /// Whether the process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    fn port(&self) -> u16 {
        port_of(&self.legacy_addr)
    }
}

/// One HTTPS daemon (online CA, L-Bone, metadata manager).
struct Service {
    what: &'static str,
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    addr: String,
    /// Extra environment of the process (set for the next restart).
    env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Service {
    fn spawn(what: &'static str, bin: &Path, dir: &Path, config: &Path) -> anyhow::Result<Service> {
        let proc = Proc::spawn(what, serve_command(bin, config), dir)?;
        Ok(Service {
            what,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            addr: String::new(),
            env: Vec::new(),
            proc: Some(proc),
        })
    }

    /// Waits for `listening on`, then fixes the port in the configuration
    /// so a restart binds the same one.
    fn wait(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let proc = self.proc.as_mut().context("not started")?;
        let addr = proc.wait_for(&["listening on "], deadline)?.remove(0);
        let text = fs::read_to_string(&self.config)?;
        let text = text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{addr}\""),
            1,
        );
        write_file(&self.config, &text)?;
        self.addr = addr;
        Ok(())
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut proc = start_retrying_bind(self.what, &self.dir, &["listening on "], || {
            let mut c = serve_command(&self.bin, &self.config);
            c.envs(self.env.iter().map(|(k, v)| (k, v)));
            c
        })?;
        let addr = proc.1.remove(0);
        if addr != self.addr {
            bail!("{} came back on {addr}, not {}", self.what, self.addr);
        }
        self.proc = Some(proc.0);
        Ok(())
    }
}

fn serve_command(bin: &Path, config: &Path) -> Command {
    let mut cmd = clean_command(bin);
    cmd.arg("serve").arg("--config").arg(config);
    cmd
}

/// Starts a daemon that binds fixed ports, retrying a few times while the
/// ports of its killed predecessor are still busy.
fn start_retrying_bind(
    what: &str,
    dir: &Path,
    prefixes: &[&str],
    command: impl Fn() -> Command,
) -> anyhow::Result<(Proc, Vec<String>)> {
    let mut last = None;
    for _ in 0..20 {
        let mut proc = Proc::spawn(what, command(), dir)?;
        match proc.wait_for(prefixes, Instant::now() + START_TIMEOUT) {
            Ok(lines) => return Ok((proc, lines)),
            Err(e) if format!("{e:#}").contains("in use") => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{what} did not start")))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Durations of the steps of [`Grid::start`].
struct Steps {
    last: Instant,
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, what: &str) {
        let now = Instant::now();
        self.done.push((what.to_owned(), now - self.last));
        self.last = now;
    }
}

/// The directory of a grid; removed on drop unless kept.
struct GridDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for GridDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("ibp-grid: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn keep_requested() -> bool {
    ["IBP_GRID_KEEP", "KEEP"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// A running grid. Dropping it kills every process (SIGKILL), waits for
/// them and removes the grid directory (unless `IBP_GRID_KEEP` is set).
pub struct Grid {
    /// The grid directory.
    pub dir: PathBuf,
    /// The trust directory every service and client uses.
    pub trust_dir: PathBuf,
    /// `https://127.0.0.1:PORT` of the L-Bone.
    pub lbone_url: String,
    /// `https://127.0.0.1:PORT` of the metadata manager.
    pub mdm_url: String,
    /// `https://127.0.0.1:PORT` of the online CA.
    pub ca_url: String,
    pub depots: Vec<Depot>,
    pub users: Vec<GridUser>,
    pub bins: Binaries,
    /// How long [`Grid::start`] took (binaries found or built excluded).
    pub startup: Duration,
    /// What [`Grid::start`] did, step by step, with how long each took.
    pub steps: Vec<(String, Duration)>,
    /// The online CA's configuration (for `online-ca admin --config`).
    pub ca_config: PathBuf,
    opts: GridOptions,
    tls: rustls::ClientConfig,
    ca: Service,
    lbone: Service,
    mdm: Service,
    // Last: removed after the processes are gone.
    _dir: GridDir,
}

impl Grid {
    /// Starts a grid (see the module documentation) and waits until the
    /// L-Bone reports every depot up.
    pub fn start(opts: GridOptions) -> anyhow::Result<Grid> {
        if opts.legacy_only && opts.data_port {
            bail!("a data port needs the TLS port: legacy_only and data_port exclude each other");
        }
        if opts.legacy_only && !opts.legacy_off.is_empty() {
            bail!("a depot without its legacy port needs the TLS port: legacy_only and legacy_off exclude each other");
        }
        if let Some(i) = opts.legacy_off.iter().find(|i| **i >= opts.depots) {
            bail!("legacy_off names depot {i} of {}", opts.depots);
        }
        for (i, u) in opts.users.iter().enumerate() {
            if u.is_empty()
                || !u
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                bail!("bad user name {u:?}");
            }
            if opts.users[..i].contains(u) {
                bail!("user {u:?} given twice");
            }
        }
        if let Some(a) = opts.admins.iter().find(|a| !opts.users.contains(a)) {
            bail!("admin {a:?} is not among the users");
        }
        if opts.depots > 0 && opts.admins.is_empty() {
            bail!("registering depots needs an admin");
        }
        let bins = binaries(opts.release)?;
        let t0 = Instant::now();
        let mut steps = Steps::new();
        let path = match &opts.dir {
            Some(d) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(PRIVATE_DIR)
                    .create(d)
                    .with_context(|| format!("create {}", d.display()))?;
                if fs::read_dir(d)?.next().is_some() {
                    bail!(
                        "{} is not empty: give a new directory for the grid",
                        d.display()
                    );
                }
                fs::canonicalize(d)?
            }
            None => tempfile::Builder::new()
                .prefix("ibp-grid-")
                .permissions(fs::Permissions::from_mode(PRIVATE_DIR))
                .tempdir()
                .context("create the grid directory")?
                .keep(),
        };
        // Whatever the umask and whoever made it.
        fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_DIR))
            .with_context(|| format!("chmod {}", path.display()))?;
        let dir_guard = GridDir {
            path: path.clone(),
            keep: keep_requested(),
        };
        let dir = path;
        let trust_dir = dir.join("trust");
        let (ca_dir, lbone_dir, mdm_dir) = (dir.join("ca"), dir.join("lbone"), dir.join("mdm"));

        // 1. The three `init`s, in parallel.
        let inits: Vec<(&str, Command)> = vec![
            ("online-ca init", {
                let mut c = clean_command(&bins.online_ca);
                c.arg("init")
                    .arg("--dir")
                    .arg(&ca_dir)
                    .args(["--org", ORG, "--vo", VO])
                    .args(["--hostname", "localhost", "--hostname", "127.0.0.1"]);
                c
            }),
            ("lbone init", {
                let mut c = clean_command(&bins.lbone);
                c.arg("init").arg("--dir").arg(&lbone_dir);
                c
            }),
            ("metadata-manager init", {
                let mut c = clean_command(&bins.mdm);
                c.arg("init").arg("--dir").arg(&mdm_dir);
                c
            }),
        ];
        std::thread::scope(|s| {
            let handles: Vec<_> = inits
                .into_iter()
                .map(|(what, cmd)| s.spawn(move || run_cli(what, cmd, None)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("init panicked"))))
                .collect::<anyhow::Result<Vec<_>>>()
        })?;

        steps.mark("online-ca init (CA, VO vo1 and its attribute authority), lbone init, metadata-manager init");

        // 2. Trust directory and certificates.
        copy_tree(&ca_dir.join("trust"), &trust_dir)?;
        for (from, to) in [
            (
                lbone_dir.join("lbone.pub"),
                trust_dir.join("lbone/lbone.pub"),
            ),
            (
                mdm_dir.join("metadata.pub"),
                trust_dir.join("metadata/metadata.pub"),
            ),
        ] {
            private_dir(to.parent().unwrap_or(&trust_dir))?;
            copy_private(&from, &to)?;
        }
        let issuer = Issuer::load(&ca_dir)?;

        // 3. Configurations.
        let ca_config = ca_dir.join("config.toml");
        write_file(
            &ca_config,
            &format!(
                "listen = \"127.0.0.1:0\"\ndir = {}\norg = {ORG:?}\n\n[local]\nusers_file = \"users\"\n",
                toml_path(&ca_dir)
            ),
        )?;
        let mut users = Vec::new();
        let mut users_file = String::new();
        for name in &opts.users {
            let udir = dir.join("users").join(name);
            private_dir(&udir)?;
            let password = format!("{name}-grid-password");
            users_file.push_str(&users_line(name, &password)?);
            users.push(GridUser {
                name: name.clone(),
                vo_id: String::new(),
                admin: opts.admins.contains(name),
                password,
                proxy: udir.join("x509up"),
                dir: udir,
            });
        }
        write_secret(&ca_dir.join("users"), &users_file)?;
        write_file(&dir.join("lors.toml"), "")?;

        let (cert, key) = issuer.server_cert("lbone", &lbone_dir)?;
        let lbone_config = lbone_dir.join("lbone.toml");
        write_file(
            &lbone_config,
            &format!(
                "listen = \"127.0.0.1:0\"\nserver_cert = {}\nserver_key = {}\ntrust_dir = {}\nsigning_key = \"lbone.key\"\npoll_interval = \"{}ms\"\npoll_timeout = \"2s\"\nmissed_polls_down = 2\ngrant_lifetime = \"10m\"\nadmin_group = \"{ADMIN_GROUP}\"\n",
                toml_path(&cert),
                toml_path(&key),
                toml_path(&trust_dir),
                opts.lbone_poll_interval.as_millis().max(100),
            ),
        )?;
        let (cert, key) = issuer.server_cert("metadata-manager", &mdm_dir)?;
        let mdm_config = mdm_dir.join("metadata.toml");
        write_file(
            &mdm_config,
            &format!(
                "listen = \"127.0.0.1:0\"\nserver_cert = {}\nserver_key = {}\ntrust_dir = {}\nsigning_key = \"metadata.key\"\nticket_lifetime = \"10m\"\nadmin_group = \"{ADMIN_GROUP}\"\n",
                toml_path(&cert),
                toml_path(&key),
                toml_path(&trust_dir),
            ),
        )?;

        let mut depots = Vec::new();
        for i in 0..opts.depots {
            let name = format!("depot-{i}");
            let ddir = dir.join(&name);
            let data_dir = ddir.join("data");
            private_dir(&data_dir)?;
            // Every client of a local grid comes from 127.0.0.1, so the
            // legacy port's per-address share is its whole budget: half of
            // each resource, for LoRS tools and `--security legacy` runs.
            let mut text = "listen = \"127.0.0.1:0\"\nhostname = \"127.0.0.1\"\nsync = \"batch\"\n\
                 legacy_max_size = \"50%\"\nlegacy_per_address_bytes = \"50%\"\n"
                .to_owned();
            let legacy = !opts.legacy_off.contains(&i);
            if !legacy {
                text.push_str("legacy = false\n");
            }
            if !opts.legacy_only {
                let (cert, key) = issuer.server_cert(&name, &ddir)?;
                text.push_str(&format!(
                    "tls_listen = \"127.0.0.1:0\"\ntls_cert = {}\ntls_key = {}\ntrust_dir = {}\n",
                    toml_path(&cert),
                    toml_path(&key),
                    toml_path(&trust_dir)
                ));
                if opts.data_port {
                    text.push_str("data_listen = \"127.0.0.1:0\"\n");
                }
            }
            text.push_str(&format!(
                "\n[[resource]]\nrid = 0\ndata = {}\nhard_size = {}\nmax_duration = \"30d\"\n",
                toml_path(&data_dir),
                opts.hard_size(i)
            ));
            if !opts.legacy_only {
                text.push_str(&format!(
                    "\n[[vo]]\nname = \"{VO}\"\nmax_size = {}\nmax_duration = \"30d\"\n",
                    opts.hard_size(i)
                ));
            }
            let config = ddir.join("depot.toml");
            write_file(&config, &text)?;
            depots.push(Depot {
                name,
                legacy,
                legacy_addr: String::new(),
                tls_addr: None,
                data_addr: None,
                log: ddir.join("stderr.log"),
                dir: ddir,
                data_dir,
                config,
                proc: None,
            });
        }

        steps.mark(&format!(
            "trust directory, server certificates and configurations ({} users, {} depots)",
            users.len(),
            depots.len()
        ));

        // 4. Every daemon, at once.
        let mut ca = Service::spawn("online-ca", &bins.online_ca, &ca_dir, &ca_config)?;
        let mut lbone = Service::spawn("lbone", &bins.lbone, &lbone_dir, &lbone_config)?;
        let mut mdm = Service::spawn("metadata-manager", &bins.mdm, &mdm_dir, &mdm_config)?;
        for d in &mut depots {
            d.proc = Some(Proc::spawn(
                &format!("ibp-depot {}", d.name),
                depot_command(&bins.depot, &d.config),
                &d.dir,
            )?);
        }

        // 5. VO membership (the CA's database; safe while it runs).
        for u in &mut users {
            let mut c = clean_command(&bins.online_ca);
            c.arg("admin")
                .arg("--config")
                .arg(&ca_config)
                .args(["member", "add", "--vo", VO, "--identity"])
                .arg(format!("local:{}", u.name));
            if u.admin {
                c.args(["--group", ADMIN_GROUP]);
            }
            let out = run_cli(&format!("online-ca admin member add {}", u.name), c, None)?;
            u.vo_id = out
                .lines()
                .last()
                .and_then(|l| l.split_whitespace().last())
                .context("no VO ID in the output of member add")?
                .to_owned();
        }

        steps.mark(&format!(
            "VO members added at the online CA: {}",
            users
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));

        // 6. Logins (in parallel) while the other daemons come up.
        let deadline = Instant::now() + START_TIMEOUT;
        ca.wait(deadline)?;
        steps.mark(&format!("online CA listening on https://{}", ca.addr));
        let ca_url = ca.url();
        let login_env = LoginEnv {
            lors: bins.lors.clone(),
            ca_url: ca_url.clone(),
            trust_dir: trust_dir.clone(),
            dir: dir.clone(),
        };
        std::thread::scope(|s| -> anyhow::Result<()> {
            let logins: Vec<_> = users
                .iter()
                .map(|u| {
                    let env = &login_env;
                    s.spawn(move || env.login(u))
                })
                .collect();
            let started = (|| -> anyhow::Result<()> {
                lbone.wait(deadline)?;
                mdm.wait(deadline)?;
                for d in &mut depots {
                    let p = d.proc.as_mut().context("depot not started")?;
                    let addrs = p.wait_for(&depot_prefixes(&opts), deadline)?;
                    set_depot_addrs(d, &addrs, &opts)?;
                }
                Ok(())
            })();
            let logged_in: anyhow::Result<Vec<()>> = logins
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("login panicked"))))
                .collect();
            started?;
            logged_in.map(|_| ())
        })?;
        steps.mark(&format!(
            "L-Bone, metadata manager and {} depots listening; users logged in (lors login --method local)",
            depots.len()
        ));
        let mut grid = Grid {
            tls: client_tls(&trust_dir)?,
            dir,
            trust_dir,
            lbone_url: lbone.url(),
            mdm_url: mdm.url(),
            ca_url,
            depots,
            users,
            bins,
            startup: Duration::ZERO,
            steps: Vec::new(),
            ca_config,
            opts,
            ca,
            lbone,
            mdm,
            _dir: dir_guard,
        };

        // 7. The first admin registers the depots, in parallel.
        if !grid.depots.is_empty() {
            let admin = grid
                .users
                .iter()
                .find(|u| u.admin)
                .context("no admin")?
                .clone();
            let g = &grid;
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..g.depots.len())
                    .map(|i| {
                        let admin = &admin;
                        s.spawn(move || g.register_depot(admin, i))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow!("register panicked")))
                    })
                    .collect::<anyhow::Result<Vec<()>>>()
            })?;
            steps.mark("depots registered with the L-Bone (lbone admin register)");
            grid.wait_lbone_sees_all(LBONE_TIMEOUT)?;
            steps.mark("the L-Bone polled every depot: all up");
        }
        grid.steps = steps.done;
        grid.startup = t0.elapsed();
        Ok(grid)
    }

    /// Process ids of every running daemon.
    pub fn pids(&self) -> Vec<u32> {
        let services = [&self.ca, &self.lbone, &self.mdm];
        let mut pids: Vec<u32> = services
            .iter()
            .filter_map(|s| s.proc.as_ref().map(|p| p.child.id()))
            .collect();
        pids.extend(self.depots.iter().filter_map(Depot::pid));
        pids
    }

    /// The options the grid was started with.
    pub fn options(&self) -> &GridOptions {
        &self.opts
    }

    /// A user of the grid; panics for an unknown name.
    pub fn user(&self, name: &str) -> &GridUser {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no user {name:?} in the grid"))
    }

    /// The proxy credential file of a user (vo1), made at start.
    pub fn proxy(&self, user: &str) -> PathBuf {
        self.user(user).proxy.clone()
    }

    /// The environment for running `lors` (or `lbone admin`) as `user`:
    /// `LORS_LBONE_URL`, `LBONE_URL`, `LORS_METADATA_URL`, `LORS_CA_URL`,
    /// `LORS_TRUST_DIR`, `LORS_VO`, `X509_USER_PROXY`, `LORS_KEY_FILE` (a path under the
    /// user's directory, not created), `LORS_CONFIG` (an empty file),
    /// `HOME` (the grid directory) and `XDG_CONFIG_HOME` (under it).
    pub fn env(&self, user: &str) -> Vec<(String, String)> {
        let u = self.user(user);
        let s = |p: &Path| p.display().to_string();
        vec![
            ("LORS_LBONE_URL".into(), self.lbone_url.clone()),
            ("LBONE_URL".into(), self.lbone_url.clone()),
            ("LORS_METADATA_URL".into(), self.mdm_url.clone()),
            ("LORS_CA_URL".into(), self.ca_url.clone()),
            ("LORS_TRUST_DIR".into(), s(&self.trust_dir)),
            ("LORS_VO".into(), VO.into()),
            ("X509_USER_PROXY".into(), s(&u.proxy)),
            ("LORS_KEY_FILE".into(), s(&u.dir.join("lors.key"))),
            ("LORS_CONFIG".into(), s(&self.dir.join("lors.toml"))),
            ("HOME".into(), s(&self.dir)),
            ("XDG_CONFIG_HOME".into(), s(&self.dir.join(".config"))),
        ]
    }

    /// A `lors` command running as `user`: [`Grid::env`] set, other
    /// `LORS_*`/`X509_*` variables of the caller's environment removed,
    /// working directory the user's directory, umask 077.
    pub fn lors(&self, user: &str) -> Command {
        let mut cmd = clean_command(&self.bins.lors);
        cmd.env("RUST_LOG", "warn")
            .envs(self.env(user))
            .current_dir(&self.user(user).dir);
        cmd
    }

    /// Logs `user` in again (`lors login --method local`), replacing the proxy.
    pub fn login(&self, user: &str) -> anyhow::Result<()> {
        LoginEnv {
            lors: self.bins.lors.clone(),
            ca_url: self.ca_url.clone(),
            trust_dir: self.trust_dir.clone(),
            dir: self.dir.clone(),
        }
        .login(self.user(user))
    }

    fn register_depot(&self, admin: &GridUser, i: usize) -> anyhow::Result<()> {
        let d = &self.depots[i];
        let mut c = clean_command(&self.bins.lbone);
        c.arg("admin")
            .args(["--lbone", &self.lbone_url])
            .arg("--proxy")
            .arg(&admin.proxy)
            .arg("--trust")
            .arg(&self.trust_dir)
            .args([
                "register",
                "--vo",
                VO,
                "--name",
                &d.name,
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &d.port().to_string()]);
        if let Some(t) = &d.tls_addr {
            c.args(["--tls-port", &port_of(t).to_string()]);
        }
        c.arg(format!(
            "--location={:.2},{:.2}",
            50.0 + i as f64 * 0.1,
            14.0 + i as f64 * 0.1
        ))
        .args(["--place", &format!("site-{i}")])
        .args(["--max-size", &self.opts.hard_size(i).to_string()])
        .args(["--max-duration", "30d"]);
        run_cli(&format!("lbone admin register {}", d.name), c, None).map(|_| ())
    }

    /// Kills depot `i` (SIGKILL) and waits for it.
    pub fn kill_depot(&mut self, i: usize) {
        if let Some(mut p) = self.depots[i].proc.take() {
            p.kill();
        }
    }

    /// Starts depot `i` again on the same ports and data directory (killing
    /// it first if it runs); returns once it listens on all of them.
    pub fn restart_depot(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_depot(i);
        let prefixes = depot_prefixes(&self.opts);
        let bin = self.bins.depot.clone();
        let d = &mut self.depots[i];
        let (proc, addrs) =
            start_retrying_bind(&format!("ibp-depot {}", d.name), &d.dir, &prefixes, || {
                depot_command(&bin, &d.config)
            })?;
        let before = (
            d.legacy_addr.clone(),
            d.tls_addr.clone(),
            d.data_addr.clone(),
        );
        d.proc = Some(proc);
        set_depot_addrs(d, &addrs, &self.opts)?;
        if before
            != (
                d.legacy_addr.clone(),
                d.tls_addr.clone(),
                d.data_addr.clone(),
            )
        {
            bail!("{} came back on other ports: {before:?}", d.name);
        }
        Ok(())
    }

    /// Kills the L-Bone (SIGKILL) and waits for it.
    pub fn kill_lbone(&mut self) {
        self.lbone.kill();
    }

    /// Starts the L-Bone again on the same port and database.
    pub fn restart_lbone(&mut self) -> anyhow::Result<()> {
        self.lbone.restart()
    }

    /// Kills the metadata manager (SIGKILL) and waits for it.
    pub fn kill_mdm(&mut self) {
        self.mdm.kill();
    }

    /// Starts the metadata manager again on the same port and database.
    pub fn restart_mdm(&mut self) -> anyhow::Result<()> {
        self.mdm.restart()
    }

    /// Restarts one HTTPS daemon with extra environment variables (for
    /// example libfaketime's `LD_PRELOAD` and `FAKETIME` to skew its
    /// clock); an empty `env` restores the plain environment.
    pub fn restart_with_env(
        &mut self,
        which: Daemon,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let service = match which {
            Daemon::OnlineCa => &mut self.ca,
            Daemon::Lbone => &mut self.lbone,
            Daemon::MetadataManager => &mut self.mdm,
        };
        service.env = env;
        service.restart()
    }

    /// Kills the online CA (SIGKILL) and waits for it.
    pub fn kill_ca(&mut self) {
        self.ca.kill();
    }

    /// Starts the online CA again on the same port.
    pub fn restart_ca(&mut self) -> anyhow::Result<()> {
        self.ca.restart()
    }

    /// The L-Bone's `GET /status.json` (needs no client certificate).
    pub fn lbone_status(&self) -> anyhow::Result<Value> {
        let (url, tls) = (self.lbone_url.clone(), self.tls.clone());
        // A thread of its own, so this works inside an async test too.
        std::thread::spawn(move || -> anyhow::Result<Value> {
            let client = ibp_https::Client::new(ibp_https::BaseUrl::parse(&url)?, tls, false);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let r = rt.block_on(client.get("/status.json"))?;
            if !r.is_success() {
                bail!(
                    "GET {url}/status.json: {} {}",
                    r.status,
                    r.error_message(300)
                );
            }
            Ok(r.json()?)
        })
        .join()
        .map_err(|_| anyhow!("the status request panicked"))?
    }

    /// The `state` the L-Bone reports for depot `i` in vo1 (`unknown`,
    /// `up`, `late`, `down`), if it lists it.
    pub fn lbone_state(status: &Value, depot_port: u16) -> Option<String> {
        status["vos"]
            .as_array()?
            .iter()
            .filter(|v| v["vo"] == VO)
            .flat_map(|v| v["depots"].as_array().into_iter().flatten())
            .find(|d| d["port"].as_u64() == Some(u64::from(depot_port)))
            .and_then(|d| d["status"]["state"].as_str())
            .map(str::to_owned)
    }

    fn wait_lbone(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.lbone_status() {
                Ok(s) if ok(&s) => return Ok(()),
                Ok(s) => summarize(&s),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!("the L-Bone did not report {what} within {timeout:?}; last: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the L-Bone reports every running depot `up` in vo1.
    pub fn wait_lbone_sees_all(&self, timeout: Duration) -> anyhow::Result<()> {
        let ports: Vec<u16> = self
            .depots
            .iter()
            .filter(|d| d.proc.is_some())
            .map(Depot::port)
            .collect();
        self.wait_lbone(timeout, "every running depot up", |s| {
            ports
                .iter()
                .all(|p| Grid::lbone_state(s, *p).as_deref() == Some("up"))
        })
    }

    /// Waits until the L-Bone reports depot `i` `down` (no longer offered).
    pub fn wait_lbone_sees_down(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let port = self.depots[i].port();
        self.wait_lbone(timeout, &format!("{} down", self.depots[i].name), |s| {
            Grid::lbone_state(s, port).as_deref() == Some("down")
        })
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        for d in &mut self.depots {
            if let Some(mut p) = d.proc.take() {
                p.kill();
            }
        }
        self.lbone.kill();
        self.mdm.kill();
        self.ca.kill();
    }
}

fn summarize(status: &Value) -> String {
    let mut out = Vec::new();
    for v in status["vos"].as_array().into_iter().flatten() {
        for d in v["depots"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}/{} port {} {} ({})",
                v["vo"].as_str().unwrap_or("?"),
                d["name"].as_str().unwrap_or("?"),
                d["port"],
                d["status"]["state"].as_str().unwrap_or("?"),
                d["status"]["last_error"].as_str().unwrap_or("-"),
            ));
        }
    }
    if out.is_empty() {
        "no depots listed".into()
    } else {
        out.join("; ")
    }
}

fn client_tls(trust_dir: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let trust = ibp_auth::TrustStore::load(trust_dir)
        .with_context(|| format!("load {}", trust_dir.display()))?;
    Ok(ibp_auth::tls::client_config(&trust, None)?)
}

fn depot_command(bin: &Path, config: &Path) -> Command {
    let mut cmd = clean_command(bin);
    cmd.env("RUST_LOG", "warn")
        .arg("serve")
        .arg("--config")
        .arg(config);
    cmd
}

fn depot_prefixes(opts: &GridOptions) -> Vec<&'static str> {
    let mut p = vec!["listening on "];
    if !opts.legacy_only {
        p.push("tls listening on ");
        if opts.data_port {
            p.push("data listening on ");
        }
    }
    p
}

/// Records the printed addresses and fixes them in the configuration.
fn set_depot_addrs(d: &mut Depot, addrs: &[String], opts: &GridOptions) -> anyhow::Result<()> {
    let get = |i: usize| addrs.get(i).cloned().context("missing address");
    d.legacy_addr = get(0)?;
    if !opts.legacy_only {
        d.tls_addr = Some(get(1)?);
        if opts.data_port {
            d.data_addr = Some(get(2)?);
        }
    }
    let mut text = fs::read_to_string(&d.config)?;
    for (key, addr) in [
        // Without the legacy port, `listen` is not bound: leave it.
        ("listen", Some(&d.legacy_addr).filter(|_| d.legacy)),
        ("tls_listen", d.tls_addr.as_ref()),
        ("data_listen", d.data_addr.as_ref()),
    ] {
        if let Some(a) = addr {
            text = text.replacen(
                &format!("\n{key} = \"127.0.0.1:0\"\n"),
                &format!("\n{key} = \"{a}\"\n"),
                1,
            );
            if let Some(rest) = text.strip_prefix(&format!("{key} = \"127.0.0.1:0\"\n")) {
                text = format!("{key} = \"{a}\"\n{rest}");
            }
        }
    }
    write_file(&d.config, &text)
}

/// What a login needs (shareable between threads).
struct LoginEnv {
    lors: PathBuf,
    ca_url: String,
    trust_dir: PathBuf,
    dir: PathBuf,
}

impl LoginEnv {
    /// `lors login --method local --password-stdin` for `u`.
    fn login(&self, u: &GridUser) -> anyhow::Result<()> {
        let mut c = clean_command(&self.lors);
        c.env("RUST_LOG", "warn")
            .env("X509_USER_PROXY", &u.proxy)
            .env("HOME", &self.dir)
            .env("LORS_CONFIG", self.dir.join("lors.toml"))
            .env("LORS_TRUST_DIR", &self.trust_dir)
            .current_dir(&u.dir)
            .args([
                "login",
                "--ca",
                &self.ca_url,
                "--vo",
                VO,
                "--method",
                "local",
            ])
            .args(["--user", &u.name, "--password-stdin", "--valid", "12:00"])
            .arg("--trust")
            .arg(&self.trust_dir);
        run_cli(
            &format!("lors login {}", u.name),
            c,
            Some(&format!("{}\n", u.password)),
        )?;
        if !u.proxy.is_file() {
            bail!(
                "lors login {} succeeded but wrote no {}",
                u.name,
                u.proxy.display()
            );
        }
        Ok(())
    }
}
