//! `emstream score`: scores points with a fixed model, without learning,
//! through the library's [`crate::score::Scorer`].

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use super::ReportError;
use crate::input::keep::KeepItem;
use crate::input::{
    Batch, BatchReader, Columns, Format, ParseError, Parser, ParserConfig, RejectCounts,
};
use crate::model::{GaussianMixture, ScoreBuffer};
use crate::score::{AlertArgs, KeepFormat, KeptPrefixes, ScoreOptions, Scorer};

/// Arguments of `emstream score`: score points with a fixed model, without
/// learning.
#[derive(Clone, Debug, clap::Args)]
pub struct ScoreArgs {
    /// Checkpoint holding the model.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// File of points to score (default, or `-`: standard input).
    #[arg(long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// How to read the input (as for `run`); `--format` is also the format
    /// of the score lines.
    #[command(flatten)]
    pub read: super::InputArgs,
    /// Also write each point's K responsibilities.
    #[arg(long)]
    pub score_fields: bool,
    /// Anomaly flags.
    #[command(flatten)]
    pub alert: AlertArgs,
    /// Start CSV output with a header line naming the fields.
    #[arg(long)]
    pub header: bool,
    /// Copy input fields into every score line, first: 0-based CSV
    /// columns, header names, JSON field paths, @source, @line, @message.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub score_keep: Option<Vec<String>>,
}

/// What [`score_stream`] saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreSummary {
    /// Points scored (lines written).
    pub points: u64,
    /// Points flagged as anomalies.
    pub anomalies: u64,
    /// Records rejected by the parser, by reason.
    pub rejected: RejectCounts,
    /// The first [`KEPT_ERRORS`] rejected records with their line numbers.
    pub first_errors: Vec<ParseError>,
}

/// How many rejected records [`ScoreSummary::first_errors`] keeps.
pub const KEPT_ERRORS: usize = 10;

/// Options of [`score_stream`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreStreamOptions {
    /// How to read the input (format, delimiter, columns or fields); its
    /// `dim` is set to the model's.
    pub input: ParserConfig,
    /// How the score lines look.
    pub score: ScoreOptions,
    /// Write a CSV header line first.
    pub header: bool,
    /// What `@source` says of the input (its path, or `stdin`).
    pub source_name: String,
}

/// Longest input line accepted (longer ones are rejected as too long).
const MAX_LINE: usize = 1 << 20;
/// Batches in flight between the parser thread and the scoring thread.
const BATCHES_IN_FLIGHT: usize = 4;

/// Scores every record of `input` with a fixed `model` and writes one line
/// per accepted record to `out`, in input order. Reading and parsing run on
/// a thread of their own while this thread scores and writes.
///
/// # Errors
///
/// [`ReportError::Io`] when reading or writing fails (a closed output shows
/// up as `BrokenPipe`); [`ReportError::Invalid`] for columns that do not
/// give the model's dimension.
pub fn score_stream<R, W>(
    model: &GaussianMixture,
    input: R,
    out: W,
    options: &ScoreStreamOptions,
) -> Result<ScoreSummary, ReportError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let d = model.dim();
    let listed = options.input.columns.as_ref().map(Columns::len).or(options
        .input
        .column_names
        .as_ref()
        .or(options.input.fields.as_ref())
        .map(Vec::len));
    if let Some(n) = listed.filter(|&n| n != d) {
        return Err(ReportError::Invalid(format!(
            "--columns (or --fields) names {n} fields but the model has dimension {d}: name exactly {d}"
        )));
    }
    let parser = Parser::new(ParserConfig {
        dim: Some(d),
        ..options.input.clone()
    });
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Batch>>(BATCHES_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT + 2);
    let reader = std::thread::Builder::new()
        .name("score-reader".into())
        .spawn(move || read_batches(input, parser, full_tx, empty_rx))?;

    let keep = options
        .input
        .keep
        .clone()
        .map(|items| KeepFormat::new(items, options.score.json));
    let mut prefixes = KeptPrefixes::default();
    let mut out = BufWriter::with_capacity(1 << 17, out);
    let mut scorer = Scorer::new(options.score.clone(), model.n_components());
    if let Some(k) = &keep {
        scorer = scorer.with_keep(k);
    }
    if options.header {
        out.write_all(scorer.header().as_bytes())?;
    }
    let mut summary = ScoreSummary::default();
    let mut scores = ScoreBuffer {
        want_resp: options.score.responsibilities,
        ..ScoreBuffer::default()
    };
    let mut scratch = Vec::new();
    for msg in full_rx.iter() {
        let mut batch = msg?;
        if let Some(e) = batch.fatal.take() {
            return Err(ReportError::Invalid(e.to_string()));
        }
        for (reason, count) in &batch.rejected.by_reason {
            *summary.rejected.by_reason.entry(*reason).or_insert(0) += count;
        }
        let room = KEPT_ERRORS.saturating_sub(summary.first_errors.len());
        summary
            .first_errors
            .extend(batch.errors.drain(..).take(room));
        scores.labels.clear();
        scores.log_lik.clear();
        scores.resp.clear();
        model.score_batch(
            &batch.values,
            &mut scratch,
            &mut scores.log_lik,
            &mut scores.labels,
            scores.want_resp.then_some(&mut scores.resp),
        );
        summary.points += scores.log_lik.len() as u64;
        let kept = keep.as_ref().map(|k| {
            prefixes.clear();
            for row in &batch.kept {
                k.push(
                    Some(row),
                    &mut |_| options.source_name.clone(),
                    &mut prefixes,
                );
            }
            &prefixes
        });
        scorer.write_block_kept(&scores, kept, &mut out)?;
        // The reader may have finished; then the batch is simply dropped.
        let _ = empty_tx.try_send(batch);
    }
    out.flush()?;
    drop(full_rx);
    // The channel closed, so the reader has returned or is about to.
    let _ = reader.join();
    summary.anomalies = scorer.anomalies();
    Ok(summary)
}

/// The reader thread of [`score_stream`]: a [`BatchReader`] over the
/// input, reusing the batches sent back.
fn read_batches<R: Read>(
    input: R,
    parser: Parser,
    full: mpsc::SyncSender<io::Result<Batch>>,
    empty: mpsc::Receiver<Batch>,
) {
    let mut reader = BatchReader::new(input, 0, MAX_LINE, parser);
    loop {
        let mut batch = empty.try_recv().unwrap_or_default();
        let msg = match reader.next_into(&mut batch) {
            Ok(true) => Ok(batch),
            Ok(false) => return,
            Err(e) => Err(e),
        };
        let failed = msg.is_err();
        if full.send(msg).is_err() || failed {
            return;
        }
    }
}

/// Loads the mixture held by a checkpoint.
///
/// # Errors
///
/// [`ReportError::Checkpoint`] when the file cannot be read or verified,
/// [`ReportError::NoModel`] when it was written during the warm-up and
/// its buffer cannot be fitted on the fly ([`super::checkpoint_model`]).
pub fn load_mixture(path: &std::path::Path) -> Result<GaussianMixture, ReportError> {
    super::checkpoint_model(&crate::checkpoint::load(path)?, path)
}

/// The lines `emstream score` writes to standard error after scoring: the
/// rejected records by reason with the first few of them, and the number of
/// anomalies; none when there is nothing to say.
fn summary_lines(summary: &ScoreSummary) -> Vec<String> {
    let mut lines = Vec::new();
    let rejected: u64 = summary.rejected.by_reason.values().sum();
    if rejected > 0 {
        let reasons: Vec<String> = summary
            .rejected
            .by_reason
            .iter()
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        lines.push(format!(
            "emstream score: {rejected} records rejected ({})",
            reasons.join(", ")
        ));
        for e in summary.first_errors.iter().take(3) {
            lines.push(format!("  {e}"));
        }
    }
    if summary.anomalies > 0 {
        lines.push(format!(
            "emstream score: {} of {} points flagged as anomalies",
            summary.anomalies, summary.points
        ));
    }
    lines
}

/// `emstream score`: scores `--input` (or standard input) with the model of
/// `--model` and writes the lines to standard output; a summary of rejected
/// records goes to standard error. A closed standard output ends the
/// command quietly.
///
/// # Errors
///
/// As [`load_mixture`] and [`score_stream`]; [`ReportError::File`] when the
/// input file cannot be opened.
pub fn run_score(args: &ScoreArgs) -> Result<ScoreSummary, ReportError> {
    let model = load_mixture(&args.model)?;
    let keep = args
        .score_keep
        .as_deref()
        .map(KeepItem::parse_list)
        .transpose()
        .map_err(ReportError::Invalid)?;
    let options = ScoreStreamOptions {
        input: ParserConfig {
            keep,
            ..args.read.parser_config(model.dim())?
        },
        score: ScoreOptions {
            json: args.read.format == Format::Json,
            responsibilities: args.score_fields,
            alert: args.alert.rule(),
        },
        header: args.header,
        source_name: match &args.input {
            Some(p) if p.as_os_str() != "-" => p.display().to_string(),
            _ => "stdin".to_owned(),
        },
    };
    let input: Box<dyn Read + Send> = match &args.input {
        Some(path) => super::open_input(path)?,
        None => Box::new(io::stdin()),
    };
    let stdout = io::stdout();
    let result = score_stream(&model, input, stdout.lock(), &options);
    let summary = match result {
        Err(ReportError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            return Ok(ScoreSummary::default())
        }
        other => other?,
    };
    // A closed stderr loses these lines rather than failing the command.
    let mut err = io::stderr().lock();
    for line in summary_lines(&summary) {
        let _ = writeln!(err, "{line}");
    }
    nothing_scored(&summary, &options.source_name, model.dim())?;
    Ok(summary)
}

/// An input whose every record was rejected is an error (as `run` makes
/// it one), not an empty success that a script reads as "no anomalies".
/// An empty input is not: there was nothing to score.
fn nothing_scored(summary: &ScoreSummary, source: &str, dim: usize) -> Result<(), ReportError> {
    let rejected = summary.rejected.total();
    if summary.points > 0 || rejected == 0 {
        return Ok(());
    }
    Err(ReportError::Data(format!(
        "nothing was scored: all {rejected} records of {source} were rejected (reasons above); \
         the model takes points of {dim} dimensions: check --format, --columns, --fields, \
         --delimiter and the input"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::testing::{check_rates, contaminated, flags, json_number, two_d};
    use crate::score::AlertRule;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn summary_lines_say_rejects_and_anomalies_only_when_there_are_some() {
        let mut summary = ScoreSummary {
            points: 10,
            ..ScoreSummary::default()
        };
        assert!(summary_lines(&summary).is_empty());
        summary
            .rejected
            .by_reason
            .insert(crate::input::RejectReason::NotNumeric, 2);
        summary.anomalies = 1;
        let lines = summary_lines(&summary);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "emstream score: 2 records rejected (2 not a number)"
        );
        assert_eq!(
            lines[1],
            "emstream score: 1 of 10 points flagged as anomalies"
        );
    }

    fn stream_options(format: Format, resp: bool, alert: AlertRule) -> ScoreStreamOptions {
        ScoreStreamOptions {
            input: ParserConfig {
                format,
                ..ParserConfig::default()
            },
            score: ScoreOptions {
                json: format == Format::Json,
                responsibilities: resp,
                alert,
            },
            header: false,
            source_name: "points.csv".into(),
        }
    }

    #[test]
    fn score_stream_writes_a_line_per_accepted_record() {
        let m = two_d();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let pts = m.sample(&mut rng, 20_000);
        let mut text = String::from("x,y\n");
        for (i, p) in pts.chunks(2).enumerate() {
            text.push_str(&format!("{},{}\n", p[0], p[1]));
            if i == 10 {
                text.push_str("1,oops\n");
            }
        }
        let mut out = Vec::new();
        let summary = score_stream(
            &m,
            io::Cursor::new(text.into_bytes()),
            &mut out,
            &stream_options(Format::Csv, false, AlertRule::None),
        )
        .unwrap();
        assert_eq!(summary.points, 20_000);
        assert_eq!(summary.rejected.total(), 1);
        assert_eq!(summary.first_errors[0].line, 13);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for (line, x) in lines.iter().zip(pts.chunks(2)) {
            let (label, ll) = line.split_once(',').unwrap();
            assert_eq!(label.parse::<usize>().unwrap(), m.predict(x));
            assert_eq!(ll.parse::<f64>().unwrap(), m.log_prob(x));
        }
    }

    #[test]
    fn score_stream_reads_json_and_selected_columns() {
        let m = two_d();
        let input = "[9, 1.0, 2.0]\n[9, 7.5, 6.0]\n";
        let mut opts = stream_options(Format::Json, true, AlertRule::Below(-30.0));
        opts.input.columns = Some(Columns::new(vec![1, 2]).unwrap());
        let mut out = Vec::new();
        let summary = score_stream(&m, io::Cursor::new(input), &mut out, &opts).unwrap();
        assert_eq!(summary.points, 2);
        let v: Vec<serde_json::Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(json_number(text, 0, "log_lik"), m.log_prob(&[1.0, 2.0]));
        assert_eq!(v[1]["label"], 1);
        assert_eq!(v[1]["anomaly"], false);
        opts.input.columns = Some(Columns::new(vec![0]).unwrap());
        assert!(matches!(
            score_stream(&m, io::Cursor::new(input), Vec::new(), &opts),
            Err(ReportError::Invalid(_))
        ));
    }

    #[test]
    fn score_stream_header_names_the_fields() {
        let m = two_d();
        let mut opts = stream_options(Format::Csv, true, AlertRule::Quantile(0.01));
        opts.header = true;
        let mut out = Vec::new();
        score_stream(&m, io::Cursor::new("1,1\n"), &mut out, &opts).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("label,log_lik,resp_0,resp_1,anomaly\n"));
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn alert_quantile_on_a_learned_model_test_then_train() {
        // The run --score path: StepwiseEm scores each point before learning
        // from it, warm-up points once the first model exists.
        use crate::model::{Params, StepwiseEm};
        let truth = two_d();
        let (pts, is_out) = contaminated(&truth, 100_000, 21);
        let params = Params {
            components: crate::model::ComponentCount::Fixed(2),
            seed: 3,
            ..Params::default()
        }
        .check()
        .unwrap();
        let mut em = StepwiseEm::new(params, 2);
        let mut scorer = Scorer::new(
            ScoreOptions {
                json: false,
                responsibilities: false,
                alert: AlertRule::Quantile(0.005),
            },
            2,
        );
        let mut sb = ScoreBuffer::default();
        let mut out = Vec::new();
        for block in pts.chunks(2 * 4096) {
            em.observe(block, Some(&mut sb)).unwrap();
            scorer.write_block(&sb, &mut out).unwrap();
            sb.clear();
        }
        em.flush(Some(&mut sb)).unwrap();
        scorer.write_block(&sb, &mut out).unwrap();
        let flagged = flags(std::str::from_utf8(&out).unwrap());
        assert_eq!(flagged.len(), 100_000);
        let (recall, false_rate) = check_rates(&flagged, &is_out);
        assert!(recall >= 0.99, "caught {recall}");
        assert!(false_rate <= 0.01, "false alarms {false_rate}");
    }
}
