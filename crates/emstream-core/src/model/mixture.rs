//! [`GaussianMixture`]: the parameters of a mixture and everything computed
//! from them alone: log densities, responsibilities, hard labels, samples.
//!
//! Densities are computed from the Cholesky factor of each covariance by
//! forward substitution and from its log-determinant (sum of log diagonal
//! entries); responsibilities use log-sum-exp. No explicit inverse, no
//! determinant, no `ln(pdf)`.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::covariance::{cholesky, CovarianceType};
use super::kernels;

/// Points processed side by side in the full-covariance density kernel
/// (the wide one, [`kernels::solve_block`], takes [`kernels::LANES`]).
const BLOCK: usize = 8;

/// The label of a point that belongs to no component: a gross outlier of
/// the stream, or a point whose density underflowed under every component.
/// Its log-likelihood is its log density if that is finite, else -inf
/// (never NaN); its responsibilities are all 0.
pub const NO_LABEL: u32 = u32::MAX;

/// Below this log ratio to the largest term, `exp` is under half an ulp of
/// the sum and the responsibility is taken as 0 without computing it.
const NEGLIGIBLE_LOG_RATIO: f64 = -37.0;

/// Smallest dimension whose E-step densities are pruned
/// ([`GaussianMixture::full_log_probs_pruned`]): the guesses, the order
/// and the checks cost about as much as they save at d = 16 (the learner
/// bench was 28 % slower in CPU time with fewer instructions), 12 % faster
/// at d = 32 and 60 % at d = 64.
const PRUNE_MIN_DIM: usize = 32;

/// Rows of each substitution the pruned E-step densities solve to guess a
/// point's component ([`GaussianMixture::full_log_probs_pruned`]).
const GUESS_ROWS: usize = 4;

/// Where the pruned E-step densities next check whether a component is
/// negligible for a whole block, after solving rows `..a` of `d`: after
/// [`GUESS_ROWS`] rows, then every 2 rows up to row 16, then every 4 (a
/// check costs about as much as 2 rows near the top: a compare per point).
fn next_check(a: usize, d: usize) -> usize {
    let next = if a < GUESS_ROWS {
        GUESS_ROWS
    } else if a < 16 {
        a + 2
    } else {
        a + 4
    };
    next.min(d)
}

/// Dimensions above this take the generic wide kernels (and, where the
/// CPU has it, their AVX-512 build); up to it, specialised ones.
pub(crate) const WIDE_FROM: usize = 8;

/// `ln(2π)`.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Errors from building a mixture out of raw parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The parameter arrays do not have the lengths K and d imply.
    #[error("mixture parameters have the wrong shape: {0}")]
    Shape(String),
    /// A parameter is NaN or infinite.
    #[error("mixture parameter {0} is not finite")]
    NonFinite(&'static str),
    /// Weights must be positive and sum to one.
    #[error("mixture weights must be positive and sum to 1 (they sum to {0})")]
    Weights(f64),
    /// A covariance matrix is not symmetric positive definite.
    #[error("covariance of component {0} is not symmetric positive definite")]
    NotPositiveDefinite(usize),
}

/// The plain, serialisable parameters of a mixture: what a checkpoint stores
/// and what [`GaussianMixture::new`] validates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureParams {
    /// Covariance structure of every component.
    pub covariance: CovarianceType,
    /// Dimension d of the points.
    pub dim: usize,
    /// K mixture weights, positive, summing to 1.
    pub weights: Vec<f64>,
    /// K means of d numbers each, row-major.
    pub means: Vec<f64>,
    /// K covariance parameter blocks: d*d (full, row-major), d (diagonal
    /// variances) or 1 (spherical variance) numbers each.
    pub covariances: Vec<f64>,
}

/// A Gaussian mixture model with K components in d dimensions.
///
/// Built only through [`GaussianMixture::new`], which checks every parameter
/// and factors every covariance, so a value of this type always has finite
/// parameters and positive definite covariances.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "MixtureParams", into = "MixtureParams")]
pub struct GaussianMixture {
    p: MixtureParams,
    k: usize,
    /// Full: K lower Cholesky factors (d*d, row-major). Diagonal: K*d
    /// `1/sigma`. Spherical: K `1/sigma`.
    factor: Vec<f64>,
    /// Full only: K*d reciprocals of the Cholesky diagonal.
    inv_diag: Vec<f64>,
    /// `ln w_j - d/2 ln 2π - 1/2 ln det Σ_j` per component.
    log_norm: Vec<f64>,
}

impl PartialEq for GaussianMixture {
    fn eq(&self, other: &Self) -> bool {
        self.p == other.p
    }
}

impl TryFrom<MixtureParams> for GaussianMixture {
    type Error = ModelError;
    fn try_from(p: MixtureParams) -> Result<Self, ModelError> {
        GaussianMixture::new(p)
    }
}

impl From<GaussianMixture> for MixtureParams {
    fn from(m: GaussianMixture) -> Self {
        m.p
    }
}

impl GaussianMixture {
    /// Validates raw parameters and factors every covariance.
    ///
    /// # Errors
    ///
    /// [`ModelError`] when shapes disagree, a number is not finite, the
    /// weights are not positive or do not sum to 1 (within 1e-6), or a
    /// covariance is not positive definite.
    pub fn new(p: MixtureParams) -> Result<Self, ModelError> {
        Self::build(p, None)
    }

    /// [`GaussianMixture::new`] with the Cholesky factors of full
    /// covariances already at hand (K blocks of d × d, lower triangle, as
    /// [`cholesky`] writes them, of exactly `p.covariances`): the M-step
    /// factors each covariance to check it, and passes the factor on
    /// rather than factoring again. Other covariance types ignore
    /// `factors`. The covariances must be symmetric to the bit (the M-step
    /// writes both halves of each from their mean): they are not compared
    /// half against half again.
    pub(crate) fn with_factors(p: MixtureParams, factors: Vec<f64>) -> Result<Self, ModelError> {
        Self::build(p, Some(factors))
    }

    fn build(p: MixtureParams, factors: Option<Vec<f64>>) -> Result<Self, ModelError> {
        let k = p.weights.len();
        let d = p.dim;
        if k == 0 || d == 0 {
            return Err(ModelError::Shape(format!(
                "K = {k} and d = {d} must both be at least 1"
            )));
        }
        if p.means.len() != k * d {
            return Err(ModelError::Shape(format!(
                "{} mean values for K = {k}, d = {d}",
                p.means.len()
            )));
        }
        let plen = p.covariance.param_len(d);
        if p.covariances.len() != k * plen {
            return Err(ModelError::Shape(format!(
                "{} covariance values for K = {k}, d = {d}, {} covariance",
                p.covariances.len(),
                p.covariance
            )));
        }
        if !kernels::all_finite(&p.weights) {
            return Err(ModelError::NonFinite("weights"));
        }
        if !kernels::all_finite(&p.means) {
            return Err(ModelError::NonFinite("means"));
        }
        if !kernels::all_finite(&p.covariances) {
            return Err(ModelError::NonFinite("covariances"));
        }
        let sum: f64 = p.weights.iter().sum();
        if p.weights.iter().any(|&w| w <= 0.0) || (sum - 1.0).abs() > 1e-6 {
            return Err(ModelError::Weights(sum));
        }
        let given = p.covariance == CovarianceType::Full
            && factors.as_ref().is_some_and(|f| f.len() == k * plen);
        let mut factor = match factors {
            Some(f) if given => f,
            _ => vec![0.0; k * plen],
        };
        let mut inv_diag = Vec::new();
        let mut log_norm = vec![0.0; k];
        match p.covariance {
            CovarianceType::Full => {
                inv_diag = vec![0.0; k * d];
                for j in 0..k {
                    let c = &p.covariances[j * plen..(j + 1) * plen];
                    debug_assert!(
                        !given || (0..d).all(|a| (0..a).all(|b| c[a * d + b] == c[b * d + a])),
                        "the M-step's covariances are symmetric"
                    );
                    // (Given factors: the M-step's covariances, symmetric
                    // by construction; the strided comparison was half of
                    // this function's time at d = 32.)
                    for a in (0..d).filter(|_| !given) {
                        for b in 0..a {
                            let (x, y) = (c[a * d + b], c[b * d + a]);
                            // (The M-step's covariances are symmetric to the
                            // bit: no square root for those.)
                            if x != y && (x - y).abs() > 1e-9 * (c[a * d + a] * c[b * d + b]).sqrt()
                            {
                                return Err(ModelError::NotPositiveDefinite(j));
                            }
                        }
                    }
                    let l = &mut factor[j * plen..(j + 1) * plen];
                    if !given && !cholesky(c, d, l) {
                        return Err(ModelError::NotPositiveDefinite(j));
                    }
                    let mut half_log_det = 0.0;
                    for a in 0..d {
                        half_log_det += l[a * d + a].ln();
                        inv_diag[j * d + a] = 1.0 / l[a * d + a];
                    }
                    log_norm[j] = p.weights[j].ln() - 0.5 * d as f64 * LN_2PI - half_log_det;
                }
            }
            CovarianceType::Diagonal | CovarianceType::Spherical => {
                for j in 0..k {
                    let mut half_log_det = 0.0;
                    for a in 0..plen {
                        let v = p.covariances[j * plen + a];
                        if !(v > 0.0) {
                            return Err(ModelError::NotPositiveDefinite(j));
                        }
                        factor[j * plen + a] = 1.0 / v.sqrt();
                        half_log_det += 0.5 * v.ln();
                    }
                    if p.covariance == CovarianceType::Spherical {
                        half_log_det *= d as f64;
                    }
                    log_norm[j] = p.weights[j].ln() - 0.5 * d as f64 * LN_2PI - half_log_det;
                }
            }
        }
        if !log_norm.iter().all(|v| v.is_finite()) {
            return Err(ModelError::NonFinite("log-determinant"));
        }
        Ok(GaussianMixture {
            p,
            k,
            factor,
            inv_diag,
            log_norm,
        })
    }

    /// Its covariances and factors, for an M-step to reuse the memory.
    pub(crate) fn into_buffers(self) -> (Vec<f64>, Vec<f64>) {
        (self.p.covariances, self.factor)
    }

    /// The raw parameters.
    pub fn params(&self) -> &MixtureParams {
        &self.p
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.p.dim
    }

    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.k
    }

    /// Covariance type.
    pub fn covariance_type(&self) -> CovarianceType {
        self.p.covariance
    }

    /// The K weights.
    pub fn weights(&self) -> &[f64] {
        &self.p.weights
    }

    /// Mean of component `j` (d numbers).
    pub fn mean(&self, j: usize) -> &[f64] {
        let d = self.p.dim;
        &self.p.means[j * d..(j + 1) * d]
    }

    /// All means, K rows of d, row-major.
    pub fn means(&self) -> &[f64] {
        &self.p.means
    }

    /// Variance of component `j` along coordinate `a` (the diagonal entry
    /// of [`GaussianMixture::covariance_matrix`], without building it).
    pub(crate) fn variance(&self, j: usize, a: usize) -> f64 {
        let d = self.p.dim;
        let plen = self.p.covariance.param_len(d);
        let c = &self.p.covariances[j * plen..(j + 1) * plen];
        match self.p.covariance {
            CovarianceType::Full => c[a * d + a],
            CovarianceType::Diagonal => c[a],
            CovarianceType::Spherical => c[0],
        }
    }

    /// Covariance of component `j` as a full d-by-d row-major matrix,
    /// whatever the covariance type.
    pub fn covariance_matrix(&self, j: usize) -> Vec<f64> {
        let d = self.p.dim;
        let plen = self.p.covariance.param_len(d);
        let c = &self.p.covariances[j * plen..(j + 1) * plen];
        match self.p.covariance {
            CovarianceType::Full => c.to_vec(),
            CovarianceType::Diagonal => {
                let mut m = vec![0.0; d * d];
                for a in 0..d {
                    m[a * d + a] = c[a];
                }
                m
            }
            CovarianceType::Spherical => {
                let mut m = vec![0.0; d * d];
                for a in 0..d {
                    m[a * d + a] = c[0];
                }
                m
            }
        }
    }

    /// Number of free parameters (weights, means, covariances).
    pub fn n_free_params(&self) -> usize {
        let d = self.p.dim;
        (self.k - 1) + self.k * d + self.k * self.p.covariance.free_params(d)
    }

    /// Writes `ln w_j + ln N(x_i | μ_j, Σ_j)` for every point i and component
    /// j into `out` (n rows of K, row-major).
    ///
    /// `points` holds n rows of d; `out.len()` must be n*K.
    pub fn weighted_log_probs(&self, points: &[f64], out: &mut [f64]) {
        self.log_probs(points, out, false);
    }

    /// [`GaussianMixture::weighted_log_probs`] for the E-step: an entry
    /// may be `-inf` instead of its value when the component's
    /// responsibility for the point is certain to be exactly 0 (its term
    /// would be below [`NEGLIGIBLE_LOG_RATIO`] of the point's largest),
    /// so that [`normalise_row_parts`], [`normalise_row`] and [`argmax`]
    /// give the same bits as on the full values (the one exception: a
    /// density that would have been NaN, from an overflow inside the
    /// substitution at points about 1e150 away, becomes a responsibility
    /// of 0 instead of a NaN row). Full-covariance points of at least
    /// [`PRUNE_MIN_DIM`] dimensions skip the rest of such a component's
    /// substitution ([`GaussianMixture::full_log_probs_pruned`]); other
    /// shapes compute every entry.
    pub(crate) fn e_step_log_probs(&self, points: &[f64], out: &mut [f64]) {
        self.log_probs(points, out, true);
    }

    /// The AVX-512, AVX2 or plain kernels, the widest the CPU runs.
    #[inline(always)]
    fn log_probs(&self, points: &[f64], out: &mut [f64], prune: bool) {
        // AVX-512 for the wide kernels only: the specialised ones of d ≤ 8
        // (the judging streams' 1-D and 2-D) were tuned in AVX2 and stay so.
        #[cfg(target_arch = "x86_64")]
        if self.p.dim > WIDE_FROM && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { self.weighted_log_probs_avx512(points, out, prune) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.weighted_log_probs_avx2(points, out, prune) };
            return;
        }
        self.weighted_log_probs_any(points, out, prune);
    }

    /// The kernels compiled with AVX2 enabled (wider vectors, same
    /// operations in the same order, so the same bits as without).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn weighted_log_probs_avx2(&self, points: &[f64], out: &mut [f64], prune: bool) {
        self.weighted_log_probs_any(points, out, prune);
    }

    /// The kernels compiled with AVX-512F enabled: 8-lane vectors (the
    /// 16 points of a substitution block in two registers instead of four,
    /// and twice the registers), same operations in the same order (still
    /// never fused), so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn weighted_log_probs_avx512(&self, points: &[f64], out: &mut [f64], prune: bool) {
        self.weighted_log_probs_any(points, out, prune);
    }

    #[inline(always)]
    fn weighted_log_probs_any(&self, points: &[f64], out: &mut [f64], prune: bool) {
        let d = self.p.dim;
        let n = points.len() / d;
        debug_assert_eq!(points.len(), n * d);
        debug_assert_eq!(out.len(), n * self.k);
        match self.p.covariance {
            CovarianceType::Full => match d {
                1 => self.full_log_probs::<1>(points, out),
                2 => self.full_log_probs::<2>(points, out),
                3 => self.full_log_probs::<3>(points, out),
                4 => self.full_log_probs::<4>(points, out),
                5 => self.full_log_probs::<5>(points, out),
                6 => self.full_log_probs::<6>(points, out),
                8 => self.full_log_probs::<8>(points, out),
                _ if prune && self.k > 1 && d >= PRUNE_MIN_DIM => {
                    self.full_log_probs_pruned(points, out)
                }
                _ => self.full_log_probs::<0>(points, out),
            },
            CovarianceType::Diagonal | CovarianceType::Spherical => {
                let plen = self.p.covariance.param_len(d);
                let k = self.k;
                for j in 0..k {
                    let mu = self.mean(j);
                    let f = &self.factor[j * plen..(j + 1) * plen];
                    let c = self.log_norm[j];
                    for (i, x) in points.chunks_exact(d).enumerate() {
                        let mut q = 0.0;
                        if plen == 1 {
                            for a in 0..d {
                                let z = x[a] - mu[a];
                                q += z * z;
                            }
                            q *= f[0] * f[0];
                        } else {
                            for a in 0..d {
                                let z = (x[a] - mu[a]) * f[a];
                                q += z * z;
                            }
                        }
                        out[i * k + j] = c - 0.5 * q;
                    }
                }
            }
        }
    }

    /// Full-covariance kernel; `D` is the dimension when known at compile
    /// time (so the loops unroll) and 0 for any other dimension.
    ///
    /// Points are taken [`BLOCK`] at a time and transposed, so that forward
    /// substitution runs on BLOCK independent points side by side: the
    /// inner loops are vectorisable and free of the serial dependency one
    /// point's substitution has. Wide points (`D == 0`) also take several
    /// rows of the factor at a time ([`kernels::solve_block`], same bits).
    #[inline(always)]
    fn full_log_probs<const D: usize>(&self, points: &[f64], out: &mut [f64]) {
        if D == 0 {
            self.full_log_probs_wide(points, out);
            return;
        }
        let d = D;
        let k = self.k;
        let n = points.len() / d;
        let mut xt = vec![0.0; d * BLOCK];
        let mut y = vec![0.0; d * BLOCK];
        let mut start = 0;
        while start < n {
            let m = BLOCK.min(n - start);
            for p in 0..BLOCK {
                for a in 0..d {
                    xt[a * BLOCK + p] = if p < m {
                        points[(start + p) * d + a]
                    } else {
                        0.0
                    };
                }
            }
            for j in 0..k {
                let mu = &self.p.means[j * d..(j + 1) * d];
                let l = &self.factor[j * d * d..(j + 1) * d * d];
                let inv = &self.inv_diag[j * d..(j + 1) * d];
                let mut q = [0.0; BLOCK];
                for a in 0..d {
                    let mut s = [0.0; BLOCK];
                    let xa = &xt[a * BLOCK..(a + 1) * BLOCK];
                    for p in 0..BLOCK {
                        s[p] = xa[p] - mu[a];
                    }
                    for b in 0..a {
                        let lab = l[a * d + b];
                        let yb = &y[b * BLOCK..(b + 1) * BLOCK];
                        for p in 0..BLOCK {
                            s[p] -= lab * yb[p];
                        }
                    }
                    let ia = inv[a];
                    let ya = &mut y[a * BLOCK..(a + 1) * BLOCK];
                    for p in 0..BLOCK {
                        let v = s[p] * ia;
                        ya[p] = v;
                        q[p] += v * v;
                    }
                }
                let c = self.log_norm[j];
                for p in 0..m {
                    out[(start + p) * k + j] = c - 0.5 * q[p];
                }
            }
            start += BLOCK;
        }
    }

    /// [`GaussianMixture::full_log_probs`] for any dimension: points taken
    /// [`kernels::LANES`] at a time, transposed, and solved two rows of
    /// the factor at a time ([`kernels::solve_block`]; same bits as one
    /// row at a time).
    #[inline(always)]
    fn full_log_probs_wide(&self, points: &[f64], out: &mut [f64]) {
        const LANES: usize = kernels::LANES;
        let d = self.p.dim;
        let k = self.k;
        let n = points.len() / d;
        let mut xt = vec![0.0; d * LANES];
        let mut y = vec![0.0; d * LANES];
        for (b, block) in points.chunks(LANES * d).enumerate() {
            let m = block.len() / d;
            for (p, x) in block.chunks_exact(d).enumerate() {
                for a in 0..d {
                    xt[a * LANES + p] = x[a];
                }
            }
            for a in 0..d {
                xt[a * LANES + m..(a + 1) * LANES].fill(0.0);
            }
            for j in 0..k {
                let q = kernels::solve_block(
                    d,
                    &self.factor[j * d * d..(j + 1) * d * d],
                    &self.inv_diag[j * d..(j + 1) * d],
                    &self.p.means[j * d..(j + 1) * d],
                    &xt,
                    &mut y,
                );
                let c = self.log_norm[j];
                for p in 0..m {
                    out[(b * LANES + p) * k + j] = c - 0.5 * q[p];
                }
            }
        }
        debug_assert!(n.div_ceil(LANES) == points.chunks(LANES * d).len());
    }

    /// [`GaussianMixture::full_log_probs_wide`] for the E-step
    /// ([`GaussianMixture::e_step_log_probs`]): components negligible for
    /// a whole block of points are left unfinished, as `-inf`.
    ///
    /// The squared distance `q` of a substitution only grows row by row
    /// (rounding is monotone and every term `y_a²` is ≥ 0), so
    /// `c_j − q/2` after some rows bounds the final value from above; once
    /// that bound is below [`NEGLIGIBLE_LOG_RATIO`] of the largest value
    /// already finished for the point, the final term would be too, and
    /// its responsibility is exactly 0 whatever the remaining rows give.
    /// To make that happen for whole blocks of [`kernels::LANES`] points:
    ///
    /// 1. every point's likely component is guessed from the first
    ///    [`GUESS_ROWS`] rows of each substitution (the component with the
    ///    largest weighted density of the first coordinates alone);
    /// 2. the points are taken in order of their guess, so a block mostly
    ///    shares one;
    /// 3. in each block the guessed components are solved to the end
    ///    first, then the others, checking the bound of all the block's
    ///    points every few rows ([`next_check`]).
    ///
    /// Every value that is finished is computed by the same operations as
    /// in [`GaussianMixture::full_log_probs_wide`], lane by lane (the lanes
    /// of a block never mix), so it has the same bits; the guesses and the
    /// order only decide how much is skipped.
    #[inline(always)]
    fn full_log_probs_pruned(&self, points: &[f64], out: &mut [f64]) {
        const LANES: usize = kernels::LANES;
        let d = self.p.dim;
        let k = self.k;
        let n = points.len() / d;
        let guess_rows = GUESS_ROWS.min(d);
        let mut xt = vec![0.0; d * LANES];
        let mut y = vec![0.0; d * LANES];
        let factor = |j: usize| &self.factor[j * d * d..(j + 1) * d * d];
        let inv = |j: usize| &self.inv_diag[j * d..(j + 1) * d];
        let mean = |j: usize| &self.p.means[j * d..(j + 1) * d];
        // 1. Guesses, from the first rows only: the largest weighted
        // density of those coordinates alone (up to a constant), whose
        // factor is the first rows and columns of the whole one.
        let marginal: Vec<f64> = (0..k)
            .map(|j| {
                let half_log_det: f64 = inv(j)[..guess_rows].iter().map(|v| v.ln()).sum();
                self.p.weights[j].ln() + half_log_det
            })
            .collect();
        let mut guess = vec![0usize; n];
        for (b, (block, g)) in points
            .chunks(LANES * d)
            .zip(guess.chunks_mut(LANES))
            .enumerate()
        {
            // The next block whole, not only its first rows: the third
            // pass reads every row of every point, in another order.
            let next = ((b + 1) * LANES * d).min(points.len());
            kernels::prefetch(&points[next..((b + 2) * LANES * d).min(points.len())]);
            for (p, x) in block.chunks_exact(d).enumerate() {
                for (row, &v) in xt.chunks_exact_mut(LANES).zip(&x[..guess_rows]) {
                    row[p] = v;
                }
            }
            let mut best = [f64::NEG_INFINITY; LANES];
            for (j, &c) in marginal.iter().enumerate() {
                let mut q = [0.0; LANES];
                kernels::solve_rows(
                    d,
                    0..guess_rows,
                    factor(j),
                    inv(j),
                    mean(j),
                    &xt,
                    &mut y,
                    &mut q,
                );
                for (p, gp) in g.iter_mut().enumerate() {
                    let v = c - 0.5 * q[p];
                    if v > best[p] {
                        best[p] = v;
                        *gp = j;
                    }
                }
            }
        }
        // 2. Points in order of their guess (a counting sort).
        let mut at = vec![0usize; k + 1];
        for &g in &guess {
            at[g + 1] += 1;
        }
        for j in 0..k {
            at[j + 1] += at[j];
        }
        let mut order = vec![0usize; n];
        for (i, &g) in guess.iter().enumerate() {
            order[at[g]] = i;
            at[g] += 1;
        }
        // 3. Blocks of points in that order.
        let mut first = vec![false; k];
        for (b, block) in order.chunks(LANES).enumerate() {
            let m = block.len();
            // The next block's points, wherever they are in the batch: read
            // in guess order, which no hardware prefetcher follows (their
            // first touch was a sixth of this kernel at d = 32).
            for &i in order.iter().skip((b + 1) * LANES).take(LANES) {
                kernels::prefetch(&points[i * d..(i + 1) * d]);
            }
            for (p, &i) in block.iter().enumerate() {
                let x = &points[i * d..(i + 1) * d];
                for (row, &v) in xt.chunks_exact_mut(LANES).zip(x) {
                    row[p] = v;
                }
            }
            for a in 0..d {
                xt[a * LANES + m..(a + 1) * LANES].fill(0.0);
            }
            first.fill(false);
            for &i in block {
                first[guess[i]] = true;
            }
            // The largest finished value of each point so far (+inf in the
            // padding lanes: nothing there can keep a component).
            let mut top = [f64::NEG_INFINITY; LANES];
            top[m..].fill(f64::INFINITY);
            for j in (0..k)
                .filter(|&j| first[j])
                .chain((0..k).filter(|&j| !first[j]))
            {
                let c = self.log_norm[j];
                let mut q = [0.0; LANES];
                let mut a = 0;
                let negligible = loop {
                    let next = if first[j] { d } else { next_check(a, d) };
                    kernels::solve_rows(
                        d,
                        a..next,
                        factor(j),
                        inv(j),
                        mean(j),
                        &xt,
                        &mut y,
                        &mut q,
                    );
                    a = next;
                    if a == d {
                        break false;
                    }
                    // Every lane, without stopping early (vectorises); NaN
                    // is never negligible. A plain loop: `Iterator::fold`
                    // here was compiled as a call outside the AVX2 code,
                    // 2 % of the learner's instructions at d = 32.
                    let mut all = true;
                    for p in 0..LANES {
                        all &= (c - 0.5 * q[p]) - top[p] < NEGLIGIBLE_LOG_RATIO;
                    }
                    if all {
                        break true;
                    }
                };
                for (p, &i) in block.iter().enumerate() {
                    out[i * k + j] = if negligible {
                        f64::NEG_INFINITY
                    } else {
                        let v = c - 0.5 * q[p];
                        if v > top[p] {
                            top[p] = v;
                        }
                        v
                    };
                }
            }
        }
    }

    /// Log density of the mixture at one point.
    pub fn log_prob(&self, x: &[f64]) -> f64 {
        let mut lp = vec![0.0; self.k];
        self.weighted_log_probs(x, &mut lp);
        log_sum_exp(&lp)
    }

    /// Responsibilities of every component for one point (written to
    /// `resp`, K numbers) and the point's log density (returned).
    pub fn responsibilities(&self, x: &[f64], resp: &mut [f64]) -> f64 {
        self.weighted_log_probs(x, resp);
        normalise_row(resp)
    }

    /// The most responsible component for one point.
    pub fn predict(&self, x: &[f64]) -> usize {
        let mut lp = vec![0.0; self.k];
        self.weighted_log_probs(x, &mut lp);
        argmax(&lp)
    }

    /// Scores a batch of points: per point its log density and label, and,
    /// when `resp` is given, its K responsibilities.
    ///
    /// `scratch` is reused between calls so that scoring allocates nothing
    /// per point.
    pub fn score_batch(
        &self,
        points: &[f64],
        scratch: &mut Vec<f64>,
        log_lik: &mut Vec<f64>,
        labels: &mut Vec<u32>,
        resp: Option<&mut Vec<f64>>,
    ) {
        let k = self.k;
        let n = points.len() / self.p.dim;
        scratch.clear();
        scratch.resize(n * k, 0.0);
        self.weighted_log_probs(points, scratch);
        let start = log_lik.len();
        log_lik.reserve(n);
        labels.reserve(n);
        for row in scratch.chunks_exact_mut(k) {
            let label = argmax(row) as u32;
            let ll = normalise_row(row);
            if ll.is_nan() || ll == f64::NEG_INFINITY {
                // Far beyond every component (its density underflowed or
                // overflowed): -inf and no label, never NaN.
                labels.push(NO_LABEL);
                log_lik.push(f64::NEG_INFINITY);
                row.iter_mut().for_each(|r| *r = 0.0);
            } else {
                labels.push(label);
                log_lik.push(ll);
            }
        }
        debug_assert_eq!(log_lik.len() - start, n);
        if let Some(r) = resp {
            r.extend_from_slice(scratch);
        }
    }

    /// Average log density of the points (n rows of d) under the mixture.
    pub fn mean_log_prob(&self, points: &[f64]) -> f64 {
        let n = points.len() / self.p.dim;
        if n == 0 {
            return f64::NAN;
        }
        let mut scratch = vec![0.0; n.min(4096) * self.k];
        let mut total = 0.0;
        for block in points.chunks(4096 * self.p.dim) {
            let m = block.len() / self.p.dim;
            let s = &mut scratch[..m * self.k];
            self.weighted_log_probs(block, s);
            total += s.chunks_exact(self.k).map(log_sum_exp).sum::<f64>();
        }
        total / n as f64
    }

    /// The dequantised log-likelihood of rounded points: a lower bound of
    /// the log probability of each point's rounding cell (over the cell's
    /// volume), so that it is a density on the scale of
    /// [`GaussianMixture::mean_log_prob`] that no component can inflate by
    /// shrinking onto one repeated value.
    ///
    /// A value rounded to the step `q` stands for `x + u` with `u` uniform
    /// on the cell, of variance `noise = q²/12` along that dimension (0 for
    /// a continuous one). Per component the expected log density over the
    /// cell is exact, `ln N(x | μ_j, Σ_j) − ½ tr(Σ_j⁻¹ diag(noise))`, and
    /// the log-sum-exp of these is at most `E_u ln p(x + u)`, which is at
    /// most `ln P(cell) − ln vol(cell)` (Jensen, twice). A component of
    /// variance `s²` sitting on one value earns `−½ ln(2π s²) − q²/(24 s²)`
    /// along the axis, at most `ln(1/q) − 0.18`: never more than a
    /// uniform rounding cell, against `ln(1/q) + 0.32` for the plain
    /// density at the `q²/12` floor. With no noise it is the total of
    /// [`GaussianMixture::mean_log_prob`] exactly.
    ///
    /// Returns the total over the points (n rows of d); `noise` holds one
    /// variance per dimension.
    pub fn dequantised_log_lik(&self, points: &[f64], noise: &[f64]) -> f64 {
        let d = self.p.dim;
        assert_eq!(noise.len(), d, "one noise variance per dimension");
        let plen = self.p.covariance.param_len(d);
        // −½ tr(Σ_j⁻¹ diag(noise)) per component.
        let shift: Vec<f64> = (0..self.k)
            .map(|j| {
                let f = &self.factor[j * plen..(j + 1) * plen];
                let trace: f64 = match self.p.covariance {
                    CovarianceType::Full => {
                        // (Σ⁻¹)_aa = |L⁻¹ e_a|²: a forward solve per axis.
                        let mut y = vec![0.0; d];
                        (0..d)
                            .filter(|&a| noise[a] > 0.0)
                            .map(|a| {
                                y.iter_mut().for_each(|v| *v = 0.0);
                                let mut sq = 0.0;
                                for r in a..d {
                                    let mut v = if r == a { 1.0 } else { 0.0 };
                                    for c in a..r {
                                        v -= f[r * d + c] * y[c];
                                    }
                                    y[r] = v / f[r * d + r];
                                    sq += y[r] * y[r];
                                }
                                noise[a] * sq
                            })
                            .sum()
                    }
                    CovarianceType::Diagonal => (0..d).map(|a| noise[a] * f[a] * f[a]).sum(),
                    CovarianceType::Spherical => noise.iter().sum::<f64>() * f[0] * f[0],
                };
                -0.5 * trace
            })
            .collect();
        let n = points.len() / d;
        let mut scratch = vec![0.0; n.min(4096) * self.k];
        let mut total = 0.0;
        for block in points.chunks(4096 * d) {
            let m = block.len() / d;
            let s = &mut scratch[..m * self.k];
            self.weighted_log_probs(block, s);
            for row in s.chunks_exact_mut(self.k) {
                row.iter_mut().zip(&shift).for_each(|(v, c)| *v += c);
                total += log_sum_exp(row);
            }
        }
        total
    }

    /// Draws `n` points (row-major) from the mixture.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, n: usize) -> Vec<f64> {
        let d = self.p.dim;
        let mut out = Vec::with_capacity(n * d);
        let mut z = vec![0.0; d];
        for _ in 0..n {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut j = self.k - 1;
            for (c, w) in self.p.weights.iter().enumerate() {
                acc += w;
                if u < acc {
                    j = c;
                    break;
                }
            }
            for v in z.iter_mut() {
                *v = StandardNormal.sample(rng);
            }
            let mu = self.mean(j);
            let plen = self.p.covariance.param_len(d);
            let f = &self.factor[j * plen..(j + 1) * plen];
            for a in 0..d {
                let dev = match self.p.covariance {
                    CovarianceType::Full => (0..=a).map(|b| f[a * d + b] * z[b]).sum::<f64>(),
                    CovarianceType::Diagonal => z[a] / f[a],
                    CovarianceType::Spherical => z[a] / f[0],
                };
                out.push(mu[a] + dev);
            }
        }
        out
    }
}

/// `ln Σ exp(v_i)` computed stably.
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Turns one row of weighted log probabilities into responsibilities in
/// place and returns the row's log-sum-exp (the point's log density).
#[inline]
pub(crate) fn normalise_row(row: &mut [f64]) -> f64 {
    let (m, s) = normalise_row_parts(row);
    m + s.ln()
}

/// Turns one row of weighted log probabilities into responsibilities in
/// place and returns `(max, sum)` with the row's log-sum-exp equal to
/// `max + ln(sum)` and `1 <= sum <= K`, so callers can defer the logarithm.
/// The largest term's `exp(0) = 1` and negligible terms are not computed.
#[inline]
pub(crate) fn normalise_row_parts(row: &mut [f64]) -> (f64, f64) {
    let top = argmax(row);
    let m = row[top];
    normalise_from(row, top, m)
}

/// [`normalise_row_parts`] for the row's largest entry `m`, at `top`.
#[inline]
fn normalise_from(row: &mut [f64], top: usize, m: f64) -> (f64, f64) {
    let mut s = 0.0;
    for (i, v) in row.iter_mut().enumerate() {
        let t = *v - m;
        let e = if i == top {
            1.0
        } else if t < NEGLIGIBLE_LOG_RATIO {
            0.0
        } else {
            t.exp()
        };
        *v = e;
        s += e;
    }
    let inv = 1.0 / s;
    for v in row.iter_mut() {
        *v *= inv;
    }
    (m, s)
}

/// Rows of at least this many terms go through
/// [`normalise_wide_row_parts`]; shorter ones are cheaper entry by entry
/// (the 2-D, K = 2 learner took 411 → 420 instructions per point with the
/// count).
pub(crate) const SHORT_CUT_FROM: usize = 4;

/// [`normalise_row_parts`], the same numbers, with a short cut for a row
/// whose largest term stands alone: the entries not negligible beside the
/// largest (NaN counts) are in most rows of separated components the
/// largest alone, since `m − m = 0` (or NaN) always counts. Then the loop
/// would write 1 there and 0 elsewhere, sum them to exactly 1 and divide
/// by 1; here without its branch per entry (the largest one's
/// mispredicted about once a row).
#[inline]
pub(crate) fn normalise_wide_row_parts(row: &mut [f64]) -> (f64, f64) {
    let top = argmax(row);
    let m = row[top];
    if kept_terms(row, m) == 1 {
        row.fill(0.0);
        row[top] = 1.0;
        return (m, 1.0);
    }
    normalise_from(row, top, m)
}

/// Entries of `row` not negligible beside its largest, `m` (NaN counts):
/// at least 1, the largest itself.
#[inline]
fn kept_terms(row: &[f64], m: f64) -> usize {
    row.iter()
        .filter(|&&v| !(v - m < NEGLIGIBLE_LOG_RATIO))
        .count()
}

/// Index of the largest entry (the first one on ties).
#[inline]
pub(crate) fn argmax(row: &[f64]) -> usize {
    let Some(&first) = row.first() else {
        return 0;
    };
    // The best value kept beside its index and both chosen by selects,
    // not branches: which component is largest changes from point to
    // point, and a mispredicted branch per point was a few per cent of
    // the d = 32 learner.
    let (mut best, mut top) = (0, first);
    for (i, &v) in row.iter().enumerate().skip(1) {
        let above = v > top;
        best = if above { i } else { best };
        top = if above { v } else { top };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const TOL: f64 = 1e-10;

    /// The write-up's first example: means (1, 1) and (7, 7), covariances
    /// [[3, 2], [2, 3]] and [[2, -1], [-1, 2]], equal weights.
    fn two_d() -> GaussianMixture {
        crate::model::testdata::two_clusters()
    }

    /// Density of a 2-D Gaussian computed the textbook way, for comparison.
    fn textbook(x: &[f64], mu: &[f64], c: &[f64]) -> f64 {
        let det = c[0] * c[3] - c[1] * c[2];
        let (dx, dy) = (x[0] - mu[0], x[1] - mu[1]);
        let q = (c[3] * dx * dx - 2.0 * c[1] * dx * dy + c[0] * dy * dy) / det;
        (-0.5 * q).exp() / (2.0 * std::f64::consts::PI * det.sqrt())
    }

    #[test]
    fn wide_rows_normalise_as_entry_by_entry() {
        // Rows where one entry stands alone (the short cut), where others
        // sit just inside or outside the negligible ratio, and rows with
        // infinities and NaN, against the entry-by-entry loop, to the bit.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let special = [
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NAN,
            NEGLIGIBLE_LOG_RATIO,
            NEGLIGIBLE_LOG_RATIO - 1e-9,
            NEGLIGIBLE_LOG_RATIO + 1e-9,
            0.0,
        ];
        let mut short_cuts = 0;
        for k in 1..=7 {
            for _ in 0..2000 {
                let base = rng.random_range(-800.0..800.0);
                let row: Vec<f64> = (0..k)
                    .map(|_| match rng.random_range(0..10) {
                        0..=3 => f64::NEG_INFINITY,
                        4..=6 => base + special[rng.random_range(0..special.len())],
                        _ => base - rng.random_range(0.0..80.0),
                    })
                    .collect();
                let mut fast = row.clone();
                let (m, s) = normalise_wide_row_parts(&mut fast);
                let mut slow = row.clone();
                let (m2, s2) = normalise_row_parts(&mut slow);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&slow), "{row:?}");
                assert_eq!(
                    (m.to_bits(), s.to_bits()),
                    (m2.to_bits(), s2.to_bits()),
                    "{row:?}"
                );
                short_cuts += usize::from(kept_terms(&row, m) == 1);
            }
        }
        assert!(short_cuts > 2000, "{short_cuts} rows took the short cut");
    }

    #[test]
    fn log_prob_matches_textbook_density() {
        let m = two_d();
        for x in [[0.0, 0.0], [1.0, 1.0], [4.0, 5.0], [7.5, 6.0]] {
            let p = 0.5 * textbook(&x, &[1.0, 1.0], &[3.0, 2.0, 2.0, 3.0])
                + 0.5 * textbook(&x, &[7.0, 7.0], &[2.0, -1.0, -1.0, 2.0]);
            assert!((m.log_prob(&x) - p.ln()).abs() < TOL);
        }
    }

    #[test]
    fn responsibilities_sum_to_one_far_away() {
        let m = two_d();
        let mut r = [0.0; 2];
        let ll = m.responsibilities(&[1e6, -1e6], &mut r);
        assert!(ll.is_finite());
        assert!((r[0] + r[1] - 1.0).abs() < TOL);
        assert_eq!(m.predict(&[0.5, 0.9]), 0);
        assert_eq!(m.predict(&[7.5, 6.9]), 1);
    }

    #[test]
    fn diag_and_spherical_agree_with_full() {
        let full = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Full,
            dim: 3,
            weights: vec![0.3, 0.7],
            means: vec![0.0, 1.0, 2.0, -1.0, 0.5, 3.0],
            covariances: vec![
                2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0,
                0.0, 4.0,
            ],
        })
        .unwrap();
        let diag = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Diagonal,
            dim: 3,
            weights: vec![0.3, 0.7],
            means: vec![0.0, 1.0, 2.0, -1.0, 0.5, 3.0],
            covariances: vec![2.0, 2.0, 2.0, 1.0, 0.5, 4.0],
        })
        .unwrap();
        let sph = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Spherical,
            dim: 3,
            weights: vec![0.3, 0.7],
            means: vec![0.0, 1.0, 2.0, -1.0, 0.5, 3.0],
            covariances: vec![2.0, 1.0],
        })
        .unwrap();
        let x = [0.3, -0.2, 2.5];
        assert!((full.log_prob(&x) - diag.log_prob(&x)).abs() < TOL);
        assert_eq!(diag.covariance_matrix(1)[4], 0.5);
        assert_eq!(sph.covariance_matrix(1)[8], 1.0);
        // Spherical component 0 equals the full one; check via a one-component mixture.
        let one = |m: &GaussianMixture| {
            let mut r = [0.0; 2];
            m.weighted_log_probs(&x, &mut r);
            r[0]
        };
        assert!((one(&full) - one(&sph)).abs() < TOL);
    }

    #[test]
    fn refuses_bad_parameters() {
        let mut p = two_d().params().clone();
        p.covariances[1] = 5.0;
        p.covariances[2] = 5.0;
        assert_eq!(
            GaussianMixture::new(p).unwrap_err(),
            ModelError::NotPositiveDefinite(0)
        );
        let mut p = two_d().params().clone();
        p.weights = vec![0.7, 0.7];
        assert!(matches!(
            GaussianMixture::new(p),
            Err(ModelError::Weights(_))
        ));
        let mut p = two_d().params().clone();
        p.means[3] = f64::NAN;
        assert_eq!(
            GaussianMixture::new(p).unwrap_err(),
            ModelError::NonFinite("means")
        );
        let mut p = two_d().params().clone();
        p.means.pop();
        assert!(matches!(GaussianMixture::new(p), Err(ModelError::Shape(_))));
    }

    #[test]
    fn generic_dimension_kernel_matches_specialised() {
        // d = 7 takes the dynamic kernel; compare against a sum of 1-D parts.
        let d = 7;
        let mut cov = vec![0.0; d * d];
        for a in 0..d {
            cov[a * d + a] = 1.0 + a as f64;
        }
        let m = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Full,
            dim: d,
            weights: vec![1.0],
            means: vec![0.5; d],
            covariances: cov,
        })
        .unwrap();
        let x = [1.0, 2.0, 0.0, -1.0, 0.5, 3.0, 0.25];
        let expect: f64 = (0..d)
            .map(|a| {
                let v = 1.0 + a as f64;
                -0.5 * (LN_2PI + v.ln() + (x[a] - 0.5f64).powi(2) / v)
            })
            .sum();
        assert!((m.log_prob(&x) - expect).abs() < TOL);
    }

    /// A random full-covariance mixture in d dimensions (means spread out,
    /// covariances `A Aᵀ / d + 0.5 I`) and n points around it.
    fn random_full(d: usize, k: usize, n: usize, seed: u64) -> (GaussianMixture, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let means: Vec<f64> = (0..k * d).map(|_| 2.0 * normal()).collect();
        let mut covariances = Vec::with_capacity(k * d * d);
        for _ in 0..k {
            let a: Vec<f64> = (0..d * d).map(|_| normal()).collect();
            for r in 0..d {
                for c in 0..d {
                    let dot: f64 = (0..d).map(|t| a[r * d + t] * a[c * d + t]).sum();
                    covariances.push(dot / d as f64 + if r == c { 0.5 } else { 0.0 });
                }
            }
        }
        let m = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Full,
            dim: d,
            weights: vec![1.0 / k as f64; k],
            means,
            covariances,
        })
        .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1);
        let points = m.sample(&mut rng, n);
        (m, points)
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn every_kernel_gives_the_same_bits() {
        // The selected kernel (AVX-512 or AVX2 where the CPU has it), the
        // AVX2 one, the plain one,
        // and the generic-dimension one where a specialised one exists.
        for (d, k) in [(2, 3), (8, 4), (7, 2), (13, 3), (32, 5), (41, 6)] {
            let (m, x) = random_full(d, k, 203, d as u64);
            let mut selected = vec![0.0; 203 * k];
            m.weighted_log_probs(&x, &mut selected);
            let mut plain = vec![0.0; 203 * k];
            m.weighted_log_probs_any(&x, &mut plain, false);
            assert_eq!(bits(&selected), bits(&plain), "d = {d}");
            let mut generic = vec![0.0; 203 * k];
            m.full_log_probs::<0>(&x, &mut generic);
            assert_eq!(bits(&selected), bits(&generic), "d = {d}");
            // The E-step's pruned densities, selected kernel and plain.
            let mut pruned = vec![0.0; 203 * k];
            m.e_step_log_probs(&x, &mut pruned);
            let mut pruned_plain = vec![0.0; 203 * k];
            m.weighted_log_probs_any(&x, &mut pruned_plain, true);
            assert_eq!(bits(&pruned), bits(&pruned_plain), "d = {d}, pruned");
            // Where the selected kernel is AVX-512, the AVX2 one too.
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                for prune in [false, true] {
                    let mut avx2 = vec![0.0; 203 * k];
                    // SAFETY: the CPU supports AVX2, checked just above.
                    unsafe { m.weighted_log_probs_avx2(&x, &mut avx2, prune) };
                    let want = if prune { &pruned_plain } else { &plain };
                    assert_eq!(bits(&avx2), bits(want), "d = {d}, AVX2, pruned: {prune}");
                }
            }
        }
    }

    /// Rows of responsibilities and log densities, as the E-step makes
    /// them from weighted log densities.
    fn normalised(lp: &[f64], k: usize) -> (Vec<u64>, Vec<u64>, Vec<usize>) {
        let mut rows = lp.to_vec();
        let mut ll = Vec::new();
        let mut labels = Vec::new();
        for row in rows.chunks_exact_mut(k) {
            labels.push(argmax(row));
            ll.push(normalise_row(row).to_bits());
        }
        (bits(&rows), ll, labels)
    }

    #[test]
    fn pruned_densities_give_the_same_responsibilities_bit_for_bit() {
        // Separated clusters (most components pruned), overlapping ones
        // (hardly any), points far from everything, and dimensions that
        // are and are not a multiple of the rows solved between checks.
        for (d, k, spread, seed) in [
            (32, 10, 4.0, 1),
            (13, 6, 3.0, 2),
            (37, 3, 2.0, 3),
            (9, 5, 0.3, 4),
            (64, 16, 4.0, 5),
            (32, 4, 0.0, 6),
        ] {
            let (m, _) = random_full(d, k, 0, seed);
            let m = GaussianMixture::new(MixtureParams {
                means: m.means().iter().map(|v| v * spread).collect(),
                ..m.params().clone()
            })
            .unwrap();
            let mut x = m.sample(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed), 517);
            for v in &mut x[..5 * d] {
                *v *= 1e3;
            }
            let n = x.len() / d;
            let mut full = vec![0.0; n * k];
            m.weighted_log_probs(&x, &mut full);
            let mut pruned = vec![0.0; n * k];
            m.full_log_probs_pruned(&x, &mut pruned);
            let mut e_step = vec![0.0; n * k];
            m.e_step_log_probs(&x, &mut e_step);
            let want = if d >= PRUNE_MIN_DIM { &pruned } else { &full };
            assert_eq!(bits(&e_step), bits(want), "d = {d}");
            let skipped = pruned.iter().filter(|v| **v == f64::NEG_INFINITY).count();
            for (a, b) in full.iter().zip(&pruned) {
                assert!(a.to_bits() == b.to_bits() || *b == f64::NEG_INFINITY);
            }
            assert_eq!(
                normalised(&full, k),
                normalised(&pruned, k),
                "d = {d}, K = {k}"
            );
            if spread >= 3.0 {
                assert!(skipped > n * (k - 1) / 2, "d = {d}: {skipped} pruned");
            }
        }
    }

    #[test]
    fn wide_kernel_matches_a_direct_solve() {
        let (m, x) = random_full(37, 3, 21, 9);
        let mut lp = vec![0.0; 21 * 3];
        m.weighted_log_probs(&x, &mut lp);
        let d = 37;
        for (i, p) in x.chunks_exact(d).enumerate() {
            for j in 0..3 {
                // Solve L y = x - μ by plain substitution, one point alone.
                let l = &m.factor[j * d * d..(j + 1) * d * d];
                let mut y = vec![0.0; d];
                for a in 0..d {
                    let s: f64 = (0..a).map(|b| l[a * d + b] * y[b]).sum();
                    y[a] = (p[a] - m.mean(j)[a] - s) / l[a * d + a];
                }
                let q: f64 = y.iter().map(|v| v * v).sum();
                let want = m.log_norm[j] - 0.5 * q;
                let got = lp[i * 3 + j];
                assert!((got - want).abs() < 1e-9 * want.abs(), "{got} vs {want}");
            }
        }
    }

    #[test]
    fn variance_is_the_diagonal_of_the_covariance_matrix() {
        let full = crate::model::testdata::random_mixture(5, 3, 2.0, 8);
        let p = full.params();
        let diag = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Diagonal,
            covariances: (0..3 * 5).map(|i| 0.5 + i as f64).collect(),
            ..p.clone()
        })
        .unwrap();
        let spherical = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Spherical,
            covariances: vec![0.5, 1.5, 2.5],
            ..p.clone()
        })
        .unwrap();
        for m in [full, diag, spherical] {
            for j in 0..3 {
                let c = m.covariance_matrix(j);
                for a in 0..5 {
                    assert_eq!(m.variance(j, a).to_bits(), c[a * 5 + a].to_bits());
                }
            }
        }
    }

    #[test]
    fn samples_have_the_right_moments() {
        let m = two_d();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let xs = m.sample(&mut rng, 200_000);
        let mean_x: f64 = xs.chunks(2).map(|p| p[0]).sum::<f64>() / 200_000.0;
        assert!((mean_x - 4.0).abs() < 0.05, "{mean_x}");
    }

    #[test]
    fn serde_round_trip_rebuilds_factors() {
        let m = two_d();
        let bytes = postcard::to_stdvec(&m).unwrap();
        let back: GaussianMixture = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert!((back.log_prob(&[2.0, 3.0]) - m.log_prob(&[2.0, 3.0])).abs() < TOL);
    }
}
