//! A client trust directory written from the online CA's `GET /v1/trust`
//! (`lors trust fetch`).
//!
//! The first contact has nothing to authenticate the CA's server with, so
//! the CA certificate is pinned by its SHA-256 fingerprint, compared out of
//! band (the CA operator reads it from `ca.pem`):
//! 1. `GET /v1/trust` without checking the server (the answer is only a
//!    candidate); the CA certificate in it whose fingerprint is the one
//!    given is kept, every other certificate of the bundle dropped.
//! 2. `GET /v1/trust` again, this time authenticating the server against
//!    that CA alone: the answer written is this second one, so the AA
//!    certificates come from a server the pinned CA vouches for. The two
//!    answers must agree.
//!
//! Without a fingerprint nothing is written: the fingerprint is printed for
//! the user to check. With `--ca-cert FILE` (a CA the user already has)
//! only step 2 runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ibp_auth::TrustStore;
use ibp_https::{BaseUrl, Client};
use serde::Deserialize;

use crate::credentials::Error;

/// Largest `/v1/trust` answer accepted.
const MAX_ANSWER: usize = 1 << 20;

/// What `GET /v1/trust` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct TrustAnswer {
    ca: String,
    #[serde(default)]
    aa: BTreeMap<String, String>,
    #[serde(default)]
    lbone: Vec<String>,
    #[serde(default)]
    metadata: Vec<String>,
    /// The CA's revocation list (PEM); absent from older CAs.
    #[serde(default)]
    crl: Option<String>,
}

/// A trust directory's content, authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedTrust {
    /// DER of the CA certificate (the one pinned).
    pub ca_der: Vec<u8>,
    /// Its SHA-256 fingerprint, `AB:CD:...`.
    pub fingerprint: String,
    /// Per VO: the AA certificates (PEM, as the CA serves them).
    pub aa: BTreeMap<String, String>,
    /// The L-Bone's grant-signing keys (`ed25519 <base64>`).
    pub lbone: Vec<String>,
    /// The metadata managers' signing keys (tickets, signed exNodes).
    pub metadata: Vec<String>,
    /// The CA's revocation list (DER), signature checked.
    pub crl: Option<Vec<u8>>,
}

/// How the CA's server is authenticated.
pub enum Pin {
    /// The CA certificate's SHA-256 fingerprint (any common spelling).
    Fingerprint(String),
    /// CA certificates the user already has (PEM DER list).
    CaCertificates(Vec<Vec<u8>>),
    /// Nothing: fetch, and report the fingerprint without trusting it.
    Nothing,
}

/// The outcome of [`fetch`].
#[derive(Debug)]
pub enum Fetched {
    /// Authenticated content, ready to write.
    Trusted(FetchedTrust),
    /// No pin given: the fingerprints (with subjects) the server offered.
    Unpinned(Vec<(String, String)>),
}

/// `AB:CD:...` SHA-256 of `der`, as `openssl x509 -fingerprint -sha256`
/// prints it.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fingerprint as 32 bytes: hex, with or without colons or spaces,
/// either case, optionally prefixed `sha256:` / `SHA256 Fingerprint=`.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], Error> {
    let s = s.trim();
    let s = s.rsplit_once('=').map_or(s, |(_, v)| v);
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':' && *c != ' ').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex, &mut out).map_err(|_| {
        Error::Usage(format!(
            "--fingerprint must be a SHA-256 fingerprint (64 hex digits, colons allowed), not {s:?}"
        ))
    })?;
    Ok(out)
}

fn subject_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "(unparsable certificate)".into())
}

/// Fetches the CA's trust bundle from `url`, authenticated as `pin` says.
pub async fn fetch(url: &str, pin: &Pin) -> Result<Fetched, Error> {
    let base = BaseUrl::parse(url)?;
    let anchors: Vec<Vec<u8>> = match pin {
        Pin::CaCertificates(ders) => ders.clone(),
        Pin::Fingerprint(_) | Pin::Nothing => {
            let first = get_trust(unverified_client(base.clone())?).await?;
            let ders = ibp_auth::trust::pem_certificates(first.ca.as_bytes()).map_err(|e| {
                Error::Unavailable(format!(
                    "the online CA at {url}: its /v1/trust \"ca\" is not PEM: {e}"
                ))
            })?;
            let want = match pin {
                Pin::Fingerprint(f) => parse_fingerprint(f)?,
                _ => {
                    return Ok(Fetched::Unpinned(
                        ders.iter()
                            .map(|d| (fingerprint(d), subject_of(d)))
                            .collect(),
                    ))
                }
            };
            let matching: Vec<Vec<u8>> = ders
                .into_iter()
                .filter(|d| {
                    let got = ring::digest::digest(&ring::digest::SHA256, d);
                    // Public data, but compared as a pin should be.
                    bool::from(subtle::ConstantTimeEq::ct_eq(got.as_ref(), &want[..]))
                })
                .collect();
            if matching.is_empty() {
                return Err(Error::Refused(format!(
                    "the online CA at {url} serves no CA certificate with fingerprint {}: \
                     nothing written (someone in between, or the wrong fingerprint)",
                    hex_colons(&want)
                )));
            }
            matching
        }
    };
    let mut trust = TrustStore::new();
    for der in &anchors {
        trust
            .add_ca(der.clone())
            .map_err(|e| Error::Usage(format!("not a usable CA certificate: {e}")))?;
    }
    let tls = ibp_auth::tls::client_config(&trust, None)
        .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
    // Authenticated by the pinned CA from here on.
    let answer = get_trust(Client::new(base, tls, false).with_service_name("online CA")).await?;
    let served = ibp_auth::trust::pem_certificates(answer.ca.as_bytes()).map_err(|e| {
        Error::Unavailable(format!(
            "the online CA at {url}: its /v1/trust \"ca\" is not PEM: {e}"
        ))
    })?;
    let Some(ca_der) = served.into_iter().find(|d| anchors.contains(d)) else {
        return Err(Error::Refused(format!(
            "the online CA at {url} no longer serves the pinned CA certificate"
        )));
    };
    for (vo, pem) in &answer.aa {
        check_vo_name(vo)?;
        ibp_auth::trust::pem_certificates(pem.as_bytes()).map_err(|e| {
            Error::Unavailable(format!(
                "the online CA at {url}: the AA certificate of VO {vo} is not PEM: {e}"
            ))
        })?;
    }
    for k in answer.lbone.iter().chain(&answer.metadata) {
        ibp_auth::keys::parse_public_key(k).map_err(|e| {
            Error::Unavailable(format!(
                "the online CA at {url}: a signing key it publishes is not one: {e}"
            ))
        })?;
    }
    let crl = answer
        .crl
        .as_deref()
        .map(|pem| {
            ibp_auth::trust::check_published_crl(pem, &ca_der).map_err(|e| {
                Error::Unavailable(format!(
                    "the online CA at {url}: its revocation list is refused: {e}"
                ))
            })
        })
        .transpose()?;
    Ok(Fetched::Trusted(FetchedTrust {
        crl,
        fingerprint: fingerprint(&ca_der),
        ca_der,
        aa: answer.aa,
        lbone: answer.lbone,
        metadata: answer.metadata,
    }))
}

fn hex_colons(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A VO name usable as a directory name.
fn check_vo_name(vo: &str) -> Result<(), Error> {
    let ok = !vo.is_empty()
        && vo.len() <= 128
        && !vo.starts_with('.')
        && vo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "the online CA names a VO {vo:?} that cannot be a directory name: nothing written"
        )))
    }
}

async fn get_trust(client: Client) -> Result<TrustAnswer, Error> {
    let r = client.get("/v1/trust").await?;
    if !r.is_success() {
        return Err(Error::Unavailable(format!(
            "the online CA at {}: /v1/trust answered {}",
            client.url(),
            r.error_message(200)
        )));
    }
    if r.body.len() > MAX_ANSWER {
        return Err(Error::Unavailable(format!(
            "the online CA at {}: /v1/trust answer larger than {MAX_ANSWER} bytes",
            client.url()
        )));
    }
    r.json().map_err(|e| {
        Error::Unavailable(format!(
            "the online CA at {}: unreadable /v1/trust answer: {e}",
            client.url()
        ))
    })
}

/// A client that accepts any server certificate (still checking the
/// handshake signatures): only for step 1, whose answer is trusted only
/// through the pinned fingerprint.
fn unverified_client(base: BaseUrl) -> Result<Client, Error> {
    let tls = ibp_auth::tls::unverified_server_config()
        .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
    Ok(Client::new(base, tls, false).with_service_name("online CA"))
}

/// What [`write`] did.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Signing keys fetched before that the CA no longer publishes.
    pub removed: Vec<PathBuf>,
}

/// Writes `t` into the trust directory `dir`: `ca/ca.pem`,
/// `vomsdir/<vo>/aa.pem`, and the published signing keys as
/// `lbone/ca-<n>.pub` and `metadata/ca-<n>.pub` (named by a hash of the
/// key, so a key fetched twice is one file), each atomically; other files
/// (other CAs, keys placed by hand) are left alone. A different `ca/ca.pem` already
/// there is replaced only with `force` (it would change whom every command
/// trusts).
pub fn write(dir: &Path, t: &FetchedTrust, force: bool) -> Result<Written, Error> {
    let ca_path = dir.join("ca").join("ca.pem");
    let ca_pem = pem_encode(&t.ca_der);
    if !force {
        if let Ok(old) = std::fs::read(&ca_path) {
            let same = ibp_auth::trust::pem_certificates(&old)
                .map(|ders| ders == [t.ca_der.clone()])
                .unwrap_or(false);
            if !same {
                return Err(Error::Conflict(format!(
                    "{} holds another CA certificate; give --force to replace it",
                    ca_path.display()
                )));
            }
        }
    }
    let mut out = Written::default();
    write_public(&ca_path, ca_pem.as_bytes())?;
    out.files.push(ca_path);
    for (vo, pem) in &t.aa {
        check_vo_name(vo)?;
        let p = dir.join("vomsdir").join(vo).join("aa.pem");
        write_public(&p, pem.as_bytes())?;
        out.files.push(p);
    }
    for (sub, keys) in [("lbone", &t.lbone), ("metadata", &t.metadata)] {
        for k in keys {
            let p = dir.join(sub).join(key_file_name(k));
            write_public(&p, format!("{}\n", k.trim()).as_bytes())?;
            out.files.push(p);
        }
        // Keys fetched before that the CA no longer publishes.
        for p in ibp_auth::trust::unpublished_key_files(&dir.join(sub), keys) {
            std::fs::remove_file(&p)
                .map_err(|e| Error::Local(format!("cannot remove {}: {e}", p.display())))?;
            out.removed.push(p);
        }
    }
    // The revocation list replaces the last one fetched (a CA that
    // publishes none leaves it alone).
    if let Some(der) = &t.crl {
        let p = dir.join("ca").join(CRL_FILE);
        write_public(
            &p,
            pem::encode(&pem::Pem::new("X509 CRL", der.clone())).as_bytes(),
        )?;
        out.files.push(p);
    }
    Ok(out)
}

pub use ibp_auth::trust::published_key_file_name as key_file_name;
pub use ibp_auth::trust::PUBLISHED_CRL_FILE as CRL_FILE;

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// Writes `bytes` to `path` through a temporary file and a rename, the
/// directories made as needed.
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::Local(format!("cannot create {}: {e}", parent.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .map_err(|e| Error::Local(format!("cannot write in {}: {e}", parent.display())))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::Local(format!("cannot set the mode of {}: {e}", path.display())))?;
    }
    tmp.persist(path)
        .map_err(|e| Error::Local(format!("cannot write {}: {}", path.display(), e.error)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_common_spelling() {
        let der = b"not a certificate, only bytes to hash";
        let fp = fingerprint(der);
        assert_eq!(fp.len(), 32 * 3 - 1);
        let want = parse_fingerprint(&fp).unwrap();
        for s in [
            fp.clone(),
            fp.to_lowercase(),
            fp.replace(':', ""),
            format!("sha256:{}", fp.replace(':', "").to_lowercase()),
            format!("SHA256 Fingerprint={fp}"),
        ] {
            assert_eq!(parse_fingerprint(&s).unwrap(), want, "{s}");
        }
        for bad in ["", "AB:CD", &fp[..fp.len() - 3], "zz"] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vo_names_that_escape_the_directory_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "vo 1", "vö"] {
            assert!(check_vo_name(bad).is_err(), "{bad}");
        }
        for good in ["vo1", "cms.example", "my-vo_2"] {
            assert!(check_vo_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_different_ca_is_not_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let t = |der: &[u8]| FetchedTrust {
            ca_der: der.to_vec(),
            fingerprint: fingerprint(der),
            aa: BTreeMap::from([("vo1".to_owned(), "AA PEM\n".to_owned())]),
            lbone: vec!["ed25519 LBONEKEY".to_owned()],
            metadata: vec!["ed25519 MDMKEY".to_owned()],
            crl: Some(b"CRL".to_vec()),
        };
        // A key fetched before that the CA no longer publishes goes; a
        // key placed by hand stays.
        let retired = dir
            .path()
            .join("lbone")
            .join(key_file_name("ed25519 RETIRED"));
        let by_hand = dir.path().join("lbone").join("site.pub");
        std::fs::create_dir_all(dir.path().join("lbone")).unwrap();
        std::fs::write(&retired, "ed25519 RETIRED\n").unwrap();
        std::fs::write(&by_hand, "ed25519 BYHAND\n").unwrap();
        let w = write(dir.path(), &t(b"first"), false).unwrap();
        assert_eq!(w.files.len(), 5);
        assert_eq!(w.removed, std::slice::from_ref(&retired));
        assert!(!retired.exists() && by_hand.exists());
        let crl = std::fs::read(dir.path().join("ca").join(CRL_FILE)).unwrap();
        assert_eq!(
            pem::parse(&crl).unwrap().into_contents(),
            b"CRL",
            "the list, as PEM"
        );
        let mdm = dir
            .path()
            .join("metadata")
            .join(key_file_name("ed25519 MDMKEY"));
        assert_eq!(std::fs::read_to_string(mdm).unwrap(), "ed25519 MDMKEY\n");
        assert!(dir
            .path()
            .join("lbone")
            .join(key_file_name("ed25519 LBONEKEY"))
            .is_file());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vomsdir/vo1/aa.pem")).unwrap(),
            "AA PEM\n"
        );
        // The same CA again: fine.
        write(dir.path(), &t(b"first"), false).unwrap();
        let e = write(dir.path(), &t(b"second"), false).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        let pem = std::fs::read(dir.path().join("ca/ca.pem")).unwrap();
        assert_eq!(
            ibp_auth::trust::pem_certificates(&pem).unwrap(),
            vec![b"first".to_vec()]
        );
        write(dir.path(), &t(b"second"), true).unwrap();
        let pem = std::fs::read(dir.path().join("ca/ca.pem")).unwrap();
        assert_eq!(
            ibp_auth::trust::pem_certificates(&pem).unwrap(),
            vec![b"second".to_vec()]
        );
    }
}
