//! Serving an axum router over HTTPS: TLS 1.3 (a rustls configuration,
//! usually from `ibp_auth::tls::server_config`, whose client-certificate
//! verifier has already checked the peer's chain during the handshake),
//! HTTP/1.1 (hyper), bounded connections, timeouts and graceful shutdown.
//!
//! A response sent before the handler read the whole request body (a
//! refusal that did not wait for it) carries `Connection: close`, and the
//! connection closes after it: the unread rest of the body cannot be told
//! from a next request, and a keep-alive client must not send one there.
//!
//! It also closes gently: the server sends its close (TLS `close_notify`,
//! then FIN) and drains what the client is still sending, for at most
//! [`LINGER_MAX_TIME`] and [`LINGER_MAX_BYTES`]. A client that writes its
//! whole body before reading (many HTTP stacks do, and a busy one always
//! may) would otherwise have its next segment answered by a reset, failing
//! its write and losing the response ("broken pipe" instead of the
//! refusal). This is the "lingering close" of RFC 9112 section 9.6.
//!
//! Every request carries two extensions: [`PeerChain`] (the client's
//! certificate chain, leaf first, or `None`) and [`RemoteAddr`].

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The TLS client's certificate chain (leaf first) as presented in the
/// handshake and accepted by the server's verifier; `None` when the client
/// presented none (possible only with optional client authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChain(pub Option<Vec<CertificateDer<'static>>>);

/// The TCP address the request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Limits of [`serve_with`]; [`ServeOptions::default`] is what [`serve`] uses.
///
/// A client holds a connection slot only while it makes progress: the
/// handshake, the request header and the request body each have a deadline,
/// and one address may hold only `max_connections_per_address` of the
/// `max_connections` slots, so a single client trickling bytes cannot keep
/// the others out.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most simultaneous connections; further clients wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// Most simultaneous connections from one client address (an IPv6
    /// client counts by its /64). A connection beyond it is closed as soon
    /// as it is accepted.
    pub max_connections_per_address: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's header to arrive in full, counted from
    /// the end of the handshake or, on a kept-alive connection, from the end
    /// of the previous response: it is also the idle timeout of kept-alive
    /// connections (HTTP/1.1 keeps connections open unless the client sends
    /// `Connection: close`).
    pub header_timeout: Duration,
    /// Time allowed for a request body, counted from when the handler
    /// starts reading it, plus one second for every `body_min_rate` bytes
    /// received: a body arriving at `body_min_rate` bytes/s or faster is
    /// never cut, a trickle is cut after about `body_timeout`. Past the
    /// deadline the body ends in an error and the connection is closed.
    pub body_timeout: Duration,
    /// Bytes per second that earn a body one more second (see
    /// `body_timeout`).
    pub body_min_rate: u64,
    /// Longest a connection may stay open. Past it the connection is closed
    /// at once if idle, else after the response in flight (which carries
    /// `Connection: close`) or after `shutdown_grace`, whichever comes first.
    pub connection_timeout: Duration,
    /// After shutdown is requested: how long in-flight requests may take
    /// before their connections are dropped.
    pub shutdown_grace: Duration,
    /// Where connections, handshakes and requests are counted (the
    /// daemon's `/metrics`); `None`: nowhere.
    pub metrics: Option<Arc<crate::metrics::HttpMetrics>>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: 256,
            max_connections_per_address: 32,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 16 * 1024,
            connection_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            metrics: None,
        }
    }
}

/// Serves `router` on `listener` with the default [`ServeOptions`] until
/// `shutdown` is cancelled; then stops accepting, lets in-flight requests
/// finish (within the grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    serve_with(listener, tls, router, shutdown, ServeOptions::default()).await
}

/// A value replaced whole while it is in use (a daemon's TLS configuration
/// or trust store on SIGHUP): readers take a snapshot, [`Current::get`],
/// and keep it for what they are doing.
pub struct Current<T> {
    value: std::sync::RwLock<Arc<T>>,
}

impl<T> Current<T> {
    pub fn new(value: T) -> Current<T> {
        Current {
            value: std::sync::RwLock::new(Arc::new(value)),
        }
    }

    /// The value now in force.
    pub fn get(&self) -> Arc<T> {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `value` in force for the next [`Current::get`].
    pub fn replace(&self, value: T) {
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) {
    let tls = Arc::new(Current {
        value: std::sync::RwLock::new(tls),
    });
    serve_reloadable(listener, tls, router, shutdown, opts).await
}

/// [`serve_with`] with a TLS configuration that may be replaced while
/// serving (a renewed certificate, a reloaded trust directory): each new
/// connection is accepted with the one in force; connections already open
/// keep theirs.
pub async fn serve_reloadable(
    listener: TcpListener,
    tls: Arc<Current<rustls::ServerConfig>>,
    router: axum::Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) {
    let router = match &opts.metrics {
        Some(m) => m.layer(router),
        None => router,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let per_address = Arc::new(AddressSlots::new(opts.max_connections_per_address));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(address_slot) = per_address.take(remote.ip()) else {
            // Closed before the handshake: nothing is spent on it.
            tracing::debug!(%remote, "too many connections from this address; closing");
            if let Some(m) = &opts.metrics {
                m.refused_per_address();
            }
            drop(tcp);
            continue;
        };
        let conn = Connection {
            acceptor: TlsAcceptor::from(tls.get()),
            router: router.clone(),
            shutdown: shutdown.clone(),
            opts: opts.clone(),
        };
        let metrics = opts.metrics.clone();
        tracker.spawn(async move {
            let _permits = (permit, address_slot);
            let _open = metrics.map(OpenConnection::new);
            conn.run(tcp, remote).await;
        });
    }
    tracker.close();
    tracing::debug!(
        open = tracker.len(),
        "stopped accepting; draining connections"
    );
    if tokio::time::timeout(opts.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the shutdown grace period; dropping them"
        );
    }
}

struct Connection {
    acceptor: TlsAcceptor,
    router: axum::Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, remote: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let handshake =
            tokio::time::timeout(self.opts.handshake_timeout, self.acceptor.accept(tcp));
        let tls = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return,
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake failed");
                    if let Some(m) = &self.opts.metrics {
                        m.handshake_failed();
                    }
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    if let Some(m) = &self.opts.metrics {
                        m.handshake_failed();
                    }
                    return;
                }
            },
        };
        let peer = PeerChain(
            tls.get_ref()
                .1
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect()),
        );
        let linger = Arc::new(AtomicBool::new(false));
        let tls = Lingering::new(tls, linger.clone());
        let bodies = BodyDeadline {
            timeout: self.opts.body_timeout,
            min_rate: self.opts.body_min_rate.max(1),
        };
        let svc = TowerToHyperService::new(
            self.router
                .layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let linger = linger.clone();
                        async move {
                            let read = Arc::new(AtomicBool::new(false));
                            let req =
                                req.map(|b| axum::body::Body::new(bodies.wrap(b, read.clone())));
                            let mut resp = next.run(req).await;
                            // A response sent before the whole request body was
                            // read (a refusal that did not wait for the body):
                            // hyper then closes the connection, and says so, so
                            // that a keep-alive client does not send its next
                            // request on a connection about to close.
                            if !read.load(Ordering::Acquire) {
                                linger.store(true, Ordering::Release);
                                resp.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                            }
                            resp
                        }
                    },
                ))
                .layer(axum::Extension(peer))
                .layer(axum::Extension(RemoteAddr(remote))),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.opts.header_timeout)
            .serve_connection(TokioIo::new(tls), svc);
        tokio::pin!(conn);
        let deadline = tokio::time::sleep(self.opts.connection_timeout);
        tokio::pin!(deadline);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = &mut deadline => {
                // Finish the request in flight (a kept-alive client may be
                // in the middle of one), then close.
                tracing::debug!(%remote, "connection open too long, closing");
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(self.opts.shutdown_grace, conn.as_mut()).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
            _ = self.shutdown.cancelled() => {
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = &mut deadline => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// Longest the server drains a request body it did not read, after
/// responding and closing its side (see the module's documentation).
pub const LINGER_MAX_TIME: Duration = Duration::from_secs(2);

/// Most bytes the server drains of a request body it did not read.
pub const LINGER_MAX_BYTES: u64 = 64 << 20;

/// A connection's stream that, once told a response went out before its
/// request body was read (`linger`), drains the client's writes after its
/// own shutdown: see the module's documentation.
struct Lingering<T> {
    inner: T,
    linger: Arc<AtomicBool>,
    drain: Option<Drain>,
}

struct Drain {
    deadline: Pin<Box<tokio::time::Sleep>>,
    left: u64,
}

impl<T> Lingering<T> {
    fn new(inner: T, linger: Arc<AtomicBool>) -> Lingering<T> {
        Lingering {
            inner,
            linger,
            drain: None,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite
    for Lingering<T>
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.drain.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if !this.linger.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
            this.drain = Some(Drain {
                deadline: Box::pin(tokio::time::sleep(LINGER_MAX_TIME)),
                left: LINGER_MAX_BYTES,
            });
        }
        let Some(drain) = this.drain.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if drain.left == 0 || drain.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                // The client's end (or an error): nothing more to wait for.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    drain.left = drain.left.saturating_sub(buf.filled().len() as u64);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// An open connection, counted in the metrics while it lives.
struct OpenConnection(Arc<crate::metrics::HttpMetrics>);

impl OpenConnection {
    fn new(m: Arc<crate::metrics::HttpMetrics>) -> OpenConnection {
        m.connection_opened();
        OpenConnection(m)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Connections held per client address, for
/// [`ServeOptions::max_connections_per_address`]. Holds an entry only for
/// addresses with open connections, so at most `max_connections` entries.
struct AddressSlots {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressSlots {
    fn new(max: usize) -> AddressSlots {
        AddressSlots {
            max: max.max(1),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts stay consistent whatever panicked while holding the lock.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `ip`, or `None` when its address holds all it may.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut held = self.lock();
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            key,
        })
    }
}

/// One connection's share of its address's slots; released on drop.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// What counts as one client: an IPv4 address (also when written as an
/// IPv4-mapped IPv6 address), or an IPv6 /64 (what one site gets). The same
/// rule as `ibp_auth::address::address_key`, which the depot and the online
/// CA use; this crate does not depend on `ibp-auth`.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// The request-body deadline of [`ServeOptions::body_timeout`].
#[derive(Debug, Clone, Copy)]
struct BodyDeadline {
    timeout: Duration,
    min_rate: u64,
}

impl BodyDeadline {
    fn wrap(self, inner: axum::body::Body, read: Arc<AtomicBool>) -> TimedBody {
        if hyper::body::Body::is_end_stream(&inner) {
            read.store(true, Ordering::Release);
        }
        TimedBody {
            inner,
            read,
            limits: self,
            started: None,
            received: 0,
            sleep: None,
        }
    }
}

/// A request body that fails once it arrives too slowly (see
/// [`ServeOptions::body_timeout`]). The clock starts when the handler first
/// reads, so time a handler spends before reading is not the client's.
struct TimedBody {
    inner: axum::body::Body,
    /// Set once the body has been read to its end.
    read: Arc<AtomicBool>,
    limits: BodyDeadline,
    started: Option<tokio::time::Instant>,
    received: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a [`TimedBody`] ends with past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow: {received} bytes in {elapsed:?}")]
pub struct BodyTooSlow {
    received: u64,
    elapsed: Duration,
}

impl TimedBody {
    fn deadline(&self, started: tokio::time::Instant) -> tokio::time::Instant {
        let earned = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        started + self.limits.timeout.saturating_add(earned)
    }
}

impl hyper::body::Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let started = *this.started.get_or_insert_with(tokio::time::Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                if this.inner.is_end_stream() {
                    this.read.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.read.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let deadline = this.deadline(started);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow {
                        received: this.received,
                        elapsed: started.elapsed(),
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
