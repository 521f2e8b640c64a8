//! The variance floor of rounded values: a covariance kept at least
//! `diag(floor)` in the Loewner order ([`super::resolution`] says why).
//!
//! Diagonal and spherical covariances take the larger of each variance
//! and its floor (spherical: the largest floor, so that no axis is
//! sharper than its rounding). A full covariance `Σ` is left alone when
//! `Σ − F` (with `F = diag(floor)`) is positive semi-definite, which one
//! Cholesky factorisation tells; otherwise it becomes the nearest matrix
//! (in the Frobenius norm) that satisfies it, `F + (Σ − F)₊`, the negative
//! eigenvalues of `Σ − F` set to 0. So no eigenvalue of `Σ` falls below
//! the smallest floor of the dimensions it involves, and directions along
//! continuous dimensions keep their variance.

use super::covariance::{cholesky, CovarianceType};

/// Raises `block` (one component's covariance of `cov_type`) to at least
/// `diag(floor)`; for full covariance `l` is its Cholesky factor before
/// and after.
pub(crate) fn apply(cov_type: CovarianceType, floor: &[f64], block: &mut [f64], l: &mut [f64]) {
    match cov_type {
        CovarianceType::Diagonal => {
            for (v, f) in block.iter_mut().zip(floor) {
                *v = v.max(*f);
            }
        }
        CovarianceType::Spherical => {
            let most = floor.iter().fold(0.0f64, |m, f| m.max(*f));
            block[0] = block[0].max(most);
        }
        CovarianceType::Full => full(floor, block, l),
    }
}

/// The full-covariance case of [`apply`].
fn full(floor: &[f64], block: &mut [f64], l: &mut [f64]) {
    let d = floor.len();
    let mut s = block.to_vec();
    for a in 0..d {
        s[a * d + a] -= floor[a];
    }
    let mut scratch = vec![0.0; d * d];
    if cholesky(&s, d, &mut scratch) {
        return;
    }
    let (values, vectors) = symmetric_eigen(&s, d);
    for a in 0..d {
        for b in 0..=a {
            let mut v = 0.0;
            for (k, &lambda) in values.iter().enumerate() {
                if lambda > 0.0 {
                    v += vectors[a * d + k] * lambda * vectors[b * d + k];
                }
            }
            if a == b {
                v += floor[a];
            }
            block[a * d + b] = v;
            block[b * d + a] = v;
        }
    }
    if !cholesky(block, d, l) {
        // Rounding left it not quite definite: the floor added whole is.
        for a in 0..d {
            block[a * d + a] += floor[a];
        }
        cholesky(block, d, l);
    }
}

/// Eigenvalues and eigenvectors (the columns of the row-major `d × d`
/// matrix returned) of the symmetric row-major matrix `a`, by cyclic
/// Jacobi rotations.
fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..64 {
        let off: f64 = (0..d)
            .flat_map(|p| (0..p).map(move |q| (p, q)))
            .map(|(p, q)| m[p * d + q] * m[p * d + q])
            .sum();
        let total: f64 = m.iter().map(|x| x * x).sum();
        if off <= total * 1e-30 || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in (p + 1)..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * d + q] - m[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let mkp = m[k * d + p];
                    let mkq = m[k * d + q];
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let mpk = m[p * d + k];
                    let mqk = m[q * d + k];
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| m[i * d + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min_eigen(a: &[f64], d: usize) -> f64 {
        symmetric_eigen(a, d)
            .0
            .into_iter()
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn jacobi_finds_the_eigenvalues() {
        // [[2, 1], [1, 2]]: 1 and 3.
        let (mut vals, vecs) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        vals.sort_by(f64::total_cmp);
        assert!((vals[0] - 1.0).abs() < 1e-12 && (vals[1] - 3.0).abs() < 1e-12);
        let dot = vecs[0] * vecs[1] + vecs[2] * vecs[3];
        assert!(dot.abs() < 1e-12, "columns orthogonal");
    }

    #[test]
    fn a_spike_is_raised_to_the_floor_and_a_wide_covariance_is_untouched() {
        let f = 1.0 / 12.0;
        // Nearly singular along the diagonal direction.
        let mut block = vec![1.0, 0.999_999, 0.999_999, 1.0];
        let mut l = vec![0.0; 4];
        assert!(cholesky(&block, 2, &mut l));
        apply(CovarianceType::Full, &[f, f], &mut block, &mut l);
        assert!(min_eigen(&block, 2) >= f * (1.0 - 1e-9), "{block:?}");
        // The long axis keeps its variance.
        assert!((block[0] + block[1] - 1.999_999).abs() < 1e-9, "{block:?}");
        let mut check = vec![0.0; 4];
        assert!(cholesky(&block, 2, &mut check));
        assert_eq!(check, l);

        let wide = vec![0.5, 0.1, 0.1, 0.4];
        let mut block = wide.clone();
        assert!(cholesky(&block, 2, &mut l));
        apply(CovarianceType::Full, &[f, f], &mut block, &mut l);
        assert_eq!(block, wide);

        let mut diag = vec![1e-9, 0.5];
        apply(CovarianceType::Diagonal, &[f, 0.0], &mut diag, &mut []);
        assert_eq!(diag, vec![f, 0.5]);
        let mut sph = vec![1e-9];
        apply(CovarianceType::Spherical, &[0.0, f], &mut sph, &mut []);
        assert_eq!(sph, vec![f]);
    }

    #[test]
    fn a_continuous_dimension_keeps_its_spread_beside_a_rounded_one() {
        // Dimension 0 rounded (floor 1/12) and collapsed, 1 continuous.
        let f = 1.0 / 12.0;
        let mut block = vec![1e-10, 0.0, 0.0, 0.04];
        let mut l = vec![0.0; 4];
        assert!(cholesky(&block, 2, &mut l));
        apply(CovarianceType::Full, &[f, 0.0], &mut block, &mut l);
        assert!((block[0] - f).abs() < 1e-12 && (block[3] - 0.04).abs() < 1e-12);
    }
}
