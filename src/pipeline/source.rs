//! Sources: a reader thread for stdin or a file, and a TCP listener whose
//! connection tasks frame their bytes the same way. Sources are the only
//! stage that watches the cancellation token; when they stop they drop their
//! senders, and that closing is what ends the later stages.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::console::{Console, SourceNames};
use super::{CHUNK_BYTES, READ_BUF_BYTES, SOURCE_QUEUE, TCP_CHUNK_BYTES, TCP_READ_BYTES};
use crate::input::{Chunk, Framer, SourceId};

/// The first read error of any source, reported when the run ends.
pub(crate) type ReadError = Arc<Mutex<Option<(String, std::io::Error)>>>;

/// Starts the reader thread for `reader` (stdin or a file) and a task that
/// forwards its chunks to `out` until the input ends or `token` is
/// cancelled. The forwarder is what lets a cancel end the pipeline even
/// while the thread is blocked in a read that may never return (stdin kept
/// open by its writer): it drops its sender without waiting for the thread.
pub(crate) fn spawn_reader<R: Read + Send + 'static>(
    reader: R,
    name: String,
    max_line: usize,
    out: mpsc::Sender<Chunk>,
    token: CancellationToken,
    read_error: ReadError,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Chunk>(SOURCE_QUEUE);
    let thread_token = token.clone();
    std::thread::Builder::new()
        .name("emstream-reader".into())
        .spawn(move || {
            if let Err(e) = read_loop(reader, 0, max_line, &tx, &thread_token) {
                read_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert((name, e));
            }
        })?;
    tokio::spawn(forward(rx, out, token));
    Ok(())
}

/// Reads `reader` into one reusable buffer, frames it and sends whole-line
/// chunks, until end of input, a cancel seen between reads, or a closed
/// channel.
///
/// # Errors
///
/// The read error that ended the source; the chunks framed before it are
/// sent first.
pub(crate) fn read_loop<R: Read>(
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
    while !token.is_cancelled() {
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
        for chunk in out.drain(..) {
            if tx.blocking_send(chunk).is_err() {
                return Ok(());
            }
        }
    }
    framer.finish(&mut out);
    for chunk in out.drain(..) {
        if tx.blocking_send(chunk).is_err() {
            break;
        }
    }
    result
}

/// Moves chunks from a reader thread to the parser channel; on cancel it
/// passes on what the thread already sent, then drops both ends.
async fn forward(
    mut rx: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<Chunk>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => {
                while let Ok(chunk) = rx.try_recv() {
                    if out.send(chunk).await.is_err() {
                        return;
                    }
                }
                return;
            }
            chunk = rx.recv() => match chunk {
                Some(chunk) => {
                    if out.send(chunk).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
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

/// Reads one connection, frames it and sends its chunks.
async fn serve(mut stream: TcpStream, id: SourceId, permit: OwnedSemaphorePermit, s: TcpShared) {
    let mut buf = vec![0u8; TCP_READ_BYTES];
    let mut framer = Framer::new(id, s.max_line, TCP_CHUNK_BYTES);
    let mut out = Vec::new();
    loop {
        let read = tokio::select! {
            () = s.token.cancelled() => break,
            r = stream.read(&mut buf) => r,
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                s.console
                    .line(&format!("{}: read error: {e}", s.names.name(id)));
                break;
            }
        };
        framer.push(&buf[..n], &mut out);
        for chunk in out.drain(..) {
            if s.out.send(chunk).await.is_err() {
                s.names.remove(id);
                return;
            }
        }
    }
    framer.finish(&mut out);
    for chunk in out.drain(..) {
        if s.out.send(chunk).await.is_err() {
            break;
        }
    }
    drop(permit);
    s.names.remove(id);
}
