//! Fixtures for the metadata manager's integration tests: a test PKI (CA,
//! one attribute authority per VO, users made into proxies with VO
//! attributes and groups), the real `metadata-manager` binary started with
//! a generated configuration, a JSON client per user, exNodes built with
//! the `exnode` model, and a private PostgreSQL cluster. Every wait is
//! bounded.

#![allow(dead_code)]

pub use ibp_testkit::pg;
pub mod scenarios;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use exnode::{Exnode, Mapping};
use ibp_auth::pki::Authority;
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_testkit::process::Daemon;
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

pub const ORG: &str = "Test Grid";
/// Bound on starting a process and on every HTTP request.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one CLI invocation.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a whole scenario.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

pub const MDM: &str = env!("CARGO_BIN_EXE_metadata-manager");

/// Runs a scenario on a multi-threaded runtime within [`SCENARIO_TIMEOUT`].
pub fn run<F: Future<Output = ()>>(scenario: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
            .await
            .expect("the scenario finished within its time bound")
    });
}

pub use ibp_testkit::run_bounded;

pub use ibp_testkit::pki::{pem_of, write};

/// A user of the test grid: a proxy with VO attributes.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub vo: String,
    pub vo_id: String,
    pub credential: ProxyCredential,
}

impl User {
    /// The user's ACL principal, `user:ID@VO`.
    pub fn principal(&self) -> String {
        format!("user:{}@{}", self.vo_id, self.vo)
    }

    /// SHA-256 of the proxy's public key, to which tickets are bound.
    pub fn key_hash(&self) -> [u8; 32] {
        self.credential.key_hash().unwrap()
    }
}

/// The ID the AA gives the group called `name` (IDs and names differ, so
/// that resolving a name to its ID is tested).
pub fn group_id(name: &str) -> String {
    format!("gid-{name}")
}

/// CA and per-VO AAs; what the manager and the clients trust.
pub struct Pki {
    pub pki: ibp_testkit::pki::Pki,
    pub ca: Authority,
    pub aas: Vec<(String, Authority)>,
    pub dir: PathBuf,
    /// What the manager trusts: the CA and the AAs of vo1 and vo2 (not vo3).
    pub server_trust: PathBuf,
    /// What clients trust: the CA, the AAs and (after start) metadata.pub.
    pub client_trust: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let pki = ibp_testkit::pki::Pki::new(&["vo1", "vo2", "vo3"]);
        let server_trust = dir.join("mdm-trust");
        let client_trust = dir.join("client-trust");
        for t in [&server_trust, &client_trust] {
            pki.write_trust(t, &["vo1", "vo2"]);
        }
        Pki {
            ca: pki.ca.clone(),
            aas: pki.aas.clone(),
            pki,
            dir: dir.to_path_buf(),
            server_trust,
            client_trust,
        }
    }

    /// A user of `vo` with VO ID `vo_id` and the given group names.
    pub fn user(&self, name: &str, vo: &str, vo_id: &str, groups: &[&str]) -> User {
        mint_user(&self.ca, self.pki.aa(vo), name, vo, vo_id, groups)
    }

    pub fn client_trust_store(&self) -> TrustStore {
        TrustStore::load(&self.client_trust).unwrap()
    }
}

/// A proxy credential: a user certificate from `ca`, VO attributes signed
/// by `aa`.
pub fn mint_user(
    ca: &Authority,
    aa: &Authority,
    name: &str,
    vo: &str,
    vo_id: &str,
    groups: &[&str],
) -> User {
    let pki = ibp_testkit::pki::Pki {
        ca: ca.clone(),
        aas: Vec::new(),
    };
    let ids: Vec<String> = groups.iter().map(|g| group_id(g)).collect();
    let groups: Vec<(&str, &str)> = ids
        .iter()
        .map(String::as_str)
        .zip(groups.iter().copied())
        .collect();
    let credential = pki
        .member(name, vo)
        .vo_id(vo_id)
        .groups(&groups)
        .signed_by(aa)
        .proxy();
    User {
        name: name.into(),
        vo: vo.into(),
        vo_id: vo_id.into(),
        credential,
    }
}

/// The database under test.
pub enum Db {
    Sqlite,
    Postgres(pg::PgCluster),
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite
    }

    pub fn postgres() -> Db {
        Db::Postgres(pg::PgCluster::start())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }
}

/// Settings of the manager under test.
#[derive(Clone)]
pub struct Settings {
    pub ticket_lifetime: &'static str,
    /// `""`: the manager's default.
    pub max_exnode: &'static str,
    /// More configuration lines (quotas, the body budget).
    pub extra: &'static str,
    /// Versions kept of each file (the suite keeps them all unless a
    /// scenario tests retention).
    pub keep_versions: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            ticket_lifetime: "10m",
            max_exnode: "1MiB",
            extra: "",
            keep_versions: 1000,
        }
    }
}

/// One `metadata-manager serve` process.
pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub log: PathBuf,
    daemon: Option<Daemon>,
}

impl Server {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// `VmRSS` and `VmHWM` (peak) of the process, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let pid = self.pid().expect("a running server");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and how the process ended and how long it took (SIGKILL
    /// after 15 s).
    pub fn stop(&mut self) -> (Option<std::process::ExitStatus>, Duration) {
        match self.daemon.take() {
            Some(mut d) => d.stop(),
            None => (None, Duration::ZERO),
        }
    }
}

/// A running metadata manager with its PKI and database. More server
/// processes on the same configuration (and database) can be started with
/// [`Grid::spawn_server`].
pub struct Grid {
    pub pki: Pki,
    pub server: Server,
    pub settings: Settings,
    pub config: PathBuf,
    pub db_is_postgres: bool,
    pub dir: TempDir,
    // Dropped last: servers stop before their database.
    _db: Db,
}

impl Grid {
    pub fn start(db: Db, settings: Settings) -> Grid {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let mdm_dir = dir.path().join("mdm");
        // `metadata-manager init` makes the signing key and metadata.pub.
        let mut init = Command::new(MDM);
        init.args(["init", "--dir"])
            .arg(&mdm_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(init, CLI_TIMEOUT).unwrap();
        assert!(
            out.status.success(),
            "metadata-manager init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A depot's trust directory holds metadata/*.pub.
        let p = pki.client_trust.join("metadata/metadata.pub");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(mdm_dir.join("metadata.pub"), p).unwrap();
        let server = pki
            .ca
            .issue_server(&["localhost", "127.0.0.1"], 30)
            .unwrap();
        write(
            &mdm_dir.join("server.pem"),
            &pem_of("CERTIFICATE", &server.cert_der),
        );
        ibp_auth::keys::write_secret(
            &mdm_dir.join("server.key"),
            pem_of("PRIVATE KEY", &server.key_pkcs8).as_bytes(),
        )
        .unwrap();
        let database = match &db {
            Db::Sqlite => format!("sqlite://{}", mdm_dir.join("metadata.db").display()),
            Db::Postgres(pg) => pg.url.clone(),
        };
        let config = format!(
            r#"listen = "127.0.0.1:0"
server_cert = "server.pem"
server_key = "server.key"
trust_dir = "{trust}"
database = "{database}"
signing_key = "metadata.key"
ticket_lifetime = "{tl}"
{mx}
admin_group = "admins"
max_connections = 64
db_connections = 4
keep_versions = {keep}
{extra}
"#,
            trust = pki.server_trust.display(),
            tl = settings.ticket_lifetime,
            mx = if settings.max_exnode.is_empty() {
                String::new()
            } else {
                format!("max_exnode = \"{}\"", settings.max_exnode)
            },
            extra = settings.extra,
            keep = settings.keep_versions,
        );
        let cfg_path = mdm_dir.join("test.toml");
        write(&cfg_path, &config);
        let db_is_postgres = db.is_postgres();
        let server = spawn(&cfg_path, &dir.path().join("mdm-0.log"), db_is_postgres);
        Grid {
            pki,
            server,
            settings,
            config: cfg_path,
            db_is_postgres,
            dir,
            _db: db,
        }
    }

    /// Another server process on the same configuration and database.
    pub fn spawn_server(&self, n: usize) -> Server {
        spawn(
            &self.config,
            &self.dir.path().join(format!("mdm-{n}.log")),
            self.db_is_postgres,
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client of the main server acting as `user`.
    pub fn client(&self, user: &User) -> As {
        self.client_of(&self.server, user)
    }

    /// A client of `server` acting as `user`.
    pub fn client_of(&self, server: &Server, user: &User) -> As {
        let trust = self.pki.client_trust_store();
        let tls = ibp_auth::tls::client_config(&trust, Some(&user.credential)).unwrap();
        let mut client =
            ibp_https::Client::new(ibp_https::BaseUrl::parse(&server.url).unwrap(), tls, true)
                .with_keep_alive(4);
        client.total_timeout = START_TIMEOUT;
        As {
            client,
            user: Some(user.clone()),
        }
    }

    /// A client that presents no certificate.
    pub fn anonymous(&self) -> As {
        let trust = self.pki.client_trust_store();
        let tls = ibp_auth::tls::client_config(&trust, None).unwrap();
        let mut client = ibp_https::Client::new(
            ibp_https::BaseUrl::parse(&self.server.url).unwrap(),
            tls,
            false,
        );
        client.total_timeout = START_TIMEOUT;
        As { client, user: None }
    }

    /// A client presenting an arbitrary credential (of an untrusted CA...).
    pub fn client_with(&self, credential: &ProxyCredential) -> As {
        let trust = self.pki.client_trust_store();
        let tls = ibp_auth::tls::client_config(&trust, Some(credential)).unwrap();
        let mut client = ibp_https::Client::new(
            ibp_https::BaseUrl::parse(&self.server.url).unwrap(),
            tls,
            true,
        );
        client.total_timeout = START_TIMEOUT;
        As { client, user: None }
    }

    /// The users' first contact: each is recorded as a member (and their
    /// groups as known), so that ACLs can name them.
    pub async fn introduce(&self, users: &[&User]) {
        for u in users {
            let who = self.client(u).get("/v1/whoami").await.ok();
            assert_eq!(who["vo_id"], u.vo_id.as_str());
        }
    }
}

/// Starts `metadata-manager serve --config CFG` and waits for its address.
fn spawn(cfg_path: &Path, log: &Path, postgres: bool) -> Server {
    spawn_with_umask(cfg_path, log, postgres, None)
}

/// [`spawn`], the process running under `umask` if given.
pub fn spawn_with_umask(
    cfg_path: &Path,
    log: &Path,
    postgres: bool,
    umask: Option<libc::mode_t>,
) -> Server {
    let mut cmd = Command::new(MDM);
    cmd.args(["serve", "--config"])
        .arg(cfg_path)
        .env("RUST_LOG", "metadata_manager=debug,info")
        .env("NO_COLOR", "1");
    if let Some(mask) = umask {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask(2) is async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            });
        }
    }
    let daemon = Daemon::start("metadata-manager serve", cmd, log, &["listening on "]);
    // The database is opened before the listener: its log line is there.
    let backend = if postgres { "Postgres" } else { "Sqlite" };
    let text = daemon.log_text();
    assert!(
        text.lines()
            .any(|l| l.contains("database ready") && l.contains(backend)),
        "the metadata manager does not log {backend}:\n{text}"
    );
    Server {
        url: format!("https://localhost:{}", daemon.addr().port()),
        addr: daemon.addr(),
        log: log.to_path_buf(),
        daemon: Some(daemon),
    }
}

/// An answer: status and JSON body (`Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// Asserts 200 and returns the body.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {self:?}");
        self.body
    }

    /// Asserts the status and that the error message contains `needle`;
    /// returns the message.
    #[track_caller]
    pub fn refused(self, status: u16, needle: &str) -> String {
        let msg = self.body["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            self.status, status,
            "expected {status} ({needle}), got {self:?}"
        );
        assert!(
            msg.contains(needle),
            "error {msg:?} (status {status}) does not contain {needle:?}"
        );
        msg
    }
}

/// A JSON client acting as one user.
#[derive(Clone)]
pub struct As {
    pub client: ibp_https::Client,
    pub user: Option<User>,
}

impl As {
    pub fn user(&self) -> &User {
        self.user.as_ref().expect("a client acting as a user")
    }

    pub async fn try_call(
        &self,
        method: ibp_https::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ibp_https::HttpError> {
        let r = self.client.request(method, path, body).await?;
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Ok(Reply {
            status: r.status,
            body,
        })
    }

    async fn call(&self, method: ibp_https::Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        self.try_call(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(ibp_https::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(
            ibp_https::Method::POST,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(
            ibp_https::Method::PUT,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    /// `POST path` with raw bytes as the body.
    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Reply {
        self.call(ibp_https::Method::POST, path, Some(body.to_vec()))
            .await
    }

    // ---- the API, one helper per call ------------------------------

    pub async fn mkdir(&self, path: &str) -> Reply {
        self.post("/v1/mkdir", json!({ "path": path })).await
    }

    pub async fn mkdir_p(&self, path: &str) -> Reply {
        self.post("/v1/mkdir", json!({ "path": path, "parents": true }))
            .await
    }

    pub async fn put_doc(
        &self,
        path: &str,
        base: u64,
        doc: &str,
        wrapped: &[(&str, &str)],
    ) -> Reply {
        let keys: Vec<Value> = wrapped
            .iter()
            .map(|(r, w)| json!({ "recipient": r, "wrapped": w }))
            .collect();
        self.post(
            "/v1/put",
            json!({ "path": path, "base_version": base, "exnode": doc, "wrapped_keys": keys }),
        )
        .await
    }

    pub async fn put_ex(&self, path: &str, base: u64, ex: &Exnode) -> Reply {
        self.put_doc(path, base, &exnode::to_xml(ex), &[]).await
    }

    /// Creates a file of `size` bytes with a fresh UUID; returns the UUID.
    pub async fn create(&self, path: &str, size: u64) -> Uuid {
        let id = Uuid::new_v4();
        let r = self.put_ex(path, 0, &exnode_of(id, size, 1)).await.ok();
        assert_eq!(r["version"], 1);
        assert_eq!(r["id"], id.to_string());
        id
    }

    pub async fn get_file(&self, path: &str) -> Reply {
        self.post("/v1/get", json!({ "path": path })).await
    }

    pub async fn get_version(&self, path: &str, version: u64) -> Reply {
        self.post("/v1/get", json!({ "path": path, "version": version }))
            .await
    }

    pub async fn ticket(&self, path: &str) -> Reply {
        self.post("/v1/ticket", json!({ "path": path })).await
    }

    pub async fn stat(&self, path: &str) -> Reply {
        self.post("/v1/stat", json!({ "path": path })).await
    }

    pub async fn list(&self, path: &str) -> Reply {
        self.post("/v1/list", json!({ "path": path })).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.post("/v1/delete", json!({ "path": path })).await
    }

    pub async fn mv(&self, from: &str, to: &str) -> Reply {
        self.post("/v1/move", json!({ "from": from, "to": to }))
            .await
    }

    pub async fn acl_get(&self, path: &str) -> Reply {
        self.post("/v1/acl/get", json!({ "path": path })).await
    }

    /// Sets the access entries, `(principal, rights)`.
    pub async fn acl_set(&self, path: &str, access: &[(&str, &str)]) -> Reply {
        self.post(
            "/v1/acl/set",
            json!({ "path": path, "access": entries(access) }),
        )
        .await
    }

    /// Sets the default entries of a directory.
    pub async fn acl_default(&self, path: &str, default: &[(&str, &str)]) -> Reply {
        self.post(
            "/v1/acl/set",
            json!({ "path": path, "default": entries(default) }),
        )
        .await
    }
}

/// ACL entries as JSON.
pub fn entries(list: &[(&str, &str)]) -> Vec<Value> {
    list.iter()
        .map(|(p, r)| json!({ "principal": p, "rights": r }))
        .collect()
}

/// `(principal, rights)` pairs of an ACL answer's list.
pub fn acl_pairs(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["principal"].as_str().unwrap_or_default().to_owned(),
                        e["rights"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Depot of every test mapping.
pub const DEPOT: &str = "127.0.0.1:6714";
/// Block size of test exNodes.
pub const BLOCK: u64 = 1000;

/// A mapping of `[offset, offset + length)` holding `alloc` bytes, with
/// read/write/manage capabilities named after `tag`.
pub fn mapping(offset: u64, length: u64, alloc: u64, tag: &str) -> Mapping {
    Mapping {
        logical_offset: offset,
        logical_length: length,
        alloc_offset: 0,
        alloc_length: alloc,
        read: Some(format!("ibp://{DEPOT}/0#r{tag}/123/READ")),
        write: Some(format!("ibp://{DEPOT}/0#w{tag}/123/WRITE")),
        manage: Some(format!("ibp://{DEPOT}/0#m{tag}/123/MANAGE")),
        depot: DEPOT.into(),
        ..Mapping::default()
    }
}

/// A valid exNode: `size` bytes in blocks of [`BLOCK`], each held by
/// `replicas` mappings (so stored = replicas × size).
pub fn exnode_of(file: Uuid, size: u64, replicas: u32) -> Exnode {
    let mut mappings = Vec::new();
    let mut off = 0;
    let tag = &file.simple().to_string()[..8];
    while off < size {
        let len = BLOCK.min(size - off);
        for r in 0..replicas {
            mappings.push(mapping(off, len, len, &format!("{tag}-{off}-{r}")));
        }
        off += len;
    }
    Exnode {
        file: Some(file),
        size,
        block_size: Some(BLOCK),
        mappings,
        ..Exnode::default()
    }
}

/// The manage capabilities [`exnode_of`] puts in an exNode.
pub fn manage_caps(file: Uuid, size: u64, replicas: u32) -> Vec<String> {
    exnode_of(file, size, replicas)
        .manage_capabilities()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The same, encrypted (data key wrapped elsewhere).
pub fn encrypted_exnode(file: Uuid, size: u64) -> Exnode {
    let mut ex = exnode_of(file, size, 1);
    ex.encryption = Some(exnode::Encryption {
        cipher: exnode::Cipher::Aes128Ctr,
        key_id: format!("k-{}", &file.simple().to_string()[..8]),
        iv: exnode::IvDerivation::UuidBlock,
    });
    ex
}

/// An `x25519 <base64>` public key from a byte.
pub fn x25519(b: u8) -> String {
    use base64::Engine as _;
    format!(
        "x25519 {}",
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    )
}

/// An exNode as `lors upload` writes it (transfer/upload.rs): `size` bytes
/// in blocks of `block`, each block on `copies` depots, every mapping with
/// the three capabilities of a real depot (`IBP-` + 90 alphanumerics, a
/// 10-digit typekey), a depot name of a real grid's length, security,
/// expiry and a BLAKE3 checksum; encrypted, with a file name. The shape the
/// default `max_exnode` is derived from (docs/metadata-manager.md).
pub fn lors_exnode(file: Uuid, size: u64, block: u64, copies: u32) -> Exnode {
    let mut mappings = Vec::new();
    let mut off = 0u64;
    let mut n = 0u64;
    while off < size {
        let len = block.min(size - off);
        for c in 0..copies {
            n += 1;
            let depot = format!(
                "depot{:02}.storage.example.org:6715",
                (n + u64::from(c)) % 100
            );
            let key = format!(
                "IBP-{:0>90}",
                format!("{:x}{}", n * 7919 + u64::from(c), file.simple())
            );
            let cap = |kind: &str, tk: u64| format!("ibp://{depot}/0#{key}/{tk}/{kind}");
            mappings.push(Mapping {
                logical_offset: off,
                logical_length: len,
                alloc_offset: 0,
                alloc_length: len,
                read: Some(cap("READ", 1_000_000_000 + n * 3)),
                write: Some(cap("WRITE", 2_000_000_000 + n * 5)),
                manage: Some(cap("MANAGE", 3_000_000_000 + n * 7)),
                depot: depot.clone(),
                security: Some(exnode::Security::Full),
                expires: Some(1_900_000_000 + n as i64),
                checksum: Some(exnode::Checksum::Blake3(*blake3_like(n).as_bytes())),
                ..Mapping::default()
            });
        }
        off += len;
    }
    Exnode {
        file: Some(file),
        size,
        filename: Some("simulation-output-2026-12-06.h5".into()),
        block_size: Some(block),
        encryption: Some(exnode::Encryption {
            cipher: exnode::Cipher::Aes128Ctr,
            key_id: format!("k-{}", file.simple()),
            iv: exnode::IvDerivation::UuidBlock,
        }),
        mappings,
        ..Exnode::default()
    }
}

/// 32 bytes that look random (a checksum's hex is incompressible in size).
fn blake3_like(n: u64) -> Digest32 {
    let mut b = [0u8; 32];
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for v in b.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
    Digest32(b)
}

pub struct Digest32([u8; 32]);

impl Digest32 {
    fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}
