//! [`StepwiseEm`]: the stepwise (online) EM learner.

use serde::{Deserialize, Serialize};

use super::covariance::CovarianceType;
use super::mixture::GaussianMixture;
use super::stats::MixtureStats;

/// Learner options as the user gives them; [`Params::check`] turns them into
/// [`CheckedParams`], the only form the learner accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Number of mixture components K (at least 1).
    pub components: usize,
    /// Covariance structure of every component.
    pub covariance: CovarianceType,
    /// Points per mini-batch (at least 1).
    pub batch_size: usize,
    /// Step-size decay alpha in `eta_t = (t + t0)^(-alpha)`, in (0.5, 1].
    pub step_decay: f64,
    /// Step-size offset t0 (at least 0), in batches.
    pub step_offset: f64,
    /// Step-size floor eta_min in [0, 1): 0 converges on a stationary stream,
    /// a positive floor forgets old points with a half-life of about
    /// `ln 2 / eta_min` batches.
    pub step_floor: f64,
    /// Points buffered before the first model is fitted (at least K).
    pub warmup: usize,
    /// Covariance regularisation relative to each dimension's variance in the
    /// warm-up buffer (at least 0).
    pub reg_covar: f64,
    /// Seed of the learner's random number generator.
    pub seed: u64,
    /// Number of k-means++ seeds tried on the warm-up buffer (at least 1).
    pub init_seeds: usize,
    /// Most batch EM iterations per seed on the warm-up buffer (at least 1).
    pub init_iters: usize,
}

impl Default for Params {
    /// The defaults of `config/emstream.toml`; see the README for how they
    /// were chosen.
    fn default() -> Self {
        Params {
            components: 2,
            covariance: CovarianceType::Full,
            batch_size: 1000,
            step_decay: 0.7,
            step_offset: 2.0,
            step_floor: 0.0,
            warmup: 5000,
            reg_covar: 1e-6,
            seed: 0,
            init_seeds: 3,
            init_iters: 100,
        }
    }
}

/// Parameters that passed [`Params::check`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckedParams(Params);

impl std::ops::Deref for CheckedParams {
    type Target = Params;
    fn deref(&self) -> &Params {
        &self.0
    }
}

/// A learner option that is out of range; the message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// Placeholder while the learner is written.
    #[error("{0}")]
    Invalid(String),
}

impl Params {
    /// Validates every option once.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming the option and its allowed range.
    pub fn check(self) -> Result<CheckedParams, ParamError> {
        todo!()
    }
}

/// Errors while learning.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    /// The points slice is not a whole number of rows of the learner's dimension.
    #[error("got {len} numbers, not a whole number of points of dimension {dim}")]
    Ragged {
        /// Length of the slice.
        len: usize,
        /// The learner's dimension.
        dim: usize,
    },
    /// The warm-up buffer has fewer distinct points than components.
    #[error("the first {points} points hold only {distinct} distinct points, fewer than the {k} components asked for: lower --components or give more varied data")]
    TooFewDistinct {
        /// Points in the buffer.
        points: usize,
        /// Distinct points among them.
        distinct: usize,
        /// Components asked for.
        k: usize,
    },
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
    /// Sum of the log-likelihoods of learned points under the model before
    /// they were learned from (test-then-train), for the running average.
    pub log_lik_sum: f64,
    /// Points counted in `log_lik_sum`.
    pub log_lik_points: u64,
}

/// Where the learner writes per-point scores (test-then-train), in input
/// order, when the caller asks for them.
#[derive(Clone, Debug, Default)]
pub struct ScoreBuffer {
    /// Whether to fill `resp` too.
    pub want_resp: bool,
    /// Most responsible component per point.
    pub labels: Vec<u32>,
    /// Log density per point under the model before the point was learned.
    pub log_lik: Vec<f64>,
    /// K responsibilities per point (only when `want_resp`).
    pub resp: Vec<f64>,
}

/// The stepwise EM learner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepwiseEm {
    params: CheckedParams,
    dim: usize,
    stats: Option<MixtureStats>,
    mixture: Option<GaussianMixture>,
    counters: Counters,
}

impl StepwiseEm {
    /// A learner for points of dimension `dim`.
    pub fn new(params: CheckedParams, dim: usize) -> Self {
        let _ = (params, dim);
        todo!()
    }

    /// Feeds points (row-major, a whole number of rows); complete mini-batches
    /// are learned at once, a partial one is kept for the next call. When
    /// `scores` is given, every point learned from is scored there first.
    ///
    /// # Errors
    ///
    /// [`LearnError`] for a ragged slice or too few distinct warm-up points.
    pub fn observe(
        &mut self,
        points: &[f64],
        scores: Option<&mut ScoreBuffer>,
    ) -> Result<(), LearnError> {
        let _ = (points, scores);
        todo!()
    }

    /// End of stream: learns from the pending partial batch (or fits the
    /// first model from a warm-up buffer that never filled).
    ///
    /// # Errors
    ///
    /// As [`StepwiseEm::observe`].
    pub fn flush(&mut self, scores: Option<&mut ScoreBuffer>) -> Result<(), LearnError> {
        let _ = scores;
        todo!()
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

    /// Points waiting in the warm-up buffer or the partial mini-batch.
    pub fn pending_points(&self) -> usize {
        todo!()
    }

    /// Running sufficient statistics, once the warm-up is over.
    pub fn stats(&self) -> Option<&MixtureStats> {
        self.stats.as_ref()
    }
}
