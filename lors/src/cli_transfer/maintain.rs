//! `lors augment`, `trim`, `refresh` and `repair`. `refresh` and `repair`
//! (and `check`) act with a maintenance credential when the user's proxy
//! is missing or expired (docs/maintenance.md).

use clap::Args;
use lors::credentials::Error;
use lors::depots;
use lors::exit;
use lors::files::{self, Source};
use lors::maintenance::{Acting, Session};
use lors::transfer::maintain::TrimSelect;
use lors::MetadataClient;

use super::{
    config, print_json, GridArgs, PlaceArgs, SourceArgs, DEFAULT_DURATION, DEFAULT_THREADS,
};

#[derive(Args)]
pub struct AugmentArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Replicas wanted of every range (or of every share)
    #[arg(long, value_name = "N")]
    copies: u16,
    #[command(flatten)]
    place: PlaceArgs,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct TrimArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Drop every mapping on this depot (HOST:PORT as `stat --mappings` shows; repeatable)
    #[arg(
        long = "depot",
        value_name = "HOST:PORT",
        required_unless_present = "mappings"
    )]
    depots: Vec<String>,
    /// Drop these mappings (numbers as `stat --mappings` shows; repeatable)
    #[arg(long = "mapping", value_name = "N", conflicts_with = "depots")]
    mappings: Vec<usize>,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// New lifetime from now, e.g. 7d [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = depots::parse_duration)]
    duration: Option<u64>,
    /// PATH is a directory: refresh every file under it
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    grid: GridArgs,
}

#[derive(Args)]
pub struct RepairArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Mappings probed at once [default: 4]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    place: PlaceArgs,
    #[command(flatten)]
    grid: GridArgs,
}

/// Prints what a maintenance command did; with `quiet`, only when it did
/// not all of it (exit 11).
fn report(m: &files::Maintained, json: bool, quiet: bool, what: &str) -> Result<u8, Error> {
    if json {
        print_json(m)?;
    } else if quiet && m.complete() {
        // Nothing on success.
    } else {
        println!(
            "{what} {}: {} mapping(s) before, {} after{}{}",
            m.source,
            m.mappings_before,
            m.mappings_after,
            if m.added > 0 {
                format!(", {} added", m.added)
            } else {
                String::new()
            },
            if m.version > 0 {
                format!(", version {} registered", m.version)
            } else {
                String::new()
            }
        );
        if let Some(r) = &m.repair {
            println!(
                "checked {} mapping(s): {} bad, {} recreated",
                r.checked,
                r.bad.len(),
                r.recreated
            );
            for b in &r.bad {
                println!(
                    "  bad: mapping {} (bytes from {}) on {}: {}",
                    b.mapping, b.offset, b.depot, b.state
                );
            }
            for u in &r.unrecoverable {
                println!("  unrecoverable: {u}");
            }
        }
        // Refresh outcomes are MANAGE CHNG; the others free allocations.
        let failed = if what == "refreshed" {
            "not refreshed"
        } else {
            "not freed"
        };
        for o in m.outcomes.iter().filter(|o| !o.ok) {
            println!(
                "  {failed}: {} (range at {}): {}",
                o.depot,
                o.offset,
                o.error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(if m.complete() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

pub fn augment(a: AugmentArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let src = a.src.source()?;
    let m = crate::runtime_mt()?.block_on(files::augment(
        &grid,
        &src,
        a.copies.max(1) as usize,
        &a.place.placement(&cfg),
    ))?;
    report(&m, a.grid.json, a.grid.quiet, "augmented")
}

pub fn trim(a: TrimArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let grid = a.grid.grid(&cfg)?;
    let src = a.src.source()?;
    let select = if a.mappings.is_empty() {
        TrimSelect::Depots(a.depots.clone())
    } else {
        TrimSelect::Mappings(a.mappings.clone())
    };
    let m = crate::runtime_mt()?.block_on(files::trim(&grid, &src, &select))?;
    report(&m, a.grid.json, a.grid.quiet, "trimmed")
}

pub fn refresh(a: RefreshArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let duration = a.duration.or(cfg.duration).unwrap_or(DEFAULT_DURATION);
    let rt = crate::runtime_mt()?;
    let mut session = session(&a.grid, cfg);
    if a.all {
        let root = a
            .src
            .path
            .clone()
            .ok_or_else(|| Error::Usage("--all needs a directory path".into()))?;
        let files_under = rt.block_on(tree(&mut session, &root, a.grid.quiet))?;
        let mut code = exit::OK;
        let mut all = Vec::new();
        let mut failed = 0usize;
        for f in &files_under {
            // Renewed between files when the credential runs short; a
            // credential that cannot be had stops the run (exit 1 or 4).
            let grid = rt.block_on(session.grid())?.clone();
            let src = Source::Path {
                path: f.clone(),
                version: None,
            };
            match rt.block_on(files::refresh(&grid, &src, duration)) {
                Ok(m) => {
                    if !m.complete() {
                        code = exit::PARTIAL;
                    }
                    all.push(m);
                }
                Err(e) => {
                    eprintln!("lors: {f}: not refreshed: {e}");
                    failed += 1;
                    code = exit::PARTIAL;
                }
            }
        }
        if a.grid.json {
            print_json(&all)?;
        } else {
            for m in &all {
                report(m, false, a.grid.quiet, "refreshed")?;
            }
        }
        let partial = all.iter().filter(|m| !m.complete()).count();
        if code != exit::OK {
            eprintln!(
                "lors: refresh --all {root}: {} of {} file(s) not (fully) refreshed",
                failed + partial,
                files_under.len()
            );
        } else if !a.grid.quiet && !a.grid.json {
            println!(
                "refresh --all {root}: {} file(s) refreshed",
                files_under.len()
            );
        }
        return Ok(code);
    }
    let src = a.src.source()?;
    let grid = grid_for_source(&a.grid, &rt, &mut session, &src)?;
    let m = rt.block_on(files::refresh(&grid, &src, duration))?;
    report(&m, a.grid.json, a.grid.quiet, "refreshed")
}

/// The credential of `refresh`, `repair` and `check`: the user's proxy,
/// else (missing, expired, nearly expired) a maintenance proxy from the
/// maintenance credential (docs/maintenance.md); see
/// [`lors::maintenance::Session`].
pub(super) fn session(g: &GridArgs, cfg: lors::config::Config) -> Session {
    let proxy = g.proxy.clone().unwrap_or_else(|| cfg.proxy_path());
    let _ = super::PROXY_PATH.set(proxy.clone());
    let o = lors::client::Overrides {
        lbone: g.lbone.clone(),
        mdm: g.mdm.clone(),
        trust: g.trust.clone(),
        proxy: Some(proxy),
        key: g.key.clone(),
        timeout: Some(std::time::Duration::from_secs(g.timeout.max(1))),
    };
    Session::new(cfg, o)
}

/// Says on stderr (unless quiet) that the maintenance credential acts.
fn note_acting(session: &Session, quiet: bool) {
    if let (Some(Acting::Grant(id)), false) = (session.acting(), quiet) {
        eprintln!("lors: no valid proxy: acting with maintenance grant {id} (your own files only)");
    }
}

/// The grid for one file: an exNode file (`--xnd`) as before (a proxy
/// only if there is one: legacy depots need none), a path with the
/// session's credential.
fn grid_for_source(
    g: &GridArgs,
    rt: &tokio::runtime::Runtime,
    session: &mut Session,
    src: &Source,
) -> Result<files::Grid, Error> {
    match src {
        Source::Xnd(_) => g.grid(&config()?),
        Source::Path { .. } => maintenance_grid(rt, session, g.quiet),
    }
}

/// The session's grid for one operation.
pub(super) fn maintenance_grid(
    rt: &tokio::runtime::Runtime,
    session: &mut Session,
    quiet: bool,
) -> Result<files::Grid, Error> {
    let grid = rt.block_on(session.grid())?.clone();
    note_acting(session, quiet);
    Ok(grid)
}

/// Every file under `root`, listed with the session's credential.
pub(super) async fn tree(
    session: &mut Session,
    root: &str,
    quiet: bool,
) -> Result<Vec<String>, Error> {
    let grid = session.grid().await?;
    let mdm = grid
        .mdm
        .clone()
        .ok_or_else(|| Error::Usage("--all needs the metadata manager (--mdm)".into()))?;
    note_acting(session, quiet);
    walk(&mdm, root).await
}

/// Every file under a directory (depth first, bounded by the listing).
async fn walk(mdm: &MetadataClient, root: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut dirs = vec![root.trim_end_matches('/').to_owned()];
    while let Some(d) = dirs.pop() {
        for e in mdm.list(&d).await? {
            match e.kind {
                lors::metadata::EntryKind::Dir => dirs.push(e.path.clone()),
                _ => out.push(e.path.clone()),
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn repair(a: RepairArgs) -> Result<u8, Error> {
    let cfg = config()?;
    let placement = a.place.placement(&cfg);
    let src = a.src.source()?;
    let threads = a.threads.unwrap_or(DEFAULT_THREADS).max(1);
    let rt = crate::runtime_mt()?;
    let mut session = session(&a.grid, cfg);
    let grid = grid_for_source(&a.grid, &rt, &mut session, &src)?;
    let m = rt.block_on(files::repair(&grid, &src, &placement, threads))?;
    report(&m, a.grid.json, a.grid.quiet, "repaired")
}
