//! One tokio runtime per process, made on first use, and the one way every
//! method runs library code: with the GIL released, interruptible by
//! Ctrl-C.
//!
//! A process forked after the runtime was made (Python's `multiprocessing`
//! with the fork start method) has none of its worker threads: the child
//! makes its own runtime on first use instead of waiting forever on the
//! parent's.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::to_py;

/// The runtime and the process it was made in.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// How often a blocked call looks for a pending signal (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// This process's runtime (made on first use, and again in a forked child).
fn runtime() -> PyResult<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .map_err(|_| PyRuntimeError::new_err("the lors runtime's lock was poisoned by a panic"))?;
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    if let Some((_, parent)) = slot.take() {
        // The parent's runtime: its threads are not in this process, and
        // dropping it would wait for them.
        std::mem::forget(parent);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lors")
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the lors runtime: {e}")))?;
    let rt = Arc::new(rt);
    *slot = Some((pid, rt.clone()));
    Ok(rt)
}

/// Why a blocked call ended without its result.
enum Stop {
    Lors(lors::Error),
    /// A signal handler raised (KeyboardInterrupt): the operation was
    /// dropped where it stood.
    Signal(PyErr),
}

/// Runs `fut` on the runtime with the GIL released and returns its result;
/// a library error becomes the exception of its class (see `errors`).
/// A pending signal (Ctrl-C) whose handler raises stops the call: the
/// future is dropped (an upload's stored blocks expire with their
/// allocations, as when `lors upload` is interrupted).
pub fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = Result<T, lors::Error>> + Send,
    T: Send,
{
    let rt = runtime()?;
    let r = py.detach(|| {
        rt.block_on(async {
            let mut fut = std::pin::pin!(fut);
            // The first check one period from now: an interval's
            // immediate first tick would still wait for the timer wheel's
            // next millisecond, on every call.
            let first = tokio::time::Instant::now() + SIGNAL_CHECK;
            let mut tick = tokio::time::interval_at(first, SIGNAL_CHECK);
            loop {
                tokio::select! {
                    r = &mut fut => return r.map_err(Stop::Lors),
                    _ = tick.tick() => {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            return Err(Stop::Signal(e));
                        }
                    }
                }
            }
        })
    });
    match r {
        Ok(v) => Ok(v),
        Err(Stop::Lors(e)) => Err(to_py(py, &e)),
        Err(Stop::Signal(e)) => Err(e),
    }
}
