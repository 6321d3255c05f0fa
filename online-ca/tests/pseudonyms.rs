//! Pseudonymous VOs (`[vos.<vo>] pseudonymous = true`) with the real
//! `online-ca` binary: the certificate names a stable pseudonym of the VO,
//! never the login; two VOs give unrelated pseudonyms; the operator maps
//! a pseudonym back (`admin pseudonym lookup`) and a login to its
//! pseudonym (`admin pseudonym of`); VOs without the setting keep
//! `CN=local:<user>`.

mod common;

use common::*;
use serde_json::Value;

/// Logs `user` in to `vo`; returns the certificate's subject and the
/// answer's VO ID.
async fn login_subject(
    srv: &Server,
    ca: &CaDir,
    user: &str,
    pw: &str,
    vo: &str,
) -> (String, String) {
    let (csr, key) = new_csr();
    let a = https(
        srv.addr,
        &ca.ca_der(),
        None,
        "POST",
        "/v1/login",
        Some(&login_body("local", user, pw, vo, &csr)),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}\n{}", a.json, srv.log());
    // The credential verifies like any other.
    let id = verify_login(&a.json, &key, &ca.trust());
    assert_eq!(id.vo, vo);
    let der = pem_cert(a.json["certificate"].as_str().unwrap());
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(id.subject, cert.subject().to_string());
    (
        cert.subject().to_string(),
        a.json["vo_id"].as_str().unwrap().to_owned(),
    )
}

/// The pseudonym of a subject `O=Test Grid, CN=pseudonym:<p>`.
fn pseudonym_of(subject: &str) -> String {
    let p = subject
        .strip_prefix("O=Test Grid, CN=pseudonym:")
        .unwrap_or_else(|| panic!("not a pseudonymous subject: {subject}"));
    assert_eq!(p.len(), 16, "{subject}");
    assert!(
        p.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
        "{subject}"
    );
    p.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pseudonymous_vo_names_members_by_a_stable_pseudonym_the_operator_can_map_back() {
    let ca = CaDir::init();
    // vo1 and vo2 pseudonymous; vo3 (added below) is not.
    let (ok, out, err) = run(
        &[
            "init",
            "--dir",
            ca.dir.to_str().unwrap(),
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
    ca.configure("[vos.vo1]\npseudonymous = true\n[vos.vo2]\npseudonymous = true\n[vos.vo3]\npseudonymous = false\n");
    ca.add_user("wonderland-alice", "rabbit-hole");
    ca.add_user("bob", "builder");
    let vo_id1 = ca.add_member("vo1", "local:wonderland-alice", &[]);
    let vo_id2 = ca.add_member("vo2", "local:wonderland-alice", &[]);
    ca.add_member("vo3", "local:wonderland-alice", &[]);
    let bob1 = ca.add_member("vo1", "local:bob", &[]);
    // Before any login there is no pseudonym yet.
    let err = ca.admin_fails(&[
        "pseudonym",
        "of",
        "--vo",
        "vo1",
        "--identity",
        "local:wonderland-alice",
    ]);
    assert!(err.contains("no pseudonym in VO vo1 yet"), "{err}");
    let srv = ca.serve();

    // Two logins to vo1: one pseudonym, never the login name.
    let (s1, id1) = login_subject(&srv, &ca, "wonderland-alice", "rabbit-hole", "vo1").await;
    let (s1b, _) = login_subject(&srv, &ca, "wonderland-alice", "rabbit-hole", "vo1").await;
    assert_eq!(id1, vo_id1);
    assert!(!s1.contains("wonderland"), "{s1}");
    let p1 = pseudonym_of(&s1);
    assert_eq!(pseudonym_of(&s1b), p1, "two logins, two pseudonyms");
    // Neither the login nor the VO ID in the pseudonym.
    assert!(!vo_id1.contains(&p1) && !p1.contains("alice"));

    // vo2: another, unrelated pseudonym for the same login.
    let (s2, id2) = login_subject(&srv, &ca, "wonderland-alice", "rabbit-hole", "vo2").await;
    assert_eq!(id2, vo_id2);
    let p2 = pseudonym_of(&s2);
    assert_ne!(p1, p2, "two VOs must not share a pseudonym");
    // Another member of vo1: another pseudonym.
    let (sb, _) = login_subject(&srv, &ca, "bob", "builder", "vo1").await;
    assert_ne!(pseudonym_of(&sb), p1);

    // vo3 is not pseudonymous: today's subject.
    let (s3, _) = login_subject(&srv, &ca, "wonderland-alice", "rabbit-hole", "vo3").await;
    assert_eq!(s3, "O=Test Grid, CN=local:wonderland-alice");

    // The operator: pseudonym -> VO, VO ID, identities (the login and the
    // certificates linked at login), in either spelling.
    for spelling in [p1.clone(), format!("pseudonym:{p1}")] {
        let out = ca.admin(&["pseudonym", "lookup", &spelling, "--json"]);
        let row: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(row["pseudonym"], p1.as_str(), "{out}");
        assert_eq!(row["vo"], "vo1", "{out}");
        assert_eq!(row["vo_id"], vo_id1.as_str(), "{out}");
        let ids: Vec<&str> = row["identities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(ids.contains(&"local:wonderland-alice"), "{out}");
        assert!(
            ids.iter()
                .any(|i| i.starts_with("cert:") && i.ends_with(&format!("|{s1}"))),
            "{out}"
        );
        assert!(!ids.iter().any(|i| i.contains(&bob1)), "{out}");
    }
    let text = ca.admin(&["pseudonym", "lookup", &p2]);
    assert!(
        text.contains("VO vo2")
            && text.contains(&vo_id2)
            && text.contains("local:wonderland-alice"),
        "{text}"
    );
    // Login -> pseudonym, per VO.
    assert_eq!(
        ca.admin(&[
            "pseudonym",
            "of",
            "--vo",
            "vo1",
            "--identity",
            "local:wonderland-alice"
        ])
        .trim(),
        format!("pseudonym:{p1}")
    );
    assert_eq!(
        ca.admin(&[
            "pseudonym",
            "of",
            "--vo",
            "vo2",
            "--identity",
            "local:wonderland-alice"
        ])
        .trim(),
        format!("pseudonym:{p2}")
    );
    // Unknown pseudonyms and things that are not pseudonyms.
    let err = ca.admin_fails(&["pseudonym", "lookup", "aaaaaaaaaaaaaaaa"]);
    assert!(err.contains("no member has the pseudonym"), "{err}");
    let err = ca.admin_fails(&["pseudonym", "lookup", "local:wonderland-alice"]);
    assert!(err.contains("is not a pseudonym"), "{err}");

    // The audit log keeps both: what was issued (the pseudonym) and to whom.
    let audit = ca.audit();
    assert!(
        audit.iter().any(|r| r["subject"] == s1.as_str()
            && r["identity"] == "local:wonderland-alice"
            && r["vo"] == "vo1"),
        "{audit:?}"
    );

    // A second identity linked to the member's VO ID gets the same
    // pseudonym (pseudonyms belong to members, not to login methods).
    ca.add_user("alice-second", "another");
    ca.add_member("vo1", "local:alice-second", &["--vo-id", &vo_id1]);
    let (s4, _) = login_subject(&srv, &ca, "alice-second", "another", "vo1").await;
    assert_eq!(pseudonym_of(&s4), p1);

    // The pseudonym survives a restart (it is in the database).
    drop(srv);
    let srv = ca.serve();
    let (s5, _) = login_subject(&srv, &ca, "wonderland-alice", "rabbit-hole", "vo1").await;
    assert_eq!(pseudonym_of(&s5), p1);
}

#[test]
fn a_section_for_a_vo_the_ca_lacks_stops_the_ca() {
    let ca = CaDir::init();
    ca.configure("[vos.vo9]\npseudonymous = true\n");
    let log = ca.tmp.path().join("serve.log");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config", ca.config.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("online-ca serve kept running with [vos.vo9] for a VO it lacks");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("[vos.vo9]"), "{err}");
}

#[test]
fn init_makes_new_vos_pseudonymous() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let (ok, out, err) = run(
        &[
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--org",
            "Test Grid",
            "--vo",
            "vo1",
            "--vo",
            "atlas.example",
            "--hostname",
            "localhost",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    let sample = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(
        sample.contains("[vos.vo1]\npseudonymous = true"),
        "{sample}"
    );
    assert!(
        sample.contains("[vos.\"atlas.example\"]\npseudonymous = true"),
        "{sample}"
    );
    // The sample loads (the admin CLI reads it).
    let (ok, out, err) = run(
        &[
            "admin",
            "--config",
            dir.join("config.toml").to_str().unwrap(),
            "group",
            "list",
            "--vo",
            "vo1",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
}
