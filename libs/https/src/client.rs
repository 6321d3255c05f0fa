//! A minimal HTTPS client: TLS 1.3 (rustls; the configuration usually comes
//! from `ibp_auth::tls::client_config`), HTTP/1.1 (hyper), JSON bodies, a
//! response size limit and timeouts. Enough to talk to the services of the
//! stack (online CA, L-Bone, metadata manager); nothing more.
//!
//! By default every request has a connection of its own (`Connection:
//! close`). [`Client::with_keep_alive`] keeps up to `max_idle` connections
//! open between requests, shared by all clones of the client; a request
//! takes an idle connection of its own (concurrent requests never queue
//! behind one another) or opens one.
//!
//! A kept connection may have been closed by the server meanwhile (idle
//! timeout, restart). If hyper hands the request back unsent, it is sent
//! once more on a fresh connection; a request that may have reached the
//! server is never sent again (POSTs are not idempotent), its failure is
//! returned. To keep that race rare, connections idle for longer than
//! [`Client::idle_timeout`] are not reused: keep it below the server's idle
//! timeout (`ibp_https::ServeOptions::header_timeout`, 10 s by default).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::AlertDescription;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A difference of clocks worth mentioning when a certificate is refused.
pub const CLOCK_HINT_SKEW: Duration = Duration::from_secs(60);

/// Presents no client certificate (the clock probe of
/// [`Client::clock_hint`]).
#[derive(Debug)]
struct NoClientCert;

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 1 << 20;
/// Time allowed for the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the whole exchange.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most connections a client (with its clones) has open at once, half a
/// server's default per-address share (`ServeOptions::max_connections_per_address`).
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a kept-alive connection is reused after its last response (well
/// below the server's 10 s default idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an HTTPS exchange failed. Messages never contain request bodies.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: String, why: String },
    #[error("TLS handshake with {addr} failed: {why}")]
    Tls { addr: String, why: String },
    /// The server rejected our client certificate (or demanded one).
    #[error("{addr} refused the client certificate: {why}")]
    CertificateRefused { addr: String, why: String },
    #[error("{addr}: {what} timed out after {secs} s")]
    Timeout {
        addr: String,
        what: &'static str,
        secs: u64,
    },
    #[error("{addr}: HTTP exchange failed: {why}")]
    Protocol { addr: String, why: String },
    #[error("{addr}: response larger than {limit} bytes")]
    TooLarge { addr: String, limit: usize },
}

/// `https://host[:port][/prefix]`: where a service lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses an `https://` URL (no user info, query or fragment).
    pub fn parse(url: &str) -> Result<BaseUrl, HttpError> {
        let err = |why: &str| HttpError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {
                return Err(err("plain http is not allowed; use https://"))
            }
            _ => return Err(err("expected https://host[:port]")),
        };
        if rest.contains(['?', '#']) {
            return Err(err("no query or fragment allowed"));
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains white space or control characters"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(err("no user info allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("bad IPv6 address"));
            }
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| err("bad port"))?),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(err("bad port")),
            },
        };
        if ServerName::try_from(host.to_owned()).is_err() {
            return Err(err("bad host name"));
        }
        Ok(BaseUrl {
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` (IPv6 in brackets), as in the `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request target for `path` (which starts with `/`).
    pub fn target(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.prefix)
    }
}

/// A response: status, `Retry-After` (seconds, if given as such) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// The server's `Date` header: its clock.
    pub date: Option<std::time::SystemTime>,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The `error` member of a JSON error body (`{"error": "..."}`), else
    /// the start of the body as text; at most `max` characters, control
    /// characters replaced, for showing to a user.
    pub fn error_message(&self, max: usize) -> String {
        let text = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        let mut out: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(max)
            .collect();
        if text.chars().count() > max {
            out.push('…');
        }
        out
    }
}

/// One service, one TLS configuration. Clones share the kept-alive
/// connections.
#[derive(Clone)]
pub struct Client {
    url: BaseUrl,
    tls: Arc<rustls::ClientConfig>,
    /// Presenting a client certificate (changes how TLS alerts are read).
    presents_certificate: bool,
    /// Most idle connections kept open; 0: one connection per request.
    max_idle: usize,
    /// Idle connections, most recently used last.
    idle: Arc<Mutex<Vec<Conn>>>,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_response: usize,
    /// With keep-alive: idle connections older than this are closed, not
    /// reused.
    pub idle_timeout: Duration,
    /// `User-Agent` header value.
    pub user_agent: String,
    /// Requests in flight (each on a connection of its own), shared by the
    /// clones: at most [`MAX_CONNECTIONS`] (or the number given to
    /// [`Client::with_max_connections`]); further requests wait their turn.
    slots: Arc<tokio::sync::Semaphore>,
    /// The service's name for error messages.
    service: Option<String>,
}

/// An HTTP/1.1 connection: the request sender and the task driving the
/// connection, stopped when the connection is dropped.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The task driving the connection; it ends with the connection's
    /// own error, if any.
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    /// When its last response was read.
    idle_since: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The rustls error inside an I/O or hyper error, if any.
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

/// Alerts by which a server tells a client its certificate is unacceptable.
fn is_certificate_alert(a: &AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError
    )
}

/// The whole source chain of an error, `: `-separated.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

impl Client {
    /// A client for `url` with a TLS configuration (see
    /// `ibp_auth::tls::client_config`); `presents_certificate` says whether
    /// that configuration carries a client certificate.
    pub fn new(url: BaseUrl, mut tls: rustls::ClientConfig, presents_certificate: bool) -> Client {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            url,
            tls: Arc::new(tls),
            presents_certificate,
            max_idle: 0,
            idle: Arc::new(Mutex::new(Vec::new())),
            connect_timeout: CONNECT_TIMEOUT,
            total_timeout: TOTAL_TIMEOUT,
            max_response: MAX_RESPONSE,
            idle_timeout: IDLE_TIMEOUT,
            user_agent: concat!("ibp-https/", env!("CARGO_PKG_VERSION")).to_owned(),
            service: None,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// Opens at most `n` connections at a time (for this client and the
    /// clones made after this call); more requests wait their turn, within
    /// their total timeout. Servers accept only so many connections from
    /// one address (`ServeOptions::max_connections_per_address`, 32 by
    /// default): keep `n` below that.
    pub fn with_max_connections(mut self, n: usize) -> Client {
        self.slots = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// Names the service in error messages ("the L-Bone at
    /// https://host:port: cannot connect ..."), so a user knows which one
    /// failed.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Client {
        self.service = Some(name.into());
        self
    }

    /// What errors call the server: its name and URL, or its address.
    fn label(&self) -> String {
        match &self.service {
            Some(n) => format!("the {n} at https://{}", self.url.authority()),
            None => self.url.authority(),
        }
    }

    /// Sets the `User-Agent` header.
    pub fn with_user_agent(mut self, agent: impl Into<String>) -> Client {
        self.user_agent = agent.into();
        self
    }

    /// Keeps up to `max_idle` connections open for later requests (sending
    /// `Connection: keep-alive`); 0, the default, closes every connection
    /// after its response. The idle connections are shared with the clones
    /// of the returned client (clone after this call).
    pub fn with_keep_alive(mut self, max_idle: usize) -> Client {
        self.max_idle = max_idle;
        self
    }

    pub fn url(&self) -> &BaseUrl {
        &self.url
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Response, HttpError> {
        self.request(Method::GET, path, None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Response, HttpError> {
        self.request(Method::DELETE, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<Response, HttpError> {
        self.send_json(Method::POST, path, body).await
    }

    /// `method path` with a JSON body.
    pub async fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &T,
    ) -> Result<Response, HttpError> {
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::Protocol {
            addr: self.label(),
            why: format!("cannot encode the request: {e}"),
        })?;
        self.request(method, path, Some(bytes)).await
    }

    /// One request, within the total timeout, on a kept-alive connection if
    /// there is one, else on a new one.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        self.request_acting(method, path, body, None).await
    }

    /// [`Client::request`] naming the VO the request acts for
    /// ([`crate::ACTING_VO_HEADER`]; a multi-VO proxy's identity there).
    pub async fn request_acting(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        vo: Option<&str>,
    ) -> Result<Response, HttpError> {
        let secs = self.total_timeout.as_secs();
        match tokio::time::timeout(self.total_timeout, self.exchange(method, path, body, vo)).await
        {
            Ok(Err(HttpError::CertificateRefused { addr, mut why })) => {
                if let Some(hint) = self.clock_hint().await {
                    why.push_str("; ");
                    why.push_str(&hint);
                }
                Err(HttpError::CertificateRefused { addr, why })
            }
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                addr: self.label(),
                what: "request",
                secs,
            }),
        }
    }

    /// Why a server may have refused a valid certificate: its clock. Asks
    /// it, without a client certificate, for any page and compares its
    /// `Date` with ours; `Some` when they differ by more than
    /// [`CLOCK_HINT_SKEW`] (a TLS alert cannot say that the proxy looked
    /// "not yet valid" or "expired" to the server).
    async fn clock_hint(&self) -> Option<String> {
        if !self.presents_certificate {
            return None;
        }
        let mut tls = (*self.tls).clone();
        tls.client_auth_cert_resolver = Arc::new(NoClientCert);
        let probe = Client::new(self.url.clone(), tls, false);
        let asked = probe.exchange(Method::GET, "/", None, None);
        let theirs = tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .ok()?
            .ok()?
            .date?;
        let ours = std::time::SystemTime::now();
        let (ahead, by) = match theirs.duration_since(ours) {
            Ok(d) => (true, d),
            Err(e) => (false, e.duration()),
        };
        (by > CLOCK_HINT_SKEW).then(|| {
            format!(
                "the server's clock is {} s {} this machine's (its Date header): \
                 certificates look not yet valid or expired to it; check for clock skew \
                 between the machines (NTP)",
                by.as_secs(),
                if ahead { "ahead of" } else { "behind" }
            )
        })
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
        let addr = self.label();
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| HttpError::Connect {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.url.host.clone()).map_err(|e| HttpError::Url {
            url: self.url.to_string(),
            why: e.to_string(),
        })?;
        TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.tls_error(&e))
    }

    fn tls_error(&self, e: &(dyn std::error::Error + 'static)) -> HttpError {
        let addr = self.label();
        match find_rustls_error(e) {
            Some(rustls::Error::AlertReceived(a)) if is_certificate_alert(a) => {
                if self.presents_certificate || *a == AlertDescription::CertificateRequired {
                    HttpError::CertificateRefused {
                        addr,
                        why: format!("TLS alert {a:?}"),
                    }
                } else {
                    HttpError::Tls {
                        addr,
                        why: format!("TLS alert {a:?}"),
                    }
                }
            }
            Some(r) => HttpError::Tls {
                addr,
                why: r.to_string(),
            },
            None => HttpError::Tls {
                addr,
                why: chain_text(e),
            },
        }
    }

    /// A failure after the handshake: a TLS alert (the server may refuse our
    /// certificate only once it has read it) or an HTTP-level error.
    fn exchange_error(&self, e: &(dyn std::error::Error + 'static)) -> HttpError {
        if find_rustls_error(e).is_some() {
            return self.tls_error(e);
        }
        HttpError::Protocol {
            addr: self.label(),
            why: chain_text(e),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        vo: Option<&str>,
    ) -> Result<Response, HttpError> {
        let req = self.build_request(method, path, body, vo)?;
        // Held until the connection is back in the idle pool or closed.
        let _slot = self.slots.clone().acquire_owned().await.ok();
        let (conn, reused) = match self.take_idle().await {
            Some(c) => (c, true),
            None => (self.open().await?, false),
        };
        let (mut conn, resp) = self.send_on(conn, reused, req).await?;
        let reusable = self.max_idle > 0
            && resp.version() == hyper::Version::HTTP_11
            && !resp
                .headers()
                .get_all(CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        let response = self.read_response(resp).await?;
        if reusable {
            conn.idle_since = Instant::now();
            self.put_idle(conn);
        }
        Ok(response)
    }

    /// Sends `req` on `conn`; if `conn` was kept from an earlier request and
    /// hyper hands `req` back unsent (the server closed the connection
    /// meanwhile and has not seen `req`), sends it once more on a new
    /// connection. Returns the connection the response came on.
    async fn send_on(
        &self,
        mut conn: Conn,
        reused: bool,
        req: Request<Full<Bytes>>,
    ) -> Result<(Conn, hyper::Response<hyper::body::Incoming>), HttpError> {
        match conn.sender.try_send_request(req).await {
            Ok(resp) => Ok((conn, resp)),
            Err(mut e) => match e.take_message() {
                Some(req) if reused => {
                    tracing::debug!(addr = %self.url.authority(), error = %e.error(),
                        "kept-alive connection closed; sending again on a new one");
                    drop(conn);
                    let mut conn = self.open().await?;
                    let resp = conn
                        .sender
                        .send_request(req)
                        .await
                        .map_err(|e| self.exchange_error(&e))?;
                    Ok((conn, resp))
                }
                _ => {
                    let e = e.into_error();
                    // A TLS alert read after the handshake (the server
                    // refusing our certificate) fails the connection, and
                    // the request only learns that it was canceled: the
                    // connection's own error says why.
                    let driver = tokio::time::timeout(Duration::from_secs(1), &mut conn.driver);
                    if let Ok(Ok(Err(real))) = driver.await {
                        return Err(self.exchange_error(&real));
                    }
                    Err(self.exchange_error(&e))
                }
            },
        }
    }

    /// A new connection: TCP, TLS handshake (within the connect timeout),
    /// HTTP/1.1 handshake, and the task driving it.
    async fn open(&self) -> Result<Conn, HttpError> {
        let addr = self.label();
        let tls = match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(HttpError::Timeout {
                    addr,
                    what: "connection",
                    secs: self.connect_timeout.as_secs(),
                })
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.exchange_error(&e))?;
        // Its errors reach the request through the sender, or (when the
        // request found the connection already failed) through its result.
        let driver = tokio::spawn(conn);
        Ok(Conn {
            sender,
            driver,
            idle_since: Instant::now(),
        })
    }

    /// An idle connection ready for a request, if any; closes the idle
    /// connections found closed or too old on the way.
    async fn take_idle(&self) -> Option<Conn> {
        if self.max_idle == 0 {
            return None;
        }
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.pop()?
            };
            if conn.sender.is_closed() || conn.idle_since.elapsed() > self.idle_timeout {
                continue;
            }
            // Ready at once unless the driver has not yet caught up with the
            // end of the last response; an error means the connection closed.
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for a later request, unless enough are kept already.
    fn put_idle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Drop the ones that went stale meanwhile (server idle timeout).
        idle.retain(|c| !c.sender.is_closed() && c.idle_since.elapsed() <= self.idle_timeout);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    fn build_request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        vo: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let connection = if self.max_idle > 0 {
            "keep-alive"
        } else {
            "close"
        };
        let mut req = Request::builder()
            .method(method)
            .uri(self.url.target(path))
            .header(HOST, self.url.authority())
            .header(ACCEPT, "application/json")
            .header(CONNECTION, connection)
            .header(hyper::header::USER_AGENT, self.user_agent.as_str());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(vo) = vo {
            req = req.header(crate::ACTING_VO_HEADER, vo);
        }
        req.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Protocol {
                addr: self.label(),
                why: format!("cannot build the request: {e}"),
            })
    }

    /// Status, `Retry-After` and the whole body (within the size limit).
    async fn read_response(
        &self,
        resp: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Response, HttpError> {
        let addr = self.label();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let date = resp
            .headers()
            .get(hyper::header::DATE)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let too_large = || HttpError::TooLarge {
            addr: addr.clone(),
            limit: self.max_response,
        };
        if let Some(len) = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > self.max_response as u64 {
                return Err(too_large());
            }
        }
        let body = Limited::new(resp.into_body(), self.max_response)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large()
                } else {
                    self.exchange_error(e.as_ref())
                }
            })?
            .to_bytes()
            .to_vec();
        Ok(Response {
            status,
            retry_after,
            date,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for a port nothing listens on: any new connection fails
    /// with [`HttpError::Connect`].
    async fn client_for_closed_port() -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        let tls = ibp_auth::tls::client_config(&ibp_auth::TrustStore::new(), None).unwrap();
        Client::new(url, tls, false).with_keep_alive(4)
    }

    /// A connection whose driver is gone: hyper refuses requests and hands
    /// them back unsent.
    async fn dead_connection() -> Conn {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .unwrap();
        drop(conn);
        Conn {
            sender,
            driver: tokio::spawn(async { Ok(()) }),
            idle_since: Instant::now(),
        }
    }

    fn post(c: &Client) -> Request<Full<Bytes>> {
        c.build_request(Method::POST, "/x", Some(b"{}".to_vec()), None)
            .unwrap()
    }

    #[tokio::test]
    async fn an_unsent_request_on_a_kept_connection_goes_out_on_a_new_one() {
        let c = client_for_closed_port().await;
        let err = c
            .send_on(dead_connection().await, true, post(&c))
            .await
            .err()
            .unwrap();
        // It tried a new connection.
        assert!(matches!(err, HttpError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_request_on_a_new_connection_is_never_sent_again() {
        let c = client_for_closed_port().await;
        let err = c
            .send_on(dead_connection().await, false, post(&c))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, HttpError::Protocol { .. }), "{err:?}");
    }
}
