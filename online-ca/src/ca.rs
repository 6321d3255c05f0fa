//! The CA directory: the CA and per-VO attribute-authority keys and
//! certificates, and issuing user certificates from CSRs and VO attributes.
//!
//! ```text
//! DIR/
//!   ca.pem  ca.key                 the CA (keys PKCS#8 PEM, mode 0600)
//!   aa/<vo>.pem  aa/<vo>.key       the attribute authority of each VO
//!   server.pem  server.key         the HTTPS server certificate
//!   trust/ca/ca.pem                trust directory for other services
//!   trust/vomsdir/<vo>/aa.pem
//!   users                          local users file (argon2id hashes)
//!   ca.db                          SQLite database
//!   config.toml                    sample configuration
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ibp_auth::pki::Authority;
use ibp_auth::{Group, VoAttributes};
use x509_parser::prelude::FromDer;

/// Largest CSR accepted (PEM text).
pub const MAX_CSR: usize = 16 * 1024;

pub fn read_pem_cert(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ibp_auth::trust::pem_certificates(&text)?
        .into_iter()
        .next()
        .with_context(|| format!("{}: no CERTIFICATE", path.display()))
}

fn pem_lf(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub fn cert_pem(der: &[u8]) -> String {
    pem_lf("CERTIFICATE", der)
}

pub fn key_pem(der: &[u8]) -> String {
    pem_lf("PRIVATE KEY", der)
}

/// Whether `vo` can name a VO (a directory and file name).
pub fn valid_vo_name(vo: &str) -> bool {
    !vo.is_empty()
        && vo.len() <= 64
        && !vo.starts_with('.')
        && vo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A CSR that parsed and whose self-signature verified.
pub struct CheckedCsr {
    pub der: Vec<u8>,
}

/// Why a CSR was refused (answered 400).
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("malformed CSR: {0}")]
    Malformed(String),
    #[error("CSR signature does not verify")]
    BadSignature,
    /// A key the grid cannot use (proxies are signed with it, and
    /// `ibp-auth` verifies only these).
    #[error(
        "CSR key not accepted: {0}; use an ECDSA P-256, Ed25519 or RSA (2048 to 8192 bits) key"
    )]
    UnsupportedKey(String),
}

/// Refuses keys other than ECDSA P-256, Ed25519 and RSA of 2048 to 8192
/// bits, saying which key it got (ring would only say that the signature
/// does not verify).
fn check_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    use x509_parser::public_key::PublicKey;
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok(()),
                Some("1.3.132.0.34") => Err(CsrError::UnsupportedKey("an ECDSA P-384 key".into())),
                Some("1.3.132.0.35") => Err(CsrError::UnsupportedKey("an ECDSA P-521 key".into())),
                Some(c) => Err(CsrError::UnsupportedKey(format!(
                    "an ECDSA key on curve {c}"
                ))),
                None => Err(CsrError::Malformed(
                    "an ECDSA key without a named curve".into(),
                )),
            }
        }
        "1.3.101.112" => Ok(()),
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let bits = rsa.key_size();
                if (2048..=8192).contains(&bits) {
                    Ok(())
                } else {
                    Err(CsrError::UnsupportedKey(format!(
                        "an RSA key of {bits} bits"
                    )))
                }
            }
            _ => Err(CsrError::Malformed("unreadable RSA public key".into())),
        },
        "1.3.101.113" => Err(CsrError::UnsupportedKey("an Ed448 key".into())),
        "1.2.840.10040.4.1" => Err(CsrError::UnsupportedKey("a DSA key".into())),
        other => Err(CsrError::UnsupportedKey(format!(
            "a key of algorithm {other}"
        ))),
    }
}

/// Parses a PEM CSR and checks it is signed by the key it carries.
pub fn check_csr(pem_text: &str) -> Result<CheckedCsr, CsrError> {
    if pem_text.len() > MAX_CSR {
        return Err(CsrError::Malformed("too long".into()));
    }
    let block = pem::parse(pem_text.trim())
        .map_err(|e| CsrError::Malformed(format!("not a PEM CERTIFICATE REQUEST ({e})")))?;
    if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::Malformed(format!(
            "PEM block {:?}, expected CERTIFICATE REQUEST",
            block.tag()
        )));
    }
    let der = block.into_contents();
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed("trailing bytes".into()));
    }
    check_key(&csr.certification_request_info.subject_pki)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(CheckedCsr { der })
}

/// A subject alternative name of a host certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum San {
    Dns(String),
    Ip(std::net::IpAddr),
}

impl std::fmt::Display for San {
    /// `dns:<name>` or `ip:<address>`, as the allow-list stores them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(d) => write!(f, "dns:{d}"),
            San::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

impl San {
    /// Parses `dns:<name>` or `ip:<address>`.
    pub fn parse(s: &str) -> Option<San> {
        if let Some(d) = s.strip_prefix("dns:") {
            return valid_dns_name(d).then(|| San::Dns(d.to_owned()));
        }
        s.strip_prefix("ip:")
            .and_then(|ip| ip.parse().ok())
            .map(San::Ip)
    }
}

/// Whether `name` is a host name a certificate may carry: lower-case
/// letters, digits and hyphens in dot-separated labels of 1 to 63 bytes,
/// 253 bytes at most, no wildcard, not an IP address.
pub fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The subject alternative names a CSR asks for (its extension request);
/// none when it asks for none. Only DNS names and IP addresses are
/// accepted.
pub fn csr_sans(csr: &CheckedCsr) -> Result<Vec<San>, CsrError> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr.der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    let Some(exts) = req.requested_extensions() else {
        return Ok(out);
    };
    for e in exts {
        let ParsedExtension::SubjectAlternativeName(san) = e else {
            continue;
        };
        for g in &san.general_names {
            let s = match g {
                GeneralName::DNSName(d) => {
                    let d = d.to_ascii_lowercase();
                    if !valid_dns_name(&d) {
                        return Err(CsrError::Malformed(format!(
                            "DNS name {d:?} is not a host name"
                        )));
                    }
                    San::Dns(d)
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => San::Ip(std::net::IpAddr::from(
                        <[u8; 4]>::try_from(*b)
                            .map_err(|_| CsrError::Malformed("IP address".into()))?,
                    )),
                    16 => San::Ip(std::net::IpAddr::from(
                        <[u8; 16]>::try_from(*b)
                            .map_err(|_| CsrError::Malformed("IP address".into()))?,
                    )),
                    _ => return Err(CsrError::Malformed("an IP address of odd length".into())),
                },
                other => {
                    return Err(CsrError::Malformed(format!(
                        "subject alternative name {other:?}: only DNS names and IP addresses"
                    )))
                }
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// A certificate the CA issued.
pub struct IssuedCert {
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// Serial, hex.
    pub serial_hex: String,
    pub subject: String,
    /// Holder fields for VO attributes: issuer Name DER, raw serial.
    pub issuer_raw: Vec<u8>,
    pub serial_raw: Vec<u8>,
    /// `cert:<issuer DN>|<subject DN>`.
    pub identity: String,
}

/// The certificate identity string used in the membership database.
pub fn cert_identity(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    format!("cert:{}|{}", cert.issuer(), cert.subject())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Aa {
    authority: Authority,
    pem: String,
}

/// The loaded CA directory.
pub struct Ca {
    dir: PathBuf,
    org: String,
    ca: Authority,
    ca_pem: String,
    ca_not_after: i64,
    ca_subject_raw: Vec<u8>,
    aas: BTreeMap<String, Aa>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("vos", &self.aas.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `ca.pem`/`ca.key` and every `aa/<vo>.pem`/`.key`.
    pub fn load(dir: &Path, org: &str) -> anyhow::Result<Ca> {
        let ca_der = read_pem_cert(&dir.join("ca.pem"))?;
        let ca_key = ibp_auth::keys::read_private_key(&dir.join("ca.key"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| anyhow::anyhow!("parse ca.pem: {e}"))?;
        let ca_not_after = parsed.validity().not_after.timestamp();
        let ca_subject_raw = parsed.subject().as_raw().to_vec();
        let mut aas = BTreeMap::new();
        let aa_dir = dir.join("aa");
        let entries =
            std::fs::read_dir(&aa_dir).with_context(|| format!("list {}", aa_dir.display()))?;
        for e in entries {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "pem") {
                continue;
            }
            let Some(vo) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if !valid_vo_name(&vo) {
                tracing::warn!(file = %path.display(), "ignored: not a valid VO name");
                continue;
            }
            let der = read_pem_cert(&path)?;
            let key = ibp_auth::keys::read_private_key(&path.with_extension("key"))?;
            aas.insert(
                vo,
                Aa {
                    pem: cert_pem(&der),
                    authority: Authority {
                        cert_der: der,
                        key_pkcs8: key,
                    },
                },
            );
        }
        if aas.is_empty() {
            bail!("no VO attribute authority in {}", aa_dir.display());
        }
        Ok(Ca {
            dir: dir.to_path_buf(),
            org: org.to_string(),
            ca_pem: cert_pem(&ca_der),
            ca: Authority {
                cert_der: ca_der,
                key_pkcs8: ca_key,
            },
            ca_not_after,
            ca_subject_raw,
            aas,
        })
    }

    /// A revocation list signed by the CA, listing `revoked` (serial
    /// bytes, revocation time), from `this_update` (also its CRL number)
    /// to `next_update`.
    pub fn revocation_list(
        &self,
        revoked: &[(Vec<u8>, i64)],
        this_update: i64,
        next_update: i64,
    ) -> anyhow::Result<Vec<u8>> {
        Ok(self.ca.revocation_list(
            revoked,
            this_update,
            next_update,
            u64::try_from(this_update).unwrap_or(0),
        )?)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The DER of the CA's subject name (the issuer of what it issues).
    pub fn subject_raw(&self) -> &[u8] {
        &self.ca_subject_raw
    }

    pub fn has_vo(&self, vo: &str) -> bool {
        self.aas.contains_key(vo)
    }

    pub fn vos(&self) -> impl Iterator<Item = &str> {
        self.aas.keys().map(String::as_str)
    }

    pub fn aa_pems(&self) -> BTreeMap<String, String> {
        self.aas
            .iter()
            .map(|(vo, aa)| (vo.clone(), aa.pem.clone()))
            .collect()
    }

    /// Issues a certificate `O=<org>, CN=<cn>` for the CSR's key, valid
    /// `lifetime` seconds from now (never beyond the CA's own expiry).
    pub fn issue(&self, csr: &CheckedCsr, cn: &str, lifetime: i64) -> anyhow::Result<IssuedCert> {
        let now = ibp_auth::unix_now();
        let lifetime = lifetime.min(self.ca_not_after - now - 60);
        if lifetime <= 0 {
            bail!("the CA certificate has expired");
        }
        let der = self.ca.issue_from_csr(&csr.der, &self.org, cn, lifetime)?;
        let (_, c) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("parse issued certificate: {e}"))?;
        Ok(IssuedCert {
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            serial_hex: hex(c.raw_serial()),
            subject: c.subject().to_string(),
            issuer_raw: c.issuer().as_raw().to_vec(),
            serial_raw: c.raw_serial().to_vec(),
            identity: cert_identity(&c),
            der: der.clone(),
        })
    }

    /// Issues a host certificate `O=<org>, CN=<name>` for the CSR's key
    /// with subject alternative names `sans`, serverAuth and clientAuth,
    /// valid `lifetime` seconds from now (never beyond the CA's expiry).
    pub fn issue_host(
        &self,
        csr: &CheckedCsr,
        name: &str,
        sans: &[San],
        lifetime: i64,
    ) -> anyhow::Result<IssuedCert> {
        use rcgen::{
            CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
            KeyUsagePurpose, SanType, SerialNumber,
        };
        let now = ibp_auth::unix_now();
        let lifetime = lifetime.min(self.ca_not_after - now - 60);
        if lifetime <= 0 {
            bail!("the CA certificate has expired");
        }
        let mut req = CertificateSigningRequestParams::from_der(&csr.der.clone().into())
            .map_err(|e| anyhow::anyhow!("certificate request: {e}"))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, self.org.as_str());
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s {
                San::Dns(d) => rcgen::Ia5String::try_from(d.clone()).map(SanType::DnsName),
                San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        // Servers (every role) and clients: a depot is the client of a
        // secure COPY, the L-Bone's poller a client of depots, and every
        // host renews over mutual TLS with its certificate.
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(now - 300)?;
        p.not_after = time::OffsetDateTime::from_unix_timestamp(now + lifetime)?;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| anyhow::anyhow!("no randomness for a serial"))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        req.params = p;
        let key = rcgen::KeyPair::try_from(self.ca.key_pkcs8.as_slice())
            .map_err(|e| anyhow::anyhow!("ca.key: {e}"))?;
        let issuer = CertificateParams::from_ca_cert_der(&self.ca.cert_der.clone().into())?
            .self_signed(&key)?;
        let der = req.signed_by(&issuer, &key)?.der().to_vec();
        let (_, c) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("parse issued certificate: {e}"))?;
        Ok(IssuedCert {
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            serial_hex: hex(c.raw_serial()),
            subject: c.subject().to_string(),
            issuer_raw: c.issuer().as_raw().to_vec(),
            serial_raw: c.raw_serial().to_vec(),
            identity: cert_identity(&c),
            der: der.clone(),
        })
    }

    /// Signs VO attributes for the holder certificate with the VO's AA.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_attributes(
        &self,
        vo: &str,
        vo_id: &str,
        groups: &[crate::store::GroupRow],
        holder_issuer: &[u8],
        holder_serial: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> anyhow::Result<Vec<u8>> {
        self.sign_attributes_scoped(
            vo,
            vo_id,
            groups,
            holder_issuer,
            holder_serial,
            not_before,
            not_after,
            ibp_auth::Scope::Full,
        )
    }

    /// [`Ca::sign_attributes`] narrowed to `scope` (version 2 attributes
    /// for a maintenance credential).
    #[allow(clippy::too_many_arguments)]
    pub fn sign_attributes_scoped(
        &self,
        vo: &str,
        vo_id: &str,
        groups: &[crate::store::GroupRow],
        holder_issuer: &[u8],
        holder_serial: &[u8],
        not_before: i64,
        not_after: i64,
        scope: ibp_auth::Scope,
    ) -> anyhow::Result<Vec<u8>> {
        let aa = self
            .aas
            .get(vo)
            .with_context(|| format!("no attribute authority for VO {vo}"))?;
        let attrs = VoAttributes {
            vo: vo.to_string(),
            vo_id: vo_id.to_string(),
            groups: groups
                .iter()
                .map(|g| Group {
                    id: g.id.clone(),
                    name: g.name.clone(),
                })
                .collect(),
            holder_issuer: holder_issuer.to_vec(),
            holder_serial: holder_serial.to_vec(),
            not_before,
            not_after,
        };
        Ok(aa.authority.sign_attributes_scoped(&attrs, scope)?)
    }

    /// A standard VOMS AC extension for the same holder and groups, signed
    /// by the VO's AA, its policy authority `<vo>://<uri>`.
    #[allow(clippy::too_many_arguments)]
    pub fn voms_ac(
        &self,
        uri: &str,
        vo: &str,
        groups: &[crate::store::GroupRow],
        holder_issuer: &[u8],
        holder_serial: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> anyhow::Result<Vec<u8>> {
        let aa = self
            .aas
            .get(vo)
            .with_context(|| format!("no attribute authority for VO {vo}"))?;
        let (host, port) = uri.rsplit_once(':').context("voms_uri is not host:port")?;
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let fqans = ibp_auth::voms::issue::fqans_for(vo, &names);
        let serial = rand::random::<[u8; 8]>();
        let key = ibp_auth::keys::SigningKey::from_pkcs8(&aa.authority.key_pkcs8)?;
        Ok(ibp_auth::voms::issue::voms_extension(
            &ibp_auth::voms::issue::AcRequest {
                holder_issuer,
                holder_serial,
                signer_cert: &aa.authority.cert_der,
                intermediates: &[],
                vo,
                host,
                port: port.parse().context("voms_uri port")?,
                fqans: &fqans,
                serial: &serial,
                not_before,
                not_after,
            },
            &key,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_checks() {
        let (der, _) = ibp_auth::pki::new_csr("x").unwrap();
        let pem_text = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
        assert!(check_csr(&pem_text).is_ok());
        // Flip a bit of the signature.
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 5] ^= 1;
        let pem_bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bad));
        assert!(matches!(check_csr(&pem_bad), Err(CsrError::BadSignature)));
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for (file, refused) in [
            ("csr-rsa1024.pem", Some("an RSA key of 1024 bits")),
            ("csr-p384.pem", Some("an ECDSA P-384 key")),
            ("csr-rsa2048.pem", None),
        ] {
            let text = std::fs::read_to_string(data.join(file)).unwrap();
            match (check_csr(&text), refused) {
                (Err(CsrError::UnsupportedKey(k)), Some(want)) => assert_eq!(k, want, "{file}"),
                (Ok(_), None) => {}
                (r, _) => panic!("{file}: {:?}", r.err()),
            }
        }
        let pem_cert = pem::encode(&pem::Pem::new("CERTIFICATE", der));
        assert!(matches!(check_csr(&pem_cert), Err(CsrError::Malformed(_))));
        assert!(check_csr("garbage").is_err());
    }

    #[test]
    fn vo_names() {
        assert!(valid_vo_name("vo1"));
        assert!(valid_vo_name("atlas.example-org_1"));
        assert!(!valid_vo_name(""));
        assert!(!valid_vo_name(".."));
        assert!(!valid_vo_name("a/b"));
        assert!(!valid_vo_name("a b"));
    }
}
