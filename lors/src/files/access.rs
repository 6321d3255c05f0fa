//! Depot access for whole-file operations: which depots an upload goes
//! to (explicit ones, or the L-Bone's offer with a grant each), the grants
//! for the depots an exNode names, and the session's pools of connections,
//! cached while their grants are fresh.

use std::sync::Arc;

use exnode::{Exnode, Security};

use super::{need_credentials, pool, tls, Grid, Placed};
use crate::credentials::Error;
use crate::depots::{self, DepotQuery, Near, Offer};
use crate::transfer::{Pool, SecureSetup, Target};

/// Seconds before a grant's expiry at which a cached offer is renewed.
const GRANT_MARGIN: i64 = 60;

/// Where an upload's data goes.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Explicit depots (`host:port`); empty: ask the L-Bone.
    pub depots: Vec<String>,
    pub near: Option<Near>,
    pub duration: u64,
    pub reliability: depots::Reliability,
}

/// Asks the L-Bone for depots (all that suit) with their grants.
pub async fn offer(
    grid: &Grid,
    size: u64,
    duration: u64,
    near: Option<Near>,
    reliability: depots::Reliability,
) -> Result<Offer, Error> {
    let url = grid.lbone.as_deref().ok_or_else(|| {
        Error::Usage("which L-Bone? give --lbone URL or set LORS_LBONE_URL".into())
    })?;
    let (trust, cred) = need_credentials(grid, "the L-Bone")?;
    let q = DepotQuery {
        vo: grid.vo.clone(),
        count: None,
        size,
        duration,
        reliability,
        near,
    };
    depots::query_offer(url, trust, cred, &q)
        .await
        .map_err(|e| match e {
            Error::Unavailable(m) => Error::Unavailable(format!("the L-Bone is unavailable: {m}")),
            e => e,
        })
}

/// Depots for an upload and a pool of connections to them, from the
/// session's cache while the grants are fresh.
pub async fn placed(
    grid: &Grid,
    security: Security,
    placement: &Placement,
    piece_size: u64,
) -> Result<(Vec<Target>, Arc<Pool>), Error> {
    let key = format!(
        "{:?}|{}|{:?}|{:?}|{}|{:?}|{piece_size}",
        grid.vo,
        security.name(),
        placement.depots,
        placement.near,
        placement.duration,
        placement.reliability
    );
    let cached = || {
        let now = crate::transfer::now();
        grid.cache
            .placements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|p| p.valid_until > now)
            .map(|p| (p.targets.clone(), p.pool.clone()))
    };
    if let Some(hit) = cached() {
        return Ok(hit);
    }
    // One query at a time; whoever waited finds the answer cached.
    let _placing = grid.cache.placing.lock().await;
    if let Some(hit) = cached() {
        return Ok(hit);
    }
    let (targets, setup, valid_until) =
        targets_and_expiry(grid, security, placement, piece_size).await?;
    let pool = pool(grid, setup);
    grid.cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key,
            Placed {
                valid_until,
                targets: targets.clone(),
                pool: pool.clone(),
            },
        );
    Ok((targets, pool))
}

/// Depots and access for an upload (or for new pieces of maintenance).
pub async fn targets(
    grid: &Grid,
    security: Security,
    placement: &Placement,
    piece_size: u64,
) -> Result<(Vec<Target>, SecureSetup), Error> {
    targets_and_expiry(grid, security, placement, piece_size)
        .await
        .map(|(t, s, _)| (t, s))
}

/// [`targets`], and until when the answer may be reused.
async fn targets_and_expiry(
    grid: &Grid,
    security: Security,
    placement: &Placement,
    piece_size: u64,
) -> Result<(Vec<Target>, SecureSetup, i64), Error> {
    if security == Security::Legacy && (!placement.depots.is_empty() || grid.lbone.is_none()) {
        if placement.depots.is_empty() {
            return Err(Error::Usage(
                "no depots: give --depot HOST:PORT (repeatable) or an L-Bone (--lbone)".into(),
            ));
        }
        let t = placement
            .depots
            .iter()
            .map(|d| Target {
                depot: d.clone(),
                security,
            })
            .collect();
        return Ok((t, SecureSetup::default(), i64::MAX));
    }
    let offer = offer(
        grid,
        piece_size,
        placement.duration,
        placement.near.clone(),
        placement.reliability,
    )
    .await?;
    let valid_until = offer
        .depots
        .iter()
        .map(|d| d.grant_not_after)
        .min()
        .unwrap_or(0)
        .saturating_sub(GRANT_MARGIN);
    let mut t = Vec::new();
    let mut grants = std::collections::HashMap::new();
    for d in &offer.depots {
        let legacy = format!("{}:{}", d.host, d.port);
        let wanted = placement.depots.is_empty()
            || placement
                .depots
                .iter()
                .any(|w| *w == legacy || *w == d.address || *w == d.name);
        if !wanted {
            continue;
        }
        match security {
            Security::Full | Security::Crypto if d.tls_port.is_some() => {
                grants.insert(d.address.clone(), d.grant.clone());
                t.push(Target {
                    depot: d.address.clone(),
                    security,
                });
            }
            Security::Legacy => t.push(Target {
                depot: legacy,
                security,
            }),
            _ => {}
        }
    }
    Ok((
        t,
        SecureSetup {
            tls: tls(grid)?,
            grants,
            ticket_reads: false,
        },
        valid_until,
    ))
}

/// Grants for every secure depot an exNode names (downloads, maintenance).
pub async fn access_for(grid: &Grid, x: &Exnode) -> Result<SecureSetup, Error> {
    access_and_expiry(grid, x).await.map(|(s, _)| s)
}

/// [`access_for`], and until when its grants may be reused.
async fn access_and_expiry(grid: &Grid, x: &Exnode) -> Result<(SecureSetup, i64), Error> {
    let secure = x
        .mappings
        .iter()
        .any(|m| m.security.is_some_and(|s| s != Security::Legacy));
    if !secure {
        return Ok((SecureSetup::default(), i64::MAX));
    }
    let offer = offer(grid, 0, 0, None, depots::Reliability::Hard).await?;
    let valid_until = offer
        .depots
        .iter()
        .map(|d| d.grant_not_after)
        .min()
        .unwrap_or(0)
        .saturating_sub(GRANT_MARGIN);
    let grants = offer
        .depots
        .iter()
        .filter(|d| d.tls_port.is_some())
        .map(|d| (d.address.clone(), d.grant.clone()))
        .collect();
    Ok((
        SecureSetup {
            tls: tls(grid)?,
            grants,
            ticket_reads: false,
        },
        valid_until,
    ))
}

/// A pool for reading `x` (downloads, refresh, trim, check), from the
/// session's cache while its grants are fresh and cover `x`'s secure
/// depots: many files read through one session share connections.
pub async fn read_pool(grid: &Grid, x: &Exnode) -> Result<Arc<Pool>, Error> {
    let secure: Vec<&str> = x
        .mappings
        .iter()
        .filter(|m| m.security.is_some_and(|s| s != Security::Legacy))
        .map(|m| m.depot.as_str())
        .collect();
    let key = if secure.is_empty() {
        "read|legacy".to_owned()
    } else {
        format!("read|secure|{:?}", grid.vo)
    };
    let key = key.as_str();
    let now = crate::transfer::now();
    if let Some(p) = cached_pool(grid, key, |p| {
        p.valid_until > now && secure.iter().all(|d| p.pool.has_grant(d))
    }) {
        return Ok(p);
    }
    let (setup, valid_until) = access_and_expiry(grid, x).await?;
    Ok(cache_pool(grid, key, valid_until, pool(grid, setup)))
}

/// The session's cached read pool under `key`, if `usable`.
fn cached_pool(grid: &Grid, key: &str, usable: impl Fn(&Placed) -> bool) -> Option<Arc<Pool>> {
    grid.cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .filter(|p| usable(p))
        .map(|p| p.pool.clone())
}

/// Keeps a read pool in the session's cache under `key` until `valid_until`.
fn cache_pool(grid: &Grid, key: &str, valid_until: i64, pool: Arc<Pool>) -> Arc<Pool> {
    grid.cache
        .placements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key.to_owned(),
            Placed {
                valid_until,
                targets: Vec::new(),
                pool: pool.clone(),
            },
        );
    pool
}

/// A pool for downloading `x`. A LOAD's file ticket is its authorization,
/// so full-crypto depots are read without asking the L-Bone (downloads work
/// while it is down); crypto-level depots want the L-Bone's grants for
/// their data ports, and are read over TLS when it cannot be reached.
pub async fn download_pool(grid: &Grid, x: &Exnode) -> Result<Arc<Pool>, Error> {
    let crypto = x
        .mappings
        .iter()
        .any(|m| m.security == Some(Security::Crypto));
    if crypto {
        match read_pool(grid, x).await {
            Ok(p) => return Ok(p),
            Err(e) if grid.lbone.is_some() => {
                tracing::warn!(error = %e, "no depot grants from the L-Bone: reading over TLS with the file ticket");
            }
            Err(e) => return Err(e),
        }
    }
    let secure = x
        .mappings
        .iter()
        .any(|m| m.security.is_some_and(|s| s != Security::Legacy));
    let key = if secure { "read|ticket" } else { "read|legacy" };
    // No grants in it: it never goes stale.
    if let Some(p) = cached_pool(grid, key, |_| true) {
        return Ok(p);
    }
    let setup = SecureSetup {
        tls: if secure { tls(grid)? } else { None },
        grants: Default::default(),
        ticket_reads: true,
    };
    Ok(cache_pool(grid, key, i64::MAX, pool(grid, setup)))
}
