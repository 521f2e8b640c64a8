//! The documentation's self-contained recipes run as written.
//!
//! A shell block in README.md or docs/*.md preceded by a line
//! `<!-- recipe: NAME -->` is a recipe: it needs only `emstream` on the
//! PATH, the repository's files and the machine's shell tools (bash,
//! coreutils, curl). Each runs with `bash -euo pipefail` in a fresh
//! directory that links the repository's `examples`, `docs` and `config`,
//! with the binary under test first on the PATH. Recipes that need more
//! (a broker, a Python client) carry no marker.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::SpawnGuarded;

/// The repository root: the nearest ancestor of this crate that holds
/// README.md and docs/.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("README.md").is_file() && p.join("docs").is_dir())
        .expect("the repository root holds README.md and docs/")
        .to_path_buf()
}

/// Every recipe of one Markdown text: (name, script).
fn recipes(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- recipe:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "recipe {name}: a ```sh block follows its marker"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        out.push((name.trim().to_string(), body.join("\n") + "\n"));
    }
    out
}

fn all_recipes() -> Vec<(String, String)> {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut out = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("a doc page is readable");
        let file = page.file_name().unwrap().to_string_lossy().to_string();
        out.extend(
            recipes(&text)
                .into_iter()
                .map(|(n, s)| (format!("{file}: {n}"), s)),
        );
    }
    out
}

/// Runs one recipe; its whole process group is killed when it ends, so a
/// daemon it started in the background never outlives it.
fn run_recipe(name: &str, script: &str) -> Result<(), String> {
    let root = repo_root();
    let dir = tempfile::tempdir().expect("a temporary directory");
    for linked in ["examples", "docs", "config"] {
        std::os::unix::fs::symlink(root.join(linked), dir.path().join(linked))
            .expect("a link to the repository");
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_emstream"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("EMSTREAM_CHECKPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn_guarded()
        .expect("bash starts");
    let pgid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the recipe's status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) with a negative pid signals our own child's group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let out = child.wait_with_output().expect("the recipe's output");
    let said = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("recipe {name} failed ({s}):\n{script}\n{said}")),
        None => Err(format!(
            "recipe {name} did not end within 120 s:\n{script}\n{said}"
        )),
    }
}

#[test]
fn recipes_are_found() {
    let names: Vec<String> = all_recipes().into_iter().map(|(n, _)| n).collect();
    for expected in ["README.md: pipe", "README.md: daemon", "README.md: reports"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn recipes_run_as_written() {
    let failures: Vec<String> = all_recipes()
        .iter()
        .filter_map(|(name, script)| run_recipe(name, script).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
