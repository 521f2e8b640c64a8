//! Everything a person reads: `inspect` (table and JSON), `plot` (SVG),
//! `diff` between checkpoints, per-point score output.

pub mod diff;
mod error;
pub mod inspect;
pub mod plot;
pub mod score;

pub use error::ReportError;

/// A full-covariance mixture from flat parameters, for the tests of the
/// reports.
#[cfg(test)]
pub(crate) fn test_mixture(
    dim: usize,
    weights: Vec<f64>,
    means: Vec<f64>,
    covariances: Vec<f64>,
) -> crate::model::GaussianMixture {
    crate::model::GaussianMixture::new(crate::model::MixtureParams {
        covariance: crate::model::CovarianceType::Full,
        dim,
        weights,
        means,
        covariances,
    })
    .expect("a valid test mixture")
}
