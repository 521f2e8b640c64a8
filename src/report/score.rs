//! Per-point score output (`run --score` and `score`): label, log-likelihood
//! under the model before the point was learned, optional responsibilities,
//! and anomaly flags.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::model::ScoreBuffer;

/// When a point is flagged as an anomaly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AlertRule {
    /// Never.
    None,
    /// Log-likelihood below a fixed threshold.
    Below(f64),
    /// Log-likelihood below the running q-quantile of recent points.
    Quantile(f64),
}

/// How score lines look.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreOptions {
    /// JSON objects instead of CSV.
    pub json: bool,
    /// Also write the K responsibilities.
    pub responsibilities: bool,
    /// Anomaly rule; any rule but `None` adds an `anomaly` field.
    pub alert: AlertRule,
}

/// Writes score lines and keeps the anomaly detector's state.
#[derive(Clone, Debug)]
pub struct Scorer {
    _todo: (),
}

impl Scorer {
    /// A scorer with these options for a K-component model.
    pub fn new(options: ScoreOptions, k: usize) -> Self {
        let _ = (options, k);
        todo!()
    }

    /// Writes one line per point held in `scores` (labels, log_lik and, when
    /// asked, resp) and returns how many were flagged as anomalies.
    ///
    /// # Errors
    ///
    /// The writer's I/O error (a closed stdout shows up here).
    pub fn write_block<W: Write>(&mut self, scores: &ScoreBuffer, out: &mut W) -> io::Result<u64> {
        let _ = (scores, out);
        todo!()
    }

    /// Points flagged so far.
    pub fn anomalies(&self) -> u64 {
        todo!()
    }
}
