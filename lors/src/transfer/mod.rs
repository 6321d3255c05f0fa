//! Moving file data to and from depots: upload, download and the
//! maintenance of an exNode's allocations (augment, trim, refresh, repair).
//!
//! These functions work on exNodes and depot connections only; the
//! metadata manager, the L-Bone and key wrapping are the caller's
//! ([`crate::files`] ties them together for the CLI and library users).
//!
//! Layout of an upload (see docs/lors.md "Data layout"):
//!
//! - the file is cut into blocks of `block_size` bytes; block `i` starts at
//!   `i × block_size`;
//! - with a data key, each block is encrypted with AES-128-CTR under the
//!   `uuid-block` IV of block `i` (`crate::crypto::apply_keystream`);
//! - with `copies N`, each block's bytes go into one allocation on each of
//!   `N` distinct depots (one mapping each); with `ec K+M`, each block is an
//!   erasure-coding group: `K + M` shares, each in one allocation on a
//!   distinct depot;
//! - each mapping records the BLAKE3 checksum of the bytes its allocation
//!   holds, its depot address and security level, and its expiry.

pub mod codec;
pub mod direct;
pub mod download;
pub mod maintain;
pub mod pool;
pub mod upload;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use download::{download, DownloadOptions, DownloadReport, ExtentReader, Sink, Tickets};
pub use pool::{CopyGrantList, CopyGrantSource, CopyStats, DepotError, Pool, SecureSetup};
pub use upload::{
    upload, upload_tracked, AllocHook, BlockHook, DoneBlocks, FileInput, Input, UploadOptions,
};

use crate::credentials::Error;

/// How a file survives the loss of depots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// `n` replicas of each block on distinct depots.
    Copies(u16),
    /// Reed-Solomon: `k` data and `m` parity shares per block.
    Ec { k: u16, m: u16 },
}

impl Redundancy {
    /// Pieces stored per block (each on its own depot).
    pub fn pieces(self) -> usize {
        match self {
            Redundancy::Copies(n) => n as usize,
            Redundancy::Ec { k, m } => k as usize + m as usize,
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::Copies(n) => write!(f, "{n} cop{}", if *n == 1 { "y" } else { "ies" }),
            Redundancy::Ec { k, m } => write!(f, "erasure coding {k}+{m}"),
        }
    }
}

/// Parses `K+M` (erasure coding).
pub fn parse_ec(s: &str) -> Result<Redundancy, String> {
    let (k, m) = s
        .split_once('+')
        .ok_or_else(|| format!("{s:?}: expected K+M, e.g. 2+1"))?;
    let k: u16 = k.trim().parse().map_err(|_| format!("{s:?}: bad K"))?;
    let m: u16 = m.trim().parse().map_err(|_| format!("{s:?}: bad M"))?;
    codec::check(k as usize, m as usize).map_err(|e| e.to_string())?;
    Ok(Redundancy::Ec { k, m })
}

impl FromStr for Redundancy {
    type Err = String;
    fn from_str(s: &str) -> Result<Redundancy, String> {
        parse_ec(s)
    }
}

/// A depot an upload may place data on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to contact (the secure port for `full`).
    pub depot: String,
    pub security: exnode::Security,
}

/// Called with the number of bytes just finished (of the file's logical
/// bytes).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Depot(#[from] DepotError),
    #[error("{redundancy} needs {need} depots, only {have} available")]
    NotEnoughDepots {
        redundancy: Redundancy,
        need: usize,
        have: usize,
    },
    #[error("no depot left to place a piece of the block at offset {offset}: {last}")]
    PlacementFailed { offset: u64, last: String },
    /// Every depot tried refused the allocation for the same reason of
    /// policy (a quota, the duration): no other depot would do better.
    #[error("{}", refused_text(*.kind, .detail))]
    Refused { kind: Refusal, detail: String },
    /// No replica or too few shares of a range could be read and verified.
    #[error("bytes {offset}..{end} could not be read from any replica or share: {detail}")]
    Lost {
        offset: u64,
        end: u64,
        detail: String,
    },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
    #[error("{0}")]
    E2e(#[from] crate::lors_e2e::E2eError),
    #[error("invalid exNode: {0}")]
    Exnode(String),
    #[error("{0}")]
    Usage(String),
    /// The upload was stopped by its cancellation token (Ctrl-C): it
    /// released the `released` allocations it had made (those not freed
    /// are listed by an enclosing [`TransferError::NotFreed`]); journaled,
    /// it kept the `kept_blocks` blocks stored so far for `--resume`.
    #[error("{}", interrupted_text(*.released, *.kept_blocks))]
    Interrupted { released: usize, kept_blocks: usize },
    /// An operation failed and its clean-up could not free every
    /// allocation it had made (`depot: reason` each; they expire at the
    /// end of their duration).
    #[error("{source}; {}", not_freed_note(.not_freed))]
    NotFreed {
        source: Box<TransferError>,
        not_freed: Vec<String>,
    },
}

/// Why every depot refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A byte quota (the VO's or the user's at the depot).
    Quota,
    /// The duration asked is longer than the depot grants.
    Duration,
}

fn refused_text(kind: Refusal, detail: &str) -> String {
    match kind {
        Refusal::Quota => format!(
            "quota refusal: the depots refuse more data from you ({detail}); \
             free space with `lors rm` (and `lors cleanup`), or ask for a larger quota"
        ),
        Refusal::Duration => format!(
            "every depot refuses an allocation this long ({detail}); pass a shorter --duration"
        ),
    }
}

fn interrupted_text(released: usize, kept_blocks: usize) -> String {
    let mut s = format!("interrupted: released the {released} allocation(s) the upload had made");
    if kept_blocks > 0 {
        s.push_str(&format!(
            "; the {kept_blocks} block(s) stored so far are kept for --resume"
        ));
    }
    s
}

/// `N allocation(s) ... not freed: a; b; ...` (at most 5 listed).
pub fn not_freed_note(not_freed: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = format!(
        "{} allocation(s) it made could not be freed: {}",
        not_freed.len(),
        not_freed
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("; ")
    );
    if not_freed.len() > SHOWN {
        s.push_str(&format!("; and {} more", not_freed.len() - SHOWN));
    }
    s
}

impl From<TransferError> for Error {
    fn from(e: TransferError) -> Error {
        if let TransferError::NotFreed { source, not_freed } = e {
            return Error::from(*source).with_note(&not_freed_note(&not_freed));
        }
        match e {
            TransferError::Usage(_)
            | TransferError::NotEnoughDepots { .. }
            | TransferError::Refused {
                kind: Refusal::Duration,
                ..
            } => Error::Usage(e.to_string()),
            TransferError::Refused {
                kind: Refusal::Quota,
                ..
            } => Error::Forbidden(e.to_string()),
            TransferError::Input(_)
            | TransferError::Output(_)
            | TransferError::Interrupted { .. } => Error::Local(e.to_string()),
            TransferError::Depot(DepotError::NoGrant { .. } | DepotError::NoTls { .. }) => {
                Error::Refused(e.to_string())
            }
            TransferError::Lost { .. }
            | TransferError::E2e(_)
            | TransferError::Exnode(_)
            | TransferError::Crypto(_) => Error::Data(e.to_string()),
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

/// Current Unix time in seconds.
pub(crate) fn now() -> i64 {
    ibp_auth::unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_clean_up_names_what_it_did_not_free_and_keeps_the_exit_class() {
        let lost = TransferError::PlacementFailed {
            offset: 0,
            last: "depot full".into(),
        };
        let not_freed: Vec<String> = (0..7)
            .map(|i| format!("d{i}:6715: still allocated after DECR"))
            .collect();
        let e = upload::with_not_freed(lost, not_freed);
        let err = Error::from(e);
        assert_eq!(err.exit_code(), crate::exit::UNAVAILABLE);
        assert_eq!(
            err.to_string(),
            "no depot left to place a piece of the block at offset 0: depot full; \
             7 allocation(s) it made could not be freed: d0:6715: still allocated after DECR; \
             d1:6715: still allocated after DECR; d2:6715: still allocated after DECR; \
             d3:6715: still allocated after DECR; d4:6715: still allocated after DECR; and 2 more"
        );
        // Nothing left behind: the error as it was.
        let e = upload::with_not_freed(TransferError::Usage("bad".into()), Vec::new());
        assert!(matches!(e, TransferError::Usage(_)));
        let data = Error::from(upload::with_not_freed(
            TransferError::Exnode("x".into()),
            vec!["d:1: no answer within 30 s".into()],
        ));
        assert_eq!(data.exit_code(), crate::exit::DATA);
    }
}
