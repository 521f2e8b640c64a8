//! Checkpoints in the pipeline: what a run starts from (a new model or a
//! verified resume), and the writer task that saves snapshots through
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::console::Console;
use super::learn::Start;
use super::snapshot::{Durable, Snapshot, SnapshotReceiver};
use super::state::RunState;
use super::PipelineError;
use crate::checkpoint::{self, Checkpoint, CheckpointError, WriterLock};
use crate::config::{param_text, CheckpointPolicy, RunConfig, LEARNER_KEYS};
use crate::input::Columns;
use crate::model::{ComponentCount, Params};

/// Prepares the checkpoint file before the run: follows a symlinked path to
/// its target, takes the writer lock (returned: hold it until the final
/// save), removes stale temporary files, then either loads the model to
/// resume (checking it against the command line) or makes sure no existing
/// model would be replaced unless `--overwrite` asks for it.
/// Blocking; called through `spawn_blocking`.
pub(crate) fn prepare(
    config: &mut RunConfig,
    console: &Console,
) -> Result<(Start, Option<WriterLock>), PipelineError> {
    let Some(policy) = config.checkpoint.as_mut() else {
        return Ok((prepare_locked(config, console)?, None));
    };
    let target =
        checkpoint::resolve_symlinks(&policy.path).map_err(PipelineError::CheckpointNotWritable)?;
    // A resume through a link to nothing (a volume not mounted, a target
    // moved away) would start a new model where the old one should be.
    if policy.resume && target != policy.path && !target.exists() {
        return Err(PipelineError::DanglingLink {
            link: policy.path.clone(),
            target,
        });
    }
    if target != policy.path {
        console.line(&format!(
            "--checkpoint {} is a symbolic link: writing its target {} (older generations sit beside the target)",
            policy.path.display(),
            target.display()
        ));
        policy.path = target;
    }
    let path = policy.path.clone();
    check_dir(&path)?;
    // Found now rather than at the first save, maybe months from now.
    checkpoint::probe_writable(&path).map_err(PipelineError::CheckpointNotWritable)?;
    let lock = checkpoint::lock_writer(&path).map_err(PipelineError::CheckpointLocked)?;
    Ok((prepare_locked(config, console)?, Some(lock)))
}

/// Test-only fault injection, in every build (so the tests pass in
/// release too): sleeps for [`super::fault_ms`] of `var`, so the
/// integration tests can send signals while a checkpoint is being loaded
/// or saved. Unset, as in any real run, it does nothing.
fn fault_delay(var: &str) {
    if let Some(d) = super::fault_ms(var) {
        std::thread::sleep(d);
    }
}

/// Refuses a checkpoint path whose directory is missing or that names a
/// directory.
fn check_dir(path: &Path) -> Result<(), PipelineError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(PipelineError::CheckpointDir {
            path: path.to_path_buf(),
        });
    }
    if path.is_dir() || ends_with_separator(path) {
        return Err(PipelineError::CheckpointIsDir {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// [`prepare`] once the path is resolved and locked.
fn prepare_locked(config: &mut RunConfig, console: &Console) -> Result<Start, PipelineError> {
    let fresh = Start {
        learner: None,
        rejected: Default::default(),
        anomalies: 0,
        created_unix_ms: super::unix_ms(),
        sources: Vec::new(),
        columns: None,
        selection: None,
    };
    let Some(policy) = config.checkpoint.clone() else {
        console.line("no --checkpoint given: the model will not be saved");
        return Ok(fresh);
    };
    clean_stale(&policy.path, console);
    if !policy.resume {
        if policy.path.exists() {
            if !policy.overwrite {
                return Err(PipelineError::CheckpointExists { path: policy.path });
            }
            console.line(&overwrite_notice(&policy));
        } else if let Some((_, newest)) = checkpoint::generations(&policy.path).into_iter().next() {
            // A crash during rotation can leave PATH.1 without PATH: a new
            // model would later rotate the old one out.
            if !policy.overwrite {
                return Err(PipelineError::OnlyOlderGeneration {
                    path: policy.path,
                    newest,
                });
            }
            console.line(&format!(
                "{} is missing but {} exists: starting a new model (--overwrite)",
                policy.path.display(),
                newest.display()
            ));
        }
        return Ok(fresh);
    }
    fault_delay("EMSTREAM_FAULT_SLOW_LOAD_MS");
    let Some(ckpt) = load_newest(&policy, console)? else {
        console.line(&format!(
            "--resume: no checkpoint at {} yet, starting a new model",
            policy.path.display()
        ));
        return Ok(fresh);
    };
    check_resume(config, &policy.path, &ckpt, console)?;
    // The parser must keep the model's dimension.
    config.parser.dim = Some(ckpt.learner.dim());
    Ok(Start {
        rejected: ckpt.rejected.clone(),
        anomalies: ckpt.anomalies,
        created_unix_ms: ckpt.created_unix_ms,
        sources: ckpt.sources,
        columns: ckpt.columns,
        selection: ckpt.selection,
        learner: Some(ckpt.learner),
    })
}

/// Whether `path` ends with a separator (`models/`): it names a directory.
fn ends_with_separator(path: &Path) -> bool {
    path.as_os_str()
        .to_string_lossy()
        .chars()
        .next_back()
        .is_some_and(std::path::is_separator)
}

/// What `--overwrite` does to the existing file at `policy.path`.
fn overwrite_notice(policy: &CheckpointPolicy) -> String {
    let path = policy.path.display();
    if policy.keep == 0 {
        format!("{path} exists: starting a new model; the old one will be replaced")
    } else {
        format!("{path} exists: starting a new model; the old one will be kept as {path}.1")
    }
}

/// Removes temporary files left by an interrupted save.
fn clean_stale(path: &Path, console: &Console) {
    match checkpoint::clean_stale_temp(path) {
        Ok(removed) => {
            for p in removed {
                console.line(&format!(
                    "removed {} left by an interrupted checkpoint write",
                    p.display()
                ));
            }
        }
        Err(e) => console.line(&format!("could not clean stale temporary files: {e}")),
    }
}

/// Loads the newest good generation, announcing every refused file.
/// `None` when no generation exists at all.
fn load_newest(
    policy: &CheckpointPolicy,
    console: &Console,
) -> Result<Option<Checkpoint>, PipelineError> {
    match checkpoint::load_with_fallback(&policy.path) {
        Err(CheckpointError::NotFound { .. }) => Ok(None),
        Ok(loaded) => {
            for (_, why) in &loaded.refused {
                console.line(&format!("refused checkpoint {why}"));
            }
            if loaded.path_used != policy.path {
                console.line(&format!(
                    "resuming from the older generation {} ({} points seen)",
                    loaded.path_used.display(),
                    loaded.checkpoint.learner.counters().points_seen
                ));
            } else {
                console.line(&format!(
                    "resuming from {} ({} points seen)",
                    loaded.path_used.display(),
                    loaded.checkpoint.learner.counters().points_seen
                ));
            }
            Ok(Some(loaded.checkpoint))
        }
        Err(e) => Err(PipelineError::NoUsableCheckpoint(e)),
    }
}

/// Refuses a resume whose model disagrees with explicitly given K,
/// covariance type or dimension; reports other learner options given that
/// the checkpoint overrides.
fn check_resume(
    config: &RunConfig,
    path: &Path,
    ckpt: &Checkpoint,
    console: &Console,
) -> Result<(), PipelineError> {
    let saved: &Params = ckpt.learner.params();
    let given: &Params = &config.params;
    let mismatch = |key: &'static str, have: String, want: String| PipelineError::ResumeMismatch {
        path: path.to_path_buf(),
        key,
        checkpoint: have,
        given: want,
    };
    // K is the model's own (`auto` and `adapt_components` leave
    // params.components behind): a number given must be the model's K,
    // `auto` given must find a model whose K was chosen so.
    let model_k = ckpt.learner.n_components();
    let k_fits = match given.components {
        ComponentCount::Fixed(k) => {
            model_k.map_or(saved.components, ComponentCount::Fixed) == ComponentCount::Fixed(k)
        }
        ComponentCount::Auto => saved.components == ComponentCount::Auto,
    };
    if config.given.contains("components") && !k_fits {
        let have = match (saved.components, model_k) {
            (ComponentCount::Auto, Some(k)) => format!("auto (K = {k} now)"),
            (_, Some(k)) => k.to_string(),
            (c, None) => c.to_string(),
        };
        return Err(mismatch("components", have, given.components.to_string()));
    }
    // The adaptation's state belongs to the model: it is kept or not.
    if config.given.contains("adapt_components") && saved.adapt_components != given.adapt_components
    {
        return Err(mismatch(
            "adapt_components",
            saved.adapt_components.to_string(),
            given.adapt_components.to_string(),
        ));
    }
    if saved.adapt_components && config.score.as_ref().is_some_and(|s| s.responsibilities) {
        return Err(mismatch(
            "adapt_components",
            "true (K changes mid-stream)".into(),
            "--score-fields (needs a fixed K)".into(),
        ));
    }
    if config.given.contains("covariance") && saved.covariance != given.covariance {
        return Err(mismatch(
            "covariance",
            saved.covariance.to_string(),
            given.covariance.to_string(),
        ));
    }
    let dim = ckpt.learner.dim();
    let want_dim = config
        .parser
        .dim
        .or(config.parser.columns.as_ref().map(Columns::len))
        .or(config.parser.column_names.as_ref().map(Vec::len))
        .or(config.parser.fields.as_ref().map(Vec::len));
    if let Some(want) = want_dim {
        if want != dim {
            return Err(mismatch("dim", dim.to_string(), want.to_string()));
        }
    }
    for &key in LEARNER_KEYS {
        if matches!(key, "components" | "covariance" | "adapt_components")
            || !config.given.contains(key)
        {
            continue;
        }
        let (have, want) = (
            param_text(saved, key).unwrap_or_default(),
            param_text(given, key).unwrap_or_default(),
        );
        if have != want {
            console.line(&format!(
                "--resume keeps the checkpoint's {key} = {have}; the {key} = {want} given is ignored"
            ));
        }
    }
    Ok(())
}

/// Where checkpoints go and who hears about them.
#[derive(Clone)]
pub(crate) struct Saver {
    pub(crate) path: PathBuf,
    pub(crate) keep: usize,
    pub(crate) state: Arc<RunState>,
    /// The durability hook's sending side.
    pub(crate) durable: Arc<watch::Sender<Durable>>,
    /// The writer lock, checked before every save ([`WriterLock::ensure`]).
    pub(crate) lock: Option<Arc<std::sync::Mutex<WriterLock>>>,
}

impl Saver {
    /// Saves `snap` (blocking work off the reactor), counts the outcome and,
    /// on success, reports the snapshot durable.
    ///
    /// # Errors
    ///
    /// The save's error.
    pub(crate) async fn save(&self, snap: Arc<Snapshot>) -> Result<(), PipelineError> {
        let (p, keep, s) = (self.path.clone(), self.keep, snap.clone());
        let lock = self.lock.clone();
        let began = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            fault_delay("EMSTREAM_FAULT_SLOW_SAVE_MS");
            if let Some(lock) = &lock {
                lock.lock().unwrap_or_else(|e| e.into_inner()).ensure(&p)?;
            }
            checkpoint::save(&p, &s.checkpoint, keep)
        })
        .await
        .map_err(|_| PipelineError::Thread("checkpoint writer"))
        .and_then(|r| {
            r.map_err(|source| PipelineError::Save {
                path: self.path.clone(),
                source,
            })
        });
        let error = result.as_ref().err().map(|e| match e {
            PipelineError::Save { source, .. } => source.to_string(),
            other => other.to_string(),
        });
        self.state.checkpoint_finished(began.elapsed(), error);
        if result.is_ok() {
            self.durable.send_replace(Durable::of(&snap));
        }
        result
    }
}

/// First wait before a failed save is tried again; it doubles after every
/// failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Longest wait between two tries of a failing save.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Why the writer woke.
enum Wake {
    /// A new snapshot (or the learner is gone: `false`).
    Snapshot(bool),
    /// SIGHUP asked for a checkpoint.
    Request,
    /// The wait after a failed save is over.
    Retry,
}

/// Saves the newest snapshot every time a checkpoint has come due (its
/// [`Snapshot::saves_due`] passed the last one saved), and on every
/// [`RunState::request_checkpoint`] (SIGHUP) unless the newest snapshot is
/// on disk already, until the learner drops the sender. A failed save is
/// logged, counted and tried again, newest snapshot first, after 1 s, 2 s,
/// 4 s ... (at most [`RETRY_MAX`]) until one succeeds, whether or not
/// input arrives meanwhile: durability does not wait for the next point.
/// The previous file stays intact meanwhile (saves are atomic); the final
/// save decides.
pub(crate) async fn writer(mut rx: SnapshotReceiver, saver: Saver, console: Arc<Console>) {
    let mut saved_due = 0;
    // After a failure: when to try again, and the wait after that.
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;
    let mut failures = 0u64;
    loop {
        let retry_at = retry.map(|(at, _)| at);
        let wake = tokio::select! {
            changed = rx.changed() => Wake::Snapshot(changed.is_ok()),
            () = saver.state.checkpoint_requested() => Wake::Request,
            () = sleep_until_some(retry_at), if retry_at.is_some() => Wake::Retry,
        };
        let requested = match wake {
            Wake::Snapshot(false) => break,
            Wake::Snapshot(true) | Wake::Retry => false,
            Wake::Request => true,
        };
        let Some(snap) = rx.borrow_and_update().clone() else {
            if requested {
                console.line("checkpoint requested: no model yet, nothing to save");
            }
            continue;
        };
        let on_disk = saver.durable.borrow().seq == snap.seq;
        match wake {
            Wake::Request if on_disk => {
                console.line("checkpoint requested: the newest model is saved already");
                continue;
            }
            Wake::Retry if on_disk => {
                retry = None;
                continue;
            }
            Wake::Snapshot(_) if snap.saves_due <= saved_due && retry.is_none() => continue,
            // A pending retry waits its turn: a new snapshot alone does
            // not make the disk work again.
            Wake::Snapshot(_) if retry.is_some() => continue,
            _ => {}
        }
        saved_due = saved_due.max(snap.saves_due);
        let points = snap.checkpoint.learner.points_held();
        match saver.save(snap).await {
            Ok(()) => {
                if failures > 0 {
                    console.line(&format!(
                        "checkpoint written to {} after {failures} failed attempt(s) ({points} points)",
                        saver.path.display()
                    ));
                } else if requested {
                    console.line(&format!(
                        "checkpoint written on request: {} ({points} points)",
                        saver.path.display()
                    ));
                }
                failures = 0;
                retry = None;
            }
            Err(e) => {
                failures += 1;
                let wait = retry.map_or(RETRY_FIRST, |(_, next)| next);
                retry = Some((
                    tokio::time::Instant::now() + wait,
                    (wait * 2).min(RETRY_MAX),
                ));
                let why = match e {
                    PipelineError::Save { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                console.warn(&format!(
                    "checkpoint not written: {why}; trying again in {} s",
                    wait.as_secs()
                ));
            }
        }
    }
}

/// Sleeps until `at`; forever without one (its `select!` branch is then
/// disabled anyway).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_notice_says_what_happens_to_the_old_file() {
        let mut policy = CheckpointPolicy {
            path: "m.ckpt".into(),
            every: None,
            interval: None,
            keep: 2,
            resume: false,
            overwrite: true,
        };
        assert_eq!(
            overwrite_notice(&policy),
            "m.ckpt exists: starting a new model; the old one will be kept as m.ckpt.1"
        );
        policy.keep = 0;
        assert_eq!(
            overwrite_notice(&policy),
            "m.ckpt exists: starting a new model; the old one will be replaced"
        );
    }
}
