//! The MQTT source against a real `mosquitto` the test starts: wildcard
//! topics, QoS 1, junk payloads counted, a broker restart mid-stream.

use std::process::Stdio;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::brokers::{self, runtime};
use crate::util::{
    emstream, file, points, wait_exit, wait_for_points, SpawnGuarded, StderrLines, SMALL,
};

/// Publishes `msgs` (topic, body) at QoS 1 and waits for every PUBACK.
pub fn publish_all(port: u16, id: &str, msgs: Vec<(String, Vec<u8>)>) {
    publish_all_with(MqttOptions::new(id, "127.0.0.1", port), msgs);
}

/// [`publish_all`] with the client options `o` (TLS, say).
pub fn publish_all_with(o: MqttOptions, msgs: Vec<(String, Vec<u8>)>) {
    publish(o, msgs, false);
}

/// Publishes `msgs` at QoS 1, retained or not, and waits for every PUBACK.
fn publish(mut o: MqttOptions, msgs: Vec<(String, Vec<u8>)>, retain: bool) {
    o.set_max_packet_size(8 << 20, 8 << 20);
    runtime().block_on(async {
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(o, 16);
        let n = msgs.len();
        let sender = client.clone();
        tokio::spawn(async move {
            for (topic, body) in msgs {
                sender
                    .publish(topic, QoS::AtLeastOnce, retain, body)
                    .await
                    .expect("publish is queued");
            }
        });
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the test publisher lost the broker: {e}"),
            }
        }
        let _ = client.disconnect().await;
    });
}

/// `count` messages of 50 points each, spread over topics the run
/// subscribes to through its wildcards.
pub fn batch(seed: u64, count: usize) -> Vec<(String, Vec<u8>)> {
    let pts = points(50 * count, seed);
    let topics = ["sensors/a/temp", "sensors/b/temp", "plant/x/y", "plant"];
    pts.chunks(50)
        .enumerate()
        .map(|(i, c)| {
            (
                topics[i % topics.len()].to_string(),
                c.join("\n").into_bytes(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn mqtt_wildcards_qos1_junk_counted_and_a_broker_restart_survived() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = brokers::mosquitto(dir.path(), "mqtt test");
    let port = broker.port;
    let ckpt = file(&dir, "model.ckpt");
    let mut child = emstream()
        .args([
            "run",
            "--mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "sensors/+/temp",
            "--topic",
            "plant/#",
            "--qos",
            "1",
            "--stop-when-idle",
            "4",
            "--checkpoint-interval",
            "0.1",
            "--checkpoint",
        ])
        .arg(&ckpt)
        .args(SMALL)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("the binary starts");
    let mut lines = StderrLines::new(&mut child);
    lines.wait_for("subscribed to sensors/+/temp, plant/#");

    let data = batch(1, 20);
    // A data message first (a first line that is not a number would be
    // taken for a header), then ones that are not learned, then the rest:
    // all before the run has all the points waited for below.
    let mut first = vec![data[0].clone()];
    // Not subscribed: never learned.
    first.push(("sensors/a/humidity".into(), b"1,2\n3,4".to_vec()));
    first.push(("other".into(), b"5,6".to_vec()));
    // Junk: three bad records, one per message.
    first.push(("sensors/c/temp".into(), b"hello world".to_vec()));
    first.push(("sensors/c/temp".into(), b"1,2,3".to_vec()));
    first.push(("plant/z".into(), b"{\"x\": 1}".to_vec()));
    first.extend(data[1..].iter().cloned());
    publish_all(port, "pub-1", first);
    // Acknowledged by the broker is not yet delivered: wait until the run
    // has them all before the broker dies.
    wait_for_points(&ckpt, 20 * 50);

    // The broker restarts mid-stream; the run reconnects and subscribes again.
    broker.restart();
    lines.wait_for("reconnected");
    lines.wait_for("subscribed to");
    publish_all(port, "pub-2", batch(2, 20));

    let status = wait_exit(&mut child);
    let text = lines.rest();
    assert!(status.success(), "exit {status:?}:\n{text}");
    assert!(text.contains("broker reconnections"), "{text}");
    let ck = emstream::checkpoint::load(&ckpt).expect("the checkpoint loads");
    assert_eq!(ck.learner.counters().points_seen, 2 * 20 * 50, "{text}");
    assert_eq!(ck.rejected.total(), 3, "{:?}\n{text}", ck.rejected);
    // MQTT cannot replay: no position is saved for it.
    assert!(ck.sources.is_empty(), "{:?}", ck.sources);
}

#[test]
fn a_broker_down_at_start_is_fatal_only_with_a_connect_timeout() {
    let port = brokers::free_port();
    let out = crate::util::wait_output(
        emstream()
            .args([
                "run",
                "--mqtt",
                &format!("mqtt://127.0.0.1:{port}"),
                "--topic",
                "t",
                "--connect-timeout",
                "0.5",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_guarded()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(1));
    let text = crate::util::stderr(&out);
    assert!(text.contains("within --connect-timeout"), "{text}");
}

/// A password in a broker address reaches the broker, never the log.
#[test]
fn a_password_in_a_broker_address_is_not_logged() {
    let port = brokers::free_port();
    for source in [
        vec![
            "--mqtt".to_string(),
            format!("mqtt://emu:s3cret@127.0.0.1:{port}"),
            "--topic".into(),
            "t".into(),
        ],
        vec![
            "--nats".to_string(),
            format!("nats://emu:s3cret@127.0.0.1:{port}"),
            "--stream".into(),
            "s".into(),
            "--consumer".into(),
            "c".into(),
        ],
    ] {
        let out = crate::util::wait_output(
            emstream()
                .arg("run")
                .args(&source)
                .args(["--connect-timeout", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn_guarded()
                .unwrap(),
        );
        assert_eq!(out.status.code(), Some(1));
        let text = crate::util::stderr(&out);
        assert!(text.contains("within --connect-timeout"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn mqtts_with_the_brokers_ca_is_learned_and_another_ca_is_refused() {
    use crate::util::{stderr, wait_output, write_file, TestCa};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("emstream MQTT test CA");
    let server = ca.leaf(&["localhost", "127.0.0.1"]);
    let ca_pem = write_file(&dir, "ca.pem", &ca.pem());
    let cert = write_file(&dir, "server.pem", &server.pem);
    let key = write_file(&dir, "server-key.pem", &server.key_pem);
    let tls = brokers::TlsFiles {
        cert: std::path::Path::new(&cert),
        key: std::path::Path::new(&key),
        client_ca: None,
    };
    let broker = brokers::mosquitto_tls(dir.path(), "mqtts test", &tls);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let ckpt = file(&dir, "model.ckpt");
    let run = |ca_file: &str, extra: &[&str]| {
        emstream()
            .args(["run", "--mqtt", &url, "--mqtt-ca-file", ca_file])
            .args(["--topic", "sensors/#", "--checkpoint"])
            .arg(&ckpt)
            .args(SMALL)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_guarded()
            .expect("the binary starts")
    };

    // A CA that did not sign the broker's certificate: never connected.
    let stranger = write_file(&dir, "stranger.pem", &TestCa::new("another CA").pem());
    let out = wait_output(run(&stranger, &["--connect-timeout", "1"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("within --connect-timeout") && text.contains("UnknownIssuer"),
        "{text}"
    );

    // The broker's CA: connected over TLS, every point learned.
    let mut child = run(&ca_pem, &["--stop-when-idle", "2"]);
    let mut lines = StderrLines::new(&mut child);
    lines.wait_for("subscribed to sensors/#");
    let mut o = MqttOptions::new("tls-publisher", "127.0.0.1", broker.port);
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca: ca.pem().into_bytes(),
            alpn: None,
            client_auth: None,
        },
    ));
    let msgs = batch(5, 8)
        .into_iter()
        .map(|(_, body)| ("sensors/x/t".to_string(), body))
        .collect();
    publish_all_with(o, msgs);
    let status = wait_exit(&mut child);
    let text = lines.rest();
    assert!(status.success(), "exit {status:?}:\n{text}");
    let ck = emstream::checkpoint::load(&ckpt).expect("the checkpoint loads");
    assert_eq!(ck.learner.counters().points_seen, 8 * 50, "{text}");
}

/// `emstream run` on the test broker at `port` for `sensors/+/temp` until
/// it has been idle for 3 s, with `extra` flags; returns its stderr.
fn run_until_idle(
    port: u16,
    ckpt: &std::path::Path,
    extra: &[&str],
    publish: impl FnOnce(),
) -> String {
    let mut child = emstream()
        .args([
            "run",
            "--mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "sensors/+/temp",
            "--stop-when-idle",
            "3",
            "--checkpoint",
        ])
        .arg(ckpt)
        .args(SMALL)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("the binary starts");
    let mut lines = StderrLines::new(&mut child);
    lines.wait_for("subscribed to sensors/+/temp");
    publish();
    let status = wait_exit(&mut child);
    let text = lines.rest();
    assert!(status.success(), "exit {status:?}:\n{text}");
    text
}

/// Retained messages come again with every subscription: they are skipped
/// (and said so) unless `--mqtt-retained`. A message larger than the old
/// 1 MiB client limit is one `too_long` reject, not a lost connection.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn retained_messages_are_skipped_unless_asked_and_a_huge_message_is_a_reject() {
    let dir = tempfile::tempdir().unwrap();
    let broker = brokers::mosquitto(dir.path(), "mqtt retained test");
    let port = broker.port;
    // 20 retained messages of 50 points, one per topic (a broker keeps
    // one retained message per topic).
    let retained: Vec<(String, Vec<u8>)> = points(1000, 7)
        .chunks(50)
        .enumerate()
        .map(|(i, c)| (format!("sensors/r{i}/temp"), c.join("\n").into_bytes()))
        .collect();
    publish(MqttOptions::new("pub-r", "127.0.0.1", port), retained, true);

    let ckpt = file(&dir, "model.ckpt");
    let text = run_until_idle(port, &ckpt, &[], || {
        let mut live = batch(8, 10)
            .into_iter()
            .map(|(_, body)| ("sensors/live/temp".to_string(), body))
            .collect::<Vec<_>>();
        live.insert(5, ("sensors/big/temp".into(), vec![b'1'; 2 << 20]));
        publish_all(port, "pub-live", live);
    });
    assert!(
        text.contains("skipping retained messages") && text.contains("--mqtt-retained"),
        "{text}"
    );
    assert!(!text.contains("connection lost"), "{text}");
    let ck = emstream::checkpoint::load(&ckpt).expect("the checkpoint loads");
    assert_eq!(ck.learner.counters().points_seen, 500, "{text}");
    assert_eq!(ck.rejected.total(), 1, "{:?}", ck.rejected);
    assert_eq!(
        ck.rejected
            .by_reason
            .get(&emstream::input::RejectReason::TooLong),
        Some(&1),
        "{:?}",
        ck.rejected
    );

    // Asked for, the retained messages are learned (once per subscription).
    let text = run_until_idle(port, &ckpt, &["--mqtt-retained", "--overwrite"], || {});
    assert!(!text.contains("skipping retained"), "{text}");
    let ck = emstream::checkpoint::load(&ckpt).expect("the checkpoint loads");
    assert_eq!(ck.learner.counters().points_seen, 1000, "{text}");
}
