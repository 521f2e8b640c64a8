//! Framing and parsing, synchronous: bytes -> whole lines -> rows of f64.
//!
//! A [`Framer`] cuts a byte stream into [`Chunk`]s of whole lines in bounded
//! memory (a line longer than the limit is dropped and reported, never
//! buffered whole). A [`Parser`] turns chunks into [`Batch`]es: row-major
//! f64 values plus the count of bad records by [`RejectReason`] and the
//! first few [`ParseError`]s with line numbers.

use serde::{Deserialize, Serialize};

/// Identifies one input source (stdin is 0, TCP connections count up), so
/// per-source state such as header detection and line numbers stays apart.
pub type SourceId = u64;

/// Whole lines from one source, as cut by a [`Framer`].
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    /// The source the bytes came from.
    pub source: SourceId,
    /// 1-based line number of the first line in `bytes`.
    pub first_line: u64,
    /// Whole lines, each ended by `\n` (the last line of a source may lack it).
    pub bytes: Vec<u8>,
    /// Line numbers of lines dropped for being longer than the limit; they
    /// are not in `bytes`, and numbering in `bytes` skips them.
    pub too_long: Vec<u64>,
    /// True for the last chunk of a source.
    pub last: bool,
}

/// Why a record was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectReason {
    /// The record has a different number of fields than the dimension.
    FieldCount,
    /// A field is not a number.
    NotNumeric,
    /// A field is NaN or infinite.
    NonFinite,
    /// The line is longer than the limit.
    TooLong,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// A `--format json` line is not a JSON array of numbers.
    BadJson,
}

/// Count of rejected records per reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RejectCounts {
    /// (reason, count) in a fixed order; reasons with no rejects are absent.
    pub by_reason: std::collections::BTreeMap<RejectReason, u64>,
}

impl RejectCounts {
    /// Counts one more rejected record for `reason`.
    pub fn add(&mut self, reason: RejectReason) {
        self.add_n(reason, 1);
    }

    /// Counts `n` more rejected records for `reason` (nothing if `n` is 0,
    /// so absent reasons stay absent).
    pub fn add_n(&mut self, reason: RejectReason, n: u64) {
        if n > 0 {
            *self.by_reason.entry(reason).or_insert(0) += n;
        }
    }

    /// Adds every count of `other` to `self` (e.g. a batch's rejects into
    /// the run's totals).
    pub fn merge(&mut self, other: &RejectCounts) {
        for (&reason, &n) in &other.by_reason {
            self.add_n(reason, n);
        }
    }

    /// Rejected records for `reason`.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.by_reason.get(&reason).copied().unwrap_or(0)
    }

    /// Rejected records over all reasons.
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    /// True when nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

impl RejectReason {
    /// The reason in words, as every message about rejected records says it.
    pub fn text(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "wrong number of fields",
            RejectReason::NotNumeric => "not a number",
            RejectReason::NonFinite => "NaN or infinite",
            RejectReason::TooLong => "line too long",
            RejectReason::InvalidUtf8 => "not UTF-8",
            RejectReason::BadJson => "not a JSON array of numbers",
        }
    }

    /// Every reason, in their fixed order: the one list a metric label's
    /// values come from.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::FieldCount,
        RejectReason::NotNumeric,
        RejectReason::NonFinite,
        RejectReason::TooLong,
        RejectReason::InvalidUtf8,
        RejectReason::BadJson,
    ];

    /// The reason as a snake_case label (`field_count`, `not_numeric`, ...),
    /// the same spelling as the checkpoint's JSON keys.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "field_count",
            RejectReason::NotNumeric => "not_numeric",
            RejectReason::NonFinite => "non_finite",
            RejectReason::TooLong => "too_long",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::BadJson => "bad_json",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// One rejected record: where and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}: {detail}")]
pub struct ParseError {
    /// Source of the record.
    pub source_id: SourceId,
    /// 1-based line number within the source.
    pub line: u64,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// A short human explanation (e.g. "field 3 \"abc\" is not a number").
    pub detail: String,
}

/// Parsed points from one chunk.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Dimension of every row (0 until the first valid record fixed it).
    pub dim: usize,
    /// Row-major values, `dim` per accepted record, in input order.
    pub values: Vec<f64>,
    /// Rejected records in this chunk, by reason.
    pub rejected: RejectCounts,
    /// The rejected records of this chunk with details, in order (the
    /// pipeline prints the first few and counts the rest).
    pub errors: Vec<ParseError>,
    /// Header lines skipped in this chunk: (source, line, text).
    pub headers: Vec<(SourceId, u64, String)>,
}

/// Cuts a byte stream from one source into [`Chunk`]s of whole lines, in
/// bounded memory: a line longer than `max_line` bytes is dropped (its number
/// recorded in [`Chunk::too_long`]) without ever being held whole.
///
/// Each input byte is copied once, into the chunk being filled; a chunk is
/// handed out as soon as it holds at least `chunk_size` bytes and ends at a
/// line end, so the framer holds at most `chunk_size + max_line + 1` bytes.
/// Where chunks are cut does not depend on how the stream was split into
/// [`Framer::push`] calls.
pub struct Framer {
    /// Source written into every chunk.
    source: SourceId,
    /// Longest allowed line, in bytes, not counting the `\n`.
    max_line: usize,
    /// A chunk is emitted once it holds at least this many bytes.
    chunk_size: usize,
    /// The chunk being filled: whole lines, then maybe the start of a line.
    buf: Vec<u8>,
    /// Where the unfinished line in `buf` starts (`buf.len()` if none).
    partial_start: usize,
    /// Line number of the first line of `buf`.
    first_line: u64,
    /// Line number of the unfinished line in `buf`, or of the next line.
    next_line: u64,
    /// Too-long lines dropped since the last chunk.
    too_long: Vec<u64>,
    /// Discarding the rest of a too-long line until its `\n`.
    dropping: bool,
}

/// Record format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Fields separated by commas, whitespace, semicolons or tabs.
    #[default]
    Csv,
    /// One JSON array of numbers per line.
    Json,
}

/// A checked selection of 0-based fields, in the order they become
/// coordinates: at least one field, each field once. `run`, `score` and
/// `plot` all take their `--columns` through [`Columns::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns(Vec<usize>);

/// Why a column selection is refused; the message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ColumnsError {
    /// No field selected.
    #[error("columns is empty: list at least one 0-based field index, e.g. --columns 0,1")]
    Empty,
    /// A field listed twice.
    #[error("column {0} is listed twice in columns: list each field once")]
    Twice(usize),
}

impl Columns {
    /// Checks a selection.
    ///
    /// # Errors
    ///
    /// [`ColumnsError`] for an empty list or a field listed twice.
    pub fn new(fields: Vec<usize>) -> Result<Self, ColumnsError> {
        if fields.is_empty() {
            return Err(ColumnsError::Empty);
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(&twice) = fields.iter().find(|&&c| !seen.insert(c)) {
            return Err(ColumnsError::Twice(twice));
        }
        Ok(Columns(fields))
    }

    /// The field indices, in order.
    pub fn fields(&self) -> &[usize] {
        &self.0
    }

    /// How many fields (the dimension of the points).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a selection has at least one field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How to parse records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParserConfig {
    /// Record format.
    pub format: Format,
    /// 0-based field indices to keep, in this order; `None` keeps all.
    pub columns: Option<Columns>,
    /// Expected dimension; `None` takes it from the first valid record.
    pub dim: Option<usize>,
}

/// Turns chunks into batches; holds per-source state (header seen) and the
/// dimension once known.
///
/// Parsing allocates nothing per line or field: values go straight into
/// [`Batch::values`]; only rejects (a `String` detail each) and headers
/// allocate.
pub struct Parser {
    /// Record format.
    format: Format,
    /// Field indices to keep, in order, if a subset was asked for.
    columns: Option<Vec<usize>>,
    /// One past the largest selected field index (0 without `columns`).
    min_fields: usize,
    /// The dimension once fixed.
    dim: Option<usize>,
    /// Sources whose first content line has been seen (no header possible
    /// any more); a source is forgotten after its last chunk.
    header_done: std::collections::HashSet<SourceId>,
    /// Reused: byte ranges of the fields of the line being parsed.
    fields: Vec<(usize, usize)>,
    /// Reused: values of the line being parsed on the general path.
    scratch: Vec<f64>,
}

mod framer;
mod parser;
mod reader;

pub use reader::{BatchReader, BATCH_CHUNK_BYTES, BATCH_READ_BYTES};
#[cfg(test)]
mod tests;
