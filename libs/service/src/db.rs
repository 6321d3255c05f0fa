//! Opening a service database and applying its migrations.
//!
//! The services build their queries at run time through sqlx's `Any`
//! driver with `$n` placeholders and portable types, so one set of
//! statements runs on SQLite (one file, nothing to install) and on
//! PostgreSQL (several replicas sharing one database). Migrations are lists
//! of statements applied in order at start, each recorded in
//! `schema_migrations`; on PostgreSQL under an advisory lock, so that
//! replicas starting together do not race.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::Error;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of a sqlx URL, or an error naming the supported schemes.
    pub fn of_url(url: &str) -> Result<Backend, String> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(format!(
                "database URL must start with sqlite:// or postgres://, not {:?}",
                url.split(':').next().unwrap_or("")
            ))
        }
    }
}

/// A URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// For SQLite, a URL that creates a missing database file (`mode=rwc`),
/// unless the URL chooses a mode itself or names an in-memory database.
pub fn with_create(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_string()
    }
}

/// Connects a pool of at most `max_connections` (at least 1), creating a
/// missing SQLite file and switching SQLite to WAL mode, so that readers do
/// not wait for writers.
///
/// Connections are not pinged before use: a ping costs a round trip to the
/// connection (SQLite: to its worker thread) per statement, and a broken
/// connection shows as a query error anyway.
pub async fn connect(url: &str, max_connections: u32) -> Result<(AnyPool, Backend), Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url).map_err(Error::Url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&with_create(url))
        .await
        .map_err(|source| Error::Open {
            url: redact(url),
            source,
        })?;
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await
            .map_err(Error::Wal)?;
    }
    Ok((pool, backend))
}

/// Applies the migrations not yet recorded in `schema_migrations`, in
/// order: migration `i` (from 1) is `migrations[i - 1]`, its statements run
/// in one transaction together with its record. On PostgreSQL each
/// transaction first takes the advisory lock `lock_key`, so that replicas
/// starting together apply each migration once.
pub async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    migrations: &[&[&str]],
    lock_key: i64,
) -> Result<(), Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    for (i, steps) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        let mut tx = pool.begin().await?;
        if backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                .bind(lock_key)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if done {
            continue;
        }
        for sql in *steps {
            sqlx::query(sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| Error::Migration { version, source })?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(ibp_auth::unix_now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

/// Whether a query failed on a unique key (the row exists).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// u64 → BIGINT; values beyond `i64::MAX` are clamped (no byte count or
/// time the services store comes near).
pub fn to_bigint(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// BIGINT → u64; a negative value (a database edited by hand) is an error
/// naming `what` and the value, e.g. `size = -1`.
pub fn from_bigint(what: &str, v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what} = {v}"))
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    #[test]
    fn backends_and_urls() {
        assert_eq!(Backend::of_url("sqlite:///x.db"), Ok(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgresql://h/db"), Ok(Backend::Postgres));
        assert!(Backend::of_url("mysql://h/db")
            .unwrap_err()
            .contains("\"mysql\""));
        assert_eq!(with_create("sqlite:///x.db"), "sqlite:///x.db?mode=rwc");
        assert_eq!(
            with_create("sqlite:///x.db?a=b"),
            "sqlite:///x.db?a=b&mode=rwc"
        );
        assert_eq!(with_create("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(with_create("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://svc:s3cret@db:5432/svc"),
            "postgres://svc:***@db:5432/svc"
        );
        assert_eq!(
            redact("postgres://svc:p@ss@db/svc"),
            "postgres://svc:***@db/svc"
        );
        assert_eq!(redact("postgres://svc@db/svc"), "postgres://svc@db/svc");
        assert_eq!(redact("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
    }

    #[test]
    fn bigints() {
        assert_eq!(to_bigint(5), 5);
        assert_eq!(to_bigint(u64::MAX), i64::MAX);
        assert_eq!(from_bigint("size", 7), Ok(7));
        assert_eq!(from_bigint("size", -1), Err("size = -1".to_string()));
    }

    #[tokio::test]
    async fn migrates_once_and_in_order() {
        const MIGRATIONS: &[&[&str]] = &[
            &[
                "CREATE TABLE t (a BIGINT NOT NULL)",
                "INSERT INTO t (a) VALUES (1)",
            ],
            &["INSERT INTO t (a) VALUES (2)"],
        ];
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        for _ in 0..2 {
            let (pool, backend) = connect(&url, 2).await.unwrap();
            assert_eq!(backend, Backend::Sqlite);
            migrate(&pool, backend, MIGRATIONS, 1).await.unwrap();
            let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM t")
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get("n")
                .unwrap();
            assert_eq!(n, 2);
            pool.close().await;
        }
        // A failing step names its migration and leaves nothing behind.
        let (pool, backend) = connect(&url, 1).await.unwrap();
        let bad: &[&[&str]] = &[
            MIGRATIONS[0],
            MIGRATIONS[1],
            &["INSERT INTO nowhere VALUES (1)"],
        ];
        let e = migrate(&pool, backend, bad, 1).await.unwrap_err();
        assert!(matches!(e, Error::Migration { version: 3, .. }), "{e}");
    }

    #[tokio::test]
    async fn refuses_unknown_schemes() {
        let e = connect("mysql://h/db", 1).await.unwrap_err();
        assert!(
            e.to_string().starts_with("database URL must start with"),
            "{e}"
        );
    }
}
