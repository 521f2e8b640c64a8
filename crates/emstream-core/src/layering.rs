//! The check behind each crate's layering test: a module names only modules
//! of a lower rank, read from the sources. Built for tests only (the
//! `test-support` feature).

use std::path::{Path, PathBuf};

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            files(&e.unwrap().path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Every use that breaks the ranks: for each module of `ranks` whose
/// sources are under `src` (all but those in `elsewhere`, which are only
/// names the others may use), each file that names (`crate::other::`,
/// `crate::other;`, `crate::other}`) another module of the same or a
/// higher rank, as "`file` uses `other`".
///
/// # Panics
///
/// When a module not in `elsewhere` has no sources under `src`, or a source
/// cannot be read.
pub fn rank_violations(src: &Path, ranks: &[(&str, u32)], elsewhere: &[&str]) -> Vec<String> {
    let mut broken = Vec::new();
    for &(module, rank) in ranks {
        if elsewhere.contains(&module) {
            continue;
        }
        let mut paths = Vec::new();
        files(&src.join(module), &mut paths);
        files(&src.join(format!("{module}.rs")), &mut paths);
        assert!(!paths.is_empty(), "no sources for {module}");
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for &(other, other_rank) in ranks {
                let uses = text.contains(&format!("crate::{other}::"))
                    || text.contains(&format!("crate::{other};"))
                    || text.contains(&format!("crate::{other}}}"));
                if other != module && uses && other_rank >= rank {
                    broken.push(format!("{} uses {other}", path.display()));
                }
            }
        }
    }
    broken
}
