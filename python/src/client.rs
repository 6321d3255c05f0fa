//! `lors.Client`: a session of the `lors` library (`lors::client::Client`)
//! for Python. Every method runs with the GIL released (see `runtime`);
//! answers are plain dicts and lists (the library's serde types through
//! `pythonize`, the same fields as `lors ... --json`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use exnode::Security;
use lors::client::{default_settings, Overrides};
use lors::config::Config;
use lors::depots::{self, DepotQuery};
use lors::files::{self, Dest, FileReader, Grid, ReaderOptions, Source, UploadSettings};
use lors::release::{self, Removal, SecureAccess};
use lors::transfer::Redundancy;
use lors::MetadataClient;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::errors::{to_py, usage};
use crate::reader::{read_into, Reader};
use crate::runtime::block_on;

/// A session: see docs/liblors-python.md. Shared by threads.
#[pyclass(module = "lors._lors", name = "Client", frozen)]
pub struct Client {
    inner: Arc<lors::client::Client>,
    /// The process that made it: its connections belong to that process's
    /// runtime, so a forked child must make its own client.
    pid: u32,
    /// The proxy file the client reads (for the error when it is missing).
    proxy: PathBuf,
}

/// What one upload sets over the configuration.
#[derive(Default)]
struct UploadChoice {
    redundancy: Option<Redundancy>,
    block_size: Option<u64>,
    security: Option<Security>,
    encrypt: Option<bool>,
    threads: Option<usize>,
    filename: Option<String>,
}

impl UploadChoice {
    /// The configuration's settings with these over them.
    fn settings(self, cfg: &Config, grid: &Grid) -> UploadSettings {
        let mut s = default_settings(cfg, grid);
        if let Some(r) = self.redundancy {
            s.redundancy = r;
        }
        if let Some(b) = self.block_size {
            s.block_size = b;
        }
        if let Some(sec) = self.security {
            s.security = sec;
        }
        // As `lors upload`: encrypted unless asked not to, except a legacy
        // upload without a key pair (nothing to wrap the data key for).
        s.encrypt = self
            .encrypt
            .unwrap_or(grid.key.is_some() || s.security != Security::Legacy);
        if let Some(t) = self.threads {
            s.threads = t;
        }
        s.filename = self.filename;
        s
    }
}

/// What an upload reads: a local file, or bytes in memory.
enum Input {
    File(PathBuf),
    Data(PyUntypedBuffer),
}

#[pymethods]
impl Client {
    /// A client of the configuration file (`$LORS_CONFIG`, else
    /// `~/.config/lors/config.toml`) and the `LORS_*` variables, as the
    /// `lors` command; each argument given overrides them.
    #[new]
    #[pyo3(signature = (lbone=None, metadata=None, trust=None, proxy=None, key=None, timeout=None))]
    fn new(
        py: Python<'_>,
        lbone: Option<String>,
        metadata: Option<String>,
        trust: Option<PathBuf>,
        proxy: Option<PathBuf>,
        key: Option<PathBuf>,
        timeout: Option<f64>,
    ) -> PyResult<Client> {
        let timeout = match timeout {
            None => None,
            Some(t) => Some(
                Duration::try_from_secs_f64(t)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| usage(py, format!("timeout={t}: give seconds above 0")))?,
            ),
        };
        let o = Overrides {
            lbone,
            mdm: metadata,
            trust,
            proxy: proxy.clone(),
            key,
            timeout,
        };
        let inner = py
            .detach(|| lors::client::Client::from_env(o))
            .map_err(|e| to_py(py, &e))?;
        Ok(Client {
            proxy: proxy.unwrap_or_else(|| inner.config().proxy_path()),
            inner: Arc::new(inner),
            pid: std::process::id(),
        })
    }

    /// Uploads `src` (a local path as `str` or `os.PathLike`, or bytes:
    /// `bytes`, `bytearray`, `memoryview`, a numpy array, anything with
    /// the buffer protocol) to `path` (`/VO/dir/name`) as a new version.
    /// Returns the summary (dict: dest, file, version, size, stored,
    /// mappings, redundancy, security, encrypted, seconds, mib_per_s).
    #[pyo3(signature = (src, path, *, copies=None, ec=None, block_size=None, security=None, encrypt=None, threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn upload<'py>(
        &self,
        py: Python<'py>,
        src: &Bound<'py, PyAny>,
        path: String,
        copies: Option<i64>,
        ec: Option<&Bound<'py, PyAny>>,
        block_size: Option<&Bound<'py, PyAny>>,
        security: Option<String>,
        encrypt: Option<bool>,
        threads: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.session(py)?;
        let mut choice = UploadChoice {
            encrypt,
            ..Default::default()
        };
        choice.redundancy = match (copies, ec) {
            (Some(_), Some(_)) => return Err(usage(py, "give copies or ec, not both")),
            (Some(n), None) => Some(Redundancy::Copies(
                u16::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| usage(py, format!("copies={n}: give 1 to 65535")))?,
            )),
            (None, Some(e)) => Some(parse_ec(py, e)?),
            (None, None) => None,
        };
        choice.block_size = block_size.map(|b| parse_block_size(py, b)).transpose()?;
        choice.security = security
            .map(|s| {
                Security::from_name(&s).ok_or_else(|| {
                    usage(py, format!("security={s:?}: give legacy, crypto or full"))
                })
            })
            .transpose()?;
        choice.threads = threads
            .map(|t| {
                usize::try_from(t)
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| usage(py, format!("threads={t}: give 1 or more")))
            })
            .transpose()?;
        let input = input(src)?;
        let dest = Dest::Path(path);
        let (file, data): (Option<PathBuf>, &[u8]) = match &input {
            Input::File(p) => {
                choice.filename = p.file_name().map(|n| n.to_string_lossy().into_owned());
                (Some(p.clone()), &[])
            }
            Input::Data(view) if view.len_bytes() == 0 => (None, &[]),
            // SAFETY: the exporter keeps `len_bytes` bytes at `buf_ptr`
            // while `view` holds its export, and `input` (the view) lives
            // until this function returns, after the upload. Python code
            // changing them meanwhile (another thread) changes what is
            // uploaded, as with any buffer handed to I/O.
            Input::Data(view) => (None, unsafe {
                std::slice::from_raw_parts(view.buf_ptr().cast::<u8>(), view.len_bytes())
            }),
        };
        let summary = block_on(py, async move {
            let grid = client.grid()?;
            let s = choice.settings(client.config(), &grid);
            match file {
                None => files::upload(&grid, data, Some(data.len() as u64), &dest, &s, None).await,
                Some(p) => {
                    let cannot = |e: std::io::Error| {
                        lors::Error::Local(format!("cannot read {}: {e}", p.display()))
                    };
                    let f = tokio::fs::File::open(&p).await.map_err(cannot)?;
                    let size = f.metadata().await.map_err(cannot)?.len();
                    files::upload(&grid, f, Some(size), &dest, &s, None).await
                }
            }
        })?;
        drop(input);
        Ok(pythonize::pythonize(py, &summary)?)
    }

    /// Downloads the file at `path` (its current version, or `version`):
    /// into `local_path` (written as `.NAME.lors-part` beside it and
    /// renamed when complete; returns None), else returned as `bytes`.
    #[pyo3(signature = (path, local_path=None, *, version=None))]
    fn download<'py>(
        &self,
        py: Python<'py>,
        path: String,
        local_path: Option<PathBuf>,
        version: Option<u64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let client = self.session(py)?;
        let src = Source::Path { path, version };
        match local_path {
            Some(dest) => {
                block_on(py, download_file(client, src, dest))?;
                Ok(None)
            }
            None => {
                // Through the reader, into the new bytes object in place:
                // no intermediate buffer and no copy (the reader's
                // read-ahead keeps the depots busy).
                let file = block_on(py, async move {
                    let grid = client.grid()?;
                    FileReader::open(&grid, &src, ReaderOptions::default()).await
                })?;
                let len = usize::try_from(file.size())
                    .map_err(|_| usage(py, "the file is larger than this machine's memory"))?;
                let mut got = 0;
                let bytes = PyBytes::new_with(py, len, |buf| {
                    got = read_into(py, &file, 0, buf)?;
                    Ok(())
                })?;
                if got != len {
                    return Err(to_py(
                        py,
                        &lors::Error::Data(format!("the file ended at byte {got} of {len}")),
                    ));
                }
                Ok(Some(bytes))
            }
        }
    }

    /// Opens the file at `path` (its current version, or `version`) for
    /// reads at any offset: a `lors.File` (an `io.RawIOBase`: read,
    /// readinto, seek, tell, read_at, readinto_at, size). Only the blocks
    /// a read needs are fetched; `cache_bytes` and `read_ahead` tune the
    /// reader's cache and sequential read-ahead.
    #[pyo3(signature = (path, *, version=None, cache_bytes=None, read_ahead=None))]
    fn open<'py>(
        &self,
        py: Python<'py>,
        path: String,
        version: Option<u64>,
        cache_bytes: Option<u64>,
        read_ahead: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.session(py)?;
        let mut opts = ReaderOptions::default();
        if let Some(c) = cache_bytes {
            opts.cache_bytes = c;
        }
        if let Some(r) = read_ahead {
            opts.read_ahead = r;
        }
        let src = Source::Path {
            path: path.clone(),
            version,
        };
        let file = block_on(py, async move {
            let grid = client.grid()?;
            FileReader::open(&grid, &src, opts).await
        })?;
        let reader = Bound::new(py, Reader::new(file))?;
        py.import("lors._file")?
            .getattr("File")?
            .call1((reader, path))
    }

    /// The entry at `path` (dict: path, kind, id, owner, version, size,
    /// created_at, updated_at, versions, stored, rights).
    fn stat<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyAny>> {
        let e = self.with_mdm(py, |mdm| async move { mdm.stat(&path).await })?;
        Ok(pythonize::pythonize(py, &e)?)
    }

    /// The entries of the directory `path` (a list of dicts as `stat`'s).
    fn ls<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyAny>> {
        let e = self.with_mdm(py, |mdm| async move { mdm.list(&path).await })?;
        Ok(pythonize::pythonize(py, &e)?)
    }

    /// Creates the directory `path` (with missing parents if `parents`,
    /// and then an existing directory is no error); returns its entry.
    #[pyo3(signature = (path, parents=false))]
    fn mkdir<'py>(
        &self,
        py: Python<'py>,
        path: String,
        parents: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let e = self.with_mdm(py, |mdm| async move { mdm.mkdir(&path, parents).await })?;
        Ok(pythonize::pythonize(py, &e)?)
    }

    /// Moves (renames) an entry within its VO; returns {from, to}.
    fn mv<'py>(&self, py: Python<'py>, src: String, dst: String) -> PyResult<Bound<'py, PyAny>> {
        let m = self.with_mdm(py, |mdm| async move { mdm.move_entry(&src, &dst).await })?;
        Ok(pythonize::pythonize(py, &m)?)
    }

    /// Deletes the file or empty directory `path` (or one non-current
    /// `version` of a file) and frees its allocations on the depots, as
    /// `lors rm`. Returns what was done (dict: deleted, releases,
    /// all_freed, lbone_error). If some allocations were not freed (they
    /// expire on their own) raises `ReleaseError` (code 9) after the
    /// deletion, with that dict as `.removal`.
    #[pyo3(signature = (path, version=None))]
    fn rm<'py>(
        &self,
        py: Python<'py>,
        path: String,
        version: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.session(py)?;
        let (removal, lbone_error) = block_on(py, async move {
            let grid = client.grid()?;
            let mdm = client.mdm(&grid)?;
            let mut lbone_error = None;
            let removal = release::delete_and_release(mdm, &path, version, async {
                secure_access(&grid)
                    .await
                    .map_err(|e| {
                        lbone_error = Some(format!("no depot grants from the L-Bone: {e}"))
                    })
                    .ok()
                    .flatten()
            })
            .await?;
            Ok((removal, lbone_error))
        })?;
        let d = pythonize::pythonize(py, &removal)?;
        d.set_item("all_freed", removal.all_freed())?;
        d.set_item("lbone_error", lbone_error)?;
        if removal.all_freed() {
            return Ok(d);
        }
        let exc = py
            .import("lors.errors")?
            .getattr("ReleaseError")?
            .call1((not_freed(&removal),))?;
        exc.setattr("code", lors::exit::RELEASE_FAILED)?;
        exc.setattr("removal", d)?;
        Err(PyErr::from_value(exc))
    }

    /// Usage of a VO (the caller's by default): dict as `lors usage --json`.
    #[pyo3(signature = (vo=None))]
    fn usage<'py>(&self, py: Python<'py>, vo: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let u = self.with_mdm(py, |mdm| async move { mdm.usage(vo.as_deref()).await })?;
        Ok(pythonize::pythonize(py, &u)?)
    }

    /// Who the metadata manager says we are (dict as `lors whoami --json`).
    fn whoami<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.with_mdm(py, |mdm| async move { mdm.whoami().await })?;
        Ok(pythonize::pythonize(py, &w)?)
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "lors.Client(lbone={:?}, metadata={:?})",
            c.lbone.as_deref().unwrap_or("-"),
            c.metadata.as_deref().unwrap_or("-")
        )
    }
}

impl Client {
    /// The library's client, refused in a process forked from the one that
    /// made it.
    fn session(&self, py: Python<'_>) -> PyResult<Session> {
        if std::process::id() != self.pid {
            return Err(usage(
                py,
                "this lors.Client was made before a fork: make a new one in the child process",
            ));
        }
        Ok(Session {
            client: self.inner.clone(),
            proxy: self.proxy.clone(),
        })
    }

    /// Runs `op` on the session's metadata-manager client.
    fn with_mdm<T, F, Fut>(&self, py: Python<'_>, op: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(MetadataClient) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, lors::Error>> + Send,
    {
        let client = self.session(py)?;
        block_on(py, async move {
            let grid = client.grid()?;
            let mdm = client.mdm(&grid)?.clone();
            op(mdm).await
        })
    }
}

/// What one call runs with: the library's client and its proxy file.
struct Session {
    client: Arc<lors::client::Client>,
    proxy: PathBuf,
}

impl Session {
    fn grid(&self) -> Result<Grid, lors::Error> {
        self.client.grid()
    }

    fn config(&self) -> &Config {
        self.client.config()
    }

    /// The metadata manager's client, or why there is none.
    fn mdm<'g>(&self, grid: &'g Grid) -> Result<&'g MetadataClient, lors::Error> {
        if let Some(m) = &grid.mdm {
            return Ok(m);
        }
        if grid.credential.is_none() {
            return Err(lors::Error::NoProxy(self.proxy.clone()));
        }
        Err(lors::Error::Usage(if grid.trust.is_none() {
            "nothing to authenticate the metadata manager with: give trust=DIR or set \
             LORS_TRUST_DIR (or trust_dir in the config file)"
                .into()
        } else {
            "which metadata manager? give metadata=URL or set LORS_METADATA_URL (or metadata \
             in the config file)"
                .into()
        }))
    }
}

/// Depot grants from the session's L-Bone, to free allocations made on
/// secure ports (as `lors rm`); None without an L-Bone or credentials.
async fn secure_access(grid: &Grid) -> Result<Option<SecureAccess>, lors::Error> {
    let (Some(url), Some(trust), Some(cred)) = (&grid.lbone, &grid.trust, &grid.credential) else {
        return Ok(None);
    };
    let offer = depots::query_offer(url, trust, cred, &DepotQuery::default()).await?;
    SecureAccess::from_offer(&offer, trust, cred).map(Some)
}

/// The message of a removal whose allocations were not all freed.
fn not_freed(r: &Removal) -> String {
    let mut why: Vec<String> = r
        .releases
        .iter()
        .filter(|x| !x.freed)
        .map(|x| {
            format!(
                "{}: {}",
                x.allocation,
                x.error.as_deref().unwrap_or("still allocated")
            )
        })
        .collect();
    why.extend(r.deleted.released.iter().filter_map(|v| {
        v.error
            .as_ref()
            .map(|e| format!("version {}: {e}", v.version))
    }));
    format!(
        "deleted from the metadata manager, but not every allocation was freed (they expire at \
         the end of their duration): {}",
        why.join("; ")
    )
}

/// A path (`str`, `os.PathLike`) or bytes (the buffer protocol).
fn input(src: &Bound<'_, PyAny>) -> PyResult<Input> {
    if !src.is_instance_of::<PyString>() {
        if let Ok(view) = PyUntypedBuffer::get(src) {
            if !view.is_c_contiguous() {
                return Err(PyTypeError::new_err(
                    "upload() needs a C-contiguous buffer (e.g. numpy.ascontiguousarray)",
                ));
            }
            return Ok(Input::Data(view));
        }
    }
    let p: PathBuf = src.extract().map_err(|_| {
        PyTypeError::new_err(
            "upload() takes a local path (str or os.PathLike) or bytes (any buffer: bytes, \
             bytearray, memoryview, numpy array)",
        )
    })?;
    Ok(Input::File(p))
}

/// `ec="K+M"` or `ec=(K, M)`.
fn parse_ec(py: Python<'_>, e: &Bound<'_, PyAny>) -> PyResult<Redundancy> {
    let text = if let Ok(t) = e.cast::<PyTuple>() {
        let (k, m): (i64, i64) = t
            .extract()
            .map_err(|_| usage(py, "ec=(K, M): two integers"))?;
        format!("{k}+{m}")
    } else {
        e.extract::<String>()
            .map_err(|_| usage(py, "ec: give \"K+M\" or (K, M), e.g. \"2+1\""))?
    };
    lors::transfer::parse_ec(&text).map_err(|m| usage(py, format!("ec: {m}")))
}

/// `block_size=` bytes as an int, or a size such as "8MiB".
fn parse_block_size(py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<u64> {
    let n = if let Ok(n) = b.extract::<i64>() {
        u64::try_from(n).map_err(|_| usage(py, format!("block_size={n}: give bytes above 0")))?
    } else {
        let s: String = b.extract().map_err(|_| {
            usage(
                py,
                "block_size: give bytes as an int or a size like \"8MiB\"",
            )
        })?;
        depots::parse_size(&s).map_err(|m| usage(py, format!("block_size: {m}")))?
    };
    if n == 0 {
        return Err(usage(py, "block_size: give bytes above 0"));
    }
    Ok(n)
}

/// Downloads `src` into `dest` as `lors download` does
/// ([`files::download_to_path`]: through `.NAME.lors-part` beside it,
/// renamed when complete; a device or FIFO written in place).
async fn download_file(client: Session, src: Source, dest: PathBuf) -> Result<(), lors::Error> {
    let grid = client.grid()?;
    let threads = default_settings(client.config(), &grid).threads;
    files::download_to_path(&grid, &src, &dest, threads, None)
        .await
        .map(|_| ())
}
