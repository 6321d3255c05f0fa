//! Serving an axum router over HTTPS: TLS 1.3 (a rustls configuration,
//! usually from `ibp_auth::tls::server_config`, whose client-certificate
//! verifier has already checked the peer's chain during the handshake),
//! HTTP/1.1 (hyper), bounded connections, timeouts and graceful shutdown.
//!
//! Every request carries two extensions: [`PeerChain`] (the client's
//! certificate chain, leaf first, or `None`) and [`RemoteAddr`].

use std::net::SocketAddr;
use std::sync::Arc;
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
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most simultaneous connections; further clients wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's header to arrive, counted from the end
    /// of the previous response on a kept-alive connection: it is also the
    /// idle timeout of kept-alive connections (HTTP/1.1 keeps connections
    /// open unless the client sends `Connection: close`).
    pub header_timeout: Duration,
    /// Longest a connection may stay open. Past it the connection is closed
    /// at once if idle, else after the response in flight (which carries
    /// `Connection: close`) or after `shutdown_grace`, whichever comes first.
    pub connection_timeout: Duration,
    /// After shutdown is requested: how long in-flight requests may take
    /// before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
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

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
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
        let conn = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            shutdown: shutdown.clone(),
            opts: opts.clone(),
        };
        tracker.spawn(async move {
            let _permit = permit;
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
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
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
        let svc = TowerToHyperService::new(
            self.router
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

/// Cancels `token` on SIGTERM or SIGINT (returns early if the token is
/// cancelled otherwise). Spawn it beside [`serve_with`].
pub async fn cancel_on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}
