//! [`StepwiseEm`]: the stepwise (online) EM learner.
//!
//! Points are buffered until the warm-up is full; the first model is fitted
//! on that buffer ([`super::init`]). From then on points are cut into
//! mini-batches of exactly `batch_size` (a partial batch waits for the next
//! call, so the model does not depend on how the caller slices the stream).
//! For each batch: E-step under the current model, batch statistics around
//! the current means, blend `s ← (1 − η_t) s + η_t ŝ`, closed-form M-step
//! (the steps of [`super::em`]; [`StepwiseEm::batch_stats`] and
//! [`StepwiseEm::apply`] expose the split a reducer of workers needs).
//! `η_t = max(η_min, (t + t0)^(−α))`, t counting batches with the warm-up
//! counted as `warmup / batch_size` batches.
//!
//! With `components = auto` the first fit chooses K by BIC on the warm-up
//! buffer ([`super::select`]) and the learner keeps how it chose
//! ([`StepwiseEm::selection`]). Every learner keeps its most recent points
//! in a bounded reservoir ([`RECENT_POINTS`], [`StepwiseEm::criteria`]);
//! with `adapt_components` it asks an [`Adapter`] after every mini-batch
//! whether K should change and, on a proposal, replaces its mixture and
//! statistics and counts the change ([`Counters::component_changes`],
//! [`StepwiseEm::last_change`]). The reservoir and the adapter's state are
//! part of [`LearnerState`], so resuming stays bit-identical.

use std::borrow::Cow;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::adapt::{AdaptParams, Adapter, AdapterState, Change, RecentPoints};
use super::em::{self, without_outliers, BatchStats, Engine, EngineState, Interrupt};
use super::init;
use super::kernels;
use super::mixture::GaussianMixture;
use super::params::ComponentCount;
use super::resolution::Resolution;
use super::select::{self, ModelSelection};
use super::stats::MixtureStats;

pub use super::em::{LearnError, ScoreBuffer, MAX_ABS, NO_LABEL, OUTLIER_SPREAD};
pub use super::params::{CheckedParams, ParamError, Params, MAX_COMPONENTS};

/// Points kept in the learner's recent-points reservoir: the BIC and AIC
/// of the current model are measured on it ([`StepwiseEm::criteria`]).
pub const RECENT_POINTS: usize = 2_000;

/// Points kept in the reservoir with `adapt_components`: the adaptation of
/// K judges its candidates on them ([`super::adapt`]). A component whose
/// cluster stops appearing is pruned once fewer than 10 of these points
/// are its own, so a few thousand points after the change; more points
/// would delay that, fewer would make the BIC of a merge or split noisier.
pub const ADAPT_RECENT_POINTS: usize = 2_500;

/// A reservoir capacity with `adapt_components` that a checkpoint may hold
/// besides [`ADAPT_RECENT_POINTS`]: that of the learners that judged on
/// 5,000 points. Such a learner resumes with its reservoir as it was (the
/// same K changes as had it not stopped), only slower to prune.
pub const FORMER_ADAPT_RECENT_POINTS: usize = 5_000;

/// A change of K made by the adaptation (`adapt_components`).
#[derive(Clone, Debug, PartialEq)]
pub struct KChange {
    /// What changed.
    pub change: Change,
    /// K before.
    pub from: usize,
    /// K after.
    pub to: usize,
    /// Points seen when it changed.
    pub points_seen: u64,
    /// BIC on the reservoir of the model before the change.
    pub bic_before: f64,
    /// BIC on the reservoir of the model after it.
    pub bic_after: f64,
}

/// Counters kept by the learner (and stored in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Points that entered the model (warm-up included).
    pub points_seen: u64,
    /// Mini-batch updates applied.
    pub updates: u64,
    /// Components re-seeded after their weight collapsed.
    pub reseeds: u64,
    /// Covariances repaired with extra regularisation.
    pub repairs: u64,
    /// Batches refused because they would have produced non-finite statistics.
    pub refused_batches: u64,
    /// Points in refused batches.
    pub refused_points: u64,
    /// Points left out of the statistics as gross outliers: a coordinate
    /// beyond ±1e150 (its square would overflow), or farther than
    /// [`OUTLIER_SPREAD`] times the data's overall spread from its centre
    /// (a glitching sensor's 1e100 must not drag a component away). They
    /// are still scored.
    pub outliers: u64,
    /// Sum of the log-likelihoods of learned points under the model before
    /// they were learned from (test-then-train), for the running average.
    pub log_lik_sum: f64,
    /// Points counted in `log_lik_sum`.
    pub log_lik_points: u64,
    /// Changes of K made by `adapt_components`.
    pub component_changes: u64,
}

impl Counters {
    /// Average test-then-train log-likelihood per point (NaN before any).
    pub fn avg_log_lik(&self) -> f64 {
        if self.log_lik_points == 0 {
            f64::NAN
        } else {
            self.log_lik_sum / self.log_lik_points as f64
        }
    }
}

/// The stepwise EM learner.
///
/// Its whole state (options, step counter, statistics, model, RNG, warm-up
/// buffer or pending partial batch, counters) can be taken out as a
/// [`LearnerState`] and put back ([`StepwiseEm::state`],
/// [`StepwiseEm::from_state`]), so a checkpoint resumes exactly where the
/// stream left off.
#[derive(Clone, Debug)]
pub struct StepwiseEm {
    params: CheckedParams,
    dim: usize,
    rng: ChaCha8Rng,
    /// Warm-up buffer before the first model, then the partial mini-batch.
    pending: Vec<f64>,
    /// Points of the partial mini-batch already scored when they arrived
    /// (not part of the saved state: a restored pending batch counts as
    /// scored, by the run that read it).
    scored: usize,
    /// Step counter t in batches (the warm-up counts as warmup/batch_size).
    step: f64,
    engine: Option<Engine>,
    stats: Option<MixtureStats>,
    mixture: Option<GaussianMixture>,
    /// The worst explained point of the last batch (re-seeding target).
    worst: Vec<f64>,
    counters: Counters,
    /// Threads of the E-step (not part of the state: any number learns
    /// the same bits).
    threads: usize,
    /// The most recent points learned from (bounded): BIC and AIC of the
    /// model, and the adaptation's judge.
    recent: RecentPoints,
    /// Keeps K right, with `adapt_components`.
    adapter: Option<Adapter>,
    /// How K was chosen, with `components = auto`.
    selection: Option<ModelSelection>,
    /// The last change of K in this process (for the run's log; not part
    /// of the state).
    last_change: Option<KChange>,
    /// The run's stop request, if shared ([`StepwiseEm::set_interrupt`]).
    interrupt: Option<Interrupt>,
    /// Told when a fit on the warm-up buffer starts and ends
    /// ([`StepwiseEm::set_fit_hook`]).
    fit_hook: Option<FitHook>,
    /// Warm-up points dropped while waiting for distinct points.
    warmup_dropped: u64,
    /// The last `warmup` points learned, for a re-fit after a regime change.
    regime_recent: std::collections::VecDeque<f64>,
    /// Points and gross outliers of the current regime window.
    window: (u64, u64),
    /// Leading points of the warm-up buffer already scored (a re-fit's).
    prescored: usize,
    /// Regime changes followed.
    regime_changes: u64,
    /// Row numbers of the points, when asked for ([`StepwiseEm::tag_rows`]).
    tags: Option<Box<RowTags>>,
    /// Reused by [`StepwiseEm::apply`] for the blended statistics (not
    /// part of the state).
    spare: MixtureStats,
    /// Each dimension's rounding step, and the variance floor it implies.
    resolution: Resolution,
    /// A `resolution` option that does not fit the dimension (reported by
    /// the first [`StepwiseEm::observe`]).
    resolution_error: Option<String>,
    /// A model fitted on a warm-up buffer that the input ended before
    /// filling ([`StepwiseEm::fit_provisional`]); dropped by the next point.
    provisional: Option<GaussianMixture>,
}

/// Called with `true` when a fit of a model on the warm-up buffer starts
/// (the first model, or the re-fit after a regime change) and with `false`
/// when it ends, however it ends ([`StepwiseEm::set_fit_hook`]).
#[derive(Clone)]
pub struct FitHook(pub std::sync::Arc<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for FitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FitHook")
    }
}

/// Calls a [`FitHook`] with `true` now and with `false` when dropped.
struct Fitting(Option<FitHook>);

impl Fitting {
    fn start(hook: Option<FitHook>) -> Self {
        if let Some(h) = &hook {
            (h.0)(true);
        }
        Fitting(hook)
    }
}

impl Drop for Fitting {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            (h.0)(false);
        }
    }
}

/// The row number [`StepwiseEm::take_scored_rows`] gives a point this
/// learner did not receive (a restored warm-up buffer's).
pub const UNTAGGED: u64 = u64::MAX;

/// Row numbers kept beside the points while they wait to be scored, so a
/// caller can tell which of its points each score belongs to
/// ([`StepwiseEm::tag_rows`]).
#[derive(Clone, Debug, Default)]
struct RowTags {
    /// The number the next point received gets.
    next: u64,
    /// One per point of `pending`.
    pending: Vec<u64>,
    /// One per point of `regime_recent`.
    recent: std::collections::VecDeque<u64>,
    /// One per point scored since the last [`StepwiseEm::take_scored_rows`].
    scored: Vec<u64>,
    /// Reused: the numbers of a batch taken straight from the input.
    batch: Vec<u64>,
    /// The numbers of points fed again, in order: the part of a warm-up
    /// buffer beyond the warm-up, learned after the first fit
    /// ([`StepwiseEm::observe_over_full`]; a restored buffer's are
    /// [`UNTAGGED`]). They keep their numbers rather than take new ones.
    ahead: std::collections::VecDeque<u64>,
}

/// Appends to `into` the numbers of the next `rows` points received, in
/// order: those fed again first (`ahead`), then new ones from `next` on.
fn number_rows(
    next: &mut u64,
    ahead: &mut std::collections::VecDeque<u64>,
    rows: usize,
    into: &mut Vec<u64>,
) {
    let again = rows.min(ahead.len());
    into.extend(ahead.drain(..again));
    let new = (rows - again) as u64;
    into.extend(*next..*next + new);
    *next += new;
}

/// Share of gross outliers in a window of `warmup` learned points above
/// which the stream has changed regime and the model is re-fitted on the
/// most recent points (see [`StepwiseEm::observe`]).
pub const REGIME_OUTLIER_RATE: f64 = 0.5;

/// Appends `new` to `ring`, keeping its last `cap` values: the regime
/// window's points (the last `warmup` learned, [`StepwiseEm::observe`]'s
/// re-fit after a regime change) and their row tags.
fn keep_last<T: Copy>(ring: &mut std::collections::VecDeque<T>, new: &[T], cap: usize) {
    // `extend` of a slice's `iter()` is one copy (std specialises it); of
    // `iter().copied()` it was a push per number, 3 % of the d = 32
    // learner. A piece at a time: see `kernels::copy`.
    for piece in new.chunks(kernels::PIECE) {
        ring.extend(piece.iter());
    }
    if ring.len() > cap {
        let extra = ring.len() - cap;
        ring.drain(..extra);
    }
}

/// Whether a regime window that has seen `(points, outliers)` so far can
/// still end in a re-fit ([`REGIME_OUTLIER_RATE`]), with batches of at
/// most `batch_size` rows: the window closes at the first batch that
/// brings it to `warmup` points, so at most `warmup − 1 + batch_size`, and
/// points that were not outliers only add up.
fn window_can_refit((n, o): (u64, u64), warmup: usize, batch_size: usize) -> bool {
    ((n - o) as f64) < (1.0 - REGIME_OUTLIER_RATE) * (warmup - 1 + batch_size) as f64
}

/// Capacity of the recent-points reservoir of a learner with `params`.
pub fn recent_capacity(params: &Params) -> usize {
    if params.adapt_components {
        ADAPT_RECENT_POINTS
    } else {
        RECENT_POINTS
    }
}

/// Options of the adaptation of K for a learner with `params`: K up to
/// `max_components` (or the fixed K, if larger), the learner's
/// regularisation, the rest [`AdaptParams::default`].
fn adapt_params(params: &Params) -> AdaptParams {
    AdaptParams {
        max_components: params
            .max_components
            .max(params.fixed_components().unwrap_or(1)),
        reg_covar: params.reg_covar,
        ..AdaptParams::default()
    }
}

impl StepwiseEm {
    /// A learner for points of dimension `dim`.
    ///
    /// # Panics
    ///
    /// When `dim` is 0.
    pub fn new(params: CheckedParams, dim: usize) -> Self {
        assert!(dim > 0, "dimension must be at least 1");
        let params = params.sized_for(dim);
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        let recent = RecentPoints::new(dim, recent_capacity(&params));
        let spare = MixtureStats::empty(params.covariance, dim, 0);
        let adapter = params
            .adapt_components
            .then(|| Adapter::new(adapt_params(&params)));
        let (resolution, resolution_error) = match Resolution::new(dim, &params.resolution.0) {
            Ok(r) => (r, None),
            Err(e) => (Resolution::continuous(dim), Some(e)),
        };
        StepwiseEm {
            resolution,
            resolution_error,
            provisional: None,
            pending: Vec::new(),
            scored: 0,
            recent,
            adapter,
            selection: None,
            last_change: None,
            params,
            dim,
            rng,
            step: 0.0,
            engine: None,
            stats: None,
            mixture: None,
            worst: vec![0.0; dim],
            counters: Counters::default(),
            threads: 1,
            interrupt: None,
            fit_hook: None,
            warmup_dropped: 0,
            regime_recent: std::collections::VecDeque::new(),
            window: (0, 0),
            prescored: 0,
            regime_changes: 0,
            tags: None,
            spare,
        }
    }

    /// Numbers the points from now on, in the order received (0, 1, ...),
    /// and keeps the numbers beside them, so that after each
    /// [`StepwiseEm::observe`] or [`StepwiseEm::flush`] with scores,
    /// [`StepwiseEm::take_scored_rows`] says which point each score line
    /// is. Points held before this call (a restored warm-up buffer) are
    /// [`UNTAGGED`]. Costs nothing unless called.
    pub fn tag_rows(&mut self) {
        if self.tags.is_none() {
            self.tags = Some(Box::new(RowTags {
                pending: vec![UNTAGGED; self.pending.len() / self.dim],
                ..RowTags::default()
            }));
        }
    }

    /// The row numbers ([`StepwiseEm::tag_rows`]) of the points scored
    /// since the last call, in the order of their scores; empty without
    /// tags. Warm-up points dropped unscored (too few distinct points)
    /// leave gaps.
    pub fn take_scored_rows(&mut self, into: &mut Vec<u64>) {
        into.clear();
        if let Some(t) = self.tags.as_mut() {
            std::mem::swap(into, &mut t.scored);
        }
    }

    /// The row numbers ([`StepwiseEm::tag_rows`]) of the points held, not
    /// yet learned (the warm-up buffer or the partial mini-batch), in
    /// order; empty without tags.
    pub fn held_rows(&self) -> &[u64] {
        self.tags.as_ref().map_or(&[], |t| &t.pending)
    }

    /// Tags: `rows` points were appended to `pending` from the input.
    fn tag_pending(&mut self, rows: usize) {
        if let Some(t) = self.tags.as_mut() {
            let RowTags {
                next,
                ahead,
                pending,
                ..
            } = &mut **t;
            number_rows(next, ahead, rows, pending);
        }
    }

    /// Tags: the pending points from row `from` on were scored.
    fn tag_scored_pending(&mut self, from: usize) {
        if let Some(t) = self.tags.as_mut() {
            let RowTags {
                pending, scored, ..
            } = &mut **t;
            scored.extend_from_slice(&pending[from.min(pending.len())..]);
        }
    }

    /// Runs the E-steps (the warm-up fit's and every mini-batch's) on
    /// `threads` threads; 0 and 1 mean the learner's own thread alone. The
    /// model is the same bits with any number ([`super::em::e_step`]), so
    /// this is not part of the learner's state.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        if let Some(e) = self.engine.as_mut() {
            e.set_threads(self.threads);
        }
    }

    /// Threads the E-steps run on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Feeds points (row-major, a whole number of rows); complete mini-batches
    /// are learned at once, a partial one is kept for the next call. When
    /// `scores` is given, every point is scored there under the model
    /// before it is learned from, in input order, and as soon as a model
    /// exists: the points of a partial mini-batch are scored on arrival
    /// (the model they are learned into is the current one, so the scores
    /// are those the batch's update would give), warm-up points once the
    /// first model is fitted. A live feed slower than a mini-batch sees each
    /// point's score at once.
    ///
    /// # Errors
    ///
    /// [`LearnError`] for a ragged slice or too few distinct warm-up points
    /// (the points are then kept, and a later call may succeed).
    pub fn observe(
        &mut self,
        points: &[f64],
        mut scores: Option<&mut ScoreBuffer>,
    ) -> Result<(), LearnError> {
        let d = self.dim;
        self.whole_rows(points)?;
        self.see_resolution(points)?;
        if !points.is_empty() {
            self.provisional = None;
        }
        if self.over_full() {
            return self.observe_over_full(points, scores);
        }
        let mut rest = points;
        // The outer loop comes back to the warm-up after a regime change.
        loop {
            while self.mixture.is_none() {
                // The buffer holds more than the warm-up after a stop
                // interrupted the fit (below).
                let want = (self.params.warmup * d).saturating_sub(self.pending.len());
                let take = want.min(rest.len());
                kernels::extend(&mut self.pending, &rest[..take]);
                self.tag_pending(take / d);
                rest = &rest[take..];
                if self.pending.len() < self.params.warmup * d {
                    return Ok(());
                }
                match self.initialise(scores.as_deref_mut()) {
                    Ok(()) => {}
                    // Data content never stops the learner: it makes room
                    // and waits for more varied points.
                    Err(LearnError::TooFewDistinct { .. }) => self.compress_warmup(),
                    // A stop interrupted the fit (or came before it): the
                    // points after the warm-up's are kept behind them in
                    // the buffer, in order, so that a checkpoint saved now
                    // holds every point received, and a resume fits on
                    // the warm-up's points and then learns these, as an
                    // uninterrupted run would ([`StepwiseEm::observe_over_full`]).
                    // A source that resumes from its saved position (a
                    // JetStream stream) loses nothing that way.
                    Err(LearnError::Interrupted) => {
                        kernels::extend(&mut self.pending, rest);
                        self.tag_pending(rest.len() / d);
                        return Err(LearnError::Interrupted);
                    }
                    Err(e) => return Err(e),
                }
            }
            let b = self.params.batch_size * d;
            if !self.pending.is_empty() {
                let take = (b - self.pending.len()).min(rest.len());
                kernels::extend(&mut self.pending, &rest[..take]);
                self.tag_pending(take / d);
                rest = &rest[take..];
                if self.pending.len() < b {
                    self.score_pending(scores);
                    return Ok(());
                }
                self.learn_pending(scores.as_deref_mut())?;
                if self.mixture.is_none() {
                    continue;
                }
            }
            while rest.len() >= b {
                let (batch, after) = rest.split_at(b);
                rest = after;
                if let Some(t) = self.tags.as_mut() {
                    let RowTags {
                        next, ahead, batch, ..
                    } = &mut **t;
                    batch.clear();
                    number_rows(next, ahead, self.params.batch_size, batch);
                }
                self.update(batch, scores.as_deref_mut(), None)?;
                if self.mixture.is_none() {
                    break;
                }
            }
            if self.mixture.is_none() {
                continue;
            }
            kernels::extend(&mut self.pending, rest);
            self.tag_pending(rest.len() / d);
            self.score_pending(scores);
            return Ok(());
        }
    }

    /// Takes the values of `points` into each dimension's resolution and,
    /// with a model, keeps the engine's variance floor up to date (a finer
    /// step lowers it). Costs nothing once every dimension is continuous.
    fn see_resolution(&mut self, points: &[f64]) -> Result<(), LearnError> {
        if let Some(e) = &self.resolution_error {
            return Err(LearnError::Resolution(e.clone()));
        }
        if !self.resolution.watching() {
            return Ok(());
        }
        self.resolution
            .observe(points)
            .map_err(|e| LearnError::Resolution(e.to_string()))?;
        if let Some(engine) = self.engine.as_mut() {
            self.resolution.settle(engine.scale());
            let floor = self.resolution.floor();
            if !floor.iter().all(|f| *f == 0.0) || !engine.floor().is_empty() {
                engine.set_floor(&floor);
                if let Some(a) = self.adapter.as_mut() {
                    a.set_floor(engine.floor());
                }
            }
        }
        Ok(())
    }

    /// Each dimension's rounding step.
    pub fn resolution(&self) -> &Resolution {
        &self.resolution
    }

    /// The model fitted on a warm-up buffer that the input ended before
    /// filling ([`StepwiseEm::fit_provisional`]), if any.
    pub fn provisional(&self) -> Option<&GaussianMixture> {
        self.provisional.as_ref()
    }

    /// At the end of a finite input shorter than the warm-up: fits a model
    /// on the warm-up buffer as the warm-up would, without ending the
    /// warm-up (the buffer is kept, so that more points, after a resume,
    /// go on filling it and the warm-up's own fit comes as usual). The
    /// model is kept beside the buffer ([`StepwiseEm::provisional`],
    /// stored in checkpoints) until the next point arrives. Nothing
    /// happens with a model, an empty buffer, or after a stop request.
    ///
    /// # Errors
    ///
    /// As the warm-up fit (too few distinct points, a scale out of range).
    pub fn fit_provisional(&mut self) -> Result<(), LearnError> {
        if self.mixture.is_some() || self.pending.is_empty() || self.interrupted() {
            return Ok(());
        }
        let m = self.model_or_fit()?.into_owned();
        self.provisional = Some(m);
        Ok(())
    }

    /// Restores a provisional model ([`StepwiseEm::fit_provisional`]).
    ///
    /// # Errors
    ///
    /// [`LearnError::InvalidState`] when the learner has a model of its
    /// own, no warm-up points, or `m` does not fit its dimension and
    /// covariance type.
    pub fn set_provisional(&mut self, m: Option<GaussianMixture>) -> Result<(), LearnError> {
        if let Some(m) = &m {
            if self.mixture.is_some() || self.pending.is_empty() {
                return Err(LearnError::InvalidState(
                    "a provisional model beside a fitted model or an empty warm-up buffer".into(),
                ));
            }
            if m.dim() != self.dim || m.covariance_type() != self.params.covariance {
                return Err(LearnError::InvalidState(format!(
                    "the provisional model is of dimension {} with {} covariances, the learner of dimension {} with {}",
                    m.dim(),
                    m.covariance_type(),
                    self.dim,
                    self.params.covariance
                )));
            }
        }
        self.provisional = m;
        Ok(())
    }

    /// Before the first model, a buffer holding more than the warm-up's
    /// points (a stop interrupted the first fit and the points received
    /// after the warm-up's were kept behind them), and no stop requested.
    fn over_full(&self) -> bool {
        self.mixture.is_none()
            && self.pending.len() > self.params.warmup * self.dim
            && !self.interrupted()
    }

    /// [`StepwiseEm::observe`] for an [over-full](StepwiseEm::over_full)
    /// buffer (a restored one): the first model is fitted on the warm-up's
    /// points, then the points kept behind them are learned in order, then
    /// `points`: the same calls, so the same model, as one uninterrupted
    /// run receiving all of them.
    fn observe_over_full(
        &mut self,
        points: &[f64],
        mut scores: Option<&mut ScoreBuffer>,
    ) -> Result<(), LearnError> {
        let full = self.params.warmup * self.dim;
        let behind = self.pending.split_off(full);
        if let Some(t) = self.tags.as_mut() {
            let held = t.pending.split_off(self.params.warmup);
            // Before any number still to come: they come first.
            for id in held.into_iter().rev() {
                t.ahead.push_front(id);
            }
        }
        match self.observe(&behind, scores.as_deref_mut()) {
            // Interrupted again: `behind` is back in the buffer, and so
            // will `points` be.
            Ok(()) | Err(LearnError::Interrupted) => self.observe(points, scores),
            Err(e) => Err(e),
        }
    }

    /// Follows a regime change: judged once per window of `warmup` points
    /// learned; when more than [`REGIME_OUTLIER_RATE`] of a window's
    /// points were gross outliers (the stream moved or changed scale far
    /// beyond the model), the model is dropped and re-fitted on the most
    /// recent `warmup` points, as a new warm-up. So the model follows
    /// within two warm-ups of points of a change (one window to notice,
    /// the re-fit right after it), whatever `--step-floor` says.
    ///
    /// The batch's points are already in the window
    /// ([`keep_last`], beside the E-step).
    fn watch_regime(&mut self, batch: &[f64], batch_ids: Option<&[u64]>, outliers: u64) {
        let d = self.dim;
        if let Some(t) = self.tags.as_mut() {
            keep_last(
                &mut t.recent,
                batch_ids.unwrap_or(&t.batch),
                self.params.warmup,
            );
        }
        self.window.0 += (batch.len() / d) as u64;
        self.window.1 += outliers;
        if self.window.0 < self.params.warmup as u64 {
            return;
        }
        let (n, o) = std::mem::take(&mut self.window);
        if !(o as f64 > REGIME_OUTLIER_RATE * n as f64) {
            return;
        }
        self.regime_changes += 1;
        self.engine = None;
        self.stats = None;
        self.mixture = None;
        self.pending = self.regime_recent.drain(..).collect();
        if let Some(t) = self.tags.as_mut() {
            t.pending = t.recent.drain(..).collect();
        }
        // Those points were scored (and counted) when they arrived.
        self.prescored = self.pending.len() / d;
        self.scored = 0;
    }

    /// Regime changes followed by this learner ([`StepwiseEm::observe`]
    /// re-fits when most recent points are gross outliers), in its life
    /// (not stored in checkpoints).
    pub fn regime_changes(&self) -> u64 {
        self.regime_changes
    }

    /// A full warm-up buffer that could not be fitted (too few distinct
    /// usable points): duplicates are dropped (the first copy of each
    /// point kept, in order); if that frees nothing (many distinct points,
    /// but too few usable ones), the older half is dropped. Either way the
    /// next points have room, so the warm-up always makes progress.
    fn compress_warmup(&mut self) {
        let d = self.dim;
        let before = self.pending.len() / d;
        let mut kept: Vec<f64> = Vec::with_capacity(self.pending.len());
        let mut seen: std::collections::HashSet<Vec<u64>> = std::collections::HashSet::new();
        let mut prescored: usize = 0;
        let mut ids = self.tags.as_mut().map(|t| std::mem::take(&mut t.pending));
        let mut kept_ids = Vec::new();
        for (i, x) in self.pending.chunks_exact(d).enumerate() {
            if seen.insert(x.iter().map(|v| v.to_bits()).collect()) {
                kept.extend_from_slice(x);
                if let Some(ids) = ids.as_deref() {
                    kept_ids.push(ids[i]);
                }
                if i < self.prescored {
                    prescored += 1;
                }
            }
        }
        if kept.len() >= self.params.warmup * d {
            let half = (kept.len() / d / 2).max(1);
            kept.drain(..half * d);
            kept_ids.drain(..half.min(kept_ids.len()));
            prescored = prescored.saturating_sub(half);
        }
        if let (Some(t), Some(ids)) = (self.tags.as_mut(), ids.as_mut()) {
            ids.clear();
            ids.extend_from_slice(&kept_ids);
            t.pending = std::mem::take(ids);
        }
        self.prescored = prescored;
        self.warmup_dropped += (before - kept.len() / d) as u64;
        self.pending = kept;
    }

    /// Points dropped from the warm-up buffer while waiting for enough
    /// distinct usable points (duplicates, or the older half), in this
    /// learner's life (not stored in checkpoints).
    pub fn warmup_dropped(&self) -> u64 {
        self.warmup_dropped
    }

    /// Shares a stop request with the learner: once `flag` is set, a
    /// warm-up fit in progress stops at its next M-step (the buffer is
    /// kept, [`LearnError::Interrupted`]), and [`StepwiseEm::flush`] no
    /// longer fits a warm-up buffer that never filled.
    pub fn set_interrupt(&mut self, flag: Interrupt) {
        self.interrupt = Some(flag);
    }

    /// Tells `hook` when a fit on the warm-up buffer starts and ends: the
    /// first model's, and a re-fit after a regime change, which may come
    /// in any call of [`StepwiseEm::observe`] (the fit takes no points
    /// meanwhile; the pipeline reads ahead and counts the time as busy).
    /// Not part of the state, and not called by the fit on a copy that
    /// [`StepwiseEm::model_or_fit`] makes.
    pub fn set_fit_hook(&mut self, hook: FitHook) {
        self.fit_hook = Some(hook);
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Scores the points of the partial mini-batch not scored yet, under
    /// the current model.
    fn score_pending(&mut self, scores: Option<&mut ScoreBuffer>) {
        let (Some(scores), Some(engine), Some(mix)) =
            (scores, self.engine.as_mut(), self.mixture.as_ref())
        else {
            return;
        };
        let rows = self.pending.len() / self.dim;
        if rows > self.scored {
            engine.e_step(mix, &self.pending[self.scored * self.dim..], Some(scores));
            let from = self.scored;
            self.scored = rows;
            self.tag_scored_pending(from);
        }
    }

    /// End of stream: learns from the pending partial batch (its step scaled
    /// by its share of a full batch). A warm-up buffer that never filled is
    /// kept unfitted (still the warm-up phase): a model fitted on the few
    /// points of an unfinished warm-up would be a poor start that a resume
    /// keeps, while a resume that goes on filling the buffer ends where
    /// one uninterrupted run does. [`StepwiseEm::model_or_fit`] fits such
    /// a buffer on the fly for reports. A full buffer (the re-fit after a
    /// regime change in the last batch) is fitted, unless a stop was
    /// requested ([`StepwiseEm::set_interrupt`]) or it holds too few
    /// distinct points.
    ///
    /// # Errors
    ///
    /// [`LearnError::MStep`] when the final batch's M-step fails.
    pub fn flush(&mut self, scores: Option<&mut ScoreBuffer>) -> Result<(), LearnError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut scores = scores;
        if self.over_full() {
            // A restored buffer beyond the warm-up, and no more points.
            self.observe(&[], scores.as_deref_mut())?;
            return self.flush(scores);
        }
        if self.mixture.is_none() {
            if !self.fits_at_flush() {
                return Ok(());
            }
            return match self.initialise(scores) {
                Err(LearnError::TooFewDistinct { .. } | LearnError::Interrupted) => Ok(()),
                r => r,
            };
        }
        self.learn_pending(scores.as_deref_mut())?;
        if self.mixture.is_none() {
            // The last batch completed a regime change: re-fit now.
            return self.flush(scores);
        }
        Ok(())
    }

    /// Whether [`StepwiseEm::flush`] would fit a model now: no model yet, a
    /// full warm-up buffer (or one beyond it, a stopped fit's), and no
    /// stop requested.
    pub fn fits_at_flush(&self) -> bool {
        self.fits_with(0)
    }

    /// Whether [`StepwiseEm::observe`] of `rows` more points would fit the
    /// first model: no model yet, those points fill the warm-up buffer, and
    /// no stop requested (a fit asked to stop returns at once, fitting
    /// nothing). A re-fit after a regime change inside the call cannot be
    /// foreseen.
    pub fn fits_with(&self, rows: usize) -> bool {
        self.mixture.is_none()
            && self.pending.len() / self.dim + rows >= self.params.warmup
            && !self.interrupted()
    }

    /// The model, or for a learner still in its warm-up the model its
    /// buffer gives when fitted now, as a full warm-up would be (on a copy:
    /// this learner is unchanged, and the same state always gives the same
    /// fit). What `inspect`, `score`, `plot` and `diff` show of a
    /// checkpoint saved during the warm-up (end of input, or a stop, before
    /// the buffer filled).
    ///
    /// # Errors
    ///
    /// [`LearnError::NotFitted`] for an empty buffer, else why the buffer
    /// cannot be fitted (e.g. [`LearnError::TooFewDistinct`]).
    pub fn model_or_fit(&self) -> Result<Cow<'_, GaussianMixture>, LearnError> {
        if let Some(m) = self.mixture.as_ref().or(self.provisional.as_ref()) {
            return Ok(Cow::Borrowed(m));
        }
        if self.pending.is_empty() {
            return Err(LearnError::NotFitted);
        }
        let mut copy = self.clone();
        copy.interrupt = None;
        copy.fit_hook = None;
        if copy.over_full() {
            // Fitted on the warm-up's points, then the rest learned, as a
            // resume does (a partial mini-batch left waiting).
            copy.observe(&[], None)?;
        }
        if copy.mixture.is_none() {
            copy.initialise(None)?;
        }
        copy.mixture.map(Cow::Owned).ok_or(LearnError::NotFitted)
    }

    /// Learns from the pending (full or final partial) batch and empties
    /// it, keeping its allocation.
    /// The points scored on arrival ([`StepwiseEm::score_pending`]) are
    /// not scored again.
    fn learn_pending(&mut self, scores: Option<&mut ScoreBuffer>) -> Result<(), LearnError> {
        let batch = std::mem::take(&mut self.pending);
        let done = std::mem::take(&mut self.scored);
        let ids = self.tags.as_mut().map(|t| std::mem::take(&mut t.pending));
        let tags_at = self.tags.as_ref().map_or(0, |t| t.scored.len());
        let learned = match scores {
            Some(sc) => {
                let (at, resp_at) = (sc.log_lik.len(), sc.resp.len());
                let learned = self.update(&batch, Some(&mut *sc), ids.as_deref());
                if done > 0 && sc.log_lik.len() >= at + done {
                    sc.labels.drain(at..at + done);
                    sc.log_lik.drain(at..at + done);
                    if sc.resp.len() > resp_at {
                        let k = (sc.resp.len() - resp_at) / (batch.len() / self.dim);
                        sc.resp.drain(resp_at..resp_at + done * k);
                    }
                    if let Some(t) = self.tags.as_mut() {
                        let end = (tags_at + done).min(t.scored.len());
                        t.scored.drain(tags_at..end);
                    }
                }
                learned
            }
            None => self.update(&batch, None, ids.as_deref()),
        };
        // The numbers' allocation goes back, unless a regime change
        // re-filled the pending points.
        if let (Some(t), Some(mut ids)) = (self.tags.as_mut(), ids) {
            if self.pending.is_empty() {
                ids.clear();
                t.pending = ids;
            }
        }
        // After a regime change the pending points are the re-fit's.
        if self.pending.is_empty() {
            self.pending = batch;
            self.pending.clear();
        }
        learned
    }

    fn initialise(&mut self, scores: Option<&mut ScoreBuffer>) -> Result<(), LearnError> {
        if self.interrupted() {
            return Err(LearnError::Interrupted);
        }
        // As early as possible: the parser reads ahead from now on.
        let fitting = Fitting::start(self.fit_hook.clone());
        let d = self.dim;
        em::check_scale(&self.pending, d)?;
        let buf = std::mem::take(&mut self.pending);
        // Gross outliers (a glitch of 1e300) would wreck the data's scale
        // and the first fit: fit on the rest, score them all.
        let kept = without_outliers(&buf, d);
        let mut engine = Engine::new(d, self.params.covariance, &kept, self.params.reg_covar);
        // Steps too fine for the data's spread are continuous values.
        self.resolution.settle(engine.scale());
        engine.set_floor(&self.resolution.floor());
        if let Some(a) = self.adapter.as_mut() {
            a.set_floor(engine.floor());
        }
        engine.set_threads(self.threads);
        // An interrupted fit leaves no trace: the random numbers it drew
        // are drawn again by the fit a resume makes.
        let rng = self.rng.clone();
        // A stop request ends the fit early (the buffer is kept).
        engine.set_interrupt(self.interrupt.clone());
        let p = &self.params;
        let fitted = match p.components {
            ComponentCount::Fixed(k) => {
                init::fit_warmup(&mut engine, &kept, p, k, &mut self.rng).map(|(s, m)| (s, m, None))
            }
            ComponentCount::Auto => {
                select::fit_auto(&mut engine, &kept, p, p.max_components, &mut self.rng)
                    .map(|(s, m, sel)| (s, m, Some(sel)))
            }
        };
        engine.set_interrupt(None);
        drop(fitting);
        let fitted = match fitted {
            Ok(_) if self.interrupted() => Err(LearnError::Interrupted),
            f => f,
        };
        let (stats, mix, selection) = match fitted {
            Ok(v) => v,
            Err(e) => {
                if matches!(e, LearnError::Interrupted) {
                    self.rng = rng;
                }
                self.pending = buf;
                return Err(e);
            }
        };
        // Score the warm-up points under the first model, in order; after
        // a regime change the re-fit's points were scored on arrival.
        let pre = self.prescored.min(buf.len() / d) * d;
        let before = (pre > 0).then(|| engine.e_step(&mix, &buf[..pre], None));
        let tagged = scores.is_some();
        let e = engine.e_step(&mix, &buf[pre..], scores);
        if tagged {
            self.tag_scored_pending(pre / d);
        }
        let used = e.used();
        let fitted_on = used + before.as_ref().map_or(0, BatchStats::used);
        let mut stats = MixtureStats {
            points: (kept.len() / d) as f64,
            ..stats
        };
        let mix = match engine.m_step(&mut stats) {
            Ok(m) => m,
            Err(err) => {
                self.pending = buf;
                return Err(err);
            }
        };
        if e.worst.len() == d {
            self.worst.copy_from_slice(&e.worst);
        }
        self.counters.log_lik_sum += e.ll_sum;
        self.counters.log_lik_points += used;
        self.counters.points_seen += used;
        self.counters.outliers += e.outliers;
        self.step = fitted_on as f64 / self.params.batch_size as f64;
        self.prescored = 0;
        self.counters.repairs = engine.repairs();
        self.counters.reseeds = engine.reseeds();
        self.engine = Some(engine);
        self.stats = Some(stats);
        self.mixture = Some(mix);
        self.selection = selection;
        self.recent.push(&kept);
        self.pending = buf;
        self.pending.clear();
        if let Some(t) = self.tags.as_mut() {
            t.pending.clear();
        }
        Ok(())
    }

    /// Checks that `points` is a whole number of rows.
    fn whole_rows(&self, points: &[f64]) -> Result<(), LearnError> {
        if !points.len().is_multiple_of(self.dim) {
            return Err(LearnError::Ragged {
                len: points.len(),
                dim: self.dim,
            });
        }
        Ok(())
    }

    /// Step size for the next batch of `n` points.
    fn eta(&self, n: u64) -> f64 {
        let p = &self.params;
        em::step_size(
            self.step,
            n as f64,
            p.batch_size,
            p.step_decay,
            p.step_offset,
            p.step_floor,
        )
    }

    /// One stepwise EM update from one batch: E-step under the current
    /// model, then [`StepwiseEm::apply`].
    ///
    /// `batch_ids` are the batch's row numbers with tags on
    /// ([`StepwiseEm::tag_rows`]); `None` means `RowTags::batch`.
    fn update(
        &mut self,
        batch: &[f64],
        scores: Option<&mut ScoreBuffer>,
        batch_ids: Option<&[u64]>,
    ) -> Result<(), LearnError> {
        let (Some(engine), Some(mix)) = (self.engine.as_mut(), self.mixture.as_ref()) else {
            return Err(LearnError::NotFitted);
        };
        let tagged = scores.is_some();
        // The regime window's copy of the batch is made beside the E-step
        // (on another thread when there are several), the recent-points
        // reservoir's beside the M-step: neither reads what those compute
        // (the reservoir only the E-step's outlier flags, final by then).
        // Only while this regime window can still end in a re-fit: once it
        // holds half a window and a batch of points that were not gross
        // outliers, it cannot (the re-fit needs more than half of its
        // points to be), and its last points are never read; the next
        // window copies afresh. (Three batches of five are copied in a
        // steady stream.)
        // The bound needs batches of at most `batch_size` rows, as
        // `observe` and `flush` make them.
        debug_assert!(batch.len() <= self.params.batch_size * self.dim);
        let can_refit = window_can_refit(self.window, self.params.warmup, self.params.batch_size);
        let (cap, window) = (self.params.warmup * self.dim, &mut self.regime_recent);
        let mut remember = || keep_last(window, batch, cap);
        let side: em::Beside<'_> = if can_refit { Some(&mut remember) } else { None };
        let e = engine.e_step_beside(mix, batch, scores, side);
        if let (true, Some(t)) = (tagged, self.tags.as_mut()) {
            let RowTags {
                scored, batch: b, ..
            } = &mut **t;
            scored.extend_from_slice(batch_ids.unwrap_or(b));
        }
        let flags = engine.take_outlier_flags();
        let mut recent = std::mem::replace(&mut self.recent, RecentPoints::new(self.dim, 1));
        let d = self.dim;
        let mut keep = || {
            for run in em::runs_of(batch, d, &flags) {
                recent.push(run);
            }
        };
        let applied = self.apply_beside(&e, Some(&mut keep));
        self.recent = recent;
        if let Some(engine) = self.engine.as_mut() {
            engine.return_outlier_flags(flags);
        }
        applied?;
        self.adapt();
        let outliers = e.outliers;
        if let Some(engine) = self.engine.as_mut() {
            engine.recycle_batch(e);
        }
        self.watch_regime(batch, batch_ids, outliers);
        Ok(())
    }

    /// With `adapt_components`, asks the adapter whether K should change
    /// and applies its proposal: the new mixture and statistics replace
    /// the current ones, the change is counted and kept for the log.
    fn adapt(&mut self) {
        let (Some(adapter), Some(mix), Some(stats)) = (
            self.adapter.as_mut(),
            self.mixture.as_ref(),
            self.stats.as_ref(),
        ) else {
            return;
        };
        let seen = self.counters.points_seen;
        let Some(p) = adapter.propose(mix, stats, &self.recent, seen) else {
            return;
        };
        self.last_change = Some(KChange {
            change: p.change,
            from: mix.n_components(),
            to: p.mixture.n_components(),
            points_seen: seen,
            bic_before: p.bic_before,
            bic_after: p.bic_after,
        });
        self.mixture = Some(p.mixture);
        self.stats = Some(p.stats);
        self.counters.component_changes += 1;
    }

    /// E-step statistics of `points` (a whole number of rows) against the
    /// current model, without learning from them: what a worker computes
    /// for a reducer. Statistics of disjoint batches against the same
    /// model combine with [`BatchStats::merge`].
    ///
    /// # Errors
    ///
    /// [`LearnError::Ragged`] for a ragged slice, [`LearnError::NotFitted`]
    /// before the first model.
    pub fn batch_stats(&mut self, points: &[f64]) -> Result<BatchStats, LearnError> {
        self.whole_rows(points)?;
        let (Some(engine), Some(mix)) = (self.engine.as_mut(), self.mixture.as_ref()) else {
            return Err(LearnError::NotFitted);
        };
        Ok(engine.e_step(mix, points, None))
    }

    /// Learns from (possibly merged) batch statistics computed against the
    /// current model: blends them in with the step size of the global
    /// point count (the step counter advances by `used / batch_size`
    /// batches, a merged batch of m full batches counting m), re-seeds dead
    /// components, runs the M-step. A batch with non-finite statistics is
    /// refused and counted; one with no usable point only counts its
    /// outliers. [`StepwiseEm::observe`] is `batch_stats` + `apply` per
    /// mini-batch.
    ///
    /// # Errors
    ///
    /// [`LearnError::NotFitted`] before the first model,
    /// [`LearnError::Incompatible`] when K, d or the covariance type of
    /// `batch` differ from the model's, [`LearnError::MStep`] when the
    /// M-step fails (the model is then unchanged).
    pub fn apply(&mut self, batch: &BatchStats) -> Result<(), LearnError> {
        self.apply_beside(batch, None)
    }

    /// [`StepwiseEm::apply`] with `side` done beside its M-step, or
    /// before it returns when there is none ([`em::Beside`]).
    fn apply_beside(
        &mut self,
        batch: &BatchStats,
        mut side: em::Beside<'_>,
    ) -> Result<(), LearnError> {
        let applied = self.apply_inner(batch, &mut side);
        em::run_beside(&mut side);
        applied
    }

    fn apply_inner(
        &mut self,
        batch: &BatchStats,
        side: &mut em::Beside<'_>,
    ) -> Result<(), LearnError> {
        let d = self.dim;
        let used = batch.used();
        let eta = self.eta(used);
        let (Some(engine), Some(stats)) = (self.engine.as_mut(), self.stats.as_mut()) else {
            return Err(LearnError::NotFitted);
        };
        let s = &batch.stats;
        em::same_shape(stats, s)?;
        self.counters.outliers += batch.outliers;
        if used == 0 {
            return Ok(());
        }
        if !s.is_finite() || !batch.ll_sum.is_finite() || batch.worst.len() != d {
            self.counters.refused_batches += 1;
            self.counters.refused_points += used;
            return Ok(());
        }
        // Blended into reused memory: `stats` stays as it was if the
        // M-step fails.
        let next = &mut self.spare;
        next.blend_from(stats, s, eta);
        let memory = self.params.batch_size as f64 / eta.max(1e-300);
        engine.reseed_dead(next, memory, &batch.worst);
        let mix = engine.m_step_beside(next, side);
        let c = &mut self.counters;
        c.repairs = engine.repairs();
        c.reseeds = engine.reseeds();
        let mix = mix?;
        self.worst.copy_from_slice(&batch.worst);
        std::mem::swap(stats, next);
        if let Some(old) = self.mixture.replace(mix) {
            engine.recycle(old);
        }
        self.step += used as f64 / self.params.batch_size as f64;
        c.points_seen += used;
        c.updates += 1;
        c.log_lik_sum += batch.ll_sum;
        c.log_lik_points += used;
        Ok(())
    }

    /// The current mixture, once the warm-up is over.
    pub fn mixture(&self) -> Option<&GaussianMixture> {
        self.mixture.as_ref()
    }

    /// The checked parameters.
    pub fn params(&self) -> &CheckedParams {
        &self.params
    }

    /// Dimension of the points.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How K was chosen, when `components` is `auto` and the warm-up is
    /// over (or as a checkpoint recorded it).
    pub fn selection(&self) -> Option<&ModelSelection> {
        self.selection.as_ref()
    }

    /// Sets the record of how K was chosen (a checkpoint written before
    /// the learner kept it keeps it beside).
    pub fn set_selection(&mut self, selection: Option<ModelSelection>) {
        self.selection = selection;
    }

    /// The last change of K made by `adapt_components` in this process.
    pub fn last_change(&self) -> Option<&KChange> {
        self.last_change.as_ref()
    }

    /// The recent-points reservoir (the last [`RECENT_POINTS`] points, or
    /// [`ADAPT_RECENT_POINTS`] with `adapt_components`, gross outliers
    /// left out).
    pub fn recent(&self) -> &RecentPoints {
        &self.recent
    }

    /// BIC and AIC of the current model on the recent-points reservoir,
    /// once there is a model: comparable across runs with different K on
    /// the same stream.
    pub fn criteria(&self) -> Option<select::Criteria> {
        let mix = self.mixture.as_ref()?;
        let floor = self.engine.as_ref().map_or(&[][..], |e| e.floor());
        Some(select::Criteria::of_rounded(
            mix,
            self.recent.points(),
            floor,
        ))
    }

    /// Points the model holds: those learned from (`points_seen`) and
    /// those waiting in the warm-up buffer or the partial mini-batch (what
    /// `emstream_model_points_seen` reports, so that it agrees with the
    /// checkpoint before the partial mini-batch is learned).
    pub fn points_held(&self) -> u64 {
        self.counters.points_seen + self.pending_points() as u64
    }

    /// Points waiting in the warm-up buffer or the partial mini-batch.
    pub fn pending_points(&self) -> usize {
        self.pending.len() / self.dim
    }

    /// Running sufficient statistics, once the warm-up is over.
    pub fn stats(&self) -> Option<&MixtureStats> {
        self.stats.as_ref()
    }

    /// The step counter t (in batches).
    pub fn step(&self) -> f64 {
        self.step
    }

    /// Number of components K of the model, once there is one (K comes
    /// from the model: `params().components` only seeds the first fit, and
    /// `adapt_components` changes it).
    pub fn n_components(&self) -> Option<usize> {
        self.mixture.as_ref().map(GaussianMixture::n_components)
    }

    /// The learner's whole state as plain parts (a copy), for a checkpoint.
    pub fn state(&self) -> LearnerState {
        let phase = match (&self.engine, &self.stats, &self.mixture) {
            (Some(engine), Some(stats), Some(mixture)) => Phase::Fitted(Box::new(Fitted {
                engine: engine.state(),
                stats: stats.clone(),
                mixture: mixture.clone(),
                pending: self.pending.clone(),
                worst: self.worst.clone(),
            })),
            _ => Phase::WarmUp {
                buffer: self.pending.clone(),
            },
        };
        LearnerState {
            params: self.params.clone(),
            dim: self.dim,
            rng: self.rng.clone(),
            step: self.step,
            counters: self.counters.clone(),
            phase,
            recent: self.recent.clone(),
            adapter: self.adapter.as_ref().map(Adapter::state),
            selection: self.selection.clone(),
            resolution: self.resolution.clone(),
        }
    }

    /// Rebuilds a learner from its parts, checking them as a whole: every
    /// shape (d, K, covariance type) agrees across statistics, mixture,
    /// engine and buffers; the warm-up buffer holds whole points (more
    /// than `warmup` of them when a stop interrupted the first fit) and a
    /// pending batch fewer than `batch_size`; the statistics
    /// and counters are finite. The mixture's own parameters were checked
    /// when it was built ([`GaussianMixture::new`]).
    ///
    /// # Errors
    ///
    /// [`LearnError::InvalidState`] naming the first failed check.
    pub fn from_state(state: LearnerState) -> Result<Self, LearnError> {
        let bad = |why: String| Err(LearnError::InvalidState(why));
        let LearnerState {
            params,
            dim: d,
            rng,
            step,
            counters,
            phase,
            recent,
            adapter,
            selection,
            resolution,
        } = state;
        if d == 0 {
            return bad("the dimension is 0".into());
        }
        if !(step.is_finite() && step >= 0.0) {
            return bad(format!(
                "the step counter {step} is not a finite number >= 0"
            ));
        }
        if counters.log_lik_sum.is_nan() {
            return bad("the log-likelihood sum is NaN".into());
        }
        let capacity_ok = recent.capacity() == recent_capacity(&params)
            || (params.adapt_components && recent.capacity() == FORMER_ADAPT_RECENT_POINTS);
        if recent.dim() != d || !capacity_ok {
            return bad(format!(
                "the recent-points reservoir holds points of dimension {} up to {}, the learner wants dimension {d} up to {}",
                recent.dim(),
                recent.capacity(),
                recent_capacity(&params)
            ));
        }
        if adapter.is_some() != params.adapt_components {
            return bad(format!(
                "the adaptation's state is {} but adapt_components is {}",
                if adapter.is_some() {
                    "present"
                } else {
                    "absent"
                },
                params.adapt_components
            ));
        }
        let mut learner = StepwiseEm::new(params.clone(), d);
        // The options as stored, warm-up included: a resumed learner goes
        // on as the one that saved them would have.
        learner.params = params;
        learner.rng = rng;
        learner.step = step;
        learner.counters = counters;
        learner.recent = recent;
        learner.selection = selection;
        learner.adapter = adapter.map(|a| Adapter::from_state(adapt_params(&learner.params), a));
        if resolution.seen().len() != d {
            return bad(format!(
                "the resolution has {} dimensions, the learner {d}",
                resolution.seen().len()
            ));
        }
        learner.resolution = resolution;
        match phase {
            Phase::WarmUp { buffer } => {
                if buffer.len() % d != 0 {
                    return bad(format!(
                        "the warm-up buffer holds {} numbers, not whole points of dimension {d}",
                        buffer.len()
                    ));
                }
                // More than the warm-up when a stop interrupted the first
                // fit: the points received after the warm-up's are kept
                // behind them (StepwiseEm::observe_over_full).
                learner.pending = buffer;
            }
            Phase::Fitted(f) => {
                let Fitted {
                    engine,
                    stats,
                    mixture,
                    pending,
                    worst,
                } = *f;
                let cov = learner.params.covariance;
                let mut engine =
                    Engine::from_state(d, cov, engine).map_err(LearnError::InvalidState)?;
                engine.set_floor(&learner.resolution.floor());
                if let Some(a) = learner.adapter.as_mut() {
                    a.set_floor(engine.floor());
                }
                let k = mixture.n_components();
                let plen = cov.param_len(d);
                if mixture.dim() != d || mixture.covariance_type() != cov {
                    return bad(format!(
                        "the mixture is of dimension {} with {} covariances, the learner of dimension {d} with {cov}",
                        mixture.dim(),
                        mixture.covariance_type()
                    ));
                }
                if stats.dim != d
                    || stats.covariance != cov
                    || stats.s0.len() != k
                    || stats.mean.len() != k * d
                    || stats.cov.len() != k * plen
                {
                    return bad(format!(
                        "the statistics ({} components of dimension {}, {}, {} means, {} covariance numbers) do not fit the mixture ({k} components of dimension {d}, {cov})",
                        stats.s0.len(),
                        stats.dim,
                        stats.covariance,
                        stats.mean.len(),
                        stats.cov.len()
                    ));
                }
                if !stats.is_finite() || !(stats.points >= 0.0) {
                    return bad("the sufficient statistics are not finite".into());
                }
                if pending.len() % d != 0 || pending.len() >= learner.params.batch_size * d {
                    return bad(format!(
                        "the pending batch holds {} numbers: not whole points of dimension {d}, or not fewer than the batch size of {}",
                        pending.len(),
                        learner.params.batch_size
                    ));
                }
                if worst.len() != d || !worst.iter().all(|v| v.is_finite()) {
                    return bad(format!(
                        "the re-seeding point has {} numbers, not {d} finite ones",
                        worst.len()
                    ));
                }
                learner.engine = Some(engine);
                learner.stats = Some(stats);
                learner.mixture = Some(mixture);
                // Its points were scored on arrival by the run that saved
                // them (their lines and anomalies belong to that run).
                learner.scored = pending.len() / d;
                learner.pending = pending;
                learner.worst = worst;
            }
        }
        Ok(learner)
    }
}

/// The learner's whole state as plain parts: what a checkpoint stores
/// ([`StepwiseEm::state`], [`StepwiseEm::from_state`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LearnerState {
    /// The options.
    pub params: CheckedParams,
    /// Dimension of the points.
    pub dim: usize,
    /// The random number generator, mid-stream.
    pub rng: ChaCha8Rng,
    /// Step counter t in batches.
    pub step: f64,
    /// Counters.
    pub counters: Counters,
    /// Warm-up or fitted.
    pub phase: Phase,
    /// The recent-points reservoir.
    pub recent: RecentPoints,
    /// The adaptation's state, with `adapt_components`.
    pub adapter: Option<AdapterState>,
    /// How K was chosen, with `components = auto`.
    pub selection: Option<ModelSelection>,
    /// Each dimension's rounding step.
    pub resolution: Resolution,
}

/// Where the learner is: buffering the warm-up, or learning with a model.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Before the first model: the warm-up buffer (at most `warmup` points,
    /// but when a stop interrupted the first fit: then the points received
    /// after the warm-up's follow them, to be learned after the fit).
    WarmUp {
        /// Points buffered so far, row-major.
        buffer: Vec<f64>,
    },
    /// With a model.
    Fitted(Box<Fitted>),
}

/// The state of a learner with a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Fitted {
    /// The M-step's context (data scale, regularisation, repair counts).
    pub engine: EngineState,
    /// Running sufficient statistics.
    pub stats: MixtureStats,
    /// The current mixture.
    pub mixture: GaussianMixture,
    /// The partial mini-batch (fewer than `batch_size` points).
    pub pending: Vec<f64>,
    /// The worst explained point of the last batch (re-seeding target).
    pub worst: Vec<f64>,
}

#[cfg(test)]
#[path = "online_tests.rs"]
mod tests;
