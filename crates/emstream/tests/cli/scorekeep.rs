//! `--score-keep`: score lines that join back to their records, through
//! rejects, in CSV and JSON, from files, TCP connections, MQTT topics and
//! JetStream subjects; `score` and `run --score` keep the same fields for
//! the same records.

use std::collections::HashMap;
use std::process::Stdio;

use crate::brokers;
use crate::mqtt::publish_all;
use crate::realdata::{fixture, FEW};
use crate::util::*;

fn stdout_lines(out: &std::process::Output) -> Vec<String> {
    assert_ok(out);
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The R export: ids are row numbers (`"1"` on line 2), two rows have
/// `NA` and are rejected, and every score line still names its own row.
#[test]
fn r_export_rows_join_back_by_id_and_line_through_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let path = fixture("diamonds_r.csv");
    let keep = ["--score-keep", "@line,0,cut,@source"];
    let cols = ["--columns", "carat,depth,price"];
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(&path)
        .arg("--checkpoint")
        .arg(&ck)
        .args(FEW)
        .args(cols)
        .args(["--score"])
        .args(keep)
        .output()
        .unwrap();
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 78, "80 rows, 2 with NA rejected");
    let file_lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut lines_seen = Vec::new();
    for l in &lines {
        let f: Vec<&str> = l.splitn(5, ',').collect();
        let line: usize = f[0].parse().unwrap();
        // The raw id text, quotes undone, not a re-formatted number.
        assert_eq!(f[1], (line - 1).to_string(), "{l}");
        // The record on that line has that id and that cut.
        let record = &file_lines[line - 1];
        assert!(
            record.starts_with(&format!("\"{}\",", line - 1)),
            "{record}"
        );
        assert!(record.contains(&format!("\"{}\"", f[2])), "{l} vs {record}");
        assert_eq!(f[3], path.to_str().unwrap());
        lines_seen.push(line);
    }
    assert!(lines.iter().any(|l| l.contains(",Very Good,")));
    // The rejected rows (NA) are the ones missing, nothing shifted.
    let missing: Vec<usize> = (2..=81).filter(|n| !lines_seen.contains(n)).collect();
    assert_eq!(missing.len(), 2);
    for n in missing {
        assert!(file_lines[n - 1].contains("NA"), "{}", file_lines[n - 1]);
    }

    // `score` keeps the same fields of the same records, with a header
    // naming them first.
    let out = emstream()
        .arg("score")
        .arg("--model")
        .arg(&ck)
        .arg("--input")
        .arg(&path)
        .args(cols)
        .args(keep)
        .arg("--header")
        .output()
        .unwrap();
    let scored = stdout_lines(&out);
    assert_eq!(scored[0], "@line,0,cut,@source,label,log_lik");
    let prefix = |l: &str| l.splitn(5, ',').take(4).collect::<Vec<_>>().join(",");
    let a: Vec<String> = lines.iter().map(|l| prefix(l)).collect();
    let b: Vec<String> = scored[1..].iter().map(|l| prefix(l)).collect();
    assert_eq!(a, b, "run --score and score keep the same records' fields");
}

/// Kept text with separators, quotes and blanks is quoted per RFC 4180;
/// numbers keep their text.
#[test]
fn kept_csv_text_is_quoted_and_numbers_stay_as_written() {
    let input = b"id,note,x,y\n\
        \"a,1\",\"say \"\"hi\"\"\",1.50,2\n\
        b2, padded ,1e0,3\n\
        c3,plain,oops,4\n\
        d4,\"two; lines\",5,6\n\
        e5,last,0007,8\n";
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    // A model of x, y to score with.
    let pts = text(&points(300, 1));
    let out = run_stdin(
        &[
            "run",
            "--checkpoint",
            ck.to_str().unwrap(),
            "-k",
            "2",
            "--warmup",
            "100",
        ],
        &pts,
    );
    assert_ok(&out);
    let out = run_stdin(
        &[
            "score",
            "--model",
            ck.to_str().unwrap(),
            "--columns",
            "x,y",
            "--score-keep",
            "id,note,x,@line",
        ],
        input,
    );
    let lines = stdout_lines(&out);
    let err = stderr(&out);
    let kept: Vec<String> = lines
        .iter()
        .map(|l| {
            // The kept fields are everything before the last two fields.
            let cut = l.rmatch_indices(',').nth(1).unwrap().0;
            l[..cut].to_owned()
        })
        .collect();
    // Line 4 is not a number: rejected, no line, nothing shifted.
    assert!(err.contains("line 4"), "{err}");
    assert_eq!(kept[0], "\"a,1\",\"say \"\"hi\"\"\",1.50,2");
    assert_eq!(kept[1], "b2,padded,1e0,3");
    assert_eq!(kept[2], "d4,two; lines,5,5");
    assert_eq!(kept[3], "e5,last,0007,6");
    assert_eq!(kept.len(), 4);
    // Each kept line reads back as the record's fields.
    let mut r = csv_core::Reader::new();
    for k in &kept {
        let mut out = [0u8; 256];
        let mut ends = [0usize; 8];
        let (_, _, _, n) = r.read_record(format!("{k}\n").as_bytes(), &mut out, &mut ends);
        assert_eq!(n, 4, "{k}");
    }
}

/// NDJSON sensor objects: id and timestamp strings, the battery number as
/// written, and the line, on every JSON score line; junk lines leave gaps
/// without shifting anything.
#[test]
fn ndjson_objects_keep_id_timestamp_and_raw_numbers() {
    let path = fixture("sensors.ndjson");
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(&path)
        .args(FEW)
        .args(["--format", "json", "--fields", "env.temp,env.hum"])
        .args(["--score", "--score-keep", "id,ts,@line,bat,@message"])
        .output()
        .unwrap();
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 70);
    let records: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut last = 0;
    for l in &lines {
        assert!(l.starts_with("{\"id\":"), "kept fields come first: {l}");
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let line = v["@line"].as_u64().unwrap() as usize;
        assert!(line > last);
        last = line;
        let rec: serde_json::Value = serde_json::from_str(&records[line - 1]).unwrap();
        assert_eq!(v["id"], rec["id"], "{l}");
        assert_eq!(v["ts"], rec["ts"], "{l}");
        // The number's text as in the file.
        let raw = &records[line - 1];
        let bat = l
            .split("\"bat\":")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert!(raw.contains(&format!("\"bat\":{bat}")), "{l} vs {raw}");
        assert!(v["@message"].is_null());
        assert!(v["log_lik"].is_number());
    }
}

/// MQTT: `@source` is each point's topic and `@message` its message; the
/// reject warning names the topic and message of the bad record.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn mqtt_score_lines_and_rejects_name_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = brokers::mosquitto(dir.path(), "score-keep mqtt test");
    let port = broker.port;
    let child = emstream()
        .args([
            "run",
            "--mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            "--topic",
            "sensors/#",
            "--qos",
            "1",
            "--stop-when-idle",
            "2",
            "--columns",
            "1,2",
            "--dim",
            "2",
            "--score",
            "--score-keep",
            "0,@source,@message,@line",
        ])
        .args(SMALL)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("the binary starts");
    let mut child = child;
    let mut err_lines = StderrLines::new(&mut child);
    err_lines.wait_for("subscribed to sensors/#");
    // Message i: 20 points whose first field is the message's number; the
    // topic says which sensor it came from. Message 7 has a bad record.
    let topics = ["sensors/a", "sensors/b/temp", "sensors/c"];
    let pts = points(20 * 30, 4);
    let msgs: Vec<(String, Vec<u8>)> = pts
        .chunks(20)
        .enumerate()
        .map(|(i, c)| {
            let mut body: Vec<String> = c.iter().map(|p| format!("m{i},{p}")).collect();
            if i == 7 {
                body[3] = format!("m{i},oops,1");
            }
            (topics[i % 3].to_string(), body.join("\n").into_bytes())
        })
        .collect();
    publish_all(port, "pub-keep", msgs);
    let out = wait_output(child);
    let err = err_lines.rest();
    assert!(out.status.success(), "{err}");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 20 * 30 - 1, "{err}");
    // Every point of message i is kept with message i's topic, and all
    // of one message share its sequence number.
    let mut seq_of: HashMap<usize, String> = HashMap::new();
    let mut per_message: HashMap<usize, usize> = HashMap::new();
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        let i: usize = f[0].trim_start_matches('m').parse().unwrap();
        assert_eq!(f[1], topics[i % 3], "{l}");
        let seq = seq_of.entry(i).or_insert_with(|| f[2].to_owned());
        assert_eq!(f[2], seq, "{l}");
        *per_message.entry(i).or_default() += 1;
    }
    assert_eq!(per_message.len(), 30);
    assert_eq!(per_message[&7], 19);
    let warning = err
        .lines()
        .find(|l| l.contains("skipped"))
        .unwrap_or_else(|| panic!("no reject warning:\n{err}"));
    assert!(
        warning.contains(&format!("topic sensors/b/temp message {}", seq_of[&7])),
        "{warning}"
    );
}

/// An unknown header name in --score-keep is a usage error listing the
/// header; a name with indices-only input says to give indices.
#[test]
fn unknown_keep_names_are_usage_errors() {
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(fixture("diamonds_r.csv"))
        .args([
            "--columns",
            "carat,price",
            "--score",
            "--score-keep",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--score-keep names \"nope\""), "{err}");
    assert!(err.contains("carat"), "{err}");
    let pts = text(&points(50, 2));
    let out = run_stdin(&["run", "--score", "--score-keep", "id"], &pts);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("give 0-based indices"), "{err}");
    let out = run_stdin(&["run", "--score-keep", "0"], &pts);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("score"), "{}", stderr(&out));
}

/// JetStream: `@source` is each point's subject and `@message` its stream
/// sequence, the number a replay starts from.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn jetstream_score_lines_name_the_subject_and_stream_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let nats = brokers::nats(dir.path(), "score-keep jetstream test");
    let port = nats.port;
    let pts = points(20 * 12, 9);
    let sent: Vec<(String, u64)> = brokers::runtime().block_on(async {
        let js = brokers::jetstream(port).await;
        brokers::create_stream(&js, "KS", -1).await;
        let mut sent = Vec::new();
        for (i, c) in pts.chunks(20).enumerate() {
            let subject = format!("ks.s{}", i % 3);
            let mut body: Vec<String> = c.iter().map(|p| format!("m{i},{p}")).collect();
            if i == 5 {
                body[0] = format!("m{i},oops,1");
            }
            let seq = brokers::publish(&js, &subject, body.join("\n").into_bytes()).await;
            sent.push((subject, seq));
        }
        sent
    });
    let out = emstream()
        .args([
            "run",
            "--nats",
            &format!("nats://127.0.0.1:{port}"),
            "--stream",
            "KS",
            "--consumer",
            "keep",
            "--stop-when-idle",
            "2",
            "--columns",
            "1,2",
            "--score",
            "--score-keep",
            "0,@source,@message",
        ])
        .args(SMALL)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 20 * 12 - 1, "{err}");
    for l in &lines {
        let f: Vec<&str> = l.split(',').collect();
        let i: usize = f[0].trim_start_matches('m').parse().unwrap();
        assert_eq!(f[1], sent[i].0, "{l}");
        assert_eq!(f[2], sent[i].1.to_string(), "{l}");
    }
    assert!(
        err.contains(&format!("topic ks.s2 message {} line", sent[5].1)),
        "{err}"
    );
}

/// `--on-error fail` stops at the bad record: the records before it keep
/// their fields (resolved against the header) and their lines.
#[test]
fn on_error_fail_scores_the_records_before_with_their_fields() {
    // The bad record comes in a later chunk than the header.
    let mut input = String::from("id,x,y\n");
    for (i, p) in points(30_000, 3).iter().enumerate() {
        input.push_str(&format!("a{i},{p}\n"));
    }
    input.push_str("c,x,5\nd,6,7\n");
    let out = run_stdin(
        &[
            "run",
            "--score",
            "--score-keep",
            "id,@line",
            "--columns",
            "x,y",
            "--on-error",
            "fail",
            "-k",
            "1",
            "--warmup",
            "20",
            "--batch-size",
            "10",
        ],
        input.as_bytes(),
    );
    assert!(!out.status.success());
    let lines: Vec<String> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| l.splitn(3, ',').take(2).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(lines.len(), 30_000, "{}", stderr(&out));
    assert_eq!(lines[0], "a0,2");
    assert_eq!(lines[29_999], "a29999,30001");
}

/// TCP: `@source` names each point's connection, `@line` its line in
/// that connection, so two interleaved clients' lines come apart.
#[test]
fn tcp_score_lines_name_their_connection_and_line() {
    use std::io::Write;
    let mut child = emstream()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--stop-when-idle",
            "1",
            "--dim",
            "2",
            "--score",
            "--score-keep",
            "@source,@line",
        ])
        .args(SMALL)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .unwrap();
    let mut err = StderrLines::new(&mut child);
    let line = err.wait_for("listening on ");
    let addr = line.rsplit(' ').next().unwrap().to_string();
    let mut a = std::net::TcpStream::connect(&addr).unwrap();
    let mut b = std::net::TcpStream::connect(&addr).unwrap();
    let pa = points(300, 60);
    let pb = points(250, 61);
    a.write_all(&text(&pa[..150])).unwrap();
    b.write_all(&text(&pb[..100])).unwrap();
    b.write_all(b"1,nope\n").unwrap();
    b.write_all(&text(&pb[100..])).unwrap();
    a.write_all(&text(&pa[150..])).unwrap();
    drop(a);
    drop(b);
    let out = wait_output(child);
    let rest = err.rest();
    assert!(out.status.success(), "{rest}");
    let mut by_source: HashMap<String, Vec<u64>> = HashMap::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        // `"connection #1 (127.0.0.1:PORT)",LINE,label,log_lik`: the name
        // has no comma, so it is not quoted.
        let f: Vec<&str> = l.split(',').collect();
        assert!(f[0].starts_with("connection #"), "{l}");
        by_source
            .entry(f[0].to_owned())
            .or_default()
            .push(f[1].parse().unwrap());
    }
    assert_eq!(by_source.len(), 2, "{by_source:?}");
    let mut lines: Vec<Vec<u64>> = by_source.into_values().collect();
    lines.sort_by_key(Vec::len);
    // b: lines 1..=251 but its bad line 101; a: lines 1..=300.
    let b_lines: Vec<u64> = (1..=251).filter(|&n| n != 101).collect();
    assert_eq!(lines[0], b_lines);
    assert_eq!(lines[1], (1..=300).collect::<Vec<u64>>());
}
