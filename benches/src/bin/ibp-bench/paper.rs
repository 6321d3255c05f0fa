//! The paper's depot experiment: per size and mode, the sequence Allocate
//! (depot A), Store, Load, Allocate (depot B), Copy (A to B), repeated;
//! every operation timed on its own. The modes take turns within each
//! repetition (rotated), so drift in the machine's load affects them alike.
//!
//! - **legacy**: the plain IBP 1.4 port; Copy is IBP's depot-to-depot SEND.
//! - **crypto**: ALLOCATE and COPY in an authenticated TLS session, STORE
//!   and LOAD on a crypto-level data connection (sealed request lines, data
//!   in clear).
//! - **full**: everything inside the TLS session.
//!
//! At the crypto and full levels Copy is the same secure COPY: depot A
//! authenticates at depot B with its own certificate and a grant bound to
//! its key, and the bytes move between the depots over TLS.

use std::time::Instant;

use anyhow::{bail, Context};
use ibp_benches::pki::mint;
use ibp_benches::secure::{grant, session, ticket, SecureDepot};
use ibp_benches::{
    all_cpus, depot_binary, loopback_rtt_tokio, payload, set_affinity, Placement, Samples, MB,
};
use ibp_depot_client::{Caps, DataClient, IbpClient, SecureClient};
use ibp_proto::{Reliability, Rid};

use crate::report::{self, Sample};
use crate::PaperArgs;

/// The file UUID the secure allocations are bound to.
const FILE: &str = "6f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0";
/// Allocation lifetime (seconds).
const DURATION: i64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Legacy,
    Crypto,
    Full,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Legacy, Mode::Crypto, Mode::Full];
    pub fn name(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Crypto => "crypto",
            Mode::Full => "full-crypto",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Allocate,
    Store,
    Load,
    Allocate2,
    Copy,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Allocate, Op::Store, Op::Load, Op::Allocate2, Op::Copy];
    pub fn name(self) -> &'static str {
        match self {
            Op::Allocate => "allocate",
            Op::Store => "store",
            Op::Load => "load",
            Op::Allocate2 => "allocate_target",
            Op::Copy => "copy",
        }
    }
}

/// Connections to both depots, one set per mode.
struct Clients {
    legacy_a: IbpClient,
    legacy_b: IbpClient,
    session_a: SecureClient,
    session_b: SecureClient,
    data_a: DataClient,
    /// The session the crypto-level connection belongs to, kept open.
    _data_session: SecureClient,
    /// A grant for depot B held by depot A's key (secure COPY).
    copy_grant: String,
    ticket: String,
}

pub fn run(a: &PaperArgs) -> anyhow::Result<()> {
    if a.reps == 0 || a.sizes.is_empty() || a.sizes.iter().any(|&s| s == 0 || s > 1000) {
        bail!("--reps must be at least 1 and --sizes between 1 and 1000 MB");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: &PaperArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let bin = match &a.depot_bin {
        Some(p) => p.clone(),
        None => depot_binary()?.path,
    };
    let dir = tempfile::tempdir()?;
    let pki = mint(dir.path())?;
    let trust = dir.path().join("trust");
    eprintln!("ibp-bench paper: measuring this machine's limits");
    let limits = crate::limits::measure(&pki, &a.out, a.limit_mb.max(1) * MB).await?;
    let depot_a = SecureDepot::start(&bin, &dir.path().join("a"), &trust, &pki, "depot-a")?;
    let depot_b = SecureDepot::start(&bin, &dir.path().join("b"), &trust, &pki, "depot-b")?;
    let cfg = SecureClient::config(&pki.client_trust, &pki.user)?;
    let user = pki.user.key_hash()?;
    let grant_a = grant(&pki, &depot_a.tls, user);
    let grant_b = grant(&pki, &depot_b.tls, user);

    // Table 1: IBP_auth (a fresh TLS 1.3 handshake + AUTH).
    eprintln!("ibp-bench paper: IBP_auth x {}", a.auth_reps);
    let mut auth = Samples::default();
    for _ in 0..a.auth_reps.max(1) {
        let t = Instant::now();
        let c = session(&cfg, &depot_a, &grant_a).await?;
        auth.push(t.elapsed());
        drop(c);
    }

    let session_a = session(&cfg, &depot_a, &grant_a).await?;
    let mut data_session = session(&cfg, &depot_a, &grant_a).await?;
    let cs = data_session.open_crypto().await?;
    let mut data_a = DataClient::connect(&depot_a.data, &cs).await?;
    data_a.set_timeout(std::time::Duration::from_secs(120));
    let mut c = Clients {
        legacy_a: legacy(&depot_a.legacy).await?,
        legacy_b: legacy(&depot_b.legacy).await?,
        data_a,
        _data_session: data_session,
        session_a,
        session_b: session(&cfg, &depot_b, &grant_b).await?,
        copy_grant: grant(&pki, &depot_b.tls, depot_a.key_hash),
        ticket: ticket(&pki, FILE)?,
    };

    let mut samples: Vec<Sample> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for &mb in &a.sizes {
        let size = mb as usize * MB;
        let data = payload(size);
        eprintln!(
            "ibp-bench paper: {mb} MB x {} reps x {} modes",
            a.reps,
            Mode::ALL.len()
        );
        for rep in 0..a.reps {
            for k in 0..Mode::ALL.len() {
                let mode = Mode::ALL[(rep + k) % Mode::ALL.len()];
                let times = sequence(&mut c, mode, &data, &mut buf)
                    .await
                    .with_context(|| format!("{} at {mb} MB, repetition {rep}", mode.name()))?;
                for (op, secs) in times {
                    samples.push(Sample {
                        mode,
                        op,
                        size_mb: mb,
                        rep,
                        secs,
                    });
                }
            }
        }
    }
    eprintln!(
        "ibp-bench paper: Allocate alone x {}, placed by the scheduler and on one CPU",
        a.alone
    );
    let alone = allocate_alone(&mut c.legacy_a, depot_a.pid(), a.alone).await;
    let r = report::Report {
        args: a.clone(),
        limits,
        auth,
        samples,
        alone,
        seconds: started.elapsed().as_secs_f64(),
    };
    let written = report::write(&r, &a.out, a.font.as_deref())?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    drop((depot_a, depot_b));
    Ok(())
}

/// Allocate alone, in one placement of client and depot.
pub struct Alone {
    pub placement: &'static str,
    /// Allocate and the echo round trip (100 bytes each way, a server on a
    /// tokio runtime), or why they were not measured.
    pub measured: Result<(Samples, Samples), String>,
}

/// `n` legacy Allocates on depot A, one after another on one connection
/// (each released right after, untimed; a tenth more first as a warm-up),
/// and the echo round trip beside them: with the scheduler placing this
/// process and the depot, then with both on CPU 0, where no reply waits
/// for another CPU to wake. Affinity goes back to every CPU afterwards.
async fn allocate_alone(c: &mut IbpClient, depot: u32, n: usize) -> Vec<Alone> {
    let me = std::process::id();
    let mut out = Vec::new();
    for (placement, cpus) in [
        ("placed by the scheduler", None),
        ("both on CPU 0", Some("0")),
    ] {
        // Put back as they were when this placement ends, even by a panic.
        let _pinned = match cpus {
            None => None,
            Some(cpus) => match Pinned::new(&[me, depot], cpus) {
                Some(p) => Some(p),
                None => {
                    out.push(Alone {
                        placement,
                        measured: Err("taskset(1) is missing or refused".into()),
                    });
                    continue;
                }
            },
        };
        let result = async {
            let unpinned = Placement {
                name: placement,
                cpus: None,
            };
            let rtt = loopback_rtt_tokio(n.max(1), 100, unpinned).await?;
            let mut alloc = Samples::default();
            for i in 0..n.max(1) + n / 10 {
                let t = Instant::now();
                let caps = c
                    .allocate(Rid(0), Reliability::Hard, DURATION, 1000)
                    .await?;
                let took = t.elapsed();
                if i >= n / 10 {
                    alloc.push(took);
                }
                c.decr(&caps.manage, 1).await?;
            }
            anyhow::Ok((alloc, rtt))
        }
        .await;
        out.push(Alone {
            placement,
            measured: result.map_err(|e| format!("{e:#}")),
        });
    }
    out
}

/// Processes (every thread) pinned to some CPUs, their affinity put back
/// as it was when dropped.
struct Pinned(Vec<(u32, String)>);

impl Pinned {
    /// `None` (and nothing left pinned) when taskset is missing or refuses.
    fn new(pids: &[u32], cpus: &str) -> Option<Pinned> {
        let mut p = Pinned(Vec::new());
        for &pid in pids {
            let was = cpus_allowed(pid).unwrap_or_else(all_cpus);
            if !set_affinity(pid, cpus, true) {
                return None;
            }
            p.0.push((pid, was));
        }
        Some(p)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for (pid, was) in &self.0 {
            set_affinity(*pid, was, true);
        }
    }
}

/// The CPUs process `pid` may run on (`Cpus_allowed_list`, e.g. `0-1`).
fn cpus_allowed(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

async fn legacy(addr: &str) -> anyhow::Result<IbpClient> {
    let mut c = IbpClient::connect(addr).await?;
    c.set_timeout(std::time::Duration::from_secs(120));
    Ok(c)
}

/// One Allocate, Store, Load, Allocate, Copy in `mode`; the allocations
/// are released afterwards (not timed). Returns each operation's seconds.
async fn sequence(
    c: &mut Clients,
    mode: Mode,
    data: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<Vec<(Op, f64)>> {
    let size = data.len() as u64;
    let mut laps = Laps {
        t: Instant::now(),
        out: Vec::with_capacity(Op::ALL.len()),
    };
    let (a, b): (Caps, Caps) = match mode {
        Mode::Legacy => {
            let a = c
                .legacy_a
                .allocate(Rid(0), Reliability::Hard, DURATION, size)
                .await?;
            laps.lap(Op::Allocate);
            c.legacy_a.store(&a.write, data).await?;
            laps.lap(Op::Store);
            let n = c.legacy_a.load_into(&a.read, 0, size, buf).await?;
            laps.lap(Op::Load);
            check_load(n, buf, data)?;
            // The check is not the next operation's time.
            laps.restart();
            let b = c
                .legacy_b
                .allocate(Rid(0), Reliability::Hard, DURATION, size)
                .await?;
            laps.lap(Op::Allocate2);
            let n = c.legacy_a.copy(&a.read, &b.write, 0, size).await?;
            laps.lap(Op::Copy);
            check_count("COPY", n, size)?;
            (a, b)
        }
        Mode::Crypto | Mode::Full => {
            let a = c
                .session_a
                .allocate(Rid(0), Reliability::Hard, DURATION, size)
                .await?;
            laps.lap(Op::Allocate);
            if mode == Mode::Crypto {
                c.data_a.store(&a.write, FILE, data).await?;
            } else {
                c.session_a.store(&a.write, FILE, data).await?;
            }
            laps.lap(Op::Store);
            let n = if mode == Mode::Crypto {
                c.data_a.load_into(&a.read, 0, size, &c.ticket, buf).await?
            } else {
                c.session_a
                    .load_into(&a.read, 0, size, &c.ticket, buf)
                    .await?
            };
            laps.lap(Op::Load);
            check_load(n, buf, data)?;
            // The check is not the next operation's time.
            laps.restart();
            let b = c
                .session_b
                .allocate(Rid(0), Reliability::Hard, DURATION, size)
                .await?;
            laps.lap(Op::Allocate2);
            let n = c
                .session_a
                .copy(&a.read, &b.write, 0, size, &c.copy_grant, FILE)
                .await?;
            laps.lap(Op::Copy);
            check_count("secure COPY", n, size)?;
            (a, b)
        }
    };
    // Released before the next sequence (not timed).
    match mode {
        Mode::Legacy => {
            c.legacy_a.decr(&a.manage, 1).await?;
            c.legacy_b.decr(&b.manage, 1).await?;
        }
        Mode::Crypto | Mode::Full => {
            c.session_a.decr(&a.manage, 1).await?;
            c.session_b.decr(&b.manage, 1).await?;
        }
    }
    Ok(laps.out)
}

/// Each operation's time, from the end of the previous one (or a restart).
struct Laps {
    t: Instant,
    out: Vec<(Op, f64)>,
}

impl Laps {
    fn lap(&mut self, op: Op) {
        self.out.push((op, self.t.elapsed().as_secs_f64()));
        self.t = Instant::now();
    }
    fn restart(&mut self) {
        self.t = Instant::now();
    }
}

fn check_count(what: &str, n: u64, size: u64) -> anyhow::Result<()> {
    if n != size {
        bail!("{what} moved {n} of {size} bytes");
    }
    Ok(())
}

/// A LOAD must return the bytes stored (checked outside the timing).
fn check_load(n: u64, buf: &[u8], data: &[u8]) -> anyhow::Result<()> {
    check_count("LOAD", n, data.len() as u64)?;
    if buf.get(..data.len()) != Some(data) {
        bail!("LOAD returned other bytes than were stored");
    }
    Ok(())
}
