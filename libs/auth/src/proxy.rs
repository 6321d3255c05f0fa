//! Minting RFC 3820 proxy certificates.
//!
//! The DER is written here rather than with rcgen: a proxy's subject is its
//! issuer's subject byte for byte plus one CN, and real grid subjects repeat
//! attribute types (`DC=org, DC=example`, a proxy's own CNs) that rcgen's
//! one-value-per-type names cannot hold.

use ring::rand::{SecureRandom, SystemRandom};
use yasna::models::ObjectIdentifier as Oid;
use yasna::Tag;

use crate::der::sequence_contents;
use crate::keys::{generate_ecdsa_p256, p256_spki, SigningKey};
use crate::{oids, unix_now, AuthError};

/// Seconds a proxy is back-dated to absorb clock skew (as grid-proxy-init does).
pub const BACKDATE: i64 = 60;

/// What to put in a new proxy.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Requested lifetime in seconds (capped at the issuer's expiry).
    pub lifetime: i64,
    /// The VO attribute extension value, if any.
    pub attributes: Option<Vec<u8>>,
    /// How many further proxies may be issued below this one.
    pub path_len: Option<u32>,
}

/// A new proxy certificate and its private key (PKCS#8).
pub struct MintedProxy {
    pub certificate: Vec<u8>,
    pub key_pkcs8: Vec<u8>,
}

fn utc(t: i64) -> Result<yasna::models::UTCTime, AuthError> {
    let dt = time::OffsetDateTime::from_unix_timestamp(t)
        .map_err(|e| AuthError::malformed("validity", e))?;
    Ok(yasna::models::UTCTime::from_datetime(dt))
}

/// Issues a proxy certificate below `issuer_der` signed with `issuer_key`.
pub fn mint(
    issuer_der: &[u8],
    issuer_key: &SigningKey,
    opts: &ProxyOptions,
) -> Result<MintedProxy, AuthError> {
    mint_with_extensions(issuer_der, issuer_key, opts, &[])
}

/// [`mint`] with further non-critical extensions `(OID arcs, DER value)`
/// after the VO attributes (a standard VOMS AC: [`crate::voms`]).
pub fn mint_with_extensions(
    issuer_der: &[u8],
    issuer_key: &SigningKey,
    opts: &ProxyOptions,
    extra: &[(&[u64], &[u8])],
) -> Result<MintedProxy, AuthError> {
    let extra: Vec<(Vec<u8>, &[u8])> = extra
        .iter()
        .map(|(oid, v)| (oids::oid_bytes(oid), *v))
        .collect();
    mint_with_raw_extensions(issuer_der, issuer_key, opts, &extra)
}

/// [`mint_with_extensions`], the OIDs given as the DER contents of the
/// OBJECT IDENTIFIER (for UUID OIDs, whose last arc needs 128 bits: the
/// further-VOs attribute extension).
pub fn mint_with_raw_extensions(
    issuer_der: &[u8],
    issuer_key: &SigningKey,
    opts: &ProxyOptions,
    extra: &[(Vec<u8>, &[u8])],
) -> Result<MintedProxy, AuthError> {
    let mut extra_oids = Vec::new();
    for (oid, _) in extra {
        if oid.is_empty() || oid.len() > 127 {
            return Err(AuthError::malformed("extension", "bad OID"));
        }
        let mut der = vec![0x06, oid.len() as u8];
        der.extend_from_slice(oid);
        extra_oids.push(der);
    }
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer_der)
        .map_err(|e| AuthError::malformed("issuer certificate", e))?;
    let now = unix_now();
    let issuer_nb = issuer.validity().not_before.timestamp();
    let issuer_na = issuer.validity().not_after.timestamp();
    let not_before = (now - BACKDATE).max(issuer_nb);
    let not_after = now.saturating_add(opts.lifetime).min(issuer_na);
    if opts.lifetime <= 0 || not_after <= now {
        return Err(AuthError::Expired {
            what: "issuer certificate",
            at: issuer_na,
            now,
        });
    }
    if issuer_na.max(not_after) >= 2_524_608_000 {
        // UTCTime stops at 2049.
        return Err(AuthError::malformed("validity", "beyond 2049"));
    }

    let rng = SystemRandom::new();
    let mut serial_bytes = [0u8; 8];
    rng.fill(&mut serial_bytes)
        .map_err(|_| AuthError::Io("no randomness".into()))?;
    let serial = u64::from_be_bytes(serial_bytes) >> 1;

    let key_pkcs8 = generate_ecdsa_p256()?;
    let key = SigningKey::from_pkcs8(&key_pkcs8)?;
    let SigningKey::EcdsaP256(ec) = &key else {
        return Err(AuthError::Io("proxy key is not P-256".into()));
    };
    let spki = p256_spki(ring::signature::KeyPair::public_key(ec).as_ref());

    let issuer_subject = issuer.subject().as_raw();
    let issuer_rdns = sequence_contents(issuer_subject)
        .ok_or_else(|| AuthError::malformed("issuer certificate", "subject is not a SEQUENCE"))?;
    let cn = serial.to_string();
    let subject = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if !issuer_rdns.is_empty() {
                w.next().write_der(issuer_rdns);
            }
            w.next().write_set(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&Oid::from_slice(oids::COMMON_NAME));
                    w.next().write_utf8_string(&cn);
                })
            });
        })
    });

    let pci = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            if let Some(n) = opts.path_len {
                w.next().write_u32(n);
            }
            w.next().write_sequence(|w| {
                w.next().write_oid(&Oid::from_slice(oids::PPL_INHERIT_ALL));
            });
        })
    });
    let key_usage = yasna::construct_der(|w| w.write_bitvec_bytes(&[0x80], 1));
    let vo_oid = oids::vo_attributes_oid();
    let mut vo_oid_der = vec![0x06, vo_oid.len() as u8];
    vo_oid_der.extend_from_slice(&vo_oid);

    let (nb, na) = (utc(not_before)?, utc(not_after)?);
    let alg = issuer_key.algorithm_identifier();
    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
            w.next().write_u64(serial);
            w.next().write_der(&alg);
            w.next().write_der(issuer_subject);
            w.next().write_sequence(|w| {
                w.next().write_utctime(&nb);
                w.next().write_utctime(&na);
            });
            w.next().write_der(&subject);
            w.next().write_der(&spki);
            w.next().write_tagged(Tag::context(3), |w| {
                w.write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&Oid::from_slice(oids::PROXY_CERT_INFO));
                        w.next().write_bool(true);
                        w.next().write_bytes(&pci);
                    });
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&Oid::from_slice(oids::KEY_USAGE));
                        w.next().write_bool(true);
                        w.next().write_bytes(&key_usage);
                    });
                    if let Some(attrs) = &opts.attributes {
                        w.next().write_sequence(|w| {
                            w.next().write_der(&vo_oid_der);
                            w.next().write_bytes(attrs);
                        });
                    }
                    for ((_, value), oid) in extra.iter().zip(&extra_oids) {
                        w.next().write_sequence(|w| {
                            w.next().write_der(oid);
                            w.next().write_bytes(value);
                        });
                    }
                })
            });
        })
    });
    let sig = issuer_key.sign(&tbs)?;
    let certificate = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&tbs);
            w.next().write_der(&alg);
            w.next().write_bitvec_bytes(&sig, sig.len() * 8);
        })
    });
    Ok(MintedProxy {
        certificate,
        key_pkcs8,
    })
}
