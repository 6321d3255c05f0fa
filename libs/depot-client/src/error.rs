//! What a depot operation can fail with.

use std::io;

use ibp_proto::{IbpError, ProtoError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The depot answered with an IBP error: its words and name
    /// (`the depot refuses: ... (IBP_E_...)`, see [`IbpError::describe`]).
    #[error("{0}")]
    Ibp(IbpError),
    /// The TCP connection could not be made (refused, unreachable, timed out).
    #[error("connection to the depot failed: {0}")]
    Connect(io::Error),
    /// The connection broke, timed out, or the TLS handshake failed.
    #[error("connection to the depot failed: {0}")]
    Io(#[from] io::Error),
    #[error("depot sent a malformed reply: {0}")]
    Proto(#[from] ProtoError),
    /// An error reply with a reason (the secure port's refusals).
    #[error("{error}: {reason}")]
    Refused { error: IbpError, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    /// A STATUS body longer than the caller accepts.
    #[error("depot sent a malformed reply: STATUS body of {0} bytes")]
    StatusTooLong(u64),
    /// The depot's CRYPTO reply names no data port (a depot before v3.1):
    /// it offers no crypto level.
    #[error("the depot offers no crypto level (its CRYPTO reply names no data port)")]
    NoDataPort,
}

impl ClientError {
    /// The IBP error the depot answered with, if it answered with one.
    pub fn ibp(&self) -> Option<IbpError> {
        match self {
            ClientError::Ibp(e) | ClientError::Refused { error: e, .. } => Some(*e),
            _ => None,
        }
    }

    /// A step that did not finish within its time.
    pub fn timed_out() -> ClientError {
        ClientError::Io(io::Error::from(io::ErrorKind::TimedOut))
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
