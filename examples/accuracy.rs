//! Streams reference mixtures through the learner and prints how close the
//! result is to the truth (held-out log-likelihood gap, time).
use std::time::Instant;

use emstream::model::{testdata, CovarianceType, GaussianMixture, Params, StepwiseEm};
use rand::SeedableRng;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let cases: Vec<(&str, GaussianMixture)> = vec![
        ("two-clusters", testdata::two_clusters()),
        ("overlapping", testdata::overlapping()),
        ("three-1d", testdata::three_1d()),
        ("eight-d-full", testdata::eight_d(CovarianceType::Full, 3)),
        (
            "eight-d-diag",
            testdata::eight_d(CovarianceType::Diagonal, 3),
        ),
        (
            "eight-d-sph",
            testdata::eight_d(CovarianceType::Spherical, 3),
        ),
    ];
    for (name, truth) in cases {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let train = truth.sample(&mut rng, n);
        let test = truth.sample(&mut rng, 100_000);
        let params = Params {
            components: truth.n_components(),
            covariance: truth.covariance_type(),
            ..Params::default()
        }
        .check()
        .unwrap();
        let t = Instant::now();
        let mut em = StepwiseEm::new(params, truth.dim());
        em.observe(&train, None).unwrap();
        em.flush(None).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let m = em.mixture().unwrap();
        let gap = truth.mean_log_prob(&test) - m.mean_log_prob(&test);
        println!(
            "{name:14} gap {gap:+.5} nats/pt  {:.2} Mpts/s  reseeds {} repairs {}",
            n as f64 / secs / 1e6,
            em.counters().reseeds,
            em.counters().repairs
        );
    }
}
