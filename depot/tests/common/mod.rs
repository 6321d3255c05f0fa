//! Shared helpers for the depot's integration tests: start the real
//! `ibp-depot` binary on a loopback port, kill it on drop, and talk to it
//! with raw, time-bounded TCP connections that see the exact reply bytes.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ibp_proto::{CapKind, Capability};
use ibp_testkit::pki::{pem_of, write};
use ibp_testkit::process::Daemon;
use tempfile::TempDir;

/// Bound on every socket read and write and on waiting for the depot.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The depot binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ibp-depot");

/// How to start a depot. Cloneable, so a test can restart a depot on the same
/// data directory.
#[derive(Clone)]
pub struct DepotBuilder {
    args: Vec<OsString>,
    data: Option<PathBuf>,
    use_data: bool,
    hostname: String,
    metrics: bool,
    fsize_limit: Option<u64>,
    listen: String,
    tls: bool,
    data_port: bool,
    umask: Option<u32>,
    env: Vec<(String, String)>,
}

impl Default for DepotBuilder {
    fn default() -> Self {
        DepotBuilder::new()
    }
}

impl DepotBuilder {
    pub fn new() -> DepotBuilder {
        DepotBuilder {
            args: Vec::new(),
            data: None,
            use_data: true,
            hostname: "127.0.0.1".into(),
            metrics: false,
            fsize_limit: None,
            listen: "127.0.0.1:0".into(),
            tls: false,
            data_port: false,
            umask: None,
            env: Vec::new(),
        }
    }

    /// An environment variable of the depot process.
    #[allow(dead_code)]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the depot on `clock` (its wall clock moves when the test
    /// advances it).
    pub fn clock(mut self, clock: &ibp_testkit::clock::ProcessClock) -> Self {
        self.env.extend(clock.env());
        self
    }

    /// Lets legacy-port allocations use the whole resource, from one address
    /// (tests of capacity accounting itself, not of the legacy budget).
    pub fn legacy_whole_resource(self) -> Self {
        self.args([
            "--legacy-max-size",
            "1TiB",
            "--legacy-per-address-bytes",
            "1TiB",
        ])
    }

    /// Runs the depot with this umask.
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    /// Uses `dir` as `--data` (otherwise a fresh temporary directory).
    pub fn data(mut self, dir: impl AsRef<Path>) -> Self {
        self.data = Some(dir.as_ref().to_owned());
        self
    }

    /// Passes no `--data` at all (the configuration file defines the resources).
    pub fn no_data(mut self) -> Self {
        self.use_data = false;
        self
    }

    pub fn hostname(mut self, h: &str) -> Self {
        self.hostname = h.into();
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().to_owned());
        }
        self
    }

    /// The `--listen` address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    /// Expects the `tls listening on` line (the configuration sets `tls_listen`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Expects the `data listening on` line too (the configuration sets `data_listen`).
    pub fn data_port(mut self) -> Self {
        self.data_port = true;
        self
    }

    /// Adds `--metrics-listen 127.0.0.1:0` and waits for the `metrics on` line.
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self.args("--metrics-listen 127.0.0.1:0".split(' '))
    }

    /// Runs the depot with RLIMIT_FSIZE = `bytes` and SIGXFSZ ignored, so that
    /// writes past `bytes` fail with EFBIG.
    pub fn fsize_limit(mut self, bytes: u64) -> Self {
        self.fsize_limit = Some(bytes);
        self
    }

    pub fn spawn(&self) -> DepotProc {
        let logdir = tempfile::tempdir().expect("create log directory");
        let log = logdir.path().join("depot-stderr.log");
        let (data, data_tmp) = match &self.data {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::tempdir().expect("create data directory");
                (t.path().to_owned(), Some(t))
            }
        };
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--listen", &self.listen, "--hostname", &self.hostname]);
        if self.use_data {
            cmd.arg("--data").arg(&data);
        }
        cmd.args(&self.args).envs(self.env.iter().cloned());
        if let Some(limit) = self.fsize_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (setrlimit, signal) run
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask(2) is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let mut prefixes = vec!["listening on "];
        if self.tls {
            prefixes.push("tls listening on ");
        }
        if self.data_port {
            prefixes.push("data listening on ");
        }
        if self.metrics {
            prefixes.push("metrics on ");
        }
        let daemon = Daemon::start("ibp-depot", cmd, &log, &prefixes);
        let mut addrs = daemon.addrs.clone().into_iter().skip(1);
        let mut next = |wanted: bool| wanted.then(|| addrs.next()).flatten();
        DepotProc {
            addr: daemon.addr(),
            tls_addr: next(self.tls),
            data_addr: next(self.data_port),
            metrics: next(self.metrics),
            daemon,
            data,
            _logdir: logdir,
            _data_tmp: data_tmp,
        }
    }
}

/// A running depot process; SIGKILLed on drop.
pub struct DepotProc {
    daemon: Daemon,
    pub addr: SocketAddr,
    /// The secure port, when the depot serves one.
    pub tls_addr: Option<SocketAddr>,
    /// The crypto level's data port, when the depot serves one.
    pub data_addr: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub data: PathBuf,
    _logdir: TempDir,
    _data_tmp: Option<TempDir>,
}

impl DepotProc {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> i32 {
        self.daemon.pid() as i32
    }

    /// Everything the depot wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.daemon.log_text()
    }

    pub fn signal(&self, sig: i32) {
        self.daemon.signal(sig);
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn sigkill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        self.daemon.wait_exit(limit).unwrap_or_else(|| {
            panic!(
                "depot did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// SIGKILLs the depot and reaps it.
    pub fn kill_now(&mut self) {
        self.daemon.kill();
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// A new connection that ALLOCATEs a HARD byte array.
    pub fn allocate(&self, duration: i64, size: u64) -> Caps {
        let mut c = self.connect();
        c.allocate(2, duration, size)
    }
}

/// Runs the binary with `args` to completion (bounded), returning its exit
/// status, stdout and stderr.
pub fn run_to_exit(args: &[&OsStr]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = ibp_testkit::run_bounded(cmd, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("ibp-depot {args:?}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw client connection: writes request bytes and reads reply bytes
/// exactly (a reply line never swallows the payload after it).
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// Whether an I/O error means the peer closed the connection.
pub fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Conn::from_stream(s)
    }

    /// Connects from a given local address (e.g. `127.0.0.2`, another
    /// client address on loopback).
    pub fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Conn {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt
            .block_on(async {
                let sock = match local {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                sock.bind(SocketAddr::new(local, 0))?;
                tokio::time::timeout(IO_TIMEOUT, sock.connect(addr))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
            })
            .unwrap_or_else(|e| panic!("connect {addr} from {local}: {e}"));
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        Conn::from_stream(s)
    }

    pub fn from_stream(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = s.set_nodelay(true);
        let w = s.try_clone().unwrap();
        Conn {
            r: BufReader::new(s),
            w,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.w
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.w.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)
    }

    /// Reads one reply line including its `\n`; panics on EOF or timeout.
    pub fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        match self.r.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) => panic!(
                "connection closed before a full reply line; got {:?}",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!(
                "reading a reply line: {e}; got so far {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
        String::from_utf8(line).expect("reply line is UTF-8")
    }

    /// Reads one reply line, or None if the depot closed the connection first.
    pub fn try_read_line(&mut self) -> io::Result<Option<String>> {
        let mut line = Vec::new();
        match self.r.read_until(b'\n', &mut line) {
            Ok(0) => Ok(None),
            Ok(_) if line.ends_with(b"\n") => Ok(Some(String::from_utf8_lossy(&line).into())),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("partial line {:?}", String::from_utf8_lossy(&line)),
            )),
            Err(e) if is_closed_error(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.r
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("read {n} payload bytes: {e}"));
        buf
    }

    /// Writes a request line and returns the reply line.
    pub fn request(&mut self, line: &str) -> String {
        self.send(line.as_bytes());
        self.read_line()
    }

    /// Asserts that the depot closes the connection (EOF or reset) without
    /// sending anything more, within the read timeout.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        match self.r.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the depot to close the connection, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if is_closed_error(&e) => {}
            Err(e) => panic!("expected the depot to close the connection, got error {e}"),
        }
    }

    /// ALLOCATE (v1, RID 0, BYTEARRAY) and check the exact reply shape.
    pub fn allocate(&mut self, reliability: u8, duration: i64, size: u64) -> Caps {
        let reply = self.request(&format!("1 1 0 {reliability} 1 {duration} {size} 300\n"));
        let port = self.w.peer_addr().unwrap().port();
        parse_allocate_reply(&reply, "127.0.0.1", port, 0)
    }

    /// STORE `data` (append) and check `1 \n` and `1 <n>\n`.
    pub fn store(&mut self, write: &Capability, data: &[u8]) {
        assert_eq!(self.request(&store_line(write, data.len() as u64)), "1 \n");
        self.send(data);
        assert_eq!(self.read_line(), format!("1 {}\n", data.len()));
    }

    /// LOAD and check the `1 <n> \n` header; returns the payload.
    pub fn load(&mut self, read: &Capability, offset: u64, size: u64) -> Vec<u8> {
        let header = self.request(&load_line(read, offset, size));
        let n = header
            .strip_prefix("1 ")
            .and_then(|s| s.strip_suffix(" \n"))
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("bad LOAD reply {header:?}"));
        self.read_exact(n)
    }

    /// MANAGE PROBE; panics unless the reply is a PROBE reply.
    pub fn probe(&mut self, cap: &Capability) -> Probe {
        let reply = self.request(&probe_line(cap));
        Probe::parse(&reply)
    }
}

/// The three capabilities of an allocation.
#[derive(Debug, Clone)]
pub struct Caps {
    pub read: Capability,
    pub write: Capability,
    pub manage: Capability,
}

/// Alphanumerics after `IBP-` in a key (IBP 1.4's keys are 94 characters
/// in all, e.g. `IBP-7jYckkhw...nPp4` in the transcripts).
pub const KEY_ALNUM: usize = 90;

/// Checks `1 <READ> <WRITE> <MANAGE> \n` exactly: the URI shape
/// `ibp://host:port/rid#IBP-<90 alnum>/<typekey>/KIND`, one key for all three,
/// three distinct typekeys.
pub fn parse_allocate_reply(reply: &str, host: &str, port: u16, rid: u32) -> Caps {
    let body = reply
        .strip_prefix("1 ")
        .and_then(|s| s.strip_suffix(" \n"))
        .unwrap_or_else(|| panic!("ALLOCATE reply is not `1 R W M \\n`: {reply:?}"));
    let parts: Vec<&str> = body.split(' ').collect();
    assert_eq!(parts.len(), 3, "ALLOCATE reply {reply:?}");
    let prefix = format!("ibp://{host}:{port}/{rid}#IBP-");
    let mut key = None;
    let mut typekeys = Vec::new();
    for (p, kind) in parts.iter().zip(["READ", "WRITE", "MANAGE"]) {
        let rest = p
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("capability {p:?} does not start with {prefix:?}"));
        // As in the transcripts: "IBP-" + 90 alphanumerics (94 characters).
        let (k, rest) = rest.split_at(KEY_ALNUM.min(rest.len()));
        assert!(
            k.len() == KEY_ALNUM && k.bytes().all(|b| b.is_ascii_alphanumeric()),
            "key of {p:?} is not IBP- + {KEY_ALNUM} alphanumerics"
        );
        let (slash, rest) = rest.split_at(1.min(rest.len()));
        assert_eq!(slash, "/", "capability {p:?}");
        let (tk, k2) = rest
            .split_once('/')
            .unwrap_or_else(|| panic!("capability {p:?} has no typekey"));
        assert!(
            !tk.is_empty() && tk.bytes().all(|b| b.is_ascii_digit()),
            "typekey of {p:?}"
        );
        assert_eq!(k2, kind, "capability kind of {p:?}");
        match key {
            None => key = Some(k.to_owned()),
            Some(ref prev) => assert_eq!(prev, k, "the three capabilities share one key"),
        }
        typekeys.push(tk.to_owned());
    }
    assert!(
        typekeys[0] != typekeys[1] && typekeys[1] != typekeys[2] && typekeys[0] != typekeys[2],
        "typekeys must differ: {typekeys:?}"
    );
    let cap = |s: &str, kind| {
        let c: Capability = s.parse().expect("capability parses");
        assert_eq!(c.kind, kind);
        c
    };
    Caps {
        read: cap(parts[0], CapKind::Read),
        write: cap(parts[1], CapKind::Write),
        manage: cap(parts[2], CapKind::Manage),
    }
}

/// A parsed PROBE reply `1 rr wr size max secs rel type \n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub read_refs: u64,
    pub write_refs: u64,
    pub size: u64,
    pub max_size: u64,
    pub secs: i64,
    pub reliability: u8,
    pub storage: u8,
}

impl Probe {
    pub fn parse(reply: &str) -> Probe {
        let body = reply
            .strip_prefix("1 ")
            .and_then(|s| s.strip_suffix(" \n"))
            .unwrap_or_else(|| panic!("not a PROBE reply: {reply:?}"));
        let f: Vec<i64> = body
            .split(' ')
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|_| panic!("PROBE field {t:?} in {reply:?}"))
            })
            .collect();
        assert_eq!(f.len(), 7, "PROBE reply {reply:?}");
        Probe {
            read_refs: f[0] as u64,
            write_refs: f[1] as u64,
            size: f[2] as u64,
            max_size: f[3] as u64,
            secs: f[4],
            reliability: f[5] as u8,
            storage: f[6] as u8,
        }
    }
}

/// `<rid>#<key> <typekey>` as requests carry a capability.
pub fn cr(c: &Capability) -> String {
    format!("{} {}", c.cap.rid_key(), c.cap.typekey)
}

pub fn store_line(write: &Capability, size: u64) -> String {
    format!("0 2 {} {size} 300 \n", cr(write))
}

pub fn write_line(write: &Capability, offset: u64, size: u64) -> String {
    format!("0 13 {} {offset} {size} 300 \n", cr(write))
}

pub fn load_line(read: &Capability, offset: u64, size: u64) -> String {
    format!("0 8 {} {offset} {size} 300 \n", cr(read))
}

/// PROBE as libibp sends it (`40 1 0 0 0 300`).
pub fn probe_line(cap: &Capability) -> String {
    format!("0 9 {} 40 1 0 0 0 300\n", cr(cap))
}

pub fn incr_line(cap: &Capability, cap_type: u8) -> String {
    format!("0 9 {} 41 {cap_type} 300\n", cr(cap))
}

pub fn decr_line(cap: &Capability, cap_type: u8) -> String {
    format!("0 9 {} 42 {cap_type} 300\n", cr(cap))
}

pub fn chng_line(cap: &Capability, max_size: u64, duration: i64, reliability: u8) -> String {
    format!(
        "0 9 {} 43 0 {max_size} {duration} {reliability} 300\n",
        cr(cap)
    )
}

pub fn copy_line(read: &Capability, target: &str, offset: u64, size: u64) -> String {
    format!(
        "0 5 {} {target} {} {offset} {size} 300 300 300 \n",
        read.cap.rid_key(),
        read.cap.typekey
    )
}

/// Sends a request on a fresh connection, expects exactly `reply`, and then
/// (for error replies) that the depot closes the connection.
pub fn expect_error(depot: &DepotProc, request: &str, reply: &str) {
    let mut c = depot.connect();
    assert_eq!(c.request(request), reply, "reply to {request:?}");
    c.expect_closed();
}

/// A deterministic, non-periodic byte pattern for `seed` at `offset`.
pub fn pattern_byte(seed: u64, offset: u64) -> u8 {
    let x = offset
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 56) as u8 ^ (offset as u8)
}

pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern_byte(seed, offset + i))
        .collect()
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Files (names) in a directory.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ------------------------------------------------------ secure-port helpers

/// A PKI for secure-port tests: a CA, an AA for vo1, an L-Bone signing
/// key, the depot's server certificate and key, and the trust directory,
/// all under one temporary directory.
pub struct Pki {
    pub dir: TempDir,
    pub pki: ibp_testkit::pki::Pki,
    pub ca: ibp_auth::pki::Authority,
    pub lbone: ring::signature::Ed25519KeyPair,
    /// What clients trust (the CA).
    pub client_trust: ibp_auth::TrustStore,
}

impl Pki {
    pub fn new() -> Pki {
        use ibp_auth::keys::{ed25519_public, format_public_key, generate_ed25519};
        let dir = tempfile::tempdir().unwrap();
        let pki = ibp_testkit::pki::Pki::new(&["vo1"]);
        let server = pki
            .ca
            .issue_server(&["localhost", "127.0.0.1"], 30)
            .unwrap();
        let lbone_key = generate_ed25519().unwrap();
        let trust = dir.path().join("trust");
        pki.write_trust(&trust, &["vo1"]);
        std::fs::create_dir_all(trust.join("metadata")).unwrap();
        write(
            &trust.join("lbone/lbone.pub"),
            &format_public_key(&ed25519_public(&lbone_key).unwrap()),
        );
        write(
            &dir.path().join("depot.pem"),
            &pem_of("CERTIFICATE", &server.cert_der),
        );
        ibp_auth::keys::write_secret(
            &dir.path().join("depot.key"),
            pem_of("PRIVATE KEY", &server.key_pkcs8).as_bytes(),
        )
        .unwrap();
        let mut client_trust = ibp_auth::TrustStore::new();
        client_trust.add_ca(pki.ca.cert_der.clone()).unwrap();
        Pki {
            dir,
            ca: pki.ca.clone(),
            pki,
            lbone: ring::signature::Ed25519KeyPair::from_pkcs8(&lbone_key).unwrap(),
            client_trust,
        }
    }

    /// A depot configuration file with a TLS port serving vo1: `top` goes
    /// before the tables.
    pub fn config(&self, top: &str) -> PathBuf {
        let d = self.dir.path();
        let text = format!(
            "{top}\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrust_dir = \"{}\"\n\n[[vo]]\nname = \"vo1\"\nmax_size = \"4MiB\"\nmax_duration = \"1h\"\n",
            d.join("depot.pem").display(),
            d.join("depot.key").display(),
            d.join("trust").display(),
        );
        let path = d.join(format!("depot-{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A depot started with [`config`](Self::config)`(top)`.
    pub fn depot(&self, top: &str) -> DepotBuilder {
        DepotBuilder::new()
            .arg("--config")
            .arg(self.config(top))
            .tls()
    }

    /// A vo1 member's proxy carrying AA-signed attributes (VO ID `vo1:<name>`).
    pub fn user(&self, name: &str) -> ibp_auth::ProxyCredential {
        self.pki
            .member(name, "vo1")
            .attributes_valid(-60, 3600)
            .lifetimes(12 * 3600, 3600)
            .proxy()
    }

    /// A plain end-entity service certificate from the CA (serverAuth and
    /// clientAuth, no VO attributes), as the L-Bone's or a depot's.
    pub fn service(&self, name: &str) -> ibp_auth::ProxyCredential {
        let (cert, key) = self.pki.service(name, &["localhost"]);
        ibp_auth::ProxyCredential {
            chain: vec![cert],
            key_pkcs8: key,
        }
    }

    /// A depot grant for `holder` (vo1, VO ID `vo_id`), valid for 10 minutes.
    pub fn grant(
        &self,
        depot: &DepotProc,
        holder: &ibp_auth::ProxyCredential,
        vo_id: &str,
    ) -> String {
        let now = ibp_auth::unix_now();
        ibp_auth::tokens::DepotGrant {
            depot: format!("127.0.0.1:{}", depot.tls_addr.expect("TLS port").port()),
            vo: "vo1".into(),
            vo_id: vo_id.into(),
            holder: holder.key_hash().unwrap(),
            issued: now,
            not_after: now + 600,
        }
        .sign(&self.lbone)
    }

    /// A TLS client configuration presenting `cred` (or no certificate).
    pub fn tls_config(
        &self,
        cred: Option<&ibp_auth::ProxyCredential>,
    ) -> std::sync::Arc<rustls::ClientConfig> {
        std::sync::Arc::new(ibp_auth::tls::client_config(&self.client_trust, cred).unwrap())
    }
}

/// A TCP connection to `to` from the local address `from` (any port):
/// Linux routes all of 127.0.0.0/8 over loopback, so tests can play
/// clients at several addresses.
pub async fn tcp_from(from: std::net::IpAddr, to: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let s = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.bind(SocketAddr::new(from, 0))?;
    let c = tokio::time::timeout(IO_TIMEOUT, s.connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    c.set_nodelay(true)?;
    Ok(c)
}

/// A TLS 1.3 connection to the depot's secure port from `from`, with `cfg`.
pub async fn tls_from(
    from: std::net::IpAddr,
    to: SocketAddr,
    cfg: &std::sync::Arc<rustls::ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tcp_from(from, to).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(
        IO_TIMEOUT,
        tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The resident set size of a process, in KiB (Linux `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
