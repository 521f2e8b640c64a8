//! The recent points the admin server's live page draws (`/recent`): a
//! fixed ring of at most [`RECENT_POINTS`] points sampled from the
//! learner's batches, and the alert rule the page judges them by.
//!
//! Cheap on the hot path: nothing is kept until an admin server asks for
//! it ([`Recent::watch`]); then the learner copies at most
//! [`PER_BATCH`] rows of each batch, evenly spaced, under one short lock
//! per batch (never per point, never an allocation once the ring is full).
//! A slow feed (a few points per batch) is kept whole; a fast one is
//! thinned to the last few batches, which is what "recent" means on a
//! page refreshed once a second.
//!
//! The points are kept without scores: whoever reads them scores them
//! under the live model at that moment (the learner's own scores exist
//! only with `--score`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::score::AlertRule;

/// Points the ring holds at most: enough to show every component's shape,
/// few enough for a page to draw in a frame and fetch once a second.
pub const RECENT_POINTS: usize = 2048;

/// Rows taken from one batch at most, so a fast feed's ring spans several
/// batches rather than the last one.
pub const PER_BATCH: usize = RECENT_POINTS / 4;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Recent {
    watched: AtomicBool,
    ring: Mutex<Ring>,
    alert: OnceLock<AlertRule>,
}

#[derive(Debug, Default)]
struct Ring {
    dim: usize,
    /// `RECENT_POINTS * dim` values once full, row after row.
    values: Vec<f64>,
    /// The row the next point goes to once the ring is full.
    next: usize,
}

impl Recent {
    /// Starts keeping points (an admin server is there to show them).
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }

    /// Records the run's alert rule (`--alert-below`, `--alert-quantile`).
    pub(crate) fn set_alert(&self, rule: AlertRule) {
        let _ = self.alert.set(rule);
    }

    /// The run's alert rule; [`AlertRule::None`] without one.
    pub fn alert(&self) -> AlertRule {
        self.alert.get().cloned().unwrap_or(AlertRule::None)
    }

    /// Samples a batch of `dim`-dimensional points (row-major): at most
    /// [`PER_BATCH`] rows, evenly spaced. A new dimension empties the
    /// ring.
    pub(crate) fn sample(&self, values: &[f64], dim: usize) {
        if !self.watched.load(Ordering::Relaxed) || dim == 0 {
            return;
        }
        let rows = values.len() / dim;
        if rows == 0 {
            return;
        }
        let take = rows.min(PER_BATCH);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.dim != dim {
            *ring = Ring {
                dim,
                values: Vec::with_capacity(RECENT_POINTS * dim),
                next: 0,
            };
        }
        for t in 0..take {
            let row = t * rows / take;
            let point = &values[row * dim..(row + 1) * dim];
            if ring.values.len() < RECENT_POINTS * dim {
                ring.values.extend_from_slice(point);
            } else {
                let at = ring.next * dim;
                ring.values[at..at + dim].copy_from_slice(point);
                ring.next = (ring.next + 1) % RECENT_POINTS;
            }
        }
    }

    /// The points held, oldest first, and their dimension.
    pub fn points(&self) -> (usize, Vec<f64>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let at = ring.next * ring.dim;
        let mut out = Vec::with_capacity(ring.values.len());
        out.extend_from_slice(&ring.values[at..]);
        out.extend_from_slice(&ring.values[..at]);
        (ring.dim, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_kept_until_watched() {
        let r = Recent::default();
        r.sample(&[1.0, 2.0], 2);
        assert_eq!(r.points().1.len(), 0);
        r.watch();
        r.sample(&[1.0, 2.0], 2);
        assert_eq!(r.points(), (2, vec![1.0, 2.0]));
    }

    #[test]
    fn a_big_batch_is_thinned_evenly_and_the_ring_keeps_the_newest_in_order() {
        let r = Recent::default();
        r.watch();
        // Ten times as many one-dimensional rows as a batch gives: every
        // tenth is kept.
        let batch: Vec<f64> = (0..PER_BATCH * 10).map(|i| i as f64).collect();
        r.sample(&batch, 1);
        let (_, kept) = r.points();
        assert_eq!(kept.len(), PER_BATCH);
        assert_eq!(kept[..3], [0.0, 10.0, 20.0]);
        // Small batches past the capacity: the oldest go first.
        for i in 0..RECENT_POINTS {
            r.sample(&[1000.0 + i as f64], 1);
        }
        let (_, kept) = r.points();
        assert_eq!(kept.len(), RECENT_POINTS);
        assert_eq!(kept[0], 1000.0);
        assert_eq!(kept[RECENT_POINTS - 1], 1000.0 + (RECENT_POINTS - 1) as f64);
    }

    #[test]
    fn a_new_dimension_starts_over() {
        let r = Recent::default();
        r.watch();
        r.sample(&[1.0, 2.0], 2);
        r.sample(&[1.0, 2.0, 3.0], 3);
        assert_eq!(r.points(), (3, vec![1.0, 2.0, 3.0]));
    }
}
