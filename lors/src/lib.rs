//! LoRS client library: credentials and depot selection for the secure
//! storage stack.
//!
//! - [`credentials`]: logging in to the online CA, making and inspecting the
//!   proxy credential (`$X509_USER_PROXY` or `/tmp/x509up_u<uid>`), and the
//!   exit codes of the `lors` credential commands ([`exit`]);
//! - [`client`]: a session for programs linking the library (liblors's C
//!   API, the Python package), from the same configuration as `lors`;
//! - [`crypto`]: client-side encryption (AES-128-CTR), checksums and
//!   X25519 key wrapping;
//! - [`depots`]: asking the L-Bone for depots suited to an upload, each
//!   with a signed grant (`lors depots`);
//! - [`metadata`]: the metadata manager's client ([`MetadataClient`]):
//!   files, directories, ACLs, wrapped keys, usage, VO members (`lors ls`,
//!   `stat`, `mkdir`, `mv`, `rm`, `acl`, `usage`, `whoami`, `members`);
//! - [`maintenance`]: maintenance grants at the online CA, and the
//!   credential of unattended `refresh`, `check` and `repair`;
//! - [`release`]: releasing a deleted file's allocations on the depots;
//! - [`https`]: the HTTPS (TLS 1.3) JSON client of the `ibp-https` crate,
//!   with timeouts, a response size limit and optional keep-alive;
//! - [`validity`]: `HH:MM` durations and time formatting.
//!
//! See `docs/lors-credentials.md` and `docs/lors.md` for the user guide.

#![forbid(unsafe_code)]

pub mod alias;
pub mod client;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod depots;
pub mod exit;
pub mod files;
pub mod keys;
pub mod link;
pub mod lors_e2e;
pub mod maintenance;
pub use ibp_https::client as https;
pub mod metadata;
pub mod mount;
pub mod names;
pub mod release;
pub mod transfer;
pub mod trust_fetch;
pub mod validity;

pub use credentials::Error;
pub use metadata::MetadataClient;
