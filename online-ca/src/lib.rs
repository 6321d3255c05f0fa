//! The online CA: federated login (RADIUS, OIDC, local users) to
//! short-lived certificates with signed VO attributes, attributes for
//! existing certificates over mutual TLS, and VO membership administration.
//! The `online-ca` binary is a thin layer over this library: `serve` is
//! `Config::load`, [`server::bind`], then [`server::run`].
//!
//! See `docs/online-ca.md`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod ca;
pub mod config;
pub mod crl;
pub mod host_cert;
pub mod hosts;
pub mod init;
pub mod link;
pub mod local;
pub mod maintenance;
pub mod md5;
pub mod oidc;
pub mod radius_auth;
pub mod ratelimit;
pub mod server;
pub mod store;
