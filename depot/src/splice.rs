//! Zero-copy receive: `splice(2)` from the client socket through a pipe into
//! the allocation file, so STORE and WRITE copy each byte once (into the page
//! cache) instead of twice (socket → buffer → page cache).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use ibp_depot_client::wire::timed;

/// Pipe capacity asked for (the default maximum an unprivileged process may set).
const PIPE_SIZE: usize = 1 << 20;

/// A non-blocking pipe used as the splice buffer.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure only leaves the default size.
        let got = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        let capacity = if got > 0 { got as usize } else { 64 * 1024 };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// Why a splice transfer stopped.
pub enum SpliceError {
    /// The client went away or stalled.
    Peer(io::Error),
    /// Writing the file failed (full disk...).
    File(io::Error),
    /// The kernel cannot splice these descriptors: use the copying path for
    /// the remaining bytes; nothing was lost.
    Unsupported,
}

/// Moves exactly `len` bytes from `stream` to `file` at offset `at`, calling
/// `progress` with each piece moved. Each wait for the peer lasts at most
/// `limit(bytes moved so far)` (the transfer's [`crate::limits::Pace`]).
pub async fn receive(
    stream: &TcpStream,
    file: &File,
    pipe: &Pipe,
    mut at: u64,
    len: u64,
    limit: impl Fn(u64) -> Duration,
    mut progress: impl FnMut(u64),
) -> Result<(), (SpliceError, u64)> {
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(pipe.capacity);
        let n = loop {
            timed(limit(len - left), stream.readable())
                .await
                .map_err(|e| (SpliceError::Peer(e), len - left))?;
            let r = stream.try_io(Interest::READABLE, || {
                // SAFETY: both descriptors are open; null offsets are valid for
                // a socket and a pipe.
                let r = unsafe {
                    libc::splice(
                        stream.as_raw_fd(),
                        std::ptr::null_mut(),
                        pipe.write.as_raw_fd(),
                        std::ptr::null_mut(),
                        want,
                        libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                    )
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            });
            match r {
                Ok(0) => {
                    return Err((
                        SpliceError::Peer(io::ErrorKind::UnexpectedEof.into()),
                        len - left,
                    ))
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err((SpliceError::Unsupported, len - left))
                }
                Err(e) => return Err((SpliceError::Peer(e), len - left)),
            }
        };
        drain_to_file(pipe, file, &mut at, n).map_err(|e| (SpliceError::File(e), len - left))?;
        progress(n as u64);
        left -= n as u64;
    }
    Ok(())
}

/// Empties `n` bytes of the pipe into the file at `*at`.
fn drain_to_file(pipe: &Pipe, file: &File, at: &mut u64, n: usize) -> io::Result<()> {
    let mut moved = 0;
    let mut unsupported = false;
    while moved < n {
        let mut off =
            i64::try_from(*at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let r = if unsupported {
            -1
        } else {
            // SAFETY: both descriptors are open; `off` is a valid offset we own.
            unsafe {
                libc::splice(
                    pipe.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    file.as_raw_fd(),
                    &mut off,
                    n - moved,
                    libc::SPLICE_F_MOVE,
                )
            }
        };
        if r > 0 {
            moved += r as usize;
            *at += r as u64;
            continue;
        }
        let err = io::Error::last_os_error();
        if r == 0 || unsupported || err.raw_os_error() == Some(libc::EINVAL) {
            // The file system cannot take spliced pages: copy them out.
            unsupported = true;
            let mut buf = vec![0u8; n - moved];
            // SAFETY: `buf` is valid for writes of its length.
            let got =
                unsafe { libc::read(pipe.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                return Err(io::Error::last_os_error());
            }
            std::os::unix::fs::FileExt::write_all_at(file, &buf[..got as usize], *at)?;
            moved += got as usize;
            *at += got as u64;
            continue;
        }
        return Err(err);
    }
    Ok(())
}
