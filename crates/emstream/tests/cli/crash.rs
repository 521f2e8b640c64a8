//! The crash test: 50 SIGKILLs of runs that checkpoint every few
//! milliseconds, half at seeded random moments and half as soon as a
//! checkpoint write is under way (at least one must cut a write short),
//! each followed by `--resume`. After every kill each checkpoint generation
//! verifies and `points_seen` never goes backwards; at the end, after one
//! clean run, nothing but the checkpoint, its generations and its lock file
//! is left in the directory.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::*;

const KILLS: usize = 50;

/// points_seen of the checkpoint at `path`, every existing generation
/// verified (`None` before the first save).
fn verify_all(path: &Path) -> Option<u64> {
    for (_, g) in emstream::checkpoint::generations(path) {
        if let Err(e) = emstream::checkpoint::load(&g) {
            panic!("generation {} does not verify: {e}", g.display());
        }
    }
    if !path.exists() {
        return None;
    }
    let ck = emstream::checkpoint::load(path)
        .unwrap_or_else(|e| panic!("{} does not verify: {e}", path.display()));
    Some(ck.learner.counters().points_seen)
}

/// Waits until a temporary checkpoint file exists in `dir` (a write is
/// under way), or `child` exited.
fn wait_for_temp_file(dir: &Path, child: &mut Proc) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let writing = std::fs::read_dir(dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp."));
        if writing || child.try_wait().unwrap().is_some() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint write started"
        );
    }
}

#[test]
fn fifty_sigkills_leave_verifiable_checkpoints_that_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let mut last = 0u64;
    let mut mid_write = 0;
    for i in 0..=KILLS {
        let mut args = vec![
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--checkpoint-interval",
            "0.005",
            "--keep",
            "2",
        ];
        if i > 0 {
            args.push("--resume");
        }
        args.extend_from_slice(SMALL);
        let mut child = emstream()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_guarded()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let lines = points(20_000, 100 + i as u64);
        let feeder = std::thread::spawn(move || {
            // Slowly enough that the run is still going when it is killed.
            for chunk in lines.chunks(200) {
                if stdin.write_all(&text(chunk)).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        if i == KILLS {
            // The last run ends cleanly.
            feeder.join().unwrap();
            assert!(wait_exit(&mut child).success());
        } else {
            if i % 2 == 0 {
                // At a seeded random moment.
                std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
            } else {
                // As soon as a checkpoint write is under way (its temporary
                // file exists), so that kills land inside writes.
                wait_for_temp_file(dir.path(), &mut child);
            }
            child.kill().unwrap();
            child.wait().unwrap();
            feeder.join().unwrap();
            // A temporary file left behind: this kill cut a write short.
            let tmp = std::fs::read_dir(dir.path())
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp."));
            mid_write += usize::from(tmp);
        }
        if let Some(seen) = verify_all(&ck) {
            assert!(
                seen >= last,
                "kill {i}: points_seen went from {last} to {seen}"
            );
            last = seen;
        }
    }
    assert!(last > 0, "no checkpoint was ever written");
    assert!(
        mid_write > 0,
        "none of the {KILLS} kills cut a checkpoint write short: the recovery from a torn write was not tested"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".m.ckpt.lock", "m.ckpt", "m.ckpt.1", "m.ckpt.2"],
        "stray files left"
    );
}
