//! The group's NATS plumbing: connection, buckets, statistics stream,
//! leases, and reading the model back.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;

use super::{GroupArgs, GroupError, GroupValue, DUPLICATE_WINDOW, MODEL_KEY};
use crate::checkpoint::Checkpoint;

/// Everything a member talks to.
pub(crate) struct Conn {
    pub js: jetstream::Context,
    pub models: kv::Store,
    pub leases: kv::Store,
}

fn err(what: &str, e: impl std::fmt::Display) -> GroupError {
    GroupError::new(format!("{what}: {e}"))
}

/// Connects to `url` (retrying for ever on a server that is down).
pub(crate) async fn client(url: &str) -> Result<async_nats::Client, GroupError> {
    async_nats::ConnectOptions::new()
        .name("emstream-group")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| {
            err(
                &format!("cannot connect to {}", crate::config::redact_url(url)),
                e,
            )
        })
}

/// Connects and makes (or opens) the group's buckets and statistics stream.
pub(crate) async fn connect(args: &GroupArgs) -> Result<Conn, GroupError> {
    let js = jetstream::new(client(&args.nats).await?);
    let models = bucket(
        &js,
        kv::Config {
            bucket: args.model_bucket(),
            description: "emstream group model".into(),
            history: 1,
            max_value_size: -1,
            ..Default::default()
        },
    )
    .await?;
    let leases = bucket(
        &js,
        kv::Config {
            bucket: args.lease_bucket(),
            description: "emstream group leases".into(),
            history: 1,
            max_age: args.ttl(),
            ..Default::default()
        },
    )
    .await?;
    js.get_or_create_stream(stream::Config {
        name: args.stats_stream(),
        subjects: vec![args.stats_subject()],
        duplicate_window: DUPLICATE_WINDOW,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .map_err(|e| err(&format!("cannot open stream {}", args.stats_stream()), e))?;
    Ok(Conn { js, models, leases })
}

/// Opens bucket `config.bucket`, creating its stream as
/// `create_key_value` would: that call first asks for the account's
/// limits in a form NATS 2.9 does not answer, so the stream (`KV_NAME` on
/// `$KV.NAME.>`, roll-ups, direct get, one value per key) is made here.
async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, GroupError> {
    let name = config.bucket.clone();
    if let Ok(s) = js.get_key_value(&name).await {
        return Ok(s);
    }
    let stream = stream::Config {
        name: format!("KV_{name}"),
        description: Some(config.description),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        max_message_size: config.max_value_size,
        storage: config.storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    // Another member may create it meanwhile: then it is opened.
    let created = js.create_stream(stream).await;
    js.get_key_value(&name).await.map_err(|e| match created {
        Err(c) => err(&format!("cannot create bucket {name}"), c),
        Ok(_) => err(&format!("cannot open bucket {name}"), e),
    })
}

/// The committed group value and its KV revision, if there is one.
pub(crate) async fn load(models: &kv::Store) -> Result<Option<(GroupValue, u64)>, GroupError> {
    match models.entry(MODEL_KEY).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => {
            Ok(Some((GroupValue::from_bytes(&e.value)?, e.revision)))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(err("cannot read the group model", e)),
    }
}

/// A lease held in the lease bucket.
pub(crate) struct Lease {
    pub key: String,
    pub revision: u64,
    /// When it was last taken or renewed.
    pub renewed: std::time::Instant,
}

/// Takes lease `key` for `holder` if nobody holds it.
pub(crate) async fn take(leases: &kv::Store, key: &str, holder: &str) -> Option<Lease> {
    let revision = leases
        .create(key, holder.as_bytes().to_vec().into())
        .await
        .ok()?;
    Some(Lease {
        key: key.to_string(),
        revision,
        renewed: std::time::Instant::now(),
    })
}

/// Renews `lease` (compare-and-set on its revision); false when it is
/// lost: another holder wrote the key (it expired and was taken), or no
/// renewal went through for a whole `ttl` (the server is unreachable, so
/// the lease may have expired). A failed renewal within the TTL (a
/// server restart) keeps it.
pub(crate) async fn renew(
    leases: &kv::Store,
    lease: &mut Lease,
    holder: &str,
    ttl: Duration,
) -> bool {
    let value = holder.as_bytes().to_vec().into();
    match leases.update(&lease.key, value, lease.revision).await {
        Ok(r) => {
            lease.revision = r;
            lease.renewed = std::time::Instant::now();
            true
        }
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
        Err(_) => lease.renewed.elapsed() < ttl,
    }
}

/// Gives `lease` up (only if still ours).
pub(crate) async fn release(leases: &kv::Store, lease: &Lease) {
    let _ = leases
        .delete_expect_revision(&lease.key, Some(lease.revision))
        .await;
}

/// Keys of the lease bucket that start with `prefix`.
pub(crate) async fn keys(leases: &kv::Store, prefix: &str) -> Vec<String> {
    let Ok(mut keys) = leases.keys().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        match k {
            Ok(k) if k.starts_with(prefix) => out.push(k),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

/// The group model at `url` = `nats://HOST:PORT/GROUP`, as a checkpoint
/// (what `emstream inspect nats://...` shows), with its revision.
///
/// # Errors
///
/// A message saying what is wrong with the address, the server or the value.
pub fn fetch_checkpoint(url: &str) -> Result<(Checkpoint, GroupValue), GroupError> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or_else(|| GroupError::new(format!("{url}: give nats://HOST:PORT/GROUP")))?;
    let (host, group) = rest
        .split_once('/')
        .filter(|(h, g)| !h.is_empty() && !g.is_empty() && !g.contains('/'))
        .ok_or_else(|| GroupError::new(format!("{url}: give nats://HOST:PORT/GROUP")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err("cannot start the runtime", e))?;
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(format!("nats://{host}"))
            .await
            .map_err(|e| err(&format!("cannot connect to nats://{host}"), e))?;
        let js = jetstream::new(client);
        let bucket = format!("emstream_{group}");
        let models = js.get_key_value(&bucket).await.map_err(|e| {
            err(
                &format!("no group {group} on nats://{host} (bucket {bucket})"),
                e,
            )
        })?;
        let (value, _) = load(&models)
            .await?
            .ok_or_else(|| GroupError::new(format!("group {group} has no model yet")))?;
        Ok((value.model()?, value))
    })
}
