//! The HTTP API (JSON; a contract shared with the `lors` client):
//!
//! - `POST /v1/login`: credentials + CSR → short-lived certificate and
//!   signed VO attributes for it.
//! - `POST /v1/attributes` (mutual TLS): signed VO attributes for the
//!   client's existing certificate.
//! - `GET /v1/trust`: the CA and AA certificates, the published signing
//!   keys and the revocation list; `GET /v1/crl`: the revocation list (DER).
//! - `POST /v1/maintenance/{enroll,proxy,status,revoke}`: maintenance
//!   grants ([`crate::maintenance`]).
//! - `POST /v1/hosts/{enroll,renew}`: host certificates for service hosts
//!   ([`crate::hosts`]).
//! - `POST /v1/link/challenge`, `POST /v1/link` (mutual TLS): a member
//!   links another certificate to their VO ID ([`crate::link`]).
//!
//! Errors are `{"error": "..."}` with 400 (bad request or CSR), 401 (wrong
//! credentials, no client certificate), 403 (not a member of the VO), 409
//! (a link that exists or waits already), 429
//! (rate limited, with Retry-After), 500 (internal), 502 (the RADIUS
//! server or the OIDC issuer could not be asked).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use ibp_auth::TrustStore;
use serde::{Deserialize, Serialize};

use crate::ca::{cert_identity, check_csr, hex, Ca, CsrError};
use crate::config::Config;
use crate::local::{valid_user_name, LocalUsers, MAX_PASSWORD};
use crate::oidc::{Oidc, OidcError};
use crate::radius_auth::RadiusAuth;
use crate::ratelimit::RateLimiter;
use crate::store::{AuditRow, GroupRow, Store};
use ibp_https::server::{PeerChain, RemoteAddr};

/// Largest request body.
const MAX_BODY: usize = 64 * 1024;
/// Attributes start this long before they are issued (clock skew).
pub(crate) const BACKDATE: i64 = 60;

/// The settings SIGHUP puts in force without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// `[vos.<vo>]`.
    pub vos: std::collections::BTreeMap<String, crate::config::VoConfig>,
    /// `[hosts]`.
    pub hosts: crate::config::HostsConfig,
}

impl Live {
    pub fn of(cfg: &Config) -> Live {
        Live {
            vos: cfg.vos.clone(),
            hosts: cfg.hosts.clone(),
        }
    }

    /// Whether members of `vo` get pseudonymous certificates.
    pub fn pseudonymous(&self, vo: &str) -> bool {
        self.vos.get(vo).is_some_and(|v| v.pseudonymous)
    }
}

/// Everything the handlers share.
pub struct App {
    /// The configuration the CA started with (see `live` for the parts
    /// SIGHUP reloads).
    pub cfg: Config,
    pub live: ibp_https::Current<Live>,
    pub ca: Ca,
    pub store: Store,
    /// The trust directory (reloaded on SIGHUP).
    pub trust: ibp_https::Current<TrustStore>,
    pub local: Option<Arc<LocalUsers>>,
    pub radius: Option<RadiusAuth>,
    pub oidc: Option<Oidc>,
    pub limiter: RateLimiter,
    /// The last revocation list signed (`crate::crl`).
    pub crl: crate::crl::CrlCache,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/attributes", post(attributes))
        .route("/v1/trust", get(trust))
        .route("/v1/crl", get(crate::crl::serve))
        .route("/v1/maintenance/enroll", post(crate::maintenance::enroll))
        .route("/v1/maintenance/proxy", post(crate::maintenance::proxy))
        .route("/v1/maintenance/status", post(crate::maintenance::status))
        .route("/v1/maintenance/revoke", post(crate::maintenance::revoke))
        .route("/v1/hosts/enroll", post(crate::hosts::enroll))
        .route("/v1/hosts/renew", post(crate::hosts::renew))
        .route("/v1/link/challenge", post(crate::link::challenge))
        .route("/v1/link", post(crate::link::link))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The same error with a `Retry-After` of `secs` seconds.
    pub(crate) fn retry_after(self, secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(secs),
            ..self
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// Parses a JSON body without echoing its content in errors (it may hold
/// a password).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("missing field") {
            let field = msg.split(" at line").next().unwrap_or(&msg);
            ApiError::bad(format!("malformed request: {field}"))
        } else {
            ApiError::bad(format!(
                "malformed request: {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        }
    })
}

#[derive(Deserialize)]
struct LoginRequest {
    method: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
    vo: String,
    /// Further VOs for the same certificate (a multi-VO proxy: signed
    /// attributes for each, [`also_attributes`]).
    #[serde(default)]
    also: Vec<String>,
    csr: String,
    #[serde(default)]
    lifetime: Option<u64>,
}

#[derive(Serialize)]
struct GroupJson {
    id: String,
    name: String,
}

fn groups_json(groups: &[GroupRow]) -> Vec<GroupJson> {
    groups
        .iter()
        .map(|g| GroupJson {
            id: g.id.clone(),
            name: g.name.clone(),
        })
        .collect()
}

#[derive(Serialize)]
struct LoginResponse {
    certificate: String,
    chain: String,
    attributes: String,
    /// The standard VOMS AC extension (base64), with `voms_uri` set.
    #[serde(skip_serializing_if = "Option::is_none")]
    voms: Option<String>,
    vo: String,
    vo_id: String,
    groups: Vec<GroupJson>,
    not_after: i64,
    /// The attributes of the further VOs asked for (`also`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also: Vec<AlsoJson>,
}

/// The signed attributes of one further VO of a login.
#[derive(Serialize)]
struct AlsoJson {
    attributes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    voms: Option<String>,
    vo: String,
    vo_id: String,
    groups: Vec<GroupJson>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Local,
    Radius,
    Oidc,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Local => "local",
            Method::Radius => "radius",
            Method::Oidc => "oidc",
        }
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The requested lifetime, checked, or `default`; then capped by `max`.
pub(crate) fn lifetime(requested: Option<u64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match requested {
        Some(0) => Err(ApiError::bad(
            "lifetime must be a positive number of seconds",
        )),
        Some(l) => Ok(i64::try_from(l).unwrap_or(i64::MAX).min(max)),
        None => Ok(default.min(max)),
    }
}

/// Outcome of checking credentials.
enum Checked {
    Identity(String),
    /// Wrong credentials (counted by the rate limiter); the message says why.
    Wrong(String),
}

async fn login(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    body: Bytes,
) -> Result<Json<LoginResponse>, ApiError> {
    let req: LoginRequest = parse_json(&body)?;
    let method = match req.method.as_str() {
        "local" if app.local.is_some() => Method::Local,
        "radius" if app.radius.is_some() => Method::Radius,
        "oidc" if app.oidc.is_some() => Method::Oidc,
        "local" | "radius" | "oidc" => {
            return Err(ApiError::bad(format!(
                "login method {:?} is not enabled on this CA",
                req.method
            )))
        }
        _ => return Err(ApiError::bad("method must be radius, local or oidc")),
    };
    if !app.ca.has_vo(&req.vo) {
        return Err(ApiError::bad(format!("unknown VO {:?}", req.vo)));
    }
    check_also(&app, &req)?;
    let lifetime = lifetime(
        req.lifetime,
        app.cfg.default_lifetime.as_i64(),
        app.cfg.max_lifetime.as_i64(),
    )?;
    let user = match method {
        Method::Oidc => None,
        _ => {
            let u = req.user.as_deref().unwrap_or("");
            if !valid_user_name(u) {
                return Err(ApiError::bad(
                    "user must be 1 to 253 bytes without spaces, colons or control characters",
                ));
            }
            Some(format!("{}:{u}", method.name()))
        }
    };

    // Over a budget: refuse before looking at the credentials.
    if let Err(r) = app.limiter.check(user.as_deref(), remote.ip()) {
        tracing::warn!(remote = %remote, user = user.as_deref().unwrap_or("-"), budget = ?r.budget, "login rate limited");
        return Err(ApiError {
            retry_after: Some(r.retry_after.as_secs().max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, r.budget.message())
        });
    }

    let csr = check_csr(&req.csr).map_err(|e| match e {
        CsrError::BadSignature => ApiError::bad("CSR signature does not verify"),
        e => ApiError::bad(e.to_string()),
    })?;

    let checked = authenticate(&app, method, &req, user.as_deref()).await?;
    let identity = match checked {
        Checked::Identity(id) => id,
        Checked::Wrong(why) => {
            app.limiter.failed(user.as_deref(), remote.ip());
            tracing::info!(remote = %remote, method = method.name(), user = user.as_deref().unwrap_or("-"), reason = %why, "login failed");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, why));
        }
    };
    app.limiter.succeeded(&identity, remote.ip());

    let member = app
        .store
        .membership(&req.vo, &identity)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            tracing::info!(%identity, vo = %req.vo, "login by a non-member");
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{identity} is not a member of VO {}", req.vo),
            )
        })?;
    let also = also_members(&app, &req, &identity).await?;

    // In a pseudonymous VO the certificate names the member's pseudonym
    // there, never the login (docs/identity.md, "Pseudonymous members").
    let pseudonym = if app.live.get().pseudonymous(&req.vo) {
        Some(
            app.store
                .pseudonym(&req.vo, &member.vo_id)
                .await
                .map_err(ApiError::internal)?,
        )
    } else {
        None
    };
    let cn = match &pseudonym {
        Some(p) => format!("{}{p}", crate::store::CN_PREFIX),
        None => identity.clone(),
    };
    let cert = app.ca.issue(&csr, &cn, lifetime).map_err(|e| {
        match e.downcast_ref::<ibp_auth::AuthError>() {
            Some(ibp_auth::AuthError::Malformed { .. }) => ApiError::bad(e.to_string()),
            _ => ApiError::internal(e),
        }
    })?;
    let now = ibp_auth::unix_now();
    let attrs = app
        .ca
        .sign_attributes(
            &req.vo,
            &member.vo_id,
            &member.groups,
            &cert.issuer_raw,
            &cert.serial_raw,
            now - BACKDATE,
            cert.not_after,
        )
        .map_err(ApiError::internal)?;
    // No certificate leaves without its audit record.
    app.store
        .audit_insert(&AuditRow {
            id: crate::store::new_audit_id(),
            kind: "certificate".into(),
            serial: cert.serial_hex.clone(),
            subject: cert.subject.clone(),
            identity: identity.clone(),
            vo: req.vo.clone(),
            vo_id: member.vo_id.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            lifetime,
            issued_at: now,
            remote: remote.ip().to_string(),
        })
        .await
        .map_err(ApiError::internal)?;
    // Later `/v1/attributes` with this certificate gives the same VO ID.
    match app
        .store
        .link(&req.vo, &cert.identity, &member.vo_id, &identity)
        .await
    {
        Ok(true) => {
            tracing::info!(cert = %cert.identity, vo_id = %member.vo_id, "linked the issued certificate")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not link the issued certificate"),
    }
    tracing::info!(%identity, vo = %req.vo, vo_id = %member.vo_id, pseudonym = pseudonym.as_deref().unwrap_or("-"), serial = %cert.serial_hex, lifetime, "issued a certificate");
    let also = also_attributes(&app, &identity, &cert, also, now, lifetime, &remote).await?;
    let voms = voms_ac(
        &app,
        &req.vo,
        &member.groups,
        &cert.issuer_raw,
        &cert.serial_raw,
        now - BACKDATE,
        cert.not_after,
    )?;
    Ok(Json(LoginResponse {
        certificate: crate::ca::cert_pem(&cert.der),
        chain: app.ca.ca_pem().to_string(),
        attributes: b64(&attrs),
        voms,
        vo: req.vo,
        vo_id: member.vo_id,
        groups: groups_json(&member.groups),
        not_after: cert.not_after,
        also,
    }))
}

/// Most further VOs one login may ask for (`ibp_auth::attributes::MAX_VOS`
/// VOs in all).
const MAX_ALSO: usize = ibp_auth::attributes::MAX_VOS - 1;

/// Checks the further VOs of a multi-VO login before anything else: known,
/// distinct, not the first VO, and no pseudonymous VO among them all (a
/// pseudonymous VO's certificate names the member's pseudonym in that VO
/// alone; one certificate for several VOs would show it, or the login, to
/// the others: docs/identity.md, "Several VOs in one proxy").
fn check_also(app: &App, req: &LoginRequest) -> Result<(), ApiError> {
    if req.also.is_empty() {
        return Ok(());
    }
    if req.also.len() > MAX_ALSO {
        return Err(ApiError::bad(format!(
            "at most {} VOs in one proxy",
            MAX_ALSO + 1
        )));
    }
    for (i, vo) in req.also.iter().enumerate() {
        if !app.ca.has_vo(vo) {
            return Err(ApiError::bad(format!("unknown VO {vo:?}")));
        }
        if *vo == req.vo || req.also[..i].contains(vo) {
            return Err(ApiError::bad(format!("VO {vo:?} is asked for twice")));
        }
    }
    let live = app.live.get();
    if let Some(vo) = std::iter::once(&req.vo)
        .chain(&req.also)
        .find(|vo| live.pseudonymous(vo))
    {
        return Err(ApiError::bad(format!(
            "VO {vo} is pseudonymous: its certificates name your pseudonym in {vo} only, so it cannot share a proxy with other VOs; log in to {vo} on its own"
        )));
    }
    Ok(())
}

/// The login identity's membership in each further VO (403 for a VO it is
/// not a member of, before any certificate is issued).
async fn also_members(
    app: &App,
    req: &LoginRequest,
    identity: &str,
) -> Result<Vec<(String, crate::store::Membership)>, ApiError> {
    let mut out = Vec::new();
    for vo in &req.also {
        let m = app
            .store
            .membership(vo, identity)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                tracing::info!(%identity, %vo, "multi-VO login by a non-member");
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("{identity} is not a member of VO {vo}"),
                )
            })?;
        out.push((vo.clone(), m));
    }
    Ok(out)
}

/// Signed attributes (and a VOMS AC with `voms_uri`) of each further VO for
/// the certificate just issued, each audited and the certificate linked to
/// the member's VO ID there, as for the first VO.
async fn also_attributes(
    app: &App,
    identity: &str,
    cert: &crate::ca::IssuedCert,
    members: Vec<(String, crate::store::Membership)>,
    now: i64,
    lifetime: i64,
    remote: &std::net::SocketAddr,
) -> Result<Vec<AlsoJson>, ApiError> {
    let mut out = Vec::new();
    for (vo, member) in members {
        let attrs = app
            .ca
            .sign_attributes(
                &vo,
                &member.vo_id,
                &member.groups,
                &cert.issuer_raw,
                &cert.serial_raw,
                now - BACKDATE,
                cert.not_after,
            )
            .map_err(ApiError::internal)?;
        app.store
            .audit_insert(&AuditRow {
                id: crate::store::new_audit_id(),
                kind: "attributes".into(),
                serial: cert.serial_hex.clone(),
                subject: cert.subject.clone(),
                identity: identity.to_owned(),
                vo: vo.clone(),
                vo_id: member.vo_id.clone(),
                not_before: now - BACKDATE,
                not_after: cert.not_after,
                lifetime,
                issued_at: now,
                remote: remote.ip().to_string(),
            })
            .await
            .map_err(ApiError::internal)?;
        if let Err(e) = app
            .store
            .link(&vo, &cert.identity, &member.vo_id, identity)
            .await
        {
            tracing::warn!(error = %e, "could not link the issued certificate");
        }
        tracing::info!(%identity, %vo, vo_id = %member.vo_id, serial = %cert.serial_hex, "attributes of a further VO for the certificate");
        let voms = voms_ac(
            app,
            &vo,
            &member.groups,
            &cert.issuer_raw,
            &cert.serial_raw,
            now - BACKDATE,
            cert.not_after,
        )?;
        out.push(AlsoJson {
            attributes: b64(&attrs),
            voms,
            vo,
            vo_id: member.vo_id,
            groups: groups_json(&member.groups),
        });
    }
    Ok(out)
}

async fn authenticate(
    app: &App,
    method: Method,
    req: &LoginRequest,
    user: Option<&str>,
) -> Result<Checked, ApiError> {
    let password = || -> Result<&str, ApiError> {
        match req.password.as_deref() {
            Some(p) if !p.is_empty() && p.len() <= MAX_PASSWORD => Ok(p),
            _ => Err(ApiError::bad(format!(
                "password must have 1 to {MAX_PASSWORD} bytes"
            ))),
        }
    };
    let name = req.user.clone().unwrap_or_default();
    match method {
        Method::Local => {
            let pw = password()?;
            let users = app
                .local
                .as_ref()
                .ok_or_else(|| ApiError::internal("local users not configured"))?;
            let ok = users
                .verify_async(&name, pw.as_bytes())
                .await
                .map_err(ApiError::internal)?;
            Ok(if ok {
                Checked::Identity(user.unwrap_or_default().to_string())
            } else {
                Checked::Wrong("wrong user name or password".into())
            })
        }
        Method::Radius => {
            let pw = password()?;
            if pw.len() > 128 {
                return Err(ApiError::bad("RADIUS passwords have at most 128 bytes"));
            }
            let radius = app
                .radius
                .as_ref()
                .ok_or_else(|| ApiError::internal("RADIUS not configured"))?;
            match radius.authenticate(&name, pw.as_bytes()).await {
                Ok(true) => Ok(Checked::Identity(user.unwrap_or_default().to_string())),
                Ok(false) => Ok(Checked::Wrong("wrong user name or password".into())),
                Err(e) => {
                    tracing::error!(error = %e, "RADIUS configuration error or server unavailable (not a wrong password)");
                    Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "the RADIUS server could not be asked; see the CA's log",
                    ))
                }
            }
        }
        Method::Oidc => {
            let token = req
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::bad("token is required for method oidc"))?;
            let oidc = app
                .oidc
                .as_ref()
                .ok_or_else(|| ApiError::internal("OIDC not configured"))?;
            match oidc.verify(token).await {
                Ok(identity) => Ok(Checked::Identity(identity)),
                Err(OidcError::Invalid(why)) => {
                    Ok(Checked::Wrong(format!("token rejected: {why}")))
                }
                Err(e @ OidcError::Unavailable(_)) => {
                    tracing::error!(error = %e, "OIDC verification unavailable");
                    Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "the OIDC issuer's keys could not be fetched; see the CA's log",
                    ))
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct AttributesRequest {
    vo: String,
    #[serde(default)]
    lifetime: Option<u64>,
}

#[derive(Serialize)]
struct AttributesResponse {
    attributes: String,
    /// The standard VOMS AC extension (base64), with `voms_uri` set.
    #[serde(skip_serializing_if = "Option::is_none")]
    voms: Option<String>,
    vo: String,
    vo_id: String,
    groups: Vec<GroupJson>,
    not_after: i64,
}

async fn attributes(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Json<AttributesResponse>, ApiError> {
    let Some(peer) = peer else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a client certificate is required (mutual TLS)",
        ));
    };
    let req: AttributesRequest = parse_json(&body)?;
    if !app.ca.has_vo(&req.vo) {
        return Err(ApiError::bad(format!("unknown VO {:?}", req.vo)));
    }
    let now = ibp_auth::unix_now();
    // Verified in the handshake; again now, as the connection may be old.
    let chain =
        ibp_auth::verify::verify_certificates(&peer, &app.trust.get(), now).map_err(|e| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("client certificate rejected: {e}"),
            )
        })?;
    let ee = &chain.certs[chain.ee_index];
    let identity = cert_identity(ee);
    let member = app
        .store
        .membership(&req.vo, &identity)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            tracing::info!(%identity, vo = %req.vo, "attributes asked by a non-member");
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{identity} is not a member of VO {}", req.vo),
            )
        })?;
    let ee_not_after = ee.validity().not_after.timestamp();
    let lifetime = lifetime(
        req.lifetime,
        app.cfg.attribute_lifetime.as_i64(),
        app.cfg.max_lifetime.as_i64(),
    )?
    .min(ee_not_after - now);
    if lifetime <= 0 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the client certificate has expired",
        ));
    }
    let not_after = now + lifetime;
    let attrs = app
        .ca
        .sign_attributes(
            &req.vo,
            &member.vo_id,
            &member.groups,
            ee.issuer().as_raw(),
            ee.raw_serial(),
            now - BACKDATE,
            not_after,
        )
        .map_err(ApiError::internal)?;
    app.store
        .audit_insert(&AuditRow {
            id: crate::store::new_audit_id(),
            kind: "attributes".into(),
            serial: hex(ee.raw_serial()),
            subject: ee.subject().to_string(),
            identity: identity.clone(),
            vo: req.vo.clone(),
            vo_id: member.vo_id.clone(),
            not_before: now - BACKDATE,
            not_after,
            lifetime,
            issued_at: now,
            remote: remote.ip().to_string(),
        })
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(%identity, vo = %req.vo, vo_id = %member.vo_id, lifetime, "issued attributes for an existing certificate");
    let voms = voms_ac(
        &app,
        &req.vo,
        &member.groups,
        ee.issuer().as_raw(),
        ee.raw_serial(),
        now - BACKDATE,
        not_after,
    )?;
    Ok(Json(AttributesResponse {
        attributes: b64(&attrs),
        voms,
        vo: req.vo,
        vo_id: member.vo_id,
        groups: groups_json(&member.groups),
        not_after,
    }))
}

/// The VOMS AC (base64) of a login or `/v1/attributes` answer, when the
/// CA is configured as a VOMS server (`voms_uri`).
fn voms_ac(
    app: &App,
    vo: &str,
    groups: &[crate::store::GroupRow],
    holder_issuer: &[u8],
    holder_serial: &[u8],
    not_before: i64,
    not_after: i64,
) -> Result<Option<String>, ApiError> {
    let Some(uri) = &app.cfg.voms_uri else {
        return Ok(None);
    };
    app.ca
        .voms_ac(
            uri,
            vo,
            groups,
            holder_issuer,
            holder_serial,
            not_before,
            not_after,
        )
        .map(|ac| Some(b64(&ac)))
        .map_err(ApiError::internal)
}

#[derive(Serialize)]
struct TrustResponse {
    ca: String,
    aa: std::collections::BTreeMap<String, String>,
    /// The L-Bone's grant-signing keys and the metadata managers'
    /// ticket- and exNode-signing keys (`ed25519 <base64>`) found in the
    /// CA's own trust directory (`lbone/*.pub`, `metadata/*.pub`), which
    /// its operator keeps: hosts and users need them to check grants,
    /// tickets and signed exNodes.
    lbone: Vec<String>,
    metadata: Vec<String>,
    /// The CA's revocation list (PEM `X509 CRL`, `crate::crl`); absent
    /// when it could not be made (logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    crl: Option<String>,
}

async fn trust(State(app): State<Arc<App>>) -> Json<TrustResponse> {
    let trust = app.trust.get();
    let keys = |s| {
        trust
            .token_keys(s)
            .iter()
            .map(|k| ibp_auth::keys::format_public_key(k).trim().to_owned())
            .collect()
    };
    let crl = crate::crl::current_pem(&app).await;
    Json(TrustResponse {
        crl,
        lbone: keys(ibp_auth::trust::TokenSigner::LBone),
        metadata: keys(ibp_auth::trust::TokenSigner::MetadataManager),
        ca: app.ca.ca_pem().to_string(),
        aa: app.ca.aa_pems(),
    })
}
