//! HTTPS for the services of the secure storage stack and their clients:
//! JSON over HTTP/1.1 over TLS 1.3 (rustls with the ring provider).
//!
//! - [`client`]: one request per connection, or kept-alive connections
//!   with [`Client::with_keep_alive`]; an optional client credential (the
//!   TLS configuration comes from `ibp_auth::tls::client_config`), timeouts
//!   and a response size limit;
//! - [`server`]: serves an axum router with the peer's certificate chain as
//!   a request extension ([`PeerChain`]), bounded connections, handshake
//!   and header timeouts, and graceful shutdown on a `CancellationToken`.
//!
//! - [`api_error`]: [`ApiError`], a service's error answer (status and
//!   [`ErrorBody`], `{"error": "..."}`);
//! - [`caller`]: [`Authenticated`], the extractor of a verified caller.
//!
//! Identity checks stay with the services: the TLS layer only verifies the
//! chain (`ibp_auth::tls::ProxyClientVerifier`); a service turns the
//! [`PeerChain`] into an `ibp_auth::Identity` with
//! `ibp_auth::tls::peer_identity` in its [`Authenticate`] implementation.

#![forbid(unsafe_code)]

pub mod api_error;
pub mod caller;
pub mod client;
pub mod metrics;
pub mod server;

pub use api_error::{ApiError, ErrorBody};
pub use caller::{Authenticate, Authenticated, ACTING_VO_HEADER};

pub use client::{BaseUrl, Client, HttpError, Response};
pub use hyper::Method;
pub use server::{
    serve, serve_reloadable, serve_with, Current, PeerChain, RemoteAddr, ServeOptions,
};
