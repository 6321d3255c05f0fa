//! `lors completions SHELL` and `lors man [DIR]`: shell completion scripts
//! and manual pages generated from the clap definition of the command line,
//! so they never disagree with it.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use lors::credentials::Error;
use lors::exit;

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args)]
pub(crate) struct ManArgs {
    /// Write lors.1 and one page per subcommand (lors-upload.1, ...)
    /// into DIR (created if missing); without it, print lors.1
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The full command definition, as `lors` parses it.
fn command() -> clap::Command {
    crate::Cli::command()
}

pub(crate) fn completions(args: CompletionsArgs) -> Result<u8, Error> {
    let mut cmd = command();
    let mut out = Vec::with_capacity(64 * 1024);
    clap_complete::generate(args.shell, &mut cmd, "lors", &mut out);
    write_stdout(&out)?;
    Ok(exit::OK)
}

pub(crate) fn man(args: ManArgs) -> Result<u8, Error> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Local(format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(command(), &dir).map_err(|e| {
                Error::Local(format!(
                    "cannot write the manual pages into {}: {e}",
                    dir.display()
                ))
            })?;
        }
        None => {
            let mut out = Vec::with_capacity(16 * 1024);
            clap_mangen::Man::new(command())
                .render(&mut out)
                .map_err(|e| Error::Local(format!("cannot render the manual page: {e}")))?;
            write_stdout(&out)?;
        }
    }
    Ok(exit::OK)
}

/// Writes everything to standard output; a reader that closed it early
/// (`lors man | head`) ends lors quietly with status 141, as in `main`.
fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => Err(Error::Local(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}
