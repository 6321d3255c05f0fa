//! Whole-file operations: the library behind `lors upload`, `download`,
//! `augment`, `trim`, `refresh` and `repair`.
//!
//! These tie the services together: the L-Bone (depots and their grants),
//! the metadata manager (exNodes, versions, tickets, wrapped keys), the
//! user's key pair (wrapping and unwrapping data keys) and the
//! [`crate::transfer`] engine. A [`Grid`] holds what a session needs; every
//! service is optional, so that legacy uploads to plain IBP depots with a
//! local exNode work without credentials.
//!
//! Ordering rules that keep failures clean:
//! - an upload registers its version only after every block is stored; if
//!   registering fails (conflict, refusal) the allocations are released;
//! - maintenance registers the new exNode first and releases dropped
//!   allocations after, so no registered exNode names a released
//!   allocation.
//!
//! The parts: `access` (depots to place on, the L-Bone's grants, the
//! session's pools of connections), `upload`, `download`, `maintenance`
//! (`refresh`, `trim`, `augment`, `repair`, `stat --check`), `journal`
//! (the one resume-journal format of uploads and downloads) and
//! `inflight` (every upload's journal of allocations in flight, and
//! `cleanup`, which releases what killed uploads left).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ibp_auth::{ProxyCredential, TrustStore};
use ibp_proto::Reliability;

use crate::credentials::Error;
use crate::crypto::{self, KeyPair};
use crate::depots;
use crate::metadata::MetadataClient;
use crate::transfer::maintain::Outcome;
use crate::transfer::{self, Pool, SecureSetup, Target};

mod access;
mod download;
pub mod import;
mod inflight;
mod journal;
mod maintenance;
mod output;
mod reader;
mod retention;
pub mod tree;
mod upload;
mod writer;

pub use access::{access_for, download_pool, offer, placed, read_pool, targets, Placement};
pub use download::{
    download, download_sized, download_with, export, open, read_xnd, DownloadSummary, Exported,
    Opened, Provenance, Resume, Source,
};
pub use inflight::{
    cleanup, cleanup_in, release_idle, CleanupOptions, CleanupReport, JournalOutcome, JournalState,
};
pub use maintenance::{augment, check, refresh, repair, trim, Maintained};
pub use output::{download_to_path, Output, Part};
pub use reader::{FileReader, ReaderOptions, ReaderStats, MAX_CACHE_BYTES, MAX_READ_AHEAD};
pub use retention::release_pruned;
pub use upload::{
    upload, upload_controlled, upload_with, Dest, Interrupted, UploadControl, UploadSettings,
    UploadSummary,
};
pub use writer::FileWriter;

/// Default time allowed for each depot operation.
pub use crate::transfer::pool::DEPOT_TIMEOUT;

/// What a session has: any of these may be missing.
#[derive(Clone, Default)]
pub struct Grid {
    pub trust: Option<TrustStore>,
    pub credential: Option<ProxyCredential>,
    pub lbone: Option<String>,
    pub mdm: Option<MetadataClient>,
    /// The user's key pair (`lors keys init`).
    pub key: Option<Arc<KeyPair>>,
    /// A VO escrow key pair: downloads unwrap the escrow-wrapped key (VO
    /// admins recovering a member's file) instead of the user's.
    pub escrow: Option<Arc<KeyPair>>,
    pub timeout: Option<Duration>,
    /// The VO this session asks the L-Bone for depots and grants in (of a
    /// multi-VO proxy: which VO's identity acts); `None`: the proxy's
    /// first VO. Uploads and downloads by path act in the path's VO
    /// ([`Grid::in_vo_of`]).
    pub vo: Option<String>,
    /// What a session learns once and reuses across files (L-Bone offers
    /// with their grants, open depot connections, who we are): many small
    /// files through one `Grid` cost one L-Bone query and one TLS handshake
    /// per depot, not one per file.
    pub cache: Arc<Cache>,
}

/// Reused across the operations of one [`Grid`] (and its clones).
#[derive(Default)]
pub struct Cache {
    /// Placement answers by query, valid until shortly before their
    /// grants expire; each with the pool of connections made under them.
    pub(crate) placements: std::sync::Mutex<std::collections::HashMap<String, Placed>>,
    /// Held while a placement the cache lacks is asked for: concurrent
    /// uploads of one session (a job's hundreds) wait for that one answer
    /// instead of each opening a connection to the L-Bone, which would pass
    /// its per-address connection cap.
    pub(crate) placing: tokio::sync::Mutex<()>,
    /// The wrapped keys' recipients of this user's uploads (the user and
    /// the VO's escrow key), asked once.
    /// Kept with the VO they are for ([`Grid::vo`]).
    pub(crate) recipients: tokio::sync::Mutex<Option<(Option<String>, Recipients)>>,
}

pub(crate) type Recipients = Vec<(String, crypto::PublicKey)>;

#[derive(Clone)]
pub(crate) struct Placed {
    pub(crate) valid_until: i64,
    pub(crate) targets: Vec<Target>,
    pub(crate) pool: Arc<Pool>,
}

impl Grid {
    /// This session acting in the VO of `path` (`/VO/...`): itself when it
    /// does already, else a copy with [`Grid::vo`] set (sharing the cache,
    /// whose placements and pools are kept by VO).
    pub fn in_vo_of(&self, path: &str) -> std::borrow::Cow<'_, Grid> {
        let vo = path.strip_prefix('/').and_then(|p| p.split('/').next());
        match vo {
            Some(vo) if !vo.is_empty() && self.vo.as_deref() != Some(vo) => {
                std::borrow::Cow::Owned(Grid {
                    vo: Some(vo.to_owned()),
                    ..self.clone()
                })
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }
}

/// The sidecar file holding an `--xnd` exNode's wrapped data key.
pub fn key_sidecar(xnd: &Path) -> PathBuf {
    let mut s = xnd.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

pub(crate) fn tls(grid: &Grid) -> Result<Option<Arc<rustls::ClientConfig>>, Error> {
    match (&grid.trust, &grid.credential) {
        (Some(t), Some(c)) => ibp_auth::tls::client_config(t, Some(c))
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}"))),
        _ => Ok(None),
    }
}

pub(crate) fn need_credentials<'a>(
    grid: &'a Grid,
    what: &str,
) -> Result<(&'a TrustStore, &'a ProxyCredential), Error> {
    let trust = grid.trust.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "nothing to authenticate {what} with: give --trust DIR or set LORS_TRUST_DIR"
        ))
    })?;
    let cred = grid
        .credential
        .as_ref()
        .ok_or_else(|| Error::NoProxy(crate::credentials::default_proxy_path()))?;
    Ok((trust, cred))
}

pub(crate) fn pool(grid: &Grid, setup: SecureSetup) -> Arc<Pool> {
    let pool = Pool::new(setup, grid.timeout.unwrap_or(DEPOT_TIMEOUT));
    // Secure COPY (replicas made by the depots) needs the L-Bone's grants.
    if let (Some(url), Some(trust), Some(credential)) = (&grid.lbone, &grid.trust, &grid.credential)
    {
        pool.set_copy_grants(Arc::new(depots::LboneCopyGrants {
            url: url.clone(),
            trust: trust.clone(),
            credential: credential.clone(),
            vo: grid.vo.clone(),
        }));
    }
    pool
}

pub(crate) fn reliability(r: depots::Reliability) -> Reliability {
    match r {
        depots::Reliability::Hard => Reliability::Hard,
        depots::Reliability::Soft => Reliability::Soft,
    }
}

/// The metadata manager; without a proxy there is none, and
/// [`Error::NoProxy`] says how to get one.
pub(crate) fn need_mdm(grid: &Grid) -> Result<&MetadataClient, Error> {
    if grid.mdm.is_none() && grid.credential.is_none() {
        return Err(Error::NoProxy(crate::credentials::default_proxy_path()));
    }
    grid.mdm.as_ref().ok_or_else(|| {
        Error::Usage("which metadata manager? give --mdm URL or set LORS_METADATA_URL".into())
    })
}

pub(crate) fn need_key(grid: &Grid) -> Result<&KeyPair, Error> {
    grid.key.as_deref().ok_or_else(|| {
        Error::Usage("no key pair: run `lors keys init` first (or upload with --no-encrypt)".into())
    })
}

/// `e`, naming the allocations of a clean-up that were not freed.
pub(crate) fn note_not_freed(e: Error, outcomes: &[Outcome]) -> Error {
    let not_freed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{}: {}", o.depot, o.error.as_deref().unwrap_or("unknown")))
        .collect();
    if not_freed.is_empty() {
        e
    } else {
        e.with_note(&transfer::not_freed_note(&not_freed))
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("xnd.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))
}

/// Loads a key pair if the file exists (`None` if not).
pub fn load_key_if_present(path: &Path) -> Result<Option<Arc<KeyPair>>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    crypto::read_private_key(path)
        .map(|k| Some(Arc::new(k)))
        .map_err(|e| Error::Local(format!("cannot read the key {}: {e}", path.display())))
}
