//! The EM write-up's first worked example, streamed: two 2-D Gaussians,
//! means (1, 1) and (7, 7), covariances [[3, 2], [2, 3]] and
//! [[2, -1], [-1, 2]], 200 points each, shuffled (seeded) and fed to
//! [`StepwiseEm`] with a small warm-up and small mini-batches so that the
//! model goes through several stages. Prints the recovered parameters next
//! to the truth and writes an SVG of the mixture at four stages of the
//! stream: `docs/seed1_stage{1..4}.svg` (or into the directory given as the
//! first argument).
//!
//! ```text
//! cargo run --example seed_example1 [OUT_DIR]
//! ```

mod common;

use std::path::PathBuf;

use emstream::model::{CovarianceType, GaussianMixture, MixtureParams, Params, StepwiseEm};
use emstream::report::diff::diff_mixtures;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Points per component, as in the write-up.
const PER_COMPONENT: usize = 200;
/// Points buffered before the first model.
const WARMUP: usize = 40;
/// Mini-batch size.
const BATCH: usize = 20;
/// Stream positions (points seen) at which a snapshot is drawn.
const STAGES: [usize; 4] = [40, 100, 200, 400];

fn gaussian(mean: [f64; 2], cov: [f64; 4]) -> GaussianMixture {
    GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 2,
        weights: vec![1.0],
        means: mean.to_vec(),
        covariances: cov.to_vec(),
    })
    .expect("the write-up's covariances are positive definite")
}

/// Sample mean and (maximum-likelihood) covariance of 2-D points.
fn moments(xs: &[f64]) -> ([f64; 2], [f64; 4]) {
    let n = (xs.len() / 2) as f64;
    let mut m = [0.0; 2];
    for p in xs.chunks_exact(2) {
        m[0] += p[0] / n;
        m[1] += p[1] / n;
    }
    let mut c = [0.0; 4];
    for p in xs.chunks_exact(2) {
        let (a, b) = (p[0] - m[0], p[1] - m[1]);
        c[0] += a * a / n;
        c[1] += a * b / n;
        c[3] += b * b / n;
    }
    c[2] = c[1];
    (m, c)
}

fn main() {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs"));
    std::fs::create_dir_all(&out_dir).expect("cannot create the output directory");

    let truth = GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 2,
        weights: vec![0.5, 0.5],
        means: vec![1.0, 1.0, 7.0, 7.0],
        covariances: vec![3.0, 2.0, 2.0, 3.0, 2.0, -1.0, -1.0, 2.0],
    })
    .expect("valid truth");

    // Exactly 200 points from each component, then shuffled: one row each.
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut rows: Vec<[f64; 2]> = Vec::with_capacity(2 * PER_COMPONENT);
    // The sample mean and covariance of each component's own 200 points:
    // the best any estimator could do from this data.
    let mut sample_moments = Vec::new();
    for (mean, cov) in [
        ([1.0, 1.0], [3.0, 2.0, 2.0, 3.0]),
        ([7.0, 7.0], [2.0, -1.0, -1.0, 2.0]),
    ] {
        let xs = gaussian(mean, cov).sample(&mut rng, PER_COMPONENT);
        sample_moments.push(moments(&xs));
        rows.extend(xs.chunks_exact(2).map(|p| [p[0], p[1]]));
    }
    rows.shuffle(&mut rng);
    let stream: Vec<f64> = rows.iter().flatten().copied().collect();

    let params = Params {
        components: emstream::model::ComponentCount::Fixed(2),
        covariance: CovarianceType::Full,
        warmup: WARMUP,
        batch_size: BATCH,
        seed: 7,
        // A short, finite stream: alpha = 1 weights every mini-batch about
        // equally (a running average), which suits 400 points better than
        // the default 0.95 made for long streams.
        step_decay: 1.0,
        ..Params::default()
    }
    .check()
    .expect("valid parameters");
    let mut em = StepwiseEm::new(params, 2);

    common::stream_in_stages(
        &mut em,
        &stream,
        &common::Snapshots {
            stages: &STAGES,
            warmup: WARMUP,
            truth: &truth,
            title: "Example 1",
            out_dir: &out_dir,
            prefix: "seed1",
        },
    );

    let model = em.mixture().expect("400 points end the warm-up");
    let diff = diff_mixtures(&truth, model, 20_000, 1).expect("same dimension");
    println!("\nrecovered parameters (matched to the truth by symmetric KL):");
    for c in &diff.components {
        let (t, m) = (c.old, c.new);
        let tc = truth.covariance_matrix(t);
        let mc = model.covariance_matrix(m);
        println!(
            "  component {t}: weight {:.3} (truth {:.3})  mean ({:6.3}, {:6.3}) (truth ({}, {}))",
            model.weights()[m],
            truth.weights()[t],
            model.mean(m)[0],
            model.mean(m)[1],
            truth.mean(t)[0],
            truth.mean(t)[1],
        );
        println!(
            "               covariance [[{:6.3}, {:6.3}], [{:6.3}, {:6.3}]] (truth [[{}, {}], [{}, {}]])",
            mc[0], mc[1], mc[2], mc[3], tc[0], tc[1], tc[2], tc[3]
        );
        let (sm, sc) = &sample_moments[t];
        println!(
            "               the component's own 200 points: mean ({:6.3}, {:6.3}), covariance [[{:6.3}, {:6.3}], [{:6.3}, {:6.3}]]",
            sm[0], sm[1], sc[0], sc[1], sc[2], sc[3]
        );
        println!(
            "               recovered mean off the truth by {:.3} sd, covariance by {:.1} % (relative Frobenius)",
            c.mean_shift_sd,
            100.0 * c.covariance_change
        );
    }
    println!(
        "mixture symmetric KL to the truth: {:.4} +- {:.4}",
        diff.kl.symmetric, diff.kl.std_error
    );
}
