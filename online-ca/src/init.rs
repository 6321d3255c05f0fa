//! `online-ca init`: makes (or completes) a CA directory. Existing keys and
//! certificates are kept, so running it again with another `--vo` adds that
//! VO's attribute authority.

use std::path::Path;

use anyhow::{bail, Context};
use ibp_auth::keys::write_secret;
use ibp_auth::pki::Authority;

use crate::ca::{cert_pem, key_pem, read_pem_cert, valid_vo_name};

/// What `init` was asked for.
#[derive(Debug)]
pub struct InitOptions<'a> {
    pub dir: &'a Path,
    pub org: &'a str,
    pub vos: &'a [String],
    pub hostnames: &'a [String],
    /// Validity of the CA and AA certificates, days.
    pub ca_days: i64,
    /// Validity of the server certificate, days.
    pub server_days: i64,
    /// `listen` of the sample configuration.
    pub listen: &'a str,
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn mkdir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))
}

/// Creates the CA directory owner-only (keys and the database live there),
/// whatever the umask; an existing directory is left as it is.
fn mkdir_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if path.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("set the mode of {}", path.display()))
}

/// Quotes a string for TOML.
/// A VO name as a TOML key (VO names are bare keys, `[A-Za-z0-9._-]`,
/// except for `.`, which needs quotes).
fn toml_key(vo: &str) -> String {
    if vo.contains('.') {
        toml_str(vo)
    } else {
        vo.to_string()
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Runs `init`; returns the lines to print (what was created or kept).
pub async fn run(o: &InitOptions<'_>) -> anyhow::Result<Vec<String>> {
    if o.org.trim().is_empty() {
        bail!("--org must not be empty");
    }
    if o.vos.is_empty() {
        bail!("at least one --vo is needed");
    }
    for vo in o.vos {
        if !valid_vo_name(vo) {
            bail!("bad VO name {vo:?}: letters, digits, '.', '-', '_' only, at most 64");
        }
    }
    if o.hostnames.is_empty() {
        bail!("at least one --hostname is needed (the name clients use to reach the server)");
    }
    let mut out = Vec::new();
    let dir = o.dir;
    mkdir_private(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    let created = |out: &mut Vec<String>, p: &Path| out.push(format!("created {}", p.display()));
    let kept = |out: &mut Vec<String>, p: &Path| out.push(format!("kept    {}", p.display()));

    // The CA.
    let (ca_pem_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = if ca_key_path.exists() {
        kept(&mut out, &ca_pem_path);
        kept(&mut out, &ca_key_path);
        Authority {
            cert_der: read_pem_cert(&ca_pem_path)?,
            key_pkcs8: ibp_auth::keys::read_private_key(&ca_key_path)?,
        }
    } else {
        let ca = Authority::new_ca(o.org, &format!("{} online CA", o.org), o.ca_days)?;
        write_secret(&ca_key_path, key_pem(&ca.key_pkcs8).as_bytes())?;
        write_public(&ca_pem_path, &cert_pem(&ca.cert_der))?;
        created(&mut out, &ca_pem_path);
        created(&mut out, &ca_key_path);
        ca
    };

    // Trust directory for other services.
    let trust = dir.join("trust");
    mkdir(&trust.join("ca"))?;
    let trust_ca = trust.join("ca").join("ca.pem");
    write_public(&trust_ca, &cert_pem(&ca.cert_der))?;
    created(&mut out, &trust_ca);

    // One attribute authority per VO.
    mkdir(&dir.join("aa"))?;
    for vo in o.vos {
        let (pem_path, key_path) = (
            dir.join("aa").join(format!("{vo}.pem")),
            dir.join("aa").join(format!("{vo}.key")),
        );
        let aa_der = if key_path.exists() {
            kept(&mut out, &pem_path);
            kept(&mut out, &key_path);
            read_pem_cert(&pem_path)?
        } else {
            let aa = ca.new_aa(o.org, vo, o.ca_days)?;
            write_secret(&key_path, key_pem(&aa.key_pkcs8).as_bytes())?;
            write_public(&pem_path, &cert_pem(&aa.cert_der))?;
            created(&mut out, &pem_path);
            created(&mut out, &key_path);
            aa.cert_der
        };
        let vomsdir = trust.join("vomsdir").join(vo);
        mkdir(&vomsdir)?;
        let p = vomsdir.join("aa.pem");
        write_public(&p, &cert_pem(&aa_der))?;
        created(&mut out, &p);
    }

    // The HTTPS server certificate.
    let (srv_pem, srv_key) = (dir.join("server.pem"), dir.join("server.key"));
    if srv_key.exists() {
        kept(&mut out, &srv_pem);
        kept(&mut out, &srv_key);
    } else {
        let hosts: Vec<&str> = o.hostnames.iter().map(String::as_str).collect();
        let s = ca.issue_server(&hosts, o.server_days)?;
        write_secret(&srv_key, key_pem(&s.key_pkcs8).as_bytes())?;
        write_public(&srv_pem, &cert_pem(&s.cert_der))?;
        created(&mut out, &srv_pem);
        created(&mut out, &srv_key);
    }

    // Local users file.
    let users = dir.join("users");
    if users.exists() {
        kept(&mut out, &users);
    } else {
        write_secret(
            &users,
            b"# online-ca local users: name:argon2id-hash (online-ca admin user add)\n",
        )?;
        created(&mut out, &users);
    }

    // Sample configuration.
    let cfg = dir.join("config.toml");
    if cfg.exists() {
        kept(&mut out, &cfg);
    } else {
        write_public(&cfg, &sample_config(&dir, o))?;
        created(&mut out, &cfg);
    }

    // The database, so that admin commands work at once.
    let db = dir.join("ca.db");
    let existed = db.exists();
    let store = crate::store::Store::open(&format!("sqlite://{}", db.display())).await?;
    store.close().await;
    if existed {
        kept(&mut out, &db);
    } else {
        created(&mut out, &db);
    }
    Ok(out)
}

fn sample_config(dir: &Path, o: &InitOptions<'_>) -> String {
    format!(
        r#"# online-ca configuration (docs/online-ca.md has the full reference).
# Relative paths are relative to this file.

# HTTPS address; port 0 picks a free port.
listen = {listen}
# The CA directory (keys, certificates, trust/).
dir = {dir}
# Database of VO members and the audit log (default: sqlite://<dir>/ca.db;
# or postgres://USER:PASSWORD@HOST/DB, shared by several CA processes).
# database = "sqlite://{db}"
# O= of issued certificates.
org = {org}
# Certificate lifetime when the client asks for none, and the cap.
default_lifetime = "12h"
max_lifetime = "12h"
# Lifetime of attributes for existing certificates (/v1/attributes).
attribute_lifetime = "12h"
# Trusted CAs for client certificates of /v1/attributes (default <dir>/trust).
# trust_dir = "trust"

# Embedded authenticator for demos: online-ca admin --config FILE user add --user NAME --password-stdin
[local]
users_file = "users"

# RADIUS (PAP), e.g. an eduroam identity provider.
# [radius]
# server = "127.0.0.1:1812"
# secret = "testing123"
# timeout = "3s"
# retries = 2

# OpenID Connect bearer tokens.
# [oidc]
# issuer = "https://login.example.org"
# audience = "online-ca"
# jwks_url = "https://login.example.org/jwks"

[rate_limit]
# Failed logins per user and per client address within the window.
max_failures = 5
window = "60s"

# Host certificates for depots, L-Bones and metadata managers on the
# allow-list (online-ca admin --config FILE hosts allow NAME --role ROLE).
# [hosts]
# lifetime = "30d"
# token_validity = "7d"

# Per VO: certificates name members by a stable pseudonym of the VO, never
# by their login (docs/identity.md, "Pseudonymous members"). On by default
# for the VOs made here; false (or no section) names members by login.
{vos}"#,
        listen = toml_str(o.listen),
        dir = toml_str(&dir.display().to_string()),
        db = dir.join("ca.db").display(),
        org = toml_str(o.org),
        vos = o
            .vos
            .iter()
            .map(|vo| format!("[vos.{}]\npseudonymous = true\n", toml_key(vo)))
            .collect::<String>(),
    )
}
