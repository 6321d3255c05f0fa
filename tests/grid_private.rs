//! The grid directory holds every party's secrets (the CA's key, users'
//! proxies, the metadata manager's database with every file's
//! capabilities): `ibp-grid` keeps it owner-only whatever the umask. Its
//! own test binary, since it sets the process's umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ibp_grid::grid::{binaries, Grid, GridOptions};
use ibp_grid::run_bounded;

/// Every directory and file under `dir` that group or others may access:
/// (path, mode).
fn exposed(dir: &Path, out: &mut Vec<(String, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            continue;
        }
        if mode & 0o077 != 0 {
            out.push((e.path().display().to_string(), mode));
        }
        if meta.is_dir() {
            exposed(&e.path(), out);
        }
    }
}

/// Under the most permissive umask (0), after the grid started and a user
/// uploaded a file (so every daemon wrote its database, data and logs),
/// the grid directory is 0700, no directory under it is open to group or
/// others and no file is group- or world-readable. Before, with umask 0,
/// configurations, logs, copied trust files and data directories were
/// world-readable (0644, 0666 or 0777).
#[test]
fn grid_directory_is_private_whatever_the_umask() {
    // Build (or find) the binaries first: cargo must not run under umask 0.
    binaries(false).expect("the grid's binaries");
    // SAFETY: umask(2) cannot fail; this binary holds only this test.
    unsafe {
        libc::umask(0);
    }
    let grid = Grid::start(GridOptions {
        depots: 2,
        depot_hard_size: 64 << 20,
        users: vec!["alice".into()],
        ..GridOptions::default()
    })
    .expect("the grid starts");
    let mode = std::fs::metadata(&grid.dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{}", grid.dir.display());

    let user_dir = grid.user("alice").dir.clone();
    let src = user_dir.join("src");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
    for args in [
        vec!["keys", "init"],
        vec!["upload", src.to_str().unwrap(), "/vo1/private"],
    ] {
        let mut cmd = grid.lors("alice");
        cmd.args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(cmd, Duration::from_secs(60)).unwrap();
        assert!(
            out.status.success(),
            "lors {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut found = Vec::new();
    exposed(&grid.dir, &mut found);
    assert!(
        found.is_empty(),
        "open to group or others under {}: {}",
        grid.dir.display(),
        found
            .iter()
            .map(|(p, m)| format!("{p} ({m:o})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Databases exist (so the check covered them).
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    walk(&grid.dir, &mut files);
    assert!(files.iter().any(|f| f.ends_with(".db")), "{files:?}");
}
