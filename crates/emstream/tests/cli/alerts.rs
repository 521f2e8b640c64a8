//! `run --score --alert-quantile`: the threshold follows the points the
//! model explains, through a sustained shift of the stream.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::util::*;

/// Points before the shift.
const BEFORE: usize = 20_000;
/// Points after it.
const AFTER: usize = 12_000;

/// 2-D points of N(0, I), then of N((8, 8), I) for good, with a planted
/// anomaly every 250 points from the 200th after the shift on: 9 standard
/// deviations from the centre of the points around it. Returns the lines
/// and the planted rows.
fn shifted_stream() -> (Vec<String>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let noise = Normal::new(0.0, 1.0).unwrap();
    let mut lines = Vec::with_capacity(BEFORE + AFTER);
    let mut planted = Vec::new();
    for i in 0..BEFORE + AFTER {
        let c = if i < BEFORE { 0.0 } else { 8.0 };
        let (x, y) = if i >= BEFORE + 200 && (i - BEFORE) % 250 == 200 {
            planted.push(i);
            let a = i as f64;
            (c + 9.0 * a.cos(), c + 9.0 * a.sin())
        } else {
            (c + noise.sample(&mut rng), c + noise.sample(&mut rng))
        };
        lines.push(format!("{x:.6},{y:.6}"));
    }
    (lines, planted)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn a_planted_anomaly_is_flagged_soon_after_a_shift_the_model_followed() {
    let (lines, planted) = shifted_stream();
    let input = text(&lines);
    for extra in [&[][..], &["--step-floor", "0.01"], &["--adapt-components"]] {
        let mut args = vec![
            "run",
            "-k",
            "2",
            "--seed",
            "1",
            "--score",
            "--alert-quantile",
            "0.001",
        ];
        args.extend_from_slice(extra);
        let out = run_stdin(&args, &input);
        assert_ok(&out);
        let rows: Vec<(f64, bool)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[1].parse().unwrap(), f[f.len() - 1] == "1")
            })
            .collect();
        assert_eq!(rows.len(), lines.len());
        let normal = |from: usize, to: usize| -> Vec<f64> {
            (from..to)
                .filter(|i| !planted.contains(i))
                .map(|i| rows[i].0)
                .collect()
        };
        let before = median(&mut normal(BEFORE - 5_000, BEFORE));
        // The model has followed the shift once the median log-likelihood
        // of 250 points is back within three times the one before.
        let followed = (BEFORE..BEFORE + AFTER - 250)
            .step_by(250)
            .find(|&i| median(&mut normal(i, i + 250)) > 3.0 * before)
            .unwrap_or_else(|| panic!("{extra:?}: the model never followed the shift"));
        let mut judged = 0;
        for &p in planted.iter().filter(|&&p| p >= followed + 500) {
            // Five times worse than the normal points around it.
            let around = median(&mut normal(p - 500, p));
            if rows[p].0 < 5.0 * around {
                judged += 1;
                assert!(
                    rows[p].1,
                    "{extra:?}: the anomaly at row {p} ({:.1}, median {around:.1}) is not flagged; the model followed at row {followed}",
                    rows[p].0
                );
            }
        }
        assert!(
            judged >= 20,
            "{extra:?}: only {judged} planted anomalies judged"
        );
        // And the normal points are not flagged much more than Q.
        let false_alarms = (followed + 500..BEFORE + AFTER)
            .filter(|i| !planted.contains(i) && rows[*i].1)
            .count();
        assert!(
            false_alarms < 40,
            "{extra:?}: {false_alarms} false alarms after row {}",
            followed + 500
        );
    }
}
