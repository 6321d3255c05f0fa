//! The metadata manager's client: files, directories, ACLs, wrapped keys
//! and VO membership, JSON over mutual TLS with the user's proxy credential
//! (the API reference is docs/metadata-manager.md).
//!
//! [`MetadataClient`] has one typed method per route; the request and
//! answer types are the `metadata_api` crate's (re-exported here), which
//! the server compiles against too. Paths are `/VO/dir/name`; principals
//! `user:ID@VO`, `group:ID@VO`, `vo:VO`; rights a subset of `rwda` (read,
//! write, delete, admin), or `-` for none. The client keeps up to
//! [`KEEP_ALIVE`] connections open, shared by its clones, since a command
//! or a library user makes many calls.
//!
//! Several replicas of the metadata manager (one database, docs/operator.md)
//! are given as a comma-separated list of URLs. The client sends to the
//! one that last answered and fails over to the next when a request could
//! not be delivered (no connection, TLS handshake failed, connection timed
//! out); a read (every GET, and the POST routes in [`READ_ROUTES`]) also
//! fails over when the exchange broke after it was sent. A change whose
//! answer was lost is not sent again: it may have been applied, and
//! sending it to another replica could apply it twice (the caller sees the
//! error, and a retry meets the metadata manager's version checks).
//!
//! HTTP statuses become [`Error`] variants carrying the server's message:
//! 400 and 413 → [`Error::BadRequest`], 401 → [`Error::Refused`], 403 →
//! [`Error::Forbidden`], 404 → [`Error::NotFound`], 409 →
//! [`Error::Conflict`], anything else → [`Error::Unavailable`].

use hyper::Method;
use ibp_auth::{ProxyCredential, TrustStore};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::credentials::Error;
use crate::https::{BaseUrl, Client, HttpError, Response};

/// The POST routes that only read: sent again to another replica when the
/// exchange broke after the request was sent.
pub const READ_ROUTES: &[&str] = &[
    "/v1/stat",
    "/v1/list",
    "/v1/get",
    "/v1/versions",
    "/v1/ticket",
    "/v1/usage",
    "/v1/acl/get",
    "/v1/keys/lookup",
    "/v1/keys/escrow",
    "/v1/names/resolve",
    "/v1/names/of",
];

/// Longest server error message shown.
const MAX_MESSAGE: usize = 300;
/// Connections kept open between requests: as many as the client opens
/// at most ([`ibp_https::client::MAX_CONNECTIONS`]), so that many files
/// uploaded at once through one session (`lors upload A B C DIR`, `cp -r`,
/// a library user's uploads in flight) reuse their TLS connections
/// instead of handshaking again for every request past the fourth.
pub const KEEP_ALIVE: usize = ibp_https::client::MAX_CONNECTIONS;
/// Largest answer accepted: an exNode of the largest size the format allows,
/// escaped in JSON, plus the rest of the answer.
pub const MAX_ANSWER: usize = 2 * exnode::MAX_DOCUMENT + (1 << 20);
/// Largest page of a listing the server gives.
pub const LIST_MAX: u32 = 10_000;

/// A client of one metadata manager, presenting one proxy credential.
/// Cheap to clone; clones share the kept-alive connections.
#[derive(Clone, Debug)]
pub struct MetadataClient {
    /// One client per replica, in the order given.
    replicas: Arc<[Client]>,
    /// The replica that answered last (requests go there first).
    current: Arc<AtomicUsize>,
    /// The metadata-manager keys the trust directory holds
    /// (`metadata/*.pub`): every exNode [`MetadataClient::get`] returns is
    /// signed by one of them.
    signers: Arc<[[u8; 32]]>,
}

/// Whether `e` is certain to have happened before the request was sent.
fn unsent(e: &HttpError) -> bool {
    matches!(
        e,
        HttpError::Connect { .. }
            | HttpError::Tls { .. }
            | HttpError::Timeout {
                what: "connection",
                ..
            }
    )
}

/// Whether a request that failed with `e` may be sent to another instance
/// of the service: one not delivered always; a read (safe to send twice)
/// also when the exchange broke after sending; never when every instance
/// would answer alike (a bad URL, our certificate refused, an answer too
/// large).
pub(crate) fn try_another(e: &HttpError, read: bool) -> bool {
    match e {
        HttpError::Url { .. }
        | HttpError::CertificateRefused { .. }
        | HttpError::TooLarge { .. } => false,
        _ => read || unsent(e),
    }
}

/// The URLs of a comma-separated list (blanks around commas ignored).
pub fn split_urls(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty())
}

pub use metadata_api::{
    is_identifier, is_member_id, Acl, AclEntry, Deleted, EntryInfo, EntryKind, EscrowedKey,
    GetAnswer, Health, KeyAdded, KeysRemoved, ListPage, Member, MemberChange, Members, Moved,
    PublicKey, PutResult, Released, Retention, Rights, Ticket, Usage, UsageLimits, UsageRow,
    UsageTotal, VersionInfo, Versions, VoUsed, Whoami, WrappedKey,
};
use metadata_api::{
    AclSetRequest, KeyAddRequest, KeyRemoveRequest, KeyRequest, ListRequest, LookupRequest,
    MemberRequest, MkdirRequest, MoveRequest, PathRequest, Principal, PutRequest, RetentionRequest,
    UsageRequest, VersionRequest,
};

/// One version of a file, as `get` returns it (the metadata manager's
/// [`GetAnswer`], whose fields it derefs to, with a ticket for its
/// allocations), and its exNode parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVersion {
    /// The answer as sent; its `exnode` is the canonical XML the server
    /// keeps.
    pub answer: GetAnswer,
    /// The exNode, parsed.
    pub exnode: exnode::Exnode,
}

impl std::ops::Deref for FileVersion {
    type Target = GetAnswer;

    fn deref(&self) -> &GetAnswer {
        &self.answer
    }
}

/// Checks the signature of an exNode the metadata manager served (and
/// takes it out of `x`): by a trusted key, for the file and version the
/// answer names and `asked` for.
fn verify_served(
    x: &mut exnode::Exnode,
    j: &GetAnswer,
    asked: Option<u64>,
    signers: &[[u8; 32]],
) -> Result<exnode::Verified, Error> {
    let what = format!("the exNode of {} version {}", j.path, j.version);
    let refused = |why: String| {
        Error::Data(format!(
            "{what} from the metadata manager is refused: {why}"
        ))
    };
    let sig = exnode::signature::split(x)
        .map_err(|e| refused(e.to_string()))?
        .ok_or_else(|| {
            refused("it is not signed (a metadata manager that does not sign exNodes?)".into())
        })?;
    let v = exnode::signature::verify(x, &sig, signers).map_err(|e| match e {
        exnode::SignatureError::UntrustedKey { .. } => {
            refused(format!("{e}{}", untrusted_hint(signers)))
        }
        e => refused(e.to_string()),
    })?;
    let same_file = uuid::Uuid::parse_str(&j.id).is_ok_and(|id| id == v.file);
    if !same_file {
        return Err(refused(format!(
            "file UUID: it is signed for file {}, but {} is file {}",
            v.file, j.path, j.id
        )));
    }
    if v.version != j.version || asked.is_some_and(|a| a != v.version) {
        return Err(refused(format!(
            "version: it is signed for version {}, but version {} was {}",
            v.version,
            asked.unwrap_or(j.version),
            if asked.is_some() {
                "asked for"
            } else {
                "answered"
            }
        )));
    }
    Ok(v)
}

/// What to do about an exNode signed by a key the trust directory lacks.
pub fn untrusted_hint(signers: &[[u8; 32]]) -> &'static str {
    if signers.is_empty() {
        " (the trust directory holds no metadata-manager key: put the metadata manager's \
         metadata.pub in its metadata/ directory)"
    } else {
        " (the trust directory's metadata/*.pub hold the keys trusted)"
    }
}

/// Checks a principal: `user:ID@VO`, `group:ID@VO` or `vo:VO`.
pub fn check_principal(s: &str) -> Result<(), String> {
    Principal::parse(s).map(|_| ())
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

fn path_request(path: &str) -> PathRequest {
    PathRequest {
        path: path.to_owned(),
    }
}

fn version_request(path: &str, version: Option<u64>) -> VersionRequest {
    VersionRequest {
        path: path.to_owned(),
        version,
    }
}

fn key_request(public_key: &str) -> KeyRequest {
    KeyRequest {
        public_key: public_key.to_owned(),
    }
}

fn member_request(vo_id: &str) -> MemberRequest {
    MemberRequest {
        vo_id: vo_id.to_owned(),
    }
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

/// The VO a request addresses, sent as [`ibp_https::ACTING_VO_HEADER`] so
/// that a multi-VO proxy acts there as its member of that VO (docs/
/// identity.md, "Several VOs in one proxy"): the VO of a `/v1/vos/VO/...`
/// route, else of the body's `path` (or `from`, for a move), else its `vo`.
fn acting_vo(route: &str, body: Option<&[u8]>) -> Option<String> {
    if let Some(rest) = route.strip_prefix("/v1/vos/") {
        return rest
            .split('/')
            .next()
            .filter(|v| is_identifier(v))
            .map(str::to_owned);
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        path: Option<String>,
        from: Option<String>,
        vo: Option<String>,
    }
    let p: Probe = serde_json::from_slice(body?).ok()?;
    let vo = match p.path.or(p.from) {
        Some(path) => path
            .strip_prefix('/')
            .and_then(|r| r.split('/').next())
            .map(str::to_owned),
        None => p.vo,
    }?;
    is_identifier(&vo).then_some(vo)
}

impl MetadataClient {
    /// A client of the metadata manager at `url` (`https://host:port`),
    /// whose server certificate is checked against `trust`'s CAs, presenting
    /// `credential`. No connection is made until the first call.
    /// `url` may list several replicas, comma-separated (see the module
    /// documentation).
    pub fn connect(
        url: &str,
        trust: &TrustStore,
        credential: &ProxyCredential,
    ) -> Result<MetadataClient, Error> {
        let tls = ibp_auth::tls::client_config(trust, Some(credential))
            .map_err(|e| Error::Usage(format!("cannot set up TLS: {e}")))?;
        let replicas = split_urls(url)
            .map(|u| {
                let base = BaseUrl::parse(u)?;
                let mut http = Client::new(base, tls.clone(), true)
                    .with_user_agent(concat!("lors/", env!("CARGO_PKG_VERSION")))
                    .with_service_name("metadata manager")
                    .with_keep_alive(KEEP_ALIVE);
                http.max_response = MAX_ANSWER;
                Ok(http)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if replicas.is_empty() {
            return Err(Error::Usage(format!("no metadata-manager URL in {url:?}")));
        }
        Ok(MetadataClient {
            replicas: replicas.into(),
            current: Arc::default(),
            signers: trust
                .token_keys(ibp_auth::trust::TokenSigner::MetadataManager)
                .into(),
        })
    }

    /// A client over a prepared HTTPS client (timeouts, limits of its own),
    /// trusting the exNode signatures of `trust`'s metadata-manager keys.
    pub fn from_http(http: Client, trust: &TrustStore) -> MetadataClient {
        MetadataClient {
            replicas: vec![http].into(),
            current: Arc::default(),
            signers: trust
                .token_keys(ibp_auth::trust::TokenSigner::MetadataManager)
                .into(),
        }
    }

    /// The URL of the replica requests go to first (the one that answered
    /// last).
    pub fn url(&self) -> &BaseUrl {
        let i = self.current.load(Ordering::Relaxed) % self.replicas.len();
        self.replicas[i].url()
    }

    /// Every replica's URL, in the order given.
    pub fn urls(&self) -> Vec<&BaseUrl> {
        self.replicas.iter().map(Client::url).collect()
    }

    /// Sends a request to the replica that answered last, failing over to
    /// the others as the module documentation says.
    async fn send(
        &self,
        method: Method,
        route: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, Error> {
        let vo = acting_vo(route, body.as_deref());
        self.send_in(method, route, body, vo).await
    }

    /// [`MetadataClient::send`] acting in `vo` (see [`acting_vo`]).
    async fn send_in(
        &self,
        method: Method,
        route: &str,
        mut body: Option<Vec<u8>>,
        vo: Option<String>,
    ) -> Result<Response, Error> {
        let n = self.replicas.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let read = method == Method::GET || READ_ROUTES.contains(&route);
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            let http = &self.replicas[i];
            // The body is copied only for a request that may go on to
            // another replica.
            let b = if k + 1 == n {
                body.take()
            } else {
                body.clone()
            };
            match http
                .request_acting(method.clone(), route, b, vo.as_deref())
                .await
            {
                Ok(r) => {
                    if i != first {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(r);
                }
                Err(e) if n > 1 && try_another(&e, read) => {
                    let next = &self.replicas[(i + 1) % n];
                    if k + 1 < n {
                        tracing::warn!(
                            "metadata manager {} failed ({e}); trying {}",
                            http.url(),
                            next.url()
                        );
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(match last {
            Some(e) => Error::Unavailable(format!(
                "no metadata-manager replica answered ({n} tried); the last: {e}"
            )),
            None => Error::Unavailable("no metadata manager".into()),
        })
    }

    async fn send_json<B: Serialize>(
        &self,
        method: Method,
        route: &str,
        body: &B,
    ) -> Result<Response, Error> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::Usage(format!("cannot encode the request: {e}")))?;
        self.send(method, route, Some(bytes)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, Error> {
        check(self.send_json(Method::POST, route, body).await?)
    }

    async fn get_json<T: DeserializeOwned>(&self, route: &str) -> Result<T, Error> {
        check(self.send(Method::GET, route, None).await?)
    }

    /// Who the metadata manager takes the caller for (and records them as a
    /// member on first contact, so that ACLs can name them).
    pub async fn whoami(&self) -> Result<Whoami, Error> {
        self.get_json("/v1/whoami").await
    }

    /// [`MetadataClient::whoami`] acting in `vo` (a multi-VO proxy's
    /// identity there; `None`: its first VO).
    pub async fn whoami_in(&self, vo: Option<&str>) -> Result<Whoami, Error> {
        check(
            self.send_in(Method::GET, "/v1/whoami", None, vo.map(str::to_owned))
                .await?,
        )
    }

    /// An entry, with the caller's rights (needs read on it or its directory).
    pub async fn stat(&self, path: &str) -> Result<EntryInfo, Error> {
        self.post("/v1/stat", &path_request(path)).await
    }

    /// One page of a directory (in name order, after the name `after`; at
    /// most `limit` entries, server default 1000). A file lists as itself.
    pub async fn list_page(
        &self,
        path: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ListPage, Error> {
        let body = ListRequest {
            path: path.to_owned(),
            after: after.map(str::to_owned),
            limit,
        };
        self.post("/v1/list", &body).await
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
        let body = MkdirRequest {
            path: path.to_owned(),
            parents,
        };
        self.post("/v1/mkdir", &body).await
    }

    /// Stores a new version of a file: `base_version` 0 creates the file
    /// (write on the directory), else it must be the current version (write
    /// on the file; [`Error::Conflict`] if another version came first). An
    /// encrypted exNode needs a key wrapped for the caller. The answer's
    /// `pruned` lists old versions the retention dropped, with allocations
    /// to release ([`crate::files::release_pruned`]).
    pub async fn put_version(
        &self,
        path: &str,
        base_version: u64,
        exnode_xml: &str,
        wrapped_keys: &[WrappedKey],
    ) -> Result<PutResult, Error> {
        let body = PutRequest {
            path: path.to_owned(),
            base_version,
            exnode: exnode_xml.into(),
            wrapped_keys: wrapped_keys.to_vec(),
        };
        self.post("/v1/put", &body).await
    }

    /// A version of a file (`None`: the current one) with a ticket for its
    /// allocations and the data key wrapped for the caller (needs read).
    /// The exNode's signature is verified (see [`MetadataClient::get_signed`]).
    pub async fn get(&self, path: &str, version: Option<u64>) -> Result<FileVersion, Error> {
        self.get_signed(path, version).await.map(|(fv, _)| fv)
    }

    /// [`MetadataClient::get`], and what the exNode's signature says. The
    /// signature must be by a metadata-manager key of the trust directory,
    /// for the file and version answered (and asked for), over the exNode
    /// as sent; else [`Error::Data`] naming what failed. The answer's
    /// `exnode` text keeps the signature (what `lors stat --export`
    /// saves); the parsed [`FileVersion::exnode`] is without it.
    pub async fn get_signed(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<(FileVersion, exnode::Verified), Error> {
        let j: GetAnswer = self
            .post("/v1/get", &version_request(path, version))
            .await?;
        let mut exnode = exnode::from_xml(j.exnode.as_bytes()).map_err(|e| {
            Error::Unavailable(format!(
                "the metadata manager sent an exNode for {} that does not parse: {e}",
                j.path
            ))
        })?;
        let verified = verify_served(&mut exnode, &j, version, &self.signers)?;
        Ok((FileVersion { answer: j, exnode }, verified))
    }

    /// A file's versions, newest first, and the retention that keeps them
    /// (needs read).
    pub async fn versions(&self, path: &str) -> Result<Versions, Error> {
        self.post("/v1/versions", &path_request(path)).await
    }

    /// The retention under a directory (or of a file's directory; needs
    /// read); with `keep`, sets the directory's own (needs write on it),
    /// with `inherit` clears it.
    pub async fn retention(
        &self,
        path: &str,
        keep: Option<u64>,
        inherit: bool,
    ) -> Result<Retention, Error> {
        let body = RetentionRequest {
            path: path.to_owned(),
            keep,
            inherit,
        };
        self.post("/v1/retention", &body).await
    }

    /// A fresh ticket for a file's allocations (needs read).
    pub async fn ticket(&self, path: &str) -> Result<Ticket, Error> {
        self.post("/v1/ticket", &path_request(path)).await
    }

    /// Moves or renames an entry within its VO's tree (delete on it, write
    /// on the target directory). (`move` is a Rust keyword.)
    pub async fn move_entry(&self, from: &str, to: &str) -> Result<Moved, Error> {
        let body = MoveRequest {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        self.post("/v1/move", &body).await
    }

    /// Deletes a file (all versions), an empty directory, or with `version`
    /// one non-current version (needs delete). The answer lists the MANAGE
    /// capabilities to release on the depots; see [`crate::release`].
    pub async fn delete(&self, path: &str, version: Option<u64>) -> Result<Deleted, Error> {
        self.post("/v1/delete", &version_request(path, version))
            .await
    }

    /// An entry's ACL (needs admin).
    pub async fn acl_get(&self, path: &str) -> Result<Acl, Error> {
        self.post("/v1/acl/get", &path_request(path)).await
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
        let body = AclSetRequest {
            path: path.to_owned(),
            access: access.map(<[AclEntry]>::to_vec),
            default: default.map(<[AclEntry]>::to_vec),
        };
        self.post("/v1/acl/set", &body).await
    }

    /// Usage of a VO (`None`: the caller's): the caller's own row, every
    /// owner's and the total for the VO's admins.
    pub async fn usage(&self, vo: Option<&str>) -> Result<Usage, Error> {
        let body = UsageRequest {
            vo: vo.map(str::to_owned),
        };
        self.post("/v1/usage", &body).await
    }

    /// Registers the caller's key-wrapping public key (`x25519 <base64>`).
    pub async fn register_key(&self, public_key: &str) -> Result<PublicKey, Error> {
        check(
            self.send_json(Method::PUT, "/v1/keys/me", &key_request(public_key))
                .await?,
        )
    }

    /// [`MetadataClient::register_key`] for a multi-VO proxy's identity in
    /// `vo`.
    pub async fn register_key_in(&self, vo: &str, public_key: &str) -> Result<PublicKey, Error> {
        let bytes = serde_json::to_vec(&key_request(public_key))
            .map_err(|e| Error::Usage(format!("cannot encode the request: {e}")))?;
        check(
            self.send_in(Method::PUT, "/v1/keys/me", Some(bytes), Some(vo.to_owned()))
                .await?,
        )
    }

    /// The public key of `user:ID@VO` or `escrow:VO`.
    pub async fn lookup_key(&self, recipient: &str) -> Result<PublicKey, Error> {
        let body = LookupRequest {
            recipient: recipient.to_owned(),
        };
        self.post("/v1/keys/lookup", &body).await
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
        let body = KeyAddRequest {
            path: path.to_owned(),
            version,
            recipient: recipient.to_owned(),
            wrapped: wrapped.to_owned(),
        };
        self.post("/v1/keys/add", &body).await
    }

    /// Removes every wrapped key of a file for `recipient` (needs admin).
    pub async fn remove_key(&self, path: &str, recipient: &str) -> Result<KeysRemoved, Error> {
        let body = KeyRemoveRequest {
            path: path.to_owned(),
            recipient: recipient.to_owned(),
        };
        self.post("/v1/keys/remove", &body).await
    }

    /// The data key of a version wrapped for the VO's escrow key (VO admins).
    pub async fn escrow_key(&self, path: &str, version: Option<u64>) -> Result<EscrowedKey, Error> {
        self.post("/v1/keys/escrow", &version_request(path, version))
            .await
    }

    /// Sets the escrow public key of a VO (VO admins).
    pub async fn set_escrow_key(&self, vo: &str, public_key: &str) -> Result<PublicKey, Error> {
        let route = format!("/v1/vos/{}/escrow", vo_segment(vo)?);
        check(
            self.send_json(Method::PUT, &route, &key_request(public_key))
                .await?,
        )
    }

    /// The members of a VO (VO admins).
    pub async fn members_list(&self, vo: &str) -> Result<Members, Error> {
        let route = format!("/v1/vos/{}/members", vo_segment(vo)?);
        self.get_json(&route).await
    }

    /// Records a member before they first call, so ACLs can name them (VO
    /// admins).
    pub async fn members_add(&self, vo: &str, vo_id: &str) -> Result<MemberChange, Error> {
        let route = format!("/v1/vos/{}/members", vo_segment(vo)?);
        self.post(&route, &member_request(vo_id)).await
    }

    /// Refuses a member everywhere from their next request (VO admins).
    pub async fn members_remove(&self, vo: &str, vo_id: &str) -> Result<MemberChange, Error> {
        let route = format!("/v1/vos/{}/members/remove", vo_segment(vo)?);
        self.post(&route, &member_request(vo_id)).await
    }

    /// Lets a removed member in again (VO admins).
    pub async fn members_restore(&self, vo: &str, vo_id: &str) -> Result<MemberChange, Error> {
        let route = format!("/v1/vos/{}/members/restore", vo_segment(vo)?);
        self.post(&route, &member_request(vo_id)).await
    }

    /// The VO IDs of members of the caller's VO carrying each name.
    pub async fn names_resolve(
        &self,
        names: Vec<String>,
    ) -> Result<metadata_api::names::ResolveAnswer, Error> {
        self.post(
            "/v1/names/resolve",
            &metadata_api::names::ResolveRequest { names },
        )
        .await
    }

    /// Sets (or with `None` clears) the caller's display name.
    pub async fn names_set(
        &self,
        name: Option<String>,
    ) -> Result<metadata_api::names::SetNameAnswer, Error> {
        self.post(
            "/v1/names/set",
            &metadata_api::names::SetNameRequest { name },
        )
        .await
    }

    /// The names of VO IDs of the caller's VO.
    pub async fn names_of(
        &self,
        vo_ids: Vec<String>,
    ) -> Result<metadata_api::names::NamesOfAnswer, Error> {
        self.post(
            "/v1/names/of",
            &metadata_api::names::NamesOfRequest { vo_ids },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A get answer for `/vo1/f` version 2 of `file`, its exNode signed
    /// by `key` (or unsigned).
    fn served(
        key: Option<&ring::signature::Ed25519KeyPair>,
        file: uuid::Uuid,
    ) -> (GetAnswer, exnode::Exnode) {
        let x = exnode::Exnode {
            file: Some(file),
            version: 2,
            size: 10,
            mappings: vec![exnode::Mapping {
                logical_length: 10,
                alloc_length: 10,
                read: Some("ibp://d:6714/1#k/0/READ".into()),
                depot: "d:6714".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let doc = match key {
            Some(k) => exnode::signature::sign(x, k, 1_765_000_000).unwrap(),
            None => exnode::to_xml(&x),
        };
        let parsed = exnode::from_xml(doc.as_bytes()).unwrap();
        let answer = GetAnswer {
            path: "/vo1/f".into(),
            id: file.to_string(),
            version: 2,
            current_version: 2,
            size: 10,
            stored: 10,
            exnode: doc,
            key_id: None,
            wrapped_key: None,
            ticket: String::new(),
            ticket_not_after: 0,
            rights: "r".into(),
        };
        (answer, parsed)
    }

    #[test]
    fn a_served_exnode_must_be_signed_by_a_trusted_key_for_what_was_asked() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        let file = uuid::Uuid::new_v4();
        let refused = |r: Result<exnode::Verified, Error>, says: &str| match r {
            Err(Error::Data(m)) => assert!(m.contains(says), "{says:?} not in {m}"),
            other => panic!("expected a refusal naming {says:?}, got {other:?}"),
        };

        let (j, mut x) = served(Some(&key), file);
        let v = verify_served(&mut x, &j, Some(2), &[public]).unwrap();
        assert_eq!((v.file, v.version), (file, 2));
        assert!(x.metadata.is_empty(), "the signature is taken out");
        let (j, mut x) = served(Some(&key), file);
        verify_served(&mut x, &j, None, &[public]).unwrap();

        // Another version than the one asked for.
        let (j, mut x) = served(Some(&key), file);
        refused(verify_served(&mut x, &j, Some(1), &[public]), "version");
        // An answer for another file than the exNode signed.
        let (mut j, mut x) = served(Some(&key), file);
        j.id = uuid::Uuid::new_v4().to_string();
        refused(verify_served(&mut x, &j, None, &[public]), "file UUID");
        // Unsigned, or signed by a key the trust directory lacks.
        let (j, mut x) = served(None, file);
        refused(verify_served(&mut x, &j, None, &[public]), "not signed");
        let (j, mut x) = served(Some(&key), file);
        refused(
            verify_served(&mut x, &j, None, &[]),
            "holds no metadata-manager key",
        );
        let (j, mut x) = served(Some(&key), file);
        refused(
            verify_served(&mut x, &j, None, &[[7; 32]]),
            "not a trusted metadata-manager key",
        );
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
    fn only_undelivered_requests_count_as_unsent() {
        let addr = || "h:1".to_owned();
        assert!(unsent(&HttpError::Connect {
            addr: addr(),
            why: "refused".into()
        }));
        assert!(unsent(&HttpError::Tls {
            addr: addr(),
            why: "x".into()
        }));
        assert!(unsent(&HttpError::Timeout {
            addr: addr(),
            what: "connection",
            secs: 5
        }));
        // Sent, answer lost: maybe applied.
        assert!(!unsent(&HttpError::Timeout {
            addr: addr(),
            what: "request",
            secs: 5
        }));
        assert!(!unsent(&HttpError::Protocol {
            addr: addr(),
            why: "broken pipe".into()
        }));
        // Our certificate refused: another replica would refuse it too.
        assert!(!unsent(&HttpError::CertificateRefused {
            addr: addr(),
            why: "x".into()
        }));
    }

    #[test]
    fn replica_lists() {
        let urls: Vec<&str> = split_urls(" https://a:1 ,https://b:2,, ").collect();
        assert_eq!(urls, ["https://a:1", "https://b:2"]);
        assert_eq!(
            crate::config::parse_urls("https://a:1, https://b:2").unwrap(),
            "https://a:1,https://b:2"
        );
        assert!(crate::config::parse_urls("https://a:1,http://b:2").is_err());
        assert!(crate::config::parse_urls(" , ").is_err());
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
    fn the_vo_a_request_acts_for() {
        let b = |j: &str| Some(j.as_bytes().to_vec());
        let vo = |route: &str, body: Option<Vec<u8>>| acting_vo(route, body.as_deref());
        assert_eq!(
            vo("/v1/stat", b(r#"{"path":"/vo2/a/b"}"#)).as_deref(),
            Some("vo2")
        );
        assert_eq!(
            vo("/v1/stat", b(r#"{"path":"/vo2"}"#)).as_deref(),
            Some("vo2")
        );
        assert_eq!(
            vo("/v1/move", b(r#"{"from":"/vo3/a","to":"/vo3/b"}"#)).as_deref(),
            Some("vo3")
        );
        assert_eq!(
            vo("/v1/usage", b(r#"{"vo":"vo4"}"#)).as_deref(),
            Some("vo4")
        );
        assert_eq!(vo("/v1/vos/vo5/members", None).as_deref(), Some("vo5"));
        assert_eq!(vo("/v1/whoami", None), None);
        assert_eq!(vo("/v1/keys/me", b(r#"{"public_key":"x"}"#)), None);
        // Nothing that is not a VO name goes into the header.
        assert_eq!(vo("/v1/stat", b(r#"{"path":"/v o/a"}"#)), None);
        assert_eq!(vo("/v1/vos/a%0Ab/members", None), None);
        assert_eq!(vo("/v1/stat", b("not json")), None);
    }

    #[test]
    fn vo_names_in_urls() {
        assert!(vo_segment("vo1").is_ok());
        for bad in ["", "a/b", "..", "a b", "a?b", "%2e"] {
            assert!(vo_segment(bad).is_err(), "{bad:?}");
        }
    }
}
