//! Schema upgrade from the previous release's database: the SQLite file in
//! tests/fixtures/previous-release/ was written by the metadata manager of
//! commit 51d32d8 (the release before the per-version allocations, the
//! mtimes and the display names), through a real grid of that release:
//! `lors mkdir`, two versions of `/vo1/demo/a.bin` (3,000,000 then
//! 1,000,000 bytes), `/vo1/demo/sub/b.bin` (500,000 bytes, EC 2+1), ACLs
//! `vo:vo1=r` on b.bin and as the default of sub/ (tests/fixtures/README.md
//! says how it was made). Opening a copy with this release migrates it,
//! and everything reads back as it was written.

use metadata_manager::store::{Limits, Store};

const OWNER: &str = "user:953e239c-af53-4f16-971e-222e7c7160e2@vo1";

#[tokio::test]
async fn the_previous_release_database_migrates_and_reads_back() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("metadata.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/previous-release/metadata.db"
        ),
        &db,
    )
    .expect("copy the fixture");
    // As an operator's database is (a group- or world-readable one is
    // refused).
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let url = format!("sqlite://{}", db.display());
    let store = Store::open(&url, 2, Limits::default())
        .await
        .expect("the old database opens and migrates");

    // Every migration of this release ran.
    let pool = Store::open_old_schema(&url, usize::MAX)
        .await
        .expect("reopen");
    let done: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("schema_migrations");
    assert_eq!(done, (1..=done.len() as i64).collect::<Vec<_>>());
    assert!(done.len() >= 5, "migrated from 2 to the current: {done:?}");

    let a = store
        .entry("/vo1/demo/a.bin")
        .await
        .expect("read")
        .expect("a.bin is there");
    assert_eq!((a.current_version, a.size), (2, 1_000_000));
    assert_eq!(
        a.owner.as_ref().map(ToString::to_string).as_deref(),
        Some(OWNER)
    );
    let versions = store.versions(&a.id).await.expect("versions");
    assert!(
        versions.iter().all(|v| !v.unreadable),
        "every old version's allocations recorded: {versions:?}"
    );
    let sizes: Vec<u64> = versions.iter().map(|v| v.row.size).collect();
    assert_eq!(sizes.len(), 2, "{versions:?}");
    assert!(
        sizes.contains(&3_000_000) && sizes.contains(&1_000_000),
        "{sizes:?}"
    );
    for (v, xml) in store.exnodes(&a.id).await.expect("exnodes") {
        let x = exnode::from_xml(xml.as_bytes()).expect("an old exNode parses");
        assert_eq!(x.size, if v == 1 { 3_000_000 } else { 1_000_000 });
    }

    let b = store
        .entry("/vo1/demo/sub/b.bin")
        .await
        .expect("read")
        .expect("b.bin is there");
    assert_eq!((b.current_version, b.size), (1, 500_000));
    let acl = store.acl(&b.id, false).await.expect("acl");
    assert_eq!(acl.len(), 1, "{acl:?}");
    assert_eq!(acl[0].principal.to_string(), "vo:vo1");
    let sub = store
        .entry("/vo1/demo/sub")
        .await
        .expect("read")
        .expect("sub/");
    let default = store.acl(&sub.id, true).await.expect("default acl");
    assert_eq!(default.len(), 1, "{default:?}");

    // Usage from the allocations backfilled at the upgrade: each allocation
    // once (3,000,000 + 1,000,000 + 3 shares of 250,000).
    let usage = store.usage("vo1").await.expect("usage");
    let mine = usage
        .iter()
        .find(|u| u.owner == OWNER)
        .unwrap_or_else(|| panic!("the owner's usage: {usage:?}"));
    assert_eq!((mine.files, mine.versions), (2, 3), "{mine:?}");
    assert_eq!(mine.logical, 1_500_000);
    assert_eq!(mine.stored, 4_750_000);

    // The member, without the display name this release added.
    let m = store
        .member("vo1", "953e239c-af53-4f16-971e-222e7c7160e2")
        .await
        .expect("member")
        .expect("demo is a member");
    assert_eq!(m.display_name, None);
    store.close().await;
}
