//! Authenticated TLS sessions kept open to other depots between the
//! secure COPYs this depot makes as their source.
//!
//! A `--copies 3` upload asks the depot holding the first replica to COPY
//! every block to two others, with the same grant for each target (the
//! grant the L-Bone issued for the user, bound to this depot's key). A new
//! TLS handshake and AUTH per block cost more CPU than a few MiB of the
//! copy itself, so the session a COPY opened is kept for the next one with
//! **the same target address and the same grant string**: a session acts
//! with the rights of the grant it authenticated with, so it is never used
//! for another grant (another user, another VO, or the same user's renewed
//! grant). The target still judges every request: a session whose grant
//! has expired is refused there as on a new connection.
//!
//! Bounds: [`KEEP_FOR`] idle at most (the depots' own idle timeout, 2
//! minutes by default, is longer), [`PER_TARGET`] sessions per address and
//! grant, [`PER_ADDRESS`] per address, [`TOTAL`] in all; a settings reload (SIGHUP: new certificate or
//! trust) retires every kept session, since it was made with the old
//! client configuration. A session is checked before reuse
//! ([`SecureClient::idle_and_open`]): one the target closed meanwhile is
//! dropped. Expired sessions are dropped whenever the map is touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibp_depot_client::SecureClient;
use tokio::time::Instant;

/// Longest a session is kept idle.
pub const KEEP_FOR: Duration = Duration::from_secs(20);
/// Sessions kept per target address and grant.
pub const PER_TARGET: usize = 4;
/// Sessions kept per target address, all grants together: well below a
/// depot's default `max_connections_per_address` (64), so that idle
/// sessions never take the connections a COPY needs there.
pub const PER_ADDRESS: usize = 8;
/// Sessions kept in all.
pub const TOTAL: usize = 64;

struct Kept {
    client: SecureClient,
    since: Instant,
    /// The client configuration it was made with: a reload retires it.
    config: Arc<rustls::ClientConfig>,
}

/// The sessions kept, by target address and grant.
#[derive(Default)]
pub struct CopySessions {
    kept: Mutex<HashMap<(String, String), Vec<Kept>>>,
}

impl CopySessions {
    /// A kept session to `addr` authenticated with `grant` under `config`,
    /// still open, if there is one.
    pub fn take(
        &self,
        addr: &str,
        grant: &str,
        config: &Arc<rustls::ClientConfig>,
    ) -> Option<SecureClient> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        expire(&mut kept, now);
        let key = (addr.to_owned(), grant.to_owned());
        let v = kept.get_mut(&key)?;
        let mut found = None;
        while let Some(k) = v.pop() {
            if Arc::ptr_eq(&k.config, config) && k.client.idle_and_open() {
                found = Some(k.client);
                break;
            }
        }
        if v.is_empty() {
            kept.remove(&key);
        }
        found
    }

    /// Keeps `client` (its last request answered in full) for the next
    /// COPY to `addr` with `grant`, within the bounds.
    pub fn put(
        &self,
        addr: &str,
        grant: &str,
        config: &Arc<rustls::ClientConfig>,
        client: SecureClient,
    ) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        expire(&mut kept, now);
        let at_address: usize = kept
            .iter()
            .filter(|(k, _)| k.0 == addr)
            .map(|(_, v)| v.len())
            .sum();
        if at_address >= PER_ADDRESS || kept.values().map(Vec::len).sum::<usize>() >= TOTAL {
            return;
        }
        let v = kept.entry((addr.to_owned(), grant.to_owned())).or_default();
        if v.len() < PER_TARGET {
            v.push(Kept {
                client,
                since: now,
                config: config.clone(),
            });
        }
    }
}

fn expire(kept: &mut HashMap<(String, String), Vec<Kept>>, now: Instant) {
    kept.retain(|_, v| {
        v.retain(|k| now.duration_since(k.since) < KEEP_FOR);
        !v.is_empty()
    });
}
