//! `POST /v1/query`: depots for an allocation, each with a grant.
//!
//! `{vo?, count?, size, duration, reliability, location? | place?}` →
//! `{vo, vo_id, requested, returned, matching, size, duration,
//! reliability, origin, issued, depots: [...], note?}`. Each offered depot
//! carries a `DepotGrant` signed by the L-Bone and bound to the caller's
//! proxy key, for the address in `address` (`host:tls_port` if the depot
//! has a TLS port, else `host:port`).

use serde::{Deserialize, Serialize};

use crate::location::Location;

/// The allocation's reliability, as IBP names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Reliability {
    /// Kept until it expires; counted against the depot's HARD space.
    #[default]
    #[serde(alias = "HARD")]
    Hard,
    /// May be reclaimed under space pressure; counted against all space.
    #[serde(alias = "SOFT")]
    Soft,
}

/// `POST /v1/query`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The VO to use: one the caller carries attributes for (default: the
    /// first VO of a multi-VO proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vo: Option<String>,
    /// How many depots (default: every suitable one, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Bytes of one allocation.
    #[serde(default)]
    pub size: u64,
    /// Seconds the allocation must live.
    #[serde(default)]
    pub duration: u64,
    #[serde(default)]
    pub reliability: Reliability,
    /// Where the caller is (nearest depots first)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// ... or a place registered in the VO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// A depot the L-Bone offers, with its grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferedDepot {
    pub name: String,
    pub host: String,
    /// Legacy IBP port.
    pub port: u16,
    /// Secure (TLS) port, if the depot has one.
    pub tls_port: Option<u16>,
    /// The address the grant names (`host:tls_port` or `host:port`).
    pub address: String,
    pub location: Location,
    pub place: Option<String>,
    /// From the location asked about (if any), in km.
    pub distance_km: Option<f64>,
    /// Free bytes for the reliability asked.
    pub free: u64,
    /// Longest allocation the depot grants, seconds (negative: no limit):
    /// the smaller of the depot's own limit and its registration's.
    pub max_duration: i64,
    /// When the depot last answered the L-Bone (Unix milliseconds).
    pub last_seen_ms: i64,
    /// The `DepotGrant` to present to the depot (`AUTH`).
    pub grant: String,
    pub grant_not_after: i64,
}

/// The whole answer to a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub vo: String,
    pub vo_id: String,
    /// The count asked for (`None`: all suitable depots).
    pub requested: Option<u32>,
    /// How many depots are in `depots`.
    pub returned: usize,
    /// How many depots suit the request (before the count applies).
    pub matching: usize,
    pub size: u64,
    pub duration: u64,
    pub reliability: Reliability,
    /// The point distances are measured from, if any.
    pub origin: Option<Location>,
    pub issued: i64,
    pub depots: Vec<OfferedDepot>,
    /// Set when fewer depots came back than were requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let q: QueryRequest = serde_json::from_str(r#"{"size":1,"reliability":"SOFT"}"#).unwrap();
        assert_eq!(q.reliability, Reliability::Soft);
        assert_eq!(q.count, None);
        assert!(serde_json::from_str::<QueryRequest>(r#"{"bogus":1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&QueryRequest::default()).unwrap(),
            r#"{"size":0,"duration":0,"reliability":"hard"}"#
        );
    }
}
