//! Liveness: every registered depot's STATUS is polled at a fixed interval.
//!
//! Each depot is polled on its own (a task per depot and round, at most
//! `poll_concurrency` at a time, each within `poll_timeout`), so a depot that
//! accepts a connection and never answers delays nobody: the other depots'
//! polls start on the next tick whatever it does, and its own next poll
//! starts only once the previous one has timed out.
//!
//! The exchange is IBP 1.4's legacy STATUS over plain TCP: `1 4 3 <timeout>`
//! (RES) lists the resources, then `1 4 <rid> 1 ibp <timeout>` (INQ) per
//! resource answers `1 <len> \n` and a tagged body ([`StatusInfo`]).
//! Capacities are summed over the resources; the largest free space of a
//! single resource is kept too (one allocation cannot span resources).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibp_proto::{Expect, Reply, Request, Rid, Status, StatusInfo, StatusOp, Version, MAX_LINE};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::liveness::Liveness;
use crate::store::{Capacity, Store};

/// Most resources read from one depot.
pub const MAX_RESOURCES: usize = 64;
/// Largest STATUS INQ body accepted.
const MAX_STATUS_BODY: u64 = 64 * 1024;

/// Why a poll failed (recorded as the depot's `last_error`).
#[derive(Debug, Error)]
pub enum PollError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("depot closed the connection")]
    Closed,
    #[error("bad reply: {0}")]
    Protocol(String),
    #[error("depot refused STATUS: error {0}")]
    Refused(i32),
}

async fn read_line(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, PollError> {
    let mut line = Vec::with_capacity(256);
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(PollError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(PollError::Protocol(
            "reply line too long or cut short".into(),
        ));
    }
    Ok(line)
}

fn status_request(op: StatusOp, timeout_secs: i64) -> Vec<u8> {
    Request::Status(Status {
        version: Version::V1,
        op,
        timeout: timeout_secs,
    })
    .encode()
    .into_bytes()
}

async fn connect(addr: &(String, u16)) -> Result<BufReader<TcpStream>, PollError> {
    let tcp = TcpStream::connect((addr.0.as_str(), addr.1))
        .await
        .map_err(PollError::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(BufReader::new(tcp))
}

/// The depot's resources (RES). A depot that refuses RES (a v0-only depot)
/// gets `None`: its default resource 0 is inquired instead.
async fn resources(
    conn: &mut BufReader<TcpStream>,
    timeout_secs: i64,
) -> Result<Option<Vec<Rid>>, PollError> {
    conn.get_mut()
        .write_all(&status_request(StatusOp::Resources, timeout_secs))
        .await?;
    let line = read_line(conn).await?;
    match Reply::parse(&line, Expect::Resources) {
        Ok(Reply::Resources(rids)) => Ok(Some(rids)),
        Ok(Reply::Error(_) | Reply::StatusError(_)) => Ok(None),
        Ok(_) => Err(PollError::Protocol("unexpected reply to RES".into())),
        Err(e) => Err(PollError::Protocol(e.to_string())),
    }
}

async fn inquire_one(
    conn: &mut BufReader<TcpStream>,
    rid: Rid,
    timeout_secs: i64,
) -> Result<StatusInfo, PollError> {
    let op = StatusOp::Inquire {
        rid: Some(rid),
        password: "ibp".into(),
    };
    conn.get_mut()
        .write_all(&status_request(op, timeout_secs))
        .await?;
    let line = read_line(conn).await?;
    let len = match Reply::parse(&line, Expect::Payload) {
        Ok(Reply::Payload(n)) if n <= MAX_STATUS_BODY => n,
        Ok(Reply::Payload(n)) => {
            return Err(PollError::Protocol(format!("STATUS body of {n} bytes")))
        }
        Ok(Reply::Error(e) | Reply::StatusError(e)) => return Err(PollError::Refused(e.code())),
        Ok(_) => return Err(PollError::Protocol("unexpected reply to INQ".into())),
        Err(e) => return Err(PollError::Protocol(e.to_string())),
    };
    let mut body = vec![0u8; len as usize];
    conn.read_exact(&mut body).await?;
    let text = String::from_utf8(body)
        .map_err(|_| PollError::Protocol("STATUS body is not text".into()))?;
    StatusInfo::parse(&text).map_err(|e| PollError::Protocol(e.to_string()))
}

async fn inquire_inner(addr: &(String, u16), timeout: Duration) -> Result<Capacity, PollError> {
    let timeout_secs = i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX);
    let mut conn = connect(addr).await?;
    let rids = match resources(&mut conn, timeout_secs).await? {
        Some(rids) => rids,
        None => {
            // The depot closes the connection after an error reply.
            conn = connect(addr).await?;
            vec![Rid(0)]
        }
    };
    if rids.is_empty() {
        return Err(PollError::Protocol("depot has no resources".into()));
    }
    let mut c = Capacity {
        max_duration: 0,
        ..Capacity::default()
    };
    for rid in rids.into_iter().take(MAX_RESOURCES) {
        let s = inquire_one(&mut conn, rid, timeout_secs).await?;
        c.hard_capacity = c.hard_capacity.saturating_add(s.hard_configured);
        c.hard_used = c.hard_used.saturating_add(s.hard_used);
        c.hard_free = c.hard_free.saturating_add(s.hard_available);
        c.soft_capacity = c.soft_capacity.saturating_add(s.total_configured);
        c.soft_used = c.soft_used.saturating_add(s.total_used);
        c.soft_free = c.soft_free.saturating_add(s.total_available);
        c.largest_hard_free = c.largest_hard_free.max(s.hard_available);
        c.largest_soft_free = c.largest_soft_free.max(s.total_available);
        // Negative: no limit, which beats any finite one.
        c.max_duration = if c.max_duration < 0 || s.max_duration < 0 {
            -1
        } else {
            c.max_duration.max(s.max_duration)
        };
        c.resources += 1;
    }
    Ok(c)
}

/// One STATUS poll of the depot at `addr` (host, legacy port), all within
/// `timeout`.
pub async fn inquire(addr: &(String, u16), timeout: Duration) -> Result<Capacity, PollError> {
    match tokio::time::timeout(timeout, inquire_inner(addr, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(PollError::Timeout(timeout)),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Polls every registered depot until shut down.
pub struct Poller {
    store: Store,
    liveness: Liveness,
    slots: Arc<Semaphore>,
    /// Depots whose poll has not finished (not polled again until it has).
    in_flight: Arc<Mutex<HashSet<(String, u16)>>>,
    /// Last logged availability, to log changes once.
    available: Arc<Mutex<HashMap<(String, u16), bool>>>,
    /// Wakes the poller early (a depot was registered or changed).
    wake: Arc<Notify>,
    tracker: TaskTracker,
}

/// Removes a depot from the in-flight set when its poll task ends, however
/// it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<(String, u16)>>>,
    addr: (String, u16),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.addr);
        }
    }
}

impl Poller {
    pub fn new(store: Store, liveness: Liveness, concurrency: usize) -> Poller {
        Poller {
            store,
            liveness,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            in_flight: Arc::default(),
            available: Arc::default(),
            wake: Arc::new(Notify::new()),
            tracker: TaskTracker::new(),
        }
    }

    /// A handle that starts a round at once (after registrations change).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Polls every `poll_interval` (and when woken) until `shutdown`; then
    /// waits for the polls in flight (each ends within `poll_timeout`).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.liveness.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            // A round waits for the database (up to its acquire timeout when
            // the database is down): shutdown must not wait for it.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.round(&shutdown) => {}
            }
        }
        self.tracker.close();
        let _ = tokio::time::timeout(
            self.liveness.poll_timeout + Duration::from_secs(1),
            self.tracker.wait(),
        )
        .await;
    }

    async fn round(&self, shutdown: &CancellationToken) {
        let targets = match self.store.poll_targets().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the depots to poll");
                return;
            }
        };
        match self.store.sweep_status().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "forgot the status of unregistered depots"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep depot status"),
        }
        if let Ok(mut known) = self.available.lock() {
            known.retain(|k, _| targets.contains(k));
        }
        for addr in targets {
            {
                let Ok(mut set) = self.in_flight.lock() else {
                    return;
                };
                if !set.insert(addr.clone()) {
                    tracing::debug!(host = %addr.0, port = addr.1, "previous poll still running; skipped");
                    continue;
                }
            }
            let guard = InFlight {
                set: self.in_flight.clone(),
                addr: addr.clone(),
            };
            let task = PollTask {
                store: self.store.clone(),
                liveness: self.liveness,
                available: self.available.clone(),
                slots: self.slots.clone(),
                shutdown: shutdown.clone(),
            };
            self.tracker.spawn(async move {
                task.run(addr).await;
                drop(guard);
            });
        }
    }
}

struct PollTask {
    store: Store,
    liveness: Liveness,
    available: Arc<Mutex<HashMap<(String, u16), bool>>>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl PollTask {
    async fn run(self, addr: (String, u16)) {
        let _permit = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return,
            p = self.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let result = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return,
            r = inquire(&addr, self.liveness.poll_timeout) => r,
        };
        let (host, port) = (&addr.0, addr.1);
        let now = now_ms();
        let before = self
            .available
            .lock()
            .ok()
            .and_then(|m| m.get(&addr).copied());
        let available = match result {
            Ok(c) => {
                tracing::debug!(%host, port, hard_free = c.hard_free, soft_free = c.soft_free, "depot answered");
                if let Err(e) = self.store.record_success(host, port, now, &c).await {
                    tracing::error!(%host, port, error = %e, "cannot record a poll");
                    return;
                }
                true
            }
            Err(e) => {
                let misses = match self
                    .store
                    .record_failure(host, port, now, &e.to_string())
                    .await
                {
                    Ok(m) => m,
                    Err(db) => {
                        tracing::error!(%host, port, error = %db, "cannot record a missed poll");
                        return;
                    }
                };
                tracing::debug!(%host, port, misses, error = %e, "depot missed a poll");
                before == Some(true) && misses < self.liveness.missed_polls_down
            }
        };
        if let Ok(mut m) = self.available.lock() {
            m.insert(addr.clone(), available);
        }
        match (before, available) {
            (Some(false) | None, true) => tracing::info!(%host, port, "depot available"),
            (Some(true) | None, false) => tracing::warn!(%host, port, "depot unavailable"),
            _ => {}
        }
    }
}
