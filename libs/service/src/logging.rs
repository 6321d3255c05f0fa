//! The one logging set-up of every daemon and of `lors`: `tracing` events
//! to standard error, filtered by `RUST_LOG` when it is set (and valid),
//! else by the program's default; ANSI colours only when standard error is
//! a terminal (a daemon's log file holds plain text).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How the lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A daemon: time, level, target and fields.
    Daemon,
    /// A command-line tool: level and message only (`WARN storing on ...`).
    Cli,
}

/// The filter: `RUST_LOG` when set and valid, else `default` (`"info"`,
/// `"warn"`, `"lbone=debug,info"`). An invalid `RUST_LOG` is reported once
/// on standard error and the default used.
fn filter(default: &str) -> EnvFilter {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => return f,
            Err(e) => eprintln!("ignoring RUST_LOG={v:?} ({e}); logging at {default:?}"),
        },
        _ => {}
    }
    EnvFilter::try_new(default).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber (once; later calls do nothing, so tests
/// may call it freely).
pub fn init(default: &str, style: Style) {
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter(default))
        .with_ansi(ansi);
    let _ = match style {
        Style::Daemon => builder.try_init(),
        Style::Cli => builder.without_time().with_target(false).try_init(),
    };
}

/// A daemon's logging: `RUST_LOG`, else `default` (usually `"info"`).
pub fn init_daemon(default: &str) {
    init(default, Style::Daemon)
}

/// A command-line tool's logging: `RUST_LOG`, else errors only (the tool
/// says what failed, and its summaries count failovers), `-v` warnings
/// (each failover and retry) and what is going on (info), `-vv` debug,
/// `-vvv` trace. Standard output stays the tool's own.
pub fn init_cli(verbose: u8) {
    init(cli_level(verbose), Style::Cli)
}

/// The filter [`init_cli`] installs for `verbose`.
pub fn cli_level(verbose: u8) -> &'static str {
    match verbose {
        // rustls's own alerts would only precede the tool's error
        // message, which says what failed.
        0 => "error,rustls=off",
        1 => "info,rustls=error",
        2 => "debug",
        _ => "trace",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_is_harmless() {
        super::init_cli(0);
        super::init_daemon("info");
        tracing::warn!("logging works");
    }
}
