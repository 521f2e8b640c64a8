//! Register-blocked inner loops for wide points (d beyond the dimensions
//! the density and statistics kernels are specialised for).
//!
//! Both kernels keep a small tile of results in registers over many
//! multiply-adds instead of reading and writing memory for each one:
//!
//! - [`solve_block`]: forward substitution `L y = x - μ` for [`LANES`]
//!   points side by side, [`SOLVE_ROWS`] rows of `L` at a time, so that
//!   `SOLVE_ROWS × LANES` independent running sums hide the latency of the
//!   adds (one row of 8 points at a time had 8 of them: about a third of
//!   the arithmetic units' throughput).
//! - [`rank_update`]: `Q += Σ_p z_p (r_p z_p)ᵀ` over a block of gathered
//!   points, a `ROWS × COLS` tile of `Q` at a time (a rank-k update rather
//!   than one rank-1 read-modify-write of all of `Q` per point), only the
//!   tiles that hold some of its lower triangle (`Q` is symmetric).
//!
//! **Same bits.** Every output number is computed by the same operations in
//! the same order as the one-point-at-a-time loops they replace: a running
//! sum still takes its terms in order of `b` (the substitution) or of the
//! points (the statistics), and nothing is fused into an FMA. The blocking
//! only changes which independent sums are interleaved. So the results are
//! bit-identical to the plain loops, on every instruction set the caller
//! is compiled for (the tests below hold both).
//!
//! The functions are `#[inline(always)]`: they are compiled inside the
//! AVX2 and plain entry points of their callers, with their target
//! features.

/// True when every number of `v` is finite. Chunk by chunk without a
/// branch per number inside a chunk, so that the test vectorises (a plain
/// `all` leaves at the first non-finite number and compares one number at
/// a time: about 2 % of the d = 32 learner, over K·d² statistics and
/// covariances per mini-batch).
pub(crate) fn all_finite(v: &[f64]) -> bool {
    let mut chunks = v.chunks_exact(32);
    for c in &mut chunks {
        if !c.iter().fold(true, |ok, x| ok & x.is_finite()) {
            return false;
        }
    }
    chunks.remainder().iter().all(|x| x.is_finite())
}

/// Numbers per piece of [`copy`] and [`extend`]: 1 KiB, below the size
/// from which glibc's `memcpy` copies with `rep movsb` (2 KiB times the
/// vector width over 16: 4 KiB with AVX2).
pub(crate) const PIECE: usize = 128;

/// `dst.copy_from_slice(src)` a piece of [`PIECE`] numbers at a time, so
/// that each piece takes the C library's vector loop. One call for a
/// batch of points (hundreds of KiB) is copied by `rep movsb`, whose speed
/// on some processors depends on where the heap happens to
/// place source and destination: with a change elsewhere that moved the
/// heap's layout, `memmove` went from 4.6 to 10.9 % of the d = 64
/// learner's samples (the recent-points reservoir's copy alone 7.9 %) and
/// the learner lost 10 %, which it got back with glibc's `rep movsb`
/// turned off (`GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=100000000`)
/// or with these pieces.
///
/// # Panics
///
/// If the lengths differ.
#[inline]
pub(crate) fn copy(dst: &mut [f64], src: &[f64]) {
    assert_eq!(dst.len(), src.len(), "copy between slices of other lengths");
    for (d, s) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        d.copy_from_slice(s);
    }
}

/// `v.extend_from_slice(src)` a piece at a time, as [`copy`].
#[inline]
pub(crate) fn extend(v: &mut Vec<f64>, src: &[f64]) {
    v.reserve(src.len());
    for s in src.chunks(PIECE) {
        v.extend_from_slice(s);
    }
}

/// Asks the CPU to bring `v` into its caches ahead of use (a hint: no
/// effect on any result, and nothing on other architectures). For points
/// read in an order the hardware prefetchers cannot guess.
#[inline(always)]
pub(crate) fn prefetch(v: &[f64]) {
    // Every 64 bytes from the first number, and the last number (the
    // slice need not start on a cache line).
    #[cfg(target_arch = "x86_64")]
    for at in (0..v.len()).step_by(8).chain(v.len().checked_sub(1)) {
        // SAFETY: a prefetch never faults and changes no memory; the
        // address is that of a live slice anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                v[at..].as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Points processed side by side by [`solve_block`] (four AVX2 vectors).
pub(crate) const LANES: usize = 16;

/// Rows of `L` taken at a time by [`solve_block`].
const SOLVE_ROWS: usize = 2;

/// Rows of a `Q` tile in [`rank_update`].
const ROWS: usize = 4;

/// Columns of a `Q` tile in [`rank_update`] (two AVX2 vectors).
const COLS: usize = 8;

/// Points gathered per component before one [`rank_update`].
pub(crate) const GATHER: usize = 16;

/// Four lanes of f64 handled as one value, so that running sums live in
/// registers (the compiler turns the lane loops into one vector operation,
/// or two of half width without AVX). Only separate multiplies and adds:
/// never fused, so every lane rounds the same way on every machine.
#[derive(Clone, Copy)]
struct V4([f64; 4]);

impl V4 {
    #[inline(always)]
    fn load(s: &[f64]) -> V4 {
        V4([s[0], s[1], s[2], s[3]])
    }

    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        s[..4].copy_from_slice(&self.0);
    }

    /// `self − a·y`, lane by lane. (Written out lane by lane rather than
    /// with `array::from_fn`, which the compiler stops inlining once the
    /// kernels are called from several places.)
    #[inline(always)]
    fn sub_mul(self, a: f64, y: V4) -> V4 {
        let (s, y) = (self.0, y.0);
        V4([
            s[0] - a * y[0],
            s[1] - a * y[1],
            s[2] - a * y[2],
            s[3] - a * y[3],
        ])
    }

    /// `self + y·a`, lane by lane.
    #[inline(always)]
    fn add_mul(self, y: V4, a: f64) -> V4 {
        let (s, y) = (self.0, y.0);
        V4([
            s[0] + y[0] * a,
            s[1] + y[1] * a,
            s[2] + y[2] * a,
            s[3] + y[3] * a,
        ])
    }

    /// `self − m`, lane by lane.
    #[inline(always)]
    fn sub(self, m: f64) -> V4 {
        let s = self.0;
        V4([s[0] - m, s[1] - m, s[2] - m, s[3] - m])
    }
}

/// Two [`V4`]: [`LANES`] points, or [`COLS`] entries of a row.
#[derive(Clone, Copy)]
struct V8(V4, V4);

impl V8 {
    #[inline(always)]
    fn load(s: &[f64]) -> V8 {
        V8(V4::load(&s[..4]), V4::load(&s[4..8]))
    }

    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        self.0.store(&mut s[..4]);
        self.1.store(&mut s[4..8]);
    }

    #[inline(always)]
    fn sub_mul(self, a: f64, y: V8) -> V8 {
        V8(self.0.sub_mul(a, y.0), self.1.sub_mul(a, y.1))
    }

    #[inline(always)]
    fn add_mul(self, y: V8, a: f64) -> V8 {
        V8(self.0.add_mul(y.0, a), self.1.add_mul(y.1, a))
    }

    #[inline(always)]
    fn sub(self, m: f64) -> V8 {
        V8(self.0.sub(m), self.1.sub(m))
    }
}

/// Two [`V8`]: [`LANES`] points.
#[derive(Clone, Copy)]
struct V16(V8, V8);

impl V16 {
    #[inline(always)]
    fn load(s: &[f64]) -> V16 {
        V16(V8::load(&s[..8]), V8::load(&s[8..16]))
    }

    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        self.0.store(&mut s[..8]);
        self.1.store(&mut s[8..16]);
    }

    #[inline(always)]
    fn sub_mul(self, a: f64, y: V16) -> V16 {
        V16(self.0.sub_mul(a, y.0), self.1.sub_mul(a, y.1))
    }

    #[inline(always)]
    fn sub(self, m: f64) -> V16 {
        V16(self.0.sub(m), self.1.sub(m))
    }
}

/// The inner loop of the wide Cholesky factorisation
/// (`covariance::cholesky_by_columns`): for [`LANES`] rows `i` side by
/// side, `acc_i −= Σ_{k<j} l_ik l_jk` and `next_i −= Σ_{k<j} l_ik l_{j+1,k}`
/// in order of `k`, where `lt` holds the factor transposed (`l_ik` at
/// `k · stride + i`, `at` = `i0` the first row) and `lj`, `ln` are rows
/// `j` and `j + 1` of the factor. In [`V16`] values, so that both sums
/// stay in registers (plain arrays of 16 were split into odd pieces by
/// the compiler).
#[inline(always)]
pub(crate) fn cholesky_pair_tile(
    lt: &[f64],
    stride: usize,
    at: usize,
    lj: &[f64],
    ln: &[f64],
    acc: &mut [f64; LANES],
    next: &mut [f64; LANES],
) {
    let (mut a, mut n) = (V16::load(acc), V16::load(next));
    for (k, (&ljk, &lnk)) in lj.iter().zip(ln).enumerate() {
        let from = k * stride + at;
        let lk = V16::load(&lt[from..from + LANES]);
        a = a.sub_mul(ljk, lk);
        n = n.sub_mul(lnk, lk);
    }
    a.store(acc);
    n.store(next);
}

/// Forward substitution for [`LANES`] points at once; returns each point's
/// squared Mahalanobis distance `Σ_a y_a²`.
///
/// `l` is the lower Cholesky factor (d×d row-major), `inv` the reciprocals
/// of its diagonal, `mu` the mean, `xt` the points transposed (`d` rows of
/// [`LANES`]), `y` scratch of the same shape. Row `a` computes
/// `y_a = ((x_a − μ_a) − Σ_{b<a} L_ab y_b) · inv_a`, the sum in order of
/// `b`, exactly like one row at a time.
#[inline(always)]
pub(crate) fn solve_block(
    d: usize,
    l: &[f64],
    inv: &[f64],
    mu: &[f64],
    xt: &[f64],
    y: &mut [f64],
) -> [f64; LANES] {
    let mut q = [0.0; LANES];
    solve_rows(d, 0..d, l, inv, mu, xt, y, &mut q);
    q
}

/// [`solve_block`] for rows `rows` of the substitution only, rows before
/// them already solved in `y`; adds their `y_a²` to `q`. Solving `0..r`
/// then `r..d` gives the same bits as `0..d`: each row's sum and `q` take
/// their terms in the same order however the rows are cut.
///
/// Two rows at a time over 16 points: 8 vector sums in flight in the long
/// loop over `b`, and the serial step between the two rows (`y_a` feeds
/// row `a + 1`) is short and shared by 16 points.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve_rows(
    d: usize,
    rows: std::ops::Range<usize>,
    l: &[f64],
    inv: &[f64],
    mu: &[f64],
    xt: &[f64],
    y: &mut [f64],
    q: &mut [f64; LANES],
) {
    debug_assert!(l.len() >= d * d && inv.len() >= d && mu.len() >= d);
    debug_assert!(xt.len() >= d * LANES && y.len() >= d * LANES && rows.end <= d);
    let mut a0 = rows.start;
    while a0 + SOLVE_ROWS <= rows.end {
        let (mut s0, mut s1) = (centred_row(xt, mu, a0), centred_row(xt, mu, a0 + 1));
        let (done, rest) = y.split_at_mut(a0 * LANES);
        let row0 = &l[a0 * d..a0 * d + a0];
        let row1 = &l[(a0 + 1) * d..(a0 + 1) * d + a0 + 1];
        for (yb, (&l0, &l1)) in done.chunks_exact(LANES).zip(row0.iter().zip(row1)) {
            let yb = V16::load(yb);
            s0 = s0.sub_mul(l0, yb);
            s1 = s1.sub_mul(l1, yb);
        }
        let (y0, y1) = rest.split_at_mut(LANES);
        finish(s0, inv[a0], y0, q);
        s1 = s1.sub_mul(row1[a0], V16::load(y0));
        finish(s1, inv[a0 + 1], &mut y1[..LANES], q);
        a0 += SOLVE_ROWS;
    }
    if a0 < rows.end {
        let mut s = centred_row(xt, mu, a0);
        let (done, rest) = y.split_at_mut(a0 * LANES);
        for (yb, &lab) in done.chunks_exact(LANES).zip(&l[a0 * d..a0 * d + a0]) {
            s = s.sub_mul(lab, V16::load(yb));
        }
        finish(s, inv[a0], &mut rest[..LANES], q);
    }
}

/// `x_a − μ_a` for row `a` of [`LANES`] points.
#[inline(always)]
fn centred_row(xt: &[f64], mu: &[f64], a: usize) -> V16 {
    V16::load(&xt[a * LANES..(a + 1) * LANES]).sub(mu[a])
}

/// `y_a = s · inv_a`, stored in `ya`, and `q += y_a²`.
#[inline(always)]
fn finish(s: V16, inv_a: f64, ya: &mut [f64], q: &mut [f64; LANES]) {
    let mut v = [0.0; LANES];
    s.store(&mut v);
    let ya = &mut ya[..LANES];
    for p in 0..LANES {
        let t = v[p] * inv_a;
        ya[p] = t;
        q[p] += t * t;
    }
}

/// `q[a][b] += Σ_p rz_p[b] · z_p[a]` for `b ≤ a` (the lower triangle, `q`
/// being symmetric) over the first `m` rows of `z` and `rz` (each row d
/// numbers), the sum of every entry taken in order of the points, exactly
/// like one rank-1 update per point. Entries above the diagonal are
/// partly updated (the tiles that cross it) and must not be read.
#[inline(always)]
pub(crate) fn rank_update(d: usize, q: &mut [f64], z: &[f64], rz: &[f64], m: usize) {
    debug_assert!(q.len() >= d * d && z.len() >= m * d && rz.len() >= m * d);
    let (z, rz) = (&z[..m * d], &rz[..m * d]);
    let mut a0 = 0;
    while a0 + ROWS <= d {
        let mut b0 = 0;
        // Tiles holding some of the lower triangle: b0 <= the last row.
        while b0 + COLS <= d && b0 < a0 + ROWS {
            let at = |r: usize| (a0 + r) * d + b0;
            let mut t0 = V8::load(&q[at(0)..at(0) + COLS]);
            let mut t1 = V8::load(&q[at(1)..at(1) + COLS]);
            let mut t2 = V8::load(&q[at(2)..at(2) + COLS]);
            let mut t3 = V8::load(&q[at(3)..at(3) + COLS]);
            for (zp, rzp) in z.chunks_exact(d).zip(rz.chunks_exact(d)) {
                let w = V8::load(&rzp[b0..b0 + COLS]);
                let za = &zp[a0..a0 + ROWS];
                t0 = t0.add_mul(w, za[0]);
                t1 = t1.add_mul(w, za[1]);
                t2 = t2.add_mul(w, za[2]);
                t3 = t3.add_mul(w, za[3]);
            }
            t0.store(&mut q[at(0)..at(0) + COLS]);
            t1.store(&mut q[at(1)..at(1) + COLS]);
            t2.store(&mut q[at(2)..at(2) + COLS]);
            t3.store(&mut q[at(3)..at(3) + COLS]);
            b0 += COLS;
        }
        for a in a0..a0 + ROWS {
            rank_update_entries(d, q, z, rz, a, b0);
        }
        a0 += ROWS;
    }
    for a in a0..d {
        rank_update_entries(d, q, z, rz, a, 0);
    }
}

/// [`rank_update`] for entries `b0..=a` of row `a`, one at a time.
#[inline(always)]
fn rank_update_entries(d: usize, q: &mut [f64], z: &[f64], rz: &[f64], a: usize, b0: usize) {
    for b in b0..=a {
        let mut v = q[a * d + b];
        for (zp, rzp) in z.chunks_exact(d).zip(rz.chunks_exact(d)) {
            v += rzp[b] * zp[a];
        }
        q[a * d + b] = v;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_finite_finds_any_non_finite_number_anywhere() {
        for n in [0, 1, 31, 32, 33, 64, 100] {
            let v = vec![1.5; n];
            assert!(all_finite(&v), "{n}");
            for at in 0..n {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let mut w = v.clone();
                    w[at] = bad;
                    assert!(!all_finite(&w), "{n} {at} {bad}");
                }
            }
        }
        assert!(all_finite(&[
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE / 2.0,
            -0.0
        ]));
    }

    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn copies_in_pieces_are_whole_copies() {
        for n in [0, 1, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE + 17] {
            let src: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 3.0).collect();
            let mut dst = vec![f64::NAN; n];
            copy(&mut dst, &src);
            assert_eq!(dst, src);
            let mut v = vec![7.0; 3];
            extend(&mut v, &src);
            assert_eq!(v[..3], [7.0; 3]);
            assert_eq!(v[3..], src[..]);
        }
    }

    fn random(rng: &mut impl Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.random::<f64>() * 4.0 - 2.0).collect()
    }

    /// The loop [`solve_block`] replaces: one row at a time.
    fn solve_by_rows(d: usize, l: &[f64], inv: &[f64], mu: &[f64], xt: &[f64]) -> [f64; LANES] {
        let mut y = vec![0.0; d * LANES];
        let mut q = [0.0; LANES];
        for a in 0..d {
            let mut s = [0.0; LANES];
            for p in 0..LANES {
                s[p] = xt[a * LANES + p] - mu[a];
            }
            for b in 0..a {
                for p in 0..LANES {
                    s[p] -= l[a * d + b] * y[b * LANES + p];
                }
            }
            for p in 0..LANES {
                let v = s[p] * inv[a];
                y[a * LANES + p] = v;
                q[p] += v * v;
            }
        }
        q
    }

    #[test]
    fn blocked_substitution_gives_the_same_bits_as_row_by_row() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for d in [1, 3, 4, 7, 8, 13, 32, 37] {
            let mut l = random(&mut rng, d * d);
            for a in 0..d {
                l[a * d + a] = 1.0 + rng.random::<f64>();
            }
            let inv: Vec<f64> = (0..d).map(|a| 1.0 / l[a * d + a]).collect();
            let mu = random(&mut rng, d);
            let xt = random(&mut rng, d * LANES);
            let mut y = vec![0.0; d * LANES];
            let got = solve_block(d, &l, &inv, &mu, &xt, &mut y);
            let want = solve_by_rows(d, &l, &inv, &mu, &xt);
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "d = {d}");
            // The rows cut anywhere, odd or even, as the pruned densities do.
            for cut in [1, 2, 3, d / 2, d - 1] {
                let cut = cut.min(d);
                let mut q = [0.0; LANES];
                solve_rows(d, 0..cut, &l, &inv, &mu, &xt, &mut y, &mut q);
                solve_rows(d, cut..d, &l, &inv, &mu, &xt, &mut y, &mut q);
                assert_eq!(
                    q.map(f64::to_bits),
                    want.map(f64::to_bits),
                    "d = {d}, cut {cut}"
                );
            }
        }
    }

    #[test]
    fn rank_update_gives_the_same_bits_as_rank_one_updates() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for d in [1, 5, 8, 12, 19, 32, 37] {
            for m in [0, 1, 7, GATHER] {
                let z = random(&mut rng, m * d);
                let rz = random(&mut rng, m * d);
                let start = random(&mut rng, d * d);
                let mut got = start.clone();
                rank_update(d, &mut got, &z, &rz, m);
                let mut want = start;
                for p in 0..m {
                    for a in 0..d {
                        for b in 0..d {
                            want[a * d + b] += rz[p * d + b] * z[p * d + a];
                        }
                    }
                }
                // The lower triangle, row by row.
                let bits = |v: &[f64]| {
                    (0..d)
                        .flat_map(|a| (0..=a).map(move |b| (a, b)))
                        .map(|(a, b)| v[a * d + b].to_bits())
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(&got), bits(&want), "d = {d}, m = {m}");
            }
        }
    }
}
