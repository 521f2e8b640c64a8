//! Message bodies (MQTT, JetStream) into chunks of whole lines, each chunk
//! tagged with the position of the last message wholly in it.
//!
//! Each body is one record or several lines of records; a body is closed
//! with a line end if it lacks one, so records never run across messages.
//! Consecutive messages are gathered into one chunk (up to
//! [`CHUNK_BYTES`](crate::pipeline::CHUNK_BYTES)) so per-chunk costs stay
//! small next to per-point costs; a chunk only ever ends between messages,
//! so its position (the sequence of its last message) says exactly which
//! messages' points it holds.

use super::{EventSender, SourceEvent};
use crate::input::{Chunk, Framer, SourceId};

/// A chunk size the framer never reaches by itself (no message is this
/// large).
const NEVER: usize = 1 << 48;

/// Frames the messages of one stream; see the module docs.
pub(crate) struct MessageFramer {
    framer: Framer,
    chunk_bytes: usize,
    /// Position of the last message pushed whole.
    last: Option<u64>,
    out: Vec<Chunk>,
    /// Chunks ready to send with their positions.
    ready: Vec<(Chunk, u64)>,
}

impl MessageFramer {
    /// A framer for stream `id` whose chunks close at about `chunk_bytes`;
    /// lines longer than `max_line` are dropped (counted as too long).
    pub(crate) fn new(id: SourceId, max_line: usize, chunk_bytes: usize) -> Self {
        MessageFramer {
            // The framer itself never closes a chunk: only `end_of_messages`
            // (between messages) does.
            framer: Framer::new(id, max_line, NEVER),
            chunk_bytes,
            last: None,
            out: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Adds the body of the message at `position`; closes a chunk when
    /// enough bytes are buffered.
    pub(crate) fn push(&mut self, body: &[u8], position: u64) {
        let before = self.last;
        self.framer.push(body, &mut self.out);
        if body.last() != Some(&b'\n') {
            self.framer.push(b"\n", &mut self.out);
        }
        // Only a run of too-long lines makes the framer close a chunk by
        // itself (inside this message): that chunk holds whole messages up
        // to the one before.
        for chunk in self.out.drain(..) {
            self.ready.push((chunk, before.unwrap_or(position)));
        }
        self.last = Some(position);
        if self.framer.buffered() >= self.chunk_bytes {
            self.close();
        }
    }

    /// Closes the chunk being filled (nothing waits behind it).
    pub(crate) fn close(&mut self) {
        let Some(last) = self.last else {
            return;
        };
        self.framer.flush(&mut self.out);
        for chunk in self.out.drain(..) {
            self.ready.push((chunk, last));
        }
    }

    /// Whether bytes wait in an unclosed chunk.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> bool {
        self.framer.buffered() > 0
    }

    /// Whether closed chunks wait to be sent.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Sends the closed chunks; false when the parser is gone.
    pub(crate) async fn send(&mut self, tx: &EventSender) -> bool {
        for (chunk, position) in self.ready.drain(..) {
            if tx
                .send(SourceEvent::Chunk { chunk, position })
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_between_messages_with_the_last_ones_position() {
        let mut f = MessageFramer::new(7, 1000, 10);
        f.push(b"1,2\n3,4", 5);
        assert!(!f.has_ready());
        f.push(b"5,6\n", 9);
        // 8 + 4 bytes: past 10, closed after message 9.
        let (chunk, pos) = f.ready.pop().unwrap();
        assert_eq!((chunk.bytes.as_slice(), pos), (&b"1,2\n3,4\n5,6\n"[..], 9));
        assert_eq!((chunk.source, chunk.first_line), (7, 1));
        f.push(b"7,8", 10);
        f.close();
        let (chunk, pos) = f.ready.pop().unwrap();
        assert_eq!(
            (chunk.bytes.as_slice(), pos, chunk.first_line),
            (&b"7,8\n"[..], 10, 4)
        );
        assert!(!f.buffered());
    }

    #[test]
    fn a_too_long_line_is_dropped_and_counted_without_splitting_messages() {
        let mut f = MessageFramer::new(0, 4, 1 << 20);
        f.push(b"1,2\n123456789\n3,4", 1);
        f.close();
        let (chunk, pos) = f.ready.pop().unwrap();
        assert_eq!(chunk.bytes, b"1,2\n3,4\n");
        assert_eq!((chunk.too_long.clone(), pos), (vec![2], 1));
    }
}
