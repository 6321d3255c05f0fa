//! The L-Bone's HTTPS API (JSON; errors are `{"error": "..."}`):
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST /v1/query` | VO members | depots for an allocation, each with a grant |
//! | `POST /v1/copy-grants` | VO members | grants for targets of a secure COPY, held by the source depot's key |
//! | `GET /v1/vos/{vo}/depots` | the VO's admins | the VO's registrations with status |
//! | `POST /v1/vos/{vo}/depots` | the VO's admins | register a depot |
//! | `GET /v1/vos/{vo}/depots/{name}` | the VO's admins | one registration |
//! | `PATCH /v1/vos/{vo}/depots/{name}` | the VO's admins | change a registration |
//! | `DELETE /v1/vos/{vo}/depots/{name}` | the VO's admins | remove a registration |
//! | `GET /status`, `GET /status.json` | anyone | operators' status page |
//!
//! Members and admins are told apart only by the verified VO attributes of
//! their proxy ([`ibp_auth::Identity`], a handler's
//! `Authenticated<Identity>`): the VO, and for admins the group named by
//! `admin_group`. The request and answer types are the `lbone_api`
//! crate's, shared with the clients. See docs/lbone.md.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ibp_auth::tokens::DepotGrant;
use ibp_auth::{Identity, TrustStore};
pub use ibp_https::ApiError;
use ibp_https::{Authenticate, Authenticated, PeerChain, RemoteAddr};
pub use lbone_api::{
    DepotChanges, DepotRemoved, MemberRemoval, NewDepot, Offer, OfferedDepot, QueryRequest,
    RemovedMember, RemovedMembers,
};
use ring::signature::Ed25519KeyPair;
use serde::Serialize;
use tokio::sync::Notify;

use crate::geo::Location;
use crate::liveness::Liveness;
use crate::select::{suitable, Need};
use crate::store::{Changes, Registration, Store, StoreError};
use crate::views::{address, grant_address, DepotView, StatusPage};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Most depots one query returns.
pub const MAX_COUNT: u32 = 1000;
/// Longest depot name.
pub const MAX_NAME: usize = 64;
/// Longest place name.
pub const MAX_PLACE: usize = 128;

/// Everything the handlers share.
pub struct App {
    pub store: Store,
    /// Replaced on SIGHUP (`server::apply_reload`).
    pub trust: ibp_https::Current<TrustStore>,
    pub signing_key: Ed25519KeyPair,
    pub liveness: Liveness,
    pub grant_lifetime: Duration,
    pub admin_group: String,
    /// Starts a poll round at once (after a registration changes).
    pub poll_now: Arc<Notify>,
    /// How the L-Bone reaches depots' secure ports (the poller's client
    /// configuration): a COPY grant's holder is the key a source depot
    /// presents there.
    pub depot_tls: Option<Arc<ibp_https::Current<rustls::ClientConfig>>>,
    /// Source depots' keys learned for COPY grants.
    pub depot_keys: crate::copy_grants::DepotKeys,
}

/// 404 for a depot name the VO has not registered.
fn no_depot(vo: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("VO {vo} has no depot named {name:?}"))
}

/// A malformed body is 400 (whatever the rejection's status).
fn bad_body(e: JsonRejection) -> ApiError {
    ApiError::bad_request(format!("bad request body: {}", e.body_text()))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Database(_) | StoreError::Invalid(_) => {
                tracing::error!(error = %e, "database operation failed");
                ApiError::internal("database error")
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/copy-grants", post(crate::copy_grants::copy_grants))
        .route("/v1/vos/:vo/depots", get(list).post(register))
        .route(
            "/v1/vos/:vo/depots/:name",
            get(show).patch(update).delete(remove),
        )
        .route("/v1/vos/:vo/removed", get(removed_list))
        .route(
            "/v1/vos/:vo/removed/:vo_id",
            axum::routing::put(member_remove).delete(member_restore),
        )
        .route("/status", get(status_html))
        .route("/status.json", get(status_json))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Authenticate<Identity> for App {
    /// The caller's verified identity with VO attributes: 401 without a
    /// client certificate, 403 when the attributes do not verify (expired,
    /// unknown attribute authority, bound to another certificate, none at
    /// all).
    async fn authenticate(&self, peer: &PeerChain) -> ApiResult<Identity> {
        let chain = peer.0.as_deref();
        ApiError::credential(ibp_auth::tls::peer_identity(
            chain,
            &self.trust.get(),
            ibp_auth::unix_now(),
        ))
    }
}

/// The caller's identity in `vo` alone (of a multi-VO proxy: the
/// attributes for that VO, never another VO's groups or VO ID; docs/
/// identity.md, "Several VOs in one proxy"), or 403 naming why there is
/// none.
fn in_vo(id: &Identity, vo: &str) -> ApiResult<Identity> {
    id.for_vo(vo).map_err(|e| match e {
        ibp_auth::AuthError::VoNotCarried { .. } if id.others.verified.is_empty() => {
            ApiError::forbidden(format!("your VO attributes are for VO {}, not {vo}", id.vo))
        }
        e => ApiError::forbidden(e.to_string()),
    })
}

/// Refuses a caller who is not an admin of `vo`; returns their identity
/// in `vo`.
fn admin_of(app: &App, id: &Identity, vo: &str) -> ApiResult<Identity> {
    let id = in_vo(id, vo)?;
    if !id.groups.iter().any(|g| g.name == app.admin_group) {
        return Err(ApiError::forbidden(format!(
            "administering VO {vo}'s depots needs its group {:?}, which your attributes lack",
            app.admin_group
        )));
    }
    Ok(id)
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "bad depot name {name:?}: 1-{MAX_NAME} letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )))
    }
}

/// A host name or IP address (IPv6 without brackets), lower-cased.
fn check_host(host: &str) -> ApiResult<String> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(h.to_ascii_lowercase());
    }
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(ApiError::bad_request(format!(
            "bad host {host:?}: expected a DNS name or an IP address"
        )))
    }
}

fn check_port(what: &str, port: u16) -> ApiResult<u16> {
    if port == 0 {
        Err(ApiError::bad_request(format!("{what} must not be 0")))
    } else {
        Ok(port)
    }
}

fn check_place(place: &str) -> ApiResult<String> {
    let p = place.trim();
    if p.is_empty() || p.chars().count() > MAX_PLACE || p.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "bad place: 1-{MAX_PLACE} characters without control characters"
        )));
    }
    Ok(p.to_owned())
}

fn check_location(l: Location) -> ApiResult<Location> {
    Location::new(l.lat, l.lon).map_err(ApiError::bad_request)
}

fn check_positive(what: &str, v: u64) -> ApiResult<u64> {
    if v == 0 || v > i64::MAX as u64 {
        Err(ApiError::bad_request(format!("{what} must be 1..2^63")))
    } else {
        Ok(v)
    }
}

fn admin_view(app: &App, r: Registration) -> DepotView {
    let row = crate::store::DepotRow {
        registration: r,
        status: None,
    };
    DepotView::new(&row, &app.liveness, now_ms(), true)
}

#[tracing::instrument(skip_all, fields(vo = %vo, remote = %remote.0))]
async fn register(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Extension(remote): Extension<RemoteAddr>,
    Path(vo): Path<String>,
    body: Result<Json<NewDepot>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DepotView>)> {
    let id = admin_of(&app, &id, &vo)?;
    let Json(d) = body.map_err(bad_body)?;
    check_name(&d.name)?;
    let now = ibp_auth::unix_now();
    let r = Registration {
        vo: vo.clone(),
        name: d.name,
        host: check_host(&d.host)?,
        port: check_port("port", d.port)?,
        tls_port: d.tls_port.map(|p| check_port("tls_port", p)).transpose()?,
        location: check_location(d.location)?,
        place: d.place.as_deref().map(check_place).transpose()?,
        max_size: d
            .max_size
            .map(|v| check_positive("max_size", v))
            .transpose()?,
        max_duration: d
            .max_duration
            .map(|v| check_positive("max_duration", v))
            .transpose()?,
        registered_by: id.vo_id.clone(),
        created_at: now,
        updated_at: now,
    };
    app.store.register(&r).await?;
    tracing::info!(name = %r.name, depot = %address(&r.host, r.port), by = %id.vo_id, "depot registered");
    app.poll_now.notify_one();
    Ok((StatusCode::CREATED, Json(admin_view(&app, r))))
}

#[derive(Serialize)]
struct DepotList {
    vo: String,
    depots: Vec<DepotView>,
}

#[tracing::instrument(skip_all, fields(vo = %vo))]
async fn list(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Path(vo): Path<String>,
) -> ApiResult<Json<DepotList>> {
    admin_of(&app, &id, &vo)?;
    let rows = app.store.depots(Some(&vo)).await?;
    let now = now_ms();
    Ok(Json(DepotList {
        depots: rows
            .iter()
            .map(|r| DepotView::new(r, &app.liveness, now, true))
            .collect(),
        vo,
    }))
}

#[tracing::instrument(skip_all, fields(vo = %vo, name = %name))]
async fn show(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Path((vo, name)): Path<(String, String)>,
) -> ApiResult<Json<DepotView>> {
    admin_of(&app, &id, &vo)?;
    let rows = app.store.depots(Some(&vo)).await?;
    let now = now_ms();
    rows.iter()
        .find(|r| r.registration.name == name)
        .map(|r| Json(DepotView::new(r, &app.liveness, now, true)))
        .ok_or_else(|| no_depot(&vo, &name))
}

#[tracing::instrument(skip_all, fields(vo = %vo, name = %name, remote = %remote.0))]
async fn update(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Extension(remote): Extension<RemoteAddr>,
    Path((vo, name)): Path<(String, String)>,
    body: Result<Json<DepotChanges>, JsonRejection>,
) -> ApiResult<Json<DepotView>> {
    let id = admin_of(&app, &id, &vo)?;
    let Json(c) = body.map_err(bad_body)?;
    let changes = Changes {
        host: c.host.as_deref().map(check_host).transpose()?,
        port: c.port.map(|p| check_port("port", p)).transpose()?,
        tls_port: c
            .tls_port
            .map(|p| p.map(|p| check_port("tls_port", p)).transpose())
            .transpose()?,
        location: c.location.map(check_location).transpose()?,
        place: c
            .place
            .map(|p| p.as_deref().map(check_place).transpose())
            .transpose()?,
        max_size: c
            .max_size
            .map(|v| v.map(|v| check_positive("max_size", v)).transpose())
            .transpose()?,
        max_duration: c
            .max_duration
            .map(|v| v.map(|v| check_positive("max_duration", v)).transpose())
            .transpose()?,
    };
    let r = app
        .store
        .update(&vo, &name, &changes, &id.vo_id, ibp_auth::unix_now())
        .await?
        .ok_or_else(|| no_depot(&vo, &name))?;
    tracing::info!(depot = %address(&r.host, r.port), by = %id.vo_id, "depot registration changed");
    app.poll_now.notify_one();
    Ok(Json(admin_view(&app, r)))
}

#[tracing::instrument(skip_all, fields(vo = %vo, name = %name, remote = %remote.0))]
async fn remove(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Extension(remote): Extension<RemoteAddr>,
    Path((vo, name)): Path<(String, String)>,
) -> ApiResult<Json<DepotRemoved>> {
    let id = admin_of(&app, &id, &vo)?;
    if !app.store.remove(&vo, &name).await? {
        return Err(no_depot(&vo, &name));
    }
    tracing::info!(by = %id.vo_id, "depot registration removed");
    Ok(Json(DepotRemoved { vo, removed: name }))
}

fn check_vo_id(vo_id: &str) -> ApiResult<()> {
    let ok = !vo_id.is_empty()
        && vo_id.len() <= MAX_NAME
        && vo_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("bad VO ID {vo_id:?}")))
    }
}

/// `PUT /v1/vos/{vo}/removed/{vo_id}`: the member gets no more grants.
async fn member_remove(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Path((vo, vo_id)): Path<(String, String)>,
) -> ApiResult<Json<MemberRemoval>> {
    let id = admin_of(&app, &id, &vo)?;
    check_vo_id(&vo_id)?;
    if vo_id == id.vo_id {
        return Err(ApiError::bad_request("you cannot remove yourself"));
    }
    let now = ibp_auth::unix_now();
    let new = app.store.remove_member(&vo, &vo_id, &id.vo_id, now).await?;
    tracing::info!(%vo, %vo_id, by = %id.vo_id, new, "member removed: no more grants");
    Ok(Json(MemberRemoval {
        vo,
        vo_id,
        removed: true,
        already: Some(!new),
    }))
}

/// `DELETE /v1/vos/{vo}/removed/{vo_id}`: grants again.
async fn member_restore(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Path((vo, vo_id)): Path<(String, String)>,
) -> ApiResult<Json<MemberRemoval>> {
    let id = admin_of(&app, &id, &vo)?;
    check_vo_id(&vo_id)?;
    if !app.store.restore_member(&vo, &vo_id).await? {
        return Err(ApiError::not_found(format!(
            "VO {vo} has not removed {vo_id}"
        )));
    }
    tracing::info!(%vo, %vo_id, by = %id.vo_id, "member restored: grants again");
    Ok(Json(MemberRemoval {
        vo,
        vo_id,
        removed: false,
        already: None,
    }))
}

/// `GET /v1/vos/{vo}/removed`.
async fn removed_list(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Path(vo): Path<String>,
) -> ApiResult<Json<RemovedMembers>> {
    admin_of(&app, &id, &vo)?;
    let removed = app
        .store
        .removed_members(&vo)
        .await?
        .into_iter()
        .map(|(vo_id, removed_by, removed_at)| RemovedMember {
            vo_id,
            removed_by,
            removed_at,
        })
        .collect();
    Ok(Json(RemovedMembers { vo, removed }))
}

/// The caller's identity in the VO a grant request names (of a multi-VO
/// proxy its identity there alone; without one, the proxy's first VO),
/// refused when the VO's admins removed the member: a proxy cannot be
/// revoked, a grant lasts minutes.
pub(crate) async fn acting(app: &App, id: &Identity, vo: Option<&str>) -> ApiResult<Identity> {
    let id = match vo {
        Some(vo) => in_vo(id, vo)?,
        None => id.single(),
    };
    if let Some((by, at)) = app.store.removed(&id.vo, &id.vo_id).await? {
        tracing::info!(vo = %id.vo, vo_id = %id.vo_id, "grant request of a removed member refused");
        return Err(ApiError::forbidden(format!(
            "VO {} removed member {} (by {by} at {at}): no depot grants; ask a VO admin",
            id.vo, id.vo_id
        )));
    }
    Ok(id)
}

#[tracing::instrument(skip_all, fields(remote = %remote.0))]
async fn query(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    Extension(remote): Extension<RemoteAddr>,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> ApiResult<Json<Offer>> {
    let Json(q) = body.map_err(bad_body)?;
    let id = acting(&app, &id, q.vo.as_deref()).await?;
    if let Some(n) = q.count {
        if n == 0 || n > MAX_COUNT {
            return Err(ApiError::bad_request(format!(
                "count must be 1..{MAX_COUNT}"
            )));
        }
    }
    let origin = origin(&app, &id, &q).await?;
    let need = Need {
        size: q.size,
        duration: q.duration,
        reliability: q.reliability,
        origin,
    };
    let rows = app.store.depots(Some(&id.vo)).await?;
    let found = suitable(&rows, &need, &app.liveness, now_ms());
    let matching = found.len();
    let take = q
        .count
        .map_or(MAX_COUNT as usize, |n| n as usize)
        .min(MAX_COUNT as usize);
    let lifetime = i64::try_from(app.grant_lifetime.as_secs()).unwrap_or(i64::MAX);
    let issued = ibp_auth::unix_now();
    // A grant never outlives the credential it is bound to.
    let grant_not_after = issued.saturating_add(lifetime).min(id.not_after);
    let depots = offered(
        &app,
        &id,
        found.into_iter().take(take),
        issued,
        grant_not_after,
    );
    let returned = depots.len();
    let note = match q.count {
        Some(n) if (returned as u64) < u64::from(n) => Some(format!(
            "only {returned} of the {n} requested depots are available to VO {} for this request",
            id.vo
        )),
        _ => None,
    };
    tracing::info!(vo = %id.vo, vo_id = %id.vo_id, requested = ?q.count, returned, matching, "depots offered");
    Ok(Json(Offer {
        vo: id.vo,
        vo_id: id.vo_id,
        requested: q.count,
        returned,
        matching,
        size: q.size,
        duration: q.duration,
        reliability: q.reliability,
        origin,
        issued,
        depots,
        note,
    }))
}

/// Where distances are measured from: the caller's location, or a place
/// registered in their VO, or none.
async fn origin(app: &App, id: &Identity, q: &QueryRequest) -> ApiResult<Option<Location>> {
    Ok(match (q.location, &q.place) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give a location or a place, not both",
            ))
        }
        (Some(l), None) => Some(check_location(l)?),
        (None, Some(p)) => Some(app.store.place(&id.vo, p.trim()).await?.ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown place {:?}: no depot of VO {} is registered there",
                p.trim(),
                id.vo
            ))
        })?),
        (None, None) => None,
    })
}

/// The offered depots, each with a grant for the caller issued at
/// `issued` and valid until `grant_not_after`.
fn offered<'a>(
    app: &App,
    id: &Identity,
    found: impl Iterator<Item = crate::select::Suitable<'a>>,
    issued: i64,
    grant_not_after: i64,
) -> Vec<OfferedDepot> {
    found
        .map(|s| {
            let r = &s.row.registration;
            let address = grant_address(r);
            let grant = DepotGrant {
                depot: address.clone(),
                vo: id.vo.clone(),
                vo_id: id.vo_id.clone(),
                holder: id.key_hash,
                issued,
                not_after: grant_not_after,
            }
            .sign(&app.signing_key);
            OfferedDepot {
                name: r.name.clone(),
                host: r.host.clone(),
                port: r.port,
                tls_port: r.tls_port,
                address,
                location: r.location,
                place: r.place.clone(),
                distance_km: s.distance_km.map(|d| (d * 10.0).round() / 10.0),
                free: s.free,
                max_duration: s.max_duration,
                last_seen_ms: s.last_seen_ms,
                grant,
                grant_not_after,
            }
        })
        .collect()
}

/// What the L-Bone's `/metrics` answers: its HTTP counters and
/// `lbone_depots{vo,state}`, the registrations per VO by liveness state
/// (as the status page shows them).
pub fn metrics_render(
    m: &Arc<ibp_https::metrics::HttpMetrics>,
    app: &Arc<App>,
) -> ibp_https::metrics::Render {
    let (m, app) = (m.clone(), app.clone());
    Arc::new(move || {
        let (m, app) = (m.clone(), app.clone());
        Box::pin(async move {
            use std::fmt::Write as _;
            let mut o = m.render();
            o.push_str(
                "# HELP lbone_depots Registered depots per VO by liveness state.\n# TYPE lbone_depots gauge\n",
            );
            match status_page(&app).await {
                Ok(page) => {
                    for vo in &page.vos {
                        let mut by: std::collections::BTreeMap<&str, usize> =
                            ["up", "late", "down", "unknown"]
                                .into_iter()
                                .map(|s| (s, 0))
                                .collect();
                        for d in &vo.depots {
                            *by.entry(d.status.state.as_str()).or_insert(0) += 1;
                        }
                        for (state, n) in by {
                            let _ = writeln!(
                                o,
                                "lbone_depots{{vo=\"{}\",state=\"{state}\"}} {n}",
                                vo.vo
                            );
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "metrics: depots not read");
                }
            }
            o
        })
    })
}

async fn status_page(app: &App) -> ApiResult<StatusPage> {
    let rows = app.store.depots(None).await?;
    Ok(StatusPage::new(&rows, &app.liveness, now_ms()))
}

async fn status_html(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let page = status_page(&app).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page.to_html(),
    )
        .into_response())
}

async fn status_json(State(app): State<Arc<App>>) -> ApiResult<Json<StatusPage>> {
    status_page(&app).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hosts() {
        for ok in ["brno-1", "a", "depot_2.cz"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "<b>", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_host("Depot.Example.ORG").unwrap(),
            "depot.example.org"
        );
        assert_eq!(check_host("[::1]").unwrap(), "::1");
        assert_eq!(check_host("127.0.0.1").unwrap(), "127.0.0.1");
        for bad in ["", "a..b", "-a.b", "a_b", "a b", "<x>", "a:b"] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
        assert!(check_place("Brno, CZ").is_ok());
        assert!(check_place("a\nb").is_err());
    }
}
