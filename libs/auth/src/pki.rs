//! Certificate authorities made with rcgen: the online CA, VO attribute
//! authorities, server and user certificates. Used by `online-ca init`, the
//! local demo grid and tests.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::SigningKey;
use crate::{unix_now, AuthError, VoAttributes};

fn rc(e: rcgen::Error) -> AuthError {
    AuthError::Io(format!("certificate generation: {e}"))
}

fn offset(t: i64) -> Result<time::OffsetDateTime, AuthError> {
    time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| AuthError::malformed("time", e))
}

fn serial() -> Result<SerialNumber, AuthError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| AuthError::Io("no randomness".into()))?;
    b[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&b))
}

fn params(
    dn: &[(DnType, &str)],
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, AuthError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    let mut name = DistinguishedName::new();
    for (t, v) in dn {
        name.push(t.clone(), *v);
    }
    p.distinguished_name = name;
    p.not_before = offset(not_before)?;
    p.not_after = offset(not_after)?;
    p.serial_number = Some(serial()?);
    Ok(p)
}

/// A certificate and its PKCS#8 key that can sign other certificates or
/// attributes.
#[derive(Clone)]
pub struct Authority {
    pub cert_der: Vec<u8>,
    pub key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A certificate with its key, as issued to a user or a server.
#[derive(Clone)]
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub key_pkcs8: Vec<u8>,
}

impl Authority {
    /// A self-signed CA (`O=<org>, CN=<cn>`) valid for `days`.
    pub fn new_ca(org: &str, cn: &str, days: i64) -> Result<Authority, AuthError> {
        let now = unix_now();
        let mut p = params(
            &[(DnType::OrganizationName, org), (DnType::CommonName, cn)],
            now - 3600,
            now + days * 86_400,
        )?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.self_signed(&key).map_err(rc)?;
        Ok(Authority {
            cert_der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        })
    }

    fn issuer(&self) -> Result<(rcgen::Certificate, KeyPair), AuthError> {
        let key = KeyPair::try_from(self.key_pkcs8.as_slice()).map_err(rc)?;
        let p = CertificateParams::from_ca_cert_der(&self.cert_der.clone().into()).map_err(rc)?;
        let cert = p.self_signed(&key).map_err(rc)?;
        Ok((cert, key))
    }

    /// An attribute-authority certificate signed by this CA.
    pub fn new_aa(&self, org: &str, vo: &str, days: i64) -> Result<Authority, AuthError> {
        let now = unix_now();
        let cn = format!("{vo} attribute authority");
        let mut p = params(
            &[(DnType::OrganizationName, org), (DnType::CommonName, &cn)],
            now - 3600,
            now + days * 86_400,
        )?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(rc)?;
        let (ca, ca_key) = self.issuer()?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(rc)?;
        Ok(Authority {
            cert_der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        })
    }

    /// A TLS server certificate for `hosts` (DNS names or IP addresses).
    pub fn issue_server(&self, hosts: &[&str], days: i64) -> Result<Issued, AuthError> {
        let now = unix_now();
        let mut p = params(
            &[(
                DnType::CommonName,
                hosts.first().copied().unwrap_or("server"),
            )],
            now - 3600,
            now + days * 86_400,
        )?;
        p.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => rcgen::Ia5String::try_from(h.to_string())
                    .map(SanType::DnsName)
                    .map_err(rc),
            })
            .collect::<Result<_, _>>()?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(rc)?;
        let (ca, ca_key) = self.issuer()?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(rc)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        })
    }

    fn user_params(org: &str, cn: &str, lifetime: i64) -> Result<CertificateParams, AuthError> {
        let now = unix_now();
        let mut p = params(
            &[(DnType::OrganizationName, org), (DnType::CommonName, cn)],
            now - 300,
            now + lifetime,
        )?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        Ok(p)
    }

    /// A user certificate with a fresh key (tests and demos).
    pub fn issue_user(&self, org: &str, cn: &str, lifetime: i64) -> Result<Issued, AuthError> {
        let p = Self::user_params(org, cn, lifetime)?;
        let key = KeyPair::generate().map_err(rc)?;
        let (ca, ca_key) = self.issuer()?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(rc)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        })
    }

    /// A user certificate for the key of a PKCS#10 request; the CA chooses
    /// the subject and lifetime, the request contributes only its key (and
    /// must be signed by it).
    pub fn issue_from_csr(
        &self,
        csr_der: &[u8],
        org: &str,
        cn: &str,
        lifetime: i64,
    ) -> Result<Vec<u8>, AuthError> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| AuthError::malformed("certificate request", e))?;
        csr.params = Self::user_params(org, cn, lifetime)?;
        let (ca, ca_key) = self.issuer()?;
        let cert = csr.signed_by(&ca, &ca_key).map_err(rc)?;
        Ok(cert.der().to_vec())
    }

    /// A revocation list (DER) signed by this CA, listing the
    /// certificates with the given serial numbers (big-endian bytes, as in
    /// the certificate) and revocation times; valid from `this_update`
    /// until `next_update` (Unix seconds). `number` is the CRL number
    /// (increasing with every list the CA publishes).
    pub fn revocation_list(
        &self,
        revoked: &[(Vec<u8>, i64)],
        this_update: i64,
        next_update: i64,
        number: u64,
    ) -> Result<Vec<u8>, AuthError> {
        let time = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .map_err(|e| AuthError::malformed("revocation list time", e))
        };
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at)| {
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: time(*at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, AuthError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: time(this_update)?,
            next_update: time(next_update)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let (ca, ca_key) = self.issuer()?;
        let crl = params.signed_by(&ca, &ca_key).map_err(rc)?;
        Ok(crl.der().to_vec())
    }

    /// Signs VO attributes (this authority acting as the VO's AA).
    pub fn sign_attributes(&self, attrs: &VoAttributes) -> Result<Vec<u8>, AuthError> {
        attrs.sign(&self.cert_der, &SigningKey::from_pkcs8(&self.key_pkcs8)?)
    }

    /// Signs VO attributes narrowed to `scope` (a maintenance credential).
    pub fn sign_attributes_scoped(
        &self,
        attrs: &VoAttributes,
        scope: crate::attributes::Scope,
    ) -> Result<Vec<u8>, AuthError> {
        attrs.sign_scoped(
            scope,
            &self.cert_der,
            &SigningKey::from_pkcs8(&self.key_pkcs8)?,
        )
    }
}

/// A PKCS#10 request for a fresh key: `(csr_der, key_pkcs8)`.
pub fn new_csr(cn: &str) -> Result<(Vec<u8>, Vec<u8>), AuthError> {
    let key = KeyPair::generate().map_err(rc)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    let csr = p.serialize_request(&key).map_err(rc)?;
    Ok((csr.der().to_vec(), key.serialize_der()))
}
