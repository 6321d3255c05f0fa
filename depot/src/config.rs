//! The depot's TOML configuration. Every field is documented here and in
//! `docs/depot.md` ("Configuration file"); unknown fields are rejected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::quota::ShareOfHard;
use crate::units::{ByteSize, Seconds};

/// When acknowledged state reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync data and metadata before every reply: survives power loss.
    Always,
    /// Write before the reply, fsync in groups in the background: survives a
    /// crash of the depot process.
    Batch,
}

/// The whole depot configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the legacy (plain TCP) IBP port. Default `0.0.0.0:6714`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Host name written into capabilities. Default: the listen address's IP,
    /// or `localhost` when listening on a wildcard address.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Password for STATUS CHANGE. Without one, STATUS CHANGE is always refused.
    #[serde(default)]
    pub status_password: Option<String>,
    /// `always` or `batch` (default).
    #[serde(default = "default_sync")]
    pub sync: SyncMode,
    /// In `batch` mode, how often the journal is fsynced. Default `1s`.
    #[serde(default = "default_batch_interval")]
    pub batch_interval_ms: u64,
    /// Most simultaneous client connections; more are closed at once. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection with no request for this long is closed. Default `5m`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Seconds,
    /// A request line or a data transfer that makes no progress for this long
    /// is abandoned. Default `60s`.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: Seconds,
    /// How often expired allocations are reaped. Default `10s`.
    #[serde(default = "default_reap_interval")]
    pub reap_interval: Seconds,
    /// How long expired data stays in the recycle area before it is purged. Default `1d`.
    #[serde(default = "default_recycle_grace")]
    pub recycle_grace: Seconds,
    /// How long SIGTERM waits for in-flight requests. Default `30s`.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Seconds,
    /// Optional address of the HTTP `/metrics` endpoint (Prometheus text format).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The resources (data areas). At least one.
    #[serde(default, rename = "resource")]
    pub resources: Vec<ResourceConfig>,
    /// Whether the plain legacy port is served at all. Default `true`.
    #[serde(default = "default_legacy")]
    pub legacy: bool,
    /// Address of the secure (TLS 1.3, IBP_auth) port, e.g. `0.0.0.0:6715`.
    /// Without it no secure port is served.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// Address of the crypto level's plain data port (needs `tls_listen`):
    /// data connections join a session opened on the secure port, request
    /// lines are sealed, bulk data travels in clear. Without it there is no
    /// crypto level.
    #[serde(default)]
    pub data_listen: Option<SocketAddr>,
    /// The depot's certificate chain (PEM), required with `tls_listen`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The depot's private key (PKCS#8 PEM), required with `tls_listen`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Trust directory (`ca/`, `vomsdir/<vo>/`, `lbone/*.pub`,
    /// `metadata/*.pub`), required with `tls_listen`.
    #[serde(default)]
    pub trust_dir: Option<PathBuf>,
    /// A grid host's vomsdir (`<vo>/<host>.lsc`, docs/identity.md "VOMS
    /// credentials"): proxies with standard VOMS attribute certificates
    /// from the servers it lists are accepted on the secure port. Default
    /// none: refused.
    #[serde(default)]
    pub vomsdir: Option<PathBuf>,
    /// The name depot grants must carry. Default `<hostname>:<tls port>`.
    #[serde(default)]
    pub grant_name: Option<String>,
    /// The VOs served on the secure port and their limits; a VO not listed
    /// is refused at AUTH.
    #[serde(default, rename = "vo")]
    pub vos: Vec<VoPolicy>,
    /// Per-user quota overrides (`[[user]] vo = .., vo_id = .., quota = ..`).
    #[serde(default, rename = "user")]
    pub users: Vec<UserPolicy>,

    // ---- MANAGE authorization and the legacy port's budget (issue 14:
    // ---- a reader cannot destroy data, no anonymous client drains a depot)
    /// The VO group (its *name* in the verified VO attributes) whose members
    /// may INCR/DECR/CHNG any allocation of their own VO on the secure port,
    /// as the L-Bone and the metadata manager decide a VO admin. Default
    /// `admins`.
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
    /// Bytes that allocations made on the legacy port (no session) may
    /// reserve together, per resource: a size (`200GiB`) or a share of the
    /// resource's `hard_size` (`10%`, the default). Secure-port capacity is
    /// never consumed from the legacy port.
    #[serde(default = "default_legacy_max_size")]
    pub legacy_max_size: ShareOfHard,
    /// Bytes the live legacy allocations of one client address (an IPv6
    /// /64) may reserve together, per resource: a size or a share of
    /// `hard_size`. Default `2%`.
    #[serde(default = "default_legacy_per_address_bytes")]
    pub legacy_per_address_bytes: ShareOfHard,
    /// Live legacy allocations one client address (an IPv6 /64) may hold,
    /// per resource. Default 1000.
    #[serde(default = "default_legacy_per_address_allocations")]
    pub legacy_per_address_allocations: u64,

    // --- Slow and greedy clients: limits every listener (legacy, TLS,
    // --- data) applies to each client (docs/depot.md).
    /// Most simultaneous connections from one address (IPv6: one /64) on
    /// each listener; more are closed at once. Default 64.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// A new connection's first complete request line must arrive within
    /// this (on the TLS port, after the handshake). Default `10s`.
    #[serde(default = "default_first_request_timeout")]
    pub first_request_timeout: Seconds,
    /// The TLS handshake must be complete within this. Default `10s`.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Seconds,
    /// Once a request line's first byte arrived, the rest of the line must
    /// arrive within this. Default `10s`.
    #[serde(default = "default_request_line_timeout")]
    pub request_line_timeout: Seconds,
    /// Crypto-level sessions (CRYPTO, `2 21`) one TLS connection may hold.
    /// Default 16.
    #[serde(default = "default_max_crypto_sessions_per_connection")]
    pub max_crypto_sessions_per_connection: usize,
    /// Crypto-level sessions one client key may hold over all its TLS
    /// connections. Default 64.
    #[serde(default = "default_max_crypto_sessions_per_peer")]
    pub max_crypto_sessions_per_peer: usize,
    /// The slowest average rate a STORE/WRITE body or a LOAD payload may
    /// move at, in bytes per second: a transfer may take `io_timeout` plus
    /// one second per `min_transfer_rate` bytes moved so far, so a client
    /// that trickles a byte now and then is cut off. Default `32KiB`.
    #[serde(default = "default_min_transfer_rate")]
    pub min_transfer_rate: ByteSize,
}

fn default_max_connections_per_address() -> usize {
    64
}
fn default_first_request_timeout() -> Seconds {
    Seconds(10)
}
fn default_handshake_timeout() -> Seconds {
    Seconds(10)
}
fn default_request_line_timeout() -> Seconds {
    Seconds(10)
}
fn default_max_crypto_sessions_per_connection() -> usize {
    16
}
fn default_max_crypto_sessions_per_peer() -> usize {
    64
}
fn default_min_transfer_rate() -> ByteSize {
    ByteSize(32 << 10)
}

/// A quota for one user (VO ID) of a VO, overriding the VO's `user_quota`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPolicy {
    /// The VO name.
    pub vo: String,
    /// The VO ID (the user's identifier within the VO).
    pub vo_id: String,
    /// Bytes this user's live allocations may reserve together.
    pub quota: ByteSize,
}

/// What the depot grants one VO on the secure port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoPolicy {
    /// The VO name, as in the VO attributes.
    pub name: String,
    /// Largest single allocation.
    pub max_size: ByteSize,
    /// Longest allocation duration.
    pub max_duration: Seconds,
    /// Bytes all live allocations of the VO may reserve together. Default: no limit.
    #[serde(default)]
    pub quota: Option<ByteSize>,
    /// Default quota of each VO ID (user) of the VO. Default: no limit.
    #[serde(default)]
    pub user_quota: Option<ByteSize>,
    /// `false` retires the VO gently: no new allocation (nor a CHNG that
    /// grows or extends one), while its sessions, file-ticket reads and
    /// releases go on. Removing the `[[vo]]` table instead refuses its
    /// sessions and its ticketed reads at once. Default `true`.
    #[serde(default = "default_allocate")]
    pub allocate: bool,
}

// ---- Defaults of the MANAGE-authorization and legacy-budget settings.
fn default_allocate() -> bool {
    true
}
fn default_admin_group() -> String {
    "admins".to_owned()
}
fn default_legacy_max_size() -> ShareOfHard {
    ShareOfHard::Percent(10)
}
fn default_legacy_per_address_bytes() -> ShareOfHard {
    ShareOfHard::Percent(2)
}
fn default_legacy_per_address_allocations() -> u64 {
    1000
}

/// One resource: a data directory with its own capacities and maximum duration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Resource identifier written into capabilities. Unique per depot.
    pub rid: u32,
    /// Directory for allocation files, the journal and the recycle area.
    pub data: PathBuf,
    /// Bytes that HARD allocations may reserve in total.
    pub hard_size: ByteSize,
    /// Bytes that all allocations (HARD and SOFT) may reserve together; at
    /// least `hard_size`. SOFT allocations are reclaimed, soonest-expiring
    /// first, when a HARD allocation needs their space. Default: `hard_size`.
    #[serde(default)]
    pub soft_size: Option<ByteSize>,
    /// Longest duration an allocation may ask for. Default `1d`.
    #[serde(default = "default_max_duration")]
    pub max_duration: Seconds,
    /// Bytes the spare files of freed allocations may keep together (a
    /// size or a share of `hard_size`); `0` keeps no spare file. Default:
    /// 1 GiB, at most a quarter of the larger of `hard_size` and
    /// `soft_size` (docs/depot.md, "Storage layout").
    #[serde(default)]
    pub spare_bytes: Option<ShareOfHard>,
}

fn default_legacy() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6714))
}
fn default_sync() -> SyncMode {
    SyncMode::Batch
}
fn default_batch_interval() -> u64 {
    1000
}
fn default_max_connections() -> usize {
    1024
}
fn default_idle_timeout() -> Seconds {
    Seconds(300)
}
fn default_io_timeout() -> Seconds {
    Seconds(60)
}
fn default_reap_interval() -> Seconds {
    Seconds(10)
}
fn default_recycle_grace() -> Seconds {
    Seconds(86_400)
}
fn default_shutdown_grace() -> Seconds {
    Seconds(30)
}
fn default_max_duration() -> Seconds {
    Seconds(86_400)
}

impl Default for Config {
    fn default() -> Config {
        // An empty document yields every default.
        toml::from_str("").unwrap_or_else(|_| unreachable!("defaults parse"))
    }
}

/// Command-line overrides of the configuration file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Listen address of the legacy port (port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory of the first resource (creates resource 0 if none is configured).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Hard capacity of the first resource, e.g. `4GiB`.
    #[arg(long)]
    pub hard_size: Option<ByteSize>,
    /// Soft (total) capacity of the first resource, e.g. `8GiB`.
    #[arg(long)]
    pub soft_size: Option<ByteSize>,
    /// Maximum duration of the first resource, e.g. `1d`.
    #[arg(long)]
    pub max_duration: Option<Seconds>,
    /// Bytes the spare files of the first resource may keep (`0`: none), e.g. `256MiB` or `5%`.
    #[arg(long)]
    pub spare_bytes: Option<ShareOfHard>,
    /// Host name written into capabilities.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Password for STATUS CHANGE.
    #[arg(long)]
    pub status_password: Option<String>,
    /// `always` or `batch`.
    #[arg(long, value_enum)]
    pub sync: Option<SyncMode>,
    /// Address of the HTTP /metrics endpoint.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often expired allocations are reaped, e.g. `1s`.
    #[arg(long)]
    pub reap_interval: Option<Seconds>,
    /// Idle connection timeout, e.g. `5m`.
    #[arg(long)]
    pub idle_timeout: Option<Seconds>,
    /// Maximum simultaneous connections.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Listen address of the secure (TLS) port (port 0 picks a free one).
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// Listen address of the crypto level's data port (port 0 picks a free one).
    #[arg(long)]
    pub data_listen: Option<SocketAddr>,

    // ---- The legacy port's budget (issue 14).
    /// Bytes legacy-port allocations may reserve per resource: a size or a share of hard_size (`10%`).
    #[arg(long)]
    pub legacy_max_size: Option<ShareOfHard>,
    /// Bytes the legacy allocations of one address may reserve per resource (`2%`, `64MiB`).
    #[arg(long)]
    pub legacy_per_address_bytes: Option<ShareOfHard>,
    /// Live legacy allocations of one address per resource.
    #[arg(long)]
    pub legacy_per_address_allocations: Option<u64>,
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }

    /// Applies command-line overrides, then checks the result.
    pub fn apply(mut self, o: &Overrides) -> anyhow::Result<Config> {
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = &o.hostname {
            self.hostname = Some(v.clone());
        }
        if let Some(v) = &o.status_password {
            self.status_password = Some(v.clone());
        }
        if let Some(v) = o.sync {
            self.sync = v;
        }
        if let Some(v) = o.metrics_listen {
            self.metrics_listen = Some(v);
        }
        if let Some(v) = o.reap_interval {
            self.reap_interval = v;
        }
        if let Some(v) = o.idle_timeout {
            self.idle_timeout = v;
        }
        if let Some(v) = o.max_connections {
            self.max_connections = v;
        }
        if let Some(v) = o.tls_listen {
            self.tls_listen = Some(v);
        }
        if let Some(v) = o.data_listen {
            self.data_listen = Some(v);
        }
        // ---- The legacy port's budget (issue 14).
        if let Some(v) = o.legacy_max_size {
            self.legacy_max_size = v;
        }
        if let Some(v) = o.legacy_per_address_bytes {
            self.legacy_per_address_bytes = v;
        }
        if let Some(v) = o.legacy_per_address_allocations {
            self.legacy_per_address_allocations = v;
        }
        let touches_resource = o.data.is_some()
            || o.hard_size.is_some()
            || o.soft_size.is_some()
            || o.max_duration.is_some()
            || o.spare_bytes.is_some();
        if self.resources.is_empty() && touches_resource {
            let data = o
                .data
                .clone()
                .context("--data is required when the config defines no resource")?;
            self.resources.push(ResourceConfig {
                rid: 0,
                data,
                hard_size: ByteSize(1 << 30),
                soft_size: None,
                max_duration: default_max_duration(),
                spare_bytes: None,
            });
        }
        if let Some(first) = self.resources.first_mut() {
            if let Some(v) = &o.data {
                first.data = v.clone();
            }
            if let Some(v) = o.hard_size {
                first.hard_size = v;
            }
            if let Some(v) = o.soft_size {
                first.soft_size = Some(v);
            }
            if let Some(v) = o.max_duration {
                first.max_duration = v;
            }
            if let Some(v) = o.spare_bytes {
                first.spare_bytes = Some(v);
            }
        }
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.resources.is_empty() {
            bail!("no resource configured: give --data DIR or a [[resource]] table");
        }
        let mut rids = std::collections::HashSet::new();
        for r in &self.resources {
            if !rids.insert(r.rid) {
                bail!("resource {} is configured twice", r.rid);
            }
            if let Some(soft) = r.soft_size {
                if soft < r.hard_size {
                    bail!(
                        "resource {}: soft_size ({}) is smaller than hard_size ({})",
                        r.rid,
                        soft,
                        r.hard_size
                    );
                }
            }
            if r.max_duration.0 == 0 {
                bail!("resource {}: max_duration must be positive", r.rid);
            }
        }
        if self.tls_listen.is_some() {
            for (name, v) in [
                ("tls_cert", &self.tls_cert),
                ("tls_key", &self.tls_key),
                ("trust_dir", &self.trust_dir),
            ] {
                if v.is_none() {
                    bail!("tls_listen needs {name}");
                }
            }
        } else if self.data_listen.is_some() {
            bail!("data_listen needs tls_listen: data connections join TLS sessions");
        } else if !self.legacy {
            bail!("legacy = false needs tls_listen: the depot would serve nothing");
        }
        let mut vos = std::collections::HashSet::new();
        for v in &self.vos {
            if !vos.insert(v.name.as_str()) {
                bail!("VO {} is configured twice", v.name);
            }
            if v.max_duration.0 == 0 {
                bail!("VO {}: max_duration must be positive", v.name);
            }
        }
        let mut users = std::collections::HashSet::new();
        for u in &self.users {
            if !vos.contains(u.vo.as_str()) {
                bail!(
                    "[[user]] {}/{}: VO {} is not configured",
                    u.vo,
                    u.vo_id,
                    u.vo
                );
            }
            if !users.insert((u.vo.as_str(), u.vo_id.as_str())) {
                bail!("[[user]] {}/{} is configured twice", u.vo, u.vo_id);
            }
        }
        // ---- MANAGE authorization and the legacy budget (issue 14).
        if self.admin_group.is_empty() {
            bail!("admin_group must not be empty");
        }
        if self.legacy_per_address_allocations == 0 {
            bail!("legacy_per_address_allocations must be positive (to refuse all legacy allocations, set legacy_max_size = 0)");
        }
        if self.max_connections == 0 {
            bail!("max_connections must be positive");
        }
        self.check_client_limits()?;
        if let Some(pw) = &self.status_password {
            if pw.is_empty()
                || pw.len() > ibp_proto::MAX_PASSWORD_LEN
                || !pw.bytes().all(|b| b.is_ascii_graphic())
            {
                bail!("status_password must be 1 to 64 printable characters without spaces");
            }
        }
        Ok(())
    }

    /// The slow-and-greedy-client limits: all positive.
    fn check_client_limits(&self) -> anyhow::Result<()> {
        for (name, v) in [
            (
                "max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("first_request_timeout", self.first_request_timeout.0),
            ("handshake_timeout", self.handshake_timeout.0),
            ("request_line_timeout", self.request_line_timeout.0),
            (
                "max_crypto_sessions_per_connection",
                self.max_crypto_sessions_per_connection as u64,
            ),
            (
                "max_crypto_sessions_per_peer",
                self.max_crypto_sessions_per_peer as u64,
            ),
            ("min_transfer_rate", self.min_transfer_rate.0),
        ] {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        Ok(())
    }

    /// The host written into capabilities.
    pub fn cap_hostname(&self, bound: SocketAddr) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None if bound.ip().is_unspecified() => "localhost".to_owned(),
            None => bound.ip().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Config>("listne = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<Config>(
            "[[resource]]\nrid = 0\ndata = \"/x\"\nhard_size = \"1GiB\"\nsoft = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let cfg: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:6714"
            hostname = "depot1.example.org"
            status_password = "s3cret"
            sync = "always"
            max_connections = 10
            idle_timeout = "2m"
            metrics_listen = "127.0.0.1:9714"
            [[resource]]
            rid = 0
            data = "/srv/ibp/0"
            hard_size = "4GiB"
            soft_size = "8GiB"
            max_duration = "1d"
            spare_bytes = "5%"
            [[resource]]
            rid = 7
            data = "/srv/ibp/7"
            hard_size = 1048576
            spare_bytes = 0
            "#,
        )
        .unwrap();
        let cfg = cfg.apply(&Overrides::default()).unwrap();
        assert!(cfg.legacy);
        assert!(cfg.tls_listen.is_none());
        assert_eq!(cfg.sync, SyncMode::Always);
        assert_eq!(cfg.idle_timeout, Seconds(120));
        assert_eq!(cfg.resources[0].soft_size, Some(ByteSize(8 << 30)));
        assert_eq!(cfg.resources[1].hard_size, ByteSize(1 << 20));
        assert_eq!(cfg.resources[1].max_duration, Seconds(86_400));
        assert_eq!(cfg.resources[0].spare_bytes, Some(ShareOfHard::Percent(5)));
        assert_eq!(cfg.resources[1].spare_bytes, Some(ShareOfHard::Bytes(0)));
    }

    #[test]
    fn secure_port_settings() {
        let cfg: Config = toml::from_str(
            r#"
            legacy = false
            tls_listen = "127.0.0.1:6715"
            tls_cert = "/etc/ibp/depot.pem"
            tls_key = "/etc/ibp/depot.key"
            trust_dir = "/etc/ibp/trust"
            grant_name = "depot1.example.org:6715"
            [[resource]]
            rid = 0
            data = "/srv/ibp/0"
            hard_size = "4GiB"
            [[vo]]
            name = "vo1"
            max_size = "10GiB"
            max_duration = "7d"
            quota = "100GiB"
            user_quota = "10GiB"
            [[user]]
            vo = "vo1"
            vo_id = "alice"
            quota = "20GiB"
            "#,
        )
        .unwrap();
        let cfg = cfg.apply(&Overrides::default()).unwrap();
        assert!(!cfg.legacy);
        assert_eq!(cfg.vos[0].max_size, ByteSize(10 << 30));
        assert_eq!(cfg.vos[0].max_duration, Seconds(7 * 86_400));
        assert_eq!(cfg.vos[0].quota, Some(ByteSize(100 << 30)));
        assert_eq!(cfg.vos[0].user_quota, Some(ByteSize(10 << 30)));
        assert_eq!(cfg.users[0].quota, ByteSize(20 << 30));
        let err = toml::from_str::<Config>(
            "legacy = false\n[[resource]]\nrid = 0\ndata = \"/x\"\nhard_size = 1\n",
        )
        .unwrap()
        .apply(&Overrides::default())
        .unwrap_err();
        assert!(err.to_string().contains("tls_listen"), "{err}");
        let err = toml::from_str::<Config>(
            "tls_listen = \"127.0.0.1:1\"\n[[resource]]\nrid = 0\ndata = \"/x\"\nhard_size = 1\n",
        )
        .unwrap()
        .apply(&Overrides::default())
        .unwrap_err();
        assert!(err.to_string().contains("tls_cert"), "{err}");
        let err = toml::from_str::<Config>(
            "data_listen = \"127.0.0.1:1\"\n[[resource]]\nrid = 0\ndata = \"/x\"\nhard_size = 1\n",
        )
        .unwrap()
        .apply(&Overrides::default())
        .unwrap_err();
        assert!(
            err.to_string().contains("data_listen needs tls_listen"),
            "{err}"
        );
        let err = toml::from_str::<Config>(
            "[[resource]]\nrid = 0\ndata = \"/x\"\nhard_size = 1\n[[vo]]\nname = \"vo1\"\nmax_size = 1\nmax_duration = 1\n[[user]]\nvo = \"vo2\"\nvo_id = \"a\"\nquota = 1\n",
        )
        .unwrap()
        .apply(&Overrides::default())
        .unwrap_err();
        assert!(
            err.to_string().contains("VO vo2 is not configured"),
            "{err}"
        );
    }

    #[test]
    fn client_limits_default_and_parse() {
        let cfg = Config::default();
        assert_eq!(cfg.max_connections_per_address, 64);
        assert!(cfg.max_connections_per_address < cfg.max_connections);
        assert_eq!(cfg.first_request_timeout, Seconds(10));
        assert_eq!(cfg.handshake_timeout, Seconds(10));
        assert_eq!(cfg.request_line_timeout, Seconds(10));
        assert_eq!(cfg.max_crypto_sessions_per_connection, 16);
        assert_eq!(cfg.max_crypto_sessions_per_peer, 64);
        let cfg: Config = toml::from_str(
            "max_connections_per_address = 8\nfirst_request_timeout = \"2s\"\nhandshake_timeout = \"3s\"\nrequest_line_timeout = \"4s\"\nmax_crypto_sessions_per_connection = 2\nmax_crypto_sessions_per_peer = 5\n",
        )
        .unwrap();
        assert_eq!(cfg.max_connections_per_address, 8);
        assert_eq!(cfg.first_request_timeout, Seconds(2));
        assert_eq!(cfg.handshake_timeout, Seconds(3));
        assert_eq!(cfg.request_line_timeout, Seconds(4));
        assert_eq!(cfg.max_crypto_sessions_per_connection, 2);
        assert_eq!(cfg.max_crypto_sessions_per_peer, 5);
        for zero in [
            "max_connections_per_address = 0",
            "first_request_timeout = 0",
            "handshake_timeout = 0",
            "request_line_timeout = 0",
            "max_crypto_sessions_per_connection = 0",
            "max_crypto_sessions_per_peer = 0",
        ] {
            let text = format!("{zero}\n[[resource]]\nrid = 0\ndata = \"/x\"\nhard_size = 1\n");
            let err = toml::from_str::<Config>(&text)
                .unwrap()
                .apply(&Overrides::default())
                .unwrap_err();
            assert!(
                err.to_string().contains("must be positive"),
                "{zero}: {err}"
            );
        }
    }

    #[test]
    fn overrides_and_checks() {
        let o = Overrides {
            data: Some("/tmp/x".into()),
            hard_size: Some(ByteSize(10)),
            soft_size: Some(ByteSize(5)),
            ..Overrides::default()
        };
        let err = Config::default().apply(&o).unwrap_err();
        assert!(err.to_string().contains("smaller than hard_size"), "{err}");
        let err = Config::default().apply(&Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("no resource"), "{err}");
    }
}
