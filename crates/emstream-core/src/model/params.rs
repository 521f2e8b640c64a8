//! [`Params`]: the learner's options as the user gives them, and
//! [`CheckedParams`], the only form the learner accepts (style habit 4:
//! validate once into a checked type).
//!
//! Plain data with no dependency on the rest of the model, so the warm-up
//! fit, split-and-merge and the learner all read it without a cycle.

use serde::{Deserialize, Serialize};

use super::covariance::CovarianceType;

/// Learner options as the user gives them; [`Params::check`] turns them into
/// [`CheckedParams`], the only form the learner accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Number of mixture components K: a number (at least 1), or `auto`
    /// to choose K by BIC on the warm-up buffer among 1..=`max_components`
    /// ([`super::select`]).
    pub components: ComponentCount,
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
    /// Batch EM on the warm-up buffer stops once an iteration raises the
    /// average log-likelihood per point by less than this (at least 0;
    /// with 0 it stops only when an iteration lowers it). The default, 1e-4 nats, is
    /// loose on purpose: the stream refines the rest.
    pub init_tol: f64,
    /// Largest K tried when `components` is `auto`, and largest K that
    /// `adapt_components` may reach (at least 1).
    pub max_components: usize,
    /// Keep K right over the stream ([`super::adapt`]): prune, merge,
    /// split or spawn a component when the BIC on the recent points says
    /// so. Off by default.
    pub adapt_components: bool,
    /// Each dimension's rounding step ([`super::resolution`]): detected
    /// from the values unless given.
    pub resolution: super::resolution::ResolutionSpec,
}

impl Default for Params {
    /// The defaults of `config/emstream.toml`; see docs/learning.md for how they
    /// were chosen.
    fn default() -> Self {
        Params {
            components: ComponentCount::Fixed(2),
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
            init_tol: 1e-4,
            max_components: DEFAULT_MAX_COMPONENTS,
            adapt_components: false,
            resolution: super::resolution::ResolutionSpec::default(),
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

    /// These parameters with the warm-up a learner of dimension `dim`
    /// uses: [`Params::warmup_for`].
    pub fn sized_for(mut self, dim: usize) -> Self {
        self.0.warmup = self.0.warmup_for(dim);
        self
    }
}

/// A learner option that is out of range; the message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// K = 0 or absurdly large.
    #[error("components (-k/--components) must be between 1 and {MAX_COMPONENTS}, got {0}")]
    Components(usize),
    /// Batch size 0 or above [`MAX_BATCH_SIZE`].
    #[error("batch_size (--batch-size) must be between 1 and {MAX_BATCH_SIZE}, got {0}")]
    BatchSize(usize),
    /// alpha outside (0.5, 1].
    #[error("step_decay (--step-decay) must be in (0.5, 1] for stepwise EM to converge, got {0}")]
    StepDecay(f64),
    /// t0 negative or not finite.
    #[error("step_offset must be a finite number >= 0, got {0}")]
    StepOffset(f64),
    /// eta_min outside [0, 1).
    #[error("step_floor (--step-floor) must be in [0, 1): 0 for a stationary stream, e.g. 0.01 to forget old points; got {0}")]
    StepFloor(f64),
    /// Warm-up smaller than K or above [`MAX_WARMUP`].
    #[error("warmup (--warmup) must be at least the number of components ({k}) and at most {MAX_WARMUP}, got {warmup}")]
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
    /// Negative or non-finite tolerance.
    #[error(
        "init_tol (--init-tol) must be a finite number >= 0 (nats per point, e.g. 1e-4), got {0}"
    )]
    InitTol(f64),
    /// `max_components` of 0 or absurdly large.
    #[error("max_components (--max-components) must be between 1 and {MAX_COMPONENTS}, got {0}")]
    MaxComponents(usize),
}

/// Largest K accepted: beyond this a mixture is a density estimate better
/// made another way, and per-batch M-steps would dominate.
pub const MAX_COMPONENTS: usize = 4096;

/// Largest mini-batch accepted: a batch is held whole (with K
/// responsibilities per point), and beyond a million points a batch is no
/// longer "mini" (the step count would barely move).
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// Largest warm-up accepted: the buffer is held whole and fitted several
/// times over (`init_seeds` × `init_iters` passes); a million points is
/// already minutes of fitting at moderate d and K.
pub const MAX_WARMUP: usize = 1 << 20;

/// Bytes a learner of dimension `dim` needs at most with these options, an
/// estimate that errs high (f64s of 8 bytes), or `None` when it does not
/// even fit in a `u64`:
///
/// - warm-up: the buffer, its copy without outliers and the fit's
///   responsibilities, `8 (2 W d + W K)`;
/// - stream: the pending batch and its responsibilities, `8 (B d + B K)`;
/// - model: K means and covariances, held about eight times over (mixture,
///   its factors, statistics, their blend, the E-step's sums, the best
///   seed of the warm-up fit), `64 K (d + c)` with `c` the covariance's
///   numbers per component (d² for full, d for diag, 1 for spherical).
pub fn learner_memory(params: &Params, dim: usize) -> Option<u64> {
    let (w, b, k, d) = (
        params.warmup_for(dim) as u128,
        params.batch_size as u128,
        // With `auto`, the largest K tried.
        params.fixed_components().unwrap_or(params.max_components) as u128,
        dim as u128,
    );
    let c = match params.covariance {
        super::covariance::CovarianceType::Full => d.checked_mul(d)?,
        super::covariance::CovarianceType::Diagonal => d,
        super::covariance::CovarianceType::Spherical => 1,
    };
    let warm = w
        .checked_mul(d)?
        .checked_mul(2)?
        .checked_add(w.checked_mul(k)?)?;
    let stream = b.checked_mul(d)?.checked_add(b.checked_mul(k)?)?;
    let model = k.checked_mul(d.checked_add(c)?)?.checked_mul(8)?;
    let total = warm
        .checked_add(stream)?
        .checked_add(model)?
        .checked_mul(8)?;
    u64::try_from(total).ok()
}

/// The largest dimension whose learner fits in `budget` bytes with these
/// options (0 when not even dimension 1 does).
pub fn max_dim_for(params: &Params, budget: u64) -> usize {
    let fits = |d: usize| learner_memory(params, d).is_some_and(|m| m <= budget);
    if !fits(1) {
        return 0;
    }
    let (mut lo, mut hi) = (1usize, 1usize << 32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Largest K tried by default when choosing K (`--max-components`).
pub const DEFAULT_MAX_COMPONENTS: usize = 10;

/// Warm-up points per free parameter of the largest mixture `--components
/// auto` tries. BIC tells a true component from its absence only once the
/// buffer's log-likelihood gain, which grows with n, beats the component's
/// `p ln n / 2` penalty: on 32-D points from 10 unit-scale components with
/// means N(0, 2²) (5,610 parameters at K = 10), 5,000 points choose K = 8,
/// 10,000 and more choose 10 on every stream tried, and at 20,000 and 31,500
/// K = 11..13 stay thousands above K = 10. Four points per parameter keeps
/// that margin.
pub const WARMUP_POINTS_PER_PARAMETER: usize = 4;

/// Largest warm-up [`Params::warmup_for`] sizes by itself (a larger
/// `warmup` is kept): four points per parameter up to K = 10 at d = 64;
/// wider points would spend minutes fitting the ten K and most of the
/// memory budget holding the buffer.
pub const MAX_SIZED_WARMUP: usize = 100_000;

impl Params {
    /// Validates every option once.
    ///
    /// # Errors
    ///
    /// [`ParamError`] naming the option and its allowed range.
    pub fn check(self) -> Result<CheckedParams, ParamError> {
        let k = match self.components {
            ComponentCount::Fixed(k) => k,
            // The warm-up needs one point; K is tried up to the number of
            // distinct points.
            ComponentCount::Auto => 1,
        };
        if k == 0 || k > MAX_COMPONENTS {
            return Err(ParamError::Components(k));
        }
        if self.max_components == 0 || self.max_components > MAX_COMPONENTS {
            return Err(ParamError::MaxComponents(self.max_components));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(ParamError::BatchSize(self.batch_size));
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
        if self.warmup < k || self.warmup > MAX_WARMUP {
            return Err(ParamError::Warmup {
                warmup: self.warmup,
                k,
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
        if !(self.init_tol >= 0.0 && self.init_tol.is_finite()) {
            return Err(ParamError::InitTol(self.init_tol));
        }
        Ok(CheckedParams(self))
    }

    /// The warm-up a learner of dimension `dim` buffers before its first
    /// fit: `warmup` for a fixed K; with `auto`, at least
    /// [`WARMUP_POINTS_PER_PARAMETER`] points per free parameter of the
    /// largest mixture tried, `max_components · (1 + d + c)` with `c` the
    /// covariance's parameters per component, up to [`MAX_SIZED_WARMUP`].
    /// So wide points get the buffer BIC needs to decide, and `warmup`
    /// stays the floor.
    pub fn warmup_for(&self, dim: usize) -> usize {
        match self.components {
            ComponentCount::Fixed(_) => self.warmup,
            ComponentCount::Auto => {
                let per_component = 1 + dim + self.covariance.free_params(dim);
                let sized = self
                    .max_components
                    .saturating_mul(per_component)
                    .saturating_mul(WARMUP_POINTS_PER_PARAMETER);
                self.warmup.max(sized.min(MAX_SIZED_WARMUP))
            }
        }
    }

    /// The number of components asked for, when it is a number.
    pub fn fixed_components(&self) -> Option<usize> {
        match self.components {
            ComponentCount::Fixed(k) => Some(k),
            ComponentCount::Auto => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CovarianceType;

    #[test]
    fn an_auto_warm_up_is_sized_for_the_largest_mixture() {
        let auto = Params {
            components: ComponentCount::Auto,
            ..Params::default()
        };
        // Small mixtures keep the given warm-up.
        assert_eq!(auto.warmup_for(2), 5000);
        // d = 32, K up to 10, full: 10 · (1 + 32 + 528) parameters.
        assert_eq!(auto.warmup_for(32), 4 * 10 * 561);
        let diag = Params {
            covariance: CovarianceType::Diagonal,
            ..auto.clone()
        };
        assert_eq!(diag.warmup_for(32), 5000);
        assert_eq!(auto.warmup_for(1000), MAX_SIZED_WARMUP);
        // A fixed K keeps its warm-up whatever the dimension.
        assert_eq!(Params::default().warmup_for(32), 5000);
        let checked = auto.check().unwrap().sized_for(32);
        assert_eq!(checked.warmup, 22_440);
        // Sizing twice changes nothing (a restored learner is sized again).
        assert_eq!(checked.clone().sized_for(32), checked);
        assert!(learner_memory(&checked, 32).unwrap() > 8 * 22_440 * 32);
    }

    #[test]
    fn memory_grows_with_the_options_and_never_overflows() {
        let p = Params::default();
        let m2 = learner_memory(&p, 2).unwrap();
        // Warm-up 5000 x 2, batch 1000 x 2, K = 2: well under a megabyte.
        assert!(m2 > 8 * 5000 * 2 && m2 < 1 << 20, "{m2}");
        assert!(learner_memory(&p, 30_000).unwrap() > 1 << 30);
        assert_eq!(learner_memory(&p, usize::MAX), None);
        let diag = Params {
            covariance: CovarianceType::Diagonal,
            ..Params::default()
        };
        assert!(learner_memory(&diag, 3000).unwrap() < learner_memory(&p, 3000).unwrap());
    }

    #[test]
    fn the_largest_dimension_fits_and_the_next_does_not() {
        let p = Params::default();
        let d = max_dim_for(&p, 1 << 30);
        assert!(d > 100 && d < 30_000, "{d}");
        assert!(learner_memory(&p, d).unwrap() <= 1 << 30);
        assert!(learner_memory(&p, d + 1).unwrap() > 1 << 30);
        assert_eq!(max_dim_for(&p, 10), 0);
    }

    #[test]
    fn huge_batch_and_warm_up_are_refused() {
        let big = Params {
            batch_size: 1 << 63,
            ..Params::default()
        };
        assert!(matches!(big.check(), Err(ParamError::BatchSize(_))));
        let big = Params {
            warmup: MAX_WARMUP + 1,
            ..Params::default()
        };
        assert!(matches!(big.check(), Err(ParamError::Warmup { .. })));
    }
}

/// The number of components asked for: a number, or `auto` (choose K on
/// the warm-up buffer). Parsed from `-k`/`--components` and from config
/// files, where it is a number or the string `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCount", into = "RawCount")]
pub enum ComponentCount {
    /// Exactly this many components (at least 1).
    Fixed(usize),
    /// Chosen on the warm-up buffer by [`super::select::choose_components`].
    Auto,
}

/// A number of components that is neither a positive number nor `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "components must be a number >= 1 or \"auto\" (to choose K by BIC on the warm-up), got {0:?}"
)]
pub struct BadComponentCount(pub String);

impl std::str::FromStr for ComponentCount {
    type Err = BadComponentCount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(ComponentCount::Auto);
        }
        match t.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(ComponentCount::Fixed(k)),
            _ => Err(BadComponentCount(s.to_string())),
        }
    }
}

impl std::fmt::Display for ComponentCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentCount::Fixed(k) => write!(f, "{k}"),
            ComponentCount::Auto => f.write_str("auto"),
        }
    }
}

/// The serialised form of [`ComponentCount`]: a number or a string.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawCount {
    Number(usize),
    Text(String),
}

impl TryFrom<RawCount> for ComponentCount {
    type Error = BadComponentCount;
    fn try_from(r: RawCount) -> Result<Self, Self::Error> {
        match r {
            RawCount::Number(k) => k.to_string().parse(),
            RawCount::Text(t) => t.parse(),
        }
    }
}

impl From<ComponentCount> for RawCount {
    fn from(c: ComponentCount) -> Self {
        match c {
            ComponentCount::Fixed(k) => RawCount::Number(k),
            ComponentCount::Auto => RawCount::Text("auto".to_string()),
        }
    }
}
