//! The IBP depot: an untrusted server that stores time-limited byte
//! allocations behind capabilities and speaks the IBP 1.4 text protocol, and
//! the same commands over TLS 1.3 after IBP_auth on its secure port.
//!
//! Start reading at [`server::run`]; the per-command logic is in
//! [`handlers`] (metadata commands) and [`transfer`] (data commands).

pub mod auth;
pub mod config;
pub mod conn;
pub mod copy_sessions;
pub mod daemon;
pub mod data_port;
pub mod depot;
pub mod failure;
pub mod handlers;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod quota;
pub mod resource;
pub mod secure;
pub mod server;
pub mod session;
mod splice;
pub mod transfer;
pub mod units;

pub use depot::Depot;
