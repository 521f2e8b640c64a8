//! The public EM engine: the steps that stepwise EM, batch EM on the
//! warm-up buffer, split-and-merge, a reducer of a worker group and a
//! model-selection loop all share.
//!
//! - **E-step** ([`e_step`], [`Engine::e_step`]): statistics of a batch
//!   against a mixture, as [`BatchStats`] (sufficient statistics, point
//!   count, log-likelihood sum, outliers, worst point). Statistics of
//!   disjoint batches against the same mixture combine exactly with
//!   [`BatchStats::merge`].
//! - **Blend** ([`MixtureStats::blend`]): `s ← (1 − η) s + η ŝ` with a step
//!   size η ([`step_size`] for the stepwise EM schedule).
//! - **M-step** ([`Engine::m_step`]): closed form with regularisation and
//!   repair, returning a `Result` so that a failure reaches the caller as a
//!   [`LearnError`] rather than a panic on the learner thread.
//!
//! K is read from the mixture or the statistics, never from the options,
//! so a later change of K needs no change here. This module depends only
//! on [`super::mixture`], [`super::stats`] and [`super::covariance`]: the
//! warm-up fit, split-and-merge and the learner use it, not the reverse.

use super::covariance::{cholesky, CovarianceType};
use super::mixture::{
    argmax, normalise_row, normalise_row_parts, GaussianMixture, MixtureParams, ModelError,
};
use super::stats::{BatchSums, MixtureStats};

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
    #[error("the first {points} points hold only {distinct} distinct usable points (gross outliers are left out), fewer than the {k} components asked for: lower --components or give more varied data")]
    TooFewDistinct {
        /// Points in the buffer.
        points: usize,
        /// Distinct points among them.
        distinct: usize,
        /// Components asked for.
        k: usize,
    },
    /// Two sets of statistics (or a statistic and a learner) do not fit
    /// together.
    #[error("cannot combine these statistics: {0}")]
    Incompatible(String),
    /// The learner has no model yet (the warm-up is not over).
    #[error("the learner has no model yet: finish the warm-up first")]
    NotFitted,
    /// Parts of a learner's state disagree (see
    /// [`StepwiseEm::from_state`](super::StepwiseEm::from_state)).
    #[error("inconsistent learner state: {0}")]
    InvalidState(String),
    /// The M-step could not make a valid mixture of the statistics (the
    /// model is left as it was).
    #[error("the M-step produced no valid mixture ({0}); the statistics are damaged: resume from an older checkpoint")]
    MStep(ModelError),
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

impl ScoreBuffer {
    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.labels.clear();
        self.log_lik.clear();
        self.resp.clear();
    }

    /// Number of points scored.
    pub fn len(&self) -> usize {
        self.log_lik.len()
    }

    /// True when no point is scored.
    pub fn is_empty(&self) -> bool {
        self.log_lik.is_empty()
    }
}

/// A point farther than this many times the data's overall spread (per
/// dimension, from the centre of the mixture, or of the warm-up buffer by
/// median and median absolute deviation) is a gross outlier: scored, but
/// left out of the statistics. Generous on purpose: a new cluster inside
/// this range is learned, a glitch of 1e100 is not.
pub const OUTLIER_SPREAD: f64 = 100.0;

/// Largest coordinate magnitude learned from: beyond it squares overflow.
pub const MAX_ABS: f64 = 1e150;

/// Points whose responsibility sums are multiplied before one logarithm
/// is taken; with K <= MAX_COMPONENTS = 2^12 the product stays below 2^384.
const LOG_BLOCK: usize = 32;

/// Scratch space of the E-step, reused from batch to batch so that an
/// E-step allocates nothing once warm (never serialised).
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    resp: Vec<f64>,
    sums: BatchSums,
}

/// Tells gross outliers: points farther than [`OUTLIER_SPREAD`] spreads
/// from a centre, per dimension, or with a coordinate beyond [`MAX_ABS`].
struct OutlierTest {
    centre: Vec<f64>,
    inv_spread2: Vec<f64>,
    limit: f64,
}

impl OutlierTest {
    /// Centre and spread of the whole mixture: its mean and, per dimension,
    /// its total variance (within and between components).
    fn of(mix: &GaussianMixture) -> Self {
        let d = mix.dim();
        let w = mix.weights();
        let mut centre = vec![0.0; d];
        for j in 0..w.len() {
            for a in 0..d {
                centre[a] += w[j] * mix.mean(j)[a];
            }
        }
        let mut var = vec![0.0; d];
        for j in 0..w.len() {
            let c = mix.covariance_matrix(j);
            for a in 0..d {
                var[a] += w[j] * (c[a * d + a] + (mix.mean(j)[a] - centre[a]).powi(2));
            }
        }
        Self::new(centre, var)
    }

    fn new(centre: Vec<f64>, var: Vec<f64>) -> Self {
        let d = centre.len();
        let inv_spread2 = var
            .iter()
            .map(|v| if *v > 0.0 { 1.0 / v } else { 0.0 })
            .collect();
        OutlierTest {
            centre,
            inv_spread2,
            limit: OUTLIER_SPREAD * OUTLIER_SPREAD * d as f64,
        }
    }

    #[inline]
    fn is_outlier(&self, x: &[f64]) -> bool {
        let mut q = 0.0;
        for a in 0..x.len() {
            if !(x[a].abs() <= MAX_ABS) {
                return true;
            }
            let z = x[a] - self.centre[a];
            q += z * z * self.inv_spread2[a];
        }
        !(q <= self.limit)
    }
}

/// The warm-up buffer without its gross outliers (judged by each
/// dimension's median and median absolute deviation, or mean absolute
/// deviation where half the points are equal).
pub(crate) fn without_outliers(buf: &[f64], d: usize) -> Vec<f64> {
    let finite: Vec<&[f64]> = buf
        .chunks_exact(d)
        .filter(|x| x.iter().all(|v| v.abs() <= MAX_ABS))
        .collect();
    let mut centre = vec![0.0; d];
    let mut var = vec![0.0; d];
    let mut col = Vec::with_capacity(finite.len());
    for a in 0..d {
        col.clear();
        col.extend(finite.iter().map(|x| x[a]));
        if col.is_empty() {
            break;
        }
        col.sort_by(f64::total_cmp);
        let med = col[col.len() / 2];
        let mut dev: Vec<f64> = col.iter().map(|v| (v - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = 1.4826 * dev[dev.len() / 2];
        let spread = if mad > 0.0 {
            mad
        } else {
            dev.iter().sum::<f64>() / dev.len() as f64
        };
        centre[a] = med;
        var[a] = spread * spread;
    }
    let test = OutlierTest::new(centre, var);
    buf.chunks_exact(d)
        .filter(|x| !test.is_outlier(x))
        .flatten()
        .copied()
        .collect()
}

/// The M-step's fixed context, shared by the warm-up fit, split-and-merge
/// and the stream: the data's scale and the regularisation it implies,
/// repair and re-seeding counts, and the E-step's scratch space.
///
/// Built once from the warm-up buffer ([`Engine::new`]) and then kept for
/// the life of the model (a checkpoint stores it, see [`EngineState`]).
#[derive(Clone, Debug)]
pub struct Engine {
    dim: usize,
    covariance: CovarianceType,
    /// Per-dimension variance of the warm-up buffer (the data's scale).
    scale: Vec<f64>,
    /// Per-dimension regularisation added to every covariance's diagonal.
    reg: Vec<f64>,
    repairs: u64,
    reseeds: u64,
    scratch: Scratch,
}

/// The stored part of an [`Engine`] (everything but its scratch space).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineState {
    /// Per-dimension variance of the warm-up buffer (d positive numbers).
    pub scale: Vec<f64>,
    /// Per-dimension regularisation added to every covariance's diagonal
    /// (d numbers, finite and at least 0).
    pub reg: Vec<f64>,
    /// Covariances repaired so far.
    pub repairs: u64,
    /// Components re-seeded so far.
    pub reseeds: u64,
}

/// E-step statistics of a batch against one mixture: what a worker sends
/// to a reducer, and what [`StepwiseEm::apply`](super::StepwiseEm::apply)
/// learns from.
///
/// Statistics of disjoint batches computed against the SAME mixture
/// combine exactly with [`BatchStats::merge`]: merging the statistics of
/// the parts of a split gives the statistics of the whole (up to rounding).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Averaged sufficient statistics of the points that were not gross
    /// outliers (`stats.points` of them), centred on the batch's own means.
    pub stats: MixtureStats,
    /// Sum of the log-likelihoods of those points under the mixture.
    pub ll_sum: f64,
    /// Gross outliers among the points (left out of `stats` and `ll_sum`).
    pub outliers: u64,
    /// The worst explained point (re-seeding target; empty for no points).
    pub worst: Vec<f64>,
    /// Its log-likelihood, or the largest term of it (within ln K),
    /// +∞ when no point was learned from.
    pub worst_ll: f64,
}

impl BatchStats {
    /// Statistics of no points: the identity of [`BatchStats::merge`].
    pub fn empty(covariance: CovarianceType, dim: usize, k: usize) -> Self {
        BatchStats {
            stats: MixtureStats::empty(covariance, dim, k),
            ll_sum: 0.0,
            outliers: 0,
            worst: Vec::new(),
            worst_ll: f64::INFINITY,
        }
    }

    /// Points learned from (outliers excluded).
    pub fn used(&self) -> u64 {
        self.stats.points as u64
    }

    /// Combines the statistics of two disjoint batches computed against the
    /// same mixture: sufficient statistics pooled by their point counts,
    /// log-likelihoods and outliers added, the worse worst point kept.
    /// Associative, with [`BatchStats::empty`] as identity.
    ///
    /// # Errors
    ///
    /// [`LearnError::Incompatible`] when K, d or the covariance type differ.
    pub fn merge(&self, other: &BatchStats) -> Result<BatchStats, LearnError> {
        let (a, b) = (&self.stats, &other.stats);
        same_shape(a, b)?;
        let take_other = other.worst_ll < self.worst_ll || self.worst.is_empty();
        let (worst, worst_ll) = if take_other {
            (other.worst.clone(), other.worst_ll)
        } else {
            (self.worst.clone(), self.worst_ll)
        };
        Ok(BatchStats {
            stats: a.merge(b),
            ll_sum: self.ll_sum + other.ll_sum,
            outliers: self.outliers + other.outliers,
            worst,
            worst_ll,
        })
    }
}

/// Checks that two sets of statistics have the same K, d and covariance
/// type.
pub(crate) fn same_shape(a: &MixtureStats, b: &MixtureStats) -> Result<(), LearnError> {
    if a.covariance != b.covariance || a.dim != b.dim || a.s0.len() != b.s0.len() {
        return Err(LearnError::Incompatible(format!(
            "statistics of {} components of dimension {} ({}) and of {} of dimension {} ({})",
            a.s0.len(),
            a.dim,
            a.covariance,
            b.s0.len(),
            b.dim,
            b.covariance
        )));
    }
    Ok(())
}

/// E-step of `points` (rows of `mix.dim()`) against `mix`: responsibilities,
/// per-point log-likelihoods (to `scores`, in order, when given), and the
/// batch's sufficient statistics around the mixture's means. Gross outliers
/// ([`OUTLIER_SPREAD`], [`MAX_ABS`]) are scored but left out. Pure apart
/// from `scratch`, so workers can run it on their own batches against a
/// shared mixture and a reducer merges the results.
#[inline]
pub fn e_step(
    mix: &GaussianMixture,
    points: &[f64],
    scores: Option<&mut ScoreBuffer>,
    scratch: &mut Scratch,
) -> BatchStats {
    let d = mix.dim();
    let covariance = mix.covariance_type();
    let k = mix.n_components();
    let n = points.len() / d;
    let resp = &mut scratch.resp;
    resp.clear();
    resp.resize(n * k, 0.0);
    mix.weighted_log_probs(points, resp);
    let outlier = OutlierTest::of(mix);
    let mut ll_sum = 0.0;
    let mut worst = 0;
    let mut worst_ll = f64::INFINITY;
    let mut outliers = 0;
    match scores {
        None => {
            // Without per-point scores the logarithm of each row's sum
            // is taken once per LOG_BLOCK points, of their product
            // (each sum is in [1, K], so the product cannot overflow),
            // and the worst explained point is found by its largest
            // term (within ln K of its log density).
            let mut max_sum = 0.0;
            let mut prod = 1.0;
            for (i, (row, x)) in resp
                .chunks_exact_mut(k)
                .zip(points.chunks_exact(d))
                .enumerate()
            {
                let (m, s) = normalise_row_parts(row);
                if outlier.is_outlier(x) {
                    row.iter_mut().for_each(|r| *r = 0.0);
                    outliers += 1;
                    continue;
                }
                max_sum += m;
                prod *= s;
                if i % LOG_BLOCK == LOG_BLOCK - 1 {
                    ll_sum += prod.ln();
                    prod = 1.0;
                }
                if m < worst_ll {
                    worst_ll = m;
                    worst = i;
                }
            }
            ll_sum += prod.ln() + max_sum;
        }
        Some(sc) => {
            sc.labels.reserve(n);
            sc.log_lik.reserve(n);
            let first = sc.resp.len();
            for (i, (row, x)) in resp
                .chunks_exact_mut(k)
                .zip(points.chunks_exact(d))
                .enumerate()
            {
                let ll = normalise_row(row);
                sc.labels.push(argmax(row) as u32);
                sc.log_lik.push(ll);
                if sc.want_resp {
                    sc.resp.extend_from_slice(row);
                }
                if outlier.is_outlier(x) {
                    row.iter_mut().for_each(|r| *r = 0.0);
                    outliers += 1;
                    continue;
                }
                ll_sum += ll;
                if ll < worst_ll {
                    worst_ll = ll;
                    worst = i;
                }
            }
            debug_assert!(!sc.want_resp || sc.resp.len() == first + n * k);
        }
    }
    scratch
        .sums
        .accumulate(covariance, d, points, resp, mix.means());
    let stats = scratch
        .sums
        .to_stats(covariance, d, mix.means(), n - outliers);
    BatchStats {
        stats,
        ll_sum,
        outliers: outliers as u64,
        // The first point when every point is an outlier, as before.
        worst: points
            .get(worst * d..(worst + 1) * d)
            .unwrap_or(&[])
            .to_vec(),
        worst_ll,
    }
}

impl Engine {
    /// The engine for points of dimension `dim` whose scale is that of
    /// `buf` (the warm-up buffer, rows of `dim`), with covariance
    /// regularisation `reg_covar` relative to each dimension's variance.
    pub fn new(dim: usize, covariance: CovarianceType, buf: &[f64], reg_covar: f64) -> Self {
        let n = (buf.len() / dim).max(1) as f64;
        let mut mean = vec![0.0; dim];
        for x in buf.chunks_exact(dim) {
            for a in 0..dim {
                mean[a] += x[a];
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; dim];
        for x in buf.chunks_exact(dim) {
            for a in 0..dim {
                var[a] += (x[a] - mean[a]).powi(2);
            }
        }
        var.iter_mut().for_each(|v| *v /= n);
        // A dimension with no spread at all borrows the others' scale, or
        // a scale relative to its magnitude, so that it still has a finite,
        // positive variance.
        let positive: Vec<f64> = var
            .iter()
            .copied()
            .filter(|v| *v > 0.0 && v.is_finite())
            .collect();
        let fallback = if positive.is_empty() {
            None
        } else {
            Some(positive.iter().sum::<f64>() / positive.len() as f64)
        };
        let scale: Vec<f64> = var
            .iter()
            .zip(&mean)
            .map(|(&v, &m)| {
                if v > 0.0 && v.is_finite() {
                    v
                } else if let Some(f) = fallback {
                    f
                } else if m != 0.0 && m.is_finite() {
                    (m * 1e-6).powi(2)
                } else {
                    1.0
                }
            })
            .collect();
        // Inputs are within ±MAX_ABS, so squares are finite; keep it so.
        let scale: Vec<f64> = scale
            .into_iter()
            .map(|v| if v > 0.0 && v.is_finite() { v } else { 1.0 })
            .collect();
        // Zero reg_covar is allowed, but a singular covariance is then
        // repaired from this floor upward.
        let reg = scale.iter().map(|s| s * reg_covar).collect();
        Engine {
            dim,
            covariance,
            scale,
            reg,
            repairs: 0,
            reseeds: 0,
            scratch: Scratch::default(),
        }
    }

    /// [`e_step`] with the engine's own scratch space.
    pub fn e_step(
        &mut self,
        mix: &GaussianMixture,
        points: &[f64],
        scores: Option<&mut ScoreBuffer>,
    ) -> BatchStats {
        e_step(mix, points, scores, &mut self.scratch)
    }

    /// Dimension of the points.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Covariance structure of the mixtures it fits.
    pub fn covariance(&self) -> CovarianceType {
        self.covariance
    }

    /// Covariances repaired so far.
    pub fn repairs(&self) -> u64 {
        self.repairs
    }

    /// Components re-seeded so far.
    pub fn reseeds(&self) -> u64 {
        self.reseeds
    }

    /// The stored part of the engine.
    pub fn state(&self) -> EngineState {
        EngineState {
            scale: self.scale.clone(),
            reg: self.reg.clone(),
            repairs: self.repairs,
            reseeds: self.reseeds,
        }
    }

    /// Rebuilds an engine from its stored part.
    ///
    /// # Errors
    ///
    /// A message naming the failed check when `scale` or `reg` do not hold
    /// `dim` numbers, a scale is not finite and positive, or a
    /// regularisation is not finite and at least 0.
    pub fn from_state(
        dim: usize,
        covariance: CovarianceType,
        state: EngineState,
    ) -> Result<Self, String> {
        if state.scale.len() != dim || state.reg.len() != dim {
            return Err(format!(
                "the engine's scale has {} and its regularisation {} numbers, not one per dimension ({dim})",
                state.scale.len(),
                state.reg.len()
            ));
        }
        if !state.scale.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err("the engine's data scale is not finite and positive".into());
        }
        if !state.reg.iter().all(|r| r.is_finite() && *r >= 0.0) {
            return Err("the engine's regularisation is not finite and at least 0".into());
        }
        Ok(Engine {
            dim,
            covariance,
            scale: state.scale,
            reg: state.reg,
            repairs: state.repairs,
            reseeds: state.reseeds,
            scratch: Scratch::default(),
        })
    }

    /// One E-step over a whole buffer: its statistics and average
    /// log-likelihood.
    pub(crate) fn full_pass(
        &mut self,
        mix: &GaussianMixture,
        points: &[f64],
    ) -> (MixtureStats, f64) {
        let e = self.e_step(mix, points, None);
        let used = e.used();
        (e.stats, e.ll_sum / used.max(1) as f64)
    }

    /// Clusters with too few points for a covariance of their own (fewer
    /// than d + 1) start from the data's overall per-dimension variance.
    pub(crate) fn widen_thin_clusters(&self, stats: &mut MixtureStats, n: usize) {
        let d = self.dim;
        let plen = self.covariance.param_len(d);
        for j in 0..stats.n_components() {
            if stats.s0[j] * (n as f64) < (d + 1) as f64 {
                self.scale_covariance(&mut stats.cov[j * plen..(j + 1) * plen]);
            }
        }
    }

    /// Writes the data's overall scale as a covariance block.
    fn scale_covariance(&self, c: &mut [f64]) {
        let d = self.dim;
        match self.covariance {
            CovarianceType::Full => {
                c.iter_mut().for_each(|v| *v = 0.0);
                for a in 0..d {
                    c[a * d + a] = self.scale[a];
                }
            }
            CovarianceType::Diagonal => c.copy_from_slice(&self.scale),
            CovarianceType::Spherical => c[0] = self.scale.iter().sum::<f64>() / d as f64,
        }
    }

    /// Re-seeds components whose averaged responsibility stands for less
    /// than one point of the `memory` points the statistics remember: mean
    /// at the worst explained recent point, the data's scale as covariance,
    /// half the weight of the heaviest component.
    pub fn reseed_dead(&mut self, stats: &mut MixtureStats, memory: f64, worst: &[f64]) {
        let d = self.dim;
        let plen = self.covariance.param_len(d);
        let k = stats.n_components();
        if k < 2 {
            return;
        }
        for j in 0..k {
            if stats.s0[j] * memory >= 1.0 && stats.s0[j] > 1e-12 {
                continue;
            }
            let heavy = (0..k).fold(0, |b, i| if stats.s0[i] > stats.s0[b] { i } else { b });
            if heavy == j {
                continue;
            }
            let half = stats.s0[heavy] / 2.0;
            stats.s0[heavy] = half;
            stats.s0[j] += half;
            stats.mean[j * d..(j + 1) * d].copy_from_slice(worst);
            let mut block = vec![0.0; plen];
            self.scale_covariance(&mut block);
            stats.cov[j * plen..(j + 1) * plen].copy_from_slice(&block);
            self.reseeds += 1;
        }
    }

    /// Closed-form M-step: weights `s0 / Σ s0`, means, covariances plus the
    /// regularisation; a covariance that is not positive definite even then
    /// gets ten times more, until it is (each such repair counted).
    ///
    /// # Errors
    ///
    /// [`LearnError::MStep`] when the statistics do not make a valid
    /// mixture even so (K or d disagreeing with the engine, weights not
    /// finite): the model is then left as it was.
    pub fn m_step(&mut self, stats: &mut MixtureStats) -> Result<GaussianMixture, LearnError> {
        let d = self.dim;
        let plen = self.covariance.param_len(d);
        let k = stats.n_components();
        if stats.dim != d
            || stats.covariance != self.covariance
            || stats.mean.len() != k * d
            || stats.cov.len() != k * plen
        {
            return Err(LearnError::MStep(ModelError::Shape(format!(
                "statistics of {k} components of dimension {} ({}, {} means, {} covariance numbers) for an engine of dimension {d} ({})",
                stats.dim,
                stats.covariance,
                stats.mean.len(),
                stats.cov.len(),
                self.covariance
            ))));
        }
        let total: f64 = stats.s0.iter().sum();
        let mut weights: Vec<f64> = stats.s0.iter().map(|s| (s / total).max(1e-300)).collect();
        let wsum: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= wsum);
        let mut covs = stats.cov.clone();
        let mut l = vec![0.0; plen];
        for j in 0..k {
            let block = &mut covs[j * plen..(j + 1) * plen];
            if self.covariance == CovarianceType::Full {
                for a in 0..d {
                    for b in 0..a {
                        let v = 0.5 * (block[a * d + b] + block[b * d + a]);
                        block[a * d + b] = v;
                        block[b * d + a] = v;
                    }
                }
            }
            let base = block.to_vec();
            let mut mult = 1.0;
            for attempt in 0.. {
                block.copy_from_slice(&base);
                let reg: Vec<f64> = self
                    .reg
                    .iter()
                    .zip(&self.scale)
                    .map(|(r, s)| (r * mult).max(if attempt > 0 { s * 1e-12 * mult } else { 0.0 }))
                    .collect();
                super::covariance::add_regularisation(self.covariance, block, d, &reg);
                let ok = match self.covariance {
                    CovarianceType::Full => cholesky(block, d, &mut l),
                    _ => block.iter().all(|v| *v > 0.0 && v.is_finite()),
                };
                if ok {
                    break;
                }
                self.repairs += 1;
                mult *= 10.0;
                if attempt >= 30 {
                    // Nothing of the statistics is usable: fall back to the
                    // data's scale.
                    self.scale_covariance(block);
                    break;
                }
            }
        }
        let params = MixtureParams {
            covariance: self.covariance,
            dim: d,
            weights,
            means: stats.mean.clone(),
            covariances: covs,
        };
        GaussianMixture::new(params).map_err(LearnError::MStep)
    }
}

/// The stepwise EM step size for a batch of `n` points after `step`
/// batches: `η = min(1, max(η_min, (step + 1 + t0)^(−α)))`, scaled by the
/// batch's share of a full batch when it is smaller than one.
pub fn step_size(step: f64, n: f64, batch_size: usize, decay: f64, offset: f64, floor: f64) -> f64 {
    let t = step + 1.0;
    let eta = (t + offset).powf(-decay).max(floor).min(1.0);
    eta * (n / batch_size as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testdata;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Agreement required between one pass and a merged split (rounding).
    const TOL: f64 = 1e-9;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= TOL * (1.0 + a.abs().max(b.abs()))
    }

    fn assert_close(a: &BatchStats, b: &BatchStats) {
        let (s, t) = (&a.stats, &b.stats);
        assert_eq!(s.points, t.points);
        assert_eq!(a.outliers, b.outliers);
        for (x, y) in
            s.s0.iter()
                .chain(&s.mean)
                .chain(&s.cov)
                .zip(t.s0.iter().chain(&t.mean).chain(&t.cov))
        {
            assert!(close(*x, *y), "{x} vs {y}");
        }
        assert!(close(a.ll_sum, b.ll_sum), "{} vs {}", a.ll_sum, b.ll_sum);
        assert_eq!(a.worst, b.worst);
    }

    /// A mixture and a batch from a shifted copy of it with two gross
    /// outliers, so that every part of the statistics is exercised.
    fn case(cov: CovarianceType, seed: u64) -> (GaussianMixture, Vec<f64>) {
        let truth = testdata::restrict(&testdata::random_mixture(3, 4, 4.0, seed), cov);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pts = truth.sample(&mut rng, 400);
        pts.iter_mut().for_each(|v| *v += 0.3);
        pts[3 * 17] = 1e120;
        pts[3 * 301 + 2] = -1e9;
        (truth, pts)
    }

    fn stats(mix: &GaussianMixture, pts: &[f64]) -> BatchStats {
        e_step(mix, pts, None, &mut Scratch::default())
    }

    const COVS: [CovarianceType; 3] = [
        CovarianceType::Full,
        CovarianceType::Diagonal,
        CovarianceType::Spherical,
    ];

    #[test]
    fn any_split_merged_equals_one_pass() {
        for (i, cov) in COVS.into_iter().enumerate() {
            let (mix, pts) = case(cov, 40 + i as u64);
            let whole = stats(&mix, &pts);
            assert_eq!(whole.outliers, 2);
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            for _ in 0..20 {
                let mut cuts: Vec<usize> = (0..rng.random_range(1..6))
                    .map(|_| rng.random_range(0..=400))
                    .collect();
                cuts.extend([0, 400]);
                cuts.sort_unstable();
                let merged = cuts
                    .windows(2)
                    .map(|w| stats(&mix, &pts[3 * w[0]..3 * w[1]]))
                    .try_fold(BatchStats::empty(cov, 3, 4), |acc, s| acc.merge(&s))
                    .unwrap();
                assert_close(&merged, &whole);
            }
        }
    }

    #[test]
    fn merge_has_an_identity_and_is_associative() {
        for (i, cov) in COVS.into_iter().enumerate() {
            let (mix, pts) = case(cov, 50 + i as u64);
            let (a, b, c) = (
                stats(&mix, &pts[..3 * 100]),
                stats(&mix, &pts[3 * 100..3 * 250]),
                stats(&mix, &pts[3 * 250..]),
            );
            let e = BatchStats::empty(cov, 3, 4);
            assert_eq!(a.merge(&e).unwrap(), a);
            assert_eq!(e.merge(&a).unwrap(), a);
            let left = a.merge(&b).unwrap().merge(&c).unwrap();
            let right = a.merge(&b.merge(&c).unwrap()).unwrap();
            assert_close(&left, &right);
        }
    }

    #[test]
    fn merge_refuses_statistics_of_another_shape() {
        let (mix, pts) = case(CovarianceType::Full, 60);
        let a = stats(&mix, &pts);
        for other in [
            BatchStats::empty(CovarianceType::Full, 3, 5),
            BatchStats::empty(CovarianceType::Full, 2, 4),
            BatchStats::empty(CovarianceType::Diagonal, 3, 4),
        ] {
            assert!(matches!(a.merge(&other), Err(LearnError::Incompatible(_))));
        }
    }

    #[test]
    fn the_m_step_reports_failure_instead_of_panicking() {
        let (mix, pts) = case(CovarianceType::Full, 61);
        let mut engine = Engine::new(3, CovarianceType::Full, &pts[..3 * 16], 1e-6);
        let mut good = stats(&mix, &pts[3 * 20..]).stats;
        assert!(engine.m_step(&mut good).is_ok());
        let mut nan = good.clone();
        nan.mean[0] = f64::NAN;
        assert!(matches!(engine.m_step(&mut nan), Err(LearnError::MStep(_))));
        let mut other_dim = MixtureStats::empty(CovarianceType::Full, 2, 4);
        other_dim.s0 = vec![0.25; 4];
        let err = engine.m_step(&mut other_dim).unwrap_err();
        assert!(err.to_string().contains("engine of dimension 3"), "{err}");
    }

    #[test]
    fn engine_state_round_trips_and_is_checked() {
        let (_, pts) = case(CovarianceType::Diagonal, 62);
        let engine = Engine::new(3, CovarianceType::Diagonal, &pts[..3 * 16], 1e-6);
        let back = Engine::from_state(3, CovarianceType::Diagonal, engine.state()).unwrap();
        assert_eq!(back.state(), engine.state());
        assert!(Engine::from_state(2, CovarianceType::Diagonal, engine.state()).is_err());
        let mut bad = engine.state();
        bad.reg[1] = -1.0;
        assert!(Engine::from_state(3, CovarianceType::Diagonal, bad).is_err());
    }
}
