//! ACLs: `acl/get` and `acl/set` (admin right on the entry).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ibp_https::{ApiError, Authenticated};
use metadata_api::{Acl, AclEntry, AclSetRequest, PathRequest, Principal, Rights};

use super::caller::{entry_with, parse_path, Caller};
use super::{ApiResult, App, Body, MAX_ACL};
use crate::acl::Entry;
use crate::store::{EntryRow, Kind};

async fn acl_view(app: &App, e: &EntryRow) -> ApiResult<Acl> {
    let access = app.store.acl(&e.id, false).await?;
    let default = if e.kind == Kind::Dir {
        Some(
            app.store
                .acl(&e.id, true)
                .await?
                .iter()
                .map(AclEntry::from)
                .collect(),
        )
    } else {
        None
    };
    Ok(Acl {
        path: e.path.clone(),
        owner: e.owner.as_ref().map(|o| o.to_string()),
        access: access.iter().map(AclEntry::from).collect(),
        default,
    })
}

pub(super) async fn acl_get(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<PathRequest>,
) -> ApiResult<Json<Acl>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    Ok(Json(acl_view(&app, &e).await?))
}

/// Checks ACL entries: known users and groups only, no duplicates.
async fn resolve_acl(app: &App, list: &[AclEntry]) -> ApiResult<Vec<Entry>> {
    if list.len() > MAX_ACL {
        return Err(ApiError::bad_request(format!(
            "more than {MAX_ACL} ACL entries"
        )));
    }
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for j in list {
        let rights = Rights::parse(&j.rights).map_err(ApiError::bad_request)?;
        if rights.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{}: an entry without rights grants nothing (rights only add up); leave it out",
                j.principal
            )));
        }
        let principal = match Principal::parse(&j.principal).map_err(ApiError::bad_request)? {
            Principal::User { vo, id } => {
                if app.store.member(&vo, &id).await?.is_none() {
                    return Err(ApiError::bad_request(format!(
                        "unknown user {id}@{vo}: no such member has used this metadata manager (they can run `lors whoami`, or a VO admin can add them)"
                    )));
                }
                Principal::User { vo, id }
            }
            Principal::Group { vo, id } => match app.store.group_id(&vo, &id).await? {
                Some(gid) => Principal::Group { vo, id: gid },
                None => {
                    return Err(ApiError::bad_request(format!(
                    "unknown group {id}@{vo}: no member of it has used this metadata manager yet"
                )))
                }
            },
            p @ Principal::Vo(_) => p,
        };
        if out.iter().any(|e| e.principal == principal) {
            return Err(ApiError::bad_request(format!(
                "{principal} is listed twice"
            )));
        }
        out.push(Entry { principal, rights });
    }
    Ok(out)
}

pub(super) async fn acl_set(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<AclSetRequest>,
) -> ApiResult<Json<Acl>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    let e = entry_with(&app, &who, &path, Rights::ADMIN).await?;
    if req.access.is_none() && req.default.is_none() {
        return Err(ApiError::bad_request(
            "give `access` and/or `default` entries",
        ));
    }
    if req.default.is_some() && e.kind != Kind::Dir {
        return Err(ApiError::bad_request(format!(
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
