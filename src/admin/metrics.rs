//! `/metrics`: the run's counters as OpenMetrics text, read from the
//! [`RunState`] and the live snapshot at scrape time (nothing is counted
//! twice, and a scrape never touches the learner).
//!
//! Every metric is one line of [`Metrics::encode`]: a new metric (a source's
//! lag gauge, say) is one more call there, with a name that follows the
//! Prometheus conventions (`emstream_` prefix, `_total` added to counters by
//! the encoder, base units) and label values from fixed lists only.
//!
//! Counters are of this run (they restart at 0 with the process, as
//! Prometheus expects); `emstream_model_points_seen` is the model's total
//! over every run, as in the checkpoint.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::input::RejectReason;
use crate::pipeline::{Phase, RunState, SnapshotReceiver};

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The values of the `phase` label of `emstream_phase`.
const PHASES: [(Phase, &str); 4] = [
    (Phase::Starting, "starting"),
    (Phase::Running, "running"),
    (Phase::Draining, "draining"),
    (Phase::Finished, "finished"),
];

/// The collector behind `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    state: Arc<RunState>,
    snapshots: SnapshotReceiver,
}

impl Metrics {
    /// Metrics of the run with this state and live snapshot.
    pub fn new(state: Arc<RunState>, snapshots: SnapshotReceiver) -> Self {
        Metrics { state, snapshots }
    }
}

/// Writes a counter.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Writes a gauge, with an optional unit (appended to the name).
fn gauge<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: N,
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = self.state.counts();
        let l = &c.learner;
        let e = &mut enc;
        counter(
            e,
            "emstream_points_learned",
            "Points learned from in this run.",
            l.points,
        )?;
        {
            let mut fam = e.encode_descriptor(
                "emstream_records_rejected",
                "Records rejected in this run, by reason.",
                None,
                MetricType::Counter,
            )?;
            for reason in RejectReason::ALL {
                let n = l.rejected.by_reason.get(&reason).copied().unwrap_or(0);
                ConstCounter::new(n).encode(fam.encode_family(&[("reason", reason.label())])?)?;
            }
        }
        counter(
            e,
            "emstream_anomalies",
            "Points flagged as anomalies in this run.",
            l.anomalies,
        )?;
        counter(
            e,
            "emstream_gross_outliers",
            "Points left out of the statistics as gross outliers in this run.",
            l.outliers,
        )?;
        counter(
            e,
            "emstream_reseeds",
            "Components re-seeded in this run.",
            l.reseeds,
        )?;
        counter(
            e,
            "emstream_covariance_repairs",
            "Covariance repairs in this run.",
            l.repairs,
        )?;
        counter(
            e,
            "emstream_batches",
            "Batches handed to the learner in this run.",
            l.batches,
        )?;
        if let Some(ll) = l.avg_log_lik {
            gauge(
                e,
                "emstream_average_log_likelihood",
                "Average test-then-train log-likelihood of this run's points.",
                None,
                ll,
            )?;
        }
        let model_points = self.snapshots.borrow().as_ref().map_or(0, |s| {
            let learner = &s.checkpoint.learner;
            learner.counters().points_seen + learner.pending_points() as u64
        });
        gauge(
            e,
            "emstream_model_points_seen",
            "Points the live model has learned from over all runs (as in the checkpoint).",
            None,
            model_points as i64,
        )?;

        counter(
            e,
            "emstream_checkpoints_written",
            "Checkpoints written in this run (periodic, requested and final).",
            c.checkpoints_written,
        )?;
        counter(
            e,
            "emstream_checkpoint_failures",
            "Checkpoint writes that failed in this run.",
            c.checkpoints_failed,
        )?;
        let ck = self.state.checkpoint_stats();
        e.encode_descriptor(
            "emstream_checkpoint_write_duration",
            "Time to write a checkpoint.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            ck.sum_seconds,
            ck.count,
            &ck.buckets_with_inf(),
            None,
        )?;
        if let Some(ms) = ck.last_ok_unix_ms {
            gauge(
                e,
                "emstream_last_checkpoint_timestamp",
                "When the last checkpoint was written (Unix time).",
                Some(&Unit::Seconds),
                ms as f64 / 1000.0,
            )?;
        }
        gauge(
            e,
            "emstream_checkpoint_failing",
            "1 while the last checkpoint write failed, else 0.",
            None,
            i64::from(ck.last_error.is_some()),
        )?;

        gauge(
            e,
            "emstream_connections_open",
            "TCP connections open now.",
            None,
            c.connections_open as i64,
        )?;
        counter(
            e,
            "emstream_connections_accepted",
            "TCP connections accepted in this run.",
            c.connections_total,
        )?;
        counter(
            e,
            "emstream_connections_refused",
            "TCP connections that could not be accepted in this run.",
            c.connections_refused,
        )?;
        counter(
            e,
            "emstream_connections_idle_closed",
            "TCP connections closed by the idle timeout in this run.",
            c.connections_timed_out,
        )?;

        {
            let phase = self.state.phase();
            let mut fam = e.encode_descriptor(
                "emstream_phase",
                "1 for the phase the run is in (starting, running, draining, finished).",
                None,
                MetricType::Gauge,
            )?;
            for (p, name) in PHASES {
                ConstGauge::new(i64::from(p == phase))
                    .encode(fam.encode_family(&[("phase", name)])?)?;
            }
        }
        gauge(
            e,
            "emstream_uptime",
            "Time since the run started.",
            Some(&Unit::Seconds),
            c.elapsed.as_secs_f64(),
        )?;
        Info::new([("version", env!("CARGO_PKG_VERSION"))]).encode(e.encode_descriptor(
            "emstream_build",
            "Build information.",
            None,
            MetricType::Info,
        )?)
    }
}

/// A registry holding the run's [`Metrics`].
pub fn registry(state: Arc<RunState>, snapshots: SnapshotReceiver) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Metrics::new(state, snapshots)));
    registry
}

/// The OpenMetrics text of `registry` (of type [`CONTENT_TYPE`]).
///
/// # Errors
///
/// A formatting error from the encoder (not expected when writing to a
/// `String`).
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::LearnerCounts;

    #[test]
    fn counters_are_named_by_convention_and_reasons_come_from_the_fixed_list() {
        let state = Arc::new(RunState::new("listener"));
        let mut l = LearnerCounts {
            points: 42,
            ..LearnerCounts::default()
        };
        l.rejected.add_n(RejectReason::NotNumeric, 3);
        state.set_learner_counts(&l);
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let text = render(&registry(state, rx)).unwrap();
        assert!(
            text.contains("\nemstream_points_learned_total 42\n"),
            "{text}"
        );
        assert!(
            text.contains("emstream_records_rejected_total{reason=\"not_numeric\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("emstream_records_rejected_total{reason=\"bad_json\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT emstream_checkpoint_write_duration_seconds seconds"),
            "{text}"
        );
        assert!(
            text.contains("emstream_checkpoint_write_duration_seconds_bucket{le=\"+Inf\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("emstream_phase{phase=\"starting\"} 1"),
            "{text}"
        );
        assert!(text.contains("emstream_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // No average before any point was scored.
        assert!(!text.contains("emstream_average_log_likelihood"), "{text}");
    }
}
