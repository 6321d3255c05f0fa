//! The VO attribute extension: `{vo, VO ID, groups, holder, validity}` signed
//! by the VO's attribute authority (AA), carried in a proxy certificate.
//!
//! Extension value (DER):
//!
//! ```text
//! VoAttributeCertificate ::= SEQUENCE {
//!     attributes          VoAttributes,            -- the signed bytes
//!     signatureAlgorithm  AlgorithmIdentifier,     -- of the AA's key
//!     signature           BIT STRING,
//!     aaCertificate       OCTET STRING }           -- DER of the AA certificate
//! VoAttributes ::= SEQUENCE {
//!     version       INTEGER (1 | 2),
//!     vo            UTF8String,
//!     voId          UTF8String,
//!     groups        SEQUENCE OF SEQUENCE { id UTF8String, name UTF8String },
//!     holderIssuer  OCTET STRING,   -- DER Name: issuer of the user's certificate
//!     holderSerial  OCTET STRING,   -- its serial number's content bytes
//!     notBefore     INTEGER,        -- Unix seconds
//!     notAfter      INTEGER,
//!     scope         UTF8String }  -- version 2 only: "maintenance"
//! ```
//!
//! Version 1 attributes are a full credential ([`Scope::Full`]). Version 2
//! adds a `scope` that narrows what the credential may be used for; the
//! only scope is `maintenance` ([`Scope::Maintenance`]: refresh, check and
//! repair of the holder's own files, docs/maintenance.md). Code that knows
//! only version 1 refuses version 2 outright, so a narrowed credential can
//! never be taken for a full one by an older service.

use crate::keys::{verify_with_spki, SigningKey};
use crate::{AuthError, TrustStore};

/// Largest extension value accepted.
pub const MAX_EXTENSION: usize = 16 * 1024;
const MAX_TEXT: usize = 256;
const MAX_GROUPS: usize = 64;

/// A VO group the user belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// Stable group VO ID.
    pub id: String,
    /// Human name, e.g. `admins`.
    pub name: String,
}

/// What a credential may be used for (the `scope` of version 2
/// attributes; version 1 attributes are [`Scope::Full`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Scope {
    /// Whatever the holder's rights allow.
    #[default]
    Full,
    /// Maintenance of the holder's own files only (refresh, check,
    /// repair): issued by the online CA for a maintenance grant, refused
    /// by the metadata manager for anything else.
    Maintenance,
}

impl Scope {
    /// The `scope` string of version 2 attributes (`None` for version 1).
    fn wire(self) -> Option<&'static str> {
        match self {
            Scope::Full => None,
            Scope::Maintenance => Some("maintenance"),
        }
    }

    fn from_wire(s: &str) -> Option<Scope> {
        match s {
            "maintenance" => Some(Scope::Maintenance),
            _ => None,
        }
    }
}

/// What the AA asserts about the holder of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoAttributes {
    pub vo: String,
    /// The user's stable VO ID.
    pub vo_id: String,
    pub groups: Vec<Group>,
    /// DER Name of the issuer of the user's end-entity certificate.
    pub holder_issuer: Vec<u8>,
    /// Serial number (content bytes) of the user's end-entity certificate.
    pub holder_serial: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

fn check_text(what: &'static str, s: &str) -> Result<(), AuthError> {
    if s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(AuthError::malformed(
            what,
            "empty, too long or with control characters",
        ));
    }
    Ok(())
}

impl VoAttributes {
    fn check(&self) -> Result<(), AuthError> {
        check_text("VO name", &self.vo)?;
        check_text("VO ID", &self.vo_id)?;
        if self.groups.len() > MAX_GROUPS {
            return Err(AuthError::malformed("VO attributes", "too many groups"));
        }
        for g in &self.groups {
            check_text("group ID", &g.id)?;
            check_text("group name", &g.name)?;
        }
        if self.not_after <= self.not_before {
            return Err(AuthError::malformed(
                "VO attributes",
                "empty validity window",
            ));
        }
        Ok(())
    }

    fn encode(&self, scope: Scope) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_u8(if scope.wire().is_some() { 2 } else { 1 });
                w.next().write_utf8_string(&self.vo);
                w.next().write_utf8_string(&self.vo_id);
                w.next().write_sequence_of(|w| {
                    for g in &self.groups {
                        w.next().write_sequence(|w| {
                            w.next().write_utf8_string(&g.id);
                            w.next().write_utf8_string(&g.name);
                        });
                    }
                });
                w.next().write_bytes(&self.holder_issuer);
                w.next().write_bytes(&self.holder_serial);
                w.next().write_i64(self.not_before);
                w.next().write_i64(self.not_after);
                if let Some(scope) = scope.wire() {
                    w.next().write_utf8_string(scope);
                }
            })
        })
    }

    fn decode(der: &[u8]) -> Result<(VoAttributes, Scope), AuthError> {
        let (attrs, scope) = yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                let version = r.next().read_u8()?;
                if version != 1 && version != 2 {
                    return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
                }
                let vo = r.next().read_utf8string()?;
                let vo_id = r.next().read_utf8string()?;
                let mut groups = Vec::new();
                r.next().read_sequence_of(|r| {
                    if groups.len() >= MAX_GROUPS {
                        return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
                    }
                    groups.push(r.read_sequence(|r| {
                        Ok(Group {
                            id: r.next().read_utf8string()?,
                            name: r.next().read_utf8string()?,
                        })
                    })?);
                    Ok(())
                })?;
                let attrs = VoAttributes {
                    vo,
                    vo_id,
                    groups,
                    holder_issuer: r.next().read_bytes()?,
                    holder_serial: r.next().read_bytes()?,
                    not_before: r.next().read_i64()?,
                    not_after: r.next().read_i64()?,
                };
                let scope = if version == 2 {
                    let s = r.next().read_utf8string()?;
                    // An unknown scope is refused: it narrows something
                    // this code does not know how to enforce.
                    Scope::from_wire(&s)
                        .ok_or_else(|| yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))?
                } else {
                    Scope::Full
                };
                Ok((attrs, scope))
            })
        })
        .map_err(|e| AuthError::malformed("VO attributes", e))?;
        attrs.check()?;
        Ok((attrs, scope))
    }

    /// Signs these attributes with the AA's key; returns the extension value.
    pub fn sign(&self, aa_cert_der: &[u8], aa_key: &SigningKey) -> Result<Vec<u8>, AuthError> {
        self.sign_scoped(Scope::Full, aa_cert_der, aa_key)
    }

    /// Signs these attributes narrowed to `scope` (version 2 attributes
    /// unless the scope is [`Scope::Full`]).
    pub fn sign_scoped(
        &self,
        scope: Scope,
        aa_cert_der: &[u8],
        aa_key: &SigningKey,
    ) -> Result<Vec<u8>, AuthError> {
        self.check()?;
        let tbs = self.encode(scope);
        let sig = aa_key.sign(&tbs)?;
        let alg = aa_key.algorithm_identifier();
        let out = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                w.next().write_der(&alg);
                w.next().write_bitvec_bytes(&sig, sig.len() * 8);
                w.next().write_bytes(aa_cert_der);
            })
        });
        if out.len() > MAX_EXTENSION {
            return Err(AuthError::malformed("VO attributes", "extension too large"));
        }
        Ok(out)
    }
}

/// Most VOs one proxy carries: the first VO's attribute set in the VO
/// attribute extension, up to `MAX_VOS - 1` more in the further-VOs
/// extension ([`crate::oids::more_vo_attributes_oid`]).
pub const MAX_VOS: usize = 8;

/// The further-VOs extension value: `SEQUENCE SIZE (1..7) OF
/// VoAttributeCertificate`, each element exactly what the VO attribute
/// extension of a single-VO proxy holds (the `sets`, as the CA signed them).
pub fn encode_more(sets: &[Vec<u8>]) -> Result<Vec<u8>, AuthError> {
    if sets.is_empty() || sets.len() >= MAX_VOS {
        return Err(AuthError::malformed(
            "further VO attributes",
            format!("1 to {} attribute sets", MAX_VOS - 1),
        ));
    }
    for s in sets {
        SignedAttributes::parse(s)?;
    }
    Ok(yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for s in sets {
                w.next().write_der(s);
            }
        })
    }))
}

/// The attribute sets (DER, not yet parsed) of a further-VOs extension value.
pub fn parse_more(value: &[u8]) -> Result<Vec<Vec<u8>>, AuthError> {
    if value.len() > MAX_EXTENSION * (MAX_VOS - 1) {
        return Err(AuthError::malformed(
            "further VO attributes",
            "extension too large",
        ));
    }
    let sets = yasna::parse_der(value, |r| {
        let mut sets = Vec::new();
        r.read_sequence_of(|r| {
            if sets.len() + 1 >= MAX_VOS {
                return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
            }
            sets.push(r.read_der()?);
            Ok(())
        })?;
        Ok(sets)
    })
    .map_err(|e| AuthError::malformed("further VO attributes", e))?;
    if sets.is_empty() {
        return Err(AuthError::malformed(
            "further VO attributes",
            "no attribute set",
        ));
    }
    Ok(sets)
}

/// The VO attribute sets a certificate (a proxy) carries, not verified:
/// the VO attribute extension's value, then each set of the further-VOs
/// extension; empty when it carries neither.
pub fn sets_in_certificate(cert_der: &[u8]) -> Result<Vec<Vec<u8>>, AuthError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| AuthError::malformed("certificate", e))?;
    let find = |oid: &[u8]| {
        cert.extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == oid)
            .map(|e| e.value)
    };
    let mut out = Vec::new();
    if let Some(v) = find(&crate::oids::vo_attributes_oid()) {
        out.push(v.to_vec());
    }
    if let Some(v) = find(&crate::oids::more_vo_attributes_oid()) {
        out.extend(parse_more(v)?);
    }
    Ok(out)
}

/// A parsed, not yet verified extension value.
#[derive(Debug, Clone)]
pub struct SignedAttributes {
    pub attributes: VoAttributes,
    /// What the credential may be used for.
    pub scope: Scope,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    pub aa_certificate: Vec<u8>,
}

impl SignedAttributes {
    pub fn parse(value: &[u8]) -> Result<SignedAttributes, AuthError> {
        if value.len() > MAX_EXTENSION {
            return Err(AuthError::malformed("VO attributes", "extension too large"));
        }
        let (tbs, signature, aa_certificate) = yasna::parse_der(value, |r| {
            r.read_sequence(|r| {
                let tbs = r.next().read_der()?;
                let _alg = r.next().read_der()?;
                let (sig, _) = r.next().read_bitvec_bytes()?;
                let aa = r.next().read_bytes()?;
                Ok((tbs, sig, aa))
            })
        })
        .map_err(|e| AuthError::malformed("VO attributes", e))?;
        let (attributes, scope) = VoAttributes::decode(&tbs)?;
        Ok(SignedAttributes {
            attributes,
            scope,
            tbs,
            signature,
            aa_certificate,
        })
    }

    /// Checks the AA is pinned for the VO and valid, the signature, the
    /// validity window (with the trust store's skew allowance) and that the
    /// attributes are bound to the end-entity certificate `holder_*`.
    pub fn verify(
        &self,
        trust: &TrustStore,
        holder_issuer: &[u8],
        holder_serial: &[u8],
        now: i64,
    ) -> Result<&VoAttributes, AuthError> {
        let a = &self.attributes;
        if !trust.is_pinned_aa(&a.vo, &self.aa_certificate) {
            return Err(AuthError::UntrustedAttributeAuthority { vo: a.vo.clone() });
        }
        let (_, aa) = x509_parser::parse_x509_certificate(&self.aa_certificate)
            .map_err(|e| AuthError::malformed("AA certificate", e))?;
        let skew = trust.max_skew;
        let (aa_nb, aa_na) = (
            aa.validity().not_before.timestamp(),
            aa.validity().not_after.timestamp(),
        );
        if now > aa_na + skew {
            return Err(AuthError::Expired {
                what: "attribute authority certificate",
                at: aa_na,
                now,
            });
        }
        if now + skew < aa_nb {
            return Err(AuthError::NotYetValid {
                what: "attribute authority certificate",
                at: aa_nb,
                now,
            });
        }
        if !verify_with_spki(aa.public_key().raw, &self.tbs, &self.signature) {
            return Err(AuthError::BadSignature {
                what: "VO attributes",
            });
        }
        if a.holder_issuer != holder_issuer || a.holder_serial != holder_serial {
            return Err(AuthError::WrongHolder);
        }
        if now > a.not_after + skew {
            return Err(AuthError::Expired {
                what: "VO attributes",
                at: a.not_after,
                now,
            });
        }
        if now + skew < a.not_before {
            return Err(AuthError::NotYetValid {
                what: "VO attributes",
                at: a.not_before,
                now,
            });
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> VoAttributes {
        VoAttributes {
            vo: "vo1".into(),
            vo_id: "alice-id".into(),
            groups: vec![Group {
                id: "g".into(),
                name: "admins".into(),
            }],
            holder_issuer: vec![1, 2],
            holder_serial: vec![3],
            not_before: 10,
            not_after: 20,
        }
    }

    fn key() -> SigningKey {
        let (_, pkcs8) = crate::pki::new_csr("aa").unwrap();
        SigningKey::from_pkcs8(&pkcs8).unwrap()
    }

    #[test]
    fn full_scope_is_version_1_and_maintenance_version_2() {
        let k = key();
        let full = SignedAttributes::parse(&attrs().sign(b"aa", &k).unwrap()).unwrap();
        assert_eq!(full.scope, Scope::Full);
        assert_eq!(full.attributes, attrs());
        // Version 1 exactly as before scopes existed: the first field of
        // the signed bytes is INTEGER 1, and there is no ninth field.
        assert_eq!(&full.tbs[2..5], &[2, 1, 1]);
        assert_eq!(full.tbs, attrs().encode(Scope::Full));

        let m = attrs().sign_scoped(Scope::Maintenance, b"aa", &k).unwrap();
        let m = SignedAttributes::parse(&m).unwrap();
        assert_eq!(m.scope, Scope::Maintenance);
        assert_eq!(m.attributes, attrs());
        assert_eq!(&m.tbs[2..5], &[2, 1, 2]);
    }

    #[test]
    fn unknown_scope_and_version_refused() {
        let a = attrs();
        let with = |version: u8, scope: Option<&str>| {
            yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_u8(version);
                    w.next().write_utf8_string(&a.vo);
                    w.next().write_utf8_string(&a.vo_id);
                    w.next().write_sequence_of(|_| {});
                    w.next().write_bytes(&a.holder_issuer);
                    w.next().write_bytes(&a.holder_serial);
                    w.next().write_i64(a.not_before);
                    w.next().write_i64(a.not_after);
                    if let Some(s) = scope {
                        w.next().write_utf8_string(s);
                    }
                })
            })
        };
        assert!(VoAttributes::decode(&with(2, Some("maintenance"))).is_ok());
        assert!(VoAttributes::decode(&with(2, Some("everything"))).is_err());
        // Version 2 without its scope, version 1 with one, version 3.
        assert!(VoAttributes::decode(&with(2, None)).is_err());
        assert!(VoAttributes::decode(&with(1, Some("maintenance"))).is_err());
        assert!(VoAttributes::decode(&with(3, Some("maintenance"))).is_err());
    }
}
