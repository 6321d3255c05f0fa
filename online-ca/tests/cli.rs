//! `online-ca init`, configuration checking and the admin CLI.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_writes_keys_mode_0600_and_keeps_them_on_rerun() {
    let ca = CaDir::init();
    let d = &ca.dir;
    for key in ["ca.key", "aa/vo1.key", "aa/vo2.key", "server.key", "users"] {
        assert_eq!(mode(&d.join(key)), 0o600, "{key}");
    }
    for public in [
        "ca.pem",
        "aa/vo1.pem",
        "aa/vo2.pem",
        "server.pem",
        "trust/ca/ca.pem",
        "trust/vomsdir/vo1/aa.pem",
        "trust/vomsdir/vo2/aa.pem",
        "config.toml",
        "ca.db",
    ] {
        assert!(d.join(public).is_file(), "{public}");
    }
    // The sample configuration is valid (the admin CLI loads it).
    let sample = std::fs::read_to_string(d.join("config.toml")).unwrap();
    assert!(sample.contains("[local]"), "{sample}");

    // The server certificate names the host names.
    let der = pem_cert(&std::fs::read_to_string(d.join("server.pem")).unwrap());
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = format!("{:?}", c.subject_alternative_name().unwrap().unwrap().value);
    assert!(
        san.contains("localhost") && san.contains("[127, 0, 0, 1]"),
        "{san}"
    );

    // Running again with another VO keeps the CA and adds an AA.
    let ca_pem = std::fs::read(d.join("ca.pem")).unwrap();
    let (ok, out, err) = run(
        &[
            "init",
            "--dir",
            d.to_str().unwrap(),
            "--org",
            "Test Grid",
            "--vo",
            "vo3",
            "--hostname",
            "localhost",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("kept") && out.contains("ca.key"), "{out}");
    assert_eq!(std::fs::read(d.join("ca.pem")).unwrap(), ca_pem);
    assert_eq!(mode(&d.join("aa/vo3.key")), 0o600);
    let trust = ca.trust();
    assert_eq!(trust.ca_certificates().len(), 1);
    let aa3 = pem_cert(&std::fs::read_to_string(d.join("aa/vo3.pem")).unwrap());
    assert!(trust.is_pinned_aa("vo3", &aa3));
    assert!(!trust.is_pinned_aa("vo1", &aa3));

    // Bad VO names are refused.
    let (ok, _, err) = run(
        &[
            "init",
            "--dir",
            d.to_str().unwrap(),
            "--org",
            "X",
            "--vo",
            "../x",
            "--hostname",
            "h",
        ],
        None,
    );
    assert!(!ok && err.contains("VO name"), "{err}");
}

#[test]
fn unknown_config_fields_are_refused() {
    let ca = CaDir::init();
    for extra in [
        "listen_port = 8443\n",
        "[rate_limit]\nmax_failure = 3\n",
        "[radius]\nserver = \"127.0.0.1:1812\"\nsecret = \"x\"\nsecert = \"y\"\n",
    ] {
        ca.configure(extra);
        let (ok, out, err) = run(&["serve", "--config", ca.config.to_str().unwrap()], None);
        assert!(!ok, "{extra}: {out}");
        assert!(err.contains("unknown field"), "{extra}: {err}");
        assert!(out.is_empty(), "nothing served: {out}");
    }
    // Other bad values.
    ca.configure("max_lifetime = \"12 hours\"\n");
    let (ok, _, err) = run(&["serve", "--config", ca.config.to_str().unwrap()], None);
    assert!(!ok && err.contains("duration"), "{err}");
    ca.configure("[oidc]\nissuer = \"i\"\naudience = \"a\"\n");
    let (ok, _, err) = run(&["serve", "--config", ca.config.to_str().unwrap()], None);
    assert!(!ok && err.contains("jwks"), "{err}");
}

#[test]
fn admin_members_groups_and_users() {
    let ca = CaDir::init();
    let v1 = ca.add_member(
        "vo1",
        "local:alice",
        &["--group", "admins", "--group", "ops"],
    );
    // Adding again keeps the VO ID.
    assert_eq!(ca.add_member("vo1", "local:alice", &[]), v1);
    // A second login method of the same user.
    assert_eq!(
        ca.add_member("vo1", "radius:alice@uni.example", &["--vo-id", &v1]),
        v1
    );
    let v2 = ca.add_member("vo1", "local:bob", &[]);
    assert_ne!(v1, v2);
    // Unknown VO, unknown VO ID, malformed identity, relink to another VO ID.
    ca.admin_fails(&["member", "add", "--vo", "nope", "--identity", "local:x"]);
    ca.admin_fails(&[
        "member",
        "add",
        "--vo",
        "vo1",
        "--identity",
        "local:x",
        "--vo-id",
        "nope",
    ]);
    ca.admin_fails(&["member", "add", "--vo", "vo1", "--identity", "alice"]);
    let err = ca.admin_fails(&[
        "member",
        "add",
        "--vo",
        "vo1",
        "--identity",
        "local:bob",
        "--vo-id",
        &v1,
    ]);
    assert!(err.contains("already"), "{err}");

    let members = ca.members("vo1");
    assert_eq!(members.len(), 3);
    let alice: Vec<_> = members
        .iter()
        .filter(|m| m["vo_id"] == v1.as_str())
        .collect();
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[0]["groups"], serde_json::json!(["admins", "ops"]));
    let text = ca.admin(&["member", "list", "--vo", "vo1"]);
    assert!(
        text.contains("radius:alice@uni.example") && text.contains(&v2),
        "{text}"
    );

    // Groups.
    let out = ca.admin(&["group", "add", "--vo", "vo1", "--name", "analysis"]);
    assert!(out.contains("created group analysis"), "{out}");
    ca.admin(&[
        "group", "member", "add", "--vo", "vo1", "--name", "analysis", "--vo-id", &v2,
    ]);
    ca.admin_fails(&[
        "group", "member", "add", "--vo", "vo1", "--name", "analysis", "--vo-id", "nope",
    ]);
    ca.admin_fails(&[
        "group", "member", "add", "--vo", "vo1", "--name", "nope", "--vo-id", &v2,
    ]);
    let groups: serde_json::Value =
        serde_json::from_str(&ca.admin(&["group", "list", "--vo", "vo1", "--json"])).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 3);
    let bob = ca
        .members("vo1")
        .into_iter()
        .find(|m| m["identity"] == "local:bob")
        .unwrap();
    assert_eq!(bob["groups"], serde_json::json!(["analysis"]));
    ca.admin(&[
        "group", "member", "remove", "--vo", "vo1", "--name", "analysis", "--vo-id", &v2,
    ]);
    ca.admin(&["group", "remove", "--vo", "vo1", "--name", "ops"]);
    ca.admin_fails(&["group", "remove", "--vo", "vo1", "--name", "ops"]);
    let alice = ca
        .members("vo1")
        .into_iter()
        .find(|m| m["identity"] == "local:alice")
        .unwrap();
    assert_eq!(alice["groups"], serde_json::json!(["admins"]));

    // Removing one identity keeps the user's other one and VO ID.
    ca.admin(&[
        "member",
        "remove",
        "--vo",
        "vo1",
        "--identity",
        "local:alice",
    ]);
    ca.admin_fails(&[
        "member",
        "remove",
        "--vo",
        "vo1",
        "--identity",
        "local:alice",
    ]);
    let members = ca.members("vo1");
    assert_eq!(members.len(), 2);
    assert!(members
        .iter()
        .any(|m| m["identity"] == "radius:alice@uni.example" && m["vo_id"] == v1.as_str()));

    // Local users: argon2id hashes, file mode 0600.
    ca.add_user("carol", "correct horse");
    let users = std::fs::read_to_string(ca.dir.join("users")).unwrap();
    assert!(users.contains("carol:$argon2id$"), "{users}");
    assert!(!users.contains("correct horse"));
    assert_eq!(mode(&ca.dir.join("users")), 0o600);
    ca.admin(&["user", "remove", "--user", "carol"]);
    assert!(!std::fs::read_to_string(ca.dir.join("users"))
        .unwrap()
        .contains("carol"));
    // --password-stdin is required.
    ca.admin_fails(&["user", "add", "--user", "dave"]);
    // The audit log starts empty.
    assert!(ca.audit().is_empty());
}

/// The server key, the CA key and an AA key must be readable by their owner
/// only: `serve` refuses to start otherwise (and `init` refuses to reuse a
/// CA key that others may read), naming the file and `chmod 600`.
#[test]
fn keys_readable_by_others_are_refused() {
    let ca = CaDir::init();
    let d = &ca.dir;
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    for key in ["server.key", "ca.key", "aa/vo1.key"] {
        let path = d.join(key);
        set(&path, 0o644);
        let (ok, out, err) = run(&["serve", "--config", ca.config.to_str().unwrap()], None);
        assert!(!ok, "{key}: served with a 0644 key: {out}");
        assert!(out.is_empty(), "{key}: nothing served: {out}");
        assert!(err.contains(path.to_str().unwrap()), "{key}: {err}");
        assert!(err.contains("mode 644"), "{key}: {err}");
        assert!(err.contains("chmod 600"), "{key}: {err}");
        set(&path, 0o600);
    }
    set(&d.join("ca.key"), 0o640);
    let (ok, out, err) = run(
        &[
            "init",
            "--dir",
            d.to_str().unwrap(),
            "--org",
            "Test Grid",
            "--vo",
            "vo1",
            "--hostname",
            "localhost",
        ],
        None,
    );
    assert!(!ok, "init reused a 0640 CA key: {out}");
    assert!(err.contains("ca.key") && err.contains("chmod 600"), "{err}");
}

/// `online-ca init` under umask 022 creates the CA directory 0700 and its
/// database 0600; `serve` creates a missing database (and its directory)
/// the same way.
#[test]
fn database_and_directory_are_created_owner_only_under_umask_022() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", script, "sh", BIN, dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("umask 022 && exec \"$1\" init --dir \"$2\" --org 'Test Grid' --vo vo1 --hostname localhost");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.db")), 0o600);
    // Made by the same umask without the fix: what a plain file would get.
    sh("umask 022 && touch \"$2/plain\"");
    assert_eq!(mode(&dir.join("plain")), 0o644);

    // A database elsewhere, created by `admin` (the same code as `serve`).
    let other = tmp.path().join("db/other.db");
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("database = \"sqlite://{}\"\n{text}", other.display()),
    )
    .unwrap();
    sh(&format!(
        "umask 022 && exec \"$1\" admin --config {} member list --vo vo1",
        config.display()
    ));
    assert_eq!(mode(&other), 0o600);
    assert_eq!(mode(other.parent().unwrap()), 0o700);
}

/// `serve` (and `admin`) refuse a database that group or others may read:
/// it holds every membership and the audit log.
#[test]
fn database_readable_by_others_is_refused() {
    let ca = CaDir::init();
    let db = ca.dir.join("ca.db");
    assert_eq!(mode(&db), 0o600);
    for m in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(m)).unwrap();
        let (ok, out, err) = run(&["serve", "--config", ca.config.to_str().unwrap()], None);
        assert!(!ok, "served with a {m:o} database: {out}");
        assert!(out.is_empty(), "nothing served: {out}");
        assert!(
            err.contains(&format!(
                "database {p} has mode {m:03o}; it must be readable by its owner only (chmod 600 {p})",
                p = db.display()
            )),
            "{err}"
        );
        let err = ca.admin_fails(&["member", "list", "--vo", "vo1"]);
        assert!(err.contains("chmod 600"), "{err}");
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let srv = ca.serve();
    assert!(srv.addr.port() > 0);
}
