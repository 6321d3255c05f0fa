//! Ranged and streaming reads: `lors_open`, `lors_size`, `lors_read_at`,
//! `lors_read`, `lors_seek`, `lors_close`, over `lors_rs::files::FileReader`
//! (only the extents holding the bytes asked for are fetched, each
//! verified and decrypted; cache and read-ahead as its options say).

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex};

use lors_rs::files::{FileReader, ReaderOptions, Source};

use crate::abi::{
    block_on, bytes_mut, from_ptr, need_out, put, status, text, to_ptr, usage, Failure, Outcome,
    Table,
};
use crate::client::{client, lors_client};
use crate::{LORS_SEEK_CUR, LORS_SEEK_END, LORS_SEEK_SET};

/// A file open for reading (opaque): made by lors_open, closed by
/// lors_close. lors_read_at may be called from several threads at once;
/// lors_read and lors_seek share one position and are serialized.
pub struct lors_reader {
    _opaque: [u8; 0],
}

/// How lors_open reads. Zero in any field means the default; a NULL
/// pointer means all zero.
#[repr(C)]
pub struct lors_reader_options {
    /// The version to read (0: the current one).
    pub version: u64,
    /// Bytes of decrypted extents kept for later reads (0: 64 MiB; at
    /// least one extent is always kept).
    pub cache_bytes: u64,
    /// Extents fetched ahead of sequential reads (0: 4; negative: none,
    /// for purely random access).
    pub read_ahead: i32,
}

struct Reader {
    file: FileReader,
    /// The position of lors_read; held during a whole lors_read.
    position: Mutex<u64>,
}

static READERS: Table<Reader> = Table::new("lors_reader");

fn reader(r: *const lors_reader) -> Result<Arc<Reader>, Failure> {
    READERS.get(from_ptr(r))
}

/// Opens `path` (at the metadata manager) for reading and stores the
/// handle in `*out` (NULL on failure). Nothing but the exNode, its ticket
/// and data key is fetched here.
/// Errors: LORS_ERR_USAGE, LORS_ERR_NOT_FOUND, LORS_ERR_REFUSED (no read
/// right), LORS_ERR_NO_PROXY, LORS_ERR_UNAVAILABLE, LORS_ERR_DATA (an
/// unusable exNode or key).
#[no_mangle]
pub unsafe extern "C" fn lors_open(
    c: *const lors_client,
    path: *const c_char,
    opts: *const lors_reader_options,
    out: *mut *mut lors_reader,
) -> c_int {
    status("lors_open", || {
        need_out(out, "out")?;
        // SAFETY (all three): the caller's contract.
        unsafe { put(out, std::ptr::null_mut()) };
        let client = client(c)?;
        let path = unsafe { text(path, "path") }?;
        let o = unsafe { opts.as_ref() };
        let mut ro = ReaderOptions::default();
        let mut version = None;
        if let Some(o) = o {
            if o.cache_bytes > 0 {
                ro.cache_bytes = o.cache_bytes;
            }
            match o.read_ahead {
                0 => {}
                n if n < 0 => ro.read_ahead = 0,
                n => ro.read_ahead = n as usize,
            }
            version = (o.version > 0).then_some(o.version);
        }
        let grid = client.grid()?;
        let src = Source::Path {
            path: path.to_owned(),
            version,
        };
        let file = block_on(FileReader::open(&grid, &src, ro))??;
        let h = READERS.insert(Reader {
            file,
            position: Mutex::new(0),
        });
        // SAFETY: as above.
        unsafe { put(out, to_ptr(h)) };
        Ok(())
    })
}

/// Stores the file's size in bytes in `*size`.
#[no_mangle]
pub unsafe extern "C" fn lors_size(r: *const lors_reader, size: *mut u64) -> c_int {
    status("lors_size", || {
        need_out(size, "size")?;
        let n = reader(r)?.file.size();
        // SAFETY: not NULL, valid (contract).
        unsafe { put(size, n) };
        Ok(())
    })
}

/// Reads up to `len` bytes at `offset` into `buf` and stores how many in
/// `*nread`: fewer only at the end of the file, 0 at or past it (or for
/// len 0, where buf may be NULL). Does not move lors_read's position.
/// Safe to call from several threads at once on one reader.
/// Errors: LORS_ERR_USAGE, LORS_ERR_DATA (no intact copy of a block),
/// LORS_ERR_UNAVAILABLE, LORS_ERR_REFUSED.
#[no_mangle]
pub unsafe extern "C" fn lors_read_at(
    r: *const lors_reader,
    offset: u64,
    buf: *mut c_void,
    len: usize,
    nread: *mut usize,
) -> c_int {
    status("lors_read_at", || {
        need_out(nread, "nread")?;
        // SAFETY (both): the caller's contract.
        unsafe { put(nread, 0) };
        let buf = unsafe { bytes_mut(buf.cast(), len, "buf") }?;
        let rd = reader(r)?;
        let n = block_on(rd.file.read_at(offset, buf))??;
        // SAFETY: as above.
        unsafe { put(nread, n) };
        Ok(())
    })
}

/// Reads up to `len` bytes at the reader's position (0 after lors_open)
/// and advances it; `*nread` is 0 at the end of the file. Calls on one
/// reader from several threads are serialized: each reads a distinct
/// range. Errors as lors_read_at.
#[no_mangle]
pub unsafe extern "C" fn lors_read(
    r: *const lors_reader,
    buf: *mut c_void,
    len: usize,
    nread: *mut usize,
) -> c_int {
    status("lors_read", || {
        need_out(nread, "nread")?;
        // SAFETY (both): the caller's contract.
        unsafe { put(nread, 0) };
        let buf = unsafe { bytes_mut(buf.cast(), len, "buf") }?;
        let rd = reader(r)?;
        let mut pos = rd.position.lock().unwrap_or_else(|e| e.into_inner());
        let n = block_on(rd.file.read_at(*pos, buf))??;
        *pos += n as u64;
        // SAFETY: as above.
        unsafe { put(nread, n) };
        Ok(())
    })
}

/// Moves lors_read's position to `offset` from LORS_SEEK_SET (the start),
/// LORS_SEEK_CUR or LORS_SEEK_END, and stores it in `*position` unless
/// NULL. Past the end is allowed (reads there return 0 bytes); before the
/// start is refused (LORS_ERR_USAGE).
#[no_mangle]
pub unsafe extern "C" fn lors_seek(
    r: *const lors_reader,
    offset: i64,
    whence: c_int,
    position: *mut u64,
) -> c_int {
    status("lors_seek", || -> Outcome {
        let rd = reader(r)?;
        let mut pos = rd.position.lock().unwrap_or_else(|e| e.into_inner());
        let base = match whence {
            LORS_SEEK_SET => 0,
            LORS_SEEK_CUR => *pos,
            LORS_SEEK_END => rd.file.size(),
            w => return Err(usage(format!("whence: unknown value {w}"))),
        };
        let to = base
            .checked_add_signed(offset)
            .ok_or_else(|| usage(format!("offset {offset} from {base} is out of range")))?;
        *pos = to;
        // SAFETY: NULL or valid (contract).
        unsafe { put(position, to) };
        Ok(())
    })
}

/// Closes a reader. NULL is a no-op (LORS_OK); closing twice is refused
/// (LORS_ERR_USAGE). Reads in progress on other threads finish; later
/// ones are refused.
#[no_mangle]
pub unsafe extern "C" fn lors_close(r: *mut lors_reader) -> c_int {
    status("lors_close", || -> Outcome {
        if !r.is_null() {
            READERS.remove(from_ptr(r))?;
        }
        Ok(())
    })
}
