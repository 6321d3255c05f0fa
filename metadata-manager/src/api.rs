//! The metadata manager's HTTPS API: JSON over mutual TLS; errors are
//! `{"error": "..."}`. Paths travel in request bodies (never in URLs), so
//! any UTF-8 name works without escaping. The full reference is
//! docs/metadata-manager.md.
//!
//! Every request is authenticated by the caller's proxy chain and VO
//! attributes ([`ibp_auth::Identity`]); identity is (VO, VO ID), never a
//! certificate name. A member a VO admin removed is refused everywhere, so
//! removal takes effect at the caller's next request (and tickets already
//! issued expire within `ticket_lifetime`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use ibp_auth::tokens::FileTicket;
use ibp_auth::{Identity, TrustStore};
use ibp_https::PeerChain;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::acl::{effective, Entry, EntryJson, Principal, Rights};
use crate::names::{is_identifier, is_member_id, NsPath};
use crate::store::{EntryRow, Kind, NewVersion, Store, StoreError};

/// Request bodies at most this long skip the body budget (their memory is
/// bounded by the connection limit).
pub const SMALL_BODY: u64 = 64 << 10;

/// (file, VO, VO ID, holder key hash).
pub type TicketKey = (String, String, String, [u8; 32]);
/// Most tickets kept for reuse.
pub const TICKET_CACHE: usize = 100_000;
/// Most entries in one ACL list.
pub const MAX_ACL: usize = 256;
/// Most wrapped keys sent with one version.
pub const MAX_WRAPPED: usize = 256;
/// Longest wrapped key (text).
pub const MAX_WRAPPED_LEN: usize = 4096;
/// Default and largest page of a listing.
pub const LIST_DEFAULT: u32 = 1000;
pub const LIST_MAX: u32 = 10_000;

/// Everything the handlers share.
pub struct App {
    pub store: Store,
    pub trust: Arc<TrustStore>,
    /// Verified proxy chains (a client sends the same chain with every
    /// request; membership and rights are still checked every time).
    pub identities: ibp_auth::cache::IdentityCache,
    pub signing_key: Ed25519KeyPair,
    pub ticket_lifetime: Duration,
    pub max_exnode: usize,
    pub admin_group: String,
    /// Tickets recently signed, by (file, VO, VO ID, holder key hash).
    pub tickets: Mutex<HashMap<TicketKey, (String, i64)>>,
    /// Groups already recorded by this process (saves a write per request).
    pub groups_seen: Mutex<HashSet<(String, String, String)>>,
    /// Room for large request bodies, in KiB (`max_buffered_bodies`).
    pub bodies: BodyBudget,
}

/// The budget of large request bodies read and processed at once: a
/// semaphore of KiB, how long a request waits for room, and what each user
/// holds (a user who holds half of it is refused more).
pub struct BodyBudget {
    room: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
    wait: Duration,
    held: Mutex<HashMap<(String, String), u32>>,
}

impl BodyBudget {
    pub fn new(bytes: u64, wait: Duration) -> BodyBudget {
        let total_kib = u32::try_from(bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        BodyBudget {
            room: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
            wait,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// KiB free now (for tests and logs).
    pub fn available_kib(&self) -> usize {
        self.room.available_permits()
    }
}

/// A user's share of the body budget, returned when dropped.
struct Held<'a> {
    budget: &'a BodyBudget,
    key: (String, String),
    kib: u32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.budget.held.lock() {
            if let Some(v) = m.get_mut(&self.key) {
                *v = v.saturating_sub(self.kib);
                if *v == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// An error answer: status, a message for the client and, for some
/// errors, a field that says more (`quota`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    detail: Option<(&'static str, Value)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            detail: None,
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some((k, v)) = self.detail {
            body[k] = v;
        }
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("2"),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of an oversized body is never read, so the
            // connection cannot carry another request: say so, or a
            // keep-alive client reuses it and its next request fails.
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Refused(m) => ApiError::bad(m),
            StoreError::Quota(q) => {
                tracing::info!(vo = %q.vo, owner = %q.owner, limit = q.limit, max = q.max, used = q.used, request = q.request, "quota refused a change");
                ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: q.to_string(),
                    detail: Some((
                        "quota",
                        json!({
                            "limit": q.limit, "vo": q.vo, "owner": q.owner,
                            "max": q.max, "used": q.used, "request": q.request,
                        }),
                    )),
                }
            }
            StoreError::Database(_) | StoreError::Invalid(_) => {
                tracing::error!(error = %e, "database operation failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        // A body over the size limit is 413, like an exNode over
        // max_exnode; every other malformed body is 400.
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad request body: {}", e.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Body<T> = Result<Json<T>, JsonRejection>;

/// The largest request body accepted: a put carries an exNode as a JSON
/// string (escaping can double it).
pub fn body_limit(max_exnode: usize) -> usize {
    max_exnode.saturating_mul(2).saturating_add(1 << 20)
}

pub fn router(app: Arc<App>) -> Router {
    let body_limit = body_limit(app.max_exnode);
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/stat", post(stat))
        .route("/v1/list", post(list))
        .route("/v1/mkdir", post(mkdir))
        .route("/v1/put", post(put_version))
        .route("/v1/get", post(get_version))
        .route("/v1/ticket", post(ticket))
        .route("/v1/move", post(move_entry))
        .route("/v1/delete", post(delete))
        .route("/v1/acl/get", post(acl_get))
        .route("/v1/acl/set", post(acl_set))
        .route("/v1/usage", post(usage))
        .route("/v1/keys/me", put(key_register))
        .route("/v1/keys/lookup", post(key_lookup))
        .route("/v1/keys/add", post(key_add))
        .route("/v1/keys/remove", post(key_remove))
        .route("/v1/keys/escrow", post(key_escrow))
        .route("/v1/vos/:vo/escrow", put(escrow_set))
        .route("/v1/vos/:vo/members", get(members_list).post(members_add))
        .route("/v1/vos/:vo/members/remove", post(members_remove))
        .route("/v1/vos/:vo/members/restore", post(members_restore))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            body_budget,
        ))
        .with_state(app)
}

/// Holds a large request (a body over [`SMALL_BODY`], or of unknown
/// length) until its bytes fit in `max_buffered_bodies` with everything
/// else being read and processed, for the whole request: so that many
/// concurrent puts cannot take the manager's memory. Only a member who may
/// use the manager queues (others are refused before their body is read);
/// a user who already holds half of the budget gets 503 at once (one
/// member cannot take it all); a request that finds no room within
/// `buffered_body_wait` gets 503 and `Retry-After`.
async fn body_budget(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    let length = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = body_limit(app.max_exnode) as u64;
    let bytes = match length {
        Some(n) if n <= SMALL_BODY => return next.run(req).await,
        // Refused unread (413) by the body limit.
        Some(n) if n > limit => return next.run(req).await,
        Some(n) => n,
        None if !req.headers().contains_key(TRANSFER_ENCODING) => return next.run(req).await,
        None => limit,
    };
    let peer = req
        .extensions()
        .get::<PeerChain>()
        .cloned()
        .unwrap_or(PeerChain(None));
    let who = match caller(&app, &peer).await {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let budget = &app.bodies;
    let kib = u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .min(budget.total_kib);
    let key = (who.id.vo.clone(), who.id.vo_id.clone());
    let held = {
        let Ok(mut m) = budget.held.lock() else {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                .into_response();
        };
        let mine = m.entry(key.clone()).or_default();
        if *mine > 0 && *mine >= budget.total_kib / 2 {
            let have = *mine;
            drop(m);
            tracing::info!(vo = %key.0, vo_id = %key.1, held_kib = have, request_kib = kib, "large request refused: the user's share of max_buffered_bodies is in use");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "busy: your requests already hold {have} KiB of the {} KiB of request bodies this metadata manager processes at once (max_buffered_bodies; one user may hold half); retry when they are done",
                    budget.total_kib
                ),
            )
            .into_response();
        }
        *mine += kib;
        Held { budget, key, kib }
    };
    let permit =
        tokio::time::timeout(budget.wait, budget.room.clone().acquire_many_owned(kib)).await;
    let Ok(Ok(permit)) = permit else {
        tracing::warn!(vo = %held.key.0, vo_id = %held.key.1, request_kib = kib, "large request refused: no room under max_buffered_bodies in time");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: {} KiB of request bodies are being processed (max_buffered_bodies = {} KiB) and this request ({bytes} bytes) found no room within {:?}; retry shortly",
                budget.total_kib as usize - budget.room.available_permits().min(budget.total_kib as usize),
                budget.total_kib,
                budget.wait
            ),
        )
        .into_response();
    };
    tracing::debug!(vo = %held.key.0, vo_id = %held.key.1, kib, free_kib = budget.room.available_permits(), "large request admitted under max_buffered_bodies");
    let answer = next.run(req).await;
    drop(permit);
    drop(held);
    answer
}

/// A verified caller.
struct Caller {
    id: Identity,
    /// In the admin group of their VO.
    admin: bool,
}

impl Caller {
    fn principal(&self) -> Principal {
        Principal::user_of(&self.id)
    }
    fn recipient(&self) -> String {
        self.principal().to_string()
    }
    fn admin_of(&self, vo: &str) -> bool {
        self.admin && self.id.vo == vo
    }
}

/// The caller's verified identity: 401 without a client certificate, 403
/// when the attributes do not verify or a VO admin removed the member.
/// Records a member (and their groups) on first contact.
async fn caller(app: &App, peer: &PeerChain) -> ApiResult<Caller> {
    let who = verified(app, peer).await?;
    let member = app.store.member(&who.id.vo, &who.id.vo_id).await?;
    admit(
        app,
        &who,
        member.map(|m| m.removed_at.map(|_| m.removed_by)),
    )
    .await?;
    Ok(who)
}

/// Refuses a member a VO admin removed; records one seen for the first
/// time. `member`: `None` unknown, `Some(None)` a member, `Some(Some(by))`
/// removed (by whom, if recorded).
async fn admit(app: &App, who: &Caller, member: Option<Option<Option<String>>>) -> ApiResult<()> {
    let id = &who.id;
    match member {
        Some(Some(by)) => {
            tracing::warn!(vo = %id.vo, vo_id = %id.vo_id, "refused a removed member");
            Err(ApiError::forbidden(format!(
                "VO {} removed member {} from this metadata manager (by {}); ask a VO admin",
                id.vo,
                id.vo_id,
                by.as_deref().unwrap_or("an admin")
            )))
        }
        Some(None) => Ok(()),
        None => {
            app.store.add_member(&id.vo, &id.vo_id, &id.subject).await?;
            tracing::info!(vo = %id.vo, vo_id = %id.vo_id, subject = %id.subject, "new member");
            Ok(())
        }
    }
}

/// The caller's verified identity (not yet checked against removals).
async fn verified(app: &App, peer: &PeerChain) -> ApiResult<Caller> {
    let chain = peer.0.as_deref();
    let id = match app
        .identities
        .peer_identity(chain, &app.trust, ibp_auth::unix_now())
    {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a proxy credential with VO attributes is required (client certificate)",
            ))
        }
        Err(e) => return Err(ApiError::forbidden(format!("credential refused: {e}"))),
    };
    // Principals are `user:ID@VO`: an ID outside the identifier alphabet
    // could be stored as an owner but never parsed back (every later read
    // of the entry, and listings of its directory, would fail).
    if !is_identifier(&id.vo) || !is_member_id(&id.vo_id) {
        return Err(ApiError::forbidden(format!(
            "credential refused: VO {:?} / VO ID {:?} cannot be used here (VO: letters, digits, '.', '_', '-'; VO ID also ':'; at most 128)",
            id.vo, id.vo_id
        )));
    }
    // Groups whose ID could not be named in an ACL are not recorded.
    for g in id.groups.iter().filter(|g| is_member_id(&g.id)) {
        let key = (id.vo.clone(), g.id.clone(), g.name.clone());
        let new = app
            .groups_seen
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(true);
        if new {
            if let Err(e) = app.store.note_group(&id.vo, &g.id, &g.name).await {
                if let Ok(mut s) = app.groups_seen.lock() {
                    s.remove(&key);
                }
                return Err(e.into());
            }
        }
    }
    let admin = id.groups.iter().any(|g| g.name == app.admin_group);
    Ok(Caller { id, admin })
}

fn parse_path(raw: &str) -> ApiResult<NsPath> {
    NsPath::parse(raw).map_err(ApiError::bad)
}

/// The caller's rights on an entry.
async fn rights_on(app: &App, who: &Caller, e: &EntryRow) -> ApiResult<Rights> {
    let acl = app.store.acl(&e.id, false).await?;
    Ok(rights_with(who, e, &acl))
}

fn rights_with(who: &Caller, e: &EntryRow, acl: &[Entry]) -> Rights {
    match &e.owner {
        Some(owner) => effective(&who.id, owner, &e.vo, acl, who.admin),
        None => {
            // A VO root has no owner: its ACL, plus admin for VO admins.
            let nobody = Principal::User {
                vo: String::new(),
                id: String::new(),
            };
            effective(&who.id, &nobody, &e.vo, acl, who.admin)
        }
    }
}

fn right_name(r: Rights) -> &'static str {
    if r == Rights::READ {
        "read"
    } else if r == Rights::WRITE {
        "write"
    } else if r == Rights::DELETE {
        "delete"
    } else {
        "admin"
    }
}

/// The entry at `path`, with the caller holding `need` on it: 404 when it
/// does not exist, 403 naming the right when it is refused. (Names are not
/// secret from VO members: the VO root is listable by all of them.)
async fn entry_with(app: &App, who: &Caller, path: &NsPath, need: Rights) -> ApiResult<EntryRow> {
    if path.is_root() && path.vo() == who.id.vo {
        app.store.ensure_root(path.vo()).await?;
    }
    let Some(e) = app.store.entry(path.as_str()).await? else {
        return Err(ApiError::not_found(format!(
            "no such file or directory: {path}"
        )));
    };
    let have = rights_on(app, who, &e).await?;
    if !have.contains(need) {
        return Err(ApiError::forbidden(format!(
            "{} right on {path} is needed; you ({}) have {have}",
            right_name(need),
            who.principal()
        )));
    }
    Ok(e)
}

/// The parent directory of `path`, with the caller holding `need` on it.
async fn parent_with(app: &App, who: &Caller, path: &NsPath, need: Rights) -> ApiResult<EntryRow> {
    let parent = path
        .parent()
        .ok_or_else(|| ApiError::bad(format!("{path} is a VO root")))?;
    let e = entry_with(app, who, &parent, need).await?;
    if e.kind != Kind::Dir {
        return Err(ApiError::bad(format!("{parent} is not a directory")));
    }
    Ok(e)
}

#[derive(Serialize)]
struct EntryView {
    path: String,
    kind: &'static str,
    /// File UUID (files) or directory id.
    id: String,
    owner: Option<String>,
    version: u64,
    size: u64,
    created_at: i64,
    updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rights: Option<String>,
}

fn view(e: &EntryRow) -> EntryView {
    EntryView {
        path: e.path.clone(),
        kind: match e.kind {
            Kind::Dir => "dir",
            Kind::File => "file",
        },
        id: e.id.clone(),
        owner: e.owner.as_ref().map(|o| o.to_string()),
        version: e.current_version,
        size: e.size,
        created_at: e.created_at,
        updated_at: e.updated_at,
        versions: None,
        stored: None,
        rights: None,
    }
}

async fn whoami(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
) -> ApiResult<Json<Value>> {
    let who = caller(&app, &peer).await?;
    let member = app.store.member(&who.id.vo, &who.id.vo_id).await?;
    Ok(Json(json!({
        "vo": who.id.vo,
        "vo_id": who.id.vo_id,
        "principal": who.principal().to_string(),
        "groups": who.id.groups.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
        "subject": who.id.subject,
        "admin": who.admin,
        "public_key": member.and_then(|m| m.public_key),
        "credential_not_after": who.id.not_after,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathReq {
    path: String,
}

async fn stat(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<PathReq>,
) -> ApiResult<Json<EntryView>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    if path.is_root() && path.vo() == who.id.vo {
        app.store.ensure_root(path.vo()).await?;
    }
    let Some(e) = app.store.entry(path.as_str()).await? else {
        return Err(ApiError::not_found(format!(
            "no such file or directory: {path}"
        )));
    };
    let mine = rights_on(&app, &who, &e).await?;
    // Stat needs read on the entry, or on its directory (as a listing shows it).
    if !mine.contains(Rights::READ) {
        let listed = match path.parent() {
            Some(p) => match app.store.entry(p.as_str()).await? {
                Some(pe) => rights_on(&app, &who, &pe).await?.contains(Rights::READ),
                None => false,
            },
            None => false,
        };
        if !listed {
            return Err(ApiError::forbidden(format!(
                "read right on {path} or its directory is needed; you ({}) have {mine}",
                who.principal()
            )));
        }
    }
    let mut v = view(&e);
    if e.kind == Kind::File {
        let (n, stored) = app.store.version_totals(&e.id).await?;
        v.versions = Some(n);
        v.stored = Some(stored);
    }
    v.rights = Some(mine.to_string());
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListReq {
    path: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn list(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<ListReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    let dir = entry_with(&app, &who, &path, Rights::READ).await?;
    if dir.kind != Kind::Dir {
        return Ok(Json(
            json!({ "path": path.as_str(), "entries": [view(&dir)], "next_after": null }),
        ));
    }
    let limit = req.limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX);
    if let Some(a) = &req.after {
        if a.contains('/') {
            return Err(ApiError::bad("`after` is a name, not a path"));
        }
    }
    let rows = app
        .store
        .list(path.as_str(), req.after.as_deref(), limit)
        .await?;
    let next = if rows.len() == limit as usize {
        rows.last()
            .and_then(|r| r.path.rsplit('/').next())
            .map(str::to_owned)
    } else {
        None
    };
    let entries: Vec<EntryView> = rows.iter().map(view).collect();
    Ok(Json(
        json!({ "path": path.as_str(), "entries": entries, "next_after": next }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MkdirReq {
    path: String,
    #[serde(default)]
    parents: bool,
}

async fn mkdir(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<MkdirReq>,
) -> ApiResult<Json<EntryView>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    if path.is_root() {
        return Err(ApiError::bad(format!(
            "{path} is a VO root; it exists as soon as a member of the VO uses it"
        )));
    }
    let mut todo = Vec::new();
    if req.parents {
        for a in path.ancestors().into_iter().skip(1) {
            if app.store.entry(a.as_str()).await?.is_none() {
                todo.push(a);
            }
        }
    }
    todo.push(path.clone());
    let mut last = None;
    for p in todo {
        parent_with(&app, &who, &p, Rights::WRITE).await?;
        match app.store.mkdir(&p, &who.principal()).await {
            Ok(e) => {
                tracing::info!(path = %p, by = %who.principal(), "mkdir");
                last = Some(e);
            }
            Err(StoreError::Conflict(_)) if req.parents => {
                match app.store.entry(p.as_str()).await? {
                    Some(e) if e.kind == Kind::Dir => last = Some(e),
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            format!("{p} exists and is not a directory"),
                        ))
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let e = last.ok_or_else(|| ApiError::bad("nothing to create"))?;
    Ok(Json(view(&e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedKey {
    /// `user:ID@VO` or `escrow:VO`.
    recipient: String,
    wrapped: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutReq {
    path: String,
    /// The version the upload replaces; 0 creates the file.
    base_version: u64,
    /// The exNode document (XML).
    exnode: String,
    #[serde(default)]
    wrapped_keys: Vec<WrappedKey>,
}

/// A recipient of wrapped keys: `user:ID@VO` or `escrow:VO`.
fn check_recipient(r: &str) -> ApiResult<()> {
    if let Some(vo) = r.strip_prefix("escrow:") {
        if is_identifier(vo) {
            return Ok(());
        }
    } else if let Ok(Principal::User { .. }) = Principal::parse(r) {
        return Ok(());
    }
    Err(ApiError::bad(format!(
        "bad key recipient {r:?}: user:VOID@VO or escrow:VO"
    )))
}

fn check_wrapped(w: &str) -> ApiResult<()> {
    if w.is_empty() || w.len() > MAX_WRAPPED_LEN || !w.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::bad(format!(
            "a wrapped key must be 1-{MAX_WRAPPED_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

async fn put_version(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<PutReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    if path.is_root() {
        return Err(ApiError::bad(format!("{path} is a VO root, not a file")));
    }
    if req.exnode.len() > app.max_exnode {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "exNode of {} bytes; this metadata manager accepts at most {}",
                req.exnode.len(),
                app.max_exnode
            ),
        ));
    }
    // Memory: the document is not needed once parsed (the canonical form
    // is stored), nor the model once encoded; a put holds as few copies
    // of a large exNode at once as it can.
    let PutReq {
        path: _,
        base_version,
        exnode: doc,
        wrapped_keys,
    } = req;
    let mut ex = heavy(doc.len(), move || {
        let ex = exnode::from_xml(doc.as_bytes()).map_err(|e| e.to_string())?;
        drop(doc);
        ex.validate().map_err(|e| e.to_string())?;
        Ok::<_, String>(ex)
    })
    .await?
    .map_err(|e| ApiError::bad(format!("exNode refused: {e}")))?;
    let Some(file) = ex.file else {
        return Err(ApiError::bad(
            "exNode refused: it has no file UUID (file_uuid), to which the depots bind its blocks",
        ));
    };
    if wrapped_keys.len() > MAX_WRAPPED {
        return Err(ApiError::bad(format!(
            "more than {MAX_WRAPPED} wrapped keys"
        )));
    }
    let mut wrapped = Vec::with_capacity(wrapped_keys.len());
    for k in &wrapped_keys {
        check_recipient(&k.recipient)?;
        check_wrapped(&k.wrapped)?;
        if wrapped
            .iter()
            .any(|(r, _): &(String, String)| *r == k.recipient)
        {
            return Err(ApiError::bad(format!(
                "two wrapped keys for {}",
                k.recipient
            )));
        }
        wrapped.push((k.recipient.clone(), k.wrapped.clone()));
    }
    if ex.encryption.is_some() && !wrapped.iter().any(|(r, _)| *r == who.recipient()) {
        return Err(ApiError::bad(format!(
            "the exNode is encrypted but no data key is wrapped for you ({}): the version could not be read back",
            who.recipient()
        )));
    }
    let file = file.to_string();
    if base_version == 0 {
        if path.vo() == who.id.vo {
            app.store.ensure_root(path.vo()).await?;
        }
        parent_with(&app, &who, &path, Rights::WRITE).await?;
    } else {
        let e = entry_with(&app, &who, &path, Rights::WRITE).await?;
        if e.kind != Kind::File {
            return Err(ApiError::bad(format!("{path} is a directory")));
        }
        if e.id != file {
            return Err(ApiError::bad(format!(
                "the exNode is for file {file} but {path} is file {}; a new version keeps the file's UUID",
                e.id
            )));
        }
    }
    let next = base_version.saturating_add(1);
    ex.version = next;
    let key_id = ex.encryption.as_ref().map(|e| e.key_id.clone());
    let (size, stored) = (ex.size, ex.stored_bytes());
    let canonical = heavy(ex.mappings.len().saturating_mul(1024), move || {
        exnode::to_xml(&ex)
    })
    .await?;
    let writer = who.principal();
    let version = app
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
        })
        .await?;
    tracing::info!(%path, %file, version, size, by = %writer, "put version");
    Ok(Json(json!({
        "path": path.as_str(),
        "id": file,
        "version": version,
        "size": size,
        "stored": stored,
    })))
}

/// Runs CPU-heavy work on an exNode of about `bytes` bytes: a large one
/// on the blocking pool, so that parsing or encoding it does not hold up
/// the async workers that serve every other connection.
async fn heavy<T, F>(bytes: usize, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if bytes as u64 <= SMALL_BODY {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "exNode work failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetReq {
    path: String,
    #[serde(default)]
    version: Option<u64>,
}

async fn get_version(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<GetReq>,
) -> ApiResult<Json<GetAnswer>> {
    let Json(req) = body?;
    // The hot path: membership, entry, version and wrapped key in one
    // query.
    let who = verified(&app, &peer).await?;
    let path = parse_path(&req.path)?;
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
        caller(&app, &peer).await?;
        return Err(ApiError::not_found(format!("no such file: {path}")));
    };
    admit(&app, &who, member).await?;
    let have = rights_with(&who, &e, &acl);
    if !have.contains(Rights::READ) {
        tracing::info!(%path, by = %recipient, "get refused");
        return Err(ApiError::forbidden(format!(
            "read right on {path} is needed; you ({recipient}) have {have}"
        )));
    }
    if e.kind != Kind::File {
        return Err(ApiError::bad(format!("{path} is a directory")));
    }
    let Some(v) = v else {
        return Err(ApiError::not_found(match req.version {
            Some(n) => format!("{path} has no version {n}"),
            None => format!("{path} has no version yet"),
        }));
    };
    // WRITE and MANAGE capabilities are for those who may change the
    // file: with a MANAGE capability a reader could release (DECR) or
    // shorten the allocations.
    let exnode =
        if have.contains(Rights::WRITE) {
            v.exnode
        } else {
            let doc = v.exnode;
            heavy(doc.len(), move || readers_view(&doc)).await?.map_err(|why| {
            tracing::error!(%path, version = v.version, %why, "stored exNode does not parse");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the stored exNode of {path} is unreadable"),
            )
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
        wrapped_key: wrapped,
        ticket,
        ticket_not_after: not_after,
        rights: have.to_string(),
    }))
}

/// An exNode as a reader sees it: the read capabilities only.
fn readers_view(doc: &str) -> Result<String, String> {
    let mut ex = exnode::from_xml(doc.as_bytes()).map_err(|e| e.to_string())?;
    for m in &mut ex.mappings {
        m.write = None;
        m.manage = None;
    }
    Ok(exnode::to_xml(&ex))
}

/// The answer of `get` (typed, so the exNode is moved, not copied, into
/// the response).
#[derive(Serialize)]
struct GetAnswer {
    path: String,
    id: String,
    version: u64,
    current_version: u64,
    size: u64,
    stored: u64,
    exnode: String,
    key_id: Option<String>,
    wrapped_key: Option<String>,
    ticket: String,
    ticket_not_after: i64,
    rights: String,
}

async fn ticket(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<PathReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::READ).await?;
    if e.kind != Kind::File {
        return Err(ApiError::bad(format!("{path} is a directory")));
    }
    let (ticket, not_after) = sign_ticket(&app, &who, &e.id);
    Ok(Json(
        json!({ "path": e.path, "id": e.id, "ticket": ticket, "ticket_not_after": not_after }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveReq {
    from: String,
    to: String,
}

async fn move_entry(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<MoveReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let from = parse_path(&req.from)?;
    let to = parse_path(&req.to)?;
    if from.is_root() || to.is_root() {
        return Err(ApiError::bad("a VO root cannot be moved or replaced"));
    }
    if from.vo() != to.vo() {
        return Err(ApiError::bad(format!(
            "{from} and {to} are in different VOs' trees; copy instead"
        )));
    }
    if to.is_within(&from) {
        return Err(ApiError::bad(format!("cannot move {from} into itself")));
    }
    entry_with(&app, &who, &from, Rights::DELETE).await?;
    parent_with(&app, &who, &to, Rights::WRITE).await?;
    app.store.move_entry(&from, &to).await?;
    tracing::info!(%from, %to, by = %who.principal(), "move");
    Ok(Json(json!({ "from": from.as_str(), "to": to.as_str() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteReq {
    path: String,
    /// Delete only this (non-current) version.
    #[serde(default)]
    version: Option<u64>,
}

async fn delete(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<DeleteReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    if path.is_root() {
        return Err(ApiError::bad(format!("{path} is a VO root")));
    }
    let e = entry_with(&app, &who, &path, Rights::DELETE).await?;
    let gone = app.store.delete(&e, req.version).await?;
    // Capabilities still used by a version that remains (a new version
    // made by augment or trim shares its predecessor's allocations) are
    // not the client's to release; nor is one listed twice.
    let mut keep: HashSet<String> = HashSet::new();
    if req.version.is_some() {
        for (_, doc) in app.store.exnodes(&e.id).await? {
            if let Ok(ex) = exnode::from_xml(doc.as_bytes()) {
                keep.extend(ex.manage_capabilities().into_iter().map(str::to_owned));
            }
        }
    }
    let mut released = Vec::with_capacity(gone.len());
    for (version, doc) in &gone {
        match exnode::from_xml(doc.as_bytes()) {
            Ok(ex) => {
                let mut manage = Vec::new();
                for c in ex.manage_capabilities() {
                    if keep.insert(c.to_owned()) {
                        manage.push(c);
                    }
                }
                released.push(json!({ "version": version, "manage": manage }));
            }
            Err(err) => {
                tracing::error!(%path, version, error = %err, "stored exNode does not parse");
                released
                    .push(json!({ "version": version, "manage": [], "error": err.to_string() }));
            }
        }
    }
    tracing::info!(%path, versions = gone.len(), by = %who.principal(), "delete");
    Ok(Json(json!({ "path": path.as_str(), "released": released })))
}

#[derive(Serialize)]
struct AclView {
    path: String,
    owner: Option<String>,
    access: Vec<EntryJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<Vec<EntryJson>>,
}

async fn acl_view(app: &App, e: &EntryRow) -> ApiResult<AclView> {
    let access = app.store.acl(&e.id, false).await?;
    let default = if e.kind == Kind::Dir {
        Some(
            app.store
                .acl(&e.id, true)
                .await?
                .iter()
                .map(EntryJson::from)
                .collect(),
        )
    } else {
        None
    };
    Ok(AclView {
        path: e.path.clone(),
        owner: e.owner.as_ref().map(|o| o.to_string()),
        access: access.iter().map(EntryJson::from).collect(),
        default,
    })
}

async fn acl_get(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<PathReq>,
) -> ApiResult<Json<AclView>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    Ok(Json(acl_view(&app, &e).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclSetReq {
    path: String,
    #[serde(default)]
    access: Option<Vec<EntryJson>>,
    #[serde(default)]
    default: Option<Vec<EntryJson>>,
}

/// Checks ACL entries: known users and groups only, no duplicates.
async fn resolve_acl(app: &App, list: &[EntryJson]) -> ApiResult<Vec<Entry>> {
    if list.len() > MAX_ACL {
        return Err(ApiError::bad(format!("more than {MAX_ACL} ACL entries")));
    }
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for j in list {
        let rights = Rights::parse(&j.rights).map_err(ApiError::bad)?;
        if rights.is_empty() {
            return Err(ApiError::bad(format!(
                "{}: an entry without rights grants nothing (rights only add up); leave it out",
                j.principal
            )));
        }
        let principal = match Principal::parse(&j.principal).map_err(ApiError::bad)? {
            Principal::User { vo, id } => {
                if app.store.member(&vo, &id).await?.is_none() {
                    return Err(ApiError::bad(format!(
                        "unknown user {id}@{vo}: no such member has used this metadata manager (they can run `lors whoami`, or a VO admin can add them)"
                    )));
                }
                Principal::User { vo, id }
            }
            Principal::Group { vo, id } => match app.store.group_id(&vo, &id).await? {
                Some(gid) => Principal::Group { vo, id: gid },
                None => {
                    return Err(ApiError::bad(format!(
                    "unknown group {id}@{vo}: no member of it has used this metadata manager yet"
                )))
                }
            },
            p @ Principal::Vo(_) => p,
        };
        if out.iter().any(|e| e.principal == principal) {
            return Err(ApiError::bad(format!("{principal} is listed twice")));
        }
        out.push(Entry { principal, rights });
    }
    Ok(out)
}

async fn acl_set(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<AclSetReq>,
) -> ApiResult<Json<AclView>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    if req.access.is_none() && req.default.is_none() {
        return Err(ApiError::bad("give `access` and/or `default` entries"));
    }
    if req.default.is_some() && e.kind != Kind::Dir {
        return Err(ApiError::bad(format!(
            "{path} is a file; only directories have default ACLs"
        )));
    }
    let access = match &req.access {
        Some(l) => Some(resolve_acl(&app, l).await?),
        None => None,
    };
    let default = match &req.default {
        Some(l) => Some(resolve_acl(&app, l).await?),
        None => None,
    };
    app.store
        .set_acl(&e.id, access.as_deref(), default.as_deref())
        .await?;
    tracing::info!(
        %path,
        by = %who.principal(),
        access = ?access.as_ref().map(|l| l.iter().map(|e| format!("{}={}", e.principal, e.rights)).collect::<Vec<_>>()),
        default = ?default.as_ref().map(|l| l.iter().map(|e| format!("{}={}", e.principal, e.rights)).collect::<Vec<_>>()),
        "ACL changed"
    );
    Ok(Json(acl_view(&app, &e).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageReq {
    #[serde(default)]
    vo: Option<String>,
}

async fn usage(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<UsageReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let vo = req.vo.unwrap_or_else(|| who.id.vo.clone());
    if !is_identifier(&vo) {
        return Err(ApiError::bad(format!("bad VO name {vo:?}")));
    }
    // A credential belongs to one VO: another VO's usage is none of its
    // business (not even whether that VO uses this manager).
    if vo != who.id.vo {
        return Err(ApiError::forbidden(format!(
            "usage of VO {vo} is shown to its members only; you ({}) are a member of VO {}",
            who.principal(),
            who.id.vo
        )));
    }
    let all = app.store.usage(&vo).await?;
    let held = app.store.vo_held(&vo).await?;
    let limits = app.store.limits();
    let me = who.principal().to_string();
    let admin = who.admin_of(&vo);
    let rows: Vec<Value> = all
        .iter()
        .filter(|u| admin || u.owner == me)
        .map(|u| {
            json!({
                "owner": u.owner, "files": u.files, "versions": u.versions,
                "logical": u.logical, "stored": u.stored,
                "entries": u.entries, "exnode_bytes": u.exnode_bytes,
            })
        })
        .collect();
    let mut out = json!({
        "vo": vo,
        "users": rows,
        "limits": {
            "user_entries": limits.user_entries,
            "user_exnode_bytes": limits.user_exnode_bytes,
            "vo_entries": limits.vo_entries,
            "vo_exnode_bytes": limits.vo_exnode_bytes,
        },
        "vo_used": { "entries": held.entries, "exnode_bytes": held.exnode_bytes },
    });
    if admin {
        let total = all.iter().fold((0u64, 0u64, 0u64, 0u64), |t, u| {
            (
                t.0 + u.files,
                t.1 + u.versions,
                t.2.saturating_add(u.logical),
                t.3.saturating_add(u.stored),
            )
        });
        out["total"] = json!({
            "files": total.0, "versions": total.1, "logical": total.2, "stored": total.3,
        });
    }
    Ok(Json(out))
}

/// A key-wrapping public key: `x25519 <base64 of 32 bytes>`.
fn check_public_key(k: &str) -> ApiResult<String> {
    let k = k.trim();
    let ok = k
        .strip_prefix("x25519 ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .is_some_and(|b| b.len() == 32);
    if ok {
        Ok(k.to_owned())
    } else {
        Err(ApiError::bad(
            "a public key is `x25519 <base64 of 32 bytes>`",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyReq {
    public_key: String,
}

async fn key_register(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<KeyReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let key = check_public_key(&req.public_key)?;
    app.store
        .set_public_key(&who.id.vo, &who.id.vo_id, &key)
        .await?;
    tracing::info!(by = %who.principal(), "registered a key-wrapping public key");
    Ok(Json(
        json!({ "principal": who.recipient(), "public_key": key }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupReq {
    /// `user:ID@VO` or `escrow:VO`.
    recipient: String,
}

async fn key_lookup(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<LookupReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    caller(&app, &peer).await?;
    check_recipient(&req.recipient)?;
    let key = if let Some(vo) = req.recipient.strip_prefix("escrow:") {
        app.store.escrow_key(vo).await?
    } else if let Ok(Principal::User { vo, id }) = Principal::parse(&req.recipient) {
        app.store.member(&vo, &id).await?.and_then(|m| m.public_key)
    } else {
        None
    };
    match key {
        Some(k) => Ok(Json(json!({ "recipient": req.recipient, "public_key": k }))),
        None => Err(ApiError::not_found(format!(
            "{} has no registered public key (`lors keys init` registers one)",
            req.recipient
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyAddReq {
    path: String,
    #[serde(default)]
    version: Option<u64>,
    recipient: String,
    wrapped: String,
}

async fn key_add(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<KeyAddReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    check_recipient(&req.recipient)?;
    check_wrapped(&req.wrapped)?;
    if let Ok(Principal::User { vo, id }) = Principal::parse(&req.recipient) {
        if app.store.member(&vo, &id).await?.is_none() {
            return Err(ApiError::bad(format!("unknown user {id}@{vo}")));
        }
    }
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    if e.kind != Kind::File {
        return Err(ApiError::bad(format!("{path} is a directory")));
    }
    let version = req.version.unwrap_or(e.current_version);
    app.store
        .put_wrapped(&e.id, version, &req.recipient, &req.wrapped)
        .await?;
    tracing::info!(%path, version, recipient = %req.recipient, by = %who.principal(), "wrapped key added");
    Ok(Json(
        json!({ "path": e.path, "version": version, "recipient": req.recipient }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRemoveReq {
    path: String,
    recipient: String,
}

async fn key_remove(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<KeyRemoveReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    check_recipient(&req.recipient)?;
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    let n = app.store.remove_wrapped(&e.id, &req.recipient).await?;
    tracing::info!(%path, recipient = %req.recipient, removed = n, by = %who.principal(), "wrapped keys removed");
    Ok(Json(
        json!({ "path": e.path, "recipient": req.recipient, "removed": n }),
    ))
}

async fn key_escrow(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    body: Body<GetReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    let path = parse_path(&req.path)?;
    if !who.admin_of(path.vo()) {
        return Err(ApiError::forbidden(format!(
            "escrowed keys of VO {}'s files are released to its admins (group {:?}) only",
            path.vo(),
            app.admin_group
        )));
    }
    let Some(e) = app.store.entry(path.as_str()).await? else {
        return Err(ApiError::not_found(format!("no such file: {path}")));
    };
    let version = req.version.unwrap_or(e.current_version);
    let recipient = format!("escrow:{}", path.vo());
    let wrapped = app.store.wrapped(&e.id, version, &recipient).await?;
    tracing::warn!(%path, version, by = %who.principal(), found = wrapped.is_some(), "escrowed key released");
    match wrapped {
        Some(w) => Ok(Json(
            json!({ "path": e.path, "id": e.id, "version": version, "recipient": recipient, "wrapped_key": w }),
        )),
        None => Err(ApiError::not_found(format!(
            "version {version} of {path} has no key wrapped for {recipient}"
        ))),
    }
}

fn admin_check(app: &App, who: &Caller, vo: &str) -> ApiResult<()> {
    if who.admin_of(vo) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "administering VO {vo} needs its group {:?}, which your attributes lack",
            app.admin_group
        )))
    }
}

async fn escrow_set(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    Path(vo): Path<String>,
    body: Body<KeyReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    admin_check(&app, &who, &vo)?;
    let key = check_public_key(&req.public_key)?;
    app.store
        .set_escrow_key(&vo, &key, &who.recipient())
        .await?;
    tracing::warn!(%vo, by = %who.principal(), "escrow public key set");
    Ok(Json(
        json!({ "recipient": format!("escrow:{vo}"), "public_key": key }),
    ))
}

async fn members_list(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    Path(vo): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = caller(&app, &peer).await?;
    admin_check(&app, &who, &vo)?;
    let members = app.store.members(&vo).await?;
    let rows: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "vo_id": m.vo_id, "subject": m.subject, "first_seen": m.first_seen,
                "has_public_key": m.public_key.is_some(),
                "removed_at": m.removed_at, "removed_by": m.removed_by,
            })
        })
        .collect();
    Ok(Json(json!({ "vo": vo, "members": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberReq {
    vo_id: String,
}

async fn members_add(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    Path(vo): Path<String>,
    body: Body<MemberReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    let who = caller(&app, &peer).await?;
    admin_check(&app, &who, &vo)?;
    if !is_member_id(&req.vo_id) {
        return Err(ApiError::bad(format!("bad VO ID {:?}", req.vo_id)));
    }
    app.store
        .add_member(&vo, &req.vo_id, "(added by a VO admin)")
        .await?;
    tracing::info!(%vo, vo_id = %req.vo_id, by = %who.principal(), "member added");
    Ok(Json(json!({ "vo": vo, "vo_id": req.vo_id })))
}

async fn member_state(
    app: &App,
    peer: &PeerChain,
    vo: &str,
    req: MemberReq,
    remove: bool,
) -> ApiResult<Json<Value>> {
    let who = caller(app, peer).await?;
    admin_check(app, &who, vo)?;
    let by = who.recipient();
    if remove && req.vo_id == who.id.vo_id {
        return Err(ApiError::bad("you cannot remove yourself"));
    }
    let found = app
        .store
        .set_removed(vo, &req.vo_id, remove.then_some(by.as_str()))
        .await?;
    if !found {
        return Err(ApiError::not_found(format!(
            "unknown member {}@{vo}",
            req.vo_id
        )));
    }
    tracing::warn!(%vo, vo_id = %req.vo_id, by = %by, removed = remove, "membership changed");
    Ok(Json(
        json!({ "vo": vo, "vo_id": req.vo_id, "removed": remove }),
    ))
}

async fn members_remove(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    Path(vo): Path<String>,
    body: Body<MemberReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    member_state(&app, &peer, &vo, req, true).await
}

async fn members_restore(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerChain>,
    Path(vo): Path<String>,
    body: Body<MemberReq>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body?;
    member_state(&app, &peer, &vo, req, false).await
}
