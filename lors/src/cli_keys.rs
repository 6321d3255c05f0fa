//! The `lors` commands on key-wrapping keys and sharing (`keys init`,
//! `keys show`, `keys set-escrow`, `share`, `unshare`): argument parsing
//! and output. Part of the `lors` binary; the work is done by
//! [`lors::keys`]. See docs/lors.md, "Keys and sharing".

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use lors::config::Config;
use lors::credentials::Error;
use lors::crypto::{self, KeyPair, PublicKey};
use lors::exit;
use lors::keys::{self, InitOutcome, ShareOutcome, UnshareOutcome};
use lors::metadata::Rights;
use serde::Serialize;

use crate::cli_files::{print_json, show, MdmArgs};

/// Longest public key file read.
const MAX_PUBLIC_KEY_FILE: u64 = 4096;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make your key-wrapping key pair (X25519) and register its public key
    /// at the metadata manager; with an existing key file, register it again
    Init(KeysInitArgs),
    /// Show your public key and whether the metadata manager has it
    Show(KeysShowArgs),
    /// VO admins: set the VO's escrow (recovery) public key, from a file or
    /// a new key pair
    SetEscrow(SetEscrowArgs),
}

#[derive(Args)]
pub struct KeysInitArgs {
    /// Replace an existing key file (it is moved to FILE.old-<time>);
    /// versions wrapped for the old key need the old file
    #[arg(long)]
    force: bool,
    /// The private key file (default: $LORS_KEY_FILE, else `key_file` in the
    /// config file, else ~/.config/lors/key.pem)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct KeysShowArgs {
    /// The private key file (default: $LORS_KEY_FILE, else `key_file` in the
    /// config file, else ~/.config/lors/key.pem)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Skip asking the metadata manager (it is asked only when one is
    /// configured)
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["public_key_file", "out"])))]
pub struct SetEscrowArgs {
    /// VO (default: your proxy's)
    #[arg(long)]
    vo: Option<String>,
    /// File holding the escrow public key (`x25519 <base64>`)
    #[arg(long, value_name = "FILE")]
    public_key_file: Option<PathBuf>,
    /// Make a new escrow key pair and write its private key to FILE (mode
    /// 0600; must not exist). Keep it offline: it decrypts every file of
    /// the VO written from now on
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct ShareArgs {
    /// The file: /VO/dir/name
    path: String,
    /// Who to share it with: a member's NAME@VO (e.g. alice@vo1, as `lors
    /// whoami` shows it) or user:VO_ID@VO (they must have run `lors keys
    /// init`)
    recipient: String,
    /// Rights to add to their ACL entry (letters of rwda)
    #[arg(long, value_name = "RIGHTS", default_value = "r", value_parser = parse_rights)]
    rights: String,
    /// Your private key file (default: $LORS_KEY_FILE, else `key_file` in the
    /// config file, else ~/.config/lors/key.pem)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(flatten)]
    mdm: MdmArgs,
}

#[derive(Args)]
pub struct UnshareArgs {
    /// The file: /VO/dir/name
    path: String,
    /// Who to take it back from: NAME@VO or user:VO_ID@VO
    recipient: String,
    #[command(flatten)]
    mdm: MdmArgs,
}

/// clap's parser of `--rights`: some of `rwda`, canonical order.
pub fn parse_rights(s: &str) -> Result<String, String> {
    let r: Rights = s.parse()?;
    if r.is_empty() {
        return Err("give at least one right (e.g. r)".into());
    }
    Ok(r.to_string())
}

/// The key file: the flag, else the configuration's (`$LORS_KEY_FILE`,
/// else the file's `key_file`), else the default.
fn key_path(flag: Option<PathBuf>, config: &Config) -> PathBuf {
    flag.or_else(|| config.key_file.clone())
        .unwrap_or_else(keys::default_key_path)
}

pub fn keys(c: KeysCommand) -> Result<u8, Error> {
    match c {
        KeysCommand::Init(a) => init(a),
        KeysCommand::Show(a) => show_key(a),
        KeysCommand::SetEscrow(a) => set_escrow(a),
    }
}

fn init(a: KeysInitArgs) -> Result<u8, Error> {
    let config = Config::load()?;
    let path = key_path(a.key, &config);
    let s = a.mdm.connect_with(config)?;
    let out = crate::runtime()?.block_on(keys::init(&s.client, &path, a.force))?;
    if let Some(old) = &out.replaced_registered {
        eprintln!(
            "lors: warning: the metadata manager had another public key for you ({old}); \
             versions wrapped for it need the key file that goes with it"
        );
    }
    show(s.json, &out, format_init)
}

pub fn format_init(o: &InitOutcome) -> String {
    let mut out = String::new();
    if o.created {
        let _ = writeln!(out, "new key file {} (mode 0600)", o.path.display());
    } else {
        let _ = writeln!(
            out,
            "key file {} exists: its public key is registered again (--force makes a new one)",
            o.path.display()
        );
    }
    if let Some(p) = &o.previous_file {
        let _ = writeln!(out, "old key file moved to {}", p.display());
    }
    let _ = writeln!(out, "public key: {}", o.public_key);
    out
}

#[derive(Serialize)]
struct ShowJson {
    key_file: PathBuf,
    public_key: String,
    /// Whether the metadata manager has this key; absent when not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    registered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
}

fn show_key(a: KeysShowArgs) -> Result<u8, Error> {
    let config = Config::load()?;
    let path = key_path(a.key, &config);
    let pair = keys::load(&path)?;
    let public_key = pair.public().to_text();
    let mut j = ShowJson {
        key_file: path,
        public_key,
        registered: None,
        registered_key: None,
        principal: None,
    };
    let json = a.mdm.json;
    if !a.offline && a.mdm.url(&config).is_some() {
        let s = a.mdm.connect_with(config)?;
        let w = crate::runtime()?.block_on(s.client.whoami())?;
        j.registered = Some(keys::check_registered(&pair, &w).is_ok());
        j.registered_key = w.public_key;
        j.principal = Some(w.principal);
    }
    if json {
        print_json(&j)?;
    } else {
        print!("{}", format_show(&j));
    }
    Ok(exit::OK)
}

fn format_show(j: &ShowJson) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "key file  : {}", j.key_file.display());
    let _ = writeln!(out, "public key: {}", j.public_key);
    let state = match (j.registered, &j.registered_key) {
        (None, _) => "not asked (no metadata manager configured, or --offline)".to_owned(),
        (Some(true), _) => "yes".to_owned(),
        (Some(false), None) => "no: none registered (run `lors keys init`)".to_owned(),
        (Some(false), Some(k)) => {
            format!("no: another key is registered ({k}); `lors keys init` registers this one")
        }
    };
    let _ = write!(out, "registered: {state}");
    if let Some(p) = &j.principal {
        let _ = write!(out, " (for {p})");
    }
    out.push('\n');
    out
}

fn read_public_key_file(path: &Path) -> Result<PublicKey, Error> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut text = String::new();
    f.take(MAX_PUBLIC_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_PUBLIC_KEY_FILE {
        return Err(Error::Usage(format!(
            "{} is too large for a public key",
            path.display()
        )));
    }
    PublicKey::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

#[derive(Serialize)]
struct EscrowJson {
    vo: String,
    recipient: String,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_file: Option<PathBuf>,
}

fn set_escrow(a: SetEscrowArgs) -> Result<u8, Error> {
    // Check the arguments before making anything.
    enum Source {
        File(PublicKey),
        New(PathBuf),
    }
    let source = match (&a.public_key_file, a.out) {
        (Some(f), _) => Source::File(read_public_key_file(f)?),
        (None, Some(out)) => {
            if std::fs::symlink_metadata(&out).is_ok() {
                return Err(Error::Usage(format!(
                    "{} exists: give a new file for the escrow private key",
                    out.display()
                )));
            }
            Source::New(out)
        }
        (None, None) => {
            return Err(Error::Usage(
                "give --public-key-file FILE or --out FILE".into(),
            ))
        }
    };
    let s = a.mdm.connect()?;
    let rt = crate::runtime()?;
    let vo = match a.vo {
        Some(v) => v,
        None => rt.block_on(s.client.whoami())?.vo,
    };
    let (public, private_key_file) = match source {
        Source::File(p) => (p, None),
        Source::New(out) => {
            let pair = KeyPair::generate().map_err(|e| Error::Local(e.to_string()))?;
            crypto::write_private_key(&out, &pair).map_err(|e| Error::Local(e.to_string()))?;
            (*pair.public(), Some(out))
        }
    };
    let text = public.to_text();
    let set = rt.block_on(s.client.set_escrow_key(&vo, &text))?;
    let j = EscrowJson {
        vo,
        recipient: set.recipient,
        public_key: text,
        private_key_file,
    };
    show(s.json, &j, |j| {
        let mut out = String::new();
        let _ = writeln!(out, "escrow key of VO {} set: {}", j.vo, j.public_key);
        if let Some(f) = &j.private_key_file {
            let _ = writeln!(
                out,
                "private key in {} (mode 0600): keep it offline, it decrypts every file of the VO written from now on",
                f.display()
            );
        }
        let _ = writeln!(
            out,
            "versions written before now have no key wrapped for it"
        );
        out
    })
}

pub fn share(a: ShareArgs) -> Result<u8, Error> {
    let config = Config::load()?;
    let path = key_path(a.key, &config);
    let me = keys::load(&path)?;
    let s = a.mdm.connect_with(config)?;
    let o = crate::runtime()?.block_on(async {
        let recipient = lors::names::principal(&s.client, &a.recipient).await?;
        keys::share(&s.client, &me, &a.path, &recipient, &a.rights).await
    })?;
    for (v, why) in &o.skipped {
        eprintln!("lors: version {v} not shared: {why}");
    }
    show(s.json, &o, format_share)
}

pub fn format_share(o: &ShareOutcome) -> String {
    let keyed: Vec<String> = o
        .versions
        .iter()
        .filter(|v| v.key_added)
        .map(|v| v.version.to_string())
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "shared {} with {} (rights now {})",
        o.path, o.recipient, o.rights
    );
    if keyed.is_empty() {
        out.push_str("; not encrypted, no keys to share");
    } else {
        let _ = write!(
            out,
            "; data key of version{} {} wrapped for them",
            if keyed.len() == 1 { "" } else { "s" },
            keyed.join(", ")
        );
    }
    out.push('\n');
    out
}

pub fn unshare(a: UnshareArgs) -> Result<u8, Error> {
    let s = a.mdm.connect()?;
    let o = crate::runtime()?.block_on(async {
        let recipient = lors::names::principal(&s.client, &a.recipient).await?;
        keys::unshare(&s.client, &a.path, &recipient).await
    })?;
    if !o.other_entries.is_empty() {
        eprintln!(
            "lors: note: these ACL entries may still grant {} rights: {}",
            o.recipient,
            o.other_entries.join(" ")
        );
    }
    show(s.json, &o, format_unshare)
}

pub fn format_unshare(o: &UnshareOutcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "unshared {} with {}: ACL entry {}, {} wrapped key(s) removed",
        o.path,
        o.recipient,
        if o.acl_entry_removed {
            "removed"
        } else {
            "not there"
        },
        o.keys_removed
    );
    let _ = writeln!(
        out,
        "data keys they already fetched stay known to them: upload a new version for a fresh key"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct K {
        #[command(subcommand)]
        keys: KeysCommand,
    }

    #[derive(Parser)]
    struct S {
        #[command(flatten)]
        share: ShareArgs,
    }

    #[test]
    fn arguments() {
        let k = K::try_parse_from(["t", "init", "--force", "--key", "/k.pem"]).unwrap();
        let KeysCommand::Init(a) = k.keys else {
            panic!("not init")
        };
        assert!(a.force);
        assert_eq!(a.key.as_deref(), Some(Path::new("/k.pem")));
        assert!(K::try_parse_from(["t", "set-escrow"]).is_err());
        assert!(
            K::try_parse_from(["t", "set-escrow", "--out", "a", "--public-key-file", "b"]).is_err()
        );
        assert!(K::try_parse_from(["t", "set-escrow", "--vo", "vo1", "--out", "a"]).is_ok());
        let s = S::try_parse_from(["t", "/vo1/f", "user:u2@vo1"]).unwrap();
        assert_eq!(s.share.rights, "r");
        let s = S::try_parse_from(["t", "/vo1/f", "user:u2@vo1", "--rights", "wr"]).unwrap();
        assert_eq!(s.share.rights, "rw");
        assert!(S::try_parse_from(["t", "/vo1/f", "user:u2@vo1", "--rights", "-"]).is_err());
        assert!(S::try_parse_from(["t", "/vo1/f", "user:u2@vo1", "--rights", "x"]).is_err());
    }

    #[test]
    fn key_path_precedence() {
        let mut c = Config::default();
        assert_eq!(key_path(Some("/flag".into()), &c), PathBuf::from("/flag"));
        c.key_file = Some("/conf".into());
        assert_eq!(key_path(None, &c), PathBuf::from("/conf"));
        assert_eq!(key_path(Some("/flag".into()), &c), PathBuf::from("/flag"));
    }

    #[test]
    fn outputs() {
        let j = ShowJson {
            key_file: "/k".into(),
            public_key: "x25519 AA".into(),
            registered: Some(false),
            registered_key: None,
            principal: Some("user:u1@vo1".into()),
        };
        let t = format_show(&j);
        assert!(t.contains("registered: no: none registered"), "{t}");
        let o = ShareOutcome {
            path: "/vo1/f".into(),
            recipient: "user:u2@vo1".into(),
            rights: "r".into(),
            versions: vec![
                keys::SharedVersion {
                    version: 1,
                    key_added: true,
                },
                keys::SharedVersion {
                    version: 2,
                    key_added: true,
                },
            ],
            skipped: vec![],
        };
        assert_eq!(
            format_share(&o),
            "shared /vo1/f with user:u2@vo1 (rights now r); data key of versions 1, 2 wrapped for them\n"
        );
    }
}
