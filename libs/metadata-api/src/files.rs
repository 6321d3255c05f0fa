//! Files and directories: `stat`, `list`, `mkdir`, `put`, `get`, `ticket`,
//! `move`, `delete` and the ACL routes. Paths travel in request bodies
//! (never in URLs), so any UTF-8 name works without escaping.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::access::AclEntry;
use crate::keys::WrappedKey;

/// `POST /v1/stat`, `/v1/ticket`, `/v1/acl/get`, `/v1/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    pub path: String,
}

/// `POST /v1/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    pub path: String,
    /// The name to continue after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Most entries (server default 1000, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /v1/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    pub path: String,
    /// Also the missing ancestors; an existing directory is no error.
    #[serde(default)]
    pub parents: bool,
}

/// `POST /v1/put`. The exNode is borrowed by a client (a large document
/// is not copied to be sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest<'a> {
    pub path: String,
    /// The version the upload replaces; 0 creates the file.
    pub base_version: u64,
    /// The exNode document (XML).
    pub exnode: Cow<'a, str>,
    #[serde(default)]
    pub wrapped_keys: Vec<WrappedKey>,
}

/// `POST /v1/get`, `/v1/delete`, `/v1/keys/escrow`: a path and a version
/// (`None`: the current one; for `delete`, all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `POST /v1/move`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
}

/// `POST /v1/acl/set`: `None` leaves that list as it is, an empty list
/// clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSetRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<AclEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Vec<AclEntry>>,
}

/// A directory or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
}

/// An entry as `stat`, `list` and `mkdir` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    pub path: String,
    pub kind: EntryKind,
    /// File UUID (files) or directory id.
    pub id: String,
    /// `user:ID@VO`; none for a VO root.
    pub owner: Option<String>,
    /// Current version (0: none yet; directories 0).
    pub version: u64,
    /// Logical size of the current version, bytes.
    pub size: u64,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// `stat` of a file: how many versions are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<u64>,
    /// `stat` of a file: bytes stored on depots by all versions kept, each
    /// allocation once (versions made by maintenance share most of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<u64>,
    /// `stat`: the caller's rights (`rwda` letters, `-` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<String>,
    /// A file: the earliest expiry (Unix seconds) of the current version's
    /// allocations, as its exNode records them (what a refresh must come
    /// before). From then on some piece is gone: the file is *damaged*
    /// (`lors repair` rebuilds it from what is left) until
    /// `readable_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// A file: until when every byte of the current version can be read
    /// by its exNode's expiry times (per range, the last replica's expiry,
    /// or erasure coded the k-th share's; the earliest over the ranges).
    /// From then on the file is *expired*: some range is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readable_until: Option<i64>,
    /// A file whose current exNode the manager could not read (a version
    /// stored by an older release that does not parse): damaged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unreadable: bool,
    /// A file: the modification time (Unix seconds) of the source file
    /// its current version was copied from, when the uploader recorded
    /// one (the exNode's `mtime` metadata: `lors cp -r`, `lors sync`);
    /// `lors sync` compares it, and downloads set it on the local copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A file's state at time `now` by its exNode's expiry times (no depot is
/// asked): what `lors ls -l` marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every allocation is within its time (or has no known expiry).
    Ok,
    /// Some allocation has expired, or the exNode cannot be read; every
    /// byte may still be readable from the rest (`lors repair`).
    Damaged,
    /// Some range of the file has no live allocation left.
    Expired,
}

impl Health {
    /// The state of a version with these expiry times at `now`.
    pub fn at(
        expires: Option<i64>,
        readable_until: Option<i64>,
        unreadable: bool,
        now: i64,
    ) -> Health {
        if readable_until.is_some_and(|t| t <= now) {
            Health::Expired
        } else if unreadable || expires.is_some_and(|t| t <= now) {
            Health::Damaged
        } else {
            Health::Ok
        }
    }
}

impl EntryInfo {
    /// The last component of the path (the VO for a VO root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// A file's state at `now` ([`Health::at`]); `None` for a directory
    /// or a file without a version.
    pub fn health(&self, now: i64) -> Option<Health> {
        (self.kind == EntryKind::File && self.version > 0)
            .then(|| Health::at(self.expires, self.readable_until, self.unreadable, now))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub path: String,
    pub entries: Vec<EntryInfo>,
    /// The name to continue after; none on the last page.
    pub next_after: Option<String>,
}

/// What `put` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub path: String,
    /// The file UUID.
    pub id: String,
    /// The new version (`base_version + 1`).
    pub version: u64,
    pub size: u64,
    pub stored: u64,
    /// Old versions the file's retention dropped with this put, each with
    /// the MANAGE capabilities of allocations no remaining version names:
    /// the client releases them (as after `delete`). Empty from a manager
    /// without retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<Released>,
}

impl PutResult {
    /// Every MANAGE capability to release, each once.
    pub fn released_capabilities(&self) -> Vec<&str> {
        unique_capabilities(&self.pruned)
    }
}

/// `POST /v1/retention`: a directory's retention (how many versions of
/// each file under it are kept). `keep` sets it, `inherit` clears it (the
/// nearest directory above with a setting decides again, else the VO's,
/// else the manager's default); neither: only read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub inherit: bool,
}

/// The retention that applies under a directory (or to a file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub path: String,
    /// Versions kept of each file (the current one included).
    pub keep: u64,
    /// Where `keep` comes from: `directory /VO/dir`, `vo VO` (the
    /// operator's setting for the VO) or `default`.
    pub source: String,
    /// The directory's own setting, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<u64>,
}

/// One version of a file, as `versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    /// Whether it is the file's current version.
    pub current: bool,
    /// Logical size, bytes.
    pub size: u64,
    /// Bytes its allocations hold on depots.
    pub stored: u64,
    /// Bytes of allocations no other version names (what removing it
    /// frees).
    pub exclusive: u64,
    pub key_id: Option<String>,
    /// `user:ID@VO`.
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readable_until: Option<i64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub unreadable: bool,
}

/// The answer of `POST /v1/versions` (a `PathRequest` of a file): its
/// versions, newest first, and the retention that keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub path: String,
    pub id: String,
    pub current_version: u64,
    pub retention: Retention,
    pub versions: Vec<VersionInfo>,
}

/// The answer of `get`: one version of a file with a ticket for its
/// allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAnswer {
    pub path: String,
    /// The file UUID.
    pub id: String,
    pub version: u64,
    pub current_version: u64,
    pub size: u64,
    pub stored: u64,
    /// The exNode (canonical XML; a reader's view holds no WRITE or
    /// MANAGE capabilities), signed by the metadata manager for this file
    /// and version (`exnode::signature`, docs/identity.md).
    pub exnode: String,
    /// Names the data key of an encrypted file.
    pub key_id: Option<String>,
    /// The data key wrapped for the caller, if there is one.
    pub wrapped_key: Option<String>,
    /// `FileTicket` to present to the depots when loading.
    pub ticket: String,
    pub ticket_not_after: i64,
    /// The caller's rights on the file.
    pub rights: String,
}

/// A fresh ticket for a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub path: String,
    pub id: String,
    pub ticket: String,
    pub ticket_not_after: i64,
}

/// What `move` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub from: String,
    pub to: String,
}

/// The allocations of one deleted version, to release on the depots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub version: u64,
    /// MANAGE capabilities (`ibp://host:port/...`), each once.
    pub manage: Vec<String>,
    /// Why no capabilities are listed: this version's exNode, or another
    /// kept version's, could not be read (its allocations are unknown, so
    /// nothing it may share is released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `delete` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub path: String,
    pub released: Vec<Released>,
}

impl Deleted {
    /// Every MANAGE capability of the deleted versions, each once (versions
    /// may share allocations), in order.
    pub fn manage_capabilities(&self) -> Vec<&str> {
        unique_capabilities(&self.released)
    }
}

fn unique_capabilities(released: &[Released]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    released
        .iter()
        .flat_map(|r| r.manage.iter().map(String::as_str))
        .filter(|c| seen.insert(*c))
        .collect()
}

/// An entry's ACL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub path: String,
    /// The owner holds every right whatever the ACL says.
    pub owner: Option<String>,
    pub access: Vec<AclEntry>,
    /// Directories: the ACL new entries in it start with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Vec<AclEntry>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let page: ListPage = serde_json::from_str(
            r#"{"path":"/vo1","entries":[{"path":"/vo1/d","kind":"dir","id":"x","owner":"user:u1@vo1",
            "version":0,"size":0,"created_at":1,"updated_at":2}],"next_after":null}"#,
        )
        .unwrap();
        assert_eq!(page.entries[0].kind, EntryKind::Dir);
        assert_eq!(page.entries[0].name(), "d");
        let d: Deleted = serde_json::from_str(
            r#"{"path":"/vo1/f","released":[{"version":1,"manage":["ibp://a:1/1#k/1/MANAGE","ibp://b:1/1#k/1/MANAGE"]},
            {"version":2,"manage":["ibp://a:1/1#k/1/MANAGE"]},{"version":3,"manage":[],"error":"bad"}]}"#,
        )
        .unwrap();
        assert_eq!(d.manage_capabilities().len(), 2);
        assert_eq!(d.released[2].error.as_deref(), Some("bad"));
    }

    #[test]
    fn puts_and_entries_of_older_managers_still_parse() {
        // Without `pruned`, `expires`, `readable_until`, `unreadable`.
        let p: PutResult =
            serde_json::from_str(r#"{"path":"/vo1/f","id":"x","version":2,"size":1,"stored":1}"#)
                .unwrap();
        assert!(p.pruned.is_empty() && p.released_capabilities().is_empty());
        let e: EntryInfo = serde_json::from_str(
            r#"{"path":"/vo1/f","kind":"file","id":"x","owner":null,"version":1,"size":1,
            "created_at":1,"updated_at":2}"#,
        )
        .unwrap();
        assert_eq!(e.health(100), Some(Health::Ok));
        // And an answer without them writes none of them.
        let back = serde_json::to_value(&e).unwrap();
        assert!(back.get("expires").is_none() && back.get("unreadable").is_none());
    }

    #[test]
    fn health_by_expiry() {
        assert_eq!(Health::at(None, None, false, 10), Health::Ok);
        assert_eq!(Health::at(Some(20), Some(30), false, 10), Health::Ok);
        assert_eq!(Health::at(Some(20), Some(30), false, 20), Health::Damaged);
        assert_eq!(Health::at(Some(20), Some(30), false, 30), Health::Expired);
        assert_eq!(Health::at(None, None, true, 10), Health::Damaged);
        assert_eq!(Health::at(Some(5), Some(5), true, 10), Health::Expired);
    }

    #[test]
    fn requests_refuse_unknown_fields_and_skip_absent_ones() {
        assert!(serde_json::from_str::<PathRequest>(r#"{"path":"/a","x":1}"#).is_err());
        let v = VersionRequest {
            path: "/a".into(),
            version: None,
        };
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"path":"/a"}"#);
        let m: MkdirRequest = serde_json::from_str(r#"{"path":"/a"}"#).unwrap();
        assert!(!m.parents);
    }
}
