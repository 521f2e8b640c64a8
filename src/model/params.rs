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
    /// Largest K tried when `components` is `auto`, and largest K that
    /// `adapt_components` may reach (at least 1).
    pub max_components: usize,
    /// Keep K right over the stream ([`super::adapt`]): prune, merge,
    /// split or spawn a component when the BIC on the recent points says
    /// so. Off by default.
    pub adapt_components: bool,
}

impl Default for Params {
    /// The defaults of `config/emstream.toml`; see the README for how they
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
            max_components: DEFAULT_MAX_COMPONENTS,
            adapt_components: false,
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
    /// `max_components` of 0 or absurdly large.
    #[error("max_components (--max-components) must be between 1 and {MAX_COMPONENTS}, got {0}")]
    MaxComponents(usize),
}

/// Largest K accepted: beyond this a mixture is a density estimate better
/// made another way, and per-batch M-steps would dominate.
pub const MAX_COMPONENTS: usize = 4096;

/// Largest K tried by default when choosing K (`--max-components`).
pub const DEFAULT_MAX_COMPONENTS: usize = 10;

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
        if self.warmup < k {
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
        Ok(CheckedParams(self))
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
