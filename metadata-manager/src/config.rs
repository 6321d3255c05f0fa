//! `metadata-manager serve` configuration (TOML). Unknown fields are
//! refused, so a typo cannot silently fall back to a default. Relative paths
//! are relative to the directory that holds the configuration file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use ibp_service::units::{deserialize_duration, deserialize_limit, deserialize_size};

fn default_ticket_lifetime() -> Duration {
    Duration::from_secs(600)
}
/// 8 MiB: about 6,000 mappings of the form `lors upload` writes (1,400
/// bytes each); the derivation is in docs/metadata-manager.md.
fn default_max_exnode() -> u64 {
    8 << 20
}
fn default_max_buffered_bodies() -> u64 {
    32 << 20
}
fn default_buffered_body_wait() -> Duration {
    Duration::from_secs(10)
}
fn default_user_entries() -> Option<u64> {
    Some(100_000)
}
fn default_user_exnode_bytes() -> Option<u64> {
    Some(1 << 30)
}
fn default_vo_entries() -> Option<u64> {
    Some(1_000_000)
}
fn default_vo_exnode_bytes() -> Option<u64> {
    Some(16 << 30)
}
fn default_admin_group() -> String {
    "admins".into()
}
fn default_max_connections() -> usize {
    256
}
fn default_db_connections() -> u32 {
    8
}

/// `metadata-manager serve --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS address, `host:port`; port 0 picks a free port. The bound
    /// address is the first stdout line (`listening on ADDR:PORT`).
    pub listen: String,
    /// PEM file with the server's certificate chain.
    pub server_cert: PathBuf,
    /// PEM file with its PKCS#8 private key.
    pub server_key: PathBuf,
    /// Trust directory (docs/identity.md): `ca/*.pem` for users'
    /// certificates, `vomsdir/<vo>/*.pem` pinning each VO's attribute
    /// authority. Only VOs with a pinned attribute authority are served.
    pub trust_dir: PathBuf,
    /// A grid host's vomsdir (`<vo>/<host>.lsc`, docs/identity.md "VOMS
    /// credentials"): proxies with standard VOMS attribute certificates
    /// from the servers it lists are accepted. Default none: refused.
    #[serde(default)]
    pub vomsdir: Option<PathBuf>,
    /// sqlx URL: `sqlite://FILE` (default `sqlite://<dir>/metadata.db`) or
    /// `postgres://user@host:port/db` (several replicas may share it).
    #[serde(default)]
    pub database: Option<String>,
    /// Ed25519 key (PKCS#8 PEM, mode 0600) that signs file tickets; made by
    /// `metadata-manager init`. Its public half goes into the `metadata/`
    /// folder of every depot's trust directory.
    pub signing_key: PathBuf,
    /// Lifetime of a file ticket (never beyond the caller's credential).
    /// Revocation takes effect when tickets are next requested.
    #[serde(
        default = "default_ticket_lifetime",
        deserialize_with = "deserialize_duration"
    )]
    pub ticket_lifetime: Duration,
    /// Largest exNode document accepted in a put (bytes or `8MiB`).
    #[serde(default = "default_max_exnode", deserialize_with = "deserialize_size")]
    pub max_exnode: u64,
    /// Most bytes of large request bodies (over 64 KiB each: puts) read
    /// and processed at once; a request that would go beyond waits up to
    /// `buffered_body_wait`, then gets 503. A user who holds half of it
    /// already gets 503 at once.
    #[serde(
        default = "default_max_buffered_bodies",
        deserialize_with = "deserialize_size"
    )]
    pub max_buffered_bodies: u64,
    /// How long a large request waits for room under `max_buffered_bodies`.
    #[serde(
        default = "default_buffered_body_wait",
        deserialize_with = "deserialize_duration"
    )]
    pub buffered_body_wait: Duration,
    /// Most entries (files and directories) one owner may have in a VO's
    /// tree; `"unlimited"` for no limit.
    #[serde(
        default = "default_user_entries",
        deserialize_with = "deserialize_limit"
    )]
    pub user_entries: Option<u64>,
    /// Most bytes of exNodes (every stored version, with the data keys
    /// wrapped for it) one owner may have in a VO's tree.
    #[serde(
        default = "default_user_exnode_bytes",
        deserialize_with = "deserialize_limit"
    )]
    pub user_exnode_bytes: Option<u64>,
    /// Most entries in one VO's tree.
    #[serde(default = "default_vo_entries", deserialize_with = "deserialize_limit")]
    pub vo_entries: Option<u64>,
    /// Most bytes of exNodes in one VO's tree.
    #[serde(
        default = "default_vo_exnode_bytes",
        deserialize_with = "deserialize_limit"
    )]
    pub vo_exnode_bytes: Option<u64>,
    /// VO group (by name) whose members administer the VO's namespace:
    /// members, escrow key, and admin + delete on every entry of the VO.
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
    /// Plain-HTTP address of the Prometheus `/metrics` endpoint (e.g.
    /// `127.0.0.1:9780`; keep it off public interfaces). Not served unless
    /// set; the bound address is printed as `metrics on ADDR:PORT` after
    /// the `listening on` line.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Most simultaneous client connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Database connections in the pool.
    #[serde(default = "default_db_connections")]
    pub db_connections: u32,
    /// Most simultaneous connections from one client address (an IPv6
    /// client: its /64); more are closed at once. Raise it behind a NAT.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Time allowed for the TLS handshake.
    #[serde(
        default = "default_handshake_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub handshake_timeout: Duration,
    /// Time allowed for a request's header (also the keep-alive idle time).
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub header_timeout: Duration,
    /// Time allowed for a request body, plus a second per `body_min_rate`
    /// bytes received.
    #[serde(
        default = "default_body_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub body_timeout: Duration,
    /// Bytes per second that earn a request body one more second.
    #[serde(
        default = "default_body_min_rate",
        deserialize_with = "deserialize_size"
    )]
    pub body_min_rate: u64,
    /// Versions kept of each file (the current one included) where no
    /// directory above it says otherwise (`lors versions --keep`) and its
    /// VO has no entry in `keep_versions_per_vo`. A put that makes a
    /// version fall outside drops it, and the client releases the
    /// allocations no remaining version uses.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: u64,
    /// The same per VO (a table: `vo1 = 10`).
    #[serde(default)]
    pub keep_versions_per_vo: std::collections::BTreeMap<String, u64>,
}

fn default_keep_versions() -> u64 {
    crate::store::DEFAULT_KEEP_VERSIONS
}

fn default_max_connections_per_address() -> usize {
    ibp_https::ServeOptions::default().max_connections_per_address
}
fn default_handshake_timeout() -> Duration {
    ibp_https::ServeOptions::default().handshake_timeout
}
fn default_header_timeout() -> Duration {
    ibp_https::ServeOptions::default().header_timeout
}
fn default_body_timeout() -> Duration {
    ibp_https::ServeOptions::default().body_timeout
}
fn default_body_min_rate() -> u64 {
    ibp_https::ServeOptions::default().body_min_rate
}

impl Config {
    /// Reads and checks a configuration file; resolves relative paths.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read configuration {}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text)
            .with_context(|| format!("parse configuration {}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for p in [
            &mut cfg.server_cert,
            &mut cfg.server_key,
            &mut cfg.trust_dir,
            &mut cfg.signing_key,
        ]
        .into_iter()
        .chain(cfg.vomsdir.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if cfg.database.is_none() {
            cfg.database = Some(format!("sqlite://{}", base.join("metadata.db").display()));
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.ticket_lifetime < Duration::from_secs(1) {
            bail!("ticket_lifetime must be at least 1s");
        }
        if self.max_exnode < 1024 {
            bail!("max_exnode must be at least 1KiB");
        }
        if self.max_exnode > exnode::MAX_DOCUMENT as u64 {
            bail!("max_exnode must be at most {} bytes", exnode::MAX_DOCUMENT);
        }
        if self.admin_group.is_empty() {
            bail!("admin_group must not be empty");
        }
        if self.max_buffered_bodies < 1 << 20 {
            bail!("max_buffered_bodies must be at least 1MiB");
        }
        if self.max_buffered_bodies > 1 << 40 {
            bail!("max_buffered_bodies must be at most 1TiB");
        }
        if self.max_connections == 0 || self.db_connections == 0 {
            bail!("max_connections and db_connections must be at least 1");
        }
        if self.max_connections_per_address == 0 || self.body_min_rate == 0 {
            bail!("max_connections_per_address and body_min_rate must be at least 1");
        }
        let max = crate::store::MAX_KEEP_VERSIONS;
        for (what, k) in std::iter::once(("keep_versions".to_owned(), self.keep_versions)).chain(
            self.keep_versions_per_vo
                .iter()
                .map(|(vo, k)| (format!("keep_versions_per_vo.{vo}"), *k)),
        ) {
            if !(1..=max).contains(&k) {
                bail!("{what} must be between 1 (the current version only) and {max}");
            }
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d.is_zero() {
                bail!("{name} must be positive");
            }
        }
        Ok(())
    }

    /// The database URL (after [`Config::load`], always set).
    pub fn database_url(&self) -> &str {
        self.database.as_deref().unwrap_or("sqlite://metadata.db")
    }

    /// How many versions of each file are kept.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            default: self.keep_versions,
            per_vo: self.keep_versions_per_vo.clone(),
        }
    }

    /// The quota limits.
    pub fn limits(&self) -> crate::store::Limits {
        crate::store::Limits {
            user_entries: self.user_entries,
            user_exnode_bytes: self.user_exnode_bytes,
            vo_entries: self.vo_entries,
            vo_exnode_bytes: self.vo_exnode_bytes,
        }
    }
}

/// The sample written by `metadata-manager init` (every field, with its
/// default).
pub fn sample(dir: &Path) -> String {
    format!(
        r#"# Metadata manager configuration (see docs/metadata-manager.md). Relative
# paths are relative to this file's directory.

# HTTPS address; the first stdout line is `listening on ADDR:PORT`.
listen = "0.0.0.0:6780"
# The server's certificate chain and key (PEM, key PKCS#8), issued by a CA
# that users' trust directories hold. Not made by `init`.
server_cert = "server.pem"
server_key = "server.key"
# CAs of users' certificates (ca/*.pem) and the pinned attribute authority
# of every VO served (vomsdir/<vo>/*.pem).
trust_dir = "trust"
# Default: SQLite next to this file. PostgreSQL (several replicas may share
# it): "postgres://mdm@db.example.org/metadata".
database = "sqlite://{db}"
# Ticket-signing key made by `init` (mode 0600); put metadata.pub into the
# metadata/ folder of every depot's trust directory.
signing_key = "metadata.key"
# Lifetime of a file ticket; an ACL change or a removed member takes effect
# when the next ticket is requested.
ticket_lifetime = "10m"
# Largest exNode accepted: 8 MiB hold about 6,000 mappings (a 46 GiB file
# in 8 MiB blocks, one copy; see docs/metadata-manager.md).
max_exnode = "8MiB"
# Most bytes of large request bodies (puts) processed at once; more wait
# up to buffered_body_wait, then get 503.
max_buffered_bodies = "32MiB"
buffered_body_wait = "10s"
# Quotas per owner and per VO tree: entries (files and directories) and
# exNode bytes (every version kept, with its wrapped keys). "unlimited"
# for none.
user_entries = 100000
user_exnode_bytes = "1GiB"
vo_entries = 1000000
vo_exnode_bytes = "16GiB"
# VO group (by name) whose members administer the VO's namespace.
admin_group = "admins"
max_connections = 256
db_connections = 8
# Per-client limits of the HTTPS listener: connections from one address
# (raise it behind a NAT), and deadlines for the handshake, a request's
# header and its body (plus a second per body_min_rate bytes received).
max_connections_per_address = 32
handshake_timeout = "5s"
header_timeout = "10s"
body_timeout = "10s"
body_min_rate = "16KiB"
# Versions kept of each file, the current one included (a directory's
# owner or writers may set their own: `lors versions --keep N DIR`). Older
# ones are dropped when a new version is stored, and the client releases
# the allocations no kept version uses. Per VO:
keep_versions = 3
# [keep_versions_per_vo]
# vo1 = 10
"#,
        db = dir.join("metadata.db").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use ibp_service::units::{parse_duration, parse_size};

    fn parse(text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("mdm.toml");
        std::fs::write(&p, text)?;
        Config::load(&p)
    }

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
server_cert = "server.pem"
server_key = "server.key"
trust_dir = "trust"
signing_key = "metadata.key"
"#;

    #[test]
    fn listener_limits_default_to_the_https_crates_and_are_checked() {
        let cfg = parse(MINIMAL).unwrap();
        let d = ibp_https::ServeOptions::default();
        assert_eq!(
            cfg.max_connections_per_address,
            d.max_connections_per_address
        );
        assert_eq!(cfg.body_timeout, d.body_timeout);
        assert_eq!(cfg.body_min_rate, d.body_min_rate);
        let cfg = parse(&format!(
            "{MINIMAL}max_connections_per_address = 4\nheader_timeout = \"3s\"\nbody_min_rate = \"1KiB\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.max_connections_per_address, 4);
        assert_eq!(cfg.header_timeout, Duration::from_secs(3));
        assert_eq!(cfg.body_min_rate, 1024);
        for bad in ["max_connections_per_address = 0", "body_timeout = \"0s\""] {
            let e = parse(&format!("{MINIMAL}{bad}\n")).unwrap_err();
            assert!(format!("{e:#}").contains("must be"), "{bad}: {e:#}");
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.ticket_lifetime, Duration::from_secs(600));
        assert_eq!(cfg.max_exnode, 8 << 20);
        assert_eq!(cfg.max_buffered_bodies, 32 << 20);
        assert_eq!(cfg.buffered_body_wait, Duration::from_secs(10));
        assert_eq!(cfg.user_entries, Some(100_000));
        assert_eq!(cfg.user_exnode_bytes, Some(1 << 30));
        assert_eq!(cfg.vo_entries, Some(1_000_000));
        assert_eq!(cfg.vo_exnode_bytes, Some(16 << 30));
        let cfg = parse(&format!(
            "{MINIMAL}user_entries = \"unlimited\"\nvo_exnode_bytes = \"2GiB\"\nuser_exnode_bytes = 0\n"
        ))
        .unwrap();
        assert_eq!(cfg.user_entries, None);
        assert_eq!(cfg.vo_exnode_bytes, Some(2 << 30));
        assert_eq!(cfg.user_exnode_bytes, Some(0));
        assert!(parse(&format!("{MINIMAL}vo_entries = \"lots\"\n")).is_err());
        assert!(parse(&format!("{MINIMAL}max_buffered_bodies = \"1KiB\"\n")).is_err());
        assert!(cfg.database_url().ends_with("/metadata.db"));
        assert!(cfg.signing_key.is_absolute());
        let cfg = parse(&format!(
            "{MINIMAL}ticket_lifetime = \"2m\"\nmax_exnode = \"1MiB\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.ticket_lifetime, Duration::from_secs(120));
        assert_eq!(cfg.max_exnode, 1 << 20);
        assert!(parse(&format!("{MINIMAL}ticket_lifetime = 0\n")).is_err());
        assert!(parse(&format!("{MINIMAL}ticket_lifetme = 5\n")).is_err());
        assert!(parse(&format!("{MINIMAL}max_exnode = \"1TB\"\n")).is_err());
    }

    #[test]
    fn retention_settings() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.retention(), crate::store::Retention::default());
        assert_eq!(cfg.retention().default, 3);
        let cfg = parse(&format!(
            "{MINIMAL}keep_versions = 5\n[keep_versions_per_vo]\nvo1 = 1\nvo2 = 20\n"
        ))
        .unwrap();
        let r = cfg.retention();
        assert_eq!(r.default, 5);
        assert_eq!(r.per_vo.get("vo1"), Some(&1));
        assert_eq!(r.per_vo.get("vo2"), Some(&20));
        for bad in [
            "keep_versions = 0\n",
            "[keep_versions_per_vo]\nvo1 = 0\n",
            "keep_versions = 10001\n",
        ] {
            let e = parse(&format!("{MINIMAL}{bad}")).unwrap_err();
            assert!(format!("{e:#}").contains("between 1"), "{bad}: {e:#}");
        }
    }

    #[test]
    fn sample_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metadata.toml");
        std::fs::write(&p, sample(dir.path())).unwrap();
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:6780");
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("5 weeks").is_err());
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert!(parse_size("-1").is_err());
    }
}
