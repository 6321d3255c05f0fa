//! Failed-login limits, in memory: at most `max_failures` failures per key
//! (a user, or a client address) within a sliding `window`. Over the limit,
//! logins are refused before any credential is looked at.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked before expired entries are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(max_failures: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max_failures: max_failures.max(1) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        // A panic while holding the lock leaves the map consistent enough.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` when any of `keys` is over the limit.
    pub fn check(&self, keys: &[String]) -> Result<(), Duration> {
        self.check_at(keys, Instant::now())
    }

    fn check_at(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let mut wait = Duration::ZERO;
        for k in keys {
            if let Some(q) = map.get_mut(k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max_failures {
                    // Allowed again when enough of the oldest failures age out.
                    let idx = q.len() - self.max_failures;
                    let until = q[idx] + self.window;
                    wait = wait.max(until.saturating_duration_since(now));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    /// Records a failure for every key.
    pub fn failed(&self, keys: &[String]) {
        self.failed_at(keys, Instant::now())
    }

    fn failed_at(&self, keys: &[String], now: Instant) {
        let mut map = self.lock();
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in keys {
            let q = map.entry(k.clone()).or_default();
            q.push_back(now);
            while q.len() > self.max_failures {
                q.pop_front();
            }
        }
    }

    /// Forgets the failures of `key` (a user who logged in successfully;
    /// never an address, or one good account would unlock guessing others).
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_expiry() {
        let rl = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let keys = vec!["user:a".to_string(), "ip:1".to_string()];
        for _ in 0..3 {
            assert!(rl.check_at(&keys, t0).is_ok());
            rl.failed_at(&keys, t0);
        }
        let wait = rl.check_at(&keys, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(59));
        // Another user from the same address is limited too.
        assert!(rl.check_at(&["user:b".into(), "ip:1".into()], t0).is_err());
        // The same user from elsewhere as well.
        assert!(rl.check_at(&["user:a".into(), "ip:2".into()], t0).is_err());
        // Success forgets the user, not the address.
        rl.succeeded("user:a");
        assert!(rl.check_at(&["user:a".into()], t0).is_ok());
        assert!(rl.check_at(&["ip:1".into()], t0).is_err());
        // After the window, allowed again.
        assert!(rl.check_at(&keys, t0 + Duration::from_secs(61)).is_ok());
    }
}
