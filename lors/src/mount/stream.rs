//! Streaming a sequential writer's data to the depots while it writes: a
//! file written from offset 0 with every write following the previous one
//! (`cp`, a job writing its output) is uploaded as the writes arrive, so
//! its `close` waits for the tail only, not for the whole upload.
//!
//! The stage still gets every byte (reads of the open file, and the
//! fallback): any other write (a seek back, a gap, a truncation), a
//! rename, or a failure of the streaming upload abandons it, and the
//! commit at close uploads from the stage as usual. The upload registers
//! a version only after it read [`Chunk::End`], which only a commit sends:
//! an abandoned or dropped stream fails its upload, which releases what it
//! stored; nothing partial is ever registered.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::credentials::Error;
use crate::files::{self, Dest, Grid, UploadControl, UploadSettings, UploadSummary};

/// Chunks in flight between the writer and the upload (each at most one
/// FUSE write, 1 MiB): the bound on the memory a stream holds.
const IN_FLIGHT: usize = 16;

pub(crate) enum Chunk {
    Data(Vec<u8>),
    /// The file is complete: the upload may register it.
    End,
}

/// An upload being fed by a writer.
pub(crate) struct Stream {
    tx: mpsc::Sender<Chunk>,
    /// Bytes sent so far (the next write must start here).
    pub(crate) sent: u64,
    /// Where the upload registers the file.
    pub(crate) path: String,
    task: tokio::task::JoinHandle<Result<UploadSummary, Error>>,
    cancel: CancellationToken,
}

impl Stream {
    /// Starts uploading to `path` over version `base` what will be sent.
    pub(crate) fn start(
        rt: &tokio::runtime::Handle,
        grid: Grid,
        path: String,
        settings: UploadSettings,
        base: u64,
    ) -> Stream {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let cancel = CancellationToken::new();
        let mut ctl = UploadControl::default();
        ctl.base_version = Some(base);
        ctl.cancel = cancel.clone();
        let dest = Dest::Path(path.clone());
        let task = rt.spawn(async move {
            let src = ChanReader {
                rx,
                cur: Vec::new(),
                pos: 0,
                ended: false,
            };
            files::upload_controlled(&grid, src, None, &dest, &settings, None, &ctl).await
        });
        Stream {
            tx,
            sent: 0,
            path,
            task,
            cancel,
        }
    }

    /// Sends the next `data` (waiting while the upload is behind); false
    /// when the upload has ended (failed): abandon the stream.
    pub(crate) async fn send(&mut self, data: &[u8]) -> bool {
        if self.tx.send(Chunk::Data(data.to_vec())).await.is_err() {
            return false;
        }
        self.sent += data.len() as u64;
        true
    }

    /// Ends the file and waits for the upload's outcome.
    pub(crate) async fn finish(self) -> Result<UploadSummary, Error> {
        let _ = self.tx.send(Chunk::End).await;
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Local(format!("the streaming upload failed: {e}"))),
        }
    }

    /// Stops the upload: it fails and releases what it stored.
    pub(crate) fn abandon(self) {
        self.cancel.cancel();
        drop(self.tx);
    }
}

/// The upload's source: the chunks sent, then EOF after [`Chunk::End`];
/// a channel closed without it is an error (the upload then fails).
struct ChanReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl AsyncRead for ChanReader {
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
            if me.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(me.rx.poll_recv(cx)) {
                Some(Chunk::Data(v)) => {
                    me.cur = v;
                    me.pos = 0;
                }
                Some(Chunk::End) => me.ended = true,
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file was abandoned before it was complete",
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_reader_ends_only_at_end() {
        let (tx, rx) = mpsc::channel(4);
        let mut r = ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        };
        tx.send(Chunk::Data(b"abc".to_vec())).await.unwrap();
        tx.send(Chunk::Data(b"de".to_vec())).await.unwrap();
        tx.send(Chunk::End).await.unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcde");

        let (tx, rx) = mpsc::channel(4);
        let mut r = ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        };
        tx.send(Chunk::Data(b"abc".to_vec())).await.unwrap();
        drop(tx);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
