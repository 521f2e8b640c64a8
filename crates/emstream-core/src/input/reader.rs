//! [`BatchReader`]: the one read-frame-parse loop over a whole input
//! (`score`, `plot --data`): bytes from a reader, whole lines from a
//! [`Framer`], rows from a [`Parser`], one [`Batch`] per chunk.
//!
//! The pipeline splits the same steps over threads instead (a source frames,
//! the parser stage parses) because its sources also wait for data, flush
//! idle input and watch the stop; the framing and the parsing are the same
//! types.

use std::collections::VecDeque;
use std::io::{self, Read};

use super::{Batch, Chunk, Framer, Parser, SourceId};

/// Bytes read from the input at a time.
pub const BATCH_READ_BYTES: usize = 1 << 18;
/// Target size of the lines behind one batch.
pub const BATCH_CHUNK_BYTES: usize = 1 << 18;

/// Reads, frames and parses an input one batch at a time.
pub struct BatchReader<R> {
    input: R,
    framer: Framer,
    parser: Parser,
    buf: Vec<u8>,
    chunks: VecDeque<Chunk>,
    scratch: Vec<Chunk>,
    ended: bool,
    /// A read error held back until the whole lines before it are out.
    error: Option<io::Error>,
}

impl<R: Read> BatchReader<R> {
    /// A reader of `input` as source `source`, rejecting lines longer than
    /// `max_line` bytes.
    pub fn new(input: R, source: SourceId, max_line: usize, parser: Parser) -> Self {
        BatchReader {
            input,
            framer: Framer::new(source, max_line, BATCH_CHUNK_BYTES),
            parser: parser.with_max_record(max_line),
            buf: vec![0u8; BATCH_READ_BYTES],
            chunks: VecDeque::new(),
            scratch: Vec::new(),
            ended: false,
            error: None,
        }
    }

    /// The parser, for what it has learned of the input so far (its
    /// [`Parser::names`], the delimiter `auto` chose).
    pub fn parser(&self) -> &Parser {
        &self.parser
    }

    /// Empties `batch` (keeping its allocations) and parses the next chunk
    /// of lines into it. `Ok(false)` at the end of the input (then `batch`
    /// is empty).
    ///
    /// # Errors
    ///
    /// The read error; the lines before it were handed out first.
    pub fn next_into(&mut self, batch: &mut Batch) -> io::Result<bool> {
        batch.values.clear();
        batch.rejected.by_reason.clear();
        batch.errors.clear();
        batch.headers.clear();
        batch.notes.clear();
        batch.fatal = None;
        batch.kept.clear();
        loop {
            if let Some(chunk) = self.chunks.pop_front() {
                self.parser.parse(&chunk, batch);
                return Ok(true);
            }
            if let Some(e) = self.error.take() {
                return Err(e);
            }
            if self.ended {
                return Ok(false);
            }
            match self.input.read(&mut self.buf) {
                Ok(0) => {
                    self.ended = true;
                    self.framer.finish(&mut self.scratch);
                }
                Ok(n) => self.framer.push(&self.buf[..n], &mut self.scratch),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.ended = true;
                    self.framer.flush(&mut self.scratch);
                    self.error = Some(e);
                }
            }
            self.chunks.extend(self.scratch.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Format, ParserConfig, RejectReason};

    /// A reader that hands out a few bytes at a time, then fails.
    struct Trickle(Vec<u8>, usize, bool);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.1 >= self.0.len() {
                return if self.2 {
                    Err(io::Error::other("disk gone"))
                } else {
                    Ok(0)
                };
            }
            let n = 7.min(out.len()).min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn parser() -> Parser {
        Parser::new(ParserConfig {
            format: Format::Csv,
            ..ParserConfig::default()
        })
    }

    #[test]
    fn every_row_comes_out_once_in_order_with_its_rejects() {
        let mut text = String::from("x,y\n");
        for i in 0..50_000 {
            text.push_str(&format!("{i},{}\n", 2 * i));
        }
        text.push_str("1,oops\n7,14");
        let mut r = BatchReader::new(Trickle(text.into_bytes(), 0, false), 0, 1 << 10, parser());
        let (mut batch, mut rows, mut rejected) = (Batch::default(), Vec::new(), 0);
        while r.next_into(&mut batch).unwrap() {
            rows.extend_from_slice(&batch.values);
            rejected += batch.rejected.get(RejectReason::NotNumeric);
        }
        assert_eq!(rows.len(), 2 * 50_001);
        assert!(rows
            .chunks(2)
            .enumerate()
            .take(50_000)
            .all(|(i, p)| p == [i as f64, 2.0 * i as f64]));
        assert_eq!(&rows[rows.len() - 2..], &[7.0, 14.0]);
        assert_eq!(rejected, 1);
        assert!(!r.next_into(&mut batch).unwrap());
        assert!(batch.values.is_empty());
    }

    #[test]
    fn a_read_error_comes_after_the_lines_before_it() {
        let mut r = BatchReader::new(Trickle(b"1,2\n3,4\n".to_vec(), 0, true), 0, 64, parser());
        let mut batch = Batch::default();
        let mut rows = 0;
        let err = loop {
            match r.next_into(&mut batch) {
                Ok(true) => rows += batch.values.len() / 2,
                Ok(false) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(rows, 2);
        assert!(err.to_string().contains("disk gone"));
        assert!(!r.next_into(&mut batch).unwrap());
    }
}
