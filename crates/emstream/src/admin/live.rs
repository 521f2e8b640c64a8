//! The live page (`GET /`) and the two endpoints it polls besides
//! `/model`: `/recent` (recent points scored under the live model) and
//! `/history` (the run's state now, and one sample a second for the last
//! hour).
//!
//! The page is one self-contained HTML file ([`PAGE`], compiled into the
//! binary): no scripts or styles from elsewhere, nothing to build. It
//! carries no data of the run, so it is served without the bearer token,
//! like the probes; every request it makes for data sends the token
//! (asked for once, kept for the browser tab).
//!
//! The history is sampled by [`sample_history`], a task of the admin
//! server that reads the run state and the live snapshot once a second
//! (never the learner), into a ring of [`HISTORY_SECONDS`] samples: a
//! page opened late still shows the last hour.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::input::RejectReason;
use crate::model::GaussianMixture;
use crate::pipeline::{Phase, RunState, SnapshotReceiver};
use crate::score::AlertRule;

/// The live page.
pub const PAGE: &str = include_str!("page.html");

/// Samples the daemon keeps: one an hour at one a second.
pub const HISTORY_SECONDS: usize = 3600;

/// One second of the run, as the page's time series show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken (Unix seconds).
    pub t: f64,
    /// Points learned per second since the previous sample.
    pub points_per_s: f64,
    /// Records rejected per second since the previous sample.
    pub rejects_per_s: f64,
    /// Average test-then-train log-likelihood of the points scored since
    /// the previous sample (none scored: `null`).
    pub log_lik: Option<f64>,
    /// Share of the points since the previous sample flagged as anomalies
    /// (no points, or no alert rule: `null`).
    pub anomaly_rate: Option<f64>,
    /// Components of the live model (`null` before the first model).
    pub k: Option<usize>,
    /// Seconds since the last checkpoint was written (`null` before one).
    pub checkpoint_age_s: Option<f64>,
    /// The replayable source's lag in messages (`null` for a source that
    /// cannot replay).
    pub source_lag: Option<u64>,
}

/// The counters a sample is the difference of.
#[derive(Clone, Copy, Debug)]
struct Totals {
    at: Instant,
    points: u64,
    rejected: u64,
    anomalies: u64,
    log_lik_sum: f64,
    log_lik_points: u64,
}

/// The last hour of samples; see the module docs.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<HistoryInner>,
}

#[derive(Debug, Default)]
struct HistoryInner {
    samples: VecDeque<Sample>,
    last: Option<Totals>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, HistoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one sample of the run now (the first call only sets the
    /// counters the next sample is the difference of).
    pub fn sample(&self, state: &RunState, snapshots: &SnapshotReceiver) {
        let c = state.counts();
        let l = &c.learner;
        let now = Totals {
            at: Instant::now(),
            points: l.points,
            rejected: l.rejected.total(),
            anomalies: l.anomalies,
            log_lik_sum: l.log_lik_sum,
            log_lik_points: l.log_lik_points,
        };
        let k = snapshots
            .borrow()
            .as_ref()
            .and_then(|s| s.checkpoint.learner.n_components());
        let alert = !matches!(state.recent().alert(), AlertRule::None);
        let mut inner = self.lock();
        let Some(before) = inner.last.replace(now) else {
            return;
        };
        let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let points = now.points.saturating_sub(before.points);
        let scored = now.log_lik_points.saturating_sub(before.log_lik_points);
        let sample = Sample {
            t: crate::pipeline::unix_ms() as f64 / 1000.0,
            points_per_s: points as f64 / secs,
            rejects_per_s: now.rejected.saturating_sub(before.rejected) as f64 / secs,
            log_lik: (scored > 0)
                .then(|| (now.log_lik_sum - before.log_lik_sum) / scored as f64)
                .filter(|v| v.is_finite()),
            anomaly_rate: (alert && points > 0)
                .then(|| now.anomalies.saturating_sub(before.anomalies) as f64 / points as f64),
            k,
            checkpoint_age_s: checkpoint_age(state),
            source_lag: source_lag(state),
        };
        if inner.samples.len() == HISTORY_SECONDS {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
    }

    /// The samples taken after `since` (Unix seconds), oldest first.
    pub fn since(&self, since: f64) -> Vec<Sample> {
        self.lock()
            .samples
            .iter()
            .filter(|s| s.t > since)
            .cloned()
            .collect()
    }
}

/// Seconds since the last checkpoint was written.
fn checkpoint_age(state: &RunState) -> Option<f64> {
    let last = state.checkpoint_stats().last_ok_unix_ms?;
    Some(crate::pipeline::unix_ms().saturating_sub(last) as f64 / 1000.0)
}

/// The largest lag of the run's replayable streams.
fn source_lag(state: &RunState) -> Option<u64> {
    state.replay().streams().iter().map(|s| s.lag()).max()
}

/// Samples the run into `history` once a second until `finished` fires.
pub async fn sample_history(
    history: Arc<History>,
    state: Arc<RunState>,
    snapshots: SnapshotReceiver,
    finished: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = finished.cancelled() => return,
            _ = tick.tick() => history.sample(&state, &snapshots),
        }
    }
}

/// The state of the run now, in the words of the page: phase (with the
/// warm-up told apart from learning), counters of this run, rejects by
/// reason, checkpoints, sources, the alert rule.
pub fn now(state: &RunState, snapshots: &SnapshotReceiver) -> Value {
    let c = state.counts();
    let l = &c.learner;
    let (_, status, _, error) = super::health(state);
    let snap = snapshots.borrow().clone();
    let learner = snap.as_ref().map(|s| &s.checkpoint.learner);
    let model = learner.and_then(|l| l.mixture().or(l.provisional()));
    let phase = match state.phase() {
        Phase::Starting => "starting",
        Phase::Running if learner.is_none_or(|l| l.mixture().is_none()) => "warm-up",
        Phase::Running => "running",
        Phase::Draining => "draining",
        Phase::Finished => "finished",
    };
    let by_reason: serde_json::Map<String, Value> = RejectReason::ALL
        .iter()
        .filter_map(|r| {
            let n = l.rejected.by_reason.get(r).copied().unwrap_or(0);
            (n > 0).then(|| (r.label().to_owned(), json!(n)))
        })
        .collect();
    let ck = state.checkpoint_stats();
    let alert = match state.recent().alert() {
        AlertRule::None => Value::Null,
        AlertRule::Below(t) => json!({ "rule": "below", "value": t }),
        AlertRule::Quantile(q) => json!({ "rule": "quantile", "value": q }),
    };
    let lags: serde_json::Map<String, Value> = state
        .replay()
        .streams()
        .iter()
        .map(|s| (s.key.clone(), json!(s.lag())))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": crate::pipeline::unix_ms() as f64 / 1000.0,
        "uptime_s": c.elapsed.as_secs_f64(),
        "phase": phase,
        "status": status,
        "warmup": learner.map(|l| json!({
            "pending": l.pending_points().min(l.params().warmup),
            "of": l.params().warmup,
        })),
        "k": model.map(GaussianMixture::n_components),
        "points": l.points,
        "points_seen": learner.map(|l| l.points_held()),
        "records_rejected": l.rejected.total(),
        "rejected_by_reason": by_reason,
        "anomalies": l.anomalies,
        "alert": alert,
        "log_lik": l.avg_log_lik,
        "first_log_lik": l.first_log_lik,
        "checkpoint": {
            "last_unix_ms": ck.last_ok_unix_ms,
            "age_s": checkpoint_age(state),
            "written": c.checkpoints_written,
            "failed": c.checkpoints_failed,
            "error": error,
        },
        "sources": state.source_names(),
        "connections_open": c.connections_open,
        "source_lag": lags,
    })
}

/// The recent points (see [`crate::pipeline::recent`]) scored under
/// `model` (none yet: scores `null`): each point's log-likelihood, its
/// most responsible component, and with an alert rule whether it is an
/// anomaly: below `live_threshold`, the learner's threshold now
/// (`emstream_alert_threshold`); before the learner has one, below the
/// rule's own (`--alert-below LL`, or for `--alert-quantile Q` the
/// Q-quantile of these points' log-likelihoods).
pub fn recent(
    dim: usize,
    values: &[f64],
    model: Option<&GaussianMixture>,
    alert: &AlertRule,
    live_threshold: Option<f64>,
) -> Value {
    let rows: Vec<&[f64]> = if dim == 0 {
        Vec::new()
    } else {
        values.chunks_exact(dim).collect()
    };
    let Some(m) = model.filter(|m| m.dim() == dim) else {
        return json!({
            "dim": dim,
            "points": rows,
            "log_lik": Value::Null,
            "label": Value::Null,
            "anomaly": Value::Null,
            "threshold": Value::Null,
        });
    };
    let mut lp = vec![0.0; m.n_components()];
    let mut lls = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    for x in &rows {
        m.weighted_log_probs(x, &mut lp);
        let best = lp
            .iter()
            .enumerate()
            .fold(0, |b, (c, &v)| if v > lp[b] { c } else { b });
        labels.push(best);
        lls.push(crate::model::mixture::log_sum_exp(&lp));
    }
    let threshold = match *alert {
        AlertRule::None => None,
        AlertRule::Below(t) => live_threshold.or(Some(t)),
        AlertRule::Quantile(q) => live_threshold.or_else(|| quantile(&lls, q)),
    };
    let anomaly = threshold.map(|t| {
        lls.iter()
            .map(|&ll| ll < t || ll.is_nan())
            .collect::<Vec<_>>()
    });
    json!({
        "dim": dim,
        "points": rows,
        "log_lik": lls,
        "label": labels,
        "anomaly": anomaly,
        "threshold": threshold,
    })
}

/// The `q`-quantile of the finite values of `v` (lower of the two
/// neighbours), `None` when there are none.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let at = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).floor() as usize;
    Some(sorted[at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::LearnerCounts;

    #[test]
    fn a_sample_is_the_difference_of_two_readings() {
        let state = Arc::new(RunState::new("listener"));
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let history = History::default();
        history.sample(&state, &rx);
        assert!(history.since(0.0).is_empty());
        state.set_learner_counts(&LearnerCounts {
            points: 100,
            log_lik_sum: -250.0,
            log_lik_points: 100,
            ..LearnerCounts::default()
        });
        history.sample(&state, &rx);
        let s = history.since(0.0);
        assert_eq!(s.len(), 1);
        assert!(s[0].points_per_s > 0.0);
        assert_eq!(s[0].log_lik, Some(-2.5));
        // No alert rule: no anomaly rate.
        assert_eq!(s[0].anomaly_rate, None);
        assert_eq!(s[0].k, None);
        assert!(history.since(s[0].t).is_empty());
    }

    #[test]
    fn the_history_holds_the_last_hour() {
        let state = RunState::new("listener");
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let history = History::default();
        for _ in 0..HISTORY_SECONDS + 10 {
            history.sample(&state, &rx);
        }
        assert_eq!(history.since(0.0).len(), HISTORY_SECONDS);
    }

    #[test]
    fn the_quantile_rule_flags_the_lowest_share_of_the_points_shown() {
        let lls: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(quantile(&lls, 0.1), Some(9.0));
        assert_eq!(quantile(&[], 0.1), None);
    }

    #[test]
    fn recent_points_without_a_model_have_no_scores() {
        let v = recent(
            2,
            &[1.0, 2.0, 3.0, 4.0],
            None,
            &AlertRule::Quantile(0.1),
            None,
        );
        assert_eq!(v["points"], json!([[1.0, 2.0], [3.0, 4.0]]));
        assert_eq!(v["log_lik"], Value::Null);
    }
}
