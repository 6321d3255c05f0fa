//! Spawning and supervising the grid's processes: every child is tied to
//! the test process (`PR_SET_PDEATHSIG`), runs with umask 077 and a clean
//! environment; daemons report their addresses on stdout.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::files::PRIVATE_FILE;

/// Bound on a daemon printing its `listening on` lines.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one CLI invocation (init, admin, login, register).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a log shown in an error.
pub(super) const LOG_TAIL: usize = 40;

type SpawnRequest = (Command, Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, the child
/// asking the kernel for SIGKILL when that thread (so the process) dies.
pub(super) fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
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
pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn file_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => tail(&String::from_utf8_lossy(&b), LOG_TAIL),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A daemon process: killed (SIGKILL) and reaped on drop.
pub(super) struct Proc {
    what: String,
    pub(super) child: Child,
    stderr_log: PathBuf,
    // In a mutex so a Grid is Sync (tests share it between threads).
    lines: Mutex<Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout lines sent to [`Proc::lines`] and appended
    /// to `dir/stdout.log`, stderr appended to `dir/stderr.log`.
    pub(super) fn spawn(what: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
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
    pub(super) fn wait_for(
        &mut self,
        prefixes: &[&str],
        deadline: Instant,
    ) -> anyhow::Result<Vec<String>> {
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

    pub(super) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap; describes how it ended.
    pub(super) fn kill(&mut self) -> String {
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
pub(super) fn run_cli(what: &str, mut cmd: Command, input: Option<&str>) -> anyhow::Result<String> {
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
pub(super) fn clean_command(bin: &Path) -> Command {
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

/// Starts a daemon that binds fixed ports, retrying a few times while the
/// ports of its killed predecessor are still busy.
pub(super) fn start_retrying_bind(
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
