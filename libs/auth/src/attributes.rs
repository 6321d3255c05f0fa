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
//!     version       INTEGER (1),
//!     vo            UTF8String,
//!     voId          UTF8String,
//!     groups        SEQUENCE OF SEQUENCE { id UTF8String, name UTF8String },
//!     holderIssuer  OCTET STRING,   -- DER Name: issuer of the user's certificate
//!     holderSerial  OCTET STRING,   -- its serial number's content bytes
//!     notBefore     INTEGER,        -- Unix seconds
//!     notAfter      INTEGER }
//! ```

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

    fn encode(&self) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_u8(1);
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
            })
        })
    }

    fn decode(der: &[u8]) -> Result<VoAttributes, AuthError> {
        let attrs = yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                let version = r.next().read_u8()?;
                if version != 1 {
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
                Ok(VoAttributes {
                    vo,
                    vo_id,
                    groups,
                    holder_issuer: r.next().read_bytes()?,
                    holder_serial: r.next().read_bytes()?,
                    not_before: r.next().read_i64()?,
                    not_after: r.next().read_i64()?,
                })
            })
        })
        .map_err(|e| AuthError::malformed("VO attributes", e))?;
        attrs.check()?;
        Ok(attrs)
    }

    /// Signs these attributes with the AA's key; returns the extension value.
    pub fn sign(&self, aa_cert_der: &[u8], aa_key: &SigningKey) -> Result<Vec<u8>, AuthError> {
        self.check()?;
        let tbs = self.encode();
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

/// A parsed, not yet verified extension value.
#[derive(Debug, Clone)]
pub struct SignedAttributes {
    pub attributes: VoAttributes,
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
        Ok(SignedAttributes {
            attributes: VoAttributes::decode(&tbs)?,
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
