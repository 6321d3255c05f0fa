//! `lors._lors.Reader`: an open file for reads at any offset, the core of
//! `lors.File` (python/lors/_file.py, the `io.RawIOBase` over it).
//!
//! Reads go straight into the caller's memory: `readinto_at` fills any
//! writable C-contiguous buffer (bytearray, memoryview, numpy array,
//! mmap) in place, and `read_at` fills a new `bytes` object in place, both
//! with the GIL released. Safe from several threads at once (the library's
//! `FileReader` takes concurrent reads); `close` makes later calls fail
//! with `ValueError`, as a closed Python file does.

use std::sync::Mutex;

use lors::files::FileReader;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::runtime::block_on;

#[pyclass(module = "lors._lors", name = "Reader", frozen)]
pub struct Reader {
    /// `None` once closed.
    file: Mutex<Option<FileReader>>,
    size: u64,
}

impl Reader {
    pub fn new(file: FileReader) -> Reader {
        Reader {
            size: file.size(),
            file: Mutex::new(Some(file)),
        }
    }

    /// The open file (a cheap clone), or `ValueError` once closed.
    fn file(&self) -> PyResult<FileReader> {
        self.file
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the reader's lock was poisoned by a panic"))?
            .clone()
            .ok_or_else(|| PyValueError::new_err("I/O operation on closed file"))
    }
}

#[pymethods]
impl Reader {
    /// The file's size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self
            .file
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the reader's lock was poisoned by a panic"))?
            .is_none())
    }

    /// Up to `n` bytes at `offset` as `bytes` (fewer only at the end of
    /// the file, empty at or past it).
    fn read_at<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        n: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let file = self.file()?;
        let len = (n as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut got = 0usize;
        // Filled in place: the new object is not visible to other Python
        // code until it is returned, so the GIL can be released meanwhile.
        let bytes = PyBytes::new_with(py, len, |buf| {
            got = read_into(py, &file, offset, buf)?;
            Ok(())
        })?;
        if got == len {
            Ok(bytes)
        } else {
            Ok(PyBytes::new(py, &bytes.as_bytes()[..got]))
        }
    }

    /// Fills `buffer` (any writable C-contiguous buffer) with the bytes at
    /// `offset`; returns how many (fewer only at the end of the file, 0 at
    /// or past it).
    fn readinto_at(
        &self,
        py: Python<'_>,
        offset: u64,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let file = self.file()?;
        let view = PyUntypedBuffer::get(buffer)?;
        if view.readonly() {
            return Err(PyTypeError::new_err(
                "readinto() needs a writable buffer (e.g. a bytearray), not a read-only one",
            ));
        }
        if !view.is_c_contiguous() {
            return Err(PyTypeError::new_err(
                "readinto() needs a C-contiguous buffer",
            ));
        }
        let len = view.len_bytes();
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: the exporter keeps `len_bytes` writable bytes at
        // `buf_ptr` while `view` holds its export (a bytearray or numpy
        // array cannot be resized meanwhile), and `view` outlives the
        // slice. Python code writing the same memory from another thread
        // during the call would race with us, as with any readinto.
        let buf = unsafe { std::slice::from_raw_parts_mut(view.buf_ptr().cast::<u8>(), len) };
        let n = read_into(py, &file, offset, buf);
        drop(view);
        n
    }

    /// Releases the file (its cache); later reads raise `ValueError`.
    fn close(&self) -> PyResult<()> {
        self.file
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the reader's lock was poisoned by a panic"))?
            .take();
        Ok(())
    }

    /// Failovers, rebuilds and corrupt mappings met so far (a dict).
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let file = self.file()?;
        Ok(pythonize::pythonize(py, &file.report())?)
    }
}

/// Reads at `offset` into `buf` with the GIL released, looping until `buf`
/// is full or the file ends.
pub fn read_into(
    py: Python<'_>,
    file: &FileReader,
    offset: u64,
    buf: &mut [u8],
) -> PyResult<usize> {
    block_on(py, async move {
        let mut done = 0usize;
        while done < buf.len() {
            let n = file.read_at(offset + done as u64, &mut buf[done..]).await?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    })
}
