//! Files that stay alive unattended (issue 19; docs/maintenance.md), on a
//! real grid: a maintenance grant enrolled with a login proxy keeps
//! `lors refresh --all` and `lors check --all` working after the proxy
//! expired (a proxy lifetime shorter than the maintenance interval), and
//! the depots' allocations really are extended; the maintenance proxy can
//! do nothing else (exit 3, "maintenance-only"); revoked, removed, wrong
//! or exposed credentials and no credential at all fail loudly with the
//! documented exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Grid, GridOptions};

fn now() -> i64 {
    ibp_auth::unix_now()
}

/// `lors ARGS` as `user` with extra environment (an expired proxy, another
/// maintenance file).
fn lors_env(g: &Grid, user: &str, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = lors_cmd(g, user, args);
    for (k, v) in env {
        c.env(k, v);
    }
    run_limited(c, LORS_LIMIT)
}

fn expiries(st: &serde_json::Value) -> Vec<i64> {
    mappings(st)
        .iter()
        .map(|m| {
            m["expires"]
                .as_i64()
                .unwrap_or_else(|| panic!("no expires in {m}"))
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// Enrolls `user` (with the grid's login proxy); the credential file.
fn enroll(g: &Grid, user: &str) -> PathBuf {
    enroll_at(g, user, "maintenance.json")
}

/// [`enroll`] into `name` in the user's directory.
fn enroll_at(g: &Grid, user: &str, name: &str) -> PathBuf {
    let file = g.user(user).dir.join(name);
    let o = lors_env(
        g,
        user,
        &[("LORS_MAINTENANCE_FILE", &file)],
        &["maintenance", "enroll", "--valid", "30d"],
    );
    let out = ok(o);
    assert!(out.contains("grant"), "{out}");
    // Created owner-only.
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    file
}

/// Seconds left on the depot of every allocation of a legacy file, asked
/// with MANAGE PROBE on the depot itself (not from the exNode).
fn depot_seconds_left(g: &Grid, user: &str, path: &str) -> Vec<i64> {
    let trust = lors::credentials::TrustSource::Dir(g.trust_dir.clone())
        .load()
        .expect("trust");
    let cred = ibp_auth::ProxyCredential::load(&g.proxy(user)).expect("proxy");
    let mdm = lors::MetadataClient::connect(&g.mdm_url, &trust, &cred).expect("mdm");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let fv = mdm.get(path, None).await.expect("get");
        let mut out = Vec::new();
        for m in &fv.exnode.mappings {
            let cap: ibp_proto::Capability = m
                .manage
                .as_deref()
                .expect("a manage capability")
                .parse()
                .expect("capability");
            let mut c = ibp_depot_client::IbpClient::connect(&m.depot)
                .await
                .expect("depot");
            let p = tokio::time::timeout(Duration::from_secs(10), c.probe(&cap))
                .await
                .expect("probe in time")
                .expect("probe");
            out.push(p.seconds_left);
        }
        out
    })
}

#[test]
fn a_maintenance_grant_keeps_refresh_and_check_working_after_the_proxy_expired() {
    let _timer =
        Timer::start("a_maintenance_grant_keeps_refresh_and_check_working_after_the_proxy_expired");
    let mut g = start(GridOptions::default());
    keys_init(&g, "alice");
    let dir = g.user("alice").dir.clone();
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice/tree/sub"]));
    let a = bytes(200_000, 1);
    let b = bytes(100_000, 2);
    upload(
        &g,
        "alice",
        "a.bin",
        &a,
        "/vo1/alice/tree/a",
        &["--duration", "1h", "--copies", "2"],
    );
    upload(
        &g,
        "alice",
        "b.bin",
        &b,
        "/vo1/alice/tree/sub/b",
        &["--duration", "1h", "--security", "legacy"],
    );
    let before = depot_seconds_left(&g, "alice", "/vo1/alice/tree/sub/b");
    assert!(before.iter().all(|&s| s <= 3600), "{before:?}");

    // No proxy and no maintenance credential: exit 1, saying both.
    let none = dir.join("none");
    let o = lors_env(
        &g,
        "alice",
        &[("X509_USER_PROXY", &none), ("LORS_MAINTENANCE_FILE", &none)],
        &["refresh", "--all", "/vo1/alice/tree"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("no proxy at"), "{e}");
    assert!(e.contains("no maintenance credential"), "{e}");

    // Enroll, then let the login proxy expire: a proxy of 1 s below the
    // login certificate, waited out (shorter than any maintenance interval).
    let file = enroll(&g, "alice");
    let expired = dir.join("expired-proxy");
    expired_proxy(&g, "alice", &expired);
    let env = [
        ("X509_USER_PROXY", expired.as_path()),
        ("LORS_MAINTENANCE_FILE", file.as_path()),
    ];
    // Without the grant the expired proxy is refused (exit 1), never 0.
    let o = lors_env(
        &g,
        "alice",
        &[
            ("X509_USER_PROXY", &expired),
            ("LORS_MAINTENANCE_FILE", &none),
        ],
        &["refresh", "--all", "/vo1/alice/tree"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stderr(&o).contains("expired"), "{}", text(&o));

    // The cron line of docs/user.md section 6: silent on success.
    let t0 = now();
    let o = lors_env(
        &g,
        "alice",
        &env,
        &[
            "refresh",
            "--all",
            "/vo1/alice/tree",
            "--duration",
            "2d",
            "--quiet",
        ],
    );
    assert_eq!(
        code(&o),
        0,
        "refresh --all --quiet with the grant: {}",
        text(&o)
    );
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", text(&o));
    // Without --quiet it says what acted and what it did.
    let o = lors_env(
        &g,
        "alice",
        &env,
        &["refresh", "--all", "/vo1/alice/tree", "--duration", "2d"],
    );
    assert_eq!(code(&o), 0, "refresh --all with the grant: {}", text(&o));
    assert!(stderr(&o).contains("maintenance grant"), "{}", text(&o));
    assert!(stdout(&o).contains("2 file(s) refreshed"), "{}", text(&o));
    // The exNodes and the depots both say two days now.
    for p in ["/vo1/alice/tree/a", "/vo1/alice/tree/sub/b"] {
        let exp = expiries(&stat_json(&g, "alice", p));
        assert!(!exp.is_empty());
        assert!(
            exp.iter().all(|&e| e >= t0 + 2 * 86_400 - 60),
            "{p}: {exp:?}"
        );
    }
    let after = depot_seconds_left(&g, "alice", "/vo1/alice/tree/sub/b");
    assert!(
        after.iter().all(|&s| s >= 2 * 86_400 - 120),
        "depot PROBE after the refresh: {after:?} (before {before:?})"
    );
    // The refreshed versions still read back as they were.
    download_is(&g, "alice", "/vo1/alice/tree/a", &a, "after refresh");
    download_is(&g, "alice", "/vo1/alice/tree/sub/b", &b, "after refresh");

    // `check --all` with the grant reports the whole tree (silent with
    // --quiet when all is good, as in the cron line).
    let o = lors_env(
        &g,
        "alice",
        &env,
        &["check", "--all", "/vo1/alice/tree", "--quiet"],
    );
    assert_eq!(code(&o), 0, "check --all --quiet: {}", text(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", text(&o));
    let o = lors_env(&g, "alice", &env, &["check", "--all", "/vo1/alice/tree"]);
    assert_eq!(code(&o), 0, "check --all: {}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("checked 2 file(s): 2 good, 0 bad"), "{out}");
    assert!(out.contains("good  /vo1/alice/tree/sub/b"), "{out}");

    // A damaged file makes check --all exit 11, naming it: the depot of
    // one replica of `a` is killed.
    let st = stat_json(&g, "alice", "/vo1/alice/tree/a");
    let depot = mappings(&st)[0]["depot"]
        .as_str()
        .expect("depot")
        .to_owned();
    let i = g
        .depots
        .iter()
        .position(|d| d.address() == depot || d.legacy_addr == depot)
        .unwrap_or_else(|| panic!("no depot {depot}"));
    g.kill_depot(i);
    let o = lors_env(&g, "alice", &env, &["check", "--all", "/vo1/alice/tree"]);
    assert_eq!(code(&o), 11, "check --all with a depot down: {}", text(&o));
    assert!(
        stdout(&o).contains("BAD   /vo1/alice/tree/a"),
        "{}",
        text(&o)
    );
    assert!(stderr(&o).contains("bad"), "{}", text(&o));
    // `repair` with the grant rebuilds the lost replica on the third
    // depot (new allocations, a new version with the same key).
    g.wait_lbone_sees_down(i, Duration::from_secs(60))
        .expect("the L-Bone sees the depot down");
    let o = lors_env(&g, "alice", &env, &["repair", "/vo1/alice/tree/a"]);
    // Exit 11 only because the dead depot's allocation could not be freed
    // (named); nothing is unrecoverable.
    let out = stdout(&o);
    assert!(
        code(&o) == 0
            || (code(&o) == 11 && out.contains("not freed: ") && !out.contains("unrecoverable")),
        "repair with the grant: {}",
        text(&o)
    );
    assert!(out.contains("1 recreated"), "{}", text(&o));
    let o = lors_env(&g, "alice", &env, &["check", "/vo1/alice/tree/a"]);
    assert_eq!(code(&o), 0, "check after the repair: {}", text(&o));
    download_is(
        &g,
        "alice",
        "/vo1/alice/tree/a",
        &a,
        "after a maintenance repair",
    );

    // A credential file others may read is refused (exit 1, chmod 600).
    let exposed = dir.join("exposed.json");
    std::fs::copy(&file, &exposed).expect("copy");
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = lors_env(
        &g,
        "alice",
        &[
            ("X509_USER_PROXY", &expired),
            ("LORS_MAINTENANCE_FILE", &exposed),
        ],
        &["refresh", "--all", "/vo1/alice/tree"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", text(&o));

    // The CA honours it, and says when it was last used.
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &file)],
        &["maintenance", "status"],
    );
    assert_eq!(code(&o), 0, "status: {}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("state     : active"), "{out}");
    assert!(!out.contains("last used : never"), "{out}");

    // Revoked: keep a copy, revoke with the token (the file is removed),
    // then the copy is refused by the CA with the revocation named.
    let copy = dir.join("copy.json");
    std::fs::copy(&file, &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &file)],
        &["maintenance", "revoke"],
    );
    assert_eq!(code(&o), 0, "revoke: {}", text(&o));
    assert!(!file.exists(), "revoke leaves the file");
    let o = lors_env(
        &g,
        "alice",
        &[
            ("X509_USER_PROXY", &expired),
            ("LORS_MAINTENANCE_FILE", &copy),
        ],
        &["refresh", "--all", "/vo1/alice/tree"],
    );
    assert_eq!(code(&o), 1, "refresh after revoke: {}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("revoked"), "{e}");
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &copy)],
        &["maintenance", "status"],
    );
    assert_eq!(code(&o), 1, "status of a revoked grant: {}", text(&o));
}

#[test]
fn a_maintenance_proxy_may_do_nothing_but_maintain_its_own_files() {
    let _timer = Timer::start("a_maintenance_proxy_may_do_nothing_but_maintain_its_own_files");
    let g = start(GridOptions::default());
    for u in ["alice", "bob"] {
        keys_init(&g, u);
    }
    let dir = g.user("alice").dir.clone();
    ok(lors(&g, "alice", &["mkdir", "-p", "/vo1/alice/m"]));
    let a = bytes(50_000, 3);
    upload(&g, "alice", "a.bin", &a, "/vo1/alice/m/a", &[]);
    ok(lors(&g, "bob", &["mkdir", "-p", "/vo1/bob"]));
    upload(&g, "bob", "s.bin", &bytes(10_000, 4), "/vo1/bob/s", &[]);
    let alice = format!("user:{}@vo1", g.user("alice").vo_id);
    ok(lors(&g, "bob", &["share", "/vo1/bob/s", &alice]));
    download_is(&g, "alice", "/vo1/bob/s", &bytes(10_000, 4), "shared");

    // A maintenance proxy, as `refresh` gets one, written to a file so
    // that every other command can be tried with it.
    let file = enroll(&g, "alice");
    let trust = lors::credentials::TrustSource::Dir(g.trust_dir.clone())
        .load()
        .expect("trust");
    let grant = lors::maintenance::GrantFile::load(&file)
        .expect("load")
        .expect("a grant");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let m = rt
        .block_on(grant.proxy(&trust, &file))
        .expect("maintenance proxy");
    assert!(m.groups.is_empty(), "a maintenance proxy carries no groups");
    assert!(m.not_after <= now() + 3600 + 60, "at most an hour");
    let mproxy = dir.join("maintenance-proxy");
    m.credential.save(&mproxy).expect("save");
    let env = [("X509_USER_PROXY", mproxy.as_path())];
    let refused = |args: &[&str], what: &str| {
        let o = lors_env(&g, "alice", &env, args);
        assert_eq!(code(&o), 3, "{what}: {}", text(&o));
        assert!(
            stderr(&o).contains("maintenance-only"),
            "{what}: {}",
            text(&o)
        );
    };
    let src = write(&dir, "new.bin", &bytes(1000, 5));
    refused(
        &["upload", s(&src), "/vo1/alice/m/new"],
        "upload of a new file",
    );
    refused(&["rm", "/vo1/alice/m/a"], "rm");
    refused(&["mkdir", "/vo1/alice/m/d"], "mkdir");
    refused(&["share", "/vo1/alice/m/a", "user:x@vo1"], "share");
    refused(
        &["acl", "set", "/vo1/alice/m/a", "--access", "vo:vo1=r"],
        "acl set",
    );
    let out = dir.join("s.out");
    refused(
        &["download", "/vo1/bob/s", s(&out)],
        "reading a file another user shared",
    );
    assert!(!out.exists());
    // Its own file: the data key is not served to a maintenance proxy, so
    // it cannot decrypt even what it maintains.
    let own = dir.join("a.out");
    let o = lors_env(&g, "alice", &env, &["download", "/vo1/alice/m/a", s(&own)]);
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(!own.exists());
    // But it refreshes and checks it (the file survives, readable).
    let o = lors_env(&g, "alice", &env, &["refresh", "/vo1/alice/m/a"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = lors_env(&g, "alice", &env, &["check", "/vo1/alice/m/a"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    download_is(
        &g,
        "alice",
        "/vo1/alice/m/a",
        &a,
        "after a maintenance refresh",
    );
    // Its certificate is nobody at the CA: no full attributes for it.
    let ca = lors::credentials::CaClient::new(&g.ca_url, &trust, Some(&m.credential))
        .expect("CA client");
    let e = rt
        .block_on(ca.attributes("vo1", 3600))
        .expect_err("attributes for a maintenance certificate");
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("not a member"), "{e}");
    // Nor can it enroll itself a new grant.
    let o = lors_env(
        &g,
        "alice",
        &[
            ("X509_USER_PROXY", mproxy.as_path()),
            ("LORS_MAINTENANCE_FILE", dir.join("other.json").as_path()),
        ],
        &["maintenance", "enroll"],
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(stderr(&o).contains("maintenance-only"), "{}", text(&o));

    // A wrong token, and an unknown grant, get the same refusal (exit 1).
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    let mut said = Vec::new();
    for (grant, token) in [
        (v["grant"].as_str().expect("grant").to_owned(), "wrong"),
        ("00000000-0000-4000-8000-000000000000".to_owned(), "wrong"),
    ] {
        v["grant"] = grant.clone().into();
        v["token"] = token.into();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, serde_json::to_vec(&v).expect("json")).expect("write");
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let o = lors_env(
            &g,
            "alice",
            &[("LORS_MAINTENANCE_FILE", &bad)],
            &["maintenance", "status"],
        );
        assert_eq!(code(&o), 1, "{}", text(&o));
        let e = stderr(&o);
        assert!(e.contains("unknown grant or wrong token"), "{e}");
        said.push(e.replace(&grant, "GRANT"));
    }
    assert_eq!(
        said[0], said[1],
        "the refusal reveals whether the grant exists"
    );

    // With the login proxy, from anywhere: --all revokes the grant whose
    // file is here and the one left elsewhere.
    let second = dir.join("second.json");
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &second)],
        &["maintenance", "enroll"],
    );
    assert_eq!(code(&o), 0, "second enroll: {}", text(&o));
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &second)],
        &["maintenance", "revoke", "--all"],
    );
    assert_eq!(code(&o), 0, "revoke --all: {}", text(&o));
    assert!(
        stdout(&o).contains("revoked 2 maintenance grant(s)"),
        "{}",
        text(&o)
    );
    assert!(!second.exists(), "revoke --all leaves the local credential");
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &file)],
        &["maintenance", "status"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("state     : revoked"), "{out}");
    assert!(out.contains("revoked   : "), "{out}");
    // So does `status --all` with the login proxy.
    let o = lors(&g, "alice", &["maintenance", "status", "--all", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&ok(o)).expect("JSON");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|g| g["state"] == "revoked"), "{all:?}");
    // The operator sees both, revoked by the member.
    let ca_admin = |args: &[&str]| {
        let mut c = std::process::Command::new(&g.bins.online_ca);
        c.arg("admin").arg("--config").arg(&g.ca_config).args(args);
        run_limited(c, Duration::from_secs(60))
    };
    let o = ca_admin(&[
        "maintenance",
        "list",
        "--vo",
        "vo1",
        "--vo-id",
        &g.user("alice").vo_id,
    ]);
    let listed = ok(o);
    assert_eq!(listed.matches("\trevoked\t").count(), 2, "{listed}");
    assert!(listed.contains(&grant.grant), "{listed}");

    // A grant in its last week warns, even with --quiet (cron mails it).
    let short = dir.join("short.json");
    let o = lors_env(
        &g,
        "alice",
        &[("LORS_MAINTENANCE_FILE", &short)],
        &["maintenance", "enroll", "--valid", "2d"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let none = dir.join("none");
    let o = lors_env(
        &g,
        "alice",
        &[
            ("X509_USER_PROXY", &none),
            ("LORS_MAINTENANCE_FILE", &short),
        ],
        &["check", "--quiet", "/vo1/alice/m/a"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(stderr(&o).contains("renew it"), "{}", text(&o));

    // A VO admin (alice) revokes a member's grant with her login proxy;
    // another member (carol) may not.
    let bob_file = enroll(&g, "bob");
    let bob_grant = lors::maintenance::GrantFile::load(&bob_file)
        .expect("load")
        .expect("bob's grant")
        .grant
        .clone();
    let o = lors(
        &g,
        "carol",
        &["maintenance", "revoke", "--grant", &bob_grant],
    );
    assert_eq!(code(&o), 7, "carol revokes bob's grant: {}", text(&o));
    let o = lors(
        &g,
        "alice",
        &["maintenance", "revoke", "--grant", &bob_grant],
    );
    assert_eq!(
        code(&o),
        0,
        "the VO admin revokes bob's grant: {}",
        text(&o)
    );
    assert!(
        stdout(&o).contains("revoked 1 maintenance grant(s)"),
        "{}",
        text(&o)
    );
    let o = lors_env(
        &g,
        "bob",
        &[("LORS_MAINTENANCE_FILE", &bob_file)],
        &["maintenance", "status"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stdout(&o).contains("by admin"), "{}", text(&o));

    // A member removed at the CA gets no more maintenance proxies.
    let bob_file = enroll_at(&g, "bob", "bob2.json");
    let o = ca_admin(&["member", "remove", "--vo", "vo1", "--identity", "local:bob"]);
    assert!(o.status.success(), "member remove: {}", text(&o));
    let none = g.user("bob").dir.join("none");
    let o = lors_env(
        &g,
        "bob",
        &[
            ("X509_USER_PROXY", &none),
            ("LORS_MAINTENANCE_FILE", &bob_file),
        ],
        &["refresh", "--all", "/vo1/bob"],
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(stderr(&o).contains("member removed"), "{}", text(&o));
}
