use emstream::model::{testdata, CovarianceType, Params, StepwiseEm};
use rand::SeedableRng;
use std::time::Instant;
fn main() {
    for (name, truth) in vec![
        ("2d-k2", testdata::two_clusters()),
        ("8d-k6", testdata::eight_d(CovarianceType::Full, 3)),
        ("32d-k10", testdata::random_mixture(32, 10, 2.0, 1)),
    ]
    .into_iter()
    .filter(|(n, _)| std::env::var("ONLY").map_or(true, |o| *n == o))
    .collect::<Vec<_>>()
    {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = if truth.dim() > 8 { 200_000 } else { 2_000_000 };
        let data = truth.sample(&mut rng, n);
        let p = Params {
            components: truth.n_components(),
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(p, truth.dim());
        em.observe(&data[..5000 * truth.dim()], None).unwrap();
        let t = Instant::now();
        em.observe(&data[5000 * truth.dim()..], None).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("{name}: {:.2} M pts/s", (n - 5000) as f64 / s / 1e6);
    }
}
