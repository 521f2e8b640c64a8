//! Loads a JetStream stream with CSV points read from stdin, `--lines`
//! lines per message, for the JetStream benchmark
//! (`scripts/bench_jetstream.sh`) and demos.
//!
//! ```text
//! cargo run --release --example gen_stream -- --n 1000000 |
//!   cargo run --release --example jetstream_load -- --url 127.0.0.1:4222 --stream POINTS --lines 100
//! ```
//!
//! Options: `--url HOST:PORT` (default 127.0.0.1:4222), `--stream NAME`
//! (default POINTS; created with subjects `NAME.>` in lower case if it does
//! not exist), `--subject S` (default `points.in`, must be in the stream),
//! `--lines N` (default 100). Publishes asynchronously, waiting for the
//! stream's acknowledgements in windows of 256, and prints the number of
//! messages and the last sequence.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use async_nats::jetstream;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url", "127.0.0.1:4222");
    let stream = arg(&args, "--stream", "POINTS");
    let subject = arg(&args, "--subject", &format!("{}.in", stream.to_lowercase()));
    let lines: usize = match arg(&args, "--lines", "100").parse() {
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!("jetstream_load: --lines must be a positive number");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jetstream_load: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(load(&url, &stream, &subject, lines)) {
        Ok((messages, last)) => {
            let _ = writeln!(
                std::io::stdout(),
                "{messages} messages published, last sequence {last}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jetstream_load: {e}");
            ExitCode::from(1)
        }
    }
}

async fn load(
    url: &str,
    stream: &str,
    subject: &str,
    lines: usize,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_string(),
        subjects: vec![format!("{}.>", stream.to_lowercase())],
        ..Default::default()
    })
    .await?;
    let stdin = std::io::stdin().lock();
    let mut body = String::new();
    let mut in_body = 0;
    let mut acks = Vec::new();
    let (mut messages, mut last) = (0u64, 0u64);
    let send = |body: String, acks: &mut Vec<_>| {
        let js = js.clone();
        let subject = subject.to_string();
        acks.push(async move { js.publish(subject, body.into()).await?.await });
    };
    for line in stdin.lines() {
        body.push_str(&line?);
        body.push('\n');
        in_body += 1;
        if in_body == lines {
            send(std::mem::take(&mut body), &mut acks);
            in_body = 0;
        }
        if acks.len() == 256 {
            for ack in futures_util::future::join_all(acks.drain(..)).await {
                last = ack?.sequence;
                messages += 1;
            }
        }
    }
    if in_body > 0 {
        send(body, &mut acks);
    }
    for ack in futures_util::future::join_all(acks.drain(..)).await {
        last = ack?.sequence;
        messages += 1;
    }
    Ok((messages, last))
}
