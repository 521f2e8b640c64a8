//! Formats 2 to 5: the on-disk checkpoint as an explicit, versioned
//! type, converted to and from the in-memory [`Checkpoint`] and validated
//! as a whole on the way in.
//!
//! Format 5 ([`CheckpointV5`]) is format 4 followed by the tolerance of
//! the batch EM on the warm-up buffer (`init_tol`). Format 4 and older
//! migrate with the tolerance they were fitted with, the default.
//!
//! Format 4 ([`CheckpointV4`]) is format 3 followed by each dimension's
//! resolution ([`ResolutionV4`]: the option as given, the steps given and
//! detected, the first values). Format 3 and older migrate with every
//! dimension of a fitted model continuous (the model goes on exactly as
//! it was learned) and a warm-up buffer's resolution detected afresh.
//!
//! Format 3 ([`CheckpointV3`]) is format 2 followed by the choice and the
//! adaptation of K ([`ChooseKV3`]: `components = auto`, `max_components`,
//! `adapt_components`, the count of K changes, the recent-points reservoir
//! and the adapter's hysteresis state). Postcard encodes a struct as its
//! fields in order, so a format-3 payload starts with a whole format-2
//! payload; format 2 is migrated by reading that part alone and taking the
//! defaults of format 3 (a fixed K, no adaptation, an empty reservoir).
//!
//! The learner is a phase: `WarmUp { buffer }` before the first model, or
//! `Fitted { engine, stats, mixture, pending, worst }` with every part
//! present by construction. Around it: options, dimension, RNG state, step
//! counter, counters, rejects, anomalies, timestamps, and room for what
//! comes next (source positions, column names, the model selection), so
//! adding them needs no version bump. Any other change to these types is a
//! new format version with a migration (as [`super::v1`] shows); the
//! golden-file test in `tests/golden/` fails when the encoding of a fixed
//! model changes.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::v1::{to_usize, CountersV1, MixtureV1, ParamsV1, StatsV1};
use super::{Checkpoint, ModelSelection, SourcePosition};
use crate::input::RejectCounts;
use crate::model::adapt::{AdapterState, RecentPoints};
use crate::model::online::recent_capacity;
use crate::model::resolution::ResolutionSpec;
use crate::model::{
    ComponentCount, Counters, DimResolution, EngineState, Fitted, GaussianMixture, LearnerState,
    MixtureParams, MixtureStats, Phase, Resolution, StepwiseEm,
};

/// The format version this build writes ([`CheckpointV5`]).
pub(super) const VERSION: u32 = 5;

/// A format-5 payload: format 4, then the warm-up EM's tolerance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct CheckpointV5 {
    pub v4: CheckpointV4,
    /// [`crate::model::Params::init_tol`].
    pub init_tol: f64,
}

impl CheckpointV5 {
    /// The on-disk form of an in-memory checkpoint.
    pub(super) fn of(ck: &Checkpoint) -> Self {
        CheckpointV5 {
            v4: CheckpointV4::of(ck),
            init_tol: ck.learner.params().init_tol,
        }
    }

    /// The in-memory checkpoint, checked as [`CheckpointV4::into_checkpoint`]
    /// does, the tolerance with the other options.
    ///
    /// # Errors
    ///
    /// A message naming the first failed check.
    pub(super) fn into_checkpoint(self) -> Result<Checkpoint, String> {
        self.v4.into_checkpoint_with(Some(self.init_tol))
    }
}

/// A format-4 payload: format 3, then each dimension's resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct CheckpointV4 {
    pub v3: CheckpointV3,
    pub resolution: ResolutionV4,
    /// A model fitted on a warm-up buffer that an input ended before
    /// filling (the buffer is kept in the phase: a resume goes on
    /// buffering).
    pub provisional: Option<MixtureV1>,
}

/// What format 4 adds: the rounding step of each dimension, as given and
/// as detected ([`Resolution`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ResolutionV4 {
    /// The `resolution` option as the user gave it (empty: `auto`).
    pub spec: Vec<Option<f64>>,
    /// The step given per dimension.
    pub given: Vec<Option<f64>>,
    /// The first value of each dimension.
    pub origin: Vec<Option<f64>>,
    /// What the values showed per dimension.
    pub seen: Vec<SeenV4>,
}

/// One dimension's detected step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum SeenV4 {
    Unseen,
    Step(f64),
    Continuous,
}

impl CheckpointV4 {
    /// The on-disk form of an in-memory checkpoint.
    pub(super) fn of(ck: &Checkpoint) -> Self {
        let r = ck.learner.resolution();
        CheckpointV4 {
            v3: CheckpointV3::of(ck),
            resolution: ResolutionV4 {
                spec: ck.learner.params().resolution.0.clone(),
                given: r.given().to_vec(),
                origin: r.origin().to_vec(),
                seen: r
                    .seen()
                    .iter()
                    .map(|s| match *s {
                        DimResolution::Unseen => SeenV4::Unseen,
                        DimResolution::Step(q) => SeenV4::Step(q),
                        DimResolution::Continuous => SeenV4::Continuous,
                    })
                    .collect(),
            },
            provisional: ck.learner.provisional().map(|m| {
                let m = MixtureParams::from(m.clone());
                MixtureV1 {
                    covariance: m.covariance,
                    dim: m.dim as u64,
                    weights: m.weights,
                    means: m.means,
                    covariances: m.covariances,
                }
            }),
        }
    }

    /// The in-memory checkpoint, checked as a whole as
    /// [`CheckpointV3::into_checkpoint`] does, and the resolution too.
    ///
    /// # Errors
    ///
    /// A message naming the first failed check.
    pub(super) fn into_checkpoint(self) -> Result<Checkpoint, String> {
        self.into_checkpoint_with(None)
    }

    /// [`CheckpointV4::into_checkpoint`] with format 5's tolerance, or the
    /// default (`None`: a format-4 file).
    fn into_checkpoint_with(self, init_tol: Option<f64>) -> Result<Checkpoint, String> {
        let provisional = self
            .provisional
            .map(|m| {
                GaussianMixture::new(MixtureParams {
                    covariance: m.covariance,
                    dim: to_usize(m.dim, "the provisional mixture's dimension")?,
                    weights: m.weights,
                    means: m.means,
                    covariances: m.covariances,
                })
                .map_err(|e| format!("the provisional mixture is invalid: {e}"))
            })
            .transpose()?;
        let mut ck =
            self.v3
                .v2
                .into_checkpoint_with(Some(self.v3.k), Some(self.resolution), init_tol)?;
        ck.learner
            .set_provisional(provisional)
            .map_err(|e| e.to_string())?;
        Ok(ck)
    }
}

/// A format-3 payload: format 2, then the choice and adaptation of K.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct CheckpointV3 {
    pub v2: CheckpointV2,
    pub k: ChooseKV3,
}

/// What format 3 adds: how K is chosen and kept right.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ChooseKV3 {
    /// `components = auto` (format 2's `components` is then 0).
    pub auto: bool,
    pub max_components: u64,
    pub adapt_components: bool,
    /// Changes of K made by the adaptation.
    pub component_changes: u64,
    pub recent: RecentV3,
    /// Present exactly when `adapt_components` is on.
    pub adapter: Option<AdapterV3>,
}

/// The recent-points reservoir: a ring buffer of at most `capacity` points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct RecentV3 {
    pub capacity: u64,
    pub next: u64,
    pub data: Vec<f64>,
}

/// The adapter's hysteresis state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct AdapterV3 {
    pub last_check: u64,
    pub last_full_check: u64,
    pub last_change: Option<(u64, i8)>,
    pub changes: u64,
    pub baseline: Option<f64>,
}

impl CheckpointV3 {
    /// The on-disk form of an in-memory checkpoint.
    pub(super) fn of(ck: &Checkpoint) -> Self {
        let l = &ck.learner;
        let p = l.params();
        let r = l.recent();
        CheckpointV3 {
            v2: CheckpointV2::of(ck),
            k: ChooseKV3 {
                auto: p.components == ComponentCount::Auto,
                max_components: p.max_components as u64,
                adapt_components: p.adapt_components,
                component_changes: l.counters().component_changes,
                recent: RecentV3 {
                    capacity: r.capacity() as u64,
                    next: r.next_row() as u64,
                    data: r.points().to_vec(),
                },
                adapter: l.state().adapter.map(|a| AdapterV3 {
                    last_check: a.last_check,
                    last_full_check: a.last_full_check,
                    last_change: a.last_change,
                    changes: a.changes,
                    baseline: a.baseline,
                }),
            },
        }
    }

    /// The in-memory checkpoint, checked as a whole as
    /// [`CheckpointV2::into_checkpoint`] does, and the reservoir too.
    ///
    /// # Errors
    ///
    /// A message naming the first failed check.
    pub(super) fn into_checkpoint(self) -> Result<Checkpoint, String> {
        self.v2.into_checkpoint_with(Some(self.k), None, None)
    }
}

/// A format-2 payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct CheckpointV2 {
    pub params: ParamsV1,
    pub dim: u64,
    pub rng: ChaCha8Rng,
    pub step: f64,
    pub counters: CountersV1,
    pub phase: PhaseV2,
    pub rejected: RejectCounts,
    pub anomalies: u64,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    pub sources: Vec<SourcePositionV2>,
    pub columns: Option<Vec<String>>,
    pub selection: Option<ModelSelectionV2>,
}

/// Warm-up or fitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum PhaseV2 {
    WarmUp { buffer: Vec<f64> },
    Fitted(Box<FittedV2>),
}

/// A learner with a model: every part present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct FittedV2 {
    pub engine: EngineV2,
    pub stats: StatsV1,
    pub mixture: MixtureV1,
    pub pending: Vec<f64>,
    pub worst: Vec<f64>,
}

/// The M-step's context (its dimension and covariance type are the
/// learner's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct EngineV2 {
    pub scale: Vec<f64>,
    pub reg: Vec<f64>,
    pub repairs: u64,
    pub reseeds: u64,
}

/// A source and its position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct SourcePositionV2 {
    pub source: String,
    pub position: u64,
}

/// How K was chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ModelSelectionV2 {
    pub bic_by_k: Vec<(u64, f64)>,
    pub chosen_by: String,
}

impl CheckpointV2 {
    /// The on-disk form of an in-memory checkpoint.
    pub(super) fn of(ck: &Checkpoint) -> Self {
        let LearnerState {
            params,
            dim,
            rng,
            step,
            counters,
            phase,
            ..
        } = ck.learner.state();
        let phase = match phase {
            Phase::WarmUp { buffer } => PhaseV2::WarmUp { buffer },
            Phase::Fitted(f) => {
                let Fitted {
                    engine,
                    stats,
                    mixture,
                    pending,
                    worst,
                } = *f;
                let m = MixtureParams::from(mixture);
                PhaseV2::Fitted(Box::new(FittedV2 {
                    engine: EngineV2 {
                        scale: engine.scale,
                        reg: engine.reg,
                        repairs: engine.repairs,
                        reseeds: engine.reseeds,
                    },
                    stats: StatsV1 {
                        covariance: stats.covariance,
                        dim: stats.dim as u64,
                        s0: stats.s0,
                        mean: stats.mean,
                        cov: stats.cov,
                        points: stats.points,
                    },
                    mixture: MixtureV1 {
                        covariance: m.covariance,
                        dim: m.dim as u64,
                        weights: m.weights,
                        means: m.means,
                        covariances: m.covariances,
                    },
                    pending,
                    worst,
                }))
            }
        };
        let c = counters;
        CheckpointV2 {
            params: ParamsV1::of(&params),
            dim: dim as u64,
            rng,
            step,
            counters: CountersV1 {
                points_seen: c.points_seen,
                updates: c.updates,
                reseeds: c.reseeds,
                repairs: c.repairs,
                refused_batches: c.refused_batches,
                refused_points: c.refused_points,
                outliers: c.outliers,
                log_lik_sum: c.log_lik_sum,
                log_lik_points: c.log_lik_points,
            },
            phase,
            rejected: ck.rejected.clone(),
            anomalies: ck.anomalies,
            created_unix_ms: ck.created_unix_ms,
            updated_unix_ms: ck.updated_unix_ms,
            sources: ck
                .sources
                .iter()
                .map(|s| SourcePositionV2 {
                    source: s.source.clone(),
                    position: s.position,
                })
                .collect(),
            columns: ck.columns.clone(),
            selection: ck.selection.as_ref().map(|s| ModelSelectionV2 {
                bic_by_k: s.bic_by_k.iter().map(|&(k, b)| (k as u64, b)).collect(),
                chosen_by: s.chosen_by.clone(),
            }),
        }
    }

    /// The in-memory checkpoint, after checking the whole: options, every
    /// shape across options, statistics, mixture, engine and buffers
    /// ([`StepwiseEm::from_state`]), finite positive definite mixture
    /// parameters ([`GaussianMixture::new`]), timestamps, column names
    /// against the dimension.
    ///
    /// # Errors
    ///
    /// A message naming the first failed check.
    pub(super) fn into_checkpoint(self) -> Result<Checkpoint, String> {
        self.into_checkpoint_with(None, None, None)
    }

    /// [`CheckpointV2::into_checkpoint`] with what formats 3 to 5 add, or
    /// their defaults (`None`: a file of an older format). A model learned
    /// before resolutions were kept goes on with every dimension
    /// continuous, exactly as it was learned; a warm-up buffer is
    /// detected afresh.
    fn into_checkpoint_with(
        self,
        k: Option<ChooseKV3>,
        resolution: Option<ResolutionV4>,
        init_tol: Option<f64>,
    ) -> Result<Checkpoint, String> {
        /// Largest dimension accepted for a warm-up learner that holds no
        /// point yet (a run never saves one; the bound only caps what a
        /// damaged file can make the loader allocate).
        const MAX_DIM_WITHOUT_DATA: usize = 1 << 16;
        let mut params = self.params.to_params()?;
        if let Some(k) = &k {
            if k.auto {
                params.components = ComponentCount::Auto;
            }
            params.max_components = to_usize(k.max_components, "max_components")?;
            params.adapt_components = k.adapt_components;
        }
        if let Some(r) = &resolution {
            params.resolution = ResolutionSpec(r.spec.clone());
        }
        if let Some(tol) = init_tol {
            params.init_tol = tol;
        }
        let params = params
            .check()
            .map_err(|e| format!("the stored options are out of range: {e}"))?;
        let dim = to_usize(self.dim, "dimension")?;
        let (recent, adapter, component_changes) = match k {
            None => (RecentPoints::new(dim, recent_capacity(&params)), None, 0),
            Some(k) => (
                RecentPoints::from_parts(
                    dim,
                    to_usize(k.recent.capacity, "the reservoir's capacity")?,
                    k.recent.data,
                    to_usize(k.recent.next, "the reservoir's next row")?,
                )?,
                k.adapter.map(|a| AdapterState {
                    last_check: a.last_check,
                    last_full_check: a.last_full_check,
                    last_change: a.last_change,
                    changes: a.changes,
                    baseline: a.baseline,
                }),
                k.component_changes,
            ),
        };
        let phase = match self.phase {
            PhaseV2::WarmUp { buffer } => Phase::WarmUp { buffer },
            PhaseV2::Fitted(f) => {
                let FittedV2 {
                    engine,
                    stats,
                    mixture,
                    pending,
                    worst,
                } = *f;
                let mixture = GaussianMixture::new(MixtureParams {
                    covariance: mixture.covariance,
                    dim: to_usize(mixture.dim, "the mixture's dimension")?,
                    weights: mixture.weights,
                    means: mixture.means,
                    covariances: mixture.covariances,
                })
                .map_err(|e| format!("the mixture is invalid: {e}"))?;
                Phase::Fitted(Box::new(Fitted {
                    engine: EngineState {
                        scale: engine.scale,
                        reg: engine.reg,
                        repairs: engine.repairs,
                        reseeds: engine.reseeds,
                    },
                    stats: MixtureStats {
                        covariance: stats.covariance,
                        dim: to_usize(stats.dim, "the statistics' dimension")?,
                        s0: stats.s0,
                        mean: stats.mean,
                        cov: stats.cov,
                        points: stats.points,
                    },
                    mixture,
                    pending,
                    worst,
                }))
            }
        };
        // The learner allocates by its dimension before the shapes are
        // compared: a dimension must be backed by stored numbers (a fitted
        // model's means, its per-dimension `worst`, its pending points; a
        // warm-up buffer's points), so a
        // damaged or hostile file cannot ask for petabytes.
        let backed = match &phase {
            Phase::WarmUp { buffer } if buffer.is_empty() => MAX_DIM_WITHOUT_DATA,
            Phase::WarmUp { buffer } => buffer.len(),
            Phase::Fitted(f) => f.stats.mean.len() + f.worst.len() + f.pending.len(),
        };
        if dim > backed {
            return Err(format!(
                "dimension {dim} is larger than the {backed} numbers stored for it"
            ));
        }
        let resolution = match resolution {
            Some(r) => Resolution::from_parts(
                r.given,
                r.origin,
                r.seen
                    .into_iter()
                    .map(|s| match s {
                        SeenV4::Unseen => DimResolution::Unseen,
                        SeenV4::Step(q) => DimResolution::Step(q),
                        SeenV4::Continuous => DimResolution::Continuous,
                    })
                    .collect(),
            )?,
            None => match &phase {
                Phase::WarmUp { buffer } if dim > 0 && buffer.len() % dim == 0 => {
                    let mut r = Resolution::new(dim, &[])?;
                    r.observe(buffer).map_err(|e| e.to_string())?;
                    r
                }
                _ => Resolution::continuous(dim),
            },
        };
        let c = self.counters;
        let learner = StepwiseEm::from_state(LearnerState {
            params,
            dim,
            rng: self.rng,
            step: self.step,
            counters: Counters {
                points_seen: c.points_seen,
                updates: c.updates,
                reseeds: c.reseeds,
                repairs: c.repairs,
                refused_batches: c.refused_batches,
                refused_points: c.refused_points,
                outliers: c.outliers,
                log_lik_sum: c.log_lik_sum,
                log_lik_points: c.log_lik_points,
                component_changes,
            },
            phase,
            recent,
            adapter,
            selection: None,
            resolution,
        })
        .map_err(|e| e.to_string())?;
        if self.updated_unix_ms < self.created_unix_ms {
            return Err(format!(
                "written at {} ms, before the run was created at {} ms",
                self.updated_unix_ms, self.created_unix_ms
            ));
        }
        if let Some(cols) = &self.columns {
            if cols.len() != dim {
                return Err(format!(
                    "{} column names for points of dimension {dim}",
                    cols.len()
                ));
            }
        }
        let selection = match self.selection {
            None => None,
            Some(s) => Some(ModelSelection {
                bic_by_k: s
                    .bic_by_k
                    .into_iter()
                    .map(|(k, b)| Ok((to_usize(k, "a K of the model selection")?, b)))
                    .collect::<Result<_, String>>()?,
                chosen_by: s.chosen_by,
            }),
        };
        let mut learner = learner;
        learner.set_selection(selection.clone());
        Ok(Checkpoint {
            learner,
            rejected: self.rejected,
            anomalies: self.anomalies,
            created_unix_ms: self.created_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
            sources: self
                .sources
                .into_iter()
                .map(|s| SourcePosition {
                    source: s.source,
                    position: s.position,
                })
                .collect(),
            columns: self.columns,
            selection,
        })
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
