//! The metadata manager's API: the request and answer bodies of every
//! route, and the names they carry (rights, principals, ACL entries, VO
//! names and IDs). The server (`metadata-manager`) and its clients
//! (`lors`) compile against these types, so the two sides cannot drift
//! apart. Plain serde types and pure parsers: no I/O.
//!
//! Every route takes and answers JSON over mutual TLS; errors are
//! `{"error": "..."}` (`ibp_https::ErrorBody`). The reference, with the
//! rights grammar, is docs/metadata-manager.md.
//!
//! - [`access`]: [`Rights`], [`Principal`], [`AclEntry`], identifiers;
//! - [`files`]: entries, listings, versions, tickets, moves, deletes, ACLs;
//! - [`keys`]: key-wrapping public keys and wrapped data keys;
//! - [`members`]: `whoami`, VO members, usage and quotas;
//! - [`names`]: members by name (`alice@vo1`).

#![forbid(unsafe_code)]

pub mod access;
pub mod files;
pub mod keys;
pub mod members;
pub mod names;

pub use access::{is_identifier, is_member_id, AclEntry, Principal, Rights, MAX_ID};
pub use files::*;
pub use keys::*;
pub use members::*;
