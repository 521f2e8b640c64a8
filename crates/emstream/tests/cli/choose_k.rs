//! Choosing K (`-k auto`) and keeping it right (`--adapt-components`)
//! through the binary.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::util::*;

const THREE: [[f64; 2]; 3] = [[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]];
const FOUR: [[f64; 2]; 4] = [[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]];

/// `n` 2-D points, CSV lines, from unit-variance clusters at `centres`
/// drawn with equal probability.
fn clustered(centres: &[[f64; 2]], n: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 1.0).unwrap();
    (0..n)
        .map(|_| {
            let c = centres[rng.random_range(0..centres.len())];
            let x = c[0] + noise.sample(&mut rng);
            let y = c[1] + 0.8 * noise.sample(&mut rng);
            format!("{x:.6},{y:.6}")
        })
        .collect()
}

/// Settings of the adaptive runs: K chosen on a warm-up of 2,000 points,
/// batches of 500.
const ADAPT: &[&str] = &[
    "-k",
    "auto",
    "--max-components",
    "5",
    "--adapt-components",
    "--warmup",
    "2000",
    "--batch-size",
    "500",
    "--seed",
    "5",
];

fn run_ck(ck: &std::path::Path, extra: &[&str], input: &[u8]) -> std::process::Output {
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_stdin(&args, input)
}

#[test]
fn auto_picks_the_true_k_and_inspect_shows_how() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let args = [
        "--components",
        "auto",
        "--max-components",
        "5",
        "--warmup",
        "1500",
        "--batch-size",
        "250",
    ];
    let out = run_ck(&ck, &args, &text(&clustered(&THREE, 4000, 1)));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("BIC per K: K=1 "), "{err}");
    assert!(err.contains("chose smallest K with BIC within 10"), "{err}");
    let v = inspect_json(&ck);
    assert_eq!(v["components"], 3);
    let per_k = v["bic_by_k"].as_array().unwrap();
    assert_eq!(per_k.len(), 5);
    assert_eq!(per_k[2]["k"], 3);
    let bic = |k: usize| per_k[k - 1]["bic"].as_f64().unwrap();
    assert!(bic(3) < bic(2) - 100.0 && bic(3) < bic(1), "{per_k:?}");
    assert!(v["chosen_by"].as_str().unwrap().contains("K = 3,"), "{v}");
    assert_eq!(v["params"]["components"], "auto");
    // BIC and AIC of the model on its 2,000 most recent points.
    assert_eq!(v["recent_points"], 2000);
    // Same log-likelihood: BIC - AIC = p (ln n - 2), with p = 17 free
    // parameters of 3 full 2-D components ((K - 1) + K d + K d (d + 1) / 2)
    // and n = 2000 recent points.
    let (b, a) = (v["bic"].as_f64().unwrap(), v["aic"].as_f64().unwrap());
    let expect = 17.0 * (2000f64.ln() - 2.0);
    assert!(
        a.is_finite() && ((b - a) - expect).abs() < 1e-6 * b.abs().max(1.0),
        "bic {b} aic {a}: gap {} instead of {expect}",
        b - a
    );
    let table = emstream().arg("inspect").arg(&ck).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    for want in [
        "K chosen by",
        "BIC by K",
        "BIC / AIC",
        "2000 most recent points",
    ] {
        assert!(table.contains(want), "missing {want:?} in\n{table}");
    }
    // Responsibilities per point: K is known only after the warm-up, and
    // every line has the chosen K's (label, log_lik, 3 resp).
    let out = run_stdin(
        &[
            "run",
            "-k",
            "auto",
            "--warmup",
            "500",
            "--score",
            "--score-fields",
        ],
        &text(&clustered(&THREE, 1200, 9)),
    );
    assert_ok(&out);
    let lines = String::from_utf8(out.stdout).unwrap();
    assert_eq!(lines.lines().count(), 1200);
    assert!(lines.lines().all(|l| l.split(',').count() == 5), "{lines}");
    // A fixed K on resume must be the model's; `auto` fits a chosen K.
    let more = text(&clustered(&THREE, 100, 2));
    let out = run_ck(&ck, &["--resume", "-k", "2"], &more);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("auto (K = 3 now)"),
        "{}",
        stderr(&out)
    );
    assert_ok(&run_ck(&ck, &["--resume", "-k", "3"], &more));
    assert_ok(&run_ck(&ck, &["--resume", "-k", "auto"], &more));
}

#[test]
fn adapted_k_reaches_a_new_cluster_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, halves) = (file(&dir, "whole.ckpt"), file(&dir, "halves.ckpt"));
    let mut lines = clustered(&THREE, 8_000, 3);
    lines.extend(clustered(&FOUR, 20_000, 4));
    let out = run_ck(&whole, ADAPT, &text(&lines));
    assert_ok(&out);
    let err = stderr(&out);
    // "K 3 -> 4 (Spawn) after N points: ..." with N within 5,000 points
    // of the change at 8,000.
    let line = err
        .lines()
        .find(|l| l.contains("K 3 -> 4"))
        .unwrap_or_else(|| panic!("no change of K in\n{err}"));
    let at: u64 = number_after(line, " after ").unwrap_or_else(|| panic!("{line}"));
    assert!(at > 8_000 && at <= 13_000, "{line}");
    let v = inspect_json(&whole);
    assert_eq!(v["components"], 4);
    assert_eq!(v["component_changes"], 1);
    assert_eq!(v["recent_points"], 2500);
    assert!(v["chosen_by"].as_str().unwrap().contains("K = 3,"));

    // Stopped before the change and resumed: the same bits.
    // At a batch boundary: the end of a run learns from its partial batch.
    let cut = 6_500;
    assert_ok(&run_ck(&halves, ADAPT, &text(&lines[..cut])));
    let out = run_ck(&halves, &["--resume"], &text(&lines[cut..]));
    assert_ok(&out);
    assert!(stderr(&out).contains("K 3 -> 4"), "{}", stderr(&out));
    let (a, b) = (
        emstream::checkpoint::load(&whole).unwrap().learner.state(),
        emstream::checkpoint::load(&halves).unwrap().learner.state(),
    );
    assert_eq!(a.counters, b.counters);
    assert_eq!(a.adapter, b.adapter);
    assert_eq!(a.selection, b.selection);
    assert!(a.recent == b.recent, "the reservoirs differ");
    assert!(a == b, "the learners differ");
    assert!(learner_bytes(&whole) == learner_bytes(&halves));

    // The adaptation belongs to the model: switching it off on resume is
    // refused, and so are responsibilities (K changes mid-stream).
    let more = text(&clustered(&FOUR, 100, 5));
    let out = run_ck(&whole, &["--resume", "--adapt-components=false"], &more);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run_ck(&whole, &["--resume", "--score", "--score-fields"], &more);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_cluster_that_stops_appearing_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut lines = clustered(&THREE, 10_000, 6);
    lines.extend(clustered(&THREE[..2], 40_000, 7));
    let out = run_ck(&ck, ADAPT, &text(&lines));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("K 3 -> 2 (Prune"), "{err}");
    let v = inspect_json(&ck);
    assert_eq!(v["components"], 2);
    // The cluster at (0, 8) is gone from the model.
    for m in v["means"].as_array().unwrap() {
        assert!(m[1].as_f64().unwrap() < 4.0, "{}", v["means"]);
    }
}

/// The yardstick: a million stationary points change K at most
/// once. Too slow unoptimised: `cargo test --release --test cli
/// stationary -- --ignored` (BENCHMARKS.md has the numbers).
#[test]
#[ignore]
fn a_stationary_million_points_change_k_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = run_ck(&ck, ADAPT, &text(&clustered(&THREE, 1_000_000, 8)));
    assert_ok(&out);
    let v = inspect_json(&ck);
    assert!(v["component_changes"].as_u64().unwrap() <= 1, "{v}");
    assert_eq!(v["components"], 3);
}
