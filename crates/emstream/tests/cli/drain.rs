//! The drain on SIGTERM: a connection that is still sending is read on,
//! but never past `--shutdown-timeout`.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn a_client_that_never_stops_sending_is_cut_at_the_shutdown_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = saving(&ck);
    args.extend_from_slice(&["--shutdown-timeout", "1"]);
    let (mut child, err, addr) = listen(&args);

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
    wait_until("a checkpoint of at least 4000 points", || {
        let ck = emstream::checkpoint::load(&ck).map_err(|e| e.to_string())?;
        let have = ck.learner.counters().points_seen + ck.learner.pending_points() as u64;
        if have >= 4000 {
            Ok(())
        } else {
            Err(format!("{have} points"))
        }
    });
    let stopped = Instant::now();
    let rest = sigterm_ok(&mut child, err);
    let took = stopped.elapsed();
    done.store(true, Ordering::Relaxed);
    feed.join().unwrap();
    // 1 s of drain, then the drain of the pipeline and a checkpoint: well
    // under the 10 s a stuck drain would reach only by the feed's end.
    assert!(
        took < Duration::from_secs(8),
        "the drain took {took:?}: {rest}"
    );
    let j = inspect_json(&ck);
    assert!(j["points_seen"].as_u64().unwrap() >= 4000, "{j}");
}
