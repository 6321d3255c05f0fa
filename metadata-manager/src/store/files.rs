//! Entries: directories and files by path (`entries`, `retired_uuids`):
//! lookup, VO roots, mkdir, listings, moves and deletes.

use super::*;

impl Store {
    pub async fn entry(&self, path: &str) -> Result<Option<EntryRow>, StoreError> {
        let _db = self.timer("entry");
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.path = $1"
        ))
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(entry_of).transpose()
    }

    /// Creates a VO's root directory if it does not exist yet: listable
    /// and writable (create entries) by every member of the VO.
    pub async fn ensure_root(&self, vo: &str) -> Result<(), StoreError> {
        let _db = self.timer("ensure_root");
        let root = format!("/{vo}");
        if self.entry(&root).await?.is_some() {
            return Ok(());
        }
        let (mut tx, _g) = self.write().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let t = now();
        let res = sqlx::query(
            "INSERT INTO entries (id, vo, path, parent, kind, owner, current_version, size,
                                  created_at, updated_at)
             VALUES ($1, $2, $3, '', 'dir', '', 0, 0, $4, $4)",
        )
        .bind(&id)
        .bind(vo)
        .bind(&root)
        .bind(t)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            // Another replica created it meanwhile.
            Err(e) if is_unique_violation(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let everyone = [Entry {
            principal: Principal::Vo(vo.to_owned()),
            rights: Rights::READ.union(Rights::WRITE),
        }];
        insert_acl(&mut tx, &id, 0, &everyone).await?;
        tx.commit().await?;
        tracing::info!(vo, "created the VO's root directory");
        Ok(())
    }

    /// Creates a directory owned by `owner`; its ACL and default ACL are
    /// the parent's default ACL.
    pub async fn mkdir(&self, path: &NsPath, owner: &Principal) -> Result<EntryRow, StoreError> {
        let _db = self.timer("mkdir");
        let (mut tx, _g) = self.write().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let parent = create_entry(&mut tx, &id, path, Kind::Dir, owner, None).await?;
        charge(&mut tx, &self.limits, path.vo(), &owner.to_string(), 1, 0).await?;
        let inherited = inherited_acl(&mut tx, &parent).await?;
        insert_acl(&mut tx, &id, 0, &inherited).await?;
        insert_acl(&mut tx, &id, 1, &inherited).await?;
        tx.commit().await?;
        self.entry(path.as_str())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("{path} vanished")))
    }

    /// Children of a directory, in name order, after `after` (a name), at
    /// most `limit`.
    pub async fn list(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EntryRow>, StoreError> {
        let _db = self.timer("list");
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.parent = $1 AND e.path > $2
              ORDER BY e.path LIMIT $3"
        ))
        .bind(dir)
        .bind(after.map(|a| format!("{dir}/{a}")).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_of).collect()
    }

    /// Moves an entry (and, for a directory, everything under it) to a new
    /// path in the same VO; the destination must not exist and its parent
    /// must be a directory.
    pub async fn move_entry(&self, from: &NsPath, to: &NsPath) -> Result<(), StoreError> {
        let _db = self.timer("move_entry");
        let (mut tx, _g) = self.write().await?;
        let parent = to
            .parent()
            .ok_or_else(|| StoreError::Refused("a VO root cannot be the destination".into()))?;
        let pdir = sqlx::query("SELECT kind FROM entries WHERE path = $1")
            .bind(parent.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        match pdir {
            None => return Err(StoreError::NotFound(format!("no directory {parent}"))),
            Some(r) if r.try_get::<String, _>("kind")? != "dir" => {
                return Err(StoreError::Refused(format!("{parent} is not a directory")))
            }
            Some(_) => {}
        }
        let t = now();
        let res = sqlx::query(
            "UPDATE entries SET path = $2, parent = $3, updated_at = $4 WHERE path = $1",
        )
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(parent.as_str())
        .bind(t)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => {
                return Err(StoreError::NotFound(format!("no entry {from}")))
            }
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("{to} exists")))
            }
            Err(e) => return Err(e.into()),
        }
        // Descendants: replace the prefix of path and parent.
        let prefix = format!("{}/", from.as_str());
        // substr() counts characters (SQLite and PostgreSQL), not bytes.
        let n = i64::try_from(from.as_str().chars().count()).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE entries SET path = $2 || substr(path, CAST($3 AS INTEGER) + 1),
                                parent = $2 || substr(parent, CAST($3 AS INTEGER) + 1)
              WHERE substr(path, 1, CAST($3 AS INTEGER) + 1) = $1",
        )
        .bind(&prefix)
        .bind(to.as_str())
        .bind(n)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a file (every version) or an empty directory, or one old
    /// version of a file. Returns the deleted versions, each with the
    /// MANAGE capabilities of the allocations that no remaining version
    /// names (each once over all), which the caller must release on the
    /// depots.
    pub async fn delete(
        &self,
        entry: &EntryRow,
        version: Option<u64>,
    ) -> Result<Vec<Dropped>, StoreError> {
        let _db = self.timer("delete");
        let (mut tx, _g) = self.write().await?;
        let out = match version {
            Some(v) => vec![delete_version(&mut tx, &self.limits, entry, v).await?],
            None => delete_entry(&mut tx, &self.limits, entry).await?,
        };
        tx.commit().await?;
        Ok(out)
    }
}

/// Inserts an entry under an existing parent directory; returns the
/// parent's id. The path or id being taken is a conflict. `version1`: a
/// file put's new file, made with version 1 (of that size) current, whose
/// UUID must not be a deleted file's (see `retired_uuids`).
pub(super) async fn create_entry(
    tx: &mut Tx<'_>,
    id: &str,
    path: &NsPath,
    kind: Kind,
    owner: &Principal,
    version1: Option<u64>,
) -> Result<String, StoreError> {
    let parent_id = check_new_entry(tx, id, path, kind, version1).await?;
    let (sql, args) = insert_entry(id, path, kind, owner, version1)?;
    let res = batch::bind(sqlx::query(&sql), args)
        .execute(&mut **tx)
        .await;
    match res {
        Ok(_) => Ok(parent_id),
        Err(e) => Err(entry_insert_error(path, e)),
    }
}

/// Why inserting the entry at `path` failed.
pub(super) fn entry_insert_error(path: &NsPath, e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(format!("{path} was created concurrently by someone else"))
    } else {
        e.into()
    }
}

/// The statement inserting a new entry (see [`create_entry`]).
pub(super) fn insert_entry(
    id: &str,
    path: &NsPath,
    kind: Kind,
    owner: &Principal,
    version1: Option<u64>,
) -> Result<(String, Vec<Arg<'static>>), StoreError> {
    let parent = path
        .parent()
        .ok_or_else(|| StoreError::Refused(format!("{path} is a VO root")))?;
    Ok((
        "INSERT INTO entries (id, vo, path, parent, kind, owner, current_version, size,
                              created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $8, $9, $7, $7)"
            .to_owned(),
        vec![
            Arg::string(id.to_owned()),
            Arg::string(path.vo().to_owned()),
            Arg::string(path.as_str().to_owned()),
            Arg::string(parent.as_str().to_owned()),
            Arg::string(kind.as_str().to_owned()),
            Arg::string(owner.to_string()),
            Arg::Int(now()),
            Arg::Int(if version1.is_some() { 1 } else { 0 }),
            Arg::Int(to_bigint(version1.unwrap_or(0))),
        ],
    ))
}

/// [`create_entry`]'s checks: the parent exists and is a directory, the
/// path and the id are free (and, for `version1`, the id not retired);
/// returns the parent's id.
pub(super) async fn check_new_entry(
    tx: &mut Tx<'_>,
    id: &str,
    path: &NsPath,
    kind: Kind,
    version1: Option<u64>,
) -> Result<String, StoreError> {
    let parent = path
        .parent()
        .ok_or_else(|| StoreError::Refused(format!("{path} is a VO root")))?;
    // The parent, the path and the id (and whether the id is retired), in
    // one query. Checked first: on PostgreSQL a failed statement aborts
    // the transaction, so the unique keys below only settle races.
    let retired = if version1.is_some() {
        " UNION ALL SELECT id, '' AS path, 'retired' AS kind FROM retired_uuids WHERE id = $3"
    } else {
        ""
    };
    let rows = sqlx::query(&format!(
        "SELECT id, path, kind FROM entries WHERE path = $1 OR path = $2 OR id = $3{retired}"
    ))
    .bind(parent.as_str())
    .bind(path.as_str())
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    if version1.is_some() {
        for r in &rows {
            if r.try_get::<String, _>("kind")? == "retired" {
                return Err(StoreError::Conflict(format!(
                    "file UUID {id} belonged to a deleted file and cannot be reused; upload again with a new UUID"
                )));
            }
        }
    }
    let mut parent_row = None;
    let (mut path_taken, mut id_taken) = (false, false);
    for r in &rows {
        let (rid, rpath): (String, String) = (r.try_get("id")?, r.try_get("path")?);
        if rpath == parent.as_str() {
            parent_row = Some((rid.clone(), r.try_get::<String, _>("kind")?));
        }
        path_taken |= rpath == path.as_str();
        id_taken |= rid == id;
    }
    let Some((parent_id, parent_kind)) = parent_row else {
        return Err(StoreError::NotFound(format!(
            "directory {parent} does not exist (create it first)"
        )));
    };
    if parent_kind != "dir" {
        return Err(StoreError::Refused(format!("{parent} is not a directory")));
    }
    if path_taken {
        return Err(StoreError::Conflict(match kind {
            Kind::File => {
                format!("{path} exists (to replace a file, give its current version as the base)")
            }
            Kind::Dir => format!("{path} exists"),
        }));
    }
    if id_taken {
        return Err(StoreError::Conflict(format!(
            "UUID {id} is already used by another file"
        )));
    }
    Ok(parent_id)
}

/// Deletes one non-current version of a file.
async fn delete_version(
    tx: &mut Tx<'_>,
    limits: &Limits,
    entry: &EntryRow,
    v: u64,
) -> Result<Dropped, StoreError> {
    let row = sqlx::query("SELECT version FROM versions WHERE file = $1 AND version = $2")
        .bind(&entry.id)
        .bind(to_bigint(v))
        .fetch_optional(&mut **tx)
        .await?;
    if row.is_none() {
        return Err(StoreError::NotFound(format!(
            "{} has no version {v}",
            entry.path
        )));
    }
    let cur = sqlx::query("SELECT current_version FROM entries WHERE id = $1")
        .bind(&entry.id)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(cur) = cur {
        if cur.try_get::<i64, _>("current_version")? == to_bigint(v) {
            return Err(StoreError::Refused(format!(
                "version {v} is the current version of {}; delete the file, or upload a newer version first",
                entry.path
            )));
        }
    }
    super::versions::drop_version(tx, limits, entry, v).await
}

/// Deletes a file with all its versions, or an empty directory; the
/// file's versions, each with the MANAGE capabilities of its allocations
/// that no earlier version listed.
async fn delete_entry(
    tx: &mut Tx<'_>,
    limits: &Limits,
    entry: &EntryRow,
) -> Result<Vec<Dropped>, StoreError> {
    if entry.kind == Kind::Dir {
        let child = sqlx::query("SELECT id FROM entries WHERE parent = $1 LIMIT 1")
            .bind(&entry.path)
            .fetch_optional(&mut **tx)
            .await?;
        if child.is_some() {
            return Err(StoreError::Refused(format!(
                "directory {} is not empty",
                entry.path
            )));
        }
    }
    let rows =
        sqlx::query("SELECT version, indexed FROM versions WHERE file = $1 ORDER BY version")
            .bind(&entry.id)
            .fetch_all(&mut **tx)
            .await?;
    let manage = sqlx::query(
        "SELECT version, manage FROM allocations WHERE file = $1 AND manage IS NOT NULL
          ORDER BY version, alloc",
    )
    .bind(&entry.id)
    .fetch_all(&mut **tx)
    .await?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let version = unsigned("version", r.try_get("version")?)?;
        let error = (r.try_get::<i64, _>("indexed")? != 1).then(|| {
            format!(
                "the exNode of version {version} could not be read: its allocations are unknown"
            )
        });
        out.push(Dropped {
            version,
            manage: Vec::new(),
            error,
        });
    }
    for r in &manage {
        let version = unsigned("version", r.try_get("version")?)?;
        let cap: String = r.try_get("manage")?;
        if let Some(d) = out.iter_mut().find(|d| d.version == version) {
            if seen.insert(cap.clone()) {
                d.manage.push(cap);
            }
        }
    }
    let res = sqlx::query("DELETE FROM entries WHERE id = $1 AND path = $2")
        .bind(&entry.id)
        .bind(&entry.path)
        .execute(&mut **tx)
        .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!(
            "{} changed while being deleted; retry",
            entry.path
        )));
    }
    let freed =
        exnode_bytes(tx, &entry.id, None).await? + wrapped_bytes(tx, &entry.id, None, None).await?;
    if let Some(owner) = &entry.owner {
        charge(tx, limits, &entry.vo, &owner.to_string(), -1, -freed).await?;
    }
    for sql in [
        "DELETE FROM wrapped_keys WHERE file = $1",
        "DELETE FROM allocations WHERE file = $1",
        "DELETE FROM versions WHERE file = $1",
        "DELETE FROM acl WHERE entry = $1",
    ] {
        sqlx::query(sql).bind(&entry.id).execute(&mut **tx).await?;
    }
    if entry.kind == Kind::File {
        sqlx::query("INSERT INTO retired_uuids (id, retired_at) VALUES ($1, $2)")
            .bind(&entry.id)
            .bind(now())
            .execute(&mut **tx)
            .await?;
    }
    Ok(out)
}
