//! Streaming a sequential writer's data to the depots while it writes: a
//! file written from offset 0 with every write following the previous one
//! (`cp`, a job writing its output) is uploaded as the writes arrive, so
//! its `close` waits for the tail only, not for the whole upload.
//!
//! The upload reads the writer's stage (a second handle on the same
//! file, at offsets): a write only stages its bytes and tells the upload
//! how far the stage is complete, so it never waits for the depots, and
//! the bytes are copied once (stage to block) instead of through a queue
//! of chunks. The stage keeps every byte (reads of the open file, and
//! the fallback): any other write (a seek back, a gap, a truncation), a
//! rename, or a failure of the streaming upload abandons it, and the
//! commit at close uploads from the stage as usual. The upload reads
//! only bytes the writer announced, and any write to those abandons the
//! stream; it registers a version only after it read [`Note::End`],
//! which only a commit sends: an abandoned or dropped stream fails its
//! upload, which releases what it stored; nothing partial is ever
//! registered.

use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::credentials::Error;
use crate::files::{self, Dest, Grid, UploadControl, UploadSettings, UploadSummary};

/// What the writer tells the upload.
pub(crate) enum Note {
    /// The stage holds the file's first `n` bytes, final.
    Staged(u64),
    /// The file is complete: the upload may register it.
    End,
}

/// An upload being fed by a writer.
pub(crate) struct Stream {
    tx: mpsc::UnboundedSender<Note>,
    /// Bytes announced so far (the next write must start here).
    pub(crate) sent: u64,
    /// Where the upload registers the file.
    pub(crate) path: String,
    task: tokio::task::JoinHandle<Result<UploadSummary, Error>>,
    cancel: CancellationToken,
}

impl Stream {
    /// Starts uploading to `path` over version `base` what will be staged
    /// in `stage` (a handle on the writer's stage) and announced.
    pub(crate) fn start(
        rt: &tokio::runtime::Handle,
        grid: Grid,
        path: String,
        settings: UploadSettings,
        base: u64,
        stage: std::fs::File,
    ) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let mut ctl = UploadControl::default();
        ctl.base_version = Some(base);
        ctl.cancel = cancel.clone();
        let dest = Dest::Path(path.clone());
        let task = rt.spawn(async move {
            let src = StageReader {
                rx,
                stage,
                pos: 0,
                staged: 0,
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

    /// Announces that the stage now holds `len` bytes after
    /// `data_len` more were written at [`Stream::sent`]; false when the
    /// upload has ended (failed): abandon the stream.
    pub(crate) fn send(&mut self, data_len: u64) -> bool {
        let end = self.sent + data_len;
        if self.tx.send(Note::Staged(end)).is_err() {
            return false;
        }
        self.sent = end;
        true
    }

    /// Ends the file and waits for the upload's outcome.
    pub(crate) async fn finish(self) -> Result<UploadSummary, Error> {
        let _ = self.tx.send(Note::End);
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

/// The upload's source: the stage up to what was announced, then EOF
/// after [`Note::End`]; a channel closed without it is an error (the
/// upload then fails). Reads of the stage are `pread`s of what the writer
/// just wrote (the page cache), made in the task like a memory copy.
struct StageReader {
    rx: mpsc::UnboundedReceiver<Note>,
    stage: std::fs::File,
    /// Next byte to read.
    pos: u64,
    /// Bytes announced.
    staged: u64,
    ended: bool,
}

impl AsyncRead for StageReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        // Every announcement already made (the latest is the furthest).
        while !me.ended {
            match me.rx.poll_recv(cx) {
                Poll::Ready(Some(Note::Staged(n))) => me.staged = me.staged.max(n),
                Poll::Ready(Some(Note::End)) => me.ended = true,
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file was abandoned before it was complete",
                    )))
                }
                Poll::Pending => break,
            }
        }
        if me.pos < me.staged && buf.remaining() > 0 {
            let want = (buf.remaining() as u64).min(me.staged - me.pos) as usize;
            let dst = buf.initialize_unfilled_to(want);
            let n = me.stage.read_at(dst, me.pos)?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stage is shorter than what was written",
                )));
            }
            buf.advance(n);
            me.pos += n as u64;
            return Poll::Ready(Ok(()));
        }
        if me.ended || buf.remaining() == 0 {
            // EOF (or nothing asked).
            return Poll::Ready(Ok(()));
        }
        // Woken by the next announcement.
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn reader(stage: &std::fs::File) -> (mpsc::UnboundedSender<Note>, StageReader) {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = StageReader {
            rx,
            stage: stage.try_clone().unwrap(),
            pos: 0,
            staged: 0,
            ended: false,
        };
        (tx, r)
    }

    #[tokio::test]
    async fn the_reader_reads_what_was_announced_and_ends_only_at_end() {
        let stage = tempfile::tempfile().unwrap();
        stage.write_all_at(b"abcdefgh", 0).unwrap();
        let (tx, mut r) = reader(&stage);
        tx.send(Note::Staged(3)).unwrap();
        tx.send(Note::Staged(5)).unwrap();
        tx.send(Note::End).unwrap();
        drop(tx);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        // Bytes staged but not announced are not read.
        assert_eq!(out, b"abcde");

        // Abandoned (closed without End): an error, not EOF.
        let (tx, mut r) = reader(&stage);
        tx.send(Note::Staged(3)).unwrap();
        drop(tx);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        // A stage cut below what was announced: an error.
        let (tx, mut r) = reader(&stage);
        tx.send(Note::Staged(8)).unwrap();
        tx.send(Note::End).unwrap();
        stage.set_len(4).unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn the_reader_waits_for_announcements() {
        let stage = tempfile::tempfile().unwrap();
        let (tx, mut r) = reader(&stage);
        let feeder = tokio::spawn(async move {
            for i in 0..4u8 {
                stage.write_all_at(&[i; 1000], u64::from(i) * 1000).unwrap();
                tx.send(Note::Staged((u64::from(i) + 1) * 1000)).unwrap();
                tokio::task::yield_now().await;
            }
            tx.send(Note::End).unwrap();
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        feeder.await.unwrap();
        assert_eq!(out.len(), 4000);
        assert!(out
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    }
}
