//! STORE, WRITE, LOAD and COPY: the commands that move bytes.
//!
//! Data is streamed in chunks of at most [`CHUNK`] bytes, never buffered
//! whole; on plain TCP, LOAD and COPY send from the page cache with
//! `sendfile(2)` and large STOREs are received with `splice(2)`; under TLS the
//! bytes go through plain reads and writes of [`TLS_CHUNK`].

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibp_auth::tokens::FileTicket;
use ibp_depot_client::wire::timed;
use ibp_depot_client::{ClientError, IbpClient, SecureClient};
use ibp_proto::{
    format_uuid, parse_uuid, CapKind, Copy, IbpError, Load, Reply, SecureLoad, SecureStore,
    SecureWrite, Store, Write, MAX_LINE,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::failure::Failure;
use crate::limits::Pace;
use crate::resource::Resource;
use crate::splice;
use crate::Depot;

/// Largest piece of data moved per read or write.
pub const CHUNK: usize = 1 << 20;
/// Piece of a LOAD read from the file and written into a TLS stream.
pub const TLS_CHUNK: usize = 256 * 1024;
/// Transfers at least this large are received with splice(2).
const SPLICE_MIN: u64 = 256 * 1024;
/// LOADs up to this size are sent with their header in a single write.
const SMALL_LOAD: u64 = 64 * 1024;

/// Data buffers of [`CHUNK`] bytes kept between transfers, so that a
/// large STORE or LOAD does not allocate and zero a new one.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Most buffers kept in [`SPARE`] (8 MiB).
const SPARE_BUFFERS: usize = 8;

/// A data buffer for one transfer of `len` bytes: up to [`SMALL_LOAD`],
/// a new one of that size; larger, one of [`CHUNK`] bytes, kept in
/// [`SPARE`] when dropped. A kept buffer still holds an earlier
/// transfer's bytes: only the part just read into (from the peer or the
/// file) is ever written out.
struct Scratch(Vec<u8>);

impl Scratch {
    fn take(len: u64) -> Scratch {
        if len <= SMALL_LOAD {
            return Scratch(vec![0u8; len.max(1) as usize]);
        }
        let kept = SPARE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        Scratch(kept.unwrap_or_else(|| vec![0u8; CHUNK]))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.len() != CHUNK {
            return;
        }
        let buf = std::mem::take(&mut self.0);
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

fn resource_of<'a>(
    depot: &'a Depot,
    cap: &ibp_proto::CapRef,
) -> Result<&'a Arc<Resource>, IbpError> {
    depot.resource(Some(cap.rid)).ok_or(IbpError::CapNotFound)
}

pub async fn store(depot: &Depot, conn: &mut Conn, s: Store) -> Result<(), Failure> {
    receive(depot, conn, &s.cap, None, s.size, None).await
}

pub async fn write(depot: &Depot, conn: &mut Conn, w: Write) -> Result<(), Failure> {
    receive(depot, conn, &w.cap, Some(w.offset), w.size, None).await
}

fn uuid_bytes(text: &str) -> Result<[u8; 16], IbpError> {
    parse_uuid(text).ok_or(IbpError::InvalidParameter)
}

/// STORE in a session: binds the allocation to the file UUID.
pub async fn store_bound(depot: &Depot, conn: &mut Conn, s: SecureStore) -> Result<(), Failure> {
    let uuid = uuid_bytes(&s.uuid)?;
    receive(depot, conn, &s.store.cap, None, s.store.size, Some(uuid)).await
}

/// WRITE in a session: binds the allocation to the file UUID.
pub async fn write_bound(depot: &Depot, conn: &mut Conn, w: SecureWrite) -> Result<(), Failure> {
    let uuid = uuid_bytes(&w.uuid)?;
    let (cap, off, size) = (&w.write.cap, w.write.offset, w.write.size);
    receive(depot, conn, cap, Some(off), size, Some(uuid)).await
}

/// STORE (append, `offset` None) and WRITE (at `offset`): check, send the
/// go-ahead, stream the bytes into the allocation file, make them as durable
/// as the sync mode asks, record the new size, acknowledge.
async fn receive(
    depot: &Depot,
    conn: &mut Conn,
    cap: &ibp_proto::CapRef,
    offset: Option<u64>,
    len: u64,
    uuid: Option<[u8; 16]>,
) -> Result<(), Failure> {
    let res = resource_of(depot, cap)?;
    let (alloc, kind) = conn.find(res, cap)?;
    if kind != Some(CapKind::Write) {
        return Err(IbpError::InvalidWriteCap.into());
    }
    let _writer = alloc.writer.lock().await;
    let st = alloc.state();
    if st.gone {
        return Err(IbpError::CapNotFound.into());
    }
    if st.write_refs == 0 {
        return Err(IbpError::InvalidWriteCap.into());
    }
    let start = offset.unwrap_or(st.size);
    let end = start.checked_add(len).ok_or(IbpError::WouldExceedLimit)?;
    if end > st.max_size {
        return Err(IbpError::WouldExceedLimit.into());
    }
    if let Some(uuid) = uuid {
        // The first authenticated write binds the allocation for good.
        if let Some(gen) = res.bind_uuid(&alloc, uuid).map_err(|e| match e {
            IbpError::CapAccessDenied => Failure::Refused(
                e,
                format!(
                    "allocation is bound to another file, not {}",
                    format_uuid(&uuid)
                ),
            ),
            e => e.into(),
        })? {
            res.commit(gen).await?;
        }
    }
    conn.reply(&Reply::Ok).await?;

    let _in_use = alloc.use_file().ok_or(IbpError::CapNotFound)?;
    let file = res.open_data_for_write(alloc.id).map_err(|e| {
        let path = res.data_path(alloc.id);
        tracing::error!(error = %e, path = %path.display(), "open allocation file");
        IbpError::FileOpen
    })?;
    let cut = |file: &File, size: u64| {
        Resource::cut_stale_tail(file, size).map_err(|e| {
            tracing::error!(error = %e, id = alloc.id, "cut allocation file");
            IbpError::FileWrite
        })
    };
    if start > st.size {
        cut(&file, st.size)?;
    }
    let file = Arc::new(file);
    if let Err(f) = pump_into_file(depot, conn, &file, start, len).await {
        if matches!(f, Failure::Reply(IbpError::FileWrite)) {
            res.empty_spares();
        }
        // Nothing of this transfer is acknowledged: cut off what an append
        // added (an overwrite inside the data cannot be undone).
        let _ = file.set_len(st.size);
        return Err(f);
    }
    cut(&file, st.size.max(end))?;
    let committed = async {
        res.sync_data(&alloc, &file).await?;
        let gen = res.commit_size(&alloc, st.size.max(end))?;
        res.commit(gen).await
    };
    if let Err(e) = committed.await {
        // Not acknowledged: give the space back now rather than at restart.
        if alloc.state().size == st.size {
            let _ = file.set_len(st.size);
        }
        return Err(e.into());
    }
    conn.reply(&Reply::Count(len)).await?;
    Ok(())
}

async fn pump_into_file(
    depot: &Depot,
    conn: &mut Conn,
    file: &File,
    mut at: u64,
    len: u64,
) -> Result<(), Failure> {
    let mut left = len;
    let pace = Pace::new(conn.io_timeout, depot.guards.limits.min_transfer_rate);
    let io_timeout = conn.io_timeout;
    let write_err = |e: io::Error| {
        tracing::error!(error = %e, "write allocation data");
        Failure::Reply(IbpError::FileWrite)
    };
    // Bytes already read past the request line go first.
    let buffered = conn.reader.buffer();
    let take = buffered.len().min(left as usize);
    if take > 0 {
        file.write_all_at(&buffered[..take], at)
            .map_err(write_err)?;
        conn.reader.consume(take);
        depot.metrics.bytes_in(take as u64);
        at += take as u64;
        left -= take as u64;
    }
    if left >= SPLICE_MIN && conn.stream().is_some() {
        if let (Ok(pipe), Some(stream)) = (splice::Pipe::new(), conn.stream()) {
            let before = len - left;
            let limit = |moved: u64| pace.limit(before + moved, io_timeout);
            let moved = splice::receive(stream, file, &pipe, at, left, limit, |n| {
                depot.metrics.bytes_in(n)
            })
            .await;
            match moved {
                Ok(()) => return Ok(()),
                Err((splice::SpliceError::Peer(e), _)) => return Err(Failure::Io(e)),
                Err((splice::SpliceError::File(e), _)) => return Err(write_err(e)),
                Err((splice::SpliceError::Unsupported, done)) => {
                    at += done;
                    left -= done;
                }
            }
        }
    }
    let mut buf = Scratch::take(left);
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let limit = pace.limit(len - left, io_timeout);
        let n = timed(limit, conn.reader.read(&mut buf[..want])).await?;
        if n == 0 {
            return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        file.write_all_at(&buf[..n], at).map_err(write_err)?;
        depot.metrics.bytes_in(n as u64);
        at += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// The part of `[offset, offset+size)` that holds data.
fn clip(size: u64, offset: u64, want: u64) -> u64 {
    want.min(size.saturating_sub(offset))
}

pub async fn load(depot: &Depot, conn: &mut Conn, l: Load) -> Result<(), Failure> {
    load_checked(depot, conn, l, None).await
}

/// LOAD in a session: the read capability and a valid file ticket for the
/// allocation's UUID, bound to the TLS peer's key.
pub async fn load_with_ticket(
    depot: &Depot,
    conn: &mut Conn,
    l: SecureLoad,
) -> Result<(), Failure> {
    load_checked(depot, conn, l.load, l.ticket.as_deref()).await
}

async fn load_checked(
    depot: &Depot,
    conn: &mut Conn,
    l: Load,
    ticket: Option<&str>,
) -> Result<(), Failure> {
    let res = resource_of(depot, &l.cap)?;
    let (alloc, kind) = conn.find(res, &l.cap)?;
    if kind != Some(CapKind::Read) {
        return Err(IbpError::InvalidReadCap.into());
    }
    if conn.secure {
        check_ticket(depot, conn, &alloc, ticket)?;
    }
    // Legacy short read: answer with what exists past the offset.
    let n = clip(alloc.state().size, l.offset, l.size);
    if n == 0 {
        conn.reply(&Reply::Payload(0)).await?;
        return Ok(());
    }
    let _in_use = alloc.use_file().ok_or(IbpError::CapNotFound)?;
    let file = File::open(res.data_path(alloc.id)).map_err(|e| {
        tracing::error!(error = %e, id = alloc.id, "open allocation file");
        IbpError::FileOpen
    })?;
    let header = Reply::Payload(n).encode();
    if n <= SMALL_LOAD {
        let mut out = header.into_bytes();
        let start = out.len();
        out.resize(start + n as usize, 0);
        file.read_exact_at(&mut out[start..], l.offset)
            .map_err(|e| {
                tracing::error!(error = %e, id = alloc.id, "read allocation data");
                IbpError::FileRead
            })?;
        conn.send(&out).await?;
    } else {
        conn.send(header.as_bytes()).await?;
        let pace = Pace::new(conn.io_timeout, depot.guards.limits.min_transfer_rate);
        let io_timeout = conn.io_timeout;
        match conn.stream() {
            Some(stream) => send_file(stream, &file, l.offset, n, pace, io_timeout).await?,
            None => copy_file_out(conn, &file, l.offset, n, pace).await?,
        }
    }
    depot.metrics.bytes_out(n);
    Ok(())
}

/// Checks the file ticket of a LOAD in a session.
fn check_ticket(
    depot: &Depot,
    conn: &Conn,
    alloc: &crate::resource::Allocation,
    ticket: Option<&str>,
) -> Result<(), Failure> {
    let refuse = |why: String| Failure::Refused(IbpError::CapAccessDenied, why);
    let Some(secure) = depot.secure.as_ref().map(|s| s.current()) else {
        return Err(refuse("no secure port".into()));
    };
    // The depot's own policy still holds for a read: an allocation of a VO
    // it no longer serves (no `[[vo]]` table) is not served, whatever the
    // ticket says. (`allocate = false` retires a VO and keeps its reads.)
    if let Some(owner) = &alloc.owner {
        if !secure.vos.contains_key(&owner.vo) {
            return Err(refuse(format!(
                "VO {} is not served by this depot any more: its allocations are not read",
                owner.vo
            )));
        }
    }
    // The session's identity, else the TLS peer's verified one (a LOAD
    // without AUTH).
    let identity = match (&conn.session, &conn.peer_identity) {
        (Some(session), _) => &session.identity,
        (None, Some(Ok(identity))) => identity,
        _ => return Err(refuse("no verified client credential".into())),
    };
    let ticket = ticket.ok_or_else(|| refuse("LOAD needs a file ticket".into()))?;
    let uuid = alloc
        .state()
        .uuid
        .ok_or_else(|| refuse("allocation is not bound to a file yet".into()))?;
    let t = FileTicket::verify(
        ticket,
        &secure.trust,
        &format_uuid(&uuid),
        &identity.key_hash,
        ibp_auth::unix_now(),
    )
    .map_err(|e| refuse(format!("file ticket refused: {e}")))?;
    // Bound to the key already; the names must agree as well. Without a
    // session, a multi-VO peer reads as its identity in the ticket's VO.
    let for_ticket;
    let identity = match (&conn.session, identity.vo != t.vo) {
        (None, true) => {
            for_ticket = identity
                .for_vo(&t.vo)
                .map_err(|e| refuse(format!("file ticket is for VO {}: {e}", t.vo)))?;
            &for_ticket
        }
        _ => identity,
    };
    if t.vo != identity.vo || t.vo_id != identity.vo_id {
        return Err(refuse(format!(
            "file ticket is for {}/{}, the credential is {}/{}",
            t.vo, t.vo_id, identity.vo, identity.vo_id
        )));
    }
    Ok(())
}

/// The source of a COPY of `n` bytes: the allocation's in-use guard
/// (taken before the file is opened: a file retired as a spare is never
/// opened again, and one open is never retired), and its data file when
/// there is something to send.
fn copy_source(
    res: &Resource,
    alloc: &Arc<crate::resource::Allocation>,
    n: u64,
) -> Result<(crate::resource::FileUse, Option<File>), Failure> {
    let in_use = alloc.use_file().ok_or(IbpError::CapNotFound)?;
    let file = if n > 0 {
        Some(File::open(res.data_path(alloc.id)).map_err(|_| IbpError::FileOpen)?)
    } else {
        None
    };
    Ok((in_use, file))
}

/// Sends `len` bytes of `file` from `offset` through the connection's
/// stream (TLS) in pieces of [`TLS_CHUNK`], at `pace`.
async fn copy_file_out(
    conn: &mut Conn,
    file: &File,
    offset: u64,
    len: u64,
    pace: Pace,
) -> Result<(), Failure> {
    let mut buf = Scratch::take(len);
    let mut at = offset;
    let mut left = len;
    while left > 0 {
        let k = (left as usize).min(TLS_CHUNK).min(buf.len());
        // The reply line is out: a read error can only cut the connection.
        file.read_exact_at(&mut buf[..k], at).map_err(|e| {
            tracing::error!(error = %e, "read allocation data");
            Failure::Io(e)
        })?;
        let limit = pace.limit(len - left, conn.io_timeout);
        let w = conn.reader.get_mut();
        timed(limit, w.write_all(&buf[..k])).await?;
        at += k as u64;
        left -= k as u64;
    }
    timed(conn.io_timeout, conn.reader.get_mut().flush()).await?;
    Ok(())
}

/// Sends `len` bytes of `file` from `offset` with sendfile(2), at `pace`.
async fn send_file(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    pace: Pace,
    io_timeout: Duration,
) -> io::Result<()> {
    let mut off =
        i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut left = len;
    while left > 0 {
        timed(pace.limit(len - left, io_timeout), stream.writable()).await?;
        let chunk = (left as usize).min(CHUNK * 4);
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call
            // and `off` is a valid, exclusively borrowed offset.
            let r =
                unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, chunk) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as u64)
            }
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// COPY: this depot connects to the target depot as a client, STOREs the
/// range there with the target WRITE capability, and reports the count.
pub async fn copy(depot: &Depot, conn: &mut Conn, c: Copy) -> Result<(), Failure> {
    let res = resource_of(depot, &c.source)?;
    let (alloc, kind) = conn.find(res, &c.source)?;
    if kind != Some(CapKind::Read) {
        return Err(IbpError::InvalidReadCap.into());
    }
    let n = clip(alloc.state().size, c.offset, c.size);
    let (_in_use, file) = copy_source(res, &alloc, n)?;
    let addr = target_address(&c.target);
    let io = depot.io_timeout;
    let target_err = |e: ClientError| match e.ibp() {
        // The target's own refusal is passed on.
        Some(e) => Failure::Reply(e),
        None => {
            tracing::info!(target = %addr, error = %e, "COPY could not reach the target depot");
            Failure::Reply(IbpError::Connection)
        }
    };
    let mut target =
        match tokio::time::timeout(copy_connect_limit(io), IbpClient::connect(&addr)).await {
            Ok(connected) => connected.map_err(target_err)?,
            Err(_) => return Err(target_err(ClientError::timed_out())),
        };
    target.set_timeout(io);
    target
        .store_begin(&c.target, n, c.target_timeout)
        .await
        .map_err(target_err)?;
    if let Some(file) = &file {
        let stream = target.tcp().ok_or(IbpError::Connection)?;
        let pace = Pace::new(io, depot.guards.limits.min_transfer_rate);
        send_file(stream, file, c.offset, n, pace, io)
            .await
            .map_err(|_| IbpError::Connection)?;
    }
    match target.store_end().await.map_err(target_err)? {
        m if m == n => {}
        _ => return Err(IbpError::Connection.into()),
    }
    depot.metrics.bytes_out(n);
    conn.reply(&Reply::Count(n)).await?;
    Ok(())
}

/// Longest a COPY waits to reach its target (TCP connect; for a secure
/// COPY also the TLS handshake and AUTH): a target behind a firewall that
/// drops the connection fails the COPY after this, not after the whole
/// `io_timeout`, so that the client, which falls back to sending the
/// replica itself, waits less and the connection's slot is freed sooner.
const COPY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// [`COPY_CONNECT_TIMEOUT`], or `io_timeout` when that is shorter.
fn copy_connect_limit(io_timeout: Duration) -> Duration {
    COPY_CONNECT_TIMEOUT.min(io_timeout)
}

/// `host:port` of a capability's depot, an IPv6 address in brackets.
fn target_address(cap: &ibp_proto::Capability) -> String {
    let host = cap.host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("[{host}]:{}", cap.port)
    } else {
        format!("{host}:{}", cap.port)
    }
}

const _: () = assert!(MAX_LINE < CHUNK);

/// Secure COPY: this depot reads from an allocation bound to the file UUID
/// and STOREs the bytes into the target's allocation over the target's
/// secure port, presenting its own certificate and the user's grant for the
/// target bound to this depot's key. The target binds its allocation to the
/// same UUID.
pub async fn copy_secure(
    depot: &Depot,
    conn: &mut Conn,
    c: ibp_proto::SecureCopy,
) -> Result<(), Failure> {
    let secure = depot
        .secure
        .as_ref()
        .ok_or(IbpError::CapAccessDenied)?
        .current();
    let uuid = uuid_bytes(&c.uuid)?;
    let res = resource_of(depot, &c.source)?;
    let (alloc, kind) = conn.find(res, &c.source)?;
    if kind != Some(CapKind::Read) {
        return Err(IbpError::InvalidReadCap.into());
    }
    if c.target.kind != CapKind::Write {
        return Err(IbpError::InvalidWriteCap.into());
    }
    let st = alloc.state();
    if st.uuid != Some(uuid) {
        return Err(Failure::Refused(
            IbpError::CapAccessDenied,
            format!("the source allocation is not bound to file {}", c.uuid),
        ));
    }
    let n = clip(st.size, c.offset, c.size);
    let (_in_use, file) = copy_source(res, &alloc, n)?;
    let addr = target_address(&c.target);
    let host = ibp_depot_client::host_of(&addr);
    let target_err = |e: ClientError| match e {
        ClientError::Refused { error, reason } => {
            Failure::Refused(error, format!("target depot: {reason}"))
        }
        ClientError::Ibp(e) => Failure::Refused(e, "target depot refused".into()),
        e => {
            tracing::info!(target = %addr, error = %e, "secure COPY could not reach the target depot");
            Failure::Reply(IbpError::Connection)
        }
    };
    let config = &secure.copy_client;
    // A session kept from an earlier COPY to this target with this grant
    // (`crate::copy_sessions`), else a new one. A kept session the target
    // closed meanwhile fails before any byte is stored (at the STORE line,
    // without an answer): the STORE then goes once more on a new one.
    let mut kept = depot.copy_sessions.take(&addr, &c.grant, config);
    let mut target = loop {
        let (mut t, reused) = match kept.take() {
            Some(t) => (t, true),
            None => {
                let connected = async {
                    let mut t = SecureClient::connect_with(&addr, host, config).await?;
                    t.set_timeout(depot.io_timeout);
                    t.auth(&c.grant).await?;
                    Ok::<_, ClientError>(t)
                };
                let t = tokio::time::timeout(copy_connect_limit(depot.io_timeout), connected)
                    .await
                    .unwrap_or_else(|_| Err(ClientError::timed_out()))
                    .map_err(target_err)?;
                (t, false)
            }
        };
        match t.store_file_begin(&c.target, &c.uuid, n).await {
            Ok(()) => {
                if reused {
                    depot.metrics.copy_session_reused();
                } else {
                    depot.metrics.copy_session_opened();
                }
                break t;
            }
            Err(e) if reused && e.ibp().is_none() => continue,
            Err(e) => return Err(target_err(e)),
        }
    };
    let m = target
        .store_file_body(file.as_ref(), c.offset, n)
        .await
        .map_err(target_err)?;
    if m != n {
        return Err(IbpError::Connection.into());
    }
    depot.copy_sessions.put(&addr, &c.grant, config, target);
    depot.metrics.bytes_out(n);
    conn.reply(&Reply::Count(n)).await?;
    Ok(())
}
