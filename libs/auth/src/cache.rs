//! A cache of verified peer identities, so that a service answering many
//! requests over one kept-alive connection (or many connections of one
//! client) does not verify the same proxy chain and VO attributes again for
//! every request.
//!
//! Only successes are cached, keyed by SHA-256 of the exact certificate
//! bytes; an entry is used only while the credential is still valid (its
//! earliest `not_after`), for at most `ttl` seconds after it was verified,
//! and never for a clock that went backwards. Authorization (membership,
//! ACLs) is not cached: services still check it on every request.

use std::collections::HashMap;
use std::sync::Mutex;

use ring::digest::{Context, SHA256};
use rustls_pki_types::CertificateDer;

use crate::{verify_chain, AuthError, Identity, TrustStore};

pub struct IdentityCache {
    entries: Mutex<HashMap<[u8; 32], (Identity, i64)>>,
    capacity: usize,
    ttl: i64,
}

fn chain_key(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    for c in chain {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl IdentityCache {
    /// At most `capacity` identities (the cache is emptied when full), each
    /// trusted for at most `ttl_secs` after verification.
    pub fn new(capacity: usize, ttl_secs: i64) -> IdentityCache {
        IdentityCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl: ttl_secs.max(0),
        }
    }

    /// Like [`crate::tls::peer_identity`], answering from the cache when it
    /// can.
    pub fn peer_identity(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        trust: &TrustStore,
        now: i64,
    ) -> Result<Option<Identity>, AuthError> {
        let chain = match chain {
            None | Some([]) => return Ok(None),
            Some(c) => c,
        };
        let key = chain_key(chain);
        if let Ok(map) = self.entries.lock() {
            if let Some((id, at)) = map.get(&key) {
                if now >= *at && now - *at < self.ttl && now <= id.not_after {
                    return Ok(Some(id.clone()));
                }
            }
        }
        let id = verify_chain(chain, trust, now)?;
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(key, (id.clone(), now));
        }
        Ok(Some(id))
    }

    /// Forgets every cached identity (the trust store changed).
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }

    /// Number of cached identities.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
