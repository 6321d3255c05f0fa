//! Real VOMS proxies for tests: certificates made with `openssl`, proxies
//! with attribute certificates made with `voms-proxy-fake` (Debian's
//! `voms-clients`), `.lsc` files written from `openssl x509 -subject
//! -issuer -nameopt compat` as a grid host's administrator writes them.
//! Shared by libs/auth/tests/voms_clients.rs and the root tests/voms.rs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("RANDFILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| {
            panic!("run {cmd:?}: {e} (scripts/test installs openssl, faketime and voms-clients)")
        });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `program` under libfaketime an hour in the past (the library itself:
/// the `faketime` wrapper's semaphore collides between parallel tests).
fn an_hour_ago(program: &str) -> Command {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libfaketime is missing: apt-get install faketime (scripts/test installs it)");
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", lib).env("FAKETIME", "-1h");
    c
}

fn chmod600(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A self-signed CA (RSA 2048) with `subject` (`/O=../CN=..`).
pub fn new_ca(dir: &Path, name: &str, subject: &str) -> CertFiles {
    let f = CertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    run(an_hour_ago("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "10", "-subj", subject,
        ])
        .arg("-keyout")
        .arg(&f.key)
        .arg("-out")
        .arg(&f.cert)
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]));
    chmod600(&f.key);
    f
}

/// A certificate (RSA 2048: `voms-proxy-fake` signs with SHA-1, and there
/// is no ECDSA with SHA-1 here) for `subject`, issued by `ca` (whose key
/// may be of any type), for `eku` (`clientAuth`, `serverAuth,clientAuth`).
pub fn issue(dir: &Path, name: &str, subject: &str, ca: &CertFiles, eku: &str) -> CertFiles {
    let f = CertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={eku}\n"),
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", subject])
        .arg("-keyout")
        .arg(&f.key)
        .arg("-out")
        .arg(&csr));
    chmod600(&f.key);
    // Backdated an hour (faketime): voms-proxy-fake backdates its proxy
    // five minutes, and a proxy may not start before its issuer.
    run(an_hour_ago("openssl")
        .args(["x509", "-req", "-days", "5", "-set_serial"])
        .arg(format!("0x{:016x}", rand_u64()))
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca.cert)
        .arg("-CAkey")
        .arg(&ca.key)
        .arg("-out")
        .arg(&f.cert)
        .arg("-extfile")
        .arg(&ext));
    f
}

/// A serial number unique in this process (and unlikely to repeat across
/// runs): the clock's nanoseconds and a counter.
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ N.fetch_add(1, Ordering::Relaxed).rotate_right(8)) >> 1
}

/// The `.lsc` lines of a certificate: its subject and issuer, slash form.
pub fn lsc_text(cert: &Path) -> String {
    let out = run(Command::new("openssl")
        .args([
            "x509", "-noout", "-subject", "-issuer", "-nameopt", "compat", "-in",
        ])
        .arg(cert));
    out.lines()
        .map(|l| {
            l.trim_start_matches("subject=")
                .trim_start_matches("issuer=")
                .trim()
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Writes `<vomsdir>/<vo>/<host>.lsc` for `cert`.
pub fn write_lsc(vomsdir: &Path, vo: &str, host: &str, cert: &Path) {
    let d = vomsdir.join(vo);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("{host}.lsc")), lsc_text(cert)).unwrap();
}

/// A `-certdir` for `voms-proxy-fake`: the CA under its OpenSSL hash.
pub fn certdir(dir: &Path, cas: &[&Path]) -> PathBuf {
    let d = dir.join("certificates");
    std::fs::create_dir_all(&d).unwrap();
    for ca in cas {
        let hash = run(Command::new("openssl")
            .args(["x509", "-noout", "-hash", "-in"])
            .arg(ca));
        std::fs::copy(ca, d.join(format!("{}.0", hash.trim()))).unwrap();
    }
    d
}

/// `voms-proxy-fake`: an RFC 3820 proxy of `user` carrying an AC for `vo`
/// from `voms` (`<host>:15000`) with `fqans`, plus `extra` arguments.
#[allow(clippy::too_many_arguments)]
pub fn fake_proxy(
    certdir: &Path,
    user: &CertFiles,
    voms: &CertFiles,
    vo: &str,
    host: &str,
    fqans: &[&str],
    extra: &[&str],
    out: &Path,
) -> PathBuf {
    let mut cmd = Command::new("voms-proxy-fake");
    cmd.arg("-cert")
        .arg(&user.cert)
        .arg("-key")
        .arg(&user.key)
        .arg("-certdir")
        .arg(certdir)
        .arg("-hostcert")
        .arg(&voms.cert)
        .arg("-hostkey")
        .arg(&voms.key)
        .args([
            "-voms",
            vo,
            "-uri",
            &format!("{host}:15000"),
            "-rfc",
            "-hours",
            "2",
            "-vomslife",
            "2",
            "-q",
        ])
        .arg("-out")
        .arg(out);
    for f in fqans {
        cmd.args(["-fqan", f]);
    }
    cmd.args(extra);
    run(&mut cmd);
    out.to_path_buf()
}
