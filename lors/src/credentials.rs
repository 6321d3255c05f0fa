//! Credentials: logging in to the online CA, making a proxy credential from a
//! user certificate, inspecting and destroying the proxy file.
//!
//! The online CA's HTTP API (JSON over HTTPS, TLS 1.3):
//!
//! - `POST /v1/login` `{method, user, password | token, vo, csr, lifetime}`
//!   → `{certificate, chain, attributes, vo, vo_id, groups, not_after}`;
//! - `POST /v1/attributes` over mutual TLS with the user's certificate
//!   `{vo, lifetime}` → `{attributes, vo, vo_id, groups, not_after}`;
//! - `GET /v1/trust` → `{ca, aa: {vo: pem}}`;
//! - errors: 400, 401, 403, 429 (`Retry-After`), 500 with `{"error": "..."}`.
//!
//! In both cases the proxy is minted here, below the user's certificate,
//! with the VO attribute extension the CA's attribute authority signed; the
//! key of a certificate obtained by `login` lives only in memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ibp_auth::attributes::SignedAttributes;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::{AuthError, Group, ProxyCredential, TrustStore};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::exit;
use crate::https::{BaseUrl, Client, HttpError, Response};
use crate::validity::{format_duration, format_local};

pub use ibp_auth::credential::default_proxy_path;

/// Largest token file read (an OIDC JWT is a few KiB).
pub const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// Longest server error message shown.
const MAX_MESSAGE: usize = 300;

/// Why a credential command failed; [`Error::exit_code`] maps it to the
/// documented exit codes. Messages never contain passwords, tokens or keys.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{}", no_proxy_message(.0))]
    NoProxy(PathBuf),
    #[error("{0}")]
    InvalidProxy(String),
    /// A service refused the request as malformed (HTTP 400); the message
    /// names the service.
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication refused: {0}")]
    Refused(String),
    /// A service knows who we are but refuses the operation (HTTP 403 of
    /// the metadata manager: a right missing on the entry).
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// No such file, directory, version, member or key (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The entry exists, or changed meanwhile (HTTP 409): another version
    /// was put since the one the request was based on.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("rate limited by the CA{}: {message}", retry_after.map(|s| format!(" (retry after {s} s)")).unwrap_or_default())]
    RateLimited {
        retry_after: Option<u64>,
        message: String,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Local(String),
    /// File data could not be read back intact (every replica or too many
    /// shares lost or corrupt), or an exNode or wrapped key is unusable.
    #[error("{0}")]
    Data(String),
}

impl Error {
    /// The same error (and exit code) with `note` appended to its message.
    pub fn with_note(self, note: &str) -> Error {
        let add = |m: String| format!("{m}; {note}");
        match self {
            Error::Usage(m) => Error::Usage(add(m)),
            Error::NoProxy(p) => Error::InvalidProxy(add(no_proxy_message(&p))),
            Error::InvalidProxy(m) => Error::InvalidProxy(add(m)),
            Error::BadRequest(m) => Error::BadRequest(add(m)),
            Error::Refused(m) => Error::Refused(add(m)),
            Error::Forbidden(m) => Error::Forbidden(add(m)),
            Error::NotFound(m) => Error::NotFound(add(m)),
            Error::Conflict(m) => Error::Conflict(add(m)),
            Error::RateLimited {
                retry_after,
                message,
            } => Error::RateLimited {
                retry_after,
                message: add(message),
            },
            Error::Unavailable(m) => Error::Unavailable(add(m)),
            Error::Local(m) => Error::Local(add(m)),
            Error::Data(m) => Error::Data(add(m)),
        }
    }

    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::BadRequest(_) => exit::USAGE,
            Error::NoProxy(_) | Error::InvalidProxy(_) => exit::NO_PROXY,
            Error::Refused(_) | Error::Forbidden(_) => exit::REFUSED,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Conflict(_) => exit::CONFLICT,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::RateLimited { .. } => exit::RATE_LIMITED,
            Error::Local(_) => exit::LOCAL,
            Error::Data(_) => exit::DATA,
        }
    }
}

impl From<HttpError> for Error {
    fn from(e: HttpError) -> Error {
        match e {
            HttpError::Url { .. } => Error::Usage(e.to_string()),
            HttpError::CertificateRefused { .. } => Error::Refused(e.to_string()),
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

/// A password or token: not printed by `Debug`, zeroed when dropped.
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // The whole buffer (capacity too), with writes the compiler keeps.
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// How the online CA checks who the user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginMethod {
    /// Password checked by the site's RADIUS server.
    Radius,
    /// Password checked against the CA's own user database.
    Local,
    /// An OpenID Connect token (JWT) from the site's identity provider.
    Oidc,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Radius => "radius",
            LoginMethod::Local => "local",
            LoginMethod::Oidc => "oidc",
        }
    }
}

/// What the CA needs to log a user in.
#[derive(Debug)]
pub struct LoginParams {
    pub method: LoginMethod,
    pub user: String,
    /// The password (radius, local) or the token (oidc).
    pub secret: Secret,
    pub vo: String,
    /// Further VOs for the same proxy (`--vo a --vo b`: a multi-VO proxy).
    pub also: Vec<String>,
    /// Requested proxy lifetime in seconds.
    pub lifetime: u64,
}

/// A VO group as the API spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiGroup {
    pub id: String,
    pub name: String,
}

/// `POST /v1/login` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct LoginResponse {
    pub certificate: String,
    #[serde(default)]
    pub chain: String,
    pub attributes: String,
    /// A standard VOMS AC extension (base64), from a CA with `voms_uri`.
    #[serde(default)]
    pub voms: Option<String>,
    pub vo: String,
    pub vo_id: String,
    #[serde(default)]
    pub groups: Vec<ApiGroup>,
    pub not_after: i64,
    /// The further VOs' attributes (a multi-VO login), in the order asked.
    #[serde(default)]
    pub also: Vec<AlsoResponse>,
}

/// The attributes of one further VO in a `POST /v1/login` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct AlsoResponse {
    pub attributes: String,
    #[serde(default)]
    pub voms: Option<String>,
    pub vo: String,
    pub vo_id: String,
    #[serde(default)]
    pub groups: Vec<ApiGroup>,
}

/// `POST /v1/attributes` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct AttributesResponse {
    pub attributes: String,
    /// A standard VOMS AC extension (base64), from a CA with `voms_uri`.
    #[serde(default)]
    pub voms: Option<String>,
    pub vo: String,
    pub vo_id: String,
    #[serde(default)]
    pub groups: Vec<ApiGroup>,
    pub not_after: i64,
}

/// `GET /v1/trust` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TrustResponse {
    pub ca: String,
    #[serde(default)]
    pub aa: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    method: &'static str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    vo: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    also: &'a [String],
    csr: String,
    lifetime: u64,
}

#[derive(Serialize)]
struct AttributesBody<'a> {
    vo: &'a str,
    lifetime: u64,
}

/// Printable, bounded text from a server (no control characters).
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if s.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// The body of a 200 answer, or the error the status stands for.
pub(crate) fn check_status(resp: Response) -> Result<Vec<u8>, Error> {
    if resp.status == 200 {
        return Ok(resp.body);
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let detail = serde_json::from_slice::<ErrorBody>(&resp.body)
        .map(|b| sanitize(&b.error))
        .unwrap_or_else(|_| "no details".to_owned());
    let message = format!("HTTP {}: {detail}", resp.status);
    Err(match resp.status {
        400 => Error::BadRequest(format!(
            "the CA refused the request as malformed (HTTP 400): {detail}"
        )),
        401 | 403 => Error::Refused(message),
        404 => Error::NotFound(format!("the CA answered {message}")),
        409 => Error::Conflict(format!("the CA answered {message}")),
        429 => Error::RateLimited {
            retry_after: resp.retry_after,
            message,
        },
        _ => Error::Unavailable(format!("the CA answered {message}")),
    })
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::Unavailable(format!("invalid {what} answer from the CA: {e}")))
}

/// Where the trust for the CA's server certificate comes from.
#[derive(Debug, Clone)]
pub enum TrustSource {
    /// A trust directory (`ca/*.pem`, `vomsdir/<vo>/*.pem`, ...).
    Dir(PathBuf),
    /// A PEM file with CA certificates.
    CaFile(PathBuf),
}

impl TrustSource {
    /// Loads the trust; at least one CA certificate is required.
    pub fn load(&self) -> Result<TrustStore, Error> {
        let (trust, what) = match self {
            TrustSource::Dir(dir) => {
                if !dir.is_dir() {
                    return Err(Error::Usage(format!(
                        "trust directory {} does not exist",
                        dir.display()
                    )));
                }
                let t = TrustStore::load(dir).map_err(|e| {
                    Error::Usage(format!(
                        "cannot load trust directory {}: {e}",
                        dir.display()
                    ))
                })?;
                (t, format!("trust directory {} (ca/*.pem)", dir.display()))
            }
            TrustSource::CaFile(file) => {
                let text = std::fs::read(file).map_err(|e| {
                    Error::Usage(format!(
                        "cannot read CA certificate {}: {e}",
                        file.display()
                    ))
                })?;
                let certs = ibp_auth::trust::pem_certificates(&text).map_err(|e| {
                    Error::Usage(format!("bad CA certificate file {}: {e}", file.display()))
                })?;
                let mut t = TrustStore::new();
                for c in certs {
                    t.add_ca(c).map_err(|e| {
                        Error::Usage(format!("bad CA certificate in {}: {e}", file.display()))
                    })?;
                }
                (t, format!("file {}", file.display()))
            }
        };
        if trust.ca_certificates().is_empty() {
            return Err(Error::Usage(format!("no CA certificate in {what}")));
        }
        Ok(trust)
    }
}

/// The online CA's API.
#[derive(Debug, Clone)]
pub struct CaClient {
    http: Client,
}

impl CaClient {
    /// A client for the CA at `url` whose server certificate is checked
    /// against the CAs of `trust`; `credential` (a certificate chain and
    /// key) is presented as the TLS client certificate if given.
    pub fn new(
        url: &str,
        trust: &TrustStore,
        credential: Option<&ProxyCredential>,
    ) -> Result<CaClient, Error> {
        let base = BaseUrl::parse(url)?;
        let tls = ibp_auth::tls::client_config(trust, credential)
            .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
        Ok(CaClient {
            http: Client::new(base, tls, credential.is_some()).with_service_name("online CA"),
        })
    }

    /// The underlying HTTPS client (to adjust timeouts).
    pub fn http_mut(&mut self) -> &mut Client {
        &mut self.http
    }

    pub fn url(&self) -> &BaseUrl {
        self.http.url()
    }

    /// The HTTPS client (for the CA's other endpoints, e.g. maintenance).
    pub(crate) fn http(&self) -> &Client {
        &self.http
    }

    /// `POST /v1/login`.
    async fn login(&self, p: &LoginParams, csr_pem: String) -> Result<LoginResponse, Error> {
        let (password, token) = match p.method {
            LoginMethod::Oidc => (None, Some(p.secret.expose())),
            LoginMethod::Radius | LoginMethod::Local => (Some(p.secret.expose()), None),
        };
        let body = LoginBody {
            method: p.method.as_str(),
            user: &p.user,
            password,
            token,
            vo: &p.vo,
            also: &p.also,
            csr: csr_pem,
            lifetime: p.lifetime,
        };
        let resp = self.http.post_json("/v1/login", &body).await?;
        parse_json(&check_status(resp)?, "login")
    }

    /// `POST /v1/attributes` (the client must present a certificate).
    pub async fn attributes(&self, vo: &str, lifetime: u64) -> Result<AttributesResponse, Error> {
        let resp = self
            .http
            .post_json("/v1/attributes", &AttributesBody { vo, lifetime })
            .await?;
        parse_json(&check_status(resp)?, "attributes")
    }

    /// `GET /v1/trust`.
    pub async fn trust(&self) -> Result<TrustResponse, Error> {
        let resp = self.http.get("/v1/trust").await?;
        parse_json(&check_status(resp)?, "trust")
    }
}

/// A freshly made proxy and what its attributes say.
#[derive(Debug, Clone)]
pub struct NewProxy {
    pub credential: ProxyCredential,
    pub vo: String,
    pub vo_id: String,
    pub groups: Vec<Group>,
    /// The further VOs of a multi-VO proxy: VO, VO ID, groups.
    pub also: Vec<(String, String, Vec<Group>)>,
    /// When the proxy (or its attributes) expire, Unix seconds.
    pub not_after: i64,
    /// The lifetime that was asked for, in seconds.
    pub requested: u64,
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| e.to_string())
}

fn is_self_issued(der: &[u8]) -> bool {
    parse_cert(der).is_ok_and(|c| c.subject().as_raw() == c.issuer().as_raw())
}

/// Checks the VO attribute extension from the CA and mints the proxy below
/// `ee_chain` (end-entity certificate first, then intermediates).
/// One VO's attribute set from the CA (base64, as answered).
pub(crate) struct VoSet<'a> {
    pub(crate) attributes_b64: &'a str,
    pub(crate) voms_b64: Option<&'a str>,
    pub(crate) vo: &'a str,
}

/// Checks the VO attribute sets from the CA and mints the proxy below
/// `ee_chain` (end-entity certificate first, then intermediates), for one
/// or more VOs (`sets`, the first VO first): the
/// first VO's attributes in the VO attribute extension, the others' in the
/// further-VOs extension, and every VOMS AC from the CA in one VOMS
/// extension (docs/identity.md, "Several VOs in one proxy").
pub(crate) fn mint_multi_vo_proxy(
    ee_chain: &[Vec<u8>],
    key_pkcs8: &[u8],
    sets: &[VoSet<'_>],
    lifetime: u64,
) -> Result<NewProxy, Error> {
    let bad = |why: String| Error::Unavailable(format!("invalid answer from the CA: {why}"));
    let ee_der = ee_chain
        .first()
        .ok_or_else(|| Error::Local("empty certificate chain".into()))?;
    let ee = parse_cert(ee_der).map_err(|e| bad(format!("certificate: {e}")))?;
    let now = ibp_auth::unix_now();
    let mut granted = i64::try_from(lifetime).unwrap_or(i64::MAX);
    let mut exts = Vec::new();
    let mut parsed = Vec::new();
    let mut vomses = Vec::new();
    for set in sets {
        let ext = base64::engine::general_purpose::STANDARD
            .decode(set.attributes_b64.trim())
            .map_err(|e| bad(format!("attributes are not base64: {e}")))?;
        let signed = SignedAttributes::parse(&ext).map_err(|e| bad(e.to_string()))?;
        let attrs = &signed.attributes;
        if attrs.vo != set.vo {
            return Err(bad(format!("attributes are for VO {:?}", attrs.vo)));
        }
        if attrs.holder_issuer != ee.issuer().as_raw() || attrs.holder_serial != ee.raw_serial() {
            return Err(bad("attributes are bound to another certificate".into()));
        }
        granted = granted.min(attrs.not_after.saturating_sub(now));
        if granted <= 0 {
            return Err(bad(format!(
                "attributes expired at {}",
                format_local(attrs.not_after)
            )));
        }
        // A standard VOMS AC from the CA goes into the proxy too, for VOMS
        // tools (services use the attributes above).
        if let Some(v) = set.voms_b64 {
            let der = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|e| bad(format!("VOMS AC is not base64: {e}")))?;
            ibp_auth::voms::parse_extension(&der).map_err(|e| bad(e.to_string()))?;
            vomses.push(der);
        }
        exts.push(ext);
        parsed.push(signed);
    }
    let voms = match vomses.len() {
        0 => None,
        1 => vomses.pop(),
        _ => {
            Some(ibp_auth::voms::issue::merge_extensions(&vomses).map_err(|e| bad(e.to_string()))?)
        }
    };
    let extra: Vec<(&[u64], &[u8])> = voms
        .as_deref()
        .map(|v| (ibp_auth::voms::VOMS_EXTENSION, v))
        .into_iter()
        .collect();
    let (first_ext, more) = exts
        .split_first()
        .ok_or_else(|| Error::Local("no VO to make a proxy for".into()))?;
    let credential = ProxyCredential::create_multi_vo(
        ee_chain,
        key_pkcs8,
        &ProxyOptions {
            lifetime: granted,
            attributes: Some(first_ext.clone()),
            path_len: None,
        },
        more,
        &extra,
    )
    .map_err(|e| match e {
        AuthError::Expired { .. } => Error::Usage(format!("cannot make a proxy: {e}")),
        _ => Error::Local(format!("cannot make a proxy: {e}")),
    })?;
    let attrs = &parsed[0].attributes;
    let not_after = parsed.iter().map(|p| p.attributes.not_after).fold(
        credential
            .not_after()
            .map_err(|e| Error::Local(e.to_string()))?,
        i64::min,
    );
    Ok(NewProxy {
        vo: attrs.vo.clone(),
        vo_id: attrs.vo_id.clone(),
        groups: attrs.groups.clone(),
        also: parsed[1..]
            .iter()
            .map(|p| {
                let a = &p.attributes;
                (a.vo.clone(), a.vo_id.clone(), a.groups.clone())
            })
            .collect(),
        credential,
        not_after,
        requested: lifetime,
    })
}

fn check_lifetime(lifetime: u64) -> Result<(), Error> {
    if lifetime == 0 {
        return Err(Error::Usage("--valid must be longer than 00:00".into()));
    }
    Ok(())
}

/// Logs in to the CA with a password or token: a fresh key and CSR, a
/// short-lived user certificate and VO attributes from the CA, then a proxy
/// below that certificate. The certificate's key never leaves memory.
pub async fn login(ca: &CaClient, p: &LoginParams) -> Result<NewProxy, Error> {
    check_lifetime(p.lifetime)?;
    if p.secret.is_empty() {
        return Err(Error::Usage(match p.method {
            LoginMethod::Oidc => "empty token".into(),
            _ => "empty password".into(),
        }));
    }
    let req = KeyRequest::new(&p.user)?;
    let resp = ca.login(p, req.csr_pem.clone()).await?;
    let answered: Vec<&str> = resp.also.iter().map(|a| a.vo.as_str()).collect();
    if answered != p.also.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(Error::Unavailable(format!(
            "invalid answer from the CA: attributes for VOs {answered:?}, asked for {:?} (a CA older than multi-VO logins?)",
            p.also
        )));
    }
    req.proxy(&resp, &p.vo, p.lifetime)
}

/// A fresh key and a CSR for it (the key stays in memory).
pub(crate) struct KeyRequest {
    pub(crate) csr_pem: String,
    key_pkcs8: Vec<u8>,
    spki: Vec<u8>,
}

impl KeyRequest {
    pub(crate) fn new(cn: &str) -> Result<KeyRequest, Error> {
        let (csr_der, key_pkcs8) = ibp_auth::pki::new_csr(cn)
            .map_err(|e| Error::Local(format!("cannot make a key and request: {e}")))?;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
                .map_err(|e| Error::Local(format!("cannot read our own request: {e}")))?;
        let spki = csr.certification_request_info.subject_pki.raw.to_vec();
        let csr_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr_der.clone()));
        Ok(KeyRequest {
            csr_pem,
            key_pkcs8,
            spki,
        })
    }

    /// The proxy below the certificate the CA issued for this request.
    pub(crate) fn proxy(
        &self,
        resp: &LoginResponse,
        vo: &str,
        lifetime: u64,
    ) -> Result<NewProxy, Error> {
        issued_proxy(resp, &self.spki, &self.key_pkcs8, vo, lifetime)
    }
}

/// Checks a certificate the CA issued for our key and mints a proxy below it.
fn issued_proxy(
    resp: &LoginResponse,
    our_spki: &[u8],
    key_pkcs8: &[u8],
    vo: &str,
    lifetime: u64,
) -> Result<NewProxy, Error> {
    let bad = |why: String| Error::Unavailable(format!("invalid answer from the CA: {why}"));
    let mut certs = ibp_auth::trust::pem_certificates(resp.certificate.as_bytes())
        .map_err(|e| bad(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate".into()));
    }
    let chain = ibp_auth::trust::pem_certificates(resp.chain.as_bytes())
        .map_err(|e| bad(format!("chain: {e}")))?;
    {
        let ee = parse_cert(&certs[0]).map_err(|e| bad(format!("certificate: {e}")))?;
        if ee.public_key().raw != our_spki {
            return Err(bad("the certificate is not for our key".into()));
        }
    }
    // The end-entity certificate, then intermediates; never the root.
    certs.extend(chain);
    let mut ee_chain = vec![certs.remove(0)];
    for c in certs {
        if !is_self_issued(&c) && !ee_chain.contains(&c) {
            ee_chain.push(c);
        }
    }
    let sets: Vec<VoSet<'_>> = std::iter::once(VoSet {
        attributes_b64: &resp.attributes,
        voms_b64: resp.voms.as_deref(),
        vo,
    })
    .chain(resp.also.iter().map(|a| VoSet {
        attributes_b64: &a.attributes,
        voms_b64: a.voms.as_deref(),
        vo: &a.vo,
    }))
    .collect();
    mint_multi_vo_proxy(&ee_chain, key_pkcs8, &sets, lifetime)
}

/// Loads a user certificate (PEM: the certificate, then any intermediates)
/// and its PKCS#8 key (PEM `PRIVATE KEY`), checking they belong together.
pub fn load_user_credential(cert: &Path, key: &Path) -> Result<ProxyCredential, Error> {
    let text = std::fs::read(cert)
        .map_err(|e| Error::Usage(format!("cannot read certificate {}: {e}", cert.display())))?;
    let mut chain = ibp_auth::trust::pem_certificates(&text)
        .map_err(|e| Error::Usage(format!("bad certificate file {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Usage(format!(
            "no CERTIFICATE in {}",
            cert.display()
        )));
    }
    let ee = chain.remove(0);
    chain.retain(|c| !is_self_issued(c));
    chain.insert(0, ee);

    let key_text = std::fs::read(key)
        .map_err(|e| Error::Usage(format!("cannot read key {}: {e}", key.display())))?;
    let blocks = pem::parse_many(&key_text)
        .map_err(|e| Error::Usage(format!("bad key file {}: {e}", key.display())))?;
    let key_pkcs8 = match blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) {
        Some(b) if b.tag() == "PRIVATE KEY" => b.contents().to_vec(),
        Some(b) if b.tag() == "ENCRYPTED PRIVATE KEY" => {
            return Err(Error::Usage(format!(
                "{} is encrypted; decrypt it to a PKCS#8 file kept mode 0600 \
                 (openssl pkcs8 -in KEY -out KEY.p8)",
                key.display()
            )))
        }
        Some(b) => {
            return Err(Error::Usage(format!(
                "{} holds a {:?} key; convert it to PKCS#8 \
                 (openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8)",
                key.display(),
                b.tag()
            )))
        }
        None => return Err(Error::Usage(format!("no PRIVATE KEY in {}", key.display()))),
    };
    let signer = ibp_auth::keys::SigningKey::from_pkcs8(&key_pkcs8)
        .map_err(|e| Error::Usage(format!("{}: {e}", key.display())))?;
    let probe = b"lors key/certificate consistency check";
    let sig = signer
        .sign(probe)
        .map_err(|e| Error::Local(format!("cannot sign with {}: {e}", key.display())))?;
    let ee = parse_cert(&chain[0])
        .map_err(|e| Error::Usage(format!("bad certificate in {}: {e}", cert.display())))?;
    if !ibp_auth::keys::verify_with_spki(ee.public_key().raw, probe, &sig) {
        return Err(Error::Usage(format!(
            "the key {} does not belong to the certificate {}",
            key.display(),
            cert.display()
        )));
    }
    let now = ibp_auth::unix_now();
    let na = ee.validity().not_after.timestamp();
    if na <= now {
        return Err(Error::Usage(format!(
            "the certificate {} expired at {}",
            cert.display(),
            format_local(na)
        )));
    }
    Ok(ProxyCredential { chain, key_pkcs8 })
}

/// Gets VO attributes for the user's own certificate over mutual TLS and
/// mints a proxy below it. `ca` must have been made with `user` as its
/// credential.
pub async fn proxy_init(
    ca: &CaClient,
    user: &ProxyCredential,
    vo: &str,
    lifetime: u64,
) -> Result<NewProxy, Error> {
    proxy_init_vos(ca, user, &[vo.to_owned()], lifetime).await
}

/// [`proxy_init`] for one or more VOs: attributes for each from the CA
/// (`POST /v1/attributes`, one per VO), then one proxy carrying them all
/// (the first VO first).
pub async fn proxy_init_vos(
    ca: &CaClient,
    user: &ProxyCredential,
    vos: &[String],
    lifetime: u64,
) -> Result<NewProxy, Error> {
    check_lifetime(lifetime)?;
    check_vos(vos)?;
    let mut answers = Vec::new();
    for vo in vos {
        answers.push(ca.attributes(vo, lifetime).await?);
    }
    let sets: Vec<VoSet<'_>> = answers
        .iter()
        .zip(vos)
        .map(|(a, vo)| VoSet {
            attributes_b64: &a.attributes,
            voms_b64: a.voms.as_deref(),
            vo,
        })
        .collect();
    mint_multi_vo_proxy(&user.chain, &user.key_pkcs8, &sets, lifetime)
}

/// The VOs of one proxy: 1 to `MAX_VOS`, each named once.
pub fn check_vos(vos: &[String]) -> Result<(), Error> {
    let max = ibp_auth::attributes::MAX_VOS;
    if vos.is_empty() || vos.len() > max {
        return Err(Error::Usage(format!("1 to {max} VOs in one proxy")));
    }
    for (i, vo) in vos.iter().enumerate() {
        if vos[..i].contains(vo) {
            return Err(Error::Usage(format!("--vo {vo} is given twice")));
        }
    }
    Ok(())
}

fn local_io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Local(format!("cannot {what} {}: {e}", path.display()))
}

/// Writes the proxy credential, mode 0600, atomically: a new file next to
/// `path` (never following a symbolic link), then renamed over it.
pub fn save_proxy(path: &Path, cred: &ProxyCredential) -> Result<(), Error> {
    write_private(path, cred.to_pem().as_bytes())
}

/// Writes `bytes` to `path` readable by its owner only (created mode
/// 0600), atomically: a new file next to `path` (never following a
/// symbolic link), then renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("bad file path {}", path.display())))?
        .to_string_lossy()
        .into_owned();
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{name}.{}.{nanos:x}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
            }
            Err(e) => return Err(local_io("create", &tmp, e)),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(local_io("write", path, e));
    }
    // Make the rename durable; failure here is not worth an error.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The outcome of checking a proxy against a trust directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// No trust directory was given.
    NotChecked,
    Valid,
    Failed(String),
}

/// What a proxy file holds.
#[derive(Debug, Clone)]
pub struct ProxyInfo {
    pub path: PathBuf,
    /// Subject of the proxy (the leaf).
    pub subject: String,
    /// Subject of the user's end-entity certificate.
    pub identity: String,
    pub vo: Option<String>,
    pub vo_id: Option<String>,
    pub groups: Vec<Group>,
    /// The further VOs of a multi-VO proxy (read, not verified: the
    /// verification covers them).
    pub other_vos: Vec<String>,
    /// Earliest expiry of the chain and the attributes, Unix seconds.
    pub not_after: i64,
    pub verification: Verification,
}

impl ProxyInfo {
    /// Seconds left (0 once expired).
    pub fn time_left(&self, now: i64) -> i64 {
        (self.not_after - now).max(0)
    }

    /// Whether the proxy is usable for at least `min_secs` more seconds
    /// (and, if it was checked, verified).
    pub fn is_valid_for(&self, min_secs: u64, now: i64) -> bool {
        let left = self.time_left(now);
        left > 0 && left as u64 >= min_secs && !matches!(self.verification, Verification::Failed(_))
    }

    /// The `proxy-info --json` object.
    pub fn to_json(&self, now: i64) -> serde_json::Value {
        let groups: Vec<_> = self
            .groups
            .iter()
            .map(|g| serde_json::json!({"id": g.id, "name": g.name}))
            .collect();
        let (verified, verify_error) = match &self.verification {
            Verification::NotChecked => (serde_json::Value::Null, serde_json::Value::Null),
            Verification::Valid => (true.into(), serde_json::Value::Null),
            Verification::Failed(e) => (false.into(), e.clone().into()),
        };
        serde_json::json!({
            "path": self.path.to_string_lossy(),
            "subject": self.subject,
            "identity": self.identity,
            "vo": self.vo,
            "vo_id": self.vo_id,
            "groups": groups,
            "other_vos": self.other_vos,
            "not_after": self.not_after,
            "timeleft": self.time_left(now),
            "verified": verified,
            "verify_error": verify_error,
        })
    }

    /// The default `proxy-info` text.
    pub fn to_text(&self, now: i64) -> String {
        let or_none = |s: &Option<String>| s.clone().unwrap_or_else(|| "(none)".into());
        let groups = if self.groups.is_empty() {
            "(none)".to_owned()
        } else {
            self.groups
                .iter()
                .map(|g| format!("{} ({})", g.name, g.id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verified = match &self.verification {
            Verification::NotChecked => "not checked (no trust directory)".to_owned(),
            Verification::Valid => "yes".to_owned(),
            Verification::Failed(e) => format!("NO: {e}"),
        };
        let left = self.time_left(now);
        let left = if left == 0 {
            format!("0 (expired at {})", format_local(self.not_after))
        } else {
            format!(
                "{} (until {})",
                format_duration(left),
                format_local(self.not_after)
            )
        };
        let also = if self.other_vos.is_empty() {
            String::new()
        } else {
            format!("also vos  : {}\n", self.other_vos.join(", "))
        };
        format!(
            "subject   : {}\nidentity  : {}\nvo        : {}\nvo id     : {}\ngroups    : {}\n{also}timeleft  : {}\nverified  : {}\npath      : {}\n",
            self.subject,
            self.identity,
            or_none(&self.vo),
            or_none(&self.vo_id),
            groups,
            left,
            verified,
            self.path.display()
        )
    }
}

/// What [`Error::NoProxy`] says: the file looked for, and how to get one.
fn no_proxy_message(path: &Path) -> String {
    format!(
        "no proxy at {}: get one with `lors login` (or `lors proxy-init` with your own \
         certificate)",
        path.display()
    )
}

/// Refuses a proxy that has expired, before any request is made with it:
/// [`Error::InvalidProxy`] (exit code 1) naming the file, when it expired
/// and how to renew it. The `lors` commands and [`crate::client::Client`]
/// both check here.
pub fn refuse_expired(credential: &ProxyCredential, path: &Path, now: i64) -> Result<(), Error> {
    refuse_expired_at(proxy_not_after(credential, path)?, path, now)
}

/// When the proxy at `path` stops being valid (the earliest `not_after`
/// of its chain).
pub fn proxy_not_after(credential: &ProxyCredential, path: &Path) -> Result<i64, Error> {
    credential
        .not_after()
        .map_err(|e| Error::InvalidProxy(format!("proxy {}: {e}", path.display())))
}

/// [`refuse_expired`] for a proxy whose expiry is already known.
pub fn refuse_expired_at(not_after: i64, path: &Path, now: i64) -> Result<(), Error> {
    if not_after <= now {
        return Err(Error::InvalidProxy(format!(
            "the proxy {} expired at {}: renew it with `lors login` (or `lors proxy-init`)",
            path.display(),
            format_local(not_after)
        )));
    }
    Ok(())
}

/// [`load_proxy`], then [`refuse_expired`]: a proxy a command can use now.
pub fn load_unexpired_proxy(path: &Path) -> Result<ProxyCredential, Error> {
    let credential = load_proxy(path)?;
    refuse_expired(&credential, path, ibp_auth::unix_now())?;
    Ok(credential)
}

/// Reads the proxy credential at `path` for use: [`Error::NoProxy`] if
/// there is none; [`Error::InvalidProxy`] if it cannot be read, is not a
/// proxy file, or group or others may read it (naming the file, its mode
/// and `chmod 600`), all exit code 1.
pub fn load_proxy(path: &Path) -> Result<ProxyCredential, Error> {
    if !path.exists() {
        return Err(Error::NoProxy(path.to_path_buf()));
    }
    ProxyCredential::load(path).map_err(|e| match e {
        AuthError::Io(m) => Error::InvalidProxy(m),
        e => Error::InvalidProxy(format!("proxy {}: {e}", path.display())),
    })
}

/// Reads the proxy at `path` and, if `trust` is given, verifies it
/// (chain, proxies, VO attributes) as a service would.
pub fn inspect_proxy(
    path: &Path,
    trust: Option<&TrustStore>,
    now: i64,
) -> Result<ProxyInfo, Error> {
    // Refused like any private key when group or others may read it.
    let cred = load_proxy(path)?;
    let bad = |why: String| Error::InvalidProxy(format!("proxy {}: {why}", path.display()));
    let certs = cred
        .chain
        .iter()
        .map(|c| parse_cert(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let pci = ibp_auth::oids::oid_bytes(ibp_auth::oids::PROXY_CERT_INFO);
    let vo_oid = ibp_auth::oids::vo_attributes_oid();
    let has_ext = |c: &X509Certificate<'_>, oid: &[u8]| {
        c.extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == oid)
            .map(|e| e.value.to_vec())
    };
    let ee_index = certs
        .iter()
        .position(|c| has_ext(c, &pci).is_none())
        .ok_or_else(|| bad("no end-entity certificate below the proxies".into()))?;
    let attributes = certs[..ee_index]
        .iter()
        .find_map(|c| has_ext(c, &vo_oid))
        .map(|v| SignedAttributes::parse(&v))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    // A multi-VO proxy's further VOs: of the same certificate's sets.
    let mut other_vos = Vec::new();
    if attributes.is_some() {
        if let Some(i) = certs[..ee_index]
            .iter()
            .position(|c| has_ext(c, &vo_oid).is_some())
        {
            let sets = ibp_auth::attributes::sets_in_certificate(&cred.chain[i])
                .map_err(|e| bad(e.to_string()))?;
            for set in sets.iter().skip(1) {
                let a = SignedAttributes::parse(set).map_err(|e| bad(e.to_string()))?;
                other_vos.push(a.attributes.vo);
            }
        }
    }
    // Without our attributes, a standard VOMS AC (read, not verified).
    let voms_oid = ibp_auth::oids::oid_bytes(ibp_auth::voms::VOMS_EXTENSION);
    let voms = match &attributes {
        Some(_) => None,
        None => certs[..ee_index]
            .iter()
            .find_map(|c| has_ext(c, &voms_oid))
            .map(|v| ibp_auth::voms::read_unverified(&v, &certs[ee_index]))
            .transpose()
            .map_err(|e| bad(e.to_string()))?,
    };
    let chain_na = cred.not_after().map_err(|e| bad(e.to_string()))?;
    let not_after = attributes
        .as_ref()
        .map(|a| a.attributes.not_after)
        .or(voms.as_ref().map(|v| v.not_after))
        .map_or(chain_na, |na| chain_na.min(na));
    let verification = match trust {
        None => Verification::NotChecked,
        Some(t) => match ibp_auth::verify_chain(&cred.chain_der(), t, now) {
            Ok(_) => Verification::Valid,
            Err(e) => Verification::Failed(e.to_string()),
        },
    };
    let a = attributes.as_ref().map(|a| &a.attributes);
    let (vo, vo_id, groups) = match (a, voms) {
        (Some(a), _) => (Some(a.vo.clone()), Some(a.vo_id.clone()), a.groups.clone()),
        (None, Some(v)) => (Some(v.vo), Some(v.vo_id), v.groups),
        (None, None) => (None, None, Vec::new()),
    };
    Ok(ProxyInfo {
        path: path.to_path_buf(),
        subject: certs[0].subject().to_string(),
        identity: certs[ee_index].subject().to_string(),
        vo,
        vo_id,
        groups,
        other_vos,
        not_after,
        verification,
    })
}

/// Overwrites the proxy file with zeros and removes it. Returns whether
/// there was one. A symbolic link is removed without touching its target.
pub fn destroy_proxy(path: &Path) -> Result<bool, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(local_io("examine", path, e)),
    };
    if meta.is_file() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| local_io("open", path, e))?;
        let zeros = vec![0u8; 4096];
        let mut left = meta.len();
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])
                .map_err(|e| local_io("overwrite", path, e))?;
            left -= n as u64;
        }
        f.sync_all().map_err(|e| local_io("overwrite", path, e))?;
    } else if !meta.file_type().is_symlink() {
        return Err(Error::Local(format!(
            "{} is not a regular file; not removing it",
            path.display()
        )));
    }
    std::fs::remove_file(path).map_err(|e| local_io("remove", path, e))?;
    Ok(true)
}
