//! Test-only helpers: a small grid (CA, AA, user), a proxy-certificate
//! builder with knobs for every way a proxy can be malformed, and an
//! in-memory TLS handshake.
//!
//! The builder mirrors `ibp_auth::proxy::mint` (DER by hand with yasna) but
//! lets a test choose the subject, issuer name, validity, signing key,
//! ProxyCertInfo (critical or not, present or not, policy, path length) and
//! extra extensions (SAN, basicConstraints CA, unknown critical ones).

#![allow(dead_code)] // not every test binary uses every helper

use std::sync::Arc;

use ibp_auth::keys::{generate_ecdsa_p256, p256_spki, SigningKey};
use ibp_auth::pki::{Authority, Issued};
use ibp_auth::{oids, unix_now, TrustStore, VoAttributes};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls_pki_types::{CertificateDer, ServerName};
use yasna::models::ObjectIdentifier as Oid;
use yasna::Tag;

pub const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
pub const ORGANIZATION: &[u64] = &[2, 5, 4, 10];
pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
pub const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

/// The contents of a DER SEQUENCE (header stripped).
pub fn sequence_contents(der: &[u8]) -> &[u8] {
    assert_eq!(der[0], 0x30, "not a SEQUENCE");
    let first = der[1];
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, 2 + n)
    };
    assert_eq!(der.len(), start + len, "trailing bytes after SEQUENCE");
    &der[start..]
}

/// DER of a Name made of single-attribute RDNs (UTF8String values).
pub fn name_der(rdns: &[(&[u64], &str)]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for (oid, value) in rdns {
                w.next().write_set(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&Oid::from_slice(oid));
                        w.next().write_utf8_string(value);
                    })
                });
            }
        })
    })
}

/// `issuer`'s subject (DER Name) with one single-CN RDN per entry of `cns` appended.
pub fn subject_plus_cns(issuer_subject_der: &[u8], cns: &[&str]) -> Vec<u8> {
    let rdns = sequence_contents(issuer_subject_der);
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if !rdns.is_empty() {
                w.next().write_der(rdns);
            }
            for cn in cns {
                w.next().write_set(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&Oid::from_slice(COMMON_NAME));
                        w.next().write_utf8_string(cn);
                    })
                });
            }
        })
    })
}

/// How the ProxyCertInfo extension appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pci {
    Critical,
    NonCritical,
    Omit,
}

/// What the proxy's subject is.
#[derive(Debug, Clone)]
pub enum Subject {
    /// The issuer's subject plus `CN=<serial>` (a correct proxy).
    Proxy,
    /// The issuer's subject plus these CNs.
    IssuerPlusCns(Vec<String>),
    /// Exactly this DER Name.
    Raw(Vec<u8>),
}

/// Knobs of a test proxy. `ProxySpec::new()` describes a correct one.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub pci: Pci,
    pub policy: Vec<u64>,
    pub path_len: Option<u32>,
    pub subject: Subject,
    /// Issuer name to write (default: the issuer's subject).
    pub issuer_name: Option<Vec<u8>>,
    pub not_before: i64,
    pub not_after: i64,
    /// Sign with this PKCS#8 key instead of the issuer's.
    pub signing_key: Option<Vec<u8>>,
    /// The VO attribute extension value.
    pub attributes: Option<Vec<u8>>,
    /// Add a subjectAltName (dNSName).
    pub san: bool,
    /// Add basicConstraints cA=TRUE (critical).
    pub ca: bool,
    /// Further extensions: (OID, critical, value).
    pub extra_extensions: Vec<(Vec<u64>, bool, Vec<u8>)>,
}

impl ProxySpec {
    pub fn new() -> ProxySpec {
        let now = unix_now();
        ProxySpec {
            pci: Pci::Critical,
            policy: oids::PPL_INHERIT_ALL.to_vec(),
            path_len: None,
            subject: Subject::Proxy,
            issuer_name: None,
            not_before: now - 60,
            not_after: now + 3600,
            signing_key: None,
            attributes: None,
            san: false,
            ca: false,
            extra_extensions: Vec::new(),
        }
    }

    pub fn with_attributes(ext: Vec<u8>) -> ProxySpec {
        ProxySpec {
            attributes: Some(ext),
            ..ProxySpec::new()
        }
    }
}

fn utc(t: i64) -> yasna::models::UTCTime {
    yasna::models::UTCTime::from_datetime(time::OffsetDateTime::from_unix_timestamp(t).unwrap())
}

/// A fresh P-256 key: `(pkcs8, spki_der)`.
pub fn new_p256() -> (Vec<u8>, Vec<u8>) {
    let pkcs8 = generate_ecdsa_p256().unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let spki = p256_spki(kp.public_key().as_ref());
    (pkcs8, spki)
}

/// A proxy certificate below `issuer_der` (whose key is `issuer_key`),
/// built as `spec` says: `(certificate, key_pkcs8)`.
pub fn build_proxy(issuer_der: &[u8], issuer_key: &[u8], spec: &ProxySpec) -> (Vec<u8>, Vec<u8>) {
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer_der).unwrap();
    let issuer_subject = issuer.subject().as_raw().to_vec();
    let serial: u64 = {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
        u64::from_be_bytes(b) >> 1
    };
    let subject = match &spec.subject {
        Subject::Proxy => subject_plus_cns(&issuer_subject, &[&serial.to_string()]),
        Subject::IssuerPlusCns(cns) => {
            let cns: Vec<&str> = cns.iter().map(String::as_str).collect();
            subject_plus_cns(&issuer_subject, &cns)
        }
        Subject::Raw(der) => der.clone(),
    };
    let issuer_name = spec.issuer_name.clone().unwrap_or(issuer_subject);
    let signer = SigningKey::from_pkcs8(spec.signing_key.as_deref().unwrap_or(issuer_key)).unwrap();
    let (key_pkcs8, spki) = new_p256();

    let pci = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if let Some(n) = spec.path_len {
                w.next().write_u32(n);
            }
            w.next().write_sequence(|w| {
                w.next().write_oid(&Oid::from_slice(&spec.policy));
            });
        })
    });
    let key_usage = yasna::construct_der(|w| w.write_bitvec_bytes(&[0x80], 1));
    let mut exts: Vec<(Vec<u8>, bool, Vec<u8>)> = Vec::new();
    let oid_der = |arcs: &[u64]| yasna::construct_der(|w| w.write_oid(&Oid::from_slice(arcs)));
    match spec.pci {
        Pci::Critical => exts.push((oid_der(oids::PROXY_CERT_INFO), true, pci)),
        Pci::NonCritical => exts.push((oid_der(oids::PROXY_CERT_INFO), false, pci)),
        Pci::Omit => {}
    }
    exts.push((oid_der(oids::KEY_USAGE), true, key_usage));
    if spec.ca {
        let bc = yasna::construct_der(|w| w.write_sequence(|w| w.next().write_bool(true)));
        exts.push((oid_der(BASIC_CONSTRAINTS), true, bc));
    }
    if spec.san {
        let san = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged_implicit(Tag::context(2), |w| {
                    w.write_ia5_string("proxy.example.org")
                })
            })
        });
        exts.push((oid_der(SUBJECT_ALT_NAME), false, san));
    }
    for (oid, critical, value) in &spec.extra_extensions {
        exts.push((oid_der(oid), *critical, value.clone()));
    }
    if let Some(attrs) = &spec.attributes {
        let vo = oids::vo_attributes_oid();
        let mut vo_der = vec![0x06, vo.len() as u8];
        vo_der.extend_from_slice(&vo);
        exts.push((vo_der, false, attrs.clone()));
    }

    let alg = signer.algorithm_identifier();
    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
            w.next().write_u64(serial);
            w.next().write_der(&alg);
            w.next().write_der(&issuer_name);
            w.next().write_sequence(|w| {
                w.next().write_utctime(&utc(spec.not_before));
                w.next().write_utctime(&utc(spec.not_after));
            });
            w.next().write_der(&subject);
            w.next().write_der(&spki);
            w.next().write_tagged(Tag::context(3), |w| {
                w.write_sequence(|w| {
                    for (oid, critical, value) in &exts {
                        w.next().write_sequence(|w| {
                            w.next().write_der(oid);
                            if *critical {
                                w.next().write_bool(true);
                            }
                            w.next().write_bytes(value);
                        });
                    }
                })
            });
        })
    });
    let sig = signer.sign(&tbs).unwrap();
    let cert = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&tbs);
            w.next().write_der(&alg);
            w.next().write_bitvec_bytes(&sig, sig.len() * 8);
        })
    });
    (cert, key_pkcs8)
}

pub fn ders(chain: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect()
}

/// A CA, an AA pinned for `vo1`, a user (`O=Test Grid, CN=Alice`, 12 h) and
/// a trust store holding the CA and the AA.
pub struct Grid {
    pub ca: Authority,
    pub aa: Authority,
    pub user: Issued,
    pub trust: TrustStore,
    pub now: i64,
}

impl Grid {
    pub fn new() -> Grid {
        let ca = Authority::new_ca("Test Grid", "Test CA", 30).unwrap();
        let aa = ca.new_aa("Test Grid", "vo1", 30).unwrap();
        let user = ca.issue_user("Test Grid", "Alice", 12 * 3600).unwrap();
        let mut trust = TrustStore::new();
        trust.add_ca(ca.cert_der.clone()).unwrap();
        trust.pin_aa("vo1", aa.cert_der.clone());
        Grid {
            ca,
            aa,
            user,
            trust,
            now: unix_now(),
        }
    }

    /// Correct vo1 attributes for `holder_cert`, valid now-60 .. now+3600.
    pub fn attrs_for(&self, holder_cert: &[u8]) -> VoAttributes {
        let (_, ee) = x509_parser::parse_x509_certificate(holder_cert).unwrap();
        VoAttributes {
            vo: "vo1".into(),
            vo_id: "vo1:0001".into(),
            groups: vec![ibp_auth::Group {
                id: "g1".into(),
                name: "admins".into(),
            }],
            holder_issuer: ee.issuer().as_raw().to_vec(),
            holder_serial: ee.raw_serial().to_vec(),
            not_before: self.now - 60,
            not_after: self.now + 3600,
        }
    }

    pub fn attrs(&self) -> VoAttributes {
        self.attrs_for(&self.user.cert_der)
    }

    /// The user's attributes signed by the vo1 AA.
    pub fn ext(&self) -> Vec<u8> {
        self.aa.sign_attributes(&self.attrs()).unwrap()
    }

    /// `[proxy, user]` with the proxy built below the user as `spec` says.
    pub fn chain(&self, spec: &ProxySpec) -> Vec<CertificateDer<'static>> {
        self.chain_with_key(spec).0
    }

    pub fn chain_with_key(&self, spec: &ProxySpec) -> (Vec<CertificateDer<'static>>, Vec<u8>) {
        let (proxy, key) = build_proxy(&self.user.cert_der, &self.user.key_pkcs8, spec);
        (ders(&[proxy, self.user.cert_der.clone()]), key)
    }
}

/// Which side of a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    Client(rustls::Error),
    Server(rustls::Error),
    Stalled,
}

/// Runs a TLS handshake in memory; returns the server connection (for
/// `peer_certificates`) and how the handshake ended.
pub fn handshake(
    scfg: rustls::ServerConfig,
    ccfg: rustls::ClientConfig,
) -> (rustls::ServerConnection, Result<(), HandshakeError>) {
    let mut sconn = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
    let mut cconn =
        rustls::ClientConnection::new(Arc::new(ccfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut buf = Vec::new();
    for _ in 0..10 {
        buf.clear();
        while cconn.wants_write() {
            cconn.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            sconn.read_tls(&mut rd).unwrap();
        }
        if let Err(e) = sconn.process_new_packets() {
            return (sconn, Err(HandshakeError::Server(e)));
        }
        buf.clear();
        while sconn.wants_write() {
            sconn.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            cconn.read_tls(&mut rd).unwrap();
        }
        if let Err(e) = cconn.process_new_packets() {
            return (sconn, Err(HandshakeError::Client(e)));
        }
        if !sconn.is_handshaking() && !cconn.is_handshaking() {
            return (sconn, Ok(()));
        }
    }
    (sconn, Err(HandshakeError::Stalled))
}
