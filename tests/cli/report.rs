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

    let out = emstream().arg("diff").arg(&a).arg(&b).output().unwrap();
    assert_ok(&out);
    assert!(!out.stdout.is_empty());

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
