//! `lors`: the LoRS command-line tools. This file is a thin clap layer over
//! the `lors` library (the metadata manager's commands are in
//! `cli_files.rs`); see `docs/lors-credentials.md` and `docs/lors.md`.

#![forbid(unsafe_code)]

mod cli_cleanup;
mod cli_docs;
mod cli_files;
mod cli_keys;
mod cli_maintenance;
mod cli_mount;
mod cli_transfer;
mod cli_tree;
mod cli_trust;

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ibp_auth::TrustStore;
use lors::credentials::{
    self, CaClient, Error, LoginMethod, LoginParams, NewProxy, Secret, TrustSource, Verification,
};
use lors::depots::{self, DepotQuery, Near};
use lors::exit;
use lors::validity::{format_duration, format_local, parse_hhmm};

/// Environment variable naming the default trust directory.
pub(crate) const TRUST_ENV: &str = "LORS_TRUST_DIR";
/// Longest password read.
const MAX_PASSWORD: u64 = 4096;

#[derive(Parser)]
#[command(
    name = "lors",
    version,
    about = "LoRS command-line tools: credentials, depots and files for the secure storage stack",
    after_help = "Exit codes: 0 success/proxy valid, 1 no valid proxy, 2 usage error, \
                  3 refused (authentication or a missing right), 4 service unreachable \
                  or server error, 5 rate limited, 6 local failure, 7 not found, \
                  8 conflict, 9 rm: deleted but some allocations not freed, \
                  10 data lost or corrupt beyond repair (or an unusable exNode or key), \
                  11 refresh/repair/trim/stat --check: some allocations refused or bad.\n\
                  The proxy is $X509_USER_PROXY, else /tmp/x509up_u<uid>."
)]
pub(crate) struct Cli {
    /// Show more on standard error: -v warnings (each failover and retry)
    /// and what is going on (info), -vv debug, -vvv trace. Without it only
    /// errors (summaries still count failovers). RUST_LOG, when set,
    /// decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to the online CA with a password or token and make a proxy
    Login(LoginArgs),
    /// Make a proxy from your own certificate and key, with VO attributes
    /// from the online CA (mutual TLS)
    ProxyInit(ProxyInitArgs),
    /// Link another certificate of yours (e.g. a grid certificate) to
    /// your VO ID at the online CA, proving you hold its key; then
    /// `proxy-init` with it acts as you
    LinkCert(LinkCertArgs),
    /// Show the proxy, or test it in scripts (--exists, --timeleft)
    ProxyInfo(ProxyInfoArgs),
    /// Overwrite and remove the proxy
    ProxyDestroy(ProxyDestroyArgs),
    /// Ask the L-Bone for depots that can take an allocation, each with a
    /// signed grant (mutual TLS with the proxy)
    Depots(DepotsArgs),
    /// List a directory of the metadata manager
    Ls(cli_files::LsArgs),
    /// Show a file or directory with your rights on it; --mappings: its
    /// depots, ranges and expiry; --check: read every block back and verify
    Stat(cli_transfer::StatArgs),
    /// Upload a file (encrypted, replicated or erasure coded) to depots,
    /// registered in the metadata manager or written to an exNode file
    Upload(cli_transfer::UploadArgs),
    /// Download a file (from the metadata manager or an exNode file),
    /// verifying every block, failing over between replicas and shares
    Download(cli_transfer::DownloadArgs),
    /// Copy a file or (-r) a directory tree between the local file system
    /// and the grid (a grid path is written lors:/VO/dir), files in parallel,
    /// modification times kept
    Cp(cli_tree::CpArgs),
    /// Make DEST a copy of the tree SRC: unchanged files skipped (size and
    /// mtime, or --checksum), --delete removes extraneous ones, --dry-run
    /// lists; a re-run continues an interrupted copy
    Sync(cli_tree::SyncArgs),
    /// Register a tree of existing exNode files (LoRS 0.82 or --xnd) at the
    /// metadata manager without copying data (--copy: re-upload encrypted)
    ImportExnodes(cli_tree::ImportArgs),
    /// Add replicas (depot to depot through the client)
    Augment(cli_transfer::AugmentArgs),
    /// Drop mappings and release their allocations
    Trim(cli_transfer::TrimArgs),
    /// Extend the lifetime of a file's allocations (MANAGE CHNG)
    Refresh(cli_transfer::RefreshArgs),
    /// Probe every block and recreate what is lost or corrupt
    Repair(cli_transfer::RepairArgs),
    /// Read every block of a file (--all: of every file under a directory) back and verify it
    Check(cli_transfer::CheckArgs),
    /// Keep files alive unattended: enroll, status, revoke a maintenance credential
    #[command(subcommand)]
    Maintenance(cli_maintenance::MaintenanceCommand),
    /// Your key-wrapping key pair: init, show; VO admins: set-escrow
    #[command(subcommand)]
    Keys(cli_keys::KeysCommand),
    /// Give a user read access to a file: a wrapped key and an ACL entry
    Share(cli_keys::ShareArgs),
    /// Take a user's access away: ACL entry and wrapped keys removed
    Unshare(cli_keys::UnshareArgs),
    /// Create a directory
    Mkdir(cli_files::MkdirArgs),
    /// Move or rename a file or directory (within its VO)
    Mv(cli_files::MvArgs),
    /// Delete a file (or one old version, or an empty directory) and
    /// release its allocations on the depots
    Rm(cli_files::RmArgs),
    /// List a file's versions (kept by its directory's retention), or show
    /// or set (--keep N) how many versions a directory keeps
    Versions(cli_files::VersionsArgs),
    /// Show or set access control lists
    #[command(subcommand)]
    Acl(cli_files::AclCommand),
    /// Show storage used in a VO (all owners for its admins)
    Usage(cli_files::UsageArgs),
    /// Show who the metadata manager takes you for; set or clear your
    /// display name
    Whoami(cli_files::WhoamiArgs),
    /// VO admins: list, add, remove or restore the VO's members
    #[command(subcommand)]
    Members(cli_files::MembersCommand),
    /// Write a trust directory from the online CA (fetch), the CA pinned
    /// by its fingerprint
    #[command(subcommand)]
    Trust(cli_trust::TrustCommand),
    /// Release what killed uploads left allocated on the depots (from the
    /// journals of allocations in flight); --dry-run lists it
    Cleanup(cli_cleanup::CleanupArgs),
    /// Mount a metadata-manager directory as a file system (FUSE) until
    /// Ctrl-C, SIGTERM or `fusermount3 -u MOUNTPOINT`
    Mount(cli_mount::MountArgs),
    /// Print a completion script for bash, zsh or fish (e.g. `lors
    /// completions bash > /etc/bash_completion.d/lors`)
    Completions(cli_docs::CompletionsArgs),
    /// Write the manual pages (lors.1 and one per subcommand) into DIR, or
    /// print lors.1
    Man(cli_docs::ManArgs),
}

#[derive(Args)]
struct CaArgs {
    /// The online CA, e.g. https://ca.example.org:8443 (default:
    /// $LORS_CA_URL, else `ca` in the config file)
    #[arg(long, value_name = "URL")]
    ca: Option<String>,
    /// Trust directory whose ca/*.pem authenticate the CA's server
    /// (default: $LORS_TRUST_DIR)
    #[arg(long, value_name = "DIR", conflicts_with = "ca_cert")]
    trust: Option<PathBuf>,
    /// PEM file with the certificate(s) of the CA that issued the server's
    /// certificate (instead of a trust directory)
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

#[derive(Args)]
struct LoginArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// Virtual organization to get attributes for (default: $LORS_VO, else
    /// `vo` in the config file); repeat it for one proxy carrying several
    /// VOs (the first one is the default VO of requests that name none)
    #[arg(long)]
    vo: Vec<String>,
    /// How the CA checks who you are [default: oidc with --token-file, else radius]
    #[arg(long, value_enum)]
    method: Option<LoginMethod>,
    /// User name (default: $USER)
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long, conflicts_with = "token_file")]
    password_stdin: bool,
    /// Read an OIDC token (JWT) from FILE (implies --method oidc)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Requested proxy lifetime
    #[arg(long, value_name = "HH:MM", default_value = "12:00", value_parser = parse_hhmm)]
    valid: u64,
    /// Print the new proxy's details as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProxyInitArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// Your certificate (PEM; intermediates may follow it)
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Its private key (PEM PKCS#8 "PRIVATE KEY", unencrypted)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Virtual organization to get attributes for (default: $LORS_VO, else
    /// `vo` in the config file); repeat it for one proxy carrying several
    /// VOs
    #[arg(long)]
    vo: Vec<String>,
    /// Requested proxy lifetime
    #[arg(long, value_name = "HH:MM", default_value = "12:00", value_parser = parse_hhmm)]
    valid: u64,
    /// Print the new proxy's details as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LinkCertArgs {
    #[command(flatten)]
    ca: CaArgs,
    /// The certificate to link (PEM; intermediates may follow it)
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Its private key (PEM PKCS#8 "PRIVATE KEY", unencrypted)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The VO in which to link it (default: $LORS_VO, else `vo` in the
    /// config file)
    #[arg(long)]
    vo: Option<String>,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProxyInfoArgs {
    /// Print only the seconds left (0 if expired)
    #[arg(long, conflicts_with_all = ["exists", "json"])]
    timeleft: bool,
    /// Print nothing; exit 0 if a valid proxy exists, else 1
    #[arg(long, conflicts_with = "json")]
    exists: bool,
    /// Print a JSON object
    #[arg(long)]
    json: bool,
    /// Require at least this much time left (exit 1 otherwise)
    #[arg(long, value_name = "HH:MM", value_parser = parse_hhmm)]
    valid: Option<u64>,
    /// Verify the proxy against this trust directory (default: $LORS_TRUST_DIR)
    #[arg(long, value_name = "DIR")]
    trust: Option<PathBuf>,
}

#[derive(Args)]
struct ProxyDestroyArgs {
    /// Print {"path", "destroyed"} as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DepotsArgs {
    /// The L-Bone, e.g. https://lbone.example.org:6767 (default:
    /// $LORS_LBONE_URL, else `lbone` in the config file)
    #[arg(long, value_name = "URL")]
    lbone: Option<String>,
    /// Trust directory whose ca/*.pem authenticate the L-Bone's server
    /// (default: $LORS_TRUST_DIR, else `trust_dir` in the config file)
    #[arg(long, value_name = "DIR")]
    trust: Option<PathBuf>,
    /// VO to use (checked against the proxy's VO attributes)
    #[arg(long)]
    vo: Option<String>,
    /// Size of one allocation, e.g. 100MiB
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = depots::parse_size)]
    size: u64,
    /// How long the allocation must live, e.g. 3600, 90m, 7d
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = depots::parse_duration)]
    duration: u64,
    /// Where you are: LAT,LON or a place registered at the L-Bone; nearest
    /// depots come first
    #[arg(long, value_name = "LAT,LON|PLACE", value_parser = Near::parse, allow_hyphen_values = true)]
    near: Option<Near>,
    /// How many depots (default: all that suit)
    #[arg(long, value_name = "N")]
    count: Option<u32>,
    #[arg(long, value_enum, default_value = "hard")]
    reliability: depots::Reliability,
    /// Print the L-Bone's answer as JSON (with the grants)
    #[arg(long)]
    json: bool,
}

/// The trust directory of the environment or the configuration file.
pub(crate) fn env_trust_dir() -> Option<PathBuf> {
    std::env::var_os(TRUST_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| lors::config::Config::load().ok()?.trust_dir)
}

/// The proxy file: `$X509_USER_PROXY`, else `proxy` in the configuration
/// file, else `/tmp/x509up_u<uid>`.
fn proxy_path() -> Result<PathBuf, Error> {
    Ok(lors::config::Config::load()?.proxy_path())
}

impl CaArgs {
    /// The CA's URL: the flag, else the environment or the config file.
    fn url(&self) -> Result<String, Error> {
        match &self.ca {
            Some(u) => Ok(u.clone()),
            None => lors::config::Config::load()?.ca.ok_or_else(|| {
                Error::Usage("which online CA? give --ca URL or set LORS_CA_URL".into())
            }),
        }
    }
}

/// The VO: the flag, else the environment or the config file.
fn vo_or_config(vo: Option<String>) -> Result<String, Error> {
    match vo {
        Some(v) => Ok(v),
        None => lors::config::Config::load()?
            .vo
            .ok_or_else(|| Error::Usage("which VO? give --vo VO or set LORS_VO".into())),
    }
}

impl CaArgs {
    fn trust_source(&self) -> Result<TrustSource, Error> {
        if let Some(f) = &self.ca_cert {
            return Ok(TrustSource::CaFile(f.clone()));
        }
        self.trust
            .clone()
            .or_else(env_trust_dir)
            .map(TrustSource::Dir)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "nothing to authenticate the CA's server with: give --trust DIR, \
                     set {TRUST_ENV} or give --ca-cert FILE"
                ))
            })
    }
}

/// A multi-threaded runtime for transfers (encryption, erasure coding and
/// checksums run beside the I/O).
pub(crate) fn runtime_mt() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Local(format!("cannot start the runtime: {e}")))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Local(format!("cannot start the runtime: {e}")))
}

/// Strips one trailing line end.
fn chomp(mut s: String) -> Secret {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    Secret::new(s)
}

fn password_from_stdin() -> Result<Secret, Error> {
    let mut line = String::with_capacity(256);
    std::io::stdin()
        .lock()
        .take(MAX_PASSWORD + 1)
        .read_line(&mut line)
        .map_err(|e| Error::Usage(format!("cannot read the password from stdin: {e}")))?;
    let secret = chomp(line);
    if secret.expose().len() as u64 > MAX_PASSWORD {
        return Err(Error::Usage("password too long".into()));
    }
    Ok(secret)
}

fn password_from_terminal(prompt: &str) -> Result<Secret, Error> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "no password given and standard input is not a terminal: \
             use --password-stdin or --token-file"
                .into(),
        ));
    }
    // rpassword turns echo off on the terminal (and restores it), prompts
    // on it and reads one line.
    let line = rpassword::prompt_password(prompt)
        .map_err(|e| Error::Local(format!("cannot read the password from the terminal: {e}")))?;
    let secret = Secret::new(line);
    if secret.expose().len() as u64 > MAX_PASSWORD {
        return Err(Error::Usage("password too long".into()));
    }
    Ok(secret)
}

fn token_from_file(path: &PathBuf) -> Result<Secret, Error> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::Usage(format!("cannot read token file {}: {e}", path.display())))?;
    let mut text = String::with_capacity(4096);
    f.take(credentials::MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Usage(format!("cannot read token file {}: {e}", path.display())))?;
    if text.len() as u64 > credentials::MAX_TOKEN_FILE {
        return Err(Error::Usage(format!(
            "token file {} is larger than {} bytes",
            path.display(),
            credentials::MAX_TOKEN_FILE
        )));
    }
    let token = Secret::new(text.trim().to_owned());
    drop(Secret::new(text));
    Ok(token)
}

fn print_new_proxy(p: &NewProxy, path: &std::path::Path, json: bool) {
    let now = ibp_auth::unix_now();
    let left = p.not_after - now;
    let short = left + 120 < i64::try_from(p.requested).unwrap_or(i64::MAX);
    if json {
        let groups: Vec<_> = p
            .groups
            .iter()
            .map(|g| serde_json::json!({"id": g.id, "name": g.name}))
            .collect();
        let v = serde_json::json!({
            "proxy": path.to_string_lossy(),
            "vo": p.vo,
            "vo_id": p.vo_id,
            "groups": groups,
            "not_after": p.not_after,
            "timeleft": left.max(0),
            "requested": p.requested,
            "shortened": short,
            "also": p.also.iter().map(|(vo, vo_id, groups)| serde_json::json!({
                "vo": vo,
                "vo_id": vo_id,
                "groups": groups.iter().map(|g| serde_json::json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    let groups = if p.groups.is_empty() {
        "(none)".to_owned()
    } else {
        p.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("vo        : {}", p.vo);
    println!("vo id     : {}", p.vo_id);
    println!("groups    : {groups}");
    for (vo, vo_id, groups) in &p.also {
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        println!(
            "also vo   : {vo} (vo id {vo_id}; groups {})",
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    println!(
        "valid     : until {} ({} left)",
        format_local(p.not_after),
        format_duration(p.not_after - now)
    );
    println!("proxy     : {}", path.display());
    if short {
        eprintln!(
            "lors: warning: asked for {} but the credential is valid for {} only",
            format_duration(i64::try_from(p.requested).unwrap_or(i64::MAX)),
            format_duration(left)
        );
    }
}

/// Saves the new proxy and, with a trust directory (which may pin the
/// VO's attribute authority), checks it verifies; a failure there is only
/// a warning: the services have their own trust directories.
fn finish(p: &NewProxy, source: &TrustSource, trust: &TrustStore, json: bool) -> Result<(), Error> {
    let path = proxy_path()?;
    credentials::save_proxy(&path, &p.credential)?;
    print_new_proxy(p, &path, json);
    if let TrustSource::Dir(_) = source {
        if let Err(e) =
            ibp_auth::verify_chain(&p.credential.chain_der(), trust, ibp_auth::unix_now())
        {
            eprintln!(
                "lors: warning: the new proxy does not verify against the trust directory: {e}"
            );
        }
    }
    Ok(())
}

/// The VOs of `--vo` (repeated), else the default VO alone.
fn vos_or_config(given: &[String]) -> Result<Vec<String>, Error> {
    let vos = if given.is_empty() {
        vec![vo_or_config(None)?]
    } else {
        given.to_vec()
    };
    credentials::check_vos(&vos)?;
    Ok(vos)
}

/// The name of the current user in the password database.
fn login_name() -> Option<String> {
    whoami::fallible::username().ok().filter(|u| !u.is_empty())
}

fn login(args: LoginArgs) -> Result<u8, Error> {
    let method = match (args.method, &args.token_file) {
        (None, Some(_)) => LoginMethod::Oidc,
        (None, None) => LoginMethod::Radius,
        (Some(LoginMethod::Oidc), None) => {
            return Err(Error::Usage("--method oidc needs --token-file".into()))
        }
        (Some(m), Some(_)) if m != LoginMethod::Oidc => {
            return Err(Error::Usage(format!(
                "--token-file is for --method oidc, not {}",
                m.as_str()
            )))
        }
        (Some(m), _) => m,
    };
    let user = match args.user.clone() {
        Some(u) => u,
        None => std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(login_name)
            .ok_or_else(|| Error::Usage("no user name: give --user NAME".into()))?,
    };
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err(Error::Usage("bad user name".into()));
    }
    if args.valid == 0 {
        return Err(Error::Usage("--valid must be longer than 00:00".into()));
    }
    let trust_source = args.ca.trust_source()?;
    let trust = trust_source.load()?;
    let ca = CaClient::new(&args.ca.url()?, &trust, None)?;
    let mut vos = vos_or_config(&args.vo)?;
    let vo = vos.remove(0);
    let secret = match &args.token_file {
        Some(f) => token_from_file(f)?,
        None if args.password_stdin => password_from_stdin()?,
        None => password_from_terminal(&format!("Password for {user} at {}: ", ca.url()))?,
    };
    let params = LoginParams {
        method,
        user,
        secret,
        vo,
        also: vos,
        lifetime: args.valid,
    };
    let new = runtime()?.block_on(credentials::login(&ca, &params))?;
    drop(params);
    finish(&new, &trust_source, &trust, args.json)?;
    Ok(exit::OK)
}

fn proxy_init(args: ProxyInitArgs) -> Result<u8, Error> {
    if args.valid == 0 {
        return Err(Error::Usage("--valid must be longer than 00:00".into()));
    }
    let trust_source = args.ca.trust_source()?;
    let trust = trust_source.load()?;
    let user = credentials::load_user_credential(&args.cert, &args.key)?;
    let ca = CaClient::new(&args.ca.url()?, &trust, Some(&user))?;
    let vos = vos_or_config(&args.vo)?;
    let new = runtime()?.block_on(credentials::proxy_init_vos(&ca, &user, &vos, args.valid))?;
    finish(&new, &trust_source, &trust, args.json)?;
    Ok(exit::OK)
}

/// `lors link-cert`: the current proxy authenticates the member, the
/// certificate's key signs the CA's challenge.
fn link_cert(args: LinkCertArgs) -> Result<u8, Error> {
    let trust = args.ca.trust_source()?.load()?;
    let extra = credentials::load_user_credential(&args.cert, &args.key)?;
    let proxy = credentials::load_unexpired_proxy(&proxy_path()?)?;
    let ca = CaClient::new(&args.ca.url()?, &trust, Some(&proxy))?;
    let vo = vo_or_config(args.vo.clone())?;
    let linked = runtime()?.block_on(lors::link::link_cert(&ca, &extra, &vo))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&linked)
                .map_err(|e| Error::Local(format!("cannot write JSON: {e}")))?
        );
    } else if let Some(request) = &linked.request {
        println!(
            "{} waits for a VO admin of {} (request {request}); once approved, \
             `lors proxy-init --cert {} --key {}` acts as VO ID {}",
            linked.identity,
            linked.vo,
            args.cert.display(),
            args.key.display(),
            linked.vo_id
        );
    } else {
        println!(
            "linked {} to your VO ID {} in VO {}; `lors proxy-init --cert {} --key {}` acts as you",
            linked.identity,
            linked.vo_id,
            linked.vo,
            args.cert.display(),
            args.key.display()
        );
    }
    Ok(exit::OK)
}

fn proxy_info(args: ProxyInfoArgs) -> Result<u8, Error> {
    let path = proxy_path()?;
    let mut trust = match args.trust.clone().or_else(env_trust_dir) {
        Some(dir) => Some(TrustSource::Dir(dir).load()?),
        None => None,
    };
    // A VOMS proxy verifies against the grid's vomsdir, as VOMS tools do.
    if let (Some(t), Some(dir)) = (trust.as_mut(), std::env::var_os("X509_VOMS_DIR")) {
        t.load_vomsdir(std::path::Path::new(&dir))
            .map_err(|e| Error::Usage(format!("cannot load X509_VOMS_DIR: {e}")))?;
    }
    let now = ibp_auth::unix_now();
    let info = match credentials::inspect_proxy(&path, trust.as_ref(), now) {
        Ok(i) => i,
        Err(_) if args.exists => return Ok(exit::NO_PROXY),
        Err(e) => return Err(e),
    };
    let ok = info.is_valid_for(args.valid.unwrap_or(0), now);
    if args.exists {
        // Nothing printed.
    } else if args.timeleft {
        println!("{}", info.time_left(now));
    } else if args.json {
        println!("{}", info.to_json(now));
    } else {
        print!("{}", info.to_text(now));
        if let Verification::Failed(e) = &info.verification {
            eprintln!("lors: the proxy does not verify: {e}");
        }
    }
    Ok(if ok { exit::OK } else { exit::NO_PROXY })
}

fn proxy_destroy(args: ProxyDestroyArgs) -> Result<u8, Error> {
    let path = proxy_path()?;
    let destroyed = credentials::destroy_proxy(&path)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"path": path.to_string_lossy(), "destroyed": destroyed})
        );
    } else if !destroyed {
        eprintln!("lors: no proxy at {}", path.display());
    }
    Ok(exit::OK)
}

fn depots_cmd(args: DepotsArgs) -> Result<u8, Error> {
    let path = proxy_path()?;
    let credential = lors::credentials::load_unexpired_proxy(&path)?;
    let dir = args.trust.clone().or_else(env_trust_dir).ok_or_else(|| {
        Error::Usage(format!(
            "nothing to authenticate the L-Bone's server with: give --trust DIR or set {TRUST_ENV}"
        ))
    })?;
    let trust = TrustSource::Dir(dir).load()?;
    if args.count == Some(0) {
        return Err(Error::Usage("--count must be at least 1".into()));
    }
    let q = DepotQuery {
        vo: args.vo,
        count: args.count,
        size: args.size,
        duration: args.duration,
        reliability: args.reliability,
        near: args.near,
    };
    let lbone = match args.lbone.clone() {
        Some(u) => u,
        None => lors::config::Config::load()?.lbone.ok_or_else(|| {
            Error::Usage("which L-Bone? give --lbone URL or set LORS_LBONE_URL".into())
        })?,
    };
    let offer = runtime()?.block_on(depots::query_offer(&lbone, &trust, &credential, &q))?;
    if args.json {
        let text = serde_json::to_string_pretty(&offer)
            .map_err(|e| Error::Local(format!("cannot format the answer: {e}")))?;
        println!("{text}");
    } else {
        println!(
            "VO {}: {} depot(s){}",
            offer.vo,
            offer.returned,
            offer
                .requested
                .map(|n| format!(" of {n} requested"))
                .unwrap_or_default()
        );
        for d in &offer.depots {
            let distance = d
                .distance_km
                .map(|k| format!("{k:.0} km"))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<16} {:<24} {:>9}  free {:>14} B  grant until {}",
                d.name,
                d.address,
                distance,
                d.free,
                format_local(d.grant_not_after)
            );
        }
    }
    if let Some(note) = &offer.note {
        eprintln!("lors: {note}");
    }
    Ok(exit::OK)
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    // Log lines go to standard error only: standard output carries what
    // scripts parse.
    ibp_service::logging::init_cli(cli.verbose);
    let result = match cli.command {
        Command::Login(a) => login(a),
        Command::ProxyInit(a) => proxy_init(a),
        Command::LinkCert(a) => link_cert(a),
        Command::ProxyInfo(a) => proxy_info(a),
        Command::ProxyDestroy(a) => proxy_destroy(a),
        Command::Depots(a) => depots_cmd(a),
        Command::Ls(a) => cli_files::ls(a),
        Command::Stat(a) => cli_transfer::stat(a),
        Command::Upload(a) => cli_transfer::upload(a),
        Command::Download(a) => cli_transfer::download(a),
        Command::Cp(a) => cli_tree::cp(a),
        Command::Sync(a) => cli_tree::sync(a),
        Command::ImportExnodes(a) => cli_tree::import_exnodes(a),
        Command::Augment(a) => cli_transfer::augment(a),
        Command::Trim(a) => cli_transfer::trim(a),
        Command::Refresh(a) => cli_transfer::refresh(a),
        Command::Repair(a) => cli_transfer::repair(a),
        Command::Check(a) => cli_transfer::check(a),
        Command::Maintenance(c) => cli_maintenance::maintenance(c),
        Command::Keys(c) => cli_keys::keys(c),
        Command::Share(a) => cli_keys::share(a),
        Command::Unshare(a) => cli_keys::unshare(a),
        Command::Mkdir(a) => cli_files::mkdir(a),
        Command::Mv(a) => cli_files::mv(a),
        Command::Rm(a) => cli_files::rm(a),
        Command::Acl(c) => cli_files::acl(c),
        Command::Usage(a) => cli_files::usage(a),
        Command::Versions(a) => cli_files::versions(a),
        Command::Whoami(a) => cli_files::whoami(a),
        Command::Members(c) => cli_files::members(c),
        Command::Trust(c) => cli_trust::trust(c),
        Command::Cleanup(a) => cli_cleanup::cleanup(a),
        Command::Mount(a) => cli_mount::mount(a),
        Command::Completions(a) => cli_docs::completions(a),
        Command::Man(a) => cli_docs::man(a),
    };
    lors::files::release_idle();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let e = cli_transfer::name_proxy(e);
            eprintln!("lors: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Standard output closed by its reader (`lors ls | head`) ends lors
/// quietly with status 141 (128 + SIGPIPE, what a shell reports for a tool
/// SIGPIPE killed) instead of a panic message.
///
/// SIGPIPE itself stays ignored (Rust's default): a write into the socket of
/// a depot that died is then an error lors fails over from, not a signal
/// that kills it (TLS writes are `writev`, which has no `MSG_NOSIGNAL`).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// clap's own consistency checks of every subcommand (positional
    /// order, conflicts, defaults), which otherwise fire only when that
    /// subcommand runs.
    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Commands whose output is the product itself, not a report.
    const NO_JSON: [&str; 2] = ["lors completions", "lors man"];

    /// Issue 19: `--json` on every command that prints. Every leaf command
    /// of the CLI has it, except those in [`NO_JSON`]; a new command
    /// without it fails here.
    #[test]
    fn every_command_that_prints_has_json() {
        fn leaves(c: &clap::Command, prefix: &str, out: &mut Vec<(String, bool)>) {
            let name = format!("{prefix} {}", c.get_name()).trim().to_owned();
            if c.has_subcommands() {
                for s in c.get_subcommands() {
                    leaves(s, &name, out);
                }
            } else {
                let json = c.get_arguments().any(|a| a.get_id() == "json");
                out.push((name, json));
            }
        }
        let mut all = Vec::new();
        leaves(&super::Cli::command(), "", &mut all);
        assert!(all.len() > 25, "{all:?}");
        let missing: Vec<&String> = all
            .iter()
            .filter(|(n, json)| !json && !NO_JSON.contains(&n.as_str()))
            .map(|(n, _)| n)
            .collect();
        assert!(missing.is_empty(), "commands without --json: {missing:?}");
        for n in NO_JSON {
            assert!(
                all.iter().any(|(m, _)| m == n),
                "{n} is no longer a command"
            );
        }
    }
}
