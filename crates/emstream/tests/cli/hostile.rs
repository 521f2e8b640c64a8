//! Unlucky and hostile data never kills, freezes or poisons the
//! model. One test per numbered case of the issue, each failing on the code
//! before the fix.

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;

fn load(path: &std::path::Path) -> emstream::checkpoint::Checkpoint {
    emstream::checkpoint::load(path).expect("checkpoint loads")
}

/// Case 1: two 30,000-field lines over TCP (each under the 64 KiB line
/// limit) used to fix d = 30,000 and abort on a 14.4 GB allocation. They
/// are now rejected (a model that wide would not fit in --max-memory), the
/// dimension comes from the good points, and the daemon says from whom.
#[test]
fn case1_a_client_cannot_pick_a_huge_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let args = saving(&ck);
    let (mut child, mut err, addr) = listen(&args);
    let wide = format!("{}1\n", "1,".repeat(29_999));
    assert!(wide.len() < 64 * 1024);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(wide.as_bytes()).unwrap();
    c.write_all(wide.as_bytes()).unwrap();
    c.write_all(&text(&points(300, 1))).unwrap();
    drop(c);
    let said = err.wait_for("dimension 2 taken from");
    assert!(said.contains("--dim"), "{said}");
    wait_for_points(&ck, 300);
    let rest = sigterm_ok(&mut child, err);
    assert!(rest.contains("memory budget"), "{rest}");
    let ck = load(&ck);
    assert_eq!(ck.learner.dim(), 2);
    assert_eq!(ck.rejected.total(), 2);
}

/// Case 1, configured side: a dimension the memory budget cannot hold is
/// refused at start with a message naming --max-memory.
#[test]
fn case1_a_configured_dimension_beyond_the_memory_budget_is_refused() {
    let out = run_stdin(&["run", "--dim", "30000"], b"");
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("max_memory") && e.contains("--max-memory"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

/// Case 2: a stray first line (a count, a date) fixed the dimension for
/// good and every good point was rejected. The majority of the first
/// records decides now; the strays are the rejects.
#[test]
fn case2_one_stray_first_line_does_not_fix_the_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut input = b"5\n2024 01 15\n".to_vec();
    input.extend_from_slice(&text(&points(2000, 2)));
    // No --delimiter: `auto` votes over the first lines like the
    // dimension, so the stray `2024 01 15` does not make it pick blanks.
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &input);
    assert_ok(&out);
    let e = stderr(&out);
    assert!(e.contains("fields are separated by ','"), "{e}");
    assert!(e.contains("2000 points used, 2 records rejected"), "{e}");
    assert!(e.contains("line 1") && e.contains("--dim"), "{e}");
    assert_eq!(load(&ck).learner.dim(), 2);
}

/// Case 3: a warm-up buffer of copies of one point (a stuck sensor) made
/// the run exit 1 and saved the poisoned buffer, so every resume failed.
/// Now the warm-up drops the copies and waits; a resume fed good data fits.
#[test]
fn case3_a_stuck_sensor_does_not_kill_the_warm_up_or_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let stuck: Vec<String> = (0..1000).map(|_| "1,2".to_string()).collect();
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&stuck));
    assert_ok(&out);
    assert!(stderr(&out).contains("waiting for more varied data"));
    let saved = load(&ck);
    assert!(saved.learner.mixture().is_none(), "no model of one point");
    assert!(saved.learner.pending_points() < 200);

    let mut args = vec!["run", "--resume", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(1000, 3)));
    assert_ok(&out);
    let resumed = load(&ck);
    let mix = resumed
        .learner
        .mixture()
        .expect("the resume fitted a model");
    assert_eq!(mix.n_components(), 2);
}

/// Case 5: a stop during the warm-up fitted a model on the few points
/// buffered, a poor start that resume kept. The buffer is saved unfitted.
#[test]
fn case5_a_signal_during_the_warm_up_saves_the_buffer_unfitted() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut child = spawn_with(
        emstream().args([
            "run",
            "-k",
            "2",
            "--warmup",
            "5000",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--checkpoint-interval",
            "0.05",
        ]),
        Stdio::piped(),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(&points(60, 5))).unwrap();
    stdin.flush().unwrap();
    wait_for_points(&ck, 60);
    let err = StderrLines::new(&mut child);
    let err = sigterm_ok(&mut child, err);
    assert!(
        err.contains("warm-up not finished: 60 of 5000 points buffered, saved unfitted"),
        "{err}"
    );
    let saved = load(&ck);
    assert!(saved.learner.mixture().is_none(), "fitted on 60 points");
    assert_eq!(saved.learner.pending_points(), 60);
    drop(stdin);
}

/// `n` points of an 8-D stream of 6 clusters, one CSV line each.
fn eight_d(n: usize) -> Vec<String> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let noise = Normal::new(0.0, 1.0).unwrap();
    (0..n)
        .map(|i| {
            let c = (i * 7) % 6;
            let coords: Vec<String> = (0..8)
                .map(|a| {
                    let centre = 6.0 * (((c * 3 + a) % 5) as f64 - 2.0);
                    format!("{:.6}", centre + noise.sample(&mut rng))
                })
                .collect();
            coords.join(",")
        })
        .collect()
}

/// Case 5, end of input: 60 points of an 8-D K = 6 stream. The checkpoint
/// holds a model fitted on them beside the buffer, the run says so and
/// exits 0, inspect, score, plot and diff use that model, and a resume
/// with the rest of the stream goes on filling the warm-up and ends
/// exactly where one uninterrupted run does.
#[test]
fn case5_the_end_of_the_input_during_the_warm_up_saves_the_buffer_unfitted() {
    let dir = tempfile::tempdir().unwrap();
    let (part, whole) = (file(&dir, "part.ckpt"), file(&dir, "whole.ckpt"));
    let lines = eight_d(6000);
    let opts = [
        "-k",
        "6",
        "--warmup",
        "2000",
        "--batch-size",
        "100",
        "--seed",
        "4",
    ];
    let run = |ck: &std::path::Path, extra: &[&str], input: &[String]| {
        let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
        args.extend_from_slice(&opts);
        args.extend_from_slice(extra);
        let out = run_stdin(&args, &text(input));
        assert_ok(&out);
        stderr(&out)
    };
    let e = run(&part, &[], &lines[..60]);
    assert!(
        e.contains("warm-up not finished: 60 of 2000 points buffered; fitted a model of 6 components on them, saved with the buffer"),
        "{e}"
    );
    assert!(e.contains("--resume continues"), "{e}");
    let saved = load(&part);
    assert!(saved.learner.mixture().is_none(), "the warm-up goes on");
    assert_eq!(
        saved.learner.provisional().map(|m| m.n_components()),
        Some(6)
    );
    assert_eq!(saved.learner.pending_points(), 60);
    // The reports show the saved model.
    let v = inspect_json(&part);
    assert_eq!(v["warmed_up"], false);
    assert_eq!(v["fitted_on_the_fly"], false);
    assert_eq!(v["components"], 6);
    assert_eq!(v["weights"].as_array().map(Vec::len), Some(6));
    let out = emstream()
        .args(["inspect", part.to_str().unwrap()])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.lines()
            .nth(1)
            .unwrap()
            .contains("6 components, 8 dimensions"),
        "{t}"
    );
    let p = part.to_str().unwrap();
    let scored = run_stdin(&["score", "--model", p], &text(&lines[60..70]));
    assert_ok(&scored);
    assert_eq!(String::from_utf8_lossy(&scored.stdout).lines().count(), 10);
    for args in [vec!["diff", p, p], vec!["plot", p, "-o", "/dev/null"]] {
        let out = run_stdin(&args, b"");
        assert_ok(&out);
    }
    // The checkpoint is unchanged by them; a resume goes on filling it.
    assert_eq!(load(&part).learner.pending_points(), 60);
    run(&part, &["--resume"], &lines[60..]);
    run(&whole, &[], &lines);
    assert!(load(&whole).learner.mixture().is_some());
    assert_eq!(learner_bytes(&part), learner_bytes(&whole));
}

/// Case 7: option arithmetic. A batch size of 2^63 overflowed to a zero
/// chunk size and panicked the learner; a warm-up of 2^63 wrapped to 0;
/// a warm-up of 2,000,000 held hundreds of MB. All are refused up front.
#[test]
fn case7_huge_batch_and_warm_up_sizes_are_refused_clearly() {
    for (flag, value) in [
        ("--batch-size", "9223372036854775808"),
        ("--warmup", "9223372036854775808"),
        ("--warmup", "2000000"),
    ] {
        let out = run_stdin(&["run", flag, value], &text(&points(100, 7)));
        let e = stderr(&out);
        assert!(!out.status.success(), "{flag} {value} accepted: {e}");
        assert!(
            e.contains(flag) && (e.contains("at most") || e.contains("between")),
            "{e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
}

/// Case 8: a gross outlier was scored `label 0, log_lik NaN`. It has no
/// label and -inf now (null, with an outlier marker, in JSON).
#[test]
fn case8_a_gross_outlier_scores_minus_infinity_without_a_label() {
    let mut input = text(&points(400, 8));
    input.extend_from_slice(b"1e300,1e300\n");
    let mut args = vec!["run", "--score"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &input);
    assert_ok(&out);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 401);
    assert_eq!(lines[400], ",-inf");
    assert!(!lines.iter().any(|l| l.to_lowercase().contains("nan")));

    let mut json_input = Vec::new();
    for p in points(400, 8) {
        json_input.extend_from_slice(format!("[{p}]\n").as_bytes());
    }
    json_input.extend_from_slice(b"[1e300,1e300]\n");
    let mut args = vec!["run", "--score", "--format", "json"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &json_input);
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["label"], serde_json::Value::Null);
    assert_eq!(last["outlier"], true);
}

/// Case 9: a client that disconnects mid-line had its torn last record
/// (`9.99,9.`) learned. It is rejected and counted now.
#[test]
fn case9_a_torn_last_record_over_tcp_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let args = saving(&ck);
    let (mut child, err, addr) = listen(&args);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&text(&points(300, 9))).unwrap();
    c.write_all(b"9.99,9.").unwrap();
    drop(c);
    // The torn record's reject is saved with the points.
    wait_until(
        "the torn record was never counted",
        || match emstream::checkpoint::load(&ck) {
            Ok(c) if c.rejected.total() == 1 => Ok(()),
            Ok(c) => Err(format!("{} rejected", c.rejected.total())),
            Err(e) => Err(e.to_string()),
        },
    );
    let rest = sigterm_ok(&mut child, err);
    assert!(
        rest.contains("300 points used, 1 records rejected"),
        "{rest}"
    );
    assert!(rest.contains("torn"), "{rest}");
}

/// Case 10: `--input /dev/urandom` learned hundreds of one-dimensional
/// "points" and wrote a checkpoint with exit 0. Input that is
/// overwhelmingly not points fails clearly and makes no model.
#[test]
fn case10_garbage_input_fails_clearly_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let child = spawn_with(
        emstream().args([
            "run",
            "--input",
            "/dev/urandom",
            "--checkpoint",
            ck.to_str().unwrap(),
        ]),
        Stdio::null(),
    );
    let out = wait_output(child);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("not points"), "{e}");
    assert!(!ck.exists(), "a model was saved from random bytes");
}

/// Case 11: a long warm-up fit ignored signals (seconds to minutes from
/// SIGTERM to exit). The fit stops at the signal and the buffer is saved.
/// The fit is made long by many seeds, each short, so the test measures
/// whether the fit looks at the stop request, not how often.
#[test]
fn case11_a_signal_stops_a_long_warm_up_fit() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut child = spawn_with(
        emstream().args([
            "run",
            "-k",
            "8",
            "--warmup",
            "5000",
            "--init-seeds",
            "100000",
            "--checkpoint",
            ck.to_str().unwrap(),
        ]),
        Stdio::piped(),
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut err = StderrLines::new(&mut child);
    stdin.write_all(&text(&points(5000, 11))).unwrap();
    stdin.flush().unwrap();
    err.wait_for("fitting the first model");
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child);
    let took = t.elapsed();
    let rest = err.rest();
    assert!(status.success(), "exit {status:?}: {rest}");
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    let saved = load(&ck);
    assert!(saved.learner.mixture().is_none());
    assert_eq!(saved.learner.pending_points(), 5000);
    drop(stdin);
}

/// A signal during the first fit of a stdin run: every point read is
/// saved (the warm-up's and those behind them), and a resume with no more
/// input fits the warm-up's, learns the rest and ends with the model of
/// one run over the same points.
#[test]
fn a_signal_in_the_first_fit_saves_every_point_read_and_a_resume_learns_them() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let opts = LONG_FIRST_FIT;
    let input = text(&points(3000, 12));
    // The fit is held (test-only fault injection) until the signal, which
    // is sent once the run has read the whole input.
    let mut child = spawn_with(
        emstream()
            .args(["run", "--checkpoint", ck.to_str().unwrap()])
            .args(LONG_FIRST_FIT)
            .env(SLOW_FIT, "120000"),
        Stdio::piped(),
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut err = StderrLines::new(&mut child);
    stdin.write_all(&input).unwrap();
    stdin.flush().unwrap();
    err.wait_for("fitting the first model");
    wait_until(
        "the run never read all its input",
        || match unread_in_pipe(&stdin) {
            0 => Ok(()),
            n => Err(format!("{n} bytes unread")),
        },
    );
    let rest = sigterm_ok(&mut child, err);
    drop(stdin);
    let saved = load(&ck);
    assert!(
        saved.learner.mixture().is_none(),
        "the fit finished: {rest}"
    );
    let held = saved.learner.pending_points();
    assert!(held > 2000, "{held} points held: {rest}");
    assert!(
        rest.contains(&format!(
            "first fit stopped: {held} points buffered (the warm-up's 2000 and {} received after them)",
            held - 2000
        )),
        "{rest}"
    );
    // All the input was read before the stop (it was written at once).
    assert_eq!(held, 3000, "{rest}");
    let out = run_stdin(
        &[
            &["run", "--resume", "--checkpoint", ck.to_str().unwrap()][..],
            opts,
        ]
        .concat(),
        b"",
    );
    assert_ok(&out);
    let e = stderr(&out);
    assert!(
        e.contains("fitting the first model on 2000 warm-up points, then learning the 1000 points kept behind them"),
        "{e}"
    );
    let one = file(&dir, "one.ckpt");
    assert_ok(&run_stdin(
        &[&["run", "--checkpoint", one.to_str().unwrap()][..], opts].concat(),
        &input,
    ));
    assert_eq!(learner_bytes(&ck), learner_bytes(&one));
    assert_eq!(load(&ck).learner.counters().points_seen, 3000);
}

/// `--stop-when-idle` took a long first fit for quiet: the learner takes
/// nothing meanwhile, the queues and the read-ahead (2 MiB under
/// `--max-memory 64 MiB`) fill, no record reaches the parser, and the run
/// ended "as at the end of the input" with a third of this file unread
/// (exit 0). The fit is busy time now.
#[test]
fn stop_when_idle_waits_for_a_long_first_fit() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let e = long_fit_over_a_file(
        &dir,
        400_000,
        13,
        &[
            "--max-memory",
            "67108864",
            "--stop-when-idle",
            "0.5",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
    );
    assert!(e.contains("400000 points used"), "{e}");
    assert_eq!(load(&ck).learner.counters().points_seen, 400_000);
}

/// The run reads ahead while the learner fits its first model: the parser
/// goes on past the learner's full queue (the stage's closing debug line
/// counts the batches that waited beyond it; without the read-ahead, none
/// do). A flag raised too late (the parser already waiting in a send to
/// the full queue) shows only in a release build, where the parser
/// outruns the learner's few steps before its fit: peak RSS there.
#[test]
fn the_run_reads_ahead_during_the_first_fit() {
    let dir = tempfile::tempdir().unwrap();
    let e = long_fit_over_a_file(&dir, 100_000, 14, &["--log-level", "emstream=debug"]);
    let ahead: usize =
        number_after(&e, "at most ").unwrap_or_else(|| panic!("no read-ahead count in: {e}"));
    assert!(ahead > 0, "nothing was read ahead: {e}");
    assert!(e.contains("100000 points used"), "{e}");
}

/// `emstream run --input FILE` over `points(n, seed)` in a file, with
/// `args` and a long first fit ([`LONG_FIRST_FIT`]); must succeed; its
/// stderr.
fn long_fit_over_a_file(dir: &tempfile::TempDir, n: usize, seed: u64, args: &[&str]) -> String {
    let data = file(dir, "points.csv");
    std::fs::write(&data, text(&points(n, seed))).unwrap();
    let input = ["run", "--input", data.to_str().unwrap()];
    let out = run_stdin(&[&input[..], args, LONG_FIRST_FIT].concat(), b"");
    assert_ok(&out);
    stderr(&out)
}

/// `points(n, seed)` with every coordinate multiplied by `scale`.
fn scaled(n: usize, seed: u64, scale: f64) -> Vec<String> {
    points(n, seed)
        .iter()
        .map(|p| {
            p.split(',')
                .map(|v| format!("{:e}", v.parse::<f64>().unwrap() * scale))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Case 4: a change of scale froze the model for ever: every later point
/// was a "gross outlier, ignored". The learner notices that most points of
/// a window are gross outliers and re-fits on the recent points.
#[test]
fn case4_a_change_of_scale_is_followed() {
    for (before, after, extra) in [(1e-6, 1.0, None), (1.0, 1e6, Some("0.05"))] {
        let dir = tempfile::tempdir().unwrap();
        let ck = file(&dir, "m.ckpt");
        let mut input = text(&scaled(400, 40, before));
        input.extend_from_slice(&text(&scaled(3000, 41, after)));
        let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
        args.extend_from_slice(SMALL);
        if let Some(floor) = extra {
            args.extend_from_slice(&["--step-floor", floor]);
        }
        let out = run_stdin(&args, &input);
        assert_ok(&out);
        let e = stderr(&out);
        assert!(e.contains("regime change"), "{e}");
        assert!(e.contains("1 regime changes followed"), "{e}");
        let saved = load(&ck);
        let outliers = saved.learner.counters().outliers;
        assert!(outliers < 1000, "{outliers} points ignored: {e}");
        let mix = saved.learner.mixture().expect("a model");
        // The clusters of `points` are at (-5, 2) and (4, -1), scaled.
        for j in 0..mix.n_components() {
            let m = mix.mean(j);
            let x = m[0] / after;
            assert!(
                (x + 5.0).abs() < 1.0 || (x - 4.0).abs() < 1.0,
                "component {j} at {m:?} after a change to scale {after}"
            );
        }
    }
}

/// Case 6: extreme scales learned a wrong model, dropped most points or
/// ended with "0 distinct usable points". Out of the supported range the
/// run now refuses with a message that says what is wrong and what to do.
#[test]
fn case6_an_unlearnable_scale_is_refused_truthfully() {
    for (scale, says) in [
        (1e-160, "multiply"),
        (1e-310, "multiply"),
        (1e149, "divide"),
    ] {
        let out = run_stdin(
            &["run", "-k", "2", "--warmup", "200"],
            &text(&scaled(1000, 6, scale)),
        );
        let e = stderr(&out);
        assert!(!out.status.success(), "scale {scale}: {e}");
        assert!(
            e.contains("scale is out of range") && e.contains(says),
            "{e}"
        );
    }
    // Inside the range, large and small scales both learn.
    for scale in [1e-90, 1e90] {
        let out = run_stdin(
            &["run", "-k", "2", "--warmup", "200"],
            &text(&scaled(1000, 6, scale)),
        );
        assert_ok(&out);
        assert!(
            stderr(&out).contains("1000 points used"),
            "{}",
            stderr(&out)
        );
    }
}
