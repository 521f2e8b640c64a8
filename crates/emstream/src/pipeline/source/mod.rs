//! Sources: where chunks of whole lines come from.
//!
//! A source is one implementation of [`Source`]: stdin ([`stdin`]), a file
//! ([`mod@file`]) and a TCP listener whose connections are sub-sources
//! ([`tcp`]) are siblings and none knows about the others. A source
//!
//! - frames its bytes into [`Chunk`]s of whole lines (a [`Framer`] per
//!   stream) and sends each as a [`SourceEvent::Chunk`] tagged with its
//!   [`SourceId`] and the [`Position`] reached at the chunk's end;
//! - watches [`SourceContext::stop`] (phase one of the stop) and, when it
//!   fires, hands on the whole lines it holds and returns;
//! - ends each stream with a [`SourceEvent::End`] and reports a read error
//!   that ends it with [`SourceEvent::Failed`], through the same channel,
//!   so the parser and learner see the end and the error in order with the
//!   data.
//!
//! A new source (MQTT, NATS JetStream) is a new file here with a type that
//! implements [`Source`], and one arm in `open`; nothing else changes.

mod admit;
pub mod file;
pub(crate) mod messages;
pub mod mqtt;
pub mod nats;
pub(crate) mod reader;
pub mod stdin;
pub mod tcp;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::console::Console;
use super::snapshot::DurableReceiver;
use super::state::RunState;
use super::PipelineError;
use crate::checkpoint::SourcePosition;
use crate::config::{RunConfig, Source as SourceConfig};
use crate::input::keep::MessageTag;
use crate::input::{Chunk, Framer, SourceId};

/// Where a source stands after a chunk: for a line source the number of the
/// last line in it (lines counted from 1, too-long lines included); for a
/// replayable log the sequence number of the last message wholly in it.
/// The learner keeps the last position of every source with the model, so
/// a snapshot (and a checkpoint) says how far each source has been learned.
pub type Position = u64;

/// What a source sends down the pipeline.
#[derive(Debug)]
pub enum SourceEvent {
    /// Whole lines of one stream, and the position reached at their end.
    Chunk {
        /// The lines (tagged with their stream's [`SourceId`]).
        chunk: Chunk,
        /// The stream's position after them.
        position: Position,
        /// For a message source (MQTT, JetStream): where its messages
        /// start, in line order, beginning with the message the chunk's
        /// first line belongs to; empty for line sources.
        messages: Vec<MessageStart>,
    },
    /// A stream ended (end of input, closed connection, or the stop).
    End {
        /// The stream.
        source: SourceId,
        /// Whether its position is of no more use once ended (a TCP
        /// connection cannot be replayed): the learner then forgets it, so
        /// thousands of short connections do not grow the snapshot.
        forget: bool,
    },
    /// A read error ended a stream; the run reports it when it ends.
    Failed {
        /// The stream.
        source: SourceId,
        /// Its name for the message.
        name: String,
        /// The error.
        error: std::io::Error,
    },
    /// A network stream ended in the middle of a record (no line end after
    /// its last bytes, e.g. a client that disconnected or was reset): that
    /// torn record was dropped by the source ([`Framer::finish_torn`]); the
    /// parser counts it as [`RejectReason::Torn`]. Files and stdin keep an
    /// unterminated last line as a record.
    ///
    /// [`Framer::finish_torn`]: crate::input::Framer::finish_torn
    /// [`RejectReason::Torn`]: crate::input::RejectReason::Torn
    Torn {
        /// The stream.
        source: SourceId,
        /// The torn record's line number.
        line: u64,
    },
    /// Not from a source: the learner's first fit is over, and batches the
    /// parser read ahead meanwhile may wait for it while no input comes
    /// ([`RunState::set_fitting`](super::RunState)). Carries nothing.
    Wake,
}

/// Where a message of a message source starts: the line number (in the
/// stream's numbering) of its first line, and its topic and sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageStart {
    /// The message's first line.
    pub first_line: u64,
    /// Its topic (or subject) and sequence.
    pub tag: MessageTag,
}

/// The message that line `line` of a chunk belongs to, given the chunk's
/// message starts (in line order).
pub fn message_at(messages: &[MessageStart], line: u64) -> Option<&MessageTag> {
    let i = messages.partition_point(|m| m.first_line <= line);
    i.checked_sub(1).map(|i| &messages[i].tag)
}

/// The sending side every source gets.
pub type EventSender = mpsc::Sender<SourceEvent>;

/// A boxed future a source runs as.
pub type SourceFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One named source of lines; see the module docs for the contract.
pub trait Source: Send + 'static {
    /// The name of the source's first stream in messages (`stdin`, the file
    /// path, `listener`); sub-streams are named through
    /// [`SourceContext::opened`].
    fn name(&self) -> String;

    /// Runs the source until its input ends or [`SourceContext::stop`]
    /// fires. The returned future is spawned on the runtime and tracked:
    /// the run waits for it before returning, so a source must not leave
    /// tasks or threads of its own behind.
    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture;
}

/// What a running source is given.
#[derive(Clone)]
pub struct SourceContext {
    out: EventSender,
    stop: CancellationToken,
    state: Arc<RunState>,
    console: Arc<Console>,
    max_line: usize,
    id: SourceId,
    next_id: Arc<AtomicU64>,
    /// Positions of the resumed checkpoint, by key.
    resumed: Arc<Vec<SourcePosition>>,
    /// The durability hook, for a source that acknowledges what is saved.
    durable: Option<DurableReceiver>,
}

impl SourceContext {
    pub(crate) fn new(
        out: EventSender,
        state: Arc<RunState>,
        console: Arc<Console>,
        max_line: usize,
        id: SourceId,
        next_id: Arc<AtomicU64>,
    ) -> Self {
        SourceContext {
            out,
            stop: state.sources_token(),
            state,
            console,
            max_line,
            id,
            next_id,
            resumed: Arc::new(Vec::new()),
            durable: None,
        }
    }

    /// The same context with the resumed checkpoint's source positions and
    /// the durability hook (the pipeline gives both; a test may not).
    pub(crate) fn with_replay(
        mut self,
        resumed: Vec<SourcePosition>,
        durable: DurableReceiver,
    ) -> Self {
        self.resumed = Arc::new(resumed);
        self.durable = Some(durable);
        self
    }

    /// The position saved under `key` in the checkpoint this run resumed
    /// from: a replayable source continues after it.
    pub fn resumed(&self, key: &str) -> Option<Position> {
        self.resumed
            .iter()
            .find(|s| s.source == key)
            .map(|s| s.position)
    }

    /// Registers stream `id` as replayable: its positions are saved under
    /// `key` in every checkpoint (and read back by [`SourceContext::resumed`]);
    /// `learned` is where the model stands on it now.
    pub fn replayable(&self, id: SourceId, key: String, learned: Position) {
        self.state.replay().register(id, key, learned);
    }

    /// The durability hook: which positions are durably saved, to
    /// acknowledge messages up to them. `None` without a pipeline.
    pub fn durable(&self) -> Option<DurableReceiver> {
        self.durable.clone()
    }

    /// The channel to the parser.
    pub fn sender(&self) -> &EventSender {
        &self.out
    }

    /// Phase one of the stop: the source hands on what it holds and ends.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The run state (counters, names).
    pub fn state(&self) -> &Arc<RunState> {
        &self.state
    }

    /// Longest accepted line in bytes (`--max-line-bytes`).
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The id of the source's own stream.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// Reports how a replayable source's first stream ended: an
    /// [`SourceEvent::End`] that keeps its position, or the error that ended
    /// it as a [`SourceEvent::Failed`] under `name`.
    pub async fn report_end(&self, result: Result<(), String>, name: String) {
        let source = self.id;
        let end = match result {
            Ok(()) => SourceEvent::End {
                source,
                forget: false,
            },
            Err(msg) => SourceEvent::Failed {
                source,
                name,
                error: std::io::Error::other(msg),
            },
        };
        let _ = self.out.send(end).await;
    }

    /// A framer for stream `id` with the run's line limit.
    pub fn framer(&self, id: SourceId, chunk_bytes: usize) -> Framer {
        Framer::new(id, self.max_line, chunk_bytes)
    }

    /// A fresh id for a sub-stream (a connection), unique over the run,
    /// registered under `name` (the peer) until [`SourceContext::closed`].
    pub fn opened(&self, name: String) -> SourceId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.state.source_opened(id, name);
        id
    }

    /// Marks a sub-stream from [`SourceContext::opened`] closed.
    pub fn closed(&self, id: SourceId) {
        self.state.source_closed(id);
    }

    /// A message line on stderr.
    pub fn say(&self, msg: &str) {
        self.console.line(msg);
    }
}

/// Opens the configured source: a file is opened and a listener bound here,
/// so that a wrong path or a busy port fails the run before it starts.
///
/// # Errors
///
/// [`PipelineError::Open`] for a file that cannot be opened,
/// [`PipelineError::Bind`] for an address that cannot be bound.
pub(crate) async fn open(
    config: &RunConfig,
    console: &Console,
) -> Result<Box<dyn Source>, PipelineError> {
    Ok(match config.source() {
        SourceConfig::Stdin => Box::new(stdin::StdinSource),
        SourceConfig::File(path) => Box::new(file::FileSource::open(path)?),
        SourceConfig::Listen(addr) => {
            let guard =
                crate::security::Guard::load(config.access()).map_err(PipelineError::Access)?;
            if let Some(w) = guard.exposure_warning(*addr, "the listener") {
                console.line(&w);
            }
            for w in config.access().warnings() {
                console.line(&w);
            }
            let daemon = config.daemon();
            let s = tcp::TcpSource::bind(*addr, config.max_connections())
                .await?
                .with_timeouts(tcp::Timeouts {
                    idle: daemon.idle_timeout,
                    shutdown: daemon.shutdown_timeout,
                })
                .with_guard(Arc::new(guard.clone()));
            if let Some(how) = guard.describe() {
                console.line(&format!("connections must pass: {how}"));
            }
            console.line(&format!("listening on {}", s.local_addr()));
            Box::new(s)
        }
        SourceConfig::Mqtt(m) => Box::new(mqtt::MqttSource::new(m.clone())),
        SourceConfig::Nats(n) => Box::new(nats::NatsSource::new(n.clone())),
    })
}

/// Number of lines a chunk covers (too-long lines, which are not in its
/// bytes, included), for line sources' [`Position`].
pub(crate) fn lines_in(chunk: &Chunk) -> u64 {
    let mut n = crate::input::count_line_ends(&chunk.bytes) as u64;
    if chunk.last && chunk.bytes.last().is_some_and(|&b| b != b'\n') {
        n += 1;
    }
    n + chunk.too_long.len() as u64
}

/// Sends framed chunks with their line positions; false when the parser is
/// gone.
pub(crate) async fn send_chunks(tx: &EventSender, out: &mut Vec<Chunk>) -> bool {
    for chunk in out.drain(..) {
        let position = chunk.first_line + lines_in(&chunk) - 1;
        if tx
            .send(SourceEvent::Chunk {
                chunk,
                position,
                messages: Vec::new(),
            })
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// [`send_chunks`] from a thread.
pub(crate) fn blocking_send_chunks(tx: &EventSender, out: &mut Vec<Chunk>) -> bool {
    out.drain(..).all(|chunk| {
        let position = chunk.first_line + lines_in(&chunk) - 1;
        tx.blocking_send(SourceEvent::Chunk {
            chunk,
            position,
            messages: Vec::new(),
        })
        .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_position_is_its_last_line_number() {
        let c = Chunk {
            source: 0,
            first_line: 5,
            bytes: b"a\nb\n".to_vec(),
            too_long: vec![6],
            last: false,
        };
        // Lines 5, 6 (too long) and 7.
        assert_eq!(c.first_line + lines_in(&c) - 1, 7);
        let end = Chunk {
            source: 0,
            first_line: 8,
            bytes: b"c\nd".to_vec(),
            too_long: vec![],
            last: true,
        };
        assert_eq!(end.first_line + lines_in(&end) - 1, 9);
    }
}
