//! A sensor feed for the TCP daemon: sends points of the EM write-up's
//! first example (two 2-D clusters) as CSV lines to `emstream run --listen`.
//!
//! ```text
//! emstream run --listen 127.0.0.1:7878 -k 2 --checkpoint model.ckpt &
//! cargo run --release --example tcp_feed -- 127.0.0.1:7878 100000
//! kill -TERM %1    # drains, learns what arrived, writes the checkpoint
//! ```
//!
//! Optional third argument: points per second (default: as fast as the
//! daemon reads). Each connection is a source of its own, so several feeds
//! can run at once.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use emstream::model::testdata;
use rand::SeedableRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:7878");
    let n: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let rate: Option<f64> = args.get(3).map(|s| s.parse()).transpose()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let points = testdata::two_clusters().sample(&mut rng, n);
    let mut out = BufWriter::new(TcpStream::connect(addr)?);
    let start = Instant::now();
    for (i, p) in points.chunks_exact(2).enumerate() {
        writeln!(out, "{:.6},{:.6}", p[0], p[1])?;
        if let Some(rate) = rate {
            // Pace the feed like a sensor: flush and wait until point i is due.
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                out.flush()?;
                std::thread::sleep(wait);
            }
        }
    }
    out.flush()?;
    eprintln!(
        "sent {n} points to {addr} in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
