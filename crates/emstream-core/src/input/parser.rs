//! [`Parser`]: chunks of whole lines -> row-major f64 values, rejects and
//! headers.
//!
//! Plain CSV without a column selection takes a single-pass fast path: each
//! field is parsed in place (common decimals by [`super::decimal`]'s SSE4.1
//! or eight-digits-at-a-time readers, anything else by
//! `fast_float2::parse_partial`, the same bits either way) and the byte
//! after it decides what comes next, so a line is read once and nothing is
//! allocated. Anything unusual (a comment, an empty line, a bad field, a
//! column selection, JSON) goes to the general path, which finds the line
//! end, splits the fields into a reused buffer and names what is wrong.

use std::collections::HashSet;

use memchr::memchr;

use super::decimal;
use super::json;
use super::keep::{self, KeepItem, KeptRow};
use super::{
    Batch, Chunk, Columns, Delimiter, Format, InputError, OpenRecord, ParseError, Parser,
    ParserConfig, RejectReason, SourceId,
};

/// Longest field text quoted in a reject's detail, in bytes.
const QUOTE_MAX: usize = 40;

/// Longest header text kept in [`Batch::headers`], in bytes.
const HEADER_MAX: usize = 1024;

/// A record that could not be accepted, before it is known whether it is a
/// header.
type Reject = (RejectReason, String);

impl Parser {
    /// A parser with the given configuration.
    ///
    /// An empty `columns` list or a `dim` of 0 count as unset. With
    /// `columns`, the dimension is the number of selected columns unless
    /// `dim` says otherwise (then every record is a
    /// [`RejectReason::FieldCount`]; configuration checking should refuse
    /// that earlier). `column_names` (used when `columns` is unset) and JSON
    /// `fields` fix the dimension the same way.
    pub fn new(config: ParserConfig) -> Self {
        let given = config.clone();
        let columns = config.columns.map(|c| c.0);
        let pending_names = match columns {
            Some(_) => None,
            None => config.column_names.filter(|c| !c.is_empty()),
        };
        let field_paths: Option<Vec<Vec<String>>> = match config.format {
            Format::Json => config.fields.as_ref().filter(|f| !f.is_empty()).map(|f| {
                f.iter()
                    .map(|p| p.split('.').map(str::to_owned).collect())
                    .collect()
            }),
            Format::Csv => None,
        };
        let min_fields = columns
            .as_ref()
            .and_then(|c| c.iter().max())
            .map_or(0, |&m| m + 1);
        let dim = config.dim.filter(|&d| d > 0).or(columns
            .as_ref()
            .map(Vec::len)
            .or(pending_names.as_ref().map(Vec::len))
            .or(field_paths.as_ref().map(Vec::len)));
        let sep = match config.delimiter {
            Delimiter::Auto => None,
            d => Some(d.byte()),
        };
        let names = field_paths.as_ref().and(config.fields.clone());
        let keep = config.keep.clone().filter(|k| !k.is_empty());
        let keep_columns = keep.as_deref().map(keep::csv_columns).unwrap_or_default();
        let keep_pending = config.format == Format::Csv && keep_columns.iter().any(Option::is_none);
        Parser {
            format: config.format,
            columns,
            min_fields,
            dim,
            header_done: HashSet::new(),
            fields: Vec::new(),
            scratch: Vec::new(),
            max_dim: None,
            vote: 1,
            held: Vec::new(),
            delimiter: config.delimiter,
            sep,
            decimal_comma: sep.is_some_and(|b| b != Some(b',')),
            pending_names,
            field_paths,
            string_numbers: config.string_numbers,
            names,
            fatal: None,
            quoted: csv_core::ReaderBuilder::new()
                .delimiter(sep.flatten().unwrap_or(b' '))
                .build(),
            quoted_out: Vec::new(),
            quoted_ends: Vec::new(),
            spans: span_reader(sep.flatten()),
            max_record: DEFAULT_MAX_RECORD,
            open: std::collections::HashMap::new(),
            keep,
            keep_columns,
            keep_pending,
            config: given,
        }
    }

    /// The configuration with what this parser has decided so far filled
    /// in: the delimiter `auto` chose, `column_names` resolved to
    /// `columns`, the dimension. A new parser with it reads later parts of
    /// the same input as this one does (without a header to see again).
    pub fn resolved_config(&self) -> ParserConfig {
        let resolved = self.pending_names.is_none() && self.config.column_names.is_some();
        ParserConfig {
            columns: self.columns.clone().map(Columns),
            column_names: if resolved {
                None
            } else {
                self.config.column_names.clone()
            },
            dim: self.dim,
            delimiter: self.delimiter().unwrap_or(self.config.delimiter),
            ..self.config.clone()
        }
    }

    /// Sets the longest CSV record, in bytes over all its lines, that a
    /// quoted field spanning lines may make (the framer's line limit,
    /// `--max-line-bytes`; 64 KiB by default). A quoted field still open
    /// after it rejects the line that opened it; the lines after are read
    /// again as records of their own.
    pub fn with_max_record(mut self, bytes: usize) -> Self {
        self.max_record = bytes.max(1);
        self
    }

    /// The first line of a record of `source` whose quoted field is still
    /// open at the end of the chunks parsed so far (its lines are held
    /// until the chunk that closes it): a source's position reaches only
    /// the line before it.
    pub fn open_record_line(&self, source: SourceId) -> Option<u64> {
        self.open.get(&source).map(|o| o.line)
    }

    /// Whether everything this parser decides once per run is decided (the
    /// dimension, the CSV separator, the header's names) and no record is
    /// held by the dimension vote or stopped the run: from here on a chunk
    /// past its source's header changes nothing but its source's own state.
    fn settled(&self) -> bool {
        self.fatal.is_none()
            && self.dim.is_some()
            && self.held.is_empty()
            && self.pending_names.is_none()
            && !self.keep_pending
            && (self.format == Format::Json || self.sep.is_some())
    }

    /// Takes `chunk` off this parser's hands if another parser, a
    /// [`Parser::fork`], would read it exactly as this one and the reading
    /// could not change this parser's state: the run's decisions are made,
    /// the chunk's source is past its header with no record open, and in
    /// a CSV chunk every line has an even number of `"` (so no quoted
    /// field goes on over a line end, and no record can stay open at the
    /// chunk's end). Then its only effect on this parser, forgetting the
    /// source after its last chunk, is made here and `true` is returned;
    /// the chunk must then be read by a fork with
    /// [`Parser::parse_continuing`], in any thread, and its batches kept
    /// in input order. `false`: parse it here, in order.
    pub fn hand_off(&mut self, chunk: &Chunk) -> bool {
        let ok = self.settled()
            && self.header_done.contains(&chunk.source)
            && !self.open.contains_key(&chunk.source)
            && (self.format == Format::Json || quotes_pair_up_per_line(&chunk.bytes));
        if ok && chunk.last {
            self.header_done.remove(&chunk.source);
        }
        ok
    }

    /// A parser for chunks [`Parser::hand_off`] let go: the run's
    /// decisions of this one (dimension, separator, columns, kept fields,
    /// limits), none of its per-source state. `None` until
    /// [`Parser::hand_off`] can say yes (the decisions do not change once
    /// made, so a fork serves the rest of the run).
    pub fn fork(&self) -> Option<Parser> {
        if !self.settled() {
            return None;
        }
        let sep = self.sep.flatten();
        Some(Parser {
            format: self.format,
            columns: self.columns.clone(),
            min_fields: self.min_fields,
            dim: self.dim,
            header_done: HashSet::new(),
            fields: Vec::new(),
            scratch: Vec::new(),
            max_dim: self.max_dim,
            vote: self.vote,
            held: Vec::new(),
            delimiter: self.delimiter,
            sep: self.sep,
            decimal_comma: self.decimal_comma,
            pending_names: None,
            field_paths: self.field_paths.clone(),
            string_numbers: self.string_numbers,
            names: self.names.clone(),
            fatal: None,
            quoted: csv_core::ReaderBuilder::new()
                .delimiter(sep.unwrap_or(b' '))
                .build(),
            quoted_out: Vec::new(),
            quoted_ends: Vec::new(),
            spans: span_reader(sep),
            max_record: self.max_record,
            open: std::collections::HashMap::new(),
            keep: self.keep.clone(),
            keep_columns: self.keep_columns.clone(),
            keep_pending: false,
            config: self.config.clone(),
        })
    }

    /// Parses a chunk that [`Parser::hand_off`] let go, on a
    /// [`Parser::fork`]: its source is past its header.
    pub fn parse_continuing(&mut self, chunk: &Chunk, out: &mut Batch) {
        self.parse_from(chunk, 0, chunk.first_line, false, 0, out);
        // The fork keeps no per-source state between chunks.
        self.header_done.clear();
    }

    /// Refuses to let a record fix a dimension above `max` (the largest
    /// one the memory budget allows): such a record is rejected
    /// ([`RejectReason::FieldCount`]) instead of sizing the model.
    pub fn with_max_dim(mut self, max: usize) -> Self {
        self.max_dim = Some(max);
        self
    }

    /// Decides an unconfigured dimension by majority instead of by the
    /// first valid record: up to `records` valid records are held (not
    /// output) until one field count holds a strict majority of `records`,
    /// or `records` have been seen (the most common count wins, the
    /// earliest on a tie), or [`Parser::finish`] is called. The held
    /// records of the winning count are then output in order, the others
    /// rejected as [`RejectReason::FieldCount`] with a message naming
    /// `--dim`. So one stray first line (a count, a date) cannot fix the
    /// dimension for good. `records` of 0 or 1 keep the first-record rule.
    pub fn with_dim_vote(mut self, records: usize) -> Self {
        self.vote = records.max(1);
        self
    }

    /// Applies `f` to the kept fields of the records held while the
    /// dimension is undecided (the pipeline names their message).
    pub fn for_each_held_kept(&mut self, mut f: impl FnMut(&mut KeptRow)) {
        for (_, _, _, kept) in &mut self.held {
            if let Some(k) = kept {
                f(k);
            }
        }
    }

    /// Whether valid records are held while the dimension is undecided
    /// ([`Parser::with_dim_vote`]).
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// End of all input: decides the dimension from the records held so
    /// far, if it is still undecided, and outputs them into `out`.
    pub fn finish(&mut self, out: &mut Batch) {
        // A source that ended without a last chunk: its open record is
        // unclosed.
        let mut open: Vec<(SourceId, OpenRecord)> = self.open.drain().collect();
        open.sort_by_key(|o| o.0);
        for (source, record) in open {
            let last = Chunk {
                source,
                first_line: record.line,
                bytes: Vec::new(),
                too_long: Vec::new(),
                last: true,
            };
            self.resync(record, &last, 0, Unclosed::End, out);
        }
        self.decide(out, true);
        out.dim = self.dim.unwrap_or(0);
    }

    /// Decides the dimension from the held records when the vote allows
    /// (or `force`), outputting them.
    fn decide(&mut self, out: &mut Batch, force: bool) {
        if self.dim.is_some() || self.held.is_empty() {
            return;
        }
        // (field count, records, first index)
        let mut tally: Vec<(usize, usize, usize)> = Vec::new();
        for (i, (_, _, v, _)) in self.held.iter().enumerate() {
            match tally.iter_mut().find(|t| t.0 == v.len()) {
                Some(t) => t.1 += 1,
                None => tally.push((v.len(), 1, i)),
            }
        }
        let &(win, votes, first) = tally
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .expect("held records");
        if !(force || votes * 2 > self.vote || self.held.len() >= self.vote) {
            return;
        }
        self.dim = Some(win);
        let (src, line, _, _) = self.held[first];
        out.dim_from = Some((src, line));
        for (source, line, values, kept) in std::mem::take(&mut self.held) {
            if values.len() == win {
                out.values.extend_from_slice(&values);
                out.kept.extend(kept);
            } else {
                reject(
                    out,
                    source,
                    line,
                    RejectReason::FieldCount,
                    format!(
                        "{} fields, expected {win} (the dimension of most of the first records; give --dim to choose it)",
                        values.len()
                    ),
                );
            }
        }
    }

    /// The rejection of a record that would fix a dimension above the
    /// memory budget's, if it would.
    fn too_wide(&self, n: usize) -> Option<Reject> {
        let max = self.max_dim?;
        (n > max).then(|| {
            (
                RejectReason::FieldCount,
                format!(
                    "{n} fields: a model of dimension {n} would not fit in the memory budget (at most {max}); give --dim or --columns, or raise --max-memory"
                ),
            )
        })
    }

    /// Parses one chunk, appending accepted rows, rejects and headers to `out`.
    ///
    /// `out.dim` is set to the dimension once it is known. Chunks of one
    /// source must come in order; chunks of different sources may
    /// interleave. After a source's last chunk its state is forgotten. A
    /// UTF-8 byte-order mark at the very start of a source is skipped.
    pub fn parse(&mut self, chunk: &Chunk, out: &mut Batch) {
        if self.fatal.is_some() {
            return;
        }
        let mut header_pending = !self.header_done.contains(&chunk.source);
        let (mut pos, mut line) = (0, chunk.first_line);
        if let Some(open) = self.open.remove(&chunk.source) {
            header_pending = open.header_pending;
            match self.continue_open(open, chunk, out) {
                Some((p, l)) => (pos, line) = (p, l),
                None => {
                    out.dim = self.dim.unwrap_or(0);
                    return;
                }
            }
            header_pending &= pos == 0;
        }
        self.parse_from(chunk, pos, line, header_pending, 0, out);
    }

    /// Parses `chunk` from byte `pos` (the start of line `line`): quoted
    /// fields may span lines in records that start at or after `no_span`.
    fn parse_from(
        &mut self,
        chunk: &Chunk,
        mut pos: usize,
        mut line: u64,
        mut header_pending: bool,
        mut no_span: usize,
        out: &mut Batch,
    ) {
        let source = chunk.source;
        let bytes = &chunk.bytes[..];
        let too_long = &chunk.too_long[..];
        let mut next_too_long = 0;
        if pos == 0 && chunk.first_line == 1 && bytes.starts_with(BOM) {
            pos = BOM.len();
        }
        // About one value per 10 bytes for typical CSV: saves most regrowth.
        out.values.reserve(bytes.len() / 10);
        while pos < bytes.len() {
            // Lines dropped by the framer have their numbers here, not bytes.
            while next_too_long < too_long.len() && too_long[next_too_long] <= line {
                if too_long[next_too_long] == line {
                    reject_too_long(source, line, out);
                    header_pending = false;
                    line += 1;
                }
                next_too_long += 1;
            }
            // The fast path needs a decided separator, all fields and no
            // names left to resolve.
            // While the dimension is put to the vote, every record takes
            // the general path (which holds it).
            let fast = self.format == Format::Csv
                && self.keep.is_none()
                && self.columns.is_none()
                && self.pending_names.is_none()
                && (self.dim.is_some() || self.vote <= 1);
            if let (true, Some(sep)) = (fast, self.sep) {
                if let Some((next, n)) =
                    csv_fast_line(bytes, pos, sep.unwrap_or(0), &mut out.values)
                {
                    header_pending = false;
                    match self.dim {
                        Some(d) if d == n => {}
                        None => {
                            if let Some((reason, detail)) = self.too_wide(n) {
                                out.values.truncate(out.values.len() - n);
                                reject(out, source, line, reason, detail);
                            } else {
                                self.dim = Some(n);
                                out.dim_from = Some((source, line));
                            }
                        }
                        Some(d) => {
                            out.values.truncate(out.values.len() - n);
                            reject(
                                out,
                                source,
                                line,
                                RejectReason::FieldCount,
                                format!("{n} fields, expected {d}"),
                            );
                        }
                    }
                    pos = next;
                    line += 1;
                    continue;
                }
            }
            let end = memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
            // A quoted field may go on over the next lines: the record
            // then ends where csv-core says.
            let (mut text_end, mut next, mut lines) = (end, end + 1, 1);
            if pos >= no_span
                && self.opens_quote(&bytes[pos..end], bytes.get(end + 1..), source, line, out)
            {
                match self.span_record(chunk, pos, line, next_too_long, header_pending) {
                    Spanned::Record(n) => {
                        next = pos + n;
                        text_end = if bytes[next - 1] == b'\n' {
                            next - 1
                        } else {
                            next
                        };
                        lines =
                            memchr::memchr_iter(b'\n', &bytes[pos..text_end]).count() as u64 + 1;
                    }
                    Spanned::Held => {
                        header_pending = false;
                        break;
                    }
                    Spanned::Unclosed(why, scanned) => {
                        reject(out, source, line, RejectReason::BadQuoting, why.detail());
                        header_pending = false;
                        // The lines after it are records of their own.
                        no_span = scanned;
                        pos = end + 1;
                        line += 1;
                        continue;
                    }
                }
            }
            let text = &bytes[pos..text_end];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let rest = bytes.get(next..).unwrap_or_default();
            self.general_line(text, rest, source, line, &mut header_pending, out);
            if self.fatal.is_some() {
                out.fatal.clone_from(&self.fatal);
                return;
            }
            pos = next;
            line += lines;
        }
        for &dropped in &too_long[next_too_long..] {
            if dropped >= line {
                reject_too_long(source, dropped, out);
                header_pending = false;
            }
        }
        if chunk.last {
            self.header_done.remove(&source);
        } else if !header_pending {
            self.header_done.insert(source);
        }
        out.dim = self.dim.unwrap_or(0);
    }

    /// Whether the line `raw` (its `\n` excluded; `rest` is what follows
    /// it) is a CSV record whose quotes do not pair up: a quoted field may
    /// go on over the next lines. Decides the separator first if `auto`
    /// has not yet (the record's end depends on it).
    #[inline(never)]
    fn opens_quote(
        &mut self,
        raw: &[u8],
        rest: Option<&[u8]>,
        source: SourceId,
        line: u64,
        out: &mut Batch,
    ) -> bool {
        if self.format != Format::Csv || !odd_quotes(raw) {
            return false;
        }
        let text = trim(raw.strip_suffix(b"\r").unwrap_or(raw));
        if text.is_empty() || text[0] == b'#' {
            return false;
        }
        if self.sep.is_none() {
            self.decide_separator(text, rest.unwrap_or_default(), source, line, out);
        }
        true
    }

    /// Where the record at `pos` (line `line`), whose first line opens a
    /// quoted field, ends: csv-core reads on over line ends, up to the
    /// record limit and before the next line the framer dropped
    /// (`chunk.too_long[next_too_long]`). A record still open at the end
    /// of a chunk that is not the last is held for the next one. Kept out
    /// of [`Parser::parse_from`]'s loop, whose fast path it would slow.
    #[inline(never)]
    fn span_record(
        &mut self,
        chunk: &Chunk,
        pos: usize,
        line: u64,
        next_too_long: usize,
        header_pending: bool,
    ) -> Spanned {
        let bytes = &chunk.bytes[..];
        let next_dropped = chunk.too_long.get(next_too_long).copied();
        let dropped = next_dropped.map_or(bytes.len(), |t| lines_end(bytes, pos, t - line));
        let cap = pos + self.max_record + 1;
        let limit = bytes.len().min(cap).min(dropped);
        let at_end = chunk.last && limit == bytes.len() && next_dropped.is_none();
        self.spans.reset();
        match span(&mut self.spans, &bytes[pos..limit], at_end) {
            Some(n) => Spanned::Record(n),
            None if limit == bytes.len()
                && limit < cap
                && !chunk.last
                && next_dropped.is_none() =>
            {
                // Open at the chunk's end: the next chunk goes on.
                let record = OpenRecord {
                    line,
                    bytes: bytes[pos..].to_vec(),
                    header_pending,
                    // Moved, not cloned: csv-core's `Reader::clone`
                    // (0.1.13) drops parts of its automaton.
                    reader: Box::new(std::mem::replace(
                        &mut self.spans,
                        span_reader(self.sep.flatten()),
                    )),
                };
                self.open.insert(chunk.source, record);
                Spanned::Held
            }
            None => Spanned::Unclosed(self.unclosed(limit, cap, dropped, next_dropped), limit),
        }
    }

    /// Why a record whose scan stopped at `limit` (of at most `cap`
    /// bytes, before the next dropped line at `dropped`, if any) is
    /// unclosed.
    fn unclosed(
        &self,
        limit: usize,
        cap: usize,
        dropped: usize,
        next_dropped: Option<u64>,
    ) -> Unclosed {
        match next_dropped {
            _ if limit >= cap => Unclosed::Limit(self.max_record),
            Some(line) if limit == dropped => Unclosed::Dropped(line),
            _ => Unclosed::End,
        }
    }

    /// Goes on with the open record of `chunk`'s source: `Some((position,
    /// line))` where the rest of the chunk starts once the record closed
    /// (or was rejected and its lines read again up to there); `None` when
    /// the whole chunk went into the record (still open) or was read
    /// again.
    fn continue_open(
        &mut self,
        mut open: OpenRecord,
        chunk: &Chunk,
        out: &mut Batch,
    ) -> Option<(usize, u64)> {
        let bytes = &chunk.bytes[..];
        let held = open.bytes.len();
        let budget = (self.max_record + 1).saturating_sub(held);
        let dropped = chunk.too_long.first().map_or(bytes.len(), |&t| {
            lines_end(bytes, 0, t.saturating_sub(chunk.first_line))
        });
        let limit = bytes.len().min(budget).min(dropped);
        let next_dropped = chunk.too_long.first().copied();
        let at_end = chunk.last && limit == bytes.len() && next_dropped.is_none();
        // The reader goes on from where the last chunk left it: each byte
        // of a record is scanned once, however many chunks it spans.
        let closed = span(&mut open.reader, &bytes[..limit], at_end);
        open.bytes
            .extend_from_slice(&bytes[..closed.unwrap_or(limit)]);
        match closed {
            Some(used) => {
                let all = &open.bytes[..];
                let text = all.strip_suffix(b"\n").unwrap_or(all);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                let mut header_pending = open.header_pending;
                let rest = &bytes[used..];
                self.general_line(
                    text,
                    rest,
                    chunk.source,
                    open.line,
                    &mut header_pending,
                    out,
                );
                if !header_pending {
                    self.header_done.insert(chunk.source);
                }
                let line =
                    chunk.first_line + memchr::memchr_iter(b'\n', &bytes[..used]).count() as u64;
                if self.fatal.is_some() {
                    out.fatal.clone_from(&self.fatal);
                    return None;
                }
                Some((used, line))
            }
            None if limit == bytes.len()
                && limit < budget
                && !chunk.last
                && next_dropped.is_none() =>
            {
                self.open.insert(chunk.source, open);
                None
            }
            None => {
                let why = self.unclosed(limit, budget, dropped, next_dropped);
                self.resync(open, chunk, limit, why, out);
                None
            }
        }
    }

    /// Rejects the first line of an open record that cannot be closed
    /// (`why`), then reads its other lines and the whole of `chunk` (whose
    /// first `scanned` bytes the record had taken) again as lines of their
    /// own, no quoted field spanning lines before the end of what was
    /// scanned.
    fn resync(
        &mut self,
        open: OpenRecord,
        chunk: &Chunk,
        scanned: usize,
        why: Unclosed,
        out: &mut Batch,
    ) {
        reject(
            out,
            chunk.source,
            open.line,
            RejectReason::BadQuoting,
            why.detail(),
        );
        self.header_done.insert(chunk.source);
        let first = memchr(b'\n', &open.bytes).map_or(open.bytes.len(), |i| i + 1);
        let held = open.bytes.len() - scanned;
        // The first line ends in the held bytes (chunks end at line ends);
        // if not, its rest at the start of this chunk is skipped too.
        let skip = first.saturating_sub(held);
        let mut bytes = open.bytes[first.min(held)..held].to_vec();
        let no_span = bytes.len() + scanned - skip;
        bytes.extend_from_slice(&chunk.bytes[skip..]);
        let again = Chunk {
            source: chunk.source,
            first_line: open.line + 1,
            bytes,
            too_long: chunk.too_long.clone(),
            last: chunk.last,
        };
        self.parse_from(&again, 0, again.first_line, false, no_span, out);
    }

    /// The dimension, once fixed by configuration or the first valid record.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Names of the output dimensions, in order, once known: the header's
    /// names of the kept CSV columns, a JSON header array's strings, or the
    /// JSON `fields`. `None` for input without a header.
    pub fn names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// The CSV separator in use, once decided (`None` while `auto` has
    /// seen no content line yet).
    pub fn delimiter(&self) -> Option<Delimiter> {
        let sep = self.sep?;
        Some(match self.delimiter {
            Delimiter::Auto => match sep {
                Some(b',') => Delimiter::Comma,
                Some(b';') => Delimiter::Semicolon,
                Some(b'\t') => Delimiter::Tab,
                Some(_) => Delimiter::Pipe,
                None => Delimiter::Whitespace,
            },
            d => d,
        })
    }

    /// One line (without its line end) on the general path: ignored, header,
    /// accepted or rejected.
    fn general_line(
        &mut self,
        text: &[u8],
        rest: &[u8],
        source: SourceId,
        line: u64,
        header_pending: &mut bool,
        out: &mut Batch,
    ) {
        let text = trim(text);
        if text.is_empty() || text[0] == b'#' {
            return;
        }
        if self.format == Format::Csv && self.sep.is_none() {
            self.decide_separator(text, rest, source, line, out);
        }
        let was_pending = std::mem::replace(header_pending, false);
        let undecided = self.dim.is_none();
        match self.record(text) {
            Ok(()) if self.pending_names.is_some() => {
                self.fatal = Some(InputError::NoHeader { line });
            }
            Ok(()) if self.keep_pending => {
                self.fatal = Some(InputError::KeepNeedsHeader { line });
            }
            Ok(()) if self.dim.is_none() => {
                let kept = self.kept(text, source, line);
                self.held.push((source, line, self.scratch.clone(), kept));
                self.decide(out, false);
            }
            Ok(()) => {
                if undecided {
                    out.dim_from = Some((source, line));
                }
                out.values.extend_from_slice(&self.scratch);
                if let Some(kept) = self.kept(text, source, line) {
                    out.kept.push(kept);
                }
            }
            Err((reason, detail)) => {
                let header_like = match self.format {
                    Format::Csv => reason == RejectReason::NotNumeric && has_letter(text),
                    // Only an array of strings names columns; an object is
                    // a record even on the first line.
                    Format::Json => json::header_names(text).is_some(),
                };
                if was_pending && header_like {
                    self.header(text, line);
                    let shown = &text[..floor_char_boundary(text, HEADER_MAX)];
                    let shown = String::from_utf8_lossy(shown).into_owned();
                    out.headers.push((source, line, shown));
                } else if was_pending && self.pending_names.is_some() {
                    self.fatal = Some(InputError::NoHeader { line });
                } else if was_pending && self.keep_pending {
                    self.fatal = Some(InputError::KeepNeedsHeader { line });
                } else {
                    reject(out, source, line, reason, detail);
                }
            }
        }
    }

    /// The kept fields of the accepted record on `text` (just parsed by
    /// [`Parser::record`], so a CSV record's fields are in `self.fields`),
    /// with `--score-keep`.
    fn kept(&self, text: &[u8], source: SourceId, line: u64) -> Option<KeptRow> {
        let items = self.keep.as_deref()?;
        let values = match self.format {
            Format::Csv => {
                let quoted = memchr(b'"', text).is_some();
                let buf: &[u8] = if quoted { &self.quoted_out } else { text };
                keep::csv_values(&self.keep_columns, buf, &self.fields, trim)
            }
            Format::Json => keep::json_values(items, text),
        };
        Some(KeptRow {
            source,
            line,
            message: None,
            values,
        })
    }

    /// `--delimiter auto`: picks the separator by a vote of the first
    /// content lines at hand: `text` (the first one) and those of `rest`
    /// (the chunk after it), up to [`SEPARATOR_VOTE`] lines. Each line
    /// votes for the separator it shows outside quotes (a tab, else `;`,
    /// else `,`, else blanks); the most votes win, the earliest on a tie.
    /// So a stray first line (a date `2024 01 15` before comma-separated
    /// points) cannot pick the separator of the whole input.
    fn decide_separator(
        &mut self,
        text: &[u8],
        rest: &[u8],
        source: SourceId,
        line: u64,
        out: &mut Batch,
    ) {
        // Votes per separator, in the order of first appearance.
        let mut tally: Vec<(Option<u8>, usize)> = Vec::with_capacity(4);
        let lines = rest
            .split(|&b| b == b'\n')
            .map(trim)
            .filter(|l| !l.is_empty() && l[0] != b'#');
        for l in std::iter::once(text).chain(lines).take(SEPARATOR_VOTE) {
            let sep = line_separator(l);
            match tally.iter_mut().find(|t| t.0 == sep) {
                Some(t) => t.1 += 1,
                None => tally.push((sep, 1)),
            }
        }
        let voters: usize = tally.iter().map(|t| t.1).sum();
        let (sep, votes) = tally
            .iter()
            .rev()
            .max_by_key(|t| t.1)
            .copied()
            .unwrap_or((None, 0));
        let name = match sep {
            Some(b'\t') => "tab",
            Some(b';') => "';' (numbers may use a decimal comma)",
            Some(_) => "','",
            None => "blanks",
        };
        self.sep = Some(sep);
        // Blanks chosen from a first line such as a header `x y` must not
        // turn a later `1,2` into the one number 1.2: decimal commas only
        // with a separator the lines showed (or one given explicitly).
        self.decimal_comma = sep.is_some_and(|b| b != b',');
        self.quoted = csv_core::ReaderBuilder::new()
            .delimiter(sep.unwrap_or(b' '))
            .build();
        self.spans = span_reader(sep);
        out.notes.push(format!(
            "--delimiter auto: fields are separated by {name}, as in {votes} of the first {voters} lines from source {source} line {line}; give --delimiter to choose another"
        ));
    }

    /// A header line: its names, and the `--columns` names resolved
    /// against them.
    fn header(&mut self, text: &[u8], _line: u64) {
        let all: Vec<String> = match self.format {
            Format::Json => json::header_names(text).unwrap_or_default(),
            Format::Csv => {
                let quoted = self.split(text).is_ok_and(|q| q);
                let buf: &[u8] = if quoted { &self.quoted_out } else { text };
                self.fields
                    .iter()
                    .map(|&(a, b)| String::from_utf8_lossy(trim(&buf[a..b])).into_owned())
                    .collect()
            }
        };
        if let Some(wanted) = self.pending_names.take() {
            let mut columns = Vec::with_capacity(wanted.len());
            for name in &wanted {
                match all.iter().position(|h| h == name) {
                    Some(i) => columns.push(i),
                    None => {
                        self.fatal = Some(InputError::UnknownColumn {
                            name: name.clone(),
                            available: all.join(", "),
                        });
                        return;
                    }
                }
            }
            self.min_fields = columns.iter().max().map_or(0, |&m| m + 1);
            self.columns = Some(columns);
        }
        if self.keep_pending {
            self.keep_pending = false;
            let items = self.keep.as_deref().unwrap_or_default();
            for (slot, item) in self
                .keep_columns
                .iter_mut()
                .zip(items.iter().filter(|i| i.is_field()))
            {
                if let KeepItem::Name(name) = item {
                    match all.iter().position(|h| h == name) {
                        Some(i) => *slot = Some(i),
                        None => {
                            self.fatal = Some(InputError::UnknownKeep {
                                name: name.clone(),
                                available: all.join(", "),
                            });
                            return;
                        }
                    }
                }
            }
        }
        if self.names.is_none() {
            self.names = Some(match &self.columns {
                Some(c) => c
                    .iter()
                    .map(|&i| all.get(i).cloned().unwrap_or_else(|| format!("field {i}")))
                    .collect(),
                None => all,
            });
        }
    }

    /// Parses a trimmed, non-empty, non-comment line into `self.scratch` (the
    /// record's values in output order) and fixes the dimension if unset.
    fn record(&mut self, text: &[u8]) -> Result<(), Reject> {
        if !text.is_ascii() {
            if let Err(e) = std::str::from_utf8(text) {
                return Err((
                    RejectReason::InvalidUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
                ));
            }
        }
        self.scratch.clear();
        let what = match self.format {
            Format::Csv => {
                self.csv_record(text)?;
                "fields"
            }
            Format::Json if self.field_paths.is_some() => {
                let paths = self.field_paths.as_deref().unwrap_or_default();
                json::object_record(text, paths, self.string_numbers, &mut self.scratch)?;
                "fields"
            }
            Format::Json => {
                json_record(text, self.string_numbers, &mut self.scratch)?;
                if let Some(columns) = &self.columns {
                    let n = self.scratch.len();
                    if n < self.min_fields {
                        return Err((
                            RejectReason::FieldCount,
                            format!(
                                "{n} elements, column {} needs at least {}",
                                self.min_fields - 1,
                                self.min_fields
                            ),
                        ));
                    }
                    for &c in columns {
                        self.scratch.push(self.scratch[c]);
                    }
                    self.scratch.drain(..n);
                }
                "elements"
            }
        };
        let n = self.scratch.len();
        let what = if self.columns.is_some() {
            "columns selected"
        } else {
            what
        };
        match self.dim {
            Some(d) if d == n => Ok(()),
            Some(d) => Err((
                RejectReason::FieldCount,
                format!("{n} {what}, expected {d}"),
            )),
            None if n == 0 => Err((
                RejectReason::FieldCount,
                "empty array: a point needs at least one number".to_owned(),
            )),
            None => {
                if let Some(r) = self.too_wide(n) {
                    return Err(r);
                }
                if self.vote <= 1 {
                    self.dim = Some(n);
                }
                Ok(())
            }
        }
    }

    /// Splits a CSV line and parses the wanted fields into `self.scratch`.
    fn csv_record(&mut self, text: &[u8]) -> Result<(), Reject> {
        let quoted = self.split(text)?;
        let buf: &[u8] = if quoted { &self.quoted_out } else { text };
        let comma = self.decimal_comma;
        match &self.columns {
            None => {
                for (i, &(a, b)) in self.fields.iter().enumerate() {
                    self.scratch.push(parse_field(trim(&buf[a..b]), i, comma)?);
                }
            }
            Some(columns) => {
                let n = self.fields.len();
                if n < self.min_fields {
                    return Err((
                        RejectReason::FieldCount,
                        format!(
                            "{n} fields, column {} needs at least {}",
                            self.min_fields - 1,
                            self.min_fields
                        ),
                    ));
                }
                for &c in columns {
                    let (a, b) = self.fields[c];
                    self.scratch.push(parse_field(trim(&buf[a..b]), c, comma)?);
                }
            }
        }
        Ok(())
    }

    /// Splits a trimmed CSV line into `self.fields`: byte ranges of `text`,
    /// or, for a line with a quote (returns `true`), of `self.quoted_out`,
    /// where `csv_core` has put the fields with their quotes undone.
    fn split(&mut self, text: &[u8]) -> Result<bool, Reject> {
        let sep = self.sep.flatten();
        if memchr(b'"', text).is_none() {
            split_fields(text, sep, &mut self.fields);
            return Ok(false);
        }
        // Quotes come in pairs in a well-formed line, doubled ones included.
        if odd_quotes(text) {
            return Err((
                RejectReason::BadQuoting,
                format!("the quotes do not pair up in {}", quote(text)),
            ));
        }
        self.quoted.reset();
        self.quoted_out.clear();
        self.quoted_out.resize(text.len() + 1, 0);
        self.quoted_ends.clear();
        self.quoted_ends.resize(text.len() + 2, 0);
        let (mut input, mut nout, mut nend) = (text, 0, 0);
        loop {
            let (result, i, o, e) = self.quoted.read_record(
                input,
                &mut self.quoted_out[nout..],
                &mut self.quoted_ends[nend..],
            );
            input = &input[i..];
            nout += o;
            nend += e;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
                // The buffers hold every byte and field of the line: the
                // output never outgrows its input.
                csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => {
                    return Err((
                        RejectReason::BadQuoting,
                        "the quoted line could not be split".to_owned(),
                    ))
                }
            }
        }
        self.fields.clear();
        let mut start = 0;
        for &end in &self.quoted_ends[..nend] {
            self.fields.push((start, end));
            start = end;
        }
        if sep.is_none() {
            // Separated by runs of spaces (as R's write.table writes): the
            // empty "fields" between two spaces are no fields.
            let out = &self.quoted_out;
            self.fields.retain(|&(a, b)| !trim(&out[a..b]).is_empty());
        }
        Ok(true)
    }
}

/// Whether every line of `bytes` has an even number of `"`: then no
/// record of them opens a quoted field that goes on over its line end
/// ([`odd_quotes`] of each line is false).
fn quotes_pair_up_per_line(bytes: &[u8]) -> bool {
    if memchr(b'"', bytes).is_none() {
        return true;
    }
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len())) {
        if odd_quotes(&bytes[start..end]) {
            return false;
        }
        start = end + 1;
    }
    true
}

/// Whether `text` holds an odd number of quotes: a XOR of bytes, which
/// the compiler vectorises (counting them, by memchr or a filter, cost
/// 180 to 230 instructions per 45-byte quoted line under callgrind).
#[inline]
fn odd_quotes(text: &[u8]) -> bool {
    text.iter().fold(0u8, |odd, &b| odd ^ u8::from(b == b'"')) == 1
}

/// Longest CSV record over all its lines by default (as the framer's
/// default line limit).
const DEFAULT_MAX_RECORD: usize = 64 * 1024;

/// What became of a record whose first line opens a quoted field.
enum Spanned {
    /// It ends after this many bytes (its final line end included).
    Record(usize),
    /// It goes on into the next chunk: held.
    Held,
    /// It cannot be closed (why, and the end of what was scanned).
    Unclosed(Unclosed, usize),
}

/// Why a quoted field spanning lines could not be closed.
#[derive(Clone, Copy, Debug)]
enum Unclosed {
    /// Not within this many bytes.
    Limit(usize),
    /// Not before this line, which the framer dropped for its length.
    Dropped(u64),
    /// Not before the end of the input.
    End,
}

impl Unclosed {
    /// The reject's detail.
    fn detail(self) -> String {
        let what = "a quoted field opened on this line is not closed";
        let then = "only this line is skipped, the lines after it are read as records";
        match self {
            Unclosed::Limit(n) => format!("{what} within {n} bytes (--max-line-bytes): {then}"),
            Unclosed::Dropped(l) => {
                format!("{what} before line {l}, which is longer than the limit: {then}")
            }
            Unclosed::End => format!("{what} before the end of the input: {then}"),
        }
    }
}

/// Where the CSV record that `reader` is in ends within `bytes`, by
/// `csv-core`: the bytes of it there, final line end included. `None` when
/// `bytes` end inside a quoted field (`at_end`: they are the end of the
/// input, which a line end of its own would not close either).
fn span(reader: &mut csv_core::Reader, bytes: &[u8], at_end: bool) -> Option<usize> {
    use csv_core::ReadRecordResult as R;
    // The fields are not wanted here, only where the record ends.
    let (mut out, mut ends) = ([0u8; 512], [0usize; 64]);
    let mut used = 0;
    while used < bytes.len() {
        let (result, n, _, _) = reader.read_record(&bytes[used..], &mut out, &mut ends);
        used += n;
        if matches!(result, R::Record | R::End) {
            return Some(used);
        }
    }
    // Out of bytes: closed if a line end would end the record.
    let closed = at_end
        && matches!(
            reader.read_record(b"\n", &mut out, &mut ends).0,
            R::Record | R::End
        );
    closed.then_some(used)
}

/// The `csv-core` reader that finds where a record ends: only `\n` ends
/// a record (a lone `\r` is no line end, as on the other paths).
fn span_reader(sep: Option<u8>) -> csv_core::Reader {
    csv_core::ReaderBuilder::new()
        .delimiter(sep.unwrap_or(b' '))
        .terminator(csv_core::Terminator::Any(b'\n'))
        .build()
}

/// The position after the `k`-th line end at or after `from` (the end of
/// `bytes` if there are fewer).
fn lines_end(bytes: &[u8], from: usize, k: u64) -> usize {
    if k == 0 {
        return from;
    }
    memchr::memchr_iter(b'\n', &bytes[from..])
        .nth((k - 1) as usize)
        .map_or(bytes.len(), |i| from + i + 1)
}

/// Content lines (from the first) that vote on the separator of
/// `--delimiter auto`.
const SEPARATOR_VOTE: usize = 16;

/// The separator a trimmed content line shows outside quotes: a tab, else
/// `;`, else `,`, else `None` (runs of blanks).
fn line_separator(text: &[u8]) -> Option<u8> {
    let mut seen = [false; 3];
    let mut quoted = false;
    for &b in text {
        match b {
            b'"' => quoted = !quoted,
            b'\t' if !quoted => seen[0] = true,
            b';' if !quoted => seen[1] = true,
            b',' if !quoted => seen[2] = true,
            _ => {}
        }
    }
    match seen {
        [true, _, _] => Some(b'\t'),
        [_, true, _] => Some(b';'),
        [_, _, true] => Some(b','),
        _ => None,
    }
}

/// The single-pass fast path for one CSV line starting at `pos`: parses
/// every field into `values` and returns (start of the next line, number of
/// fields). `sep` is the separator byte, or 0 for runs of blanks. On
/// anything it does not handle (empty line, comment, quote, empty or bad
/// field, non-finite value, stray `\r`, another separator) it removes what
/// it appended and returns `None`, leaving the line to the general path.
/// Numbers are read by [`decimal::finite_number_sse41`] where the CPU has
/// SSE4.1 (every x86-64 CPU since about 2008), else by
/// [`decimal::finite_number`]: the same values either way.
#[inline]
fn csv_fast_line(b: &[u8], pos: usize, sep: u8, values: &mut Vec<f64>) -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.1") {
        // SAFETY: the CPU has SSE4.1.
        return unsafe { csv_fast_line_sse41(b, pos, sep, values) };
    }
    fast_line_with(b, pos, sep, values, decimal::finite_number)
}

/// [`csv_fast_line`] compiled for SSE4.1, numbers by 16-byte vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
fn csv_fast_line_sse41(
    b: &[u8],
    pos: usize,
    sep: u8,
    values: &mut Vec<f64>,
) -> Option<(usize, usize)> {
    fast_line_with(b, pos, sep, values, |t| decimal::finite_number_sse41(t))
}

/// The loop of [`csv_fast_line`], reading each number with `number`.
#[inline(always)]
fn fast_line_with(
    b: &[u8],
    mut pos: usize,
    sep: u8,
    values: &mut Vec<f64>,
    number: impl Fn(&[u8]) -> Option<(f64, usize)>,
) -> Option<(usize, usize)> {
    let len = b.len();
    let start = values.len();
    pos = skip_pad(b, pos, sep);
    'fields: while let Some((v, used)) = number(&b[pos..]) {
        values.push(v);
        pos += used;
        let Some(&c) = b.get(pos) else {
            return Some((len, values.len() - start));
        };
        let c = if c == sep {
            pos = skip_pad(b, pos + 1, sep);
            continue 'fields;
        } else if c == b' ' || c == b'\t' {
            pos = skip_pad(b, pos + 1, sep);
            match b.get(pos) {
                None => return Some((len, values.len() - start)),
                Some(&d) if d == sep => {
                    pos = skip_pad(b, pos + 1, sep);
                    continue 'fields;
                }
                Some(b'\n') => return Some((pos + 1, values.len() - start)),
                Some(b'\r') => b'\r',
                // Blanks alone separate fields only without a separator byte.
                Some(_) if sep == 0 => continue 'fields,
                Some(_) => break,
            }
        } else {
            c
        };
        match c {
            b'\n' => return Some((pos + 1, values.len() - start)),
            b'\r' => match b.get(pos + 1) {
                None => return Some((len, values.len() - start)),
                Some(b'\n') => return Some((pos + 2, values.len() - start)),
                Some(_) => break,
            },
            _ => break,
        }
    }
    values.truncate(start);
    None
}

/// The UTF-8 byte-order mark some tools write at the start of a file.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// First index at or after `pos` that is not a space or tab.
#[inline]
fn skip_blanks(b: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t') = b.get(pos) {
        pos += 1;
    }
    pos
}

/// First index at or after `pos` that is not padding around a field: a
/// space, or a tab unless tabs separate fields (then two tabs in a row
/// enclose an empty field).
#[inline]
fn skip_pad(b: &[u8], mut pos: usize, sep: u8) -> usize {
    while let Some(&c) = b.get(pos) {
        if c != b' ' && (c != b'\t' || sep == b'\t') {
            break;
        }
        pos += 1;
    }
    pos
}

/// `text` without leading and trailing spaces and tabs.
fn trim(text: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = text.iter().position(|b| !blank(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    &text[start..end]
}

/// Byte ranges of the fields of a trimmed, non-empty line without quotes:
/// fields end at each `sep` byte (blanks around a field are trimmed later,
/// so `1 , 2` is two fields and `1,,2` has an empty one), or with no `sep`
/// at each run of blanks.
fn split_fields(text: &[u8], sep: Option<u8>, fields: &mut Vec<(usize, usize)>) {
    fields.clear();
    match sep {
        Some(sep) => {
            let mut start = 0;
            for i in memchr::memchr_iter(sep, text) {
                fields.push((start, i));
                start = i + 1;
            }
            fields.push((start, text.len()));
        }
        None => {
            let len = text.len();
            let mut pos = 0;
            while pos < len {
                let start = pos;
                while pos < len && !matches!(text[pos], b' ' | b'\t') {
                    pos += 1;
                }
                fields.push((start, pos));
                pos = skip_blanks(text, pos);
            }
        }
    }
}

/// Parses field `index` (0-based) of a CSV record; with `decimal_comma`, a
/// number may use one comma as its decimal point (`1,5`).
fn parse_field(field: &[u8], index: usize, decimal_comma: bool) -> Result<f64, Reject> {
    let number = index + 1;
    if field.is_empty() {
        return Err((RejectReason::NotNumeric, format!("field {number} is empty")));
    }
    let parsed = match fast_float2::parse::<f64, _>(field) {
        Err(_) if decimal_comma => with_decimal_point(field)
            .and_then(|f| fast_float2::parse::<f64, _>(&f[..field.len()]).ok())
            .ok_or(()),
        r => r.map_err(|_| ()),
    };
    match parsed {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err((
            RejectReason::NonFinite,
            format!("field {number} {} is not finite", quote(field)),
        )),
        Err(()) => Err((
            RejectReason::NotNumeric,
            format!(
                "field {number} {} is not a number{}",
                quote(field),
                if !decimal_comma && memchr(b',', field).is_some() {
                    " (a decimal comma? give --delimiter ';' or tab for such files)"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// `field` with its one comma made a point, if it is short and has exactly
/// one comma with a digit on each side (`-1,5e3`); the copy lives on the
/// stack.
fn with_decimal_point(field: &[u8]) -> Option<[u8; 64]> {
    let i = memchr(b',', field)?;
    let digit = |j: usize| field.get(j).is_some_and(u8::is_ascii_digit);
    if field.len() > 64 || i == 0 || !digit(i - 1) || !digit(i + 1) {
        return None;
    }
    if memchr(b',', &field[i + 1..]).is_some() {
        return None;
    }
    let mut copy = [0u8; 64];
    copy[..field.len()].copy_from_slice(field);
    copy[i] = b'.';
    Some(copy)
}

/// Parses a trimmed line as one JSON array of finite numbers into `values`.
fn json_record(text: &[u8], string_numbers: bool, values: &mut Vec<f64>) -> Result<(), Reject> {
    let bad = |detail: String| Err((RejectReason::BadJson, detail));
    if text.first() == Some(&b'{') {
        return bad(
            "a JSON object: name the values to use with --fields (e.g. --fields temp,env.hum)"
                .to_owned(),
        );
    }
    if text.first() != Some(&b'[') {
        return bad(format!(
            "expected a JSON array of numbers, found {}",
            quote(text)
        ));
    }
    let mut pos = skip_json_ws(text, 1);
    if text.get(pos) == Some(&b']') {
        pos += 1;
    } else {
        loop {
            let number = values.len() + 1;
            let mut end = json_number_end(text, pos);
            let mut field = &text[pos..end];
            if end == pos && text.get(pos) == Some(&b'"') {
                let close = memchr(b'"', &text[pos + 1..]).map(|i| pos + 1 + i);
                match close {
                    Some(q) if string_numbers => {
                        field = trim(&text[pos + 1..q]);
                        end = q + 1;
                    }
                    Some(q) => {
                        return Err((
                            RejectReason::NotNumeric,
                            format!(
                                "element {number} {} is a string (add --string-numbers to read numbers written as strings)",
                                quote(&text[pos..=q])
                            ),
                        ))
                    }
                    None => return bad(format!("element {number} is an unclosed string")),
                }
            }
            if end == pos {
                let token_end = text[pos..]
                    .iter()
                    .position(|&b| matches!(b, b',' | b']'))
                    .map_or(text.len(), |i| pos + i);
                let token = trim(&text[pos..token_end]);
                return bad(if token.is_empty() {
                    format!("element {number} is missing")
                } else {
                    format!("element {number} {} is not a number", quote(token))
                });
            }
            match fast_float2::parse::<f64, _>(field) {
                Ok(v) if v.is_finite() => values.push(v),
                Ok(_) => {
                    return Err((
                        RejectReason::NonFinite,
                        format!("element {number} {} is not finite", quote(field)),
                    ))
                }
                Err(_) => return bad(format!("element {number} {} is not a number", quote(field))),
            }
            pos = skip_json_ws(text, end);
            match text.get(pos) {
                Some(b',') => pos = skip_json_ws(text, pos + 1),
                Some(b']') => {
                    pos += 1;
                    break;
                }
                _ => return bad(format!("expected ',' or ']' after element {number}")),
            }
        }
    }
    if pos != text.len() {
        return bad("text after the closing ']'".to_owned());
    }
    Ok(())
}

/// JSON whitespace skipped from `pos`.
fn skip_json_ws(b: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(pos) {
        pos += 1;
    }
    pos
}

/// End of the JSON number at `pos` (RFC 8259 grammar:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), or `pos` if there is
/// none.
fn json_number_end(b: &[u8], pos: usize) -> usize {
    let digits = |mut p: usize| {
        while b.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        p
    };
    let mut p = pos;
    if b.get(p) == Some(&b'-') {
        p += 1;
    }
    match b.get(p) {
        Some(b'0') => p += 1,
        Some(b'1'..=b'9') => p = digits(p + 1),
        _ => return pos,
    }
    if b.get(p) == Some(&b'.') {
        let q = digits(p + 1);
        if q == p + 1 {
            return pos;
        }
        p = q;
    }
    if matches!(b.get(p), Some(b'e' | b'E')) {
        let mut q = p + 1;
        if matches!(b.get(q), Some(b'+' | b'-')) {
            q += 1;
        }
        let r = digits(q);
        if r == q {
            return pos;
        }
        p = r;
    }
    // A number must be followed by a delimiter, not glued to more text.
    match b.get(p) {
        None | Some(b',' | b']' | b' ' | b'\t' | b'\n' | b'\r') => p,
        Some(_) => pos,
    }
}

/// Whether the (valid or not) text has a letter, as a header would.
fn has_letter(text: &[u8]) -> bool {
    text.iter().any(u8::is_ascii_alphabetic)
        || (!text.is_ascii()
            && std::str::from_utf8(text).is_ok_and(|s| s.chars().any(char::is_alphabetic)))
}

/// A field quoted for a detail message, shortened to [`QUOTE_MAX`] bytes.
pub(super) fn quote(field: &[u8]) -> String {
    let cut = floor_char_boundary(field, QUOTE_MAX);
    let text = String::from_utf8_lossy(&field[..cut]);
    if cut < field.len() {
        format!("{:?}", format!("{text}..."))
    } else {
        format!("{text:?}")
    }
}

/// Largest length `<= max` that does not split a UTF-8 character of `b`
/// (any length for invalid UTF-8 is fine: it is shown lossily).
fn floor_char_boundary(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut cut = max;
    while cut > 0 && (b[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    cut
}

/// Counts and records one rejected record.
fn reject(out: &mut Batch, source: SourceId, line: u64, reason: RejectReason, detail: String) {
    out.rejected.add(reason);
    out.errors.push(ParseError {
        source_id: source,
        line,
        reason,
        detail,
        message: None,
    });
}

/// Counts and records a line the framer dropped for its length.
fn reject_too_long(source: SourceId, line: u64, out: &mut Batch) {
    reject(
        out,
        source,
        line,
        RejectReason::TooLong,
        "line is longer than the maximum line length (--max-line-bytes); skipped".to_owned(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Columns;

    /// Parses `text` as one last chunk of source 0.
    fn parse_with(config: ParserConfig, text: &[u8]) -> (Batch, Parser) {
        let mut parser = Parser::new(config);
        let mut batch = Batch::default();
        let chunk = Chunk {
            source: 0,
            first_line: 1,
            bytes: text.to_vec(),
            too_long: Vec::new(),
            last: true,
        };
        parser.parse(&chunk, &mut batch);
        (batch, parser)
    }

    fn parse(text: &str) -> Batch {
        parse_with(ParserConfig::default(), text.as_bytes()).0
    }

    /// (line, reason) of every error.
    fn reasons(batch: &Batch) -> Vec<(u64, RejectReason)> {
        batch.errors.iter().map(|e| (e.line, e.reason)).collect()
    }

    /// (line, reason, detail) of every error.
    fn errors(batch: &Batch) -> Vec<(u64, RejectReason, String)> {
        batch
            .errors
            .iter()
            .map(|e| (e.line, e.reason, e.detail.clone()))
            .collect()
    }

    #[test]
    fn separators_commas_semicolons_blanks_and_tabs() {
        // One separator per input, decided by the first lines: blanks
        // around a field are trimmed with a separator byte.
        let cases: [(&str, &str); 4] = [
            ("1,2\n  9 ,\t10  \n-1.5e3 , +.5\n", "','"),
            ("1;2\n  9 ;\t10  \n-1.5e3 ; +.5\n", "';'"),
            ("1 2\n  9 \t10  \n-1.5e3    +.5\n", "blanks"),
            ("1\t2\n  9 \t10  \n-1.5e3\t+.5\n", "tab"),
        ];
        for (text, name) in cases {
            let b = parse(text);
            assert_eq!(b.values, vec![1., 2., 9., 10., -1500., 0.5], "{text:?}");
            assert_eq!(b.dim, 2);
            assert!(b.errors.is_empty(), "{text:?}: {:?}", b.errors);
            assert_eq!(b.notes.len(), 1);
            assert!(b.notes[0].contains(name), "{}", b.notes[0]);
        }
    }

    #[test]
    fn auto_never_mixes_separators() {
        // Decided ',' from line 1: a ';' or a blank later is no separator.
        let (b, parser) = parse_with(ParserConfig::default(), b"1,2\n3;4\n5 6\n7,8\n");
        assert_eq!(parser.delimiter(), Some(Delimiter::Comma));
        assert_eq!(b.values, vec![1., 2., 7., 8.]);
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 2);
        // An explicit delimiter is kept and not reported.
        let config = ParserConfig {
            delimiter: Delimiter::Semicolon,
            ..ParserConfig::default()
        };
        let (b, parser) = parse_with(config, b"1;2\n3,4;5\n");
        assert_eq!(parser.delimiter(), Some(Delimiter::Semicolon));
        assert!(b.notes.is_empty());
        // With ';', "3,4" is the decimal 3.4, not two fields.
        assert_eq!(b.values, vec![1., 2., 3.4, 5.]);
    }

    #[test]
    fn auto_votes_over_the_first_lines() {
        // A stray first line of blanks does not pick the separator of the
        // comma-separated points after it (it picked blanks before).
        let (b, parser) = parse_with(
            ParserConfig::default(),
            b"2024 01 15\n# c\n\n1,2\n3,4\n5,6\n",
        );
        assert_eq!(parser.delimiter(), Some(Delimiter::Comma));
        assert_eq!(b.values, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(
            errors(&b),
            vec![(
                1,
                RejectReason::NotNumeric,
                "field 1 \"2024 01 15\" is not a number".to_owned()
            )]
        );
        assert_eq!(
            b.notes,
            vec!["--delimiter auto: fields are separated by ',', as in 3 of the first 4 lines from source 0 line 1; give --delimiter to choose another".to_owned()]
        );
        // Only the first 16 content lines vote; a tie goes to the earliest.
        let mut text = b"1 2\n".repeat(8);
        text.extend_from_slice(&b"1;2\n".repeat(8));
        text.extend_from_slice(&b"1,2\n".repeat(20));
        let (_, parser) = parse_with(ParserConfig::default(), &text);
        assert_eq!(parser.delimiter(), Some(Delimiter::Whitespace));
        // A header votes like any line: `x y` over `1,2` and `3 4`.
        let (_, parser) = parse_with(ParserConfig::default(), b"x,y\n1 2\n3;4\n");
        assert_eq!(parser.delimiter(), Some(Delimiter::Comma));
    }

    #[test]
    fn decimal_commas_with_a_semicolon() {
        // Auto chose blanks from "x y": "1,2" is not read as 1.2.
        let b = parse("x y\n1,2\n3 4\n");
        assert_eq!(b.values, vec![3., 4.]);
        assert!(
            b.errors[0].detail.contains("decimal comma?"),
            "{:?}",
            b.errors
        );
        let b = parse("x;y\n1,5;2,25\n-0,5;1e3\n3;4,0e-1\n1,2,3;4\n");
        assert_eq!(b.values, vec![1.5, 2.25, -0.5, 1000., 3., 0.4]);
        assert_eq!(
            errors(&b),
            vec![(
                5,
                RejectReason::NotNumeric,
                "field 1 \"1,2,3\" is not a number".to_owned()
            )]
        );
        // A comma file never reads "1,5" as one number, and says why.
        let config = ParserConfig {
            delimiter: Delimiter::Tab,
            ..ParserConfig::default()
        };
        let (b, _) = parse_with(config, b"1,5\t2\n");
        assert_eq!(b.values, vec![1.5, 2.]);
        let config = ParserConfig {
            delimiter: Delimiter::Comma,
            columns: Some(Columns::new(vec![0]).unwrap()),
            ..ParserConfig::default()
        };
        let (b, _) = parse_with(config, b"\"1,5\",2\n");
        assert!(b.values.is_empty());
        assert!(
            b.errors[0].detail.contains("decimal comma"),
            "{:?}",
            b.errors
        );
    }

    #[test]
    fn quoted_fields_per_rfc_4180() {
        let text = "\"\",\"carat\",\"cut\",\"price\"\n\
                    \"1\",0.23,\"Very Good\",326\n\
                    \"2\", 0.21 ,\"Premium, \"\"new\"\"\",\"327\"\n\
                    3,0.3,Fair,330\n\
                    \"4\",0.4,\"open,400\n";
        let b = parse(text);
        assert_eq!(b.headers.len(), 1);
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 3);
        let config = ParserConfig {
            column_names: Some(vec!["price".into(), "carat".into()]),
            ..ParserConfig::default()
        };
        let (b, parser) = parse_with(config, text.as_bytes());
        assert_eq!(b.values, vec![326., 0.23, 327., 0.21, 330., 0.3]);
        assert_eq!(
            parser.names(),
            Some(&["price".to_owned(), "carat".to_owned()][..])
        );
        assert_eq!(
            errors(&b),
            vec![(
                5,
                RejectReason::BadQuoting,
                "a quoted field opened on this line is not closed before the end of the input: only this line is skipped, the lines after it are read as records".to_owned()
            )]
        );
        // Quoted numbers are numbers, on the fast path's input too.
        let b = parse("\"1\",\"2.5\"\n3,\" 4 \"\n");
        assert_eq!(b.values, vec![1., 2.5, 3., 4.]);
    }

    /// Parses `pieces` framed as one source (chunks of `chunk` bytes,
    /// lines of at most `max_line`), records of at most `max_record`
    /// bytes, and returns the batch and the largest record held open.
    fn parse_framed(
        config: ParserConfig,
        pieces: &[&[u8]],
        chunk: usize,
        max_line: usize,
        max_record: usize,
    ) -> (Batch, usize) {
        let mut framer = crate::input::Framer::new(0, max_line, chunk);
        let mut chunks = Vec::new();
        for p in pieces {
            framer.push(p, &mut chunks);
        }
        framer.finish(&mut chunks);
        let mut parser = Parser::new(config).with_max_record(max_record);
        let (mut b, mut held) = (Batch::default(), 0);
        for c in &chunks {
            parser.parse(c, &mut b);
            held = held.max(parser.open.values().map(|o| o.bytes.len()).sum());
        }
        parser.finish(&mut b);
        (b, held)
    }

    #[test]
    fn quoted_fields_may_span_lines() {
        // A pandas export whose text column holds line ends: each record is
        // one, numbered by its first line, in any chunking.
        let text = b"id,note,x,y\n\
                     1,\"two\nlines\",1.5,2\n\
                     2,plain,3,4\n\
                     3,\"three\r\n\"\"quoted\"\"\n, lines\",5,6\n\
                     4,\"bad\nnumber\",x,8\n\
                     5,end,9,10\n";
        let config = ParserConfig {
            column_names: Some(vec!["x".into(), "y".into()]),
            ..ParserConfig::default()
        };
        let (whole, _) = parse_with(config.clone(), text);
        assert_eq!(whole.values, vec![1.5, 2., 3., 4., 5., 6., 9., 10.]);
        assert_eq!(
            errors(&whole),
            vec![(
                8,
                RejectReason::NotNumeric,
                "field 3 \"x\" is not a number".to_owned()
            )]
        );
        for chunk in [1, 5, 17, 40, 1000] {
            let pieces: Vec<&[u8]> = text.chunks(3).collect();
            let (b, _) = parse_framed(config.clone(), &pieces, chunk, 100, 1000);
            assert_eq!(b.values, whole.values, "chunks of {chunk}");
            assert_eq!(errors(&b), errors(&whole), "chunks of {chunk}");
        }
        // Without a column selection the fields are counted per record.
        let (b, _) = parse_with(ParserConfig::default(), b"1,2\n\"a\nb\",1\n\"c\",2\n3,4\n");
        assert_eq!(b.values, vec![1., 2., 3., 4.]);
        let lines: Vec<u64> = b.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4]);
    }

    #[test]
    fn an_unclosed_quote_is_one_reject_within_the_record_limit() {
        // The stray quote of line 2 is not closed within 20 bytes: line 2
        // is rejected, the lines after it are read as records, in any
        // chunking, and no more than the limit is ever held.
        let mut text = b"1,2\n\"3,4\n".to_vec();
        for i in 0..30 {
            text.extend_from_slice(format!("{i},{i}\n").as_bytes());
        }
        for chunk in [1, 8, 64, 1 << 20] {
            let (b, held) = parse_framed(ParserConfig::default(), &[&text], chunk, 100, 20);
            assert_eq!(b.values.len(), 2 * 31, "chunks of {chunk}");
            assert_eq!(
                errors(&b),
                vec![(
                    2,
                    RejectReason::BadQuoting,
                    "a quoted field opened on this line is not closed within 20 bytes (--max-line-bytes): only this line is skipped, the lines after it are read as records".to_owned()
                )],
                "chunks of {chunk}"
            );
            assert!(held <= 21, "held {held} bytes");
        }
        // Open at the end of the input: the same, said so.
        let (b, _) = parse_framed(
            ParserConfig::default(),
            &[b"1,2\n\"3,4\n5,6\n"],
            4,
            100,
            1000,
        );
        assert_eq!(b.values, vec![1., 2., 5., 6.]);
        assert!(b.errors[0].detail.contains("before the end of the input"));
        // Running into a line the framer dropped for its length.
        let long = format!("1,\"{}\n", "9".repeat(50));
        let text = format!("1,2\n\"3,4\n{long}5,6\n");
        let (b, _) = parse_framed(ParserConfig::default(), &[text.as_bytes()], 1000, 30, 1000);
        assert_eq!(b.values, vec![1., 2., 5., 6.]);
        assert_eq!(
            reasons(&b),
            vec![(2, RejectReason::BadQuoting), (3, RejectReason::TooLong)]
        );
        assert!(
            b.errors[0].detail.contains("before line 3"),
            "{}",
            b.errors[0].detail
        );
    }

    #[test]
    fn quotes_and_line_ends_in_any_chunking_never_panic() {
        // Random quotes, separators and line ends cut anywhere (also
        // where a framer never cuts), with a tiny record limit.
        let alphabet = b"1,\"\n \r;x9";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as usize
        };
        for _ in 0..3000 {
            let len = next(60);
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[next(alphabet.len() as u64)])
                .collect();
            let mut cuts: Vec<usize> = (0..next(4)).map(|_| next(len as u64 + 1)).collect();
            cuts.sort_unstable();
            cuts.push(len);
            let mut parser = Parser::new(ParserConfig::default()).with_max_record(1 + next(12));
            let (mut b, mut from, mut line) = (Batch::default(), 0, 1);
            for (i, &to) in cuts.iter().enumerate() {
                let bytes = text[from..to].to_vec();
                let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
                let chunk = Chunk {
                    source: 0,
                    first_line: line,
                    bytes,
                    too_long: Vec::new(),
                    last: i + 1 == cuts.len(),
                };
                parser.parse(&chunk, &mut b);
                (from, line) = (to, line + lines);
            }
            parser.finish(&mut b);
            assert!(b.values.iter().all(|v| v.is_finite()));
            assert!(parser.open.is_empty());
        }
    }

    #[test]
    fn quoted_fields_separated_by_spaces() {
        // R's write.table(): quoted names and text, separated by spaces.
        let text = b"\"eruptions\" \"waiting\" \"cut\"\n\"1\" 3.6  79 \"Very Good\"\n\"2\" 1.8 54 \"Fair\"\n";
        let (b, p) = parse_with(ParserConfig::default(), text);
        assert_eq!(p.delimiter(), Some(Delimiter::Whitespace));
        assert_eq!(
            p.names(),
            Some(&["eruptions", "waiting", "cut"].map(String::from)[..])
        );
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 2, "the text");
        let config = ParserConfig {
            delimiter: Delimiter::Whitespace,
            columns: Some(Columns::new(vec![1, 2]).unwrap()),
            ..ParserConfig::default()
        };
        let (b, _) = parse_with(config, text);
        assert_eq!(b.values, vec![3.6, 79., 1.8, 54.]);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
    }

    #[test]
    fn column_names_resolve_against_the_header() {
        let config = |names: &[&str]| ParserConfig {
            column_names: Some(names.iter().map(|s| (*s).to_owned()).collect()),
            ..ParserConfig::default()
        };
        let (b, p) = parse_with(config(&["b", "a"]), b"\xef\xbb\xbfa;b;c\n1;2;3\n");
        assert_eq!(b.values, vec![2., 1.]);
        assert_eq!(p.names(), Some(&["b".to_owned(), "a".to_owned()][..]));
        let (b, _) = parse_with(config(&["a", "x"]), b"a,b,c\n1,2,3\n");
        assert!(b.values.is_empty());
        assert_eq!(
            b.fatal,
            Some(InputError::UnknownColumn {
                name: "x".into(),
                available: "a, b, c".into()
            })
        );
        let (b, _) = parse_with(config(&["a"]), b"# c\n1,2,3\n4,5,6\n");
        assert_eq!(b.fatal, Some(InputError::NoHeader { line: 2 }));
        assert!(b.values.is_empty());
        // Without names, the header still names the kept columns.
        let (_, p) = parse_with(ParserConfig::default(), b"x,y\n1,2\n");
        assert_eq!(p.names(), Some(&["x".to_owned(), "y".to_owned()][..]));
        let (_, p) = parse_with(ParserConfig::default(), b"1,2\n");
        assert_eq!(p.names(), None);
    }

    #[test]
    fn resolved_config_reads_the_rest_alike() {
        let config = ParserConfig {
            column_names: Some(vec!["b".into()]),
            ..ParserConfig::default()
        };
        let (_, p) = parse_with(config, b"a;b\n1;2\n");
        let again = p.resolved_config();
        assert_eq!(again.columns, Some(Columns::new(vec![1]).unwrap()));
        assert_eq!(again.column_names, None);
        assert_eq!(again.delimiter, Delimiter::Semicolon);
        let (b, _) = parse_with(again, b"3;4,5\n");
        assert_eq!(b.values, vec![4.5]);
        assert!(b.notes.is_empty() && b.fatal.is_none());
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let b = parse("\u{feff}x,y\n1,2\n");
        assert_eq!(b.values, vec![1., 2.]);
        assert_eq!(b.headers, vec![(0, 1, "x,y".to_owned())]);
        let b = parse("\u{feff}1,2\n3,4\n");
        assert_eq!(b.values, vec![1., 2., 3., 4.]);
    }

    #[test]
    fn json_objects_with_fields() {
        let config = ParserConfig {
            format: Format::Json,
            fields: Some(vec!["env.temp".into(), "hum".into()]),
            ..ParserConfig::default()
        };
        let text = b"{\"id\":\"s1\",\"env\":{\"temp\":21.5},\"hum\":40}\n\
                     {\"hum\":41,\"env\":{\"temp\":22}}\n\
                     {\"env\":{\"temp\":22}}\n\
                     {\"env\":{\"temp\":\"23.5\"},\"hum\":1}\n\
                     {\"env\":{\"temp\":null},\"hum\":1}\n\
                     [1,2]\n\
                     not json\n";
        let (b, p) = parse_with(config.clone(), text);
        assert!(b.headers.is_empty(), "an object is never a header");
        assert_eq!(b.values, vec![21.5, 40., 22., 41.]);
        assert_eq!(
            p.names(),
            Some(&["env.temp".to_owned(), "hum".to_owned()][..])
        );
        assert_eq!(
            reasons(&b),
            vec![
                (3, RejectReason::MissingField),
                (4, RejectReason::NotNumeric),
                (5, RejectReason::NotNumeric),
                (6, RejectReason::BadJson),
                (7, RejectReason::BadJson),
            ]
        );
        assert_eq!(b.errors[0].detail, "field hum is missing");
        assert!(b.errors[1].detail.contains("--string-numbers"));
        let (b, _) = parse_with(
            ParserConfig {
                string_numbers: true,
                ..config
            },
            text,
        );
        assert_eq!(b.values, vec![21.5, 40., 22., 41., 23.5, 1.]);
        // Without --fields an object is a reject that says what to do.
        let config = ParserConfig {
            format: Format::Json,
            ..ParserConfig::default()
        };
        let (b, _) = parse_with(config, b"{\"a\":\"x\"}\n[1]\n");
        assert!(b.headers.is_empty());
        assert_eq!(b.values, vec![1.]);
        assert!(b.errors[0].detail.contains("--fields"));
    }

    #[test]
    fn values_are_exact() {
        let b = parse("-1.2345678,3.4567890\n0.1,1e-300\n");
        assert_eq!(b.values, vec![-1.2345678, 3.456789, 0.1, 1e-300]);
    }

    #[test]
    fn empty_field_is_not_numeric() {
        let b = parse("1,2\n1,,2\n1,\n,1\n1, ,2\n");
        assert_eq!(b.values, vec![1., 2.]);
        assert_eq!(
            errors(&b),
            vec![
                (2, RejectReason::NotNumeric, "field 2 is empty".to_owned()),
                (3, RejectReason::NotNumeric, "field 2 is empty".to_owned()),
                (4, RejectReason::NotNumeric, "field 1 is empty".to_owned()),
                (5, RejectReason::NotNumeric, "field 2 is empty".to_owned()),
            ]
        );
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 4);
    }

    #[test]
    fn not_numeric_names_the_field() {
        let b = parse("1,2\n1,abc\n1.5x,2\n1,2,3\n");
        assert_eq!(b.values, vec![1., 2.]);
        assert_eq!(
            errors(&b),
            vec![
                (
                    2,
                    RejectReason::NotNumeric,
                    "field 2 \"abc\" is not a number".to_owned()
                ),
                (
                    3,
                    RejectReason::NotNumeric,
                    "field 1 \"1.5x\" is not a number".to_owned()
                ),
                (
                    4,
                    RejectReason::FieldCount,
                    "3 fields, expected 2".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let b = parse("1,2\nnan,1\n1,inf\n1e999,2\n-infinity,0\n3,4\n");
        assert_eq!(b.values, vec![1., 2., 3., 4.]);
        assert_eq!(b.rejected.get(RejectReason::NonFinite), 4);
        assert_eq!(
            errors(&b)[2],
            (
                4,
                RejectReason::NonFinite,
                "field 1 \"1e999\" is not finite".to_owned()
            )
        );
        assert_eq!(b.rejected.total(), 4);
    }

    #[test]
    fn header_is_skipped_once_per_source() {
        let b = parse("# comment\n\nx,y,label\n1,2,3\nx,y,z\n");
        assert_eq!(b.values, vec![1., 2., 3.]);
        assert_eq!(b.headers, vec![(0, 3, "x,y,label".to_owned())]);
        assert_eq!(
            errors(&b),
            vec![(
                5,
                RejectReason::NotNumeric,
                "field 1 \"x\" is not a number".to_owned()
            )]
        );
    }

    #[test]
    fn first_line_without_letters_is_not_a_header() {
        let b = parse("1,,2\n1,2\n");
        assert!(b.headers.is_empty());
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 1);
        // A numeric first line uses up the header chance.
        let b = parse("1,2\nx,y\n");
        assert!(b.headers.is_empty());
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 1);
    }

    #[test]
    fn header_state_is_per_source_and_across_chunks() {
        let mut parser = Parser::new(ParserConfig::default());
        let mut batch = Batch::default();
        let chunk = |source, first_line, text: &str, last| Chunk {
            source,
            first_line,
            bytes: text.as_bytes().to_vec(),
            too_long: Vec::new(),
            last,
        };
        parser.parse(&chunk(1, 1, "# c\n", false), &mut batch);
        parser.parse(&chunk(2, 1, "a,b\n1,2\n", false), &mut batch);
        parser.parse(&chunk(1, 2, "x,y\n3,4\n", false), &mut batch);
        parser.parse(&chunk(2, 3, "c,d\n", true), &mut batch);
        // Source 2 ended, so a new source 2 may have a header again.
        parser.parse(&chunk(2, 1, "e,f\n5,6\n", true), &mut batch);
        assert_eq!(batch.values, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(
            batch.headers,
            vec![
                (2, 1, "a,b".to_owned()),
                (1, 2, "x,y".to_owned()),
                (2, 1, "e,f".to_owned())
            ]
        );
        assert_eq!(batch.errors.len(), 1);
        assert_eq!((batch.errors[0].source_id, batch.errors[0].line), (2, 3));
    }

    #[test]
    fn comments_and_blank_lines_are_ignored_not_counted() {
        let b = parse("\n   \n\t\n# x\n  # y,z\n1,2\n\n#\n3,4");
        assert_eq!(b.values, vec![1., 2., 3., 4.]);
        assert!(b.errors.is_empty());
        assert!(b.headers.is_empty());
    }

    #[test]
    fn crlf_line_ends() {
        let b = parse("x,y\r\n1,2\r\n3, 4 \r\n\r\n# c\r\n5,a\r\n6,7\r");
        assert_eq!(b.values, vec![1., 2., 3., 4., 6., 7.]);
        assert_eq!(b.headers, vec![(0, 1, "x,y".to_owned())]);
        assert_eq!(
            errors(&b),
            vec![(
                6,
                RejectReason::NotNumeric,
                "field 2 \"a\" is not a number".to_owned()
            )]
        );
        // A lone \r inside a line is not a line end.
        let b = parse("1,2\n1\r2,3\n");
        assert_eq!(b.values, vec![1., 2.]);
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 1);
    }

    #[test]
    fn columns_pick_fields_in_order() {
        let config = ParserConfig {
            columns: Some(Columns::new(vec![2, 0]).unwrap()),
            ..ParserConfig::default()
        };
        let (b, parser) = parse_with(config, b"x,label,y\n1,cat,2\n3,dog,4,extra\n5,6\n7,,abc\n");
        assert_eq!(parser.dim(), Some(2));
        assert_eq!(b.values, vec![2., 1., 4., 3.]);
        assert_eq!(b.headers.len(), 1);
        assert_eq!(
            errors(&b),
            vec![
                (
                    4,
                    RejectReason::FieldCount,
                    "2 fields, column 2 needs at least 3".to_owned()
                ),
                (
                    5,
                    RejectReason::NotNumeric,
                    "field 3 \"abc\" is not a number".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn configured_dim_rejects_other_counts() {
        let config = ParserConfig {
            dim: Some(3),
            ..ParserConfig::default()
        };
        let (b, parser) = parse_with(config, b"1,2\n1,2,3\n1,2,3,4\n");
        assert_eq!(parser.dim(), Some(3));
        assert_eq!(b.dim, 3);
        assert_eq!(b.values, vec![1., 2., 3.]);
        assert_eq!(
            errors(&b),
            vec![
                (
                    1,
                    RejectReason::FieldCount,
                    "2 fields, expected 3".to_owned()
                ),
                (
                    3,
                    RejectReason::FieldCount,
                    "4 fields, expected 3".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn dim_comes_from_first_valid_record() {
        let (b, parser) = parse_with(ParserConfig::default(), b"a,b\n1,x\n1,2,3\n4,5\n6,7,8\n");
        assert_eq!(parser.dim(), Some(3));
        assert_eq!(b.values, vec![1., 2., 3., 6., 7., 8.]);
        assert_eq!(b.rejected.get(RejectReason::FieldCount), 1);
        assert_eq!(b.rejected.get(RejectReason::NotNumeric), 1);
        let empty = parse("# nothing\n");
        assert_eq!(empty.dim, 0);
    }

    /// Parses `text` (one last chunk of source 0) with a majority vote of
    /// `vote` records, then ends the input.
    fn parse_voting(vote: usize, text: &[u8]) -> (Batch, Parser) {
        // The separator is fixed: `auto` would vote on it too.
        let config = ParserConfig {
            delimiter: Delimiter::Comma,
            ..ParserConfig::default()
        };
        let mut parser = Parser::new(config).with_dim_vote(vote);
        let mut b = Batch::default();
        let chunk = Chunk {
            source: 0,
            first_line: 1,
            bytes: text.to_vec(),
            too_long: Vec::new(),
            last: true,
        };
        parser.parse(&chunk, &mut b);
        parser.finish(&mut b);
        (b, parser)
    }

    #[test]
    fn the_majority_of_the_first_records_decides_the_dimension() {
        let mut text = b"5\n2024,01,15\n".to_vec();
        for i in 0..20 {
            text.extend_from_slice(format!("{i},{}\n", i * 2).as_bytes());
        }
        let (b, parser) = parse_voting(16, &text);
        assert_eq!(parser.dim(), Some(2));
        assert_eq!(b.values.len(), 40);
        assert_eq!(&b.values[..4], &[0.0, 0.0, 1.0, 2.0]);
        assert_eq!(b.rejected.get(RejectReason::FieldCount), 2);
        assert_eq!(b.dim_from, Some((0, 3)));
        let lines: Vec<u64> = b.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2]);
        assert!(
            b.errors[0].detail.contains("--dim"),
            "{}",
            b.errors[0].detail
        );
        // The old rule, for comparison: the stray line wins.
        let (b, parser) = parse_voting(1, &text);
        assert_eq!(parser.dim(), Some(1));
        assert_eq!(b.rejected.get(RejectReason::FieldCount), 21);
    }

    #[test]
    fn a_short_input_is_decided_at_its_end() {
        let (b, parser) = parse_voting(16, b"1,2\n3\n4,5\n");
        assert_eq!(parser.dim(), Some(2));
        assert_eq!(b.values, vec![1.0, 2.0, 4.0, 5.0]);
        assert_eq!(b.rejected.get(RejectReason::FieldCount), 1);
        // A tie goes to the earliest count.
        let (_, parser) = parse_voting(16, b"1\n2,3\n");
        assert_eq!(parser.dim(), Some(1));
    }

    #[test]
    fn a_record_too_wide_for_the_memory_budget_is_rejected() {
        let mut parser = Parser::new(ParserConfig::default()).with_max_dim(3);
        let mut b = Batch::default();
        let chunk = Chunk {
            source: 0,
            first_line: 1,
            bytes: b"1,2,3,4\n1,2\n".to_vec(),
            too_long: Vec::new(),
            last: true,
        };
        parser.parse(&chunk, &mut b);
        assert_eq!(parser.dim(), Some(2));
        assert_eq!(b.values, vec![1.0, 2.0]);
        assert!(b.errors[0].detail.contains("--max-memory"));
    }

    #[test]
    fn invalid_utf8_is_its_own_reason() {
        let (b, _) = parse_with(
            ParserConfig::default(),
            b"1,2\n1,\xff\xfe\n\xc3\xa9,1\n# \xff ok\n",
        );
        assert_eq!(b.values, vec![1., 2.]);
        assert_eq!(
            errors(&b),
            vec![
                (
                    2,
                    RejectReason::InvalidUtf8,
                    "invalid UTF-8 at byte 3".to_owned()
                ),
                (
                    3,
                    RejectReason::NotNumeric,
                    "field 1 \"\u{e9}\" is not a number".to_owned()
                ),
            ]
        );
        // A first line with invalid UTF-8 is never taken for a header.
        let (b, _) = parse_with(ParserConfig::default(), b"temp\xe9rature,x\n1,2\n");
        assert!(b.headers.is_empty());
        assert_eq!(b.rejected.get(RejectReason::InvalidUtf8), 1);
    }

    #[test]
    fn too_long_lines_keep_numbering() {
        let mut parser = Parser::new(ParserConfig::default());
        let mut batch = Batch::default();
        let chunk = Chunk {
            source: 3,
            first_line: 10,
            // Lines 10, 12, 13 are here; 11, 14 and 15 were dropped.
            bytes: b"1,2\n3,4\nbad,5\n".to_vec(),
            too_long: vec![11, 14, 15],
            last: false,
        };
        parser.parse(&chunk, &mut batch);
        assert_eq!(batch.values, vec![1., 2., 3., 4.]);
        assert_eq!(
            reasons(&batch),
            vec![
                (11, RejectReason::TooLong),
                (13, RejectReason::NotNumeric),
                (14, RejectReason::TooLong),
                (15, RejectReason::TooLong),
            ]
        );
        assert_eq!(batch.rejected.get(RejectReason::TooLong), 3);
        assert!(batch.errors.iter().all(|e| e.source_id == 3));
    }

    #[test]
    fn json_lines() {
        let config = ParserConfig {
            format: Format::Json,
            ..ParserConfig::default()
        };
        let text = b"[\"x\", \"y\"]\n[1, 2.5]\n  [ -3e2 ,4 ] \n[1,2,3]\n{\"a\":1}\n[1,\"b\"]\n[1,2\n[1,1e999]\n[1,2]x\n[01,2]\n[]\n[1,[2]]\n[1,nan]\n";
        let (b, parser) = parse_with(config, text);
        assert_eq!(parser.dim(), Some(2));
        assert_eq!(b.values, vec![1., 2.5, -300., 4.]);
        assert_eq!(b.headers, vec![(0, 1, "[\"x\", \"y\"]".to_owned())]);
        assert_eq!(
            reasons(&b),
            vec![
                (4, RejectReason::FieldCount),
                (5, RejectReason::BadJson),
                (6, RejectReason::NotNumeric),
                (7, RejectReason::BadJson),
                (8, RejectReason::NonFinite),
                (9, RejectReason::BadJson),
                (10, RejectReason::BadJson),
                (11, RejectReason::FieldCount),
                (12, RejectReason::BadJson),
                (13, RejectReason::BadJson),
            ]
        );
        assert_eq!(b.errors[0].detail, "3 elements, expected 2");
        assert_eq!(
            b.errors[2].detail,
            "element 2 \"\\\"b\\\"\" is a string (add --string-numbers to read numbers written as strings)"
        );
        assert_eq!(b.errors[3].detail, "expected ',' or ']' after element 2");
    }

    #[test]
    fn json_with_columns() {
        let config = ParserConfig {
            format: Format::Json,
            columns: Some(Columns::new(vec![2, 1]).unwrap()),
            ..ParserConfig::default()
        };
        let (b, _) = parse_with(config, b"[1,2,3]\n[4,5]\n");
        assert_eq!(b.values, vec![3., 2.]);
        assert_eq!(b.rejected.get(RejectReason::FieldCount), 1);
    }

    #[test]
    fn long_fields_are_shortened_in_details() {
        let field = "z".repeat(100);
        let b = parse(&format!("1,2\n1,{field}\n"));
        let detail = &b.errors[0].detail;
        assert!(detail.len() < 70, "{detail}");
        assert!(detail.contains("..."));
    }

    #[test]
    fn fast_and_general_paths_agree() {
        // Every line through the fast path (no columns) must give what the
        // general path (an identity column selection) gives.
        let text = b"1,2\n 3 ,4 \n5;\t6\n7,,8\n9 , 10\r\n1e5,2E-3\n+1,-2\n.5,5.\n0x1,2\n\
                     1__2,3\n--1,2\n1,\n;1\nnan,1\n1,1e400\n\t\t1\t\t2\t\t\n1,2\r3\n3\t 4\n1,2";
        for (delimiter, rows) in [
            (Delimiter::Comma, 7),
            (Delimiter::Semicolon, 1),
            (Delimiter::Tab, 1),
            (Delimiter::Whitespace, 2),
        ] {
            let config = ParserConfig {
                delimiter,
                dim: Some(2),
                ..ParserConfig::default()
            };
            let (a, _) = parse_with(config.clone(), text);
            let config = ParserConfig {
                columns: Some(Columns::new(vec![0, 1]).unwrap()),
                ..config
            };
            let (b, _) = parse_with(config, text);
            assert_eq!(a.values.len(), 2 * rows, "{delimiter}");
            assert_eq!(a.values, b.values, "{delimiter}");
            // The same lines are rejected (a selection checks the field
            // count first, so a reason may differ).
            let lines = |x: &Batch| x.errors.iter().map(|e| e.line).collect::<Vec<_>>();
            assert_eq!(lines(&a), lines(&b), "{delimiter}");
        }
    }

    #[test]
    fn reject_counts_helpers() {
        let mut a = RejectCounts::default();
        a.add(RejectReason::TooLong);
        a.add_n(RejectReason::BadJson, 0);
        let mut b = RejectCounts::default();
        b.add_n(RejectReason::TooLong, 2);
        b.add(RejectReason::NotNumeric);
        a.merge(&b);
        assert_eq!(a.get(RejectReason::TooLong), 3);
        assert_eq!(a.get(RejectReason::BadJson), 0);
        assert!(!a.by_reason.contains_key(&RejectReason::BadJson));
        assert_eq!(a.total(), 4);
    }

    use super::super::RejectCounts;
}
