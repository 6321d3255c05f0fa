//! Shutdown on SIGTERM and SIGINT, the same in every daemon: the daemon's
//! `main` calls [`spawn_cancel_on_signals`] and then its crate's
//! `run(listener, config, shutdown)`, which stops accepting and finishes
//! in-flight requests when the token is cancelled.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Starts watching both signals (now, so that a signal sent right after
/// start is not lost) and returns what cancels `token` on either; it ends
/// early when the token is cancelled otherwise.
fn watch(token: CancellationToken) -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests, then stopping"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests, then stopping"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    })
}

/// Cancels `token` on SIGTERM or SIGINT. A daemon calls this before it
/// serves: an error (the signals cannot be watched) should stop it from
/// starting, since it could not be stopped gracefully.
pub fn spawn_cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    tokio::spawn(watch(token)?);
    Ok(())
}

/// Cancels `token` on SIGTERM or SIGINT, for callers that spawn it
/// themselves; if the signals cannot be watched, says so and returns.
pub async fn cancel_on_signals(token: CancellationToken) {
    match watch(token) {
        Ok(f) => f.await,
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT"),
    }
}

/// Calls `reload` on every SIGHUP until `shutdown` is cancelled (the
/// daemons re-read their configuration, certificate and trust directory:
/// docs/operator.md, "Reloading"). `reload` runs on a blocking thread (it
/// reads files) and returns what to log: `Ok(summary)` or the reason the
/// old settings stay. Returns an error if SIGHUP cannot be watched.
pub fn spawn_reload_on_sighup<F>(shutdown: CancellationToken, reload: F) -> std::io::Result<()>
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    let mut hup = signal(SignalKind::hangup())?;
    let reload = std::sync::Arc::new(reload);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            let f = reload.clone();
            match tokio::task::spawn_blocking(move || f()).await {
                Ok(Ok(summary)) => tracing::info!("SIGHUP: configuration reloaded: {summary}"),
                Ok(Err(why)) => tracing::error!(
                    "SIGHUP: configuration not reloaded, the previous one stays in force: {why}"
                ),
                Err(e) => tracing::error!("SIGHUP: the reload failed: {e}"),
            }
        }
    });
    Ok(())
}

/// After a SIGHUP reload: warns (once, naming what a reload applies) when
/// the reloaded configuration `new` differs from the one the daemon
/// started with in anything else. `applied` copies the reloaded settings
/// from `started` into a clone of `new`, so that only the rest is compared.
pub fn warn_if_restart_needed<T: Clone + std::fmt::Debug>(
    new: &T,
    started: &T,
    reloaded: &str,
    applied: impl FnOnce(&mut T, &T),
) {
    let mut rest = new.clone();
    applied(&mut rest, started);
    if format!("{rest:?}") != format!("{started:?}") {
        tracing::warn!(
            "SIGHUP: settings other than {reloaded} changed in the configuration: they take effect at the next restart"
        );
    }
}
