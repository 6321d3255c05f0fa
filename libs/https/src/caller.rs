//! The authenticated caller as an axum extractor: a handler that takes
//! [`Authenticated<C>`] runs only for a caller the service verified, and
//! the others get the service's 401/403 [`ApiError`] before the request
//! body is read.
//!
//! The service says what a verified caller is, and how to get one from the
//! TLS layer's [`PeerChain`], by implementing [`Authenticate<C>`] for its
//! shared state (`S`, held by the router as `Arc<S>`), e.g. an
//! `ibp_auth::Identity` checked against its trust store, plus whatever it
//! checks on every request (membership, removal).

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::api_error::ApiError;
use crate::server::PeerChain;

/// How a service turns the peer's certificate chain into a verified
/// caller `C`, or the error answer for one it refuses.
pub trait Authenticate<C>: Send + Sync + 'static {
    fn authenticate(&self, peer: &PeerChain) -> impl Future<Output = Result<C, ApiError>> + Send;

    /// [`Authenticate::authenticate`] for a request that names the VO it
    /// acts for ([`ACTING_VO_HEADER`]): a service whose requests address
    /// a VO in their body (the metadata manager: the path's VO) picks the
    /// identity of a multi-VO proxy in that VO here. By default the header
    /// is not looked at.
    fn authenticate_for(
        &self,
        peer: &PeerChain,
        vo: Option<&str>,
    ) -> impl Future<Output = Result<C, ApiError>> + Send {
        let _ = vo;
        self.authenticate(peer)
    }
}

/// The request header naming the VO a request acts for, sent by clients
/// holding a multi-VO proxy (docs/identity.md, "Several VOs in one
/// proxy").
pub const ACTING_VO_HEADER: &str = "ibp-vo";

/// A caller verified by the service's [`Authenticate<C>`].
#[derive(Debug, Clone)]
pub struct Authenticated<C>(pub C);

#[axum::async_trait]
impl<S, C> FromRequestParts<Arc<S>> for Authenticated<C>
where
    S: Authenticate<C>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Self, ApiError> {
        // Served by `server::serve`, every request carries the extension;
        // without it there is no client certificate.
        let peer = parts
            .extensions
            .get::<PeerChain>()
            .cloned()
            .unwrap_or(PeerChain(None));
        let vo = parts
            .headers
            .get(ACTING_VO_HEADER)
            .map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::bad_request(format!("the {ACTING_VO_HEADER} header is not text"))
                })
            })
            .transpose()?;
        state.authenticate_for(&peer, vo).await.map(Authenticated)
    }
}
