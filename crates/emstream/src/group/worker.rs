//! `emstream worker`: holds leases on a fair share of the partitions,
//! watches the group's model and publishes the E-step statistics of each
//! owned partition's mini-batches against it.
//!
//! Per partition the worker keeps a queue of at most `--depth` complete
//! mini-batches after the model's watermark, each with the revision it was
//! last computed against. On every new model revision: batches the model
//! has learned leave the queue; if the watermark is no longer where the
//! queue starts (another worker's batch was applied after a takeover), the
//! partition is read again from the watermark; if the first batch is more
//! than τ revisions old (the reducer will refuse it), every queued batch is
//! recomputed against the new model and published again, in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::nats::{self, Conn, Lease};
use super::reducer::open;
use super::{GroupArgs, GroupError, GroupValue, StatsMsg, WorkerArgs, MODEL_KEY};
use crate::model::StepwiseEm;

/// A published batch not learned after this long is published again (a
/// safety net: the rules make this rare).
const REPUBLISH_AFTER: Duration = Duration::from_secs(10);

/// A decoded model revision.
struct Model {
    value: GroupValue,
    learner: StepwiseEm,
}

type Models = watch::Receiver<Option<Arc<Model>>>;

/// What one worker did.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Statistics messages published.
    pub published: AtomicU64,
    /// Of those, batches published again (recomputed or retried).
    pub republished: AtomicU64,
    /// Points read from the partitions.
    pub points: AtomicU64,
    /// Partitions read again from the watermark.
    pub rereads: AtomicU64,
    /// Nanoseconds in E-steps.
    pub estep_ns: AtomicU64,
    /// Nanoseconds publishing statistics (until the stream's ack).
    pub publish_ns: AtomicU64,
}

impl WorkerStats {
    /// One line for the log.
    pub fn line(&self) -> String {
        let n = self.published.load(Ordering::Relaxed);
        let per = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e3 / n.max(1) as f64;
        format!(
            "{} points read, {n} statistics messages published ({} again), {} re-reads; {:.0} µs per E-step, {:.0} µs per publish",
            self.points.load(Ordering::Relaxed),
            self.republished.load(Ordering::Relaxed),
            self.rereads.load(Ordering::Relaxed),
            per(&self.estep_ns),
            per(&self.publish_ns)
        )
    }
}

struct Ctx {
    g: GroupArgs,
    conn: Conn,
    depth: usize,
    linger: Duration,
    threads: usize,
    stats: Arc<WorkerStats>,
}

fn say(msg: &str) {
    tracing::info!(target: "emstream", "{msg}");
}

/// Runs the worker until the group is finished or `stop` is cancelled.
///
/// # Errors
///
/// Bad flags or an unreachable server.
pub async fn run(
    args: WorkerArgs,
    stop: CancellationToken,
) -> Result<Arc<WorkerStats>, GroupError> {
    args.group.check()?;
    if args.depth == 0 {
        return Err(GroupError::new("--depth must be at least 1"));
    }
    let conn = nats::connect(&args.group).await?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{:08x}", rand::rng().random::<u32>()));
    let ctx = Arc::new(Ctx {
        g: args.group.clone(),
        conn,
        depth: args.depth,
        linger: Duration::from_millis(args.linger_ms),
        threads: args.threads,
        stats: Arc::new(WorkerStats::default()),
    });
    let (tx, models) = watch::channel(None);
    let watcher = tokio::spawn(watch_model(ctx.conn.models.clone(), tx));
    let result = lease_loop(&ctx, &id, models, &stop).await;
    watcher.abort();
    result.map(|()| ctx.stats.clone())
}

/// Keeps the newest model revision in `tx`.
async fn watch_model(
    models: async_nats::jetstream::kv::Store,
    tx: watch::Sender<Option<Arc<Model>>>,
) {
    loop {
        if let Ok(mut w) = models.watch_with_history(MODEL_KEY).await {
            while let Some(Ok(mut entry)) = w.next().await {
                // Only the newest of what is waiting is decoded.
                while let Some(Some(Ok(e))) = w.next().now_or_never() {
                    entry = e;
                }
                if entry.operation != async_nats::jetstream::kv::Operation::Put {
                    continue;
                }
                match GroupValue::from_bytes(&entry.value).and_then(|v| {
                    let learner = v.model()?.learner;
                    Ok(Model { value: v, learner })
                }) {
                    Ok(m) => {
                        let newer = tx.borrow().as_ref().is_none_or(|old| {
                            old.value.revision < m.value.revision || m.value.finished
                        });
                        if newer {
                            let _ = tx.send(Some(Arc::new(m)));
                        }
                    }
                    Err(e) => say(&format!("group model revision skipped: {e}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Takes, renews and gives up partition leases (a fair share: the
/// partitions over the live workers, rounded up), and runs a task per
/// owned partition.
async fn lease_loop(
    ctx: &Arc<Ctx>,
    id: &str,
    models: Models,
    stop: &CancellationToken,
) -> Result<(), GroupError> {
    let g = &ctx.g;
    let me = format!("w.{id}");
    let mut owned: BTreeMap<u32, (Lease, JoinHandle<()>)> = BTreeMap::new();
    say(&format!("group {}: worker {id} started", g.group));
    loop {
        let finished = models.borrow().as_ref().is_some_and(|m| m.value.finished);
        if finished || stop.is_cancelled() {
            for (_, (lease, task)) in std::mem::take(&mut owned) {
                task.abort();
                nats::release(&ctx.conn.leases, &lease).await;
            }
            let _ = ctx.conn.leases.delete(&me).await;
            say(&format!(
                "group {}: worker {id}: {}",
                g.group,
                ctx.stats.line()
            ));
            return Ok(());
        }
        let _ = ctx
            .conn
            .leases
            .put(&me, id.as_bytes().to_vec().into())
            .await;
        let live = nats::keys(&ctx.conn.leases, "w.").await.len().max(1);
        let target = (g.partitions as usize).div_ceil(live);
        // Renew; forget what was lost or whose task ended.
        let mut gone = Vec::new();
        for (&k, (lease, task)) in owned.iter_mut() {
            if task.is_finished() || !nats::renew(&ctx.conn.leases, lease, id, g.ttl()).await {
                gone.push(k);
            }
        }
        for k in gone {
            if let Some((lease, task)) = owned.remove(&k) {
                task.abort();
                nats::release(&ctx.conn.leases, &lease).await;
                say(&format!(
                    "group {}: worker {id} gave up partition {k}",
                    g.group
                ));
            }
        }
        while owned.len() > target {
            let Some((k, (lease, task))) = owned.pop_last() else {
                break;
            };
            task.abort();
            nats::release(&ctx.conn.leases, &lease).await;
            say(&format!(
                "group {}: worker {id} handed partition {k} over",
                g.group
            ));
        }
        for k in 0..g.partitions {
            if owned.len() >= target {
                break;
            }
            if owned.contains_key(&k) {
                continue;
            }
            if let Some(lease) = nats::take(&ctx.conn.leases, &format!("p{k}"), id).await {
                say(&format!(
                    "group {}: worker {id} took partition {k}",
                    g.group
                ));
                let (ctx2, models2) = (ctx.clone(), models.clone());
                let task = tokio::spawn(async move {
                    if let Err(e) = partition(k, &ctx2, models2).await {
                        say(&format!("partition {k}: {e}"));
                    }
                });
                owned.insert(k, (lease, task));
            }
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(g.ttl() / 4) => {}
        }
    }
}

/// A complete (or lingering partial) mini-batch of one partition.
struct Batch {
    after: u64,
    last: u64,
    points: Vec<f64>,
    /// The revision it was last published against.
    revision: Option<u64>,
    published: Option<Instant>,
    attempt: u32,
}

impl Batch {
    fn new(after: u64) -> Self {
        Batch {
            after,
            last: after,
            points: Vec::new(),
            revision: None,
            published: None,
            attempt: 0,
        }
    }
}

/// The newest model, waiting for the first.
async fn current(models: &mut Models) -> Result<Arc<Model>, GroupError> {
    loop {
        if let Some(m) = models.borrow_and_update().clone() {
            return Ok(m);
        }
        models
            .changed()
            .await
            .map_err(|_| GroupError::new("the model watcher ended"))?;
    }
}

/// Reads partition `k` and publishes its statistics; see the module docs.
async fn partition(k: u32, ctx: &Ctx, mut models: Models) -> Result<(), GroupError> {
    let g = &ctx.g;
    let subject = g.partition_subject(k);
    let stream = ctx
        .conn
        .js
        .get_stream(&g.stream)
        .await
        .map_err(|e| GroupError::new(format!("no stream {}: {e}", g.stream)))?;
    let mut parser = super::PointParser::new(g.dim);
    'reread: loop {
        let model = current(&mut models).await?;
        if model.value.finished {
            return Ok(());
        }
        let wm = model.value.watermarks[k as usize];
        let mut msgs = open(&stream, &subject, wm).await?;
        let mut queue: VecDeque<Batch> = VecDeque::new();
        let mut building = Batch::new(wm);
        let mut last_msg = Instant::now();
        let mut learner: Option<(u64, StepwiseEm)> = None;
        let batch_points = model.learner.params().batch_size;
        loop {
            let model = current(&mut models).await?;
            // The safety net, checked on every event (a partition stuck
            // while the others move the model still gets it).
            if queue
                .front()
                .and_then(|b| b.published)
                .is_some_and(|t| t.elapsed() >= REPUBLISH_AFTER)
            {
                for b in queue.iter_mut() {
                    b.revision = None;
                    b.attempt += 1;
                }
            }
            publish_due(k, ctx, &model, &mut queue, &mut learner).await?;
            let linger = (last_msg + ctx.linger).saturating_duration_since(Instant::now());
            tokio::select! {
                m = msgs.next(), if queue.len() < ctx.depth => {
                    let m = m
                        .ok_or_else(|| GroupError::new("the partition's consumer ended"))?
                        .map_err(|e| GroupError::new(format!("reading {subject}: {e}")))?;
                    let seq = m.info().map_err(|e| GroupError::new(e.to_string()))?.stream_sequence;
                    let before = building.points.len();
                    parser.parse(&m.payload, &mut building.points);
                    ctx.stats.points.fetch_add(((building.points.len() - before) / g.dim) as u64, Ordering::Relaxed);
                    building.last = seq;
                    last_msg = Instant::now();
                    if building.points.len() >= batch_points * g.dim {
                        let next = Batch::new(seq);
                        queue.push_back(std::mem::replace(&mut building, next));
                    }
                }
                // A partial batch waits while points are read; not while
                // the queue is full (the reading is what stopped).
                () = tokio::time::sleep(linger), if building.last > building.after && queue.len() < ctx.depth => {
                    let next = Batch::new(building.last);
                    queue.push_back(std::mem::replace(&mut building, next));
                }
                changed = models.changed() => {
                    changed.map_err(|_| GroupError::new("the model watcher ended"))?;
                    let model = current(&mut models).await?;
                    if model.value.finished {
                        return Ok(());
                    }
                    let wm = model.value.watermarks[k as usize];
                    while queue.front().is_some_and(|b| b.last <= wm) {
                        queue.pop_front();
                    }
                    let starts = queue.front().map_or(building.after, |b| b.after);
                    if starts != wm {
                        // Another worker's batch was learned: read again
                        // from the model's watermark.
                        ctx.stats.rereads.fetch_add(1, Ordering::Relaxed);
                        continue 'reread;
                    }
                }
                // Wakes the loop for the safety net above.
                () = tokio::time::sleep(REPUBLISH_AFTER) => {}
            }
        }
    }
}

/// Publishes the queued batches that need it against `model`: none yet
/// published, or all of them again when the first is too old to be
/// accepted. In lockstep only the first, on its partition's turn.
async fn publish_due(
    k: u32,
    ctx: &Ctx,
    model: &Model,
    queue: &mut VecDeque<Batch>,
    learner: &mut Option<(u64, StepwiseEm)>,
) -> Result<(), GroupError> {
    let g = &ctx.g;
    let r = model.value.revision;
    let Some(front) = queue.front() else {
        return Ok(());
    };
    let (from, upto) = if model.value.turn.is_some() {
        if model.value.turn != Some(k) || front.revision == Some(r) {
            return Ok(());
        }
        (0, 1)
    } else {
        let stale = front
            .revision
            .is_none_or(|fr| r.saturating_sub(fr) > model.value.tau);
        let from = if stale {
            0
        } else {
            queue
                .iter()
                .position(|b| b.revision.is_none())
                .unwrap_or(queue.len())
        };
        (from, queue.len())
    };
    if from >= upto {
        return Ok(());
    }
    if learner.as_ref().is_none_or(|(rev, _)| *rev != r) {
        let mut l = model.learner.clone();
        l.set_threads(ctx.threads);
        *learner = Some((r, l));
    }
    let Some((_, l)) = learner.as_mut() else {
        return Ok(());
    };
    for b in queue.iter_mut().take(upto).skip(from) {
        let t = Instant::now();
        let stats = tokio::task::block_in_place(|| l.batch_stats(&b.points))
            .map_err(|e| GroupError::new(format!("E-step: {e}")))?;
        let t_pub = Instant::now();
        ctx.stats
            .estep_ns
            .fetch_add((t_pub - t).as_nanos() as u64, Ordering::Relaxed);
        let points = (b.points.len() / g.dim) as u64;
        let msg = StatsMsg::new(k, b.after, b.last, r, points, stats);
        let mut id = msg.msg_id();
        if b.attempt > 0 {
            id.push_str(&format!("#{}", b.attempt));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        ctx.conn
            .js
            .publish_with_headers(g.stats_subject(), headers, msg.to_bytes()?.into())
            .await
            .map_err(|e| GroupError::new(format!("cannot publish statistics: {e}")))?
            .await
            .map_err(|e| GroupError::new(format!("statistics not stored: {e}")))?;
        ctx.stats.published.fetch_add(1, Ordering::Relaxed);
        ctx.stats
            .publish_ns
            .fetch_add(t_pub.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if b.revision.is_some() || b.attempt > 0 {
            ctx.stats.republished.fetch_add(1, Ordering::Relaxed);
        }
        b.revision = Some(r);
        b.published = Some(Instant::now());
    }
    Ok(())
}
