//! Direct I/O (`O_DIRECT`) for the local file of a large transfer: the
//! file a download writes ([`super::download`]'s `FileOut`) and the file
//! an upload reads ([`super::upload::FileInput`]).
//!
//! Moving gigabytes through the page cache costs a copy per byte and, for
//! data not already cached, a fresh page per 4 KiB: on some machines (a
//! virtual machine whose free memory was handed back to the host pays a
//! fault per page) that is the slowest part of the transfer, and it
//! pushes everything else out of the cache. A direct transfer moves the
//! bytes between the disk and the transfer's own buffers. Where direct
//! I/O is slower (network file systems, where each request is a
//! synchronous round trip; memory file systems, which refuse it) or not
//! worth it (small files), the page cache is used: [`DirectIo`].

use std::fs::File;

/// Alignment of direct transfers (file offset, length and memory): the
/// page size, a multiple of every block device's logical block size.
pub const DIRECT_ALIGN: u64 = 4096;

/// Files at least this large are moved with direct I/O where the file
/// system allows it; smaller ones through the page cache only.
pub const DIRECT_MIN_FILE: u64 = 32 << 20;

/// Whether a transfer moves its local file with direct I/O:
/// `LORS_DIRECT_IO` = `auto` (the default: on a local disk file system,
/// ext4, XFS, btrfs or F2FS; never on network or memory file systems,
/// where `O_DIRECT` means synchronous round trips or nothing), `on`
/// (wherever the file system accepts it) or `off` (always through the
/// page cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectIo {
    Auto,
    On,
    Off,
}

impl DirectIo {
    /// From `LORS_DIRECT_IO` (unset or unknown: [`DirectIo::Auto`]).
    pub fn from_env() -> DirectIo {
        DirectIo::parse(std::env::var("LORS_DIRECT_IO").ok().as_deref())
    }

    pub(crate) fn parse(v: Option<&str>) -> DirectIo {
        match v.map(str::trim) {
            Some("on" | "1" | "yes") => DirectIo::On,
            Some("off" | "0" | "no") => DirectIo::Off,
            _ => DirectIo::Auto,
        }
    }

    /// `file` (of `size` bytes) opened once more with `O_DIRECT`, for
    /// writing or for reading, when this mode says so for it: never for
    /// `off` or a file smaller than [`DIRECT_MIN_FILE`], for `auto` only
    /// on a local disk file system.
    pub(crate) fn open(self, file: &File, size: u64, write: bool) -> Option<File> {
        match self {
            DirectIo::Off => None,
            _ if size < DIRECT_MIN_FILE => None,
            DirectIo::Auto if !local_disk(file) => None,
            DirectIo::Auto | DirectIo::On => open_direct(file, write),
        }
    }
}

/// `file` opened once more with `O_DIRECT` (`None` where the system or the
/// file system does not offer it, or `file` is not a regular file).
#[cfg(target_os = "linux")]
fn open_direct(file: &File, write: bool) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let m = file.metadata().ok()?;
    if !m.is_file() {
        return None;
    }
    // A new open file description of the same file (not a dup: its flags
    // are its own).
    let d = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()?;
    let dm = d.metadata().ok()?;
    (dm.dev() == m.dev() && dm.ino() == m.ino()).then_some(d)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_file: &File, _write: bool) -> Option<File> {
    None
}

/// Whether `file` is on a local disk file system ([`DirectIo::Auto`]).
#[cfg(target_os = "linux")]
pub(crate) fn local_disk(file: &File) -> bool {
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    const F2FS: i64 = 0xF2F5_2010;
    match rustix::fs::fstatfs(file) {
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => matches!(st.f_type as i64, EXT4 | XFS | BTRFS | F2FS),
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn local_disk(_file: &File) -> bool {
    false
}
