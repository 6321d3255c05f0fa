//! Real daemon processes started by a test: stdout is read by a thread
//! for the process's whole life (a daemon never sees EPIPE), its first
//! lines are the addresses it listens on (`listening on ADDR`, `tls
//! listening on ADDR`, ...), stderr goes to a log file, and the process
//! is SIGKILLed and reaped on drop. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Bound on a daemon printing its address lines.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon; SIGKILLed and reaped on drop (its log's tail is
/// printed when the test is panicking).
pub struct Daemon {
    child: Child,
    what: String,
    log: PathBuf,
    /// The addresses of its first stdout lines, in order.
    pub addrs: Vec<SocketAddr>,
    lines: Receiver<String>,
}

impl Daemon {
    /// Starts `cmd` (stdin closed, stdout read here, stderr to `log`) and
    /// waits until its first stdout lines are `prefixes[i]` followed by an
    /// address; on failure the process is killed and the error shows the
    /// lines and the log.
    pub fn try_start(
        what: &str,
        mut cmd: Command,
        log: &Path,
        prefixes: &[&str],
    ) -> Result<Daemon, String> {
        let err = std::fs::File::create(log)
            .map_err(|e| format!("{what}: create {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd.spawn().map_err(|e| format!("start {what}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let mut d = Daemon {
            child,
            what: what.to_owned(),
            log: log.to_path_buf(),
            addrs: Vec::new(),
            lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        for p in prefixes {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = d.lines.recv_timeout(left).unwrap_or_default();
            let addr = line
                .trim_end()
                .strip_prefix(p)
                .and_then(|a| a.parse::<SocketAddr>().ok());
            seen.push(line);
            match addr {
                Some(a) => d.addrs.push(a),
                None => {
                    let status = d.kill();
                    return Err(format!(
                        "{what} did not start (stdout lines {seen:?}, expected {prefixes:?}; {status}); log:\n{}",
                        d.log_text()
                    ));
                }
            }
        }
        Ok(d)
    }

    /// [`Daemon::try_start`], panicking on failure.
    pub fn start(what: &str, cmd: Command, log: &Path, prefixes: &[&str]) -> Daemon {
        Daemon::try_start(what, cmd, log, prefixes).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The address of its first line (`listening on`).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Further stdout lines (after the address lines), as printed.
    pub fn lines(&self) -> &Receiver<String> {
        &self.lines
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid (not reaped yet: we hold
        // the Child and reap it only in wait/drop).
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; how the process ended (`None`: SIGKILLed after 15 s) and
    /// how long it took.
    pub fn stop(&mut self) -> (Option<ExitStatus>, Duration) {
        let t = Instant::now();
        if let Ok(Some(st)) = self.child.try_wait() {
            return (Some(st), Duration::ZERO);
        }
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(15));
        if status.is_none() {
            self.kill();
        }
        (status, t.elapsed())
    }

    /// SIGKILL and reap; says how it ended.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let mut start = log.len().saturating_sub(4000);
            while !log.is_char_boundary(start) {
                start -= 1;
            }
            eprintln!("---- {} stderr (tail) ----\n{}", self.what, &log[start..]);
        }
        self.kill();
    }
}
