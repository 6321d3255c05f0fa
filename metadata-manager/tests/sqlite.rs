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
    usage,
    shutdown_is_prompt,
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
