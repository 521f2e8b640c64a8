//! Signals in every phase: while the checkpoint is
//! loaded, while the final checkpoint is saved, and with a reader of stdout
//! that never reads under `--score`.
//!
//! The load and the save are slowed with the test-only fault injection
//! `EMSTREAM_FAULT_SLOW_LOAD_MS` / `EMSTREAM_FAULT_SLOW_SAVE_MS` (in every
//! build), so the signals land inside those phases every time.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A checkpoint of 300 points at `ck`.
fn model(ck: &Path) {
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    assert_ok(&run_stdin(&args, &text(&points(300, 1))));
}

/// Waits until `pid` holds the writer lock of `ck` (it is then preparing
/// the checkpoint).
fn wait_locked(ck: &Path, pid: u32) {
    let name = format!(".{}.lock", ck.file_name().unwrap().to_str().unwrap());
    let lock = ck.with_file_name(name);
    let deadline = Instant::now() + PATIENCE;
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != pid.to_string() {
        assert!(Instant::now() < deadline, "{pid} never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sig(child: &Proc, name: &str) {
    let ok = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn resume_slowly(ck: &Path, var: &str) -> Proc {
    let mut args = vec!["run", "--resume", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    emstream()
        .args(&args)
        .env(var, "4000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap()
}

#[test]
fn a_signal_during_the_load_stops_the_run_before_any_input() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    model(&ck);
    let mut child = resume_slowly(&ck, "EMSTREAM_FAULT_SLOW_LOAD_MS");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(&points(100, 2))).unwrap();
    wait_locked(&ck, child.id());
    let err = StderrLines::new(&mut child);
    sig(&child, "-TERM");
    let status = wait_exit(&mut child);
    let err = err.rest();
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        err.contains("stopping: the checkpoint is being loaded"),
        "{err}"
    );
    assert_eq!(inspect_json(&ck)["points_seen"], 300);
    drop(stdin);
}

#[test]
fn a_second_signal_during_the_load_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    model(&ck);
    let mut child = resume_slowly(&ck, "EMSTREAM_FAULT_SLOW_LOAD_MS");
    wait_locked(&ck, child.id());
    let at = Instant::now();
    sig(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(200));
    sig(&child, "-INT");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(130));
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    assert_eq!(inspect_json(&ck)["points_seen"], 300);
}

#[test]
fn signals_during_the_final_save() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    model(&ck);
    for (signals, code) in [(1, 0), (2, 130)] {
        let mut child = resume_slowly(&ck, "EMSTREAM_FAULT_SLOW_SAVE_MS");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&text(&points(100, 3))).unwrap();
        // End of input: the learner finishes and the final save starts.
        drop(stdin);
        std::thread::sleep(Duration::from_millis(1000));
        let at = Instant::now();
        sig(&child, "-TERM");
        if signals == 2 {
            std::thread::sleep(Duration::from_millis(100));
            sig(&child, "-TERM");
        }
        let status = wait_exit(&mut child);
        assert_eq!(status.code(), Some(code));
        if signals == 2 {
            assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
        }
    }
    // The first run's save finished despite its signal: 300 + 100 points;
    // the second was cut short and left that file as it was.
    assert_eq!(inspect_json(&ck)["points_seen"], 400);
}

#[test]
fn a_stalled_stdout_reader_does_not_block_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    // A reader that never reads: `sleep` holding the pipe's read end.
    let mut reader = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let write_end = reader.stdin.take().unwrap();
    // A second descriptor of the pipe, to see it fill.
    let probe = std::os::fd::AsFd::as_fd(&write_end)
        .try_clone_to_owned()
        .unwrap();
    let pipe = Stdio::from(write_end);
    let mut args = vec![
        "run",
        "--score",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-interval",
        "0.1",
    ];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(pipe)
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Far more score output than a pipe and the score queue hold.
        let _ = stdin.write_all(&text(&points(200_000, 4)));
        stdin
    });
    // The stop comes once the unread score lines fill the pipe (64 KiB
    // on Linux): the score output is stalled.
    wait_until(
        "the score output never filled the pipe",
        || match unread_in_pipe(&probe) {
            n if n >= 60_000 => Ok(()),
            n => Err(format!("{n} bytes in the pipe")),
        },
    );
    let err = StderrLines::new(&mut child);
    let at = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child);
    let err = err.rest();
    assert!(status.success(), "{status:?}: {err}");
    assert!(at.elapsed() < Duration::from_secs(10), "{:?}", at.elapsed());
    assert!(err.contains("score lines of"), "{err}");
    assert!(err.contains("points dropped"), "{err}");
    // The final checkpoint holds every point the run used.
    let used: u64 = err
        .split(" points used")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {err}"));
    assert!(used > 0, "{err}");
    assert_eq!(inspect_json(&ck)["points_seen"], used);
    reader.kill().unwrap();
    reader.wait().unwrap();
    drop(feeder.join().unwrap());
}
