//! An MQTT subscription as a source (`rumqttc`, pure Rust).
//!
//! Every message body is one record or several lines of records in the
//! run's `--format`; messages are gathered into chunks that end between
//! messages (like the JetStream source's), numbered by arrival.
//!
//! The client runs in a task of its own that polls the connection and
//! forwards publishes through a channel, so the reading loop can wait on
//! the channel, gather what has arrived and watch the stop without
//! cancelling a poll half-way. A broken connection is retried with backoff
//! (logged, counted in [`Replay::reconnects`](crate::pipeline::Replay::reconnects));
//! the subscriptions are made again on every connection the broker did not
//! keep a session for. A broker that is down at start is retried too,
//! unless `--connect-timeout` bounds the first connection.
//!
//! Retained messages (the broker's last message of a topic, sent again on
//! every new subscription) are skipped and counted unless
//! `--mqtt-retained`: otherwise every restart would learn them once more.
//!
//! A message larger than the run's longest line is a `too_long` reject,
//! never the end of the connection: the client accepts packets up to
//! [`max_packet`] (bounded by `--max-memory`), far above the default line
//! limit. Reconnection waits double while connections keep dying soon
//! after they are made, and start small again only after a connection
//! held for [`STABLE`].
//!
//! Delivery guarantee: MQTT cannot replay. QoS 1 messages are acknowledged
//! on receipt; what arrived after the last checkpoint is lost by a crash,
//! and a QoS 1 redelivery after a reconnect may be learned twice. For
//! exactly-once, feed a JetStream stream (docs/sources.md).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions as Client, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;

use super::messages::MessageFramer;
use super::{Source, SourceContext, SourceFuture};
use crate::config::MqttOptions;
use crate::pipeline::CHUNK_BYTES;

/// Publishes waiting between the client task and the reading loop.
const QUEUE: usize = 1024;

/// First and longest wait between connection attempts.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Largest MQTT packet sent (bytes): emstream only sends control packets.
const MAX_OUTGOING: usize = 1 << 20;

/// A connection that held this long was healthy: the next loss starts the
/// backoff from its first wait again.
pub const STABLE: Duration = Duration::from_secs(30);

/// Largest MQTT packet accepted (bytes): 1/16 of the memory budget, at
/// least 1 MiB and at most 256 MiB. A larger packet still breaks the
/// connection (the client cannot skip it unread), so the limit stays far
/// above any line the parser keeps (`--max-line-bytes`), which makes a
/// large message a counted reject instead.
pub fn max_packet(max_memory: u64) -> usize {
    usize::try_from(max_memory / 16).map_or(256 << 20, |m| m.clamp(1 << 20, 256 << 20))
}

/// The source's name in messages.
pub fn name(o: &MqttOptions) -> String {
    let scheme = if o.ca_file.is_some() { "mqtts" } else { "mqtt" };
    format!("{scheme}://{}:{}", o.host, o.port)
}

/// An MQTT subscription; see the module docs.
#[derive(Debug)]
pub struct MqttSource {
    opts: MqttOptions,
}

impl MqttSource {
    /// A source for `opts`; nothing is connected until it runs.
    pub fn new(opts: MqttOptions) -> Self {
        MqttSource { opts }
    }
}

impl Source for MqttSource {
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

/// The client options for `o`.
fn client_options(o: &MqttOptions) -> Result<Client, String> {
    let id = o.client_id.clone().unwrap_or_else(|| {
        format!(
            "emstream-{}-{}",
            std::process::id(),
            crate::pipeline::unix_ms()
        )
    });
    let mut c = Client::new(id, o.host.clone(), o.port);
    c.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(!o.persistent)
        .set_max_packet_size(max_packet(o.max_memory), MAX_OUTGOING);
    if let Some(path) = &o.credentials {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the MQTT credentials file {}: {e}",
                path.display()
            )
        })?;
        let mut lines = text.lines();
        let (Some(user), Some(pass)) = (lines.next(), lines.next()) else {
            return Err(format!(
                "the MQTT credentials file {} must hold the user name on its first line and the password on its second",
                path.display()
            ));
        };
        c.set_credentials(user, pass);
    }
    if let Some((user, pass)) = &o.login {
        c.set_credentials(user, pass);
    }
    if let Some(ca) = &o.ca_file {
        let ca = std::fs::read(ca)
            .map_err(|e| format!("cannot read the CA file {}: {e}", ca.display()))?;
        c.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            },
        ));
    }
    Ok(c)
}

/// What the client task hands the reading loop.
enum FromClient {
    Publish(rumqttc::Publish),
    Fatal(String),
}

/// Polls the connection until the stop, forwarding publishes; reconnects
/// with backoff and subscribes again when the broker kept no session.
async fn client_task(
    o: MqttOptions,
    client: AsyncClient,
    mut events: EventLoop,
    tx: mpsc::Sender<FromClient>,
    ctx: SourceContext,
) {
    let qos = if o.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let filters: Vec<SubscribeFilter> = o
        .topics
        .iter()
        .map(|t| SubscribeFilter::new(t.clone(), qos))
        .collect();
    let started = Instant::now();
    let mut connected_once = false;
    let mut down = false;
    let mut wait = BACKOFF.0;
    let mut connected_at: Option<Instant> = None;
    let mut retained_said = false;
    loop {
        let event = tokio::select! {
            () = ctx.stop().cancelled() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // The --stop-when-idle quiet counts from the connection.
                ctx.state().replay().touch();
                if connected_once {
                    ctx.state().replay().reconnected();
                    ctx.say(&format!("{}: reconnected", name(&o)));
                } else {
                    ctx.say(&format!("{}: connected", name(&o)));
                }
                connected_once = true;
                down = false;
                connected_at = Some(Instant::now());
                if !ack.session_present {
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        let _ = tx
                            .send(FromClient::Fatal(format!("cannot subscribe: {e}")))
                            .await;
                        break;
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                // Subscribed: the --stop-when-idle quiet counts from here.
                ctx.state().replay().touch();
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    ctx.say(&format!(
                        "{}: the broker refused a subscription of {}",
                        name(&o),
                        o.topics.join(", ")
                    ));
                } else {
                    ctx.say(&format!(
                        "{}: subscribed to {}",
                        name(&o),
                        o.topics.join(", ")
                    ));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.retain && !o.retained => {
                ctx.state().replay().retained_skipped();
                if !retained_said {
                    retained_said = true;
                    ctx.say(&format!(
                        "{}: skipping retained messages (the first on {}): the broker sends them again on every subscription; --mqtt-retained learns them",
                        name(&o),
                        String::from_utf8_lossy(p.topic.as_ref())
                    ));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(FromClient::Publish(p)).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !connected_once && o.connect_timeout.is_some_and(|t| started.elapsed() >= t) {
                    let msg = format!(
                        "cannot connect to {} within --connect-timeout: {e}",
                        name(&o)
                    );
                    let _ = tx.send(FromClient::Fatal(msg)).await;
                    break;
                }
                // A connection that held is forgiven; one that died soon
                // after it was made keeps the wait growing.
                if connected_at.take().is_some_and(|t| t.elapsed() >= STABLE) {
                    wait = BACKOFF.0;
                }
                if !down {
                    ctx.say(&format!(
                        "{}: connection lost ({e}); reconnecting",
                        name(&o)
                    ));
                    down = true;
                }
                tokio::select! {
                    () = ctx.stop().cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
    let _ = client.try_disconnect();
}

/// Reads the subscription until the stop.
async fn read(o: &MqttOptions, ctx: &SourceContext) -> Result<(), String> {
    let (client, events) = AsyncClient::new(client_options(o)?, 64);
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(client_task(o.clone(), client, events, tx, ctx.clone()));
    let mut framer = MessageFramer::new(ctx.id(), ctx.max_line(), CHUNK_BYTES);
    let mut count = 0u64;
    let mut result = Ok(());
    loop {
        let got = tokio::select! {
            () = ctx.stop().cancelled() => break,
            m = rx.recv() => m,
        };
        if got.is_none() {
            break;
        }
        let mut next = got;
        loop {
            match next {
                Some(FromClient::Publish(p)) => {
                    count += 1;
                    framer.push(&p.payload, count, &p.topic);
                }
                Some(FromClient::Fatal(e)) => {
                    result = Err(e);
                    break;
                }
                None => break,
            }
            if framer.has_ready() {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            };
        }
        framer.close();
        if !framer.send(ctx.sender()).await || result.is_err() {
            break;
        }
    }
    framer.close();
    framer.send(ctx.sender()).await;
    // The client task ends on the stop; after a fatal error it may be
    // waiting on the connection.
    drop(rx);
    task.abort();
    let _ = task.await;
    result
}
