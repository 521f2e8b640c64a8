//! The score sink: a thread that writes the learner's filled score buffers
//! to stdout through [`Scorer::write_block`] and counts anomalies.
//!
//! A closed stdout (`| head`) is not an error: the sink stops writing, asks
//! the run to stop like a signal would, and keeps taking buffers so the
//! learner never blocks on it.

use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use super::console::Metrics;
use super::{Stop, StopReason, SCORE_OUT_BYTES};
use crate::model::ScoreBuffer;
use crate::score::{ScoreOptions, Scorer};

/// Writes score buffers to `out` until the learner drops its sender.
///
/// # Errors
///
/// A write error other than a closed pipe; the run is asked to stop at the
/// first one.
pub(crate) fn sink_loop<W: Write>(
    out: W,
    options: ScoreOptions,
    k: usize,
    filled: Receiver<ScoreBuffer>,
    empty: SyncSender<ScoreBuffer>,
    metrics: Arc<Metrics>,
    stop: Arc<Stop>,
) -> std::io::Result<()> {
    let mut scorer = Scorer::new(options, k);
    let mut out = BufWriter::with_capacity(SCORE_OUT_BYTES, out);
    let mut failed: Option<std::io::Error> = None;
    let mut closed = false;
    for buf in filled {
        if !closed && failed.is_none() {
            match scorer.write_block(&buf, &mut out) {
                Ok(n) => {
                    metrics.anomalies.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    closed = true;
                    stop.stop(StopReason::OutputClosed);
                }
                Err(e) => {
                    stop.stop(StopReason::Failed);
                    failed = Some(e);
                }
            }
        }
        let _ = empty.try_send(buf);
    }
    if !closed && failed.is_none() {
        match out.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => failed = Some(e),
        }
    }
    if closed {
        // Do not let the BufWriter try to flush into the closed pipe again.
        let (_, _) = out.into_parts();
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
