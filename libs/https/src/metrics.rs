//! Prometheus metrics of the HTTPS daemons (L-Bone, metadata manager,
//! online CA): requests by route, method and status, their latencies as a
//! histogram, refusals by reason, and connections (open, refused per
//! address, failed handshakes); served as text on a separate plain-HTTP
//! listener (`metrics_listen`, loopback by default in the docs), never on
//! the API port.
//!
//! Routes are the router's templates (`/v1/vos/:vo/members`), never the
//! request's path, so a client cannot grow the label set; requests that
//! match no route count as `unmatched`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use tokio_util::sync::CancellationToken;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when
    /// rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// The counters of one daemon (`prefix`: `lbone`, `mdm`, `ca`).
pub struct HttpMetrics {
    prefix: String,
    /// (route, method, status) -> requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route -> latency.
    latency: Mutex<BTreeMap<String, Histogram>>,
    connections_open: AtomicU64,
    connections_refused_per_address: AtomicU64,
    handshakes_failed: AtomicU64,
    /// Database operation -> time spent in it ([`HttpMetrics::db_timer`]).
    db: Mutex<BTreeMap<&'static str, Histogram>>,
}

/// Times one database operation; records it in its daemon's
/// `{prefix}_db_duration_seconds` histogram when dropped.
pub struct DbTimer {
    metrics: Arc<HttpMetrics>,
    op: &'static str,
    started: std::time::Instant,
}

impl Drop for DbTimer {
    fn drop(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        lock(&self.metrics.db)
            .entry(self.op)
            .or_default()
            .observe(secs);
    }
}

/// What a refused request was refused for, by its status.
fn refusal(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("bad_request"),
        401 => Some("unauthenticated"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        409 => Some("conflict"),
        413 => Some("too_large"),
        429 => Some("rate_limited"),
        503 => Some("busy"),
        _ => None,
    }
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpMetrics {
    pub fn new(prefix: &str) -> Arc<HttpMetrics> {
        Arc::new(HttpMetrics {
            prefix: prefix.to_owned(),
            requests: Mutex::default(),
            latency: Mutex::default(),
            connections_open: AtomicU64::new(0),
            connections_refused_per_address: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
            db: Mutex::default(),
        })
    }

    /// Starts timing database operation `op` (a store method's name):
    /// keep the guard for the operation's length.
    pub fn db_timer(self: &Arc<Self>, op: &'static str) -> DbTimer {
        DbTimer {
            metrics: self.clone(),
            op,
            started: std::time::Instant::now(),
        }
    }

    /// Counts one answered request.
    pub fn record(&self, route: &str, method: &str, status: u16, secs: f64) {
        *lock(&self.requests)
            .entry((route.to_owned(), method.to_owned(), status))
            .or_insert(0) += 1;
        lock(&self.latency)
            .entry(route.to_owned())
            .or_default()
            .observe(secs);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }
    pub(crate) fn refused_per_address(&self) {
        self.connections_refused_per_address.fetch_add(1, Relaxed);
    }
    pub(crate) fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Relaxed);
    }

    /// `router` with every request counted.
    pub fn layer(self: &Arc<Self>, router: axum::Router) -> axum::Router {
        let m = self.clone();
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let m = m.clone();
                async move {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
                    let method = req.method().as_str().to_owned();
                    let t = Instant::now();
                    let resp = next.run(req).await;
                    m.record(
                        &route,
                        &method,
                        resp.status().as_u16(),
                        t.elapsed().as_secs_f64(),
                    );
                    resp
                }
            },
        ))
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let p = &self.prefix;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP {p}_http_requests_total Requests by route, method and status.\n# TYPE {p}_http_requests_total counter"
        );
        let requests = lock(&self.requests).clone();
        for ((route, method, status), n) in &requests {
            let _ = writeln!(
                o,
                "{p}_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        let _ = writeln!(
            o,
            "# HELP {p}_http_refusals_total Refused requests by reason (from their status).\n# TYPE {p}_http_refusals_total counter"
        );
        let mut refusals: BTreeMap<&str, u64> = BTreeMap::new();
        for ((_, _, status), n) in &requests {
            if let Some(r) = refusal(*status) {
                *refusals.entry(r).or_insert(0) += n;
            }
        }
        for (reason, n) in &refusals {
            let _ = writeln!(o, "{p}_http_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        let errors: u64 = requests
            .iter()
            .filter(|((_, _, s), _)| *s >= 500)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            o,
            "# HELP {p}_http_server_errors_total Requests answered with a 5xx status.\n# TYPE {p}_http_server_errors_total counter\n{p}_http_server_errors_total {errors}"
        );
        let _ = writeln!(
            o,
            "# HELP {p}_http_request_duration_seconds Time to answer, by route.\n# TYPE {p}_http_request_duration_seconds histogram"
        );
        for (route, h) in lock(&self.latency).iter() {
            let route = escape(route);
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    o,
                    "{p}_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                o,
                "{p}_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n{p}_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n{p}_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let db = lock(&self.db);
        if !db.is_empty() {
            let _ = writeln!(
                o,
                "# HELP {p}_db_duration_seconds Time spent in database operations, by operation (a store method).\n# TYPE {p}_db_duration_seconds histogram"
            );
        }
        for (op, h) in db.iter() {
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    o,
                    "{p}_db_duration_seconds_bucket{{op=\"{op}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                o,
                "{p}_db_duration_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}\n{p}_db_duration_seconds_sum{{op=\"{op}\"}} {}\n{p}_db_duration_seconds_count{{op=\"{op}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        drop(db);
        for (name, help, kind, v) in [
            (
                "connections_open",
                "Open client connections.",
                "gauge",
                self.connections_open.load(Relaxed),
            ),
            (
                "connections_refused_per_address_total",
                "Connections closed at once: their address held max_connections_per_address.",
                "counter",
                self.connections_refused_per_address.load(Relaxed),
            ),
            (
                "tls_handshakes_failed_total",
                "TLS handshakes that failed or timed out.",
                "counter",
                self.handshakes_failed.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} {kind}\n{p}_{name} {v}"
            );
        }
        o
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What `GET /metrics` answers: the daemon's [`HttpMetrics::render`] and
/// any gauges of its own (which may need the database).
pub type Render = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

/// A [`Render`] of `m` alone.
pub fn render_of(m: &Arc<HttpMetrics>) -> Render {
    let m = m.clone();
    Arc::new(move || {
        let m = m.clone();
        Box::pin(async move { m.render() })
    })
}

/// Serves `GET /metrics` (plain HTTP) on `listener` until `shutdown`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: Render,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    render().await,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds `addr` and serves [`serve_metrics`] in the background until
/// `shutdown`; returns the bound address (the daemon prints `metrics on
/// ADDR` after its `listening on` line).
pub async fn spawn_metrics(
    addr: &str,
    render: Render,
    shutdown: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "metrics endpoint at http://{bound}/metrics");
    tokio::spawn(async move {
        if let Err(e) = serve_metrics(listener, render, shutdown).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = HttpMetrics::new("mdm");
        m.record("/v1/stat", "POST", 200, 0.002);
        m.record("/v1/stat", "POST", 200, 0.02);
        m.record("/v1/stat", "POST", 403, 0.001);
        m.record("unmatched", "GET", 404, 0.0001);
        m.record("/v1/put", "POST", 503, 2.0);
        m.connection_opened();
        m.refused_per_address();
        let t = m.render();
        for line in [
            "mdm_http_requests_total{route=\"/v1/stat\",method=\"POST\",status=\"200\"} 2",
            "mdm_http_requests_total{route=\"/v1/stat\",method=\"POST\",status=\"403\"} 1",
            "mdm_http_refusals_total{reason=\"forbidden\"} 1",
            "mdm_http_refusals_total{reason=\"not_found\"} 1",
            "mdm_http_refusals_total{reason=\"busy\"} 1",
            "mdm_http_server_errors_total 1",
            "mdm_http_request_duration_seconds_bucket{route=\"/v1/stat\",le=\"0.0025\"} 2",
            "mdm_http_request_duration_seconds_bucket{route=\"/v1/stat\",le=\"0.025\"} 3",
            "mdm_http_request_duration_seconds_bucket{route=\"/v1/stat\",le=\"+Inf\"} 3",
            "mdm_http_request_duration_seconds_count{route=\"/v1/stat\"} 3",
            "mdm_http_request_duration_seconds_bucket{route=\"/v1/put\",le=\"1\"} 0",
            "mdm_http_request_duration_seconds_bucket{route=\"/v1/put\",le=\"5\"} 1",
            "mdm_connections_open 1",
            "mdm_connections_refused_per_address_total 1",
            "mdm_tls_handshakes_failed_total 0",
        ] {
            assert!(t.lines().any(|l| l == line), "no {line:?} in\n{t}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
