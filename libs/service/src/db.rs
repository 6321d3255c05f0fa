//! Opening a service database and applying its migrations.
//!
//! The services build their queries at run time through sqlx's `Any`
//! driver with `$n` placeholders and portable types, so one set of
//! statements runs on SQLite (one file, nothing to install) and on
//! PostgreSQL (several replicas sharing one database). Migrations are lists
//! of statements applied in order at start, each recorded in
//! `schema_migrations`; on PostgreSQL under an advisory lock, so that
//! replicas starting together do not race.

use std::path::{Path, PathBuf};
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

/// The file a SQLite URL names (`sqlite://PATH?...` or `sqlite:PATH`,
/// percent-escapes decoded as sqlx does); `None` for an in-memory database
/// or another backend.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(percent_decode(path)))
}

/// `%XX` escapes decoded (an invalid escape is kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Files SQLite keeps next to a database: the database itself, its
/// write-ahead log, its shared-memory index and its rollback journal.
fn sqlite_files(db: &Path) -> [PathBuf; 4] {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [
        db.to_path_buf(),
        with("-wal"),
        with("-shm"),
        with("-journal"),
    ]
}

/// A service database holds secrets (the metadata manager's holds every
/// file's WRITE and MANAGE capabilities), so it is owner-only whatever the
/// umask: a missing database is created mode 0600 (SQLite gives its -wal
/// and -shm files the database's mode), missing directories above it mode
/// 0700; an existing database (or -wal, -shm, -journal file) that group or
/// others have any permission on is refused, naming the file, its mode and
/// `chmod 600`.
pub fn secure_sqlite_file(db: &Path, create: bool) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    if create && !db.exists() {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io("create the database directory", dir))?;
            }
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => tracing::info!(path = %db.display(), "created the database file (mode 0600)"),
            // Created meanwhile (another process): checked below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create the database file", db)(e)),
        }
    }
    for f in sqlite_files(db) {
        let meta = match std::fs::metadata(&f) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("inspect", &f)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Exposed { path: f, mode });
        }
    }
    Ok(())
}

/// Connects a pool of at most `max_connections` (at least 1), creating a
/// missing SQLite file (owner-only, see [`secure_sqlite_file`]; a database
/// others may read is refused) and switching SQLite to WAL mode, so that
/// readers do not wait for writers.
///
/// Connections are not pinged before use: a ping costs a round trip to the
/// connection (SQLite: to its worker thread) per statement, and a broken
/// connection shows as a query error anyway.
pub async fn connect(url: &str, max_connections: u32) -> Result<(AnyPool, Backend), Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url).map_err(Error::Url)?;
    if backend == Backend::Sqlite {
        if let Some(path) = sqlite_path(url) {
            // sqlx creates a missing file only in mode `rwc` (ours unless
            // the URL picks a mode).
            let create = with_create(url).contains("mode=rwc");
            secure_sqlite_file(&path, create)?;
        }
    }
    let busy_ms = SQLITE_BUSY_TIMEOUT.as_millis();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
        })
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
/// starting together apply each migration once. The table
/// `schema_migrations` itself is created under the same lock: PostgreSQL's
/// `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent creator
/// (both pass the check, the second fails on the catalog's unique index).
pub async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    migrations: &[&[&str]],
    lock_key: i64,
) -> Result<(), Error> {
    let mut tx = begin_locked(pool, backend, lock_key).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for (i, steps) in migrations.iter().enumerate() {
        let version = i as i64 + 1;
        let mut tx = begin_locked(pool, backend, lock_key).await?;
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

/// A write transaction that, on PostgreSQL, first takes the
/// transaction-scoped advisory lock `lock_key` (released at commit or
/// rollback).
async fn begin_locked(
    pool: &AnyPool,
    backend: Backend,
    lock_key: i64,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    let mut tx = begin_write(pool, backend).await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
            .bind(lock_key)
            .fetch_optional(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// How long a SQLite statement waits for another connection's write lock
/// before failing as busy (`PRAGMA busy_timeout`; sqlx's default is 5 s).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`:
/// the write lock is taken at the start, waiting up to
/// [`SQLITE_BUSY_TIMEOUT`] for another writer. A deferred `BEGIN` would
/// take it only at the first write, after the transaction's reads, and
/// SQLite then fails at once ("database is locked") if another connection
/// holds it, without waiting: a transaction that read cannot wait for a
/// writer whose changes it has not seen. One such writer is a transaction
/// dropped without commit just before, whose rollback sqlx runs
/// asynchronously on its connection's worker thread. On PostgreSQL it is
/// a plain `BEGIN`.
pub async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
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

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite:///x/m.db"),
            Some(PathBuf::from("/x/m.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///x/m.db?mode=rwc"),
            Some(PathBuf::from("/x/m.db"))
        );
        assert_eq!(sqlite_path("sqlite:m.db"), Some(PathBuf::from("m.db")));
        assert_eq!(
            sqlite_path("sqlite:///x/a%20b.db"),
            Some(PathBuf::from("/x/a b.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///x/100%"),
            Some(PathBuf::from("/x/100%"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    /// A new database is owner-only (and so is a directory made for it);
    /// one that group or others may read is refused with the file, its
    /// mode and the fix.
    #[tokio::test]
    async fn database_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new/sub/m.db");
        let url = format!("sqlite://{}", db.display());
        let (pool, _) = connect(&url, 1).await.unwrap();
        sqlx::query("CREATE TABLE t (a BIGINT)")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        assert_eq!(mode(&dir.path().join("new/sub")), 0o700);
        let wal = dir.path().join("new/sub/m.db-wal");
        assert!(wal.exists(), "WAL mode makes a -wal file");
        assert_eq!(mode(&wal), 0o600);
        pool.close().await;

        for (file, m) in [(&db, 0o644), (&db, 0o640), (&db, 0o604), (&wal, 0o644)] {
            // Closing the pool checkpoints and removes the -wal file: a
            // left-over one (a crash) is checked too.
            if !file.exists() {
                std::fs::write(file, b"").unwrap();
            }
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(m)).unwrap();
            let e = connect(&url, 1).await.unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "database {p} has mode {m:03o}; it holds secrets and must be readable by its owner only (chmod 600 {p})",
                    p = file.display()
                )
            );
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let (pool, _) = connect(&url, 1).await.unwrap();
        pool.close().await;
        // mode 0400 is owner-only too (opening it read-write is SQLite's
        // business).
        assert!(secure_sqlite_file(&db, true).is_ok());
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
