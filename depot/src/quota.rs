//! Byte quotas of the secure port: per VO and per user (VO ID) of a VO;
//! and the legacy port's own budget (see [`LegacyUsage`]).
//!
//! Usage is the sum of the `max_size` of the live allocations an owner made
//! in authenticated sessions, across all resources of the depot. It is
//! reserved atomically (one mutex) while the allocating resource holds its
//! capacity lock, released on delete, expiry and reclaim, and recomputed
//! from the journals on restart. Lock order: a resource's `inner` → this
//! mutex (never the other way round).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Mutex, RwLock};

use serde::{de, Deserialize, Deserializer};

use crate::config::Config;
use crate::journal::Owner;

#[derive(Default)]
struct Used {
    vo: HashMap<String, u64>,
    user: HashMap<(String, String), u64>,
}

/// The configured limits (replaced whole when the configuration is
/// reloaded, [`Quotas::set_limits`]).
#[derive(Default)]
struct Limits {
    /// Per VO: its total.
    vo: HashMap<String, u64>,
    /// Per VO: the default quota of each of its users.
    user_default: HashMap<String, u64>,
    /// Per (VO, VO ID): an override of the default.
    user: HashMap<(String, String), u64>,
}

impl Limits {
    fn of(cfg: &Config) -> Limits {
        let mut q = Limits::default();
        for v in &cfg.vos {
            if let Some(b) = v.quota {
                q.vo.insert(v.name.clone(), b.0);
            }
            if let Some(b) = v.user_quota {
                q.user_default.insert(v.name.clone(), b.0);
            }
        }
        for u in &cfg.users {
            q.user.insert((u.vo.clone(), u.vo_id.clone()), u.quota.0);
        }
        q
    }

    fn user_limit(&self, key: &(String, String)) -> Option<u64> {
        self.user
            .get(key)
            .or_else(|| self.user_default.get(&key.0))
            .copied()
    }
}

/// The configured quotas and the current usage.
#[derive(Default)]
pub struct Quotas {
    limits: RwLock<Limits>,
    used: Mutex<Used>,
}

impl Quotas {
    pub fn from_config(cfg: &Config) -> Quotas {
        Quotas {
            limits: RwLock::new(Limits::of(cfg)),
            used: Mutex::default(),
        }
    }

    /// Replaces the limits by those of `cfg` (a reloaded configuration);
    /// usage is kept. An owner already over a lowered limit keeps what it
    /// has and is refused more.
    pub fn set_limits(&self, cfg: &Config) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Limits::of(cfg);
    }

    fn limits(&self) -> std::sync::RwLockReadGuard<'_, Limits> {
        self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `size` bytes for `owner`, or says which quota it would exceed.
    pub fn reserve(&self, owner: &Owner, size: u64) -> Result<(), String> {
        let key = (owner.vo.clone(), owner.vo_id.clone());
        let limits = self.limits();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let vo_used = used.vo.get(&owner.vo).copied().unwrap_or(0);
        if let Some(limit) = limits.vo.get(&owner.vo) {
            if vo_used.saturating_add(size) > *limit {
                return Err(format!(
                    "vo quota exceeded: VO {} uses {vo_used} of {limit} bytes, {size} more asked",
                    owner.vo
                ));
            }
        }
        let user_used = used.user.get(&key).copied().unwrap_or(0);
        if let Some(limit) = limits.user_limit(&key) {
            if user_used.saturating_add(size) > limit {
                return Err(format!(
                    "user quota exceeded: {}/{} uses {user_used} of {limit} bytes, {size} more asked",
                    owner.vo, owner.vo_id
                ));
            }
        }
        used.vo
            .insert(owner.vo.clone(), vo_used.saturating_add(size));
        used.user.insert(key, user_used.saturating_add(size));
        Ok(())
    }

    /// Counts `size` bytes for `owner` whatever the limits (recovery: what
    /// the journal holds was granted before).
    pub fn add(&self, owner: &Owner, size: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used.vo.entry(owner.vo.clone()).or_default() += size;
        *used
            .user
            .entry((owner.vo.clone(), owner.vo_id.clone()))
            .or_default() += size;
    }

    /// Gives back `size` bytes of `owner`.
    pub fn release(&self, owner: &Owner, size: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = used.vo.get_mut(&owner.vo) {
            *v = v.saturating_sub(size);
        }
        let key = (owner.vo.clone(), owner.vo_id.clone());
        if let Some(v) = used.user.get_mut(&key) {
            *v = v.saturating_sub(size);
        }
    }

    /// What QUOTA answers `vo`/`vo_id` with: their use and limits.
    pub fn info(&self, vo: &str, vo_id: &str) -> ibp_proto::QuotaInfo {
        let (vo_used, user_used) = self.usage(vo, vo_id);
        let limits = self.limits();
        ibp_proto::QuotaInfo {
            vo_used,
            vo_limit: limits.vo.get(vo).copied(),
            user_used,
            user_limit: limits.user_limit(&(vo.to_owned(), vo_id.to_owned())),
        }
    }

    /// Bytes in use by a VO and by one of its users.
    pub fn usage(&self, vo: &str, vo_id: &str) -> (u64, u64) {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        (
            used.vo.get(vo).copied().unwrap_or(0),
            used.user
                .get(&(vo.to_owned(), vo_id.to_owned()))
                .copied()
                .unwrap_or(0),
        )
    }
}

/// A size, or a share of a resource's `hard_size` (`10%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareOfHard {
    Bytes(u64),
    Percent(u8),
}

impl ShareOfHard {
    /// The bytes this means for a resource of `hard` HARD bytes.
    pub fn of(self, hard: u64) -> u64 {
        match self {
            ShareOfHard::Bytes(b) => b,
            ShareOfHard::Percent(p) => (u128::from(hard) * u128::from(p) / 100) as u64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShareError(String);

impl FromStr for ShareOfHard {
    type Err = ShareError;

    fn from_str(s: &str) -> Result<ShareOfHard, ShareError> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n) if n <= 100 => Ok(ShareOfHard::Percent(n)),
                _ => Err(ShareError(format!(
                    "{s:?}: a share of hard_size is a whole percentage from 0% to 100%"
                ))),
            };
        }
        t.parse::<crate::units::ByteSize>()
            .map(|b| ShareOfHard::Bytes(b.0))
            .map_err(|e| ShareError(format!("{e} (or give a share of hard_size, e.g. \"10%\")")))
    }
}

impl fmt::Display for ShareOfHard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareOfHard::Bytes(b) => write!(f, "{b}"),
            ShareOfHard::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for ShareOfHard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShareOfHard, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ShareOfHard::Bytes(n)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

/// The legacy port's limits (`legacy_*` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct LegacyLimits {
    pub max_size: ShareOfHard,
    pub per_address_bytes: ShareOfHard,
    pub per_address_allocations: u64,
}

impl LegacyLimits {
    pub fn from_config(cfg: &Config) -> LegacyLimits {
        LegacyLimits {
            max_size: cfg.legacy_max_size,
            per_address_bytes: cfg.legacy_per_address_bytes,
            per_address_allocations: cfg.legacy_per_address_allocations,
        }
    }
}

pub use ibp_auth::address::address_key;

/// The legacy allocations of one resource: the bytes (their `max_size`) all
/// of them and those of each address reserve, and each address's count.
/// Kept under the resource's table lock; rebuilt from the journal at start
/// (each legacy allocation records the address that made it; one from a
/// journal written before that counts against the total only).
#[derive(Debug, Default)]
pub struct LegacyUsage {
    bytes: u64,
    by_addr: HashMap<IpAddr, (u64, u64)>,
}

impl LegacyUsage {
    /// Reserves `size` more bytes for `addr` (and one more allocation when
    /// `new`), or says which limit that would pass.
    pub fn reserve(
        &mut self,
        limits: &LegacyLimits,
        hard: u64,
        addr: Option<IpAddr>,
        size: u64,
        new: bool,
    ) -> Result<(), String> {
        let budget = limits.max_size.of(hard);
        if self.bytes.saturating_add(size) > budget {
            return Err(format!(
                "legacy budget exceeded: legacy allocations hold {} of the {budget} bytes legacy_max_size ({}) allows, {size} more asked",
                self.bytes, limits.max_size
            ));
        }
        if let Some(a) = addr.map(address_key) {
            let (bytes, count) = self.by_addr.get(&a).copied().unwrap_or((0, 0));
            let per = limits.per_address_bytes.of(hard);
            if bytes.saturating_add(size) > per {
                return Err(format!(
                    "per-address legacy limit exceeded: {a} holds {bytes} of {per} bytes (legacy_per_address_bytes {}), {size} more asked",
                    limits.per_address_bytes
                ));
            }
            if new && count >= limits.per_address_allocations {
                return Err(format!(
                    "per-address legacy limit exceeded: {a} holds {count} allocations (legacy_per_address_allocations {})",
                    limits.per_address_allocations
                ));
            }
            self.by_addr
                .insert(a, (bytes.saturating_add(size), count + u64::from(new)));
        }
        self.bytes = self.bytes.saturating_add(size);
        Ok(())
    }

    /// Counts an allocation whatever the limits (recovery).
    pub fn add(&mut self, addr: Option<IpAddr>, size: u64) {
        self.bytes = self.bytes.saturating_add(size);
        if let Some(a) = addr.map(address_key) {
            let e = self.by_addr.entry(a).or_default();
            e.0 = e.0.saturating_add(size);
            e.1 += 1;
        }
    }

    /// Gives back `size` bytes of `addr` (and the allocation itself when `gone`).
    pub fn release(&mut self, addr: Option<IpAddr>, size: u64, gone: bool) {
        self.bytes = self.bytes.saturating_sub(size);
        if let Some(a) = addr.map(address_key) {
            if let Some(e) = self.by_addr.get_mut(&a) {
                e.0 = e.0.saturating_sub(size);
                e.1 = e.1.saturating_sub(u64::from(gone));
                if *e == (0, 0) {
                    self.by_addr.remove(&a);
                }
            }
        }
    }

    /// Bytes all legacy allocations reserve.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Owner {
        Owner {
            vo: "vo1".into(),
            vo_id: id.into(),
        }
    }

    #[test]
    fn vo_and_user_limits() {
        let cfg: Config = toml::from_str(
            r#"
            [[vo]]
            name = "vo1"
            max_size = "1MiB"
            max_duration = "1h"
            quota = 1000
            user_quota = 600
            [[user]]
            vo = "vo1"
            vo_id = "big"
            quota = 900
            "#,
        )
        .unwrap();
        let q = Quotas::from_config(&cfg);
        q.reserve(&owner("a"), 600).unwrap();
        let e = q.reserve(&owner("a"), 1).unwrap_err();
        assert!(e.starts_with("user quota exceeded"), "{e}");
        let e = q.reserve(&owner("big"), 500).unwrap_err();
        assert!(e.starts_with("vo quota exceeded"), "{e}");
        q.reserve(&owner("big"), 400).unwrap();
        assert_eq!(q.usage("vo1", "a"), (1000, 600));
        q.release(&owner("a"), 600);
        q.reserve(&owner("big"), 500).unwrap();
        let e = q.reserve(&owner("big"), 1).unwrap_err();
        assert!(e.starts_with("user quota exceeded"), "{e}");
        q.reserve(&owner("c"), 100).unwrap();
        let e = q.reserve(&owner("c"), 1).unwrap_err();
        assert!(e.starts_with("vo quota exceeded"), "{e}");
        // What QUOTA answers: the caller's own limit (the override for
        // "big", the default for the others) and the VO's.
        let info = q.info("vo1", "big");
        assert_eq!(
            (info.vo_used, info.vo_limit, info.user_used, info.user_limit),
            (1000, Some(1000), 900, Some(900))
        );
        assert_eq!(q.info("vo1", "c").user_limit, Some(600));
        assert_eq!(q.info("vo1", "c").remaining(), Some(0));
        let other = q.info("vo2", "x");
        assert_eq!(
            (other.vo_limit, other.user_limit, other.remaining()),
            (None, None, None)
        );
    }

    #[test]
    fn shares_of_hard_size() {
        assert_eq!("10%".parse::<ShareOfHard>().unwrap().of(1000), 100);
        assert_eq!("100%".parse::<ShareOfHard>().unwrap().of(1000), 1000);
        assert_eq!("2MiB".parse::<ShareOfHard>().unwrap().of(1), 2 << 20);
        assert!("101%".parse::<ShareOfHard>().is_err());
        assert!("x%".parse::<ShareOfHard>().is_err());
        assert!("lots".parse::<ShareOfHard>().is_err());
        let cfg: Config =
            toml::from_str("legacy_max_size = 5\nlegacy_per_address_bytes = \"1%\"").unwrap();
        assert_eq!(cfg.legacy_max_size, ShareOfHard::Bytes(5));
        assert_eq!(cfg.legacy_per_address_bytes, ShareOfHard::Percent(1));
        let d = Config::default();
        assert_eq!(d.legacy_max_size, ShareOfHard::Percent(10));
        assert_eq!(d.legacy_per_address_bytes, ShareOfHard::Percent(2));
        assert_eq!(d.legacy_per_address_allocations, 1000);
    }

    #[test]
    fn legacy_budget_total_and_per_address() {
        let limits = LegacyLimits {
            max_size: ShareOfHard::Percent(10),
            per_address_bytes: ShareOfHard::Bytes(60),
            per_address_allocations: 2,
        };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let mut u = LegacyUsage::default();
        let e = u.reserve(&limits, 1000, Some(a), 101, true).unwrap_err();
        assert!(e.starts_with("legacy budget exceeded"), "{e}");
        u.reserve(&limits, 1000, Some(a), 50, true).unwrap();
        let e = u.reserve(&limits, 1000, Some(a), 11, true).unwrap_err();
        assert!(e.contains("60 bytes"), "{e}");
        u.reserve(&limits, 1000, Some(a), 1, true).unwrap();
        let e = u.reserve(&limits, 1000, Some(a), 1, true).unwrap_err();
        assert!(e.contains("2 allocations"), "{e}");
        // Another address (IPv4-mapped counts as IPv4) has its own limits,
        // within the total.
        u.reserve(&limits, 1000, Some(b), 49, true).unwrap();
        let e = u.reserve(&limits, 1000, Some(b), 1, true).unwrap_err();
        assert!(e.starts_with("legacy budget exceeded"), "{e}");
        u.release(Some(a), 50, true);
        u.reserve(&limits, 1000, Some(b), 1, true).unwrap();
        u.reserve(&limits, 1000, Some(a), 9, true).unwrap();
        assert_eq!(u.bytes(), 60);
        // One IPv6 /64 is one address.
        assert_eq!(
            address_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }
}
