//! Config files and flag parsing.

use crate::util::*;

#[test]
fn config_file_keys_apply_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let cfg = file(&dir, "run.toml");
    std::fs::write(
        &cfg,
        format!(
            "components = 3\ncovariance = \"diag\"\nwarmup = 200\nbatch_size = 40\ncheckpoint = {:?}\n",
            ck.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = run_stdin(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--batch-size",
            "25",
        ],
        &text(&points(400, 70)),
    );
    assert_ok(&out);
    let j = inspect_json(&ck);
    assert_eq!(j["components"], 3);
    assert_eq!(j["covariance"], "diag");
    assert_eq!(j["params"]["batch_size"], 25);
    assert_eq!(j["points_seen"], 400);
}

/// The shipped config file is read and its settings are the run's: a
/// checkpoint of its learner settings (2 full components, mini-batches of
/// 1000) holding every point.
#[test]
fn the_shipped_config_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/emstream.toml");
    let out = run_stdin(
        &[
            "run",
            "--config",
            shipped,
            "--warmup",
            "200",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &text(&points(1300, 71)),
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("1300 points used"),
        "{}",
        stderr(&out)
    );
    let j = inspect_json(&ck);
    assert_eq!(j["components"], 2, "{j}");
    assert_eq!(j["covariance"], "full", "{j}");
    assert_eq!(j["params"]["batch_size"], 1000, "{j}");
    assert_eq!(j["params"]["step_decay"], 0.95, "{j}");
    assert_eq!(j["points_seen"], 1300, "{j}");
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = file(&dir, "run.toml");
    std::fs::write(&cfg, "components = 2\nbatchsize = 10\n").unwrap();
    let out = run_stdin(&["run", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("batchsize"), "{err}");
    assert!(err.contains("run.toml"), "{err}");
}

#[test]
fn invalid_options_say_what_to_change() {
    for (args, needle) in [
        (
            vec!["run", "--covariance", "round"],
            "`full`, `diag`, `spherical`",
        ),
        (vec!["run", "--resume"], "--checkpoint PATH"),
        (vec!["run", "--columns", "1,1"], "listed twice"),
        (vec!["run", "--alert-below", "-5"], "--score"),
        (vec!["run", "--format", "xml"], "xml"),
    ] {
        let out = run_stdin(&args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn enum_flags_are_parsed_the_same_way_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let ck = file(&dir, "m.ckpt");
    let data = text(&points(600, 4));
    let out = run_stdin(
        &[
            "run",
            "-k",
            "2",
            "--warmup",
            "200",
            "--format",
            "CSV",
            "--on-error",
            "Skip",
            "--covariance",
            "Diag",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &data,
    );
    assert_ok(&out);
    let out = run_stdin(
        &["score", "--model", ck.to_str().unwrap(), "--format", "CSV"],
        &data,
    );
    assert_ok(&out);
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 600);
    for cmd in [
        vec!["run", "--format", "xml"],
        vec!["score", "--model", ck.to_str().unwrap(), "--format", "xml"],
        vec![
            "plot",
            ck.to_str().unwrap(),
            "-o",
            "x.svg",
            "--format",
            "xml",
        ],
    ] {
        let out = run_stdin(&cmd, b"");
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        assert!(
            stderr(&out).contains("`csv` or `json`"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
}

/// The line of `--help` output that describes `flag`.
fn help_line(help: &str, flag: &str) -> String {
    help.lines()
        .find(|l| {
            // `      --warmup <N>  ...` or `  -k, --components <K|auto>  ...`
            let l = l.trim_start();
            let l = l
                .split_once(", ")
                .filter(|(s, _)| s.len() == 2)
                .map_or(l, |(_, r)| r);
            l.starts_with(&format!("{flag} ")) || l.starts_with(&format!("{flag}["))
        })
        .unwrap_or_else(|| panic!("no {flag} in:\n{help}"))
        .to_owned()
}

#[test]
fn help_shows_the_defaults_of_every_command() {
    let help = |args: &[&str]| {
        let out = emstream().args(args).output().unwrap();
        assert_ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    let run = help(&["run", "--help"]);
    for (flag, default) in [
        ("--warmup", "[default: 5000]"),
        ("--batch-size", "[default: "),
        ("--resolution", "[default: auto]"),
    ] {
        assert!(help_line(&run, flag).contains(default), "{flag}");
    }
    let score = help(&["score", "--help"]);
    assert!(help_line(&score, "--format").contains("[default: csv]"));
    let plot = help(&["plot", "--help"]);
    assert!(help_line(&plot, "--sample").contains("[default: 2000]"));
    #[cfg(feature = "nats")]
    {
        let reducer = help(&["reducer", "--help"]);
        for flag in [
            "--components",
            "--batch-size",
            "--warmup",
            "--max-components",
        ] {
            assert!(
                help_line(&reducer, flag).contains("[default: "),
                "reducer {flag}"
            );
        }
    }
}
