//! Whole-file transfers: `lors_upload_file`, `lors_upload_buffer`,
//! `lors_download_file`, `lors_download_buffer`, with progress callbacks,
//! and the upload options they share with `lors_create`.

use std::ffi::{c_char, c_int, c_void};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use exnode::Security;
use lors_rs::client::{default_settings, Client};
use lors_rs::files::{self, Dest, FileReader, Grid, ReaderOptions, Source, UploadSettings};
use lors_rs::transfer::{self, Redundancy};
use lors_rs::Error;

use crate::abi::{
    block_on, bytes, bytes_mut, need_out, put, status, text, usage, Failure, Outcome,
};
use crate::client::{client, lors_client};
use crate::{
    LORS_ENCRYPT_DEFAULT, LORS_ENCRYPT_NO, LORS_ENCRYPT_YES, LORS_ERR_TOO_SMALL,
    LORS_SECURITY_CRYPTO, LORS_SECURITY_DEFAULT, LORS_SECURITY_FULL, LORS_SECURITY_LEGACY,
};

/// How an upload is stored. Zero in any field means the configuration's
/// value, else the default of `lors upload`; a NULL options pointer means
/// all zero. Zero-initialize it (`lors_upload_options o = {0};`).
#[repr(C)]
pub struct lors_upload_options {
    /// Replicas of each block on distinct depots (excludes ec_k/ec_m).
    pub copies: u16,
    /// Erasure coding: ec_k data and ec_m parity shares per block (both
    /// set, or neither).
    pub ec_k: u16,
    pub ec_m: u16,
    /// LORS_SECURITY_DEFAULT, _LEGACY, _CRYPTO or _FULL.
    pub security: c_int,
    /// LORS_ENCRYPT_DEFAULT, _YES or _NO.
    pub encrypt: c_int,
    /// Blocks in flight at once.
    pub threads: u32,
    /// Block size in bytes (default 8 MiB).
    pub block_size: u64,
    /// Allocation lifetime in seconds (default 7 days).
    pub duration: u64,
}

/// Called with the bytes done so far and the total (0 if unknown), on the
/// thread that made the call, before it returns; the last call has
/// done == total on success. It must not call liblors (such a call fails
/// with LORS_ERR_USAGE).
pub type lors_progress_fn = Option<unsafe extern "C" fn(done: u64, total: u64, data: *mut c_void)>;

/// A progress callback with its user data.
#[derive(Clone, Copy)]
pub(crate) struct Report {
    f: unsafe extern "C" fn(u64, u64, *mut c_void),
    data: *mut c_void,
}

impl Report {
    pub(crate) fn new(f: lors_progress_fn, data: *mut c_void) -> Option<Report> {
        f.map(|f| Report { f, data })
    }

    pub(crate) fn call(&self, done: u64, total: u64) {
        // SAFETY: a function of the caller's, with the caller's data.
        unsafe { (self.f)(done, total, self.data) }
    }
}

#[derive(Default)]
struct Counter {
    done: AtomicU64,
    changed: tokio::sync::Notify,
}

/// Runs `op` with a progress hook that counts bytes (from any task) and
/// calls `report` on this thread, in the caller's runtime context, as the
/// count changes and once at the end.
async fn with_progress<T, F>(
    report: Option<Report>,
    total: u64,
    op: impl FnOnce(Option<transfer::Progress>) -> F,
) -> T
where
    F: Future<Output = T>,
{
    let Some(r) = report else {
        return op(None).await;
    };
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    let hook: transfer::Progress = Arc::new(move |n| {
        c.done.fetch_add(n, Ordering::Relaxed);
        c.changed.notify_one();
    });
    let fut = op(Some(hook));
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => {
                r.call(counter.done.load(Ordering::Relaxed), total);
                return out;
            }
            _ = counter.changed.notified() => r.call(counter.done.load(Ordering::Relaxed), total),
        }
    }
}

/// The settings of an upload: `o` over the configuration's.
pub(crate) fn settings(
    c: &Client,
    grid: &Grid,
    o: Option<&lors_upload_options>,
) -> Result<UploadSettings, Failure> {
    let mut s = default_settings(c.config(), grid);
    let Some(o) = o else { return Ok(s) };
    match (o.copies, o.ec_k, o.ec_m) {
        (0, 0, 0) => {}
        (n, 0, 0) => s.redundancy = Redundancy::Copies(n),
        (0, k, m) if k > 0 && m > 0 => {
            s.redundancy = transfer::parse_ec(&format!("{k}+{m}")).map_err(usage)?;
        }
        (n, k, m) if n > 0 => {
            return Err(usage(format!(
                "copies ({n}) and ec_k+ec_m ({k}+{m}) exclude each other"
            )))
        }
        (_, k, m) => return Err(usage(format!("ec_k and ec_m are both needed ({k}+{m})"))),
    }
    s.security = match o.security {
        LORS_SECURITY_DEFAULT => s.security,
        LORS_SECURITY_LEGACY => Security::Legacy,
        LORS_SECURITY_CRYPTO => Security::Crypto,
        LORS_SECURITY_FULL => Security::Full,
        v => return Err(usage(format!("security: unknown level {v}"))),
    };
    s.encrypt = match o.encrypt {
        LORS_ENCRYPT_DEFAULT => grid.key.is_some() || s.security != Security::Legacy,
        LORS_ENCRYPT_YES => true,
        LORS_ENCRYPT_NO => false,
        v => return Err(usage(format!("encrypt: unknown value {v}"))),
    };
    if o.threads > 0 {
        s.threads = o.threads as usize;
    }
    if o.block_size > 0 {
        s.block_size = o.block_size;
    }
    if o.duration > 0 {
        s.placement.duration = o.duration;
    }
    Ok(s)
}

fn local(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Local(format!("cannot {what} {}: {e}", path.display()))
}

/// Uploads the local file `local_file` to `path` at the metadata manager
/// (a new version if it exists) as `opts` says (NULL: the defaults);
/// stores the new version in `*version` unless NULL. All or nothing: the
/// version is registered only after every block is stored.
/// Errors: LORS_ERR_USAGE (NULL or bad arguments), LORS_ERR_LOCAL (the
/// local file), LORS_ERR_NO_PROXY, LORS_ERR_REFUSED (no write right),
/// LORS_ERR_UNAVAILABLE (services, too few depots), LORS_ERR_CONFLICT.
#[no_mangle]
pub unsafe extern "C" fn lors_upload_file(
    c: *const lors_client,
    local_file: *const c_char,
    path: *const c_char,
    opts: *const lors_upload_options,
    progress: lors_progress_fn,
    progress_data: *mut c_void,
    version: *mut u64,
) -> c_int {
    status("lors_upload_file", || {
        let client = client(c)?;
        // SAFETY (all three): the caller's contract.
        let local_file = PathBuf::from(unsafe { text(local_file, "local_file") }?);
        let path = unsafe { text(path, "path") }?;
        let opts = unsafe { opts.as_ref() };
        let grid = client.grid()?;
        let mut s = settings(&client, &grid, opts)?;
        s.filename = local_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let size = std::fs::metadata(&local_file)
            .map_err(|e| local("read", &local_file, e))?
            .len();
        let dest = Dest::Path(path.to_owned());
        let summary = block_on(with_progress(
            Report::new(progress, progress_data),
            size,
            |p| async {
                let f = tokio::fs::File::open(&local_file)
                    .await
                    .map_err(|e| local("read", &local_file, e))?;
                files::upload(&grid, f, Some(size), &dest, &s, p).await
            },
        ))??;
        // SAFETY: NULL or valid for writing (contract).
        unsafe { put(version, summary.version) };
        Ok(())
    })
}

/// Uploads `len` bytes at `data` (NULL allowed when len is 0: an empty
/// file) to `path`, as lors_upload_file. The buffer is read during the
/// call only.
#[no_mangle]
pub unsafe extern "C" fn lors_upload_buffer(
    c: *const lors_client,
    data: *const c_void,
    len: usize,
    path: *const c_char,
    opts: *const lors_upload_options,
    progress: lors_progress_fn,
    progress_data: *mut c_void,
    version: *mut u64,
) -> c_int {
    status("lors_upload_buffer", || {
        let client = client(c)?;
        // SAFETY (all three): the caller's contract.
        let data = unsafe { bytes(data.cast(), len, "data") }?;
        let path = unsafe { text(path, "path") }?;
        let opts = unsafe { opts.as_ref() };
        let grid = client.grid()?;
        let s = settings(&client, &grid, opts)?;
        let dest = Dest::Path(path.to_owned());
        let summary = block_on(with_progress(
            Report::new(progress, progress_data),
            len as u64,
            |p| files::upload(&grid, data, Some(len as u64), &dest, &s, p),
        ))??;
        // SAFETY: NULL or valid for writing (contract).
        unsafe { put(version, summary.version) };
        Ok(())
    })
}

/// Downloads the current version of `path` into the local file
/// `local_file`, written as `.NAME.lors-part` beside it and renamed when
/// complete (a failed download leaves no file, and an existing
/// `local_file` untouched); a `local_file` that exists and is not a
/// regular file (`/dev/null`, a FIFO) is written in place, never replaced;
/// a directory is refused (LORS_ERR_USAGE) before anything is fetched. Blocks are fetched in parallel, verified and
/// decrypted, failing over between replicas and rebuilding from parity.
/// Errors: LORS_ERR_USAGE, LORS_ERR_NOT_FOUND, LORS_ERR_REFUSED (no read
/// right), LORS_ERR_NO_PROXY, LORS_ERR_UNAVAILABLE, LORS_ERR_DATA (no
/// intact copy of some block), LORS_ERR_LOCAL (the local file).
#[no_mangle]
pub unsafe extern "C" fn lors_download_file(
    c: *const lors_client,
    path: *const c_char,
    local_file: *const c_char,
    progress: lors_progress_fn,
    progress_data: *mut c_void,
) -> c_int {
    status("lors_download_file", || {
        let client = client(c)?;
        // SAFETY (both): the caller's contract.
        let path = unsafe { text(path, "path") }?;
        let dest = PathBuf::from(unsafe { text(local_file, "local_file") }?);
        let grid = client.grid()?;
        let threads = default_settings(client.config(), &grid).threads;
        let report = Report::new(progress, progress_data);
        let src = Source::Path {
            path: path.to_owned(),
            version: None,
        };
        block_on(async {
            // The total for the callback: one more request, only with one.
            let total = match (&report, &grid.mdm) {
                (Some(_), Some(mdm)) => mdm.stat(path).await?.size,
                _ => 0,
            };
            with_progress(report, total, |p| {
                files::download_to_path(&grid, &src, &dest, threads, p)
            })
            .await
        })??;
        Ok(())
    })
}

/// Bytes read per progress report by lors_download_buffer.
const BUFFER_CHUNK: usize = 8 << 20;

/// Downloads the current version of `path` into the caller's buffer of
/// `capacity` bytes at `buf`, storing the file's size in `*size`. If the
/// file is larger than `capacity`, nothing is read and the call fails with
/// LORS_ERR_TOO_SMALL, `*size` set to the size needed (so buf NULL,
/// capacity 0 asks for the size). Errors otherwise as lors_download_file.
#[no_mangle]
pub unsafe extern "C" fn lors_download_buffer(
    c: *const lors_client,
    path: *const c_char,
    buf: *mut c_void,
    capacity: usize,
    size: *mut u64,
    progress: lors_progress_fn,
    progress_data: *mut c_void,
) -> c_int {
    status("lors_download_buffer", || -> Outcome {
        let client = client(c)?;
        // SAFETY (both): the caller's contract.
        let path = unsafe { text(path, "path") }?;
        let buf = unsafe { bytes_mut(buf.cast(), capacity, "buf") }?;
        need_out(size, "size")?;
        let grid = client.grid()?;
        let src = Source::Path {
            path: path.to_owned(),
            version: None,
        };
        // Read once, in order: no cache beyond the extent in use, the
        // default read-ahead to keep several extents in flight.
        let opts = ReaderOptions {
            cache_bytes: 0,
            ..ReaderOptions::default()
        };
        let report = Report::new(progress, progress_data);
        block_on(async {
            let r = FileReader::open(&grid, &src, opts).await?;
            let n = r.size();
            // SAFETY: checked not NULL above; valid (contract).
            unsafe { put(size, n) };
            if n > capacity as u64 {
                return Err(Failure::new(
                    LORS_ERR_TOO_SMALL,
                    format!("{path} has {n} bytes, the buffer {capacity}"),
                ));
            }
            let want = &mut buf[..n as usize];
            let mut done = 0;
            while done < want.len() {
                let end = (done + BUFFER_CHUNK).min(want.len());
                let got = r.read_at(done as u64, &mut want[done..end]).await?;
                if got == 0 {
                    return Err(Failure::from(Error::Data(format!(
                        "{path}: ended after {done} of {n} bytes"
                    ))));
                }
                done += got;
                if let Some(r) = &report {
                    r.call(done as u64, n);
                }
            }
            if let (Some(r), 0) = (&report, n) {
                r.call(0, 0);
            }
            Ok(())
        })?
    })
}
