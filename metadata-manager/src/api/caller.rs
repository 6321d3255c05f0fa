//! Who is calling and what they may do: the verified caller (the
//! [`Authenticate`] implementations behind the handlers' extractor), and
//! the rights checks every handler makes on the entries it touches.

use ibp_auth::Identity;
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
    pub id: Identity,
    /// In the admin group of their VO.
    pub admin: bool,
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
}

/// A verified caller not yet checked against removals (`get`, the hot
/// path, checks membership in the same query as the file; it then calls
/// [`admit`]).
pub struct Verified(pub Caller);

impl Authenticate<Caller> for App {
    async fn authenticate(&self, peer: &PeerChain) -> ApiResult<Caller> {
        let Verified(who) = <App as Authenticate<Verified>>::authenticate(self, peer).await?;
        check_member(self, &who).await?;
        Ok(who)
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
    /// The caller's verified identity (not yet checked against removals).
    async fn authenticate(&self, peer: &PeerChain) -> ApiResult<Verified> {
        let chain = peer.0.as_deref();
        let id = ApiError::credential(self.identities.peer_identity(
            chain,
            &self.trust,
            ibp_auth::unix_now(),
        ))?;
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
        Ok(Verified(Caller { id, admin }))
    }
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
    if path.is_root() && path.vo() == who.id.vo {
        app.store.ensure_root(path.vo()).await?;
    }
    let Some(e) = app.store.entry(path.as_str()).await? else {
        return Err(ApiError::not_found(format!(
            "no such file or directory: {path}"
        )));
    };
    let have = rights_on(app, who, &e).await?;
    if !have.contains(need) {
        return Err(ApiError::forbidden(format!(
            "{} right on {path} is needed; you ({}) have {have}",
            need.name(),
            who.principal()
        )));
    }
    Ok(e)
}

/// The parent directory of `path`, with the caller holding `need` on it.
pub async fn parent_with(
    app: &App,
    who: &Caller,
    path: &NsPath,
    need: Rights,
) -> ApiResult<EntryRow> {
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
