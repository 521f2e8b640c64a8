//! SIGTERM mid-stream: drain, flush, final checkpoint, exit 0.

use std::io::Write;
use std::process::Stdio;

use crate::util::*;

#[test]
fn sigterm_mid_stream_saves_every_point_read() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec![
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-interval",
        "0.05",
    ];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Not a multiple of the batch size: the last 23 points are pending.
    stdin.write_all(&text(&points(723, 50))).unwrap();
    stdin.flush().unwrap();
    // A mid-stream checkpoint shows when the learner has them all.
    wait_for_points(&ck, 723);
    let err = StderrLines::new(&mut child);
    sigterm(&child);
    let status = wait_exit(&mut child);
    let err = err.rest();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(err.contains("723 points used"), "{err}");
    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 723);
    assert_eq!(j["pending_points"], 0);
    drop(stdin);
}

#[test]
fn checkpoint_every_writes_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec![
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-every",
        "100",
    ];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(&points(400, 51))).unwrap();
    stdin.flush().unwrap();
    // The stream is still open: only a mid-stream checkpoint can show this.
    wait_for_points(&ck, 400);
    drop(stdin);
    let status = wait_exit(&mut child);
    assert!(status.success());
    assert_eq!(inspect_json(&ck)["points_seen"], 400);
}

/// A second signal while the first one's drain is still working exits at
/// once with status 130. The drain is made long on purpose: every point is
/// still in the warm-up buffer, so the first fit runs after the signal.
#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut child = emstream()
        .args([
            "run",
            "-k",
            "6",
            "--warmup",
            "1000000",
            "--init-seeds",
            "50",
            "--checkpoint",
            ck.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // write_all returns once the reader has taken all but a pipe's worth.
    stdin.write_all(&text(&points(200_000, 51))).unwrap();
    stdin.flush().unwrap();
    let mut err = StderrLines::new(&mut child);
    sigterm(&child);
    err.wait_for("second signal exits at once");
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(130), "{}", err.rest());
    drop(stdin);
}

#[test]
fn stop_when_idle_ends_an_open_stdin_like_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = file(&dir, "m.ckpt");
    let mut child = emstream()
        .args(["run", "--stop-when-idle", "0.5", "--checkpoint"])
        .arg(&ckpt)
        .args(SMALL)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Points arrive, then nothing, and stdin stays open.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(&points(1000, 2))).unwrap();
    stdin.flush().unwrap();
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.learner.counters().points_seen, 1000);
    drop(stdin);
}
