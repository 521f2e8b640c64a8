//! [`StepwiseEm`]: the stepwise (online) EM learner.
//!
//! Points are buffered until the warm-up is full; the first model is fitted
//! on that buffer ([`super::init`]). From then on points are cut into
//! mini-batches of exactly `batch_size` (a partial batch waits for the next
//! call, so the model does not depend on how the caller slices the stream).
//! For each batch: E-step under the current model, batch statistics around
//! the current means, blend `s ← (1 − η_t) s + η_t ŝ`, closed-form M-step.
//! `η_t = max(η_min, (t + t0)^(−α))`, t counting batches with the warm-up
//! counted as `warmup / batch_size` batches.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::covariance::{cholesky, CovarianceType};
use super::init;
use super::mixture::{argmax, normalise_row, normalise_row_parts, GaussianMixture, MixtureParams};
use super::stats::{BatchSums, MixtureStats};

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
    /// `ln 2 / eta_min` batches (see [`Params::half_life_points`]).
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
            step_decay: 0.95,
            step_offset: 2.0,
            step_floor: 0.0,
            warmup: 5000,
            reg_covar: 1e-6,
            seed: 0,
            init_seeds: 10,
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

impl CheckedParams {
    /// The plain parameters.
    pub fn into_inner(self) -> Params {
        self.0
    }
}

/// A learner option that is out of range; the message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// K = 0 or absurdly large.
    #[error("components (-k/--components) must be between 1 and {MAX_COMPONENTS}, got {0}")]
    Components(usize),
    /// Batch size 0.
    #[error("batch_size (--batch-size) must be at least 1, got 0")]
    BatchSize,
    /// alpha outside (0.5, 1].
    #[error("step_decay (--step-decay) must be in (0.5, 1] for stepwise EM to converge, got {0}")]
    StepDecay(f64),
    /// t0 negative or not finite.
    #[error("step_offset must be a finite number >= 0, got {0}")]
    StepOffset(f64),
    /// eta_min outside [0, 1).
    #[error("step_floor (--step-floor) must be in [0, 1): 0 for a stationary stream, e.g. 0.01 to forget old points; got {0}")]
    StepFloor(f64),
    /// Warm-up smaller than K.
    #[error("warmup (--warmup) must be at least the number of components ({k}), got {warmup}")]
    Warmup {
        /// The warm-up asked for.
        warmup: usize,
        /// Components asked for.
        k: usize,
    },
    /// Negative or non-finite regularisation.
    #[error("reg_covar (--reg-covar) must be a finite number >= 0 (relative to the data's variance, e.g. 1e-6), got {0}")]
    RegCovar(f64),
    /// Zero seeds.
    #[error("init_seeds must be at least 1, got 0")]
    InitSeeds,
    /// Zero iterations.
    #[error("init_iters must be at least 1, got 0")]
    InitIters,
}

/// Largest K accepted: beyond this a mixture is a density estimate better
/// made another way, and per-batch M-steps would dominate.
pub const MAX_COMPONENTS: usize = 4096;

impl Params {
    /// Validates every option once.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming the option and its allowed range.
    pub fn check(self) -> Result<CheckedParams, ParamError> {
        if self.components == 0 || self.components > MAX_COMPONENTS {
            return Err(ParamError::Components(self.components));
        }
        if self.batch_size == 0 {
            return Err(ParamError::BatchSize);
        }
        if !(self.step_decay > 0.5 && self.step_decay <= 1.0) {
            return Err(ParamError::StepDecay(self.step_decay));
        }
        if !(self.step_offset >= 0.0 && self.step_offset.is_finite()) {
            return Err(ParamError::StepOffset(self.step_offset));
        }
        if !(self.step_floor >= 0.0 && self.step_floor < 1.0) {
            return Err(ParamError::StepFloor(self.step_floor));
        }
        if self.warmup < self.components {
            return Err(ParamError::Warmup {
                warmup: self.warmup,
                k: self.components,
            });
        }
        if !(self.reg_covar >= 0.0 && self.reg_covar.is_finite()) {
            return Err(ParamError::RegCovar(self.reg_covar));
        }
        if self.init_seeds == 0 {
            return Err(ParamError::InitSeeds);
        }
        if self.init_iters == 0 {
            return Err(ParamError::InitIters);
        }
        Ok(CheckedParams(self))
    }

    /// With a step floor, the half-life of an observation's influence in
    /// points: `batch_size * ln 2 / -ln(1 - eta_min)`; infinite without one.
    pub fn half_life_points(&self) -> f64 {
        if self.step_floor > 0.0 {
            self.batch_size as f64 * std::f64::consts::LN_2 / -(1.0 - self.step_floor).ln()
        } else {
            f64::INFINITY
        }
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
    #[error("the first {points} points hold only {distinct} distinct usable points (gross outliers are left out), fewer than the {k} components asked for: lower --components or give more varied data")]
    TooFewDistinct {
        /// Points in the buffer.
        points: usize,
        /// Distinct points among them.
        distinct: usize,
        /// Components asked for.
        k: usize,
    },
    /// Two learners cannot be merged.
    #[error("cannot merge these learners: {0}")]
    Incompatible(String),
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

/// Scratch space reused from batch to batch (never serialised).
#[derive(Clone, Debug, Default)]
struct Scratch {
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
fn without_outliers(buf: &[f64], d: usize) -> Vec<f64> {
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

/// The numeric engine shared by the warm-up fit and the stream: E-step,
/// M-step with regularisation and repair, re-seeding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Engine {
    pub(crate) dim: usize,
    covariance: CovarianceType,
    /// Per-dimension variance of the warm-up buffer (the data's scale).
    scale: Vec<f64>,
    /// Per-dimension regularisation added to every covariance's diagonal.
    reg: Vec<f64>,
    repairs: u64,
    reseeds: u64,
    #[serde(skip)]
    scratch: Scratch,
}

/// Outcome of the E-step over one batch.
struct EStep {
    stats: MixtureStats,
    /// Sum of the log-likelihoods of the points that were not outliers.
    ll_sum: f64,
    worst: usize,
    /// Gross outliers among the points (left out of `stats` and `ll_sum`).
    outliers: usize,
}

impl Engine {
    pub(crate) fn new(dim: usize, covariance: CovarianceType, buf: &[f64], reg_covar: f64) -> Self {
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

    /// E-step over `points` under `mix`: responsibilities, per-point
    /// log-likelihoods (to `scores` when given), batch statistics around the
    /// current means.
    fn e_step(
        &mut self,
        mix: &GaussianMixture,
        points: &[f64],
        scores: Option<&mut ScoreBuffer>,
    ) -> EStep {
        let d = self.dim;
        let k = mix.n_components();
        let n = points.len() / d;
        let resp = &mut self.scratch.resp;
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
        self.scratch
            .sums
            .accumulate(self.covariance, d, points, resp, mix.means());
        let stats = self
            .scratch
            .sums
            .to_stats(self.covariance, d, mix.means(), n - outliers);
        EStep {
            stats,
            ll_sum,
            worst,
            outliers,
        }
    }

    /// One E-step over a whole buffer: its statistics and average
    /// log-likelihood.
    pub(crate) fn full_pass(
        &mut self,
        mix: &GaussianMixture,
        points: &[f64],
    ) -> (MixtureStats, f64) {
        let n = points.len() / self.dim;
        let e = self.e_step(mix, points, None);
        (e.stats, e.ll_sum / (n - e.outliers).max(1) as f64)
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
    fn reseed_dead(&mut self, stats: &mut MixtureStats, memory: f64, worst: &[f64]) {
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
    pub(crate) fn m_step(&mut self, stats: &mut MixtureStats) -> GaussianMixture {
        let d = self.dim;
        let plen = self.covariance.param_len(d);
        let k = stats.n_components();
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
        GaussianMixture::new(params)
            .expect("M-step parameters are finite and positive definite by construction")
    }
}

/// The stepwise EM learner.
///
/// Its whole state (options, step counter, statistics, model, RNG, warm-up
/// buffer or pending partial batch, counters) is serialisable, so a
/// checkpoint resumes exactly where the stream left off.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepwiseEm {
    params: CheckedParams,
    dim: usize,
    rng: ChaCha8Rng,
    /// Warm-up buffer before the first model, then the partial mini-batch.
    pending: Vec<f64>,
    /// Step counter t in batches (the warm-up counts as warmup/batch_size).
    step: f64,
    engine: Option<Engine>,
    stats: Option<MixtureStats>,
    mixture: Option<GaussianMixture>,
    /// The worst explained point of the last batch (re-seeding target).
    worst: Vec<f64>,
    counters: Counters,
}

impl StepwiseEm {
    /// A learner for points of dimension `dim`.
    ///
    /// # Panics
    ///
    /// When `dim` is 0.
    pub fn new(params: CheckedParams, dim: usize) -> Self {
        assert!(dim > 0, "dimension must be at least 1");
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        StepwiseEm {
            pending: Vec::new(),
            params,
            dim,
            rng,
            step: 0.0,
            engine: None,
            stats: None,
            mixture: None,
            worst: vec![0.0; dim],
            counters: Counters::default(),
        }
    }

    /// Feeds points (row-major, a whole number of rows); complete mini-batches
    /// are learned at once, a partial one is kept for the next call. When
    /// `scores` is given, every point learned from is scored there first
    /// (warm-up points once the first model exists), in input order.
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
        if points.len() % d != 0 {
            return Err(LearnError::Ragged {
                len: points.len(),
                dim: d,
            });
        }
        let mut rest = points;
        if self.mixture.is_none() {
            let want = self.params.warmup * d - self.pending.len();
            let take = want.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < self.params.warmup * d {
                return Ok(());
            }
            self.initialise(scores.as_deref_mut())?;
        }
        let b = self.params.batch_size * d;
        if !self.pending.is_empty() {
            let take = (b - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < b {
                return Ok(());
            }
            self.learn_pending(scores.as_deref_mut());
        }
        let mut chunks = rest.chunks_exact(b);
        for batch in &mut chunks {
            self.update(batch, scores.as_deref_mut());
        }
        self.pending.extend_from_slice(chunks.remainder());
        Ok(())
    }

    /// End of stream: learns from the pending partial batch (its step scaled
    /// by its share of a full batch), or fits the first model from a warm-up
    /// buffer that never filled.
    ///
    /// # Errors
    ///
    /// [`LearnError::TooFewDistinct`] when the points seen so far hold fewer
    /// distinct points than components (they are kept).
    pub fn flush(&mut self, scores: Option<&mut ScoreBuffer>) -> Result<(), LearnError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.mixture.is_none() {
            return self.initialise(scores);
        }
        self.learn_pending(scores);
        Ok(())
    }

    /// Learns from the pending (full or final partial) batch and empties
    /// it, keeping its allocation.
    fn learn_pending(&mut self, scores: Option<&mut ScoreBuffer>) {
        let batch = std::mem::take(&mut self.pending);
        self.update(&batch, scores);
        self.pending = batch;
        self.pending.clear();
    }

    fn initialise(&mut self, scores: Option<&mut ScoreBuffer>) -> Result<(), LearnError> {
        let d = self.dim;
        let buf = std::mem::take(&mut self.pending);
        // Gross outliers (a glitch of 1e300) would wreck the data's scale
        // and the first fit: fit on the rest, score them all.
        let kept = without_outliers(&buf, d);
        let mut engine = Engine::new(d, self.params.covariance, &kept, self.params.reg_covar);
        let fitted = init::fit_warmup(&mut engine, &kept, &self.params, &mut self.rng);
        let (stats, mix) = match fitted {
            Ok(v) => v,
            Err(e) => {
                self.pending = buf;
                return Err(e);
            }
        };
        let n = buf.len() / d;
        // Score the warm-up points under the first model, in order.
        let e = engine.e_step(&mix, &buf, scores);
        let used = n - e.outliers;
        self.worst
            .copy_from_slice(&buf[e.worst * d..(e.worst + 1) * d]);
        self.counters.log_lik_sum += e.ll_sum;
        self.counters.log_lik_points += used as u64;
        self.counters.points_seen += used as u64;
        self.counters.outliers += e.outliers as u64;
        self.step = used as f64 / self.params.batch_size as f64;
        let mut stats = MixtureStats {
            points: (kept.len() / d) as f64,
            ..stats
        };
        let mix = engine.m_step(&mut stats);
        self.counters.repairs = engine.repairs;
        self.counters.reseeds = engine.reseeds;
        self.engine = Some(engine);
        self.stats = Some(stats);
        self.mixture = Some(mix);
        self.pending = buf;
        self.pending.clear();
        Ok(())
    }

    /// Step size for the next batch of `n` points.
    fn eta(&self, n: usize) -> f64 {
        let p = &self.params;
        let t = self.step + 1.0;
        let eta = (t + p.step_offset)
            .powf(-p.step_decay)
            .max(p.step_floor)
            .min(1.0);
        eta * (n as f64 / p.batch_size as f64).min(1.0)
    }

    /// One stepwise EM update from one batch.
    fn update(&mut self, batch: &[f64], scores: Option<&mut ScoreBuffer>) {
        let d = self.dim;
        let n = batch.len() / d;
        let (Some(engine), Some(mix)) = (self.engine.as_mut(), self.mixture.as_ref()) else {
            unreachable!("update runs only after initialisation");
        };
        let e = engine.e_step(mix, batch, scores);
        let used = n - e.outliers;
        let eta = self.eta(used);
        let (Some(engine), Some(stats)) = (self.engine.as_mut(), self.stats.as_mut()) else {
            unreachable!()
        };
        self.counters.outliers += e.outliers as u64;
        if used == 0 {
            return;
        }
        if !e.stats.is_finite() || !e.ll_sum.is_finite() {
            self.counters.refused_batches += 1;
            self.counters.refused_points += used as u64;
            return;
        }
        self.worst
            .copy_from_slice(&batch[e.worst * d..(e.worst + 1) * d]);
        let mut next = stats.clone();
        next.blend(&e.stats, eta);
        let memory = self.params.batch_size as f64 / eta.max(1e-300);
        engine.reseed_dead(&mut next, memory, &self.worst);
        let mix = engine.m_step(&mut next);
        *stats = next;
        self.mixture = Some(mix);
        self.step += (used as f64 / self.params.batch_size as f64).min(1.0);
        let c = &mut self.counters;
        c.points_seen += used as u64;
        c.updates += 1;
        c.log_lik_sum += e.ll_sum;
        c.log_lik_points += used as u64;
        c.repairs = engine.repairs;
        c.reseeds = engine.reseeds;
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
        self.pending.len() / self.dim
    }

    /// Running sufficient statistics, once the warm-up is over.
    pub fn stats(&self) -> Option<&MixtureStats> {
        self.stats.as_ref()
    }

    /// Merges another learner's statistics into this one, weighted by the
    /// points each stands for, and refits the mixture: the way to combine
    /// learners that read disjoint parts of one stream. Components are
    /// matched by index, so both should descend from the same model (for
    /// example, resumed from one checkpoint). Counters are added; the
    /// step counter becomes the larger of the two.
    ///
    /// # Errors
    ///
    /// [`LearnError::Incompatible`] when dimension, K or covariance type
    /// differ or either learner has no model yet.
    pub fn merge(&mut self, other: &StepwiseEm) -> Result<(), LearnError> {
        let incompatible = |why: &str| Err(LearnError::Incompatible(why.to_string()));
        if self.dim != other.dim {
            return incompatible("different dimensions");
        }
        if self.params.components != other.params.components
            || self.params.covariance != other.params.covariance
        {
            return incompatible("different numbers of components or covariance types");
        }
        let (Some(mine), Some(theirs), Some(engine)) = (
            self.stats.as_ref(),
            other.stats.as_ref(),
            self.engine.as_mut(),
        ) else {
            return incompatible("both learners need a model (finish the warm-up first)");
        };
        let mut merged = mine.merge(theirs);
        let mix = engine.m_step(&mut merged);
        self.stats = Some(merged);
        self.mixture = Some(mix);
        self.step = self.step.max(other.step);
        let (c, o) = (&mut self.counters, &other.counters);
        c.points_seen += o.points_seen;
        c.updates += o.updates;
        engine.reseeds += o.reseeds;
        engine.repairs += o.repairs;
        c.reseeds = engine.reseeds;
        c.refused_batches += o.refused_batches;
        c.refused_points += o.refused_points;
        c.outliers += o.outliers;
        c.log_lik_sum += o.log_lik_sum;
        c.log_lik_points += o.log_lik_points;
        c.repairs = engine.repairs;
        Ok(())
    }

    /// The step counter t (in batches).
    pub fn step(&self) -> f64 {
        self.step
    }
}

#[cfg(test)]
#[path = "online_tests.rs"]
mod tests;
