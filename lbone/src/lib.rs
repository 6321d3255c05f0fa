//! The L-Bone: a directory of IBP depots for virtual organizations.
//!
//! VO admins register depots ([`api`], `lbone admin`), each registration
//! with the VO's own policy; the [`poller`] queries every depot's STATUS and
//! records liveness and capacity ([`liveness`]); VO members ask for depots
//! that suit an allocation ([`select`]) and get, per depot, a `DepotGrant`
//! signed by the L-Bone and bound to their proxy key, and grants for a
//! secure COPY bound to the source depot's key ([`copy_grants`]). All SQL is in
//! [`store`] (SQLite or PostgreSQL). See docs/lbone.md.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod config;
pub mod copy_grants;
pub mod geo;
pub mod init;
pub mod liveness;
pub mod poller;
pub mod select;
pub mod server;
pub mod store;
pub mod views;
