//! Writing a file through a handle: [`FileWriter`] stages what is written
//! in a local file (owner-only, unlinked at once, so nothing is left after
//! a crash) and uploads it as a new version when committed, all or
//! nothing, as `upload` does: a commit that fails (no such directory, no
//! write right, a version put meanwhile, depots failing) registers nothing
//! and releases the allocations it made.
//!
//! The staged bytes take local disk space until the commit ends; bound
//! them with [`FileWriter::set_max_bytes`].
//!
//! Besides appending ([`FileWriter::write`]), a writer takes writes at any
//! offset ([`FileWriter::write_at`]), truncation ([`FileWriter::set_len`])
//! and reads of what it staged ([`FileWriter::read_at`]), and can commit
//! and go on ([`FileWriter::commit_in`]): what `lors mount` needs of a
//! file open for writing. [`FileWriter::expect_version`] makes a commit
//! refuse to replace a version stored meanwhile by another writer.

use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::upload::{upload_controlled, Dest, UploadControl, UploadSettings, UploadSummary};
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
    /// The version a commit must replace (see [`FileWriter::expect_version`]).
    base_version: Option<u64>,
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
            base_version: None,
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
        self.write_at(self.written, data).await
    }

    /// Writes `data` at `offset` of the staged file (a gap before it reads
    /// as zeros), growing it as needed; the bound of
    /// [`set_max_bytes`](FileWriter::set_max_bytes) applies to the size
    /// the file would reach. Fails like [`write`](FileWriter::write).
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.usable()?;
        let end = offset.saturating_add(data.len() as u64);
        let after = self.written.max(end);
        if let Some(max) = self.max_bytes.filter(|&m| after > m) {
            return Err(Error::Usage(format!(
                "writing {} bytes at {offset} would stage {after} bytes, more than the {max} allowed",
                data.len(),
            )));
        }
        if let Err(e) = self.staged.write_all_at(data, offset) {
            self.broken = true;
            return Err(Error::Local(format!("cannot stage the data: {e}")));
        }
        self.written = after;
        Ok(())
    }

    /// Cuts the staged file to `len` bytes, or extends it with zeros.
    pub fn set_len(&mut self, len: u64) -> Result<(), Error> {
        self.usable()?;
        if let Some(max) = self.max_bytes.filter(|&m| len > m) {
            return Err(Error::Usage(format!(
                "a size of {len} bytes is more than the {max} allowed to stage"
            )));
        }
        if let Err(e) = self.staged.set_len(len) {
            self.broken = true;
            return Err(Error::Local(format!("cannot resize the staged data: {e}")));
        }
        self.written = len;
        Ok(())
    }

    /// Reads what is staged at `offset` into `buf`: the bytes read, 0 at
    /// the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        if offset >= self.written || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.written - offset) as usize;
        self.staged
            .read_exact_at(&mut buf[..want], offset)
            .map_err(|e| Error::Local(format!("cannot read the staged data: {e}")))?;
        Ok(want)
    }

    /// A second handle on the stage, for reads at offsets
    /// ([`std::os::unix::fs::FileExt::read_at`]) while the writer goes
    /// on: `lors mount` uploads a file written in order from it while it
    /// is written. What it reads past [`written`](FileWriter::written),
    /// or after a later write at a lower offset, is not the file's.
    pub(crate) fn stage_handle(&self) -> Result<std::fs::File, Error> {
        self.staged
            .try_clone()
            .map_err(|e| Error::Local(format!("cannot read the staged data: {e}")))
    }

    /// Commits go to `dest` from now on (the file was renamed).
    pub fn set_dest(&mut self, dest: Dest) {
        self.dest = dest;
    }

    /// A commit replaces only `version` of the destination (0: the file
    /// must not exist yet), else fails with [`Error::Conflict`] and stores
    /// nothing: optimistic concurrency with other writers of the file.
    /// `None` (the default): whatever version is current at commit.
    pub fn expect_version(&mut self, version: Option<u64>) {
        self.base_version = version;
    }

    /// Whether writes and commits are still taken: an error once a
    /// write failed part way (what is staged is incomplete).
    pub fn usable(&self) -> Result<(), Error> {
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
        let grid = self.grid.clone();
        self.commit_in(&grid).await
    }

    /// [`commit`](FileWriter::commit) in the session `grid` (one with a
    /// renewed proxy, say), keeping the writer: what is staged stays, and
    /// with [`expect_version`](FileWriter::expect_version) set, the next
    /// commit must replace the version this one stored.
    pub async fn commit_in(&mut self, grid: &Grid) -> Result<UploadSummary, Error> {
        self.usable()?;
        let mut src = self
            .staged
            .try_clone()
            .map_err(|e| Error::Local(format!("cannot read the staged data: {e}")))?;
        src.seek(SeekFrom::Start(0))
            .map_err(|e| Error::Local(format!("cannot read the staged data: {e}")))?;
        let src = tokio::fs::File::from_std(src);
        let mut ctl = UploadControl::default();
        ctl.base_version = self.base_version;
        let summary = upload_controlled(
            grid,
            src,
            Some(self.written),
            &self.dest,
            &self.settings,
            None,
            &ctl,
        )
        .await?;
        if self.base_version.is_some() {
            self.base_version = Some(summary.version);
        }
        Ok(summary)
    }

    /// Discards what was written.
    pub fn abort(self) {}
}
