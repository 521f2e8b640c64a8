//! A TCP listener as a source: every accepted connection is a stream of its
//! own (its own [`SourceId`], framer and line numbers), served by a task
//! that frames its bytes like the reader thread does.
//!
//! Timeouts ([`Timeouts`]): a connection that sends nothing for the idle
//! timeout is closed (logged, counted). On the stop the listener stops
//! accepting, after taking the connections already waiting in its backlog
//! (their clients may have sent everything and closed before the signal);
//! every connection is then read on until it ends, goes quiet for
//! [`DRAIN_QUIET`], or the shutdown timeout passes, so what a client sent
//! before the signal is learned and idle connections do not delay the exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::admit::{admit, ConnectionLog};
use super::{send_chunks, Source, SourceContext, SourceEvent, SourceFuture};
use crate::input::SourceId;
use crate::pipeline::state::CloseReason;
use crate::pipeline::{PipelineError, IDLE_FLUSH, TCP_CHUNK_BYTES, TCP_READ_BYTES};
use crate::security::Guard;

/// A connection that sends nothing for this long after the stop is done:
/// what its client sent before the signal has arrived by then (loopback or
/// LAN), and 100 idle connections still let the process exit well within a
/// second.
pub const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// How long the listener keeps taking connections already waiting in its
/// backlog when the stop comes (the reactor sees a pending connection
/// within one turn).
pub const BACKLOG_GRACE: Duration = Duration::from_millis(50);

/// Connections being admitted at once (TLS handshake, token line, each
/// bounded by the handshake timeout) or admitted and waiting for a data
/// slot; a connection beyond them is closed as it arrives. They hold no
/// data slot: strangers that never finish the handshake or the token
/// cannot keep a client with the token out.
pub const MAX_ADMISSIONS: usize = 256;

/// The connection timeouts of a [`TcpSource`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    /// Close a connection that sent nothing for this long (`None`: never).
    pub idle: Option<Duration>,
    /// After the stop, read each connection at most this long.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    /// No idle timeout; 10 s to drain on the stop.
    fn default() -> Self {
        Timeouts {
            idle: None,
            shutdown: Duration::from_secs(10),
        }
    }
}

/// A bound TCP listener; at most `max_connections` connections are served
/// at once (a semaphore permit each), further ones wait in the backlog.
#[derive(Debug)]
pub struct TcpSource {
    listener: TcpListener,
    local: SocketAddr,
    max_connections: usize,
    timeouts: Timeouts,
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
            timeouts: Timeouts::default(),
            guard: Arc::new(Guard::default()),
        })
    }

    /// The same listener with these connection timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
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
            self.timeouts,
            self.guard,
            ctx,
        ))
    }
}

/// Accepts connections until the stop. Every connection is first admitted
/// by `guard` (TLS handshake, token line) holding one of
/// [`MAX_ADMISSIONS`] admission slots (none free: closed at once), then
/// waits for one of `max_connections` data slots and is served. On the
/// stop, takes the connections waiting in the backlog (beyond the limit:
/// they are only drained). Returns once every connection task has ended.
async fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    timeouts: Timeouts,
    guard: Arc<Guard>,
    ctx: SourceContext,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let admissions = Arc::new(Semaphore::new(MAX_ADMISSIONS));
    let log = Arc::new(ConnectionLog::default());
    let connections = TaskTracker::new();
    // `slots`: the data slots to wait for (none for the backlog taken
    // after the stop: only drained).
    let start = |stream: TcpStream,
                 peer: SocketAddr,
                 admission: Option<OwnedSemaphorePermit>,
                 slots: Option<Arc<Semaphore>>| {
        let id = ctx.opened(peer.to_string());
        let (guard, log, ctx) = (guard.clone(), log.clone(), ctx.clone());
        connections.spawn(async move {
            // A connection accepted before the stop (or taken from the
            // backlog after it) was sent its data before the signal: it is
            // still admitted and drained, until the shutdown timeout.
            let stop = ctx.stop().clone();
            let drain_over = async move {
                stop.cancelled().await;
                tokio::time::sleep(timeouts.shutdown).await;
            };
            tokio::pin!(drain_over);
            let admitted = admit(stream, id, &guard, &ctx, &log, &mut drain_over).await;
            let Some((stream, first)) = admitted else {
                ctx.closed(id);
                return;
            };
            // Admitted: now, and only now, a data slot.
            let permit = match slots {
                None => None,
                Some(slots) => {
                    let slot = tokio::select! {
                        () = &mut drain_over => None,
                        p = slots.acquire_owned() => p.ok(),
                    };
                    if slot.is_none() {
                        ctx.closed(id);
                        return;
                    }
                    slot
                }
            };
            drop(admission);
            tracing::info!(target: "emstream", connection = id, peer = %peer, "connection #{id} ({peer}) opened");
            serve(stream, first, id, permit, timeouts, ctx, &log).await;
        });
    };
    loop {
        let accepted = tokio::select! {
            () = ctx.stop().cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(admission) = admissions.clone().try_acquire_owned() else {
                    drop(stream);
                    ctx.state().connection_refused();
                    log.error(
                        &ctx,
                        &format!("connection from {peer} closed: {MAX_ADMISSIONS} connections are being admitted already"),
                    );
                    continue;
                };
                // The --stop-when-idle quiet counts from the first client.
                ctx.state().replay().touch();
                start(stream, peer, Some(admission), Some(limit.clone()))
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                ctx.state().connection_refused();
                log.error(&ctx, &format!("accepting a connection failed: {e}"));
                tokio::select! {
                    () = ctx.stop().cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    // Connections the kernel completed before the stop: their data is
    // already here.
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(BACKLOG_GRACE, listener.accept()).await
    {
        start(stream, peer, None, None);
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
    permit: Option<OwnedSemaphorePermit>,
    timeouts: Timeouts,
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
    let mut reason = CloseReason::Shutdown;
    // Set when the stop comes: the end of the drain.
    let mut drain_until: Option<Instant> = None;
    let mut last_data = Instant::now();
    loop {
        // A peer that never stops sending is still cut at the shutdown
        // timeout (the biased select below would otherwise always read).
        if drain_until.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        // The next moment the connection is given up without data.
        let give_up = match drain_until {
            Some(end) => Some(end.min(last_data + DRAIN_QUIET)),
            None => timeouts.idle.map(|idle| last_data + idle),
        };
        // Biased: data already waiting is read before the quiet or idle
        // timer is looked at, so a reader that was not scheduled for a while
        // (a loaded machine) never takes its own delay for a quiet peer.
        let read = tokio::select! {
            biased;
            () = ctx.stop().cancelled(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + timeouts.shutdown);
                // Quiet is measured from the stop on.
                last_data = Instant::now();
                continue;
            }
            r = stream.read(&mut buf) => r,
            () = sleep_until_opt(give_up) => {
                if drain_until.is_none() {
                    reason = CloseReason::IdleTimeout;
                    ctx.state().connection_timed_out();
                    ended = true;
                }
                break;
            }
            () = tokio::time::sleep(IDLE_FLUSH), if unflushed => {
                unflushed = false;
                framer.flush(&mut out);
                if !send_chunks(tx, &mut out).await {
                    break;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) => {
                ended = true;
                reason = CloseReason::Eof;
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
                reason = CloseReason::Error;
                break;
            }
        };
        framer.push(&buf[..n], &mut out);
        unflushed = framer.buffered() > 0;
        if !send_chunks(tx, &mut out).await {
            break;
        }
        // Quiet counts from when the learner took the data: time spent
        // waiting on its back-pressure is ours, not the peer's silence.
        last_data = Instant::now();
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
    ctx.state().connection_ended(id, reason);
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

/// Sleeps until `at`, or for ever when `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
