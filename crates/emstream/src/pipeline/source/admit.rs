//! Admission of a TCP connection through the listener's
//! [`Guard`](crate::security::Guard): the TLS handshake, then the token as
//! the first line; and the rate-limited log of connection errors, so a
//! client that connects and resets in a loop cannot flood stderr.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::SourceContext;
use crate::input::SourceId;
use crate::security::{Denied, Guard, GuardedStream, HANDSHAKE_TIMEOUT, MAX_TOKEN_BYTES};

/// Connection errors (refused, failed handshakes, read errors) reported one
/// by one on stderr; later ones are counted and reported as one line per
/// [`CONNECTION_LOG_EVERY`], like bad records.
pub const REPORTED_CONNECTION_ERRORS: u64 = 5;

/// How often the number of unreported connection errors is logged.
pub const CONNECTION_LOG_EVERY: Duration = Duration::from_secs(10);

/// The rate-limited log of connection errors, shared by a listener's
/// connection tasks.
#[derive(Debug, Default)]
pub(crate) struct ConnectionLog {
    inner: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    total: u64,
    unreported: u64,
    last_summary: Option<Instant>,
}

impl ConnectionLog {
    /// Logs `msg` if fewer than [`REPORTED_CONNECTION_ERRORS`] were logged,
    /// else counts it, and logs the count once [`CONNECTION_LOG_EVERY`] has
    /// passed since the last such line.
    pub(crate) fn error(&self, ctx: &SourceContext, msg: &str) {
        let line = {
            let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            s.total += 1;
            if s.total <= REPORTED_CONNECTION_ERRORS {
                let last = if s.total == REPORTED_CONNECTION_ERRORS {
                    " (further connection errors are counted and reported every 10s)"
                } else {
                    ""
                };
                Some(format!("{msg}{last}"))
            } else {
                s.unreported += 1;
                let now = Instant::now();
                let due = s
                    .last_summary
                    .is_none_or(|t| now.duration_since(t) >= CONNECTION_LOG_EVERY);
                if due {
                    s.last_summary = Some(now);
                    Some(s.take_summary())
                } else {
                    None
                }
            }
        };
        if let Some(l) = line {
            ctx.say(&l);
        }
    }

    /// Logs the count of errors not reported yet, if any (at the end).
    pub(crate) fn flush(&self, ctx: &SourceContext) {
        let line = {
            let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            (s.unreported > 0).then(|| s.take_summary())
        };
        if let Some(l) = line {
            ctx.say(&l);
        }
    }
}

impl LogState {
    fn take_summary(&mut self) -> String {
        let n = std::mem::take(&mut self.unreported);
        format!(
            "{n} more connection error(s) not shown ({} in all)",
            self.total
        )
    }
}

/// Runs the guard on a new connection: TLS handshake, then, when a token is
/// required, reads the first line (at most a token's worth of bytes, within
/// [`HANDSHAKE_TIMEOUT`]) and checks it. Returns the stream and the bytes
/// read after the token line, or `None` when the connection was refused
/// (told why in one line when the protocol allows, counted, logged) or the
/// run is giving up on the connection meanwhile (`give_up`: the run's
/// drain over).
pub(crate) async fn admit<S>(
    stream: S,
    id: SourceId,
    guard: &Guard,
    ctx: &SourceContext,
    log: &ConnectionLog,
    give_up: impl std::future::Future<Output = ()>,
) -> Option<(GuardedStream<S>, Vec<u8>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::pin!(give_up);
    let accepted = tokio::select! {
        () = &mut give_up => return None,
        r = guard.accept(stream) => r,
    };
    let mut stream = match accepted {
        Ok(s) => s,
        Err(denied) => {
            refuse(ctx, log, id, &denied);
            return None;
        }
    };
    if guard.token().is_none() {
        return Some((stream, Vec::new()));
    }
    let first = tokio::select! {
        () = &mut give_up => return None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, first_line(&mut stream)) => r,
    };
    let verdict = match first {
        Err(_) => Err(Denied::Timeout(HANDSHAKE_TIMEOUT, "token line")),
        Ok(None) => Err(Denied::NoToken),
        Ok(Some((line, rest))) => guard.check_first_line(&line).map(|()| rest),
    };
    match verdict {
        Ok(rest) => Some((stream, rest)),
        Err(denied) => {
            // One line for the client, then close; a client that does not
            // read it must not hold the task.
            let reason = format!("emstream: refused: {denied}\n");
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(reason.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            refuse(ctx, log, id, &denied);
            None
        }
    }
}

/// Counts and logs a refused connection.
fn refuse(ctx: &SourceContext, log: &ConnectionLog, id: SourceId, denied: &Denied) {
    ctx.state().connection_denied();
    log.error(
        ctx,
        &format!(
            "{}: connection refused: {denied}",
            ctx.state().source_name(id)
        ),
    );
}

/// Reads up to the first `\n`; `None` when the stream ends or sends more
/// than a token's worth of bytes (plus a line end) first. Returns the line
/// (without `\n`) and the bytes read after it.
async fn first_line<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(Vec<u8>, Vec<u8>)> {
    let limit = MAX_TOKEN_BYTES + 2;
    let mut buf = Vec::with_capacity(256);
    let mut piece = [0u8; 512];
    loop {
        let n = match stream.read(&mut piece).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let before = buf.len();
        buf.extend_from_slice(&piece[..n]);
        if let Some(at) = memchr::memchr(b'\n', &buf[before..]) {
            let at = before + at;
            let rest = buf.split_off(at + 1);
            buf.truncate(at);
            return Some((buf, rest));
        }
        if buf.len() > limit {
            return None;
        }
    }
}
