//! The trust directory: CA certificates, AA certificates pinned per VO, and
//! the token-signing public keys of the L-Bone and the metadata manager.
//!
//! ```text
//! trust/
//!   ca/*.pem               CA certificates (a file may hold several)
//!   ca/*.crl               revocation lists of those CAs (PEM `X509 CRL`)
//!   vomsdir/<vo>/*.pem     AA certificates trusted for VO <vo> (like VOMS's vomsdir)
//!   lbone/*.pub            L-Bone grant-signing keys (`ed25519 <base64>`)
//!   metadata/*.pub         metadata-manager ticket-signing keys
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor};

use crate::AuthError;

/// Default clock-skew allowance, in seconds, for every validity check.
pub const DEFAULT_MAX_SKEW: i64 = 120;

/// Who signs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSigner {
    LBone,
    MetadataManager,
}

#[derive(Debug, Clone)]
pub struct TrustStore {
    ca_certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    vo_aas: HashMap<String, Vec<Vec<u8>>>,
    lbone_keys: Vec<[u8; 32]>,
    metadata_keys: Vec<[u8; 32]>,
    /// The VOMS servers trusted per VO (a service's `vomsdir`); none: VOMS
    /// attribute certificates are refused.
    vomsdir: Option<Arc<crate::voms::VomsDir>>,
    /// Revocation lists of the trusted CAs (`ca/*.crl`), as DER for
    /// rustls and parsed for webpki.
    crl_ders: Vec<CertificateRevocationListDer<'static>>,
    crls: Vec<Arc<webpki::CertRevocationList<'static>>>,
    /// Seconds of clock difference tolerated between machines.
    pub max_skew: i64,
}

impl Default for TrustStore {
    fn default() -> TrustStore {
        TrustStore {
            ca_certs: Vec::new(),
            anchors: Vec::new(),
            vo_aas: HashMap::new(),
            lbone_keys: Vec::new(),
            metadata_keys: Vec::new(),
            vomsdir: None,
            crl_ders: Vec::new(),
            crls: Vec::new(),
            max_skew: DEFAULT_MAX_SKEW,
        }
    }
}

/// The file name a signing key published by the online CA gets in a
/// trust directory's `lbone/` or `metadata/`: `ca-<16 hex of SHA-256 of
/// its text>.pub`, so that a key fetched twice is one file.
pub fn published_key_file_name(key: &str) -> String {
    let h = ring::digest::digest(&ring::digest::SHA256, key.trim().as_bytes());
    let hex: String = h.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("ca-{hex}.pub")
}

/// The signing-key files in `dir` (a trust directory's `lbone/` or
/// `metadata/`) that were fetched from the online CA (named as
/// [`published_key_file_name`] names them) but whose key the CA no longer
/// publishes (`published`): a retired or compromised key must stop being
/// trusted at the next fetch. Keys placed by hand (other names) are never
/// listed.
pub fn unpublished_key_files(dir: &Path, published: &[String]) -> Vec<std::path::PathBuf> {
    let keep: std::collections::HashSet<String> = published
        .iter()
        .map(|k| published_key_file_name(k))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let fetched = name.len() == "ca-".len() + 16 + ".pub".len()
                && name.starts_with("ca-")
                && name.ends_with(".pub")
                && name[3..19].bytes().all(|b| b.is_ascii_hexdigit());
            (fetched && !keep.contains(&name)).then(|| e.path())
        })
        .collect();
    out.sort();
    out
}

/// Every certificate in a PEM text.
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, AuthError> {
    pem_blocks(text, "CERTIFICATE")
}

/// The contents of the PEM blocks tagged `tag` in `text`.
pub fn pem_blocks(text: &[u8], tag: &str) -> Result<Vec<Vec<u8>>, AuthError> {
    let blocks = pem::parse_many(text).map_err(|e| AuthError::malformed("PEM", e))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == tag)
        .map(|b| b.into_contents())
        .collect())
}

/// The file in a trust directory's `ca/` that holds the revocation list
/// fetched from the online CA.
pub const PUBLISHED_CRL_FILE: &str = "ca.crl";

/// Checks a revocation list the online CA published (PEM `X509 CRL`)
/// before it is written to a trust directory: one list, issued by and
/// signed with the key of the CA certificate `ca_der`. Returns its DER.
pub fn check_published_crl(pem_text: &str, ca_der: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = pem_blocks(pem_text.as_bytes(), "X509 CRL").map_err(|e| e.to_string())?;
    let [der] = blocks.as_slice() else {
        return Err(format!(
            "expected one X509 CRL block, found {}",
            blocks.len()
        ));
    };
    let (_, crl) =
        x509_parser::parse_x509_crl(der).map_err(|e| format!("not a revocation list: {e}"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| format!("the CA certificate does not parse: {e}"))?;
    if crl.issuer().as_raw() != ca.subject().as_raw() {
        return Err(format!(
            "issued by {}, not by the CA {}",
            crl.issuer(),
            ca.subject()
        ));
    }
    crl.verify_signature(ca.public_key())
        .map_err(|e| format!("its signature does not verify with the CA's key: {e}"))?;
    webpki::OwnedCertRevocationList::from_der(der)
        .map_err(|e| format!("not a usable revocation list: {e:?}"))?;
    Ok(der.clone())
}

fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError::Io(format!("read {}: {e}", path.display())))
}

fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<std::path::PathBuf>, AuthError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuthError::Io(format!("list {}: {e}", dir.display()))),
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    Ok(out)
}

impl TrustStore {
    pub fn new() -> TrustStore {
        TrustStore::default()
    }

    /// Loads a trust directory (see the module docs). Missing parts are empty.
    pub fn load(dir: &Path) -> Result<TrustStore, AuthError> {
        let mut t = TrustStore::new();
        for f in files_with_ext(&dir.join("ca"), "pem")? {
            for der in pem_certificates(&read(&f)?)? {
                t.add_ca(der)?;
            }
        }
        for f in files_with_ext(&dir.join("ca"), "crl")? {
            for der in pem_blocks(&read(&f)?, "X509 CRL")? {
                t.add_crl(der).map_err(|e| {
                    AuthError::malformed("revocation list", format!("{}: {e}", f.display()))
                })?;
            }
        }
        let vomsdir = dir.join("vomsdir");
        if let Ok(entries) = std::fs::read_dir(&vomsdir) {
            for e in entries.flatten() {
                // Only VO directories count (a stray README or .gitkeep
                // must not make the whole trust directory unloadable).
                if !e.path().is_dir() {
                    continue;
                }
                let Some(vo) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                for f in files_with_ext(&e.path(), "pem")? {
                    for der in pem_certificates(&read(&f)?)? {
                        t.pin_aa(&vo, der);
                    }
                }
            }
        }
        for f in files_with_ext(&dir.join("lbone"), "pub")? {
            let text = String::from_utf8_lossy(&read(&f)?).into_owned();
            t.add_token_key(TokenSigner::LBone, crate::keys::parse_public_key(&text)?);
        }
        for f in files_with_ext(&dir.join("metadata"), "pub")? {
            let text = String::from_utf8_lossy(&read(&f)?).into_owned();
            t.add_token_key(
                TokenSigner::MetadataManager,
                crate::keys::parse_public_key(&text)?,
            );
        }
        Ok(t)
    }

    /// Trusts a CA certificate (DER).
    pub fn add_ca(&mut self, der: Vec<u8>) -> Result<(), AuthError> {
        let cert = CertificateDer::from(der);
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| AuthError::malformed("CA certificate", format!("{e:?}")))?
            .to_owned();
        self.anchors.push(anchor);
        self.ca_certs.push(cert);
        Ok(())
    }

    /// Adds a revocation list (DER) of a trusted CA: certificates it lists
    /// are refused by [`crate::verify`] and by the TLS configurations of
    /// [`crate::tls`]. Its signature is checked against the issuing CA
    /// when a certificate of that CA is verified (a list that does not
    /// verify fails those verifications: it is never silently ignored).
    pub fn add_crl(&mut self, der: Vec<u8>) -> Result<(), String> {
        let parsed = webpki::OwnedCertRevocationList::from_der(&der)
            .map_err(|e| format!("not a certificate revocation list: {e:?}"))?;
        self.crl_ders.push(CertificateRevocationListDer::from(der));
        self.crls.push(Arc::new(parsed.into()));
        Ok(())
    }

    /// The revocation lists, as DER (for rustls verifiers).
    pub fn crl_ders(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crl_ders
    }

    /// The revocation lists, parsed (for webpki).
    pub fn crls(&self) -> Vec<&webpki::CertRevocationList<'static>> {
        self.crls.iter().map(|c| c.as_ref()).collect()
    }

    /// Trusts `der` as an attribute authority for `vo` only.
    pub fn pin_aa(&mut self, vo: &str, der: Vec<u8>) {
        self.vo_aas.entry(vo.to_owned()).or_default().push(der);
    }

    /// Accepts VOMS attribute certificates from the servers `dir` lists
    /// (docs/identity.md, "VOMS credentials").
    pub fn set_vomsdir(&mut self, dir: crate::voms::VomsDir) {
        self.vomsdir = Some(Arc::new(dir));
    }

    pub fn vomsdir(&self) -> Option<&crate::voms::VomsDir> {
        self.vomsdir.as_deref()
    }

    pub fn add_token_key(&mut self, signer: TokenSigner, key: [u8; 32]) {
        match signer {
            TokenSigner::LBone => self.lbone_keys.push(key),
            TokenSigner::MetadataManager => self.metadata_keys.push(key),
        }
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }

    pub fn is_pinned_aa(&self, vo: &str, der: &[u8]) -> bool {
        self.vo_aas
            .get(vo)
            .is_some_and(|aas| aas.iter().any(|a| a.as_slice() == der))
    }

    pub fn token_keys(&self, signer: TokenSigner) -> &[[u8; 32]] {
        match signer {
            TokenSigner::LBone => &self.lbone_keys,
            TokenSigner::MetadataManager => &self.metadata_keys,
        }
    }
}
