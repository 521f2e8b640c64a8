//! Framing and parsing, synchronous: bytes -> whole lines -> rows of f64.
//!
//! A [`Framer`] cuts a byte stream into [`Chunk`]s of whole lines in bounded
//! memory (a line longer than the limit is dropped and reported, never
//! buffered whole). A [`Parser`] turns chunks into [`Batch`]es: row-major
//! f64 values plus the count of bad records by [`RejectReason`] and the
//! first few [`ParseError`]s with line numbers.
//!
//! CSV: one [`Delimiter`] per input (`auto` decides by a vote of the first
//! content lines and says so in [`Batch::notes`]); a line without a quote takes a
//! single-pass fast path, a line with one is split by `csv-core` (RFC
//! 4180: separators, spaces, doubled quotes and line ends inside quotes; a
//! quoted number is a number). A record whose quoted field spans lines is
//! one record, numbered by its first line, held across chunks up to
//! [`Parser::with_max_record`] bytes. A byte-order mark at the start is skipped. Columns
//! are picked by index or by header name. JSON: arrays of numbers, or
//! objects with named (nested) fields. [`Parser::names`] gives the
//! dimensions' names once known; an input that cannot fit the
//! configuration at all is a [`Batch::fatal`] [`InputError`].

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
    /// A `--format json` line is not a JSON array of numbers (or, with
    /// `--fields`, not a JSON object).
    BadJson,
    /// A `--fields` field is absent from a JSON object.
    MissingField,
    /// A quoted CSV field is not closed within the record limit (its
    /// line is rejected, the lines after it are read again), or the
    /// quotes of a record do not pair up.
    BadQuoting,
    /// A network stream ended in the middle of this record (no line end):
    /// it was cut, so it is not learned.
    Torn,
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
            RejectReason::BadJson => "not the expected JSON",
            RejectReason::MissingField => "a --fields field is missing",
            RejectReason::BadQuoting => "unclosed quote",
            RejectReason::Torn => "torn record (the connection ended mid-line)",
        }
    }

    /// Every reason, in their fixed order: the one list a metric label's
    /// values come from.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::FieldCount,
        RejectReason::NotNumeric,
        RejectReason::NonFinite,
        RejectReason::TooLong,
        RejectReason::InvalidUtf8,
        RejectReason::BadJson,
        RejectReason::MissingField,
        RejectReason::BadQuoting,
        RejectReason::Torn,
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
            RejectReason::MissingField => "missing_field",
            RejectReason::BadQuoting => "bad_quoting",
            RejectReason::Torn => "torn",
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
    /// For a message source (MQTT, JetStream): the message the record
    /// came in (set by the pipeline, which knows the messages).
    pub message: Option<keep::MessageTag>,
}

impl ParseError {
    /// Where the record was, for messages: the source's `name`, then for a
    /// message source the topic (or subject) and message sequence, then
    /// the line: `mqtt://host:1883 topic sensors/a message 12 line 17`.
    pub fn place(&self, name: &str) -> String {
        match &self.message {
            Some(m) => format!(
                "{name} topic {} message {} line {}",
                m.topic, m.seq, self.line
            ),
            None => format!("{name} line {}", self.line),
        }
    }
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
    /// Set on the batch in which the parser decided the dimension from the
    /// data (no `dim` or `columns` configured): the first record of that
    /// dimension, (source, line), so the run can say whom it came from.
    pub dim_from: Option<(SourceId, u64)>,
    /// Decisions the parser took that the user should hear about (e.g.
    /// which delimiter `--delimiter auto` chose), one message each.
    pub notes: Vec<String>,
    /// A configuration that cannot work with this input (e.g. a
    /// `--columns` name the header lacks): the parser accepts nothing more,
    /// and the caller should stop with this usage error.
    pub fatal: Option<InputError>,
    /// With [`ParserConfig::keep`]: the kept fields of each accepted
    /// record, one per row of `values`, in the same order.
    pub kept: Vec<keep::KeptRow>,
}

/// An input that does not fit the parser's configuration at all: a usage
/// error, not a bad record.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InputError {
    /// A `--columns` name is not in the header line.
    #[error("--columns names {name:?}, which is not a column of the header line; the header's names are: {available}")]
    UnknownColumn {
        /// The name asked for.
        name: String,
        /// The header's names, comma-separated.
        available: String,
    },
    /// A `--score-keep` name is not in the header line.
    #[error("--score-keep names {name:?}, which is not a column of the header line; the header's names are: {available}")]
    UnknownKeep {
        /// The name asked for.
        name: String,
        /// The header's names, comma-separated.
        available: String,
    },
    /// `--score-keep` gives CSV column names but the input has no header.
    #[error("--score-keep gives column names but line {line} is a record, not a header line: give 0-based indices (e.g. --score-keep 0) for input without a header")]
    KeepNeedsHeader {
        /// The first content line.
        line: u64,
    },
    /// `--columns` gives names but the input's first line is a record.
    #[error("--columns gives column names but line {line} is a record, not a header line: give 0-based indices (e.g. --columns 0,2) for input without a header")]
    NoHeader {
        /// The first content line.
        line: u64,
    },
}

/// A `--columns` list as given: 0-based indices if every entry is a
/// number, header names otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnList {
    /// 0-based field indices (`--columns 1,5`).
    Indices(Vec<usize>),
    /// Header names (`--columns carat,price`).
    Names(Vec<String>),
}

impl ColumnList {
    /// Reads a comma-split list: indices if all entries are non-negative
    /// integers, else names (trimmed).
    pub fn parse(list: &[String]) -> Self {
        match list.iter().map(|c| c.trim().parse()).collect() {
            Ok(indices) => ColumnList::Indices(indices),
            Err(std::num::ParseIntError { .. }) => {
                ColumnList::Names(list.iter().map(|c| c.trim().to_owned()).collect())
            }
        }
    }
}

/// Field separator of CSV records (`--delimiter`).
///
/// `Auto` decides once, by a vote of the first 16 content lines (header or
/// record) available when the first one is parsed (those of its chunk),
/// and keeps that separator for the whole input: each line votes for a tab
/// if it has one, else a semicolon, else a comma, else runs of blanks
/// (quoted text is not looked at); the most votes win, the earliest on a
/// tie. The decision is reported as a [`Batch::notes`] message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Delimiter {
    /// Decide by a vote of the first content lines.
    #[default]
    Auto,
    /// `,` (blanks around a field are ignored).
    Comma,
    /// `;`; a number may then use a decimal comma (`1,5`), as in the
    /// exports of locales that write one.
    Semicolon,
    /// A tab; a number may use a decimal comma.
    Tab,
    /// `|`; a number may use a decimal comma.
    Pipe,
    /// Any run of spaces and tabs; a number may use a decimal comma when
    /// this is given explicitly (not when `auto` chose it). On a line with
    /// quotes (as R's `write.table` writes) fields are separated by spaces.
    Whitespace,
}

impl Delimiter {
    /// The separator byte, or `None` for [`Delimiter::Whitespace`] (and
    /// [`Delimiter::Auto`] before it has decided).
    pub fn byte(self) -> Option<u8> {
        match self {
            Delimiter::Comma => Some(b','),
            Delimiter::Semicolon => Some(b';'),
            Delimiter::Tab => Some(b'\t'),
            Delimiter::Pipe => Some(b'|'),
            Delimiter::Auto | Delimiter::Whitespace => None,
        }
    }

    /// The name `--delimiter` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            Delimiter::Auto => "auto",
            Delimiter::Comma => "comma",
            Delimiter::Semicolon => "semicolon",
            Delimiter::Tab => "tab",
            Delimiter::Pipe => "pipe",
            Delimiter::Whitespace => "whitespace",
        }
    }
}

impl std::fmt::Display for Delimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Delimiter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Delimiter::Auto,
            "," | "comma" => Delimiter::Comma,
            ";" | "semicolon" => Delimiter::Semicolon,
            "\t" | "\\t" | "tab" => Delimiter::Tab,
            "|" | "pipe" => Delimiter::Pipe,
            " " | "space" | "whitespace" => Delimiter::Whitespace,
            _ => {
                return Err(format!(
                    "unknown delimiter {s:?}: use auto, comma (or ','), semicolon (';'), tab, pipe ('|') or whitespace"
                ))
            }
        })
    }
}

impl TryFrom<String> for Delimiter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Delimiter> for String {
    fn from(d: Delimiter) -> String {
        d.name().to_owned()
    }
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

/// A CSV record whose quoted field was still open at the end of a chunk
/// (a field with line ends in it), held until the chunk that closes it.
#[derive(Debug)]
struct OpenRecord {
    /// Its first line.
    line: u64,
    /// Its bytes so far (at most the record limit), line ends included.
    bytes: Vec<u8>,
    /// Whether a header was still possible at its first line.
    header_pending: bool,
    /// The `csv-core` reader where the bytes so far left it.
    reader: Box<csv_core::Reader>,
}

/// Record format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Fields separated by one delimiter (see [`Delimiter`]), quoted per
    /// RFC 4180 where needed.
    #[default]
    Csv,
    /// One JSON array of numbers per line, or one JSON object per line with
    /// the values named by [`ParserConfig::fields`].
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
    /// CSV field separator.
    pub delimiter: Delimiter,
    /// Header names of the CSV fields to keep, in this order, resolved
    /// against the first line (which must then be a header); used when
    /// `columns` is `None`.
    pub column_names: Option<Vec<String>>,
    /// JSON: the object fields to use, in this order; a dot walks into a
    /// nested object (`env.temp`). Lines must then be JSON objects.
    pub fields: Option<Vec<String>>,
    /// JSON: also accept numbers written as strings (`"21.5"`); without it
    /// such a value is a [`RejectReason::NotNumeric`] reject.
    pub string_numbers: bool,
    /// `--score-keep`: fields copied into [`Batch::kept`] for each accepted
    /// record ([`keep`]). Records then take the general path.
    pub keep: Option<Vec<keep::KeepItem>>,
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
    /// Largest dimension a record may fix (the memory budget's), if any.
    max_dim: Option<usize>,
    /// Records looked at before the dimension is decided by majority
    /// (1: the first valid record decides, as `--on-error fail` wants).
    vote: usize,
    /// Valid records held while the dimension is undecided:
    /// (source, line, values, kept fields).
    held: Vec<(SourceId, u64, Vec<f64>, Option<keep::KeptRow>)>,
    /// The configured delimiter.
    delimiter: Delimiter,
    /// The separator in use once decided: `Some(Some(byte))`, or
    /// `Some(None)` for runs of blanks; `None` while `auto` has not decided.
    sep: Option<Option<u8>>,
    /// Whether a number may use a decimal comma (any separator but a comma).
    decimal_comma: bool,
    /// `--columns` names not yet resolved against a header.
    pending_names: Option<Vec<String>>,
    /// JSON `--fields`, each split at its dots.
    field_paths: Option<Vec<Vec<String>>>,
    /// JSON numbers written as strings are accepted.
    string_numbers: bool,
    /// Names of the output dimensions, once known (header or `--fields`).
    names: Option<Vec<String>>,
    /// A usage error found in the input; nothing more is accepted.
    fatal: Option<InputError>,
    /// Reused by quoted lines: RFC 4180 reader, unquoted field bytes, ends.
    quoted: csv_core::Reader,
    /// Reused: the unquoted bytes of a quoted line's fields.
    quoted_out: Vec<u8>,
    /// Reused: field ends in `quoted_out`.
    quoted_ends: Vec<usize>,
    /// Finds where a record whose quoted field spans lines ends
    /// (`csv-core`, only `\n` ending a record).
    spans: csv_core::Reader,
    /// Longest record, in bytes, over all its lines (`--max-line-bytes`).
    max_record: usize,
    /// Per source: a record whose quoted field was still open at the end
    /// of its last chunk, waiting for the next one.
    open: std::collections::HashMap<SourceId, OpenRecord>,
    /// `--score-keep` items, if any.
    keep: Option<Vec<keep::KeepItem>>,
    /// CSV: the column of each field item of `keep` (`None`: a name not yet
    /// resolved against the header, or none).
    keep_columns: Vec<Option<usize>>,
    /// CSV: `keep` names a header column not yet resolved.
    keep_pending: bool,
    /// The configuration given, for [`Parser::resolved_config`].
    config: ParserConfig,
}

mod decimal;
mod framer;
pub mod hostile;
mod json;
pub mod keep;
mod parser;
mod reader;

pub use framer::count_line_ends;
pub use reader::{BatchReader, BATCH_CHUNK_BYTES, BATCH_READ_BYTES};
#[cfg(test)]
mod tests;
