//! Per-component sufficient statistics: accumulated from a batch around
//! fixed centres, then blended (stepwise EM) or merged (disjoint batches,
//! see [`super::em::BatchStats::merge`]).
//!
//! The statistics are kept in centred form, per component: the averaged
//! responsibility `s0 ≈ E[γ]`, the mean `m = E[γ x] / s0` and the covariance
//! `C = E[γ (x - m)(x - m)ᵀ] / s0`. Batch sums are taken around each
//! component's current mean (the `x - μ` the E-step computes anyway), so a
//! stream offset by 1e9 loses no precision, and combining two sets uses the
//! pooled (Chan et al.) formula, which is exact and stable:
//!
//! ```text
//! a = (1-η) s0,  b = η ŝ0,  s0' = a + b
//! m' = (a m + b m̂) / s0'
//! C' = (a C + b Ĉ + (a b / s0') (m - m̂)(m - m̂)ᵀ) / s0'
//! ```

use serde::{Deserialize, Serialize};

use super::covariance::CovarianceType;
use super::kernels;

/// Averaged sufficient statistics of every component of a mixture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureStats {
    /// Covariance structure the statistics are kept for.
    pub covariance: CovarianceType,
    /// Dimension d.
    pub dim: usize,
    /// Averaged responsibility per component (K numbers summing to about 1).
    pub s0: Vec<f64>,
    /// Mean per component (K rows of d).
    pub mean: Vec<f64>,
    /// Covariance per component, laid out like
    /// [`MixtureParams::covariances`](super::MixtureParams::covariances).
    pub cov: Vec<f64>,
    /// How many points these statistics stand for (the weight in a merge).
    pub points: f64,
}

impl MixtureStats {
    /// Empty statistics (standing for no points) for K components.
    pub fn empty(covariance: CovarianceType, dim: usize, k: usize) -> Self {
        MixtureStats {
            covariance,
            dim,
            s0: vec![0.0; k],
            mean: vec![0.0; k * dim],
            cov: vec![0.0; k * covariance.param_len(dim)],
            points: 0.0,
        }
    }

    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.s0.len()
    }

    /// True when every number is finite.
    pub fn is_finite(&self) -> bool {
        [&self.s0, &self.mean, &self.cov]
            .iter()
            .all(|v| kernels::all_finite(v))
            && self.points.is_finite()
    }

    /// Stepwise EM blend: `self ← (1 − η) self + η batch`, component by
    /// component, in centred form.
    pub fn blend(&mut self, batch: &MixtureStats, eta: f64) {
        let base = std::mem::replace(self, MixtureStats::empty(self.covariance, self.dim, 0));
        self.blend_from(&base, batch, eta);
    }

    /// [`MixtureStats::blend`] of `base` written into `self`, whose
    /// numbers are not read (only its memory is reused): `self ← (1 − η)
    /// base + η batch`, the same bits as a copy of `base` blended, without
    /// the copy (the learner blends into a spare so that its statistics
    /// stay as they were if the M-step fails).
    pub(crate) fn blend_from(&mut self, base: &MixtureStats, batch: &MixtureStats, eta: f64) {
        self.combine_from(base, batch, 1.0 - eta, eta);
        self.points = base.points + batch.points;
    }

    /// Merges statistics of two disjoint batches, weighted by the points
    /// each stands for: exact when both were computed against the same
    /// mixture (as E-step statistics are). Merging with empty statistics is
    /// the identity.
    ///
    /// # Panics
    ///
    /// When the two have different K, d or covariance type.
    pub fn merge(&self, other: &MixtureStats) -> MixtureStats {
        assert_eq!(
            self.covariance, other.covariance,
            "merge needs the same covariance type"
        );
        assert_eq!(self.dim, other.dim, "merge needs the same dimension");
        assert_eq!(self.s0.len(), other.s0.len(), "merge needs the same K");
        let total = self.points + other.points;
        let mut out = if total > 0.0 {
            let mut out = MixtureStats::empty(self.covariance, self.dim, 0);
            out.combine_from(self, other, self.points / total, other.points / total);
            out
        } else {
            self.clone()
        };
        out.points = total;
        out
    }

    /// `self ← α base + β other` on the averaged statistics, exactly, in
    /// centred form; `self`'s numbers are not read, its memory is reused.
    fn combine_from(&mut self, base: &MixtureStats, other: &MixtureStats, alpha: f64, beta: f64) {
        let d = base.dim;
        let plen = base.covariance.param_len(d);
        let k = base.s0.len();
        self.covariance = base.covariance;
        self.dim = d;
        self.points = base.points;
        self.s0.resize(k, 0.0);
        self.mean.resize(k * d, 0.0);
        self.cov.resize(k * plen, 0.0);
        let mut delta = vec![0.0; d];
        for j in 0..k {
            let a = alpha * base.s0[j];
            let b = beta * other.s0[j];
            let s = a + b;
            self.s0[j] = s;
            let m = &mut self.mean[j * d..(j + 1) * d];
            let c = &mut self.cov[j * plen..(j + 1) * plen];
            let (mb, cb) = (
                &base.mean[j * d..(j + 1) * d],
                &base.cov[j * plen..(j + 1) * plen],
            );
            let (mo, co) = (
                &other.mean[j * d..(j + 1) * d],
                &other.cov[j * plen..(j + 1) * plen],
            );
            if !(b > 0.0) {
                m.copy_from_slice(mb);
                c.copy_from_slice(cb);
                continue;
            }
            if !(a > 0.0) {
                m.copy_from_slice(mo);
                c.copy_from_slice(co);
                continue;
            }
            let (fa, fb) = (a / s, b / s);
            let cross = fa * fb;
            for i in 0..d {
                delta[i] = mb[i] - mo[i];
                m[i] = fa * mb[i] + fb * mo[i];
            }
            match base.covariance {
                CovarianceType::Full => {
                    for r in 0..d {
                        for q in 0..d {
                            let idx = r * d + q;
                            c[idx] = fa * cb[idx] + fb * co[idx] + cross * delta[r] * delta[q];
                        }
                    }
                }
                CovarianceType::Diagonal => {
                    for r in 0..d {
                        c[r] = fa * cb[r] + fb * co[r] + cross * delta[r] * delta[r];
                    }
                }
                CovarianceType::Spherical => {
                    let dd: f64 = delta.iter().map(|x| x * x).sum::<f64>() / d as f64;
                    c[0] = fa * cb[0] + fb * co[0] + cross * dd;
                }
            }
        }
    }
}

/// Sums of one batch around fixed centres: `n_j = Σ γ`, `u_j = Σ γ (x − c_j)`
/// and `Q_j = Σ γ (x − c_j)(x − c_j)ᵀ` (full square for full, diagonal for
/// diag, trace for spherical). Reused between batches so that
/// accumulating allocates nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchSums {
    n: Vec<f64>,
    u: Vec<f64>,
    q: Vec<f64>,
    diff: Vec<f64>,
    /// Wide full covariance: `x − c` of the points gathered for one
    /// rank-k update ([`kernels::GATHER`] rows of d).
    gather_z: Vec<f64>,
    /// The same points' `γ (x − c)`.
    gather_rz: Vec<f64>,
    /// Wide full covariance: the points of each component within a chunk
    /// of points (K lists of up to the chunk's length, `member_count`
    /// long).
    members: Vec<u32>,
    member_count: Vec<usize>,
    /// Full covariance, wide points: only the lower triangle of each `Q`
    /// is summed ([`kernels::rank_update`]); otherwise the whole square.
    lower_only: bool,
}

impl BatchSums {
    fn q_len(cov: CovarianceType, d: usize) -> usize {
        match cov {
            CovarianceType::Full => d * d,
            CovarianceType::Diagonal => d,
            CovarianceType::Spherical => 1,
        }
    }

    /// Accumulates `points` (n rows of d) with responsibilities `resp` (n
    /// rows of K) around `centres` (K rows of d), replacing earlier sums.
    pub(crate) fn accumulate(
        &mut self,
        cov: CovarianceType,
        d: usize,
        points: &[f64],
        resp: &[f64],
        centres: &[f64],
    ) {
        // AVX-512 for the wide kernel only (see `mixture::WIDE_FROM`).
        #[cfg(target_arch = "x86_64")]
        if d > super::mixture::WIDE_FROM && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { self.accumulate_avx512(cov, d, points, resp, centres) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.accumulate_avx2(cov, d, points, resp, centres) };
            return;
        }
        self.accumulate_any(cov, d, points, resp, centres);
    }

    /// [`BatchSums::accumulate`] compiled with AVX-512F enabled (same
    /// operations in the same order, so the same bits as without).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_avx512(
        &mut self,
        cov: CovarianceType,
        d: usize,
        points: &[f64],
        resp: &[f64],
        centres: &[f64],
    ) {
        self.accumulate_any(cov, d, points, resp, centres);
    }

    /// [`BatchSums::accumulate`] compiled with AVX2 enabled (same
    /// operations in the same order, so the same bits as without).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn accumulate_avx2(
        &mut self,
        cov: CovarianceType,
        d: usize,
        points: &[f64],
        resp: &[f64],
        centres: &[f64],
    ) {
        self.accumulate_any(cov, d, points, resp, centres);
    }

    #[inline(always)]
    fn accumulate_any(
        &mut self,
        cov: CovarianceType,
        d: usize,
        points: &[f64],
        resp: &[f64],
        centres: &[f64],
    ) {
        let k = centres.len() / d;
        let ql = Self::q_len(cov, d);
        self.n.clear();
        self.n.resize(k, 0.0);
        self.u.clear();
        self.u.resize(k * d, 0.0);
        self.q.clear();
        self.q.resize(k * ql, 0.0);
        self.diff.clear();
        self.diff.resize(d, 0.0);
        self.lower_only = false;
        match cov {
            CovarianceType::Full => match d {
                1 => self.acc_full::<1>(d, k, points, resp, centres),
                2 => self.acc_full::<2>(d, k, points, resp, centres),
                3 => self.acc_full::<3>(d, k, points, resp, centres),
                4 => self.acc_full::<4>(d, k, points, resp, centres),
                5 => self.acc_full::<5>(d, k, points, resp, centres),
                6 => self.acc_full::<6>(d, k, points, resp, centres),
                8 => self.acc_full::<8>(d, k, points, resp, centres),
                _ => self.acc_full::<0>(d, k, points, resp, centres),
            },
            CovarianceType::Diagonal => {
                for j in 0..k {
                    let c = &centres[j * d..(j + 1) * d];
                    let u = &mut self.u[j * d..(j + 1) * d];
                    let q = &mut self.q[j * d..(j + 1) * d];
                    let mut nj = 0.0;
                    for (i, x) in points.chunks_exact(d).enumerate() {
                        let r = resp[i * k + j];
                        nj += r;
                        for a in 0..d {
                            let z = x[a] - c[a];
                            u[a] += r * z;
                            q[a] += r * z * z;
                        }
                    }
                    self.n[j] = nj;
                }
            }
            CovarianceType::Spherical => {
                for j in 0..k {
                    let c = &centres[j * d..(j + 1) * d];
                    let u = &mut self.u[j * d..(j + 1) * d];
                    let mut nj = 0.0;
                    let mut qj = 0.0;
                    for (i, x) in points.chunks_exact(d).enumerate() {
                        let r = resp[i * k + j];
                        nj += r;
                        let mut s = 0.0;
                        for a in 0..d {
                            let z = x[a] - c[a];
                            u[a] += r * z;
                            s += z * z;
                        }
                        qj += r * s;
                    }
                    self.n[j] = nj;
                    self.q[j] = qj;
                }
            }
        }
    }

    /// Full-covariance accumulation; `D` as in the density kernel. For the
    /// specialised dimensions the whole square `Q` is accumulated
    /// (contiguous rows vectorise; symmetrised when read), for the others
    /// its lower triangle ([`BatchSums::acc_full_wide`]); points with a
    /// responsibility of exactly 0 are skipped.
    #[inline(always)]
    fn acc_full<const D: usize>(
        &mut self,
        d: usize,
        k: usize,
        points: &[f64],
        resp: &[f64],
        centres: &[f64],
    ) {
        if D == 0 {
            self.acc_full_wide(d, k, points, resp, centres);
            return;
        }
        let d = D;
        let mut rz = vec![0.0; d];
        let diff = &mut self.diff[..d];
        for j in 0..k {
            let c = &centres[j * d..(j + 1) * d];
            let u = &mut self.u[j * d..(j + 1) * d];
            let q = &mut self.q[j * d * d..(j + 1) * d * d];
            let mut nj = 0.0;
            for (i, x) in points.chunks_exact(d).enumerate() {
                let r = resp[i * k + j];
                if r == 0.0 {
                    continue;
                }
                nj += r;
                for a in 0..d {
                    let z = x[a] - c[a];
                    diff[a] = z;
                    rz[a] = r * z;
                    u[a] += rz[a];
                }
                for a in 0..d {
                    let za = diff[a];
                    let row = &mut q[a * d..(a + 1) * d];
                    for b in 0..d {
                        row[b] += rz[b] * za;
                    }
                }
            }
            self.n[j] = nj;
        }
    }

    /// [`BatchSums::acc_full`] for wide points: per component, the points
    /// it is responsible for are gathered [`kernels::GATHER`] at a time
    /// (their `x − c` and `γ (x − c)`) and added to `Q` by one rank-k
    /// update ([`kernels::rank_update`]) of its lower triangle. Every sum
    /// still takes the points in order, so the bits are those of one
    /// rank-1 update per point.
    #[inline(always)]
    fn acc_full_wide(&mut self, d: usize, k: usize, points: &[f64], resp: &[f64], centres: &[f64]) {
        self.lower_only = true;
        self.gather_z.clear();
        self.gather_z.resize(kernels::GATHER * d, 0.0);
        self.gather_rz.clear();
        self.gather_rz.resize(kernels::GATHER * d, 0.0);
        // Each component's points (responsibility not exactly 0), in
        // order, listed in one pass without a branch per entry (which
        // components a point belongs to changes from point to point, and
        // testing every entry below mispredicted about once a point), for
        // MEMBER_CHUNK points at a time (bounded memory). The gathered
        // points go to `Q` at the end of each chunk: every sum still takes
        // the points in order, however they are grouped.
        // Not cleared: each chunk writes every count and every list entry
        // it reads (zeroing K·MEMBER_CHUNK entries per call was wasted).
        const MEMBER_CHUNK: usize = 1024;
        self.member_count.resize(k, 0);
        self.members.resize(k * MEMBER_CHUNK, 0);
        for (pts, res) in points
            .chunks(MEMBER_CHUNK * d)
            .zip(resp.chunks(MEMBER_CHUNK * k))
        {
            // One component at a time, its count in a register: point by
            // point over all K counts kept them in memory, a store and a
            // reload per entry in a chain (the listing was a sixth of
            // this function at d = 32, K = 10).
            let rows = pts.len() / d;
            for (j, (list, count)) in self
                .members
                .chunks_exact_mut(MEMBER_CHUNK)
                .zip(&mut self.member_count)
                .enumerate()
            {
                let mut c = 0;
                for (i, &r) in res[j..].iter().step_by(k).take(rows).enumerate() {
                    list[c] = i as u32;
                    c += usize::from(r != 0.0);
                }
                *count = c;
            }
            for j in 0..k {
                let c = &centres[j * d..(j + 1) * d];
                let u = &mut self.u[j * d..(j + 1) * d];
                let q = &mut self.q[j * d * d..(j + 1) * d * d];
                let mut nj = self.n[j];
                let mut m = 0;
                let from = j * MEMBER_CHUNK;
                for &i in &self.members[from..from + self.member_count[j]] {
                    let i = i as usize;
                    let (r, x) = (res[i * k + j], &pts[i * d..(i + 1) * d]);
                    nj += r;
                    let z = &mut self.gather_z[m * d..(m + 1) * d];
                    let rz = &mut self.gather_rz[m * d..(m + 1) * d];
                    for a in 0..d {
                        z[a] = x[a] - c[a];
                        rz[a] = r * z[a];
                        u[a] += rz[a];
                    }
                    m += 1;
                    if m == kernels::GATHER {
                        kernels::rank_update(d, q, &self.gather_z, &self.gather_rz, m);
                        m = 0;
                    }
                }
                kernels::rank_update(d, q, &self.gather_z, &self.gather_rz, m);
                self.n[j] = nj;
            }
        }
    }

    /// Makes these sums a copy of `other`'s (keeping this one's buffers).
    pub(crate) fn copy_from(&mut self, other: &BatchSums) {
        self.n.clone_from(&other.n);
        self.u.clone_from(&other.u);
        // K·d² numbers: a piece at a time (`kernels::copy`).
        self.q.clear();
        super::kernels::extend(&mut self.q, &other.q);
        self.lower_only = other.lower_only;
    }

    /// Adds the sums of another batch taken around the same centres: the
    /// sums of both batches together.
    pub(crate) fn add(&mut self, other: &BatchSums) {
        // Array by array: one zip over the three chained was a tenth of
        // the d = 32 learner (a chained iterator does not vectorise).
        for (a, b) in [
            (&mut self.n, &other.n),
            (&mut self.u, &other.u),
            (&mut self.q, &other.q),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }

    /// Turns the sums into averaged statistics of a batch of `n_points`.
    pub(crate) fn to_stats(
        &self,
        cov: CovarianceType,
        d: usize,
        centres: &[f64],
        n_points: usize,
    ) -> MixtureStats {
        let mut out = MixtureStats::empty(cov, d, 0);
        self.to_stats_into(cov, d, centres, n_points, &mut out);
        out
    }

    /// [`BatchSums::to_stats`] into `out`, reusing its memory (whatever
    /// its shape and numbers were).
    pub(crate) fn to_stats_into(
        &self,
        cov: CovarianceType,
        d: usize,
        centres: &[f64],
        n_points: usize,
        out: &mut MixtureStats,
    ) {
        let k = self.n.len();
        let ql = Self::q_len(cov, d);
        out.covariance = cov;
        out.dim = d;
        out.s0.resize(k, 0.0);
        out.mean.resize(k * d, 0.0);
        out.cov.resize(k * cov.param_len(d), 0.0);
        out.points = n_points as f64;
        let inv_n = 1.0 / n_points.max(1) as f64;
        let plen = cov.param_len(d);
        let mut mu = vec![0.0; d];
        for j in 0..k {
            let nj = self.n[j];
            out.s0[j] = nj * inv_n;
            let c = &centres[j * d..(j + 1) * d];
            if !(nj > 0.0) {
                out.mean[j * d..(j + 1) * d].copy_from_slice(c);
                out.cov[j * plen..(j + 1) * plen].fill(0.0);
                continue;
            }
            for a in 0..d {
                mu[a] = self.u[j * d + a] / nj;
                out.mean[j * d + a] = c[a] + mu[a];
            }
            let q = &self.q[j * ql..(j + 1) * ql];
            let oc = &mut out.cov[j * plen..(j + 1) * plen];
            match cov {
                CovarianceType::Full => {
                    // Row by row along the lower triangle (contiguous, so
                    // it vectorises, divisions included), then mirrored:
                    // the same numbers as writing both halves at once.
                    for a in 0..d {
                        let (qa, row) = (&q[a * d..=a * d + a], &mut oc[a * d..=a * d + a]);
                        let ma = mu[a];
                        if self.lower_only {
                            for ((o, &qab), &mb) in row.iter_mut().zip(qa).zip(&mu[..=a]) {
                                *o = qab / nj - ma * mb;
                            }
                        } else {
                            for (b, (o, &mb)) in row.iter_mut().zip(&mu[..=a]).enumerate() {
                                let qab = 0.5 * (qa[b] + q[b * d + a]);
                                *o = qab / nj - ma * mb;
                            }
                        }
                    }
                    for a in 1..d {
                        for b in 0..a {
                            oc[b * d + a] = oc[a * d + b];
                        }
                    }
                }
                CovarianceType::Diagonal => {
                    for a in 0..d {
                        oc[a] = q[a] / nj - mu[a] * mu[a];
                    }
                }
                CovarianceType::Spherical => {
                    let m2: f64 = mu.iter().map(|x| x * x).sum();
                    oc[0] = (q[0] / nj - m2) / d as f64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Agreement required between two ways of computing the same statistics.
    const TOL: f64 = 1e-9;

    fn stats_of(
        cov: CovarianceType,
        points: &[f64],
        resp: &[f64],
        d: usize,
        centres: &[f64],
    ) -> MixtureStats {
        let mut s = BatchSums::default();
        s.accumulate(cov, d, points, resp, centres);
        s.to_stats(cov, d, centres, points.len() / d)
    }

    #[test]
    fn statistics_into_a_used_buffer_are_those_of_a_new_one() {
        let (p, mut r) = random_case(9, 300);
        // Component 1 takes no point: its covariance must come out 0.
        r.chunks_exact_mut(2).for_each(|x| {
            x[0] = 1.0;
            x[1] = 0.0;
        });
        let centres = [0.5, -0.25, 1.0, 0.0, 2.0, -1.0];
        for cov in [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ] {
            let mut s = BatchSums::default();
            s.accumulate(cov, 3, &p, &r, &centres);
            let want = s.to_stats(cov, 3, &centres, 300);
            let mut used = MixtureStats::empty(CovarianceType::Full, 4, 5);
            used.cov.iter_mut().for_each(|v| *v = 7.0);
            used.mean.iter_mut().for_each(|v| *v = 7.0);
            s.to_stats_into(cov, 3, &centres, 300, &mut used);
            assert_eq!(used, want);
        }
    }

    fn random_case(seed: u64, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = 3;
        let k = 2;
        let points: Vec<f64> = (0..n * d)
            .map(|_| rng.random::<f64>() * 10.0 - 5.0)
            .collect();
        let mut resp = Vec::with_capacity(n * k);
        for _ in 0..n {
            let r: f64 = rng.random();
            resp.push(r);
            resp.push(1.0 - r);
        }
        (points, resp)
    }

    fn assert_close(a: &MixtureStats, b: &MixtureStats) {
        for (x, y) in
            a.s0.iter()
                .zip(&b.s0)
                .chain(a.mean.iter().zip(&b.mean))
                .chain(a.cov.iter().zip(&b.cov))
        {
            assert!((x - y).abs() < TOL * (1.0 + y.abs()), "{x} vs {y}");
        }
        assert!((a.points - b.points).abs() < TOL);
    }

    #[test]
    fn centre_does_not_change_the_statistics() {
        for cov in [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ] {
            let (p, r) = random_case(1, 500);
            let a = stats_of(cov, &p, &r, 3, &[0.0; 6]);
            let b = stats_of(cov, &p, &r, 3, &[1.0, -2.0, 3.0, 0.5, 0.5, 0.5]);
            assert_close(&a, &b);
        }
    }

    #[test]
    fn any_split_merged_equals_one_pass() {
        for cov in [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ] {
            let (p, r) = random_case(2, 900);
            let whole = stats_of(cov, &p, &r, 3, &[0.0; 6]);
            for cut in [1, 250, 899] {
                let a = stats_of(cov, &p[..cut * 3], &r[..cut * 2], 3, &[0.0; 6]);
                let b = stats_of(cov, &p[cut * 3..], &r[cut * 2..], 3, &[2.0; 6]);
                assert_close(&a.merge(&b), &whole);
            }
        }
    }

    #[test]
    fn merge_with_empty_is_identity_and_merge_is_associative() {
        let cov = CovarianceType::Full;
        let (p, r) = random_case(3, 300);
        let a = stats_of(cov, &p[..300], &r[..200], 3, &[0.0; 6]);
        let b = stats_of(cov, &p[300..600], &r[200..400], 3, &[0.0; 6]);
        let c = stats_of(cov, &p[600..], &r[400..], 3, &[0.0; 6]);
        let e = MixtureStats::empty(cov, 3, 2);
        assert_eq!(a.merge(&e), a);
        assert_eq!(e.merge(&a), a);
        assert_close(&a.merge(&b).merge(&c), &a.merge(&b.merge(&c)));
    }

    #[test]
    fn blend_from_reads_nothing_of_its_own() {
        for cov in [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ] {
            let (p, r) = random_case(4, 400);
            let a = stats_of(cov, &p[..600], &r[..400], 3, &[0.0; 6]);
            let b = stats_of(cov, &p[600..], &r[400..], 3, &[0.0; 6]);
            let mut want = a.clone();
            want.blend(&b, 0.3);
            // A spare of another shape, full of NaN: none of it may show.
            let mut spare = MixtureStats::empty(CovarianceType::Full, 5, 7);
            spare.s0.fill(f64::NAN);
            spare.mean.fill(f64::NAN);
            spare.cov.fill(f64::NAN);
            spare.points = f64::NAN;
            spare.blend_from(&a, &b, 0.3);
            assert_eq!(spare, want, "{cov:?}");
            // A component the batch does not touch keeps the old numbers.
            let mut zero = b.clone();
            zero.s0[1] = 0.0;
            let mut spare = MixtureStats::empty(cov, 3, 2);
            spare.mean.fill(f64::NAN);
            spare.cov.fill(f64::NAN);
            spare.blend_from(&a, &zero, 0.3);
            let plen = cov.param_len(3);
            assert_eq!(&spare.mean[3..6], &a.mean[3..6], "{cov:?}");
            assert_eq!(
                &spare.cov[plen..2 * plen],
                &a.cov[plen..2 * plen],
                "{cov:?}"
            );
        }
    }

    #[test]
    fn blend_is_a_convex_combination() {
        let cov = CovarianceType::Diagonal;
        let (p, r) = random_case(4, 400);
        let a = stats_of(cov, &p[..600], &r[..400], 3, &[0.0; 6]);
        let b = stats_of(cov, &p[600..], &r[400..], 3, &[0.0; 6]);
        // Equal halves blended with η = 1/2 are the merge of the two.
        let mut x = a.clone();
        x.blend(&b, 0.5);
        assert_close(&x, &a.merge(&b));
        // η = 1 forgets the old statistics entirely.
        let mut y = a.clone();
        y.blend(&b, 1.0);
        assert_close(
            &MixtureStats {
                points: b.points,
                ..y.clone()
            },
            &MixtureStats {
                points: b.points,
                ..b.clone()
            },
        );
    }

    /// `n` random points in [−3, 3)^d, K random centres in [0, 1)^d, and
    /// random responsibilities in [0, 1), entry `e` (of n·K, row by row)
    /// set to exactly 0 where `zero(e, r)` says so.
    fn random_inputs(
        rng: &mut impl Rng,
        n: usize,
        d: usize,
        k: usize,
        zero: impl Fn(usize, f64) -> bool,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let points = (0..n * d)
            .map(|_| rng.random::<f64>() * 6.0 - 3.0)
            .collect();
        let centres = (0..k * d).map(|_| rng.random::<f64>()).collect();
        let resp = (0..n * k)
            .map(|e| {
                let r: f64 = rng.random();
                if zero(e, r) {
                    0.0
                } else {
                    r
                }
            })
            .collect();
        (points, centres, resp)
    }

    /// The bits of `n`, `u` and the lower triangles of the K blocks of
    /// `q` (d × d): all that the wide kernel sums.
    fn wide_bits(n: &[f64], u: &[f64], q: &[f64], k: usize, d: usize) -> Vec<u64> {
        let lower = (0..k)
            .flat_map(|j| (0..d).flat_map(move |a| (0..=a).map(move |b| j * d * d + a * d + b)));
        n.iter()
            .chain(u)
            .chain(lower.map(|i| &q[i]))
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn every_kernel_gives_the_same_bits() {
        // The selected kernel (AVX-512 or AVX2 where the CPU has it), the
        // AVX2 one, the plain one,
        // and for d = 8 the generic-dimension one, on random points with
        // some responsibilities exactly 0 (skipped).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        for (d, k) in [(2, 3), (8, 2), (11, 3), (32, 4)] {
            let (points, centres, resp) = random_inputs(&mut rng, 157, d, k, |_, r| r < 0.3);
            let cov = CovarianceType::Full;
            let mut selected = BatchSums::default();
            selected.accumulate(cov, d, &points, &resp, &centres);
            let mut plain = BatchSums::default();
            plain.accumulate_any(cov, d, &points, &resp, &centres);
            let bits = |s: &BatchSums| wide_bits(&s.n, &s.u, &s.q, k, d);
            assert_eq!(bits(&selected), bits(&plain), "d = {d}");
            // Where the selected kernel is AVX-512, the AVX2 one too.
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                let mut avx2 = BatchSums::default();
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { avx2.accumulate_avx2(cov, d, &points, &resp, &centres) };
                assert_eq!(bits(&avx2), bits(&plain), "d = {d}, AVX2");
            }
            if d == 8 {
                let mut generic = plain.clone();
                generic.n.fill(0.0);
                generic.u.fill(0.0);
                generic.q.fill(0.0);
                generic.acc_full::<0>(d, k, &points, &resp, &centres);
                assert_eq!(bits(&generic), bits(&plain), "d = {d}, generic");
            }
        }
    }

    #[test]
    fn wide_sums_are_the_textbook_loop_to_the_bit() {
        // Several member chunks, components that take no point, every
        // responsibility of some points 0: the wide kernel against one
        // rank-1 update per point, entry by entry, in point order.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (d, k) = (32, 5);
        let (points, centres, resp) =
            random_inputs(&mut rng, 2500, d, k, |e, r| e % k == 3 || r < 0.6);
        let mut got = BatchSums::default();
        got.accumulate(CovarianceType::Full, d, &points, &resp, &centres);
        let (mut n_want, mut u_want, mut q_want) =
            (vec![0.0; k], vec![0.0; k * d], vec![0.0; k * d * d]);
        for j in 0..k {
            let c = &centres[j * d..(j + 1) * d];
            for (i, x) in points.chunks_exact(d).enumerate() {
                let r = resp[i * k + j];
                if r == 0.0 {
                    continue;
                }
                n_want[j] += r;
                let z: Vec<f64> = (0..d).map(|a| x[a] - c[a]).collect();
                let rz: Vec<f64> = z.iter().map(|v| r * v).collect();
                for a in 0..d {
                    u_want[j * d + a] += rz[a];
                    for b in 0..=a {
                        q_want[j * d * d + a * d + b] += rz[b] * z[a];
                    }
                }
            }
        }
        assert_eq!(
            wide_bits(&got.n, &got.u, &got.q, k, d),
            wide_bits(&n_want, &u_want, &q_want, k, d)
        );
        assert_eq!(got.n[3], 0.0);
    }

    #[test]
    fn huge_offsets_keep_their_precision() {
        // Unit-variance points around 1e9: accumulated around a centre close
        // to them, the variance comes out right.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 1000;
        let pts: Vec<f64> = (0..n)
            .map(|_| 1e9 + rng.random::<f64>() * 2.0 - 1.0)
            .collect();
        let resp = vec![1.0; n];
        let mean = pts.iter().map(|x| x - 1e9).sum::<f64>() / n as f64;
        let var = pts.iter().map(|x| (x - 1e9 - mean).powi(2)).sum::<f64>() / n as f64;
        let s = stats_of(CovarianceType::Full, &pts, &resp, 1, &[1e9 + 0.3]);
        assert!((s.cov[0] - var).abs() < 1e-6 * var, "{} vs {var}", s.cov[0]);
    }
}
