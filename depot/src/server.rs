//! The accept loop and the per-connection request loop of the legacy port
//! and of the secure (TLS 1.3, IBP_auth) port.
//!
//! A connection serves many requests. Any error reply closes it, as the IBP
//! 1.4 depot does. Idle connections time out; the number of connections is
//! bounded; on shutdown, idle connections close at once and in-flight
//! requests finish.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ibp_proto::{
    auth_refusal, parse_request, parse_secure_request, Command, IbpError, Reply, Request,
    SecureRequest, MAX_LINE, MAX_SECURE_LINE,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::secure::Session;
use crate::{handlers, secure, transfer, Depot};

/// Read-side buffer of a connection; bulk reads larger than it bypass it.
const READ_BUFFER: usize = 64 * 1024;

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
    pub fn from_config(cfg: &crate::config::Config) -> Limits {
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

    pub fn from_config(cfg: &crate::config::Config) -> Guards {
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

pub use ibp_auth::address::address_key;

/// Open connections per client address on one listener.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, unless it already has `cap`.
    fn take(table: &Arc<PerAddress>, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut m = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
        shrink(&mut m);
    }
}

/// Why a request ended without a success reply.
#[derive(Debug)]
pub enum Failure {
    /// Send this IBP error, then close.
    Reply(IbpError),
    /// The connection broke or timed out: close without a reply.
    Io(io::Error),
    /// Send this IBP error with a reason (a refused AUTH), then close.
    Refused(IbpError, String),
}

impl From<IbpError> for Failure {
    fn from(e: IbpError) -> Failure {
        Failure::Reply(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// The byte stream under a connection: plain TCP (with the splice and
/// sendfile fast paths) or TLS (plain reads and writes).
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Transport {
    /// The TCP socket, when the bytes on it are the payload itself.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(_) => None,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One client connection.
pub struct Conn {
    pub reader: BufReader<Transport>,
    pub peer: SocketAddr,
    pub io_timeout: Duration,
    /// Whether this is the secure port (version-2 requests, AUTH first).
    pub secure: bool,
    /// The verified TLS peer (secure port), or why its chain was refused.
    pub peer_identity: Option<Result<ibp_auth::Identity, String>>,
    /// The key hash of a verified plain end-entity client certificate (a
    /// depot, the source of a secure COPY), which may AUTH only with a
    /// grant delegated to that key.
    pub peer_plain_key: Option<[u8; 32]>,
    /// Set by a successful AUTH.
    pub session: Option<Session>,
    /// Crypto-level sessions opened on this TLS connection (ended with it).
    pub crypto_ids: Vec<[u8; 16]>,
    /// The TLS client key they are counted under (`Guards::take_crypto`).
    pub crypto_peer: Option<[u8; 32]>,
    /// Until a request line has been read completely, the deadline of the
    /// first one; afterwards `None` (the idle timeout applies between
    /// requests).
    pub first_request_by: Option<Instant>,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, io_timeout: Duration) -> Conn {
        Conn::with_transport(Transport::Plain(stream), peer, io_timeout)
    }

    pub fn with_transport(transport: Transport, peer: SocketAddr, io_timeout: Duration) -> Conn {
        let secure = matches!(transport, Transport::Tls(_));
        Conn {
            reader: BufReader::with_capacity(READ_BUFFER, transport),
            peer,
            io_timeout,
            secure,
            peer_identity: None,
            peer_plain_key: None,
            session: None,
            crypto_ids: Vec::new(),
            crypto_peer: None,
            first_request_by: None,
        }
    }

    /// The TCP socket of a plain connection (`None` under TLS).
    pub fn stream(&self) -> Option<&TcpStream> {
        self.reader.get_ref().tcp()
    }

    /// Finds the allocation of a capability as this connection may see it:
    /// allocations made in authenticated sessions exist only on the secure
    /// port, the others only on the legacy port (`-4` otherwise).
    pub fn find(
        &self,
        res: &crate::resource::Resource,
        cap: &ibp_proto::CapRef,
    ) -> Result<(Arc<crate::resource::Allocation>, Option<ibp_proto::CapKind>), IbpError> {
        let (alloc, kind) = res.find(cap)?;
        if alloc.owner.is_some() != self.secure {
            return Err(IbpError::CapNotFound);
        }
        Ok((alloc, kind))
    }

    /// Writes bytes in one go (replies are never split across writes).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.reader.get_mut();
        timed(self.io_timeout, async {
            w.write_all(bytes).await?;
            // TLS buffers records until flushed; a TCP flush is a no-op.
            w.flush().await
        })
        .await
    }

    pub async fn reply(&mut self, reply: &Reply) -> io::Result<()> {
        self.send(reply.encode().as_bytes()).await
    }
}

/// Runs `fut` with a deadline, turning expiry into `TimedOut`.
pub async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer made no progress"))?
}

/// Outcome of reading one request line.
pub enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads one line of at most [`MAX_LINE`] bytes without consuming anything
/// after its `\n` (the payload that may follow stays buffered).
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Line> {
    read_line_max(r, MAX_LINE).await
}

/// [`read_line`] with another limit (the secure port's is [`MAX_SECURE_LINE`]).
pub async fn read_line_max<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            // A peer that closes in the middle of a line sent no request.
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let take = take.min(max + 1 - line.len());
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done && line.last() == Some(&b'\n') {
            return Ok(Line::Text(line));
        }
        if line.len() > max {
            return Ok(Line::TooLong);
        }
    }
}

/// Reads a connection's next request line; `None` closes the connection.
///
/// Before its first request line is complete, the whole line must arrive
/// by `conn.first_request_by`. Afterwards the first byte of a request may
/// take the idle timeout, and the rest of its line `Limits::request_line`:
/// a client trickling bytes cannot hold a connection for long.
pub async fn next_request_line(
    depot: &Depot,
    conn: &mut Conn,
    shutdown: &CancellationToken,
    max: usize,
) -> Option<Vec<u8>> {
    let first = conn.first_request_by;
    let idle_until = first.unwrap_or_else(|| Instant::now() + depot.idle_timeout);
    let waited = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout_at(idle_until, conn.reader.fill_buf()) => r,
    };
    match waited {
        Err(_) if first.is_some() => {
            depot.metrics.connection_timed_out();
            tracing::info!(peer = %conn.peer, "no request in time on a new connection; closing it");
            return None;
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "idle connection timed out");
            return None;
        }
        Ok(Err(_)) | Ok(Ok([])) => return None,
        Ok(Ok(_)) => {}
    }
    let mut line_until = Instant::now() + depot.guards.limits.request_line;
    if let Some(f) = first {
        line_until = line_until.min(f);
    }
    match tokio::time::timeout_at(line_until, read_line_max(&mut conn.reader, max)).await {
        Ok(Ok(Line::Text(l))) => {
            conn.first_request_by = None;
            Some(l)
        }
        Ok(Ok(Line::TooLong)) => {
            tracing::info!(peer = %conn.peer, "request line too long");
            let _ = conn.reply(&Reply::Error(IbpError::BadFormat)).await;
            None
        }
        Err(_) => {
            depot.metrics.connection_timed_out();
            tracing::info!(peer = %conn.peer, "request line not complete in time; closing the connection");
            None
        }
        Ok(Ok(Line::Eof)) | Ok(Err(_)) => None,
    }
}

/// Accepts connections until `shutdown` fires, then waits up to `grace` for
/// in-flight requests.
pub async fn run(
    listener: TcpListener,
    depot: Arc<Depot>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    run_with(
        listener,
        Port::Legacy,
        depot,
        max_connections,
        shutdown,
        grace,
    )
    .await
}

/// Accepts the crypto level's plain data connections: each joins a crypto
/// session opened on the secure port, then sends sealed request lines.
pub async fn run_data(
    listener: TcpListener,
    depot: Arc<Depot>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    run_with(
        listener,
        Port::Data,
        depot,
        max_connections,
        shutdown,
        grace,
    )
    .await
}

/// Which port an accept loop serves.
#[derive(Clone)]
enum Port {
    Legacy,
    Tls(TlsAcceptor),
    Data,
}

/// Accepts connections on the secure port: a TLS 1.3 handshake with the
/// client's proxy chain, then version-2 requests starting with AUTH.
pub async fn run_secure(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    depot: Arc<Depot>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    run_with(
        listener,
        Port::Tls(acceptor),
        depot,
        max_connections,
        shutdown,
        grace,
    )
    .await
}

async fn run_with(
    listener: TcpListener,
    port: Port,
    depot: Arc<Depot>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let per_address = Arc::new(PerAddress::default());
    let limits = depot.guards.limits.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // One address may hold only its share of the connections.
        let Some(address_slot) = PerAddress::take(&per_address, peer.ip(), limits.per_address)
        else {
            depot.metrics.connection_refused_per_address();
            tracing::debug!(%peer, limit = limits.per_address, "per-address connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            depot.metrics.connection_refused();
            tracing::warn!(%peer, max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let depot = depot.clone();
        let shutdown = shutdown.clone();
        let port = port.clone();
        let first_request = limits.first_request;
        tracker.spawn(async move {
            depot.metrics.connection_opened();
            match port {
                Port::Legacy => {
                    let mut conn = Conn::new(stream, peer, depot.io_timeout);
                    conn.first_request_by = Some(Instant::now() + first_request);
                    serve_connection(&depot, &mut conn, shutdown).await;
                }
                Port::Tls(acceptor) => {
                    if let Some(mut conn) = secure::handshake(&depot, &acceptor, stream, peer).await
                    {
                        conn.first_request_by = Some(Instant::now() + first_request);
                        serve_connection(&depot, &mut conn, shutdown).await;
                        end_crypto_sessions(&depot, &mut conn);
                    }
                }
                Port::Data => {
                    let mut conn = Conn::new(stream, peer, depot.io_timeout);
                    conn.secure = true;
                    conn.first_request_by = Some(Instant::now() + first_request);
                    crate::data_port::serve(&depot, &mut conn, shutdown).await;
                }
            }
            depot.metrics.connection_closed();
            drop(permit);
            drop(address_slot);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over; abandoning in-flight requests");
    }
}

/// Ends a closed TLS connection's crypto-level sessions and gives their
/// memory back.
fn end_crypto_sessions(depot: &Depot, conn: &mut Conn) {
    if conn.crypto_ids.is_empty() {
        return;
    }
    depot.end_crypto_sessions(&conn.crypto_ids);
    shrink(
        &mut depot
            .crypto_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    if let Some(peer) = conn.crypto_peer {
        depot.guards.release_crypto(peer, conn.crypto_ids.len());
    }
    conn.crypto_ids = Vec::new();
}

async fn serve_connection(depot: &Depot, conn: &mut Conn, shutdown: CancellationToken) {
    let max = if conn.secure {
        MAX_SECURE_LINE
    } else {
        MAX_LINE
    };
    loop {
        let Some(line) = next_request_line(depot, conn, &shutdown, max).await else {
            return;
        };
        let keep = if conn.secure {
            secure_request(depot, conn, &line).await
        } else {
            legacy_request(depot, conn, &line).await
        };
        if !keep {
            return;
        }
    }
}

/// Serves one legacy request; false when the connection must close.
async fn legacy_request(depot: &Depot, conn: &mut Conn, line: &[u8]) -> bool {
    let request = match parse_request(line) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(peer = %conn.peer, error = %e, "malformed request");
            depot.metrics.request(e.command, false);
            let _ = conn.reply(&e.reply()).await;
            return false;
        }
    };
    let command = request.command();
    let result = dispatch(depot, conn, request).await;
    depot.metrics.request(Some(command), result.is_ok());
    let error_reply = |e| {
        if command == Command::Status {
            Reply::StatusError(e)
        } else {
            Reply::Error(e)
        }
    };
    finish(conn, command.name(), result, error_reply).await
}

/// Sends the reply of a failed request; false when the connection must close.
pub async fn finish(
    conn: &mut Conn,
    name: &str,
    result: Result<(), Failure>,
    error_reply: impl Fn(IbpError) -> Reply,
) -> bool {
    match result {
        Ok(()) => true,
        Err(Failure::Reply(e)) => {
            tracing::debug!(peer = %conn.peer, command = name, error = %e, "request refused");
            let _ = conn.reply(&error_reply(e)).await;
            false
        }
        Err(Failure::Refused(e, why)) => {
            tracing::info!(peer = %conn.peer, command = name, error = %e, reason = %why, "request refused");
            let _ = conn.send(auth_refusal(e, &why).as_bytes()).await;
            false
        }
        Err(Failure::Io(e)) => {
            tracing::info!(peer = %conn.peer, command = name, error = %e, "connection failed during request");
            false
        }
    }
}

/// Serves one request of the secure port; false when the connection must close.
async fn secure_request(depot: &Depot, conn: &mut Conn, line: &[u8]) -> bool {
    let request = match parse_secure_request(line) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(peer = %conn.peer, error = %e, "malformed request");
            depot.metrics.request(e.command, false);
            let _ = conn.reply(&e.reply()).await;
            return false;
        }
    };
    let name = request.name();
    let command = request.command();
    let skew = depot.secure.as_ref().map_or(0, |s| s.trust.max_skew);
    let expired = conn
        .session
        .as_ref()
        .is_some_and(|s| s.not_after.saturating_add(skew) < ibp_auth::unix_now());
    // A LOAD needs no session (or an expired one): its file ticket, signed
    // by the metadata manager for the TLS peer's key, is the authorization
    // (reads work while the L-Bone is down).
    let ticket_read =
        matches!(request, SecureRequest::Load(_)) && matches!(conn.peer_identity, Some(Ok(_)));
    // STATUS (INQ or RES: metadata the legacy port gives anyone) needs no
    // session from a peer whose chain verified in the handshake: a user's
    // proxy with VO attributes, or a plain end-entity certificate such as
    // the L-Bone's, which polls depots whose legacy port is off.
    let verified_peer = matches!(conn.peer_identity, Some(Ok(_))) || conn.peer_plain_key.is_some();
    let status_inquiry = matches!(request, SecureRequest::Status(_)) && verified_peer;
    let result = if conn.session.is_none() && command.is_some() && !ticket_read && !status_inquiry {
        Err(Failure::Refused(
            IbpError::CapAccessDenied,
            format!("{name} before AUTH: authenticate with a depot grant first (only STATUS, and LOAD with a file ticket, need none)"),
        ))
    } else if conn.session.as_ref().is_some_and(|s| s.delegated)
        && !matches!(request, SecureRequest::Store(_) | SecureRequest::Write(_))
        && command.is_some()
    {
        Err(Failure::Refused(
            IbpError::CapAccessDenied,
            format!("{name} in a delegated (depot) session: only STORE and WRITE"),
        ))
    } else if expired && command.is_some() && !ticket_read && !status_inquiry {
        // Revocation through short lifetimes: a session lasts as long as its grant.
        Err(Failure::Refused(
            IbpError::CapAccessDenied,
            "the session's depot grant has expired: AUTH again with a fresh grant".into(),
        ))
    } else {
        dispatch_secure(depot, conn, request.clone()).await
    };
    if command.is_some() {
        depot.metrics.request(command, result.is_ok());
    }
    finish(conn, name, result, |e| request.error_reply(e)).await
}

#[tracing::instrument(level = "debug", skip_all, fields(peer = %conn.peer, command = request.name()))]
async fn dispatch_secure(
    depot: &Depot,
    conn: &mut Conn,
    request: SecureRequest,
) -> Result<(), Failure> {
    match request {
        SecureRequest::Auth(a) => secure::auth(depot, conn, a).await,
        SecureRequest::Allocate(a) => handlers::allocate(depot, conn, a).await,
        SecureRequest::Manage(m) => handlers::manage(depot, conn, m).await,
        SecureRequest::Status(s) => handlers::status(depot, conn, s).await,
        SecureRequest::Store(s) => transfer::store_bound(depot, conn, s).await,
        SecureRequest::Write(w) => transfer::write_bound(depot, conn, w).await,
        SecureRequest::Load(l) => transfer::load_with_ticket(depot, conn, l).await,
        SecureRequest::Copy(c) => transfer::copy_secure(depot, conn, c).await,
        SecureRequest::Crypto { .. } => crate::data_port::open(depot, conn).await,
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(peer = %conn.peer, command = request.command().name()))]
async fn dispatch(depot: &Depot, conn: &mut Conn, request: Request) -> Result<(), Failure> {
    match request {
        Request::Allocate(a) => handlers::allocate(depot, conn, a).await,
        Request::Manage(m) => handlers::manage(depot, conn, m).await,
        Request::Status(s) => handlers::status(depot, conn, s).await,
        Request::Store(s) => transfer::store(depot, conn, s).await,
        Request::Write(w) => transfer::write(depot, conn, w).await,
        Request::Load(l) => transfer::load(depot, conn, l).await,
        Request::Copy(c) => transfer::copy(depot, conn, c).await,
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
    fn per_address_slots_are_capped_and_given_back() {
        let t = Arc::new(PerAddress::default());
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let slots: Vec<_> = (0..3)
            .map(|_| PerAddress::take(&t, ip, 3).expect("under the cap"))
            .collect();
        assert!(PerAddress::take(&t, ip, 3).is_none());
        // Another address is not affected.
        let other = PerAddress::take(&t, "127.0.0.1".parse().unwrap(), 3);
        assert!(other.is_some());
        drop(slots);
        drop(other);
        assert!(t.open.lock().unwrap().is_empty(), "entries go at zero");
        assert!(PerAddress::take(&t, ip, 3).is_some());
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
