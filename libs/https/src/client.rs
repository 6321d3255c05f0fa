//! A minimal HTTPS client: TLS 1.3 (rustls; the configuration usually comes
//! from `ibp_auth::tls::client_config`), HTTP/1.1 (hyper), one request per
//! connection, JSON bodies, a response size limit and timeouts. Enough to
//! talk to the services of the stack (online CA, L-Bone); nothing more.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::AlertDescription;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 1 << 20;
/// Time allowed for the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the whole exchange.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// One service, one TLS configuration.
#[derive(Clone)]
pub struct Client {
    url: BaseUrl,
    tls: Arc<rustls::ClientConfig>,
    /// Presenting a client certificate (changes how TLS alerts are read).
    presents_certificate: bool,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_response: usize,
    /// `User-Agent` header value.
    pub user_agent: String,
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
            connect_timeout: CONNECT_TIMEOUT,
            total_timeout: TOTAL_TIMEOUT,
            max_response: MAX_RESPONSE,
            user_agent: concat!("ibp-https/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// Sets the `User-Agent` header.
    pub fn with_user_agent(mut self, agent: impl Into<String>) -> Client {
        self.user_agent = agent.into();
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
            addr: self.url.authority(),
            why: format!("cannot encode the request: {e}"),
        })?;
        self.request(method, path, Some(bytes)).await
    }

    /// One request on a fresh connection, within the total timeout.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let secs = self.total_timeout.as_secs();
        match tokio::time::timeout(self.total_timeout, self.exchange(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                addr: self.url.authority(),
                what: "request",
                secs,
            }),
        }
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
        let addr = self.url.authority();
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
        let addr = self.url.authority();
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
            addr: self.url.authority(),
            why: chain_text(e),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let addr = self.url.authority();
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
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.exchange_error(&e))?;
        let driver = tokio::spawn(conn);
        let result = self.send(&mut sender, method, path, body).await;
        drop(sender);
        driver.abort();
        result
    }

    async fn send(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let addr = self.url.authority();
        let proto = |why: String| HttpError::Protocol {
            addr: addr.clone(),
            why,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(self.url.target(path))
            .header(HOST, self.url.authority())
            .header(ACCEPT, "application/json")
            .header(CONNECTION, "close")
            .header(hyper::header::USER_AGENT, self.user_agent.as_str());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| proto(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.exchange_error(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
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
            body,
        })
    }
}
