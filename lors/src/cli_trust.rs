//! `lors trust fetch`: a trust directory written from the online CA's
//! `GET /v1/trust`, the CA pinned by its fingerprint (see
//! `lors::trust_fetch`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use lors::credentials::Error;
use lors::exit;
use lors::trust_fetch::{self, Fetched, Pin};

#[derive(Subcommand)]
pub(crate) enum TrustCommand {
    /// Write a trust directory (ca/ca.pem, vomsdir/<vo>/aa.pem) from the
    /// online CA's GET /v1/trust, the CA certificate pinned by its SHA-256
    /// fingerprint (ask your site for it). Without --fingerprint nothing is
    /// written: the fingerprint the server offers is printed for you to
    /// check.
    Fetch(FetchArgs),
}

#[derive(Args)]
pub(crate) struct FetchArgs {
    /// The trust directory to write (default: $LORS_TRUST_DIR, else
    /// `trust_dir` in the config file)
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The online CA, e.g. https://ca.example.org:8443 (default:
    /// $LORS_CA_URL, else `ca` in the config file)
    #[arg(long, value_name = "URL")]
    ca: Option<String>,
    /// SHA-256 fingerprint of the CA certificate, as `openssl x509 -noout
    /// -fingerprint -sha256 -in ca.pem` prints it (colons optional)
    #[arg(long, value_name = "SHA256", conflicts_with = "ca_cert")]
    fingerprint: Option<String>,
    /// A PEM file with the CA certificate, if you already have it (instead
    /// of --fingerprint)
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Replace a different CA certificate already in DIR
    #[arg(long)]
    force: bool,
    /// Print what was written as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn trust(c: TrustCommand) -> Result<u8, Error> {
    match c {
        TrustCommand::Fetch(a) => fetch(a),
    }
}

fn fetch(a: FetchArgs) -> Result<u8, Error> {
    let dir = a.dir.clone().or_else(crate::env_trust_dir).ok_or_else(|| {
        Error::Usage(format!(
            "which trust directory? give DIR, set {} or `trust_dir` in the config file",
            crate::TRUST_ENV
        ))
    })?;
    let url = match &a.ca {
        Some(u) => u.clone(),
        None => lors::config::Config::load()?.ca.ok_or_else(|| {
            Error::Usage("which online CA? give --ca URL or set LORS_CA_URL".into())
        })?,
    };
    let pin = match (&a.fingerprint, &a.ca_cert) {
        (Some(f), _) => Pin::Fingerprint(f.clone()),
        (None, Some(file)) => {
            let text = std::fs::read(file)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
            let ders = ibp_auth::trust::pem_certificates(&text).map_err(|e| {
                Error::Usage(format!(
                    "{} holds no usable certificate: {e}",
                    file.display()
                ))
            })?;
            Pin::CaCertificates(ders)
        }
        (None, None) => Pin::Nothing,
    };
    let fetched = crate::runtime()?.block_on(trust_fetch::fetch(&url, &pin))?;
    let t = match fetched {
        Fetched::Trusted(t) => t,
        Fetched::Unpinned(offered) => {
            eprintln!("lors: the online CA at {url} offers this CA certificate:");
            for (fp, subject) in &offered {
                eprintln!("  subject     : {subject}");
                eprintln!("  fingerprint : SHA256:{fp}");
            }
            return Err(Error::Usage(
                "nothing written: check the fingerprint with your site (its CA operator runs \
                 `openssl x509 -noout -fingerprint -sha256 -in trust/ca/ca.pem`), then run \
                 again with --fingerprint SHA256:..."
                    .into(),
            ));
        }
    };
    let written = trust_fetch::write(&dir, &t, a.force)?;
    if a.json {
        let files: Vec<String> = written
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let v = serde_json::json!({
            "dir": dir.display().to_string(),
            "ca_fingerprint": format!("SHA256:{}", t.fingerprint),
            "vos": t.aa.keys().collect::<Vec<_>>(),
            "files": files,
            "removed": written
                .removed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!("trust directory {}", dir.display());
        println!("  CA   SHA256:{}", t.fingerprint);
        for p in &written.files {
            println!("  wrote {}", p.display());
        }
        for p in &written.removed {
            println!("  removed {} (no longer published by the CA)", p.display());
        }
    }
    Ok(exit::OK)
}
