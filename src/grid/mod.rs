//! A whole storage grid of real processes on loopback, for the `lors`
//! integration tests, end-to-end fault tests and benchmarks.
//!
//! [`Grid::start`] runs, each from its real binary and in its own directory
//! under one temporary grid directory:
//!
//! - the **online CA** (`online-ca init`, then `online-ca serve` with the
//!   local users file), VO `vo1` with its attribute authority;
//! - the **L-Bone** (`lbone init`, `lbone serve`) polling depots every
//!   [`GridOptions::lbone_poll_interval`];
//! - the **metadata manager** (`metadata-manager init`, `serve`);
//! - [`GridOptions::depots`] **depots** (`ibp-depot serve --config`), with a
//!   legacy port, a TLS port (unless [`GridOptions::legacy_only`]) and a
//!   crypto-level data port (with [`GridOptions::data_port`]), serving `vo1`.
//!
//! Every daemon listens on `127.0.0.1:0`; the addresses come from the
//! `listening on` lines of its stdout. With [`GridOptions::hosts`] every
//! daemon is on a host of its own instead (a network namespace with its
//! own address and name, the documented ports, links with a delay, a rate
//! and partitions under the test's control): [`netns`]. Its stderr goes to `stderr.log` and
//! its stdout to `stdout.log` in its directory; a daemon that fails to start
//! makes [`Grid::start`] fail with the tail of its log.
//!
//! **PKI.** The CA and the VO's attribute authority are the online CA's own
//! (`online-ca init`); the trust directory `trust/` is the CA's `trust/`
//! plus the L-Bone's `lbone.pub` in `trust/lbone/` and the metadata
//! manager's `metadata.pub` in `trust/metadata/`, as docs/lbone.md and
//! docs/metadata-manager.md say, so depots accept L-Bone grants and MDM
//! tickets. The L-Bone, the metadata manager and every depot get their own
//! server certificate for `localhost`/`127.0.0.1` from that CA (serverAuth
//! and clientAuth, so a depot can be the source of a secure COPY). Every
//! service and every client use the same `trust/`.
//!
//! **Users** log in for real: each user of [`GridOptions::users`] is made a
//! member of `vo1` with `online-ca admin member add` (the
//! [`GridOptions::admins`], by default alice, also in group `admins`, the
//! default `admin_group` of both the L-Bone and the metadata manager, so
//! they are VO admins at both), and gets its proxy with
//! `lors login --method local --password-stdin` against the running CA.
//! One shortcut: the users file entries (`name:<argon2id PHC hash>`) are
//! written by the harness with cheap argon2id parameters (64 KiB, one pass)
//! instead of `online-ca admin user add`, whose default parameters (19 MiB,
//! two passes) take seconds per hash in a debug build; the CA verifies them
//! like any other (the parameters travel in the PHC string).
//!
//! **Depots** are registered with the L-Bone by the first admin through
//! `lbone admin register` (the VO admin's way), with a vo1 policy of
//! `depot_hard_size` bytes and 30 days, and the grid waits until the L-Bone
//! reports all of them `up`.
//!
//! **Binaries** come from cargo ([`binaries`]): the first grid of a process
//! runs `cargo build [--release] -p <pkg> --bin <name>` for all seven
//! binaries (the five programs, and `lors-upload`/`lors-download`; profile `debug` or `release`, [`GridOptions::release`]) in the
//! cargo target directory (`CARGO_TARGET_DIR`, relative to the workspace
//! root; else the target directory of the running test executable; else
//! `<workspace>/target`), and cargo decides what is stale and says where
//! each executable is; when nothing changed that costs only cargo's
//! fingerprint check. `IBP_GRID_BIN_DIR` names a directory holding all seven
//! binaries to use as they are. A failed build falls back to existing
//! (stale) binaries with a warning; missing binaries are an error, never a
//! skip.
//!
//! **Files.** The grid directory holds every party's secrets (the CA's
//! key, users' proxies, the metadata manager's database with every file's
//! capabilities), so it is private whatever the caller's umask: the grid
//! directory and every directory the harness makes are created 0700, every
//! file it writes (configurations, keys, users file, copied trust files,
//! logs) 0600, and every process it starts (daemons, `init`s, `lors`)
//! runs with umask 077, so what they create (databases, data, logs) is
//! owner-only too.
//!
//! **Processes** are killed (SIGKILL) and reaped when the [`Grid`] is
//! dropped; they are also spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so they die with the test process even if
//! it is killed. The grid directory is removed on drop unless
//! `IBP_GRID_KEEP` (or `KEEP`) is set to a non-empty value other than `0`.
//!
//! Every wait is bounded in time.

//!
//! The module's parts: `binaries` (asking cargo),
//! `process` (spawning and supervising children), `files` (the private
//! grid directory), `pki` (trust directory, certificates, password
//! hashes), `config` (each daemon's configuration file), `daemons`
//! (services and depots: start, kill, restart), `users` (membership,
//! logins, `lors` environment) and `lbone` (registering depots, status).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

mod binaries;
mod config;
mod daemons;
mod files;
mod lbone;
pub mod netns;
mod pki;
mod process;
mod users;
pub mod wan;

pub use binaries::{binaries, cargo_binaries, target_dir, workspace_root, Binaries};
pub use daemons::Depot;
pub use netns::{Host, HostsOptions, Network, Role};
pub use users::GridUser;

use daemons::Service;
use files::GridDir;
use process::{clean_command, run_cli, START_TIMEOUT};
use users::LoginEnv;

/// The VO of the grid.
pub const VO: &str = "vo1";
/// The grid's second VO ([`GridOptions::vo2`]).
pub const VO2: &str = "vo2";
/// `O=` of the grid's certificates.
pub const ORG: &str = "Test Grid";
/// The admin group (the L-Bone's and the metadata manager's default).
pub const ADMIN_GROUP: &str = "admins";

/// Bound on the L-Bone seeing the depots during [`Grid::start`].
const LBONE_TIMEOUT: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Debug, Clone)]
pub struct GridOptions {
    /// Number of depots (default 3).
    pub depots: usize,
    /// Bytes of the one resource of each depot (HARD and total), also the
    /// vo1 `max_size` at the depot and in the L-Bone policy (default 2 GiB).
    pub depot_hard_size: u64,
    /// Depots without a TLS port (plain IBP only; registered without one).
    pub legacy_only: bool,
    /// Indices of depots whose legacy port is switched off (`legacy =
    /// false`): they serve only the TLS port, which the L-Bone polls. Their
    /// [`Depot::legacy_addr`] is their TLS address.
    pub legacy_off: Vec<usize>,
    /// Depots with a crypto-level data port (`data_listen`).
    pub data_port: bool,
    /// Users of vo1 (default alice, bob, carol).
    pub users: Vec<String>,
    /// Users who are also in the `admins` group of vo1: VO admins at the
    /// L-Bone and the metadata manager (default alice). The first one
    /// registers the depots.
    pub admins: Vec<String>,
    /// Release binaries (benchmarks) instead of debug ones (tests).
    pub release: bool,
    /// The L-Bone's `poll_interval` (default 500 ms); `missed_polls_down`
    /// is 2 and `poll_timeout` 2 s.
    pub lbone_poll_interval: Duration,
    /// Per-depot overrides of [`GridOptions::depot_hard_size`] (index =
    /// depot): a depot with a small resource fills up.
    pub depot_hard_sizes: Vec<u64>,
    /// Where to make the grid directory (default: a new temporary
    /// directory). It must not exist or be empty.
    pub dir: Option<PathBuf>,
    /// The metadata manager's database URL (default: a SQLite file in its
    /// directory), e.g. a PostgreSQL cluster's for replicas.
    pub mdm_database: Option<String>,
    /// Metadata-manager processes on that one database (default 1): the
    /// first is [`Grid::mdm_url`]; each has its own ticket-signing key, all
    /// of them in the trust directory, and `lors` is given every URL.
    /// More than one needs `mdm_database` (a shared server database).
    pub mdm_replicas: usize,
    /// vo1 is pseudonymous at the online CA (`[vos.vo1] pseudonymous =
    /// true`): certificates say `CN=pseudonym:<p>`, not `CN=local:<user>`.
    pub pseudonymous: bool,
    /// The `vomsdir` of the L-Bone, the metadata manager and every TLS
    /// depot (docs/identity.md, "VOMS credentials"); default none: they
    /// refuse standard VOMS proxies.
    pub vomsdir: Option<PathBuf>,
    /// PEM files of further CAs copied into the grid's `trust/ca/` and
    /// the online CA's (e.g. the CA of a test's VOMS server and users, or
    /// of a grid certificate a member links).
    pub extra_cas: Vec<PathBuf>,
    /// The online CA's `voms_uri` (`host:port`): its logins then also
    /// carry a standard VOMS AC (default none).
    pub ca_voms_uri: Option<String>,
    /// A second VO, [`VO2`]: its attribute authority at the online CA
    /// (`init --vo vo1 --vo vo2`) and a `[[vo]]` for it at every TLS
    /// depot. Nobody is a member and no depot is registered for it until
    /// a test says so (`online-ca admin member add --vo vo2`,
    /// [`Grid::register_depots_for`]).
    pub vo2: bool,
    /// Every daemon on its own host: a network namespace with its own
    /// address and name, its link's delay, rate and partitions under the
    /// test's control ([`Grid::network`], [`netns`]); `lors` and the admin
    /// commands run on a `client` host. Default none: everything on
    /// loopback.
    pub hosts: Option<HostsOptions>,
}

impl GridOptions {
    /// Refuses options that contradict each other or name unknown users.
    fn check(&self) -> anyhow::Result<()> {
        let opts = self;
        if opts.legacy_only && opts.data_port {
            bail!("a data port needs the TLS port: legacy_only and data_port exclude each other");
        }
        if opts.legacy_only && !opts.legacy_off.is_empty() {
            bail!("a depot without its legacy port needs the TLS port: legacy_only and legacy_off exclude each other");
        }
        if let Some(i) = opts.legacy_off.iter().find(|i| **i >= opts.depots) {
            bail!("legacy_off names depot {i} of {}", opts.depots);
        }
        for (i, u) in opts.users.iter().enumerate() {
            if u.is_empty()
                || !u
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                bail!("bad user name {u:?}");
            }
            if opts.users[..i].contains(u) {
                bail!("user {u:?} given twice");
            }
        }
        if let Some(a) = opts.admins.iter().find(|a| !opts.users.contains(a)) {
            bail!("admin {a:?} is not among the users");
        }
        if opts.depots > 0 && opts.admins.is_empty() {
            bail!("registering depots needs an admin");
        }
        if opts.mdm_replicas == 0 {
            bail!("mdm_replicas: at least one metadata manager");
        }
        if opts.mdm_replicas > 1 && opts.mdm_database.is_none() {
            bail!("metadata-manager replicas share a server database: set mdm_database");
        }
        if opts.hosts.is_some()
            && (opts.data_port || opts.legacy_only || !opts.legacy_off.is_empty())
        {
            bail!("a grid on hosts has depots with both the legacy and the TLS port, no data port");
        }
        Ok(())
    }

    /// The hard size of depot `i`.
    pub fn hard_size(&self, i: usize) -> u64 {
        self.depot_hard_sizes
            .get(i)
            .copied()
            .unwrap_or(self.depot_hard_size)
    }
}

/// The HTTPS daemons of a grid (for [`Grid::restart_with_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    OnlineCa,
    Lbone,
    MetadataManager,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            depots: 3,
            depot_hard_size: 2 << 30,
            legacy_only: false,
            legacy_off: Vec::new(),
            data_port: false,
            users: vec!["alice".into(), "bob".into(), "carol".into()],
            admins: vec!["alice".into()],
            release: false,
            lbone_poll_interval: Duration::from_millis(500),
            depot_hard_sizes: Vec::new(),
            dir: None,
            mdm_database: None,
            mdm_replicas: 1,
            pseudonymous: false,
            vomsdir: None,
            vo2: false,
            extra_cas: Vec::new(),
            ca_voms_uri: None,
            hosts: None,
        }
    }
}

/// Where everything lives in the grid directory.
struct Layout {
    /// The grid directory.
    dir: PathBuf,
    /// The trust directory every service and client uses.
    trust: PathBuf,
    /// The online CA's directory.
    ca: PathBuf,
    /// The L-Bone's directory.
    lbone: PathBuf,
    /// The metadata manager's directory.
    mdm: PathBuf,
    /// The directories of the other metadata-manager replicas.
    mdm_replicas: Vec<PathBuf>,
    /// The hosts, with [`GridOptions::hosts`].
    net: Option<Arc<Network>>,
}

impl Layout {
    fn new(dir: &Path, opts: &GridOptions) -> anyhow::Result<Layout> {
        let net = match &opts.hosts {
            None => None,
            Some(h) => {
                let roles: Vec<Role> = [Role::Ca, Role::Lbone]
                    .into_iter()
                    .chain((0..opts.mdm_replicas).map(Role::Mdm))
                    .chain((0..opts.depots).map(Role::Depot))
                    .chain([Role::Client])
                    .collect();
                Some(Arc::new(Network::create(&roles, h)?))
            }
        };
        Ok(Layout {
            dir: dir.to_path_buf(),
            trust: dir.join("trust"),
            ca: dir.join("ca"),
            lbone: dir.join("lbone"),
            mdm: dir.join("mdm"),
            mdm_replicas: (1..opts.mdm_replicas)
                .map(|i| dir.join(format!("mdm{i}")))
                .collect(),
            net,
        })
    }

    /// The host of `role`, on a grid on hosts.
    fn host(&self, role: Role) -> Option<Arc<Host>> {
        self.net.as_ref().and_then(|n| n.host(role).ok().cloned())
    }

    /// A daemon's `listen`: `127.0.0.1:0` on loopback, `127.0.0.1:<the
    /// documented port>` in its host's namespace (its relay exposes it).
    fn listen(&self, port: u16) -> String {
        if self.net.is_some() {
            format!("127.0.0.1:{port}")
        } else {
            "127.0.0.1:0".to_owned()
        }
    }

    /// The names a server certificate of `role`'s host holds besides
    /// localhost and 127.0.0.1: its name and address.
    fn cert_names(&self, role: Role) -> Vec<String> {
        self.host(role)
            .map(|h| vec![h.name.clone(), h.ip.to_string()])
            .unwrap_or_default()
    }
}

/// The configuration files of the three HTTPS services.
struct ServiceConfigs {
    ca: PathBuf,
    lbone: PathBuf,
    mdm: PathBuf,
    mdm_replicas: Vec<PathBuf>,
}

/// Durations of the steps of [`Grid::start`].
struct Steps {
    last: Instant,
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn mark(&mut self, what: &str) {
        let now = Instant::now();
        self.done.push((what.to_owned(), now - self.last));
        self.last = now;
    }
}

/// A running grid. Dropping it kills every process (SIGKILL), waits for
/// them and removes the grid directory (unless `IBP_GRID_KEEP` is set).
pub struct Grid {
    /// The grid directory.
    pub dir: PathBuf,
    /// The trust directory every service and client uses.
    pub trust_dir: PathBuf,
    /// `https://127.0.0.1:PORT` of the L-Bone.
    pub lbone_url: String,
    /// `https://127.0.0.1:PORT` of the metadata manager (the first
    /// replica).
    pub mdm_url: String,
    /// Every metadata-manager replica's URL, [`Grid::mdm_url`] first.
    pub mdm_urls: Vec<String>,
    /// `https://127.0.0.1:PORT` of the online CA.
    pub ca_url: String,
    pub depots: Vec<Depot>,
    pub users: Vec<GridUser>,
    pub bins: Binaries,
    /// How long [`Grid::start`] took (binaries found or built excluded).
    pub startup: Duration,
    /// What [`Grid::start`] did, step by step, with how long each took.
    pub steps: Vec<(String, Duration)>,
    /// The online CA's configuration (for `online-ca admin --config`).
    pub ca_config: PathBuf,
    opts: GridOptions,
    /// The L-Bone by address (what the harness in the root namespace
    /// uses; [`Grid::lbone_url`] by name).
    lbone_direct_url: String,
    tls: rustls::ClientConfig,
    ca: Service,
    lbone: Service,
    mdm: Service,
    /// The metadata-manager replicas after the first.
    mdm_replicas: Vec<Service>,
    /// The hosts (after the processes: removed once they are gone).
    net: Option<Arc<Network>>,
    // Last: removed after the processes are gone.
    _dir: GridDir,
}

impl Grid {
    /// Starts a grid (see the module documentation) and waits until the
    /// L-Bone reports every depot up.
    pub fn start(opts: GridOptions) -> anyhow::Result<Grid> {
        opts.check()?;
        let bins = binaries(opts.release)?;
        let t0 = Instant::now();
        let mut steps = Steps::new();
        let dir_guard = GridDir::create(opts.dir.as_deref())?;
        let l = Layout::new(&dir_guard.path, &opts)?;

        // 1. The three `init`s, in parallel.
        run_inits(&bins, &l, &opts)?;
        steps.mark("online-ca init (CA, VO vo1 and its attribute authority), lbone init, metadata-manager init");

        // 2. Trust directory, certificates and configurations.
        let (mut users, configs, mut depots) = write_configs(&opts, &l)?;
        steps.mark(&format!(
            "trust directory, server certificates and configurations ({} users, {} depots)",
            users.len(),
            depots.len()
        ));

        // 3. Every daemon, at once.
        let [mut ca, mut lbone, mut mdm] = spawn_services(&bins, &l, &configs)?;
        let mut replicas = l
            .mdm_replicas
            .iter()
            .zip(&configs.mdm_replicas)
            .enumerate()
            .map(|(i, (dir, config))| {
                Service::spawn(
                    "metadata-manager",
                    &bins.mdm,
                    dir,
                    config,
                    l.host(Role::Mdm(i + 1)),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for d in &mut depots {
            d.spawn(&bins.depot)?;
        }

        // 4. VO membership (the CA's database; safe while it runs).
        users::add_members(&bins.online_ca, &configs.ca, &mut users)?;
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        steps.mark(&format!(
            "VO members added at the online CA: {}",
            names.join(", ")
        ));

        // 5. The online CA listening; logins (in parallel) while the other
        //    daemons come up.
        let deadline = Instant::now() + START_TIMEOUT;
        ca.wait(deadline)?;
        steps.mark(&format!("online CA listening on https://{}", ca.addr));
        let login = LoginEnv {
            lors: bins.lors.clone(),
            ca_url: ca.url(),
            trust_dir: l.trust.clone(),
            dir: l.dir.clone(),
            client: l.host(Role::Client),
        };
        log_in_while(&login, &users, || {
            lbone.wait(deadline)?;
            mdm.wait(deadline)?;
            for r in &mut replicas {
                r.wait(deadline)?;
            }
            for d in &mut depots {
                d.wait_listening(&opts, deadline)?;
            }
            Ok(())
        })?;
        steps.mark(&format!(
            "L-Bone, metadata manager and {} depots listening; users logged in (lors login --method local)",
            depots.len()
        ));

        // 6. The grid, its processes killed and directory removed on drop.
        let mut grid = Grid {
            tls: pki::client_tls(&l.trust)?,
            dir: l.dir,
            trust_dir: l.trust,
            lbone_url: lbone.url(),
            mdm_url: mdm.url(),
            mdm_urls: std::iter::once(&mdm)
                .chain(&replicas)
                .map(Service::url)
                .collect(),
            ca_url: login.ca_url,
            depots,
            users,
            bins,
            startup: Duration::ZERO,
            steps: Vec::new(),
            ca_config: configs.ca,
            lbone_direct_url: lbone.direct_url(),
            opts,
            ca,
            lbone,
            mdm,
            mdm_replicas: replicas,
            net: l.net,
            _dir: dir_guard,
        };

        // 7. The first admin registers the depots; the L-Bone polls them.
        if !grid.depots.is_empty() {
            grid.register_depots()?;
            steps.mark("depots registered with the L-Bone (lbone admin register)");
            grid.wait_lbone_sees_all(LBONE_TIMEOUT)?;
            steps.mark("the L-Bone polled every depot: all up");
        }
        grid.steps = steps.done;
        grid.startup = t0.elapsed();
        Ok(grid)
    }

    /// Process ids of every running daemon.
    pub fn pids(&self) -> Vec<u32> {
        let services = [&self.ca, &self.lbone, &self.mdm];
        let mut pids: Vec<u32> = services
            .into_iter()
            .chain(&self.mdm_replicas)
            .filter_map(|s| s.proc.as_ref().map(|p| p.child.id()))
            .collect();
        pids.extend(self.depots.iter().filter_map(Depot::pid));
        pids
    }

    /// The options the grid was started with.
    pub fn options(&self) -> &GridOptions {
        &self.opts
    }

    /// The hosts of a grid on hosts ([`GridOptions::hosts`]): links to
    /// partition, slow down or delay.
    pub fn network(&self) -> Option<&Network> {
        self.net.as_deref()
    }
}

/// `online-ca init` (CA, VO vo1 and its attribute authority), `lbone init`
/// and `metadata-manager init`, in parallel.
fn run_inits(bins: &Binaries, l: &Layout, opts: &GridOptions) -> anyhow::Result<()> {
    let inits: Vec<(&str, Command)> = vec![
        ("online-ca init", {
            let mut c = clean_command(&bins.online_ca);
            c.arg("init")
                .arg("--dir")
                .arg(&l.ca)
                .args(["--org", ORG, "--vo", VO])
                .args(["--hostname", "localhost", "--hostname", "127.0.0.1"]);
            if opts.vo2 {
                c.args(["--vo", VO2]);
            }
            for name in l.cert_names(Role::Ca) {
                c.arg("--hostname").arg(name);
            }
            c
        }),
        ("lbone init", {
            let mut c = clean_command(&bins.lbone);
            c.arg("init").arg("--dir").arg(&l.lbone);
            c
        }),
        ("metadata-manager init", {
            let mut c = clean_command(&bins.mdm);
            c.arg("init").arg("--dir").arg(&l.mdm);
            c
        }),
    ]
    .into_iter()
    .chain(l.mdm_replicas.iter().map(|dir| {
        let mut c = clean_command(&bins.mdm);
        c.arg("init").arg("--dir").arg(dir);
        ("metadata-manager init (replica)", c)
    }))
    .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = inits
            .into_iter()
            .map(|(what, cmd)| s.spawn(move || run_cli(what, cmd, None)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("init panicked"))))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(())
}

/// Makes the trust directory and the server certificates, and writes
/// every configuration: the users (with the CA's users file), the three
/// services' and the depots' (not started).
fn write_configs(
    opts: &GridOptions,
    l: &Layout,
) -> anyhow::Result<(Vec<GridUser>, ServiceConfigs, Vec<Depot>)> {
    let issuer = pki::make_trust(l)?;
    for (i, ca) in opts.extra_cas.iter().enumerate() {
        files::copy_private(ca, &l.trust.join(format!("ca/extra-{i}.pem")))?;
        // The online CA trusts them too (`/v1/attributes`, `/v1/link`).
        files::copy_private(ca, &l.ca.join(format!("trust/ca/extra-{i}.pem")))?;
    }
    let (users, users_file) = users::make_users(opts, l)?;
    config::write_users_file(l, &users_file)?;
    files::write_file(&l.dir.join("lors.toml"), "")?;
    let configs = ServiceConfigs {
        ca: config::write_ca(l, opts)?,
        lbone: config::write_lbone(l, &issuer, opts)?,
        mdm: config::write_mdm(0, &l.mdm, l, &issuer, opts)?,
        mdm_replicas: l
            .mdm_replicas
            .iter()
            .enumerate()
            .map(|(i, dir)| config::write_mdm(i + 1, dir, l, &issuer, opts))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let depots = (0..opts.depots)
        .map(|i| Depot::prepare(i, l, &issuer, opts))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((users, configs, depots))
}

/// Starts the online CA, the L-Bone and the metadata manager (not waiting
/// for them).
fn spawn_services(
    bins: &Binaries,
    l: &Layout,
    configs: &ServiceConfigs,
) -> anyhow::Result<[Service; 3]> {
    Ok([
        Service::spawn(
            "online-ca",
            &bins.online_ca,
            &l.ca,
            &configs.ca,
            l.host(Role::Ca),
        )?,
        Service::spawn(
            "lbone",
            &bins.lbone,
            &l.lbone,
            &configs.lbone,
            l.host(Role::Lbone),
        )?,
        Service::spawn(
            "metadata-manager",
            &bins.mdm,
            &l.mdm,
            &configs.mdm,
            l.host(Role::Mdm(0)),
        )?,
    ])
}

/// Logs every user in (`lors login`, one thread each) while `meanwhile`
/// runs; fails if either did.
fn log_in_while(
    login: &LoginEnv,
    users: &[GridUser],
    meanwhile: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    std::thread::scope(|s| -> anyhow::Result<()> {
        let logins: Vec<_> = users
            .iter()
            .map(|u| s.spawn(move || login.login(u)))
            .collect();
        let done = meanwhile();
        let logged_in: anyhow::Result<Vec<()>> = logins
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("login panicked"))))
            .collect();
        done?;
        logged_in.map(|_| ())
    })
}

impl Drop for Grid {
    fn drop(&mut self) {
        for d in &mut self.depots {
            if let Some(mut p) = d.proc.take() {
                p.kill();
            }
        }
        self.lbone.kill();
        self.mdm.kill();
        for r in &mut self.mdm_replicas {
            r.kill();
        }
        self.ca.kill();
    }
}
