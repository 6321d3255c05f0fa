//! What every listener allows one client and what those limits count
//! across connections: [`Limits`] from the configuration, [`Guards`]
//! (crypto-level sessions per peer), [`Pace`] (a transfer's minimum rate).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// What every listener (legacy, TLS, data) allows one client, from the
/// configuration (`docs/depot.md`, "Slow and greedy clients").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Simultaneous connections from one address (an IPv6 client: its
    /// /64) on each listener; more are closed at once.
    pub per_address: usize,
    /// A new connection's first complete request line must arrive within
    /// this (on the TLS port: after the handshake).
    pub first_request: Duration,
    /// The TLS handshake must complete within this.
    pub handshake: Duration,
    /// Once a request line's first byte arrived, the rest must follow
    /// within this.
    pub request_line: Duration,
    /// Crypto-level sessions one TLS connection may hold.
    pub crypto_per_connection: usize,
    /// Crypto-level sessions one peer (TLS client key) may hold over all
    /// its connections.
    pub crypto_per_peer: usize,
    /// The slowest average rate of a bulk transfer, bytes per second
    /// ([`Pace`]).
    pub min_transfer_rate: u64,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Limits {
        Limits {
            per_address: cfg.max_connections_per_address,
            first_request: cfg.first_request_timeout.as_duration(),
            handshake: cfg.handshake_timeout.as_duration(),
            request_line: cfg.request_line_timeout.as_duration(),
            crypto_per_connection: cfg.max_crypto_sessions_per_connection,
            crypto_per_peer: cfg.max_crypto_sessions_per_peer,
            min_transfer_rate: cfg.min_transfer_rate.0,
        }
    }
}

/// The pace a bulk transfer (a STORE/WRITE body, a LOAD payload) must keep,
/// as Apache's mod_reqtimeout `MinRate`: it may take `grace` plus one second
/// for every `min_rate` bytes moved so far. Each wait for the peer is
/// bounded by the sooner of that deadline and the per-read I/O timeout, so
/// a peer that sends (or reads) a byte just before every I/O timeout is cut
/// off once it falls behind, not after hours.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    start: Instant,
    grace: Duration,
    min_rate: u64,
}

impl Pace {
    /// A transfer starting now.
    pub fn new(grace: Duration, min_rate: u64) -> Pace {
        Pace {
            start: Instant::now(),
            grace,
            min_rate: min_rate.max(1),
        }
    }

    /// How long the next wait may last once `moved` bytes have moved: the
    /// sooner of `io_timeout` and what is left of the pace's deadline (zero
    /// when it has passed: a wait that is ready at once still succeeds).
    pub fn limit(&self, moved: u64, io_timeout: Duration) -> Duration {
        self.limit_at(Instant::now(), moved, io_timeout)
    }

    /// [`limit`](Self::limit) at the time `now`.
    pub fn limit_at(&self, now: Instant, moved: u64, io_timeout: Duration) -> Duration {
        let earned = Duration::from_secs_f64(moved as f64 / self.min_rate as f64);
        let deadline = self.start + self.grace.saturating_add(earned);
        deadline.saturating_duration_since(now).min(io_timeout)
    }
}

/// The limits, and what they count across connections: crypto-level
/// sessions per peer. One per depot (`Depot::guards`).
pub struct Guards {
    pub limits: Limits,
    /// Open crypto-level sessions by TLS client key; an entry goes when its
    /// count reaches zero.
    crypto_by_peer: Mutex<HashMap<[u8; 32], usize>>,
}

impl Guards {
    pub fn new(limits: Limits) -> Guards {
        Guards {
            limits,
            crypto_by_peer: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_config(cfg: &Config) -> Guards {
        Guards::new(Limits::from_config(cfg))
    }

    /// Counts one more crypto session for `peer`; false (and nothing
    /// counted) when it already holds `crypto_per_peer`.
    pub fn take_crypto(&self, peer: [u8; 32]) -> bool {
        let mut m = self
            .crypto_by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= self.limits.crypto_per_peer {
            return false;
        }
        *n += 1;
        true
    }

    /// Forgets `count` crypto sessions of `peer` (their connection closed).
    pub fn release_crypto(&self, peer: [u8; 32], count: usize) {
        let mut m = self
            .crypto_by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&peer) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                m.remove(&peer);
            }
        }
        shrink(&mut m);
    }

    /// Crypto sessions counted for `peer` (tests, metrics).
    pub fn crypto_sessions_of(&self, peer: &[u8; 32]) -> usize {
        let m = self
            .crypto_by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.get(peer).copied().unwrap_or(0)
    }
}

/// Gives a map's memory back once most of it is unused.
pub fn shrink<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() * 4 < m.capacity() {
        m.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_allows_grace_plus_a_second_per_min_rate_bytes() {
        let io = Duration::from_secs(60);
        let pace = Pace::new(Duration::from_secs(10), 1000);
        let t0 = pace.start;
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(pace.limit_at(at(0), 0, io), Duration::from_secs(10));
        assert_eq!(pace.limit_at(at(0), 5_000, io), Duration::from_secs(15));
        // Never longer than one I/O timeout per wait.
        assert_eq!(pace.limit_at(at(0), 1_000_000, io), io);
        assert_eq!(pace.limit_at(at(9), 0, io), Duration::from_secs(1));
        assert_eq!(pace.limit_at(at(9), 2_000, io), Duration::from_secs(3));
        // A trickler that moved 3 bytes in 20 s is past its deadline ...
        assert_eq!(pace.limit_at(at(20), 3, io), Duration::ZERO);
        // ... one that kept the rate is not.
        assert_eq!(pace.limit_at(at(20), 20_000, io), Duration::from_secs(10));
    }

    #[test]
    fn crypto_sessions_per_peer_are_capped_and_released() {
        let g = Guards::new(Limits {
            per_address: 1,
            first_request: Duration::from_secs(1),
            handshake: Duration::from_secs(1),
            request_line: Duration::from_secs(1),
            crypto_per_connection: 1,
            crypto_per_peer: 2,
            min_transfer_rate: 1,
        });
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(g.take_crypto(a) && g.take_crypto(a));
        assert!(!g.take_crypto(a));
        assert!(g.take_crypto(b));
        g.release_crypto(a, 2);
        assert_eq!(g.crypto_sessions_of(&a), 0);
        assert!(g.take_crypto(a));
        g.release_crypto(b, 5);
        assert_eq!(g.crypto_sessions_of(&b), 0);
    }

    #[test]
    fn maps_shrink_once_mostly_empty() {
        let mut m: HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        m.retain(|k, _| *k < 10);
        let before = m.capacity();
        shrink(&mut m);
        assert!(m.capacity() < before / 100, "{before} -> {}", m.capacity());
        assert_eq!(m.len(), 10);
    }
}
