//! Checkpoint file: `magic | format version | payload length | postcard payload | CRC32`.
//!
//! Written to a temporary file in the same directory, fsynced, renamed over
//! the old one, and the directory fsynced; older generations are kept as
//! `PATH.1`, `PATH.2`, ... A file that fails any check is refused with the
//! name of the check, and loading can fall back to the newest good older
//! generation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::input::RejectCounts;
use crate::model::StepwiseEm;

/// Version of the checkpoint format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Everything needed to continue a stream exactly where it stopped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The learner: configuration, step counter, statistics, mixture, RNG
    /// state, warm-up buffer, pending partial batch, counters.
    pub learner: StepwiseEm,
    /// Rejected input records by reason, over the whole run (all resumes).
    pub rejected: RejectCounts,
    /// Points flagged as anomalies.
    pub anomalies: u64,
    /// When the run that created this model started (Unix milliseconds).
    pub created_unix_ms: u64,
    /// When this checkpoint was written (Unix milliseconds).
    pub updated_unix_ms: u64,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Stand-in until the format is written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Writes `ckpt` to `path` atomically, keeping `keep` older generations.
///
/// # Errors
///
/// [`CheckpointError::Io`] when any write, fsync or rename fails; the old
/// file is then left as it was.
pub fn save(path: &Path, ckpt: &Checkpoint, keep: usize) -> Result<(), CheckpointError> {
    let _ = (path, ckpt, keep);
    todo!()
}

/// Reads and verifies one checkpoint file.
///
/// # Errors
///
/// A [`CheckpointError`] naming the check that failed.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let _ = path;
    todo!()
}
