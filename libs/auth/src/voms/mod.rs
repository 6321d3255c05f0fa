//! Standard VOMS attribute certificates in proxies (RFC 5755 ACs with VOMS
//! FQANs, as `voms-proxy-init` and `voms-proxy-fake` make them), verified
//! as a grid host verifies them and mapped to the same (VO, VO ID, groups)
//! the custom attribute extension gives (docs/identity.md, "VOMS
//! credentials").
//!
//! Verification of the first AC of the extension (the VO asked for first):
//! 1. the service has a vomsdir, and `<vomsdir>/<vo>/<host>.lsc` exists
//!    for the AC's VO and VOMS host (from its policy authority
//!    `<vo>://<host>:<port>`);
//! 2. the DNs of the certificates the AC carries (the VOMS server's
//!    subject, its issuer, ...) are one of the `.lsc` chains, and the AC's
//!    issuer is the VOMS server's subject;
//! 3. the VOMS server's certificate chains to a CA of the trust store
//!    (webpki, with the store's skew allowance);
//! 4. the AC's signature verifies under the VOMS server's key;
//! 5. the AC's holder is the proxy chain's end-entity certificate: its
//!    serial number, and its issuer's name (RFC 5755) or its subject's
//!    (what VOMS writes, and accepts);
//! 6. now is inside the AC's validity (with the skew allowance);
//! 7. every FQAN is well formed and of the AC's VO.
//!
//! The mapping: VO = the VOMS VO; VO ID = `voms:` and 32 hex digits of
//! SHA-256 over the holder's subject DN, a newline, and its issuer's DN
//! (slash form): the same for every proxy of one certificate, and of its
//! renewals with the same DN from the same CA. Groups: each FQAN below
//! the VO root gives a group named by its path below the VO (`/vo1/admins`
//! gives `admins`, `/vo1/a/b` gives `a/b`); a role gives a second group
//! named `<path>/Role=<role>` (`/vo1/Role=admin` gives `Role=admin`). Group
//! IDs are `fqan` followed by `:<component>` per path component and
//! `::<role>` (`fqan:admins`, `fqan::admin`), so ACLs can name them.

mod ac;
pub mod issue;
pub mod signature;
mod vomsdir;

pub use ac::{parse_ac, parse_extension, AttributeCertificate, VOMS_EXTENSION};
pub use vomsdir::{slash_dn, VomsDir};

/// Whether `s` may be a VO or VOMS host name here (`A-Za-z0-9._-`, not
/// starting with `.` or `-`): what a vomsdir path is made of.
pub fn is_host_name(s: &str) -> bool {
    vomsdir::is_name(s)
}

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;

use crate::attributes::Group;
use crate::{AuthError, TrustStore};

impl TrustStore {
    /// Loads a service's vomsdir ([`VomsDir::load`]) and accepts VOMS
    /// attribute certificates from the servers it lists; logs how many
    /// VOs it names (none: a warning, every VOMS proxy will be refused).
    pub fn load_vomsdir(&mut self, dir: &std::path::Path) -> Result<(), AuthError> {
        let d = VomsDir::load(dir)?;
        if d.is_empty() {
            tracing::warn!(dir = %dir.display(), "vomsdir lists no VOMS server (<vo>/<host>.lsc): every VOMS proxy will be refused");
        } else {
            tracing::info!(dir = %dir.display(), vos = %d.vos().collect::<Vec<_>>().join(","), "VOMS attribute certificates accepted");
        }
        self.set_vomsdir(d);
        Ok(())
    }
}

/// What a verified VOMS AC says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VomsAttributes {
    pub vo: String,
    pub vo_id: String,
    pub groups: Vec<Group>,
    /// The VOMS server's host (from the AC's policy authority).
    pub host: String,
    /// The FQANs, as carried.
    pub fqans: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Most groups one AC maps to (the custom attributes' limit).
const MAX_GROUPS: usize = 64;

fn untrusted(vo: &str, host: &str, why: impl Into<String>) -> AuthError {
    AuthError::UntrustedVomsServer {
        vo: vo.to_owned(),
        host: host.to_owned(),
        why: why.into(),
    }
}

/// Verifies the VOMS extension value `value` of a proxy whose chain's
/// end-entity certificate is `ee` (see the module documentation).
pub fn verify(
    value: &[u8],
    ee: &X509Certificate<'_>,
    trust: &TrustStore,
    now: i64,
) -> Result<VomsAttributes, AuthError> {
    trust.vomsdir().ok_or(AuthError::VomsNotAccepted)?;
    let acs = parse_extension(value)?;
    let ac = acs
        .first()
        .ok_or_else(|| AuthError::malformed("VOMS extension", "no attribute certificate"))?;
    let (vo, host) = policy_authority(&ac.policy_authority)?;
    verify_ac(ac, vo, host, ee, trust, now)
}

/// One AC of [`verify_each`]: its VO, and its attributes or why they were
/// refused.
pub type EachAc = (String, Result<VomsAttributes, AuthError>);

/// Every AC of the VOMS extension `value` (one per VO: `voms-proxy-init
/// -voms a -voms b`, a multi-VO login at a CA with `voms_uri`), each
/// verified on its own as [`verify`] verifies the first: the VO each one
/// names, with its attributes or why they were refused. Fails as a whole
/// only when the extension cannot be read, an AC names no readable VO, or
/// the service accepts no VOMS ACs at all.
pub fn verify_each(
    value: &[u8],
    ee: &X509Certificate<'_>,
    trust: &TrustStore,
    now: i64,
) -> Result<Vec<EachAc>, AuthError> {
    trust.vomsdir().ok_or(AuthError::VomsNotAccepted)?;
    let acs = parse_extension(value)?;
    if acs.is_empty() {
        return Err(AuthError::malformed(
            "VOMS extension",
            "no attribute certificate",
        ));
    }
    acs.iter()
        .map(|ac| {
            let (vo, host) = policy_authority(&ac.policy_authority)?;
            Ok((vo.clone(), verify_ac(ac, vo, host, ee, trust, now)))
        })
        .collect()
}

/// Steps 1-7 for one AC of VO `vo` from VOMS server `host`.
fn verify_ac(
    ac: &AttributeCertificate,
    vo: String,
    host: String,
    ee: &X509Certificate<'_>,
    trust: &TrustStore,
    now: i64,
) -> Result<VomsAttributes, AuthError> {
    let vomsdir = trust.vomsdir().ok_or(AuthError::VomsNotAccepted)?;

    // 1-2. The vomsdir names this server for this VO.
    let chains = vomsdir
        .chains(&vo, &host)
        .ok_or_else(|| untrusted(&vo, &host, format!("the vomsdir has no {vo}/{host}.lsc")))?;
    let certs = ac
        .certs
        .iter()
        .map(|c| {
            x509_parser::parse_x509_certificate(c)
                .map(|(_, c)| c)
                .map_err(|e| AuthError::malformed("VOMS server certificate", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let server = certs
        .first()
        .ok_or_else(|| AuthError::malformed("VOMS attribute certificate", "no certificates"))?;
    let mut dns = vec![slash_dn(server.subject())?];
    for c in &certs {
        dns.push(slash_dn(c.issuer())?);
    }
    if !chains.contains(&dns) {
        return Err(untrusted(
            &vo,
            &host,
            format!(
                "its certificate ({}) is not listed in {vo}/{host}.lsc",
                dns.join(" issued by ")
            ),
        ));
    }
    if ac.issuer != server.subject().as_raw() {
        return Err(untrusted(
            &vo,
            &host,
            "the AC's issuer is not the certificate it carries",
        ));
    }

    // 3. The server's certificate chains to a trusted CA.
    chain_to_ca(&ac.certs, trust, now).map_err(|why| untrusted(&vo, &host, why))?;

    // 4. Signature.
    if !signature::verify(
        server.public_key().raw,
        &ac.signature_algorithm,
        &ac.tbs,
        &ac.signature,
    ) {
        return Err(AuthError::BadSignature {
            what: "VOMS attribute certificate",
        });
    }

    // 5. Holder: the serial number, and the issuer's name as RFC 5755
    // says, or the subject's as VOMS writes it (and VOMS's own check
    // accepts either).
    let holder_name = ac.holder_issuer.as_slice();
    if ac.holder_serial != ee.raw_serial()
        || (holder_name != ee.issuer().as_raw() && holder_name != ee.subject().as_raw())
    {
        return Err(AuthError::WrongHolder);
    }

    // 6. Validity.
    let skew = trust.max_skew;
    let what = "VOMS attribute certificate";
    if ac.not_after <= ac.not_before {
        return Err(AuthError::malformed(what, "empty validity window"));
    }
    if now > ac.not_after + skew {
        return Err(AuthError::Expired {
            what,
            at: ac.not_after,
            now,
        });
    }
    if now + skew < ac.not_before {
        return Err(AuthError::NotYetValid {
            what,
            at: ac.not_before,
            now,
        });
    }

    // 7. FQANs, and the mapping.
    let groups = groups_of(&vo, &ac.fqans)?;
    Ok(VomsAttributes {
        vo_id: vo_id_of(ee)?,
        vo,
        groups,
        host,
        fqans: ac.fqans.clone(),
        not_before: ac.not_before,
        not_after: ac.not_after,
    })
}

/// Verifies `chain` (as [`crate::verify::verify_certificates`]) and the
/// VOMS AC of its proxy nearest the leaf, whatever other attributes the
/// chain carries (`verify_chain` prefers our own extension): for tools
/// and tests that read the VOMS side of a proxy carrying both.
pub fn verify_in_chain(
    chain: &[CertificateDer<'_>],
    trust: &TrustStore,
    now: i64,
) -> Result<VomsAttributes, AuthError> {
    let v = crate::verify::verify_certificates(chain, trust, now)?;
    let oid = crate::oids::oid_bytes(VOMS_EXTENSION);
    let value = v.certs[..v.ee_index]
        .iter()
        .find_map(|c| {
            c.extensions()
                .iter()
                .find(|e| e.oid.as_bytes() == oid.as_slice())
        })
        .ok_or(AuthError::NoAttributes)?
        .value;
    verify(value, &v.certs[v.ee_index], trust, now)
}

/// What the first AC of a VOMS extension says, mapped as [`verify`] maps
/// it, WITHOUT any check of trust, signature, holder or time: for showing
/// a proxy to its owner (`lors proxy-info`), never for authorization.
pub fn read_unverified(
    value: &[u8],
    ee: &X509Certificate<'_>,
) -> Result<VomsAttributes, AuthError> {
    let acs = parse_extension(value)?;
    let ac = acs
        .first()
        .ok_or_else(|| AuthError::malformed("VOMS extension", "no attribute certificate"))?;
    let (vo, host) = policy_authority(&ac.policy_authority)?;
    Ok(VomsAttributes {
        vo_id: vo_id_of(ee)?,
        groups: groups_of(&vo, &ac.fqans)?,
        vo,
        host,
        fqans: ac.fqans.clone(),
        not_before: ac.not_before,
        not_after: ac.not_after,
    })
}

/// `<vo>://<host>:<port>` → (vo, host).
fn policy_authority(uri: &str) -> Result<(String, String), AuthError> {
    let bad = || {
        AuthError::malformed(
            "VOMS attribute certificate",
            format!("policy authority {uri:?} is not <vo>://<host>:<port>"),
        )
    };
    let (vo, rest) = uri.split_once("://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if !vomsdir::is_name(vo)
        || !vomsdir::is_name(host)
        || port.is_empty()
        || !port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok((vo.to_owned(), host.to_owned()))
}

/// webpki: the VOMS server's certificate (first of `certs`, the rest as
/// intermediates) chains to a trust anchor, for serverAuth or clientAuth.
fn chain_to_ca(certs: &[Vec<u8>], trust: &TrustStore, now: i64) -> Result<(), String> {
    let ders: Vec<CertificateDer<'_>> = certs
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let (first, rest) = ders.split_first().ok_or("no certificate")?;
    let ee = webpki::EndEntityCert::try_from(first).map_err(|e| format!("{e:?}"))?;
    let at = |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
    let check = |t: i64, usage: webpki::KeyUsage| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            trust.anchors(),
            rest,
            at(t),
            usage,
            None,
            None,
        )
        .map(|_| ())
    };
    let at_time = |t: i64| {
        check(t, webpki::KeyUsage::server_auth())
            .or_else(|_| check(t, webpki::KeyUsage::client_auth()))
    };
    match at_time(now) {
        Ok(()) => Ok(()),
        Err(webpki::Error::CertNotValidYet { .. }) if at_time(now + trust.max_skew).is_ok() => {
            Ok(())
        }
        Err(webpki::Error::CertExpired { .. }) if at_time(now - trust.max_skew).is_ok() => Ok(()),
        Err(e) => Err(format!(
            "its certificate does not chain to a trusted CA: {e:?}"
        )),
    }
}

/// The holder's VO ID (see the module documentation).
pub fn vo_id_of(ee: &X509Certificate<'_>) -> Result<String, AuthError> {
    let text = format!("{}\n{}", slash_dn(ee.subject())?, slash_dn(ee.issuer())?);
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("voms:{hex}"))
}

/// One FQAN: `/vo/g1/.../Role=r/Capability=c` → (group path, role).
fn parse_fqan<'a>(vo: &str, fqan: &'a str) -> Result<(Vec<&'a str>, Option<&'a str>), AuthError> {
    let bad = |why: &str| AuthError::Voms(format!("FQAN {fqan:?}: {why}"));
    let rest = fqan
        .strip_prefix('/')
        .ok_or_else(|| bad("does not start with /"))?;
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or("");
    if first != vo {
        return Err(bad(&format!(
            "is for VO {first:?}, the attribute certificate for VO {vo:?}"
        )));
    }
    let mut path = Vec::new();
    let mut role = None;
    let mut capability_seen = false;
    for p in parts {
        if capability_seen {
            return Err(bad("something follows Capability="));
        }
        if let Some(r) = p.strip_prefix("Role=") {
            if role.is_some() {
                return Err(bad("two roles"));
            }
            if !vomsdir::is_name(r) {
                return Err(bad("bad role name"));
            }
            role = Some(r);
        } else if let Some(c) = p.strip_prefix("Capability=") {
            if c != "NULL" {
                return Err(bad("capabilities are not supported (only Capability=NULL)"));
            }
            capability_seen = true;
        } else if role.is_some() {
            return Err(bad("a group follows the role"));
        } else if !vomsdir::is_name(p) {
            return Err(bad("bad group name"));
        } else {
            path.push(p);
        }
    }
    Ok((path, role.filter(|r| *r != "NULL")))
}

/// The groups of a VO's FQANs (see the module documentation).
pub fn groups_of(vo: &str, fqans: &[String]) -> Result<Vec<Group>, AuthError> {
    if fqans.is_empty() {
        return Err(AuthError::Voms(
            "the attribute certificate has no FQAN".into(),
        ));
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut add = |id: String, name: String| -> Result<(), AuthError> {
        if id.len() > 128 {
            return Err(AuthError::Voms(format!("group {name:?}: name too long")));
        }
        if !groups.iter().any(|g| g.id == id) {
            if groups.len() >= MAX_GROUPS {
                return Err(AuthError::Voms(format!("more than {MAX_GROUPS} groups")));
            }
            groups.push(Group { id, name });
        }
        Ok(())
    };
    for f in fqans {
        let (path, role) = parse_fqan(vo, f)?;
        let id: String = std::iter::once("fqan")
            .chain(path.iter().copied())
            .collect::<Vec<_>>()
            .join(":");
        let name = path.join("/");
        if !path.is_empty() {
            add(id.clone(), name.clone())?;
        }
        if let Some(role) = role {
            let role_name = if name.is_empty() {
                format!("Role={role}")
            } else {
                format!("{name}/Role={role}")
            };
            add(format!("{id}::{role}"), role_name)?;
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests;
