//! The store's writes on SQLite wait for a write lock another connection
//! holds, instead of failing with "database is locked" (a 500 to the
//! client). CI once saw a put fail so, right after another put's
//! transaction was dropped on a quota refusal: sqlx rolls a dropped
//! transaction back asynchronously, after the store's writer lock is
//! released.

use std::time::Duration;

use ibp_service::db::{begin_write, connect, Backend};
use metadata_manager::acl::Principal;
use metadata_manager::names::NsPath;
use metadata_manager::store::{Limits, Store};

#[tokio::test]
async fn a_write_waits_for_the_sqlite_write_lock_held_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("metadata.db").display());
    let store = Store::open(&url, 4, Limits::default()).await.expect("open");
    store.ensure_root("vo1").await.expect("root");
    let (other, _) = connect(&url, 1).await.expect("second connection");
    let holder = begin_write(&other, Backend::Sqlite).await.expect("lock");

    let owner = Principal::User {
        vo: "vo1".into(),
        id: "u1".into(),
    };
    let path = NsPath::parse("/vo1/d").expect("path");
    let s = store.clone();
    let mut mkdir = tokio::spawn(async move { s.mkdir(&path, &owner).await });
    // Held lock: the mkdir neither fails nor finishes.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut mkdir).await;
    assert!(
        early.is_err(),
        "finished while the lock was held: {early:?}"
    );
    holder.commit().await.expect("release");
    let made = mkdir
        .await
        .expect("join")
        .expect("mkdir after the lock is released");
    assert_eq!(made.path, "/vo1/d");
    let listed = store.entry("/vo1/d").await.expect("lookup");
    assert!(listed.is_some(), "the directory is stored");
}
