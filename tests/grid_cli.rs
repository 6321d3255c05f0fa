//! The `ibp-grid` binary, as README's main command runs it: `demo` goes
//! through every step and verifies the download; `up` prints an
//! environment that works with `lors` from another process, and Ctrl-C
//! (SIGINT) stops every daemon it started.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ibp_grid::run_bounded;

const LIMIT: Duration = Duration::from_secs(300);

fn ibp_grid() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ibp-grid"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("LORS_") || k.starts_with("X509_") || k.starts_with("IBP_GRID_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn demo_uploads_kills_a_depot_downloads_and_verifies() {
    let mut c = ibp_grid();
    c.args(["demo", "--debug", "--size-mib", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_bounded(c, LIMIT).expect("ibp-grid demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for want in [
        "online CA listening on https://127.0.0.1:",
        "the L-Bone polled every depot: all up",
        "$ lors upload ",
        "--ec 2+1 --security full",
        "killed with SIGKILL",
        "$ lors download ",
        "verified: the download is byte for byte the upload",
        "$ lors stat /vo1/demo/demo.bin --check",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    // 2+1 on three distinct depots: 6 MiB in 8 MiB blocks is one group.
    assert!(stdout.contains("pieces on 3 depots"), "{stdout}");
    // Steps are numbered with their durations.
    assert!(
        stdout.contains("[ 1]") && stdout.contains(" s  "),
        "{stdout}"
    );
    // The grid directory is gone afterwards.
    let dir = grid_dir(&stdout).expect("the demo names its grid directory");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn grid_dir(stdout: &str) -> Option<PathBuf> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("grid directory "))
        .map(PathBuf::from)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Processes whose command line mentions `dir` (the grid's daemons).
fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn up_prints_a_working_environment_and_ctrl_c_stops_everything() {
    let mut child = ibp_grid()
        .args(["up", "--debug", "--depots", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ibp-grid up starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + LIMIT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l.contains("Ctrl-C stops every process");
                lines.push(l);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("ibp-grid up did not come up:\n{}", lines.join("\n"));
            }
        }
    }
    let text = lines.join("\n");
    let env: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for k in [
        "LORS_LBONE_URL",
        "LORS_METADATA_URL",
        "LORS_CA_URL",
        "LORS_TRUST_DIR",
        "LORS_VO",
        "X509_USER_PROXY",
    ] {
        assert!(env.iter().any(|(n, _)| n == k), "no {k} in:\n{text}");
    }
    let dir = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("Logs and configurations are under ")
                .and_then(|r| r.split_once(". Ctrl-C"))
                .map(|(d, _)| PathBuf::from(d))
        })
        .expect("the grid directory is named");
    let daemons = processes_under(&dir);
    assert!(
        daemons.len() >= 6,
        "CA, L-Bone, MDM and 3 depots: {daemons:?}"
    );

    // Another "terminal": lors with exactly the printed environment.
    let path_dir = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.trim_end_matches(":$PATH").to_owned())
        .expect("PATH is printed");
    let work = tempfile::tempdir().expect("tempdir");
    let tool = |name: &str, args: &[&str]| {
        let mut c = Command::new(Path::new(&path_dir).join(name));
        c.env_clear()
            .env("HOME", work.path())
            .envs(env.iter().filter(|(k, _)| k != "PATH").cloned())
            .args(args)
            .current_dir(work.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(c, Duration::from_secs(60)).expect("lors runs");
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let lors = |args: &[&str]| tool("lors", args);
    lors(&["keys", "init"]);
    lors(&["mkdir", "/vo1/demo"]);
    let src = work.path().join("f");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).expect("write");
    lors(&[
        "upload",
        src.to_str().expect("utf-8"),
        "/vo1/demo/f",
        "--ec",
        "2+1",
    ]);
    let back = work.path().join("back");
    lors(&["download", "/vo1/demo/f", back.to_str().expect("utf-8")]);
    assert!(std::fs::read(&back).expect("read") == data);
    // The crypto level needs the depots' data ports.
    lors(&[
        "upload",
        src.to_str().expect("utf-8"),
        "/vo1/demo/c",
        "--security",
        "crypto",
    ]);
    let st =
        String::from_utf8_lossy(&lors(&["stat", "--mappings", "--json", "/vo1/demo/c"]).stdout)
            .into_owned();
    assert!(
        st.contains("\"crypto\""),
        "not stored at the crypto level: {st}"
    );
    let back_c = work.path().join("back-c");
    lors(&["download", "/vo1/demo/c", back_c.to_str().expect("utf-8")]);
    assert!(std::fs::read(&back_c).expect("read") == data);
    // The LoRS tool names are built beside lors and on the printed PATH.
    tool(
        "lors-upload",
        &[src.to_str().expect("utf-8"), "/vo1/demo/l", "--copies", "2"],
    );
    let back_l = work.path().join("back-l");
    tool(
        "lors-download",
        &["/vo1/demo/l", back_l.to_str().expect("utf-8")],
    );
    assert!(std::fs::read(&back_l).expect("read") == data);

    // Ctrl-C.
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ibp-grid up ignored SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemons.iter().any(|p| pid_alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "daemons still running after Ctrl-C: {:?}",
            daemons
                .iter()
                .filter(|p| pid_alive(**p))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}
