//! Writes a CSV stream of points drawn from one of the reference mixtures in
//! `emstream_core::model::testdata` to stdout, for benchmarks and demos.
//!
//! ```text
//! cargo run --release --example gen_stream -- --mixture two-clusters --n 1000000 --seed 1
//! cargo run --release --example gen_stream -- --mixture eight-d --n 1000000 --header > eight.csv
//! ```
//!
//! Options:
//!
//! - `--mixture NAME`: `two-clusters` (2-D, K=2), `overlapping` (2-D, K=2),
//!   `three-1d` (1-D, K=3), `eight-d` (8-D, K=6, full covariances) or
//!   `wide-32` (32-D, K=10, full, rotated covariances: the wide
//!   case); default `two-clusters`.
//! - `--n N`: number of points (default 1000000; `_` separators allowed).
//! - `--seed S`: seed of the sampler (default 1); the same seed gives the
//!   same bytes.
//! - `--header`: write a header line `x,y` (`x1,...,x8` for eight-d) first.
//! - `--digits D`: significant digits per value, 1..=17 (default 7).
//!
//! Points are drawn in blocks of 64k, so memory stays flat for any N, and
//! formatted by hand into a 1 MiB buffer (about 10x faster than `{}` on
//! f64). A closed stdout (`| head`) ends the program quietly.

use std::io::{self, Write};
use std::process::ExitCode;

use emstream_core::model::{testdata, CovarianceType, GaussianMixture};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Points drawn per call to `GaussianMixture::sample`.
const BLOCK: usize = 65_536;

struct Opts {
    mixture: String,
    n: u64,
    seed: u64,
    header: bool,
    digits: u32,
}

fn usage() -> &'static str {
    "usage: gen_stream [--mixture two-clusters|overlapping|three-1d|eight-d|wide-32] [--n N] [--seed S] [--header] [--digits D]"
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        mixture: "two-clusters".into(),
        n: 1_000_000,
        seed: 1,
        header: false,
        digits: 7,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        let number = |name: &str, v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{name} must be a whole number, got {v:?}"))
        };
        match key.as_str() {
            "--mixture" | "-m" => {
                o.mixture = value("--mixture")?;
                mixture(&o.mixture)?;
            }
            "--n" | "-n" => o.n = number("--n", value("--n")?)?,
            "--seed" => o.seed = number("--seed", value("--seed")?)?,
            "--digits" => {
                let d = number("--digits", value("--digits")?)?;
                if !(1..=17).contains(&d) {
                    return Err(format!("--digits must be in 1..=17, got {d}"));
                }
                o.digits = d as u32;
            }
            "--header" => o.header = true,
            "--help" | "-h" => return Err(usage().to_string()),
            _ => return Err(format!("unknown argument {a:?}\n{}", usage())),
        }
    }
    Ok(o)
}

fn mixture(name: &str) -> Result<GaussianMixture, String> {
    Ok(match name {
        "two-clusters" => testdata::two_clusters(),
        "overlapping" => testdata::overlapping(),
        "three-1d" => testdata::three_1d(),
        "eight-d" => testdata::eight_d(CovarianceType::Full, 3),
        "wide-32" => testdata::random_mixture(32, 10, 4.0, 32),
        _ => {
            return Err(format!(
            "unknown mixture {name:?}: use two-clusters, overlapping, three-1d, eight-d or wide-32"
        ))
        }
    })
}

/// Appends `v` with `digits` significant digits in plain decimal notation
/// (scientific for very large or very small magnitudes), without a trailing
/// run of zeros after the point.
fn push_f64(out: &mut Vec<u8>, v: f64, digits: u32) {
    if v == 0.0 {
        out.push(b'0');
        return;
    }
    let mag = v.abs().log10().floor() as i32;
    // Decimal places needed for `digits` significant digits.
    let places = digits as i32 - 1 - mag;
    if !(0..=15).contains(&places) || mag >= 15 || digits > 15 {
        // Outside what an i64 mantissa holds exactly: let std do it.
        let _ = write!(out, "{:.*e}", (digits - 1) as usize, v);
        return;
    }
    let scaled = (v.abs() * 10f64.powi(places)).round() as u64;
    if v < 0.0 {
        out.push(b'-');
    }
    let p = places as u32;
    let unit = 10u64.pow(p);
    let int = scaled / unit;
    let mut frac = scaled % unit;
    let mut buf = itoa_u64(int);
    out.extend_from_slice(buf.as_bytes());
    if p > 0 && frac != 0 {
        let mut width = p;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        out.push(b'.');
        buf = itoa_u64(frac);
        for _ in buf.len() as u32..width {
            out.push(b'0');
        }
        out.extend_from_slice(buf.as_bytes());
    }
}

/// Decimal digits of `n` (a small stack buffer; no allocation).
fn itoa_u64(mut n: u64) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn len(&self) -> usize {
        20 - self.start
    }
}

fn run(o: &Opts) -> io::Result<()> {
    let m = mixture(&o.mixture).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let d = m.dim();
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let stdout = io::stdout();
    let mut w = stdout.lock();
    let mut line = Vec::with_capacity(1 << 20);
    if o.header {
        let names: Vec<String> = if d == 2 {
            vec!["x".into(), "y".into()]
        } else {
            (1..=d).map(|a| format!("x{a}")).collect()
        };
        line.extend_from_slice(names.join(",").as_bytes());
        line.push(b'\n');
    }
    let mut left = o.n;
    while left > 0 {
        let take = left.min(BLOCK as u64) as usize;
        let pts = m.sample(&mut rng, take);
        for row in pts.chunks_exact(d) {
            for (a, &v) in row.iter().enumerate() {
                if a > 0 {
                    line.push(b',');
                }
                push_f64(&mut line, v, o.digits);
            }
            line.push(b'\n');
            if line.len() >= (1 << 20) - 512 {
                w.write_all(&line)?;
                line.clear();
            }
        }
        left -= take as u64;
    }
    w.write_all(&line)?;
    w.flush()
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_stream: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::push_f64;

    fn fmt(v: f64, digits: u32) -> String {
        let mut out = Vec::new();
        push_f64(&mut out, v, digits);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_significant_digits() {
        assert_eq!(fmt(0.0, 7), "0");
        assert_eq!(fmt(1.0, 7), "1");
        assert_eq!(fmt(-2.5, 7), "-2.5");
        assert_eq!(fmt(std::f64::consts::PI, 7), "3.141593");
        assert_eq!(fmt(-0.001_234_567_89, 7), "-0.001234568");
        assert_eq!(fmt(123_456.789, 7), "123456.8");
        assert_eq!(fmt(7.05, 3), "7.05");
        assert_eq!(fmt(0.1, 7), "0.1");
    }

    #[test]
    fn round_trips_within_precision() {
        let mut x = -1234.5678_f64;
        while x < 1234.0 {
            let s = fmt(x, 7);
            let back: f64 = s.parse().unwrap();
            assert!(
                (back - x).abs() <= x.abs() * 1e-6,
                "{x} formatted as {s} reads back as {back}"
            );
            x += 0.917_3;
        }
    }

    #[test]
    fn falls_back_to_scientific_for_extreme_magnitudes() {
        let big = fmt(6.02e23, 7);
        assert!(big.contains('e'), "{big}");
        let back: f64 = big.parse().unwrap();
        assert!((back - 6.02e23).abs() < 1e17);
        let tiny = fmt(-1.5e-30, 7);
        assert!((tiny.parse::<f64>().unwrap() + 1.5e-30).abs() < 1e-36);
    }
}
