//! `online-ca admin`: membership, groups, local users and the audit log,
//! straight on the database and files named by the configuration.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// VO members: which identity belongs to which VO with which VO ID.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// VO groups.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// The local users file (method `local`).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// The audit log of issued certificates and attributes.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Maintenance grants (docs/maintenance.md): list, revoke.
    Maintenance {
        #[command(subcommand)]
        cmd: MaintenanceCmd,
    },
    /// Pseudonyms of pseudonymous VOs (abuse handling): who a pseudonym
    /// is, and a member's pseudonym.
    Pseudonym {
        #[command(subcommand)]
        cmd: PseudonymCmd,
    },
    /// The allow-list of service hosts (depots, L-Bones, metadata
    /// managers) that get host certificates: allow, list, revoke.
    Hosts {
        #[command(subcommand)]
        cmd: HostsCmd,
    },
    /// Prints the identity (`cert:<issuer DN>|<subject DN>`) of a PEM
    /// certificate, for `member add --identity`.
    CertIdentity {
        #[arg(long)]
        cert: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Adds an identity to a VO: a new VO ID (UUID) unless it has one, or
    /// with --vo-id, linked to an existing VO ID (a second certificate or
    /// login method of the same user) or to a former one (a returning
    /// member gets their files back; see `member list --former`).
    Add {
        #[arg(long)]
        vo: String,
        /// `local:<user>`, `radius:<user>`, `oidc:<issuer>#<sub>` or
        /// `cert:<issuer DN>|<subject DN>`.
        #[arg(long)]
        identity: String,
        #[arg(long)]
        vo_id: Option<String>,
        /// Groups the user joins (created when missing); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Removes an identity (and the certificates linked from it at login).
    Remove {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        identity: String,
    },
    /// Lists the identities of a VO; with --former, the former VO IDs
    /// (every identity removed) instead.
    List {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        former: bool,
    },
    /// Lists the certificates members asked to link to their VO ID
    /// (`lors link-cert`) that wait for approval (VOs with
    /// `link_approval`); --all: decided ones too.
    Pending {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approves a pending link request: the certificate becomes an
    /// identity of the member's VO ID.
    ApproveLink {
        #[arg(long)]
        vo: String,
        /// The request ID (`member pending`).
        #[arg(long)]
        request: String,
    },
    /// Denies a pending link request.
    DenyLink {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        request: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Creates a group (its group VO ID is a UUID).
    Add {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        name: String,
    },
    /// Deletes a group.
    Remove {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        name: String,
    },
    /// Lists the groups of a VO.
    List {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        json: bool,
    },
    /// Group membership of users (by VO ID).
    Member {
        #[command(subcommand)]
        cmd: GroupMemberCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupMemberCmd {
    Add {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        vo_id: String,
    },
    Remove {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        vo_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Adds or replaces a user; the password is read from stdin (first line).
    Add {
        #[arg(long)]
        user: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Removes a user.
    Remove {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCmd {
    /// Lists the maintenance grants of a VO (or of one member), newest first.
    List {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        vo_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revokes one grant (--grant), or every grant of a member (--vo and
    /// --vo-id). A revoked grant gets no more maintenance proxies; those
    /// already issued expire within the CA's maintenance.proxy_lifetime.
    Revoke {
        #[arg(long, conflicts_with_all = ["vo", "vo_id"], required_unless_present = "vo_id")]
        grant: Option<String>,
        #[arg(long, requires = "vo_id")]
        vo: Option<String>,
        #[arg(long, requires = "vo")]
        vo_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PseudonymCmd {
    /// Who a pseudonym is: its VO, VO ID and every identity of that VO ID.
    Lookup {
        /// `pseudonym:<p>` (a certificate's CN) or `<p>`.
        pseudonym: String,
        #[arg(long)]
        json: bool,
    },
    /// The pseudonym of an identity (`local:<user>`, `radius:<user>`, ...)
    /// in a VO; none until its first login in a pseudonymous VO.
    Of {
        #[arg(long)]
        vo: String,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// Puts a host on the allow-list (or renews its entry: new names, a new
    /// token; a revoked host is allowed again, and certificates of its
    /// earlier enrollment no longer renew) and prints its one-time
    /// enrollment token.
    Allow {
        /// The host's DNS name: the certificate's CN and first name.
        name: String,
        /// Which service it runs: depot, lbone or mdm.
        #[arg(long)]
        role: String,
        /// More DNS names the host may have (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses the host may have (repeatable).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// How long the token stays usable (default: hosts.token_validity
        /// of the configuration, 7 days).
        #[arg(long)]
        token_valid: Option<ibp_service::units::Seconds>,
        #[arg(long)]
        json: bool,
    },
    /// Lists the hosts with their state and certificate expiry.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revokes a host: no enrollment or renewal until it is allowed again.
    /// Certificates already issued stay valid until they expire (the
    /// services check no revocation list): hosts.lifetime bounds that.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Lists issued certificates and attributes, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

const PREFIXES: [&str; 4] = ["local:", "radius:", "oidc:", "cert:"];

fn check_identity(id: &str) -> anyhow::Result<()> {
    if !PREFIXES
        .iter()
        .any(|p| id.starts_with(p) && id.len() > p.len())
    {
        bail!("identity {id:?} must be local:<user>, radius:<user>, oidc:<issuer>#<sub> or cert:<issuer DN>|<subject DN>");
    }
    if id.chars().any(char::is_control) || id.len() > 1024 {
        bail!("identity {id:?}: control characters or too long");
    }
    Ok(())
}

fn check_text(what: &str, s: &str) -> anyhow::Result<()> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        bail!("{what} {s:?}: empty, over 256 bytes or with control characters");
    }
    Ok(())
}

fn check_vo(cfg: &Config, vo: &str) -> anyhow::Result<()> {
    if !crate::ca::valid_vo_name(vo) || !cfg.dir.join("aa").join(format!("{vo}.pem")).exists() {
        bail!(
            "VO {vo:?} is not served by this CA (no {}); add it with online-ca init --vo",
            cfg.dir.join("aa").join(format!("{vo}.pem")).display()
        );
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds.
pub use ibp_service::units::format_rfc3339 as utc;

pub async fn run(config: &Path, cmd: AdminCmd) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    match cmd {
        AdminCmd::User { cmd } => {
            let users = cfg
                .local
                .as_ref()
                .map(|l| l.users_file.clone())
                .context("the configuration has no [local] users_file")?;
            match cmd {
                UserCmd::Add { user, .. } => {
                    let mut input = String::new();
                    std::io::stdin()
                        .take(4096)
                        .read_to_string(&mut input)
                        .context("read the password from stdin")?;
                    let pw = input.lines().next().unwrap_or("");
                    let replaced = crate::local::set_user(&users, &user, pw.as_bytes())?;
                    println!(
                        "{} user {user} in {}",
                        if replaced { "updated" } else { "added" },
                        users.display()
                    );
                }
                UserCmd::Remove { user } => {
                    crate::local::remove_user(&users, &user)?;
                    println!("removed user {user} from {}", users.display());
                }
            }
            return Ok(());
        }
        AdminCmd::CertIdentity { cert } => {
            let der = crate::ca::read_pem_cert(&cert)?;
            let (_, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| anyhow::anyhow!("parse {}: {e}", cert.display()))?;
            println!("{}", crate::ca::cert_identity(&c));
            return Ok(());
        }
        _ => {}
    }
    let store = Store::open(&cfg.database_url()).await?;
    let r = run_db(&cfg, &store, cmd).await;
    store.close().await;
    r
}

async fn run_db(cfg: &Config, store: &Store, cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Member { cmd } => match cmd {
            MemberCmd::Add {
                vo,
                identity,
                vo_id,
                groups,
            } => {
                check_vo(cfg, &vo)?;
                check_identity(&identity)?;
                for g in &groups {
                    check_text("group name", g)?;
                }
                let added = store
                    .member_add(&vo, &identity, vo_id.as_deref(), &groups)
                    .await?;
                for g in &added.new_groups {
                    println!("created group {g} in VO {vo}");
                }
                let (verb, prep) = match (added.restored, added.new_identity) {
                    (true, _) => ("restored", "to"),
                    (false, true) => ("added", "to"),
                    (false, false) => ("kept", "in"),
                };
                println!(
                    "{verb} {identity} {prep} VO {vo} with VO ID {}",
                    added.vo_id
                );
            }
            MemberCmd::Remove { vo, identity } => {
                let removed = store.member_remove(&vo, &identity).await?;
                for (id, vo_id) in &removed.identities {
                    println!("removed {id} (VO ID {vo_id}) from VO {vo}");
                }
                for vo_id in &removed.former_vo_ids {
                    println!(
                        "VO ID {vo_id} has no identity left in VO {vo}; \
                         `member add --vo {vo} --identity ... --vo-id {vo_id}` restores it"
                    );
                    // The CA calls no other service: the proxy the member
                    // holds stays valid until it expires unless the other
                    // two refuse it (docs/vo-admin.md, "Removing a member").
                    println!(
                        "the proxy they hold stays valid until it expires; to refuse it now, as a VO admin:\n  \
                         lors members remove {vo_id} --vo {vo}    (metadata manager and L-Bone)"
                    );
                }
            }
            MemberCmd::Pending { vo, all, json } => {
                check_vo(cfg, &vo)?;
                crate::link::admin_pending(store, &vo, all, json).await?;
            }
            MemberCmd::ApproveLink { vo, request } => {
                check_vo(cfg, &vo)?;
                crate::link::admin_decide(store, &vo, &request, true).await?;
            }
            MemberCmd::DenyLink { vo, request } => {
                check_vo(cfg, &vo)?;
                crate::link::admin_decide(store, &vo, &request, false).await?;
            }
            MemberCmd::List {
                vo,
                json,
                former: true,
            } => {
                let rows = store.former_list(&vo).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for r in rows {
                        println!(
                            "{}\tremoved {} (last identity {})",
                            r.vo_id,
                            utc(r.removed_at),
                            r.last_identity
                        );
                    }
                }
            }
            MemberCmd::List {
                vo,
                json,
                former: false,
            } => {
                let rows = store.member_list(&vo).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for r in rows {
                        let via = r
                            .linked_from
                            .map(|f| format!(" (linked at login of {f})"))
                            .unwrap_or_default();
                        println!("{}\t{}\t[{}]{via}", r.vo_id, r.identity, r.groups.join(","));
                    }
                }
            }
        },
        AdminCmd::Group { cmd } => match cmd {
            GroupCmd::Add { vo, name } => {
                check_vo(cfg, &vo)?;
                check_text("group name", &name)?;
                let (id, created) = store.group_add(&vo, &name).await?;
                println!(
                    "{} group {name} in VO {vo} with group VO ID {id}",
                    if created { "created" } else { "kept" }
                );
            }
            GroupCmd::Remove { vo, name } => {
                store.group_remove(&vo, &name).await?;
                println!("removed group {name} from VO {vo}");
            }
            GroupCmd::List { vo, json } => {
                let rows = store.group_list(&vo).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for g in rows {
                        println!("{}\t{}", g.id, g.name);
                    }
                }
            }
            GroupCmd::Member { cmd } => match cmd {
                GroupMemberCmd::Add { vo, name, vo_id } => {
                    store.group_member(&vo, &name, &vo_id, true).await?;
                    println!("added VO ID {vo_id} to group {name} of VO {vo}");
                }
                GroupMemberCmd::Remove { vo, name, vo_id } => {
                    store.group_member(&vo, &name, &vo_id, false).await?;
                    println!("removed VO ID {vo_id} from group {name} of VO {vo}");
                }
            },
        },
        AdminCmd::Audit {
            cmd: AuditCmd::List { json },
        } => {
            let rows = store.audit_list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("issued_at\tkind\tvo\tvo_id\tserial\tlifetime\tnot_after\tidentity\tsubject\tremote");
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        utc(r.issued_at),
                        r.kind,
                        r.vo,
                        r.vo_id,
                        r.serial,
                        r.lifetime,
                        utc(r.not_after),
                        r.identity,
                        r.subject,
                        r.remote
                    );
                }
            }
        }
        AdminCmd::Maintenance { cmd } => maintenance(store, cmd).await?,
        AdminCmd::Pseudonym { cmd } => pseudonym(cfg, store, cmd).await?,
        AdminCmd::Hosts { cmd } => hosts(cfg, store, cmd).await?,
        AdminCmd::User { .. } | AdminCmd::CertIdentity { .. } => {}
    }
    Ok(())
}

async fn hosts(cfg: &Config, store: &Store, cmd: HostsCmd) -> anyhow::Result<()> {
    use crate::ca::{valid_dns_name, San};
    use crate::store::Role;
    let now = ibp_auth::unix_now();
    match cmd {
        HostsCmd::Allow {
            name,
            role,
            dns,
            ips,
            token_valid,
            json,
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role {role:?}: depot, lbone or mdm"))?;
            let mut names = Vec::new();
            for d in std::iter::once(&name).chain(&dns) {
                let d = d.to_ascii_lowercase();
                if !valid_dns_name(&d) {
                    bail!("{d:?} is not a host name (lower-case letters, digits, hyphens, dots; for an address use --ip)");
                }
                names.push(San::Dns(d));
            }
            names.extend(ips.into_iter().map(San::Ip));
            names.dedup();
            let names: Vec<String> = names.iter().map(San::to_string).collect();
            let name = name.to_ascii_lowercase();
            let valid = token_valid.unwrap_or(cfg.hosts.token_validity).as_i64();
            if valid <= 0 {
                bail!("--token-valid must be positive");
            }
            let (token, hash) = crate::maintenance::new_token()?;
            let h = store
                .host_allow(&name, role, &names, &hash, now.saturating_add(valid))
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "name": h.name,
                        "role": h.role,
                        "names": h.names,
                        "token": token,
                        "token_expires_at": h.token_expires_at,
                    }))?
                );
            } else {
                println!(
                    "allowed host {} ({}): {}",
                    h.name,
                    h.role.name(),
                    h.names.join(", ")
                );
                println!(
                    "enrollment token (shown once; usable once, until {}):",
                    utc(h.token_expires_at)
                );
                println!("{token}");
            }
        }
        HostsCmd::List { json } => {
            let rows = store.host_list().await?;
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|h| {
                        let mut v = serde_json::to_value(h).unwrap_or_default();
                        v["state"] = h.state(now).name().into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for h in rows {
                    let cert = h
                        .cert_not_after
                        .map(|t| format!("certificate until {}", utc(t)))
                        .unwrap_or_else(|| "no certificate".into());
                    println!(
                        "{}	{}	{}	{}	{}",
                        h.name,
                        h.role.name(),
                        h.state(now).name(),
                        cert,
                        h.names.join(" ")
                    );
                }
            }
        }
        HostsCmd::Revoke { name } => {
            let name = name.to_ascii_lowercase();
            if !store.host_revoke(&name).await? {
                bail!("no host {name} on the allow-list");
            }
            println!("revoked host {name}: it can neither enroll nor renew until allowed again");
        }
    }
    Ok(())
}

async fn pseudonym(cfg: &Config, store: &Store, cmd: PseudonymCmd) -> anyhow::Result<()> {
    match cmd {
        PseudonymCmd::Lookup { pseudonym, json } => {
            let Some(p) = crate::store::parse_pseudonym(&pseudonym) else {
                bail!("{pseudonym:?} is not a pseudonym (pseudonym:<16 characters a-z, 2-7>)");
            };
            let Some(row) = store.pseudonym_lookup(p).await? else {
                bail!("no member has the pseudonym {p}");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                println!(
                    "{}{}\tVO {}\tVO ID {}\tsince {}",
                    crate::store::CN_PREFIX,
                    row.pseudonym,
                    row.vo,
                    row.vo_id,
                    utc(row.created_at)
                );
                if row.identities.is_empty() {
                    println!("(no identity left: a former VO ID, see member list --former)");
                }
                for i in &row.identities {
                    println!("{i}");
                }
            }
        }
        PseudonymCmd::Of { vo, identity, json } => {
            check_vo(cfg, &vo)?;
            let Some(m) = store.membership(&vo, &identity).await? else {
                bail!("{identity} is not a member of VO {vo}");
            };
            let p = store.pseudonym_of(&vo, &m.vo_id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "vo": vo,
                        "vo_id": m.vo_id,
                        "identity": identity,
                        "pseudonym": p,
                    }))?
                );
            } else {
                match p {
                    Some(p) => println!("{}{p}", crate::store::CN_PREFIX),
                    None => {
                        let off = if cfg.pseudonymous(&vo) {
                            String::new()
                        } else {
                            format!(", and VO {vo} is not pseudonymous ([vos.{vo}] pseudonymous = true)")
                        };
                        bail!(
                            "{identity} (VO ID {}) has no pseudonym in VO {vo} yet: one is drawn at its first login{off}",
                            m.vo_id
                        )
                    }
                }
            }
        }
    }
    Ok(())
}

async fn maintenance(store: &Store, cmd: MaintenanceCmd) -> anyhow::Result<()> {
    let now = ibp_auth::unix_now();
    match cmd {
        MaintenanceCmd::List { vo, vo_id, json } => {
            let rows = store.grant_list(&vo, vo_id.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("grant\tstate\tvo_id\tidentity\tcreated\texpires\tlast_used\trevoked_by");
                for g in rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        g.id,
                        g.state(now).name(),
                        g.vo_id,
                        g.identity,
                        utc(g.created_at),
                        utc(g.expires_at),
                        g.last_used_at.map(utc).unwrap_or_else(|| "-".into()),
                        g.revoked_by.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        MaintenanceCmd::Revoke {
            grant: Some(grant), ..
        } => {
            if store.grant_revoke(&grant, "operator", now).await? {
                println!("revoked maintenance grant {grant}");
            } else {
                bail!("no maintenance grant {grant} that is not revoked already");
            }
        }
        MaintenanceCmd::Revoke {
            vo: Some(vo),
            vo_id: Some(vo_id),
            ..
        } => {
            let n = store
                .grant_revoke_member(&vo, &vo_id, "operator", now)
                .await?;
            println!("revoked {n} maintenance grant(s) of VO ID {vo_id} in VO {vo}");
        }
        MaintenanceCmd::Revoke { .. } => bail!("give --grant ID, or --vo VO and --vo-id ID"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn identities() {
        assert!(check_identity("local:alice").is_ok());
        assert!(check_identity("cert:CN=a|CN=b").is_ok());
        assert!(check_identity("alice").is_err());
        assert!(check_identity("local:").is_err());
    }
}
