//! A write transaction on SQLite waits for another connection's write lock
//! instead of failing as "database is locked".

use std::time::Duration;

use ibp_service::db::{begin_write, connect, Backend};

async fn pools(dir: &std::path::Path) -> (sqlx::AnyPool, sqlx::AnyPool) {
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let (a, backend) = connect(&url, 2).await.expect("open");
    assert_eq!(backend, Backend::Sqlite);
    sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
        .execute(&a)
        .await
        .expect("create");
    let (b, _) = connect(&url, 1).await.expect("open again");
    (a, b)
}

/// A read followed by a write, as the stores do (look up, then insert).
async fn read_then_write(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT k FROM t WHERE k = $1")
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO t (k) VALUES ($1)")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[tokio::test]
async fn a_deferred_transaction_that_read_fails_at_once_on_a_held_write_lock() {
    // Why begin_write exists: this is what the stores did before.
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, other) = pools(dir.path()).await;
    let holder = begin_write(&other, Backend::Sqlite).await.expect("lock");
    let tx = pool.begin().await.expect("begin");
    let err = read_then_write(tx, "a")
        .await
        .expect_err("the write lock is held elsewhere");
    assert!(
        err.to_string().contains("database is locked"),
        "unexpected error: {err}"
    );
    holder.rollback().await.expect("release");
}

#[tokio::test]
async fn begin_write_waits_for_a_held_write_lock_and_then_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, other) = pools(dir.path()).await;
    let holder = begin_write(&other, Backend::Sqlite).await.expect("lock");
    let mut op = tokio::spawn(async move {
        let tx = begin_write(&pool, Backend::Sqlite).await?;
        read_then_write(tx, "a").await?;
        sqlx::query("SELECT k FROM t")
            .fetch_all(&pool)
            .await
            .map(|rows| rows.len())
    });
    // While the lock is held the write neither fails nor completes.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut op).await;
    assert!(
        early.is_err(),
        "finished while the lock was held: {early:?}"
    );
    holder.commit().await.expect("release");
    let rows = op.await.expect("join").expect("the write succeeds");
    assert_eq!(rows, 1);
}
