//! The metadata manager suite against SQLite (the default database): the
//! real `metadata-manager` binary, a test PKI with proxies carrying VO
//! attributes and groups, clients over mutual TLS. Scenarios are in
//! common/scenarios.rs.

mod common;

use common::{run, scenarios, Db};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(scenarios::$name(Db::sqlite()));
            }
        )*
    };
}

suite!(
    rights_granted_and_refused,
    groups_vos_and_cross_vo,
    default_acl_inheritance,
    revocation,
    concurrent_writers,
    tickets,
    bad_input,
    authentication,
    namespace,
    keys,
    names,
    display_names,
    usage,
    usage_of_another_vo_is_refused,
    member_cannot_grow_the_database_past_their_quota,
    vo_cannot_grow_the_database_past_its_quota,
    exnode_over_the_default_max_exnode_is_refused,
    concurrent_large_puts_keep_memory_and_disk_bounded,
    one_member_cannot_hold_the_put_budget,
    shutdown_is_prompt,
    versions_and_retention,
    acknowledged_puts_survive_sigkill,
);

/// A server key that group or others may read: `metadata-manager serve`
/// refuses to start and says which file and how to fix it.
#[test]
fn server_key_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut grid = common::Grid::start(Db::sqlite(), Default::default());
    grid.server.stop();
    let dir = grid.path().join("mdm");
    let key = dir.join("server.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the fixture writes the key owner-only");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut cmd = std::process::Command::new(common::MDM);
    cmd.args(["serve", "--config"])
        .arg(dir.join("test.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = common::run_bounded(cmd, common::CLI_TIMEOUT).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 0640 key: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("mode 640"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

fn mode_of(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `metadata.db` holds every file's WRITE and MANAGE capabilities: one
/// that group or others may read makes `serve` refuse to start, naming the
/// file, its mode and `chmod 600`; so does a left-over -wal file.
#[test]
fn metadata_db_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut grid = common::Grid::start(Db::sqlite(), Default::default());
    let a = grid.pki.user("alice", "vo1", "alice", &[]);
    common::run(async {
        grid.client(&a).create("/vo1/f", 10).await;
    });
    grid.server.stop();
    let dir = grid.path().join("mdm");
    let db = dir.join("metadata.db");
    assert_eq!(mode_of(&db), 0o600);
    let wal = dir.join("metadata.db-wal");
    for (file, mode) in [(&db, 0o644), (&db, 0o640), (&wal, 0o604)] {
        if !file.exists() {
            std::fs::write(file, b"").unwrap();
        }
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut cmd = std::process::Command::new(common::MDM);
        cmd.args(["serve", "--config"])
            .arg(dir.join("test.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = common::run_bounded(cmd, common::CLI_TIMEOUT).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "started with {} mode {mode:o}: {stderr}",
            file.display()
        );
        assert!(out.stdout.is_empty(), "it listened: {stderr}");
        assert!(
            stderr.contains(&format!(
                "database {p} has mode {mode:03o}; it holds secrets and must be readable by its owner only (chmod 600 {p})",
                p = file.display()
            )),
            "{stderr}"
        );
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Owner-only again: it starts and still serves the file.
    let server = grid.spawn_server(1);
    let client = grid.client_of(&server, &a);
    common::run(async move {
        client.stat("/vo1/f").await.ok();
    });
}

/// A new `metadata.db` (and its -wal and -shm files) is created mode 0600
/// under the usual umask 022, and a directory made for it 0700.
#[test]
fn metadata_db_created_owner_only_under_umask_022() {
    let mut grid = common::Grid::start(Db::sqlite(), Default::default());
    grid.server.stop();
    let dir = grid.path().join("mdm");
    let a = grid.pki.user("alice", "vo1", "alice", &[]);
    let check = |db: &std::path::Path| {
        assert_eq!(mode_of(db), 0o600, "{}", db.display());
        for suffix in ["-wal", "-shm"] {
            let mut f = db.as_os_str().to_owned();
            f.push(suffix);
            let f = std::path::PathBuf::from(f);
            assert!(f.exists(), "{} exists while serving", f.display());
            assert_eq!(mode_of(&f), 0o600, "{}", f.display());
        }
    };
    // A fresh database next to the configuration.
    let old_db = dir.join("metadata.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("metadata.db{suffix}")));
    }
    let log = grid.path().join("mdm-umask.log");
    let mut server = common::spawn_with_umask(&grid.config, &log, false, Some(0o022));
    let client = grid.client_of(&server, &a);
    common::run(async move {
        client.create("/vo1/f", 10).await;
    });
    check(&old_db);
    server.stop();

    // A database in a directory that does not exist yet.
    let text = std::fs::read_to_string(&grid.config).unwrap();
    let new_db = dir.join("state/db/metadata.db");
    std::fs::write(
        &grid.config,
        text.replace(old_db.to_str().unwrap(), new_db.to_str().unwrap()),
    )
    .unwrap();
    let log = grid.path().join("mdm-umask2.log");
    let server = common::spawn_with_umask(&grid.config, &log, false, Some(0o022));
    let client = grid.client_of(&server, &a);
    common::run(async move {
        client.create("/vo1/g", 10).await;
    });
    check(&new_db);
    assert_eq!(mode_of(&dir.join("state")), 0o700);
    assert_eq!(mode_of(&dir.join("state/db")), 0o700);
}
