//! `lors cleanup`: releases the allocations of uploads that ended without
//! cleaning up (killed by SIGKILL, a power loss, a second Ctrl-C, or a
//! clean-up that could not reach a depot), from the journals of
//! allocations in flight every upload keeps ([`lors::files::cleanup`]).

use clap::Args;
use lors::config::Config;
use lors::credentials::Error;
use lors::exit;
use lors::files::{self, CleanupOptions, CleanupReport, JournalState};
use lors::validity::format_local;

use crate::cli_files::print_json;
use crate::cli_transfer::GridArgs;

#[derive(Args)]
pub struct CleanupArgs {
    /// Only list what would be released
    #[arg(long)]
    dry_run: bool,
    /// Also release the blocks kept for `lors upload --resume` (and forget
    /// those uploads)
    #[arg(long)]
    include_resumable: bool,
    #[command(flatten)]
    grid: GridArgs,
}

/// Exit 0 when everything it tried to release was freed (or there was
/// nothing to do), 9 when some allocations could not be (their journal is
/// kept for another try).
pub fn cleanup(a: CleanupArgs) -> Result<u8, Error> {
    let cfg = Config::load()?;
    let grid = a.grid.grid(&cfg)?;
    let opts = CleanupOptions {
        dry_run: a.dry_run,
        include_resumable: a.include_resumable,
    };
    let report = crate::runtime_mt()?.block_on(files::cleanup(&grid, &opts))?;
    let code = if report.all_freed() {
        exit::OK
    } else {
        exit::RELEASE_FAILED
    };
    if a.grid.json {
        print_json(&report)?;
    } else {
        for line in failure_lines(&report) {
            eprintln!("lors: {line}");
        }
        if !a.grid.quiet {
            print!("{}", format_report(&report));
        }
    }
    Ok(code)
}

fn failure_lines(r: &CleanupReport) -> Vec<String> {
    let mut out = Vec::new();
    for j in &r.journals {
        for n in &j.not_freed {
            out.push(format!(
                "not freed ({}): {n}",
                j.dest.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

fn format_report(r: &CleanupReport) -> String {
    let mut s = String::new();
    if r.journals.is_empty() {
        s.push_str("nothing to clean up: no upload left allocations behind\n");
        return s;
    }
    for j in &r.journals {
        let dest = j.dest.as_deref().unwrap_or("?");
        let when = j.started.map(format_local).unwrap_or_else(|| "?".into());
        let line = match j.state {
            JournalState::Freed => format!(
                "{dest} (upload started {when}): released {} allocation(s)",
                j.freed
            ),
            JournalState::NotFreed => format!(
                "{dest} (upload started {when}): released {}, {} could not be freed (kept for another `lors cleanup`)",
                j.freed,
                j.not_freed.len()
            ),
            JournalState::InUse => format!(
                "{dest}: upload running (process {}; or another lors cleanup has it), not touched",
                j.pid.map_or("?".into(), |p| p.to_string())
            ),
            JournalState::Resumable => format!(
                "{dest} (upload started {when}): {} allocation(s) kept for --resume: run the same `lors upload --resume` to finish it, or `lors cleanup --include-resumable` to release them",
                j.allocations
            ),
            JournalState::WouldRelease => format!(
                "{dest} (upload started {when}): would release {} allocation(s)",
                j.allocations
            ),
            JournalState::Unreadable => format!("{}: not a journal lors can read, left alone", j.journal.display()),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}
