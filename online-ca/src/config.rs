//! The configuration file (TOML). Unknown fields are refused everywhere, so
//! a typo cannot silently disable a setting. Relative paths are relative to
//! the directory that holds the configuration file.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A length of time in whole seconds: an integer, or a string in the
/// stack's duration grammar (`"12h"`, `"1h30m"`, `"90s"`; docs/units.md).
pub use ibp_service::units::Seconds as Secs;

fn twelve_hours() -> Secs {
    Secs(12 * 3600)
}

fn default_max_connections() -> usize {
    256
}

fn default_max_connections_per_address() -> usize {
    ibp_https::ServeOptions::default().max_connections_per_address
}

fn default_handshake_timeout() -> Secs {
    Secs(
        ibp_https::ServeOptions::default()
            .handshake_timeout
            .as_secs(),
    )
}

fn default_header_timeout() -> Secs {
    Secs(ibp_https::ServeOptions::default().header_timeout.as_secs())
}

fn default_body_timeout() -> Secs {
    Secs(ibp_https::ServeOptions::default().body_timeout.as_secs())
}

fn default_body_min_rate() -> u64 {
    ibp_https::ServeOptions::default().body_min_rate
}

/// `online-ca serve` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on for HTTPS, `host:port`. Port 0 picks a free
    /// port; the bound address is printed as the first line on stdout
    /// (`listening on ADDR:PORT`).
    pub listen: String,
    /// The CA directory made by `online-ca init`: `ca.pem`, `ca.key`,
    /// `aa/<vo>.pem` + `.key`, `server.pem` + `.key`, `trust/`.
    pub dir: PathBuf,
    /// sqlx database URL of the membership and audit database: `sqlite://`
    /// or `postgres://`. Default: `sqlite://<dir>/ca.db` (created if
    /// missing).
    #[serde(default)]
    pub database: Option<String>,
    /// Organization (`O=`) placed in the subject of issued certificates.
    pub org: String,
    /// Lifetime of an issued certificate when the client asks for none.
    #[serde(default = "twelve_hours")]
    pub default_lifetime: Secs,
    /// Upper bound on the lifetime of issued certificates and attributes,
    /// whatever the client asks for.
    #[serde(default = "twelve_hours")]
    pub max_lifetime: Secs,
    /// Lifetime of attributes issued by `/v1/attributes` when the client
    /// asks for none (also capped by `max_lifetime` and by the remaining
    /// validity of the client's certificate).
    #[serde(default = "twelve_hours")]
    pub attribute_lifetime: Secs,
    /// Trust directory for the client certificates of `/v1/attributes`
    /// (`ca/*.pem` are the trusted CAs). Default `<dir>/trust`, which trusts
    /// this CA itself.
    #[serde(default)]
    pub trust_dir: Option<PathBuf>,
    /// `host:port` naming this CA as a VOMS server: when set, logins and
    /// `/v1/attributes` also carry a standard VOMS attribute certificate
    /// signed by the VO's AA (policy authority `<vo>://<host>:<port>`), so
    /// that VOMS tools (`voms-proxy-info`) read the proxy
    /// (docs/identity.md, "VOMS credentials"). Default none.
    #[serde(default)]
    pub voms_uri: Option<String>,
    /// Most simultaneous client connections; further ones wait.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Plain-HTTP address of the Prometheus `/metrics` endpoint (e.g.
    /// `127.0.0.1:9780`; keep it off public interfaces). Not served unless
    /// set; the bound address is printed as `metrics on ADDR:PORT` after
    /// the `listening on` line.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Most simultaneous connections from one client address (IPv6: one
    /// /64); a connection beyond it is closed at once.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Time allowed for the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Secs,
    /// Time allowed for a request's header, from the end of the handshake
    /// or of the previous response (also the keep-alive idle timeout).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Secs,
    /// Time allowed for a request body, plus one second for every
    /// `body_min_rate` bytes received.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Secs,
    /// Bytes per second that earn a request body one more second.
    #[serde(default = "default_body_min_rate")]
    pub body_min_rate: u64,
    /// Local users file (argon2id hashes): the embedded authenticator for
    /// demos. Absent: method `local` is disabled.
    #[serde(default)]
    pub local: Option<LocalConfig>,
    /// RADIUS (PAP) authenticator, as eduroam identity providers answer.
    /// Absent: method `radius` is disabled.
    #[serde(default)]
    pub radius: Option<RadiusConfig>,
    /// OpenID Connect: bearer JWTs verified against the issuer's JWKS.
    /// Absent: method `oidc` is disabled.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Limits on failed logins.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Maintenance grants: renewable credentials that keep a member's
    /// files alive unattended (docs/maintenance.md).
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// Per-VO settings, `[vos.<vo>]`; a VO without a section takes the
    /// defaults of [`VoConfig`]. Every name must be a VO of the CA
    /// directory (checked when the CA starts).
    #[serde(default)]
    pub vos: std::collections::BTreeMap<String, VoConfig>,
    /// Host certificates for depots, L-Bones and metadata managers
    /// (docs/online-ca.md, "Host certificates").
    #[serde(default)]
    pub hosts: HostsConfig,
}

fn thirty_days() -> Secs {
    Secs(30 * 86_400)
}

fn seven_days() -> Secs {
    Secs(7 * 86_400)
}

/// `[hosts]`: the service certificates the CA issues to the hosts on its
/// allow-list (`online-ca admin hosts allow`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    /// Whether `/v1/hosts/enroll` and `/v1/hosts/renew` answer at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Lifetime of a host certificate (never beyond the CA's own expiry).
    /// Hosts renew before it ends (`online-ca host-cert renew`).
    #[serde(default = "thirty_days")]
    pub lifetime: Secs,
    /// How long the enrollment token `hosts allow` prints stays usable.
    #[serde(default = "seven_days")]
    pub token_validity: Secs,
}

impl Default for HostsConfig {
    fn default() -> HostsConfig {
        HostsConfig {
            enabled: true,
            lifetime: thirty_days(),
            token_validity: seven_days(),
        }
    }
}

/// `[vos.<vo>]`: how the CA treats the members of one VO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoConfig {
    /// Certificates issued at login name the member by a stable pseudonym
    /// of this VO (`CN=pseudonym:<16 letters and digits>`) instead of
    /// their login name; the mapping stays in the CA's database
    /// (docs/identity.md, "Pseudonymous members"). Default `false`, so
    /// that a configuration written before the setting existed keeps
    /// naming members as it did; `online-ca init` writes `true` for the
    /// VOs it creates.
    #[serde(default)]
    pub pseudonymous: bool,
    /// A certificate a member links to their VO ID themselves (`lors
    /// link-cert`, `/v1/link`) waits for a VO admin's `online-ca admin
    /// member approve-link` instead of being linked at once
    /// (docs/identity.md, "Linking a certificate yourself"). Default
    /// `false`.
    #[serde(default)]
    pub link_approval: bool,
}

fn ninety_days() -> Secs {
    Secs(90 * 86_400)
}

fn one_hour() -> Secs {
    Secs(3600)
}

fn default_admin_group() -> String {
    "admins".into()
}

/// `[maintenance]`: grants that a member enrolls once (with a login
/// proxy) and exchanges, unattended, for short-lived maintenance-only
/// proxies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Whether members may enroll and exchange grants at all. Turning it
    /// off refuses every grant at once (they stay in the database).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a new grant lasts when the member asks for nothing.
    #[serde(default = "ninety_days")]
    pub default_validity: Secs,
    /// The longest a grant may last, whatever the member asks for.
    #[serde(default = "ninety_days")]
    pub max_validity: Secs,
    /// The longest lifetime of a maintenance proxy (also capped by the
    /// grant's own expiry).
    #[serde(default = "one_hour")]
    pub proxy_lifetime: Secs,
    /// Members of this VO group may revoke any grant of their VO.
    #[serde(default = "default_admin_group")]
    pub admin_group: String,
}

fn yes() -> bool {
    true
}

impl Default for MaintenanceConfig {
    fn default() -> MaintenanceConfig {
        MaintenanceConfig {
            enabled: true,
            default_validity: ninety_days(),
            max_validity: ninety_days(),
            proxy_lifetime: one_hour(),
            admin_group: default_admin_group(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// File of `user:<argon2id PHC hash>` lines (mode 0600), maintained with
    /// `online-ca admin user add`. Read at every login, so changes apply
    /// without a restart.
    pub users_file: PathBuf,
}

fn default_radius_timeout() -> Secs {
    Secs(3)
}

fn default_radius_retries() -> u32 {
    2
}

fn default_nas_identifier() -> String {
    "online-ca".into()
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusConfig {
    /// RADIUS authentication server, `host:port` (usually port 1812).
    pub server: String,
    /// Shared secret configured for this client on the RADIUS server.
    pub secret: String,
    /// How long to wait for an answer before resending.
    #[serde(default = "default_radius_timeout")]
    pub timeout: Secs,
    /// How many times to resend an unanswered request.
    #[serde(default = "default_radius_retries")]
    pub retries: u32,
    /// NAS-Identifier sent in every Access-Request.
    #[serde(default = "default_nas_identifier")]
    pub nas_identifier: String,
    /// Refuse answers without a valid Message-Authenticator (RFC 3579;
    /// protects against forged answers, CVE-2024-3596 "BlastRADIUS"). Needs
    /// a server that signs its answers (FreeRADIUS 3.2.5 or later does).
    /// Requests always carry a Message-Authenticator, and one present in an
    /// answer is always checked.
    #[serde(default)]
    pub require_message_authenticator: bool,
}

impl std::fmt::Debug for RadiusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadiusConfig")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_jwks_refresh() -> Secs {
    Secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss` claim, exactly (e.g. `https://login.example.org/realms/x`).
    /// Identities are `oidc:<issuer>#<sub>`.
    pub issuer: String,
    /// Expected audience: the `aud` claim (string or array) must contain it.
    pub audience: String,
    /// URL of the issuer's JWKS (`https://`, or `http://` for tests on
    /// loopback). Exactly one of `jwks_url` and `jwks_file` is required.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A local JWKS file instead of `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// PEM file of the CAs trusted for an `https://` `jwks_url`. Default:
    /// the system bundle `/etc/ssl/certs/ca-certificates.crt`.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// How long a fetched JWKS is used before it is fetched again (a token
    /// with an unknown `kid` triggers an earlier refetch, at most every 30 s).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Secs,
    /// Signature algorithms accepted: any of RS256, RS384, RS512, PS256,
    /// PS384, PS512, ES256, ES384. `none` and HMAC (HS*) are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_max_failures() -> u32 {
    5
}

fn default_max_failures_per_address() -> u32 {
    20
}

fn default_max_failures_per_user() -> u32 {
    50
}

fn default_max_failures_total() -> u32 {
    1000
}

fn default_window() -> Secs {
    Secs(60)
}

fn default_known_address_lifetime() -> Secs {
    Secs(30 * 86_400)
}

/// Failed-login budgets (see `ratelimit.rs`); over any, logins are answered
/// 429 without checking the credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Failed logins allowed per user from one client address within
    /// `window`. Only that user at that address is refused beyond it.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Failed logins allowed from one client address (IPv6: one /64),
    /// whatever the users, within `window`.
    #[serde(default = "default_max_failures_per_address")]
    pub max_failures_per_address: u32,
    /// Failed logins allowed per user from all addresses within `window`;
    /// an address the user logged in from before is not held to it.
    #[serde(default = "default_max_failures_per_user")]
    pub max_failures_per_user: u32,
    /// Failed logins allowed at the CA within `window`; an address the user
    /// logged in from before is not held to it.
    #[serde(default = "default_max_failures_total")]
    pub max_failures_total: u32,
    /// The sliding window over which failures are counted.
    #[serde(default = "default_window")]
    pub window: Secs,
    /// How long an address a user logged in from stays known (in memory;
    /// forgotten on restart).
    #[serde(default = "default_known_address_lifetime")]
    pub known_address_lifetime: Secs,
}

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            max_failures: default_max_failures(),
            max_failures_per_address: default_max_failures_per_address(),
            max_failures_per_user: default_max_failures_per_user(),
            max_failures_total: default_max_failures_total(),
            window: default_window(),
            known_address_lifetime: default_known_address_lifetime(),
        }
    }
}

impl RateLimitConfig {
    pub fn limits(&self) -> crate::ratelimit::Limits {
        crate::ratelimit::Limits {
            max_failures: self.max_failures,
            max_failures_per_address: self.max_failures_per_address,
            max_failures_per_user: self.max_failures_per_user,
            max_failures_total: self.max_failures_total,
            window: self.window.as_duration(),
            known_address_lifetime: self.known_address_lifetime.as_duration(),
        }
    }
}

impl Config {
    /// Reads and checks a configuration file; makes its paths absolute.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config {}", path.display()))?;
        let mut cfg: Config =
            toml::from_str(&text).with_context(|| format!("parse config {}", path.display()))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.resolve(&base);
        cfg.check()?;
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.dir = abs(&self.dir);
        self.trust_dir = Some(abs(self
            .trust_dir
            .as_deref()
            .unwrap_or(&self.dir.join("trust"))));
        if let Some(l) = &mut self.local {
            l.users_file = abs(&l.users_file);
        }
        if let Some(o) = &mut self.oidc {
            o.jwks_file = o.jwks_file.as_deref().map(abs);
            o.jwks_ca_file = o.jwks_ca_file.as_deref().map(abs);
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.org.trim().is_empty() {
            bail!("config: org must not be empty");
        }
        if let Some(uri) = &self.voms_uri {
            let ok = uri.rsplit_once(':').is_some_and(|(host, port)| {
                ibp_auth::voms::is_host_name(host) && port.parse::<u16>().is_ok()
            });
            if !ok {
                bail!("config: voms_uri {uri:?} must be host:port");
            }
        }
        if self.max_lifetime.0 == 0 || self.default_lifetime.0 == 0 {
            bail!("config: lifetimes must be positive");
        }
        if self.attribute_lifetime.0 == 0 {
            bail!("config: attribute_lifetime must be positive");
        }
        if self.max_connections == 0 {
            bail!("config: max_connections must be positive");
        }
        if self.max_connections_per_address == 0 {
            bail!("config: max_connections_per_address must be positive");
        }
        if self.handshake_timeout.0 == 0 || self.header_timeout.0 == 0 || self.body_timeout.0 == 0 {
            bail!("config: handshake_timeout, header_timeout and body_timeout must be positive");
        }
        if self.body_min_rate == 0 {
            bail!("config: body_min_rate must be positive");
        }
        let r = &self.rate_limit;
        if r.max_failures == 0
            || r.max_failures_per_address == 0
            || r.max_failures_per_user == 0
            || r.max_failures_total == 0
            || r.window.0 == 0
        {
            bail!("config: rate_limit budgets and rate_limit.window must be positive");
        }
        if self.hosts.lifetime.0 < 3600 || self.hosts.token_validity.0 == 0 {
            bail!("config: hosts.lifetime must be at least 1h and hosts.token_validity positive");
        }
        let m = &self.maintenance;
        if m.default_validity.0 == 0 || m.max_validity.0 == 0 || m.proxy_lifetime.0 == 0 {
            bail!("config: maintenance.default_validity, max_validity and proxy_lifetime must be positive");
        }
        if let Some(r) = &self.radius {
            if r.secret.is_empty() {
                bail!("config: radius.secret must not be empty");
            }
            if r.timeout.0 == 0 {
                bail!("config: radius.timeout must be positive");
            }
        }
        if let Some(o) = &self.oidc {
            if o.jwks_url.is_some() == o.jwks_file.is_some() {
                bail!("config: oidc needs exactly one of jwks_url and jwks_file");
            }
            if o.issuer.is_empty() || o.audience.is_empty() {
                bail!("config: oidc.issuer and oidc.audience must not be empty");
            }
            for a in &o.algorithms {
                crate::oidc::Alg::parse(a)
                    .with_context(|| format!("config: oidc.algorithms: {a:?}"))?;
            }
        }
        Ok(())
    }

    /// Whether members of `vo` get pseudonymous certificates.
    pub fn pseudonymous(&self, vo: &str) -> bool {
        self.vos.get(vo).is_some_and(|v| v.pseudonymous)
    }

    /// Refuses `[vos.<vo>]` sections for VOs the CA directory lacks (a
    /// typo there would silently leave a VO's members named by login).
    pub fn check_vos<'a>(&self, known: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
        let known: Vec<&str> = known.collect();
        if let Some(vo) = self.vos.keys().find(|v| !known.contains(&v.as_str())) {
            bail!(
                "config: [vos.{vo}] names a VO without an attribute authority in {} (VOs: {})",
                self.dir.join("aa").display(),
                known.join(", ")
            );
        }
        Ok(())
    }

    /// The database URL, defaulting to SQLite in the CA directory.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.dir.join("ca.db").display()),
        }
    }

    pub fn trust_dir(&self) -> PathBuf {
        self.trust_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("trust"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Secs>().map(|v| v.0);
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("12h"), Ok(43_200));
        assert_eq!(d("1h30m"), Ok(5_400));
        assert_eq!(d("2d"), Ok(172_800));
        assert!(d("h").is_err());
        assert!(d("12").is_ok());
        assert!(d("12x").is_err());
        assert!(d("1h3").is_err());
        assert!(d("").is_err());
    }

    #[test]
    fn unknown_field_refused() {
        let e = toml::from_str::<Config>(
            "listen = \"127.0.0.1:0\"\ndir = \"x\"\norg = \"o\"\nlisten_port = 3\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = toml::from_str::<Config>(
            "listen = \"127.0.0.1:0\"\ndir = \"x\"\norg = \"o\"\n[rate_limit]\nmax_failure = 3\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn defaults() {
        let c: Config =
            toml::from_str("listen = \"127.0.0.1:0\"\ndir = \"x\"\norg = \"o\"\n").unwrap();
        assert_eq!(c.default_lifetime, Secs(43_200));
        assert_eq!(c.max_lifetime, Secs(43_200));
        assert_eq!(c.rate_limit.max_failures, 5);
        assert_eq!(c.rate_limit.window, Secs(60));
        assert_eq!(c.rate_limit.max_failures_per_address, 20);
        assert_eq!(c.rate_limit.max_failures_per_user, 50);
        assert_eq!(c.rate_limit.max_failures_total, 1000);
        assert_eq!(c.rate_limit.known_address_lifetime, Secs(30 * 86_400));
        assert_eq!(c.max_connections_per_address, 32);
        assert_eq!(c.handshake_timeout, Secs(5));
        assert_eq!(c.header_timeout, Secs(10));
        assert_eq!(c.body_timeout, Secs(10));
        assert_eq!(c.body_min_rate, 16 * 1024);
        assert!(c.local.is_none() && c.radius.is_none() && c.oidc.is_none());
        assert!(c.maintenance.enabled);
        assert_eq!(c.maintenance.default_validity, Secs(90 * 86_400));
        assert_eq!(c.maintenance.proxy_lifetime, Secs(3600));
        assert_eq!(c.maintenance.admin_group, "admins");
        assert!(c.vos.is_empty() && !c.pseudonymous("vo1"));
        assert!(c.hosts.enabled);
        assert_eq!(c.hosts.lifetime, Secs(30 * 86_400));
        assert_eq!(c.hosts.token_validity, Secs(7 * 86_400));
    }

    #[test]
    fn pseudonymous_per_vo() {
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:0\"\ndir = \"x\"\norg = \"o\"\n[vos.vo1]\npseudonymous = true\n[vos.vo2]\n",
        )
        .unwrap();
        assert!(c.pseudonymous("vo1"));
        assert!(!c.pseudonymous("vo2"));
        assert!(!c.pseudonymous("vo3"));
        assert!(c.check_vos(["vo1", "vo2"].into_iter()).is_ok());
        let e = c.check_vos(["vo1"].into_iter()).unwrap_err().to_string();
        assert!(e.contains("[vos.vo2]"), "{e}");
        let e = toml::from_str::<Config>(
            "listen = \"127.0.0.1:0\"\ndir = \"x\"\norg = \"o\"\n[vos.vo1]\npseudonymus = true\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
