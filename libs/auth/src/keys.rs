//! Key pairs: ECDSA P-256 for certificates, Ed25519 for tokens; files for
//! secrets are written mode 0600.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

use crate::AuthError;

/// A fresh ECDSA P-256 key in PKCS#8 DER.
pub fn generate_ecdsa_p256() -> Result<Vec<u8>, AuthError> {
    let rng = SystemRandom::new();
    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| AuthError::Io("key generation failed".into()))
}

/// A fresh Ed25519 key in PKCS#8 DER (token signing).
pub fn generate_ed25519() -> Result<Vec<u8>, AuthError> {
    let rng = SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| AuthError::Io("key generation failed".into()))
}

/// SubjectPublicKeyInfo DER of an uncompressed P-256 point.
pub fn p256_spki(point: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        1, 2, 840, 10045, 2, 1,
                    ]));
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        1, 2, 840, 10045, 3, 1, 7,
                    ]));
            });
            w.next().write_bitvec_bytes(point, point.len() * 8);
        })
    })
}

/// A private key that can sign certificates (the issuer of a proxy).
pub enum SigningKey {
    EcdsaP256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl SigningKey {
    /// Loads a PKCS#8 key of any supported type.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, AuthError> {
        let rng = SystemRandom::new();
        if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
        {
            return Ok(SigningKey::EcdsaP256(k));
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Ok(SigningKey::Ed25519(k));
        }
        if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            return Ok(SigningKey::Rsa(k));
        }
        Err(AuthError::malformed(
            "private key",
            "not a PKCS#8 ECDSA P-256, Ed25519 or RSA key",
        ))
    }

    /// The X.509 signature algorithm, as DER of an AlgorithmIdentifier.
    pub fn algorithm_identifier(&self) -> Vec<u8> {
        use yasna::models::ObjectIdentifier as Oid;
        yasna::construct_der(|w| {
            w.write_sequence(|w| match self {
                SigningKey::EcdsaP256(_) => w
                    .next()
                    .write_oid(&Oid::from_slice(crate::oids::ECDSA_WITH_SHA256)),
                SigningKey::Ed25519(_) => w.next().write_oid(&Oid::from_slice(&[1, 3, 101, 112])),
                SigningKey::Rsa(_) => {
                    w.next()
                        .write_oid(&Oid::from_slice(&[1, 2, 840, 113549, 1, 1, 11]));
                    w.next().write_null();
                }
            })
        })
    }

    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let rng = SystemRandom::new();
        let fail = |_| AuthError::Io("signing failed".into());
        match self {
            SigningKey::EcdsaP256(k) => {
                k.sign(&rng, msg).map(|s| s.as_ref().to_vec()).map_err(fail)
            }
            SigningKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(fail)?;
                Ok(sig)
            }
        }
    }
}

/// Whether `sig` is a valid X.509-style signature of `msg` by the key in
/// a SubjectPublicKeyInfo (ECDSA P-256/SHA-256, Ed25519, RSA PKCS#1/SHA-256).
pub fn verify_with_spki(spki_der: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok((_, spki)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    let key = spki.subject_public_key.data.as_ref();
    let alg: &dyn signature::VerificationAlgorithm =
        match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.10045.2.1" => &signature::ECDSA_P256_SHA256_ASN1,
            "1.3.101.112" => &signature::ED25519,
            "1.2.840.113549.1.1.1" => &signature::RSA_PKCS1_2048_8192_SHA256,
            _ => return false,
        };
    signature::UnparsedPublicKey::new(alg, key)
        .verify(msg, sig)
        .is_ok()
}

use x509_parser::prelude::FromDer;

/// Writes a secret file with mode 0600 (replacing any previous file).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| AuthError::Io(format!("write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // An existing file keeps its mode on open: force it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// The public half of an Ed25519 PKCS#8 key.
pub fn ed25519_public(pkcs8: &[u8]) -> Result<[u8; 32], AuthError> {
    let k = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|_| AuthError::malformed("Ed25519 key", "not PKCS#8 Ed25519"))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(k.public_key().as_ref());
    Ok(out)
}

/// Text form of a token-signing public key: `ed25519 <base64>`.
pub fn format_public_key(key: &[u8; 32]) -> String {
    format!(
        "ed25519 {}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

pub fn parse_public_key(text: &str) -> Result<[u8; 32], AuthError> {
    let b64 = text
        .trim()
        .strip_prefix("ed25519 ")
        .ok_or_else(|| AuthError::malformed("public key file", "expected `ed25519 <base64>`"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| AuthError::malformed("public key file", e))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| AuthError::malformed("public key file", "not 32 bytes"))
}

/// Every `CERTIFICATE` block of a PEM file, in order.
pub fn read_certificates(
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, AuthError> {
    let text =
        std::fs::read(path).map_err(|e| AuthError::Io(format!("read {}: {e}", path.display())))?;
    let blocks = pem::parse_many(&text)
        .map_err(|e| AuthError::malformed("PEM file", format!("{}: {e}", path.display())))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| rustls_pki_types::CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(AuthError::malformed(
            "PEM file",
            format!("{}: no CERTIFICATE block", path.display()),
        ));
    }
    Ok(certs)
}

/// The PKCS#8 `PRIVATE KEY` block of a PEM file, without any check of the
/// file's mode: for a key that is not secret to this process. A service's
/// own TLS or CA key is read with [`read_private_key`].
pub fn read_pkcs8(path: &Path) -> Result<Vec<u8>, AuthError> {
    let text =
        std::fs::read(path).map_err(|e| AuthError::Io(format!("read {}: {e}", path.display())))?;
    pkcs8_from_pem(path, &text)
}

/// The PKCS#8 `PRIVATE KEY` block of a PEM file that must be readable by
/// its owner only: a file whose mode grants anything to group or others
/// (`mode & 0o077 != 0`) is refused with an error naming the file, its
/// mode and the `chmod 600` that fixes it. For TLS server keys, CA and
/// attribute-authority keys.
pub fn read_private_key(path: &Path) -> Result<Vec<u8>, AuthError> {
    let text = read_owner_only(path, "private key")?;
    pkcs8_from_pem(path, &text)
}

/// The contents of a secret file, refused when group or others have any
/// permission on it. The mode is taken from the opened file, so the bytes
/// read are those of the file that was checked.
pub fn read_owner_only(path: &Path, what: &str) -> Result<Vec<u8>, AuthError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| AuthError::Io(format!("read {what} {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mode = f.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::Io(format!(
            "{what} {} has mode {mode:03o}; it must be readable by its owner only (chmod 600 {})",
            path.display(),
            path.display()
        )));
    }
    let mut text = Vec::new();
    f.read_to_end(&mut text).map_err(io)?;
    Ok(text)
}

fn pkcs8_from_pem(path: &Path, text: &[u8]) -> Result<Vec<u8>, AuthError> {
    let blocks = pem::parse_many(text)
        .map_err(|e| AuthError::malformed("PEM file", format!("{}: {e}", path.display())))?;
    if let Some(b) = blocks.iter().find(|b| b.tag() == "PRIVATE KEY") {
        return Ok(b.contents().to_vec());
    }
    let why = match blocks.first() {
        Some(b) => format!(
            "{}: a {} block; convert the key to PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)",
            path.display(),
            b.tag()
        ),
        None => format!("{}: no PRIVATE KEY block", path.display()),
    };
    Err(AuthError::malformed("key file", why))
}

/// Loads an Ed25519 signing key (PKCS#8 PEM), refusing a file that anyone
/// but its owner may read.
pub fn load_signing_key(path: &Path) -> Result<Ed25519KeyPair, AuthError> {
    let der = pkcs8_from_pem(path, &read_owner_only(path, "signing key")?)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
        AuthError::malformed(
            "signing key",
            format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key_file(dir: &Path, mode: u32) -> (std::path::PathBuf, Vec<u8>) {
        let der = generate_ecdsa_p256().unwrap();
        let path = dir.join(format!("server-{mode:o}.key"));
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.clone()));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (path, der)
    }

    #[test]
    fn read_private_key_accepts_owner_only_files() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let (path, der) = key_file(dir.path(), mode);
            assert_eq!(read_private_key(&path).unwrap(), der, "mode {mode:o}");
        }
    }

    #[test]
    fn read_private_key_refuses_group_or_other_access() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o666] {
            let (path, _) = key_file(dir.path(), mode);
            let msg = read_private_key(&path).unwrap_err().to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("mode {mode:03o}")), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            // Without the check, the same file reads fine.
            assert!(read_pkcs8(&path).is_ok());
        }
        let (path, _) = key_file(dir.path(), 0o644);
        assert_eq!(
            read_private_key(&path).unwrap_err().to_string(),
            format!(
                "private key {p} has mode 644; it must be readable by its owner only (chmod 600 {p})",
                p = path.display()
            )
        );
    }

    #[test]
    fn read_private_key_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.key");
        let msg = read_private_key(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn read_private_key_still_wants_pkcs8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec.key");
        write_secret(
            &path,
            pem::encode(&pem::Pem::new("EC PRIVATE KEY", vec![1, 2, 3])).as_bytes(),
        )
        .unwrap();
        let msg = read_private_key(&path).unwrap_err().to_string();
        assert!(msg.contains("openssl pkcs8"), "{msg}");
    }

    #[test]
    fn load_signing_key_refuses_group_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lbone.key");
        let der = generate_ed25519().unwrap();
        write_secret(
            &path,
            pem::encode(&pem::Pem::new("PRIVATE KEY", der)).as_bytes(),
        )
        .unwrap();
        assert!(load_signing_key(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let msg = load_signing_key(&path).err().unwrap().to_string();
        assert!(msg.starts_with("signing key "), "{msg}");
        assert!(
            msg.contains("mode 640") && msg.contains("chmod 600"),
            "{msg}"
        );
    }
}
