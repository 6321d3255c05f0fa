//! `lors stat`, and `lors check` (`stat --check` of one file or, with
//! `--all`, of every file under a directory, with the maintenance
//! credential when the proxy has expired).

use std::path::PathBuf;

use clap::Args;
use exnode::Exnode;
use lors::credentials::Error;
use lors::exit;
use lors::files::{self, Grid, Provenance, Source};
use lors::transfer::maintain::{Health, State};
use serde::Serialize;

use super::maintain::{maintenance_grid, session, tree};
use super::{config, human_size, print_json, GridArgs, DEFAULT_THREADS};

#[derive(Args)]
pub struct StatArgs {
    /// The file or directory in the metadata manager
    #[arg(required_unless_present = "xnd")]
    path: Option<String>,
    /// An exNode file instead
    #[arg(long, value_name = "FILE", conflicts_with = "path")]
    xnd: Option<PathBuf>,
    /// Physical view: every mapping with its depot, range, share and expiry
    #[arg(long)]
    mappings: bool,
    /// Read every mapping back and verify it (liveness and integrity)
    #[arg(long)]
    check: bool,
    /// Save the file's exNode, as the metadata manager signed it, to FILE
    /// (for `lors download --xnd FILE` elsewhere, e.g. in a grid job)
    #[arg(long, value_name = "FILE", requires = "path", conflicts_with_all = ["xnd", "mappings", "check"])]
    export: Option<PathBuf>,
    /// With --export: an older version
    #[arg(long, value_name = "N", requires = "export")]
    version: Option<u64>,
    #[command(flatten)]
    grid: GridArgs,
}

/// `lors stat`: the metadata manager's view, or with `--mappings` /
/// `--check` / `--xnd` the exNode's physical view.
pub fn stat(a: StatArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    if let (Some(dest), Some(path)) = (&a.export, &a.path) {
        return export(&grid, path, a.version, dest, &a.grid);
    }
    let physical = a.mappings || a.check || a.xnd.is_some();
    if !physical {
        return stat_entry(&grid, &a);
    }
    let src = match (&a.path, &a.xnd) {
        (Some(p), None) => Source::Path {
            path: p.clone(),
            version: None,
        },
        (None, Some(f)) => Source::Xnd(f.clone()),
        _ => return Err(Error::Usage("give a path or --xnd FILE".into())),
    };
    let rt = crate::runtime_mt()?;
    let (x, health, signature) = if a.check {
        let (x, h) = rt.block_on(files::check(&grid, &src, DEFAULT_THREADS))?;
        (x, Some(h), None)
    } else {
        let o = rt.block_on(files::open(&grid, &src, false))?;
        (o.exnode, None, Some(o.signature))
    };
    if let (Some(Provenance::Unsigned), Some(f), false) = (&signature, &a.xnd, a.grid.quiet) {
        eprintln!("{}", unsigned_note(f));
    }
    if a.grid.json {
        print_json(&view(&x, health.as_ref(), signature.as_ref()))?;
    } else {
        print_mappings(&x, health.as_deref());
        if let Some(s) = &signature {
            println!("exNode {s}");
        }
    }
    let bad = health
        .as_ref()
        .is_some_and(|h| h.iter().any(|h| h.state != State::Ok));
    Ok(if bad { exit::PARTIAL } else { exit::OK })
}

/// What `lors` says on standard error of an unsigned exNode file.
pub fn unsigned_note(f: &std::path::Path) -> String {
    format!(
        "lors: {}: unsigned exNode (no metadata-manager signature): nothing vouches for its mappings",
        f.display()
    )
}

/// `lors stat --export FILE PATH`: the signed exNode saved.
fn export(
    grid: &Grid,
    path: &str,
    version: Option<u64>,
    dest: &std::path::Path,
    g: &GridArgs,
) -> Result<u8, Error> {
    let rt = crate::runtime()?;
    let e = rt.block_on(files::export(grid, path, version, dest))?;
    if g.json {
        print_json(&e)?;
    } else if !g.quiet {
        println!(
            "exported version {} of {} to {}{}: {}",
            e.version,
            e.path,
            e.exnode,
            e.key_file
                .as_ref()
                .map(|k| format!(" (data key wrapped for you: {k})"))
                .unwrap_or_default(),
            e.signature
        );
    }
    Ok(exit::OK)
}

/// The metadata manager's view of a file or directory.
fn stat_entry(grid: &Grid, a: &StatArgs) -> Result<u8, Error> {
    let path = a.path.clone().unwrap_or_default();
    if grid.mdm.is_none() && grid.credential.is_none() {
        return Err(Error::NoProxy(lors::credentials::default_proxy_path()));
    }
    let mdm = grid.mdm.as_ref().ok_or_else(|| {
        Error::Usage(
            "which metadata manager? give --mdm URL or set LORS_METADATA_URL (and a proxy and trust directory)".into(),
        )
    })?;
    let rt = crate::runtime()?;
    let e = rt.block_on(mdm.stat(&path))?;
    // A file's versions too (a manager without the route: none).
    let versions = if e.kind == lors::metadata::EntryKind::File {
        rt.block_on(mdm.versions(&path)).ok()
    } else {
        None
    };
    if a.grid.json {
        #[derive(Serialize)]
        struct StatJson<'a> {
            #[serde(flatten)]
            entry: &'a lors::metadata::EntryInfo,
            #[serde(skip_serializing_if = "Option::is_none")]
            version_list: Option<&'a lors::metadata::Versions>,
        }
        print_json(&StatJson {
            entry: &e,
            version_list: versions.as_ref(),
        })?;
    } else {
        let st = crate::cli_files::Style::local(false);
        print!("{}", crate::cli_files::format_stat(&e, &st));
        if let Some(v) = &versions {
            print!("{}", crate::cli_files::version_table(&v.versions, &st));
        }
    }
    Ok(exit::OK)
}

#[derive(Args)]
pub struct CheckArgs {
    /// The file (with --all: the directory) in the metadata manager
    path: String,
    /// PATH is a directory: check every file under it
    #[arg(long)]
    all: bool,
    /// Mappings probed at once [default: 4]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    grid: GridArgs,
}

/// One file's verdict.
#[derive(Serialize)]
struct Checked {
    path: String,
    good: bool,
    mappings: usize,
    /// The earliest expiry of its allocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    /// Mappings not read back intact.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bad: Vec<Health>,
    /// Why the file could not be checked at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `lors check [--all] PATH`: every mapping of every file read back and
/// verified; a summary of good and bad files; exit 11 if any is bad.
pub fn check(a: CheckArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let threads = a.threads.unwrap_or(DEFAULT_THREADS).max(1);
    let rt = crate::runtime_mt()?;
    let mut session = session(&a.grid, cfg);
    let paths = if a.all {
        rt.block_on(tree(&mut session, &a.path, a.grid.quiet))?
    } else {
        maintenance_grid(&rt, &mut session, a.grid.quiet)?;
        vec![a.path.clone()]
    };
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        // A credential that cannot be had stops the run (exit 1 or 4).
        let grid = rt.block_on(session.grid())?.clone();
        let src = Source::Path {
            path: p.clone(),
            version: None,
        };
        let c = match rt.block_on(files::check(&grid, &src, threads)) {
            Ok((x, h)) => {
                let bad: Vec<Health> = h.into_iter().filter(|h| h.state != State::Ok).collect();
                Checked {
                    path: p,
                    good: bad.is_empty(),
                    mappings: x.mappings.len(),
                    expires: x.mappings.iter().filter_map(|m| m.expires).min(),
                    bad,
                    error: None,
                }
            }
            Err(e) => Checked {
                path: p,
                good: false,
                mappings: 0,
                expires: None,
                bad: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        let silent = a.grid.json || (a.grid.quiet && c.good);
        if !silent {
            print_checked(&c);
        }
        out.push(c);
    }
    let bad = out.iter().filter(|c| !c.good).count();
    if a.grid.json {
        print_json(&out)?;
    } else if bad > 0 || !a.grid.quiet {
        let line = format!(
            "checked {} file(s): {} good, {bad} bad",
            out.len(),
            out.len() - bad
        );
        if bad > 0 {
            eprintln!("lors: {line}");
        } else {
            println!("{line}");
        }
    }
    Ok(if bad > 0 { exit::PARTIAL } else { exit::OK })
}

fn print_checked(c: &Checked) {
    let expires = c
        .expires
        .map(|e| format!(", expires {}", lors::validity::format_local(e)))
        .unwrap_or_default();
    match (&c.error, c.good) {
        (Some(e), _) => println!("BAD   {}: {e}", c.path),
        (None, true) => println!("good  {}: {} mapping(s){expires}", c.path, c.mappings),
        (None, false) => {
            println!(
                "BAD   {}: {} of {} mapping(s) bad{expires}",
                c.path,
                c.bad.len(),
                c.mappings
            );
            for h in &c.bad {
                println!(
                    "      mapping {} (bytes from {}) on {}: {}",
                    h.mapping, h.offset, h.depot, h.state
                );
            }
        }
    }
}

/// The physical view as JSON.
#[derive(Serialize)]
struct View<'a> {
    size: u64,
    stored: u64,
    file: Option<String>,
    version: u64,
    encrypted: bool,
    block_size: Option<u64>,
    mappings: Vec<MappingView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'a Vec<Health>>,
    /// Who vouches for the exNode (not with --check).
    #[serde(skip_serializing_if = "Option::is_none")]
    exnode_signature: Option<&'a Provenance>,
}

#[derive(Serialize)]
struct MappingView<'a> {
    offset: u64,
    length: u64,
    depot: &'a str,
    security: Option<&'static str>,
    share: Option<String>,
    expires: Option<i64>,
    stored: u64,
}

fn view<'a>(
    x: &'a Exnode,
    health: Option<&'a Vec<Health>>,
    exnode_signature: Option<&'a Provenance>,
) -> View<'a> {
    View {
        size: x.size,
        stored: x.stored_bytes(),
        file: x.file.map(|u| u.to_string()),
        version: x.version,
        encrypted: x.encryption.is_some(),
        block_size: x.block_size,
        mappings: x
            .mappings
            .iter()
            .map(|m| MappingView {
                offset: m.logical_offset,
                length: m.logical_length,
                depot: &m.depot,
                security: m.security.map(|s| s.name()),
                share: m.share.map(|s| format!("{}:{}", s.group, s.index)),
                expires: m.expires,
                stored: m.alloc_length,
            })
            .collect(),
        health,
        exnode_signature,
    }
}

/// The physical view as a table, with each mapping's health if checked.
fn print_mappings(x: &Exnode, health: Option<&[Health]>) {
    println!(
        "size {} ({} bytes), stored {}, {} mapping(s), {}, block size {}",
        human_size(x.size),
        x.size,
        human_size(x.stored_bytes()),
        x.mappings.len(),
        if x.encryption.is_some() {
            "encrypted"
        } else {
            "not encrypted"
        },
        x.block_size.map_or("-".into(), human_size),
    );
    let now = ibp_auth::unix_now();
    println!("  #  offset        length      depot                  level   share  expires");
    for (i, m) in x.mappings.iter().enumerate() {
        let state = health
            .and_then(|h| h.iter().find(|h| h.mapping == i))
            .map(|h| h.state.to_string())
            .unwrap_or_default();
        println!(
            "{i:>3}  {:<12}  {:<10}  {:<21}  {:<6}  {:<5}  {}  {state}",
            m.logical_offset,
            m.logical_length,
            m.depot,
            m.security.map_or("legacy", |s| s.name()),
            m.share
                .map_or("-".into(), |s| format!("{}:{}", s.group, s.index)),
            m.expires.map_or("-".into(), |e| {
                if e <= now {
                    format!("EXPIRED {}", lors::validity::format_local(e))
                } else {
                    lors::validity::format_local(e)
                }
            }),
        );
    }
}
