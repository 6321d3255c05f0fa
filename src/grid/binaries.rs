//! The grid's binaries (five daemons and tools, plus `lors-upload` and
//! `lors-download`, the LoRS tool names of `lors`), from the cargo target directory. Cargo itself
//! decides whether they are current: every first call of a process runs
//! `cargo build` for them, which does nothing but check fingerprints when
//! nothing changed (a fraction of a second), and reports where each
//! executable is.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use super::process::{tail, LOG_TAIL};

/// Bound on building the binaries.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// The binaries a grid runs, and the LoRS-named tools a user of `ibp-grid
/// up` finds beside `lors` (docs/user.md, section 8).
#[derive(Debug, Clone)]
pub struct Binaries {
    pub depot: PathBuf,
    pub lbone: PathBuf,
    pub mdm: PathBuf,
    pub online_ca: PathBuf,
    pub lors: PathBuf,
    pub lors_upload: PathBuf,
    pub lors_download: PathBuf,
}

/// (package, binary), in the order of the fields of [`Binaries`].
const BINS: [(&str, &str); 7] = [
    ("ibp-depot", "ibp-depot"),
    ("lbone", "lbone"),
    ("metadata-manager", "metadata-manager"),
    ("online-ca", "online-ca"),
    ("lors", "lors"),
    ("lors", "lors-upload"),
    ("lors", "lors-download"),
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

/// The grid's binaries for the profile, built first by cargo when missing
/// or stale (once per process and profile; later calls return the same
/// paths).
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
    let paths: Vec<PathBuf> =
        if let Some(dir) = std::env::var_os("IBP_GRID_BIN_DIR").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            let paths: Vec<PathBuf> = BINS.iter().map(|(_, bin)| dir.join(bin)).collect();
            if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                bail!("IBP_GRID_BIN_DIR: {} does not exist", missing.display());
            }
            paths
        } else {
            let target = target_dir();
            let profile_dir = target.join(if release { "release" } else { "debug" });
            // All at once, always: one feature unification, so
            // successive builds never recompile dependencies with other
            // features.
            match cargo_build(&workspace_root(), &target, &BINS, release) {
                Ok(built) => {
                    BINS.iter()
                        .map(|(_, bin)| {
                            built.get(*bin).cloned().with_context(|| {
                                format!("cargo build reported no executable {bin}")
                            })
                        })
                        .collect::<anyhow::Result<_>>()?
                }
                Err(e) => {
                    let paths: Vec<PathBuf> =
                        BINS.iter().map(|(_, bin)| profile_dir.join(bin)).collect();
                    match paths.iter().find(|p| !p.is_file()) {
                        Some(missing) => bail!(
                            "{} does not exist and could not be built: {e:#}",
                            missing.display()
                        ),
                        None => eprintln!("ibp-grid: warning: using existing binaries: {e:#}"),
                    }
                    paths
                }
            }
        };
    let mut it = paths.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(Binaries {
        depot: next(),
        lbone: next(),
        mdm: next(),
        online_ca: next(),
        lors: next(),
        lors_upload: next(),
        lors_download: next(),
    })
}

/// `cargo build [--release] -p <pkg> --bin <bin>...` for `bins`
/// (package, binary) in the workspace, in [`target_dir`]: cargo rebuilds
/// what is stale. Returns each binary's executable as cargo reports it.
/// Quiet unless cargo compiles something.
pub fn cargo_binaries(
    bins: &[(&str, &str)],
    release: bool,
) -> anyhow::Result<HashMap<String, PathBuf>> {
    cargo_build(&workspace_root(), &target_dir(), bins, release)
}

/// [`cargo_binaries`] from `root` into `target`.
fn cargo_build(
    root: &Path,
    target: &Path,
    bins: &[(&str, &str)],
    release: bool,
) -> anyhow::Result<HashMap<String, PathBuf>> {
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
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
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
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("run {what}"))?;
    let stdout = child.stdout.take();
    let announce = format!(
        "ibp-grid: building the grid's binaries: {what} (CARGO_TARGET_DIR={})",
        target.display()
    );
    let artifacts = std::thread::spawn(move || read_artifacts(stdout, &announce));
    let mut stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut b);
        }
        String::from_utf8_lossy(&b).into_owned()
    });
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (built, compiled) = artifacts.join().unwrap_or_default();
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}):\n{}", tail(&errors, LOG_TAIL));
    }
    if compiled {
        eprintln!("ibp-grid: built in {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(built)
}

/// The executables of the binary targets in cargo's JSON messages, and
/// whether cargo compiled anything (announced once, when it does).
fn read_artifacts(stdout: Option<impl Read>, announce: &str) -> (HashMap<String, PathBuf>, bool) {
    let mut built = HashMap::new();
    let mut compiled = false;
    let Some(stdout) = stdout else {
        return (built, compiled);
    };
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if msg["fresh"] == false && !compiled {
            compiled = true;
            eprintln!("{announce}");
        }
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if let (true, Some(name), Some(exe)) = (
            is_bin,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            built.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    (built, compiled)
}
