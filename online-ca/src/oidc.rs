//! OpenID Connect: a bearer JWT (an ID or access token) verified against
//! the issuer's JWKS, with ring. Checks: the algorithm is one configured
//! (never `none` or HMAC), the key named by `kid` (or the only key of the
//! right type when the token names none), the signature, `iss`, `aud`,
//! `exp` and `nbf` (60 s of clock skew), and a non-empty `sub`. The user's
//! identity is `oidc:<iss>#<sub>`. Tokens are never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

use crate::config::OidcConfig;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const SKEW: i64 = 60;
/// Largest token accepted.
pub const MAX_TOKEN: usize = 16 * 1024;
const MAX_JWKS: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two JWKS fetches caused by an unknown `kid`.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// A JWS algorithm we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

impl Alg {
    pub fn parse(s: &str) -> anyhow::Result<Alg> {
        Ok(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            other => anyhow::bail!("unsupported JWS algorithm {other:?}"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    fn kty(self) -> &'static str {
        match self {
            Alg::ES256 | Alg::ES384 => "EC",
            _ => "RSA",
        }
    }

    /// Whether `sig` over `msg` verifies with `jwk`.
    fn verify(self, jwk: &Jwk, msg: &[u8], sig: &[u8]) -> bool {
        let rsa = |alg: &'static signature::RsaParameters| {
            let (Some(n), Some(e)) = (b64(jwk.n.as_deref()), b64(jwk.e.as_deref())) else {
                return false;
            };
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(alg, msg, sig)
                .is_ok()
        };
        let ec = |alg: &'static signature::EcdsaVerificationAlgorithm, crv: &str, len: usize| {
            if jwk.crv.as_deref() != Some(crv) {
                return false;
            }
            let (Some(x), Some(y)) = (b64(jwk.x.as_deref()), b64(jwk.y.as_deref())) else {
                return false;
            };
            if x.len() != len || y.len() != len || sig.len() != 2 * len {
                return false;
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(alg, point).verify(msg, sig).is_ok()
        };
        match self {
            Alg::RS256 => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            Alg::RS384 => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            Alg::RS512 => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            Alg::PS256 => rsa(&signature::RSA_PSS_2048_8192_SHA256),
            Alg::PS384 => rsa(&signature::RSA_PSS_2048_8192_SHA384),
            Alg::PS512 => rsa(&signature::RSA_PSS_2048_8192_SHA512),
            Alg::ES256 => ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256", 32),
            Alg::ES384 => ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384", 48),
        }
    }
}

/// One key of a JWKS (only the members we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwks {
    keys: Vec<Value>,
}

fn b64(s: Option<&str>) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s?.trim_end_matches('='))
        .ok()
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The token is bad: answered 401.
    #[error("token rejected: {0}")]
    Invalid(String),
    /// The issuer's keys could not be had: answered 502.
    #[error("cannot get the issuer's keys: {0}")]
    Unavailable(String),
}

fn invalid(s: impl Into<String>) -> OidcError {
    OidcError::Invalid(s.into())
}

enum Source {
    Url {
        uri: hyper::Uri,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
    File(PathBuf),
}

struct Cache {
    keys: Vec<Jwk>,
    fetched: Instant,
}

pub struct Oidc {
    issuer: String,
    audience: String,
    algorithms: Vec<Alg>,
    refresh: Duration,
    source: Source,
    cache: tokio::sync::Mutex<Option<Cache>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    let path = ca_file.unwrap_or(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let text = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("read JWKS CA file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in ibp_auth::trust::pem_certificates(&text)? {
        // A bundle may hold certificates webpki cannot use: skip those.
        let _ = roots.add(der.into());
    }
    if roots.is_empty() {
        anyhow::bail!("no usable CA certificate in {}", path.display());
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(ibp_auth::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Oidc {
    pub fn new(cfg: &OidcConfig) -> anyhow::Result<Oidc> {
        let algorithms = cfg
            .algorithms
            .iter()
            .map(|a| Alg::parse(a))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let source = match (&cfg.jwks_url, &cfg.jwks_file) {
            (Some(url), None) => {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|e| anyhow::anyhow!("oidc.jwks_url {url:?}: {e}"))?;
                let host = uri
                    .host()
                    .ok_or_else(|| anyhow::anyhow!("oidc.jwks_url {url:?}: no host"))?;
                let tls = match uri.scheme_str() {
                    Some("https") => Some(Arc::new(tls_config(cfg.jwks_ca_file.as_deref())?)),
                    Some("http") if is_loopback(host) => None,
                    Some("http") => anyhow::bail!(
                        "oidc.jwks_url {url:?}: plain http is allowed on loopback only"
                    ),
                    _ => anyhow::bail!("oidc.jwks_url {url:?}: not an http(s) URL"),
                };
                Source::Url { uri, tls }
            }
            (None, Some(f)) => Source::File(f.clone()),
            _ => anyhow::bail!("oidc needs exactly one of jwks_url and jwks_file"),
        };
        Ok(Oidc {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            algorithms,
            refresh: cfg.jwks_refresh.as_duration(),
            source,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// Verifies `token`; returns the identity `oidc:<iss>#<sub>`.
    pub async fn verify(&self, token: &str) -> Result<String, OidcError> {
        self.verify_at(token, ibp_auth::unix_now()).await
    }

    async fn verify_at(&self, token: &str, now: i64) -> Result<String, OidcError> {
        if token.len() > MAX_TOKEN {
            return Err(invalid("token too long"));
        }
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a signed JWT (three dot-separated parts)"));
        };
        let header: Value = b64(Some(h))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed JWT header"))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("JWT header without alg"))?;
        let alg = Alg::parse(alg_name)
            .ok()
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| invalid(format!("algorithm {alg_name:?} not accepted")))?;
        if header.get("crit").is_some() {
            return Err(invalid("JWT header has critical extensions"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(invalid("kid is not a string")),
        };
        let sig = b64(Some(s)).ok_or_else(|| invalid("malformed JWT signature"))?;
        let msg = &token.trim().as_bytes()[..h.len() + 1 + p.len()];

        let key = match self.find_key(alg, kid.as_deref(), false).await? {
            Some(k) => Some(k),
            None => self.find_key(alg, kid.as_deref(), true).await?,
        }
        .ok_or_else(|| {
            invalid(format!(
                "no key of the issuer matches kid {kid:?} and {alg_name}"
            ))
        })?;
        if !alg.verify(&key, msg, &sig) {
            return Err(invalid("signature does not verify"));
        }

        let claims: Value = b64(Some(p))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed JWT claims"))?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.issuer {
            return Err(invalid(format!("issuer {iss:?} is not the configured one")));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(invalid("audience does not match"));
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or_else(|| invalid("no exp claim"))? as i64;
        if now > exp + SKEW {
            return Err(invalid(format!("token expired at {exp} (now {now})")));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().ok_or_else(|| invalid("nbf is not a number"))? as i64;
            if now + SKEW < nbf {
                return Err(invalid(format!(
                    "token not valid before {nbf} (now {now}); check the clocks"
                )));
            }
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_f64().ok_or_else(|| invalid("iat is not a number"))? as i64;
            if now + SKEW < iat {
                return Err(invalid(format!(
                    "token issued in the future ({iat}, now {now}); check the clocks"
                )));
            }
        }
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        if sub.is_empty() || sub.len() > 255 || sub.chars().any(char::is_control) {
            return Err(invalid("missing or malformed sub claim"));
        }
        Ok(format!("oidc:{iss}#{sub}"))
    }

    /// The key for `alg`/`kid` from the cached JWKS (fetched when missing
    /// or stale; with `refetch`, fetched again unless fetched very recently).
    async fn find_key(
        &self,
        alg: Alg,
        kid: Option<&str>,
        refetch: bool,
    ) -> Result<Option<Jwk>, OidcError> {
        let mut cache = self.cache.lock().await;
        let stale = match &*cache {
            None => true,
            Some(c) if refetch => c.fetched.elapsed() >= REFETCH_AFTER,
            Some(c) => c.fetched.elapsed() >= self.refresh,
        };
        if stale {
            match self.fetch().await {
                Ok(keys) => {
                    *cache = Some(Cache {
                        keys,
                        fetched: Instant::now(),
                    })
                }
                // Keep using the keys we have if a refresh fails.
                Err(e) if cache.is_some() => {
                    tracing::warn!(error = %e, "JWKS refresh failed; using the cached keys")
                }
                Err(e) => return Err(e),
            }
        } else if refetch {
            return Ok(None);
        }
        let Some(c) = &*cache else {
            return Ok(None);
        };
        let usable = |k: &&Jwk| {
            k.kty == alg.kty()
                && k.alg.as_deref().is_none_or(|a| a == alg.name())
                && k.use_.as_deref().is_none_or(|u| u == "sig")
        };
        Ok(match kid {
            Some(kid) => c
                .keys
                .iter()
                .filter(usable)
                .find(|k| k.kid.as_deref() == Some(kid))
                .cloned(),
            None => {
                let mut it = c.keys.iter().filter(usable);
                match (it.next(), it.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        })
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, OidcError> {
        let bytes = match &self.source {
            Source::File(p) => tokio::fs::read(p)
                .await
                .map_err(|e| OidcError::Unavailable(format!("read {}: {e}", p.display())))?,
            Source::Url { uri, tls } => {
                tokio::time::timeout(FETCH_TIMEOUT, http_get(uri, tls.clone()))
                    .await
                    .map_err(|_| OidcError::Unavailable(format!("{uri}: timed out")))?
                    .map_err(|e| OidcError::Unavailable(format!("{uri}: {e}")))?
            }
        };
        let jwks: Jwks = serde_json::from_slice(&bytes)
            .map_err(|e| OidcError::Unavailable(format!("malformed JWKS: {e}")))?;
        // Keys of kinds we do not know are skipped, not fatal.
        let keys: Vec<Jwk> = jwks
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value(k).ok())
            .collect();
        tracing::info!(keys = keys.len(), "fetched the OIDC issuer's JWKS");
        Ok(keys)
    }
}

/// GET over HTTP/1.1 (TLS when `tls` is given); the body of a 200 answer.
async fn http_get(
    uri: &hyper::Uri,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Vec<u8>, String> {
    let host = uri.host().ok_or("no host")?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "online-ca")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    match tls {
        None => send(hyper_util::rt::TokioIo::new(tcp), req).await,
        Some(cfg) => {
            let name = rustls_pki_types::ServerName::try_from(bare)
                .map_err(|e| format!("server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(hyper_util::rt::TokioIo::new(stream), req).await
        }
    }
}

async fn send<IO>(io: IO, req: hyper::Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if resp.status() != hyper::StatusCode::OK {
        driver.abort();
        return Err(format!("HTTP status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secs;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair};

    fn enc(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    struct Signer {
        key: EcdsaKeyPair,
    }

    impl Signer {
        fn new() -> Signer {
            let rng = SystemRandom::new();
            let pk =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .unwrap();
            Signer {
                key: EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pk.as_ref(),
                    &rng,
                )
                .unwrap(),
            }
        }

        fn jwk(&self, kid: &str) -> Value {
            let p = self.key.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": enc(&p[1..33]), "y": enc(&p[33..65])})
        }

        fn token(&self, header: Value, claims: Value) -> String {
            let m = format!(
                "{}.{}",
                enc(header.to_string().as_bytes()),
                enc(claims.to_string().as_bytes())
            );
            let sig = self.key.sign(&SystemRandom::new(), m.as_bytes()).unwrap();
            format!("{m}.{}", enc(sig.as_ref()))
        }
    }

    fn oidc(jwks: Value) -> (tempfile::TempDir, Oidc) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("jwks.json");
        std::fs::write(&f, jwks.to_string()).unwrap();
        let o = Oidc::new(&OidcConfig {
            issuer: "https://idp.test".into(),
            audience: "online-ca".into(),
            jwks_url: None,
            jwks_file: Some(f),
            jwks_ca_file: None,
            jwks_refresh: Secs(300),
            algorithms: vec!["RS256".into(), "ES256".into()],
        })
        .unwrap();
        (d, o)
    }

    #[tokio::test]
    async fn es256_claims_and_attacks() {
        let s = Signer::new();
        let other = Signer::new();
        let (_d, o) = oidc(serde_json::json!({"keys": [s.jwk("k1"), other.jwk("k2")]}));
        let now = ibp_auth::unix_now();
        let h = serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let good = serde_json::json!({"iss": "https://idp.test", "aud": ["x", "online-ca"],
            "sub": "u1", "exp": now + 300, "iat": now});
        assert_eq!(
            o.verify(&s.token(h.clone(), good.clone())).await.unwrap(),
            "oidc:https://idp.test#u1"
        );
        let bad = |claims: Value| s.token(h.clone(), claims);
        let mut c = good.clone();
        c["iss"] = "https://evil".into();
        assert!(o.verify(&bad(c)).await.is_err());
        let mut c = good.clone();
        c["aud"] = "other".into();
        assert!(o.verify(&bad(c)).await.is_err());
        let mut c = good.clone();
        c["exp"] = (now - 120).into();
        assert!(o.verify(&bad(c)).await.is_err());
        let mut c = good.clone();
        c["exp"] = (now - 30).into(); // within the skew
        assert!(o.verify(&bad(c)).await.is_ok());
        let mut c = good.clone();
        c["nbf"] = (now + 300).into();
        assert!(o.verify(&bad(c)).await.is_err());
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("exp");
        assert!(o.verify(&bad(c)).await.is_err());
        let mut c = good.clone();
        c["sub"] = "".into();
        assert!(o.verify(&bad(c)).await.is_err());
        // Signed by the other key but naming k1.
        assert!(o
            .verify(&other.token(h.clone(), good.clone()))
            .await
            .is_err());
        // Unknown kid.
        let h2 = serde_json::json!({"alg": "ES256", "kid": "k9"});
        assert!(o.verify(&s.token(h2, good.clone())).await.is_err());
        // No kid with two EC keys: ambiguous.
        let h3 = serde_json::json!({"alg": "ES256"});
        assert!(o.verify(&s.token(h3, good.clone())).await.is_err());
        // alg none and HS256 refused.
        for alg in ["none", "HS256", "ES384"] {
            let t = format!(
                "{}.{}.",
                enc(serde_json::json!({"alg": alg, "kid": "k1"})
                    .to_string()
                    .as_bytes()),
                enc(good.to_string().as_bytes())
            );
            let e = o.verify(&t).await.unwrap_err().to_string();
            assert!(e.contains("not accepted") || e.contains("signature"), "{e}");
        }
        // Tampered claims.
        let t = s.token(h.clone(), good.clone());
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut c = good.clone();
        c["sub"] = "admin".into();
        let forged = enc(c.to_string().as_bytes());
        parts[1] = &forged;
        assert!(o.verify(&parts.join(".")).await.is_err());
        assert!(o.verify("a.b").await.is_err());
    }
}
