//! A proxy credential on disk: the proxy certificate, its private key and the
//! certificates it chains to, as PEM, in `$X509_USER_PROXY` or
//! `/tmp/x509up_u<uid>`, mode 0600 (the Globus/VOMS layout).

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

use crate::keys::{write_secret, SigningKey};
use crate::proxy::ProxyOptions;
use crate::trust::pem_certificates;
use crate::AuthError;

#[derive(Clone)]
pub struct ProxyCredential {
    /// Leaf (the proxy) first, then its issuers up to (not including) the root.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the proxy's private key.
    pub key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for ProxyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyCredential")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Where the proxy lives: `$X509_USER_PROXY`, else `/tmp/x509up_u<uid>`.
pub fn default_proxy_path() -> PathBuf {
    if let Some(p) = std::env::var_os("X509_USER_PROXY") {
        return PathBuf::from(p);
    }
    let uid = rustix::process::getuid().as_raw();
    PathBuf::from(format!("/tmp/x509up_u{uid}"))
}

impl ProxyCredential {
    /// Makes a proxy below an end-entity (or proxy) certificate and key.
    /// `issuer_chain` is the issuer first, then its own issuers.
    pub fn create(
        issuer_chain: &[Vec<u8>],
        issuer_key_pkcs8: &[u8],
        opts: &ProxyOptions,
    ) -> Result<ProxyCredential, AuthError> {
        ProxyCredential::create_with_extensions(issuer_chain, issuer_key_pkcs8, opts, &[])
    }

    /// [`ProxyCredential::create`] with further non-critical extensions
    /// (`crate::proxy::mint_with_extensions`).
    pub fn create_with_extensions(
        issuer_chain: &[Vec<u8>],
        issuer_key_pkcs8: &[u8],
        opts: &ProxyOptions,
        extra: &[(&[u64], &[u8])],
    ) -> Result<ProxyCredential, AuthError> {
        let issuer = issuer_chain
            .first()
            .ok_or_else(|| AuthError::malformed("certificate chain", "empty"))?;
        let key = SigningKey::from_pkcs8(issuer_key_pkcs8)?;
        let minted = crate::proxy::mint_with_extensions(issuer, &key, opts, extra)?;
        let mut chain = vec![minted.certificate];
        chain.extend(issuer_chain.iter().cloned());
        Ok(ProxyCredential {
            chain,
            key_pkcs8: minted.key_pkcs8,
        })
    }

    /// A proxy carrying the VO attributes of several VOs: `opts.attributes`
    /// the first VO's (the VO attribute extension), `more` the others' (the
    /// further-VOs extension, [`crate::attributes::encode_more`]), then the
    /// `extra` extensions (OID arcs, value), e.g. a VOMS extension holding
    /// one AC per VO. Each attribute set is verified on its own by the
    /// services (docs/identity.md, "Several VOs in one proxy").
    pub fn create_multi_vo(
        issuer_chain: &[Vec<u8>],
        issuer_key_pkcs8: &[u8],
        opts: &ProxyOptions,
        more: &[Vec<u8>],
        extra: &[(&[u64], &[u8])],
    ) -> Result<ProxyCredential, AuthError> {
        let issuer = issuer_chain
            .first()
            .ok_or_else(|| AuthError::malformed("certificate chain", "empty"))?;
        let key = SigningKey::from_pkcs8(issuer_key_pkcs8)?;
        let more_value;
        let mut raw: Vec<(Vec<u8>, &[u8])> = Vec::new();
        if !more.is_empty() {
            more_value = crate::attributes::encode_more(more)?;
            raw.push((crate::oids::more_vo_attributes_oid(), &more_value));
        }
        for (oid, v) in extra {
            raw.push((crate::oids::oid_bytes(oid), v));
        }
        let minted = crate::proxy::mint_with_raw_extensions(issuer, &key, opts, &raw)?;
        let mut chain = vec![minted.certificate];
        chain.extend(issuer_chain.iter().cloned());
        Ok(ProxyCredential {
            chain,
            key_pkcs8: minted.key_pkcs8,
        })
    }

    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        self.chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect()
    }

    /// PEM: proxy certificate, private key, then the rest of the chain.
    pub fn to_pem(&self) -> String {
        let mut blocks = Vec::new();
        if let Some(first) = self.chain.first() {
            blocks.push(pem::Pem::new("CERTIFICATE", first.clone()));
        }
        blocks.push(pem::Pem::new("PRIVATE KEY", self.key_pkcs8.clone()));
        for c in self.chain.iter().skip(1) {
            blocks.push(pem::Pem::new("CERTIFICATE", c.clone()));
        }
        pem::encode_many(&blocks)
    }

    pub fn from_pem(text: &[u8]) -> Result<ProxyCredential, AuthError> {
        let blocks = pem::parse_many(text).map_err(|e| AuthError::malformed("proxy file", e))?;
        // VOMS and Globus tools write the proxy's RSA key as PKCS#1 (`RSA
        // PRIVATE KEY`): wrapped into PKCS#8 here.
        let key_pkcs8 = blocks
            .iter()
            .find_map(|b| match b.tag() {
                "PRIVATE KEY" => Some(b.contents().to_vec()),
                "RSA PRIVATE KEY" => Some(rsa_pkcs8(b.contents())),
                _ => None,
            })
            .ok_or_else(|| AuthError::malformed("proxy file", "no PRIVATE KEY block"))?;
        let chain = pem_certificates(text)?;
        if chain.is_empty() {
            return Err(AuthError::malformed("proxy file", "no CERTIFICATE block"));
        }
        Ok(ProxyCredential { chain, key_pkcs8 })
    }

    /// Writes the credential with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        write_secret(path, self.to_pem().as_bytes())
    }

    /// Reads the proxy file, refusing one that group or others may read
    /// (it holds the proxy's private key) with an error naming the file,
    /// its mode and `chmod 600`, as for any private key.
    pub fn load(path: &Path) -> Result<ProxyCredential, AuthError> {
        let text = crate::keys::read_owner_only(path, "proxy")?;
        ProxyCredential::from_pem(&text)
    }

    /// SHA-256 of the proxy's public key (what grants and tickets bind to).
    pub fn key_hash(&self) -> Result<[u8; 32], AuthError> {
        let leaf = self
            .chain
            .first()
            .ok_or_else(|| AuthError::malformed("proxy", "empty chain"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| AuthError::malformed("proxy certificate", e))?;
        Ok(crate::key_hash(cert.public_key().raw))
    }

    /// Earliest expiry of the certificates in the chain (Unix seconds).
    pub fn not_after(&self) -> Result<i64, AuthError> {
        self.chain
            .iter()
            .map(|c| {
                x509_parser::parse_x509_certificate(c)
                    .map(|(_, c)| c.validity().not_after.timestamp())
                    .map_err(|e| AuthError::malformed("certificate", e))
            })
            .try_fold(i64::MAX, |m, t| t.map(|t| m.min(t)))
    }
}

/// PKCS#8 `PrivateKeyInfo` around a PKCS#1 `RSAPrivateKey`.
fn rsa_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        1, 2, 840, 113549, 1, 1, 1,
                    ]));
                w.next().write_null();
            });
            w.next().write_bytes(pkcs1);
        })
    })
}
