//! A stable-Rust fuzz harness for the checkpoint decoder
//! (`emstream_core::checkpoint::from_bytes`): no cargo-fuzz or nightly needed,
//! so CI runs it on the same toolchain as the tests.
//!
//! It mutates the files of a corpus with a seeded generator and feeds every
//! mutant to the decoder. Most mutations land in the payload and are then
//! "fixed up" (payload length and CRC32 recomputed), so they get past the
//! frame checks and exercise the postcard decoding, the format-1 migration
//! and the whole-checkpoint validation, where the interesting bugs are; the
//! rest damage the frame itself. Properties checked on every input:
//!
//! - the decoder never panics (a panic is a failure: the input is written
//!   to `fuzz/crashes/` and the run exits 1);
//! - an accepted checkpoint re-encodes (`to_bytes`) to an image that is
//!   accepted again and re-encodes to the same bytes.
//!
//! ```text
//! cargo run --release --example fuzz_checkpoint -- [CORPUS_DIR] [--iterations N] [--seconds S] [--seed S]
//! ```
//!
//! Defaults: `fuzz/corpus/checkpoint`, 20000 iterations, no time limit,
//! seed 0. `.ci/run` runs a bounded debug-build pass.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use emstream_core::checkpoint::{from_bytes, to_bytes, FORMAT_VERSION, HEADER_LEN};
use emstream_core::model::CovarianceType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Options {
    corpus: PathBuf,
    iterations: u64,
    seconds: Option<f64>,
    seed: u64,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        corpus: PathBuf::from("fuzz/corpus/checkpoint"),
        iterations: 20_000,
        seconds: None,
        seed: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--iterations" => {
                o.iterations = value("--iterations")?
                    .parse()
                    .map_err(|e| format!("--iterations: {e}"))?
            }
            "--seconds" => {
                o.seconds = Some(
                    value("--seconds")?
                        .parse()
                        .map_err(|e| format!("--seconds: {e}"))?,
                )
            }
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            s if !s.starts_with('-') => o.corpus = PathBuf::from(s),
            s => return Err(format!("unknown option {s}")),
        }
    }
    Ok(o)
}

fn read_corpus(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("corpus {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let corpus: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    if corpus.is_empty() {
        return Err(format!("corpus {} is empty", dir.display()));
    }
    Ok(corpus)
}

/// Recomputes the payload length and the CRC of a frame whose payload was
/// changed, so the mutant passes the frame checks.
fn fix_frame(image: &mut Vec<u8>) {
    if image.len() < HEADER_LEN + 4 {
        return;
    }
    image.truncate(image.len() - 4);
    let len = (image.len() - HEADER_LEN) as u64;
    image[12..20].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(image);
    image.extend_from_slice(&crc.to_le_bytes());
}

/// One mutant of `seed_image`.
fn mutate(rng: &mut ChaCha8Rng, seed_image: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut m = seed_image.to_vec();
    let payload = HEADER_LEN..m.len().saturating_sub(4).max(HEADER_LEN);
    let rounds = 1 + rng.random_range(0..4);
    let fix = rng.random_bool(0.9);
    for _ in 0..rounds {
        let in_payload = |rng: &mut ChaCha8Rng, len: usize| {
            let r = if fix && payload.end > payload.start {
                payload.clone()
            } else {
                0..len.max(1)
            };
            rng.random_range(r).min(len.saturating_sub(1))
        };
        if m.is_empty() {
            m.push(rng.random());
            continue;
        }
        match rng.random_range(0..8) {
            0 => {
                let i = in_payload(rng, m.len());
                m[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = in_payload(rng, m.len());
                m[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.random_range(0..5)];
            }
            2 => {
                let i = in_payload(rng, m.len());
                m[i] = rng.random();
            }
            3 => {
                let i = in_payload(rng, m.len());
                m.insert(i, rng.random());
            }
            4 => {
                let i = in_payload(rng, m.len());
                m.remove(i);
            }
            5 => {
                // A large varint: a length or count that claims far more.
                let i = in_payload(rng, m.len());
                for b in m.iter_mut().skip(i).take(5) {
                    *b = 0xff;
                }
            }
            6 => {
                // Splice a piece of another corpus file in.
                let other = &corpus[rng.random_range(0..corpus.len())];
                let i = in_payload(rng, m.len());
                let j = rng.random_range(0..other.len());
                let n = rng.random_range(0..64).min(other.len() - j);
                m.splice(i..i, other[j..j + n].iter().copied());
            }
            _ => {
                let cut = rng.random_range(0..=m.len());
                m.truncate(cut);
            }
        }
    }
    if fix {
        fix_frame(&mut m);
    }
    m
}

/// Checks the properties on one input; `Err` describes a failure.
fn check(image: &[u8]) -> Result<bool, String> {
    let name = Path::new("<fuzz>");
    let decoded = std::panic::catch_unwind(|| from_bytes(name, image))
        .map_err(|_| "the decoder panicked".to_string())?;
    let Ok(ckpt) = decoded else {
        return Ok(false);
    };
    let again =
        to_bytes(&ckpt).map_err(|e| format!("an accepted checkpoint does not re-encode: {e}"))?;
    let back =
        from_bytes(name, &again).map_err(|e| format!("a re-encoded checkpoint is refused: {e}"))?;
    let twice = to_bytes(&back).map_err(|e| format!("second re-encoding failed: {e}"))?;
    if twice != again {
        return Err("re-encoding is not stable".into());
    }
    Ok(true)
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fuzz_checkpoint: {e}");
            return ExitCode::from(2);
        }
    };
    let corpus = match read_corpus(&o.corpus) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fuzz_checkpoint: {e}");
            return ExitCode::from(2);
        }
    };
    // Panics are caught and reported as failures; keep their noise out.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let limit = o.seconds.map(Duration::from_secs_f64);
    let started = Instant::now();
    let (mut runs, mut accepted) = (0u64, 0u64);
    // The corpus itself first: every seed must be accepted.
    for (i, c) in corpus.iter().enumerate() {
        match check(c) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("fuzz_checkpoint: corpus file {i} is refused by the decoder");
                return ExitCode::from(1);
            }
            Err(e) => return fail(&e, c),
        }
    }
    // The current format's decoder is fuzzed directly, not only through
    // the migration of older formats: the corpus holds a current-format
    // checkpoint of every covariance type.
    for cov in [
        CovarianceType::Full,
        CovarianceType::Diagonal,
        CovarianceType::Spherical,
    ] {
        let current = corpus.iter().any(|c| {
            c.get(8..12) == Some(&FORMAT_VERSION.to_le_bytes()[..])
                && from_bytes(Path::new("<corpus>"), c)
                    .is_ok_and(|ck| ck.learner.params().covariance == cov)
        });
        if !current {
            eprintln!(
                "fuzz_checkpoint: the corpus has no format-{FORMAT_VERSION} checkpoint with {} covariances: add one (emstream run --covariance {} --checkpoint ...)",
                cov.name(),
                cov.name()
            );
            return ExitCode::from(2);
        }
    }
    while runs < o.iterations && limit.is_none_or(|l| started.elapsed() < l) {
        let seed_image = &corpus[rng.random_range(0..corpus.len())];
        let m = mutate(&mut rng, seed_image, &corpus);
        match check(&m) {
            Ok(ok) => accepted += u64::from(ok),
            Err(e) => return fail(&e, &m),
        }
        runs += 1;
    }
    println!(
        "fuzz_checkpoint: {runs} mutants of {} corpus files in {:.1}s, {accepted} accepted, no failure",
        corpus.len(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Saves the failing input and reports it.
fn fail(what: &str, input: &[u8]) -> ExitCode {
    let dir = Path::new("fuzz/crashes");
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("crash-{:08x}", crc32fast::hash(input)));
    let _ = std::fs::write(&path, input);
    eprintln!(
        "fuzz_checkpoint: FAILED: {what}; input saved to {}",
        path.display()
    );
    ExitCode::from(1)
}
