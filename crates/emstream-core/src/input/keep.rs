//! `--score-keep`: input fields copied, as their raw text, into the score
//! line of each accepted record, so a score line can be joined back to its
//! record.
//!
//! An item of the list is one of
//!
//! - a 0-based field index: the CSV column, or the JSON array element;
//! - a name: the CSV header's column (resolved against the header line,
//!   like `--columns`), or for JSON objects a field path (`id`,
//!   `env.ts`);
//! - a pseudo-field: [`SOURCE`] (the record's source: file path, `stdin`,
//!   TCP connection, MQTT topic, JetStream subject), [`LINE`] (the
//!   record's 1-based line within its source, the number reject messages
//!   give), [`MESSAGE`] (a message source's message sequence: JetStream's
//!   stream sequence, MQTT's count of messages received; empty for other
//!   sources).
//!
//! The parser copies the text of the kept fields of each accepted record
//! into a [`KeptRow`] ([`Batch::kept`](super::Batch::kept)): a CSV field
//! with its quotes undone, a JSON string decoded, any other JSON value
//! (a number, `true`, an object) as its JSON text. A field the record
//! lacks is [`KeptValue::Missing`]; the record is still a point.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::SourceId;

/// The pseudo-field naming a record's source.
pub const SOURCE: &str = "@source";
/// The pseudo-field giving a record's 1-based line within its source.
pub const LINE: &str = "@line";
/// The pseudo-field giving a message source's message sequence.
pub const MESSAGE: &str = "@message";

/// Names a score line gives its own fields: a kept field may not take one.
const SCORE_FIELDS: [&str; 5] = ["label", "log_lik", "resp", "anomaly", "outlier"];

/// One item of a `--score-keep` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepItem {
    /// A 0-based CSV field or JSON array element.
    Index(usize),
    /// A CSV header name, or a JSON object field path (dot-separated).
    Name(String),
    /// [`SOURCE`].
    Source,
    /// [`LINE`].
    Line,
    /// [`MESSAGE`].
    Message,
}

impl KeepItem {
    /// Reads one item: a pseudo-field, an index, or a name.
    ///
    /// # Errors
    ///
    /// An unknown pseudo-field, an empty item, or a name a score line
    /// uses for its own fields (say what to give instead).
    pub fn parse(item: &str) -> Result<KeepItem, String> {
        let item = item.trim();
        match item {
            "" => Err("--score-keep has an empty item: give indices, names or @source, @line, @message, comma-separated".into()),
            SOURCE => Ok(KeepItem::Source),
            LINE => Ok(KeepItem::Line),
            MESSAGE => Ok(KeepItem::Message),
            p if p.starts_with('@') => Err(format!(
                "--score-keep {p}: unknown pseudo-field; the pseudo-fields are {SOURCE}, {LINE} and {MESSAGE}"
            )),
            n if SCORE_FIELDS.contains(&n) => Err(format!(
                "--score-keep {n}: a score line has a field of that name already; give the column's 0-based index instead"
            )),
            n => Ok(match n.parse::<usize>() {
                Ok(i) => KeepItem::Index(i),
                Err(_) => KeepItem::Name(n.to_owned()),
            }),
        }
    }

    /// Reads a comma-split list ([`KeepItem::parse`] each), refusing
    /// repeats.
    ///
    /// # Errors
    ///
    /// As [`KeepItem::parse`], or an item given twice.
    pub fn parse_list(items: &[String]) -> Result<Vec<KeepItem>, String> {
        let mut out: Vec<KeepItem> = Vec::with_capacity(items.len());
        for s in items {
            let item = KeepItem::parse(s)?;
            if out.contains(&item) {
                return Err(format!("--score-keep names {} twice", s.trim()));
            }
            out.push(item);
        }
        Ok(out)
    }

    /// The item as given: its CSV header name and JSON key in score lines.
    pub fn key(&self) -> String {
        match self {
            KeepItem::Index(i) => i.to_string(),
            KeepItem::Name(n) => n.clone(),
            KeepItem::Source => SOURCE.to_owned(),
            KeepItem::Line => LINE.to_owned(),
            KeepItem::Message => MESSAGE.to_owned(),
        }
    }

    /// Whether the item is a field of the record (not a pseudo-field).
    pub fn is_field(&self) -> bool {
        matches!(self, KeepItem::Index(_) | KeepItem::Name(_))
    }
}

/// The text of one kept field of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeptValue {
    /// The record has no such field.
    Missing,
    /// Text: a CSV field (quotes undone) or a JSON string (decoded).
    Text(String),
    /// A JSON value that is not a string, as its JSON text (`21.50`,
    /// `true`, `{"a":1}`).
    Json(String),
}

/// Which message of a message source (MQTT, JetStream) a record came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageTag {
    /// The MQTT topic or JetStream subject.
    pub topic: Arc<str>,
    /// The message sequence ([`MESSAGE`]).
    pub seq: u64,
}

/// The kept fields of one accepted record, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptRow {
    /// The record's source.
    pub source: SourceId,
    /// The record's 1-based line within its source.
    pub line: u64,
    /// The message it came in, for a message source (set by the pipeline,
    /// which knows the messages).
    pub message: Option<MessageTag>,
    /// One value per field item of the list ([`KeepItem::is_field`]), in
    /// order.
    pub values: Vec<KeptValue>,
}

/// The field items of a keep list resolved for CSV: a column index each
/// (`None` while a name waits for the header line).
pub(super) fn csv_columns(items: &[KeepItem]) -> Vec<Option<usize>> {
    items
        .iter()
        .filter(|i| i.is_field())
        .map(|i| match i {
            KeepItem::Index(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// The kept CSV fields of a record whose fields are `fields` (byte ranges
/// of `buf`), for the resolved `columns`.
pub(super) fn csv_values(
    columns: &[Option<usize>],
    buf: &[u8],
    fields: &[(usize, usize)],
    trim: fn(&[u8]) -> &[u8],
) -> Vec<KeptValue> {
    columns
        .iter()
        .map(|c| match c.and_then(|c| fields.get(c)) {
            Some(&(a, b)) => {
                KeptValue::Text(String::from_utf8_lossy(trim(&buf[a..b])).into_owned())
            }
            None => KeptValue::Missing,
        })
        .collect()
}

/// The kept fields of the JSON record on `text` (an object, or an array
/// for index items); a pseudo-field item is skipped.
pub(super) fn json_values(items: &[KeepItem], text: &[u8]) -> Vec<KeptValue> {
    // The record is parsed once into its top level; a path walks down
    // from there.
    let text = std::str::from_utf8(text).unwrap_or("");
    // String keys: a key written with an escape cannot be borrowed.
    let object: Option<std::collections::BTreeMap<String, &RawValue>> =
        serde_json::from_str(text).ok();
    let array: Option<Vec<&RawValue>> = match object {
        Some(_) => None,
        None => serde_json::from_str(text).ok(),
    };
    items
        .iter()
        .filter_map(|item| match item {
            KeepItem::Index(i) => Some(
                array
                    .as_ref()
                    .and_then(|a| a.get(*i))
                    .map_or(KeptValue::Missing, |v| raw_value(v)),
            ),
            KeepItem::Name(path) => Some(
                object
                    .as_ref()
                    .and_then(|o| json_path(o, path))
                    .unwrap_or(KeptValue::Missing),
            ),
            _ => None,
        })
        .collect()
}

/// The value at a dotted `path` of a JSON object's top level `object`.
fn json_path(
    object: &std::collections::BTreeMap<String, &RawValue>,
    path: &str,
) -> Option<KeptValue> {
    let mut keys = path.split('.');
    let mut at: &RawValue = object.get(keys.next()?)?;
    for key in keys {
        let inner: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_str(at.get()).ok()?;
        at = inner.get(key)?;
    }
    Some(raw_value(at))
}

/// A JSON string decoded, or any other value's text.
fn raw_value(v: &RawValue) -> KeptValue {
    let text = v.get();
    if text.starts_with('"') {
        match serde_json::from_str::<String>(text) {
            Ok(s) => KeptValue::Text(s),
            Err(_) => KeptValue::Json(text.to_owned()),
        }
    } else {
        KeptValue::Json(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_pseudo_fields_indices_or_names() {
        let list: Vec<String> = ["@source", " 3", "id", "env.ts", "@line", "@message"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            KeepItem::parse_list(&list).unwrap(),
            vec![
                KeepItem::Source,
                KeepItem::Index(3),
                KeepItem::Name("id".into()),
                KeepItem::Name("env.ts".into()),
                KeepItem::Line,
                KeepItem::Message,
            ]
        );
        assert!(KeepItem::parse("@topic").unwrap_err().contains("@source"));
        assert!(KeepItem::parse("label").unwrap_err().contains("index"));
        assert!(KeepItem::parse_list(&["id".into(), "id".into()])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn json_values_keep_the_raw_text() {
        let items = [
            KeepItem::Name("id".into()),
            KeepItem::Line,
            KeepItem::Name("env.ts".into()),
            KeepItem::Name("nope".into()),
            KeepItem::Name("env".into()),
        ];
        let v = json_values(&items, br#"{"id":"s\"3","env":{"ts":1.50e3,"t":2},"x":1}"#);
        assert_eq!(
            v,
            vec![
                KeptValue::Text("s\"3".into()),
                KeptValue::Json("1.50e3".into()),
                KeptValue::Missing,
                KeptValue::Json(r#"{"ts":1.50e3,"t":2}"#.into()),
            ]
        );
        // A key written with an escape is still found.
        let v = json_values(&[KeepItem::Name("caf\u{e9}".into())], br#"{"caf\u00e9":1}"#);
        assert_eq!(v, vec![KeptValue::Json("1".into())]);
        let v = json_values(&[KeepItem::Index(1), KeepItem::Index(9)], b"[1, 2.0 ,3]");
        assert_eq!(v, vec![KeptValue::Json("2.0".into()), KeptValue::Missing]);
    }
}
