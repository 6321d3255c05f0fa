//! `metadata-manager init --dir DIR`: the ticket-signing key, its public
//! half and a sample configuration.

use std::path::Path;

pub use ibp_service::signing_key::Initialized;
use ibp_service::signing_key::{self, Files};

use crate::config::sample;

pub const KEY_FILE: &str = "metadata.key";
pub const PUBLIC_FILE: &str = "metadata.pub";
pub const CONFIG_FILE: &str = "metadata.toml";

/// Creates `dir` if needed and writes `metadata.key` (PKCS#8 PEM, mode
/// 0600), `metadata.pub` (`ed25519 <base64>`) and, unless present,
/// `metadata.toml`. An existing key is kept unless `force`: replacing it
/// invalidates every ticket in circulation and every depot trust directory
/// holding the old `metadata.pub`.
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
        "depots trusting the old metadata.pub must then be updated",
    )?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use ring::signature::KeyPair;

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
        let key = ibp_auth::keys::load_signing_key(&dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(
            ibp_auth::keys::parse_public_key(&public)
                .unwrap()
                .as_slice(),
            key.public_key().as_ref()
        );
        assert!(init(dir.path(), false).is_err());
        let again = init(dir.path(), true).unwrap();
        assert!(!again.wrote_config);
        assert_ne!(again.public_key, public);
    }
}
