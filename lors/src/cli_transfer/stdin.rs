//! Standard input as an upload's source, read by a thread of its own in
//! large chunks. `tokio::io::stdin` reads through the runtime's blocking
//! pool one `read` at a time, and a pipe gives at most 64 KiB per `read`:
//! a 1 GiB `cat FILE | lors upload -` made 16,000 round trips to the
//! pool, which made it much slower than `lors upload FILE`.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is handed over.
const CHUNK: usize = 1 << 20;
/// Chunks read ahead of the upload.
const AHEAD: usize = 4;

/// Standard input, read ahead by a thread (which ends at end of input, at
/// an error, or when the reader is dropped and its next chunk is refused).
pub(crate) fn reader() -> StdinReader {
    reader_of(io::stdin())
}

fn reader_of<R: Read + Send + 'static>(mut input: R) -> StdinReader {
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(AHEAD);
    std::thread::spawn(move || loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        let r = loop {
            match input.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(filled);
        let last = filled < CHUNK || r.is_err();
        if filled > 0 && tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(e));
        }
        if last {
            return;
        }
    });
    StdinReader {
        rx,
        cur: Vec::new(),
        pos: 0,
    }
}

/// See [`reader`]: end of input when the thread is done.
pub(crate) struct StdinReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl AsyncRead for StdinReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if me.pos < me.cur.len() {
                let n = buf.remaining().min(me.cur.len() - me.pos);
                buf.put_slice(&me.cur[me.pos..me.pos + n]);
                me.pos += n;
                return Poll::Ready(Ok(()));
            }
            match ready!(me.rx.poll_recv(cx)) {
                Some(Ok(v)) => {
                    me.cur = v;
                    me.pos = 0;
                }
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Gives its bytes a few at a time, like a pipe.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len() - self.1).min(70_000);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn everything_is_read_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i % 251) as u8).collect();
        let mut r = reader_of(Trickle(data.clone(), 0));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
    }
}
