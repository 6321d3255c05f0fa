//! The Python package `lors` (python/) against a real grid: a venv is made
//! (kept in the cargo target directory for the next run), maturin and
//! numpy installed into it from PyPI, the wheel built by maturin with this
//! workspace's target directory and installed, then
//! python/tests/test_grid.py runs as alice (uploads, stat, ls, ranged
//! reads through `lors.File` compared with the source, download, error
//! classes and codes, rm).
//!
//! Needs python3 with its venv module and pip (Debian: python3-venv); a
//! machine without them fails here with that said, never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use ibp_grid::grid::{target_dir, GridOptions};

/// Bound on making the venv and installing maturin and numpy.
const SETUP_LIMIT: Duration = Duration::from_secs(600);
/// Bound on building the wheel (the first build compiles the library).
const BUILD_LIMIT: Duration = Duration::from_secs(1800);
/// Bound on the test script.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);
/// The checks test_grid.py runs (one `ok NAME` line each).
const CHECKS: usize = 17;

#[test]
fn python_package_against_a_real_grid() {
    let _timer = Timer::start("python_package_against_a_real_grid");
    let work = target_dir().join("tmp").join("lors-python");
    let python = venv(&work.join("venv"));
    let wheel = build_wheel(&work, &python);
    let mut install = pip(&python, &["install", "--no-deps", "--force-reinstall"]);
    install.arg(&wheel);
    run_ok(install, SETUP_LIMIT, "install the wheel");

    let g = start(GridOptions::default());
    keys_init(&g, "alice");
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let mut c = Command::new(&python);
    c.arg(root().join("python/tests/test_grid.py"))
        .arg("/vo1/py")
        .arg(scratch.path())
        .current_dir(scratch.path());
    // Alice's environment only, as for her `lors`.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("LORS_") || k.starts_with("X509_") || k == "LBONE_URL" {
            c.env_remove(k);
        }
    }
    c.envs(g.env("alice")).env("RUST_LOG", "warn");
    let o = run_limited(c, SCRIPT_LIMIT);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "test_grid.py failed: {}", text(&o));
    assert!(
        out.lines()
            .any(|l| l == format!("python: {CHECKS} passed, 0 failed")),
        "test_grid.py did not pass its {CHECKS} checks: {}",
        text(&o)
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        CHECKS,
        "{out}"
    );
    eprint!("{out}");
}

/// This workspace (the root package's directory).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, the venv made and maturin and numpy installed in it
/// first if missing.
fn venv(dir: &Path) -> PathBuf {
    let python = dir.join("bin/python");
    if !python.is_file() {
        let mut c = Command::new("python3");
        c.arg("-m").arg("venv").arg(dir);
        let o = match ibp_grid::run_bounded(c, SETUP_LIMIT) {
            Ok(o) => o,
            Err(e) => panic!(
                "cannot run python3 ({e}): the Python package's test needs python3 with venv \
                 and pip (Debian: apt-get install python3 python3-venv python3-pip)"
            ),
        };
        assert!(
            o.status.success() && python.is_file(),
            "python3 -m venv {} failed (Debian: apt-get install python3-venv): {}",
            dir.display(),
            text(&o)
        );
    }
    let mut check = Command::new(&python);
    check.args(["-c", "import maturin, numpy"]);
    let have = run_limited(check, SETUP_LIMIT).status.success();
    if !have {
        run_ok(
            pip(&python, &["install", "maturin>=1.5,<2", "numpy"]),
            SETUP_LIMIT,
            "install maturin and numpy from PyPI",
        );
    }
    python
}

/// `python -m pip ARGS`, quiet.
fn pip(python: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(python);
    c.args(["-m", "pip", "--disable-pip-version-check", "-q"])
        .args(args);
    c
}

/// Builds the wheel (debug profile) into `work/wheels`; returns its path.
fn build_wheel(work: &Path, python: &Path) -> PathBuf {
    let wheels = work.join("wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    let mut c = Command::new(python);
    c.args(["-m", "maturin", "build", "--locked", "--manifest-path"])
        .arg(root().join("python/Cargo.toml"))
        .arg("--interpreter")
        .arg(python)
        .arg("--out")
        .arg(&wheels);
    // What cargo set for this test must not reach the build (build
    // scripts watch some of it and would rerun); the target directory is
    // the workspace's, so the library is compiled once.
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "OUT_DIR" {
            c.env_remove(&k);
        }
    }
    c.env("CARGO_TARGET_DIR", target_dir());
    // maturin runs `cargo` from PATH: the one running this test first.
    if let Some(dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir).chain(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            c.env("PATH", joined);
        }
    }
    run_ok(c, BUILD_LIMIT, "maturin build");
    let built: Vec<PathBuf> = std::fs::read_dir(&wheels)
        .unwrap_or_else(|e| panic!("read {}: {e}", wheels.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(
        built.len(),
        1,
        "one wheel in {}: {built:?}",
        wheels.display()
    );
    built[0].clone()
}

/// Runs `c` within `limit`; panics with its output unless it succeeds.
fn run_ok(c: Command, limit: Duration, what: &str) {
    let o = run_limited(c, limit);
    assert!(o.status.success(), "{what}: {}", text(&o));
}
