//! Times the stepwise EM learner over a file of points fed in fixed-size
//! blocks, as a program calling `observe` once per block would: the Rust
//! side of the Python binding's `partial_fit` benchmark
//! (`scripts/bench_python.py` runs both on the same file and compares).
//!
//! ```text
//! cargo run --release --example learn_blocks -- POINTS.f64 DIM K [BLOCK [SEED [N_INIT [ROUNDS]]]]
//! ```
//!
//! `POINTS.f64` holds row-major little-endian float64 points of dimension
//! DIM. The learner has the Python `GaussianMixture`'s defaults (warm-up
//! 5000, mini-batches of 1000, `n_init` k-means++ seeds, 100 EM iterations
//! on the warm-up). Prints one JSON object: the wall time of each round in
//! seconds (a fresh learner over the whole file each round) and the
//! model's means, to check that both sides learn the same bits, and the
//! process's CPU time of each round (the figure that holds on a busy
//! machine).

use std::time::Instant;

use emstream_core::model::{ComponentCount, Params, StepwiseEm};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).map_or(default, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("argument {i} ({s:?}) is not a number"))
    })
}

/// CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: learn_blocks POINTS.f64 DIM K [BLOCK [SEED [N_INIT [ROUNDS]]]]");
        std::process::exit(2);
    }
    let bytes = std::fs::read(&args[1]).expect("cannot read the points file");
    let points: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let dim: usize = arg(&args, 2, 0);
    let k: usize = arg(&args, 3, 0);
    let block: usize = arg(&args, 4, 1000);
    let seed: u64 = arg(&args, 5, 0);
    let n_init: usize = arg(&args, 6, 1);
    let rounds: usize = arg(&args, 7, 3);
    assert!(
        dim > 0 && points.len().is_multiple_of(dim),
        "not whole points of dimension {dim}"
    );
    let params = Params {
        components: ComponentCount::Fixed(k),
        seed,
        init_seeds: n_init,
        init_iters: 100,
        ..Params::default()
    }
    .check()
    .expect("valid options");
    let mut seconds = Vec::new();
    let mut cpu = Vec::new();
    let mut means = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let cpu_start = cpu_seconds();
        let mut learner = StepwiseEm::new(params.clone(), dim);
        for b in points.chunks(block * dim) {
            learner.observe(b, None).expect("the learner learns");
        }
        seconds.push(start.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - cpu_start);
        means = learner
            .mixture()
            .expect("past the warm-up")
            .means()
            .to_vec();
    }
    println!(
        "{}",
        serde_json::json!({"points": points.len() / dim, "seconds": seconds, "cpu_seconds": cpu, "means": means})
    );
}
