//! Who the caller is (`whoami`), usage and quotas (`usage`), and a VO's
//! members as this manager knows them (VO admins: list, add, remove,
//! restore).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use ibp_https::{ApiError, Authenticated};
use metadata_api::{
    is_identifier, is_member_id, Group, Member, MemberChange, MemberRequest, Members, Usage,
    UsageLimits, UsageRequest, UsageRow, UsageTotal, VoUsed, Whoami,
};

use super::caller::{AnyScope, Caller};
use super::{ApiResult, App, Body};

pub(super) async fn whoami(
    State(app): State<Arc<App>>,
    Authenticated(AnyScope(who)): Authenticated<AnyScope>,
) -> ApiResult<Json<Whoami>> {
    let member = app.store.member(&who.id.vo, &who.id.vo_id).await?;
    Ok(Json(Whoami {
        principal: who.principal().to_string(),
        groups: who
            .id
            .groups
            .iter()
            .map(|g| Group {
                id: g.id.clone(),
                name: g.name.clone(),
            })
            .collect(),
        admin: who.admin,
        display_name: member.as_ref().and_then(|m| m.display_name.clone()),
        public_key: member.and_then(|m| m.public_key),
        credential_not_after: who.id.not_after,
        vo: who.id.vo,
        vo_id: who.id.vo_id,
        subject: who.id.subject,
        other_vos: who.other_vos,
    }))
}

pub(super) async fn usage(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    body: Body<UsageRequest>,
) -> ApiResult<Json<Usage>> {
    let Json(req) = body?;
    let vo = req.vo.unwrap_or_else(|| who.id.vo.clone());
    if !is_identifier(&vo) {
        return Err(ApiError::bad_request(format!("bad VO name {vo:?}")));
    }
    // A credential belongs to one VO: another VO's usage is none of its
    // business (not even whether that VO uses this manager).
    if vo != who.id.vo {
        return Err(ApiError::forbidden(format!(
            "usage of VO {vo} is shown to its members only; you ({}) are a member of VO {}",
            who.principal(),
            who.id.vo
        )));
    }
    let all = app.store.usage(&vo).await?;
    let held = app.store.vo_held(&vo).await?;
    let limits = app.store.limits();
    let me = who.principal().to_string();
    let admin = who.admin_of(&vo);
    let total = admin.then(|| {
        all.iter().fold(
            UsageTotal {
                files: 0,
                versions: 0,
                logical: 0,
                stored: 0,
            },
            |t, u| UsageTotal {
                files: t.files + u.files,
                versions: t.versions + u.versions,
                logical: t.logical.saturating_add(u.logical),
                stored: t.stored.saturating_add(u.stored),
            },
        )
    });
    let users = all
        .into_iter()
        .filter(|u| admin || u.owner == me)
        .map(|u| UsageRow {
            owner: u.owner,
            files: u.files,
            versions: u.versions,
            logical: u.logical,
            stored: u.stored,
            entries: u.entries,
            exnode_bytes: u.exnode_bytes,
        })
        .collect();
    Ok(Json(Usage {
        vo,
        users,
        total,
        limits: Some(UsageLimits {
            user_entries: limits.user_entries,
            user_exnode_bytes: limits.user_exnode_bytes,
            vo_entries: limits.vo_entries,
            vo_exnode_bytes: limits.vo_exnode_bytes,
        }),
        vo_used: Some(VoUsed {
            entries: held.entries,
            exnode_bytes: held.exnode_bytes,
        }),
    }))
}

pub(super) fn admin_check(app: &App, who: &Caller, vo: &str) -> ApiResult<()> {
    if who.admin_of(vo) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "administering VO {vo} needs its group {:?}, which your attributes lack",
            app.admin_group
        )))
    }
}

pub(super) async fn members_list(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    Path(vo): Path<String>,
) -> ApiResult<Json<Members>> {
    admin_check(&app, &who, &vo)?;
    let members = app
        .store
        .members(&vo)
        .await?
        .into_iter()
        .map(|m| Member {
            has_public_key: m.public_key.is_some(),
            vo_id: m.vo_id,
            subject: m.subject,
            first_seen: m.first_seen,
            removed_at: m.removed_at,
            removed_by: m.removed_by,
            display_name: m.display_name,
        })
        .collect();
    Ok(Json(Members { vo, members }))
}

pub(super) async fn members_add(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    Path(vo): Path<String>,
    body: Body<MemberRequest>,
) -> ApiResult<Json<MemberChange>> {
    let Json(req) = body?;
    admin_check(&app, &who, &vo)?;
    if !is_member_id(&req.vo_id) {
        return Err(ApiError::bad_request(format!("bad VO ID {:?}", req.vo_id)));
    }
    app.store
        .add_member(&vo, &req.vo_id, "(added by a VO admin)")
        .await?;
    tracing::info!(%vo, vo_id = %req.vo_id, by = %who.principal(), "member added");
    Ok(Json(MemberChange {
        vo,
        vo_id: req.vo_id,
        removed: None,
    }))
}

async fn member_state(
    app: &App,
    who: &Caller,
    vo: String,
    req: MemberRequest,
    remove: bool,
) -> ApiResult<Json<MemberChange>> {
    admin_check(app, who, &vo)?;
    let by = who.recipient();
    if remove && req.vo_id == who.id.vo_id {
        return Err(ApiError::bad_request("you cannot remove yourself"));
    }
    let found = app
        .store
        .set_removed(&vo, &req.vo_id, remove.then_some(by.as_str()))
        .await?;
    if !found {
        return Err(ApiError::not_found(format!(
            "unknown member {}@{vo}",
            req.vo_id
        )));
    }
    tracing::warn!(%vo, vo_id = %req.vo_id, by = %by, removed = remove, "membership changed");
    Ok(Json(MemberChange {
        vo,
        vo_id: req.vo_id,
        removed: Some(remove),
    }))
}

pub(super) async fn members_remove(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    Path(vo): Path<String>,
    body: Body<MemberRequest>,
) -> ApiResult<Json<MemberChange>> {
    let Json(req) = body?;
    member_state(&app, &who, vo, req, true).await
}

pub(super) async fn members_restore(
    State(app): State<Arc<App>>,
    Authenticated(who): Authenticated<Caller>,
    Path(vo): Path<String>,
    body: Body<MemberRequest>,
) -> ApiResult<Json<MemberChange>> {
    let Json(req) = body?;
    member_state(&app, &who, vo, req, false).await
}
