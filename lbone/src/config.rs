//! `lbone serve` configuration (TOML). Unknown fields are refused, so a typo
//! cannot silently fall back to a default. Relative paths are relative to the
//! directory that holds the configuration file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

pub use ibp_service::units::ConfigDuration;

fn default_poll_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}
fn default_poll_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_poll_concurrency() -> usize {
    32
}
fn default_missed_polls_down() -> u32 {
    2
}
fn default_grant_lifetime() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(600))
}
fn default_admin_group() -> String {
    "admins".into()
}
fn default_max_connections() -> usize {
    256
}

/// `lbone serve --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve HTTPS on, `host:port`. Port 0 picks a free port; the
    /// bound address is printed as the first line on stdout
    /// (`listening on ADDR:PORT`).
    pub listen: String,
    /// PEM file with the server's certificate, then any intermediate CA
    /// certificates. Clients check it against their trust directory's CAs,
    /// by host name.
    pub server_cert: PathBuf,
    /// PEM file with the server certificate's private key (PKCS#8
    /// `PRIVATE KEY`).
    pub server_key: PathBuf,
    /// Trust directory (see docs/identity.md): `ca/*.pem` authenticate users'
    /// certificates, `vomsdir/<vo>/*.pem` pin each VO's attribute authority.
    /// Only VOs with a pinned attribute authority can use the L-Bone.
    pub trust_dir: PathBuf,
    /// A grid host's vomsdir (`<vo>/<host>.lsc`, docs/identity.md "VOMS
    /// credentials"): proxies with standard VOMS attribute certificates
    /// from the servers it lists are accepted. Default none: refused.
    #[serde(default)]
    pub vomsdir: Option<PathBuf>,
    /// sqlx database URL: `sqlite://FILE` (created if missing) or
    /// `postgres://user@host:port/db`. Default: `sqlite://<dir>/lbone.db`,
    /// `<dir>` being the configuration file's directory.
    #[serde(default)]
    pub database: Option<String>,
    /// Ed25519 key (PKCS#8 PEM, mode 0600) that signs depot grants; made by
    /// `lbone init`. Its public half (`lbone.pub`) goes into the `lbone/`
    /// folder of every depot's and client's trust directory.
    pub signing_key: PathBuf,
    /// How often every registered depot's STATUS is polled.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
    /// Time allowed for one depot's whole STATUS exchange (connect, RES,
    /// INQ); a depot that takes longer misses that poll.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout: ConfigDuration,
    /// Most depots polled at the same time.
    #[serde(default = "default_poll_concurrency")]
    pub poll_concurrency: usize,
    /// Consecutive missed polls after which a depot is unavailable (and no
    /// longer offered); one answered poll makes it available again.
    #[serde(default = "default_missed_polls_down")]
    pub missed_polls_down: u32,
    /// Lifetime of a depot grant (never beyond the holder's credential).
    /// Clients renew grants by querying again.
    #[serde(default = "default_grant_lifetime")]
    pub grant_lifetime: ConfigDuration,
    /// Name of the VO group whose members administer the VO's depot
    /// registrations (the group *name* in the VO attributes).
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
    /// Most simultaneous client connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Plain-HTTP address of the Prometheus `/metrics` endpoint (e.g.
    /// `127.0.0.1:9780`; keep it off public interfaces). Not served unless
    /// set; the bound address is printed as `metrics on ADDR:PORT` after
    /// the `listening on` line.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Most simultaneous connections from one client address (an IPv6
    /// client: its /64); more are closed at once. Raise it behind a NAT.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Time allowed for the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: ConfigDuration,
    /// Time allowed for a request's header (also the keep-alive idle time).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: ConfigDuration,
    /// Time allowed for a request body, plus a second per `body_min_rate`
    /// bytes received.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: ConfigDuration,
    /// Bytes per second that earn a request body one more second.
    #[serde(
        default = "default_body_min_rate",
        deserialize_with = "ibp_service::units::deserialize_size"
    )]
    pub body_min_rate: u64,
}

fn default_max_connections_per_address() -> usize {
    ibp_https::ServeOptions::default().max_connections_per_address
}
fn default_handshake_timeout() -> ConfigDuration {
    ConfigDuration(ibp_https::ServeOptions::default().handshake_timeout)
}
fn default_header_timeout() -> ConfigDuration {
    ConfigDuration(ibp_https::ServeOptions::default().header_timeout)
}
fn default_body_timeout() -> ConfigDuration {
    ConfigDuration(ibp_https::ServeOptions::default().body_timeout)
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
        cfg.resolve(base);
        cfg.check()?;
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.server_cert,
            &mut self.server_key,
            &mut self.trust_dir,
            &mut self.signing_key,
        ]
        .into_iter()
        .chain(self.vomsdir.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if self.database.is_none() {
            self.database = Some(format!("sqlite://{}", base.join("lbone.db").display()));
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.poll_interval.0 < Duration::from_millis(100) {
            bail!("poll_interval must be at least 100ms");
        }
        if self.poll_timeout.0 < Duration::from_millis(100) {
            bail!("poll_timeout must be at least 100ms");
        }
        if self.poll_concurrency == 0 {
            bail!("poll_concurrency must be at least 1");
        }
        if self.missed_polls_down == 0 {
            bail!("missed_polls_down must be at least 1");
        }
        if self.grant_lifetime.0 < Duration::from_secs(1) {
            bail!("grant_lifetime must be at least 1s");
        }
        if self.admin_group.is_empty() {
            bail!("admin_group must not be empty");
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.max_connections_per_address == 0 || self.body_min_rate == 0 {
            bail!("max_connections_per_address and body_min_rate must be at least 1");
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d.0.is_zero() {
                bail!("{name} must be positive");
            }
        }
        Ok(())
    }

    /// The database URL (after [`Config::load`], always set).
    pub fn database_url(&self) -> &str {
        self.database.as_deref().unwrap_or("sqlite://lbone.db")
    }
}

/// The sample written by `lbone init` (every field, with its default).
pub fn sample(dir: &Path) -> String {
    format!(
        r#"# L-Bone configuration (see docs/lbone.md). Relative paths are relative
# to this file's directory.

# HTTPS address; the first stdout line is `listening on ADDR:PORT`.
listen = "0.0.0.0:6767"
# The server's certificate chain and key (PEM, key PKCS#8), issued by a CA
# that users' trust directories hold. Not made by `lbone init`.
server_cert = "server.pem"
server_key = "server.key"
# CAs of users' certificates (ca/*.pem) and the pinned attribute authority of
# every VO that may use this L-Bone (vomsdir/<vo>/*.pem).
trust_dir = "trust"
# Default: SQLite next to this file. PostgreSQL: "postgres://lbone@db.example.org/lbone".
database = "sqlite://{db}"
# Grant-signing key made by `lbone init` (mode 0600); publish lbone.pub.
signing_key = "lbone.key"
# Depot STATUS polling.
poll_interval = "60s"
poll_timeout = "10s"
poll_concurrency = 32
missed_polls_down = 2
# Lifetime of a depot grant; clients renew by asking again.
grant_lifetime = "10m"
# VO group (by name) whose members register the VO's depots.
admin_group = "admins"
max_connections = 256
# Per-client limits of the HTTPS listener: connections from one address
# (raise it behind a NAT), and deadlines for the handshake, a request's
# header and its body (plus a second per body_min_rate bytes received).
max_connections_per_address = 32
handshake_timeout = "5s"
header_timeout = "10s"
body_timeout = "10s"
body_min_rate = "16KiB"
"#,
        db = dir.join("lbone.db").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("lbone.toml");
        std::fs::write(&p, text)?;
        Config::load(&p)
    }

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
server_cert = "server.pem"
server_key = "server.key"
trust_dir = "trust"
signing_key = "lbone.key"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.poll_interval.0, Duration::from_secs(60));
        assert_eq!(cfg.poll_timeout.0, Duration::from_secs(10));
        assert_eq!(cfg.missed_polls_down, 2);
        assert_eq!(cfg.grant_lifetime.0, Duration::from_secs(600));
        assert_eq!(cfg.admin_group, "admins");
        assert!(cfg.server_cert.is_absolute());
        assert!(cfg.database_url().starts_with("sqlite:///"));
        assert!(cfg.database_url().ends_with("/lbone.db"));
    }

    #[test]
    fn durations_and_refusals() {
        let cfg = parse(&format!(
            "{MINIMAL}poll_interval = \"1s\"\npoll_timeout = 2\ngrant_lifetime = \"1h\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.poll_interval.0, Duration::from_secs(1));
        assert_eq!(cfg.poll_timeout.0, Duration::from_secs(2));
        assert_eq!(cfg.grant_lifetime.0, Duration::from_secs(3600));
        assert!(parse(&format!("{MINIMAL}pol_interval = \"1s\"\n")).is_err());
        assert!(parse(&format!("{MINIMAL}poll_interval = \"soon\"\n")).is_err());
        assert!(parse(&format!("{MINIMAL}missed_polls_down = 0\n")).is_err());
        assert!(parse(&format!("{MINIMAL}poll_concurrency = 0\n")).is_err());
    }

    #[test]
    fn listener_limits_default_to_the_https_crates_and_are_checked() {
        let cfg = parse(MINIMAL).unwrap();
        let d = ibp_https::ServeOptions::default();
        assert_eq!(
            cfg.max_connections_per_address,
            d.max_connections_per_address
        );
        assert_eq!(cfg.handshake_timeout.0, d.handshake_timeout);
        assert_eq!(cfg.body_min_rate, d.body_min_rate);
        let cfg = parse(&format!(
            "{MINIMAL}max_connections_per_address = 4\nbody_timeout = \"3s\"\nbody_min_rate = \"1KiB\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.max_connections_per_address, 4);
        assert_eq!(cfg.body_timeout.0, Duration::from_secs(3));
        assert_eq!(cfg.body_min_rate, 1024);
        for bad in ["max_connections_per_address = 0", "header_timeout = \"0s\""] {
            let e = parse(&format!("{MINIMAL}{bad}\n")).unwrap_err();
            assert!(format!("{e:#}").contains("must be"), "{bad}: {e:#}");
        }
    }

    #[test]
    fn sample_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lbone.toml");
        std::fs::write(&p, sample(dir.path())).unwrap();
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:6767");
        assert_eq!(cfg.poll_concurrency, 32);
    }
}
