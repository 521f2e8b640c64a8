//! The first model: k-means++ seeding and a short batch EM on the warm-up
//! buffer, several seeds, the best kept.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::em::{Engine, LearnError};
use super::mixture::GaussianMixture;
use super::params::Params;
use super::stats::{BatchSums, MixtureStats};

/// EM iterations every seed gets before the best one is chosen.
const SELECT_ITERS: usize = 3;

/// Most Lloyd iterations after k-means++ seeding.
const LLOYD_ITERS: usize = 20;

/// Seeds are compared on a random subsample of the warm-up buffer of at
/// most this many points (or [`SEED_SAMPLE_PER_K`] per component, if more):
/// enough to tell a good arrangement of components from a poor one, for a
/// fraction of the cost on a large buffer. Only the best seed is iterated on
/// the whole buffer. A buffer this small or smaller is used whole.
const SEED_SAMPLE: usize = 2000;

/// Points per component a seed subsample holds at least.
const SEED_SAMPLE_PER_K: usize = 100;

/// Number of distinct rows in `points`, counting no further than `limit`.
pub(crate) fn count_distinct(points: &[f64], d: usize, limit: usize) -> usize {
    let mut seen: Vec<&[f64]> = Vec::with_capacity(limit);
    for x in points.chunks_exact(d) {
        if !seen
            .iter()
            .any(|s| s.iter().zip(x).all(|(a, b)| a.to_bits() == b.to_bits()))
        {
            seen.push(x);
            if seen.len() >= limit {
                break;
            }
        }
    }
    seen.len()
}

/// Greedy k-means++ (Arthur & Vassilvitskii 2007, with the local trials
/// of scikit-learn): the first centre uniformly; each next one drawn
/// `2 + ln K` times with probability proportional to the squared distance
/// to the nearest centre so far, keeping the draw that lowers the total
/// squared distance most.
fn kmeans_pp(points: &[f64], lanes: &Lanes, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let d = lanes.d;
    let n = points.len() / d;
    let trials = 2 + (k as f64).ln() as usize;
    let mut centres = Vec::with_capacity(k * d);
    let first = rng.random_range(0..n);
    centres.extend_from_slice(&points[first * d..(first + 1) * d]);
    let mut d2 = vec![0.0; n];
    lanes.sq_dists(&centres[..d], &mut d2);
    let mut dist = vec![0.0; n];
    let mut trial_d2 = vec![0.0; n];
    let mut best_d2 = vec![0.0; n];
    for _ in 1..k {
        let total: f64 = d2.iter().sum();
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..trials {
            let pick = if total > 0.0 {
                draw(&d2, rng.random::<f64>() * total)
            } else {
                // Every point sits on a centre: only possible when fewer
                // distinct points than K remain; take any uncovered one.
                d2.iter().position(|&w| w > 0.0).unwrap_or(n - 1)
            };
            lanes.sq_dists(&points[pick * d..(pick + 1) * d], &mut dist);
            let mut pot = 0.0;
            for ((t, &w), &s) in trial_d2.iter_mut().zip(&d2).zip(&dist) {
                *t = w.min(s);
                pot += *t;
            }
            if best.is_none_or(|(b, _)| pot < b) {
                best = Some((pot, pick));
                best_d2.copy_from_slice(&trial_d2);
            }
            if total <= 0.0 {
                break;
            }
        }
        let (_, pick) = best.expect("at least one trial");
        centres.extend_from_slice(&points[pick * d..(pick + 1) * d]);
        d2.copy_from_slice(&best_d2);
    }
    centres
}

/// Index drawn with probability proportional to `w`, given `u` uniform in
/// `[0, Σ w)`; never a zero-weight index.
fn draw(w: &[f64], mut u: f64) -> usize {
    let mut pick = 0;
    for (i, &wi) in w.iter().enumerate() {
        if wi > 0.0 {
            pick = i;
            if u < wi {
                break;
            }
            u -= wi;
        }
    }
    pick
}

/// `m` rows of `points` drawn without replacement (in their original
/// order), or `None` when there are no more than `m`.
fn subsample(points: &[f64], d: usize, m: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f64>> {
    let n = points.len() / d;
    if n <= m {
        return None;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..m {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    let mut chosen = idx[..m].to_vec();
    chosen.sort_unstable();
    let mut out = Vec::with_capacity(m * d);
    for i in chosen {
        out.extend_from_slice(&points[i * d..(i + 1) * d]);
    }
    Some(out)
}

#[cfg(test)]
fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Points side by side in [`Lanes::sq_dists`].
const LANES: usize = 8;

/// A set of points in groups of [`LANES`], transposed: coordinate `i` of
/// point `LANES g + l` is at `data[(g d + i) LANES + l]` (the last group
/// padded with zeros). The squared distance of a point to a centre is then
/// one lane of a vector loop, which adds the lane's squares in coordinate
/// order as one chain per point would (the same bits), eight points per
/// instruction instead of one: k-means++ and Lloyd, two thirds of the
/// warm-up's own time at d = 32, are nothing but these distances.
struct Lanes {
    d: usize,
    n: usize,
    data: Vec<f64>,
}

impl Lanes {
    fn new(points: &[f64], d: usize) -> Self {
        let n = points.len() / d;
        let mut data = vec![0.0; n.div_ceil(LANES) * LANES * d];
        for (p, x) in points.chunks_exact(d).enumerate() {
            let (g, l) = (p / LANES, p % LANES);
            for (i, &v) in x.iter().enumerate() {
                data[(g * d + i) * LANES + l] = v;
            }
        }
        Lanes { d, n, data }
    }

    /// `out[p]` = the squared distance of point `p` to `c`, summed from
    /// −0 in coordinate order as `(x − c) · (x − c)`, on the widest
    /// vectors the CPU has (the same bits on each).
    fn sq_dists(&self, c: &[f64], out: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                return unsafe { self.sq_dists_avx512(c, out) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { self.sq_dists_avx2(c, out) };
            }
        }
        self.sq_dists_any(c, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn sq_dists_avx512(&self, c: &[f64], out: &mut [f64]) {
        self.sq_dists_any(c, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn sq_dists_avx2(&self, c: &[f64], out: &mut [f64]) {
        self.sq_dists_any(c, out);
    }

    /// Two groups at a time, so that two chains of additions run side by
    /// side.
    #[inline(always)]
    fn sq_dists_any(&self, c: &[f64], out: &mut [f64]) {
        let c = &c[..self.d];
        let out = &mut out[..self.n];
        let group = LANES * self.d;
        let mut done = 0;
        let mut put = |s: &[f64; LANES]| {
            let m = LANES.min(out.len() - done);
            out[done..done + m].copy_from_slice(&s[..m]);
            done += m;
        };
        let mut pairs = self.data.chunks_exact(2 * group);
        for pair in &mut pairs {
            let (g0, g1) = pair.split_at(group);
            lane_sums([g0, g1], c).iter().for_each(&mut put);
        }
        for g in pairs.remainder().chunks_exact(group) {
            lane_sums([g], c).iter().for_each(&mut put);
        }
    }
}

/// Each lane's `Σ (x − c)²` over the coordinates of `G` transposed groups
/// of [`Lanes`], from −0 in coordinate order, the groups' chains side by
/// side.
#[inline(always)]
fn lane_sums<const G: usize>(groups: [&[f64]; G], c: &[f64]) -> [[f64; LANES]; G] {
    let mut s = [[-0.0f64; LANES]; G];
    for (i, &ci) in c.iter().enumerate() {
        for (sg, g) in s.iter_mut().zip(groups) {
            let row = &g[i * LANES..(i + 1) * LANES];
            for l in 0..LANES {
                let t = row[l] - ci;
                sg[l] += t * t;
            }
        }
    }
    s
}

/// Lloyd iterations; returns the one-hot responsibilities of the final
/// assignment (n rows of K).
fn lloyd(points: &[f64], lanes: &Lanes, centres: &mut [f64]) -> Vec<f64> {
    let d = lanes.d;
    let n = points.len() / d;
    let k = centres.len() / d;
    let mut assign = vec![usize::MAX; n];
    // Centre j's distances at j n .. (j + 1) n.
    let mut dists = vec![0.0; k * n];
    for _ in 0..LLOYD_ITERS {
        for (j, row) in dists.chunks_exact_mut(n).enumerate() {
            lanes.sq_dists(&centres[j * d..(j + 1) * d], row);
        }
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let mut best = 0;
            let mut bd = f64::INFINITY;
            for j in 0..k {
                let dist = dists[j * n + i];
                if dist < bd {
                    bd = dist;
                    best = j;
                }
            }
            if *a != best {
                *a = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0usize; k];
        for (i, x) in points.chunks_exact(d).enumerate() {
            counts[assign[i]] += 1;
            for a in 0..d {
                sums[assign[i] * d + a] += x[a];
            }
        }
        for j in 0..k {
            if counts[j] > 0 {
                for a in 0..d {
                    centres[j * d + a] = sums[j * d + a] / counts[j] as f64;
                }
            }
        }
    }
    let mut resp = vec![0.0; n * k];
    for (i, &j) in assign.iter().enumerate() {
        resp[i * k + j] = 1.0;
    }
    resp
}

/// Fits the first model of `k` components on the warm-up buffer: for each of
/// `params.init_seeds` seeds, k-means++, Lloyd and a few EM iterations on a
/// random subsample of the buffer (the whole buffer when it is small, see
/// [`SEED_SAMPLE`]); the best seed then gets batch EM on the whole buffer
/// until the average log-likelihood stops improving, and split-and-merge
/// moves. Returns the statistics of the buffer under the model and the
/// model.
///
/// # Errors
///
/// [`LearnError::TooFewDistinct`] when the buffer holds fewer distinct
/// points than components.
pub(crate) fn fit_warmup(
    engine: &mut Engine,
    buf: &[f64],
    params: &Params,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(MixtureStats, GaussianMixture), LearnError> {
    let d = engine.dim();
    let n = buf.len() / d;
    let distinct = count_distinct(buf, d, k);
    if distinct < k {
        return Err(LearnError::TooFewDistinct {
            points: n,
            distinct,
            k,
        });
    }
    // Every seed gets k-means++ and Lloyd (cheap) and a few EM iterations
    // on the subsample, enough to tell a good arrangement of components
    // from a poor one; only the best is iterated to convergence on the
    // whole buffer. With one component every seed ends at the same place.
    let sample = subsample(buf, d, SEED_SAMPLE.max(SEED_SAMPLE_PER_K * k), rng)
        .filter(|s| count_distinct(s, d, k) >= k);
    let seed_buf = sample.as_deref().unwrap_or(buf);
    let m = seed_buf.len() / d;
    let seeds = if k == 1 { 1 } else { params.init_seeds };
    let lanes = Lanes::new(seed_buf, d);
    let mut best: Option<(f64, MixtureStats, GaussianMixture)> = None;
    let mut sums = BatchSums::default();
    for _ in 0..seeds {
        let mut centres = kmeans_pp(seed_buf, &lanes, k, rng);
        let resp = lloyd(seed_buf, &lanes, &mut centres);
        sums.accumulate(params.covariance, d, seed_buf, &resp, &centres);
        let mut stats = sums.to_stats(params.covariance, d, &centres, m);
        engine.widen_thin_clusters(&mut stats, m);
        let mut mix = engine.m_step(&mut stats)?;
        let mut ll = f64::NEG_INFINITY;
        for _ in 0..SELECT_ITERS.min(params.init_iters) {
            let (s, l) = engine.full_pass(&mix, seed_buf);
            stats = s;
            ll = l;
            mix = engine.m_step(&mut stats)?;
        }
        if best.as_ref().is_none_or(|b| ll > b.0) {
            best = Some((ll, stats, mix));
        }
    }
    // init_seeds is at least 1, so there is a best seed.
    let Some((mut prev, mut stats, mut mix)) = best else {
        return Err(LearnError::NotFitted);
    };
    if sample.is_some() {
        // One EM iteration on the whole buffer, so that the statistics and
        // the log-likelihood below are the whole buffer's.
        let (s, ll) = engine.full_pass(&mix, buf);
        stats = s;
        prev = ll;
        mix = engine.m_step(&mut stats)?;
    }
    for _ in SELECT_ITERS.min(params.init_iters)..params.init_iters {
        let (s, ll) = engine.full_pass(&mix, buf);
        stats = s;
        mix = engine.m_step(&mut stats)?;
        if ll - prev < params.init_tol {
            prev = ll;
            break;
        }
        prev = ll;
    }
    let (stats, mix, _) = super::smem::improve(engine, buf, stats, mix, prev);
    Ok((stats, mix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn distinct_counting_stops_at_the_limit() {
        let pts = [1.0, 1.0, 2.0, 1.0, 3.0];
        assert_eq!(count_distinct(&pts, 1, 10), 3);
        assert_eq!(count_distinct(&pts, 1, 2), 2);
        assert_eq!(count_distinct(&[0.0, -0.0], 1, 5), 2);
    }

    #[test]
    fn kmeans_pp_picks_distinct_centres() {
        let pts = [0.0, 0.0, 0.0, 5.0, 5.0, 9.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let c = kmeans_pp(&pts, &Lanes::new(&pts, 1), 3, &mut rng);
            let mut s = c.clone();
            s.sort_by(f64::total_cmp);
            assert_eq!(s, vec![0.0, 5.0, 9.0]);
        }
    }

    /// The distances in lanes are `sq_dist`'s, to the bit, on every
    /// kernel this CPU runs: large and tiny coordinates (so that the order
    /// of the additions matters), NaN and infinity included, point counts
    /// that fill no group, one group, a pair of groups and a pair and a
    /// remainder.
    #[test]
    fn lane_distances_are_sq_dists() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for d in [1, 2, 3, 7, 8, 9, 32, 33] {
            for n in [1, 5, 8, 9, 16, 17, 24, 40, 41] {
                for round in 0..20 {
                    let mut coord =
                        || rng.random_range(-1.0..1.0) * 10f64.powi(rng.random_range(-8..9));
                    let mut points: Vec<f64> = (0..n * d).map(|_| coord()).collect();
                    let c: Vec<f64> = (0..d).map(|_| coord()).collect();
                    if round == 0 {
                        points[d - 1] = f64::NAN;
                        points[(n - 1) * d] = f64::INFINITY;
                    }
                    let lanes = Lanes::new(&points, d);
                    let want: Vec<u64> = points
                        .chunks_exact(d)
                        .map(|x| sq_dist(x, &c).to_bits())
                        .collect();
                    let mut kernels: Vec<(&str, Vec<f64>)> = vec![("plain", vec![7.0; n])];
                    lanes.sq_dists_any(&c, &mut kernels[0].1);
                    #[cfg(target_arch = "x86_64")]
                    {
                        if std::is_x86_feature_detected!("avx2") {
                            let mut out = vec![7.0; n];
                            // SAFETY: the CPU supports AVX2.
                            unsafe { lanes.sq_dists_avx2(&c, &mut out) };
                            kernels.push(("avx2", out));
                        }
                        if std::is_x86_feature_detected!("avx512f") {
                            let mut out = vec![7.0; n];
                            // SAFETY: the CPU supports AVX-512F.
                            unsafe { lanes.sq_dists_avx512(&c, &mut out) };
                            kernels.push(("avx512", out));
                        }
                    }
                    for (name, out) in kernels {
                        let got: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "{name}, d {d}, n {n}");
                    }
                }
            }
        }
    }
}
