//! Points on stdin or a file, to a checkpoint, read back by `inspect`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::util::*;

#[test]
fn pipe_to_checkpoint_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "model.ckpt");
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(1000, 1)));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("1000 points used"), "{err}");
    assert!(err.contains("0 records rejected"), "{err}");
    assert!(err.contains("average log-likelihood -"), "{err}");
    assert!(err.contains("points/s"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "run writes nothing to stdout without --score"
    );

    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 1000);
    assert_eq!(j["pending_points"], 0);
    assert_eq!(j["dim"], 2);
    assert_eq!(j["components"], 2);
    assert_eq!(j["covariance"], "full");
    assert_eq!(j["records_rejected"], 0);
    assert_eq!(j["weights"].as_array().unwrap().len(), 2);
    // The clusters hold a third and two thirds of the points.
    let mut w: Vec<f64> = j["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    w.sort_by(f64::total_cmp);
    assert!((w[0] - 1.0 / 3.0).abs() < 0.05, "weights {w:?}");

    // The table form shows the same model: its points and each
    // component's weight, as in the JSON (to the table's 4 decimals).
    let out = emstream().args(["inspect"]).arg(&ck).output().unwrap();
    assert_ok(&out);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("points seen       1000"), "{table}");
    assert!(
        table.contains("2 components, 2 dimensions, full covariance"),
        "{table}"
    );
    for weight in j["weights"].as_array().unwrap() {
        let shown = format!("{:.4}", weight.as_f64().unwrap());
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(shown.as_str())),
            "weight {shown} not in the table:\n{table}"
        );
    }
}

#[test]
fn no_checkpoint_is_said_at_the_start() {
    let mut args = vec!["run"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(300, 2)));
    assert_ok(&out);
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("no --checkpoint given"), "{err}");
    assert!(err.contains("300 points used"), "{err}");
}

#[test]
fn input_file_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = file(&dir, "points.csv");
    let ck = file(&dir, "model.ckpt");
    // Three fields; use the first and third.
    let lines: Vec<String> = points(400, 3)
        .iter()
        .map(|l| {
            let (x, y) = l.split_once(',').unwrap();
            format!("{x},999,{y}")
        })
        .collect();
    std::fs::write(&data, text(&lines)).unwrap();
    let mut args = vec![
        "run",
        "--input",
        data.to_str().unwrap(),
        "--columns",
        "0,2",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = emstream()
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&out);
    let j = inspect_json(&ck);
    assert_eq!(j["dim"], 2);
    assert_eq!(j["points_seen"], 400);
    for mean in j["means"].as_array().unwrap() {
        let m = mean.as_array().unwrap();
        assert!(
            m[1].as_f64().unwrap().abs() < 10.0,
            "field 2 was not used: {m:?}"
        );
    }
}

#[test]
fn missing_input_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = emstream()
        .args(["run", "--input"])
        .arg(file(&dir, "nope.csv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.csv"), "{}", stderr(&out));
}

#[test]
fn score_lines_on_stdout() {
    let mut args = vec!["run", "--score"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(500, 4)));
    assert_ok(&out);
    let lines = String::from_utf8(out.stdout).unwrap();
    let data_lines = lines
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(data_lines, 500, "one score line per point:\n{lines}");
}

#[test]
fn closed_stdout_with_score_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = file(&dir, "points.csv");
    let ck = file(&dir, "model.ckpt");
    std::fs::write(&data, text(&points(50_000, 5))).unwrap();
    let mut args = vec![
        "run",
        "--score",
        "--input",
        data.to_str().unwrap(),
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    // Like `| head -n 3`.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
    }
    drop(out);
    let err = StderrLines::new(&mut child);
    let status = wait_exit(&mut child);
    let err = err.rest();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("points used"), "{err}");
    // The model learned so far was saved.
    let j = inspect_json(&ck);
    assert!(j["points_seen"].as_u64().unwrap() > 0);
}

#[test]
fn anomalies_are_counted_into_the_summary_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut lines = points(600, 6);
    // Far from both clusters, after the warm-up.
    lines.insert(400, "60.0,-70.0".into());
    lines.insert(500, "-80.0,90.0".into());
    let mut args = vec![
        "run",
        "--score",
        "--alert-below",
        "-50",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_ok(&out);
    assert!(stderr(&out).contains(", 2 anomalies"), "{}", stderr(&out));
    assert_eq!(inspect_json(&ck)["anomalies"], 2);
}

#[test]
fn a_missing_checkpoint_directory_is_refused_at_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("no/such/dir/m.ckpt");
    let out = run_stdin(&["run", "--checkpoint", ck.to_str().unwrap()], b"1,2\n");
    // A usage error (exit 2), as docs/run.md says.
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn json_input_gives_json_score_lines_with_responsibilities() {
    let lines: Vec<String> = points(300, 7).iter().map(|l| format!("[{l}]")).collect();
    let mut args = vec!["run", "--format", "json", "--score", "--score-fields"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_ok(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 300);
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert!(v.is_object(), "{line}");
    }
}

#[test]
fn run_with_a_closed_stderr_still_learns_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let data = file(&dir, "points.csv");
    // Bad records and the summary are reported on stderr.
    let mut input = text(&points(400, 6));
    input.extend_from_slice(b"1,x\n1,2,3\n");
    std::fs::write(&data, input).unwrap();
    let mut args = vec![
        "run",
        "--input",
        data.to_str().unwrap(),
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = emstream()
        .args(&args)
        .stderr(closed_pipe())
        .output()
        .unwrap();
    // A panic would exit with 101.
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(inspect_json(&ck)["points_seen"], 400);
}
