//! `run` driven from the library with its own shutdown futures.

use std::io::Write;
use std::time::Duration;

use std::sync::Arc;

use super::*;
use crate::config::Config;

fn small(c: &mut Config) {
    c.components = crate::model::ComponentCount::Fixed(2);
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
        scores_dropped: 0,
        streams: vec![crate::pipeline::StreamLag {
            key: "jetstream:S".into(),
            head: 100,
            learned: 90,
        }],
        reconnects: 0,
        gap_messages: 3,
        warmup_waiting: 0,
        warmup_size: 5000,
        provisional_k: None,
        regime_changes: 0,
    };
    assert_eq!(
        s.replay_lines(),
        vec![
            "jetstream:S: model at sequence 90 of 100, lag 10 messages".to_string(),
            "3 messages lost to the stream's retention (--allow-gap)".to_string()
        ]
    );
    assert_eq!(s.rejected_total(), 4);
    assert_eq!(
        s.rejected_line().unwrap(),
        "rejected records: 3 not a number, 1 line too long"
    );
    assert!(s.line().contains("average log-likelihood n/a"));
    assert_eq!(s.warmup_line(), None);
    let waiting = |n: u64| RunSummary {
        warmup_waiting: n,
        checkpoint: Some("m.ckpt".into()),
        ..s.clone()
    };
    assert_eq!(
        waiting(60).warmup_line().unwrap(),
        "warm-up not finished: 60 of 5000 points buffered, saved unfitted to m.ckpt; --resume continues filling it, and inspect, score, plot and diff fit it on the fly"
    );
    assert_eq!(
        waiting(5000).warmup_line().unwrap(),
        "first fit stopped: 5000 warm-up points buffered, saved unfitted to m.ckpt; --resume fits the warm-up's points and learns the rest, and inspect, score, plot and diff fit it on the fly"
    );
    assert_eq!(
        RunSummary {
            provisional_k: Some(3),
            ..waiting(60)
        }
        .warmup_line()
        .unwrap(),
        "warm-up not finished: 60 of 5000 points buffered; fitted a model of 3 components on them, saved with the buffer to m.ckpt; --resume continues filling it"
    );
    assert!(waiting(5321)
        .warmup_line()
        .unwrap()
        .starts_with("first fit stopped: 5321 points buffered (the warm-up's 5000 and 321 received after them), saved"));
    assert!(s.line().contains("2 gross outliers ignored"));
}

/// A source of generated 2-D points, `limit` lines or until the stop, as a
/// new source (MQTT, NATS) would plug in; says when it has returned.
struct Generated {
    limit: Option<u64>,
    returned: Arc<std::sync::atomic::AtomicBool>,
}

impl Source for Generated {
    fn name(&self) -> String {
        "generator".into()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> source::SourceFuture {
        Box::pin(async move {
            let mut line = 1u64;
            let mut framer = ctx.framer(ctx.id(), 1 << 12);
            let mut out = Vec::new();
            while self.limit.is_none_or(|n| line <= n) && !ctx.stop().is_cancelled() {
                let mut text = String::new();
                for _ in 0..100 {
                    let x = if line.is_multiple_of(2) { -3.0 } else { 3.0 };
                    let w = ((line * 7919) % 101) as f64 / 101.0;
                    text.push_str(&format!("{},{}\n", x + w, w));
                    line += 1;
                }
                framer.push(text.as_bytes(), &mut out);
                if !source::send_chunks(ctx.sender(), &mut out).await {
                    break;
                }
                tokio::task::yield_now().await;
            }
            framer.finish(&mut out);
            source::send_chunks(ctx.sender(), &mut out).await;
            let _ = ctx
                .sender()
                .send(SourceEvent::End {
                    source: ctx.id(),
                    forget: false,
                })
                .await;
            self.returned
                .store(true, std::sync::atomic::Ordering::SeqCst);
        })
    }
}

#[test]
fn a_learner_panic_stops_the_sources_and_is_an_error() {
    let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = Config::default();
    small(&mut c);
    let mut pipeline = Pipeline::new(c.check().unwrap()).with_source(Box::new(Generated {
        limit: None,
        returned: returned.clone(),
    }));
    pipeline.panic_learner_after = Some(1000);
    let state = pipeline.state();
    // The source never ends on its own and no shutdown comes: only the
    // panic handling can end this run.
    let err = runtime()
        .block_on(pipeline.run(std::future::pending()))
        .unwrap_err();
    match &err {
        PipelineError::Panic { stage, message } => {
            assert_eq!(*stage, "learner");
            assert!(message.contains("test fault"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("learner thread panicked"), "{err}");
    // No detached source is left behind.
    assert!(returned.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(state.stop_reason(), StopReason::Failed);
    assert_eq!(state.phase(), Phase::Finished);
    assert!(state.finished_token().is_cancelled());
}

#[test]
fn snapshots_are_published_without_checkpoints_and_hold_positions() {
    let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = Config::default();
    small(&mut c);
    let pipeline = Pipeline::new(c.check().unwrap()).with_source(Box::new(Generated {
        limit: Some(5_000),
        returned,
    }));
    let live = pipeline.snapshots();
    let state = pipeline.state();
    let summary = runtime()
        .block_on(pipeline.run(std::future::pending()))
        .unwrap();
    assert_eq!(summary.points, 5_000);
    let snap = live.borrow().clone().expect("a final snapshot");
    assert_eq!(snap.counts.points, 5_000);
    assert_eq!(snap.checkpoint.learner.counters().points_seen, 5_000);
    assert_eq!(snap.positions.get(&0), Some(&5_000));
    assert_eq!(state.counts().learner, snap.counts);
    assert_eq!(state.source_name(0), "generator");
}

#[test]
fn the_durability_hook_reports_each_saved_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("m.ckpt");
    let data = points_file(20_000);
    let mut c = Config {
        input: Some(data.path().to_path_buf()),
        checkpoint: Some(ck.clone()),
        checkpoint_every: Some(2_000),
        ..Config::default()
    };
    small(&mut c);
    let pipeline = Pipeline::new(c.check().unwrap());
    let live = pipeline.snapshots();
    let mut durable = pipeline.durable();
    let state = pipeline.state();
    let path = ck.clone();
    let seen = runtime().block_on(async move {
        let watcher = tokio::spawn(async move {
            let mut seen = Vec::new();
            while durable.changed().await.is_ok() {
                seen.push(durable.borrow_and_update().clone());
            }
            seen
        });
        let summary = pipeline.run(std::future::pending()).await.unwrap();
        assert_eq!(summary.checkpoint.as_deref(), Some(path.as_path()));
        // The pipeline, and with it the hook's sender, is gone: the
        // watcher ends.
        watcher.await.unwrap()
    });
    let last = live.borrow().clone().unwrap();
    let durable_last = seen.last().expect("at least the final save");
    assert_eq!(durable_last.seq, last.seq);
    assert_eq!(durable_last.positions.get(&0), Some(&20_000));
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq), "{seen:?}");
    let counts = state.counts();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(counts.checkpoints_written as usize >= seen.len());
    assert_eq!(counts.checkpoints_failed, 0);
    // What the hook calls durable is what the file holds.
    let on_disk = crate::checkpoint::load(&ck).unwrap();
    assert_eq!(on_disk.learner.counters().points_seen, 20_000);
}

/// A source whose stream fails after a few lines.
struct Failing;

impl Source for Failing {
    fn name(&self) -> String {
        "flaky".into()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> source::SourceFuture {
        Box::pin(async move {
            let mut framer = ctx.framer(ctx.id(), 1 << 12);
            let mut out = Vec::new();
            let lines: String = (0..300).map(|i| format!("{},{}\n", i % 7, i % 5)).collect();
            framer.push(lines.as_bytes(), &mut out);
            framer.flush(&mut out);
            source::send_chunks(ctx.sender(), &mut out).await;
            let failed = SourceEvent::Failed {
                source: ctx.id(),
                name: self.name(),
                error: std::io::Error::other("device unplugged"),
            };
            let _ = ctx.sender().send(failed).await;
        })
    }
}

#[test]
fn a_source_error_comes_through_the_channel_after_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("m.ckpt");
    let mut c = Config {
        checkpoint: Some(ck.clone()),
        ..Config::default()
    };
    small(&mut c);
    let pipeline = Pipeline::new(c.check().unwrap()).with_source(Box::new(Failing));
    let err = runtime()
        .block_on(pipeline.run(std::future::pending()))
        .unwrap_err();
    match &err {
        PipelineError::Read { name, source } => {
            assert_eq!(name, "flaky");
            assert!(source.to_string().contains("unplugged"));
        }
        other => panic!("unexpected {other}"),
    }
    // The lines before the error were learned and saved.
    let saved = crate::checkpoint::load(&ck).unwrap();
    assert_eq!(saved.learner.counters().points_seen, 300);
}

#[test]
fn tcp_connections_are_counted_and_their_positions_forgotten() {
    use std::io::Write as _;
    let mut c = Config {
        listen: Some("127.0.0.1:0".into()),
        ..Config::default()
    };
    small(&mut c);
    let config = c.check().unwrap();
    let rt = runtime();
    let (summary, state, snap) = rt.block_on(async {
        let addr = "127.0.0.1:0".parse().unwrap();
        let tcp = source::tcp::TcpSource::bind(addr, 4).await.unwrap();
        let local = tcp.local_addr();
        let pipeline = Pipeline::new(config).with_source(Box::new(tcp));
        let (state, live) = (pipeline.state(), pipeline.snapshots());
        let clients = std::thread::spawn(move || {
            for k in 0..3 {
                let mut s = std::net::TcpStream::connect(local).unwrap();
                for i in 0..200 {
                    let x = if i % 2 == 0 { -3.0 } else { 3.0 };
                    writeln!(s, "{},{}", x + (k * i % 11) as f64 / 11.0, i % 3).unwrap();
                }
            }
        });
        let watched = state.clone();
        let shutdown = async move {
            // Stop once all 600 points are learned.
            while watched.counts().learner.points < 600 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let summary = pipeline.run(shutdown).await.unwrap();
        clients.join().unwrap();
        let snap = live.borrow().clone().unwrap();
        (summary, state, snap)
    });
    assert_eq!(summary.points, 600);
    let counts = state.counts();
    assert_eq!(counts.connections_total, 3);
    assert_eq!(counts.connections_open, 0);
    assert!(snap.positions.is_empty(), "{:?}", snap.positions);
    assert_eq!(state.source_name(1).split(' ').next(), Some("connection"));
}
