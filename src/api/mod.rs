//! The one layer the front ends share: the CLI's `--json` output, the MCP
//! server (`cairn mcp`) and the HTTP API call the library through here.
//!
//! For each operation this module holds its request type and its report.
//! A request type derives `serde::Deserialize` and `schemars::JsonSchema`
//! (the MCP tool input and the HTTP query or body) and, where the CLI takes
//! the same arguments, `clap::Args` too, so the three front ends parse one
//! definition. A report derives `serde::Serialize` and is exactly the `data`
//! of the CLI's `--json` envelope; the front ends differ only in how they
//! carry it. [`error_json`] is the one error body all of them send.
//!
//! Invariants: a report's JSON shape is stable (fields are added, never
//! renamed); a request that is bad is refused with a VALIDATION error whose
//! pointer names the field, before anything is written; nothing here prints
//! or reads the environment.

mod memory;
mod project;
mod read;
mod runs;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::error::{Error, Result};

pub use memory::*;
pub use project::*;
pub use read::*;
pub use runs::*;

/// The `file` an input error names when the input is a request (MCP
/// arguments, an HTTP body) rather than a file.
pub const REQUEST: &str = "request";

/// The error body the front ends share: `code`, `category`, `message`,
/// `retryable` and `details` (with the `causes` chain and a `hint` when
/// there are any). The CLI wraps it as `{"ok": false, "error": ...}`.
pub fn error_json(e: &Error) -> Value {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let mut details = e.details();
    if !chain.is_empty() {
        details["causes"] = json!(chain);
    }
    if let Some(h) = e.hint() {
        details["hint"] = json!(h);
    }
    json!({
        "code": e.code(),
        "category": e.category().as_str(),
        "message": e.to_string(),
        "retryable": e.retryable(),
        "details": details,
    })
}

/// The error body of a usage problem a front end found itself (a CLI flag
/// combination, an unknown route): category and code `USAGE`.
pub fn usage_error_json(message: &str) -> Value {
    json!({
        "code": "USAGE", "category": "USAGE", "message": message,
        "retryable": false, "details": {},
    })
}

/// `{"ok": true, "data": data}`: the CLI's success envelope.
pub fn ok_envelope(data: Value) -> Value {
    json!({"ok": true, "data": data})
}

/// `{"ok": false, "error": error}`: the CLI's failure envelope around
/// [`error_json`] or [`usage_error_json`].
pub fn error_envelope(error: Value) -> Value {
    json!({"ok": false, "error": error})
}

/// Reads a request of type `T` from JSON arguments (MCP tool arguments, an
/// HTTP body). A bad field is a VALIDATION error ([`Error::Invalid`], file
/// [`REQUEST`]) whose pointer names the field.
pub fn parse_request<T: serde::de::DeserializeOwned>(args: Value) -> Result<T> {
    serde_path_to_error::deserialize::<_, T>(args).map_err(|e| {
        let pointer = pointer_of(e.path());
        let inner = e.into_inner().to_string();
        // serde names a missing or unknown field only in its message.
        let pointer = match (pointer.as_str(), field_in(&inner)) {
            ("", Some(f)) => format!("/{f}"),
            (p, Some(f)) if inner.starts_with("missing field") => format!("{p}/{f}"),
            _ => pointer,
        };
        Error::Invalid {
            file: REQUEST.into(),
            pointer,
            rule: "request_shape",
            message: inner,
        }
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", escape(key))),
            Segment::Enum { variant } => out.push_str(&format!("/{}", escape(variant))),
            Segment::Unknown => {}
        }
    }
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The field a serde message names in backticks (``missing field `run` ``).
fn field_in(message: &str) -> Option<&str> {
    if !(message.starts_with("missing field") || message.starts_with("unknown field")) {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// An input error about request field `field` (a VALIDATION error).
pub fn invalid_field(field: &str, rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        file: REQUEST.into(),
        pointer: format!("/{}", escape(field)),
        rule,
        message: message.into(),
    }
}

/// Parses an optional RFC 3339 time of request field `field`.
pub fn time_field(field: &str, value: Option<&str>) -> Result<Option<time::OffsetDateTime>> {
    value
        .map(|s| {
            crate::event::parse_rfc3339(s).ok_or_else(|| {
                invalid_field(field, "rfc3339", format!("{s:?} is not an RFC 3339 time"))
            })
        })
        .transpose()
}

/// A required text field that serde let through as absent or empty.
fn required<'a>(field: &str, value: Option<&'a str>) -> Result<&'a str> {
    match value {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(invalid_field(
            field,
            "required",
            format!("{field} is required"),
        )),
    }
}

/// Words given as one string or a list of strings (joined by spaces).
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Words {
    /// The words as one string.
    One(String),
    /// The words as a list.
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum W {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<W>::deserialize(d)? {
        None => Vec::new(),
        Some(W::One(s)) => vec![s],
        Some(W::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct R {
        run: String,
        seq: Option<u64>,
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = parse_request::<R>(json!({"seq": 1})).unwrap_err();
        assert_eq!(e.category(), crate::Category::Validation);
        assert!(
            matches!(&e, Error::Invalid { pointer, .. } if pointer == "/run"),
            "{e}"
        );
        let e = parse_request::<R>(json!({"run": "r", "seq": "x"})).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { pointer, .. } if pointer == "/seq"),
            "{e}"
        );
        let e = parse_request::<R>(json!({"run": "r", "sqe": 1})).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid { pointer, .. } if pointer == "/sqe"),
            "{e}"
        );
    }
}
