//! [`ReportError`]: what can go wrong in `score`, `plot` and `diff`.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::model::ModelError;

/// Why a report command failed; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A checkpoint could not be read.
    #[error("cannot read checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint was written before the warm-up ended and its warm-up
    /// buffer cannot be fitted on the fly either (the reason given).
    #[error("checkpoint {0} holds no model yet (written during the warm-up) and its warm-up buffer cannot be fitted on the fly: {1}; let the run (--resume) see more varied points first")]
    NoModel(PathBuf, String),
    /// A data or output file could not be opened, read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An option is out of range or does not fit the model.
    #[error("{0}")]
    Invalid(String),
    /// The data given holds nothing usable (a data problem, not a usage
    /// error).
    #[error("{0}")]
    Data(String),
    /// Two checkpoints cannot be compared.
    #[error("cannot compare the checkpoints: {0}")]
    Incompatible(String),
    /// A mixture could not be built (only from hand-made parameters).
    #[error(transparent)]
    Model(#[from] ModelError),
}
