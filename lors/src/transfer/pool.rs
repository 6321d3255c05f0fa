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
//! try them last, not first, for [`DOWN_FOR`] after their last failure: a
//! pool lives as long as its process (a job linking liblors, a mount), and
//! a depot back from a restart is used again. An answer does not end it
//! early: a half-hung depot that answers ALLOCATE but stalls every STORE
//! would otherwise cost a timeout per block.
//!
//! [`Pool::copy`] asks one depot to COPY a block to another (replicas made
//! by the depots, not sent again by the client). At the secure levels the
//! source depot needs a grant for the target held by its own key: the pool
//! asks its [`CopyGrantSource`] (the L-Bone, `POST /v1/copy-grants`) once
//! per source for all targets and keeps the grants until shortly before
//! they expire.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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

/// Grants for a secure COPY: for each target depot address, a depot grant
/// held by the source depot's key and when it expires (Unix seconds).
pub type CopyGrantList = Vec<(String, String, i64)>;

/// Where a pool gets grants for a secure COPY from (the L-Bone).
pub trait CopyGrantSource: Send + Sync {
    /// Grants for `targets`, held by the key of depot `source` (all secure
    /// addresses, `host:tls_port`); an error in words.
    fn copy_grants<'a>(
        &'a self,
        source: &'a str,
        targets: &'a [String],
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<CopyGrantList, String>> + Send + 'a>,
    >;
}

/// Seconds before its expiry at which a cached COPY grant is asked again.
const COPY_GRANT_MARGIN: i64 = 60;

/// How long a depot that failed without an answer stays "down" after its
/// last failure (tried last; its allocations are not freed by
/// [`super::upload`]'s clean-up): long enough that a dead or half-hung
/// depot costs one timeout per five minutes, not one per block.
pub const DOWN_FOR: Duration = Duration::from_secs(300);
/// How long a (source, target) pair whose COPY failed is not asked to
/// COPY again (the client sends those replicas itself meanwhile).
pub const COPY_BROKEN_FOR: Duration = Duration::from_secs(600);

/// Keys remembered for a while: each is forgotten `ttl` after it was
/// last marked (on the tokio clock, which tests can move).
struct Remembered<K> {
    marked: Mutex<HashMap<K, Instant>>,
    ttl: Duration,
}

impl<K: Eq + Hash> Remembered<K> {
    fn new(ttl: Duration) -> Remembered<K> {
        Remembered {
            marked: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn mark(&self, key: K) {
        let now = Instant::now();
        let mut m = self.marked.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| now.duration_since(*at) < self.ttl);
        m.insert(key, now);
    }

    fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut m = self.marked.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(key) {
            Some(at) if at.elapsed() < self.ttl => true,
            Some(_) => {
                m.remove(key);
                false
            }
            None => false,
        }
    }
}

/// Idle connections per depot, shared by the tasks of one transfer.
pub struct Pool {
    idle: Mutex<HashMap<(String, &'static str), Vec<Connection>>>,
    down: Remembered<String>,
    secure: SecureSetup,
    timeout: Duration,
    /// Block buffers given back after use, for the next LOAD: a fresh
    /// multi-MiB buffer per block costs a page fault (and a zeroed page)
    /// per 4 KiB, about a fifth of a legacy download's CPU.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Where secure COPY grants come from (none: no secure COPY).
    copy_source: Mutex<Option<Arc<dyn CopyGrantSource>>>,
    /// COPY grants by (source, target): the grant and its expiry.
    copy_grants: tokio::sync::Mutex<HashMap<(String, String), (String, i64)>>,
    /// Bytes the depots copied for this pool's transfers, and COPYs that
    /// failed (the client then sent the replica itself).
    copied_bytes: std::sync::atomic::AtomicU64,
    copies_failed: std::sync::atomic::AtomicU64,
    /// (source, target) pairs whose COPY failed: not tried again by this
    /// pool for [`COPY_BROKEN_FOR`] (the client sends those replicas), so
    /// that a depot or an L-Bone without COPY costs one failed attempt,
    /// not one per block.
    copy_broken: Remembered<(String, String)>,
}

/// What depot COPY did for a pool's transfers ([`Pool::copy_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes the depots copied to each other (not sent by the client).
    pub copied_bytes: u64,
    /// COPYs that failed; the client sent those replicas itself.
    pub failed: u64,
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
            down: Remembered::new(DOWN_FOR),
            secure,
            timeout,
            spare: Mutex::new(Vec::new()),
            copy_source: Mutex::new(None),
            copy_grants: tokio::sync::Mutex::new(HashMap::new()),
            copied_bytes: Default::default(),
            copies_failed: Default::default(),
            copy_broken: Remembered::new(COPY_BROKEN_FOR),
        })
    }

    /// Whether a COPY from `source` to `target` is worth trying (none of
    /// this pool's failed in the last [`COPY_BROKEN_FOR`]).
    pub fn copy_usable(&self, source: &str, target: &str) -> bool {
        !self
            .copy_broken
            .contains(&(source.to_owned(), target.to_owned()))
    }

    /// Counts `n` bytes copied by the depots.
    pub fn copied(&self, n: u64) {
        self.copied_bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a COPY from `source` to `target` that failed (the client
    /// sent the replica); that pair is not tried again by this pool for
    /// [`COPY_BROKEN_FOR`].
    pub fn copy_failed(&self, source: &str, target: &str) {
        self.copies_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.copy_broken
            .mark((source.to_owned(), target.to_owned()));
    }

    /// What depot COPY did so far for this pool's transfers.
    pub fn copy_stats(&self) -> CopyStats {
        use std::sync::atomic::Ordering::Relaxed;
        CopyStats {
            copied_bytes: self.copied_bytes.load(Relaxed),
            failed: self.copies_failed.load(Relaxed),
        }
    }

    /// Sets where grants for a secure COPY come from.
    pub fn set_copy_grants(&self, source: Arc<dyn CopyGrantSource>) {
        *self.copy_source.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// A grant for `target` held by `source`'s key: a cached one, else
    /// grants for `source` and every target in `also` (one request).
    async fn copy_grant(
        &self,
        source: &str,
        target: &str,
        also: &[String],
    ) -> Result<String, String> {
        let now = super::now();
        let key = (source.to_owned(), target.to_owned());
        // Held while asking: the blocks of one upload wait for one answer.
        let mut cache = self.copy_grants.lock().await;
        if let Some((g, until)) = cache.get(&key) {
            if *until > now {
                return Ok(g.clone());
            }
        }
        let from = self
            .copy_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "no L-Bone to ask for a COPY grant".to_owned())?;
        let mut targets: Vec<String> = also
            .iter()
            .filter(|t| t.as_str() != source)
            .cloned()
            .collect();
        if !targets.iter().any(|t| t == target) {
            targets.push(target.to_owned());
        }
        for (t, g, not_after) in from.copy_grants(source, &targets).await? {
            cache.insert(
                (source.to_owned(), t),
                (g, not_after.saturating_sub(COPY_GRANT_MARGIN)),
            );
        }
        cache
            .get(&key)
            .map(|(g, _)| g.clone())
            .ok_or_else(|| format!("the L-Bone gave no COPY grant for {target}"))
    }

    /// Asks depot `source` to COPY `size` bytes from `offset` of the
    /// allocation behind `read` into `write` on depot `target` (`uuid` binds a secure
    /// target allocation to its file). At the secure levels the grant for
    /// the target held by the source's key is asked for (with grants for
    /// `others`, the other targets, in the same request) and cached. The
    /// count copied.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy(
        &self,
        source: &str,
        level: Security,
        read: &Capability,
        target: &str,
        write: &Capability,
        offset: u64,
        size: u64,
        uuid: &str,
        others: &[String],
    ) -> Result<u64, DepotError> {
        let grant = if level == Security::Legacy {
            None
        } else {
            Some(
                self.copy_grant(source, target, others)
                    .await
                    .map_err(|reason| DepotError::Client {
                        depot: source.to_owned(),
                        source: ClientError::Refused {
                            error: ibp_proto::IbpError::CapAccessDenied,
                            reason,
                        },
                    })?,
            )
        };
        let (mut conn, reused) = self.checkout(source, level).await?;
        let mut r = conn
            .copy(read, write, offset, size, grant.as_deref(), uuid)
            .await;
        if reused && matches!(&r, Err(e) if e.ibp().is_none()) {
            // A kept connection the depot closed meanwhile: once more on a
            // new one (a COPY that did not answer stored nothing we use).
            conn = self.fresh(source, level).await?;
            r = conn
                .copy(read, write, offset, size, grant.as_deref(), uuid)
                .await;
        }
        self.finish(source, level, conn, r)
    }

    /// An empty buffer, with the capacity of one given back when there is
    /// one.
    pub fn buffer(&self) -> Vec<u8> {
        let mut buf = self.buffer_as_is();
        buf.clear();
        buf
    }

    /// A buffer given back, with the length and the bytes it had (an
    /// earlier block's): for a reader that overwrites the part it uses
    /// and cuts off the rest (the upload's direct reads, which then need
    /// not zero a buffer before reading into it).
    pub fn buffer_as_is(&self) -> Vec<u8> {
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

    /// Gives a buffer back for [`Pool::buffer`] (which clears it; its bytes
    /// are not zeroed: a buffer is only ever read back after a LOAD or a
    /// read overwrote it).
    pub fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > SPARE_MAX_CAPACITY {
            return;
        }
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

    /// Remembers that `depot` failed to answer, for [`DOWN_FOR`].
    pub fn mark_down(&self, depot: &str) {
        self.down.mark(depot.to_owned());
    }

    /// Whether `depot` failed to answer in the last [`DOWN_FOR`].
    pub fn is_down(&self, depot: &str) -> bool {
        self.down.contains(depot)
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

    #[tokio::test(start_paused = true)]
    async fn a_down_depot_and_a_failed_copy_pair_are_forgotten_after_a_while() {
        let p = Pool::new(SecureSetup::default(), Duration::from_secs(1));
        p.mark_down("a:1");
        p.copy_failed("a:1", "b:2");
        assert!(p.is_down("a:1") && !p.is_down("b:2"));
        assert!(!p.copy_usable("a:1", "b:2") && p.copy_usable("b:2", "a:1"));
        let second = Duration::from_secs(1);
        tokio::time::advance(DOWN_FOR - second).await;
        assert!(p.is_down("a:1"), "still down just before {DOWN_FOR:?}");
        tokio::time::advance(second * 2).await;
        assert!(!p.is_down("a:1"), "forgotten after {DOWN_FOR:?}");
        // A new failure starts the time again.
        p.mark_down("a:1");
        tokio::time::advance(DOWN_FOR - second).await;
        assert!(p.is_down("a:1"), "marked again: still down");
        tokio::time::advance(second * 2).await;
        assert!(!p.is_down("a:1"));
        assert_eq!(p.copy_stats().failed, 1);

        // A failed COPY pair, on a clock of its own.
        let p = Pool::new(SecureSetup::default(), Duration::from_secs(1));
        p.copy_failed("a:1", "b:2");
        tokio::time::advance(COPY_BROKEN_FOR - second).await;
        assert!(
            !p.copy_usable("a:1", "b:2"),
            "just before {COPY_BROKEN_FOR:?}"
        );
        tokio::time::advance(second * 2).await;
        assert!(p.copy_usable("a:1", "b:2"), "COPY tried again");
        assert_eq!(p.copy_stats().failed, 1);
    }

    // On the real clock: with a paused one, the connect's timeout could
    // fire while the runtime waits for the socket.
    #[tokio::test]
    async fn only_time_ends_a_depots_down_mark() {
        let p = Pool::new(SecureSetup::default(), Duration::from_secs(10));
        // A refused connect marks the depot down.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert!(p.fresh(&closed, Security::Legacy).await.is_err());
        assert!(p.is_down(&closed));
        // A depot that answers some requests and stalls others (connects,
        // successes, refusals) stays down, and a failure without an
        // answer marks it again.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        p.mark_down(&addr);
        let conn = p.fresh(&addr, Security::Legacy).await.expect("connect");
        p.put(&addr, Security::Legacy, conn);
        assert_eq!(p.check(&addr, Ok(7)).ok(), Some(7));
        let refused: Result<(), ClientError> =
            Err(ClientError::Ibp(ibp_proto::IbpError::CapNotFound));
        assert!(p.check(&addr, refused).is_err());
        assert!(p.is_down(&addr), "answers do not end the mark");
        let failed: Result<(), ClientError> =
            Err(ClientError::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert!(p.check(&addr, failed).is_err());
        assert!(p.is_down(&addr));
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
        // As is: the length and bytes it was given back with.
        let mut b = again;
        b.extend_from_slice(b"old block");
        p.recycle(b);
        let as_is = p.buffer_as_is();
        assert_eq!(&as_is[..], b"old block");
        assert!(as_is.capacity() >= 1 << 20);

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
