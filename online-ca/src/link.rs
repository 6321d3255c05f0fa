//! Members link an extra certificate (an IGTF grid certificate, a
//! university's) to their VO ID themselves, by proving possession of both
//! (docs/identity.md, "Linking a certificate yourself"):
//!
//! - `POST /v1/link/challenge` (mutual TLS with a credential of a member
//!   of the VO) `{vo, chain}` → `{nonce, challenge, expires_at, vo,
//!   vo_id, identity}`: the certificate to link (`chain`, PEM, its
//!   end-entity certificate first) must chain to a CA of the CA's trust
//!   directory, be valid now and be no other member's identity in the VO;
//!   the challenge ([`challenge_bytes`]) binds the VO, the member's VO ID,
//!   the certificate and a fresh nonce, and is good for
//!   [`CHALLENGE_LIFETIME`] seconds, once.
//! - `POST /v1/link` (mutual TLS, the same member) `{vo, chain, nonce,
//!   signature}`: `signature` (base64) by the certificate's key over the
//!   challenge; the nonce is taken whatever the outcome. The certificate's
//!   identity (`cert:<issuer DN>|<subject DN>`) then becomes an identity
//!   of the member's VO ID, owned by the member's login identity (removing
//!   the member removes it): 200 `{status: "linked", ...}`. In a VO with
//!   `link_approval`, 202 `{status: "pending", request, ...}` instead,
//!   until a VO admin runs `online-ca admin member approve-link`.
//!
//! Every step is audited (`link`, `link-request`, and at the admin's
//! decision `link-approved`, `link-denied`), and both endpoints count
//! against the rate limiter (keyed `link:<member identity>`); a wrong
//! signature or an unknown challenge counts as a failed login.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use ibp_https::server::{PeerChain, RemoteAddr};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::api::{parse_json, ApiError, App};
use crate::ca::{cert_identity, hex};
use crate::store::{AuditRow, ChallengeRow, LinkOutcome, LinkRequestRow};

/// Seconds a challenge can be answered.
pub const CHALLENGE_LIFETIME: i64 = 300;
pub use ibp_auth::link::{challenge_bytes, CHALLENGE_LABEL};
/// Most certificates in a chain to link.
const MAX_CHAIN: usize = 8;

#[derive(Deserialize)]
struct ChallengeRequest {
    vo: String,
    chain: String,
}

#[derive(Serialize)]
pub struct ChallengeResponse {
    nonce: String,
    challenge: String,
    expires_at: i64,
    vo: String,
    vo_id: String,
    identity: String,
}

#[derive(Deserialize)]
struct LinkRequest {
    vo: String,
    chain: String,
    nonce: String,
    signature: String,
}

#[derive(Serialize)]
struct LinkResponse {
    status: &'static str,
    vo: String,
    vo_id: String,
    identity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, message)
}

/// The member behind the client certificate: (identity, VO ID, the
/// identity a link of theirs belongs to), after the rate limiter.
async fn requester(
    app: &App,
    peer: Option<Vec<CertificateDer<'static>>>,
    vo: &str,
    remote: std::net::SocketAddr,
    now: i64,
) -> Result<(String, String, String), ApiError> {
    let Some(peer) = peer else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a client certificate is required (mutual TLS with your proxy)",
        ));
    };
    if !app.ca.has_vo(vo) {
        return Err(ApiError::bad(format!("unknown VO {vo:?}")));
    }
    let chain =
        ibp_auth::verify::verify_certificates(&peer, &app.trust.get(), now).map_err(|e| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("client certificate rejected: {e}"),
            )
        })?;
    let identity = cert_identity(&chain.certs[chain.ee_index]);
    let key = format!("link:{identity}");
    app.limiter.check(Some(&key), remote.ip()).map_err(|r| {
        tracing::warn!(remote = %remote, %identity, budget = ?r.budget, "link request rate limited");
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, r.budget.message())
            .retry_after(r.retry_after.as_secs().max(1))
    })?;
    let origin = app
        .store
        .member_origin(vo, &identity)
        .await
        .map_err(ApiError::internal)?;
    let Some((vo_id, linked_from)) = origin else {
        tracing::info!(%identity, %vo, "link asked by a non-member");
        return Err(refused(format!("{identity} is not a member of VO {vo}")));
    };
    Ok((identity.clone(), vo_id, linked_from.unwrap_or(identity)))
}

/// The certificate to link, checked against the trust directory: (its
/// DER chain, SHA-256 of its end-entity certificate).
fn checked_chain(app: &App, pem_text: &str, now: i64) -> Result<Vec<Vec<u8>>, ApiError> {
    let ders = ibp_auth::trust::pem_certificates(pem_text.as_bytes())
        .map_err(|e| ApiError::bad(format!("chain: {e}")))?;
    if ders.is_empty() || ders.len() > MAX_CHAIN {
        return Err(ApiError::bad(format!(
            "chain must hold 1 to {MAX_CHAIN} PEM certificates, the one to link first"
        )));
    }
    let certs: Vec<CertificateDer<'_>> = ders
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let verified = ibp_auth::verify::verify_certificates(&certs, &app.trust.get(), now)
        .map_err(|e| refused(format!("the certificate to link is refused: {e}")))?;
    if verified.ee_index != 0 {
        return Err(ApiError::bad(
            "a proxy cannot be linked: give the end-entity certificate",
        ));
    }
    Ok(ders)
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, ApiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| ApiError::bad(format!("certificate: {e}")))
}

/// Refuses a certificate that is already an identity of the VO.
async fn check_free(app: &App, vo: &str, identity: &str, vo_id: &str) -> Result<(), ApiError> {
    match app
        .store
        .membership(vo, identity)
        .await
        .map_err(ApiError::internal)?
    {
        None => Ok(()),
        Some(m) if m.vo_id == vo_id => Err(conflict(format!(
            "{identity} is already linked to your VO ID {vo_id} in VO {vo}"
        ))),
        Some(_) => Err(conflict(format!(
            "{identity} is already an identity of another member of VO {vo}"
        ))),
    }
}

pub async fn challenge(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let now = ibp_auth::unix_now();
    let req: ChallengeRequest = parse_json(&body)?;
    let (by, vo_id, _) = requester(&app, peer, &req.vo, remote, now).await?;
    let ders = checked_chain(&app, &req.chain, now)?;
    let ee = parse(&ders[0])?;
    let identity = cert_identity(&ee);
    check_free(&app, &req.vo, &identity, &vo_id).await?;
    let nonce = {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| ApiError::internal("the system's random generator failed"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let digest = sha256(&ders[0]);
    let expires_at = now + CHALLENGE_LIFETIME;
    app.store
        .link_challenge_put(&ChallengeRow {
            nonce: nonce.clone(),
            vo: req.vo.clone(),
            vo_id: vo_id.clone(),
            identity: identity.clone(),
            requested_by: by.clone(),
            cert_sha256: hex(&digest),
            expires_at,
        })
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(requester = %by, vo = %req.vo, %vo_id, cert = %identity, "link challenge issued");
    let challenge = challenge_bytes(&req.vo, &vo_id, &digest, &nonce, expires_at);
    Ok(Json(ChallengeResponse {
        nonce,
        challenge: crate::api::b64(&challenge),
        expires_at,
        vo: req.vo,
        vo_id,
        identity,
    }))
}

pub async fn link(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = ibp_auth::unix_now();
    let req: LinkRequest = parse_json(&body)?;
    let (by, vo_id, origin) = requester(&app, peer, &req.vo, remote, now).await?;
    let key = format!("link:{by}");
    let failed = |why: String| {
        app.limiter.failed(Some(&key), remote.ip());
        tracing::info!(requester = %by, vo = %req.vo, remote = %remote, reason = %why, "link refused");
        ApiError::new(StatusCode::UNAUTHORIZED, why)
    };
    if req.nonce.is_empty() || req.nonce.len() > 128 {
        return Err(ApiError::bad("nonce must have 1 to 128 bytes"));
    }
    // Taken first: whatever follows, this challenge is spent.
    let taken = app
        .store
        .link_challenge_take(&req.nonce)
        .await
        .map_err(ApiError::internal)?;
    let Some(ch) = taken else {
        return Err(failed(
            "unknown or already used challenge: ask for a new one".into(),
        ));
    };
    if ch.expires_at < now {
        return Err(failed("the challenge expired: ask for a new one".into()));
    }
    if ch.vo != req.vo || ch.vo_id != vo_id || ch.requested_by != by {
        return Err(failed(
            "the challenge was issued for another VO, member or credential".into(),
        ));
    }
    let ders = checked_chain(&app, &req.chain, now)?;
    let digest = sha256(&ders[0]);
    if hex(&digest) != ch.cert_sha256 {
        return Err(failed(
            "the challenge was issued for another certificate".into(),
        ));
    }
    let ee = parse(&ders[0])?;
    let identity = cert_identity(&ee);
    let signature = base64::engine::general_purpose::STANDARD
        .decode(req.signature.trim())
        .map_err(|_| ApiError::bad("signature must be base64"))?;
    let msg = challenge_bytes(&req.vo, &vo_id, &digest, &req.nonce, ch.expires_at);
    if !ibp_auth::keys::verify_with_spki(ee.public_key().raw, &msg, &signature) {
        return Err(failed(
            "the signature does not verify with the certificate's key: possession not proven"
                .into(),
        ));
    }
    app.limiter.succeeded(&key, remote.ip());
    check_free(&app, &req.vo, &identity, &vo_id).await?;

    let audit = |kind: &str| AuditRow {
        id: crate::store::new_audit_id(),
        kind: kind.into(),
        serial: hex(ee.raw_serial()),
        subject: identity.clone(),
        identity: by.clone(),
        vo: req.vo.clone(),
        vo_id: vo_id.clone(),
        not_before: ee.validity().not_before.timestamp(),
        not_after: ee.validity().not_after.timestamp(),
        lifetime: 0,
        issued_at: now,
        remote: remote.ip().to_string(),
    };
    let approval = app
        .live
        .get()
        .vos
        .get(&req.vo)
        .is_some_and(|v| v.link_approval);
    if approval {
        // Time-ordered (microseconds first), so requests list in order.
        let id = crate::store::new_audit_id();
        let added = app
            .store
            .link_request_add(&LinkRequestRow {
                id: id.clone(),
                vo: req.vo.clone(),
                vo_id: vo_id.clone(),
                identity: identity.clone(),
                linked_from: origin,
                requested_by: by.clone(),
                subject: ee.subject().to_string(),
                serial: hex(ee.raw_serial()),
                not_after: ee.validity().not_after.timestamp(),
                requested_at: now,
                state: "pending".into(),
                decided_at: None,
                decided_by: None,
            })
            .await
            .map_err(ApiError::internal)?;
        if let Err(other) = added {
            return Err(conflict(format!(
                "a link of {identity} is already waiting for a VO admin (request {other})"
            )));
        }
        app.store
            .audit_insert(&audit("link-request"))
            .await
            .map_err(ApiError::internal)?;
        tracing::info!(requester = %by, vo = %req.vo, %vo_id, cert = %identity, request = %id, "link request waits for a VO admin");
        return Ok((
            StatusCode::ACCEPTED,
            Json(LinkResponse {
                status: "pending",
                vo: req.vo,
                vo_id,
                identity,
                request: Some(id),
            }),
        )
            .into_response());
    }
    let outcome = app
        .store
        .link_self(&req.vo, &identity, &vo_id, &origin)
        .await
        .map_err(ApiError::internal)?;
    match outcome {
        LinkOutcome::Linked => {}
        LinkOutcome::AlreadyYours | LinkOutcome::OtherMember(_) => {
            return Err(conflict(format!(
                "{identity} became an identity of VO {} meanwhile",
                req.vo
            )))
        }
        LinkOutcome::MemberGone => {
            return Err(refused(format!(
                "{by} is no longer a member of VO {}",
                req.vo
            )))
        }
    }
    app.store
        .audit_insert(&audit("link"))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(requester = %by, vo = %req.vo, %vo_id, cert = %identity, "linked a certificate the member proved to hold");
    Ok(Json(LinkResponse {
        status: "linked",
        vo: req.vo,
        vo_id,
        identity,
        request: None,
    })
    .into_response())
}

/// `online-ca admin member pending`.
pub async fn admin_pending(
    store: &crate::store::Store,
    vo: &str,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let rows = store.link_requests(vo, all).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in rows {
        let decided = match (&r.decided_at, &r.decided_by) {
            (Some(t), Some(b)) => format!(" ({} {} by {b})", r.state, crate::admin::utc(*t)),
            _ => String::new(),
        };
        println!(
            "{}\t{}\t{}\tVO ID {}\tasked {} by {}{decided}",
            r.id,
            r.state,
            r.identity,
            r.vo_id,
            crate::admin::utc(r.requested_at),
            r.requested_by
        );
    }
    Ok(())
}

/// `online-ca admin member approve-link` / `deny-link`: decides, audits
/// (`link-approved`, `link-denied`, remote `admin`).
pub async fn admin_decide(
    store: &crate::store::Store,
    vo: &str,
    id: &str,
    approve: bool,
) -> anyhow::Result<()> {
    let (req, outcome) = store.link_request_decide(vo, id, approve, "admin").await?;
    match outcome {
        LinkOutcome::Linked | LinkOutcome::AlreadyYours => {}
        LinkOutcome::OtherMember(other) => anyhow::bail!(
            "{} is an identity of VO ID {other} now; the request stays pending (deny it)",
            req.identity
        ),
        LinkOutcome::MemberGone => anyhow::bail!(
            "{} is no longer a member of VO {vo} with VO ID {}; the request stays pending (deny it)",
            req.linked_from,
            req.vo_id
        ),
    }
    let now = ibp_auth::unix_now();
    store
        .audit_insert(&AuditRow {
            id: crate::store::new_audit_id(),
            kind: if approve {
                "link-approved"
            } else {
                "link-denied"
            }
            .into(),
            serial: req.serial.clone(),
            subject: req.identity.clone(),
            identity: req.requested_by.clone(),
            vo: vo.into(),
            vo_id: req.vo_id.clone(),
            not_before: req.requested_at,
            not_after: req.not_after,
            lifetime: 0,
            issued_at: now,
            remote: "admin".into(),
        })
        .await?;
    if approve {
        println!(
            "approved request {id}: {} is an identity of VO ID {} in VO {vo}",
            req.identity, req.vo_id
        );
    } else {
        println!("denied request {id}: {} is not linked", req.identity);
    }
    Ok(())
}
