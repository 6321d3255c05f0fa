//! The local users file: the embedded authenticator for demos and small
//! deployments. One user per line, `name:<argon2id PHC string>`; blank
//! lines and `#` comments are ignored. Written mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::SecureRandom;

/// Longest accepted password (bytes); argon2 itself has no practical limit.
pub const MAX_PASSWORD: usize = 1024;

/// Whether `name` can be a user name here (and in RADIUS, whose User-Name
/// holds 253 bytes).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name
            .chars()
            .any(|c| c.is_control() || c == ':' || c.is_whitespace())
}

/// An argon2id hash (PHC string) of `password` with a fresh salt.
pub fn hash_password(password: &[u8]) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

/// Parses the users file text into `(name, hash)` pairs.
fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.trim().to_string(), h.trim().to_string()))
        .collect()
}

/// Verified for unknown users, so that they take as long as known ones: an
/// argon2id hash (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$4PBKKgs2FPV7Lu94xKvKDg$v8Yxs3fVLCHjcUoxmWLPkZlH6hseb8TnBQlOKQ6BBpc";

#[derive(Debug)]
pub struct LocalUsers {
    path: PathBuf,
    /// Hash verified for unknown users, so that they take as long as known ones.
    dummy: String,
    /// Bounds simultaneous argon2 verifications (each takes 19 MiB and a CPU).
    slots: tokio::sync::Semaphore,
}

impl LocalUsers {
    pub fn new(path: PathBuf) -> anyhow::Result<LocalUsers> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(LocalUsers {
            path,
            dummy: DUMMY_HASH.to_string(),
            slots: tokio::sync::Semaphore::new(cpus),
        })
    }

    /// [`LocalUsers::verify`] on a blocking thread, a few at a time.
    pub async fn verify_async(
        self: &Arc<Self>,
        user: &str,
        password: &[u8],
    ) -> anyhow::Result<bool> {
        let _slot = self.slots.acquire().await?;
        let (me, user, password) = (self.clone(), user.to_string(), password.to_vec());
        tokio::task::spawn_blocking(move || me.verify(&user, &password)).await?
    }

    /// Whether `password` is right for `user` (CPU-heavy: call from a
    /// blocking thread). The file is read at every call.
    pub fn verify(&self, user: &str, password: &[u8]) -> anyhow::Result<bool> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context(format!("read {}", self.path.display())),
        };
        let entry = parse(&text).into_iter().find(|(u, _)| u == user);
        let (hash, known) = match &entry {
            Some((_, h)) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let parsed = match PasswordHash::new(hash) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(user, error = %e, file = %self.path.display(), "malformed hash in users file");
                bail!("malformed hash for a user in {}", self.path.display());
            }
        };
        let ok = Argon2::default().verify_password(password, &parsed).is_ok();
        Ok(ok && known)
    }
}

/// Adds or replaces `user` in the users file (mode 0600, replaced atomically).
pub fn set_user(path: &Path, user: &str, password: &[u8]) -> anyhow::Result<bool> {
    if !valid_user_name(user) {
        bail!("bad user name {user:?}: no spaces, colons or control characters, at most 253 bytes");
    }
    if password.is_empty() || password.len() > MAX_PASSWORD {
        bail!("the password must have 1 to {MAX_PASSWORD} bytes");
    }
    let hash = hash_password(password)?;
    edit(path, |users| {
        let existed = users.iter().any(|(u, _)| u == user);
        users.retain(|(u, _)| u != user);
        users.push((user.to_string(), hash.clone()));
        Ok(existed)
    })
}

/// Removes `user` from the users file.
pub fn remove_user(path: &Path, user: &str) -> anyhow::Result<()> {
    edit(path, |users| {
        let before = users.len();
        users.retain(|(u, _)| u != user);
        if users.len() == before {
            bail!("no user {user:?} in {}", path.display());
        }
        Ok(false)
    })
    .map(|_| ())
}

fn edit(
    path: &Path,
    f: impl FnOnce(&mut Vec<(String, String)>) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context(format!("read {}", path.display())),
    };
    let mut users = parse(&text);
    let r = f(&mut users)?;
    let mut out =
        String::from("# online-ca local users: name:argon2id-hash (online-ca admin user add)\n");
    for (u, h) in &users {
        out.push_str(&format!("{u}:{h}\n"));
    }
    let tmp = path.with_extension("tmp");
    ibp_auth::keys::write_secret(&tmp, out.as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_remove() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("users");
        assert!(!set_user(&f, "alice", b"wonderland").unwrap());
        assert!(set_user(&f, "alice", b"looking-glass").unwrap());
        set_user(&f, "bob", b"builder").unwrap();
        let lu = LocalUsers::new(f.clone()).unwrap();
        assert!(lu.verify("alice", b"looking-glass").unwrap());
        assert!(!lu.verify("alice", b"wonderland").unwrap());
        assert!(lu.verify("bob", b"builder").unwrap());
        assert!(!lu.verify("carol", b"builder").unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("alice:$argon2id$"), "{text}");
        remove_user(&f, "bob").unwrap();
        assert!(!lu.verify("bob", b"builder").unwrap());
        assert!(remove_user(&f, "bob").is_err());
        assert!(set_user(&f, "a:b", b"x").is_err());
    }
}
