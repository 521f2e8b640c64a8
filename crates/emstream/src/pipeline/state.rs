//! The run state: the one place that holds a run's counters, its phase, its
//! stop request and the names of its sources. Every stage updates it; any
//! reader (the progress line, the summary, the admin server's
//! `/metrics` and `/healthz`) reads it through [`RunState::counts`].
//!
//! Consistency: the counters the learner owns (points, rejects, anomalies,
//! outliers, re-seeds, repairs, batches, the log-likelihood) change together
//! under one lock, once per batch, never per point, so a reader never sees
//! the points of a batch without its rejects or anomalies. The others
//! (checkpoints, connections) are independent atomics.
//!
//! A new counter goes into [`LearnerCounts`] when the learner produces it,
//! else into [`RunState`] as an atomic with an `add_`/`inc_` method and a
//! field of [`Counts`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::input::{RejectCounts, SourceId};

/// Why the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every source ended.
    EndOfInput,
    /// The shutdown future completed (SIGINT or SIGTERM in the binary).
    Signal,
    /// stdout was closed while writing scores.
    OutputClosed,
    /// A bad record under `--on-error fail`, a read, write or learner error.
    Failed,
}

/// Where the run is in its life, for a health check: only
/// [`Phase::Running`] is healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading the checkpoint and opening the sources.
    Starting = 0,
    /// Sources open, learning.
    Running = 1,
    /// Sources asked to stop (or all ended); the stages drain and the final
    /// checkpoint is written.
    Draining = 2,
    /// The run has returned.
    Finished = 3,
}

/// Counters produced by the learner thread, changed together once per batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LearnerCounts {
    /// Points learned in this run, and points of this run waiting in the
    /// warm-up buffer or the partial mini-batch: the growth of the model's
    /// points ([`crate::model::StepwiseEm::points_held`]); points a resumed
    /// checkpoint held waiting count once they are learned.
    pub points: u64,
    /// Records rejected in this run, by reason.
    pub rejected: RejectCounts,
    /// Points flagged as anomalies in this run.
    pub anomalies: u64,
    /// The log-likelihood below which a point is flagged now: the running
    /// threshold of `--alert-quantile` once its window has filled, the
    /// fixed one of `--alert-below`; `None` without a rule.
    pub alert_threshold: Option<f64>,
    /// Points left out of the statistics as gross outliers in this run.
    pub outliers: u64,
    /// Components re-seeded in this run.
    pub reseeds: u64,
    /// Covariance repairs in this run.
    pub repairs: u64,
    /// Batches handed to the learner in this run.
    pub batches: u64,
    /// Average test-then-train log-likelihood of this run's points.
    pub avg_log_lik: Option<f64>,
    /// Regime changes followed in this run (the model re-fitted on recent
    /// points because most points had become gross outliers).
    pub regime_changes: u64,
    /// Sum of the test-then-train log-likelihoods of this run's scored
    /// points (with `log_lik_points`, the average over any interval).
    pub log_lik_sum: f64,
    /// Points of this run with a test-then-train log-likelihood.
    pub log_lik_points: u64,
    /// The average log-likelihood of the first points this run scored:
    /// the warm-up's, scored by the model fitted on it (a resumed run's
    /// first batch): the reference the live page compares recent points
    /// against.
    pub first_log_lik: Option<f64>,
}

/// A copy of every counter of the run, taken at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// The learner's counters (consistent with each other).
    pub learner: LearnerCounts,
    /// Checkpoints written (mid-stream and final).
    pub checkpoints_written: u64,
    /// Checkpoint writes that failed.
    pub checkpoints_failed: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted over the run.
    pub connections_total: u64,
    /// Connections that could not be accepted.
    pub connections_refused: u64,
    /// Connections accepted but refused by access control (a failed TLS
    /// handshake, a wrong or missing token) before any data was used.
    pub connections_denied: u64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Connections closed because they sent nothing for `--idle-timeout`.
    pub connections_timed_out: u64,
}

/// Upper bounds, in seconds, of the buckets of the checkpoint write
/// duration histogram (a small 2-D model saves in well under a millisecond;
/// a slow disk or a large K and d can take seconds).
pub const CHECKPOINT_SECONDS_BUCKETS: [f64; 10] =
    [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Checkpoint writes: how long they took and how the last one went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointStats {
    /// Writes (successful or not) per bucket of
    /// [`CHECKPOINT_SECONDS_BUCKETS`], not cumulative; writes slower than
    /// the last bound are only in `count`.
    pub buckets: [u64; CHECKPOINT_SECONDS_BUCKETS.len()],
    /// Seconds spent writing, over all writes.
    pub sum_seconds: f64,
    /// Writes timed.
    pub count: u64,
    /// When the last successful write finished (ms since the Unix epoch).
    pub last_ok_unix_ms: Option<u64>,
    /// The error of the last write, if it failed (cleared by a success):
    /// the run is unhealthy while this is set.
    pub last_error: Option<String>,
}

impl CheckpointStats {
    /// `(upper bound, writes in that bucket)` per bucket, not cumulative,
    /// ending with the `+Inf` bucket (`f64::INFINITY`) of the slower ones.
    pub fn buckets_with_inf(&self) -> Vec<(f64, u64)> {
        let counted: u64 = self.buckets.iter().sum();
        CHECKPOINT_SECONDS_BUCKETS
            .iter()
            .copied()
            .zip(self.buckets)
            .chain(std::iter::once((
                f64::INFINITY,
                self.count.saturating_sub(counted),
            )))
            .collect()
    }
}

/// The run's shared state; see the module docs.
#[derive(Debug)]
pub struct RunState {
    started: Instant,
    phase: AtomicU8,
    /// Phase one of the stop: the sources watch it.
    sources: CancellationToken,
    /// Phase two: cancelled when the run has drained and returned; whatever
    /// must outlive the drain (an admin server answering 503) waits for it.
    finished: CancellationToken,
    reason: OnceLock<StopReason>,
    /// Set by a signal: a long warm-up fit stops at once (the learner
    /// shares it, [`crate::model::StepwiseEm::set_interrupt`]).
    interrupt: crate::model::em::Interrupt,
    /// Set by the learner while it fits a model on its warm-up buffer
    /// (the first, or a regime change's re-fit): the parser reads ahead
    /// meanwhile ([`RunState::fitting`]).
    fitting: AtomicBool,
    /// The parser stage's input, which the end of the fit wakes.
    parser_input: Mutex<Option<tokio::sync::mpsc::WeakSender<super::SourceEvent>>>,
    /// The parser stage's thread while it waits for room in the learner's
    /// queue ([`RunState::parser_waits`]): woken when the learner takes a
    /// batch or a fit starts.
    parser_waiting: Mutex<Option<std::thread::Thread>>,
    learner: Mutex<LearnerCounts>,
    checkpoints_written: AtomicU64,
    checkpoints_failed: AtomicU64,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    connections_timed_out: AtomicU64,
    checkpoint_stats: Mutex<CheckpointStats>,
    /// Woken by [`RunState::request_checkpoint`] (SIGHUP).
    save_request: tokio::sync::Notify,
    connections_denied: AtomicU64,
    names: Mutex<Names>,
    /// Replayable streams, reconnects, retention gaps, idle time.
    replay: super::replay::Replay,
    /// Recent points for the admin server's live page.
    recent: super::recent::Recent,
}

/// How a connection ended, for its close log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it (end of stream).
    Eof,
    /// It sent nothing for `--idle-timeout`.
    IdleTimeout,
    /// The run stopped: it went quiet, or `--shutdown-timeout` passed.
    Shutdown,
    /// A read error.
    Error,
}

impl CloseReason {
    /// The reason in words.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Eof => "closed by the peer",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "read error",
        }
    }
}

/// A connection that ended, as its source reported it, for the close log.
#[derive(Clone, Debug)]
pub struct Ended {
    /// The peer.
    pub peer: String,
    /// How long it was open.
    pub duration: Duration,
    /// How it ended.
    pub reason: CloseReason,
}

/// Open sources with a name of their own (connections), plus the last
/// [`RECENTLY_CLOSED`] closed ones (their last records are reported after
/// they close).
#[derive(Debug, Default)]
struct Names {
    first: String,
    open: HashMap<SourceId, String>,
    closed: VecDeque<(SourceId, String)>,
    /// When each open connection opened.
    opened_at: HashMap<SourceId, Instant>,
    /// Connections whose source has ended them, until the parser has
    /// logged them (after their last lines).
    ended: HashMap<SourceId, Ended>,
}

/// Closed sources whose names are kept for messages.
const RECENTLY_CLOSED: usize = 64;

impl RunState {
    /// A new run state; `first` names source 0 (stdin, the file, or the
    /// listener).
    pub fn new(first: impl Into<String>) -> Self {
        RunState {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            sources: CancellationToken::new(),
            finished: CancellationToken::new(),
            reason: OnceLock::new(),
            interrupt: Default::default(),
            fitting: AtomicBool::new(false),
            parser_input: Mutex::new(None),
            parser_waiting: Mutex::new(None),
            learner: Mutex::new(LearnerCounts::default()),
            checkpoints_written: AtomicU64::new(0),
            checkpoints_failed: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            checkpoint_stats: Mutex::new(CheckpointStats::default()),
            save_request: tokio::sync::Notify::new(),
            connections_denied: AtomicU64::new(0),
            names: Mutex::new(Names {
                first: first.into(),
                ..Names::default()
            }),
            replay: super::replay::Replay::default(),
            recent: super::recent::Recent::default(),
        }
    }

    /// What the replayable (log) sources share: streams with their lag,
    /// reconnects, messages lost to a retention gap, idle time.
    pub fn replay(&self) -> &super::replay::Replay {
        &self.replay
    }

    /// The recent points the admin server's live page draws.
    pub fn recent(&self) -> &super::recent::Recent {
        &self.recent
    }

    /// The sources by name: source 0 (stdin, the file, the listener, the
    /// broker subscription), then the connections open now, oldest first.
    pub fn source_names(&self) -> Vec<String> {
        let names = self.lock_names();
        let mut open: Vec<(&SourceId, &String)> = names.open.iter().collect();
        open.sort_by_key(|(id, _)| **id);
        std::iter::once(names.first.clone())
            .chain(
                open.into_iter()
                    .map(|(id, n)| format!("connection #{id} ({n})")),
            )
            .collect()
    }

    /// Every counter, read at one moment.
    pub fn counts(&self) -> Counts {
        Counts {
            learner: self.learner_counts(),
            checkpoints_written: self.checkpoints_written.load(Ordering::Relaxed),
            checkpoints_failed: self.checkpoints_failed.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            connections_denied: self.connections_denied.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
            connections_timed_out: self.connections_timed_out.load(Ordering::Relaxed),
        }
    }

    /// The learner's counters.
    pub fn learner_counts(&self) -> LearnerCounts {
        self.learner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the learner's counters (the learner thread, once per batch).
    pub(crate) fn set_learner_counts(&self, counts: &LearnerCounts) {
        self.learner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(counts);
    }

    /// Counts a checkpoint written (`ok`) or failed.
    pub(crate) fn checkpoint_done(&self, ok: bool) {
        let c = if ok {
            &self.checkpoints_written
        } else {
            &self.checkpoints_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a checkpoint write that took `took`, and remembers its error
    /// (or clears the last one on success).
    pub(crate) fn checkpoint_finished(&self, took: Duration, error: Option<String>) {
        self.checkpoint_done(error.is_none());
        let mut stats = self
            .checkpoint_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let secs = took.as_secs_f64();
        if let Some(i) = CHECKPOINT_SECONDS_BUCKETS.iter().position(|&le| secs <= le) {
            stats.buckets[i] += 1;
        }
        stats.sum_seconds += secs;
        stats.count += 1;
        if error.is_none() {
            stats.last_ok_unix_ms = Some(super::unix_ms());
        }
        stats.last_error = error;
    }

    /// Checkpoint write durations and the outcome of the last write.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpoint_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks for a checkpoint of the newest snapshot now (SIGHUP); the
    /// checkpoint writer saves it unless it is on disk already.
    pub fn request_checkpoint(&self) {
        self.save_request.notify_one();
    }

    /// Completes at the next [`RunState::request_checkpoint`] (a request
    /// made while nobody waits is kept for the next wait).
    pub(crate) async fn checkpoint_requested(&self) {
        self.save_request.notified().await;
    }

    /// Counts a connection closed for being idle.
    pub(crate) fn connection_timed_out(&self) {
        self.connections_timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how connection `id` ended (its source, just before its
    /// end goes down the channel); taken by [`RunState::take_ended`].
    pub(crate) fn connection_ended(&self, id: SourceId, reason: CloseReason) {
        let mut names = self.lock_names();
        let duration = names
            .opened_at
            .remove(&id)
            .map_or(Duration::ZERO, |t| t.elapsed());
        let peer = names.open.get(&id).cloned().unwrap_or_default();
        names.ended.insert(
            id,
            Ended {
                peer,
                duration,
                reason,
            },
        );
    }

    /// How connection `id` ended, once (the parser, at its end).
    pub(crate) fn take_ended(&self, id: SourceId) -> Option<Ended> {
        self.lock_names().ended.remove(&id)
    }

    /// Counts a connection that could not be accepted.
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection refused by access control (TLS, token).
    pub(crate) fn connection_denied(&self) {
        self.connections_denied.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers an open source with its own name (a connection).
    pub(crate) fn source_opened(&self, id: SourceId, name: String) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        let mut names = self.lock_names();
        names.open.insert(id, name);
        names.opened_at.insert(id, Instant::now());
    }

    /// Marks a source registered by [`RunState::source_opened`] closed; its
    /// name stays known for a while.
    pub(crate) fn source_closed(&self, id: SourceId) {
        let mut names = self.lock_names();
        names.opened_at.remove(&id);
        if let Some(name) = names.open.remove(&id) {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
            if names.closed.len() == RECENTLY_CLOSED {
                names.closed.pop_front();
            }
            names.closed.push_back((id, name));
        }
    }

    /// Renames source 0.
    pub(crate) fn rename_first(&self, name: String) {
        self.lock_names().first = name;
    }

    /// A source's name for messages: source 0 by its own name,
    /// connections as `connection #N (peer)`.
    pub fn source_name(&self, id: SourceId) -> String {
        let names = self.lock_names();
        if id == 0 {
            return names.first.clone();
        }
        let found = names
            .open
            .get(&id)
            .or_else(|| names.closed.iter().find(|(i, _)| *i == id).map(|(_, n)| n));
        match found {
            Some(n) => format!("connection #{id} ({n})"),
            None => format!("connection #{id}"),
        }
    }

    fn lock_names(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the sources to stop (phase one); the first reason given is kept.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.sources.cancel();
    }

    /// A signal asked the run to stop: besides [`RunState::stop`], a
    /// warm-up fit in progress is interrupted and the warm-up buffer is
    /// saved unfitted.
    pub fn interrupt(&self) {
        self.interrupt
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the learner is fitting a model on its warm-up buffer (the
    /// first, or a regime change's re-fit), which takes tens of
    /// milliseconds at d = 32 (seconds when
    /// choosing K) during which it takes no batches: the parser then goes
    /// on parsing into a bounded read-ahead instead of waiting (the parser
    /// stage's `Sender::deliver`).
    pub fn fitting(&self) -> bool {
        self.fitting.load(Ordering::SeqCst)
    }

    /// Set by the learner, through its fit hook
    /// ([`crate::model::StepwiseEm::set_fit_hook`]), for the length of
    /// every fit on its warm-up buffer. Its start and end count as activity for `--stop-when-idle`
    /// ([`super::idle`]), which does not stop a run while it fits. At
    /// the end of a fit the parser stage is woken (a
    /// [`SourceEvent::Wake`](super::SourceEvent::Wake) on its input), as it
    /// may be waiting for input with batches read ahead that the learner
    /// can take now.
    pub(crate) fn set_fitting(&self, on: bool) {
        // Busy, not idle (`--stop-when-idle`): the time of a fit does not
        // count as quiet, however long it takes. Before the flag changes,
        // so that the idle check never sees a fit just ended with the
        // quiet counted from its start.
        if on != self.fitting() {
            self.replay().touch();
        }
        let was = self.fitting.swap(on, Ordering::SeqCst);
        if on {
            // A parser waiting for room would wait the whole fit: it reads
            // ahead instead.
            self.wake_parser();
        }
        if was && !on {
            let input = self.parser_input.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = input.as_ref().and_then(|weak| weak.upgrade()) {
                // A full input wakes the stage anyway.
                let _ = tx.try_send(super::SourceEvent::Wake);
            }
        }
    }

    /// Called by the parser stage's thread with `true` before it waits
    /// for room in the learner's queue (`std::thread::park`), and with
    /// `false` after: [`RunState::wake_parser`] then wakes it.
    pub(crate) fn parser_waits(&self, on: bool) {
        *self
            .parser_waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = on.then(std::thread::current);
    }

    /// Wakes the parser stage if it waits for room in the learner's queue
    /// (the learner took a batch, or a fit starts). A wake before the
    /// parser parks is kept (the thread's token), so none is lost.
    pub(crate) fn wake_parser(&self) {
        if let Some(t) = self
            .parser_waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
    }

    /// The parser stage's input, for [`RunState::set_fitting`] to wake it:
    /// held weakly, so it still closes when the sources end.
    pub(crate) fn set_parser_input(&self, tx: &tokio::sync::mpsc::Sender<super::SourceEvent>) {
        *self.parser_input.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.downgrade());
    }

    /// The flag [`RunState::interrupt`] sets, for the learner.
    pub fn interrupt_flag(&self) -> crate::model::em::Interrupt {
        self.interrupt.clone()
    }

    /// Why the run stopped ([`StopReason::EndOfInput`] when nobody asked).
    pub fn stop_reason(&self) -> StopReason {
        self.reason.get().copied().unwrap_or(StopReason::EndOfInput)
    }

    /// The token the sources watch (phase one of the stop).
    pub fn sources_token(&self) -> CancellationToken {
        self.sources.clone()
    }

    /// Cancelled when the run has drained, written its final checkpoint and
    /// is about to return (phase two): what must answer during the drain
    /// waits for this one, not for [`RunState::sources_token`].
    pub fn finished_token(&self) -> CancellationToken {
        self.finished.clone()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Finished,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        if phase == Phase::Finished {
            self.finished.cancel();
        }
    }

    /// The progress line text.
    pub(crate) fn progress_text(&self) -> String {
        let c = self.counts();
        let secs = c.elapsed.as_secs_f64();
        let points = c.learner.points;
        let rate = if secs > 0.0 {
            points as f64 / secs
        } else {
            0.0
        };
        let rejected = c.learner.rejected.total();
        let mut s = format!(
            "emstream: {} points, {}/s, avg log-lik {}",
            points,
            super::console::human_rate(rate),
            super::console::fmt_ll(c.learner.avg_log_lik)
        );
        if rejected > 0 {
            s.push_str(&format!(", {rejected} rejected"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RejectReason;

    #[test]
    fn the_first_stop_reason_is_kept_and_cancels_the_sources_only() {
        let s = RunState::new("stdin");
        assert_eq!(s.stop_reason(), StopReason::EndOfInput);
        s.stop(StopReason::Signal);
        s.stop(StopReason::Failed);
        assert_eq!(s.stop_reason(), StopReason::Signal);
        assert!(s.sources_token().is_cancelled());
        assert!(!s.finished_token().is_cancelled());
        s.set_phase(Phase::Draining);
        assert_eq!(s.phase(), Phase::Draining);
        assert!(!s.finished_token().is_cancelled());
        s.set_phase(Phase::Finished);
        assert!(s.finished_token().is_cancelled());
    }

    #[test]
    fn connections_are_counted_and_named_after_they_close() {
        let s = RunState::new("listener");
        s.source_opened(1, "10.0.0.1:5".into());
        s.source_opened(2, "10.0.0.2:6".into());
        s.connection_refused();
        assert_eq!(s.counts().connections_open, 2);
        s.source_closed(1);
        s.source_closed(1);
        let c = s.counts();
        assert_eq!(
            (
                c.connections_open,
                c.connections_total,
                c.connections_refused
            ),
            (1, 2, 1)
        );
        assert_eq!(s.source_name(1), "connection #1 (10.0.0.1:5)");
        assert_eq!(s.source_name(0), "listener");
        assert_eq!(s.source_name(9), "connection #9");
    }

    #[test]
    fn learner_counts_are_replaced_together() {
        let s = RunState::new("stdin");
        let mut l = LearnerCounts {
            points: 10,
            anomalies: 2,
            ..LearnerCounts::default()
        };
        l.rejected.add_n(RejectReason::NotNumeric, 3);
        s.set_learner_counts(&l);
        s.checkpoint_done(true);
        s.checkpoint_done(false);
        let c = s.counts();
        assert_eq!(c.learner, l);
        assert_eq!((c.checkpoints_written, c.checkpoints_failed), (1, 1));
        assert!(s.progress_text().contains("3 rejected"));
    }
}
