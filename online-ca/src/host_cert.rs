//! `online-ca host-cert`: what a service host (depot, L-Bone, metadata
//! manager) runs to get its certificate and trust directory from the
//! online CA (docs/online-ca.md, "Host certificates").
//!
//! - `trust`: writes `ca/ca.pem` and `vomsdir/<vo>/aa.pem` of a trust
//!   directory from the CA's `GET /v1/trust`, the CA pinned by its SHA-256
//!   fingerprint (as `lors trust fetch` does).
//! - `request`: makes a key pair and a CSR here (the key never leaves the
//!   host; written mode 0600), enrolls with the one-time token of `online-ca
//!   admin hosts allow`, writes the key and the certificate.
//! - `renew`: the same with the current certificate as the credential
//!   (mutual TLS), when it expires within `--before` (a timer's job).
//!
//! Exit codes ([`Failure::code`]): 0 written, 1 the CA could not be
//! reached or failed (try again later), 2 usage or a local file problem,
//! 3 (`renew`) not due: nothing written, 4 refused by the CA or not
//! renewable (expired certificate, revoked host, name not allowed, wrong
//! or spent token, wrong fingerprint): the CA operator must act.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_https::{BaseUrl, Client, HttpError};
use serde::Deserialize;

use crate::ca::San;
use crate::hosts::HostCertResponse;

#[derive(Debug, Subcommand)]
pub enum HostCertCmd {
    /// Writes a trust directory's CA and VO attribute authorities from the
    /// CA's /v1/trust, the CA certificate pinned by its fingerprint.
    Trust {
        /// The online CA, `https://HOST:PORT`.
        #[arg(long)]
        ca: String,
        /// SHA-256 fingerprint of the CA certificate (`openssl x509
        /// -fingerprint -sha256` of ca.pem, read from the CA operator).
        #[arg(long)]
        fingerprint: String,
        /// The trust directory to write (made if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace a different ca/ca.pem already there.
        #[arg(long)]
        force: bool,
    },
    /// First certificate of a host: a new key and CSR made here, enrolled
    /// with the one-time token of `online-ca admin hosts allow`.
    Request {
        #[command(flatten)]
        ca: CaArgs,
        /// The enrollment token (visible to other local users in the
        /// process list while it runs: prefer --token-file).
        #[arg(
            long,
            conflicts_with = "token_file",
            required_unless_present = "token_file"
        )]
        token: Option<String>,
        /// A file holding the enrollment token (first line).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The host name of the allow-list entry (the certificate's CN and
        /// first DNS name).
        #[arg(long)]
        name: String,
        /// More DNS names to ask for (each must be on the entry).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses to ask for (each must be on the entry).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        #[command(flatten)]
        files: FileArgs,
    },
    /// Renews the certificate (a new key too) when it expires within
    /// --before, presenting the current one to the CA; exit 3 when not due.
    Renew {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        files: FileArgs,
        /// Renew when the certificate expires within this time.
        #[arg(long, default_value = "10d")]
        before: ibp_service::units::Seconds,
        /// Renew now, whatever the expiry.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// The online CA, `https://HOST:PORT`.
    #[arg(long)]
    ca: String,
    /// The host's trust directory (written by `host-cert trust`): its
    /// `ca/` authenticates the CA's server.
    #[arg(long)]
    trust: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The private key file (PKCS#8 PEM, written mode 0600, keeping the
    /// owner of the file it replaces).
    #[arg(long)]
    key: PathBuf,
    /// The certificate file (PEM).
    #[arg(long)]
    cert: PathBuf,
}

/// Why a command did not write anything; its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Local(String),
    #[error("{0}")]
    NotDue(String),
    #[error("{0}")]
    Refused(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Unavailable(_) => 1,
            Failure::Local(_) => 2,
            Failure::NotDue(_) => 3,
            Failure::Refused(_) => 4,
        }
    }
}

fn local(e: impl std::fmt::Display) -> Failure {
    Failure::Local(e.to_string())
}

/// Runs one command; returns the lines to print.
pub async fn run(cmd: HostCertCmd) -> Result<Vec<String>, Failure> {
    match cmd {
        HostCertCmd::Trust {
            ca,
            fingerprint,
            out,
            force,
        } => trust(&ca, &fingerprint, &out, force).await,
        HostCertCmd::Request {
            ca,
            token,
            token_file,
            name,
            dns,
            ips,
            files,
        } => {
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| local(format!("read {}: {e}", f.display())))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
                (None, None) => return Err(local("give --token or --token-file")),
            };
            let name = name.to_ascii_lowercase();
            if !crate::ca::valid_dns_name(&name) {
                return Err(local(format!("--name {name:?} is not a host name")));
            }
            let mut sans = vec![San::Dns(name.clone())];
            for d in dns {
                let d = d.to_ascii_lowercase();
                if !crate::ca::valid_dns_name(&d) {
                    return Err(local(format!("--dns {d:?} is not a host name")));
                }
                sans.push(San::Dns(d));
            }
            sans.extend(ips.into_iter().map(San::Ip));
            request(&ca, &token, &name, &sans, &files).await
        }
        HostCertCmd::Renew {
            ca,
            files,
            before,
            force,
        } => renew(&ca, &files, before.as_i64(), force).await,
    }
}

/// A key pair and a CSR for it asking for `sans`: (CSR PEM, key PKCS#8).
fn new_csr(cn: &str, sans: &[San]) -> Result<(String, Vec<u8>), Failure> {
    let key = rcgen::KeyPair::generate().map_err(local)?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(local)?;
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => rcgen::Ia5String::try_from(d.clone()).map(rcgen::SanType::DnsName),
            San::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()
        .map_err(local)?;
    let csr = p.serialize_request(&key).map_err(local)?;
    Ok((csr.pem().map_err(local)?, key.serialize_der()))
}

fn load_trust(dir: &Path) -> Result<TrustStore, Failure> {
    let t = TrustStore::load(dir)
        .map_err(|e| local(format!("trust directory {}: {e}", dir.display())))?;
    if t.ca_certificates().is_empty() {
        return Err(local(format!(
            "trust directory {} holds no CA: write it first with `online-ca host-cert trust`",
            dir.display()
        )));
    }
    Ok(t)
}

fn client(
    url: &str,
    trust: &TrustStore,
    cred: Option<&ProxyCredential>,
) -> Result<Client, Failure> {
    let base = BaseUrl::parse(url).map_err(local)?;
    let tls = ibp_auth::tls::client_config(trust, cred).map_err(local)?;
    Ok(Client::new(base, tls, cred.is_some()).with_service_name("online CA"))
}

fn http_failure(e: HttpError) -> Failure {
    match e {
        HttpError::Url { .. } => local(e),
        HttpError::CertificateRefused { .. } => Failure::Refused(format!(
            "{e} (an expired certificate, or one this CA does not trust): enroll again with a new token"
        )),
        _ => Failure::Unavailable(e.to_string()),
    }
}

/// POSTs `body` to `path`; the answer, or why not.
async fn post(
    c: &Client,
    path: &str,
    body: &serde_json::Value,
) -> Result<HostCertResponse, Failure> {
    let r = c.post_json(path, body).await.map_err(http_failure)?;
    if !r.is_success() {
        let msg = format!(
            "the online CA refused ({}): {}",
            r.status,
            r.error_message(500)
        );
        return Err(match r.status {
            400..=499 if r.status != 429 => Failure::Refused(msg),
            _ => Failure::Unavailable(msg),
        });
    }
    r.json()
        .map_err(|e| Failure::Unavailable(format!("unreadable answer from the online CA: {e}")))
}

/// Checks the issued certificate: for our key, from a CA of `trust`, valid
/// now. Returns its DER.
fn check_issued(a: &HostCertResponse, key: &[u8], trust: &TrustStore) -> Result<Vec<u8>, Failure> {
    let der = ibp_auth::trust::pem_certificates(a.certificate.as_bytes())
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| Failure::Unavailable("the CA's answer holds no certificate".into()))?;
    let ours = rcgen::KeyPair::try_from(key).map_err(local)?;
    let (_, c) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Failure::Unavailable(format!("unreadable certificate from the CA: {e}")))?;
    if c.public_key().raw != ours.public_key_der().as_slice() {
        return Err(Failure::Unavailable(
            "the CA's certificate is not for the key made here: nothing written".into(),
        ));
    }
    ibp_auth::verify::verify_certificates(
        &[rustls_pki_types::CertificateDer::from(der.clone())],
        trust,
        ibp_auth::unix_now(),
    )
    .map_err(|e| {
        Failure::Unavailable(format!(
            "the issued certificate does not verify against the trust directory: {e}"
        ))
    })?;
    Ok(der)
}

/// The key (0600) then the certificate, each atomically.
fn write_pair(files: &FileArgs, key: &[u8], cert_der: &[u8]) -> Result<(), Failure> {
    let key_pem = crate::ca::key_pem(key);
    write_atomic(&files.key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&files.cert, crate::ca::cert_pem(cert_der).as_bytes(), 0o644)
}

/// Writes through a temporary file in the same directory and a rename;
/// the new file gets `mode` and the owner and group of the file it
/// replaces (when run as root for a service account).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let old = std::fs::metadata(path).ok();
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("host-cert"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(m) = &old {
            if (m.uid(), m.gid()) != (f.metadata()?.uid(), f.metadata()?.gid()) {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(local(format!("write {}: {e}", path.display())));
    }
    Ok(())
}

async fn request(
    ca: &CaArgs,
    token: &str,
    name: &str,
    sans: &[San],
    files: &FileArgs,
) -> Result<Vec<String>, Failure> {
    let trust = load_trust(&ca.trust)?;
    let (csr, key) = new_csr(name, sans)?;
    let c = client(&ca.ca, &trust, None)?;
    let body = serde_json::json!({ "name": name, "token": token, "csr": csr });
    let a = post(&c, "/v1/hosts/enroll", &body).await?;
    let der = check_issued(&a, &key, &trust)?;
    write_pair(files, &key, &der)?;
    Ok(written(&a, files))
}

fn written(a: &HostCertResponse, files: &FileArgs) -> Vec<String> {
    vec![
        format!(
            "certificate for {} ({}; {}) valid until {}",
            a.name,
            a.role,
            a.names.join(", "),
            crate::admin::utc(a.not_after)
        ),
        format!("wrote {} (mode 0600)", files.key.display()),
        format!("wrote {}", files.cert.display()),
    ]
}

/// The SANs of a certificate.
fn sans_of(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<San> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(ext)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(San::Dns(d.to_ascii_lowercase())),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(|a| San::Ip(a.into())),
                16 => <[u8; 16]>::try_from(*b).ok().map(|a| San::Ip(a.into())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

async fn renew(
    ca: &CaArgs,
    files: &FileArgs,
    before: i64,
    force: bool,
) -> Result<Vec<String>, Failure> {
    let chain = ibp_auth::keys::read_certificates(&files.cert).map_err(local)?;
    let current = chain
        .first()
        .ok_or_else(|| local(format!("{}: no certificate", files.cert.display())))?
        .to_vec();
    let (_, c) = x509_parser::parse_x509_certificate(&current)
        .map_err(|e| local(format!("{}: {e}", files.cert.display())))?;
    let not_after = c.validity().not_after.timestamp();
    let now = ibp_auth::unix_now();
    if not_after <= now {
        return Err(Failure::Refused(format!(
            "{} expired at {}: an expired certificate cannot renew; ask the CA operator for a new token (`online-ca admin hosts allow`) and run `online-ca host-cert request`",
            files.cert.display(),
            crate::admin::utc(not_after)
        )));
    }
    if !force && not_after - now > before {
        return Err(Failure::NotDue(format!(
            "{} is valid until {}, more than {} from now: not renewed",
            files.cert.display(),
            crate::admin::utc(not_after),
            ibp_service::units::format_secs(before)
        )));
    }
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|n| n.as_str().ok())
        .unwrap_or("host")
        .to_owned();
    let sans = sans_of(&c);
    let old_key = ibp_auth::keys::read_private_key(&files.key).map_err(local)?;
    let cred = ProxyCredential {
        chain: vec![current.clone()],
        key_pkcs8: old_key,
    };
    let trust = load_trust(&ca.trust)?;
    let (csr, key) = new_csr(&cn, &sans)?;
    let client = client(&ca.ca, &trust, Some(&cred))?;
    let a = post(
        &client,
        "/v1/hosts/renew",
        &serde_json::json!({ "csr": csr }),
    )
    .await?;
    let der = check_issued(&a, &key, &trust)?;
    write_pair(files, &key, &der)?;
    Ok(written(&a, files))
}

/// What `GET /v1/trust` answers.
#[derive(Debug, Deserialize, PartialEq, Eq)]
struct TrustAnswer {
    ca: String,
    #[serde(default)]
    aa: std::collections::BTreeMap<String, String>,
    /// Published signing keys (`ed25519 <base64>`): the L-Bone's, which a
    /// depot needs to check grants, and the metadata managers', for
    /// tickets.
    #[serde(default)]
    lbone: Vec<String>,
    #[serde(default)]
    metadata: Vec<String>,
    /// The CA's revocation list (PEM); absent from older CAs.
    #[serde(default)]
    crl: Option<String>,
}

/// The SHA-256 fingerprint in any common spelling (hex with or without
/// colons, either case, `sha256:` or `SHA256 Fingerprint=` before it).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s.rsplit_once('=').map_or(s, |(_, v)| v);
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let hex: Vec<u8> = s.bytes().filter(|c| *c != b':' && *c != b' ').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// `AB:CD:...` SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn get_trust(c: &Client) -> Result<TrustAnswer, Failure> {
    let r = c.get("/v1/trust").await.map_err(http_failure)?;
    if !r.is_success() || r.body.len() > 1 << 20 {
        return Err(Failure::Unavailable(format!(
            "the online CA's /v1/trust answered {}: {}",
            r.status,
            r.error_message(200)
        )));
    }
    r.json()
        .map_err(|e| Failure::Unavailable(format!("unreadable /v1/trust answer: {e}")))
}

/// The two fetches of `lors trust fetch` (lors/src/trust_fetch.rs): the
/// first, unauthenticated, only to find the CA certificate with the
/// pinned fingerprint; the second authenticated by that CA alone, and the
/// one written.
async fn trust(url: &str, fp: &str, out: &Path, force: bool) -> Result<Vec<String>, Failure> {
    let want = parse_fingerprint(fp).ok_or_else(|| local("--fingerprint must be 64 hex digits"))?;
    let base = BaseUrl::parse(url).map_err(local)?;
    let any = ibp_auth::tls::unverified_server_config().map_err(local)?;
    let first = get_trust(&Client::new(base.clone(), any, false)).await?;
    let ders = ibp_auth::trust::pem_certificates(first.ca.as_bytes())
        .map_err(|e| Failure::Unavailable(format!("/v1/trust \"ca\" is not PEM: {e}")))?;
    let Some(ca_der) = ders.into_iter().find(|d| {
        let got = ring::digest::digest(&ring::digest::SHA256, d);
        bool::from(subtle::ConstantTimeEq::ct_eq(got.as_ref(), &want[..]))
    }) else {
        return Err(Failure::Refused(format!(
            "the online CA at {url} serves no CA certificate with fingerprint {}: nothing written",
            want.iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        )));
    };
    let mut pinned = TrustStore::new();
    pinned.add_ca(ca_der.clone()).map_err(local)?;
    let answer = get_trust(&client(url, &pinned, None)?).await?;
    let served = ibp_auth::trust::pem_certificates(answer.ca.as_bytes())
        .map_err(|e| Failure::Unavailable(format!("/v1/trust \"ca\" is not PEM: {e}")))?;
    if !served.contains(&ca_der) {
        return Err(Failure::Refused(format!(
            "the online CA at {url} no longer serves the pinned CA certificate"
        )));
    }
    let ca_path = out.join("ca").join("ca.pem");
    if !force {
        if let Ok(old) = std::fs::read(&ca_path) {
            if ibp_auth::trust::pem_certificates(&old).ok() != Some(vec![ca_der.clone()]) {
                return Err(local(format!(
                    "{} holds another CA certificate; give --force to replace it",
                    ca_path.display()
                )));
            }
        }
    }
    let mut files = vec![(ca_path, crate::ca::cert_pem(&ca_der))];
    for (vo, pem) in &answer.aa {
        if !crate::ca::valid_vo_name(vo) {
            return Err(Failure::Unavailable(format!(
                "the online CA names a VO {vo:?} that cannot be a directory name: nothing written"
            )));
        }
        ibp_auth::trust::pem_certificates(pem.as_bytes()).map_err(|e| {
            Failure::Unavailable(format!("the AA certificate of VO {vo} is not PEM: {e}"))
        })?;
        files.push((out.join("vomsdir").join(vo).join("aa.pem"), pem.clone()));
    }
    for (sub, keys) in [("lbone", &answer.lbone), ("metadata", &answer.metadata)] {
        for k in keys {
            ibp_auth::keys::parse_public_key(k).map_err(|e| {
                Failure::Unavailable(format!(
                    "a signing key the online CA publishes is not one: {e}"
                ))
            })?;
            files.push((
                out.join(sub)
                    .join(ibp_auth::trust::published_key_file_name(k)),
                format!("{}\n", k.trim()),
            ));
        }
    }
    if let Some(pem) = &answer.crl {
        let der = ibp_auth::trust::check_published_crl(pem, &ca_der).map_err(|e| {
            Failure::Unavailable(format!("the CA's revocation list is refused: {e}"))
        })?;
        files.push((
            out.join("ca").join(ibp_auth::trust::PUBLISHED_CRL_FILE),
            pem::encode(&pem::Pem::new("X509 CRL", der)),
        ));
    }
    let mut lines = vec![format!(
        "CA {} (SHA-256 {})",
        subject(&ca_der),
        fingerprint(&ca_der)
    )];
    for (path, text) in files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| local(format!("create {}: {e}", dir.display())))?;
        }
        write_atomic(&path, text.as_bytes(), 0o644)?;
        lines.push(format!("wrote {}", path.display()));
    }
    // Signing keys fetched before that the CA no longer publishes: a
    // retired or compromised key stops being trusted here.
    for (sub, keys) in [("lbone", &answer.lbone), ("metadata", &answer.metadata)] {
        for p in ibp_auth::trust::unpublished_key_files(&out.join(sub), keys) {
            std::fs::remove_file(&p).map_err(|e| local(format!("remove {}: {e}", p.display())))?;
            lines.push(format!("removed {} (no longer published)", p.display()));
        }
    }
    Ok(lines)
}

fn subject(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let fp = fingerprint(b"bytes");
        let want = parse_fingerprint(&fp).unwrap();
        for s in [
            fp.to_lowercase(),
            fp.replace(':', ""),
            format!("SHA256 Fingerprint={fp}"),
            format!("sha256:{}", fp.replace(':', "")),
        ] {
            assert_eq!(parse_fingerprint(&s), Some(want), "{s}");
        }
        assert!(parse_fingerprint("AB:CD").is_none());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn files_replace_keeps_mode_and_is_atomic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("server.key");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
