//! The grid's daemons: the three HTTPS services (online CA, L-Bone,
//! metadata manager) and the depots; starting, killing and restarting them
//! on the same ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use super::files::{private_dir, write_file};
use super::netns::{Host, Role};
use super::pki::Issuer;
use super::process::{clean_command, start_retrying_bind, Proc};
use super::{config, Daemon, Grid, GridOptions, Layout};

/// One running (or killed) depot.
pub struct Depot {
    /// Its name at the L-Bone (`depot-<i>`).
    pub name: String,
    /// Whether it serves the legacy port (see [`GridOptions::legacy_off`]).
    pub legacy: bool,
    /// `127.0.0.1:PORT` of the legacy (plain IBP) port; for a depot without
    /// one, its TLS address (what it registers as its port).
    pub legacy_addr: String,
    /// `127.0.0.1:PORT` of the secure port, unless `legacy_only`.
    pub tls_addr: Option<String>,
    /// `127.0.0.1:PORT` of the crypto-level data port, with `data_port`.
    pub data_addr: Option<String>,
    /// The depot's directory (configuration, certificate, logs).
    pub dir: PathBuf,
    /// The resource's data directory.
    pub data_dir: PathBuf,
    /// Its configuration (ports fixed after the first start).
    pub config: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    /// Extra environment of its process (see [`Grid::restart_depot_with_env`]).
    pub(super) env: Vec<(String, String)>,
    pub(super) proc: Option<Proc>,
    /// Its host, on a grid on hosts: its addresses are the host's, its
    /// process runs in the host's namespace.
    pub host: Option<Arc<Host>>,
}

impl Depot {
    /// Depot `i` (`depot-<i>` in the grid directory), configured, not
    /// started.
    pub(super) fn prepare(
        i: usize,
        l: &Layout,
        issuer: &Issuer,
        opts: &GridOptions,
    ) -> anyhow::Result<Depot> {
        let name = format!("depot-{i}");
        let dir = l.dir.join(&name);
        let data_dir = dir.join("data");
        private_dir(&data_dir)?;
        let config = config::write_depot(i, &name, &dir, &data_dir, l, issuer, opts)?;
        Ok(Depot {
            name,
            legacy: !opts.legacy_off.contains(&i),
            legacy_addr: String::new(),
            tls_addr: None,
            data_addr: None,
            log: dir.join("stderr.log"),
            dir,
            data_dir,
            config,
            env: Vec::new(),
            proc: None,
            host: l.host(Role::Depot(i)),
        })
    }

    /// Starts the depot process (its addresses come with
    /// [`Depot::wait_listening`]).
    pub(super) fn spawn(&mut self, bin: &Path) -> anyhow::Result<()> {
        self.proc = Some(Proc::spawn(
            &format!("ibp-depot {}", self.name),
            on_host(&self.host, depot_command(bin, &self.config)),
            &self.dir,
        )?);
        Ok(())
    }

    /// Waits for the `listening on` lines, records the addresses and fixes
    /// them in the configuration.
    pub(super) fn wait_listening(
        &mut self,
        opts: &GridOptions,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let p = self.proc.as_mut().context("depot not started")?;
        let addrs = p.wait_for(&depot_prefixes(opts), deadline)?;
        set_depot_addrs(self, &addrs, opts)?;
        if let Some(h) = &self.host {
            h.expose(port_of(&self.legacy_addr))?;
            if let Some(t) = &self.tls_addr {
                h.expose(port_of(t))?;
            }
        }
        Ok(())
    }

    /// The address grants name: the TLS port if there is one, else legacy.
    pub fn address(&self) -> &str {
        self.tls_addr.as_deref().unwrap_or(&self.legacy_addr)
    }

    /// Whether the process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::running)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    pub(super) fn port(&self) -> u16 {
        port_of(&self.legacy_addr)
    }
}

/// One HTTPS daemon (online CA, L-Bone, metadata manager).
pub(super) struct Service {
    what: &'static str,
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    pub(super) addr: String,
    /// Extra environment of the process (set for the next restart).
    pub(super) env: Vec<(String, String)>,
    pub(super) proc: Option<Proc>,
    /// Its host, on a grid on hosts.
    host: Option<Arc<Host>>,
}

impl Service {
    pub(super) fn spawn(
        what: &'static str,
        bin: &Path,
        dir: &Path,
        config: &Path,
        host: Option<Arc<Host>>,
    ) -> anyhow::Result<Service> {
        let proc = Proc::spawn(what, on_host(&host, serve_command(bin, config)), dir)?;
        Ok(Service {
            host,
            what,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            addr: String::new(),
            env: Vec::new(),
            proc: Some(proc),
        })
    }

    /// Waits for `listening on`, then fixes the port in the configuration
    /// so a restart binds the same one.
    pub(super) fn wait(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let proc = self.proc.as_mut().context("not started")?;
        let addr = proc.wait_for(&["listening on "], deadline)?.remove(0);
        let text = fs::read_to_string(&self.config)?;
        // `listen` is the first line (not `metrics_listen`).
        if let Some(rest) = text.strip_prefix("listen = \"127.0.0.1:0\"") {
            write_file(&self.config, &format!("listen = \"{addr}\"{rest}"))?;
        }
        if let Some(h) = &self.host {
            h.expose(port_of(&addr))?;
        }
        self.addr = addr;
        Ok(())
    }

    /// `https://127.0.0.1:PORT`, or on a host `https://<its name>:PORT`.
    pub(super) fn url(&self) -> String {
        match &self.host {
            Some(h) => format!("https://{}:{}", h.name, port_of(&self.addr)),
            None => format!("https://{}", self.addr),
        }
    }

    /// [`Service::url`] by address (reachable from the root namespace).
    pub(super) fn direct_url(&self) -> String {
        match &self.host {
            Some(h) => format!("https://{}:{}", h.ip, port_of(&self.addr)),
            None => format!("https://{}", self.addr),
        }
    }

    /// The names its certificate holds besides localhost and 127.0.0.1.
    fn cert_names(&self) -> Vec<String> {
        self.host
            .as_ref()
            .map(|h| vec![h.name.clone(), h.ip.to_string()])
            .unwrap_or_default()
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub(super) fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut proc = start_retrying_bind(self.what, &self.dir, &["listening on "], || {
            let mut c = serve_command(&self.bin, &self.config);
            c.envs(self.env.iter().map(|(k, v)| (k, v)));
            on_host(&self.host, c)
        })?;
        let addr = proc.1.remove(0);
        if addr != self.addr {
            bail!("{} came back on {addr}, not {}", self.what, self.addr);
        }
        self.proc = Some(proc.0);
        Ok(())
    }
}

/// `cmd`, in `host`'s namespace if there is one.
pub(super) fn on_host(host: &Option<Arc<Host>>, cmd: Command) -> Command {
    match host {
        Some(h) => h.command(&cmd),
        None => cmd,
    }
}

fn serve_command(bin: &Path, config: &Path) -> Command {
    let mut cmd = clean_command(bin);
    cmd.arg("serve").arg("--config").arg(config);
    cmd
}

pub(super) fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn depot_command(bin: &Path, config: &Path) -> Command {
    let mut cmd = clean_command(bin);
    cmd.env("RUST_LOG", "warn")
        .arg("serve")
        .arg("--config")
        .arg(config);
    cmd
}

fn depot_prefixes(opts: &GridOptions) -> Vec<&'static str> {
    let mut p = vec!["listening on "];
    if !opts.legacy_only {
        p.push("tls listening on ");
        if opts.data_port {
            p.push("data listening on ");
        }
    }
    p
}

/// Records the printed addresses and fixes them in the configuration.
fn set_depot_addrs(d: &mut Depot, addrs: &[String], opts: &GridOptions) -> anyhow::Result<()> {
    // On a host, its ports are reached at the host's address (its relay).
    let host_ip = d.host.as_ref().map(|h| h.ip.to_string());
    let get = |i: usize| {
        let a = addrs.get(i).cloned().context("missing address")?;
        Ok::<_, anyhow::Error>(match &host_ip {
            Some(ip) => format!("{ip}:{}", port_of(&a)),
            None => a,
        })
    };
    d.legacy_addr = get(0)?;
    if !opts.legacy_only {
        d.tls_addr = Some(get(1)?);
        if opts.data_port {
            d.data_addr = Some(get(2)?);
        }
    }
    let mut text = fs::read_to_string(&d.config)?;
    for (key, addr) in [
        // Without the legacy port, `listen` is not bound: leave it.
        ("listen", Some(&d.legacy_addr).filter(|_| d.legacy)),
        ("tls_listen", d.tls_addr.as_ref()),
        ("data_listen", d.data_addr.as_ref()),
    ] {
        if let Some(a) = addr {
            text = text.replacen(
                &format!("\n{key} = \"127.0.0.1:0\"\n"),
                &format!("\n{key} = \"{a}\"\n"),
                1,
            );
            if let Some(rest) = text.strip_prefix(&format!("{key} = \"127.0.0.1:0\"\n")) {
                text = format!("{key} = \"{a}\"\n{rest}");
            }
        }
    }
    write_file(&d.config, &text)
}

impl Grid {
    /// Kills depot `i` (SIGKILL) and waits for it.
    pub fn kill_depot(&mut self, i: usize) {
        if let Some(mut p) = self.depots[i].proc.take() {
            p.kill();
        }
    }

    /// Starts depot `i` again on the same ports and data directory (killing
    /// it first if it runs); returns once it listens on all of them.
    pub fn restart_depot(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_depot(i);
        let prefixes = depot_prefixes(&self.opts);
        let bin = self.bins.depot.clone();
        let d = &mut self.depots[i];
        let (proc, addrs) =
            start_retrying_bind(&format!("ibp-depot {}", d.name), &d.dir, &prefixes, || {
                let mut cmd = depot_command(&bin, &d.config);
                cmd.envs(d.env.iter().map(|(k, v)| (k, v)));
                on_host(&d.host, cmd)
            })?;
        let before = (
            d.legacy_addr.clone(),
            d.tls_addr.clone(),
            d.data_addr.clone(),
        );
        d.proc = Some(proc);
        set_depot_addrs(d, &addrs, &self.opts)?;
        if before
            != (
                d.legacy_addr.clone(),
                d.tls_addr.clone(),
                d.data_addr.clone(),
            )
        {
            bail!("{} came back on other ports: {before:?}", d.name);
        }
        Ok(())
    }

    /// [`Grid::restart_depot`] with extra environment variables, kept for
    /// later restarts (for example a [`crate::clock::ProcessClock`]'s, so
    /// that the test moves the depot's wall clock); an empty `env` restores
    /// the plain environment.
    pub fn restart_depot_with_env(
        &mut self,
        i: usize,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        self.depots[i].env = env;
        self.restart_depot(i)
    }

    /// Sends SIGHUP to depot `i`: it reloads its configuration,
    /// certificate and trust directory (docs/depot.md, "Reloading").
    pub fn reload_depot(&self, i: usize) -> anyhow::Result<()> {
        let pid = self.depots[i].pid().context("the depot is not running")?;
        let pid = i32::try_from(pid).context("a pid")?;
        // SAFETY: kill(2) with a signal number on the pid of our own
        // child process, not reaped while `proc` holds it.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            bail!("kill -HUP {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A new server certificate and key for depot `i` from the grid's CA,
    /// written over the files its configuration names (as a renewal
    /// does); returns the new certificate (DER). The depot uses it after
    /// [`Grid::reload_depot`] or a restart.
    pub fn renew_depot_certificate(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        let issuer = Issuer::load(&self.dir.join("ca"))?;
        let d = &self.depots[i];
        let names = d
            .host
            .as_ref()
            .map(|h| vec![h.name.clone(), h.ip.to_string()])
            .unwrap_or_default();
        let (cert, _key) = issuer.server_cert(&d.name, &d.dir, &names)?;
        let pem = fs::read(&cert)?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .context("parse the new certificate")?;
        Ok(der)
    }

    /// Sends SIGHUP to the online CA, the L-Bone or the metadata manager
    /// (its first replica): it reads its certificate and trust directory
    /// again.
    pub fn reload_service(&self, which: Daemon) -> anyhow::Result<()> {
        let service = match which {
            Daemon::OnlineCa => &self.ca,
            Daemon::Lbone => &self.lbone,
            Daemon::MetadataManager => &self.mdm,
        };
        let pid = service
            .proc
            .as_ref()
            .map(|p| p.child.id())
            .context("not running")?;
        let pid = i32::try_from(pid).context("a pid")?;
        // SAFETY: kill(2) with a signal number on the pid of our own
        // child process, not reaped while `proc` holds it.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            bail!("kill -HUP {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A new server certificate and key for the L-Bone or the metadata
    /// manager (its first replica) from the grid's CA, written over its
    /// files; returns the certificate (DER).
    pub fn renew_service_certificate(&self, which: Daemon) -> anyhow::Result<Vec<u8>> {
        let (cn, service) = match which {
            Daemon::OnlineCa => bail!("the online CA's certificate is its own"),
            Daemon::Lbone => ("lbone", &self.lbone),
            Daemon::MetadataManager => ("metadata-manager", &self.mdm),
        };
        let issuer = Issuer::load(&self.dir.join("ca"))?;
        let (cert, _key) = issuer.server_cert(cn, &service.dir, &service.cert_names())?;
        let pem = fs::read(&cert)?;
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .context("parse the new certificate")
    }

    /// Puts `name` (and the addresses `ips`) on the grid's online CA
    /// allow-list for `role` (`online-ca admin hosts allow`), then does
    /// what the host's operator does with the token it prints: `online-ca
    /// host-cert request` against the running CA and the grid's trust
    /// directory, writing `key` and `cert` (docs/online-ca.md, "Host
    /// certificates"). Returns the certificate (DER).
    pub fn request_host_certificate(
        &self,
        name: &str,
        role: &str,
        ips: &[&str],
        key: &Path,
        cert: &Path,
    ) -> anyhow::Result<Vec<u8>> {
        let mut allow = clean_command(&self.bins.online_ca);
        allow
            .arg("admin")
            .arg("--config")
            .arg(&self.ca_config)
            .args(["hosts", "allow", name, "--role", role, "--json"]);
        for ip in ips {
            allow.args(["--ip", ip]);
        }
        let out = super::process::run_cli("online-ca admin hosts allow", allow, None)?;
        let v: serde_json::Value =
            serde_json::from_str(&out).context("hosts allow --json output")?;
        let token = v["token"].as_str().context("no token in hosts allow")?;
        let mut args = vec!["request", "--token", token, "--name", name];
        for ip in ips {
            args.extend(["--ip", ip]);
        }
        let (k, c) = (key.to_string_lossy(), cert.to_string_lossy());
        args.extend(["--key", &k, "--cert", &c]);
        self.host_cert(&args)?;
        let pem = fs::read(cert)?;
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .context("parse the new certificate")
    }

    /// `online-ca host-cert SUBCOMMAND --ca <the grid's CA> --trust <the
    /// grid's trust directory> ARGS...` (`request` or `renew`), as a host
    /// runs it; its stdout, or an error with its exit code and stderr.
    pub fn host_cert(&self, args: &[&str]) -> anyhow::Result<String> {
        let (sub, rest) = args.split_first().context("a host-cert subcommand")?;
        let mut cmd = clean_command(&self.bins.online_ca);
        cmd.args(["host-cert", sub, "--ca", &self.ca_url])
            .arg("--trust")
            .arg(&self.trust_dir)
            .args(rest);
        super::process::run_cli(&format!("online-ca host-cert {sub}"), cmd, None)
    }

    /// `online-ca admin --config <the CA's> ARGS...`; its output.
    pub fn ca_admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = clean_command(&self.bins.online_ca);
        cmd.arg("admin")
            .arg("--config")
            .arg(&self.ca_config)
            .args(args);
        super::process::run_cli("online-ca admin", cmd, None)
    }

    /// Refreshes the grid's trust directory from the online CA's
    /// `/v1/trust` (`online-ca host-cert trust`, the CA pinned by the
    /// fingerprint of the CA certificate already there), as a host's
    /// daily timer does: the revocation list included. Services read it
    /// at their next SIGHUP; `lors` at its next command.
    pub fn refresh_trust_from_ca(&self) -> anyhow::Result<String> {
        let pem = fs::read(self.trust_dir.join("ca").join("ca.pem"))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .context("parse the trusted CA certificate")?;
        let fp = ring::digest::digest(&ring::digest::SHA256, &der);
        let fp: String = fp.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let mut cmd = clean_command(&self.bins.online_ca);
        cmd.args([
            "host-cert",
            "trust",
            "--ca",
            &self.ca_url,
            "--fingerprint",
            &fp,
        ])
        .arg("--out")
        .arg(&self.trust_dir);
        super::process::run_cli("online-ca host-cert trust", cmd, None)
    }

    /// Kills the L-Bone (SIGKILL) and waits for it.
    pub fn kill_lbone(&mut self) {
        self.lbone.kill();
    }

    /// Starts the L-Bone again on the same port and database.
    pub fn restart_lbone(&mut self) -> anyhow::Result<()> {
        self.lbone.restart()
    }

    /// Kills the metadata manager (SIGKILL) and waits for it.
    pub fn kill_mdm(&mut self) {
        self.mdm.kill();
    }

    /// Starts the metadata manager again on the same port and database.
    pub fn restart_mdm(&mut self) -> anyhow::Result<()> {
        self.mdm.restart()
    }

    /// Kills metadata-manager replica `i` (0: the first, [`Grid::mdm_url`])
    /// with SIGKILL and waits for it.
    pub fn kill_mdm_replica(&mut self, i: usize) {
        match i.checked_sub(1) {
            None => self.mdm.kill(),
            Some(j) => {
                if let Some(r) = self.mdm_replicas.get_mut(j) {
                    r.kill();
                }
            }
        }
    }

    /// Starts metadata-manager replica `i` again on the same port.
    pub fn restart_mdm_replica(&mut self, i: usize) -> anyhow::Result<()> {
        match i.checked_sub(1) {
            None => self.mdm.restart(),
            Some(j) => self
                .mdm_replicas
                .get_mut(j)
                .context("no such metadata-manager replica")?
                .restart(),
        }
    }

    /// Restarts one HTTPS daemon with extra environment variables (for
    /// example libfaketime's `LD_PRELOAD` and `FAKETIME` to skew its
    /// clock); an empty `env` restores the plain environment.
    pub fn restart_with_env(
        &mut self,
        which: Daemon,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let service = match which {
            Daemon::OnlineCa => &mut self.ca,
            Daemon::Lbone => &mut self.lbone,
            Daemon::MetadataManager => &mut self.mdm,
        };
        service.env = env;
        service.restart()
    }

    /// The `http://ADDR/metrics` URL of an HTTPS daemon (its `metrics_listen`
    /// is `127.0.0.1:0`: the address is its last `metrics on` line).
    pub fn metrics_url(&self, which: Daemon) -> anyhow::Result<String> {
        let service = match which {
            Daemon::OnlineCa => &self.ca,
            Daemon::Lbone => &self.lbone,
            Daemon::MetadataManager => &self.mdm,
        };
        let out = fs::read_to_string(service.dir.join("stdout.log"))?;
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix("metrics on "))
            .map(|a| format!("http://{}/metrics", a.trim()))
            .with_context(|| format!("{} printed no `metrics on` line", service.what))
    }

    /// Kills the online CA (SIGKILL) and waits for it.
    pub fn kill_ca(&mut self) {
        self.ca.kill();
    }

    /// Starts the online CA again on the same port.
    pub fn restart_ca(&mut self) -> anyhow::Result<()> {
        self.ca.restart()
    }
}
