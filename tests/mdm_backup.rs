//! `metadata-manager backup` on a running grid, and a restore after which
//! every file backed up is readable (issue 20: "`metadata-manager backup`
//! ... and a tested restore after which every file is readable").

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use ibp_grid::grid::GridOptions;

#[test]
fn a_backup_taken_while_serving_restores_every_file() {
    let _timer = Timer::start("a_backup_taken_while_serving_restores_every_file");
    let mut g = start(GridOptions::default());
    keys_init(&g, "alice");
    let (a, b, c) = (bytes(300_000, 1), bytes(700_000, 2), bytes(50_000, 3));
    upload(&g, "alice", "a", &a, "/vo1/a", &[]);
    upload(&g, "alice", "b", &b, "/vo1/b", &["--copies", "2"]);

    let mdm_dir = g.dir.join("mdm");
    let config = mdm_dir.join("metadata.toml");
    let copy = g.dir.join("mdm-backup.db");
    let mut cmd = Command::new(&g.bins.mdm);
    cmd.args(["backup", "--config"])
        .arg(&config)
        .arg("--to")
        .arg(&copy);
    let o = run_limited(cmd, Duration::from_secs(60));
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(stdout(&o).starts_with("backed up "), "{}", text(&o));
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy holds capabilities: owner-only");

    // A second backup to the same file is refused, the first kept.
    let mut cmd = Command::new(&g.bins.mdm);
    cmd.args(["backup", "--config"])
        .arg(&config)
        .arg("--to")
        .arg(&copy);
    let o = run_limited(cmd, Duration::from_secs(60));
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(stderr(&o).contains("must not exist"), "{}", text(&o));

    // A change after the backup, then the database lost.
    upload(&g, "alice", "c", &c, "/vo1/c", &[]);
    g.kill_mdm();
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(mdm_dir.join(format!("metadata.db{ext}")));
    }
    std::fs::copy(&copy, mdm_dir.join("metadata.db")).expect("restore the copy");
    g.restart_mdm()
        .expect("the metadata manager starts on the restored database");

    download_is(&g, "alice", "/vo1/a", &a, "restored a");
    download_is(&g, "alice", "/vo1/b", &b, "restored b");
    let o = lors(&g, "alice", &["stat", "/vo1/c"]);
    assert_eq!(code(&o), 7, "made after the backup: {}", text(&o));

    // PostgreSQL databases are pg_dump's.
    let pg_config = g.dir.join("pg.toml");
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let text_cfg: String = text_cfg
        .lines()
        .filter(|l| !l.starts_with("database"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "database = \"postgres://mdm@127.0.0.1:1/metadata\"\n";
    std::fs::write(&pg_config, text_cfg).unwrap();
    let mut cmd = Command::new(&g.bins.mdm);
    cmd.args(["backup", "--config"])
        .arg(&pg_config)
        .arg("--to")
        .arg(g.dir.join("pg-backup"));
    let o = run_limited(cmd, Duration::from_secs(60));
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(stderr(&o).contains("pg_dump"), "{}", text(&o));
}
