//! Data keys wrapped for a recipient (`wrapped_keys`).

use super::*;

impl Store {
    /// Stores a wrapped data key for one recipient and one version
    /// (replacing an earlier one).
    pub async fn put_wrapped(
        &self,
        file: &str,
        version: u64,
        recipient: &str,
        wrapped: &str,
    ) -> Result<(), StoreError> {
        let _db = self.timer("put_wrapped");
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
        let _db = self.timer("remove_wrapped");
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
        let _db = self.timer("wrapped");
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
        let _db = self.timer("recipients");
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
}
