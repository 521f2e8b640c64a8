//! Streams reference mixtures through the learner and prints how close the
//! result is to the truth (held-out log-likelihood gap, time).
use std::time::Instant;

use emstream_core::model::{testdata, CovarianceType, GaussianMixture, Params, StepwiseEm};
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
        ("r5-k4-sep1.5", testdata::random_mixture(5, 4, 1.5, 1)),
        ("r16-k10-sep2", testdata::random_mixture(16, 10, 2.0, 2)),
        ("r10-k8-sep1", testdata::random_mixture(10, 8, 1.0, 3)),
        ("r32-k10-sep2", testdata::random_mixture(32, 10, 2.0, 4)),
        ("r8-k20-sep3", testdata::random_mixture(8, 20, 3.0, 5)),
        (
            "r10-k8-diag",
            testdata::restrict(
                &testdata::random_mixture(10, 8, 1.0, 3),
                CovarianceType::Diagonal,
            ),
        ),
        (
            "r8-k20-sph",
            testdata::restrict(
                &testdata::random_mixture(8, 20, 3.0, 5),
                CovarianceType::Spherical,
            ),
        ),
    ];
    let only = std::env::var("ONLY").unwrap_or_default();
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|(n, _)| only.is_empty() || n.contains(&only))
        .collect();
    for (name, truth) in cases {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let train = truth.sample(&mut rng, n);
        let test = truth.sample(&mut rng, 100_000);
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
        let base = Params::default();
        let params = Params {
            components: emstream_core::model::ComponentCount::Fixed(truth.n_components()),
            covariance: truth.covariance_type(),
            step_decay: env("ALPHA").unwrap_or(base.step_decay),
            step_offset: env("T0").unwrap_or(base.step_offset),
            batch_size: env("BATCH").map(|v| v as usize).unwrap_or(base.batch_size),
            warmup: env("WARMUP").map(|v| v as usize).unwrap_or(base.warmup),
            ..base
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
        let mle_gap = m.n_free_params() as f64 / (2.0 * n as f64);
        println!(
            "{name:14} gap {gap:+.5} nats/pt (batch MLE ~{mle_gap:.5})  {:.2} Mpts/s  reseeds {} repairs {}",
            n as f64 / secs / 1e6,
            em.counters().reseeds,
            em.counters().repairs
        );
    }
}
