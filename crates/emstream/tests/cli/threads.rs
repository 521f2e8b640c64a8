//! `--threads` and `--parse-threads`: the E-step and the parser run on
//! any number of threads and give the same model, bit for bit.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::util::*;

/// `n` points of dimension `d` from four clusters with different spreads.
fn wide_points(n: usize, d: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 1.0).unwrap();
    (0..n)
        .map(|i| {
            let c = (i * 7 + i / 3) % 4;
            (0..d)
                .map(|a| {
                    let centre = if a % 4 == c { 6.0 } else { 0.0 } - c as f64;
                    let spread = 0.5 + 0.3 * c as f64;
                    format!("{:.5}", centre + spread * noise.sample(&mut rng))
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn any_number_of_threads_writes_the_same_model_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    // d = 32, K = 4: 512 points per E-step sub-block, so every batch of
    // 1,000 is two sub-blocks and the warm-up pass over 2,000 points four.
    let input = text(&wide_points(6500, 32, 21));
    let mut first: Option<(Vec<u8>, Vec<u8>, serde_json::Value)> = None;
    for threads in ["1", "2", "3", "8"] {
        let ck = file(&dir, &format!("t{threads}.ckpt"));
        let out = run_stdin(
            &[
                "run",
                "-k",
                "4",
                "--warmup",
                "2000",
                "--batch-size",
                "1000",
                "--seed",
                "3",
                "--score",
                "--threads",
                threads,
                "--checkpoint",
                ck.to_str().unwrap(),
            ],
            &input,
        );
        assert_ok(&out);
        assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 6500);
        let json = inspect_json_unstamped(&ck);
        assert_eq!(json["points_seen"], 6500);
        let this = (learner_bytes(&ck), out.stdout, json);
        match &first {
            None => first = Some(this),
            Some(one) => {
                assert!(this.0 == one.0, "--threads {threads}: another model");
                assert!(this.1 == one.1, "--threads {threads}: other scores");
                assert_eq!(this.2, one.2, "--threads {threads}");
            }
        }
    }
}

#[test]
fn zero_threads_is_refused_with_what_to_change() {
    let out = run_stdin(&["run", "--threads", "0"], b"1,2\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("threads = 0"), "{}", stderr(&out));
}

#[test]
fn any_number_of_parse_threads_gives_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    // A header, bad records, comments and a quoted field over two lines
    // among 40,000 records of 3 fields (about 1.2 MB: many chunks).
    let mut lines = vec!["x,y,z".to_string()];
    for (i, p) in wide_points(40_000, 3, 5).into_iter().enumerate() {
        match i % 4999 {
            100 => lines.push("1,2,not-a-number".into()),
            200 => lines.push("# a comment".into()),
            300 => lines.push("1,2".into()),
            400 => lines.push("\"1.5\",2,\"3\n.5\"".into()),
            _ => {}
        }
        lines.push(p);
    }
    let input = text(&lines);
    // (model bytes, score lines, skip reports, inspect --json)
    type Run = (Vec<u8>, Vec<u8>, Vec<String>, serde_json::Value);
    let mut first: Option<Run> = None;
    for threads in ["1", "2", "4"] {
        let ck = file(&dir, &format!("p{threads}.ckpt"));
        let out = run_stdin(
            &[
                "run",
                "-k",
                "3",
                "--seed",
                "3",
                "--score",
                "--score-keep",
                "@line,x",
                "--parse-threads",
                threads,
                "--log-level",
                "emstream=debug",
                "--checkpoint",
                ck.to_str().unwrap(),
            ],
            &input,
        );
        assert_ok(&out);
        let err = stderr(&out);
        let handed = err
            .lines()
            .find(|l| l.contains("by the parse threads"))
            .unwrap_or_else(|| panic!("no parser stage line: {err}"));
        if threads != "1" {
            assert!(!handed.contains(" 0 by the parse threads"), "{handed}");
        }
        // The reports of skipped records, without their time stamps.
        let skipped: Vec<String> = err
            .lines()
            .filter(|l| l.contains("skipped"))
            .map(|l| l.split_once("emstream: ").map_or(l, |(_, m)| m).to_owned())
            .collect();
        assert!(skipped.len() >= 5, "{err}");
        let json = inspect_json_unstamped(&ck);
        let this = (learner_bytes(&ck), out.stdout, skipped, json);
        match &first {
            None => first = Some(this),
            Some(one) => {
                assert!(this.0 == one.0, "--parse-threads {threads}: another model");
                assert!(this.1 == one.1, "--parse-threads {threads}: other scores");
                assert_eq!(this.2, one.2, "--parse-threads {threads}");
                assert_eq!(this.3, one.3, "--parse-threads {threads}");
            }
        }
    }
}

#[test]
fn zero_parse_threads_is_refused_with_what_to_change() {
    let out = run_stdin(&["run", "--parse-threads", "0"], b"1,2\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("parse_threads = 0"),
        "{}",
        stderr(&out)
    );
}
