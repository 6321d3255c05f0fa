//! Releasing deleted files' allocations on their depots (`lors rm`):
//! `MANAGE ... DECR` of the read reference count with each MANAGE
//! capability; the depot removes the allocation when the count reaches 0.
//! A `PROBE` with the same capability then confirms it: an allocation
//! counts as *freed* only when the depot says the capability no longer
//! exists. One that is still there after the DECR (another reference, an
//! INCR, pins it), a refusal, or a depot that does not answer is reported
//! as not freed, with the reason.
//!
//! A depot serves an allocation on the port it was made on: allocations
//! made in an `IBP_auth` session (the secure port, what uploads of this
//! stack use) are managed only on the secure port, after `AUTH` with a
//! depot grant; the others on the legacy port. With [`SecureAccess`] (grants
//! from the L-Bone) a capability naming a depot's secure address is
//! released there; every other one on the legacy port it names.
//!
//! Best effort: every capability gets an outcome; a depot that is down or
//! refuses does not stop the others. An allocation not freed expires on
//! its own at the end of its duration.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ibp_auth::{ProxyCredential, TrustStore};
use ibp_depot_client::{host_of, ClientError, Connection, Freed, IbpClient, Level, SecureClient};
use ibp_proto::{CapKind, Capability};
use serde::{Deserialize, Serialize};

use crate::credentials::Error;
use crate::depots::Offer;
use crate::metadata::{Deleted, MetadataClient};
use crate::transfer::pool::DEPOT_TIMEOUT;

/// Connections opened at once to one depot.
const CONNECTIONS_PER_DEPOT: usize = 4;

/// How a capability was (or would have been) released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// Plain IBP on the address the capability names.
    Legacy,
    /// TLS 1.3 and `AUTH` with the L-Bone's grant for that address.
    Secure,
}

/// The outcome for one capability. The capability itself (a bearer
/// secret) is not repeated: `allocation` is `host:port/RID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub allocation: String,
    /// `host:port` contacted (empty if the capability does not parse).
    pub depot: String,
    pub port: Port,
    /// The depot confirmed the allocation is gone (a DECR then a PROBE that
    /// finds no such capability, or it had expired already).
    #[serde(alias = "released")]
    pub freed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the secure ports need: the grant per depot address, and the TLS
/// configuration presenting the user's proxy.
#[derive(Clone)]
pub struct SecureAccess {
    grants: HashMap<String, String>,
    tls: Arc<rustls::ClientConfig>,
}

impl SecureAccess {
    /// The grants of an L-Bone answer (depots with a secure port), for
    /// connections checked against `trust` presenting `credential`.
    pub fn from_offer(
        offer: &Offer,
        trust: &TrustStore,
        credential: &ProxyCredential,
    ) -> Result<SecureAccess, Error> {
        let tls = SecureClient::config(trust, credential)
            .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
        let grants = offer
            .depots
            .iter()
            .filter(|d| d.tls_port.is_some())
            .map(|d| (d.address.clone(), d.grant.clone()))
            .collect();
        Ok(SecureAccess { grants, tls })
    }

    /// How many depots have a grant.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// What [`delete_and_release`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The metadata manager's answer (with the MANAGE capabilities).
    pub deleted: Deleted,
    /// One outcome per capability released or tried.
    pub releases: Vec<Release>,
}

impl Removal {
    /// Whether every allocation that should go was freed.
    pub fn all_freed(&self) -> bool {
        self.releases.iter().all(|r| r.freed)
            && self.deleted.released.iter().all(|r| r.error.is_none())
    }
}

/// Deletes `path` (or one non-current `version` of it) in the metadata
/// manager, then releases the allocations on the depots. `secure` (a
/// future, so lazy: it usually queries the L-Bone) is awaited only when
/// there is something to release; `None` from it releases on the legacy
/// ports only.
///
/// The manager lists each capability once and leaves out those a remaining
/// version still uses, so everything it returns is released.
pub async fn delete_and_release(
    mdm: &MetadataClient,
    path: &str,
    version: Option<u64>,
    secure: impl std::future::Future<Output = Option<SecureAccess>>,
) -> Result<Removal, Error> {
    let deleted = mdm.delete(path, version).await?;
    let caps = deleted.manage_capabilities();
    let releases = if caps.is_empty() {
        Vec::new()
    } else {
        let access = secure.await;
        release_all(&caps, access.as_ref()).await
    };
    Ok(Removal { deleted, releases })
}

/// `ibp://host:port/RID#key/...` without the key: what may be shown.
pub fn redact(cap: &str) -> String {
    let shown = cap.split_once('#').map_or(cap, |(a, _)| a);
    shown.strip_prefix("ibp://").unwrap_or(shown).to_owned()
}

/// Releases every capability (each should be given once), depots in
/// parallel; one outcome per capability, in the order given.
pub async fn release_all(caps: &[&str], secure: Option<&SecureAccess>) -> Vec<Release> {
    let mut out: Vec<Option<Release>> = vec![None; caps.len()];
    let mut by_depot: BTreeMap<(String, Port), Vec<(usize, Capability)>> = BTreeMap::new();
    for (i, raw) in caps.iter().enumerate() {
        match raw.parse::<Capability>() {
            Ok(c) if c.kind == CapKind::Manage => {
                let addr = c.address();
                let port = match secure {
                    Some(s) if s.grants.contains_key(&addr) => Port::Secure,
                    _ => Port::Legacy,
                };
                by_depot.entry((addr, port)).or_default().push((i, c));
            }
            Ok(_) => {
                out[i] = Some(failed(raw, "", Port::Legacy, "not a MANAGE capability"));
            }
            Err(e) => out[i] = Some(failed(raw, "", Port::Legacy, &e.to_string())),
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for ((addr, port), list) in by_depot {
        // A confirmed release ends in an error reply (no such capability),
        // after which the depot closes the connection: a few connections
        // per depot share the reconnections.
        let per = list.len().div_ceil(CONNECTIONS_PER_DEPOT).max(1);
        let mut list = list.into_iter().peekable();
        while list.peek().is_some() {
            let chunk: Vec<_> = list.by_ref().take(per).collect();
            let (addr, access) = (addr.clone(), secure.cloned());
            tasks.spawn(async move { release_on(&addr, port, chunk, access.as_ref()).await });
        }
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(results) => {
                for (i, r) in results {
                    out[i] = Some(r);
                }
            }
            Err(e) => tracing::error!(error = %e, "release task failed"),
        }
    }
    out.into_iter()
        .zip(caps)
        .map(|(r, raw)| r.unwrap_or_else(|| failed(raw, "", Port::Legacy, "release task failed")))
        .collect()
}

fn failed(cap: &str, depot: &str, port: Port, why: &str) -> Release {
    Release {
        allocation: redact(cap),
        depot: depot.to_owned(),
        port,
        freed: false,
        error: Some(why.to_owned()),
    }
}

/// A connection to one depot, made when first needed (and again after an
/// error reply, which closes the depot's side): legacy or secure (`Full`).
async fn open(addr: &str, port: Port, access: Option<&SecureAccess>) -> Result<Connection, String> {
    let timed = |what| {
        format!(
            "{what} {addr} timed out after {} s",
            DEPOT_TIMEOUT.as_secs()
        )
    };
    match (port, access) {
        (Port::Secure, Some(a)) => {
            let grant = a
                .grants
                .get(addr)
                .ok_or_else(|| format!("no grant for {addr}"))?;
            let mut c = tokio::time::timeout(
                DEPOT_TIMEOUT,
                SecureClient::connect_with(addr, host_of(addr), &a.tls),
            )
            .await
            .map_err(|_| timed("connecting to"))?
            .map_err(|e| e.to_string())?;
            c.set_timeout(DEPOT_TIMEOUT);
            c.auth(grant)
                .await
                .map_err(|e| format!("AUTH refused: {e}"))?;
            Ok(Connection::from(c))
        }
        _ => {
            let mut c = tokio::time::timeout(DEPOT_TIMEOUT, IbpClient::connect(addr))
                .await
                .map_err(|_| timed("connecting to"))?
                .map_err(|e| e.to_string())?;
            c.set_timeout(DEPOT_TIMEOUT);
            Ok(Connection::from(c))
        }
    }
}

/// `Ok` when a release ([`Connection::free`]: DECR of the read reference
/// count, then PROBE) found the allocation gone, freed now or expired and
/// reaped already; otherwise why it was not freed. `describe` words a
/// client error (the caller decides whether it names the depot). The one
/// wording of "not freed" for `lors rm`, a failed upload's clean-up and
/// maintenance.
pub(crate) fn freed_or_why(
    freed: Freed,
    describe: impl FnOnce(ClientError) -> String,
) -> Result<(), String> {
    match freed {
        Freed::Gone => Ok(()),
        Freed::Pinned { read_refs } => Err(still_allocated(read_refs)),
        Freed::DecrFailed(e) => Err(describe(e)),
        Freed::Unknown(e) => Err(format!(
            "DECR accepted, but whether the allocation is gone is unknown: {}",
            describe(e)
        )),
    }
}

/// Why an allocation that survived its DECR was not freed.
pub fn still_allocated(read_refs: u32) -> String {
    format!(
        "still allocated after DECR: {read_refs} read reference(s) left (another reference pins it)"
    )
}

async fn release_on(
    addr: &str,
    port: Port,
    caps: Vec<(usize, Capability)>,
    access: Option<&SecureAccess>,
) -> Vec<(usize, Release)> {
    let mut conn: Option<Connection> = None;
    // Once the depot cannot be reached, the rest of its capabilities fail
    // with the same error (no connection attempt each).
    let mut unreachable: Option<String> = None;
    let mut out = Vec::with_capacity(caps.len());
    for (i, cap) in caps {
        let text = cap.to_string();
        if let Some(why) = &unreachable {
            out.push((i, failed(&text, addr, port, why)));
            continue;
        }
        if conn.is_none() {
            match open(addr, port, access).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    out.push((i, failed(&text, addr, port, &e)));
                    unreachable = Some(e);
                    continue;
                }
            }
        }
        let freed = match conn.as_mut() {
            Some(c) => c.free(&cap).await,
            None => continue,
        };
        // The depot closes the connection after an error reply; a secure
        // session needs a new AUTH (the legacy client reconnects by itself).
        if !freed.connection_open() && conn.as_ref().is_some_and(|c| c.level() != Level::Legacy) {
            conn = None;
        }
        let result = freed_or_why(freed, |e| e.to_string());
        let release = match result {
            Ok(()) => Release {
                allocation: redact(&text),
                depot: addr.to_owned(),
                port,
                freed: true,
                error: None,
            },
            Err(why) => failed(&text, addr, port, &why),
        };
        out.push((i, release));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_redacted() {
        assert_eq!(
            redact("ibp://d1.example.org:6714/0#abcdef/123/MANAGE"),
            "d1.example.org:6714/0"
        );
        assert_eq!(redact("garbage"), "garbage");
    }

    #[tokio::test]
    async fn bad_capabilities_and_dead_depots_are_reported() {
        // A port nothing listens on: bind one, then free it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dead = format!(
            "ibp://127.0.0.1:{}/0#{}/1/MANAGE",
            addr.port(),
            "k".repeat(32)
        );
        let read = format!(
            "ibp://127.0.0.1:{}/0#{}/1/READ",
            addr.port(),
            "k".repeat(32)
        );
        let out = release_all(&["not a cap", &read, &dead], None).await;
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|r| !r.freed && r.error.is_some()));
        assert_eq!(out[1].error.as_deref(), Some("not a MANAGE capability"));
        assert_eq!(out[2].depot, addr.to_string());
        assert!(!out[2].allocation.contains('k'), "{:?}", out[2]);
    }
}
