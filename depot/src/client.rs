//! A small async IBP client over one persistent connection, used by COPY
//! (the depot as a client of another depot), the demo, tests and benchmarks.
//!
//! After an error reply the depot closes the connection; the client then
//! reconnects on its next request, as libibp does.

use std::io;
use std::time::Duration;

use ibp_proto::{
    Allocate, Attributes, Capability, Expect, IbpError, Load, Manage, ManageOp, ProbeInfo,
    ProtoError, Reliability, Reply, Request, Rid, Status, StatusInfo, StatusOp, StorageType, Store,
    Version, Write,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::server::{read_line, timed, Line};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("depot answered {0}")]
    Ibp(IbpError),
    #[error("connection to the depot failed: {0}")]
    Io(#[from] io::Error),
    #[error("depot sent a malformed reply: {0}")]
    Proto(#[from] ProtoError),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// The three capabilities of a new allocation.
#[derive(Debug, Clone)]
pub struct Caps {
    pub read: Capability,
    pub write: Capability,
    pub manage: Capability,
}

pub struct IbpClient {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl IbpClient {
    /// Connects to `host:port`.
    pub async fn connect(addr: &str) -> Result<IbpClient> {
        let mut c = IbpClient {
            addr: addr.to_owned(),
            conn: None,
            timeout: Duration::from_secs(60),
        };
        c.stream().await?;
        Ok(c)
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    async fn stream(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let s = timed(self.timeout, TcpStream::connect(&self.addr)).await?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::with_capacity(64 * 1024, s));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected).into())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let t = self.timeout;
        let s = self.stream().await?;
        if let Err(e) = timed(t, s.get_mut().write_all(bytes)).await {
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
                Err(ClientError::Ibp(e))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.conn = None;
                Err(e.into())
            }
        }
    }

    async fn call(&mut self, req: &Request, expect: Expect) -> Result<Reply> {
        self.send(req.encode().as_bytes()).await?;
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
        match self.call(&req, Expect::Allocated).await? {
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

    /// STORE (append) `data`; returns the count the depot acknowledged.
    pub async fn store(&mut self, cap: &Capability, data: &[u8]) -> Result<u64> {
        let req = Request::Store(Store {
            cap: cap.cap.clone(),
            size: data.len() as u64,
            timeout: 300,
        });
        self.upload(&req, data).await
    }

    /// WRITE `data` at `offset`.
    pub async fn write_at(&mut self, cap: &Capability, offset: u64, data: &[u8]) -> Result<u64> {
        let req = Request::Write(Write {
            cap: cap.cap.clone(),
            offset,
            size: data.len() as u64,
            timeout: 300,
        });
        self.upload(&req, data).await
    }

    async fn upload(&mut self, req: &Request, data: &[u8]) -> Result<u64> {
        self.call(req, Expect::Ok).await?;
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
        let n = match self.call(&req, Expect::Payload).await? {
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
        let expect = if matches!(op, ManageOp::Probe(_)) {
            Expect::Probe
        } else {
            Expect::Ok
        };
        let req = Request::Manage(Manage {
            cap: cap.cap.clone(),
            op,
            cap_type,
            timeout: 300,
        });
        self.call(&req, expect).await
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
        let req = Request::Status(Status {
            version: Version::V1,
            op: StatusOp::Inquire {
                rid: Some(rid),
                password: "ibp".into(),
            },
            timeout: 300,
        });
        let n = match self.call(&req, Expect::Payload).await? {
            Reply::Payload(n) if n < 1 << 20 => n,
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
