//! Async wiring only: sources, parser stage, learner thread, checkpoint
//! writer, score sink, shutdown. No maths here.
//!
//! ```text
//!  reader thread (stdin/file) ─────┐
//!  TCP connection tasks (framing) ─┴─► CHUNK_QUEUE ─► parser thread
//!      ─► BATCH_QUEUE ─► learner thread ─┬─► watch<Arc<Checkpoint>> ─► checkpoint writer
//!                                        └─► SCORE_QUEUE ─► score sink thread ─► stdout
//! ```
//!
//! Shutdown: one [`CancellationToken`] is watched by the sources only. A
//! signal (the `shutdown` future given to [`run`]), a closed stdout under
//! `--score`, or a bad record under `--on-error fail` cancels it; the sources
//! stop and drop their senders; every later stage ends when its input
//! channel closes, after draining it; the learner flushes its partial batch,
//! and the final checkpoint is written last.

mod ckpt;
mod console;
mod learn;
mod parse;
mod score;
mod source;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use console::reason_text;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::{RunConfig, Source};
use crate::input::{Chunk, ParseError, RejectCounts, RejectReason};
use crate::model::LearnError;
use console::{Console, Metrics, SourceNames};
use learn::{Due, Learner, ScoreLink};

/// Bytes asked of stdin or a file per read, into one reusable buffer: large
/// enough that one read usually completes a chunk and the reader thread
/// stays nearly idle.
pub const READ_BUF_BYTES: usize = 128 << 10;

/// Target size of a chunk of whole lines from stdin or a file: large chunks
/// keep the per-chunk costs (channel hand-over, batch bookkeeping) far below
/// the per-point costs; 128 KiB of 2-D CSV is about 6,000 points.
pub const CHUNK_BYTES: usize = 128 << 10;

/// Bytes asked of a TCP connection per read.
pub const TCP_READ_BYTES: usize = 16 << 10;

/// Target chunk size of a TCP connection: smaller than for stdin because up
/// to `max_connections` of them are buffered at once.
pub const TCP_CHUNK_BYTES: usize = 64 << 10;

/// How long a source waits for more bytes before handing on the whole
/// lines it has buffered: long enough that a fast writer's small writes are
/// gathered into large chunks, short enough that a slow feed is learned from
/// promptly.
pub const IDLE_FLUSH: Duration = Duration::from_millis(10);

/// How often an idle stdin/file reader thread looks at the cancellation
/// token.
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Chunks waiting for the parser, from all sources together. Eight
/// (at most 1 MiB) absorb bursts from several connections and scheduling
/// jitter; a full queue makes the sources wait, so memory stays flat.
pub const CHUNK_QUEUE: usize = 8;

/// Batches between the parser and the learner thread. Each core can run a
/// little ahead of the other without either waiting on jitter; a batch of a
/// 128 KiB chunk is at most ~0.5 MiB of f64s.
pub const BATCH_QUEUE: usize = 4;

/// Used batches handed back to the parser for reuse (their allocations);
/// one more than can be in flight, so reuse never fails in steady state.
pub const BATCH_RECYCLE: usize = BATCH_QUEUE + 2;

/// Filled score buffers waiting for the score sink: enough to ride out a
/// slow reader of stdout for a moment, after which the learner waits.
pub const SCORE_QUEUE: usize = 4;

/// Buffer of the score sink's writer to stdout.
pub const SCORE_OUT_BYTES: usize = 256 << 10;

/// Bad records reported one by one on stderr; the rest are only counted.
pub const REPORTED_RECORDS: usize = 5;

/// How often the progress line is redrawn on a terminal.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every source ended.
    EndOfInput,
    /// The shutdown future completed (SIGINT or SIGTERM in the binary).
    Signal,
    /// stdout was closed while writing scores.
    OutputClosed,
    /// A bad record under `--on-error fail`, a read or write error.
    Failed,
}

/// The run's stop request: the reason first given, and the token the
/// sources watch.
#[derive(Debug)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Stop {
    /// Asks the sources to stop (the first reason given is kept).
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    fn reason(&self) -> StopReason {
        self.reason.get().copied().unwrap_or(StopReason::EndOfInput)
    }
}

/// What a run did, for the summary line.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Points learned from in this run.
    pub points: u64,
    /// Points the model has learned from over all runs (resumes included).
    pub points_total: u64,
    /// Records rejected in this run, by reason.
    pub rejected: RejectCounts,
    /// Average test-then-train log-likelihood of this run's points, once a
    /// model existed to score them.
    pub avg_log_lik: Option<f64>,
    /// Points flagged as anomalies in this run.
    pub anomalies: u64,
    /// Points of this run left out of the statistics as gross outliers
    /// (scored, but not learned from).
    pub outliers: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Why the run ended.
    pub stop: StopReason,
    /// The checkpoint written at the end, if any.
    pub checkpoint: Option<PathBuf>,
}

impl RunSummary {
    /// Records rejected in this run.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.by_reason.values().sum()
    }

    /// Points learned per second of wall time.
    pub fn points_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.points as f64 / s
        } else {
            0.0
        }
    }

    /// The one-line summary: points used, records rejected, average
    /// log-likelihood, points/s.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} points used, {} records rejected, average log-likelihood {}, {} points/s",
            self.points,
            self.rejected_total(),
            console::fmt_ll(self.avg_log_lik),
            console::human_rate(self.points_per_sec()),
        );
        if self.outliers > 0 {
            s.push_str(&format!(", {} gross outliers ignored", self.outliers));
        }
        if self.anomalies > 0 {
            s.push_str(&format!(", {} anomalies", self.anomalies));
        }
        s
    }

    /// The rejects by reason, e.g. `rejected: 3 not a number, 1 line too
    /// long`; `None` when nothing was rejected.
    pub fn rejected_line(&self) -> Option<String> {
        if self.rejected.by_reason.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .rejected
            .by_reason
            .iter()
            .map(|(r, n)| format!("{n} {}", reason_text(*r)))
            .collect();
        Some(format!("rejected records: {}", parts.join(", ")))
    }
}

/// Why a run failed; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input file could not be opened.
    #[error("cannot open input {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading a source failed.
    #[error("reading {name} failed: {source}")]
    Read {
        /// The source.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TCP address could not be bound.
    #[error("cannot listen on {addr}: {source} (choose another --listen address or port)")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A checkpoint exists and neither `--resume` nor `--overwrite` was given.
    #[error("{path} already exists: add --resume to continue that model, --overwrite to start a new one (the old file is kept as {path}.1), or give another --checkpoint path", path = path.display())]
    CheckpointExists {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The checkpoint's directory does not exist.
    #[error("the directory of --checkpoint {path} does not exist: create it or choose another path", path = path.display())]
    CheckpointDir {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// `--checkpoint` names a directory.
    #[error("--checkpoint {path} is a directory: give the path of a file, e.g. {example}", path = path.display(), example = path.join("model.ckpt").display())]
    CheckpointIsDir {
        /// The path given.
        path: PathBuf,
    },
    /// No file can be created in the checkpoint's directory.
    #[error("cannot write checkpoints there: {0}")]
    CheckpointNotWritable(CheckpointError),
    /// `--resume` found checkpoint files but none was usable.
    #[error("cannot resume: {0}")]
    NoUsableCheckpoint(CheckpointError),
    /// The checkpoint's model disagrees with the command line.
    #[error("cannot resume {path}: it holds a model with {key} = {checkpoint}, but {key} = {given} was given; drop that option to continue the model, or use a new --checkpoint path (the checkpoint was not changed)", path = path.display())]
    ResumeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The option that differs.
        key: &'static str,
        /// Its value in the checkpoint.
        checkpoint: String,
        /// Its value given.
        given: String,
    },
    /// The final checkpoint could not be written.
    #[error("final checkpoint not written: {source}")]
    Save {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        source: CheckpointError,
    },
    /// A bad record under `--on-error fail`.
    #[error("{name} line {line}: {reason_text}: {detail} (--on-error fail; {saved})", reason_text = reason_text(*reason), saved = match checkpoint { Some(p) => format!("the {points} points before it were saved to {}", p.display()), None => format!("the {points} points before it were learned but not saved: no --checkpoint") })]
    BadRecord {
        /// The source.
        name: String,
        /// 1-based line number.
        line: u64,
        /// Why the record was rejected.
        reason: RejectReason,
        /// Details.
        detail: String,
        /// Points learned in this run before it.
        points: u64,
        /// The checkpoint holding them, if any.
        checkpoint: Option<PathBuf>,
    },
    /// The input does not fit the configuration (e.g. a `--columns` name
    /// the header lacks).
    #[error("{0}")]
    Input(crate::input::InputError),
    /// The learner refused the points.
    #[error("learning failed: {0}")]
    Learn(#[from] LearnError),
    /// Writing scores to stdout failed (other than it being closed).
    #[error("writing scores to stdout failed: {0}")]
    ScoreOutput(std::io::Error),
    /// A pipeline thread panicked.
    #[error("the {0} stage stopped unexpectedly")]
    Thread(&'static str),
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the pipeline until every source ends or `shutdown` completes, then
/// drains it, flushes the learner and writes the final checkpoint.
///
/// Progress and messages (bad records, checkpoint choices, the listening
/// address as `listening on ADDR`) go to stderr.
///
/// # Errors
///
/// A [`PipelineError`] for a source that cannot be opened or bound, a
/// checkpoint path that is a directory or where no file can be created, a
/// refused resume, a bad record under `--on-error fail` (after saving what
/// came before it), a learning error, a failed read, score write or final
/// checkpoint.
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, PipelineError> {
    let console = Arc::new(Console::new());
    let metrics = Arc::new(Metrics::new());
    let started = Instant::now();

    // What the run starts from (blocking file I/O, off the reactor).
    let prep_console = console.clone();
    let (config, start) = tokio::task::spawn_blocking(move || {
        let mut config = config;
        let start = ckpt::prepare(&mut config, &prep_console);
        start.map(|s| (config, s))
    })
    .await
    .map_err(|_| PipelineError::Thread("checkpoint loader"))??;

    let stop = Arc::new(Stop {
        token: CancellationToken::new(),
        reason: OnceLock::new(),
    });
    let read_error: source::ReadError = Arc::new(Mutex::new(None));
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(CHUNK_QUEUE);

    // Sources.
    let first_name = match &config.source {
        Source::Stdin => "stdin".to_string(),
        Source::File(p) => p.display().to_string(),
        Source::Listen(_) => "listener".to_string(),
    };
    let names = Arc::new(SourceNames::new(first_name.clone()));
    match &config.source {
        Source::Stdin => {
            source::spawn_reader(
                std::io::stdin(),
                first_name,
                config.max_line_bytes,
                chunk_tx,
                stop.token.clone(),
                read_error.clone(),
            )
            .map_err(|e| PipelineError::Read {
                name: "stdin".into(),
                source: e,
            })?;
        }
        Source::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| PipelineError::Open {
                path: path.clone(),
                source: e,
            })?;
            source::spawn_reader(
                file,
                first_name,
                config.max_line_bytes,
                chunk_tx,
                stop.token.clone(),
                read_error.clone(),
            )
            .map_err(|e| PipelineError::Read {
                name: path.display().to_string(),
                source: e,
            })?;
        }
        Source::Listen(addr) => {
            let listener = source::bind(*addr).await.map_err(|e| PipelineError::Bind {
                addr: *addr,
                source: e,
            })?;
            let local = listener.local_addr().unwrap_or(*addr);
            console.line(&format!("listening on {local}"));
            let shared = source::TcpShared {
                out: chunk_tx,
                token: stop.token.clone(),
                max_line: config.max_line_bytes,
                names: names.clone(),
                console: console.clone(),
            };
            tokio::spawn(source::accept_loop(
                listener,
                config.max_connections,
                shared,
            ));
        }
    }

    // Parser thread.
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel(BATCH_QUEUE);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel(BATCH_RECYCLE);
    {
        let parser_config = config.parser.clone();
        let on_error = config.on_error;
        let stop = stop.clone();
        spawn_thread("emstream-parser", move || {
            parse::parser_loop(
                parser_config,
                on_error,
                chunk_rx,
                work_tx,
                recycle_rx,
                &stop,
            );
        })?;
    }

    // Score sink thread.
    let mut score_link = None;
    let mut sink = None;
    if let Some(options) = config.score.clone() {
        let (filled_tx, filled_rx) = std::sync::mpsc::sync_channel(SCORE_QUEUE);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel(SCORE_QUEUE + 2);
        let want_resp = options.responsibilities;
        // A resumed model keeps its own K.
        let k = start
            .learner
            .as_ref()
            .map_or(config.params.components, |l| l.params().components);
        let (m, s) = (metrics.clone(), stop.clone());
        let (done_tx, done_rx) = oneshot::channel();
        spawn_thread("emstream-score", move || {
            let r = score::sink_loop(std::io::stdout(), options, k, filled_rx, empty_tx, m, s);
            let _ = done_tx.send(r);
        })?;
        score_link = Some(ScoreLink {
            filled: filled_tx,
            empty: empty_rx,
            want_resp,
        });
        sink = Some(done_rx);
    }

    // Checkpoint writer task.
    let policy = config.checkpoint.clone();
    let mut snapshots = None;
    let mut writer = None;
    if let Some(p) = &policy {
        if p.every.is_some() || p.interval.is_some() {
            let (tx, rx) = watch::channel(None);
            snapshots = Some(tx);
            writer = Some(tokio::spawn(ckpt::writer(
                rx,
                p.path.clone(),
                p.keep,
                console.clone(),
            )));
        }
    }

    // Learner thread.
    let learner = Learner {
        params: config.params.clone(),
        start,
        work: work_rx,
        recycle: recycle_tx,
        snapshots,
        due: Due {
            every: policy.as_ref().and_then(|p| p.every),
            interval: policy.as_ref().and_then(|p| p.interval),
        },
        score: score_link,
        metrics: metrics.clone(),
        console: console.clone(),
        names: names.clone(),
    };
    let (outcome_tx, outcome_rx) = oneshot::channel();
    spawn_thread("emstream-learner", move || {
        let _ = outcome_tx.send(learner.run());
    })?;

    // Progress line on a terminal.
    let progress = console.is_tty().then(|| {
        let (c, m) = (console.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                c.progress(&m.progress_text());
            }
        })
    });

    // Wait for the learner, turning the shutdown future into a cancel.
    tokio::pin!(shutdown);
    let mut outcome_rx = outcome_rx;
    let mut signalled = false;
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown, if !signalled => {
                signalled = true;
                stop.stop(StopReason::Signal);
                console.line("stopping: finishing the points already read (a second signal exits at once)");
            }
            r = &mut outcome_rx => break r.map_err(|_| PipelineError::Thread("learner"))?,
        }
    };
    // The learner may have stopped on its own (a learning error): make sure
    // the sources (a listener, above all) stop too.
    stop.token.cancel();
    if let Some(p) = progress {
        p.abort();
    }
    console.clear_progress();

    // The score sink ends once the learner dropped its sender.
    let score_result = match sink {
        Some(rx) => rx
            .await
            .map_err(|_| PipelineError::Thread("score output"))?,
        None => Ok(()),
    };
    // Mid-stream saves end before the final one.
    if let Some(w) = writer {
        let _ = w.await;
    }

    let anomalies = metrics.anomalies.load(Ordering::Relaxed);
    let points_total = outcome
        .learner
        .as_ref()
        .map(|l| l.counters().points_seen)
        .unwrap_or(0);
    let points = points_total.saturating_sub(outcome.counters_at_start.points_seen);
    let outliers = outcome.learner.as_ref().map_or(0, |l| {
        l.counters()
            .outliers
            .saturating_sub(outcome.counters_at_start.outliers)
    });
    let avg_log_lik = outcome
        .learner
        .as_ref()
        .and_then(|l| learn::average_log_lik(l.counters(), &outcome.counters_at_start));
    let changed =
        points > 0 || outliers > 0 || !outcome.rejected.by_reason.is_empty() || anomalies > 0;

    // The final checkpoint, last.
    let mut written = None;
    if let (Some(p), Some(l)) = (&policy, &outcome.learner) {
        if changed {
            let ckpt = Checkpoint {
                learner: l.clone(),
                rejected: learn::add_counts(&outcome.rejected_before, &outcome.rejected),
                anomalies: outcome.anomalies_before + anomalies,
                created_unix_ms: outcome.created_unix_ms,
                updated_unix_ms: unix_ms(),
            };
            ckpt::save_final(p.path.clone(), ckpt, p.keep).await?;
            written = Some(p.path.clone());
        }
    } else if policy.is_some() && outcome.learner.is_none() {
        console.line("no valid points were read: no checkpoint written");
    }

    if let Some(e) = outcome.learn_error {
        return Err(PipelineError::Learn(e));
    }
    if let Some(e) = outcome.input_error {
        return Err(PipelineError::Input(e));
    }
    if let Some(ParseError {
        source_id,
        line,
        reason,
        detail,
    }) = outcome.bad_record
    {
        return Err(PipelineError::BadRecord {
            name: names.name(source_id),
            line,
            reason,
            detail,
            points,
            checkpoint: written,
        });
    }
    if let Some((name, source)) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(PipelineError::Read { name, source });
    }
    score_result.map_err(PipelineError::ScoreOutput)?;

    Ok(RunSummary {
        points,
        points_total,
        rejected: outcome.rejected,
        avg_log_lik,
        anomalies,
        outliers,
        elapsed: started.elapsed(),
        stop: stop.reason(),
        checkpoint: written,
    })
}

/// Starts a named pipeline thread.
fn spawn_thread(
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), PipelineError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|_| PipelineError::Thread(name))
}

#[cfg(test)]
mod tests;
