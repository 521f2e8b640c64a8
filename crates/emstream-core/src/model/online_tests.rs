//! Accuracy, robustness and determinism tests of the stepwise EM learner.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::model::{testdata, CovarianceType, MixtureParams};

/// Weight error allowed after matching components.
const WEIGHT_TOL: f64 = 0.01;
/// Mean error allowed (absolute, per coordinate).
const MEAN_TOL: f64 = 0.05;
/// Covariance error allowed (relative Frobenius norm).
const COV_TOL: f64 = 0.10;
/// Held-out log-likelihood gap to the true mixture allowed (nats/point).
const LL_TOL: f64 = 0.005;
/// Points streamed per accuracy case.
const N: usize = 200_000;

fn params(k: usize, cov: CovarianceType) -> CheckedParams {
    Params {
        components: crate::model::ComponentCount::Fixed(k),
        covariance: cov,
        ..Params::default()
    }
    .check()
    .unwrap()
}

/// Streams `n` points of `truth` through a learner in uneven slices.
fn learn(truth: &GaussianMixture, n: usize, seed: u64) -> StepwiseEm {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = truth.sample(&mut rng, n);
    let mut em = StepwiseEm::new(
        params(truth.n_components(), truth.covariance_type()),
        truth.dim(),
    );
    let d = truth.dim();
    for slice in data.chunks(777 * d) {
        em.observe(slice, None).unwrap();
    }
    em.flush(None).unwrap();
    em
}

fn frobenius_rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// The permutation of learned components that best matches the truth's
/// (smallest total squared distance between means).
fn best_match(truth: &GaussianMixture, got: &GaussianMixture) -> Vec<usize> {
    fn permutations(k: usize) -> Vec<Vec<usize>> {
        if k == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(k - 1) {
            for i in 0..k {
                let mut q = p.clone();
                q.insert(i, k - 1);
                out.push(q);
            }
        }
        out
    }
    let k = truth.n_components();
    let cost = |p: &Vec<usize>| -> f64 {
        (0..k)
            .map(|j| {
                truth
                    .mean(j)
                    .iter()
                    .zip(got.mean(p[j]))
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
            })
            .sum()
    };
    permutations(k)
        .into_iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .unwrap()
}

fn assert_recovers(name: &str, truth: &GaussianMixture, seed: u64) {
    let em = learn(truth, N, seed);
    let got = em.mixture().unwrap();
    let perm = best_match(truth, got);
    for j in 0..truth.n_components() {
        let g = perm[j];
        let dw = (truth.weights()[j] - got.weights()[g]).abs();
        assert!(
            dw < WEIGHT_TOL,
            "{name}: weight of component {j} off by {dw}"
        );
        for (a, b) in truth.mean(j).iter().zip(got.mean(g)) {
            assert!(
                (a - b).abs() < MEAN_TOL,
                "{name}: mean of component {j}: {a} vs {b}"
            );
        }
        let rel = frobenius_rel(&got.covariance_matrix(g), &truth.covariance_matrix(j));
        assert!(
            rel < COV_TOL,
            "{name}: covariance of component {j} off by {rel:.3} (relative Frobenius)"
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1000);
    let test = truth.sample(&mut rng, 50_000);
    let gap = truth.mean_log_prob(&test) - got.mean_log_prob(&test);
    assert!(
        gap.abs() < LL_TOL,
        "{name}: held-out log-likelihood gap {gap}"
    );
    assert_eq!(em.counters().points_seen, N as u64);
}

#[test]
fn recovers_two_separated_clusters() {
    assert_recovers("two clusters", &testdata::two_clusters(), 1);
}

#[test]
fn recovers_two_overlapping_clusters() {
    assert_recovers("overlapping", &testdata::overlapping(), 2);
}

#[test]
fn recovers_three_components_in_1d() {
    assert_recovers("1-D three", &testdata::three_1d(), 3);
}

#[test]
fn recovers_eight_d_six_components_full() {
    assert_recovers("8-D full", &testdata::eight_d(CovarianceType::Full, 3), 4);
}

#[test]
fn recovers_eight_d_six_components_diag() {
    assert_recovers(
        "8-D diag",
        &testdata::eight_d(CovarianceType::Diagonal, 3),
        5,
    );
}

#[test]
fn recovers_eight_d_six_components_spherical() {
    assert_recovers(
        "8-D spherical",
        &testdata::eight_d(CovarianceType::Spherical, 3),
        6,
    );
}

#[test]
fn recovers_write_up_examples_as_diag_and_spherical() {
    for cov in [CovarianceType::Diagonal, CovarianceType::Spherical] {
        assert_recovers(
            "2-D two clusters",
            &testdata::restrict(&testdata::two_clusters(), cov),
            7,
        );
        assert_recovers(
            "1-D three",
            &testdata::restrict(&testdata::three_1d(), cov),
            8,
        );
    }
}

/// Streams `data` and returns the model, or the error. The warm-up is 200
/// points, or all of a shorter `data` (an unfinished warm-up is not fitted
/// at the end of the stream).
fn run(data: &[f64], d: usize, k: usize, cov: CovarianceType) -> Result<StepwiseEm, LearnError> {
    let p = Params {
        components: crate::model::ComponentCount::Fixed(k),
        covariance: cov,
        warmup: (data.len() / d).clamp(k, 200),
        batch_size: 50,
        ..Params::default()
    }
    .check()
    .unwrap();
    let mut em = StepwiseEm::new(p, d);
    em.observe(data, None)?;
    em.flush(None)?;
    Ok(em)
}

fn assert_finite(em: &StepwiseEm) {
    let m = em.mixture().expect("a model");
    let p = m.params();
    assert!(p
        .weights
        .iter()
        .chain(&p.means)
        .chain(&p.covariances)
        .all(|v| v.is_finite()));
    assert!(em.stats().unwrap().is_finite());
}

#[test]
fn all_points_equal_gives_a_finite_model_or_a_clear_error() {
    let data = vec![3.5; 2 * 1000];
    for cov in [
        CovarianceType::Full,
        CovarianceType::Diagonal,
        CovarianceType::Spherical,
    ] {
        let em = run(&data, 2, 1, cov).unwrap();
        assert_finite(&em);
        // Too few distinct points for K = 3: no error (data content never
        // stops the learner), no model, the copies dropped while it waits.
        let em = run(&data, 2, 3, cov).unwrap();
        assert!(em.mixture().is_none());
        assert!(em.pending_points() < 200);
        assert!(em.warmup_dropped() > 0);
    }
    let zeros = vec![0.0; 500];
    assert_finite(&run(&zeros, 1, 1, CovarianceType::Full).unwrap());
}

#[test]
fn points_on_a_line_give_a_finite_model() {
    let data: Vec<f64> = (0..2000)
        .flat_map(|i| [i as f64 * 0.01, 2.0 * i as f64 * 0.01 + 1.0])
        .collect();
    for k in [1, 2, 3] {
        assert_finite(&run(&data, 2, k, CovarianceType::Full).unwrap());
    }
}

#[test]
fn huge_offsets_and_tiny_scales_are_learned() {
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let base = truth.sample(&mut rng, 20_000);
    for (shift, scale) in [(1e9, 1.0), (0.0, 1e-9), (1e9, 1e-3)] {
        let data: Vec<f64> = base.iter().map(|x| shift + scale * x).collect();
        let em = run(&data, 2, 2, CovarianceType::Full).unwrap();
        assert_finite(&em);
        let m = em.mixture().unwrap();
        let perm = best_match(&testdata::two_clusters(), &{
            // compare in the original units
            let p = m.params();
            GaussianMixture::new(MixtureParams {
                means: p.means.iter().map(|x| (x - shift) / scale).collect(),
                covariances: p.covariances.iter().map(|c| c / (scale * scale)).collect(),
                ..p.clone()
            })
            .unwrap()
        });
        for j in 0..2 {
            let mean = m.mean(perm[j]);
            for (a, b) in truth.mean(j).iter().zip(mean) {
                assert!(
                    ((b - shift) / scale - a).abs() < 0.2,
                    "shift {shift} scale {scale}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn one_component_and_more_components_than_clusters() {
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let data = truth.sample(&mut rng, 20_000);
    assert_finite(&run(&data, 2, 1, CovarianceType::Full).unwrap());
    assert_finite(&run(&data, 2, 12, CovarianceType::Full).unwrap());
    // Two distinct points repeated, K = 2: finite.
    let two: Vec<f64> = (0..1000)
        .flat_map(|i| if i % 2 == 0 { [0.0, 0.0] } else { [1.0, 1.0] })
        .collect();
    assert_finite(&run(&two, 2, 2, CovarianceType::Full).unwrap());
}

#[test]
fn sixty_four_dimensions() {
    let d = 64;
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let truth = GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Diagonal,
        dim: d,
        weights: vec![0.5, 0.5],
        means: (0..2 * d).map(|i| if i < d { 0.0 } else { 3.0 }).collect(),
        covariances: vec![1.0; 2 * d],
    })
    .unwrap();
    let data = truth.sample(&mut rng, 5_000);
    for cov in [
        CovarianceType::Full,
        CovarianceType::Diagonal,
        CovarianceType::Spherical,
    ] {
        assert_finite(&run(&data, d, 2, cov).unwrap());
    }
}

#[test]
fn gross_outliers_are_scored_but_left_out_of_the_statistics() {
    // NaN, 1e200 and a 1e100 glitch in a batch: the batch's other points
    // are learned, the glitches counted, and no component is dragged away.
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let data = truth.sample(&mut rng, 2_000);
    let p = Params {
        warmup: 200,
        batch_size: 50,
        ..Params::default()
    }
    .check()
    .unwrap();
    let mut em = StepwiseEm::new(p, 2);
    em.observe(&data[..2 * 1_000], None).unwrap();
    let before = em.mixture().unwrap().clone();
    let mut bad = data[2 * 1_000..].to_vec();
    bad[7] = f64::NAN;
    bad[20] = 1e200;
    bad[40] = 1e100;
    bad[41] = -1e100;
    let mut sb = ScoreBuffer::default();
    em.observe(&bad, Some(&mut sb)).unwrap();
    assert_eq!(sb.len(), 1_000, "every point is scored");
    assert_eq!(em.counters().outliers, 3);
    assert_eq!(em.counters().refused_batches, 0);
    assert_eq!(em.counters().points_seen, 2_000 - 3);
    assert!(em.counters().avg_log_lik().is_finite());
    assert_ne!(
        em.mixture().unwrap(),
        &before,
        "the good points were learned"
    );
    assert_finite(&em);
    let m = em.mixture().unwrap();
    let perm = best_match(&truth, m);
    for j in 0..2 {
        for (a, b) in truth.mean(j).iter().zip(m.mean(perm[j])) {
            assert!((a - b).abs() < 0.5, "{a} vs {b}");
        }
    }
}

#[test]
fn a_huge_value_in_the_warm_up_is_left_out() {
    // A reproducer from review: 1e300 among the warm-up points used to
    // make the data's scale infinite and the first M-step panic.
    let mut data: Vec<f64> = (1..=100)
        .flat_map(|i| [i as f64, ((i * 7) % 13) as f64])
        .collect();
    data.extend_from_slice(&[1e300, 1e300]);
    for cov in [
        CovarianceType::Full,
        CovarianceType::Diagonal,
        CovarianceType::Spherical,
    ] {
        let em = run(&data, 2, 2, cov).unwrap();
        assert_finite(&em);
        assert_eq!(em.counters().outliers, 1);
        assert_eq!(em.counters().points_seen, 100);
    }
    // Every warm-up point beyond reach: a clear error about the scale, not
    // a panic.
    let err = run(&[1e300, -1e300, 1e301, 1e302], 1, 2, CovarianceType::Full).unwrap_err();
    assert!(matches!(err, LearnError::Scale(_)), "{err}");
    assert!(err.to_string().contains("divide the data"), "{err}");
}

#[test]
fn a_dead_component_is_reseeded() {
    // Warm up on three clusters, then stream only one: the others' weights
    // collapse under a step floor and they are re-seeded, never NaN.
    let p = Params {
        components: crate::model::ComponentCount::Fixed(3),
        warmup: 300,
        batch_size: 100,
        step_floor: 0.5,
        ..Params::default()
    }
    .check()
    .unwrap();
    let mut em = StepwiseEm::new(p, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    em.observe(&testdata::three_1d().sample(&mut rng, 300), None)
        .unwrap();
    let one = GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 1,
        weights: vec![1.0],
        means: vec![50.0],
        covariances: vec![1.0],
    })
    .unwrap();
    em.observe(&one.sample(&mut rng, 20_000), None).unwrap();
    assert!(em.counters().reseeds > 0);
    assert_finite(&em);
}

#[test]
fn same_points_options_and_seed_give_a_bit_identical_model() {
    let truth = testdata::eight_d(CovarianceType::Full, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let data = truth.sample(&mut rng, 30_000);
    let once = |slice: usize| {
        let mut em = StepwiseEm::new(params(6, CovarianceType::Full), 8);
        for s in data.chunks(slice * 8) {
            em.observe(s, None).unwrap();
        }
        em.state()
    };
    // Any slicing of the input gives the same bits.
    assert_eq!(once(1000), once(333));
    assert_eq!(once(1000), once(30_000));
}

#[test]
fn serialised_state_resumes_exactly() {
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let data = truth.sample(&mut rng, 20_000);
    let mut whole = StepwiseEm::new(params(2, CovarianceType::Full), 2);
    whole.observe(&data, None).unwrap();
    let mut first = StepwiseEm::new(params(2, CovarianceType::Full), 2);
    first.observe(&data[..2 * 12_345], None).unwrap();
    let mut second = StepwiseEm::from_state(first.state()).unwrap();
    second.observe(&data[2 * 12_345..], None).unwrap();
    assert_eq!(whole.state(), second.state());
}

#[test]
fn scores_are_test_then_train_in_order() {
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let data = truth.sample(&mut rng, 1_234);
    let p = Params {
        warmup: 200,
        batch_size: 100,
        ..Params::default()
    }
    .check()
    .unwrap();
    let mut em = StepwiseEm::new(p, 2);
    let mut sb = ScoreBuffer {
        want_resp: true,
        ..ScoreBuffer::default()
    };
    em.observe(&data[..2 * 150], Some(&mut sb)).unwrap();
    assert!(sb.is_empty(), "no model yet, nothing scored");
    em.observe(&data[2 * 150..2 * 250], Some(&mut sb)).unwrap();
    // Warm-up of 200 scored under the first model, and the 50 points of
    // the partial first batch on arrival, under the same model.
    assert_eq!(sb.len(), 250);
    let first = em.mixture().unwrap().clone();
    for i in 0..200 {
        let x = &data[2 * i..2 * i + 2];
        assert!((sb.log_lik[i] - first.log_prob(x)).abs() < 1e-9);
        assert_eq!(sb.labels[i] as usize, first.predict(x));
    }
    em.observe(&data[2 * 250..], Some(&mut sb)).unwrap();
    em.flush(Some(&mut sb)).unwrap();
    assert_eq!(sb.len(), 1_234);
    assert_eq!(sb.resp.len(), 2 * 1_234);
    assert_eq!(em.counters().points_seen, 1_234);
    assert_eq!(em.counters().log_lik_points, 1_234);
}

#[test]
fn a_point_at_a_time_is_scored_at_once_and_as_in_one_slice() {
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let data = truth.sample(&mut rng, 1_000);
    let p = Params {
        warmup: 200,
        batch_size: 100,
        ..Params::default()
    }
    .check()
    .unwrap();
    let want_resp = |r| ScoreBuffer {
        want_resp: r,
        ..ScoreBuffer::default()
    };
    let mut whole = StepwiseEm::new(p.clone(), 2);
    let mut all = want_resp(true);
    whole.observe(&data, Some(&mut all)).unwrap();
    whole.flush(Some(&mut all)).unwrap();
    let mut single = StepwiseEm::new(p, 2);
    let mut one = want_resp(true);
    for (i, x) in data.chunks_exact(2).enumerate() {
        let before = one.len();
        single.observe(x, Some(&mut one)).unwrap();
        if i >= 200 {
            assert_eq!(one.len(), before + 1, "point {i} is scored on arrival");
        }
    }
    single.flush(Some(&mut one)).unwrap();
    assert_eq!(one.len(), 1_000);
    assert_eq!(one.log_lik, all.log_lik);
    assert_eq!(one.labels, all.labels);
    assert_eq!(one.resp, all.resp);
    assert!(single.state() == whole.state(), "the same model");
}

#[test]
fn ragged_input_is_an_error() {
    let mut em = StepwiseEm::new(params(2, CovarianceType::Full), 3);
    assert_eq!(
        em.observe(&[1.0; 4], None).unwrap_err(),
        LearnError::Ragged { len: 4, dim: 3 }
    );
}

#[test]
fn each_parameter_rule_has_its_message() {
    let base = Params::default;
    let cases: Vec<(Params, &str)> = vec![
        (
            Params {
                components: crate::model::ComponentCount::Fixed(0),
                ..base()
            },
            "components",
        ),
        (
            Params {
                batch_size: 0,
                ..base()
            },
            "batch_size",
        ),
        (
            Params {
                step_decay: 0.5,
                ..base()
            },
            "(0.5, 1]",
        ),
        (
            Params {
                step_decay: 1.01,
                ..base()
            },
            "(0.5, 1]",
        ),
        (
            Params {
                step_offset: -1.0,
                ..base()
            },
            "step_offset",
        ),
        (
            Params {
                step_floor: 1.0,
                ..base()
            },
            "step_floor",
        ),
        (
            Params {
                warmup: 1,
                ..base()
            },
            "warmup",
        ),
        (
            Params {
                reg_covar: f64::NAN,
                ..base()
            },
            "reg_covar",
        ),
        (
            Params {
                init_seeds: 0,
                ..base()
            },
            "init_seeds",
        ),
        (
            Params {
                init_iters: 0,
                ..base()
            },
            "init_iters",
        ),
    ];
    for (p, needle) in cases {
        let msg = p.check().unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
    assert!(Params::default().check().is_ok());
}

#[test]
fn half_life_is_reported_in_points() {
    let p = Params {
        step_floor: 0.01,
        batch_size: 1000,
        ..Params::default()
    };
    assert!((p.half_life_points() - 68_967.0).abs() < 10.0);
    assert!(Params::default().half_life_points().is_infinite());
}

/// Agreement required between one pass and a merged split (rounding only).
const MERGE_TOL: f64 = 1e-9;

fn assert_mixtures_close(a: &GaussianMixture, b: &GaussianMixture) {
    let (p, q) = (a.params(), b.params());
    assert_eq!(p.weights.len(), q.weights.len());
    for (x, y) in p
        .weights
        .iter()
        .chain(&p.means)
        .chain(&p.covariances)
        .zip(q.weights.iter().chain(&q.means).chain(&q.covariances))
    {
        assert!((x - y).abs() <= MERGE_TOL * (1.0 + x.abs()), "{x} vs {y}");
    }
}

/// A learner past its warm-up and the next points of its stream.
fn fitted_learner(cov: CovarianceType, seed: u64) -> (StepwiseEm, Vec<f64>) {
    let truth = testdata::random_mixture(3, 3, 5.0, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = truth.sample(&mut rng, 10_000);
    let p = Params {
        components: crate::model::ComponentCount::Fixed(3),
        covariance: cov,
        batch_size: 500,
        warmup: 2_000,
        ..Params::default()
    };
    let mut l = StepwiseEm::new(p.check().unwrap(), 3);
    l.observe(&data[..3 * 2_000], None).unwrap();
    (l, data[3 * 2_000..].to_vec())
}

#[test]
fn apply_of_a_merged_split_equals_one_update_on_the_whole_batch() {
    for cov in [
        CovarianceType::Full,
        CovarianceType::Diagonal,
        CovarianceType::Spherical,
    ] {
        let (mut one, rest) = fitted_learner(cov, 21);
        let batch = &rest[..3 * 500];
        let mut split = one.clone();
        one.observe(batch, None).unwrap();
        // Three workers' batches against the same model, merged by a reducer.
        let parts = [
            &batch[..3 * 120],
            &batch[3 * 120..3 * 121],
            &batch[3 * 121..],
        ];
        let stats: Vec<BatchStats> = parts
            .iter()
            .map(|p| split.batch_stats(p).unwrap())
            .collect();
        let merged = stats[0].merge(&stats[1]).unwrap().merge(&stats[2]).unwrap();
        split.apply(&merged).unwrap();
        assert_mixtures_close(one.mixture().unwrap(), split.mixture().unwrap());
        assert_eq!(one.counters().points_seen, split.counters().points_seen);
        assert_eq!(one.counters().updates, split.counters().updates);
        assert_eq!(one.step(), split.step());
        let (a, b) = (one.counters().log_lik_sum, split.counters().log_lik_sum);
        assert!((a - b).abs() <= MERGE_TOL * a.abs(), "{a} vs {b}");
    }
}

#[test]
fn a_merged_batch_steps_by_its_global_point_count() {
    let (mut l, rest) = fitted_learner(CovarianceType::Full, 22);
    let (step, seen) = (l.step(), l.counters().points_seen);
    // Two full batches from two workers: one update counting 1000 points.
    let a = l.batch_stats(&rest[..3 * 500]).unwrap();
    let b = l.batch_stats(&rest[3 * 500..3 * 1000]).unwrap();
    l.apply(&a.merge(&b).unwrap()).unwrap();
    assert_eq!(l.step(), step + 2.0);
    assert_eq!(l.counters().points_seen, seen + 1000);
    assert_eq!(l.counters().updates, 1);
}

#[test]
fn statistics_that_do_not_fit_the_model_are_refused() {
    let (mut l, rest) = fitted_learner(CovarianceType::Full, 23);
    let (other, _) = fitted_learner(CovarianceType::Diagonal, 23);
    let mut other = other;
    let s = other.batch_stats(&rest[..30]).unwrap();
    assert!(matches!(l.apply(&s), Err(LearnError::Incompatible(_))));
    let mut fresh = StepwiseEm::new(params(2, CovarianceType::Full), 3);
    assert!(matches!(
        fresh.batch_stats(&rest[..30]),
        Err(LearnError::NotFitted)
    ));
    assert!(matches!(fresh.apply(&s), Err(LearnError::NotFitted)));
    assert!(matches!(
        l.batch_stats(&rest[..4]),
        Err(LearnError::Ragged { .. })
    ));
    let before = l.mixture().cloned();
    let s = l.batch_stats(&rest[..30]).unwrap();
    assert!(s.merge(&other.batch_stats(&rest[..30]).unwrap()).is_err());
    assert_eq!(
        l.mixture().cloned(),
        before,
        "a refused batch changes nothing"
    );
}

#[test]
fn k_comes_from_the_model_not_the_options() {
    let (l, rest) = fitted_learner(CovarianceType::Full, 24);
    let mut state = l.state();
    // Options asking for another K do not change the model's K: they only
    // seed the first fit.
    let mut p = (*state.params).clone();
    p.components = crate::model::ComponentCount::Fixed(5);
    state.params = p.check().unwrap();
    let mut resumed = StepwiseEm::from_state(state).unwrap();
    assert_eq!(resumed.n_components(), Some(3));
    resumed.observe(&rest[..3 * 1_500], None).unwrap();
    assert_eq!(resumed.mixture().unwrap().n_components(), 3);
}

#[test]
fn state_round_trip_resumes_bit_identically() {
    let (fitted, rest) = fitted_learner(CovarianceType::Full, 25);
    let mut warm = StepwiseEm::new(fitted.params().clone(), 3);
    warm.observe(&rest[..3 * 700], None).unwrap();
    let mut pending = fitted.clone();
    pending.observe(&rest[..3 * 345], None).unwrap();
    assert_eq!(pending.pending_points(), 345);
    for mut l in [warm, fitted, pending] {
        let mut back = StepwiseEm::from_state(l.state()).unwrap();
        l.observe(&rest[3 * 1_000..], None).unwrap();
        back.observe(&rest[3 * 1_000..], None).unwrap();
        assert!(l.mixture().is_some());
        assert_eq!(l.mixture(), back.mixture());
        assert_eq!(l.counters(), back.counters());
        assert_eq!(l.pending_points(), back.pending_points());
    }
}

#[test]
fn a_step_floor_tracks_a_drifting_stream() {
    // The stream's second half comes from the same clusters moved by (3, -2):
    // with a step floor the model follows within a few half-lives (here
    // 100 batches leave 0.95^100 = 0.6 % of the old weight); without
    // one it is left averaging old and new.
    let before = testdata::two_clusters();
    let mut p = before.params().clone();
    for (i, m) in p.means.iter_mut().enumerate() {
        *m += if i % 2 == 0 { 3.0 } else { -2.0 };
    }
    let after = GaussianMixture::new(p).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let first = before.sample(&mut rng, 50_000);
    let second = after.sample(&mut rng, 100_000);
    let learn_with = |floor: f64| {
        let p = Params {
            step_floor: floor,
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(p, 2);
        em.observe(&first, None).unwrap();
        em.observe(&second, None).unwrap();
        em
    };
    let tracking = learn_with(0.05);
    // Half-life of 0.05 per batch of 1000: about 13,500 points.
    assert!((tracking.params().half_life_points() - 13_513.0).abs() < 10.0);
    let m = tracking.mixture().unwrap();
    let perm = best_match(&after, m);
    for j in 0..2 {
        for (a, b) in after.mean(j).iter().zip(m.mean(perm[j])) {
            assert!((a - b).abs() < 0.1, "with a floor: {a} vs {b}");
        }
    }
    let stuck = learn_with(0.0);
    let m = stuck.mixture().unwrap();
    let perm = best_match(&after, m);
    let off: f64 = (0..2)
        .flat_map(|j| {
            after
                .mean(j)
                .iter()
                .zip(m.mean(perm[j]))
                .map(|(a, b)| (a - b).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f64::max);
    assert!(
        off > 0.3,
        "without a floor the model should lag, but is off by only {off}"
    );
}

#[test]
fn random_streams_with_garbage_never_panic_or_go_non_finite() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    for case in 0..60 {
        let d = rng.random_range(1..5);
        let k = rng.random_range(1..5);
        let cov = [
            CovarianceType::Full,
            CovarianceType::Diagonal,
            CovarianceType::Spherical,
        ][case % 3];
        let n = rng.random_range(0..3000);
        let scale = [1e-9, 1.0, 1e6][case % 4 % 3];
        let values: Vec<f64> = (0..n * d)
            .map(|_| match rng.random_range(0..200) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => 1e300,
                3 => -1e151,
                4 => 1e149,
                5..=20 => 3.0,
                _ => {
                    scale * rng.random_range(-5.0..5.0)
                        + (rng.random_range(0..3) as f64) * 10.0 * scale
                }
            })
            .collect();
        let p = Params {
            components: crate::model::ComponentCount::Fixed(k),
            covariance: cov,
            warmup: rng.random_range(k..500),
            batch_size: rng.random_range(1..200),
            step_floor: [0.0, 0.1][case % 2],
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(p, d);
        let mut sb = ScoreBuffer::default();
        let mut outcome = Ok(());
        for slice in values.chunks(d * rng.random_range(1..400)) {
            outcome = outcome.and(em.observe(slice, Some(&mut sb)));
        }
        outcome = outcome.and(em.flush(Some(&mut sb)));
        match outcome {
            Ok(()) | Err(LearnError::TooFewDistinct { .. }) => {}
            Err(e) => panic!("case {case}: unexpected error {e}"),
        }
        if em.mixture().is_some() {
            assert_finite(&em);
            let c = em.counters();
            assert_eq!(
                c.points_seen + c.outliers + c.refused_points,
                n as u64,
                "case {case}"
            );
            assert_eq!(sb.len(), n, "case {case}: every point scored once");
        }
    }
}

/// Unit-covariance-like clusters in 2-d at `centres`, equal weights.
fn clusters_at(centres: &[[f64; 2]]) -> GaussianMixture {
    let k = centres.len();
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 2,
        weights: vec![1.0 / k as f64; k],
        means: centres.iter().flatten().copied().collect(),
        covariances: centres.iter().flat_map(|_| [1.0, 0.3, 0.3, 0.8]).collect(),
    })
    .unwrap()
}

#[test]
fn auto_k_and_adapted_k_live_in_the_learner_and_resume_bit_identically() {
    use crate::model::ComponentCount;
    let three = [[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]];
    let before = clusters_at(&three);
    let after = clusters_at(&[three[0], three[1], three[2], [8.0, 8.0]]);
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut data = before.sample(&mut rng, 15_000);
    data.extend(after.sample(&mut rng, 20_000));
    let p = Params {
        components: ComponentCount::Auto,
        max_components: 5,
        adapt_components: true,
        warmup: 2_000,
        batch_size: 500,
        ..Params::default()
    }
    .check()
    .unwrap();
    let mut whole = StepwiseEm::new(p.clone(), 2);
    for s in data.chunks(777 * 2) {
        whole.observe(s, None).unwrap();
    }
    let sel = whole.selection().expect("K was chosen on the warm-up");
    assert_eq!(sel.bic_by_k.len(), 5);
    assert!(sel.chosen_by.contains("K = 3,"), "{}", sel.chosen_by);
    assert_eq!(whole.n_components(), Some(4));
    assert_eq!(whole.counters().component_changes, 1);
    let c = whole.last_change().unwrap();
    assert_eq!((c.from, c.to), (3, 4));
    assert!(c.points_seen > 15_000 && c.points_seen <= 35_000, "{c:?}");
    assert!(c.bic_after < c.bic_before - 10.0);
    let crit = whole.criteria().unwrap();
    assert_eq!(crit.points, ADAPT_RECENT_POINTS);
    // Stopped before and after the change, resumed from the plain state:
    // the same bits as the uninterrupted run.
    let mut l = StepwiseEm::new(p, 2);
    let mut at = 0;
    for cut in [12_345 * 2, 27_001 * 2, data.len()] {
        l.observe(&data[at..cut], None).unwrap();
        l = StepwiseEm::from_state(l.state()).unwrap();
        at = cut;
    }
    assert_eq!(l.state(), whole.state());
}

/// `n` points of a random 8-D mixture of 6 components (`seeds`: the
/// mixture's, the sample's), and the options for K = 6 with a warm-up of
/// 2,000 points, batches of 100 and `tweak`'s changes.
fn eight_d_six(seeds: (u64, u64), n: usize, tweak: fn(&mut Params)) -> (Vec<f64>, CheckedParams) {
    let truth = testdata::random_mixture(8, 6, 4.0, seeds.0);
    let mut rng = ChaCha8Rng::seed_from_u64(seeds.1);
    let mut p = Params {
        components: crate::model::ComponentCount::Fixed(6),
        warmup: 2000,
        batch_size: 100,
        ..Params::default()
    };
    tweak(&mut p);
    (truth.sample(&mut rng, n), p.check().unwrap())
}

/// The end of the input during the warm-up keeps the buffer unfitted (a
/// model of the few points buffered would be a poor start that a resume
/// kept), so a resume that goes on
/// filling it ends exactly where one uninterrupted run does; reports fit
/// the buffer on the fly, on a copy, the same way every time.
#[test]
fn an_unfinished_warm_up_is_saved_unfitted_and_resumes_as_one_run() {
    let (data, p) = eight_d_six((3, 11), 8_000, |_| {});
    let (head, tail) = data.split_at(60 * 8);
    let mut first = StepwiseEm::new(p.clone(), 8);
    first.observe(head, None).unwrap();
    first.flush(None).unwrap();
    assert!(first.mixture().is_none(), "the 60 points were fitted");
    assert_eq!(first.pending_points(), 60);
    assert_eq!(first.counters().points_seen, 0);
    let state = first.state();
    // On the fly: a model of the buffer, always the same, the learner
    // untouched.
    let fly = first.model_or_fit().unwrap().into_owned();
    assert_eq!(fly.n_components(), 6);
    assert_eq!(first.model_or_fit().unwrap().into_owned(), fly);
    assert_eq!(first.state(), state);
    // Resumed from the saved state with the rest of the stream.
    let mut resumed = StepwiseEm::from_state(state).unwrap();
    resumed.observe(tail, None).unwrap();
    resumed.flush(None).unwrap();
    let mut whole = StepwiseEm::new(p, 8);
    whole.observe(&data, None).unwrap();
    whole.flush(None).unwrap();
    assert!(whole.mixture().is_some());
    assert_eq!(resumed.state(), whole.state());
    // A fitted learner's model is its own.
    assert!(matches!(whole.model_or_fit(), Ok(Cow::Borrowed(_))));
    // Nothing buffered: nothing to fit.
    let empty = StepwiseEm::new(params(2, CovarianceType::Full), 2);
    assert!(matches!(empty.model_or_fit(), Err(LearnError::NotFitted)));
}

/// A stop during the first fit: every point received is kept (the
/// warm-up's, then the rest in order), the fit leaves no trace (its random
/// numbers are drawn again), and the saved state resumes as one
/// uninterrupted run: with more points, with none, with row tags, and in
/// the reports' model. (The points after the warm-up's were dropped while
/// a source that resumes from its saved position, JetStream, moved past
/// them.)
#[test]
fn a_stop_during_the_first_fit_keeps_every_point_and_resumes_as_one_run() {
    let (data, p) = eight_d_six((4, 12), 6_000, |_| {});
    let d = 8;
    let stop = Interrupt::default();
    let mut run = StepwiseEm::new(p.clone(), d);
    run.set_interrupt(stop.clone());
    let start = run.state();
    run.observe(&data[..1500 * d], None).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Completes the warm-up with 200 points to spare, then more.
    for (from, to) in [(1500, 2200), (2200, 2533)] {
        assert!(matches!(
            run.observe(&data[from * d..to * d], None),
            Err(LearnError::Interrupted)
        ));
        assert_eq!(run.pending_points(), to, "every point is kept");
    }
    run.flush(None).unwrap();
    assert!(run.mixture().is_none());
    assert_eq!(run.pending_points(), 2533);
    let saved = run.state();
    assert_eq!(saved.rng, start.rng, "the stopped fit drew nothing");
    let (held, rest) = data.split_at(2533 * d);
    // One run of every point.
    let mut whole = StepwiseEm::new(p.clone(), d);
    whole.observe(&data, None).unwrap();
    whole.flush(None).unwrap();
    let mut resumed = StepwiseEm::from_state(saved.clone()).unwrap();
    resumed.observe(rest, None).unwrap();
    resumed.flush(None).unwrap();
    assert_eq!(resumed.state(), whole.state());
    // One run of the points held, without and with a final flush.
    let mut prefix = StepwiseEm::new(p, d);
    prefix.observe(held, None).unwrap();
    let fly = StepwiseEm::from_state(saved.clone()).unwrap();
    assert_eq!(
        fly.model_or_fit().unwrap().into_owned(),
        *prefix.mixture().unwrap()
    );
    assert_eq!(fly.state(), saved, "the reports' fit is on a copy");
    prefix.flush(None).unwrap();
    let mut ended = StepwiseEm::from_state(saved.clone()).unwrap();
    ended.flush(None).unwrap();
    assert_eq!(ended.state(), prefix.state());
    // Row tags: the held points are the restored (untagged) ones, each
    // scored once, in order, before the new ones.
    let mut tagged = StepwiseEm::from_state(saved).unwrap();
    let (rows, _) = tagged_scores(&mut tagged, rest);
    assert_eq!(rows.len(), data.len() / d);
    assert!(rows[..2533].iter().all(|&r| r == UNTAGGED));
    let new: Vec<u64> = (0..(rest.len() / d) as u64).collect();
    assert_eq!(rows[2533..], new[..]);
    assert_eq!(tagged.state(), whole.state());
}

/// A stop in the middle of a long first fit (many seeds): the fit drew
/// random numbers before it stopped, and none of them count.
#[test]
fn a_fit_stopped_midway_leaves_the_random_numbers_as_they_were() {
    let (data, p) = eight_d_six((5, 13), 2_300, |p| p.init_seeds = 100_000);
    let stop = Interrupt::default();
    let mut run = StepwiseEm::new(p, 8);
    run.set_interrupt(stop.clone());
    let start = run.state();
    let signal = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let t = std::time::Instant::now();
    assert!(matches!(
        run.observe(&data, None),
        Err(LearnError::Interrupted)
    ));
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(300),
        "the fit was stopped midway, not before it began"
    );
    signal.join().unwrap();
    assert_eq!(run.pending_points(), 2_300);
    let saved = run.state();
    assert_eq!(saved.rng, start.rng);
}

/// 2,000 points of two 2-D clusters, then 2,000 more moved far away (a
/// regime change: the learner re-fits on recent points), and options for
/// K = 2 with a warm-up of 200 points and batches of 50.
fn a_stream_that_moves() -> (Vec<f64>, Vec<f64>, CheckedParams) {
    let truth = testdata::two_clusters();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let data = truth.sample(&mut rng, 2000);
    let mut moved = truth.sample(&mut rng, 2000);
    for v in &mut moved {
        *v += 1e5;
    }
    let p = Params {
        components: crate::model::ComponentCount::Fixed(2),
        warmup: 200,
        batch_size: 50,
        ..Params::default()
    }
    .check()
    .unwrap();
    (data, moved, p)
}

/// The fit hook is told of every fit on the warm-up buffer, the first and
/// a regime change's re-fit (which comes in the middle of a call), also
/// one that a stop ends, and never of the reports' fit on a copy.
#[test]
fn the_fit_hook_brackets_every_fit_on_the_warm_up_buffer() {
    use std::sync::{Arc, Mutex};
    let calls = Arc::new(Mutex::new(Vec::new()));
    let hook = {
        let calls = calls.clone();
        FitHook(Arc::new(move |on| calls.lock().unwrap().push(on)))
    };
    let seen = || std::mem::take(&mut *calls.lock().unwrap());
    let (data, moved, p) = a_stream_that_moves();
    let d = 2;
    let mut em = StepwiseEm::new(p.clone(), d);
    em.set_fit_hook(hook.clone());
    em.observe(&data[..150 * d], None).unwrap();
    let _ = em.model_or_fit().unwrap();
    assert_eq!(seen(), Vec::<bool>::new(), "the reports' fit is on a copy");
    em.observe(&data[150 * d..], None).unwrap();
    assert_eq!(seen(), [true, false], "the first fit");
    em.observe(&moved, None).unwrap();
    assert_eq!(em.regime_changes(), 1);
    assert_eq!(seen(), [true, false], "the regime change's re-fit");
    // A fit that a stop ends is ended for the hook too.
    let stop = Interrupt::default();
    let mut stopped = StepwiseEm::new(p, d);
    stopped.set_fit_hook(hook);
    stopped.set_interrupt(stop.clone());
    stopped.observe(&data[..150 * d], None).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(stopped.observe(&data[150 * d..], None).is_err());
    assert!(matches!(seen()[..], [] | [true, false]));
}

/// Feeds `data` in uneven slices to a tagged learner with scores and
/// returns (the row numbers of every score line, in order, the labels).
fn tagged_scores(em: &mut StepwiseEm, data: &[f64]) -> (Vec<u64>, Vec<u32>) {
    let d = em.dim();
    em.tag_rows();
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    let mut taken = Vec::new();
    let mut sb = ScoreBuffer::default();
    let mut at = 0;
    let mut step = 1;
    while at < data.len() / d {
        let n = step.min(data.len() / d - at);
        sb.clear();
        em.observe(&data[at * d..(at + n) * d], Some(&mut sb))
            .unwrap();
        em.take_scored_rows(&mut taken);
        assert_eq!(taken.len(), sb.len(), "one row number per score line");
        rows.extend_from_slice(&taken);
        labels.extend_from_slice(&sb.labels);
        at += n;
        step = step % 97 + 13;
    }
    sb.clear();
    em.flush(Some(&mut sb)).unwrap();
    em.take_scored_rows(&mut taken);
    assert_eq!(taken.len(), sb.len());
    rows.extend_from_slice(&taken);
    labels.extend_from_slice(&sb.labels);
    (rows, labels)
}

#[test]
fn row_tags_follow_every_score_through_warm_up_drops_and_outliers() {
    let truth = testdata::two_clusters();
    let d = truth.dim();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // A stuck sensor first (the warm-up drops the copies unscored), then
    // varied points with a gross outlier at every 50th row.
    let mut data: Vec<f64> = std::iter::repeat_n([1.0, 1.0], 300).flatten().collect();
    let varied = truth.sample(&mut rng, 3000);
    data.extend_from_slice(&varied);
    let outliers: Vec<u64> = (400..3300).step_by(50).collect();
    for &r in &outliers {
        data[r as usize * d] = 1e7;
    }
    let p = Params {
        components: crate::model::ComponentCount::Fixed(2),
        warmup: 200,
        batch_size: 64,
        ..Params::default()
    }
    .check()
    .unwrap();
    let mut em = StepwiseEm::new(p.clone(), d);
    let (rows, labels) = tagged_scores(&mut em, &data);
    assert!(em.warmup_dropped() > 0, "the warm-up dropped copies");
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "each row once, in order"
    );
    assert_eq!(
        rows.len() as u64 + em.warmup_dropped(),
        (data.len() / d) as u64,
        "every row is scored unless the warm-up dropped it"
    );
    let unlabelled: Vec<u64> = rows
        .iter()
        .zip(&labels)
        .filter(|(_, &l)| l == NO_LABEL)
        .map(|(&r, _)| r)
        .collect();
    assert_eq!(
        unlabelled, outliers,
        "the gross outliers are the rows tagged so"
    );
    // Tags change nothing learned.
    let mut plain = StepwiseEm::new(p, d);
    plain.observe(&data, None).unwrap();
    plain.flush(None).unwrap();
    assert_eq!(plain.mixture(), em.mixture());
}

#[test]
fn row_tags_survive_a_regime_change_and_a_restored_warm_up() {
    let (mut data, moved, p) = a_stream_that_moves();
    let d = 2;
    data.extend_from_slice(&moved);
    let mut em = StepwiseEm::new(p.clone(), d);
    let (rows, _) = tagged_scores(&mut em, &data);
    assert!(em.regime_changes() > 0);
    let expect: Vec<u64> = (0..(data.len() / d) as u64).collect();
    assert_eq!(rows, expect, "each row scored exactly once, in order");
    // A warm-up buffer restored from a checkpoint: its points are untagged.
    let mut warm = StepwiseEm::new(p, d);
    warm.observe(&data[..100 * d], None).unwrap();
    let mut resumed = StepwiseEm::from_state(warm.state()).unwrap();
    let (rows, _) = tagged_scores(&mut resumed, &data[100 * d..400 * d]);
    assert_eq!(rows.len(), 400);
    assert!(rows[..100].iter().all(|&r| r == UNTAGGED));
    assert_eq!(rows[100..], (0..300).collect::<Vec<u64>>()[..]);
}

/// Every way a regime window can go (batches of 1 to `batch_size` rows,
/// any number of them outliers): whenever it ends in a re-fit, every one
/// of its batches was copied, i.e. `window_can_refit` held before each.
#[test]
fn a_window_that_re_fits_has_copied_every_batch() {
    fn walk(n: u64, o: u64, all_copied: bool, warmup: usize, b: usize, fired: &mut u32) {
        let copied = all_copied && window_can_refit((n, o), warmup, b);
        for rows in 1..=b as u64 {
            for out in 0..=rows {
                let (n2, o2) = (n + rows, o + out);
                if n2 < warmup as u64 {
                    walk(n2, o2, copied, warmup, b, fired);
                } else if o2 as f64 > REGIME_OUTLIER_RATE * n2 as f64 {
                    assert!(copied, "re-fit at ({n2}, {o2}) with a batch not copied");
                    *fired += 1;
                }
            }
        }
    }
    for (warmup, b) in [(4, 1), (5, 2), (6, 3), (7, 2), (4, 4)] {
        let mut fired = 0;
        walk(0, 0, true, warmup, b, &mut fired);
        assert!(fired > 0);
        // And copying does stop in a steady stream.
        assert!(!window_can_refit((warmup as u64, 0), warmup, b));
    }
}

/// The pipeline announces the first fit, and reads ahead during it, for the
/// call `fits_with` names: the one that fills the warm-up buffer, and not
/// once a stop is requested (that call fits nothing and returns at once).
#[test]
fn fits_with_names_the_call_that_fits_the_first_model_and_none_after_a_stop() {
    use std::sync::atomic::Ordering::Relaxed;
    let (data, p) = eight_d_six((5, 13), 2_300, |_| {});
    let (d, short) = (8, 1_990);
    let stop = Interrupt::default();
    let mut run = StepwiseEm::new(p, d);
    run.set_interrupt(stop.clone());
    run.observe(&data[..short * d], None).unwrap();
    assert!(run.mixture().is_none());
    assert!(!run.fits_with(9) && run.fits_with(10) && run.fits_with(300));
    assert!(!run.fits_at_flush());
    stop.store(true, Relaxed);
    assert!(!run.fits_with(10) && !run.fits_with(300));
    let fill = &data[short * d..(short + 10) * d];
    assert!(matches!(
        run.observe(fill, None),
        Err(LearnError::Interrupted)
    ));
    assert!(run.mixture().is_none());
    assert!(!run.fits_at_flush());
    stop.store(false, Relaxed);
    assert!(run.fits_at_flush() && run.fits_with(0));
    run.flush(None).unwrap();
    assert!(run.mixture().is_some());
    assert!(!run.fits_with(1_000_000) && !run.fits_at_flush());
}

#[test]
fn an_auto_learner_buffers_the_warm_up_its_dimension_needs() {
    let auto = Params {
        components: crate::model::ComponentCount::Auto,
        ..Params::default()
    }
    .check()
    .unwrap();
    // 2-D: the given warm-up.
    assert_eq!(StepwiseEm::new(auto.clone(), 2).params().warmup, 5000);
    // 32-D, K up to 10: 4 points per parameter of K = 10.
    let mut em = StepwiseEm::new(auto, 32);
    assert_eq!(em.params().warmup, 22_440);
    let truth = testdata::random_mixture(32, 2, 4.0, 3);
    let pts = truth.sample(&mut ChaCha8Rng::seed_from_u64(1), 22_439);
    em.observe(&pts, None).unwrap();
    assert!(em.mixture().is_none(), "fitted before the sized warm-up");
    assert!(em.fits_with(1));
    // A fixed K keeps the given warm-up whatever the dimension.
    assert_eq!(
        StepwiseEm::new(params(10, CovarianceType::Full), 32)
            .params()
            .warmup,
        5000
    );
}
