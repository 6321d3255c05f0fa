//! Library errors as the Python exceptions of `lors/errors.py`: one class
//! per exit class of the `lors` command, each instance with `.code`, the
//! exit code `lors` would end with (lors/src/exit.rs).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The exception class (in `lors.errors`) of each error: an exhaustive
/// match, so a new variant cannot ship without its class.
fn class_name(e: &lors::Error) -> &'static str {
    use lors::Error as E;
    match e {
        E::Usage(_) | E::BadRequest(_) => "UsageError",
        E::NoProxy(_) | E::InvalidProxy(_) => "NoProxyError",
        E::Refused(_) | E::Forbidden(_) => "RefusedError",
        E::NotFound(_) => "NotFoundError",
        E::Conflict(_) => "ConflictError",
        E::Unavailable(_) => "UnavailableError",
        E::RateLimited { .. } => "RateLimitedError",
        E::Local(_) => "LocalError",
        E::Data(_) => "DataError",
    }
}

/// The exception for `e`: its class, its message, `.code` its exit code
/// (and `.retry_after`, seconds or None, for a rate limit).
pub fn to_py(py: Python<'_>, e: &lors::Error) -> PyErr {
    match make(py, e) {
        Ok(err) => err,
        // The package is broken (lors.errors missing): still say what failed.
        Err(import) => PyRuntimeError::new_err(format!("{e} (and {import})")),
    }
}

/// A usage error (exit code 2) of the arguments of a call.
pub fn usage(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    to_py(py, &lors::Error::Usage(msg.into()))
}

fn make(py: Python<'_>, e: &lors::Error) -> PyResult<PyErr> {
    let cls = py.import("lors.errors")?.getattr(class_name(e))?;
    let exc = cls.call1((e.to_string(),))?;
    exc.setattr("code", e.exit_code())?;
    if let lors::Error::RateLimited { retry_after, .. } = e {
        exc.setattr("retry_after", *retry_after)?;
    }
    Ok(PyErr::from_value(exc))
}
