//! The namespace at the metadata manager: `lors_stat`, `lors_list`,
//! `lors_mkdir`, `lors_mv`, `lors_rm`, and the file maintenance and
//! accounting of `lors_refresh` and `lors_usage`; the owned results
//! (`lors_entry` and its strings) and their release.

use std::ffi::{c_char, c_int};

use lors_rs::client::DEFAULT_DURATION;
use lors_rs::depots::{self, DepotQuery};
use lors_rs::files::{self, Grid, Source};
use lors_rs::metadata::{EntryInfo, EntryKind};
use lors_rs::release::{self, SecureAccess};
use lors_rs::MetadataClient;

use crate::abi::{
    block_on, free_owned, need_out, owned, put, quiet, status, text, usage, Failure, Outcome,
};
use crate::client::{client, lors_client};
use crate::{LORS_ERR_PARTIAL, LORS_ERR_RELEASE_FAILED, LORS_KIND_DIR, LORS_KIND_FILE};

/// An entry of the namespace, as lors_stat and lors_list give it. Its
/// strings are owned by the library: freed by lors_entry_clear (an entry
/// of lors_stat) or lors_list_free (an array of lors_list).
#[repr(C)]
pub struct lors_entry {
    /// "/VO/dir/name".
    pub path: *const c_char,
    /// The file's UUID or the directory's id.
    pub id: *const c_char,
    /// "user:ID@VO"; NULL for a VO root.
    pub owner: *const c_char,
    /// lors_stat: the caller's rights ("rwda" letters, "-" for none);
    /// NULL from lors_list.
    pub rights: *const c_char,
    /// LORS_KIND_FILE or LORS_KIND_DIR.
    pub kind: c_int,
    /// Bytes of the current version (0 for directories).
    pub size: u64,
    /// Current version (0: none yet, and for directories).
    pub version: u64,
    /// lors_stat of a file: versions kept (else 0).
    pub versions: u64,
    /// lors_stat of a file: bytes stored on depots by all versions (else 0).
    pub stored: u64,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// What lors_usage reports: the caller's own usage in its VO (a VO
/// admin: the whole VO's).
#[repr(C)]
pub struct lors_usage_info {
    pub files: u64,
    pub versions: u64,
    /// Bytes: the sizes of the files' current versions.
    pub logical: u64,
    /// Bytes stored on depots (replicas, shares).
    pub stored: u64,
    /// Entries (files and directories) held at the metadata manager.
    pub entries: u64,
    /// Bytes of exNode XML kept for them.
    pub exnode_bytes: u64,
}

fn entry(e: &EntryInfo) -> lors_entry {
    lors_entry {
        path: owned(&e.path),
        id: owned(&e.id),
        owner: e.owner.as_deref().map_or(std::ptr::null(), owned),
        rights: e.rights.as_deref().map_or(std::ptr::null(), owned),
        kind: match e.kind {
            EntryKind::Dir => LORS_KIND_DIR,
            EntryKind::File => LORS_KIND_FILE,
        },
        size: e.size,
        version: e.version,
        versions: e.versions.unwrap_or(0),
        stored: e.stored.unwrap_or(0),
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

fn empty_entry() -> lors_entry {
    lors_entry {
        path: std::ptr::null(),
        id: std::ptr::null(),
        owner: std::ptr::null(),
        rights: std::ptr::null(),
        kind: 0,
        size: 0,
        version: 0,
        versions: 0,
        stored: 0,
        created_at: 0,
        updated_at: 0,
    }
}

/// Frees the strings of `e` and zeroes it.
///
/// # Safety
/// `e`'s strings are NULL or the library's, not freed yet.
unsafe fn clear(e: &mut lors_entry) {
    for p in [e.path, e.id, e.owner, e.rights] {
        // SAFETY: the caller's contract.
        unsafe { free_owned(p) };
    }
    *e = empty_entry();
}

fn need_mdm(grid: &Grid) -> Result<&MetadataClient, Failure> {
    grid.mdm.as_ref().ok_or_else(|| {
        usage("no metadata manager: set metadata_url, LORS_METADATA_URL or `metadata` in the configuration")
    })
}

/// Stats `path` into the caller's `*out`, whose strings the caller frees
/// with lors_entry_clear. On failure `*out` is zeroed (nothing to free).
/// Errors: LORS_ERR_USAGE, LORS_ERR_NOT_FOUND, LORS_ERR_REFUSED,
/// LORS_ERR_NO_PROXY, LORS_ERR_UNAVAILABLE.
#[no_mangle]
pub unsafe extern "C" fn lors_stat(
    c: *const lors_client,
    path: *const c_char,
    out: *mut lors_entry,
) -> c_int {
    status("lors_stat", || {
        need_out(out, "out")?;
        // SAFETY (both): the caller's contract.
        unsafe { put(out, empty_entry()) };
        let client = client(c)?;
        let path = unsafe { text(path, "path") }?;
        let grid = client.grid()?;
        let e = block_on(need_mdm(&grid)?.stat(path))??;
        // SAFETY: as above.
        unsafe { put(out, entry(&e)) };
        Ok(())
    })
}

/// Frees the strings of an entry filled by lors_stat and zeroes it, so a
/// second call is a no-op. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn lors_entry_clear(e: *mut lors_entry) {
    quiet("lors_entry_clear", || {
        // SAFETY: NULL or an entry of lors_stat (contract).
        if let Some(e) = unsafe { e.as_mut() } {
            // SAFETY: its strings are the library's (contract).
            unsafe { clear(e) };
        }
    });
}

/// Lists the directory `path`: stores an array of `*count` entries in
/// `*list` (NULL when empty), owned by the caller, freed with
/// lors_list_free(*list, *count).
/// Errors: as lors_stat.
#[no_mangle]
pub unsafe extern "C" fn lors_list(
    c: *const lors_client,
    path: *const c_char,
    list: *mut *mut lors_entry,
    count: *mut usize,
) -> c_int {
    status("lors_list", || {
        need_out(list, "list")?;
        need_out(count, "count")?;
        // SAFETY (all): the caller's contract.
        unsafe {
            put(list, std::ptr::null_mut());
            put(count, 0);
        }
        let client = client(c)?;
        let path = unsafe { text(path, "path") }?;
        let grid = client.grid()?;
        let entries = block_on(need_mdm(&grid)?.list(path))??;
        if entries.is_empty() {
            return Ok(());
        }
        let array: Box<[lors_entry]> = entries.iter().map(entry).collect();
        let n = array.len();
        let p = Box::into_raw(array).cast::<lors_entry>();
        // SAFETY: as above.
        unsafe {
            put(list, p);
            put(count, n);
        }
        Ok(())
    })
}

/// Frees an array of lors_list with its count, once. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn lors_list_free(list: *mut lors_entry, count: usize) {
    quiet("lors_list_free", || {
        if list.is_null() {
            return;
        }
        let slice = std::ptr::slice_from_raw_parts_mut(list, count);
        // SAFETY: made by Box::into_raw in lors_list with this count, freed
        // once (contract).
        let mut array = unsafe { Box::from_raw(slice) };
        for e in array.iter_mut() {
            // SAFETY: strings made by `entry`.
            unsafe { clear(e) };
        }
    });
}

/// Makes the directory `path`; with `parents` non-zero also its missing
/// parents, and an existing directory is no error.
/// Errors: LORS_ERR_CONFLICT (exists), LORS_ERR_NOT_FOUND (no parent),
/// LORS_ERR_REFUSED, LORS_ERR_USAGE, LORS_ERR_NO_PROXY,
/// LORS_ERR_UNAVAILABLE.
#[no_mangle]
pub unsafe extern "C" fn lors_mkdir(
    c: *const lors_client,
    path: *const c_char,
    parents: c_int,
) -> c_int {
    status("lors_mkdir", || {
        let client = client(c)?;
        // SAFETY: the caller's contract.
        let path = unsafe { text(path, "path") }?;
        let grid = client.grid()?;
        block_on(need_mdm(&grid)?.mkdir(path, parents != 0))??;
        Ok(())
    })
}

/// Moves (renames) the entry `from` to `to`, in the same VO.
/// Errors: LORS_ERR_NOT_FOUND, LORS_ERR_CONFLICT (`to` exists),
/// LORS_ERR_REFUSED, LORS_ERR_USAGE, LORS_ERR_NO_PROXY,
/// LORS_ERR_UNAVAILABLE.
#[no_mangle]
pub unsafe extern "C" fn lors_mv(
    c: *const lors_client,
    from: *const c_char,
    to: *const c_char,
) -> c_int {
    status("lors_mv", || {
        let client = client(c)?;
        // SAFETY (both): the caller's contract.
        let from = unsafe { text(from, "from") }?;
        let to = unsafe { text(to, "to") }?;
        let grid = client.grid()?;
        block_on(need_mdm(&grid)?.move_entry(from, to))??;
        Ok(())
    })
}

/// Deletes the file (every version) or empty directory `path`, then
/// releases its allocations on the depots, as `lors rm`.
/// Errors: LORS_ERR_RELEASE_FAILED (deleted, but some allocations were
/// not freed: they expire on their own), LORS_ERR_NOT_FOUND,
/// LORS_ERR_CONFLICT (a directory not empty), LORS_ERR_REFUSED,
/// LORS_ERR_USAGE, LORS_ERR_NO_PROXY, LORS_ERR_UNAVAILABLE.
#[no_mangle]
pub unsafe extern "C" fn lors_rm(c: *const lors_client, path: *const c_char) -> c_int {
    status("lors_rm", || {
        let client = client(c)?;
        // SAFETY: the caller's contract.
        let path = unsafe { text(path, "path") }?;
        let grid = client.grid()?;
        let mdm = need_mdm(&grid)?;
        // Grants from the L-Bone for the allocations made on secure
        // ports; without them, legacy ports only (as `lors rm`).
        let secure = async {
            let (Some(url), Some(trust), Some(cred)) = (&grid.lbone, &grid.trust, &grid.credential)
            else {
                return None;
            };
            let offer = depots::query_offer(url, trust, cred, &DepotQuery::default())
                .await
                .ok()?;
            SecureAccess::from_offer(&offer, trust, cred).ok()
        };
        let removal = block_on(release::delete_and_release(mdm, path, None, secure))??;
        if removal.all_freed() {
            return Ok(());
        }
        let mut not_freed: Vec<String> = removal
            .releases
            .iter()
            .filter(|r| !r.freed)
            .map(|r| {
                format!(
                    "{} ({})",
                    r.allocation,
                    r.error.as_deref().unwrap_or("still allocated")
                )
            })
            .collect();
        not_freed.extend(removal.deleted.released.iter().filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("version {}: unreadable exNode ({e})", r.version))
        }));
        Err(Failure::new(
            LORS_ERR_RELEASE_FAILED,
            format!(
                "{path} deleted; not freed (they expire on their own): {}",
                not_freed.join(", ")
            ),
        ))
    })
}

/// Extends every allocation of the current version of `path` to
/// `duration` seconds from now (0: the configuration's, else 7 days), as
/// `lors refresh`.
/// Errors: LORS_ERR_PARTIAL (some allocations not refreshed: named in the
/// message), LORS_ERR_NOT_FOUND, LORS_ERR_REFUSED, LORS_ERR_USAGE,
/// LORS_ERR_NO_PROXY, LORS_ERR_UNAVAILABLE.
#[no_mangle]
pub unsafe extern "C" fn lors_refresh(
    c: *const lors_client,
    path: *const c_char,
    duration: u64,
) -> c_int {
    status("lors_refresh", || {
        let client = client(c)?;
        // SAFETY: the caller's contract.
        let path = unsafe { text(path, "path") }?;
        let grid = client.grid()?;
        let duration = match duration {
            0 => client.config().duration.unwrap_or(DEFAULT_DURATION),
            d => d,
        };
        let src = Source::Path {
            path: path.to_owned(),
            version: None,
        };
        let m = block_on(files::refresh(&grid, &src, duration))??;
        if m.complete() {
            return Ok(());
        }
        let failed: Vec<String> = m
            .outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(|o| format!("{}: {}", o.depot, o.error.as_deref().unwrap_or("refused")))
            .collect();
        Err(Failure::new(
            LORS_ERR_PARTIAL,
            format!("{path}: not refreshed: {}", failed.join(", ")),
        ))
    })
}

/// Stores the caller's usage in its VO in `*out` (a VO admin: the whole
/// VO's, summed over its members).
/// Errors: LORS_ERR_USAGE, LORS_ERR_NO_PROXY, LORS_ERR_REFUSED,
/// LORS_ERR_UNAVAILABLE.
#[no_mangle]
pub unsafe extern "C" fn lors_usage(c: *const lors_client, out: *mut lors_usage_info) -> c_int {
    status("lors_usage", || -> Outcome {
        need_out(out, "out")?;
        let client = client(c)?;
        let grid = client.grid()?;
        let u = block_on(need_mdm(&grid)?.usage(None))??;
        let mut sum = lors_usage_info {
            files: 0,
            versions: 0,
            logical: 0,
            stored: 0,
            entries: 0,
            exnode_bytes: 0,
        };
        for r in &u.users {
            sum.files += r.files;
            sum.versions += r.versions;
            sum.logical += r.logical;
            sum.stored += r.stored;
            sum.entries += r.entries;
            sum.exnode_bytes += r.exnode_bytes;
        }
        // SAFETY: not NULL, valid (contract).
        unsafe { put(out, sum) };
        Ok(())
    })
}
