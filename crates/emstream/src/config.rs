//! Run configuration: TOML file + flags, validated once.
//!
//! [`Config`] is plain data: every key of `config/emstream.toml` (snake_case,
//! the same names as the `emstream run` flags), with the defaults of that
//! file. Unknown keys are an error naming the key. [`Config::check`] applies
//! every rule once and yields a [`RunConfig`], the only form the pipeline
//! accepts. Learner defaults come from [`crate::model::Params::default`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::input::{Columns, ColumnsError, Delimiter, Format, ParserConfig};
use crate::model::resolution::ResolutionSpec;
use crate::model::{CheckedParams, ComponentCount, CovarianceType, ParamError, Params};
use crate::score::{AlertRule, ScoreOptions};
use crate::security::{AccessFiles, SecurityError};

mod brokers;
pub use brokers::{redact_url, BrokerError, MqttOptions, NatsOptions};

/// Default longest line (64 KiB): a 2-D point takes some 20 bytes, so a
/// longer line is almost surely not a record, and the limit bounds the
/// memory a bad stream can make the reader hold.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Longest line limit accepted for `max_line_bytes` (16 MiB): one line of
/// that size already uses half of the 32 MiB memory budget.
pub const MAX_LINE_BYTES_LIMIT: usize = 16 << 20;

/// Largest configuration file read (1 MiB; the shipped one is 5 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most older checkpoint generations `keep` accepts: each save renames every
/// kept generation, so the bound keeps a save (and a stop waiting for it)
/// short; a thousand generations are far more than any rollback needs.
pub const MAX_KEEP: usize = 1000;

/// Default memory budget (`max_memory`): 1 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

/// Default `max_reject_rate`: a run that rejects more than half of its
/// records fails. Such a run almost surely reads its input with the wrong
/// options (every record rejected for a wrong `--dim`, `--columns` or
/// `--delimiter`), and a model learned from the rest would be learned from
/// whatever happened to parse.
pub const DEFAULT_MAX_REJECT_RATE: f64 = 0.5;

/// Records a run must have read before its reject rate can stop it while
/// input still arrives; at the end of the input any number is judged.
pub const REJECT_RATE_MIN_RECORDS: u64 = 1000;

/// The reject-rate rule, in one place for every caller: the rate
/// (`rejected / (points + rejected)`) when it is above `max_rate` and
/// there are enough records to judge (any at the end of the input, else at
/// least [`REJECT_RATE_MIN_RECORDS`]); `None` otherwise. A `max_rate` of 1
/// or more never fails.
pub fn reject_rate_exceeded(
    max_rate: f64,
    points: u64,
    rejected: u64,
    at_end: bool,
) -> Option<f64> {
    let records = points + rejected;
    if records == 0 || (!at_end && records < REJECT_RATE_MIN_RECORDS) {
        return None;
    }
    let rate = rejected as f64 / records as f64;
    (rate > max_rate).then_some(rate)
}

/// Each configuration key's default as text (`warmup` → `5000`,
/// `format` → `csv`), for `--help`; keys without a default (absent unless
/// given) are missing.
pub fn default_texts() -> std::collections::BTreeMap<String, String> {
    let Ok(toml::Value::Table(t)) = toml::Value::try_from(Config::default()) else {
        return Default::default();
    };
    t.into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| match x {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

/// Parses an enum flag value (`--format`, `--on-error`, `--covariance`) the
/// way the config file spells it, ignoring case and surrounding blanks: the
/// one parser of enum flags for every command, so `CSV` means the same to
/// `run`, `score` and `plot`.
///
/// # Errors
///
/// A message naming the accepted values.
pub fn enum_value<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;
    let lower = s.trim().to_ascii_lowercase();
    let de: StrDeserializer<'_, Error> = lower.as_str().into_deserializer();
    T::deserialize(de).map_err(|e| e.to_string())
}

/// Default of `shutdown_timeout`, in seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: f64 = 10.0;

/// How log lines on stderr are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: timestamp, level, message, fields.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// Parses an admin address: `IP:PORT`, or a bare `PORT` meaning loopback
/// (`127.0.0.1:PORT`), so the endpoints are never exposed by accident.
///
/// # Errors
///
/// [`ConfigError::AdminAddr`].
pub fn admin_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    let t = text.trim();
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.parse::<SocketAddr>()
        .map_err(|_| ConfigError::AdminAddr(text.to_string()))
}

/// A number of seconds as a duration, if positive and finite.
/// Shortest `stats_interval` accepted (seconds): ten lines a second is
/// already more than a person reads; shorter floods the log.
pub const MIN_STATS_INTERVAL: f64 = 0.1;

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0 && s < 1e9).then(|| Duration::from_secs_f64(s))
}

/// What to do with a record that cannot be parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Skip it, count it by reason and report the first few on stderr.
    #[default]
    Skip,
    /// Stop the run at the first bad record (after checkpointing what came
    /// before it) with a non-zero exit status.
    Fail,
}

/// Declares [`Config`] with its defaults, and from the one list of learner
/// options (each key once: its type, flag value name and help) everything
/// else that names them: the fields of [`Config`], [`LEARNER_KEYS`],
/// [`Config::params`], [`param_text`] and the `run` flags of
/// [`LearnerArgs`]. A new learner option is one line here and a field of
/// [`Params`]; `config/emstream.toml` documents it (a test checks that
/// every key is there).
macro_rules! config_keys {
    (
        $(#[$cmeta:meta])*
        pub struct Config {
            $( $(#[doc = $fdoc:literal])* pub $field:ident : $fty:ty = $fdefault:expr, )*
        }
        learner {
            $( $(#[doc = $ldoc:literal])* $key:ident : $kty:ty, $value_name:literal $(, short = $short:literal)? $(, missing = $missing:literal)? ; )*
        }
    ) => {
        $(#[$cmeta])*
        pub struct Config {
            $( $(#[doc = $fdoc])* pub $field: $fty, )*
            $( $(#[doc = $ldoc])* pub $key: $kty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                let p = Params::default();
                Config {
                    $( $field: $fdefault, )*
                    $( $key: p.$key, )*
                }
            }
        }

        /// Names of the configuration keys that belong to the learner (its
        /// [`Params`]); on `--resume` these come from the checkpoint.
        pub const LEARNER_KEYS: &[&str] = &[ $( stringify!($key), )* ];

        impl Config {
            /// The learner options of this configuration.
            pub fn params(&self) -> Params {
                Params { $( $key: self.$key.clone(), )* }
            }
        }

        /// One learner option of `p` as text, by its config key (`None` for
        /// a key that is not a learner option).
        pub fn param_text(p: &Params, key: &str) -> Option<String> {
            match key {
                $( stringify!($key) => Some(p.$key.to_string()), )*
                _ => None,
            }
        }

        /// The learner options as `run` flags; each overrides the config key
        /// of the same name.
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct LearnerArgs {
            $(
                $(#[doc = $ldoc])*
                #[arg(long, value_name = $value_name, value_parser = flag_value::<$kty>, allow_negative_numbers = true $(, short = $short)? $(, num_args = 0..=1, require_equals = true, default_missing_value = $missing)?)]
                pub $key: Option<$kty>,
            )*
        }

        impl LearnerArgs {
            /// Sets every option given as a flag in `config` and records its
            /// key in `given`.
            pub fn apply(self, config: &mut Config, given: &mut BTreeSet<String>) {
                $(
                    if let Some(v) = self.$key {
                        config.$key = v;
                        given.insert(stringify!($key).to_string());
                    }
                )*
            }
        }
    };
}

/// A flag value of a learner option: numbers as Rust parses them, enums as
/// [`enum_value`] does.
pub trait FlagValue: Sized + Clone + Send + Sync + 'static {
    /// Parses the flag's text.
    ///
    /// # Errors
    ///
    /// A message for clap.
    fn parse_flag(s: &str) -> Result<Self, String>;
}

macro_rules! flag_value_from_str {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn parse_flag(s: &str) -> Result<Self, String> {
                s.trim().parse::<$t>().map_err(|e| e.to_string())
            }
        }
    )*};
}
flag_value_from_str!(usize, u64, f64, bool, ComponentCount);

impl FlagValue for ResolutionSpec {
    fn parse_flag(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|e: crate::model::resolution::BadResolution| e.to_string())
    }
}

impl FlagValue for CovarianceType {
    fn parse_flag(s: &str) -> Result<Self, String> {
        enum_value(s)
    }
}

/// The clap value parser of a learner option.
///
/// # Errors
///
/// As [`FlagValue::parse_flag`].
pub fn flag_value<T: FlagValue>(s: &str) -> Result<T, String> {
    T::parse_flag(s)
}

config_keys! {
    /// Every configuration key, as read from a TOML file and overridden by flags.
    ///
    /// The [`Default`] is the built-in configuration and equals what
    /// `config/emstream.toml` says.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Config {
        /// Read points from this file instead of stdin (`-` is stdin).
        pub input: Option<PathBuf> = None,
        /// Listen for TCP connections on this `IP:PORT` instead of reading stdin;
        /// every connection is a source of points.
        pub listen: Option<String> = None,
        /// Most TCP connections served at once; more wait in the accept backlog.
        pub max_connections: usize = 16,
        /// Record format: `csv` (commas, whitespace, semicolons or tabs) or `json`
        /// (one array of numbers per line).
        pub format: Format = Format::Csv,
        /// Fields to use, 0-based (field 0 is the first), in this order; all
        /// fields when absent.
        pub columns: Option<Vec<usize>> = None,
        /// Header names of the CSV fields to use, in this order (the first line
        /// must then be a header); instead of `columns`.
        pub column_names: Option<Vec<String>> = None,
        /// CSV field separator: `auto` (decided by a vote of the first
        /// lines and reported), `comma`, `semicolon` (numbers may use a decimal comma),
        /// `tab`, `pipe` or `whitespace`.
        pub delimiter: Delimiter = Delimiter::Auto,
        /// JSON objects: the fields to use, in this order; `env.temp` walks into
        /// a nested object.
        pub fields: Option<Vec<String>> = None,
        /// JSON: accept numbers written as strings (`"21.5"`), otherwise a
        /// rejected record.
        pub string_numbers: bool = false,
        /// Dimension of the points; taken from the first valid record when absent.
        pub dim: Option<usize> = None,
        /// Lines longer than this many bytes are rejected without being held.
        pub max_line_bytes: usize = DEFAULT_MAX_LINE_BYTES,
        /// `skip` bad records (counted and reported) or `fail` at the first one.
        pub on_error: OnError = OnError::Skip,
        /// Fail the run (exit status 4, after checkpointing) when more than
        /// this fraction of its records is rejected; 1 never fails.
        pub max_reject_rate: f64 = DEFAULT_MAX_REJECT_RATE,
        /// Pass the points of an `input` file through a random buffer of this
        /// many points before learning: a file sorted by a column is a
        /// drifting stream to one-pass EM, the buffer undoes most of that in
        /// bounded memory. Not with `score` (lines would not follow the
        /// input) or `on_error = "fail"`.
        pub shuffle_buffer: Option<usize> = None,
        /// Checkpoint file; no checkpoint is written when absent.
        pub checkpoint: Option<PathBuf> = None,
        /// Also checkpoint every this many points read.
        pub checkpoint_every: Option<u64> = None,
        /// Also checkpoint every this many seconds.
        pub checkpoint_interval: Option<f64> = None,
        /// Older checkpoint generations kept as `PATH.1`, `PATH.2`, ...
        pub keep: usize = 2,
        /// Continue the model in the checkpoint instead of starting a new one.
        pub resume: bool = false,
        /// Start a new model even though the checkpoint file exists; its first
        /// save rotates the old file into `PATH.1` (replaces it when `keep` is 0).
        pub overwrite: bool = false,
        /// Write a score line per point to stdout (test-then-train), in the
        /// input `format` (CSV or JSON lines).
        pub score: bool = false,
        /// Also write the K responsibilities on every score line.
        pub score_fields: bool = false,
        /// Copy these input fields into every score line, first, in this
        /// order: 0-based CSV columns or JSON array elements, CSV header
        /// names or JSON field paths (`env.ts`), and the pseudo-fields
        /// `@source`, `@line` and `@message`.
        pub score_keep: Option<Vec<String>> = None,
        /// Flag points whose log-likelihood is below this value as anomalies.
        pub alert_below: Option<f64> = None,
        /// Flag points whose log-likelihood is below the running q-quantile.
        pub alert_quantile: Option<f64> = None,
        /// Serve the admin HTTP endpoints (`/metrics`, `/healthz`, `/livez`,
        /// `/model`) on this `IP:PORT`, or on loopback for a bare `PORT`.
        pub admin: Option<String> = None,
        /// After SIGTERM/SIGINT, read each open connection at most this many
        /// seconds (less when it ends or goes quiet).
        pub shutdown_timeout: f64 = DEFAULT_SHUTDOWN_TIMEOUT_SECS,
        /// Close a TCP connection that sent nothing for this many seconds.
        pub idle_timeout: Option<f64> = None,
        /// Log a one-line stats summary every this many seconds.
        pub stats_interval: Option<f64> = None,
        /// Log format on stderr: `text` or `json`.
        pub log_format: LogFormat = LogFormat::Text,
        /// Log filter (`info`, `debug`, `emstream=debug`, ...); `RUST_LOG`
        /// when absent, else `info`.
        pub log_level: Option<String> = None,
        /// PEM certificate chain served by TLS on the listeners (with `tls_key`).
        pub tls_cert: Option<PathBuf> = None,
        /// PEM private key of `tls_cert`.
        pub tls_key: Option<PathBuf> = None,
        /// PEM bundle of client CAs: every client must present a certificate
        /// signed by one of them (mutual TLS). Needs `tls_cert`.
        pub tls_client_ca: Option<PathBuf> = None,
        /// File whose first line is a token every TCP connection must send as
        /// its first line (and the admin server takes as a bearer token).
        pub auth_token_file: Option<PathBuf> = None,
        /// Threads of the learner's E-step; the available cores but the
        /// `parse_threads`, 1 to [`DEFAULT_THREADS_CAP`], when absent. Any
        /// number learns the same model, bit for bit.
        pub threads: Option<usize> = None,
        /// Threads that parse the input; 1 parses on the stage thread that
        /// orders the batches. A quarter of the available cores, 1 to
        /// [`DEFAULT_PARSE_THREADS_CAP`], when absent. Any number gives the
        /// same batches in the same order (and so the same model).
        pub parse_threads: Option<usize> = None,
        /// End the run as at the end of input once no record has arrived for
        /// this many seconds (any source).
        pub stop_when_idle: Option<f64> = None,
        /// Subscribe to this MQTT broker (`mqtt://HOST:PORT`, or `mqtts://`
        /// with `mqtt_ca_file`) instead of reading stdin.
        pub mqtt: Option<String> = None,
        /// MQTT topic filters subscribed to (wildcards `+` and `#`).
        pub topic: Vec<String> = Vec::new(),
        /// MQTT QoS asked for: 0 (at most once) or 1 (at least once).
        pub qos: u8 = 1,
        /// MQTT client id (generated when absent; needed for a persistent session).
        pub client_id: Option<String> = None,
        /// File with the MQTT user name on its first line, the password on its second.
        pub mqtt_credentials: Option<PathBuf> = None,
        /// CA file for `mqtts://`.
        pub mqtt_ca_file: Option<PathBuf> = None,
        /// Keep the MQTT session on the broker across disconnects.
        pub persistent_session: bool = false,
        /// Learn MQTT retained messages too. Off by default: the broker
        /// sends its retained message of every topic again on every
        /// subscription, so each restart would learn them once more.
        pub mqtt_retained: bool = false,
        /// The first broker connection must succeed within this many seconds
        /// (retried for ever when absent).
        pub connect_timeout: Option<f64> = None,
        /// Read a NATS JetStream stream from this server (`nats://HOST:PORT`).
        pub nats: Option<String> = None,
        /// The JetStream stream read.
        pub stream: Option<String> = None,
        /// One subject filter within the stream (all subjects when absent).
        pub subject: Option<String> = None,
        /// The durable JetStream consumer's name.
        pub consumer: Option<String> = None,
        /// NATS credentials file.
        pub nats_credentials: Option<PathBuf> = None,
        /// CA file for TLS to the NATS server (makes TLS required).
        pub nats_ca_file: Option<PathBuf> = None,
        /// PEM client certificate for TLS to the NATS server (a server
        /// with `verify: true`); needs `nats_key`, makes TLS required.
        pub nats_cert: Option<PathBuf> = None,
        /// PEM private key of `nats_cert`.
        pub nats_key: Option<PathBuf> = None,
        /// Continue past a JetStream retention gap (counted) instead of refusing.
        pub allow_gap: bool = false,
        /// Memory budget in bytes for everything sized by data or options
        /// (model of the dimension, warm-up buffer, batch, line buffers);
        /// a configuration or a record's dimension that would exceed it is
        /// refused before anything is allocated.
        pub max_memory: u64 = DEFAULT_MAX_MEMORY,
    }
    learner {
        /// Number of mixture components K, or `auto` to choose K by BIC on the
        /// warm-up among 1..=max_components.
        components: ComponentCount, "K|auto", short = 'k';
        /// Covariance structure: `full`, `diag` or `spherical`.
        covariance: CovarianceType, "TYPE";
        /// Points per mini-batch update.
        batch_size: usize, "N";
        /// Step-size decay alpha in `eta_t = (t + t0)^-alpha`, in (0.5, 1].
        step_decay: f64, "ALPHA";
        /// Step-size offset t0, in batches.
        step_offset: f64, "T0";
        /// Step-size floor eta_min in [0, 1); positive values forget old points.
        step_floor: f64, "ETA";
        /// Points buffered before the first model is fitted.
        warmup: usize, "N";
        /// Covariance regularisation, relative to each dimension's variance.
        reg_covar: f64, "R";
        /// Seed of the learner's random number generator.
        seed: u64, "SEED";
        /// k-means++ seedings tried on the warm-up buffer.
        init_seeds: usize, "N";
        /// Most batch EM iterations per seeding on the warm-up buffer.
        init_iters: usize, "N";
        /// Batch EM on the warm-up buffer stops when an iteration raises the
        /// average log-likelihood per point by less than this (nats).
        init_tol: f64, "TOL";
        /// Largest K tried by `--components auto` and reached by
        /// `--adapt-components`.
        max_components: usize, "N";
        /// Keep K right over the stream: prune, merge, split or spawn a
        /// component when the BIC on the recent points improves by more than
        /// 10 (off by default; `--adapt-components` alone means true).
        adapt_components: bool, "BOOL", missing = "true";
        /// Rounding step of the values: `auto` detects each dimension's
        /// (integers, 0.1, 0.25 ... or none), a step such as `0.1` applies
        /// to every dimension, a list such as `0.1,1,auto` gives one per
        /// dimension. No component claims more for a rounded value than
        /// its rounding cell holds (variance at least step²/(2π)).
        resolution: ResolutionSpec, "STEP|auto";
    }
}

/// Most bytes of batches the parser reads ahead while the learner fits
/// its first model and takes none (at d = 32, K = 10 the fit takes about
/// 50 ms, in which the parser makes 20-30 MiB of points). Afterwards the
/// backlog only shrinks.
pub const READ_AHEAD_BYTES: usize = 32 << 20;

/// The read-ahead of a run whose memory budget is `max_memory`: 1/32 of
/// it, at most [`READ_AHEAD_BYTES`] (that, with the default 1 GiB). The
/// budget's check counts it.
pub fn read_ahead_bytes(max_memory: u64) -> usize {
    usize::try_from(max_memory / 32).map_or(READ_AHEAD_BYTES, |b| b.min(READ_AHEAD_BYTES))
}

/// Most threads the learner takes by default (without `threads`): past
/// this a default mini-batch of 1,000 points has too few sub-blocks to
/// share (see [`crate::model::em::sub_block_points`]).
pub const DEFAULT_THREADS_CAP: usize = 8;

/// Most threads `threads` accepts.
pub const MAX_THREADS: usize = 256;

/// The E-step threads when `threads` is not given: the available cores but
/// the `parse_threads` the parser takes (1: the parser stage's own thread;
/// at d = 32 parsing a point costs about three quarters of learning it: on
/// 2 cores a second E-step thread made the whole process 28 % slower,
/// 0.66 -> 0.85 s for 1M points), at least 1
/// and at most [`DEFAULT_THREADS_CAP`].
pub fn default_threads(parse_threads: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(parse_threads)
        .clamp(1, DEFAULT_THREADS_CAP)
}

/// Most parse threads by default (without `parse_threads`).
pub const DEFAULT_PARSE_THREADS_CAP: usize = 4;

/// The parse threads when `parse_threads` is not given: a quarter of the
/// available cores, at least 1 (parsing on the stage thread, as on a
/// machine of up to 7 cores) and at most [`DEFAULT_PARSE_THREADS_CAP`].
/// At d = 32 parsing a point costs about three quarters of learning it
/// with one E-step thread; the E-step takes the other cores.
pub fn default_parse_threads() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 4)
        .clamp(1, DEFAULT_PARSE_THREADS_CAP)
}

/// A configuration that cannot be used; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for these keys (this
    /// includes unknown keys, which the message names).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said, with the key.
        message: String,
    },
    /// A broker source option is wrong.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Both `input` and `listen` are set.
    #[error("input and listen are both set: read either a file/stdin (--input) or TCP (--listen), not both")]
    InputAndListen,
    /// `listen` is not an `IP:PORT` address.
    #[error("listen = {0:?} is not an IP:PORT address; write e.g. 127.0.0.1:7878")]
    ListenAddr(String),
    /// `max_connections` is 0.
    #[error("max_connections must be at least 1")]
    MaxConnections,
    /// `max_line_bytes` is out of range.
    #[error("max_line_bytes = {0} is out of range: give a value from 1 to {MAX_LINE_BYTES_LIMIT}")]
    MaxLineBytes(usize),
    /// `columns` is empty or lists a field twice.
    #[error(transparent)]
    Columns(#[from] ColumnsError),
    /// Both `columns` and `column_names` are given.
    #[error(
        "columns (0-based indices) and column_names (header names) are both set: give one of them"
    )]
    ColumnsTwoWays,
    /// `column_names` is empty.
    #[error("column_names is empty: list at least one header name, e.g. --columns carat,price")]
    ColumnNamesEmpty,
    /// `fields` without `format = "json"`.
    #[error("fields names values of JSON objects: add --format json, or use --columns for CSV")]
    FieldsNeedJson,
    /// A CSV-only option with `format = "json"`.
    #[error("column_names and delimiter apply to CSV only: with --format json name the values with --fields")]
    CsvOnly,
    /// A `score_keep` list that cannot be read.
    #[error("{0} (config key score_keep)")]
    ScoreKeep(String),
    /// `shuffle_buffer` with something it cannot work with.
    #[error("shuffle_buffer {0}")]
    ShuffleBuffer(&'static str),
    /// `max_reject_rate` is not in [0, 1].
    #[error("max_reject_rate = {0} is out of range: give a fraction from 0 to 1 (1 never fails)")]
    MaxRejectRate(f64),
    /// `dim` is 0.
    #[error("dim must be at least 1")]
    DimZero,
    /// `dim` disagrees with the number of `columns`.
    #[error("dim = {dim} but columns (or column_names, fields) lists {columns} fields: drop dim or make them agree")]
    DimColumns {
        /// The dimension given.
        dim: usize,
        /// The number of columns given.
        columns: usize,
    },
    /// A learner option is out of range.
    #[error(transparent)]
    Learner(#[from] ParamError),
    /// `threads` is 0 or above [`MAX_THREADS`].
    #[error("threads = {0} is out of range: give 1 to {MAX_THREADS} (or leave it out for the available cores but the parse threads, 1 to {DEFAULT_THREADS_CAP})")]
    Threads(usize),
    /// `parse_threads` is 0 or above [`MAX_THREADS`].
    #[error("parse_threads = {0} is out of range: give 1 to {MAX_THREADS} (1 parses on the thread that orders the batches; leave it out for a quarter of the available cores, 1 to {DEFAULT_PARSE_THREADS_CAP})")]
    ParseThreads(usize),
    /// `checkpoint_every` is 0.
    #[error(
        "checkpoint_every must be at least 1 point (leave it out to checkpoint only at the end)"
    )]
    CheckpointEvery,
    /// `checkpoint_interval` is not a positive number of seconds.
    #[error("checkpoint_interval = {0} must be a positive number of seconds (leave it out to checkpoint only at the end)")]
    CheckpointInterval(f64),
    /// Both `resume` and `overwrite` are set.
    #[error("resume and overwrite are both set: --resume continues the model in the checkpoint, --overwrite starts a new one; choose one")]
    ResumeAndOverwrite,
    /// A checkpoint option is given without a checkpoint path.
    #[error("{0} needs a checkpoint file: add --checkpoint PATH")]
    NeedsCheckpoint(&'static str),
    /// Both alert rules are given.
    #[error("alert_below and alert_quantile are both set: choose one anomaly rule")]
    TwoAlertRules,
    /// `alert_below` is not finite.
    #[error("alert_below = {0} must be a finite log-likelihood")]
    AlertBelow(f64),
    /// `alert_quantile` is outside (0, 1).
    #[error("alert_quantile = {0} must be strictly between 0 and 1, e.g. 0.001")]
    AlertQuantile(f64),
    /// The options (and the configured dimension) need more memory than
    /// `max_memory` allows.
    #[error("{what} would need about {need} bytes, more than max_memory (--max-memory) = {budget}: {fix}")]
    Memory {
        /// What would be too large.
        what: String,
        /// Estimated bytes.
        need: u128,
        /// The budget.
        budget: u64,
        /// What to change.
        fix: &'static str,
    },
    /// `admin` is neither `IP:PORT` nor a port.
    #[error("admin = {0:?} is neither IP:PORT nor a port number; write e.g. 127.0.0.1:9090, or 9090 for loopback")]
    AdminAddr(String),
    /// An interval so short that its lines would flood the log.
    #[error("stats_interval (--stats-interval) = {0} is too short: give at least {MIN_STATS_INTERVAL} seconds")]
    StatsTooOften(f64),
    /// A timeout or interval is not a positive number of seconds.
    #[error("{key} = {value} must be a positive number of seconds")]
    Seconds {
        /// The key.
        key: &'static str,
        /// The value given.
        value: f64,
    },
    /// `log_level` is not a valid filter.
    #[error(
        "log_level = {0:?} is not a log filter; write e.g. info, debug, or emstream=debug,warn"
    )]
    LogLevel(String),
    /// A score option is given without `score`.
    #[error("{0} only applies to score output: add --score")]
    NeedsScore(&'static str),
    /// `keep` is above [`MAX_KEEP`].
    #[error("keep = {0} is out of range: give a value from 0 to {MAX_KEEP}")]
    Keep(usize),
    /// The TLS or token options do not go together.
    #[error(transparent)]
    Access(#[from] SecurityError),
    /// Responsibilities asked for while K may change mid-stream.
    #[error("score_fields (--score-fields) writes K responsibilities per line, but adapt_components (--adapt-components) changes K mid-stream: drop one of them")]
    ScoreFieldsWithAdapt,
    /// A key (the first field) needs a cargo feature (the second) this
    /// build was compiled without.
    #[error("{0} needs the `{1}` feature, which this build of emstream was compiled without: rebuild with `--features {1}` (it is on by default)")]
    FeatureOff(&'static str, &'static str),
}

impl Config {
    /// Parses a TOML configuration; keys absent from `text` keep their
    /// defaults. `path` is only used in messages.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for invalid TOML, a value of the wrong type or
    /// an unknown key (named in the message).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_message(text, &e),
        })
    }

    /// Reads and parses a TOML configuration file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the file cannot be read, otherwise as
    /// [`Config::from_toml`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = Config::read_text(path)?;
        Config::from_toml(&text, path)
    }

    /// The text of a configuration file: a regular file (a FIFO or a
    /// device is refused without blocking) of at most [`MAX_CONFIG_BYTES`],
    /// in UTF-8.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] naming the file and what is wrong with it.
    pub fn read_text(path: &Path) -> Result<String, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let bytes = crate::security::read_regular(path, MAX_CONFIG_BYTES).map_err(read_err)?;
        String::from_utf8(bytes)
            .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// The top-level keys set in a TOML text (for [`RunConfig::with_given`]).
    ///
    /// # Errors
    ///
    /// As [`Config::from_toml`].
    pub fn keys_in_toml(text: &str, path: &Path) -> Result<BTreeSet<String>, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_message(text, &e),
        })?;
        Ok(table.keys().cloned().collect())
    }

    /// Applies every rule once.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] rule broken; its message says what to change.
    pub fn check(self) -> Result<RunConfig, ConfigError> {
        let input = self
            .input
            .clone()
            .filter(|p| p.as_os_str() != "-" && !p.as_os_str().is_empty());
        let source = match (input, &self.listen) {
            (Some(_), Some(_)) => return Err(ConfigError::InputAndListen),
            (Some(p), None) => Source::File(p),
            (None, Some(addr)) => Source::Listen(
                addr.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::ListenAddr(addr.clone()))?,
            ),
            (None, None) => Source::Stdin,
        };
        let mut others = Vec::new();
        if source != Source::Stdin {
            others.push(if self.listen.is_some() {
                "listen"
            } else {
                "input"
            });
        }
        let source = match brokers::check(&self, &others)? {
            #[cfg(feature = "mqtt")]
            (Some(m), _) => Source::Mqtt(m),
            #[cfg(not(feature = "mqtt"))]
            (Some(_), _) => return Err(ConfigError::FeatureOff("mqtt", "mqtt")),
            #[cfg(feature = "nats")]
            (_, Some(n)) => Source::Nats(n),
            #[cfg(not(feature = "nats"))]
            (_, Some(_)) => return Err(ConfigError::FeatureOff("nats", "nats")),
            (None, None) => source,
        };
        let stop_when_idle = brokers::seconds("stop_when_idle", self.stop_when_idle)?;
        if self.max_connections == 0 {
            return Err(ConfigError::MaxConnections);
        }
        if self.max_line_bytes == 0 || self.max_line_bytes > MAX_LINE_BYTES_LIMIT {
            return Err(ConfigError::MaxLineBytes(self.max_line_bytes));
        }
        if !(0.0..=1.0).contains(&self.max_reject_rate) {
            return Err(ConfigError::MaxRejectRate(self.max_reject_rate));
        }
        let columns = self.columns.clone().map(Columns::new).transpose()?;
        if columns.is_some() && self.column_names.is_some() {
            return Err(ConfigError::ColumnsTwoWays);
        }
        if self.column_names.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::ColumnNamesEmpty);
        }
        let fields = self.fields.clone().filter(|f| !f.is_empty());
        if fields.is_some() && self.format != Format::Json {
            return Err(ConfigError::FieldsNeedJson);
        }
        if (self.column_names.is_some() || self.delimiter != Delimiter::Auto)
            && self.format != Format::Csv
        {
            return Err(ConfigError::CsvOnly);
        }
        if let Some(dim) = self.dim {
            if dim == 0 {
                return Err(ConfigError::DimZero);
            }
            let listed = columns
                .as_ref()
                .map(Columns::len)
                .or(self.column_names.as_ref().map(Vec::len))
                .or(fields.as_ref().map(Vec::len));
            if let Some(n) = listed {
                if n != dim {
                    return Err(ConfigError::DimColumns { dim, columns: n });
                }
            }
        }
        let params = self.params().check()?;
        if let Some(n) = self.shuffle_buffer {
            if n == 0 {
                return Err(ConfigError::ShuffleBuffer(
                    "is 0: give at least 1 point, or leave it out",
                ));
            }
            if !matches!(source, Source::File(_)) {
                return Err(ConfigError::ShuffleBuffer("reorders a file: give --input PATH (a stream that never ends cannot wait for the buffer)"));
            }
            if self.score {
                return Err(ConfigError::ShuffleBuffer("reorders the points, so score lines would not follow the input: drop --score, or score afterwards with emstream score"));
            }
            if self.on_error == OnError::Fail {
                return Err(ConfigError::ShuffleBuffer("with --on-error fail cannot say which points came before the bad record: use --on-error skip"));
            }
        }
        let parse_threads = match self.parse_threads {
            None => default_parse_threads(),
            Some(t) if (1..=MAX_THREADS).contains(&t) => t,
            Some(t) => return Err(ConfigError::ParseThreads(t)),
        };
        let threads = match self.threads {
            None => default_threads(parse_threads),
            Some(t) if (1..=MAX_THREADS).contains(&t) => t,
            Some(t) => return Err(ConfigError::Threads(t)),
        };
        self.check_memory(&params, columns.as_ref().map(|c| c.len()).or(self.dim))?;

        if self.checkpoint_every == Some(0) {
            return Err(ConfigError::CheckpointEvery);
        }
        let interval = match self.checkpoint_interval {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => return Err(ConfigError::CheckpointInterval(s)),
        };
        if self.resume && self.overwrite {
            return Err(ConfigError::ResumeAndOverwrite);
        }
        if self.keep > MAX_KEEP {
            return Err(ConfigError::Keep(self.keep));
        }
        let access = AccessFiles {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            auth_token_file: self.auth_token_file.clone(),
        };
        if access.tls_cert.is_some() != access.tls_key.is_some() {
            return Err(SecurityError::CertWithoutKey.into());
        }
        if access.tls_client_ca.is_some() && access.tls_cert.is_none() {
            return Err(SecurityError::ClientCaWithoutTls.into());
        }
        if access.tls_cert.is_some() && !cfg!(feature = "tls") {
            return Err(ConfigError::FeatureOff("tls_cert", "tls"));
        }
        let checkpoint = match &self.checkpoint {
            Some(path) => Some(CheckpointPolicy {
                path: path.clone(),
                every: self.checkpoint_every,
                interval,
                keep: self.keep,
                resume: self.resume,
                overwrite: self.overwrite,
            }),
            None => {
                if self.resume {
                    return Err(ConfigError::NeedsCheckpoint("resume"));
                }
                if self.overwrite {
                    return Err(ConfigError::NeedsCheckpoint("overwrite"));
                }
                if self.checkpoint_every.is_some() {
                    return Err(ConfigError::NeedsCheckpoint("checkpoint_every"));
                }
                if interval.is_some() {
                    return Err(ConfigError::NeedsCheckpoint("checkpoint_interval"));
                }
                None
            }
        };

        let alert = match (self.alert_below, self.alert_quantile) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoAlertRules),
            (Some(b), None) if !b.is_finite() => return Err(ConfigError::AlertBelow(b)),
            (Some(b), None) => AlertRule::Below(b),
            (None, Some(q)) if !(q > 0.0 && q < 1.0) => return Err(ConfigError::AlertQuantile(q)),
            (None, Some(q)) => AlertRule::Quantile(q),
            (None, None) => AlertRule::None,
        };
        let score = if self.score {
            if self.score_fields && self.adapt_components {
                return Err(ConfigError::ScoreFieldsWithAdapt);
            }
            Some(ScoreOptions {
                json: self.format == Format::Json,
                responsibilities: self.score_fields,
                alert,
            })
        } else {
            if self.alert_below.is_some() {
                return Err(ConfigError::NeedsScore("alert_below"));
            }
            if self.alert_quantile.is_some() {
                return Err(ConfigError::NeedsScore("alert_quantile"));
            }
            if self.score_fields {
                return Err(ConfigError::NeedsScore("score_fields"));
            }
            if self.score_keep.is_some() {
                return Err(ConfigError::NeedsScore("score_keep"));
            }
            None
        };
        let keep = self
            .score_keep
            .as_deref()
            .map(crate::input::keep::KeepItem::parse_list)
            .transpose()
            .map_err(ConfigError::ScoreKeep)?;

        let admin = self.admin.as_deref().map(admin_addr).transpose()?;
        if admin.is_some() && !cfg!(feature = "admin") {
            return Err(ConfigError::FeatureOff("admin", "admin"));
        }
        let secs = |key: &'static str, value: f64| {
            seconds(value).ok_or(ConfigError::Seconds { key, value })
        };
        let shutdown_timeout = secs("shutdown_timeout", self.shutdown_timeout)?;
        let idle_timeout = self
            .idle_timeout
            .map(|v| secs("idle_timeout", v))
            .transpose()?;
        let stats_interval = self
            .stats_interval
            .map(|v| secs("stats_interval", v))
            .transpose()?;
        if let Some(v) = self.stats_interval.filter(|v| *v < MIN_STATS_INTERVAL) {
            return Err(ConfigError::StatsTooOften(v));
        }
        if let Some(level) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|_| ConfigError::LogLevel(level.clone()))?;
        }

        Ok(RunConfig {
            daemon: DaemonConfig {
                admin,
                shutdown_timeout,
                idle_timeout,
                stats_interval,
                log_format: self.log_format,
                log_level: self.log_level.clone(),
            },
            source,
            parser: ParserConfig {
                format: self.format,
                columns,
                dim: self.dim,
                delimiter: self.delimiter,
                column_names: self.column_names.clone(),
                fields,
                string_numbers: self.string_numbers,
                keep,
            },
            max_line_bytes: self.max_line_bytes,
            max_connections: self.max_connections,
            on_error: self.on_error,
            max_reject_rate: self.max_reject_rate,
            shuffle_buffer: self.shuffle_buffer,
            params,
            checkpoint,
            score,
            given: BTreeSet::new(),
            access,
            threads,
            parse_threads,
            stop_when_idle,
            max_memory: self.max_memory,
        })
    }
}

impl ConfigError {
    /// The configuration key a broken rule is about, if one (for
    /// `check-config` to name its line).
    pub fn key(&self) -> Option<&'static str> {
        Some(match self {
            ConfigError::InputAndListen | ConfigError::ListenAddr(_) => "listen",
            ConfigError::MaxConnections => "max_connections",
            ConfigError::MaxLineBytes(_) => "max_line_bytes",
            ConfigError::Columns(_) => "columns",
            ConfigError::ColumnsTwoWays | ConfigError::ColumnNamesEmpty => "column_names",
            ConfigError::FieldsNeedJson => "fields",
            ConfigError::CsvOnly => "format",
            ConfigError::ScoreKeep(_) => "score_keep",
            ConfigError::ShuffleBuffer(_) => "shuffle_buffer",
            ConfigError::MaxRejectRate(_) => "max_reject_rate",
            ConfigError::Threads(_) => "threads",
            ConfigError::ParseThreads(_) => "parse_threads",
            ConfigError::Keep(_) => "keep",
            ConfigError::ScoreFieldsWithAdapt => "adapt_components",
            ConfigError::DimZero | ConfigError::DimColumns { .. } => "dim",
            ConfigError::CheckpointEvery => "checkpoint_every",
            ConfigError::CheckpointInterval(_) => "checkpoint_interval",
            ConfigError::ResumeAndOverwrite => "overwrite",
            ConfigError::NeedsCheckpoint(k) | ConfigError::NeedsScore(k) => k,
            ConfigError::TwoAlertRules | ConfigError::AlertQuantile(_) => "alert_quantile",
            ConfigError::AlertBelow(_) => "alert_below",
            ConfigError::AdminAddr(_) => "admin",
            ConfigError::FeatureOff(key, _) => key,
            ConfigError::Seconds { key, .. } => key,
            ConfigError::StatsTooOften(_) => "stats_interval",
            ConfigError::LogLevel(_) => "log_level",
            ConfigError::Memory { .. } => "max_memory",
            // A learner option's message starts with its key.
            ConfigError::Learner(e) => {
                let msg = e.to_string();
                return LEARNER_KEYS.iter().copied().find(|k| {
                    msg.strip_prefix(k)
                        .is_some_and(|rest| rest.starts_with([' ', ':']))
                });
            }
            ConfigError::Read { .. }
            | ConfigError::Parse { .. }
            | ConfigError::Broker(_)
            | ConfigError::Access(_) => return None,
        })
    }
}

/// The 1-based line where `key = ...` is set at the top level of a TOML
/// text, if it is.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// A TOML error as `line N, key K: what` (the key when the error's span
/// starts on a `key = value` line), so a wrong type names where it is.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let at = span.start.min(text.len());
    let line_no = text[..at].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line_no}, key {k}: {}", e.message()),
        None => format!("line {line_no}: {}", e.message()),
    }
}

impl Config {
    /// The memory budget rule: line buffers of every connection, the
    /// parser's read-ahead during the first fit ([`read_ahead_bytes`], 1/32
    /// of the budget) and, when the dimension is configured, the learner
    /// ([`crate::model::learner_memory`]).
    fn check_memory(&self, params: &Params, dim: Option<usize>) -> Result<(), ConfigError> {
        let budget = self.max_memory;
        // A connection holds up to a line being framed and a chunk in flight.
        let conns = if self.listen.is_some() {
            self.max_connections
        } else {
            1
        };
        // Bytes taken before the learner: line buffers and read-ahead.
        let reserved =
            (conns as u128) * (self.max_line_bytes as u128) * 2 + read_ahead_bytes(budget) as u128;
        if reserved > budget as u128 {
            return Err(ConfigError::Memory {
                what: format!(
                    "line buffers of {conns} connections of max_line_bytes = {} and the parser's read-ahead (1/32 of max_memory)",
                    self.max_line_bytes
                ),
                need: reserved,
                budget,
                fix: "lower max_connections or max_line_bytes, or raise max_memory",
            });
        }
        if let Some(d) = dim {
            let need = crate::model::learner_memory(params, d);
            if need.is_none_or(|n| n as u128 + reserved > budget as u128) {
                return Err(ConfigError::Memory {
                    what: format!(
                        "a model of dimension {d} with {} {} components, warmup = {} and batch_size = {}",
                        params.components, params.covariance, params.warmup, params.batch_size
                    ),
                    need: need.map_or(u128::MAX, |n| n as u128 + reserved),
                    budget,
                    fix: "lower components, warmup or batch_size, use covariance diag, or raise max_memory",
                });
            }
        }
        Ok(())
    }
}

/// Where points come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Standard input, read on its own thread.
    Stdin,
    /// A file, read on its own thread.
    File(PathBuf),
    /// A TCP listener; every connection is a source.
    Listen(SocketAddr),
    /// An MQTT subscription.
    #[cfg(feature = "mqtt")]
    Mqtt(MqttOptions),
    /// A NATS JetStream stream, replayed exactly once into the model.
    #[cfg(feature = "nats")]
    Nats(NatsOptions),
}

/// When and where checkpoints are written.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPolicy {
    /// The checkpoint file.
    pub path: PathBuf,
    /// Checkpoint every this many points read, besides the final one.
    pub every: Option<u64>,
    /// Checkpoint at least this often, besides the final one.
    pub interval: Option<Duration>,
    /// Older generations kept.
    pub keep: usize,
    /// Continue the model in the checkpoint.
    pub resume: bool,
    /// Start a new model even though the checkpoint file exists.
    pub overwrite: bool,
}

/// The service side of a run: admin endpoints, timeouts, logs.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    /// Where the admin HTTP server listens, if anywhere.
    pub admin: Option<SocketAddr>,
    /// How long connections are read after the stop.
    pub shutdown_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// How often the stats line is logged, if at all.
    pub stats_interval: Option<Duration>,
    /// Log format on stderr.
    pub log_format: LogFormat,
    /// Log filter, if given (else `RUST_LOG`, else `info`).
    pub log_level: Option<String>,
}

/// A configuration that passed [`Config::check`]: what the pipeline runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub(crate) daemon: DaemonConfig,
    pub(crate) source: Source,
    pub(crate) parser: ParserConfig,
    pub(crate) max_line_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) on_error: OnError,
    pub(crate) max_reject_rate: f64,
    pub(crate) shuffle_buffer: Option<usize>,
    pub(crate) params: CheckedParams,
    pub(crate) checkpoint: Option<CheckpointPolicy>,
    pub(crate) score: Option<ScoreOptions>,
    pub(crate) given: BTreeSet<String>,
    pub(crate) access: AccessFiles,
    pub(crate) threads: usize,
    pub(crate) parse_threads: usize,
    pub(crate) stop_when_idle: Option<Duration>,
    pub(crate) max_memory: u64,
}

impl RunConfig {
    /// Records which configuration keys the user gave explicitly (in the
    /// config file or as flags). On `--resume`, an explicitly given
    /// `components`, `covariance` or `dim` that differs from the checkpoint
    /// refuses the resume; other explicitly given learner keys that differ
    /// are reported as ignored (the checkpoint's values are kept).
    pub fn with_given<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.given = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The memory budget in bytes (`max_memory`).
    pub fn max_memory(&self) -> u64 {
        self.max_memory
    }

    /// Where points come from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// How records are parsed (columns 0-based here).
    pub fn parser(&self) -> &ParserConfig {
        &self.parser
    }

    /// The learner options.
    pub fn params(&self) -> &CheckedParams {
        &self.params
    }

    /// The checkpoint policy, if checkpoints are written.
    pub fn checkpoint(&self) -> Option<&CheckpointPolicy> {
        self.checkpoint.as_ref()
    }

    /// Score output options, if `--score` is on.
    pub fn score(&self) -> Option<&ScoreOptions> {
        self.score.as_ref()
    }

    /// What to do with bad records.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// Largest fraction of rejected records before the run fails.
    pub fn max_reject_rate(&self) -> f64 {
        self.max_reject_rate
    }

    /// Most concurrent TCP connections.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Longest accepted line in bytes.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// The admin server, timeouts and logs.
    pub fn daemon(&self) -> &DaemonConfig {
        &self.daemon
    }

    /// Threads of the learner's E-step.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Threads that parse the input (`--parse-threads`).
    pub fn parse_threads(&self) -> usize {
        self.parse_threads
    }

    /// The run ends once idle this long (`--stop-when-idle`).
    pub fn stop_when_idle(&self) -> Option<Duration> {
        self.stop_when_idle
    }

    /// Keys given explicitly (see [`RunConfig::with_given`]).
    pub fn given(&self) -> &BTreeSet<String> {
        &self.given
    }

    /// TLS and token files of the listeners (TCP ingest, admin server):
    /// load them with [`crate::security::Guard::load`].
    pub fn access(&self) -> &AccessFiles {
        &self.access
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(f: impl FnOnce(&mut Config)) -> Result<RunConfig, ConfigError> {
        let mut c = Config::default();
        f(&mut c);
        c.check()
    }

    fn shipped() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/emstream.toml");
        std::fs::read_to_string(path).expect("config/emstream.toml is readable")
    }

    #[test]
    fn a_stats_interval_that_floods_the_log_is_refused() {
        for (v, ok) in [(1e-9, false), (0.05, false), (0.1, true), (60.0, true)] {
            let c = Config {
                stats_interval: Some(v),
                ..Config::default()
            };
            match c.check() {
                Ok(_) => assert!(ok, "{v} accepted"),
                Err(e) => {
                    assert!(!ok, "{v}: {e}");
                    assert!(e.to_string().contains("at least 0.1 seconds"), "{e}");
                    assert_eq!(e.key(), Some("stats_interval"));
                }
            }
        }
    }

    #[test]
    fn default_learner_options_are_the_models() {
        assert_eq!(Config::default().params(), Params::default());
    }

    #[test]
    fn shipped_file_parses_to_the_defaults() {
        let c = Config::from_toml(&shipped(), Path::new("config/emstream.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn shipped_file_documents_every_key() {
        // Every field, set or commented out, with a comment line above it.
        let mut all = Config {
            input: Some("x".into()),
            listen: Some("x".into()),
            columns: Some(vec![1]),
            shuffle_buffer: Some(1),
            column_names: Some(vec!["x".into()]),
            fields: Some(vec!["x".into()]),
            dim: Some(1),
            checkpoint: Some("x".into()),
            checkpoint_every: Some(1),
            checkpoint_interval: Some(1.0),
            alert_below: Some(1.0),
            alert_quantile: Some(0.1),
            admin: Some("x".into()),
            idle_timeout: Some(1.0),
            stats_interval: Some(1.0),
            log_level: Some("x".into()),
            tls_cert: Some("x".into()),
            tls_key: Some("x".into()),
            tls_client_ca: Some("x".into()),
            auth_token_file: Some("x".into()),
            threads: Some(2),
            parse_threads: Some(2),
            ..Config::default()
        };
        all.resume = true;
        all.overwrite = true;
        let table: toml::Table = toml::from_str(&toml::to_string(&all).unwrap()).unwrap();
        let text = shipped();
        let lines: Vec<&str> = text.lines().collect();
        for key in table.keys() {
            let at = lines
                .iter()
                .position(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.strip_prefix(key.as_str())
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                })
                .unwrap_or_else(|| panic!("config/emstream.toml does not mention {key}"));
            assert!(
                at > 0 && lines[at - 1].trim_start().starts_with('#'),
                "key {key} in config/emstream.toml has no comment above it"
            );
        }
    }

    // The example serves the admin endpoints.
    #[test]
    #[cfg(feature = "admin")]
    fn daemon_example_parses_and_checks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/daemon.toml");
        let c = Config::from_file(&path).unwrap();
        let run = c.check().unwrap();
        assert!(matches!(run.source(), Source::Listen(_)));
        assert!(run.checkpoint().is_some());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("componets = 3\n", Path::new("c.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("componets"), "{msg}");
        assert!(msg.contains("c.toml"), "{msg}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = Config::from_toml("seed = 1\nbatch_size = \"three\"\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("line 2, key batch_size: invalid type"),
            "{msg}"
        );
        // components takes a number or "auto": another string is named with
        // its line and what to give.
        let err = Config::from_toml("seed = 1\ncomponents = \"three\"\n", Path::new("c.toml"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2, key components"), "{msg}");
        assert!(msg.contains("\"auto\""), "{msg}");
    }

    #[test]
    fn a_type_error_names_its_key_and_line() {
        let text = "# comment\nseed = 1\ncomponents = \"three\"\n";
        let msg = Config::from_toml(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 3, key components"), "{msg}");
        assert_eq!(key_line(text, "components"), Some(3));
        assert_eq!(key_line(text, "dim"), None);
    }

    #[test]
    fn daemon_keys_are_checked() {
        #[cfg(feature = "admin")]
        {
            let run = checked(|c| c.admin = Some("9090".into())).unwrap();
            assert_eq!(
                run.daemon().admin,
                Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
            );
            let run = checked(|c| c.admin = Some("0.0.0.0:1".into())).unwrap();
            assert_eq!(
                run.daemon().admin,
                Some(SocketAddr::from(([0, 0, 0, 0], 1)))
            );
        }
        // A build without the admin server says which feature it lacks.
        #[cfg(not(feature = "admin"))]
        {
            let e = checked(|c| c.admin = Some("9090".into())).unwrap_err();
            assert_eq!(e.key(), Some("admin"));
            assert!(e.to_string().contains("the `admin` feature"), "{e}");
        }
        let run = checked(|_| {}).unwrap();
        assert_eq!(run.daemon().shutdown_timeout, Duration::from_secs(10));
        let e = checked(|c| c.admin = Some("localhost".into())).unwrap_err();
        assert_eq!(e.key(), Some("admin"));
        let e = checked(|c| c.idle_timeout = Some(0.0)).unwrap_err();
        assert!(e.to_string().contains("idle_timeout = 0"), "{e}");
        let e = checked(|c| c.log_level = Some("no such=level=x".into())).unwrap_err();
        assert_eq!(e.key(), Some("log_level"));
        let e = checked(|c| c.batch_size = 0).unwrap_err();
        assert_eq!(e.key(), Some("batch_size"));
    }

    #[test]
    fn keys_are_listed() {
        let keys = Config::keys_in_toml("components = 3\nseed = 1\n", Path::new("c")).unwrap();
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            vec!["components".to_string(), "seed".to_string()]
        );
    }

    #[test]
    fn defaults_check() {
        let run = Config::default().check().unwrap();
        assert_eq!(run.source(), &Source::Stdin);
        assert!(run.checkpoint().is_none());
        assert!(run.score().is_none());
    }

    #[test]
    fn dash_input_is_stdin() {
        let run = checked(|c| c.input = Some("-".into())).unwrap();
        assert_eq!(run.source(), &Source::Stdin);
    }

    #[test]
    fn rule_input_and_listen() {
        let e = checked(|c| {
            c.input = Some("a".into());
            c.listen = Some("127.0.0.1:1".into());
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::InputAndListen), "{e}");
    }

    #[test]
    fn rule_listen_addr() {
        let e = checked(|c| c.listen = Some("localhost".into())).unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:7878"), "{e}");
    }

    #[test]
    fn rule_threads() {
        for bad in [0, MAX_THREADS + 1] {
            let e = checked(|c| c.threads = Some(bad)).unwrap_err();
            assert!(matches!(e, ConfigError::Threads(t) if t == bad), "{e}");
            assert!(e.to_string().contains("give 1 to"), "{e}");
        }
        assert_eq!(checked(|c| c.threads = Some(3)).unwrap().threads(), 3);
        let default = checked(|_| {}).unwrap().threads();
        assert!((1..=DEFAULT_THREADS_CAP).contains(&default));
        assert_eq!(default, default_threads(default_parse_threads()));
    }

    #[test]
    fn rule_parse_threads() {
        for bad in [0, MAX_THREADS + 1] {
            let e = checked(|c| c.parse_threads = Some(bad)).unwrap_err();
            assert!(matches!(e, ConfigError::ParseThreads(t) if t == bad), "{e}");
            assert!(e.to_string().contains("parse_threads = "), "{e}");
            assert_eq!(e.key(), Some("parse_threads"));
        }
        let run = checked(|c| c.parse_threads = Some(3)).unwrap();
        assert_eq!(run.parse_threads(), 3);
        let default = checked(|_| {}).unwrap().parse_threads();
        assert!((1..=DEFAULT_PARSE_THREADS_CAP).contains(&default));
        assert_eq!(default, default_parse_threads());
    }

    #[test]
    fn rule_max_connections() {
        let e = checked(|c| c.max_connections = 0).unwrap_err();
        assert!(matches!(e, ConfigError::MaxConnections), "{e}");
    }

    /// The budget holds the line buffers and the parser's read-ahead
    /// (1/32 of it): stdin's 2 × 64 KiB fit in 133,000 bytes, but not
    /// with 4,156 more.
    #[test]
    fn rule_memory_counts_the_read_ahead() {
        let e = checked(|c| c.max_memory = 133_000).unwrap_err();
        assert!(matches!(e, ConfigError::Memory { .. }), "{e}");
        assert!(e.to_string().contains("read-ahead"), "{e}");
        assert!(checked(|c| c.max_memory = 140_000).is_ok());
    }

    #[test]
    fn rule_max_line_bytes() {
        assert!(matches!(
            checked(|c| c.max_line_bytes = 0).unwrap_err(),
            ConfigError::MaxLineBytes(0)
        ));
        assert!(matches!(
            checked(|c| c.max_line_bytes = MAX_LINE_BYTES_LIMIT + 1).unwrap_err(),
            ConfigError::MaxLineBytes(_)
        ));
    }

    #[test]
    fn rule_columns_empty() {
        let e = checked(|c| c.columns = Some(vec![])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Columns(ColumnsError::Empty)),
            "{e}"
        );
    }

    #[test]
    fn rule_column_twice() {
        let e = checked(|c| c.columns = Some(vec![2, 1, 2])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Columns(ColumnsError::Twice(2))),
            "{e}"
        );
    }

    #[test]
    fn columns_are_zero_based() {
        let run = checked(|c| c.columns = Some(vec![0, 2, 5])).unwrap();
        assert_eq!(
            run.parser().columns.as_ref().map(Columns::fields),
            Some(&[0, 2, 5][..])
        );
    }

    #[test]
    fn reject_rate_rule() {
        // Judged at the end whatever the count; mid-run from 1000 records.
        assert_eq!(reject_rate_exceeded(0.5, 0, 3, true), Some(1.0));
        assert_eq!(reject_rate_exceeded(0.5, 0, 3, false), None);
        assert_eq!(reject_rate_exceeded(0.5, 0, 0, true), None);
        assert_eq!(reject_rate_exceeded(0.5, 5, 5, true), None, "at the limit");
        assert_eq!(reject_rate_exceeded(0.5, 4, 6, true), Some(0.6));
        assert_eq!(reject_rate_exceeded(0.5, 400, 600, false), Some(0.6));
        assert_eq!(reject_rate_exceeded(0.5, 400, 599, false), None);
        assert_eq!(reject_rate_exceeded(1.0, 0, 10_000, false), None);
        for bad in [-0.1, 1.5, f64::NAN] {
            let c = Config {
                max_reject_rate: bad,
                ..Config::default()
            };
            assert!(
                matches!(c.check(), Err(ConfigError::MaxRejectRate(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rule_dim_zero() {
        let e = checked(|c| c.dim = Some(0)).unwrap_err();
        assert!(matches!(e, ConfigError::DimZero), "{e}");
    }

    #[test]
    fn rule_dim_columns() {
        let e = checked(|c| {
            c.dim = Some(3);
            c.columns = Some(vec![1, 2]);
        })
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::DimColumns { dim: 3, columns: 2 }),
            "{e}"
        );
    }

    #[test]
    fn rule_learner_params() {
        let e = checked(|c| c.components = crate::model::ComponentCount::Fixed(0)).unwrap_err();
        assert!(matches!(e, ConfigError::Learner(_)), "{e}");
    }

    #[test]
    fn rule_checkpoint_every() {
        let e = checked(|c| {
            c.checkpoint = Some("m.ckpt".into());
            c.checkpoint_every = Some(0);
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::CheckpointEvery), "{e}");
    }

    #[test]
    fn rule_checkpoint_interval() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = checked(|c| {
                c.checkpoint = Some("m.ckpt".into());
                c.checkpoint_interval = Some(bad);
            })
            .unwrap_err();
            assert!(matches!(e, ConfigError::CheckpointInterval(_)), "{e}");
        }
    }

    #[test]
    fn rule_checkpoint_options_need_a_path() {
        let e = checked(|c| c.resume = true).unwrap_err();
        assert!(e.to_string().contains("--checkpoint PATH"), "{e}");
        let e = checked(|c| c.checkpoint_every = Some(10)).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::NeedsCheckpoint("checkpoint_every")
        ));
        let e = checked(|c| c.checkpoint_interval = Some(1.0)).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::NeedsCheckpoint("checkpoint_interval")
        ));
    }

    #[test]
    fn rule_resume_and_overwrite() {
        let e = checked(|c| {
            c.checkpoint = Some("m.ckpt".into());
            c.resume = true;
            c.overwrite = true;
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::ResumeAndOverwrite), "{e}");
        assert!(e.to_string().contains("choose one"), "{e}");
    }

    #[test]
    fn overwrite_is_passed_on() {
        let run = checked(|c| {
            c.checkpoint = Some("m.ckpt".into());
            c.overwrite = true;
        })
        .unwrap();
        assert!(run.checkpoint().unwrap().overwrite);
        let e = checked(|c| c.overwrite = true).unwrap_err();
        assert!(
            matches!(e, ConfigError::NeedsCheckpoint("overwrite")),
            "{e}"
        );
    }

    #[test]
    fn rule_two_alert_rules() {
        let e = checked(|c| {
            c.score = true;
            c.alert_below = Some(-10.0);
            c.alert_quantile = Some(0.01);
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::TwoAlertRules), "{e}");
    }

    #[test]
    fn rule_alert_below_finite() {
        let e = checked(|c| {
            c.score = true;
            c.alert_below = Some(f64::NEG_INFINITY);
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::AlertBelow(_)), "{e}");
    }

    #[test]
    fn rule_alert_quantile_range() {
        for bad in [0.0, 1.0, -0.5, f64::NAN] {
            let e = checked(|c| {
                c.score = true;
                c.alert_quantile = Some(bad);
            })
            .unwrap_err();
            assert!(matches!(e, ConfigError::AlertQuantile(_)), "{e}");
        }
    }

    #[test]
    fn rule_score_options_need_score() {
        let e = checked(|c| c.alert_below = Some(-3.0)).unwrap_err();
        assert!(matches!(e, ConfigError::NeedsScore("alert_below")), "{e}");
        let e = checked(|c| c.alert_quantile = Some(0.1)).unwrap_err();
        assert!(
            matches!(e, ConfigError::NeedsScore("alert_quantile")),
            "{e}"
        );
        let e = checked(|c| c.score_fields = true).unwrap_err();
        assert!(matches!(e, ConfigError::NeedsScore("score_fields")), "{e}");
    }

    #[test]
    fn score_options_are_passed_on() {
        let run = checked(|c| {
            c.score = true;
            c.score_fields = true;
            c.format = Format::Json;
            c.alert_quantile = Some(0.01);
        })
        .unwrap();
        assert_eq!(
            run.score(),
            Some(&ScoreOptions {
                json: true,
                responsibilities: true,
                alert: AlertRule::Quantile(0.01)
            })
        );
    }

    #[test]
    fn learner_keys_are_config_keys_with_text() {
        let table: toml::Table =
            toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        let p = Params::default();
        for k in LEARNER_KEYS {
            assert!(table.contains_key(*k), "{k}");
            let text = param_text(&p, k).unwrap_or_else(|| panic!("no text for {k}"));
            assert!(!text.is_empty(), "{k}");
        }
        assert_eq!(param_text(&p, "format"), None);
    }

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        learner: LearnerArgs,
    }

    #[test]
    fn learner_flags_set_their_keys_and_say_so() {
        use clap::Parser as _;
        let flags = Flags::try_parse_from([
            "x",
            "-k",
            "3",
            "--covariance",
            "DIAG",
            "--step-floor",
            "0.01",
            "--seed",
            "7",
        ])
        .unwrap();
        let mut c = Config::default();
        let mut given = BTreeSet::new();
        flags.learner.apply(&mut c, &mut given);
        assert_eq!(c.components, crate::model::ComponentCount::Fixed(3));
        assert_eq!(c.covariance, CovarianceType::Diagonal);
        assert_eq!(c.step_floor, 0.01);
        assert_eq!(c.seed, 7);
        let want: BTreeSet<String> = ["components", "covariance", "step_floor", "seed"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(given, want);
        assert_eq!(
            c.params().components,
            crate::model::ComponentCount::Fixed(3)
        );
        // Every learner key is a flag.
        for k in LEARNER_KEYS {
            let flag = format!("--{}", k.replace('_', "-"));
            let value = param_text(&Params::default(), k).unwrap();
            let arg = format!("{flag}={value}");
            assert!(Flags::try_parse_from(["x", arg.as_str()]).is_ok(), "{arg}");
        }
        assert!(Flags::try_parse_from(["x", "--warmup", "many"]).is_err());
    }

    #[test]
    fn k_can_be_auto_and_adapted() {
        use crate::model::ComponentCount;
        use clap::Parser as _;
        for args in [
            &[
                "x",
                "-k",
                "auto",
                "--max-components",
                "4",
                "--adapt-components",
            ][..],
            &[
                "x",
                "--components",
                "AUTO",
                "--max-components=4",
                "--adapt-components=true",
            ],
        ] {
            let flags = Flags::try_parse_from(args).unwrap();
            let mut c = Config::default();
            let mut given = BTreeSet::new();
            flags.learner.apply(&mut c, &mut given);
            assert_eq!(c.components, ComponentCount::Auto, "{args:?}");
            assert_eq!(c.max_components, 4);
            assert!(c.adapt_components);
            assert!(c.clone().check().is_ok());
        }
        let e = Flags::try_parse_from(["x", "-k", "many"]).unwrap_err();
        assert!(e.to_string().contains("\"auto\""), "{e}");
        let c: Config =
            toml::from_str("components = \"auto\"\nmax_components = 6\nadapt_components = true")
                .unwrap();
        assert_eq!(c.params().components, ComponentCount::Auto);
        assert_eq!(c.params().max_components, 6);
        assert!(Config::default().max_components == 10 && !Config::default().adapt_components);
        let e = checked(|c| c.max_components = 0).unwrap_err();
        assert!(e.to_string().contains("--max-components"), "{e}");
        let e = checked(|c| {
            c.score = true;
            c.score_fields = true;
            c.adapt_components = true;
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::ScoreFieldsWithAdapt), "{e}");
    }
}
