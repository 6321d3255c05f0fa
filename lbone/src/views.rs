//! What the API and the status page show of a depot: JSON views and the
//! operators' HTML page (every string escaped).

use std::fmt::Write as _;

use serde::Serialize;

use crate::geo::Location;
use crate::liveness::{Liveness, State};
use crate::store::{DepotRow, Registration};
use ibp_service::units::{format_secs, format_size, format_utc};

/// `host:port` with IPv6 literals in brackets.
pub fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The depot address a grant names: the TLS port if registered, else the
/// legacy port.
pub fn grant_address(r: &Registration) -> String {
    address(&r.host, r.tls_port.unwrap_or(r.port))
}

/// A VO's limits on what its members may ask of a depot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyView {
    /// Largest allocation in bytes (`null`: no limit beyond the depot's).
    pub max_size: Option<u64>,
    /// Longest allocation in seconds (`null`: no limit beyond the depot's).
    pub max_duration: Option<u64>,
}

/// Bytes of one kind of space.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpaceView {
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
}

/// The poller's view.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusView {
    pub state: State,
    /// Whether the depot is offered to clients.
    pub available: bool,
    /// Consecutive missed polls.
    pub misses: u32,
    pub last_poll_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub last_error: Option<String>,
    /// HARD space.
    pub hard: Option<SpaceView>,
    /// All space (HARD + SOFT allocations; IBP's "total").
    pub soft: Option<SpaceView>,
    /// Longest allocation the depot grants, seconds (negative: no limit).
    pub max_duration: Option<i64>,
    pub resources: Option<u32>,
}

/// A registration and its depot's status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DepotView {
    pub vo: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls_port: Option<u16>,
    /// The address grants for this depot name (`host:tls_port` or `host:port`).
    pub address: String,
    pub location: Location,
    pub place: Option<String>,
    pub policy: PolicyView,
    /// VO ID of the admin who last registered or changed it (admin views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: StatusView,
}

impl DepotView {
    pub fn new(row: &DepotRow, live: &Liveness, now_ms: i64, admin: bool) -> DepotView {
        let r = &row.registration;
        let state = live.state(row.status.as_ref(), now_ms);
        let s = row.status.as_ref();
        let cap = s.and_then(|s| s.capacity.as_ref());
        DepotView {
            vo: r.vo.clone(),
            name: r.name.clone(),
            host: r.host.clone(),
            port: r.port,
            tls_port: r.tls_port,
            address: grant_address(r),
            location: r.location,
            place: r.place.clone(),
            policy: PolicyView {
                max_size: r.max_size,
                max_duration: r.max_duration,
            },
            registered_by: admin.then(|| r.registered_by.clone()),
            created_at: r.created_at,
            updated_at: r.updated_at,
            status: StatusView {
                state,
                available: state.is_available(),
                misses: s.map_or(0, |s| s.misses),
                last_poll_ms: s.and_then(|s| s.last_poll_ms),
                last_seen_ms: s.and_then(|s| s.last_seen_ms),
                last_error: s.and_then(|s| s.last_error.clone()),
                hard: cap.map(|c| SpaceView {
                    capacity: c.hard_capacity,
                    used: c.hard_used,
                    free: c.hard_free,
                }),
                soft: cap.map(|c| SpaceView {
                    capacity: c.soft_capacity,
                    used: c.soft_used,
                    free: c.soft_free,
                }),
                max_duration: cap.map(|c| c.max_duration),
                resources: cap.map(|c| c.resources),
            },
        }
    }
}

/// The depots of one VO.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VoView {
    pub vo: String,
    pub depots: Vec<DepotView>,
}

/// `GET /status.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusPage {
    pub generated_ms: i64,
    pub poll_interval_ms: u64,
    pub missed_polls_down: u32,
    pub vos: Vec<VoView>,
}

impl StatusPage {
    /// Groups rows (ordered by VO, then name) per VO.
    pub fn new(rows: &[DepotRow], live: &Liveness, now_ms: i64) -> StatusPage {
        let mut vos: Vec<VoView> = Vec::new();
        for row in rows {
            let view = DepotView::new(row, live, now_ms, false);
            match vos.last_mut() {
                Some(v) if v.vo == view.vo => v.depots.push(view),
                _ => vos.push(VoView {
                    vo: view.vo.clone(),
                    depots: vec![view],
                }),
            }
        }
        StatusPage {
            generated_ms: now_ms,
            poll_interval_ms: u64::try_from(live.poll_interval.as_millis()).unwrap_or(u64::MAX),
            missed_polls_down: live.missed_polls_down,
            vos,
        }
    }

    /// The operators' page: one table per VO.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(4096);
        let now = self.generated_ms / 1000;
        h.push_str(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"refresh\" content=\"30\">\n<title>L-Bone depot status</title>\n\
             <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;\
             margin-bottom:1.5em}th,td{border:1px solid #999;padding:.25em .5em;text-align:left}\
             .up{color:#060}.late{color:#a60}.down,.unknown{color:#a00}</style>\n</head>\n<body>\n\
             <h1>L-Bone depot status</h1>\n",
        );
        let _ = writeln!(
            h,
            "<p>Generated {}. Depots are polled every {}; {} missed polls in a row make a depot unavailable.</p>",
            esc(&format_utc(now)),
            esc(&format_secs(i64::try_from(self.poll_interval_ms / 1000).unwrap_or(i64::MAX))),
            self.missed_polls_down
        );
        if self.vos.is_empty() {
            h.push_str("<p>No depots are registered.</p>\n");
        }
        for vo in &self.vos {
            let up = vo.depots.iter().filter(|d| d.status.available).count();
            let _ = writeln!(
                h,
                "<h2>VO {}</h2>\n<p>{} of {} depots available.</p>",
                esc(&vo.vo),
                up,
                vo.depots.len()
            );
            h.push_str(
                "<table>\n<tr><th>Depot</th><th>Address</th><th>Location</th><th>State</th>\
                 <th>HARD free / capacity</th><th>All free / capacity</th><th>Max duration</th>\
                 <th>VO policy</th><th>Last seen</th><th>Last error</th></tr>\n",
            );
            for d in &vo.depots {
                h.push_str(&depot_row(d, now));
            }
            h.push_str("</table>\n");
        }
        h.push_str(
            "<p>The same data as JSON: <a href=\"/status.json\">/status.json</a>.</p>\n</body>\n</html>\n",
        );
        h
    }
}

fn space(s: &Option<SpaceView>) -> String {
    match s {
        Some(s) => format!("{} / {}", format_size(s.free), format_size(s.capacity)),
        None => "-".into(),
    }
}

fn depot_row(d: &DepotView, now: i64) -> String {
    let mut address = address(&d.host, d.port);
    if let Some(t) = d.tls_port {
        address.push_str(&format!(" (TLS {t})"));
    }
    let location = match &d.place {
        Some(p) => format!("{p} ({})", d.location),
        None => d.location.to_string(),
    };
    let last_seen = match d.status.last_seen_ms {
        Some(ms) => format!(
            "{} ({} ago)",
            format_utc(ms / 1000),
            format_secs((now - ms / 1000).max(0))
        ),
        None => "never".into(),
    };
    let state = d.status.state.as_str();
    let max_duration = d
        .status
        .max_duration
        .map_or_else(|| "-".into(), format_secs);
    let policy = format!(
        "size {}, duration {}",
        d.policy.max_size.map_or_else(|| "any".into(), format_size),
        d.policy.max_duration.map_or_else(
            || "any".into(),
            |s| format_secs(i64::try_from(s).unwrap_or(i64::MAX))
        )
    );
    let misses = if d.status.misses > 0 {
        format!(" ({} missed)", d.status.misses)
    } else {
        String::new()
    };
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        esc(&d.name),
        esc(&address),
        esc(&location),
        esc(state),
        esc(state),
        esc(&misses),
        esc(&space(&d.status.hard)),
        esc(&space(&d.status.soft)),
        esc(&max_duration),
        esc(&policy),
        esc(&last_seen),
        esc(d.status.last_error.as_deref().unwrap_or("")),
    )
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(address("::1", 6714), "[::1]:6714");
        assert_eq!(address("depot.example.org", 6714), "depot.example.org:6714");
    }
}
