//! `lbone init --dir DIR`: the grant-signing key, its public half and a
//! sample configuration.

use std::path::Path;

pub use ibp_service::signing_key::Initialized;
use ibp_service::signing_key::{self, Files};

use crate::config::sample;

/// File names written into the directory.
pub const KEY_FILE: &str = "lbone.key";
pub const PUBLIC_FILE: &str = "lbone.pub";
pub const CONFIG_FILE: &str = "lbone.toml";

/// Creates `dir` if needed and writes `lbone.key` (PKCS#8 PEM, mode 0600),
/// `lbone.pub` (`ed25519 <base64>`) and, unless present, `lbone.toml`.
/// An existing key is kept unless `force`: replacing it invalidates every
/// grant in circulation and every trust directory that holds `lbone.pub`.
pub fn init(dir: &Path, force: bool) -> anyhow::Result<Initialized> {
    let files = Files {
        key: KEY_FILE,
        public: PUBLIC_FILE,
        config: CONFIG_FILE,
    };
    Ok(signing_key::init(
        dir,
        files,
        sample,
        force,
        "trust directories holding the old lbone.pub must then be updated",
    )?)
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
