//! The `emstream` command line: parses flags, merges them over the config
//! file, installs signal handling, calls the library and maps the outcome to
//! an exit status. Nothing else lives here.
//!
//! Exit status: 0 success (also after SIGINT/SIGTERM or a closed stdout);
//! 1 a run or inspect failure; 2 a usage or configuration error, or a
//! refused resume; 3 a bad record under `--on-error fail`; 130 a second
//! signal.
//!
//! Signals during `run`: SIGINT/SIGTERM stop it (drain, final checkpoint,
//! exit 0; a second one exits at once with 130); SIGHUP writes a checkpoint
//! of the newest live snapshot and the run goes on (nothing is reloaded).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use emstream::config::{enum_value, Config, LearnerArgs, LogFormat, OnError};
use emstream::input::{ColumnList, Delimiter, Format};
use emstream::pipeline::{self, PipelineError};

/// Learn a Gaussian mixture model from a never-ending stream of points by
/// stepwise (online) EM.
#[derive(Parser, Debug)]
#[command(name = "emstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Learn from points on stdin, a file or TCP, checkpointing the model.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Show the model in a checkpoint file.
    Inspect(InspectArgs),
    /// Score points with the model of a checkpoint, without learning.
    Score(Box<emstream::report::score::ScoreArgs>),
    /// Draw the model of a checkpoint as SVG (or PNG).
    Plot(Box<emstream::report::plot::PlotArgs>),
    /// Compare the models of two checkpoints.
    Diff(Box<emstream::report::diff::DiffArgs>),
    /// Check a configuration file and print the effective settings.
    CheckConfig(CheckConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff) of emstream, or of one command (emstream-run(1), ...).
    Man(ManArgs),
    /// Group member: publish E-step statistics of leased partitions of a JetStream stream.
    #[cfg(feature = "nats")]
    Worker(Box<emstream::group::WorkerArgs>),
    /// Group member: apply the workers' statistics to the group's model (one active, others stand by).
    #[cfg(feature = "nats")]
    Reducer(Box<emstream::group::ReducerArgs>),
}

#[derive(Args, Debug)]
struct ManArgs {
    /// The command whose page to print (run, inspect, ...); emstream(1) without it.
    command: Option<String>,
}

#[derive(Args, Debug)]
struct CheckConfigArgs {
    /// The TOML configuration file.
    path: PathBuf,
}

#[derive(Args, Debug)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Flags of `emstream run`; each overrides the config key of the same name
/// (snake_case).
#[derive(Args, Debug, Default)]
struct RunArgs {
    /// TOML config file; flags override its keys (see config/emstream.toml).
    #[arg(long, value_name = "FILE", env = "EMSTREAM_CONFIG")]
    config: Option<PathBuf>,

    /// Read points from this file instead of stdin ("-" is stdin).
    #[arg(long, value_name = "PATH")]
    input: Option<PathBuf>,
    /// Listen for TCP connections on IP:PORT; each connection is a source.
    #[arg(long, value_name = "ADDR", env = "EMSTREAM_LISTEN")]
    listen: Option<String>,
    /// Most TCP connections served at once.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_connections: Option<usize>,
    /// Record format: csv or json.
    #[arg(long, value_name = "FORMAT", value_parser = enum_value::<Format>)]
    format: Option<Format>,
    /// Fields to use: 0-based indices (field 0 is the first), e.g. 1,2,5,
    /// or header names, e.g. carat,price.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// CSV field separator: auto (default; decided by a vote of the first
    /// lines and reported), comma, semicolon (numbers may use a decimal comma), tab,
    /// pipe or whitespace.
    #[arg(long, value_name = "SEP", value_parser = delimiter_value)]
    delimiter: Option<Delimiter>,
    /// JSON objects: the fields to use, e.g. temp,hum or env.temp,env.hum.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    fields: Option<Vec<String>>,
    /// JSON: accept numbers written as strings ("21.5").
    #[arg(long)]
    string_numbers: bool,
    /// Dimension of the points (default: from the first valid record).
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    dim: Option<usize>,
    /// Longest accepted line in bytes.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    max_line_bytes: Option<usize>,
    /// Bad records: skip (count and report) or fail (stop at the first).
    #[arg(long, value_name = "MODE", value_parser = enum_value::<OnError>)]
    on_error: Option<OnError>,
    /// Fail (exit status 4, after checkpointing) when more than this
    /// fraction of the records is rejected (default 0.5; 1 never fails).
    #[arg(long, value_name = "R")]
    max_reject_rate: Option<f64>,
    /// Learn the points of an --input file through a random buffer of N
    /// points (a file sorted by a column is a drifting stream otherwise).
    #[arg(long, value_name = "N")]
    shuffle_buffer: Option<usize>,

    /// Learner options.
    #[command(flatten)]
    learner: LearnerArgs,

    /// Checkpoint file (none is written without it).
    #[arg(long, value_name = "PATH", env = "EMSTREAM_CHECKPOINT")]
    checkpoint: Option<PathBuf>,
    /// Also checkpoint every N points read.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    checkpoint_every: Option<u64>,
    /// Also checkpoint every SECS seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    checkpoint_interval: Option<f64>,
    /// Older checkpoint generations kept (PATH.1, PATH.2, ...), 0 to 1000.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = keep_value)]
    keep: Option<usize>,
    /// Continue the model in the checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start a new model even though the checkpoint exists (the old file becomes PATH.1, or is replaced with --keep 0).
    #[arg(long)]
    overwrite: bool,

    /// Write a score line per point to stdout (test-then-train).
    #[arg(long)]
    score: bool,
    /// Also write the K responsibilities on every score line.
    #[arg(long)]
    score_fields: bool,
    /// Copy input fields into every score line, first: 0-based CSV columns,
    /// header names, JSON field paths, @source, @line, @message.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    score_keep: Option<Vec<String>>,
    /// Flag points with log-likelihood below LL as anomalies.
    #[arg(long, value_name = "LL", allow_negative_numbers = true)]
    alert_below: Option<f64>,
    /// Flag points below the running Q-quantile of log-likelihood.
    #[arg(long, value_name = "Q")]
    alert_quantile: Option<f64>,
    /// Threads of the learner's E-step (default: the available cores but the parse threads, 1 to 8); the model is the same with any number.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Threads that parse the input (default: a quarter of the available cores, 1 to 4; 1 parses on the thread that orders the batches); any number gives the same batches in the same order.
    #[arg(long, value_name = "N")]
    parse_threads: Option<usize>,

    /// Serve /metrics, /healthz, /livez and /model on IP:PORT (a bare PORT is loopback).
    #[arg(long, value_name = "ADDR", env = "EMSTREAM_ADMIN")]
    admin: Option<String>,
    /// After SIGTERM/SIGINT, read open connections at most SECS seconds.
    #[arg(long, value_name = "SECS")]
    shutdown_timeout: Option<f64>,
    /// Close a TCP connection that sent nothing for SECS seconds.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Log a stats line every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<f64>,
    /// Log format on stderr: text or json.
    #[arg(long, value_name = "FORMAT", value_parser = enum_value::<LogFormat>, env = "EMSTREAM_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info, debug, emstream=debug (default: RUST_LOG, else info).
    #[arg(long, value_name = "FILTER", env = "EMSTREAM_LOG_LEVEL")]
    log_level: Option<String>,
    /// PEM certificate chain for TLS on the listeners (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM client CA bundle: clients must present a certificate it signed (mutual TLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// File whose first line is the token each TCP connection must send first.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// End the run as at end of input once no record arrived for SECS seconds,
    /// counted from the first record or the first connection (to the broker,
    /// or of a client to --listen), not from the start.
    #[arg(long, value_name = "SECS")]
    stop_when_idle: Option<f64>,
    /// Subscribe to an MQTT broker: mqtt://HOST:PORT (or mqtts:// with --mqtt-ca-file).
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// MQTT topic filter (repeatable; wildcards + and #).
    #[arg(long, value_name = "FILTER")]
    topic: Option<Vec<String>>,
    /// MQTT QoS: 0 or 1.
    #[arg(long, value_name = "QOS")]
    qos: Option<u8>,
    /// MQTT client id (needed for --persistent-session).
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// File with the MQTT user name (line 1) and password (line 2).
    #[arg(long, value_name = "FILE")]
    mqtt_credentials: Option<PathBuf>,
    /// CA file for mqtts://.
    #[arg(long, value_name = "FILE")]
    mqtt_ca_file: Option<PathBuf>,
    /// Keep the MQTT session on the broker across disconnects.
    #[arg(long)]
    persistent_session: bool,
    /// Learn MQTT retained messages too (skipped and counted by default:
    /// the broker sends them again on every subscription).
    #[arg(long)]
    mqtt_retained: bool,
    /// Fail if the first broker connection takes longer than SECS seconds.
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<f64>,
    /// Read a NATS JetStream stream from nats://HOST:PORT (exactly once into the checkpoint).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// The JetStream stream.
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
    /// One subject filter within the stream.
    #[arg(long, value_name = "FILTER")]
    subject: Option<String>,
    /// The durable JetStream consumer's name.
    #[arg(long, value_name = "NAME")]
    consumer: Option<String>,
    /// NATS credentials file.
    #[arg(long, value_name = "FILE")]
    nats_credentials: Option<PathBuf>,
    /// CA file for TLS to the NATS server.
    #[arg(long, value_name = "FILE")]
    nats_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for TLS to the NATS server; needs --nats-key.
    #[arg(long, value_name = "FILE")]
    nats_cert: Option<PathBuf>,
    /// Private key (PEM) of --nats-cert.
    #[arg(long, value_name = "FILE")]
    nats_key: Option<PathBuf>,
    /// Continue past a JetStream retention gap (counted) instead of refusing.
    #[arg(long)]
    allow_gap: bool,
    /// Memory budget in bytes for the model, buffers and line buffers (default 1 GiB).
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<u64>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// The checkpoint file, or a group's model: nats://HOST:PORT/GROUP.
    path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `--keep`: a count from 0 to [`MAX_KEEP`](emstream::config::MAX_KEEP),
/// with the range in the message for anything else (a negative number too).
fn keep_value(s: &str) -> Result<usize, String> {
    let max = emstream::config::MAX_KEEP;
    match s.trim().parse::<i128>() {
        Ok(n) if (0..=max as i128).contains(&n) => Ok(n as usize),
        _ => Err(format!("give a number of generations from 0 to {max}")),
    }
}

/// A `--delimiter` value: a name (as [`enum_value`] reads, any case) or the
/// character itself (`;`, a tab), which the shared enum parser would trim.
fn delimiter_value(s: &str) -> Result<Delimiter, String> {
    s.parse().or_else(|e| enum_value(s).map_err(|_| e))
}

/// Writes a message to stderr, ignoring a closed stderr: through the log
/// subscriber once `run` has installed it, else as a plain line.
fn say(msg: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::info!(target: "emstream", "{msg}");
    } else {
        let _ = writeln!(std::io::stderr(), "emstream: {msg}");
    }
}

/// [`say`] at error level.
fn say_error(msg: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!(target: "emstream", "{msg}");
    } else {
        let _ = writeln!(std::io::stderr(), "emstream: {msg}");
    }
}

/// The command line, with every option of `run` and `reducer` (which
/// takes the learner's options) that has a default showing it in `--help`
/// (`[default: 5000]`): the defaults of the configuration
/// ([`Config::default`], what `config/emstream.toml` says), which a flag
/// or the config file overrides. Defaults that are computed say so in
/// their own help; the other commands declare theirs with their options.
fn command() -> clap::Command {
    let defaults = emstream::config::default_texts();
    let mut cli = Cli::command();
    for name in ["run", "reducer"] {
        if cli.find_subcommand(name).is_none() {
            // `reducer` is left out of a build without NATS.
            continue;
        }
        cli = cli.mut_subcommand(name, |mut sub| {
            let ids: Vec<String> = sub
                .get_arguments()
                .filter(|a| a.get_action().takes_values())
                .map(|a| a.get_id().to_string())
                .collect();
            for id in ids {
                let Some(value) = defaults.get(&id) else {
                    continue;
                };
                sub = sub.mut_arg(&id, |a| {
                    let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                    if help.contains("default") {
                        a
                    } else {
                        a.help(format!("{help} [default: {value}]"))
                    }
                });
            }
            sub
        });
    }
    cli
}

fn main() -> ExitCode {
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Inspect(args) => inspect(&args),
        Command::Score(args) => report(emstream::report::score::run_score(&args).map(|_| ())),
        Command::Plot(args) => report(emstream::report::plot::run_plot(&args)),
        Command::Diff(args) => report(emstream::report::diff::run_diff(&args)),
        Command::CheckConfig(args) => check_config(&args),
        #[cfg(feature = "nats")]
        Command::Worker(args) => group(|stop| async move {
            emstream::group::worker::run(*args, stop)
                .await
                .map(|s| s.line())
        }),
        #[cfg(feature = "nats")]
        Command::Reducer(args) => group(|stop| async move {
            emstream::group::reducer::run(*args, stop)
                .await
                .map(|s| s.line)
        }),
        Command::Completions(args) => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut command(), "emstream", &mut out);
            ExitCode::SUCCESS
        }
        Command::Man(args) => {
            let top = command();
            let page = match &args.command {
                None => top,
                Some(name) => match top.find_subcommand(name) {
                    Some(sub) => sub.clone().name(format!("emstream-{name}")),
                    None => {
                        say(&format!("no command {name:?}: try run, inspect, score, plot, diff, check-config, worker, reducer"));
                        return ExitCode::from(2);
                    }
                },
            };
            let mut out = std::io::stdout().lock();
            match clap_mangen::Man::new(page).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    say(&format!("cannot write the man page: {e}"));
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `emstream check-config FILE`: the settings a run with this file would
/// use (its keys, the `EMSTREAM_*` environment variables over them, the
/// defaults for the rest) on stdout, or the key, line and reason on stderr
/// with exit status 2.
fn check_config(args: &CheckConfigArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.path) {
        Ok(t) => t,
        Err(e) => {
            say(&format!(
                "cannot read config file {}: {e}",
                args.path.display()
            ));
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::from_toml(&text, &args.path) {
        Ok(c) => c,
        Err(e) => {
            say(&e.to_string());
            return ExitCode::from(2);
        }
    };
    let (env_args, from_env) = match run_args_from_env() {
        Ok(a) => a,
        Err(e) => {
            say(&format!("the environment does not fit a run: {e}"));
            return ExitCode::from(2);
        }
    };
    overlay_args(&mut config, env_args, &mut BTreeSet::new());
    if let Err(e) = config.clone().check() {
        let at = e
            .key()
            .filter(|k| !from_env.iter().any(|(_, key)| key.as_str() == *k))
            .and_then(|k| emstream::config::key_line(&text, k).map(|line| (k, line)))
            .map(|(key, line)| format!(" line {line} ({key})"))
            .unwrap_or_default();
        say(&format!("config file {}{at}: {e}", args.path.display()));
        return ExitCode::from(2);
    }
    match toml::to_string(&config) {
        Ok(effective) => {
            let env = if from_env.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = from_env
                    .iter()
                    .map(|(var, key)| format!("{var} sets {key}"))
                    .collect();
                format!("# from the environment: {}\n", list.join(", "))
            };
            print!(
                "# {}: valid; the settings a run with it uses (environment over the file, defaults filled in):\n{env}{effective}",
                args.path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("cannot print the settings: {e}"));
            ExitCode::from(1)
        }
    }
}

/// The flags of `emstream run` that the environment sets (`EMSTREAM_*`
/// variables, as a run reads them), and which: (variable, config key).
fn run_args_from_env() -> Result<(RunArgs, Vec<(String, String)>), clap::Error> {
    use clap::FromArgMatches;
    let cmd = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
    let from_env = cmd
        .get_arguments()
        .filter(|a| a.get_id() != "config")
        .filter_map(|a| {
            let var = a.get_env()?.to_string_lossy().into_owned();
            std::env::var_os(&var)?;
            Some((var, a.get_id().as_str().to_string()))
        })
        .collect();
    let matches = cmd.try_get_matches_from(Vec::<String>::new())?;
    let mut args = RunArgs::from_arg_matches(&matches)?;
    // check-config reads the file it is given, not EMSTREAM_CONFIG's.
    args.config = None;
    Ok((args, from_env))
}

/// Exit status of a report command: 0; 2 with the error on stderr for an
/// option that is out of range or does not fit the model (a usage error,
/// like one clap finds); else 1.
fn report(result: Result<(), emstream::report::ReportError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&e.to_string());
            let usage = matches!(e, emstream::report::ReportError::Invalid(_));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Sets every key given as a flag and records its name.
macro_rules! overlay {
    ($cfg:ident, $args:ident, $given:ident; $($key:ident),* $(,)?) => {
        $(
            if let Some(v) = $args.$key.take() {
                $cfg.$key = v;
                $given.insert(stringify!($key).to_string());
            }
        )*
    };
}

/// Same for keys that are optional in the config.
macro_rules! overlay_opt {
    ($cfg:ident, $args:ident, $given:ident; $($key:ident),* $(,)?) => {
        $(
            if let Some(v) = $args.$key.take() {
                $cfg.$key = Some(v);
                $given.insert(stringify!($key).to_string());
            }
        )*
    };
}

/// Same for on/off flags: a flag given on the command line sets the key
/// (an absent flag leaves the file's value).
macro_rules! overlay_flag {
    ($cfg:ident, $args:ident, $given:ident; $($key:ident),* $(,)?) => {
        $(
            if $args.$key {
                $cfg.$key = true;
                $given.insert(stringify!($key).to_string());
            }
        )*
    };
}

fn build_config(args: RunArgs) -> Result<emstream::config::RunConfig, String> {
    let mut given = BTreeSet::new();
    let mut cfg = match &args.config {
        Some(path) => {
            let text = Config::read_text(path).map_err(|e| e.to_string())?;
            given.extend(Config::keys_in_toml(&text, path).map_err(|e| e.to_string())?);
            Config::from_toml(&text, path).map_err(|e| e.to_string())?
        }
        None => Config::default(),
    };
    overlay_args(&mut cfg, args, &mut given);
    let checked = cfg.check().map_err(|e| e.to_string())?;
    Ok(checked.with_given(given))
}

/// Sets the config keys that `args` (flags, or their environment
/// variables) give, and records their names in `given`.
fn overlay_args(cfg: &mut Config, mut args: RunArgs, given: &mut BTreeSet<String>) {
    if let Some(list) = args.columns.take() {
        match ColumnList::parse(&list) {
            ColumnList::Indices(i) => cfg.columns = Some(i),
            ColumnList::Names(n) => cfg.column_names = Some(n),
        }
        given.insert("columns".into());
    }
    if args.string_numbers {
        cfg.string_numbers = true;
        given.insert("string_numbers".into());
    }
    std::mem::take(&mut args.learner).apply(cfg, given);
    overlay!(cfg, args, given;
        delimiter, max_connections, format, max_line_bytes, on_error, max_reject_rate, keep,
        shutdown_timeout, log_format);
    overlay_opt!(cfg, args, given;
        input, listen, fields, dim, shuffle_buffer, checkpoint, checkpoint_every, checkpoint_interval,
        alert_below, alert_quantile, score_keep, threads, parse_threads, admin, idle_timeout, stats_interval, log_level);
    overlay_opt!(cfg, args, given;
        tls_cert, tls_key, tls_client_ca, auth_token_file);
    overlay!(cfg, args, given; topic, qos);
    overlay_opt!(cfg, args, given;
        stop_when_idle, mqtt, client_id, mqtt_credentials, mqtt_ca_file, connect_timeout,
        nats, stream, subject, consumer, nats_credentials, nats_ca_file, nats_cert, nats_key);
    overlay!(cfg, args, given; max_memory);
    overlay_flag!(cfg, args, given;
        persistent_session, mqtt_retained, allow_gap, resume, overwrite, score, score_fields);
}

fn run(args: RunArgs) -> ExitCode {
    let config = match build_config(args) {
        Ok(c) => c,
        Err(msg) => {
            say(&msg);
            return ExitCode::from(2);
        }
    };
    emstream::logging::init(config.daemon());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say_error(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(serve(config));
    let code = match result {
        Err((msg, code)) => {
            say_error(&msg);
            ExitCode::from(code)
        }
        Ok(Ok(summary)) => {
            if summary.stop == pipeline::StopReason::OutputClosed {
                say("stdout was closed: stopped reading input");
            }
            if summary.scores_dropped > 0 {
                say(&format!(
                    "score lines of {} points dropped: stdout was not read within {}s of the stop",
                    summary.scores_dropped,
                    pipeline::SCORE_STALL_TIMEOUT.as_secs()
                ));
            }
            if let Some(line) = summary.rejected_line() {
                say(&line);
            }
            for line in summary.replay_lines() {
                say(&line);
            }
            say(&summary.line());
            if let Some(line) = summary.warmup_line() {
                say(&line);
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            say_error(&e.to_string());
            ExitCode::from(match e {
                PipelineError::BadRecord { .. } => 3,
                PipelineError::TooManyRejects { .. } => 4,
                PipelineError::ResumeMismatch { .. }
                | PipelineError::CheckpointExists { .. }
                | PipelineError::CheckpointIsDir { .. }
                | PipelineError::CheckpointDir { .. }
                | PipelineError::CheckpointLocked(_)
                | PipelineError::OnlyOlderGeneration { .. }
                | PipelineError::Access(_)
                | PipelineError::CheckpointNotWritable(_)
                | PipelineError::DanglingLink { .. }
                | PipelineError::Input(_)
                | PipelineError::Learn(emstream::model::LearnError::Resolution(_)) => 2,
                _ => 1,
            })
        }
    };
    // Threads blocked on a read of stdin that never ends must not keep the
    // process alive.
    runtime.shutdown_background();
    code
}

/// Runs the pipeline with its signals, admin server and stats line; an
/// error before it starts comes with its exit status.
async fn serve(
    config: emstream::config::RunConfig,
) -> Result<Result<pipeline::RunSummary, PipelineError>, (String, u8)> {
    let mut signals =
        Signals::new().map_err(|e| (format!("cannot install signal handlers: {e}"), 1))?;
    let daemon = config.daemon().clone();
    let can_save = config.checkpoint().is_some();
    #[cfg(feature = "admin")]
    let access = config.access().clone();
    let pipeline = pipeline::Pipeline::new(config);
    let state = pipeline.state();
    // Signals are handled by a task of their own from the start, so the
    // second stop signal exits at once in every phase (loading, the warm-up
    // fit, the final save), whether or not the run is looking at the first.
    // SIGHUP asks for a checkpoint and is never counted as a stop.
    let (first_tx, first_stop) = tokio::sync::oneshot::channel::<()>();
    let hup_state = state.clone();
    tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        loop {
            match signals.next().await {
                Sig::Hup if can_save => {
                    say("SIGHUP: writing a checkpoint");
                    hup_state.request_checkpoint();
                }
                Sig::Hup => say("SIGHUP: no --checkpoint given, nothing to write"),
                Sig::Stop => match first_tx.take() {
                    Some(tx) => {
                        let _ = tx.send(());
                    }
                    None => {
                        say_error("second signal: exiting at once");
                        std::process::exit(130);
                    }
                },
            }
        }
    });
    #[cfg(feature = "admin")]
    if let Some(addr) = daemon.admin {
        let guard = emstream::security::Guard::load(&access)
            .map_err(|e| (format!("cannot serve admin on {addr}: {e}"), 2))?;
        let admin = emstream::admin::AdminState::new(state.clone(), pipeline.snapshots())
            .with_guard(std::sync::Arc::new(guard));
        let server = emstream::admin::start(addr, admin).await.map_err(|e| {
            (
                format!(
                    "cannot serve admin on {addr}: {e} (choose another --admin address or port)"
                ),
                2,
            )
        })?;
        say(&format!("admin on {}", server.local_addr()));
    }
    if let Some(every) = daemon.stats_interval {
        emstream::logging::spawn_stats(state.clone(), every);
    }
    let shutdown = async move {
        if first_stop.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    Ok(pipeline.run(shutdown).await)
}

/// How long a group member may take to stop after SIGINT/SIGTERM.
#[cfg(feature = "nats")]
const GROUP_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a group member on a multi-threaded runtime (the E-step runs
/// beside the NATS tasks) until it ends or SIGINT/SIGTERM: exit 0 with its
/// summary line, 2 for a usage error, else 1.
#[cfg(feature = "nats")]
fn group<F, Fut>(member: F) -> ExitCode
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<String, emstream::group::GroupError>>,
{
    if let Ok(c) = Config::default().check() {
        emstream::logging::init(c.daemon());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say_error(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let result = runtime.block_on(async {
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                return Err(emstream::group::GroupError(format!(
                    "cannot install signal handlers: {e}"
                )))
            }
        };
        let on_signal = stop.clone();
        tokio::spawn(async move {
            loop {
                if let Sig::Stop = signals.next().await {
                    if on_signal.is_cancelled() {
                        say_error("second signal: exiting at once");
                        std::process::exit(130);
                    }
                    on_signal.cancel();
                }
            }
        });
        let stopped = stop.clone();
        tokio::select! {
            r = member(stop) => r,
            // A server that stays away must not keep a stopped member alive.
            () = async {
                stopped.cancelled().await;
                tokio::time::sleep(GROUP_STOP_GRACE).await;
            } => Err(emstream::group::GroupError(format!(
                "did not stop within {} s of the signal (is the NATS server reachable?): exiting",
                GROUP_STOP_GRACE.as_secs()
            ))),
        }
    });
    runtime.shutdown_background();
    match result {
        Ok(line) => {
            say(&line);
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_error(&e.to_string());
            ExitCode::from(if e.0.starts_with("--") { 2 } else { 1 })
        }
    }
}

/// A signal `run` acts on.
enum Sig {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP.
    Hup,
}

/// SIGINT, SIGTERM and SIGHUP as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Stop,
            _ = self.term.recv() => Sig::Stop,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}

fn inspect(args: &InspectArgs) -> ExitCode {
    let loaded = match args.path.to_str().filter(|p| p.starts_with("nats://")) {
        #[cfg(feature = "nats")]
        Some(url) => emstream::group::fetch_checkpoint(url)
            .map(|(c, _)| c)
            .map_err(|e| e.to_string()),
        #[cfg(not(feature = "nats"))]
        Some(url) => {
            say(&format!(
                "cannot inspect {url}: reading a group's model from NATS needs the `nats` feature, \
                 which this build of emstream was compiled without; rebuild with `--features nats`"
            ));
            return ExitCode::from(2);
        }
        None => emstream::checkpoint::load(&args.path).map_err(|e| e.to_string()),
    };
    let ckpt = match loaded {
        Ok(c) => c,
        Err(e) => {
            say(&format!("cannot inspect: {e}"));
            return ExitCode::from(1);
        }
    };
    let text = if args.json {
        match serde_json::to_string_pretty(&emstream::report::inspect::render_json(&ckpt, None)) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            Err(e) => {
                say(&format!("cannot write JSON: {e}"));
                return ExitCode::from(1);
            }
        }
    } else {
        emstream::report::inspect::render_text(&ckpt, None)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("cannot write to stdout: {e}"));
            ExitCode::from(1)
        }
    }
}
