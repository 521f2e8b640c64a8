//! JSON objects with named fields (`--format json --fields a,env.b`), and
//! the header test for JSON lines. Objects go through `serde_json`: one
//! small allocation per value, which JSON input accepts for its freedom of
//! key order and nesting.

use serde_json::Value;

use super::parser::quote;
use super::RejectReason;

/// The strings of a JSON array of strings only (a header line such as
/// `["temp","hum"]`); `None` for anything else, objects included.
pub(super) fn header_names(text: &[u8]) -> Option<Vec<String>> {
    if text.first() != Some(&b'[') {
        return None;
    }
    match serde_json::from_slice::<Value>(text).ok()? {
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) if s.parse::<f64>().is_err() => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Reads the values at `paths` (each a list of keys into nested objects)
/// of the JSON object on `text` into `values`, in order.
///
/// A value must be a finite JSON number, or with `string_numbers` a
/// string holding one.
pub(super) fn object_record(
    text: &[u8],
    paths: &[Vec<String>],
    string_numbers: bool,
    values: &mut Vec<f64>,
) -> Result<(), (RejectReason, String)> {
    let object = match serde_json::from_slice::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Err((
                RejectReason::BadJson,
                format!("expected a JSON object (--fields), found {}", quote(text)),
            ))
        }
        Err(e) => return Err((RejectReason::BadJson, format!("not valid JSON: {e}"))),
    };
    for path in paths {
        let mut at = &object;
        for key in path {
            at = match at.get(key) {
                Some(v) => v,
                None => {
                    return Err((
                        RejectReason::MissingField,
                        format!("field {} is missing", path.join(".")),
                    ))
                }
            };
        }
        let name = || path.join(".");
        let v = match at {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if string_numbers => s.trim().parse::<f64>().ok(),
            Value::String(s) => {
                return Err((
                    RejectReason::NotNumeric,
                    format!(
                        "field {} is the string {s:?} (add --string-numbers to read numbers written as strings)",
                        name()
                    ),
                ))
            }
            _ => None,
        };
        match v {
            Some(x) if x.is_finite() => values.push(x),
            Some(_) => {
                return Err((
                    RejectReason::NonFinite,
                    format!("field {} is not finite", name()),
                ))
            }
            None => {
                return Err((
                    RejectReason::NotNumeric,
                    format!("field {} is {} , not a number", name(), short(at)),
                ))
            }
        }
    }
    Ok(())
}

/// A JSON value as shown in a detail, shortened.
fn short(v: &Value) -> String {
    quote(v.to_string().as_bytes())
}
