//! The reducer's rules, without any I/O: which statistics message is
//! applied to the group's model, and in what state that leaves it.
//!
//! A message for partition p covering stream sequences (after, last] is
//!
//! 1. a **duplicate** (skipped) when `last` is at or below p's watermark:
//!    those points are learned already;
//! 2. **refused as an overlap** (or a gap) when `after` is not p's
//!    watermark: applying it would learn some points twice or skip some;
//! 3. **refused as stale** when it was computed against a model more than
//!    τ revisions older than the current one (or a revision this model
//!    never had); the worker recomputes it. A revision is one step of the
//!    model: every applied batch makes the next one, so with τ = 0 every
//!    batch is computed against the model it is blended into, exactly as
//!    one process does;
//! 4. in lockstep, **refused as out of turn** unless p's turn has come;
//! 5. else **applied**: blended in with the step size of the global point
//!    count ([`StepwiseEm::apply`]), and p's watermark moves to `last`.
//!
//! So every partition's points are learned once, in order, whatever the
//! workers did (died, raced, retried, lagged), and the model is a
//! deterministic function of the statistics stream: a reducer that takes
//! over replays the stream after the committed sequence and reaches the
//! same model.

use crate::checkpoint::Checkpoint;
use crate::model::StepwiseEm;

use super::{GroupValue, StatsMsg, WIRE_VERSION};

/// What the reducer did with one statistics message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Blended into the model.
    Applied,
    /// Its points were learned already.
    Duplicate,
    /// It does not start right after the partition's watermark.
    Overlap,
    /// Computed against a model more than τ revisions old.
    Stale,
    /// Lockstep: not its partition's turn.
    NotTurn,
    /// A partition the group does not have.
    BadPartition,
    /// Applying it failed (M-step); its points are skipped and counted as
    /// refused, so the partition goes on.
    Failed,
}

/// Counts of [`Decision`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Applied.
    pub applied: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Overlaps (or gaps) refused.
    pub overlaps: u64,
    /// Stale statistics refused.
    pub stale: u64,
    /// Out of turn (lockstep).
    pub not_turn: u64,
    /// Unknown partition.
    pub bad_partition: u64,
    /// Failed to apply.
    pub failed: u64,
}

impl Tally {
    fn count(&mut self, d: Decision) {
        let c = match d {
            Decision::Applied => &mut self.applied,
            Decision::Duplicate => &mut self.duplicates,
            Decision::Overlap => &mut self.overlaps,
            Decision::Stale => &mut self.stale,
            Decision::NotTurn => &mut self.not_turn,
            Decision::BadPartition => &mut self.bad_partition,
            Decision::Failed => &mut self.failed,
        };
        *c += 1;
    }
}

/// The reducer's state: the model and where the group stands.
#[derive(Clone, Debug)]
pub struct Reduction {
    /// The model (with the run's checkpoint metadata).
    pub model: Checkpoint,
    /// The model's revision: batches applied (or failed) since the
    /// warm-up fit, which is revision 0.
    pub revision: u64,
    /// Last statistics sequence handled.
    pub stats_seq: u64,
    /// Per partition, the last stream sequence learned.
    pub watermarks: Vec<u64>,
    /// Lockstep: the partition whose batch is applied next.
    pub turn: Option<u32>,
    /// The group is finished.
    pub finished: bool,
    /// τ: the oldest revision accepted is `revision - tau`.
    pub tau: u64,
    /// Decisions taken since this reduction was made.
    pub tally: Tally,
}

impl Reduction {
    /// The state a committed `value` holds.
    ///
    /// # Errors
    ///
    /// The model's failed check.
    pub fn from_value(value: &GroupValue, tau: u64) -> Result<Self, super::GroupError> {
        Ok(Reduction {
            model: value.model()?,
            revision: value.revision,
            stats_seq: value.stats_seq,
            watermarks: value.watermarks.clone(),
            turn: value.turn,
            finished: value.finished,
            tau,
            tally: Tally::default(),
        })
    }

    /// The learner.
    pub fn learner(&self) -> &StepwiseEm {
        &self.model.learner
    }

    /// Decides on and, if it passes, applies the message at statistics
    /// sequence `seq`; see the module docs.
    pub fn offer(&mut self, seq: u64, msg: &StatsMsg) -> Decision {
        self.stats_seq = self.stats_seq.max(seq);
        let d = self.decide(msg);
        self.tally.count(d);
        d
    }

    fn decide(&mut self, msg: &StatsMsg) -> Decision {
        let p = msg.partition as usize;
        let Some(&watermark) = self.watermarks.get(p) else {
            return Decision::BadPartition;
        };
        if msg.last <= watermark {
            return Decision::Duplicate;
        }
        if msg.after != watermark {
            return Decision::Overlap;
        }
        if msg.revision > self.revision || self.revision - msg.revision > self.tau {
            return Decision::Stale;
        }
        if self.turn.is_some_and(|t| t != msg.partition) {
            return Decision::NotTurn;
        }
        let result = self.model.learner.apply(&msg.batch());
        self.watermarks[p] = msg.last;
        self.revision += 1;
        if let Some(t) = self.turn.as_mut() {
            *t = (*t + 1) % self.watermarks.len() as u32;
        }
        match result {
            Ok(()) => Decision::Applied,
            Err(_) => Decision::Failed,
        }
    }

    /// The value to commit (the model's replay positions set from the
    /// watermarks by `positions`).
    ///
    /// # Errors
    ///
    /// When the checkpoint cannot be encoded.
    pub fn next_value(
        &mut self,
        positions: Vec<crate::checkpoint::SourcePosition>,
    ) -> Result<GroupValue, super::GroupError> {
        self.model.sources = positions;
        self.model.updated_unix_ms = now_ms();
        let bytes = crate::checkpoint::to_bytes(&self.model)
            .map_err(|e| super::GroupError::new(e.to_string()))?;
        Ok(GroupValue {
            version: WIRE_VERSION,
            revision: self.revision,
            stats_seq: self.stats_seq,
            watermarks: self.watermarks.clone(),
            turn: self.turn,
            tau: self.tau,
            finished: self.finished,
            checkpoint: bytes,
        })
    }

    /// Points learned.
    pub fn points_seen(&self) -> u64 {
        self.model.learner.counters().points_seen
    }
}

/// A new group model's checkpoint: `learner` at `sources`, made now.
pub fn new_model(
    learner: StepwiseEm,
    sources: Vec<crate::checkpoint::SourcePosition>,
) -> Checkpoint {
    let now = now_ms();
    Checkpoint {
        learner,
        rejected: Default::default(),
        anomalies: 0,
        created_unix_ms: now,
        updated_unix_ms: now,
        sources,
        columns: None,
        selection: None,
    }
}

/// Now in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ComponentCount, Params};
    use rand::{Rng, SeedableRng};

    const D: usize = 2;

    fn points(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * D)
            .map(|i| {
                let centre = if (i / D).is_multiple_of(2) { 0.0 } else { 8.0 };
                centre + rng.random::<f64>()
            })
            .collect()
    }

    fn fitted() -> StepwiseEm {
        let params = Params {
            components: ComponentCount::Fixed(2),
            warmup: 100,
            batch_size: 10,
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut l = StepwiseEm::new(params, D);
        l.observe(&points(100, 1), None).unwrap();
        assert!(l.mixture().is_some());
        l
    }

    fn reduction(partitions: usize, tau: u64, lockstep: bool) -> Reduction {
        let learner = fitted();
        Reduction {
            model: new_model(learner, Vec::new()),
            revision: 0,
            stats_seq: 0,
            watermarks: vec![0; partitions],
            turn: lockstep.then_some(0),
            finished: false,
            tau,
            tally: Tally::default(),
        }
    }

    /// Statistics of 10 fresh points of `partition` covering (after, last]
    /// against the reduction's current model, labelled `revision`.
    fn msg(r: &Reduction, partition: u32, after: u64, last: u64, revision: u64) -> StatsMsg {
        let mut l = r.learner().clone();
        let b = l.batch_stats(&points(10, after * 31 + last)).unwrap();
        StatsMsg::new(partition, after, last, revision, 10, b)
    }

    #[test]
    fn a_batch_right_after_the_watermark_is_applied_once() {
        let mut r = reduction(2, 0, false);
        let before = r.points_seen();
        let m = msg(&r, 0, 0, 10, 0);
        assert_eq!(r.offer(1, &m), Decision::Applied);
        assert_eq!(r.watermarks, vec![10, 0]);
        assert_eq!(r.points_seen(), before + 10);
        // The same message again (a retry that escaped deduplication).
        assert_eq!(r.offer(2, &m), Decision::Duplicate);
        // The same range recomputed against another model: still learned.
        let again = msg(&r, 0, 0, 10, 0);
        assert_eq!(r.offer(3, &again), Decision::Duplicate);
        assert_eq!(r.points_seen(), before + 10);
        assert_eq!(r.stats_seq, 3);
        assert_eq!(r.tally.applied, 1);
        assert_eq!(r.tally.duplicates, 2);
    }

    #[test]
    fn a_batch_that_overlaps_or_leaves_a_gap_is_refused() {
        let mut r = reduction(1, 0, false);
        let first = msg(&r, 0, 0, 10, 0);
        assert_eq!(r.offer(1, &first), Decision::Applied);
        let model = r.learner().mixture().cloned();
        // Starts inside the learned range: would learn 5..10 twice.
        let overlap = msg(&r, 0, 5, 15, 1);
        assert_eq!(r.offer(2, &overlap), Decision::Overlap);
        // Starts past the watermark: would skip 10..12.
        let gap = msg(&r, 0, 12, 20, 1);
        assert_eq!(r.offer(3, &gap), Decision::Overlap);
        assert_eq!(r.watermarks, vec![10]);
        assert_eq!(
            r.learner().mixture().cloned(),
            model,
            "the model did not move"
        );
        let next = msg(&r, 0, 10, 20, 1);
        assert_eq!(r.offer(4, &next), Decision::Applied);
        assert_eq!(r.tally.overlaps, 2);
    }

    #[test]
    fn statistics_older_than_tau_revisions_are_refused() {
        let mut r = reduction(1, 2, false);
        r.revision = 5;
        let model = r.learner().mixture().cloned();
        assert_eq!(r.offer(1, &msg(&r, 0, 0, 10, 2)), Decision::Stale);
        // A revision this model never had (a reducer restarted from older).
        assert_eq!(r.offer(2, &msg(&r, 0, 0, 10, 6)), Decision::Stale);
        assert_eq!(r.learner().mixture().cloned(), model);
        assert_eq!(r.watermarks, vec![0]);
        // Exactly tau old is still accepted, and makes revision 6.
        assert_eq!(r.offer(3, &msg(&r, 0, 0, 10, 3)), Decision::Applied);
        assert_eq!(r.revision, 6);
        assert_eq!(r.offer(4, &msg(&r, 0, 10, 20, 3)), Decision::Stale);
        assert_eq!(r.tally.stale, 3);
    }

    #[test]
    fn lockstep_takes_the_partitions_in_turn() {
        let mut r = reduction(2, 0, true);
        assert_eq!(r.offer(1, &msg(&r, 1, 0, 10, 0)), Decision::NotTurn);
        assert_eq!(r.offer(2, &msg(&r, 0, 0, 10, 0)), Decision::Applied);
        assert_eq!(r.turn, Some(1));
        assert_eq!(r.offer(3, &msg(&r, 0, 10, 20, 1)), Decision::NotTurn);
        // tau = 0: only against the model it is blended into.
        assert_eq!(r.offer(4, &msg(&r, 1, 0, 10, 0)), Decision::Stale);
        assert_eq!(r.offer(5, &msg(&r, 1, 0, 10, 1)), Decision::Applied);
        assert_eq!(r.turn, Some(0));
        assert_eq!(r.offer(6, &msg(&r, 7, 0, 10, 2)), Decision::BadPartition);
    }

    #[test]
    fn the_committed_value_holds_the_state_and_reads_back() {
        let mut r = reduction(2, 1, false);
        let m = msg(&r, 1, 0, 10, 0);
        r.offer(4, &m);
        let v = r.next_value(Vec::new()).unwrap();
        assert_eq!((v.revision, v.stats_seq), (1, 4), "one batch applied");
        assert_eq!(v.watermarks, vec![0, 10]);
        let back = Reduction::from_value(&v, 1).unwrap();
        assert_eq!(back.points_seen(), r.points_seen());
        assert_eq!(back.learner().mixture(), r.learner().mixture());
    }
}
