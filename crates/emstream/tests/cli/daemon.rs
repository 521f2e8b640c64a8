//! The daemon: admin endpoints, drain without loss, SIGHUP, idle timeout,
//! disk faults, check-config, environment variables, completions and man
//! page, and the shipped daemon configuration.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A running `emstream run --listen 127.0.0.1:0 --admin 127.0.0.1:0 ...`.
struct Daemon {
    child: Proc,
    err: StderrLines,
    listen: String,
    admin: String,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let (child, err, listen, admin) = listen_with_admin(extra);
        Daemon {
            child,
            err,
            listen,
            admin,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin, path)
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until `/metrics` has `sample` at `value`.
    fn wait_metric(&self, sample: &str, value: f64) -> BTreeMap<String, f64> {
        metrics_when(
            &self.admin,
            &format!("{sample} never reached {value}"),
            |m| m.get(sample) == Some(&value),
        )
    }

    /// SIGTERM, exit status 0, and the rest of stderr.
    fn stop(mut self) -> String {
        self.signal("TERM");
        let status = wait_exit(&mut self.child);
        let rest = self.err.rest();
        assert!(status.success(), "exit {status:?}: {rest}");
        rest
    }
}

/// Sends `lines` on a new connection and closes it.
fn send(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
}

fn inspect_text(path: &Path) -> String {
    let out = emstream()
        .args(["inspect", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sigterm_right_after_eight_clients_closed_learns_every_valid_point() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec!["--checkpoint", ck.to_str().unwrap(), "--dim", "2"];
    args.extend_from_slice(SMALL);
    let d = Daemon::start(&args);
    assert_eq!(d.get("/healthz").0, 200);
    let per_client = 40_000;
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            let addr = d.listen.clone();
            let data = text(&points(per_client, 100 + i));
            std::thread::spawn(move || send(&addr, &data))
        })
        .collect();
    // A junk client: one good record, then three bad ones.
    let junk = std::thread::spawn({
        let addr = d.listen.clone();
        move || send(&addr, b"1.5,2.5\nhello,1\n1,2,3\n\xff\xfe,1\n")
    });
    for c in clients {
        c.join().unwrap();
    }
    junk.join().unwrap();
    // The moment they have closed.
    let rest = d.stop();
    let j = inspect_json(&ck);
    let valid = 8 * per_client as u64 + 1;
    assert_eq!(j["points_seen"], valid, "{rest}");
    assert_eq!(j["records_rejected"], 3, "{rest}");
    assert!(rest.contains(&format!("{valid} points used")), "{rest}");
}

/// The run's point counter is the model's growth at every moment, the
/// partial mini-batch included: after good and bad input on several
/// connections, `/metrics`'s `emstream_points_learned_total` equals
/// `emstream_model_points_seen` and the checkpoint's points (learned and
/// pending), and `/model` says what the checkpoint says.
#[test]
fn the_point_counter_is_the_models_growth_after_mixed_input_on_several_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec!["--checkpoint", ck.to_str().unwrap(), "--dim", "2"];
    args.extend_from_slice(SMALL);
    let d = Daemon::start(&args);
    let clients: Vec<_> = [
        text(&points(20_000, 31)),
        b"1,2\nfoo,bar\n3,4\n5,".to_vec(),
        text(&points(1_003, 32)),
        b"7,8\n1,2,3\n\xff,1\n9,10\n".to_vec(),
    ]
    .into_iter()
    .map(|data| {
        let addr = d.listen.clone();
        std::thread::spawn(move || send(&addr, &data))
    })
    .collect();
    for c in clients {
        c.join().unwrap();
    }
    // 20,000 + 2 + 1,003 + 2 good records; 21,007 is not a multiple of
    // the batch of 50, so some wait in the partial mini-batch.
    let good = 21_007.0;
    let m = d.wait_metric("emstream_model_points_seen", good);
    assert_eq!(m["emstream_points_learned_total"], good, "{m:?}");
    let rejected: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("emstream_records_rejected_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rejected, 4.0, "{m:?}");
    // A checkpoint of the same moment: /model and the file agree.
    d.signal("HUP");
    wait_for_points(&ck, good as u64);
    let saved = inspect_json(&ck);
    let (code, live) = d.get("/model");
    assert_eq!(code, 200);
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert!(saved["pending_points"].as_u64().unwrap() > 0, "{saved}");
    for key in ["points_seen", "pending_points"] {
        assert_eq!(
            live[key], saved[key],
            "{key}: /model {live}\ncheckpoint {saved}"
        );
    }
    // Unchanged while nothing arrives; the summary counts the same points.
    assert_eq!(
        parse_metrics(&d.get("/metrics").1)["emstream_points_learned_total"],
        good
    );
    let rest = d.stop();
    assert!(rest.contains("21007 points used"), "{rest}");
    assert_eq!(inspect_json(&ck)["points_seen"], 21_007);
}

#[test]
fn admin_endpoints_agree_with_the_checkpoint_and_sighup_saves() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec![
        "--checkpoint",
        ck.to_str().unwrap(),
        "--shutdown-timeout",
        "20",
    ];
    args.extend_from_slice(SMALL);
    let mut d = Daemon::start(&args);
    assert_eq!(d.get("/livez").0, 200);
    let (code, headers, _) = http_get_full(&d.admin, "/metrics");
    assert_eq!(code, 200);
    assert!(
        headers.contains("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{headers}"
    );
    assert_eq!(d.get("/model").0, 503, "no model before the warm-up");

    let mut data = text(&points(3000, 7));
    data.extend_from_slice(b"x,1\n1,nan\n");
    send(&d.listen, &data);
    d.wait_metric("emstream_points_learned_total", 3000.0);
    // The live snapshot follows the learner by up to 250 ms: wait for it
    // too, so /metrics, /model and the checkpoint are of one model.
    let m = d.wait_metric("emstream_model_points_seen", 3000.0);
    // /model now, then a checkpoint of the same snapshot by SIGHUP.
    let (code, model) = d.get("/model");
    assert_eq!(code, 200);
    d.signal("HUP");
    d.err.wait_for("checkpoint written on request");
    assert_eq!(
        model,
        inspect_text(&ck),
        "/model is inspect --json of the checkpoint"
    );
    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 3000);
    assert_eq!(
        m["emstream_points_learned_total"],
        j["points_seen"].as_f64().unwrap()
    );
    assert_eq!(m["emstream_model_points_seen"], 3000.0);
    let by_reason = &j["rejected_by_reason"];
    for reason in ["not_numeric", "non_finite", "field_count", "bad_json"] {
        let want = by_reason[reason].as_f64().unwrap_or(0.0);
        assert_eq!(
            m[&format!("emstream_records_rejected_total{{reason=\"{reason}\"}}")],
            want,
            "{reason}: {by_reason}"
        );
    }
    assert_eq!(j["records_rejected"], 2);
    assert_eq!(
        m["emstream_anomalies_total"],
        j["anomalies"].as_f64().unwrap()
    );
    assert_eq!(m["emstream_reseeds_total"], j["reseeds"].as_f64().unwrap());

    // Still running after SIGHUP, and the save is counted and timed.
    assert_eq!(d.get("/healthz").0, 200);
    let m = d.wait_metric("emstream_checkpoints_written_total", 1.0);
    assert_eq!(m["emstream_checkpoint_write_duration_seconds_count"], 1.0);
    assert_eq!(m["emstream_checkpoint_failures_total"], 0.0);
    assert!(m["emstream_last_checkpoint_timestamp_seconds"] > 1.7e9);
    assert_eq!(m["emstream_phase{phase=\"running\"}"], 1.0);
    send(&d.listen, &text(&points(500, 8)));
    d.wait_metric("emstream_points_learned_total", 3500.0);

    // A client that keeps sending holds the drain open: /healthz is 503.
    let mut slow = TcpStream::connect(&d.listen).unwrap();
    d.wait_metric("emstream_connections_open", 1.0);
    let trickle = points(1000, 9);
    d.signal("TERM");
    let deadline = Instant::now() + PATIENCE;
    let mut i = 0;
    loop {
        slow.write_all(format!("{}\n", trickle[i % 1000]).as_bytes())
            .unwrap();
        i += 1;
        let (code, body) = d.get("/healthz");
        if code == 503 && body.contains("draining") {
            break;
        }
        assert!(Instant::now() < deadline, "never draining: {code} {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(slow);
    let status = wait_exit(&mut d.child);
    let rest = d.err.rest();
    assert!(status.success(), "{rest}");
    // Every trickled point sent before the close was learned.
    assert_eq!(inspect_json(&ck)["points_seen"], 3500 + i as u64, "{rest}");
}

#[test]
fn auth_token_guards_metrics_and_model_but_not_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-admin-token\n").unwrap();
    let d = Daemon::start(&["--auth-token-file", token.to_str().unwrap()]);
    for path in ["/metrics", "/model"] {
        let (code, headers, _) = http_get_full(&d.admin, path);
        assert_eq!(code, 401, "{path} without a token");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{headers}"
        );
        let (code, _, _) = http_get_headers(&d.admin, path, "Authorization: Bearer wrong\r\n");
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let good = "Authorization: Bearer s3cret-admin-token\r\n";
    let (code, _, body) = http_get_headers(&d.admin, "/metrics", good);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("emstream_points_learned_total"), "{body}");
    // No model before the warm-up: past the token check, 503 not 401.
    assert_eq!(http_get_headers(&d.admin, "/model", good).0, 503);
    assert_eq!(d.get("/livez").0, 200);
    assert_ne!(d.get("/healthz").0, 401);
    d.stop();
}

/// A GET over TLS to the admin server of `d`, trusting `ca`.
fn https_get(d: &Daemon, ca: &TestCa, path: &str) -> (u16, String, String) {
    let client = tls_client(&d.admin, &[ca.der()], "localhost", None);
    http_request(client, &d.admin, path, "").expect("an HTTPS response")
}

#[test]
fn admin_over_tls_answers_clients_that_trust_its_ca_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("emstream admin test CA");
    let server = ca.leaf(&["localhost"]);
    let cert = write_file(&dir, "cert.pem", &server.pem);
    let key = write_file(&dir, "key.pem", &server.key_pem);
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(SMALL);
    let d = Daemon::start(&args);

    // Ingest over TLS too (the same guard), then watch it over TLS.
    let mut feed = tls_client(&d.listen, &[ca.der()], "localhost", None);
    feed.write_all(&text(&points(400, 12))).unwrap();
    feed.flush().unwrap();
    feed.conn.send_close_notify();
    let _ = feed.flush();
    drop(feed);
    let (head, m) = wait_until("never learned 400", || {
        let (code, head, body) = https_get(&d, &ca, "/metrics");
        assert_eq!(code, 200, "{body}");
        let m = parse_metrics(&body);
        if m["emstream_points_learned_total"] == 400.0 {
            Ok((head, m))
        } else {
            Err(format!("{m:?}"))
        }
    });
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert_eq!(m["emstream_phase{phase=\"running\"}"], 1.0);
    let (code, _, body) = https_get(&d, &ca, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert_eq!(https_get(&d, &ca, "/livez").0, 200);

    // Plain HTTP to the TLS port: no HTTP answer, the handshake fails.
    let mut plain = TcpStream::connect(&d.admin).unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(plain, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/") && !String::from_utf8_lossy(&raw).contains("emstream_"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&raw)
    );
    // A client that does not trust the server's CA refuses the server,
    // and one that trusts it but expects another name does too.
    let stranger = TestCa::new("another CA");
    let untrusting = tls_client(&d.admin, &[stranger.der()], "localhost", None);
    let e = http_request(untrusting, &d.admin, "/metrics", "").unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let misnamed = tls_client(&d.admin, &[ca.der()], "emstream.example", None);
    let e = http_request(misnamed, &d.admin, "/healthz", "").unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");

    let rest = d.stop();
    assert!(rest.contains("admin connection from"), "{rest}");
    assert!(rest.contains("TLS handshake failed"), "{rest}");
}

#[test]
fn admin_with_client_certificates_refuses_a_scraper_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("emstream admin test CA");
    let server = ca.leaf(&["localhost"]);
    let scraper = ca.leaf(&["prometheus"]);
    let d = Daemon::start(&[
        "--tls-cert",
        &write_file(&dir, "cert.pem", &server.pem),
        "--tls-key",
        &write_file(&dir, "key.pem", &server.key_pem),
        "--tls-client-ca",
        &write_file(&dir, "ca.pem", &ca.pem()),
    ]);
    let anonymous = tls_client(&d.admin, &[ca.der()], "localhost", None);
    assert!(http_request(anonymous, &d.admin, "/metrics", "").is_err());
    let known = tls_client(&d.admin, &[ca.der()], "localhost", Some(&scraper));
    let (code, _, body) = http_request(known, &d.admin, "/metrics", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(parse_metrics(&body)["emstream_points_learned_total"], 0.0);
    let rest = d.stop();
    assert_eq!(rest.matches("TLS handshake failed").count(), 1, "{rest}");
}

#[test]
fn an_idle_connection_is_closed_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec![
        "--checkpoint",
        ck.to_str().unwrap(),
        "--idle-timeout",
        "0.5",
        "--max-connections",
        "1",
        "--stats-interval",
        "0.2",
    ];
    args.extend_from_slice(SMALL);
    let mut d = Daemon::start(&args);
    assert!(d.err.wait_for("stats: ").contains("0 points"));
    let mut silent = TcpStream::connect(&d.listen).unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let t = Instant::now();
    // The server closes it: the read sees the end.
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap(), 0);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    d.err.wait_for("closed (idle timeout)");
    d.err.wait_for("0 connections open (1 accepted)");
    // The only slot is free again.
    send(&d.listen, &text(&points(400, 3)));
    let m = d.wait_metric("emstream_points_learned_total", 400.0);
    assert_eq!(m["emstream_connections_idle_closed_total"], 1.0);
    let rest = d.stop();
    assert!(rest.contains("400 points used"), "{rest}");
}

#[test]
fn a_checkpoint_directory_gone_does_not_stop_learning() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("state");
    std::fs::create_dir(&sub).unwrap();
    let ck = sub.join("m.ckpt");
    let mut args = vec![
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-interval",
        "0.1",
    ];
    args.extend_from_slice(SMALL);
    let d = Daemon::start(&args);
    send(&d.listen, &text(&points(1000, 4)));
    wait_for_points(&ck, 1000);
    // The directory disappears (unmounted, deleted): saves fail.
    let gone = dir.path().join("state.gone");
    std::fs::rename(&sub, &gone).unwrap();
    send(&d.listen, &text(&points(1000, 5)));
    wait_until("no failure reported", || match d.get("/healthz") {
        (503, body) if body.contains("checkpoint_failing") => Ok(()),
        (code, body) => Err(format!("{code} {body}")),
    });
    // Learning went on; the failure is counted; the old file is intact.
    let m = d.wait_metric("emstream_points_learned_total", 2000.0);
    assert!(m["emstream_checkpoint_failures_total"] >= 1.0, "{m:?}");
    assert_eq!(m["emstream_checkpoint_failing"], 1.0);
    assert_eq!(inspect_json(&gone.join("m.ckpt"))["points_seen"], 1000);
    // Back again: the next interval saves, and health returns.
    std::fs::create_dir(&sub).unwrap();
    send(&d.listen, &text(&points(100, 6)));
    wait_for_points(&ck, 2100);
    wait_until("health never returned", || match d.get("/healthz") {
        (200, _) => Ok(()),
        (code, body) => Err(format!("{code} {body}")),
    });
    let rest = d.stop();
    assert!(
        rest.contains("checkpoint not written: ") && rest.contains("trying again in 1 s"),
        "{rest}"
    );
    assert!(!rest.contains("final checkpoint not written"), "{rest}");
    assert_eq!(inspect_json(&ck)["points_seen"], 2100);
}

/// A failed save is tried again on its own: points learned before the
/// disk came back reach it without another input point.
#[test]
fn a_failed_checkpoint_is_retried_while_no_input_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("state");
    std::fs::create_dir(&sub).unwrap();
    let ck = sub.join("m.ckpt");
    let mut args = vec![
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-interval",
        "0.1",
    ];
    args.extend_from_slice(SMALL);
    let d = Daemon::start(&args);
    send(&d.listen, &text(&points(1000, 4)));
    wait_for_points(&ck, 1000);
    let gone = dir.path().join("state.gone");
    std::fs::rename(&sub, &gone).unwrap();
    send(&d.listen, &text(&points(1000, 5)));
    wait_until("no failure reported", || match d.get("/healthz") {
        (503, body) if body.contains("checkpoint_failing") => Ok(()),
        (code, body) => Err(format!("{code} {body}")),
    });
    d.wait_metric("emstream_points_learned_total", 2000.0);
    // The disk is back; no point arrives any more.
    std::fs::create_dir(&sub).unwrap();
    wait_for_points(&ck, 2000);
    wait_until("health never returned", || match d.get("/healthz") {
        (200, _) => Ok(()),
        (code, body) => Err(format!("{code} {body}")),
    });
    let rest = d.stop();
    assert!(rest.contains("failed attempt(s) (2000 points)"), "{rest}");
}

#[test]
fn check_config_prints_settings_or_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(&dir, "good.toml");
    std::fs::write(&good, "components = 3\nadmin = \"9090\"\n").unwrap();
    let out = emstream().arg("check-config").arg(&good).output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("components = 3"), "{text}");
    assert!(text.contains("shutdown_timeout = 10.0"), "{text}");

    let typo = file(&dir, "typo.toml");
    std::fs::write(&typo, "# a daemon\ncomponents = 3\nbatch_size = \"big\"\n").unwrap();
    let out = emstream().arg("check-config").arg(&typo).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 3, key batch_size"), "{err}");

    let rule = file(&dir, "rule.toml");
    std::fs::write(&rule, "components = 3\n\nidle_timeout = -1.0\n").unwrap();
    let out = emstream().arg("check-config").arg(&rule).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 3 (idle_timeout)"), "{err}");
    assert!(err.contains("positive number of seconds"), "{err}");
}

/// check-config prints what a run with the file uses: the environment's
/// checkpoint over the file's (as the daemon walkthrough sets it), and a
/// run with that file and environment writes exactly there.
#[test]
fn check_config_prints_the_settings_a_run_uses_environment_included() {
    let dir = tempfile::tempdir().unwrap();
    let in_file = file(&dir, "file.ckpt");
    let in_env = file(&dir, "env.ckpt");
    let cfg = file(&dir, "run.toml");
    std::fs::write(
        &cfg,
        format!(
            "checkpoint = {:?}\ncomponents = 2\nwarmup = 200\nbatch_size = 50\n",
            in_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let with_env = |cmd: &mut std::process::Command| {
        cmd.env("EMSTREAM_CHECKPOINT", &in_env)
            .env("EMSTREAM_LOG_FORMAT", "json")
            .env_remove("EMSTREAM_CONFIG")
            .env_remove("EMSTREAM_LISTEN")
            .env_remove("EMSTREAM_ADMIN")
            .env_remove("EMSTREAM_LOG_LEVEL");
    };
    let mut check = emstream();
    check.arg("check-config").arg(&cfg);
    with_env(&mut check);
    let out = check.output().unwrap();
    assert_ok(&out);
    let printed = String::from_utf8(out.stdout).unwrap();
    let settings: toml::Table = toml::from_str(&printed).expect("the settings are TOML");
    assert_eq!(
        settings["checkpoint"].as_str(),
        in_env.to_str(),
        "the environment's checkpoint, not the file's:\n{printed}"
    );
    assert_eq!(settings["log_format"].as_str(), Some("json"), "{printed}");
    assert_eq!(settings["components"].as_integer(), Some(2), "{printed}");
    assert!(
        printed.contains("EMSTREAM_CHECKPOINT sets checkpoint")
            && printed.contains("EMSTREAM_LOG_FORMAT sets log_format"),
        "{printed}"
    );

    // The run with the same file and environment writes where check-config
    // said.
    let mut run = emstream();
    run.args(["run", "--config", cfg.to_str().unwrap()]);
    with_env(&mut run);
    let mut child = spawn_with(&mut run, Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(&points(300, 3))).unwrap();
    drop(stdin);
    assert_ok(&wait_output(child));
    assert_eq!(inspect_json(&in_env)["points_seen"], 300);
    assert!(!in_file.exists(), "the file's checkpoint was written");
}

#[test]
fn environment_sets_the_checkpoint_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = file(&dir, "env.ckpt");
    let mut child = spawn_with(
        emstream()
            .arg("run")
            .args(SMALL)
            .env("EMSTREAM_CHECKPOINT", &from_env),
        Stdio::piped(),
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&text(&points(300, 1)))
        .unwrap();
    assert_ok(&wait_output(child));
    assert_eq!(inspect_json(&from_env)["points_seen"], 300);

    let from_flag = file(&dir, "flag.ckpt");
    let mut args = vec!["run", "--checkpoint", from_flag.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let mut child = spawn_with(
        emstream().args(&args).env("EMSTREAM_CHECKPOINT", &from_env),
        Stdio::piped(),
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&text(&points(250, 1)))
        .unwrap();
    assert_ok(&wait_output(child));
    assert_eq!(inspect_json(&from_flag)["points_seen"], 250);
    assert_eq!(inspect_json(&from_env)["points_seen"], 300);
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = emstream().args(["completions", shell]).output().unwrap();
        assert_ok(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("shutdown-timeout"), "{shell}: {text}");
    }
    let out = emstream().arg("man").output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(".ie") || text.contains(".TH emstream"),
        "{text}"
    );
    assert!(text.contains("emstream\\-check\\-config(1)"), "{text}");
    let out = emstream().args(["man", "run"]).output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(".TH emstream-run 1"), "{text}");
    assert!(text.contains("shutdown\\-timeout"), "{text}");
}

#[test]
fn the_shipped_daemon_config_learns_the_feed() {
    // As the README's daemon recipe runs it, with the state directory moved
    // by the environment and the addresses picked by the system.
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "model.ckpt");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/daemon.toml");
    let mut cmd = emstream();
    cmd.args(["run", "--warmup", "200"])
        .env("EMSTREAM_CONFIG", &config)
        .env("EMSTREAM_CHECKPOINT", &ck)
        .env("EMSTREAM_LISTEN", "127.0.0.1:0")
        .env("EMSTREAM_ADMIN", "127.0.0.1:0");
    let mut child = spawn_with(&mut cmd, Stdio::null());
    let mut err = StderrLines::new(&mut child);
    let listen = last_word(&err.wait_for("listening on "));
    // What examples/tcp_feed.rs sends: "x,y" lines.
    send(&listen, &text(&points(2000, 11)));
    wait_for_points_after_hup(&child, &ck, 2000);
    let rest = sigterm_ok(&mut child, err);
    let j = inspect_json(&ck);
    assert_eq!(j["points_seen"], 2000, "{rest}");
    assert_eq!(j["records_rejected"], 0, "{rest}");
}

/// SIGHUPs until the checkpoint holds `n` points.
fn wait_for_points_after_hup(child: &Proc, path: &Path, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let _ = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(ck) = emstream::checkpoint::load(path) {
            let have = ck.learner.counters().points_seen + ck.learner.pending_points() as u64;
            if have == n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint never held {n} points"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_scores_stay_on_stdout() {
    let mut args = vec!["run", "--log-format", "json", "--score"];
    args.extend_from_slice(SMALL);
    let mut input = text(&points(300, 12));
    input.extend_from_slice(b"1,x\n");
    let out = run_stdin(&args, &input);
    assert_ok(&out);
    let err = stderr(&out);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    let summary = lines
        .iter()
        .find_map(|l| {
            l["fields"]["message"]
                .as_str()
                .filter(|m| m.contains("points used"))
        })
        .expect("a summary line");
    assert!(
        summary.starts_with("300 points used, 1 records rejected"),
        "{summary}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 300);
}

/// An admin server open to other hosts without TLS or a token says so.
#[test]
fn an_admin_server_reachable_from_other_hosts_without_protection_warns() {
    let out = run_stdin(&["run", "--admin", "0.0.0.0:0"], &text(&points(50, 3)));
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("the admin server on 0.0.0.0:") && err.contains("without TLS or a token"),
        "{err}"
    );
    let out = run_stdin(&["run", "--admin", "127.0.0.1:0"], &text(&points(50, 3)));
    assert_ok(&out);
    assert!(!stderr(&out).contains("without TLS or a token"));
}

/// Strangers cost the admin server little: 150 silent connections do not
/// keep `/healthz` from answering at once, a request whose headers never
/// end is closed after the idle timeout, and HTTP/2 prior knowledge (many
/// requests on one connection) is closed at once.
#[test]
fn the_admin_server_bounds_silent_slow_and_http2_connections() {
    let d = Daemon::start(SMALL);
    let silent: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(&d.admin).unwrap())
        .collect();
    let asked = Instant::now();
    let (code, _) = d.get("/healthz");
    assert!(code == 200 || code == 503, "{code}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "/healthz took {:?} beside 150 silent connections",
        asked.elapsed()
    );

    let mut h2 = TcpStream::connect(&d.admin).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let asked = Instant::now();
    let n = h2.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "HTTP/2 was answered: {:?}", &buf[..n]);
    assert!(asked.elapsed() < Duration::from_secs(2));

    let mut slow = TcpStream::connect(&d.admin).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let asked = Instant::now();
    let n = slow.read(&mut buf).unwrap_or(0);
    let took = asked.elapsed();
    assert_eq!(n, 0, "answered: {:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(20),
        "closed after {took:?}"
    );
    drop(silent);
    let rest = d.stop();
    assert!(rest.contains("points used"), "{rest}");
}
