//! The numeric core: synchronous, deterministic, no tokio, no files, no
//! sockets.
//!
//! - [`mixture`]: [`GaussianMixture`], parameters and densities.
//! - [`covariance`]: [`CovarianceType`] and the factorisation helpers.
//! - [`stats`]: per-component sufficient statistics, accumulated from a batch
//!   and blended or merged.
//! - [`init`]: k-means++ seeding and short batch EM on the warm-up buffer,
//!   then split-and-merge moves (`smem`) out of local optima.
//! - [`adapt`]: keeping K right over the stream (prune, merge, split,
//!   spawn by BIC on recent points), a pure component the learner calls.
//! - [`select`]: BIC and AIC, and choosing K on the warm-up buffer.
//! - [`online`]: [`StepwiseEm`], the learner that ties them together.
//! - [`testdata`]: reference mixtures (the EM write-up's examples and
//!   harder ones) for tests, benchmarks and examples.

pub mod adapt;
pub mod covariance;
pub mod init;
pub mod mixture;
pub mod online;
pub mod select;
mod smem;
pub mod stats;
pub mod testdata;

pub use covariance::CovarianceType;
pub use mixture::{GaussianMixture, MixtureParams, ModelError};
pub(crate) use online::Engine;
pub use online::{
    CheckedParams, Counters, LearnError, ParamError, Params, ScoreBuffer, StepwiseEm,
};
pub use stats::MixtureStats;
