//! Writing a file through a handle: [`FileWriter`] stages what is written
//! in a local file (owner-only, unlinked at once, so nothing is left after
//! a crash) and uploads it as a new version when committed, all or
//! nothing, as `upload` does.

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
        })
    }

    /// Appends `data` to the staged file.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.staged
            .write_all(data)
            .map_err(|e| Error::Local(format!("cannot stage the data: {e}")))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Uploads what was written as a new version of the destination.
    pub async fn commit(mut self) -> Result<UploadSummary, Error> {
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
