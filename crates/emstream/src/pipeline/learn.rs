//! The learner stage: one thread owns [`StepwiseEm`], learns from batches,
//! counts and reports bad records, flags anomalies where the scores are
//! produced, hands score blocks to the score sink, and publishes
//! [`Snapshot`]s at a bounded rate and whenever a checkpoint is due.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::console::{reason_text, Console};
use super::parse::{recycle, Work};
use super::score::ScoredBlock;
use super::snapshot::{Snapshot, SNAPSHOT_EVERY};
use super::source::Position;
use super::state::{LearnerCounts, RunState};
use super::REPORTED_RECORDS;
use crate::checkpoint::{Checkpoint, ModelSelection, SourcePosition};
use crate::config::reject_rate_exceeded;
use crate::input::keep::KeptRow;
use crate::input::{Batch, InputError, ParseError, RejectCounts, RejectReason, SourceId};
use crate::model::{
    CheckedParams, Counters, FitHook, LearnError, ScoreBuffer, StepwiseEm, UNTAGGED,
};
use crate::score::{AnomalyDetector, KeepFormat, KeptPrefixes};

/// How long a warm-up goes before it is logged ("warming up: n of N
/// points"): a file's warm-up is over long before, a slow sensor's is not.
const WARMUP_LINE_FIRST: Duration = Duration::from_secs(10);

/// How often a warm-up is logged after that.
const WARMUP_LINE_EVERY: Duration = Duration::from_secs(60);

/// Where the learner stands when the run begins (fresh or resumed).
#[derive(Debug)]
pub(crate) struct Start {
    /// The resumed learner, if any.
    pub(crate) learner: Option<StepwiseEm>,
    /// Rejected records of earlier runs.
    pub(crate) rejected: RejectCounts,
    /// Anomalies of earlier runs.
    pub(crate) anomalies: u64,
    /// When the model was first created (Unix ms).
    pub(crate) created_unix_ms: u64,
    /// Source positions of the resumed checkpoint, kept until a source
    /// reports newer ones.
    pub(crate) sources: Vec<SourcePosition>,
    /// Names of the dimensions, if known.
    pub(crate) columns: Option<Vec<String>>,
    /// How K was chosen, if it was.
    pub(crate) selection: Option<ModelSelection>,
}

/// When mid-stream checkpoints are due.
#[derive(Clone, Debug, Default)]
pub(crate) struct Due {
    pub(crate) every: Option<u64>,
    pub(crate) interval: Option<Duration>,
}

/// Channels to the score sink: filled blocks out, empty ones back.
pub(crate) struct ScoreLink {
    pub(crate) filled: SyncSender<ScoredBlock>,
    pub(crate) empty: Receiver<ScoredBlock>,
    pub(crate) want_resp: bool,
    /// Points handed to the sink and points it has written (see
    /// [`super::score::ScoreProgress`]).
    pub(crate) progress: Arc<super::score::ScoreProgress>,
    /// The stop: once it fires, a full score queue is waited on for at most
    /// [`super::SCORE_STALL_TIMEOUT`], then blocks are dropped (counted).
    pub(crate) stop: tokio_util::sync::CancellationToken,
    /// Set once a block was dropped: later ones are dropped at once when
    /// the queue is full.
    pub(crate) stalled: std::cell::Cell<bool>,
    /// With `--score-keep`: how kept fields are written.
    pub(crate) keep: Option<KeepFormat>,
}

/// Kept rows beyond twice the learner's held points before
/// [`KeptQueue::prune`] looks.
const PRUNE_SLACK: usize = 1024;

/// `--score-keep` in the learner: the kept fields of the points received
/// and not yet scored, by row number ([`StepwiseEm::tag_rows`]), so each
/// score line gets its own record's fields whatever the learner holds back
/// (the warm-up) or drops unscored (warm-up duplicates). Bounded by the
/// points in flight: the warm-up buffer and a partial mini-batch.
#[derive(Debug, Default)]
struct KeptQueue {
    /// (row number, kept fields), in row order.
    rows: std::collections::VecDeque<(u64, KeptRow)>,
    /// The number the next row received gets.
    next: u64,
    /// Reused: the row numbers of the points just scored.
    scored: Vec<u64>,
}

impl KeptQueue {
    /// Takes the kept fields of a batch's rows (one per row).
    fn receive(&mut self, kept: &mut Vec<KeptRow>) {
        for row in kept.drain(..) {
            self.rows.push_back((self.next, row));
            self.next += 1;
        }
    }

    /// Forgets the kept fields of rows the learner no longer holds (a
    /// warm-up that drops the copies of a stuck sensor and scores nothing
    /// could otherwise grow the queue without bound); `held` are the rows
    /// it holds, ascending but for untagged ones. Looked at only when the
    /// queue is well beyond what is held, so its cost is spread thin.
    fn prune(&mut self, held: &[u64]) {
        if self.rows.len() <= 2 * held.len() + PRUNE_SLACK {
            return;
        }
        let held: Vec<u64> = held.iter().copied().filter(|&r| r != UNTAGGED).collect();
        self.rows.retain(|(r, _)| held.binary_search(r).is_ok());
    }

    /// Formats the kept fields of the rows in `self.scored`, in order.
    fn format(&mut self, keep: &KeepFormat, state: &RunState, out: &mut KeptPrefixes) {
        let mut last: Option<(SourceId, String)> = None;
        let mut name = |id: SourceId| match &last {
            Some((s, n)) if *s == id => n.clone(),
            _ => {
                let n = state.source_name(id);
                last = Some((id, n.clone()));
                n
            }
        };
        for &id in &self.scored {
            if id == UNTAGGED {
                keep.push(None, &mut name, out);
                continue;
            }
            // Rows before `id` were dropped unscored by the learner.
            while self.rows.front().is_some_and(|(r, _)| *r < id) {
                self.rows.pop_front();
            }
            match self.rows.front() {
                Some((r, row)) if *r == id => {
                    keep.push(Some(row), &mut name, out);
                    self.rows.pop_front();
                }
                _ => keep.push(None, &mut name, out),
            }
        }
    }
}

impl ScoreLink {
    /// Hands a block to the sink. A full queue makes the learner wait (a
    /// slow reader of stdout slows the run) until the stop; then it waits
    /// at most [`super::SCORE_STALL_TIMEOUT`] and drops the block, counting
    /// its points, so a stalled reader cannot keep the final checkpoint
    /// from being written.
    fn hand_over(&self, block: ScoredBlock) {
        use std::sync::mpsc::TrySendError;
        let n = block.scores.log_lik.len() as u64;
        let mut block = block;
        let mut deadline = None;
        loop {
            match self.filled.try_send(block) {
                Ok(()) => {
                    self.progress.handed(n);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(b)) => block = b,
            }
            if self.stop.is_cancelled() {
                let now = Instant::now();
                let at = *deadline.get_or_insert(now + super::SCORE_STALL_TIMEOUT);
                if self.stalled.get() || now >= at {
                    self.stalled.set(true);
                    self.progress.dropped(n);
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Everything the learner thread owns.
pub(crate) struct Learner {
    pub(crate) params: CheckedParams,
    /// Threads of the E-step (`--threads`).
    pub(crate) threads: usize,
    pub(crate) start: Start,
    pub(crate) work: Receiver<Work>,
    pub(crate) recycle: SyncSender<Batch>,
    pub(crate) snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    pub(crate) due: Due,
    pub(crate) score: Option<ScoreLink>,
    /// Flags anomalies (with `--score` and an alert rule).
    pub(crate) detector: Option<AnomalyDetector>,
    /// `--max-reject-rate`.
    pub(crate) max_reject_rate: f64,
    pub(crate) state: Arc<RunState>,
    pub(crate) console: Arc<Console>,
    /// Say on stderr which dimension the data decided, and from whom (a
    /// daemon without a configured dimension).
    pub(crate) announce_dim: bool,
    /// Test-only fault injection: panic once this many points are learned.
    #[cfg(test)]
    pub(crate) panic_after: Option<u64>,
}

/// What the learner thread hands back when its input has closed.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The final snapshot (none if no valid point ever arrived and nothing
    /// was resumed).
    pub(crate) last: Option<Arc<Snapshot>>,
    /// This run's counters at the end.
    pub(crate) counts: LearnerCounts,
    /// The bad record that stopped the run (`--on-error fail`).
    pub(crate) bad_record: Option<ParseError>,
    /// A learning error that stopped the run.
    pub(crate) learn_error: Option<LearnError>,
    /// The input was overwhelmingly not points: (rejected, records).
    pub(crate) not_points: Option<(u64, u64)>,
    /// Input that does not fit the parser configuration (a usage error).
    pub(crate) input_error: Option<InputError>,
    /// The first read error of a source: (its name, the error).
    pub(crate) read_error: Option<(String, std::io::Error)>,
    /// (points, rejected records) of this run when its reject rate went
    /// above `--max-reject-rate`.
    pub(crate) too_many_rejects: Option<(u64, u64)>,
}

/// The learner's running state between batches.
struct Run {
    learner: Option<StepwiseEm>,
    at_start: Counters,
    /// Points the resumed model held waiting (warm-up buffer, partial
    /// mini-batch) at the start.
    pending_at_start: u64,
    counts: LearnerCounts,
    positions: BTreeMap<SourceId, Position>,
    /// Names of the dimensions: the resumed checkpoint's, then the input's.
    columns: Option<Vec<String>>,
    seq: u64,
    saves_due: u64,
    /// Whether anything changed since the last snapshot.
    dirty: bool,
    /// Whether anything changed since the last checkpoint was due.
    unsaved: bool,
    last_published: Instant,
}

impl Learner {
    /// Runs until the batch channel closes (after draining it), a learning
    /// error, or a fatal bad record; then learns from the pending partial
    /// batch ([`StepwiseEm::flush`]) and publishes the final snapshot.
    pub(crate) fn run(mut self) -> Outcome {
        let mut learner = self.start.learner.take();
        if let Some(l) = learner.as_mut() {
            l.set_threads(self.threads);
            l.set_interrupt(self.state.interrupt_flag());
            l.set_fit_hook(self.fit_hook());
        }
        let mut run = Run {
            at_start: learner
                .as_ref()
                .map(|l| l.counters().clone())
                .unwrap_or_default(),
            pending_at_start: learner.as_ref().map_or(0, |l| l.pending_points() as u64),
            learner,
            counts: LearnerCounts::default(),
            positions: BTreeMap::new(),
            columns: self.start.columns.take(),
            seq: 0,
            saves_due: 0,
            dirty: false,
            unsaved: false,
            last_published: Instant::now(),
        };
        let mut reported = 0usize;
        let mut headers_reported = 0usize;
        let mut bad_record = None;
        let mut learn_error = None;
        let mut input_error = None;
        let mut read_error = None;
        let mut too_many_rejects = None;
        let mut not_points = None;
        let mut fit_announced = false;
        // When the next "warming up" line is due.
        let mut next_warmup_line = Instant::now() + WARMUP_LINE_FIRST;
        // Records of this run: (points, rejected), for the reject rate,
        // and the rejects that are not numbers at all (not a wrong field
        // count, not a torn record), for the "not points" rule.
        let (mut points, mut rejected, mut not_numbers) = (0u64, 0u64, 0u64);
        let mut next_every = self.due.every;
        let mut next_time = self.due.interval.map(|i| Instant::now() + i);
        let mut kept = KeptQueue::default();
        loop {
            let publish_at = run.dirty.then(|| run.last_published + SNAPSHOT_EVERY);
            let wake = match (next_time, publish_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let received = match wake {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match self.work.recv_timeout(wait) {
                        Ok(w) => Some(w),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match self.work.recv() {
                    Ok(w) => Some(w),
                    Err(_) => break,
                },
            };
            if received.is_some() {
                // Room in the queue: a parser waiting for it goes on.
                self.state.wake_parser();
            }
            if let Some(Work {
                mut batch,
                fatal,
                positions,
                forget,
                failed,
                names,
            }) = received
            {
                if let Some(names) = names {
                    self.take_names(names, &mut run);
                }
                if let Some(f) = failed {
                    read_error.get_or_insert(f);
                }
                for note in &batch.notes {
                    self.console.line(note);
                }
                if let Some(e) = batch.fatal.take() {
                    input_error = Some(e);
                    break;
                }
                for e in &batch.errors {
                    if reported < REPORTED_RECORDS {
                        reported += 1;
                        self.console.line(&format!(
                            "skipped {}: {}: {}",
                            e.place(&self.state.source_name(e.source_id)),
                            reason_text(e.reason),
                            e.detail
                        ));
                    }
                }
                for (source, line, text) in &batch.headers {
                    if headers_reported < REPORTED_RECORDS {
                        headers_reported += 1;
                        self.console.line(&format!(
                            "{} line {line} is a header, skipped: {}",
                            self.state.source_name(*source),
                            truncate(text, 80)
                        ));
                    }
                }
                if !batch.rejected.is_empty() {
                    run.counts.rejected.merge(&batch.rejected);
                    run.changed();
                }
                if let (Some((source, line)), true) = (batch.dim_from, self.announce_dim) {
                    self.console.line(&format!(
                        "dimension {} taken from {} line {line}: most of the first records have {} fields (no --dim was given; give --dim or --columns to fix it)",
                        batch.dim,
                        self.state.source_name(source),
                        batch.dim
                    ));
                }
                rejected += batch.rejected.total();
                not_numbers += batch.rejected.total()
                    - batch.rejected.get(RejectReason::FieldCount)
                    - batch.rejected.get(RejectReason::Torn);
                points += batch.values.len().checked_div(batch.dim).unwrap_or(0) as u64;
                // Checked before --max-reject-rate (which is checked after
                // the batch is learned): garbage in must not make a model,
                // so stop before learning from this batch.
                if not_points_yet(not_numbers, points + rejected - not_numbers) {
                    not_points = Some((not_numbers, rejected + points));
                    self.state.stop(super::StopReason::Failed);
                    recycle(&self.recycle, batch);
                    break;
                }
                if !batch.values.is_empty() && batch.dim > 0 {
                    let l = run.learner.get_or_insert_with(|| {
                        let mut l = StepwiseEm::new(self.params.clone(), batch.dim);
                        l.set_threads(self.threads);
                        l.set_interrupt(self.state.interrupt_flag());
                        l.set_fit_hook(self.fit_hook());
                        l
                    });
                    if self.keeps() {
                        l.tag_rows();
                        kept.receive(&mut batch.kept);
                    }
                    let dropped = l.warmup_dropped();
                    let regimes = l.regime_changes();
                    let rows = batch.values.len() / batch.dim;
                    // This batch completes the warm-up buffer: the first
                    // model is fitted in this call. The parser reads ahead
                    // meanwhile (RunState::fitting): raised here already,
                    // before the learner's own fit hook does, for the
                    // parser must see it before the queue fills (a send
                    // to a full queue waits for the learner, the whole
                    // fit). A re-fit, which cannot be foreseen, raises it
                    // through the hook alone.
                    // Not after a stop request: that fit would return at
                    // once (nothing to announce, no reading ahead).
                    let fits = l.fits_with(rows);
                    if fits && !fit_announced {
                        fit_announced = true;
                        self.announce_fit(l);
                    }
                    let values = &batch.values;
                    self.state.recent().sample(values, batch.dim);
                    let before = KEvents::of(l);
                    self.state.set_fitting(fits);
                    let result = scored(
                        self.score.as_ref(),
                        self.detector.as_mut(),
                        &mut run.counts,
                        (&mut kept, &self.state),
                        l,
                        |l, scores| l.observe(values, scores),
                    );
                    self.state.set_fitting(false);
                    before.log_news(l, &self.console);
                    kept.prune(l.held_rows());
                    match result {
                        // A signal stopped the warm-up fit: the buffer is
                        // kept and saved unfitted.
                        Err(LearnError::Interrupted) => {}
                        Err(e) => {
                            learn_error = Some(e);
                            break;
                        }
                        Ok(()) => {}
                    }
                    if let Some(l) = run.learner.as_ref() {
                        if l.regime_changes() > regimes {
                            run.counts.regime_changes += l.regime_changes() - regimes;
                            self.console.line(&format!(
                                "regime change: more than half of the last {} points were gross outliers; the model was re-fitted on the most recent points ({} so far)",
                                l.params().warmup,
                                run.counts.regime_changes
                            ));
                        }
                        if l.mixture().is_none() {
                            let now = Instant::now();
                            if now >= next_warmup_line {
                                next_warmup_line = now + WARMUP_LINE_EVERY;
                                self.console.line(&format!(
                                    "warming up: {} of {} points (the first model is fitted on them, then every point is scored)",
                                    l.pending_points().min(l.params().warmup),
                                    l.params().warmup
                                ));
                            }
                        }
                        if dropped == 0 && l.warmup_dropped() > 0 {
                            self.console.line(&format!(
                                "warm-up: too few distinct usable points to fit {} components; dropped {} repeated or unusable points and waiting for more varied data ({} buffered)",
                                l.params().components,
                                l.warmup_dropped(),
                                l.pending_points()
                            ));
                        }
                    }
                    run.counts.batches += 1;
                    run.changed();
                    #[cfg(test)]
                    if let (Some(n), Some(l)) = (self.panic_after, &run.learner) {
                        let seen = l.counters().points_seen - run.at_start.points_seen;
                        assert!(seen < n, "test fault: the learner panics after {n} points");
                    }
                }
                for (source, pos) in positions {
                    run.positions.insert(source, pos);
                }
                for source in forget {
                    run.positions.remove(&source);
                }
                run.update_counts();
                self.state.set_learner_counts(&run.counts);
                recycle(&self.recycle, batch);
                if fatal.is_some() {
                    bad_record = fatal;
                    break;
                }
                if reject_rate_exceeded(self.max_reject_rate, points, rejected, false).is_some() {
                    too_many_rejects = Some((points, rejected));
                    break;
                }
                if let Some(every) = self.due.every {
                    if next_every.is_some_and(|n| run.counts.points >= n) {
                        next_every = Some((run.counts.points / every + 1) * every);
                        if run.save_due() {
                            self.publish(&mut run, true);
                        }
                    }
                }
            }
            let now = Instant::now();
            if let (Some(at), Some(interval)) = (next_time, self.due.interval) {
                if now >= at {
                    next_time = Some(now + interval);
                    if run.save_due() {
                        self.publish(&mut run, true);
                    }
                }
            }
            if run.dirty && now >= run.last_published + SNAPSHOT_EVERY {
                self.publish(&mut run, false);
            }
        }

        let clean_end = learn_error.is_none()
            && input_error.is_none()
            && bad_record.is_none()
            && not_points.is_none();
        if clean_end
            && too_many_rejects.is_none()
            && reject_rate_exceeded(self.max_reject_rate, points, rejected, true).is_some()
        {
            too_many_rejects = Some((points, rejected));
        }
        if learn_error.is_none() && not_points.is_none() {
            if let Some(l) = run.learner.as_mut() {
                // A full buffer restored without a model (a signal stopped
                // the first fit) and no input since: fitted now.
                if !fit_announced && l.fits_at_flush() {
                    self.announce_fit(l);
                }
                let before = KEvents::of(l);
                let result = scored(
                    self.score.as_ref(),
                    self.detector.as_mut(),
                    &mut run.counts,
                    (&mut kept, &self.state),
                    l,
                    |l, scores| l.flush(scores),
                );
                before.log_news(l, &self.console);
                if let Err(e) = result {
                    learn_error = Some(e);
                }
            }
        }
        // An input that ended before the warm-up filled still ends with a
        // model, fitted on what it gave (the buffer is kept for a resume).
        if clean_end && learn_error.is_none() {
            if let Some(l) = run.learner.as_mut() {
                if l.mixture().is_none() && l.pending_points() > 0 {
                    if let Err(e) = l.fit_provisional() {
                        self.console.line(&format!(
                            "the input ended after {} of {} warm-up points, too few to fit a model on: {e}",
                            l.pending_points(),
                            l.params().warmup
                        ));
                    }
                    run.changed();
                }
            }
        }
        run.update_counts();
        self.state.set_learner_counts(&run.counts);
        // The final snapshot, whatever the rate: the final checkpoint is
        // saved from it.
        self.publish(&mut run, true);
        Outcome {
            last: self.snapshots.borrow().clone(),
            counts: run.counts,
            bad_record,
            learn_error,
            not_points,
            input_error,
            read_error,
            too_many_rejects,
        }
    }

    /// Records the names the input gives its dimensions. A resumed model
    /// whose checkpoint named them otherwise keeps learning (the numbers
    /// are what it learns from) under the new names, with a warning: the
    /// input may be another file than the one the model was learned from.
    fn take_names(&self, names: Vec<String>, run: &mut Run) {
        if let Some(old) = run.columns.as_ref().filter(|old| **old != names) {
            self.console.line(&format!(
                "warning: the input names its columns {} but the checkpoint's model was learned from {}: check that this is the same kind of data; the checkpoint now records the new names",
                names.join(", "),
                old.join(", ")
            ));
        }
        if run.columns.as_ref() != Some(&names) {
            run.columns = Some(names);
            run.changed();
        }
    }

    /// The learner's [`FitHook`]: [`RunState::set_fitting`] for the length
    /// of every fit on the warm-up buffer (the first, a re-fit after a
    /// regime change, one at the end of the input).
    ///
    /// Test-only fault injection (in every build): with
    /// `EMSTREAM_FAULT_SLOW_FIT_MS=N` in the environment each fit is held
    /// that many milliseconds at its start, or until a stop request, so
    /// that the tests can stop a run in its first fit every time.
    fn fit_hook(&self) -> FitHook {
        let state = self.state.clone();
        let hold = super::fault_ms("EMSTREAM_FAULT_SLOW_FIT_MS");
        FitHook(Arc::new(move |on| {
            state.set_fitting(on);
            if let (true, Some(hold)) = (on, hold) {
                let flag = state.interrupt_flag();
                let until = Instant::now() + hold;
                while Instant::now() < until && !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }))
    }

    /// Says that the first model is being fitted (which may take a while),
    /// on how many points, and what a signal does meanwhile.
    fn announce_fit(&self, l: &StepwiseEm) {
        let warmup = l.params().warmup;
        let behind = match l.pending_points().saturating_sub(warmup) {
            0 => String::new(),
            n => format!(", then learning the {n} points kept behind them"),
        };
        self.console.line(&format!(
            "fitting the first model on {warmup} warm-up points{behind} (a signal stops the fit and saves them unfitted)"
        ));
    }

    /// Publishes a snapshot of the current state, if anything changed since
    /// the last one or `force` (a checkpoint is due), and there is a model
    /// state to show.
    fn publish(&self, run: &mut Run, force: bool) {
        let Some(l) = run.learner.as_ref() else {
            return;
        };
        if !run.dirty && !force {
            return;
        }
        let saves_due = run.saves_due;
        run.dirty = false;
        run.last_published = Instant::now();
        run.seq += 1;
        let mut rejected = self.start.rejected.clone();
        rejected.merge(&run.counts.rejected);
        let snap = Snapshot {
            seq: run.seq,
            checkpoint: Checkpoint {
                learner: l.clone(),
                rejected,
                anomalies: self.start.anomalies + run.counts.anomalies,
                created_unix_ms: self.start.created_unix_ms,
                updated_unix_ms: super::unix_ms(),
                sources: self
                    .state
                    .replay()
                    .checkpoint_positions(&self.start.sources, &run.positions),
                // Names that do not fit the model (a header wider than the
                // points) are left out rather than make the file invalid.
                columns: run.columns.clone().filter(|c| c.len() == l.dim()),
                // The learner keeps how K was chosen (a resumed one got it
                // from the checkpoint).
                selection: l.selection().cloned().or(self.start.selection.clone()),
            },
            counts: run.counts.clone(),
            positions: run.positions.clone(),
            saves_due,
        };
        self.state.replay().set_learned(&snap.positions);
        self.snapshots.send_replace(Some(Arc::new(snap)));
    }
}

/// What the run's log has said about K so far: whether K was chosen yet,
/// and how many changes of K it has seen.
struct KEvents {
    chosen: bool,
    changes: u64,
}

impl KEvents {
    fn of(l: &StepwiseEm) -> Self {
        KEvents {
            chosen: l.selection().is_some(),
            changes: l.counters().component_changes,
        }
    }

    /// Logs the choice of K (BIC per K, the rule) when it was just made,
    /// and the last change of K when there were new ones.
    fn log_news(&self, l: &StepwiseEm, console: &Console) {
        if let (false, Some(sel)) = (self.chosen, l.selection()) {
            let per_k: Vec<String> = sel
                .bic_by_k
                .iter()
                .map(|(k, b)| format!("K={k} {b:.1}"))
                .collect();
            console.line(&format!("BIC per K: {}", per_k.join(", ")));
            console.line(&format!("chose {}", sel.chosen_by));
        }
        let new = l.counters().component_changes - self.changes;
        if let (true, Some(c)) = (new > 0, l.last_change()) {
            console.line(&format!(
                "K {} -> {} ({:?}) after {} points: BIC on the recent points {:.1} -> {:.1}{}",
                c.from,
                c.to,
                c.change,
                c.points_seen,
                c.bic_before,
                c.bic_after,
                if new > 1 {
                    format!(" ({new} changes since the last report)")
                } else {
                    String::new()
                }
            ));
        }
    }
}

/// Runs `learn` (an observe or the final flush) with a score block when
/// scores are wanted, flags the block's anomalies (counted in `counts`, at
/// the same moment as its points) and hands it to the score sink.
fn scored(
    link: Option<&ScoreLink>,
    detector: Option<&mut AnomalyDetector>,
    counts: &mut LearnerCounts,
    (kept, state): (&mut KeptQueue, &RunState),
    l: &mut StepwiseEm,
    learn: impl FnOnce(&mut StepwiseEm, Option<&mut ScoreBuffer>) -> Result<(), LearnError>,
) -> Result<(), LearnError> {
    let Some(link) = link else {
        return learn(l, None);
    };
    let mut block = link.empty.try_recv().unwrap_or_else(|_| ScoredBlock {
        scores: ScoreBuffer {
            want_resp: link.want_resp,
            ..ScoreBuffer::default()
        },
        flags: Vec::new(),
        kept: None,
    });
    block.scores.clear();
    let result = learn(l, Some(&mut block.scores));
    if let Some(det) = detector {
        counts.anomalies += det.flag_block(&block.scores.log_lik, &mut block.flags);
        counts.alert_threshold = det.threshold();
    }
    if let Some(keep) = &link.keep {
        l.take_scored_rows(&mut kept.scored);
        let prefixes = block.kept.get_or_insert_with(KeptPrefixes::default);
        prefixes.clear();
        kept.format(keep, state, prefixes);
    }
    if !block.scores.is_empty() {
        link.hand_over(block);
    }
    result
}

impl Learner {
    /// Whether score lines carry kept fields (`--score-keep`).
    fn keeps(&self) -> bool {
        self.score.as_ref().is_some_and(|s| s.keep.is_some())
    }
}

impl Run {
    fn changed(&mut self) {
        self.dirty = true;
        self.unsaved = true;
    }

    /// A checkpoint is due: counts it if anything changed since the last
    /// one (a checkpoint of an unchanged model would be the same file).
    fn save_due(&mut self) -> bool {
        if !self.unsaved {
            return false;
        }
        self.unsaved = false;
        self.saves_due += 1;
        true
    }

    /// Brings the learner-derived counters up to date.
    fn update_counts(&mut self) {
        let Some(l) = self.learner.as_ref() else {
            return;
        };
        let (now, at) = (l.counters(), &self.at_start);
        // Points learned in this run, and the points of this run waiting
        // in the partial mini-batch or the warm-up buffer: the model's
        // growth (`emstream_model_points_seen`, the checkpoint's points) at
        // every moment, not only once the partial mini-batch is learned.
        // (Points a resumed checkpoint held waiting count when they are
        // learned.) A counter never falls: points dropped from a warm-up
        // buffer that could not be fitted stay counted.
        let waiting = (l.pending_points() as u64).saturating_sub(self.pending_at_start);
        let grown = now.points_seen.saturating_sub(at.points_seen) + waiting;
        self.counts.points = self.counts.points.max(grown);
        self.counts.outliers = now.outliers.saturating_sub(at.outliers);
        self.counts.reseeds = now.reseeds.saturating_sub(at.reseeds);
        self.counts.repairs = now.repairs.saturating_sub(at.repairs);
        self.counts.avg_log_lik = average_log_lik(now, at);
        self.counts.log_lik_points = now.log_lik_points.saturating_sub(at.log_lik_points);
        self.counts.log_lik_sum = now.log_lik_sum - at.log_lik_sum;
        if self.counts.first_log_lik.is_none() {
            self.counts.first_log_lik = self.counts.avg_log_lik;
        }
    }
}

/// Share of records that are not numbers at all (rejected for any reason
/// but a wrong field count or a torn network record) above which an input
/// is "not points" and the run fails (once
/// [`crate::config::REJECT_RATE_MIN_RECORDS`] were read): a binary file, a
/// random stream, the wrong format. Messy real data
/// with some bad lines stays far below it. Records of the wrong field count
/// are points read with the wrong options: `--max-reject-rate` judges them.
pub const NOT_POINTS_RATE: f64 = 0.9;

/// Whether `not_numbers` such rejects among `not_numbers + others` records
/// of this run say the input is not points ([`NOT_POINTS_RATE`]), with the
/// arithmetic of [`crate::config::reject_rate_exceeded`] while input still
/// arrives. Checked on every batch before it is learned, and before
/// `--max-reject-rate` (checked after it), so garbage never makes a model.
pub(crate) fn not_points_yet(not_numbers: u64, others: u64) -> bool {
    crate::config::reject_rate_exceeded(NOT_POINTS_RATE, others, not_numbers, false).is_some()
}

/// Average log-likelihood of the points scored since `at_start`.
pub(crate) fn average_log_lik(now: &Counters, at_start: &Counters) -> Option<f64> {
    let n = now.log_lik_points.checked_sub(at_start.log_lik_points)?;
    if n == 0 {
        return None;
    }
    let avg = (now.log_lik_sum - at_start.log_lik_sum) / n as f64;
    avg.is_finite().then_some(avg)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_is_of_this_run_only() {
        let before = Counters {
            log_lik_sum: -10.0,
            log_lik_points: 10,
            ..Counters::default()
        };
        let now = Counters {
            log_lik_sum: -40.0,
            log_lik_points: 20,
            ..Counters::default()
        };
        let avg = average_log_lik(&now, &before).unwrap();
        assert!((avg + 3.0).abs() < 1e-12);
        assert_eq!(average_log_lik(&before, &before), None);
    }

    #[test]
    fn long_header_text_is_shortened() {
        assert_eq!(truncate("abcdef", 3), "abc...");
        assert_eq!(truncate("ab", 3), "ab");
    }

    #[test]
    fn kept_rows_of_dropped_points_are_forgotten_and_the_rest_stay_aligned() {
        use crate::input::keep::KeptValue;
        let row = |line: u64| KeptRow {
            source: 0,
            line,
            message: None,
            values: vec![KeptValue::Text(format!("r{line}"))],
        };
        let mut q = KeptQueue::default();
        let mut batch: Vec<KeptRow> = (1..=5000).map(row).collect();
        q.receive(&mut batch);
        // A stuck warm-up holds only a few of the rows received.
        let held = [UNTAGGED, 3, 4990, 4995, 4999];
        q.prune(&held);
        assert_eq!(q.rows.len(), 4);
        q.prune(&held);
        assert_eq!(q.rows.len(), 4, "nothing more to forget");
        // Rows 3 and 4990 were dropped after all; 4995 and an untagged
        // point are scored: each line gets its own row's fields.
        q.scored = vec![UNTAGGED, 4995];
        let keep = KeepFormat::new(
            vec![
                crate::input::keep::KeepItem::Index(0),
                crate::input::keep::KeepItem::Line,
            ],
            false,
        );
        let state = RunState::new("stdin");
        let mut out = KeptPrefixes::default();
        q.format(&keep, &state, &mut out);
        assert_eq!(out.get(0), b",,");
        assert_eq!(out.get(1), b"r4996,4996,");
        assert_eq!(q.rows.len(), 1);
    }
}
