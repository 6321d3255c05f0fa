//! The one logging set-up of every daemon and of `lors`: `tracing` events
//! to standard error, filtered by `RUST_LOG` when it is set (and valid),
//! else by the program's default; ANSI colours only when standard error is
//! a terminal (a daemon's log file holds plain text). Daemons can log one
//! JSON object per line instead (`--log-format json`, [`LogArgs`]), for log
//! collectors.

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

/// How a daemon's log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`), and the spans.
    Json,
}

/// The daemons' logging option (`#[command(flatten)]` into their CLI).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log lines on standard error as text or as one JSON object per line
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "IBP_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Installs the global subscriber (once; later calls do nothing, so tests
/// may call it freely).
pub fn init(default: &str, style: Style) {
    init_as(default, style, LogFormat::Text)
}

fn init_as(default: &str, style: Style, format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter(default));
    let _ = match (format, style) {
        (LogFormat::Json, _) => builder.json().with_current_span(false).try_init(),
        (LogFormat::Text, Style::Daemon) => builder.with_ansi(ansi).try_init(),
        (LogFormat::Text, Style::Cli) => builder
            .with_ansi(ansi)
            .without_time()
            .with_target(false)
            .try_init(),
    };
}

/// A daemon's logging: `RUST_LOG`, else `default` (usually `"info"`), as
/// text.
pub fn init_daemon(default: &str) {
    init_as(default, Style::Daemon, LogFormat::Text)
}

/// A daemon's logging in the format its `--log-format` asks.
pub fn init_daemon_with(default: &str, args: LogArgs) {
    init_as(default, Style::Daemon, args.log_format)
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
