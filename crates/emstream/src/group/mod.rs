//! A group of emstream processes learning one model from a partitioned
//! NATS JetStream stream, exactly once, surviving the loss of any member.
//!
//! ## Roles
//!
//! - The input is one stream whose subjects `PREFIX.p0 .. PREFIX.p<N-1>`
//!   are the partitions: each is an ordered, replayable sequence.
//! - **Workers** ([`worker::run`]) are stateless: each holds leases on some
//!   partitions (keys `p<k>` of the lease bucket, taken with create and
//!   renewed with compare-and-set; a dead worker's keys expire with the
//!   bucket's max age), watches the group's model, replays each owned
//!   partition from the model's watermark for it, computes the E-step
//!   statistics of each mini-batch against the newest model revision and
//!   publishes them to the statistics stream ([`StatsMsg`]) with the
//!   deduplication id `p<k>:<after>-<last>@<revision>`.
//! - **One reducer** ([`reducer::run`], a standby waits on the `reducer`
//!   lease) fits the first model by batch EM on the first points of the
//!   partitions, then applies the statistics in stream order by the rules
//!   of [`reduce::Reduction`] and commits model, watermarks and the last
//!   statistics sequence as one KV value ([`GroupValue`]) with
//!   compare-and-set on its revision, so a zombie reducer's late write
//!   fails.
//!
//! ## Names
//!
//! For group `G`: the model bucket `emstream_G` (key `model`), the lease
//! bucket `emstream_G_leases` (max age = the lease TTL), the statistics
//! stream `emstream_G_stats` on subject `emstream.G.stats`.
//!
//! The group's checkpoint is an ordinary checkpoint ([`crate::checkpoint`],
//! format 3) inside the KV value; the partition watermarks are also its
//! replay positions (`jetstream:STREAM:PREFIX.p<k>`), so `inspect` and
//! `score` read it like a file.

pub mod reduce;
pub mod reducer;
pub mod worker;

mod nats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint, SourcePosition};
use crate::config::LearnerArgs;
use crate::model::{BatchStats, MixtureStats};

pub use nats::fetch_checkpoint;

/// The key of the model in the model bucket.
pub const MODEL_KEY: &str = "model";

/// The key of the reducer's lease.
pub const REDUCER_KEY: &str = "reducer";

/// Version of [`GroupValue`] and [`StatsMsg`] on the wire.
pub const WIRE_VERSION: u32 = 1;

/// How long JetStream remembers a statistics message id (deduplication).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Flags every group member shares.
#[derive(clap::Args, Debug, Clone)]
pub struct GroupArgs {
    /// NATS server: nats://HOST:PORT.
    #[arg(long, value_name = "URL", env = "EMSTREAM_NATS")]
    pub nats: String,
    /// The group's name (letters, digits, - and _): names its buckets and statistics stream.
    #[arg(long, value_name = "NAME")]
    pub group: String,
    /// The input JetStream stream.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// Subject prefix of the partitions: PREFIX.p0 .. PREFIX.p(N-1).
    #[arg(long, value_name = "PREFIX")]
    pub subject_prefix: String,
    /// Number of partitions.
    #[arg(long, value_name = "N")]
    pub partitions: u32,
    /// Dimension of the points (CSV or whitespace-separated lines in the message bodies).
    #[arg(long, value_name = "D")]
    pub dim: usize,
    /// Seconds a lease lives without renewal (a dead member's partitions or role are taken over after it).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub lease_ttl: f64,
}

/// `emstream reducer` flags.
#[derive(clap::Args, Debug)]
pub struct ReducerArgs {
    /// Group flags.
    #[command(flatten)]
    pub group: GroupArgs,
    /// Learner options (used for a new group's model; a running group keeps its own).
    #[command(flatten)]
    pub learner: LearnerArgs,
    /// Refuse statistics computed against a model more than TAU revisions (applied batches) old; the
    /// worker recomputes them. 0: every batch against the model it is blended into.
    #[arg(long, value_name = "TAU", default_value_t = 8)]
    pub tau: u64,
    /// Lockstep: one batch per partition in turn (p0, p1, ...), each against the newest model; the
    /// same model as one process fed that order, whatever the number of workers (slow; for checks).
    #[arg(long)]
    pub lockstep: bool,
    /// Also write the group's model to this checkpoint file (at every --checkpoint-interval and at the end).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Seconds between checkpoint files.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub checkpoint_interval: f64,
    /// Finish the group once the model has learned N points (workers then exit too).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Most statistics messages applied between two commits of the model.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_per_commit: usize,
}

/// `emstream worker` flags.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Group flags.
    #[command(flatten)]
    pub group: GroupArgs,
    /// Mini-batches per partition published ahead of the model's watermark.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub depth: usize,
    /// Milliseconds a partial mini-batch waits for more points before it is sent as it is.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub linger_ms: u64,
    /// This worker's name in the lease bucket (default: random).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Threads of the E-step.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
}

/// A group member's failure, with the message to print.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GroupError(pub String);

impl GroupError {
    fn new(msg: impl Into<String>) -> Self {
        GroupError(msg.into())
    }
}

impl GroupArgs {
    /// Checks the names and numbers.
    ///
    /// # Errors
    ///
    /// A message naming the flag to change.
    pub fn check(&self) -> Result<(), GroupError> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !ok(&self.group) {
            return Err(GroupError::new(format!(
                "--group {:?}: use letters, digits, - and _ only",
                self.group
            )));
        }
        if self.partitions == 0 {
            return Err(GroupError::new("--partitions must be at least 1"));
        }
        if self.dim == 0 {
            return Err(GroupError::new("--dim must be at least 1"));
        }
        if !(self.lease_ttl >= 1.0 && self.lease_ttl <= 3600.0) {
            return Err(GroupError::new("--lease-ttl: give 1 to 3600 seconds"));
        }
        if self.subject_prefix.is_empty() || self.subject_prefix.contains([' ', '*', '>']) {
            return Err(GroupError::new(
                "--subject-prefix: give a subject without blanks or wildcards",
            ));
        }
        Ok(())
    }

    /// The model bucket.
    pub fn model_bucket(&self) -> String {
        format!("emstream_{}", self.group)
    }

    /// The lease bucket.
    pub fn lease_bucket(&self) -> String {
        format!("emstream_{}_leases", self.group)
    }

    /// The statistics stream.
    pub fn stats_stream(&self) -> String {
        format!("emstream_{}_stats", self.group)
    }

    /// The statistics subject.
    pub fn stats_subject(&self) -> String {
        format!("emstream.{}.stats", self.group)
    }

    /// Partition `k`'s subject.
    pub fn partition_subject(&self, k: u32) -> String {
        format!("{}.p{k}", self.subject_prefix)
    }

    /// Partition `k`'s replay position key in the group's checkpoint.
    pub fn position_key(&self, k: u32) -> String {
        format!("jetstream:{}:{}", self.stream, self.partition_subject(k))
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl)
    }
}

/// The group's checkpoint as one KV value: the model with every
/// partition's watermark and the last statistics sequence applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupValue {
    /// [`WIRE_VERSION`].
    pub version: u32,
    /// The model's revision: 0 for the warm-up fit, one more per batch
    /// applied.
    pub revision: u64,
    /// Last statistics stream sequence handled (applied or refused).
    pub stats_seq: u64,
    /// Per partition, the stream sequence of the last message learned.
    pub watermarks: Vec<u64>,
    /// Lockstep: the partition whose batch is applied next.
    pub turn: Option<u32>,
    /// The reducer's τ (workers recompute what it would refuse).
    pub tau: u64,
    /// The group has learned `--stop-after` points: members exit.
    pub finished: bool,
    /// The model: a checkpoint file image ([`checkpoint::to_bytes`]).
    pub checkpoint: Vec<u8>,
}

impl GroupValue {
    /// Encodes for the KV store.
    ///
    /// # Errors
    ///
    /// When serialisation fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GroupError> {
        postcard::to_stdvec(self).map_err(|e| GroupError::new(format!("cannot encode: {e}")))
    }

    /// Decodes a KV value.
    ///
    /// # Errors
    ///
    /// When the bytes are not a group value of this version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GroupError> {
        let v: GroupValue = postcard::from_bytes(bytes)
            .map_err(|e| GroupError::new(format!("not an emstream group model: {e}")))?;
        if v.version != WIRE_VERSION {
            return Err(GroupError::new(format!(
                "group model of version {}, this emstream reads {WIRE_VERSION}",
                v.version
            )));
        }
        Ok(v)
    }

    /// The model inside, checked as a checkpoint file is.
    ///
    /// # Errors
    ///
    /// The checkpoint's failed check.
    pub fn model(&self) -> Result<Checkpoint, GroupError> {
        checkpoint::from_bytes(Path::new("<group model>"), &self.checkpoint)
            .map_err(|e| GroupError::new(e.to_string()))
    }
}

/// Replay positions of `watermarks` as checkpoint sources.
pub fn positions(args: &GroupArgs, watermarks: &[u64]) -> Vec<SourcePosition> {
    watermarks
        .iter()
        .enumerate()
        .map(|(k, &w)| SourcePosition {
            source: args.position_key(k as u32),
            position: w,
        })
        .collect()
}

/// One worker's statistics of one mini-batch of one partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsMsg {
    /// [`WIRE_VERSION`].
    pub version: u32,
    /// The partition.
    pub partition: u32,
    /// The stream sequence of the partition's message before the batch
    /// (the watermark it continues; 0 at the start).
    pub after: u64,
    /// The stream sequence of the batch's last message.
    pub last: u64,
    /// The model revision the statistics were computed against.
    pub revision: u64,
    /// Points read (usable or not).
    pub points: u64,
    /// The E-step statistics.
    pub stats: MixtureStats,
    /// Sum of the points' log-likelihoods.
    pub ll_sum: f64,
    /// Gross outliers left out.
    pub outliers: u64,
    /// The worst explained point.
    pub worst: Vec<f64>,
    /// Its log-likelihood.
    pub worst_ll: f64,
}

impl StatsMsg {
    /// The message for `batch` of `partition`.
    pub fn new(
        partition: u32,
        after: u64,
        last: u64,
        revision: u64,
        points: u64,
        b: BatchStats,
    ) -> Self {
        StatsMsg {
            version: WIRE_VERSION,
            partition,
            after,
            last,
            revision,
            points,
            stats: b.stats,
            ll_sum: b.ll_sum,
            outliers: b.outliers,
            worst: b.worst,
            worst_ll: b.worst_ll,
        }
    }

    /// The statistics as the learner takes them.
    pub fn batch(&self) -> BatchStats {
        BatchStats {
            stats: self.stats.clone(),
            ll_sum: self.ll_sum,
            outliers: self.outliers,
            worst: self.worst.clone(),
            worst_ll: self.worst_ll,
        }
    }

    /// The deduplication id (`Nats-Msg-Id`): partition, sequence range and
    /// revision, so the same batch recomputed against a newer model is a
    /// new message, and the same batch against the same model (a retry, or
    /// a zombie worker) is dropped by JetStream.
    pub fn msg_id(&self) -> String {
        format!(
            "p{}:{}-{}@{}",
            self.partition, self.after, self.last, self.revision
        )
    }

    /// Encodes.
    ///
    /// # Errors
    ///
    /// When serialisation fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GroupError> {
        postcard::to_stdvec(self).map_err(|e| GroupError::new(format!("cannot encode: {e}")))
    }

    /// Decodes.
    ///
    /// # Errors
    ///
    /// When the bytes are not statistics of this version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GroupError> {
        let m: StatsMsg = postcard::from_bytes(bytes)
            .map_err(|e| GroupError::new(format!("not emstream statistics: {e}")))?;
        if m.version != WIRE_VERSION {
            return Err(GroupError::new(format!(
                "statistics of version {}, this emstream reads {WIRE_VERSION}",
                m.version
            )));
        }
        Ok(m)
    }
}

/// Parses message bodies (CSV or whitespace-separated lines) into points.
pub struct PointParser {
    parser: crate::input::Parser,
    batch: crate::input::Batch,
    /// Records rejected so far.
    pub rejected: u64,
}

impl PointParser {
    /// A parser of points of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        PointParser {
            parser: crate::input::Parser::new(crate::input::ParserConfig {
                dim: Some(dim),
                ..Default::default()
            }),
            batch: crate::input::Batch::default(),
            rejected: 0,
        }
    }

    /// Appends the points of `body` to `out`.
    pub fn parse(&mut self, body: &[u8], out: &mut Vec<f64>) {
        let mut bytes = body.to_vec();
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        let chunk = crate::input::Chunk {
            source: 0,
            first_line: 1,
            bytes,
            too_long: Vec::new(),
            last: false,
        };
        self.batch.values.clear();
        self.batch.rejected = Default::default();
        self.batch.errors.clear();
        self.batch.headers.clear();
        self.parser.parse(&chunk, &mut self.batch);
        self.rejected += self.batch.rejected.total();
        out.extend_from_slice(&self.batch.values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_bodies_parse_into_points_and_bad_lines_are_counted() {
        let mut p = PointParser::new(2);
        let mut out = Vec::new();
        p.parse(b"1,2\n3,4", &mut out);
        p.parse(b"5,x\n6,7\n", &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 6.0, 7.0]);
        assert_eq!(p.rejected, 1);
    }

    #[test]
    fn values_round_trip_and_other_bytes_are_refused() {
        let v = GroupValue {
            version: WIRE_VERSION,
            revision: 3,
            stats_seq: 9,
            watermarks: vec![1, 2],
            turn: Some(1),
            tau: 8,
            finished: false,
            checkpoint: vec![1, 2, 3],
        };
        assert_eq!(GroupValue::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        assert!(GroupValue::from_bytes(b"hello").is_err());
        let old = GroupValue { version: 0, ..v };
        let e = GroupValue::from_bytes(&old.to_bytes().unwrap()).unwrap_err();
        assert!(e.0.contains("version 0"), "{e}");
    }
}
