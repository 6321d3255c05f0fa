//! Members, their groups and key-wrapping public keys, and a VO's escrow
//! key (`members`, `vo_groups`, `escrow_keys`).

use super::*;

impl Store {
    /// The member record, if the user is known.
    pub async fn member(&self, vo: &str, vo_id: &str) -> Result<Option<Member>, StoreError> {
        let _db = self.timer("member");
        let row = sqlx::query(
            "SELECT vo, vo_id, subject, public_key, first_seen, removed_at, removed_by,
                    display_name
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
        let _db = self.timer("add_member");
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
        let _db = self.timer("set_removed");
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
        let _db = self.timer("members");
        let rows = sqlx::query(
            "SELECT vo, vo_id, subject, public_key, first_seen, removed_at, removed_by,
                    display_name
               FROM members WHERE vo = $1 ORDER BY vo_id",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(member_of).collect()
    }

    /// Sets (or with `None` clears) a member's display name.
    pub async fn set_display_name(
        &self,
        vo: &str,
        vo_id: &str,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        let _db = self.timer("set_display_name");
        sqlx::query("UPDATE members SET display_name = $3 WHERE vo = $1 AND vo_id = $2")
            .bind(vo)
            .bind(vo_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_public_key(&self, vo: &str, vo_id: &str, key: &str) -> Result<(), StoreError> {
        let _db = self.timer("set_public_key");
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
        let _db = self.timer("note_group");
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
        let _db = self.timer("group_id");
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
        let _db = self.timer("set_escrow_key");
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
        let _db = self.timer("escrow_key");
        let row = sqlx::query("SELECT public_key FROM escrow_keys WHERE vo = $1")
            .bind(vo)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("public_key")).transpose()?)
    }
}
