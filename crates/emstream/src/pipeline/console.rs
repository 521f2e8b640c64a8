//! Messages and the progress line on stderr.
//!
//! Every write ignores errors: a closed stderr (EPIPE) must not stop the
//! learner. On a terminal a progress line is redrawn in place; messages
//! clear it first so the two never interleave.
//!
//! When a `tracing` subscriber is installed (the binary installs one, see
//! `src/logging.rs`), messages are `tracing` events of target `emstream`
//! (so they carry a timestamp and a level and can be JSON); a library user
//! without a subscriber gets the plain `emstream: ` lines.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use crate::input::RejectReason;

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

    /// One message line at info level (plain: prefixed with `emstream: `).
    pub(crate) fn line(&self, msg: &str) {
        self.at(tracing::Level::INFO, msg);
    }

    /// One message line at warning level: something went wrong and the run
    /// goes on (a failed checkpoint write).
    pub(crate) fn warn(&self, msg: &str) {
        self.at(tracing::Level::WARN, msg);
    }

    fn at(&self, level: tracing::Level, msg: &str) {
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if *shown {
            let _ = err.write_all(b"\r\x1b[K");
            *shown = false;
        }
        if tracing::dispatcher::has_been_set() {
            drop(err);
            if level == tracing::Level::WARN {
                tracing::warn!(target: "emstream", "{msg}");
            } else {
                tracing::info!(target: "emstream", "{msg}");
            }
        } else {
            let _ = writeln!(err, "emstream: {msg}");
        }
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
