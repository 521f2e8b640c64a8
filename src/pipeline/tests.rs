//! `run` driven from the library with its own shutdown futures.

use std::io::Write;
use std::time::Duration;

use super::*;
use crate::config::Config;

fn small(c: &mut Config) {
    c.components = 2;
    c.warmup = 100;
    c.batch_size = 25;
}

fn points_file(n: usize) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for i in 0..n {
        let (x, y) = if i % 2 == 0 { (-3.0, 1.0) } else { (3.0, -1.0) };
        let wobble = ((i * 7919) % 101) as f64 / 101.0;
        writeln!(f, "{},{}", x + wobble, y - wobble).unwrap();
    }
    f.flush().unwrap();
    f
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_file_runs_to_its_end() {
    let data = points_file(500);
    let mut c = Config {
        input: Some(data.path().to_path_buf()),
        ..Config::default()
    };
    small(&mut c);
    let summary = runtime()
        .block_on(run(c.check().unwrap(), std::future::pending()))
        .unwrap();
    assert_eq!(summary.points, 500);
    assert_eq!(summary.points_total, 500);
    assert_eq!(summary.stop, StopReason::EndOfInput);
    assert!(summary.avg_log_lik.is_some());
    assert!(summary.checkpoint.is_none());
    assert!(summary
        .line()
        .starts_with("500 points used, 0 records rejected"));
    assert_eq!(summary.rejected_line(), None);
}

#[test]
fn the_shutdown_future_stops_a_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("m.ckpt");
    let mut c = Config {
        listen: Some("127.0.0.1:0".into()),
        checkpoint: Some(ck.clone()),
        ..Config::default()
    };
    small(&mut c);
    let config = c.check().unwrap();
    let summary = runtime()
        .block_on(async { run(config, tokio::time::sleep(Duration::from_millis(100))).await })
        .unwrap();
    assert_eq!(summary.stop, StopReason::Signal);
    assert_eq!(summary.points, 0);
    // Nothing was learned, so nothing was written.
    assert!(summary.checkpoint.is_none());
    assert!(!ck.exists());
}

#[test]
fn a_bad_record_under_fail_is_an_error_naming_the_line() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"1,2\n3,4\n5,x\n6,7\n").unwrap();
    let mut c = Config {
        input: Some(f.path().to_path_buf()),
        on_error: crate::config::OnError::Fail,
        ..Config::default()
    };
    small(&mut c);
    let err = runtime()
        .block_on(run(c.check().unwrap(), std::future::pending()))
        .unwrap_err();
    match &err {
        PipelineError::BadRecord { line, points, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(*points, 2);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("line 3"), "{err}");
}

#[test]
fn rejected_line_counts_by_reason() {
    let mut rejected = RejectCounts::default();
    rejected.by_reason.insert(RejectReason::NotNumeric, 3);
    rejected.by_reason.insert(RejectReason::TooLong, 1);
    let s = RunSummary {
        points: 10,
        points_total: 10,
        rejected,
        avg_log_lik: None,
        anomalies: 0,
        outliers: 2,
        elapsed: Duration::from_secs(1),
        stop: StopReason::EndOfInput,
        checkpoint: None,
    };
    assert_eq!(s.rejected_total(), 4);
    assert_eq!(
        s.rejected_line().unwrap(),
        "rejected records: 3 not a number, 1 line too long"
    );
    assert!(s.line().contains("average log-likelihood n/a"));
    assert!(s.line().contains("2 gross outliers ignored"));
}
