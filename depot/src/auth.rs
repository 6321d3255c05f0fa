//! The secure port's handshake (TLS 1.3 with the client's proxy chain,
//! bounded by `handshake_timeout`) and `AUTH` with a depot grant from the
//! L-Bone, checked against the depot's VO policy.

use std::net::SocketAddr;

use ibp_auth::tokens::DepotGrant;
use ibp_auth::Identity;
use ibp_depot_client::wire::{timed, Transport};
use ibp_proto::{Auth, IbpError, Reply};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::failure::Failure;
use crate::journal::{Owner, MAX_OWNER_FIELD};
use crate::session::Session;
use crate::Depot;

/// OID of the RFC 3820 ProxyCertInfo extension.
const PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";

/// The key hash of a verified chain's leaf when that leaf is a plain
/// end-entity certificate (no proxy): a depot or service certificate.
fn plain_leaf_key_hash(chain: Option<&[CertificateDer<'_>]>) -> Option<[u8; 32]> {
    let leaf = chain?.first()?;
    let (_, c) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let proxy = c
        .extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == PROXY_CERT_INFO);
    (!proxy).then(|| ibp_auth::key_hash(c.public_key().raw))
}

/// The TLS handshake (bounded by `handshake_timeout`, however slowly the
/// client sends); `None` closes the connection.
pub async fn handshake(depot: &Depot, stream: TcpStream, peer: SocketAddr) -> Option<Conn> {
    let secure = depot.secure.as_ref()?.current();
    let tls = match timed(
        depot.guards.limits.handshake,
        secure.acceptor.accept(stream),
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                depot.metrics.connection_timed_out();
            }
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
    };
    let peer_certs = tls.get_ref().1.peer_certificates();
    let identity = ibp_auth::tls::peer_identity(peer_certs, &secure.trust, ibp_auth::unix_now());
    // The chain verified in the handshake; a plain end-entity leaf may only
    // authenticate with a grant delegated to its key (secure COPY).
    let plain_key = match &identity {
        Err(ibp_auth::AuthError::NoAttributes) => plain_leaf_key_hash(peer_certs),
        _ => None,
    };
    let identity = match identity {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err("no client certificate".to_owned()),
        Err(e) => Err(format!("client credential refused: {e}")),
    };
    let mut conn = Conn::with_transport(
        Transport::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
        peer,
        depot.io_timeout,
    );
    conn.peer_identity = Some(identity);
    conn.peer_plain_key = plain_key;
    Some(conn)
}

/// AUTH: the grant must be validly signed by a trusted L-Bone key, within
/// its lifetime, name this depot, be bound to the TLS peer's key, carry the
/// peer's verified VO and VO ID (of a multi-VO proxy: its identity in the
/// grant's VO), and the VO must be served here.
pub async fn auth(depot: &Depot, conn: &mut Conn, a: Auth) -> Result<(), Failure> {
    let refuse = |why: String| Failure::Refused(IbpError::CapAccessDenied, why);
    let secure = depot
        .secure
        .as_ref()
        .ok_or_else(|| refuse("no secure port".into()))?
        .current();
    let now = ibp_auth::unix_now();
    let identity = match (&conn.peer_identity, conn.peer_plain_key) {
        (Some(Ok(id)), _) => id.clone(),
        (Some(Err(_)), Some(key)) => return auth_delegated(depot, conn, a, key, now).await,
        (Some(Err(why)), None) => return Err(refuse(why.clone())),
        (None, _) => return Err(refuse("no verified client credential".into())),
    };
    let grant = DepotGrant::verify(
        &a.grant,
        &secure.trust,
        &secure.grant_name,
        &identity.key_hash,
        now,
    )
    .map_err(|e| refuse(format!("depot grant refused: {e}")))?;
    // The session acts for the grant's VO alone: a multi-VO proxy's
    // identity in that VO (docs/identity.md, "Several VOs in one proxy").
    let identity = identity
        .for_vo(&grant.vo)
        .map_err(|e| refuse(format!("depot grant is for VO {}: {e}", grant.vo)))?;
    if grant.vo != identity.vo || grant.vo_id != identity.vo_id {
        return Err(refuse(format!(
            "depot grant is for {}/{}, the credential is {}/{}",
            grant.vo, grant.vo_id, identity.vo, identity.vo_id
        )));
    }
    if grant.vo.len() > MAX_OWNER_FIELD || grant.vo_id.len() > MAX_OWNER_FIELD {
        return Err(refuse("VO name or VO ID too long".into()));
    }
    let policy = secure
        .vos
        .get(&grant.vo)
        .cloned()
        .ok_or_else(|| refuse(format!("VO {} is not served by this depot", grant.vo)))?;
    tracing::info!(peer = %conn.peer, vo = %grant.vo, vo_id = %grant.vo_id, subject = %identity.subject, "IBP_auth session");
    conn.session = Some(Session {
        owner: Owner {
            vo: grant.vo,
            vo_id: grant.vo_id,
        },
        identity,
        policy,
        not_after: grant.not_after,
        delegated: false,
    });
    conn.reply(&Reply::Ok).await?;
    Ok(())
}

/// AUTH of a peer whose certificate is a plain end-entity certificate that
/// verified against the CAs (another depot, the source of a secure COPY):
/// the grant must be bound to that certificate's key. Such a certificate
/// carries no VO attributes, so the identity is the grant's VO and VO ID:
/// the L-Bone signed them for the user who asked for a grant bound to this
/// depot's key, and only the holder of that key can use it. The session
/// may only STORE and WRITE (into allocations whose capabilities the user
/// handed over), under the VO's policy.
async fn auth_delegated(
    depot: &Depot,
    conn: &mut Conn,
    a: Auth,
    key: [u8; 32],
    now: i64,
) -> Result<(), Failure> {
    let refuse = |why: String| Failure::Refused(IbpError::CapAccessDenied, why);
    let secure = depot
        .secure
        .as_ref()
        .ok_or_else(|| refuse("no secure port".into()))?
        .current();
    let grant = DepotGrant::verify(&a.grant, &secure.trust, &secure.grant_name, &key, now)
        .map_err(|e| refuse(format!("delegated depot grant refused: {e}")))?;
    if grant.vo.len() > MAX_OWNER_FIELD || grant.vo_id.len() > MAX_OWNER_FIELD {
        return Err(refuse("VO name or VO ID too long".into()));
    }
    let policy = secure
        .vos
        .get(&grant.vo)
        .cloned()
        .ok_or_else(|| refuse(format!("VO {} is not served by this depot", grant.vo)))?;
    tracing::info!(peer = %conn.peer, vo = %grant.vo, vo_id = %grant.vo_id, "IBP_auth delegated session (depot acting for a user)");
    conn.session = Some(Session {
        identity: Identity {
            vo: grant.vo.clone(),
            vo_id: grant.vo_id.clone(),
            groups: Vec::new(),
            subject: "(depot certificate)".into(),
            key_hash: key,
            not_after: grant.not_after,
            scope: ibp_auth::Scope::Full,
            others: Default::default(),
        },
        owner: Owner {
            vo: grant.vo,
            vo_id: grant.vo_id,
        },
        policy,
        not_after: grant.not_after,
        delegated: true,
    });
    conn.reply(&Reply::Ok).await?;
    Ok(())
}
