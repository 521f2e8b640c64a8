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
    argmax, normalise_row, normalise_row_parts, normalise_wide_row_parts, GaussianMixture,
    MixtureParams, ModelError, SHORT_CUT_FROM,
};
use super::pool::Pool;
use super::stats::{BatchSums, MixtureStats};
use std::sync::{Arc, Mutex};

thread_local! {
    /// Per thread, reused by [`Engine::m_step`]: one attempt's
    /// regularisation.
    static M_STEP_SCRATCH: std::cell::Cell<Vec<f64>> =
        const { std::cell::Cell::new(Vec::new()) };
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
    /// Two sets of statistics (or a statistic and a learner) do not fit
    /// together.
    #[error("cannot combine these statistics: {0}")]
    Incompatible(String),
    /// A stop was requested during the warm-up fit ([`Interrupt`]); the
    /// warm-up buffer is kept unfitted.
    #[error("stopped during the warm-up fit; the warm-up buffer is kept unfitted")]
    Interrupted,
    /// The warm-up points are at a scale emstream cannot learn at
    /// ([`check_scale`]).
    #[error("the data's scale is out of range: {0}")]
    Scale(String),
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
    /// The values do not fit the resolution the user gave (`--resolution`).
    #[error("{0}")]
    Resolution(String),
}

/// Where the learner writes per-point scores (test-then-train), in input
/// order, when the caller asks for them.
#[derive(Clone, Debug, Default)]
pub struct ScoreBuffer {
    /// Whether to fill `resp` too.
    pub want_resp: bool,
    /// Most responsible component per point ([`NO_LABEL`] for a gross
    /// outlier).
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

pub use super::mixture::NO_LABEL;

/// Largest coordinate magnitude learned from: beyond it squares overflow.
pub const MAX_ABS: f64 = 1e150;

/// Points whose responsibility sums are multiplied before one logarithm
/// is taken; with K <= MAX_COMPONENTS = 2^12 the product stays below 2^384.
const LOG_BLOCK: usize = 32;

/// Scratch space of the E-step, reused from batch to batch so that an
/// E-step allocates little once warm (never serialised), and the threads
/// it runs on ([`Scratch::set_threads`]; one by default).
///
/// A clone shares the threads and starts with empty buffers.
#[derive(Debug, Default)]
pub struct Scratch {
    parts: Vec<Part>,
    sums: BatchSums,
    pool: Option<Arc<Pool>>,
    /// Covariances and factors of a mixture given back, for the next
    /// M-step ([`Engine::recycle`]).
    covs: Vec<f64>,
    factors: Vec<f64>,
    /// Statistics of a batch given back, for the next E-step to fill.
    spare: Option<MixtureStats>,
    /// Which points of the last [`e_step`] were gross outliers, in order.
    outlier: Vec<bool>,
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch {
            pool: self.pool.clone(),
            ..Scratch::default()
        }
    }
}

impl Scratch {
    /// Runs the E-step on `threads` threads (the caller's and
    /// `threads - 1` workers kept for the life of this scratch space and
    /// its clones); 0 and 1 mean the caller's alone. The statistics are the
    /// same bits with any number (see [`e_step`]).
    pub fn set_threads(&mut self, threads: usize) {
        if self.threads() == threads.max(1) {
            return;
        }
        self.pool = (threads > 1).then(|| Arc::new(Pool::new(threads)));
    }

    /// Threads the E-step runs on.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.threads())
    }
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
        // The diagonal entries only: building each full matrix (K copies
        // of d² numbers per E-step) was 3 % of the d = 32 learner.
        for j in 0..w.len() {
            for a in 0..d {
                var[a] += w[j] * (mix.variance(j, a) + (mix.mean(j)[a] - centre[a]).powi(2));
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

    /// Whether each point (rows of d) is an outlier, into `flags` (cleared
    /// first): [`OutlierTest::is_outlier`] for every point, compiled with
    /// AVX2 where the CPU has it (the same operations, so the same
    /// decisions; at d = 32 the plain build of the per-point test was a
    /// tenth of the learner's instructions).
    fn flag(&self, points: &[f64], d: usize, flags: &mut Vec<bool>) {
        flags.clear();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.flag_avx2(points, d, flags) };
            return;
        }
        self.flag_any(points, d, flags);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn flag_avx2(&self, points: &[f64], d: usize, flags: &mut Vec<bool>) {
        self.flag_any(points, d, flags);
    }

    #[inline(always)]
    fn flag_any(&self, points: &[f64], d: usize, flags: &mut Vec<bool>) {
        // A plain loop: `extend` over a `map` was compiled as a call
        // outside the AVX2 code.
        for x in points.chunks_exact(d) {
            flags.push(self.is_outlier(x));
        }
    }

    #[inline(always)]
    fn is_outlier(&self, x: &[f64]) -> bool {
        // Four running sums (dimension a goes to sum a mod 4), added in a
        // fixed order at the end: independent chains the CPU overlaps, where
        // one sum was a chain of d dependent additions per point. The same
        // order on every machine and thread, so the same decisions.
        let d = x.len();
        let (centre, inv) = (&self.centre[..d], &self.inv_spread2[..d]);
        let mut q = [0.0f64; 4];
        let mut huge = [false; 4];
        let whole = d / 4 * 4;
        for ((xs, cs), is) in x[..whole]
            .chunks_exact(4)
            .zip(centre[..whole].chunks_exact(4))
            .zip(inv[..whole].chunks_exact(4))
        {
            for l in 0..4 {
                huge[l] |= !(xs[l].abs() <= MAX_ABS);
                let z = xs[l] - cs[l];
                q[l] += z * z * is[l];
            }
        }
        for l in 0..d - whole {
            let v = x[whole + l];
            huge[l] |= !(v.abs() <= MAX_ABS);
            let z = v - centre[whole + l];
            q[l] += z * z * inv[whole + l];
        }
        (huge[0] | huge[1] | huge[2] | huge[3]) || !((q[0] + q[1]) + (q[2] + q[3]) <= self.limit)
    }
}

/// Smallest per-dimension spread (mean absolute deviation) of the warm-up
/// accepted, other than exactly 0 (a constant column): below it squares of
/// deviations underflow towards subnormals and every point would be an
/// "outlier".
pub const MIN_SPREAD: f64 = 1e-100;

/// Largest coordinate magnitude of typical warm-up points: beyond it sums
/// of squares over a stream lose their range. A warm-up where more than
/// half of the points have a coordinate beyond it is refused.
pub const MAX_TYPICAL: f64 = 1e100;

/// Refuses, with a true message, a warm-up buffer whose scale emstream
/// cannot learn at (see [`MIN_SPREAD`], [`MAX_TYPICAL`]), instead of
/// learning a wrong model or dropping most points as outliers.
///
/// # Errors
///
/// [`LearnError::Scale`] naming the dimension, the scale and what to do.
pub fn check_scale(buf: &[f64], d: usize) -> Result<(), LearnError> {
    let n = buf.len() / d;
    if n == 0 {
        return Ok(());
    }
    let huge = buf
        .chunks_exact(d)
        .filter(|x| x.iter().any(|v| !(v.abs() <= MAX_TYPICAL)))
        .count();
    if huge * 2 > n {
        return Err(LearnError::Scale(format!(
            "{huge} of the {n} warm-up points have a coordinate beyond ±{MAX_TYPICAL:e}: divide the data by a constant (e.g. 1e100) before streaming it"
        )));
    }
    for a in 0..d {
        let col = || {
            buf.chunks_exact(d)
                .map(move |x| x[a])
                .filter(|v| v.abs() <= MAX_TYPICAL)
        };
        let m = col().count().max(1) as f64;
        let mean = col().sum::<f64>() / m;
        let spread = col().map(|v| (v - mean).abs()).sum::<f64>() / m;
        if spread > 0.0 && spread < MIN_SPREAD {
            return Err(LearnError::Scale(format!(
                "dimension {a} of the warm-up points varies by only {spread:e} (mean absolute deviation), below {MIN_SPREAD:e}: multiply the data by a constant (e.g. 1e100) before streaming it"
            )));
        }
    }
    Ok(())
}

/// The rows of `rows` (of d numbers) whose `outlier` flag is false, in
/// order, as maximal runs of consecutive rows (usually one run, the whole
/// batch): a run is copied in one piece.
pub(crate) fn runs_of<'a>(
    rows: &'a [f64],
    d: usize,
    outlier: &'a [bool],
) -> impl Iterator<Item = &'a [f64]> {
    debug_assert_eq!(rows.len() / d, outlier.len());
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < outlier.len() && outlier[at] {
            at += 1;
        }
        if at == outlier.len() {
            return None;
        }
        let start = at;
        while at < outlier.len() && !outlier[at] {
            at += 1;
        }
        Some(&rows[start * d..at * d])
    })
}

/// The warm-up buffer without its gross outliers (judged by each
/// dimension's median and median absolute deviation, or mean absolute
/// deviation where half the points are equal).
pub(crate) fn without_outliers(buf: &[f64], d: usize) -> Vec<f64> {
    let test = warm_up_screen(buf, d);
    buf.chunks_exact(d)
        .filter(|x| !test.is_outlier(x))
        .flatten()
        .copied()
        .collect()
}

/// The outlier test of [`without_outliers`]: each dimension's median and
/// spread over the rows within [`MAX_ABS`].
fn warm_up_screen(buf: &[f64], d: usize) -> OutlierTest {
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
        // The middle values by selection, not by sorting each column twice
        // (3.5 % of a 5,000-point 32-D warm-up's instructions): the same
        // elements.
        let half = col.len() / 2;
        let med = *col.select_nth_unstable_by(half, f64::total_cmp).1;
        let mut dev: Vec<f64> = col.iter().map(|v| (v - med).abs()).collect();
        let mad = 1.4826 * *dev.select_nth_unstable_by(half, f64::total_cmp).1;
        let spread = if mad > 0.0 {
            mad
        } else {
            // Summed in ascending order, as always.
            dev.sort_by(f64::total_cmp);
            dev.iter().sum::<f64>() / dev.len() as f64
        };
        centre[a] = med;
        var[a] = spread * spread;
    }
    OutlierTest::new(centre, var)
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
    /// Per-dimension variance floor of rounded values (`q²/(2π)` for a
    /// step `q`, see [`super::resolution`]): every covariance is kept at least
    /// `diag(floor)`. Empty when every dimension is continuous.
    floor: Vec<f64>,
    repairs: u64,
    reseeds: u64,
    scratch: Scratch,
    /// Set from outside to stop a long fit ([`Engine::set_interrupt`]).
    interrupt: Option<Interrupt>,
}

/// A stop request shared with the learner: once set, a warm-up fit in
/// progress ends at its next M-step with [`LearnError::Interrupted`].
pub type Interrupt = std::sync::Arc<std::sync::atomic::AtomicBool>;

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

/// Work of one E-step sub-block, in multiply-adds of the statistics (about
/// K·d² per point for full covariance, K·d otherwise): large enough that
/// clearing and adding up the sums of a sub-block (2·K·d² memory accesses)
/// stays a small part of computing them.
const SUB_BLOCK_WORK: usize = 1 << 21;

/// Fewest points in a sub-block (wide points). Each sub-block clears and
/// adds K·d² sums, and the pruned densities solve about one more whole
/// substitution per 16-point block where the points of two guessed
/// components meet (about K times per sub-block): at d = 32, K = 10 the
/// learner takes 4 % fewer instructions with 512 points than with 256
/// (BENCHMARKS.md). 512 cuts a default batch of 1,000 points into two
/// sub-blocks, one per thread on two cores; on more cores, a larger
/// `--batch-size` gives each thread its own (4,000 points: 8 sub-blocks).
const SUB_BLOCK_MIN: usize = 512;

/// Most points in a sub-block (narrow points): a mini-batch of the default
/// 1,000 points of up to 8 dimensions is one sub-block, on one thread.
const SUB_BLOCK_MAX: usize = 4096;

/// Points per sub-block of the E-step for this shape of mixture.
///
/// [`e_step`] cuts a batch into consecutive sub-blocks of this many points
/// (the last one shorter), computes each one's statistics on its own and
/// adds them up in sub-block order. The cut depends only on the covariance
/// type, d and K, never on the number of threads, so the statistics (and
/// every model learned from them) are the same bits with any `--threads`.
/// A batch of at most this many points is one sub-block: computed on one
/// thread, exactly as one pass.
pub fn sub_block_points(covariance: CovarianceType, d: usize, k: usize) -> usize {
    let wide = if covariance == CovarianceType::Full {
        d.max(1)
    } else {
        1
    };
    let per_point = k.max(1) * d.max(1) * wide;
    // A multiple of LOG_BLOCK, so that the logarithms of the sub-blocks
    // group points as one pass over the batch would.
    (SUB_BLOCK_WORK / per_point).clamp(SUB_BLOCK_MIN, SUB_BLOCK_MAX) / LOG_BLOCK * LOG_BLOCK
}

/// Sub-block results held per thread between two combinations.
const PARTS_PER_THREAD: usize = 4;

/// One component of the M-step: its covariance block, its factor, and
/// the repairs it needed.
type ComponentTask<'a> = (&'a mut [f64], &'a mut [f64], u64);

/// Results of one sub-block of the E-step.
#[derive(Clone, Debug, Default)]
struct Part {
    resp: Vec<f64>,
    /// Which points are outliers ([`OutlierTest::flag`]).
    outlier: Vec<bool>,
    sums: BatchSums,
    ll_sum: f64,
    outliers: usize,
    /// Index of the worst point within the sub-block.
    worst: usize,
    worst_ll: f64,
}

/// Where one sub-block writes its per-point scores.
struct ScoreSlices<'a> {
    labels: &'a mut [u32],
    log_lik: &'a mut [f64],
    resp: Option<&'a mut [f64]>,
}

/// One sub-block to compute: its points, score slices and result slot.
struct Task<'a> {
    points: &'a [f64],
    scores: Option<ScoreSlices<'a>>,
    part: &'a mut Part,
}

/// The E-step of one sub-block (see [`e_step`]) into `part`.
fn e_step_part(
    mix: &GaussianMixture,
    outlier: &OutlierTest,
    points: &[f64],
    scores: Option<ScoreSlices<'_>>,
    part: &mut Part,
) {
    let d = mix.dim();
    let k = mix.n_components();
    let n = points.len() / d;
    let resp = &mut part.resp;
    resp.clear();
    resp.resize(n * k, 0.0);
    mix.e_step_log_probs(points, resp);
    outlier.flag(points, d, &mut part.outlier);
    let flags = &part.outlier;
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
            for (i, (row, &is_outlier)) in resp.chunks_exact_mut(k).zip(flags).enumerate() {
                let (m, s) = if k >= SHORT_CUT_FROM {
                    normalise_wide_row_parts(row)
                } else {
                    normalise_row_parts(row)
                };
                if is_outlier {
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
        Some(mut sc) => {
            for (i, (row, &is_outlier)) in resp.chunks_exact_mut(k).zip(flags).enumerate() {
                let ll = normalise_row(row);
                if is_outlier {
                    // No label, and -inf rather than the NaN a density
                    // that underflowed everywhere would give.
                    sc.labels[i] = NO_LABEL;
                    sc.log_lik[i] = if ll.is_finite() {
                        ll
                    } else {
                        f64::NEG_INFINITY
                    };
                    if let Some(r) = sc.resp.as_deref_mut() {
                        r[i * k..(i + 1) * k].fill(0.0);
                    }
                    row.iter_mut().for_each(|r| *r = 0.0);
                    outliers += 1;
                    continue;
                }
                sc.labels[i] = argmax(row) as u32;
                sc.log_lik[i] = ll;
                if let Some(r) = sc.resp.as_deref_mut() {
                    r[i * k..(i + 1) * k].copy_from_slice(row);
                }
                ll_sum += ll;
                if ll < worst_ll {
                    worst_ll = ll;
                    worst = i;
                }
            }
        }
    }
    part.sums
        .accumulate(mix.covariance_type(), d, points, resp, mix.means());
    part.ll_sum = ll_sum;
    part.outliers = outliers;
    part.worst = worst;
    part.worst_ll = worst_ll;
}

/// E-step of `points` (rows of `mix.dim()`) against `mix`: responsibilities,
/// per-point log-likelihoods (to `scores`, in order, when given), and the
/// batch's sufficient statistics around the mixture's means. Gross outliers
/// ([`OUTLIER_SPREAD`], [`MAX_ABS`]) are scored but left out. Pure apart
/// from `scratch`, so workers can run it on their own batches against a
/// shared mixture and a reducer merges the results.
///
/// The batch is cut into fixed sub-blocks ([`sub_block_points`]) computed
/// on the scratch space's threads ([`Scratch::set_threads`]) and added up
/// in sub-block order: the same bits whatever the number of threads.
pub fn e_step(
    mix: &GaussianMixture,
    points: &[f64],
    scores: Option<&mut ScoreBuffer>,
    scratch: &mut Scratch,
) -> BatchStats {
    e_step_beside(mix, points, scores, scratch, None)
}

/// Work of the learner's own thread that does not depend on a pool run's
/// results, given to the run as one more task (the last one claimed), so
/// that with several threads it is done while another thread computes,
/// instead of after the run on the learner's thread alone. Run exactly
/// once: by the run, or by whoever was given it when there is no run.
pub(crate) type Beside<'a> = Option<&'a mut (dyn FnMut() + Send)>;

/// Runs `side` (if still there) now.
pub(crate) fn run_beside(side: &mut Beside<'_>) {
    if let Some(f) = side.take() {
        f();
    }
}

/// Runs tasks `0..tasks` of `f` on `pool` (on this thread, in order,
/// without one) and `side`, if still there, as one more task, the last
/// one claimed ([`Beside`]).
fn run_with_side(
    pool: Option<&Pool>,
    tasks: usize,
    side: &mut Beside<'_>,
    f: &(dyn Fn(usize) + Sync),
) {
    let all = tasks + usize::from(side.is_some());
    let side = Mutex::new(side);
    let run = |t: usize| {
        if t == tasks {
            run_beside(&mut side.lock().unwrap_or_else(|e| e.into_inner()));
        } else {
            f(t);
        }
    };
    match pool {
        Some(p) => p.run(all, &run),
        None => (0..all).for_each(run),
    }
}

/// [`e_step`] with `side` done as one more task of its first pool run
/// ([`Beside`]): nothing it computes changes.
pub(crate) fn e_step_beside(
    mix: &GaussianMixture,
    points: &[f64],
    scores: Option<&mut ScoreBuffer>,
    scratch: &mut Scratch,
    mut side: Beside<'_>,
) -> BatchStats {
    let d = mix.dim();
    let covariance = mix.covariance_type();
    let k = mix.n_components();
    let n = points.len() / d;
    let sub = sub_block_points(covariance, d, k);
    let n_sub = n.div_ceil(sub).max(1);
    let threads = scratch.pool.as_ref().map_or(1, |p| p.threads());
    let slots = n_sub.min(threads * PARTS_PER_THREAD);
    if scratch.parts.len() < slots {
        scratch.parts.resize_with(slots, Part::default);
    }
    // Per-point scores go straight to their place in the buffer.
    let mut rest: Option<ScoreSlices<'_>> = scores.map(|sc| {
        let first = sc.log_lik.len();
        sc.labels.resize(first + n, 0);
        sc.log_lik.resize(first + n, 0.0);
        let resp = if sc.want_resp {
            let at = sc.resp.len();
            sc.resp.resize(at + n * k, 0.0);
            Some(&mut sc.resp[at..])
        } else {
            None
        };
        ScoreSlices {
            labels: &mut sc.labels[first..],
            log_lik: &mut sc.log_lik[first..],
            resp,
        }
    });
    let outlier = OutlierTest::of(mix);
    // The statistics of a batch given back ([`Engine::recycle_batch`]).
    let spare = scratch.spare.take();
    let pool = scratch.pool.as_deref();
    let total = &mut scratch.sums;
    let flags = &mut scratch.outlier;
    flags.clear();
    let mut ll_sum = 0.0;
    let mut outliers = 0;
    let mut worst = 0;
    let mut worst_ll = f64::INFINITY;
    let mut done = 0;
    while done < n_sub {
        let wave = slots.min(n_sub - done);
        let mut tasks: Vec<Mutex<Task<'_>>> = Vec::with_capacity(wave);
        for (w, part) in scratch.parts[..wave].iter_mut().enumerate() {
            let lo = (done + w) * sub;
            let hi = ((done + w + 1) * sub).min(n);
            let scores = rest.take().map(|sc| {
                let (labels, labels_rest) = sc.labels.split_at_mut(hi - lo);
                let (log_lik, log_lik_rest) = sc.log_lik.split_at_mut(hi - lo);
                let (resp, resp_rest) = match sc.resp {
                    Some(r) => {
                        let (a, b) = r.split_at_mut((hi - lo) * k);
                        (Some(a), Some(b))
                    }
                    None => (None, None),
                };
                rest = Some(ScoreSlices {
                    labels: labels_rest,
                    log_lik: log_lik_rest,
                    resp: resp_rest,
                });
                ScoreSlices {
                    labels,
                    log_lik,
                    resp,
                }
            });
            tasks.push(Mutex::new(Task {
                points: &points[lo.min(n) * d..hi * d],
                scores,
                part,
            }));
        }
        let run = |t: usize| {
            let mut task = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
            let task = &mut *task;
            e_step_part(mix, &outlier, task.points, task.scores.take(), task.part);
        };
        // The side task goes with the first wave (then it is done).
        run_with_side(pool, wave, &mut side, &run);
        drop(tasks);
        // Combine in sub-block order: the same sums whatever ran where.
        for (w, part) in scratch.parts[..wave].iter().enumerate() {
            if done + w == 0 {
                total.copy_from(&part.sums);
                ll_sum = part.ll_sum;
            } else {
                total.add(&part.sums);
                ll_sum += part.ll_sum;
            }
            outliers += part.outliers;
            flags.extend_from_slice(&part.outlier);
            if part.worst_ll < worst_ll {
                worst_ll = part.worst_ll;
                worst = (done + w) * sub + part.worst;
            }
        }
        done += wave;
    }
    let mut stats = spare.unwrap_or_else(|| MixtureStats::empty(covariance, d, 0));
    total.to_stats_into(covariance, d, mix.means(), n - outliers, &mut stats);
    BatchStats {
        stats,
        ll_sum,
        outliers: outliers as u64,
        // The first point when every point is an outlier.
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
            floor: Vec::new(),
            repairs: 0,
            reseeds: 0,
            scratch: Scratch::default(),
            interrupt: None,
        }
    }

    /// Makes every M-step fail with [`LearnError::Interrupted`] once `flag`
    /// is set (`None`: never). The learner sets it only around its warm-up
    /// fit, whose many passes over the buffer can take minutes.
    pub fn set_interrupt(&mut self, flag: Option<Interrupt>) {
        self.interrupt = flag;
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

    /// [`Engine::e_step`] with `side` done beside it ([`Beside`]).
    pub(crate) fn e_step_beside(
        &mut self,
        mix: &GaussianMixture,
        points: &[f64],
        scores: Option<&mut ScoreBuffer>,
        side: Beside<'_>,
    ) -> BatchStats {
        e_step_beside(mix, points, scores, &mut self.scratch, side)
    }

    /// Runs the E-step on `threads` threads (see [`Scratch::set_threads`]):
    /// the same bits with any number.
    pub fn set_threads(&mut self, threads: usize) {
        self.scratch.set_threads(threads);
    }

    /// Dimension of the points.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Keeps every covariance of the M-steps from now on at least
    /// `diag(floor)` (per dimension; 0 for none): the variance below which
    /// a density claims more for a rounded value than its rounding cell
    /// holds ([`super::resolution`]). All zeros
    /// (or empty) turns it off, and the M-step is then exactly as without.
    ///
    /// # Panics
    ///
    /// When `floor` is neither empty nor one number per dimension.
    pub fn set_floor(&mut self, floor: &[f64]) {
        assert!(floor.is_empty() || floor.len() == self.dim);
        self.floor.clear();
        if floor.iter().any(|f| *f > 0.0) {
            self.floor.extend_from_slice(floor);
        }
    }

    /// The variance floor per dimension (empty: none).
    pub fn floor(&self) -> &[f64] {
        &self.floor
    }

    /// The data's per-dimension variance in the warm-up buffer.
    pub fn scale(&self) -> &[f64] {
        &self.scale
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
            floor: Vec::new(),
            repairs: state.repairs,
            reseeds: state.reseeds,
            interrupt: None,
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

    /// The M-step of one component's covariance: `block` gets its
    /// statistics `stats` symmetrised and regularised, rebuilt from `stats`
    /// with ten times more regularisation until positive definite (so
    /// nothing is copied to retry from), and for full covariance `l` its
    /// factor. Returns the repairs.
    fn fit_covariance(&self, stats: &[f64], block: &mut [f64], l: &mut [f64]) -> u64 {
        let d = self.dim;
        let symmetrised = |block: &mut [f64]| {
            if self.covariance == CovarianceType::Full {
                for a in 0..d {
                    for b in 0..a {
                        let v = 0.5 * (stats[a * d + b] + stats[b * d + a]);
                        block[a * d + b] = v;
                        block[b * d + a] = v;
                    }
                    block[a * d + a] = stats[a * d + a];
                }
            } else {
                block.copy_from_slice(stats);
            }
        };
        // Reused per thread: one attempt's regularisation.
        let mut reg = M_STEP_SCRATCH.with(|c| c.take());
        reg.clear();
        reg.resize(d, 0.0);
        let mut repairs = 0;
        let mut mult = 1.0;
        for attempt in 0.. {
            symmetrised(block);
            for ((g, r), s) in reg.iter_mut().zip(&self.reg).zip(&self.scale) {
                *g = (r * mult).max(if attempt > 0 { s * 1e-12 * mult } else { 0.0 });
            }
            super::covariance::add_regularisation(self.covariance, block, d, &reg);
            let ok = match self.covariance {
                CovarianceType::Full => cholesky(block, d, l),
                _ => block.iter().all(|v| *v > 0.0 && v.is_finite()),
            };
            if ok {
                if !self.floor.is_empty() {
                    super::floor::apply(self.covariance, &self.floor, block, l);
                }
                break;
            }
            repairs += 1;
            mult *= 10.0;
            if attempt >= 30 {
                // Nothing of the statistics is usable: fall back to the
                // data's scale.
                self.scale_covariance(block);
                if !self.floor.is_empty() {
                    super::floor::apply(self.covariance, &self.floor, block, l);
                }
                if self.covariance == CovarianceType::Full {
                    // A positive diagonal: this factor exists.
                    cholesky(block, d, l);
                }
                break;
            }
        }
        M_STEP_SCRATCH.with(|c| c.set(reg));
        repairs
    }

    /// Takes back the statistics of a batch already learned from, for
    /// the next E-step to fill instead of allocating.
    pub(crate) fn recycle_batch(&mut self, batch: BatchStats) {
        self.scratch.spare = Some(batch.stats);
    }

    /// The last E-step's outlier flags, one per row of its points, taken
    /// out (to be read while the engine runs its M-step): with
    /// [`runs_of`], the rows that were not gross outliers (the test the
    /// E-step applies: [`OUTLIER_SPREAD`] spreads of the whole mixture, or
    /// a coordinate beyond [`MAX_ABS`]), the E-step's own decisions, not
    /// tested again. Give them back with [`Engine::return_outlier_flags`].
    pub(crate) fn take_outlier_flags(&mut self) -> Vec<bool> {
        std::mem::take(&mut self.scratch.outlier)
    }

    /// Gives back the flags of [`Engine::take_outlier_flags`] (their
    /// memory is reused by the next E-step).
    pub(crate) fn return_outlier_flags(&mut self, flags: Vec<bool>) {
        self.scratch.outlier = flags;
    }

    /// Takes back the buffers of a mixture no longer used (the one an
    /// M-step replaced), for the next [`Engine::m_step`] to fill.
    pub(crate) fn recycle(&mut self, mix: GaussianMixture) {
        let (covs, factors) = mix.into_buffers();
        self.scratch.covs = covs;
        self.scratch.factors = factors;
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
        self.m_step_beside(stats, &mut None)
    }

    /// [`Engine::m_step`] with `side` done as one more task of its pool
    /// run ([`Beside`]); left in `side` when the M-step fails before it.
    pub(crate) fn m_step_beside(
        &mut self,
        stats: &mut MixtureStats,
        side: &mut Beside<'_>,
    ) -> Result<GaussianMixture, LearnError> {
        if self
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(LearnError::Interrupted);
        }
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
        // The buffers of a mixture given back ([`Engine::recycle`]), so a
        // mini-batch allocates and clears none of these K·d² numbers.
        // Each task writes its own block from the statistics (on the
        // pool's threads, not before the run on the learner's alone).
        let mut covs = std::mem::take(&mut self.scratch.covs);
        covs.resize(k * plen, 0.0);
        // The factors of the full covariances, passed on to the mixture
        // (every number written by `cholesky`; unread otherwise).
        let mut factors = std::mem::take(&mut self.scratch.factors);
        factors.resize(k * plen, 0.0);
        // Each component on its own: on the pool's threads when there are
        // several, each computed by the same code, so the same bits.
        let this = &*self;
        let tasks: Vec<Mutex<ComponentTask<'_>>> = covs
            .chunks_exact_mut(plen)
            .zip(factors.chunks_exact_mut(plen))
            .map(|(block, l)| Mutex::new((block, l, 0)))
            .collect();
        let run = |j: usize| {
            let mut task = tasks[j].lock().unwrap_or_else(|e| e.into_inner());
            let (block, l, repairs) = &mut *task;
            *repairs = this.fit_covariance(&stats.cov[j * plen..(j + 1) * plen], block, l);
        };
        run_with_side(this.scratch.pool.as_deref(), k, side, &run);
        for task in tasks {
            self.repairs += task.into_inner().unwrap_or_else(|e| e.into_inner()).2;
        }
        let params = MixtureParams {
            covariance: self.covariance,
            dim: d,
            weights,
            means: stats.mean.clone(),
            covariances: covs,
        };
        GaussianMixture::with_factors(params, factors).map_err(LearnError::MStep)
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

    /// The runs of rows the E-step of `pts` against `mix` leaves to
    /// learn from (what the learner's reservoir takes: [`runs_of`] the
    /// flags of [`Engine::take_outlier_flags`]).
    fn e_step_runs(mix: &GaussianMixture, pts: &[f64]) -> Vec<Vec<f64>> {
        let mut scratch = Scratch::default();
        e_step(mix, pts, None, &mut scratch);
        runs_of(pts, mix.dim(), &scratch.outlier)
            .map(<[f64]>::to_vec)
            .collect()
    }

    /// The warm-up's outlier screen picks its medians by selection: its
    /// centres and spreads are those of sorted columns, to the bit, also for
    /// a column more than half equal (the mean deviation instead), ties,
    /// odd and even counts and rows beyond `MAX_ABS`.
    #[test]
    fn warm_up_screen_is_the_one_with_sorted_medians() {
        fn sorted(buf: &[f64], d: usize) -> OutlierTest {
            let finite: Vec<&[f64]> = buf
                .chunks_exact(d)
                .filter(|x| x.iter().all(|v| v.abs() <= MAX_ABS))
                .collect();
            let (mut centre, mut var) = (vec![0.0; d], vec![0.0; d]);
            for a in 0..d {
                let mut col: Vec<f64> = finite.iter().map(|x| x[a]).collect();
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
                (centre[a], var[a]) = (med, spread * spread);
            }
            OutlierTest::new(centre, var)
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (n, d) in [(1, 1), (2, 3), (7, 2), (500, 4), (501, 3), (5000, 32)] {
            let mut buf: Vec<f64> = (0..n * d)
                .map(|_| rng.random_range(-3.0..3.0_f64).round() * rng.random_range(0.5..2.0))
                .collect();
            // Gross outliers, a row beyond MAX_ABS, and a column that is
            // mostly one value (its MAD is 0).
            for i in (0..n).step_by(97) {
                buf[i * d] = 1e6;
            }
            if n > 3 {
                buf[d] = f64::INFINITY;
                for i in 0..n {
                    if i % 4 != 0 {
                        buf[i * d + d - 1] = 2.5;
                    }
                }
            }
            let (got, want) = (warm_up_screen(&buf, d), sorted(&buf, d));
            assert_eq!(bits(&got.centre), bits(&want.centre), "n = {n}, d = {d}");
            assert_eq!(
                bits(&got.inv_spread2),
                bits(&want.inv_spread2),
                "n = {n}, d = {d}"
            );
            let got = without_outliers(&buf, d);
            if n >= 500 {
                assert!(got.len() < buf.len() && got.len() > buf.len() / 2);
            }
        }
    }

    #[test]
    fn usable_runs_are_the_rows_that_are_not_gross_outliers_in_order() {
        let (mix, mut pts) = case(CovarianceType::Full, 7);
        let test = OutlierTest::of(&mix);
        // Outliers first, last and side by side too.
        pts[0] = 1e200;
        pts[3 * 399] = -1e200;
        pts[3 * 200] = 1e200;
        pts[3 * 201 + 1] = f64::INFINITY;
        let want: Vec<f64> = pts
            .chunks_exact(3)
            .filter(|x| !test.is_outlier(x))
            .flatten()
            .copied()
            .collect();
        let runs = e_step_runs(&mix, &pts);
        assert_eq!(runs.concat(), want);
        // Outliers at rows 0, 17, 200, 201, 301 and 399: the runs are rows
        // 1..17, 18..200, 202..301 and 302..399.
        assert_eq!(
            runs.len(),
            4,
            "{:?}",
            runs.iter().map(|r| r.len()).collect::<Vec<_>>()
        );
        assert!(e_step_runs(&mix, &pts[..3]).is_empty());
    }

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

    /// The batch outlier test (AVX2 where the CPU has it) decides every
    /// row as the textbook four-sum test does, NaN and huge coordinates
    /// included, and the E-step's runs keep exactly the other rows, in
    /// order.
    #[test]
    fn outlier_flags_are_the_row_by_row_test() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for d in [1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64] {
            let centre: Vec<f64> = (0..d).map(|_| rng.random::<f64>() * 4.0 - 2.0).collect();
            let var: Vec<f64> = (0..d)
                .map(|a| {
                    if a == 1 {
                        0.0
                    } else {
                        0.5 + rng.random::<f64>()
                    }
                })
                .collect();
            let test = OutlierTest::new(centre.clone(), var.clone());
            let n = 300;
            let mut pts: Vec<f64> = (0..n * d)
                .map(|_| (rng.random::<f64>() - 0.5) * 2.0 * OUTLIER_SPREAD * 1.2)
                .collect();
            pts[3 * d] = f64::NAN;
            pts[7 * d + d - 1] = 2.0 * MAX_ABS;
            pts[11 * d] = -f64::INFINITY;
            let want: Vec<bool> = pts
                .chunks_exact(d)
                .map(|x| {
                    let mut q = [0.0f64; 4];
                    let mut huge = false;
                    for a in 0..d {
                        huge |= !(x[a].abs() <= MAX_ABS);
                        let inv = if var[a] > 0.0 { 1.0 / var[a] } else { 0.0 };
                        let z = x[a] - centre[a];
                        q[a % 4] += z * z * inv;
                    }
                    huge || !((q[0] + q[1]) + (q[2] + q[3]) <= OUTLIER_SPREAD.powi(2) * d as f64)
                })
                .collect();
            assert!(
                want.iter().any(|&o| o) && want.iter().any(|&o| !o),
                "d = {d}"
            );
            let (mut got, mut plain) = (vec![true], Vec::new());
            test.flag(&pts, d, &mut got);
            test.flag_any(&pts, d, &mut plain);
            assert_eq!(got, want, "d = {d}");
            assert_eq!(plain, want, "d = {d}, plain");
        }
        // The runs of a batch are its rows that are not outliers.
        let truth = testdata::random_mixture(5, 3, 4.0, 9);
        let mut pts = truth.sample(&mut rng, 50);
        for i in [0, 1, 17, 49] {
            pts[i * 5 + 2] = 1e200;
        }
        let runs = e_step_runs(&truth, &pts);
        assert_eq!(runs.len(), 2);
        let kept: Vec<f64> = runs.concat();
        let want: Vec<f64> = pts
            .chunks_exact(5)
            .filter(|x| x[2] != 1e200)
            .flatten()
            .copied()
            .collect();
        assert_eq!(kept, want);
    }

    /// A wide batch of many sub-blocks (with outliers in two of them) gives
    /// the same bits, scores included, on any number of threads.
    #[test]
    fn threads_do_not_change_a_bit() {
        for (i, cov) in COVS.into_iter().enumerate() {
            let (d, k) = (20, 4);
            let truth =
                testdata::restrict(&testdata::random_mixture(d, k, 4.0, 70 + i as u64), cov);
            let mut rng = ChaCha8Rng::seed_from_u64(71);
            let n = 5 * sub_block_points(cov, d, k) + 37;
            let mut pts = truth.sample(&mut rng, n);
            pts.iter_mut().for_each(|v| *v += 0.2);
            pts[d * 5] = 1e130;
            pts[d * (n - 3) + 1] = -1e12;
            let run = |threads: usize| {
                let mut scratch = Scratch::default();
                scratch.set_threads(threads);
                assert_eq!(scratch.threads(), threads.max(1));
                let mut sc = ScoreBuffer {
                    want_resp: true,
                    ..ScoreBuffer::default()
                };
                // Scores follow what is already in the buffer.
                sc.log_lik.push(-1.0);
                sc.labels.push(9);
                sc.resp.extend(vec![0.5; k]);
                let with = e_step(&truth, &pts, Some(&mut sc), &mut scratch);
                let without = e_step(&truth, &pts, None, &mut scratch);
                (with, without, sc)
            };
            let (one, one_plain, one_sc) = run(1);
            assert_eq!(one.outliers, 2);
            assert_eq!(one_sc.len(), n + 1);
            assert_eq!(one_sc.resp.len(), (n + 1) * k);
            assert_eq!(one_sc.log_lik[0], -1.0);
            // The sub-blocks together are the whole batch, up to rounding.
            assert_close(&one_plain, &one);
            for threads in [0, 2, 3, 8] {
                let (t, t_plain, t_sc) = run(threads);
                assert_eq!(t, one, "{cov} on {threads} threads");
                assert_eq!(t_plain, one_plain, "{cov} on {threads} threads");
                assert_eq!(t_sc.labels, one_sc.labels);
                assert_eq!(t_sc.log_lik, one_sc.log_lik);
                assert_eq!(t_sc.resp, one_sc.resp);
            }
        }
    }

    /// A batch of one sub-block is one pass, on any number of threads.
    #[test]
    fn one_sub_block_is_one_pass() {
        let (mix, pts) = case(CovarianceType::Full, 72);
        assert!(pts.len() / 3 <= sub_block_points(CovarianceType::Full, 3, 4));
        let mut scratch = Scratch::default();
        scratch.set_threads(4);
        let mut part = Part::default();
        e_step_part(&mix, &OutlierTest::of(&mix), &pts, None, &mut part);
        let pass = part
            .sums
            .to_stats(CovarianceType::Full, 3, mix.means(), 400 - part.outliers);
        let e = e_step(&mix, &pts, None, &mut scratch);
        assert_eq!(e.stats, pass);
        assert_eq!(e.ll_sum, part.ll_sum);
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

    /// The M-step passes its factors on: the mixture is the one
    /// `GaussianMixture::new` makes of the same parameters, bit for bit,
    /// also for a covariance it had to repair (d = 3 and d = 12, the two
    /// Cholesky paths).
    #[test]
    fn the_m_step_factors_are_those_of_new() {
        for d in [3, 12] {
            let truth = testdata::random_mixture(d, 3, 4.0, 63);
            let mut rng = ChaCha8Rng::seed_from_u64(63);
            let pts = truth.sample(&mut rng, 600);
            let mut engine = Engine::new(d, CovarianceType::Full, &pts, 0.0);
            let mut st = stats(&truth, &pts).stats;
            // Component 1 singular: repaired by regularisation.
            st.cov[d * d..2 * d * d].iter_mut().for_each(|v| *v = 1.0);
            let mix = engine.m_step(&mut st).unwrap();
            assert!(engine.repairs() > 0);
            let again = GaussianMixture::new(mix.params().clone()).unwrap();
            let (mut a, mut b) = (vec![0.0; 600 * 3], vec![0.0; 600 * 3]);
            mix.weighted_log_probs(&pts, &mut a);
            again.weighted_log_probs(&pts, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn work_beside_a_run_is_done_once_and_changes_nothing() {
        let (d, k) = (12, 4);
        let truth = testdata::random_mixture(d, k, 4.0, 65);
        let mut rng = ChaCha8Rng::seed_from_u64(65);
        // Three sub-blocks: the side task goes with the first wave only.
        let n = 2 * sub_block_points(CovarianceType::Full, d, k) + 5;
        let pts = truth.sample(&mut rng, n);
        let want = e_step(&truth, &pts, None, &mut Scratch::default());
        let mut st = want.stats.clone();
        let want_mix = Engine::new(d, CovarianceType::Full, &pts, 0.0)
            .m_step(&mut st.clone())
            .unwrap();
        for threads in [1, 2, 3, 8] {
            let mut engine = Engine::new(d, CovarianceType::Full, &pts, 0.0);
            engine.set_threads(threads);
            let mut runs = 0;
            let got = engine.e_step_beside(&truth, &pts, None, Some(&mut || runs += 1));
            assert_eq!(runs, 1, "{threads} threads");
            assert_eq!(got.stats, want.stats);
            assert_eq!(got.ll_sum.to_bits(), want.ll_sum.to_bits());
            let m_runs = std::sync::atomic::AtomicUsize::new(0);
            let count = || m_runs.load(std::sync::atomic::Ordering::Relaxed);
            let mut add = || {
                m_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            };
            let mut side: Beside<'_> = Some(&mut add);
            let mix = engine.m_step_beside(&mut st, &mut side).unwrap();
            assert!(side.is_none(), "the M-step took it");
            assert_eq!(count(), 1);
            assert_eq!(mix, want_mix);
            // An M-step refused before its run leaves it to the caller.
            let mut bad = st.clone();
            bad.mean.pop();
            let mut side: Beside<'_> = Some(&mut add);
            assert!(engine.m_step_beside(&mut bad, &mut side).is_err());
            assert!(side.is_some());
            run_beside(&mut side);
            assert_eq!(count(), 2);
        }
    }

    /// Every attempt of a repair starts again from the statistics: the
    /// covariance is the symmetrised statistics (here not symmetric, and
    /// indefinite) plus the last attempt's regularisation only, bit for
    /// bit (regularisation carried over from an earlier attempt, or the
    /// statistics read unsymmetrised, would fail this).
    #[test]
    fn a_repaired_covariance_is_its_statistics_plus_the_last_regularisation() {
        let d = 3;
        let truth = testdata::random_mixture(d, 2, 4.0, 65);
        let mut rng = ChaCha8Rng::seed_from_u64(65);
        let pts = truth.sample(&mut rng, 400);
        let mut engine = Engine::new(d, CovarianceType::Full, &pts, 1e-9);
        let mut st = stats(&truth, &pts).stats;
        let c = &mut st.cov[d * d..2 * d * d];
        for a in 0..d {
            for b in 0..d {
                c[a * d + b] = match a.cmp(&b) {
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 1.0,
                    std::cmp::Ordering::Greater => 0.8,
                };
            }
        }
        let raw = c.to_vec();
        let mix = engine.m_step(&mut st).unwrap();
        let repairs = engine.repairs();
        assert!(repairs >= 2, "{repairs}");
        let mut mult = 1.0;
        for _ in 0..repairs {
            mult *= 10.0;
        }
        let got = &mix.params().covariances[d * d..2 * d * d];
        for a in 0..d {
            for b in 0..d {
                let mut want = 0.5 * (raw[a * d + b] + raw[b * d + a]);
                if a == b {
                    want =
                        raw[a * d + a] + (engine.reg[a] * mult).max(engine.scale[a] * 1e-12 * mult);
                }
                assert_eq!(got[a * d + b].to_bits(), want.to_bits(), "({a}, {b})");
            }
        }
    }

    #[test]
    fn the_m_step_on_threads_and_recycled_buffers_is_the_same_bits() {
        for cov in [CovarianceType::Full, CovarianceType::Diagonal] {
            for d in [3, 12] {
                let truth = testdata::random_mixture(d, 5, 4.0, 64);
                let mut rng = ChaCha8Rng::seed_from_u64(64);
                let pts = truth.sample(&mut rng, 600);
                let mut st = stats(&truth, &pts).stats;
                if cov == CovarianceType::Diagonal {
                    st = MixtureStats {
                        covariance: cov,
                        cov: (0..5)
                            .flat_map(|j| {
                                let c = &st.cov[j * d * d..(j + 1) * d * d];
                                (0..d).map(move |a| c[a * d + a])
                            })
                            .collect(),
                        ..st
                    };
                }
                // Component 1 singular: repaired by regularisation.
                let plen = cov.param_len(d);
                st.cov[plen..2 * plen].iter_mut().for_each(|v| *v = 0.0);
                let mut serial = Engine::new(d, cov, &pts, 0.0);
                let want = serial.m_step(&mut st.clone()).unwrap();
                assert!(serial.repairs() > 0);
                for threads in [2, 3, 8] {
                    let mut engine = Engine::new(d, cov, &pts, 0.0);
                    engine.set_threads(threads);
                    // Buffers of another mixture, of another size, with
                    // other numbers in them.
                    engine.recycle(truth.clone());
                    for _ in 0..2 {
                        let got = engine.m_step(&mut st.clone()).unwrap();
                        assert_eq!(got, want);
                        let (mut a, mut b) = (vec![0.0; 600 * 5], vec![0.0; 600 * 5]);
                        want.weighted_log_probs(&pts, &mut a);
                        got.weighted_log_probs(&pts, &mut b);
                        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
                        engine.recycle(got);
                    }
                    assert_eq!(engine.repairs(), 2 * serial.repairs());
                }
            }
        }
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
