//! The L-Bone's API: the request and answer bodies of its routes and the
//! values they carry (locations, reliability), shared by the server
//! (`lbone`) and its clients (`lors`, `lbone admin`). Plain serde types
//! and pure functions: no I/O.
//!
//! Errors are `{"error": "..."}` (`ibp_https::ErrorBody`). The reference
//! is docs/lbone.md.
//!
//! - [`location`]: [`Location`] (WGS 84) and great-circle distances;
//! - [`query`]: `POST /v1/query` and its [`Offer`] of depots with grants;
//! - [`copy`]: `POST /v1/copy-grants`, grants for a secure COPY held by
//!   the source depot's key;
//! - [`registry`]: VO admins' registrations and member removals.

#![forbid(unsafe_code)]

pub mod copy;
pub mod location;
pub mod query;
pub mod registry;

pub use copy::{CopyGrant, CopyGrantRequest, CopyGrants, MAX_COPY_TARGETS};
pub use location::{Location, EARTH_RADIUS_KM};
pub use query::{Offer, OfferedDepot, QueryRequest, Reliability};
pub use registry::{
    DepotChanges, DepotRemoved, MemberRemoval, NewDepot, RemovedMember, RemovedMembers,
};
