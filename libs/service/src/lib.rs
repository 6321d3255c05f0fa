//! The skeleton every daemon (depot, L-Bone, metadata manager, online CA)
//! and `lors` share instead of copying it: the one grammar of sizes and
//! durations and the display of times ([`units`]), the logging set-up
//! ([`logging`]), shutdown on SIGTERM/SIGINT ([`signals`]), writing signing
//! keys at `init` ([`signing_key`]) and, with the `db` feature (the
//! services, not `lors` or the depot), opening and migrating their
//! databases ([`db`]).
//!
//! Generic mechanics only: the SQL of a service (its tables, migration list
//! and lock key) stays in that service's store module.

#![forbid(unsafe_code)]

#[cfg(feature = "db")]
pub mod db;
pub mod logging;
pub mod signals;
pub mod signing_key;
pub mod units;

use std::path::PathBuf;

/// Why a shared service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL names no supported backend.
    #[error("{0}")]
    Url(String),
    #[cfg(feature = "db")]
    /// Connecting to the database failed (the URL is redacted).
    #[error("open database {url}")]
    Open { url: String, source: sqlx::Error },
    /// A database file that group or others have permissions on.
    #[error(
        "database {} has mode {mode:03o}; it holds secrets and must be readable by its owner only (chmod 600 {})",
        path.display(),
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[cfg(feature = "db")]
    #[error("switch the SQLite database to WAL mode")]
    Wal(#[source] sqlx::Error),
    #[cfg(feature = "db")]
    /// One step of a migration failed.
    #[error("migration {version}")]
    Migration { version: i64, source: sqlx::Error },
    #[cfg(feature = "db")]
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// `init` found a signing key and was not told to replace it.
    #[error("{} exists; give --force to replace the signing key ({note})", path.display())]
    KeyExists { path: PathBuf, note: String },
    /// Generating or deriving a key failed.
    #[error("{what}")]
    Key {
        what: &'static str,
        source: ibp_auth::AuthError,
    },
    /// Writing a file or creating a directory failed.
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing the private key failed.
    #[error("write {}", path.display())]
    Secret {
        path: PathBuf,
        source: ibp_auth::AuthError,
    },
}
