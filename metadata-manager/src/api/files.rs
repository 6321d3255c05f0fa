//! Files and directories: `stat`, `list`, `mkdir`, `move`, `delete`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ibp_https::{ApiError, Authenticated};
use metadata_api::{
    Deleted, EntryInfo, EntryKind, ListPage, ListRequest, MkdirRequest, MoveRequest, Moved,
    PathRequest, Released, Rights, VersionRequest,
};

use super::caller::{acting_for, entry_with, parent_with, parse_path, rights_on, AnyScope, Caller};
use super::{ApiResult, App, Body, LIST_DEFAULT, LIST_MAX};
use crate::store::{Dropped, EntryRow, Kind, StoreError};

/// An entry as the API shows it.
pub(super) fn view(e: &EntryRow) -> EntryInfo {
    EntryInfo {
        path: e.path.clone(),
        kind: match e.kind {
            Kind::Dir => EntryKind::Dir,
            Kind::File => EntryKind::File,
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
        expires: e.expires,
        readable_until: e.readable_until,
        unreadable: e.unreadable,
        mtime: e.mtime,
    }
}

pub(super) async fn stat(
    State(app): State<Arc<App>>,
    Authenticated(AnyScope(who)): Authenticated<AnyScope>,
    body: Body<PathRequest>,
) -> ApiResult<Json<EntryInfo>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    acting_for(&who, &path)?;
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

pub(super) async fn list(
    State(app): State<Arc<App>>,
    Authenticated(AnyScope(who)): Authenticated<AnyScope>,
    body: Body<ListRequest>,
) -> ApiResult<Json<ListPage>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    let dir = entry_with(&app, &who, &path, Rights::READ).await?;
    if dir.kind != Kind::Dir {
        return Ok(Json(ListPage {
            path: path.as_str().to_owned(),
            entries: vec![view(&dir)],
            next_after: None,
        }));
    }
    let limit = req.limit.unwrap_or(LIST_DEFAULT).clamp(1, LIST_MAX);
    if let Some(a) = &req.after {
        if a.contains('/') {
            return Err(ApiError::bad_request("`after` is a name, not a path"));
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
    Ok(Json(ListPage {
        path: path.as_str().to_owned(),
        entries: rows.iter().map(view).collect(),
        next_after: next,
    }))
}

pub(super) async fn mkdir(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<MkdirRequest>,
) -> ApiResult<Json<EntryInfo>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    if path.is_root() {
        return Err(ApiError::bad_request(format!(
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
                        return Err(ApiError::conflict(format!(
                            "{p} exists and is not a directory"
                        )))
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let e = last.ok_or_else(|| ApiError::bad_request("nothing to create"))?;
    Ok(Json(view(&e)))
}

pub(super) async fn move_entry(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<MoveRequest>,
) -> ApiResult<Json<Moved>> {
    let Json(req) = body?;
    let from = parse_path(&req.from)?;
    let to = parse_path(&req.to)?;
    if from.is_root() || to.is_root() {
        return Err(ApiError::bad_request(
            "a VO root cannot be moved or replaced",
        ));
    }
    if from.vo() != to.vo() {
        return Err(ApiError::bad_request(format!(
            "{from} and {to} are in different VOs' trees; copy instead"
        )));
    }
    if to.is_within(&from) {
        return Err(ApiError::bad_request(format!(
            "cannot move {from} into itself"
        )));
    }
    entry_with(&app, &who, &from, Rights::DELETE).await?;
    parent_with(&app, &who, &to, Rights::WRITE).await?;
    app.store.move_entry(&from, &to).await?;
    tracing::info!(%from, %to, by = %who.principal(), "move");
    Ok(Json(Moved {
        from: from.as_str().to_owned(),
        to: to.as_str().to_owned(),
    }))
}

pub(super) async fn delete(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<VersionRequest>,
) -> ApiResult<Json<Deleted>> {
    let Json(req) = body?;
    let path = parse_path(&req.path)?;
    if path.is_root() {
        return Err(ApiError::bad_request(format!("{path} is a VO root")));
    }
    let e = entry_with(&app, &who, &path, Rights::DELETE).await?;
    // Each capability once, and none a remaining version still names
    // (versions made by refresh, augment or trim share their
    // predecessor's allocations): the store decides from its allocations
    // table, in the transaction of the delete.
    let gone = app.store.delete(&e, req.version).await?;
    let released: Vec<Released> = gone.into_iter().map(released_of).collect();
    tracing::info!(%path, versions = released.len(), by = %who.principal(), "delete");
    Ok(Json(Deleted {
        path: path.as_str().to_owned(),
        released,
    }))
}

/// A dropped version as the API says it.
pub(super) fn released_of(d: Dropped) -> Released {
    Released {
        version: d.version,
        manage: d.manage,
        error: d.error,
    }
}
