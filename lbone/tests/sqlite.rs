//! The L-Bone suite against SQLite (the default database): the real `lbone`
//! binary, real `ibp-depot` processes, a test PKI with proxies carrying VO
//! attributes. Scenarios are in common/scenarios.rs.

mod common;

use common::{scenarios, Db};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                scenarios::$name(Db::sqlite());
            }
        )*
    };
}

suite!(
    liveness_kill_and_restart,
    registration_rights,
    vo_isolation_and_revocation,
    grants,
    location_ordering,
    hanging_depot_does_not_stall_polling,
    more_than_exist,
    status_page,
    lors_cli,
    shutdown_is_prompt,
    removed_members,
    legacy_off_depot_is_polled_over_tls,
    depot_with_untrusted_certificate_is_down,
    depot_refusing_the_lbone_certificate_is_down,
    other_vo_bad_tls_port_does_not_take_the_depot_down,
);

/// A server key that group or others may read: `lbone serve` refuses to
/// start and says which file and how to fix it.
#[test]
fn server_key_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut grid = common::Grid::start(Db::sqlite(), Default::default());
    grid.stop();
    let dir = grid.path().join("lbone");
    let key = dir.join("server.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the fixture writes the key owner-only");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = std::process::Command::new(common::LBONE);
    cmd.args(["serve", "--config"])
        .arg(dir.join("test.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = common::run_bounded(cmd, common::CLI_TIMEOUT).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 0644 key: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("mode 644"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}
