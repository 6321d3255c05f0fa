//! The `lors` configuration: `~/.config/lors/config.toml` (or
//! `$XDG_CONFIG_HOME/lors/config.toml`, or the file `$LORS_CONFIG` names),
//! overridden by environment variables, themselves overridden by
//! command-line flags.
//!
//! Precedence: flag > environment > file > built-in default. [`Config`]
//! holds the environment and file layers, already parsed; a command applies
//! its flags on top (`flag.or(config.field)`) and then its own default.
//!
//! Every key is optional; unknown keys are refused. A missing default file
//! is no error; a missing `$LORS_CONFIG` file, a malformed file or a bad
//! value is an [`Error::Usage`] naming the file and line (or the
//! environment variable). Relative paths in the file are relative to the
//! file's directory; `~/` at their start is the home directory. See
//! `docs/lors.md`, "Configuration".

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use crate::credentials::{default_proxy_path, Error};
use crate::depots::{Near, Reliability};

/// Environment variable naming another configuration file.
pub const CONFIG_ENV: &str = "LORS_CONFIG";
/// Largest configuration file read.
const MAX_FILE: u64 = 1 << 20;
/// Largest block size accepted (the per-block limit of the encryption).
pub const MAX_BLOCK_SIZE: u64 = crate::crypto::MAX_BLOCK_LEN;
/// Largest `k + m` of erasure coding accepted.
pub const MAX_EC_SHARES: u32 = 256;

/// The environment variables [`Config`] reads, with their keys.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("LORS_LBONE_URL", "lbone"),
    ("LORS_METADATA_URL", "metadata"),
    ("LORS_CA_URL", "ca"),
    ("LORS_TRUST_DIR", "trust_dir"),
    ("LORS_VO", "vo"),
    ("X509_USER_PROXY", "proxy"),
    ("LORS_KEY_FILE", "key_file"),
    ("LORS_BLOCK_SIZE", "block_size"),
    ("LORS_COPIES", "copies"),
    ("LORS_EC", "ec"),
    ("LORS_THREADS", "threads"),
    ("LORS_DURATION", "duration"),
    ("LORS_LOCATION", "location"),
    ("LORS_SECURITY", "security"),
    ("LORS_RELIABILITY", "reliability"),
];

/// Erasure coding: `k` data shares and `m` parity shares (`K+M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ec {
    pub k: u16,
    pub m: u16,
}

impl FromStr for Ec {
    type Err = String;

    /// `K+M`, e.g. `4+2`: `k >= 1`, `m >= 1`, `k + m <= 256`.
    fn from_str(s: &str) -> Result<Ec, String> {
        let bad = || format!("bad erasure coding {s:?}: expected K+M, e.g. 4+2");
        let (k, m) = s.trim().split_once('+').ok_or_else(bad)?;
        let k: u16 = k.trim().parse().map_err(|_| bad())?;
        let m: u16 = m.trim().parse().map_err(|_| bad())?;
        if k == 0 || m == 0 {
            return Err(format!(
                "bad erasure coding {s:?}: K and M must be at least 1"
            ));
        }
        if u32::from(k) + u32::from(m) > MAX_EC_SHARES {
            return Err(format!(
                "bad erasure coding {s:?}: K+M must be at most {MAX_EC_SHARES}"
            ));
        }
        Ok(Ec { k, m })
    }
}

impl std::fmt::Display for Ec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

/// A block size: bytes or with a unit (`4MiB`, `5M`; docs/units.md), 1
/// byte to 64 GiB.
pub fn parse_block_size(s: &str) -> Result<u64, String> {
    let n = ibp_service::units::parse_size(s)?;
    if n == 0 || n > MAX_BLOCK_SIZE {
        return Err(format!("bad block size {s:?}: must be 1 byte to 64GiB"));
    }
    Ok(n)
}

/// A duration in whole seconds (`3600`, `90m`, `7d`, `1d12h`; docs/units.md),
/// not zero.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    match ibp_service::units::parse_seconds(s)? {
        0 => Err(format!("bad duration {s:?}: must be longer than 0")),
        n => Ok(n),
    }
}

/// A count of at least 1 (`copies`, `threads`).
pub fn parse_count(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err(format!("bad number {s:?}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("bad number {s:?}: expected a whole number >= 1")),
    }
}

/// `legacy`, `crypto` or `full`.
pub fn parse_security(s: &str) -> Result<exnode::Security, String> {
    exnode::Security::from_name(s.trim())
        .ok_or_else(|| format!("bad security {s:?}: legacy, crypto or full"))
}

/// `hard` or `soft`.
pub fn parse_reliability(s: &str) -> Result<Reliability, String> {
    match s.trim() {
        "hard" => Ok(Reliability::Hard),
        "soft" => Ok(Reliability::Soft),
        _ => Err(format!("bad reliability {s:?}: hard or soft")),
    }
}

/// An `https://host:port` URL of a service.
pub fn parse_url(s: &str) -> Result<String, String> {
    crate::https::BaseUrl::parse(s.trim()).map_err(|e| e.to_string())?;
    Ok(s.trim().to_owned())
}

/// One URL, or several comma-separated (metadata-manager replicas).
pub fn parse_urls(s: &str) -> Result<String, String> {
    let urls: Vec<&str> = crate::metadata::split_urls(s).collect();
    if urls.is_empty() {
        return Err("no URL".into());
    }
    for u in &urls {
        parse_url(u)?;
    }
    Ok(urls.join(","))
}

/// A place registered at the L-Bone, or `LAT,LON`.
pub fn parse_location(s: &str) -> Result<Near, String> {
    Near::parse(s)
}

/// A VO name.
pub fn parse_vo(s: &str) -> Result<String, String> {
    let s = s.trim();
    if crate::metadata::is_identifier(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("bad VO name {s:?}: letters, digits, '.', '_', '-'"))
    }
}

/// The settings of the environment and the configuration file, parsed.
/// `None`: set in neither.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The L-Bone, `https://host:port`.
    pub lbone: Option<String>,
    /// The metadata manager, `https://host:port`, or several replicas'
    /// URLs, comma-separated.
    pub metadata: Option<String>,
    /// The online CA, `https://host:port`.
    pub ca: Option<String>,
    /// Trust directory (`ca/*.pem`, ...).
    pub trust_dir: Option<PathBuf>,
    /// The VO to use.
    pub vo: Option<String>,
    /// The proxy credential file.
    pub proxy: Option<PathBuf>,
    /// The key-wrapping private key file.
    pub key_file: Option<PathBuf>,
    /// Upload block size, bytes.
    pub block_size: Option<u64>,
    /// Replicas of each block.
    pub copies: Option<u32>,
    /// Erasure coding instead of replicas.
    pub ec: Option<Ec>,
    /// Parallel transfers.
    pub threads: Option<u32>,
    /// Allocation lifetime, seconds.
    pub duration: Option<u64>,
    /// Where the user is, for nearest-first depots.
    pub location: Option<Near>,
    pub security: Option<exnode::Security>,
    pub reliability: Option<Reliability>,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
}

/// The file's contents, with positions for messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    lbone: Option<Spanned<String>>,
    metadata: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    trust_dir: Option<Spanned<String>>,
    vo: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    block_size: Option<Spanned<StrOrInt>>,
    copies: Option<Spanned<StrOrInt>>,
    ec: Option<Spanned<String>>,
    threads: Option<Spanned<StrOrInt>>,
    duration: Option<Spanned<StrOrInt>>,
    location: Option<Spanned<String>>,
    security: Option<Spanned<String>>,
    reliability: Option<Spanned<String>>,
}

/// A number may be written as a TOML integer or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrInt {
    Int(i64),
    Str(String),
}

impl StrOrInt {
    fn text(&self) -> String {
        match self {
            StrOrInt::Int(n) => n.to_string(),
            StrOrInt::Str(s) => s.clone(),
        }
    }
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `~/x` → `$HOME/x`; a relative path → relative to `base`.
fn resolve_path(raw: &str, base: Option<&Path>) -> PathBuf {
    if let Some(rest) = raw.strip_prefix("~/") {
        if let Some(home) = env_home() {
            return home.join(rest);
        }
    }
    let p = PathBuf::from(raw);
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

fn env_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn real_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$XDG_CONFIG_HOME/lors`, else `$HOME/.config/lors`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        let x = PathBuf::from(x);
        // The XDG spec says relative values are invalid and to be ignored.
        if x.is_absolute() {
            return Some(x.join("lors"));
        }
    }
    env_home().map(|h| h.join(".config").join("lors"))
}

/// The default configuration file: `config.toml` in [`config_dir`]
/// (`$LORS_CONFIG` is not looked at here).
pub fn default_path() -> Option<PathBuf> {
    config_dir().map(|d| d.join("config.toml"))
}

/// Reads a configuration file; `Ok(None)` if it does not exist.
fn read_file(path: &Path) -> Result<Option<String>, Error> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            )))
        }
    };
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            Error::Usage(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            ))
        })?;
    if text.len() as u64 > MAX_FILE {
        return Err(Error::Usage(format!(
            "configuration file {} is larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    Ok(Some(text))
}

impl Config {
    /// The configuration of this process: the file `$LORS_CONFIG` names
    /// (which must exist), else [`default_path`] (if it exists), then the
    /// environment on top.
    pub fn load() -> Result<Config, Error> {
        let (path, required) = match real_env(CONFIG_ENV) {
            Some(p) => (Some(PathBuf::from(p)), true),
            None => (default_path(), false),
        };
        let text = match &path {
            Some(p) => match read_file(p)? {
                Some(t) => Some(t),
                None if required => {
                    return Err(Error::Usage(format!(
                        "configuration file {} (from ${CONFIG_ENV}) does not exist",
                        p.display()
                    )))
                }
                None => None,
            },
            None => None,
        };
        let file = match (&path, &text) {
            (Some(p), Some(t)) => Some((p.as_path(), t.as_str())),
            _ => None,
        };
        Config::from_sources(file, real_env)
    }

    /// The configuration from a file's text (with its path, for messages
    /// and relative paths) and an environment (`env(name)`; an empty value
    /// counts as unset). Pure: reads nothing else (but `~/` in the file's
    /// paths, which reads `$HOME`).
    pub fn from_sources(
        file_text: Option<(&Path, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let mut c = match file_text {
            Some((path, text)) => Config::from_file(path, text)?,
            None => Config::default(),
        };
        c.apply_env(|name| env(name).filter(|v| !v.is_empty()))?;
        Ok(c)
    }

    fn from_file(path: &Path, text: &str) -> Result<Config, Error> {
        let at = |span: std::ops::Range<usize>, msg: &str| {
            Error::Usage(format!(
                "{}:{}: {msg}",
                path.display(),
                line_of(text, span.start)
            ))
        };
        let raw: FileConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_owned();
            match e.span() {
                Some(s) => at(s, &msg),
                None => Error::Usage(format!("{}: {msg}", path.display())),
            }
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        fn get<T, R>(
            v: Option<Spanned<T>>,
            at: &impl Fn(std::ops::Range<usize>, &str) -> Error,
            key: &str,
            f: impl Fn(&T) -> Result<R, String>,
        ) -> Result<Option<R>, Error> {
            match v {
                None => Ok(None),
                Some(s) => f(s.get_ref())
                    .map(Some)
                    .map_err(|m| at(s.span(), &format!("{key}: {m}"))),
            }
        }
        let path_of = |s: &String| -> Result<PathBuf, String> {
            if s.is_empty() {
                return Err("empty path".into());
            }
            Ok(resolve_path(s, base))
        };
        Ok(Config {
            lbone: get(raw.lbone, &at, "lbone", |s| parse_urls(s))?,
            metadata: get(raw.metadata, &at, "metadata", |s| parse_urls(s))?,
            ca: get(raw.ca, &at, "ca", |s| parse_url(s))?,
            trust_dir: get(raw.trust_dir, &at, "trust_dir", path_of)?,
            vo: get(raw.vo, &at, "vo", |s| parse_vo(s))?,
            proxy: get(raw.proxy, &at, "proxy", path_of)?,
            key_file: get(raw.key_file, &at, "key_file", path_of)?,
            block_size: get(raw.block_size, &at, "block_size", |v| {
                parse_block_size(&v.text())
            })?,
            copies: get(raw.copies, &at, "copies", |v| parse_count(&v.text()))?,
            ec: get(raw.ec, &at, "ec", |s| s.parse())?,
            threads: get(raw.threads, &at, "threads", |v| parse_count(&v.text()))?,
            duration: get(raw.duration, &at, "duration", |v| parse_duration(&v.text()))?,
            location: get(raw.location, &at, "location", |s| parse_location(s))?,
            security: get(raw.security, &at, "security", |s| parse_security(s))?,
            reliability: get(raw.reliability, &at, "reliability", |s| {
                parse_reliability(s)
            })?,
            file: Some(path.to_path_buf()),
        })
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        fn set<T>(
            slot: &mut Option<T>,
            env: &impl Fn(&str) -> Option<String>,
            name: &str,
            f: impl Fn(&str) -> Result<T, String>,
        ) -> Result<(), Error> {
            if let Some(v) = env(name) {
                *slot = Some(f(&v).map_err(|m| Error::Usage(format!("${name}: {m}")))?);
            }
            Ok(())
        }
        let path = |s: &str| Ok::<_, String>(PathBuf::from(s));
        set(&mut self.lbone, &env, "LORS_LBONE_URL", parse_urls)?;
        set(&mut self.metadata, &env, "LORS_METADATA_URL", parse_urls)?;
        set(&mut self.ca, &env, "LORS_CA_URL", parse_url)?;
        set(&mut self.trust_dir, &env, "LORS_TRUST_DIR", path)?;
        set(&mut self.vo, &env, "LORS_VO", parse_vo)?;
        set(&mut self.proxy, &env, "X509_USER_PROXY", path)?;
        set(&mut self.key_file, &env, "LORS_KEY_FILE", path)?;
        set(
            &mut self.block_size,
            &env,
            "LORS_BLOCK_SIZE",
            parse_block_size,
        )?;
        set(&mut self.copies, &env, "LORS_COPIES", parse_count)?;
        set(&mut self.ec, &env, "LORS_EC", str::parse)?;
        set(&mut self.threads, &env, "LORS_THREADS", parse_count)?;
        set(&mut self.duration, &env, "LORS_DURATION", parse_duration)?;
        set(&mut self.location, &env, "LORS_LOCATION", parse_location)?;
        set(&mut self.security, &env, "LORS_SECURITY", parse_security)?;
        set(
            &mut self.reliability,
            &env,
            "LORS_RELIABILITY",
            parse_reliability,
        )?;
        Ok(())
    }

    /// The proxy file: this configuration's, else `/tmp/x509up_u<uid>`.
    pub fn proxy_path(&self) -> PathBuf {
        self.proxy.clone().unwrap_or_else(default_proxy_path)
    }
}
