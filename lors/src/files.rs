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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use exnode::{Exnode, Security};
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_proto::Reliability;
use serde::Serialize;
use uuid::Uuid;

use crate::credentials::Error;
use crate::crypto::{self, DataKey, KeyPair, WrapContext};
use crate::depots::{self, DepotQuery, Near, Offer};
use crate::metadata::{FileVersion, MetadataClient, WrappedKey};
use crate::transfer::maintain::{self, Outcome, PlaceOptions, RepairReport, TrimSelect};
use crate::transfer::{
    self, DownloadOptions, DownloadReport, Pool, Progress, Redundancy, SecureSetup, Sink, Target,
    UploadOptions,
};

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
    placements: std::sync::Mutex<std::collections::HashMap<String, Placed>>,
    /// The wrapped keys' recipients of this user's uploads (the user and
    /// the VO's escrow key), asked once.
    recipients: tokio::sync::Mutex<Option<Recipients>>,
}

type Recipients = Vec<(String, crypto::PublicKey)>;

#[derive(Clone)]
struct Placed {
    valid_until: i64,
    targets: Vec<Target>,
    pool: Arc<Pool>,
}

/// Seconds before a grant's expiry at which a cached offer is renewed.
const GRANT_MARGIN: i64 = 60;

/// Where an upload's data goes.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Explicit depots (`host:port`); empty: ask the L-Bone.
    pub depots: Vec<String>,
    pub near: Option<Near>,
    pub duration: u64,
    pub reliability: depots::Reliability,
}

/// Upload settings.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub block_size: u64,
    pub redundancy: Redundancy,
    pub threads: usize,
    pub security: Security,
    pub encrypt: bool,
    pub placement: Placement,
    pub filename: Option<String>,
}

/// Where an upload's exNode goes.
#[derive(Debug, Clone)]
pub enum Dest {
    /// A path in the metadata manager (`/VO/dir/name`).
    Path(String),
    /// A local exNode file (with `F.key` beside it if encrypted).
    Xnd(PathBuf),
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadSummary {
    pub dest: String,
    pub file: Uuid,
    pub version: u64,
    pub size: u64,
    pub stored: u64,
    pub mappings: usize,
    pub redundancy: String,
    pub security: &'static str,
    pub encrypted: bool,
    pub seconds: f64,
    pub mib_per_s: f64,
}

/// The sidecar file holding an `--xnd` exNode's wrapped data key.
pub fn key_sidecar(xnd: &Path) -> PathBuf {
    let mut s = xnd.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

fn tls(grid: &Grid) -> Result<Option<Arc<rustls::ClientConfig>>, Error> {
    match (&grid.trust, &grid.credential) {
        (Some(t), Some(c)) => ibp_auth::tls::client_config(t, Some(c))
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}"))),
        _ => Ok(None),
    }
}

/// Asks the L-Bone for depots (all that suit) with their grants.
pub async fn offer(
    grid: &Grid,
    size: u64,
    duration: u64,
    near: Option<Near>,
    reliability: depots::Reliability,
) -> Result<Offer, Error> {
    let url = grid.lbone.as_deref().ok_or_else(|| {
        Error::Usage("which L-Bone? give --lbone URL or set LORS_LBONE_URL".into())
    })?;
    let (trust, cred) = need_credentials(grid, "the L-Bone")?;
    let q = DepotQuery {
        vo: None,
        count: None,
        size,
        duration,
        reliability,
        near,
    };
    depots::query_offer(url, trust, cred, &q)
        .await
        .map_err(|e| match e {
            Error::Unavailable(m) => Error::Unavailable(format!("the L-Bone is unavailable: {m}")),
            e => e,
        })
}

fn need_credentials<'a>(
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

/// Depots for an upload and a pool of connections to them, from the
/// session's cache while the grants are fresh.
pub async fn placed(
    grid: &Grid,
    security: Security,
    placement: &Placement,
    piece_size: u64,
) -> Result<(Vec<Target>, Arc<Pool>), Error> {
    let key = format!(
        "{}|{:?}|{:?}|{}|{:?}|{piece_size}",
        security.name(),
        placement.depots,
        placement.near,
        placement.duration,
        placement.reliability
    );
    let now = crate::transfer::now();
    if let Some(p) = grid
        .cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .filter(|p| p.valid_until > now)
    {
        return Ok((p.targets.clone(), p.pool.clone()));
    }
    let (targets, setup, valid_until) =
        targets_and_expiry(grid, security, placement, piece_size).await?;
    let pool = pool(grid, setup);
    grid.cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key,
            Placed {
                valid_until,
                targets: targets.clone(),
                pool: pool.clone(),
            },
        );
    Ok((targets, pool))
}

/// Depots and access for an upload (or for new pieces of maintenance).
pub async fn targets(
    grid: &Grid,
    security: Security,
    placement: &Placement,
    piece_size: u64,
) -> Result<(Vec<Target>, SecureSetup), Error> {
    targets_and_expiry(grid, security, placement, piece_size)
        .await
        .map(|(t, s, _)| (t, s))
}

/// [`targets`], and until when the answer may be reused.
async fn targets_and_expiry(
    grid: &Grid,
    security: Security,
    placement: &Placement,
    piece_size: u64,
) -> Result<(Vec<Target>, SecureSetup, i64), Error> {
    if security == Security::Legacy && (!placement.depots.is_empty() || grid.lbone.is_none()) {
        if placement.depots.is_empty() {
            return Err(Error::Usage(
                "no depots: give --depot HOST:PORT (repeatable) or an L-Bone (--lbone)".into(),
            ));
        }
        let t = placement
            .depots
            .iter()
            .map(|d| Target {
                depot: d.clone(),
                security,
            })
            .collect();
        return Ok((t, SecureSetup::default(), i64::MAX));
    }
    let offer = offer(
        grid,
        piece_size,
        placement.duration,
        placement.near.clone(),
        placement.reliability,
    )
    .await?;
    let valid_until = offer
        .depots
        .iter()
        .map(|d| d.grant_not_after)
        .min()
        .unwrap_or(0)
        .saturating_sub(GRANT_MARGIN);
    let mut t = Vec::new();
    let mut grants = std::collections::HashMap::new();
    for d in &offer.depots {
        let legacy = format!("{}:{}", d.host, d.port);
        let wanted = placement.depots.is_empty()
            || placement
                .depots
                .iter()
                .any(|w| *w == legacy || *w == d.address || *w == d.name);
        if !wanted {
            continue;
        }
        match security {
            Security::Full | Security::Crypto if d.tls_port.is_some() => {
                grants.insert(d.address.clone(), d.grant.clone());
                t.push(Target {
                    depot: d.address.clone(),
                    security,
                });
            }
            Security::Legacy => t.push(Target {
                depot: legacy,
                security,
            }),
            _ => {}
        }
    }
    Ok((
        t,
        SecureSetup {
            tls: tls(grid)?,
            grants,
            ticket_reads: false,
        },
        valid_until,
    ))
}

/// Grants for every secure depot an exNode names (downloads, maintenance).
pub async fn access_for(grid: &Grid, x: &Exnode) -> Result<SecureSetup, Error> {
    access_and_expiry(grid, x).await.map(|(s, _)| s)
}

/// [`access_for`], and until when its grants may be reused.
async fn access_and_expiry(grid: &Grid, x: &Exnode) -> Result<(SecureSetup, i64), Error> {
    let secure = x
        .mappings
        .iter()
        .any(|m| m.security.is_some_and(|s| s != Security::Legacy));
    if !secure {
        return Ok((SecureSetup::default(), i64::MAX));
    }
    let offer = offer(grid, 0, 0, None, depots::Reliability::Hard).await?;
    let valid_until = offer
        .depots
        .iter()
        .map(|d| d.grant_not_after)
        .min()
        .unwrap_or(0)
        .saturating_sub(GRANT_MARGIN);
    let grants = offer
        .depots
        .iter()
        .filter(|d| d.tls_port.is_some())
        .map(|d| (d.address.clone(), d.grant.clone()))
        .collect();
    Ok((
        SecureSetup {
            tls: tls(grid)?,
            grants,
            ticket_reads: false,
        },
        valid_until,
    ))
}

/// A pool for reading `x` (downloads, refresh, trim, check), from the
/// session's cache while its grants are fresh and cover `x`'s secure
/// depots: many files read through one session share connections.
pub async fn read_pool(grid: &Grid, x: &Exnode) -> Result<Arc<Pool>, Error> {
    let secure: Vec<&str> = x
        .mappings
        .iter()
        .filter(|m| m.security.is_some_and(|s| s != Security::Legacy))
        .map(|m| m.depot.as_str())
        .collect();
    let key = if secure.is_empty() {
        "read|legacy"
    } else {
        "read|secure"
    };
    let now = crate::transfer::now();
    if let Some(p) = cached_pool(grid, key, |p| {
        p.valid_until > now && secure.iter().all(|d| p.pool.has_grant(d))
    }) {
        return Ok(p);
    }
    let (setup, valid_until) = access_and_expiry(grid, x).await?;
    Ok(cache_pool(grid, key, valid_until, pool(grid, setup)))
}

/// The session's cached read pool under `key`, if `usable`.
fn cached_pool(grid: &Grid, key: &str, usable: impl Fn(&Placed) -> bool) -> Option<Arc<Pool>> {
    grid.cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .filter(|p| usable(p))
        .map(|p| p.pool.clone())
}

/// Keeps a read pool in the session's cache under `key` until `valid_until`.
fn cache_pool(grid: &Grid, key: &str, valid_until: i64, pool: Arc<Pool>) -> Arc<Pool> {
    grid.cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key.to_owned(),
            Placed {
                valid_until,
                targets: Vec::new(),
                pool: pool.clone(),
            },
        );
    pool
}

/// A pool for downloading `x`. A LOAD's file ticket is its authorization,
/// so full-crypto depots are read without asking the L-Bone (downloads work
/// while it is down); crypto-level depots want the L-Bone's grants for
/// their data ports, and are read over TLS when it cannot be reached.
pub async fn download_pool(grid: &Grid, x: &Exnode) -> Result<Arc<Pool>, Error> {
    let crypto = x
        .mappings
        .iter()
        .any(|m| m.security == Some(Security::Crypto));
    if crypto {
        match read_pool(grid, x).await {
            Ok(p) => return Ok(p),
            Err(e) if grid.lbone.is_some() => {
                tracing::warn!(error = %e, "no depot grants from the L-Bone: reading over TLS with the file ticket");
            }
            Err(e) => return Err(e),
        }
    }
    let secure = x
        .mappings
        .iter()
        .any(|m| m.security.is_some_and(|s| s != Security::Legacy));
    let key = if secure { "read|ticket" } else { "read|legacy" };
    // No grants in it: it never goes stale.
    if let Some(p) = cached_pool(grid, key, |_| true) {
        return Ok(p);
    }
    let setup = SecureSetup {
        tls: if secure { tls(grid)? } else { None },
        grants: Default::default(),
        ticket_reads: true,
    };
    Ok(cache_pool(grid, key, i64::MAX, pool(grid, setup)))
}

fn pool(grid: &Grid, setup: SecureSetup) -> Arc<Pool> {
    Pool::new(setup, grid.timeout.unwrap_or(DEPOT_TIMEOUT))
}

fn reliability(r: depots::Reliability) -> Reliability {
    match r {
        depots::Reliability::Hard => Reliability::Hard,
        depots::Reliability::Soft => Reliability::Soft,
    }
}

fn need_mdm(grid: &Grid) -> Result<&MetadataClient, Error> {
    grid.mdm.as_ref().ok_or_else(|| {
        Error::Usage("which metadata manager? give --mdm URL or set LORS_METADATA_URL".into())
    })
}

fn need_key(grid: &Grid) -> Result<&KeyPair, Error> {
    grid.key.as_deref().ok_or_else(|| {
        Error::Usage("no key pair: run `lors keys init` first (or upload with --no-encrypt)".into())
    })
}

/// A fresh key id: names this version's wrapped keys.
fn new_key_id() -> String {
    format!("k-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Uploads `src` (`size` bytes if known, for placement) to `dest`.
pub async fn upload<R>(
    grid: &Grid,
    src: R,
    size_hint: Option<u64>,
    dest: &Dest,
    s: &UploadSettings,
    progress: Option<Progress>,
) -> Result<UploadSummary, Error>
where
    R: tokio::io::AsyncRead + Unpin,
{
    upload_with(grid, src, size_hint, dest, s, progress, None).await
}

/// The journal of a resumable upload (`lors upload --resume`), JSON lines:
/// a header, then one line per stored block.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
struct JournalHeader {
    v: u32,
    dest: String,
    size: Option<u64>,
    file: Uuid,
    base_version: u64,
    key_id: String,
    /// The data key wrapped for the uploader's own key (never in clear).
    wrapped: Option<String>,
    block_size: u64,
    redundancy: String,
    security: String,
}

#[derive(Serialize, serde::Deserialize)]
struct JournalBlock {
    block: u64,
    /// The block's mappings (and group) as an exNode document.
    xml: String,
}

fn dest_text(dest: &Dest) -> String {
    match dest {
        Dest::Path(p) => p.clone(),
        Dest::Xnd(f) => f.display().to_string(),
    }
}

fn journal_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local(format!("upload journal {}: {e}", path.display()))
}

/// Reads a journal: its header and the blocks stored.
fn read_upload_journal(path: &Path) -> Result<(JournalHeader, transfer::DoneBlocks), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| journal_err(path, e))?;
    let mut lines = text.lines();
    let header: JournalHeader = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| journal_err(path, format!("bad header: {e}")))?;
    let mut done = transfer::DoneBlocks::default();
    for line in lines {
        // A torn last line (killed while writing) is ignored: that block is
        // sent again (its allocations expire on their own).
        let Ok(b) = serde_json::from_str::<JournalBlock>(line) else {
            continue;
        };
        let Ok(x) = exnode::from_xml(b.xml.as_bytes()) else {
            continue;
        };
        if done.blocks.insert(b.block) {
            done.mappings.extend(x.mappings);
            done.groups.extend(x.ec_groups);
        }
    }
    Ok((header, done))
}

/// [`upload`], optionally journaled in `journal` for `--resume`: an
/// upload that fails keeps the blocks it stored (listed in the journal)
/// and the same call with the same journal continues after them.
pub async fn upload_with<R>(
    grid: &Grid,
    src: R,
    size_hint: Option<u64>,
    dest: &Dest,
    s: &UploadSettings,
    progress: Option<Progress>,
    journal: Option<&Path>,
) -> Result<UploadSummary, Error>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let started = std::time::Instant::now();
    if s.security != Security::Legacy {
        if let Dest::Xnd(_) = dest {
            return Err(Error::Usage(
                "--xnd with secure depots: they demand a metadata-manager ticket to read, \
                 so the file could not be read back; use --security legacy or a metadata-manager path"
                    .into(),
            ));
        }
    }
    // The file's identity and the version this will be.
    let (file, base_version) = match dest {
        Dest::Path(p) => {
            let mdm = need_mdm(grid)?;
            match mdm.get(p, None).await {
                Ok(fv) => (
                    fv.exnode.file.ok_or_else(|| {
                        Error::Data(format!("{p}: the current exNode has no file UUID"))
                    })?,
                    fv.version,
                ),
                Err(Error::NotFound(_)) => (Uuid::new_v4(), 0),
                Err(e) => return Err(e),
            }
        }
        Dest::Xnd(_) => (Uuid::new_v4(), 0),
    };
    let mut key = if s.encrypt {
        need_key(grid)?;
        Some(Arc::new(
            DataKey::generate().map_err(|e| Error::Local(e.to_string()))?,
        ))
    } else {
        None
    };
    let mut key_id = new_key_id();
    let (mut file, mut base_version) = (file, base_version);
    let mut done = None;
    let mut hook: Option<transfer::BlockHook> = None;
    if let Some(jpath) = journal {
        let header = JournalHeader {
            v: 1,
            dest: dest_text(dest),
            size: size_hint,
            file,
            base_version,
            key_id: key_id.clone(),
            wrapped: None,
            block_size: s.block_size,
            redundancy: s.redundancy.to_string(),
            security: s.security.name().to_owned(),
        };
        if jpath.exists() {
            let (old, blocks) = read_upload_journal(jpath)?;
            let same = old.dest == header.dest
                && old.size == header.size
                && old.block_size == header.block_size
                && old.redundancy == header.redundancy
                && old.security == header.security
                && old.base_version == header.base_version
                && (old.base_version == 0 || old.file == header.file);
            if !same {
                return Err(Error::Usage(format!(
                    "the upload journal {} is of another upload (destination, size, settings or base version differ); remove it to start afresh",
                    jpath.display()
                )));
            }
            file = old.file;
            base_version = old.base_version;
            key_id = old.key_id.clone();
            key =
                match (&old.wrapped, s.encrypt) {
                    (Some(w), true) => {
                        let me = need_key(grid)?;
                        let ctx = WrapContext {
                            file,
                            key_id: &key_id,
                        };
                        Some(Arc::new(crypto::unwrap(w, me, &ctx).map_err(|e| {
                            journal_err(jpath, format!("cannot unwrap its data key: {e}"))
                        })?))
                    }
                    (None, false) => None,
                    _ => {
                        return Err(Error::Usage(format!(
                        "the upload journal {} was made {} encryption; remove it to start afresh",
                        jpath.display(),
                        if old.wrapped.is_some() { "with" } else { "without" }
                    )))
                    }
                };
            done = Some(Arc::new(blocks));
        } else {
            let mut h = header;
            if let Some(k) = &key {
                let me = need_key(grid)?;
                let ctx = WrapContext {
                    file,
                    key_id: &key_id,
                };
                h.wrapped = Some(
                    crypto::wrap(k, me.public(), &ctx).map_err(|e| Error::Local(e.to_string()))?,
                );
            }
            if let Some(d) = jpath.parent() {
                std::fs::create_dir_all(d).map_err(|e| journal_err(jpath, e))?;
            }
            let line = serde_json::to_string(&h).map_err(|e| journal_err(jpath, e))?;
            write_private(jpath, format!("{line}\n").as_bytes())?;
        }
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(jpath)
            .map_err(|e| journal_err(jpath, e))?;
        let f = std::sync::Mutex::new(f);
        hook = Some(Arc::new(
            move |block, mappings: &[exnode::Mapping], group: Option<&exnode::EcGroup>| {
                use std::io::Write;
                let x = Exnode {
                    file: Some(file),
                    mappings: mappings.to_vec(),
                    ec_groups: group.cloned().into_iter().collect(),
                    ..Default::default()
                };
                let line = serde_json::to_string(&JournalBlock {
                    block,
                    xml: exnode::to_xml(&x),
                });
                if let Ok(line) = line {
                    let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(f, "{line}");
                }
            },
        ));
    }
    let version = base_version + 1;
    let piece = match s.redundancy {
        Redundancy::Copies(_) => s.block_size,
        Redundancy::Ec { k, .. } => transfer::codec::shard_size(s.block_size, k as usize),
    };
    let piece = size_hint.map_or(piece, |n| piece.min(n.max(1)));
    let (targets, pool) = placed(grid, s.security, &s.placement, piece).await?;
    if targets.len() < s.redundancy.pieces() {
        let left_out: Vec<&str> = s
            .placement
            .depots
            .iter()
            .filter(|d| !targets.iter().any(|t| &t.depot == *d))
            .map(String::as_str)
            .collect();
        let why = if s.security == Security::Legacy {
            String::new()
        } else {
            format!(
                ": the L-Bone offers only depots that are up, serve the VO and have room \
                 (free space) for a {piece}-byte piece for the duration asked; full depots \
                 are left out{}",
                if left_out.is_empty() {
                    String::new()
                } else {
                    format!(" (not offered: {})", left_out.join(", "))
                }
            )
        };
        return Err(Error::Unavailable(format!(
            "{} needs {} depots with room; {} available{why}",
            s.redundancy,
            s.redundancy.pieces(),
            targets.len(),
        )));
    }
    let opts = UploadOptions {
        file,
        version,
        filename: s.filename.clone(),
        block_size: s.block_size,
        redundancy: s.redundancy,
        threads: s.threads,
        duration: i64::try_from(s.placement.duration).unwrap_or(i64::MAX),
        reliability: reliability(s.placement.reliability),
        key: key.clone(),
        key_id: key_id.clone(),
        done,
        on_block: hook,
    };
    let x = transfer::upload(src, &targets, pool.clone(), &opts, progress).await?;
    let xml = exnode::to_xml(&x);
    let registered = register(grid, dest, &x, &xml, key.as_deref(), &key_id, base_version).await;
    if let Some(j) = journal {
        // Registered, or released below: nothing left to resume.
        let _ = std::fs::remove_file(j);
    }
    let (dest_text, version) = match registered {
        Ok(v) => v,
        Err(e) => {
            let outcomes = maintain::release_mappings(&pool, &x.mappings).await;
            return Err(note_not_freed(e, &outcomes));
        }
    };
    let secs = started.elapsed().as_secs_f64();
    Ok(UploadSummary {
        dest: dest_text,
        file,
        version,
        size: x.size,
        stored: x.stored_bytes(),
        mappings: x.mappings.len(),
        redundancy: s.redundancy.to_string(),
        security: s.security.name(),
        encrypted: key.is_some(),
        seconds: secs,
        mib_per_s: x.size as f64 / (1 << 20) as f64 / secs.max(1e-9),
    })
}

/// `e`, naming the allocations of a clean-up that were not freed.
fn note_not_freed(e: Error, outcomes: &[Outcome]) -> Error {
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

/// Registers an uploaded exNode (and its wrapped keys).
async fn register(
    grid: &Grid,
    dest: &Dest,
    x: &Exnode,
    xml: &str,
    key: Option<&DataKey>,
    key_id: &str,
    base_version: u64,
) -> Result<(String, u64), Error> {
    match dest {
        Dest::Path(p) => {
            let mdm = need_mdm(grid)?;
            let wrapped = match (key, x.file) {
                (Some(k), Some(file)) => {
                    let me = need_key(grid)?;
                    let mut cached = grid.cache.recipients.lock().await;
                    let recipients = match &*cached {
                        Some(r) => r.clone(),
                        None => {
                            let whoami = mdm.whoami().await?;
                            let r = crate::keys::upload_recipients(mdm, me, &whoami).await?;
                            *cached = Some(r.clone());
                            r
                        }
                    };
                    drop(cached);
                    let ctx = WrapContext { file, key_id };
                    crate::keys::wrap_for(k, &ctx, &recipients)?
                }
                _ => Vec::new(),
            };
            let r = mdm.put_version(p, base_version, xml, &wrapped).await?;
            Ok((r.path, r.version))
        }
        Dest::Xnd(f) => {
            if let (Some(k), Some(file)) = (key, x.file) {
                let me = need_key(grid)?;
                let ctx = WrapContext { file, key_id };
                let w =
                    crypto::wrap(k, me.public(), &ctx).map_err(|e| Error::Local(e.to_string()))?;
                write_private(&key_sidecar(f), format!("{w}\n").as_bytes())?;
            }
            write_atomic(f, xml.as_bytes())?;
            Ok((f.display().to_string(), x.version))
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("xnd.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
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

/// Where a download's exNode comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Path { path: String, version: Option<u64> },
    Xnd(PathBuf),
}

/// An exNode with what reading it needs.
pub struct Opened {
    pub exnode: Exnode,
    pub key: Option<Arc<DataKey>>,
    pub ticket: Option<String>,
    /// The metadata manager's view (path sources).
    pub version: Option<FileVersion>,
}

/// Reads an exNode file (ours or LoRS 0.82).
pub fn read_xnd(path: &Path) -> Result<Exnode, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > exnode::MAX_DOCUMENT as u64 {
        return Err(Error::Data(format!(
            "{}: too large for an exNode",
            path.display()
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
    exnode::parse_and_validate(&bytes)
        .map_err(|e| Error::Data(format!("{}: not a usable exNode: {e}", path.display())))
}

/// Fetches the exNode, ticket and data key of `src`.
pub async fn open(grid: &Grid, src: &Source, need_key_for_data: bool) -> Result<Opened, Error> {
    match src {
        Source::Path { path, version } => {
            let mdm = need_mdm(grid)?;
            let fv = mdm.get(path, *version).await?;
            let key = match (&fv.exnode.encryption, need_key_for_data, &grid.escrow) {
                (Some(_), true, Some(escrow)) => Some(Arc::new(
                    crate::keys::escrow_recover(mdm, escrow, path, Some(fv.version)).await?,
                )),
                (Some(_), true, None) => {
                    let me = need_key(grid)?;
                    Some(Arc::new(crate::keys::unwrap_mine(me, &fv)?))
                }
                _ => None,
            };
            Ok(Opened {
                exnode: fv.exnode.clone(),
                key,
                ticket: Some(fv.ticket.clone()),
                version: Some(fv),
            })
        }
        Source::Xnd(f) => {
            let x = read_xnd(f)?;
            let key = match (&x.encryption, x.file, need_key_for_data) {
                (Some(enc), Some(file), true) => {
                    let me = need_key(grid)?;
                    let side = key_sidecar(f);
                    let text = std::fs::read_to_string(&side).map_err(|e| {
                        Error::Data(format!(
                            "the exNode is encrypted and its key file {} cannot be read: {e}",
                            side.display()
                        ))
                    })?;
                    let ctx = WrapContext {
                        file,
                        key_id: &enc.key_id,
                    };
                    Some(Arc::new(crypto::unwrap(text.trim(), me, &ctx).map_err(
                        |e| {
                            Error::Data(format!(
                                "cannot unwrap the data key in {}: {e}",
                                side.display()
                            ))
                        },
                    )?))
                }
                _ => None,
            };
            let secure = x
                .mappings
                .iter()
                .any(|m| m.security.is_some_and(|s| s != Security::Legacy));
            if secure {
                return Err(Error::Usage(format!(
                    "{}: its allocations are on secure depots, which need a metadata-manager ticket: download it by path",
                    f.display()
                )));
            }
            Ok(Opened {
                exnode: x,
                key,
                ticket: None,
                version: None,
            })
        }
    }
}

/// What a download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadSummary {
    pub source: String,
    pub size: u64,
    #[serde(flatten)]
    pub report: DownloadReport,
    pub seconds: f64,
    pub mib_per_s: f64,
}

/// Downloads `src` into `sink`.
pub async fn download(
    grid: &Grid,
    src: &Source,
    sink: Sink,
    threads: usize,
    progress: Option<Progress>,
) -> Result<DownloadSummary, Error> {
    download_with(grid, src, sink, threads, progress, None).await
}

/// A resumable download into a file: which ranges are already in it, kept
/// in a journal beside it.
pub struct Resume {
    /// The journal file (`.NAME.lors-part.journal`).
    pub journal: PathBuf,
    /// Continue from the journal (else start afresh).
    pub resume: bool,
}

/// The journal's first line: what is being downloaded. A journal of
/// another exNode (a new version, another file) is not resumed from.
fn journal_identity(x: &Exnode) -> String {
    format!(
        "lors-download-journal v1 {} {} {} {}",
        x.file.map_or("-".into(), |u| u.to_string()),
        x.version,
        x.size,
        blake3::hash(exnode::to_xml(x).as_bytes()).to_hex()
    )
}

/// Reads a journal: the ranges done, if it is this exNode's.
fn read_journal(path: &Path, identity: &str) -> std::collections::HashSet<u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    let mut lines = text.lines();
    if lines.next() != Some(identity) {
        return Default::default();
    }
    // A torn last line (the process was killed while writing it) does not
    // parse and is ignored: that range is fetched again.
    lines.filter_map(|l| l.trim().parse::<u64>().ok()).collect()
}

/// [`download`], optionally resumable (`sink` must then be the file the
/// journal describes, opened without truncating it).
pub async fn download_with(
    grid: &Grid,
    src: &Source,
    sink: Sink,
    threads: usize,
    progress: Option<Progress>,
    resume: Option<&Resume>,
) -> Result<DownloadSummary, Error> {
    let started = std::time::Instant::now();
    let o = open(grid, src, true).await?;
    let pool = download_pool(grid, &o.exnode).await?;
    let mut opts = DownloadOptions {
        threads,
        ticket: o.ticket.clone(),
        tickets: renewed_tickets(grid, src, &o),
        key: o.key.clone(),
        ..Default::default()
    };
    let mut skipped = 0;
    if let Some(r) = resume {
        let identity = journal_identity(&o.exnode);
        let done = if r.resume {
            read_journal(&r.journal, &identity)
        } else {
            Default::default()
        };
        skipped = done.len();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.journal)
            .map_err(|e| Error::Local(format!("cannot write {}: {e}", r.journal.display())))?;
        if done.is_empty() {
            use std::io::Write;
            f.set_len(0)
                .and_then(|_| writeln!(f, "{identity}"))
                .map_err(|e| Error::Local(format!("cannot write {}: {e}", r.journal.display())))?;
        }
        let f = std::sync::Mutex::new(f);
        opts.skip = Arc::new(done);
        opts.on_written = Some(Arc::new(move |offset| {
            use std::io::Write;
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            // Best effort: a range missing from the journal is fetched
            // again on resume.
            let _ = writeln!(f, "{offset}");
        }));
    }
    let mut report = transfer::download(&o.exnode, pool, &opts, sink, progress).await?;
    report.resumed = skipped as u64;
    let secs = started.elapsed().as_secs_f64();
    Ok(DownloadSummary {
        source: source_text(src),
        size: o.exnode.size,
        report,
        seconds: secs,
        mib_per_s: o.exnode.size as f64 / (1 << 20) as f64 / secs.max(1e-9),
    })
}

/// The ticket of a download by path, renewed from the metadata manager
/// before it expires.
fn renewed_tickets(grid: &Grid, src: &Source, o: &Opened) -> Option<Arc<transfer::Tickets>> {
    let (Source::Path { path, .. }, Some(v), Some(mdm)) = (src, &o.version, &grid.mdm) else {
        return None;
    };
    let (mdm, path) = (mdm.clone(), path.clone());
    Some(Arc::new(transfer::Tickets::new(
        v.ticket.clone(),
        v.ticket_not_after,
        move || {
            let (mdm, path) = (mdm.clone(), path.clone());
            Box::pin(async move {
                mdm.ticket(&path)
                    .await
                    .map(|t| (t.ticket, t.ticket_not_after))
                    .map_err(|e| e.to_string())
            })
        },
    )))
}

fn source_text(src: &Source) -> String {
    match src {
        Source::Path { path, .. } => path.clone(),
        Source::Xnd(f) => f.display().to_string(),
    }
}

/// Registers a maintained exNode in place of `src`'s (a new version for a
/// path, the file rewritten for `--xnd`).
async fn save(grid: &Grid, src: &Source, o: &Opened, x: &Exnode) -> Result<u64, Error> {
    match (src, &o.version) {
        (Source::Path { path, .. }, Some(fv)) => {
            let mdm = need_mdm(grid)?;
            // A new version with the same data key and key id: our own
            // wrapped key goes as it is (the wrap is bound to the file and
            // key id, not the version) and the manager carries the other
            // recipients' over.
            let wrapped: Vec<WrappedKey> = match (&x.encryption, &fv.wrapped_key) {
                (Some(_), Some(w)) => vec![WrappedKey {
                    recipient: mdm.whoami().await?.principal,
                    wrapped: w.clone(),
                }],
                _ => Vec::new(),
            };
            let r = mdm
                .put_version(path, fv.current_version, &exnode::to_xml(x), &wrapped)
                .await?;
            Ok(r.version)
        }
        (Source::Xnd(f), _) => {
            write_atomic(f, exnode::to_xml(x).as_bytes())?;
            Ok(x.version)
        }
        _ => Err(Error::Usage("nothing to save the exNode to".into())),
    }
}

/// The result of a maintenance command.
#[derive(Debug, Clone, Serialize)]
pub struct Maintained {
    pub source: String,
    /// The version registered (0 when nothing changed or `--xnd`).
    pub version: u64,
    pub mappings_before: usize,
    pub mappings_after: usize,
    /// Per allocation: refresh outcomes, or releases of dropped ones.
    pub outcomes: Vec<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    pub added: usize,
}

impl Maintained {
    /// The result of changing `before` into `after` (registered as
    /// `version`), with the allocation outcomes.
    fn of(
        src: &Source,
        before: &Exnode,
        after: &Exnode,
        version: u64,
        outcomes: Vec<Outcome>,
    ) -> Self {
        Maintained {
            source: source_text(src),
            version,
            mappings_before: before.mappings.len(),
            mappings_after: after.mappings.len(),
            outcomes,
            repair: None,
            added: 0,
        }
    }

    /// Whether every allocation operation succeeded and nothing is
    /// unrecoverable.
    pub fn complete(&self) -> bool {
        self.outcomes.iter().all(|o| o.ok)
            && self
                .repair
                .as_ref()
                .is_none_or(|r| r.unrecoverable.is_empty())
    }
}

/// `lors refresh`: extends every allocation by `duration` seconds.
pub async fn refresh(grid: &Grid, src: &Source, duration: u64) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let pool = read_pool(grid, &o.exnode).await?;
    let mut x = o.exnode.clone();
    let outcomes =
        maintain::refresh(&mut x, &pool, i64::try_from(duration).unwrap_or(i64::MAX)).await;
    let version = if outcomes.iter().any(|o| o.ok) {
        save(grid, src, &o, &x).await?
    } else {
        0
    };
    Ok(Maintained::of(src, &o.exnode, &x, version, outcomes))
}

/// `lors trim`: drops mappings and releases their allocations.
pub async fn trim(grid: &Grid, src: &Source, select: &TrimSelect) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let (x, dropped) = maintain::plan_trim(&o.exnode, select)?;
    let pool = read_pool(grid, &o.exnode).await?;
    let version = save(grid, src, &o, &x).await?;
    let outcomes = maintain::release_mappings(&pool, &dropped).await;
    Ok(Maintained::of(src, &o.exnode, &x, version, outcomes))
}

/// New pieces go to depots at the exNode's own security level.
fn level_of(x: &Exnode) -> Security {
    x.mappings
        .iter()
        .filter_map(|m| m.security)
        .max_by_key(|s| match s {
            Security::Legacy => 0,
            Security::Crypto => 1,
            Security::Full => 2,
        })
        .unwrap_or(Security::Legacy)
}

async fn place_setup(
    grid: &Grid,
    x: &Exnode,
    placement: &Placement,
) -> Result<(Vec<Target>, Arc<Pool>), Error> {
    let level = level_of(x);
    let piece = x.mappings.iter().map(|m| m.alloc_length).max().unwrap_or(1);
    let (targets, mut setup) = targets(grid, level, placement, piece).await?;
    // Reading needs grants for the depots already in the exNode too.
    let read = access_for(grid, x).await?;
    setup.grants.extend(read.grants);
    if setup.tls.is_none() {
        setup.tls = read.tls;
    }
    Ok((targets, pool(grid, setup)))
}

/// `lors augment`: adds replicas until every range has `copies`.
pub async fn augment(
    grid: &Grid,
    src: &Source,
    copies: usize,
    placement: &Placement,
) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let (targets, pool) = place_setup(grid, &o.exnode, placement).await?;
    let p = PlaceOptions {
        duration: i64::try_from(placement.duration).unwrap_or(i64::MAX),
        reliability: reliability(placement.reliability),
        ticket: o.ticket.clone(),
    };
    let (x, added) = maintain::augment(&o.exnode, &pool, &targets, copies, &p).await?;
    let version = if added > 0 {
        match save(grid, src, &o, &x).await {
            Ok(v) => v,
            Err(e) => {
                let new: Vec<_> = x.mappings[..]
                    .iter()
                    .filter(|m| !o.exnode.mappings.contains(m))
                    .cloned()
                    .collect();
                let outcomes = maintain::release_mappings(&pool, &new).await;
                return Err(note_not_freed(e, &outcomes));
            }
        }
    } else {
        0
    };
    Ok(Maintained {
        added,
        ..Maintained::of(src, &o.exnode, &x, version, Vec::new())
    })
}

/// `lors repair`: probes every block and recreates what is lost or
/// corrupt from what survives.
pub async fn repair(
    grid: &Grid,
    src: &Source,
    placement: &Placement,
    threads: usize,
) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let (targets, pool) = place_setup(grid, &o.exnode, placement).await?;
    let p = PlaceOptions {
        duration: i64::try_from(placement.duration).unwrap_or(i64::MAX),
        reliability: reliability(placement.reliability),
        ticket: o.ticket.clone(),
    };
    let (x, dropped, report) = maintain::repair(&o.exnode, &pool, &targets, &p, threads).await?;
    let changed = report.recreated > 0 || !dropped.is_empty();
    let version = if changed {
        save(grid, src, &o, &x).await?
    } else {
        0
    };
    let outcomes = maintain::release_mappings(&pool, &dropped).await;
    Ok(Maintained {
        added: report.recreated,
        repair: Some(report),
        ..Maintained::of(src, &o.exnode, &x, version, outcomes)
    })
}

/// `lors stat --check`: the exNode and the health of every mapping.
pub async fn check(
    grid: &Grid,
    src: &Source,
    threads: usize,
) -> Result<(Exnode, Vec<maintain::Health>), Error> {
    let o = open(grid, src, false).await?;
    let pool = read_pool(grid, &o.exnode).await?;
    let h = maintain::probe(&o.exnode, &pool, o.ticket.as_deref(), threads).await;
    Ok((o.exnode, h))
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
