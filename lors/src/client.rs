//! A session for programs that link the library (liblors's C API, the
//! Python package): the services and credentials of the configuration
//! file and `LORS_*` variables (as the `lors` command reads them), or
//! explicit ones, and upload defaults from the same place.
//!
//! A [`Client`] is shared by threads. It looks at its proxy file before
//! every operation: an expired proxy is refused locally (no request is
//! sent), and a renewed one (a new file, e.g. from `lors login`) is picked
//! up without recreating the client.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use exnode::Security;

use crate::config::Config;
use crate::credentials::{Error, TrustSource};
use crate::files::{self, Grid, Placement, UploadSettings};
use crate::transfer::Redundancy;
use crate::MetadataClient;

/// Default block size: see docs/lors.md "Choosing the block size".
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// Default blocks in flight.
pub const DEFAULT_THREADS: usize = 4;
/// Default allocation lifetime: 7 days.
pub const DEFAULT_DURATION: u64 = 7 * 24 * 3600;
/// Default time allowed for each depot operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a caller sets explicitly, over the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub lbone: Option<String>,
    pub mdm: Option<String>,
    pub trust: Option<PathBuf>,
    pub proxy: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Time allowed for each depot operation ([`DEFAULT_TIMEOUT`]).
    pub timeout: Option<Duration>,
}

/// The services a session can use (each only if configured), from the
/// configuration with `o` over it.
pub fn grid_for(cfg: &Config, o: &Overrides) -> Result<Grid, Error> {
    let proxy = proxy_path(cfg, o);
    let credential = if proxy.exists() {
        Some(crate::credentials::load_proxy(&proxy)?)
    } else {
        None
    };
    grid_with(cfg, o, credential)
}

/// [`grid_for`] with `credential` instead of the proxy file (a
/// maintenance proxy kept in memory: [`crate::maintenance`]).
pub fn grid_with(
    cfg: &Config,
    o: &Overrides,
    credential: Option<ibp_auth::ProxyCredential>,
) -> Result<Grid, Error> {
    let trust = match o.trust.clone().or_else(|| cfg.trust_dir.clone()) {
        Some(d) => Some(TrustSource::Dir(d).load()?),
        None => None,
    };
    let mdm = match (
        o.mdm.clone().or_else(|| cfg.metadata.clone()),
        &trust,
        &credential,
    ) {
        (Some(url), Some(t), Some(c)) => Some(MetadataClient::connect(&url, t, c)?),
        _ => None,
    };
    let key_path = o
        .key
        .clone()
        .or_else(|| cfg.key_file.clone())
        .unwrap_or_else(crate::keys::default_key_path);
    Ok(Grid {
        trust,
        credential,
        lbone: o.lbone.clone().or_else(|| cfg.lbone.clone()),
        mdm,
        key: files::load_key_if_present(&key_path)?,
        escrow: None,
        vo: None,
        cache: Default::default(),
        timeout: Some(
            o.timeout
                .unwrap_or(DEFAULT_TIMEOUT)
                .max(Duration::from_secs(1)),
        ),
    })
}

pub(crate) fn proxy_path(cfg: &Config, o: &Overrides) -> PathBuf {
    o.proxy.clone().unwrap_or_else(|| cfg.proxy_path())
}

/// Upload settings from the configuration, else the defaults: full
/// security with a credential (legacy without), encrypted when there is a
/// key pair or the depots are secure.
pub fn default_settings(cfg: &Config, grid: &Grid) -> UploadSettings {
    let security = cfg.security.unwrap_or(if grid.credential.is_some() {
        Security::Full
    } else {
        Security::Legacy
    });
    let redundancy = match (cfg.ec, cfg.copies) {
        (Some(e), _) => Redundancy::Ec { k: e.k, m: e.m },
        (None, Some(n)) => Redundancy::Copies(u16::try_from(n).unwrap_or(u16::MAX)),
        (None, None) => Redundancy::Copies(1),
    };
    UploadSettings {
        block_size: cfg.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
        redundancy,
        threads: cfg
            .threads
            .map(|t| t as usize)
            .unwrap_or(DEFAULT_THREADS)
            .max(1),
        security,
        encrypt: grid.key.is_some() || security != Security::Legacy,
        placement: Placement {
            depots: Vec::new(),
            near: cfg.location.clone(),
            duration: cfg.duration.unwrap_or(DEFAULT_DURATION),
            reliability: cfg.reliability.unwrap_or_default(),
        },
        filename: None,
    }
}

/// A session shared by threads; see the module documentation.
pub struct Client {
    cfg: Config,
    overrides: Overrides,
    state: Mutex<State>,
}

struct State {
    grid: Grid,
    /// The proxy file's modification time and length when loaded.
    proxy_seen: Option<(SystemTime, u64)>,
    /// The loaded proxy's expiry, read from its certificates once per load
    /// (not on every operation).
    /// An unreadable expiry is kept as its message (`Error::InvalidProxy`).
    not_after: Option<Result<i64, String>>,
}

impl State {
    fn load(cfg: &Config, o: &Overrides) -> Result<State, Error> {
        let path = proxy_path(cfg, o);
        let proxy_seen = file_stamp(&path);
        let grid = grid_for(cfg, o)?;
        let not_after = grid
            .credential
            .as_ref()
            .map(|c| crate::credentials::proxy_not_after(c, &path).map_err(|e| e.to_string()));
        Ok(State {
            grid,
            proxy_seen,
            not_after,
        })
    }
}

impl Client {
    /// A client of the configuration file (`$LORS_CONFIG`, else
    /// `~/.config/lors/config.toml`) and the `LORS_*` variables, with `o`
    /// over them.
    pub fn from_env(o: Overrides) -> Result<Client, Error> {
        Client::new(Config::load()?, o)
    }

    /// A client of `cfg` with `o` over it.
    pub fn new(cfg: Config, o: Overrides) -> Result<Client, Error> {
        let state = State::load(&cfg, &o)?;
        Ok(Client {
            cfg,
            overrides: o,
            state: Mutex::new(state),
        })
    }

    /// The configuration the client was made from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The session to run an operation in: reloaded first if the proxy
    /// file changed; an expired proxy is refused here.
    pub fn grid(&self) -> Result<Grid, Error> {
        let path = proxy_path(&self.cfg, &self.overrides);
        let stamp = file_stamp(&path);
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::Local("the client's state was poisoned by a panic".into()))?;
        if stamp != st.proxy_seen {
            *st = State::load(&self.cfg, &self.overrides)?;
        }
        match &st.not_after {
            Some(Ok(na)) => {
                crate::credentials::refuse_expired_at(*na, &path, ibp_auth::unix_now())?
            }
            Some(Err(e)) => return Err(Error::InvalidProxy(e.clone())),
            None => {}
        }
        Ok(st.grid.clone())
    }

    /// Upload settings from the configuration (see [`default_settings`]).
    pub fn settings(&self) -> Result<UploadSettings, Error> {
        Ok(default_settings(&self.cfg, &self.grid()?))
    }
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}
