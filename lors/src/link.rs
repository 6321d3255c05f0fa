//! `lors link-cert`: link another certificate of yours (an IGTF grid
//! certificate, a university's) to your VO ID at the online CA, proving
//! possession of both: the current proxy authenticates you (mutual TLS),
//! and the certificate's key signs the CA's challenge
//! (docs/identity.md, "Linking a certificate yourself").
//!
//! - `POST /v1/link/challenge` `{vo, chain}` → `{nonce, challenge,
//!   expires_at, vo, vo_id, identity}`;
//! - `POST /v1/link` `{vo, chain, nonce, signature}` → 200 `{status:
//!   "linked", vo, vo_id, identity}` or 202 `{status: "pending", ...,
//!   request}` (the VO wants a VO admin's approval).
//!
//! The challenge is rebuilt here from its parts and must equal the CA's
//! bytes: the certificate's key signs nothing but a link statement.

use base64::Engine;
use ibp_auth::ProxyCredential;
use serde::{Deserialize, Serialize};

use crate::credentials::{check_status, parse_json, CaClient, Error};

pub use ibp_auth::link::challenge_bytes;

#[derive(Serialize)]
struct ChallengeBody<'a> {
    vo: &'a str,
    chain: &'a str,
}

#[derive(Deserialize)]
struct ChallengeAnswer {
    nonce: String,
    challenge: String,
    expires_at: i64,
    vo: String,
    vo_id: String,
}

#[derive(Serialize)]
struct LinkBody<'a> {
    vo: &'a str,
    chain: &'a str,
    nonce: &'a str,
    signature: String,
}

/// What the CA did.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Linked {
    /// `linked`, or `pending` (waits for a VO admin).
    pub status: String,
    pub vo: String,
    pub vo_id: String,
    /// The certificate's identity at the CA (`cert:<issuer>|<subject>`).
    pub identity: String,
    /// The request ID, when pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Links the certificate of `extra` (its chain and key, as
/// `credentials::load_user_credential` reads them) to the VO ID of the
/// credential `ca` was made with, in `vo`.
pub async fn link_cert(ca: &CaClient, extra: &ProxyCredential, vo: &str) -> Result<Linked, Error> {
    let ee = extra
        .chain
        .first()
        .ok_or_else(|| Error::Local("empty certificate chain".into()))?;
    let chain: String = extra
        .chain
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone())))
        .collect();
    let resp = ca
        .http()
        .post_json("/v1/link/challenge", &ChallengeBody { vo, chain: &chain })
        .await?;
    let ch: ChallengeAnswer = parse_json(&check_status(resp)?, "link challenge")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, ee);
    let mine = challenge_bytes(vo, &ch.vo_id, digest.as_ref(), &ch.nonce, ch.expires_at);
    let theirs = base64::engine::general_purpose::STANDARD
        .decode(ch.challenge.trim())
        .map_err(|e| Error::Unavailable(format!("invalid link challenge from the CA: {e}")))?;
    if ch.vo != vo || theirs != mine {
        return Err(Error::Unavailable(
            "the CA's link challenge is not for this VO and certificate: nothing signed".into(),
        ));
    }
    let signer = ibp_auth::keys::SigningKey::from_pkcs8(&extra.key_pkcs8)
        .map_err(|e| Error::Usage(format!("the certificate's key: {e}")))?;
    let signature = signer
        .sign(&mine)
        .map_err(|e| Error::Local(format!("cannot sign the challenge: {e}")))?;
    let resp = ca
        .http()
        .post_json(
            "/v1/link",
            &LinkBody {
                vo,
                chain: &chain,
                nonce: &ch.nonce,
                signature: base64::engine::general_purpose::STANDARD.encode(signature),
            },
        )
        .await?;
    let body = if resp.status == 202 {
        resp.body
    } else {
        check_status(resp)?
    };
    parse_json(&body, "link")
}
