//! Exit codes of the `lors` commands: what a script can rely on.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; for `proxy-info`, a proxy exists and is valid (long enough) |
//! | 1 | no proxy, or it is unreadable, expired, shorter than `--valid`, or fails verification |
//! | 2 | usage error: bad arguments or input files, request refused as malformed (HTTP 400, 413) |
//! | 3 | refused: wrong password or token, not a VO member, certificate refused (HTTP 401); a right missing on a file or directory, a removed member, not a VO admin (HTTP 403) |
//! | 4 | a service (CA, L-Bone, metadata manager) is unreachable, timed out, failed TLS, answered with a server error or an invalid response; or too few depots (up, with room) for an upload |
//! | 5 | rate limited by the CA (HTTP 429); retry later |
//! | 6 | local failure: the credential could not be made or written |
//! | 7 | not found: no such file, directory, version, member or key (HTTP 404) |
//! | 8 | conflict: the path exists, or the file changed since the version the request was based on (HTTP 409) |
//! | 9 | `lors rm`: deleted from the metadata manager, but some allocations were not freed on their depots (still allocated after the DECR, refused, or the depot did not answer) |

/// Success (or: the proxy is valid).
pub const OK: u8 = 0;
/// No proxy, or not a usable one (expired, too short, fails verification).
pub const NO_PROXY: u8 = 1;
/// Bad arguments or input (clap's own errors also exit 2).
pub const USAGE: u8 = 2;
/// Refused: credentials at the CA (HTTP 401/403, or our certificate at TLS
/// level), or a missing right at the metadata manager (HTTP 403).
pub const REFUSED: u8 = 3;
/// The service could not be reached or did not answer properly.
pub const UNAVAILABLE: u8 = 4;
/// The CA asked us to slow down (HTTP 429).
pub const RATE_LIMITED: u8 = 5;
/// A local failure: minting or writing the credential.
pub const LOCAL: u8 = 6;
/// No such file, directory, version, member or key (HTTP 404).
pub const NOT_FOUND: u8 = 7;
/// The path exists, or the file changed meanwhile (HTTP 409).
pub const CONFLICT: u8 = 8;
/// `lors rm` deleted the file in the metadata manager but some of its
/// allocations were not freed on the depots: still allocated after the DECR
/// (pinned by another reference), refused, or no answer. Each is named;
/// they expire on their own at the end of their duration.
pub const RELEASE_FAILED: u8 = 9;
/// File data could not be read back intact: every replica (or too many
/// erasure-coded shares) of some range lost or corrupt, an unusable exNode,
/// or a data key that cannot be unwrapped.
pub const DATA: u8 = 10;
/// A maintenance command (`refresh`, `repair`, `trim`) did part of its work:
/// some allocations were refused, not freed or could not be recreated
/// (listed).
pub const PARTIAL: u8 = 11;
