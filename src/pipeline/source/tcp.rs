//! A TCP listener as a source: every accepted connection is a stream of its
//! own (its own [`SourceId`], framer and line numbers), served by a task
//! that frames its bytes like the reader thread does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::admit::{admit, ConnectionLog};
use super::{send_chunks, Source, SourceContext, SourceEvent, SourceFuture};
use crate::input::SourceId;
use crate::pipeline::{PipelineError, IDLE_FLUSH, TCP_CHUNK_BYTES, TCP_READ_BYTES};
use crate::security::Guard;

/// A bound TCP listener; at most `max_connections` connections are served
/// at once (a semaphore permit each), further ones wait in the backlog.
#[derive(Debug)]
pub struct TcpSource {
    listener: TcpListener,
    local: SocketAddr,
    max_connections: usize,
    guard: Arc<Guard>,
}

impl TcpSource {
    /// Binds `addr` (port 0 picks a free port: see
    /// [`TcpSource::local_addr`]).
    ///
    /// # Errors
    ///
    /// [`PipelineError::Bind`] naming the address.
    pub async fn bind(addr: SocketAddr, max_connections: usize) -> Result<Self, PipelineError> {
        let bind_err = |e| PipelineError::Bind { addr, source: e };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = listener.local_addr().unwrap_or(addr);
        Ok(TcpSource {
            listener,
            local,
            max_connections,
            guard: Arc::new(Guard::default()),
        })
    }

    /// Admits connections only through `guard` (TLS, token).
    pub fn with_guard(mut self, guard: Arc<Guard>) -> Self {
        self.guard = guard;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Source for TcpSource {
    fn name(&self) -> String {
        "listener".into()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(accept_loop(
            self.listener,
            self.max_connections,
            self.guard,
            ctx,
        ))
    }
}

/// Accepts connections until the stop; a permit of a semaphore of
/// `max_connections` is taken before each accept. Returns once every
/// connection task has ended.
async fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    guard: Arc<Guard>,
    ctx: SourceContext,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let log = Arc::new(ConnectionLog::default());
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = ctx.stop().cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = ctx.stop().cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let id = ctx.opened(peer.to_string());
                let (guard, log, ctx) = (guard.clone(), log.clone(), ctx.clone());
                connections.spawn(async move {
                    match admit(stream, id, &guard, &ctx, &log).await {
                        Some((stream, first)) => serve(stream, first, id, permit, ctx, &log).await,
                        None => {
                            drop(permit);
                            ctx.closed(id);
                        }
                    }
                });
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                ctx.state().connection_refused();
                log.error(&ctx, &format!("accepting a connection failed: {e}"));
                drop(permit);
                tokio::select! {
                    () = ctx.stop().cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    log.flush(&ctx);
}

/// Reads one connection, frames it and sends its chunks; like the reader
/// thread, it hands on buffered whole lines after [`IDLE_FLUSH`] without
/// data, and on the stop hands on the whole lines read and ends.
/// `first` holds bytes already read after the token line.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    first: Vec<u8>,
    id: SourceId,
    permit: OwnedSemaphorePermit,
    ctx: SourceContext,
    log: &ConnectionLog,
) {
    let mut buf = vec![0u8; TCP_READ_BYTES];
    let mut framer = ctx.framer(id, TCP_CHUNK_BYTES);
    let tx = ctx.sender();
    let mut out = Vec::new();
    framer.push(&first, &mut out);
    let mut unflushed = framer.buffered() > 0;
    let mut ended = false;
    loop {
        let read = tokio::select! {
            () = ctx.stop().cancelled() => break,
            () = tokio::time::sleep(IDLE_FLUSH), if unflushed => {
                unflushed = false;
                framer.flush(&mut out);
                if !send_chunks(tx, &mut out).await {
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
                // One connection's error ends that connection, not the run.
                log.error(
                    &ctx,
                    &format!("{}: read error: {e}", ctx.state().source_name(id)),
                );
                ended = true;
                break;
            }
        };
        framer.push(&buf[..n], &mut out);
        unflushed = framer.buffered() > 0;
        if !send_chunks(tx, &mut out).await {
            break;
        }
    }
    // A connection that ends mid-line tore its last record: it is dropped
    // and counted, never learned.
    let torn = if ended {
        framer.finish_torn(&mut out)
    } else {
        framer.flush(&mut out);
        None
    };
    let mut sent = send_chunks(tx, &mut out).await;
    if let (true, Some(line)) = (sent, torn) {
        sent = tx
            .send(SourceEvent::Torn { source: id, line })
            .await
            .is_ok();
    }
    if sent {
        let _ = tx
            .send(SourceEvent::End {
                source: id,
                forget: true,
            })
            .await;
    }
    drop(permit);
    ctx.closed(id);
}
