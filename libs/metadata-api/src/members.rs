//! Who the caller is (`whoami`), a VO's members as the manager knows them
//! (VO admins), and usage against the manager's quotas.

use serde::{Deserialize, Serialize};

/// A group of the caller's VO attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
}

/// What `GET /v1/whoami` says about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub vo: String,
    pub vo_id: String,
    /// `user:VO_ID@VO`: how ACLs and wrapped keys name the caller.
    pub principal: String,
    #[serde(default)]
    pub groups: Vec<Group>,
    /// The subject of the caller's certificate (informative only).
    pub subject: String,
    /// In the admin group of their VO.
    pub admin: bool,
    /// The registered key-wrapping public key, if any.
    pub public_key: Option<String>,
    /// When the proxy's attributes expire (Unix seconds).
    pub credential_not_after: i64,
    /// The display name the caller chose (`lors whoami --set-name`).
    #[serde(default)]
    pub display_name: Option<String>,
    /// The other VOs a multi-VO proxy carries (the answer is for the VO
    /// the request acted for: `vo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_vos: Vec<String>,
}

/// `POST /v1/vos/{vo}/members`, `.../members/remove`, `.../members/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    pub vo_id: String,
}

/// A member of a VO as this metadata manager knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub vo_id: String,
    pub subject: String,
    /// Unix seconds.
    pub first_seen: i64,
    pub has_public_key: bool,
    pub removed_at: Option<i64>,
    /// `user:ID@VO` of the admin who removed them.
    pub removed_by: Option<String>,
    /// The display name the member chose, if any.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `GET /v1/vos/{vo}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub vo: String,
    pub members: Vec<Member>,
}

/// A member added, removed or restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub vo: String,
    pub vo_id: String,
    /// After remove/restore: whether they are removed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
}

/// `POST /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    /// `None`: the caller's VO (the only one it may ask about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vo: Option<String>,
}

/// One owner's usage in a VO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub owner: String,
    pub files: u64,
    pub versions: u64,
    /// Bytes: the sizes of the files' current versions. Old versions kept
    /// by the retention are not counted here (they are earlier states of
    /// the same files); what they hold on depots is in `stored`.
    pub logical: u64,
    /// Bytes stored on depots (replicas, shares) by every kept version,
    /// each allocation counted once: the versions refresh, trim, augment
    /// and repair make share their base's allocations, and count only
    /// what they add. What the depots hold for the owner's files.
    pub stored: u64,
    /// Entries (files and directories) the owner holds in the manager
    /// (0 from a manager that does not count them).
    #[serde(default)]
    pub entries: u64,
    /// Bytes of exNode XML the manager keeps for the owner's versions
    /// (0 from a manager that does not count them).
    #[serde(default)]
    pub exnode_bytes: u64,
}

/// The metadata manager's limits on what it keeps (`None`: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLimits {
    #[serde(default)]
    pub user_entries: Option<u64>,
    #[serde(default)]
    pub user_exnode_bytes: Option<u64>,
    #[serde(default)]
    pub vo_entries: Option<u64>,
    #[serde(default)]
    pub vo_exnode_bytes: Option<u64>,
}

/// What a whole VO holds in the manager (counted against the VO limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoUsed {
    #[serde(default)]
    pub entries: u64,
    #[serde(default)]
    pub exnode_bytes: u64,
}

/// Sums over a VO (VO admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotal {
    pub files: u64,
    pub versions: u64,
    pub logical: u64,
    pub stored: u64,
}

/// Usage of a VO: the caller's own row, or every owner's and the total
/// for its admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub vo: String,
    pub users: Vec<UsageRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<UsageTotal>,
    /// The manager's limits; `None` from a manager that does not send them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<UsageLimits>,
    /// The VO's entries and exNode bytes (what the VO limits count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vo_used: Option<VoUsed>,
}

/// The `quota` field of a 403 answer refused by a quota: which limit,
/// whose, its value, what was in use and what the request adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaDetail {
    /// `user_entries`, `user_exnode_bytes`, `vo_entries` or
    /// `vo_exnode_bytes`.
    pub limit: String,
    pub vo: String,
    /// The owner charged (`user:ID@VO`); for a VO limit too.
    pub owner: String,
    pub max: u64,
    pub used: u64,
    pub request: u64,
}
