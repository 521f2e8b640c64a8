//! A stable fuzz target for hostile input (cargo-fuzz needs nightly): random
//! mutations of a committed corpus driven through the framer, the parser
//! and the learner ([`emstream_core::input::hostile::drive`]) for a fixed time,
//! in bounded memory (the learner's budget is checked on every input).
//!
//! ```text
//! cargo run --example fuzz_hostile -- fuzz/corpus 20      # 20 s
//! cargo run --example fuzz_hostile -- --seed-corpus fuzz/corpus
//! ```
//!
//! A failing input (a broken promise or a panic) is written to
//! `fuzz/crash-<n>.bin` and the run exits 1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use emstream_core::input::hostile::{drive, good_points, hostile_stream};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Longest mutated input (bytes).
const MAX_INPUT: usize = 64 << 10;

/// Tokens spliced in by the mutator: what a parser meets at its edges.
const DICT: &[&[u8]] = &[
    b"\n",
    b",",
    b" ",
    b"\t",
    b";",
    b"#",
    b"[",
    b"]",
    b"1e308",
    b"-1e-320",
    b"nan",
    b"inf",
    b"0x1p3",
    b"1e150",
    b"5\n",
    b"2024 01 15\n",
    b"9.99,9.",
    b"\r\n",
    b"\xff\xfe",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--seed-corpus") {
        let dir = PathBuf::from(args.get(1).map_or("fuzz/corpus", String::as_str));
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for seed in 0..24 {
            let path = dir.join(format!("stream-{seed:02}.txt"));
            std::fs::write(&path, hostile_stream(seed)).expect("corpus file");
        }
        return;
    }
    let dir = PathBuf::from(args.first().map_or("fuzz/corpus", String::as_str));
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let corpus = load(&dir);
    assert!(!corpus.is_empty(), "no corpus files in {}", dir.display());
    // Panics are caught and reported as failures; keep their noise short.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let good = good_points(200);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rng = ChaCha8Rng::seed_from_u64(secs.to_bits());
    let mut runs = 0u64;
    for input in &corpus {
        check(input, 4096, &good, runs);
        runs += 1;
    }
    while Instant::now() < deadline {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let other = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate(base, other, &mut rng);
        let cut = rng.random_range(1..5000);
        check(&input, cut, &good, runs);
        runs += 1;
    }
    println!(
        "fuzz_hostile: {runs} inputs in {secs} s, {} corpus files, no failure",
        corpus.len()
    );
}

fn load(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Runs one input; on a failure saves it and exits 1.
fn check(input: &[u8], cut: usize, good: &[f64], n: u64) {
    let r = std::panic::catch_unwind(|| drive(input, cut, good));
    let why = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => "panic".to_string(),
    };
    let path = PathBuf::from(format!("fuzz/crash-{n}.bin"));
    let _ = std::fs::write(&path, input);
    eprintln!(
        "fuzz_hostile: input {n} (reads of {cut} bytes) failed: {why}; saved as {}",
        path.display()
    );
    std::process::exit(1);
}

/// One random mutation: flip, insert, delete, splice another input, or
/// insert a dictionary token; a few of them stacked.
fn mutate(base: &[u8], other: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.random_range(1..8) {
        let at = if v.is_empty() {
            0
        } else {
            rng.random_range(0..=v.len())
        };
        match rng.random_range(0..6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 => v.insert(at, rng.random()),
            2 if !v.is_empty() => {
                let end = (at + rng.random_range(1..64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 if !other.is_empty() => {
                let a = rng.random_range(0..other.len());
                let b = (a + rng.random_range(1..2048)).min(other.len());
                v.splice(at..at, other[a..b].iter().copied());
            }
            4 => {
                let t = DICT[rng.random_range(0..DICT.len())];
                v.splice(at..at, t.iter().copied());
            }
            _ => {
                // Repeat a stretch: stuck values, long lines.
                if !v.is_empty() {
                    let a = rng.random_range(0..v.len());
                    let b = (a + rng.random_range(1..32)).min(v.len());
                    let piece = v[a..b].to_vec();
                    for _ in 0..rng.random_range(1..50) {
                        v.splice(at..at, piece.iter().copied());
                    }
                }
            }
        }
    }
    v.truncate(MAX_INPUT);
    v
}
