//! The operator's view: the live page at `/` of the admin server, opened
//! in headless Chromium; `/recent` and `/history`; the Grafana dashboard
//! and the Prometheus rules in `packaging/`, checked against a live
//! daemon's `/metrics`.
//!
//! The browser test needs Debian's `chromium` package (`.ci/run` installs
//! it); built with `EMSTREAM_SKIP_BROWSER=1` it is listed as ignored
//! instead.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::Value;

use crate::util::*;

/// Where the three clusters of the browser test are, and their spread.
const CENTRES: [(f64, f64); 3] = [(0.0, 0.0), (12.0, 1.0), (5.0, 10.0)];

/// `n` points of three round, well separated 2-D clusters, in turn.
fn three_clusters(n: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let noise = Normal::new(0.0, 1.0).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let (cx, cy) = CENTRES[i % 3];
        let x = cx + noise.sample(&mut rng);
        let y = cy + 1.5 * noise.sample(&mut rng);
        writeln!(out, "{x:.5},{y:.5}").unwrap();
    }
    out
}

/// Sends `bytes` on one connection and waits until all `n` points are
/// learned.
fn feed(listen: &str, admin: &str, bytes: &[u8], n: usize) {
    TcpStream::connect(listen)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    metrics_when(admin, &format!("{n} points never learned"), |m| {
        m.get("emstream_points_learned_total") == Some(&(n as f64))
    });
}

/// The headless browser: Debian's `chromium` (or `chromium-browser`).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "this test opens the live page in headless Chromium, which is not installed: \
         install Debian's `chromium` package (apt-get install chromium), \
         or build the tests with EMSTREAM_SKIP_BROWSER=1 to skip it"
    );
}

/// Flags for a headless run that lets the page's scripts poll for 5 s of
/// virtual time first.
fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    c
}

/// The page's DOM once its scripts ran.
fn dump_dom(browser: &Path, profile: &Path, url: &str) -> String {
    let out = headless(browser, profile)
        .args(["--dump-dom", url])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A screenshot of the page at `path` (1280 x 900).
fn screenshot(browser: &Path, profile: &Path, url: &str, path: &Path) {
    let _ = headless(browser, profile)
        .arg(format!("--screenshot={}", path.display()))
        .args(["--window-size=1280,900", url])
        .output();
}

/// The texts of the elements of class `class` inside the element that
/// carries `attr` (each up to the next element after it).
fn texts_after(dom: &str, attr: &str, class: &str) -> Vec<String> {
    dom.split(attr)
        .skip(1)
        .filter_map(|part| {
            let at = part.find(&format!("class=\"{class}\""))?;
            let rest = &part[at..];
            let start = rest.find('>')? + 1;
            let end = rest[start..].find('<')? + start;
            Some(rest[start..end].to_string())
        })
        .collect()
}

#[test]
#[cfg_attr(
    emstream_skip_browser,
    ignore = "EMSTREAM_SKIP_BROWSER=1: needs headless Chromium"
)]
fn the_live_page_draws_every_component_with_the_numbers_of_model() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, err, listen, admin) = listen_with_admin(&[
        "-k",
        "3",
        "--warmup",
        "600",
        "--batch-size",
        "100",
        "--seed",
        "11",
    ]);
    // A header names the dimensions.
    let mut input = b"speed,load\n".to_vec();
    input.extend(three_clusters(3000));
    feed(&listen, &admin, &input, 3000);
    // The snapshot behind /model follows the learner within a moment.
    let model: Value = wait_until("/model with all 3000 points", || {
        let (code, body) = http_get(&admin, "/model");
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code}: {e}"))?;
        if v["points_seen"] == 3000 {
            Ok(v)
        } else {
            Err(body)
        }
    });
    let weights: Vec<f64> = model["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap())
        .collect();
    assert_eq!(weights.len(), 3);
    let seen = model["points_seen"].as_u64().unwrap();

    let url = format!("http://{admin}/");
    let whole = dump_dom(&browser, dir.path(), &url);
    // What the scripts drew, without their source.
    let dom = whole[..whole.find("<script").unwrap_or(whole.len())].to_string();
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let check = || -> Result<(), String> {
        let drawn = dom.matches("data-component=\"").count();
        if drawn != weights.len() {
            return Err(format!(
                "{drawn} data-component elements for {} components",
                weights.len()
            ));
        }
        for j in 0..weights.len() {
            if !dom.contains(&format!("data-component=\"{j}\"")) {
                return Err(format!("component {j} is not drawn"));
            }
        }
        // The component table, heaviest first: weight and points of each
        // row as /model gives them.
        let rows: Vec<usize> = dom
            .split("data-legend=\"")
            .skip(1)
            .map(|p| p[..p.find('"').unwrap()].parse().unwrap())
            .collect();
        let shown_w = texts_after(&dom, "data-legend=\"", "weight");
        let shown_n = texts_after(&dom, "data-legend=\"", "num points");
        if rows.len() != 3 || shown_w.len() != 3 || shown_n.len() != 3 {
            return Err(format!(
                "the table has rows {rows:?}, weights {shown_w:?}, points {shown_n:?}"
            ));
        }
        for (i, &j) in rows.iter().enumerate() {
            let want_w = format!("{:.3}", weights[j]);
            let n = (weights[j] * seen as f64).round() as u64;
            let want_n = group_thousands(n);
            if shown_w[i] != want_w || shown_n[i] != want_n {
                return Err(format!(
                    "component {j}: the page shows weight {} and {} points, /model gives {want_w} and {want_n}",
                    shown_w[i], shown_n[i]
                ));
            }
        }
        let k = format!("K = {}", weights.len());
        if !dom.contains(&k) || !dom.contains(&group_thousands(seen)) {
            return Err(format!("the page does not say {k} and {seen} points"));
        }
        for words in [">running<", ">speed<", ">load<"] {
            if !dom.contains(words) {
                return Err(format!("the page does not say {words:?}"));
            }
        }
        // The page times its own drawing.
        let ms = dom
            .split("id=\"render-ms\">")
            .nth(1)
            .and_then(|r| r[..r.find('<')?].parse::<f64>().ok());
        if ms.is_none() {
            return Err("the page reports no render time".into());
        }
        Ok(())
    };
    if let Err(e) = check() {
        screenshot(&browser, dir.path(), &url, &shot);
        panic!(
            "the live page is wrong: {e}\nscreenshot: {}\nDOM:\n{dom}",
            shot.display()
        );
    }
    if std::env::var_os("EMSTREAM_SCREENSHOT").is_some() {
        screenshot(&browser, dir.path(), &url, &shot);
        eprintln!("screenshot: {}", shot.display());
    }
    sigterm_ok(&mut child, err);
}

/// `12345` as `12,345` (the page's `toLocaleString("en-US")`).
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn recent_and_history_are_bounded_and_guarded_by_the_token_the_page_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "page-token\n").unwrap();
    let mut args = vec!["--auth-token-file", token.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let (mut child, err, listen, admin) = listen_with_admin(&args);
    let (code, headers, page) = http_get_full(&admin, "/");
    assert_eq!(code, 200);
    assert!(headers.contains("text/html"), "{headers}");
    assert!(page.contains("data-component") && !page.contains("src=\"http"));
    assert!(page.len() < 100_000, "the page is {} bytes", page.len());
    for path in ["/recent", "/history"] {
        assert_eq!(http_get(&admin, path).0, 401, "{path} without the token");
    }
    let auth = "Authorization: Bearer page-token\r\n";
    let mut input = b"page-token\n".to_vec();
    input.extend(text(&points(5000, 2)));
    TcpStream::connect(&listen)
        .unwrap()
        .write_all(&input)
        .unwrap();
    wait_until("5000 points in /history", || {
        let (_, _, h) = http_get_headers(&admin, "/history", auth);
        let h: Value = serde_json::from_str(&h).map_err(|e| e.to_string())?;
        if h["now"]["points"] == 5000 && h["now"]["phase"] == "running" {
            Ok(())
        } else {
            Err(h["now"].to_string())
        }
    });
    let (code, _, body) = http_get_headers(&admin, "/recent", auth);
    assert_eq!(code, 200);
    let r: Value = serde_json::from_str(&body).unwrap();
    let pts = r["points"].as_array().unwrap();
    // At most the ring; at least what one batch of the burst leaves in it.
    assert!((512..=2048).contains(&pts.len()), "{} points", pts.len());
    assert_eq!(r["dim"], 2);
    assert_eq!(r["log_lik"].as_array().unwrap().len(), pts.len());
    assert!(r["log_lik"][0].as_f64().unwrap() < 0.0);
    assert_eq!(r["anomaly"], Value::Null, "no alert rule, no flags");
    // One sample a second, at most an hour of them.
    let samples = wait_until("two history samples", || {
        let (_, _, h) = http_get_headers(&admin, "/history", auth);
        let h: Value = serde_json::from_str(&h).unwrap();
        let s = h["samples"].as_array().cloned().unwrap_or_default();
        if s.len() >= 2 {
            Ok(s)
        } else {
            Err(format!("{} samples", s.len()))
        }
    });
    assert_eq!(samples.last().unwrap()["k"], 2);
    let last_t = samples.last().unwrap()["t"].as_f64().unwrap();
    let (_, _, h) = http_get_headers(&admin, &format!("/history?since={last_t}"), auth);
    let h: Value = serde_json::from_str(&h).unwrap();
    assert!(h["samples"].as_array().unwrap().len() <= 1, "{h}");
    sigterm_ok(&mut child, err);
}

/// The metric names in `text`: identifiers that start with `emstream_` or
/// `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("emstream_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// A file of the repository.
fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Metrics that only a JetStream source exports (tested with one in the
/// NATS tests): allowed in the packaged queries without this test's daemon
/// exporting them.
const JETSTREAM_ONLY: [&str; 1] = ["emstream_source_lag_messages"];

#[test]
fn the_packaged_dashboard_and_alert_rules_query_only_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("model.ckpt");
    let mut args = saving(&ck);
    args.extend_from_slice(&["--score", "--alert-quantile", "0.01"]);
    let (mut child, err, listen, admin) = listen_with_admin(&args);
    feed(&listen, &admin, &text(&points(1000, 4)), 1000);
    let m = metrics_when(&admin, "a checkpoint and a log-likelihood", |m| {
        m.contains_key("emstream_last_checkpoint_timestamp_seconds")
            && m.contains_key("emstream_average_log_likelihood")
            && m.contains_key("emstream_alert_threshold")
    });
    // The live threshold of --alert-quantile, also in /model.
    let threshold = m["emstream_alert_threshold"];
    assert!(threshold.is_finite() && threshold < 0.0, "{threshold}");
    let (status, body) = http_get(&admin, "/model");
    assert_eq!(status, 200, "{body}");
    let model: Value = serde_json::from_str(&body).unwrap();
    assert!(model["alert_threshold"].as_f64().is_some(), "{body}");
    let exported: BTreeSet<String> = m
        .keys()
        .map(|k| k.split('{').next().unwrap().to_owned())
        .collect();
    let metrics_source = repo_file("crates/emstream/src/admin/metrics.rs");
    for name in JETSTREAM_ONLY {
        assert!(metrics_source.contains(&format!("\"{name}\"")), "{name}");
    }

    let dashboard: Value = serde_json::from_str(&repo_file("packaging/grafana/emstream.json"))
        .expect("the dashboard is JSON");
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"instance"),
        "{vars:?}"
    );
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap();
            assert!(e.contains("$instance"), "a query without $instance: {e}");
            exprs.push(e.to_owned());
        }
    }
    let rules = repo_file("packaging/prometheus/emstream-rules.yml");
    let rule_exprs: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [("dashboard", exprs.join("\n")), ("rules", rule_exprs)] {
        let names = metric_names(&text);
        assert!(names.len() > 5, "{what}: {names:?}");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !exported.contains(*n) && !JETSTREAM_ONLY.contains(&n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "the {what} names metrics /metrics does not export: {missing:?}\nexported: {exported:?}"
        );
    }
    // Every alert has its runbook entry.
    let ops = repo_file("docs/operations.md");
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            ops.contains(&format!("### {alert}")),
            "docs/operations.md has no runbook entry for {alert}"
        );
    }
    sigterm_ok(&mut child, err);
}

#[test]
#[cfg_attr(
    emstream_skip_browser,
    ignore = "EMSTREAM_SKIP_BROWSER=1: needs headless Chromium"
)]
fn with_three_dimensions_the_page_shows_the_pair_of_largest_spread_by_name() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, err, listen, admin) = listen_with_admin(SMALL);
    // Spreads: `flat` 0.1, `mid` 3, `wide` 20 (and the clusters apart on
    // `wide`): the default pair is (mid, wide).
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let noise = Normal::new(0.0, 1.0).unwrap();
    let mut input = b"flat,mid,wide\n".to_vec();
    for i in 0..1000 {
        let centre = if i % 2 == 0 { -20.0 } else { 20.0 };
        let [a, b, c]: [f64; 3] = std::array::from_fn(|_| noise.sample(&mut rng));
        writeln!(
            input,
            "{:.4},{:.4},{:.4}",
            0.1 * a,
            3.0 * b,
            centre + 5.0 * c
        )
        .unwrap();
    }
    feed(&listen, &admin, &input, 1000);
    wait_until("/model with all 1000 points", || {
        let (_, body) = http_get(&admin, "/model");
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        (v["points_seen"] == 1000).then_some(()).ok_or(body)
    });
    let whole = dump_dom(&browser, dir.path(), &format!("http://{admin}/"));
    let dom = &whole[..whole.find("<script").unwrap_or(whole.len())];
    // The axis titles, x then y.
    let titles: Vec<&str> = dom
        .split("fill=\"#1d2329\"")
        .skip(1)
        .filter_map(|p| Some(&p[p.find('>')? + 1..p.find('<')?]))
        .collect();
    assert_eq!(titles, ["mid", "wide"], "{dom}");
    // A chooser of the two dimensions, by name.
    assert_eq!(dom.matches("<select>").count(), 2, "{dom}");
    assert_eq!(dom.matches(">flat</option>").count(), 2, "{dom}");
    assert_eq!(dom.matches("data-component=\"").count(), 2, "{dom}");
    sigterm_ok(&mut child, err);
}

#[test]
#[cfg_attr(
    emstream_skip_browser,
    ignore = "EMSTREAM_SKIP_BROWSER=1: needs headless Chromium"
)]
fn the_page_says_when_the_daemon_is_gone_and_when_it_is_back() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    // A port of our own, for the restarted daemon to bind again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let start = || {
        let mut args = vec!["run", "--listen", "127.0.0.1:0", "--admin", &admin];
        args.extend_from_slice(SMALL);
        let mut child = spawn_with(emstream().args(&args), Stdio::null());
        let mut err = StderrLines::new(&mut child);
        err.wait_for("admin on ");
        (child, err)
    };
    let (first, _first_err) = start();
    // Real time, not virtual: the page polls once a second and logs each
    // render with its header (`#bench`) on chromium's stderr.
    let mut page = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .arg(format!("http://{admin}/#bench"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .expect("chromium runs");
    let mut console = StderrLines::new(&mut page);
    console.wait_for("| warm-up |");
    drop(first);
    console.wait_for("| unreachable | daemon gone since");
    let (mut second, second_err) = start();
    console.wait_for("the daemon restarted at");
    sigterm_ok(&mut second, second_err);
}
