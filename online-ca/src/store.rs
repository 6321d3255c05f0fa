//! The CA's database: VO membership (which federated identity belongs to
//! which VO with which VO ID and groups) and the audit log of issued
//! certificates and attributes.
//!
//! All SQL lives in this module. Queries are built at run time
//! (`sqlx::query`, not `query!`) through sqlx's `Any` driver, with `$n`
//! placeholders and portable types (TEXT, BIGINT), on SQLite or
//! PostgreSQL (both tested: the unit tests and `tests/*.rs` on SQLite,
//! `tests/postgres.rs` on PostgreSQL). Migrations are SQL strings
//! applied in order at start, each recorded in `schema_migrations`.
//!
//! Tables:
//! - `members (vo, identity, vo_id, linked_from, created_at)`: an identity
//!   (`local:<user>`, `radius:<user>`, `oidc:<iss>#<sub>`,
//!   `cert:<issuer DN>|<subject DN>`) belongs to a VO as the user `vo_id`.
//!   Several identities may share one VO ID (a user's second certificate or
//!   second login method). `linked_from` is set for certificates linked
//!   automatically at login (the identity that logged in) and for
//!   certificates a member linked themselves (`/v1/link`: their login
//!   identity); removing that identity removes those links too.
//! - `vo_groups (vo, name, group_id)`, `group_members (vo, group_id, vo_id)`:
//!   groups hold users (VO IDs), not identities.
//! - `former_vo_ids (vo, vo_id, last_identity, removed_at)`: VO IDs whose
//!   last identity was removed. Files and ACLs at the metadata manager are
//!   keyed by VO ID, so a returning member is linked back to theirs with
//!   `member add --vo-id` (which accepts a current or a former VO ID of the
//!   same VO, never an invented one); the restore deletes the row.
//! - `audit (id, kind, serial, subject, identity, vo, vo_id, not_before,
//!   not_after, lifetime, issued_at, remote)`: one row per issued
//!   certificate (`kind = certificate`) or attribute set for an existing
//!   certificate (`kind = attributes`), maintenance grant enrolled
//!   (`kind = maintenance-grant`) or maintenance proxy certificate
//!   (`kind = maintenance`). `id` starts with the issue time in
//!   microseconds, so records sort in issue order.
//! - `maintenance_grants (id, vo, vo_id, identity, token_hash, created_at,
//!   expires_at, revoked_at, revoked_by, last_used_at)`: renewable
//!   maintenance credentials (docs/maintenance.md). `identity` is the
//!   member identity that enrolled (the login identity, not the
//!   certificate linked from it); removing it revokes its grants.
//!   `token_hash` is the hex SHA-256 of the secret token, never the token.
//! - `pseudonyms (vo, vo_id, pseudonym, created_at)`: the pseudonym of a
//!   member (VO ID) of a pseudonymous VO, drawn at random at their first
//!   login and never changed; `pseudonym` is unique across VOs
//!   (`store/pseudonyms.rs`).
//! - `hosts`, `host_certs`: the allow-list of service hosts and the host
//!   certificates issued to them, with when each was revoked
//!   (`store/hosts.rs`).
//! - `link_challenges`, `link_requests`: certificates members link to
//!   their VO ID themselves, by proving possession (`store/links.rs`).

use anyhow::{anyhow, bail};
use serde::Serialize;
use sqlx::{AnyPool, Row};

mod grants;
mod hosts;
mod links;
mod pseudonyms;
pub use grants::{GrantRow, GrantState};
pub use hosts::{HostCertRow, HostRow, HostState, Role};
pub use links::{ChallengeRow, LinkOutcome, LinkRequestRow};
pub use pseudonyms::{parse_pseudonym, PseudonymRow, CN_PREFIX};

/// Migrations, applied in order; never edit one that has shipped.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE members (
        vo TEXT NOT NULL,
        identity TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        linked_from TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (vo, identity))",
        "CREATE INDEX members_by_vo_id ON members (vo, vo_id)",
        "CREATE INDEX members_by_origin ON members (vo, linked_from)",
        "CREATE TABLE vo_groups (
        vo TEXT NOT NULL,
        name TEXT NOT NULL,
        group_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (vo, name))",
        "CREATE TABLE group_members (
        vo TEXT NOT NULL,
        group_id TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        PRIMARY KEY (vo, group_id, vo_id))",
        "CREATE TABLE audit (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        serial TEXT NOT NULL,
        subject TEXT NOT NULL,
        identity TEXT NOT NULL,
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        not_before BIGINT NOT NULL,
        not_after BIGINT NOT NULL,
        lifetime BIGINT NOT NULL,
        issued_at BIGINT NOT NULL,
        remote TEXT NOT NULL)",
        "CREATE INDEX audit_by_time ON audit (issued_at)",
    ],
    &["CREATE TABLE former_vo_ids (
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        last_identity TEXT NOT NULL,
        removed_at BIGINT NOT NULL,
        PRIMARY KEY (vo, vo_id))"],
    &[
        "CREATE TABLE maintenance_grants (
        id TEXT PRIMARY KEY,
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        identity TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revoked_by TEXT,
        last_used_at BIGINT)",
        "CREATE INDEX maintenance_grants_by_member ON maintenance_grants (vo, vo_id)",
        "CREATE INDEX maintenance_grants_by_identity ON maintenance_grants (vo, identity)",
    ],
    &["CREATE TABLE pseudonyms (
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        pseudonym TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (vo, vo_id))"],
    &[
        "CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        names TEXT NOT NULL,
        enrollment TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        token_expires_at BIGINT NOT NULL,
        token_used_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        revoked_at BIGINT)",
        "CREATE TABLE host_certs (
        serial TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        enrollment TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        not_after BIGINT NOT NULL)",
        "CREATE INDEX host_certs_by_name ON host_certs (name, enrollment)",
    ],
    // Host certificates revoked before they expire (the CA's revocation
    // list, `/v1/trust` "crl" and `/v1/crl`).
    &["ALTER TABLE host_certs ADD COLUMN revoked_at BIGINT"],
    // Certificates members link themselves (`store/links.rs`).
    &[
        "CREATE TABLE link_challenges (
        nonce TEXT PRIMARY KEY,
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        identity TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        cert_sha256 TEXT NOT NULL,
        expires_at BIGINT NOT NULL)",
        "CREATE TABLE link_requests (
        id TEXT PRIMARY KEY,
        vo TEXT NOT NULL,
        vo_id TEXT NOT NULL,
        identity TEXT NOT NULL,
        linked_from TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        subject TEXT NOT NULL,
        serial TEXT NOT NULL,
        not_after BIGINT NOT NULL,
        requested_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        decided_at BIGINT,
        decided_by TEXT)",
        "CREATE INDEX link_requests_by_vo ON link_requests (vo, state)",
    ],
];

/// A VO group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
}

/// A user of a VO as seen at login: the VO ID and its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub vo_id: String,
    pub groups: Vec<GroupRow>,
}

/// One identity of a VO, for `member list`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    pub identity: String,
    pub vo_id: String,
    /// Group names of the VO ID.
    pub groups: Vec<String>,
    /// For automatically linked certificates: the identity that logged in.
    pub linked_from: Option<String>,
    pub created_at: i64,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: String,
    pub kind: String,
    /// Serial of the issued certificate (for `attributes`: of the holder's
    /// certificate), hex.
    pub serial: String,
    pub subject: String,
    pub identity: String,
    pub vo: String,
    pub vo_id: String,
    pub not_before: i64,
    pub not_after: i64,
    pub lifetime: i64,
    pub issued_at: i64,
    pub remote: String,
}

/// What `member_add` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub vo_id: String,
    /// The identity was not a member before.
    pub new_identity: bool,
    /// `vo_id` was a former VO ID (every identity of it had been removed)
    /// and is a member again.
    pub restored: bool,
    /// Groups created on the way.
    pub new_groups: Vec<String>,
}

/// What `member_remove` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// (identity, VO ID) of every identity removed.
    pub identities: Vec<(String, String)>,
    /// VO IDs left without identities: former members now.
    pub former_vo_ids: Vec<String>,
}

/// A VO ID whose last identity was removed, for `member list --former`.
#[derive(Debug, Clone, Serialize)]
pub struct FormerRow {
    pub vo_id: String,
    pub last_identity: String,
    pub removed_at: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: ibp_service::db::Backend,
}

/// A new audit record id: microseconds since the epoch (16 hex digits, so
/// ids sort in issue order) and a random UUID.
pub fn new_audit_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{micros:016x}-{}", uuid::Uuid::new_v4())
}

fn now() -> i64 {
    ibp_auth::unix_now()
}

/// The key of the PostgreSQL advisory lock taken while migrating (unused
/// on SQLite).
const MIGRATION_LOCK: i64 = 0x0CA_0001;

/// Connections of a CA process to PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 8;

impl Store {
    /// Connects through `ibp_service::db` and applies pending migrations.
    /// `sqlite://` or `postgres://` (`postgresql://`). A SQLite file is
    /// created mode 0600 when missing (its directory 0700) and refused
    /// when others may read it. On PostgreSQL several CA processes may
    /// share the database (migrations take an advisory lock).
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        let backend = ibp_service::db::Backend::of_url(url)
            .map_err(|e| anyhow!("database {}: {e}", ibp_service::db::redact(url)))?;
        // SQLite: one connection, as SQLite has one writer anyway, and a
        // transaction dropped on an error path is rolled back before the
        // connection serves anyone else. (Write transactions also begin
        // with `begin_write`, which waits for such a rollback in flight.)
        let connections = match backend {
            ibp_service::db::Backend::Sqlite => 1,
            ibp_service::db::Backend::Postgres => POSTGRES_CONNECTIONS,
        };
        let (pool, backend) = match ibp_service::db::connect(url, connections).await {
            Ok(p) => p,
            // The database holds every membership and the audit log.
            Err(ibp_service::Error::Exposed { path, mode }) => bail!(
                "database {p} has mode {mode:03o}; it must be readable by its owner only (chmod 600 {p})",
                p = path.display()
            ),
            Err(e) => return Err(e.into()),
        };
        ibp_service::db::migrate(&pool, backend, MIGRATIONS, MIGRATION_LOCK).await?;
        Ok(Store { pool, backend })
    }

    /// The VO ID and groups of `identity` in `vo`, if it is a member.
    pub async fn membership(&self, vo: &str, identity: &str) -> anyhow::Result<Option<Membership>> {
        let row = sqlx::query("SELECT vo_id FROM members WHERE vo = $1 AND identity = $2")
            .bind(vo)
            .bind(identity)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let vo_id: String = row.try_get("vo_id")?;
        let groups = self.groups_of(vo, &vo_id).await?;
        Ok(Some(Membership { vo_id, groups }))
    }

    async fn groups_of(&self, vo: &str, vo_id: &str) -> anyhow::Result<Vec<GroupRow>> {
        let rows = sqlx::query(
            "SELECT g.group_id AS group_id, g.name AS name
               FROM group_members m JOIN vo_groups g
                 ON g.vo = m.vo AND g.group_id = m.group_id
              WHERE m.vo = $1 AND m.vo_id = $2
              ORDER BY g.name",
        )
        .bind(vo)
        .bind(vo_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GroupRow {
                    id: r.try_get("group_id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// Adds `identity` to `vo`. Without `vo_id`, a new VO ID (a UUID) is
    /// made unless the identity already has one; with `vo_id`, the identity
    /// is linked to that existing VO ID. Then the VO ID joins `groups`
    /// (created when missing).
    pub async fn member_add(
        &self,
        vo: &str,
        identity: &str,
        vo_id: Option<&str>,
        groups: &[String],
    ) -> anyhow::Result<Added> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let existing: Option<String> =
            sqlx::query("SELECT vo_id FROM members WHERE vo = $1 AND identity = $2")
                .bind(vo)
                .bind(identity)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("vo_id"))
                .transpose()?;
        let mut former = false;
        if let Some(want) = vo_id {
            let known = sqlx::query("SELECT vo_id FROM members WHERE vo = $1 AND vo_id = $2")
                .bind(vo)
                .bind(want)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !known {
                former =
                    sqlx::query("SELECT vo_id FROM former_vo_ids WHERE vo = $1 AND vo_id = $2")
                        .bind(vo)
                        .bind(want)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                if !former {
                    bail!("VO ID {want} is not a member of VO {vo}, nor a former one");
                }
            }
        }
        let (vo_id, new_identity) = match (existing, vo_id) {
            (Some(have), Some(want)) if have != want => bail!(
                "{identity} is already a member of VO {vo} with VO ID {have}; remove it first to link it to {want}"
            ),
            (Some(have), _) => (have, false),
            (None, want) => {
                let id = want
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                sqlx::query(
                    "INSERT INTO members (vo, identity, vo_id, linked_from, created_at)
                     VALUES ($1, $2, $3, NULL, $4)",
                )
                .bind(vo)
                .bind(identity)
                .bind(&id)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                (id, true)
            }
        };
        let restored = former && new_identity;
        if restored {
            sqlx::query("DELETE FROM former_vo_ids WHERE vo = $1 AND vo_id = $2")
                .bind(vo)
                .bind(&vo_id)
                .execute(&mut *tx)
                .await?;
        }
        let mut new_groups = Vec::new();
        for name in groups {
            let (gid, created) = group_ensure(&mut tx, vo, name).await?;
            if created {
                new_groups.push(name.clone());
            }
            sqlx::query(
                "INSERT INTO group_members (vo, group_id, vo_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(vo)
            .bind(&gid)
            .bind(&vo_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Added {
            vo_id,
            new_identity,
            restored,
            new_groups,
        })
    }

    /// Links a certificate identity to the VO ID of `linked_from` (done at
    /// login for the issued certificate). An identity already present is
    /// left as it is. Returns whether a link was made.
    pub async fn link(
        &self,
        vo: &str,
        identity: &str,
        vo_id: &str,
        linked_from: &str,
    ) -> anyhow::Result<bool> {
        insert_link(&self.pool, vo, identity, vo_id, linked_from).await
    }

    /// Removes `identity` from `vo`, with the certificates linked
    /// automatically from it. A VO ID left without identities leaves its
    /// groups and becomes a former VO ID (`former_vo_ids`).
    pub async fn member_remove(&self, vo: &str, identity: &str) -> anyhow::Result<Removed> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let rows = sqlx::query(
            "SELECT identity, vo_id FROM members
              WHERE vo = $1 AND (identity = $2 OR linked_from = $2)",
        )
        .bind(vo)
        .bind(identity)
        .fetch_all(&mut *tx)
        .await?;
        if !rows
            .iter()
            .any(|r| r.try_get::<String, _>("identity").ok().as_deref() == Some(identity))
        {
            bail!("{identity} is not a member of VO {vo}");
        }
        let mut removed = Removed::default();
        let mut vo_ids = Vec::new();
        for r in &rows {
            let id: String = r.try_get("vo_id")?;
            removed
                .identities
                .push((r.try_get::<String, _>("identity")?, id.clone()));
            vo_ids.push(id);
        }
        sqlx::query("DELETE FROM members WHERE vo = $1 AND (identity = $2 OR linked_from = $2)")
            .bind(vo)
            .bind(identity)
            .execute(&mut *tx)
            .await?;
        // Grants enrolled by a removed identity die with it: a member
        // added back later enrolls again.
        for (id, _) in &removed.identities {
            sqlx::query(
                "UPDATE maintenance_grants SET revoked_at = $3, revoked_by = 'member removed'
                  WHERE vo = $1 AND identity = $2 AND revoked_at IS NULL",
            )
            .bind(vo)
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        vo_ids.sort();
        vo_ids.dedup();
        for id in vo_ids {
            let left = sqlx::query("SELECT identity FROM members WHERE vo = $1 AND vo_id = $2")
                .bind(vo)
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !left {
                sqlx::query("DELETE FROM group_members WHERE vo = $1 AND vo_id = $2")
                    .bind(vo)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO former_vo_ids (vo, vo_id, last_identity, removed_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (vo, vo_id) DO UPDATE
                     SET last_identity = excluded.last_identity, removed_at = excluded.removed_at",
                )
                .bind(vo)
                .bind(&id)
                .bind(identity)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                removed.former_vo_ids.push(id);
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The former VO IDs of `vo`, newest removal first.
    pub async fn former_list(&self, vo: &str) -> anyhow::Result<Vec<FormerRow>> {
        let rows = sqlx::query(
            "SELECT vo_id, last_identity, removed_at FROM former_vo_ids
              WHERE vo = $1 ORDER BY removed_at DESC, vo_id",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FormerRow {
                    vo_id: r.try_get("vo_id")?,
                    last_identity: r.try_get("last_identity")?,
                    removed_at: r.try_get("removed_at")?,
                })
            })
            .collect()
    }

    /// Every identity of `vo`, with its VO ID and group names.
    pub async fn member_list(&self, vo: &str) -> anyhow::Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT identity, vo_id, linked_from, created_at FROM members
              WHERE vo = $1 ORDER BY vo_id, identity",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let vo_id: String = r.try_get("vo_id")?;
            let groups = self
                .groups_of(vo, &vo_id)
                .await?
                .into_iter()
                .map(|g| g.name)
                .collect();
            out.push(MemberRow {
                identity: r.try_get("identity")?,
                vo_id,
                groups,
                linked_from: r.try_get("linked_from")?,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(out)
    }

    /// Creates a group (its VO ID is a UUID); returns `(group_id, created)`.
    pub async fn group_add(&self, vo: &str, name: &str) -> anyhow::Result<(String, bool)> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let r = group_ensure(&mut tx, vo, name).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Deletes a group and its memberships.
    pub async fn group_remove(&self, vo: &str, name: &str) -> anyhow::Result<()> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let gid = group_id(&mut tx, vo, name)
            .await?
            .ok_or_else(|| anyhow!("no group {name} in VO {vo}"))?;
        sqlx::query("DELETE FROM group_members WHERE vo = $1 AND group_id = $2")
            .bind(vo)
            .bind(&gid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM vo_groups WHERE vo = $1 AND group_id = $2")
            .bind(vo)
            .bind(&gid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every group of `vo` with its VO ID.
    pub async fn group_list(&self, vo: &str) -> anyhow::Result<Vec<GroupRow>> {
        let rows = sqlx::query("SELECT group_id, name FROM vo_groups WHERE vo = $1 ORDER BY name")
            .bind(vo)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GroupRow {
                    id: r.try_get("group_id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// Puts the user `vo_id` into (or, with `add = false`, out of) a group.
    pub async fn group_member(
        &self,
        vo: &str,
        name: &str,
        vo_id: &str,
        add: bool,
    ) -> anyhow::Result<()> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let gid = group_id(&mut tx, vo, name)
            .await?
            .ok_or_else(|| anyhow!("no group {name} in VO {vo}"))?;
        if add {
            let known = sqlx::query("SELECT vo_id FROM members WHERE vo = $1 AND vo_id = $2")
                .bind(vo)
                .bind(vo_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !known {
                bail!("VO ID {vo_id} is not a member of VO {vo}");
            }
            sqlx::query(
                "INSERT INTO group_members (vo, group_id, vo_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(vo)
            .bind(&gid)
            .bind(vo_id)
            .execute(&mut *tx)
            .await?;
        } else {
            let r = sqlx::query(
                "DELETE FROM group_members WHERE vo = $1 AND group_id = $2 AND vo_id = $3",
            )
            .bind(vo)
            .bind(&gid)
            .bind(vo_id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                bail!("VO ID {vo_id} is not in group {name} of VO {vo}");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records an issued certificate or attribute set.
    pub async fn audit_insert(&self, row: &AuditRow) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO audit (id, kind, serial, subject, identity, vo, vo_id,
                                not_before, not_after, lifetime, issued_at, remote)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&row.id)
        .bind(&row.kind)
        .bind(&row.serial)
        .bind(&row.subject)
        .bind(&row.identity)
        .bind(&row.vo)
        .bind(&row.vo_id)
        .bind(row.not_before)
        .bind(row.not_after)
        .bind(row.lifetime)
        .bind(row.issued_at)
        .bind(&row.remote)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit log, oldest first.
    pub async fn audit_list(&self) -> anyhow::Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, serial, subject, identity, vo, vo_id, not_before, not_after,
                    lifetime, issued_at, remote
               FROM audit ORDER BY issued_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    serial: r.try_get("serial")?,
                    subject: r.try_get("subject")?,
                    identity: r.try_get("identity")?,
                    vo: r.try_get("vo")?,
                    vo_id: r.try_get("vo_id")?,
                    not_before: r.try_get("not_before")?,
                    not_after: r.try_get("not_after")?,
                    lifetime: r.try_get("lifetime")?,
                    issued_at: r.try_get("issued_at")?,
                    remote: r.try_get("remote")?,
                })
            })
            .collect()
    }

    /// The VO ID of `identity` in `vo` and the identity it was linked
    /// from at login (`None` for an identity added by an admin).
    pub async fn member_origin(
        &self,
        vo: &str,
        identity: &str,
    ) -> anyhow::Result<Option<(String, Option<String>)>> {
        let row =
            sqlx::query("SELECT vo_id, linked_from FROM members WHERE vo = $1 AND identity = $2")
                .bind(vo)
                .bind(identity)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok((r.try_get("vo_id")?, r.try_get("linked_from")?)))
            .transpose()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn group_id(tx: &mut Tx<'_>, vo: &str, name: &str) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query("SELECT group_id FROM vo_groups WHERE vo = $1 AND name = $2")
            .bind(vo)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("group_id"))
            .transpose()?,
    )
}

async fn group_ensure(tx: &mut Tx<'_>, vo: &str, name: &str) -> anyhow::Result<(String, bool)> {
    if let Some(id) = group_id(tx, vo, name).await? {
        return Ok((id, false));
    }
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO vo_groups (vo, name, group_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(vo)
        .bind(name)
        .bind(&id)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok((id, true))
}

/// Links `identity` to `vo_id` in `vo` (from `linked_from`); false when the
/// identity is already a member of the VO. The one statement of
/// [`Store::link`] and of a self-link (`store/links.rs`).
async fn insert_link<'e, E>(
    e: E,
    vo: &str,
    identity: &str,
    vo_id: &str,
    linked_from: &str,
) -> anyhow::Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let r = sqlx::query(
        "INSERT INTO members (vo, identity, vo_id, linked_from, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(vo)
    .bind(identity)
    .bind(vo_id)
    .bind(linked_from)
    .bind(now())
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", d.path().join("t.db").display());
        let s = Store::open(&url).await.unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn members_groups_links() {
        let (_d, s) = store().await;
        let a = s
            .member_add("vo1", "local:alice", None, &["admins".into()])
            .await
            .unwrap();
        assert!(a.new_identity);
        assert_eq!(a.new_groups, vec!["admins".to_string()]);
        // Adding again keeps the VO ID.
        let again = s.member_add("vo1", "local:alice", None, &[]).await.unwrap();
        assert_eq!(again.vo_id, a.vo_id);
        assert!(!again.new_identity);
        // Link a second identity.
        let b = s
            .member_add("vo1", "radius:alice", Some(&a.vo_id), &[])
            .await
            .unwrap();
        assert_eq!(b.vo_id, a.vo_id);
        assert!(s
            .member_add("vo1", "radius:bob", Some("nope"), &[])
            .await
            .is_err());
        let m = s.membership("vo1", "radius:alice").await.unwrap().unwrap();
        assert_eq!(m.vo_id, a.vo_id);
        assert_eq!(m.groups[0].name, "admins");
        assert!(s.membership("vo2", "radius:alice").await.unwrap().is_none());

        // Automatic link, removed with its origin.
        assert!(s
            .link("vo1", "cert:CN=CA|CN=alice", &a.vo_id, "local:alice")
            .await
            .unwrap());
        assert!(!s
            .link("vo1", "cert:CN=CA|CN=alice", &a.vo_id, "local:alice")
            .await
            .unwrap());
        let removed = s.member_remove("vo1", "local:alice").await.unwrap();
        assert_eq!(removed.identities.len(), 2);
        assert!(removed.identities.iter().all(|(_, v)| *v == a.vo_id));
        // radius:alice still holds the VO ID: not a former one yet.
        assert!(removed.former_vo_ids.is_empty());
        assert!(s
            .membership("vo1", "cert:CN=CA|CN=alice")
            .await
            .unwrap()
            .is_none());
        // radius:alice remains, with the group.
        let m = s.membership("vo1", "radius:alice").await.unwrap().unwrap();
        assert_eq!(m.groups.len(), 1);
        let removed = s.member_remove("vo1", "radius:alice").await.unwrap();
        assert_eq!(removed.former_vo_ids, vec![a.vo_id.clone()]);
        assert!(s.member_remove("vo1", "radius:alice").await.is_err());

        // A returning member is linked back to the former VO ID (their
        // files at the metadata manager are keyed by it); groups are not
        // given back unless named again.
        let former = s.former_list("vo1").await.unwrap();
        assert_eq!(former.len(), 1);
        assert_eq!(former[0].vo_id, a.vo_id);
        assert_eq!(former[0].last_identity, "radius:alice");
        assert!(s.former_list("vo2").await.unwrap().is_empty());
        // Not from another VO, and not an invented VO ID.
        s.member_add("vo2", "local:x", None, &[]).await.unwrap();
        let e = s
            .member_add("vo2", "local:alice", Some(&a.vo_id), &[])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("nor a former one"), "{e}");
        assert!(s
            .member_add("vo1", "local:alice", Some("0000"), &[])
            .await
            .is_err());
        let back = s
            .member_add("vo1", "local:alice", Some(&a.vo_id), &[])
            .await
            .unwrap();
        assert_eq!(back.vo_id, a.vo_id);
        assert!(back.restored && back.new_identity);
        assert!(s.former_list("vo1").await.unwrap().is_empty());
        let m = s.membership("vo1", "local:alice").await.unwrap().unwrap();
        assert_eq!(m.vo_id, a.vo_id);
        assert!(m.groups.is_empty());
        // A second identity linked to it is a plain link now.
        let linked = s
            .member_add("vo1", "radius:alice", Some(&a.vo_id), &[])
            .await
            .unwrap();
        assert!(!linked.restored && linked.new_identity);
        s.member_remove("vo1", "radius:alice").await.unwrap();
        s.member_remove("vo1", "local:alice").await.unwrap();

        // Groups.
        let c = s.member_add("vo1", "local:carol", None, &[]).await.unwrap();
        let (gid, created) = s.group_add("vo1", "ops").await.unwrap();
        assert!(created);
        assert_eq!(
            s.group_add("vo1", "ops").await.unwrap(),
            (gid.clone(), false)
        );
        s.group_member("vo1", "ops", &c.vo_id, true).await.unwrap();
        assert!(s.group_member("vo1", "ops", "x", true).await.is_err());
        let m = s.membership("vo1", "local:carol").await.unwrap().unwrap();
        assert_eq!(
            m.groups,
            vec![GroupRow {
                id: gid,
                name: "ops".into()
            }]
        );
        s.group_member("vo1", "ops", &c.vo_id, false).await.unwrap();
        assert!(s.group_member("vo1", "ops", &c.vo_id, false).await.is_err());
        s.group_remove("vo1", "ops").await.unwrap();
        assert!(s.group_remove("vo1", "ops").await.is_err());
        assert_eq!(s.member_list("vo1").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn only_sqlite_and_postgres_urls() {
        let e = Store::open("mysql://u:secret@h/db").await.unwrap_err();
        let msg = format!("{e:#}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[tokio::test]
    async fn audit_roundtrip_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", d.path().join("t.db").display());
        let s = Store::open(&url).await.unwrap();
        let row = AuditRow {
            id: "1".into(),
            kind: "certificate".into(),
            serial: "0a".into(),
            subject: "CN=x".into(),
            identity: "local:x".into(),
            vo: "vo1".into(),
            vo_id: "v".into(),
            not_before: 1,
            not_after: 2,
            lifetime: 1,
            issued_at: 3,
            remote: "127.0.0.1".into(),
        };
        s.audit_insert(&row).await.unwrap();
        s.close().await;
        // Migrations are not applied twice.
        let s = Store::open(&url).await.unwrap();
        let rows = s.audit_list().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].serial, "0a");
    }
}
