//! Key-wrapping keys and sharing: the user's X25519 key file, its
//! registration at the metadata manager, wrapping a file's data key for the
//! readers of an upload, unwrapping one's own, sharing a file with another
//! user (wrapped key + ACL entry) and taking it back, and the VO escrow
//! key's recovery. See `docs/lors.md`, "Keys and sharing".
//!
//! The constructions are in [`crate::crypto`]; this module adds the files
//! and the calls to the metadata manager.

use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::credentials::Error;
use crate::crypto::{self, CryptoError, DataKey, KeyPair, PublicKey, WrapContext};
use crate::metadata::{self, AclEntry, FileVersion, MetadataClient, Rights, Whoami, WrappedKey};

/// Environment variable naming the key file.
pub const KEY_FILE_ENV: &str = "LORS_KEY_FILE";

/// The key file: `$LORS_KEY_FILE`, else `key.pem` in the configuration
/// directory (`$XDG_CONFIG_HOME/lors`, else `~/.config/lors`), else
/// `lors-key.pem` in the current directory (no home directory at all).
pub fn default_key_path() -> PathBuf {
    if let Some(p) = std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    match crate::config::config_dir() {
        Some(d) => d.join("key.pem"),
        None => PathBuf::from("lors-key.pem"),
    }
}

fn local(e: CryptoError) -> Error {
    Error::Local(e.to_string())
}

/// What [`init`] did.
#[derive(Debug, Clone, Serialize)]
pub struct InitOutcome {
    /// The key file.
    pub path: PathBuf,
    /// `x25519 <base64>`, now registered at the metadata manager.
    pub public_key: String,
    /// A new key was made (false: the existing file's key was registered
    /// again).
    pub created: bool,
    /// With `force`, where the replaced key file was moved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_file: Option<PathBuf>,
    /// The key the metadata manager had before, if another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_registered: Option<String>,
}

/// Makes the key file and registers its public key.
///
/// - No file at `path`: a new key pair is written there (mode 0600, the
///   directory created if missing) and registered.
/// - A file and no `force`: its key is registered again (idempotent;
///   nothing is written). A file that does not hold a key is an error.
/// - A file and `force`: it is renamed to `PATH.old-<unix time>` and a new
///   key made. Versions wrapped for the old key can then be unwrapped only
///   with the old file.
///
/// The file is written before the key is registered, so a failed
/// registration is completed by running `init` again.
pub async fn init(mdm: &MetadataClient, path: &Path, force: bool) -> Result<InitOutcome, Error> {
    let before = mdm.whoami().await?;
    let file = prepare_key_file(path, force)?;
    let text = file.pair.public().to_text();
    mdm.register_key(&text).await?;
    // A multi-VO proxy: the same key for the member in each of its VOs.
    for vo in &before.other_vos {
        mdm.register_key_in(vo, &text).await?;
    }
    let replaced_registered = before.public_key.filter(|k| {
        PublicKey::parse(k)
            .map(|p| p != *file.pair.public())
            .unwrap_or(true)
    });
    Ok(InitOutcome {
        path: path.to_path_buf(),
        public_key: text,
        created: file.created,
        previous_file: file.previous_file,
        replaced_registered,
    })
}

/// The key file [`prepare_key_file`] read or made.
#[derive(Debug)]
pub struct KeyFile {
    pub pair: KeyPair,
    /// A new key was written (false: the existing file was read).
    pub created: bool,
    /// With `force`, where the replaced file went.
    pub previous_file: Option<PathBuf>,
}

/// The file part of [`init`] (no registration): reads the key at `path`
/// if there is one and not `force`; else moves an existing file aside to
/// `PATH.old-<unix time>`, and writes a new key pair (mode 0600, parent
/// directories created with mode 0700).
pub fn prepare_key_file(path: &Path, force: bool) -> Result<KeyFile, Error> {
    let exists = std::fs::symlink_metadata(path).is_ok();
    if exists && !force {
        return Ok(KeyFile {
            pair: load(path)?,
            created: false,
            previous_file: None,
        });
    }
    let mut previous_file = None;
    if exists {
        let old = PathBuf::from(format!("{}.old-{}", path.display(), ibp_auth::unix_now()));
        if std::fs::symlink_metadata(&old).is_ok() {
            return Err(Error::Local(format!(
                "{} exists already: try again in a second",
                old.display()
            )));
        }
        std::fs::rename(path, &old).map_err(|e| {
            Error::Local(format!(
                "cannot move the old key file {} aside: {e}",
                path.display()
            ))
        })?;
        previous_file = Some(old);
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let pair = KeyPair::generate().map_err(local)?;
    crypto::write_private_key(path, &pair).map_err(local)?;
    Ok(KeyFile {
        pair,
        created: true,
        previous_file,
    })
}

/// Creates `dir` (and parents) with mode 0700 where missing.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::Local(format!("cannot create {}: {e}", dir.display())))
}

/// Reads the key file (mode 0600 required).
pub fn load(path: &Path) -> Result<KeyPair, Error> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "no key file at {}: run `lors keys init` to make one (or give --key FILE, \
                 or set {KEY_FILE_ENV})",
                path.display()
            )))
        }
        _ => {}
    }
    crypto::read_private_key(path).map_err(|e| match e {
        CryptoError::Io(m) => Error::Local(m),
        other => Error::Local(format!("key file {}: {other}", path.display())),
    })
}

/// Whether the metadata manager's registered key (`whoami.public_key`) is
/// `me`'s; an error telling to run `lors keys init` if not.
pub fn check_registered(me: &KeyPair, whoami: &Whoami) -> Result<(), Error> {
    let Some(text) = whoami.public_key.as_deref() else {
        return Err(Error::Usage(format!(
            "the metadata manager has no public key for {}: run `lors keys init`",
            whoami.principal
        )));
    };
    match PublicKey::parse(text) {
        Ok(k) if k == *me.public() => Ok(()),
        _ => Err(Error::Usage(format!(
            "the metadata manager has another public key for {} than your key file's: \
             run `lors keys init` to register this one (files wrapped for the other key \
             need the key file that goes with it)",
            whoami.principal
        ))),
    }
}

/// The recipients of an upload's data key: the writer (`whoami.principal`,
/// whose registered key must be `me`'s) and the escrow key of the writer's
/// VO (`escrow:VO`) if one is set.
pub async fn upload_recipients(
    mdm: &MetadataClient,
    me: &KeyPair,
    whoami: &Whoami,
) -> Result<Vec<(String, PublicKey)>, Error> {
    check_registered(me, whoami)?;
    let mut out = vec![(whoami.principal.clone(), *me.public())];
    let escrow = format!("escrow:{}", whoami.vo);
    match mdm.lookup_key(&escrow).await {
        Ok(k) => {
            let key = PublicKey::parse(&k.public_key).map_err(|e| {
                Error::Unavailable(format!(
                    "the metadata manager's escrow key of VO {}: {e}",
                    whoami.vo
                ))
            })?;
            out.push((escrow, key));
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// `key` wrapped for each recipient under `ctx`.
pub fn wrap_for(
    key: &DataKey,
    ctx: &WrapContext<'_>,
    recipients: &[(String, PublicKey)],
) -> Result<Vec<WrappedKey>, Error> {
    recipients
        .iter()
        .map(|(r, k)| {
            let wrapped = crypto::wrap(key, k, ctx)
                .map_err(|e| Error::Local(format!("cannot wrap the data key for {r}: {e}")))?;
            Ok(WrappedKey {
                recipient: r.clone(),
                wrapped,
            })
        })
        .collect()
}

/// The file UUID and key id a version's keys are bound to.
fn context_of(fv: &FileVersion) -> Result<(Uuid, String), Error> {
    let what = || format!("version {} of {}", fv.version, fv.path);
    let Some(enc) = &fv.exnode.encryption else {
        return Err(Error::Usage(format!("{} is not encrypted", what())));
    };
    if let Some(k) = &fv.key_id {
        if *k != enc.key_id {
            return Err(Error::Data(format!(
                "{}: the metadata manager's key id differs from the exNode's",
                what()
            )));
        }
    }
    let file = match fv.exnode.file {
        Some(u) => u,
        None => Uuid::parse_str(&fv.id)
            .map_err(|_| Error::Data(format!("{}: the exNode has no file UUID", what())))?,
    };
    Ok((file, enc.key_id.clone()))
}

/// The data key of a version, unwrapped with `me`: an error if the
/// version is not encrypted, if no key is wrapped for the caller, or if
/// `me` cannot unwrap it (another key file than the one it was wrapped
/// for).
pub fn unwrap_mine(me: &KeyPair, fv: &FileVersion) -> Result<DataKey, Error> {
    let (file, key_id) = context_of(fv)?;
    let Some(wrapped) = &fv.wrapped_key else {
        return Err(Error::Forbidden(format!(
            "version {} of {} has no data key wrapped for you: ask its owner to \
             `lors share` it with you",
            fv.version, fv.path
        )));
    };
    let ctx = WrapContext {
        file,
        key_id: &key_id,
    };
    crypto::unwrap(wrapped, me, &ctx).map_err(|e| match e {
        CryptoError::Unwrap => Error::Data(format!(
            "cannot unwrap the data key of version {} of {} with your key file: it was \
             wrapped for another key (did you run `lors keys init --force`? the old key \
             file is kept as key.pem.old-*), or altered",
            fv.version, fv.path
        )),
        other => Error::Data(format!(
            "the data key of version {} of {}: {other}",
            fv.version, fv.path
        )),
    })
}

/// What [`share`] did for one version.
#[derive(Debug, Clone, Serialize)]
pub struct SharedVersion {
    pub version: u64,
    /// A wrapped key was added (false: the version is not encrypted).
    pub key_added: bool,
}

/// What [`share`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ShareOutcome {
    pub path: String,
    pub recipient: String,
    /// The recipient's rights in the access ACL now.
    pub rights: String,
    pub versions: Vec<SharedVersion>,
    /// Versions skipped: deleted meanwhile, or no key of them wrapped for
    /// the caller (with why).
    pub skipped: Vec<(u64, String)>,
}

/// Checks a share recipient: `user:ID@VO`.
fn check_user(recipient: &str) -> Result<(), Error> {
    metadata::check_principal(recipient).map_err(Error::Usage)?;
    if !recipient.starts_with("user:") {
        return Err(Error::Usage(format!(
            "{recipient}: keys are wrapped for users: give user:ID@VO (groups and VOs \
             get rights with `lors acl set`, but each member needs a key)"
        )));
    }
    Ok(())
}

/// Shares a file with `recipient` (`user:ID@VO`): for every version of the
/// file the caller can read a key of (1 to the current one; deleted
/// versions are skipped), unwraps the caller's data key, wraps it for the
/// recipient's registered public key and adds it; then adds `rights`
/// (`rwda` letters, typically `r`) to the recipient's entry in the file's
/// access ACL (merged with the rights already there). Needs the admin
/// right on the file. Versions made later are not shared automatically:
/// share again after an upload.
pub async fn share(
    mdm: &MetadataClient,
    me: &KeyPair,
    path: &str,
    recipient: &str,
    rights: &str,
) -> Result<ShareOutcome, Error> {
    check_user(recipient)?;
    let rights: Rights = rights.parse().map_err(Error::Usage)?;
    if rights.is_empty() {
        return Err(Error::Usage(
            "share with some rights (e.g. r): to take rights away use `lors unshare` or \
             `lors acl set`"
                .into(),
        ));
    }
    // Needs admin: fails early without it.
    let acl = mdm.acl_get(path).await?;
    let their = mdm.lookup_key(recipient).await?;
    let their_key = PublicKey::parse(&their.public_key).map_err(|e| {
        Error::Unavailable(format!(
            "the metadata manager's public key of {recipient}: {e}"
        ))
    })?;
    let current = mdm.get(path, None).await?;
    let mut versions = Vec::new();
    let mut skipped = Vec::new();
    // One unwrap per key id: maintenance versions keep their upload's key.
    let mut keys: Vec<(String, DataKey)> = Vec::new();
    for v in 1..=current.current_version {
        let fv = if v == current.version {
            current.clone()
        } else {
            match mdm.get(path, Some(v)).await {
                Ok(fv) => fv,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        };
        if fv.exnode.encryption.is_none() {
            versions.push(SharedVersion {
                version: v,
                key_added: false,
            });
            continue;
        }
        let (file, key_id) = context_of(&fv)?;
        let key = match keys.iter().find(|(id, _)| *id == key_id) {
            Some((_, k)) => k.clone(),
            None => match unwrap_mine(me, &fv) {
                Ok(k) => {
                    keys.push((key_id.clone(), k.clone()));
                    k
                }
                // Not ours to share; the current version must be.
                Err(e @ Error::Forbidden(_)) if v != current.current_version => {
                    skipped.push((v, e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let ctx = WrapContext {
            file,
            key_id: &key_id,
        };
        let wrapped = crypto::wrap(&key, &their_key, &ctx)
            .map_err(|e| Error::Local(format!("cannot wrap the data key for {recipient}: {e}")))?;
        mdm.add_key(path, Some(v), recipient, &wrapped).await?;
        versions.push(SharedVersion {
            version: v,
            key_added: true,
        });
    }
    let mut access = acl.access.clone();
    let merged = match access.iter_mut().find(|e| e.principal == recipient) {
        Some(e) => {
            let old: Rights = e.rights.parse().map_err(|m| {
                Error::Unavailable(format!(
                    "the metadata manager's ACL of {path} has an entry with {m}"
                ))
            })?;
            let both = merge(old, rights);
            e.rights = both.to_string();
            both
        }
        None => {
            access.push(AclEntry {
                principal: recipient.to_owned(),
                rights: rights.to_string(),
            });
            rights
        }
    };
    if access != acl.access {
        mdm.acl_set(path, Some(&access), None).await?;
    }
    Ok(ShareOutcome {
        path: current.answer.path,
        recipient: recipient.to_owned(),
        rights: merged.to_string(),
        versions,
        skipped,
    })
}

/// The union of two rights.
fn merge(a: Rights, b: Rights) -> Rights {
    let letters: String = [
        (Rights::READ, 'r'),
        (Rights::WRITE, 'w'),
        (Rights::DELETE, 'd'),
        (Rights::ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| a.contains(*bit) || b.contains(*bit))
    .map(|(_, c)| *c)
    .collect();
    if letters.is_empty() {
        return Rights::NONE;
    }
    // Distinct letters of rwda: always parses.
    letters.parse().unwrap_or(b)
}

/// What [`unshare`] did.
#[derive(Debug, Clone, Serialize)]
pub struct UnshareOutcome {
    pub path: String,
    pub recipient: String,
    /// The recipient's own entry was in the access ACL and is gone.
    pub acl_entry_removed: bool,
    /// Wrapped keys removed (one per version).
    pub keys_removed: u64,
    /// Group and VO entries of the ACL that may still grant the recipient
    /// rights (the recipient's memberships are not known here).
    pub other_entries: Vec<String>,
}

/// Takes a share back: removes `recipient`'s entry from the file's access
/// ACL and every data key wrapped for them (all versions). Refuses the
/// file's owner and the caller. See the limits in `docs/lors.md`: a key
/// already unwrapped stays known to its reader.
pub async fn unshare(
    mdm: &MetadataClient,
    path: &str,
    recipient: &str,
) -> Result<UnshareOutcome, Error> {
    check_user(recipient)?;
    let acl = mdm.acl_get(path).await?;
    if acl.owner.as_deref() == Some(recipient) {
        return Err(Error::Usage(format!(
            "{recipient} owns {path}: the owner's rights and key cannot be taken away"
        )));
    }
    let me = mdm.whoami().await?;
    if me.principal == recipient {
        return Err(Error::Usage(
            "refusing to unshare a file with yourself (you would lose its key)".into(),
        ));
    }
    let access: Vec<AclEntry> = acl
        .access
        .iter()
        .filter(|e| e.principal != recipient)
        .cloned()
        .collect();
    let acl_entry_removed = access.len() != acl.access.len();
    if acl_entry_removed {
        mdm.acl_set(path, Some(&access), None).await?;
    }
    let removed = mdm.remove_key(path, recipient).await?;
    let other_entries = access
        .iter()
        .filter(|e| e.principal.starts_with("group:") || e.principal.starts_with("vo:"))
        .map(|e| e.to_string())
        .collect();
    Ok(UnshareOutcome {
        path: acl.path,
        recipient: recipient.to_owned(),
        acl_entry_removed,
        keys_removed: removed.removed,
        other_entries,
    })
}

/// VO admins: the data key of a version (`None`: the current one) of a
/// file of their VO, from the key wrapped for the VO's escrow key, with
/// the escrow key pair `escrow`. Needs the read right too (for the
/// version's key id, in its exNode): an admin may grant it to themselves
/// with `lors acl set`, which is logged, as every escrow release is.
pub async fn escrow_recover(
    mdm: &MetadataClient,
    escrow: &KeyPair,
    path: &str,
    version: Option<u64>,
) -> Result<DataKey, Error> {
    let e = mdm.escrow_key(path, version).await?;
    let fv = mdm
        .get(path, Some(e.version))
        .await
        .map_err(|err| match err {
            Error::Forbidden(m) => Error::Forbidden(format!(
                "{m} (recovering with the escrow key needs read on the file, for its key id: \
             grant it with `lors acl set`)"
            )),
            other => other,
        })?;
    if fv.id != e.id {
        return Err(Error::Conflict(format!(
            "{path} was replaced by another file meanwhile"
        )));
    }
    let (file, key_id) = context_of(&fv)?;
    let ctx = WrapContext {
        file,
        key_id: &key_id,
    };
    crypto::unwrap(&e.wrapped_key, escrow, &ctx).map_err(|err| {
        Error::Data(format!(
            "cannot unwrap the escrowed key of version {} of {path}: {err} \
             (is this the escrow key the VO had when the version was written?)",
            e.version
        ))
    })
}
