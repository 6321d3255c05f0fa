//! Schema upgrade from the previous release's database: the SQLite file in
//! tests/fixtures/previous-release/ was written by the L-Bone of commit
//! 51d32d8 on a real grid of that release (three depots registered and
//! polled; metadata-manager/tests/fixtures/README.md says how). A copy
//! opened by this release migrates and serves the same registrations.

use lbone::store::Store;

#[tokio::test]
async fn the_previous_release_database_migrates_and_reads_back() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("lbone.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/previous-release/lbone.db"
        ),
        &db,
    )
    .expect("copy the fixture");
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("the old database opens and migrates");
    let depots = store.depots(Some("vo1")).await.expect("depots");
    let mut names: Vec<&str> = depots
        .iter()
        .map(|d| d.registration.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["depot-0", "depot-1", "depot-2"]);
    for d in &depots {
        assert_eq!(d.registration.host, "127.0.0.1");
        assert!(d.registration.tls_port.is_some(), "{:?}", d.registration);
        assert!(
            d.status.is_some(),
            "polled by the old release: {:?}",
            d.registration.name
        );
    }
    assert_eq!(store.poll_targets().await.expect("poll targets").len(), 3);
    store.close().await;
}
