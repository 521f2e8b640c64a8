//! Checkpoints: resume equivalence, refused resumes, damaged files,
//! generations.

use std::path::Path;

use crate::util::*;

fn run_ck(ck: &Path, extra: &[&str], input: &[u8]) -> std::process::Output {
    let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    run_stdin(&args, input)
}

#[test]
fn resume_in_two_halves_gives_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let all = points(2000, 10);
    // Cut after the warm-up (200) at a multiple of the batch size (50).
    let (first, second) = all.split_at(1000);

    let whole = file(&dir, "whole.ckpt");
    assert_ok(&run_ck(&whole, &[], &text(&all)));

    let halves = file(&dir, "halves.ckpt");
    assert_ok(&run_ck(&halves, &[], &text(first)));
    let out = run_ck(&halves, &["--resume"], &text(second));
    assert_ok(&out);
    assert!(stderr(&out).contains("resuming from"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1000 points used"),
        "{}",
        stderr(&out)
    );

    assert_eq!(learner_bytes(&whole), learner_bytes(&halves));
    let (a, b) = (inspect_json(&whole), inspect_json(&halves));
    assert_eq!(a["points_seen"], 2000);
    assert_eq!(a["means"], b["means"]);
    assert_eq!(a["covariances"], b["covariances"]);
    assert_eq!(a["avg_log_likelihood"], b["avg_log_likelihood"]);
}

#[test]
fn resume_with_a_different_k_is_refused_and_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    assert_ok(&run_ck(&ck, &[], &text(&points(400, 11))));
    let before = std::fs::read(&ck).unwrap();

    // SMALL says -k 2; a later -k overrides it.
    let out = run_ck(&ck, &["--resume", "-k", "3"], &text(&points(400, 12)));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("components = 2"), "{err}");
    assert!(err.contains("components = 3"), "{err}");
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    assert!(!file(&dir, "m.ckpt.1").exists());
}

#[test]
fn resume_with_a_different_covariance_or_dim_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    assert_ok(&run_ck(&ck, &[], &text(&points(400, 13))));
    let before = std::fs::read(&ck).unwrap();
    let out = run_ck(&ck, &["--resume", "--covariance", "diag"], b"1,2\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("covariance = full"),
        "{}",
        stderr(&out)
    );
    let out = run_ck(&ck, &["--resume", "--dim", "3"], b"1,2,3\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("dim = 2"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&ck).unwrap(), before);
}

#[test]
fn resume_without_k_takes_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let first = [
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "-k",
        "3",
        "--warmup",
        "200",
    ];
    assert_ok(&run_stdin(&first, &text(&points(300, 14))));
    let second = [
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--resume",
        "--batch-size",
        "7",
    ];
    let out = run_stdin(&second, &text(&points(300, 15)));
    assert_ok(&out);
    // The learner's other options come from the checkpoint; say so.
    assert!(stderr(&out).contains("batch_size"), "{}", stderr(&out));
    let j = inspect_json(&ck);
    assert_eq!(j["components"], 3);
    assert_eq!(j["points_seen"], 600);
    assert_eq!(j["params"]["batch_size"], 1000);
}

#[test]
fn resume_without_a_checkpoint_starts_a_new_model() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = run_ck(&ck, &["--resume"], &text(&points(300, 16)));
    assert_ok(&out);
    assert!(
        stderr(&out).contains("starting a new model"),
        "{}",
        stderr(&out)
    );
    assert_eq!(inspect_json(&ck)["points_seen"], 300);
}

#[test]
fn an_existing_checkpoint_is_not_replaced_without_resume() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    assert_ok(&run_ck(&ck, &[], &text(&points(300, 17))));
    let before = std::fs::read(&ck).unwrap();
    let out = run_ck(&ck, &[], &text(&points(300, 18)));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--resume"), "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&ck).unwrap(), before);
}

#[test]
fn overwrite_starts_a_new_model_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let first = text(&points(300, 30));
    let second = text(&points(500, 31));
    assert_ok(&run_ck(&ck, &["--overwrite"], &first));
    let first_model = learner_bytes(&ck);

    let out = run_ck(&ck, &["--overwrite"], &second);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("exists: starting a new model; the old one will be kept as"),
        "{err}"
    );
    assert_eq!(inspect_json(&ck)["points_seen"], 500);
    assert_eq!(learner_bytes(&file(&dir, "m.ckpt.1")), first_model);
}

#[test]
fn overwrite_with_keep_0_replaces_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    assert_ok(&run_ck(&ck, &["--keep", "0"], &text(&points(300, 32))));
    let out = run_ck(
        &ck,
        &["--keep", "0", "--overwrite"],
        &text(&points(400, 33)),
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("the old one will be replaced"),
        "{}",
        stderr(&out)
    );
    assert_eq!(inspect_json(&ck)["points_seen"], 400);
    assert!(!file(&dir, "m.ckpt.1").exists());
}

#[test]
fn overwrite_with_resume_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = run_ck(&ck, &["--overwrite", "--resume"], b"1,2\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("choose one"), "{}", stderr(&out));
    assert!(!ck.exists());
}

#[test]
fn generations_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    assert_ok(&run_ck(&ck, &["--keep", "1"], &text(&points(300, 19))));
    for seed in [20, 21] {
        assert_ok(&run_ck(
            &ck,
            &["--keep", "1", "--resume"],
            &text(&points(100, seed)),
        ));
    }
    assert_eq!(inspect_json(&ck)["points_seen"], 500);
    assert_eq!(inspect_json(&file(&dir, "m.ckpt.1"))["points_seen"], 400);
    assert!(!file(&dir, "m.ckpt.2").exists());
}

#[test]
fn stale_temporary_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let stale = file(&dir, ".m.ckpt.tmp.99999");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let out = run_ck(&ck, &[], &text(&points(300, 22)));
    assert_ok(&out);
    assert!(!stale.exists());
    assert!(
        stderr(&out).contains(".m.ckpt.tmp.99999"),
        "{}",
        stderr(&out)
    );
}

/// Changes the bytes of a checkpoint file.
type Damage = fn(&mut Vec<u8>);

/// Each way a file can be damaged, applied to the newest generation.
fn damages() -> Vec<(&'static str, Damage)> {
    vec![
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("empty", |b| b.clear()),
        ("flipped payload byte", |b| {
            let i = b.len() / 2;
            b[i] ^= 0x40;
        }),
        ("bad magic", |b| b[0] ^= 0xff),
        ("bad version", |b| b[8] = b[8].wrapping_add(7)),
        ("extra bytes", |b| b.extend_from_slice(b"junk")),
    ]
}

#[test]
fn damaged_checkpoints_fall_back_to_the_older_generation() {
    for (what, damage) in damages() {
        let dir = tempfile::tempdir().unwrap();
        let ck = file(&dir, "m.ckpt");
        assert_ok(&run_ck(&ck, &[], &text(&points(300, 30))));
        assert_ok(&run_ck(&ck, &["--resume"], &text(&points(100, 31))));
        let mut bytes = std::fs::read(&ck).unwrap();
        damage(&mut bytes);
        std::fs::write(&ck, &bytes).unwrap();

        // inspect refuses it.
        let out = emstream().arg("inspect").arg(&ck).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(stderr(&out).contains("m.ckpt"), "{what}: {}", stderr(&out));

        // --resume refuses it, says why, and uses m.ckpt.1 (300 points).
        let out = run_ck(&ck, &["--resume"], &text(&points(50, 32)));
        assert_ok(&out);
        let err = stderr(&out);
        assert!(err.contains("refused"), "{what}: {err}");
        assert!(err.contains("m.ckpt.1"), "{what}: {err}");
        assert_eq!(inspect_json(&ck)["points_seen"], 350, "{what}");
    }
}

#[test]
fn no_usable_generation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    std::fs::write(&ck, b"not a checkpoint at all").unwrap();
    let out = run_ck(&ck, &["--resume"], &text(&points(50, 33)));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot resume"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&ck).unwrap(), b"not a checkpoint at all");
}

#[test]
fn inspect_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = emstream()
        .arg("inspect")
        .arg(file(&dir, "none.ckpt"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("none.ckpt"), "{}", stderr(&out));
}

/// Starts `emstream run --checkpoint CK` on a stdin that stays open, as a
/// feed that runs for months would, and waits for it to exit by itself.
fn run_on_open_stdin(ck: &str) -> std::process::Output {
    let mut args = vec!["run", "--checkpoint", ck];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    let _ = stdin.write_all(&text(&points(300, 12)));
    // Kept open until the child has exited (wait_output kills it after
    // PATIENCE, failing the test).
    let out = wait_output(child);
    drop(stdin);
    out
}

#[test]
fn an_unwritable_checkpoint_path_is_refused_at_the_start_not_after_the_stream() {
    let dir = tempfile::tempdir().unwrap();

    // A directory, named with a trailing slash (it does not exist yet).
    let slash = format!("{}/models/", dir.path().display());
    let out = run_on_open_stdin(&slash);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("directory"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("points used"), "{}", stderr(&out));

    // An existing directory: adding --resume would not help either.
    let sub = file(&dir, "sub");
    std::fs::create_dir(&sub).unwrap();
    let out = run_on_open_stdin(sub.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("--resume"), "{}", stderr(&out));

    // A directory where no file can be created (even by root): /proc.
    if Path::new("/proc/self").exists() {
        let out = run_on_open_stdin("/proc/emstream-test.ckpt");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("cannot create"), "{err}");
        assert!(!err.contains("points used"), "{err}");
    }
}

/// Every checkpoint, mid-stream ones included, counts exactly the anomalies
/// among the points its model has seen and those of its pending partial
/// batch (scored on arrival): the score lines (one per point, in order)
/// say which those are.
#[test]
fn every_checkpoint_counts_the_anomalies_of_its_own_points() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut lines = points(40_000, 17);
    // Rare, scattered far points: flagged, never a component of their own.
    for i in (50..lines.len()).step_by(211) {
        lines[i] = format!("{},{}", 14.5 + (i % 7) as f64, 13.5 - (i % 5) as f64);
    }
    let out = run_stdin(
        &[
            "run",
            "-k",
            "2",
            "--warmup",
            "500",
            "--batch-size",
            "100",
            "--score",
            "--alert-below",
            "-40",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--checkpoint-every",
            "3000",
            "--keep",
            "30",
        ],
        &text(&lines),
    );
    assert_ok(&out);
    let flags: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.ends_with(",1"))
        .collect();
    assert_eq!(flags.len(), 40_000);
    assert!(flags.iter().filter(|&&f| f).count() > 100);
    let mut generations = vec![ck.clone()];
    generations.extend((1..=30).map(|i| file(&dir, &format!("m.ckpt.{i}"))));
    let mut checked = 0;
    for path in generations.iter().filter(|p| p.exists()) {
        let j = inspect_json(path);
        let seen =
            (j["points_seen"].as_u64().unwrap() + j["pending_points"].as_u64().unwrap()) as usize;
        let anomalies = j["anomalies"].as_u64().unwrap() as usize;
        let expected = flags[..seen].iter().filter(|&&f| f).count();
        assert_eq!(anomalies, expected, "{} at {seen} points", path.display());
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} checkpoints written");
}

#[test]
fn a_format_1_checkpoint_resumes_and_is_rewritten_in_the_current_format() {
    // tests/golden/v1-full-pending.ckpt: written by the format-1 code, a
    // 2-D full-covariance learner (K = 2, batch 25) with 7 points pending.
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "old.ckpt");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../emstream-core/tests/golden/v1-full-pending.ckpt");
    std::fs::copy(&golden, &ck).unwrap();
    assert_eq!(inspect_json(&ck)["points_seen"], 90);
    let out = run_stdin(
        &["run", "--resume", "--checkpoint", ck.to_str().unwrap()],
        &text(&points(300, 14)),
    );
    assert_ok(&out);
    let bytes = std::fs::read(&ck).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        emstream::checkpoint::FORMAT_VERSION
    );
    let after = inspect_json(&ck);
    // 90 seen + 7 pending + 300 new, every one learned by the end.
    assert_eq!(after["points_seen"], 397);
    assert_eq!(after["components"], 2);
    assert_eq!(after["params"]["batch_size"], 25);
    // The previous generation is the untouched format-1 file.
    assert_eq!(
        std::fs::read(file(&dir, "old.ckpt.1")).unwrap(),
        std::fs::read(&golden).unwrap()
    );
}
