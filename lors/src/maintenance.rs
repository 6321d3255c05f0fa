//! Files that stay alive unattended (docs/maintenance.md): a maintenance
//! grant at the online CA, enrolled once with a login proxy, and stored
//! here in an owner-only file; unattended `refresh`, `check` and
//! `repair` exchange it for a short-lived maintenance-only proxy (kept in
//! memory, never written over the user's proxy) when the user's own proxy
//! is missing or expired.
//!
//! The CA's endpoints (JSON over HTTPS):
//! - `POST /v1/maintenance/enroll` (mutual TLS, login proxy) `{vo, valid}`
//!   → `{grant, token, vo, vo_id, created_at, expires_at}`;
//! - `POST /v1/maintenance/proxy` `{grant, token, csr, lifetime}` → the
//!   answer of `/v1/login`;
//! - `POST /v1/maintenance/status` `{grant, token}` (or mutual TLS `{}`)
//!   → `{grants: [...]}`;
//! - `POST /v1/maintenance/revoke` `{grant, token}` (or mutual TLS
//!   `{grant}` / `{all: true}`) → `{revoked}`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::{grid_with, proxy_path, Overrides};
use crate::config::Config;
use crate::credentials::{
    self, check_status, parse_json, CaClient, Error, KeyRequest, LoginResponse, NewProxy,
    TrustSource,
};
use crate::files::Grid;
use crate::validity::format_local;

/// Environment variable naming the maintenance credential file.
pub const FILE_ENV: &str = "LORS_MAINTENANCE_FILE";
/// Largest maintenance credential file read.
const MAX_FILE: u64 = 64 * 1024;
/// Lifetime asked for a maintenance proxy (the CA caps it, by default
/// at one hour, and at the grant's expiry).
pub const PROXY_LIFETIME: u64 = 3600;
/// A proxy with less than this left is replaced before the next file.
pub const MIN_LEFT: i64 = 300;
/// A grant with less than this left is used with a warning to renew it.
pub const RENEW_WITHIN: i64 = 7 * 86_400;

/// The maintenance credential file: `$LORS_MAINTENANCE_FILE`, else
/// `maintenance.json` in the configuration directory (next to `key.pem`).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os(FILE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    match crate::config::config_dir() {
        Some(d) => d.join("maintenance.json"),
        None => PathBuf::from("lors-maintenance.json"),
    }
}

/// What the maintenance credential file holds. The token is a secret:
/// not printed by `Debug`, zeroed when dropped.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFile {
    /// The online CA that issued the grant.
    pub ca: String,
    pub vo: String,
    pub vo_id: String,
    /// The grant's id.
    pub grant: String,
    token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for GrantFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantFile")
            .field("ca", &self.ca)
            .field("vo", &self.vo)
            .field("grant", &self.grant)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Drop for GrantFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl GrantFile {
    /// Reads the file at `path`; `None` if there is none. Refused (exit 1,
    /// like a proxy) if group or others may read it, naming its mode and
    /// `chmod 600`.
    pub fn load(path: &Path) -> Result<Option<GrantFile>, Error> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        let text =
            ibp_auth::keys::read_owner_only(path, "maintenance credential").map_err(|e| {
                Error::InvalidProxy(format!("{e}; the maintenance credential is refused"))
            })?;
        if text.len() as u64 > MAX_FILE {
            return Err(Error::InvalidProxy(format!(
                "maintenance credential {} is larger than {MAX_FILE} bytes",
                path.display()
            )));
        }
        let g: GrantFile = serde_json::from_slice(&text).map_err(|e| {
            Error::InvalidProxy(format!(
                "maintenance credential {} is unreadable: {e}",
                path.display()
            ))
        })?;
        Ok(Some(g))
    }

    /// Writes the file, created mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::Local(format!("cannot create {}: {e}", dir.display())))?;
        }
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Local(format!("cannot format the credential: {e}")))?;
        credentials::write_private(path, &text)
    }
}

#[derive(Serialize)]
struct EnrollBody<'a> {
    vo: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid: Option<u64>,
}

#[derive(Deserialize)]
struct EnrollAnswer {
    grant: String,
    token: String,
    vo: String,
    vo_id: String,
    created_at: i64,
    expires_at: i64,
}

/// Enrolls a maintenance grant at `ca` (a client made with the user's
/// login proxy, `ca_url` its address): the grant file to save.
pub async fn enroll(
    ca: &CaClient,
    ca_url: &str,
    vo: &str,
    valid: Option<u64>,
) -> Result<GrantFile, Error> {
    let resp = ca
        .http()
        .post_json("/v1/maintenance/enroll", &EnrollBody { vo, valid })
        .await?;
    let a: EnrollAnswer = parse_json(&check_status(resp)?, "enroll")?;
    Ok(GrantFile {
        ca: ca_url.to_owned(),
        vo: a.vo,
        vo_id: a.vo_id,
        grant: a.grant,
        token: a.token,
        created_at: a.created_at,
        expires_at: a.expires_at,
    })
}

#[derive(Serialize)]
struct TokenBody<'a> {
    grant: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct ProxyBody<'a> {
    grant: &'a str,
    token: &'a str,
    csr: String,
    lifetime: u64,
}

/// A grant as the CA describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantStatus {
    pub grant: String,
    pub vo: String,
    pub vo_id: String,
    pub identity: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<i64>,
    /// `active`, `revoked` or `expired`.
    pub state: String,
}

#[derive(Deserialize)]
struct Grants {
    grants: Vec<GrantStatus>,
}

#[derive(Deserialize)]
struct RevokedAnswer {
    revoked: u64,
}

/// The CA's refusal of a grant, as a credential error (exit 1): the
/// grant is unusable (revoked, expired, wrong token, member removed).
fn grant_refused(path: &Path, e: Error) -> Error {
    match e {
        Error::Refused(m) => Error::InvalidProxy(format!(
            "the online CA refused the maintenance credential {}: {m}",
            path.display()
        )),
        e => e,
    }
}

impl GrantFile {
    fn client(&self, trust: &ibp_auth::TrustStore) -> Result<CaClient, Error> {
        CaClient::new(&self.ca, trust, None)
    }

    /// A maintenance-only proxy from the CA, kept in memory.
    pub async fn proxy(
        &self,
        trust: &ibp_auth::TrustStore,
        path: &Path,
    ) -> Result<NewProxy, Error> {
        let ca = self.client(trust)?;
        let req = KeyRequest::new("maintenance")?;
        let body = ProxyBody {
            grant: &self.grant,
            token: &self.token,
            csr: req.csr_pem.clone(),
            lifetime: PROXY_LIFETIME,
        };
        let resp = ca
            .http()
            .post_json("/v1/maintenance/proxy", &body)
            .await
            .map_err(Error::from)
            .and_then(check_status)
            .map_err(|e| grant_refused(path, e))?;
        let answer: LoginResponse = parse_json(&resp, "maintenance proxy")?;
        req.proxy(&answer, &self.vo, PROXY_LIFETIME)
    }

    /// What the CA says about this grant.
    pub async fn status(
        &self,
        trust: &ibp_auth::TrustStore,
        path: &Path,
    ) -> Result<GrantStatus, Error> {
        let resp = self
            .token_call(trust, path, "/v1/maintenance/status")
            .await?;
        let g: Grants = parse_json(&resp, "maintenance status")?;
        g.grants
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unavailable("the CA described no grant".into()))
    }

    /// POSTs this grant's id and token to `route` at its CA.
    async fn token_call(
        &self,
        trust: &ibp_auth::TrustStore,
        path: &Path,
        route: &str,
    ) -> Result<Vec<u8>, Error> {
        let ca = self.client(trust)?;
        ca.http()
            .post_json(
                route,
                &TokenBody {
                    grant: &self.grant,
                    token: &self.token,
                },
            )
            .await
            .map_err(Error::from)
            .and_then(check_status)
            .map_err(|e| grant_refused(path, e))
    }

    /// Revokes this grant with its token.
    pub async fn revoke(&self, trust: &ibp_auth::TrustStore, path: &Path) -> Result<u64, Error> {
        let resp = self
            .token_call(trust, path, "/v1/maintenance/revoke")
            .await?;
        Ok(parse_json::<RevokedAnswer>(&resp, "maintenance revoke")?.revoked)
    }
}

#[derive(Serialize)]
struct RevokeTlsBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<&'a str>,
    all: bool,
}

/// Revokes grants over mutual TLS with a login proxy: one grant, or all of
/// the caller's.
pub async fn revoke_with_proxy(ca: &CaClient, grant: Option<&str>) -> Result<u64, Error> {
    let resp = ca
        .http()
        .post_json(
            "/v1/maintenance/revoke",
            &RevokeTlsBody {
                grant,
                all: grant.is_none(),
            },
        )
        .await?;
    Ok(parse_json::<RevokedAnswer>(&check_status(resp)?, "maintenance revoke")?.revoked)
}

/// The caller's grants, over mutual TLS with a login proxy.
pub async fn list_with_proxy(ca: &CaClient) -> Result<Vec<GrantStatus>, Error> {
    let resp = ca
        .http()
        .post_json("/v1/maintenance/status", &serde_json::json!({}))
        .await?;
    Ok(parse_json::<Grants>(&check_status(resp)?, "maintenance status")?.grants)
}

/// Which credential a maintenance session acts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acting {
    /// The user's own proxy file.
    Proxy,
    /// A maintenance-only proxy from this grant.
    Grant(String),
}

/// The credential of unattended `refresh`, `check` and `repair`: the
/// user's proxy while it has at least [`MIN_LEFT`] seconds left, else a
/// maintenance proxy from the grant file, renewed before it runs out.
/// When neither is there, [`Session::grid`] fails with the reason (exit
/// 1 for credentials, 4 when the CA cannot be reached), never silently.
pub struct Session {
    cfg: Config,
    o: Overrides,
    grant_path: PathBuf,
    current: Option<(Grid, Acting, i64)>,
}

impl Session {
    pub fn new(cfg: Config, o: Overrides) -> Session {
        Session {
            cfg,
            o,
            grant_path: default_path(),
            current: None,
        }
    }

    /// The credential in use, once [`Session::grid`] succeeded.
    pub fn acting(&self) -> Option<&Acting> {
        self.current.as_ref().map(|(_, a, _)| a)
    }

    /// The session for the next operation: the current one while its
    /// credential has [`MIN_LEFT`] left, else a new one.
    pub async fn grid(&mut self) -> Result<&Grid, Error> {
        let now = ibp_auth::unix_now();
        let fresh = self
            .current
            .as_ref()
            .is_some_and(|(_, _, not_after)| *not_after - now >= MIN_LEFT);
        if !fresh {
            self.current = Some(self.acquire(now).await?);
        }
        match &self.current {
            Some((g, ..)) => Ok(g),
            None => Err(Error::Local("no session".into())),
        }
    }

    async fn acquire(&self, now: i64) -> Result<(Grid, Acting, i64), Error> {
        let path = proxy_path(&self.cfg, &self.o);
        let own = credentials::load_unexpired_proxy(&path).and_then(|c| {
            let na = credentials::proxy_not_after(&c, &path)?;
            Ok((c, na))
        });
        let own_err = match own {
            Ok((c, na)) if na - now >= MIN_LEFT => {
                return Ok((grid_with(&self.cfg, &self.o, Some(c))?, Acting::Proxy, na))
            }
            Ok((c, na)) => Ok((c, na)),
            Err(e @ (Error::NoProxy(_) | Error::InvalidProxy(_))) => Err(e),
            Err(e) => return Err(e),
        };
        let grant = match GrantFile::load(&self.grant_path)? {
            Some(g) => g,
            None => {
                return match own_err {
                    // Nearly expired but still valid: better than nothing.
                    Ok((c, na)) => Ok((grid_with(&self.cfg, &self.o, Some(c))?, Acting::Proxy, na)),
                    Err(e) => Err(e.with_note(&format!(
                        "and there is no maintenance credential at {} to act without one \
                         (enroll once with `lors maintenance enroll`; docs/maintenance.md)",
                        self.grant_path.display()
                    ))),
                };
            }
        };
        if let Err(e) = &own_err {
            tracing::info!(reason = %e, grant = %grant.grant, "using the maintenance credential");
        }
        if grant.expires_at <= now {
            return Err(Error::InvalidProxy(format!(
                "the maintenance credential {} (grant {}) expired at {}: enroll again with \
                 `lors maintenance enroll` after `lors login`",
                self.grant_path.display(),
                grant.grant,
                format_local(grant.expires_at)
            )));
        }
        if grant.expires_at - now < RENEW_WITHIN {
            tracing::warn!(
                "the maintenance credential {} expires at {}: renew it with `lors login` and `lors maintenance enroll --force`",
                self.grant_path.display(),
                format_local(grant.expires_at)
            );
        }
        let trust_dir = self
            .o
            .trust
            .clone()
            .or_else(|| self.cfg.trust_dir.clone())
            .ok_or_else(|| {
                Error::Usage(
                    "a trust directory is needed to reach the online CA (LORS_TRUST_DIR)".into(),
                )
            })?;
        let trust = TrustSource::Dir(trust_dir).load()?;
        let new = grant.proxy(&trust, &self.grant_path).await?;
        let na = new.not_after;
        let grid = grid_with(&self.cfg, &self.o, Some(new.credential))?;
        Ok((grid, Acting::Grant(grant.grant.clone()), na))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> GrantFile {
        GrantFile {
            ca: "https://ca.example.org:8443".into(),
            vo: "vo1".into(),
            vo_id: "id".into(),
            grant: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            token: "secret-token".into(),
            created_at: 1,
            expires_at: 2,
        }
    }

    #[test]
    fn saved_owner_only_and_refused_when_others_may_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/maintenance.json");
        sample().save(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = GrantFile::load(&p).unwrap().unwrap();
        assert_eq!(back.grant, sample().grant);
        assert_eq!(back.token, "secret-token");
        // Debug never shows the token.
        assert!(!format!("{back:?}").contains("secret-token"));

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = GrantFile::load(&p).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::NO_PROXY);
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(GrantFile::load(&d.path().join("none")).unwrap().is_none());
    }
}
