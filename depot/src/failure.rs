//! [`Failure`]: why a request ended without a success reply, and
//! [`finish`], which sends the reply it calls for.

use std::io;

use ibp_proto::{auth_refusal, IbpError, Reply};

use crate::conn::Conn;
use crate::resource::ResourceError;

/// Why a request ended without a success reply.
#[derive(Debug)]
pub enum Failure {
    /// Send this IBP error, then close.
    Reply(IbpError),
    /// The connection broke or timed out: close without a reply.
    Io(io::Error),
    /// Send this IBP error with a reason (a refused AUTH), then close.
    Refused(IbpError, String),
}

impl From<IbpError> for Failure {
    fn from(e: IbpError) -> Failure {
        Failure::Reply(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// A resource's refusal, at the handler boundary.
impl From<ResourceError> for Failure {
    fn from(e: ResourceError) -> Failure {
        match e {
            ResourceError::Ibp(e) => Failure::Reply(e),
            ResourceError::Quota(why) => Failure::Refused(IbpError::WouldExceedLimit, why),
        }
    }
}

/// Sends the reply of a failed request; false when the connection must close.
pub async fn finish(
    conn: &mut Conn,
    name: &str,
    result: Result<(), Failure>,
    error_reply: impl Fn(IbpError) -> Reply,
) -> bool {
    match result {
        Ok(()) => true,
        Err(Failure::Reply(e)) => {
            tracing::debug!(peer = %conn.peer, command = name, error = %e, "request refused");
            let _ = conn.reply(&error_reply(e)).await;
            false
        }
        Err(Failure::Refused(e, why)) => {
            tracing::info!(peer = %conn.peer, command = name, error = %e, reason = %why, "request refused");
            let _ = conn.send(auth_refusal(e, &why).as_bytes()).await;
            false
        }
        Err(Failure::Io(e)) => {
            tracing::info!(peer = %conn.peer, command = name, error = %e, "connection failed during request");
            false
        }
    }
}
