//! Reference mixtures: the EM write-up's worked examples and harder ones,
//! used by the tests, the benchmarks and the examples.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{CovarianceType, GaussianMixture, MixtureParams};

/// The EM write-up's first example: two well separated 2-D clusters.
pub fn two_clusters() -> GaussianMixture {
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 2,
        weights: vec![0.5, 0.5],
        means: vec![1.0, 1.0, 7.0, 7.0],
        covariances: vec![3.0, 2.0, 2.0, 3.0, 2.0, -1.0, -1.0, 2.0],
    })
    .unwrap()
}

/// Two heavily overlapping 2-D clusters.
pub fn overlapping() -> GaussianMixture {
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 2,
        weights: vec![0.5, 0.5],
        means: vec![0.0, 0.0, 2.0, 0.0],
        covariances: vec![1.0, 0.7, 0.7, 1.0, 0.5, 0.4, 0.4, 0.5],
    })
    .unwrap()
}

/// The EM write-up's second example: three 1-D components.
pub fn three_1d() -> GaussianMixture {
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 1,
        weights: vec![1.0 / 3.0; 3],
        means: vec![-5.0, 5.0, 0.0],
        covariances: vec![1.2, 1.8, 1.6],
    })
    .unwrap()
}

/// A random rotation of `d` dimensions (Gram-Schmidt of a Gaussian matrix).
fn rotation(d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut q: Vec<f64> = (0..d * d).map(|_| StandardNormal.sample(rng)).collect();
    for i in 0..d {
        for j in 0..i {
            let dot: f64 = (0..d).map(|a| q[i * d + a] * q[j * d + a]).sum();
            for a in 0..d {
                q[i * d + a] -= dot * q[j * d + a];
            }
        }
        let norm: f64 = (0..d).map(|a| q[i * d + a].powi(2)).sum::<f64>().sqrt();
        for a in 0..d {
            q[i * d + a] /= norm;
        }
    }
    q
}

/// An 8-D, six-component mixture with weights 0.4 down to 0.04 and random
/// orientations and axis lengths, of the given covariance type.
pub fn eight_d(cov: CovarianceType, seed: u64) -> GaussianMixture {
    let d = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let weights = vec![0.4, 0.2, 0.14, 0.12, 0.1, 0.04];
    let mut means = Vec::new();
    let mut covs = Vec::new();
    for j in 0..6 {
        for _ in 0..d {
            let z: f64 = StandardNormal.sample(&mut rng);
            means.push(6.0 * z);
        }
        let axes: Vec<f64> = (0..d)
            .map(|a| 0.3 + 1.7 * ((a * 7 + j * 3) % d) as f64 / d as f64)
            .collect();
        match cov {
            CovarianceType::Full => {
                let r = rotation(d, &mut rng);
                for a in 0..d {
                    for b in 0..d {
                        covs.push(
                            (0..d)
                                .map(|c| r[a * d + c] * axes[c] * r[b * d + c])
                                .sum::<f64>(),
                        );
                    }
                }
            }
            CovarianceType::Diagonal => covs.extend_from_slice(&axes),
            CovarianceType::Spherical => covs.push(axes[j % d]),
        }
    }
    GaussianMixture::new(MixtureParams {
        covariance: cov,
        dim: d,
        weights,
        means,
        covariances: covs,
    })
    .unwrap()
}

/// The same mixture restricted to the covariance structure `cov` (keeps
/// the diagonal, or its mean), for the diag and spherical tests.
pub fn restrict(m: &GaussianMixture, cov: CovarianceType) -> GaussianMixture {
    let d = m.dim();
    let mut covs = Vec::new();
    for j in 0..m.n_components() {
        let c = m.covariance_matrix(j);
        match cov {
            CovarianceType::Full => covs.extend_from_slice(&c),
            CovarianceType::Diagonal => covs.extend((0..d).map(|a| c[a * d + a])),
            CovarianceType::Spherical => {
                covs.push((0..d).map(|a| c[a * d + a]).sum::<f64>() / d as f64)
            }
        }
    }
    GaussianMixture::new(MixtureParams {
        covariance: cov,
        dim: d,
        weights: m.weights().to_vec(),
        means: m.means().to_vec(),
        covariances: covs,
    })
    .unwrap()
}

/// A random mixture like the harder judging streams: K components in d
/// dimensions, weights from 1 down to 1/K (normalised), means drawn with
/// spread `sep` (smaller means more overlap), random rotations with axis
/// variances uniform in [0.2, 1.5].
pub fn random_mixture(d: usize, k: usize, sep: f64, seed: u64) -> GaussianMixture {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let raw: Vec<f64> = (0..k).map(|j| 1.0 / (1.0 + j as f64)).collect();
    let total: f64 = raw.iter().sum();
    let weights = raw.iter().map(|w| w / total).collect();
    let mut means = Vec::with_capacity(k * d);
    let mut covs = Vec::with_capacity(k * d * d);
    for _ in 0..k {
        for _ in 0..d {
            let z: f64 = StandardNormal.sample(&mut rng);
            means.push(sep * z);
        }
        let r = rotation(d, &mut rng);
        let axes: Vec<f64> = (0..d).map(|_| rng.random_range(0.2..1.5)).collect();
        for a in 0..d {
            for b in 0..d {
                covs.push(
                    (0..d)
                        .map(|c| r[a * d + c] * axes[c] * r[b * d + c])
                        .sum::<f64>(),
                );
            }
        }
    }
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: d,
        weights,
        means,
        covariances: covs,
    })
    .unwrap()
}
