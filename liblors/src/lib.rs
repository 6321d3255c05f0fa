//! liblors: the C ABI of the LoRS client library.
//!
//! Programs in C, C++, Fortran (or anything that calls C) link `-llors`
//! and include `lors.h`, which is generated from this crate by cbindgen
//! (`liblors/cbindgen.toml`) and committed; `tests/header.rs` regenerates
//! it and fails if it differs. The user guide is docs/liblors.md.
//!
//! The shape of every entry point:
//! - it returns a status (`LORS_OK`, else one of the `LORS_ERR_*` codes,
//!   which are the `lors` command's exit classes, see `lors_rs::exit`),
//!   and sets the calling thread's last error message
//!   ([`lors_last_error`]): empty after a success;
//! - it runs inside `catch_unwind`: a panic becomes
//!   [`LORS_ERR_INTERNAL`], never an unwind into C;
//! - it blocks on the one runtime of the process ([`abi`]), created on
//!   first use;
//! - handles (`lors_client`, `lors_reader`, `lors_writer`) are numbers
//!   in a table, never addresses the library dereferences: a closed,
//!   freed or made-up handle is refused with [`LORS_ERR_USAGE`];
//! - results go through out-parameters, lengths are explicit, and every
//!   pointer the library returns says who frees it and how.
//!
//! Every `pub unsafe extern "C" fn` here has the same safety contract,
//! written once in lors.h and docs/liblors.md rather than on each: the
//! pointers it is given are NULL or valid for the lengths given, and
//! strings are NUL-terminated.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_int};

// In the order of lors.h.
mod abi;
mod client;
mod names;
mod reader;
mod transfer;
mod writer;

pub use client::{lors_client, lors_options};
pub use names::{lors_entry, lors_usage_info};
pub use reader::{lors_reader, lors_reader_options};
pub use transfer::{lors_progress_fn, lors_upload_options};
pub use writer::lors_writer;

/// Success.
pub const LORS_OK: c_int = 0;
/// No proxy credential, or not a usable one (expired, unreadable, fails
/// verification): renew it (`lors login`); the same client picks up the
/// new file.
pub const LORS_ERR_NO_PROXY: c_int = 1;
/// Bad arguments: a NULL pointer, a closed or unknown handle, contradicting
/// options, a request the service refused as malformed.
pub const LORS_ERR_USAGE: c_int = 2;
/// Refused: a right missing on the file or directory, or credentials
/// refused.
pub const LORS_ERR_REFUSED: c_int = 3;
/// A service could not be reached or answered badly, or too few depots for
/// an upload.
pub const LORS_ERR_UNAVAILABLE: c_int = 4;
/// Rate limited; retry later.
pub const LORS_ERR_RATE_LIMITED: c_int = 5;
/// A local failure: a local file that cannot be read or written, staging
/// space, the runtime.
pub const LORS_ERR_LOCAL: c_int = 6;
/// No such file, directory or version.
pub const LORS_ERR_NOT_FOUND: c_int = 7;
/// The path exists, or the file changed meanwhile.
pub const LORS_ERR_CONFLICT: c_int = 8;
/// lors_rm: deleted, but some allocations were not freed on their depots
/// (they expire on their own).
pub const LORS_ERR_RELEASE_FAILED: c_int = 9;
/// File data could not be read back intact (every replica, or too many
/// erasure-coded shares, lost or corrupt), or an unusable exNode or key.
pub const LORS_ERR_DATA: c_int = 10;
/// lors_refresh: some allocations were not refreshed.
pub const LORS_ERR_PARTIAL: c_int = 11;
/// The caller's buffer is too small; the size needed was stored.
pub const LORS_ERR_TOO_SMALL: c_int = 100;
/// A bug in liblors (a panic, caught at the boundary).
pub const LORS_ERR_INTERNAL: c_int = 101;

/// lors_entry.kind of a directory.
pub const LORS_KIND_DIR: c_int = 1;
/// lors_entry.kind of a file.
pub const LORS_KIND_FILE: c_int = 2;

/// lors_upload_options.security: the configuration's (full with a proxy,
/// else legacy).
pub const LORS_SECURITY_DEFAULT: c_int = 0;
/// Plain IBP: bearer capabilities, no authentication.
pub const LORS_SECURITY_LEGACY: c_int = 1;
/// Authenticated TLS control connection, bulk data (encrypted) in clear.
pub const LORS_SECURITY_CRYPTO: c_int = 2;
/// Everything inside TLS 1.3.
pub const LORS_SECURITY_FULL: c_int = 3;

/// lors_upload_options.encrypt: encrypted if there is a key pair or the
/// depots are secure (as `lors upload`).
pub const LORS_ENCRYPT_DEFAULT: c_int = 0;
/// Encrypted (client-side AES-128-CTR).
pub const LORS_ENCRYPT_YES: c_int = 1;
/// In clear.
pub const LORS_ENCRYPT_NO: c_int = 2;

/// lors_seek: from the start of the file.
pub const LORS_SEEK_SET: c_int = 0;
/// lors_seek: from the current position.
pub const LORS_SEEK_CUR: c_int = 1;
/// lors_seek: from the end of the file.
pub const LORS_SEEK_END: c_int = 2;

/// The library's version, e.g. "0.1.0": a static string, never freed.
#[no_mangle]
pub extern "C" fn lors_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last call on this thread that returned a status:
/// empty after a success, never NULL (lors_entry_clear and lors_list_free
/// leave it). Owned by the library, valid until the next liblors call on
/// the same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn lors_last_error() -> *const c_char {
    abi::last_error()
}

/// The name of a status code ("LORS_ERR_NOT_FOUND"), "unknown" for
/// other values: a static string, never freed.
#[no_mangle]
pub extern "C" fn lors_error_name(code: c_int) -> *const c_char {
    let name: &'static str = match code {
        LORS_OK => "LORS_OK\0",
        LORS_ERR_NO_PROXY => "LORS_ERR_NO_PROXY\0",
        LORS_ERR_USAGE => "LORS_ERR_USAGE\0",
        LORS_ERR_REFUSED => "LORS_ERR_REFUSED\0",
        LORS_ERR_UNAVAILABLE => "LORS_ERR_UNAVAILABLE\0",
        LORS_ERR_RATE_LIMITED => "LORS_ERR_RATE_LIMITED\0",
        LORS_ERR_LOCAL => "LORS_ERR_LOCAL\0",
        LORS_ERR_NOT_FOUND => "LORS_ERR_NOT_FOUND\0",
        LORS_ERR_CONFLICT => "LORS_ERR_CONFLICT\0",
        LORS_ERR_RELEASE_FAILED => "LORS_ERR_RELEASE_FAILED\0",
        LORS_ERR_DATA => "LORS_ERR_DATA\0",
        LORS_ERR_PARTIAL => "LORS_ERR_PARTIAL\0",
        LORS_ERR_TOO_SMALL => "LORS_ERR_TOO_SMALL\0",
        LORS_ERR_INTERNAL => "LORS_ERR_INTERNAL\0",
        _ => "unknown\0",
    };
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lors_rs::exit;

    /// The C codes are the `lors` command's exit classes.
    #[test]
    fn codes_are_the_cli_exit_classes() {
        let pairs = [
            (LORS_OK, exit::OK),
            (LORS_ERR_NO_PROXY, exit::NO_PROXY),
            (LORS_ERR_USAGE, exit::USAGE),
            (LORS_ERR_REFUSED, exit::REFUSED),
            (LORS_ERR_UNAVAILABLE, exit::UNAVAILABLE),
            (LORS_ERR_RATE_LIMITED, exit::RATE_LIMITED),
            (LORS_ERR_LOCAL, exit::LOCAL),
            (LORS_ERR_NOT_FOUND, exit::NOT_FOUND),
            (LORS_ERR_CONFLICT, exit::CONFLICT),
            (LORS_ERR_RELEASE_FAILED, exit::RELEASE_FAILED),
            (LORS_ERR_DATA, exit::DATA),
            (LORS_ERR_PARTIAL, exit::PARTIAL),
        ];
        for (c, e) in pairs {
            assert_eq!(c, c_int::from(e));
        }
    }

    #[test]
    fn every_code_has_a_name() {
        for c in (0..=11).chain([LORS_ERR_TOO_SMALL, LORS_ERR_INTERNAL]) {
            // SAFETY: lors_error_name returns a static NUL-terminated string.
            let n = unsafe { std::ffi::CStr::from_ptr(lors_error_name(c)) };
            assert!(n.to_bytes().starts_with(b"LORS_"), "{c}: {n:?}");
        }
    }
}
