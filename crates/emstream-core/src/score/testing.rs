//! Helpers of the scoring tests, shared with the `emstream` crate's
//! tests: reference mixtures, contaminated streams and readers of score
//! lines. Built for tests only (the `test-support` feature).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{CovarianceType, GaussianMixture, MixtureParams};

/// A 2-D mixture of two well separated components, weights 0.4 and 0.6.
pub fn two_d() -> GaussianMixture {
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 2,
        weights: vec![0.4, 0.6],
        means: vec![1.0, 1.0, 7.0, 7.0],
        covariances: vec![3.0, 2.0, 2.0, 3.0, 2.0, -1.0, -1.0, 2.0],
    })
    .unwrap()
}

/// A point at Mahalanobis distance at least `sigmas` from every
/// component of `m`.
pub fn outlier(m: &GaussianMixture, rng: &mut ChaCha8Rng, sigmas: f64) -> [f64; 2] {
    loop {
        let j = usize::from(rng.random::<f64>() < m.weights()[1]);
        let c = m.covariance_matrix(j);
        // Cholesky of the 2x2 covariance.
        let l00 = c[0].sqrt();
        let l10 = c[2] / l00;
        let l11 = (c[3] - l10 * l10).sqrt();
        let a: f64 = rng.random::<f64>() * std::f64::consts::TAU;
        let (u0, u1) = (sigmas * a.cos(), sigmas * a.sin());
        let mu = m.mean(j);
        let x = [mu[0] + l00 * u0, mu[1] + l10 * u0 + l11 * u1];
        let far = (0..2).all(|i| {
            let c = m.covariance_matrix(i);
            let mu = m.mean(i);
            let (dx, dy) = (x[0] - mu[0], x[1] - mu[1]);
            let det = c[0] * c[3] - c[1] * c[2];
            (c[3] * dx * dx - 2.0 * c[1] * dx * dy + c[0] * dy * dy) / det >= sigmas * sigmas * 0.99
        });
        if far {
            return x;
        }
    }
}

/// Draws `n` points of which 1 % are outliers 10 sigma out; returns the
/// points and which are outliers.
pub fn contaminated(m: &GaussianMixture, n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pts = Vec::with_capacity(2 * n);
    let mut is_out = Vec::with_capacity(n);
    for _ in 0..n {
        if rng.random::<f64>() < 0.01 {
            pts.extend_from_slice(&outlier(m, &mut rng, 10.0));
            is_out.push(true);
        } else {
            pts.extend(m.sample(&mut rng, 1));
            is_out.push(false);
        }
    }
    (pts, is_out)
}

/// The `anomaly` flags (last CSV field) of score lines.
pub fn flags(text: &str) -> Vec<bool> {
    text.lines()
        .map(|l| l.rsplit(',').next().unwrap() == "1")
        .collect()
}

/// The fraction of outliers flagged and the fraction of inliers
/// flagged (false alarms).
pub fn check_rates(flagged: &[bool], is_out: &[bool]) -> (f64, f64) {
    let outliers = is_out.iter().filter(|&&o| o).count();
    let caught = flagged
        .iter()
        .zip(is_out)
        .filter(|(f, o)| **f && **o)
        .count();
    let false_alarms = flagged
        .iter()
        .zip(is_out)
        .filter(|(f, o)| **f && !**o)
        .count();
    let inliers = is_out.len() - outliers;
    (
        caught as f64 / outliers as f64,
        false_alarms as f64 / inliers as f64,
    )
}

/// The number after `"key":` on line `line` of `text`, parsed by Rust
/// (serde_json's default float parsing is not always correctly rounded).
pub fn json_number(text: &str, line: usize, key: &str) -> f64 {
    let l = text.lines().nth(line).unwrap();
    let rest = l.split(&format!("\"{key}\":")).nth(1).unwrap();
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}
