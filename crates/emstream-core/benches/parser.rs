//! Framer + parser throughput on generated CSV, in points per second.
//!
//! 1M lines of 2-D and 8-D CSV such as `-1.2345678,3.4567890` (and 250k
//! lines of 32-D) are built in memory, then fed to a [`Framer`] in 64 KiB
//! reads (as the stdin reader does) and every chunk parsed into a reused
//! [`Batch`]. The framer and the parser are also measured alone, and the
//! parser on 1M quoted lines as R writes them (`"1","Very Good",x,y`),
//! which take the `csv-core` path.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! the numbers hold on a machine busy with other work; on an idle machine it
//! equals wall time for this single-threaded work. Set
//! `EMSTREAM_BENCH_WALL=1` to measure wall time instead.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput};
use emstream_core::input::{Batch, Chunk, Framer, Parser, ParserConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LINES: usize = 1_000_000;
const READ: usize = 64 * 1024;
const CHUNK: usize = 128 * 1024;
const MAX_LINE: usize = 64 * 1024;

/// Lines of `dim` numbers in a bench: `LINES`, a quarter of that at
/// `dim` = 32 (350 MB of text would be 1.4 GB).
fn lines(dim: usize) -> usize {
    if dim > 8 {
        LINES / 4
    } else {
        LINES
    }
}

/// [`lines`]`(dim)` lines of `dim` comma-separated numbers with 7 decimals.
fn csv(dim: usize) -> Vec<u8> {
    use std::io::Write;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::with_capacity(lines(dim) * dim * 11);
    for _ in 0..lines(dim) {
        for j in 0..dim {
            let v: f64 = rng.random_range(-10.0..10.0);
            let sep = if j + 1 == dim { '\n' } else { ',' };
            write!(out, "{v:.7}{sep}").expect("writing to a Vec cannot fail");
        }
    }
    out
}

/// `LINES` lines as R's `write.csv` writes them: a quoted row id, a quoted
/// text field with a space, then two numbers (every line takes the quoted
/// path through `csv-core`).
fn quoted_csv() -> Vec<u8> {
    use std::io::Write;
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut out = Vec::with_capacity(LINES * 40);
    for i in 0..LINES {
        let (x, y): (f64, f64) = (rng.random_range(-10.0..10.0), rng.random_range(-10.0..10.0));
        writeln!(out, "\"{i}\",\"Very Good\",{x:.7},{y:.7}").expect("writing to a Vec cannot fail");
    }
    out
}

/// All chunks of `input`, kept (for the parser-only benchmark).
fn frame(input: &[u8]) -> Vec<Chunk> {
    let mut framer = Framer::new(0, MAX_LINE, CHUNK);
    let mut chunks = Vec::new();
    for read in input.chunks(READ) {
        framer.push(read, &mut chunks);
    }
    framer.finish(&mut chunks);
    chunks
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("parser");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for dim in [2usize, 8, 32] {
        let input = csv(dim);
        let points = lines(dim) as u64;
        group.throughput(Throughput::Elements(points));

        group.bench_with_input(
            BenchmarkId::new("framer+parser", dim),
            &input,
            |b, input| {
                let mut batch = Batch::default();
                b.iter(|| {
                    let mut framer = Framer::new(0, MAX_LINE, CHUNK);
                    let mut parser = Parser::new(ParserConfig::default());
                    let mut chunks = Vec::new();
                    let mut n = 0;
                    let mut parse_all = |chunks: &mut Vec<Chunk>, batch: &mut Batch| {
                        for chunk in chunks.drain(..) {
                            batch.values.clear();
                            parser.parse(&chunk, batch);
                            n += batch.values.len();
                        }
                    };
                    for read in input.chunks(READ) {
                        framer.push(read, &mut chunks);
                        parse_all(&mut chunks, &mut batch);
                    }
                    framer.finish(&mut chunks);
                    parse_all(&mut chunks, &mut batch);
                    assert_eq!(n, lines(dim) * dim);
                    black_box(n)
                });
            },
        );

        group.bench_with_input(BenchmarkId::new("framer", dim), &input, |b, input| {
            b.iter(|| {
                // Chunks are dropped as they come, as the parser stage would.
                let mut framer = Framer::new(0, MAX_LINE, CHUNK);
                let mut chunks = Vec::new();
                let mut n = 0;
                for read in input.chunks(READ) {
                    framer.push(read, &mut chunks);
                    n += chunks.drain(..).map(|c| c.bytes.len()).sum::<usize>();
                }
                framer.finish(&mut chunks);
                n += chunks.drain(..).map(|c| c.bytes.len()).sum::<usize>();
                assert_eq!(n, input.len());
                black_box(n)
            });
        });

        let chunks = frame(&input);
        group.bench_with_input(BenchmarkId::new("parser", dim), &chunks, |b, chunks| {
            let mut batch = Batch::default();
            b.iter(|| {
                let mut parser = Parser::new(ParserConfig::default());
                let mut n = 0;
                for chunk in chunks {
                    batch.values.clear();
                    parser.parse(chunk, &mut batch);
                    n += batch.values.len();
                }
                assert_eq!(n, lines(dim) * dim);
                black_box(n)
            });
        });
    }
    // Quoted lines, two of four fields kept: the csv-core path.
    let chunks = frame(&quoted_csv());
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_with_input(
        BenchmarkId::new("parser-quoted", 2),
        &chunks,
        |b, chunks| {
            let mut batch = Batch::default();
            b.iter(|| {
                let mut parser = Parser::new(ParserConfig {
                    columns: Some(emstream_core::input::Columns::new(vec![2, 3]).unwrap()),
                    ..ParserConfig::default()
                });
                let mut n = 0;
                for chunk in chunks {
                    batch.values.clear();
                    parser.parse(chunk, &mut batch);
                    n += batch.values.len();
                }
                assert_eq!(n, LINES * 2);
                black_box(n)
            });
        },
    );
    group.finish();
}

fn main() {
    support::run(bench, bench);
}
