//! The report commands wired into the binary: score, plot, diff.

use crate::util::*;

#[test]
fn score_plot_and_diff_read_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (file(&dir, "a.ckpt"), file(&dir, "b.ckpt"));
    for (ck, seed) in [(&a, 80), (&b, 81)] {
        let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
        args.extend_from_slice(SMALL);
        assert_ok(&run_stdin(&args, &text(&points(400, seed))));
    }

    let out = run_stdin(
        &["score", "--model", a.to_str().unwrap()],
        &text(&points(3, 82)),
    );
    assert_ok(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);

    let svg = file(&dir, "a.svg");
    let out = emstream()
        .arg("plot")
        .arg(&a)
        .arg("-o")
        .arg(&svg)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    // Two models of the same two clusters: both components matched, and
    // the mixtures close.
    let out = emstream().arg("diff").arg(&a).arg(&b).output().unwrap();
    assert_ok(&out);
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(
        diff.contains(&format!("old: {} (K = 2, d = 2)", a.display()))
            && diff.contains(&format!("new: {} (K = 2, d = 2)", b.display())),
        "{diff}"
    );
    let matched = diff
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 9 && f[..2].iter().all(|x| x.parse::<usize>().is_ok())
        })
        .count();
    assert_eq!(matched, 2, "one row per matched component:\n{diff}");
    let kl: f64 = number_after(&diff, "mixture symmetric KL: ")
        .unwrap_or_else(|| panic!("no mixture KL:\n{diff}"));
    assert!(kl < 0.1, "the same clusters, far apart by KL {kl}:\n{diff}");

    let out = emstream()
        .args(["score", "--model"])
        .arg(file(&dir, "none.ckpt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A model to read back.
fn model(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let ck = file(dir, "m.ckpt");
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    assert_ok(&run_stdin(&args, &text(&points(400, 83))));
    ck
}

#[test]
fn inspect_and_score_to_a_closed_stdout_exit_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let ck = model(&dir);
    for json in [false, true] {
        let mut cmd = emstream();
        cmd.arg("inspect").arg(&ck);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.stdout(closed_pipe()).output().unwrap();
        assert_ok(&out);
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }

    let data = file(&dir, "points.csv");
    std::fs::write(&data, text(&points(20_000, 84))).unwrap();
    let out = emstream()
        .args(["score", "--model", ck.to_str().unwrap(), "--input"])
        .arg(&data)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn score_messages_to_a_closed_stderr_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let ck = model(&dir);
    // Rejected records and anomalies are reported on stderr.
    let mut input = text(&points(100, 85));
    input.extend_from_slice(b"1,x\n1,2,3\n1000,1000\n");
    let data = file(&dir, "points.csv");
    std::fs::write(&data, input).unwrap();
    let out = emstream()
        .args(["score", "--model", ck.to_str().unwrap(), "--input"])
        .arg(&data)
        .args(["--alert-below", "-50"])
        .stdout(std::process::Stdio::null())
        .stderr(closed_pipe())
        .output()
        .unwrap();
    // A panic would exit with 101.
    assert_eq!(out.status.code(), Some(0));
}

/// `score` with a checkpoint's model writes exactly the lines `run --score`
/// writes for the points it learns first after resuming from that
/// checkpoint: both score each point under the model before it is learned.
#[test]
fn score_matches_run_score_on_the_first_batch_after_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "model.ckpt");
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    assert_ok(&run_stdin(&args, &text(&points(400, 90))));
    let frozen = file(&dir, "frozen.ckpt");
    std::fs::copy(&ck, &frozen).unwrap();

    // Fewer points than one batch: all scored by the checkpoint's model.
    let fresh = text(&points(40, 91));
    let batch: usize = SMALL
        .windows(2)
        .find(|w| w[0] == "--batch-size")
        .map(|w| w[1].parse().unwrap())
        .expect("SMALL sets --batch-size");
    assert!(40 <= batch);
    for extra in [&[][..], &["--score-fields"][..], &["--format", "json"][..]] {
        std::fs::copy(&frozen, &ck).unwrap();
        let mut run_args = vec![
            "run",
            "--resume",
            "--score",
            "--checkpoint",
            ck.to_str().unwrap(),
        ];
        run_args.extend_from_slice(extra);
        let learned = run_stdin(
            &run_args,
            &if extra.contains(&"json") {
                json_lines(&fresh)
            } else {
                fresh.clone()
            },
        );
        assert_ok(&learned);
        let mut score_args = vec!["score", "--model", frozen.to_str().unwrap()];
        score_args.extend_from_slice(extra);
        let scored = run_stdin(
            &score_args,
            &if extra.contains(&"json") {
                json_lines(&fresh)
            } else {
                fresh.clone()
            },
        );
        assert_ok(&scored);
        assert_eq!(
            String::from_utf8_lossy(&learned.stdout).lines().count(),
            40,
            "{extra:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&learned.stdout),
            String::from_utf8_lossy(&scored.stdout),
            "{extra:?}"
        );
    }
}

/// CSV lines `a,b` as JSON arrays `[a,b]`.
fn json_lines(csv: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(csv)
        .lines()
        .map(|l| format!("[{l}]\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn plot_refuses_data_of_which_no_point_fits_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let ck = model(&dir);
    // 3-D points for a 2-D model: before, an SVG without any point was
    // written and plot exited 0.
    let data = file(&dir, "three.csv");
    std::fs::write(&data, "1,2,3\n4,5,6\n7,8,9\n").unwrap();
    let svg = file(&dir, "m.svg");
    let out = emstream()
        .arg("plot")
        .arg(&ck)
        .arg("-o")
        .arg(&svg)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--columns"), "says what to change: {err}");
    assert!(err.contains("dimension 2"), "{err}");
    assert!(!svg.exists());

    // The same with a usable column choice draws the points.
    let out = emstream()
        .arg("plot")
        .arg(&ck)
        .arg("-o")
        .arg(&svg)
        .arg("--data")
        .arg(&data)
        .args(["--columns", "0,2"])
        .output()
        .unwrap();
    assert_ok(&out);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(drawn.matches("<circle cx=").count(), 3, "{drawn}");
}

/// An input of which `score` can use nothing is an error, as in `run`,
/// not an empty success; an empty input is not.
#[test]
fn score_fails_when_every_record_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ck = model(&dir);
    let out = run_stdin(
        &["score", "--model", ck.to_str().unwrap()],
        b"1,2,3\n1,x\nhot,cold\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("nothing was scored: all 3 records of stdin were rejected")
            && err.contains("2 dimensions")
            && err.contains("--columns"),
        "{err}"
    );
    let out = run_stdin(&["score", "--model", ck.to_str().unwrap()], b"");
    assert_ok(&out);
    assert!(out.stdout.is_empty());
}
