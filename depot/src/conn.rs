//! [`Conn`]: one client connection's state (its stream, peer, session,
//! crypto sessions, deadlines), and [`next_request_line`], the bounded read
//! of its next request line every listener uses.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ibp_depot_client::wire::{read_line_max, timed, Line, Transport};
use ibp_proto::{IbpError, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::resource::{Allocation, Resource};
use crate::session::Session;
use crate::Depot;

/// Read-side buffer of a connection; bulk reads larger than it bypass it.
const READ_BUFFER: usize = 64 * 1024;

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
        res: &Resource,
        cap: &ibp_proto::CapRef,
    ) -> Result<(Arc<Allocation>, Option<ibp_proto::CapKind>), IbpError> {
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
