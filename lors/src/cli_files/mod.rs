//! The `lors` commands on the metadata manager (`ls`, `stat`, `mkdir`,
//! `mv`, `rm`, `acl`, `usage`, `whoami`, `members`): argument parsing and
//! output. Part of the `lors` binary, not of the library; the work is done
//! by [`lors::metadata`] and [`lors::release`]; the text output is in
//! `format`. See docs/lors.md.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ibp_auth::{ProxyCredential, TrustStore};
use lors::config::Config;
use lors::credentials::{Error, TrustSource};
use lors::depots::{self, DepotQuery};
use lors::metadata::AclEntry;
use lors::names::NameBook;
use lors::release::{self, Removal, SecureAccess};
use lors::{exit, MetadataClient};
use serde::Serialize;

mod format;

pub use format::{
    failure_lines, format_acl, format_long, format_members, format_removal, format_retention,
    format_short, format_stat, format_usage, format_versions, format_whoami, version_table, Style,
};

/// Environment variable naming the default metadata manager.
pub const MDM_ENV: &str = "LORS_METADATA_URL";

/// Options every metadata-manager command takes. Each falls back on the
/// environment, then the configuration file ([`lors::config`]).
#[derive(Args)]
pub struct MdmArgs {
    /// The metadata manager, e.g. https://mdm.example.org:6780
    /// (default: $LORS_METADATA_URL, else `metadata` in the config file)
    #[arg(long, value_name = "URL")]
    pub(crate) mdm: Option<String>,
    /// Trust directory whose ca/*.pem authenticate the servers
    /// (default: $LORS_TRUST_DIR, else `trust_dir` in the config file)
    #[arg(long, value_name = "DIR")]
    pub(crate) trust: Option<PathBuf>,
    /// The proxy credential (default: $X509_USER_PROXY, else `proxy` in
    /// the config file, else /tmp/x509up_u<uid>)
    #[arg(long, value_name = "FILE")]
    pub(crate) proxy: Option<PathBuf>,
    /// Print the answer as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct LsArgs {
    /// Directory (or file) to list: /VO/dir/...
    path: String,
    /// Long listing: kind, owner, size, version, last change (local time),
    /// expiry of the current version, EXPIRED or DAMAGED marks
    #[arg(short = 'l', long)]
    long: bool,
    /// Sizes in KiB, MiB, GiB (powers of 1024)
    #[arg(short = 'h', long)]
    human_readable: bool,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct VersionsArgs {
    /// A file (its versions) or a directory (its retention)
    path: String,
    /// Keep N versions of each file under the directory PATH (and its
    /// subdirectories without a setting of their own), the current one
    /// included; from each file's next version on (needs the write right
    /// on the directory)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "inherit")]
    keep: Option<u64>,
    /// Clear the directory's own setting: the nearest directory above
    /// with one decides again, else the VO's, else the default
    #[arg(long)]
    inherit: bool,
    /// Sizes in KiB, MiB, GiB (powers of 1024)
    #[arg(short = 'h', long)]
    human_readable: bool,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct PathArgs {
    /// /VO/dir/name
    path: String,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct MkdirArgs {
    /// Directory to create: /VO/dir/...
    path: String,
    /// Create missing parents too; an existing directory is no error
    #[arg(short = 'p', long)]
    parents: bool,
    /// Print nothing on success (errors and warnings still go to stderr)
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct MvArgs {
    /// Entry to move
    from: String,
    /// New path (same VO)
    to: String,
    /// Print nothing on success (errors and warnings still go to stderr)
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct RmArgs {
    /// File or empty directory to delete
    path: String,
    /// Delete only this (non-current) version of the file
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    version: Option<u64>,
    /// The L-Bone, for depot grants to release allocations made on secure
    /// ports (default: $LORS_LBONE_URL, else `lbone` in the config file;
    /// without it only legacy ports)
    #[arg(long, value_name = "URL")]
    lbone: Option<String>,
    /// Print nothing on success; allocations not freed are still named on
    /// stderr (exit 9)
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Show an entry's ACL (needs the admin right); members by name
    /// (alice@vo1) when their name is unique, else by VO ID
    Get(AclGetArgs),
    /// Replace an entry's access and/or default ACL (needs the admin right)
    Set(AclSetArgs),
}

#[derive(Args)]
pub struct AclSetArgs {
    /// /VO/dir/name
    path: String,
    /// New access ACL: PRINCIPAL=RIGHTS entries (user:ID@VO or a member's
    /// NAME@VO, group:ID@VO, vo:VO; rights of rwda, or - for none);
    /// `--access` alone clears it
    #[arg(long, value_name = "ENTRY", num_args = 0.., value_parser = parse_acl_entry)]
    access: Option<Vec<AclArg>>,
    /// New default ACL of a directory (what new entries in it start with);
    /// `--default` alone clears it
    #[arg(long, value_name = "ENTRY", num_args = 0.., value_parser = parse_acl_entry)]
    default: Option<Vec<AclArg>>,
    #[command(flatten)]
    mdm: MdmArgs,
}

/// `acl get` options.
#[derive(Args)]
pub struct AclGetArgs {
    /// /VO/dir/name
    path: String,
    /// Show members by VO ID (user:ID@VO), not by name
    #[arg(long)]
    ids: bool,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct WhoamiArgs {
    /// Set the display name other members of your VO see and may share
    /// with (`lors share PATH "NAME@VO"`) instead of your certificate's
    /// name (a pseudonym in a pseudonymous VO); your login name is never
    /// shown unless you type it here
    #[arg(long, value_name = "NAME", conflicts_with = "clear_name")]
    set_name: Option<String>,
    /// Remove your display name
    #[arg(long)]
    clear_name: bool,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct UsageArgs {
    /// VO (default: your proxy's); its admins see every owner
    #[arg(long)]
    vo: Option<String>,
    /// Sizes in KiB, MiB, GiB (powers of 1024)
    #[arg(short = 'h', long)]
    human_readable: bool,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Subcommand)]
pub enum MembersCommand {
    /// List the VO's members this metadata manager knows
    List(MembersListArgs),
    /// Record a member before their first request, so ACLs can name them
    Add(MemberArgs),
    /// Refuse a member everywhere from their next request: at the metadata
    /// manager, and at the L-Bone (no more depot grants) unless --mdm-only
    Remove(MemberChangeArgs),
    /// Let a removed member in again, at the metadata manager and the
    /// L-Bone
    Restore(MemberChangeArgs),
}

#[derive(Args)]
pub struct MemberChangeArgs {
    #[command(flatten)]
    member: MemberArgs,
    /// The L-Bone to remove or restore them at as well (default:
    /// $LORS_LBONE_URL, else `lbone` in the config file)
    #[arg(long, value_name = "URL")]
    lbone: Option<String>,
    /// Only at the metadata manager
    #[arg(long, conflicts_with = "lbone")]
    mdm_only: bool,
}

#[derive(Args)]
pub struct MembersListArgs {
    /// VO (default: your proxy's)
    #[arg(long)]
    vo: Option<String>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct MemberArgs {
    /// The member's VO ID
    vo_id: String,
    /// VO (default: your proxy's)
    #[arg(long)]
    vo: Option<String>,
    #[command(flatten)]
    mdm: MdmArgs,
}

/// An ACL entry as given: `PRINCIPAL=RIGHTS`, or `NAME@VO=RIGHTS` whose
/// name the metadata manager resolves before the ACL is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclArg {
    who: String,
    rights: String,
}

/// clap's parser of `PRINCIPAL=RIGHTS` (or `NAME@VO=RIGHTS`).
pub fn parse_acl_entry(s: &str) -> Result<AclArg, String> {
    let (who, rights) = s.rsplit_once('=').ok_or_else(|| {
        format!(
            "bad ACL entry {s:?}: expected PRINCIPAL=RIGHTS, e.g. user:u1@vo1=rw or alice@vo1=rw"
        )
    })?;
    // The rights (and a principal given as one) checked now, names later.
    let probe = if lors::names::is_principal(who) {
        s.parse::<AclEntry>()?
    } else if who.is_empty() {
        return Err(format!("bad ACL entry {s:?}: no principal or name"));
    } else {
        format!("vo:x={rights}").parse::<AclEntry>()?
    };
    Ok(AclArg {
        who: who.to_owned(),
        rights: probe.rights,
    })
}

/// The entries of `args` with names resolved to principals (one request).
async fn resolve_acl(
    mdm: &MetadataClient,
    args: Option<Vec<AclArg>>,
) -> Result<Option<Vec<AclEntry>>, Error> {
    let Some(args) = args else {
        return Ok(None);
    };
    let who: Vec<String> = args.iter().map(|a| a.who.clone()).collect();
    let principals = lors::names::principals(mdm, &who).await?;
    principals
        .into_iter()
        .zip(args)
        .map(|(p, a)| {
            format!("{p}={}", a.rights)
                .parse::<AclEntry>()
                .map_err(Error::Usage)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What a command needs to talk to the metadata manager.
pub(crate) struct Session {
    pub(crate) client: MetadataClient,
    pub(crate) trust: TrustStore,
    pub(crate) credential: ProxyCredential,
    pub(crate) json: bool,
    /// The environment and configuration file, for other settings.
    pub(crate) config: Config,
}

impl MdmArgs {
    /// The metadata manager's URL: `--mdm`, else the configuration's
    /// (`$LORS_METADATA_URL`, else the file's `metadata`).
    pub(crate) fn url(&self, config: &Config) -> Option<String> {
        self.mdm.clone().or_else(|| config.metadata.clone())
    }

    /// Connects with the flags, else the environment, else the
    /// configuration file.
    pub(crate) fn connect(&self) -> Result<Session, Error> {
        let config = Config::load()?;
        self.connect_with(config)
    }

    pub(crate) fn connect_with(&self, config: Config) -> Result<Session, Error> {
        // The proxy first: without one (or with an expired one) nothing
        // else matters, and saying so is what helps.
        let path = self.proxy.clone().unwrap_or_else(|| config.proxy_path());
        let credential = lors::credentials::load_unexpired_proxy(&path)?;
        let url = self.url(&config).ok_or_else(|| {
            Error::Usage(format!(
                "which metadata manager? give --mdm URL, set {MDM_ENV} or `metadata` in {}",
                config_file_name()
            ))
        })?;
        let dir = self
            .trust
            .clone()
            .or_else(|| config.trust_dir.clone())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "nothing to authenticate the metadata manager's server with: give --trust DIR, \
                     set {} or `trust_dir` in {}",
                    crate::TRUST_ENV,
                    config_file_name()
                ))
            })?;
        let trust = TrustSource::Dir(dir).load()?;
        let client = MetadataClient::connect(&url, &trust, &credential)?;
        Ok(Session {
            client,
            trust,
            credential,
            json: self.json,
            config,
        })
    }
}

/// The configuration file's name for messages.
fn config_file_name() -> String {
    match std::env::var_os(lors::config::CONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p).display().to_string(),
        None => lors::config::default_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.config/lors/config.toml".into()),
    }
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Local(format!("cannot format the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Prints `v` as JSON, or the text `human` makes of it.
pub(crate) fn show<T: Serialize>(
    json: bool,
    v: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<u8, Error> {
    if json {
        print_json(v)?;
    } else {
        print!("{}", human(v));
    }
    Ok(exit::OK)
}

/// An entry as `ls --json` prints it: the answer's fields, and a file's
/// state by its expiry times.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    entry: &'a lors::metadata::EntryInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<lors::metadata::Health>,
}

pub fn ls(a: LsArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let entries = crate::runtime()?.block_on(s.client.list(&a.path))?;
    let st = Style::local(a.human_readable);
    if s.json {
        let listed: Vec<Listed> = entries
            .iter()
            .map(|e| Listed {
                entry: e,
                health: e.health(st.now),
            })
            .collect();
        return show(true, &listed, |_| String::new());
    }
    show(false, &entries, |e| {
        if a.long {
            format_long(e, &st)
        } else {
            format_short(e)
        }
    })
}

/// `lors versions`: a file's versions, or a directory's retention (set
/// with `--keep`, cleared with `--inherit`).
pub fn versions(a: VersionsArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let rt = crate::runtime()?;
    let st = Style::local(a.human_readable);
    if a.keep.is_some() || a.inherit {
        let r = rt.block_on(s.client.retention(&a.path, a.keep, a.inherit))?;
        return show(s.json, &r, format_retention);
    }
    let e = rt.block_on(s.client.stat(&a.path))?;
    if e.kind == lors::metadata::EntryKind::Dir {
        let r = rt.block_on(s.client.retention(&a.path, None, false))?;
        return show(s.json, &r, format_retention);
    }
    let v = rt.block_on(s.client.versions(&a.path))?;
    show(s.json, &v, |v| format_versions(v, &st))
}

pub fn mkdir(a: MkdirArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let e = crate::runtime()?.block_on(s.client.mkdir(&a.path, a.parents))?;
    // Nothing to say on success (--quiet is accepted for symmetry).
    let _ = a.quiet;
    show(s.json, &e, |_| String::new())
}

pub fn mv(a: MvArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let m = crate::runtime()?.block_on(s.client.move_entry(&a.from, &a.to))?;
    let _ = a.quiet;
    show(s.json, &m, |_| String::new())
}

pub fn rm(a: RmArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    // --lbone, else $LORS_LBONE_URL, else `lbone` in the config file.
    let lbone = a.lbone.clone().or_else(|| s.config.lbone.clone());
    let mut lbone_error: Option<String> = None;
    let removal = crate::runtime()?.block_on(release::delete_and_release(
        &s.client,
        &a.path,
        a.version,
        async {
            let url = lbone?;
            let q = DepotQuery::default();
            let got = match depots::query_offer(&url, &s.trust, &s.credential, &q).await {
                Ok(offer) => SecureAccess::from_offer(&offer, &s.trust, &s.credential),
                Err(e) => Err(e),
            };
            got.map_err(|e| lbone_error = Some(format!("no depot grants from the L-Bone: {e}")))
                .ok()
        },
    ))?;
    if let Some(e) = &lbone_error {
        eprintln!("lors: warning: {e}; releasing on legacy ports only");
    }
    for r in &removal.deleted.released {
        if let Some(e) = &r.error {
            eprintln!(
                "lors: version {}: its allocations are not freed: {e}",
                r.version
            );
        }
    }
    for line in failure_lines(&removal) {
        eprintln!("lors: {line}");
    }
    let code = if removal.all_freed() {
        exit::OK
    } else {
        exit::RELEASE_FAILED
    };
    if s.json {
        #[derive(Serialize)]
        struct RmJson<'a> {
            #[serde(flatten)]
            removal: &'a Removal,
            all_freed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            lbone_error: Option<&'a str>,
        }
        print_json(&RmJson {
            removal: &removal,
            all_freed: code == exit::OK,
            lbone_error: lbone_error.as_deref(),
        })?;
    } else if !a.quiet {
        print!("{}", format_removal(&removal));
    }
    Ok(code)
}

pub fn acl(c: AclCommand) -> Result<u8, Error> {
    match c {
        AclCommand::Get(a) => {
            let s = a.mdm.connect()?;
            let (acl, book) = crate::runtime()?.block_on(async {
                let acl = s.client.acl_get(&a.path).await?;
                let book = if a.ids || s.json {
                    NameBook::default()
                } else {
                    let principals = acl
                        .owner
                        .iter()
                        .chain(acl.access.iter().map(|e| &e.principal))
                        .chain(acl.default.iter().flatten().map(|e| &e.principal));
                    NameBook::fetch(&s.client, principals.map(String::as_str)).await
                };
                Ok::<_, Error>((acl, book))
            })?;
            show(s.json, &acl, |acl| format_acl(acl, &book))
        }
        AclCommand::Set(a) => {
            if a.access.is_none() && a.default.is_none() {
                return Err(Error::Usage(
                    "give --access and/or --default entries (alone, either clears its list)".into(),
                ));
            }
            let s = a.mdm.connect()?;
            let acl = crate::runtime()?.block_on(async {
                let access = resolve_acl(&s.client, a.access).await?;
                let default = resolve_acl(&s.client, a.default).await?;
                s.client
                    .acl_set(&a.path, access.as_deref(), default.as_deref())
                    .await
            })?;
            show(s.json, &acl, |acl| format_acl(acl, &NameBook::default()))
        }
    }
}

pub fn usage(a: UsageArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let u = crate::runtime()?.block_on(s.client.usage(a.vo.as_deref()))?;
    let st = Style::local(a.human_readable);
    show(s.json, &u, |u| format_usage(u, &st))
}

pub fn whoami(a: WhoamiArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let w = crate::runtime()?.block_on(async {
        if a.set_name.is_some() || a.clear_name {
            s.client.names_set(a.set_name.clone()).await?;
        }
        s.client.whoami().await
    })?;
    show(s.json, &w, |w| format_whoami(w, &Style::local(false)))
}

/// The VO given, else the caller's (one `whoami`).
async fn vo_or_mine(client: &MetadataClient, vo: Option<String>) -> Result<String, Error> {
    match vo {
        Some(v) => Ok(v),
        None => Ok(client.whoami().await?.vo),
    }
}

pub fn members(c: MembersCommand) -> Result<u8, Error> {
    let rt = crate::runtime()?;
    match c {
        MembersCommand::List(a) => {
            let s = a.mdm.connect()?;
            let m = rt.block_on(async {
                let vo = vo_or_mine(&s.client, a.vo).await?;
                s.client.members_list(&vo).await
            })?;
            show(s.json, &m, |m| format_members(m, &Style::local(false)))
        }
        MembersCommand::Add(a)
        | MembersCommand::Remove(MemberChangeArgs { member: a, .. })
        | MembersCommand::Restore(MemberChangeArgs { member: a, .. })
            if a.vo_id.is_empty() =>
        {
            Err(Error::Usage("empty VO ID".into()))
        }
        MembersCommand::Add(a) => {
            let s = a.mdm.connect()?;
            let m = rt.block_on(async {
                let vo = vo_or_mine(&s.client, a.vo).await?;
                s.client.members_add(&vo, &a.vo_id).await
            })?;
            show(s.json, &m, |_| String::new())
        }
        MembersCommand::Remove(a) => member_change(&rt, a, true),
        MembersCommand::Restore(a) => member_change(&rt, a, false),
    }
}

/// What `lors members remove|restore` did at each service.
#[derive(Serialize)]
struct MemberChanged {
    metadata_manager: lors::metadata::MemberChange,
    /// The L-Bone's answer; `null` when it was not asked (--mdm-only, no
    /// L-Bone configured) or had nothing to restore.
    lbone: Option<serde_json::Value>,
}

/// Removes (`remove`) or restores a member at the metadata manager, then
/// at the L-Bone. The metadata manager goes first: it refuses tickets and
/// registrations, the part that protects files.
fn member_change(
    rt: &tokio::runtime::Runtime,
    a: MemberChangeArgs,
    remove: bool,
) -> Result<u8, Error> {
    let m = &a.member;
    let s = m.mdm.connect()?;
    let lbone = if a.mdm_only {
        None
    } else {
        a.lbone.clone().or_else(|| s.config.lbone.clone())
    };
    let (verb, cmd, undo) = if remove {
        ("removed", "remove", "restore")
    } else {
        ("restored", "restore", "remove")
    };
    let (vo, mdm) = rt.block_on(async {
        let vo = vo_or_mine(&s.client, m.vo.clone()).await?;
        let r = if remove {
            s.client.members_remove(&vo, &m.vo_id).await
        } else {
            s.client.members_restore(&vo, &m.vo_id).await
        };
        r.map(|r| (vo, r))
    })?;
    let mut human = format!("{verb} {} in VO {vo} at the metadata manager\n", m.vo_id);
    let at_lbone = match &lbone {
        None => {
            human.push_str(&format!(
                "not at the L-Bone ({}); there: lbone admin member {cmd} --vo {vo} {}\n",
                if a.mdm_only {
                    "--mdm-only"
                } else {
                    "none configured"
                },
                m.vo_id
            ));
            None
        }
        Some(url) => {
            let r = rt
                .block_on(depots::set_member_removed(
                    url,
                    &s.trust,
                    &s.credential,
                    &vo,
                    &m.vo_id,
                    remove,
                ))
                .inspect_err(|_| {
                    eprintln!(
                        "lors: {verb} {} at the metadata manager, but not at the L-Bone \
                         (the same command again retries both; `lors members {undo} --mdm-only` \
                         undoes the first)",
                        m.vo_id
                    )
                })?;
            human.push_str(&match &r {
                Some(_) if remove => format!("{verb} at the L-Bone {url}: no more depot grants\n"),
                Some(_) => format!("{verb} at the L-Bone {url}: depot grants again\n"),
                None => format!("the L-Bone {url} had not removed them\n"),
            });
            r
        }
    };
    show(
        s.json,
        &MemberChanged {
            metadata_manager: mdm,
            lbone: at_lbone,
        },
        move |_| human,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use lors::metadata::{Acl, EntryInfo, EntryKind, Usage};
    use lors::metadata::{Deleted, Released, UsageRow, UsageTotal};

    #[test]
    fn usage_shows_entries_exnode_bytes_and_the_managers_limits() {
        use lors::metadata::{UsageLimits, VoUsed};
        // What a manager with limits answers (the contract with it).
        let json = r#"{"vo":"vo1","users":[{"owner":"user:u1@vo1","files":2,"versions":3,
            "logical":10,"stored":30,"entries":4,"exnode_bytes":2500}],
            "limits":{"user_entries":10,"user_exnode_bytes":10000,"vo_entries":null,
            "vo_exnode_bytes":50000},"vo_used":{"entries":7,"exnode_bytes":5000}}"#;
        let u: Usage = serde_json::from_str(json).unwrap();
        assert_eq!(u.users[0].entries, 4);
        assert_eq!(u.users[0].exnode_bytes, 2500);
        assert_eq!(
            u.limits,
            Some(UsageLimits {
                user_entries: Some(10),
                user_exnode_bytes: Some(10000),
                vo_entries: None,
                vo_exnode_bytes: Some(50000),
            })
        );
        assert_eq!(
            u.vo_used,
            Some(VoUsed {
                entries: 7,
                exnode_bytes: 5000
            })
        );
        let text = format_usage(&u, &utc());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "VO vo1");
        assert!(
            lines[1].ends_with("entries     exNode B"),
            "header names the new columns: {text}"
        );
        assert!(lines[2].ends_with("       4         2500"), "{text}");
        assert_eq!(
            lines[3],
            "limits: per owner 10 entries, 10000 exNode bytes; per VO unlimited entries, 50000 exNode bytes"
        );
        assert_eq!(
            lines[4],
            "user:u1@vo1 uses 4 of 10 (40%) entries, 2500 of 10000 (25%) exNode bytes"
        );
        assert_eq!(
            lines[5],
            "VO vo1 uses 7 entries, 5000 of 50000 (10%) exNode bytes"
        );
        assert_eq!(lines.len(), 6, "{text}");
        // --json keeps the manager's fields.
        let back = serde_json::to_value(&u).unwrap();
        assert_eq!(back["limits"]["vo_entries"], serde_json::Value::Null);
        assert_eq!(back["limits"]["user_entries"], 10);
        assert_eq!(back["vo_used"]["exnode_bytes"], 5000);
        assert_eq!(back["users"][0]["exnode_bytes"], 2500);

        // An older manager: no counts, no limits; still read and shown.
        let old = r#"{"vo":"vo1","users":[{"owner":"user:u1@vo1","files":1,"versions":1,
            "logical":1,"stored":1}]}"#;
        let u: Usage = serde_json::from_str(old).unwrap();
        assert_eq!((u.users[0].entries, u.users[0].exnode_bytes), (0, 0));
        assert!(u.limits.is_none() && u.vo_used.is_none());
        assert_eq!(format_usage(&u, &utc()).lines().count(), 3);
    }
    use lors::release::{Port, Release};

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        acl: AclCommand,
    }

    fn entry(path: &str, kind: EntryKind, size: u64) -> EntryInfo {
        EntryInfo {
            path: path.into(),
            kind,
            id: "id".into(),
            owner: Some("user:u1@vo1".into()),
            version: 3,
            size,
            created_at: 0,
            updated_at: 86_400,
            versions: None,
            stored: None,
            rights: None,
            expires: None,
            readable_until: None,
            unreadable: false,
            mtime: None,
        }
    }

    /// UTC, at 1970-01-03 (two days after the epoch).
    fn utc() -> Style {
        Style {
            human: false,
            zone: format::Zone::Fixed(chrono::FixedOffset::east_opt(0).unwrap()),
            now: 2 * 86_400,
        }
    }

    #[test]
    fn acl_set_arguments() {
        let t = T::try_parse_from([
            "t",
            "set",
            "/vo1/d",
            "--access",
            "user:u1@vo1=wr",
            "vo:vo1=r",
            "--default",
        ])
        .unwrap();
        let AclCommand::Set(a) = t.acl else {
            panic!("not set")
        };
        assert_eq!(a.path, "/vo1/d");
        let access = a.access.unwrap();
        assert_eq!(access.len(), 2);
        assert_eq!(
            access[0],
            AclArg {
                who: "user:u1@vo1".into(),
                rights: "rw".into()
            }
        );
        assert_eq!(access[1].who, "vo:vo1");
        assert_eq!(a.default, Some(vec![]));
        let t = T::try_parse_from(["t", "set", "/vo1/d", "--access", "group:g1@vo1=-"]).unwrap();
        let AclCommand::Set(a) = t.acl else {
            panic!("not set")
        };
        assert!(a.default.is_none());
        assert_eq!(a.access.unwrap()[0].rights, "-");
        // A name (resolved later), with its rights checked now.
        let t = T::try_parse_from(["t", "set", "/vo1/d", "--access", "alice@vo1=wr"]).unwrap();
        let AclCommand::Set(a) = t.acl else {
            panic!("not set")
        };
        assert_eq!(
            a.access.unwrap(),
            vec![AclArg {
                who: "alice@vo1".into(),
                rights: "rw".into()
            }]
        );
        assert!(T::try_parse_from(["t", "set", "/vo1/d", "--access", "alice=rwx"]).is_err());
        assert!(T::try_parse_from(["t", "set", "/vo1/d", "--access", "=rw"]).is_err());
        assert!(T::try_parse_from(["t", "set", "/vo1/d", "--access", "user:=rw"]).is_err());
        assert!(T::try_parse_from(["t", "set", "/vo1/d", "--access", "vo:vo1=rwx"]).is_err());
    }

    #[test]
    fn listings() {
        let e = [
            entry("/vo1/d", EntryKind::Dir, 0),
            entry("/vo1/file one", EntryKind::File, 12345),
        ];
        assert_eq!(format_short(&e), "d/\nfile one\n");
        assert_eq!(
            format_long(&e, &utc()),
            "d user:u1@vo1     0     - 1970-01-02 00:00:00 +00:00 - d/\n\
             - user:u1@vo1 12345    v3 1970-01-02 00:00:00 +00:00 - file one\n"
        );
        assert_eq!(format_short(&[]), "");
    }

    #[test]
    fn long_listings_show_expiry_marks_sizes_and_the_zone() {
        let mut ok = entry("/vo1/ok", EntryKind::File, 3 << 20);
        ok.expires = Some(3 * 86_400);
        ok.readable_until = Some(3 * 86_400);
        // One replica expired, the other alive: damaged.
        let mut damaged = entry("/vo1/damaged", EntryKind::File, 10);
        damaged.expires = Some(86_400);
        damaged.readable_until = Some(5 * 86_400);
        let mut gone = entry("/vo1/gone", EntryKind::File, 10);
        gone.expires = Some(86_400);
        gone.readable_until = Some(2 * 86_400);
        let mut unreadable = entry("/vo1/bad", EntryKind::File, 10);
        unreadable.unreadable = true;
        let st = Style {
            human: true,
            zone: format::Zone::Fixed(chrono::FixedOffset::east_opt(3600).unwrap()),
            ..utc()
        };
        let text = format_long(&[ok, damaged, gone, unreadable], &st);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "- user:u1@vo1 3.0 MiB    v3 1970-01-02 01:00:00 +01:00 1970-01-04 01:00:00 +01:00         ok",
                "- user:u1@vo1    10 B    v3 1970-01-02 01:00:00 +01:00 1970-01-02 01:00:00 +01:00 DAMAGED damaged",
                "- user:u1@vo1    10 B    v3 1970-01-02 01:00:00 +01:00 1970-01-02 01:00:00 +01:00 EXPIRED gone",
                "- user:u1@vo1    10 B    v3 1970-01-02 01:00:00 +01:00 -                          DAMAGED bad",
            ]
        );
    }

    #[test]
    fn versions_table_marks_the_current_one() {
        use lors::metadata::{Retention, VersionInfo, Versions};
        let v = |n: u64, current: bool, exclusive: u64| VersionInfo {
            version: n,
            current,
            size: 2048,
            stored: 4096,
            exclusive,
            key_id: Some("k1".into()),
            created_by: "user:u1@vo1".into(),
            created_at: 86_400,
            expires: Some(3 * 86_400),
            readable_until: Some(3 * 86_400),
            unreadable: false,
        };
        let vs = Versions {
            path: "/vo1/f".into(),
            id: "id".into(),
            current_version: 4,
            retention: Retention {
                path: "/vo1/f".into(),
                keep: 3,
                source: "directory /vo1".into(),
                own: None,
            },
            versions: vec![v(4, true, 2048), v(3, false, 0)],
        };
        let text = format_versions(&vs, &utc());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "/vo1/f: keeps 3 versions of each file (set on /vo1)"
        );
        assert_eq!(
            lines[1],
            " version size stored  own  created                     by           key id  expires"
        );
        assert_eq!(
            lines[2],
            "*4       2048   4096 2048  1970-01-02 00:00:00 +00:00  user:u1@vo1  k1      1970-01-04 00:00:00 +00:00"
        );
        assert!(
            lines[3].starts_with(" 3       2048   4096    0  "),
            "{text}"
        );
        assert_eq!(lines.len(), 4);
        let r = Retention {
            path: "/vo1/d".into(),
            keep: 1,
            source: "default".into(),
            own: None,
        };
        assert_eq!(
            format_retention(&r),
            "/vo1/d keeps 1 version of each file (the metadata manager's default)\n"
        );
    }

    #[test]
    fn local_time_has_the_offset() {
        let t = Style::local(false).time(0);
        assert_eq!(t.len(), "1970-01-01 00:00:00 +00:00".len(), "{t}");
        assert!(
            t.ends_with(":00") && t.contains(" +") || t.contains(" -"),
            "{t}"
        );
        assert_eq!(utc().time(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn stat_acl_usage_removal() {
        let mut f = entry("/vo1/f", EntryKind::File, 10);
        f.versions = Some(2);
        f.rights = Some("rwda".into());
        f.expires = Some(86_400);
        f.readable_until = Some(4 * 86_400);
        let s = format_stat(&f, &utc());
        assert!(s.contains("versions  : 2\n"), "{s}");
        assert!(s.contains("size      : 10 B\n"), "{s}");
        assert!(
            s.contains("expires   : 1970-01-02 00:00:00 +00:00 DAMAGED\n"),
            "{s}"
        );
        assert!(s.contains("your rights: rwda\n"), "{s}");
        let acl = Acl {
            path: "/vo1/d".into(),
            owner: None,
            access: vec!["vo:vo1=r".parse().unwrap()],
            default: Some(vec!["group:g@vo1=rw".parse().unwrap()]),
        };
        assert_eq!(
            format_acl(&acl, &NameBook::default()),
            "# path: /vo1/d\n# owner: - (VO root) (all rights)\nvo:vo1=r\ndefault:group:g@vo1=rw\n"
        );
        let u = Usage {
            vo: "vo1".into(),
            users: vec![UsageRow {
                owner: "user:u1@vo1".into(),
                files: 1,
                versions: 2,
                logical: 3,
                stored: 4,
                entries: 0,
                exnode_bytes: 0,
            }],
            total: Some(UsageTotal {
                files: 1,
                versions: 2,
                logical: 3,
                stored: 4,
            }),
            limits: None,
            vo_used: None,
        };
        let text = format_usage(&u, &utc());
        assert_eq!(text.lines().count(), 4, "{text}");
        let human = format_usage(
            &u,
            &Style {
                human: true,
                ..utc()
            },
        );
        assert!(
            human.lines().nth(1).unwrap().contains(" stored "),
            "{human}"
        );
        assert!(text.lines().last().unwrap().starts_with("total"));
        let release = |ok| Release {
            allocation: "d:6714/0".into(),
            depot: "d:6714".into(),
            port: Port::Legacy,
            freed: ok,
            error: (!ok).then(|| "down".into()),
        };
        let r = Removal {
            deleted: Deleted {
                path: "/vo1/f".into(),
                released: vec![
                    Released {
                        version: 1,
                        manage: vec![],
                        error: None,
                    },
                    Released {
                        version: 2,
                        manage: vec![],
                        error: None,
                    },
                ],
            },
            releases: vec![release(true), release(false)],
        };
        assert_eq!(
            format_removal(&r),
            "deleted /vo1/f (versions 1, 2); freed 1 of 2 allocation(s)\n"
        );
        assert!(!r.all_freed());
        assert_eq!(failure_lines(&r), ["allocation d:6714/0 not freed: down"]);
        let mut r = r;
        r.releases.push(release(false));
        r.releases.push(Release {
            error: Some("refused".into()),
            ..release(false)
        });
        assert_eq!(
            failure_lines(&r),
            [
                "2 allocations on d:6714 not freed: down",
                "allocation d:6714/0 not freed: refused"
            ]
        );
    }
}
