//! File versions: `put` (a new exNode), `get` (an exNode signed for its
//! file and version, with a signed ticket and the caller's wrapped key)
//! and `ticket`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ibp_auth::tokens::FileTicket;
use ibp_https::{ApiError, Authenticated};
use metadata_api::{
    GetAnswer, PathRequest, PutRequest, PutResult, Retention, RetentionRequest, Rights, Ticket,
    VersionInfo, VersionRequest, Versions, WrappedKey,
};

use super::caller::{
    acting_for, admit, check_member, entry_with, holds, maintenance_put, maintenance_read,
    must_wrap_for_self, no_new_entries, parent_with, parse_path, rights_with, AnyScope, Caller,
    Verified,
};
use super::keys::{check_recipient, check_wrapped};
use super::{ApiResult, App, Body, MAX_WRAPPED, SMALL_BODY, TICKET_CACHE};
use crate::names::NsPath;
use crate::store::{Keep, KeepSource, Kind, NewVersion};

pub(super) async fn put_version(
    State(app): State<Arc<App>>,
    Authenticated(Verified(who)): Authenticated<Verified>,
    body: Body<PutRequest<'static>>,
) -> ApiResult<Json<PutResult>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    acting_for(&who, &path)?;
    if path.is_root() {
        return Err(ApiError::bad_request(format!(
            "{path} is a VO root, not a file"
        )));
    }
    if req.exnode.len() > app.max_exnode {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "exNode of {} bytes; this metadata manager accepts at most {}",
                req.exnode.len(),
                app.max_exnode
            ),
        ));
    }
    // Who may write here is settled before the exNode is parsed: a caller
    // without the right (a removed member, a reader, another VO) costs no
    // parse of a large document.
    let current = check_base(&app, &who, &path, req.base_version).await?;
    // Memory: the document is not needed once parsed (the canonical form
    // is stored), nor the model once encoded; a put holds as few copies
    // of a large exNode at once as it can.
    let PutRequest {
        path: _,
        base_version,
        exnode: doc,
        wrapped_keys,
    } = req;
    let doc = doc.into_owned();
    let mut ex = heavy(doc.len(), move || {
        let ex = exnode::from_xml(doc.as_bytes()).map_err(|e| e.to_string())?;
        drop(doc);
        ex.validate().map_err(|e| e.to_string())?;
        Ok::<_, String>(ex)
    })
    .await?
    .map_err(|e| ApiError::bad_request(format!("exNode refused: {e}")))?;
    let Some(file) = ex.file else {
        return Err(ApiError::bad_request(
            "exNode refused: it has no file UUID (file_uuid), to which the depots bind its blocks",
        ));
    };
    // A signature the client sent back (refresh, augment: they change the
    // exNode they were served) is not stored: every get signs afresh.
    ex.metadata
        .retain(|m| m.name != exnode::signature::SIGNATURE_NAME);
    let wrapped = wrapped_pairs(&who, wrapped_keys, must_wrap_for_self(&who, &ex))?;
    let file = file.to_string();
    if let Some(id) = current {
        if id != file {
            return Err(ApiError::bad_request(format!(
                "the exNode is for file {file} but {path} is file {id}; a new version keeps the file's UUID"
            )));
        }
    }
    let next = base_version.saturating_add(1);
    ex.version = next;
    let key_id = ex.encryption.as_ref().map(|e| e.key_id.clone());
    let (size, stored) = (ex.size, ex.stored_bytes());
    maintenance_put(&app, &who, &path, base_version, &ex, wrapped.len()).await?;
    let (canonical, facts) = heavy(ex.mappings.len().saturating_mul(1024), move || {
        (exnode::to_xml(&ex), crate::allocations::facts(&ex))
    })
    .await?;
    let writer = who.principal();
    let put = app
        .store
        .put_version(&NewVersion {
            path: &path,
            file: &file,
            base_version,
            size,
            stored,
            exnode: &canonical,
            key_id: key_id.as_deref(),
            writer: &writer,
            wrapped_keys: &wrapped,
            facts: &facts,
        })
        .await?;
    let version = put.version;
    let pruned: Vec<u64> = put.pruned.iter().map(|d| d.version).collect();
    tracing::info!(%path, %file, version, size, by = %writer, ?pruned, "put version");
    Ok(Json(PutResult {
        path: path.as_str().to_owned(),
        id: file,
        version,
        size,
        stored,
        pruned: put
            .pruned
            .into_iter()
            .map(super::files::released_of)
            .collect(),
    }))
}

/// `POST /v1/versions`: a file's versions (read right on it).
pub(super) async fn versions(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<PathRequest>,
) -> ApiResult<Json<Versions>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::READ).await?;
    if e.kind != Kind::File {
        return Err(ApiError::bad_request(format!(
            "{path} is a directory; its retention: lors versions --keep"
        )));
    }
    let dir = path
        .parent()
        .ok_or_else(|| ApiError::bad_request(format!("{path} is a VO root")))?;
    let keep = app.store.keep_for(&dir).await?;
    let list = app.store.versions(&e.id).await?;
    Ok(Json(Versions {
        path: e.path.clone(),
        id: e.id.clone(),
        current_version: e.current_version,
        retention: retention_of(path.as_str(), keep),
        versions: list
            .into_iter()
            .map(|v| VersionInfo {
                version: v.row.version,
                current: v.row.version == e.current_version,
                size: v.row.size,
                stored: v.row.stored,
                exclusive: v.exclusive,
                key_id: v.row.key_id,
                created_by: v.row.created_by,
                created_at: v.row.created_at,
                expires: v.expires,
                readable_until: v.readable_until,
                unreadable: v.unreadable,
            })
            .collect(),
    }))
}

/// `POST /v1/retention`: read a directory's retention (read right), or
/// set or clear it (write right on the directory: its owner or a writer).
/// A VO root's is the operator's (`keep_versions_per_vo`).
pub(super) async fn retention(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<RetentionRequest>,
) -> ApiResult<Json<Retention>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    let change = match (req.keep, req.inherit) {
        (Some(_), true) => return Err(ApiError::bad_request("give keep or inherit, not both")),
        (Some(k), false) => Some(Some(k)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    if path.is_root() && path.vo() == who.id.vo {
        app.store.ensure_root(path.vo()).await?;
    }
    let need = if change.is_some() {
        Rights::WRITE
    } else {
        Rights::READ
    };
    let e = entry_with(&app, &who, &path, need).await?;
    let dir = if e.kind == Kind::Dir {
        path.clone()
    } else {
        if change.is_some() {
            return Err(ApiError::bad_request(format!(
                "{path} is a file; retention is set on its directory"
            )));
        }
        path.parent()
            .ok_or_else(|| ApiError::bad_request(format!("{path} is a VO root")))?
    };
    if let Some(keep) = change {
        if path.is_root() {
            return Err(ApiError::bad_request(format!(
                "{path} is a VO root: the VO's retention is the metadata manager's setting \
                 keep_versions_per_vo; set it on a directory instead"
            )));
        }
        app.store.set_keep(&e, keep).await?;
        tracing::info!(%path, ?keep, by = %who.principal(), "retention set");
    }
    let keep = app.store.keep_for(&dir).await?;
    Ok(Json(retention_of(path.as_str(), keep)))
}

fn retention_of(path: &str, k: Keep) -> Retention {
    Retention {
        path: path.to_owned(),
        keep: k.keep,
        source: match k.source {
            KeepSource::Directory(d) => format!("directory {d}"),
            KeepSource::Vo(vo) => format!("vo {vo}"),
            KeepSource::Default => "default".to_owned(),
        },
        own: k.own,
    }
}

/// The wrapped keys of a put as (recipient, wrapped key): each checked, at
/// most one per recipient, and one for the writer if the file is
/// encrypted (else the version could not be read back).
fn wrapped_pairs(
    who: &Caller,
    wrapped_keys: Vec<WrappedKey>,
    encrypted: bool,
) -> ApiResult<Vec<(String, String)>> {
    if wrapped_keys.len() > MAX_WRAPPED {
        return Err(ApiError::bad_request(format!(
            "more than {MAX_WRAPPED} wrapped keys"
        )));
    }
    let mut wrapped: Vec<(String, String)> = Vec::with_capacity(wrapped_keys.len());
    for k in wrapped_keys {
        check_recipient(&k.recipient)?;
        check_wrapped(&k.wrapped)?;
        if wrapped.iter().any(|(r, _)| *r == k.recipient) {
            return Err(ApiError::bad_request(format!(
                "two wrapped keys for {}",
                k.recipient
            )));
        }
        wrapped.push((k.recipient, k.wrapped));
    }
    if encrypted && !wrapped.iter().any(|(r, _)| *r == who.recipient()) {
        return Err(ApiError::bad_request(format!(
            "the exNode is encrypted but no data key is wrapped for you ({}): the version could not be read back",
            who.recipient()
        )));
    }
    Ok(wrapped)
}

/// Admits the caller (not a removed member) and checks what a put may
/// replace, before its exNode is parsed: base 0 creates the file (write
/// on its directory, the caller's VO root made on first use); else the
/// file itself (write on it). Returns the file's UUID for a new version:
/// the exNode must keep it. The entry, its ACL and the caller's
/// membership come in one query ([`crate::store::Store::entry_for_put`]).
async fn check_base(
    app: &App,
    who: &Caller,
    path: &NsPath,
    base_version: u64,
) -> ApiResult<Option<String>> {
    let target = if base_version == 0 {
        no_new_entries(who, path, Rights::WRITE)?;
        path.parent()
            .ok_or_else(|| ApiError::bad_request(format!("{path} is a VO root")))?
    } else {
        path.clone()
    };
    let found = app
        .store
        .entry_for_put(target.as_str(), &who.id.vo, &who.id.vo_id)
        .await?;
    let Some((e, member, acl)) = found else {
        check_member(app, who).await?;
        if base_version == 0 && target.is_root() && target.vo() == who.id.vo {
            // The caller's VO root, made on first use.
            app.store.ensure_root(path.vo()).await?;
            parent_with(app, who, path, Rights::WRITE).await?;
            return Ok(None);
        }
        return Err(ApiError::not_found(format!(
            "no such file or directory: {target}"
        )));
    };
    admit(app, who, member).await?;
    holds(who, &target, &e, &acl, Rights::WRITE)?;
    if base_version == 0 {
        if e.kind != Kind::Dir {
            return Err(ApiError::bad_request(format!(
                "{target} is not a directory"
            )));
        }
        return Ok(None);
    }
    if e.kind != Kind::File {
        return Err(ApiError::bad_request(format!("{path} is a directory")));
    }
    Ok(Some(e.id))
}

/// Runs CPU-heavy work on an exNode of about `bytes` bytes: a large one
/// on the blocking pool, so that parsing or encoding it does not hold up
/// the async workers that serve every other connection.
pub(super) async fn heavy<T, F>(bytes: usize, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if bytes as u64 <= SMALL_BODY {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "exNode work failed");
        ApiError::internal("internal error")
    })
}

/// A signed ticket, reused for the same holder and file while at least
/// 90 % of its lifetime is left (signing costs more than the rest of a
/// get). The read right is checked before this is called, every time.
fn sign_ticket(app: &App, who: &Caller, file: &str) -> (String, i64) {
    let now = ibp_auth::unix_now();
    let lifetime = i64::try_from(app.ticket_lifetime.as_secs()).unwrap_or(i64::MAX);
    let not_after = now.saturating_add(lifetime).min(who.id.not_after);
    let key = (
        file.to_owned(),
        who.id.vo.clone(),
        who.id.vo_id.clone(),
        who.id.key_hash,
    );
    let fresh_enough = not_after.saturating_sub(lifetime / 10);
    if let Ok(cache) = app.tickets.lock() {
        if let Some((token, until)) = cache.get(&key) {
            if *until >= fresh_enough && *until <= not_after {
                return (token.clone(), *until);
            }
        }
    }
    let (token, until) = sign_new_ticket(app, who, file, now, not_after);
    if let Ok(mut cache) = app.tickets.lock() {
        if cache.len() >= TICKET_CACHE {
            cache.clear();
        }
        cache.insert(key, (token.clone(), until));
    }
    (token, until)
}

fn sign_new_ticket(app: &App, who: &Caller, file: &str, now: i64, not_after: i64) -> (String, i64) {
    let ticket = FileTicket {
        file: file.to_owned(),
        vo: who.id.vo.clone(),
        vo_id: who.id.vo_id.clone(),
        holder: who.id.key_hash,
        issued: now,
        not_after,
    };
    (ticket.sign(&app.signing_key), not_after)
}

/// The hot path: membership, entry, version and wrapped key in one
/// query (so the caller is [`Verified`], and admitted here).
pub(super) async fn get_version(
    State(app): State<Arc<App>>,
    Authenticated(Verified(who)): Authenticated<Verified>,
    body: Body<VersionRequest>,
) -> ApiResult<Json<GetAnswer>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    acting_for(&who, &path)?;
    let recipient = who.recipient();
    let found = app
        .store
        .entry_with_version(
            path.as_str(),
            req.version,
            &recipient,
            &who.id.vo,
            &who.id.vo_id,
        )
        .await?;
    let Some((e, v, wrapped, member, acl)) = found else {
        check_member(&app, &who).await?;
        return Err(ApiError::not_found(format!("no such file: {path}")));
    };
    admit(&app, &who, member).await?;
    maintenance_read(&who, &e)?;
    let have = rights_with(&who, &e, &acl);
    if !have.contains(Rights::READ) {
        tracing::info!(%path, by = %recipient, "get refused");
        return Err(ApiError::forbidden(format!(
            "read right on {path} is needed; you ({recipient}) have {have}"
        )));
    }
    if e.kind != Kind::File {
        return Err(ApiError::bad_request(format!("{path} is a directory")));
    }
    let Some(v) = v else {
        return Err(ApiError::not_found(match req.version {
            Some(n) => format!("{path} has no version {n}"),
            None => format!("{path} has no version yet"),
        }));
    };
    // WRITE and MANAGE capabilities are for those who may change the
    // file: with a MANAGE capability a reader could release (DECR) or
    // shorten the allocations. Either view is signed as served.
    let view = if have.contains(Rights::WRITE) {
        View::Writer
    } else {
        View::Reader
    };
    let exnode = {
        let doc = v.exnode;
        let (app, file, version) = (app.clone(), e.id.clone(), v.version);
        heavy(doc.len(), move || {
            signed_view(&app, &doc, view, file, version)
        })
        .await?
        .map_err(|why| {
            tracing::error!(%path, version = v.version, %why, "stored exNode does not parse");
            ApiError::internal(format!("the stored exNode of {path} is unreadable"))
        })?
    };
    let (ticket, not_after) = sign_ticket(&app, &who, &e.id);
    Ok(Json(GetAnswer {
        path: e.path,
        id: e.id,
        version: v.version,
        current_version: e.current_version,
        size: v.size,
        stored: v.stored,
        exnode,
        key_id: v.key_id,
        wrapped_key: wrapped.filter(|_| !who.maintenance_only()),
        ticket,
        ticket_not_after: not_after,
        rights: have.to_string(),
    }))
}

/// Most bytes of signed exNodes kept for reuse (a parse and a signature
/// each saved); past it the cache starts afresh.
const SIGNED_CACHE_BYTES: usize = 64 << 20;

/// Signed exNodes recently served, by (file, version, view), each with
/// SHA-256 of the stored exNode it was made from: a hit is used only for
/// the same stored bytes (a file UUID can come back, with other
/// allocations, when an exNode file is imported again after a delete).
#[derive(Default)]
pub struct SignedCache {
    entries: std::collections::HashMap<SignedKey, ([u8; 32], Arc<str>)>,
    bytes: usize,
}

/// A signed view's key: file, version, view.
type SignedKey = (String, u64, View);

impl SignedCache {
    fn get(&self, key: &SignedKey, stored: &[u8; 32]) -> Option<Arc<str>> {
        self.entries
            .get(key)
            .filter(|(h, _)| h == stored)
            .map(|(_, doc)| doc.clone())
    }

    fn put(&mut self, key: SignedKey, stored: [u8; 32], doc: Arc<str>) {
        if doc.len() > SIGNED_CACHE_BYTES / 4 {
            return;
        }
        if self.bytes + doc.len() > SIGNED_CACHE_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += doc.len();
        if let Some((_, old)) = self.entries.insert(key, (stored, doc)) {
            self.bytes -= old.len();
        }
    }
}

/// Which capabilities a get serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum View {
    /// All of them (write right on the file).
    Writer,
    /// The read capabilities only.
    Reader,
}

/// [`served`], reused from [`App::signed`] while the stored exNode is the
/// same (a version never changes; signing a large one costs a parse).
fn signed_view(
    app: &App,
    doc: &str,
    view: View,
    file: String,
    version: u64,
) -> Result<String, String> {
    let mut stored = [0u8; 32];
    stored.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, doc.as_bytes()).as_ref());
    let key = (file, version, view);
    if let Some(hit) = app.signed.lock().ok().and_then(|c| c.get(&key, &stored)) {
        return Ok(hit.to_string());
    }
    let signed = served(app, doc, view, &key.0, version, ibp_auth::unix_now())?;
    if let Ok(mut cache) = app.signed.lock() {
        cache.put(key, stored, Arc::from(signed.as_str()));
    }
    Ok(signed)
}

/// A stored exNode as served: the caller's view of it, signed with the
/// manager's key for its file, version and the time `now`
/// (`exnode::signature`, docs/identity.md "Signed exNodes").
fn served(
    app: &App,
    doc: &str,
    view: View,
    file: &str,
    version: u64,
    now: i64,
) -> Result<String, String> {
    let mut ex = exnode::from_xml(doc.as_bytes()).map_err(|e| e.to_string())?;
    if view == View::Reader {
        for m in &mut ex.mappings {
            m.write = None;
            m.manage = None;
        }
    }
    // The row's file and version are what the signature vouches for; a put
    // stores them in the exNode, so they agree.
    let uuid = uuid::Uuid::parse_str(file).map_err(|e| format!("file id {file:?}: {e}"))?;
    if ex.file != Some(uuid) || ex.version != version {
        return Err(format!(
            "the exNode names file {:?} version {}, its row file {file} version {version}",
            ex.file, ex.version
        ));
    }
    exnode::signature::sign(ex, &app.signing_key, now).map_err(|e| e.to_string())
}

pub(super) async fn ticket(
    State(app): State<Arc<App>>,
    Authenticated(AnyScope(who)): Authenticated<AnyScope>,
    body: Body<PathRequest>,
) -> ApiResult<Json<Ticket>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::READ).await?;
    if e.kind != Kind::File {
        return Err(ApiError::bad_request(format!("{path} is a directory")));
    }
    let (ticket, not_after) = sign_ticket(&app, &who, &e.id);
    Ok(Json(Ticket {
        path: e.path,
        id: e.id,
        ticket,
        ticket_not_after: not_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_cache_serves_only_the_same_stored_exnode_and_stays_bounded() {
        let mut c = SignedCache::default();
        let key = ("f".to_owned(), 1, View::Reader);
        c.put(key.clone(), [1; 32], Arc::from("signed one"));
        assert_eq!(c.get(&key, &[1; 32]).as_deref(), Some("signed one"));
        // Another stored exNode under the same file and version: a miss.
        assert_eq!(c.get(&key, &[2; 32]), None);
        // The other view is another entry.
        assert_eq!(c.get(&("f".to_owned(), 1, View::Writer), &[1; 32]), None);
        // Replacing an entry does not count its bytes twice.
        c.put(key.clone(), [2; 32], Arc::from("signed two"));
        assert_eq!(c.bytes, "signed two".len());
        // Past the budget the cache starts afresh; a document over a
        // quarter of it is not kept.
        let big: Arc<str> = Arc::from("x".repeat(SIGNED_CACHE_BYTES / 4 - 1).as_str());
        for v in 2..6 {
            c.put(("f".to_owned(), v, View::Reader), [0; 32], big.clone());
            assert!(c.bytes <= SIGNED_CACHE_BYTES);
        }
        assert_eq!(c.get(&key, &[2; 32]), None, "cleared when full");
        let huge: Arc<str> = Arc::from("x".repeat(SIGNED_CACHE_BYTES / 4 + 1).as_str());
        c.put(("g".to_owned(), 1, View::Reader), [0; 32], huge);
        assert_eq!(c.get(&("g".to_owned(), 1, View::Reader), &[0; 32]), None);
    }
}
