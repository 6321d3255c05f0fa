//! Host certificates (docs/online-ca.md, "Host certificates"): the
//! service hosts on the operator's allow-list (`online-ca admin hosts
//! allow`) get short-lived server certificates for the keys they made
//! themselves.
//!
//! - `POST /v1/hosts/enroll` `{name, token, csr}`: the first certificate,
//!   authenticated by the one-time enrollment token `hosts allow` printed
//!   (the CA keeps its SHA-256 only).
//! - `POST /v1/hosts/renew` (mutual TLS with the host's current, still
//!   valid certificate) `{csr}`: the next one.
//!
//! Both answer `{certificate, chain, name, role, names, not_after}`. The
//! certificate says `O=<org>, CN=<name>` and carries the names the CSR
//! asks for (every name of the entry when it asks for none); a name not on
//! the host's entry is refused (403). An unknown host and a wrong token get
//! the same 401 (counted by the rate limiter, keyed `host:<name>`); only
//! the holder of the right token learns that it was spent or expired, or
//! that the host was revoked. Tokens are never logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use ibp_https::server::{PeerChain, RemoteAddr};
use serde::{Deserialize, Serialize};

use crate::api::{parse_json, ApiError, App};
use crate::ca::{check_csr, csr_sans, hex, valid_dns_name, CheckedCsr, San};
use crate::maintenance::{token_matches, NO_GRANT_HASH};
use crate::store::{AuditRow, HostCertRow, HostRow, HostState};

/// Longest token accepted in a request.
const MAX_TOKEN: usize = 256;

fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, m)
}

fn unauthorized(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, m)
}

#[derive(Deserialize)]
pub struct EnrollRequest {
    name: String,
    token: String,
    csr: String,
}

#[derive(Deserialize)]
pub struct RenewRequest {
    csr: String,
}

/// The answer of both endpoints.
#[derive(Debug, Serialize, Deserialize)]
pub struct HostCertResponse {
    /// The host certificate, PEM.
    pub certificate: String,
    /// The CA certificate, PEM.
    pub chain: String,
    pub name: String,
    pub role: String,
    /// `dns:<name>` / `ip:<address>` of the certificate.
    pub names: Vec<String>,
    pub not_after: i64,
}

fn enabled(app: &App) -> Result<crate::config::HostsConfig, ApiError> {
    let hosts = app.live.get().hosts.clone();
    if hosts.enabled {
        Ok(hosts)
    } else {
        Err(forbidden("host certificates are disabled at this CA"))
    }
}

fn csr_of(text: &str) -> Result<CheckedCsr, ApiError> {
    check_csr(text).map_err(|e| ApiError::bad(e.to_string()))
}

/// The names the certificate will carry: those the CSR asks for, each on
/// the host's entry (403 otherwise), or every name of the entry.
fn names_for(host: &HostRow, csr: &CheckedCsr) -> Result<Vec<San>, ApiError> {
    let allowed: Vec<San> = host.names.iter().filter_map(|n| San::parse(n)).collect();
    let asked = csr_sans(csr).map_err(|e| ApiError::bad(e.to_string()))?;
    if asked.is_empty() {
        return Ok(allowed);
    }
    if let Some(n) = asked.iter().find(|n| !allowed.contains(n)) {
        tracing::info!(host = %host.name, name = %n, "host certificate refused: a name not on the allow-list");
        return Err(forbidden(format!(
            "{n} is not on the allow-list for host {} (allowed: {}); the CA operator adds it with `online-ca admin hosts allow`",
            host.name,
            host.names.join(", ")
        )));
    }
    Ok(asked)
}

/// Refuses a revoked host, saying when.
fn not_revoked(host: &HostRow) -> Result<(), ApiError> {
    match host.revoked_at {
        Some(t) => Err(forbidden(format!(
            "host {} was revoked at {}; the CA operator allows it again with `online-ca admin hosts allow`",
            host.name,
            crate::admin::utc(t)
        ))),
        None => Ok(()),
    }
}

/// Issues a host certificate: the answer, and the row to record.
fn issue(
    app: &App,
    host: &HostRow,
    csr: &CheckedCsr,
    lifetime: i64,
) -> Result<(HostCertResponse, HostCertRow, AuditRow), ApiError> {
    let sans = names_for(host, csr)?;
    let cert = app
        .ca
        .issue_host(csr, &host.name, &sans, lifetime)
        .map_err(ApiError::internal)?;
    let now = ibp_auth::unix_now();
    let row = HostCertRow {
        serial: cert.serial_hex.clone(),
        name: host.name.clone(),
        enrollment: host.enrollment.clone(),
        issued_at: now,
        not_after: cert.not_after,
    };
    let audit = AuditRow {
        id: crate::store::new_audit_id(),
        kind: String::new(),
        serial: cert.serial_hex.clone(),
        subject: cert.subject.clone(),
        identity: format!("host:{}", host.name),
        vo: String::new(),
        vo_id: host.role.name().into(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        lifetime,
        issued_at: now,
        remote: String::new(),
    };
    Ok((
        HostCertResponse {
            certificate: crate::ca::cert_pem(&cert.der),
            chain: app.ca.ca_pem().to_string(),
            name: host.name.clone(),
            role: host.role.name().into(),
            names: sans.iter().map(San::to_string).collect(),
            not_after: cert.not_after,
        },
        row,
        audit,
    ))
}

/// Writes the audit record of a recorded host certificate (before it
/// leaves: no certificate without its record).
async fn audit(
    app: &App,
    mut row: AuditRow,
    kind: &str,
    remote: std::net::SocketAddr,
) -> Result<(), ApiError> {
    row.kind = kind.into();
    row.remote = remote.ip().to_string();
    app.store
        .audit_insert(&row)
        .await
        .map_err(ApiError::internal)
}

pub async fn enroll(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    body: Bytes,
) -> Result<Json<HostCertResponse>, ApiError> {
    let cfg = enabled(&app)?;
    let req: EnrollRequest = parse_json(&body)?;
    let name = req.name.to_ascii_lowercase();
    if !valid_dns_name(&name) {
        return Err(ApiError::bad(
            "name must be a host name (letters, digits, hyphens and dots)",
        ));
    }
    let key = format!("host:{name}");
    app.limiter.check(Some(&key), remote.ip()).map_err(|r| {
        tracing::warn!(remote = %remote, host = %name, budget = ?r.budget, "host enrollment rate limited");
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, r.budget.message())
            .retry_after(r.retry_after.as_secs().max(1))
    })?;
    if req.token.is_empty() || req.token.len() > MAX_TOKEN {
        return Err(ApiError::bad(format!(
            "token must have 1 to {MAX_TOKEN} bytes"
        )));
    }
    let found = app
        .store
        .host_get(&name)
        .await
        .map_err(ApiError::internal)?;
    let matched = match &found {
        Some((_, hash)) => token_matches(&req.token, hash),
        None => {
            let _ = token_matches(&req.token, NO_GRANT_HASH);
            false
        }
    };
    let host = match found {
        Some((h, _)) if matched => h,
        _ => {
            app.limiter.failed(Some(&key), remote.ip());
            tracing::info!(remote = %remote, host = %name, "host enrollment refused: not on the allow-list or wrong token");
            return Err(unauthorized(
                "host enrollment refused: the name is not on the allow-list or the token is wrong",
            ));
        }
    };
    app.limiter.succeeded(&key, remote.ip());
    let now = ibp_auth::unix_now();
    not_revoked(&host)?;
    match host.state(now) {
        HostState::Enrolled => {
            return Err(forbidden(format!(
                "this enrollment token of host {} was already used (at {}); renew with the host's certificate (`online-ca host-cert renew`), or ask the CA operator for a new token",
                host.name,
                crate::admin::utc(host.token_used_at.unwrap_or(0))
            )))
        }
        HostState::TokenExpired => {
            return Err(forbidden(format!(
                "the enrollment token of host {} expired at {}; ask the CA operator for a new one (`online-ca admin hosts allow`)",
                host.name,
                crate::admin::utc(host.token_expires_at)
            )))
        }
        HostState::Waiting | HostState::Revoked => {}
    }
    let csr = csr_of(&req.csr)?;
    let (answer, row, record) = issue(&app, &host, &csr, cfg.lifetime.as_i64())?;
    if !app
        .store
        .host_enrolled(&row)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(forbidden(format!(
            "the enrollment token of host {} was used or replaced meanwhile",
            host.name
        )));
    }
    audit(&app, record, "host-enroll", remote).await?;
    tracing::info!(host = %host.name, role = host.role.name(), serial = %row.serial, names = ?answer.names, not_after = answer.not_after, "enrolled a host: issued its certificate");
    Ok(Json(answer))
}

pub async fn renew(
    State(app): State<Arc<App>>,
    Extension(RemoteAddr(remote)): Extension<RemoteAddr>,
    Extension(PeerChain(peer)): Extension<PeerChain>,
    body: Bytes,
) -> Result<Json<HostCertResponse>, ApiError> {
    let cfg = enabled(&app)?;
    let Some(peer) = peer else {
        return Err(unauthorized(
            "renewal needs the host's current certificate (mutual TLS)",
        ));
    };
    let now = ibp_auth::unix_now();
    // Verified in the handshake; again now, as the connection may be old.
    let trust = app.trust.get();
    let chain = ibp_auth::verify::verify_certificates(&peer, &trust, now)
        .map_err(|e| unauthorized(format!("client certificate rejected: {e}")))?;
    let ee = &chain.certs[chain.ee_index];
    let serial = hex(ee.raw_serial());
    let issued = if ee.issuer().as_raw() == app.ca.subject_raw() {
        app.store
            .host_cert(&serial)
            .await
            .map_err(ApiError::internal)?
    } else {
        None
    };
    let Some(issued) = issued else {
        tracing::info!(remote = %remote, subject = %ee.subject(), "host renewal refused: not a host certificate of this CA");
        return Err(forbidden(
            "this certificate is not a host certificate of this CA: enroll with a token first",
        ));
    };
    let Some((host, _)) = app
        .store
        .host_get(&issued.name)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(forbidden(format!(
            "host {} is no longer on the allow-list",
            issued.name
        )));
    };
    not_revoked(&host)?;
    if host.enrollment != issued.enrollment {
        return Err(forbidden(format!(
            "host {} was allowed again after this certificate was issued: enroll with the new token",
            host.name
        )));
    }
    let req: RenewRequest = parse_json(&body)?;
    let csr = csr_of(&req.csr)?;
    let (answer, row, record) = issue(&app, &host, &csr, cfg.lifetime.as_i64())?;
    if !app
        .store
        .host_renewed(&row)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(forbidden(format!(
            "host {} was revoked or allowed again meanwhile",
            host.name
        )));
    }
    audit(&app, record, "host-renew", remote).await?;
    tracing::info!(host = %host.name, role = host.role.name(), old_serial = %serial, serial = %row.serial, not_after = answer.not_after, "renewed a host certificate");
    Ok(Json(answer))
}
