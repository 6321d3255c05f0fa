//! `init --dir DIR` of a service that signs (grants, tickets): an Ed25519
//! signing key, its public half and a sample configuration.

use std::path::Path;

use crate::Error;

/// The files `init` writes into its directory.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key: &'a str,
    /// Its public half (`ed25519 <base64>`).
    pub public: &'a str,
    /// The sample configuration (kept if present).
    pub config: &'a str,
}

/// What `init` wrote.
#[derive(Debug)]
pub struct Initialized {
    pub public_key: String,
    /// Whether a sample configuration was written (an existing one is kept).
    pub wrote_config: bool,
}

/// Creates `dir` if needed and writes the key, its public half and, unless
/// present, the configuration made by `sample` (given the directory's
/// absolute path). An existing key is kept unless `force`; the error then
/// says, in `replace_note`, what replacing it would invalidate.
pub fn init(
    dir: &Path,
    files: Files<'_>,
    sample: impl FnOnce(&Path) -> String,
    force: bool,
    replace_note: &str,
) -> Result<Initialized, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let key_path = dir.join(files.key);
    if key_path.exists() && !force {
        return Err(Error::KeyExists {
            path: key_path,
            note: replace_note.to_owned(),
        });
    }
    let pkcs8 = ibp_auth::keys::generate_ed25519().map_err(|source| Error::Key {
        what: "generate the signing key",
        source,
    })?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.clone()));
    ibp_auth::keys::write_secret(&key_path, pem.as_bytes()).map_err(|source| Error::Secret {
        path: key_path.clone(),
        source,
    })?;
    let public = ibp_auth::keys::format_public_key(
        &ibp_auth::keys::ed25519_public(&pkcs8).map_err(|source| Error::Key {
            what: "derive the public key",
            source,
        })?,
    );
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| Error::Io {
            what: "write",
            path: path.to_path_buf(),
            source,
        })
    };
    write(&dir.join(files.public), &public)?;
    let cfg_path = dir.join(files.config);
    let wrote_config = !cfg_path.exists();
    if wrote_config {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        write(&cfg_path, &sample(&abs))?;
    }
    Ok(Initialized {
        public_key: public,
        wrote_config,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use ring::signature::KeyPair;

    use super::*;

    const FILES: Files<'static> = Files {
        key: "svc.key",
        public: "svc.pub",
        config: "svc.toml",
    };

    #[test]
    fn writes_key_public_key_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let sample = |d: &Path| format!("dir = {:?}\n", d.display().to_string());
        let out = init(dir.path(), FILES, sample, false, "note").unwrap();
        assert!(out.wrote_config);
        let mode = std::fs::metadata(dir.path().join(FILES.key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = std::fs::read_to_string(dir.path().join(FILES.public)).unwrap();
        assert_eq!(public, out.public_key);
        let key = ibp_auth::keys::load_signing_key(&dir.path().join(FILES.key)).unwrap();
        assert_eq!(
            ibp_auth::keys::parse_public_key(&public)
                .unwrap()
                .as_slice(),
            key.public_key().as_ref()
        );
        let cfg = std::fs::read_to_string(dir.path().join(FILES.config)).unwrap();
        assert!(cfg.starts_with("dir = \"/"), "{cfg}");
        // A second init keeps the key unless forced, and keeps the config.
        let e = init(
            dir.path(),
            FILES,
            sample,
            false,
            "old svc.pub stops working",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("svc.key exists; give --force to replace the signing key (old svc.pub stops working)"),
            "{e}"
        );
        let again = init(dir.path(), FILES, |_| unreachable!(), true, "note").unwrap();
        assert!(!again.wrote_config);
        assert_ne!(again.public_key, public);
    }
}
