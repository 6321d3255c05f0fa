//! Verifying a certificate chain that starts with RFC 3820 proxies.
//!
//! The proxy part is checked here (webpki rejects proxies: their
//! ProxyCertInfo extension is critical and unknown to it); the end-entity
//! certificate and its CA chain are checked by webpki against the trust
//! store's anchors. The VO attributes are then checked against the AA pinned
//! for their VO and bound to the end-entity certificate; a standard VOMS
//! attribute certificate instead is checked against the service's vomsdir
//! (`crate::voms`).

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::X509Extension;

use crate::attributes::{Group, Scope, SignedAttributes};
use crate::der::sequence_contents;
use crate::{key_hash, oids, AuthError, TrustStore};

/// Longest chain accepted.
pub const MAX_CHAIN: usize = 10;

/// Who is on the other end, as established by a verified proxy chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub vo: String,
    /// The stable per-user VO ID: what authorization keys on.
    pub vo_id: String,
    pub groups: Vec<Group>,
    /// Subject of the end-entity certificate (for logs; never for authorization).
    pub subject: String,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo (what tokens bind to).
    pub key_hash: [u8; 32],
    /// When the credential stops being valid (earliest expiry in the chain
    /// and the attributes).
    pub not_after: i64,
    /// What the attributes allow the credential to be used for: a
    /// [`Scope::Maintenance`] credential may only maintain the holder's
    /// own files.
    pub scope: Scope,
    /// The other VOs of a multi-VO proxy (docs/identity.md, "Several VOs
    /// in one proxy"): never consulted by code that reads the fields above;
    /// a service acting for another VO asks [`Identity::for_vo`].
    pub others: OtherVos,
}

/// The VOs of a proxy besides the one its [`Identity`] names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtherVos {
    /// Each verified on its own (an `Identity` without `others`).
    pub verified: Vec<Identity>,
    /// The VOs whose attribute set was refused, and why.
    pub refused: Vec<(String, AuthError)>,
}

impl Identity {
    /// The VOs this credential verified for, its own first.
    pub fn vos(&self) -> Vec<&str> {
        std::iter::once(self.vo.as_str())
            .chain(self.others.verified.iter().map(|i| i.vo.as_str()))
            .collect()
    }

    /// Whether the credential carries verified attributes for `vo`.
    pub fn carries(&self, vo: &str) -> bool {
        self.vo == vo || self.others.verified.iter().any(|i| i.vo == vo)
    }

    /// This identity alone, without the other VOs.
    pub fn single(&self) -> Identity {
        Identity {
            others: OtherVos::default(),
            ..self.clone()
        }
    }

    /// The identity the credential gives in `vo` alone (no other VO's
    /// groups, VO ID or rights mixed in): [`AuthError::VoRefused`] when
    /// the attribute set for `vo` was refused (naming why),
    /// [`AuthError::VoNotCarried`] when there is none.
    pub fn for_vo(&self, vo: &str) -> Result<Identity, AuthError> {
        if self.vo == vo {
            return Ok(self.single());
        }
        if let Some(i) = self.others.verified.iter().find(|i| i.vo == vo) {
            return Ok(i.single());
        }
        if let Some((_, why)) = self.others.refused.iter().find(|(v, _)| v == vo) {
            return Err(AuthError::VoRefused {
                vo: vo.to_owned(),
                why: Box::new(why.clone()),
            });
        }
        Err(AuthError::VoNotCarried {
            vo: vo.to_owned(),
            carried: self.vos().join(", "),
        })
    }
}

/// A chain whose certificates and proxies verified (attributes not yet looked at).
pub struct VerifiedChain<'a> {
    pub certs: Vec<X509Certificate<'a>>,
    /// Index of the end-entity certificate (the number of proxies before it).
    pub ee_index: usize,
}

fn ext<'a, 'b>(cert: &'b X509Certificate<'a>, oid: &[u64]) -> Option<&'b X509Extension<'a>> {
    let want = oids::oid_bytes(oid);
    cert.extensions()
        .iter()
        .find(|e| e.oid.as_bytes() == want.as_slice())
}

fn is_proxy(cert: &X509Certificate<'_>) -> bool {
    ext(cert, oids::PROXY_CERT_INFO).is_some()
}

fn proxy_err(i: usize, msg: impl std::fmt::Display) -> AuthError {
    AuthError::Proxy(format!("certificate {i} of the chain: {msg}"))
}

/// Parses `pCPathLenConstraint` out of a ProxyCertInfo value; checks the policy.
fn proxy_path_len(value: &[u8]) -> Result<Option<u64>, String> {
    yasna::parse_der(value, |r| {
        r.read_sequence(|r| {
            let len = r.read_optional(|r| r.read_u64())?;
            let lang = r.next().read_sequence(|r| {
                let lang = r.next().read_oid()?;
                r.read_optional(|r| r.read_bytes())?;
                Ok(lang)
            })?;
            Ok((len, lang))
        })
    })
    .map_err(|e| format!("malformed ProxyCertInfo: {e}"))
    .and_then(|(len, lang)| {
        if lang.components().as_slice() == oids::PPL_INHERIT_ALL {
            Ok(len)
        } else {
            Err(format!("unsupported proxy policy language {lang}"))
        }
    })
}

fn check_validity(
    what: &'static str,
    cert: &X509Certificate<'_>,
    now: i64,
    skew: i64,
) -> Result<(), AuthError> {
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    if now > na + skew {
        return Err(AuthError::Expired { what, at: na, now });
    }
    if now + skew < nb {
        return Err(AuthError::NotYetValid { what, at: nb, now });
    }
    Ok(())
}

/// Checks the proxy at `i` against its issuer at `i + 1`.
fn check_proxy(
    i: usize,
    proxy: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
    skew: i64,
) -> Result<(), AuthError> {
    if proxy.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(proxy_err(
            i,
            "issuer name is not the next certificate's subject",
        ));
    }
    if proxy.tbs_certificate.signature != proxy.signature_algorithm {
        return Err(proxy_err(
            i,
            "the signed and the outer signature algorithms differ",
        ));
    }
    // By the algorithm the proxy names: VOMS clients sign proxies with
    // SHA-1 (voms::signature lists what is accepted).
    if !crate::voms::signature::verify(
        issuer.public_key().raw,
        &proxy.signature_algorithm.algorithm.to_id_string(),
        proxy.tbs_certificate.as_ref(),
        proxy.signature_value.data.as_ref(),
    ) {
        return Err(AuthError::BadSignature {
            what: "proxy certificate",
        });
    }
    // Subject = issuer's subject + exactly one CN.
    let subject = sequence_contents(proxy.subject().as_raw())
        .ok_or_else(|| proxy_err(i, "malformed subject"))?;
    let issuer_subject = sequence_contents(issuer.subject().as_raw())
        .ok_or_else(|| proxy_err(i, "malformed issuer subject"))?;
    let last_ok = subject.starts_with(issuer_subject)
        && proxy.subject().iter_rdn().count() == issuer.subject().iter_rdn().count() + 1
        && proxy.subject().iter_rdn().last().is_some_and(|rdn| {
            rdn.iter().count() == 1
                && rdn
                    .iter()
                    .all(|a| a.attr_type().as_bytes() == oids::oid_bytes(oids::COMMON_NAME))
        });
    if !last_ok {
        return Err(proxy_err(
            i,
            "subject is not the issuer's subject plus one CN",
        ));
    }
    let pci = ext(proxy, oids::PROXY_CERT_INFO).ok_or_else(|| proxy_err(i, "no ProxyCertInfo"))?;
    if !pci.critical {
        return Err(proxy_err(i, "ProxyCertInfo is not critical"));
    }
    if let Ok(Some(bc)) = proxy.basic_constraints() {
        if bc.value.ca {
            return Err(proxy_err(i, "a proxy must not be a CA"));
        }
    } else if proxy.basic_constraints().is_err() {
        return Err(proxy_err(i, "malformed basicConstraints"));
    }
    let mut seen = std::collections::HashSet::new();
    if !proxy
        .extensions()
        .iter()
        .all(|e| seen.insert(e.oid.as_bytes()))
    {
        return Err(proxy_err(i, "an extension appears twice"));
    }
    let known: [&[u64]; 3] = [oids::PROXY_CERT_INFO, oids::KEY_USAGE, &[2, 5, 29, 19]];
    for e in proxy.extensions() {
        let oid = e.oid.as_bytes();
        if oid == oids::oid_bytes(&[2, 5, 29, 17]).as_slice()
            || oid == oids::oid_bytes(&[2, 5, 29, 18]).as_slice()
        {
            return Err(proxy_err(
                i,
                "a proxy must not carry subject or issuer alternative names",
            ));
        }
        if e.critical && !known.iter().any(|k| oids::oid_bytes(k).as_slice() == oid) {
            return Err(proxy_err(
                i,
                format!("unknown critical extension {}", e.oid),
            ));
        }
    }
    check_validity("proxy certificate", proxy, now, skew)?;
    let (pnb, pna) = (
        proxy.validity().not_before.timestamp(),
        proxy.validity().not_after.timestamp(),
    );
    let (inb, ina) = (
        issuer.validity().not_before.timestamp(),
        issuer.validity().not_after.timestamp(),
    );
    if pna > ina || pnb < inb {
        return Err(proxy_err(i, "lifetime exceeds the issuer's"));
    }
    Ok(())
}

/// Verifies the certificates of `chain` (leaf first): the proxies by RFC
/// 3820 rules, the end-entity certificate and its CAs by webpki.
pub fn verify_certificates<'a>(
    chain: &'a [CertificateDer<'a>],
    trust: &TrustStore,
    now: i64,
) -> Result<VerifiedChain<'a>, AuthError> {
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(AuthError::Chain(format!(
            "chain of {} certificates",
            chain.len()
        )));
    }
    let certs = chain
        .iter()
        .map(|c| {
            x509_parser::parse_x509_certificate(c.as_ref())
                .map(|(_, c)| c)
                .map_err(|e| AuthError::malformed("certificate", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ee_index = certs
        .iter()
        .position(|c| !is_proxy(c))
        .ok_or_else(|| AuthError::Chain("no end-entity certificate below the proxies".into()))?;
    let skew = trust.max_skew;
    for i in 0..ee_index {
        check_proxy(i, &certs[i], &certs[i + 1], now, skew)?;
        // `i` proxies were issued below this one.
        let pci = ext(&certs[i], oids::PROXY_CERT_INFO)
            .ok_or_else(|| proxy_err(i, "no ProxyCertInfo"))?;
        if let Some(max) = proxy_path_len(pci.value).map_err(|e| proxy_err(i, e))? {
            if i as u64 > max {
                return Err(proxy_err(i, format!("proxy path length {max} exceeded")));
            }
        }
    }
    for (j, c) in certs.iter().enumerate().skip(ee_index + 1) {
        if is_proxy(c) {
            return Err(proxy_err(j, "a proxy below the end-entity certificate"));
        }
    }
    let ee = webpki::EndEntityCert::try_from(&chain[ee_index])
        .map_err(|e| AuthError::Chain(format!("end-entity certificate: {e:?}")))?;
    // webpki has no skew allowance: give the certificates the benefit of it
    // at both ends by checking at `now` (expiry) and `now + skew` (start).
    let crls = trust.crls();
    let revocation = revocation_options(&crls);
    let verify_at = |t: i64| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            trust.anchors(),
            &chain[ee_index + 1..],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64)),
            webpki::KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map(|_| ())
    };
    match verify_at(now) {
        Ok(()) => {}
        Err(webpki::Error::CertNotValidYet { .. }) if verify_at(now + skew).is_ok() => {}
        Err(webpki::Error::CertExpired { .. }) if verify_at(now - skew).is_ok() => {}
        Err(e) => return Err(AuthError::Chain(format!("{e:?}"))),
    }
    Ok(VerifiedChain { certs, ee_index })
}

/// How the trust directory's revocation lists apply (none: no check).
/// Every certificate below a trusted CA is checked, a certificate of a CA
/// without a list is not refused for that, and a list past its
/// `nextUpdate` still revokes what it lists (an outdated list must not
/// take the grid down; it only misses newer revocations).
fn revocation_options<'a>(
    crls: &'a [&'a webpki::CertRevocationList<'a>],
) -> Option<webpki::RevocationOptions<'a>> {
    let builder = webpki::RevocationOptionsBuilder::new(crls).ok()?;
    Some(
        builder
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Allow)
            .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
            .build(),
    )
}

/// Verifies a proxy chain and its VO attributes; returns who the peer is.
///
/// A multi-VO proxy carries one attribute set per VO (ours: the VO
/// attribute extension and the further-VOs extension; VOMS: one AC per
/// VO), each verified on its own against its own authority. The identity
/// is that of the first set that verifies; the other verified ones and
/// the refused ones (with the reason) are in [`Identity::others`]. Refused
/// as a whole: a chain whose certificates do not verify, an attribute set
/// that cannot be read (which VO it claims is unknown), two sets for one
/// VO, or no set that verifies (the first one's reason).
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    trust: &TrustStore,
    now: i64,
) -> Result<Identity, AuthError> {
    let v = verify_certificates(chain, trust, now)?;
    let ee = &v.certs[v.ee_index];
    // The attributes nearest the leaf win: our own extension (with its
    // further VOs), or else a standard VOMS one, in the first proxy (from
    // the leaf) carrying either.
    let vo_oid = oids::vo_attributes_oid();
    let more_oid = oids::more_vo_attributes_oid();
    let voms_oid = oids::oid_bytes(crate::voms::VOMS_EXTENSION);
    let found = v.certs[..v.ee_index]
        .iter()
        .find_map(|c| {
            let find = |oid: &[u8]| {
                c.extensions()
                    .iter()
                    .find(|e| e.oid.as_bytes() == oid)
                    .map(|e| e.value)
            };
            find(&vo_oid)
                .map(|value| Attributes::Custom(value, find(&more_oid)))
                .or_else(|| find(&voms_oid).map(Attributes::Voms))
        })
        .ok_or(AuthError::NoAttributes)?;
    let chain_not_after = v
        .certs
        .iter()
        .map(|c| c.validity().not_after.timestamp())
        .min()
        .unwrap_or(i64::MIN);
    let identity =
        |vo: String, vo_id: String, groups: Vec<Group>, na: i64, scope: Scope| Identity {
            vo,
            vo_id,
            groups,
            subject: ee.subject().to_string(),
            key_hash: key_hash(v.certs[0].public_key().raw),
            not_after: chain_not_after.min(na),
            scope,
            others: OtherVos::default(),
        };
    let mut sets: Vec<(String, Result<Identity, AuthError>)> = Vec::new();
    match found {
        Attributes::Custom(value, more) => {
            let mut parsed = vec![SignedAttributes::parse(value)?];
            if let Some(more) = more {
                for set in crate::attributes::parse_more(more)? {
                    parsed.push(SignedAttributes::parse(&set)?);
                }
            }
            for signed in &parsed {
                let r = signed
                    .verify(trust, ee.issuer().as_raw(), ee.raw_serial(), now)
                    .map(|a| {
                        identity(
                            a.vo.clone(),
                            a.vo_id.clone(),
                            a.groups.clone(),
                            a.not_after,
                            signed.scope,
                        )
                    });
                sets.push((signed.attributes.vo.clone(), r));
            }
        }
        Attributes::Voms(value) => {
            for (vo, r) in crate::voms::verify_each(value, ee, trust, now)? {
                let r = r.map(|a| identity(a.vo, a.vo_id, a.groups, a.not_after, Scope::Full));
                sets.push((vo, r));
            }
        }
    }
    combine(sets)
}

/// One identity out of the attribute sets of a chain (see [`verify_chain`]).
fn combine(sets: Vec<(String, Result<Identity, AuthError>)>) -> Result<Identity, AuthError> {
    for (i, (vo, _)) in sets.iter().enumerate() {
        if sets[..i].iter().any(|(v, _)| v == vo) {
            return Err(AuthError::malformed(
                "VO attributes",
                format!("two attribute sets for VO {vo:?}"),
            ));
        }
    }
    let mut first_error = None;
    let mut verified = Vec::new();
    let mut refused = Vec::new();
    for (vo, r) in sets {
        match r {
            Ok(id) => verified.push(id),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e.clone());
                }
                refused.push((vo, e));
            }
        }
    }
    if verified.is_empty() {
        return Err(first_error.unwrap_or(AuthError::NoAttributes));
    }
    let mut id = verified.remove(0);
    id.others = OtherVos { verified, refused };
    Ok(id)
}

/// The attribute extension a chain carries (its DER value).
enum Attributes<'a> {
    /// Ours (`attributes.rs`), with the further-VOs extension if any.
    Custom(&'a [u8], Option<&'a [u8]>),
    /// A standard VOMS AC extension (`voms/`).
    Voms(&'a [u8]),
}
