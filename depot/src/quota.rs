//! Byte quotas of the secure port: per VO and per user (VO ID) of a VO.
//!
//! Usage is the sum of the `max_size` of the live allocations an owner made
//! in authenticated sessions, across all resources of the depot. It is
//! reserved atomically (one mutex) while the allocating resource holds its
//! capacity lock, released on delete, expiry and reclaim, and recomputed
//! from the journals on restart. Lock order: a resource's `inner` → this
//! mutex (never the other way round).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::Config;
use crate::journal::Owner;

#[derive(Default)]
struct Used {
    vo: HashMap<String, u64>,
    user: HashMap<(String, String), u64>,
}

/// The configured quotas and the current usage.
#[derive(Default)]
pub struct Quotas {
    /// Per VO: its total.
    vo: HashMap<String, u64>,
    /// Per VO: the default quota of each of its users.
    user_default: HashMap<String, u64>,
    /// Per (VO, VO ID): an override of the default.
    user: HashMap<(String, String), u64>,
    used: Mutex<Used>,
}

impl Quotas {
    pub fn from_config(cfg: &Config) -> Quotas {
        let mut q = Quotas::default();
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

    /// Reserves `size` bytes for `owner`, or says which quota it would exceed.
    pub fn reserve(&self, owner: &Owner, size: u64) -> Result<(), String> {
        let key = (owner.vo.clone(), owner.vo_id.clone());
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let vo_used = used.vo.get(&owner.vo).copied().unwrap_or(0);
        if let Some(limit) = self.vo.get(&owner.vo) {
            if vo_used.saturating_add(size) > *limit {
                return Err(format!(
                    "vo quota exceeded: VO {} uses {vo_used} of {limit} bytes, {size} more asked",
                    owner.vo
                ));
            }
        }
        let user_used = used.user.get(&key).copied().unwrap_or(0);
        if let Some(limit) = self.user_limit(&key) {
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
    }
}
