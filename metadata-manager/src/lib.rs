//! The metadata manager: keeps every file's exNode so that users do not
//! have to (lose the exNode, lose the file), decides who may read or change
//! each file, and issues the tickets that depots check before serving a
//! file's blocks.
//!
//! - [`names`]: paths `/VO/dir/name`, checked and normalized;
//! - [`acl`]: rights (`rwda`), VO-qualified principals, evaluation;
//! - [`allocations`]: what a version's exNode says about its allocations;
//! - [`store`]: all SQL (SQLite or PostgreSQL);
//! - [`api`]: the HTTPS API (mutual TLS, JSON);
//! - [`server`], [`config`], [`init`]: the `metadata-manager` daemon.
//!
//! See docs/metadata-manager.md.

#![forbid(unsafe_code)]

pub mod acl;
pub mod allocations;
pub mod api;
pub mod backup;
pub mod config;
pub mod init;
pub mod names;
pub mod server;
pub mod store;
