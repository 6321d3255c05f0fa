//! The metadata manager's client: files, directories, ACLs, wrapped keys
//! and VO membership, JSON over mutual TLS with the user's proxy credential
//! (the API reference is docs/metadata-manager.md).
//!
//! [`MetadataClient`] has one typed method per route. Paths are
//! `/VO/dir/name`; principals `user:ID@VO`, `group:ID@VO`, `vo:VO`; rights
//! a subset of `rwda` (read, write, delete, admin). The client keeps up to
//! [`KEEP_ALIVE`] connections open, shared by its clones, since a command
//! or a library user makes many calls.
//!
//! HTTP statuses become [`Error`] variants carrying the server's message:
//! 400 and 413 → [`Error::BadRequest`], 401 → [`Error::Refused`], 403 →
//! [`Error::Forbidden`], 404 → [`Error::NotFound`], 409 →
//! [`Error::Conflict`], anything else → [`Error::Unavailable`].

use std::fmt;
use std::str::FromStr;

use hyper::Method;
use ibp_auth::{ProxyCredential, TrustStore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::credentials::{ApiGroup, Error};
use crate::https::{BaseUrl, Client, Response};

/// Longest server error message shown.
const MAX_MESSAGE: usize = 300;
/// Connections kept open between requests.
pub const KEEP_ALIVE: usize = 4;
/// Largest answer accepted: an exNode of the largest size the format allows,
/// escaped in JSON, plus the rest of the answer.
pub const MAX_ANSWER: usize = 2 * exnode::MAX_DOCUMENT + (1 << 20);
/// Largest page of a listing the server gives.
pub const LIST_MAX: u32 = 10_000;

/// A client of one metadata manager, presenting one proxy credential.
/// Cheap to clone; clones share the kept-alive connections.
#[derive(Clone, Debug)]
pub struct MetadataClient {
    http: Client,
}

/// What `whoami` says about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub vo: String,
    pub vo_id: String,
    /// `user:VO_ID@VO`: how ACLs and wrapped keys name the caller.
    pub principal: String,
    #[serde(default)]
    pub groups: Vec<ApiGroup>,
    /// The subject of the caller's certificate (informative only).
    pub subject: String,
    /// In the admin group of their VO.
    pub admin: bool,
    /// The registered key-wrapping public key, if any.
    pub public_key: Option<String>,
    /// When the proxy's attributes expire (Unix seconds).
    pub credential_not_after: i64,
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
    /// `stat` of a file: bytes stored on depots by all versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<u64>,
    /// `stat`: the caller's rights (`rwda` letters, `-` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<String>,
}

impl EntryInfo {
    /// The last component of the path (the VO for a VO root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
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

/// A data key wrapped for one recipient (`user:ID@VO` or `escrow:VO`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub recipient: String,
    pub wrapped: String,
}

/// What `put_version` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub path: String,
    /// The file UUID.
    pub id: String,
    /// The new version (`base_version + 1`).
    pub version: u64,
    pub size: u64,
    pub stored: u64,
}

/// One version of a file, as `get` returns it, with a ticket for its
/// allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVersion {
    pub path: String,
    /// The file UUID.
    pub id: String,
    pub version: u64,
    pub current_version: u64,
    pub size: u64,
    pub stored: u64,
    /// The exNode, parsed.
    pub exnode: exnode::Exnode,
    /// The exNode as the server keeps it (canonical XML).
    pub exnode_xml: String,
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

#[derive(Deserialize)]
struct FileVersionJson {
    path: String,
    id: String,
    version: u64,
    current_version: u64,
    size: u64,
    stored: u64,
    exnode: String,
    key_id: Option<String>,
    wrapped_key: Option<String>,
    ticket: String,
    ticket_not_after: i64,
    rights: String,
}

/// A fresh ticket for a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub path: String,
    pub id: String,
    pub ticket: String,
    pub ticket_not_after: i64,
}

/// What `move_entry` did.
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
    /// Set when the stored exNode did not parse (its capabilities are lost).
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
        let mut seen = std::collections::HashSet::new();
        self.released
            .iter()
            .flat_map(|r| r.manage.iter().map(String::as_str))
            .filter(|c| seen.insert(*c))
            .collect()
    }
}

/// Rights: a subset of `rwda`, or `-` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rights(u8);

impl Rights {
    pub const READ: Rights = Rights(1);
    pub const WRITE: Rights = Rights(2);
    pub const DELETE: Rights = Rights(4);
    pub const ADMIN: Rights = Rights(8);
    pub const NONE: Rights = Rights(0);
    pub const ALL: Rights = Rights(15);

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for Rights {
    type Err = String;

    /// `rwda` letters in any order, each at most once; `-` alone for none.
    fn from_str(s: &str) -> Result<Rights, String> {
        if s == "-" {
            return Ok(Rights::NONE);
        }
        if s.is_empty() {
            return Err("empty rights: give some of r, w, d, a (or - for none)".into());
        }
        let mut r = Rights::NONE;
        for c in s.chars() {
            let bit = match c {
                'r' => Rights::READ,
                'w' => Rights::WRITE,
                'd' => Rights::DELETE,
                'a' => Rights::ADMIN,
                _ => {
                    return Err(format!(
                        "bad rights {s:?}: letters r (read), w (write), d (delete), a (admin), or -"
                    ))
                }
            };
            if r.contains(bit) {
                return Err(format!("bad rights {s:?}: {c} given twice"));
            }
            r = Rights(r.0 | bit.0);
        }
        Ok(r)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (bit, c) in [
            (Rights::READ, 'r'),
            (Rights::WRITE, 'w'),
            (Rights::DELETE, 'd'),
            (Rights::ADMIN, 'a'),
        ] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Whether `s` is a VO name as the services accept it: 1-128 of
/// `A-Za-z0-9._-`, not starting with `.` or `-`.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `s` is a VO ID or group ID as the metadata manager accepts
/// them: like [`is_identifier`], with `:` also allowed (not first).
pub fn is_member_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-', ':'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Checks a principal: `user:ID@VO`, `group:ID@VO` or `vo:VO`.
pub fn check_principal(s: &str) -> Result<(), String> {
    let bad = || format!("bad principal {s:?}: expected user:VOID@VO, group:GROUPID@VO or vo:VO");
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    let ok = match kind {
        "user" | "group" => rest
            .rsplit_once('@')
            .is_some_and(|(id, vo)| is_member_id(id) && is_identifier(vo)),
        "vo" => is_identifier(rest),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// One ACL entry: `{"principal": "user:ID@VO", "rights": "rw"}`; on the
/// command line `principal=rights`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    pub principal: String,
    pub rights: String,
}

impl FromStr for AclEntry {
    type Err = String;

    /// `PRINCIPAL=RIGHTS`, e.g. `user:u1@vo1=rw`, `group:g7@vo1=r`,
    /// `vo:vo1=r`; rights in canonical order on output (`wr` → `rw`).
    fn from_str(s: &str) -> Result<AclEntry, String> {
        let (principal, rights) = s.rsplit_once('=').ok_or_else(|| {
            format!("bad ACL entry {s:?}: expected PRINCIPAL=RIGHTS, e.g. user:u1@vo1=rw")
        })?;
        check_principal(principal)?;
        let rights: Rights = rights.parse()?;
        Ok(AclEntry {
            principal: principal.to_owned(),
            rights: rights.to_string(),
        })
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.principal, self.rights)
    }
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

/// One owner's usage in a VO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub owner: String,
    pub files: u64,
    pub versions: u64,
    /// Bytes: logical sizes of all versions.
    pub logical: u64,
    /// Bytes stored on depots (replicas, shares).
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

/// Usage of a VO: the caller's own row, or every owner's for its admins.
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

/// A registered key-wrapping public key (`x25519 <base64>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// `user:ID@VO` or `escrow:VO`.
    #[serde(alias = "principal")]
    pub recipient: String,
    pub public_key: String,
}

/// What `add_key` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdded {
    pub path: String,
    pub version: u64,
    pub recipient: String,
}

/// What `remove_key` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRemoved {
    pub path: String,
    pub recipient: String,
    /// How many wrapped keys (one per version) went.
    pub removed: u64,
}

/// A data key wrapped for the VO's escrow key (VO admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowedKey {
    pub path: String,
    pub id: String,
    pub version: u64,
    pub recipient: String,
    pub wrapped_key: String,
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
}

/// The members of a VO.
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

#[derive(Serialize)]
struct PathBody<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct ListBody<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
}

#[derive(Serialize)]
struct MkdirBody<'a> {
    path: &'a str,
    parents: bool,
}

#[derive(Serialize)]
struct PutBody<'a> {
    path: &'a str,
    base_version: u64,
    exnode: &'a str,
    wrapped_keys: &'a [WrappedKey],
}

#[derive(Serialize)]
struct VersionBody<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

#[derive(Serialize)]
struct MoveBody<'a> {
    from: &'a str,
    to: &'a str,
}

#[derive(Serialize)]
struct AclSetBody<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<&'a [AclEntry]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<&'a [AclEntry]>,
}

#[derive(Serialize)]
struct UsageBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    vo: Option<&'a str>,
}

#[derive(Serialize)]
struct KeyBody<'a> {
    public_key: &'a str,
}

#[derive(Serialize)]
struct LookupBody<'a> {
    recipient: &'a str,
}

#[derive(Serialize)]
struct KeyAddBody<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    recipient: &'a str,
    wrapped: &'a str,
}

#[derive(Serialize)]
struct KeyRemoveBody<'a> {
    path: &'a str,
    recipient: &'a str,
}

#[derive(Serialize)]
struct MemberBody<'a> {
    vo_id: &'a str,
}

/// The answer's body as `T`, or the error its status stands for.
fn check<T: DeserializeOwned>(resp: Response) -> Result<T, Error> {
    if resp.is_success() {
        return resp.json().map_err(|e| {
            Error::Unavailable(format!("invalid answer from the metadata manager: {e}"))
        });
    }
    let detail = resp.error_message(MAX_MESSAGE);
    Err(match resp.status {
        400 | 413 => Error::BadRequest(format!(
            "the metadata manager refused the request (HTTP {}): {detail}",
            resp.status
        )),
        401 => Error::Refused(format!("the metadata manager refused (HTTP 401): {detail}")),
        403 => Error::Forbidden(detail),
        404 => Error::NotFound(detail),
        409 => Error::Conflict(detail),
        s => Error::Unavailable(format!("the metadata manager answered HTTP {s}: {detail}")),
    })
}

/// A VO name for a URL path: only the characters a VO name may have,
/// none of which needs escaping.
fn vo_segment(vo: &str) -> Result<&str, Error> {
    if is_identifier(vo) {
        Ok(vo)
    } else {
        Err(Error::Usage(format!(
            "bad VO name {vo:?}: letters, digits, '.', '_', '-'"
        )))
    }
}

impl MetadataClient {
    /// A client of the metadata manager at `url` (`https://host:port`),
    /// whose server certificate is checked against `trust`'s CAs, presenting
    /// `credential`. No connection is made until the first call.
    pub fn connect(
        url: &str,
        trust: &TrustStore,
        credential: &ProxyCredential,
    ) -> Result<MetadataClient, Error> {
        let base = BaseUrl::parse(url)?;
        let tls = ibp_auth::tls::client_config(trust, Some(credential))
            .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
        let mut http = Client::new(base, tls, true)
            .with_user_agent(concat!("lors/", env!("CARGO_PKG_VERSION")))
            .with_service_name("metadata manager")
            .with_keep_alive(KEEP_ALIVE);
        http.max_response = MAX_ANSWER;
        Ok(MetadataClient { http })
    }

    /// A client over a prepared HTTPS client (timeouts, limits of its own).
    pub fn from_http(http: Client) -> MetadataClient {
        MetadataClient { http }
    }

    pub fn url(&self) -> &BaseUrl {
        self.http.url()
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, Error> {
        check(self.http.post_json(route, body).await?)
    }

    /// Who the metadata manager takes the caller for (and records them as a
    /// member on first contact, so that ACLs can name them).
    pub async fn whoami(&self) -> Result<Whoami, Error> {
        check(self.http.get("/v1/whoami").await?)
    }

    /// An entry, with the caller's rights (needs read on it or its directory).
    pub async fn stat(&self, path: &str) -> Result<EntryInfo, Error> {
        self.post("/v1/stat", &PathBody { path }).await
    }

    /// One page of a directory (in name order, after the name `after`; at
    /// most `limit` entries, server default 1000). A file lists as itself.
    pub async fn list_page(
        &self,
        path: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ListPage, Error> {
        self.post("/v1/list", &ListBody { path, after, limit })
            .await
    }

    /// The whole directory, page by page (needs read on it).
    pub async fn list(&self, path: &str) -> Result<Vec<EntryInfo>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_page(path, after.as_deref(), Some(LIST_MAX))
                .await?;
            out.extend(page.entries);
            match page.next_after {
                // A server that does not move forward would loop for ever.
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                Some(next) => {
                    return Err(Error::Unavailable(format!(
                        "the metadata manager's listing of {path} does not advance past {next:?}"
                    )))
                }
                None => return Ok(out),
            }
        }
    }

    /// Creates a directory (needs write on its parent); with `parents`,
    /// also the missing ancestors, and an existing directory is no error.
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<EntryInfo, Error> {
        self.post("/v1/mkdir", &MkdirBody { path, parents }).await
    }

    /// Stores a new version of a file: `base_version` 0 creates the file
    /// (write on the directory), else it must be the current version (write
    /// on the file; [`Error::Conflict`] if another version came first). An
    /// encrypted exNode needs a key wrapped for the caller.
    pub async fn put_version(
        &self,
        path: &str,
        base_version: u64,
        exnode_xml: &str,
        wrapped_keys: &[WrappedKey],
    ) -> Result<PutResult, Error> {
        let body = PutBody {
            path,
            base_version,
            exnode: exnode_xml,
            wrapped_keys,
        };
        self.post("/v1/put", &body).await
    }

    /// A version of a file (`None`: the current one) with a ticket for its
    /// allocations and the data key wrapped for the caller (needs read).
    pub async fn get(&self, path: &str, version: Option<u64>) -> Result<FileVersion, Error> {
        let j: FileVersionJson = self.post("/v1/get", &VersionBody { path, version }).await?;
        let exnode = exnode::from_xml(j.exnode.as_bytes()).map_err(|e| {
            Error::Unavailable(format!(
                "the metadata manager sent an exNode for {} that does not parse: {e}",
                j.path
            ))
        })?;
        Ok(FileVersion {
            path: j.path,
            id: j.id,
            version: j.version,
            current_version: j.current_version,
            size: j.size,
            stored: j.stored,
            exnode,
            exnode_xml: j.exnode,
            key_id: j.key_id,
            wrapped_key: j.wrapped_key,
            ticket: j.ticket,
            ticket_not_after: j.ticket_not_after,
            rights: j.rights,
        })
    }

    /// A fresh ticket for a file's allocations (needs read).
    pub async fn ticket(&self, path: &str) -> Result<Ticket, Error> {
        self.post("/v1/ticket", &PathBody { path }).await
    }

    /// Moves or renames an entry within its VO's tree (delete on it, write
    /// on the target directory). (`move` is a Rust keyword.)
    pub async fn move_entry(&self, from: &str, to: &str) -> Result<Moved, Error> {
        self.post("/v1/move", &MoveBody { from, to }).await
    }

    /// Deletes a file (all versions), an empty directory, or with `version`
    /// one non-current version (needs delete). The answer lists the MANAGE
    /// capabilities to release on the depots; see [`crate::release`].
    pub async fn delete(&self, path: &str, version: Option<u64>) -> Result<Deleted, Error> {
        self.post("/v1/delete", &VersionBody { path, version })
            .await
    }

    /// An entry's ACL (needs admin).
    pub async fn acl_get(&self, path: &str) -> Result<Acl, Error> {
        self.post("/v1/acl/get", &PathBody { path }).await
    }

    /// Replaces the access ACL and/or (directories) the default ACL; `None`
    /// leaves that list as it is, an empty slice clears it (needs admin).
    /// Users named must have used the metadata manager once.
    pub async fn acl_set(
        &self,
        path: &str,
        access: Option<&[AclEntry]>,
        default: Option<&[AclEntry]>,
    ) -> Result<Acl, Error> {
        self.post(
            "/v1/acl/set",
            &AclSetBody {
                path,
                access,
                default,
            },
        )
        .await
    }

    /// Usage of a VO (`None`: the caller's): the caller's own row, every
    /// owner's and the total for the VO's admins.
    pub async fn usage(&self, vo: Option<&str>) -> Result<Usage, Error> {
        self.post("/v1/usage", &UsageBody { vo }).await
    }

    /// Registers the caller's key-wrapping public key (`x25519 <base64>`).
    pub async fn register_key(&self, public_key: &str) -> Result<PublicKey, Error> {
        check(
            self.http
                .send_json(Method::PUT, "/v1/keys/me", &KeyBody { public_key })
                .await?,
        )
    }

    /// The public key of `user:ID@VO` or `escrow:VO`.
    pub async fn lookup_key(&self, recipient: &str) -> Result<PublicKey, Error> {
        self.post("/v1/keys/lookup", &LookupBody { recipient })
            .await
    }

    /// Adds (or replaces) the data key of a version (`None`: the current
    /// one) wrapped for `recipient` (needs admin on the file).
    pub async fn add_key(
        &self,
        path: &str,
        version: Option<u64>,
        recipient: &str,
        wrapped: &str,
    ) -> Result<KeyAdded, Error> {
        let body = KeyAddBody {
            path,
            version,
            recipient,
            wrapped,
        };
        self.post("/v1/keys/add", &body).await
    }

    /// Removes every wrapped key of a file for `recipient` (needs admin).
    pub async fn remove_key(&self, path: &str, recipient: &str) -> Result<KeysRemoved, Error> {
        self.post("/v1/keys/remove", &KeyRemoveBody { path, recipient })
            .await
    }

    /// The data key of a version wrapped for the VO's escrow key (VO admins).
    pub async fn escrow_key(&self, path: &str, version: Option<u64>) -> Result<EscrowedKey, Error> {
        self.post("/v1/keys/escrow", &VersionBody { path, version })
            .await
    }

    /// Sets the escrow public key of a VO (VO admins).
    pub async fn set_escrow_key(&self, vo: &str, public_key: &str) -> Result<PublicKey, Error> {
        let route = format!("/v1/vos/{}/escrow", vo_segment(vo)?);
        check(
            self.http
                .send_json(Method::PUT, &route, &KeyBody { public_key })
                .await?,
        )
    }

    /// The members of a VO (VO admins).
    pub async fn members_list(&self, vo: &str) -> Result<Members, Error> {
        let route = format!("/v1/vos/{}/members", vo_segment(vo)?);
        check(self.http.get(&route).await?)
    }

    /// Records a member before they first call, so ACLs can name them (VO
    /// admins).
    pub async fn members_add(&self, vo: &str, vo_id: &str) -> Result<MemberChange, Error> {
        let route = format!("/v1/vos/{}/members", vo_segment(vo)?);
        self.post(&route, &MemberBody { vo_id }).await
    }

    /// Refuses a member everywhere from their next request (VO admins).
    pub async fn members_remove(&self, vo: &str, vo_id: &str) -> Result<MemberChange, Error> {
        let route = format!("/v1/vos/{}/members/remove", vo_segment(vo)?);
        self.post(&route, &MemberBody { vo_id }).await
    }

    /// Lets a removed member in again (VO admins).
    pub async fn members_restore(&self, vo: &str, vo_id: &str) -> Result<MemberChange, Error> {
        let route = format!("/v1/vos/{}/members/restore", vo_segment(vo)?);
        self.post(&route, &MemberBody { vo_id }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_entries_parse() {
        let e: AclEntry = "user:u1@vo1=rw".parse().unwrap();
        assert_eq!(e.principal, "user:u1@vo1");
        assert_eq!(e.rights, "rw");
        assert_eq!(
            "group:g.7@vo-1=ar".parse::<AclEntry>().unwrap().rights,
            "ra"
        );
        assert_eq!(
            "vo:vo1=r".parse::<AclEntry>().unwrap().to_string(),
            "vo:vo1=r"
        );
        assert_eq!("vo:vo1=-".parse::<AclEntry>().unwrap().rights, "-");
        assert_eq!("vo:vo1=wdar".parse::<AclEntry>().unwrap().rights, "rwda");
        for bad in [
            "",
            "user:u1@vo1",
            "user:u1@vo1=",
            "user:u1@vo1=rx",
            "user:u1@vo1=rr",
            "user:u1=rw",
            "user:@vo1=r",
            "vo:=r",
            "vo:a@b=r",
            "u1@vo1=r",
            "alien:x=r",
            "user:u1@vo/1=r",
            "user:-u@vo1=r",
            "=r",
            "user:u1@vo1=r-",
        ] {
            assert!(bad.parse::<AclEntry>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rights_round_trip() {
        for s in ["-", "r", "rw", "rwda", "da"] {
            assert_eq!(s.parse::<Rights>().unwrap().to_string(), s);
        }
        assert!("".parse::<Rights>().is_err());
        assert!("R".parse::<Rights>().is_err());
    }

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status,
            retry_after: None,
            date: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses_map_to_errors_with_the_message() {
        let err = |s| check::<Moved>(answer(s, r#"{"error":"the reason"}"#)).unwrap_err();
        assert!(matches!(err(400), Error::BadRequest(m) if m.ends_with("(HTTP 400): the reason")));
        assert!(matches!(err(413), Error::BadRequest(_)));
        assert!(matches!(err(401), Error::Refused(m) if m.contains("the reason")));
        assert!(matches!(err(403), Error::Forbidden(m) if m == "the reason"));
        assert!(matches!(err(404), Error::NotFound(m) if m == "the reason"));
        assert!(matches!(err(409), Error::Conflict(m) if m == "the reason"));
        assert!(
            matches!(err(500), Error::Unavailable(m) if m.contains("HTTP 500") && m.contains("the reason"))
        );
        assert_eq!(err(404).exit_code(), crate::exit::NOT_FOUND);
        assert_eq!(err(409).exit_code(), crate::exit::CONFLICT);
        assert_eq!(err(403).exit_code(), crate::exit::REFUSED);
        let ok: Moved = check(answer(200, r#"{"from":"/v/a","to":"/v/b"}"#)).unwrap();
        assert_eq!(ok.to, "/v/b");
        assert!(matches!(
            check::<Moved>(answer(200, "{}")),
            Err(Error::Unavailable(_))
        ));
    }

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
        let k: PublicKey =
            serde_json::from_str(r#"{"principal":"user:u1@vo1","public_key":"x25519 AA"}"#)
                .unwrap();
        assert_eq!(k.recipient, "user:u1@vo1");
    }

    #[test]
    fn vo_names_in_urls() {
        assert!(vo_segment("vo1").is_ok());
        for bad in ["", "a/b", "..", "a b", "a?b", "%2e"] {
            assert!(vo_segment(bad).is_err(), "{bad:?}");
        }
    }
}
