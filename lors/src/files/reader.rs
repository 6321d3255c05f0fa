//! Random access to a file on the grid: [`FileReader`] reads any byte range
//! of a file (by path at the metadata manager, or an `--xnd` exNode),
//! fetching only the extents that hold it, each verified and decrypted as
//! `download` does, failing over between replicas and rebuilding from
//! parity.

use std::sync::Arc;

use super::download::{open, renewed_tickets};
use super::{download_pool, Grid, Source};
use crate::credentials::Error;
use crate::transfer::{DownloadOptions, DownloadReport, ExtentReader};

/// How a [`FileReader`] caches and reads ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Bytes of decrypted extents kept for later reads (at least one
    /// extent is always kept).
    pub cache_bytes: u64,
    /// Extents fetched ahead of a sequential reader.
    pub read_ahead: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cache_bytes: 64 << 20,
            read_ahead: 4,
        }
    }
}

/// An open file for reading at any offset. Cheap to clone; clones share
/// the cache. `read_at` may be called from several tasks at once.
#[derive(Clone)]
pub struct FileReader {
    inner: Arc<Inner>,
}

struct Inner {
    extents: ExtentReader,
    #[allow(dead_code)]
    opts: ReaderOptions,
}

impl FileReader {
    /// Opens `src` (its exNode, ticket and data key) for reading.
    pub async fn open(grid: &Grid, src: &Source, opts: ReaderOptions) -> Result<FileReader, Error> {
        let o = open(grid, src, true).await?;
        let pool = download_pool(grid, &o.exnode).await?;
        let dl = DownloadOptions {
            threads: 1,
            ticket: o.ticket.clone(),
            tickets: renewed_tickets(grid, src, &o),
            key: o.key.clone(),
            ..Default::default()
        };
        let extents = ExtentReader::new(&o.exnode, pool, dl)?;
        Ok(FileReader {
            inner: Arc::new(Inner { extents, opts }),
        })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.extents.size()
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were
    /// read (0 at or past the end of the file, fewer only at its end).
    pub async fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let size = self.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(size - offset) as usize;
        let mut done = 0usize;
        while done < want {
            let at = offset + done as u64;
            let i =
                self.inner.extents.extent_at(at).ok_or_else(|| {
                    Error::Data(format!("no extent of the exNode holds byte {at}"))
                })?;
            let (start, _) = self
                .inner
                .extents
                .extents()
                .nth(i)
                .ok_or_else(|| Error::Data(format!("no extent {i}")))?;
            let data = self.inner.extents.fetch(i).await?;
            let from = (at - start) as usize;
            let n = (data.len().saturating_sub(from)).min(want - done);
            if n == 0 {
                return Err(Error::Data(format!(
                    "extent {i} is shorter than the exNode says"
                )));
            }
            buf[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
        }
        Ok(done)
    }

    /// Failovers, rebuilds and corrupt mappings met so far.
    pub fn report(&self) -> DownloadReport {
        self.inner.extents.report()
    }
}
