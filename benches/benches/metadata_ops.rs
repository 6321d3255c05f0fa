//! The metadata manager's benchmark: a real `metadata-manager` process on
//! loopback, clients over mutual TLS with kept-alive connections, on SQLite
//! (the default) and on a private PostgreSQL cluster (default durability
//! settings: fsync on).
//!
//! - get: exNode (3 replicas x 8 blocks) + file ticket + wrapped key of a
//!   random file among those put, `CONCURRENCY` clients in parallel;
//! - put: a new version of a file (optimistic concurrency checked), each
//!   client on its own file.
//!
//! Reported as operations per second with p50/p99 latency; the target (at
//! least 5,000 gets/s on SQLite) is printed next to the figure, never fatal.
//! Run with `cargo bench -p ibp-benches --bench metadata_ops`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use exnode::{Checksum, Exnode, Mapping};
use ibp_benches::pki::{mint, Pki};
use ibp_benches::{release_binary, CpuSnapshot, Samples};
use ibp_https::{BaseUrl, Client};
use serde_json::{json, Value};

const FILES: usize = 64;
const CONCURRENCY: usize = 8;
const GET_SECS: f64 = 5.0;
const GET_MAX: usize = 200_000;
const PUT_SECS: f64 = 3.0;
const PUT_MAX: usize = 50_000;
const TARGET_GETS_SQLITE: f64 = 5000.0;

struct Server {
    child: Child,
    url: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &Path, dir: &Path, pki_dir: &Path, database: &str) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir)?;
    let out = Command::new(bin)
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .output()
        .context("metadata-manager init")?;
    if !out.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nserver_cert = \"{}\"\nserver_key = \"{}\"\ntrust_dir = \"{}\"\nsigning_key = \"metadata.key\"\ndatabase = \"{database}\"\ndb_connections = 2\n",
            pki_dir.join("depot.pem").display(),
            pki_dir.join("depot.key").display(),
            pki_dir.join("trust").display(),
        ),
    )?;
    let log = dir.join("server.log");
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        bail!(
            "metadata manager said {line:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let port = addr.rsplit(':').next().unwrap_or("0");
    Ok(Server {
        url: format!("https://127.0.0.1:{port}"),
        child,
        _stdout: stdout,
    })
}

/// A private PostgreSQL cluster (initdb + pg_ctl; as root through
/// `runuser -u postgres`), stopped on drop.
struct Pg {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    url: String,
    _dir: tempfile::TempDir,
}

fn pg_cmd(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

impl Pg {
    fn start() -> anyhow::Result<Pg> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL is not installed (apt-get install postgresql)")?
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let b = e.path().join("bin");
                b.join("initdb").exists().then_some((v, b))
            })
            .collect();
        versions.sort();
        let (_, bin) = versions
            .pop()
            .context("no initdb under /usr/lib/postgresql")?;
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new().prefix("bench-pg-").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        if as_postgres {
            let id = |flag: &str| -> anyhow::Result<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output()?;
                Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
            };
            let (uid, gid) = (id("-u")?, id("-g")?);
            for p in [dir.path(), data.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        let out = pg_cmd(&bin, "initdb", as_postgres)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let out = pg_cmd(&bin, "pg_ctl", as_postgres)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                dir.path().display()
            ))
            .arg("start")
            .output()?;
        if !out.status.success() {
            bail!("pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Pg {
            bin,
            data,
            as_postgres,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            _dir: dir,
        })
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = pg_cmd(&self.bin, "pg_ctl", self.as_postgres)
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

/// A file of 8 blocks of 1 MiB, 3 replicas each.
fn exnode_xml(file: uuid::Uuid, i: usize) -> String {
    let block = 1u64 << 20;
    let mut mappings = Vec::new();
    for b in 0..8u64 {
        for r in 0..3u64 {
            let depot = format!("127.0.0.1:{}", 6714 + r);
            let cap =
                |kind: &str| format!("ibp://{depot}/{i}-{b}#k{:032x}/{}/{kind}", b * 7 + r, 3);
            mappings.push(Mapping {
                logical_offset: b * block,
                logical_length: block,
                alloc_length: block,
                read: Some(cap("READ")),
                write: Some(cap("WRITE")),
                manage: Some(cap("MANAGE")),
                depot: depot.clone(),
                expires: Some(2_000_000_000),
                checksum: Some(Checksum::Blake3([b as u8; 32])),
                ..Mapping::default()
            });
        }
    }
    exnode::to_xml(&Exnode {
        file: Some(file),
        size: 8 * block,
        block_size: Some(block),
        mappings,
        ..Exnode::default()
    })
}

async fn call(client: &Client, path: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = client.post_json(path, body).await?;
    if !resp.is_success() {
        bail!("{path}: HTTP {}: {}", resp.status, resp.error_message(300));
    }
    Ok(resp.json()?)
}

struct Figures {
    gets_per_s: f64,
    /// CPU time per get of the server process (all its threads, SQLite's
    /// included) and of the client side.
    server_us: f64,
    client_us: f64,
    get_p50_ms: f64,
    get_p99_ms: f64,
    puts_per_s: f64,
    put_p50_ms: f64,
    put_p99_ms: f64,
}

async fn run(pki: &Pki, url: &str, server_pid: u32) -> anyhow::Result<Figures> {
    let server_cpu = || CpuSnapshot::of(&server_pid.to_string());
    let tls = ibp_auth::tls::client_config(&pki.client_trust, Some(&pki.user))?;
    let client = Client::new(BaseUrl::parse(url)?, tls, true).with_keep_alive(CONCURRENCY);
    call(&client, "/v1/mkdir", &json!({"path": "/vo1/bench"})).await?;
    let mut paths = Vec::new();
    for i in 0..FILES {
        let path = format!("/vo1/bench/f{i:03}");
        let xml = exnode_xml(uuid::Uuid::new_v4(), i);
        call(
            &client,
            "/v1/put",
            &json!({"path": path, "base_version": 0, "exnode": xml}),
        )
        .await?;
        paths.push(path);
    }
    let paths = Arc::new(paths);
    // Warm up every connection.
    for p in paths.iter().take(CONCURRENCY * 4) {
        call(&client, "/v1/get", &json!({"path": p})).await?;
    }

    let (server0, client0) = (server_cpu(), CpuSnapshot::current());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let client = client.clone();
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = t * 7;
            let begin = Instant::now();
            while begin.elapsed().as_secs_f64() < GET_SECS && lat.len() < GET_MAX / CONCURRENCY {
                let p = &paths[i % paths.len()];
                i += 13;
                let t0 = Instant::now();
                let v = call(&client, "/v1/get", &json!({"path": p})).await?;
                if v["ticket"].as_str().is_none_or(|s| s.is_empty()) {
                    bail!("get without a ticket: {v}");
                }
                lat.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut gets = Samples::default();
    let mut n = 0usize;
    for t in tasks {
        for l in t.await?? {
            gets.push(l);
            n += 1;
        }
    }
    let gets_per_s = n as f64 / start.elapsed().as_secs_f64();
    let per_get = |c: CpuSnapshot| (c.user + c.system).as_secs_f64() * 1e6 / n.max(1) as f64;
    let server_us = per_get(server_cpu().since(&server0));
    let client_us = per_get(CpuSnapshot::current().since(&client0));

    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let client = client.clone();
        let path = paths[t].clone();
        tasks.push(tokio::spawn(async move {
            let first = call(&client, "/v1/get", &json!({"path": path})).await?;
            let id: uuid::Uuid = first["id"].as_str().unwrap_or_default().parse()?;
            let mut base = first["version"].as_u64().unwrap_or(1);
            let xml = exnode_xml(id, t);
            let mut lat = Vec::new();
            let begin = Instant::now();
            while begin.elapsed().as_secs_f64() < PUT_SECS && lat.len() < PUT_MAX / CONCURRENCY {
                let t0 = Instant::now();
                let v = call(
                    &client,
                    "/v1/put",
                    &json!({"path": path, "base_version": base, "exnode": xml}),
                )
                .await?;
                base = v["version"].as_u64().context("version")?;
                lat.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut puts = Samples::default();
    let mut n = 0usize;
    for t in tasks {
        for l in t.await?? {
            puts.push(l);
            n += 1;
        }
    }
    let puts_per_s = n as f64 / start.elapsed().as_secs_f64();
    Ok(Figures {
        gets_per_s,
        server_us,
        client_us,
        get_p50_ms: gets.percentile(50.0) * 1e3,
        get_p99_ms: gets.percentile(99.0) * 1e3,
        puts_per_s,
        put_p50_ms: puts.percentile(50.0) * 1e3,
        put_p99_ms: puts.percentile(99.0) * 1e3,
    })
}

fn report(name: &str, f: &Figures, target: Option<f64>) {
    println!(
        "{name:<10} get+ticket {:>8.0} ops/s (p50 {:.2} ms, p99 {:.2} ms){}",
        f.gets_per_s,
        f.get_p50_ms,
        f.get_p99_ms,
        match target {
            Some(t) => format!(
                "  target >= {t:.0}/s: {}",
                if f.gets_per_s >= t { "met" } else { "MISSED" }
            ),
            None => String::new(),
        }
    );
    println!(
        "{name:<10}   CPU per get: server {:.0} us, client {:.0} us",
        f.server_us, f.client_us
    );
    println!(
        "{name:<10} put-version {:>7.0} ops/s (p50 {:.2} ms, p99 {:.2} ms)",
        f.puts_per_s, f.put_p50_ms, f.put_p99_ms
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; without it we are being run as a test
    // (`cargo test --all-targets`): do not build release binaries and run
    // a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("metadata_ops: a benchmark; run it with `cargo bench -p ibp-benches --bench metadata_ops`");
        return Ok(());
    }
    let bin = release_binary(
        "metadata-manager",
        "metadata-manager",
        "METADATA_MANAGER_BIN",
    )?;
    println!("metadata-manager: {} ({})", bin.path.display(), bin.note);
    println!(
        "{FILES} files of 24 mappings, {CONCURRENCY} concurrent clients over kept-alive mutual-TLS connections"
    );
    let dir = tempfile::tempdir()?;
    let pki = mint(dir.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let db = format!(
        "sqlite://{}",
        dir.path().join("sqlite/metadata.db").display()
    );
    let server = start_server(&bin.path, &dir.path().join("sqlite"), dir.path(), &db)?;
    let sqlite = rt.block_on(run(&pki, &server.url, server.child.id()))?;
    drop(server);
    report("SQLite", &sqlite, Some(TARGET_GETS_SQLITE));

    match Pg::start() {
        Ok(pg) => {
            let server = start_server(&bin.path, &dir.path().join("pg"), dir.path(), &pg.url)?;
            let figures = rt.block_on(run(&pki, &server.url, server.child.id()))?;
            drop(server);
            report("PostgreSQL", &figures, None);
        }
        Err(e) => println!("PostgreSQL  NOT MEASURED: {e:#}"),
    }
    Ok(())
}
