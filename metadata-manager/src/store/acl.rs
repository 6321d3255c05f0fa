//! ACLs (`acl`): access entries and directories' default entries.

use super::*;

impl Store {
    /// The ACL of an entry: access entries, or the default ones.
    pub async fn acl(&self, entry: &str, default: bool) -> Result<Vec<Entry>, StoreError> {
        let _db = self.timer("acl");
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
        let _db = self.timer("set_acl");
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
}

pub(super) async fn insert_acl(
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
pub(super) async fn inherited_acl(tx: &mut Tx<'_>, dir_id: &str) -> Result<Vec<Entry>, StoreError> {
    let rows = sqlx::query("SELECT principal, rights FROM acl WHERE entry = $1 AND inherit = 1")
        .bind(dir_id)
        .fetch_all(&mut **tx)
        .await?;
    acl_of(&rows)
}
