//! Split-and-merge moves on the warm-up buffer (after Ueda et al. 2000,
//! "SMEM algorithm for mixture models"), so that the first model does not
//! keep a local optimum of EM: one component covering two clusters while
//! two others share one.
//!
//! A move merges the pair of components whose merge loses least
//! log-likelihood and splits the component whose split gains most, both
//! estimated locally on the points each concerns; EM is then run on the
//! whole buffer from the moved model, and the move is kept only when the
//! buffer's log-likelihood rises. The number of components never changes,
//! so comparing log-likelihoods is fair.

use super::em::Engine;
use super::mixture::{normalise_row, GaussianMixture, MixtureParams};
use super::stats::{BatchSums, MixtureStats};

/// Most accepted moves.
const MAX_MOVES: usize = 8;
/// Candidate (merge, split) moves tried per round, best estimate first.
const CANDIDATES: usize = 5;
/// Pairs considered for merging (by responsibility overlap) per round.
const MERGE_PAIRS: usize = 4;
/// A point takes part in a local estimate when its responsibility is above this.
const MIN_RESP: f64 = 1e-3;
/// EM iterations of a local two-component fit.
const SPLIT_ITERS: usize = 15;
/// Most EM iterations on the buffer after a move.
const MOVE_ITERS: usize = 40;
/// A move is kept when it raises the buffer's average log-likelihood by more than this.
const MIN_GAIN: f64 = 1e-4;
/// Beyond this K the quadratic search over pairs is not worth its time.
const MAX_K: usize = 64;
/// EM stops when the average log-likelihood improves by less than this.
const TOL: f64 = 1e-5;

/// Responsibilities of every component for every buffer point (n rows of K).
pub(super) fn responsibilities(mix: &GaussianMixture, buf: &[f64]) -> Vec<f64> {
    let k = mix.n_components();
    let n = buf.len() / mix.dim();
    let mut r = vec![0.0; n * k];
    mix.weighted_log_probs(buf, &mut r);
    for row in r.chunks_exact_mut(k) {
        normalise_row(row);
    }
    r
}

/// Points with weight above [`MIN_RESP`]: (points, weights).
fn gather(buf: &[f64], d: usize, weight: impl Fn(usize) -> f64) -> (Vec<f64>, Vec<f64>) {
    let mut pts = Vec::new();
    let mut w = Vec::new();
    for (i, x) in buf.chunks_exact(d).enumerate() {
        let v = weight(i);
        if v > MIN_RESP {
            pts.extend_from_slice(x);
            w.push(v);
        }
    }
    (pts, w)
}

/// Weighted sum of `ln p(x)` under `mix`.
fn weighted_ll(mix: &GaussianMixture, pts: &[f64], w: &[f64]) -> f64 {
    let k = mix.n_components();
    let mut lp = vec![0.0; w.len() * k];
    mix.weighted_log_probs(pts, &mut lp);
    lp.chunks_exact_mut(k)
        .zip(w)
        .map(|(row, wi)| wi * normalise_row(row))
        .sum()
}

/// One component of `mix` as a one-component mixture.
fn single(mix: &GaussianMixture, j: usize) -> Option<GaussianMixture> {
    let p = mix.params();
    let plen = p.covariance.param_len(p.dim);
    GaussianMixture::new(MixtureParams {
        covariance: p.covariance,
        dim: p.dim,
        weights: vec![1.0],
        means: mix.mean(j).to_vec(),
        covariances: p.covariances[j * plen..(j + 1) * plen].to_vec(),
    })
    .ok()
}

/// Fits `k` components to weighted points by EM from `start`; `None` when
/// an M-step fails.
fn weighted_em(
    engine: &mut Engine,
    start: GaussianMixture,
    pts: &[f64],
    w: &[f64],
    iters: usize,
) -> Option<GaussianMixture> {
    let d = start.dim();
    let k = start.n_components();
    let cov = start.covariance_type();
    let mut mix = start;
    let mut sums = BatchSums::default();
    let mut r = vec![0.0; w.len() * k];
    for _ in 0..iters {
        mix.weighted_log_probs(pts, &mut r);
        for (row, wi) in r.chunks_exact_mut(k).zip(w) {
            normalise_row(row);
            row.iter_mut().for_each(|v| *v *= wi);
        }
        sums.accumulate(cov, d, pts, &r, mix.means());
        let mut stats = sums.to_stats(cov, d, mix.means(), w.len());
        if stats.s0.iter().any(|s| !(*s > 0.0)) {
            break;
        }
        mix = engine.m_step(&mut stats).ok()?;
    }
    Some(mix)
}

/// Splits component `j` in two along its longest axis and refits the two
/// on its points; returns the two-component model and the gain in
/// weighted log-likelihood over the single component.
pub(super) fn split_gain(
    engine: &mut Engine,
    mix: &GaussianMixture,
    resp: &[f64],
    buf: &[f64],
    j: usize,
) -> Option<(f64, GaussianMixture)> {
    let d = mix.dim();
    let k = mix.n_components();
    let (pts, w) = gather(buf, d, |i| resp[i * k + j]);
    if w.len() < 2 * (d + 1) {
        return None;
    }
    let one = single(mix, j)?;
    let c = mix.covariance_matrix(j);
    // Longest axis by power iteration.
    let mut v = vec![1.0 / (d as f64).sqrt(); d];
    let mut lambda = 0.0;
    for _ in 0..30 {
        let mut nv: Vec<f64> = (0..d)
            .map(|a| (0..d).map(|b| c[a * d + b] * v[b]).sum())
            .collect();
        lambda = nv.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(lambda > 0.0) {
            return None;
        }
        nv.iter_mut().for_each(|x| *x /= lambda);
        v = nv;
    }
    let step = lambda.sqrt();
    let mu = mix.mean(j);
    let mut means = Vec::with_capacity(2 * d);
    for s in [1.0, -1.0] {
        means.extend((0..d).map(|a| mu[a] + s * step * v[a]));
    }
    let p = one.params();
    let start = GaussianMixture::new(MixtureParams {
        covariance: p.covariance,
        dim: d,
        weights: vec![0.5, 0.5],
        means,
        covariances: [p.covariances.clone(), p.covariances.clone()].concat(),
    })
    .ok()?;
    let two = weighted_em(engine, start, &pts, &w, SPLIT_ITERS)?;
    let gain = weighted_ll(&two, &pts, &w) - weighted_ll(&one, &pts, &w);
    Some((gain, two))
}

/// The loss in weighted log-likelihood of replacing components `i` and `j`
/// by one moment-matched component (the pooled moments of their
/// regularised covariances, so positive definite).
fn merge_loss(
    stats: &MixtureStats,
    mix: &GaussianMixture,
    resp: &[f64],
    buf: &[f64],
    i: usize,
    j: usize,
) -> Option<f64> {
    let d = mix.dim();
    let k = mix.n_components();
    let (pts, w) = gather(buf, d, |n| resp[n * k + i] + resp[n * k + j]);
    if w.is_empty() {
        return None;
    }
    let merged = merged_stats(stats, i, j);
    let p = mix.params();
    let pair = GaussianMixture::new(MixtureParams {
        covariance: p.covariance,
        dim: d,
        weights: {
            let t = p.weights[i] + p.weights[j];
            vec![p.weights[i] / t, p.weights[j] / t]
        },
        means: [mix.mean(i), mix.mean(j)].concat(),
        covariances: {
            let plen = p.covariance.param_len(d);
            [
                &p.covariances[i * plen..(i + 1) * plen],
                &p.covariances[j * plen..(j + 1) * plen],
            ]
            .concat()
        },
    })
    .ok()?;
    let one = GaussianMixture::new(MixtureParams {
        covariance: p.covariance,
        dim: d,
        weights: vec![1.0],
        means: merged.mean,
        covariances: merged.cov,
    })
    .ok()?;
    Some(weighted_ll(&pair, &pts, &w) - weighted_ll(&one, &pts, &w))
}

/// Component statistics of `i` and `j` pooled into one (exact moments).
pub(super) fn merged_stats(stats: &MixtureStats, i: usize, j: usize) -> MixtureStats {
    let one = |c: usize| {
        let d = stats.dim;
        let plen = stats.covariance.param_len(d);
        MixtureStats {
            covariance: stats.covariance,
            dim: d,
            s0: vec![1.0],
            mean: stats.mean[c * d..(c + 1) * d].to_vec(),
            cov: stats.cov[c * plen..(c + 1) * plen].to_vec(),
            points: stats.s0[c],
        }
    };
    let mut m = one(i).merge(&one(j));
    m.s0[0] = stats.s0[i] + stats.s0[j];
    m
}

/// Runs EM on the buffer from `mix` until it stops improving; `None` when
/// an M-step fails.
fn converge(
    engine: &mut Engine,
    mut mix: GaussianMixture,
    buf: &[f64],
) -> Option<(MixtureStats, GaussianMixture, f64)> {
    let mut prev = f64::NEG_INFINITY;
    let (mut stats, mut ll) = engine.full_pass(&mix, buf);
    for _ in 0..MOVE_ITERS {
        mix = engine.m_step(&mut stats).ok()?;
        if ll - prev < TOL {
            break;
        }
        prev = ll;
        (stats, ll) = engine.full_pass(&mix, buf);
    }
    Some((stats, mix, ll))
}

/// Improves a converged warm-up fit by split-and-merge moves; returns the
/// statistics, model and average log-likelihood to use. A move whose
/// M-step fails is not taken. K is the model's.
pub(crate) fn improve(
    engine: &mut Engine,
    buf: &[f64],
    mut stats: MixtureStats,
    mut mix: GaussianMixture,
    mut ll: f64,
) -> (MixtureStats, GaussianMixture, f64) {
    let k = mix.n_components();
    if !(3..=MAX_K).contains(&k) {
        return (stats, mix, ll);
    }
    let d = mix.dim();
    let plen = mix.covariance_type().param_len(d);
    for _ in 0..MAX_MOVES {
        let resp = responsibilities(&mix, buf);
        // Merge candidates: the most overlapping pairs.
        let mut norms = vec![0.0; k];
        for row in resp.chunks_exact(k) {
            for a in 0..k {
                norms[a] += row[a] * row[a];
            }
        }
        let mut pairs = Vec::new();
        for a in 0..k {
            for b in a + 1..k {
                let dot: f64 = resp.chunks_exact(k).map(|row| row[a] * row[b]).sum();
                let denom = (norms[a] * norms[b]).sqrt();
                if denom > 0.0 {
                    pairs.push((dot / denom, a, b));
                }
            }
        }
        pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
        let merges: Vec<(f64, usize, usize)> = pairs
            .iter()
            .take(MERGE_PAIRS)
            .filter_map(|&(_, a, b)| merge_loss(&stats, &mix, &resp, buf, a, b).map(|l| (l, a, b)))
            .collect();
        let splits: Vec<(f64, usize, GaussianMixture)> = (0..k)
            .filter_map(|c| split_gain(engine, &mix, &resp, buf, c).map(|(g, two)| (g, c, two)))
            .collect();
        let mut moves = Vec::new();
        for (loss, a, b) in &merges {
            for (gain, c, two) in &splits {
                if *c != *a && *c != *b && gain - loss > 0.0 {
                    moves.push((gain - loss, *a, *b, *c, two));
                }
            }
        }
        moves.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut accepted = false;
        for (_, a, b, c, two) in moves.into_iter().take(CANDIDATES) {
            let mut moved = stats.clone();
            let merged = merged_stats(&stats, a, b);
            moved.s0[a] = merged.s0[0];
            moved.mean[a * d..(a + 1) * d].copy_from_slice(&merged.mean);
            moved.cov[a * plen..(a + 1) * plen].copy_from_slice(&merged.cov);
            let tp = two.params();
            let share = stats.s0[c];
            for (slot, half) in [(c, 0), (b, 1)] {
                moved.s0[slot] = share * tp.weights[half];
                moved.mean[slot * d..(slot + 1) * d].copy_from_slice(two.mean(half));
                moved.cov[slot * plen..(slot + 1) * plen]
                    .copy_from_slice(&tp.covariances[half * plen..(half + 1) * plen]);
            }
            let Ok(start) = engine.m_step(&mut moved) else {
                continue;
            };
            let Some((s2, m2, ll2)) = converge(engine, start, buf) else {
                continue;
            };
            if ll2 > ll + MIN_GAIN {
                (stats, mix, ll) = (s2, m2, ll2);
                accepted = true;
                break;
            }
        }
        if !accepted {
            break;
        }
    }
    (stats, mix, ll)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CovarianceType;
    use rand::SeedableRng;

    /// Three unit-variance 1-D clusters at -10, 0 and 10.
    fn three_apart() -> GaussianMixture {
        GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Full,
            dim: 1,
            weights: vec![1.0 / 3.0; 3],
            means: vec![-10.0, 0.0, 10.0],
            covariances: vec![1.0; 3],
        })
        .unwrap()
    }

    #[test]
    fn a_merge_and_a_split_undo_a_local_optimum() {
        // Three 1-D clusters at -10, 0 and 10; the model starts with one
        // component over the first two and two components sharing the third:
        // a fixed point of EM that a merge plus a split leaves.
        let truth = three_apart();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let buf = truth.sample(&mut rng, 3000);
        let bad = GaussianMixture::new(MixtureParams {
            covariance: CovarianceType::Full,
            dim: 1,
            weights: vec![2.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0],
            means: vec![-5.0, 9.4, 10.6],
            covariances: vec![26.0, 0.6, 0.6],
        })
        .unwrap();
        let mut engine = Engine::new(1, CovarianceType::Full, &buf, 1e-6);
        let (stats, mix, ll) = converge(&mut engine, bad, &buf).unwrap();
        let (_, better, ll2) = improve(&mut engine, &buf, stats, mix, ll);
        assert!(ll2 > ll + 0.1, "{ll} -> {ll2}");
        let mut means = better.means().to_vec();
        means.sort_by(f64::total_cmp);
        for (m, t) in means.iter().zip([-10.0, 0.0, 10.0]) {
            assert!((m - t).abs() < 0.2, "{means:?}");
        }
    }

    #[test]
    fn a_good_fit_is_left_alone() {
        let truth = three_apart();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let buf = truth.sample(&mut rng, 3000);
        let mut engine = Engine::new(1, CovarianceType::Full, &buf, 1e-6);
        let (stats, mix, ll) = converge(&mut engine, truth, &buf).unwrap();
        let (_, after, ll2) = improve(&mut engine, &buf, stats, mix.clone(), ll);
        assert_eq!(ll2, ll);
        assert_eq!(after, mix);
    }
}
