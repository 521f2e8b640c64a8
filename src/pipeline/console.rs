//! Messages and the progress line on stderr.
//!
//! Every write ignores errors: a closed stderr (EPIPE) must not stop the
//! learner. On a terminal a progress line is redrawn in place; messages
//! clear it first so the two never interleave.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::input::{RejectReason, SourceId};

/// Writes messages and the progress line to stderr.
#[derive(Debug)]
pub(crate) struct Console {
    tty: bool,
    /// Held while writing, so a message and the progress line never mix.
    progress_shown: Mutex<bool>,
}

impl Console {
    pub(crate) fn new() -> Self {
        Console {
            tty: std::io::stderr().is_terminal(),
            progress_shown: Mutex::new(false),
        }
    }

    /// Whether stderr is a terminal (and so gets a progress line).
    pub(crate) fn is_tty(&self) -> bool {
        self.tty
    }

    /// One message line, prefixed with `emstream: `.
    pub(crate) fn line(&self, msg: &str) {
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if *shown {
            let _ = err.write_all(b"\r\x1b[K");
            *shown = false;
        }
        let _ = writeln!(err, "emstream: {msg}");
    }

    /// Redraws the progress line (terminals only).
    pub(crate) fn progress(&self, text: &str) {
        if !self.tty {
            return;
        }
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{text}");
        let _ = err.flush();
        *shown = true;
    }

    /// Removes the progress line, if shown.
    pub(crate) fn clear_progress(&self) {
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *shown {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"\r\x1b[K");
            let _ = err.flush();
            *shown = false;
        }
    }
}

/// Counters the learner publishes for the progress line: plain atomics,
/// written once per batch, never per point.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Points learned from in this run.
    pub(crate) points: AtomicU64,
    /// Bits of the average log-likelihood of this run (f64), NaN when none.
    pub(crate) avg_log_lik: AtomicU64,
    /// Records rejected in this run.
    pub(crate) rejected: AtomicU64,
    /// Points flagged as anomalies in this run (written by the score sink).
    pub(crate) anomalies: AtomicU64,
    /// When the run started.
    pub(crate) started: Instant,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            points: AtomicU64::new(0),
            avg_log_lik: AtomicU64::new(f64::NAN.to_bits()),
            rejected: AtomicU64::new(0),
            anomalies: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The progress line text.
    pub(crate) fn progress_text(&self) -> String {
        let points = self.points.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            points as f64 / secs
        } else {
            0.0
        };
        let ll = f64::from_bits(self.avg_log_lik.load(Ordering::Relaxed));
        let rejected = self.rejected.load(Ordering::Relaxed);
        let mut s = format!(
            "emstream: {} points, {}/s, avg log-lik {}",
            points,
            human_rate(rate),
            fmt_ll(ll.is_finite().then_some(ll))
        );
        if rejected > 0 {
            s.push_str(&format!(", {rejected} rejected"));
        }
        s
    }
}

/// `12.3M`, `45.6k`, `789`.
pub(crate) fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.1}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// A log-likelihood for people, or `n/a`.
pub(crate) fn fmt_ll(ll: Option<f64>) -> String {
    match ll {
        // Fixed point where that is readable; a wild outlier can drive the
        // average to 1e196, which would otherwise print 200 digits.
        Some(v) if v == 0.0 || (1e-3..1e9).contains(&v.abs()) => format!("{v:.4}"),
        Some(v) => format!("{v:.4e}"),
        None => "n/a".to_string(),
    }
}

/// A reject reason in words ([`RejectReason::text`]).
pub fn reason_text(reason: RejectReason) -> &'static str {
    reason.text()
}

/// Names of sources for messages: stdin or the input file is source 0, TCP
/// connections are named by peer address while they are open.
#[derive(Debug, Default)]
pub(crate) struct SourceNames {
    first: String,
    conns: Mutex<Names>,
}

/// Open connections, plus the last [`RECENTLY_CLOSED`] closed ones (their
/// last records are reported after they close).
#[derive(Debug, Default)]
struct Names {
    open: HashMap<SourceId, String>,
    closed: std::collections::VecDeque<(SourceId, String)>,
}

/// Closed connections whose names are kept for messages.
const RECENTLY_CLOSED: usize = 64;

impl SourceNames {
    pub(crate) fn new(first: String) -> Self {
        SourceNames {
            first,
            conns: Mutex::new(Names::default()),
        }
    }

    pub(crate) fn insert(&self, id: SourceId, name: String) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .insert(id, name);
    }

    pub(crate) fn remove(&self, id: SourceId) {
        let mut names = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.open.remove(&id) {
            if names.closed.len() == RECENTLY_CLOSED {
                names.closed.pop_front();
            }
            names.closed.push_back((id, name));
        }
    }

    pub(crate) fn name(&self, id: SourceId) -> String {
        if id == 0 {
            return self.first.clone();
        }
        let names = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let found = names
            .open
            .get(&id)
            .or_else(|| names.closed.iter().find(|(i, _)| *i == id).map(|(_, n)| n));
        match found {
            Some(n) => format!("connection #{id} ({n})"),
            None => format!("connection #{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_likelihood_is_short_at_any_magnitude() {
        assert_eq!(fmt_ll(None), "n/a");
        assert_eq!(fmt_ll(Some(-3.52881)), "-3.5288");
        assert_eq!(fmt_ll(Some(-123456.0)), "-123456.0000");
        // A wild outlier must not print a 200-digit summary line.
        let huge = fmt_ll(Some(-1.922876e196));
        assert!(huge.len() < 20, "{huge}");
        assert!(huge.parse::<f64>().unwrap() < -1.9e196, "{huge}");
        let tiny = fmt_ll(Some(2.5e-9));
        assert!(tiny.parse::<f64>().unwrap() > 0.0, "{tiny}");
    }
}
