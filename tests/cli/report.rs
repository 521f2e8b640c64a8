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
