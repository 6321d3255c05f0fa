//! Members by name within the caller's VO (`POST /v1/names/resolve`,
//! `POST /v1/names/of`) and the caller's display name (`POST
//! /v1/names/set`). A member's certified name is derived from their
//! certificate's subject (`metadata_api::names`; `pseudonym:<p>` for a
//! member of a pseudonymous VO); a display name, chosen by the member,
//! resolves too and is the one shown when set (docs/identity.md,
//! "Pseudonymous members").

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ibp_https::{ApiError, Authenticated};
use metadata_api::names::{
    check_display_name, name_of_subject, NameOf, NamesOfAnswer, NamesOfRequest, ResolveAnswer,
    ResolveRequest, Resolved, SetNameAnswer, SetNameRequest, MAX_NAME, MAX_NAMES,
};

use super::caller::Caller;
use super::{ApiResult, App, Body};

/// Names of the active members of `vo`: name -> VO IDs (certified names
/// and display names alike), and VO ID -> the name shown (the display
/// name when set, else the certified one).
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
        let certified = name_of_subject(&m.subject);
        for n in certified.iter().chain(m.display_name.iter()) {
            let ids = by_name.entry(n.clone()).or_default();
            if !ids.contains(&m.vo_id) {
                ids.push(m.vo_id.clone());
            }
        }
        if let Some(n) = m.display_name.or(certified) {
            by_id.insert(m.vo_id, n);
        }
    }
    Ok((by_name, by_id))
}

/// Sets or clears the caller's display name. A name another active
/// member of the VO already carries (certified or chosen, letter case
/// aside) is refused (409), so that a display name cannot pass for
/// someone else's; the name is never derived from the login.
#[tracing::instrument(skip_all, fields(vo = %who.id.vo, vo_id = %who.id.vo_id))]
pub(super) async fn set_name(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<SetNameRequest>,
) -> ApiResult<Json<SetNameAnswer>> {
    let Json(req) = body?;
    let vo = &who.id.vo;
    let name = match req.name.as_deref() {
        Some(raw) => Some(check_display_name(raw).map_err(ApiError::bad_request)?),
        None => None,
    };
    if let Some(n) = name {
        let (by_name, _) = directory(&app, vo).await?;
        let taken = by_name.iter().any(|(other, ids)| {
            other.to_lowercase() == n.to_lowercase() && ids.iter().any(|id| *id != who.id.vo_id)
        });
        if taken {
            return Err(ApiError::conflict(format!(
                "another member of VO {vo} is called {n:?}; choose another display name"
            )));
        }
    }
    app.store.set_display_name(vo, &who.id.vo_id, name).await?;
    tracing::info!(set = name.is_some(), "display name changed");
    Ok(Json(SetNameAnswer {
        vo: vo.clone(),
        vo_id: who.id.vo_id.clone(),
        name: name.map(str::to_owned),
    }))
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
