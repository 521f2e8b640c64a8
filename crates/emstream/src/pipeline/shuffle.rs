//! `--shuffle-buffer N`: a bounded-memory shuffle of a file's points before
//! the learner sees them. A file sorted by one of its columns is a drifting
//! stream to one-pass EM (the first mini-batches hold only one end of the
//! sorted range); passing its points through a buffer of N random slots
//! turns it into a nearly random order using N points of memory.
//!
//! Each point that arrives takes a random slot of the full buffer and the
//! point that was there goes on to the learner; at the end of the input the
//! buffer is emptied in random order. Every point goes on exactly once.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shuffle buffer: up to `slots` points of dimension `dim`.
pub(crate) struct Shuffle {
    slots: usize,
    buf: Vec<f64>,
    out: Vec<f64>,
    rng: ChaCha8Rng,
}

impl Shuffle {
    /// A buffer of `slots` points, its random choices from `seed`.
    pub(crate) fn new(slots: usize, seed: u64) -> Self {
        Shuffle {
            slots,
            buf: Vec::new(),
            out: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Replaces `values` (rows of `dim`) with the points that leave the
    /// buffer as they come in: none until it is full, then one per point.
    pub(crate) fn pass(&mut self, values: &mut Vec<f64>, dim: usize) {
        if dim == 0 || values.is_empty() {
            return;
        }
        self.out.clear();
        for x in values.chunks_exact(dim) {
            let held = self.buf.len() / dim;
            if held < self.slots {
                self.buf.extend_from_slice(x);
                continue;
            }
            let j = self.rng.random_range(0..self.slots) * dim;
            self.out.extend_from_slice(&self.buf[j..j + dim]);
            self.buf[j..j + dim].copy_from_slice(x);
        }
        std::mem::swap(values, &mut self.out);
    }

    /// Empties the buffer into `values` (rows of `dim`), in random order.
    pub(crate) fn drain(&mut self, values: &mut Vec<f64>, dim: usize) {
        if dim == 0 {
            return;
        }
        let n = self.buf.len() / dim;
        for i in (1..n).rev() {
            let j = self.rng.random_range(0..=i);
            if i != j {
                for c in 0..dim {
                    self.buf.swap(i * dim + c, j * dim + c);
                }
            }
        }
        values.append(&mut self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_goes_on_once_in_another_order() {
        let dim = 2;
        let sorted: Vec<f64> = (0..1000).flat_map(|i| [i as f64, -(i as f64)]).collect();
        let mut sh = Shuffle::new(100, 7);
        let mut seen = Vec::new();
        for chunk in sorted.chunks(2 * 37) {
            let mut v = chunk.to_vec();
            sh.pass(&mut v, dim);
            seen.extend_from_slice(&v);
            assert!(sh.buf.len() <= 100 * dim, "bounded memory");
        }
        assert_eq!(seen.len(), (1000 - 100) * dim, "the buffer holds 100");
        let mut rest = Vec::new();
        sh.drain(&mut rest, dim);
        seen.extend(rest);
        // Rows stay whole, each exactly once.
        let mut rows: Vec<(i64, i64)> = seen
            .chunks_exact(2)
            .map(|r| (r[0] as i64, r[1] as i64))
            .collect();
        assert!(rows.iter().all(|&(a, b)| a == -b));
        assert_ne!(rows, (0..1000).map(|i| (i, -i)).collect::<Vec<_>>());
        // The first 200 points out span far more than the first 200 in.
        let early_max = rows[..200].iter().map(|r| r.0).max().unwrap();
        assert!(early_max > 250, "{early_max}");
        rows.sort_unstable();
        assert_eq!(rows, (0..1000).map(|i| (i, -i)).collect::<Vec<_>>());
    }
}
