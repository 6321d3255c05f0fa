//! The byte stream under a depot connection and the bounded line reader,
//! shared by the client and the depot's listeners.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ibp_proto::MAX_LINE;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The byte stream under a connection: plain TCP (with the splice and
/// sendfile fast paths on the depot's side) or TLS (plain reads and writes).
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Transport {
    /// The TCP socket, when the bytes on it are the payload itself.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(_) => None,
        }
    }

    /// The TLS connection's state (`None` on plain TCP).
    pub fn tls(&self) -> Option<&rustls::CommonState> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => Some(match t.as_ref() {
                tokio_rustls::TlsStream::Client(c) => c.get_ref().1,
                tokio_rustls::TlsStream::Server(s) => s.get_ref().1,
            }),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Runs `fut` with a deadline, turning expiry into `TimedOut`.
pub async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer made no progress"))?
}

/// Outcome of reading one line.
pub enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads one line of at most [`MAX_LINE`] bytes without consuming anything
/// after its `\n` (the payload that may follow stays buffered).
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Line> {
    read_line_max(r, MAX_LINE).await
}

/// [`read_line`] with another limit (the secure port's is
/// [`ibp_proto::MAX_SECURE_LINE`]).
pub async fn read_line_max<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            // A peer that closes in the middle of a line sent no request.
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let take = take.min(max + 1 - line.len());
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done && line.last() == Some(&b'\n') {
            return Ok(Line::Text(line));
        }
        if line.len() > max {
            return Ok(Line::TooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_leave_the_payload_buffered() {
        let mut r = tokio::io::BufReader::new(&b"1 5 \nhello"[..]);
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::Text(l) if l == b"1 5 \n"));
        assert_eq!(r.buffer(), b"hello");
        let mut r = tokio::io::BufReader::new(&b"12345678\n"[..]);
        assert!(matches!(
            read_line_max(&mut r, 4).await.unwrap(),
            Line::TooLong
        ));
        let mut r = tokio::io::BufReader::new(&b"cut"[..]);
        assert!(matches!(read_line(&mut r).await.unwrap(), Line::Eof));
    }
}
