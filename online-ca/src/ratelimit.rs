//! Failed-login limits, in memory, over a sliding `window`:
//!
//! - per (user, client address): `max_failures`. Guessing one user's
//!   password from one address is slowed to that many guesses per window,
//!   and only that pair is refused: the user logs in from elsewhere;
//! - per client address, all users together: `max_failures_per_address`
//!   (guessing many users from one address);
//! - per user, all addresses together: `max_failures_per_user` (guessing one
//!   user from many addresses);
//! - all failures together: `max_failures_total`.
//!
//! The last two would let a third party with many addresses lock a user
//! out, so an address the user logged in from within `known_address_lifetime`
//! bypasses them (never the first one). Over a limit, logins are refused
//! before any credential is looked at. A client address is an IPv4 address
//! or an IPv6 /64.
//!
//! Every method has an `_at` form taking the time, so tests move the clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries of a map kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;
/// Most (user, address) pairs remembered as known-good.
const MAX_KNOWN: usize = 100_000;

/// The budgets of a [`RateLimiter`] (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_failures: u32,
    pub max_failures_per_address: u32,
    pub max_failures_per_user: u32,
    pub max_failures_total: u32,
    pub window: Duration,
    pub known_address_lifetime: Duration,
}

/// Which budget refused a login, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub budget: Budget,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    UserAtAddress,
    Address,
    User,
    Total,
}

impl Budget {
    /// The message a refused client reads.
    pub fn message(self) -> &'static str {
        match self {
            Budget::UserAtAddress => {
                "too many failed logins for this user from this address; try again later"
            }
            Budget::Address => "too many failed logins from this address; try again later",
            Budget::User => {
                "too many failed logins for this user; try again later, or from an address \
                 this user logged in from before"
            }
            Budget::Total => {
                "too many failed logins at this CA; try again later, or from an address \
                 this user logged in from before"
            }
        }
    }
}

type Pair = (String, IpAddr);

#[derive(Debug, Default)]
struct State {
    pairs: HashMap<Pair, VecDeque<Instant>>,
    addresses: HashMap<IpAddr, VecDeque<Instant>>,
    users: HashMap<String, VecDeque<Instant>>,
    total: VecDeque<Instant>,
    /// Successful logins: (user, address) → when.
    known: HashMap<Pair, Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    state: Mutex<State>,
}

pub use ibp_auth::address::address_key;

/// Drops the failures older than `window` from the front of `q`.
fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        q.pop_front();
    }
}

/// `Some(wait)` when `q` holds `max` failures within the window.
fn over(
    q: Option<&mut VecDeque<Instant>>,
    max: u32,
    now: Instant,
    window: Duration,
) -> Option<Duration> {
    let q = q?;
    expire(q, now, window);
    let max = max.max(1) as usize;
    if q.len() < max {
        return None;
    }
    // Allowed again when enough of the oldest failures age out.
    let until = q[q.len() - max] + window;
    Some(
        until
            .saturating_duration_since(now)
            .max(Duration::from_secs(1)),
    )
}

fn push(q: &mut VecDeque<Instant>, max: u32, now: Instant) {
    q.push_back(now);
    while q.len() > max.max(1) as usize {
        q.pop_front();
    }
}

fn sweep<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, VecDeque<Instant>>,
    now: Instant,
    window: Duration,
) {
    if map.len() >= SWEEP_AT {
        map.retain(|_, q| {
            q.back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
    }
}

impl RateLimiter {
    pub fn new(limits: Limits) -> RateLimiter {
        RateLimiter {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent enough.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err` when a login by `user` (absent: not known before the
    /// credential is checked, as with OIDC) from `ip` is over a budget.
    pub fn check(&self, user: Option<&str>, ip: IpAddr) -> Result<(), Refusal> {
        self.check_at(user, ip, Instant::now())
    }

    pub fn check_at(&self, user: Option<&str>, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let ip = address_key(ip);
        let l = self.limits;
        let w = l.window;
        let mut st = self.lock();
        let refuse = |budget, retry_after| {
            Err(Refusal {
                budget,
                retry_after,
            })
        };
        let pair = user.map(|u| (u.to_string(), ip));
        if let Some(p) = &pair {
            if let Some(wait) = over(st.pairs.get_mut(p), l.max_failures, now, w) {
                return refuse(Budget::UserAtAddress, wait);
            }
        }
        let known = pair.as_ref().is_some_and(|p| {
            st.known
                .get(p)
                .is_some_and(|t| now.saturating_duration_since(*t) < l.known_address_lifetime)
        });
        if known {
            // The user's own address: only the pair's budget applies, so
            // nobody else's failures lock the user out.
            return Ok(());
        }
        if let Some(wait) = over(
            st.addresses.get_mut(&ip),
            l.max_failures_per_address,
            now,
            w,
        ) {
            return refuse(Budget::Address, wait);
        }
        if let Some(u) = user {
            if let Some(wait) = over(st.users.get_mut(u), l.max_failures_per_user, now, w) {
                return refuse(Budget::User, wait);
            }
        }
        if let Some(wait) = over(Some(&mut st.total), l.max_failures_total, now, w) {
            return refuse(Budget::Total, wait);
        }
        Ok(())
    }

    /// Records a failed login.
    pub fn failed(&self, user: Option<&str>, ip: IpAddr) {
        self.failed_at(user, ip, Instant::now())
    }

    pub fn failed_at(&self, user: Option<&str>, ip: IpAddr, now: Instant) {
        let ip = address_key(ip);
        let l = self.limits;
        let mut st = self.lock();
        let st = &mut *st;
        sweep(&mut st.pairs, now, l.window);
        sweep(&mut st.addresses, now, l.window);
        sweep(&mut st.users, now, l.window);
        if let Some(u) = user {
            push(
                st.pairs.entry((u.to_string(), ip)).or_default(),
                l.max_failures,
                now,
            );
            push(
                st.users.entry(u.to_string()).or_default(),
                l.max_failures_per_user,
                now,
            );
        }
        push(
            st.addresses.entry(ip).or_default(),
            l.max_failures_per_address,
            now,
        );
        push(&mut st.total, l.max_failures_total, now);
    }

    /// A successful login: forgets the failures of `user` at `ip` (not
    /// those of the address, or one good account would unlock guessing
    /// others) and remembers `ip` as the user's known address.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.succeeded_at(user, ip, Instant::now())
    }

    pub fn succeeded_at(&self, user: &str, ip: IpAddr, now: Instant) {
        let pair = (user.to_string(), address_key(ip));
        let lifetime = self.limits.known_address_lifetime;
        let mut st = self.lock();
        st.pairs.remove(&pair);
        if st.known.len() >= MAX_KNOWN && !st.known.contains_key(&pair) {
            st.known
                .retain(|_, t| now.saturating_duration_since(*t) < lifetime);
            if st.known.len() >= MAX_KNOWN {
                let oldest = st
                    .known
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    st.known.remove(&k);
                }
            }
        }
        st.known.insert(pair, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn limiter() -> RateLimiter {
        RateLimiter::new(Limits {
            max_failures: 5,
            max_failures_per_address: 20,
            max_failures_per_user: 50,
            max_failures_total: 1000,
            window: W,
            known_address_lifetime: Duration::from_secs(30 * 86_400),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn brute_force_from_one_address_is_refused_then_allowed_after_the_window() {
        let rl = limiter();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for _ in 0..5 {
            assert!(rl.check_at(Some("local:demo"), a, t0).is_ok());
            rl.failed_at(Some("local:demo"), a, t0);
        }
        let r = rl.check_at(Some("local:demo"), a, t0).unwrap_err();
        assert_eq!(r.budget, Budget::UserAtAddress);
        assert!(r.retry_after <= W && r.retry_after >= W - Duration::from_secs(1));
        // Still refused just before the window ends, allowed after it.
        assert!(rl
            .check_at(Some("local:demo"), a, t0 + W - Duration::from_secs(1))
            .is_err());
        assert!(rl.check_at(Some("local:demo"), a, t0 + W).is_ok());
    }

    #[test]
    fn third_party_failures_do_not_lock_the_user_out() {
        let rl = limiter();
        let t0 = Instant::now();
        let (attacker, user) = (ip("192.0.2.66"), ip("198.51.100.1"));
        for _ in 0..5 {
            rl.failed_at(Some("local:demo"), attacker, t0);
        }
        assert!(rl.check_at(Some("local:demo"), attacker, t0).is_err());
        // The user, from elsewhere, is not refused.
        assert!(rl.check_at(Some("local:demo"), user, t0).is_ok());
        // Another user from the attacker's address is not either (yet).
        assert!(rl.check_at(Some("local:other"), attacker, t0).is_ok());
    }

    #[test]
    fn many_users_from_one_address_hit_the_address_budget() {
        let rl = limiter();
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        for i in 0..20 {
            let u = format!("local:u{i}");
            assert!(rl.check_at(Some(&u), a, t0).is_ok(), "{i}");
            rl.failed_at(Some(&u), a, t0);
        }
        let r = rl.check_at(Some("local:u99"), a, t0).unwrap_err();
        assert_eq!(r.budget, Budget::Address);
        // A known user of that address still gets in (only its own budget).
        rl.succeeded_at("local:owner", a, t0 - Duration::from_secs(3600));
        assert!(rl.check_at(Some("local:owner"), a, t0).is_ok());
        // Other addresses are not affected; and after the window, neither is this one.
        assert!(rl.check_at(Some("local:u99"), ip("192.0.2.8"), t0).is_ok());
        assert!(rl.check_at(Some("local:u99"), a, t0 + W).is_ok());
    }

    #[test]
    fn many_addresses_against_one_user_hit_the_user_budget_but_not_its_known_address() {
        let rl = limiter();
        let t0 = Instant::now();
        let home = ip("198.51.100.1");
        rl.succeeded_at("local:demo", home, t0 - Duration::from_secs(86_400));
        for i in 0..50u32 {
            let a = IpAddr::from([203, 0, 113, i as u8]);
            rl.failed_at(Some("local:demo"), a, t0);
        }
        let r = rl
            .check_at(Some("local:demo"), ip("192.0.2.200"), t0)
            .unwrap_err();
        assert_eq!(r.budget, Budget::User);
        assert!(rl.check_at(Some("local:demo"), home, t0).is_ok());
        // The known address expires.
        let later = t0 + Duration::from_secs(30 * 86_400);
        for i in 0..50u32 {
            rl.failed_at(
                Some("local:demo"),
                IpAddr::from([203, 0, 114, i as u8]),
                later,
            );
        }
        assert_eq!(
            rl.check_at(Some("local:demo"), home, later)
                .unwrap_err()
                .budget,
            Budget::User
        );
    }

    #[test]
    fn total_budget_spares_known_addresses() {
        let rl = RateLimiter::new(Limits {
            max_failures_total: 10,
            ..limiter().limits
        });
        let t0 = Instant::now();
        rl.succeeded_at("local:demo", ip("198.51.100.1"), t0);
        for i in 0..10u8 {
            rl.failed_at(
                Some(&format!("local:u{i}")),
                IpAddr::from([203, 0, 113, i]),
                t0,
            );
        }
        assert_eq!(
            rl.check_at(None, ip("192.0.2.1"), t0).unwrap_err().budget,
            Budget::Total
        );
        assert!(rl
            .check_at(Some("local:demo"), ip("198.51.100.1"), t0)
            .is_ok());
    }

    #[test]
    fn success_forgets_the_pair_not_the_address() {
        let rl = RateLimiter::new(Limits {
            max_failures: 3,
            max_failures_per_address: 4,
            ..limiter().limits
        });
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        rl.failed_at(Some("local:a"), a, t0);
        rl.failed_at(Some("local:a"), a, t0);
        rl.succeeded_at("local:a", a, t0);
        assert!(rl.check_at(Some("local:a"), a, t0).is_ok());
        rl.failed_at(Some("local:b"), a, t0);
        rl.failed_at(Some("local:b"), a, t0);
        // Four failures at the address: another user from it is refused.
        assert_eq!(
            rl.check_at(Some("local:c"), a, t0).unwrap_err().budget,
            Budget::Address
        );
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
