//! The learner stage: one thread owns [`StepwiseEm`], learns from batches,
//! counts and reports bad records, hands score buffers to the score sink and
//! publishes checkpoint snapshots when they are due.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::console::{reason_text, Console, Metrics, SourceNames};
use super::parse::{recycle, Work};
use super::REPORTED_RECORDS;
use crate::checkpoint::Checkpoint;
use crate::input::{Batch, InputError, ParseError, RejectCounts};
use crate::model::{CheckedParams, Counters, LearnError, ScoreBuffer, StepwiseEm};

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
}

/// When mid-stream checkpoints are due.
#[derive(Clone, Debug, Default)]
pub(crate) struct Due {
    pub(crate) every: Option<u64>,
    pub(crate) interval: Option<Duration>,
}

/// Channels to the score sink: filled buffers out, empty ones back.
pub(crate) struct ScoreLink {
    pub(crate) filled: SyncSender<ScoreBuffer>,
    pub(crate) empty: Receiver<ScoreBuffer>,
    pub(crate) want_resp: bool,
}

/// Everything the learner thread owns.
pub(crate) struct Learner {
    pub(crate) params: CheckedParams,
    pub(crate) start: Start,
    pub(crate) work: Receiver<Work>,
    pub(crate) recycle: SyncSender<Batch>,
    pub(crate) snapshots: Option<watch::Sender<Option<Arc<Checkpoint>>>>,
    pub(crate) due: Due,
    pub(crate) score: Option<ScoreLink>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) console: Arc<Console>,
    pub(crate) names: Arc<SourceNames>,
}

/// What the learner thread hands back when its input has closed.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The learner (none if no valid point ever arrived and nothing was resumed).
    pub(crate) learner: Option<StepwiseEm>,
    /// Counters when the run started (zero for a new model).
    pub(crate) counters_at_start: Counters,
    /// Records rejected in this run.
    pub(crate) rejected: RejectCounts,
    /// Rejected records of earlier runs.
    pub(crate) rejected_before: RejectCounts,
    /// Anomalies of earlier runs.
    pub(crate) anomalies_before: u64,
    /// When the model was first created.
    pub(crate) created_unix_ms: u64,
    /// The bad record that stopped the run (`--on-error fail`).
    pub(crate) bad_record: Option<ParseError>,
    /// A learning error that stopped the run.
    pub(crate) learn_error: Option<LearnError>,
    /// Input that does not fit the parser configuration (a usage error).
    pub(crate) input_error: Option<InputError>,
}

impl Learner {
    /// Runs until the batch channel closes (after draining it), a learning
    /// error, or a fatal bad record; then learns from the pending partial
    /// batch ([`StepwiseEm::flush`]).
    pub(crate) fn run(mut self) -> Outcome {
        let counters_at_start = self
            .start
            .learner
            .as_ref()
            .map(|l| l.counters().clone())
            .unwrap_or_default();
        let mut learner = self.start.learner.take();
        let mut rejected = RejectCounts::default();
        let mut reported = 0usize;
        let mut headers_reported = 0usize;
        let mut bad_record = None;
        let mut learn_error = None;
        let mut input_error = None;
        let mut points_run: u64 = 0;
        let mut rejected_run: u64 = 0;
        let mut next_every = self.due.every;
        let mut next_time = self.due.interval.map(|i| Instant::now() + i);
        // Whether anything changed since the last snapshot.
        let mut dirty = false;

        loop {
            let received = match next_time {
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
            if let Some(Work { mut batch, fatal }) = received {
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
                            "skipped {} line {}: {}: {}",
                            self.names.name(e.source_id),
                            e.line,
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
                            self.names.name(*source),
                            truncate(text, 80)
                        ));
                    }
                }
                for (&reason, &n) in &batch.rejected.by_reason {
                    *rejected.by_reason.entry(reason).or_insert(0) += n;
                    rejected_run += n;
                    dirty = true;
                }
                if !batch.values.is_empty() && batch.dim > 0 {
                    let l = learner
                        .get_or_insert_with(|| StepwiseEm::new(self.params.clone(), batch.dim));
                    let n = (batch.values.len() / batch.dim) as u64;
                    let result = match &mut self.score {
                        Some(link) => {
                            let mut buf = link.empty.try_recv().unwrap_or_else(|_| ScoreBuffer {
                                want_resp: link.want_resp,
                                ..ScoreBuffer::default()
                            });
                            clear_scores(&mut buf);
                            let r = l.observe(&batch.values, Some(&mut buf));
                            if !buf.log_lik.is_empty() {
                                let _ = link.filled.send(buf);
                            }
                            r
                        }
                        None => l.observe(&batch.values, None),
                    };
                    if let Err(e) = result {
                        learn_error = Some(e);
                        break;
                    }
                    points_run += n;
                    dirty = true;
                    self.publish_metrics(l, &counters_at_start, points_run);
                }
                self.metrics.rejected.store(rejected_run, Ordering::Relaxed);
                recycle(&self.recycle, batch);
                if fatal.is_some() {
                    bad_record = fatal;
                    break;
                }
                if let Some(every) = self.due.every {
                    if next_every.is_some_and(|n| points_run >= n) {
                        next_every = Some((points_run / every + 1) * every);
                        self.snapshot(learner.as_ref(), &rejected, &mut dirty);
                    }
                }
            }
            if let (Some(at), Some(interval)) = (next_time, self.due.interval) {
                let now = Instant::now();
                if now >= at {
                    next_time = Some(now + interval);
                    self.snapshot(learner.as_ref(), &rejected, &mut dirty);
                }
            }
        }

        if learn_error.is_none() {
            if let Some(l) = learner.as_mut() {
                let result = match &mut self.score {
                    Some(link) => {
                        let mut buf = ScoreBuffer {
                            want_resp: link.want_resp,
                            ..ScoreBuffer::default()
                        };
                        let r = l.flush(Some(&mut buf));
                        if !buf.log_lik.is_empty() {
                            let _ = link.filled.send(buf);
                        }
                        r
                    }
                    None => l.flush(None),
                };
                if let Err(e) = result {
                    learn_error = Some(e);
                }
                let points = l.counters().points_seen - counters_at_start.points_seen;
                self.publish_metrics(l, &counters_at_start, points);
            }
        }
        Outcome {
            learner,
            counters_at_start,
            rejected,
            rejected_before: std::mem::take(&mut self.start.rejected),
            anomalies_before: self.start.anomalies,
            created_unix_ms: self.start.created_unix_ms,
            bad_record,
            learn_error,
            input_error,
        }
    }

    fn publish_metrics(&self, l: &StepwiseEm, at_start: &Counters, points: u64) {
        self.metrics.points.store(points, Ordering::Relaxed);
        if let Some(ll) = average_log_lik(l.counters(), at_start) {
            self.metrics
                .avg_log_lik
                .store(ll.to_bits(), Ordering::Relaxed);
        }
    }

    /// Publishes the current state for the checkpoint writer (if anything
    /// changed and there is a model to save).
    fn snapshot(&self, learner: Option<&StepwiseEm>, rejected: &RejectCounts, dirty: &mut bool) {
        let (Some(tx), Some(l)) = (&self.snapshots, learner) else {
            return;
        };
        if !*dirty {
            return;
        }
        *dirty = false;
        let ckpt = Checkpoint {
            learner: l.clone(),
            rejected: add_counts(&self.start.rejected, rejected),
            anomalies: self.start.anomalies + self.metrics.anomalies.load(Ordering::Relaxed),
            created_unix_ms: self.start.created_unix_ms,
            updated_unix_ms: super::unix_ms(),
        };
        tx.send_replace(Some(Arc::new(ckpt)));
    }
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

/// The sum of two reject tallies.
pub(crate) fn add_counts(a: &RejectCounts, b: &RejectCounts) -> RejectCounts {
    let mut sum = a.clone();
    for (&reason, &n) in &b.by_reason {
        *sum.by_reason.entry(reason).or_insert(0) += n;
    }
    sum
}

fn clear_scores(buf: &mut ScoreBuffer) {
    buf.labels.clear();
    buf.log_lik.clear();
    buf.resp.clear();
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
    use crate::input::RejectReason;

    #[test]
    fn counts_add_by_reason() {
        let mut a = RejectCounts::default();
        a.by_reason.insert(RejectReason::NotNumeric, 2);
        let mut b = RejectCounts::default();
        b.by_reason.insert(RejectReason::NotNumeric, 3);
        b.by_reason.insert(RejectReason::TooLong, 1);
        let s = add_counts(&a, &b);
        assert_eq!(s.by_reason[&RejectReason::NotNumeric], 5);
        assert_eq!(s.by_reason[&RejectReason::TooLong], 1);
    }

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
}
