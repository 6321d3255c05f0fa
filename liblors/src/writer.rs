//! Writes through a handle: `lors_create`, `lors_write`, `lors_commit`,
//! `lors_abort`, over `lors_rs::files::FileWriter` (staged in a local
//! temporary file, uploaded as one new version on commit: all or nothing).

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

use lors_rs::files::{Dest, FileWriter};

use crate::abi::{
    block_on, bytes, from_ptr, need_out, put, status, text, to_ptr, usage, Outcome, Table,
};
use crate::client::{client, lors_client};
use crate::transfer::{lors_upload_options, settings};

/// A file being written (opaque): made by lors_create, closed by
/// lors_commit or lors_abort. Writes from several threads are serialized
/// (appended in the order they take the handle).
pub struct lors_writer {
    _opaque: [u8; 0],
}

/// `None` once committed or aborted by a call that raced this one.
type Writer = Mutex<Option<FileWriter>>;

static WRITERS: Table<Writer> = Table::new("lors_writer");

/// Starts a new version of `path`, stored as `opts` says (NULL: the
/// defaults), and stores the handle in `*out` (NULL on failure). The data
/// is staged in $TMPDIR (owner-only, unlinked at once) until lors_commit.
/// Errors: LORS_ERR_USAGE, LORS_ERR_NO_PROXY, LORS_ERR_LOCAL (staging).
#[no_mangle]
pub unsafe extern "C" fn lors_create(
    c: *const lors_client,
    path: *const c_char,
    opts: *const lors_upload_options,
    out: *mut *mut lors_writer,
) -> c_int {
    status("lors_create", || {
        need_out(out, "out")?;
        // SAFETY (all three): the caller's contract.
        unsafe { put(out, std::ptr::null_mut()) };
        let client = client(c)?;
        let path = unsafe { text(path, "path") }?;
        let opts = unsafe { opts.as_ref() };
        let grid = client.grid()?;
        let s = settings(&client, &grid, opts)?;
        let w = FileWriter::create(&grid, Dest::Path(path.to_owned()), s, None)?;
        let h = WRITERS.insert(Mutex::new(Some(w)));
        // SAFETY: as above.
        unsafe { put(out, to_ptr(h)) };
        Ok(())
    })
}

/// Appends `len` bytes at `data` (NULL allowed when len is 0).
/// Errors: LORS_ERR_USAGE, LORS_ERR_LOCAL (staging space).
#[no_mangle]
pub unsafe extern "C" fn lors_write(
    w: *const lors_writer,
    data: *const c_void,
    len: usize,
) -> c_int {
    status("lors_write", || -> Outcome {
        // SAFETY: the caller's contract.
        let data = unsafe { bytes(data.cast(), len, "data") }?;
        let writer = WRITERS.get(from_ptr(w))?;
        let mut guard = writer.lock().unwrap_or_else(|e| e.into_inner());
        let fw = guard
            .as_mut()
            .ok_or_else(|| usage("the lors_writer is being committed or aborted"))?;
        block_on(fw.write(data))??;
        Ok(())
    })
}

/// Uploads what was written as a new version of the path and closes the
/// writer, whatever the outcome (on failure nothing was registered and
/// the allocations made were released). Stores the version in `*version`
/// unless NULL. Errors as lors_upload_file; LORS_ERR_USAGE for a NULL or
/// closed writer.
#[no_mangle]
pub unsafe extern "C" fn lors_commit(w: *mut lors_writer, version: *mut u64) -> c_int {
    status("lors_commit", || -> Outcome {
        let writer = WRITERS.remove(from_ptr(w))?;
        let fw = writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| usage("the lors_writer was committed or aborted already"))?;
        let summary = block_on(fw.commit())??;
        // SAFETY: NULL or valid (contract).
        unsafe { put(version, summary.version) };
        Ok(())
    })
}

/// Discards what was written and closes the writer. NULL is a no-op
/// (LORS_OK); a closed writer is refused (LORS_ERR_USAGE).
#[no_mangle]
pub unsafe extern "C" fn lors_abort(w: *mut lors_writer) -> c_int {
    status("lors_abort", || -> Outcome {
        if w.is_null() {
            return Ok(());
        }
        let writer = WRITERS.remove(from_ptr(w))?;
        if let Some(fw) = writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            fw.abort();
        }
        Ok(())
    })
}
