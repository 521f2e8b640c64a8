//! `GET /model` renders a model once per version.
//!
//! Rendering is not free: during the warm-up it fits the buffer on the fly
//! (seconds for a large K and d), and a large model is tens of megabytes of
//! JSON. So each snapshot is rendered at most once, by a task of its own
//! that every request for that snapshot waits on (a client that leaves
//! costs nothing more), renders run one at a time, and a render whose
//! snapshot was superseded before it started, with nobody waiting for it,
//! is skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};

use crate::pipeline::Snapshot;
use crate::report::inspect::render_json;

/// A rendering: the JSON text (final newline included), or why not.
pub type Rendered = Result<Arc<String>, String>;

/// The newest rendering asked for; see the module docs.
#[derive(Debug)]
pub struct ModelCache {
    newest: Mutex<Option<(u64, watch::Receiver<Option<Rendered>>)>>,
    one_at_a_time: Arc<Semaphore>,
    renders: Arc<AtomicU64>,
}

impl Default for ModelCache {
    fn default() -> Self {
        ModelCache {
            newest: Mutex::new(None),
            one_at_a_time: Arc::new(Semaphore::new(1)),
            renders: Arc::default(),
        }
    }
}

impl ModelCache {
    /// The rendering of `snap`: the cached one when `snap` is the snapshot
    /// rendered last, else a new one (started now, or joined if a request
    /// before this one started it).
    pub async fn get(&self, snap: Arc<Snapshot>) -> Rendered {
        let mut rx = {
            let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
            match &*newest {
                Some((seq, rx)) if *seq == snap.seq => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    *newest = Some((snap.seq, rx.clone()));
                    tokio::spawn(render(
                        snap,
                        tx,
                        self.one_at_a_time.clone(),
                        self.renders.clone(),
                    ));
                    rx
                }
            }
        };
        let done = match rx.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        done.unwrap_or_else(|| Err("the rendering was abandoned".into()))
    }

    /// Renderings made so far.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }
}

/// Renders `snap` into `tx` once the previous rendering is done, unless
/// nobody waits for it any more (neither the cache nor a request).
async fn render(
    snap: Arc<Snapshot>,
    tx: watch::Sender<Option<Rendered>>,
    gate: Arc<Semaphore>,
    renders: Arc<AtomicU64>,
) {
    let Ok(_permit) = gate.acquire_owned().await else {
        return;
    };
    if tx.receiver_count() == 0 {
        return;
    }
    renders.fetch_add(1, Ordering::Relaxed);
    let rendered = tokio::task::spawn_blocking(move || {
        let mut v = render_json(&snap.checkpoint, None);
        // The live alert threshold, which no checkpoint holds.
        if let (Some(t), Some(o)) = (snap.counts.alert_threshold, v.as_object_mut()) {
            o.insert("alert_threshold".into(), t.into());
        }
        serde_json::to_string_pretty(&v)
            .map(|mut text| {
                text.push('\n');
                Arc::new(text)
            })
            .map_err(|e| format!("cannot write JSON: {e}"))
    })
    .await
    .unwrap_or_else(|_| Err("the model could not be rendered".into()));
    tx.send_replace(Some(rendered));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{testdata, Params, StepwiseEm};
    use rand::SeedableRng;

    /// A snapshot numbered `seq` of a learner still in its warm-up (so
    /// every rendering fits the buffer on the fly, the costly case).
    fn snapshot(seq: u64) -> Arc<Snapshot> {
        let params = Params {
            warmup: 5000,
            ..Params::default()
        };
        let mut learner = StepwiseEm::new(params.check().unwrap(), 2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        learner
            .observe(&testdata::two_clusters().sample(&mut rng, 3000), None)
            .unwrap();
        Arc::new(Snapshot {
            seq,
            checkpoint: crate::report::test_checkpoint(learner),
            counts: Default::default(),
            positions: Default::default(),
            saves_due: 0,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_and_repeated_requests_cost_one_rendering_per_snapshot() {
        let cache = Arc::new(ModelCache::default());
        let first = snapshot(1);
        // 60 requests that leave before the rendering is done.
        let gone: Vec<_> = (0..60)
            .map(|_| {
                let (c, s) = (cache.clone(), first.clone());
                tokio::spawn(async move { c.get(s).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for g in &gone {
            g.abort();
        }
        let text = cache.get(first.clone()).await.unwrap();
        assert!(text.contains("\"fitted_on_the_fly\": true"), "{text}");
        assert_eq!(cache.get(first.clone()).await.unwrap(), text);
        assert_eq!(cache.renders(), 1);
        // A new snapshot is rendered anew, once.
        let second = snapshot(2);
        cache.get(second.clone()).await.unwrap();
        cache.get(second).await.unwrap();
        assert_eq!(cache.renders(), 2);
    }
}
