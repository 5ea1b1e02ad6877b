//! The JSON Schemas of every canonical artifact, and parsing of documents.
//!
//! The schemas in the project's `schemas/` folder are embedded in the binary.
//! Each is compiled at most once per process, and only when first needed
//! (compiling costs ~0.5 ms, validating a few µs). All of them are registered
//! under their `$id` so relative `$ref`s between them resolve offline.
//!
//! [`parse_document`] is the one way input text becomes a JSON value: it
//! enforces the size and nesting limits *before* a parser sees the bytes and
//! relies on serde-saphyr's budget to defuse alias bombs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::error::{Error, Result, Violation};

/// The base URI under which the schemas are registered.
const BASE_URI: &str = "https://cairn.invalid/schemas/";

/// Every schema name with its embedded text, in a stable order.
pub const SCHEMAS: &[(&str, &str)] = &[
    (
        "conflict_record",
        include_str!("../schemas/conflict_record.v2.1.schema.json"),
    ),
    (
        "episode",
        include_str!("../schemas/episode.v2.1.schema.json"),
    ),
    (
        "interaction",
        include_str!("../schemas/interaction.v2.1.schema.json"),
    ),
    (
        "ledger_event",
        include_str!("../schemas/ledger_event.v2.1.schema.json"),
    ),
    ("mcr", include_str!("../schemas/mcr.v2.1.schema.json")),
    (
        "mcr_batch",
        include_str!("../schemas/mcr_batch.v2.1.schema.json"),
    ),
    (
        "memory_item",
        include_str!("../schemas/memory_item.v2.1.schema.json"),
    ),
    (
        "project_registry",
        include_str!("../schemas/project_registry.v2.1.schema.json"),
    ),
    (
        "project_state",
        include_str!("../schemas/project_state.v2.1.schema.json"),
    ),
    (
        "resume_pack_manifest",
        include_str!("../schemas/resume_pack_manifest.v2.1.schema.json"),
    ),
    (
        "run_boot",
        include_str!("../schemas/run_boot.v2.1.schema.json"),
    ),
    (
        "store_config",
        include_str!("../schemas/store_config.v2.1.schema.json"),
    ),
    (
        "working_set",
        include_str!("../schemas/working_set.v2.1.schema.json"),
    ),
    (
        "ws_patch",
        include_str!("../schemas/ws_patch.v2.1.schema.json"),
    ),
];

/// The schema version every stored artifact carries.
pub const SCHEMA_VERSION: &str = "2.1";

/// The file name a schema is exported under.
pub fn file_name(name: &str) -> String {
    format!("{name}.v2.1.schema.json")
}

/// The embedded text of a schema, if the name is known.
pub fn text(name: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn parsed() -> &'static Vec<(&'static str, Value)> {
    static PARSED: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|(name, text)| {
                let value: Value =
                    serde_json::from_str(text).expect("embedded schemas are valid JSON (tested)");
                (*name, value)
            })
            .collect()
    })
}

fn registry() -> &'static jsonschema::Registry<'static> {
    static REGISTRY: OnceLock<jsonschema::Registry<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let resources = parsed().iter().map(|(name, value)| {
            (
                format!("{BASE_URI}{}", file_name(name)),
                jsonschema::Resource::from_contents(value.clone()),
            )
        });
        jsonschema::Registry::new()
            .extend(resources)
            .and_then(|b| b.prepare())
            .expect("embedded schemas register (tested)")
    })
}

fn validator(name: &str) -> Option<Arc<jsonschema::Validator>> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = COMPILED.get_or_init(Default::default);
    if let Some(v) = cache.lock().expect("schema cache lock").get(name) {
        return Some(v.clone());
    }
    let (_, schema) = parsed().iter().find(|(n, _)| *n == name)?;
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_registry(registry())
        .with_base_uri(BASE_URI)
        .build(schema)
        .expect("embedded schemas compile (tested)");
    let compiled = Arc::new(compiled);
    cache
        .lock()
        .expect("schema cache lock")
        .insert(name.to_string(), compiled.clone());
    Some(compiled)
}

/// Every rule `value` breaks in schema `name` (empty when it is valid).
///
/// # Panics
/// Panics if `name` is not one of [`SCHEMAS`]: callers pass constants.
pub fn violations(name: &str, value: &Value) -> Vec<Violation> {
    let validator = validator(name).unwrap_or_else(|| panic!("unknown schema {name}"));
    let mut out: Vec<Violation> = validator
        .iter_errors(value)
        .map(|e| {
            let rule = e.kind().keyword().to_string();
            let mut message = e.to_string();
            // A value of the wrong shape: say what the field holds.
            if rule == "type" {
                if let Some(what) = e
                    .absolute_keyword_location()
                    .and_then(|uri| description_at(uri.as_str()))
                {
                    message = format!("{message}; expected: {what}");
                }
            }
            Violation {
                pointer: e.instance_path().to_string(),
                rule,
                message,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.pointer, &a.rule).cmp(&(&b.pointer, &b.rule)));
    out.dedup();
    out
}

/// The description of the nearest schema node (below a schema's root) at or
/// above a keyword location (`BASE_URI` + file name + `#` + pointer): what
/// the field that broke the rule holds.
fn description_at(location: &str) -> Option<String> {
    let (file, pointer) = location.strip_prefix(BASE_URI)?.split_once('#')?;
    let (_, schema) = parsed().iter().find(|(name, _)| file_name(name) == file)?;
    let mut at = pointer.to_string();
    while let Some(cut) = at.rfind('/') {
        at.truncate(cut);
        if at.is_empty() {
            break;
        }
        if let Some(d) = schema.pointer(&at).and_then(|n| n.get("description")) {
            return d.as_str().map(|d| d.trim_end_matches('.').to_string());
        }
    }
    None
}

/// Validates `value` against schema `name`; the error names `file`.
pub fn validate(name: &str, file: &str, value: &Value) -> Result<()> {
    let violations = violations(name, value);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::Schema {
            file: file.to_string(),
            schema: name.to_string(),
            violations,
        })
    }
}

/// Limits applied to every parsed document.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Largest accepted input, in bytes.
    pub max_bytes: u64,
    /// Deepest accepted nesting of arrays and objects.
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_bytes: 8 * 1024 * 1024,
            max_depth: 32,
        }
    }
}

/// Parses JSON or YAML text (JSON when it starts with `{` or `[`) into a value,
/// enforcing `limits`. `file` names the input in errors.
pub fn parse_document(file: &str, bytes: &[u8], limits: ParseLimits) -> Result<Value> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::TooLarge {
            file: file.to_string(),
            bytes: bytes.len() as u64,
            limit: limits.max_bytes,
            setting: "max_input_bytes",
        });
    }
    check_conflict_markers(file, bytes)?;
    check_bracket_depth(file, bytes, limits.max_depth)?;
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Parse {
        file: file.to_string(),
        format: "UTF-8",
        message: e.to_string(),
    })?;
    let first = text.trim_start().chars().next();
    let value: Value = if matches!(first, Some('{') | Some('[')) {
        serde_json::from_str(text).map_err(|e| Error::Parse {
            file: file.to_string(),
            format: "JSON",
            message: e.to_string(),
        })?
    } else {
        let mut options = serde_saphyr::options::Options::default();
        let mut budget = serde_saphyr::budget::Budget::default();
        budget.max_depth = limits.max_depth + 2;
        budget.max_aliases = 1_000;
        // What aliases may copy is bounded by the document's own size: an
        // alias bomb stops before it costs much more than the file would.
        let max_bytes = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
        // Without aliases a document has fewer events than bytes; with
        // them it may not have more.
        budget.max_events = budget.max_events.min(bytes.len().max(4096));
        budget.max_nodes = budget.max_nodes.min(bytes.len().max(4096));
        budget.max_recorded_anchor_events = 100_000;
        budget.max_recorded_anchor_bytes = budget.max_recorded_anchor_bytes.min(max_bytes);
        budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.min(max_bytes);
        let spent = budget_words(&budget);
        budget.max_reader_input_bytes = Some(limits.max_bytes as usize);
        options.budget = Some(budget);
        // YAML 1.2 core scalars: `y`, `no`, `0755` and `1_000` stay text.
        options.strict_booleans = true;
        options.leading_zero_numbers_as_strings = true;
        options.underscored_numbers_as_strings = true;
        options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
        let parsed: Option<Value> =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                let raw = first_line(&e.to_string());
                // "is not valid YAML: error: line 8 ..." says error twice.
                let plain = raw.strip_prefix("error: ").unwrap_or(&raw);
                let message = match spent(&e) {
                    Some(words) => {
                        let at = plain.find("budget breached").unwrap_or(plain.len());
                        format!("{}{words}", &plain[..at])
                    }
                    None => plain.to_string(),
                };
                if matches!(
                    breach_of(&e),
                    Some(serde_saphyr::budget::BudgetBreach::Depth { .. })
                ) {
                    Error::TooDeep {
                        file: file.to_string(),
                        pointer: format!(
                            "({})",
                            raw.split(": budget")
                                .next()
                                .unwrap_or_default()
                                .trim_start_matches("error: ")
                        ),
                        limit: limits.max_depth,
                    }
                } else {
                    Error::Parse {
                        file: file.to_string(),
                        format: "YAML",
                        message,
                    }
                }
            })?;
        parsed.unwrap_or(Value::Null)
    };
    if let Some(pointer) = too_deep(&value, limits.max_depth, &mut String::new(), 0) {
        return Err(Error::TooDeep {
            file: file.to_string(),
            pointer,
            limit: limits.max_depth,
        });
    }
    Ok(value)
}

/// The budget breach behind a YAML error, if one is.
fn breach_of(e: &serde_saphyr::Error) -> Option<&serde_saphyr::budget::BudgetBreach> {
    let mut e = e;
    loop {
        match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = &**error,
            serde_saphyr::Error::Budget { breach, .. } => return Some(breach),
            _ => return None,
        }
    }
}

/// Says in words which of `budget`'s limits a YAML error breached.
fn budget_words(
    budget: &serde_saphyr::budget::Budget,
) -> impl Fn(&serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach as B;
    let b = budget.clone();
    move |e| {
        let words = match breach_of(e)? {
            B::Nodes { .. } => format!(
                "the document grows past {} values, lists and maps (counting every copy its aliases make; the limit is the file's size in bytes, at least 4,096): an alias bomb is refused",
                thousands(b.max_nodes)
            ),
            B::Aliases { .. } => format!(
                "the document uses more than {} aliases (*name), the most cairn accepts",
                thousands(b.max_aliases)
            ),
            B::AliasAnchorRatio { aliases, anchors } => format!(
                "the document uses {} aliases for {} anchors: too many copies of anchored values (an alias bomb is refused)",
                thousands(*aliases),
                thousands(*anchors)
            ),
            B::Anchors { .. } => format!(
                "the document defines more than {} anchors (&name), the most cairn accepts",
                thousands(b.max_anchors)
            ),
            B::Events { .. } => format!(
                "the document expands past {} YAML tokens (counting every copy its aliases make; the limit is the file's size in bytes, at least 4,096): an alias bomb is refused",
                thousands(b.max_events)
            ),
            B::Documents { .. } => format!(
                "the input holds more than {} YAML documents",
                thousands(b.max_documents)
            ),
            B::ScalarBytes { .. } => format!(
                "the document's text values add up to more than {}",
                human_bytes(b.max_total_scalar_bytes as u64)
            ),
            B::MergeKeys { .. } => format!(
                "the document uses more than {} merge keys (<<)",
                thousands(b.max_merge_keys)
            ),
            B::Depth { .. } => "the document nests too deep".to_string(),
            B::InputBytes { .. } => "the input is larger than the limit".to_string(),
            B::SequenceUnbalanced => "the document's lists and maps do not close".to_string(),
            _ => "the document is too complex to parse safely".to_string(),
        };
        Some(words)
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size for people: `512 bytes`, `60 KiB`, `8 MiB`, `1.5 GiB` (one
/// decimal where it is not whole).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size {
            let value = n as f64 / size as f64;
            let text = format!("{value:.1}");
            return format!("{} {unit}", text.trim_end_matches(".0"));
        }
    }
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// Rejects flow/JSON nesting beyond `limit` before any recursive parser runs.
fn check_bracket_depth(file: &str, bytes: &[u8], limit: usize) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string: Option<u8> = None;
    let mut escaped = false;
    for (offset, &b) in bytes.iter().enumerate() {
        if let Some(quote) = in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' && quote == b'"' {
                escaped = true;
            } else if b == quote {
                in_string = None;
            }
            continue;
        }
        match b {
            b'"' => in_string = Some(b'"'),
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(Error::TooDeep {
                        file: file.to_string(),
                        pointer: format!("(byte offset {offset})"),
                        limit,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn too_deep(value: &Value, limit: usize, at: &mut String, depth: usize) -> Option<String> {
    let children: Vec<(String, &Value)> = match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        _ => return None,
    };
    if depth >= limit {
        return Some(if at.is_empty() {
            "/".into()
        } else {
            at.clone()
        });
    }
    for (key, child) in children {
        let len = at.len();
        at.push('/');
        at.push_str(&key);
        if let Some(p) = too_deep(child, limit, at, depth + 1) {
            return Some(p);
        }
        at.truncate(len);
    }
    None
}

/// Parses a stored file, validates it against schema `name` and reads it
/// into its typed form. A file that passes the schema but not the type is
/// reported as an integrity problem of that file.
pub fn load<T: serde::de::DeserializeOwned>(name: &str, file: &str, bytes: &[u8]) -> Result<T> {
    let value = parse_document(
        file,
        bytes,
        ParseLimits {
            max_bytes: u64::MAX,
            max_depth: 64,
        },
    )?;
    validate(name, file, &value)?;
    serde_json::from_value(value).map_err(|e| Error::Integrity {
        subject: file.to_string(),
        message: e.to_string(),
    })
}

/// Refuses a file holding git's conflict markers (a merge left it half
/// done) with an error that says so, instead of a YAML parse error.
fn check_conflict_markers(file: &str, bytes: &[u8]) -> Result<()> {
    let marker = bytes.split(|b| *b == b'\n').position(|line| {
        line.starts_with(b"<<<<<<< ") || line == b"<<<<<<<" || line.starts_with(b">>>>>>> ")
    });
    match marker {
        Some(line) => Err(Error::Invalid {
            file: file.to_string(),
            pointer: String::new(),
            rule: "conflict_markers",
            message: format!(
                "holds git conflict markers (<<<<<<< ... >>>>>>>, first at line {}): a merge left it unresolved; `cairn sync --resolve` merges it by its schema",
                line + 1
            ),
        }),
        None => Ok(()),
    }
}

/// The strings of the array at `key` of an object (others skipped; none
/// when it is missing or not an array).
pub fn strings_at(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Renders a value as canonical YAML (key order as given, block style).
///
/// Long lines are never folded (a folded scalar is harder to diff and to
/// edit by hand); text with newlines is written as a literal block.
pub fn to_yaml(value: &Value) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX / 2;
    options.min_fold_chars = usize::MAX / 2;
    serde_saphyr::to_string_with_options(value, options)
        .expect("a JSON value always serializes to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_compiles() {
        for (name, _) in SCHEMAS {
            assert!(validator(name).is_some(), "{name}");
        }
    }

    #[test]
    fn deep_json_is_refused_before_parsing() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = parse_document("x.json", deep.as_bytes(), ParseLimits::default()).unwrap_err();
        assert_eq!(err.code(), "TOO_DEEP");
    }

    proptest::proptest! {
        #[test]
        fn yaml_round_trips_any_text(text in "\\PC{0,40}( |\n|\t|  |\n\n|#|: |- |'|\")?\\PC{0,40}") {
            let v = serde_json::json!({"content": text, "items": [text.clone(), "x"], "n": 1});
            let back = parse_document("t", to_yaml(&v).as_bytes(), ParseLimits::default()).unwrap();
            proptest::prop_assert_eq!(back, v);
        }
    }

    #[test]
    fn yaml_and_json_parse_to_the_same_value() {
        let y = parse_document("a", b"a: 1\nb: [x, y]\n", ParseLimits::default()).unwrap();
        let n = parse_document("n", b"a: no\nb: 0755\n", ParseLimits::default()).unwrap();
        assert_eq!(n, serde_json::json!({"a": "no", "b": "0755"}));
        let j =
            parse_document("b", br#"{"a": 1, "b": ["x", "y"]}"#, ParseLimits::default()).unwrap();
        assert_eq!(y, j);
    }
}
