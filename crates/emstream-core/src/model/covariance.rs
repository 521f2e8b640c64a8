//! The three covariance types and how each stores, factors and regularises
//! its covariance.
//!
//! Every type keeps, per component, its covariance parameters and a factor
//! from which log densities are computed without any explicit inverse or
//! determinant:
//!
//! - [`CovarianceType::Full`]: a d-by-d matrix and its lower Cholesky factor
//!   `L` (row-major), with `1 / L_ii` precomputed for forward substitution.
//! - [`CovarianceType::Diagonal`]: d variances and `1 / sqrt(var_i)`.
//! - [`CovarianceType::Spherical`]: one variance shared by every dimension.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::kernels;

/// Which covariance structure each mixture component has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CovarianceType {
    /// A full, general covariance matrix per component.
    #[default]
    #[serde(rename = "full")]
    Full,
    /// A diagonal covariance matrix per component (independent dimensions).
    #[serde(rename = "diag")]
    Diagonal,
    /// One variance per component, the same in every dimension.
    #[serde(rename = "spherical")]
    Spherical,
}

impl CovarianceType {
    /// The name used on the command line, in config files and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            CovarianceType::Full => "full",
            CovarianceType::Diagonal => "diag",
            CovarianceType::Spherical => "spherical",
        }
    }

    /// How many numbers one component's covariance parameters take in `d`
    /// dimensions: `d * d` (full, stored whole), `d` (diagonal) or 1.
    pub fn param_len(self, d: usize) -> usize {
        match self {
            CovarianceType::Full => d * d,
            CovarianceType::Diagonal => d,
            CovarianceType::Spherical => 1,
        }
    }

    /// Number of free parameters of one component's covariance in `d`
    /// dimensions (used for information criteria and tests).
    pub fn free_params(self, d: usize) -> usize {
        match self {
            CovarianceType::Full => d * (d + 1) / 2,
            CovarianceType::Diagonal => d,
            CovarianceType::Spherical => 1,
        }
    }
}

impl fmt::Display for CovarianceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error returned when a covariance type name is not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown covariance type {0:?}: use full, diag or spherical")]
pub struct UnknownCovarianceType(pub String);

impl FromStr for CovarianceType {
    type Err = UnknownCovarianceType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(CovarianceType::Full),
            "diag" | "diagonal" => Ok(CovarianceType::Diagonal),
            "spherical" => Ok(CovarianceType::Spherical),
            _ => Err(UnknownCovarianceType(s.to_string())),
        }
    }
}

/// Cholesky factorisation of a symmetric d-by-d matrix given row-major.
///
/// Writes the lower factor into `l` (row-major, upper part zeroed) and
/// returns `false` when the matrix is not numerically positive definite.
///
/// Column by column (left-looking): the entries below the diagonal of a
/// column are independent of each other, so their sums run side by side
/// over a transposed copy of the factor (vectorised) instead of one
/// dot product after another. Every entry is still
/// `(a_ij − Σ_{k<j} l_ik l_jk) / l_jj` with the sum in order of `k`: the
/// same bits as entry by entry. Only the lower triangle of `a` is read.
/// Small matrices (d ≤ [`SMALL_CHOLESKY`]) go entry by entry, without the
/// copy.
pub(crate) fn cholesky(a: &[f64], d: usize, l: &mut [f64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if d > SMALL_CHOLESKY && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { cholesky_avx512(a, d, l) };
    }
    #[cfg(target_arch = "x86_64")]
    if d > SMALL_CHOLESKY && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { cholesky_avx2(a, d, l) };
    }
    cholesky_any(a, d, l)
}

/// [`cholesky`] compiled with AVX2 enabled: wider vectors, the same
/// operations in the same order (separate multiplies and subtractions,
/// never fused), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn cholesky_avx2(a: &[f64], d: usize, l: &mut [f64]) -> bool {
    cholesky_any(a, d, l)
}

/// [`cholesky`] compiled with AVX-512F enabled: eight rows of a tile are
/// one register; the same operations, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn cholesky_avx512(a: &[f64], d: usize, l: &mut [f64]) -> bool {
    cholesky_any(a, d, l)
}

#[inline(always)]
fn cholesky_any(a: &[f64], d: usize, l: &mut [f64]) -> bool {
    debug_assert_eq!(a.len(), d * d);
    debug_assert_eq!(l.len(), d * d);
    l.iter_mut().for_each(|v| *v = 0.0);
    if d <= SMALL_CHOLESKY {
        return cholesky_by_entries(a, d, l);
    }
    // Taken out of the thread's slot and put back, so the loops stay in
    // this function (compiled with AVX2 by `cholesky_avx2`).
    let mut buf = CHOLESKY_SCRATCH.with(|c| c.take());
    let stride = d.next_multiple_of(COLUMN_CHUNK);
    let len = d * stride + TILE_ROWS + d;
    // Cleared on every call: the lanes of a chunk past the last row read
    // entries no column wrote (or the next row's), which must be finite
    // numbers, never an earlier call's leftovers (a NaN or a subnormal
    // would cost nothing in the result but could slow the arithmetic).
    buf.clear();
    buf.resize(len, 0.0);
    let (lt, diag) = buf.split_at_mut(d * stride + TILE_ROWS);
    let ok = cholesky_by_columns(a, d, l, lt, stride, diag);
    CHOLESKY_SCRATCH.with(|c| c.set(buf));
    ok
}

thread_local! {
    /// Per thread, reused by [`cholesky`]: the transposed factor (an
    /// allocation per call was a tenth of the M-step at d = 32).
    static CHOLESKY_SCRATCH: std::cell::Cell<Vec<f64>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// The transposed factor's rows are padded to a multiple of this many
/// numbers (one AVX-512 vector).
const COLUMN_CHUNK: usize = 8;

/// Rows of one tile of [`cholesky_by_columns`]: two chunks, for each of
/// the two columns computed together (four independent running sums).
const TILE_ROWS: usize = kernels::LANES;

/// The column-by-column [`cholesky`] for d > [`SMALL_CHOLESKY`], with
/// `lt` (zeroed, `d · stride + TILE_ROWS` numbers) for the transposed
/// factor, `lt[k · stride + i] = l_ik`, and `diag` (d numbers) for the
/// pivots' running sums.
///
/// Two columns `j` and `j + 1` at a time, [`TILE_ROWS`] rows below them at
/// a time: each entry's sum `a_ij − Σ_k l_ik l_jk` is held in a register
/// across the whole loop over `k` (in order of `k`), the two columns
/// sharing each load of the factor, so four sums are in flight instead of
/// one chain per chunk waiting on its own subtractions. Column `j + 1`
/// takes the terms `k < j` alongside column `j` and its last term, `k = j`,
/// once column `j` is done: still in order of `k`. The pivots' sums
/// `a_jj − Σ_k l_jk²` are kept for all rows and take each column's term
/// as soon as the column is done (in order of `k`, vectorised over the
/// rows) instead of one serial chain per pivot. So every entry is the same
/// operations in the same order as entry by entry: the same bits. Lanes
/// beyond row `d − 1`, and column `j + 1`'s lane of row `j + 1` (its
/// pivot), compute numbers that are never stored.
#[inline(always)]
fn cholesky_by_columns(
    a: &[f64],
    d: usize,
    l: &mut [f64],
    lt: &mut [f64],
    stride: usize,
    diag: &mut [f64],
) -> bool {
    debug_assert!(lt.len() >= d * stride + TILE_ROWS);
    debug_assert!(diag.len() >= d);
    for (i, s) in diag[..d].iter_mut().enumerate() {
        *s = a[i * d + i];
    }
    let mut j = 0;
    while j < d {
        // Column j's pivot: every earlier column's term is in.
        if !pivot_ok(diag[j], a[j * d + j]) {
            return false;
        }
        let ljj = diag[j].sqrt();
        l[j * d + j] = ljj;
        lt[j * stride + j] = ljj;
        // Column j + 1's pivot, known once row j + 1 of column j is. (The
        // last column, j = d − 1, has no rows below it: no pair.)
        let mut lkk = 0.0;
        let mut i0 = j + 1;
        while i0 < d {
            let m = (d - i0).min(TILE_ROWS);
            let mut acc = [0.0; TILE_ROWS];
            let mut next = [0.0; TILE_ROWS];
            for t in 0..m {
                acc[t] = a[(i0 + t) * d + j];
                next[t] = a[(i0 + t) * d + j + 1];
            }
            let (lj, ln) = (&l[j * d..j * d + j], &l[(j + 1) * d..(j + 1) * d + j]);
            kernels::cholesky_pair_tile(lt, stride, i0, lj, ln, &mut acc, &mut next);
            // All lanes divided (one vector operation), only rows < d kept.
            let mut x = [0.0; TILE_ROWS];
            for t in 0..TILE_ROWS {
                x[t] = acc[t] / ljj;
            }
            let at = j * stride + i0;
            lt[at..at + m].copy_from_slice(&x[..m]);
            for (t, &v) in x[..m].iter().enumerate() {
                l[(i0 + t) * d + j] = v;
            }
            if i0 == j + 1 {
                // Row j + 1 of column j is the first of this tile.
                let p = diag[j + 1] - x[0] * x[0];
                if !pivot_ok(p, a[(j + 1) * d + j + 1]) {
                    return false;
                }
                lkk = p.sqrt();
            }
            let lnj = l[(j + 1) * d + j];
            for t in 0..TILE_ROWS {
                x[t] = (next[t] - x[t] * lnj) / lkk;
            }
            let at = (j + 1) * stride + i0;
            let skip = usize::from(i0 == j + 1);
            lt[at + skip..at + m].copy_from_slice(&x[skip..m]);
            for (t, &v) in x[..m].iter().enumerate().skip(skip) {
                l[(i0 + t) * d + j + 1] = v;
            }
            i0 += TILE_ROWS;
        }
        // The pivots below take this column's (and the next one's) terms.
        let cols = if j + 1 < d { 2 } else { 1 };
        for c in j..j + cols {
            let from = c * stride;
            for (s, &v) in diag[c + 1..d].iter_mut().zip(&lt[from + c + 1..from + d]) {
                *s -= v * v;
            }
        }
        if cols == 2 {
            l[(j + 1) * d + j + 1] = lkk;
            lt[(j + 1) * stride + j + 1] = lkk;
        }
        j += cols;
    }
    true
}

/// Largest dimension [`cholesky`] factors entry by entry.
const SMALL_CHOLESKY: usize = 8;

/// [`cholesky`] entry by entry in row order (`l` zeroed by the caller).
fn cholesky_by_entries(a: &[f64], d: usize, l: &mut [f64]) -> bool {
    for i in 0..d {
        for j in 0..=i {
            let mut sum = a[i * d + j];
            for k in 0..j {
                sum -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if !pivot_ok(sum, a[i * d + i]) {
                    return false;
                }
                l[i * d + i] = sum.sqrt();
            } else {
                l[i * d + j] = sum / l[j * d + j];
            }
        }
    }
    true
}

/// Refuses pivots that are not clearly positive relative to the diagonal
/// entry: they mean the matrix has lost definiteness.
#[inline]
fn pivot_ok(pivot: f64, diagonal: f64) -> bool {
    pivot > diagonal.abs() * 1e-14 && pivot.is_finite()
}

/// Per-dimension regularisation: `reg` added to the diagonal, scaled to the
/// data so that it means the same thing at 1e-9 and at 1e9.
pub(crate) fn add_regularisation(cov_type: CovarianceType, cov: &mut [f64], d: usize, reg: &[f64]) {
    match cov_type {
        CovarianceType::Full => {
            for i in 0..d {
                cov[i * d + i] += reg[i];
            }
        }
        CovarianceType::Diagonal => {
            for i in 0..d {
                cov[i] += reg[i];
            }
        }
        CovarianceType::Spherical => {
            cov[0] += reg.iter().sum::<f64>() / d as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_with_a_used_scratch_buffer_is_entry_by_entry() {
        // A larger matrix first leaves numbers in the thread's buffer.
        for d in [20, 12, 9, 16] {
            let mut a = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..=i {
                    let v = ((i * 7 + j * 3) % 11) as f64 / 10.0 - 0.5;
                    a[i * d + j] = v;
                    a[j * d + i] = v;
                }
                a[i * d + i] = d as f64;
            }
            let (mut got, mut want) = (vec![1.0; d * d], vec![0.0; d * d]);
            assert!(cholesky(&a, d, &mut got));
            assert!(cholesky_by_entries(&a, d, &mut want));
            assert!(got
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn names_round_trip() {
        for t in [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ] {
            assert_eq!(t.name().parse::<CovarianceType>().unwrap(), t);
        }
        assert_eq!(
            "diagonal".parse::<CovarianceType>().unwrap(),
            CovarianceType::Diagonal
        );
        let err = "tied".parse::<CovarianceType>().unwrap_err();
        assert!(err.to_string().contains("full, diag or spherical"));
    }

    #[test]
    fn cholesky_reconstructs() {
        let a = [4.0, 2.0, 0.4, 2.0, 2.0, 0.5, 0.4, 0.5, 3.0];
        let mut l = [0.0; 9];
        assert!(cholesky(&a, 3, &mut l));
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((v - a[i * 3 + j]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn column_order_gives_the_same_bits_as_entry_by_entry() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for d in [1, 2, 5, 9, 16, 17, 31, 32, 33, 40, 64] {
            let g: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
            let mut a = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..d {
                    a[i * d + j] = (0..d).map(|t| g[i * d + t] * g[j * d + t]).sum::<f64>()
                        + if i == j { 0.1 } else { 0.0 };
                }
            }
            // The textbook loop, entry by entry in row order.
            let mut want = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..=i {
                    let mut sum = a[i * d + j];
                    for k in 0..j {
                        sum -= want[i * d + k] * want[j * d + k];
                    }
                    want[i * d + j] = if i == j {
                        sum.sqrt()
                    } else {
                        sum / want[j * d + j]
                    };
                }
            }
            let mut got = vec![0.0; d * d];
            assert!(cholesky(&a, d, &mut got));
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "d = {d}");
            // The plain build of the kernel, whichever one the CPU picks.
            let mut plain = vec![0.0; d * d];
            assert!(cholesky_any(&a, d, &mut plain));
            assert_eq!(bits(&plain), bits(&want), "d = {d}, plain");
            // And the AVX2 build where the CPU picks AVX-512.
            #[cfg(target_arch = "x86_64")]
            if d > SMALL_CHOLESKY && std::is_x86_feature_detected!("avx2") {
                let mut avx2 = vec![0.0; d * d];
                // SAFETY: the CPU supports AVX2, checked just above.
                assert!(unsafe { cholesky_avx2(&a, d, &mut avx2) });
                assert_eq!(bits(&avx2), bits(&want), "d = {d}, AVX2");
            }
        }
    }

    #[test]
    fn cholesky_refuses_singular() {
        let a = [1.0, 1.0, 1.0, 1.0];
        let mut l = [0.0; 4];
        assert!(!cholesky(&a, 2, &mut l));
        let nan = [f64::NAN, 0.0, 0.0, 1.0];
        assert!(!cholesky(&nan, 2, &mut l));
        // Wide, by columns: rank 8 of 20 fails at a pivot past the first
        // pair of columns, as entry by entry does; so does a NaN there.
        let d = 20;
        let g: Vec<f64> = (0..d * 8).map(|i| ((i * 37 % 23) as f64) - 11.0).collect();
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..8).map(|t| g[i * 8 + t] * g[j * 8 + t]).sum::<f64>();
            }
        }
        let mut l = vec![0.0; d * d];
        assert!(!cholesky_by_entries(&a, d, &mut l));
        assert!(!cholesky(&a, d, &mut l));
        for i in 0..d {
            a[i * d + i] += 1.0;
        }
        assert!(cholesky(&a, d, &mut l));
        a[13 * d + 13] = f64::NAN;
        assert!(!cholesky(&a, d, &mut l));
    }
}
