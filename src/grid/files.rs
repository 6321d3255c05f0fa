//! The grid directory and the files the harness writes: everything is
//! owner-only (directories 0700, files 0600) whatever the umask.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Mode of every directory the harness makes.
pub(super) const PRIVATE_DIR: u32 = 0o700;
/// Mode of every file the harness writes.
pub(super) const PRIVATE_FILE: u32 = 0o600;

/// Creates `path` and its missing parents 0700 (whatever the umask).
pub(super) fn private_dir(path: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .with_context(|| format!("create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Writes `path` (its directory made private first), created 0600 and
/// kept so (never readable by others, not even for a moment).
pub(super) fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        private_dir(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A key, password hashes: the same as [`write_file`] (every file the
/// harness writes is owner-only); the name says why it matters.
pub(super) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    write_file(path, text)
}

/// Copies a file, the copy 0600 (`fs::copy` would copy the mode).
pub(super) fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let data = fs::read(from).with_context(|| format!("read {}", from.display()))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    f.write_all(&data)
        .with_context(|| format!("write {}", to.display()))?;
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("chmod {}", to.display()))
}

pub(super) fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    private_dir(to)?;
    for e in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            copy_private(&src, &dst)?;
        }
    }
    Ok(())
}

/// A TOML string for a path.
pub(super) fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The directory of a grid; removed on drop unless kept.
pub(super) struct GridDir {
    pub(super) path: PathBuf,
    keep: bool,
}

impl GridDir {
    /// Makes the grid directory 0700: `dir` (created if missing, refused
    /// unless empty), or a new temporary directory.
    pub(super) fn create(dir: Option<&Path>) -> anyhow::Result<GridDir> {
        let path = match dir {
            Some(d) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(PRIVATE_DIR)
                    .create(d)
                    .with_context(|| format!("create {}", d.display()))?;
                if fs::read_dir(d)?.next().is_some() {
                    bail!(
                        "{} is not empty: give a new directory for the grid",
                        d.display()
                    );
                }
                fs::canonicalize(d)?
            }
            None => tempfile::Builder::new()
                .prefix("ibp-grid-")
                .permissions(fs::Permissions::from_mode(PRIVATE_DIR))
                .tempdir()
                .context("create the grid directory")?
                .keep(),
        };
        // Whatever the umask and whoever made it.
        fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_DIR))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(GridDir {
            path,
            keep: keep_requested(),
        })
    }
}

impl Drop for GridDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("ibp-grid: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn keep_requested() -> bool {
    ["IBP_GRID_KEEP", "KEEP"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty() && v != "0"))
}
