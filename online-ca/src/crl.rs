//! The CA's certificate revocation list: the host certificates revoked
//! with their host (`online-ca admin hosts revoke`) and not yet expired,
//! signed by the CA. Served in `/v1/trust` (`"crl"`, PEM), which
//! `online-ca host-cert trust` and `lors trust fetch` write to
//! `ca/ca.crl` of a trust directory, and at `GET /v1/crl` (DER,
//! `application/pkix-crl`, for tools such as fetch-crl). Every service and
//! client loads `ca/*.crl` with its trust directory and refuses the
//! certificates listed (docs/operator.md, "Revoking a host").
//!
//! The list is made from the database at each request and signed again
//! only when its content changed or the signed one is older than
//! [`RESIGN_AFTER`]; its `nextUpdate` is [`VALIDITY`] ahead. Users'
//! certificates are not listed: they live hours, and removing a member
//! takes effect at every service through the VO attributes already.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::api::{ApiError, App};

/// A signed list is reused for at most this long (same content).
pub const RESIGN_AFTER: i64 = 3600;
/// `nextUpdate - thisUpdate` of every list.
pub const VALIDITY: i64 = 7 * 86_400;

/// Revoked certificates: (serial bytes, revocation time).
type Revoked = Vec<(Vec<u8>, i64)>;

/// The last list signed: (the revoked entries it lists, when, DER).
#[derive(Default)]
pub struct CrlCache(tokio::sync::Mutex<Option<(Revoked, i64, Vec<u8>)>>);

/// The current revocation list (DER).
pub async fn current(app: &App) -> Result<Vec<u8>, ApiError> {
    let now = ibp_auth::unix_now();
    let revoked = app
        .store
        .revoked_host_certs(now)
        .await
        .map_err(ApiError::internal)?;
    let mut cache = app.crl.0.lock().await;
    if let Some((listed, made, der)) = &*cache {
        if *listed == revoked && (0..RESIGN_AFTER).contains(&(now - made)) {
            return Ok(der.clone());
        }
    }
    // The CRL number only grows: the signing time, one more than the last.
    let number = match &*cache {
        Some((_, made, _)) if *made >= now => made + 1,
        _ => now,
    };
    let der = app
        .ca
        .revocation_list(&revoked, number, number + VALIDITY)
        .map_err(ApiError::internal)?;
    tracing::debug!(revoked = revoked.len(), "signed a revocation list");
    *cache = Some((revoked, number, der.clone()));
    Ok(der)
}

/// The current list as PEM (`X509 CRL`), or `None` (logged) when it
/// cannot be made: `/v1/trust` still answers without it.
pub async fn current_pem(app: &App) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(10), current(app)).await {
        Ok(Ok(der)) => Some(pem::encode(&pem::Pem::new("X509 CRL", der))),
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::warn!("making the revocation list timed out");
            None
        }
    }
}

/// `GET /v1/crl`.
pub async fn serve(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let der = current(&app).await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pkix-crl"),
        )],
        der,
    )
        .into_response())
}
