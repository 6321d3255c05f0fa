//! Counters for the Prometheus `/metrics` endpoint and STATUS STATS.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ibp_proto::Command;
use tokio_util::sync::CancellationToken;

use crate::resource::Resource;

const COMMANDS: [Command; 7] = [
    Command::Allocate,
    Command::Store,
    Command::Status,
    Command::Copy,
    Command::Load,
    Command::Manage,
    Command::Write,
];

#[derive(Default)]
pub struct Metrics {
    /// `[command][0 = ok, 1 = error]`; index 7 is "unparsed".
    requests: [[AtomicU64; 2]; 8],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    connections_refused_per_address: AtomicU64,
    connections_timed_out: AtomicU64,
    crypto_sessions_refused: AtomicU64,
    copy_sessions_opened: AtomicU64,
    copy_sessions_reused: AtomicU64,
}

fn index(c: Option<Command>) -> usize {
    c.and_then(|c| COMMANDS.iter().position(|x| *x == c))
        .unwrap_or(7)
}

impl Metrics {
    pub fn request(&self, command: Option<Command>, ok: bool) {
        self.requests[index(command)][usize::from(!ok)].fetch_add(1, Relaxed);
    }
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Relaxed);
    }
    pub fn bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }
    /// A secure COPY opened a new session (TLS and AUTH) to its target.
    pub fn copy_session_opened(&self) {
        self.copy_sessions_opened.fetch_add(1, Relaxed);
    }

    /// A secure COPY went through a session kept from an earlier one.
    pub fn copy_session_reused(&self) {
        self.copy_sessions_reused.fetch_add(1, Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    /// A connection closed at once: its address holds its share already.
    pub fn connection_refused_per_address(&self) {
        self.connections_refused_per_address.fetch_add(1, Relaxed);
    }
    /// A connection closed by the handshake, first-request or request-line
    /// deadline.
    pub fn connection_timed_out(&self) {
        self.connections_timed_out.fetch_add(1, Relaxed);
    }
    pub fn crypto_session_refused(&self) {
        self.crypto_sessions_refused.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition format, with the gauges of
    /// `resources` and the count of open crypto-level sessions
    /// (`Depot::exposition` passes the depot's).
    pub fn render(&self, resources: &[Arc<Resource>], crypto_sessions: usize) -> String {
        let mut o = String::new();
        o.push_str("# HELP ibp_requests_total Requests by command and status.\n# TYPE ibp_requests_total counter\n");
        for (i, row) in self.requests.iter().enumerate() {
            let name = COMMANDS.get(i).map_or("UNPARSED", |c| c.name());
            for (j, status) in ["ok", "error"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "ibp_requests_total{{command=\"{name}\",status=\"{status}\"}} {}",
                    row[j].load(Relaxed)
                );
            }
        }
        let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        counter(
            "ibp_bytes_in_total",
            "Bytes received into allocations.",
            "counter",
            self.bytes_in.load(Relaxed),
        );
        counter(
            "ibp_bytes_out_total",
            "Bytes sent from allocations (LOAD and COPY).",
            "counter",
            self.bytes_out.load(Relaxed),
        );
        counter(
            "ibp_connections_open",
            "Open client connections.",
            "gauge",
            self.connections_open.load(Relaxed),
        );
        counter(
            "ibp_connections_refused_total",
            "Connections closed at the connection limit.",
            "counter",
            self.connections_refused.load(Relaxed),
        );
        counter(
            "ibp_connections_refused_per_address_total",
            "Connections closed at once: their address held max_connections_per_address.",
            "counter",
            self.connections_refused_per_address.load(Relaxed),
        );
        counter(
            "ibp_connections_timed_out_total",
            "Connections closed by the TLS handshake, first-request or request-line deadline.",
            "counter",
            self.connections_timed_out.load(Relaxed),
        );
        counter(
            "ibp_copy_sessions_opened_total",
            "Sessions (TLS handshake and AUTH) this depot opened to target depots for secure COPYs.",
            "counter",
            self.copy_sessions_opened.load(Relaxed),
        );
        counter(
            "ibp_copy_sessions_reused_total",
            "Secure COPYs that went through a session kept from an earlier COPY (same target, same grant).",
            "counter",
            self.copy_sessions_reused.load(Relaxed),
        );
        counter(
            "ibp_crypto_sessions_open",
            "Open crypto-level sessions.",
            "gauge",
            crypto_sessions as u64,
        );
        counter(
            "ibp_crypto_sessions_refused_total",
            "CRYPTO requests refused at the per-connection or per-peer limit.",
            "counter",
            self.crypto_sessions_refused.load(Relaxed),
        );
        let mut per_resource = |name: &str, help: &str, v: &dyn Fn(&Resource) -> u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for r in resources {
                let _ = writeln!(o, "{name}{{rid=\"{}\"}} {}", r.rid, v(r));
            }
        };
        per_resource("ibp_allocations", "Live allocations per resource.", &|r| {
            r.allocation_count() as u64
        });
        per_resource(
            "ibp_spare_files",
            "Files of freed allocations kept for new ones, per resource.",
            &|r| r.spare_usage().0 as u64,
        );
        per_resource(
            "ibp_spare_bytes",
            "Bytes of freed allocations the spare files hold until new ones overwrite them, per resource.",
            &|r| r.spare_usage().1,
        );
        o.push_str("# HELP ibp_capacity_bytes Reserved and free bytes per resource and class.\n# TYPE ibp_capacity_bytes gauge\n");
        for r in resources {
            let s = r.status();
            for (class, used, free) in [
                ("total", s.total_used, s.total_available),
                ("hard", s.hard_used, s.hard_available),
            ] {
                let _ = writeln!(
                    o,
                    "ibp_capacity_bytes{{rid=\"{}\",class=\"{class}\",state=\"used\"}} {used}",
                    r.rid
                );
                let _ = writeln!(
                    o,
                    "ibp_capacity_bytes{{rid=\"{}\",class=\"{class}\",state=\"free\"}} {free}",
                    r.rid
                );
            }
        }
        o
    }
}

/// What `GET /metrics` answers with: the depot's counters and gauges
/// (implemented by `Depot`, so that this module need not know it).
pub trait Exposition: Send + Sync + 'static {
    /// The Prometheus text exposition format.
    fn exposition(&self) -> String;
}

/// Serves `GET /metrics` until `shutdown` fires.
pub async fn serve<D: Exposition>(
    listener: tokio::net::TcpListener,
    depot: Arc<D>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let depot = depot.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    depot.exposition(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the metrics listener (separately, so the address can be printed).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
