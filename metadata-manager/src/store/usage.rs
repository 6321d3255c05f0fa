//! Usage and quotas (`quota_usage`): what each owner and VO holds, and the
//! charge every change makes against [`Limits`].

use super::*;

impl Store {
    /// Usage of every owner in a VO's tree, by owner.
    pub async fn usage(&self, vo: &str) -> Result<Vec<Usage>, StoreError> {
        let _db = self.timer("usage");
        let files = sqlx::query(
            "SELECT owner, COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS logical
               FROM entries WHERE vo = $1 AND kind = 'file' GROUP BY owner ORDER BY owner",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        let versions = sqlx::query(
            "SELECT e.owner AS owner, COUNT(*) AS n
               FROM versions v JOIN entries e ON e.id = v.file
              WHERE e.vo = $1 GROUP BY e.owner",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        // Each allocation once per owner, however many versions name it
        // (refresh, trim, augment and repair keep most of them).
        let stored = sqlx::query(
            "SELECT owner, CAST(COALESCE(SUM(b), 0) AS BIGINT) AS stored FROM
               (SELECT e.owner AS owner, a.alloc AS alloc, MAX(a.bytes) AS b
                  FROM allocations a JOIN entries e ON e.id = a.file
                  JOIN versions v ON v.file = a.file AND v.version = a.version
                 WHERE e.vo = $1 GROUP BY e.owner, a.alloc) t
              GROUP BY owner",
        )
        .bind(vo)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Usage> = Vec::with_capacity(files.len());
        for r in &files {
            out.push(Usage {
                owner: r.try_get("owner")?,
                files: unsigned("count", r.try_get("n")?)?,
                logical: unsigned("logical", r.try_get("logical")?)?,
                ..Usage::default()
            });
        }
        for r in &versions {
            let owner: String = r.try_get("owner")?;
            let n = unsigned("count", r.try_get("n")?)?;
            match out.iter_mut().find(|u| u.owner == owner) {
                Some(u) => u.versions = n,
                None => out.push(Usage {
                    owner,
                    versions: n,
                    ..Usage::default()
                }),
            }
        }
        for r in &stored {
            let owner: String = r.try_get("owner")?;
            let bytes = unsigned("stored", r.try_get("stored")?)?;
            match out.iter_mut().find(|u| u.owner == owner) {
                Some(u) => u.stored = bytes,
                None => out.push(Usage {
                    owner,
                    stored: bytes,
                    ..Usage::default()
                }),
            }
        }
        let held = sqlx::query(
            "SELECT owner, entries, exnode_bytes FROM quota_usage
              WHERE vo = $1 AND owner <> $2 AND (entries > 0 OR exnode_bytes > 0)",
        )
        .bind(vo)
        .bind(VO_TOTAL)
        .fetch_all(&self.pool)
        .await?;
        for r in &held {
            let owner: String = r.try_get("owner")?;
            let entries = unsigned("entries", r.try_get("entries")?)?;
            let exnode_bytes = unsigned("exnode_bytes", r.try_get("exnode_bytes")?)?;
            match out.iter_mut().find(|u| u.owner == owner) {
                Some(u) => {
                    u.entries = entries;
                    u.exnode_bytes = exnode_bytes;
                }
                None => out.push(Usage {
                    owner,
                    entries,
                    exnode_bytes,
                    ..Usage::default()
                }),
            }
        }
        out.sort_by(|a, b| a.owner.cmp(&b.owner));
        Ok(out)
    }

    /// What a whole VO tree holds (quota `vo_entries`, `vo_exnode_bytes`).
    pub async fn vo_held(&self, vo: &str) -> Result<Held, StoreError> {
        let _db = self.timer("vo_held");
        let row = sqlx::query(
            "SELECT entries, exnode_bytes FROM quota_usage WHERE vo = $1 AND owner = $2",
        )
        .bind(vo)
        .bind(VO_TOTAL)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(Held::default()),
            Some(r) => Ok(Held {
                entries: unsigned("entries", r.try_get("entries")?)?,
                exnode_bytes: unsigned("exnode_bytes", r.try_get("exnode_bytes")?)?,
            }),
        }
    }
}

/// A byte count as a signed delta.
pub(super) fn signed(n: u64) -> i64 {
    to_bigint(n)
}

/// Adds `entries` and `bytes` (negative: frees them) to what `owner` holds
/// in VO `vo`'s tree and to the tree's total, in the caller's transaction.
/// A growth beyond a limit is refused with [`StoreError::Quota`] (the
/// caller then drops the transaction, which undoes the whole change).
/// Both rows change in one statement, owner first, then the VO's (the
/// order of its rows), everywhere: on PostgreSQL
/// the row locks serialize writers of one VO without deadlocks, so
/// replicas cannot together overshoot a limit.
pub(super) async fn charge(
    tx: &mut Tx<'_>,
    limits: &Limits,
    vo: &str,
    owner: &str,
    entries: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    if entries == 0 && bytes == 0 {
        return Ok(());
    }
    let (sql, args) = charge_statement(vo, owner, entries, bytes);
    let rows = batch::bind(sqlx::query(&sql), args)
        .fetch_all(&mut **tx)
        .await?;
    check_charged(&rows, limits, vo, owner, entries, bytes)
}

/// [`charge`]'s statement: both rows (the owner's and the VO's), each
/// made if missing, changed (never below zero), and read back.
pub(super) fn charge_statement(
    vo: &str,
    owner: &str,
    entries: i64,
    bytes: i64,
) -> (String, Vec<Arg<'static>>) {
    (
        "INSERT INTO quota_usage (vo, owner, entries, exnode_bytes)
         VALUES ($1, $2, CASE WHEN $4 < 0 THEN 0 ELSE $4 END,
                 CASE WHEN $5 < 0 THEN 0 ELSE $5 END),
                ($1, $3, CASE WHEN $4 < 0 THEN 0 ELSE $4 END,
                 CASE WHEN $5 < 0 THEN 0 ELSE $5 END)
         ON CONFLICT (vo, owner) DO UPDATE
            SET entries = CASE WHEN quota_usage.entries + $4 < 0 THEN 0
                               ELSE quota_usage.entries + $4 END,
                exnode_bytes = CASE WHEN quota_usage.exnode_bytes + $5 < 0 THEN 0
                                    ELSE quota_usage.exnode_bytes + $5 END
         RETURNING owner, entries, exnode_bytes"
            .to_owned(),
        vec![
            Arg::string(vo.to_owned()),
            Arg::string(owner.to_owned()),
            Arg::string(VO_TOTAL.to_owned()),
            Arg::Int(entries),
            Arg::Int(bytes),
        ],
    )
}

/// Refuses a growth beyond a limit, from the rows [`charge_statement`]
/// returned.
pub(super) fn check_charged(
    rows: &[AnyRow],
    limits: &Limits,
    vo: &str,
    owner: &str,
    entries: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    if entries <= 0 && bytes <= 0 {
        return Ok(());
    }
    let checks = [
        (
            owner,
            ("user_entries", limits.user_entries),
            ("user_exnode_bytes", limits.user_exnode_bytes),
        ),
        (
            VO_TOTAL,
            ("vo_entries", limits.vo_entries),
            ("vo_exnode_bytes", limits.vo_exnode_bytes),
        ),
    ];
    for (key, entry_limit, byte_limit) in checks {
        let mut row = None;
        for r in rows {
            if r.try_get::<String, _>("owner")? == key {
                row = Some(r);
            }
        }
        let row = row.ok_or_else(|| {
            StoreError::Invalid(format!("quota_usage row of {key} in VO {vo} not returned"))
        })?;
        let now_entries = unsigned("entries", row.try_get("entries")?)?;
        let now_bytes = unsigned("exnode_bytes", row.try_get("exnode_bytes")?)?;
        for (delta, now, (limit, max)) in [
            (entries, now_entries, entry_limit),
            (bytes, now_bytes, byte_limit),
        ] {
            let Some(max) = max else { continue };
            if delta > 0 && now > max {
                let request = delta.unsigned_abs();
                return Err(StoreError::Quota(Box::new(QuotaExceeded {
                    limit,
                    vo: vo.to_owned(),
                    owner: owner.to_owned(),
                    max,
                    used: now.saturating_sub(request),
                    request,
                })));
            }
        }
    }
    Ok(())
}

/// Bytes of a file's exNodes (one version, or all).
pub(super) async fn exnode_bytes(
    tx: &mut Tx<'_>,
    file: &str,
    version: Option<u64>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(octet_length(exnode)), 0) AS BIGINT) AS n FROM versions
          WHERE file = $1 AND ($2 IS NULL OR version = $2)",
    )
    .bind(file)
    .bind(version.map(to_bigint))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("n")?)
}

/// Bytes of a file's wrapped keys (recipient and key), of one version or
/// all, of one recipient or all.
pub(super) async fn wrapped_bytes(
    tx: &mut Tx<'_>,
    file: &str,
    version: Option<u64>,
    recipient: Option<&str>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(octet_length(recipient) + octet_length(wrapped)), 0) AS BIGINT) AS n
           FROM wrapped_keys
          WHERE file = $1 AND ($2 IS NULL OR version = $2) AND ($3 IS NULL OR recipient = $3)",
    )
    .bind(file)
    .bind(version.map(to_bigint))
    .bind(recipient)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("n")?)
}

/// The owner (principal) of a file.
pub(super) async fn file_owner(tx: &mut Tx<'_>, file: &str) -> Result<String, StoreError> {
    Ok(file_vo_owner(tx, file).await?.1)
}

/// The VO tree and owner of an entry.
pub(super) async fn file_vo_owner(
    tx: &mut Tx<'_>,
    file: &str,
) -> Result<(String, String), StoreError> {
    let row = sqlx::query("SELECT vo, owner FROM entries WHERE id = $1")
        .bind(file)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no file {file}")))?;
    Ok((row.try_get("vo")?, row.try_get("owner")?))
}
