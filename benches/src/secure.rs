//! Secure-port helpers shared by the benchmarks (`secure_ops`, `ibp-bench
//! paper`): a depot process with its legacy, TLS and crypto-level data
//! ports and a certificate of its own (serverAuth and clientAuth, so it can
//! authenticate at another depot for a secure COPY), depot grants and file
//! tickets signed with the bench PKI's L-Bone and metadata-manager keys, and
//! the raw TLS 1.3 loopback baseline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use ibp_auth::tokens::{DepotGrant, FileTicket};
use ibp_auth::unix_now;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pki::{pem, Pki};
use crate::{gbps, payload, Samples};

/// The VO and VO ID of the bench PKI's user.
pub const VO: &str = "vo1";
pub const VO_ID: &str = "vo1:0001";

/// A depot serving its three ports on 127.0.0.1, killed on drop.
pub struct SecureDepot {
    child: Child,
    pub legacy: String,
    pub tls: String,
    pub data: String,
    /// SHA-256 of its certificate's public key (what a grant delegated to
    /// it is bound to).
    pub key_hash: [u8; 32],
    pub dir: PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for SecureDepot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SecureDepot {
    /// The depot process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `bin` in `dir` (created), trusting `trust` (the bench PKI's
    /// trust directory), with a certificate `name` issued by `pki`'s CA.
    pub fn start(
        bin: &Path,
        dir: &Path,
        trust: &Path,
        pki: &Pki,
        name: &str,
    ) -> anyhow::Result<SecureDepot> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) =
            ibp_testkit::pki::service_cert(&pki.ca, name, &["127.0.0.1", "localhost"]);
        let (cert_path, key_path) = (dir.join("depot.pem"), dir.join("depot.key"));
        std::fs::write(&cert_path, pem("CERTIFICATE", &cert))?;
        ibp_auth::keys::write_secret(&key_path, pem("PRIVATE KEY", &key).as_bytes())?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| anyhow::anyhow!("parse the depot certificate: {e}"))?;
        let key_hash = ibp_auth::key_hash(parsed.public_key().raw);
        let cfg = dir.join("depot.toml");
        std::fs::write(
            &cfg,
            format!(
                // The legacy-port baseline stores 100 MB from one address.
                "legacy_max_size = \"50%\"\nlegacy_per_address_bytes = \"50%\"\ntls_listen = \"127.0.0.1:0\"\ndata_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrust_dir = \"{}\"\n\n[[vo]]\nname = \"{VO}\"\nmax_size = \"1GiB\"\nmax_duration = \"1h\"\n",
                cert_path.display(),
                key_path.display(),
                trust.display()
            ),
        )?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--hostname",
                "127.0.0.1",
                "--hard-size",
                "4GiB",
                "--max-duration",
                "1h",
                "--sync",
                "batch",
                "--config",
            ])
            .arg(&cfg)
            .arg("--data")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("depot.log"))?)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = |prefix: &str| -> anyhow::Result<String> {
            let mut l = String::new();
            stdout.read_line(&mut l)?;
            match l.trim().strip_prefix(prefix) {
                Some(a) => Ok(a.to_owned()),
                None => bail!(
                    "depot said {l:?}, expected {prefix:?}; log:\n{}",
                    std::fs::read_to_string(dir.join("depot.log")).unwrap_or_default()
                ),
            }
        };
        let legacy = line("listening on ")?;
        let tls = line("tls listening on ")?;
        let data = line("data listening on ")?;
        Ok(SecureDepot {
            child,
            legacy,
            tls,
            data,
            key_hash,
            dir: dir.to_path_buf(),
            _stdout: stdout,
        })
    }
}

/// A depot grant for the TLS port `depot`, held by `holder` (the user's
/// key hash, or a source depot's for a secure COPY), for 30 minutes.
pub fn grant(pki: &Pki, depot: &str, holder: [u8; 32]) -> String {
    let now = unix_now();
    DepotGrant {
        depot: depot.to_owned(),
        vo: VO.into(),
        vo_id: VO_ID.into(),
        holder,
        issued: now,
        not_after: now + 1800,
    }
    .sign(&pki.lbone)
}

/// A file ticket for `file` held by the bench user, for 30 minutes.
pub fn ticket(pki: &Pki, file: &str) -> anyhow::Result<String> {
    let now = unix_now();
    Ok(FileTicket {
        file: file.into(),
        vo: VO.into(),
        vo_id: VO_ID.into(),
        holder: pki.user.key_hash()?,
        issued: now,
        not_after: now + 1800,
    }
    .sign(&pki.mdm))
}

/// Raw TLS 1.3 throughput on loopback: one tokio-rustls connection, the
/// depot's cipher-suite preference (AES-128-GCM), `bytes` in `chunk`
/// writes. Returns GB/s (median of `reps`) and the suite negotiated.
pub async fn raw_tls(
    pki: &Pki,
    bytes: usize,
    chunk: usize,
    reps: usize,
) -> anyhow::Result<(f64, String)> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(pki.server_cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )?;
    server.ignore_client_order = true;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ibp_auth::tls::client_config(
        &pki.client_trust,
        None,
    )?));
    let data = Arc::new(payload(chunk));
    let mut s = Samples::default();
    let mut suite = String::new();
    for _ in 0..reps.max(1) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let acceptor = acceptor.clone();
        let recv = tokio::spawn(async move {
            let (tcp, _) = l.accept().await?;
            tcp.set_nodelay(true)?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = vec![0u8; chunk];
            let mut got = 0usize;
            while got < bytes {
                let n = tls.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            tls.write_all(b"k").await?;
            tls.flush().await?;
            anyhow::Ok(got)
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        let mut tls = connector.connect(name, tcp).await?;
        suite = format!(
            "{:?}",
            tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
        );
        let t = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            let n = (bytes - sent).min(chunk);
            tls.write_all(&data[..n]).await?;
            sent += n;
        }
        tls.flush().await?;
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack).await?;
        let elapsed = t.elapsed();
        let got = recv.await??;
        if got != bytes {
            bail!("raw TLS receiver got {got} of {bytes} bytes");
        }
        s.push(elapsed);
    }
    Ok((gbps(bytes, s.median()), suite))
}

/// An authenticated session on `depot`'s TLS port (the client's TLS
/// configuration built once and reused).
pub async fn session(
    cfg: &Arc<rustls::ClientConfig>,
    depot: &SecureDepot,
    grant: &str,
) -> anyhow::Result<ibp_depot_client::SecureClient> {
    let mut c = ibp_depot_client::SecureClient::connect_with(&depot.tls, "127.0.0.1", cfg).await?;
    c.set_timeout(std::time::Duration::from_secs(120));
    c.auth(grant).await?;
    Ok(c)
}
