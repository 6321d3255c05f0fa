//! The crypto level: CRYPTO on the secure port opens a crypto session whose
//! keys are exported from the TLS connection; plain-TCP data connections on
//! `data_listen` join it and send sealed request lines (AES-128-CTR +
//! HMAC-SHA256, a strictly increasing counter per data connection); the
//! bulk data after the go-ahead travels in clear (splice/sendfile paths).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ibp_depot_client::seal::{self, SessionKeys};
use ibp_depot_client::wire::Transport;
use ibp_proto::{
    auth_refusal, parse_secure_request, IbpError, Reply, SecureRequest, MAX_SECURE_LINE,
};
use rand::RngCore;
use tokio_util::sync::CancellationToken;

use crate::conn::{next_request_line, Conn};
use crate::failure::{finish, Failure};
use crate::session::CryptoSession;
use crate::{transfer, Depot};

/// Longest sealed line on a data connection (a sealed v2 line grows by a
/// third in base64url, plus nonce and tag).
pub const MAX_DATA_LINE: usize = 2 * MAX_SECURE_LINE;

fn refuse(why: impl Into<String>) -> Failure {
    Failure::Refused(IbpError::CapAccessDenied, why.into())
}

fn ended(depot: &Depot, s: &CryptoSession) -> bool {
    let skew = depot
        .secure
        .as_ref()
        .map_or(0, |s| s.current().trust.max_skew);
    s.ended.load(Ordering::Acquire)
        || s.session.not_after.saturating_add(skew) < ibp_auth::unix_now()
}

/// CRYPTO (`2 21 <timeout>`): a new crypto session for this authenticated
/// TLS connection; reply `1 <session id hex> \n`.
pub async fn open(depot: &Depot, conn: &mut Conn) -> Result<(), Failure> {
    let session = conn
        .session
        .clone()
        .ok_or_else(|| refuse("CRYPTO before AUTH: authenticate with a depot grant first"))?;
    if session.delegated {
        return Err(refuse("CRYPTO in a delegated (depot) session"));
    }
    let skew = depot
        .secure
        .as_ref()
        .map_or(0, |s| s.current().trust.max_skew);
    if session.not_after.saturating_add(skew) < ibp_auth::unix_now() {
        return Err(refuse(
            "the session's depot grant has expired: AUTH again with a fresh grant",
        ));
    }
    // Bounded per connection and per peer (their memory is the depot's).
    let limits = &depot.guards.limits;
    if conn.crypto_ids.len() >= limits.crypto_per_connection {
        depot.metrics.crypto_session_refused();
        return Err(Failure::Refused(
            IbpError::WouldExceedLimit,
            format!(
                "crypto session limit: at most {} per connection (data connections may share one)",
                limits.crypto_per_connection
            ),
        ));
    }
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let mut m = [0u8; seal::KEY_MATERIAL_LEN];
    match conn.reader.get_ref() {
        Transport::Tls(t) => match t.as_ref() {
            tokio_rustls::TlsStream::Server(s) => {
                s.get_ref()
                    .1
                    .export_keying_material(&mut m, seal::EXPORTER_LABEL, Some(&id))
                    .map_err(|_| Failure::Reply(IbpError::Internal))?;
            }
            tokio_rustls::TlsStream::Client(_) => return Err(IbpError::Internal.into()),
        },
        Transport::Plain(_) => return Err(refuse("CRYPTO needs the TLS connection")),
    }
    let peer = session.identity.key_hash;
    if !depot.guards.take_crypto(peer) {
        depot.metrics.crypto_session_refused();
        return Err(Failure::Refused(
            IbpError::WouldExceedLimit,
            format!(
                "crypto session limit: at most {} per client key over all its connections; close some",
                limits.crypto_per_peer
            ),
        ));
    }
    // Counted for `peer` from here until the connection closes (with its
    // `crypto_ids`).
    conn.crypto_peer = Some(peer);
    let cs = Arc::new(CryptoSession {
        session,
        keys: SessionKeys::from_material(&m),
        joined: 0.into(),
        ended: false.into(),
    });
    depot
        .crypto_sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, cs);
    conn.crypto_ids.push(id);
    // The data port follows the session id, so that a client knows where
    // to join (clients of v3.0 read only the first word).
    let reply = match depot.data_port {
        Some(p) => format!("1 {} {p} \n", seal::hex(&id)),
        None => format!("1 {} \n", seal::hex(&id)),
    };
    conn.send(reply.as_bytes()).await?;
    Ok(())
}

/// Reads one line of a data connection (the JOIN line within
/// `first_request_timeout`, later lines as on the other ports); `None`
/// closes the connection.
async fn next_line(
    depot: &Depot,
    conn: &mut Conn,
    shutdown: &CancellationToken,
) -> Option<Vec<u8>> {
    next_request_line(depot, conn, shutdown, MAX_DATA_LINE).await
}

/// Serves one data connection: `3 22 <session id> \n` → `1 <connection number>\n`,
/// then sealed requests `3 <cmd> <sealed> \n` (STORE, WRITE, LOAD).
pub async fn serve(depot: &Depot, conn: &mut Conn, shutdown: CancellationToken) {
    let Some(line) = next_line(depot, conn, &shutdown).await else {
        return;
    };
    let text = String::from_utf8_lossy(&line);
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let cs = match tokens.as_slice() {
        ["3", "22", id] => seal::unhex::<16>(id).and_then(|id| {
            depot
                .crypto_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
        }),
        _ => {
            let _ = conn.reply(&Reply::Error(IbpError::BadFormat)).await;
            return;
        }
    };
    let Some(cs) = cs else {
        tracing::info!(peer = %conn.peer, "data connection for an unknown crypto session");
        let _ = conn
            .send(auth_refusal(IbpError::CapAccessDenied, "unknown crypto session").as_bytes())
            .await;
        return;
    };
    if ended(depot, &cs) {
        let _ = conn
            .send(
                auth_refusal(IbpError::CapAccessDenied, "the crypto session has ended").as_bytes(),
            )
            .await;
        return;
    }
    let conn_no = cs.joined.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
    conn.session = Some(cs.session.clone());
    if conn.reply(&Reply::Count(u64::from(conn_no))).await.is_err() {
        return;
    }
    let mut last = 0u64;
    while let Some(line) = next_line(depot, conn, &shutdown).await {
        let (name, result) = sealed_request(depot, conn, &cs, conn_no, &mut last, &line).await;
        if !finish(conn, name, result, Reply::Error).await {
            return;
        }
    }
}

async fn sealed_request(
    depot: &Depot,
    conn: &mut Conn,
    cs: &CryptoSession,
    conn_no: u32,
    last: &mut u64,
    line: &[u8],
) -> (&'static str, Result<(), Failure>) {
    let text = String::from_utf8_lossy(line);
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let ["3", cmd, sealed] = tokens.as_slice() else {
        return ("sealed", Err(IbpError::BadFormat.into()));
    };
    let plain = match cs.keys.open(cmd, sealed) {
        Ok((n, counter, plain)) if n == conn_no && counter > *last => {
            *last = counter;
            plain
        }
        Ok(_) => {
            return (
                "sealed",
                Err(refuse("replayed or reordered sealed request")),
            )
        }
        Err(_) => return ("sealed", Err(refuse("sealed request refused: bad MAC"))),
    };
    if ended(depot, cs) {
        return ("sealed", Err(refuse("the crypto session has ended")));
    }
    let request = match parse_secure_request(&plain) {
        Ok(r) => r,
        Err(e) => return ("sealed", Err(Failure::Reply(e.ibp_error()))),
    };
    let name = request.name();
    let matches = request
        .command()
        .is_some_and(|c| c.number().to_string() == *cmd);
    if !matches {
        return (name, Err(refuse("sealed command differs from the line's")));
    }
    let command = request.command();
    let result = match request {
        SecureRequest::Store(s) => transfer::store_bound(depot, conn, s).await,
        SecureRequest::Write(w) => transfer::write_bound(depot, conn, w).await,
        SecureRequest::Load(l) => transfer::load_with_ticket(depot, conn, l).await,
        _ => Err(refuse(format!(
            "{name} on a data connection: only STORE, WRITE and LOAD (the rest on the TLS connection)"
        ))),
    };
    depot.metrics.request(command, result.is_ok());
    (name, result)
}
