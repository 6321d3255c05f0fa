//! Replicas started together on one fresh PostgreSQL database all come up:
//! the schema, `schema_migrations` included, is created once under the
//! migration lock. Before, two managers creating `schema_migrations` at
//! once could fail with "duplicate key value violates unique constraint
//! pg_type_typname_nsp_index" (PostgreSQL's `CREATE TABLE IF NOT EXISTS`
//! is not safe against a concurrent creator), and the losing replica
//! exited at start.

use ibp_testkit::pg::PgCluster;
use metadata_manager::store::{Limits, Store};

/// Openers per round, and rounds (each round on a new database).
const OPENERS: usize = 6;
const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_opening_one_fresh_database_together_all_start() {
    let pg = PgCluster::start();
    let (admin, _) = ibp_service::db::connect(&pg.url, 1).await.expect("connect");
    for round in 0..ROUNDS {
        let db = format!("round{round}");
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .expect("create database");
        let url = format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                let url = url.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    Store::open(&url, 2, Limits::default()).await
                })
            })
            .collect();
        for (i, o) in openers.into_iter().enumerate() {
            let opened = o.await.expect("opener task");
            if let Err(e) = opened {
                panic!("round {round}: opener {i} failed: {e:#}");
            }
        }
        // Every migration recorded once.
        let (pool, _) = ibp_service::db::connect(&url, 1).await.expect("connect");
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY version",
        )
        .fetch_all(&pool)
        .await
        .expect("read schema_migrations");
        assert!(!rows.is_empty());
        for (n, (version, count)) in rows.iter().enumerate() {
            assert_eq!((*version, *count), (n as i64 + 1, 1), "round {round}");
        }
    }
}
