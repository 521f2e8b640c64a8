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
//!
//! The replayable source's lag, `emstream_source_lag_messages{source}`, is
//! labelled by the *kind* of source only (`jetstream`, from
//! [`REPLAYABLE`]), never by the stream or subject name: a process reads
//! one source, so the kind names its one series, and the stream is
//! configuration already in the log and the checkpoint (a stream renamed
//! between runs would otherwise start a new series). Sources that cannot
//! replay (stdin, files, TCP, MQTT) have no lag and no sample.

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

/// The kinds of replayable source, the values of the `source` label of
/// `emstream_source_lag_messages`: the prefix of a stream's checkpoint key
/// (`jetstream:STREAM`).
pub const REPLAYABLE: [&str; 1] = ["jetstream"];

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
            "Points learned in this run and points of this run waiting in the partial mini-batch or warm-up buffer: the growth of emstream_model_points_seen (points a resumed checkpoint held waiting count once learned).",
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
        let (model_points, components) = self.snapshots.borrow().as_ref().map_or((0, 0), |s| {
            let l = &s.checkpoint.learner;
            (l.points_held(), l.n_components().unwrap_or(0))
        });
        gauge(
            e,
            "emstream_model_points_seen",
            "Points the live model has learned from over all runs (as in the checkpoint).",
            None,
            model_points as i64,
        )?;

        gauge(
            e,
            "emstream_components",
            "Components (K) of the live model; 0 before the first model is fitted.",
            None,
            components as i64,
        )?;

        if let crate::score::AlertRule::Quantile(q) = self.state.recent().alert() {
            gauge(
                e,
                "emstream_alert_quantile",
                "The alert quantile Q of --alert-quantile: on a steady stream the anomaly rate stays near it.",
                None,
                q,
            )?;
        }
        if let Some(t) = l.alert_threshold {
            gauge(
                e,
                "emstream_alert_threshold",
                "The log-likelihood below which a point is flagged now: the running threshold of --alert-quantile (placed by the points the model explains), or --alert-below.",
                None,
                t,
            )?;
        }

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
            "TCP connections that could not be accepted in this run (an accept error, or every admission slot taken).",
            c.connections_refused,
        )?;
        counter(
            e,
            "emstream_connections_denied",
            "TCP connections refused by access control in this run (a failed TLS handshake, a wrong or missing token, either too slow).",
            c.connections_denied,
        )?;
        counter(
            e,
            "emstream_connections_idle_closed",
            "TCP connections closed by the idle timeout in this run.",
            c.connections_timed_out,
        )?;

        self.encode_replay(e)?;

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
        if let Some(bytes) = resident_memory_bytes() {
            gauge(
                e,
                "process_resident_memory",
                "Resident memory of the process (Linux: VmRSS of /proc/self/status).",
                Some(&Unit::Bytes),
                bytes as i64,
            )?;
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

impl Metrics {
    /// The replayable source's lag, its reconnections and the messages
    /// lost to a retention gap (see the module docs for the label).
    fn encode_replay(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let replay = self.state.replay();
        let streams = replay.streams();
        let lags: Vec<(&str, u64)> = REPLAYABLE
            .iter()
            .filter_map(|kind| {
                let lag = streams
                    .iter()
                    .filter(|s| s.key.split(':').next() == Some(kind))
                    .map(|s| s.lag())
                    .max()?;
                Some((*kind, lag))
            })
            .collect();
        if !lags.is_empty() {
            let mut fam = e.encode_descriptor(
                "emstream_source_lag_messages",
                "Messages the replayable source's log holds beyond the live model's position (stream sequences: with a subject filter, at most that many of its messages).",
                None,
                MetricType::Gauge,
            )?;
            for (kind, lag) in lags {
                ConstGauge::new(lag as i64).encode(fam.encode_family(&[("source", kind)])?)?;
            }
        }
        counter(
            e,
            "emstream_broker_reconnects",
            "Reconnections to an MQTT or NATS broker in this run.",
            replay.reconnects(),
        )?;
        counter(
            e,
            "emstream_source_gap_messages",
            "Messages skipped in this run because the stream no longer held them (--allow-gap).",
            replay.gap_messages(),
        )?;
        counter(
            e,
            "emstream_source_retained_skipped_messages",
            "MQTT retained messages not learned in this run (the broker resends them on every subscription; --mqtt-retained learns them).",
            replay.retained_skipped_messages(),
        )
    }
}

/// The process's resident memory, from `/proc/self/status` (the name the
/// Prometheus client libraries give it, so dashboards find it); `None`
/// where there is no such file.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
        state.connection_denied();
        state.connection_denied();
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
        // No replayable source, no lag; no model, K = 0; no alert rule,
        // no quantile.
        assert!(!text.contains("emstream_source_lag"), "{text}");
        assert!(text.contains("\nemstream_components 0\n"), "{text}");
        assert!(!text.contains("emstream_alert_quantile"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        }
        assert!(
            text.contains("\nemstream_broker_reconnects_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\nemstream_connections_denied_total 2\n")
                && text.contains("\nemstream_connections_refused_total 0\n"),
            "{text}"
        );
    }

    #[test]
    fn the_lag_is_labelled_by_the_kind_of_source_never_by_the_stream() {
        let state = Arc::new(RunState::new("jetstream:SENSORS:site.>"));
        let replay = state.replay();
        replay.register(0, "jetstream:SENSORS:site.>".into(), 25);
        replay.set_head(0, 40);
        replay.reconnected();
        replay.gap(3);
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let text = render(&registry(state, rx)).unwrap();
        assert!(
            text.contains("\nemstream_source_lag_messages{source=\"jetstream\"} 15\n"),
            "{text}"
        );
        assert!(!text.contains("SENSORS"), "{text}");
        assert!(
            text.contains("\nemstream_broker_reconnects_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nemstream_source_gap_messages_total 3\n"),
            "{text}"
        );
    }
}
