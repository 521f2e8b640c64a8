//! Times choosing K on a warm-up buffer (the bound: d = 32,
//! K = 1..12, 5,000 points, under 3 s in total) next to one fixed-K
//! warm-up fit of the true K. Run in release mode:
//!
//! ```text
//! cargo run --release --example choose_k_speed [d] [true K] [max K] [n]
//! ```
use std::time::Instant;

use emstream_core::model::{select, testdata, Params, StepwiseEm};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process so far, every thread.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let (d, k_true, max_k, n) = (arg(1, 32), arg(2, 10), arg(3, 12), arg(4, 5000));
    let truth = testdata::random_mixture(d, k_true, 2.0, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let buf = truth.sample(&mut rng, n);
    let held_out = truth.sample(&mut rng, 20_000);
    let params = Params {
        components: emstream_core::model::ComponentCount::Fixed(k_true),
        warmup: n,
        ..Params::default()
    };

    let t = Instant::now();
    let mut fixed = StepwiseEm::new(params.clone().check().expect("valid"), d);
    fixed.observe(&buf, None).expect("warm-up fit");
    let one = t.elapsed().as_secs_f64();
    let fixed_ll = fixed.mixture().expect("fitted").mean_log_prob(&held_out);

    let (t, c) = (Instant::now(), cpu_seconds());
    let s = select::choose_components(&buf, d, &params.check().expect("valid"), max_k, &mut rng)
        .expect("fit");
    let all = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - c;
    println!(
        "d = {d}, true K = {k_true}, n = {n}: one K = {k_true} warm-up {one:.2} s; \
         K = 1..{max_k} in {all:.2} s ({cpu:.2} s of CPU), chose K = {}",
        s.k()
    );
    println!(
        "held-out log-lik per point: truth {:.4}, fixed K {fixed_ll:.4}, chosen K {:.4}",
        truth.mean_log_prob(&held_out),
        s.mixture.mean_log_prob(&held_out)
    );
    for (k, b) in &s.selection.bic_by_k {
        println!("  K = {k:2}  BIC {b:.1}");
    }
    println!("{}", s.selection.chosen_by);
}
