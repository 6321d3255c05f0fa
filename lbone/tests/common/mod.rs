//! Fixtures for the L-Bone's integration tests: a test PKI (CA, one AA per
//! VO, users made into proxies with VO attributes), real `ibp-depot`
//! processes, the real `lbone` binary, a stand-in depot that never answers,
//! and a private PostgreSQL cluster. Every wait is bounded.

#![allow(dead_code)]

pub use ibp_testkit::pg;
pub mod scenarios;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ibp_auth::pki::Authority;
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_testkit::clock::ProcessClock;
use ibp_testkit::process::Daemon;
use lors::depots::{DepotQuery, Offer};
use serde_json::Value;
use tempfile::TempDir;

pub const ORG: &str = "Test Grid";
/// Bound on starting a process and on every HTTP request.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one CLI invocation.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

pub const LBONE: &str = env!("CARGO_BIN_EXE_lbone");

/// Where the test may find or build sibling binaries: the lbone binary's
/// directory (`<target>/<profile>`).
fn bin_dir() -> PathBuf {
    PathBuf::from(LBONE)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds `ibp-depot` and `lors` into the lbone binary's target directory
/// once per test process (cargo is quick when they are up to date), so the
/// binaries used are never stale. Panics with a clear message if a binary
/// can be neither built nor found.
pub fn sibling_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = bin_dir();
    let path = dir.join(name);
    let built = BUILT.get_or_init(|| {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let Some(target) = dir.parent() else {
            return Err(format!("no target directory above {}", dir.display()));
        };
        let cargo = std::env::var("CARGO")
            .ok()
            .or_else(|| option_env!("CARGO").map(str::to_owned))
            .unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(&cargo);
        // What cargo set for this test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
        // ...) must not reach the build: build scripts such as ring's watch
        // those variables, and different values would rebuild them here and
        // again in the next ordinary build of the shared target directory.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || k == "OUT_DIR"
                || k == "RUST_RECURSION_COUNT"
            {
                cmd.env_remove(&key);
            }
        }
        cmd.args(["build", "-p", "ibp-depot", "-p", "lors", "--bins"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if profile == "release" {
            cmd.arg("--release");
        }
        match run_bounded(cmd, Duration::from_secs(900)) {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "`{cargo} build -p ibp-depot -p lors` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!(
                "cannot run `{cargo} build -p ibp-depot -p lors`: {e}"
            )),
        }
    });
    if let Err(e) = built {
        assert!(
            path.exists(),
            "{name} binary not found at {} and it could not be built: {e}",
            path.display()
        );
        eprintln!("warning: using the existing {} ({e})", path.display());
    }
    assert!(
        path.exists(),
        "{name} binary not found at {} after building it",
        path.display()
    );
    path
}

pub use ibp_testkit::run_bounded;

/// Polls `f` every 50 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub use ibp_testkit::pki::{pem_of, service_cert as issue_service, write};

/// A user of the test grid: a proxy file with VO attributes.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub vo: String,
    pub vo_id: String,
    pub proxy_path: PathBuf,
    pub credential: ProxyCredential,
}

/// CA, per-VO AAs, the L-Bone's server certificate and the test users.
pub struct Pki {
    pub pki: ibp_testkit::pki::Pki,
    pub ca: Authority,
    pub dir: PathBuf,
    /// What the L-Bone trusts: CA and the AAs of vo1 and vo2.
    pub server_trust: PathBuf,
    /// What clients trust: the CA, the AAs, and (after start) lbone.pub.
    pub client_trust: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let pki = ibp_testkit::pki::Pki::new(&["vo1", "vo2"]);
        let server_trust = dir.join("lbone-trust");
        let client_trust = dir.join("client-trust");
        for t in [&server_trust, &client_trust] {
            pki.write_trust(t, &["vo1", "vo2"]);
        }
        Pki {
            ca: pki.ca.clone(),
            pki,
            dir: dir.to_path_buf(),
            server_trust,
            client_trust,
        }
    }

    /// A user of `vo` with the given group names; attributes valid from
    /// `attr_from` to `attr_until` (relative seconds).
    pub fn user_with(
        &self,
        name: &str,
        vo: &str,
        groups: &[&str],
        attr_from: i64,
        attr_until: i64,
    ) -> User {
        let ids: Vec<String> = groups.iter().map(|g| format!("{vo}:group:{g}")).collect();
        let groups: Vec<(&str, &str)> = ids
            .iter()
            .map(String::as_str)
            .zip(groups.iter().copied())
            .collect();
        let member = self
            .pki
            .member(name, vo)
            .groups(&groups)
            .attributes_valid(attr_from, attr_until);
        let credential = member.proxy();
        let proxy_path = self.dir.join(format!("proxy-{name}"));
        credential.save(&proxy_path).unwrap();
        User {
            name: name.into(),
            vo: vo.into(),
            vo_id: member.id().to_owned(),
            proxy_path,
            credential,
        }
    }

    pub fn user(&self, name: &str, vo: &str, groups: &[&str]) -> User {
        self.user_with(name, vo, groups, -60, 6 * 3600)
    }

    /// The client trust store (with the L-Bone's grant key once started).
    pub fn client_trust_store(&self) -> TrustStore {
        TrustStore::load(&self.client_trust).unwrap()
    }
}

/// A real `ibp-depot` process; SIGKILLed on drop.
pub struct Depot {
    /// The legacy port; with `legacy = false` the TLS port (the depot has
    /// no legacy port, and registers its TLS port as `--port` too).
    pub port: u16,
    /// The secure (TLS) port, for a depot started with [`Depot::start_secure`].
    pub tls_port: Option<u16>,
    pub data: PathBuf,
    hard_size: String,
    log: PathBuf,
    daemon: Option<Daemon>,
}

/// How [`Depot::start_secure`] sets a depot's secure port up.
pub struct SecureDepot<'a> {
    /// Whether the legacy port is served as well (`legacy`).
    pub legacy: bool,
    /// Issues the depot's certificate (for 127.0.0.1).
    pub issuer: &'a Authority,
    /// The depot's trust directory (`ca/` authenticates the L-Bone).
    pub trust_dir: &'a Path,
    /// Bytes of its one resource.
    pub hard_size: u64,
}

impl Depot {
    /// Starts a depot with a fresh data directory under `dir`.
    pub fn start(dir: &Path, name: &str, hard_size: &str) -> Depot {
        let data = dir.join(format!("depot-{name}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut d = Depot {
            port: 0,
            tls_port: None,
            data,
            hard_size: hard_size.into(),
            log: dir.join(format!("depot-{name}.log")),
            daemon: None,
        };
        d.spawn(0);
        d
    }

    /// Starts a depot from a configuration file with a secure port (TLS
    /// 1.3 on 127.0.0.1, certificate from `opts.issuer`), serving vo1, with
    /// or without its legacy port. Not restartable.
    pub fn start_secure(dir: &Path, name: &str, opts: &SecureDepot<'_>) -> Depot {
        let ddir = dir.join(format!("depot-{name}"));
        let data = ddir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (cert, key) = issue_service(opts.issuer, name, &["127.0.0.1", "localhost"]);
        let (cert_path, key_path) = (ddir.join("depot.pem"), ddir.join("depot.key"));
        write(&cert_path, &pem_of("CERTIFICATE", &cert));
        ibp_auth::keys::write_secret(&key_path, pem_of("PRIVATE KEY", &key).as_bytes()).unwrap();
        let config = format!(
            r#"listen = "127.0.0.1:0"
legacy = {legacy}
hostname = "127.0.0.1"
tls_listen = "127.0.0.1:0"
tls_cert = {cert:?}
tls_key = {key:?}
trust_dir = {trust:?}

[[resource]]
rid = 0
data = {data:?}
hard_size = {size}
max_duration = "1d"

[[vo]]
name = "vo1"
max_size = {size}
max_duration = "1d"
"#,
            legacy = opts.legacy,
            cert = cert_path.display().to_string(),
            key = key_path.display().to_string(),
            trust = opts.trust_dir.display().to_string(),
            data = data.display().to_string(),
            size = opts.hard_size,
        );
        let config_path = ddir.join("depot.toml");
        write(&config_path, &config);
        let log = dir.join(format!("depot-{name}.log"));
        let mut cmd = Command::new(sibling_binary("ibp-depot"));
        cmd.args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info");
        // With the legacy port off, the first line names the TLS port.
        let daemon = Daemon::start(
            "ibp-depot (secure)",
            cmd,
            &log,
            &["listening on ", "tls listening on "],
        );
        Depot {
            port: daemon.addrs[0].port(),
            tls_port: Some(daemon.addrs[1].port()),
            data,
            hard_size: opts.hard_size.to_string(),
            log,
            daemon: Some(daemon),
        }
    }

    /// The depot's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self, port: u16) {
        if let Err(e) = self.try_spawn(port) {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self, port: u16) -> Result<(), String> {
        let mut cmd = Command::new(sibling_binary("ibp-depot"));
        cmd.args(["serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&self.data)
            .args(["--hard-size", &self.hard_size, "--max-duration", "1d"])
            .args(["--hostname", "127.0.0.1"])
            .env("RUST_LOG", "warn");
        let daemon = Daemon::try_start("ibp-depot", cmd, &self.log, &["listening on "])?;
        self.port = daemon.addr().port();
        self.daemon = Some(daemon);
        Ok(())
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.daemon = None;
    }

    /// Starts again on the same port and data directory (retrying for a
    /// while if the port is not free yet).
    pub fn restart(&mut self) {
        assert!(
            self.tls_port.is_none(),
            "a secure test depot cannot restart"
        );
        self.kill();
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_spawn(port) {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("restart on port {port}: {e}"),
            }
        }
    }
}

impl Drop for Depot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP listener that accepts connections and never answers: a depot
/// hung in STATUS.
pub struct HangingDepot {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl HangingDepot {
    pub fn start() -> HangingDepot {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        held.push(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HangingDepot {
            port,
            stop,
            accepted,
        }
    }
}

impl Drop for HangingDepot {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
}

/// Settings of one L-Bone under test.
#[derive(Clone)]
pub struct Settings {
    pub poll_interval: &'static str,
    pub poll_timeout: &'static str,
    pub missed_polls_down: u32,
    pub grant_lifetime: &'static str,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            poll_interval: "1s",
            poll_timeout: "3s",
            missed_polls_down: 2,
            grant_lifetime: "10m",
        }
    }
}

/// A running `lbone serve` with its PKI and database.
pub struct Grid {
    pub dir: TempDir,
    pub pki: Pki,
    pub addr: SocketAddr,
    pub url: String,
    pub log: PathBuf,
    pub settings: Settings,
    /// The L-Bone's wall clock, when started with [`Grid::start_on_clock`].
    pub clock: Option<ProcessClock>,
    daemon: Option<Daemon>,
    _db: Db,
}

impl Grid {
    pub fn start(db: Db, settings: Settings) -> Grid {
        Grid::start_with(db, settings, None)
    }

    /// [`Grid::start`] with the L-Bone on a wall clock the test moves.
    pub fn start_on_clock(db: Db, settings: Settings) -> Grid {
        Grid::start_with(db, settings, Some(ProcessClock::new()))
    }

    fn start_with(db: Db, settings: Settings, clock: Option<ProcessClock>) -> Grid {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let lbone_dir = dir.path().join("lbone");
        // `lbone init` makes the signing key, lbone.pub and a sample config.
        let mut init = Command::new(LBONE);
        init.args(["init", "--dir"])
            .arg(&lbone_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(init, CLI_TIMEOUT).unwrap();
        assert!(
            out.status.success(),
            "lbone init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::copy(lbone_dir.join("lbone.pub"), {
            let p = pki.client_trust.join("lbone/lbone.pub");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            p
        })
        .unwrap();
        // serverAuth and clientAuth: depots verify it when the L-Bone polls
        // their TLS ports.
        let (server_cert, server_key) =
            issue_service(&pki.ca, "lbone", &["localhost", "127.0.0.1"]);
        write(
            &lbone_dir.join("server.pem"),
            &pem_of("CERTIFICATE", &server_cert),
        );
        ibp_auth::keys::write_secret(
            &lbone_dir.join("server.key"),
            pem_of("PRIVATE KEY", &server_key).as_bytes(),
        )
        .unwrap();
        let database = match &db {
            Db::Sqlite => format!("sqlite://{}", lbone_dir.join("lbone.db").display()),
            Db::Postgres(pg) => pg.url.clone(),
        };
        let config = format!(
            r#"listen = "127.0.0.1:0"
server_cert = "server.pem"
server_key = "server.key"
trust_dir = "{trust}"
database = "{database}"
signing_key = "lbone.key"
poll_interval = "{pi}"
poll_timeout = "{pt}"
poll_concurrency = 8
missed_polls_down = {missed}
grant_lifetime = "{gl}"
admin_group = "admins"
"#,
            trust = pki.server_trust.display(),
            pi = settings.poll_interval,
            pt = settings.poll_timeout,
            missed = settings.missed_polls_down,
            gl = settings.grant_lifetime,
        );
        let cfg_path = lbone_dir.join("test.toml");
        write(&cfg_path, &config);
        let log = dir.path().join("lbone.log");
        let mut cmd = Command::new(LBONE);
        cmd.args(["serve", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "lbone=debug,info");
        if let Some(c) = &clock {
            c.apply(&mut cmd);
        }
        let daemon = Daemon::start("lbone serve", cmd, &log, &["listening on "]);
        let addr = daemon.addr();
        // The database is opened before the listener: its log line is there.
        let backend = match &db {
            Db::Sqlite => "backend=Sqlite",
            Db::Postgres(_) => "backend=Postgres",
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains(backend),
            "the L-Bone does not log {backend}:\n{text}"
        );
        Grid {
            url: format!("https://localhost:{}", addr.port()),
            addr,
            pki,
            log,
            settings,
            clock,
            daemon: Some(daemon),
            _db: db,
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The L-Bone's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `lbone admin --lbone URL --proxy P --trust T ARGS...`.
    pub fn admin(&self, user: &User, args: &[&str]) -> Output {
        let mut cmd = Command::new(LBONE);
        cmd.arg("admin")
            .args(["--lbone", &self.url])
            .arg("--proxy")
            .arg(&user.proxy_path)
            .arg("--trust")
            .arg(&self.pki.client_trust)
            .args(args)
            .env_remove("X509_USER_PROXY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_bounded(cmd, CLI_TIMEOUT).expect("run lbone admin")
    }

    /// Like [`Grid::admin`], asserting success; the JSON answer (`--json`).
    pub fn admin_ok(&self, user: &User, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.admin(user, &all);
        assert!(
            out.status.success(),
            "lbone admin {args:?} as {} failed: {}",
            user.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON from lbone admin --json")
    }

    /// Registers a depot for `admin`'s VO.
    pub fn register(&self, admin: &User, name: &str, port: u16, location: &str, extra: &[&str]) {
        let port = port.to_string();
        let mut args = vec![
            "register",
            "--vo",
            &admin.vo,
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--location",
            location,
        ];
        args.extend_from_slice(extra);
        self.admin_ok(admin, &args);
    }

    /// `POST /v1/query` through the lors library.
    pub fn query(&self, user: &User, q: &DepotQuery) -> Result<Offer, lors::Error> {
        let trust = self.pki.client_trust_store();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(
                START_TIMEOUT,
                lors::depots::query_offer(&self.url, &trust, &user.credential, q),
            )
            .await
            .expect("query within the timeout")
        })
    }

    pub fn query_ok(&self, user: &User, q: &DepotQuery) -> Offer {
        self.query(user, q)
            .unwrap_or_else(|e| panic!("query as {} failed: {e}", user.name))
    }

    /// Names of the depots a query offers, in order.
    pub fn offered(&self, user: &User, q: &DepotQuery) -> Vec<String> {
        self.query_ok(user, q)
            .depots
            .into_iter()
            .map(|d| d.name)
            .collect()
    }

    /// `GET path` without a client certificate: (status, body).
    pub fn get_anonymous(&self, path: &str) -> (u16, Vec<u8>) {
        let trust = self.pki.client_trust_store();
        let tls = ibp_auth::tls::client_config(&trust, None).unwrap();
        let client =
            ibp_https::Client::new(ibp_https::BaseUrl::parse(&self.url).unwrap(), tls, false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(client.get(path))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status, r.body)
    }

    /// `GET /status.json`.
    pub fn status_json(&self) -> Value {
        let (status, body) = self.get_anonymous("/status.json");
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// A depot's entry in `/status.json`.
    pub fn depot_status(&self, vo: &str, name: &str) -> Value {
        let s = self.status_json();
        s["vos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["vo"] == vo)
            .flat_map(|v| v["depots"].as_array().cloned().unwrap_or_default())
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{vo}/{name} not in /status.json: {s}"))
    }

    pub fn is_available(&self, vo: &str, name: &str) -> bool {
        self.depot_status(vo, name)["status"]["available"] == true
    }

    /// Waits until every named depot of `vo` is available.
    pub fn wait_available(&self, vo: &str, names: &[&str]) {
        wait_for(Duration::from_secs(20), "depots to come up", || {
            names.iter().all(|n| self.is_available(vo, n)).then_some(())
        });
    }
}

impl Grid {
    /// SIGTERM, and how the L-Bone ended and how long it took (SIGKILL
    /// after 15 s).
    pub fn stop(&mut self) -> (Option<std::process::ExitStatus>, Duration) {
        match self.daemon.take() {
            Some(mut d) => d.stop(),
            None => (None, Duration::ZERO),
        }
    }

    /// Starts another `lbone serve` on the same configuration and database
    /// (an instance beside this one), logging to `<name>.log`.
    pub fn start_instance(&self, name: &str) -> Daemon {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(LBONE);
        cmd.args(["serve", "--config"])
            .arg(self.dir.path().join("lbone/test.toml"))
            .env("RUST_LOG", "lbone=debug,info");
        Daemon::start(name, cmd, &log, &["listening on "])
    }

    /// SIGKILLs this grid's L-Bone (the instance `start` began).
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Moves the L-Bone's wall clock `secs` forward (a grid started with
    /// [`Grid::start_on_clock`]).
    pub fn advance_clock(&self, secs: i64) {
        self.clock
            .as_ref()
            .expect("a grid started on a clock")
            .advance(secs);
    }

    /// Stops the PostgreSQL cluster under a running L-Bone (a database
    /// outage); no-op for SQLite.
    pub fn stop_database(&mut self) {
        self._db = Db::Sqlite;
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        self.stop();
    }
}
