//! Clients: `lors_client_new`, `lors_client_from_env`, `lors_client_free`.
//! A client is `lors_rs::client::Client`: the configuration file and
//! `LORS_*` variables as `lors` reads them, with the explicit options
//! over them; shared by threads; its proxy file looked at before every
//! operation (a renewed one picked up, an expired one refused locally).

use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lors_rs::client::{Client, Overrides};
use lors_rs::config::Config;

use crate::abi::{
    from_ptr, need_out, opt_text, put, status, to_ptr, usage, Failure, Outcome, Table,
};
use crate::LORS_ERR_LOCAL;

/// A client (opaque): made by lors_client_new or lors_client_from_env,
/// freed by lors_client_free. Safe to use from several threads at once.
pub struct lors_client {
    _opaque: [u8; 0],
}

/// What lors_client_new sets explicitly, over the configuration file and
/// the environment. Every field may be NULL (or 0): the configuration's,
/// else the default. Zero-initialize it (`lors_options o = {0};`).
#[repr(C)]
pub struct lors_options {
    /// The configuration file. NULL: $LORS_CONFIG, else
    /// ~/.config/lors/config.toml if it exists. The LORS_* variables
    /// apply over it in both cases.
    pub config_file: *const c_char,
    /// The L-Bone, e.g. "https://lbone.example.org:6767".
    pub lbone_url: *const c_char,
    /// The metadata manager, e.g. "https://mdm.example.org:6780".
    pub metadata_url: *const c_char,
    /// The trust directory authenticating the services.
    pub trust_dir: *const c_char,
    /// The proxy credential file (default: $X509_USER_PROXY, else
    /// /tmp/x509up_u<uid>).
    pub proxy_file: *const c_char,
    /// The key pair wrapping data keys (`lors keys init`).
    pub key_file: *const c_char,
    /// Seconds allowed for each depot operation (0: 30).
    pub timeout_seconds: u32,
}

pub(crate) static CLIENTS: Table<Client> = Table::new("lors_client");

/// The client behind a handle.
pub(crate) fn client(c: *const lors_client) -> Result<Arc<Client>, Failure> {
    CLIENTS.get(from_ptr(c))
}

/// Largest configuration file read.
const MAX_CONFIG: u64 = 1 << 20;

fn config_from(path: &Path) -> Result<Config, Failure> {
    let cannot = |e: std::io::Error| {
        Failure::new(
            LORS_ERR_LOCAL,
            format!("cannot read the configuration {}: {e}", path.display()),
        )
    };
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > MAX_CONFIG {
        return Err(usage(format!(
            "configuration file {} is larger than {MAX_CONFIG} bytes",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    Ok(Config::from_sources(Some((path, &text)), |n| {
        std::env::var(n).ok()
    })?)
}

/// # Safety
/// `o`'s strings are NULL or NUL-terminated.
unsafe fn overrides(o: &lors_options) -> Result<(Option<PathBuf>, Overrides), Failure> {
    let path = |p, what| -> Result<Option<PathBuf>, Failure> {
        // SAFETY: the caller's contract.
        Ok(unsafe { opt_text(p, what) }?.map(PathBuf::from))
    };
    let url = |p, what| -> Result<Option<String>, Failure> {
        // SAFETY: the caller's contract.
        Ok(unsafe { opt_text(p, what) }?.map(str::to_owned))
    };
    Ok((
        path(o.config_file, "config_file")?,
        Overrides {
            lbone: url(o.lbone_url, "lbone_url")?,
            mdm: url(o.metadata_url, "metadata_url")?,
            trust: path(o.trust_dir, "trust_dir")?,
            proxy: path(o.proxy_file, "proxy_file")?,
            key: path(o.key_file, "key_file")?,
            timeout: (o.timeout_seconds > 0)
                .then(|| Duration::from_secs(u64::from(o.timeout_seconds))),
        },
    ))
}

/// Makes a client of `opts` (NULL: as lors_client_from_env) and stores its
/// handle in `*out` (NULL on failure). No service is contacted yet; a
/// missing proxy is reported by the first call that needs it.
/// Errors: LORS_ERR_USAGE (out NULL, a bad configuration file or
/// variable), LORS_ERR_NO_PROXY (an unreadable proxy file),
/// LORS_ERR_LOCAL (an unreadable key or configuration file).
#[no_mangle]
pub unsafe extern "C" fn lors_client_new(
    opts: *const lors_options,
    out: *mut *mut lors_client,
) -> c_int {
    status("lors_client_new", || {
        need_out(out, "out")?;
        // SAFETY: out is not NULL and valid for writing (contract).
        unsafe { put(out, std::ptr::null_mut()) };
        // SAFETY: opts is NULL or valid (contract).
        let (file, o) = match unsafe { opts.as_ref() } {
            // SAFETY: its strings are NUL-terminated (contract).
            Some(opts) => unsafe { overrides(opts) }?,
            None => (None, Overrides::default()),
        };
        let cfg = match &file {
            Some(f) => config_from(f)?,
            None => Config::load()?,
        };
        let h = CLIENTS.insert(Client::new(cfg, o)?);
        // SAFETY: as above.
        unsafe { put(out, to_ptr(h)) };
        Ok(())
    })
}

/// lors_client_new(NULL, out): the configuration file and LORS_*
/// variables only, as the `lors` command.
#[no_mangle]
pub unsafe extern "C" fn lors_client_from_env(out: *mut *mut lors_client) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { lors_client_new(std::ptr::null(), out) }
}

/// Frees a client. NULL is a no-op (LORS_OK); a client freed already is
/// refused (LORS_ERR_USAGE). Calls still running on other threads finish;
/// readers and writers opened from it stay usable until closed.
#[no_mangle]
pub unsafe extern "C" fn lors_client_free(c: *mut lors_client) -> c_int {
    status("lors_client_free", || -> Outcome {
        if !c.is_null() {
            CLIENTS.remove(from_ptr(c))?;
        }
        // The upload journals this process kept for reuse go with it.
        lors_rs::files::release_idle();
        Ok(())
    })
}
