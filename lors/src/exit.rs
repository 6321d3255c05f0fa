//! Exit codes of the `lors` credential commands: what a script can rely on.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; for `proxy-info`, a proxy exists and is valid (long enough) |
//! | 1 | no proxy, or it is unreadable, expired, shorter than `--valid`, or fails verification |
//! | 2 | usage error: bad arguments or input files, request refused as malformed (HTTP 400) |
//! | 3 | authentication refused: wrong password or token, not a VO member, certificate refused (HTTP 401/403) |
//! | 4 | the CA is unreachable, timed out, failed TLS, answered with a server error or an invalid response |
//! | 5 | rate limited by the CA (HTTP 429); retry later |
//! | 6 | local failure: the credential could not be made or written |

/// Success (or: the proxy is valid).
pub const OK: u8 = 0;
/// No proxy, or not a usable one (expired, too short, fails verification).
pub const NO_PROXY: u8 = 1;
/// Bad arguments or input (clap's own errors also exit 2).
pub const USAGE: u8 = 2;
/// The CA refused the credentials (HTTP 401/403, or our certificate at TLS level).
pub const REFUSED: u8 = 3;
/// The CA could not be reached or did not answer properly.
pub const UNAVAILABLE: u8 = 4;
/// The CA asked us to slow down (HTTP 429).
pub const RATE_LIMITED: u8 = 5;
/// A local failure: minting or writing the credential.
pub const LOCAL: u8 = 6;
