//! The input options shared by the report commands that read points
//! (`score`, `plot --data`): the same format, delimiter, column and field
//! options as `run`, checked against the model's dimension once.

use super::ReportError;
use crate::input::{ColumnList, Columns, Delimiter, Format, ParserConfig};

/// How to read the points of a report command's input, as for `run`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct InputArgs {
    /// Record format of the input (and of `score`'s lines): csv or json.
    #[arg(long, value_name = "FORMAT", value_parser = crate::config::enum_value::<Format>, default_value = "csv")]
    pub format: Format,
    /// CSV field separator (as for `run`): auto, comma, semicolon, tab,
    /// pipe or whitespace.
    #[arg(long, value_name = "SEP", value_parser = parse_delimiter, default_value = "auto")]
    pub delimiter: Delimiter,
    /// Fields to use: 0-based indices or header names (as for `run`), e.g.
    /// 0,1 or eruptions,waiting.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// JSON objects: the fields to use (as for `run`), e.g. env.temp,env.hum.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub fields: Option<Vec<String>>,
    /// JSON: accept numbers written as strings ("21.5").
    #[arg(long)]
    pub string_numbers: bool,
}

/// A `--delimiter` value: a name or the character itself.
fn parse_delimiter(s: &str) -> Result<Delimiter, String> {
    s.parse()
        .or_else(|e| crate::config::enum_value(s).map_err(|_| e))
}

impl InputArgs {
    /// The parser configuration for points of dimension `dim`.
    ///
    /// # Errors
    ///
    /// [`ReportError::Invalid`] when the options contradict each other or
    /// name another number of fields than `dim`; the message says what to
    /// change.
    pub fn parser_config(&self, dim: usize) -> Result<ParserConfig, ReportError> {
        let invalid = |m: String| ReportError::Invalid(m);
        let (columns, column_names) = match &self.columns {
            None => (None, None),
            Some(list) => match ColumnList::parse(list) {
                ColumnList::Indices(i) => (
                    Some(Columns::new(i).map_err(|e| invalid(e.to_string()))?),
                    None,
                ),
                ColumnList::Names(n) => (None, Some(n)),
            },
        };
        let fields = self.fields.clone().filter(|f| !f.is_empty());
        if fields.is_some() && self.format != Format::Json {
            return Err(invalid(
                "--fields names values of JSON objects: add --format json, or use --columns for CSV"
                    .into(),
            ));
        }
        if (column_names.is_some() || self.delimiter != Delimiter::Auto)
            && self.format != Format::Csv
        {
            return Err(invalid(
                "header names in --columns and --delimiter apply to CSV only: with --format json name the values with --fields".into(),
            ));
        }
        let listed = columns
            .as_ref()
            .map(Columns::len)
            .or(column_names.as_ref().map(Vec::len))
            .or(fields.as_ref().map(Vec::len));
        if let Some(n) = listed.filter(|&n| n != dim) {
            return Err(invalid(format!(
                "--columns (or --fields) names {n} fields but the model has dimension {dim}: name exactly {dim}"
            )));
        }
        Ok(ParserConfig {
            format: self.format,
            columns,
            column_names,
            delimiter: self.delimiter,
            fields,
            string_numbers: self.string_numbers,
            dim: Some(dim),
            keep: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(format: Format, columns: Option<&[&str]>, fields: Option<&[&str]>) -> InputArgs {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        InputArgs {
            format,
            columns: columns.map(list),
            fields: fields.map(list),
            ..InputArgs::default()
        }
    }

    #[test]
    fn columns_are_indices_or_names_and_must_give_the_dimension() {
        let c = args(Format::Csv, Some(&["2", "0"]), None)
            .parser_config(2)
            .unwrap();
        assert_eq!(c.columns, Some(Columns::new(vec![2, 0]).unwrap()));
        let c = args(Format::Csv, Some(&["carat", "price"]), None)
            .parser_config(2)
            .unwrap();
        assert_eq!(c.column_names, Some(vec!["carat".into(), "price".into()]));
        let e = args(Format::Csv, Some(&["a"]), None)
            .parser_config(2)
            .unwrap_err();
        assert!(e.to_string().contains("name exactly 2"), "{e}");
        let e = args(Format::Csv, Some(&["1", "1"]), None)
            .parser_config(2)
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn fields_need_json_and_names_need_csv() {
        let c = args(Format::Json, None, Some(&["env.temp", "hum"]))
            .parser_config(2)
            .unwrap();
        assert_eq!(c.fields, Some(vec!["env.temp".into(), "hum".into()]));
        assert!(args(Format::Csv, None, Some(&["a", "b"]))
            .parser_config(2)
            .is_err());
        assert!(args(Format::Json, Some(&["a", "b"]), None)
            .parser_config(2)
            .is_err());
    }
}
