//! Sizes (`4GiB`, `100MB`, `512`) and durations (`1d`, `90m`, `30s`,
//! `3600`) of the configuration and the command line: the one grammar of
//! the stack, `ibp_service::units` (docs/units.md).

pub use ibp_service::units::{ByteSize, Seconds, UnitError};
