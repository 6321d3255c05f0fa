//! The DER of a VOMS extension: RFC 5755 attribute certificates (ACs) as
//! VOMS writes them (OGF GFD.182). Parsing only, no trust decisions.
//!
//! ```text
//! extension 1.3.6.1.4.1.8005.100.100.5 ::= SEQUENCE OF SEQUENCE OF AttributeCertificate
//! AttributeCertificate ::= SEQUENCE {
//!     acinfo               AttributeCertificateInfo,   -- the signed bytes
//!     signatureAlgorithm   AlgorithmIdentifier,
//!     signatureValue       BIT STRING }
//! AttributeCertificateInfo ::= SEQUENCE {
//!     version      INTEGER (1),                        -- v2
//!     holder       SEQUENCE { baseCertificateID [0] IMPLICIT SEQUENCE {
//!                      issuer GeneralNames (one directoryName),
//!                      serial INTEGER } },
//!     issuer       [0] IMPLICIT SEQUENCE { GeneralNames (one directoryName) },
//!     signature    AlgorithmIdentifier,                -- = signatureAlgorithm
//!     serialNumber INTEGER,
//!     validity     SEQUENCE { notBefore GeneralizedTime, notAfter GeneralizedTime },
//!     attributes   SEQUENCE OF Attribute,              -- FQANs: 1.3.6.1.4.1.8005.100.100.4
//!     extensions   SEQUENCE OF Extension }             -- certs: 1.3.6.1.4.1.8005.100.100.10,
//!                                                      -- SEQUENCE { SEQUENCE OF Certificate }
//! FQAN attribute value ::= SEQUENCE {                  -- IetfAttrSyntax
//!     policyAuthority [0] IMPLICIT GeneralNames,       -- one URI "<vo>://<host>:<port>"
//!     values          SEQUENCE OF OCTET STRING }       -- "/vo/group/Role=r/Capability=c"
//! ```
//!
//! The parser is strict DER (yasna) and bounded: the extension's size, the
//! number of ACs, attributes, FQANs, extensions and certificates, and the
//! length of every string are checked; anything the format above does not
//! allow (a holder by name or digest, an issuer by base certificate, an
//! issuerUniqueID, a second FQAN attribute, a critical extension not known
//! here, the `targets` extension) is refused.

use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, ASN1ErrorKind, Tag};

use crate::AuthError;

/// Largest VOMS extension value accepted.
pub const MAX_EXTENSION: usize = 64 * 1024;
/// Most ACs in one extension.
pub const MAX_ACS: usize = 8;
/// Most FQANs in one AC.
pub const MAX_FQANS: usize = 64;
/// Most attributes, and most extensions, of one AC.
const MAX_ITEMS: usize = 16;
/// Most certificates in the AC's `certs` extension.
pub const MAX_CERTS: usize = 5;
/// Longest FQAN or policy-authority URI, in bytes.
pub const MAX_TEXT: usize = 255;

/// The VOMS OIDs (the AC extension in a proxy, the FQAN attribute, the
/// AC extension carrying the VOMS server's certificates).
pub const VOMS_EXTENSION: &[u64] = &[1, 3, 6, 1, 4, 1, 8005, 100, 100, 5];
pub const FQAN_ATTRIBUTE: &[u64] = &[1, 3, 6, 1, 4, 1, 8005, 100, 100, 4];
pub const CERTS_EXTENSION: &[u64] = &[1, 3, 6, 1, 4, 1, 8005, 100, 100, 10];
/// VOMS generic attributes (`-ga`): read by nothing here, allowed.
const TAGS_EXTENSION: &[u64] = &[1, 3, 6, 1, 4, 1, 8005, 100, 100, 11];
const NO_REV_AVAIL: &[u64] = &[2, 5, 29, 56];
const AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
/// AC targeting (RFC 5755 4.3.2): refused, this code does not match targets.
const TARGETS: &[u64] = &[2, 5, 29, 55];

/// One parsed, not yet verified, attribute certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeCertificate {
    /// DER of `acinfo`: what the signature covers.
    pub tbs: Vec<u8>,
    /// The signature algorithm's OID, dotted.
    pub signature_algorithm: String,
    pub signature: Vec<u8>,
    /// DER Name of the holder's certificate issuer.
    pub holder_issuer: Vec<u8>,
    /// Content bytes of the holder certificate's serial number.
    pub holder_serial: Vec<u8>,
    /// DER Name of the AC's issuer (the VOMS server).
    pub issuer: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// The policy authority: `<vo>://<host>:<port>`.
    pub policy_authority: String,
    pub fqans: Vec<String>,
    /// DER certificates of the `certs` extension (the VOMS server's first).
    pub certs: Vec<Vec<u8>>,
}

fn invalid() -> ASN1Error {
    ASN1Error::new(ASN1ErrorKind::Invalid)
}

fn is_oid(oid: &ObjectIdentifier, arcs: &[u64]) -> bool {
    oid.components().as_slice() == arcs
}

/// The ACs of a VOMS extension value, in order (VOMS puts the AC of the
/// first VO asked for first).
pub fn parse_extension(value: &[u8]) -> Result<Vec<AttributeCertificate>, AuthError> {
    if value.len() > MAX_EXTENSION {
        return Err(AuthError::malformed(
            "VOMS extension",
            format!("larger than {MAX_EXTENSION} bytes"),
        ));
    }
    let mut raw = Vec::new();
    yasna::parse_der(value, |r| {
        r.read_sequence_of(|r| {
            r.read_sequence_of(|r| {
                if raw.len() >= MAX_ACS {
                    return Err(invalid());
                }
                raw.push(r.read_der()?);
                Ok(())
            })
        })
    })
    .map_err(|e| AuthError::malformed("VOMS extension", format!("{e} (at most {MAX_ACS} ACs)")))?;
    if raw.is_empty() {
        return Err(AuthError::malformed(
            "VOMS extension",
            "no attribute certificate",
        ));
    }
    raw.iter().map(|der| parse_ac(der)).collect()
}

/// One `AttributeCertificate` (DER).
pub fn parse_ac(der: &[u8]) -> Result<AttributeCertificate, AuthError> {
    let bad = |e: ASN1Error| AuthError::malformed("VOMS attribute certificate", e);
    let (tbs, outer_alg, signature) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_der()?;
            let alg = r.next().read_der()?;
            let (sig, bits) = r.next().read_bitvec_bytes()?;
            if bits % 8 != 0 {
                return Err(invalid());
            }
            Ok((tbs, alg, sig))
        })
    })
    .map_err(bad)?;
    let mut why = None;
    let mut info = yasna::parse_der(&tbs, |r| read_info(r, &mut why)).map_err(|e| match why {
        Some(why) => AuthError::malformed("VOMS attribute certificate", why),
        None => bad(e),
    })?;
    if info.alg_der != outer_alg {
        return Err(AuthError::malformed(
            "VOMS attribute certificate",
            "the signed and the outer signature algorithms differ",
        ));
    }
    info.ac.signature_algorithm = algorithm_oid(&outer_alg).map_err(bad)?;
    info.ac.tbs = tbs;
    info.ac.signature = signature;
    Ok(info.ac)
}

/// The OID of an AlgorithmIdentifier (parameters: absent or NULL).
fn algorithm_oid(der: &[u8]) -> Result<String, ASN1Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let oid = r.next().read_oid()?;
            r.read_optional(|r| r.read_null())?;
            Ok(oid.to_string())
        })
    })
}

struct Info {
    ac: AttributeCertificate,
    alg_der: Vec<u8>,
}

/// `GeneralNames` holding exactly one `directoryName`: its Name's DER.
fn read_one_directory_name(r: yasna::BERReader<'_, '_>) -> Result<Vec<u8>, ASN1Error> {
    r.read_sequence(|r| r.next().read_tagged(Tag::context(4), |r| r.read_der()))
}

/// `why`: the reason of a refusal the DER alone does not say.
fn read_info(
    r: yasna::BERReader<'_, '_>,
    why: &mut Option<&'static str>,
) -> Result<Info, ASN1Error> {
    r.read_sequence(|r| {
        if r.next().read_u8()? != 1 {
            *why = Some("not a version 2 attribute certificate");
            return Err(invalid());
        }
        let (holder_issuer, holder_serial) = r.next().read_sequence(|r| {
            r.next().read_tagged_implicit(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    let issuer = read_one_directory_name(r.next())?;
                    let serial = integer_content(&r.next().read_der()?)?;
                    Ok((issuer, serial))
                })
            })
        })?;
        let issuer = r.next().read_tagged_implicit(Tag::context(0), |r| {
            r.read_sequence(|r| read_one_directory_name(r.next()))
        })?;
        let alg_der = r.next().read_der()?;
        let _serial = integer_content(&r.next().read_der()?)?;
        let (not_before, not_after) = r.next().read_sequence(|r| {
            let nb = r.next().read_generalized_time()?;
            let na = r.next().read_generalized_time()?;
            Ok((
                nb.datetime().unix_timestamp(),
                na.datetime().unix_timestamp(),
            ))
        })?;
        let mut fqan: Option<(String, Vec<String>)> = None;
        let mut n = 0;
        r.next().read_sequence_of(|r| {
            n += 1;
            if n > MAX_ITEMS {
                return Err(invalid());
            }
            r.read_sequence(|r| {
                let oid = r.next().read_oid()?;
                if !is_oid(&oid, FQAN_ATTRIBUTE) {
                    // Attributes carry no criticality: unknown ones are
                    // skipped (RFC 5755 section 4.4), bounded by MAX_ITEMS.
                    r.next().read_der()?;
                    return Ok(());
                }
                if fqan.is_some() {
                    *why = Some("two FQAN attributes");
                    return Err(invalid());
                }
                let mut values = Vec::new();
                r.next().read_set_of(|r| {
                    if !values.is_empty() {
                        return Err(invalid());
                    }
                    values.push(read_ietf_attr(r)?);
                    Ok(())
                })?;
                fqan = values.pop();
                Ok(())
            })
        })?;
        let Some((policy_authority, fqans)) = fqan else {
            *why = Some("no FQAN attribute");
            return Err(invalid());
        };
        if r.read_optional(|r| r.read_bitvec_bytes())?.is_some() {
            // issuerUniqueID: VOMS never writes it.
            *why = Some("an issuerUniqueID");
            return Err(invalid());
        }
        let mut certs = None;
        let mut n = 0;
        r.next().read_sequence_of(|r| {
            n += 1;
            if n > MAX_ITEMS {
                return Err(invalid());
            }
            r.read_sequence(|r| {
                let oid = r.next().read_oid()?;
                let critical = r.read_optional(|r| r.read_bool())?;
                if critical == Some(false) {
                    // DER omits a DEFAULT value.
                    return Err(invalid());
                }
                let value = r.next().read_bytes()?;
                if is_oid(&oid, CERTS_EXTENSION) {
                    if certs.is_some() {
                        return Err(invalid());
                    }
                    certs = Some(read_certs(&value)?);
                } else if is_oid(&oid, TARGETS) {
                    *why = Some("AC targeting (the targets extension) is not supported");
                    return Err(invalid());
                } else if critical == Some(true)
                    && ![NO_REV_AVAIL, AUTHORITY_KEY_ID, TAGS_EXTENSION]
                        .iter()
                        .any(|k| is_oid(&oid, k))
                {
                    *why = Some("an unknown critical extension");
                    return Err(invalid());
                }
                Ok(())
            })
        })?;
        let Some(certs) = certs else {
            *why = Some("no certs extension (the VOMS server's certificate)");
            return Err(invalid());
        };
        Ok(Info {
            ac: AttributeCertificate {
                tbs: Vec::new(),
                signature_algorithm: String::new(),
                signature: Vec::new(),
                holder_issuer,
                holder_serial,
                issuer,
                not_before,
                not_after,
                policy_authority,
                fqans,
                certs,
            },
            alg_der,
        })
    })
}

/// `IetfAttrSyntax` with its policy authority (one URI) and OCTET STRING
/// values.
fn read_ietf_attr(r: yasna::BERReader<'_, '_>) -> Result<(String, Vec<String>), ASN1Error> {
    r.read_sequence(|r| {
        let authority = r.next().read_tagged_implicit(Tag::context(0), |r| {
            r.read_sequence(|r| {
                // uniformResourceIdentifier [6] IMPLICIT IA5String
                r.next()
                    .read_tagged_implicit(Tag::context(6), |r| r.read_bytes())
            })
        })?;
        let mut values = Vec::new();
        r.next().read_sequence_of(|r| {
            if values.len() >= MAX_FQANS {
                return Err(invalid());
            }
            values.push(text(r.read_bytes()?)?);
            Ok(())
        })?;
        Ok((text(authority)?, values))
    })
}

/// Printable ASCII of at most [`MAX_TEXT`] bytes.
fn text(bytes: Vec<u8>) -> Result<String, ASN1Error> {
    if bytes.is_empty() || bytes.len() > MAX_TEXT || !bytes.iter().all(|b| (0x21..0x7f).contains(b))
    {
        return Err(invalid());
    }
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// The `certs` extension: SEQUENCE { SEQUENCE OF Certificate } (VOMS's
/// `AC_CERTS`), the VOMS server's certificate first.
fn read_certs(value: &[u8]) -> Result<Vec<Vec<u8>>, ASN1Error> {
    let mut certs = Vec::new();
    yasna::parse_der(value, |r| {
        r.read_sequence(|r| {
            r.next().read_sequence_of(|r| {
                if certs.len() >= MAX_CERTS {
                    return Err(invalid());
                }
                certs.push(r.read_der()?);
                Ok(())
            })
        })
    })?;
    if certs.is_empty() {
        return Err(invalid());
    }
    Ok(certs)
}

/// The content bytes of a DER INTEGER (as x509-parser's `raw_serial`).
fn integer_content(der: &[u8]) -> Result<Vec<u8>, ASN1Error> {
    match der {
        [0x02, len, rest @ ..]
            if *len < 0x80 && rest.len() == *len as usize && !rest.is_empty() =>
        {
            Ok(rest.to_vec())
        }
        [0x02, 0x81, len, rest @ ..] if *len >= 0x80 && rest.len() == *len as usize => {
            Ok(rest.to_vec())
        }
        _ => Err(invalid()),
    }
}
