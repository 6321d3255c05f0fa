//! `lbone init --dir DIR`: the grant-signing key, its public half and a
//! sample configuration.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::sample;

/// File names written into the directory.
pub const KEY_FILE: &str = "lbone.key";
pub const PUBLIC_FILE: &str = "lbone.pub";
pub const CONFIG_FILE: &str = "lbone.toml";

/// What `init` wrote.
#[derive(Debug)]
pub struct Initialized {
    pub public_key: String,
    /// Whether a sample configuration was written (an existing one is kept).
    pub wrote_config: bool,
}

/// Creates `dir` if needed and writes `lbone.key` (PKCS#8 PEM, mode 0600),
/// `lbone.pub` (`ed25519 <base64>`) and, unless present, `lbone.toml`.
/// An existing key is kept unless `force`: replacing it invalidates every
/// grant in circulation and every trust directory that holds `lbone.pub`.
pub fn init(dir: &Path, force: bool) -> anyhow::Result<Initialized> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key_path = dir.join(KEY_FILE);
    if key_path.exists() && !force {
        bail!(
            "{} exists; give --force to replace the signing key (trust directories holding the old lbone.pub must then be updated)",
            key_path.display()
        );
    }
    let pkcs8 = ibp_auth::keys::generate_ed25519().context("generate the signing key")?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.clone()));
    ibp_auth::keys::write_secret(&key_path, pem.as_bytes())
        .with_context(|| format!("write {}", key_path.display()))?;
    let public = ibp_auth::keys::format_public_key(
        &ibp_auth::keys::ed25519_public(&pkcs8).context("derive the public key")?,
    );
    let pub_path = dir.join(PUBLIC_FILE);
    std::fs::write(&pub_path, &public).with_context(|| format!("write {}", pub_path.display()))?;
    let cfg_path = dir.join(CONFIG_FILE);
    let wrote_config = !cfg_path.exists();
    if wrote_config {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        std::fs::write(&cfg_path, sample(&abs))
            .with_context(|| format!("write {}", cfg_path.display()))?;
    }
    Ok(Initialized {
        public_key: public,
        wrote_config,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_key_public_key_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let out = init(dir.path(), false).unwrap();
        assert!(out.wrote_config);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_FILE)).unwrap();
        assert!(ibp_auth::keys::parse_public_key(&public).is_ok());
        let key = ibp_auth::keys::load_signing_key(&dir.path().join(KEY_FILE)).unwrap();
        use ring::signature::KeyPair;
        assert_eq!(
            ibp_auth::keys::parse_public_key(&public)
                .unwrap()
                .as_slice(),
            key.public_key().as_ref()
        );
        // A second init keeps the key unless forced.
        assert!(init(dir.path(), false).is_err());
        let again = init(dir.path(), true).unwrap();
        assert!(!again.wrote_config);
        assert_ne!(again.public_key, public);
    }
}
