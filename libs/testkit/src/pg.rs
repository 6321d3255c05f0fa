//! A private PostgreSQL cluster for one test or scenario: `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port with the socket in the
//! same directory and `fsync=off`; stopped on drop. As root the server runs
//! as the `postgres` user (initdb refuses root) through `runuser`.
//!
//! Missing PostgreSQL binaries make the test FAIL with instructions: the
//! PostgreSQL suite never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::run_bounded;

/// Where Debian's `postgresql` package puts the server binaries.
const PG_LIB: &str = "/usr/lib/postgresql";

pub struct PgCluster {
    pub url: String,
    pub port: u16,
    /// The directory of its Unix socket.
    pub socket_dir: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: Option<tempfile::TempDir>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl.
fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

impl PgCluster {
    /// The database URL through the Unix socket (reachable from every
    /// network namespace of the machine, unlike 127.0.0.1).
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}&port={}",
            self.socket_dir.display(),
            self.port
        )
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id(1)");
        assert!(
            out.status.success(),
            "running as root needs the `postgres` user (made by the postgresql package)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgCluster {
    fn command(&self, program: &str) -> Command {
        pg_command(&self.bin, program, self.as_postgres)
    }

    pub fn start() -> PgCluster {
        PgCluster::start_opts(None)
    }

    /// [`PgCluster::start`] with TLS on (`ssl = on`), serving the
    /// certificate `cert_pem` (a chain in PEM) with the key `key_pem`;
    /// clients may still connect in clear (`host ... trust` in pg_hba).
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> PgCluster {
        PgCluster::start_opts(Some((cert_pem, key_pem)))
    }

    fn start_opts(tls: Option<(&str, &str)>) -> PgCluster {
        let bin = find_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_LIB}/*/bin: \
                 install them with `apt-get install -y postgresql` (scripts/test does this as \
                 root); the PostgreSQL suite does not skip"
            )
        });
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("ibp-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sock).unwrap();
        if as_postgres {
            let (uid, gid) = postgres_ids();
            for p in [dir.path(), &data, &sock] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut initdb = pg_command(&bin, "initdb", as_postgres);
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(initdb, Duration::from_secs(120)).expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut ssl_opts = String::new();
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let (c, k) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            if as_postgres {
                let (uid, gid) = postgres_ids();
                for p in [&c, &k] {
                    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
                }
            }
            ssl_opts = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                c.display(),
                k.display()
            );
        }
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cluster = PgCluster {
                url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                port,
                socket_dir: sock.clone(),
                bin: bin.clone(),
                data: data.clone(),
                as_postgres,
                _dir: None,
            };
            let mut start = cluster.command("pg_ctl");
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{ssl_opts}",
                    sock.display()
                ))
                .arg("start")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let out = run_bounded(start, Duration::from_secs(90)).expect("run pg_ctl start");
            if out.status.success() {
                cluster._dir = Some(dir);
                return cluster;
            }
            // Do not stop a cluster that did not start.
            cluster.data = PathBuf::new();
            last_err = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(data.join("log")).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed five times: {last_err}");
    }
}

fn pg_command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    let exe = bin.join(program);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data.as_os_str().is_empty() {
            return;
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = run_bounded(stop, Duration::from_secs(40));
    }
}
