//! Process and file safety: one writer per
//! checkpoint, bounded reads of regular files only, symlinked checkpoint
//! paths, an orphaned older generation, and the documented exit codes.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success());
}

/// Runs `emstream ARGS` with no stdin, under [`PATIENCE`].
fn run(args: &[&str]) -> Output {
    let child = emstream()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    wait_output(child)
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// A lock file deleted under a running writer (a clean-up script) is
/// taken again at its next save: a second writer is still refused.
#[test]
fn a_deleted_lock_file_is_taken_again_before_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = saving(&ck);
    args.insert(0, "run");
    let mut first = emstream()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut first_in = first.stdin.take().unwrap();
    use std::io::Write;
    first_in.write_all(&text(&points(300, 1))).unwrap();
    first_in.flush().unwrap();
    wait_for_points(&ck, 300);
    let lock = file(&dir, ".m.ckpt.lock");
    std::fs::remove_file(&lock).unwrap();
    first_in.write_all(&text(&points(300, 2))).unwrap();
    first_in.flush().unwrap();
    wait_for_points(&ck, 600);
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        first.id().to_string()
    );
    let mut second = vec!["run", "--overwrite"];
    second.extend_from_slice(&args[1..]);
    let out = run_stdin(&second, &text(&points(300, 3)));
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    drop(first_in);
    assert_ok(&wait_output(first));
    assert_eq!(inspect_json(&ck)["points_seen"], 600);
}

#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let mut first = emstream()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut first_in = first.stdin.take().unwrap();
    // The first writer holds the lock once its lock file names it.
    let lock = file(&dir, ".m.ckpt.lock");
    let deadline = Instant::now() + PATIENCE;
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(Instant::now() < deadline, "the first writer never locked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_stdin(&args, &text(&points(300, 1)));
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("another emstream process (pid {})", first.id())),
        "{msg}"
    );
    assert!(!ck.exists(), "the refused writer wrote: {msg}");

    use std::io::Write;
    first_in.write_all(&text(&points(400, 2))).unwrap();
    drop(first_in);
    let out = wait_output(first);
    assert_ok(&out);
    assert_eq!(inspect_json(&ck)["points_seen"], 400);
    // Now free: a resume takes the lock.
    let mut resume = args.clone();
    resume.push("--resume");
    assert_ok(&run_stdin(&resume, &text(&points(100, 3))));
}

#[test]
fn cleanup_spares_temporary_files_of_live_processes() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut sleeper = Command::new("sleep").arg("30").spawn_guarded().unwrap();
    let live = file(&dir, &format!(".m.ckpt.tmp.{}", sleeper.id()));
    let dead = file(&dir, ".m.ckpt.tmp.99999999");
    std::fs::write(&live, b"being written").unwrap();
    std::fs::write(&dead, b"left by a crash").unwrap();
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(300, 4)));
    assert_ok(&out);
    assert!(live.exists(), "{}", stderr(&out));
    assert!(!dead.exists(), "{}", stderr(&out));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn devices_fifos_and_directories_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let zero = file(&dir, "zero.ckpt");
    symlink("/dev/zero", &zero).unwrap();
    let fifo = file(&dir, "fifo.ckpt");
    mkfifo(&fifo);
    let sub = file(&dir, "sub");
    std::fs::create_dir(&sub).unwrap();
    let started = Instant::now();
    for bad in [&zero, &fifo, &sub] {
        let p = bad.to_str().unwrap();
        for args in [
            vec!["inspect", p],
            vec!["diff", p, p],
            vec!["plot", p, "-o", "/dev/null"],
            vec!["score", "--model", p],
        ] {
            let out = run(&args);
            assert_eq!(code(&out), Some(1), "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("not a regular file")
                    || stderr(&out).contains("is a directory")
                    || stderr(&out).contains("a directory"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
        let out = run(&["run", "--config", p]);
        assert_eq!(code(&out), Some(2), "--config {p}: {}", stderr(&out));
        assert!(stderr(&out).contains("cannot read config file"));
    }
    // A FIFO or /dev/zero as the checkpoint of a resume.
    for bad in [&zero, &fifo] {
        let p = bad.to_str().unwrap();
        let out = run_stdin(&["run", "--checkpoint", p, "--resume"], b"1,2\n");
        assert_ne!(code(&out), Some(0), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("must be a regular file"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_symlinked_checkpoint_is_followed_and_generations_sit_beside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let store = file(&dir, "store");
    std::fs::create_dir(&store).unwrap();
    let target = store.join("model.ckpt");
    let link = file(&dir, "current.ckpt");
    symlink(&target, &link).unwrap();
    let mut args = vec!["run", "--checkpoint", link.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(300, 5)));
    assert_ok(&out);
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    let mut resume = args.clone();
    resume.push("--resume");
    assert_ok(&run_stdin(&resume, &text(&points(100, 6))));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
    let gen1 = store.join("model.ckpt.1");
    assert!(std::fs::symlink_metadata(&gen1).unwrap().is_file());
    assert!(!file(&dir, "current.ckpt.1").exists());
    assert_eq!(inspect_json(&link)["points_seen"], 400);
    assert_eq!(inspect_json(&gen1)["points_seen"], 300);
}

/// A resume through a link to nothing (an unmounted volume) is refused:
/// it would start a new model where the old one should be.
#[test]
fn a_resume_through_a_dangling_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The mount point is there, the volume is not mounted.
    std::fs::create_dir(file(&dir, "volume")).unwrap();
    let target = file(&dir, "volume").join("model.ckpt");
    let link = file(&dir, "current.ckpt");
    symlink(&target, &link).unwrap();
    let mut args = vec!["run", "--resume", "--checkpoint", link.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&points(300, 5)));
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("which does not exist: --resume would start a new model there"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
}

#[test]
fn an_orphaned_older_generation_is_not_silently_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    assert_ok(&run_stdin(&args, &text(&points(300, 7))));
    // A crash between rotation and rename leaves only PATH.1.
    std::fs::rename(&ck, file(&dir, "m.ckpt.1")).unwrap();
    let out = run_stdin(&args, &text(&points(300, 8)));
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("m.ckpt.1 exists"), "{}", stderr(&out));
    assert!(!ck.exists());
    let mut resume = args.clone();
    resume.push("--resume");
    let out = run_stdin(&resume, &text(&points(100, 9)));
    assert_ok(&out);
    assert_eq!(inspect_json(&ck)["points_seen"], 400);
}

/// Every exit status docs/run.md documents, each for a cause it names.
#[test]
fn every_documented_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let p = ck.to_str().unwrap();
    // 0: success.
    let out = run_stdin(&["run", "--checkpoint", p, "--warmup", "10"], b"1,2\n3,4\n");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // 2: usage and configuration errors.
    for (args, says) in [
        (
            vec!["run", "--checkpoint", "/nonexistent/dir/x.ckpt"],
            "does not exist",
        ),
        (vec!["run", "--keep", "-1"], "from 0 to 1000"),
        (vec!["run", "--keep", "1000000000000"], "from 0 to 1000"),
        (vec!["run", "--checkpoint", p], "already exists"),
        (vec!["run", "--bogus"], "unexpected argument"),
        (vec!["run", "--max-connections", "-3"], "invalid value"),
    ] {
        let out = run_stdin(&args, b"");
        assert_eq!(code(&out), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    // 1: a report command that fails, a run that cannot read its input.
    let out = run(&["inspect", &format!("{p}.missing")]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let out = run(&["run", "--input", &format!("{p}.missing")]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    // 3: a bad record under --on-error fail.
    let mut bad = text(&points(300, 10));
    bad.extend_from_slice(b"x,y\n");
    let mut args = vec!["run", "--on-error", "fail"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &bad);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    // 130: a second signal (tests/cli/signals.rs covers it in each phase).
}

/// Case 8's report messages: plot's two kinds of bad `--dims` exit alike,
/// `inspect` names rejects in the run summary's words, and `diff` of two
/// far apart models prints no 300-digit numbers.
#[test]
fn report_messages_agree_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = file(&dir, "a.ckpt");
    let b = file(&dir, "b.ckpt");
    let mut args = vec!["run", "--checkpoint", a.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let mut input = text(&points(300, 11));
    input.extend_from_slice(b"1,nope\n");
    let out = run_stdin(&args, &input);
    assert_ok(&out);
    assert!(stderr(&out).contains("1 not a number"), "{}", stderr(&out));
    let shown = run(&["inspect", a.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&shown.stdout);
    assert!(table.contains("(1 not a number)"), "{table}");

    let far: Vec<String> = points(300, 12)
        .iter()
        .map(|l| {
            let (x, y) = l.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            format!("{},{}", 1e6 + x * 1e-3, -1e6 + y * 1e-3)
        })
        .collect();
    let mut args = vec!["run", "--checkpoint", b.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    assert_ok(&run_stdin(&args, &text(&far)));
    let out = run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_ok(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    let longest = report
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest <= 12, "a {longest}-digit number:\n{report}");
    assert!(!report.contains("+- inf"), "{report}");

    let svg = file(&dir, "p.svg");
    for dims in ["0,5", "0,0"] {
        let out = run(&["plot", a.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
        assert_ok(&out);
        let out = run(&[
            "plot",
            a.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
            "--dims",
            dims,
        ]);
        assert_eq!(code(&out), Some(2), "--dims {dims}: {}", stderr(&out));
    }
}
