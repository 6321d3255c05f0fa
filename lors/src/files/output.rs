//! Where a download into a local path writes, for `lors download`, liblors
//! and the Python package alike.
//!
//! - A regular file (or a new one) is written as `.NAME.lors-part` beside
//!   it, with the journal `.NAME.lors-part.journal`, and renamed to NAME
//!   when complete: a failed download never leaves a partial file under
//!   NAME, and `--resume` continues from the journal. A symbolic link to a
//!   file is followed: the part file goes beside its target, and the link
//!   stays.
//! - An existing file that is not a regular file (a character device such
//!   as `/dev/null`, a FIFO, a socket) is written in place, in order, and
//!   never replaced: renaming a part file over it would turn, for root,
//!   `/dev/null` into a regular file.
//! - A directory is refused before anything is fetched.

use std::path::{Path, PathBuf};

use super::download::{download_with, DownloadSummary, Resume, Source};
use super::Grid;
use crate::credentials::Error;
use crate::transfer::{Progress, Sink};

/// The destination of a download into a local path.
pub enum Output {
    /// Not a regular file: written in place, in order.
    Special { path: PathBuf, file: std::fs::File },
    /// A regular or new file, written through its part file.
    Part(Part),
}

/// `.NAME.lors-part` and its journal beside the file NAME.
#[derive(Debug, Clone)]
pub struct Part {
    /// The file downloaded into, renamed to [`Part::dest`] when complete.
    pub file: PathBuf,
    /// Its resume journal.
    pub journal: PathBuf,
    /// The destination (a symbolic link's target, if it was one).
    pub dest: PathBuf,
}

fn cannot(path: &Path, e: std::io::Error) -> Error {
    Error::Local(format!("cannot write {}: {e}", path.display()))
}

impl Output {
    /// The output for `dest`; refuses a directory.
    pub fn for_path(dest: &Path) -> Result<Output, Error> {
        match std::fs::metadata(dest) {
            Ok(m) if m.is_dir() => Err(Error::Usage(format!(
                "{} is a directory: give the file to download into",
                dest.display()
            ))),
            Ok(m) if !m.is_file() => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .map_err(|e| cannot(dest, e))?;
                Ok(Output::Special {
                    path: dest.to_path_buf(),
                    file,
                })
            }
            Ok(_) => {
                // A link's target (the link itself stays).
                let real = std::fs::canonicalize(dest).map_err(|e| cannot(dest, e))?;
                Part::of(&real).map(Output::Part)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Part::of(dest).map(Output::Part),
            Err(e) => Err(cannot(dest, e)),
        }
    }

    /// Where the bytes go; a part file is kept (`resume`) or truncated.
    pub fn sink(&self, resume: bool) -> Result<Sink, Error> {
        match self {
            Output::Special { path, file } => {
                let f = file.try_clone().map_err(|e| cannot(path, e))?;
                Ok(Sink::Stream(Box::new(tokio::fs::File::from_std(f))))
            }
            Output::Part(p) => std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(!resume)
                .open(&p.file)
                .map(Sink::File)
                .map_err(|e| cannot(&p.file, e)),
        }
    }

    /// The part file, if the output has one (resumable).
    pub fn part(&self) -> Option<&Part> {
        match self {
            Output::Part(p) => Some(p),
            Output::Special { .. } => None,
        }
    }
}

impl Part {
    /// The part file and journal of `dest`.
    pub fn of(dest: &Path) -> Result<Part, Error> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", dest.display())))?;
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(".lors-part");
        let file = dest.with_file_name(n);
        let mut j = file.as_os_str().to_owned();
        j.push(".journal");
        Ok(Part {
            file,
            journal: PathBuf::from(j),
            dest: dest.to_path_buf(),
        })
    }

    /// After a failure: what was fetched stays for `--resume` (returns the
    /// part file kept); nothing fetched (say, the metadata manager is
    /// down) leaves nothing behind.
    pub fn keep_for_resume_or_remove(&self) -> Option<&Path> {
        let fetched = std::fs::read_to_string(&self.journal).is_ok_and(|t| t.lines().count() > 1);
        if fetched {
            Some(&self.file)
        } else {
            self.remove();
            None
        }
    }

    /// Removes the part file and its journal.
    pub fn remove(&self) {
        for f in [&self.file, &self.journal] {
            let _ = std::fs::remove_file(f);
        }
    }

    /// After success: the journal removed, the part renamed to the
    /// destination.
    pub fn complete(&self) -> Result<(), Error> {
        let _ = std::fs::remove_file(&self.journal);
        std::fs::rename(&self.file, &self.dest).map_err(|e| cannot(&self.dest, e))
    }
}

/// Downloads `src` into the local path `dest` (see the module
/// documentation), not resumable: a failed download removes its part file.
pub async fn download_to_path(
    grid: &Grid,
    src: &Source,
    dest: &Path,
    threads: usize,
    progress: Option<Progress>,
) -> Result<DownloadSummary, Error> {
    let out = Output::for_path(dest)?;
    let sink = out.sink(false)?;
    let r = download_with(grid, src, sink, threads, progress, None::<&Resume>).await;
    match (r, out.part()) {
        (Ok(s), Some(p)) => p.complete().map(|_| s),
        (Ok(s), None) => Ok(s),
        (Err(e), Some(p)) => {
            p.remove();
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}
