//! Sources: a reader thread for stdin or a file, and a TCP listener whose
//! connection tasks frame their bytes the same way. Sources are the only
//! stage that watches the cancellation token; when they stop they drop their
//! senders, and that closing is what ends the later stages.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::console::{Console, SourceNames};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::{
    CANCEL_POLL, CHUNK_BYTES, IDLE_FLUSH, READ_BUF_BYTES, TCP_CHUNK_BYTES, TCP_READ_BYTES,
};
use crate::input::{Chunk, Framer, SourceId};

/// The first read error of any source, reported when the run ends.
pub(crate) type ReadError = Arc<Mutex<Option<(String, std::io::Error)>>>;

/// Starts the reader thread for `reader` (stdin or a file).
///
/// # Errors
///
/// The error of spawning the thread.
pub(crate) fn spawn_reader<R: Read + AsFd + Send + 'static>(
    reader: R,
    name: String,
    max_line: usize,
    out: mpsc::Sender<Chunk>,
    token: CancellationToken,
    read_error: ReadError,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("emstream-reader".into())
        .spawn(move || {
            if let Err(e) = read_loop(reader, 0, max_line, &out, &token) {
                read_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert((name, e));
            }
        })?;
    Ok(())
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
/// chunks, until end of input, a cancel, or a closed channel.
///
/// Before each read it waits until the descriptor is readable: when nothing
/// comes for [`IDLE_FLUSH`], the whole lines buffered so far are handed on
/// (a slow writer's points are learned, and are in the final checkpoint of a
/// signal, without waiting for a full chunk); while idle it looks at the
/// token every [`CANCEL_POLL`]. On a cancel it hands on the whole lines
/// read and stops (an unfinished last line is dropped).
///
/// # Errors
///
/// The read error that ended the source; the chunks framed before it are
/// sent first.
pub(crate) fn read_loop<R: Read + AsFd>(
    mut reader: R,
    source: SourceId,
    max_line: usize,
    tx: &mpsc::Sender<Chunk>,
    token: &CancellationToken,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut framer = Framer::new(source, max_line, CHUNK_BYTES);
    let mut out = Vec::new();
    let mut result = Ok(());
    // Whether lines may be waiting in the framer since the last flush.
    let mut unflushed = false;
    let send = |out: &mut Vec<Chunk>| out.drain(..).all(|c| tx.blocking_send(c).is_ok());
    loop {
        if token.is_cancelled() {
            framer.flush(&mut out);
            send(&mut out);
            return Ok(());
        }
        let wait = if unflushed { IDLE_FLUSH } else { CANCEL_POLL };
        if !readable(&reader, wait) {
            if unflushed {
                unflushed = false;
                framer.flush(&mut out);
                if !send(&mut out) {
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
        if !send(&mut out) {
            return Ok(());
        }
    }
    framer.finish(&mut out);
    send(&mut out);
    result
}

/// Everything a TCP connection task needs.
#[derive(Clone)]
pub(crate) struct TcpShared {
    pub(crate) out: mpsc::Sender<Chunk>,
    pub(crate) token: CancellationToken,
    pub(crate) max_line: usize,
    pub(crate) names: Arc<SourceNames>,
    pub(crate) console: Arc<Console>,
}

/// Binds the listener.
///
/// # Errors
///
/// The bind error.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until cancelled; a permit of a semaphore of
/// `max_connections` is taken before each accept, so at most that many
/// connections are served at once and further ones wait in the backlog.
pub(crate) async fn accept_loop(listener: TcpListener, max_connections: usize, shared: TcpShared) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut next_id: SourceId = 1;
    loop {
        let permit = tokio::select! {
            () = shared.token.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shared.token.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let id = next_id;
                next_id += 1;
                shared.names.insert(id, peer.to_string());
                tokio::spawn(serve(stream, id, permit, shared.clone()));
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                shared
                    .console
                    .line(&format!("accepting a connection failed: {e}"));
                drop(permit);
                tokio::select! {
                    () = shared.token.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Reads one connection, frames it and sends its chunks; like the reader
/// thread, it hands on buffered whole lines after [`IDLE_FLUSH`] without
/// data, and on a cancel hands on the whole lines read and stops.
async fn serve(mut stream: TcpStream, id: SourceId, permit: OwnedSemaphorePermit, s: TcpShared) {
    let mut buf = vec![0u8; TCP_READ_BYTES];
    let mut framer = Framer::new(id, s.max_line, TCP_CHUNK_BYTES);
    let mut out = Vec::new();
    let mut unflushed = false;
    let mut ended = false;
    loop {
        let read = tokio::select! {
            () = s.token.cancelled() => break,
            () = tokio::time::sleep(IDLE_FLUSH), if unflushed => {
                unflushed = false;
                framer.flush(&mut out);
                if !send_all(&s.out, &mut out).await {
                    break;
                }
                continue;
            }
            r = stream.read(&mut buf) => r,
        };
        let n = match read {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                s.console
                    .line(&format!("{}: read error: {e}", s.names.name(id)));
                ended = true;
                break;
            }
        };
        framer.push(&buf[..n], &mut out);
        unflushed = framer.buffered() > 0;
        if !send_all(&s.out, &mut out).await {
            break;
        }
    }
    if ended {
        framer.finish(&mut out);
    } else {
        framer.flush(&mut out);
    }
    send_all(&s.out, &mut out).await;
    drop(permit);
    s.names.remove(id);
}

/// Sends every chunk of `out`; false when the parser is gone.
async fn send_all(tx: &mpsc::Sender<Chunk>, out: &mut Vec<Chunk>) -> bool {
    for chunk in out.drain(..) {
        if tx.send(chunk).await.is_err() {
            return false;
        }
    }
    true
}
