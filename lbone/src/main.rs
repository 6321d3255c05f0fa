//! `lbone`: the L-Bone server (`serve`), its setup (`init`) and the VO
//! admins' registration client (`admin`). See docs/lbone.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ibp_auth::{ProxyCredential, TrustStore};
use ibp_service::units::{format_secs, format_size, format_utc, parse_seconds, parse_size};
use lbone::admin::AdminClient;
use lbone::config::Config;
use lbone::geo::Location;
use serde_json::{json, Map, Value};

#[derive(Parser)]
#[command(
    name = "lbone",
    version,
    about = "L-Bone: the directory of IBP depots per VO, with liveness and signed depot grants"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    log: ibp_service::logging::LogArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the L-Bone. The first line on stdout is `listening on ADDR:PORT`.
    Serve {
        /// TOML configuration file (see docs/lbone.md)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make the grant-signing key (lbone.key, mode 0600), its public half
    /// (lbone.pub) and a sample configuration (lbone.toml) in DIR
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing signing key
        #[arg(long)]
        force: bool,
    },
    /// Manage a VO's depot registrations (needs the VO's admin group)
    Admin(Box<AdminArgs>),
}

#[derive(Args)]
struct AdminArgs {
    /// The L-Bone, e.g. https://lbone.example.org:6767 (default:
    /// $LBONE_URL, else $LORS_LBONE_URL, the variable `lors` reads)
    #[arg(long, value_name = "URL", env = "LBONE_URL")]
    lbone: Option<String>,
    /// Proxy credential (default: $X509_USER_PROXY, else /tmp/x509up_u<uid>)
    #[arg(long, value_name = "FILE")]
    proxy: Option<PathBuf>,
    /// Trust directory whose ca/*.pem authenticate the L-Bone's server
    #[arg(long, value_name = "DIR", env = "LORS_TRUST_DIR")]
    trust: PathBuf,
    /// Print the server's JSON answer
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Register a depot for a VO, with the VO's policy for it
    Register(RegisterArgs),
    /// List a VO's depots with their status
    List {
        #[arg(long)]
        vo: String,
    },
    /// Show one registration
    Show {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        name: String,
    },
    /// Change a registration (only the options given)
    Update(UpdateArgs),
    /// Remove a registration
    Remove {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        name: String,
    },
    /// Members removed from a VO: the L-Bone refuses them depot grants
    #[command(subcommand)]
    Member(MemberCmd),
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Refuse a member depot grants from now on (their proxy may still be
    /// valid for hours; grants last minutes)
    Remove {
        #[arg(long)]
        vo: String,
        /// The member's VO ID (`lors whoami`, `online-ca admin member list`)
        vo_id: String,
    },
    /// Grant a removed member depots again
    Restore {
        #[arg(long)]
        vo: String,
        vo_id: String,
    },
    /// List the removed members of a VO
    List {
        #[arg(long)]
        vo: String,
    },
}

#[derive(Args)]
struct RegisterArgs {
    #[arg(long)]
    vo: String,
    /// Name of the depot within the VO
    #[arg(long)]
    name: String,
    /// Host name or address of the depot
    #[arg(long)]
    host: String,
    /// Legacy IBP port (polled for STATUS)
    #[arg(long)]
    port: u16,
    /// Secure (TLS) port; grants then name host:TLS_PORT
    #[arg(long, value_name = "PORT")]
    tls_port: Option<u16>,
    /// Coordinates in decimal degrees
    #[arg(long, value_name = "LAT,LON", value_parser = Location::parse, allow_hyphen_values = true)]
    location: Location,
    /// Place name users may give instead of coordinates, e.g. "Brno, CZ"
    #[arg(long)]
    place: Option<String>,
    /// Largest allocation the VO's members may ask for, e.g. 10GiB
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Longest allocation the VO's members may ask for, e.g. 7d
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    max_duration: Option<u64>,
}

#[derive(Args)]
struct UpdateArgs {
    #[arg(long)]
    vo: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long, value_name = "PORT", conflicts_with = "no_tls_port")]
    tls_port: Option<u16>,
    /// Forget the TLS port
    #[arg(long)]
    no_tls_port: bool,
    #[arg(long, value_name = "LAT,LON", value_parser = Location::parse, allow_hyphen_values = true)]
    location: Option<Location>,
    #[arg(long, conflicts_with = "no_place")]
    place: Option<String>,
    /// Forget the place name
    #[arg(long)]
    no_place: bool,
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "no_max_size")]
    max_size: Option<u64>,
    /// Lift the VO's size limit
    #[arg(long)]
    no_max_size: bool,
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds, conflicts_with = "no_max_duration")]
    max_duration: Option<u64>,
    /// Lift the VO's duration limit
    #[arg(long)]
    no_max_duration: bool,
}

fn runtime(multi: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().context("start the async runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve { config } => {
            ibp_service::logging::init_daemon_with("info", cli.log);
            Config::load(&config).and_then(|cfg| runtime(true)?.block_on(serve(cfg, config)))
        }
        Cmd::Init { dir, force } => init(&dir, force),
        Cmd::Admin(args) => {
            ibp_service::logging::init_cli(0);
            admin(*args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbone: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Config::load`, then the server's `run` on its listener until
/// SIGTERM/SIGINT.
async fn serve(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    let listener = lbone::server::bind(&cfg).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    ibp_service::signals::spawn_cancel_on_signals(shutdown.clone())
        .context("install the SIGTERM/SIGINT handlers")?;
    let reload = Box::new(move || Config::load(&path));
    lbone::server::run(listener, cfg, shutdown, Some(reload)).await
}

fn init(dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let out = lbone::init::init(dir, force)?;
    println!(
        "signing key : {}",
        dir.join(lbone::init::KEY_FILE).display()
    );
    println!(
        "public key  : {} ({})",
        dir.join(lbone::init::PUBLIC_FILE).display(),
        out.public_key.trim()
    );
    if out.wrote_config {
        println!(
            "config      : {}",
            dir.join(lbone::init::CONFIG_FILE).display()
        );
    }
    println!(
        "next: put server.pem/server.key and trust/ next to the config, and copy {} into \
         the lbone/ folder of every depot's and client's trust directory",
        lbone::init::PUBLIC_FILE
    );
    Ok(())
}

/// The L-Bone's URL: `--lbone` or `$LBONE_URL`, else `$LORS_LBONE_URL`
/// (so one exported variable serves `lors` and `lbone admin`).
fn lbone_url(flag_or_env: Option<String>, lors_env: Option<String>) -> anyhow::Result<String> {
    flag_or_env
        .filter(|u| !u.is_empty())
        .or(lors_env.filter(|u| !u.is_empty()))
        .ok_or_else(|| {
            anyhow::anyhow!("which L-Bone? give --lbone URL, or set LBONE_URL or LORS_LBONE_URL")
        })
}

fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let proxy = args
        .proxy
        .clone()
        .unwrap_or_else(ibp_auth::credential::default_proxy_path);
    let credential = ProxyCredential::load(&proxy)?;
    let trust = TrustStore::load(&args.trust)
        .with_context(|| format!("load trust directory {}", args.trust.display()))?;
    let url = lbone_url(args.lbone.clone(), std::env::var("LORS_LBONE_URL").ok())?;
    let client = AdminClient::new(&url, &trust, &credential)?;
    let rt = runtime(false)?;
    let json_out = args.json;
    let (answer, what) = match args.command {
        AdminCmd::Register(r) => {
            let mut body = json!({
                "name": r.name,
                "host": r.host,
                "port": r.port,
                "location": r.location,
            });
            let extra = [
                ("tls_port", r.tls_port.map(Value::from)),
                ("place", r.place.map(Value::from)),
                ("max_size", r.max_size.map(Value::from)),
                ("max_duration", r.max_duration.map(Value::from)),
            ];
            if let Value::Object(m) = &mut body {
                for (k, v) in extra {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
            }
            (rt.block_on(client.register(&r.vo, &body))?, "registered")
        }
        AdminCmd::List { vo } => (rt.block_on(client.list(&vo))?, "list"),
        AdminCmd::Show { vo, name } => (rt.block_on(client.show(&vo, &name))?, "show"),
        AdminCmd::Update(u) => {
            let body = changes(&u);
            (
                rt.block_on(client.update(&u.vo, &u.name, &body))?,
                "updated",
            )
        }
        AdminCmd::Remove { vo, name } => (rt.block_on(client.remove(&vo, &name))?, "removed"),
        AdminCmd::Member(MemberCmd::Remove { vo, vo_id }) => (
            rt.block_on(client.member_remove(&vo, &vo_id))?,
            "member removed",
        ),
        AdminCmd::Member(MemberCmd::Restore { vo, vo_id }) => (
            rt.block_on(client.member_restore(&vo, &vo_id))?,
            "member restored",
        ),
        AdminCmd::Member(MemberCmd::List { vo }) => {
            (rt.block_on(client.removed(&vo))?, "members removed")
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match what {
        "list" => {
            let depots = answer["depots"].as_array().cloned().unwrap_or_default();
            if depots.is_empty() {
                println!(
                    "VO {} has no registered depots",
                    answer["vo"].as_str().unwrap_or("?")
                );
            }
            for d in &depots {
                print_depot(d);
            }
        }
        "removed" => println!(
            "removed depot {} from VO {}",
            answer["removed"].as_str().unwrap_or("?"),
            answer["vo"].as_str().unwrap_or("?")
        ),
        "show" => print_depot(&answer),
        "member removed" | "member restored" => println!(
            "{what}: {} in VO {}{}",
            answer["vo_id"].as_str().unwrap_or("?"),
            answer["vo"].as_str().unwrap_or("?"),
            if answer["already"].as_bool() == Some(true) {
                " (already removed)"
            } else {
                ""
            }
        ),
        "members removed" => {
            let members = answer["removed"].as_array().cloned().unwrap_or_default();
            if members.is_empty() {
                println!(
                    "VO {} has removed no members",
                    answer["vo"].as_str().unwrap_or("?")
                );
            }
            for m in &members {
                println!(
                    "{}  removed by {} at {}",
                    m["vo_id"].as_str().unwrap_or("?"),
                    m["removed_by"].as_str().unwrap_or("?"),
                    m["removed_at"]
                );
            }
        }
        verb => {
            println!(
                "{verb} depot {} ({}) for VO {}",
                answer["name"].as_str().unwrap_or("?"),
                answer["address"].as_str().unwrap_or("?"),
                answer["vo"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn changes(u: &UpdateArgs) -> Value {
    let mut m = Map::new();
    if let Some(h) = &u.host {
        m.insert("host".into(), h.clone().into());
    }
    if let Some(p) = u.port {
        m.insert("port".into(), p.into());
    }
    if let Some(l) = u.location {
        m.insert("location".into(), json!(l));
    }
    let nullable = [
        ("tls_port", u.tls_port.map(Value::from), u.no_tls_port),
        ("place", u.place.clone().map(Value::from), u.no_place),
        ("max_size", u.max_size.map(Value::from), u.no_max_size),
        (
            "max_duration",
            u.max_duration.map(Value::from),
            u.no_max_duration,
        ),
    ];
    for (k, v, clear) in nullable {
        if clear {
            m.insert(k.into(), Value::Null);
        } else if let Some(v) = v {
            m.insert(k.into(), v);
        }
    }
    Value::Object(m)
}

fn print_depot(d: &Value) {
    let s = &d["status"];
    let free = s["hard"]["free"]
        .as_u64()
        .map_or_else(|| "-".into(), format_size);
    let seen = s["last_seen_ms"]
        .as_i64()
        .map_or_else(|| "never".into(), |ms| format_utc(ms / 1000));
    let policy_size = d["policy"]["max_size"]
        .as_u64()
        .map_or_else(|| "any".into(), format_size);
    let policy_duration = d["policy"]["max_duration"]
        .as_i64()
        .map_or_else(|| "any".into(), format_secs);
    println!(
        "{:<16} {:<24} {:<7} hard free {:<10} policy {}/{}  last seen {}{}",
        d["name"].as_str().unwrap_or("?"),
        d["address"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?"),
        free,
        policy_size,
        policy_duration,
        seen,
        d["place"]
            .as_str()
            .map(|p| format!("  ({p})"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::lbone_url;

    #[test]
    fn the_lbone_url_comes_from_the_flag_then_lbone_url_then_lors_lbone_url() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            lbone_url(s("https://a"), s("https://b")).unwrap(),
            "https://a"
        );
        assert_eq!(lbone_url(None, s("https://b")).unwrap(), "https://b");
        assert_eq!(lbone_url(s(""), s("https://b")).unwrap(), "https://b");
        let e = lbone_url(None, None).unwrap_err().to_string();
        assert!(e.contains("LORS_LBONE_URL"), "{e}");
        assert!(lbone_url(None, s("")).is_err());
    }
}
