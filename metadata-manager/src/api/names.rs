//! Members by name within the caller's VO (`POST /v1/names/resolve`,
//! `POST /v1/names/of`); names are derived from certificate subjects
//! (`metadata_api::names`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ibp_https::{ApiError, Authenticated};
use metadata_api::names::{
    name_of_subject, NameOf, NamesOfAnswer, NamesOfRequest, ResolveAnswer, ResolveRequest,
    Resolved, MAX_NAME, MAX_NAMES,
};

use super::caller::Caller;
use super::{ApiResult, App, Body};

/// Names of the active members of `vo`: name -> VO IDs, and VO ID -> name.
async fn directory(
    app: &App,
    vo: &str,
) -> ApiResult<(HashMap<String, Vec<String>>, HashMap<String, String>)> {
    let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
    let mut by_id = HashMap::new();
    for m in app.store.members(vo).await? {
        if m.removed_at.is_some() {
            continue;
        }
        if let Some(n) = name_of_subject(&m.subject) {
            by_name.entry(n.clone()).or_default().push(m.vo_id.clone());
            by_id.insert(m.vo_id, n);
        }
    }
    Ok((by_name, by_id))
}

fn check_count(n: usize) -> ApiResult<()> {
    if n > MAX_NAMES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_NAMES} names per request, not {n}"
        )));
    }
    Ok(())
}

/// The VO IDs of active members carrying each name, in the caller's VO.
pub(super) async fn resolve(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<ResolveRequest>,
) -> ApiResult<Json<ResolveAnswer>> {
    let Json(req) = body?;
    check_count(req.names.len())?;
    if let Some(n) = req.names.iter().find(|n| n.len() > MAX_NAME) {
        return Err(ApiError::bad_request(format!(
            "a name is at most {MAX_NAME} bytes ({} given)",
            n.len()
        )));
    }
    let (by_name, _) = directory(&app, &who.id.vo).await?;
    let resolved = req
        .names
        .into_iter()
        .map(|name| {
            let mut vo_ids = by_name.get(&name).cloned().unwrap_or_default();
            vo_ids.sort();
            Resolved { name, vo_ids }
        })
        .collect();
    Ok(Json(ResolveAnswer {
        vo: who.id.vo,
        resolved,
    }))
}

/// The names of VO IDs of the caller's VO (unknown and removed ones left out).
pub(super) async fn names_of(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<NamesOfRequest>,
) -> ApiResult<Json<NamesOfAnswer>> {
    let Json(req) = body?;
    check_count(req.vo_ids.len())?;
    let (by_name, by_id) = directory(&app, &who.id.vo).await?;
    let names = req
        .vo_ids
        .into_iter()
        .filter_map(|vo_id| {
            let name = by_id.get(&vo_id)?.clone();
            let unique = by_name.get(&name).is_some_and(|ids| ids.len() == 1);
            Some(NameOf {
                vo_id,
                name,
                unique,
            })
        })
        .collect();
    Ok(Json(NamesOfAnswer {
        vo: who.id.vo,
        names,
    }))
}
