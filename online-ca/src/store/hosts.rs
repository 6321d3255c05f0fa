//! The host allow-list and the host certificates issued from it
//! (docs/online-ca.md, "Host certificates"): tables `hosts` and
//! `host_certs` (migration 5 in [`super::MIGRATIONS`]). Part of the store:
//! every SQL statement of the online CA stays under `store`.
//!
//! - `hosts (name, role, names, enrollment, token_hash, token_expires_at,
//!   token_used_at, created_at, updated_at, revoked_at)`: one row per host
//!   the operator allowed. `names` are the subject alternative names the
//!   host may have, space-separated `dns:<name>` / `ip:<address>`.
//!   `enrollment` is a UUID drawn at every `hosts allow`: certificates
//!   issued under an older enrollment cannot renew. `token_hash` is the
//!   hex SHA-256 of the one-time enrollment token, never the token.
//! - `host_certs (serial, name, enrollment, issued_at, not_after,
//!   revoked_at)`: every host certificate issued; a renewal must present
//!   one of these, of the host's current enrollment. `revoked_at` is set
//!   on every unexpired certificate of a host when it is revoked
//!   (migration 6): those are the CA's revocation list. Allowing the host
//!   again does not clear it.

use serde::Serialize;
use sqlx::Row;

use super::Store;

/// Which service a host runs (recorded, and shown by `hosts list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Depot,
    Lbone,
    Mdm,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Depot => "depot",
            Role::Lbone => "lbone",
            Role::Mdm => "mdm",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "depot" => Some(Role::Depot),
            "lbone" => Some(Role::Lbone),
            "mdm" | "metadata-manager" => Some(Role::Mdm),
            _ => None,
        }
    }
}

/// One host of the allow-list (without its token hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub name: String,
    pub role: Role,
    /// `dns:<name>` and `ip:<address>`, the host name first.
    pub names: Vec<String>,
    pub enrollment: String,
    pub token_expires_at: i64,
    pub token_used_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
    /// Expiry of the newest certificate issued under this enrollment.
    pub cert_not_after: Option<i64>,
}

/// A host's state at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Allowed, token not used yet and still valid.
    Waiting,
    /// Allowed, token expired unused: `hosts allow` again.
    TokenExpired,
    /// Enrolled: holds a certificate it renews.
    Enrolled,
    Revoked,
}

impl HostState {
    pub fn name(self) -> &'static str {
        match self {
            HostState::Waiting => "waiting for enrollment",
            HostState::TokenExpired => "token expired",
            HostState::Enrolled => "enrolled",
            HostState::Revoked => "revoked",
        }
    }
}

impl HostRow {
    pub fn state(&self, now: i64) -> HostState {
        if self.revoked_at.is_some() {
            HostState::Revoked
        } else if self.token_used_at.is_some() {
            HostState::Enrolled
        } else if now >= self.token_expires_at {
            HostState::TokenExpired
        } else {
            HostState::Waiting
        }
    }
}

/// A certificate the CA issued to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertRow {
    pub serial: String,
    pub name: String,
    pub enrollment: String,
    pub issued_at: i64,
    pub not_after: i64,
}

const HOST_COLUMNS: &str = "h.name AS name, h.role AS role, h.names AS names, \
     h.enrollment AS enrollment, h.token_hash AS token_hash, \
     h.token_expires_at AS token_expires_at, h.token_used_at AS token_used_at, \
     h.created_at AS created_at, h.updated_at AS updated_at, h.revoked_at AS revoked_at, \
     (SELECT MAX(c.not_after) FROM host_certs c \
       WHERE c.name = h.name AND c.enrollment = h.enrollment) AS cert_not_after";

fn host_of(r: &sqlx::any::AnyRow) -> anyhow::Result<(HostRow, String)> {
    let role: String = r.try_get("role")?;
    let names: String = r.try_get("names")?;
    Ok((
        HostRow {
            name: r.try_get("name")?,
            role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?,
            names: names.split_whitespace().map(str::to_owned).collect(),
            enrollment: r.try_get("enrollment")?,
            token_expires_at: r.try_get("token_expires_at")?,
            token_used_at: r.try_get("token_used_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            revoked_at: r.try_get("revoked_at")?,
            cert_not_after: r.try_get("cert_not_after")?,
        },
        r.try_get("token_hash")?,
    ))
}

impl Store {
    /// Puts `name` on the allow-list (or renews its entry): role, names,
    /// a new enrollment and token; a revoked host is allowed again.
    /// Certificates of an earlier enrollment can no longer renew.
    pub async fn host_allow(
        &self,
        name: &str,
        role: Role,
        names: &[String],
        token_hash: &str,
        token_expires_at: i64,
    ) -> anyhow::Result<HostRow> {
        let now = super::now();
        let enrollment = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO hosts (name, role, names, enrollment, token_hash, token_expires_at,
                                token_used_at, created_at, updated_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $7, NULL)
             ON CONFLICT (name) DO UPDATE SET role = $2, names = $3, enrollment = $4,
                token_hash = $5, token_expires_at = $6, token_used_at = NULL,
                updated_at = $7, revoked_at = NULL",
        )
        .bind(name)
        .bind(role.name())
        .bind(names.join(" "))
        .bind(&enrollment)
        .bind(token_hash)
        .bind(token_expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.host_get(name)
            .await?
            .map(|(h, _)| h)
            .ok_or_else(|| anyhow::anyhow!("host {name} vanished"))
    }

    /// The host `name` and its token hash.
    pub async fn host_get(&self, name: &str) -> anyhow::Result<Option<(HostRow, String)>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts h WHERE h.name = $1");
        sqlx::query(&q)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(host_of)
            .transpose()
    }

    /// Every host, by name.
    pub async fn host_list(&self) -> anyhow::Result<Vec<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts h ORDER BY h.name");
        sqlx::query(&q)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| host_of(r).map(|(h, _)| h))
            .collect()
    }

    /// Revokes `name`: no enrollment and no renewal until `hosts allow`
    /// again. Returns false for a host not on the list.
    /// Its unexpired certificates are revoked with it (the revocation
    /// list then names them).
    pub async fn host_revoke(&self, name: &str) -> anyhow::Result<bool> {
        let now = super::now();
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let r = sqlx::query(
            "UPDATE hosts SET revoked_at = $2, updated_at = $2
              WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE host_certs SET revoked_at = $2
              WHERE name = $1 AND revoked_at IS NULL AND not_after > $2",
        )
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if r.rows_affected() > 0 {
            return Ok(true);
        }
        Ok(self.host_get(name).await?.is_some())
    }

    /// The revoked host certificates that have not expired at `now`:
    /// (serial as big-endian bytes, revocation time), oldest revocation
    /// first.
    pub async fn revoked_host_certs(&self, now: i64) -> anyhow::Result<Vec<(Vec<u8>, i64)>> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at FROM host_certs
              WHERE revoked_at IS NOT NULL AND not_after > $1
              ORDER BY revoked_at, serial",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let serial: String = r.try_get("serial")?;
                let at: i64 = r.try_get("revoked_at")?;
                let bytes = (0..serial.len())
                    .step_by(2)
                    .map(|i| {
                        serial
                            .get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("host_certs: serial {serial:?} is not hex"))?;
                Ok((bytes, at))
            })
            .collect()
    }

    /// Records a certificate issued at enrollment and spends the token, in
    /// one transaction; false (nothing recorded) when the token was spent
    /// meanwhile, the host revoked or allowed again.
    pub async fn host_enrolled(&self, cert: &HostCertRow) -> anyhow::Result<bool> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let r = sqlx::query(
            "UPDATE hosts SET token_used_at = $3, updated_at = $3
              WHERE name = $1 AND enrollment = $2 AND token_used_at IS NULL
                AND revoked_at IS NULL",
        )
        .bind(&cert.name)
        .bind(&cert.enrollment)
        .bind(cert.issued_at)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        insert_cert(&mut tx, cert).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a certificate issued at renewal; false when the host was
    /// revoked or allowed again meanwhile.
    pub async fn host_renewed(&self, cert: &HostCertRow) -> anyhow::Result<bool> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let still = sqlx::query(
            "SELECT name FROM hosts WHERE name = $1 AND enrollment = $2 AND revoked_at IS NULL",
        )
        .bind(&cert.name)
        .bind(&cert.enrollment)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !still {
            return Ok(false);
        }
        insert_cert(&mut tx, cert).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The host certificate of serial `serial` (hex), if the CA issued one.
    pub async fn host_cert(&self, serial: &str) -> anyhow::Result<Option<HostCertRow>> {
        let row = sqlx::query(
            "SELECT serial, name, enrollment, issued_at, not_after FROM host_certs
              WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(HostCertRow {
                serial: r.try_get("serial")?,
                name: r.try_get("name")?,
                enrollment: r.try_get("enrollment")?,
                issued_at: r.try_get("issued_at")?,
                not_after: r.try_get("not_after")?,
            })
        })
        .transpose()
    }
}

async fn insert_cert(tx: &mut super::Tx<'_>, cert: &HostCertRow) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO host_certs (serial, name, enrollment, issued_at, not_after)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&cert.serial)
    .bind(&cert.name)
    .bind(&cert.enrollment)
    .bind(cert.issued_at)
    .bind(cert.not_after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hosts_enroll_once_renew_within_their_enrollment_and_revoke() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", d.path().join("t.db").display());
        let s = Store::open(&url).await.unwrap();
        let names = vec!["dns:d1.example.org".to_owned(), "ip:10.0.0.1".to_owned()];
        let h = s
            .host_allow("d1.example.org", Role::Depot, &names, "hash1", 100)
            .await
            .unwrap();
        assert_eq!(h.names, names);
        assert_eq!(h.state(50), HostState::Waiting);
        assert_eq!(h.state(100), HostState::TokenExpired);
        let cert = |serial: &str, enrollment: &str| HostCertRow {
            serial: serial.into(),
            name: "d1.example.org".into(),
            enrollment: enrollment.into(),
            issued_at: 10,
            not_after: 1000,
        };
        assert!(s.host_enrolled(&cert("01", &h.enrollment)).await.unwrap());
        // The token is spent: a second enrollment records nothing.
        assert!(!s.host_enrolled(&cert("02", &h.enrollment)).await.unwrap());
        assert!(s.host_cert("02").await.unwrap().is_none());
        assert!(s.host_renewed(&cert("03", &h.enrollment)).await.unwrap());
        let (got, hash) = s.host_get("d1.example.org").await.unwrap().unwrap();
        assert_eq!(got.state(50), HostState::Enrolled);
        assert_eq!(got.cert_not_after, Some(1000));
        assert_eq!(hash, "hash1");
        // Allowed again: a new enrollment; the old certificates do not renew.
        let again = s
            .host_allow("d1.example.org", Role::Depot, &names, "hash2", 200)
            .await
            .unwrap();
        assert_ne!(again.enrollment, h.enrollment);
        assert!(!s.host_renewed(&cert("04", &h.enrollment)).await.unwrap());
        assert_eq!(again.cert_not_after, None);
        // A certificate still valid when its host is revoked is listed as
        // revoked; expired ones are not (the list would only grow).
        let live = HostCertRow {
            serial: "0a0b".into(),
            not_after: super::super::now() + 3600,
            ..cert("", &again.enrollment)
        };
        assert!(s.host_renewed(&live).await.unwrap());
        assert!(s.revoked_host_certs(0).await.unwrap().is_empty());
        assert!(s.host_revoke("d1.example.org").await.unwrap());
        let revoked = s.revoked_host_certs(super::super::now()).await.unwrap();
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert_eq!(revoked[0].0, [0x0a, 0x0b]);
        assert!(s
            .revoked_host_certs(live.not_after)
            .await
            .unwrap()
            .is_empty());
        assert!(!s.host_revoke("nobody.example.org").await.unwrap());
        assert!(!s
            .host_enrolled(&cert("05", &again.enrollment))
            .await
            .unwrap());
        assert_eq!(s.host_list().await.unwrap()[0].state(0), HostState::Revoked);
    }
}
