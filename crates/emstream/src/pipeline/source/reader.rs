//! The blocking read loop shared by the stdin and file sources: one thread,
//! one reusable buffer, a [`Framer`], and `poll` so an idle input is
//! flushed and the stop is seen.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use tokio_util::sync::CancellationToken;

use super::{blocking_send_chunks, EventSender, SourceContext, SourceEvent, SourceFuture};
use crate::input::Framer;
use crate::pipeline::{CANCEL_POLL, CHUNK_BYTES, IDLE_FLUSH, READ_BUF_BYTES};

/// Runs [`read_loop`] over `reader` on a thread of its own as stream
/// `ctx.id()`, then sends its end (or its error); the future completes
/// when the thread is done.
pub(crate) fn run_on_thread<R: Read + AsFd + Send + 'static>(
    reader: R,
    name: String,
    ctx: SourceContext,
) -> SourceFuture {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (tx, id, thread_name) = (ctx.sender().clone(), ctx.id(), name.clone());
    let spawned = std::thread::Builder::new()
        .name("emstream-reader".into())
        .spawn(move || {
            let id = ctx.id();
            let tx = ctx.sender();
            let framer = ctx.framer(id, CHUNK_BYTES);
            let end = match read_loop(reader, framer, tx, ctx.stop()) {
                Ok(()) => SourceEvent::End {
                    source: id,
                    forget: false,
                },
                Err(error) => SourceEvent::Failed {
                    source: id,
                    name,
                    error,
                },
            };
            let _ = tx.blocking_send(end);
            let _ = done_tx.send(());
        });
    Box::pin(async move {
        match spawned {
            Ok(_) => {
                let _ = done_rx.await;
            }
            Err(error) => {
                // Without a thread nothing is read: say why, through the
                // channel like any read error.
                let failed = SourceEvent::Failed {
                    source: id,
                    name: thread_name,
                    error,
                };
                let _ = tx.send(failed).await;
            }
        }
    })
}

/// Whether `fd` has data (or end of input) within `timeout`.
fn readable(fd: &impl AsFd, timeout: Duration) -> bool {
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    match poll(&mut fds, Some(&ts)) {
        Ok(0) => false,
        // Readable, hung up, an error to be seen by read, or EINTR: read.
        Ok(_) | Err(_) => true,
    }
}

/// Reads `reader` into one reusable buffer, frames it and sends whole-line
/// chunks, until end of input, a stop, or a closed channel.
///
/// Before each read it waits until the descriptor is readable: when nothing
/// comes for [`IDLE_FLUSH`], the whole lines buffered so far are handed on
/// (a slow writer's points are learned, and are in the final checkpoint of a
/// signal, without waiting for a full chunk); while idle it looks at the
/// token every [`CANCEL_POLL`]. On a stop it hands on the whole lines
/// read and returns (an unfinished last line is dropped).
///
/// # Errors
///
/// The read error that ended the source; the chunks framed before it are
/// sent first.
pub(crate) fn read_loop<R: Read + AsFd>(
    mut reader: R,
    mut framer: Framer,
    tx: &EventSender,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut out = Vec::new();
    let mut result = Ok(());
    // Whether lines may be waiting in the framer since the last flush.
    let mut unflushed = false;
    loop {
        if stop.is_cancelled() {
            framer.flush(&mut out);
            blocking_send_chunks(tx, &mut out);
            return Ok(());
        }
        let wait = if unflushed { IDLE_FLUSH } else { CANCEL_POLL };
        if !readable(&reader, wait) {
            if unflushed {
                unflushed = false;
                framer.flush(&mut out);
                if !blocking_send_chunks(tx, &mut out) {
                    return Ok(());
                }
            }
            continue;
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        framer.push(&buf[..n], &mut out);
        unflushed = framer.buffered() > 0;
        if !blocking_send_chunks(tx, &mut out) {
            return Ok(());
        }
    }
    framer.finish(&mut out);
    blocking_send_chunks(tx, &mut out);
    result
}
