//! What a connection knows once `AUTH` succeeded ([`Session`]), and a
//! crypto-level session opened in one ([`CryptoSession`]).

use std::sync::atomic::{AtomicBool, AtomicU32};

use ibp_auth::Identity;
use ibp_depot_client::seal::SessionKeys;

use crate::config::VoPolicy;
use crate::journal::Owner;

/// An authenticated session: who, and what their VO may do here.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub owner: Owner,
    pub policy: VoPolicy,
    /// When the grant stops being valid.
    pub not_after: i64,
    /// A depot acting for the grant's user (the source of a secure COPY):
    /// it may only STORE and WRITE.
    pub delegated: bool,
}

/// A crypto-level session: the authenticated session it belongs to and the
/// keys exported from its TLS connection.
pub struct CryptoSession {
    pub session: Session,
    pub keys: SessionKeys,
    /// Data connections joined so far (numbers them from 1).
    pub joined: AtomicU32,
    /// Set when the TLS connection that opened it closes.
    pub ended: AtomicBool,
}
