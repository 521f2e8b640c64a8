//! Per-component sufficient statistics.

use serde::{Deserialize, Serialize};

/// Averaged sufficient statistics of every component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureStats {}
