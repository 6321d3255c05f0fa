//! Whether a depot is offered: the rule that turns the poller's records into
//! a state. One place, used by queries, the admin listing and the status page.

use std::time::Duration;

use serde::Serialize;

use crate::store::DepotStatus;

/// A depot's state as the L-Bone sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not polled yet (just registered).
    Unknown,
    /// Answered the last poll.
    Up,
    /// Missed the last poll(s), fewer than `missed_polls_down`: still offered.
    Late,
    /// Missed `missed_polls_down` polls in a row, never answered, or not
    /// heard of for too long: not offered.
    Down,
}

impl State {
    /// Whether depots in this state are offered to clients.
    pub fn is_available(self) -> bool {
        matches!(self, State::Up | State::Late)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Late => "late",
            State::Down => "down",
        }
    }
}

/// The polling parameters the rule depends on.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub missed_polls_down: u32,
}

impl Liveness {
    /// How long after its last answer a depot counts as down even without
    /// recorded misses (the poller stopped, or another replica's poller
    /// died): `missed_polls_down` intervals plus one, and one timeout.
    pub fn stale_after(&self) -> Duration {
        self.poll_interval * (self.missed_polls_down + 1) + self.poll_timeout
    }

    /// How long an instance's claim on polling a depot holds off the
    /// other instances on the same database: its next poll is due one
    /// interval after the last one started, a poll takes up to one
    /// timeout, plus half an interval of slack. Shorter than
    /// [`Liveness::stale_after`], so a surviving instance takes over
    /// before the depot would count as down for want of polls.
    pub fn claim_lease_ms(&self) -> i64 {
        let lease = self.poll_interval + self.poll_timeout + self.poll_interval / 2;
        i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn state(&self, status: Option<&DepotStatus>, now_ms: i64) -> State {
        let Some(s) = status else {
            return State::Unknown;
        };
        let Some(seen) = s.last_seen_ms else {
            return State::Down;
        };
        let stale_ms = i64::try_from(self.stale_after().as_millis()).unwrap_or(i64::MAX);
        if s.misses >= self.missed_polls_down || now_ms.saturating_sub(seen) > stale_ms {
            State::Down
        } else if s.misses > 0 {
            State::Late
        } else {
            State::Up
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(misses: u32, seen: Option<i64>) -> DepotStatus {
        DepotStatus {
            misses,
            last_poll_ms: Some(10_000),
            last_seen_ms: seen,
            last_error: None,
            capacity: None,
        }
    }

    #[test]
    fn states() {
        let l = Liveness {
            poll_interval: Duration::from_secs(1),
            poll_timeout: Duration::from_secs(2),
            missed_polls_down: 2,
        };
        let now = 10_000;
        assert_eq!(l.state(None, now), State::Unknown);
        assert_eq!(l.state(Some(&status(0, Some(now))), now), State::Up);
        assert_eq!(l.state(Some(&status(1, Some(now))), now), State::Late);
        assert_eq!(l.state(Some(&status(2, Some(now))), now), State::Down);
        assert_eq!(l.state(Some(&status(1, None)), now), State::Down);
        // Stale: 3 intervals + 1 timeout = 5 s without an answer.
        assert_eq!(l.state(Some(&status(0, Some(now - 5_000))), now), State::Up);
        assert_eq!(
            l.state(Some(&status(0, Some(now - 5_001))), now),
            State::Down
        );
        assert!(State::Late.is_available() && !State::Down.is_available());
    }
}
