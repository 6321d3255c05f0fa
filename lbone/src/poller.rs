//! Liveness: every registered depot's STATUS is polled at a fixed interval.
//!
//! Each depot is polled on its own (a task per depot and round, at most
//! `poll_concurrency` at a time, each within `poll_timeout`), so a depot that
//! accepts a connection and never answers delays nobody: the other depots'
//! polls start on the next tick whatever it does, and its own next poll
//! starts only once the previous one has timed out. The poller has its own
//! tasks, its own database connections and no share of the HTTPS server's
//! connection budget: clients of the API cannot starve it.
//!
//! Which port: a registration with a TLS port is polled **over TLS on that
//! port**, never on the legacy port (so a depot whose operator switched the
//! legacy port off, `legacy = false`, stays offered). The L-Bone presents its
//! own server certificate and key as the TLS client certificate (the depot
//! serves STATUS before AUTH to any peer whose certificate verified in the
//! handshake) and verifies the depot's certificate for the registered host
//! against the CAs of its trust directory, as `lors` does. There is no
//! fallback to the legacy port when the TLS poll fails: a depot whose
//! certificate does not verify is down, with the reason as `last_error`.
//! Registrations without a TLS port are polled on the legacy port.
//!
//! The exchange is IBP 1.4's STATUS: `1 4 3 <timeout>` (RES) lists the
//! resources, then `1 4 <rid> 1 ibp <timeout>` (INQ) per resource answers
//! `1 <len> \n` and a tagged body ([`StatusInfo`]); on the TLS port the same
//! lines with version 2 (`2 4 3 <timeout>`, `2 4 <rid> 1 ibp <timeout>`).
//! Capacities are summed over the resources; the largest free space of a
//! single resource is kept too (one allocation cannot span resources).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibp_depot_client::{ClientError, Connection};
use ibp_proto::{IbpError, Rid, StatusInfo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::liveness::Liveness;
use crate::store::{Capacity, PollTarget, Store};

/// Most resources read from one depot.
pub const MAX_RESOURCES: usize = 64;
/// Largest STATUS INQ body accepted.
const MAX_STATUS_BODY: u64 = 64 * 1024;
/// Bound on closing a poll connection politely.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest refusal reason kept from a depot's reply (in `last_error`).
const MAX_REASON: usize = 200;

/// Why a poll failed (recorded as the depot's `last_error`).
#[derive(Debug, Error)]
pub enum PollError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("depot closed the connection")]
    Closed,
    #[error("bad reply: {0}")]
    Protocol(String),
    /// The depot answered STATUS with an IBP error: its words and name.
    #[error("STATUS: {0}{reason}", reason = reason_suffix(.1))]
    Refused(IbpError, String),
    /// The TLS connection failed: the depot's certificate, or the L-Bone's
    /// at the depot, or the handshake.
    #[error("TLS: {0}")]
    Tls(String),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// A clear message for a TLS failure (as rustls reports it).
fn tls_message(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer => {
                    "not issued by a CA of the L-Bone's trust directory (ca/*.pem)".to_owned()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "not issued for the registered host name".to_owned()
                }
                C::Expired | C::ExpiredContext { .. } => "expired".to_owned(),
                C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".to_owned(),
                C::Revoked => "revoked".to_owned(),
                C::BadSignature => "bad signature".to_owned(),
                other => format!("{other:?}"),
            };
            format!("the depot's certificate is refused: {why}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the depot refused the connection (TLS alert {alert:?}); if it refused the L-Bone's \
             certificate: the depot's trust directory must hold the CA of the L-Bone's \
             server_cert, which must allow clientAuth"
        ),
        other => other.to_string(),
    }
}

impl From<std::io::Error> for PollError {
    fn from(e: std::io::Error) -> PollError {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(t) => PollError::Tls(tls_message(t)),
            None => PollError::Io(e),
        }
    }
}

/// The TLS client configuration of the poller: depots' certificates are
/// verified against the trust directory's CAs (`ca/`) by host name and
/// against its revocation lists, and the L-Bone presents `chain` (its
/// server certificate, then any intermediates) with `key_pkcs8`. TLS 1.3
/// only.
pub fn tls_config(
    trust: &ibp_auth::TrustStore,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    ibp_auth::tls::verifying_servers(trust)?.with_client_auth_cert(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)),
    )
}

impl From<ClientError> for PollError {
    fn from(e: ClientError) -> PollError {
        match e {
            ClientError::Connect(e) => PollError::Connect(e),
            ClientError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                PollError::Closed
            }
            ClientError::Io(e) => PollError::from(e),
            ClientError::Ibp(e) => PollError::Refused(e, String::new()),
            ClientError::Refused { error, reason } => PollError::Refused(error, printable(&reason)),
            ClientError::Tls(why) => PollError::Tls(why),
            ClientError::Proto(e) => PollError::Protocol(e.to_string()),
            ClientError::StatusTooLong(n) => {
                PollError::Protocol(format!("STATUS body of {n} bytes"))
            }
            ClientError::NoDataPort => PollError::Protocol(e.to_string()),
        }
    }
}

/// A refusal's reason as `last_error` keeps it: printable ASCII only,
/// words separated by single spaces, bounded.
fn printable(reason: &str) -> String {
    let reason: String = reason
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(MAX_REASON)
        .collect();
    reason.trim().to_owned()
}

/// Where and how to poll one depot.
struct Dialer<'a> {
    target: &'a PollTarget,
    tls: Option<&'a Arc<rustls::ClientConfig>>,
    /// Each step's own bound, longer than the whole poll's: the poll's
    /// timeout decides ("no answer within").
    step: Duration,
}

impl Dialer<'_> {
    /// The legacy port, or the TLS port (STATUS before AUTH: no grant)
    /// when the registration has one.
    async fn connect(&self) -> Result<Connection, PollError> {
        let t = self.target;
        let port = t.tls_port.unwrap_or(t.port);
        let addr = if t.host.contains(':') {
            format!("[{}]:{port}", t.host)
        } else {
            format!("{}:{port}", t.host)
        };
        if t.tls_port.is_none() {
            return Ok(Connection::legacy(&addr, self.step).await?);
        }
        let cfg = self
            .tls
            .ok_or_else(|| PollError::Tls("the L-Bone has no TLS client configuration".into()))?;
        Ok(Connection::full(&addr, cfg, None, self.step).await?)
    }
}

async fn inquire_inner(dialer: &Dialer<'_>) -> Result<(Capacity, Connection), PollError> {
    let mut conn = dialer.connect().await?;
    // A depot that refuses RES (a v0-only depot): its default resource 0 is
    // inquired instead.
    let rids = match conn.resources().await {
        Ok(rids) => rids,
        Err(e) if e.ibp().is_some() => {
            // The depot closes the connection after an error reply.
            conn = dialer.connect().await?;
            vec![Rid(0)]
        }
        Err(e) => return Err(e.into()),
    };
    if rids.is_empty() {
        return Err(PollError::Protocol("depot has no resources".into()));
    }
    let mut c = Capacity {
        max_duration: 0,
        ..Capacity::default()
    };
    for rid in rids.into_iter().take(MAX_RESOURCES) {
        let s: StatusInfo = conn.status_within(rid, MAX_STATUS_BODY).await?;
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
    Ok((c, conn))
}

/// One STATUS poll of `target` (over TLS with `tls` when it has a TLS port,
/// else on its legacy port), all within `timeout`.
pub async fn inquire(
    target: &PollTarget,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Capacity, PollError> {
    let dialer = Dialer {
        target,
        tls,
        step: timeout.saturating_mul(2),
    };
    match tokio::time::timeout(timeout, inquire_inner(&dialer)).await {
        Ok(Ok((c, mut conn))) => {
            // Best effort (TLS close_notify, FIN); the answer is in.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.shutdown()).await;
            Ok(c)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PollError::Timeout(timeout)),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// This instance's name in `poll_claims`: the host's name and the address
/// its API is bound to. Stable across restarts on the same host and port,
/// so that a restarted L-Bone renews its own claims at once instead of
/// waiting out the lease of its former self; unique among instances, since
/// two cannot bind one address on one host.
pub fn instance_name(bound: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}|{bound}")
}

/// Polls every registered depot until shut down.
pub struct Poller {
    store: Store,
    liveness: Liveness,
    /// How depots with a TLS port are reached (see [`tls_config`]);
    /// replaced on SIGHUP, taken at the start of each poll.
    tls: Option<Arc<ibp_https::Current<rustls::ClientConfig>>>,
    slots: Arc<Semaphore>,
    /// Depots whose poll has not finished (not polled again until it has).
    in_flight: Arc<Mutex<HashSet<PollTarget>>>,
    /// Last logged availability, to log changes once.
    available: Arc<Mutex<HashMap<PollTarget, bool>>>,
    /// Wakes the poller early (a depot was registered or changed).
    wake: Arc<Notify>,
    tracker: TaskTracker,
    /// This instance's name in `poll_claims` (random, per process).
    instance: Arc<str>,
}

/// Removes a depot from the in-flight set when its poll task ends, however
/// it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<PollTarget>>>,
    addr: PollTarget,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.addr);
        }
    }
}

impl Poller {
    /// A poller recording into `store` (give it a pool of its own, so API
    /// clients cannot hold every database connection), reaching depots
    /// with a TLS port through `tls`.
    pub fn new(
        store: Store,
        liveness: Liveness,
        concurrency: usize,
        tls: Option<Arc<ibp_https::Current<rustls::ClientConfig>>>,
        instance: String,
    ) -> Poller {
        Poller {
            store,
            liveness,
            tls,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            in_flight: Arc::default(),
            available: Arc::default(),
            wake: Arc::new(Notify::new()),
            tracker: TaskTracker::new(),
            instance: instance.into(),
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
        // Let other instances take this one's depots over at once.
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.store.release_claims(&self.instance),
        )
        .await
        {
            Ok(Ok(n)) => tracing::debug!(n, "released the poll claims"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the poll claims"),
            Err(_) => tracing::warn!("releasing the poll claims timed out"),
        }
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
                    tracing::debug!(depot = %addr, "previous poll still running; skipped");
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
                tls: self.tls.as_ref().map(|t| t.get()),
                available: self.available.clone(),
                slots: self.slots.clone(),
                shutdown: shutdown.clone(),
                instance: self.instance.clone(),
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
    tls: Option<Arc<rustls::ClientConfig>>,
    available: Arc<Mutex<HashMap<PollTarget, bool>>>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    instance: Arc<str>,
}

impl PollTask {
    async fn run(self, addr: PollTarget) {
        // Instances sharing the database poll each depot once: another
        // instance's fresh claim means it polls this one.
        match self
            .store
            .claim_poll(
                &addr,
                &self.instance,
                now_ms(),
                self.liveness.claim_lease_ms(),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(depot = %addr, "polled by another L-Bone instance");
                return;
            }
            Err(e) => {
                tracing::error!(depot = %addr, error = %e, "cannot claim a poll");
                return;
            }
        }
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
            r = inquire(&addr, self.tls.as_ref(), self.liveness.poll_timeout) => r,
        };
        let now = now_ms();
        let before = self
            .available
            .lock()
            .ok()
            .and_then(|m| m.get(&addr).copied());
        let mut error = None;
        let available = match result {
            Ok(c) => {
                tracing::debug!(depot = %addr, hard_free = c.hard_free, soft_free = c.soft_free, "depot answered");
                if let Err(e) = self.store.record_success(&addr, now, &c).await {
                    tracing::error!(depot = %addr, error = %e, "cannot record a poll");
                    return;
                }
                true
            }
            Err(e) => {
                let misses = match self.store.record_failure(&addr, now, &e.to_string()).await {
                    Ok(m) => m,
                    Err(db) => {
                        tracing::error!(depot = %addr, error = %db, "cannot record a missed poll");
                        return;
                    }
                };
                tracing::debug!(depot = %addr, misses, error = %e, "depot missed a poll");
                error = Some(e);
                before == Some(true) && misses < self.liveness.missed_polls_down
            }
        };
        if let Ok(mut m) = self.available.lock() {
            m.insert(addr.clone(), available);
        }
        match (before, available) {
            (Some(false) | None, true) => tracing::info!(depot = %addr, "depot available"),
            (Some(true) | None, false) => {
                let error = error.map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(depot = %addr, %error, "depot unavailable")
            }
            _ => {}
        }
    }
}
