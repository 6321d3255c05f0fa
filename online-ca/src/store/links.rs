//! Certificates members link to their VO ID themselves
//! (docs/identity.md, "Linking a certificate yourself"): tables
//! `link_challenges` and `link_requests` (migration 7 in
//! [`super::MIGRATIONS`]).
//!
//! - `link_challenges (nonce, vo, vo_id, identity, requested_by,
//!   cert_sha256, expires_at)`: a challenge handed out by
//!   `/v1/link/challenge`, deleted when `/v1/link` takes it (whatever the
//!   outcome), so a challenge is answered at most once. Expired ones are
//!   swept when new ones are made.
//! - `link_requests (id, vo, vo_id, identity, linked_from, requested_by,
//!   subject, serial, not_after, requested_at, state, decided_at,
//!   decided_by)`: a proven link waiting for a VO admin in a VO with
//!   `link_approval` (`state` `pending`, then `approved` or `denied`).

use serde::Serialize;
use sqlx::Row;

use super::{now, Store};

/// A challenge as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    pub nonce: String,
    pub vo: String,
    pub vo_id: String,
    /// The identity of the certificate to link (`cert:<issuer>|<subject>`).
    pub identity: String,
    /// The member identity (of the client certificate) that asked.
    pub requested_by: String,
    /// Hex SHA-256 of the certificate's DER.
    pub cert_sha256: String,
    pub expires_at: i64,
}

/// A link request of a VO with `link_approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkRequestRow {
    pub id: String,
    pub vo: String,
    pub vo_id: String,
    /// The certificate's identity, linked when approved.
    pub identity: String,
    /// The member's origin identity (their login), which the link
    /// belongs to: removing it removes the link.
    pub linked_from: String,
    /// The client certificate's identity that proved possession.
    pub requested_by: String,
    pub subject: String,
    pub serial: String,
    pub not_after: i64,
    pub requested_at: i64,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

/// What linking found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked,
    /// The certificate is already an identity of this VO ID.
    AlreadyYours,
    /// The certificate is an identity of another VO ID of the VO.
    OtherMember(String),
    /// The identity the link would belong to is no longer a member with
    /// that VO ID (removed meanwhile).
    MemberGone,
}

const REQUEST_COLUMNS: &str = "id, vo, vo_id, identity, linked_from, requested_by, subject, \
     serial, not_after, requested_at, state, decided_at, decided_by";

fn request_of(r: &sqlx::any::AnyRow) -> anyhow::Result<LinkRequestRow> {
    Ok(LinkRequestRow {
        id: r.try_get("id")?,
        vo: r.try_get("vo")?,
        vo_id: r.try_get("vo_id")?,
        identity: r.try_get("identity")?,
        linked_from: r.try_get("linked_from")?,
        requested_by: r.try_get("requested_by")?,
        subject: r.try_get("subject")?,
        serial: r.try_get("serial")?,
        not_after: r.try_get("not_after")?,
        requested_at: r.try_get("requested_at")?,
        state: r.try_get("state")?,
        decided_at: r.try_get("decided_at")?,
        decided_by: r.try_get("decided_by")?,
    })
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Links `identity` to `vo_id` for the origin `linked_from` inside `tx`.
async fn link_in(
    tx: &mut Tx,
    vo: &str,
    identity: &str,
    vo_id: &str,
    linked_from: &str,
) -> anyhow::Result<LinkOutcome> {
    let existing: Option<String> =
        sqlx::query("SELECT vo_id FROM members WHERE vo = $1 AND identity = $2")
            .bind(vo)
            .bind(identity)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("vo_id"))
            .transpose()?;
    match existing {
        Some(v) if v == vo_id => return Ok(LinkOutcome::AlreadyYours),
        Some(v) => return Ok(LinkOutcome::OtherMember(v)),
        None => {}
    }
    let origin: Option<String> =
        sqlx::query("SELECT vo_id FROM members WHERE vo = $1 AND identity = $2")
            .bind(vo)
            .bind(linked_from)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("vo_id"))
            .transpose()?;
    if origin.as_deref() != Some(vo_id) {
        return Ok(LinkOutcome::MemberGone);
    }
    if !super::insert_link(&mut **tx, vo, identity, vo_id, linked_from).await? {
        anyhow::bail!("{identity} was linked meanwhile");
    }
    Ok(LinkOutcome::Linked)
}

impl Store {
    /// Stores a challenge (and sweeps the expired ones).
    pub async fn link_challenge_put(&self, c: &ChallengeRow) -> anyhow::Result<()> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        sqlx::query("DELETE FROM link_challenges WHERE expires_at < $1")
            .bind(now())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO link_challenges
                (nonce, vo, vo_id, identity, requested_by, cert_sha256, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.nonce)
        .bind(&c.vo)
        .bind(&c.vo_id)
        .bind(&c.identity)
        .bind(&c.requested_by)
        .bind(&c.cert_sha256)
        .bind(c.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes (deletes and returns) the challenge `nonce`: a second take
    /// finds nothing, also when two run at once.
    pub async fn link_challenge_take(&self, nonce: &str) -> anyhow::Result<Option<ChallengeRow>> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let row = sqlx::query(
            "SELECT nonce, vo, vo_id, identity, requested_by, cert_sha256, expires_at
               FROM link_challenges WHERE nonce = $1",
        )
        .bind(nonce)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let c = ChallengeRow {
            nonce: r.try_get("nonce")?,
            vo: r.try_get("vo")?,
            vo_id: r.try_get("vo_id")?,
            identity: r.try_get("identity")?,
            requested_by: r.try_get("requested_by")?,
            cert_sha256: r.try_get("cert_sha256")?,
            expires_at: r.try_get("expires_at")?,
        };
        let deleted = sqlx::query("DELETE FROM link_challenges WHERE nonce = $1")
            .bind(nonce)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((deleted.rows_affected() == 1).then_some(c))
    }

    /// Links a certificate a member proved to hold to their VO ID, owned
    /// by `linked_from` (their origin identity: removing it removes the
    /// link).
    pub async fn link_self(
        &self,
        vo: &str,
        identity: &str,
        vo_id: &str,
        linked_from: &str,
    ) -> anyhow::Result<LinkOutcome> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let out = link_in(&mut tx, vo, identity, vo_id, linked_from).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Records a pending link request; `Err` names a pending request for
    /// the same certificate in the VO.
    pub async fn link_request_add(&self, r: &LinkRequestRow) -> anyhow::Result<Result<(), String>> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let pending = sqlx::query(
            "SELECT id FROM link_requests WHERE vo = $1 AND identity = $2 AND state = 'pending'",
        )
        .bind(&r.vo)
        .bind(&r.identity)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(p) = pending {
            return Ok(Err(p.try_get("id")?));
        }
        sqlx::query(&format!(
            "INSERT INTO link_requests ({REQUEST_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&r.id)
        .bind(&r.vo)
        .bind(&r.vo_id)
        .bind(&r.identity)
        .bind(&r.linked_from)
        .bind(&r.requested_by)
        .bind(&r.subject)
        .bind(&r.serial)
        .bind(r.not_after)
        .bind(r.requested_at)
        .bind(&r.state)
        .bind(r.decided_at)
        .bind(&r.decided_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The link requests of `vo`, oldest first; only pending ones unless
    /// `all`.
    pub async fn link_requests(&self, vo: &str, all: bool) -> anyhow::Result<Vec<LinkRequestRow>> {
        let filter = if all { "" } else { " AND state = 'pending'" };
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM link_requests WHERE vo = $1{filter}
              ORDER BY requested_at, id"
        ))
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(request_of).collect()
    }

    /// Approves (linking the certificate) or denies the pending request
    /// `id` of `vo`. Approval links only while the member still holds the
    /// VO ID and the certificate is no other member's; otherwise the
    /// request stays pending and the outcome says why.
    pub async fn link_request_decide(
        &self,
        vo: &str,
        id: &str,
        approve: bool,
        by: &str,
    ) -> anyhow::Result<(LinkRequestRow, LinkOutcome)> {
        let mut tx = ibp_service::db::begin_write(&self.pool, self.backend).await?;
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM link_requests WHERE vo = $1 AND id = $2"
        ))
        .bind(vo)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            anyhow::bail!("no link request {id} in VO {vo}");
        };
        let mut req = request_of(&row)?;
        if req.state != "pending" {
            anyhow::bail!("link request {id} was {} already", req.state);
        }
        let outcome = if approve {
            link_in(&mut tx, vo, &req.identity, &req.vo_id, &req.linked_from).await?
        } else {
            LinkOutcome::Linked
        };
        let done = match &outcome {
            LinkOutcome::Linked | LinkOutcome::AlreadyYours => true,
            LinkOutcome::OtherMember(_) | LinkOutcome::MemberGone => false,
        };
        if done {
            let state = if approve { "approved" } else { "denied" };
            let t = now();
            sqlx::query(
                "UPDATE link_requests SET state = $1, decided_at = $2, decided_by = $3
                  WHERE vo = $4 AND id = $5",
            )
            .bind(state)
            .bind(t)
            .bind(by)
            .bind(vo)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            req.state = state.into();
            req.decided_at = Some(t);
            req.decided_by = Some(by.into());
        }
        tx.commit().await?;
        Ok((req, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn challenges_are_taken_once_and_links_checked() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&format!("sqlite://{}", d.path().join("t.db").display()))
            .await
            .unwrap();
        let a = s.member_add("vo1", "local:a", None, &[]).await.unwrap();
        let b = s.member_add("vo1", "local:b", None, &[]).await.unwrap();
        let c = ChallengeRow {
            nonce: "n1".into(),
            vo: "vo1".into(),
            vo_id: a.vo_id.clone(),
            identity: "cert:X|Y".into(),
            requested_by: "local:a".into(),
            cert_sha256: "00".into(),
            expires_at: now() + 60,
        };
        s.link_challenge_put(&c).await.unwrap();
        assert_eq!(s.link_challenge_take("n1").await.unwrap(), Some(c));
        assert_eq!(s.link_challenge_take("n1").await.unwrap(), None);

        assert_eq!(
            s.link_self("vo1", "cert:X|Y", &a.vo_id, "local:a")
                .await
                .unwrap(),
            LinkOutcome::Linked
        );
        assert_eq!(
            s.link_self("vo1", "cert:X|Y", &a.vo_id, "local:a")
                .await
                .unwrap(),
            LinkOutcome::AlreadyYours
        );
        assert_eq!(
            s.link_self("vo1", "cert:X|Y", &b.vo_id, "local:b")
                .await
                .unwrap(),
            LinkOutcome::OtherMember(a.vo_id.clone())
        );
        assert_eq!(
            s.link_self("vo1", "cert:Z|W", &a.vo_id, "local:b")
                .await
                .unwrap(),
            LinkOutcome::MemberGone
        );
        // The link belongs to the origin: removed with it.
        let removed = s.member_remove("vo1", "local:a").await.unwrap();
        assert_eq!(removed.identities.len(), 2);
    }
}
