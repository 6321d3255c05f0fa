//! CONTRACT TEST SERVER for the client side of the online CA's HTTP API.
//!
//! This is NOT the online CA: it is a tiny stand-in (hyper + tokio-rustls
//! with `ibp_auth::tls::server_config(.., ClientAuth::Optional)` and a test
//! PKI from `ibp_auth::pki::Authority`) that implements the API contract
//! the `lors` client relies on, until the real server in `online-ca/` can be
//! used instead:
//!
//! - `POST /v1/login` `{method, user, password|token, vo, csr, lifetime}` →
//!   200 `{certificate, chain, attributes, vo, vo_id, groups, not_after}`;
//! - `POST /v1/attributes` `{vo, lifetime}` over mutual TLS, bound to the
//!   peer's end-entity certificate → 200 `{attributes, vo, vo_id, groups,
//!   not_after}`, 401 without a certificate, 403 for another VO;
//! - `GET /v1/trust` → `{ca, aa: {vo: pem}}`;
//! - errors `{"error": "..."}` with 400/401/403/429 (`Retry-After`)/500.
//!
//! Test users: `alice` / `secret` (radius, local), OIDC token `good-token`
//! (user `alice`); `flood` is rate limited, `crash` gets a 500, `huge` a 2
//! MiB answer, `garbage` a non-JSON 200, `swap` a certificate for another
//! key. Only VO `vo1` exists.

#![allow(dead_code)]

use std::convert::Infallible;
use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ibp_auth::pki::Authority;
use ibp_auth::tls::{server_config, ClientAuth};
use ibp_auth::{unix_now, Group, TrustStore, VoAttributes};
use ibp_testkit::pki::Pki;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

pub const ORG: &str = "Test Grid";
pub const VO: &str = "vo1";
pub const PASSWORD: &str = "secret";
pub const TOKEN: &str = "good-token";

/// What the stand-in server saw (request bodies without secrets).
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<(String, Value)>,
}

struct State {
    ca: Authority,
    aa: Authority,
    trust: Arc<TrustStore>,
    seen: Arc<Mutex<Seen>>,
}

/// A test PKI (CA, AA for `vo1`), its trust directory and a running server.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub trust_dir: PathBuf,
    pub pki: Pki,
    pub ca: Authority,
    pub aa: Authority,
    pub addr: SocketAddr,
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
}

pub use ibp_testkit::pki::{pem_of, write};

impl TestCa {
    pub fn start() -> TestCa {
        let pki = Pki::new(&[VO]);
        let (ca, aa) = (pki.ca.clone(), pki.aa(VO).clone());
        let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let trust_dir = dir.path().join("trust");
        pki.write_trust(&trust_dir, &[VO]);
        let trust = Arc::new(TrustStore::load(&trust_dir).unwrap());
        let cfg = server_config(
            trust.clone(),
            vec![CertificateDer::from(server.cert_der.clone())],
            server.key_pkcs8.clone(),
            ClientAuth::Optional,
        )
        .unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = Arc::new(State {
            ca: ca.clone(),
            aa: aa.clone(),
            trust,
            seen: seen.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, Arc::new(cfg), state));
        });
        TestCa {
            dir,
            trust_dir,
            pki,
            ca,
            aa,
            addr,
            url: format!("https://{addr}"),
            seen,
        }
    }

    /// A fresh temp path for the proxy (never /tmp/x509up_u<uid>).
    pub fn proxy_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a user certificate and key from `issuer` as PEM files.
    pub fn user_files(&self, issuer: &Authority, cn: &str) -> (PathBuf, PathBuf) {
        let user = issuer.issue_user(ORG, cn, 7 * 86_400).unwrap();
        let cert = self.dir.path().join(format!("{cn}-cert.pem"));
        let key = self.dir.path().join(format!("{cn}-key.pem"));
        write(&cert, &pem_of("CERTIFICATE", &user.cert_der));
        write(&key, &pem_of("PRIVATE KEY", &user.key_pkcs8));
        (cert, key)
    }

    pub fn trust_store(&self) -> TrustStore {
        TrustStore::load(&self.trust_dir).unwrap()
    }
}

async fn serve(listener: std::net::TcpListener, cfg: Arc<rustls::ServerConfig>, state: Arc<State>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer: Option<Vec<CertificateDer<'static>>> =
                tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(handle(&state, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": msg }))
}

fn attributes(state: &State, vo: &str, user: &str, ee_der: &[u8], lifetime: i64) -> Value {
    let (_, ee) = x509_parser::parse_x509_certificate(ee_der).unwrap();
    let now = unix_now();
    let attrs = VoAttributes {
        vo: vo.into(),
        vo_id: format!("{vo}:{user}"),
        groups: vec![Group {
            id: "g-users".into(),
            name: "users".into(),
        }],
        holder_issuer: ee.issuer().as_raw().to_vec(),
        holder_serial: ee.raw_serial().to_vec(),
        not_before: now - 60,
        not_after: now + lifetime,
    };
    let ext = state.aa.sign_attributes(&attrs).unwrap();
    json!({
        "attributes": base64::engine::general_purpose::STANDARD.encode(ext),
        "vo": vo,
        "vo_id": attrs.vo_id,
        "groups": [{"id": "g-users", "name": "users"}],
        "not_after": attrs.not_after,
    })
}

fn lifetime_of(v: &Value) -> i64 {
    v["lifetime"]
        .as_i64()
        .unwrap_or(12 * 3600)
        .clamp(60, 7 * 86_400)
}

async fn handle(
    state: &State,
    peer: Option<Vec<CertificateDer<'static>>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let Ok(body) = req.into_body().collect().await else {
        return error(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let body = body.to_bytes();
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/trust") => reply(
            StatusCode::OK,
            json!({
                "ca": pem_of("CERTIFICATE", &state.ca.cert_der),
                "aa": { VO: pem_of("CERTIFICATE", &state.aa.cert_der) },
            }),
        ),
        ("POST", "/v1/login") => {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "not JSON");
            };
            let mut logged = v.clone();
            for secret in ["password", "token"] {
                if logged.get(secret).is_some() {
                    logged[secret] = json!("<present>");
                }
            }
            state
                .seen
                .lock()
                .unwrap()
                .requests
                .push((path.clone(), logged));
            login(state, &v)
        }
        ("POST", "/v1/attributes") => {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "not JSON");
            };
            state
                .seen
                .lock()
                .unwrap()
                .requests
                .push((path.clone(), v.clone()));
            let Some(chain) = peer.filter(|c| !c.is_empty()) else {
                return error(StatusCode::UNAUTHORIZED, "no client certificate");
            };
            let verified =
                match ibp_auth::verify::verify_certificates(&chain, &state.trust, unix_now()) {
                    Ok(v) => v,
                    Err(e) => return error(StatusCode::UNAUTHORIZED, &e.to_string()),
                };
            let ee_der = chain[verified.ee_index].as_ref().to_vec();
            let cn = verified.certs[verified.ee_index]
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("unknown")
                .to_owned();
            let vo = v["vo"].as_str().unwrap_or("");
            if vo != VO {
                return error(StatusCode::FORBIDDEN, "not a member of that VO");
            }
            reply(
                StatusCode::OK,
                attributes(state, vo, &cn, &ee_der, lifetime_of(&v)),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn login(state: &State, v: &Value) -> Response<Full<Bytes>> {
    let (Some(method), Some(vo), Some(csr)) =
        (v["method"].as_str(), v["vo"].as_str(), v["csr"].as_str())
    else {
        return error(StatusCode::BAD_REQUEST, "missing fields");
    };
    let user = v["user"].as_str().unwrap_or("");
    let authenticated = match method {
        "radius" | "local" => v["password"].as_str() == Some(PASSWORD),
        "oidc" => v["token"].as_str() == Some(TOKEN) && v.get("password").is_none(),
        _ => return error(StatusCode::BAD_REQUEST, "unknown method"),
    };
    match user {
        "flood" => {
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "7")
                .body(Full::new(Bytes::from(
                    json!({"error": "too many attempts"}).to_string(),
                )))
                .unwrap()
        }
        "crash" => return error(StatusCode::INTERNAL_SERVER_ERROR, "database is down"),
        "huge" => {
            return Response::builder()
                .status(StatusCode::OK)
                .body(Full::new(Bytes::from(vec![b' '; 2 << 20])))
                .unwrap()
        }
        "garbage" => {
            return Response::builder()
                .status(StatusCode::OK)
                .body(Full::new(Bytes::from_static(b"<html>hello</html>")))
                .unwrap()
        }
        _ => {}
    }
    if !authenticated {
        return error(StatusCode::UNAUTHORIZED, "bad user name or password");
    }
    if vo != VO {
        return error(StatusCode::FORBIDDEN, "not a member of that VO");
    }
    let Ok(csr) = pem::parse(csr) else {
        return error(StatusCode::BAD_REQUEST, "csr is not PEM");
    };
    if csr.tag() != "CERTIFICATE REQUEST" {
        return error(StatusCode::BAD_REQUEST, "csr is not a CERTIFICATE REQUEST");
    }
    let lifetime = lifetime_of(v);
    let name = if user.is_empty() { "alice" } else { user };
    let cert = if name == "swap" {
        // A certificate for some other key: the client must notice.
        state.ca.issue_user(ORG, name, lifetime).unwrap().cert_der
    } else {
        match state.ca.issue_from_csr(csr.contents(), ORG, name, lifetime) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    };
    let mut body = attributes(state, vo, name, &cert, lifetime);
    body["certificate"] = json!(pem_of("CERTIFICATE", &cert));
    body["chain"] = json!(pem_of("CERTIFICATE", &state.ca.cert_der));
    reply(StatusCode::OK, body)
}

/// The result of running the `lors` binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `lors` with `X509_USER_PROXY=proxy`, no `LORS_TRUST_DIR`, and
/// `stdin` written to its standard input.
pub fn lors(proxy: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    lors_env(proxy, args, stdin, &[])
}

pub fn lors_env(proxy: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &OsStr)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lors"));
    cmd.args(args)
        .env("X509_USER_PROXY", proxy)
        .env_remove("LORS_TRUST_DIR")
        .env("USER", "alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            // The process may exit before reading (usage errors).
            let _ = input.write_all(text.as_bytes());
        }
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
