//! The three clients under [`crate::Connection`], usable on their own for
//! what one level alone does (tests, benchmarks, the depot's COPY):
//! [`IbpClient`] (the legacy port, version-1 requests), [`SecureClient`]
//! (the secure port: TLS 1.3, AUTH, version-2 requests) and [`DataClient`]
//! (a data connection of the crypto level: sealed request lines, data in
//! clear).
//!
//! After an error reply the depot closes the connection; the legacy client
//! then reconnects on its next request, as libibp does. The secure and data
//! clients do not (a new session needs a new AUTH): connect again.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ibp_auth::{ProxyCredential, TrustStore};
use ibp_proto::{
    Allocate, Attributes, Auth, Capability, Expect, IbpError, Load, Manage, ManageOp, ProbeInfo,
    ProtoError, QuotaInfo, Reliability, Reply, Request, Rid, SecureLoad, SecureRequest,
    SecureStore, SecureWrite, Status, StatusInfo, StatusOp, StorageType, Store, Version, Write,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{ClientError, Result};
use crate::seal;
use crate::wire::{read_line, timed, Line, Transport};

/// Time allowed for each step when the caller sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest STATUS INQ body [`IbpClient::status`] accepts.
pub const MAX_STATUS_BODY: u64 = (1 << 20) - 1;

/// The three capabilities of a new allocation.
#[derive(Debug, Clone)]
pub struct Caps {
    pub read: Capability,
    pub write: Capability,
    pub manage: Capability,
}

pub struct IbpClient {
    addr: String,
    conn: Option<BufReader<Transport>>,
    timeout: Duration,
    /// A TLS connection is not re-established behind the caller's back.
    secure: bool,
}

impl IbpClient {
    /// Connects to `host:port`.
    pub async fn connect(addr: &str) -> Result<IbpClient> {
        let mut c = IbpClient {
            addr: addr.to_owned(),
            conn: None,
            timeout: DEFAULT_TIMEOUT,
            secure: false,
        };
        c.stream().await?;
        Ok(c)
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    async fn stream(&mut self) -> Result<&mut BufReader<Transport>> {
        if self.conn.is_none() && !self.secure {
            let s = timed(self.timeout, TcpStream::connect(&self.addr))
                .await
                .map_err(ClientError::Connect)?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::with_capacity(64 * 1024, Transport::Plain(s)));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected).into())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let t = self.timeout;
        let s = self.stream().await?;
        let w = s.get_mut();
        let sent = timed(t, async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await;
        if let Err(e) = sent {
            self.conn = None;
            return Err(e.into());
        }
        Ok(())
    }

    async fn reply(&mut self, expect: Expect) -> Result<Reply> {
        let t = self.timeout;
        let s = self.stream().await?;
        let line = match timed(t, read_line(s)).await {
            Ok(Line::Text(l)) => l,
            Ok(Line::Eof) => {
                self.conn = None;
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            Ok(Line::TooLong) => {
                self.conn = None;
                return Err(ProtoError::LineTooLong.into());
            }
            Err(e) => {
                self.conn = None;
                return Err(e.into());
            }
        };
        match Reply::parse(&line, expect) {
            Ok(Reply::Error(e) | Reply::StatusError(e)) => {
                self.conn = None;
                // ` <code> <reason>\n`: the secure port says why.
                let text = String::from_utf8_lossy(&line);
                let reason = text.trim().split_once(' ').map(|(_, r)| r.trim());
                match reason {
                    Some(r) if !r.is_empty() => Err(ClientError::Refused {
                        error: e,
                        reason: r.to_owned(),
                    }),
                    _ => Err(ClientError::Ibp(e)),
                }
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                Err(e.into())
            }
        }
    }

    /// Sends a line and returns the reply line's text when it is not an
    /// error reply (for replies no [`Expect`] describes).
    async fn call_line_text(&mut self, line: &str) -> Result<String> {
        self.send(line.as_bytes()).await?;
        let t = self.timeout;
        let s = self.stream().await?;
        let reply = match timed(t, read_line(s)).await {
            Ok(Line::Text(l)) => l,
            _ => {
                self.conn = None;
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        };
        let text = String::from_utf8_lossy(&reply).into_owned();
        if text.trim_start().starts_with('-') {
            self.conn = None;
            let e = match Reply::parse(&reply, Expect::Ok)? {
                Reply::Error(e) | Reply::StatusError(e) => e,
                _ => IbpError::Generic,
            };
            let reason = text.trim().split_once(' ').map(|(_, r)| r.trim());
            return Err(match reason {
                Some(r) if !r.is_empty() => ClientError::Refused {
                    error: e,
                    reason: r.to_owned(),
                },
                _ => ClientError::Ibp(e),
            });
        }
        Ok(text)
    }

    async fn call(&mut self, req: &Request, expect: Expect) -> Result<Reply> {
        self.send(req.encode().as_bytes()).await?;
        self.reply(expect).await
    }

    async fn call_line(&mut self, line: &str, expect: Expect) -> Result<Reply> {
        self.send(line.as_bytes()).await?;
        self.reply(expect).await
    }

    pub async fn allocate(
        &mut self,
        rid: Rid,
        reliability: Reliability,
        duration: i64,
        size: u64,
    ) -> Result<Caps> {
        let req = Request::Allocate(Allocate {
            version: Version::V1,
            rid: Some(rid),
            reliability,
            storage: StorageType::ByteArray,
            duration,
            size,
            timeout: 300,
        });
        let reply = self.call(&req, Expect::Allocated).await?;
        caps_of(reply)
    }

    /// STORE (append) `data`; returns the count the depot acknowledged.
    pub async fn store(&mut self, cap: &Capability, data: &[u8]) -> Result<u64> {
        let req = Request::Store(Store {
            cap: cap.cap.clone(),
            size: data.len() as u64,
            timeout: 300,
        });
        self.upload(&req.encode(), data).await
    }
}

fn caps_of(reply: Reply) -> Result<Caps> {
    {
        match reply {
            Reply::Allocated {
                read,
                write,
                manage,
            } => Ok(Caps {
                read,
                write,
                manage,
            }),
            _ => Err(ProtoError::BadReply("not an ALLOCATE reply").into()),
        }
    }
}

impl IbpClient {
    /// WRITE `data` at `offset`.
    pub async fn write_at(&mut self, cap: &Capability, offset: u64, data: &[u8]) -> Result<u64> {
        let req = Request::Write(Write {
            cap: cap.cap.clone(),
            offset,
            size: data.len() as u64,
            timeout: 300,
        });
        self.upload(&req.encode(), data).await
    }

    /// Starts a STORE (append) of `size` bytes the caller then sends on
    /// [`tcp`](Self::tcp) itself (the depot's COPY sends them with
    /// sendfile); [`store_end`](Self::store_end) reads the count.
    /// `server_timeout` is the request's timeout field (seconds).
    pub async fn store_begin(
        &mut self,
        cap: &Capability,
        size: u64,
        server_timeout: i64,
    ) -> Result<()> {
        let req = Request::Store(Store {
            cap: cap.cap.clone(),
            size,
            timeout: server_timeout,
        });
        self.call(&req, Expect::Ok).await.map(drop)
    }

    /// The TCP socket of a plain connection, when nothing read from it is
    /// waiting in the buffer (after [`store_begin`](Self::store_begin)).
    pub fn tcp(&self) -> Option<&TcpStream> {
        let c = self.conn.as_ref()?;
        if !c.buffer().is_empty() {
            return None;
        }
        c.get_ref().tcp()
    }

    /// The count the depot acknowledged for a STORE begun with
    /// [`store_begin`](Self::store_begin).
    pub async fn store_end(&mut self) -> Result<u64> {
        match self.reply(Expect::Count).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(ProtoError::BadReply("not a count").into()),
        }
    }

    async fn upload(&mut self, line: &str, data: &[u8]) -> Result<u64> {
        self.call_line(line, Expect::Ok).await?;
        self.send(data).await?;
        match self.reply(Expect::Count).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(ProtoError::BadReply("not a count").into()),
        }
    }

    /// LOAD into `buf` (replacing its contents); returns the bytes received,
    /// which is less than `size` at the end of the data.
    pub async fn load_into(
        &mut self,
        cap: &Capability,
        offset: u64,
        size: u64,
        buf: &mut Vec<u8>,
    ) -> Result<u64> {
        let req = Request::Load(Load {
            cap: cap.cap.clone(),
            offset,
            size,
            timeout: 300,
        });
        self.receive_payload(&req.encode(), size, buf).await
    }

    async fn receive_payload(&mut self, line: &str, size: u64, buf: &mut Vec<u8>) -> Result<u64> {
        let n = match self.call_line(line, Expect::Payload).await? {
            Reply::Payload(n) if n <= size => n,
            _ => return Err(ProtoError::BadReply("bad LOAD length").into()),
        };
        // Read into spare capacity: no zero-fill of the whole buffer first.
        buf.clear();
        buf.reserve(n as usize);
        let t = self.timeout;
        let s = self.stream().await?;
        match timed(t, s.take(n).read_to_end(buf)).await {
            Ok(got) if got as u64 == n => Ok(n),
            Ok(_) => {
                self.conn = None;
                Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
            }
            Err(e) => {
                self.conn = None;
                Err(e.into())
            }
        }
    }

    pub async fn load(&mut self, cap: &Capability, offset: u64, size: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.load_into(cap, offset, size, &mut buf).await?;
        Ok(buf)
    }

    /// COPY (depot to depot) from a READ capability of this depot to a WRITE
    /// capability of another.
    pub async fn copy(
        &mut self,
        source: &Capability,
        target: &Capability,
        offset: u64,
        size: u64,
    ) -> Result<u64> {
        let req = Request::Copy(ibp_proto::Copy {
            source: source.cap.clone(),
            target: target.clone(),
            offset,
            size,
            source_timeout: 300,
            target_timeout: 300,
            mover_timeout: 300,
        });
        match self.call(&req, Expect::Count).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(ProtoError::BadReply("not a count").into()),
        }
    }

    async fn manage(&mut self, cap: &Capability, op: ManageOp, cap_type: u8) -> Result<Reply> {
        let line = self.manage_line(cap, op, cap_type);
        let expect = if matches!(op, ManageOp::Probe(_)) {
            Expect::Probe
        } else {
            Expect::Ok
        };
        self.call_line(&line, expect).await
    }

    fn manage_line(&self, cap: &Capability, op: ManageOp, cap_type: u8) -> String {
        let m = Manage {
            cap: cap.cap.clone(),
            op,
            cap_type,
            timeout: 300,
        };
        if self.secure {
            SecureRequest::Manage(m).encode()
        } else {
            Request::Manage(m).encode()
        }
    }

    pub async fn probe(&mut self, cap: &Capability) -> Result<ProbeInfo> {
        let attrs = Attributes {
            max_size: 0,
            duration: 0,
            reliability: 0,
        };
        match self.manage(cap, ManageOp::Probe(attrs), 0).await? {
            Reply::Probe(p) => Ok(p),
            _ => Err(ProtoError::BadReply("not a PROBE reply").into()),
        }
    }

    pub async fn incr(&mut self, cap: &Capability, cap_type: u8) -> Result<()> {
        self.manage(cap, ManageOp::Incr, cap_type).await.map(drop)
    }

    pub async fn decr(&mut self, cap: &Capability, cap_type: u8) -> Result<()> {
        self.manage(cap, ManageOp::Decr, cap_type).await.map(drop)
    }

    pub async fn change(&mut self, cap: &Capability, attrs: Attributes) -> Result<()> {
        self.manage(cap, ManageOp::Change(attrs), 0).await.map(drop)
    }

    /// STATUS INQ of a resource.
    pub async fn status(&mut self, rid: Rid) -> Result<StatusInfo> {
        self.status_within(rid, MAX_STATUS_BODY).await
    }

    /// STATUS RES: the depot's resources.
    pub async fn resources(&mut self) -> Result<Vec<Rid>> {
        let status = Status {
            version: Version::V1,
            op: StatusOp::Resources,
            timeout: 300,
        };
        let line = if self.secure {
            SecureRequest::Status(status).encode()
        } else {
            Request::Status(status).encode()
        };
        match self.call_line(&line, Expect::Resources).await? {
            Reply::Resources(rids) => Ok(rids),
            _ => Err(ProtoError::BadReply("not a RES reply").into()),
        }
    }

    /// Closes the connection politely (TLS close_notify, FIN), within the
    /// timeout.
    pub async fn shutdown(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = timed(self.timeout, c.get_mut().shutdown()).await;
        }
    }

    /// [`status`](Self::status) with a body of at most `max_body` bytes
    /// (a longer one is [`ClientError::StatusTooLong`]).
    pub async fn status_within(&mut self, rid: Rid, max_body: u64) -> Result<StatusInfo> {
        let status = Status {
            version: Version::V1,
            op: StatusOp::Inquire {
                rid: Some(rid),
                password: "ibp".into(),
            },
            timeout: 300,
        };
        let line = if self.secure {
            SecureRequest::Status(status).encode()
        } else {
            Request::Status(status).encode()
        };
        let n = match self.call_line(&line, Expect::Payload).await? {
            Reply::Payload(n) if n <= max_body => n,
            Reply::Payload(n) => return Err(ClientError::StatusTooLong(n)),
            _ => return Err(ProtoError::BadReply("bad STATUS length").into()),
        };
        let mut body = vec![0u8; n as usize];
        let t = self.timeout;
        let s = self.stream().await?;
        timed(t, s.read_exact(&mut body)).await?;
        let body = String::from_utf8(body).map_err(|_| ProtoError::NotText)?;
        Ok(StatusInfo::parse(&body)?)
    }
}

/// A client of the secure port: TLS 1.3 with a proxy credential, then AUTH
/// with a depot grant, then version-2 requests.
pub struct SecureClient {
    inner: IbpClient,
}

impl SecureClient {
    /// TLS handshake with `addr` (`host:port`), verifying the depot's
    /// certificate for `server_name` against the CAs of `trust` and
    /// presenting `credential`.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        trust: &TrustStore,
        credential: &ProxyCredential,
    ) -> Result<SecureClient> {
        let cfg = SecureClient::config(trust, credential)?;
        SecureClient::connect_with(addr, server_name, &cfg).await
    }

    /// The TLS configuration [`connect`](Self::connect) builds; build it once
    /// and use [`connect_with`](Self::connect_with) for many connections.
    pub fn config(
        trust: &TrustStore,
        credential: &ProxyCredential,
    ) -> Result<Arc<rustls::ClientConfig>> {
        ibp_auth::tls::client_config(trust, Some(credential))
            .map(Arc::new)
            .map_err(|e| ClientError::Tls(e.to_string()))
    }

    /// TLS handshake with `addr` using a prepared configuration.
    pub async fn connect_with(
        addr: &str,
        server_name: &str,
        cfg: &Arc<rustls::ClientConfig>,
    ) -> Result<SecureClient> {
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let timeout = DEFAULT_TIMEOUT;
        let tcp = timed(timeout, TcpStream::connect(addr))
            .await
            .map_err(ClientError::Connect)?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(cfg.clone());
        let tls = timed(timeout, connector.connect(name, tcp)).await?;
        Ok(SecureClient {
            inner: IbpClient {
                addr: addr.to_owned(),
                conn: Some(BufReader::with_capacity(
                    64 * 1024,
                    Transport::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))),
                )),
                timeout,
                secure: true,
            },
        })
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.inner.timeout = t;
    }

    /// The connection under the TLS session, for the requests both ports
    /// word alike (MANAGE, STATUS: encoded as version 2 here).
    pub(crate) fn inner_mut(&mut self) -> &mut IbpClient {
        &mut self.inner
    }

    /// Whether this connection can carry another request: open, nothing
    /// unread (no byte buffered here nor waiting on the socket: a peer
    /// that closed, or sent an alert, has left an end of file or bytes
    /// nobody asked for). For connections kept idle between requests.
    pub fn idle_and_open(&self) -> bool {
        let Some(c) = self.inner.conn.as_ref() else {
            return false;
        };
        if !c.buffer().is_empty() {
            return false;
        }
        let Transport::Tls(t) = c.get_ref() else {
            return false;
        };
        match t.as_ref() {
            tokio_rustls::TlsStream::Client(c) => quiet(c.get_ref().0),
            tokio_rustls::TlsStream::Server(_) => false,
        }
    }

    /// The TLS cipher suite of the connection (while it is open).
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.inner
            .conn
            .as_ref()?
            .get_ref()
            .tls()?
            .negotiated_cipher_suite()
            .map(|s| s.suite())
    }

    /// AUTH with a depot grant.
    pub async fn auth(&mut self, grant: &str) -> Result<()> {
        let line = SecureRequest::Auth(Auth {
            grant: grant.to_owned(),
            timeout: 300,
        })
        .encode();
        self.inner.call_line(&line, Expect::Ok).await.map(drop)
    }

    /// Sends a raw request line and reads one reply line.
    pub async fn raw(&mut self, line: &str, expect: Expect) -> Result<Reply> {
        self.inner.call_line(line, expect).await
    }

    /// QUOTA (after AUTH): the caller's own byte quotas and use at this
    /// depot, for its VO and for itself.
    pub async fn quota(&mut self) -> Result<QuotaInfo> {
        let text = self
            .inner
            .call_line_text(&SecureRequest::Quota { timeout: 300 }.encode())
            .await?;
        Ok(QuotaInfo::parse(&text)?)
    }

    /// CRYPTO: opens a crypto-level session of this (authenticated) TLS
    /// session; its keys are exported from the TLS session on both sides.
    pub async fn open_crypto(&mut self) -> Result<CryptoSession> {
        let text = self
            .inner
            .call_line_text(&SecureRequest::Crypto { timeout: 300 }.encode())
            .await?;
        let mut words = text
            .strip_prefix("1 ")
            .unwrap_or_default()
            .split_whitespace();
        let id = words
            .next()
            .and_then(seal::unhex::<16>)
            .ok_or(ProtoError::BadReply("not a CRYPTO reply"))?;
        let data_port = match words.next() {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| ProtoError::BadReply("bad data port in the CRYPTO reply"))?,
            ),
            None => None,
        };
        let mut m = [0u8; seal::KEY_MATERIAL_LEN];
        match self.inner.conn.as_ref().map(|c| c.get_ref()) {
            Some(Transport::Tls(t)) => match t.as_ref() {
                tokio_rustls::TlsStream::Client(c) => {
                    c.get_ref()
                        .1
                        .export_keying_material(&mut m, seal::EXPORTER_LABEL, Some(&id))
                        .map_err(|e| ClientError::Tls(e.to_string()))?;
                }
                tokio_rustls::TlsStream::Server(_) => {
                    return Err(ClientError::Tls("not a client connection".into()))
                }
            },
            _ => return Err(io::Error::from(io::ErrorKind::NotConnected).into()),
        }
        Ok(CryptoSession {
            id,
            keys: Arc::new(seal::SessionKeys::from_material(&m)),
            data_port,
        })
    }

    pub async fn allocate(
        &mut self,
        rid: Rid,
        reliability: Reliability,
        duration: i64,
        size: u64,
    ) -> Result<Caps> {
        let line = SecureRequest::Allocate(Allocate {
            version: Version::V1,
            rid: Some(rid),
            reliability,
            storage: StorageType::ByteArray,
            duration,
            size,
            timeout: 300,
        })
        .encode();
        let reply = self.inner.call_line(&line, Expect::Allocated).await?;
        caps_of(reply)
    }

    /// STORE (append) `data` into an allocation bound to file `uuid`.
    pub async fn store(&mut self, cap: &Capability, uuid: &str, data: &[u8]) -> Result<u64> {
        let line = secure_store_line(cap, uuid, data.len() as u64);
        self.inner.upload(&line, data).await
    }

    /// STORE (append) `len` bytes of `file` from `offset` into an allocation
    /// bound to file `uuid`, streamed in pieces (the source depot's side of
    /// a secure COPY). Returns the count the target acknowledged.
    pub async fn store_file(
        &mut self,
        cap: &Capability,
        uuid: &str,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<u64> {
        self.store_file_begin(cap, uuid, len).await?;
        self.store_file_body(Some(file), offset, len).await
    }

    /// The first half of [`store_file`](Self::store_file): the STORE line,
    /// and the target's go-ahead. Nothing is stored yet, so a kept
    /// connection that fails here without an IBP answer (the target closed
    /// it meanwhile) can be replaced by a new one for the same STORE.
    pub async fn store_file_begin(&mut self, cap: &Capability, uuid: &str, len: u64) -> Result<()> {
        let line = secure_store_line(cap, uuid, len);
        self.inner.call_line(&line, Expect::Ok).await.map(|_| ())
    }

    /// The second half of [`store_file`](Self::store_file): the bytes, and
    /// the count the target acknowledged (`file` may be `None` only when
    /// `len` is 0).
    pub async fn store_file_body(
        &mut self,
        file: Option<&std::fs::File>,
        offset: u64,
        len: u64,
    ) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        if len > 0 {
            let file = file.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            let mut buf = vec![0u8; (256 * 1024).min(len as usize)];
            let mut done = 0u64;
            while done < len {
                let want = ((len - done) as usize).min(buf.len());
                let piece = &mut buf[..want];
                file.read_exact_at(piece, offset + done)?;
                self.inner.send(piece).await?;
                done += want as u64;
            }
        }
        match self.inner.reply(Expect::Count).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(ProtoError::BadReply("not a count").into()),
        }
    }

    /// Secure COPY: asks this depot to STORE `size` bytes from `offset` of
    /// the allocation behind `read` into `target` (a WRITE capability on
    /// another depot's secure port), authenticating there with `grant` (a
    /// depot grant for the target bound to this depot's key), bound to `uuid`.
    pub async fn copy(
        &mut self,
        read: &Capability,
        target: &Capability,
        offset: u64,
        size: u64,
        grant: &str,
        uuid: &str,
    ) -> Result<u64> {
        let line = SecureRequest::Copy(ibp_proto::SecureCopy {
            source: read.cap.clone(),
            offset,
            size,
            target: target.clone(),
            grant: grant.to_owned(),
            uuid: uuid.to_owned(),
            timeout: 300,
        })
        .encode();
        match self.inner.call_line(&line, Expect::Count).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(ProtoError::BadReply("not a count").into()),
        }
    }

    /// WRITE `data` at `offset` into an allocation bound to file `uuid`.
    pub async fn write_at(
        &mut self,
        cap: &Capability,
        offset: u64,
        uuid: &str,
        data: &[u8],
    ) -> Result<u64> {
        let line = secure_write_line(cap, offset, uuid, data.len() as u64);
        self.inner.upload(&line, data).await
    }

    /// LOAD with a file ticket (`None` sends the line without one).
    pub async fn load(
        &mut self,
        cap: &Capability,
        offset: u64,
        size: u64,
        ticket: Option<&str>,
    ) -> Result<Vec<u8>> {
        let line = secure_load_line(cap, offset, size, ticket);
        let mut buf = Vec::new();
        self.inner.receive_payload(&line, size, &mut buf).await?;
        Ok(buf)
    }

    /// LOAD with a file ticket into `buf` (replacing its contents); returns
    /// the bytes received.
    pub async fn load_into(
        &mut self,
        cap: &Capability,
        offset: u64,
        size: u64,
        ticket: &str,
        buf: &mut Vec<u8>,
    ) -> Result<u64> {
        let line = secure_load_line(cap, offset, size, Some(ticket));
        self.inner.receive_payload(&line, size, buf).await
    }

    pub async fn probe(&mut self, cap: &Capability) -> Result<ProbeInfo> {
        self.inner.probe(cap).await
    }

    pub async fn change(&mut self, cap: &Capability, attrs: Attributes) -> Result<()> {
        self.inner.change(cap, attrs).await
    }

    pub async fn decr(&mut self, cap: &Capability, cap_type: u8) -> Result<()> {
        self.inner.decr(cap, cap_type).await
    }

    pub async fn status(&mut self, rid: Rid) -> Result<StatusInfo> {
        self.inner.status(rid).await
    }

    /// STATUS INQ with a body of at most `max_body` bytes.
    pub async fn status_within(&mut self, rid: Rid, max_body: u64) -> Result<StatusInfo> {
        self.inner.status_within(rid, max_body).await
    }

    /// STATUS RES: the depot's resources.
    pub async fn resources(&mut self) -> Result<Vec<Rid>> {
        self.inner.resources().await
    }

    /// Closes the connection politely (TLS close_notify), within the timeout.
    pub async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

/// A crypto-level session: its id and the keys exported from the TLS session.
#[derive(Clone)]
pub struct CryptoSession {
    pub id: [u8; 16],
    /// The depot's data port, as its CRYPTO reply announced it (depots
    /// before v3.1 do not).
    pub data_port: Option<u16>,
    keys: Arc<seal::SessionKeys>,
}

/// A plain-TCP data connection joined to a crypto-level session: request
/// lines are sealed, bulk data travels in clear.
pub struct DataClient {
    inner: IbpClient,
    keys: Arc<seal::SessionKeys>,
    conn_no: u32,
    counter: u64,
}

impl DataClient {
    /// Connects to the depot's data port and joins `session`.
    pub async fn connect(addr: &str, session: &CryptoSession) -> Result<DataClient> {
        let mut inner = IbpClient::connect(addr).await?;
        // No silent reconnect: a new connection must join again.
        inner.secure = true;
        let text = inner
            .call_line_text(&format!("3 22 {} \n", seal::hex(&session.id)))
            .await?;
        let conn_no = text
            .strip_prefix("1 ")
            .and_then(|r| r.trim().parse::<u32>().ok())
            .ok_or(ProtoError::BadReply("not a JOIN reply"))?;
        Ok(DataClient {
            inner,
            keys: session.keys.clone(),
            conn_no,
            counter: 0,
        })
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.inner.timeout = t;
    }

    /// Closes the data connection politely (FIN), within the timeout.
    pub async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }

    /// The sealed line `3 <cmd> <sealed> \n` for a v2 request line, with the
    /// next message counter.
    pub fn seal(&mut self, v2_line: &str) -> String {
        let cmd = v2_line.split(' ').nth(1).unwrap_or("0").to_owned();
        self.counter += 1;
        let sealed = self
            .keys
            .seal(&cmd, self.conn_no, self.counter, v2_line.as_bytes());
        format!("3 {cmd} {sealed} \n")
    }

    /// Sends an already sealed line (tests: replays and tampering).
    pub async fn raw_sealed(&mut self, sealed_line: &str, expect: Expect) -> Result<Reply> {
        self.inner.call_line(sealed_line, expect).await
    }

    /// STORE (append) `data` into an allocation bound to file `uuid`.
    pub async fn store(&mut self, cap: &Capability, uuid: &str, data: &[u8]) -> Result<u64> {
        let line = secure_store_line(cap, uuid, data.len() as u64);
        let sealed = self.seal(&line);
        self.inner.upload(&sealed, data).await
    }

    /// WRITE `data` at `offset` into an allocation bound to file `uuid`.
    pub async fn write_at(
        &mut self,
        cap: &Capability,
        offset: u64,
        uuid: &str,
        data: &[u8],
    ) -> Result<u64> {
        let line = secure_write_line(cap, offset, uuid, data.len() as u64);
        let sealed = self.seal(&line);
        self.inner.upload(&sealed, data).await
    }

    /// LOAD with a file ticket into `buf`; returns the bytes received.
    pub async fn load_into(
        &mut self,
        cap: &Capability,
        offset: u64,
        size: u64,
        ticket: &str,
        buf: &mut Vec<u8>,
    ) -> Result<u64> {
        let line = secure_load_line(cap, offset, size, Some(ticket));
        let sealed = self.seal(&line);
        self.inner.receive_payload(&sealed, size, buf).await
    }

    /// LOAD with a file ticket.
    pub async fn load(
        &mut self,
        cap: &Capability,
        offset: u64,
        size: u64,
        ticket: &str,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.load_into(cap, offset, size, ticket, &mut buf).await?;
        Ok(buf)
    }
}

/// The secure-port STORE line appending `size` bytes to an allocation bound
/// to file `uuid`.
fn secure_store_line(cap: &Capability, uuid: &str, size: u64) -> String {
    SecureRequest::Store(SecureStore {
        store: Store {
            cap: cap.cap.clone(),
            size,
            timeout: 300,
        },
        uuid: uuid.to_owned(),
    })
    .encode()
}

/// The secure-port WRITE line for `size` bytes at `offset` of an allocation
/// bound to file `uuid`.
fn secure_write_line(cap: &Capability, offset: u64, uuid: &str, size: u64) -> String {
    SecureRequest::Write(SecureWrite {
        write: Write {
            cap: cap.cap.clone(),
            offset,
            size,
            timeout: 300,
        },
        uuid: uuid.to_owned(),
    })
    .encode()
}

/// The secure-port LOAD line for a capability range and an optional ticket.
fn secure_load_line(cap: &Capability, offset: u64, size: u64, ticket: Option<&str>) -> String {
    SecureRequest::Load(SecureLoad {
        load: Load {
            cap: cap.cap.clone(),
            offset,
            size,
            timeout: 300,
        },
        ticket: ticket.map(str::to_owned),
    })
    .encode()
}

/// Whether `tcp` is open with nothing waiting to be read: a peek that
/// would block. End of file, bytes, or an error all say the connection is
/// not fit to be reused.
fn quiet(tcp: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: `tcp` owns an open socket for the duration of the call, and
    // `b` is a valid one-byte buffer; MSG_PEEK leaves the byte in place and
    // MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}
