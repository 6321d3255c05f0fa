//! Peer systems measured beside ours in the same run, never quoted.
//!
//! - **Tahoe-LAFS**: when `tahoe` is on `PATH` (or `$IBP_BENCH_TAHOE`
//!   names it), [`Tahoe::start`] makes a grid of its own on loopback (an
//!   introducer, `n` storage nodes and a client node, `k`-of-`n`
//!   encoding, the same shape as our EC `k+m`), and files go through the
//!   client's web API (`PUT /uri`, `GET /uri/CAP`), the way its users and
//!   its own benchmarks move them. Tahoe encrypts every file (AES-CTR),
//!   erasure-codes it and checks it (SHA-256 Merkle trees): it is the
//!   peer of our full security level.
//! - **LoRS 0.82** (`lors_upload`/`lors_download`): the original tools
//!   need a legacy L-Bone (LBONE protocol) to place data, which this
//!   benchmark does not run; [`lors082`] reports whether they are on
//!   `PATH` only, and reports say "not measured" for them.
//!
//! A peer that is absent is "not measured", with the reason: no figure
//! is ever printed for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The `tahoe` program: `$IBP_BENCH_TAHOE`, else `tahoe` on `PATH`.
pub fn tahoe_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IBP_BENCH_TAHOE") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    on_path("tahoe")
}

/// Why LoRS 0.82 is not measured (it never is here; see the module
/// documentation): the text a report prints.
pub fn lors082() -> String {
    match (on_path("lors_upload"), on_path("lors_download")) {
        (Some(_), Some(_)) => "not measured: lors_upload is on PATH, but it needs a legacy \
                               L-Bone, which this benchmark does not run"
            .into(),
        _ => "not measured: lors_upload/lors_download are not on PATH".into(),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A Tahoe-LAFS grid on loopback; its processes are killed when it is
/// dropped.
pub struct Tahoe {
    children: Vec<Child>,
    web: u16,
    /// `tahoe --version`'s first line.
    pub version: String,
    pub k: usize,
    pub n: usize,
}

impl Tahoe {
    /// Creates and starts a grid under `dir` (which must not exist yet)
    /// and waits, up to 120 s, until the client sees all `n` storage
    /// nodes.
    pub fn start(bin: &Path, dir: &Path, k: usize, n: usize) -> anyhow::Result<Tahoe> {
        std::fs::create_dir_all(dir)?;
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .context("tahoe --version")?;
        let mut t = Tahoe {
            children: Vec::new(),
            web: free_port()?,
            version,
            k,
            n,
        };
        let create = |args: Vec<String>| -> anyhow::Result<()> {
            let out = Command::new(bin)
                .args(&args)
                .output()
                .with_context(|| format!("tahoe {args:?}"))?;
            if !out.status.success() {
                bail!(
                    "tahoe {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        let endpoint = |port: u16| {
            [
                format!("--port=tcp:{port}:interface=127.0.0.1"),
                format!("--location=tcp:127.0.0.1:{port}"),
            ]
        };
        let intro = dir.join("introducer");
        let mut args = vec!["create-introducer".to_string()];
        args.extend(endpoint(free_port()?));
        args.push(intro.display().to_string());
        create(args)?;
        t.run(bin, &intro)?;
        let furl_file = intro.join("private").join("introducer.furl");
        let furl = wait_for(Duration::from_secs(60), "the introducer's FURL", || {
            std::fs::read_to_string(&furl_file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| s.starts_with("pb://"))
        })?;
        let shares = [
            format!("--shares-needed={k}"),
            format!("--shares-happy={n}"),
            format!("--shares-total={n}"),
        ];
        for i in 0..n {
            let node = dir.join(format!("storage{i}"));
            let mut args = vec![
                "create-node".to_string(),
                format!("--nickname=storage{i}"),
                format!("--introducer={furl}"),
                format!("--webport=tcp:{}:interface=127.0.0.1", free_port()?),
            ];
            args.extend(endpoint(free_port()?));
            args.extend(shares.iter().cloned());
            args.push(node.display().to_string());
            create(args)?;
            t.run(bin, &node)?;
        }
        let client = dir.join("client");
        let mut args = vec![
            "create-client".to_string(),
            "--nickname=client".to_string(),
            format!("--introducer={furl}"),
            format!("--webport=tcp:{}:interface=127.0.0.1", t.web),
        ];
        args.extend(shares.iter().cloned());
        args.push(client.display().to_string());
        create(args)?;
        t.run(bin, &client)?;
        let web = t.web;
        wait_for(
            Duration::from_secs(120),
            "the Tahoe client to see its storage nodes",
            || {
                let (status, body) = request(web, "GET", "/?t=json", None).ok()?;
                let seen = String::from_utf8_lossy(&body)
                    .matches("\"connection_status\": \"connected\"")
                    .count();
                (status == 200 && seen >= n).then_some(())
            },
        )?;
        Ok(t)
    }

    fn run(&mut self, bin: &Path, node: &Path) -> anyhow::Result<()> {
        // `tahoe run` ends when its standard input closes: a pipe held
        // here keeps it running until the grid is dropped.
        let log = std::fs::File::create(node.with_extension("log"))?;
        let child = Command::new(bin)
            .arg("run")
            .arg(node)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("tahoe run {}", node.display()))?;
        self.children.push(child);
        Ok(())
    }

    /// Uploads `file` (an immutable file, `PUT /uri`): the wall time of
    /// the request and the read capability.
    pub fn put(&self, file: &Path) -> anyhow::Result<(Duration, String)> {
        let start = Instant::now();
        let (status, body) = request(self.web, "PUT", "/uri", Some(file))?;
        let took = start.elapsed();
        let cap = String::from_utf8_lossy(&body).trim().to_string();
        if !(200..300).contains(&status) || !cap.starts_with("URI:") {
            bail!("Tahoe PUT /uri: HTTP {status}: {cap}");
        }
        Ok((took, cap))
    }

    /// Uploads `data` as a file: the read capability.
    pub fn put_bytes(&self, data: &[u8]) -> anyhow::Result<String> {
        let (status, body) = request_bytes(self.web, "PUT", "/uri", data)?;
        let cap = String::from_utf8_lossy(&body).trim().to_string();
        if !(200..300).contains(&status) || !cap.starts_with("URI:") {
            bail!("Tahoe PUT /uri: HTTP {status}: {cap}");
        }
        Ok(cap)
    }

    /// Downloads `cap` into `out`: the wall time.
    pub fn get(&self, cap: &str, out: &Path) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let path = format!("/uri/{}", cap.replace(':', "%3A"));
        let mut s = connect(self.web)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut r = BufReader::with_capacity(1 << 20, s);
        let (status, chunked) = read_head(&mut r)?;
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        read_body(&mut r, chunked, &mut f)?;
        f.flush()?;
        if status != 200 {
            bail!("Tahoe GET {path}: HTTP {status}");
        }
        Ok(start.elapsed())
    }

    /// Downloads `cap` into memory.
    pub fn get_bytes(&self, cap: &str) -> anyhow::Result<Vec<u8>> {
        let path = format!("/uri/{}", cap.replace(':', "%3A"));
        let (status, body) = request(self.web, "GET", &path, None)?;
        if status != 200 {
            bail!("Tahoe GET {path}: HTTP {status}");
        }
        Ok(body)
    }
}

impl Drop for Tahoe {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connect(port: u16) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect to the Tahoe client on port {port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    Ok(s)
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), the
/// body streamed from `body` if given: status and response body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Path>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = connect(port)?;
    match body {
        Some(file) => {
            let mut f = std::fs::File::open(file)?;
            let len = f.metadata()?.len();
            write!(
                s,
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            std::io::copy(&mut f, &mut s)?;
        }
        None => write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?,
    }
    response(s)
}

fn request_bytes(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = connect(port)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    response(s)
}

fn response(s: TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut r = BufReader::new(s);
    let (status, chunked) = read_head(&mut r)?;
    let mut body = Vec::new();
    read_body(&mut r, chunked, &mut body)?;
    Ok((status, body))
}

/// Copies the body (to the end of the connection, or its chunks) to `out`.
fn read_body(r: &mut impl BufRead, chunked: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if !chunked {
        std::io::copy(r, out)?;
        return Ok(());
    }
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .with_context(|| format!("a chunk size, not {line:?}"))?;
        if n == 0 {
            return Ok(());
        }
        let copied = std::io::copy(&mut r.take(n), out)?;
        if copied != n {
            bail!("the connection ended inside a chunk");
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// Reads the status line and headers: the status and whether the body
/// is chunked.
fn read_head(r: &mut impl BufRead) -> anyhow::Result<(u16, bool)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("an HTTP status line, not {line:?}"))?;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let h = h.to_ascii_lowercase();
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
    Ok((status, chunked))
}
