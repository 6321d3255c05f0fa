//! Writing a VOMS extension: one AC in the layout `voms-proxy-init` makes
//! (see `ac.rs`), signed by an attribute authority's key.

use yasna::models::{GeneralizedTime, ObjectIdentifier};
use yasna::Tag;

use super::ac::{CERTS_EXTENSION, FQAN_ATTRIBUTE};
use crate::keys::SigningKey;
use crate::AuthError;

/// What goes into an AC.
#[derive(Debug, Clone)]
pub struct AcRequest<'a> {
    /// DER Name of the holder certificate's issuer.
    pub holder_issuer: &'a [u8],
    /// Content bytes of the holder certificate's serial number.
    pub holder_serial: &'a [u8],
    /// The signer's certificate (DER): its subject is the AC's issuer, and
    /// it goes into the `certs` extension, followed by `intermediates`.
    pub signer_cert: &'a [u8],
    pub intermediates: &'a [Vec<u8>],
    pub vo: &'a str,
    /// The VOMS host and port of the policy authority `<vo>://<host>:<port>`.
    pub host: &'a str,
    pub port: u16,
    /// FQANs, e.g. `/vo1` and `/vo1/admins`.
    pub fqans: &'a [String],
    /// Content bytes of the AC's serial number (positive).
    pub serial: &'a [u8],
    pub not_before: i64,
    pub not_after: i64,
}

fn time(t: i64) -> Result<GeneralizedTime, AuthError> {
    let dt = time::OffsetDateTime::from_unix_timestamp(t)
        .map_err(|e| AuthError::malformed("AC validity", e))?;
    Ok(GeneralizedTime::from_datetime(dt))
}

/// Signs the AC of `req` with `key` and returns the value of a proxy's VOMS
/// extension (1.3.6.1.4.1.8005.100.100.5) holding it.
pub fn voms_extension(req: &AcRequest<'_>, key: &SigningKey) -> Result<Vec<u8>, AuthError> {
    let (_, signer) = x509_parser::parse_x509_certificate(req.signer_cert)
        .map_err(|e| AuthError::malformed("AC signer certificate", e))?;
    let issuer = signer.subject().as_raw().to_vec();
    let key_id = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        signer.public_key().subject_public_key.data.as_ref(),
    );
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
    let aki = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_tagged_implicit(Tag::context(0), |w| w.write_bytes(key_id.as_ref()))
        })
    });
    let alg = key.algorithm_identifier();
    let (nb, na) = (time(req.not_before)?, time(req.not_after)?);
    let authority = format!("{}://{}:{}", req.vo, req.host, req.port);
    let mut certs = vec![req.signer_cert.to_vec()];
    certs.extend(req.intermediates.iter().cloned());
    let certs_der = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence_of(|w| {
                for c in &certs {
                    w.next().write_der(c);
                }
            })
        })
    });
    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_sequence(|w| {
                w.next().write_tagged_implicit(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next()
                                .write_tagged(Tag::context(4), |w| w.write_der(req.holder_issuer))
                        });
                        w.next().write_der(&integer_der(req.holder_serial));
                    })
                })
            });
            w.next().write_tagged_implicit(Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next()
                            .write_tagged(Tag::context(4), |w| w.write_der(&issuer))
                    })
                })
            });
            w.next().write_der(&alg);
            w.next().write_der(&integer_der(req.serial));
            w.next().write_sequence(|w| {
                w.next().write_generalized_time(&nb);
                w.next().write_generalized_time(&na);
            });
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(FQAN_ATTRIBUTE));
                    w.next().write_set(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_tagged_implicit(Tag::context(0), |w| {
                                w.write_sequence(|w| {
                                    w.next().write_tagged_implicit(Tag::context(6), |w| {
                                        w.write_bytes(authority.as_bytes())
                                    })
                                })
                            });
                            w.next().write_sequence(|w| {
                                for f in req.fqans {
                                    w.next().write_bytes(f.as_bytes());
                                }
                            });
                        })
                    });
                })
            });
            // VOMS's own check requires noRevAvail and the authority key
            // identifier (the SHA-1 of the signer's public key bits).
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(CERTS_EXTENSION));
                    w.next().write_bytes(&certs_der);
                });
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(&[2, 5, 29, 56]));
                    w.next().write_bytes(&[0x05, 0x00]);
                });
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(&[2, 5, 29, 35]));
                    w.next().write_bytes(&aki);
                });
            });
        })
    });
    let sig = key.sign(&tbs)?;
    let ac = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&tbs);
            w.next().write_der(&alg);
            w.next().write_bitvec_bytes(&sig, sig.len() * 8);
        })
    });
    Ok(wrap_acs(&[ac]))
}

/// The extension value around ACs: SEQUENCE OF SEQUENCE OF AC.
pub fn wrap_acs(acs: &[Vec<u8>]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                for ac in acs {
                    w.next().write_der(ac);
                }
            })
        })
    })
}

/// DER INTEGER of content bytes (a leading zero added if the top bit is set).
fn integer_der(content: &[u8]) -> Vec<u8> {
    let mut c = content.to_vec();
    if c.is_empty() || c[0] & 0x80 != 0 {
        c.insert(0, 0);
    }
    let mut out = vec![0x02];
    if c.len() < 0x80 {
        out.push(c.len() as u8);
    } else {
        out.push(0x81);
        out.push(c.len() as u8);
    }
    out.extend(c);
    out
}

/// The FQANs of a VO's groups: `/<vo>` first, then `/<vo>/<name>` for
/// every group whose name is a VOMS group path (`a/b`, optionally ending
/// in `Role=r`); other names have no FQAN and are left out.
pub fn fqans_for(vo: &str, group_names: &[&str]) -> Vec<String> {
    let mut out = vec![format!("/{vo}")];
    for name in group_names {
        let fqan = format!("/{vo}/{name}");
        if super::groups_of(vo, std::slice::from_ref(&fqan)).is_ok() && !out.contains(&fqan) {
            out.push(fqan);
        }
    }
    out
}
/// One VOMS extension holding the ACs of several (`voms-proxy-init -voms
/// a -voms b` writes one such extension: `SEQUENCE OF` one `SEQUENCE OF
/// AttributeCertificate` per VOMS server): for a multi-VO proxy whose VOs'
/// ACs came one extension each. Each value must parse.
pub fn merge_extensions(values: &[Vec<u8>]) -> Result<Vec<u8>, AuthError> {
    let mut parts = Vec::new();
    for v in values {
        super::parse_extension(v)?;
        let inner = yasna::parse_der(v, |r| {
            let mut inner = Vec::new();
            r.read_sequence_of(|r| {
                inner.push(r.read_der()?);
                Ok(())
            })?;
            Ok(inner)
        })
        .map_err(|e| AuthError::malformed("VOMS extension", e))?;
        parts.extend(inner);
    }
    let merged = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for p in &parts {
                w.next().write_der(p);
            }
        })
    });
    super::parse_extension(&merged)?;
    Ok(merged)
}
