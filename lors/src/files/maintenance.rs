//! Maintenance of a stored file: `lors refresh`, `trim`, `augment`,
//! `repair` and `stat --check`. The new exNode is registered first and
//! dropped allocations are released after, so no registered exNode names a
//! released allocation.

use std::sync::Arc;

use exnode::{Exnode, Security};
use serde::Serialize;

use super::download::source_text;
use super::{
    access_for, need_mdm, note_not_freed, open, pool, read_pool, reliability, targets,
    write_atomic, Grid, Opened, Placement, Source,
};
use crate::credentials::Error;
use crate::metadata::WrappedKey;
use crate::transfer::maintain::{self, Outcome, PlaceOptions, RepairReport, TrimSelect};
use crate::transfer::{Pool, Target};

/// Registers a maintained exNode in place of `src`'s (a new version for a
/// path, the file rewritten for `--xnd`).
async fn save(grid: &Grid, src: &Source, o: &Opened, x: &Exnode) -> Result<u64, Error> {
    match (src, &o.version) {
        (Source::Path { path, .. }, Some(fv)) => {
            let mdm = need_mdm(grid)?;
            // A new version with the same data key and key id: our own
            // wrapped key goes as it is (the wrap is bound to the file and
            // key id, not the version) and the manager carries the other
            // recipients' over.
            let wrapped: Vec<WrappedKey> = match (&x.encryption, &fv.wrapped_key) {
                (Some(_), Some(w)) => vec![WrappedKey {
                    recipient: mdm.whoami().await?.principal,
                    wrapped: w.clone(),
                }],
                _ => Vec::new(),
            };
            let r = mdm
                .put_version(path, fv.current_version, &exnode::to_xml(x), &wrapped)
                .await?;
            // Old versions the retention dropped: what only they used.
            super::release_pruned(grid, &r).await;
            Ok(r.version)
        }
        (Source::Xnd(f), _) => {
            write_atomic(f, exnode::to_xml(x).as_bytes())?;
            Ok(x.version)
        }
        _ => Err(Error::Usage("nothing to save the exNode to".into())),
    }
}

/// The result of a maintenance command.
#[derive(Debug, Clone, Serialize)]
pub struct Maintained {
    pub source: String,
    /// The version registered (0 when nothing changed or `--xnd`).
    pub version: u64,
    pub mappings_before: usize,
    pub mappings_after: usize,
    /// Per allocation: refresh outcomes, or releases of dropped ones.
    pub outcomes: Vec<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    pub added: usize,
}

impl Maintained {
    /// The result of changing `before` into `after` (registered as
    /// `version`), with the allocation outcomes.
    fn of(
        src: &Source,
        before: &Exnode,
        after: &Exnode,
        version: u64,
        outcomes: Vec<Outcome>,
    ) -> Self {
        Maintained {
            source: source_text(src),
            version,
            mappings_before: before.mappings.len(),
            mappings_after: after.mappings.len(),
            outcomes,
            repair: None,
            added: 0,
        }
    }

    /// Whether every allocation operation succeeded and nothing is
    /// unrecoverable.
    pub fn complete(&self) -> bool {
        self.outcomes.iter().all(|o| o.ok)
            && self
                .repair
                .as_ref()
                .is_none_or(|r| r.unrecoverable.is_empty())
    }
}

/// `lors refresh`: extends every allocation by `duration` seconds.
pub async fn refresh(grid: &Grid, src: &Source, duration: u64) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let pool = read_pool(grid, &o.exnode).await?;
    let mut x = o.exnode.clone();
    let outcomes =
        maintain::refresh(&mut x, &pool, i64::try_from(duration).unwrap_or(i64::MAX)).await;
    let version = if outcomes.iter().any(|o| o.ok) {
        save(grid, src, &o, &x).await?
    } else {
        0
    };
    Ok(Maintained::of(src, &o.exnode, &x, version, outcomes))
}

/// `lors trim`: drops mappings and releases their allocations.
pub async fn trim(grid: &Grid, src: &Source, select: &TrimSelect) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let (x, dropped) = maintain::plan_trim(&o.exnode, select)?;
    let pool = read_pool(grid, &o.exnode).await?;
    let version = save(grid, src, &o, &x).await?;
    let outcomes = maintain::release_mappings(&pool, &dropped).await;
    Ok(Maintained::of(src, &o.exnode, &x, version, outcomes))
}

/// New pieces go to depots at the exNode's own security level.
fn level_of(x: &Exnode) -> Security {
    x.mappings
        .iter()
        .filter_map(|m| m.security)
        .max_by_key(|s| match s {
            Security::Legacy => 0,
            Security::Crypto => 1,
            Security::Full => 2,
        })
        .unwrap_or(Security::Legacy)
}

async fn place_setup(
    grid: &Grid,
    x: &Exnode,
    placement: &Placement,
) -> Result<(Vec<Target>, Arc<Pool>), Error> {
    let level = level_of(x);
    let piece = x.mappings.iter().map(|m| m.alloc_length).max().unwrap_or(1);
    let (targets, mut setup) = targets(grid, level, placement, piece).await?;
    // Reading needs grants for the depots already in the exNode too.
    let read = access_for(grid, x).await?;
    setup.grants.extend(read.grants);
    if setup.tls.is_none() {
        setup.tls = read.tls;
    }
    Ok((targets, pool(grid, setup)))
}

/// `lors augment`: adds replicas until every range has `copies`.
pub async fn augment(
    grid: &Grid,
    src: &Source,
    copies: usize,
    placement: &Placement,
) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let (targets, pool) = place_setup(grid, &o.exnode, placement).await?;
    let p = PlaceOptions {
        duration: i64::try_from(placement.duration).unwrap_or(i64::MAX),
        reliability: reliability(placement.reliability),
        ticket: o.ticket.clone(),
    };
    let (x, added) = maintain::augment(&o.exnode, &pool, &targets, copies, &p).await?;
    let version = if added > 0 {
        match save(grid, src, &o, &x).await {
            Ok(v) => v,
            Err(e) => {
                let new: Vec<_> = x.mappings[..]
                    .iter()
                    .filter(|m| !o.exnode.mappings.contains(m))
                    .cloned()
                    .collect();
                let outcomes = maintain::release_mappings(&pool, &new).await;
                return Err(note_not_freed(e, &outcomes));
            }
        }
    } else {
        0
    };
    Ok(Maintained {
        added,
        ..Maintained::of(src, &o.exnode, &x, version, Vec::new())
    })
}

/// `lors repair`: probes every block and recreates what is lost or
/// corrupt from what survives.
pub async fn repair(
    grid: &Grid,
    src: &Source,
    placement: &Placement,
    threads: usize,
) -> Result<Maintained, Error> {
    let o = open(grid, src, false).await?;
    let (targets, pool) = place_setup(grid, &o.exnode, placement).await?;
    let p = PlaceOptions {
        duration: i64::try_from(placement.duration).unwrap_or(i64::MAX),
        reliability: reliability(placement.reliability),
        ticket: o.ticket.clone(),
    };
    let (x, dropped, report) = maintain::repair(&o.exnode, &pool, &targets, &p, threads).await?;
    let changed = report.recreated > 0 || !dropped.is_empty();
    let version = if changed {
        save(grid, src, &o, &x).await?
    } else {
        0
    };
    let outcomes = maintain::release_mappings(&pool, &dropped).await;
    Ok(Maintained {
        added: report.recreated,
        repair: Some(report),
        ..Maintained::of(src, &o.exnode, &x, version, outcomes)
    })
}

/// `lors stat --check`: the exNode and the health of every mapping.
pub async fn check(
    grid: &Grid,
    src: &Source,
    threads: usize,
) -> Result<(Exnode, Vec<maintain::Health>), Error> {
    let o = open(grid, src, false).await?;
    let pool = read_pool(grid, &o.exnode).await?;
    let h = maintain::probe(&o.exnode, &pool, o.ticket.as_deref(), threads).await;
    Ok((o.exnode, h))
}
