//! Format 1, read only: the payload was the serde derive of the in-memory
//! learner of that time. These types pin its layout field by field
//! (postcard is not self-describing: order and types are the format), so
//! format-1 files load forever, whatever the learner becomes. Types that
//! format 2 keeps unchanged are reused from here by [`super::schema`].

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::input::RejectCounts;
use crate::model::params::DEFAULT_MAX_COMPONENTS;
use crate::model::{ComponentCount, CovarianceType, Params};

/// The learner's options (format 1 and 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ParamsV1 {
    pub components: u64,
    pub covariance: CovarianceType,
    pub batch_size: u64,
    pub step_decay: f64,
    pub step_offset: f64,
    pub step_floor: f64,
    pub warmup: u64,
    pub reg_covar: f64,
    pub seed: u64,
    pub init_seeds: u64,
    pub init_iters: u64,
}

/// Counters (format 1 and 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct CountersV1 {
    pub points_seen: u64,
    pub updates: u64,
    pub reseeds: u64,
    pub repairs: u64,
    pub refused_batches: u64,
    pub refused_points: u64,
    pub outliers: u64,
    pub log_lik_sum: f64,
    pub log_lik_points: u64,
}

/// Sufficient statistics (format 1 and 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct StatsV1 {
    pub covariance: CovarianceType,
    pub dim: u64,
    pub s0: Vec<f64>,
    pub mean: Vec<f64>,
    pub cov: Vec<f64>,
    pub points: f64,
}

/// Mixture parameters (format 1 and 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct MixtureV1 {
    pub covariance: CovarianceType,
    pub dim: u64,
    pub weights: Vec<f64>,
    pub means: Vec<f64>,
    pub covariances: Vec<f64>,
}

/// The M-step's context as format 1 stored it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct EngineV1 {
    pub dim: u64,
    pub covariance: CovarianceType,
    pub scale: Vec<f64>,
    pub reg: Vec<f64>,
    pub repairs: u64,
    pub reseeds: u64,
}

/// The learner as format 1 stored it: one struct with optional parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct LearnerV1 {
    pub params: ParamsV1,
    pub dim: u64,
    pub rng: ChaCha8Rng,
    /// Warm-up buffer before the first model, then the partial batch.
    pub pending: Vec<f64>,
    pub step: f64,
    pub engine: Option<EngineV1>,
    pub stats: Option<StatsV1>,
    pub mixture: Option<MixtureV1>,
    pub worst: Vec<f64>,
    pub counters: CountersV1,
}

/// A format-1 payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct CheckpointV1 {
    pub learner: LearnerV1,
    pub rejected: RejectCounts,
    pub anomalies: u64,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
}

/// A stored count or size as `usize`, or the check that fails.
pub(super) fn to_usize(v: u64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} {v} does not fit this platform"))
}

impl ParamsV1 {
    pub(super) fn to_params(&self) -> Result<Params, String> {
        Ok(Params {
            components: ComponentCount::Fixed(to_usize(self.components, "components")?),
            covariance: self.covariance,
            batch_size: to_usize(self.batch_size, "batch_size")?,
            step_decay: self.step_decay,
            step_offset: self.step_offset,
            step_floor: self.step_floor,
            warmup: to_usize(self.warmup, "warmup")?,
            reg_covar: self.reg_covar,
            seed: self.seed,
            init_seeds: to_usize(self.init_seeds, "init_seeds")?,
            init_iters: to_usize(self.init_iters, "init_iters")?,
            // Formats 1 to 4 stopped at the default: format 5 stores it
            // beside.
            init_tol: Params::default().init_tol,
            // Formats 1 and 2 had neither: format 3 stores them beside.
            max_components: DEFAULT_MAX_COMPONENTS,
            adapt_components: false,
            // Formats 1 to 3 had none: format 4 stores it beside.
            resolution: Default::default(),
        })
    }

    pub(super) fn of(p: &Params) -> Self {
        ParamsV1 {
            // `auto` is 0 here; format 3 says `auto` beside.
            components: p.fixed_components().unwrap_or(0) as u64,
            covariance: p.covariance,
            batch_size: p.batch_size as u64,
            step_decay: p.step_decay,
            step_offset: p.step_offset,
            step_floor: p.step_floor,
            warmup: p.warmup as u64,
            reg_covar: p.reg_covar,
            seed: p.seed,
            init_seeds: p.init_seeds as u64,
            init_iters: p.init_iters as u64,
        }
    }
}

/// Format 1 to format 2: the optional parts become a phase. A learner with
/// all three of engine, statistics and mixture is fitted (its pending
/// points are the partial batch); with none it is in warm-up (its pending
/// points are the buffer); anything in between is refused.
pub(super) fn migrate(v1: CheckpointV1) -> Result<super::schema::CheckpointV2, String> {
    use super::schema::{CheckpointV2, EngineV2, FittedV2, PhaseV2};
    let l = v1.learner;
    let phase = match (l.engine, l.stats, l.mixture) {
        (None, None, None) => PhaseV2::WarmUp { buffer: l.pending },
        (Some(engine), Some(stats), Some(mixture)) => {
            if engine.dim != l.dim || engine.covariance != l.params.covariance {
                return Err(format!(
                    "the engine is for dimension {} with {} covariances, the learner for dimension {} with {}",
                    engine.dim, engine.covariance, l.dim, l.params.covariance
                ));
            }
            PhaseV2::Fitted(Box::new(FittedV2 {
                engine: EngineV2 {
                    scale: engine.scale,
                    reg: engine.reg,
                    repairs: engine.repairs,
                    reseeds: engine.reseeds,
                },
                stats,
                mixture,
                pending: l.pending,
                worst: l.worst,
            }))
        }
        (engine, stats, mixture) => {
            return Err(format!(
                "fitted phase with parts missing: engine {}, statistics {}, mixture {}",
                present(engine.is_some()),
                present(stats.is_some()),
                present(mixture.is_some())
            ))
        }
    };
    Ok(CheckpointV2 {
        params: l.params,
        dim: l.dim,
        rng: l.rng,
        step: l.step,
        counters: l.counters,
        phase,
        rejected: v1.rejected,
        anomalies: v1.anomalies,
        created_unix_ms: v1.created_unix_ms,
        updated_unix_ms: v1.updated_unix_ms,
        sources: Vec::new(),
        columns: None,
        selection: None,
    })
}

fn present(yes: bool) -> &'static str {
    if yes {
        "present"
    } else {
        "missing"
    }
}
