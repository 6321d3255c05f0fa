//! OIDC logins: bearer JWTs signed in the test (RS256 and ES256, with ring),
//! the issuer's JWKS served by a tiny HTTP server on loopback.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use common::*;
use ibp_auth::unix_now;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://idp.example.org/realms/grid";
const AUDIENCE: &str = "online-ca";

fn enc(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Signer {
    kid: String,
    key: Key,
}

impl Signer {
    fn rsa(kid: &str) -> Signer {
        let der = pem::parse(include_str!("data/oidc-test-rsa-key.pem"))
            .unwrap()
            .into_contents();
        Signer {
            kid: kid.into(),
            key: Key::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap()),
        }
    }

    fn ec(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pk = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        Signer {
            kid: kid.into(),
            key: Key::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pk.as_ref(),
                    &rng,
                )
                .unwrap(),
            ),
        }
    }

    fn alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        }
    }

    fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => {
                let p: ring::rsa::PublicKeyComponents<Vec<u8>> = k.public().into();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": enc(&p.n), "e": enc(&p.e)})
            }
            Key::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid,
                    "x": enc(&p[1..33]), "y": enc(&p[33..65])})
            }
        }
    }

    fn sign_with_header(&self, header: Value, claims: &Value) -> String {
        let m = format!(
            "{}.{}",
            enc(header.to_string().as_bytes()),
            enc(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.key {
            Key::Rsa(k) => {
                let mut s = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, m.as_bytes(), &mut s)
                    .unwrap();
                s
            }
            Key::Ec(k) => k.sign(&rng, m.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{m}.{}", enc(&sig))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign_with_header(
            json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

fn claims(sub: &str) -> Value {
    let now = unix_now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
}

/// Serves `jwks` at any path over plain HTTP on loopback; counts requests.
async fn jwks_server(jwks: Value) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/realms/grid/certs",
        listener.local_addr().unwrap()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body = jwks.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, hits)
}

fn oidc_body(token: &str, csr: &str) -> Value {
    json!({"method": "oidc", "user": "ignored", "token": token, "vo": "vo1", "csr": csr})
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_login_with_rs256_and_es256() {
    let rsa = Signer::rsa("rsa-1");
    let ec = Signer::ec("ec-1");
    let (url, hits) = jwks_server(json!({"keys": [rsa.jwk(), ec.jwk(),
        {"kty": "OKP", "crv": "Ed25519", "kid": "unknown-kind", "x": "AAAA"}]}))
    .await;
    let ca = CaDir::init();
    ca.configure(&format!(
        "[oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{url}\"\n\
         [rate_limit]\nmax_failures = 100\n"
    ));
    let alice = format!("oidc:{ISSUER}#alice-sub-1");
    let vo_id = ca.add_member("vo1", &alice, &[]);
    let srv = ca.serve();
    let ca_der = ca.ca_der();
    let login = |token: String| {
        let ca_der = ca_der.clone();
        let addr = srv.addr;
        async move {
            let (csr, key) = new_csr();
            let a = https(
                addr,
                &ca_der,
                None,
                "POST",
                "/v1/login",
                Some(&oidc_body(&token, &csr)),
            )
            .await;
            (a, key)
        }
    };

    for signer in [&rsa, &ec] {
        let (a, key) = login(signer.token(&claims("alice-sub-1"))).await;
        assert_eq!(
            a.status,
            200,
            "{}: {:?}\n{}",
            signer.alg(),
            a.json,
            srv.log()
        );
        assert_eq!(a.json["vo_id"], vo_id.as_str());
        let id = verify_login(&a.json, &key, &ca.trust());
        assert_eq!(id.vo_id, vo_id);
        assert!(id.subject.contains(&alice), "{}", id.subject);
    }
    // The JWKS was fetched once and cached.
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Refused tokens: 401.
    let now = unix_now();
    let mut bad = Vec::new();
    let mut c = claims("alice-sub-1");
    c["aud"] = json!("another-service");
    bad.push(("audience", ec.token(&c)));
    let mut c = claims("alice-sub-1");
    c["iss"] = json!("https://evil.example");
    bad.push(("issuer", ec.token(&c)));
    let mut c = claims("alice-sub-1");
    c["exp"] = json!(now - 3600);
    bad.push(("expired", ec.token(&c)));
    let mut c = claims("alice-sub-1");
    c["nbf"] = json!(now + 3600);
    bad.push(("not yet valid", ec.token(&c)));
    let header = json!({"alg": "none", "kid": "ec-1"});
    bad.push((
        "alg none",
        format!(
            "{}.{}.",
            enc(header.to_string().as_bytes()),
            enc(claims("alice-sub-1").to_string().as_bytes())
        ),
    ));
    // HS256 with the RSA public key as the HMAC secret (key confusion).
    let m = format!(
        "{}.{}",
        enc(json!({"alg": "HS256", "kid": "rsa-1"})
            .to_string()
            .as_bytes()),
        enc(claims("alice-sub-1").to_string().as_bytes())
    );
    let k = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        rsa.jwk()["n"].as_str().unwrap().as_bytes(),
    );
    bad.push((
        "HS256",
        format!("{m}.{}", enc(ring::hmac::sign(&k, m.as_bytes()).as_ref())),
    ));
    // Signed by a key the issuer does not publish, naming a published kid.
    let rogue = Signer::ec("ec-1");
    bad.push(("rogue key", rogue.token(&claims("alice-sub-1"))));
    // Algorithm and key type mismatch: ES256 header naming the RSA key.
    bad.push((
        "kid of another type",
        ec.sign_with_header(
            json!({"alg": "ES256", "kid": "rsa-1"}),
            &claims("alice-sub-1"),
        ),
    ));
    bad.push(("garbage", "not.a.jwt".to_string()));
    for (what, token) in bad {
        let (a, _) = login(token).await;
        assert_eq!(a.status, 401, "{what}: {:?}", a.json);
        assert!(
            a.json["error"]
                .as_str()
                .unwrap()
                .starts_with("token rejected"),
            "{what}: {:?}",
            a.json
        );
    }

    // A valid token of a non-member: 403.
    let (a, _) = login(rsa.token(&claims("bob-sub"))).await;
    assert_eq!(a.status, 403, "{:?}", a.json);
    // Tokens never reach the log.
    let token = ec.token(&claims("alice-sub-1"));
    let (a, _) = login(token.clone()).await;
    assert_eq!(a.status, 200);
    assert!(!srv.log().contains(&token[token.len() - 20..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_issuer_unreachable_is_a_gateway_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = CaDir::init();
    ca.configure(&format!(
        "[oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"http://127.0.0.1:{port}/certs\"\n"
    ));
    ca.add_member("vo1", &format!("oidc:{ISSUER}#alice"), &[]);
    let srv = ca.serve();
    let (csr, _) = new_csr();
    let token = Signer::ec("k").token(&claims("alice"));
    let a = https(
        srv.addr,
        &ca.ca_der(),
        None,
        "POST",
        "/v1/login",
        Some(&oidc_body(&token, &csr)),
    )
    .await;
    assert_eq!(a.status, 502, "{:?}", a.json);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_jwks_only_on_loopback() {
    let ca = CaDir::init();
    ca.configure(&format!(
        "[oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"http://idp.example.org/certs\"\n"
    ));
    let (ok, _, err) = run(&["serve", "--config", ca.config.to_str().unwrap()], None);
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
}
