//! The `vomsdir`: which VOMS servers a service trusts, per VO, as on grid
//! hosts (`/etc/grid-security/vomsdir`).
//!
//! ```text
//! <vomsdir>/<vo>/<host>.lsc
//!     /O=Test Grid/CN=voms.example.org        subject of the VOMS server's certificate
//!     /O=Test Grid/CN=Test CA                 its issuer (then the issuer's issuer, ...)
//!     ------ NEXT CHAIN ------                 (optional: another accepted chain)
//! ```
//!
//! Lines are DNs in OpenSSL's slash form; empty lines and lines starting
//! with `#` are skipped. `Email=`/`E=` are read as `emailAddress=` and
//! `USERID=` as `UID=`, as VOMS does. Other files (`*.pem`) are ignored.

use std::collections::BTreeMap;
use std::path::Path;

use x509_parser::x509::X509Name;

use crate::AuthError;

/// Largest `.lsc` file read.
const MAX_LSC: u64 = 16 * 1024;
/// Most chains in one `.lsc`, and most DNs in one chain.
const MAX_CHAINS: usize = 8;
const MAX_CHAIN_DNS: usize = 8;
/// Most `.lsc` files in a vomsdir.
const MAX_FILES: usize = 1024;

/// The `.lsc` files of a vomsdir, loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VomsDir {
    /// VO → host → accepted DN chains (subject first, then issuers).
    vos: BTreeMap<String, BTreeMap<String, Vec<Vec<String>>>>,
}

/// A VO name or a host name fit to be a file name: `A-Za-z0-9._-`, not
/// starting with `.` or `-`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl VomsDir {
    pub fn new() -> VomsDir {
        VomsDir::default()
    }

    /// Reads `<dir>/<vo>/<host>.lsc` for every VO directory. A malformed
    /// `.lsc` is an error (a service must not start trusting less, or
    /// more, than its operator wrote).
    pub fn load(dir: &Path) -> Result<VomsDir, AuthError> {
        let io = |p: &Path, e: std::io::Error| AuthError::Io(format!("read {}: {e}", p.display()));
        let mut d = VomsDir::new();
        let mut files = 0;
        for vo_dir in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let vo_dir = vo_dir.map_err(|e| io(dir, e))?.path();
            let Some(vo) = vo_dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !vo_dir.is_dir() || !is_name(vo) {
                continue;
            }
            for f in std::fs::read_dir(&vo_dir).map_err(|e| io(&vo_dir, e))? {
                let f = f.map_err(|e| io(&vo_dir, e))?.path();
                let Some(host) = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".lsc"))
                else {
                    continue;
                };
                files += 1;
                if files > MAX_FILES {
                    return Err(AuthError::Io(format!(
                        "{}: more than {MAX_FILES} .lsc files",
                        dir.display()
                    )));
                }
                let len = std::fs::metadata(&f).map_err(|e| io(&f, e))?.len();
                if len > MAX_LSC {
                    return Err(AuthError::Io(format!(
                        "{}: larger than {MAX_LSC} bytes",
                        f.display()
                    )));
                }
                let text = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
                d.insert(vo, host, &text)
                    .map_err(|why| AuthError::Io(format!("{}: {why}", f.display())))?;
            }
        }
        Ok(d)
    }

    /// Adds the `.lsc` text of `<vo>/<host>.lsc`.
    pub fn insert(&mut self, vo: &str, host: &str, lsc: &str) -> Result<(), String> {
        if !is_name(vo) || !is_name(host) {
            return Err(format!("bad VO {vo:?} or host {host:?}"));
        }
        let chains = parse_lsc(lsc)?;
        self.vos
            .entry(vo.to_owned())
            .or_default()
            .insert(host.to_owned(), chains);
        Ok(())
    }

    /// The DN chains accepted for `<vo>/<host>.lsc`, if the file exists.
    pub fn chains(&self, vo: &str, host: &str) -> Option<&[Vec<String>]> {
        self.vos.get(vo)?.get(host).map(Vec::as_slice)
    }

    /// The VOs with at least one `.lsc`.
    pub fn vos(&self) -> impl Iterator<Item = &str> {
        self.vos.keys().map(String::as_str)
    }

    /// Whether any `.lsc` was loaded.
    pub fn is_empty(&self) -> bool {
        self.vos.is_empty()
    }
}

fn parse_lsc(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut chains = vec![Vec::new()];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('-') && line.contains("NEXT CHAIN") {
            if chains.len() >= MAX_CHAINS {
                return Err(format!("more than {MAX_CHAINS} chains"));
            }
            chains.push(Vec::new());
            continue;
        }
        if !line.starts_with('/') || line.chars().any(char::is_control) {
            return Err(format!("{line:?} is not a DN in /C=../O=../CN=.. form"));
        }
        let chain = chains.last_mut().ok_or("no chain")?;
        if chain.len() >= MAX_CHAIN_DNS {
            return Err(format!("a chain of more than {MAX_CHAIN_DNS} DNs"));
        }
        chain.push(normalize_dn(line));
    }
    if chains.iter().any(|c| c.len() < 2) {
        return Err("every chain needs the server's subject and its issuer".into());
    }
    Ok(chains)
}

/// The spellings VOMS treats as one.
fn normalize_dn(dn: &str) -> String {
    dn.replace("/Email=", "/emailAddress=")
        .replace("/E=", "/emailAddress=")
        .replace("/USERID=", "/UID=")
}

/// A Name in OpenSSL's slash form (`/O=Test Grid/CN=voms.example.org`),
/// multi-valued RDNs joined with `+`.
pub fn slash_dn(name: &X509Name<'_>) -> Result<String, AuthError> {
    let mut out = String::new();
    for rdn in name.iter_rdn() {
        out.push('/');
        for (i, atv) in rdn.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let short = match oid.as_str() {
                "2.5.4.6" => "C",
                "2.5.4.8" => "ST",
                "2.5.4.7" => "L",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.3" => "CN",
                "2.5.4.5" => "serialNumber",
                "2.5.4.4" => "SN",
                "2.5.4.42" => "GN",
                "2.5.4.12" => "title",
                "1.2.840.113549.1.9.1" => "emailAddress",
                "0.9.2342.19200300.100.1.25" => "DC",
                "0.9.2342.19200300.100.1.1" => "UID",
                other => other,
            };
            let value = atv
                .as_str()
                .map_err(|e| AuthError::malformed("distinguished name", e))?;
            if value.chars().any(char::is_control) {
                return Err(AuthError::malformed(
                    "distinguished name",
                    "control characters",
                ));
            }
            out.push_str(short);
            out.push('=');
            out.push_str(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsc_chains_comments_and_spellings() {
        let mut d = VomsDir::new();
        d.insert(
            "vo1",
            "voms.example.org",
            "# the VOMS server of vo1\n/O=G/CN=voms.example.org/Email=a@b\n/O=G/CN=CA\n\
             ------ NEXT CHAIN ------\n/O=G/CN=voms2\n/O=G/CN=CA2\n",
        )
        .unwrap();
        let c = d.chains("vo1", "voms.example.org").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            ["/O=G/CN=voms.example.org/emailAddress=a@b", "/O=G/CN=CA"]
        );
        assert_eq!(c[1], ["/O=G/CN=voms2", "/O=G/CN=CA2"]);
        assert!(d.chains("vo1", "other").is_none());
        assert!(d.chains("vo2", "voms.example.org").is_none());
    }

    #[test]
    fn malformed_lsc_and_names_refused() {
        let mut d = VomsDir::new();
        assert!(d.insert("vo1", "h", "/O=G/CN=only-one\n").is_err());
        assert!(d
            .insert("vo1", "h", "O=G, CN=comma form\n/O=G/CN=CA\n")
            .is_err());
        assert!(d.insert("vo1", "h", "").is_err());
        let many = "/O=G/CN=x\n".repeat(MAX_CHAIN_DNS + 1);
        assert!(d.insert("vo1", "h", &many).is_err());
        assert!(d.insert("../etc", "h", "/O=G/CN=a\n/O=G/CN=b\n").is_err());
        assert!(d.insert("vo1", "..", "/O=G/CN=a\n/O=G/CN=b\n").is_err());
        assert!(d.is_empty());
    }
}
