//! After a put: releasing the allocations of old versions the metadata
//! manager's retention dropped. The manager drops a version that falls
//! outside the file's retention in the put's own transaction and answers,
//! per dropped version, the MANAGE capabilities of allocations no kept
//! version names ([`PutResult::pruned`]); every put of a version (upload,
//! refresh, trim, augment, repair) calls [`release_pruned`] with that
//! answer.
//!
//! Best effort, like `lors rm`: an allocation not freed (a depot down, a
//! client killed before it got here) is named in a warning and simply
//! expires at the end of its duration, since nobody refreshes it any more
//! (no kept version names it).

use crate::depots;
use crate::metadata::PutResult;
use crate::release::{self, Release, SecureAccess};

use super::{access, Grid};

/// Releases what `put` says the retention left to release; one outcome
/// per capability (none when nothing was dropped). Capabilities naming a
/// secure depot are released on its secure port with the L-Bone's grant,
/// the others on the legacy port.
pub async fn release_pruned(grid: &Grid, put: &PutResult) -> Vec<Release> {
    for d in &put.pruned {
        if let Some(e) = &d.error {
            tracing::warn!(
                "{}: version {} dropped by the retention, its allocations not released: {e}",
                put.path,
                d.version
            );
        }
    }
    let caps = put.released_capabilities();
    if caps.is_empty() {
        return Vec::new();
    }
    let secure = match (&grid.trust, &grid.credential, &grid.lbone) {
        (Some(trust), Some(cred), Some(_)) => {
            match access::offer(grid, 0, 0, None, depots::Reliability::Hard).await {
                Ok(offer) => SecureAccess::from_offer(&offer, trust, cred).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "no depot grants from the L-Bone: releasing old versions' allocations on legacy ports only");
                    None
                }
            }
        }
        _ => None,
    };
    let out = release::release_all(&caps, secure.as_ref()).await;
    for r in out.iter().filter(|r| !r.freed) {
        tracing::warn!(
            "{}: allocation {} of an old version dropped by the retention not freed: {}; it expires on its own",
            put.path,
            r.allocation,
            r.error.as_deref().unwrap_or("unknown error")
        );
    }
    out
}
