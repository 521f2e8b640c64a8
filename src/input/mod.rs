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

/// One rejected record: where and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {reason:?}: {detail}")]
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
pub struct Framer {
    _todo: (),
}

impl Framer {
    /// A framer for `source` that emits chunks of about `chunk_size` bytes and
    /// drops lines longer than `max_line` bytes.
    pub fn new(source: SourceId, max_line: usize, chunk_size: usize) -> Self {
        let _ = (source, max_line, chunk_size);
        todo!()
    }

    /// Feeds bytes; appends every completed chunk to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Chunk>) {
        let _ = (bytes, out);
        todo!()
    }

    /// End of the source: appends the final chunk (with `last` set, holding
    /// any unterminated last line) to `out`.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) {
        let _ = out;
        todo!()
    }
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

/// How to parse records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParserConfig {
    /// Record format.
    pub format: Format,
    /// 0-based field indices to keep, in this order; `None` keeps all.
    pub columns: Option<Vec<usize>>,
    /// Expected dimension; `None` takes it from the first valid record.
    pub dim: Option<usize>,
}

/// Turns chunks into batches; holds per-source state (header seen) and the
/// dimension once known.
pub struct Parser {
    _todo: (),
}

impl Parser {
    /// A parser with the given configuration.
    pub fn new(config: ParserConfig) -> Self {
        let _ = config;
        todo!()
    }

    /// Parses one chunk, appending accepted rows, rejects and headers to `out`.
    pub fn parse(&mut self, chunk: &Chunk, out: &mut Batch) {
        let _ = (chunk, out);
        todo!()
    }

    /// The dimension, once fixed by configuration or the first valid record.
    pub fn dim(&self) -> Option<usize> {
        todo!()
    }
}
