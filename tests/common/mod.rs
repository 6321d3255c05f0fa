//! Helpers shared by the end-to-end tests of the root package
//! (`e2e_faults.rs`, `e2e_services.rs`, `e2e_many.rs`, `status_page.rs`): running the grid's
//! `lors` binary as a user with a time limit, reading its output, test data,
//! bounded waits and process memory.
//!
//! Every command and every wait here is bounded in time; nothing skips.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ibp_grid::grid::{Grid, GridOptions};
use ibp_grid::run_bounded;

/// Bound on one `lors` command.
pub const LORS_LIMIT: Duration = Duration::from_secs(120);

/// Starts a grid, failing the test with the reason if it cannot.
pub fn start(opts: GridOptions) -> Grid {
    let t = Instant::now();
    let g = Grid::start(opts).expect("the grid starts");
    eprintln!(
        "grid of {} depot(s) started in {:.2} s ({:.2} s with finding the binaries)",
        g.depots.len(),
        g.startup.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    g
}

/// Runs `c` to completion within `limit`, stdout and stderr captured.
pub fn run_limited(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{c:?}");
    run_bounded(c, limit).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `lors ARGS` as `user`, prepared but not run (see [`run_limited`]).
pub fn lors_cmd(g: &Grid, user: &str, args: &[&str]) -> Command {
    let mut c = g.lors(user);
    c.args(args);
    c
}

/// `lors ARGS` as `user`, run within [`LORS_LIMIT`].
pub fn lors(g: &Grid, user: &str, args: &[&str]) -> Output {
    run_limited(lors_cmd(g, user, args), LORS_LIMIT)
}

/// The exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

/// Asserts success; returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "lors failed: {}", text(&o));
    stdout(&o)
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Writes `data` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// A path as a `&str` argument (the grid's paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Asserts that `path` holds exactly `want` (without printing megabytes).
#[track_caller]
pub fn assert_file_is(path: &Path, want: &[u8], what: &str) {
    let got =
        std::fs::read(path).unwrap_or_else(|e| panic!("{what}: read {}: {e}", path.display()));
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length of {}",
        path.display()
    );
    assert!(
        got == want,
        "{what}: {} differs from the original (BLAKE3 {} vs {})",
        path.display(),
        blake3::hash(&got),
        blake3::hash(want)
    );
}

/// `lors keys init` for `user`.
pub fn keys_init(g: &Grid, user: &str) {
    ok(lors(g, user, &["keys", "init"]));
}

/// `lors stat --mappings --json PATH`.
pub fn stat_json(g: &Grid, user: &str, path: &str) -> serde_json::Value {
    let out = ok(lors(g, user, &["stat", "--mappings", "--json", path]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stat --json is not JSON ({e}): {out}"))
}

/// The mappings of `stat --mappings --json`.
pub fn mappings(st: &serde_json::Value) -> Vec<serde_json::Value> {
    st["mappings"]
        .as_array()
        .unwrap_or_else(|| panic!("no mappings in {st}"))
        .clone()
}

/// Uploads `data` (written to the user's directory as `name`) to `dest`
/// with extra `args`; returns stdout.
#[track_caller]
pub fn upload(g: &Grid, user: &str, name: &str, data: &[u8], dest: &str, args: &[&str]) -> String {
    let src = write(&g.user(user).dir, name, data);
    let mut a = vec!["upload", s(&src), dest];
    a.extend_from_slice(args);
    ok(lors(g, user, &a))
}

/// Downloads `path` as `user` and asserts it is `want`.
#[track_caller]
pub fn download_is(g: &Grid, user: &str, path: &str, want: &[u8], what: &str) -> String {
    let out = g.user(user).dir.join(format!(
        "dl-{}",
        path.trim_start_matches('/').replace('/', "_")
    ));
    let o = lors(g, user, &["download", path, s(&out)]);
    assert!(o.status.success(), "{what}: download {path}: {}", text(&o));
    assert_file_is(&out, want, what);
    let _ = std::fs::remove_file(&out);
    stdout(&o)
}

/// `lors stat --check PATH` must exit 0 with every mapping ok.
#[track_caller]
pub fn check_clean(g: &Grid, user: &str, path: &str, what: &str) {
    let o = lors(g, user, &["stat", "--check", path]);
    assert_eq!(code(&o), 0, "{what}: stat --check {path}: {}", text(&o));
    let out = stdout(&o);
    assert!(
        !out.contains("UNREADABLE") && !out.contains("CORRUPT"),
        "{what}: {out}"
    );
}

/// Polls `f` every 50 ms until it holds; panics after `limit`.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes of the regular files under `dir` (recursively).
pub fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Bytes of allocation data a depot holds (its resource's `data/`
/// directory: one file per allocation; the journal is not counted).
pub fn depot_data_bytes(g: &Grid, i: usize) -> u64 {
    bytes_under(&g.depots[i].data_dir.join("data"))
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`, ...).
pub fn proc_status_kib(pid: &str, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// Deadline helper: the time left until `deadline` (zero once past).
pub fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Prints how long a test took when dropped (also when it fails).
pub struct Timer(pub &'static str, pub Instant);

impl Timer {
    pub fn start(name: &'static str) -> Timer {
        Timer(name, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("{}: {:.1} s", self.0, self.1.elapsed().as_secs_f64());
    }
}

/// A proxy of one second made from `user`'s proxy, written to `path` and
/// waited out (the wall clock passes its expiry); returns the expiry.
#[allow(dead_code)]
pub fn expired_proxy(g: &Grid, user: &str, path: &Path) -> i64 {
    use ibp_auth::proxy::ProxyOptions;
    use ibp_auth::ProxyCredential;
    let cred = ProxyCredential::load(&g.proxy(user)).expect("the user's proxy");
    let short = ProxyCredential::create(
        &cred.chain,
        &cred.key_pkcs8,
        &ProxyOptions {
            lifetime: 1,
            attributes: None,
            path_len: None,
        },
    )
    .expect("a proxy of 1 s");
    short.save(path).expect("save the short proxy");
    let ends = short.not_after().expect("its expiry");
    wait_until(Duration::from_secs(10), "the short proxy expires", || {
        ibp_auth::unix_now() > ends
    });
    ends
}

/// A file big enough, uploaded in small blocks by two threads, to take
/// seconds in a debug build: what the interruption and clean-up tests
/// stop mid-way.
pub const SLOW_UPLOAD_SIZE: usize = 48 << 20;
pub const SLOW_UPLOAD_ARGS: &[&str] = &["--block-size", "128KiB", "--threads", "2"];

/// `lors upload SRC DEST SLOW_UPLOAD_ARGS extra` as alice, stdin closed;
/// the caller chooses what happens to its output and spawns it.
pub fn slow_upload_cmd(g: &Grid, src: &str, dest: &str, extra: &[&str]) -> Command {
    let mut args = vec!["upload", src, dest];
    args.extend_from_slice(SLOW_UPLOAD_ARGS);
    args.extend_from_slice(extra);
    let mut c = lors_cmd(g, "alice", &args);
    c.stdin(Stdio::null());
    c
}
