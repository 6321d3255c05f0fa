//! Hosts for a grid on one machine: every daemon in its own network
//! namespace, with its own address and DNS-style name, joined by veth
//! links to a bridge in the root namespace ([`GridOptions::hosts`]).
//!
//! **Addresses and names.** A grid's network is `10.A.B.0/24`: the bridge
//! (`ibg<pid>Z<n>br`, in the root namespace, where the test runs) is
//! `10.A.B.1`, host `k` is `10.A.B.(10+k)` on the `eth0` end of its veth
//! pair (`ibg<pid>Z<n>v<k>` on the bridge). Each host's namespace is
//! `ibg-<pid>-<n>-<role>` and its name `<role>.ibg<pid>z<n>.test`
//! (`ca`, `lbone`, `mdm0`, `mdm1`, ..., `depot0`, ..., `client`): every
//! namespace gets `/etc/netns/<namespace>/hosts` mapping all of them, which
//! `ip netns exec` bind-mounts over `/etc/hosts`, so every daemon and every
//! `lors` run (in the `client` namespace) resolves the others by name.
//!
//! **Daemons** run as `ip netns exec <namespace> <binary> ...` (the same
//! process: `ip` execs the binary) and listen on `127.0.0.1:<the
//! documented port>` inside their namespace (online CA 8443, L-Bone 6767,
//! metadata manager 6780, depot 6714 and 6715); their metrics port stays
//! on that loopback. What other hosts reach is only what a host's **relay**
//! exposes: a listener on `<host address>:<port>` in the host's namespace
//! forwarding to the daemon's loopback port. That is the firewall matrix
//! of docs/deployment.md: a port not exposed cannot be reached from another
//! host.
//!
//! **Delay.** The kernel here has no `netem`, so the relay emulates the
//! link's latency: each direction of each connection holds every chunk it
//! read for the host's one-way delay ([`Network::set_delay`]) before
//! writing it on, through a bounded queue (8 MiB per direction of each
//! connection, like a TCP window: a full queue stops reading, so TCP flow
//! control holds the sender). Every
//! connection to a host's services pays that host's delay both ways: with
//! 10 ms each way, a client sees a 20 ms round trip to it. The relay ends
//! the TCP connection, so the handshake itself is not delayed; the first
//! bytes (TLS) are. No loss is emulated.
//!
//! **Rate** is the kernel's: `tc ... tbf` on both ends of the host's veth
//! pair ([`Network::set_rate`]). A **partition** is the host's link down
//! (`ip link set <veth> down`, [`Network::set_link`]): packets to and from
//! it are dropped, connections in flight stall and new ones time out, as
//! when a cable is cut.
//!
//! The relays run in the test process: one thread per host, joined to the
//! host's namespace (`setns`), with its own single-threaded tokio runtime,
//! so every socket it makes is in that namespace. Dropping the
//! [`Network`] stops them and deletes the namespaces, the bridge and the
//! hosts files; [`Network::create`] first deletes those left by a process
//! that no longer runs (a killed test). Missing `ip` is an error, never a
//! skip.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::process::clean_command;

/// The documented ports (docs/deployment.md, "Firewall matrix").
pub const CA_PORT: u16 = 8443;
pub const LBONE_PORT: u16 = 6767;
pub const MDM_PORT: u16 = 6780;
pub const DEPOT_PORT: u16 = 6714;
pub const DEPOT_TLS_PORT: u16 = 6715;

/// The firewall matrix (docs/deployment.md): whether a connection from a
/// host playing `from` may reach `port` on a host playing `to`. The
/// root namespace (the test harness, as the operator's console) reaches
/// every exposed port.
pub fn allowed(to: Role, port: u16, from: Role) -> bool {
    match (to, port) {
        // Users log in; every service host requests and renews its
        // certificate and fetches the trust directory.
        (Role::Ca, CA_PORT) => true,
        // Users (depot lists, grants) and VO admins (registering depots).
        (Role::Lbone, LBONE_PORT) => from == Role::Client,
        (Role::Mdm(_), MDM_PORT) => from == Role::Client,
        // Users; the L-Bone polls (the TLS port, else the legacy one);
        // depots copy between each other.
        (Role::Depot(_), DEPOT_PORT | DEPOT_TLS_PORT) => {
            matches!(from, Role::Client | Role::Lbone | Role::Depot(_))
        }
        _ => false,
    }
}

/// Bytes a relay direction holds at most (the link's bandwidth-delay
/// product cap: 8 MiB per connection, like a TCP window of 8 MiB).
const QUEUE_BYTES: usize = 8 << 20;
/// Bytes of one chunk at most.
const CHUNK: usize = 64 * 1024;

/// A grid on hosts ([`super::GridOptions::hosts`]).
#[derive(Debug, Clone, Default)]
pub struct HostsOptions {
    /// One-way delay of every host's link at start (default none).
    pub one_way_delay: Duration,
}

/// A host's part in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ca,
    Lbone,
    /// Metadata-manager replica `i` (0: the first).
    Mdm(usize),
    Depot(usize),
    /// Where `lors` and the admin commands run.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Ca => write!(f, "ca"),
            Role::Lbone => write!(f, "lbone"),
            Role::Mdm(i) => write!(f, "mdm{i}"),
            Role::Depot(i) => write!(f, "depot{i}"),
            Role::Client => write!(f, "client"),
        }
    }
}

/// One host: a namespace, its link and its relay.
pub struct Host {
    pub role: Role,
    /// Its DNS-style name (in every namespace's hosts file).
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The root end of its veth pair (on the bridge).
    veth: String,
    /// Its link's one-way delay, in microseconds (read by its relay).
    delay_us: Arc<AtomicU64>,
    /// Bytes its relay has carried from its daemons to their clients.
    sent: Arc<AtomicU64>,
    /// Connections its relay refused ([`allowed`]).
    refused: Arc<AtomicU64>,
    relay: Mutex<Option<Relay>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.ip, self.ns)
    }
}

impl Host {
    /// Makes `port` of this host reachable from the others (and from the
    /// root namespace) at `<address>:<port>`, forwarding to its daemon on
    /// `127.0.0.1:<port>` in the namespace, with the link's delay. Exposing
    /// a port twice is a no-op.
    pub fn expose(&self, port: u16) -> anyhow::Result<()> {
        let guard = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        let relay = guard.as_ref().context("the host's relay is stopped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        relay
            .tx
            .send(RelayCmd::Expose(port, tx))
            .map_err(|_| anyhow!("the relay of {} is gone", self.name))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("the relay of {} did not answer", self.name))?
            .with_context(|| format!("expose {}:{port}", self.name))
    }

    /// Bytes its daemons have sent to other hosts so far (through its
    /// relay): how a test sees a transfer from it under way.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes this host has sent on its link so far, everything counted
    /// (the kernel's receive counter of its veth's root end): what a
    /// client host puts on its uplink.
    pub fn link_bytes_out(&self) -> anyhow::Result<u64> {
        let p = format!("/sys/class/net/{}/statistics/rx_bytes", self.veth);
        let s = fs::read_to_string(&p).with_context(|| format!("read {p}"))?;
        s.trim()
            .parse()
            .with_context(|| format!("parse {p}: {s:?}"))
    }

    /// Connections refused so far by the firewall matrix ([`allowed`]).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The ports exposed so far.
    pub fn exposed(&self) -> Vec<u16> {
        let guard = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|r| r.ports.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// `cmd` run in this host's namespace (`ip netns exec`), with its
    /// arguments, environment and working directory.
    pub fn command(&self, cmd: &Command) -> Command {
        let mut c = clean_command(Path::new("ip"));
        c.args(["netns", "exec", &self.ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c
    }
}

enum RelayCmd {
    Expose(u16, std::sync::mpsc::Sender<anyhow::Result<()>>),
}

struct Relay {
    tx: tokio::sync::mpsc::UnboundedSender<RelayCmd>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    ports: Arc<Mutex<Vec<u16>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a relay needs to know: where it is, its link, and who may reach
/// which port (`firewall(port, peer address)`).
struct RelaySpec {
    ip: Ipv4Addr,
    delay_us: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    firewall: Arc<dyn Fn(u16, Ipv4Addr) -> bool + Send + Sync>,
}

/// Starts the relay thread of the host in namespace `ns`.
fn start_relay(ns: &str, spec: RelaySpec) -> anyhow::Result<Relay> {
    let ip = spec.ip;
    let spec = Arc::new(spec);
    let ns_file = fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("open /run/netns/{ns}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RelayCmd>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let ports = Arc::new(Mutex::new(Vec::new()));
    let ports_in = ports.clone();
    let thread = std::thread::Builder::new()
        .name(format!("relay-{ns}"))
        .spawn(move || {
            // SAFETY: setns(2) on an open namespace file; it changes only
            // this thread's network namespace.
            if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                let _ = ready_tx.send(Err(anyhow!("setns into {ns_file:?}: {e}")));
                return;
            }
            drop(ns_file);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!("relay runtime: {e}")));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            rt.block_on(async move {
                let serve = async {
                    while let Some(RelayCmd::Expose(port, reply)) = rx.recv().await {
                        let known = ports_in
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(&port);
                        if known {
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        match TcpListener::bind(SocketAddr::from((ip, port))).await {
                            Ok(l) => {
                                ports_in
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(port);
                                tokio::spawn(accept_loop(l, port, spec.clone()));
                                let _ = reply.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(anyhow!("bind {ip}:{port}: {e}")));
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime cancels every relayed connection.
        })
        .context("start a relay thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the relay thread of {ns} died"))??;
    Ok(Relay {
        tx,
        stop: Some(stop_tx),
        thread: Some(thread),
        ports,
    })
}

async fn accept_loop(l: TcpListener, port: u16, spec: Arc<RelaySpec>) {
    loop {
        let Ok((inbound, peer)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let from = match peer.ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        if !(spec.firewall)(port, from) {
            // Not in the matrix: closed at once.
            spec.refused.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
            continue;
        }
        let (delay_us, sent) = (spec.delay_us.clone(), spec.sent.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await else {
                return; // the daemon is down: the client sees the connection close
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::join!(
                pump(ir, ow, delay_us.clone(), None),
                pump(or, iw, delay_us, Some(sent))
            );
        });
    }
}

/// One direction: every chunk read is written `delay` later.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay_us: Arc<AtomicU64>,
    count: Option<Arc<AtomicU64>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    // Bytes queued, bounded by permits (one per byte, an empty chunk one).
    let room = Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES));
    let room_w = room.clone();
    let read = async move {
        loop {
            let Ok(mut permit) = room.clone().acquire_many_owned(CHUNK as u32).await else {
                break;
            };
            let mut buf = vec![0u8; CHUNK];
            let n = r.read(&mut buf).await.unwrap_or(0);
            buf.truncate(n);
            // Keep the permits of the bytes read; the writer returns them.
            if let Some(kept) = permit.split(n.max(1)) {
                kept.forget();
            }
            drop(permit);
            let due = tokio::time::Instant::now()
                + Duration::from_micros(delay_us.load(Ordering::Relaxed));
            // An empty chunk is the end of the stream: delayed too.
            if tx.send((due, buf)).is_err() || n == 0 {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if buf.is_empty() {
                break;
            }
            if w.write_all(&buf).await.is_err() {
                // The reader stops too (no more room, ever).
                room_w.close();
                return;
            }
            room_w.add_permits(buf.len().max(1));
            if let Some(c) = &count {
                c.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(read, write);
}

/// The hosts of one grid, their namespaces, links and relays.
pub struct Network {
    bridge: String,
    /// The bridge's address (the root namespace's on the grid network).
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Arc<Host>>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("bridge", &self.bridge)
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Runs `ip`/`tc` with `args`; an error with its stderr if it fails.
fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            anyhow!(
                "cannot run `{prog}` ({e}): the multi-host grid needs iproute2 \
                 (apt-get install iproute2) and root"
            )
        })?;
    if !out.status.success() {
        bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces, bridges and hosts files of grids whose process is
/// gone (a test killed before its drop ran).
fn remove_stale() -> anyhow::Result<()> {
    for line in run("ip", &["netns", "list"])?.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("ibg-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u64>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = run("ip", &["netns", "del", name]);
            let _ = fs::remove_dir_all(format!("/etc/netns/{name}"));
        }
    }
    for line in run("ip", &["-o", "link", "show", "type", "bridge"])?.lines() {
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("ibg") else {
            continue;
        };
        let Some(pid) = rest
            .split('Z')
            .next()
            .and_then(|p| u64::from_str_radix(p, 36).ok())
        else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = run("ip", &["link", "del", name]);
        }
    }
    if let Ok(dir) = fs::read_dir("/etc/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("ibg-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u64>().ok())
            {
                if !pid_alive(pid) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
    Ok(())
}

/// A `10.A.B` network no interface of this machine uses.
fn free_subnet(seed: u64) -> anyhow::Result<[u8; 3]> {
    let used = run("ip", &["-o", "-4", "addr", "show"])?;
    for k in 0..200u64 {
        let v = seed.wrapping_mul(2_654_435_761).wrapping_add(k * 7919);
        let net = [10, 100 + (v % 150) as u8, ((v >> 8) % 256) as u8];
        let probe = format!(" {}.{}.{}.", net[0], net[1], net[2]);
        if !used.contains(&probe) {
            return Ok(net);
        }
    }
    bail!("no free 10.x.y.0/24 network for the grid's hosts")
}

/// The relay's check for a host playing `to`: [`allowed`] by the role of
/// the peer's address; the root namespace (`gateway`) everywhere.
fn firewall(
    to: Role,
    gateway: Ipv4Addr,
    roles: &[(Ipv4Addr, Role)],
) -> Arc<dyn Fn(u16, Ipv4Addr) -> bool + Send + Sync> {
    let roles = roles.to_vec();
    Arc::new(move |port, peer| {
        peer == gateway
            || roles
                .iter()
                .find(|(ip, _)| *ip == peer)
                .is_some_and(|(_, from)| allowed(to, port, *from))
    })
}

impl Network {
    /// Makes the bridge, and one namespace, veth link, hosts file and
    /// relay per role.
    pub fn create(roles: &[Role], opts: &HostsOptions) -> anyhow::Result<Network> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        run("ip", &["-V"])?;
        run("tc", &["-V"])?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("a grid on hosts makes network namespaces and links: it needs root");
        }
        remove_stale()?;
        let pid = u64::from(std::process::id());
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("ibg{}Z{}", base36(pid), base36(n as u64));
        let domain = format!("{}.test", prefix.to_ascii_lowercase());
        let net = free_subnet(pid * 1000 + n as u64)?;
        let gateway = Ipv4Addr::new(net[0], net[1], net[2], 1);
        let mut network = Network {
            bridge: format!("{prefix}br"),
            gateway,
            hosts: Vec::new(),
        };
        // From here on, drop removes what was made.
        run("ip", &["link", "add", &network.bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                &network.bridge,
            ],
        )?;
        run("ip", &["link", "set", &network.bridge, "up"])?;
        let mut plan = Vec::new();
        for (k, role) in roles.iter().enumerate() {
            let ip = Ipv4Addr::new(net[0], net[1], net[2], 10 + k as u8);
            let ns = format!("ibg-{pid}-{n}-{role}");
            let veth = format!("{prefix}v{k}");
            plan.push((*role, format!("{role}.{domain}"), ns, ip, veth));
        }
        let roles_by_ip: Vec<(Ipv4Addr, Role)> = plan
            .iter()
            .map(|(role, _, _, ip, _)| (*ip, *role))
            .collect();
        let hosts_file: String = std::iter::once("127.0.0.1 localhost\n".to_owned())
            .chain(
                plan.iter()
                    .map(|(_, name, _, ip, _)| format!("{ip} {name}\n")),
            )
            .collect();
        for (role, name, ns, ip, veth) in plan {
            run("ip", &["netns", "add", &ns])?;
            let delay_us = Arc::new(AtomicU64::new(opts.one_way_delay.as_micros() as u64));
            let sent = Arc::new(AtomicU64::new(0));
            let refused = Arc::new(AtomicU64::new(0));
            // Registered before anything can fail: drop deletes it.
            let host = Arc::new(Host {
                role,
                name,
                ns: ns.clone(),
                ip,
                veth: veth.clone(),
                delay_us: delay_us.clone(),
                sent: sent.clone(),
                refused: refused.clone(),
                relay: Mutex::new(None),
            });
            network.hosts.push(host.clone());
            let etc = format!("/etc/netns/{ns}");
            fs::create_dir_all(&etc).with_context(|| format!("mkdir {etc}"))?;
            fs::write(format!("{etc}/hosts"), &hosts_file)
                .with_context(|| format!("write {etc}/hosts"))?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run(
                "ip",
                &["link", "set", &veth, "master", &network.bridge, "up"],
            )?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            *host.relay.lock().unwrap_or_else(|e| e.into_inner()) = Some(start_relay(
                &ns,
                RelaySpec {
                    ip,
                    delay_us,
                    sent,
                    refused,
                    firewall: firewall(role, gateway, &roles_by_ip),
                },
            )?);
        }
        Ok(network)
    }

    /// The host playing `role`.
    pub fn host(&self, role: Role) -> anyhow::Result<&Arc<Host>> {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .with_context(|| format!("no {role} host in the grid's network"))
    }

    /// Whether a TCP connection from `from`'s host to `addr` is served:
    /// connected and not closed at once (within 1 s) by the relay's
    /// firewall. Run from a thread joined to that host's namespace.
    pub fn reachable_from(&self, from: Role, addr: SocketAddr) -> anyhow::Result<bool> {
        let ns = self.host(from)?.ns.clone();
        std::thread::spawn(move || -> anyhow::Result<bool> {
            let f = fs::File::open(format!("/run/netns/{ns}"))?;
            // SAFETY: setns(2) on an open namespace file, for this thread.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {ns}: {}", std::io::Error::last_os_error());
            }
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            else {
                return Ok(false);
            };
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut b = [0u8; 1];
            Ok(match std::io::Read::read(&mut s, &mut b) {
                // Closed (refused by the matrix) or reset.
                Ok(0) => false,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    true
                }
                Err(_) => false,
                // A daemon that speaks first is served.
                Ok(_) => true,
            })
        })
        .join()
        .map_err(|_| anyhow!("the probe thread panicked"))?
    }

    /// The link of `role`'s host up (`true`) or down (a partition).
    pub fn set_link(&self, role: Role, up: bool) -> anyhow::Result<()> {
        let h = self.host(role)?;
        run(
            "ip",
            &["link", "set", &h.veth, if up { "up" } else { "down" }],
        )
        .map(|_| ())
    }

    /// The one-way delay of `role`'s link (both directions), for the
    /// chunks its relay reads from now on.
    pub fn set_delay(&self, role: Role, one_way: Duration) -> anyhow::Result<()> {
        self.host(role)?
            .delay_us
            .store(one_way.as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Limits `role`'s link to `bits_per_second` in each direction (`tc
    /// qdisc replace ... tbf` on both ends of its veth pair); `None`
    /// removes the limit.
    pub fn set_rate(&self, role: Role, bits_per_second: Option<u64>) -> anyhow::Result<()> {
        let h = self.host(role)?;
        match bits_per_second {
            Some(rate) => {
                let rate = format!("{rate}bit");
                let tbf = [
                    "root", "tbf", "rate", &rate, "burst", "64kb", "latency", "400ms",
                ];
                let mut root = vec!["qdisc", "replace", "dev", &h.veth];
                root.extend(tbf);
                run("tc", &root)?;
                let mut inner = vec![
                    "netns", "exec", &h.ns, "tc", "qdisc", "replace", "dev", "eth0",
                ];
                inner.extend(tbf);
                run("ip", &inner)?;
            }
            None => {
                let _ = run("tc", &["qdisc", "del", "dev", &h.veth, "root"]);
                let _ = run(
                    "ip",
                    &[
                        "netns", "exec", &h.ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                    ],
                );
            }
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for h in &self.hosts {
            // Stops the relay (joins its thread).
            drop(h.relay.lock().unwrap_or_else(|e| e.into_inner()).take());
            // Deleting the namespace deletes its veth pair.
            let _ = run("ip", &["netns", "del", &h.ns]);
            let _ = fs::remove_dir_all(format!("/etc/netns/{}", h.ns));
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        // `/etc/netns` itself stays: another grid may be writing in it.
    }
}
