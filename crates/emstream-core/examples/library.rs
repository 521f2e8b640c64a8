//! Using emstream as a library, without tokio, files or sockets: learn a
//! mixture from a `Vec` of points fed in slices, as a stream would, then
//! use the model.
//!
//! ```text
//! cargo run --release --example library
//! ```

use emstream_core::model::{testdata, CovarianceType, Params, StepwiseEm};
use rand::SeedableRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 100,000 points from the EM write-up's first example: two 2-D
    // clusters at (1, 1) and (7, 7), row-major.
    let truth = testdata::two_clusters();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let points: Vec<f64> = truth.sample(&mut rng, 100_000);

    // Options are validated once; an out-of-range one is an error that
    // says what to change.
    let params = Params {
        components: emstream_core::model::ComponentCount::Fixed(2),
        covariance: CovarianceType::Full,
        seed: 7,
        ..Params::default()
    }
    .check()?;
    let mut learner = StepwiseEm::new(params, 2);

    // Feed the stream in whatever slices it arrives in: the learner cuts
    // exact mini-batches itself, so the result does not depend on them.
    for slice in points.chunks(2 * 4_096) {
        learner.observe(slice, None)?;
    }
    learner.flush(None)?; // end of stream: learn from the last partial batch

    let model = learner.mixture().expect("more points than the warm-up");
    println!("points seen: {}", learner.counters().points_seen);
    for j in 0..model.n_components() {
        println!(
            "component {j}: weight {:.3}, mean {:.3?}, covariance {:.3?}",
            model.weights()[j],
            model.mean(j),
            model.covariance_matrix(j)
        );
    }
    let x = [4.0, 4.0];
    let mut resp = [0.0; 2];
    let ll = model.responsibilities(&x, &mut resp);
    println!(
        "log density at {x:?}: {ll:.3}, responsibilities {resp:.3?}, label {}",
        model.predict(&x)
    );
    Ok(())
}
