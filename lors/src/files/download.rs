//! Downloads: opening an exNode (by path at the metadata manager, with its
//! ticket and data key, or from an `--xnd` file) and reading it into a
//! sink, resumable with a journal beside the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use exnode::{Exnode, Security};
use serde::Serialize;

use super::journal::{self, Journal};
use super::{download_pool, key_sidecar, need_key, need_mdm, Grid};
use crate::credentials::Error;
use crate::crypto::{self, DataKey, WrapContext};
use crate::metadata::FileVersion;
use crate::transfer::{self, DownloadOptions, DownloadReport, Progress, Sink};

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
    /// Who vouches for the exNode: always signed when read from the
    /// metadata manager; an exNode file may be unsigned (LoRS 0.82).
    pub signature: Provenance,
}

/// What an exNode's signature says (docs/identity.md, "Signed exNodes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Provenance {
    /// Signed by a trusted metadata-manager key, verified.
    Signed {
        /// The signer's key id (16 hex digits).
        key: String,
        file: String,
        version: u64,
        /// When the metadata manager signed it (Unix seconds).
        signed_at: i64,
    },
    /// No signature (LoRS exNodes, files `upload --xnd` wrote): nothing
    /// vouches for its mappings.
    Unsigned,
}

impl From<exnode::Verified> for Provenance {
    fn from(v: exnode::Verified) -> Provenance {
        Provenance::Signed {
            key: v.key_hex(),
            file: v.file.to_string(),
            version: v.version,
            signed_at: v.signed_at,
        }
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provenance::Signed {
                key,
                file,
                version,
                signed_at,
            } => write!(
                f,
                "signed by metadata-manager key {key} for file {file} version {version} at {}",
                crate::validity::format_local(*signed_at)
            ),
            Provenance::Unsigned => f.write_str("unsigned (no metadata-manager signature)"),
        }
    }
}

/// Reads an exNode file (ours or LoRS 0.82) and checks its signature, if
/// it has one, against the metadata-manager keys of `grid`'s trust
/// directory: a signed exNode altered since (a mapping, an offset or
/// length, a capability, its UUID or version), or signed by a key not
/// trusted, is refused ([`Error::Data`]) naming what failed. The
/// signature is taken out of the exNode returned.
pub fn read_xnd(grid: &Grid, path: &Path) -> Result<(Exnode, Provenance), Error> {
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
    let mut x = exnode::from_xml(&bytes)
        .map_err(|e| Error::Data(format!("{}: not a usable exNode: {e}", path.display())))?;
    let refused = |why: String| Error::Data(format!("{}: exNode refused: {why}", path.display()));
    let provenance = match exnode::signature::split(&mut x).map_err(|e| refused(e.to_string()))? {
        None => Provenance::Unsigned,
        Some(sig) => {
            let signers = grid
                .trust
                .as_ref()
                .map(|t| t.token_keys(ibp_auth::trust::TokenSigner::MetadataManager))
                .unwrap_or_default();
            let v = exnode::signature::verify(&x, &sig, signers).map_err(|e| match e {
                exnode::SignatureError::UntrustedKey { .. } => {
                    refused(format!("{e}{}", crate::metadata::untrusted_hint(signers)))
                }
                e => refused(e.to_string()),
            })?;
            Provenance::from(v)
        }
    };
    x.validate()
        .map_err(|e| Error::Data(format!("{}: not a usable exNode: {e}", path.display())))?;
    Ok((x, provenance))
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub path: String,
    pub file: String,
    pub version: u64,
    /// The exNode file written.
    pub exnode: String,
    /// The data key wrapped for the caller, beside it (encrypted files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    pub signature: Provenance,
}

/// `lors stat --export`: saves a version of `path` (`None`: the current
/// one) as the metadata manager signed it into the exNode file `dest`
/// (mode 0600: it holds capabilities), and for an encrypted file the data
/// key wrapped for the caller beside it (`DEST.key`), so that `lors
/// download --xnd DEST` reads it anywhere the trust directory holds the
/// metadata manager's key.
pub async fn export(
    grid: &Grid,
    path: &str,
    version: Option<u64>,
    dest: &Path,
) -> Result<Exported, Error> {
    let mdm = need_mdm(grid)?;
    let (fv, verified) = mdm.get_signed(path, version).await?;
    let mut key_file = None;
    if let (Some(_), Some(w)) = (&fv.exnode.encryption, &fv.wrapped_key) {
        let side = key_sidecar(dest);
        super::write_private(&side, format!("{w}\n").as_bytes())?;
        key_file = Some(side.display().to_string());
    }
    super::write_private(dest, fv.answer.exnode.as_bytes())?;
    Ok(Exported {
        path: fv.path.clone(),
        file: fv.id.clone(),
        version: fv.version,
        exnode: dest.display().to_string(),
        key_file,
        signature: verified.into(),
    })
}

/// Fetches the exNode, ticket and data key of `src`.
pub async fn open(grid: &Grid, src: &Source, need_key_for_data: bool) -> Result<Opened, Error> {
    match src {
        Source::Path { path, version } => {
            let mdm = need_mdm(grid)?;
            let (fv, verified) = mdm.get_signed(path, *version).await?;
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
                signature: verified.into(),
            })
        }
        Source::Xnd(f) => {
            let (x, signature) = read_xnd(grid, f)?;
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
                signature,
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
    /// Who vouched for the exNode read.
    pub exnode_signature: Provenance,
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
    download_sized(grid, src, sink, threads, progress, resume, None).await
}

/// [`download_with`], telling `on_size` the file's size as soon as the
/// exNode is read (before any data moves): a progress bar then knows its
/// total and can give an ETA.
pub async fn download_sized(
    grid: &Grid,
    src: &Source,
    sink: Sink,
    threads: usize,
    progress: Option<Progress>,
    resume: Option<&Resume>,
    on_size: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<DownloadSummary, Error> {
    let started = std::time::Instant::now();
    // A path's VO is the VO the download acts in (a multi-VO proxy).
    let acting;
    let grid = match src {
        Source::Path { path, .. } => {
            acting = grid.in_vo_of(path);
            acting.as_ref()
        }
        Source::Xnd(_) => grid,
    };
    let o = open(grid, src, true).await?;
    if let Some(f) = on_size {
        f(o.exnode.size);
    }
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
        let done = if r.resume {
            journal::download_done(&r.journal, &o.exnode)
        } else {
            Default::default()
        };
        skipped = done.len();
        let cannot =
            |e: std::io::Error| Error::Local(format!("cannot write {}: {e}", r.journal.display()));
        let j = if done.is_empty() {
            Journal::create(&r.journal, &journal::DownloadHeader::of(&o.exnode)).map_err(cannot)?
        } else {
            Journal::append(&r.journal).map_err(cannot)?
        };
        opts.skip = Arc::new(done);
        // Best effort: a range missing from the journal is fetched again
        // on resume.
        opts.on_written = Some(Arc::new(move |offset| j.add(&offset)));
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
        exnode_signature: o.signature.clone(),
    })
}

/// The ticket of a download by path, renewed from the metadata manager
/// before it expires.
pub(super) fn renewed_tickets(
    grid: &Grid,
    src: &Source,
    o: &Opened,
) -> Option<Arc<transfer::Tickets>> {
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

pub(super) fn source_text(src: &Source) -> String {
    match src {
        Source::Path { path, .. } => path.clone(),
        Source::Xnd(f) => f.display().to_string(),
    }
}
