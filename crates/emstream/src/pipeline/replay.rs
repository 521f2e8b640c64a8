//! What replayable (log) sources share with the rest of the run: which
//! streams are replayable and under what key their position is saved in a
//! checkpoint, how far each stream's log reaches (its head) against how far
//! the model has learned it (its lag), reconnects, messages lost to a
//! retention gap, and when a record last arrived (`--stop-when-idle`).
//!
//! It lives in [`RunState`](super::RunState) ([`RunState::replay`](super::RunState::replay)),
//! so the summary and an admin server's `/metrics` read it like any counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::source::Position;
use crate::checkpoint::SourcePosition;
use crate::input::SourceId;

/// One replayable stream, as `/metrics` or the summary shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLag {
    /// The key its position is saved under in a checkpoint
    /// (`jetstream:STREAM`).
    pub key: String,
    /// The last sequence the log is known to hold (its head).
    pub head: Position,
    /// The last sequence whose points are in the model's newest snapshot.
    pub learned: Position,
}

impl StreamLag {
    /// Messages in the log the model has not learned yet.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.learned)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Replay {
    base: Instant,
    streams: Mutex<BTreeMap<SourceId, StreamLag>>,
    reconnects: AtomicU64,
    gap_messages: AtomicU64,
    retained_skipped: AtomicU64,
    /// Milliseconds after `base` when the last chunk arrived or a source
    /// connected, plus one; 0 before either.
    last_record_ms: AtomicU64,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            base: Instant::now(),
            streams: Mutex::new(BTreeMap::new()),
            reconnects: AtomicU64::new(0),
            gap_messages: AtomicU64::new(0),
            retained_skipped: AtomicU64::new(0),
            last_record_ms: AtomicU64::new(0),
        }
    }
}

impl Replay {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SourceId, StreamLag>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers stream `id` as replayable: its position is saved under
    /// `key` in every checkpoint; `learned` is where the model stands (the
    /// resumed position, 0 for a new model).
    pub(crate) fn register(&self, id: SourceId, key: String, learned: Position) {
        self.lock().insert(
            id,
            StreamLag {
                key,
                head: learned,
                learned,
            },
        );
    }

    /// The log of stream `id` (of its messages the source reads) ends at
    /// sequence `head`: the newest answer wins, since with a subject filter
    /// an upper bound (the whole stream's last sequence) is replaced by the
    /// filter's own last message once the consumer has nothing pending;
    /// never below the learned position.
    #[cfg_attr(not(any(feature = "mqtt", feature = "nats")), allow(dead_code))]
    pub(crate) fn set_head(&self, id: SourceId, head: Position) {
        if let Some(s) = self.lock().get_mut(&id) {
            s.head = head.max(s.learned);
        }
    }

    /// The learner's newest snapshot holds these positions.
    pub(crate) fn set_learned(&self, positions: &BTreeMap<SourceId, Position>) {
        let mut streams = self.lock();
        for (id, s) in streams.iter_mut() {
            if let Some(&p) = positions.get(id) {
                s.learned = p;
                s.head = s.head.max(p);
            }
        }
    }

    /// The replayable streams with their head, learned position and lag.
    pub fn streams(&self) -> Vec<StreamLag> {
        self.lock().values().cloned().collect()
    }

    /// The checkpoint's source positions: those of `resumed` (an earlier
    /// run's) updated by the replayable streams' `positions` now.
    pub(crate) fn checkpoint_positions(
        &self,
        resumed: &[SourcePosition],
        positions: &BTreeMap<SourceId, Position>,
    ) -> Vec<SourcePosition> {
        let mut out: BTreeMap<String, Position> = resumed
            .iter()
            .map(|s| (s.source.clone(), s.position))
            .collect();
        for (id, s) in self.lock().iter() {
            if let Some(&p) = positions.get(id) {
                out.insert(s.key.clone(), p);
            }
        }
        out.into_iter()
            .map(|(source, position)| SourcePosition { source, position })
            .collect()
    }

    /// Counts a reconnection to a broker.
    #[cfg_attr(not(any(feature = "mqtt", feature = "nats")), allow(dead_code))]
    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Reconnections to brokers over the run.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Counts `n` messages skipped because the log no longer held them
    /// (`--allow-gap`).
    #[cfg_attr(not(any(feature = "mqtt", feature = "nats")), allow(dead_code))]
    pub(crate) fn gap(&self, n: u64) {
        self.gap_messages.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages lost to a retention gap over the run.
    pub fn gap_messages(&self) -> u64 {
        self.gap_messages.load(Ordering::Relaxed)
    }

    /// Counts an MQTT retained message that was not learned (the broker
    /// sends it again on every subscription).
    #[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
    pub(crate) fn retained_skipped(&self) {
        self.retained_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// MQTT retained messages skipped over the run.
    pub fn retained_skipped_messages(&self) -> u64 {
        self.retained_skipped.load(Ordering::Relaxed)
    }

    /// A chunk of records arrived now, or a source connected (to its
    /// broker, or a client to the listener), or a fit started or ended.
    pub(crate) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.last_record_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last chunk arrived or source connected; `None`
    /// before either (a run still waiting for its broker or its first
    /// client is not idle yet).
    pub fn idle_for(&self) -> Option<Duration> {
        let last = self.last_record_ms.load(Ordering::Relaxed).checked_sub(1)?;
        Some(
            self.base
                .elapsed()
                .saturating_sub(Duration::from_millis(last)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_positions_update_resumed_ones_by_key_only_for_replayable_streams() {
        let r = Replay::default();
        r.register(3, "jetstream:S".into(), 10);
        let resumed = vec![
            SourcePosition {
                source: "jetstream:S".into(),
                position: 10,
            },
            SourcePosition {
                source: "jetstream:OTHER".into(),
                position: 7,
            },
        ];
        // Stream 0 (stdin) is not replayable: its line count is not saved.
        let now = BTreeMap::from([(0, 99), (3, 25)]);
        let got = r.checkpoint_positions(&resumed, &now);
        assert_eq!(
            got,
            vec![
                SourcePosition {
                    source: "jetstream:OTHER".into(),
                    position: 7
                },
                SourcePosition {
                    source: "jetstream:S".into(),
                    position: 25
                },
            ]
        );
        r.set_head(3, 40);
        r.set_learned(&now);
        let s = &r.streams()[0];
        assert_eq!((s.head, s.learned, s.lag()), (40, 25, 15));
        // A filter's own last message replaces the stream's last sequence,
        // but a head never falls below what the model learned.
        r.set_head(3, 30);
        assert_eq!(r.streams()[0].lag(), 5);
        r.set_head(3, 20);
        assert_eq!(r.streams()[0].lag(), 0);
    }

    #[test]
    fn idle_time_starts_at_the_first_record_and_restarts_at_every_one() {
        let r = Replay::default();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(r.idle_for(), None);
        r.touch();
        std::thread::sleep(Duration::from_millis(30));
        let before = r.idle_for().unwrap();
        assert!(before >= Duration::from_millis(30), "{before:?}");
        r.touch();
        assert!(r.idle_for().unwrap() < before);
    }
}
