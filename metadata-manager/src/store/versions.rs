//! File versions and their exNodes (`versions`): the get query, puts,
//! totals.

use super::*;

impl Store {
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
            create_file(&mut tx, &self.limits, v, bytes, t).await?;
        } else {
            advance_file(&mut tx, &self.limits, v, next, bytes, t).await?;
        }
        insert_version(&mut tx, v, next, t).await?;
        // A version made by maintenance (refresh, trim, augment, repair)
        // keeps its base version's data key (same key id): the base
        // version's wrapped keys carry over, for every recipient the put
        // did not wrap for itself, so people the file is shared with (and
        // the escrow) keep reading it.
        if v.base_version > 0 {
            if let Some(key_id) = v.key_id {
                carry_wrapped_keys(&mut tx, &self.limits, v, next, key_id).await?;
            }
        }
        tx.commit().await?;
        Ok(next)
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
}

/// A put's new file (base version 0): its entry with the directory's
/// default ACL, version 1 as current, charged before anything large is
/// written. A UUID of a deleted file is never reused.
async fn create_file(
    tx: &mut Tx<'_>,
    limits: &Limits,
    v: &NewVersion<'_>,
    bytes: u64,
    t: i64,
) -> Result<(), StoreError> {
    let retired = sqlx::query("SELECT id FROM retired_uuids WHERE id = $1")
        .bind(v.file)
        .fetch_optional(&mut **tx)
        .await?;
    if retired.is_some() {
        return Err(StoreError::Conflict(format!(
            "file UUID {} belonged to a deleted file and cannot be reused; upload again with a new UUID",
            v.file
        )));
    }
    let parent = create_entry(tx, v.file, v.path, Kind::File, v.writer).await?;
    // Charged before anything large is written.
    charge(
        tx,
        limits,
        v.path.vo(),
        &v.writer.to_string(),
        1,
        signed(bytes),
    )
    .await?;
    let inherited = inherited_acl(tx, &parent).await?;
    insert_acl(tx, v.file, 0, &inherited).await?;
    sqlx::query("UPDATE entries SET current_version = 1, size = $2, updated_at = $3 WHERE id = $1")
        .bind(v.file)
        .bind(to_bigint(v.size))
        .bind(t)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A put's new version of an existing file: current only if the file's
/// current version is still the writer's base (else why not, as an error).
async fn advance_file(
    tx: &mut Tx<'_>,
    limits: &Limits,
    v: &NewVersion<'_>,
    next: u64,
    bytes: u64,
    t: i64,
) -> Result<(), StoreError> {
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
    .execute(&mut **tx)
    .await?;
    if res.rows_affected() != 1 {
        let current = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.path = $1"
        ))
        .bind(v.path.as_str())
        .fetch_optional(&mut **tx)
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
    let owner = file_owner(tx, v.file).await?;
    charge(tx, limits, v.path.vo(), &owner, 0, signed(bytes)).await?;
    Ok(())
}

/// The version's row and the keys wrapped with it.
async fn insert_version(
    tx: &mut Tx<'_>,
    v: &NewVersion<'_>,
    next: u64,
    t: i64,
) -> Result<(), StoreError> {
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
    .execute(&mut **tx)
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
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The base version's wrapped keys, for the recipients the put did not
/// wrap for, charged to the file's owner.
async fn carry_wrapped_keys(
    tx: &mut Tx<'_>,
    limits: &Limits,
    v: &NewVersion<'_>,
    next: u64,
    key_id: &str,
) -> Result<(), StoreError> {
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
    .execute(&mut **tx)
    .await?;
    let carried = wrapped_bytes(tx, v.file, Some(next), None).await?
        - v.wrapped_keys
            .iter()
            .map(|(r, w)| signed((r.len() + w.len()) as u64))
            .sum::<i64>();
    let owner = file_owner(tx, v.file).await?;
    charge(tx, limits, v.path.vo(), &owner, 0, carried).await?;
    Ok(())
}
