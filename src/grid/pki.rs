//! The grid's PKI: the trust directory (the online CA's `trust/` plus the
//! L-Bone's and the metadata manager's signing keys) and the services'
//! server certificates, issued by the online CA's own CA.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};

use super::files::{copy_private, copy_tree, private_dir, write_file};
use super::{Layout, ORG};

/// Makes the trust directory every service and client uses: the CA's
/// `trust/`, plus `lbone/lbone.pub` and `metadata/metadata.pub` so depots
/// accept L-Bone grants and metadata-manager tickets; returns the CA to
/// issue the services' certificates.
pub(super) fn make_trust(l: &Layout) -> anyhow::Result<Issuer> {
    copy_tree(&l.ca.join("trust"), &l.trust)?;
    for (from, to) in [
        (l.lbone.join("lbone.pub"), l.trust.join("lbone/lbone.pub")),
        (
            l.mdm.join("metadata.pub"),
            l.trust.join("metadata/metadata.pub"),
        ),
    ] {
        private_dir(to.parent().unwrap_or(&l.trust))?;
        copy_private(&from, &to)?;
    }
    // Every replica's ticket key: depots honour tickets from any of them.
    for (i, dir) in l.mdm_replicas.iter().enumerate() {
        copy_private(
            &dir.join("metadata.pub"),
            &l.trust.join(format!("metadata/metadata{}.pub", i + 1)),
        )?;
    }
    // The online CA publishes the signing keys in its /v1/trust (what
    // `lors trust fetch` and `online-ca host-cert trust` write), as an
    // operator sets it up: docs/online-ca.md.
    for sub in ["lbone", "metadata"] {
        let to = l.ca.join("trust").join(sub);
        private_dir(&to)?;
        for f in std::fs::read_dir(l.trust.join(sub))? {
            let f = f?.path();
            if let Some(name) = f.file_name() {
                copy_private(&f, &to.join(name))?;
            }
        }
    }
    Issuer::load(&l.ca)
}

/// The online CA's CA, to issue the services' certificates.
pub(super) struct Issuer {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Issuer {
    pub(super) fn load(ca_dir: &Path) -> anyhow::Result<Issuer> {
        let cert_pem = fs::read_to_string(ca_dir.join("ca.pem")).context("read ca.pem")?;
        let key_pem = fs::read_to_string(ca_dir.join("ca.key")).context("read ca.key")?;
        let key = rcgen::KeyPair::from_pem(&key_pem).context("parse ca.key")?;
        let cert = rcgen::CertificateParams::from_ca_cert_pem(&cert_pem)
            .context("parse ca.pem")?
            .self_signed(&key)
            .context("rebuild the CA certificate")?;
        Ok(Issuer { cert, key })
    }

    /// `dir/server.pem` and `dir/server.key` for localhost, 127.0.0.1 and
    /// `names` (DNS names or addresses), serverAuth and clientAuth.
    pub(super) fn server_cert(
        &self,
        cn: &str,
        dir: &Path,
        names: &[String],
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::OrganizationName, ORG);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ];
        for n in names {
            p.subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into()?),
                });
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(3600)).into();
        p.not_after = (now + Duration::from_secs(30 * 86_400)).into();
        let key = rcgen::KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        write_file(&cert_path, &cert.pem())?;
        // Created 0600 (never world-readable, even for a moment): the
        // daemons refuse a key that group or others may read.
        ibp_auth::keys::write_secret(&key_path, key.serialize_pem().as_bytes())?;
        Ok((cert_path, key_path))
    }
}

/// A users-file line `name:<argon2id PHC>` with cheap parameters.
pub(super) fn users_line(name: &str, password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64, 1, 1, None).map_err(|e| anyhow!("argon2: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| anyhow!("{e}"))?;
    let hash = a
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow!("argon2: {e}"))?;
    Ok(format!("{name}:{hash}\n"))
}

pub(super) fn client_tls(trust_dir: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let trust = ibp_auth::TrustStore::load(trust_dir)
        .with_context(|| format!("load {}", trust_dir.display()))?;
    Ok(ibp_auth::tls::client_config(&trust, None)?)
}
