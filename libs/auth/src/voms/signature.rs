//! X.509 signatures checked by the algorithm they name (proxies and VOMS
//! ACs), not by the key type alone.
//!
//! Accepted: RSA PKCS#1 v1.5 with SHA-256/384/512, and with SHA-1 (what
//! `voms-proxy-fake` and the VOMS C++ server still sign ACs and proxies
//! with); ECDSA P-256/P-384 with SHA-256/384; Ed25519. The key's type (and
//! curve) must fit the algorithm.

use ring::signature::{self, VerificationAlgorithm};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Whether `sig` over `msg` verifies under the key of `spki_der` with the
/// signature algorithm `alg` (dotted OID).
pub fn verify(spki_der: &[u8], alg: &str, msg: &[u8], sig: &[u8]) -> bool {
    let Ok((rest, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    if !rest.is_empty() {
        return false;
    }
    let key_alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let ring_alg: &dyn VerificationAlgorithm = match (key_alg.as_str(), curve.as_deref(), alg) {
        ("1.2.840.113549.1.1.1", _, "1.2.840.113549.1.1.5") => {
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        ("1.2.840.113549.1.1.1", _, "1.2.840.113549.1.1.11") => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        ("1.2.840.113549.1.1.1", _, "1.2.840.113549.1.1.12") => {
            &signature::RSA_PKCS1_2048_8192_SHA384
        }
        ("1.2.840.113549.1.1.1", _, "1.2.840.113549.1.1.13") => {
            &signature::RSA_PKCS1_2048_8192_SHA512
        }
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7"), "1.2.840.10045.4.3.2") => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7"), "1.2.840.10045.4.3.3") => {
            &signature::ECDSA_P256_SHA384_ASN1
        }
        ("1.2.840.10045.2.1", Some("1.3.132.0.34"), "1.2.840.10045.4.3.2") => {
            &signature::ECDSA_P384_SHA256_ASN1
        }
        ("1.2.840.10045.2.1", Some("1.3.132.0.34"), "1.2.840.10045.4.3.3") => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        ("1.3.101.112", _, "1.3.101.112") => &signature::ED25519,
        _ => return false,
    };
    signature::UnparsedPublicKey::new(ring_alg, spki.subject_public_key.data.as_ref())
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_must_fit_the_key() {
        let (_, pkcs8) = crate::pki::new_csr("k").unwrap();
        let key = crate::keys::SigningKey::from_pkcs8(&pkcs8).unwrap();
        let kp = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let spki = kp.public_key_der();
        let sig = key.sign(b"msg").unwrap();
        assert!(verify(&spki, "1.2.840.10045.4.3.2", b"msg", &sig));
        assert!(!verify(&spki, "1.2.840.10045.4.3.2", b"other", &sig));
        // ECDSA with SHA-1 (ring has none), RSA algorithms on an EC key.
        assert!(!verify(&spki, "1.2.840.10045.4.1", b"msg", &sig));
        assert!(!verify(&spki, "1.2.840.113549.1.1.11", b"msg", &sig));
        assert!(!verify(&spki, "1.2.840.113549.1.1.5", b"msg", &sig));
    }
}
