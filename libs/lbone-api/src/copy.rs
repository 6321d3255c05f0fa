//! `POST /v1/copy-grants`: depot grants for a secure COPY, bound to the
//! *source* depot's key.
//!
//! `{vo?, source, targets: [...]}` → `{vo, vo_id, source, source_key,
//! issued, grants: [{target, grant, grant_not_after}]}`. `source` and each
//! target are grant addresses (`host:tls_port`) of depots registered in
//! the caller's VO with a TLS port. Each grant names a target and is bound
//! to the key the L-Bone itself saw the source present in a TLS handshake
//! (its certificate verified for the registered host): the caller never
//! names a key. Its VO, VO ID and lifetime are the caller's, as in a
//! query's grants. See docs/lbone.md and docs/security.md.

use serde::{Deserialize, Serialize};

/// Most targets in one request.
pub const MAX_COPY_TARGETS: usize = 64;

/// `POST /v1/copy-grants`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyGrantRequest {
    /// The VO to act in (default: the proxy's first VO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vo: Option<String>,
    /// The depot that will send (its secure address, `host:tls_port`).
    pub source: String,
    /// The depots it will STORE into (secure addresses).
    pub targets: Vec<String>,
}

/// One grant for a target, held by the source depot's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyGrant {
    pub target: String,
    pub grant: String,
    pub grant_not_after: i64,
}

/// The answer to `POST /v1/copy-grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyGrants {
    pub vo: String,
    pub vo_id: String,
    pub source: String,
    /// The holder of every grant: SHA-256 of the source's TLS key
    /// (SubjectPublicKeyInfo), hexadecimal.
    pub source_key: String,
    pub issued: i64,
    pub grants: Vec<CopyGrant>,
}
