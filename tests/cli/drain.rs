//! The drain on SIGTERM: a connection that is still sending is read on,
//! but never past `--shutdown-timeout`.

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn a_client_that_never_stops_sending_is_cut_at_the_shutdown_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--shutdown-timeout",
        "1",
        "--checkpoint-interval",
        "0.05",
    ];
    args.extend_from_slice(SMALL);
    let mut child = emstream()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = StderrLines::new(&mut child);
    let line = err.wait_for("listening on ");
    let addr = line.rsplit(' ').next().unwrap().to_string();

    // A feed that writes as fast as the daemon reads, until it is cut.
    let done = Arc::new(AtomicBool::new(false));
    let feed = std::thread::spawn({
        let done = done.clone();
        let block = text(&points(2000, 5));
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            while !done.load(Ordering::Relaxed) {
                if s.write_all(&block).is_err() {
                    break;
                }
            }
        }
    });
    wait_until_points_at_least(&ck, 4000);
    let stopped = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child);
    let took = stopped.elapsed();
    done.store(true, Ordering::Relaxed);
    feed.join().unwrap();
    let rest = err.rest();
    assert!(status.success(), "exit {status:?}: {rest}");
    // 1 s of drain, then the drain of the pipeline and a checkpoint: well
    // under the 10 s a stuck drain would reach only by the feed's end.
    assert!(
        took < Duration::from_secs(8),
        "the drain took {took:?}: {rest}"
    );
    let j = inspect_json(&ck);
    assert!(j["points_seen"].as_u64().unwrap() >= 4000, "{j}");
}

/// Waits until a checkpoint (written every 50 ms here) shows at least `n`
/// points.
fn wait_until_points_at_least(path: &std::path::Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(ck) = emstream::checkpoint::load(path) {
            let have = ck.learner.counters().points_seen + ck.learner.pending_points() as u64;
            if have >= n {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("checkpoint never held {n} points");
}
