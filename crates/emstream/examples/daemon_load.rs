//! Load for the TCP daemon benchmark (scripts/bench_daemon.sh).
//!
//! ```text
//! daemon_load send ADDR CLIENTS POINTS   # CLIENTS connections, POINTS 2-D points each, at full speed
//! daemon_load idle ADDR N                # N idle connections, held until stdin closes
//! ```
//!
//! `send` renders the points once (two clusters, CSV "x,y") and writes the
//! same bytes on every connection, so the sender costs little CPU next to
//! the daemon; it prints the points sent, the seconds the writes took and
//! the Unix time of the first connect (where the benchmark's clock starts).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use emstream::model::testdata;
use rand::SeedableRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: daemon_load send ADDR CLIENTS POINTS | daemon_load idle ADDR N";
    let mode = args.get(1).ok_or(usage)?;
    let addr = args.get(2).ok_or(usage)?.clone();
    let n: usize = args.get(3).ok_or(usage)?.parse()?;
    match mode.as_str() {
        "send" => {
            let points: usize = args.get(4).ok_or(usage)?.parse()?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let values = testdata::two_clusters().sample(&mut rng, points);
            let mut data = Vec::with_capacity(points * 20);
            for p in values.chunks_exact(2) {
                writeln!(data, "{:.4},{:.4}", p[0], p[1])?;
            }
            let data = std::sync::Arc::new(data);
            // The benchmark's clock starts here, after the points are
            // rendered (seconds of formatting that are not the daemon's).
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs_f64();
            let start = Instant::now();
            let clients: Vec<_> = (0..n)
                .map(|_| {
                    let (addr, data) = (addr.clone(), data.clone());
                    std::thread::spawn(move || -> std::io::Result<()> {
                        let mut s = TcpStream::connect(addr)?;
                        s.write_all(&data)
                    })
                })
                .collect();
            for c in clients {
                c.join().map_err(|_| "a client thread panicked")??;
            }
            println!(
                "sent {} points on {n} connections in {:.3} s, first connect at {started:.6}",
                n * points,
                start.elapsed().as_secs_f64()
            );
        }
        "idle" => {
            let conns: Vec<TcpStream> = (0..n)
                .map(|_| TcpStream::connect(&addr))
                .collect::<Result<_, _>>()?;
            println!("{} idle connections open", conns.len());
            std::io::stdout().flush()?;
            // Hold them until stdin closes.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(conns);
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
