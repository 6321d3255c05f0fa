//! The L-Bone's database: depot registrations (per VO) and the poller's view
//! of every depot. All SQL of the L-Bone lives in this module.
//!
//! Queries are built at run time (`sqlx::query`) through sqlx's `Any`
//! driver with `$n` placeholders and portable types (TEXT, BIGINT, DOUBLE
//! PRECISION), so that the same statements and migrations run on SQLite
//! (the default: one file, nothing to install) and PostgreSQL (several
//! stateless L-Bone replicas on one database). Migrations are applied in
//! order at start by `ibp_service::db::migrate`, each recorded in
//! `schema_migrations`; on PostgreSQL under an advisory lock so that
//! replicas starting together do not race.
//!
//! Tables:
//! - `registrations (vo, name, host, port, tls_port, latitude, longitude,
//!   place, max_size, max_duration, registered_by, created_at, updated_at)`:
//!   a depot as registered by one VO's admins, with that VO's policy. One
//!   physical depot (host, port) may be registered by several VOs.
//! - `depot_status (host, port, tls_port, misses, last_poll_ms,
//!   last_seen_ms, last_error, hard_*, soft_*, largest_*_free, max_duration,
//!   resources)`: what the last STATUS polls of a depot found, per address
//!   polled: `tls_port` is the registered TLS port the poll went to, 0 for a
//!   poll of the legacy port. Keyed by all three, so that one VO's
//!   registration of a depot with a wrong TLS port (or none) cannot make the
//!   depot look down, or up, to another VO that registered it correctly.
//!   Rows of addresses no longer registered are swept by the poller.
//! - `poll_claims (host, port, tls_port, claimed_by, claimed_ms)`: which
//!   L-Bone instance polls a depot address. Instances sharing one database
//!   would otherwise each poll every depot, and every instance's misses
//!   would count towards `missed_polls_down`. An instance polls an address
//!   only after claiming it ([`Store::claim_poll`]): its own claim it may
//!   renew at any time; another instance's claim only once it is older
//!   than the lease (the owner stopped polling, died or lost the
//!   database). An instance is named by its host name and bound address
//!   (stable across its restarts) and drops its claims when it stops.
//!   Swept with `depot_status`.

use ibp_service::db::{self, is_unique_violation, to_bigint};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use thiserror::Error;

pub use ibp_service::db::{redact, Backend};

use crate::geo::Location;

/// Migrations, applied in order; never edit one that has shipped.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE registrations (
        vo TEXT NOT NULL,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        port BIGINT NOT NULL,
        tls_port BIGINT,
        latitude DOUBLE PRECISION NOT NULL,
        longitude DOUBLE PRECISION NOT NULL,
        place TEXT,
        max_size BIGINT,
        max_duration BIGINT,
        registered_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (vo, name))",
        "CREATE UNIQUE INDEX registrations_by_address ON registrations (vo, host, port)",
        "CREATE TABLE depot_status (
        host TEXT NOT NULL,
        port BIGINT NOT NULL,
        misses BIGINT NOT NULL,
        last_poll_ms BIGINT,
        last_seen_ms BIGINT,
        last_error TEXT,
        hard_capacity BIGINT,
        hard_used BIGINT,
        hard_free BIGINT,
        soft_capacity BIGINT,
        soft_used BIGINT,
        soft_free BIGINT,
        largest_hard_free BIGINT,
        largest_soft_free BIGINT,
        max_duration BIGINT,
        resources BIGINT,
        PRIMARY KEY (host, port))",
    ],
    // Members removed from a VO by its admins: refused grants.
    &["CREATE TABLE removed_members (
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        removed_by TEXT NOT NULL,
        removed_at BIGINT NOT NULL,
        PRIMARY KEY (vo, vo_id))"],
    // Depots are polled over their TLS port when registered with one: the
    // status is per (host, port, tls_port), 0 for the legacy port. Only a
    // cache of the polls, so rebuilt empty (the next round refills it).
    &[
        "DROP TABLE depot_status",
        "CREATE TABLE depot_status (
        host TEXT NOT NULL,
        port BIGINT NOT NULL,
        tls_port BIGINT NOT NULL,
        misses BIGINT NOT NULL,
        last_poll_ms BIGINT,
        last_seen_ms BIGINT,
        last_error TEXT,
        hard_capacity BIGINT,
        hard_used BIGINT,
        hard_free BIGINT,
        soft_capacity BIGINT,
        soft_used BIGINT,
        soft_free BIGINT,
        largest_hard_free BIGINT,
        largest_soft_free BIGINT,
        max_duration BIGINT,
        resources BIGINT,
        PRIMARY KEY (host, port, tls_port))",
    ],
    // Several L-Bone instances on one database: one polls each depot.
    &["CREATE TABLE poll_claims (
        host TEXT NOT NULL,
        port BIGINT NOT NULL,
        tls_port BIGINT NOT NULL,
        claimed_by TEXT NOT NULL,
        claimed_ms BIGINT NOT NULL,
        PRIMARY KEY (host, port, tls_port))"],
];

/// Arbitrary key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x4c42_6f6e_6501;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A registration with that name or address already exists in the VO.
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value is out of range (the database was edited by hand).
    #[error("database holds an invalid value: {0}")]
    Invalid(String),
}

/// A depot as registered by one VO, with that VO's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub vo: String,
    /// Unique within the VO.
    pub name: String,
    /// Host name or address of the depot (lower case).
    pub host: String,
    /// Legacy IBP port: polled when there is no `tls_port`. With the
    /// depot's legacy port switched off (`legacy = false`), any port that
    /// identifies the depot (its TLS port will do).
    pub port: u16,
    /// Secure (TLS) port, if the depot has one: grants name it and the
    /// poller queries it (STATUS over TLS, the L-Bone's certificate as the
    /// client certificate).
    pub tls_port: Option<u16>,
    pub location: Location,
    /// A human place name (`Brno, CZ`) usable in queries instead of coordinates.
    pub place: Option<String>,
    /// Largest allocation (bytes) this VO may ask of the depot; `None`: no limit.
    pub max_size: Option<u64>,
    /// Longest allocation (seconds) this VO may ask of the depot; `None`: no limit.
    pub max_duration: Option<u64>,
    /// VO ID of the admin who registered or last changed it.
    pub registered_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes to a registration; `None` leaves a field as it is, `Some(None)`
/// clears an optional one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls_port: Option<Option<u16>>,
    pub location: Option<Location>,
    pub place: Option<Option<String>>,
    pub max_size: Option<Option<u64>>,
    pub max_duration: Option<Option<u64>>,
}

/// One address the poller queries: a depot's (host, port) and the TLS port
/// a registration gives it (`None`: polled over the legacy port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PollTarget {
    pub host: String,
    pub port: u16,
    pub tls_port: Option<u16>,
}

impl PollTarget {
    /// The `depot_status.tls_port` key: 0 for a legacy poll.
    fn tls_key(&self) -> i64 {
        i64::from(self.tls_port.unwrap_or(0))
    }
}

impl std::fmt::Display for PollTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tls_port {
            Some(t) => write!(f, "{} (TLS)", crate::views::address(&self.host, t)),
            None => f.write_str(&crate::views::address(&self.host, self.port)),
        }
    }
}

/// What a successful STATUS poll found (sums over the depot's resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// HARD bytes: configured, used, still allocatable.
    pub hard_capacity: u64,
    pub hard_used: u64,
    pub hard_free: u64,
    /// All allocations (HARD + SOFT, IBP's "total"): configured, used, free.
    pub soft_capacity: u64,
    pub soft_used: u64,
    pub soft_free: u64,
    /// The largest free space of one resource (one allocation cannot span two).
    pub largest_hard_free: u64,
    pub largest_soft_free: u64,
    /// Longest allocation the depot grants, in seconds (negative: no limit).
    pub max_duration: i64,
    /// Number of resources polled.
    pub resources: u32,
}

/// The poller's view of a depot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepotStatus {
    /// Consecutive polls missed since the last answered one.
    pub misses: u32,
    /// When the last poll finished (Unix milliseconds).
    pub last_poll_ms: Option<i64>,
    /// When the depot last answered a poll (Unix milliseconds).
    pub last_seen_ms: Option<i64>,
    /// Why the last missed poll failed.
    pub last_error: Option<String>,
    /// What the last answered poll reported.
    pub capacity: Option<Capacity>,
}

/// A registration with the status of its depot (none before the first poll).
#[derive(Debug, Clone, PartialEq)]
pub struct DepotRow {
    pub registration: Registration,
    pub status: Option<DepotStatus>,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Where the time of each operation is counted (`/metrics`).
    metrics: Option<std::sync::Arc<ibp_https::metrics::HttpMetrics>>,
}

fn unsigned(what: &str, v: i64) -> Result<u64, StoreError> {
    db::from_bigint(what, v).map_err(StoreError::Invalid)
}

fn port(what: &str, v: i64) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} = {v}")))
}

const REGISTRATION_COLUMNS: &str = "r.vo, r.name, r.host, r.port, r.tls_port, r.latitude, \
     r.longitude, r.place, r.max_size, r.max_duration, r.registered_by, r.created_at, r.updated_at";

const STATUS_COLUMNS: &str = "s.misses, s.last_poll_ms, s.last_seen_ms, s.last_error, \
     s.hard_capacity, s.hard_used, s.hard_free, s.soft_capacity, s.soft_used, s.soft_free, \
     s.largest_hard_free, s.largest_soft_free, s.max_duration AS depot_max_duration, s.resources";

fn registration_of(row: &AnyRow) -> Result<Registration, StoreError> {
    let lat: f64 = row.try_get("latitude")?;
    let lon: f64 = row.try_get("longitude")?;
    Ok(Registration {
        vo: row.try_get("vo")?,
        name: row.try_get("name")?,
        host: row.try_get("host")?,
        port: port("port", row.try_get("port")?)?,
        tls_port: row
            .try_get::<Option<i64>, _>("tls_port")?
            .map(|p| port("tls_port", p))
            .transpose()?,
        location: Location::new(lat, lon).map_err(StoreError::Invalid)?,
        place: row.try_get("place")?,
        max_size: row
            .try_get::<Option<i64>, _>("max_size")?
            .map(|v| unsigned("max_size", v))
            .transpose()?,
        max_duration: row
            .try_get::<Option<i64>, _>("max_duration")?
            .map(|v| unsigned("max_duration", v))
            .transpose()?,
        registered_by: row.try_get("registered_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn status_of(row: &AnyRow) -> Result<Option<DepotStatus>, StoreError> {
    let Some(misses) = row.try_get::<Option<i64>, _>("misses")? else {
        return Ok(None);
    };
    let num = |c: &str| -> Result<Option<u64>, StoreError> {
        row.try_get::<Option<i64>, _>(c)?
            .map(|v| unsigned(c, v))
            .transpose()
    };
    let capacity = match (
        num("hard_capacity")?,
        num("hard_used")?,
        num("hard_free")?,
        num("soft_capacity")?,
        num("soft_used")?,
        num("soft_free")?,
        num("largest_hard_free")?,
        num("largest_soft_free")?,
        row.try_get::<Option<i64>, _>("depot_max_duration")?,
        num("resources")?,
    ) {
        (
            Some(hard_capacity),
            Some(hard_used),
            Some(hard_free),
            Some(soft_capacity),
            Some(soft_used),
            Some(soft_free),
            Some(largest_hard_free),
            Some(largest_soft_free),
            Some(max_duration),
            Some(resources),
        ) => Some(Capacity {
            hard_capacity,
            hard_used,
            hard_free,
            soft_capacity,
            soft_used,
            soft_free,
            largest_hard_free,
            largest_soft_free,
            max_duration,
            resources: u32::try_from(resources).unwrap_or(u32::MAX),
        }),
        _ => None,
    };
    Ok(Some(DepotStatus {
        misses: u32::try_from(misses.max(0)).unwrap_or(u32::MAX),
        last_poll_ms: row.try_get("last_poll_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        last_error: row.try_get("last_error")?,
        capacity,
    }))
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        use anyhow::Context;
        let (pool, backend) = db::connect(url, 8).await?;
        db::migrate(&pool, backend, MIGRATIONS, MIGRATION_LOCK)
            .await
            .context("migrate the database")?;
        Ok(Store {
            pool,
            backend,
            metrics: None,
        })
    }

    /// Connects with at most `max_connections` connections, without
    /// migrating: a second pool on a database [`Store::open`] migrated
    /// (the poller's own, so API clients cannot take all connections).
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        let (pool, backend) = db::connect(url, max_connections).await?;
        Ok(Store {
            pool,
            backend,
            metrics: None,
        })
    }

    /// The same store counting the time of each operation in `m`'s
    /// `lbone_db_duration_seconds{op}` histogram.
    pub fn with_metrics(mut self, m: std::sync::Arc<ibp_https::metrics::HttpMetrics>) -> Store {
        self.metrics = Some(m);
        self
    }

    /// Times operation `op` while the guard lives.
    fn timer(&self, op: &'static str) -> Option<ibp_https::metrics::DbTimer> {
        self.metrics.as_ref().map(|m| m.db_timer(op))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Adds a registration; a name or an address already registered in the
    /// VO is a [`StoreError::Conflict`].
    pub async fn register(&self, r: &Registration) -> Result<(), StoreError> {
        let _db = self.timer("register");
        // Insert first and let the unique keys decide: no read-then-write
        // window (and on SQLite no lock upgrade that could fail as busy).
        let res = sqlx::query(
            "INSERT INTO registrations (vo, name, host, port, tls_port, latitude, longitude,
                 place, max_size, max_duration, registered_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&r.vo)
        .bind(&r.name)
        .bind(&r.host)
        .bind(i64::from(r.port))
        .bind(r.tls_port.map(i64::from))
        .bind(r.location.lat)
        .bind(r.location.lon)
        .bind(r.place.clone())
        .bind(r.max_size.map(to_bigint))
        .bind(r.max_duration.map(to_bigint))
        .bind(&r.registered_by)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(self.conflict(r, None).await),
            Err(e) => Err(e.into()),
        }
    }

    /// The conflict error for `r`: which registration of its VO holds its
    /// name or address (other than `except`).
    async fn conflict(&self, r: &Registration, except: Option<&str>) -> StoreError {
        let found = sqlx::query(
            "SELECT name FROM registrations
              WHERE vo = $1 AND name <> $5 AND (name = $2 OR (host = $3 AND port = $4))
              ORDER BY name LIMIT 1",
        )
        .bind(&r.vo)
        .bind(&r.name)
        .bind(&r.host)
        .bind(i64::from(r.port))
        .bind(except.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await;
        let existing = match found {
            Ok(Some(row)) => row.try_get::<String, _>("name").ok(),
            _ => None,
        };
        match existing {
            Some(n) if n != r.name => StoreError::Conflict(format!(
                "VO {} already registered {}:{} as {n:?}",
                r.vo, r.host, r.port
            )),
            _ => StoreError::Conflict(format!(
                "VO {} already has a depot named {:?} or registered {}:{}",
                r.vo, r.name, r.host, r.port
            )),
        }
    }

    /// One registration.
    pub async fn registration(
        &self,
        vo: &str,
        name: &str,
    ) -> Result<Option<Registration>, StoreError> {
        let _db = self.timer("registration");
        let sql = format!(
            "SELECT {REGISTRATION_COLUMNS} FROM registrations r WHERE r.vo = $1 AND r.name = $2"
        );
        sqlx::query(&sql)
            .bind(vo)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(registration_of)
            .transpose()
    }

    /// Applies `changes` to a registration; `None` if there is none by that name.
    pub async fn update(
        &self,
        vo: &str,
        name: &str,
        changes: &Changes,
        by: &str,
        now: i64,
    ) -> Result<Option<Registration>, StoreError> {
        let _db = self.timer("update");
        let mut tx = db::begin_write(&self.pool, self.backend).await?;
        // Take the write lock (SQLite) or the row lock (PostgreSQL) first,
        // so that the read-modify-write below cannot interleave with another.
        let locked = sqlx::query(
            "UPDATE registrations SET updated_at = updated_at WHERE vo = $1 AND name = $2",
        )
        .bind(vo)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if locked.rows_affected() == 0 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {REGISTRATION_COLUMNS} FROM registrations r WHERE r.vo = $1 AND r.name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(vo)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let mut r = registration_of(&row)?;
        if let Some(h) = &changes.host {
            r.host = h.clone();
        }
        if let Some(p) = changes.port {
            r.port = p;
        }
        if let Some(p) = changes.tls_port {
            r.tls_port = p;
        }
        if let Some(l) = changes.location {
            r.location = l;
        }
        if let Some(p) = &changes.place {
            r.place = p.clone();
        }
        if let Some(s) = changes.max_size {
            r.max_size = s;
        }
        if let Some(d) = changes.max_duration {
            r.max_duration = d;
        }
        r.registered_by = by.to_owned();
        r.updated_at = now;
        let res = sqlx::query(
            "UPDATE registrations SET host = $3, port = $4, tls_port = $5, latitude = $6,
                 longitude = $7, place = $8, max_size = $9, max_duration = $10,
                 registered_by = $11, updated_at = $12
              WHERE vo = $1 AND name = $2",
        )
        .bind(vo)
        .bind(name)
        .bind(&r.host)
        .bind(i64::from(r.port))
        .bind(r.tls_port.map(i64::from))
        .bind(r.location.lat)
        .bind(r.location.lon)
        .bind(r.place.clone())
        .bind(r.max_size.map(to_bigint))
        .bind(r.max_duration.map(to_bigint))
        .bind(&r.registered_by)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return Err(self.conflict(&r, Some(name)).await);
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Some(r))
    }

    /// Marks a VO member removed (grants refused); false if already so.
    pub async fn remove_member(
        &self,
        vo: &str,
        vo_id: &str,
        by: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let _db = self.timer("remove_member");
        let res = sqlx::query(
            "INSERT INTO removed_members (vo, vo_id, removed_by, removed_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(vo)
        .bind(vo_id)
        .bind(by)
        .bind(at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Lifts a removal; whether there was one.
    pub async fn restore_member(&self, vo: &str, vo_id: &str) -> Result<bool, StoreError> {
        let _db = self.timer("restore_member");
        let res = sqlx::query("DELETE FROM removed_members WHERE vo = $1 AND vo_id = $2")
            .bind(vo)
            .bind(vo_id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Who removed `vo_id` from `vo`, and when, if it was removed.
    pub async fn removed(
        &self,
        vo: &str,
        vo_id: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let _db = self.timer("removed");
        let row = sqlx::query(
            "SELECT removed_by, removed_at FROM removed_members WHERE vo = $1 AND vo_id = $2",
        )
        .bind(vo)
        .bind(vo_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("removed_by")?, r.try_get("removed_at")?))),
            None => Ok(None),
        }
    }

    /// The removed members of `vo`: (VO ID, removed by, when), by VO ID.
    pub async fn removed_members(
        &self,
        vo: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let _db = self.timer("removed_members");
        let rows = sqlx::query(
            "SELECT vo_id, removed_by, removed_at FROM removed_members WHERE vo = $1 ORDER BY vo_id",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("vo_id")?,
                    r.try_get("removed_by")?,
                    r.try_get("removed_at")?,
                ))
            })
            .collect()
    }

    /// Removes a registration; whether there was one.
    pub async fn remove(&self, vo: &str, name: &str) -> Result<bool, StoreError> {
        let _db = self.timer("remove");
        let res = sqlx::query("DELETE FROM registrations WHERE vo = $1 AND name = $2")
            .bind(vo)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The registrations of one VO (or of all VOs) with their depots' status,
    /// ordered by VO and name.
    pub async fn depots(&self, vo: Option<&str>) -> Result<Vec<DepotRow>, StoreError> {
        let _db = self.timer("depots");
        let filter = if vo.is_some() { "WHERE r.vo = $1" } else { "" };
        let sql = format!(
            "SELECT {REGISTRATION_COLUMNS}, {STATUS_COLUMNS}
               FROM registrations r
               LEFT JOIN depot_status s ON s.host = r.host AND s.port = r.port
                    AND s.tls_port = COALESCE(r.tls_port, 0)
               {filter}
              ORDER BY r.vo, r.name"
        );
        let mut q = sqlx::query(&sql);
        if let Some(vo) = vo {
            q = q.bind(vo);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(DepotRow {
                    registration: registration_of(row)?,
                    status: status_of(row)?,
                })
            })
            .collect()
    }

    /// The location of a place name registered in the VO (case-insensitive).
    pub async fn place(&self, vo: &str, place: &str) -> Result<Option<Location>, StoreError> {
        let _db = self.timer("place");
        let row = sqlx::query(
            "SELECT latitude, longitude FROM registrations
              WHERE vo = $1 AND LOWER(place) = LOWER($2)
              ORDER BY name LIMIT 1",
        )
        .bind(vo)
        .bind(place)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let lat: f64 = row.try_get("latitude")?;
            let lon: f64 = row.try_get("longitude")?;
            Location::new(lat, lon).map_err(StoreError::Invalid)
        })
        .transpose()
    }

    /// Every registered depot address with the TLS port a registration
    /// gives it, once each.
    pub async fn poll_targets(&self) -> Result<Vec<PollTarget>, StoreError> {
        let _db = self.timer("poll_targets");
        sqlx::query(
            "SELECT DISTINCT host, port, tls_port FROM registrations ORDER BY host, port, tls_port",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(PollTarget {
                host: row.try_get("host")?,
                port: port("port", row.try_get("port")?)?,
                tls_port: row
                    .try_get::<Option<i64>, _>("tls_port")?
                    .map(|p| port("tls_port", p))
                    .transpose()?,
            })
        })
        .collect()
    }

    /// Records an answered poll.
    pub async fn record_success(
        &self,
        t: &PollTarget,
        now_ms: i64,
        c: &Capacity,
    ) -> Result<(), StoreError> {
        let _db = self.timer("record_success");
        sqlx::query(
            "INSERT INTO depot_status (host, port, tls_port, misses, last_poll_ms, last_seen_ms,
                 last_error, hard_capacity, hard_used, hard_free, soft_capacity, soft_used,
                 soft_free, largest_hard_free, largest_soft_free, max_duration, resources)
             VALUES ($1, $2, $3, 0, $4, $4, NULL, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (host, port, tls_port) DO UPDATE SET
                 misses = 0,
                 last_poll_ms = excluded.last_poll_ms,
                 last_seen_ms = excluded.last_seen_ms,
                 last_error = NULL,
                 hard_capacity = excluded.hard_capacity,
                 hard_used = excluded.hard_used,
                 hard_free = excluded.hard_free,
                 soft_capacity = excluded.soft_capacity,
                 soft_used = excluded.soft_used,
                 soft_free = excluded.soft_free,
                 largest_hard_free = excluded.largest_hard_free,
                 largest_soft_free = excluded.largest_soft_free,
                 max_duration = excluded.max_duration,
                 resources = excluded.resources",
        )
        .bind(&t.host)
        .bind(i64::from(t.port))
        .bind(t.tls_key())
        .bind(now_ms)
        .bind(to_bigint(c.hard_capacity))
        .bind(to_bigint(c.hard_used))
        .bind(to_bigint(c.hard_free))
        .bind(to_bigint(c.soft_capacity))
        .bind(to_bigint(c.soft_used))
        .bind(to_bigint(c.soft_free))
        .bind(to_bigint(c.largest_hard_free))
        .bind(to_bigint(c.largest_soft_free))
        .bind(c.max_duration)
        .bind(i64::from(c.resources))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a missed poll; returns the number of consecutive misses.
    pub async fn record_failure(
        &self,
        t: &PollTarget,
        now_ms: i64,
        error: &str,
    ) -> Result<u32, StoreError> {
        let _db = self.timer("record_failure");
        let row = sqlx::query(
            "INSERT INTO depot_status (host, port, tls_port, misses, last_poll_ms, last_error)
             VALUES ($1, $2, $3, 1, $4, $5)
             ON CONFLICT (host, port, tls_port) DO UPDATE SET
                 misses = depot_status.misses + 1,
                 last_poll_ms = excluded.last_poll_ms,
                 last_error = excluded.last_error
             RETURNING misses",
        )
        .bind(&t.host)
        .bind(i64::from(t.port))
        .bind(t.tls_key())
        .bind(now_ms)
        .bind(error)
        .fetch_one(&self.pool)
        .await?;
        let misses: i64 = row.try_get("misses")?;
        Ok(u32::try_from(misses.max(0)).unwrap_or(u32::MAX))
    }

    /// Claims the poll of `t` for the instance `me` at `now_ms`: true when
    /// this instance is to poll it. The claim is taken when there is none,
    /// when it is this instance's own, or when another instance's is older
    /// than `lease_ms` (or lies in the future by more than that: a clock
    /// moved back). One atomic upsert, so two instances racing for a free
    /// address get one winner.
    pub async fn claim_poll(
        &self,
        t: &PollTarget,
        me: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let _db = self.timer("claim_poll");
        let row = sqlx::query(
            "INSERT INTO poll_claims (host, port, tls_port, claimed_by, claimed_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (host, port, tls_port) DO UPDATE SET
                 claimed_by = excluded.claimed_by,
                 claimed_ms = excluded.claimed_ms
             WHERE poll_claims.claimed_by = excluded.claimed_by
                OR poll_claims.claimed_ms <= $6
                OR poll_claims.claimed_ms > $7
             RETURNING claimed_ms",
        )
        .bind(&t.host)
        .bind(i64::from(t.port))
        .bind(t.tls_key())
        .bind(me)
        .bind(now_ms)
        .bind(now_ms.saturating_sub(lease_ms))
        .bind(now_ms.saturating_add(lease_ms))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Drops every poll claim of instance `me` (at its shutdown).
    pub async fn release_claims(&self, me: &str) -> Result<u64, StoreError> {
        let _db = self.timer("release_claims");
        let res = sqlx::query("DELETE FROM poll_claims WHERE claimed_by = $1")
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }

    /// Forgets the status (and poll claims) of depots that are no longer
    /// registered.
    pub async fn sweep_status(&self) -> Result<u64, StoreError> {
        let _db = self.timer("sweep_status");
        let mut swept = 0;
        for table in ["depot_status", "poll_claims"] {
            let res = sqlx::query(&format!(
                "DELETE FROM {table} WHERE NOT EXISTS (
                     SELECT 1 FROM registrations r
                      WHERE r.host = {table}.host AND r.port = {table}.port
                        AND COALESCE(r.tls_port, 0) = {table}.tls_port)"
            ))
            .execute(&self.pool)
            .await?;
            swept += res.rows_affected();
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poll_claim_is_held_for_its_lease_and_renewed_by_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let store = Store::open(&url).await.expect("open");
        let t = PollTarget {
            host: "depot.example.org".into(),
            port: 6714,
            tls_port: Some(6715),
        };
        let legacy = PollTarget {
            tls_port: None,
            ..t.clone()
        };
        let lease = 1_000;
        let claim = |who: &'static str, now: i64, t: &PollTarget| {
            let (store, t) = (store.clone(), t.clone());
            async move { store.claim_poll(&t, who, now, lease).await.expect("claim") }
        };
        assert!(claim("a", 10_000, &t).await, "a free address");
        assert!(!claim("b", 10_500, &t).await, "another's fresh claim");
        assert!(claim("b", 10_500, &legacy).await, "another address");
        assert!(claim("a", 10_600, &t).await, "its own claim, early");
        assert!(!claim("b", 11_599, &t).await, "within the lease");
        assert!(claim("b", 11_600, &t).await, "the lease ran out");
        assert!(!claim("a", 11_700, &t).await, "now b's");
        // A claim from the future (a clock moved back) does not hold.
        assert!(claim("a", 10_000 - lease - 1, &t).await);
        // An instance that stops releases its claims: the other takes the
        // address at once.
        assert!(!claim("b", 9_000, &t).await);
        assert_eq!(store.release_claims("a").await.expect("release"), 1);
        assert!(claim("b", 9_000, &t).await);
    }
}
