//! A strict parser of the OpenMetrics text format (1.0.0), for checking
//! `/metrics` without anything but the Rust toolchain.
//!
//! It refuses what the format forbids that an encoder could get wrong:
//! samples outside their family, descriptors after a family's samples, a
//! family declared twice or split in two, sample names that do not belong to the family's
//! type (`_total`/`_created` for counters, `_bucket`/`_count`/`_sum` for
//! histograms, `_info` for info), duplicate series, malformed or badly
//! escaped labels, values that are not numbers, negative counters,
//! histogram buckets that do not grow or lack `le="+Inf"`, blank lines,
//! and a missing or non-final `# EOF`.

use std::collections::{BTreeMap, BTreeSet};

/// Every sample as `name{label="value",...}` (labels sorted by name) ->
/// value, or what is wrong with `text` (with its line number).
pub fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or("the text does not end with `# EOF`")?;
    let mut out = BTreeMap::new();
    let mut families: BTreeSet<String> = BTreeSet::new();
    // The family being read: name and type; whether it has samples yet.
    let mut current: Option<(String, String)> = None;
    let mut sampled = false;
    let mut described: BTreeSet<(String, &str)> = BTreeSet::new();
    // Per histogram series (labels without `le`): the last bucket bound
    // and count.
    let mut buckets: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (i, line) in body.split_terminator('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if line.is_empty() {
            return Err(at("a blank line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let name = parts.next().ok_or_else(|| at("no metric name".into()))?;
            check_name(name).map_err(at)?;
            let rest = parts.next();
            let kind = match kind {
                "TYPE" => "TYPE",
                "HELP" => "HELP",
                "UNIT" => "UNIT",
                other => return Err(at(format!("unknown descriptor `{other}`"))),
            };
            let same = current.as_ref().is_some_and(|(n, _)| n == name);
            if !same {
                // A descriptor of another name starts the next family
                // (of type `unknown` until its `# TYPE`).
                if !families.insert(name.to_string()) {
                    return Err(at(format!("family `{name}` appears twice")));
                }
                current = Some((name.to_string(), "unknown".to_string()));
                sampled = false;
            } else if sampled {
                return Err(at(format!("`# {kind}` of `{name}` after its samples")));
            }
            if !described.insert((name.to_string(), kind)) {
                return Err(at(format!("a second `# {kind}` for `{name}`")));
            }
            match kind {
                "TYPE" => {
                    let ty = rest.ok_or_else(|| at("no type".into()))?;
                    const TYPES: [&str; 8] = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !TYPES.contains(&ty) {
                        return Err(at(format!("unknown type `{ty}`")));
                    }
                    current = Some((name.to_string(), ty.to_string()));
                }
                "UNIT" => {
                    let unit = rest.unwrap_or_default();
                    if !unit.is_empty() && !name.ends_with(&format!("_{unit}")) {
                        return Err(at(format!("`{name}` does not end in its unit `{unit}`")));
                    }
                }
                _ => {
                    unescape(rest.unwrap_or_default()).map_err(at)?;
                }
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("a comment that is not a descriptor".into()));
        }
        let (family, ty) = current
            .as_ref()
            .ok_or_else(|| at("a sample before any `# TYPE`".into()))?;
        sampled = true;
        let (name, labels, value) = sample(line).map_err(at)?;
        let suffix = name
            .strip_prefix(family.as_str())
            .ok_or_else(|| at(format!("sample outside its family `{family}`")))?;
        let allowed: &[&str] = match ty.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => {
                &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
            }
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("`{name}` is not a sample of {ty} `{family}`")));
        }
        if ty == "counter" && suffix == "_total" && (value.is_nan() || value < 0.0) {
            return Err(at("a counter below 0 (or NaN)".into()));
        }
        if suffix == "_bucket" {
            let le = labels
                .get("le")
                .ok_or_else(|| at("a bucket without `le`".into()))?;
            let bound = number(le).map_err(at)?;
            let mut series = labels.clone();
            series.remove("le");
            let key = format!("{series:?}");
            if let Some(&(last_bound, last_count)) = buckets.get(&key) {
                if bound.is_nan() || bound <= last_bound || value < last_count {
                    return Err(at("buckets out of order or counts falling".into()));
                }
            }
            buckets.insert(key, (bound, value));
        }
        let labelled = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",");
        let key = if labelled.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{labelled}}}")
        };
        if out.insert(key, value).is_some() {
            return Err(at("the same series twice".into()));
        }
    }
    if let Some((key, (bound, _))) = buckets.iter().find(|(_, (b, _))| *b != f64::INFINITY) {
        return Err(format!(
            "histogram series {key} ends at le={bound}, not le=\"+Inf\""
        ));
    }
    Ok(out)
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid name"))
    }
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf`.
fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') => s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("`{s}` is not a number")),
        _ => Err(format!("`{s}` is not a number")),
    }
}

/// A label value or help text with `\\`, `\"` and `\n` escapes undone.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                other => return Err(format!("a bad escape `\\{other:?}`")),
            },
            '\n' => return Err("a raw line end".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `name{labels} value [timestamp]`: the name, the labels and the value.
fn sample(line: &str) -> Result<(&str, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inside) = rest.strip_prefix('{') {
        let mut s = inside;
        loop {
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = s.find('=').ok_or("a label without `=`")?;
            let label = &s[..eq];
            check_name(label)?;
            let quoted = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            // The closing quote: the first one not escaped.
            let mut end = None;
            let mut escaped = false;
            for (j, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(j);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("an unclosed label value")?;
            let value = unescape(&quoted[..end])?;
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label `{label}` twice"));
            }
            s = &quoted[end + 1..];
            if let Some(after) = s.strip_prefix(',') {
                s = after;
                if s.starts_with('}') {
                    return Err("a trailing comma in the labels".into());
                }
            } else if !s.starts_with('}') {
                return Err("labels not separated by `,`".into());
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    let mut fields = rest.split(' ');
    let value = number(fields.next().unwrap_or_default())?;
    if let Some(ts) = fields.next() {
        number(ts).map_err(|e| format!("timestamp: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::parse;

    const GOOD: &str = "# HELP a_events Events.\n\
# TYPE a_events counter\n\
a_events_total 3\n\
a_events_created 1.5e9\n\
# TYPE b gauge\n\
# HELP b A \\\"quoted\\\" help.\n\
b{k=\"x\\\"y\",j=\"1\"} -2.5\n\
b{k=\"z\",j=\"1\"} NaN\n\
# TYPE c_seconds histogram\n\
# UNIT c_seconds seconds\n\
c_seconds_sum 1.0\n\
c_seconds_count 2\n\
c_seconds_bucket{le=\"0.1\"} 1\n\
c_seconds_bucket{le=\"+Inf\"} 2\n\
# TYPE d info\n\
d_info{version=\"1\"} 1\n\
# EOF\n";

    #[test]
    fn a_valid_exposition_parses_to_sorted_labelled_keys() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m["a_events_total"], 3.0);
        assert_eq!(m["b{j=\"1\",k=\"x\"y\"}"], -2.5);
        assert!(m["b{j=\"1\",k=\"z\"}"].is_nan());
        assert_eq!(m["c_seconds_bucket{le=\"+Inf\"}"], 2.0);
        assert_eq!(m["d_info{version=\"1\"}"], 1.0);
        assert_eq!(m.len(), 9);
    }

    /// `GOOD` with `from` replaced by `to` (which must occur).
    fn broken(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replacen(from, to, 1)
    }

    #[test]
    fn each_kind_of_mistake_is_refused() {
        let cases = [
            ("# EOF\n", "", "EOF"),
            ("# TYPE b gauge\n", "# TYPE b gauge\n\n", "blank"),
            ("# EOF\n", "b 1\n# EOF\n", "outside"),
            ("a_events_total 3", "a_events 3", "not a sample"),
            ("a_events_total 3", "a_events_total -3", "below 0"),
            ("a_events_total 3", "a_events_total three", "not a number"),
            ("a_events_total 3", "a_events_total  3", "number"),
            ("j=\"1\"} -2.5", "j=\"1\",} -2.5", "trailing comma"),
            ("j=\"1\"} -2.5", "j=1} -2.5", "without quotes"),
            ("x\\\"y", "x\\qy", "bad escape"),
            ("b{k=\"z\"", "b{k=\"x\\\"y\"", "twice"),
            ("# TYPE b gauge", "# TYPE b gauges", "unknown type"),
            ("# TYPE d info", "# TYPE a_events counter", "appears twice"),
            ("le=\"+Inf\"} 2", "le=\"0.05\"} 2", "out of order"),
            ("le=\"+Inf\"} 2", "le=\"1\"} 2", "+Inf"),
            ("# UNIT c_seconds seconds", "# UNIT c_seconds bytes", "unit"),
            ("# HELP a_events", "# HELP 9a", "not a valid name"),
            ("# EOF\n", "# EOF\nb 1\n", "EOF"),
        ];
        for (from, to, why) in cases {
            let text = broken(from, to);
            let err = parse(&text).expect_err(why);
            assert!(err.contains(why), "{why}: {err}\n{text}");
        }
    }

    #[test]
    fn help_may_come_before_type_but_no_descriptor_after_the_samples() {
        let text = "# HELP x Help.\n# TYPE x gauge\nx 1\n# EOF\n";
        assert_eq!(parse(text).unwrap()["x"], 1.0);
        let text = "# TYPE x gauge\nx 1\n# HELP x Help.\n# EOF\n";
        assert!(parse(text).unwrap_err().contains("after its samples"));
    }
}
