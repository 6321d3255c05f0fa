//! `lors._lors`, the Rust half of the Python package `lors`: the `lors`
//! library (lors/src) wrapped with PyO3, one layer, no C ABI between.
//!
//! - [`client::Client`]: a session from the same configuration file and
//!   `LORS_*` variables as the `lors` command (or explicit ones): upload,
//!   download, open, stat, ls, mkdir, mv, rm, usage, whoami;
//! - [`reader::Reader`]: an open file for reads at any offset, the core of
//!   the Python `lors.File` (an `io.RawIOBase`);
//! - [`errors`]: library errors as the exceptions of `lors/errors.py`,
//!   each with the `lors` command's exit code as `.code`;
//! - [`runtime`]: one tokio runtime per process; every call runs with the
//!   GIL released.
//!
//! The user guide is docs/liblors-python.md.

mod client;
mod errors;
mod reader;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _lors(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<reader::Reader>()?;
    m.add("DEFAULT_BLOCK_SIZE", lors::client::DEFAULT_BLOCK_SIZE)?;
    m.add(
        "DEFAULT_TIMEOUT",
        lors::client::DEFAULT_TIMEOUT.as_secs_f64(),
    )?;
    Ok(())
}
