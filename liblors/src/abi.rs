//! What every entry point shares: the runtime of the process, the wrapper
//! that turns errors and panics into status codes (and the thread's last
//! error), the handle tables, and reading C arguments.
//!
//! Architecture invariant: no entry point unwinds into C and none
//! dereferences a handle: handles are keys of a [`Table`], so a closed,
//! freed or invented one is an error, never a use after free.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crate::{LORS_ERR_INTERNAL, LORS_ERR_LOCAL, LORS_ERR_USAGE, LORS_OK};

/// Why a call failed: its status code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: c_int,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: c_int, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<lors_rs::Error> for Failure {
    fn from(e: lors_rs::Error) -> Failure {
        Failure::new(c_int::from(e.exit_code()), e.to_string())
    }
}

/// A bad argument ([`LORS_ERR_USAGE`]).
pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure::new(LORS_ERR_USAGE, message)
}

pub(crate) type Outcome = Result<(), Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // At thread exit the slot may be gone: nothing to keep then.
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = c);
}

/// The calling thread's last error; valid until its next call.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|l| l.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Runs the body of entry point `name`: its status, the thread's last
/// error set (empty on success, prefixed with `name` otherwise), a panic
/// caught and reported as [`LORS_ERR_INTERNAL`].
pub(crate) fn status(name: &str, body: impl FnOnce() -> Outcome) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            LORS_OK
        }
        Ok(Err(f)) => {
            set_last_error(&format!("{name}: {}", f.message));
            f.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            set_last_error(&format!(
                "{name}: internal error (a bug in liblors, please report it): {what}"
            ));
            LORS_ERR_INTERNAL
        }
    }
}

/// Runs the body of a function that returns nothing (`lors_entry_clear`,
/// `lors_list_free`): a panic is caught and reported in the thread's last
/// error; otherwise the last error is left as it was.
pub(crate) fn quiet(name: &str, body: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(body)).is_err() {
        set_last_error(&format!(
            "{name}: internal error (a bug in liblors, please report it)"
        ));
    }
}

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// Worker threads of the runtime: transfers are I/O bound and the caller's
/// own threads also drive work (each blocked call polls its future).
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// Runs `f` to completion on the runtime of the process (created on first
/// use), on the calling thread. Refused inside a runtime: from a progress
/// callback, or from a Rust program calling the C API within its own
/// tokio runtime.
pub(crate) fn block_on<F: Future>(f: F) -> Result<F::Output, Failure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(usage(
            "called from inside a runtime (a liblors progress callback, or a tokio task): \
             call liblors from ordinary threads",
        ));
    }
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers())
            .thread_name("liblors")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match rt {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => Err(Failure::new(
            LORS_ERR_LOCAL,
            format!("cannot start the runtime: {e}"),
        )),
    }
}

/// The next handle: never 0 (NULL), never reused, shared by all tables so
/// that a handle of one kind is unknown to the others.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

/// The open handles of one kind. A handle is a key here, shown to C as an
/// opaque pointer it never dereferences; the object lives as long as the
/// table or a call in progress holds it, so closing a handle while another
/// thread uses it is safe (that call finishes; later ones are refused).
pub(crate) struct Table<T> {
    kind: &'static str,
    open: RwLock<BTreeMap<usize, Arc<T>>>,
}

impl<T> Table<T> {
    pub(crate) const fn new(kind: &'static str) -> Table<T> {
        Table {
            kind,
            open: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds `v`; returns its handle.
    pub(crate) fn insert(&self, v: T) -> usize {
        let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        self.open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h, Arc::new(v));
        h
    }

    /// The object of handle `h`, refused if NULL or not open.
    pub(crate) fn get(&self, h: usize) -> Result<Arc<T>, Failure> {
        if h == 0 {
            return Err(usage(format!("the {} is NULL", self.kind)));
        }
        self.open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .cloned()
            .ok_or_else(|| self.not_open())
    }

    /// Removes handle `h` (not NULL); the object is dropped when the last
    /// call using it returns.
    pub(crate) fn remove(&self, h: usize) -> Result<Arc<T>, Failure> {
        if h == 0 {
            return Err(usage(format!("the {} is NULL", self.kind)));
        }
        self.open
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h)
            .ok_or_else(|| self.not_open())
    }

    fn not_open(&self) -> Failure {
        usage(format!(
            "not an open {} (closed or freed already, or not made by liblors)",
            self.kind
        ))
    }
}

/// A handle as the opaque pointer C sees.
pub(crate) fn to_ptr<T>(h: usize) -> *mut T {
    std::ptr::without_provenance_mut(h)
}

/// The handle behind an opaque pointer.
pub(crate) fn from_ptr<T>(p: *const T) -> usize {
    p.addr()
}

/// A NUL-terminated UTF-8 argument.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(usage(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| usage(format!("{what} is not UTF-8")))
}

/// [`text`], NULL meaning `None`.
///
/// # Safety
/// As [`text`].
pub(crate) unsafe fn opt_text<'a>(
    p: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: the caller's contract.
        unsafe { text(p, what) }.map(Some)
    }
}

/// `len` bytes at `p`; NULL is accepted for an empty buffer.
///
/// # Safety
/// `p` is NULL or valid for reading `len` bytes during the call.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(usage(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(usage(format!("{what}: length {len} is too large")));
    }
    // SAFETY: not NULL, valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// `len` writable bytes at `p`; NULL is accepted for an empty buffer.
///
/// # Safety
/// `p` is NULL or valid for writing `len` bytes during the call, and not
/// read or written by anything else meanwhile.
pub(crate) unsafe fn bytes_mut<'a>(
    p: *mut u8,
    len: usize,
    what: &str,
) -> Result<&'a mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(usage(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(usage(format!("{what}: length {len} is too large")));
    }
    // SAFETY: not NULL, valid and exclusive for `len` bytes by the
    // caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Refuses a NULL out-parameter before any work is done.
pub(crate) fn need_out<T>(p: *mut T, what: &str) -> Outcome {
    if p.is_null() {
        Err(usage(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// Stores `v` in the out-parameter `p` (checked by [`need_out`]).
///
/// # Safety
/// `p` is valid for writing a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: not NULL, valid for writing by the caller's contract.
        unsafe { p.write(v) }
    }
}

/// A string the library owns until the caller gives it back
/// ([`free_owned`]); NUL bytes inside are replaced by spaces.
pub(crate) fn owned(s: &str) -> *const c_char {
    CString::new(s.replace('\0', " "))
        .unwrap_or_default()
        .into_raw()
}

/// Frees a string of [`owned`]; NULL is ignored.
///
/// # Safety
/// `p` is NULL or came from [`owned`] and was not freed yet.
pub(crate) unsafe fn free_owned(p: *const c_char) {
    if !p.is_null() {
        // SAFETY: made by CString::into_raw in `owned`, freed once.
        drop(unsafe { CString::from_raw(p.cast_mut()) });
    }
}
