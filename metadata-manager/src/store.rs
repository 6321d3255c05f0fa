//! The metadata manager's database. All of its SQL lives in this module.
//!
//! Queries are built at run time through sqlx's `Any` driver with `$n`
//! placeholders and portable types (TEXT, BIGINT), so that the same
//! statements and migrations run on SQLite (the default) and PostgreSQL
//! (several stateless replicas on one database). Migrations are applied in
//! order at start by `ibp_service::db::migrate`, recorded in
//! `schema_migrations`; on PostgreSQL under an advisory lock so that
//! replicas starting together do not race.
//!
//! Tables:
//! - `entries (id, vo, path, parent, kind, owner, current_version, size,
//!   created_at, updated_at)`: directories and files by full path; `id` is
//!   the file UUID for files (stable over versions and moves), a fresh UUID
//!   for directories; `owner` is a principal (`user:ID@VO`), empty for a VO
//!   root.
//! - `versions (file, version, size, stored, exnode, key_id, created_by,
//!   created_at)`: every version of every file with its exNode.
//! - `acl (entry, inherit, principal, rights)`: access entries (`inherit =
//!   0`) and, on directories, default entries copied to new children
//!   (`inherit = 1`).
//! - `wrapped_keys (file, version, recipient, wrapped)`: the data key of a
//!   version wrapped for one recipient (`user:ID@VO` or `escrow:VO`).
//! - `members (vo, vo_id, subject, public_key, first_seen, removed_at,
//!   removed_by)`: users known to the manager, their key-wrapping public
//!   key, and whether a VO admin removed them.
//! - `vo_groups (vo, group_id, name)`: groups seen in verified attributes.
//! - `escrow_keys (vo, public_key, set_by, set_at)`: a VO's recovery key.
//! - `retired_uuids (id, retired_at)`: UUIDs of deleted files, never reused
//!   (a ticket for an old UUID must not open a new file).
//! - `quota_usage (vo, owner, entries, exnode_bytes)`: what each owner
//!   holds in a VO's tree (owner `*`: the whole tree), kept up to date in
//!   the transaction of every change and checked against [`Limits`]:
//!   entries are files and directories, exNode bytes those of every
//!   stored version plus the data keys wrapped for it.
//!
//! Writes on SQLite are serialized in-process (one writer at a time, as
//! SQLite allows anyway), which keeps read-then-write transactions from
//! failing as busy; on PostgreSQL concurrent writers are settled by
//! conditional updates and unique keys.

use std::sync::Arc;

use ibp_service::db::{self, is_unique_violation, to_bigint};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use thiserror::Error;

pub use ibp_service::db::{redact, Backend};

use crate::acl::{Entry, Principal, Rights};
use crate::names::NsPath;

/// Migrations, applied in order; never edit one that has shipped.
const MIGRATIONS: &[&[&str]] = &[MIGRATION_1, MIGRATION_2];

const MIGRATION_1: &[&str] = &[
    "CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        vo TEXT NOT NULL,
        path TEXT NOT NULL,
        parent TEXT NOT NULL,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        current_version BIGINT NOT NULL,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)",
    "CREATE UNIQUE INDEX entries_by_path ON entries (path)",
    "CREATE INDEX entries_by_parent ON entries (parent)",
    "CREATE INDEX entries_by_vo_owner ON entries (vo, owner)",
    "CREATE TABLE versions (
        file TEXT NOT NULL,
        version BIGINT NOT NULL,
        size BIGINT NOT NULL,
        stored BIGINT NOT NULL,
        exnode TEXT NOT NULL,
        key_id TEXT,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (file, version))",
    "CREATE TABLE acl (
        entry TEXT NOT NULL,
        inherit BIGINT NOT NULL,
        principal TEXT NOT NULL,
        rights TEXT NOT NULL,
        PRIMARY KEY (entry, inherit, principal))",
    "CREATE TABLE wrapped_keys (
        file TEXT NOT NULL,
        version BIGINT NOT NULL,
        recipient TEXT NOT NULL,
        wrapped TEXT NOT NULL,
        PRIMARY KEY (file, version, recipient))",
    "CREATE TABLE members (
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        public_key TEXT,
        first_seen BIGINT NOT NULL,
        removed_at BIGINT,
        removed_by TEXT,
        PRIMARY KEY (vo, vo_id))",
    "CREATE TABLE vo_groups (
        vo TEXT NOT NULL,
        group_id TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (vo, group_id))",
    "CREATE TABLE escrow_keys (
        vo TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at BIGINT NOT NULL)",
    "CREATE TABLE retired_uuids (
        id TEXT PRIMARY KEY,
        retired_at BIGINT NOT NULL)",
];

/// Quota accounting, filled from what the database holds.
/// (`octet_length`: bytes, not characters, on SQLite ≥ 3.43 and
/// PostgreSQL.)
const MIGRATION_2: &[&str] = &[
    "CREATE TABLE quota_usage (
        vo TEXT NOT NULL,
        owner TEXT NOT NULL,
        entries BIGINT NOT NULL,
        exnode_bytes BIGINT NOT NULL,
        PRIMARY KEY (vo, owner))",
    "INSERT INTO quota_usage (vo, owner, entries, exnode_bytes)
        SELECT vo, owner, COUNT(*), 0 FROM entries WHERE owner <> '' GROUP BY vo, owner",
    "UPDATE quota_usage SET exnode_bytes =
        CAST(COALESCE((SELECT SUM(octet_length(v.exnode)) FROM versions v
                        JOIN entries e ON e.id = v.file
                       WHERE e.vo = quota_usage.vo AND e.owner = quota_usage.owner), 0) AS BIGINT)
      + CAST(COALESCE((SELECT SUM(octet_length(w.recipient) + octet_length(w.wrapped)) FROM wrapped_keys w
                        JOIN entries e ON e.id = w.file
                       WHERE e.vo = quota_usage.vo AND e.owner = quota_usage.owner), 0) AS BIGINT)",
    "INSERT INTO quota_usage (vo, owner, entries, exnode_bytes)
        SELECT vo, '*', CAST(SUM(entries) AS BIGINT), CAST(SUM(exnode_bytes) AS BIGINT)
          FROM quota_usage GROUP BY vo",
];

/// The `quota_usage` owner that stands for a whole VO tree (no principal
/// is spelled so).
const VO_TOTAL: &str = "*";

/// Quota limits (`None`: unlimited), per owner in a VO's tree and per VO
/// tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub user_entries: Option<u64>,
    pub user_exnode_bytes: Option<u64>,
    pub vo_entries: Option<u64>,
    pub vo_exnode_bytes: Option<u64>,
}

/// A change refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// `user_entries`, `user_exnode_bytes`, `vo_entries` or
    /// `vo_exnode_bytes`.
    pub limit: &'static str,
    pub vo: String,
    /// The owner charged (`user:ID@VO`); for a VO limit too.
    pub owner: String,
    /// The limit's value.
    pub max: u64,
    /// In use before the request.
    pub used: u64,
    /// What the request adds.
    pub request: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whose, unit, hint) = match self.limit {
            "user_entries" | "user_exnode_bytes" => (
                format!("{} in VO {}", self.owner, self.vo),
                if self.limit == "user_entries" { "entries" } else { "bytes" },
                "delete files, directories or old versions, or ask the metadata manager's operator",
            ),
            _ => (
                format!("VO {}", self.vo),
                if self.limit == "vo_entries" { "entries" } else { "bytes" },
                "the VO's admins can delete files or old versions, or ask the metadata manager's operator",
            ),
        };
        write!(
            f,
            "quota exceeded: {} of {whose} is {} {unit}; {} are used and this request needs {} more ({hint})",
            self.limit, self.max, self.used, self.request
        )
    }
}

/// What one owner holds, or a whole VO (`quota_usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub entries: u64,
    pub exnode_bytes: u64,
}

/// Arbitrary key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x4d44_4d5f_6d69;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The path or UUID is taken, or the file changed since the caller
    /// read it.
    #[error("{0}")]
    Conflict(String),
    /// Something the operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot apply to what exists (a file where a directory
    /// is needed, a directory not empty, ...).
    #[error("{0}")]
    Refused(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value is out of range (the database was edited by hand).
    #[error("database holds an invalid value: {0}")]
    Invalid(String),
    /// A quota would be exceeded; nothing was changed.
    #[error("{0}")]
    Quota(Box<QuotaExceeded>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
        }
    }
}

/// A directory or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub id: String,
    pub vo: String,
    pub path: String,
    pub kind: Kind,
    /// `None` for a VO root.
    pub owner: Option<Principal>,
    /// 0 for directories and for files whose every version was deleted.
    pub current_version: u64,
    /// Logical size of the current version.
    pub size: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub version: u64,
    pub size: u64,
    pub stored: u64,
    pub exnode: String,
    pub key_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// A known user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub vo: String,
    pub vo_id: String,
    pub subject: String,
    pub public_key: Option<String>,
    pub first_seen: i64,
    pub removed_at: Option<i64>,
    pub removed_by: Option<String>,
}

/// A new version to register.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub path: &'a NsPath,
    pub file: &'a str,
    /// The version the writer started from (0: the file must not exist).
    pub base_version: u64,
    pub size: u64,
    pub stored: u64,
    pub exnode: &'a str,
    pub key_id: Option<&'a str>,
    pub writer: &'a Principal,
    pub wrapped_keys: &'a [(String, String)],
}

/// Space used by one owner (or a whole VO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub owner: String,
    pub files: u64,
    pub versions: u64,
    /// Sum of the current versions' sizes.
    pub logical: u64,
    /// Bytes held on depots by every version (replicas and shares).
    pub stored: u64,
    /// Files and directories (quota `user_entries`).
    pub entries: u64,
    /// exNode bytes of every version with its wrapped keys (quota
    /// `user_exnode_bytes`).
    pub exnode_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serializes write transactions on SQLite (see the module comment).
    writer: Arc<tokio::sync::Mutex<()>>,
    limits: Limits,
}

fn unsigned(what: &str, v: i64) -> Result<u64, StoreError> {
    db::from_bigint(what, v).map_err(StoreError::Invalid)
}

fn now() -> i64 {
    ibp_auth::unix_now()
}

const ENTRY_COLUMNS: &str =
    "e.id, e.vo, e.path, e.kind, e.owner, e.current_version, e.size, e.created_at, e.updated_at";

fn entry_of(row: &AnyRow) -> Result<EntryRow, StoreError> {
    let kind: String = row.try_get("kind")?;
    let kind = match kind.as_str() {
        "dir" => Kind::Dir,
        "file" => Kind::File,
        other => return Err(StoreError::Invalid(format!("kind = {other:?}"))),
    };
    let owner: String = row.try_get("owner")?;
    let owner = if owner.is_empty() {
        None
    } else {
        Some(Principal::parse(&owner).map_err(StoreError::Invalid)?)
    };
    Ok(EntryRow {
        id: row.try_get("id")?,
        vo: row.try_get("vo")?,
        path: row.try_get("path")?,
        kind,
        owner,
        current_version: unsigned("current_version", row.try_get("current_version")?)?,
        size: unsigned("size", row.try_get("size")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn version_of(row: &AnyRow) -> Result<VersionRow, StoreError> {
    Ok(VersionRow {
        version: unsigned("version", row.try_get("version")?)?,
        size: unsigned("version size", row.try_get("vsize")?)?,
        stored: unsigned("stored", row.try_get("stored")?)?,
        exnode: row.try_get("exnode")?,
        key_id: row.try_get("key_id")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("vcreated_at")?,
    })
}

fn acl_of(rows: &[AnyRow]) -> Result<Vec<Entry>, StoreError> {
    rows.iter()
        .map(|r| {
            let p: String = r.try_get("principal")?;
            let rights: String = r.try_get("rights")?;
            Ok(Entry {
                principal: Principal::parse(&p).map_err(StoreError::Invalid)?,
                rights: Rights::parse(&rights).map_err(StoreError::Invalid)?,
            })
        })
        .collect()
}

fn member_of(row: &AnyRow) -> Result<Member, StoreError> {
    Ok(Member {
        vo: row.try_get("vo")?,
        vo_id: row.try_get("vo_id")?,
        subject: row.try_get("subject")?,
        public_key: row.try_get("public_key")?,
        first_seen: row.try_get("first_seen")?,
        removed_at: row.try_get("removed_at")?,
        removed_by: row.try_get("removed_by")?,
    })
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database;
    /// changes are held to `limits`.
    pub async fn open(url: &str, max_connections: u32, limits: Limits) -> anyhow::Result<Store> {
        use anyhow::Context;
        let (pool, backend) = db::connect(url, max_connections).await?;
        db::migrate(&pool, backend, MIGRATIONS, MIGRATION_LOCK)
            .await
            .context("migrate the database")?;
        Ok(Store {
            pool,
            backend,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            limits,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction (holding the SQLite writer lock).
    async fn write(
        &self,
    ) -> Result<(Tx<'static>, Option<tokio::sync::OwnedMutexGuard<()>>), StoreError> {
        let guard = if self.backend == Backend::Sqlite {
            Some(self.writer.clone().lock_owned().await)
        } else {
            None
        };
        Ok((self.pool.begin().await?, guard))
    }

    // ---- members, groups, keys -------------------------------------

    /// The member record, if the user is known.
    pub async fn member(&self, vo: &str, vo_id: &str) -> Result<Option<Member>, StoreError> {
        let row = sqlx::query(
            "SELECT vo, vo_id, subject, public_key, first_seen, removed_at, removed_by
               FROM members WHERE vo = $1 AND vo_id = $2",
        )
        .bind(vo)
        .bind(vo_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(member_of).transpose()
    }

    /// Records a user on first contact (or when a VO admin adds them).
    pub async fn add_member(&self, vo: &str, vo_id: &str, subject: &str) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO members (vo, vo_id, subject, first_seen) VALUES ($1, $2, $3, $4)",
        )
        .bind(vo)
        .bind(vo_id)
        .bind(subject)
        .bind(now())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a member removed (`Some(by)`) or restores them (`None`).
    /// Returns whether the member exists.
    pub async fn set_removed(
        &self,
        vo: &str,
        vo_id: &str,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE members SET removed_at = $3, removed_by = $4 WHERE vo = $1 AND vo_id = $2",
        )
        .bind(vo)
        .bind(vo_id)
        .bind(by.map(|_| now()))
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn members(&self, vo: &str) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT vo, vo_id, subject, public_key, first_seen, removed_at, removed_by
               FROM members WHERE vo = $1 ORDER BY vo_id",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(member_of).collect()
    }

    pub async fn set_public_key(&self, vo: &str, vo_id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE members SET public_key = $3 WHERE vo = $1 AND vo_id = $2")
            .bind(vo)
            .bind(vo_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a group seen in verified attributes (first sighting wins the
    /// name until it changes).
    pub async fn note_group(&self, vo: &str, id: &str, name: &str) -> Result<(), StoreError> {
        let res = sqlx::query("INSERT INTO vo_groups (vo, group_id, name) VALUES ($1, $2, $3)")
            .bind(vo)
            .bind(id)
            .bind(name)
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                sqlx::query("UPDATE vo_groups SET name = $3 WHERE vo = $1 AND group_id = $2")
                    .bind(vo)
                    .bind(id)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The ID of a group known by ID or by name.
    pub async fn group_id(&self, vo: &str, id_or_name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT group_id FROM vo_groups WHERE vo = $1 AND (group_id = $2 OR name = $2)
              ORDER BY CASE WHEN group_id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(vo)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("group_id")).transpose()?)
    }

    pub async fn set_escrow_key(&self, vo: &str, key: &str, by: &str) -> Result<(), StoreError> {
        let (mut tx, _g) = self.write().await?;
        sqlx::query("DELETE FROM escrow_keys WHERE vo = $1")
            .bind(vo)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO escrow_keys (vo, public_key, set_by, set_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(vo)
        .bind(key)
        .bind(by)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn escrow_key(&self, vo: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT public_key FROM escrow_keys WHERE vo = $1")
            .bind(vo)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("public_key")).transpose()?)
    }

    // ---- entries ---------------------------------------------------

    pub async fn entry(&self, path: &str) -> Result<Option<EntryRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.path = $1"
        ))
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(entry_of).transpose()
    }

    /// An entry with one version of it (the current one when `version` is
    /// `None`), the version's data key wrapped for `recipient`, and the
    /// caller's membership (`None` unknown, `Some(None)` member,
    /// `Some(Some(by))` removed), in one query: the hot path of `get`.
    #[allow(clippy::type_complexity)]
    pub async fn entry_with_version(
        &self,
        path: &str,
        version: Option<u64>,
        recipient: &str,
        vo: &str,
        vo_id: &str,
    ) -> Result<
        Option<(
            EntryRow,
            Option<VersionRow>,
            Option<String>,
            Option<Option<Option<String>>>,
            Vec<Entry>,
        )>,
        StoreError,
    > {
        // The access ACL comes along as `principal=rights,...` (neither
        // contains `,` or `=`); only the aggregate's name differs.
        let agg = match self.backend {
            Backend::Sqlite => "group_concat",
            Backend::Postgres => "string_agg",
        };
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS}, v.version, v.size AS vsize, v.stored, v.exnode, v.key_id,
                    v.created_by, v.created_at AS vcreated_at, w.wrapped,
                    m.vo_id AS member, m.removed_at, m.removed_by,
                    (SELECT {agg}(a.principal || '=' || a.rights, ',') FROM acl a
                      WHERE a.entry = e.id AND a.inherit = 0) AS acl_text
               FROM entries e
               LEFT JOIN versions v ON v.file = e.id
                    AND v.version = COALESCE($2, e.current_version)
               LEFT JOIN wrapped_keys w ON w.file = e.id AND w.version = v.version
                    AND w.recipient = $3
               LEFT JOIN members m ON m.vo = $4 AND m.vo_id = $5
              WHERE e.path = $1"
        ))
        .bind(path)
        .bind(version.map(to_bigint))
        .bind(recipient)
        .bind(vo)
        .bind(vo_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let entry = entry_of(&row)?;
        let version = if row.try_get::<Option<i64>, _>("version")?.is_some() {
            Some(version_of(&row)?)
        } else {
            None
        };
        let wrapped: Option<String> = row.try_get("wrapped")?;
        let member = if row.try_get::<Option<String>, _>("member")?.is_some() {
            if row.try_get::<Option<i64>, _>("removed_at")?.is_some() {
                Some(Some(row.try_get::<Option<String>, _>("removed_by")?))
            } else {
                Some(None)
            }
        } else {
            None
        };
        let acl = match row.try_get::<Option<String>, _>("acl_text")? {
            None => Vec::new(),
            Some(t) if t.is_empty() => Vec::new(),
            Some(t) => t
                .split(',')
                .map(|item| {
                    let (p, r) = item
                        .rsplit_once('=')
                        .ok_or_else(|| StoreError::Invalid(format!("ACL item {item:?}")))?;
                    Ok(Entry {
                        principal: Principal::parse(p).map_err(StoreError::Invalid)?,
                        rights: Rights::parse(r).map_err(StoreError::Invalid)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        };
        Ok(Some((entry, version, wrapped, member, acl)))
    }

    /// The ACL of an entry: access entries, or the default ones.
    pub async fn acl(&self, entry: &str, default: bool) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(
            "SELECT principal, rights FROM acl WHERE entry = $1 AND inherit = $2 ORDER BY principal",
        )
        .bind(entry)
        .bind(i64::from(default))
        .fetch_all(&self.pool)
        .await?;
        acl_of(&rows)
    }

    /// Replaces the access entries and/or the default entries of an entry.
    pub async fn set_acl(
        &self,
        entry: &str,
        access: Option<&[Entry]>,
        default: Option<&[Entry]>,
    ) -> Result<(), StoreError> {
        let (mut tx, _g) = self.write().await?;
        for (inherit, list) in [(0i64, access), (1i64, default)] {
            let Some(list) = list else { continue };
            sqlx::query("DELETE FROM acl WHERE entry = $1 AND inherit = $2")
                .bind(entry)
                .bind(inherit)
                .execute(&mut *tx)
                .await?;
            insert_acl(&mut tx, entry, inherit, list).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates a VO's root directory if it does not exist yet: listable
    /// and writable (create entries) by every member of the VO.
    pub async fn ensure_root(&self, vo: &str) -> Result<(), StoreError> {
        let root = format!("/{vo}");
        if self.entry(&root).await?.is_some() {
            return Ok(());
        }
        let (mut tx, _g) = self.write().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let t = now();
        let res = sqlx::query(
            "INSERT INTO entries (id, vo, path, parent, kind, owner, current_version, size,
                                  created_at, updated_at)
             VALUES ($1, $2, $3, '', 'dir', '', 0, 0, $4, $4)",
        )
        .bind(&id)
        .bind(vo)
        .bind(&root)
        .bind(t)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            // Another replica created it meanwhile.
            Err(e) if is_unique_violation(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let everyone = [Entry {
            principal: Principal::Vo(vo.to_owned()),
            rights: Rights::READ.union(Rights::WRITE),
        }];
        insert_acl(&mut tx, &id, 0, &everyone).await?;
        tx.commit().await?;
        tracing::info!(vo, "created the VO's root directory");
        Ok(())
    }

    /// Creates a directory owned by `owner`; its ACL and default ACL are
    /// the parent's default ACL.
    pub async fn mkdir(&self, path: &NsPath, owner: &Principal) -> Result<EntryRow, StoreError> {
        let (mut tx, _g) = self.write().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let parent = create_entry(&mut tx, &id, path, Kind::Dir, owner).await?;
        charge(&mut tx, &self.limits, path.vo(), &owner.to_string(), 1, 0).await?;
        let inherited = inherited_acl(&mut tx, &parent).await?;
        insert_acl(&mut tx, &id, 0, &inherited).await?;
        insert_acl(&mut tx, &id, 1, &inherited).await?;
        tx.commit().await?;
        self.entry(path.as_str())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{path} vanished")))
    }

    /// Registers a new version. A new file (`base_version` 0) is created
    /// with the parent's default ACL; an existing one advances only if its
    /// current version is still `base_version` (optimistic concurrency).
    /// Returns the new version number.
    pub async fn put_version(&self, v: &NewVersion<'_>) -> Result<u64, StoreError> {
        let (mut tx, _g) = self.write().await?;
        let t = now();
        let next = v
            .base_version
            .checked_add(1)
            .ok_or_else(|| StoreError::Refused("version number overflow".into()))?;
        // What the version stores: its exNode and the keys sent with it
        // (keys carried over from the base version are added below).
        let bytes = v
            .wrapped_keys
            .iter()
            .fold(v.exnode.len() as u64, |n, (r, w)| {
                n.saturating_add((r.len() + w.len()) as u64)
            });
        if v.base_version == 0 {
            let retired = sqlx::query("SELECT id FROM retired_uuids WHERE id = $1")
                .bind(v.file)
                .fetch_optional(&mut *tx)
                .await?;
            if retired.is_some() {
                return Err(StoreError::Conflict(format!(
                    "file UUID {} belonged to a deleted file and cannot be reused; upload again with a new UUID",
                    v.file
                )));
            }
            let parent = create_entry(&mut tx, v.file, v.path, Kind::File, v.writer).await?;
            // Charged before anything large is written.
            charge(
                &mut tx,
                &self.limits,
                v.path.vo(),
                &v.writer.to_string(),
                1,
                signed(bytes),
            )
            .await?;
            let inherited = inherited_acl(&mut tx, &parent).await?;
            insert_acl(&mut tx, v.file, 0, &inherited).await?;
            sqlx::query(
                "UPDATE entries SET current_version = 1, size = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(v.file)
            .bind(to_bigint(v.size))
            .bind(t)
            .execute(&mut *tx)
            .await?;
        } else {
            let res = sqlx::query(
                "UPDATE entries SET current_version = $3, size = $4, updated_at = $5
                  WHERE path = $1 AND id = $2 AND kind = 'file' AND current_version = $6",
            )
            .bind(v.path.as_str())
            .bind(v.file)
            .bind(to_bigint(next))
            .bind(to_bigint(v.size))
            .bind(t)
            .bind(to_bigint(v.base_version))
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() != 1 {
                let current = sqlx::query(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.path = $1"
                ))
                .bind(v.path.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let current = current.as_ref().map(entry_of).transpose()?;
                return Err(match current {
                    None => StoreError::NotFound(format!(
                        "{} does not exist (any more); upload with base version 0 to create it",
                        v.path
                    )),
                    Some(e) if e.kind == Kind::Dir => {
                        StoreError::Refused(format!("{} is a directory", v.path))
                    }
                    Some(e) if e.id != v.file => StoreError::Conflict(format!(
                        "{} is file {}, not {}: it was replaced since you read it",
                        v.path, e.id, v.file
                    )),
                    Some(e) => StoreError::Conflict(format!(
                        "{} changed: version {} is current, your upload was based on version {}; read it again and retry",
                        v.path, e.current_version, v.base_version
                    )),
                });
            }
            // A new version counts for the file's owner, whoever writes it.
            let owner = file_owner(&mut tx, v.file).await?;
            charge(&mut tx, &self.limits, v.path.vo(), &owner, 0, signed(bytes)).await?;
        }
        let res = sqlx::query(
            "INSERT INTO versions (file, version, size, stored, exnode, key_id, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(v.file)
        .bind(to_bigint(next))
        .bind(to_bigint(v.size))
        .bind(to_bigint(v.stored))
        .bind(v.exnode)
        .bind(v.key_id)
        .bind(v.writer.to_string())
        .bind(t)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "{}: version {next} was registered concurrently; read it again and retry",
                    v.path
                )))
            }
            Err(e) => return Err(e.into()),
        }
        for (recipient, wrapped) in v.wrapped_keys {
            sqlx::query(
                "INSERT INTO wrapped_keys (file, version, recipient, wrapped) VALUES ($1, $2, $3, $4)",
            )
            .bind(v.file)
            .bind(to_bigint(next))
            .bind(recipient)
            .bind(wrapped)
            .execute(&mut *tx)
            .await?;
        }
        // A version made by maintenance (refresh, trim, augment, repair)
        // keeps its base version's data key (same key id): the base
        // version's wrapped keys carry over, for every recipient the put
        // did not wrap for itself, so people the file is shared with (and
        // the escrow) keep reading it.
        if v.base_version > 0 {
            if let Some(key_id) = v.key_id {
                sqlx::query(
                    "INSERT INTO wrapped_keys (file, version, recipient, wrapped)
                     SELECT w.file, $2, w.recipient, w.wrapped
                       FROM wrapped_keys w
                       JOIN versions b ON b.file = w.file AND b.version = w.version
                      WHERE w.file = $1 AND w.version = $3 AND b.key_id = $4
                        AND NOT EXISTS (SELECT 1 FROM wrapped_keys n
                                         WHERE n.file = $1 AND n.version = $2
                                           AND n.recipient = w.recipient)",
                )
                .bind(v.file)
                .bind(to_bigint(next))
                .bind(to_bigint(v.base_version))
                .bind(key_id)
                .execute(&mut *tx)
                .await?;
                let carried = wrapped_bytes(&mut tx, v.file, Some(next), None).await?
                    - v.wrapped_keys
                        .iter()
                        .map(|(r, w)| signed((r.len() + w.len()) as u64))
                        .sum::<i64>();
                let owner = file_owner(&mut tx, v.file).await?;
                charge(&mut tx, &self.limits, v.path.vo(), &owner, 0, carried).await?;
            }
        }
        tx.commit().await?;
        Ok(next)
    }

    /// Children of a directory, in name order, after `after` (a name), at
    /// most `limit`.
    pub async fn list(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EntryRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.parent = $1 AND e.path > $2
              ORDER BY e.path LIMIT $3"
        ))
        .bind(dir)
        .bind(after.map(|a| format!("{dir}/{a}")).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_of).collect()
    }

    /// Number of versions of a file and bytes they hold on depots.
    pub async fn version_totals(&self, file: &str) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(stored), 0) AS BIGINT) AS stored
               FROM versions WHERE file = $1",
        )
        .bind(file)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            unsigned("count", row.try_get("n")?)?,
            unsigned("stored", row.try_get("stored")?)?,
        ))
    }

    /// The exNode of every version of a file, oldest first.
    pub async fn exnodes(&self, file: &str) -> Result<Vec<(u64, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT version, exnode FROM versions WHERE file = $1 ORDER BY version")
                .bind(file)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    unsigned("version", r.try_get("version")?)?,
                    r.try_get("exnode")?,
                ))
            })
            .collect()
    }

    /// Every version of a file, newest first (without exNodes).
    pub async fn versions(&self, file: &str) -> Result<Vec<VersionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, size AS vsize, stored, '' AS exnode, key_id, created_by,
                    created_at AS vcreated_at
               FROM versions WHERE file = $1 ORDER BY version DESC",
        )
        .bind(file)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_of).collect()
    }

    /// Moves an entry (and, for a directory, everything under it) to a new
    /// path in the same VO; the destination must not exist and its parent
    /// must be a directory.
    pub async fn move_entry(&self, from: &NsPath, to: &NsPath) -> Result<(), StoreError> {
        let (mut tx, _g) = self.write().await?;
        let parent = to
            .parent()
            .ok_or_else(|| StoreError::Refused("a VO root cannot be the destination".into()))?;
        let pdir = sqlx::query("SELECT kind FROM entries WHERE path = $1")
            .bind(parent.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match pdir {
            None => return Err(StoreError::NotFound(format!("no directory {parent}"))),
            Some(r) if r.try_get::<String, _>("kind")? != "dir" => {
                return Err(StoreError::Refused(format!("{parent} is not a directory")))
            }
            Some(_) => {}
        }
        let t = now();
        let res = sqlx::query(
            "UPDATE entries SET path = $2, parent = $3, updated_at = $4 WHERE path = $1",
        )
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(parent.as_str())
        .bind(t)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => {
                return Err(StoreError::NotFound(format!("no entry {from}")))
            }
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("{to} exists")))
            }
            Err(e) => return Err(e.into()),
        }
        // Descendants: replace the prefix of path and parent.
        let prefix = format!("{}/", from.as_str());
        // substr() counts characters (SQLite and PostgreSQL), not bytes.
        let n = i64::try_from(from.as_str().chars().count()).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE entries SET path = $2 || substr(path, CAST($3 AS INTEGER) + 1),
                                parent = $2 || substr(parent, CAST($3 AS INTEGER) + 1)
              WHERE substr(path, 1, CAST($3 AS INTEGER) + 1) = $1",
        )
        .bind(&prefix)
        .bind(to.as_str())
        .bind(n)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a file (every version) or an empty directory, or one old
    /// version of a file. Returns the exNodes of the deleted versions, whose
    /// allocations the caller must release on the depots.
    pub async fn delete(
        &self,
        entry: &EntryRow,
        version: Option<u64>,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let (mut tx, _g) = self.write().await?;
        if let Some(v) = version {
            let row = sqlx::query("SELECT exnode FROM versions WHERE file = $1 AND version = $2")
                .bind(&entry.id)
                .bind(to_bigint(v))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!(
                    "{} has no version {v}",
                    entry.path
                )));
            };
            let cur = sqlx::query("SELECT current_version FROM entries WHERE id = $1")
                .bind(&entry.id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(cur) = cur {
                if cur.try_get::<i64, _>("current_version")? == to_bigint(v) {
                    return Err(StoreError::Refused(format!(
                        "version {v} is the current version of {}; delete the file, or upload a newer version first",
                        entry.path
                    )));
                }
            }
            let freed = exnode_bytes(&mut tx, &entry.id, Some(v)).await?
                + wrapped_bytes(&mut tx, &entry.id, Some(v), None).await?;
            if let Some(owner) = &entry.owner {
                charge(
                    &mut tx,
                    &self.limits,
                    &entry.vo,
                    &owner.to_string(),
                    0,
                    -freed,
                )
                .await?;
            }
            for sql in [
                "DELETE FROM wrapped_keys WHERE file = $1 AND version = $2",
                "DELETE FROM versions WHERE file = $1 AND version = $2",
            ] {
                sqlx::query(sql)
                    .bind(&entry.id)
                    .bind(to_bigint(v))
                    .execute(&mut *tx)
                    .await?;
            }
            let exnode: String = row.try_get("exnode")?;
            tx.commit().await?;
            return Ok(vec![(v, exnode)]);
        }
        if entry.kind == Kind::Dir {
            let child = sqlx::query("SELECT id FROM entries WHERE parent = $1 LIMIT 1")
                .bind(&entry.path)
                .fetch_optional(&mut *tx)
                .await?;
            if child.is_some() {
                return Err(StoreError::Refused(format!(
                    "directory {} is not empty",
                    entry.path
                )));
            }
        }
        let rows =
            sqlx::query("SELECT version, exnode FROM versions WHERE file = $1 ORDER BY version")
                .bind(&entry.id)
                .fetch_all(&mut *tx)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((
                unsigned("version", r.try_get("version")?)?,
                r.try_get::<String, _>("exnode")?,
            ));
        }
        let res = sqlx::query("DELETE FROM entries WHERE id = $1 AND path = $2")
            .bind(&entry.id)
            .bind(&entry.path)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "{} changed while being deleted; retry",
                entry.path
            )));
        }
        let freed = exnode_bytes(&mut tx, &entry.id, None).await?
            + wrapped_bytes(&mut tx, &entry.id, None, None).await?;
        if let Some(owner) = &entry.owner {
            charge(
                &mut tx,
                &self.limits,
                &entry.vo,
                &owner.to_string(),
                -1,
                -freed,
            )
            .await?;
        }
        for sql in [
            "DELETE FROM wrapped_keys WHERE file = $1",
            "DELETE FROM versions WHERE file = $1",
            "DELETE FROM acl WHERE entry = $1",
        ] {
            sqlx::query(sql).bind(&entry.id).execute(&mut *tx).await?;
        }
        if entry.kind == Kind::File {
            sqlx::query("INSERT INTO retired_uuids (id, retired_at) VALUES ($1, $2)")
                .bind(&entry.id)
                .bind(now())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    // ---- wrapped keys ----------------------------------------------

    /// Stores a wrapped data key for one recipient and one version
    /// (replacing an earlier one).
    pub async fn put_wrapped(
        &self,
        file: &str,
        version: u64,
        recipient: &str,
        wrapped: &str,
    ) -> Result<(), StoreError> {
        let (mut tx, _g) = self.write().await?;
        let exists = sqlx::query("SELECT version FROM versions WHERE file = $1 AND version = $2")
            .bind(file)
            .bind(to_bigint(version))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("no version {version}")));
        }
        let old = wrapped_bytes(&mut tx, file, Some(version), Some(recipient)).await?;
        let (vo, owner) = file_vo_owner(&mut tx, file).await?;
        charge(
            &mut tx,
            &self.limits,
            &vo,
            &owner,
            0,
            signed((recipient.len() + wrapped.len()) as u64) - old,
        )
        .await?;
        sqlx::query("DELETE FROM wrapped_keys WHERE file = $1 AND version = $2 AND recipient = $3")
            .bind(file)
            .bind(to_bigint(version))
            .bind(recipient)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO wrapped_keys (file, version, recipient, wrapped) VALUES ($1, $2, $3, $4)",
        )
        .bind(file)
        .bind(to_bigint(version))
        .bind(recipient)
        .bind(wrapped)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a recipient's wrapped keys of every version; returns how
    /// many were removed.
    pub async fn remove_wrapped(&self, file: &str, recipient: &str) -> Result<u64, StoreError> {
        let (mut tx, _g) = self.write().await?;
        let freed = wrapped_bytes(&mut tx, file, None, Some(recipient)).await?;
        if freed > 0 {
            let (vo, owner) = file_vo_owner(&mut tx, file).await?;
            charge(&mut tx, &self.limits, &vo, &owner, 0, -freed).await?;
        }
        let res = sqlx::query("DELETE FROM wrapped_keys WHERE file = $1 AND recipient = $2")
            .bind(file)
            .bind(recipient)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected())
    }

    /// One recipient's wrapped key of one version.
    pub async fn wrapped(
        &self,
        file: &str,
        version: u64,
        recipient: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT wrapped FROM wrapped_keys WHERE file = $1 AND version = $2 AND recipient = $3",
        )
        .bind(file)
        .bind(to_bigint(version))
        .bind(recipient)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("wrapped")).transpose()?)
    }

    /// Recipients holding a wrapped key of a version.
    pub async fn recipients(&self, file: &str, version: u64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT recipient FROM wrapped_keys WHERE file = $1 AND version = $2 ORDER BY recipient",
        )
        .bind(file)
        .bind(to_bigint(version))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("recipient").map_err(StoreError::from))
            .collect()
    }

    // ---- usage -----------------------------------------------------

    /// Usage of every owner in a VO's tree, by owner.
    pub async fn usage(&self, vo: &str) -> Result<Vec<Usage>, StoreError> {
        let files = sqlx::query(
            "SELECT owner, COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS logical
               FROM entries WHERE vo = $1 AND kind = 'file' GROUP BY owner ORDER BY owner",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        let versions = sqlx::query(
            "SELECT e.owner AS owner, COUNT(*) AS n, CAST(COALESCE(SUM(v.stored), 0) AS BIGINT) AS stored
               FROM versions v JOIN entries e ON e.id = v.file
              WHERE e.vo = $1 GROUP BY e.owner",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Usage> = Vec::with_capacity(files.len());
        for r in &files {
            out.push(Usage {
                owner: r.try_get("owner")?,
                files: unsigned("count", r.try_get("n")?)?,
                logical: unsigned("logical", r.try_get("logical")?)?,
                ..Usage::default()
            });
        }
        for r in &versions {
            let owner: String = r.try_get("owner")?;
            let n = unsigned("count", r.try_get("n")?)?;
            let stored = unsigned("stored", r.try_get("stored")?)?;
            match out.iter_mut().find(|u| u.owner == owner) {
                Some(u) => {
                    u.versions = n;
                    u.stored = stored;
                }
                None => out.push(Usage {
                    owner,
                    versions: n,
                    stored,
                    ..Usage::default()
                }),
            }
        }
        let held = sqlx::query(
            "SELECT owner, entries, exnode_bytes FROM quota_usage
              WHERE vo = $1 AND owner <> $2 AND (entries > 0 OR exnode_bytes > 0)",
        )
        .bind(vo)
        .bind(VO_TOTAL)
        .fetch_all(&self.pool)
        .await?;
        for r in &held {
            let owner: String = r.try_get("owner")?;
            let entries = unsigned("entries", r.try_get("entries")?)?;
            let exnode_bytes = unsigned("exnode_bytes", r.try_get("exnode_bytes")?)?;
            match out.iter_mut().find(|u| u.owner == owner) {
                Some(u) => {
                    u.entries = entries;
                    u.exnode_bytes = exnode_bytes;
                }
                None => out.push(Usage {
                    owner,
                    entries,
                    exnode_bytes,
                    ..Usage::default()
                }),
            }
        }
        out.sort_by(|a, b| a.owner.cmp(&b.owner));
        Ok(out)
    }

    /// What a whole VO tree holds (quota `vo_entries`, `vo_exnode_bytes`).
    pub async fn vo_held(&self, vo: &str) -> Result<Held, StoreError> {
        let row = sqlx::query(
            "SELECT entries, exnode_bytes FROM quota_usage WHERE vo = $1 AND owner = $2",
        )
        .bind(vo)
        .bind(VO_TOTAL)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(Held::default()),
            Some(r) => Ok(Held {
                entries: unsigned("entries", r.try_get("entries")?)?,
                exnode_bytes: unsigned("exnode_bytes", r.try_get("exnode_bytes")?)?,
            }),
        }
    }
}

async fn insert_acl(
    tx: &mut Tx<'_>,
    entry: &str,
    inherit: i64,
    list: &[Entry],
) -> Result<(), StoreError> {
    for e in list {
        sqlx::query("INSERT INTO acl (entry, inherit, principal, rights) VALUES ($1, $2, $3, $4)")
            .bind(entry)
            .bind(inherit)
            .bind(e.principal.to_string())
            .bind(e.rights.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The default ACL of a directory (copied to a new child).
async fn inherited_acl(tx: &mut Tx<'_>, dir_id: &str) -> Result<Vec<Entry>, StoreError> {
    let rows = sqlx::query("SELECT principal, rights FROM acl WHERE entry = $1 AND inherit = 1")
        .bind(dir_id)
        .fetch_all(&mut **tx)
        .await?;
    acl_of(&rows)
}

/// Inserts an entry under an existing parent directory; returns the
/// parent's id. The path or id being taken is a conflict.
async fn create_entry(
    tx: &mut Tx<'_>,
    id: &str,
    path: &NsPath,
    kind: Kind,
    owner: &Principal,
) -> Result<String, StoreError> {
    let parent = path
        .parent()
        .ok_or_else(|| StoreError::Refused(format!("{path} is a VO root")))?;
    let prow = sqlx::query("SELECT id, kind FROM entries WHERE path = $1")
        .bind(parent.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(prow) = prow else {
        return Err(StoreError::NotFound(format!(
            "directory {parent} does not exist (create it first)"
        )));
    };
    if prow.try_get::<String, _>("kind")? != "dir" {
        return Err(StoreError::Refused(format!("{parent} is not a directory")));
    }
    let parent_id: String = prow.try_get("id")?;
    // Check first: on PostgreSQL a failed statement aborts the transaction,
    // so the unique keys below only settle races.
    let by_path = sqlx::query("SELECT id FROM entries WHERE path = $1")
        .bind(path.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if by_path.is_some() {
        return Err(StoreError::Conflict(match kind {
            Kind::File => {
                format!("{path} exists (to replace a file, give its current version as the base)")
            }
            Kind::Dir => format!("{path} exists"),
        }));
    }
    let by_id = sqlx::query("SELECT path FROM entries WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    if by_id.is_some() {
        return Err(StoreError::Conflict(format!(
            "UUID {id} is already used by another file"
        )));
    }
    let t = now();
    let res = sqlx::query(
        "INSERT INTO entries (id, vo, path, parent, kind, owner, current_version, size,
                              created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $7)",
    )
    .bind(id)
    .bind(path.vo())
    .bind(path.as_str())
    .bind(parent.as_str())
    .bind(kind.as_str())
    .bind(owner.to_string())
    .bind(t)
    .execute(&mut **tx)
    .await;
    match res {
        Ok(_) => Ok(parent_id),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "{path} was created concurrently by someone else"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A byte count as a signed delta.
fn signed(n: u64) -> i64 {
    to_bigint(n)
}

/// Adds `entries` and `bytes` (negative: frees them) to what `owner` holds
/// in VO `vo`'s tree and to the tree's total, in the caller's transaction.
/// A growth beyond a limit is refused with [`StoreError::Quota`] (the
/// caller then drops the transaction, which undoes the whole change).
/// Rows are updated owner first, then the VO's, everywhere: on PostgreSQL
/// the row locks serialize writers of one VO without deadlocks, so
/// replicas cannot together overshoot a limit.
async fn charge(
    tx: &mut Tx<'_>,
    limits: &Limits,
    vo: &str,
    owner: &str,
    entries: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    if entries == 0 && bytes == 0 {
        return Ok(());
    }
    let rows = [
        (
            owner,
            ("user_entries", limits.user_entries),
            ("user_exnode_bytes", limits.user_exnode_bytes),
        ),
        (
            VO_TOTAL,
            ("vo_entries", limits.vo_entries),
            ("vo_exnode_bytes", limits.vo_exnode_bytes),
        ),
    ];
    for (key, entry_limit, byte_limit) in rows {
        sqlx::query(
            "INSERT INTO quota_usage (vo, owner, entries, exnode_bytes) VALUES ($1, $2, 0, 0)
             ON CONFLICT (vo, owner) DO NOTHING",
        )
        .bind(vo)
        .bind(key)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE quota_usage
                SET entries = CASE WHEN entries + $3 < 0 THEN 0 ELSE entries + $3 END,
                    exnode_bytes = CASE WHEN exnode_bytes + $4 < 0 THEN 0 ELSE exnode_bytes + $4 END
              WHERE vo = $1 AND owner = $2",
        )
        .bind(vo)
        .bind(key)
        .bind(entries)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
        if entries <= 0 && bytes <= 0 {
            continue;
        }
        let row = sqlx::query(
            "SELECT entries, exnode_bytes FROM quota_usage WHERE vo = $1 AND owner = $2",
        )
        .bind(vo)
        .bind(key)
        .fetch_one(&mut **tx)
        .await?;
        let now_entries = unsigned("entries", row.try_get("entries")?)?;
        let now_bytes = unsigned("exnode_bytes", row.try_get("exnode_bytes")?)?;
        for (delta, now, (limit, max)) in [
            (entries, now_entries, entry_limit),
            (bytes, now_bytes, byte_limit),
        ] {
            let Some(max) = max else { continue };
            if delta > 0 && now > max {
                let request = delta.unsigned_abs();
                return Err(StoreError::Quota(Box::new(QuotaExceeded {
                    limit,
                    vo: vo.to_owned(),
                    owner: owner.to_owned(),
                    max,
                    used: now.saturating_sub(request),
                    request,
                })));
            }
        }
    }
    Ok(())
}

/// Bytes of a file's exNodes (one version, or all).
async fn exnode_bytes(
    tx: &mut Tx<'_>,
    file: &str,
    version: Option<u64>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(octet_length(exnode)), 0) AS BIGINT) AS n FROM versions
          WHERE file = $1 AND ($2 IS NULL OR version = $2)",
    )
    .bind(file)
    .bind(version.map(to_bigint))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("n")?)
}

/// Bytes of a file's wrapped keys (recipient and key), of one version or
/// all, of one recipient or all.
async fn wrapped_bytes(
    tx: &mut Tx<'_>,
    file: &str,
    version: Option<u64>,
    recipient: Option<&str>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(octet_length(recipient) + octet_length(wrapped)), 0) AS BIGINT) AS n
           FROM wrapped_keys
          WHERE file = $1 AND ($2 IS NULL OR version = $2) AND ($3 IS NULL OR recipient = $3)",
    )
    .bind(file)
    .bind(version.map(to_bigint))
    .bind(recipient)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("n")?)
}

/// The owner (principal) of a file.
async fn file_owner(tx: &mut Tx<'_>, file: &str) -> Result<String, StoreError> {
    Ok(file_vo_owner(tx, file).await?.1)
}

/// The VO tree and owner of an entry.
async fn file_vo_owner(tx: &mut Tx<'_>, file: &str) -> Result<(String, String), StoreError> {
    let row = sqlx::query("SELECT vo, owner FROM entries WHERE id = $1")
        .bind(file)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no file {file}")))?;
    Ok((row.try_get("vo")?, row.try_get("owner")?))
}
