//! The depot: its resources, the host name written into capabilities, and
//! the shared settings every connection needs.

use crate::copy_sessions::CopySessions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ibp_proto::{CapKind, CapRef, Capability, Rid};

use crate::config::Config;
use crate::limits::Guards;
use crate::metrics::{Exposition, Metrics};
use crate::quota::{LegacyLimits, Quotas};
use crate::resource::Resource;
use crate::secure::SecurePort;
use crate::session::CryptoSession;

pub struct Depot {
    /// Host written into capabilities.
    pub hostname: String,
    /// Port written into capabilities (the bound legacy port).
    pub port: u16,
    /// Resources in configuration order; the first is the default.
    resources: Vec<Arc<Resource>>,
    pub status_password: Option<String>,
    pub idle_timeout: Duration,
    pub io_timeout: Duration,
    pub metrics: Metrics,
    /// The secure port's settings, when it is served.
    pub secure: Option<SecurePort>,
    /// Byte quotas of authenticated owners, shared by all resources.
    pub quotas: Arc<Quotas>,
    /// The crypto level's data port (`data_listen`, as bound), announced
    /// in the CRYPTO reply.
    pub data_port: Option<u16>,
    /// The VO group whose members may manage any allocation of their VO.
    pub admin_group: String,
    /// Open crypto-level sessions by id.
    pub crypto_sessions: std::sync::Mutex<std::collections::HashMap<[u8; 16], Arc<CryptoSession>>>,
    /// Per-client limits of every listener and what they count (`crate::limits`).
    pub guards: Guards,
    /// Sessions to other depots kept between secure COPYs
    /// (`crate::copy_sessions`).
    pub copy_sessions: CopySessions,
}

impl Depot {
    /// Ends crypto-level sessions (their TLS connection closed).
    pub fn end_crypto_sessions(&self, ids: &[[u8; 16]]) {
        let mut m = self
            .crypto_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(s) = m.remove(id) {
                s.ended.store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }
}

impl Exposition for Depot {
    fn exposition(&self) -> String {
        let crypto_sessions = self.crypto_sessions.lock().map_or(0, |m| m.len());
        self.metrics.render(&self.resources, crypto_sessions)
    }
}

impl Depot {
    /// Opens every resource (recovering their allocations).
    pub fn open(cfg: &Config, bound: SocketAddr) -> anyhow::Result<Depot> {
        let quotas = Arc::new(Quotas::from_config(cfg));
        let legacy = LegacyLimits::from_config(cfg);
        let resources = cfg
            .resources
            .iter()
            .map(|r| Resource::open(r, cfg.sync, quotas.clone(), legacy).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Depot {
            hostname: cfg.cap_hostname(bound),
            port: bound.port(),
            resources,
            status_password: cfg.status_password.clone(),
            idle_timeout: cfg.idle_timeout.as_duration(),
            io_timeout: cfg.io_timeout.as_duration(),
            metrics: Metrics::default(),
            secure: None,
            quotas,
            data_port: None,
            admin_group: cfg.admin_group.clone(),
            crypto_sessions: Default::default(),
            copy_sessions: CopySessions::default(),
            guards: Guards::from_config(cfg),
        })
    }

    pub fn resources(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    /// The resource with this RID, or the default one for `None`.
    pub fn resource(&self, rid: Option<Rid>) -> Option<&Arc<Resource>> {
        match rid {
            None => self.resources.first(),
            Some(rid) => self.resources.iter().find(|r| r.rid == rid),
        }
    }

    /// A capability URI for an allocation of this depot.
    pub fn capability(&self, rid: Rid, key: &str, typekey: u32, kind: CapKind) -> Capability {
        self.capability_on(self.port, rid, key, typekey, kind)
    }

    /// A capability URI naming `port` (the secure port for allocations made
    /// in authenticated sessions).
    pub fn capability_on(
        &self,
        port: u16,
        rid: Rid,
        key: &str,
        typekey: u32,
        kind: CapKind,
    ) -> Capability {
        Capability {
            host: self.hostname.clone(),
            port,
            cap: CapRef {
                rid,
                key: key.to_owned(),
                typekey,
            },
            kind,
        }
    }
}
