//! Files nobody here wrote, as exported by R, pandas, Excel and a sensor
//! gateway (committed under tests/fixtures/): exact counts of points
//! learned and of records rejected by reason, read back through
//! `inspect --json`.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Small learner settings for files of 50 to 150 records.
pub const FEW: &[&str] = &[
    "-k",
    "2",
    "--warmup",
    "30",
    "--batch-size",
    "10",
    "--seed",
    "3",
];

/// Runs `emstream run --input FIXTURE ARGS` into a fresh checkpoint and
/// returns (inspect --json, stderr).
fn learn(name: &str, args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(fixture(name))
        .arg("--checkpoint")
        .arg(&ck)
        .args(FEW)
        .args(args)
        .output()
        .unwrap();
    assert_ok(&out);
    (inspect_json(&ck), stderr(&out))
}

/// (points_seen, rejects by reason) of an inspect --json object.
fn counts(v: &serde_json::Value) -> (u64, Vec<(String, u64)>) {
    let by_reason = v["rejected_by_reason"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    (v["points_seen"].as_u64().unwrap(), by_reason)
}

/// Rejects by reason, in the order `inspect --json` lists them (by name).
fn reasons(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = list.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
    v.sort();
    v
}

#[test]
fn r_export_with_quoted_ids_and_text_with_spaces() {
    // 80 rows, 10 of them "Very Good"; two prices are NA.
    let (v, err) = learn("diamonds_r.csv", &["--columns", "carat,depth,price"]);
    assert_eq!(counts(&v), (78, reasons(&[("not_numeric", 2)])));
    assert_eq!(v["dim"], 3);
    assert!(err.contains("fields are separated by ','"), "{err}");
    // The same columns by index give the same model.
    let (w, _) = learn("diamonds_r.csv", &["--columns", "1,5,7"]);
    assert_eq!(counts(&w), counts(&v));
    assert_eq!(w["means"], v["means"]);
}

#[test]
fn pandas_export_with_index_nan_and_quoted_notes() {
    let cols = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)";
    let (v, _) = learn("iris_pandas.csv", &["--columns", cols]);
    // 150 flowers, two with an empty (NaN) sepal width.
    assert_eq!(counts(&v), (148, reasons(&[("not_numeric", 2)])));
    assert_eq!(v["dim"], 4);
}

#[test]
fn pandas_export_with_line_ends_inside_quoted_reviews() {
    // 60 reviews on 97 lines: 30 review texts hold line ends (one a blank
    // line), some doubled quotes and commas; row 41 has no price (NaN),
    // on line 68, which is where it is reported.
    let (v, err) = learn("reviews_pandas.csv", &["--columns", "price,weight_g"]);
    assert_eq!(counts(&v), (59, reasons(&[("not_numeric", 1)])));
    assert!(
        err.contains("line 68: not a number: field 3 is empty"),
        "{err}"
    );
    assert_eq!(v["names"], serde_json::json!(["price", "weight_g"]));
    // A stray quote after it: that line is the one reject, with its
    // reason; the lines after it are records again.
    let mut input = std::fs::read(fixture("reviews_pandas.csv")).unwrap();
    input
        .extend_from_slice(b"60,5,10.5,300.5,\"unclosed\n61,4,11.5,310.5,ok\n62,4,12.5,320.5,ok\n");
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let mut args = vec![
        "run",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--columns",
        "price,weight_g",
    ];
    args.extend_from_slice(FEW);
    let out = run_stdin(&args, &input);
    assert_ok(&out);
    let e = stderr(&out);
    assert!(
        e.contains("line 98: unclosed quote: a quoted field opened on this line is not closed before the end of the input"),
        "{e}"
    );
    assert_eq!(
        counts(&inspect_json(&ck)),
        (61, reasons(&[("bad_quoting", 1), ("not_numeric", 1)]))
    );
}

#[test]
fn decimal_comma_file_with_semicolons() {
    // 60 rows, one "n/a"; the time column is left out.
    for delimiter in ["semicolon", "auto"] {
        let (v, err) = learn(
            "decimal_comma.csv",
            &["--delimiter", delimiter, "--columns", "1,2,3"],
        );
        assert_eq!(
            counts(&v),
            (59, reasons(&[("not_numeric", 1)])),
            "{delimiter}"
        );
        assert_eq!(v["dim"], 3, "never 4-D or more: 1,5 is one number");
        let means: Vec<f64> = v["means"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect();
        // Temperature about 21, humidity about 45, pressure about 1013.
        for m in means.chunks(3) {
            assert!((15.0..27.0).contains(&m[0]), "{means:?}");
            assert!((1000.0..1030.0).contains(&m[2]), "{means:?}");
        }
        assert_eq!(
            err.contains("--delimiter auto"),
            delimiter == "auto",
            "{err}"
        );
    }
}

#[test]
fn byte_order_mark_and_crlf_from_excel() {
    let (v, err) = learn("bom_excel.csv", &[]);
    assert_eq!(counts(&v), (50, reasons(&[])));
    assert_eq!(v["dim"], 2);
    assert!(err.contains("line 1 is a header"), "{err}");
}

#[test]
fn ndjson_sensor_objects_with_nested_fields_and_junk() {
    // 70 good records; junk: a log line, a truncated object, one without
    // hum, a temperature as a string, a null, an array; a blank line.
    let args = ["--format", "json", "--fields", "env.temp,env.hum"];
    let (v, _) = learn("sensors.ndjson", &args);
    assert_eq!(
        counts(&v),
        (
            70,
            reasons(&[("not_numeric", 2), ("bad_json", 3), ("missing_field", 1)])
        )
    );
    let mut with_strings = args.to_vec();
    with_strings.push("--string-numbers");
    let (v, _) = learn("sensors.ndjson", &with_strings);
    assert_eq!(
        counts(&v),
        (
            71,
            reasons(&[("not_numeric", 1), ("bad_json", 3), ("missing_field", 1)])
        )
    );
}

#[test]
fn unknown_column_name_is_a_usage_error_listing_the_header() {
    let out = emstream()
        .args(["run", "--input"])
        .arg(fixture("diamonds_r.csv"))
        .args(["--columns", "carat,weight"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("\"weight\""), "{err}");
    assert!(
        err.contains(", carat, cut, color, clarity, depth, table, price, x, y, z"),
        "{err}"
    );
    // Names need a header line.
    let out = run_stdin(&["run", "--columns", "a,b"], b"1,2\n3,4\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a header line"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn on_error_fail_with_column_names_keeps_the_rows_before() {
    // Row id 17 (line 18) has price NA: the 16 rows before it are kept.
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(fixture("diamonds_r.csv"))
        .args(["--columns", "carat,depth,price", "--on-error", "fail"])
        .args(["-k", "2", "--warmup", "10", "--batch-size", "5"])
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 18"), "{err}");
    assert!(err.contains("the 16 points before it were saved"), "{err}");
    assert_eq!(inspect_json(&ck)["points_seen"], 16);
}

#[test]
fn plot_of_old_faithful_reads_names_and_writes_svg_or_png() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/data/faithful.csv");
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "f.ckpt");
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(&data)
        .args([
            "--columns",
            "eruptions,waiting",
            "-k",
            "2",
            "--warmup",
            "100",
        ])
        .args(["--batch-size", "20", "--seed", "1", "--checkpoint"])
        .arg(&ck)
        .output()
        .unwrap();
    assert_ok(&out);
    let svg = file(&dir, "f.svg");
    let plot = |columns: &str| {
        emstream()
            .arg("plot")
            .arg(&ck)
            .arg("-o")
            .arg(&svg)
            .arg("--data")
            .arg(&data)
            .args(["--columns", columns, "--sample", "50"])
            .output()
            .unwrap()
    };
    assert_ok(&plot("eruptions,waiting"));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let by_id = |id: &str| {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(by_id("x-label"), "eruptions");
    assert_eq!(by_id("y-label"), "waiting");
    assert!(
        by_id("title").contains("272 points seen"),
        "{}",
        by_id("title")
    );
    let dots = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("points"))
        .unwrap()
        .children()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(dots, 50);
    // A PNG name gets a PNG; another format's name is refused as a usage
    // error (exit 2).
    for (name, code) in [("f.png", Some(0)), ("f.pdf", Some(2))] {
        let path = file(&dir, name);
        let out = emstream()
            .arg("plot")
            .arg(&ck)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), code, "{name}: {}", stderr(&out));
        match code {
            Some(0) => assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG")),
            _ => {
                assert!(stderr(&out).contains("SVG or PNG"), "{}", stderr(&out));
                assert!(!path.exists());
            }
        }
    }
    // An unknown column name lists the header; a usage error (exit 2), as
    // in `run`.
    let out = plot("eruptions,wait");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("rownames, eruptions, waiting"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn names_travel_into_the_checkpoint_and_on_to_inspect_plot_and_resume() {
    // The header's names of the kept columns.
    let (v, _) = learn("iris_pandas.csv", &["--columns", "3,4"]);
    assert_eq!(
        v["names"],
        serde_json::json!(["petal length (cm)", "petal width (cm)"])
    );
    let (v, _) = learn(
        "decimal_comma.csv",
        &["--delimiter", ";", "--columns", "1,3"],
    );
    assert_eq!(v["names"], serde_json::json!(["Temperatur", "Druck"]));
    // JSON --fields name the dimensions.
    let (v, _) = learn(
        "sensors.ndjson",
        &["--format", "json", "--fields", "env.temp,env.hum"],
    );
    assert_eq!(v["names"], serde_json::json!(["env.temp", "env.hum"]));
    // Input without a header leaves them unknown.
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = run_stdin(
        &["run", "--checkpoint", ck.to_str().unwrap()],
        &text(&points(300, 1)),
    );
    assert_ok(&out);
    assert!(inspect_json(&ck)["names"].is_null());

    let ck = file(&dir, "n.ckpt");
    let run = |columns: &str, extra: &[&str]| {
        emstream()
            .arg("run")
            .arg("--input")
            .arg(fixture("iris_pandas.csv"))
            .arg("--checkpoint")
            .arg(&ck)
            .args(FEW)
            .args(["--columns", columns])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_ok(&run("1,2", &[]));
    // The table labels the dimensions with the names.
    let out = emstream().arg("inspect").arg(&ck).output().unwrap();
    assert_ok(&out);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("sepal length (cm)"), "{table}");
    // The plot of the checkpoint alone labels its axes with them; -o - is
    // standard output.
    let out = run_stdin(&["plot", ck.to_str().unwrap(), "-o", "-"], b"");
    assert_ok(&out);
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.contains(">sepal width (cm)<"), "{svg}");
    // A resume on input whose header names other columns warns, and the
    // checkpoint records the new names.
    let out = run("3,4", &["--resume"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains(
            "but the checkpoint's model was learned from sepal length (cm), sepal width (cm)"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        inspect_json(&ck)["names"],
        serde_json::json!(["petal length (cm)", "petal width (cm)"])
    );
}

#[test]
fn score_reads_like_run_and_dash_is_stdin_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(fixture("decimal_comma.csv"))
        .arg("--checkpoint")
        .arg(&ck)
        .args(FEW)
        .args(["--delimiter", ";", "--columns", "1,2,3"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(inspect_json(&ck)["points_seen"], 59);
    let ck = ck.to_str().unwrap();
    let data = std::fs::read(fixture("decimal_comma.csv")).unwrap();
    // score --input - with the same --delimiter and the columns by name:
    // one line per point.
    let out = run_stdin(
        &[
            "score",
            "--model",
            ck,
            "--input",
            "-",
            "--delimiter",
            ";",
            "--columns",
            "Temperatur,Luftfeuchte,Druck",
        ],
        &data,
    );
    assert_ok(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 59);

    // JSON objects: --fields and --string-numbers as for run.
    let ck2 = file(&dir, "s.ckpt");
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(fixture("sensors.ndjson"))
        .arg("--checkpoint")
        .arg(&ck2)
        .args(FEW)
        .args(["--format", "json", "--fields", "env.temp,env.hum"])
        .output()
        .unwrap();
    assert_ok(&out);
    let sensors = std::fs::read(fixture("sensors.ndjson")).unwrap();
    let score = |extra: &[&str]| {
        let mut args = vec![
            "score",
            "--model",
            ck2.to_str().unwrap(),
            "--format",
            "json",
            "--fields",
            "env.temp,env.hum",
        ];
        args.extend(extra);
        let out = run_stdin(&args, &sensors);
        assert_ok(&out);
        String::from_utf8(out.stdout).unwrap().lines().count()
    };
    assert_eq!(score(&[]), 70);
    assert_eq!(score(&["--string-numbers"]), 71);

    // plot --data - reads standard input.
    let out = run_stdin(
        &[
            "plot",
            ck,
            "-o",
            "-",
            "--data",
            "-",
            "--columns",
            "1,2,3",
            "--sample",
            "7",
        ],
        &data,
    );
    assert_ok(&out);
    let svg = String::from_utf8(out.stdout).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let dots = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle") && n.attribute("class").is_none())
        .count();
    assert_eq!(dots, 7 * 3, "7 points in each of the grid's 3 pair panels");
}

#[test]
fn a_run_rejecting_most_records_fails_after_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let ck = ck.to_str().unwrap();
    // 100 points and 150 lines of three fields: 60 % rejected.
    let mut lines = points(100, 5);
    lines.extend((0..150).map(|i| format!("{i},1,2")));
    let out = run_stdin(
        &["run", "--checkpoint", ck, "--warmup", "50"],
        &text(&lines),
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("150 of 250 records were rejected (60.0 %), more than --max-reject-rate 0.5"),
        "{err}"
    );
    assert!(err.contains("--columns") && err.contains("--dim") && err.contains("--delimiter"));
    assert!(
        err.contains(&format!("what was learned is saved in {ck}")),
        "{err}"
    );
    assert_eq!(inspect_json(Path::new(ck))["points_seen"], 100);
    // Allowed with a higher limit; a limit of 1 never fails.
    for limit in ["0.7", "1"] {
        let out = run_stdin(
            &["run", "--warmup", "50", "--max-reject-rate", limit],
            &text(&lines),
        );
        assert_ok(&out);
    }
    // Every record rejected (a wrong --dim): no model, still a failure.
    let out = run_stdin(&["run", "--dim", "3"], &text(&points(20, 1)));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was saved"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_live_stream_of_rejects_fails_without_waiting_for_its_end() {
    use std::io::Write;
    let mut child = emstream()
        .args(["run", "--dim", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn_guarded()
        .unwrap();
    // 2000 wrong records, then the input stays open.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(&points(2000, 2))).unwrap();
    stdin.flush().unwrap();
    let status = wait_exit(&mut child);
    drop(stdin);
    assert_eq!(status.code(), Some(4));
}

/// A writer that sends one record and waits for its score before the
/// next (a request-response client) is never stuck: each score line is
/// written and flushed without waiting for more input (a full score
/// buffer or mini-batch), while the input stays open.
#[test]
fn a_slow_writer_sees_each_score_line_before_it_sends_the_next_record() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = emstream()
        .args(["run", "--score", "--alert-quantile", "0.05"])
        .args(["-k", "2", "--warmup", "100", "--batch-size", "50"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn_guarded()
        .unwrap();
    let lines = points(140, 9);
    let mut stdin = child.stdin.take().unwrap();
    // The warm-up at once; then one record at a time, each written only
    // once the previous one's score line has arrived (fewer than a
    // mini-batch of 50 in all after the warm-up).
    let (warm, slow) = lines.split_at(100);
    stdin.write_all(&text(warm)).unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            tx.send(line.unwrap()).unwrap();
        }
    });
    for _ in 0..100 {
        rx.recv_timeout(PATIENCE)
            .expect("the warm-up's score lines");
    }
    for (i, line) in slow.iter().enumerate() {
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let score = rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!("no score line for record {i} after the warm-up within {PATIENCE:?}, the input open")
        });
        assert!(score.split(',').count() >= 2, "{score}");
    }
    drop(stdin);
    let status = wait_exit(&mut child);
    reader.join().unwrap();
    assert!(status.success());
    assert!(rx.try_recv().is_err(), "one line per record, no more");
}

#[test]
fn a_sorted_file_learns_through_the_shuffle_buffer() {
    // Old Faithful sorted by waiting time: a drifting stream.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/data/faithful.csv"),
    )
    .unwrap();
    let mut rows: Vec<&str> = text.lines().skip(1).collect();
    rows.sort_by_key(|r| r.rsplit(',').next().unwrap().parse::<u32>().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sorted = file(&dir, "sorted.csv");
    std::fs::write(
        &sorted,
        format!("rownames,eruptions,waiting\n{}\n", rows.join("\n")),
    )
    .unwrap();
    let ck = file(&dir, "m.ckpt");
    let avg_ll = |extra: &[&str]| {
        let out = emstream()
            .arg("run")
            .arg("--input")
            .arg(&sorted)
            .arg("--checkpoint")
            .arg(&ck)
            .args(["--overwrite", "--columns", "eruptions,waiting", "-k", "2"])
            .args(["--warmup", "40", "--batch-size", "10", "--seed", "1"])
            .args(extra)
            .output()
            .unwrap();
        assert_ok(&out);
        assert_eq!(inspect_json(&ck)["points_seen"], 272, "every point once");
        let out = emstream()
            .args(["score", "--columns", "eruptions,waiting", "--model"])
            .arg(&ck)
            .arg("--input")
            .arg(&sorted)
            .output()
            .unwrap();
        assert_ok(&out);
        let lls: Vec<f64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(lls.len(), 272);
        lls.iter().sum::<f64>() / 272.0
    };
    let plain = avg_ll(&[]);
    let shuffled = avg_ll(&["--shuffle-buffer", "100"]);
    // scikit-learn's GaussianMixture(2) on the same points: -4.1554.
    assert!(shuffled > -4.17, "{shuffled}");
    assert!(
        plain < shuffled - 0.2,
        "sorted {plain}, shuffled {shuffled}"
    );
    // Refused where it cannot work.
    for (args, says) in [
        (&["--score"][..], "score lines would not follow"),
        (&["--on-error", "fail"][..], "--on-error skip"),
    ] {
        let out = emstream()
            .arg("run")
            .arg("--input")
            .arg(&sorted)
            .args(["--shuffle-buffer", "10"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let out = run_stdin(&["run", "--shuffle-buffer", "10"], b"1,2\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--input PATH"), "{}", stderr(&out));
}
