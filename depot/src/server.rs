//! The accept loop and the per-connection request loop of the legacy port
//! and of the secure (TLS 1.3, IBP_auth) port.
//!
//! A connection serves many requests. Any error reply closes it, as the IBP
//! 1.4 depot does. Idle connections time out; the number of connections is
//! bounded; on shutdown, idle connections close at once and in-flight
//! requests finish.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibp_auth::address::address_key;
use ibp_proto::{
    parse_request, parse_secure_request, Command, IbpError, Reply, Request, SecureRequest,
    MAX_LINE, MAX_SECURE_LINE,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{next_request_line, Conn};
use crate::failure::{finish, Failure};
use crate::limits::shrink;
use crate::{auth, data_port, handlers, transfer, Depot};

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
    /// TLS with the secure port's current settings (`Depot::secure`).
    Tls,
    Data,
}

/// Accepts connections on the secure port: a TLS 1.3 handshake with the
/// client's proxy chain, then version-2 requests starting with AUTH.
pub async fn run_secure(
    listener: TcpListener,
    depot: Arc<Depot>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    run_with(listener, Port::Tls, depot, max_connections, shutdown, grace).await
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
                Port::Tls => {
                    if let Some(mut conn) = auth::handshake(&depot, stream, peer).await {
                        conn.first_request_by = Some(Instant::now() + first_request);
                        serve_connection(&depot, &mut conn, shutdown).await;
                        end_crypto_sessions(&depot, &mut conn);
                    }
                }
                Port::Data => {
                    let mut conn = Conn::new(stream, peer, depot.io_timeout);
                    conn.secure = true;
                    conn.first_request_by = Some(Instant::now() + first_request);
                    data_port::serve(&depot, &mut conn, shutdown).await;
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
    let skew = depot
        .secure
        .as_ref()
        .map_or(0, |s| s.current().trust.max_skew);
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
        SecureRequest::Auth(a) => auth::auth(depot, conn, a).await,
        SecureRequest::Allocate(a) => handlers::allocate(depot, conn, a).await,
        SecureRequest::Manage(m) => handlers::manage(depot, conn, m).await,
        SecureRequest::Status(s) => handlers::status(depot, conn, s).await,
        SecureRequest::Store(s) => transfer::store_bound(depot, conn, s).await,
        SecureRequest::Write(w) => transfer::write_bound(depot, conn, w).await,
        SecureRequest::Load(l) => transfer::load_with_ticket(depot, conn, l).await,
        SecureRequest::Copy(c) => transfer::copy_secure(depot, conn, c).await,
        SecureRequest::Crypto { .. } => data_port::open(depot, conn).await,
        SecureRequest::Quota { .. } => handlers::quota(depot, conn).await,
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
}
