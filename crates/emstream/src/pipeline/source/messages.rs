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

use std::sync::Arc;

use super::{lines_in, EventSender, MessageStart, SourceEvent};
use crate::input::keep::MessageTag;
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
    /// Chunks ready to send with their positions and message starts.
    ready: Vec<(Chunk, u64, Vec<MessageStart>)>,
    /// Starts of the messages pushed and not yet in a ready chunk.
    starts: Vec<MessageStart>,
    /// The start of the last message in a ready chunk (a chunk the framer
    /// closed inside a message continues it).
    carry: Option<MessageStart>,
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
            starts: Vec::new(),
            carry: None,
        }
    }

    /// Moves `chunk` to the ready ones with `position` and the starts of
    /// its messages.
    fn ready(&mut self, chunk: Chunk, position: u64) {
        let end = chunk.first_line + lines_in(&chunk);
        let n = self.starts.partition_point(|s| s.first_line < end);
        let mut messages = Vec::with_capacity(n + 1);
        let begins_inside = self
            .starts
            .first()
            .is_none_or(|s| s.first_line > chunk.first_line);
        if let (true, Some(c)) = (begins_inside, self.carry.take()) {
            messages.push(c);
        }
        messages.extend(self.starts.drain(..n));
        self.carry = messages.last().cloned();
        self.ready.push((chunk, position, messages));
    }

    /// Adds the body of the message at `position`, published on `topic`
    /// (an MQTT topic, a JetStream subject); closes a chunk when enough
    /// bytes are buffered.
    pub(crate) fn push(&mut self, body: &[u8], position: u64, topic: &str) {
        let before = self.last;
        // One allocation per topic, not per message: most messages come on
        // the topic of the one before.
        let last_topic = self.starts.last().or(self.carry.as_ref());
        let topic = match last_topic {
            Some(s) if &*s.tag.topic == topic => s.tag.topic.clone(),
            _ => Arc::from(topic),
        };
        self.starts.push(MessageStart {
            first_line: self.framer.next_line(),
            tag: MessageTag {
                topic,
                seq: position,
            },
        });
        self.framer.push(body, &mut self.out);
        if body.last() != Some(&b'\n') {
            self.framer.push(b"\n", &mut self.out);
        }
        // Only a run of too-long lines makes the framer close a chunk by
        // itself (inside this message): that chunk holds whole messages up
        // to the one before.
        let mut out = std::mem::take(&mut self.out);
        for chunk in out.drain(..) {
            self.ready(chunk, before.unwrap_or(position));
        }
        self.out = out;
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
        let mut out = std::mem::take(&mut self.out);
        for chunk in out.drain(..) {
            self.ready(chunk, last);
        }
        self.out = out;
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
        for (chunk, position, messages) in self.ready.drain(..) {
            if tx
                .send(SourceEvent::Chunk {
                    chunk,
                    position,
                    messages,
                })
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
        f.push(b"1,2\n3,4", 5, "t");
        assert!(!f.has_ready());
        f.push(b"5,6\n", 9, "t");
        // 8 + 4 bytes: past 10, closed after message 9.
        let (chunk, pos, _) = f.ready.pop().unwrap();
        assert_eq!((chunk.bytes.as_slice(), pos), (&b"1,2\n3,4\n5,6\n"[..], 9));
        assert_eq!((chunk.source, chunk.first_line), (7, 1));
        f.push(b"7,8", 10, "t");
        f.close();
        let (chunk, pos, _) = f.ready.pop().unwrap();
        assert_eq!(
            (chunk.bytes.as_slice(), pos, chunk.first_line),
            (&b"7,8\n"[..], 10, 4)
        );
        assert!(!f.buffered());
    }

    #[test]
    fn a_too_long_line_is_dropped_and_counted_without_splitting_messages() {
        let mut f = MessageFramer::new(0, 4, 1 << 20);
        f.push(b"1,2\n123456789\n3,4", 1, "t");
        f.close();
        let (chunk, pos, _) = f.ready.pop().unwrap();
        assert_eq!(chunk.bytes, b"1,2\n3,4\n");
        assert_eq!((chunk.too_long.clone(), pos), (vec![2], 1));
    }

    #[test]
    fn each_line_is_named_by_its_message() {
        use crate::pipeline::source::message_at;
        // Closes a chunk after about 10 bytes; lines longer than 6 bytes
        // are dropped but keep their numbers.
        let mut f = MessageFramer::new(1, 6, 10);
        f.push(b"1,2\n3,4", 1, "s/a");
        f.push(b"5,6\n", 2, "s/b");
        f.push(b"7,8\n9,10\n", 3, "s/b");
        f.close();
        let chunks: Vec<_> = f.ready.drain(..).collect();
        let named = |chunks: &[(Chunk, u64, Vec<MessageStart>)], line| {
            let c = chunks
                .iter()
                .rev()
                .find(|c| c.0.first_line <= line)
                .unwrap();
            message_at(&c.2, line).map(|m| (m.topic.to_string(), m.seq))
        };
        let want = [
            (1, "s/a", 1),
            (2, "s/a", 1),
            (3, "s/b", 2),
            (4, "s/b", 3),
            (5, "s/b", 3),
        ];
        for (line, topic, seq) in want {
            assert_eq!(
                named(&chunks, line),
                Some((topic.to_owned(), seq)),
                "line {line}"
            );
        }
        // One allocation for a topic repeated by consecutive messages.
        let starts: Vec<&MessageStart> = chunks.iter().flat_map(|c| c.2.iter()).collect();
        let b: Vec<_> = starts.iter().filter(|s| &*s.tag.topic == "s/b").collect();
        assert!(Arc::ptr_eq(&b[0].tag.topic, &b[b.len() - 1].tag.topic));
        // A chunk the framer closes inside a message (a run of too-long
        // lines) still names the lines after it by that message.
        let mut f = MessageFramer::new(1, 3, 1 << 20);
        let mut body = Vec::new();
        // More than the framer's 1024 too-long lines per chunk.
        for _ in 0..1100 {
            body.extend_from_slice(b"123456789\n");
        }
        body.extend_from_slice(b"1,2\n");
        f.push(b"0,0", 7, "first");
        f.push(&body, 8, "long");
        f.close();
        let chunks: Vec<_> = f.ready.drain(..).collect();
        assert!(chunks.len() >= 2, "{} chunks", chunks.len());
        let last_line = chunks
            .last()
            .map(|c| c.0.first_line + lines_in(&c.0) - 1)
            .unwrap();
        assert_eq!(named(&chunks, last_line), Some(("long".to_owned(), 8)));
        assert_eq!(named(&chunks, 1), Some(("first".to_owned(), 7)));
    }
}
