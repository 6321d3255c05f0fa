//! Secrets on disk (issue 14): the depot creates its data directories and
//! journal owner-only whatever the umask, and refuses to start when they
//! are readable by group or others, naming the path, its mode and the
//! chmod to run.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn serve(data: &Path) -> (std::process::ExitStatus, String, String) {
    run_to_exit(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ])
}

/// Under umask 022 (and 000), a depot that creates its resource directory
/// makes it, `data/`, `recycle/` 0700 and the journal and allocation
/// files 0600; an expired allocation's file in the recycle area stays 0600.
#[test]
fn files_are_created_owner_only_under_umask_022() {
    for mask in [0o022, 0o000] {
        let top = tempfile::tempdir().unwrap();
        let res = top.path().join("srv").join("ibp0");
        let d = DepotBuilder::new()
            .data(&res)
            .umask(mask)
            .args(["--reap-interval", "1s"])
            .spawn();
        let mut c = d.connect();
        let a = c.allocate(2, 3600, 100);
        c.store(&a.write, b"secret bytes");
        let b = c.allocate(2, 2, 100);
        c.store(&b.write, b"soon recycled");
        for dir in [res.clone(), res.join("data"), res.join("recycle")] {
            assert_eq!(
                mode_of(&dir),
                0o700,
                "{} under umask {mask:03o}",
                dir.display()
            );
        }
        assert_eq!(
            mode_of(&res.join("journal")),
            0o600,
            "journal under umask {mask:03o}"
        );
        let files = list_dir(&res.join("data"));
        assert_eq!(files.len(), 2);
        for f in &files {
            assert_eq!(mode_of(&res.join("data").join(f)), 0o600, "{f}");
        }
        assert!(wait_until(IO_TIMEOUT, || list_dir(&res.join("recycle"))
            .len()
            == 1));
        let f = &list_dir(&res.join("recycle"))[0];
        assert_eq!(mode_of(&res.join("recycle").join(f)), 0o600, "{f}");
    }
}

/// A data directory (`data/`, `recycle/`) of mode 0755 or a journal of
/// mode 0644: `ibp-depot serve` exits non-zero before printing a
/// listening line, naming the path, its mode and the chmod. Fixed, the same
/// resource starts with its allocation intact.
#[test]
fn data_dir_or_journal_readable_by_others_is_refused_at_start() {
    let top = tempfile::tempdir().unwrap();
    let res = top.path().join("r0");
    let mut d = DepotBuilder::new().data(&res).spawn();
    let a = d.allocate(3600, 100);
    d.connect().store(&a.write, b"kept");
    d.sigterm();
    d.wait_exit(IO_TIMEOUT);

    let journal = res.join("journal");
    for (path, mode, fix) in [
        (res.join("data"), 0o755, "chmod 700"),
        (res.join("recycle"), 0o750, "chmod 700"),
        (journal.clone(), 0o644, "chmod 600"),
        (journal.clone(), 0o640, "chmod 600"),
    ] {
        let before = mode_of(&path);
        chmod(&path, mode);
        let (status, stdout, stderr) = serve(&res);
        assert!(
            !status.success(),
            "started with {} at {mode:03o}",
            path.display()
        );
        assert!(stdout.is_empty(), "printed {stdout:?} before failing");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(&format!("mode {mode:03o}")), "{stderr}");
        assert!(
            stderr.contains(&format!("{fix} {}", path.display())),
            "{stderr}"
        );
        chmod(&path, before);
    }
    // Group-readable allocation files (an older depot left them to the
    // umask) are made owner-only at start.
    let f = res.join("data").join(&list_dir(&res.join("data"))[0]);
    chmod(&f, 0o644);
    let d = DepotBuilder::new().data(&res).spawn();
    assert_eq!(d.connect().load(&a.read, 0, 4), b"kept");
    assert_eq!(mode_of(&f), 0o600);
}
