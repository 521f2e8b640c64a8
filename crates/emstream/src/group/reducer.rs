//! `emstream reducer`: waits for the reducer lease, fits the first model
//! (or loads the committed one), then applies the statistics stream by the
//! rules of [`super::reduce`] and commits the model with compare-and-set.

use std::collections::BTreeSet;
use std::time::Instant;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::nats::{self, Conn};
use super::reduce::{Decision, Reduction};
use super::{GroupArgs, GroupError, GroupValue, ReducerArgs, StatsMsg, MODEL_KEY, REDUCER_KEY};
use crate::config::Config;
use crate::model::adapt::RecentPoints;
use crate::model::StepwiseEm;

/// How the reducer ended.
#[derive(Debug)]
pub struct ReducerSummary {
    /// Points in the model.
    pub points_seen: u64,
    /// The last committed revision.
    pub revision: u64,
    /// One line for the log.
    pub line: String,
}

fn say(msg: &str) {
    tracing::info!(target: "emstream", "{msg}");
}

/// Runs the reducer until the group is finished (`--stop-after`) or
/// `stop` is cancelled (then the model is committed first).
///
/// # Errors
///
/// Bad flags, a lost lease, an unreachable server, a model that cannot be
/// fitted or decoded.
pub async fn run(
    mut args: ReducerArgs,
    stop: CancellationToken,
) -> Result<ReducerSummary, GroupError> {
    args.group.check()?;
    let g = args.group.clone();
    let mut config = Config::default();
    std::mem::take(&mut args.learner).apply(&mut config, &mut BTreeSet::new());
    let params = config
        .params()
        .check()
        .map_err(|e| GroupError::new(e.to_string()))?;
    if params.adapt_components {
        return Err(GroupError::new(
            "--adapt-components: a group does not adapt K (give -k N, or -k auto to choose K at the warm-up)",
        ));
    }
    let conn = nats::connect(&g).await?;
    let holder = format!("reducer-{}", std::process::id());
    // The standby waits here.
    let mut lease = loop {
        if let Some(l) = nats::take(&conn.leases, REDUCER_KEY, &holder).await {
            break l;
        }
        tokio::select! {
            () = stop.cancelled() => return Err(GroupError::new("stopped while standing by")),
            () = tokio::time::sleep(g.ttl() / 4) => {}
        }
    };
    say(&format!("group {}: reducer lease taken", g.group));
    let lost = CancellationToken::new();
    let renewer = {
        let (leases, lost, holder, ttl) =
            (conn.leases.clone(), lost.clone(), holder.clone(), g.ttl());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !nats::renew(&leases, &mut lease, &holder, ttl).await {
                    lost.cancel();
                    return;
                }
            }
        })
    };
    let result = reduce_loop(&args, &g, &conn, params, &stop, &lost).await;
    renewer.abort();
    if result.is_ok() {
        let _ = conn.leases.delete(REDUCER_KEY).await;
    }
    result
}

/// The value to start from: the committed one, or a new model fitted on
/// the first points of the partitions.
async fn start(
    args: &ReducerArgs,
    conn: &Conn,
    params: crate::model::CheckedParams,
) -> Result<(GroupValue, u64), GroupError> {
    let g = &args.group;
    if let Some(found) = nats::load(&conn.models).await? {
        say(&format!(
            "group {}: continuing the model at revision {}",
            g.group, found.0.revision
        ));
        return Ok(found);
    }
    let warm = warm_up(args, conn, params).await?;
    match conn.models.create(MODEL_KEY, warm.to_bytes()?.into()).await {
        Ok(rev) => Ok((warm, rev)),
        // Another reducer committed first (it held the lease before us).
        Err(_) => nats::load(&conn.models)
            .await?
            .ok_or_else(|| GroupError::new("the group model vanished")),
    }
}

/// Reads about `warmup / N` points from the start of each partition
/// (whole messages, partition 0 first) and fits the first model on them by
/// batch EM, as a single run's warm-up does.
async fn warm_up(
    args: &ReducerArgs,
    conn: &Conn,
    params: crate::model::CheckedParams,
) -> Result<GroupValue, GroupError> {
    let g = &args.group;
    let n = g.partitions as usize;
    let want = params.warmup;
    let stream = conn.js.get_stream(&g.stream).await.map_err(|e| {
        GroupError::new(format!(
            "no stream {}: {e} (create it, or check --stream)",
            g.stream
        ))
    })?;
    let mut points = Vec::new();
    let mut watermarks = vec![0u64; n];
    let mut parser = super::PointParser::new(g.dim);
    say(&format!(
        "group {}: warm-up on the first {want} points of {n} partition(s)",
        g.group
    ));
    for k in 0..n {
        let quota = want / n + usize::from(k < want % n);
        if quota == 0 {
            continue;
        }
        let mut msgs = open(&stream, &g.partition_subject(k as u32), 0).await?;
        let mut got = 0;
        while got < quota {
            let m = msgs
                .next()
                .await
                .ok_or_else(|| GroupError::new("the partition's consumer ended"))?
                .map_err(|e| GroupError::new(format!("reading partition {k}: {e}")))?;
            let seq = m
                .info()
                .map_err(|e| GroupError::new(e.to_string()))?
                .stream_sequence;
            let before = points.len();
            parser.parse(&m.payload, &mut points);
            got += (points.len() - before) / g.dim;
            watermarks[k] = seq;
        }
    }
    let mut p = params.into_inner();
    // Whole messages: the warm-up is every point read, none left over.
    p.warmup = points.len() / g.dim;
    let params = p.check().map_err(|e| GroupError::new(e.to_string()))?;
    let mut learner = StepwiseEm::new(params, g.dim);
    learner
        .observe(&points, None)
        .map_err(|e| GroupError::new(format!("the warm-up fit failed: {e}")))?;
    if learner.mixture().is_none() {
        return Err(GroupError::new(
            "the warm-up points could not be fitted (too few distinct points): publish more varied points",
        ));
    }
    // The group's model travels in every commit: keep it small (no
    // reservoir of recent points: BIC/AIC are not shown for a group).
    let mut state = learner.state();
    state.recent = RecentPoints::new(g.dim, crate::model::online::recent_capacity(&state.params));
    let learner = StepwiseEm::from_state(state).map_err(|e| GroupError::new(e.to_string()))?;
    let model = super::reduce::new_model(learner, super::positions(g, &watermarks));
    let checkpoint =
        crate::checkpoint::to_bytes(&model).map_err(|e| GroupError::new(e.to_string()))?;
    Ok(GroupValue {
        version: super::WIRE_VERSION,
        revision: 0,
        stats_seq: 0,
        watermarks,
        turn: args.lockstep.then_some(0),
        tau: args.tau,
        finished: false,
        checkpoint,
    })
}

/// An ordered consumer of `subject` after stream sequence `after`.
pub(crate) async fn open(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    after: u64,
) -> Result<pull::Ordered, GroupError> {
    let deliver_policy = if after == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    };
    stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| GroupError::new(format!("cannot read {subject}: {e}")))?
        .messages()
        .await
        .map_err(|e| GroupError::new(format!("cannot read {subject}: {e}")))
}

/// Time spent per kind of work, for the summary (the per-message costs
/// of BENCHMARKS.md).
#[derive(Default)]
struct Costs {
    /// Decoding and deciding on (applying) statistics messages.
    apply: std::time::Duration,
    messages: u64,
    /// Encoding and committing the model (KV compare-and-set).
    commit: std::time::Duration,
    commits: u64,
}

impl Costs {
    fn line(&self) -> String {
        let per = |d: std::time::Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        format!(
            "{:.0} µs per statistics message ({}), {:.0} µs per commit ({})",
            per(self.apply, self.messages),
            self.messages,
            per(self.commit, self.commits),
            self.commits
        )
    }
}

/// Commits and writes the checkpoint file when due.
struct Committer<'a> {
    args: &'a ReducerArgs,
    conn: &'a Conn,
    kv_revision: u64,
    last_file: Instant,
    costs: Costs,
}

impl Committer<'_> {
    /// Commits the next revision with compare-and-set; `Err` when another
    /// reducer wrote the model since (this one is a zombie).
    async fn commit(&mut self, r: &mut Reduction, force_file: bool) -> Result<(), GroupError> {
        let t = Instant::now();
        let value = r.next_value(super::positions(&self.args.group, &r.watermarks))?;
        let rev = self
            .conn
            .models
            .update(MODEL_KEY, value.to_bytes()?.into(), self.kv_revision)
            .await
            .map_err(|e| {
                GroupError::new(
                    if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision {
                        format!("another reducer wrote the group model (compare-and-set failed: {e})")
                    } else {
                        format!(
                            "cannot commit the group model of {} bytes: {e} (a model larger than the server's max_payload, 1 MB by default, needs a larger one in nats-server's config)",
                            value.checkpoint.len()
                        )
                    },
                )
            })?;
        self.kv_revision = rev;
        self.costs.commit += t.elapsed();
        self.costs.commits += 1;
        let due = self.last_file.elapsed().as_secs_f64() >= self.args.checkpoint_interval;
        if let (Some(path), true) = (&self.args.checkpoint, force_file || due) {
            crate::checkpoint::save(path, &r.model, 1)
                .map_err(|e| GroupError::new(e.to_string()))?;
            self.last_file = Instant::now();
        }
        Ok(())
    }
}

async fn reduce_loop(
    args: &ReducerArgs,
    g: &GroupArgs,
    conn: &Conn,
    params: crate::model::CheckedParams,
    stop: &CancellationToken,
    lost: &CancellationToken,
) -> Result<ReducerSummary, GroupError> {
    let started = Instant::now();
    let mut failures = 0u32;
    'reload: loop {
        if failures > 0 {
            // The server restarts, or a zombie wrote: start again from the
            // committed value (what was not committed is replayed).
            if failures > 60 {
                return Err(GroupError::new(
                    "the NATS server stayed unreachable: exiting",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let (value, kv_revision) = match start(args, conn, params.clone()).await {
            Ok(v) => v,
            Err(e) if failures > 0 => {
                failures += 1;
                say(&format!("group {}: {e}; retrying", g.group));
                continue 'reload;
            }
            Err(e) => return Err(e),
        };
        if value.watermarks.len() != g.partitions as usize {
            return Err(GroupError::new(format!(
                "the group's model has {} partitions, --partitions says {}",
                value.watermarks.len(),
                g.partitions
            )));
        }
        let mut r = Reduction::from_value(&value, args.tau)?;
        let mut c = Committer {
            args,
            conn,
            kv_revision,
            last_file: Instant::now(),
            costs: Costs::default(),
        };
        if r.finished {
            return Ok(summary(&r, started, &c.costs));
        }
        let opened = match conn.js.get_stream(g.stats_stream()).await {
            Ok(stream) => open(&stream, &g.stats_subject(), r.stats_seq).await,
            Err(e) => Err(GroupError::new(e.to_string())),
        };
        let mut msgs = match opened {
            Ok(m) => m,
            Err(e) => {
                say(&format!("group {}: {e}; retrying", g.group));
                failures += 1;
                continue 'reload;
            }
        };
        let mut dirty = 0usize;
        loop {
            if args.stop_after.is_some_and(|n| r.points_seen() >= n) {
                r.finished = true;
                c.commit(&mut r, true).await?;
                say(&format!(
                    "group {}: {} points learned: finished",
                    g.group,
                    r.points_seen()
                ));
                return Ok(summary(&r, started, &c.costs));
            }
            // Wait only when nothing is waiting to be committed.
            let next = if dirty > 0 {
                msgs.next().now_or_never()
            } else {
                tokio::select! {
                    m = msgs.next() => Some(m),
                    () = stop.cancelled() => None,
                    () = lost.cancelled() => None,
                }
            };
            if lost.is_cancelled() {
                return Err(GroupError::new(
                    "lost the reducer lease (another reducer took over): exiting",
                ));
            }
            let Some(next) = next else {
                if dirty > 0 {
                    if let Err(e) = c.commit(&mut r, false).await {
                        say(&format!("group {}: {e}; reloading", g.group));
                        failures += 1;
                        continue 'reload;
                    }
                    dirty = 0;
                    continue;
                }
                // Stopped.
                c.commit(&mut r, true).await?;
                return Ok(summary(&r, started, &c.costs));
            };
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    say(&format!(
                        "group {}: reading statistics: {e}; reloading",
                        g.group
                    ));
                    failures += 1;
                    continue 'reload;
                }
                None => {
                    failures += 1;
                    continue 'reload;
                }
            };
            failures = 0;
            let seq = m
                .info()
                .map_err(|e| GroupError::new(e.to_string()))?
                .stream_sequence;
            let t = Instant::now();
            let decision = match StatsMsg::from_bytes(&m.payload) {
                Ok(s) => r.offer(seq, &s),
                Err(e) => {
                    say(&format!("statistics message {seq} skipped: {e}"));
                    r.stats_seq = seq;
                    Decision::BadPartition
                }
            };
            c.costs.apply += t.elapsed();
            c.costs.messages += 1;
            dirty += 1;
            let applied = decision == Decision::Applied;
            // With τ = 0 (and in lockstep) the next batch needs this model.
            let now = applied && (r.turn.is_some() || r.tau == 0);
            if now || dirty >= args.max_per_commit {
                if let Err(e) = c.commit(&mut r, false).await {
                    say(&format!("group {}: {e}; reloading", g.group));
                    failures += 1;
                    continue 'reload;
                }
                dirty = 0;
            }
        }
    }
}

fn summary(r: &Reduction, started: Instant, costs: &Costs) -> ReducerSummary {
    let t = &r.tally;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    ReducerSummary {
        points_seen: r.points_seen(),
        revision: r.revision,
        line: format!(
            "{} points learned, revision {}; statistics applied {}, duplicates {}, overlaps {}, stale {}, out of turn {}, failed {}; {:.0} points/s; {}",
            r.points_seen(),
            r.revision,
            t.applied,
            t.duplicates,
            t.overlaps,
            t.stale,
            t.not_turn,
            t.failed,
            r.points_seen() as f64 / secs,
            costs.line()
        ),
    }
}
