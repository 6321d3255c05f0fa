//! `POST /v1/copy-grants`: depot grants for a secure COPY (docs/lbone.md,
//! docs/security.md "Grants for a secure COPY").
//!
//! A user who stored a block on depot S asks for grants for target depots
//! T1..Tn whose holder is S's key, so that S can STORE the block there
//! itself (`2 5 ...`, docs/protocol.md "Secure COPY (5)"). The L-Bone never
//! takes the holder key from the caller: it learns S's key itself, from a
//! TLS handshake with S's registered secure port in which S's certificate
//! is verified for the registered host against the trust directory (the
//! poller's client configuration). Everything else is as in a query's
//! grants: the caller's VO (both S and every T registered in it), VO ID,
//! the removal list, and a lifetime never beyond the caller's credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use ibp_auth::tokens::DepotGrant;
use ibp_auth::Identity;
use ibp_https::{ApiError, Authenticated};
use lbone_api::{CopyGrant, CopyGrantRequest, CopyGrants, MAX_COPY_TARGETS};
use rustls_pki_types::ServerName;

use crate::api::App;
use crate::store::Registration;
use crate::views::address;

/// How long a key learned from a depot's handshake is reused.
const KEY_TTL: Duration = Duration::from_secs(60);

/// Source depots' key hashes learned from TLS handshakes, by address.
#[derive(Default)]
pub struct DepotKeys {
    keys: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

impl DepotKeys {
    fn cached(&self, addr: &str) -> Option<[u8; 32]> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(addr)
            .filter(|(_, at)| at.elapsed() < KEY_TTL)
            .map(|(k, _)| *k)
    }

    fn remember(&self, addr: &str, key: [u8; 32]) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, (_, at)| at.elapsed() < KEY_TTL);
        keys.insert(addr.to_owned(), (key, Instant::now()));
    }
}

/// The key hash of the certificate `r`'s secure port presents, verified
/// for its registered host (cached for [`KEY_TTL`]).
async fn depot_key(app: &App, r: &Registration, tls_port: u16) -> Result<[u8; 32], ApiError> {
    let addr = address(&r.host, tls_port);
    if let Some(k) = app.depot_keys.cached(&addr) {
        return Ok(k);
    }
    let unavailable = |why: String| {
        tracing::info!(depot = %addr, %why, "copy grants: the source depot's key was not learned");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot learn the key of source depot {addr}: {why}"),
        )
    };
    let cfg = app
        .depot_tls
        .as_ref()
        .ok_or_else(|| unavailable("the L-Bone has no TLS client configuration".into()))?
        .get();
    let name = ServerName::try_from(r.host.clone())
        .map_err(|e| unavailable(format!("bad host name: {e}")))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| "no certificate".to_owned())?;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncWriteExt::shutdown(&mut tls),
        )
        .await;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| format!("its certificate does not parse: {e}"))?;
        Ok::<_, String>(ibp_auth::key_hash(cert.public_key().raw))
    };
    let key = tokio::time::timeout(app.liveness.poll_timeout, handshake)
        .await
        .map_err(|_| {
            unavailable(format!(
                "no handshake within {:?}",
                app.liveness.poll_timeout
            ))
        })?
        .map_err(unavailable)?;
    app.depot_keys.remember(&addr, key);
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The registration of `vo` whose secure address is `addr`, and its TLS port.
fn secure_depot<'a>(
    rows: &'a [crate::store::DepotRow],
    vo: &str,
    addr: &str,
    what: &str,
) -> Result<(&'a Registration, u16), ApiError> {
    rows.iter()
        .map(|row| &row.registration)
        .find_map(|r| {
            r.tls_port
                .filter(|&p| address(&r.host, p) == addr)
                .map(|p| (r, p))
        })
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "VO {vo} has no depot with a secure port at {addr:?} (the {what} of a COPY \
                 must be a depot registered in your VO)"
            ))
        })
}

#[tracing::instrument(skip_all)]
pub async fn copy_grants(
    State(app): State<Arc<App>>,
    Authenticated(id): Authenticated<Identity>,
    body: Result<Json<CopyGrantRequest>, JsonRejection>,
) -> Result<Json<CopyGrants>, ApiError> {
    let Json(q) =
        body.map_err(|e| ApiError::bad_request(format!("bad request body: {}", e.body_text())))?;
    let id = crate::api::acting(&app, &id, q.vo.as_deref()).await?;
    if q.targets.is_empty() || q.targets.len() > MAX_COPY_TARGETS {
        return Err(ApiError::bad_request(format!(
            "targets: 1..{MAX_COPY_TARGETS} depot addresses"
        )));
    }
    let rows = app.store.depots(Some(&id.vo)).await?;
    let (source, source_port) = secure_depot(&rows, &id.vo, &q.source, "source")?;
    let mut targets = Vec::with_capacity(q.targets.len());
    for t in &q.targets {
        if *t == q.source {
            return Err(ApiError::bad_request(
                "a depot cannot be the target of its own COPY",
            ));
        }
        targets.push(secure_depot(&rows, &id.vo, t, "target")?);
    }
    let holder = depot_key(&app, source, source_port).await?;
    let lifetime = i64::try_from(app.grant_lifetime.as_secs()).unwrap_or(i64::MAX);
    let issued = ibp_auth::unix_now();
    // Never beyond the caller's own grants: the same lifetime, capped by
    // the caller's credential.
    let grant_not_after = issued.saturating_add(lifetime).min(id.not_after);
    let grants = targets
        .into_iter()
        .map(|(r, port)| {
            let target = address(&r.host, port);
            let grant = DepotGrant {
                depot: target.clone(),
                vo: id.vo.clone(),
                vo_id: id.vo_id.clone(),
                holder,
                issued,
                not_after: grant_not_after,
            }
            .sign(&app.signing_key);
            CopyGrant {
                target,
                grant,
                grant_not_after,
            }
        })
        .collect::<Vec<_>>();
    tracing::info!(vo = %id.vo, vo_id = %id.vo_id, source = %q.source, targets = grants.len(), "copy grants issued");
    Ok(Json(CopyGrants {
        vo: id.vo,
        vo_id: id.vo_id,
        source: q.source,
        source_key: hex(&holder),
        issued,
        grants,
    }))
}
