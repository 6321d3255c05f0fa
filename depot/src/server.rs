//! The accept loop and the per-connection request loop of the legacy port.
//!
//! A connection serves many requests. Any error reply closes it, as the IBP
//! 1.4 depot does. Idle connections time out; the number of connections is
//! bounded; on shutdown, idle connections close at once and in-flight
//! requests finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ibp_proto::{parse_request, Command, IbpError, Reply, Request, MAX_LINE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{handlers, transfer, Depot};

/// Read-side buffer of a connection; bulk reads larger than it bypass it.
const READ_BUFFER: usize = 64 * 1024;

/// Why a request ended without a success reply.
#[derive(Debug)]
pub enum Failure {
    /// Send this IBP error, then close.
    Reply(IbpError),
    /// The connection broke or timed out: close without a reply.
    Io(io::Error),
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

/// One client connection.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub peer: SocketAddr,
    pub io_timeout: Duration,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, io_timeout: Duration) -> Conn {
        Conn {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            peer,
            io_timeout,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes bytes in one go (replies are never split across writes).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        timed(self.io_timeout, self.reader.get_mut().write_all(bytes)).await
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
        let take = take.min(MAX_LINE + 1 - line.len());
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done && line.last() == Some(&b'\n') {
            return Ok(Line::Text(line));
        }
        if line.len() > MAX_LINE {
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
        tracker.spawn(async move {
            depot.metrics.connection_opened();
            serve_connection(&depot, Conn::new(stream, peer, depot.io_timeout), shutdown).await;
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

async fn serve_connection(depot: &Depot, mut conn: Conn, shutdown: CancellationToken) {
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
        let line = match timed(conn.io_timeout, read_line(&mut conn.reader)).await {
            Ok(Line::Text(l)) => l,
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong) => {
                tracing::info!(peer = %conn.peer, "request line too long");
                let _ = conn.reply(&Reply::Error(IbpError::BadFormat)).await;
                return;
            }
        };
        let request = match parse_request(&line) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(peer = %conn.peer, error = %e, "malformed request");
                depot.metrics.request(e.command, false);
                let _ = conn.reply(&e.reply()).await;
                return;
            }
        };
        let command = request.command();
        let result = dispatch(depot, &mut conn, request).await;
        depot.metrics.request(Some(command), result.is_ok());
        match result {
            Ok(()) => {}
            Err(Failure::Reply(e)) => {
                tracing::debug!(peer = %conn.peer, command = command.name(), error = %e, "request refused");
                let reply = if command == Command::Status {
                    Reply::StatusError(e)
                } else {
                    Reply::Error(e)
                };
                let _ = conn.reply(&reply).await;
                return;
            }
            Err(Failure::Io(e)) => {
                tracing::info!(peer = %conn.peer, command = command.name(), error = %e, "connection failed during request");
                return;
            }
        }
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
