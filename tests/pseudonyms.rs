//! Pseudonymous members on a real grid (issue 21, item 2): vo1 is
//! pseudonymous at the online CA (`[vos.vo1] pseudonymous = true`), so
//! every certificate says `CN=pseudonym:<p>`. A member uploads and shares
//! a file by pseudonym and by display name; afterwards no file of the
//! L-Bone, the metadata manager or a depot (SQLite databases, logs at
//! debug level, data directories) holds a login name, while the CA's
//! database does and `online-ca admin pseudonym lookup` maps back. Also:
//! one pseudonym over two logins, the display name a VO admin sees, and a
//! display name another member carries refused.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ibp_grid::grid::{Daemon, Grid, GridOptions};

/// Login names, distinctive enough that finding one anywhere is a leak.
const ADMIN: &str = "hatter-login";
const ALICE: &str = "alice-login";
const BOB: &str = "bob-login";

fn whoami(g: &Grid, user: &str) -> serde_json::Value {
    serde_json::from_str(&ok(lors(g, user, &["whoami", "--json"]))).expect("whoami --json")
}

/// The pseudonym in a subject `O=Test Grid, CN=pseudonym:<p>`.
fn pseudonym(subject: &str) -> String {
    let p = subject
        .strip_prefix("O=Test Grid, CN=pseudonym:")
        .unwrap_or_else(|| panic!("not a pseudonymous subject: {subject:?}"));
    assert_eq!(p.len(), 16, "{subject}");
    p.to_owned()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The files of `files` whose bytes contain `needle`.
fn holding(files: &[PathBuf], needle: &str) -> Vec<PathBuf> {
    let n = needle.as_bytes();
    files
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            bytes.windows(n.len()).any(|w| w == n)
        })
        .cloned()
        .collect()
}

fn online_ca_admin(g: &Grid, args: &[&str]) -> String {
    let mut c = std::process::Command::new(&g.bins.online_ca);
    c.arg("admin").arg("--config").arg(&g.ca_config).args(args);
    ok(run_limited(c, Duration::from_secs(60)))
}

#[test]
fn no_service_but_the_ca_learns_a_pseudonymous_members_login() {
    let _timer = Timer::start("no_service_but_the_ca_learns_a_pseudonymous_members_login");
    let mut g = start(GridOptions {
        depots: 2,
        users: vec![ADMIN.into(), ALICE.into(), BOB.into()],
        admins: vec![ADMIN.into()],
        pseudonymous: true,
        ..GridOptions::default()
    });
    // From here on every other daemon logs at debug level, so that a
    // login name in any message would show.
    let verbose = vec![("RUST_LOG".to_owned(), "debug".to_owned())];
    g.restart_with_env(Daemon::Lbone, verbose.clone())
        .expect("L-Bone restarts");
    g.restart_with_env(Daemon::MetadataManager, verbose.clone())
        .expect("metadata manager restarts");
    for i in 0..g.depots.len() {
        g.restart_depot_with_env(i, verbose.clone())
            .expect("depot restarts");
    }
    g.wait_lbone_sees_all(Duration::from_secs(30))
        .expect("the L-Bone sees the depots again");

    // Certificates name pseudonyms; the VO IDs are the CA's as always.
    let (wa, wb) = (whoami(&g, ALICE), whoami(&g, BOB));
    let pa = pseudonym(wa["subject"].as_str().unwrap());
    let pb = pseudonym(wb["subject"].as_str().unwrap());
    assert_ne!(pa, pb);
    let (alice_id, bob_id) = (
        wa["vo_id"].as_str().unwrap().to_owned(),
        wb["vo_id"].as_str().unwrap().to_owned(),
    );
    let who = ok(lors(&g, ALICE, &["whoami"]));
    assert!(
        who.contains(&format!("name      : pseudonym:{pa}@vo1\n")),
        "{who}"
    );
    assert!(who.contains("shown as  : (no display name"), "{who}");

    // Stability: a new login, the same pseudonym.
    g.login(ALICE).expect("alice logs in again");
    assert_eq!(
        pseudonym(whoami(&g, ALICE)["subject"].as_str().unwrap()),
        pa,
        "two logins, one pseudonym"
    );

    // Display names: chosen by the member, unique in the VO.
    let who = ok(lors(&g, ALICE, &["whoami", "--set-name", "Alice L."]));
    assert!(who.contains("shown as  : Alice L.@vo1\n"), "{who}");
    let o = lors(&g, BOB, &["whoami", "--set-name", "alice l."]);
    assert_eq!(code(&o), 8, "a conflict: {}", text(&o));
    assert!(
        stderr(&o).contains("another member of VO vo1 is called \"alice l.\""),
        "{}",
        text(&o)
    );
    let o = lors(&g, BOB, &["whoami", "--set-name", "pseudonym:x"]);
    assert_eq!(code(&o), 2, "a usage error: {}", text(&o));
    assert!(stderr(&o).contains("neither ':' nor '@'"), "{}", text(&o));
    ok(lors(&g, BOB, &["whoami", "--set-name", "Bob B."]));

    // Upload and share: by pseudonym, then by display name.
    for u in [ALICE, BOB] {
        keys_init(&g, u);
    }
    let data = bytes(300_000, 21);
    ok(lors(&g, ALICE, &["mkdir", "-p", "/vo1/project"]));
    upload(&g, ALICE, "f.bin", &data, "/vo1/project/f", &[]);
    let out = ok(lors(
        &g,
        ALICE,
        &["share", "/vo1/project/f", &format!("pseudonym:{pb}@vo1")],
    ));
    assert!(out.contains(&format!("user:{bob_id}@vo1")), "{out}");
    download_is(&g, BOB, "/vo1/project/f", &data, "shared by pseudonym");
    ok(lors(
        &g,
        ALICE,
        &["unshare", "/vo1/project/f", &format!("user:{bob_id}@vo1")],
    ));
    let o = lors(&g, BOB, &["download", "/vo1/project/f", "-"]);
    assert_eq!(code(&o), 3, "unshared: {}", text(&o));
    let out = ok(lors(&g, ALICE, &["share", "/vo1/project/f", "Bob B.@vo1"]));
    assert!(out.contains(&format!("user:{bob_id}@vo1")), "{out}");
    download_is(&g, BOB, "/vo1/project/f", &data, "shared by display name");
    // ACL listings show the display names.
    let acl = ok(lors(&g, ALICE, &["acl", "get", "/vo1/project/f"]));
    assert!(acl.contains("\nBob B.@vo1=r\n"), "{acl}");
    assert!(acl.contains("# owner: Alice L.@vo1"), "{acl}");
    // `ls -l` names owners by principal, as in every VO.
    let ls = ok(lors(&g, ALICE, &["ls", "-l", "/vo1/project"]));
    assert!(ls.contains(&format!("user:{alice_id}@vo1")), "{ls}");

    // The VO admin sees pseudonyms and display names, no login.
    let m: serde_json::Value =
        serde_json::from_str(&ok(lors(&g, ADMIN, &["members", "list", "--json"]))).unwrap();
    let members = m["members"].as_array().expect("members");
    let alice_row = members
        .iter()
        .find(|r| r["vo_id"] == alice_id.as_str())
        .unwrap_or_else(|| panic!("alice among {m}"));
    assert_eq!(alice_row["display_name"], "Alice L.", "{m}");
    assert_eq!(
        alice_row["subject"],
        format!("O=Test Grid, CN=pseudonym:{pa}").as_str(),
        "{m}"
    );
    let listed = ok(lors(&g, ADMIN, &["members", "list"]));
    assert!(
        listed.contains(&format!("CN=pseudonym:{pa}  (\"Alice L.\")")),
        "{listed}"
    );
    for login in [ADMIN, ALICE, BOB] {
        assert!(!m.to_string().contains(login), "{m}");
        assert!(!listed.contains(login), "{listed}");
    }

    // The operator maps the pseudonym back (abuse handling).
    let row: serde_json::Value = serde_json::from_str(&online_ca_admin(
        &g,
        &["pseudonym", "lookup", &format!("pseudonym:{pa}"), "--json"],
    ))
    .unwrap();
    assert_eq!(row["vo"], "vo1", "{row}");
    assert_eq!(row["vo_id"], alice_id.as_str(), "{row}");
    assert!(
        row["identities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == &format!("local:{ALICE}")),
        "{row}"
    );
    assert_eq!(
        online_ca_admin(
            &g,
            &[
                "pseudonym",
                "of",
                "--vo",
                "vo1",
                "--identity",
                &format!("local:{BOB}")
            ]
        )
        .trim(),
        format!("pseudonym:{pb}")
    );

    // What each service holds on disk: databases, logs, data.
    let mut services = vec![g.dir.join("lbone"), g.dir.join("mdm")];
    services.extend(g.depots.iter().map(|d| d.dir.clone()));
    let files: Vec<PathBuf> = services.iter().flat_map(|d| files_under(d)).collect();
    // The scan reads what it must: both databases, every daemon's log, the
    // depots' data.
    for want in ["lbone/", "mdm/"] {
        assert!(
            files.iter().any(|f| {
                let s = f.display().to_string();
                s.contains(want) && (s.ends_with(".db") || s.ends_with(".sqlite"))
            }),
            "no database under {want}: {files:?}"
        );
    }
    for d in &services {
        let log = d.join("stderr.log");
        assert!(files.contains(&log), "{} not scanned", log.display());
    }
    for d in &g.depots {
        assert!(
            files.iter().any(|f| f.starts_with(&d.data_dir)),
            "{}: no data scanned",
            d.data_dir.display()
        );
    }
    // The scan finds what is there: the pseudonym and the display name
    // are in the metadata manager's files, debug lines in the logs.
    assert!(
        !holding(&files, &format!("pseudonym:{pa}")).is_empty(),
        "the pseudonym is nowhere: the scan is blind"
    );
    assert!(!holding(&files, "Alice L.").is_empty());
    assert!(
        services
            .iter()
            .all(|d| !holding(&[d.join("stderr.log")], "DEBUG").is_empty()),
        "a daemon did not log at debug level"
    );
    for login in [ADMIN, ALICE, BOB] {
        let leaks = holding(&files, login);
        assert!(
            leaks.is_empty(),
            "login name {login:?} found in {leaks:?} (only the CA may know it)"
        );
    }
    // The CA's database does hold it.
    let ca_files = files_under(&g.dir.join("ca"));
    let ca_db: Vec<PathBuf> = ca_files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ca.db"))
        })
        .cloned()
        .collect();
    for login in [ALICE, BOB] {
        assert!(
            !holding(&ca_db, login).is_empty(),
            "the CA's database {ca_db:?} lacks {login}"
        );
    }
}
