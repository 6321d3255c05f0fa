//! Who is calling and what they may do: the verified caller (the
//! [`Authenticate`] implementations behind the handlers' extractor), and
//! the rights checks every handler makes on the entries it touches.
//!
//! A maintenance-only credential ([`ibp_auth::Scope::Maintenance`],
//! docs/maintenance.md) is refused by `Authenticated<Caller>`, so every
//! handler refuses it unless it asks for [`AnyScope`] (whoami, stat, list,
//! get, ticket, put); there, [`entry_with`], [`parent_with`],
//! [`maintenance_read`] and [`maintenance_put`] confine it to refreshing,
//! checking and repairing the caller's own existing files.

use ibp_auth::{Identity, Scope};
use ibp_https::{ApiError, Authenticate, PeerChain};
use metadata_api::{is_identifier, is_member_id, Principal, Rights};

use super::{ApiResult, App};
use crate::acl::{effective, user_of, Entry};
use crate::names::NsPath;
use crate::store::{EntryRow, Kind};

/// A verified caller, checked against removals: a handler's
/// `Authenticated<Caller>` (401 without a client certificate, 403 when the
/// attributes do not verify or a VO admin removed the member). Records a
/// member (and their groups) on first contact.
pub struct Caller {
    /// The identity the request acts as: of a multi-VO proxy, the one in
    /// the VO the request names ([`ibp_https::ACTING_VO_HEADER`]), else
    /// the proxy's first VO; never several VOs' groups at once.
    pub id: Identity,
    /// In the admin group of their VO.
    pub admin: bool,
    /// The proxy's other verified VOs: a path in one of them must be
    /// addressed acting for it ([`acting_for`]).
    pub other_vos: Vec<String>,
}

impl Caller {
    pub fn principal(&self) -> Principal {
        user_of(&self.id)
    }
    pub fn recipient(&self) -> String {
        self.principal().to_string()
    }
    pub fn admin_of(&self, vo: &str) -> bool {
        self.admin && self.id.vo == vo
    }
    /// The credential is maintenance-only (docs/maintenance.md).
    pub fn maintenance_only(&self) -> bool {
        self.id.scope == Scope::Maintenance
    }
}

/// A verified caller of any scope, maintenance-only credentials included:
/// the extractor of the handlers maintenance needs (whoami, stat, list,
/// get, ticket, put). Every other handler takes [`Caller`], which refuses
/// them.
pub struct AnyScope(pub Caller);

/// What a maintenance-only caller is told when refused.
fn maintenance_refusal(what: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{what}: this credential is maintenance-only (refresh, check and repair of your own files); log in with `lors login` for anything else"
    ))
}

/// Confines a maintenance-only caller to its own files (read, or write a
/// new version) and to reading directories (stat, list); anyone else
/// passes.
fn maintenance_allows(who: &Caller, e: &EntryRow, need: Rights) -> ApiResult<()> {
    if !who.maintenance_only() {
        return Ok(());
    }
    let own = e.owner.as_ref() == Some(&who.principal());
    let ok = match e.kind {
        Kind::Dir => Rights::READ.contains(need),
        Kind::File => own && Rights::READ.union(Rights::WRITE).contains(need),
    };
    if ok {
        Ok(())
    } else if e.kind == Kind::File && !own {
        Err(maintenance_refusal(&format!(
            "{} is not yours ({})",
            e.path,
            e.owner
                .as_ref()
                .map_or("no owner".into(), |o| o.to_string())
        )))
    } else {
        Err(maintenance_refusal(&format!(
            "{} right on {} refused",
            need.name(),
            e.path
        )))
    }
}

/// Whether a put of `ex` must wrap the data key for its writer: an
/// encrypted version, unless a maintenance-only caller registers it (it
/// sends no wrapped keys; the base version's carry over).
pub fn must_wrap_for_self(who: &Caller, ex: &exnode::Exnode) -> bool {
    ex.encryption.is_some() && !who.maintenance_only()
}

/// `get`: a maintenance-only caller reads only its own files.
pub fn maintenance_read(who: &Caller, e: &EntryRow) -> ApiResult<()> {
    maintenance_allows(who, e, Rights::READ)
}

/// `put` by a maintenance-only caller: only a new version of its own
/// existing file (checked by [`entry_with`]) that keeps the base
/// version's size and data key id, sending no wrapped keys (the base
/// version's carry over): what refresh, trim, augment and repair
/// register. Anyone else passes.
pub async fn maintenance_put(
    app: &App,
    who: &Caller,
    path: &NsPath,
    base_version: u64,
    ex: &exnode::Exnode,
    wrapped_keys: usize,
) -> ApiResult<()> {
    if !who.maintenance_only() {
        return Ok(());
    }
    let key_id = ex.encryption.as_ref().map(|e| e.key_id.as_str());
    if base_version == 0 {
        return Err(maintenance_refusal(&format!("creating {path} refused")));
    }
    if wrapped_keys > 0 {
        return Err(maintenance_refusal(&format!(
            "wrapped keys for {path} refused (the base version's carry over)"
        )));
    }
    let base = app
        .store
        .entry_with_version(
            path.as_str(),
            Some(base_version),
            &who.recipient(),
            &who.id.vo,
            &who.id.vo_id,
        )
        .await?;
    let Some((_, Some(v), ..)) = base else {
        return Err(ApiError::not_found(format!(
            "{path} has no version {base_version}"
        )));
    };
    if v.size != ex.size || v.key_id.as_deref() != key_id {
        return Err(maintenance_refusal(&format!(
            "a version of {path} with another size or data key refused (maintenance keeps the data)"
        )));
    }
    Ok(())
}

/// A verified caller not yet checked against removals (`get`, the hot
/// path, checks membership in the same query as the file; it then calls
/// [`admit`]).
pub struct Verified(pub Caller);

impl Authenticate<Caller> for App {
    async fn authenticate(&self, peer: &PeerChain) -> ApiResult<Caller> {
        <App as Authenticate<Caller>>::authenticate_for(self, peer, None).await
    }

    /// A full credential only: maintenance-only ones are refused here,
    /// before any handler runs (see [`AnyScope`]).
    async fn authenticate_for(&self, peer: &PeerChain, vo: Option<&str>) -> ApiResult<Caller> {
        let AnyScope(who) =
            <App as Authenticate<AnyScope>>::authenticate_for(self, peer, vo).await?;
        if who.maintenance_only() {
            tracing::info!(vo = %who.id.vo, vo_id = %who.id.vo_id, "refused a maintenance-only credential");
            return Err(maintenance_refusal("this request"));
        }
        Ok(who)
    }
}

impl Authenticate<AnyScope> for App {
    async fn authenticate(&self, peer: &PeerChain) -> ApiResult<AnyScope> {
        <App as Authenticate<AnyScope>>::authenticate_for(self, peer, None).await
    }

    async fn authenticate_for(&self, peer: &PeerChain, vo: Option<&str>) -> ApiResult<AnyScope> {
        let Verified(who) =
            <App as Authenticate<Verified>>::authenticate_for(self, peer, vo).await?;
        check_member(self, &who).await?;
        Ok(AnyScope(who))
    }
}

/// [`admit`]s a verified caller by their membership as the store has it.
pub async fn check_member(app: &App, who: &Caller) -> ApiResult<()> {
    let member = app.store.member(&who.id.vo, &who.id.vo_id).await?;
    admit(app, who, member.map(|m| m.removed_at.map(|_| m.removed_by))).await
}

/// Refuses a member a VO admin removed; records one seen for the first
/// time. `member`: `None` unknown, `Some(None)` a member, `Some(Some(by))`
/// removed (by whom, if recorded).
pub async fn admit(
    app: &App,
    who: &Caller,
    member: Option<Option<Option<String>>>,
) -> ApiResult<()> {
    let id = &who.id;
    match member {
        Some(Some(by)) => {
            tracing::warn!(vo = %id.vo, vo_id = %id.vo_id, "refused a removed member");
            Err(ApiError::forbidden(format!(
                "VO {} removed member {} from this metadata manager (by {}); ask a VO admin",
                id.vo,
                id.vo_id,
                by.as_deref().unwrap_or("an admin")
            )))
        }
        Some(None) => Ok(()),
        None => {
            app.store.add_member(&id.vo, &id.vo_id, &id.subject).await?;
            tracing::info!(vo = %id.vo, vo_id = %id.vo_id, subject = %id.subject, "new member");
            Ok(())
        }
    }
}

impl Authenticate<Verified> for App {
    async fn authenticate(&self, peer: &PeerChain) -> ApiResult<Verified> {
        <App as Authenticate<Verified>>::authenticate_for(self, peer, None).await
    }

    /// The caller's verified identity (not yet checked against removals),
    /// in the VO the request acts for (`vo`, see [`acting_identity`]).
    async fn authenticate_for(&self, peer: &PeerChain, vo: Option<&str>) -> ApiResult<Verified> {
        let chain = peer.0.as_deref();
        let all = ApiError::credential(self.identities.peer_identity(
            chain,
            &self.trust.get(),
            ibp_auth::unix_now(),
        ))?;
        let (id, other_vos) = acting_identity(all, vo)?;
        // Principals are `user:ID@VO`: an ID outside the identifier alphabet
        // could be stored as an owner but never parsed back (every later read
        // of the entry, and listings of its directory, would fail).
        if !is_identifier(&id.vo) || !is_member_id(&id.vo_id) {
            return Err(ApiError::forbidden(format!(
                "credential refused: VO {:?} / VO ID {:?} cannot be used here (VO: letters, digits, '.', '_', '-'; VO ID also ':'; at most 128)",
                id.vo, id.vo_id
            )));
        }
        note_groups(self, &id).await?;
        let admin = id.groups.iter().any(|g| g.name == self.admin_group);
        Ok(Verified(Caller {
            id,
            admin,
            other_vos,
        }))
    }
}

/// The identity a request acting for `vo` uses, and the credential's
/// other verified VOs: in a VO the proxy carries, its identity there
/// alone; in a VO whose attribute set was refused, 403 naming why; in any
/// other VO (or none named), the proxy's first VO, as for a single-VO
/// proxy (a non-member of the VO addressed, who may still hold rights an
/// ACL gave their VO).
pub fn acting_identity(all: Identity, vo: Option<&str>) -> ApiResult<(Identity, Vec<String>)> {
    let id = match vo {
        Some(vo) if vo != all.vo => match all.for_vo(vo) {
            Ok(id) => id,
            Err(e @ ibp_auth::AuthError::VoRefused { .. }) => {
                tracing::info!(vo = %vo, error = %e, "refused a request for a VO whose attributes did not verify");
                return Err(ApiError::forbidden(format!("credential refused: {e}")));
            }
            Err(_) => all.single(),
        },
        _ => all.single(),
    };
    let others = all
        .vos()
        .into_iter()
        .filter(|v| *v != id.vo)
        .map(str::to_owned)
        .collect();
    Ok((id, others))
}

/// Refuses a request addressing `path` while acting for another VO the
/// proxy carries (its rights there would be the wrong VO's): clients send
/// [`ibp_https::ACTING_VO_HEADER`] with the path's VO.
pub fn acting_for(who: &Caller, path: &NsPath) -> ApiResult<()> {
    let vo = path.vo();
    if vo != who.id.vo && who.other_vos.iter().any(|v| v == vo) {
        return Err(ApiError::forbidden(format!(
            "{path} is in VO {vo}, which your proxy carries, but this request acts for VO {}; send the {} header naming {vo} (lors does)",
            who.id.vo,
            ibp_https::ACTING_VO_HEADER
        )));
    }
    Ok(())
}

/// Records the caller's groups (those whose ID an ACL could name) the
/// first time this process sees them.
async fn note_groups(app: &App, id: &Identity) -> ApiResult<()> {
    for g in id.groups.iter().filter(|g| is_member_id(&g.id)) {
        let key = (id.vo.clone(), g.id.clone(), g.name.clone());
        let new = app
            .groups_seen
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(true);
        if new {
            if let Err(e) = app.store.note_group(&id.vo, &g.id, &g.name).await {
                if let Ok(mut s) = app.groups_seen.lock() {
                    s.remove(&key);
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}

pub fn parse_path(raw: &str) -> ApiResult<NsPath> {
    NsPath::parse(raw).map_err(ApiError::bad_request)
}

/// The caller's rights on an entry.
pub async fn rights_on(app: &App, who: &Caller, e: &EntryRow) -> ApiResult<Rights> {
    let acl = app.store.acl(&e.id, false).await?;
    Ok(rights_with(who, e, &acl))
}

pub fn rights_with(who: &Caller, e: &EntryRow, acl: &[Entry]) -> Rights {
    match &e.owner {
        Some(owner) => effective(&who.id, owner, &e.vo, acl, who.admin),
        None => {
            // A VO root has no owner: its ACL, plus admin for VO admins.
            let nobody = Principal::User {
                vo: String::new(),
                id: String::new(),
            };
            effective(&who.id, &nobody, &e.vo, acl, who.admin)
        }
    }
}

/// The entry at `path`, with the caller holding `need` on it: 404 when it
/// does not exist, 403 naming the right when it is refused. (Names are not
/// secret from VO members: the VO root is listable by all of them.)
pub async fn entry_with(
    app: &App,
    who: &Caller,
    path: &NsPath,
    need: Rights,
) -> ApiResult<EntryRow> {
    acting_for(who, path)?;
    if path.is_root() && path.vo() == who.id.vo {
        app.store.ensure_root(path.vo()).await?;
    }
    let Some(e) = app.store.entry(path.as_str()).await? else {
        return Err(ApiError::not_found(format!(
            "no such file or directory: {path}"
        )));
    };
    let acl = app.store.acl(&e.id, false).await?;
    holds(who, path, &e, &acl, need)?;
    Ok(e)
}

/// Refuses the caller `need` on the entry at `path` (`e`, with its access
/// ACL `acl`) unless they hold it: 403 naming the right.
pub fn holds(
    who: &Caller,
    path: &NsPath,
    e: &EntryRow,
    acl: &[Entry],
    need: Rights,
) -> ApiResult<()> {
    let have = rights_with(who, e, acl);
    if !have.contains(need) {
        return Err(ApiError::forbidden(format!(
            "{} right on {path} is needed; you ({}) have {have}",
            need.name(),
            who.principal()
        )));
    }
    maintenance_allows(who, e, need)
}

/// A maintenance-only caller may not create entries: the refusal of
/// `need` on the directory of `path` ([`parent_with`]).
pub fn no_new_entries(who: &Caller, path: &NsPath, need: Rights) -> ApiResult<()> {
    if who.maintenance_only() {
        return Err(maintenance_refusal(&format!(
            "{} right on the directory of {path} refused",
            need.name()
        )));
    }
    Ok(())
}

/// The parent directory of `path`, with the caller holding `need` on it.
pub async fn parent_with(
    app: &App,
    who: &Caller,
    path: &NsPath,
    need: Rights,
) -> ApiResult<EntryRow> {
    no_new_entries(who, path, need)?;
    acting_for(who, path)?;
    let parent = path
        .parent()
        .ok_or_else(|| ApiError::bad_request(format!("{path} is a VO root")))?;
    let e = entry_with(app, who, &parent, need).await?;
    if e.kind != Kind::Dir {
        return Err(ApiError::bad_request(format!(
            "{parent} is not a directory"
        )));
    }
    Ok(e)
}
