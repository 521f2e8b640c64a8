//! The live snapshot: what the learner publishes, at a bounded rate, for
//! every reader that must not touch the learner (the checkpoint writer, a
//! future admin server's `/model` and `/metrics`), and the durability hook
//! that says which snapshot is on disk.
//!
//! The learner thread is the only writer of the `watch`; readers take the
//! newest `Arc<Snapshot>` without ever blocking it. A snapshot is made from
//! one moment of the learner: its checkpoint's model, its counters and its
//! source positions all describe the same points.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::source::Position;
use super::state::LearnerCounts;
use crate::checkpoint::Checkpoint;
use crate::input::SourceId;

/// At most this often the learner publishes a snapshot while points keep
/// coming (also at every checkpoint due and at the end): often enough for a
/// live `/model`, rarely enough that the copy of the learner is noise next
/// to learning (a 2-D K=8 learner copies in microseconds).
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// One published state of the learner.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Counts up from 1 with every snapshot of the run; the durability
    /// hook reports these numbers.
    pub seq: u64,
    /// The learner's state as a checkpoint (model, statistics, counters of
    /// all runs), ready to be saved as is.
    pub checkpoint: Checkpoint,
    /// This run's counters at the same moment.
    pub counts: LearnerCounts,
    /// The last position of every stream whose points are in `checkpoint`
    /// (in its statistics or its pending partial batch).
    pub positions: BTreeMap<SourceId, Position>,
    /// How many checkpoints have been due so far: the writer saves a
    /// snapshot when this passes the last value it saved.
    pub saves_due: u64,
}

/// The receiving side of the live snapshot (`None` until the learner has a
/// model state to show).
pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// What is durably on disk: the newest snapshot saved, by its
/// [`Snapshot::seq`], and the source positions it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The snapshot's sequence number (0 before the first save).
    pub seq: u64,
    /// Its [`Snapshot::positions`]: a replayable source acknowledges its
    /// messages up to these.
    pub positions: BTreeMap<SourceId, Position>,
}

impl Durable {
    /// What saving `snap` made durable.
    pub fn of(snap: &Snapshot) -> Self {
        Durable {
            seq: snap.seq,
            positions: snap.positions.clone(),
        }
    }
}

/// The durability hook's receiving side: changes after every successful
/// checkpoint write, mid-stream and final.
pub type DurableReceiver = watch::Receiver<Durable>;
