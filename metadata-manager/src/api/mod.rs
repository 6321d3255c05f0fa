//! The metadata manager's HTTPS API: JSON over mutual TLS; errors are
//! `{"error": "..."}` ([`ibp_https::ApiError`]). Paths travel in request
//! bodies (never in URLs), so any UTF-8 name works without escaping. The
//! request and answer types are the `metadata_api` crate's, shared with
//! the clients; the full reference is docs/metadata-manager.md.
//!
//! Every request is authenticated by the caller's proxy chain and VO
//! attributes ([`ibp_auth::Identity`]); identity is (VO, VO ID), never a
//! certificate name. A member a VO admin removed is refused everywhere, so
//! removal takes effect at the caller's next request (and tickets already
//! issued expire within `ticket_lifetime`). Handlers take the caller as
//! [`Authenticated<Caller>`](ibp_https::Authenticated) ([`caller`]).
//!
//! One module per resource:
//! - [`files`]: `stat`, `list`, `mkdir`, `move`, `delete`;
//! - [`versions`]: `put`, `get`, `ticket` (exNodes and signed tickets),
//!   `versions` (a file's versions) and `retention`;
//! - [`acl`]: `acl/get`, `acl/set`;
//! - [`keys`]: `keys/*` and a VO's escrow key;
//! - [`members`]: `whoami`, `usage`, a VO's members (VO admins);
//! - [`budget`]: the body budget every large request waits for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ibp_auth::TrustStore;
pub use ibp_https::ApiError;
use ring::signature::Ed25519KeyPair;

use crate::store::{Store, StoreError};

mod acl;
mod budget;
pub mod caller;
mod files;
mod keys;
mod members;
mod names;
mod versions;

pub use budget::BodyBudget;
pub use caller::Caller;

/// Request bodies at most this long skip the body budget (their memory is
/// bounded by the connection limit).
pub const SMALL_BODY: u64 = 64 << 10;

/// (file, VO, VO ID, holder key hash).
pub type TicketKey = (String, String, String, [u8; 32]);
/// Most tickets kept for reuse.
pub const TICKET_CACHE: usize = 100_000;
/// Most entries in one ACL list.
pub const MAX_ACL: usize = 256;
/// Most wrapped keys sent with one version.
pub const MAX_WRAPPED: usize = 256;
/// Longest wrapped key (text).
pub const MAX_WRAPPED_LEN: usize = 4096;
/// Default and largest page of a listing.
pub const LIST_DEFAULT: u32 = 1000;
pub const LIST_MAX: u32 = 10_000;

/// Everything the handlers share.
pub struct App {
    pub store: Store,
    /// Replaced on SIGHUP (`server::reload`).
    pub trust: ibp_https::Current<TrustStore>,
    /// Verified proxy chains (a client sends the same chain with every
    /// request; membership and rights are still checked every time).
    pub identities: ibp_auth::cache::IdentityCache,
    pub signing_key: Ed25519KeyPair,
    pub ticket_lifetime: Duration,
    pub max_exnode: usize,
    pub admin_group: String,
    /// Tickets recently signed, by (file, VO, VO ID, holder key hash).
    pub tickets: Mutex<HashMap<TicketKey, (String, i64)>>,
    /// Signed exNodes recently served (`versions::SignedCache`).
    pub signed: Mutex<versions::SignedCache>,
    /// Groups already recorded by this process (saves a write per request).
    pub groups_seen: Mutex<HashSet<(String, String, String)>>,
    /// Room for large request bodies, in KiB (`max_buffered_bodies`).
    pub bodies: BodyBudget,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Refused(m) => ApiError::bad_request(m),
            StoreError::Quota(q) => {
                tracing::info!(vo = %q.vo, owner = %q.owner, limit = q.limit, max = q.max, used = q.used, request = q.request, "quota refused a change");
                let detail = metadata_api::QuotaDetail {
                    limit: q.limit.to_owned(),
                    vo: q.vo.clone(),
                    owner: q.owner.clone(),
                    max: q.max,
                    used: q.used,
                    request: q.request,
                };
                ApiError::forbidden(q.to_string()).with_detail("quota", detail)
            }
            StoreError::Database(_) | StoreError::Invalid(_) | StoreError::Group(_) => {
                tracing::error!(error = %e, "database operation failed");
                ApiError::internal("database error")
            }
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
pub(crate) type Body<T> = Result<Json<T>, JsonRejection>;

/// The largest request body accepted: a put carries an exNode as a JSON
/// string (escaping can double it).
pub fn body_limit(max_exnode: usize) -> usize {
    max_exnode.saturating_mul(2).saturating_add(1 << 20)
}

pub fn router(app: Arc<App>) -> Router {
    let body_limit = body_limit(app.max_exnode);
    Router::new()
        .route("/v1/whoami", get(members::whoami))
        .route("/v1/stat", post(files::stat))
        .route("/v1/list", post(files::list))
        .route("/v1/mkdir", post(files::mkdir))
        .route("/v1/put", post(versions::put_version))
        .route("/v1/get", post(versions::get_version))
        .route("/v1/ticket", post(versions::ticket))
        .route("/v1/versions", post(versions::versions))
        .route("/v1/retention", post(versions::retention))
        .route("/v1/move", post(files::move_entry))
        .route("/v1/delete", post(files::delete))
        .route("/v1/acl/get", post(acl::acl_get))
        .route("/v1/acl/set", post(acl::acl_set))
        .route("/v1/usage", post(members::usage))
        .route("/v1/names/resolve", post(names::resolve))
        .route("/v1/names/of", post(names::names_of))
        .route("/v1/names/set", post(names::set_name))
        .route("/v1/keys/me", put(keys::key_register))
        .route("/v1/keys/lookup", post(keys::key_lookup))
        .route("/v1/keys/add", post(keys::key_add))
        .route("/v1/keys/remove", post(keys::key_remove))
        .route("/v1/keys/escrow", post(keys::key_escrow))
        .route("/v1/vos/:vo/escrow", put(keys::escrow_set))
        .route(
            "/v1/vos/:vo/members",
            get(members::members_list).post(members::members_add),
        )
        .route("/v1/vos/:vo/members/remove", post(members::members_remove))
        .route(
            "/v1/vos/:vo/members/restore",
            post(members::members_restore),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            budget::body_budget,
        ))
        .with_state(app)
}
