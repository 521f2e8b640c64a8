//! `--stop-when-idle SECS`: ends the run as at the end of its input (the
//! sources stop, the stages drain, the final checkpoint is written, exit
//! status 0) once no record has arrived for SECS seconds, whatever the
//! source. A batch job replaying a log into a model, and tests, end this
//! way. The quiet is counted from the first record or the first
//! successful connection (to the MQTT or NATS broker, or of a client to
//! the TCP listener), not from the start of the process: a run still
//! connecting to a broker that is slow to come up is not idle. A fit is not quiet: while the learner fits a model on its warm-up
//! buffer (the first, or a regime change's re-fit), taking no batches so
//! that input backs up and stops arriving, the run is busy, and the quiet
//! is counted from the fit's end ([`RunState::fitting`]).

use std::sync::Arc;
use std::time::Duration;

use super::state::{RunState, StopReason};

/// Waits until the run has been idle for `idle` (no chunk reached the
/// parser, no source connected; the first record or connection starts the
/// count), then stops the sources. Ends early when the sources stop for
/// another reason.
pub(crate) async fn stop_when_idle(state: Arc<RunState>, idle: Duration) {
    let stop = state.sources_token();
    loop {
        let quiet = if state.fitting() {
            Duration::ZERO
        } else {
            // Before the first record or connection: not counting yet
            // (checked again `idle` later).
            state.replay().idle_for().unwrap_or_default()
        };
        if quiet >= idle {
            state.stop(StopReason::EndOfInput);
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(idle - quiet) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = false)]
    async fn an_idle_run_is_stopped_as_at_end_of_input() {
        let state = Arc::new(RunState::new("stdin"));
        state.replay().touch();
        let t = std::time::Instant::now();
        stop_when_idle(state.clone(), Duration::from_millis(60)).await;
        assert!(t.elapsed() >= Duration::from_millis(60));
        assert!(state.sources_token().is_cancelled());
        assert_eq!(state.stop_reason(), StopReason::EndOfInput);
    }

    #[tokio::test]
    async fn the_quiet_counts_from_the_first_record_or_connection() {
        // Nothing arrives and nothing connects for 200 ms (a broker slow to
        // come up): not idle; the quiet counts from the connection.
        let state = Arc::new(RunState::new("mqtt"));
        let s = state.clone();
        let source = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.replay().touch();
        });
        let t = std::time::Instant::now();
        stop_when_idle(state.clone(), Duration::from_millis(60)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(200 + 60),
            "stopped after {:?}, before the connection's quiet",
            t.elapsed()
        );
        source.await.unwrap();
    }

    #[tokio::test]
    async fn records_keep_the_run_going() {
        // Six records 20 ms apart, far closer than the idle time: the run
        // is not stopped before the last one.
        let state = Arc::new(RunState::new("stdin"));
        state.replay().touch();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, n) = (state.clone(), sent.clone());
        let feeder = tokio::spawn(async move {
            for _ in 0..6 {
                s.replay().touch();
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        stop_when_idle(state.clone(), Duration::from_millis(500)).await;
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 6);
        feeder.await.unwrap();
    }

    #[tokio::test]
    async fn a_long_first_fit_is_not_quiet() {
        // A fit of 150 ms from the start (no record arrives): the run is
        // not stopped during it, and the quiet counts from its end.
        let state = Arc::new(RunState::new("stdin"));
        state.replay().touch();
        let t = std::time::Instant::now();
        state.set_fitting(true);
        let s = state.clone();
        let learner = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            s.set_fitting(false);
        });
        stop_when_idle(state.clone(), Duration::from_millis(60)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(150 + 60),
            "stopped after {:?}, during the fit or too soon after it",
            t.elapsed()
        );
        learner.await.unwrap();
    }
}
