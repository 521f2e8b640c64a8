//! The parser stage: one thread owns the [`Parser`] (and so the dimension
//! state) and turns chunks from every source into batches for the learner.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use tokio::sync::mpsc;

use super::shuffle::Shuffle;
use super::source::{message_at, MessageStart, Position, SourceEvent};
use super::state::{Ended, RunState, StopReason};
use crate::config::OnError;
use crate::input::{Batch, Chunk, ParseError, Parser, ParserConfig, RejectReason, SourceId};

/// Valid records that decide an unconfigured dimension by majority
/// ([`Parser::with_dim_vote`]): 9 of the first 16 agreeing decide at once.
pub(crate) const DIM_VOTE: usize = 16;

/// What the parser hands the learner: a batch, the source positions its
/// rows reach, the streams that ended, and with `--on-error fail` the bad
/// record that ends the run (the batch then holds only the rows before it).
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) batch: Batch,
    pub(crate) fatal: Option<ParseError>,
    /// (stream, position after the batch's lines), in arrival order.
    pub(crate) positions: Vec<(SourceId, Position)>,
    /// Streams that ended and whose position can be forgotten.
    pub(crate) forget: Vec<SourceId>,
    /// A read error that ended a stream: (its name, the error).
    pub(crate) failed: Option<(String, std::io::Error)>,
    /// The dimensions' names, on the first batch after the parser learned
    /// them (a header, or JSON `--fields`); they go into the checkpoint.
    pub(crate) names: Option<Vec<String>>,
}

/// Runs the parser stage until the event channel closes (or, with
/// `--on-error fail`, until the first bad record, when it stops the run so
/// the sources stop).
// The stage's inputs and outputs, each used once: a struct would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn parser_loop(
    config: ParserConfig,
    on_error: OnError,
    max_dim: usize,
    max_line: usize,
    mut shuffle: Option<Shuffle>,
    mut events: mpsc::Receiver<SourceEvent>,
    batches: SyncSender<Work>,
    recycled: Receiver<Batch>,
    state: &RunState,
) {
    // Without --on-error fail (whose error must be the first bad line in
    // input order), an unconfigured dimension is decided by majority.
    let vote = if on_error == OnError::Fail {
        1
    } else {
        DIM_VOTE
    };
    let mut parser = Parser::new(config.clone())
        .with_max_dim(max_dim)
        .with_dim_vote(vote)
        .with_max_record(max_line);
    // Positions and ends not yet handed on (their chunks held no rows).
    let mut positions = Vec::new();
    let mut forget = Vec::new();
    // Records accepted and rejected per stream, for the close log of a
    // connection (dropped at its end).
    let mut per_stream: HashMap<SourceId, (u64, u64)> = HashMap::new();
    let mut names_sent = false;
    while let Some(event) = events.blocking_recv() {
        let (chunk, messages) = match event {
            SourceEvent::Chunk {
                chunk,
                position,
                messages,
            } => {
                state.replay().touch();
                positions.push((chunk.source, position));
                (chunk, messages)
            }
            SourceEvent::End { source, forget: f } => {
                if f {
                    forget.push(source);
                }
                let (points, rejected) = per_stream.remove(&source).unwrap_or_default();
                if let Some(ended) = state.take_ended(source) {
                    log_closed(source, &ended, points, rejected);
                }
                continue;
            }
            SourceEvent::Torn { source, line } => {
                let mut batch = Batch::default();
                batch.rejected.add(RejectReason::Torn);
                batch.errors.push(ParseError {
                    source_id: source,
                    line,
                    reason: RejectReason::Torn,
                    detail: "no line end before the connection closed: the record may be cut, so it is not learned".into(),
                    message: None,
                });
                let work = Work {
                    batch,
                    positions: std::mem::take(&mut positions),
                    forget: std::mem::take(&mut forget),
                    ..Work::default()
                };
                if batches.send(work).is_err() {
                    break;
                }
                continue;
            }
            SourceEvent::Failed {
                source: _,
                name,
                error,
            } => {
                let work = Work {
                    positions: std::mem::take(&mut positions),
                    forget: std::mem::take(&mut forget),
                    failed: Some((name, error)),
                    ..Work::default()
                };
                if batches.send(work).is_err() {
                    break;
                }
                continue;
            }
        };
        let mut batch = match recycled.try_recv() {
            Ok(b) => clear(b),
            Err(_) => Batch::default(),
        };
        parser.parse(&chunk, &mut batch);
        // A record whose quoted field goes on into the next chunk is not
        // learned yet: a line source's position stops before its first
        // line, so a resume reads it whole.
        if let (Some(open), Some((_, position))) =
            (parser.open_record_line(chunk.source), positions.last_mut())
        {
            if *position == chunk.first_line + super::source::lines_in(&chunk) - 1 {
                *position = open - 1;
            }
        }
        if !messages.is_empty() {
            tag_messages(&chunk, &messages, &mut batch);
            parser.for_each_held_kept(|row| tag_row(&chunk, &messages, row));
        }
        let mut fatal = None;
        if on_error == OnError::Fail && !batch.rejected.by_reason.is_empty() {
            let first = first_error(&chunk, &batch);
            let dim = parser.dim().or(config.dim);
            let keep = match dim {
                Some(d) if d > 0 => {
                    rows_before(&chunk, first.line, &parser.resolved_config(), d) * d
                }
                _ => 0,
            };
            batch.values.truncate(keep);
            batch.kept.truncate(dim.map_or(0, |d| keep / d.max(1)));
            // The run stops at `first`: the records after it were never
            // judged, and `first` itself is reported as the error, not as
            // skipped. Only it counts as rejected.
            batch.errors.clear();
            batch
                .headers
                .retain(|(source, line, _)| *source != first.source_id || *line < first.line);
            batch.rejected.by_reason.clear();
            batch.rejected.by_reason.insert(first.reason, 1);
            fatal = Some(first);
        }
        let counts = per_stream.entry(chunk.source).or_default();
        counts.0 += parser
            .dim()
            .filter(|&d| d > 0)
            .map_or(0, |d| (batch.values.len() / d) as u64);
        counts.1 += batch.rejected.total();
        if let Some(sh) = shuffle.as_mut() {
            sh.pass(&mut batch.values, batch.dim);
        }
        let empty = batch.values.is_empty()
            && batch.rejected.by_reason.is_empty()
            && batch.headers.is_empty()
            && batch.notes.is_empty()
            && batch.fatal.is_none()
            && fatal.is_none();
        if empty {
            continue;
        }
        let last = fatal.is_some() || batch.fatal.is_some();
        let names = match parser.names() {
            Some(n) if !names_sent => {
                names_sent = true;
                Some(n.to_vec())
            }
            _ => None,
        };
        let work = Work {
            batch,
            fatal,
            positions: std::mem::take(&mut positions),
            forget: std::mem::take(&mut forget),
            failed: None,
            names,
        };
        if batches.send(work).is_err() {
            break;
        }
        if last {
            state.stop(StopReason::Failed);
            break;
        }
    }
    // The end of the input: the records held by the dimension vote, then
    // the points still in the shuffle buffer.
    let mut batch = Batch::default();
    parser.finish(&mut batch);
    if let Some(sh) = shuffle.as_mut() {
        sh.pass(&mut batch.values, batch.dim);
        sh.drain(&mut batch.values, batch.dim);
    }
    if !positions.is_empty()
        || !forget.is_empty()
        || !batch.values.is_empty()
        || !batch.rejected.is_empty()
    {
        let _ = batches.send(Work {
            batch,
            positions,
            forget,
            ..Work::default()
        });
    }
}

/// Names the message (topic or subject, sequence) of the kept rows and
/// rejected records of a message source's chunk.
fn tag_messages(chunk: &Chunk, messages: &[MessageStart], batch: &mut Batch) {
    for row in &mut batch.kept {
        tag_row(chunk, messages, row);
    }
    for e in &mut batch.errors {
        if e.source_id == chunk.source && e.line >= chunk.first_line && e.message.is_none() {
            e.message = message_at(messages, e.line).cloned();
        }
    }
}

/// Names the message of a kept row of `chunk` (rows of other chunks, held
/// by the dimension vote, were named with theirs).
fn tag_row(chunk: &Chunk, messages: &[MessageStart], row: &mut crate::input::keep::KeptRow) {
    if row.source == chunk.source && row.line >= chunk.first_line && row.message.is_none() {
        row.message = message_at(messages, row.line).cloned();
    }
}

/// The info line of a closed connection, with what it brought.
fn log_closed(id: SourceId, ended: &Ended, points: u64, rejected: u64) {
    tracing::info!(
        target: "emstream",
        connection = id,
        peer = %ended.peer,
        points,
        rejected,
        duration_s = ended.duration.as_secs_f64(),
        reason = ended.reason.text(),
        "connection #{id} ({}) closed ({}): {points} points, {rejected} records rejected, open {:.3} s",
        ended.peer,
        ended.reason.text(),
        ended.duration.as_secs_f64(),
    );
}

/// Empties a used batch but keeps its allocations (and its dimension).
fn clear(mut b: Batch) -> Batch {
    b.values.clear();
    b.rejected.by_reason.clear();
    b.errors.clear();
    b.headers.clear();
    b.dim_from = None;
    b.notes.clear();
    b.fatal = None;
    b.kept.clear();
    b
}

/// The first bad record of a chunk that had rejects.
fn first_error(chunk: &Chunk, batch: &Batch) -> ParseError {
    match batch.errors.iter().min_by_key(|e| e.line) {
        Some(e) => e.clone(),
        None => {
            // The parser counted a reject without details: name the chunk.
            let reason = batch
                .rejected
                .by_reason
                .keys()
                .next()
                .copied()
                .unwrap_or(crate::input::RejectReason::NotNumeric);
            ParseError {
                source_id: chunk.source,
                line: chunk.first_line,
                reason,
                detail: "a record in this part of the input was rejected".into(),
                message: None,
            }
        }
    }
}

/// How many rows of `chunk` lie before line `bad`: the lines before it are
/// parsed again, by a fresh parser of the same dimension, so the count
/// follows exactly the parser's rules for headers and blank lines.
fn rows_before(chunk: &Chunk, bad: u64, config: &ParserConfig, dim: usize) -> usize {
    let end = prefix_len(chunk, bad);
    if end == 0 {
        return 0;
    }
    let prefix = Chunk {
        source: chunk.source,
        first_line: chunk.first_line,
        bytes: chunk.bytes[..end].to_vec(),
        too_long: chunk
            .too_long
            .iter()
            .copied()
            .filter(|&l| l < bad)
            .collect(),
        last: false,
    };
    // Only the count matters: kept fields (whose header names this prefix
    // may not hold) are left out.
    let mut parser = Parser::new(ParserConfig {
        dim: Some(dim),
        keep: None,
        ..config.clone()
    });
    let mut out = Batch::default();
    parser.parse(&prefix, &mut out);
    out.values.len() / dim
}

/// Byte length of the lines of `chunk` numbered below `bad` (numbering
/// starts at `first_line` and skips the too-long lines, which are not in
/// the bytes).
fn prefix_len(chunk: &Chunk, bad: u64) -> usize {
    let mut line = chunk.first_line;
    let mut skip = chunk.too_long.iter().copied().peekable();
    let mut pos = 0;
    let bytes = &chunk.bytes;
    while pos < bytes.len() {
        while skip.peek().is_some_and(|&l| l <= line) {
            if skip.next() == Some(line) {
                line += 1;
            }
        }
        if line >= bad {
            break;
        }
        pos = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => bytes.len(),
        };
        line += 1;
    }
    pos
}

/// Sends a used batch back to the parser for reuse, dropping it if the
/// parser already holds enough spares.
pub(crate) fn recycle(tx: &SyncSender<Batch>, batch: Batch) {
    match tx.try_send(batch) {
        Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(first_line: u64, text: &str, too_long: Vec<u64>) -> Chunk {
        Chunk {
            source: 0,
            first_line,
            bytes: text.as_bytes().to_vec(),
            too_long,
            last: false,
        }
    }

    #[test]
    fn prefix_stops_before_the_bad_line() {
        let c = chunk(10, "a\nb\nc\nd\n", vec![]);
        assert_eq!(prefix_len(&c, 10), 0);
        assert_eq!(prefix_len(&c, 11), 2);
        assert_eq!(prefix_len(&c, 12), 4);
        assert_eq!(prefix_len(&c, 14), 8);
        assert_eq!(prefix_len(&c, 99), 8);
    }

    #[test]
    fn prefix_skips_too_long_line_numbers() {
        // Lines 1 and 3 were too long: bytes hold lines 2, 4, 5.
        let c = chunk(1, "two\nfour\nfive", vec![1, 3]);
        assert_eq!(prefix_len(&c, 1), 0);
        assert_eq!(prefix_len(&c, 3), 4);
        assert_eq!(prefix_len(&c, 4), 4);
        assert_eq!(prefix_len(&c, 5), 9);
        assert_eq!(prefix_len(&c, 6), 13);
    }
}
