//! A wall clock the test moves, for real daemon processes.
//!
//! The daemons read the system clock directly (`ibp_auth::unix_now`); in
//! a test they run under libfaketime (Debian package `faketime`, installed
//! by scripts/test) with their offset read from a file this clock owns, on
//! every reading (`FAKETIME_NO_CACHE`). [`ProcessClock::advance`] rewrites
//! the file atomically, so a grant or allocation expires the moment the
//! test says, without sleeping. Only the wall clock moves: timers and
//! timeouts keep the real monotonic clock (`FAKETIME_DONT_FAKE_MONOTONIC`).
//!
//! A missing libfaketime makes the test FAIL with instructions; nothing
//! skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};

/// Where Debian puts libfaketime.
const CANDIDATES: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

/// libfaketime's library; panics with instructions when it is missing.
pub fn libfaketime() -> PathBuf {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libfaketime is missing (looked at {CANDIDATES:?}): install Debian's faketime \
                 package (`apt-get install -y faketime`), as ./scripts/test does when run as root"
            )
        })
}

/// Environment running a daemon with its clock a fixed `offset` off
/// (`"+60s"`, `"-10m"`): the skew stays for the process's life.
pub fn skewed(offset: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), libfaketime().display().to_string()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
    ]
}

/// The wall clock of the processes started with [`ProcessClock::apply`]
/// (any number of them): the real time plus an offset the test sets.
pub struct ProcessClock {
    dir: tempfile::TempDir,
    offset: AtomicI64,
}

impl Default for ProcessClock {
    fn default() -> Self {
        ProcessClock::new()
    }
}

impl ProcessClock {
    /// A clock at the real time (offset 0).
    pub fn new() -> ProcessClock {
        let dir = tempfile::Builder::new()
            .prefix("ibp-clock-")
            .tempdir()
            .expect("create the clock's directory");
        let clock = ProcessClock {
            dir,
            offset: AtomicI64::new(0),
        };
        clock.write(0);
        clock
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("offset")
    }

    /// Writes the offset file by rename, so a reader never sees it half
    /// written.
    fn write(&self, offset: i64) {
        let tmp = self.dir.path().join("offset.new");
        std::fs::write(&tmp, format!("{offset:+}\n")).expect("write the clock's offset");
        std::fs::rename(&tmp, self.file()).expect("replace the clock's offset");
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), libfaketime().display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file().display().to_string(),
            ),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
        ]
    }

    /// Puts the process `cmd` will start on this clock.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.envs(self.env());
    }

    /// Moves the clock `secs` seconds forward (backward if negative); the
    /// processes on it see the new time at their next reading.
    pub fn advance(&self, secs: i64) {
        let now = self.offset.fetch_add(secs, Ordering::SeqCst) + secs;
        self.write(now);
    }

    /// Seconds the clock is ahead of the real time.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }

    /// Unix seconds on this clock.
    pub fn now(&self) -> i64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        real + self.offset()
    }

    /// The directory holding the offset file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
