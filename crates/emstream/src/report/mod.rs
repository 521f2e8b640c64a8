//! Everything a person reads: `inspect` (table and JSON), `plot` (SVG),
//! `diff` between checkpoints, per-point score output.

pub mod diff;
mod error;
pub mod input_args;
pub mod inspect;
pub mod plot;
pub mod score;

pub use error::ReportError;

/// The model of a checkpoint: its mixture or, for one saved during the
/// warm-up (the end of the input or a stop before `--warmup` points), the
/// mixture fitted on the fly on its warm-up buffer, the same every time
/// ([`crate::model::StepwiseEm::model_or_fit`]).
///
/// # Errors
///
/// [`ReportError::NoModel`] when there is no model and the buffer cannot
/// be fitted (empty, or too few distinct points).
pub fn checkpoint_model(
    ck: &crate::checkpoint::Checkpoint,
    path: &Path,
) -> Result<crate::model::GaussianMixture, ReportError> {
    ck.learner
        .model_or_fit()
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| ReportError::NoModel(path.to_path_buf(), e.to_string()))
}
pub use input_args::InputArgs;

use std::io::{Read, Write};
use std::path::Path;

/// Whether `path` means standard input or output: `-`.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens an input of a report command: standard input for `-`, else the
/// file.
///
/// # Errors
///
/// [`ReportError::File`] when the file cannot be opened.
pub fn open_input(path: &Path) -> Result<Box<dyn Read + Send>, ReportError> {
    if is_stdio(path) {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = std::fs::File::open(path).map_err(|source| ReportError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(file))
}

/// Writes the whole output of a report command: to standard output for
/// `-`, else to the file (replaced).
///
/// # Errors
///
/// [`ReportError::File`] when the file cannot be written, or
/// [`ReportError::Io`] when standard output fails.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    if is_stdio(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return Ok(out.flush()?);
    }
    std::fs::write(path, bytes).map_err(|source| ReportError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// A checkpoint of `learner` and nothing else (no rejects, sources or
/// column names; time stamps 0), for the tests of the reports.
#[cfg(test)]
pub(crate) fn test_checkpoint(learner: crate::model::StepwiseEm) -> crate::checkpoint::Checkpoint {
    crate::checkpoint::Checkpoint {
        learner,
        rejected: Default::default(),
        anomalies: 0,
        created_unix_ms: 0,
        updated_unix_ms: 0,
        sources: Vec::new(),
        columns: None,
        selection: None,
    }
}

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
