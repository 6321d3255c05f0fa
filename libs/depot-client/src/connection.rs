//! [`Connection`]: one connection to a depot at one security level, with
//! the operations every level offers (ALLOCATE, STORE, LOAD, COPY, PROBE,
//! CHNG, DECR, STATUS), each sent where that level sends it.

use std::sync::Arc;
use std::time::Duration;

use ibp_proto::{Attributes, Capability, IbpError, ProbeInfo, Reliability, Rid, StatusInfo};

use crate::clients::{Caps, DataClient, IbpClient, SecureClient};
use crate::error::{ClientError, Result};

/// `cap_type` of a release's DECR: the read reference count.
const READ_REFS: u8 = 1;

/// How a connection protects what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The legacy port: plain IBP 1.4, no authentication.
    Legacy,
    /// The secure port: TLS 1.3 and `AUTH`; data inside TLS.
    Full,
    /// The crypto level: an authenticated TLS connection for ALLOCATE and
    /// MANAGE (it keeps the crypto session alive) and a plain-TCP data
    /// connection joined to it (sealed request lines, data in clear).
    Crypto,
}

/// One connection to a depot at one [`Level`].
pub struct Connection {
    link: Link,
}

enum Link {
    Legacy(IbpClient),
    Full(Box<SecureClient>),
    Crypto {
        control: Box<SecureClient>,
        data: Box<DataClient>,
    },
}

/// What [`Connection::free`] found.
#[derive(Debug)]
pub enum Freed {
    /// The depot says the capability no longer exists: the DECR removed
    /// the allocation, or it had expired and been reaped already.
    Gone,
    /// Still allocated after the DECR: another reference (an INCR) pins it.
    Pinned { read_refs: u32 },
    /// The DECR failed (refused, or no answer): not freed.
    DecrFailed(ClientError),
    /// The DECR was accepted, but the PROBE failed: whether the allocation
    /// is gone is unknown.
    Unknown(ClientError),
}

impl Freed {
    /// Whether the connection may serve another request: the depot closes
    /// it after every error reply, also the "no such capability" that
    /// confirms a release.
    pub fn connection_open(&self) -> bool {
        matches!(self, Freed::Pinned { .. })
    }
}

/// Runs a connection step within `timeout`.
async fn within<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::timed_out())?
}

impl Connection {
    /// The legacy port at `addr` (`host:port`); connecting and every later
    /// step within `timeout`.
    pub async fn legacy(addr: &str, timeout: Duration) -> Result<Connection> {
        let mut c = within(timeout, IbpClient::connect(addr)).await?;
        c.set_timeout(timeout);
        Ok(Connection::from(c))
    }

    /// The secure port at `addr`: TLS 1.3 with `tls` (the depot's
    /// certificate checked for the host of `addr`), then `AUTH` with
    /// `grant`; without a grant no `AUTH` (a connection for LOADs with file
    /// tickets and STATUS only). Connecting and authenticating within
    /// `timeout`, and every later step.
    pub async fn full(
        addr: &str,
        tls: &Arc<rustls::ClientConfig>,
        grant: Option<&str>,
        timeout: Duration,
    ) -> Result<Connection> {
        let c = Connection::session(addr, tls, grant, timeout).await?;
        Ok(Connection::from(c))
    }

    /// The crypto level at `addr`: [`full`](Self::full), then CRYPTO and a
    /// data connection to the port its reply names
    /// ([`ClientError::NoDataPort`] when it names none), each step within
    /// `timeout`.
    pub async fn crypto(
        addr: &str,
        tls: &Arc<rustls::ClientConfig>,
        grant: Option<&str>,
        timeout: Duration,
    ) -> Result<Connection> {
        let mut control = Connection::session(addr, tls, grant, timeout).await?;
        let session = within(timeout, control.open_crypto()).await?;
        let port = session.data_port.ok_or(ClientError::NoDataPort)?;
        let host = host_of(addr);
        let data_addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut data = within(timeout, DataClient::connect(&data_addr, &session)).await?;
        data.set_timeout(timeout);
        Ok(Connection {
            link: Link::Crypto {
                control: Box::new(control),
                data: Box::new(data),
            },
        })
    }

    async fn session(
        addr: &str,
        tls: &Arc<rustls::ClientConfig>,
        grant: Option<&str>,
        timeout: Duration,
    ) -> Result<SecureClient> {
        within(timeout, async {
            let mut c = SecureClient::connect_with(addr, host_of(addr), tls).await?;
            c.set_timeout(timeout);
            if let Some(grant) = grant {
                c.auth(grant).await?;
            }
            Ok(c)
        })
        .await
    }

    /// The connection's security level.
    pub fn level(&self) -> Level {
        match self.link {
            Link::Legacy(_) => Level::Legacy,
            Link::Full(_) => Level::Full,
            Link::Crypto { .. } => Level::Crypto,
        }
    }

    /// The connection that carries ALLOCATE, MANAGE and STATUS.
    fn control(&mut self) -> &mut IbpClient {
        match &mut self.link {
            Link::Legacy(c) => c,
            Link::Full(c) => c.inner_mut(),
            Link::Crypto { control, .. } => control.inner_mut(),
        }
    }

    /// QUOTA: the caller's own byte quotas and use at the depot (secure
    /// levels only: the legacy port knows no owner).
    pub async fn quota(&mut self) -> Result<ibp_proto::QuotaInfo> {
        match &mut self.link {
            Link::Legacy(_) => Err(ClientError::Ibp(ibp_proto::IbpError::InvalidCommand)),
            Link::Full(c) => c.quota().await,
            Link::Crypto { control, .. } => control.quota().await,
        }
    }

    /// ALLOCATE on the default resource.
    pub async fn allocate(
        &mut self,
        reliability: Reliability,
        duration: i64,
        size: u64,
    ) -> Result<Caps> {
        match &mut self.link {
            Link::Legacy(c) => c.allocate(Rid(0), reliability, duration, size).await,
            Link::Full(c) => c.allocate(Rid(0), reliability, duration, size).await,
            Link::Crypto { control, .. } => {
                control.allocate(Rid(0), reliability, duration, size).await
            }
        }
    }

    /// STORE (append) `data`; `uuid` binds a secure allocation to its file
    /// (the legacy port has no such binding and ignores it).
    pub async fn store(&mut self, cap: &Capability, uuid: &str, data: &[u8]) -> Result<u64> {
        match &mut self.link {
            Link::Legacy(c) => c.store(cap, data).await,
            Link::Full(c) => c.store(cap, uuid, data).await,
            Link::Crypto { data: d, .. } => d.store(cap, uuid, data).await,
        }
    }

    /// LOAD `size` bytes at `offset` into `buf` (replacing its contents);
    /// the secure levels need the metadata manager's file `ticket` (the
    /// full level sends the line without one when there is none).
    pub async fn load_into(
        &mut self,
        cap: &Capability,
        offset: u64,
        size: u64,
        ticket: Option<&str>,
        buf: &mut Vec<u8>,
    ) -> Result<u64> {
        match &mut self.link {
            Link::Legacy(c) => c.load_into(cap, offset, size, buf).await,
            Link::Full(c) => match ticket {
                Some(t) => c.load_into(cap, offset, size, t, buf).await,
                None => {
                    *buf = c.load(cap, offset, size, None).await?;
                    Ok(buf.len() as u64)
                }
            },
            Link::Crypto { data, .. } => match ticket {
                Some(t) => data.load_into(cap, offset, size, t, buf).await,
                None => Err(ClientError::Refused {
                    error: IbpError::CapAccessDenied,
                    reason: "a crypto-level LOAD needs a metadata-manager ticket".into(),
                }),
            },
        }
    }

    /// COPY `size` bytes from `offset` of the allocation behind `read` (on
    /// this depot) into `target`, a WRITE capability on another depot: the
    /// legacy COPY on the legacy port; at the secure levels the secure COPY
    /// on the TLS connection, with `grant` (a depot grant for the target
    /// held by this depot's key) and the file `uuid`. The count copied.
    pub async fn copy(
        &mut self,
        read: &Capability,
        target: &Capability,
        offset: u64,
        size: u64,
        grant: Option<&str>,
        uuid: &str,
    ) -> Result<u64> {
        let need_grant = || ClientError::Refused {
            error: IbpError::CapAccessDenied,
            reason: "a secure COPY needs a grant for the target held by the source depot".into(),
        };
        match &mut self.link {
            Link::Legacy(c) => c.copy(read, target, offset, size).await,
            Link::Full(c) => {
                let grant = grant.ok_or_else(need_grant)?;
                c.copy(read, target, offset, size, grant, uuid).await
            }
            Link::Crypto { control, .. } => {
                let grant = grant.ok_or_else(need_grant)?;
                control.copy(read, target, offset, size, grant, uuid).await
            }
        }
    }

    /// MANAGE PROBE.
    pub async fn probe(&mut self, cap: &Capability) -> Result<ProbeInfo> {
        self.control().probe(cap).await
    }

    /// MANAGE CHNG.
    pub async fn change(&mut self, cap: &Capability, attrs: Attributes) -> Result<()> {
        self.control().change(cap, attrs).await
    }

    /// MANAGE DECR of the `cap_type` reference count (1 read, 2 write).
    pub async fn decr(&mut self, cap: &Capability, cap_type: u8) -> Result<()> {
        self.control().decr(cap, cap_type).await
    }

    /// STATUS INQ of a resource.
    pub async fn status(&mut self, rid: Rid) -> Result<StatusInfo> {
        self.control().status(rid).await
    }

    /// STATUS INQ with a body of at most `max_body` bytes.
    pub async fn status_within(&mut self, rid: Rid, max_body: u64) -> Result<StatusInfo> {
        self.control().status_within(rid, max_body).await
    }

    /// STATUS RES: the depot's resources.
    pub async fn resources(&mut self) -> Result<Vec<Rid>> {
        self.control().resources().await
    }

    /// Closes the connection politely (TLS close_notify, FIN), each side
    /// within the timeout.
    pub async fn shutdown(&mut self) {
        if let Link::Crypto { data, .. } = &mut self.link {
            data.shutdown().await;
        }
        self.control().shutdown().await;
    }

    /// Frees an allocation with its MANAGE capability and confirms it:
    /// DECR of the read reference count (the depot removes the allocation
    /// when it reaches 0), then PROBE with the same capability. Only the
    /// depot saying the capability no longer exists is [`Freed::Gone`].
    pub async fn free(&mut self, cap: &Capability) -> Freed {
        let gone = |e: &ClientError| e.ibp() == Some(IbpError::CapNotFound);
        match self.decr(cap, READ_REFS).await {
            Ok(()) => {}
            Err(e) if gone(&e) => return Freed::Gone,
            Err(e) => return Freed::DecrFailed(e),
        }
        match self.probe(cap).await {
            Ok(p) => Freed::Pinned {
                read_refs: p.read_refs,
            },
            Err(e) if gone(&e) => Freed::Gone,
            Err(e) => Freed::Unknown(e),
        }
    }
}

impl From<IbpClient> for Connection {
    fn from(c: IbpClient) -> Connection {
        Connection {
            link: Link::Legacy(c),
        }
    }
}

impl From<SecureClient> for Connection {
    fn from(c: SecureClient) -> Connection {
        Connection {
            link: Link::Full(Box::new(c)),
        }
    }
}

/// The host part of `host:port` (an IPv6 address without its brackets, as
/// a TLS server name).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    use ibp_proto::Reply;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A scripted depot on loopback: answers each request line with the
    /// next reply of `replies`, one connection per reply list.
    async fn scripted(replies: Vec<Vec<Reply>>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for script in replies {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                for r in script {
                    let _ = s.read(&mut buf).await.unwrap();
                    s.write_all(r.encode().as_bytes()).await.unwrap();
                }
            }
        });
        addr
    }

    fn cap(addr: &str) -> Capability {
        format!("ibp://{addr}/0#{}/1/MANAGE", "k".repeat(32))
            .parse()
            .unwrap()
    }

    fn probe(read_refs: u32) -> Reply {
        Reply::Probe(ProbeInfo {
            read_refs,
            write_refs: 1,
            size: 0,
            max_size: 10,
            seconds_left: 60,
            reliability: 1,
            storage: 1,
        })
    }

    #[tokio::test]
    async fn free_is_gone_only_when_the_depot_says_no_such_capability() {
        let t = Duration::from_secs(5);
        let gone = Reply::Error(IbpError::CapNotFound);
        let refused = Reply::Error(IbpError::CapAccessDenied);
        let addr = scripted(vec![
            vec![Reply::Ok, gone.clone()],
            vec![gone],
            // Pinned: the connection stays open for the next DECR.
            vec![Reply::Ok, probe(1), refused.clone()],
            vec![Reply::Ok, refused],
        ])
        .await;
        let c = cap(&addr);
        // DECR, then PROBE: no such capability.
        let mut conn = Connection::legacy(&addr, t).await.unwrap();
        assert_eq!(conn.level(), Level::Legacy);
        let f = conn.free(&c).await;
        assert!(matches!(f, Freed::Gone), "{f:?}");
        assert!(!f.connection_open());
        // Expired and reaped already: the DECR says so (the legacy client
        // reconnects after the error reply).
        assert!(matches!(conn.free(&c).await, Freed::Gone));
        // Pinned by another reference: the connection stays usable.
        let f = conn.free(&c).await;
        assert!(matches!(f, Freed::Pinned { read_refs: 1 }), "{f:?}");
        assert!(f.connection_open());
        // DECR refused; PROBE refused after an accepted DECR.
        let f = conn.free(&c).await;
        assert!(
            matches!(&f, Freed::DecrFailed(e) if e.ibp() == Some(IbpError::CapAccessDenied)),
            "{f:?}"
        );
        let f = conn.free(&c).await;
        assert!(
            matches!(&f, Freed::Unknown(e) if e.ibp() == Some(IbpError::CapAccessDenied)),
            "{f:?}"
        );
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("d1.example.org:6714"), "d1.example.org");
        assert_eq!(host_of("[::1]:6714"), "::1");
        assert_eq!(host_of("nohost"), "nohost");
    }
}
