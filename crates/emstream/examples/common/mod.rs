//! What the two seed examples share: streaming a data set through the
//! learner in stages and writing an SVG snapshot of the mixture after each.

use std::path::Path;

use emstream::model::{GaussianMixture, StepwiseEm};
use emstream::report::diff::diff_mixtures;
use emstream::report::plot::{render_svg, PlotOptions};

/// Where and when to take snapshots.
pub struct Snapshots<'a> {
    /// Counts of points after which to draw; the last is the whole stream.
    pub stages: &'a [usize],
    /// The warm-up size (its stage is labelled as the first model).
    pub warmup: usize,
    /// The true mixture, drawn dashed and compared against.
    pub truth: &'a GaussianMixture,
    /// Start of each picture's title, e.g. "Example 1".
    pub title: &'a str,
    /// Directory of the SVG files.
    pub out_dir: &'a Path,
    /// File name prefix: files are `{prefix}_stage{n}.svg`.
    pub prefix: &'a str,
}

/// Feeds `stream` (rows of the learner's dimension) to `em` up to each
/// stage (flushing after the last), and after each writes a snapshot: the
/// data so far with the model and the truth. Prints the symmetric KL
/// divergence to the truth per stage.
pub fn stream_in_stages(em: &mut StepwiseEm, stream: &[f64], snap: &Snapshots) {
    let Snapshots {
        stages,
        warmup,
        truth,
        title,
        out_dir,
        prefix,
    } = *snap;
    let dim = em.dim();
    let total = stream.len() / dim;
    let mut fed = 0;
    for (n, &stage) in stages.iter().enumerate() {
        em.observe(&stream[dim * fed..dim * stage], None)
            .expect("the stream is well formed");
        fed = stage;
        if stage == total {
            em.flush(None).expect("the stream is well formed");
        }
        let Some(model) = em.mixture() else {
            println!("after {stage} points: still warming up");
            continue;
        };
        let what = if stage == warmup {
            " (first model, from the warm-up)"
        } else {
            ""
        };
        let options = PlotOptions {
            title: Some(format!("{title} after {stage} of {total} points{what}")),
            reference: Some(truth.clone()),
            reference_label: Some("truth".into()),
            // Both dimensions have similar spreads: one scale keeps the
            // ellipses' true shapes.
            equal_aspect: true,
            ..PlotOptions::new()
        };
        let svg = render_svg(model, Some(&stream[..dim * stage]), &options).expect("a plot");
        let path = out_dir.join(format!("{prefix}_stage{}.svg", n + 1));
        std::fs::write(&path, svg).expect("cannot write the SVG");
        let diff = diff_mixtures(truth, model, 20_000, 1).expect("same dimension");
        println!(
            "after {stage:3} points: symmetric KL to the truth {:.4}  -> {}",
            diff.kl.symmetric,
            path.display()
        );
    }
}
