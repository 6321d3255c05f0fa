//! Fixtures for the integration tests: a CA directory made by the real
//! `online-ca init`, the real `online-ca serve`, the admin CLI, a real
//! FreeRADIUS on loopback, an HTTPS client, CSRs, and verification of the
//! returned credentials with `ibp-auth`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use ibp_auth::proxy::ProxyOptions;
use ibp_auth::{Identity, ProxyCredential, TrustStore};
use ibp_testkit::process::Daemon;
use rustls_pki_types::ServerName;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_online-ca");

/// Runs the binary; returns (success, stdout, stderr).
pub fn run(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn online-ca");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CA directory made by `online-ca init` (VOs vo1 and vo2), and a
/// configuration file for it.
pub struct CaDir {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl CaDir {
    pub fn init() -> CaDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let (ok, out, err) = run(
            &[
                "init",
                "--dir",
                dir.to_str().unwrap(),
                "--org",
                "Test Grid",
                "--vo",
                "vo1",
                "--vo",
                "vo2",
                "--hostname",
                "localhost",
                "--hostname",
                "127.0.0.1",
            ],
            None,
        );
        assert!(ok, "init failed: {out}\n{err}");
        let config = dir.join("config.toml");
        let ca = CaDir { tmp, dir, config };
        ca.configure("");
        ca
    }

    /// Writes the configuration: loopback port 0, local users, plus `extra`
    /// (more top-level settings first, then sections).
    pub fn configure(&self, extra: &str) {
        let (top, sections) = match extra.find('[') {
            Some(i) => (&extra[..i], &extra[i..]),
            None => (extra, ""),
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndir = {dir:?}\norg = \"Test Grid\"\n{top}\n[local]\nusers_file = \"users\"\n{sections}\n",
            dir = self.dir.display().to_string(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn admin(&self, args: &[&str]) -> String {
        let mut all = vec!["admin", "--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let (ok, out, err) = run(&all, None);
        assert!(ok, "admin {args:?} failed: {out}\n{err}");
        out
    }

    pub fn admin_fails(&self, args: &[&str]) -> String {
        let mut all = vec!["admin", "--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let (ok, out, err) = run(&all, None);
        assert!(!ok, "admin {args:?} should fail: {out}\n{err}");
        err
    }

    pub fn add_user(&self, user: &str, password: &str) {
        let (ok, out, err) = run(
            &[
                "admin",
                "--config",
                self.config.to_str().unwrap(),
                "user",
                "add",
                "--user",
                user,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        );
        assert!(ok, "user add failed: {out}\n{err}");
    }

    /// `member add`; returns the VO ID.
    pub fn add_member(&self, vo: &str, identity: &str, extra: &[&str]) -> String {
        let mut args = vec!["member", "add", "--vo", vo, "--identity", identity];
        args.extend_from_slice(extra);
        let out = self.admin(&args);
        out.lines()
            .last()
            .and_then(|l| l.rsplit(' ').next())
            .expect("VO ID in member add output")
            .to_string()
    }

    pub fn members(&self, vo: &str) -> Vec<Value> {
        let out = self.admin(&["member", "list", "--vo", vo, "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn audit(&self) -> Vec<Value> {
        let out = self.admin(&["audit", "list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        pem_cert(&std::fs::read_to_string(self.dir.join("ca.pem")).unwrap())
    }

    /// The trust directory `init` wrote for other services.
    pub fn trust(&self) -> TrustStore {
        TrustStore::load(&self.dir.join("trust")).unwrap()
    }

    pub fn serve(&self) -> Server {
        Server::start(&self.config, &self.tmp.path().join("serve.log"))
    }
}

pub fn pem_cert(text: &str) -> Vec<u8> {
    ibp_auth::trust::pem_certificates(text.as_bytes())
        .unwrap()
        .into_iter()
        .next()
        .expect("a certificate")
}

/// A running `online-ca serve`, killed on drop.
pub struct Server {
    daemon: Daemon,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    pub fn start(config: &Path, log: &Path) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info");
        let daemon = Daemon::start("online-ca serve", cmd, log, &["listening on "]);
        Server {
            addr: daemon.addr(),
            daemon,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        self.daemon.log_text()
    }

    /// Sends SIGHUP: the CA reads its configuration, certificate and trust
    /// directory again.
    pub fn hup(&self) {
        self.daemon.signal(libc::SIGHUP);
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub json: Value,
    /// The body as received.
    pub body: Vec<u8>,
}

/// One HTTPS request to the server (TLS 1.3, server verified against
/// `ca_der` as `localhost`), optionally presenting `cred` as client
/// certificate chain.
pub async fn https(
    addr: SocketAddr,
    ca_der: &[u8],
    cred: Option<&ProxyCredential>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    https_from(None, addr, ca_der, cred, method, path, body).await
}

/// [`https`] from the local address `from` (any of 127/8 on loopback), or
/// the one the system picks.
pub async fn https_from(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    ca_der: &[u8],
    cred: Option<&ProxyCredential>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let mut trust = TrustStore::new();
    trust.add_ca(ca_der.to_vec()).unwrap();
    let cfg = ibp_auth::tls::client_config(&trust, cred).unwrap();
    let tcp = match from {
        None => tokio::net::TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
    };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let data = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(data)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        json,
        body: bytes.to_vec(),
    }
}

/// A CSR for a fresh key: (PEM, key PKCS#8).
pub fn new_csr() -> (String, Vec<u8>) {
    let (der, key) = ibp_auth::pki::new_csr("ignored by the CA").unwrap();
    (pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)), key)
}

/// A login request body.
pub fn login_body(method: &str, user: &str, password: &str, vo: &str, csr: &str) -> Value {
    serde_json::json!({
        "method": method, "user": user, "password": password, "vo": vo, "csr": csr,
    })
}

pub fn b64d(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Makes a proxy below `ee_der` (signed with `key`) carrying `attributes`.
pub fn proxy(ee_chain: &[Vec<u8>], key: &[u8], attributes: Vec<u8>) -> ProxyCredential {
    ProxyCredential::create(
        ee_chain,
        key,
        &ProxyOptions {
            lifetime: 3600,
            attributes: Some(attributes),
            path_len: None,
        },
    )
    .unwrap()
}

/// The credential of a successful login, verified by `ibp-auth`: a proxy
/// made with the returned certificate, the CSR key and the returned
/// attributes must verify against `trust` (CA + AA pinned for the VO).
pub fn verify_login(answer: &Value, key: &[u8], trust: &TrustStore) -> Identity {
    let cert = pem_cert(answer["certificate"].as_str().unwrap());
    let attrs = b64d(answer["attributes"].as_str().unwrap());
    let cred = proxy(&[cert], key, attrs);
    ibp_auth::verify_chain(&cred.chain_der(), trust, ibp_auth::unix_now())
        .expect("returned credential verifies")
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for d in dirs {
        for n in names {
            let p = d.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A real FreeRADIUS on 127.0.0.1 with a users file, killed on drop.
pub struct FreeRadius {
    child: Child,
    pub port: u16,
    pub output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl FreeRadius {
    /// Starts FreeRADIUS with client secret `secret` and `users`
    /// (name, cleartext password). Fails (not skips) when it is missing.
    pub fn start(secret: &str, users: &[(&str, &str)]) -> FreeRadius {
        let bin = find_in_path(&["freeradius", "radiusd"]).unwrap_or_else(|| {
            panic!(
                "FreeRADIUS is required by these tests and was not found (looked for \
                 `freeradius` and `radiusd` in PATH and /usr/sbin). Install it: \
                 apt-get install -y freeradius freeradius-utils"
            )
        });
        let libdir = [
            "/usr/lib/freeradius",
            "/usr/lib/x86_64-linux-gnu/freeradius",
            "/usr/lib64/freeradius",
        ]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .unwrap_or_else(|| {
            panic!("FreeRADIUS modules directory not found (is the freeradius package complete?)")
        });
        let mut last_err = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            std::fs::write(
                dir.path().join("radiusd.conf"),
                radiusd_conf(dir.path(), libdir, secret, port),
            )
            .unwrap();
            let mut text = String::new();
            for (u, p) in users {
                text.push_str(&format!("{u}\tCleartext-Password := \"{p}\"\n"));
            }
            std::fs::write(dir.path().join("users"), text).unwrap();
            let mut child = Command::new(&bin)
                .args(["-f", "-d", dir.path().to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let output = Arc::new(Mutex::new(Vec::new()));
            let (tx, rx) = std::sync::mpsc::channel();
            for pipe in [
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                Box::new(child.stderr.take().unwrap()),
            ] {
                let (out, tx) = (output.clone(), tx.clone());
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        if line.contains("Ready to process requests") {
                            let _ = tx.send(());
                        }
                        out.lock().unwrap().push(line);
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    return FreeRadius {
                        child,
                        port,
                        output,
                        _dir: dir,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(100));
                    last_err = format!(
                        "FreeRADIUS exited ({status}):\n{}",
                        output.lock().unwrap().join("\n")
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = format!(
                        "FreeRADIUS not ready after 15 s:\n{}",
                        output.lock().unwrap().join("\n")
                    );
                    break;
                }
            }
        }
        panic!("{last_err}");
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn radiusd_conf(dir: &Path, libdir: &str, secret: &str, port: u16) -> String {
    format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
confdir = {dir}
logdir = ${{confdir}}
raddbdir = ${{confdir}}
radacctdir = ${{confdir}}
run_dir = ${{confdir}}
name = freeradius
libdir = {libdir}
pidfile = ${{run_dir}}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
	destination = stdout
	colourise = no
	auth = yes
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}}
proxy_requests = no
client localhost {{
	ipaddr = 127.0.0.1
	secret = {secret}
}}
thread pool {{
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 4
}}
modules {{
	pap {{
	}}
	files {{
		filename = ${{confdir}}/users
	}}
}}
server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		files
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
	}}
}}
"#,
        dir = dir.display()
    )
}

/// The certificate (DER) a new TLS connection to `addr` is served with,
/// verified against `ca_der` as `localhost`.
pub async fn served_cert(addr: SocketAddr, ca_der: &[u8]) -> Vec<u8> {
    let mut trust = TrustStore::new();
    trust.add_ca(ca_der.to_vec()).unwrap();
    let cfg = ibp_auth::tls::client_config(&trust, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A `POST` through `ibp_https::Client` presenting `cred`: (status,
/// error message), or the transport error (a refused handshake).
pub async fn post_as(
    addr: SocketAddr,
    ca_der: &[u8],
    cred: &ProxyCredential,
    path: &str,
    body: &Value,
) -> Result<(u16, String), ibp_https::HttpError> {
    let mut trust = TrustStore::new();
    trust.add_ca(ca_der.to_vec()).unwrap();
    let tls = ibp_auth::tls::client_config(&trust, Some(cred)).unwrap();
    let c = ibp_https::Client::new(
        ibp_https::BaseUrl::parse(&format!("https://127.0.0.1:{}", addr.port())).unwrap(),
        tls,
        true,
    );
    let r = c.post_json(path, body).await?;
    Ok((r.status, r.error_message(400)))
}
