//! The numeric core: synchronous, deterministic, no tokio, no files, no
//! sockets.
//!
//! - [`mixture`]: [`GaussianMixture`], parameters and densities.
//! - [`covariance`]: [`CovarianceType`] and the factorisation helpers.
//! - [`stats`]: per-component sufficient statistics, accumulated from a batch
//!   and blended or merged.
//! - `kernels`: the register-blocked inner loops of both for wide points.
//! - [`init`]: k-means++ seeding and short batch EM on the warm-up buffer,
//!   then split-and-merge moves (`smem`) out of local optima.
//! - [`online`]: [`StepwiseEm`], the learner that ties them together.
//! - [`testdata`]: reference mixtures (the EM write-up's examples and
//!   harder ones) for tests, benchmarks and examples.

pub mod covariance;
pub mod init;
mod kernels;
pub mod mixture;
pub mod online;
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
