//! Writing a file through a handle: [`FileWriter`] stages what is written
//! in a local file (owner-only, unlinked at once, so nothing is left after
//! a crash) and uploads it as a new version when committed, all or
//! nothing, as `upload` does: a commit that fails (no such directory, no
//! write right, a version put meanwhile, depots failing) registers nothing
//! and releases the allocations it made.
//!
//! The staged bytes take local disk space until the commit ends; bound
//! them with [`FileWriter::set_max_bytes`].

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::upload::{upload, Dest, UploadSettings, UploadSummary};
use super::Grid;
use crate::credentials::Error;

/// A file being written; nothing reaches the grid before
/// [`commit`](FileWriter::commit). Dropping it without committing discards
/// what was written.
pub struct FileWriter {
    grid: Grid,
    dest: Dest,
    settings: UploadSettings,
    staged: std::fs::File,
    written: u64,
    max_bytes: Option<u64>,
    /// A write failed part way: what is staged is not what was written.
    broken: bool,
}

impl FileWriter {
    /// A writer of a new version of `dest`, staging in `staging_dir` (the
    /// system's temporary directory if `None`).
    pub fn create(
        grid: &Grid,
        dest: Dest,
        settings: UploadSettings,
        staging_dir: Option<&Path>,
    ) -> Result<FileWriter, Error> {
        let dir = staging_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let staged = tempfile::tempfile_in(&dir)
            .map_err(|e| Error::Local(format!("cannot stage in {}: {e}", dir.display())))?;
        Ok(FileWriter {
            grid: grid.clone(),
            dest,
            settings,
            staged,
            written: 0,
            max_bytes: None,
            broken: false,
        })
    }

    /// At most `max` bytes staged (`None`: no bound, the default): a
    /// write that would pass it is refused whole ([`Error::Usage`]),
    /// nothing of it staged, and the writer stays usable.
    pub fn set_max_bytes(&mut self, max: Option<u64>) {
        self.max_bytes = max;
    }

    /// The bound set by [`set_max_bytes`](FileWriter::set_max_bytes).
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Appends `data` to the staged file. A write that fails for a local
    /// reason (disk full) may have staged part of `data`: the writer then
    /// refuses further writes and its commit.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.usable()?;
        let after = self.written.saturating_add(data.len() as u64);
        if let Some(max) = self.max_bytes.filter(|&m| after > m) {
            return Err(Error::Usage(format!(
                "writing {} more bytes after {} would stage more than the {max} bytes allowed",
                data.len(),
                self.written
            )));
        }
        if let Err(e) = self.staged.write_all(data) {
            self.broken = true;
            return Err(Error::Local(format!("cannot stage the data: {e}")));
        }
        self.written = after;
        Ok(())
    }

    fn usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Local(
                "an earlier write to this writer failed: what is staged is incomplete".into(),
            ));
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Uploads what was written as a new version of the destination. On
    /// error nothing is registered and what the upload stored is released
    /// (the error names allocations that could not be freed).
    pub async fn commit(mut self) -> Result<UploadSummary, Error> {
        self.usable()?;
        self.staged
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::Local(format!("cannot read the staged data: {e}")))?;
        let src = tokio::fs::File::from_std(self.staged);
        upload(
            &self.grid,
            src,
            Some(self.written),
            &self.dest,
            &self.settings,
            None,
        )
        .await
    }

    /// Discards what was written.
    pub fn abort(self) {}
}
