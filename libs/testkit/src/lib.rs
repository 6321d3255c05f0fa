//! Test support shared by the services' integration tests (dev-dependency
//! only): [`run_bounded`] runs a child process with a time limit, [`grid`]
//! starts a whole grid of real daemons (CA, L-Bone, metadata manager,
//! depots) with logged-in users, [`pg`]
//! starts a private PostgreSQL cluster per test.

pub use ibp_grid::grid;
pub use ibp_grid::run_bounded;
pub mod pg;
