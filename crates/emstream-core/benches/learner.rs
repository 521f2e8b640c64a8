//! Throughput of the stepwise EM learner on in-memory batches, after the
//! warm-up: each case initialises a learner on a warm-up sample outside the
//! timed loop, then times `observe` on a pre-generated block of points drawn
//! from the same mixture (the learner keeps learning from one iteration to
//! the next, as it would on a stationary stream). Throughput is in points.
//!
//! ```text
//! cargo bench --bench learner
//! cargo bench --bench learner -- 'd8'        # one group of cases
//! EMSTREAM_BENCH_WALL=1 cargo bench --bench learner   # wall-clock time
//! # the E-step on 2 threads (--threads 2), in wall time, d = 32 only:
//! EMSTREAM_BENCH_WALL=1 EMSTREAM_BENCH_THREADS=2 cargo bench --bench learner -- d32
//! # no criterion: N untimed blocks per case whose name contains d32_k10,
//! # for instruction counts (run with N = 0 and N = 2, subtract, divide by
//! # 2 blocks' points: the steady-state instructions per point)
//! EMSTREAM_BENCH_BLOCKS=2 valgrind --tool=callgrind target/release/deps/learner-* d32_k10
//! ```
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), as in
//! the parser bench, so the numbers hold on a machine busy with other work
//! (the learner is single-threaded by default; on an idle machine CPU time
//! equals wall time). Set `EMSTREAM_BENCH_WALL=1` to measure wall time
//! instead, which `EMSTREAM_BENCH_THREADS=N` (the learner's `--threads`,
//! default 1; case names then end in `_tN`) needs: the calling thread's CPU
//! time leaves out the other threads' work.
//!
//! Targets (see BENCHMARKS.md): >= 20 M points/s for d=2 K=2 full and
//! >= 5 M points/s for d=8 K=6 full.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use emstream_core::model::{
    testdata, CovarianceType, GaussianMixture, MixtureParams, Params, StepwiseEm,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Points per timed `observe` call (a whole number of default batches);
/// the wide cases (d = 16 to 64), 10 to 300x slower per point, use a
/// quarter or a tenth of it.
const BLOCK: usize = 200_000;

/// A d-dimensional, K-component full-covariance mixture with well separated
/// means and random correlated covariances `A Aᵀ / d + 0.5 I`, for the
/// larger case the reference mixtures do not cover.
fn random_full(d: usize, k: usize, seed: u64) -> GaussianMixture {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let means: Vec<f64> = (0..k * d).map(|_| 4.0 * normal()).collect();
    let mut covariances = Vec::with_capacity(k * d * d);
    for _ in 0..k {
        let a: Vec<f64> = (0..d * d).map(|_| normal()).collect();
        for r in 0..d {
            for c in 0..d {
                let dot: f64 = (0..d).map(|t| a[r * d + t] * a[c * d + t]).sum();
                covariances.push(dot / d as f64 + if r == c { 0.5 } else { 0.0 });
            }
        }
    }
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: d,
        weights: vec![1.0 / k as f64; k],
        means,
        covariances,
    })
    .expect("A Aᵀ/d + 0.5 I is positive definite")
}

/// A learner for `truth`'s shape, past its warm-up, and a block of fresh
/// points from `truth`.
fn warmed_up(truth: &GaussianMixture, n: usize, threads: usize) -> (StepwiseEm, Vec<f64>) {
    let params = Params {
        components: emstream_core::model::ComponentCount::Fixed(truth.n_components()),
        covariance: truth.covariance_type(),
        ..Params::default()
    }
    .check()
    .expect("default parameters with K <= warm-up are valid");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let warmup = truth.sample(&mut rng, params.warmup);
    let block = truth.sample(&mut rng, n);
    assert_eq!(n % params.batch_size, 0, "no partial batch per iteration");
    let mut em = StepwiseEm::new(params, truth.dim());
    em.set_threads(threads);
    em.observe(&warmup, None).expect("warm-up fits");
    assert!(
        em.mixture().is_some(),
        "the warm-up sample initialised the learner"
    );
    // One untimed pass so that scratch buffers have their final size.
    em.observe(&block, None)
        .expect("learning from a valid block");
    (em, block)
}

/// The E-step's threads, from `EMSTREAM_BENCH_THREADS` (default 1).
fn threads() -> usize {
    match std::env::var("EMSTREAM_BENCH_THREADS") {
        Ok(v) => v
            .trim()
            .parse()
            .expect("EMSTREAM_BENCH_THREADS is a number of threads"),
        Err(_) => 1,
    }
}

/// The cases: name, mixture, points per block.
fn cases() -> Vec<(&'static str, GaussianMixture, usize)> {
    vec![
        ("d2_k2_full", testdata::two_clusters(), BLOCK),
        (
            "d8_k6_full",
            testdata::eight_d(CovarianceType::Full, 3),
            BLOCK,
        ),
        (
            "d8_k6_diag",
            testdata::eight_d(CovarianceType::Diagonal, 3),
            BLOCK,
        ),
        (
            "d8_k6_spherical",
            testdata::eight_d(CovarianceType::Spherical, 3),
            BLOCK,
        ),
        ("d16_k10_full", random_full(16, 10, 5), BLOCK / 4),
        ("d32_k10_full", random_full(32, 10, 5), BLOCK / 10),
        ("d64_k16_full", random_full(64, 16, 5), BLOCK / 10),
        // The mixture `gen_stream --mixture wide-32` draws from: the
        // learner alone on what scripts/bench.sh's 32-D whole-process run
        // learns (rotated covariances, unequal weights; less apart than
        // random_full's, so fewer substitutions are cut short).
        (
            "wide32_stream",
            testdata::random_mixture(32, 10, 4.0, 32),
            BLOCK / 10,
        ),
    ]
}

fn learner<M: Measurement>(c: &mut Criterion<M>) {
    let threads = threads();
    let cases = cases();
    let mut group = c.benchmark_group("observe");
    // Each iteration is one block (a few ms to a few hundred ms):
    // flat sampling with few samples keeps the whole bench under a minute.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, truth, n) in &cases {
        let (mut em, block) = warmed_up(truth, *n, threads);
        let id = if threads > 1 {
            format!("{name}_t{threads}")
        } else {
            name.to_string()
        };
        group.throughput(Throughput::Elements(*n as u64));
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| em.observe(black_box(&block), None).expect("valid block"))
        });
        assert_eq!(em.pending_points(), 0);
        assert_eq!(em.counters().refused_batches, 0, "{name}: no batch refused");
    }
    group.finish();
}

/// `EMSTREAM_BENCH_BLOCKS=N`: no criterion; every case whose name
/// contains the first argument is warmed up and fed N more blocks, for an
/// instruction count under callgrind (the same work every run, unlike
/// criterion's timed loop).
fn fixed_blocks(blocks: &str) {
    let blocks: usize = blocks
        .trim()
        .parse()
        .expect("EMSTREAM_BENCH_BLOCKS is a number of blocks");
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    for (name, truth, n) in cases() {
        if !name.contains(filter.as_str()) {
            continue;
        }
        let (mut em, block) = warmed_up(&truth, n, threads());
        for _ in 0..blocks {
            em.observe(black_box(&block), None).expect("valid block");
        }
        println!("{name}: {blocks} blocks of {n} points after the warm-up");
    }
}

fn main() {
    match std::env::var("EMSTREAM_BENCH_BLOCKS") {
        Ok(blocks) => fixed_blocks(&blocks),
        Err(_) => support::run(learner, learner),
    }
}
