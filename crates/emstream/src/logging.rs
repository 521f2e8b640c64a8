//! Logs on stderr through `tracing`: the subscriber the binary installs
//! (`--log-format text|json`, `--log-level` or `RUST_LOG`), and the
//! periodic stats line (`--stats-interval`). Data (score lines) stays on
//! stdout.
//!
//! Text lines look like
//! `2026-11-30T01:02:03.456789Z  INFO emstream: listening on 127.0.0.1:7878`:
//! a UTC timestamp, the level, the target (`emstream`) and the message, then
//! any structured fields (`connection=3 peer=127.0.0.1:5000 points=...`).
//! JSON lines are one object each, with `timestamp`, `level`, `target` and
//! `fields` (the message is `fields.message`).

use std::sync::Arc;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::{DaemonConfig, LogFormat};
use crate::pipeline::RunState;

/// The log filter: `--log-level` when given, else `RUST_LOG`, else `info`.
fn filter(level: Option<&str>) -> EnvFilter {
    match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// Installs the process-wide subscriber writing to stderr. Calling it again
/// does nothing (the first subscriber stays).
pub fn init(config: &DaemonConfig) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter(config.log_level.as_deref()))
        .with_target(true)
        .with_ansi(false)
        // A closed stderr must not stop the run: a failed log write is
        // dropped (the default reports it with eprintln!, which panics
        // when stderr is closed).
        .log_internal_errors(false);
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The stats line: points, rate, rejects, anomalies, connections,
/// checkpoints.
pub fn stats_line(state: &RunState) -> String {
    let c = state.counts();
    let l = &c.learner;
    let secs = c.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        l.points as f64 / secs
    } else {
        0.0
    };
    format!(
        "stats: {} points ({:.0}/s average), {} rejected, {} anomalies, {} connections open ({} accepted), {} checkpoints written, {} failed",
        l.points,
        rate,
        l.rejected.total(),
        l.anomalies,
        c.connections_open,
        c.connections_total,
        c.checkpoints_written,
        c.checkpoints_failed,
    )
}

/// Logs [`stats_line`] every `every` until the run has finished.
pub fn spawn_stats(state: Arc<RunState>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let finished = state.finished_token();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                () = finished.cancelled() => break,
                _ = tick.tick() => {
                    let c = state.counts();
                    tracing::info!(
                        target: "emstream",
                        points = c.learner.points,
                        rejected = c.learner.rejected.total(),
                        connections_open = c.connections_open,
                        checkpoints_written = c.checkpoints_written,
                        checkpoints_failed = c.checkpoints_failed,
                        "{}",
                        stats_line(&state)
                    );
                }
            }
        }
    })
}
