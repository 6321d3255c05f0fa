//! Keys: a member's key-wrapping public key, data keys wrapped for a
//! recipient (`user:ID@VO` or `escrow:VO`), and a VO's escrow key.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine as _;
use ibp_https::{ApiError, Authenticated};
use metadata_api::{
    is_identifier, EscrowedKey, KeyAddRequest, KeyAdded, KeyRemoveRequest, KeyRequest, KeysRemoved,
    LookupRequest, Principal, PublicKey, RegisteredKey, Rights, VersionRequest,
};

use super::caller::{acting_for, entry_with, parse_path, Caller};
use super::members::admin_check;
use super::{ApiResult, App, Body, MAX_WRAPPED_LEN};
use crate::store::Kind;

/// A recipient of wrapped keys: `user:ID@VO` or `escrow:VO`.
pub(super) fn check_recipient(r: &str) -> ApiResult<()> {
    if let Some(vo) = r.strip_prefix("escrow:") {
        if is_identifier(vo) {
            return Ok(());
        }
    } else if let Ok(Principal::User { .. }) = Principal::parse(r) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "bad key recipient {r:?}: user:VOID@VO or escrow:VO"
    )))
}

pub(super) fn check_wrapped(w: &str) -> ApiResult<()> {
    if w.is_empty() || w.len() > MAX_WRAPPED_LEN || !w.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::bad_request(format!(
            "a wrapped key must be 1-{MAX_WRAPPED_LEN} printable ASCII characters"
        )));
    }
    Ok(())
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
        Err(ApiError::bad_request(
            "a public key is `x25519 <base64 of 32 bytes>`",
        ))
    }
}

pub(super) async fn key_register(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<KeyRequest>,
) -> ApiResult<Json<RegisteredKey>> {
    let Json(req) = body?;
    let key = check_public_key(&req.public_key)?;
    app.store
        .set_public_key(&who.id.vo, &who.id.vo_id, &key)
        .await?;
    tracing::info!(by = %who.principal(), "registered a key-wrapping public key");
    Ok(Json(RegisteredKey {
        principal: who.recipient(),
        public_key: key,
    }))
}

pub(super) async fn key_lookup(
    State(app): State<Arc<App>>,
    Authenticated(_): Authenticated<Caller>,
    body: Body<LookupRequest>,
) -> ApiResult<Json<PublicKey>> {
    let Json(req) = body?;
    check_recipient(&req.recipient)?;
    let key = if let Some(vo) = req.recipient.strip_prefix("escrow:") {
        app.store.escrow_key(vo).await?
    } else if let Ok(Principal::User { vo, id }) = Principal::parse(&req.recipient) {
        app.store.member(&vo, &id).await?.and_then(|m| m.public_key)
    } else {
        None
    };
    match key {
        Some(k) => Ok(Json(PublicKey {
            recipient: req.recipient,
            public_key: k,
        })),
        None => Err(ApiError::not_found(format!(
            "{} has no registered public key (`lors keys init` registers one)",
            req.recipient
        ))),
    }
}

pub(super) async fn key_add(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<KeyAddRequest>,
) -> ApiResult<Json<KeyAdded>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    check_recipient(&req.recipient)?;
    check_wrapped(&req.wrapped)?;
    if let Ok(Principal::User { vo, id }) = Principal::parse(&req.recipient) {
        if app.store.member(&vo, &id).await?.is_none() {
            return Err(ApiError::bad_request(format!("unknown user {id}@{vo}")));
        }
    }
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    if e.kind != Kind::File {
        return Err(ApiError::bad_request(format!("{path} is a directory")));
    }
    let version = req.version.unwrap_or(e.current_version);
    app.store
        .put_wrapped(&e.id, version, &req.recipient, &req.wrapped)
        .await?;
    tracing::info!(%path, version, recipient = %req.recipient, by = %who.principal(), "wrapped key added");
    Ok(Json(KeyAdded {
        path: e.path,
        version,
        recipient: req.recipient,
    }))
}

pub(super) async fn key_remove(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<KeyRemoveRequest>,
) -> ApiResult<Json<KeysRemoved>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    check_recipient(&req.recipient)?;
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    let n = app.store.remove_wrapped(&e.id, &req.recipient).await?;
    tracing::info!(%path, recipient = %req.recipient, removed = n, by = %who.principal(), "wrapped keys removed");
    Ok(Json(KeysRemoved {
        path: e.path,
        recipient: req.recipient,
        removed: n,
    }))
}

pub(super) async fn key_escrow(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<VersionRequest>,
) -> ApiResult<Json<EscrowedKey>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    acting_for(&who, &path)?;
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
        Some(w) => Ok(Json(EscrowedKey {
            path: e.path,
            id: e.id,
            version,
            recipient,
            wrapped_key: w,
        })),
        None => Err(ApiError::not_found(format!(
            "version {version} of {path} has no key wrapped for {recipient}"
        ))),
    }
}

pub(super) async fn escrow_set(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    Path(vo): Path<String>,
    body: Body<KeyRequest>,
) -> ApiResult<Json<PublicKey>> {
    let Json(req) = body?;
    admin_check(&app, &who, &vo)?;
    let key = check_public_key(&req.public_key)?;
    app.store
        .set_escrow_key(&vo, &key, &who.recipient())
        .await?;
    tracing::warn!(%vo, by = %who.principal(), "escrow public key set");
    Ok(Json(PublicKey {
        recipient: format!("escrow:{vo}"),
        public_key: key,
    }))
}
