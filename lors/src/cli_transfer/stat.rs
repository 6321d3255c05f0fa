//! `lors stat`.

use std::path::PathBuf;

use clap::Args;
use exnode::Exnode;
use lors::credentials::Error;
use lors::exit;
use lors::files::{self, Grid, Source};
use lors::transfer::maintain::{Health, State};
use serde::Serialize;

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
    #[command(flatten)]
    grid: GridArgs,
}

/// `lors stat`: the metadata manager's view, or with `--mappings` /
/// `--check` / `--xnd` the exNode's physical view.
pub fn stat(a: StatArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
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
    let (x, health) = if a.check {
        let (x, h) = rt.block_on(files::check(&grid, &src, DEFAULT_THREADS))?;
        (x, Some(h))
    } else {
        let o = rt.block_on(files::open(&grid, &src, false))?;
        (o.exnode, None)
    };
    if a.grid.json {
        print_json(&view(&x, health.as_ref()))?;
    } else {
        print_mappings(&x, health.as_deref());
    }
    let bad = health
        .as_ref()
        .is_some_and(|h| h.iter().any(|h| h.state != State::Ok));
    Ok(if bad { exit::PARTIAL } else { exit::OK })
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

fn view<'a>(x: &'a Exnode, health: Option<&'a Vec<Health>>) -> View<'a> {
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
                    format!("EXPIRED {}", lors::validity::format_utc(e))
                } else {
                    lors::validity::format_utc(e)
                }
            }),
        );
    }
}
