//! The numeric core: synchronous, deterministic, no tokio, no files, no
//! sockets.
//!
//! Modules, in dependency order (each uses only those above it):
//!
//! - `kernels`: the register-blocked inner loops of the densities, the
//!   statistics and the Cholesky factorisation for wide points.
//! - [`covariance`]: [`CovarianceType`] and the factorisation helpers.
//! - [`mixture`]: [`GaussianMixture`], parameters and densities.
//! - [`stats`]: per-component sufficient statistics, accumulated from a batch
//!   and blended or merged.
//! - [`params`]: the learner's options, [`Params`] checked into
//!   [`CheckedParams`].
//! - [`em`]: the public EM engine: E-step statistics of a batch against a
//!   mixture ([`BatchStats`], mergeable), blend with a step size, M-step
//!   returning a `Result`. Everything below is built from these steps.
//! - [`init`]: k-means++ seeding and short batch EM on the warm-up buffer,
//!   then split-and-merge moves (`smem`) out of local optima.
//! - [`adapt`]: keeping K right over the stream (prune, merge, split,
//!   spawn by BIC on recent points), a pure component the learner calls.
//! - [`resolution`]: each dimension's rounding step, detected as values
//!   stream or given, and the variance floor it implies.
//! - [`select`]: BIC and AIC, and choosing K on the warm-up buffer.
//! - [`online`]: [`StepwiseEm`], the learner that ties them together
//!   (fixed or `auto` K, the recent-points reservoir, the adaptation of K
//!   with `adapt_components`), and its plain [`LearnerState`] for
//!   checkpoints.
//! - `testdata` (tests only: the `test-support` feature): reference
//!   mixtures (the EM write-up's examples and harder ones) for tests,
//!   benchmarks and examples.

pub mod adapt;
pub mod covariance;
pub mod em;
mod floor;
pub mod init;
mod kernels;
pub mod mixture;
pub mod online;
pub mod params;
mod pool;
pub mod resolution;
pub mod select;
mod smem;
pub mod stats;
#[cfg(any(test, feature = "test-support"))]
pub mod testdata;

pub use covariance::CovarianceType;
pub use em::{BatchStats, Engine, EngineState, LearnError, ScoreBuffer, NO_LABEL};
pub use mixture::{GaussianMixture, MixtureParams, ModelError};
pub use online::{Counters, FitHook, Fitted, KChange, LearnerState, Phase, StepwiseEm, UNTAGGED};
pub use params::{
    learner_memory, max_dim_for, CheckedParams, ComponentCount, ParamError, Params, MAX_BATCH_SIZE,
    MAX_WARMUP,
};
pub use resolution::{DimResolution, OffGrid, Resolution};
pub use stats::MixtureStats;
