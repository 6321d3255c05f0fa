//! The accept loop and the per-connection request loop of the legacy port
//! and of the secure (TLS 1.3, IBP_auth) port.
//!
//! A connection serves many requests. Any error reply closes it, as the IBP
//! 1.4 depot does. Idle connections time out; the number of connections is
//! bounded; on shutdown, idle connections close at once and in-flight
//! requests finish.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ibp_proto::{
    auth_refusal, parse_request, parse_secure_request, Command, IbpError, Reply, Request,
    SecureRequest, MAX_LINE, MAX_SECURE_LINE,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::secure::Session;
use crate::{handlers, secure, transfer, Depot};

/// Read-side buffer of a connection; bulk reads larger than it bypass it.
const READ_BUFFER: usize = 64 * 1024;

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
        tracker.spawn(async move {
            depot.metrics.connection_opened();
            match port {
                Port::Legacy => {
                    let mut conn = Conn::new(stream, peer, depot.io_timeout);
                    serve_connection(&depot, &mut conn, shutdown).await;
                }
                Port::Tls(acceptor) => {
                    if let Some(mut conn) = secure::handshake(&depot, &acceptor, stream, peer).await
                    {
                        serve_connection(&depot, &mut conn, shutdown).await;
                        depot.end_crypto_sessions(&conn.crypto_ids);
                    }
                }
                Port::Data => {
                    let mut conn = Conn::new(stream, peer, depot.io_timeout);
                    conn.secure = true;
                    crate::data_port::serve(&depot, &mut conn, shutdown).await;
                }
            }
            depot.metrics.connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over; abandoning in-flight requests");
    }
}

async fn serve_connection(depot: &Depot, conn: &mut Conn, shutdown: CancellationToken) {
    loop {
        // Wait for the first byte of the next request (idle timeout), then for
        // the rest of its line (I/O timeout).
        let waited = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(depot.idle_timeout, conn.reader.fill_buf()) => r,
        };
        match waited {
            Err(_) => {
                tracing::debug!(peer = %conn.peer, "idle connection timed out");
                return;
            }
            Ok(Err(_)) => return,
            Ok(Ok([])) => return,
            Ok(Ok(_)) => {}
        }
        let max = if conn.secure {
            MAX_SECURE_LINE
        } else {
            MAX_LINE
        };
        let line = match timed(conn.io_timeout, read_line_max(&mut conn.reader, max)).await {
            Ok(Line::Text(l)) => l,
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong) => {
                tracing::info!(peer = %conn.peer, "request line too long");
                let _ = conn.reply(&Reply::Error(IbpError::BadFormat)).await;
                return;
            }
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
