//! Async wiring only: sources, parser stage, learner thread, checkpoint
//! writer, score sink, shutdown. No maths here.
//!
//! ```text
//!  Source impls (source/: stdin, file, tcp, ...) ─► SourceEvent channel (CHUNK_QUEUE)
//!      ─► parser thread ─► BATCH_QUEUE (+ read-ahead during the first fit) ─► learner thread ─┬─► watch<Arc<Snapshot>> ─► checkpoint writer ─► Durable hook
//!                                                                                             │        (and any reader: /model, /metrics)
//!                                                                                             └─► SCORE_QUEUE ─► score sink thread ─► stdout
//!  every stage ─► RunState (counters, phase, stop reason, source names)
//! ```
//!
//! Where things go:
//!
//! - a new **source** (MQTT, NATS): a file in [`source`] with a type that
//!   implements [`Source`], one arm in `source::open` (or
//!   [`Pipeline::with_source`]); its stream positions reach every
//!   [`Snapshot`] and, once saved, the [`Durable`] hook;
//! - a new **counter**: a field of [`state::LearnerCounts`] if the learner
//!   produces it (it then changes together with the points), else an atomic
//!   of [`RunState`] and a field of [`Counts`];
//! - a new **endpoint**: a route of the admin server (`src/admin/`, axum),
//!   which holds [`Pipeline::state`] and [`Pipeline::snapshots`] and lives
//!   until [`RunState::finished_token`]; a new **metric** is one call in
//!   `src/admin/metrics.rs`, read from the run state at scrape time.
//!
//! Shutdown has two phases. Phase one: the sources watch
//! [`RunState::sources_token`]; a signal (the `shutdown` future given to
//! [`run`]), a closed stdout under `--score`, a bad record under
//! `--on-error fail` or a failed stage cancels it ([`RunState::stop`]); the
//! sources hand on what they hold and drop their senders. Phase two
//! ([`Phase::Draining`]): every later stage ends when its input channel
//! closes, after draining it; the learner flushes its partial batch and
//! publishes its final snapshot, and the final checkpoint is written last.
//! Then [`RunState::finished_token`] fires. A panicking stage is caught: the
//! sources are stopped, every task and thread is waited for, and the run
//! returns [`PipelineError::Panic`].

mod ckpt;
mod console;
mod idle;
mod learn;
mod parse;
pub mod recent;
pub mod replay;
mod score;
mod shuffle;
pub mod snapshot;
pub mod source;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

pub use console::reason_text;
pub use replay::{Replay, StreamLag};
pub use snapshot::{Durable, DurableReceiver, Snapshot, SnapshotReceiver};
pub use source::{Source, SourceContext, SourceEvent};
pub use state::{Counts, LearnerCounts, Phase, RunState, StopReason};

use crate::checkpoint::CheckpointError;
use crate::config::{RunConfig, Source as SourceConfig};
use crate::input::{ParseError, RejectCounts, RejectReason};
use crate::model::{GaussianMixture, LearnError, StepwiseEm};
use crate::score::AnomalyDetector;
use console::Console;
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
/// 128 KiB chunk is at most ~0.5 MiB of f64s. While the learner fits its
/// first model the parser reads on past a full queue
/// ([`crate::config::READ_AHEAD_BYTES`]).
pub const BATCH_QUEUE: usize = 4;

/// Used batches handed back to the parser for reuse (their allocations);
/// one more than can be in flight, so reuse never fails in steady state.
pub const BATCH_RECYCLE: usize = BATCH_QUEUE + 2;

/// Filled score buffers waiting for the score sink: enough to ride out a
/// slow reader of stdout for a moment, after which the learner waits.
pub const SCORE_QUEUE: usize = 4;

/// After a stop, how long the learner waits for a full score queue (a
/// reader of stdout that does not read), and the run for the score sink,
/// before score output is dropped (counted and reported) so the final
/// checkpoint is written anyway: long enough for a live reader to catch up
/// on a few blocks, short next to a service manager's stop timeout.
pub const SCORE_STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Buffer of the score sink's writer to stdout.
pub const SCORE_OUT_BYTES: usize = 256 << 10;

/// The test-only fault injection delays (`EMSTREAM_FAULT_SLOW_LOAD_MS`,
/// `EMSTREAM_FAULT_SLOW_SAVE_MS`, `EMSTREAM_FAULT_SLOW_FIT_MS`): the
/// milliseconds in environment variable `var`, `None` when it is unset
/// (any real run) or not a number.
pub(crate) fn fault_ms(var: &str) -> Option<Duration> {
    let ms: u64 = std::env::var_os(var)?.to_str()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Bad records reported one by one on stderr; the rest are only counted.
pub const REPORTED_RECORDS: usize = 5;

/// How often the progress line is redrawn on a terminal.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a run did, for the summary line.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Points learned in this run, and points of this run saved in an
    /// unfitted warm-up buffer.
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
    /// Points whose score lines were dropped (at least this many): after a
    /// stop, stdout was not read within [`SCORE_STALL_TIMEOUT`].
    pub scores_dropped: u64,
    /// Replayable streams at the end: the log's last sequence, the model's,
    /// and the lag between them.
    pub streams: Vec<StreamLag>,
    /// Broker reconnections in this run.
    pub reconnects: u64,
    /// Messages lost to a retention gap (`--allow-gap`) in this run.
    pub gap_messages: u64,
    /// Points waiting in a warm-up buffer that was not fitted (the end of
    /// the input or a stop during the warm-up, or too few distinct points
    /// so far).
    pub warmup_waiting: u64,
    /// Points the warm-up fits the first model on (`--warmup`).
    pub warmup_size: u64,
    /// Components of the model fitted on a warm-up buffer that the input
    /// ended before filling ([`crate::model::StepwiseEm::fit_provisional`]).
    pub provisional_k: Option<usize>,
    /// Regime changes followed in this run (re-fits on recent points).
    pub regime_changes: u64,
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
        if self.regime_changes > 0 {
            s.push_str(&format!(
                ", {} regime changes followed",
                self.regime_changes
            ));
        }
        s
    }

    /// What became of a warm-up that did not finish (the input ended, or a
    /// stop came, before `--warmup` points, or a stop interrupted the first
    /// fit): how full its buffer is, that it was saved unfitted, and what
    /// can be done with it; `None` once there is a model.
    pub fn warmup_line(&self) -> Option<String> {
        let (waiting, size) = (self.warmup_waiting, self.warmup_size);
        if waiting == 0 {
            return None;
        }
        let (buffered, resume) = if waiting >= size {
            let buffered = match waiting - size {
                0 => format!("first fit stopped: {waiting} warm-up points buffered"),
                n => format!("first fit stopped: {waiting} points buffered (the warm-up's {size} and {n} received after them)"),
            };
            (
                buffered,
                "--resume fits the warm-up's points and learns the rest",
            )
        } else {
            (
                format!("warm-up not finished: {waiting} of {size} points buffered"),
                "--resume continues filling it",
            )
        };
        if let Some(k) = self.provisional_k.filter(|_| waiting < size) {
            return Some(match &self.checkpoint {
                Some(path) => format!(
                    "{buffered}; fitted a model of {k} components on them, saved with the buffer to {}; {resume}",
                    path.display()
                ),
                None => format!(
                    "{buffered}; fitted a model of {k} components on them, not kept (give --checkpoint to keep it)"
                ),
            });
        }
        Some(match &self.checkpoint {
            Some(path) => format!(
                "{buffered}, saved unfitted to {}; {resume}, and inspect, score, plot and diff fit it on the fly",
                path.display()
            ),
            None => format!("{buffered}, no model fitted (give --checkpoint to keep them)"),
        })
    }

    /// One line per replayable stream (`jetstream:S: model at sequence 90
    /// of 100, lag 10 messages`), and reconnects and retention gaps when
    /// there were any.
    pub fn replay_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .streams
            .iter()
            .map(|s| {
                format!(
                    "{}: model at sequence {} of {}, lag {} messages",
                    s.key,
                    s.learned,
                    s.head,
                    s.lag()
                )
            })
            .collect();
        if self.reconnects > 0 {
            out.push(format!("{} broker reconnections", self.reconnects));
        }
        if self.gap_messages > 0 {
            out.push(format!(
                "{} messages lost to the stream's retention (--allow-gap)",
                self.gap_messages
            ));
        }
        out
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
    /// Another process writes this checkpoint (it holds the writer lock).
    #[error("{0}")]
    CheckpointLocked(CheckpointError),
    /// `PATH` is missing but an older generation exists, and neither
    /// `--resume` nor `--overwrite` was given.
    #[error("{path} is missing but the older generation {newest} exists (a run may have been cut short while rotating): add --resume to continue the model in {newest}, or --overwrite to start a new one", path = path.display(), newest = newest.display())]
    OnlyOlderGeneration {
        /// The checkpoint file.
        path: PathBuf,
        /// The newest existing older generation.
        newest: PathBuf,
    },
    /// No file can be created in the checkpoint's directory.
    #[error("cannot write checkpoints there: {0}")]
    CheckpointNotWritable(CheckpointError),
    /// `--resume` through a symbolic link to nothing: a new model would be
    /// started wherever the link points (a volume not mounted, say).
    #[error("--checkpoint {} is a symbolic link to {}, which does not exist: --resume would start a new model there. Mount or restore the target, or run once without --resume to create it", link.display(), target.display())]
    DanglingLink {
        /// The path given.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
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
    /// Almost every record was rejected: the input is not points.
    #[error("the input is not points: {rejected} of the first {records} records were rejected as not numbers at all (more than {pct} %); no model was made of it (a checkpoint written before is kept). Check --input, --format and --columns", pct = learn::NOT_POINTS_RATE * 100.0)]
    NotPoints {
        /// Records rejected.
        rejected: u64,
        /// Records read.
        records: u64,
    },
    /// The input does not fit the configuration (e.g. a `--columns` name
    /// the header lacks).
    #[error("{0}")]
    Input(crate::input::InputError),
    /// More records were rejected than `--max-reject-rate` allows (see
    /// [`crate::config::reject_rate_exceeded`]).
    #[error(
        "{rejected} of {records} records were rejected ({pct:.1} %), more than --max-reject-rate {max}: \
         the input does not fit the options; see the reasons above and check --columns (0-based \
         indices or header names), --dim, --delimiter and --format ({saved})",
        pct = 100.0 * *rejected as f64 / (*records).max(1) as f64,
        saved = match checkpoint {
            Some(p) => format!("what was learned is saved in {}", p.display()),
            None => "nothing was saved: no --checkpoint".to_owned(),
        }
    )]
    TooManyRejects {
        /// Records rejected in this run.
        rejected: u64,
        /// Records read in this run (points and rejects).
        records: u64,
        /// The limit.
        max: f64,
        /// The checkpoint holding what was learned, if any.
        checkpoint: Option<PathBuf>,
    },
    /// The learner refused the points.
    #[error("learning failed: {0}")]
    Learn(#[from] LearnError),
    /// Writing scores to stdout failed (other than it being closed).
    #[error("writing scores to stdout failed: {0}")]
    ScoreOutput(std::io::Error),
    /// The TLS or token files of the listener cannot be used.
    #[error("{0}")]
    Access(crate::security::SecurityError),
    /// A pipeline thread could not be started or its task failed.
    #[error("the {0} stage stopped unexpectedly")]
    Thread(&'static str),
    /// A pipeline thread panicked (a bug); the sources were stopped and the
    /// last checkpoint written is kept.
    #[error("the {stage} thread panicked: {message} (this is a bug; the sources were stopped and the last checkpoint written is kept)")]
    Panic {
        /// The stage.
        stage: &'static str,
        /// The panic message.
        message: String,
    },
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A run being assembled: its state, live snapshot and durability hook
/// exist before it starts, so a caller (a test, the admin server) can
/// hold them and watch the run.
///
/// ```no_run
/// # async fn demo(config: emstream::config::RunConfig) -> Result<(), emstream::pipeline::PipelineError> {
/// let pipeline = emstream::pipeline::Pipeline::new(config);
/// let state = pipeline.state();        // counters, phase, stop
/// let live = pipeline.snapshots();     // newest Arc<Snapshot>
/// let durable = pipeline.durable();    // newest snapshot on disk
/// let summary = pipeline.run(std::future::pending()).await?;
/// # let _ = (state, live, durable, summary); Ok(()) }
/// ```
pub struct Pipeline {
    config: RunConfig,
    state: Arc<RunState>,
    console: Arc<Console>,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    durable: Arc<watch::Sender<Durable>>,
    /// A source given instead of the configured one.
    source: Option<Box<dyn Source>>,
    /// Test-only fault injection: the learner panics after this many points.
    #[cfg(test)]
    panic_learner_after: Option<u64>,
}

impl Pipeline {
    /// A pipeline for `config`, not started.
    pub fn new(config: RunConfig) -> Self {
        let first = match config.source() {
            SourceConfig::Stdin => "stdin".to_string(),
            SourceConfig::File(p) => p.display().to_string(),
            SourceConfig::Listen(_) => "listener".to_string(),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(m) => source::mqtt::name(m),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(n) => source::nats::name(n),
        };
        Pipeline {
            config,
            state: Arc::new(RunState::new(first)),
            console: Arc::new(Console::new()),
            snapshots: watch::Sender::new(None),
            durable: Arc::new(watch::Sender::new(Durable::default())),
            source: None,
            #[cfg(test)]
            panic_learner_after: None,
        }
    }

    /// Reads from `source` instead of the configured stdin, file or
    /// listener (a source the command line does not know yet, a test's).
    pub fn with_source(mut self, source: Box<dyn Source>) -> Self {
        self.state.rename_first(source.name());
        self.source = Some(source);
        self
    }

    /// The run's shared state.
    pub fn state(&self) -> Arc<RunState> {
        self.state.clone()
    }

    /// The live snapshot; it keeps the last one after the run.
    pub fn snapshots(&self) -> SnapshotReceiver {
        self.snapshots.subscribe()
    }

    /// The durability hook.
    pub fn durable(&self) -> DurableReceiver {
        self.durable.subscribe()
    }

    /// Runs the pipeline until every source ends or `shutdown` completes,
    /// then drains it, flushes the learner and writes the final checkpoint.
    ///
    /// The stop has two phases: the sources stop (end of input, the
    /// `shutdown` future, a closed stdout, a fatal error: see
    /// [`RunState::sources_token`]); then every later stage ends when its
    /// input channel closes, after draining it, and the final checkpoint is
    /// written. [`RunState::finished_token`] fires after that, just before
    /// this returns. No task or thread of the run is left behind when it
    /// returns, also when a stage panics.
    ///
    /// Progress and messages (bad records, checkpoint choices, the listening
    /// address as `listening on ADDR`) go to stderr.
    ///
    /// # Errors
    ///
    /// A [`PipelineError`] for a source that cannot be opened or bound, a
    /// checkpoint path that is a directory or where no file can be created,
    /// a refused resume, a bad record under `--on-error fail` (after saving
    /// what came before it), a learning error, a failed read, score write or
    /// final checkpoint, or a panicked stage.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, PipelineError> {
        let state = self.state.clone();
        let result = self.run_inner(shutdown).await;
        state.set_phase(Phase::Finished);
        result
    }

    async fn run_inner(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, PipelineError> {
        let Pipeline {
            config,
            state,
            console,
            snapshots,
            durable,
            source,
            #[cfg(test)]
            panic_learner_after,
        } = self;

        // What the run starts from (blocking file I/O, off the reactor).
        // A signal meanwhile is seen: the load (bounded by the file's size)
        // finishes, then the run ends without reading any input.
        tokio::pin!(shutdown);
        let mut signalled = false;
        let prep_console = console.clone();
        let prepare = tokio::task::spawn_blocking(move || {
            let mut config = config;
            let start = ckpt::prepare(&mut config, &prep_console);
            start.map(|(s, lock)| (config, s, lock))
        });
        tokio::pin!(prepare);
        let prepared = loop {
            tokio::select! {
                () = &mut shutdown, if !signalled => {
                    signalled = true;
                    state.stop(StopReason::Signal);
                    console.line("stopping: the checkpoint is being loaded; no input will be read (a second signal exits at once)");
                }
                r = &mut prepare => break r,
            }
        };
        // `lock` (one writer per checkpoint) is held until this returns,
        // after the final save; every save checks it is still held.
        let (config, start, lock) =
            prepared.map_err(|_| PipelineError::Thread("checkpoint loader"))??;
        let lock = lock.map(|l| Arc::new(std::sync::Mutex::new(l)));
        // Points of a resumed warm-up buffer, not fitted yet.
        let resumed_waiting = start
            .learner
            .as_ref()
            .filter(|l| l.mixture().is_none())
            .map_or(0, |l| l.pending_points() as u64);
        if signalled {
            return Ok(RunSummary {
                points: 0,
                points_total: start
                    .learner
                    .as_ref()
                    .map_or(0, |l| l.counters().points_seen),
                rejected: RejectCounts::default(),
                avg_log_lik: None,
                anomalies: 0,
                outliers: 0,
                elapsed: state.counts().elapsed,
                stop: StopReason::Signal,
                checkpoint: None,
                scores_dropped: 0,
                streams: state.replay().streams(),
                reconnects: state.replay().reconnects(),
                gap_messages: state.replay().gap_messages(),
                warmup_waiting: resumed_waiting,
                warmup_size: start
                    .learner
                    .as_ref()
                    .map_or(config.params.warmup, |l| l.params().warmup)
                    as u64,
                provisional_k: None,
                regime_changes: 0,
            });
        }

        let source = match source {
            Some(s) => s,
            None => source::open(&config, &console).await?,
        };
        let (event_tx, event_rx) = mpsc::channel::<SourceEvent>(CHUNK_QUEUE);
        state.set_parser_input(&event_tx);
        let resumed = start.sources.clone();

        // Parser thread.
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel(BATCH_QUEUE);
        let (recycle_tx, recycle_rx) = std::sync::mpsc::sync_channel(BATCH_RECYCLE);
        let parser = {
            let parser_config = config.parser.clone();
            let on_error = config.on_error;
            let max_dim = crate::model::max_dim_for(&config.params, config.max_memory);
            let max_line = config.max_line_bytes;
            let parse_threads = config.parse_threads;
            // For every source: a signal during the first fit keeps the
            // batches then in flight in the learner's saved buffer, with
            // their positions (StepwiseEm::observe), so a JetStream stream
            // loses none of them either.
            let read_ahead = crate::config::read_ahead_bytes(config.max_memory);
            let shuffle = config
                .shuffle_buffer
                .map(|n| shuffle::Shuffle::new(n, config.params.seed));
            let s = state.clone();
            spawn_stage("parser", &state, move || {
                parse::parser_loop(
                    parser_config,
                    on_error,
                    max_dim,
                    max_line,
                    parse_threads,
                    read_ahead,
                    shuffle,
                    event_rx,
                    work_tx,
                    recycle_rx,
                    &s,
                );
            })?
        };

        // Score sink thread.
        let mut score_link = None;
        let mut score_progress = None;
        let mut sink = None;
        let mut detector = None;
        if let Some(options) = config.score.clone() {
            let (filled_tx, filled_rx) = std::sync::mpsc::sync_channel(SCORE_QUEUE);
            let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel(SCORE_QUEUE + 2);
            let want_resp = options.responsibilities;
            let want_json = options.json;
            // A resumed model keeps its own K; with `auto` it is known
            // after the warm-up (the sink reads it from each block).
            let k = start
                .learner
                .as_ref()
                .and_then(StepwiseEm::n_components)
                .or(config.params.fixed_components())
                .unwrap_or(1);
            detector = Some(AnomalyDetector::new(options.alert.clone()));
            state.recent().set_alert(options.alert.clone());
            let s = state.clone();
            let progress = Arc::new(score::ScoreProgress::default());
            let p = progress.clone();
            sink = Some(spawn_stage("score output", &state, move || {
                score::sink_loop(std::io::stdout(), options, k, filled_rx, empty_tx, &s, &p)
            })?);
            score_link = Some(ScoreLink {
                filled: filled_tx,
                empty: empty_rx,
                want_resp,
                progress: progress.clone(),
                stop: state.sources_token(),
                stalled: std::cell::Cell::new(false),
                keep: config
                    .parser
                    .keep
                    .clone()
                    .map(|items| crate::score::KeepFormat::new(items, want_json)),
            });
            score_progress = Some(progress);
        }

        // Checkpoint writer task, tracked so none is left behind.
        let tasks = TaskTracker::new();
        let policy = config.checkpoint.clone();
        let saver = policy.as_ref().map(|p| ckpt::Saver {
            path: p.path.clone(),
            keep: p.keep,
            state: state.clone(),
            durable: durable.clone(),
            lock: lock.clone(),
        });
        // Always with a checkpoint: it also serves checkpoint requests
        // (SIGHUP) when no periodic checkpoint is configured.
        if let Some(saver) = &saver {
            tasks.spawn(ckpt::writer(
                snapshots.subscribe(),
                saver.clone(),
                console.clone(),
            ));
        }

        // Learner thread.
        let max_reject_rate = config.max_reject_rate;
        let learner = Learner {
            params: config.params.clone(),
            threads: config.threads,
            start,
            work: work_rx,
            recycle: recycle_tx,
            snapshots,
            due: Due {
                every: policy.as_ref().and_then(|p| p.every),
                interval: policy.as_ref().and_then(|p| p.interval),
            },
            score: score_link,
            detector,
            max_reject_rate,
            state: state.clone(),
            console: console.clone(),
            // Daemon sources (TCP, MQTT, NATS) say where the dimension
            // came from when none was configured.
            announce_dim: !matches!(config.source(), SourceConfig::Stdin | SourceConfig::File(_))
                && config.parser.dim.is_none(),
            #[cfg(test)]
            panic_after: panic_learner_after,
        };
        let outcome_rx = spawn_stage("learner", &state, move || learner.run())?;

        // The source, started last so nothing it sends waits for a stage
        // that does not exist yet.
        let ctx = source::SourceContext::new(
            event_tx,
            state.clone(),
            console.clone(),
            config.max_line_bytes,
            0,
            Arc::new(AtomicU64::new(1)),
        )
        .with_replay(resumed, durable.subscribe());
        tasks.spawn(source.run(ctx));
        if let Some(idle) = config.stop_when_idle {
            tasks.spawn(idle::stop_when_idle(state.clone(), idle));
        }
        state.set_phase(Phase::Running);

        // Progress line on a terminal.
        let progress = console.is_tty().then(|| {
            let (c, s) = (console.clone(), state.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    c.progress(&s.progress_text());
                }
            })
        });

        // Wait for the learner, turning the shutdown future into a stop.
        let mut outcome_rx = outcome_rx;
        let outcome = loop {
            tokio::select! {
                () = &mut shutdown, if !signalled => {
                    signalled = true;
                    state.stop(StopReason::Signal);
                    state.interrupt();
                    state.set_phase(Phase::Draining);
                    console.line("stopping: finishing the points already read (a second signal exits at once)");
                }
                r = &mut outcome_rx => break r,
            }
        };
        // The learner may have stopped on its own (a learning error, a
        // panic): make sure the sources (a listener, above all) stop too.
        let failed = !matches!(outcome, Ok(Ok(ref o)) if o.learn_error.is_none()
            && o.not_points.is_none()
            && o.input_error.is_none()
            && o.too_many_rejects.is_none());
        state.stop(if failed {
            StopReason::Failed
        } else {
            state.stop_reason()
        });
        state.set_phase(Phase::Draining);
        if let Some(p) = progress {
            p.abort();
        }
        console.clear_progress();

        // The learner dropped its senders: the score sink and the writer
        // end; the sources end on the stop (or a closed channel). The score
        // sink is waited for after the final save (a reader of stdout that
        // does not read must not keep the model from being saved).
        let parser_result = stage_result("parser", parser.await);
        tasks.close();
        tasks.wait().await;
        // Without the learner there is no model to save; a parser or score
        // sink that failed leaves a consistent model, saved below first.
        let outcome = stage_result("learner", outcome)?;

        let counts = outcome.counts;
        // Batches count too: a warm-up buffer that was not fitted (a stop
        // during the warm-up, too few distinct points) is saved as such.
        let changed = counts.points > 0
            || counts.batches > 0
            || counts.outliers > 0
            || !counts.rejected.is_empty()
            || counts.anomalies > 0;

        // The final checkpoint, last (none when the input was not points:
        // garbage must not become a model; the last checkpoint written is
        // kept).
        let mut written = None;
        let last = if outcome.not_points.is_some() {
            None
        } else {
            outcome.last.clone()
        };
        match (&saver, &last) {
            (Some(saver), Some(snap)) => {
                if changed {
                    // The writer may have saved this very snapshot already.
                    if durable.borrow().seq != snap.seq {
                        saver.save(snap.clone()).await?;
                    }
                    written = Some(saver.path.clone());
                }
            }
            (Some(_), None) if outcome.not_points.is_some() => {}
            (Some(_), None) => console.line("no valid points were read: no checkpoint written"),
            (None, _) => {}
        }
        let points_total = outcome
            .last
            .as_ref()
            .map_or(0, |s| s.checkpoint.learner.counters().points_seen);
        let warmup_waiting = outcome
            .last
            .as_ref()
            .map(|s| &s.checkpoint.learner)
            .filter(|l| l.mixture().is_none())
            .map_or(0, |l| l.pending_points() as u64);
        // The learner's warm-up, sized for its dimension (`auto` K).
        let warmup_size = outcome.last.as_ref().map_or(config.params.warmup, |s| {
            s.checkpoint.learner.params().warmup
        }) as u64;
        let provisional_k = outcome
            .last
            .as_ref()
            .and_then(|s| s.checkpoint.learner.provisional())
            .map(GaussianMixture::n_components);

        // The score sink: all its output at the end of the input; after a
        // stop (now or while waiting), at most SCORE_STALL_TIMEOUT more.
        let mut scores_dropped = 0;
        let score_result = match sink {
            Some(mut rx) => {
                let give_up = async {
                    if !signalled {
                        (&mut shutdown).await;
                    }
                    tokio::time::sleep(SCORE_STALL_TIMEOUT).await;
                };
                tokio::select! {
                    r = &mut rx => {
                        scores_dropped = score_progress.as_ref().map_or(0, |p| p.dropped_only());
                        Some(stage_result("score output", r))
                    }
                    () = give_up => {
                        // The sink thread stays blocked on stdout; the
                        // process exits without it.
                        scores_dropped = score_progress.as_ref().map_or(0, |p| p.lost());
                        None
                    }
                }
            }
            None => None,
        };

        parser_result?;
        let score_result = score_result.transpose()?;
        if let Some(e) = outcome.learn_error {
            return Err(PipelineError::Learn(e));
        }
        if let Some((rejected, records)) = outcome.not_points {
            return Err(PipelineError::NotPoints { rejected, records });
        }
        if let Some(e) = outcome.input_error {
            return Err(PipelineError::Input(e));
        }
        if let Some(ParseError {
            source_id,
            line,
            reason,
            detail,
            message,
        }) = outcome.bad_record
        {
            let name = state.source_name(source_id);
            return Err(PipelineError::BadRecord {
                name: match message {
                    Some(m) => format!("{name} topic {} message {}", m.topic, m.seq),
                    None => name,
                },
                line,
                reason,
                detail,
                // Points of this run still in the warm-up buffer are in
                // the count: they are saved, unfitted.
                points: counts.points,
                checkpoint: written,
            });
        }
        if let Some((name, source)) = outcome.read_error {
            return Err(PipelineError::Read { name, source });
        }
        if let Some((points, rejected)) = outcome.too_many_rejects {
            return Err(PipelineError::TooManyRejects {
                rejected,
                records: points + rejected,
                max: max_reject_rate,
                checkpoint: written,
            });
        }
        if let Some(r) = score_result {
            r.map_err(PipelineError::ScoreOutput)?;
        }

        Ok(RunSummary {
            points: counts.points,
            points_total,
            rejected: counts.rejected,
            avg_log_lik: counts.avg_log_lik,
            anomalies: counts.anomalies,
            outliers: counts.outliers,
            elapsed: state.counts().elapsed,
            stop: state.stop_reason(),
            checkpoint: written,
            scores_dropped,
            streams: state.replay().streams(),
            reconnects: state.replay().reconnects(),
            gap_messages: state.replay().gap_messages(),
            warmup_waiting,
            warmup_size,
            provisional_k,
            regime_changes: counts.regime_changes,
        })
    }
}

/// Runs the pipeline for `config` until every source ends or `shutdown`
/// completes: [`Pipeline::new`]`(config).`[`run`](Pipeline::run)`(shutdown)`.
///
/// # Errors
///
/// As [`Pipeline::run`].
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, PipelineError> {
    Pipeline::new(config).run(shutdown).await
}

/// What a stage thread ends with: its value, or the message it panicked
/// with.
type StageEnd<T> = Result<T, String>;

/// Starts a named pipeline thread; the receiver gets its result, or its
/// panic message: the thread catches its own panic, stops the sources at
/// once, and the run reports it.
fn spawn_stage<T: Send + 'static>(
    name: &'static str,
    state: &Arc<RunState>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<oneshot::Receiver<StageEnd<T>>, PipelineError> {
    let (tx, rx) = oneshot::channel();
    let state = state.clone();
    std::thread::Builder::new()
        .name(format!("emstream-{}", name.replace(' ', "-")))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if r.is_err() {
                state.stop(StopReason::Failed);
            }
            let _ = tx.send(r.map_err(|p| panic_text(p.as_ref())));
        })
        .map_err(|_| PipelineError::Thread(name))?;
    Ok(rx)
}

/// The result of a stage thread as a [`PipelineError`] when it panicked.
fn stage_result<T>(
    stage: &'static str,
    r: Result<StageEnd<T>, oneshot::error::RecvError>,
) -> Result<T, PipelineError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(message)) => Err(panic_error(stage, Some(message))),
        Err(_) => Err(panic_error(stage, None)),
    }
}

fn panic_error(stage: &'static str, message: Option<String>) -> PipelineError {
    PipelineError::Panic {
        stage,
        message: message.unwrap_or_else(|| "no message".into()),
    }
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".into()
    }
}

#[cfg(test)]
mod tests;
