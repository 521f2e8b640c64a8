//! The parser stage: one thread owns the [`Parser`] (and so the dimension
//! state) and turns chunks from every source into batches for the learner.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use tokio::sync::mpsc;

use super::shuffle::Shuffle;
use super::source::{message_at, MessageStart, Position, SourceEvent};
use super::state::{Ended, RunState, StopReason};
use crate::config::OnError;
use crate::input::{Batch, Chunk, ParseError, Parser, ParserConfig, RejectReason, SourceId};

/// Valid records that decide an unconfigured dimension by majority
/// ([`Parser::with_dim_vote`]): 9 of the first 16 agreeing decide at once.
pub(crate) const DIM_VOTE: usize = 16;

/// What the parser hands the learner: a batch, the source positions its
/// rows reach, the streams that ended, and with `--on-error fail` the bad
/// record that ends the run (the batch then holds only the rows before it).
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) batch: Batch,
    pub(crate) fatal: Option<ParseError>,
    /// (stream, position after the batch's lines), in arrival order.
    pub(crate) positions: Vec<(SourceId, Position)>,
    /// Streams that ended and whose position can be forgotten.
    pub(crate) forget: Vec<SourceId>,
    /// A read error that ended a stream: (its name, the error).
    pub(crate) failed: Option<(String, std::io::Error)>,
    /// The dimensions' names, on the first batch after the parser learned
    /// them (a header, or JSON `--fields`); they go into the checkpoint.
    pub(crate) names: Option<Vec<String>>,
}

/// Chunks handed to each parse worker and not yet taken back: enough that
/// a worker always has the next one queued while the stage thread orders
/// and sends the batches.
const WORKER_QUEUE: usize = 2;

/// Events waiting behind a chunk that is away, at most: past this the
/// stage waits for that chunk rather than read on (chunks parsed here, of
/// other sources, would otherwise pile up behind a slow one).
const WAITING: usize = 64;

/// A chunk's rows, parsed on the stage thread or by a parse worker.
struct Parsed {
    chunk: Chunk,
    batch: Batch,
    /// Where a quoted record of the chunk's source still open after the
    /// chunk starts (only a chunk parsed here can leave one).
    open: Option<u64>,
    /// The dimension after the chunk.
    dim: Option<usize>,
    /// The dimensions' names, when this chunk made them known.
    names: Option<Vec<String>>,
}

/// An event waiting for its turn: the batches go to the learner in input
/// order whichever thread parsed them.
enum Entry {
    /// A chunk already parsed (on the stage thread), with the source
    /// position after it and where its messages start.
    Parsed(Box<Parsed>, Position, Vec<MessageStart>),
    /// A chunk a parse worker is reading: the next result of that worker.
    Away(usize, Position, Vec<MessageStart>),
    /// Any other event.
    Other(SourceEvent),
}

/// The parse workers: each keeps a [`Parser::fork`] and reads the chunks
/// sent to it in order; the stage thread sends them round-robin and takes
/// the results back in the same order, so no sequence numbers are needed.
struct Workers<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    /// How many to start (at most).
    wanted: usize,
    jobs: Vec<SyncSender<(Chunk, Batch)>>,
    results: Vec<Receiver<(Chunk, Batch)>>,
    /// The worker the next chunk goes to.
    next: usize,
    /// Chunks sent and not yet taken back.
    in_flight: usize,
}

impl<'scope, 'env> Workers<'scope, 'env> {
    /// Whether chunks can go to the workers: once `parser` is settled
    /// (it can fork), the workers are started with forks of it. If a
    /// thread cannot be started, the stage parses on alone (said once).
    fn ready(&mut self, parser: &Parser) -> bool {
        if self.wanted == 0 || !self.jobs.is_empty() {
            return self.wanted > 0;
        }
        let forks: Vec<Parser> = (0..self.wanted).map_while(|_| parser.fork()).collect();
        if forks.is_empty() {
            return false;
        }
        for (i, mut fork) in forks.into_iter().enumerate() {
            let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<(Chunk, Batch)>(WORKER_QUEUE);
            let (done_tx, done_rx) = std::sync::mpsc::sync_channel(WORKER_QUEUE);
            let started = std::thread::Builder::new()
                .name(format!("emstream-parse-{i}"))
                .spawn_scoped(self.scope, move || {
                    while let Ok((chunk, mut batch)) = job_rx.recv() {
                        fork.parse_continuing(&chunk, &mut batch);
                        if done_tx.send((chunk, batch)).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = started {
                tracing::warn!(
                    target: "emstream",
                    "cannot start parse thread {} of {} ({e}): parsing on {}",
                    i + 1,
                    self.wanted,
                    if i == 0 { "the stage thread alone".to_string() } else { format!("{i} threads") }
                );
                break;
            }
            self.jobs.push(job_tx);
            self.results.push(done_rx);
        }
        self.wanted = self.jobs.len();
        self.wanted > 0
    }

    /// Sends `chunk` to the next worker (after [`Workers::ready`]); the
    /// index of the worker it went to.
    fn send(&mut self, chunk: Chunk, batch: Batch) -> usize {
        let w = self.next;
        self.next = (w + 1) % self.jobs.len();
        self.in_flight += 1;
        self.jobs[w]
            .send((chunk, batch))
            .expect("a parse thread stopped");
        w
    }

    /// The next result of worker `w`, waiting for it if `wait`.
    fn take(&mut self, w: usize, wait: bool) -> Option<(Chunk, Batch)> {
        let r = if wait {
            Some(self.results[w].recv().expect("a parse thread stopped"))
        } else {
            match self.results[w].try_recv() {
                Ok(r) => Some(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("a parse thread stopped")
                }
            }
        };
        self.in_flight -= r.is_some() as usize;
        r
    }

    /// Whether every worker has its queue of chunks.
    fn full(&self) -> bool {
        self.in_flight >= self.wanted * WORKER_QUEUE
    }
}

/// How many chunks the stage parsed itself and how many its parse threads
/// did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Handed {
    pub(crate) here: u64,
    pub(crate) away: u64,
}

/// Runs the parser stage until the event channel closes (or, with
/// `--on-error fail`, until the first bad record, when it stops the run so
/// the sources stop).
///
/// With `parse_threads` above 1, that many worker threads parse the
/// chunks this thread's parser hands off ([`Parser::hand_off`]: once the
/// dimension, separator and header are decided, chunks whose quotes pair
/// up on every line);
/// this thread parses the rest itself, in order, and sends every batch to
/// the learner in input order, so the batches, line numbers and rejects
/// are the same whatever the number of threads.
// The stage's inputs and outputs, each used once: a struct would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn parser_loop(
    config: ParserConfig,
    on_error: OnError,
    max_dim: usize,
    max_line: usize,
    parse_threads: usize,
    read_ahead: usize,
    shuffle: Option<Shuffle>,
    mut events: mpsc::Receiver<SourceEvent>,
    batches: SyncSender<Work>,
    recycled: Receiver<Batch>,
    state: &RunState,
) -> Handed {
    // Without --on-error fail (whose error must be the first bad line in
    // input order), an unconfigured dimension is decided by majority.
    let vote = if on_error == OnError::Fail {
        1
    } else {
        DIM_VOTE
    };
    let mut parser = Parser::new(config.clone())
        .with_max_dim(max_dim)
        .with_dim_vote(vote)
        .with_max_record(max_line);
    let mut out = Sender::new(config, on_error, shuffle, batches, read_ahead);
    let mut handed = Handed::default();
    std::thread::scope(|scope| {
        let mut workers = Workers {
            scope,
            wanted: if parse_threads > 1 { parse_threads } else { 0 },
            jobs: Vec::new(),
            results: Vec::new(),
            next: 0,
            in_flight: 0,
        };
        let mut queue: VecDeque<Entry> = VecDeque::new();
        let mut names_taken = false;
        let mut stopped = false;
        'run: loop {
            // Send on what is ready, in order.
            while let Some(front) = queue.front() {
                let away = match front {
                    Entry::Away(w, _, _) => {
                        let wait = workers.full() || queue.len() >= WAITING;
                        match workers.take(*w, wait) {
                            Some(r) => Some(r),
                            None => break,
                        }
                    }
                    _ => None,
                };
                let entry = queue.pop_front().expect("a front entry");
                if !out.finish(entry, away, &parser, state) {
                    stopped = true;
                    break 'run;
                }
            }
            // The next event: without waiting while chunks are away, so
            // their results are sent on as soon as they come, or while
            // batches read ahead wait (a quiet source must not hold them).
            let event = if workers.in_flight == 0 && out.ahead.is_empty() {
                match events.blocking_recv() {
                    Some(e) => e,
                    None => break,
                }
            } else {
                match events.try_recv() {
                    Ok(e) => e,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Nothing new: wait for the oldest chunk away.
                        if let Some(&Entry::Away(w, _, _)) = queue.front() {
                            let away = workers.take(w, true);
                            let entry = queue.pop_front().expect("a front entry");
                            if !out.finish(entry, away, &parser, state) {
                                stopped = true;
                                break;
                            }
                            continue;
                        } else if state.fitting() {
                            // Batches wait here and the learner takes none
                            // yet: wait for input, or for the wake the
                            // fit's end sends (RunState::set_fitting).
                            match events.blocking_recv() {
                                Some(e) => e,
                                None => break,
                            }
                        } else {
                            // Nothing away: hand on a batch read ahead (or,
                            // when a fit starts meanwhile, wait as above).
                            if !out.send_ahead_unless_fitting(state) {
                                stopped = true;
                                break;
                            }
                            continue;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            };
            let entry = match event {
                SourceEvent::Chunk {
                    chunk,
                    position,
                    messages,
                } => {
                    state.replay().touch();
                    let batch = match recycled.try_recv() {
                        Ok(b) => clear(b),
                        Err(_) => Batch::default(),
                    };
                    if workers.ready(&parser) && parser.hand_off(&chunk) {
                        handed.away += 1;
                        Entry::Away(workers.send(chunk, batch), position, messages)
                    } else {
                        handed.here += 1;
                        let parsed =
                            parse_here(&mut parser, chunk, batch, &messages, &mut names_taken);
                        Entry::Parsed(Box::new(parsed), position, messages)
                    }
                }
                other => Entry::Other(other),
            };
            queue.push_back(entry);
        }
        // The end of the input: the chunks still away, in order.
        if !stopped {
            while let Some(front) = queue.pop_front() {
                let away = match front {
                    Entry::Away(w, _, _) => workers.take(w, true),
                    _ => None,
                };
                if !out.finish(front, away, &parser, state) {
                    stopped = true;
                    break;
                }
            }
        }
        // Dropping the channels lets the workers end before the scope
        // waits for them.
        drop(workers);
        if stopped {
            return;
        }
        // Then the records held by the dimension vote, and the points
        // still in the shuffle buffer.
        let mut batch = Batch::default();
        parser.finish(&mut batch);
        if let Some(sh) = out.shuffle.as_mut() {
            sh.pass(&mut batch.values, batch.dim);
            sh.drain(&mut batch.values, batch.dim);
        }
        if !out.positions.is_empty()
            || !out.forget.is_empty()
            || !batch.values.is_empty()
            || !batch.rejected.is_empty()
        {
            let work = Work {
                batch,
                positions: std::mem::take(&mut out.positions),
                forget: std::mem::take(&mut out.forget),
                ..Work::default()
            };
            if !out.deliver(work, state) {
                return;
            }
        }
        out.flush();
    });
    tracing::debug!(
        target: "emstream",
        here = handed.here,
        away = handed.away,
        read_ahead = out.ahead_peak,
        "parser stage: {} chunks parsed on its own thread, {} by the parse threads; at most {} batches read ahead while the learner fitted",
        handed.here,
        handed.away,
        out.ahead_peak
    );
    handed
}

/// Parses `chunk` on the stage thread, with what the parser's state says
/// of it right after.
fn parse_here(
    parser: &mut Parser,
    chunk: Chunk,
    mut batch: Batch,
    messages: &[MessageStart],
    names_taken: &mut bool,
) -> Parsed {
    parser.parse(&chunk, &mut batch);
    if !messages.is_empty() {
        parser.for_each_held_kept(|row| tag_row(&chunk, messages, row));
    }
    let names = match parser.names() {
        Some(n) if !*names_taken => {
            *names_taken = true;
            Some(n.to_vec())
        }
        _ => None,
    };
    Parsed {
        open: parser.open_record_line(chunk.source),
        dim: parser.dim(),
        names,
        chunk,
        batch,
    }
}

/// What became of a batch [`Sender::send_unless_fitting`] was given.
enum Sent {
    /// In the learner's queue.
    Done,
    /// The learner is gone.
    Gone,
    /// A fit started while the queue was full: the batch, to read ahead.
    Fitting(Box<Work>),
}

/// Longest wait for room in the learner's queue before looking again,
/// should a wake be missed ([`Sender::send_unless_fitting`]).
const PARSER_WAIT_SAFETY: std::time::Duration = std::time::Duration::from_millis(20);

/// The stage's side that sends batches to the learner, in input order.
struct Sender {
    config: ParserConfig,
    on_error: OnError,
    shuffle: Option<Shuffle>,
    batches: SyncSender<Work>,
    /// Positions and ends not yet handed on (their chunks held no rows).
    positions: Vec<(SourceId, Position)>,
    forget: Vec<SourceId>,
    /// Records accepted and rejected per stream, for the close log of a
    /// connection (dropped at its end).
    per_stream: HashMap<SourceId, (u64, u64)>,
    /// The dimensions' names, known and not yet sent.
    names: Option<Vec<String>>,
    /// Batches read ahead, in input order, with the bytes each counts:
    /// parsed while the learner fitted its first model and its queue was
    /// full ([`Sender::deliver`]).
    ahead: VecDeque<(Work, usize)>,
    /// The bytes `ahead` counts.
    ahead_bytes: usize,
    /// Most bytes `ahead` holds ([`crate::config::read_ahead_bytes`]).
    ahead_budget: usize,
    /// Most batches waiting in `ahead` after a delivery, the learner's
    /// queue full (for the stage's closing log).
    ahead_peak: usize,
}

impl Sender {
    fn new(
        config: ParserConfig,
        on_error: OnError,
        shuffle: Option<Shuffle>,
        batches: SyncSender<Work>,
        read_ahead: usize,
    ) -> Self {
        Sender {
            config,
            on_error,
            shuffle,
            batches,
            positions: Vec::new(),
            forget: Vec::new(),
            per_stream: HashMap::new(),
            names: None,
            ahead: VecDeque::new(),
            ahead_bytes: 0,
            ahead_budget: read_ahead,
            ahead_peak: 0,
        }
    }

    /// Sends on the event `entry` (with the worker's result `away` if the
    /// entry is [`Entry::Away`]); false when the run stops here (the learner is gone, or a bad
    /// record ends it).
    fn finish(
        &mut self,
        entry: Entry,
        away: Option<(Chunk, Batch)>,
        parser: &Parser,
        state: &RunState,
    ) -> bool {
        let (parsed, position, messages) = match entry {
            Entry::Parsed(p, position, messages) => (*p, position, messages),
            Entry::Away(_, position, messages) => {
                let (chunk, batch) = away.expect("the worker's result");
                // Only a settled parser hands off: its dimension is final.
                let parsed = Parsed {
                    chunk,
                    batch,
                    open: None,
                    dim: parser.dim(),
                    names: None,
                };
                (parsed, position, messages)
            }
            Entry::Other(event) => return self.other(event, state),
        };
        let Parsed {
            chunk,
            mut batch,
            open,
            dim,
            names,
        } = parsed;
        if names.is_some() {
            self.names = names;
        }
        self.positions.push((chunk.source, position));
        // A record whose quoted field goes on into the next chunk is not
        // learned yet: a line source's position stops before its first
        // line, so a resume reads it whole.
        if let (Some(open), Some((_, position))) = (open, self.positions.last_mut()) {
            if *position == chunk.first_line + super::source::lines_in(&chunk) - 1 {
                *position = open - 1;
            }
        }
        if !messages.is_empty() {
            tag_messages(&chunk, &messages, &mut batch);
        }
        let mut fatal = None;
        if self.on_error == OnError::Fail && !batch.rejected.by_reason.is_empty() {
            let first = first_error(&chunk, &batch);
            let dim = dim.or(self.config.dim);
            let keep = match dim {
                Some(d) if d > 0 => {
                    rows_before(&chunk, first.line, &parser.resolved_config(), d) * d
                }
                _ => 0,
            };
            batch.values.truncate(keep);
            batch.kept.truncate(dim.map_or(0, |d| keep / d.max(1)));
            // The run stops at `first`: the records after it were never
            // judged, and `first` itself is reported as the error, not as
            // skipped. Only it counts as rejected.
            batch.errors.clear();
            batch
                .headers
                .retain(|(source, line, _)| *source != first.source_id || *line < first.line);
            batch.rejected.by_reason.clear();
            batch.rejected.by_reason.insert(first.reason, 1);
            fatal = Some(first);
        }
        let counts = self.per_stream.entry(chunk.source).or_default();
        counts.0 += dim
            .filter(|&d| d > 0)
            .map_or(0, |d| (batch.values.len() / d) as u64);
        counts.1 += batch.rejected.total();
        if let Some(sh) = self.shuffle.as_mut() {
            sh.pass(&mut batch.values, batch.dim);
        }
        let empty = batch.values.is_empty()
            && batch.rejected.by_reason.is_empty()
            && batch.headers.is_empty()
            && batch.notes.is_empty()
            && batch.fatal.is_none()
            && fatal.is_none();
        if empty {
            return true;
        }
        let last = fatal.is_some() || batch.fatal.is_some();
        let work = Work {
            batch,
            fatal,
            positions: std::mem::take(&mut self.positions),
            forget: std::mem::take(&mut self.forget),
            failed: None,
            names: self.names.take(),
        };
        if !self.deliver(work, state) {
            return false;
        }
        if last {
            // The learner sees every batch before the one that ends the run.
            self.flush();
            state.stop(StopReason::Failed);
            return false;
        }
        true
    }

    /// Sends on an event that is not a chunk.
    fn other(&mut self, event: SourceEvent, state: &RunState) -> bool {
        match event {
            SourceEvent::Chunk { .. } => unreachable!("chunks are parsed first"),
            SourceEvent::Wake => true,
            SourceEvent::End { source, forget } => {
                if forget {
                    self.forget.push(source);
                }
                let (points, rejected) = self.per_stream.remove(&source).unwrap_or_default();
                if let Some(ended) = state.take_ended(source) {
                    log_closed(source, &ended, points, rejected);
                }
                true
            }
            SourceEvent::Torn { source, line } => {
                let mut batch = Batch::default();
                batch.rejected.add(RejectReason::Torn);
                batch.errors.push(ParseError {
                    source_id: source,
                    line,
                    reason: RejectReason::Torn,
                    detail: "no line end before the connection closed: the record may be cut, so it is not learned".into(),
                    message: None,
                });
                self.send_other(
                    Work {
                        batch,
                        ..Work::default()
                    },
                    state,
                )
            }
            SourceEvent::Failed {
                source: _,
                name,
                error,
            } => self.send_other(
                Work {
                    failed: Some((name, error)),
                    ..Work::default()
                },
                state,
            ),
        }
    }

    /// Sends `work` with the positions and ends gathered so far.
    fn send_other(&mut self, mut work: Work, state: &RunState) -> bool {
        work.positions = std::mem::take(&mut self.positions);
        work.forget = std::mem::take(&mut self.forget);
        self.deliver(work, state)
    }

    /// Hands `work` to the learner, after the batches read ahead: input
    /// order is kept. While the learner fits its first model (tens of
    /// milliseconds at d = 32, seconds when choosing K) it takes nothing,
    /// and a full queue would leave the parser, the slower stage at high
    /// d, waiting too; instead batches wait here, up to `ahead_budget`
    /// bytes, and the learner, faster than the parser there, catches up
    /// after the fit while the parser goes on at its own pace. Once the
    /// fit is over the batches waiting here can only become fewer: they
    /// are gone as soon as the learner keeps up (where the learner is the
    /// slower stage, that is when the input slows down or ends; until
    /// then they are a longer queue, never more than the budget). False
    /// when the learner is gone.
    fn deliver(&mut self, work: Work, state: &RunState) -> bool {
        let work = if self.ahead.is_empty() && !state.fitting() {
            match self.send_unless_fitting(work, state) {
                Sent::Done => return true,
                Sent::Gone => return false,
                // A fit started while the queue was full: read ahead.
                Sent::Fitting(work) => *work,
            }
        } else {
            work
        };
        // Batches that may wait after this call: unlimited (but for the
        // bytes) while the learner fits, else no more than wait now.
        let allowed = if state.fitting() {
            usize::MAX
        } else {
            self.ahead.len()
        };
        // Every batch counts at least a page: its other vectors, and a
        // flood of batches of rejected records only.
        let bytes = (work.batch.values.len() * std::mem::size_of::<f64>()).max(1 << 12);
        self.ahead_bytes += bytes;
        self.ahead.push_back((work, bytes));
        // What the learner's queue has room for now.
        while let Some((front, bytes)) = self.ahead.pop_front() {
            match self.batches.try_send(front) {
                Ok(()) => self.ahead_bytes -= bytes,
                Err(TrySendError::Full(front)) => {
                    self.ahead.push_front((front, bytes));
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        // The rest over the allowance waits for the learner: over the
        // budget whatever happens, over the count only until a fit starts
        // (a re-fit the learner announces while this waits): then, as
        // during the first fit, batches may wait here.
        while self.ahead.len() > allowed || self.ahead_bytes > self.ahead_budget {
            let sent = if self.ahead_bytes > self.ahead_budget {
                self.send_ahead()
            } else if state.fitting() {
                break;
            } else {
                self.send_ahead_unless_fitting(state)
            };
            if !sent {
                return false;
            }
        }
        // Waiting beyond the queue (which is full if any wait).
        self.ahead_peak = self.ahead_peak.max(self.ahead.len());
        true
    }

    /// Sends `work`, waiting for room in the learner's queue unless a fit
    /// starts meanwhile (a fit that the learner's hook announced after this
    /// stage began to wait: a re-fit, which the learner cannot foresee, or
    /// the first one): then `work` comes back to be read ahead. The
    /// learner wakes this thread whenever it takes a batch or a fit starts
    /// ([`RunState::wake_parser`]); the timeout is only a safety net.
    fn send_unless_fitting(&mut self, mut work: Work, state: &RunState) -> Sent {
        // Registered for wakes after the first attempt, and tried once
        // more before the first park: a batch taken or a fit started just
        // before the park is not missed.
        let mut registered = false;
        let sent = loop {
            match self.batches.try_send(work) {
                Ok(()) => break Sent::Done,
                Err(TrySendError::Disconnected(_)) => break Sent::Gone,
                Err(TrySendError::Full(w)) => work = w,
            }
            if state.fitting() {
                break Sent::Fitting(Box::new(work));
            }
            if registered {
                std::thread::park_timeout(PARSER_WAIT_SAFETY);
            } else {
                state.parser_waits(true);
                registered = true;
            }
        };
        if registered {
            state.parser_waits(false);
        }
        sent
    }

    /// Sends the oldest batch read ahead, waiting for room if need be
    /// (true when there is none); false when the learner is gone.
    fn send_ahead(&mut self) -> bool {
        match self.ahead.pop_front() {
            Some((work, bytes)) => {
                self.ahead_bytes -= bytes;
                self.batches.send(work).is_ok()
            }
            None => true,
        }
    }

    /// Sends the oldest batch read ahead as [`Sender::send_unless_fitting`]
    /// sends a new one: waiting for room unless a fit starts meanwhile,
    /// when it stays first in the read-ahead. False when the learner is
    /// gone.
    fn send_ahead_unless_fitting(&mut self, state: &RunState) -> bool {
        let Some((work, bytes)) = self.ahead.pop_front() else {
            return true;
        };
        match self.send_unless_fitting(work, state) {
            Sent::Done => {
                self.ahead_bytes -= bytes;
                true
            }
            Sent::Gone => false,
            Sent::Fitting(work) => {
                self.ahead.push_front((*work, bytes));
                true
            }
        }
    }

    /// Sends every batch read ahead; false when the learner is gone.
    fn flush(&mut self) -> bool {
        while !self.ahead.is_empty() {
            if !self.send_ahead() {
                return false;
            }
        }
        true
    }
}

/// Names the message (topic or subject, sequence) of the kept rows and
/// rejected records of a message source's chunk.
fn tag_messages(chunk: &Chunk, messages: &[MessageStart], batch: &mut Batch) {
    for row in &mut batch.kept {
        tag_row(chunk, messages, row);
    }
    for e in &mut batch.errors {
        if e.source_id == chunk.source && e.line >= chunk.first_line && e.message.is_none() {
            e.message = message_at(messages, e.line).cloned();
        }
    }
}

/// Names the message of a kept row of `chunk` (rows of other chunks, held
/// by the dimension vote, were named with theirs).
fn tag_row(chunk: &Chunk, messages: &[MessageStart], row: &mut crate::input::keep::KeptRow) {
    if row.source == chunk.source && row.line >= chunk.first_line && row.message.is_none() {
        row.message = message_at(messages, row.line).cloned();
    }
}

/// The info line of a closed connection, with what it brought.
fn log_closed(id: SourceId, ended: &Ended, points: u64, rejected: u64) {
    tracing::info!(
        target: "emstream",
        connection = id,
        peer = %ended.peer,
        points,
        rejected,
        duration_s = ended.duration.as_secs_f64(),
        reason = ended.reason.text(),
        "connection #{id} ({}) closed ({}): {points} points, {rejected} records rejected, open {:.3} s",
        ended.peer,
        ended.reason.text(),
        ended.duration.as_secs_f64(),
    );
}

/// Empties a used batch but keeps its allocations (and its dimension).
fn clear(mut b: Batch) -> Batch {
    b.values.clear();
    b.rejected.by_reason.clear();
    b.errors.clear();
    b.headers.clear();
    b.dim_from = None;
    b.notes.clear();
    b.fatal = None;
    b.kept.clear();
    b
}

/// The first bad record of a chunk that had rejects.
fn first_error(chunk: &Chunk, batch: &Batch) -> ParseError {
    match batch.errors.iter().min_by_key(|e| e.line) {
        Some(e) => e.clone(),
        None => {
            // The parser counted a reject without details: name the chunk.
            let reason = batch
                .rejected
                .by_reason
                .keys()
                .next()
                .copied()
                .unwrap_or(crate::input::RejectReason::NotNumeric);
            ParseError {
                source_id: chunk.source,
                line: chunk.first_line,
                reason,
                detail: "a record in this part of the input was rejected".into(),
                message: None,
            }
        }
    }
}

/// How many rows of `chunk` lie before line `bad`: the lines before it are
/// parsed again, by a fresh parser of the same dimension, so the count
/// follows exactly the parser's rules for headers and blank lines.
fn rows_before(chunk: &Chunk, bad: u64, config: &ParserConfig, dim: usize) -> usize {
    let end = prefix_len(chunk, bad);
    if end == 0 {
        return 0;
    }
    let prefix = Chunk {
        source: chunk.source,
        first_line: chunk.first_line,
        bytes: chunk.bytes[..end].to_vec(),
        too_long: chunk
            .too_long
            .iter()
            .copied()
            .filter(|&l| l < bad)
            .collect(),
        last: false,
    };
    // Only the count matters: kept fields (whose header names this prefix
    // may not hold) are left out.
    let mut parser = Parser::new(ParserConfig {
        dim: Some(dim),
        keep: None,
        ..config.clone()
    });
    let mut out = Batch::default();
    parser.parse(&prefix, &mut out);
    out.values.len() / dim
}

/// Byte length of the lines of `chunk` numbered below `bad` (numbering
/// starts at `first_line` and skips the too-long lines, which are not in
/// the bytes).
fn prefix_len(chunk: &Chunk, bad: u64) -> usize {
    let mut line = chunk.first_line;
    let mut skip = chunk.too_long.iter().copied().peekable();
    let mut pos = 0;
    let bytes = &chunk.bytes;
    while pos < bytes.len() {
        while skip.peek().is_some_and(|&l| l <= line) {
            if skip.next() == Some(line) {
                line += 1;
            }
        }
        if line >= bad {
            break;
        }
        pos = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => bytes.len(),
        };
        line += 1;
    }
    pos
}

/// Sends a used batch back to the parser for reuse, dropping it if the
/// parser already holds enough spares.
pub(crate) fn recycle(tx: &SyncSender<Batch>, batch: Batch) {
    match tx.try_send(batch) {
        Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(first_line: u64, text: &str, too_long: Vec<u64>) -> Chunk {
        Chunk {
            source: 0,
            first_line,
            bytes: text.as_bytes().to_vec(),
            too_long,
            last: false,
        }
    }

    /// Cuts each source's text into chunks at line ends, `lines` lines a
    /// chunk (cycling through the sizes), and interleaves the sources.
    fn events(sources: &[(&str, &[usize])], messages: bool) -> Vec<SourceEvent> {
        let mut per_source: Vec<Vec<SourceEvent>> = Vec::new();
        for (id, (text, sizes)) in sources.iter().enumerate() {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            let mut out = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < lines.len() {
                let n = sizes[i % sizes.len()].min(lines.len() - at);
                i += 1;
                let chunk = Chunk {
                    source: id as SourceId,
                    first_line: at as u64 + 1,
                    bytes: lines[at..at + n].concat().into_bytes(),
                    too_long: Vec::new(),
                    last: at + n == lines.len(),
                };
                at += n;
                let messages = if messages {
                    // A message every 3 lines.
                    let first = chunk.first_line;
                    (first..first + n as u64)
                        .filter(|l| (l - 1) % 3 == 0 || *l == first)
                        .map(|l| MessageStart {
                            first_line: l,
                            tag: crate::input::keep::MessageTag {
                                topic: std::sync::Arc::from("t"),
                                seq: (l - 1) / 3,
                            },
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                out.push(SourceEvent::Chunk {
                    chunk,
                    position: at as u64,
                    messages,
                });
            }
            out.push(SourceEvent::End {
                source: id as SourceId,
                forget: id % 2 == 1,
            });
            per_source.push(out);
        }
        // Round-robin over the sources.
        let mut all = Vec::new();
        let mut iters: Vec<_> = per_source.into_iter().map(Vec::into_iter).collect();
        loop {
            let before = all.len();
            for it in &mut iters {
                all.extend(it.next());
            }
            if all.len() == before {
                return all;
            }
        }
    }

    /// Everything the stage sends the learner, as text, and the chunks it
    /// handed off.
    fn run(
        config: &ParserConfig,
        on_error: OnError,
        shuffle: bool,
        threads: usize,
        events: Vec<SourceEvent>,
    ) -> (Vec<String>, Handed) {
        let (tx, rx) = mpsc::channel(events.len() + 1);
        for e in events {
            tx.try_send(e).unwrap();
        }
        drop(tx);
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel(100_000);
        let (_recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel(4);
        let state = RunState::new("stdin");
        let handed = parser_loop(
            config.clone(),
            on_error,
            1 << 20,
            1 << 16,
            threads,
            1 << 20,
            shuffle.then(|| Shuffle::new(64, 7)),
            rx,
            work_tx,
            recycle_rx,
            &state,
        );
        (work_rx.iter().map(|w| format!("{w:?}")).collect(), handed)
    }

    fn csv_text(n: usize, d: usize, seed: u64) -> String {
        let mut s = String::new();
        let mut x = seed;
        for i in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v: Vec<String> = (0..d)
                .map(|j| format!("{:.4}", ((x >> (j * 7)) % 10_000) as f64 / 97.0 - 50.0))
                .collect();
            match i % 97 {
                13 => s.push_str("oops,1\n"),
                29 => s.push_str("# a comment\n"),
                41 => s.push('\n'),
                _ => {
                    s.push_str(&v.join(","));
                    s.push('\n');
                }
            }
        }
        s
    }

    /// While the learner fits its first model (and takes nothing) the
    /// stage parses every chunk it is given into the read-ahead instead of
    /// waiting for room; after the fit the learner gets every batch, in
    /// order, the same as through a queue that never fills, although the
    /// source stays open and sends nothing more.
    #[test]
    fn the_parser_reads_ahead_while_the_learner_fits() {
        let text = csv_text(3000, 3, 5);
        let sizes: &[usize] = &[40, 7];
        let config = ParserConfig::default();
        let (want, _) = run(
            &config,
            OnError::Skip,
            false,
            1,
            events(&[(&text, sizes)], false),
        );
        let evs = events(&[(&text, sizes)], false);
        let (tx, rx) = mpsc::channel(evs.len());
        for e in evs {
            tx.try_send(e).unwrap();
        }
        let state = RunState::new("stdin");
        state.set_parser_input(&tx);
        // Room for one batch: without the read-ahead the stage would wait
        // at the second.
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel(1);
        let (_recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel(4);
        state.set_fitting(true);
        std::thread::scope(|scope| {
            let stage = scope.spawn(|| {
                parser_loop(
                    config.clone(),
                    OnError::Skip,
                    1 << 20,
                    1 << 16,
                    1,
                    1 << 30,
                    None,
                    rx,
                    work_tx,
                    recycle_rx,
                    &state,
                )
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while tx.capacity() < tx.max_capacity() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the stage waited for the fitting learner instead of reading ahead"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // The fit's end wakes the stage: the source is open and quiet,
            // and the batches come all the same.
            state.set_fitting(false);
            let got: Vec<String> = want
                .iter()
                .map(|_| {
                    let work = work_rx
                        .recv_timeout(std::time::Duration::from_secs(30))
                        .expect("a batch read ahead, although the source is quiet");
                    format!("{work:?}")
                })
                .collect();
            assert_eq!(got, want);
            drop(tx);
            stage.join().unwrap();
        });
        assert!(work_rx.try_recv().is_err(), "nothing after the input's end");
    }

    /// A sender on a queue of one.
    fn small_queue() -> (Sender, Receiver<Work>, RunState) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let out = Sender::new(ParserConfig::default(), OnError::Skip, None, tx, 1 << 20);
        (out, rx, RunState::new("stdin"))
    }

    /// Batch `i`: ten numbers `i`.
    fn numbered(i: usize) -> Work {
        let mut w = Work::default();
        w.batch.values = vec![i as f64; 10];
        w
    }

    /// Runs `waits` (a delivery that finds no room) on another thread,
    /// checks that it waits, starts a fit and checks that it returns with
    /// `ahead` batches read ahead; the fit ends and the thread goes on
    /// with `then`; the learner takes `0..n`, in order, and the read-ahead
    /// is empty after the thread's flush.
    fn a_fit_ends_the_wait(
        mut out: Sender,
        rx: Receiver<Work>,
        state: &RunState,
        waits: impl FnOnce(&mut Sender, &RunState) + Send,
        then: impl FnOnce(&mut Sender, &RunState) + Send,
        ahead: usize,
        n: usize,
    ) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            // Dropped if this thread panics, so that a delivery still
            // waiting fails instead of holding the scope forever.
            let rx = rx;
            scope.spawn(move || {
                waits(&mut out, state);
                done_tx.send(out.ahead.len()).unwrap();
                then(&mut out, state);
                assert!(out.flush());
                done_tx.send(out.ahead.len()).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(done_rx.try_recv().is_err(), "room where there is none");
            state.set_fitting(true);
            let waiting = done_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the delivery went on when the fit started");
            assert_eq!(waiting, ahead, "the batches wait in the read-ahead");
            state.set_fitting(false);
            let got: Vec<f64> = (0..n)
                .map(|_| {
                    let w = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
                    state.wake_parser();
                    w.batch.values[0]
                })
                .collect();
            assert_eq!(got, (0..n).map(|i| i as f64).collect::<Vec<_>>());
            assert_eq!(
                done_rx.recv_timeout(std::time::Duration::from_secs(10)),
                Ok(0)
            );
        });
    }

    /// A batch waiting for room in the learner's full queue is read ahead
    /// as soon as a fit starts (a re-fit the learner announces only
    /// through its hook, after the stage began to wait), instead of
    /// waiting for the whole fit; and a waiting batch goes as soon as the
    /// learner takes one.
    #[test]
    fn a_delivery_waiting_for_room_reads_ahead_when_a_fit_starts() {
        let (mut out, rx, state) = small_queue();
        assert!(out.deliver(numbered(0), &state));
        // The queue is full: this waits.
        let waits =
            move |out: &mut Sender, state: &RunState| assert!(out.deliver(numbered(1), state));
        // Not fitting any more, and the learner takes batches.
        let then =
            move |out: &mut Sender, state: &RunState| assert!(out.deliver(numbered(2), state));
        a_fit_ends_the_wait(out, rx, &state, waits, then, 1, 3);
    }

    /// After a fit, the batches read ahead drain one per new batch; a
    /// delivery waiting there for room reads ahead again when another fit
    /// (a re-fit) starts, instead of waiting for the whole fit; every
    /// batch arrives once, in order.
    #[test]
    fn a_drain_waiting_for_room_reads_ahead_when_a_re_fit_starts() {
        let (mut out, rx, state) = small_queue();
        // The first fit: one batch in the queue, one read ahead.
        state.set_fitting(true);
        assert!(out.deliver(numbered(0), &state));
        assert!(out.deliver(numbered(1), &state));
        assert_eq!(out.ahead.len(), 1);
        state.set_fitting(false);
        // The queue is full and the read-ahead may not grow: this waits.
        let waits = move |out: &mut Sender, state: &RunState| {
            assert!(out.deliver(numbered(2), state));
        };
        a_fit_ends_the_wait(out, rx, &state, waits, |_, _| {}, 2, 3);
    }

    /// The read-ahead holds at most its budget while the learner fits;
    /// afterwards it never grows, even where the learner is slower than
    /// the parser, and it empties once the learner keeps up; every batch
    /// arrives once, in order.
    #[test]
    fn the_read_ahead_keeps_its_budget_and_drains_after_the_fit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let state = RunState::new("stdin");
        let batch_bytes = 1000 * std::mem::size_of::<f64>();
        let budget = 10 * batch_bytes;
        let mut out = Sender::new(ParserConfig::default(), OnError::Skip, None, tx, budget);
        let work = |i: usize| {
            let mut w = Work::default();
            w.batch.values = vec![i as f64; 1000];
            w
        };
        state.set_fitting(true);
        // Nobody takes a batch: four go into the queue, ten wait here.
        for i in 0..14 {
            assert!(out.deliver(work(i), &state));
        }
        assert_eq!((out.ahead.len(), out.ahead_bytes), (10, budget));
        let taken = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // A learner slower than the parser.
            let taken = &taken;
            let learner = scope.spawn(move || {
                rx.iter()
                    .map(|w| {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        taken.fetch_add(1, Ordering::SeqCst);
                        w.batch.values[0] as usize
                    })
                    .collect::<Vec<_>>()
            });
            // Over the budget: the oldest waits for the learner.
            assert!(out.deliver(work(14), &state));
            assert!(out.ahead_bytes <= budget, "{}", out.ahead_bytes);
            // Room in the budget, so that only the rule after the fit
            // keeps the batches waiting from growing.
            out.ahead_budget = 4 * budget;
            state.set_fitting(false);
            for i in 15..30 {
                let before = out.ahead.len();
                assert!(out.deliver(work(i), &state));
                assert!(
                    out.ahead.len() <= before,
                    "batch {i}: {before} -> {} read ahead after the fit",
                    out.ahead.len()
                );
            }
            // The learner keeps up (it has taken everything sent before each
            // batch): the batches waiting go.
            for i in 30..40 {
                let sent = i - out.ahead.len();
                while taken.load(Ordering::SeqCst) < sent {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                assert!(out.deliver(work(i), &state));
            }
            assert!(out.ahead.is_empty(), "{} still read ahead", out.ahead.len());
            assert!(out.flush());
            drop(out);
            assert_eq!(learner.join().unwrap(), (0..40).collect::<Vec<_>>());
        });
    }

    #[test]
    fn parse_threads_give_the_same_batches() {
        let header = format!("a,b,c\n{}", csv_text(3000, 3, 1));
        // A quoted record spanning lines 1500 and 1501, well after the
        // header: chunks of 50 lines cut it in two.
        let mut quoted = csv_text(1499, 3, 2);
        quoted.push_str("\"1.5\",2,\"3\n.5\"\n4,5,6\n\"7\",8,9\n");
        quoted.push_str(&csv_text(1500, 3, 3));
        let all_quoted: String = quoted
            .lines()
            .map(|l| {
                if l.contains('"') || l.starts_with('#') || l.is_empty() {
                    format!("{l}\n")
                } else {
                    let fields: Vec<String> = l.split(',').map(|f| format!("\"{f}\"")).collect();
                    format!("{}\n", fields.join(","))
                }
            })
            .collect();
        let json: String = (0..2000)
            .map(|i| match i % 211 {
                17 => "{\"x\": \"bad\", \"y\": 1}\n".to_string(),
                _ => format!("{{\"x\": {i}.5, \"y\": {}, \"z\": 0}}\n", i % 13),
            })
            .collect();
        let csv = ParserConfig::default();
        let json_config = ParserConfig {
            format: crate::input::Format::Json,
            fields: Some(vec!["x".into(), "y".into()]),
            ..ParserConfig::default()
        };
        let keep = ParserConfig {
            keep: Some(vec![
                crate::input::keep::KeepItem::parse("b").unwrap(),
                crate::input::keep::KeepItem::parse("@line").unwrap(),
                crate::input::keep::KeepItem::parse("@message").unwrap(),
            ]),
            ..ParserConfig::default()
        };
        let sizes: &[usize] = &[7, 50, 1, 33, 120];
        let cases: Vec<(&str, &ParserConfig, OnError, bool, Vec<SourceEvent>)> = vec![
            (
                "header and a quoted record",
                &csv,
                OnError::Skip,
                false,
                events(&[(&header, sizes), (&quoted, &[50])], false),
            ),
            // Every field quoted, as many exports write them.
            (
                "every field quoted",
                &csv,
                OnError::Skip,
                false,
                events(&[(&all_quoted, &[50]), (&header, sizes)], false),
            ),
            (
                "messages, shuffled",
                &csv,
                OnError::Skip,
                true,
                events(&[(&quoted, sizes), (&csv_text(2000, 3, 4), &[16])], true),
            ),
            (
                "kept fields",
                &keep,
                OnError::Skip,
                false,
                events(&[(&header, sizes)], true),
            ),
            (
                "json",
                &json_config,
                OnError::Skip,
                false,
                events(&[(&json, sizes)], false),
            ),
            // The first bad record is on line 14; chunks of 5 lines put it
            // in the third chunk, after the dimension is decided.
            (
                "on-error fail",
                &csv,
                OnError::Fail,
                false,
                events(
                    &[(&csv_text(500, 3, 5), &[5]), (&csv_text(500, 3, 6), &[5])],
                    false,
                ),
            ),
            (
                "the dimension voted",
                &csv,
                OnError::Skip,
                false,
                events(
                    &[(&format!("1\n2,3\n{}", csv_text(2000, 4, 8)), &[5, 2, 30])],
                    false,
                ),
            ),
        ];
        for (name, config, on_error, shuffle, events) in cases {
            let copy = |e: &SourceEvent| match e {
                SourceEvent::Chunk {
                    chunk,
                    position,
                    messages,
                } => SourceEvent::Chunk {
                    chunk: chunk.clone(),
                    position: *position,
                    messages: messages.clone(),
                },
                SourceEvent::End { source, forget } => SourceEvent::End {
                    source: *source,
                    forget: *forget,
                },
                _ => unreachable!(),
            };
            let (one, handed) = run(
                config,
                on_error,
                shuffle,
                1,
                events.iter().map(copy).collect(),
            );
            assert_eq!(handed.away, 0, "{name}");
            assert!(!one.is_empty(), "{name}");
            for threads in [2, 3, 8] {
                let (many, handed) = run(
                    config,
                    on_error,
                    shuffle,
                    threads,
                    events.iter().map(copy).collect(),
                );
                assert!(handed.away > 0, "{name}: no chunk went to a parse thread");
                assert!(handed.here > 0, "{name}");
                assert_eq!(one.len(), many.len(), "{name}, {threads} threads");
                for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                    assert_eq!(a, b, "{name}, {threads} threads: batch {i}");
                }
            }
        }
    }

    #[test]
    fn only_chunks_that_change_nothing_are_handed_off() {
        let mut p = Parser::new(ParserConfig::default());
        let c = |first_line: u64, text: &str, last: bool| Chunk {
            source: 0,
            first_line,
            bytes: text.as_bytes().to_vec(),
            too_long: Vec::new(),
            last,
        };
        // Nothing decided yet.
        assert!(p.fork().is_none());
        assert!(!p.hand_off(&c(1, "x,y\n", false)));
        let mut out = Batch::default();
        p.parse(&c(1, "x,y\n1,2\n", false), &mut out);
        assert!(p.fork().is_some());
        assert!(p.hand_off(&c(3, "3,4\n", false)));
        // Quoted fields that close on their line go; a line with an odd
        // number of quotes could open a record that goes on into the next
        // chunk, even when the chunk's quotes pair up over two lines.
        assert!(p.hand_off(&c(4, "\"5\",6\n\"a\"\"b\",1\n", false)));
        assert!(!p.hand_off(&c(4, "\"5\",6\n\"7,8\n", false)));
        assert!(!p.hand_off(&c(4, "1,\"2\n\",3\n", false)));
        // Another source has not passed its header.
        assert!(!p.hand_off(&Chunk {
            source: 1,
            ..c(1, "1,2\n", false)
        }));
        // A source's last chunk: the source is forgotten here.
        assert!(p.hand_off(&c(5, "7,8\n", true)));
        assert!(!p.hand_off(&c(1, "9,10\n", false)));
        // A fork reads as the parser would.
        let mut fork = p.fork().unwrap();
        let (mut a, mut b) = (Batch::default(), Batch::default());
        let later = c(6, "1.5,2\nx,1\n3,4,5\n", false);
        p.parse(&later, &mut a);
        fork.parse_continuing(&later, &mut b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn prefix_stops_before_the_bad_line() {
        let c = chunk(10, "a\nb\nc\nd\n", vec![]);
        assert_eq!(prefix_len(&c, 10), 0);
        assert_eq!(prefix_len(&c, 11), 2);
        assert_eq!(prefix_len(&c, 12), 4);
        assert_eq!(prefix_len(&c, 14), 8);
        assert_eq!(prefix_len(&c, 99), 8);
    }

    #[test]
    fn prefix_skips_too_long_line_numbers() {
        // Lines 1 and 3 were too long: bytes hold lines 2, 4, 5.
        let c = chunk(1, "two\nfour\nfive", vec![1, 3]);
        assert_eq!(prefix_len(&c, 1), 0);
        assert_eq!(prefix_len(&c, 3), 4);
        assert_eq!(prefix_len(&c, 4), 4);
        assert_eq!(prefix_len(&c, 5), 9);
        assert_eq!(prefix_len(&c, 6), 13);
    }
}
