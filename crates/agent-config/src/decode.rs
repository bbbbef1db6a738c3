//! Untrusted bytes to typed values: size, UTF-8, syntax, then serde with
//! field paths, each failure mapped to one [`Error`] variant.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result, truncate, truncate_to};

/// Longest parser message kept in an error; serde quotes bad input.
const MAX_REASON: usize = 200;

/// Decodes a JSON document of at most `max` bytes into `T`.
pub(crate) fn json<T: DeserializeOwned>(
    document: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T> {
    let text = text(document, bytes, max)?;
    // serde's derive also accepts a struct as a positional array; every
    // document here is an object, so refuse that form at the top.
    if text.trim_start().starts_with('[') {
        return Err(Error::InvalidField {
            document,
            field: ".".to_owned(),
            line: Some(1),
            column: None,
            reason: "expected a JSON object, found an array".to_owned(),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = path_string(e.path());
        json_error(document, path, e.into_inner())
    })?;
    // Trailing data after the value is as malformed as a syntax error.
    de.end()
        .map_err(|e| json_error(document, ".".to_owned(), e))?;
    Ok(value)
}

/// Decodes a TOML document of at most `max` bytes into `T`.
pub(crate) fn toml<T: DeserializeOwned>(
    document: &'static str,
    input: &str,
    max: usize,
) -> Result<T> {
    let text = text(document, input.as_bytes(), max)?;
    let de = ::toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = line_column(text, e.span());
        Error::Malformed {
            document,
            line,
            column,
            reason: truncate_to(e.message(), MAX_REASON),
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = path_string(e.path());
        let e = e.into_inner();
        let (line, column) = line_column(text, e.span());
        data_error(document, path, line, column, e.message())
    })
}

fn text<'a>(document: &'static str, bytes: &'a [u8], max: usize) -> Result<&'a str> {
    if bytes.len() > max {
        return Err(Error::TooLarge {
            document,
            len: bytes.len(),
            max,
        });
    }
    std::str::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
        document,
        valid_up_to: e.valid_up_to(),
    })
}

fn json_error(document: &'static str, path: String, e: serde_json::Error) -> Error {
    let line = (e.line() > 0).then_some(e.line());
    let column = (e.column() > 0).then_some(e.column());
    // serde_json appends " at line L column C" to its message; the
    // location is reported in its own fields instead.
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    match e.classify() {
        serde_json::error::Category::Data => data_error(document, path, line, column, message),
        _ => Error::Malformed {
            document,
            line,
            column,
            reason: truncate_to(message, MAX_REASON),
        },
    }
}

/// Maps a serde data error (unknown field, wrong type, bad value).
fn data_error(
    document: &'static str,
    path: String,
    line: Option<usize>,
    column: Option<usize>,
    message: &str,
) -> Error {
    // serde's derive reports unknown fields as "unknown field `name`, ...";
    // that wording comes from `serde::de::Error::unknown_field` and is
    // stable. serde_path_to_error's path already ends in the unknown key;
    // the name from the message is the fallback at the top level.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        let field = if path == "." || path.is_empty() {
            truncate(name)
        } else {
            path
        };
        return Error::UnknownField {
            document,
            field,
            line,
        };
    }
    Error::InvalidField {
        document,
        field: path,
        line,
        column,
        reason: truncate_to(message, MAX_REASON),
    }
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    // Map keys inside a document are untrusted; keep them short.
    let path = path.to_string();
    if path.len() > 256 {
        truncate(&path)
    } else {
        path
    }
}

/// 1-based line and column (in characters) of a byte span's start.
fn line_column(text: &str, span: Option<std::ops::Range<usize>>) -> (Option<usize>, Option<usize>) {
    let Some(start) = span.map(|s| s.start) else {
        return (None, None);
    };
    let Some(before) = text.as_bytes().get(..start) else {
        return (None, None);
    };
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text.get(line_start..start).map(|s| s.chars().count() + 1);
    (Some(line), column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = x\n";
        let at = text.find('x').unwrap();
        assert_eq!(line_column(text, Some(at..at + 1)), (Some(2), Some(6)));
        assert_eq!(line_column(text, Some(0..1)), (Some(1), Some(1)));
        assert_eq!(line_column(text, None), (None, None));
        assert_eq!(line_column(text, Some(999..1000)), (None, None));
    }

    #[test]
    fn untrusted_text_in_messages_is_bounded_and_escaped() {
        let long = format!(
            r#"{{"device": {{"name": {{"x": "{}\n"}}}}}}"#,
            "A".repeat(10_000)
        );
        let err = crate::DeviceSettings::from_json(long.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 400, "{message}");

        let err = crate::DeviceSettings::from_json(b"{\"a\nforged log line\": 1}").unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
