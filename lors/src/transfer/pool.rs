//! Connections to depots, kept open and reused across blocks.
//!
//! A [`Pool`] holds idle connections per depot address (`host:port` as in a
//! mapping's `depot`). A connection is checked out for one operation (or a
//! few on the same depot) and handed back when it succeeded; one that
//! failed is dropped, since the depot closes a connection after an error
//! reply and a secure session cannot be re-established behind the caller's
//! back. Secure connections are TLS 1.3 with the user's proxy and `AUTH`
//! with the L-Bone's grant for that depot address; a pool for reading only
//! ([`SecureSetup::ticket_reads`]) connects without `AUTH` to depots it has
//! no grant for, since a LOAD's file ticket is its authorization.
//!
//! Depots that failed are remembered ([`Pool::mark_down`]) so later blocks
//! try them last, not first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exnode::Security;
use ibp_depot_client::{ClientError, Connection};
use ibp_proto::Capability;

pub use ibp_depot_client::host_of;

/// Connections kept idle per depot.
const IDLE_PER_DEPOT: usize = 16;

/// Time allowed to connect to a depot and for each of its answers, unless
/// the caller says otherwise (`lors --timeout`): for every depot operation
/// of `lors`, transfers and releases alike. 30 s, not less: a STORE or LOAD
/// of a whole block (up to many MiB) must finish each write or read within
/// it on a slow link; a depot that does not answer at all costs `lors rm`
/// at most that long, its depots being released in parallel.
pub const DEPOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a depot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DepotError {
    #[error("{depot}: {source}")]
    Client {
        depot: String,
        #[source]
        source: ClientError,
    },
    #[error("{depot}: no grant from the L-Bone for this depot's secure port")]
    NoGrant { depot: String },
    #[error("{depot}: the secure port needs a proxy credential and a trust store")]
    NoTls { depot: String },
    #[error("{depot}: the depot offers no crypto level (its CRYPTO reply names no data port); use --security full")]
    CryptoLevel { depot: String },
    #[error("{depot}: bad capability: {detail}")]
    BadCapability { depot: String, detail: String },
}

impl DepotError {
    /// Whether the depot answered (an IBP error) rather than failing to
    /// answer (connection refused, timeout, TLS).
    pub fn answered(&self) -> bool {
        matches!(self, DepotError::Client { source, .. } if source.ibp().is_some())
    }
}

/// How to reach the secure ports: TLS configuration and grants by address.
#[derive(Clone, Default)]
pub struct SecureSetup {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Depot grant per depot address (`host:tls_port`).
    pub grants: HashMap<String, String>,
    /// Connect without `AUTH` where there is no grant: for a pool that only
    /// LOADs with file tickets (downloads work while the L-Bone is down).
    /// Such connections are full-crypto TLS whatever the level asked for.
    pub ticket_reads: bool,
}

/// Idle connections per depot, shared by the tasks of one transfer.
pub struct Pool {
    idle: Mutex<HashMap<(String, &'static str), Vec<Connection>>>,
    down: Mutex<HashSet<String>>,
    secure: SecureSetup,
    timeout: Duration,
    /// Block buffers given back after use, for the next LOAD: a fresh
    /// multi-MiB buffer per block costs a page fault (and a zeroed page)
    /// per 4 KiB, about a fifth of a legacy download's CPU.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Spare buffers kept at most (more are freed): as many as blocks in
/// flight at the default thread counts, with room for a writer behind.
const SPARE_BUFFERS: usize = 16;
/// Larger buffers are freed, not kept.
const SPARE_MAX_CAPACITY: usize = 64 << 20;

impl Pool {
    pub fn new(secure: SecureSetup, timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            down: Mutex::new(HashSet::new()),
            secure,
            timeout,
            spare: Mutex::new(Vec::new()),
        })
    }

    /// An empty buffer, with the capacity of one given back when there is
    /// one.
    pub fn buffer(&self) -> Vec<u8> {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Frees the spare buffers: called when a transfer ends, so that a
    /// pool kept for a session does not hold blocks of memory while idle.
    pub fn free_spare(&self) {
        std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Gives a buffer back for [`Pool::buffer`]; its contents are dropped
    /// (cleared, not zeroed: it is only ever read back after a LOAD
    /// overwrote it).
    pub fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > SPARE_MAX_CAPACITY {
            return;
        }
        buf.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the L-Bone gave a grant for `depot`.
    pub fn has_grant(&self, depot: &str) -> bool {
        self.secure.grants.contains_key(depot)
    }

    /// Whether a secure connection to `depot` would go without `AUTH`.
    fn ticket_only(&self, depot: &str) -> bool {
        self.secure.ticket_reads && !self.has_grant(depot)
    }

    /// Remembers that `depot` failed to answer.
    pub fn mark_down(&self, depot: &str) {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(depot.to_owned());
    }

    pub fn is_down(&self, depot: &str) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(depot)
    }

    /// A connection to `depot` at `level`: an idle one, else a new one.
    pub async fn get(&self, depot: &str, level: Security) -> Result<Connection, DepotError> {
        self.checkout(depot, level).await.map(|(c, _)| c)
    }

    /// [`get`](Self::get), and whether the connection was an idle one
    /// (which the depot may have closed meanwhile: worth one retry on a
    /// new connection when it fails without an answer).
    pub async fn checkout(
        &self,
        depot: &str,
        level: Security,
    ) -> Result<(Connection, bool), DepotError> {
        if let Some(c) = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(depot.to_owned(), level.name()))
            .and_then(Vec::pop)
        {
            return Ok((c, true));
        }
        self.fresh(depot, level).await.map(|c| (c, false))
    }

    /// A new connection to `depot`, never an idle one.
    pub async fn fresh(&self, depot: &str, level: Security) -> Result<Connection, DepotError> {
        let conn = self.connect(depot, level).await;
        if let Err(e) = &conn {
            if !e.answered() {
                self.mark_down(depot);
            }
        }
        conn
    }

    async fn connect(&self, depot: &str, level: Security) -> Result<Connection, DepotError> {
        let err = |source| match source {
            ClientError::NoDataPort => DepotError::CryptoLevel {
                depot: depot.to_owned(),
            },
            source => DepotError::Client {
                depot: depot.to_owned(),
                source,
            },
        };
        if level == Security::Legacy {
            return Connection::legacy(depot, self.timeout).await.map_err(err);
        }
        let tls = self.secure.tls.as_ref().ok_or_else(|| DepotError::NoTls {
            depot: depot.to_owned(),
        })?;
        let grant = match self.secure.grants.get(depot) {
            Some(g) => Some(g.as_str()),
            None if self.secure.ticket_reads => None,
            None => {
                return Err(DepotError::NoGrant {
                    depot: depot.to_owned(),
                })
            }
        };
        // A pool for ticket reads connects without AUTH where it has no
        // grant: full-crypto TLS whatever the level asked for.
        let connected = if level == Security::Crypto && !self.ticket_only(depot) {
            Connection::crypto(depot, tls, grant, self.timeout).await
        } else {
            Connection::full(depot, tls, grant, self.timeout).await
        };
        connected.map_err(err)
    }

    /// Hands a connection back after a successful operation.
    pub fn put(&self, depot: &str, level: Security, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let v = idle.entry((depot.to_owned(), level.name())).or_default();
        if v.len() < IDLE_PER_DEPOT {
            v.push(conn);
        }
    }

    /// The outcome of an operation on a connection the caller keeps using:
    /// on failure the caller drops the connection (and the depot is marked
    /// down if it did not answer).
    pub fn check<T>(&self, depot: &str, result: Result<T, ClientError>) -> Result<T, DepotError> {
        result.map_err(|source| {
            if source.ibp().is_none() {
                self.mark_down(depot);
            }
            DepotError::Client {
                depot: depot.to_owned(),
                source,
            }
        })
    }

    /// Ends one operation on `conn`: on success the connection goes back
    /// to the pool; on failure it is dropped (and the depot marked down if
    /// it did not answer).
    pub fn finish<T>(
        &self,
        depot: &str,
        level: Security,
        conn: Connection,
        result: Result<T, ClientError>,
    ) -> Result<T, DepotError> {
        match result {
            Ok(v) => {
                self.put(depot, level, conn);
                Ok(v)
            }
            Err(source) => {
                if source.ibp().is_none() {
                    self.mark_down(depot);
                }
                Err(DepotError::Client {
                    depot: depot.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Parses a capability string for `depot`.
pub fn parse_cap(depot: &str, cap: &str) -> Result<Capability, DepotError> {
    cap.parse::<Capability>()
        .map_err(|e| DepotError::BadCapability {
            depot: depot.to_owned(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare_count(p: &Pool) -> usize {
        p.spare.lock().unwrap().len()
    }

    #[test]
    fn buffers_are_recycled_empty_and_bounded() {
        let p = Pool::new(SecureSetup::default(), Duration::from_secs(1));
        // Nothing given back yet: a new, unallocated buffer.
        assert_eq!(p.buffer().capacity(), 0);

        let mut b = Vec::with_capacity(1 << 20);
        b.extend_from_slice(b"secret block contents");
        p.recycle(b);
        let again = p.buffer();
        assert!(again.is_empty(), "a recycled buffer comes back cleared");
        assert!(again.capacity() >= 1 << 20, "with its capacity");
        assert_eq!(spare_count(&p), 0);

        // Unallocated and oversized buffers are not kept.
        p.recycle(Vec::new());
        p.recycle(Vec::with_capacity(SPARE_MAX_CAPACITY + 1));
        assert_eq!(spare_count(&p), 0);

        // At most SPARE_BUFFERS are kept.
        for _ in 0..SPARE_BUFFERS + 5 {
            p.recycle(Vec::with_capacity(4096));
        }
        assert_eq!(spare_count(&p), SPARE_BUFFERS);

        // A transfer's end frees them.
        p.free_spare();
        assert_eq!(spare_count(&p), 0);
        assert_eq!(p.buffer().capacity(), 0);
    }
}
