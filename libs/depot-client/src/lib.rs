//! The IBP depot client, and the pieces of the wire the depot shares with it.
//!
//! - [`Connection`]: one connection to a depot that knows its security
//!   [`Level`] (legacy port, secure port, crypto level) and sends each
//!   operation where that level sends it; [`Connection::free`] is the one
//!   release (DECR, then PROBE to confirm). Used by `lors`, the L-Bone's
//!   poller and the benchmarks.
//! - [`IbpClient`], [`SecureClient`], [`DataClient`]: the three clients
//!   under it, for what one level alone does (the depot's COPY as a client
//!   of another depot, tests that send raw or tampered lines).
//! - [`wire`]: the byte stream ([`wire::Transport`]) and the bounded line
//!   reader ([`wire::read_line`], [`wire::timed`]) the depot's listeners
//!   read requests with.
//! - [`seal`]: the crypto level's sealing of request lines (protocol, no
//!   I/O): the client seals, the depot's data port opens.
//!
//! Room: this crate may import `ibp-proto` (the wire types) and `ibp-auth`
//! (TLS configuration from a proxy credential), never a server crate
//! (`ibp-depot`, `lbone`, ...): servers depend on it, not the reverse.

pub mod clients;
mod connection;
mod error;
pub mod seal;
pub mod wire;

pub use clients::{Caps, CryptoSession, DataClient, IbpClient, SecureClient};
pub use connection::{host_of, Connection, Freed, Level};
pub use error::{ClientError, Result};
