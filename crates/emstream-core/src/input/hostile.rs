//! The hostile-input robustness harness, shared by the property tests and
//! the fuzz target (`examples/fuzz_hostile.rs`): arbitrary bytes go
//! through the same framer, parser and learner as a network source, and
//! [`drive`] checks every promise the learner makes about hostile data.

use crate::model::{
    learner_memory, max_dim_for, LearnError, Params, ScoreBuffer, StepwiseEm, NO_LABEL,
};

use super::{Batch, Framer, Parser, ParserConfig};

/// Memory budget of a [`drive`] run: small, so that a stream that could
/// size the model by its data would be caught.
pub const DRIVE_BUDGET: u64 = 64 << 20;

/// Longest line a [`drive`] run accepts (the framer's limit).
pub const DRIVE_MAX_LINE: usize = 4096;

/// Small learner options that make a run fast and every phase (warm-up,
/// stream, re-fit) reachable with a few hundred points.
pub fn drive_params() -> Params {
    Params {
        components: crate::model::ComponentCount::Fixed(3),
        warmup: 64,
        batch_size: 16,
        init_seeds: 2,
        init_iters: 10,
        ..Params::default()
    }
}

/// Feeds `bytes` as one network stream (cut into reads of `cut` bytes,
/// torn last line dropped) through a [`Framer`], a majority-vote
/// [`Parser`] bounded by [`DRIVE_BUDGET`] and a [`StepwiseEm`] with
/// scores; then saves and restores the learner's state and feeds it
/// `resume` good points. Checks:
///
/// - no panic (the caller catches one), no error but a refused scale
///   ([`LearnError::Scale`], a true refusal);
/// - no NaN score, and a label for every point but a gross outlier;
/// - the learner's memory estimate within the budget, its warm-up buffer
///   within `warmup` points;
/// - on resume, progress: the state round-trips and the good points are
///   learned or buffered.
///
/// # Errors
///
/// The first broken promise, in words.
pub fn drive(bytes: &[u8], cut: usize, resume: &[f64]) -> Result<(), String> {
    let params = drive_params().check().map_err(|e| e.to_string())?;
    let max_dim = max_dim_for(&params, DRIVE_BUDGET);
    let mut framer = Framer::new(0, DRIVE_MAX_LINE, 1024);
    let mut parser = Parser::new(ParserConfig::default())
        .with_max_dim(max_dim)
        .with_dim_vote(16);
    let mut chunks = Vec::new();
    for piece in bytes.chunks(cut.max(1)) {
        framer.push(piece, &mut chunks);
    }
    framer.finish_torn(&mut chunks);
    let mut learner: Option<StepwiseEm> = None;
    let mut scores = ScoreBuffer::default();
    let mut feed = |batch: &Batch, learner: &mut Option<StepwiseEm>| -> Result<(), String> {
        if batch.values.is_empty() || batch.dim == 0 {
            return Ok(());
        }
        let l = learner.get_or_insert_with(|| StepwiseEm::new(params.clone(), batch.dim));
        scores.clear();
        match l.observe(&batch.values, Some(&mut scores)) {
            Ok(()) | Err(LearnError::Scale(_)) => {}
            Err(e) => return Err(format!("the learner failed on data: {e}")),
        }
        check_scores(&scores)?;
        check_memory(l, max_dim)
    };
    for chunk in &chunks {
        let mut batch = Batch::default();
        parser.parse(chunk, &mut batch);
        feed(&batch, &mut learner)?;
    }
    let mut batch = Batch::default();
    parser.finish(&mut batch);
    feed(&batch, &mut learner)?;
    let Some(mut l) = learner else {
        return Ok(());
    };
    scores.clear();
    match l.flush(Some(&mut scores)) {
        Ok(()) | Err(LearnError::Scale(_)) => {}
        Err(e) => return Err(format!("the final flush failed on data: {e}")),
    }
    check_scores(&scores)?;
    // Resume: the state round-trips and good points make progress.
    let mut l = StepwiseEm::from_state(l.state()).map_err(|e| format!("resume refused: {e}"))?;
    let d = l.dim();
    let good: Vec<f64> = resume
        .chunks_exact(2)
        .flat_map(|p| (0..d).map(move |a| p[a % 2]))
        .collect();
    let before = l.counters().points_seen + l.pending_points() as u64;
    scores.clear();
    match l.observe(&good, Some(&mut scores)) {
        Ok(()) => {}
        // A refused scale is a refusal of the old points: a fresh model
        // of the good points must then work.
        Err(LearnError::Scale(_)) => return Ok(()),
        Err(e) => return Err(format!("resume failed on good points: {e}")),
    }
    check_scores(&scores)?;
    let after = l.counters().points_seen + l.pending_points() as u64;
    if !good.is_empty() && after <= before && l.warmup_dropped() == 0 {
        return Err(format!(
            "no progress on resume: {before} points before, {after} after"
        ));
    }
    Ok(())
}

fn check_scores(scores: &ScoreBuffer) -> Result<(), String> {
    if scores.labels.len() != scores.log_lik.len() {
        return Err(format!(
            "{} labels for {} scores",
            scores.labels.len(),
            scores.log_lik.len()
        ));
    }
    for (i, (&ll, &label)) in scores.log_lik.iter().zip(&scores.labels).enumerate() {
        if ll.is_nan() {
            return Err(format!("score {i} is NaN"));
        }
        if ll == f64::NEG_INFINITY && label != NO_LABEL {
            return Err(format!("score {i} is -inf but has label {label}"));
        }
    }
    Ok(())
}

fn check_memory(l: &StepwiseEm, max_dim: usize) -> Result<(), String> {
    if l.dim() > max_dim {
        return Err(format!(
            "dimension {} above the budget's {max_dim}",
            l.dim()
        ));
    }
    match learner_memory(l.params(), l.dim()) {
        Some(m) if m <= DRIVE_BUDGET => {}
        m => return Err(format!("learner needs {m:?} bytes, over the budget")),
    }
    if l.mixture().is_none() && l.pending_points() > l.params().warmup {
        return Err(format!(
            "warm-up buffer of {} points, above the warm-up",
            l.pending_points()
        ));
    }
    Ok(())
}

/// A hostile stream from `seed`: segments of good 2-D points mixed with
/// changes of scale (1e-200 to 1e200), a stuck value, stray lines of other
/// field counts, non-finite values, garbage bytes, over-long lines, and a
/// torn last line. What the property tests feed [`drive`], and the seeds of
/// the fuzz target's corpus.
pub fn hostile_stream(seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut scale = 1.0f64;
    for _ in 0..rng.random_range(1..12) {
        let n = rng.random_range(0..150);
        match rng.random_range(0..8) {
            0 | 1 => {
                for i in 0..n {
                    let c = if i % 3 == 0 { -5.0 } else { 4.0 };
                    let x = (c + rng.random::<f64>()) * scale;
                    let y = (rng.random::<f64>() - 0.5) * scale;
                    out.extend_from_slice(format!("{x:e},{y:e}\n").as_bytes());
                }
            }
            2 => scale = 10f64.powi(rng.random_range(-200..=200)),
            3 => {
                let v = format!("{:e},{:e}\n", rng.random::<f64>() * scale, scale);
                for _ in 0..n * 5 {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            4 => {
                for _ in 0..rng.random_range(1..4) {
                    let fields = rng.random_range(1..40);
                    let line: Vec<String> = (0..fields).map(|f| f.to_string()).collect();
                    out.extend_from_slice(line.join(",").as_bytes());
                    out.push(b'\n');
                }
            }
            5 => {
                for t in [
                    "nan,1\n",
                    "inf,-inf\n",
                    "1e309,2\n",
                    "1,\n",
                    ",,\n",
                    "#c\n",
                    "\n",
                ] {
                    out.extend_from_slice(t.as_bytes());
                }
            }
            6 => {
                let len = rng.random_range(0..3 * DRIVE_MAX_LINE);
                out.extend((0..len).map(|_| rng.random::<u8>()));
            }
            _ => {
                let len = rng.random_range(DRIVE_MAX_LINE..2 * DRIVE_MAX_LINE);
                out.extend(std::iter::repeat_n(b'7', len));
                out.push(b'\n');
            }
        }
    }
    // A torn last record, sometimes.
    if rng.random::<bool>() {
        out.extend_from_slice(b"9.99,9.");
    }
    out
}

/// Good 2-D points for the resume check of [`drive`].
pub fn good_points(n: usize) -> Vec<f64> {
    (0..n)
        .flat_map(|i| {
            let c = if i % 3 == 0 { -5.0 } else { 4.0 };
            let t = i as f64 * 0.618_033_988_75;
            [c + t.fract(), (t * 7.0).fract() - 0.5]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property: over many hostile streams cut into reads of many sizes,
    /// every promise of [`drive`] holds.
    #[test]
    fn hostile_streams_never_break_the_learner() {
        let good = good_points(200);
        for seed in 0..60 {
            let bytes = hostile_stream(seed);
            for cut in [1 + seed as usize % 7, 4096] {
                if let Err(e) = drive(&bytes, cut, &good) {
                    panic!("seed {seed}, reads of {cut} bytes: {e}");
                }
            }
        }
    }

    /// The harness can fail: a learner that produced a NaN score would be
    /// caught.
    #[test]
    fn the_score_check_catches_nan() {
        let mut s = ScoreBuffer::default();
        s.log_lik.push(f64::NAN);
        s.labels.push(0);
        assert!(check_scores(&s).is_err());
        s.log_lik[0] = f64::NEG_INFINITY;
        assert!(check_scores(&s).is_err());
        s.labels[0] = NO_LABEL;
        assert!(check_scores(&s).is_ok());
    }
}
