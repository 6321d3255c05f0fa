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
        let _db = self.timer("entry_with_version");
        let acl_text = self.acl_text_column();
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS}, v.version, v.size AS vsize, v.stored, v.exnode, v.key_id,
                    v.created_by, v.created_at AS vcreated_at, w.wrapped,
                    m.vo_id AS member, m.removed_at, m.removed_by, {acl_text}
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
        let member = member_in(&row)?;
        let acl = acl_text_of(&row)?;
        Ok(Some((entry, version, wrapped, member, acl)))
    }

    /// The select column `acl_text` of an entry `e`: its access ACL as
    /// `principal=rights,...` (neither contains `,` or `=`); only the
    /// aggregate's name differs between the backends.
    fn acl_text_column(&self) -> String {
        let agg = match self.backend {
            Backend::Sqlite => "group_concat",
            Backend::Postgres => "string_agg",
        };
        format!(
            "(SELECT {agg}(a.principal || '=' || a.rights, ',') FROM acl a
               WHERE a.entry = e.id AND a.inherit = 0) AS acl_text"
        )
    }

    /// An entry, its access ACL and the caller's membership (`None`
    /// unknown, `Some(None)` member, `Some(Some(by))` removed), in one
    /// query: what a put checks before it is queued (the entry it
    /// replaces, or the directory a new file goes in).
    #[allow(clippy::type_complexity)]
    pub async fn entry_for_put(
        &self,
        path: &str,
        vo: &str,
        vo_id: &str,
    ) -> Result<Option<(EntryRow, Option<Option<Option<String>>>, Vec<Entry>)>, StoreError> {
        let _db = self.timer("entry_for_put");
        let acl_text = self.acl_text_column();
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS}, m.vo_id AS member, m.removed_at, m.removed_by, {acl_text}
               FROM entries e
               LEFT JOIN members m ON m.vo = $2 AND m.vo_id = $3
              WHERE e.path = $1"
        ))
        .bind(path)
        .bind(vo)
        .bind(vo_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some((
            entry_of(&row)?,
            member_in(&row)?,
            acl_text_of(&row)?,
        )))
    }

    /// Registers a new version. A new file (`base_version` 0) is created
    /// with the parent's default ACL; an existing one advances only if its
    /// current version is still `base_version` (optimistic concurrency).
    /// Versions beyond the file's retention ([`Store::keep_for`]) are
    /// dropped in the same transaction. Returns the new version number
    /// and what was dropped, with the MANAGE capabilities of the
    /// allocations no remaining version uses (for the client to release).
    ///
    /// On SQLite puts are committed in groups: a put queues itself, and
    /// whoever next holds the writer lock runs every put queued by then,
    /// in transactions of up to [`GROUP_BYTES`] of exNodes (a put that
    /// fails is undone alone and answered with its error, see
    /// [`Store::run_group`]), then commits once (one fsync for the group)
    /// and only then answers the puts it committed. Under load a put thus waits for at most the group before
    /// it, and an answered put is committed. The group runs in a task of
    /// its own, so a caller that goes away cancels nobody's put. On
    /// PostgreSQL each put is its own transaction (writers run
    /// concurrently there), by the same statements.
    pub async fn put_version(&self, v: &NewVersion<'_>) -> Result<Put, StoreError> {
        let _db = self.timer("put_version");
        if self.backend == Backend::Sqlite {
            return self.put_grouped(Owned::of(v)).await;
        }
        let (mut tx, _g) = self.write().await?;
        let put = put_in(&mut tx, self.backend, &self.limits, &self.retention, v).await?;
        tx.commit().await?;
        Ok(put)
    }

    /// Groups of puts committed so far (SQLite), and the puts they held.
    pub fn put_groups(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.grouped.0.load(Relaxed), self.grouped.1.load(Relaxed))
    }

    /// [`Store::put_version`] on SQLite: queued, and run with the puts
    /// queued beside it.
    async fn put_grouped(&self, v: Owned) -> Result<Put, StoreError> {
        let (answer, rx) = tokio::sync::oneshot::channel();
        self.group
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Queued { v, answer });
        let store = self.clone();
        let run = tokio::spawn(async move {
            let _g = store.writer.clone().lock_owned().await;
            // Every put queued by now, in groups of at most GROUP_BYTES
            // of exNodes (a large exNode goes alone: a group is written
            // to the WAL whole before it is committed).
            loop {
                let jobs = {
                    let mut q = store.group.lock().unwrap_or_else(|p| p.into_inner());
                    let mut bytes = 0usize;
                    let n = q
                        .iter()
                        .take_while(|j| {
                            let first = bytes == 0;
                            bytes = bytes.saturating_add(j.v.exnode.len().max(1));
                            first || bytes <= GROUP_BYTES
                        })
                        .count();
                    q.drain(..n).collect::<Vec<_>>()
                };
                if jobs.is_empty() {
                    break;
                }
                store.run_group(jobs).await;
            }
        });
        // Once that task held the writer, this put was run by it or by a
        // group before it, and answered.
        if let Err(e) = run.await {
            tracing::error!(error = %e, "a group of puts failed");
        }
        rx.await
            .map_err(|_| StoreError::Group("the put's group was abandoned".into()))?
    }

    /// Runs `jobs` in one transaction (the writer lock held) and answers
    /// each. First without savepoints (two round trips to the database
    /// per put fewer): if every put succeeds, the group commits. If one
    /// fails, the transaction is rolled back, that put is answered with
    /// its error (the one it would get in any case: every put before it
    /// had succeeded), and the others run again
    /// ([`Store::run_with_savepoints`]).
    async fn run_group(&self, mut jobs: Vec<Queued>) {
        let mut tx = match db::begin_write(&self.pool, self.backend).await {
            Ok(tx) => tx,
            Err(e) => return answer_all(jobs.into_iter().map(|j| j.answer), &e),
        };
        let mut puts = Vec::with_capacity(jobs.len());
        let mut failed = None;
        for (i, job) in jobs.iter().enumerate() {
            let v = job.v.as_new();
            match put_in(&mut tx, self.backend, &self.limits, &self.retention, &v).await {
                Ok(put) => puts.push(put),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        let Some((i, e)) = failed else {
            let group = jobs.len();
            let done = jobs.into_iter().map(|j| j.answer).zip(puts).collect();
            return self.commit_group(tx, done, group).await;
        };
        if let Err(re) = tx.rollback().await {
            tracing::warn!(error = %re, "rolling back a group of puts failed (the connection is reset)");
        }
        let job = jobs.remove(i);
        let _ = job.answer.send(Err(e));
        if !jobs.is_empty() {
            self.run_with_savepoints(jobs).await;
        }
    }

    /// Runs `jobs` in one transaction, each in a savepoint (a put that
    /// fails is rolled back alone and answered with its error); answers
    /// each.
    async fn run_with_savepoints(&self, jobs: Vec<Queued>) {
        let group = jobs.len();
        let mut tx = match db::begin_write(&self.pool, self.backend).await {
            Ok(tx) => tx,
            Err(e) => return answer_all(jobs.into_iter().map(|j| j.answer), &e),
        };
        let mut done: Vec<(tokio::sync::oneshot::Sender<Result<Put, StoreError>>, Put)> =
            Vec::with_capacity(group);
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let v = job.v.as_new();
            let r = match sqlx::query("SAVEPOINT put").execute(&mut *tx).await {
                Ok(_) => put_in(&mut tx, self.backend, &self.limits, &self.retention, &v).await,
                Err(e) => Err(e.into()),
            };
            let end = match &r {
                Ok(_) => "RELEASE SAVEPOINT put",
                Err(_) => "ROLLBACK TO SAVEPOINT put",
            };
            let ended = sqlx::query(end).execute(&mut *tx).await;
            let ended = match (ended, r.is_err()) {
                (Ok(_), true) => sqlx::query("RELEASE SAVEPOINT put").execute(&mut *tx).await,
                (e, _) => e,
            };
            if let Err(e) = ended {
                // The transaction is in an unknown state: none of the
                // group is committed (dropped, it rolls back).
                drop(tx);
                let rest = std::iter::once(job.answer)
                    .chain(done.into_iter().map(|(a, _)| a))
                    .chain(jobs.map(|j| j.answer));
                return answer_all(rest, &e);
            }
            match r {
                Ok(put) => done.push((job.answer, put)),
                Err(e) => {
                    let _ = job.answer.send(Err(e));
                }
            }
        }
        self.commit_group(tx, done, group).await;
    }

    /// Commits a group's transaction, then answers the puts `done` in it
    /// (of `group` run).
    async fn commit_group(
        &self,
        tx: Tx<'static>,
        done: Vec<(tokio::sync::oneshot::Sender<Result<Put, StoreError>>, Put)>,
        group: usize,
    ) {
        match tx.commit().await {
            Ok(()) => {
                use std::sync::atomic::Ordering::Relaxed;
                self.grouped.0.fetch_add(1, Relaxed);
                self.grouped.1.fetch_add(done.len() as u64, Relaxed);
                if group > 1 {
                    tracing::debug!(group, committed = done.len(), "puts committed together");
                }
                for (answer, put) in done {
                    let _ = answer.send(Ok(put));
                }
            }
            Err(e) => answer_all(done.into_iter().map(|(a, _)| a), &e),
        }
    }

    /// Number of versions of a file and bytes they hold on depots (each
    /// allocation once).
    pub async fn version_totals(&self, file: &str) -> Result<(u64, u64), StoreError> {
        let _db = self.timer("version_totals");
        let n = sqlx::query("SELECT COUNT(*) AS n FROM versions WHERE file = $1")
            .bind(file)
            .fetch_one(&self.pool)
            .await?;
        let stored = sqlx::query(
            "SELECT CAST(COALESCE(SUM(b), 0) AS BIGINT) AS stored FROM
               (SELECT MAX(a.bytes) AS b FROM allocations a
                  JOIN versions v ON v.file = a.file AND v.version = a.version
                 WHERE a.file = $1 GROUP BY a.alloc) t",
        )
        .bind(file)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            unsigned("count", n.try_get("n")?)?,
            unsigned("stored", stored.try_get("stored")?)?,
        ))
    }

    /// The exNode of every version of a file, oldest first.
    pub async fn exnodes(&self, file: &str) -> Result<Vec<(u64, String)>, StoreError> {
        let _db = self.timer("exnodes");
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

    /// Every version of a file, newest first (without exNodes), with the
    /// bytes of allocations no other version of the file names.
    pub async fn versions(&self, file: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let _db = self.timer("versions");
        let rows = sqlx::query(
            "SELECT v.version, v.size AS vsize, v.stored, '' AS exnode, v.key_id, v.created_by,
                    v.created_at AS vcreated_at, v.expires, v.readable_until, v.indexed,
                    CAST(COALESCE((SELECT SUM(a.bytes) FROM allocations a
                       WHERE a.file = v.file AND a.version = v.version
                         AND NOT EXISTS (SELECT 1 FROM allocations o
                                          WHERE o.file = a.file AND o.alloc = a.alloc
                                            AND o.version <> a.version)), 0) AS BIGINT)
                      AS exclusive
               FROM versions v WHERE v.file = $1 ORDER BY v.version DESC",
        )
        .bind(file)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VersionInfo {
                    row: version_of(r)?,
                    exclusive: unsigned("exclusive", r.try_get("exclusive")?)?,
                    expires: r.try_get("expires")?,
                    readable_until: r.try_get("readable_until")?,
                    unreadable: r.try_get::<i64, _>("indexed")? == 2,
                })
            })
            .collect()
    }

    /// The retention that applies to files under `dir` (a directory):
    /// the nearest directory's setting (`dir` itself included), else the
    /// VO's, else the default.
    pub async fn keep_for(&self, dir: &NsPath) -> Result<Keep, StoreError> {
        let _db = self.timer("keep_for");
        let mut tx = self.pool.begin().await?;
        let mut chain = dir.ancestors();
        chain.push(dir.clone());
        let k = keep_of_chain(&mut tx, &self.retention, &chain).await?;
        tx.commit().await?;
        Ok(k)
    }

    /// Sets (`Some`) or clears (`None`, inherit again) a directory's
    /// retention. It applies from each file's next version.
    pub async fn set_keep(&self, dir: &EntryRow, keep: Option<u64>) -> Result<(), StoreError> {
        let _db = self.timer("set_keep");
        if dir.kind != Kind::Dir {
            return Err(StoreError::Refused(format!(
                "{} is a file; retention is set on directories",
                dir.path
            )));
        }
        if let Some(k) = keep {
            if !(1..=MAX_KEEP_VERSIONS).contains(&k) {
                return Err(StoreError::Refused(format!(
                    "keep {k} versions? between 1 (the current one only) and {MAX_KEEP_VERSIONS}"
                )));
            }
        }
        let (mut tx, _g) = self.write().await?;
        let res =
            sqlx::query("UPDATE entries SET keep_versions = $2 WHERE id = $1 AND kind = 'dir'")
                .bind(&dir.id)
                .bind(keep.map(to_bigint))
                .execute(&mut *tx)
                .await?;
        if res.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("no directory {}", dir.path)));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes the `allocations` rows of versions stored before migration 3
    /// (or by an older release), in batches; a version whose exNode does
    /// not parse is marked unreadable (`indexed` 2). Safe with several
    /// replicas starting at once: rows are inserted once, and a version is
    /// marked only while still unmarked.
    pub(super) async fn backfill_allocations(&self) -> Result<u64, StoreError> {
        const BATCH: i64 = 200;
        let mut done = 0u64;
        loop {
            let rows = sqlx::query(
                // In key order: replicas backfilling at once lock rows in
                // the same order (no deadlock).
                "SELECT file, version, exnode FROM versions WHERE indexed = 0
                  ORDER BY file, version LIMIT $1",
            )
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            let (mut tx, _g) = self.write().await?;
            for r in &rows {
                let file: String = r.try_get("file")?;
                let version: i64 = r.try_get("version")?;
                let doc: String = r.try_get("exnode")?;
                let parsed =
                    exnode::from_xml(doc.as_bytes()).map(|ex| crate::allocations::facts(&ex));
                let (facts, indexed) = match parsed {
                    Ok(f) => (f, 1),
                    Err(e) => {
                        tracing::error!(%file, version, error = %e, "a stored exNode does not parse; its allocations are not counted or released");
                        (Default::default(), 2)
                    }
                };
                let res = sqlx::query(
                    "UPDATE versions SET indexed = $3, expires = $4, readable_until = $5, mtime = $6
                      WHERE file = $1 AND version = $2 AND indexed = 0",
                )
                .bind(&file)
                .bind(version)
                .bind(indexed)
                .bind(facts.expires)
                .bind(facts.readable_until)
                .bind(facts.mtime)
                .execute(&mut *tx)
                .await?;
                if res.rows_affected() == 1 {
                    insert_allocations(&mut tx, &file, version, &facts).await?;
                    done += 1;
                }
            }
            tx.commit().await?;
        }
        if done > 0 {
            tracing::info!(
                versions = done,
                "recorded the allocations of versions stored before"
            );
        }
        Ok(done)
    }
}

/// One version as `versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub row: VersionRow,
    /// Bytes of allocations no other version of the file names (what
    /// dropping this version frees on the depots).
    pub exclusive: u64,
    pub expires: Option<i64>,
    pub readable_until: Option<i64>,
    /// Its exNode could not be read to record its allocations.
    pub unreadable: bool,
}

/// A version dropped (deleted, or beyond the retention), and the MANAGE
/// capabilities of its allocations that no remaining version names: the
/// caller releases them. `error` says why none are listed when its
/// allocations are unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub version: u64,
    pub manage: Vec<String>,
    pub error: Option<String>,
}

/// What a put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub version: u64,
    /// Old versions dropped by the retention.
    pub pruned: Vec<Dropped>,
}

/// A version that keeps some of its base's allocations and leaves others
/// out is maintenance of the base (`lors trim`, `repair`), whose client
/// releases what it left out right after the put: those allocations are
/// forgotten in every older version too, so usage stops counting them and
/// dropping an older version does not release them again. (A version that
/// shares none of its base's allocations is new content: the base keeps
/// its own, released when it is dropped.)
async fn forget_released(
    tx: &mut Tx<'_>,
    file: &str,
    base: u64,
    next: u64,
) -> Result<(), StoreError> {
    let (base, next) = (to_bigint(base), to_bigint(next));
    let shared = sqlx::query(
        "SELECT 1 AS one FROM allocations n
          WHERE n.file = $1 AND n.version = $2
            AND EXISTS (SELECT 1 FROM allocations b
                         WHERE b.file = n.file AND b.alloc = n.alloc AND b.version = $3)
          LIMIT 1",
    )
    .bind(file)
    .bind(next)
    .bind(base)
    .fetch_optional(&mut **tx)
    .await?;
    if shared.is_none() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM allocations
          WHERE file = $1 AND version < $2
            AND alloc IN (SELECT b.alloc FROM allocations b
                           WHERE b.file = $1 AND b.version = $3
                             AND NOT EXISTS (SELECT 1 FROM allocations n
                                              WHERE n.file = $1 AND n.alloc = b.alloc
                                                AND n.version = $2))",
    )
    .bind(file)
    .bind(next)
    .bind(base)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The retention of the directory chain `chain` (root first): the last
/// directory with a setting, else the VO's, else the default.
async fn keep_of_chain(
    tx: &mut Tx<'_>,
    retention: &Retention,
    chain: &[NsPath],
) -> Result<Keep, StoreError> {
    let own_path = chain.last().map(|p| p.as_str().to_owned());
    let mut own = None;
    let mut found: Option<(String, u64)> = None;
    for p in chain.iter().rev() {
        let row = sqlx::query("SELECT keep_versions FROM entries WHERE path = $1")
            .bind(p.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        let k: Option<i64> = match row {
            Some(r) => r.try_get("keep_versions")?,
            None => None,
        };
        if let Some(k) = k {
            let k = unsigned("keep_versions", k)?.max(1);
            if own_path.as_deref() == Some(p.as_str()) {
                own = Some(k);
            }
            found = Some((p.as_str().to_owned(), k));
            break;
        }
    }
    let vo = chain.first().map(|p| p.vo().to_owned()).unwrap_or_default();
    Ok(match found {
        Some((path, keep)) => Keep {
            keep,
            source: KeepSource::Directory(path),
            own,
        },
        None => match retention.per_vo.get(&vo) {
            Some(k) => Keep {
                keep: (*k).max(1),
                source: KeepSource::Vo(vo),
                own,
            },
            None => Keep {
                keep: retention.default.max(1),
                source: KeepSource::Default,
                own,
            },
        },
    })
}

/// The retention of the file at `path`.
async fn keep_in(
    tx: &mut Tx<'_>,
    retention: &Retention,
    path: &NsPath,
) -> Result<Keep, StoreError> {
    keep_of_chain(tx, retention, &path.ancestors()).await
}

/// A file's entry by id.
async fn file_entry(tx: &mut Tx<'_>, file: &str) -> Result<EntryRow, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.id = $1"
    ))
    .bind(file)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no file {file}")))?;
    entry_of(&row)
}

/// A version's `allocations` rows.
pub(super) async fn insert_allocations(
    tx: &mut Tx<'_>,
    file: &str,
    version: i64,
    facts: &crate::allocations::Facts,
) -> Result<(), StoreError> {
    let mut b = Batch::default();
    allocation_statements(&mut b, file, version, facts);
    for (sql, args) in b.into_parts() {
        batch::bind(sqlx::query(&sql), args)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The statements inserting a version's `allocations` rows, in
/// multi-row `INSERT`s of up to [`ROWS_PER_INSERT`] (far below either
/// database's limit on parameters).
fn allocation_statements<'a>(
    b: &mut Batch<'a>,
    file: &'a str,
    version: i64,
    facts: &'a crate::allocations::Facts,
) {
    for chunk in facts.allocations.chunks(ROWS_PER_INSERT) {
        let mut sql =
            String::from("INSERT INTO allocations (file, version, alloc, manage, bytes) VALUES ");
        let mut args = vec![Arg::str(file), Arg::Int(version)];
        for (i, a) in chunk.iter().enumerate() {
            let n = 3 * i;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("($1, $2, ${}, ${}, ${})", n + 3, n + 4, n + 5));
            args.push(Arg::str(&a.id));
            args.push(Arg::OptText(a.manage.as_deref().map(Cow::Borrowed)));
            args.push(Arg::Int(to_bigint(a.bytes)));
        }
        sql.push_str(" ON CONFLICT (file, alloc, version) DO NOTHING");
        b.push(sql, args);
    }
}

/// Most rows one multi-row `INSERT` writes.
const ROWS_PER_INSERT: usize = 200;

/// The MANAGE capabilities of version `v`'s allocations that no other
/// version of the file names (each once), or why they are unknown: its
/// exNode, or another version's, could not be read (then nothing is
/// released: it might be in use).
pub(super) async fn exclusive_manage(
    tx: &mut Tx<'_>,
    file: &str,
    v: u64,
) -> Result<Result<Vec<String>, String>, StoreError> {
    let unread = sqlx::query(
        "SELECT version FROM versions WHERE file = $1 AND indexed <> 1 ORDER BY version",
    )
    .bind(file)
    .fetch_all(&mut **tx)
    .await?;
    if let Some(r) = unread.first() {
        let n = unsigned("version", r.try_get("version")?)?;
        return Ok(Err(if n == v {
            format!("the exNode of version {v} could not be read: its allocations are unknown")
        } else {
            format!(
                "the exNode of version {n} could not be read: allocations it may share are kept"
            )
        }));
    }
    let rows = sqlx::query(
        "SELECT a.manage FROM allocations a
          WHERE a.file = $1 AND a.version = $2 AND a.manage IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM allocations o
                             WHERE o.file = a.file AND o.alloc = a.alloc AND o.version <> a.version)
          ORDER BY a.alloc",
    )
    .bind(file)
    .bind(to_bigint(v))
    .fetch_all(&mut **tx)
    .await?;
    let mut out: Vec<String> = Vec::with_capacity(rows.len());
    for r in &rows {
        let m: String = r.try_get("manage")?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(Ok(out))
}

/// Drops one version (not the current one) of `entry`'s file: its rows,
/// wrapped keys and allocations, its bytes uncharged; what to release.
pub(super) async fn drop_version(
    tx: &mut Tx<'_>,
    limits: &Limits,
    entry: &EntryRow,
    v: u64,
) -> Result<Dropped, StoreError> {
    let released = exclusive_manage(tx, &entry.id, v).await?;
    let freed = exnode_bytes(tx, &entry.id, Some(v)).await?
        + wrapped_bytes(tx, &entry.id, Some(v), None).await?;
    if let Some(owner) = &entry.owner {
        charge(tx, limits, &entry.vo, &owner.to_string(), 0, -freed).await?;
    }
    for sql in [
        "DELETE FROM wrapped_keys WHERE file = $1 AND version = $2",
        "DELETE FROM allocations WHERE file = $1 AND version = $2",
        "DELETE FROM versions WHERE file = $1 AND version = $2",
    ] {
        sqlx::query(sql)
            .bind(&entry.id)
            .bind(to_bigint(v))
            .execute(&mut **tx)
            .await?;
    }
    Ok(match released {
        Ok(manage) => Dropped {
            version: v,
            manage,
            error: None,
        },
        Err(why) => Dropped {
            version: v,
            manage: Vec::new(),
            error: Some(why),
        },
    })
}

/// A put's new file (base version 0): its entry with version 1 current,
/// charged before anything large is written (one round trip for both);
/// the statement giving it the directory's default ACL goes into `b`
/// (run with the version's). A UUID of a deleted file is never reused.
async fn create_file<'a>(
    tx: &mut Tx<'_>,
    backend: Backend,
    limits: &Limits,
    v: &'a NewVersion<'a>,
    bytes: u64,
    b: &mut Batch<'a>,
) -> Result<(), StoreError> {
    let parent = check_new_entry(tx, v.file, v.path, Kind::File, Some(v.size)).await?;
    let writer = v.writer.to_string();
    let mut first = Batch::default();
    let (sql, args) = insert_entry(v.file, v.path, Kind::File, v.writer, Some(v.size))?;
    first.push(sql, args);
    let (sql, args) = charge_statement(v.path.vo(), &writer, 1, signed(bytes));
    first.push(sql, args);
    let rows = first
        .run(tx, backend)
        .await
        .map_err(|e| entry_insert_error(v.path, e))?;
    check_charged(&rows, limits, v.path.vo(), &writer, 1, signed(bytes))?;
    // The directory's default entries become the file's access entries.
    b.push(
        "INSERT INTO acl (entry, inherit, principal, rights)
         SELECT $1, 0, principal, rights FROM acl WHERE entry = $2 AND inherit = 1",
        vec![Arg::str(v.file), Arg::string(parent)],
    );
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

/// The statements inserting the version's row, its allocations and the
/// keys wrapped with it (after whatever `b` holds already).
fn version_statements<'a>(b: &mut Batch<'a>, v: &'a NewVersion<'a>, next: u64, t: i64) {
    b.push(
        "INSERT INTO versions (file, version, size, stored, exnode, key_id, created_by, created_at,
                               expires, readable_until, indexed, mtime)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11)",
        vec![
            Arg::str(v.file),
            Arg::Int(to_bigint(next)),
            Arg::Int(to_bigint(v.size)),
            Arg::Int(to_bigint(v.stored)),
            Arg::str(v.exnode),
            Arg::OptText(v.key_id.map(Cow::Borrowed)),
            Arg::string(v.writer.to_string()),
            Arg::Int(t),
            Arg::OptInt(v.facts.expires),
            Arg::OptInt(v.facts.readable_until),
            Arg::OptInt(v.facts.mtime),
        ],
    );
    allocation_statements(b, v.file, to_bigint(next), v.facts);
    for chunk in v.wrapped_keys.chunks(ROWS_PER_INSERT) {
        let mut sql =
            String::from("INSERT INTO wrapped_keys (file, version, recipient, wrapped) VALUES ");
        let mut args = vec![Arg::str(v.file), Arg::Int(to_bigint(next))];
        for (i, (recipient, wrapped)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("($1, $2, ${}, ${})", 2 * i + 3, 2 * i + 4));
            args.push(Arg::str(recipient));
            args.push(Arg::str(wrapped));
        }
        b.push(sql, args);
    }
}

/// Runs a put's batch ending in [`version_statements`]: a key taken
/// (the version row: allocations are inserted `ON CONFLICT DO NOTHING`,
/// wrapped keys are one per recipient) is a concurrent put.
async fn run_version_batch(
    tx: &mut Tx<'_>,
    backend: Backend,
    b: Batch<'_>,
    v: &NewVersion<'_>,
    next: u64,
) -> Result<(), StoreError> {
    match b.run(tx, backend).await {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "{}: version {next} was registered concurrently; read it again and retry",
            v.path
        ))),
        Err(e) => Err(e.into()),
    }
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

/// The caller's membership a query joined in (`member`, `removed_at`,
/// `removed_by`): `None` unknown, `Some(None)` member, `Some(Some(by))`
/// removed.
#[allow(clippy::option_option)]
fn member_in(row: &AnyRow) -> Result<Option<Option<Option<String>>>, StoreError> {
    if row.try_get::<Option<String>, _>("member")?.is_none() {
        return Ok(None);
    }
    if row.try_get::<Option<i64>, _>("removed_at")?.is_some() {
        Ok(Some(Some(row.try_get::<Option<String>, _>("removed_by")?)))
    } else {
        Ok(Some(None))
    }
}

/// The access ACL a query aggregated as `principal=rights,...`
/// (`acl_text`; neither contains `,` or `=`).
fn acl_text_of(row: &AnyRow) -> Result<Vec<Entry>, StoreError> {
    match row.try_get::<Option<String>, _>("acl_text")? {
        None => Ok(Vec::new()),
        Some(t) if t.is_empty() => Ok(Vec::new()),
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
            .collect(),
    }
}

/// Most bytes of exNodes committed in one group (see
/// [`Store::put_version`]); a put larger than this is committed alone.
const GROUP_BYTES: usize = 1 << 20;

/// A put queued for the SQLite writer, and where its answer goes.
pub(crate) struct Queued {
    v: Owned,
    answer: tokio::sync::oneshot::Sender<Result<Put, StoreError>>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("path", &self.v.path.as_str())
            .field("base_version", &self.v.base_version)
            .finish_non_exhaustive()
    }
}

/// A [`NewVersion`] owned, to wait in the group queue.
struct Owned {
    path: NsPath,
    file: String,
    base_version: u64,
    size: u64,
    stored: u64,
    exnode: String,
    key_id: Option<String>,
    writer: Principal,
    wrapped_keys: Vec<(String, String)>,
    facts: crate::allocations::Facts,
}

impl Owned {
    fn of(v: &NewVersion<'_>) -> Owned {
        Owned {
            path: v.path.clone(),
            file: v.file.to_owned(),
            base_version: v.base_version,
            size: v.size,
            stored: v.stored,
            exnode: v.exnode.to_owned(),
            key_id: v.key_id.map(str::to_owned),
            writer: v.writer.clone(),
            wrapped_keys: v.wrapped_keys.to_vec(),
            facts: v.facts.clone(),
        }
    }

    fn as_new(&self) -> NewVersion<'_> {
        NewVersion {
            path: &self.path,
            file: &self.file,
            base_version: self.base_version,
            size: self.size,
            stored: self.stored,
            exnode: &self.exnode,
            key_id: self.key_id.as_deref(),
            writer: &self.writer,
            wrapped_keys: &self.wrapped_keys,
            facts: &self.facts,
        }
    }
}

/// Answers every put of a group that failed as a whole with `e`.
fn answer_all(
    answers: impl Iterator<Item = tokio::sync::oneshot::Sender<Result<Put, StoreError>>>,
    e: &sqlx::Error,
) {
    tracing::error!(error = %e, "a group of puts failed; none of it was committed");
    for a in answers {
        let _ = a.send(Err(StoreError::Group(e.to_string())));
    }
}

/// The statements of a put ([`Store::put_version`]) in `tx`.
async fn put_in(
    tx: &mut Tx<'_>,
    backend: Backend,
    limits: &Limits,
    retention: &Retention,
    v: &NewVersion<'_>,
) -> Result<Put, StoreError> {
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
    let mut b = Batch::default();
    if v.base_version == 0 {
        create_file(tx, backend, limits, v, bytes, &mut b).await?;
    } else {
        advance_file(tx, limits, v, next, bytes, t).await?;
    }
    version_statements(&mut b, v, next, t);
    run_version_batch(tx, backend, b, v, next).await?;
    // A version made by maintenance (refresh, trim, augment, repair)
    // keeps its base version's data key (same key id): the base
    // version's wrapped keys carry over, for every recipient the put
    // did not wrap for itself, so people the file is shared with (and
    // the escrow) keep reading it.
    if v.base_version > 0 {
        if let Some(key_id) = v.key_id {
            carry_wrapped_keys(tx, limits, v, next, key_id).await?;
        }
    }
    let mut pruned = Vec::new();
    if v.base_version > 0 {
        forget_released(tx, v.file, v.base_version, next).await?;
        let keep = keep_in(tx, retention, v.path).await?.keep;
        let rows =
            sqlx::query("SELECT version FROM versions WHERE file = $1 ORDER BY version DESC")
                .bind(v.file)
                .fetch_all(&mut **tx)
                .await?;
        let entry = file_entry(tx, v.file).await?;
        for r in rows
            .iter()
            .skip(usize::try_from(keep).unwrap_or(usize::MAX))
        {
            let old = unsigned("version", r.try_get("version")?)?;
            pruned.push(drop_version(tx, limits, &entry, old).await?);
        }
    }
    Ok(Put {
        version: next,
        pruned,
    })
}
