//! The JetStream source against a real `nats-server` the test starts:
//! exactly once through SIGKILLs, retention gaps, acknowledgements.

use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::brokers::{self, create_stream, jetstream, publish, runtime};
use crate::util::{
    assert_ok, emstream, file, learner_bytes, points, stderr, wait_output, wait_until, Proc,
    SpawnGuarded, LONG_FIRST_FIT, SMALL,
};

/// Messages of 1 to 200 lines of the points of `points(n, seed)`, a junk
/// line now and then (never first); returns the bodies and the number of
/// valid points.
fn messages(n: usize, seed: u64) -> (Vec<Vec<u8>>, u64) {
    let pts = points(n, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < pts.len() {
        let take = rng.random_range(1..=200).min(pts.len() - i);
        let mut body = pts[i..i + take].join("\n");
        if !out.is_empty() && rng.random_range(0..10) == 0 {
            body.push_str("\nnot,a,point");
        }
        if rng.random_range(0..2) == 0 {
            body.push('\n');
        }
        out.push(body.into_bytes());
        i += take;
    }
    (out, n as u64)
}

/// The valid points in `bodies` (every line but the junk ones).
fn valid_points(bodies: &[Vec<u8>]) -> u64 {
    bodies
        .iter()
        .map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| !l.starts_with("not"))
                .count() as u64
        })
        .sum()
}

fn run_args(port: u16, stream: &str, consumer: &str, ckpt: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--nats",
        &format!("nats://127.0.0.1:{port}"),
        "--stream",
        stream,
        "--consumer",
        consumer,
        "--checkpoint",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(ckpt.display().to_string());
    a.extend(SMALL.iter().map(|s| s.to_string()));
    a
}

fn spawn(args: &[String]) -> Proc {
    emstream()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("the binary starts")
}

fn points_in(path: &std::path::Path) -> u64 {
    let ck = emstream::checkpoint::load(path).expect("checkpoint loads");
    ck.learner.counters().points_seen + ck.learner.pending_points() as u64
}

fn position(path: &std::path::Path, key: &str) -> Option<u64> {
    let ck = emstream::checkpoint::load(path).expect("checkpoint loads");
    ck.sources
        .iter()
        .find(|s| s.source == key)
        .map(|s| s.position)
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn jetstream_five_sigkills_and_resume_give_the_uninterrupted_model_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream sigkill test");
    let port = nats.port;
    let (bodies, valid) = messages(60_000, 11);
    let rt = runtime();
    rt.block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "PTS", -1).await;
    });
    // The stream grows in six parts: the first now, each next one after a
    // kill, so every kill lands mid-stream (later parts are not published
    // yet) after the run has made progress (its checkpoint grew).
    let (go, next_part) = std::sync::mpsc::channel::<()>();
    let publisher = {
        let bodies = bodies.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let js = jetstream(port).await;
                let part = bodies.len().div_ceil(6);
                for (j, chunk) in bodies.chunks(part).enumerate() {
                    if j > 0 {
                        next_part.recv().expect("the test asks for the next part");
                    }
                    for (i, b) in chunk.iter().enumerate() {
                        publish(&js, &format!("pts.s{}", (j * part + i) % 3), b.clone()).await;
                    }
                }
            })
        })
    };
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(port, "PTS", "emstream", &ckpt);
    args.extend(
        [
            "--resume",
            "--checkpoint-interval",
            "0.05",
            "--checkpoint-every",
            "1000",
        ]
        .map(String::from),
    );
    let mut seen_mid_stream = Vec::new();
    let mut last = 0;
    for _ in 0..5 {
        let mut child = spawn(&args);
        wait_until("the run's checkpoint never grew", || {
            let now = if ckpt.exists() { points_in(&ckpt) } else { 0 };
            if now > last {
                Ok(now)
            } else {
                Err(format!("{now} points"))
            }
        });
        child.kill().expect("SIGKILL is sent");
        child.wait().unwrap();
        last = points_in(&ckpt);
        seen_mid_stream.push(last);
        go.send(()).expect("the publisher waits for the next part");
    }
    publisher.join().expect("the publisher finishes");
    args.extend(["--stop-when-idle", "1"].map(String::from));
    let out = wait_output(spawn(&args));
    assert_ok(&out);
    let text = stderr(&out);
    assert!(
        text.contains("jetstream:PTS: resuming after sequence"),
        "{text}"
    );
    let last = bodies.len() as u64;
    assert!(
        text.contains(&format!(
            "jetstream:PTS: model at sequence {last} of {last}, lag 0 messages"
        )),
        "{text}"
    );

    // The same stream, read once without interruption.
    let reference = file(&dir, "reference.ckpt");
    let mut ref_args = run_args(port, "PTS", "reference", &reference);
    ref_args.extend(["--stop-when-idle", "1"].map(String::from));
    assert_ok(&wait_output(spawn(&ref_args)));

    // Every kill landed mid-stream, each after more progress.
    assert!(
        seen_mid_stream.windows(2).all(|w| w[0] < w[1])
            && seen_mid_stream.iter().all(|&n| n > 0 && n < valid),
        "points in the checkpoint after each SIGKILL: {seen_mid_stream:?} of {valid}"
    );
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.learner.counters().points_seen, valid);
    assert_eq!(ck.learner.pending_points(), 0);
    assert_eq!(position(&ckpt, "jetstream:PTS"), Some(last));
    assert_eq!(
        learner_bytes(&ckpt),
        learner_bytes(&reference),
        "killed and resumed {seen_mid_stream:?}: the model differs from one uninterrupted run"
    );
    // Junk lines are counted once each, like the points.
    assert_eq!(
        ck.rejected,
        emstream::checkpoint::load(&reference).unwrap().rejected
    );
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_retention_gap_is_refused_unless_allowed_and_then_counted() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream retention gap test");
    let port = nats.port;
    let (bodies, _) = messages(6_000, 3);
    let count = |range: std::ops::Range<usize>| -> u64 {
        bodies[range]
            .iter()
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| l.contains(',') && !l.starts_with("not"))
                    .count() as u64
            })
            .sum()
    };
    let rt = runtime();
    // The stream keeps only its last 10 messages.
    rt.block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "GAP", 10).await;
        for b in &bodies[..5] {
            publish(&js, "gap.a", b.clone()).await;
        }
    });
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(port, "GAP", "emstream", &ckpt);
    // One subject filter (NATS 2.9 takes only the singular one); the
    // position is kept under the stream and the filter.
    args.extend(["--stop-when-idle", "0.5", "--subject", "gap.a"].map(String::from));
    assert_ok(&wait_output(spawn(&args)));
    assert_eq!(position(&ckpt, "jetstream:GAP:gap.a"), Some(5));
    // Acknowledged up to what the final checkpoint holds, or a
    // mid-stream one before it: never beyond.
    let acked = rt.block_on(async {
        let js = jetstream(port).await;
        let mut stream = js.get_stream("GAP").await.unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("emstream").await.unwrap();
        let _ = stream.info().await;
        c.info().await.unwrap().ack_floor.stream_sequence
    });
    assert!(acked <= 5, "acknowledged {acked}, beyond the checkpoint");

    // 20 more: sequences 6..15 are gone, 16..25 kept.
    rt.block_on(async {
        let js = jetstream(port).await;
        for b in &bodies[5..25] {
            publish(&js, "gap.a", b.clone()).await;
        }
    });
    let before = learner_bytes(&ckpt);
    args.push("--resume".into());
    let out = wait_output(spawn(&args));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("no longer holds sequence 6")
            && text.contains("10 message(s) (sequences 6..15) are gone")
            && text.contains("--allow-gap"),
        "{text}"
    );
    assert_eq!(
        learner_bytes(&ckpt),
        before,
        "a refused resume changed the model"
    );

    args.push("--allow-gap".into());
    let out = wait_output(spawn(&args));
    assert_ok(&out);
    let text = stderr(&out);
    assert!(
        text.contains("10 messages lost to the stream's retention"),
        "{text}"
    );
    assert_eq!(position(&ckpt, "jetstream:GAP:gap.a"), Some(25));
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(
        ck.learner.counters().points_seen,
        count(0..5) + count(15..25)
    );
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_missing_stream_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream missing stream test");
    let ckpt = file(&dir, "model.ckpt");
    let out = wait_output(spawn(&run_args(nats.port, "NOPE", "c", &ckpt)));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no stream NOPE"), "{}", stderr(&out));
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn the_readme_recipe_sensors_over_mqtt_into_jetstream_are_learned() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, mqtt) = brokers::nats_mqtt(dir.path(), "nats-server MQTT recipe test");
    runtime().block_on(async {
        let js = jetstream(nats.port).await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "SENSORS".into(),
            subjects: vec!["sensors.>".into()],
            ..Default::default()
        })
        .await
        .expect("the stream is created");
    });
    // Sensors publish over MQTT (QoS 1) to sensors/<site>/<device>.
    let msgs: Vec<(String, Vec<u8>)> = crate::mqtt::batch(4, 12)
        .into_iter()
        .enumerate()
        .map(|(i, (_, body))| (format!("sensors/site{}/dev{}", i % 2, i % 3), body))
        .collect();
    crate::mqtt::publish_all(mqtt, "sensor-1", msgs);
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(nats.port, "SENSORS", "emstream", &ckpt);
    args.extend(["--stop-when-idle", "0.5"].map(String::from));
    assert_ok(&wait_output(spawn(&args)));
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.learner.counters().points_seen, 12 * 50);
    assert_eq!(position(&ckpt, "jetstream:SENSORS"), Some(12));
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_nats_server_restart_mid_stream_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = brokers::nats(dir.path(), "jetstream broker restart test");
    let port = nats.port;
    let (bodies, valid) = messages(8_000, 21);
    let half = bodies.len() / 2;
    runtime().block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "RS", -1).await;
        for b in &bodies[..half] {
            publish(&js, "rs.a", b.clone()).await;
        }
    });
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(port, "RS", "emstream", &ckpt);
    args.extend(["--stop-when-idle", "8", "--checkpoint-interval", "0.1"].map(String::from));
    let mut child = spawn(&args);
    crate::util::wait_for_points(&ckpt, valid_points(&bodies[..half]));
    // The server dies and comes back with its store; the run reconnects.
    nats.restart();
    runtime().block_on(async {
        let js = jetstream(port).await;
        for b in &bodies[half..] {
            publish(&js, "rs.a", b.clone()).await;
        }
    });
    let err = crate::util::StderrLines::new(&mut child);
    let status = crate::util::wait_exit(&mut child);
    let text = err.rest();
    eprintln!("{text}");
    assert!(status.success(), "{status:?} {text}");
    assert!(text.contains("NATS: reconnected"), "{text}");
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.learner.counters().points_seen, valid);
    assert_eq!(position(&ckpt, "jetstream:RS"), Some(bodies.len() as u64));
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn metrics_show_the_lag_and_other_subjects_messages_are_no_lag() {
    const LAG: &str = "emstream_source_lag_messages{source=\"jetstream\"}";
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream lag metric test");
    let port = nats.port;
    let (bodies, _) = messages(3_000, 9);
    let rt = runtime();
    rt.block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "LAG", -1).await;
        for b in &bodies[..6] {
            publish(&js, "lag.a", b.clone()).await;
        }
    });
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(port, "LAG", "emstream", &ckpt);
    args.extend(["--subject", "lag.a", "--stop-when-idle", "0.5"].map(String::from));
    assert_ok(&wait_output(spawn(&args)));
    assert_eq!(position(&ckpt, "jetstream:LAG:lag.a"), Some(6));

    // Four messages on another subject: the stream's last sequence is 10,
    // but nothing of the filter's is left to learn.
    rt.block_on(async {
        let js = jetstream(port).await;
        for b in &bodies[6..10] {
            publish(&js, "lag.b", b.clone()).await;
        }
    });
    args.extend(["--resume", "--admin", "127.0.0.1:0"].map(String::from));
    *args.iter_mut().find(|a| *a == "0.5").unwrap() = "60".into();
    let mut child = spawn(&args);
    let mut err = crate::util::StderrLines::new(&mut child);
    let admin = crate::util::last_word(&err.wait_for("admin on "));
    err.wait_for("resuming after sequence 6 (stream holds 1..10)");
    // Two head polls (one a second) after the consumer opened.
    std::thread::sleep(Duration::from_millis(2500));
    let m = crate::util::metrics_when(&admin, "no lag sample", |m| m.contains_key(LAG));
    assert_eq!(m[LAG], 0.0, "{m:?}");
    assert_eq!(m["emstream_broker_reconnects_total"], 0.0, "{m:?}");
    assert_eq!(m["emstream_source_gap_messages_total"], 0.0, "{m:?}");

    // Three more of the filter's: learned, and the lag is back to 0.
    rt.block_on(async {
        let js = jetstream(port).await;
        for b in &bodies[10..13] {
            publish(&js, "lag.a", b.clone()).await;
        }
    });
    let valid = valid_points(&bodies[..6]) + valid_points(&bodies[10..13]);
    let m = crate::util::metrics_when(&admin, "the points never arrived", |m| {
        m.get("emstream_model_points_seen") == Some(&(valid as f64))
    });
    assert_eq!(m[LAG], 0.0, "{m:?}");
    crate::util::sigterm(&child);
    assert!(crate::util::wait_exit(&mut child).success());
    let text = err.rest();
    assert!(
        text.contains("jetstream:LAG:lag.a: model at sequence 13 of 13, lag 0 messages"),
        "{text}"
    );
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn an_unreachable_server_is_fatal_after_the_connect_timeout_and_waited_for_without_it() {
    // Nothing listens on the port: fatal once --connect-timeout has passed,
    // with a message naming the address and the option.
    let port = brokers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(port, "PTS", "emstream", &ckpt);
    args.extend(["--connect-timeout", "1.5"].map(String::from));
    let started = std::time::Instant::now();
    let out = wait_output(spawn(&args));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "cannot connect to nats://127.0.0.1:{port} within --connect-timeout 1.5s"
        )),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(12),
        "fatal after {took:?}, not about 1.5 s"
    );
    assert!(!ckpt.exists(), "a checkpoint without a connection");

    // A server with the stream that is down when the run starts: without
    // --connect-timeout the run retries until it comes up, then learns.
    let mut nats = brokers::nats(dir.path(), "jetstream late server test");
    let (bodies, _) = messages(2_000, 17);
    let valid = valid_points(&bodies);
    runtime().block_on(async {
        let js = jetstream(nats.port).await;
        create_stream(&js, "LATE", -1).await;
        for b in &bodies {
            publish(&js, "late.a", b.clone()).await;
        }
    });
    nats.stop();
    let mut args = run_args(nats.port, "LATE", "emstream", &ckpt);
    args.extend(["--stop-when-idle", "1"].map(String::from));
    let mut child = spawn(&args);
    let mut err = crate::util::StderrLines::new(&mut child);
    err.wait_for(&format!("cannot connect to nats://127.0.0.1:{}", nats.port));
    err.wait_for("retrying");
    nats.restart();
    let status = crate::util::wait_exit(&mut child);
    let text = err.rest();
    assert!(status.success(), "{status:?} {text}");
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.learner.counters().points_seen, valid);
    assert_eq!(position(&ckpt, "jetstream:LATE"), Some(bodies.len() as u64));
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_stream_over_mutual_tls_is_read_with_the_client_certificate_and_refused_without() {
    use crate::util::{write_file, TestCa};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("emstream NATS test CA");
    let server = ca.leaf(&["localhost", "127.0.0.1"]);
    let client = ca.leaf(&["emstream"]);
    let ca_pem = write_file(&dir, "ca.pem", &ca.pem());
    let server_pem = write_file(&dir, "server.pem", &server.pem);
    let server_key = write_file(&dir, "server-key.pem", &server.key_pem);
    let client_pem = write_file(&dir, "client.pem", &client.pem);
    let client_key = write_file(&dir, "client-key.pem", &client.key_pem);
    let tls = brokers::TlsFiles {
        cert: std::path::Path::new(&server_pem),
        key: std::path::Path::new(&server_key),
        client_ca: Some(std::path::Path::new(&ca_pem)),
    };
    let nats = brokers::nats_tls(dir.path(), "jetstream TLS test", &tls);
    let (bodies, _) = messages(1_500, 23);
    let valid = valid_points(&bodies);
    runtime().block_on(async {
        let options = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(ca_pem.clone().into())
            .add_client_certificate(client_pem.clone().into(), client_key.clone().into());
        let js = brokers::jetstream_with(nats.port, options).await;
        create_stream(&js, "SECURE", -1).await;
        for b in &bodies {
            publish(&js, "secure.a", b.clone()).await;
        }
    });
    let ckpt = file(&dir, "model.ckpt");
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a = run_args(nats.port, "SECURE", "emstream", &ckpt);
        a[2] = url.clone();
        a.extend(["--nats-ca-file", &ca_pem].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Without a client certificate the server refuses: fatal within the
    // connect timeout, nothing learned.
    let out = wait_output(spawn(&base(&["--connect-timeout", "2"])));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("within --connect-timeout"),
        "{}",
        stderr(&out)
    );
    assert!(!ckpt.exists());
    assert!(stderr(&out).contains("--nats-cert"), "{}", stderr(&out));
    // A CA that did not sign the server's certificate: refused too.
    let stranger = write_file(&dir, "stranger.pem", &TestCa::new("another CA").pem());
    let mut args = base(&[
        "--nats-cert",
        &client_pem,
        "--nats-key",
        &client_key,
        "--connect-timeout",
        "2",
    ]);
    let ca_at = args.iter().position(|a| a == "--nats-ca-file").unwrap() + 1;
    args[ca_at] = stranger;
    let out = wait_output(spawn(&args));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("UnknownIssuer") && text.contains("check --nats-ca-file"),
        "{text}"
    );

    // With it: every message learned exactly once.
    let out = wait_output(spawn(&base(&[
        "--nats-cert",
        &client_pem,
        "--nats-key",
        &client_key,
        "--stop-when-idle",
        "1",
    ])));
    assert_ok(&out);
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(ck.learner.counters().points_seen, valid);
    assert_eq!(
        position(&ckpt, "jetstream:SECURE"),
        Some(bodies.len() as u64)
    );
}

/// A stop (SIGTERM) while the first model is being fitted: the points
/// received after the warm-up's are saved with the warm-up buffer, so the
/// resume, which reads on after the saved stream position, learns every
/// point once and ends with the model of one uninterrupted run. (They used
/// to be dropped while their position was kept: a resume never saw them.)
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_stop_during_the_first_fit_loses_no_point_of_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream stop-during-fit test");
    let port = nats.port;
    let (bodies, valid) = messages(20_000, 31);
    // The first 30 messages (about 3,000 points: the warm-up's 2,000 and
    // more) at once, the rest while the run is stopped and resumed.
    runtime().block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "FIT", -1).await;
        for b in &bodies[..30] {
            publish(&js, "fit.a", b.clone()).await;
        }
    });
    let publisher = {
        let rest = bodies[30..].to_vec();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let js = jetstream(port).await;
                for b in rest {
                    publish(&js, "fit.a", b).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
    };
    // A fit long enough for the stop to land in it.
    let args = |consumer: &str, ckpt: &std::path::Path| -> Vec<String> {
        let mut a = run_args(port, "FIT", consumer, ckpt);
        a.truncate(a.len() - SMALL.len());
        a.extend(LONG_FIRST_FIT.iter().map(|s| s.to_string()));
        a.extend(["--stop-when-idle", "1"].map(String::from));
        a
    };
    let ckpt = file(&dir, "model.ckpt");
    // The fit is held (test-only fault injection) until the signal, which
    // is sent once the first 30 messages were delivered to the run.
    let mut cmd = emstream();
    cmd.args(args("emstream", &ckpt))
        .env(crate::util::SLOW_FIT, "120000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn_guarded().expect("the binary starts");
    let mut err = crate::util::StderrLines::new(&mut child);
    err.wait_for("fitting the first model");
    wait_until("the first 30 messages were never delivered", || {
        let delivered = runtime().block_on(async {
            let js = jetstream(port).await;
            let mut c: async_nats::jetstream::consumer::PullConsumer = js
                .get_stream("FIT")
                .await
                .unwrap()
                .get_consumer("emstream")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u64, String>(
                c.info()
                    .await
                    .map_err(|e| e.to_string())?
                    .delivered
                    .stream_sequence,
            )
        })?;
        if delivered >= 30 {
            Ok(())
        } else {
            Err(format!("{delivered} delivered"))
        }
    });
    let text = crate::util::sigterm_ok(&mut child, err);
    let stopped = emstream::checkpoint::load(&ckpt).expect("saved at the stop");
    assert!(
        stopped.learner.mixture().is_none(),
        "the fit finished: {text}"
    );
    let held = stopped.learner.pending_points();
    assert!(
        held > 2000,
        "only the warm-up's {held} points were held: the test did not stop a fit with points behind it"
    );
    let at = position(&ckpt, "jetstream:FIT").expect("a position is saved");
    publisher.join().expect("the publisher finishes");
    assert!(at < bodies.len() as u64, "stopped after the last message");
    // Resumed: on from the saved position, the held points learned first.
    let mut resume = args("emstream", &ckpt);
    resume.push("--resume".into());
    assert_ok(&wait_output(spawn(&resume)));
    let reference = file(&dir, "reference.ckpt");
    assert_ok(&wait_output(spawn(&args("reference", &reference))));
    let ck = emstream::checkpoint::load(&ckpt).unwrap();
    assert_eq!(
        ck.learner.counters().points_seen + ck.learner.pending_points() as u64,
        valid,
        "held {held} points at the stop, position {at}"
    );
    assert_eq!(position(&ckpt, "jetstream:FIT"), Some(bodies.len() as u64));
    assert_eq!(
        learner_bytes(&ckpt),
        learner_bytes(&reference),
        "stopped in the first fit and resumed: the model differs from one uninterrupted run"
    );
}

/// Sends `signal` (`-STOP`, `-CONT`) to a child.
fn signal(child: &Proc, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

/// A run that falls behind a stream with a retention limit loses the
/// messages the stream drops before they are read: refused while
/// reading, as on a resume, unless `--allow-gap`, which counts them.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn messages_dropped_while_the_run_is_behind_are_refused_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream live gap test");
    let port = nats.port;
    let rt = runtime();
    for (i, allow) in [false, true].into_iter().enumerate() {
        let stream = format!("LIVE{i}");
        let subject = format!("live{i}.a");
        let one_point_each: Vec<Vec<u8>> = points(3005, 40 + i as u64)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        rt.block_on(async {
            let js = jetstream(port).await;
            create_stream(&js, &stream, 500).await;
            for b in &one_point_each[..5] {
                publish(&js, &subject, b.clone()).await;
            }
        });
        let ckpt = file(&dir, &format!("model{i}.ckpt"));
        let mut args = run_args(port, &stream, "emstream", &ckpt);
        args.extend(
            [
                "--stop-when-idle",
                "3",
                "--checkpoint-interval",
                "0.1",
                "--dim",
                "2",
            ]
            .map(String::from),
        );
        if allow {
            args.push("--allow-gap".into());
        }
        let mut child = spawn(&args);
        let mut err = crate::util::StderrLines::new(&mut child);
        err.wait_for("reading from the start");
        // The first 5 are read (and saved) before the pause.
        wait_until(
            "the first messages are read",
            || match emstream::checkpoint::load(&ckpt) {
                Ok(ck) if ck.sources.iter().any(|s| s.position == 5) => Ok(()),
                Ok(ck) => Err(format!("{:?}", ck.sources)),
                Err(e) => Err(e.to_string()),
            },
        );
        // Paused, the run reads nothing while the stream keeps only its
        // last 500 of 3,000 new messages.
        signal(&child, "-STOP");
        rt.block_on(async {
            let js = jetstream(port).await;
            for b in &one_point_each[5..] {
                publish(&js, &subject, b.clone()).await;
            }
        });
        signal(&child, "-CONT");
        let status = crate::util::wait_exit(&mut child);
        let text = err.rest();
        // Seen while reading, or (when the server dropped the paused
        // client as a slow consumer) when the consumer reopens.
        assert!(
            text.contains("before they were read") || text.contains("no longer holds sequence"),
            "{text}"
        );
        let ck = emstream::checkpoint::load(&ckpt).expect("the checkpoint loads");
        let learned = ck.learner.counters().points_seen + ck.learner.pending_points() as u64;
        let last = ck.sources.iter().map(|s| s.position).max().unwrap_or(0);
        if allow {
            assert!(status.success(), "{status:?}\n{text}");
            // Every message is learned or counted as lost.
            assert_eq!(last, 3005, "{text}");
            assert!(learned < 3005, "nothing was dropped: {learned}\n{text}");
            assert!(
                text.contains(&format!(
                    "{} messages lost to the stream's retention",
                    3005 - learned
                )),
                "learned {learned}:\n{text}"
            );
        } else {
            assert_eq!(status.code(), Some(1), "{text}");
            assert!(text.contains("--allow-gap"), "{text}");
            // Learned exactly the messages read before the drop.
            assert_eq!(learned, last, "{text}");
            assert!(last < 3005, "{text}");
        }
    }
}

/// Stopping does not wait for a server that is gone: SIGTERM and
/// `--stop-when-idle` end the run with its final checkpoint while the
/// server is down.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_run_stops_while_its_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = brokers::nats(dir.path(), "jetstream stop while down test");
    let port = nats.port;
    let (bodies, valid) = messages(2_000, 23);
    runtime().block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "DOWN", -1).await;
        for b in &bodies {
            publish(&js, "down.a", b.clone()).await;
        }
    });
    for (i, stop) in ["SIGTERM", "--stop-when-idle"].into_iter().enumerate() {
        let ckpt = file(&dir, &format!("model{i}.ckpt"));
        let mut args = run_args(port, "DOWN", &format!("c{i}"), &ckpt);
        args.extend(["--checkpoint-interval", "0.1"].map(String::from));
        if stop == "--stop-when-idle" {
            args.extend(["--stop-when-idle", "2"].map(String::from));
        }
        let mut child = spawn(&args);
        let err = crate::util::StderrLines::new(&mut child);
        crate::util::wait_for_points(&ckpt, valid);
        nats.stop();
        std::thread::sleep(Duration::from_millis(500));
        let asked = std::time::Instant::now();
        if stop == "SIGTERM" {
            crate::util::sigterm(&child);
        }
        let status = crate::util::wait_exit(&mut child);
        let took = asked.elapsed();
        let text = err.rest();
        assert!(status.success(), "{stop}: {status:?} {text}");
        assert!(
            took < Duration::from_secs(10),
            "{stop}: took {took:?} with the server down:\n{text}"
        );
        assert_eq!(points_in(&ckpt), valid, "{stop}");
        nats.restart();
    }
}

/// A stream deleted and created again restarts its sequences: its
/// messages are not the ones the model learned. Refused on a resume and
/// while running, never skipped.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn a_recreated_stream_is_refused_on_a_resume_and_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream recreated stream test");
    let port = nats.port;
    let (bodies, _) = messages(4_000, 31);
    let rt = runtime();
    let recreate = |n: usize| {
        rt.block_on(async {
            let js = jetstream(port).await;
            let _ = js.delete_stream("RE").await;
            create_stream(&js, "RE", -1).await;
            for b in &bodies[..n] {
                publish(&js, "re.a", b.clone()).await;
            }
        })
    };
    recreate(20);
    let ckpt = file(&dir, "model.ckpt");
    let mut args = run_args(port, "RE", "emstream", &ckpt);
    args.extend(["--stop-when-idle", "1"].map(String::from));
    assert_ok(&wait_output(spawn(&args)));
    assert_eq!(position(&ckpt, "jetstream:RE"), Some(20));

    recreate(5);
    args.push("--resume".into());
    let out = wait_output(spawn(&args));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds sequences only up to 5, but the model has read up to 20"),
        "{}",
        stderr(&out)
    );

    // While running: the stream goes and comes back with 5 messages.
    recreate(25);
    let ckpt2 = file(&dir, "live.ckpt");
    let mut args = run_args(port, "RE", "live", &ckpt2);
    args.extend(["--checkpoint-interval", "0.1"].map(String::from));
    let mut child = spawn(&args);
    let err = crate::util::StderrLines::new(&mut child);
    wait_until(
        "the run has read the stream",
        || match emstream::checkpoint::load(&ckpt2) {
            Ok(ck) if ck.sources.iter().any(|s| s.position == 25) => Ok(()),
            Ok(ck) => Err(format!("{:?}", ck.sources)),
            Err(e) => Err(e.to_string()),
        },
    );
    recreate(5);
    let status = crate::util::wait_exit(&mut child);
    let text = err.rest();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("the model has read up to 25"), "{text}");
}

/// Two runs under one `--consumer` name delete each other's consumer;
/// each says so instead of fighting in silence.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn two_runs_sharing_a_consumer_name_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "jetstream shared consumer test");
    let port = nats.port;
    let (bodies, _) = messages(1_000, 33);
    runtime().block_on(async {
        let js = jetstream(port).await;
        create_stream(&js, "SH", -1).await;
        for b in &bodies {
            publish(&js, "sh.a", b.clone()).await;
        }
    });
    let mut a = spawn(&run_args(port, "SH", "shared", &file(&dir, "a.ckpt")));
    let a_err = crate::util::StderrLines::new(&mut a);
    // A is reading (its pull requests wait at the server) before B opens.
    std::thread::sleep(Duration::from_millis(1500));
    let mut b = spawn(&run_args(port, "SH", "shared", &file(&dir, "b.ckpt")));
    let mut b_err = crate::util::StderrLines::new(&mut b);
    // Each deletes the other's consumer in turn: B is told at once.
    let said = b_err.wait_for("another run");
    assert!(
        said.contains("is another run using --consumer shared")
            || said.contains("deleted by another client"),
        "{said}"
    );
    crate::util::sigterm(&b);
    crate::util::sigterm(&a);
    assert!(crate::util::wait_exit(&mut b).success(), "{}", b_err.rest());
    let a_status = crate::util::wait_exit(&mut a);
    assert!(a_status.success(), "{}", a_err.rest());
}
