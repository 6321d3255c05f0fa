//! Maintenance grants (docs/maintenance.md): table `maintenance_grants`
//! (migration 3 in [`super::MIGRATIONS`]). Part of the store: every SQL
//! statement of the online CA stays under `store`.

use serde::Serialize;
use sqlx::Row;

use super::Store;

/// One maintenance grant (without its token hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantRow {
    pub id: String,
    pub vo: String,
    pub vo_id: String,
    /// The member identity that enrolled.
    pub identity: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Who revoked it: `token`, `member <vo_id>`, `admin <vo_id>`,
    /// `operator`, `member removed`.
    pub revoked_by: Option<String>,
    pub last_used_at: Option<i64>,
}

/// A grant's state at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    Active,
    Revoked,
    Expired,
}

impl GrantRow {
    pub fn state(&self, now: i64) -> GrantState {
        if self.revoked_at.is_some() {
            GrantState::Revoked
        } else if now >= self.expires_at {
            GrantState::Expired
        } else {
            GrantState::Active
        }
    }
}

impl GrantState {
    pub fn name(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Revoked => "revoked",
            GrantState::Expired => "expired",
        }
    }
}

const GRANT_COLUMNS: &str =
    "id, vo, vo_id, identity, created_at, expires_at, revoked_at, revoked_by, last_used_at";

fn grant_of(r: &sqlx::any::AnyRow) -> anyhow::Result<GrantRow> {
    Ok(GrantRow {
        id: r.try_get("id")?,
        vo: r.try_get("vo")?,
        vo_id: r.try_get("vo_id")?,
        identity: r.try_get("identity")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        revoked_by: r.try_get("revoked_by")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

impl Store {
    /// Records a new maintenance grant with the hash of its token, unless
    /// the member already holds `max_active` grants that are neither
    /// revoked nor expired (then `Ok(false)`).
    pub async fn grant_insert(
        &self,
        g: &GrantRow,
        token_hash: &str,
        max_active: i64,
    ) -> anyhow::Result<bool> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let active: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM maintenance_grants
              WHERE vo = $1 AND vo_id = $2 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(&g.vo)
        .bind(&g.vo_id)
        .bind(g.created_at)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if active >= max_active {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO maintenance_grants (id, vo, vo_id, identity, token_hash, created_at,
                                             expires_at, revoked_at, revoked_by, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL)",
        )
        .bind(&g.id)
        .bind(&g.vo)
        .bind(&g.vo_id)
        .bind(&g.identity)
        .bind(token_hash)
        .bind(g.created_at)
        .bind(g.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A grant and its token hash, by id.
    pub async fn grant_get(&self, id: &str) -> anyhow::Result<Option<(GrantRow, String)>> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS}, token_hash FROM maintenance_grants WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((grant_of(&r)?, r.try_get("token_hash")?)))
            .transpose()
    }

    /// The grants of a VO, or of one member of it, newest first.
    pub async fn grant_list(&self, vo: &str, vo_id: Option<&str>) -> anyhow::Result<Vec<GrantRow>> {
        let rows = match vo_id {
            Some(v) => {
                sqlx::query(&format!(
                    "SELECT {GRANT_COLUMNS} FROM maintenance_grants
                      WHERE vo = $1 AND vo_id = $2 ORDER BY created_at DESC, id"
                ))
                .bind(vo)
                .bind(v)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {GRANT_COLUMNS} FROM maintenance_grants
                      WHERE vo = $1 ORDER BY created_at DESC, id"
                ))
                .bind(vo)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(grant_of).collect()
    }

    /// Revokes one grant not revoked yet; returns whether it did.
    pub async fn grant_revoke(&self, id: &str, by: &str, at: i64) -> anyhow::Result<bool> {
        let r = sqlx::query(
            "UPDATE maintenance_grants SET revoked_at = $2, revoked_by = $3
              WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(at)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Revokes every grant of a member not revoked yet; returns how many.
    pub async fn grant_revoke_member(
        &self,
        vo: &str,
        vo_id: &str,
        by: &str,
        at: i64,
    ) -> anyhow::Result<u64> {
        let r = sqlx::query(
            "UPDATE maintenance_grants SET revoked_at = $3, revoked_by = $4
              WHERE vo = $1 AND vo_id = $2 AND revoked_at IS NULL",
        )
        .bind(vo)
        .bind(vo_id)
        .bind(at)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Notes that a grant was exchanged for a proxy.
    pub async fn grant_used(&self, id: &str, at: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE maintenance_grants SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now;

    fn grant(id: &str, vo_id: &str, identity: &str, now: i64, expires_at: i64) -> GrantRow {
        GrantRow {
            id: id.into(),
            vo: "vo1".into(),
            vo_id: vo_id.into(),
            identity: identity.into(),
            created_at: now,
            expires_at,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
        }
    }

    #[tokio::test]
    async fn maintenance_grants_keep_a_hash_expire_and_revoke() {
        use crate::maintenance::{new_token, token_matches};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.db");
        let s = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let alice = s.member_add("vo1", "local:alice", None, &[]).await.unwrap();
        let now = now();
        let (token, hash) = new_token().unwrap();
        let g = grant("g1", &alice.vo_id, "local:alice", now, now + 100);
        assert!(s.grant_insert(&g, &hash, 2).await.unwrap());
        // Only the hash is stored: the token is nowhere in the database.
        s.close().await;
        let bytes = std::fs::read(&path).unwrap();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(hash.as_bytes()));
        assert!(!has(token.as_bytes()));
        let s = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let (got, stored) = s.grant_get("g1").await.unwrap().unwrap();
        assert_eq!(got, g);
        assert!(token_matches(&token, &stored));
        assert!(!token_matches(&new_token().unwrap().0, &stored));
        assert!(s.grant_get("g2").await.unwrap().is_none());

        // States by time.
        assert_eq!(got.state(now), GrantState::Active);
        assert_eq!(got.state(now + 100), GrantState::Expired);

        // At most `max_active` grants that are neither revoked nor expired.
        let (_, h2) = new_token().unwrap();
        assert!(s
            .grant_insert(
                &grant("g2", &alice.vo_id, "local:alice", now, now + 100),
                &h2,
                2
            )
            .await
            .unwrap());
        assert!(!s
            .grant_insert(
                &grant("g3", &alice.vo_id, "local:alice", now, now + 100),
                &h2,
                2
            )
            .await
            .unwrap());

        // Revocation: once, with who did it.
        assert!(s.grant_revoke("g1", "token", now + 1).await.unwrap());
        assert!(!s.grant_revoke("g1", "operator", now + 2).await.unwrap());
        let (g1, _) = s.grant_get("g1").await.unwrap().unwrap();
        assert_eq!(g1.state(now + 1), GrantState::Revoked);
        assert_eq!(g1.revoked_by.as_deref(), Some("token"));
        assert_eq!(g1.revoked_at, Some(now + 1));
        // A revoked grant frees its place.
        assert!(s
            .grant_insert(
                &grant("g3", &alice.vo_id, "local:alice", now, now + 100),
                &h2,
                2
            )
            .await
            .unwrap());
        s.grant_used("g3", now + 5).await.unwrap();
        assert_eq!(
            s.grant_get("g3").await.unwrap().unwrap().0.last_used_at,
            Some(now + 5)
        );

        // Removing the member revokes what it enrolled; another member's
        // grants are untouched.
        let bob = s.member_add("vo1", "local:bob", None, &[]).await.unwrap();
        let (_, hb) = new_token().unwrap();
        assert!(s
            .grant_insert(
                &grant("gb", &bob.vo_id, "local:bob", now, now + 100),
                &hb,
                2
            )
            .await
            .unwrap());
        s.member_remove("vo1", "local:alice").await.unwrap();
        for id in ["g2", "g3"] {
            let (g, _) = s.grant_get(id).await.unwrap().unwrap();
            assert_eq!(g.revoked_by.as_deref(), Some("member removed"), "{id}");
        }
        let (gb, _) = s.grant_get("gb").await.unwrap().unwrap();
        assert_eq!(gb.state(now), GrantState::Active);
        assert_eq!(
            s.grant_list("vo1", Some(&bob.vo_id)).await.unwrap().len(),
            1
        );
        assert_eq!(s.grant_list("vo1", None).await.unwrap().len(), 4);
        assert_eq!(
            s.grant_revoke_member("vo1", &bob.vo_id, "operator", now)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            s.member_origin("vo1", "local:bob").await.unwrap(),
            Some((bob.vo_id.clone(), None))
        );
    }
}
