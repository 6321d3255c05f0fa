//! Test support shared by the services' integration tests (dev-dependency
//! only; `ibp-grid` must never depend on it):
//!
//! - [`pki`]: a CA, an attribute authority per VO, VO members as proxies,
//!   service certificates and trust directories;
//! - [`process`]: a daemon started from its binary, its `listening on`
//!   lines read, SIGKILLed on drop;
//! - [`clock`] (from `ibp-grid`, whose own tests use it too): a wall clock
//!   the test moves for real daemons (libfaketime), so that expiry tests do
//!   not sleep;
//! - [`pg`]: a private PostgreSQL cluster per test;
//! - [`grid`] (from `ibp-grid`): a whole grid of real daemons with
//!   logged-in users; [`run_bounded`]: a child process with a time limit.

pub use ibp_grid::clock;
pub use ibp_grid::grid;
pub use ibp_grid::run_bounded;
pub mod pg;
pub mod pki;
pub mod process;
