//! Maintenance grants (docs/maintenance.md): a renewable credential that
//! keeps a member's files alive while nobody is logged in.
//!
//! - `POST /v1/maintenance/enroll` (mutual TLS with a login proxy, not a
//!   maintenance one) `{vo, valid}` → `{grant, token, vo, vo_id,
//!   created_at, expires_at}`: the token is shown once; the CA keeps only
//!   its SHA-256.
//! - `POST /v1/maintenance/proxy` `{grant, token, csr, lifetime}` → the
//!   answer of `/v1/login` (plus `grant_expires_at`): a short-lived
//!   certificate (`CN=maintenance:<grant>`, never linked to the member)
//!   with version 2 attributes of scope `maintenance` and no groups.
//! - `POST /v1/maintenance/status` `{grant, token}`, or over mutual TLS
//!   `{}` → `{grants: [...]}`.
//! - `POST /v1/maintenance/revoke` `{grant, token}`, or over mutual TLS
//!   `{grant}` (the member's own grant, or any of the VO for its admin
//!   group), `{all: true}` (all of the caller's) or `{vo_id}` (VO admins:
//!   all of a member's) → `{revoked: N}`.
//!
//! A wrong token and an unknown grant get the same 401 (and count as a
//! failed login in the rate limiter, keyed `maintenance:<grant>`); only
//! the holder of the right token learns that a grant was revoked or
//! expired. Tokens are never logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine;
use ibp_auth::Scope;
use ibp_https::server::{PeerChain, RemoteAddr};
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::api::{b64, lifetime, parse_json, ApiError, App, BACKDATE};
use crate::ca::{cert_identity, check_csr, hex, CsrError};
use crate::store::{AuditRow, GrantRow, GrantState};

/// Most grants a member holds at once (neither revoked nor expired).
pub const MAX_ACTIVE_GRANTS: i64 = 16;
/// Longest token accepted in a request.
const MAX_TOKEN: usize = 256;
/// Bytes of randomness in a token.
const TOKEN_BYTES: usize = 32;

/// A new secret token (base64url of 32 random bytes) and its hash.
pub fn new_token() -> anyhow::Result<(String, String)> {
    let mut raw = [0u8; TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for a token"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// Hex SHA-256 of a token: what the database keeps. (A token is 256
/// random bits, so a plain hash is as strong as a slow one.)
pub fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Whether `token` hashes to `stored`, compared in constant time.
pub fn token_matches(token: &str, stored: &str) -> bool {
    token_hash(token).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// A hash no token has (compared against when the grant is unknown, so
/// that both refusals cost the same).
pub(crate) const NO_GRANT_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, m)
}

fn unauthorized(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, m)
}

fn enabled(app: &App) -> Result<(), ApiError> {
    if app.cfg.maintenance.enabled {
        Ok(())
    } else {
        Err(forbidden("maintenance grants are disabled at this CA"))
    }
}

/// A grant id as issued (a UUID); anything else is malformed.
fn grant_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::bad("grant must be a maintenance grant id (a UUID)"))
}

/// The rate limiter's user key of a grant.
fn limiter_key(grant: &str) -> String {
    format!("maintenance:{grant}")
}

/// Refuses a request over a rate-limit budget before the token is looked at.
fn rate_check(app: &App, key: &str, remote: std::net::SocketAddr) -> Result<(), ApiError> {
    app.limiter.check(Some(key), remote.ip()).map_err(|r| {
        tracing::warn!(remote = %remote, grant = key, budget = ?r.budget, "maintenance request rate limited");
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, r.budget.message())
            .retry_after(r.retry_after.as_secs().max(1))
    })
}

/// The grant `grant` if `token` is its token: one 401 for an unknown
/// grant and a wrong token alike (counted by the rate limiter).
async fn grant_by_token(
    app: &App,
    grant: &str,
    token: &str,
    remote: std::net::SocketAddr,
) -> Result<GrantRow, ApiError> {
    let key = limiter_key(grant);
    rate_check(app, &key, remote)?;
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(ApiError::bad(format!(
            "token must have 1 to {MAX_TOKEN} bytes"
        )));
    }
    let found = app
        .store
        .grant_get(grant)
        .await
        .map_err(ApiError::internal)?;
    let matched = match &found {
        Some((_, hash)) => token_matches(token, hash),
        None => {
            let _ = token_matches(token, NO_GRANT_HASH);
            false
        }
    };
    match found {
        Some((g, _)) if matched => {
            app.limiter.succeeded(&key, remote.ip());
            Ok(g)
        }
        _ => {
            app.limiter.failed(Some(&key), remote.ip());
            tracing::info!(remote = %remote, %grant, "maintenance grant refused: unknown grant or wrong token");
            Err(unauthorized(
                "maintenance grant refused: unknown grant or wrong token",
            ))
        }
    }
}

/// Refuses a grant that was revoked or has expired, saying which and when.
fn usable(g: &GrantRow, now: i64) -> Result<(), ApiError> {
    let when = crate::admin::utc;
    match g.state(now) {
        GrantState::Active => Ok(()),
        GrantState::Revoked => Err(forbidden(format!(
            "maintenance grant {} was revoked at {} (by {}); enroll again with `lors maintenance enroll` after `lors login`",
            g.id,
            when(g.revoked_at.unwrap_or(0)),
            g.revoked_by.as_deref().unwrap_or("an admin")
        ))),
        GrantState::Expired => Err(forbidden(format!(
            "maintenance grant {} expired at {}; enroll again with `lors maintenance enroll` after `lors login`",
            g.id,
            when(g.expires_at)
        ))),
    }
}

/// Who is on the other end of a mutual-TLS request: the verified
/// identity and the identity string of their end-entity certificate.
fn tls_caller(
    app: &App,
    peer: Option<&Vec<CertificateDer<'static>>>,
    now: i64,
) -> Result<(ibp_auth::Identity, String, Vec<u8>, String), ApiError> {
    let Some(peer) = peer else {
        return Err(unauthorized(
            "a client certificate is required (mutual TLS with your proxy)",
        ));
    };
    let chain = ibp_auth::verify::verify_certificates(peer, &app.trust.get(), now)
        .map_err(|e| unauthorized(format!("client certificate rejected: {e}")))?;
    let ee = &chain.certs[chain.ee_index];
    let (ident, serial, subject) = (
        cert_identity(ee),
        ee.raw_serial().to_vec(),
        ee.subject().to_string(),
    );
    let id = ibp_auth::verify_chain(peer, &app.trust.get(), now)
        .map_err(|e| unauthorized(format!("credential rejected: {e}")))?;
    Ok((id, ident, serial, subject))
}

#[derive(Deserialize)]
pub struct EnrollRequest {
    vo: String,
    /// Requested validity in seconds.
    #[serde(default)]
    valid: Option<u64>,
}

#[derive(Serialize)]
pub struct EnrollResponse {
    grant: String,
    token: String,
    vo: String,
    vo_id: String,
    created_at: i64,
    expires_at: i64,
}

pub async fn enroll(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Json<EnrollResponse>, ApiError> {
    enabled(&app)?;
    let now = ibp_auth::unix_now();
    let (id, cert_ident, serial, subject) = tls_caller(&app, peer.as_ref(), now)?;
    let req: EnrollRequest = parse_json(&body)?;
    if !app.ca.has_vo(&req.vo) {
        return Err(ApiError::bad(format!("unknown VO {:?}", req.vo)));
    }
    // A maintenance credential must not mint itself a longer life.
    if id.scope != Scope::Full {
        return Err(forbidden(
            "a maintenance-only credential cannot enroll a maintenance grant: log in with `lors login` first",
        ));
    }
    if id.vo != req.vo {
        return Err(forbidden(format!(
            "your proxy is for VO {}, not {}",
            id.vo, req.vo
        )));
    }
    let (vo_id, linked_from) = app
        .store
        .member_origin(&req.vo, &cert_ident)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| forbidden(format!("{cert_ident} is not a member of VO {}", req.vo)))?;
    if vo_id != id.vo_id {
        return Err(forbidden(format!(
            "your proxy names VO ID {} but the CA has {vo_id} for its certificate",
            id.vo_id
        )));
    }
    let identity = linked_from.unwrap_or(cert_ident);
    let m = &app.cfg.maintenance;
    let validity = lifetime(
        req.valid,
        m.default_validity.as_i64(),
        m.max_validity.as_i64(),
    )?;
    let (token, hash) = new_token().map_err(ApiError::internal)?;
    let g = GrantRow {
        id: uuid::Uuid::new_v4().to_string(),
        vo: req.vo.clone(),
        vo_id: vo_id.clone(),
        identity: identity.clone(),
        created_at: now,
        expires_at: now.saturating_add(validity),
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
    };
    let added = app
        .store
        .grant_insert(&g, &hash, MAX_ACTIVE_GRANTS)
        .await
        .map_err(ApiError::internal)?;
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("you hold {MAX_ACTIVE_GRANTS} active maintenance grants; revoke one (`lors maintenance revoke`) first"),
        ));
    }
    app.store
        .audit_insert(&AuditRow {
            id: crate::store::new_audit_id(),
            kind: "maintenance-grant".into(),
            serial: hex(&serial),
            subject,
            identity: identity.clone(),
            vo: g.vo.clone(),
            vo_id: vo_id.clone(),
            not_before: now,
            not_after: g.expires_at,
            lifetime: validity,
            issued_at: now,
            remote: remote.ip().to_string(),
        })
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(grant = %g.id, %identity, vo = %g.vo, %vo_id, expires_at = g.expires_at, "enrolled a maintenance grant");
    Ok(Json(EnrollResponse {
        grant: g.id,
        token,
        vo: g.vo,
        vo_id,
        created_at: now,
        expires_at: g.expires_at,
    }))
}

#[derive(Deserialize)]
pub struct ProxyRequest {
    grant: String,
    token: String,
    csr: String,
    #[serde(default)]
    lifetime: Option<u64>,
}

#[derive(Serialize)]
pub struct ProxyResponse {
    certificate: String,
    chain: String,
    attributes: String,
    vo: String,
    vo_id: String,
    groups: Vec<String>,
    not_after: i64,
    grant_expires_at: i64,
}

pub async fn proxy(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    body: Bytes,
) -> Result<Json<ProxyResponse>, ApiError> {
    enabled(&app)?;
    let req: ProxyRequest = parse_json(&body)?;
    let grant = grant_id(&req.grant)?;
    let csr = check_csr(&req.csr).map_err(|e| match e {
        CsrError::BadSignature => ApiError::bad("CSR signature does not verify"),
        e => ApiError::bad(e.to_string()),
    })?;
    let g = grant_by_token(&app, &grant, &req.token, remote).await?;
    let now = ibp_auth::unix_now();
    usable(&g, now)?;
    // Removed members get nothing (their grants are revoked at removal;
    // this also covers a VO ID given to another identity since).
    let member = app
        .store
        .membership(&g.vo, &g.identity)
        .await
        .map_err(ApiError::internal)?;
    if member.as_ref().is_none_or(|m| m.vo_id != g.vo_id) {
        tracing::info!(grant = %g.id, identity = %g.identity, vo = %g.vo, "maintenance proxy refused: no longer a member");
        return Err(forbidden(format!(
            "{} is no longer a member of VO {} with VO ID {}: maintenance grant {} cannot be used",
            g.identity, g.vo, g.vo_id, g.id
        )));
    }
    let cap = app.cfg.maintenance.proxy_lifetime.as_i64();
    let lifetime = lifetime(req.lifetime, cap, cap)?.min(g.expires_at - now);
    // The certificate names the grant, never the member's login identity:
    // it is not linked to the member, so `/v1/attributes` gives it nothing.
    let cert = app
        .ca
        .issue(&csr, &format!("maintenance:{}", g.id), lifetime)
        .map_err(|e| match e.downcast_ref::<ibp_auth::AuthError>() {
            Some(ibp_auth::AuthError::Malformed { .. }) => ApiError::bad(e.to_string()),
            _ => ApiError::internal(e),
        })?;
    // No groups: a maintenance credential is nobody's admin anywhere.
    let attrs = app
        .ca
        .sign_attributes_scoped(
            &g.vo,
            &g.vo_id,
            &[],
            &cert.issuer_raw,
            &cert.serial_raw,
            now - BACKDATE,
            cert.not_after,
            Scope::Maintenance,
        )
        .map_err(ApiError::internal)?;
    app.store
        .audit_insert(&AuditRow {
            id: crate::store::new_audit_id(),
            kind: "maintenance".into(),
            serial: cert.serial_hex.clone(),
            subject: cert.subject.clone(),
            identity: g.identity.clone(),
            vo: g.vo.clone(),
            vo_id: g.vo_id.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            lifetime,
            issued_at: now,
            remote: remote.ip().to_string(),
        })
        .await
        .map_err(ApiError::internal)?;
    if let Err(e) = app.store.grant_used(&g.id, now).await {
        tracing::warn!(error = %e, grant = %g.id, "could not note the grant's use");
    }
    tracing::info!(grant = %g.id, identity = %g.identity, vo = %g.vo, vo_id = %g.vo_id, serial = %cert.serial_hex, lifetime, "issued a maintenance certificate");
    Ok(Json(ProxyResponse {
        certificate: crate::ca::cert_pem(&cert.der),
        chain: app.ca.ca_pem().to_string(),
        attributes: b64(&attrs),
        vo: g.vo,
        vo_id: g.vo_id,
        groups: Vec::new(),
        not_after: cert.not_after,
        grant_expires_at: g.expires_at,
    }))
}

/// A grant as `status` shows it.
#[derive(Serialize)]
pub struct GrantJson {
    grant: String,
    vo: String,
    vo_id: String,
    identity: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
    last_used_at: Option<i64>,
    /// `active`, `revoked` or `expired`.
    state: &'static str,
}

fn grant_json(g: GrantRow, now: i64) -> GrantJson {
    GrantJson {
        state: g.state(now).name(),
        grant: g.id,
        vo: g.vo,
        vo_id: g.vo_id,
        identity: g.identity,
        created_at: g.created_at,
        expires_at: g.expires_at,
        revoked_at: g.revoked_at,
        revoked_by: g.revoked_by,
        last_used_at: g.last_used_at,
    }
}

#[derive(Deserialize)]
pub struct GrantRequest {
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    token: Option<String>,
    /// `revoke`: every grant of the caller.
    #[serde(default)]
    all: bool,
    /// `revoke` by a VO admin: every grant of this member.
    #[serde(default)]
    vo_id: Option<String>,
}

#[derive(Serialize)]
pub struct Grants {
    grants: Vec<GrantJson>,
}

pub async fn status(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Json<Grants>, ApiError> {
    let req: GrantRequest = parse_json(&body)?;
    let now = ibp_auth::unix_now();
    if let (Some(grant), Some(token)) = (&req.grant, &req.token) {
        let g = grant_by_token(&app, &grant_id(grant)?, token, remote).await?;
        return Ok(Json(Grants {
            grants: vec![grant_json(g, now)],
        }));
    }
    let (id, ..) = tls_caller(&app, peer.as_ref(), now)?;
    let rows = app
        .store
        .grant_list(&id.vo, Some(&id.vo_id))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Grants {
        grants: rows.into_iter().map(|g| grant_json(g, now)).collect(),
    }))
}

#[derive(Serialize)]
pub struct Revoked {
    revoked: u64,
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Json<Revoked>, ApiError> {
    let req: GrantRequest = parse_json(&body)?;
    let now = ibp_auth::unix_now();
    // With the token: the grant it opens (e.g. from a host that may have
    // been compromised, or after losing the login credential).
    if let (Some(grant), Some(token)) = (&req.grant, &req.token) {
        let g = grant_by_token(&app, &grant_id(grant)?, token, remote).await?;
        let n = app
            .store
            .grant_revoke(&g.id, "token", now)
            .await
            .map_err(ApiError::internal)?;
        tracing::info!(grant = %g.id, vo = %g.vo, vo_id = %g.vo_id, by = "token", "revoked a maintenance grant");
        return Ok(Json(Revoked { revoked: n.into() }));
    }
    let (id, ..) = tls_caller(&app, peer.as_ref(), now)?;
    let admin = id.scope == Scope::Full
        && id
            .groups
            .iter()
            .any(|g| g.name == app.cfg.maintenance.admin_group);
    let role = if admin { "admin" } else { "member" };
    let by = format!("{role} {}", id.vo_id);
    let revoked = match (&req.grant, req.all, &req.vo_id) {
        (Some(grant), false, None) => {
            let grant = grant_id(grant)?;
            let found = app
                .store
                .grant_get(&grant)
                .await
                .map_err(ApiError::internal)?;
            match found {
                Some((g, _)) if g.vo == id.vo && (g.vo_id == id.vo_id || admin) => u64::from(
                    app.store
                        .grant_revoke(&g.id, &by, now)
                        .await
                        .map_err(ApiError::internal)?,
                ),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("no maintenance grant {grant} that you may revoke"),
                    ))
                }
            }
        }
        (None, true, None) => app
            .store
            .grant_revoke_member(&id.vo, &id.vo_id, &by, now)
            .await
            .map_err(ApiError::internal)?,
        (None, false, Some(vo_id)) if admin => app
            .store
            .grant_revoke_member(&id.vo, vo_id, &by, now)
            .await
            .map_err(ApiError::internal)?,
        (None, false, Some(_)) => {
            return Err(forbidden(format!(
                "only members of group {} of VO {} may revoke another member's grants",
                app.cfg.maintenance.admin_group, id.vo
            )))
        }
        _ => {
            return Err(ApiError::bad(
                "give grant and token, or over mutual TLS one of grant, all or vo_id",
            ))
        }
    };
    tracing::info!(vo = %id.vo, %by, revoked, "revoked maintenance grants");
    Ok(Json(Revoked { revoked }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_matches() {
        let (t1, h1) = new_token().unwrap();
        let (t2, h2) = new_token().unwrap();
        assert_ne!(t1, t2);
        assert_ne!(h1, h2);
        assert_eq!(t1.len(), 43);
        assert_eq!(h1.len(), 64);
        assert!(!h1.contains(&t1));
        assert!(token_matches(&t1, &h1));
        assert!(!token_matches(&t2, &h1));
        assert!(!token_matches(&t1, NO_GRANT_HASH));
        assert!(!token_matches("", &h1));
        // A hash of another length never matches (ct_eq compares lengths).
        assert!(!token_matches(&t1, &h1[..63]));
    }

    #[test]
    fn grant_ids_are_uuids() {
        assert!(grant_id("1b4e28ba-2fa1-11d2-883f-0016d3cca427").is_ok());
        assert!(grant_id("../etc").is_err());
        assert!(grant_id("").is_err());
    }
}
