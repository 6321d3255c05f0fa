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

/// The label the signed challenge starts with (the CA's
/// `online_ca::link::CHALLENGE_LABEL`).
const CHALLENGE_LABEL: &[u8] = b"ibp-grid link-cert v1\0";

/// The bytes the certificate's key signs: the label, the VO, the VO ID and
/// the nonce (each a 4-byte big-endian length and its bytes), SHA-256 of
/// the certificate's DER and the expiry (8 bytes big-endian).
pub fn challenge_bytes(
    vo: &str,
    vo_id: &str,
    cert_sha256: &[u8],
    nonce: &str,
    expires_at: i64,
) -> Vec<u8> {
    let mut out = CHALLENGE_LABEL.to_vec();
    for f in [vo.as_bytes(), vo_id.as_bytes(), nonce.as_bytes()] {
        out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(f);
    }
    out.extend_from_slice(cert_sha256);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector is in `online-ca/src/link.rs`: the two builders
    /// agree.
    #[test]
    fn challenge_vector() {
        let b = challenge_bytes("vo1", "id", &[7u8; 32], "n", 0x0102);
        let mut want = b"ibp-grid link-cert v1\0".to_vec();
        want.extend_from_slice(b"\0\0\0\x03vo1\0\0\0\x02id\0\0\0\x01n");
        want.extend_from_slice(&[7u8; 32]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(b, want);
    }
}
