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
//!   created_at, updated_at, keep_versions)`: directories and files by full path; `id` is
//!   the file UUID for files (stable over versions and moves), a fresh UUID
//!   for directories; `owner` is a principal (`user:ID@VO`), empty for a VO
//!   root; `keep_versions`: a directory's retention setting (how many
//!   versions of each file under it are kept; the nearest directory with
//!   one decides, else the VO's setting, else the default).
//! - `versions (file, version, size, stored, exnode, key_id, created_by,
//!   created_at, expires, readable_until, indexed, mtime)`: every version of
//!   every file with its exNode; `expires` (earliest allocation expiry)
//!   and `readable_until` ([`crate::allocations::Facts`]) read from it,
//!   and `mtime` (the source file's modification time, if recorded);
//!   `indexed`: 1 once its `allocations` rows are written, 2 when its
//!   exNode could not be read to write them, 0 not yet (a version stored
//!   before migration 3, until the backfill at start reaches it).
//! - `allocations (file, alloc, version, manage, bytes)`: each allocation
//!   a version keeps, once (`alloc`: a digest of `host:port/RID#key`,
//!   [`crate::allocations::Allocation::id`]), its MANAGE
//!   capability and the bytes the version keeps in it. Versions made by
//!   refresh, trim, augment or repair share most of their allocations
//!   with their base: usage counts each allocation once per owner, and a
//!   version dropped (`rm --version`, retention) releases only the
//!   allocations no remaining version of the file names.
//! - `acl (entry, inherit, principal, rights)`: access entries (`inherit =
//!   0`) and, on directories, default entries copied to new children
//!   (`inherit = 1`).
//! - `wrapped_keys (file, version, recipient, wrapped)`: the data key of a
//!   version wrapped for one recipient (`user:ID@VO` or `escrow:VO`).
//! - `members (vo, vo_id, subject, public_key, first_seen, removed_at,
//!   removed_by, display_name)`: users known to the manager, their
//!   key-wrapping public key, whether a VO admin removed them, and the
//!   display name they chose.
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
//! SQLite allows anyway) and begin with `BEGIN IMMEDIATE`
//! ([`db::begin_write`]), which keeps read-then-write transactions from
//! failing as busy; on PostgreSQL concurrent writers are settled by
//! conditional updates and unique keys.

use std::borrow::Cow;
use std::sync::Arc;

use ibp_service::db::{self, is_unique_violation, to_bigint};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use thiserror::Error;

pub use ibp_service::db::{redact, Backend};

use crate::acl::{Entry, Principal, Rights};
use crate::names::NsPath;

mod acl;
mod batch;
mod files;
mod keys;
mod members;
mod usage;
mod versions;

use acl::{inherited_acl, insert_acl};
use batch::{Arg, Batch};
use files::{check_new_entry, entry_insert_error, insert_entry};
use usage::{
    charge, charge_statement, check_charged, exnode_bytes, file_owner, file_vo_owner, signed,
    wrapped_bytes,
};
pub use versions::{Dropped, Put, VersionInfo};

/// Migrations, applied in order; never edit one that has shipped.
const MIGRATIONS: &[&[&str]] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
];

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

/// Allocations per version, expiry, retention. The `allocations` rows of
/// versions stored before are written by [`Store::open`]'s backfill (it
/// needs the exNodes parsed, which SQL cannot do).
const MIGRATION_3: &[&str] = &[
    "ALTER TABLE versions ADD COLUMN expires BIGINT",
    "ALTER TABLE versions ADD COLUMN readable_until BIGINT",
    "ALTER TABLE versions ADD COLUMN indexed BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX versions_to_index ON versions (indexed)",
    "CREATE TABLE allocations (
        file TEXT NOT NULL,
        version BIGINT NOT NULL,
        alloc TEXT NOT NULL,
        manage TEXT,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (file, alloc, version))",
    "ALTER TABLE entries ADD COLUMN keep_versions BIGINT",
];

/// The source file's modification time a version's exNode records
/// (`mtime`, see [`crate::allocations::Facts::mtime`]); `NULL` for
/// versions stored before and for exNodes without one.
const MIGRATION_4: &[&str] = &["ALTER TABLE versions ADD COLUMN mtime BIGINT"];

/// The display name a member chose (`POST /v1/names/set`); `NULL`: none.
const MIGRATION_5: &[&str] = &["ALTER TABLE members ADD COLUMN display_name TEXT"];

/// Versions kept of each file unless a directory or the VO says otherwise:
/// the current one and the two before it. A refresh, trim, augment or
/// repair makes a version, so one maintenance run of a cron job leaves
/// the version before it and one more to go back to; the old versions of
/// a file refreshed in place share its allocations and cost no depot
/// space, while a replaced file's old content is kept through two more
/// uploads or maintenance runs.
pub const DEFAULT_KEEP_VERSIONS: u64 = 3;
/// The largest retention setting accepted.
pub const MAX_KEEP_VERSIONS: u64 = 10_000;

/// How many versions of each file are kept (at least 1: the current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// For VOs without a setting of their own.
    pub default: u64,
    /// Per VO (the operator's `[keep_versions_per_vo]`).
    pub per_vo: std::collections::BTreeMap<String, u64>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            default: DEFAULT_KEEP_VERSIONS,
            per_vo: Default::default(),
        }
    }
}

/// Where a file's retention comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepSource {
    /// The directory (path) with the setting.
    Directory(String),
    Vo(String),
    Default,
}

/// The retention that applies under a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// Versions kept.
    pub keep: u64,
    pub source: KeepSource,
    /// The directory's own setting (`None`: inherited).
    pub own: Option<u64>,
}

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
    /// The transaction a put was grouped in failed (its begin or commit,
    /// said here): nothing of the group was changed.
    #[error("database: {0}")]
    Group(String),
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
    /// The current version's earliest allocation expiry.
    pub expires: Option<i64>,
    /// Until when every byte of the current version can be read.
    pub readable_until: Option<i64>,
    /// The current version's exNode could not be read (when indexed).
    pub unreadable: bool,
    /// The source file's modification time the current version records.
    pub mtime: Option<i64>,
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
    /// The display name the member chose.
    pub display_name: Option<String>,
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
    /// Its allocations and expiry, read from the exNode.
    pub facts: &'a crate::allocations::Facts,
}

/// Space used by one owner (or a whole VO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub owner: String,
    pub files: u64,
    pub versions: u64,
    /// Sum of the current versions' sizes (old versions kept by retention
    /// are not counted: they are what the files were, not more files).
    pub logical: u64,
    /// Bytes held on depots by every kept version (replicas and shares),
    /// each allocation counted once however many versions name it.
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
    /// Puts waiting for the SQLite writer, run together in one
    /// transaction by the next to hold it (group commit, see
    /// [`Store::put_version`]).
    group: Arc<std::sync::Mutex<Vec<versions::Queued>>>,
    /// Groups of puts committed, and the puts in them.
    grouped: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
    limits: Limits,
    retention: Arc<Retention>,
    /// Where the time of each operation is counted (`/metrics`).
    metrics: Option<Arc<ibp_https::metrics::HttpMetrics>>,
}

fn unsigned(what: &str, v: i64) -> Result<u64, StoreError> {
    db::from_bigint(what, v).map_err(StoreError::Invalid)
}

fn now() -> i64 {
    ibp_auth::unix_now()
}

const ENTRY_COLUMNS: &str =
    "e.id, e.vo, e.path, e.kind, e.owner, e.current_version, e.size, e.created_at, e.updated_at,
     (SELECT cv.expires FROM versions cv WHERE cv.file = e.id AND cv.version = e.current_version)
        AS cur_expires,
     (SELECT cv.readable_until FROM versions cv
       WHERE cv.file = e.id AND cv.version = e.current_version) AS cur_readable,
     (SELECT cv.indexed FROM versions cv WHERE cv.file = e.id AND cv.version = e.current_version)
        AS cur_indexed,
     (SELECT cv.mtime FROM versions cv WHERE cv.file = e.id AND cv.version = e.current_version)
        AS cur_mtime";

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
        expires: row.try_get("cur_expires")?,
        readable_until: row.try_get("cur_readable")?,
        unreadable: row.try_get::<Option<i64>, _>("cur_indexed")? == Some(2),
        mtime: row.try_get("cur_mtime")?,
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
        display_name: row.try_get("display_name")?,
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
        let store = Store {
            pool,
            backend,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            group: Arc::default(),
            grouped: Arc::default(),
            limits,
            retention: Arc::new(Retention::default()),
            metrics: None,
        };
        store
            .backfill_allocations()
            .await
            .context("record the allocations of versions stored before")?;
        Ok(store)
    }

    /// Opens a database migrated only up to migration `n` (the schema of
    /// an older release), for tests of the upgrade.
    #[doc(hidden)]
    pub async fn open_old_schema(url: &str, n: usize) -> anyhow::Result<AnyPool> {
        let (pool, backend) = db::connect(url, 2).await?;
        db::migrate(
            &pool,
            backend,
            &MIGRATIONS[..n.min(MIGRATIONS.len())],
            MIGRATION_LOCK,
        )
        .await?;
        Ok(pool)
    }

    /// The same store counting the time of each operation in `m`'s
    /// `mdm_db_duration_seconds{op}` histogram.
    pub fn with_metrics(mut self, m: Arc<ibp_https::metrics::HttpMetrics>) -> Store {
        self.metrics = Some(m);
        self
    }

    /// Times operation `op` while the guard lives (see [`Store::with_metrics`]).
    fn timer(&self, op: &'static str) -> Option<ibp_https::metrics::DbTimer> {
        self.metrics.as_ref().map(|m| m.db_timer(op))
    }

    /// The same store keeping versions by `retention`.
    pub fn with_retention(mut self, retention: Retention) -> Store {
        self.retention = Arc::new(retention);
        self
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
        Ok((db::begin_write(&self.pool, self.backend).await?, guard))
    }
}
