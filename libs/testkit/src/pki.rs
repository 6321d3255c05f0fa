//! A test PKI: a CA, one attribute authority per VO, VO members made into
//! proxies carrying AA-signed attributes, service certificates, and trust
//! directories as the services read them (`ca/`, `vomsdir/<vo>/`).

use std::path::Path;

use ibp_auth::pki::Authority;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::{unix_now, Group, ProxyCredential, TrustStore, VoAttributes};

/// The organisation of every test certificate.
pub const ORG: &str = "Test Grid";

/// PEM of one DER block.
pub fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// Writes `text` to `path`, making its directory.
pub fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The CA certificate of `ca` as rcgen's issuer, with its key.
fn issuer(ca: &Authority) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::try_from(ca.key_pkcs8.as_slice()).expect("CA key");
    let cert = rcgen::CertificateParams::from_ca_cert_der(&ca.cert_der.clone().into())
        .and_then(|p| p.self_signed(&key))
        .expect("CA certificate");
    (cert, key)
}

/// A certificate for a service (the L-Bone, a depot) issued by `ca` for
/// `hosts` (DNS names or IP addresses), with the serverAuth and clientAuth
/// extended key usages (the L-Bone presents its server certificate as
/// client certificate when it polls depots), valid from an hour ago for
/// 30 days: (certificate DER, PKCS#8 key DER).
pub fn service_cert(ca: &Authority, cn: &str, hosts: &[&str]) -> (Vec<u8>, Vec<u8>) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
    let (ca_cert, ca_key) = issuer(ca);
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    p.distinguished_name.push(DnType::OrganizationName, ORG);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = hosts
        .iter()
        .map(|h| match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.to_string().try_into().expect("a DNS name")),
        })
        .collect();
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = std::time::SystemTime::now();
    p.not_before = (now - std::time::Duration::from_secs(3600)).into();
    p.not_after = (now + std::time::Duration::from_secs(30 * 86_400)).into();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca_cert, &ca_key).expect("sign");
    (cert.der().to_vec(), key.serialize_der())
}

/// A CA (`O=Test Grid, CN=Test CA`, 30 days) and an AA per VO.
pub struct Pki {
    pub ca: Authority,
    pub aas: Vec<(String, Authority)>,
}

impl Pki {
    pub fn new(vos: &[&str]) -> Pki {
        let ca = Authority::new_ca(ORG, "Test CA", 30).expect("test CA");
        let aas = vos
            .iter()
            .map(|vo| (vo.to_string(), ca.new_aa(ORG, vo, 30).expect("test AA")))
            .collect();
        Pki { ca, aas }
    }

    /// The AA of `vo`.
    pub fn aa(&self, vo: &str) -> &Authority {
        &self
            .aas
            .iter()
            .find(|(v, _)| v == vo)
            .unwrap_or_else(|| panic!("{vo} is not a VO of the test PKI"))
            .1
    }

    /// An in-memory trust store holding the CA and every VO's AA.
    pub fn trust_store(&self) -> TrustStore {
        let mut trust = TrustStore::new();
        trust.add_ca(self.ca.cert_der.clone()).expect("the CA");
        for (vo, aa) in &self.aas {
            trust.pin_aa(vo, aa.cert_der.clone());
        }
        trust
    }

    /// Writes a trust directory under `dir`: `ca/ca.pem` and
    /// `vomsdir/<vo>/aa.pem` for each of `vos`.
    pub fn write_trust(&self, dir: &Path, vos: &[&str]) {
        write(
            &dir.join("ca/ca.pem"),
            &pem_of("CERTIFICATE", &self.ca.cert_der),
        );
        for vo in vos {
            write(
                &dir.join(format!("vomsdir/{vo}/aa.pem")),
                &pem_of("CERTIFICATE", &self.aa(vo).cert_der),
            );
        }
    }

    /// A member of `vo` called `name`, to be made into a proxy by
    /// [`Member::proxy`].
    pub fn member<'a>(&'a self, name: &str, vo: &str) -> Member<'a> {
        Member {
            pki: self,
            signer: None,
            name: name.into(),
            vo: vo.into(),
            vo_id: format!("{vo}:{name}"),
            groups: Vec::new(),
            attributes_from: -60,
            attributes_until: 6 * 3600,
            cert_lifetime: 7 * 86_400,
            proxy_lifetime: 12 * 3600,
        }
    }

    /// [`service_cert`] from this PKI's CA.
    pub fn service(&self, cn: &str, hosts: &[&str]) -> (Vec<u8>, Vec<u8>) {
        service_cert(&self.ca, cn, hosts)
    }

    /// [`Pki::service`] written as PEM to `cert` and `key` (0600).
    pub fn write_service(&self, cn: &str, hosts: &[&str], cert: &Path, key: &Path) {
        let (c, k) = self.service(cn, hosts);
        write(cert, &pem_of("CERTIFICATE", &c));
        ibp_auth::keys::write_secret(key, pem_of("PRIVATE KEY", &k).as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", key.display()));
    }

    /// A user certificate (no proxy, no attributes) valid exactly from
    /// `not_before` to `not_after` (Unix seconds): an expired one without
    /// waiting for it to expire.
    pub fn user_cert_between(&self, cn: &str, not_before: i64, not_after: i64) -> ProxyCredential {
        use rcgen::{CertificateParams, DnType, KeyUsagePurpose};
        let (ca_cert, ca_key) = issuer(&self.ca);
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        p.distinguished_name.push(DnType::OrganizationName, ORG);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let at =
            |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("a representable time");
        p.not_before = at(not_before);
        p.not_after = at(not_after);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &ca_cert, &ca_key).expect("sign");
        ProxyCredential {
            chain: vec![cert.der().to_vec()],
            key_pkcs8: key.serialize_der(),
        }
    }
}

/// A VO member being made (see [`Pki::member`]): by default VO ID
/// `<vo>:<name>`, no groups, attributes valid from a minute ago for six
/// hours, a user certificate of 7 days and a proxy of 12 hours.
pub struct Member<'a> {
    pki: &'a Pki,
    signer: Option<&'a Authority>,
    name: String,
    vo: String,
    vo_id: String,
    groups: Vec<Group>,
    attributes_from: i64,
    attributes_until: i64,
    cert_lifetime: i64,
    proxy_lifetime: i64,
}

impl<'a> Member<'a> {
    pub fn vo_id(mut self, vo_id: &str) -> Self {
        self.vo_id = vo_id.into();
        self
    }

    /// Groups as `(id, name)`.
    pub fn groups(mut self, groups: &[(&str, &str)]) -> Self {
        self.groups = groups
            .iter()
            .map(|(id, name)| Group {
                id: id.to_string(),
                name: name.to_string(),
            })
            .collect();
        self
    }

    /// Attributes signed by `aa` instead of the VO's AA (a forgery).
    pub fn signed_by(mut self, aa: &'a Authority) -> Self {
        self.signer = Some(aa);
        self
    }

    /// Attributes valid from `from` to `until` seconds from now.
    pub fn attributes_valid(mut self, from: i64, until: i64) -> Self {
        self.attributes_from = from;
        self.attributes_until = until;
        self
    }

    /// Seconds the user certificate and the proxy are valid.
    pub fn lifetimes(mut self, cert: i64, proxy: i64) -> Self {
        self.cert_lifetime = cert;
        self.proxy_lifetime = proxy;
        self
    }

    /// The VO ID the attributes will carry.
    pub fn id(&self) -> &str {
        &self.vo_id
    }

    /// The proxy: a user certificate from the CA and a proxy below it
    /// carrying the VO's AA-signed attributes.
    pub fn proxy(&self) -> ProxyCredential {
        let cert = self
            .pki
            .ca
            .issue_user(ORG, &self.name, self.cert_lifetime)
            .expect("user certificate");
        let (_, ee) = x509_parser::parse_x509_certificate(&cert.cert_der).expect("parse");
        let now = unix_now();
        let attrs = VoAttributes {
            vo: self.vo.clone(),
            vo_id: self.vo_id.clone(),
            groups: self.groups.clone(),
            holder_issuer: ee.issuer().as_raw().to_vec(),
            holder_serial: ee.raw_serial().to_vec(),
            not_before: now + self.attributes_from,
            not_after: now + self.attributes_until,
        };
        let ext = self
            .signer
            .unwrap_or_else(|| self.pki.aa(&self.vo))
            .sign_attributes(&attrs)
            .expect("sign attributes");
        ProxyCredential::create(
            std::slice::from_ref(&cert.cert_der),
            &cert.key_pkcs8,
            &ProxyOptions {
                lifetime: self.proxy_lifetime,
                attributes: Some(ext),
                path_len: None,
            },
        )
        .expect("proxy")
    }
}
