//! A NATS JetStream stream as a source, learned exactly once.
//!
//! The model is a deterministic function of its checkpoint and the stream:
//! every chunk ends between two messages and carries the stream sequence of
//! its last message, the parser and learner carry that position with the
//! points, and every snapshot (so every checkpoint) holds, atomically with
//! the statistics and the pending partial batch, the sequence of the last
//! message whose points are all in it, under the key [`name`]
//! (`jetstream:STREAM`, or `jetstream:STREAM:SUBJECT` with a filter).
//! At start the source reads that position back and replays the stream
//! from the next sequence, so no message is lost or learned twice whatever
//! the moment the process died.
//!
//! Delivery: a durable pull consumer (`--consumer NAME`) with one subject
//! filter (NATS 2.9 ignores the plural `filter_subjects`), deleted and
//! created again at each start (and after any delivery fault) to begin at
//! the checkpoint's next sequence, with ack policy "all". Messages are
//! acknowledged only once a checkpoint holding them is durable on disk (the
//! pipeline's durability hook), so the consumer's acknowledged floor shows
//! operators, and an interest-retention stream, what the model has safely
//! learned. Redeliveries (a sequence already read) are skipped; a gap in
//! the consumer's delivery sequence (a message lost in flight) or a broken
//! connection recreates the consumer after the last sequence read.
//!
//! A stream that no longer holds the needed sequence (retention expired)
//! is refused, naming how many sequences are gone, unless `--allow-gap`:
//! then they are counted ([`Replay::gap_messages`](crate::pipeline::Replay::gap_messages))
//! and the run continues from the first sequence the stream holds. A
//! stream whose last sequence is below the model's position was deleted
//! and created again: it is refused, at the start and on every reopening.
//! The
//! same rule holds while reading a whole stream: the server skips
//! sequences that expired or were purged before the consumer reached them
//! without a gap in the consumer's own sequence, so every jump in the
//! stream sequence is checked against the stream's first held sequence
//! before the message after the jump is read. With a subject filter, jumps
//! over other subjects' messages are the norm and the stream does not say
//! which subject an expired message had: there the check runs only when
//! the consumer opens.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Stream as Messages};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, stream::Stream as JsStream};
use futures_util::{FutureExt, StreamExt};

use super::messages::MessageFramer;
use super::{Source, SourceContext, SourceFuture};
use crate::config::{redact_url, NatsOptions};
use crate::pipeline::{Durable, CHUNK_BYTES};

/// Messages asked for per pull request.
pub const PULL_BATCH: usize = 1000;

/// How long an unacknowledged message waits before the server sends it
/// again; acknowledgements follow checkpoints, so this is long (a
/// redelivery is skipped anyway).
pub const ACK_WAIT: Duration = Duration::from_secs(600);

/// How often the stream's last sequence is asked for (the lag).
pub const HEAD_EVERY: Duration = Duration::from_secs(1);

/// First and longest wait between connection or consumer attempts.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The source's name and the key of its position in checkpoints:
/// `jetstream:STREAM`, or `jetstream:STREAM:SUBJECT` with a subject filter
/// (a position says which of the messages *matching the filter* are
/// learned, so another filter is another position; one partition per
/// subject has a position of its own).
pub fn name(o: &NatsOptions) -> String {
    match &o.subject {
        Some(s) => format!("jetstream:{}:{s}", o.stream),
        None => format!("jetstream:{}", o.stream),
    }
}

/// A JetStream stream read through a durable consumer; see the module docs.
#[derive(Debug)]
pub struct NatsSource {
    opts: NatsOptions,
}

impl NatsSource {
    /// A source for `opts`; nothing is connected until it runs.
    pub fn new(opts: NatsOptions) -> Self {
        NatsSource { opts }
    }
}

impl Source for NatsSource {
    fn name(&self) -> String {
        name(&self.opts)
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let result = read(&self.opts, &ctx).await;
            ctx.report_end(result, name(&self.opts)).await;
        })
    }
}

/// The next wait of an exponential backoff.
fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF.1)
}

/// `f`'s output, or `None` when the stop comes first: no call to the
/// server may hold up a stop (a server that is down answers nothing, and
/// its requests time out only after seconds, one after another).
async fn or_stop<T>(ctx: &SourceContext, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        () = ctx.stop().cancelled() => None,
        v = f => Some(v),
    }
}

/// Sleeps `d` unless the stop comes first (then false).
async fn pause(ctx: &SourceContext, d: Duration) -> bool {
    tokio::select! {
        () = ctx.stop().cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Connects, retrying with backoff (for ever, or until `connect_timeout`:
/// then the run fails about that long after the start, an attempt or a
/// pause cut short at the deadline); `None` on the stop.
async fn connect(
    o: &NatsOptions,
    ctx: &SourceContext,
) -> Result<Option<async_nats::Client>, String> {
    let deadline = o.connect_timeout.map(|t| tokio::time::Instant::now() + t);
    let mut wait = BACKOFF.0;
    loop {
        let options = connect_options(o, ctx).await?;
        let attempt = tokio::select! {
            () = ctx.stop().cancelled() => return Ok(None),
            () = until(deadline) => Err("no answer yet".to_string()),
            r = options.connect(o.url.as_str()) => r.map_err(|e| e.to_string()),
        };
        let e = match attempt {
            Ok(c) => {
                // The --stop-when-idle quiet counts from the connection.
                ctx.state().replay().touch();
                return Ok(Some(c));
            }
            Err(e) => e,
        };
        let timeout_error = || {
            let lower = e.to_ascii_lowercase();
            let hint = if lower.contains("certificate") || lower.contains("tls") {
                "check --nats-ca-file (the CA that signed the server's certificate) and --nats-cert/--nats-key (a server with `verify: true` wants a client certificate)"
            } else {
                "is the server up and the address right? without --connect-timeout the run waits for it"
            };
            format!(
                "cannot connect to {} within --connect-timeout {}s: {e} ({hint})",
                redact_url(&o.url),
                o.connect_timeout.unwrap_or_default().as_secs_f64()
            )
        };
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(timeout_error());
        }
        ctx.say(&format!(
            "cannot connect to {} ({e}); retrying",
            redact_url(&o.url)
        ));
        tokio::select! {
            () = ctx.stop().cancelled() => return Ok(None),
            () = until(deadline) => return Err(timeout_error()),
            () = tokio::time::sleep(wait) => {}
        }
        wait = next_backoff(wait);
    }
}

/// Waits until `deadline`, for ever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The client options of one connection attempt: name, reconnects for
/// ever once connected, credentials, TLS, and the events logged.
async fn connect_options(
    o: &NatsOptions,
    ctx: &SourceContext,
) -> Result<async_nats::ConnectOptions, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("emstream")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    if let Some(path) = &o.credentials {
        options = options.credentials_file(path).await.map_err(|e| {
            format!(
                "cannot read the NATS credentials file {}: {e}",
                path.display()
            )
        })?;
    }
    if let Some(ca) = &o.ca_file {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&o.cert, &o.key) {
        options = options
            .require_tls(true)
            .add_client_certificate(cert.clone(), key.clone());
    }
    // The state and the console only, never the context: the client's
    // connection task outlives a stopped source while it reconnects, and a
    // context held there would keep the source's event channel open (the
    // parser, and so the run, would wait for it for ever).
    let (state, console) = (ctx.state.clone(), ctx.console.clone());
    let was_down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    Ok(options.event_callback(move |event| {
        let (state, console, was_down) = (state.clone(), console.clone(), was_down.clone());
        async move {
            use std::sync::atomic::Ordering;
            match event {
                async_nats::Event::Disconnected => {
                    was_down.store(true, Ordering::Relaxed);
                    console.line("NATS: disconnected; reconnecting");
                }
                async_nats::Event::Connected => {
                    if was_down.swap(false, Ordering::Relaxed) {
                        state.replay().reconnected();
                        console.line("NATS: reconnected");
                    }
                }
                async_nats::Event::Closed => {}
                // Each failed reconnect attempt: said once, as disconnected.
                async_nats::Event::ClientError(_) if was_down.load(Ordering::Relaxed) => {}
                other => console.line(&format!("NATS: {other}")),
            }
        }
    }))
}

/// The error for a stream whose sequences went backwards: it holds
/// sequences only up to `last` while the model has read up to `read`.
fn recreated(o: &NatsOptions, read: u64, last: u64) -> String {
    format!(
        "stream {} holds sequences only up to {last}, but the model has read up to {read}: the stream was deleted and created again (or restored from an older copy), and its messages are not the ones the model learned. Start a new model (another --checkpoint, or --overwrite) to learn the new stream",
        o.stream
    )
}

/// Where to start reading: after `last` (the checkpoint's position, or
/// the last sequence read) if the stream still holds it. `Err` with the
/// message for a gap without `--allow-gap`.
fn start_after(
    o: &NatsOptions,
    ctx: &SourceContext,
    last: Option<u64>,
    first_held: u64,
) -> Result<DeliverPolicy, String> {
    let Some(last) = last else {
        return Ok(DeliverPolicy::All);
    };
    let next = last + 1;
    if next < first_held {
        let gone = first_held - next;
        if !o.allow_gap {
            return Err(format!(
                "stream {} no longer holds sequence {next}, the one after the checkpoint's: {gone} message(s) (sequences {next}..{}) are gone, probably by the stream's retention limits. Add --allow-gap to count them as lost and continue from sequence {first_held}, or start a new model with another --checkpoint",
                o.stream,
                first_held - 1
            ));
        }
        ctx.state().replay().gap(gone);
        ctx.say(&format!(
            "--allow-gap: stream {} no longer holds sequences {next}..{}: {gone} message(s) lost, continuing from {first_held}",
            o.stream,
            first_held - 1
        ));
        return Ok(DeliverPolicy::ByStartSequence {
            start_sequence: first_held,
        });
    }
    Ok(DeliverPolicy::ByStartSequence {
        start_sequence: next,
    })
}

/// Deletes the durable consumer if it exists and creates it again to
/// deliver from `deliver`; returns it and its message stream.
async fn open_consumer(
    stream: &JsStream,
    o: &NatsOptions,
    ctx: &SourceContext,
    deliver: DeliverPolicy,
) -> Result<(PullConsumer, Messages), String> {
    // Someone pulling from it now is another run under the same name
    // (a crashed run's requests expire within 30 s): each deletes the
    // other's consumer in turn, so say so.
    if let Ok(mut old) = stream.get_consumer::<pull::Config>(&o.consumer).await {
        if let Ok(info) = old.info().await {
            if info.num_waiting > 0 {
                ctx.say(&format!(
                    "{}: consumer {} is being read by another client ({} pull request(s) waiting); is another run using --consumer {}? Each run needs a consumer of its own",
                    name(o),
                    o.consumer,
                    info.num_waiting,
                    o.consumer
                ));
            }
        }
    }
    // A consumer left by an earlier run points at an older position.
    let _ = stream.delete_consumer(&o.consumer).await;
    let config = pull::Config {
        durable_name: Some(o.consumer.clone()),
        description: Some("emstream: replayed from the model's checkpoint".into()),
        deliver_policy: deliver,
        ack_policy: AckPolicy::All,
        ack_wait: ACK_WAIT,
        max_ack_pending: -1,
        filter_subject: o.subject.clone().unwrap_or_default(),
        ..pull::Config::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| {
        format!(
            "cannot create consumer {} on stream {}: {e}",
            o.consumer, o.stream
        )
    })?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| format!("cannot read consumer {}: {e}", o.consumer))?;
    Ok((consumer, messages))
}

/// The last sequence of the messages the source reads (its head, for the
/// lag): the stream's last sequence; with a subject filter, once the
/// consumer has no matching message pending, the last one `read` (other
/// subjects' messages are not lag; the consumer's own delivered sequence
/// counts them), else the stream's as an upper bound.
async fn head(
    stream: &mut JsStream,
    consumer: &PullConsumer,
    filtered: bool,
    read: Option<u64>,
) -> Option<u64> {
    if filtered {
        if let Ok(info) = consumer.get_info().await {
            if info.num_pending == 0 {
                return Some(read.unwrap_or(0));
            }
        }
    }
    Some(stream.info().await.ok()?.state.last_sequence)
}

/// The stream handle, its first held and last sequence.
async fn stream_info(
    js: &jetstream::Context,
    o: &NatsOptions,
) -> Result<(JsStream, u64, u64), String> {
    let mut stream = js.get_stream(&o.stream).await.map_err(|e| {
        format!(
            "no stream {} on {}: {e} (create it, or check --stream)",
            o.stream,
            redact_url(&o.url)
        )
    })?;
    let state = stream
        .info()
        .await
        .map_err(|e| format!("cannot read stream {}: {e}", o.stream))?
        .state
        .clone();
    Ok((stream, state.first_sequence, state.last_sequence))
}

/// What reading does after one delivery.
enum Delivery {
    /// Pushed into the framer (or skipped as a redelivery).
    Read,
    /// The stream sequence jumped from the last one read to `got`: the
    /// message is held in [`Reader::held`] until the jump is checked
    /// ([`Reader::check_jump`]).
    Jump { next: u64, got: u64 },
    /// Deliveries were lost or the connection broke: recreate the consumer.
    Reopen(String),
}

/// The reading state of one run of the source.
struct Reader {
    framer: MessageFramer,
    /// Stream sequence of the last message read.
    last_seq: Option<u64>,
    /// Consumer delivery sequence of the last delivery.
    last_cseq: u64,
    /// The acker of the last message read, not yet tied to a chunk.
    acker: Option<Acker>,
    /// (position of a sent chunk, the acker of its last message).
    unacked: VecDeque<(u64, Acker)>,
    /// The message after a jump in the stream sequence, not yet read.
    held: Option<jetstream::Message>,
    /// Reading one subject of the stream (jumps are not checked).
    filtered: bool,
}

impl Reader {
    fn deliver(
        &mut self,
        item: Option<Result<jetstream::Message, pull::MessagesError>>,
    ) -> Delivery {
        let msg = match item {
            Some(Ok(m)) => m,
            Some(Err(e)) if e.kind() == pull::MessagesErrorKind::ConsumerDeleted => {
                return Delivery::Reopen(
                    "the consumer was deleted by another client (another run with the same --consumer?)"
                        .into(),
                )
            }
            Some(Err(e)) => return Delivery::Reopen(format!("consumer error: {e}")),
            None => return Delivery::Reopen("consumer ended".into()),
        };
        let (seq, cseq) = match msg.info() {
            Ok(i) => (i.stream_sequence, i.consumer_sequence),
            Err(e) => {
                return Delivery::Reopen(format!("a message without JetStream metadata: {e}"))
            }
        };
        if cseq > self.last_cseq + 1 {
            return Delivery::Reopen(format!(
                "deliveries {}..{} were lost in flight",
                self.last_cseq + 1,
                cseq - 1
            ));
        }
        self.last_cseq = self.last_cseq.max(cseq);
        if self.last_seq.is_some_and(|l| seq <= l) {
            // A redelivery of a message already read.
            return Delivery::Read;
        }
        if let Some(l) = self.last_seq.filter(|l| seq > l + 1 && !self.filtered) {
            self.held = Some(msg);
            return Delivery::Jump {
                next: l + 1,
                got: seq,
            };
        }
        self.accept(msg, seq);
        Delivery::Read
    }

    /// Reads `msg`, of stream sequence `seq`, into the framer.
    fn accept(&mut self, msg: jetstream::Message, seq: u64) {
        let (message, acker) = msg.split();
        self.framer
            .push(&message.payload, seq, message.subject.as_str());
        self.last_seq = Some(seq);
        self.acker = Some(acker);
    }

    /// Checks a jump of the stream sequence from `next` (expected) to
    /// `got`: the sequences below the stream's first held one were lost
    /// before they were read (retention, purge). They are refused, or
    /// with `--allow-gap` counted and logged; then the held message is
    /// read. Sequences the stream still holds were deleted one by one:
    /// no longer part of the stream, as on a resume.
    async fn check_jump(
        &mut self,
        o: &NatsOptions,
        ctx: &SourceContext,
        stream: &mut JsStream,
        next: u64,
        got: u64,
    ) -> Result<(), String> {
        let first_held = stream
            .info()
            .await
            .map_err(|e| format!("cannot read stream {}: {e}", o.stream))?
            .state
            .first_sequence;
        let lost_to = first_held.min(got);
        if lost_to > next {
            let gone = lost_to - next;
            let what = format!("{gone} message(s) (sequences {next}..{})", lost_to - 1);
            if !o.allow_gap {
                return Err(format!(
                    "stream {} dropped {what} before they were read (retention limits or a purge while the run was behind). Add --allow-gap to count such losses and continue, or start a new model with another --checkpoint",
                    o.stream
                ));
            }
            ctx.state().replay().gap(gone);
            ctx.say(&format!(
                "--allow-gap: stream {} dropped {what} before they were read; continuing from {got}",
                o.stream
            ));
        }
        if let Some(msg) = self.held.take() {
            self.accept(msg, got);
        }
        Ok(())
    }

    /// Closes the chunk and sends what is ready; false when the parser is
    /// gone.
    async fn send(&mut self, ctx: &SourceContext) -> bool {
        self.framer.close();
        self.send_ready(ctx).await
    }

    async fn send_ready(&mut self, ctx: &SourceContext) -> bool {
        if !self.framer.has_ready() {
            return true;
        }
        if !self.framer.send(ctx.sender()).await {
            return false;
        }
        if let (Some(seq), Some(acker)) = (self.last_seq, self.acker.take()) {
            self.unacked.push_back((seq, acker));
        }
        true
    }

    /// Acknowledges (ack "all") up to the newest durable position.
    async fn ack(&mut self, upto: u64) {
        let mut newest = None;
        while self.unacked.front().is_some_and(|(s, _)| *s <= upto) {
            newest = self.unacked.pop_front();
        }
        if let Some((_, acker)) = newest {
            // A lost ack is harmless: the checkpoint, not the consumer,
            // says where the next run starts.
            let _ = acker.ack().await;
        }
    }
}

/// Reads the stream until the stop; see the module docs.
async fn read(o: &NatsOptions, ctx: &SourceContext) -> Result<(), String> {
    let key = name(o);
    let id = ctx.id();
    let resumed = ctx.resumed(&key);
    ctx.replayable(id, key, resumed.unwrap_or(0));
    let Some(client) = connect(o, ctx).await? else {
        return Ok(());
    };
    let js = jetstream::new(client);
    let mut durable = ctx.durable();
    let mut reader = Reader {
        framer: MessageFramer::new(id, ctx.max_line(), CHUNK_BYTES),
        last_seq: resumed,
        last_cseq: 0,
        acker: None,
        unacked: VecDeque::new(),
        held: None,
        filtered: o.subject.is_some(),
    };
    let mut first = true;
    let mut wait = BACKOFF.0;
    'consumer: loop {
        // (Re)open the consumer after the last sequence read.
        let Some(info) = or_stop(ctx, stream_info(&js, o)).await else {
            break 'consumer;
        };
        let opened = match info {
            Ok((stream, first_held, last)) => {
                if let Some(read) = reader.last_seq.filter(|read| last < *read) {
                    return Err(recreated(o, read, last));
                }
                ctx.state().replay().set_head(id, last);
                let deliver = start_after(o, ctx, reader.last_seq, first_held)?;
                if first {
                    ctx.say(&match reader.last_seq {
                        Some(l) => format!(
                            "{}: resuming after sequence {l} (stream holds {first_held}..{last})",
                            name(o)
                        ),
                        None => format!(
                            "{}: reading from the start (stream holds {first_held}..{last})",
                            name(o)
                        ),
                    });
                }
                match or_stop(ctx, open_consumer(&stream, o, ctx, deliver)).await {
                    Some(opened) => opened.map(|(c, m)| (stream, c, m)),
                    None => break 'consumer,
                }
            }
            Err(e) => Err(e),
        };
        let (mut stream, consumer, mut messages) = match opened {
            Ok(x) => x,
            Err(e) if first && o.connect_timeout.is_some() => return Err(e),
            Err(e) if first && e.starts_with("no stream") => return Err(e),
            Err(e) => {
                ctx.say(&format!("{e}; retrying"));
                if !pause(ctx, wait).await {
                    break 'consumer;
                }
                wait = next_backoff(wait);
                continue;
            }
        };
        if !first {
            ctx.state().replay().reconnected();
        }
        // The consumer is open: the --stop-when-idle quiet counts from here.
        ctx.state().replay().touch();
        first = false;
        wait = BACKOFF.0;
        reader.last_cseq = 0;
        let mut head_tick = tokio::time::interval(HEAD_EVERY);
        loop {
            let item = tokio::select! {
                () = ctx.stop().cancelled() => break 'consumer,
                changed = async {
                    match durable.as_mut() {
                        Some(d) => d.changed().await.map(|()| d.borrow_and_update().clone()),
                        None => std::future::pending().await,
                    }
                } => {
                    match changed {
                        Ok(Durable { positions, .. }) => {
                            if let Some(&p) = positions.get(&id) {
                                if or_stop(ctx, reader.ack(p)).await.is_none() {
                                    break 'consumer;
                                }
                            }
                        }
                        Err(_) => durable = None,
                    }
                    continue;
                }
                _ = head_tick.tick() => {
                    let filtered = o.subject.is_some();
                    match or_stop(ctx, head(&mut stream, &consumer, filtered, reader.last_seq)).await {
                        None => break 'consumer,
                        Some(Some(h)) => ctx.state().replay().set_head(id, h),
                        Some(None) => {}
                    }
                    continue;
                }
                item = messages.next() => item,
            };
            let mut outcome = reader.deliver(item);
            // Gather what has already arrived into the chunk.
            while matches!(outcome, Delivery::Read) && !reader.framer.has_ready() {
                match messages.next().now_or_never() {
                    Some(item) => outcome = reader.deliver(item),
                    None => {
                        reader.framer.close();
                        break;
                    }
                }
            }
            if !reader.send_ready(ctx).await {
                return Ok(());
            }
            if let Delivery::Jump { next, got } = outcome {
                let checked = or_stop(ctx, reader.check_jump(o, ctx, &mut stream, next, got)).await;
                let Some(checked) = checked else {
                    break 'consumer;
                };
                if let Err(e) = checked {
                    // What was read before the jump is learned and saved;
                    // a resume refuses the same jump.
                    reader.send(ctx).await;
                    return Err(e);
                }
                if !reader.send(ctx).await {
                    return Ok(());
                }
                continue;
            }
            if let Delivery::Reopen(why) = outcome {
                ctx.say(&format!(
                    "{}: {why}; reopening the consumer after sequence {}",
                    name(o),
                    reader.last_seq.unwrap_or(0)
                ));
                if !reader.send(ctx).await {
                    return Ok(());
                }
                if !pause(ctx, wait).await {
                    break 'consumer;
                }
                wait = next_backoff(wait);
                continue 'consumer;
            }
        }
    }
    reader.send(ctx).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(allow_gap: bool) -> NatsOptions {
        NatsOptions {
            url: "nats://127.0.0.1:4222".into(),
            stream: "S".into(),
            subject: None,
            consumer: "c".into(),
            credentials: None,
            ca_file: None,
            cert: None,
            key: None,
            allow_gap,
            connect_timeout: None,
        }
    }

    fn ctx() -> SourceContext {
        let state = std::sync::Arc::new(crate::pipeline::RunState::new("s"));
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        SourceContext::new(
            tx,
            state,
            std::sync::Arc::new(crate::pipeline::console::Console::new()),
            1000,
            0,
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
        )
    }

    #[test]
    fn each_subject_filter_has_a_position_of_its_own() {
        let mut o = opts(false);
        assert_eq!(name(&o), "jetstream:S");
        o.subject = Some("points.p3".into());
        assert_eq!(name(&o), "jetstream:S:points.p3");
    }

    #[test]
    fn a_resume_starts_after_the_checkpoint_and_a_gap_is_refused_or_counted() {
        let c = ctx();
        assert_eq!(
            start_after(&opts(false), &c, None, 5).unwrap(),
            DeliverPolicy::All
        );
        assert_eq!(
            start_after(&opts(false), &c, Some(9), 5).unwrap(),
            DeliverPolicy::ByStartSequence { start_sequence: 10 }
        );
        let e = start_after(&opts(false), &c, Some(9), 15).unwrap_err();
        assert!(
            e.contains("5 message(s) (sequences 10..14) are gone") && e.contains("--allow-gap"),
            "{e}"
        );
        assert_eq!(c.state().replay().gap_messages(), 0);
        assert_eq!(
            start_after(&opts(true), &c, Some(9), 15).unwrap(),
            DeliverPolicy::ByStartSequence { start_sequence: 15 }
        );
        assert_eq!(c.state().replay().gap_messages(), 5);
    }
}
