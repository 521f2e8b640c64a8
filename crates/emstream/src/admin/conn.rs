//! The admin server's connections, bounded: at most [`MAX_CONNECTIONS`]
//! open at once (more are closed as they arrive), each closed after
//! [`IDLE_TIMEOUT`] without a byte read or written (a request whose
//! headers never end, a keep-alive connection nobody uses, a client that
//! stops reading its response), and HTTP/1.1 only: a connection that opens
//! with the HTTP/2 preface is closed, since one HTTP/2 connection can
//! carry many requests at once and so multiply what a request costs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Admin connections open at once; a connection over it is closed at
/// once (scrapers and the live page need a handful).
pub const MAX_CONNECTIONS: usize = 256;

/// A connection without a byte read or written for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How an HTTP/2 connection with prior knowledge begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A connection of the admin server; see the module docs.
pub struct Bounded<S> {
    inner: S,
    idle: Pin<Box<Sleep>>,
    /// Bytes of the first read compared with the HTTP/2 preface so far.
    checked: usize,
    _slot: OwnedSemaphorePermit,
}

impl<S> Bounded<S> {
    /// `inner`, holding one of the [`MAX_CONNECTIONS`] slots while open.
    pub fn new(inner: S, slot: OwnedSemaphorePermit) -> Self {
        Bounded {
            inner,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            checked: 0,
            _slot: slot,
        }
    }

    fn progressed(&mut self) {
        self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
    }

    /// `Pending` while the connection may still wait; the timeout error
    /// once it has been idle too long.
    fn still_waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "admin connection idle",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    self.progressed();
                    if self.checked < H2_PREFACE.len() {
                        let n = got.len().min(H2_PREFACE.len() - self.checked);
                        if got[..n] != H2_PREFACE[self.checked..self.checked + n] {
                            // Not the preface: HTTP/1, checked no further.
                            self.checked = H2_PREFACE.len() + 1;
                        } else {
                            self.checked += n;
                            if self.checked == H2_PREFACE.len() {
                                return Poll::Ready(Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "HTTP/2 is not served: use HTTP/1.1",
                                )));
                            }
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.still_waiting(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.still_waiting(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.still_waiting(cx),
            done => done,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
