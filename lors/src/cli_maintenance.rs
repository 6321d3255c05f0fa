//! `lors maintenance enroll|status|revoke`: the maintenance credential
//! that keeps files alive unattended (docs/maintenance.md). Argument
//! parsing and output; the work is [`lors::maintenance`].

use std::path::PathBuf;

use clap::{Args, Subcommand};
use lors::credentials::{self, CaClient, Error};
use lors::exit;
use lors::maintenance::{self, GrantFile, GrantStatus};
use lors::validity::format_local;

use crate::{runtime, vo_or_config, CaArgs};

#[derive(Subcommand)]
pub enum MaintenanceCommand {
    /// Get a maintenance credential (needs a valid `lors login` proxy):
    /// unattended `refresh`, `check` and `repair` of your own files use it
    /// when your proxy has expired. Stored owner-only.
    Enroll(EnrollArgs),
    /// Show the maintenance credential and whether the CA still honours it
    /// (exit 0 if it does, 1 if not)
    Status(StatusArgs),
    /// Revoke the maintenance credential at the CA (with its own token) and
    /// delete it; with --grant or --all, revoke with your login proxy
    /// instead (e.g. a credential left on another host)
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// VO of the files to maintain (default: $LORS_VO, else `vo` in the
    /// config file)
    #[arg(long)]
    vo: Option<String>,
    /// How long the credential lasts, e.g. 30d [default: the CA's, 90d]
    #[arg(long, value_name = "DURATION", value_parser = lors::depots::parse_duration)]
    valid: Option<u64>,
    /// Replace an existing maintenance credential (revoke it first with
    /// `lors maintenance revoke` unless it is already dead)
    #[arg(long)]
    force: bool,
    /// The credential file (default: $LORS_MAINTENANCE_FILE, else
    /// ~/.config/lors/maintenance.json)
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print {grant, vo, vo_id, expires_at, file} as JSON (never the token)
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// Every grant of yours, asked with your login proxy (also those
    /// enrolled on other hosts)
    #[arg(long)]
    all: bool,
    /// The credential file (default: $LORS_MAINTENANCE_FILE, else
    /// ~/.config/lors/maintenance.json)
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print a JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// Revoke this grant (by id) with your login proxy
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    grant: Option<String>,
    /// Revoke every grant of yours with your login proxy
    #[arg(long)]
    all: bool,
    /// The credential file (default: $LORS_MAINTENANCE_FILE, else
    /// ~/.config/lors/maintenance.json)
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print {revoked, removed} as JSON
    #[arg(long)]
    json: bool,
}

pub fn maintenance(c: MaintenanceCommand) -> Result<u8, Error> {
    match c {
        MaintenanceCommand::Enroll(a) => enroll(a),
        MaintenanceCommand::Status(a) => status(a),
        MaintenanceCommand::Revoke(a) => revoke(a),
    }
}

fn path_of(file: &Option<PathBuf>) -> PathBuf {
    file.clone().unwrap_or_else(maintenance::default_path)
}

/// A client of the CA presenting the user's (unexpired) login proxy.
fn ca_with_proxy(ca: &CaArgs) -> Result<(CaClient, String), Error> {
    let trust = ca.trust_source()?.load()?;
    let proxy = credentials::load_unexpired_proxy(&crate::proxy_path()?)?;
    let url = ca.url()?;
    Ok((CaClient::new(&url, &trust, Some(&proxy))?, url))
}

fn enroll(a: EnrollArgs) -> Result<u8, Error> {
    let path = path_of(&a.file);
    if !a.force {
        if let Some(old) = GrantFile::load(&path)? {
            return Err(Error::Usage(format!(
                "a maintenance credential is already at {} (grant {}); `lors maintenance revoke` it, or give --force",
                path.display(),
                old.grant
            )));
        }
    }
    let vo = vo_or_config(a.vo.clone())?;
    let (ca, url) = ca_with_proxy(&a.ca)?;
    let g = runtime()?.block_on(maintenance::enroll(&ca, &url, &vo, a.valid))?;
    g.save(&path)?;
    if a.json {
        print_json(&serde_json::json!({
            "grant": g.grant,
            "vo": g.vo,
            "vo_id": g.vo_id,
            "expires_at": g.expires_at,
            "file": path.to_string_lossy(),
        }))?;
        return Ok(exit::OK);
    }
    println!("grant     : {}", g.grant);
    println!("vo        : {}", g.vo);
    println!("vo id     : {}", g.vo_id);
    println!("valid     : until {}", format_local(g.expires_at));
    println!("file      : {} (owner-only; keep it so)", path.display());
    Ok(exit::OK)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Local(format!("cannot format the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

fn print_status(s: &GrantStatus) {
    println!("grant     : {}", s.grant);
    println!("state     : {}", s.state);
    println!("vo        : {}", s.vo);
    println!("vo id     : {}", s.vo_id);
    println!("identity  : {}", s.identity);
    println!("created   : {}", format_local(s.created_at));
    println!("expires   : {}", format_local(s.expires_at));
    println!(
        "last used : {}",
        s.last_used_at.map_or("never".into(), format_local)
    );
    if let Some(at) = s.revoked_at {
        println!(
            "revoked   : {} by {}",
            format_local(at),
            s.revoked_by.as_deref().unwrap_or("?")
        );
    }
}

fn status(a: StatusArgs) -> Result<u8, Error> {
    let path = path_of(&a.file);
    if a.all {
        let (ca, _) = ca_with_proxy(&a.ca)?;
        let grants = runtime()?.block_on(maintenance::list_with_proxy(&ca))?;
        if a.json {
            print_json(&grants)?;
        } else {
            for (i, g) in grants.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_status(g);
            }
        }
        return Ok(exit::OK);
    }
    let Some(g) = GrantFile::load(&path)? else {
        return Err(Error::NoProxy(path).with_note(
            "no maintenance credential there either: enroll with `lors maintenance enroll`",
        ));
    };
    let trust = a.ca.trust_source()?.load()?;
    let s = runtime()?.block_on(g.status(&trust, &path))?;
    if a.json {
        print_json(&s)?;
    } else {
        print_status(&s);
        println!("file      : {}", path.display());
    }
    Ok(if s.state == "active" {
        exit::OK
    } else {
        exit::NO_PROXY
    })
}

fn revoke(a: RevokeArgs) -> Result<u8, Error> {
    let path = path_of(&a.file);
    if a.grant.is_some() || a.all {
        let (ca, _) = ca_with_proxy(&a.ca)?;
        let n = runtime()?.block_on(maintenance::revoke_with_proxy(&ca, a.grant.as_deref()))?;
        // The local credential is dead if it was among them.
        let mut removed = None;
        if let Some(g) = GrantFile::load(&path)? {
            if a.all || a.grant.as_deref() == Some(g.grant.as_str()) {
                credentials::destroy_proxy(&path)?;
                removed = Some(path.to_string_lossy().into_owned());
            }
        }
        if a.json {
            print_json(&serde_json::json!({"revoked": n, "removed": removed}))?;
        } else {
            println!("revoked {n} maintenance grant(s)");
            if let Some(r) = &removed {
                println!("removed {r}");
            }
        }
        return Ok(exit::OK);
    }
    let Some(g) = GrantFile::load(&path)? else {
        return Err(Error::Usage(format!(
            "no maintenance credential at {}; to revoke one left elsewhere, give --grant ID or --all (with your login proxy)",
            path.display()
        )));
    };
    let trust = a.ca.trust_source()?.load()?;
    let n = runtime()?.block_on(g.revoke(&trust, &path))?;
    credentials::destroy_proxy(&path)?;
    if a.json {
        print_json(&serde_json::json!({
            "revoked": n,
            "grant": g.grant,
            "removed": path.to_string_lossy(),
        }))?;
    } else {
        println!(
            "revoked maintenance grant {} ({n} revoked now); removed {}",
            g.grant,
            path.display()
        );
    }
    Ok(exit::OK)
}
