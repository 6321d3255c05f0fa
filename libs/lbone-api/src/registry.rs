//! The VO admins' routes: depot registrations (`/v1/vos/{vo}/depots`) and
//! members removed from depot grants (`/v1/vos/{vo}/removed`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::location::Location;

/// `POST /v1/vos/{vo}/depots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDepot {
    pub name: String,
    pub host: String,
    /// Legacy IBP port (polled).
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
    pub location: Location,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Policy: largest allocation (bytes) the VO may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Policy: longest allocation (seconds) the VO may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<u64>,
}

/// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /v1/vos/{vo}/depots/{name}`: absent fields stay, `null` clears
/// an optional one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepotChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_port: Option<Option<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub place: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_size: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Option<u64>>,
}

/// `DELETE /v1/vos/{vo}/depots/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepotRemoved {
    pub vo: String,
    /// The depot name.
    pub removed: String,
}

/// `PUT` (remove) and `DELETE` (restore) `/v1/vos/{vo}/removed/{vo_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoval {
    pub vo: String,
    pub vo_id: String,
    /// Whether the member is removed now.
    pub removed: bool,
    /// After a removal: whether they had been removed already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub already: Option<bool>,
}

/// One member removed from depot grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMember {
    pub vo_id: String,
    /// VO ID of the admin who removed them.
    pub removed_by: String,
    /// Unix seconds.
    pub removed_at: i64,
}

/// `GET /v1/vos/{vo}/removed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMembers {
    pub vo: String,
    pub removed: Vec<RemovedMember>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_bodies_tell_null_from_absent() {
        let c: DepotChanges = serde_json::from_str(r#"{"tls_port": null, "place": "X"}"#).unwrap();
        assert_eq!(c.tls_port, Some(None));
        assert_eq!(c.place, Some(Some("X".into())));
        assert_eq!(c.max_size, None);
        assert!(serde_json::from_str::<DepotChanges>(r#"{"bogus": 1}"#).is_err());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"tls_port":null,"place":"X"}"#
        );
    }
}
