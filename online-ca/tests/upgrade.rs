//! Schema upgrade from the previous release's database: the SQLite file in
//! tests/fixtures/previous-release/ was written by the online CA of commit
//! 51d32d8 on a real grid of that release (members `demo` and `admin` of
//! vo1, their logins and linked certificates;
//! metadata-manager/tests/fixtures/README.md says how). A copy opened by
//! this release migrates (pseudonyms, host certificates) and keeps every
//! member with the same VO ID.

use online_ca::store::Store;

#[tokio::test]
async fn the_previous_release_database_migrates_and_reads_back() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("ca.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/previous-release/ca.db"
        ),
        &db,
    )
    .expect("copy the fixture");
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("the old database opens and migrates");
    let demo = store
        .membership("vo1", "local:demo")
        .await
        .expect("membership")
        .expect("demo is a member");
    assert_eq!(demo.vo_id, "953e239c-af53-4f16-971e-222e7c7160e2");
    let admin = store
        .membership("vo1", "local:admin")
        .await
        .expect("membership")
        .expect("admin is a member");
    assert!(
        admin.groups.iter().any(|g| g.name == "admins"),
        "admin keeps the admins group: {:?}",
        admin.groups
    );
    assert_eq!(store.member_list("vo1").await.expect("members").len(), 4);
    // The tables this release added are there, empty.
    assert_eq!(
        store
            .pseudonym_of("vo1", &demo.vo_id)
            .await
            .expect("pseudonyms"),
        None
    );
    assert!(store.host_list().await.expect("hosts").is_empty());
}
