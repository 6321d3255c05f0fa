//! Choosing depots for a query: which registrations of the caller's VO can
//! take an allocation of the asked size, duration and reliability, and in
//! which order they are offered. Pure functions over the store's rows.

use crate::geo::Location;
use crate::liveness::Liveness;
use crate::store::DepotRow;

pub use lbone_api::Reliability;

/// What the caller needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// Bytes of one allocation.
    pub size: u64,
    /// Seconds the allocation must live.
    pub duration: u64,
    pub reliability: Reliability,
    /// Where the caller is: depots nearest to it come first.
    pub origin: Option<Location>,
}

/// A depot that suits the need.
#[derive(Debug, Clone)]
pub struct Suitable<'a> {
    pub row: &'a DepotRow,
    /// Great-circle distance from the origin (if one was given).
    pub distance_km: Option<f64>,
    /// Free space for the reliability asked (sum over the depot's resources).
    pub free: u64,
    /// Longest allocation the depot grants the VO (the smaller of its own
    /// limit and the registration's; negative: no limit).
    pub max_duration: i64,
    pub last_seen_ms: i64,
}

/// The longest allocation a depot grants the VO: the smaller of the
/// registration's limit (`None`: none) and the depot's own (negative:
/// none); negative when neither limits it.
fn effective_max_duration(registered: Option<u64>, depot: i64) -> i64 {
    let registered = registered.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    match (registered, depot >= 0) {
        (Some(r), true) => r.min(depot),
        (Some(r), false) => r,
        (None, _) => depot,
    }
}

/// Every available depot among `rows` that can take the allocation — within
/// its VO's policy, the depot's free space (of a single resource) and its
/// maximum duration — nearest first (when there is an origin), then most
/// free space, then by name.
pub fn suitable<'a>(
    rows: &'a [DepotRow],
    need: &Need,
    liveness: &Liveness,
    now_ms: i64,
) -> Vec<Suitable<'a>> {
    let mut out: Vec<Suitable<'a>> = rows
        .iter()
        .filter_map(|row| {
            let status = row.status.as_ref()?;
            if !liveness.state(Some(status), now_ms).is_available() {
                return None;
            }
            let cap = status.capacity.as_ref()?;
            let reg = &row.registration;
            if reg.max_size.is_some_and(|m| need.size > m)
                || reg.max_duration.is_some_and(|m| need.duration > m)
            {
                return None;
            }
            let (free, largest) = match need.reliability {
                Reliability::Hard => (cap.hard_free, cap.largest_hard_free),
                Reliability::Soft => (cap.soft_free, cap.largest_soft_free),
            };
            if need.size > largest {
                return None;
            }
            if cap.max_duration >= 0 && need.duration > u64::try_from(cap.max_duration).unwrap_or(0)
            {
                return None;
            }
            Some(Suitable {
                row,
                distance_km: need.origin.map(|o| o.distance_km(&reg.location)),
                free,
                max_duration: effective_max_duration(reg.max_duration, cap.max_duration),
                last_seen_ms: status.last_seen_ms.unwrap_or(0),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let by_distance = match (a.distance_km, b.distance_km) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => std::cmp::Ordering::Equal,
        };
        by_distance
            .then(b.free.cmp(&a.free))
            .then_with(|| a.row.registration.name.cmp(&b.row.registration.name))
    });
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{Capacity, DepotStatus, Registration};

    fn row(name: &str, lat: f64, lon: f64, free: u64, misses: u32) -> DepotRow {
        DepotRow {
            registration: Registration {
                vo: "vo1".into(),
                name: name.into(),
                host: "127.0.0.1".into(),
                port: 6714,
                tls_port: None,
                location: Location::new(lat, lon).unwrap(),
                place: None,
                max_size: Some(1 << 30),
                max_duration: None,
                registered_by: "admin".into(),
                created_at: 0,
                updated_at: 0,
            },
            status: Some(DepotStatus {
                misses,
                last_poll_ms: Some(1_000),
                last_seen_ms: Some(1_000),
                last_error: None,
                capacity: Some(Capacity {
                    hard_capacity: free,
                    hard_used: 0,
                    hard_free: free,
                    soft_capacity: 2 * free,
                    soft_used: 0,
                    soft_free: 2 * free,
                    largest_hard_free: free,
                    largest_soft_free: 2 * free,
                    max_duration: 86_400,
                    resources: 1,
                }),
            }),
        }
    }

    fn names(s: &[Suitable<'_>]) -> Vec<String> {
        s.iter().map(|x| x.row.registration.name.clone()).collect()
    }

    const LIVE: Liveness = Liveness {
        poll_interval: Duration::from_secs(60),
        poll_timeout: Duration::from_secs(10),
        missed_polls_down: 2,
    };

    #[test]
    fn order_and_filters() {
        let rows = vec![
            row("prague", 50.08, 14.44, 100 << 20, 0),
            row("brno", 49.19, 16.61, 50 << 20, 1),
            row("knoxville", 35.96, -83.92, 900 << 20, 0),
            row("dead", 49.2, 16.6, 900 << 20, 2),
        ];
        let mut need = Need {
            size: 10 << 20,
            duration: 3600,
            reliability: Reliability::Hard,
            origin: Some(Location::new(49.2, 16.6).unwrap()),
        };
        let s = suitable(&rows, &need, &LIVE, 2_000);
        assert_eq!(names(&s), ["brno", "prague", "knoxville"]);
        assert!(s[0].distance_km.unwrap() < s[1].distance_km.unwrap());
        need.origin = None;
        assert_eq!(
            names(&suitable(&rows, &need, &LIVE, 2_000)),
            ["knoxville", "prague", "brno"]
        );
        // Too big for brno's free space; SOFT has twice the room.
        need.size = 60 << 20;
        assert_eq!(
            names(&suitable(&rows, &need, &LIVE, 2_000)),
            ["knoxville", "prague"]
        );
        need.reliability = Reliability::Soft;
        assert_eq!(suitable(&rows, &need, &LIVE, 2_000).len(), 3);
        // Beyond the VO's policy (1 GiB) or the depot's maximum duration.
        need.size = (1 << 30) + 1;
        assert!(suitable(&rows, &need, &LIVE, 2_000).is_empty());
        need.size = 1;
        need.duration = 86_401;
        assert!(suitable(&rows, &need, &LIVE, 2_000).is_empty());
    }

    #[test]
    fn the_max_duration_offered_is_the_smaller_of_depot_and_registration() {
        assert_eq!(effective_max_duration(None, 86_400), 86_400);
        assert_eq!(effective_max_duration(None, -1), -1);
        assert_eq!(effective_max_duration(Some(3_600), 86_400), 3_600);
        assert_eq!(effective_max_duration(Some(90_000), 86_400), 86_400);
        assert_eq!(effective_max_duration(Some(3_600), -1), 3_600);
    }
}
