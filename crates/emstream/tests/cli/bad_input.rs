//! Bad records: skipped, counted by reason, reported; `--on-error fail`.

use crate::util::*;

/// Good points with one bad record of each kind inserted; returns the
/// bytes and the (1-based) line numbers of the bad records.
fn with_each_kind_of_bad_record() -> (Vec<u8>, Vec<(u64, &'static str)>) {
    let good = points(600, 40);
    let long = format!("{},{}", "1".repeat(100), "2".repeat(100));
    let bad: Vec<(&'static str, Vec<u8>)> = vec![
        ("not_numeric", b"1.5,abc".to_vec()),
        ("field_count", b"1.0,2.0,3.0".to_vec()),
        ("non_finite", b"NaN,1.0".to_vec()),
        ("too_long", long.into_bytes()),
        ("invalid_utf8", b"1.0,\xff\xfe2.0".to_vec()),
    ];
    let mut bytes = Vec::new();
    let mut where_ = Vec::new();
    let mut line = 0u64;
    let mut next_bad = bad.into_iter();
    for (i, g) in good.iter().enumerate() {
        if i % 100 == 50 {
            if let Some((reason, b)) = next_bad.next() {
                line += 1;
                bytes.extend_from_slice(&b);
                bytes.push(b'\n');
                where_.push((line, reason));
            }
        }
        line += 1;
        bytes.extend_from_slice(g.as_bytes());
        bytes.push(b'\n');
    }
    (bytes, where_)
}

#[test]
fn each_kind_of_bad_record_is_skipped_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let (input, bad) = with_each_kind_of_bad_record();
    let mut args = vec![
        "run",
        "--max-line-bytes",
        "64",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &input);
    assert_ok(&out);
    let err = stderr(&out);
    for (line, _) in &bad {
        assert!(
            err.contains(&format!("stdin line {line}:")),
            "line {line} not reported:\n{err}"
        );
    }
    assert!(err.contains("600 points used, 5 records rejected"), "{err}");
    assert!(err.contains("rejected records:"), "{err}");

    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 600);
    assert_eq!(j["records_rejected"], 5);
    for (_, reason) in &bad {
        assert_eq!(j["rejected_by_reason"][reason], 1, "{reason}: {j}");
    }
}

#[test]
fn only_the_first_five_are_reported_one_by_one() {
    let mut lines = points(300, 41);
    for i in 0..8 {
        lines.insert(10 + 20 * i, format!("bad{i},x"));
    }
    let mut args = vec!["run"];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_ok(&out);
    let err = stderr(&out);
    assert_eq!(err.matches("skipped stdin line").count(), 5, "{err}");
    assert!(err.contains("8 records rejected"), "{err}");
    assert!(err.contains("8 not a number"), "{err}");
}

#[test]
fn bad_json_records_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut lines: Vec<String> = points(300, 42).iter().map(|l| format!("[{l}]")).collect();
    lines.insert(100, "{\"x\": 1}".into());
    let mut args = vec![
        "run",
        "--format",
        "json",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_ok(&out);
    assert!(stderr(&out).contains("stdin line 101:"), "{}", stderr(&out));
    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 300);
    assert_eq!(j["rejected_by_reason"]["bad_json"], 1, "{j}");
}

#[test]
fn garbage_interleaved_gives_the_same_model_as_the_clean_stream() {
    let dir = tempfile::tempdir().unwrap();
    let clean = points(1500, 43);
    let mut dirty = Vec::new();
    for (i, l) in clean.iter().enumerate() {
        dirty.push(l.clone());
        match i % 7 {
            0 => dirty.push("garbage here".into()),
            3 => dirty.push("1,2,3,4".into()),
            5 => dirty.push("inf,0".into()),
            _ => {}
        }
    }
    let (a, b) = (file(&dir, "clean.ckpt"), file(&dir, "dirty.ckpt"));
    for (ck, lines) in [(&a, &clean), (&b, &dirty)] {
        let mut args = vec!["run", "--checkpoint", ck.to_str().unwrap()];
        args.extend_from_slice(SMALL);
        assert_ok(&run_stdin(&args, &text(lines)));
    }
    assert_eq!(learner_bytes(&a), learner_bytes(&b));
    assert_eq!(inspect_json(&a)["records_rejected"], 0);
    assert_eq!(
        inspect_json(&b)["records_rejected"].as_u64().unwrap() as usize,
        dirty.len() - clean.len()
    );
}

#[test]
fn on_error_fail_stops_at_the_first_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut lines = points(1000, 44);
    lines.insert(700, "4.2,oops".into());
    let mut args = vec![
        "run",
        "--on-error",
        "fail",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 701"), "{err}");
    assert!(err.contains("not a number"), "{err}");
    let j = inspect_json(&ck);
    assert_eq!(
        j["points_seen"], 700,
        "the checkpoint holds exactly what came before"
    );
    assert_eq!(j["records_rejected"], 1);
}

#[test]
fn on_error_fail_neither_counts_nor_reports_the_records_after_the_first_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    // A sensor that switches to three fields: every later line is bad, but
    // the run stops at the first, so the later ones were never judged.
    let mut lines = points(400, 46);
    for i in 0..50 {
        lines.push(format!("{i}.5,1.0,2.0"));
    }
    let mut args = vec![
        "run",
        "--on-error",
        "fail",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 401"), "{err}");
    assert!(
        !err.contains("skipped"),
        "--on-error fail skips nothing:\n{err}"
    );
    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 400);
    assert_eq!(
        j["records_rejected"], 1,
        "only the record that stopped the run"
    );
}

#[test]
fn a_header_line_is_skipped_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut lines = vec!["x,y".to_string()];
    lines.extend(points(300, 45));
    let mut args = vec![
        "run",
        "--on-error",
        "fail",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_ok(&out);
    assert!(stderr(&out).contains("header"), "{}", stderr(&out));
    assert_eq!(inspect_json(&ck)["points_seen"], 300);
}

/// A glitching sensor's 1e300 in the warm-up and 1e100 later are scored and
/// counted, never learned from: the model stays that of the clean stream's
/// neighbourhood and nothing panics.
#[test]
fn gross_outliers_are_counted_not_learned() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "model.ckpt");
    let mut lines = points(600, 95);
    lines.insert(10, "1e300,1e300".to_string());
    lines.insert(400, "1e100,-1e100".to_string());
    let mut args = vec!["run", "--score", "--checkpoint", ck.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let out = run_stdin(&args, &text(&lines));
    assert_ok(&out);
    assert!(!stderr(&out).contains("panicked"));
    assert!(
        stderr(&out).contains("2 gross outliers ignored"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        602,
        "every record scored"
    );
    let j = inspect_json(&ck);
    assert_eq!(j["outliers"], 2);
    assert_eq!(j["points_seen"], 600);
    for mean in j["means"].as_array().unwrap() {
        for v in mean.as_array().unwrap() {
            assert!(
                v.as_f64().unwrap().abs() < 100.0,
                "a mean was dragged away: {mean:?}"
            );
        }
    }
}
