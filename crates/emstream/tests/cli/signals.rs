//! SIGTERM mid-stream: drain, flush, final checkpoint, exit 0.

use std::io::Write;
use std::process::Stdio;

use crate::util::*;

#[test]
fn sigterm_mid_stream_saves_every_point_read() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut child = spawn_with(emstream().arg("run").args(saving(&ck)), Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    // Not a multiple of the batch size: the last 23 points are pending.
    stdin.write_all(&text(&points(723, 50))).unwrap();
    stdin.flush().unwrap();
    // A mid-stream checkpoint shows when the learner has them all.
    wait_for_points(&ck, 723);
    let err = StderrLines::new(&mut child);
    let err = sigterm_ok(&mut child, err);
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
    let mut child = spawn_with(emstream().args(&args), Stdio::piped());
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
/// once with status 130. The drain is made long on purpose: nobody reads
/// the score output, so the learner cannot hand on its scores and the drain
/// waits. (A warm-up fit no longer makes it long: a signal stops the fit.)
#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec!["run", "--score", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The writer blocks once the unread score output has filled its pipe
    // and the learner waits on it; it ends when the child exits.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&text(&points(200_000, 51)));
    });
    let mut err = StderrLines::new(&mut child);
    err.wait_for("fitting the first model");
    std::thread::sleep(std::time::Duration::from_millis(500));
    sigterm(&child);
    err.wait_for("second signal exits at once");
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(130), "{}", err.rest());
    writer.join().unwrap();
}

#[test]
fn stop_when_idle_ends_an_open_stdin_like_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = file(&dir, "m.ckpt");
    let mut child = spawn_with(
        emstream()
            .args(["run", "--stop-when-idle", "0.5", "--checkpoint"])
            .arg(&ckpt)
            .args(SMALL),
        Stdio::piped(),
    );
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
