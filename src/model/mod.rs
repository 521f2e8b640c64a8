//! The numeric core: synchronous, deterministic, no tokio, no files, no
//! sockets.
//!
//! - [`mixture`]: [`GaussianMixture`], parameters and densities.
//! - [`covariance`]: [`CovarianceType`] and the factorisation helpers.
//! - [`stats`]: per-component sufficient statistics, accumulated from a batch
//!   and blended or merged.
//! - [`init`]: k-means++ seeding and short batch EM on the warm-up buffer.
//! - [`online`]: [`StepwiseEm`], the learner that ties them together.

pub mod covariance;
pub mod init;
pub mod mixture;
pub mod online;
pub mod stats;

pub use covariance::CovarianceType;
pub use mixture::{GaussianMixture, MixtureParams, ModelError};
pub use online::{
    CheckedParams, Counters, LearnError, ParamError, Params, ScoreBuffer, StepwiseEm,
};
pub use stats::MixtureStats;
