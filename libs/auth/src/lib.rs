//! Identity and trust for the secure storage stack.
//!
//! Users authenticate with short-lived RFC 3820 proxy certificates that carry
//! VO attributes signed by the VO's attribute authority (AA), in the manner of
//! VOMS. Services verify the proxy part with our own code ([`verify`]) and the
//! rest of the chain with webpki, and identify users by (VO, VO ID), never by
//! a certificate's CN. Services hand each other's users signed, short-lived
//! tokens ([`tokens`]): depot grants from the L-Bone and file tickets from the
//! metadata manager.
//!
//! See `docs/identity.md` for formats and the trust-directory layout.

#![forbid(unsafe_code)]

pub mod address;
pub mod attributes;
pub mod cache;
pub mod credential;
mod der;
mod error;
pub mod keys;
pub mod link;
pub mod oids;
pub mod pki;
pub mod proxy;
pub mod tls;
pub mod tokens;
pub mod trust;
pub mod verify;
pub mod voms;

pub use attributes::{Group, Scope, VoAttributes};
pub use credential::ProxyCredential;
pub use error::AuthError;
pub use trust::TrustStore;
pub use verify::{verify_chain, Identity, OtherVos};

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// SHA-256 of a public key's SubjectPublicKeyInfo: how tokens name their holder.
pub fn key_hash(spki_der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
