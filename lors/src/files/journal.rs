//! Resume journals, one format for `lors upload --resume` and `lors
//! download --resume`: JSON lines, the first a header naming what is being
//! transferred, then one line per unit finished (an upload's stored block
//! with its mappings, a download's written range by its offset), appended
//! as each finishes. A torn last line (the process was killed while writing
//! it) does not parse and is ignored: that unit is done again. A journal
//! whose header is not the transfer's (another file, version or settings)
//! is not resumed from. Journals are created 0600 (an upload's holds its
//! data key, wrapped for the uploader).
//!
//! Journals written before this format stay readable: the upload journal
//! was already JSON lines with this header; a download journal's header was
//! the text line `lors-download-journal v1 FILE VERSION SIZE BLAKE3` (its
//! range lines, bare offsets, are JSON numbers), still accepted.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use exnode::Exnode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An open journal, appended to line by line (shared by the transfer's
/// tasks).
pub struct Journal {
    file: Mutex<File>,
}

impl Journal {
    /// Starts `path` afresh (its directory made if missing, the file
    /// created 0600 or truncated) with `header` as its first line.
    pub fn create(path: &Path, header: &impl Serialize) -> io::Result<Journal> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", serde_json::to_string(header)?)?;
        Ok(Journal {
            file: Mutex::new(f),
        })
    }

    /// Continues the journal at `path`.
    pub fn append(path: &Path) -> io::Result<Journal> {
        let f = OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            file: Mutex::new(f),
        })
    }

    /// Adds a finished unit. Best effort: a unit missing from the journal
    /// is done again on resume.
    pub fn add(&self, entry: &impl Serialize) {
        if let Ok(line) = serde_json::to_string(entry) {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Reads the journal at `path`: its header line and the entries that parse
/// (a foreign line is skipped, and so is a last line without its newline:
/// torn, it could parse as another entry, `12` of `1234`).
pub fn read<E: DeserializeOwned>(path: &Path) -> io::Result<(String, Vec<E>)> {
    let mut text = std::fs::read_to_string(path)?;
    if !text.ends_with('\n') {
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete > 0 {
            text.truncate(complete);
        }
    }
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let entries = lines
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    Ok((header, entries))
}

/// The header of an upload's journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadHeader {
    pub v: u32,
    pub dest: String,
    pub size: Option<u64>,
    pub file: Uuid,
    pub base_version: u64,
    pub key_id: String,
    /// The data key wrapped for the uploader's own key (never in clear).
    pub wrapped: Option<String>,
    pub block_size: u64,
    pub redundancy: String,
    pub security: String,
}

impl UploadHeader {
    /// Whether a journal with this header continues the upload `new`
    /// describes: same destination, size, settings and base version (and,
    /// for a new version of an existing file, the same file).
    pub fn continues(&self, new: &UploadHeader) -> bool {
        self.dest == new.dest
            && self.size == new.size
            && self.block_size == new.block_size
            && self.redundancy == new.redundancy
            && self.security == new.security
            && self.base_version == new.base_version
            && (self.base_version == 0 || self.file == new.file)
    }
}

/// An upload journal's line for a stored block.
#[derive(Serialize, Deserialize)]
pub struct UploadBlock {
    pub block: u64,
    /// The block's mappings (and group) as an exNode document.
    pub xml: String,
}

/// The header of a download's journal: which exNode is being read (a
/// journal of another one, a new version or another file, is not resumed
/// from).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DownloadHeader {
    pub v: u32,
    pub file: Option<Uuid>,
    pub version: u64,
    pub size: u64,
    /// BLAKE3 of the exNode document.
    pub exnode: String,
}

impl DownloadHeader {
    pub fn of(x: &Exnode) -> DownloadHeader {
        DownloadHeader {
            v: 1,
            file: x.file,
            version: x.version,
            size: x.size,
            exnode: blake3::hash(exnode::to_xml(x).as_bytes())
                .to_hex()
                .to_string(),
        }
    }

    /// Whether `line`, a journal's first line, is this header (in this
    /// format or the text line of the first download journals).
    fn matches(&self, line: &str) -> bool {
        if serde_json::from_str::<DownloadHeader>(line).is_ok_and(|h| h == *self) {
            return true;
        }
        let text = format!(
            "lors-download-journal v1 {} {} {} {}",
            self.file.map_or("-".into(), |u| u.to_string()),
            self.version,
            self.size,
            self.exnode
        );
        line == text
    }
}

/// The ranges (by offset) a download journal lists as written, if it is
/// the journal of downloading `x`; none otherwise (or if it cannot be
/// read).
pub fn download_done(path: &Path, x: &Exnode) -> HashSet<u64> {
    match read::<u64>(path) {
        Ok((header, done)) if DownloadHeader::of(x).matches(&header) => done.into_iter().collect(),
        _ => HashSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exnode(version: u64) -> Exnode {
        Exnode {
            file: Some(Uuid::new_v4()),
            version,
            size: 3 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn download_journal_lists_its_ranges_and_ignores_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".f.lors-part.journal");
        let x = exnode(2);
        let j = Journal::create(&path, &DownloadHeader::of(&x)).unwrap();
        j.add(&0u64);
        j.add(&10_485_760u64);
        drop(j);
        let j = Journal::append(&path).unwrap();
        j.add(&1_048_576u64);
        drop(j);
        // Killed while writing 20971520: "2097" without its newline.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        write!(f, "2097").unwrap();
        let done = download_done(&path, &x);
        assert_eq!(done, HashSet::from([0, 1_048_576, 10_485_760]));
        // Another version's journal is not resumed from.
        assert!(download_done(&path, &exnode(3)).is_empty());
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn download_journal_of_the_first_format_is_resumed_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".f.lors-part.journal");
        let x = exnode(1);
        let h = DownloadHeader::of(&x);
        let old = format!(
            "lors-download-journal v1 {} {} {} {}\n0\n1048576\n",
            x.file.unwrap(),
            x.version,
            x.size,
            h.exnode
        );
        std::fs::write(&path, old).unwrap();
        assert_eq!(download_done(&path, &x), HashSet::from([0, 1_048_576]));
        assert!(download_done(&path, &exnode(1)).is_empty(), "another file");
    }

    #[test]
    fn upload_journal_reads_back_its_header_and_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads/f.journal");
        let h = UploadHeader {
            v: 1,
            dest: "/vo1/f".into(),
            size: Some(10),
            file: Uuid::new_v4(),
            base_version: 0,
            key_id: "k-1".into(),
            wrapped: None,
            block_size: 4,
            redundancy: "1 copy".into(),
            security: "full".into(),
        };
        let j = Journal::create(&path, &h).unwrap();
        j.add(&UploadBlock {
            block: 0,
            xml: "<x/>".into(),
        });
        let (header, blocks) = read::<UploadBlock>(&path).unwrap();
        let back: UploadHeader = serde_json::from_str(&header).unwrap();
        assert_eq!(back, h);
        assert!(back.continues(&h));
        assert!(!back.continues(&UploadHeader {
            block_size: 8,
            ..h.clone()
        }));
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].block, 0);
    }
}
