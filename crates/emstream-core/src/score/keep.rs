//! The kept fields of `--score-keep` as they start a score line.
//!
//! CSV: the kept fields first, in the order given, each followed by a
//! comma: `id,@line,label,log_lik,...`. A field holding a comma, a quote,
//! a carriage return or a line feed, or starting or ending with a blank,
//! is quoted per RFC 4180 (`"a ""b"", c"`); a missing field is empty.
//! JSON: the kept fields are the object's first keys, named as given
//! (`{"id":"s3","@line":4,"label":1,...}`): text is a JSON string, a JSON
//! input's number, boolean or object its JSON text as it was, a missing
//! field `null`, `@line` and `@message` numbers, `@source` a string.
//!
//! A point with no record in this run (a resumed warm-up buffer's, read
//! by an earlier run) has every kept field empty (`null` in JSON).

use crate::input::keep::{KeepItem, KeptRow, KeptValue};
use crate::input::SourceId;

/// The formatted kept fields of a block's points, one per score line.
#[derive(Clone, Debug, Default)]
pub struct KeptPrefixes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeptPrefixes {
    /// Empties it, keeping its allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Lines held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The text that starts line `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// How kept fields are written: the `--score-keep` items and the output
/// format.
#[derive(Clone, Debug, PartialEq)]
pub struct KeepFormat {
    items: Vec<KeepItem>,
    json: bool,
}

impl KeepFormat {
    /// Kept `items` for CSV or JSON lines.
    pub fn new(items: Vec<KeepItem>, json: bool) -> Self {
        KeepFormat { items, json }
    }

    /// The start of the CSV header: each item's name and a comma.
    pub fn header(&self) -> String {
        let mut b = Vec::new();
        for item in &self.items {
            push_csv(&mut b, item.key().as_bytes());
            b.push(b',');
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    /// Appends the start of one score line: the kept fields of `row`
    /// (`None`: a point without a record in this run), with `name` giving
    /// a source's name for `@source`.
    pub fn push(
        &self,
        row: Option<&KeptRow>,
        name: &mut dyn FnMut(SourceId) -> String,
        out: &mut KeptPrefixes,
    ) {
        let b = &mut out.bytes;
        let mut values = row.map(|r| r.values.iter());
        let mut ibuf = itoa::Buffer::new();
        for item in &self.items {
            if self.json {
                push_json_str(b, &item.key());
                b.push(b':');
            }
            let number = |n: u64, b: &mut Vec<u8>, ibuf: &mut itoa::Buffer| {
                b.extend_from_slice(ibuf.format(n).as_bytes());
            };
            match (item, row) {
                (_, None) => {
                    if self.json {
                        b.extend_from_slice(b"null");
                    }
                }
                (KeepItem::Source, Some(r)) => {
                    let text = match &r.message {
                        Some(m) => m.topic.to_string(),
                        None => name(r.source),
                    };
                    self.text(b, text.as_bytes());
                }
                (KeepItem::Line, Some(r)) => number(r.line, b, &mut ibuf),
                (KeepItem::Message, Some(r)) => match &r.message {
                    Some(m) => number(m.seq, b, &mut ibuf),
                    None if self.json => b.extend_from_slice(b"null"),
                    None => {}
                },
                (_, Some(_)) => match values.as_mut().and_then(Iterator::next) {
                    Some(KeptValue::Text(t)) => self.text(b, t.as_bytes()),
                    Some(KeptValue::Json(j)) if self.json => b.extend_from_slice(j.as_bytes()),
                    Some(KeptValue::Json(j)) => push_csv(b, j.as_bytes()),
                    Some(KeptValue::Missing) | None => {
                        if self.json {
                            b.extend_from_slice(b"null");
                        }
                    }
                },
            }
            b.push(b',');
        }
        out.ends.push(b.len());
    }

    fn text(&self, b: &mut Vec<u8>, t: &[u8]) {
        if self.json {
            push_json_str(b, &String::from_utf8_lossy(t));
        } else {
            push_csv(b, t);
        }
    }
}

/// One CSV field, quoted per RFC 4180 when it needs to be.
fn push_csv(b: &mut Vec<u8>, t: &[u8]) {
    let needs = t.iter().any(|&c| matches!(c, b',' | b'"' | b'\n' | b'\r'))
        || t.first().is_some_and(|c| c.is_ascii_whitespace())
        || t.last().is_some_and(|c| c.is_ascii_whitespace());
    if !needs {
        b.extend_from_slice(t);
        return;
    }
    b.push(b'"');
    for &c in t {
        if c == b'"' {
            b.push(b'"');
        }
        b.push(c);
    }
    b.push(b'"');
}

/// A JSON string literal.
fn push_json_str(b: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *b, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::keep::MessageTag;

    fn row(values: Vec<KeptValue>, message: Option<MessageTag>) -> KeptRow {
        KeptRow {
            source: 3,
            line: 17,
            message,
            values,
        }
    }

    fn items() -> Vec<KeepItem> {
        vec![
            KeepItem::Name("id".into()),
            KeepItem::Source,
            KeepItem::Line,
            KeepItem::Index(4),
            KeepItem::Message,
        ]
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        let f = KeepFormat::new(items(), false);
        assert_eq!(f.header(), "id,@source,@line,4,@message,");
        let mut out = KeptPrefixes::default();
        let mut name = |id: SourceId| format!("conn #{id}, 127.0.0.1");
        let r = row(
            vec![
                KeptValue::Text("a \"b\"\nc".into()),
                KeptValue::Json("1.50".into()),
            ],
            None,
        );
        f.push(Some(&r), &mut name, &mut out);
        let r = row(vec![KeptValue::Text("x".into()), KeptValue::Missing], None);
        f.push(Some(&r), &mut name, &mut out);
        f.push(None, &mut name, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            String::from_utf8_lossy(out.get(0)),
            "\"a \"\"b\"\"\nc\",\"conn #3, 127.0.0.1\",17,1.50,,"
        );
        assert_eq!(
            String::from_utf8_lossy(out.get(1)),
            "x,\"conn #3, 127.0.0.1\",17,,,"
        );
        assert_eq!(String::from_utf8_lossy(out.get(2)), ",,,,,");
    }

    #[test]
    fn json_fields_keep_their_type() {
        let f = KeepFormat::new(items(), true);
        let mut out = KeptPrefixes::default();
        let mut name = |_| unreachable!("a message names its topic");
        let tag = MessageTag {
            topic: "sensors/\"a\"".into(),
            seq: 9,
        };
        let r = row(
            vec![KeptValue::Text("s3".into()), KeptValue::Json("2.50".into())],
            Some(tag),
        );
        f.push(Some(&r), &mut name, &mut out);
        f.push(None, &mut name, &mut out);
        assert_eq!(
            String::from_utf8_lossy(out.get(0)),
            r#""id":"s3","@source":"sensors/\"a\"","@line":17,"4":2.50,"@message":9,"#
        );
        assert_eq!(
            String::from_utf8_lossy(out.get(1)),
            r#""id":null,"@source":null,"@line":null,"4":null,"@message":null,"#
        );
    }
}
