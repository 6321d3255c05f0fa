//! Keeping a file alive: probe, refresh, trim, augment and repair.
//!
//! These work on an exNode and return a new one; the caller registers it
//! (a new version at the metadata manager, or a new `.xnd` file) and only
//! then releases the allocations dropped from it ([`release_mappings`]), so
//! a failure between the two never leaves an exNode naming released
//! allocations. None of them needs the data key: replicas and shares are
//! copied and rebuilt as the ciphertext the depots hold.
//!
//! A *slot* is what identical mappings hold: a plain range (its replicas)
//! or one share index of an erasure-coding group (that share's replicas).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use exnode::{Exnode, Mapping, Security};
use ibp_proto::{Attributes, Reliability};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::download::{fetch_stored, FetchError};
use super::pool::{parse_cap, Pool};
use super::upload::{CopyFrom, Made, Placer};
use super::{codec, now, Target, TransferError};
use crate::release::freed_or_why;

/// What a probe found for one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "detail")]
pub enum State {
    /// Read back and matching its checksum (or read back, without one).
    Ok,
    /// Read back, but the bytes do not match the checksum.
    Corrupt,
    /// Not readable: depot down, allocation gone or expired, refused.
    Unreadable(String),
}

/// How `lors stat --check` and `lors repair` show a mapping's state.
impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Ok => f.write_str("ok"),
            State::Corrupt => f.write_str("CORRUPT (the bytes do not match their checksum)"),
            State::Unreadable(e) => write!(f, "UNREADABLE: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Index into the exNode's mappings.
    pub mapping: usize,
    pub depot: String,
    pub offset: u64,
    pub length: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    pub expires: Option<i64>,
    #[serde(flatten)]
    pub state: State,
}

/// Reads every mapping back and checks it against its checksum, `threads`
/// at a time.
pub async fn probe(
    x: &Exnode,
    pool: &Arc<Pool>,
    ticket: Option<&str>,
    threads: usize,
) -> Vec<Health> {
    let sem = Arc::new(Semaphore::new(threads.max(1)));
    let mut set = JoinSet::new();
    for (i, m) in x.mappings.iter().enumerate() {
        let (pool, m, ticket, sem) = (
            pool.clone(),
            m.clone(),
            ticket.map(str::to_owned),
            sem.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let state = match fetch_stored(&pool, &m, ticket.as_deref()).await {
                Ok(_) => State::Ok,
                Err(FetchError::Corrupt) => State::Corrupt,
                Err(FetchError::Depot(e)) => State::Unreadable(e),
            };
            Health {
                mapping: i,
                depot: m.depot.clone(),
                offset: m.logical_offset,
                length: m.logical_length,
                share: m.share.map(|s| format!("{}:{}", s.group, s.index)),
                expires: m.expires,
                state,
            }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(h) = r {
            out.push(h);
        }
    }
    out.sort_by_key(|h| h.mapping);
    out
}

/// MANAGE operations (refresh, release) in flight at once. Each holds a
/// depot connection: a file of thousands of allocations must not open
/// thousands of connections at once, which the depots' per-address
/// connection limits refuse (every release of a large failed upload then
/// failed in the TLS handshake).
pub const MANAGE_IN_FLIGHT: usize = 16;

/// The outcome for one allocation of a refresh or a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub depot: String,
    pub offset: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// MANAGE CHNG of every mapping's allocation to live `duration` more
/// seconds from now; the exNode's expiry times are updated for those the
/// depot accepted. Mappings without a MANAGE capability are reported.
pub async fn refresh(x: &mut Exnode, pool: &Arc<Pool>, duration: i64) -> Vec<Outcome> {
    let sem = Arc::new(Semaphore::new(MANAGE_IN_FLIGHT));
    let mut set = JoinSet::new();
    for (i, m) in x.mappings.iter().enumerate() {
        let (pool, m, sem) = (pool.clone(), m.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = manage_change(&pool, &m, duration).await;
            (i, m.depot, m.logical_offset, r)
        });
    }
    let mut out = Vec::new();
    let at = now().saturating_add(duration);
    while let Some(r) = set.join_next().await {
        let Ok((i, depot, offset, r)) = r else {
            continue;
        };
        if r.is_ok() {
            if let Some(m) = x.mappings.get_mut(i) {
                m.expires = Some(at);
            }
        }
        out.push((
            i,
            Outcome {
                depot,
                offset,
                ok: r.is_ok(),
                error: r.err(),
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

async fn manage_change(pool: &Pool, m: &Mapping, duration: i64) -> Result<(), String> {
    let level = m.security.unwrap_or(Security::Legacy);
    let cap = m.manage.as_deref().ok_or("no MANAGE capability")?;
    let cap = parse_cap(&m.depot, cap).map_err(|e| e.to_string())?;
    let mut c = pool.get(&m.depot, level).await.map_err(|e| e.to_string())?;
    let r = c
        .change(
            &cap,
            Attributes {
                max_size: 0,
                duration,
                reliability: 0,
            },
        )
        .await;
    pool.finish(&m.depot, level, c, r)
        .map_err(|e| e.to_string())
}

/// Frees (MANAGE DECR, then PROBE) the allocations of `mappings`, best
/// effort; each outcome says whether its allocation is gone
/// ([`free_allocation`]).
pub async fn release_mappings(pool: &Arc<Pool>, mappings: &[Mapping]) -> Vec<Outcome> {
    let sem = Arc::new(Semaphore::new(MANAGE_IN_FLIGHT));
    let mut set = JoinSet::new();
    for (i, m) in mappings.iter().enumerate() {
        let (pool, m, sem) = (pool.clone(), m.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let level = m.security.unwrap_or(Security::Legacy);
            let r = match m.manage.as_deref() {
                Some(cap) => free_allocation(&pool, &m.depot, level, cap).await,
                None => Err("no MANAGE capability".to_owned()),
            };
            (
                i,
                Outcome {
                    depot: m.depot.clone(),
                    offset: m.logical_offset,
                    ok: r.is_ok(),
                    error: r.err(),
                },
            )
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(o) = r {
            out.push(o);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

/// Frees one allocation with its MANAGE capability `cap` and confirms it
/// ([`ibp_depot_client::Connection::free`]: `DECR` of the read reference
/// count, then `PROBE`). `Ok` only when the depot says the capability no
/// longer exists; otherwise why not ([`crate::release::freed_or_why`]),
/// naming the depot.
pub(crate) async fn free_allocation(
    pool: &Pool,
    depot: &str,
    level: Security,
    cap: &str,
) -> Result<(), String> {
    let cap = parse_cap(depot, cap).map_err(|e| e.to_string())?;
    let mut c = pool.get(depot, level).await.map_err(|e| e.to_string())?;
    let freed = c.free(&cap).await;
    // After an error reply the depot closes the connection: it goes back
    // to the pool only when there was none.
    if freed.connection_open() {
        pool.put(depot, level, c);
    }
    freed_or_why(freed, |e| {
        pool.check::<()>(depot, Err(e))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    })
}

/// Which mappings `trim` drops.
#[derive(Debug, Clone)]
pub enum TrimSelect {
    /// Every mapping on these depots (`host:port`).
    Depots(Vec<String>),
    /// These mapping indices (as `lors stat --mappings` lists them).
    Mappings(Vec<usize>),
}

/// The exNode without the selected mappings, and the mappings dropped.
/// Refused if the result would lose bytes (a range or a group left with
/// nothing, or fewer than `k` shares).
pub fn plan_trim(x: &Exnode, select: &TrimSelect) -> Result<(Exnode, Vec<Mapping>), TransferError> {
    let drop_it = |i: usize, m: &Mapping| match select {
        TrimSelect::Depots(d) => d.contains(&m.depot),
        TrimSelect::Mappings(v) => v.contains(&i),
    };
    let mut kept = x.clone();
    kept.mappings.clear();
    let mut dropped = Vec::new();
    for (i, m) in x.mappings.iter().enumerate() {
        if drop_it(i, m) {
            dropped.push(m.clone());
        } else {
            kept.mappings.push(m.clone());
        }
    }
    if dropped.is_empty() {
        return Err(TransferError::Usage(
            "nothing to trim: no mapping matches".into(),
        ));
    }
    kept.validate().map_err(|e| {
        TransferError::Usage(format!(
            "trimming these {} mappings would lose data ({e}); nothing was changed",
            dropped.len()
        ))
    })?;
    Ok((kept, dropped))
}

/// How to place new pieces (augment, repair).
#[derive(Clone)]
pub struct PlaceOptions {
    pub duration: i64,
    pub reliability: Reliability,
    pub ticket: Option<String>,
}

/// Slots of the exNode: mapping indices holding identical content.
/// A slot: logical offset, length and (group, share index).
type SlotKey = (u64, u64, Option<(u32, u16)>);

fn slots(x: &Exnode) -> BTreeMap<SlotKey, Vec<usize>> {
    let mut s: BTreeMap<_, Vec<usize>> = BTreeMap::new();
    for (i, m) in x.mappings.iter().enumerate() {
        s.entry((
            m.logical_offset,
            m.logical_length,
            m.share.map(|s| (s.group, s.index)),
        ))
        .or_default()
        .push(i);
    }
    s
}

/// Depots holding anything of the range at `offset`.
fn depots_of_range(x: &Exnode, offset: u64) -> HashSet<String> {
    x.mappings
        .iter()
        .filter(|m| m.logical_offset == offset)
        .map(|m| m.depot.clone())
        .collect()
}

fn placer(
    x: &Exnode,
    targets: &[Target],
    pool: &Arc<Pool>,
    claimed: HashSet<String>,
    made: &Arc<Mutex<Vec<Made>>>,
    p: &PlaceOptions,
) -> Placer {
    Placer {
        targets: Arc::new(targets.to_vec()),
        pool: pool.clone(),
        claimed: Arc::new(Mutex::new(claimed)),
        made: made.clone(),
        on_alloc: None,
        opts_duration: p.duration,
        reliability: p.reliability,
        uuid: x.file.unwrap_or_default().to_string(),
        block: u64::MAX,
        cancel: Default::default(),
    }
}

/// Adds replicas until every slot has `copies`, each on a depot holding
/// nothing of that range: copied depot to depot (COPY, secure COPY at the
/// secure levels) from a replica of the slot; where a COPY fails, or
/// cannot reach the target's level, the client reads one verified replica
/// and stores it. A COPY is byte for byte, so the new mapping keeps the
/// source's checksum (not verified by this step: `lors check`/`repair`
/// read replicas back). Returns the new exNode and how many mappings it
/// added.
pub async fn augment(
    x: &Exnode,
    pool: &Arc<Pool>,
    targets: &[Target],
    copies: usize,
    p: &PlaceOptions,
) -> Result<(Exnode, usize), TransferError> {
    let made: Arc<Mutex<Vec<Made>>> = Arc::default();
    let r = augment_inner(x, pool, targets, copies, p, &made).await;
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            let made = std::mem::take(&mut *made.lock().unwrap_or_else(|e| e.into_inner()));
            let not_freed = super::upload::release_all(pool, &made).await;
            Err(super::upload::with_not_freed(e, not_freed))
        }
    }
}

async fn augment_inner(
    x: &Exnode,
    pool: &Arc<Pool>,
    targets: &[Target],
    copies: usize,
    p: &PlaceOptions,
    made: &Arc<Mutex<Vec<Made>>>,
) -> Result<(Exnode, usize), TransferError> {
    let mut out = x.clone();
    let mut added = 0;
    for ((offset, length, _), idx) in slots(x) {
        if idx.len() >= copies {
            continue;
        }
        let pl = placer(x, targets, pool, depots_of_range(&out, offset), made, p);
        // The depots copy a replica to the new ones; the client reads one
        // (verified) and sends it only where a COPY fails.
        let source = idx
            .iter()
            .map(|&i| &x.mappings[i])
            .filter(|m| m.read.is_some() && m.alloc_length > 0)
            .min_by_key(|m| pool.is_down(&m.depot));
        let from = source.map(|m| CopyFrom {
            depot: m.depot.clone(),
            security: m.security.unwrap_or(Security::Legacy),
            read: m.read.clone().unwrap_or_default(),
            offset: m.alloc_offset,
            size: m.alloc_length,
            others: targets.iter().map(|t| t.depot.clone()).collect(),
        });
        let mut read: Option<(Mapping, Vec<u8>)> = None;
        for _ in idx.len()..copies {
            let copy_to = match (&from, source) {
                (Some(f), Some(m)) if pl.targets.iter().all(|t| f.reaches(t.security)) => {
                    pl.next_candidate().map(|t| (t, f, m))
                }
                _ => None,
            };
            let mut preferred = None;
            if let Some((t, f, m)) = copy_to {
                if !pool.copy_usable(&f.depot, &pl.targets[t].depot) {
                    preferred = Some(t);
                } else {
                    match pl.copy_on(t, f).await {
                        Ok(stored) => {
                            let target = pl.targets[stored.target].clone();
                            let mut mapping = stored.mapping(m, &target);
                            mapping.alloc_offset = 0;
                            out.mappings.push(mapping);
                            added += 1;
                            continue;
                        }
                        Err(e @ TransferError::Interrupted { .. }) => return Err(e),
                        Err(e) => {
                            tracing::warn!(
                            "depot COPY from {} to {} failed ({e}): the client sends this replica itself",
                            f.depot,
                            pl.targets[t].depot
                        );
                            pool.copy_failed(&f.depot, &pl.targets[t].depot);
                            preferred = Some(t);
                        }
                    }
                }
            }
            if read.is_none() {
                read = Some(
                    first_good(x, &idx, pool, p.ticket.as_deref())
                        .await
                        .ok_or_else(|| TransferError::Lost {
                            offset,
                            end: offset + length,
                            detail: "no replica readable to copy from; try lors repair".into(),
                        })?,
                );
            }
            let Some((template, bytes)) = &read else {
                continue;
            };
            let stored = pl.place(preferred, bytes).await?;
            let t = pl.targets[stored.target].clone();
            out.mappings.push(stored.mapping(template, &t));
            added += 1;
        }
    }
    sort_mappings(&mut out);
    out.validate()
        .map_err(|e| TransferError::Exnode(format!("augment made an invalid exNode: {e}")))?;
    Ok((out, added))
}

fn sort_mappings(x: &mut Exnode) {
    x.mappings
        .sort_by_key(|m| (m.logical_offset, m.share.map(|s| s.index)));
}

/// The first mapping of `idx` that reads back verified, with its bytes.
async fn first_good(
    x: &Exnode,
    idx: &[usize],
    pool: &Pool,
    ticket: Option<&str>,
) -> Option<(Mapping, Vec<u8>)> {
    for &i in idx {
        let m = &x.mappings[i];
        if let Ok(b) = fetch_stored(pool, m, ticket).await {
            return Some((m.clone(), b));
        }
    }
    None
}

/// What `repair` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Mappings read back.
    pub checked: usize,
    /// Mappings found corrupt or unreadable, dropped from the exNode.
    pub bad: Vec<Health>,
    /// New mappings made to replace them.
    pub recreated: usize,
    /// Ranges that could not be rebuilt (nothing or too little left).
    pub unrecoverable: Vec<String>,
}

/// Probes every mapping, drops those corrupt or unreadable, and recreates
/// them from what survives: a replica from a good replica, a share by
/// rebuilding its group from `k` good shares. Each slot keeps as many
/// mappings as it had. Returns the new exNode (bad mappings removed: the
/// caller releases them after registering it) and the report.
pub async fn repair(
    x: &Exnode,
    pool: &Arc<Pool>,
    targets: &[Target],
    p: &PlaceOptions,
    threads: usize,
) -> Result<(Exnode, Vec<Mapping>, RepairReport), TransferError> {
    let health = probe(x, pool, p.ticket.as_deref(), threads).await;
    let bad: HashSet<usize> = health
        .iter()
        .filter(|h| h.state != State::Ok)
        .map(|h| h.mapping)
        .collect();
    let mut report = RepairReport {
        checked: health.len(),
        bad: health
            .iter()
            .filter(|h| h.state != State::Ok)
            .cloned()
            .collect(),
        ..Default::default()
    };
    if bad.is_empty() {
        return Ok((x.clone(), Vec::new(), report));
    }
    let made: Arc<Mutex<Vec<Made>>> = Arc::default();
    let r = repair_inner(x, pool, targets, p, &bad, &mut report, &made).await;
    match r {
        Ok((out, dropped)) => Ok((out, dropped, report)),
        Err(e) => {
            let made = std::mem::take(&mut *made.lock().unwrap_or_else(|e| e.into_inner()));
            let not_freed = super::upload::release_all(pool, &made).await;
            Err(super::upload::with_not_freed(e, not_freed))
        }
    }
}

async fn repair_inner(
    x: &Exnode,
    pool: &Arc<Pool>,
    targets: &[Target],
    p: &PlaceOptions,
    bad: &HashSet<usize>,
    report: &mut RepairReport,
    made: &Arc<Mutex<Vec<Made>>>,
) -> Result<(Exnode, Vec<Mapping>), TransferError> {
    // New mappings; the good ones and those of ranges that cannot be
    // rebuilt (kept: a later repair may find their depot back) are added
    // at the end.
    let mut out = x.clone();
    out.mappings.clear();
    let mut keep_bad: HashSet<usize> = HashSet::new();
    let slots = slots(x);
    // Plain ranges: copy from a surviving replica.
    for ((offset, length, share), idx) in &slots {
        if share.is_some() {
            continue;
        }
        let lost: Vec<usize> = idx.iter().copied().filter(|i| bad.contains(i)).collect();
        if lost.is_empty() {
            continue;
        }
        let good: Vec<usize> = idx.iter().copied().filter(|i| !bad.contains(i)).collect();
        let Some((template, bytes)) = first_good(x, &good, pool, p.ticket.as_deref()).await else {
            report.unrecoverable.push(format!(
                "bytes {offset}..{}: no good replica left",
                offset + length
            ));
            keep_bad.extend(lost);
            continue;
        };
        let held: HashSet<String> = good.iter().map(|&i| x.mappings[i].depot.clone()).collect();
        let pl = placer(x, targets, pool, held, made, p);
        for _ in &lost {
            let stored = pl.place(None, &bytes).await?;
            let t = pl.targets[stored.target].clone();
            out.mappings.push(stored.mapping(&template, &t));
            report.recreated += 1;
        }
    }
    // Erasure-coded groups: rebuild the lost shares from k good ones.
    for g in &x.ec_groups {
        let in_group: Vec<usize> = (0..x.mappings.len())
            .filter(|&i| x.mappings[i].share.is_some_and(|s| s.group == g.id))
            .collect();
        let lost: Vec<usize> = in_group
            .iter()
            .copied()
            .filter(|i| bad.contains(i))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let good: Vec<&Mapping> = in_group
            .iter()
            .filter(|i| !bad.contains(i))
            .map(|&i| &x.mappings[i])
            .collect();
        let counters = super::download::Counters::default();
        let (have, last) =
            super::download::collect_shares(g, &good, pool, p.ticket.as_deref(), &counters).await;
        let (k, m) = (g.k as usize, g.m as usize);
        if have.len() < k {
            report.unrecoverable.push(format!(
                "bytes {}..{}: {} of {k} shares left ({last})",
                g.logical_offset,
                g.logical_offset + g.logical_length,
                have.len()
            ));
            keep_bad.extend(lost);
            continue;
        }
        let len = g.logical_length;
        let shares = tokio::task::spawn_blocking(move || {
            let block = codec::decode(len, k, m, have)?;
            codec::encode(&block, k, m)
        })
        .await
        .map_err(|e| TransferError::Output(e.to_string()))??;
        let held: HashSet<String> = good.iter().map(|m| m.depot.clone()).collect();
        let pl = placer(x, targets, pool, held, made, p);
        for i in lost {
            let template = &x.mappings[i];
            let Some(index) = template.share.map(|s| s.index as usize) else {
                continue;
            };
            let bytes = &shares[index];
            let mut t_map = template.clone();
            t_map.checksum = Some(crate::crypto::checksum_at(&t_map.place(), bytes));
            t_map.alloc_offset = 0;
            t_map.alloc_length = bytes.len() as u64;
            let stored = pl.place(None, bytes).await?;
            let t = pl.targets[stored.target].clone();
            out.mappings.push(stored.mapping(&t_map, &t));
            report.recreated += 1;
        }
    }
    let mut dropped = Vec::new();
    for (i, m) in x.mappings.iter().enumerate() {
        if !bad.contains(&i) || keep_bad.contains(&i) {
            out.mappings.push(m.clone());
        } else {
            dropped.push(m.clone());
        }
    }
    sort_mappings(&mut out);
    out.validate()
        .map_err(|e| TransferError::Exnode(format!("repair made an invalid exNode: {e}")))?;
    Ok((out, dropped))
}
