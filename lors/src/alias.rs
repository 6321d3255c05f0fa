//! The LoRS-style tool names (`lors-upload`, `lors-download`): each runs
//! the `lors` binary from its own directory with the subcommand first.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Replaces this process with `<dir of this binary>/lors <sub> <args...>`.
pub fn exec_sibling(sub: &str) -> ExitCode {
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lors-{sub}: cannot find my own path: {e}");
            return ExitCode::from(crate::exit::LOCAL);
        }
    };
    let lors = me.with_file_name("lors");
    let err = Command::new(&lors)
        .arg(sub)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("lors-{sub}: cannot run {}: {err}", lors.display());
    ExitCode::from(crate::exit::LOCAL)
}
