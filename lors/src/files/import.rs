//! `lors import-exnodes DIR GRIDPATH`: a tree of existing exNode files
//! (`NAME.xnd`, LoRS 0.82's or written by `lors upload --xnd`) registered
//! at the metadata manager under GRIDPATH (`GRIDPATH/REL/NAME`), without
//! copying data: the depots keep serving the allocations, whose legacy
//! capabilities are bearer strings on the depots' legacy ports.
//!
//! - A LoRS exNode has no file UUID, which the metadata manager demands:
//!   the import gives it a new one. An exNode of ours keeps its UUID (an
//!   encrypted one's data key, in `NAME.xnd.key`, is wrapped for that UUID;
//!   it is unwrapped with the user's key and wrapped for the recipients of
//!   an ordinary upload).
//! - Refused, and reported with the reason: a file that is not a usable
//!   exNode, one whose allocations are on secure depots (they need the
//!   metadata manager's ticket of the file they were stored for), one
//!   with end-to-end functions we cannot decode, an encrypted one whose
//!   key file is missing or not ours; an existing destination is left as
//!   it is (reported as skipped), so a re-run imports only the rest.
//! - The depots are not asked: an exNode whose depots are gone imports,
//!   and reading it fails (`lors check PATH` reads every block back).
//! - With `copy`, each exNode's data is instead downloaded (through the
//!   exNode, as `lors download --xnd`) and uploaded as an ordinary file,
//!   encrypted with the given settings, to the VO's depots.

use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use super::{
    key_sidecar, need_key, need_mdm, read_xnd, Dest, Grid, Source, UploadControl, UploadSettings,
};
use crate::credentials::Error;
use crate::crypto::{self, WrapContext};
use crate::transfer::Sink;

/// How exNodes are imported.
#[derive(Clone)]
pub struct ImportOptions {
    /// Re-upload the data (encrypted, with `settings`) instead of
    /// registering the exNodes as they are.
    pub copy: bool,
    /// Files at once.
    pub jobs: usize,
    pub settings: UploadSettings,
    /// Blocks in flight per download (`copy`).
    pub threads: usize,
}

/// One exNode imported.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub xnd: String,
    pub path: String,
    pub size: u64,
    /// Its data is protected only by a key written in the exNode itself
    /// (LoRS `des_encrypt`/`aes_encrypt`): whoever reads the exNode can
    /// decrypt it.
    pub key_in_exnode: bool,
}

/// One exNode not imported, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotImported {
    pub xnd: String,
    pub path: String,
    pub reason: String,
    pub code: u8,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub dest: String,
    pub copied: bool,
    pub imported: Vec<Imported>,
    /// Already at the destination: left as they are.
    pub skipped: Vec<NotImported>,
    pub failed: Vec<NotImported>,
    pub seconds: f64,
}

impl ImportReport {
    /// 0, or the first failure's exit code.
    pub fn exit_code(&self) -> u8 {
        self.failed.first().map_or(crate::exit::OK, |f| f.code)
    }
}

/// The `.xnd` files under `dir` (relative paths, sorted) and the
/// directories holding them.
fn exnode_files(dir: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let d = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let rd =
            std::fs::read_dir(&d).map_err(|e| Error::Local(format!("{}: {e}", d.display())))?;
        for e in rd {
            let e = e.map_err(|e| Error::Local(format!("{}: {e}", d.display())))?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = e
                .file_type()
                .map_err(|e| Error::Local(format!("{}: {e}", d.display())))?;
            if ft.is_dir() {
                stack.push(child);
            } else if name.ends_with(".xnd") && name.len() > 4 {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Imports the exNodes under `dir` to `gridpath` (see the module
/// documentation). An error is the whole import's (`dir` unreadable,
/// `gridpath`'s parent missing, no metadata manager); each exNode's
/// failure is in the report.
pub async fn import_exnodes(
    grid: &Grid,
    dir: &Path,
    gridpath: &str,
    opts: &ImportOptions,
) -> Result<ImportReport, Error> {
    use futures_util::StreamExt;
    let started = std::time::Instant::now();
    let mdm = need_mdm(grid)?;
    let root = gridpath.trim_end_matches('/').to_owned();
    if !dir.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", dir.display())));
    }
    let files = exnode_files(dir)?;
    // The destination: an existing directory, or a new one in an existing
    // parent (checked before anything is registered).
    match mdm.stat(&root).await {
        Ok(e) if e.kind == metadata_api::files::EntryKind::Dir => {}
        Ok(_) => {
            return Err(Error::Usage(format!(
                "{root} is a file: give a directory to import into"
            )))
        }
        Err(Error::NotFound(_)) => {
            let parent = root.rsplit_once('/').map_or("", |(p, _)| p);
            if !parent.is_empty() {
                match mdm.stat(parent).await {
                    Ok(_) => {}
                    Err(Error::NotFound(_)) => {
                        return Err(Error::NotFound(format!(
                            "{parent}: no such directory (create it first: lors mkdir -p {parent})"
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
            mdm.mkdir(&root, false).await?;
        }
        Err(e) => return Err(e),
    }
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|f| f.rsplit_once('/').map(|(d, _)| d.to_owned()))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        mdm.mkdir(&format!("{root}/{d}"), true).await?;
    }
    let results: Vec<(String, String, Result<Option<Imported>, Error>)> =
        futures_util::stream::iter(files)
            .map(|rel| {
                let xnd = dir.join(&rel);
                let path = format!("{root}/{}", &rel[..rel.len() - 4]);
                async move {
                    let r = if opts.copy {
                        copy_one(grid, &xnd, &path, opts).await.map(Some)
                    } else {
                        import_one(grid, &xnd, &path).await
                    };
                    (xnd.display().to_string(), path, r)
                }
            })
            .buffer_unordered(opts.jobs.max(1))
            .collect()
            .await;
    let mut report = ImportReport {
        source: dir.display().to_string(),
        dest: root,
        copied: opts.copy,
        ..Default::default()
    };
    for (xnd, path, r) in results {
        match r {
            Ok(Some(i)) => report.imported.push(i),
            Ok(None) => report.skipped.push(NotImported {
                xnd,
                path,
                reason: "the destination exists (left as it is)".into(),
                code: crate::exit::CONFLICT,
            }),
            Err(e) => report.failed.push(NotImported {
                xnd,
                path,
                reason: e.to_string(),
                code: e.exit_code(),
            }),
        }
    }
    report.imported.sort_by(|a, b| a.xnd.cmp(&b.xnd));
    report.failed.sort_by(|a, b| a.xnd.cmp(&b.xnd));
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Registers one exNode as it is; `None` if `path` exists.
async fn import_one(grid: &Grid, xnd: &Path, path: &str) -> Result<Option<Imported>, Error> {
    let mdm = need_mdm(grid)?;
    let (mut x, _) = read_xnd(grid, xnd)?;
    let secure = x
        .mappings
        .iter()
        .any(|m| m.security.is_some_and(|s| s != exnode::Security::Legacy));
    if secure {
        return Err(Error::Usage(
            "its allocations are on secure depots, which serve only the file they were stored \
             for: it cannot be registered as another file"
                .into(),
        ));
    }
    for m in &x.mappings {
        crate::lors_e2e::supported(&m.functions)
            .map_err(|e| Error::Data(format!("its data cannot be decoded: {e}")))?;
    }
    let key_in_exnode = x.mappings.iter().any(|m| keyed(&m.functions));
    match mdm.stat(path).await {
        Ok(_) => return Ok(None),
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let file = *x.file.get_or_insert_with(Uuid::new_v4);
    let wrapped = match &x.encryption {
        None => Vec::new(),
        Some(enc) => {
            let me = need_key(grid)?;
            let side = key_sidecar(xnd);
            let text = std::fs::read_to_string(&side).map_err(|e| {
                Error::Data(format!(
                    "it is encrypted and its key file {} cannot be read: {e}",
                    side.display()
                ))
            })?;
            let ctx = WrapContext {
                file,
                key_id: &enc.key_id,
            };
            let key = crypto::unwrap(text.trim(), me, &ctx).map_err(|e| {
                Error::Data(format!(
                    "cannot unwrap the data key in {}: {e}",
                    side.display()
                ))
            })?;
            let whoami = mdm.whoami().await?;
            let recipients = crate::keys::upload_recipients(mdm, me, &whoami).await?;
            crate::keys::wrap_for(&key, &ctx, &recipients)?
        }
    };
    x.version = 0;
    let xml = exnode::to_xml(&x);
    let r = mdm.put_version(path, 0, &xml, &wrapped).await;
    match r {
        Ok(r) => Ok(Some(Imported {
            xnd: xnd.display().to_string(),
            path: r.path,
            size: r.size,
            key_in_exnode,
        })),
        // Registered meanwhile (a concurrent import): left as it is.
        Err(Error::Conflict(_)) if mdm.stat(path).await.is_ok() => Ok(None),
        // The path is free, the UUID is not.
        Err(Error::Conflict(m)) => Err(Error::Conflict(format!(
            "its file UUID {file} is taken (an exNode of ours keeps its UUID, to which its \
             data is bound; imported before under another path?): {m}"
        ))),
        Err(e) => Err(e),
    }
}

/// Whether LoRS end-to-end functions (nested ones too) encrypt, with a
/// key the exNode itself holds.
fn keyed(functions: &[exnode::Function]) -> bool {
    functions
        .iter()
        .any(|f| f.name.contains("encrypt") || keyed(&f.inner))
}

/// Downloads one exNode's data into a temporary file and uploads it to
/// `path` as an ordinary file.
async fn copy_one(
    grid: &Grid,
    xnd: &Path,
    path: &str,
    opts: &ImportOptions,
) -> Result<Imported, Error> {
    let mdm = need_mdm(grid)?;
    match mdm.stat(path).await {
        Ok(_) => {
            return Err(Error::Conflict(format!(
                "{path} exists: remove it first to copy the exNode's data there"
            )))
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| Error::Local(format!("cannot make a temporary file: {e}")))?;
    let sink = tmp
        .reopen()
        .map_err(|e| Error::Local(format!("cannot make a temporary file: {e}")))?;
    let src = Source::Xnd(PathBuf::from(xnd));
    let got = super::download(grid, &src, Sink::File(sink), opts.threads, None).await?;
    let f = tokio::fs::File::open(tmp.path())
        .await
        .map_err(|e| Error::Local(format!("cannot read the temporary file: {e}")))?;
    let mut s = opts.settings.clone();
    s.filename = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let ctl = UploadControl::default();
    let up = super::upload_controlled(
        grid,
        f,
        Some(got.size),
        &Dest::Path(path.to_owned()),
        &s,
        None,
        &ctl,
    )
    .await?;
    Ok(Imported {
        xnd: xnd.display().to_string(),
        path: up.dest,
        size: up.size,
        key_in_exnode: false,
    })
}
