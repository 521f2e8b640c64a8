//! The score sink: a thread that writes the learner's scored blocks to
//! stdout through [`Scorer::write_flagged`]. The anomaly flags come with
//! the blocks: the learner judged them where the scores were produced, so
//! its snapshots count them at the same moment as the points.
//!
//! Lines are flushed whenever no further block is waiting: on a fast pipe
//! the queue is seldom empty and the buffer goes out full; on a
//! live feed slower than the buffer each block (down to one point: the
//! sources hand on idle input after [`super::IDLE_FLUSH`] and the learner
//! scores the points of a partial mini-batch on arrival) is written at once,
//! so a score line, and an alert, follows its record within milliseconds.
//!
//! A closed stdout (`| head`) is not an error: the sink stops writing, asks
//! the run to stop like a signal would, and keeps taking buffers so the
//! learner never blocks on it.

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use super::state::{RunState, StopReason};
use super::SCORE_OUT_BYTES;
use crate::model::ScoreBuffer;
use crate::score::{KeptPrefixes, ScoreOptions, Scorer};

/// One learned block's scores and, with an alert rule, its anomaly flags;
/// with `--score-keep` the kept fields that start each line.
#[derive(Debug, Default)]
pub(crate) struct ScoredBlock {
    pub(crate) scores: ScoreBuffer,
    pub(crate) flags: Vec<bool>,
    pub(crate) kept: Option<KeptPrefixes>,
}

/// How far score output got: points whose blocks the learner handed to the
/// sink, points the sink has written (into its buffer), points the learner
/// dropped because stdout was not read after the stop. The difference of
/// the first two is what a stalled sink still holds when the run gives up
/// on it.
#[derive(Debug, Default)]
pub(crate) struct ScoreProgress {
    handed: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
}

impl ScoreProgress {
    pub(crate) fn handed(&self, n: u64) {
        self.handed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Points whose score lines were not written: dropped by the learner,
    /// or handed to a sink that never wrote them.
    pub(crate) fn lost(&self) -> u64 {
        let handed = self.handed.load(Ordering::Relaxed);
        let written = self.written.load(Ordering::Relaxed);
        self.dropped.load(Ordering::Relaxed) + handed.saturating_sub(written)
    }

    /// Points dropped by the learner only (the sink finished).
    pub(crate) fn dropped_only(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes score buffers to `out` until the learner drops its sender.
///
/// # Errors
///
/// A write error other than a closed pipe; the run is asked to stop at the
/// first one.
pub(crate) fn sink_loop<W: Write>(
    out: W,
    options: ScoreOptions,
    k: usize,
    filled: Receiver<ScoredBlock>,
    empty: SyncSender<ScoredBlock>,
    state: &RunState,
    progress: &ScoreProgress,
) -> std::io::Result<()> {
    let mut scorer = Scorer::new(options, k);
    let mut out = BufWriter::with_capacity(SCORE_OUT_BYTES, out);
    let mut failed: Option<std::io::Error> = None;
    let mut closed = false;
    let mut unflushed = false;
    loop {
        let buf = match filled.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) => {
                // Nothing more waiting: what is written goes out now.
                if unflushed && !closed && failed.is_none() {
                    unflushed = false;
                    if let Err(e) = out.flush() {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            closed = true;
                            state.stop(StopReason::OutputClosed);
                        } else {
                            state.stop(StopReason::Failed);
                            failed = Some(e);
                        }
                    }
                }
                match filled.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        if !closed && failed.is_none() {
            match scorer.write_kept(&buf.scores, &buf.flags, buf.kept.as_ref(), &mut out) {
                Ok(()) => unflushed |= !buf.scores.is_empty(),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    closed = true;
                    state.stop(StopReason::OutputClosed);
                }
                Err(e) => {
                    state.stop(StopReason::Failed);
                    failed = Some(e);
                }
            }
        }
        progress
            .written
            .fetch_add(buf.scores.log_lik.len() as u64, Ordering::Relaxed);
        let _ = empty.try_send(buf);
    }
    if !closed && failed.is_none() {
        match out.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => failed = Some(e),
        }
    }
    if closed {
        // Do not let the BufWriter try to flush into the closed pipe again.
        let (_, _) = out.into_parts();
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
