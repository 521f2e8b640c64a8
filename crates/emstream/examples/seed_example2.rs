//! The EM write-up's second worked example, streamed: three 1-D Gaussians,
//! means -5, 5 and 0, variances 1.2, 1.8 and 1.6, 100 points each, shuffled
//! (seeded) and fed to [`StepwiseEm`] with a small warm-up and small
//! mini-batches so that the model goes through several stages. Prints the
//! recovered parameters next to the truth and writes an SVG of the mixture
//! (histogram of the points seen, each weighted component density, the
//! mixture density, the truth dashed) at four stages of the stream:
//! `docs/seed2_stage{1..4}.svg` (or into the directory given as the first
//! argument).
//!
//! ```text
//! cargo run --example seed_example2 [OUT_DIR]
//! ```

mod common;

use std::path::PathBuf;

use emstream::model::{CovarianceType, GaussianMixture, MixtureParams, Params, StepwiseEm};
use emstream::report::diff::diff_mixtures;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Points per component, as in the write-up.
const PER_COMPONENT: usize = 100;
/// Points buffered before the first model.
const WARMUP: usize = 30;
/// Mini-batch size.
const BATCH: usize = 15;
/// Stream positions (points seen) at which a snapshot is drawn.
const STAGES: [usize; 4] = [30, 75, 150, 300];
/// The write-up's means and variances.
const MEANS: [f64; 3] = [-5.0, 5.0, 0.0];
const VARIANCES: [f64; 3] = [1.2, 1.8, 1.6];

fn main() {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs"));
    std::fs::create_dir_all(&out_dir).expect("cannot create the output directory");

    let truth = GaussianMixture::new(MixtureParams {
        covariance: CovarianceType::Full,
        dim: 1,
        weights: vec![1.0 / 3.0; 3],
        means: MEANS.to_vec(),
        covariances: VARIANCES.to_vec(),
    })
    .expect("valid truth");

    // Exactly 100 points from each component, then shuffled.
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut stream: Vec<f64> = Vec::with_capacity(3 * PER_COMPONENT);
    let mut sample_moments = Vec::new();
    for (mean, var) in MEANS.iter().zip(VARIANCES) {
        let normal = Normal::new(*mean, var.sqrt()).expect("positive variance");
        let xs: Vec<f64> = (0..PER_COMPONENT)
            .map(|_| normal.sample(&mut rng))
            .collect();
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        sample_moments.push((m, v));
        stream.extend(xs);
    }
    stream.shuffle(&mut rng);

    let params = Params {
        components: emstream::model::ComponentCount::Fixed(3),
        covariance: CovarianceType::Full,
        warmup: WARMUP,
        batch_size: BATCH,
        seed: 7,
        // A short, finite stream: alpha = 1 weights every mini-batch about
        // equally (a running average), which suits 300 points better than
        // the default 0.95 made for long streams.
        step_decay: 1.0,
        ..Params::default()
    }
    .check()
    .expect("valid parameters");
    let mut em = StepwiseEm::new(params, 1);

    common::stream_in_stages(
        &mut em,
        &stream,
        &common::Snapshots {
            stages: &STAGES,
            warmup: WARMUP,
            truth: &truth,
            title: "Example 2",
            out_dir: &out_dir,
            prefix: "seed2",
        },
    );

    let model = em.mixture().expect("300 points end the warm-up");
    let diff = diff_mixtures(&truth, model, 20_000, 1).expect("same dimension");
    println!("\nrecovered parameters (matched to the truth by symmetric KL):");
    println!("  truth: weight    mean  variance | recovered: weight    mean  variance | own 100 points: mean  variance");
    for c in &diff.components {
        let (t, m) = (c.old, c.new);
        let (sm, sv) = sample_moments[t];
        println!(
            "         {:6.3} {:7.3} {:9.3} |            {:6.3} {:7.3} {:9.3} |                {:5.3} {:9.3}",
            truth.weights()[t],
            truth.mean(t)[0],
            truth.covariance_matrix(t)[0],
            model.weights()[m],
            model.mean(m)[0],
            model.covariance_matrix(m)[0],
            sm,
            sv
        );
    }
    println!(
        "mixture symmetric KL to the truth: {:.4} +- {:.4}",
        diff.kl.symmetric, diff.kl.std_error
    );
}
