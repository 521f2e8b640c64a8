//! Rounded values: each dimension's resolution detected, shown, kept in
//! the checkpoint, and bounding how sharp a component can be.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::util::*;

/// `n` 2-D points `round(N(c, 0.6²))` around three centres.
fn integer_points(n: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.6).unwrap();
    let centres = [(0.0, 0.0), (6.0, 2.0), (2.0, 7.0)];
    (0..n)
        .map(|i| {
            let (cx, cy) = centres[i % 3];
            let x: f64 = cx + noise.sample(&mut rng);
            let y: f64 = cy + noise.sample(&mut rng);
            format!("{},{}", x.round(), y.round())
        })
        .collect()
}

/// The log-likelihoods `score` gives `points` under the model in `ck`.
fn scores(ck: &std::path::Path, points: &str) -> Vec<f64> {
    let out = run_stdin(
        &["score", "--model", ck.to_str().unwrap()],
        points.as_bytes(),
    );
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn integer_data_gets_no_component_sharper_than_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let input = text(&integer_points(20_000, 1));
    let out = run_stdin(
        &[
            "run",
            "-k",
            "8",
            "--warmup",
            "2000",
            "--seed",
            "7",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &input,
    );
    assert_ok(&out);
    let v = inspect_json(&ck);
    assert_eq!(v["resolution"], serde_json::json!([1.0, 1.0]));
    // The floor q²/(2π) of the step 1.
    let floor = (1.0 / (2.0 * std::f64::consts::PI)).sqrt() * (1.0 - 1e-9);
    for sd in v["std_devs"].as_array().unwrap() {
        for s in sd.as_array().unwrap() {
            assert!(s.as_f64().unwrap() >= floor, "{sd}");
        }
    }
    // A value between lattice points is not an anomaly next to the
    // lattice points around it: no spike on a repeated value.
    let s = scores(&ck, "0.5,0.5\n0,0\n1,1\n0,1\n1,0\n");
    let worst_lattice = s[1..].iter().copied().fold(f64::INFINITY, f64::min);
    assert!(s[0] > worst_lattice - 1.0, "{s:?}");
    let out = emstream()
        .args(["inspect", ck.to_str().unwrap()])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("resolution        dim 0 1, dim 1 1"), "{t}");
}

#[test]
fn continuous_data_has_no_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(600, 3)));
    assert_ok(&out);
    assert_eq!(
        inspect_json(&ck)["resolution"],
        serde_json::json!([null, null])
    );
}

#[test]
fn a_resolution_that_is_not_a_positive_divisor_of_the_data_is_a_usage_error() {
    let input = text(&integer_points(3000, 2));
    for bad in ["0", "-1", "nan", "abc", "0.1,,1"] {
        let out = run_stdin(&["run", "--resolution", bad, "--warmup", "500"], &input);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("positive step"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    // 0.3 does not divide the integers' step 1.
    let out = run_stdin(&["run", "--resolution", "0.3", "--warmup", "500"], &input);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("give 1 or a divisor of it"),
        "{}",
        stderr(&out)
    );
    // Three steps for two dimensions.
    let out = run_stdin(&["run", "--resolution", "1,1,1", "--warmup", "500"], &input);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("one per dimension"),
        "{}",
        stderr(&out)
    );
    // A divisor is fine, and kept.
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = run_stdin(
        &[
            "run",
            "--resolution",
            "0.5,auto",
            "--warmup",
            "500",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &input,
    );
    assert_ok(&out);
    let v = inspect_json(&ck);
    assert_eq!(v["resolution"], serde_json::json!([0.5, 1.0]));
    assert_eq!(v["params"]["resolution"], serde_json::json!([0.5, "auto"]));
}
