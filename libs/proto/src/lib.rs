//! The IBP depot wire protocol: typed requests and replies, capabilities and
//! error codes, parsed from and formatted to the exact bytes of IBP 1.4.
//!
//! This crate does no I/O. Parsing is a pure function over one request or reply
//! line; the caller reads the line (at most [`MAX_LINE`] bytes) and any payload.
//! See `docs/protocol.md` for the specification and its version history.

// No I/O and no unsafe code: both are promises of this crate.
#![forbid(unsafe_code)]

mod cap;
mod error;
mod reply;
mod request;
mod secure;
mod status;

pub use cap::{CapKind, CapRef, Capability, Rid, MAX_HOST_LEN, MAX_KEY_LEN};
pub use error::IbpError;
pub use reply::{Expect, ProbeInfo, Reply};
pub use request::{
    parse_request, parse_status_change_values, Allocate, Attributes, Command, Copy, Load, Manage,
    ManageOp, Request, RequestError, Status, StatusOp, Store, Write,
};
pub use secure::{
    auth_refusal, format_uuid, parse_secure_request, parse_uuid, Auth, QuotaInfo, SecureCopy,
    SecureLoad, SecureRequest, SecureStore, SecureWrite, AUTH_COMMAND, CRYPTO_COMMAND,
    JOIN_COMMAND, MAX_SECURE_LINE, MAX_TOKEN_LEN, QUOTA_COMMAND,
};
pub use status::StatusInfo;

/// Longest request or reply line (including the final `\n`) a peer may send
/// on the legacy port (the secure port allows [`MAX_SECURE_LINE`]).
pub const MAX_LINE: usize = 4096;

/// Longest password accepted in a STATUS request.
pub const MAX_PASSWORD_LEN: usize = 64;

/// The protocol version field that starts every request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `0` (IBPv031): every command; the only form for STORE, LOAD, ...
    V0,
    /// `1` (IBPv040): ALLOCATE and STATUS, with a RID field.
    V1,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V0 => 0,
            Version::V1 => 1,
        }
    }
}

/// HARD allocations are kept until they expire; SOFT ones may be reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reliability {
    Soft,
    Hard,
}

impl Reliability {
    pub fn number(self) -> i32 {
        match self {
            Reliability::Soft => 1,
            Reliability::Hard => 2,
        }
    }

    pub fn from_number(n: i64) -> Option<Reliability> {
        match n {
            1 => Some(Reliability::Soft),
            2 => Some(Reliability::Hard),
            _ => None,
        }
    }
}

/// The allocation type. Only byte arrays are served by our depot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageType {
    ByteArray,
    Buffer,
    Fifo,
    CircularQueue,
}

impl StorageType {
    pub fn number(self) -> i32 {
        match self {
            StorageType::ByteArray => 1,
            StorageType::Buffer => 2,
            StorageType::Fifo => 3,
            StorageType::CircularQueue => 4,
        }
    }

    pub fn from_number(n: i64) -> Option<StorageType> {
        match n {
            1 => Some(StorageType::ByteArray),
            2 => Some(StorageType::Buffer),
            3 => Some(StorageType::Fifo),
            4 => Some(StorageType::CircularQueue),
            _ => None,
        }
    }
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("line is not printable ASCII")]
    NotText,
    #[error("empty line")]
    Empty,
    #[error("unknown protocol version {0:?}")]
    UnknownVersion(String),
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("wrong number of fields for {0}")]
    FieldCount(&'static str),
    #[error("field {0} is not a number")]
    NotNumber(&'static str),
    #[error("field {0} is out of range")]
    OutOfRange(&'static str),
    #[error("bad capability: {0}")]
    BadCapability(&'static str),
    #[error("bad reply: {0}")]
    BadReply(&'static str),
}

impl ProtoError {
    /// The IBP error a depot answers with when a request fails to parse.
    pub fn ibp_error(&self) -> IbpError {
        match self {
            ProtoError::LineTooLong
            | ProtoError::NotText
            | ProtoError::Empty
            | ProtoError::FieldCount(_)
            | ProtoError::NotNumber(_)
            | ProtoError::BadReply(_) => IbpError::BadFormat,
            ProtoError::UnknownVersion(_) => IbpError::ProtocolVersion,
            ProtoError::UnknownCommand(_) => IbpError::InvalidCommand,
            ProtoError::OutOfRange(_) => IbpError::InvalidParameter,
            ProtoError::BadCapability(_) => IbpError::WrongCapFormat,
        }
    }
}
