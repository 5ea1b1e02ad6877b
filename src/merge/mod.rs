//! Three-way merge of canonical cairn files, value by value and kind by kind.
//!
//! Sync (`cairn sync`, and the merge drivers plain `git pull` uses) hands
//! every canonical file that changed on both sides to [`merge_file`]: the
//! base, ours and theirs as bytes (no git access here). The result is the
//! merged file (or its deletion) and the [`FieldConflict`]s found on the way.
//! A conflict never stops the merge: the merged file keeps one value by a
//! fixed rule and the conflict record keeps both, so nothing either side
//! acknowledged is lost. Only an episode (or interaction) changed after it
//! was written stops it, with [`Error::Integrity`].
//!
//! Invariants:
//! - **Symmetric**: `merge_file(p, b, o, t)` and `merge_file(p, b, t, o)` give
//!   the same bytes (their conflict records differ only in which side is
//!   called ours). No rule looks at which side is "ours".
//! - **Valid**: every merged file validates against its kind's schema; a
//!   field-wise merge that would not is replaced by the whole later document,
//!   recorded as one `merge_invalid` conflict.
//! - **Canonical**: a file the merge had to build is written exactly as cairn
//!   writes that kind (the typed struct's `to_yaml`, or the schema's key
//!   order). A trivial case returns the chosen side's bytes unchanged.
//! - **Pure**: bytes in, bytes out; no clock, no git, no environment.
//!
//! # The rules
//!
//! Every kind, first: the trivial cases, compared as bytes and then as parsed
//! values. Ours equal to theirs → ours; ours equal to base → theirs; theirs
//! equal to base → ours (a deleted file is a side equal to "absent"). Input
//! that does not parse or validate is refused naming the file (and saying so
//! when it holds git conflict markers), except a broken base, which is read
//! as absent: both sides then merge as an add/add.
//!
//! Every kind but episodes and interactions, then:
//! - **delete vs modify**: one side deleted the file, the other changed it →
//!   keep the changed file, conflict `delete_vs_modify` (pointer "").
//! - **add/add**: both added the path with different content → merged as if
//!   the base were the empty object, so fields both set differently conflict.
//! - **generic field-wise** ([`merge_values`]): objects merge key by key,
//!   recursively; a field one side changed takes that change; a field both
//!   changed differently is a conflict (`both_changed`, or `delete_vs_modify`
//!   when one side removed it or set it to null, in which case the value is
//!   kept). The value kept is the later document's (by the kind's clock
//!   below), else the greater by canonical JSON (sorted keys). Arrays that are
//!   not sets are one value. Keys: base order, then added keys sorted.
//!
//! | kind (schema) | clock for the tie-break | rules beyond field-wise |
//! |---|---|---|
//! | `memory_item` | later `updated_at` | `status` by precedence invalid > superseded > active > candidate (both changed differently: keep the higher, conflict `status_precedence`); `tags` and `source_refs` are sets (base order, then additions sorted; a value one side removed and the other kept is removed); `supersedes`/`superseded_by` are scalars (a link beats null); `updated_at` = the later; any conflict sets `disputed: true` |
//! | `mcr_batch` | later `committed_at` | `status` by precedence committed > rejected > proposed (`status_precedence`); `items` are immutable: a side that changed them, or two adds with different items → `Error::Integrity` |
//! | `episode`, `interaction` | — | immutable: the same content added on both sides is fine; different content, or any change to an existing one → `Error::Integrity`; deleted on one side → kept, conflict `immutable_deleted` (deleted on both → deleted) |
//! | `project_registry` | — | projects by id (sorted by id); `aliases` is a set; `description` and the rest field-wise; a name claimed by two projects (as alias, or alias vs id, case-insensitively) → conflict `alias_claimed_twice`: an id keeps its name, else the project that had the alias in base, else the smaller id; the other projects lose the alias |
//! | `project_state` | — | entries are identified by their content (category, key, value, source, updated_at); `status` by precedence invalid > superseded > active (`status_precedence`); `superseded_at` the later; new entries: base order, then additions by `updated_at`. A key with two active entries after the merge keeps the later one active and marks the other `superseded` (both stay in the file); different values → conflict `state_key_set_twice` |
//! | `working_set` | higher `_update_seq`, then later `updated_at` | `pinned_context`/`sliding_context` merge by item id (an item one side removed and the other left alone stays removed; added items follow base's, by timestamp then id); `_update_seq` = max(ours, theirs) + 1 when both changed it; `updated_at` = the later; an id in both lists after the merge stays pinned only (conflict `context_id_twice`). The sliding budget is not enforced here: the next patch evicts, and records it |
//! | `store_config` | — | generic field-wise; written in the schema's key order |
//!
//! Conflicts are listed sorted by pointer; pointers address the merged file.

mod immutable;
mod memory;
mod project;
#[cfg(test)]
mod tests;
mod values;
mod working_set;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::{layout, schema};
use values::{Merger, Prefer};

/// One field both sides changed differently, or another true conflict.
///
/// The merged file holds `kept`; `ours` and `theirs` hold what each side
/// had (None: absent), so the record and the file together lose nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConflict {
    /// JSON pointer in the merged file ("" is the whole document).
    pub pointer: String,
    /// The rule that decided: `both_changed`, `delete_vs_modify`,
    /// `status_precedence`, `alias_claimed_twice`, `state_key_set_twice`,
    /// `context_id_twice`, `immutable_deleted` or `merge_invalid`.
    pub rule: &'static str,
    /// The value in the common ancestor.
    pub base: Option<Value>,
    /// Our value.
    pub ours: Option<Value>,
    /// Their value.
    pub theirs: Option<Value>,
    /// What the merged file holds.
    pub kept: Option<Value>,
}

/// The outcome of merging one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileMerge {
    /// The merged file; None when the merge deletes it.
    pub merged: Option<Vec<u8>>,
    /// What the merge had to decide, sorted by pointer.
    pub conflicts: Vec<FieldConflict>,
}

impl FileMerge {
    /// Whether the merge found nothing to record.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// The kinds of canonical files, one per schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Config,
    Registry,
    State,
    WorkingSet,
    Batch,
    Episode,
    Interaction,
    Memory,
}

impl Kind {
    fn of(path: &str) -> Option<Kind> {
        Some(match layout::schema_for(path)? {
            "store_config" => Kind::Config,
            "project_registry" => Kind::Registry,
            "project_state" => Kind::State,
            "working_set" => Kind::WorkingSet,
            "mcr_batch" => Kind::Batch,
            "episode" => Kind::Episode,
            "interaction" => Kind::Interaction,
            "memory_item" => Kind::Memory,
            _ => return None,
        })
    }

    fn schema(self) -> &'static str {
        match self {
            Kind::Config => "store_config",
            Kind::Registry => "project_registry",
            Kind::State => "project_state",
            Kind::WorkingSet => "working_set",
            Kind::Batch => "mcr_batch",
            Kind::Episode => "episode",
            Kind::Interaction => "interaction",
            Kind::Memory => "memory_item",
        }
    }

    fn immutable(self) -> bool {
        matches!(self, Kind::Episode | Kind::Interaction)
    }

    /// Which whole document is the later one, for tie-breaks.
    fn prefer(self, o: &Value, t: &Value) -> Prefer {
        match self {
            Kind::Memory => Prefer::by_time(o, t, "updated_at"),
            Kind::Batch => Prefer::by_time(o, t, "committed_at"),
            Kind::WorkingSet => working_set::prefer(o, t),
            _ => Prefer::Greater,
        }
    }
}

/// Whether [`merge_file`] handles this path (a canonical cairn file); other
/// files are the caller's (git's text merge; the mirror is regenerated).
pub fn handles(path: &str) -> bool {
    Kind::of(path).is_some()
}

/// One side of the merge, parsed and validated.
struct Side<'a> {
    bytes: &'a [u8],
    value: Value,
}

impl<'a> Side<'a> {
    fn read(kind: Kind, path: &str, side: &str, bytes: &'a [u8]) -> Result<Side<'a>> {
        if let Some((line, text)) = conflict_marker(bytes) {
            return Err(Error::Invalid {
                file: path.to_string(),
                pointer: format!("(line {line})"),
                rule: "conflict_markers",
                message: format!(
                    "the {side} version holds git conflict markers (`{text}`): an unresolved merge was committed; resolve the markers, commit, and merge again"
                ),
            });
        }
        let limits = schema::ParseLimits {
            max_bytes: u64::MAX,
            max_depth: 64,
        };
        let value = schema::parse_document(path, bytes, limits)?;
        schema::validate(kind.schema(), path, &value)?;
        Ok(Side { bytes, value })
    }
}

fn bytes<'a>(side: &'a Option<Side<'_>>) -> Option<&'a [u8]> {
    side.as_ref().map(|s| s.bytes)
}

fn values<'a>(side: &'a Option<Side<'_>>) -> Option<&'a Value> {
    side.as_ref().map(|s| &s.value)
}

/// The first line that is a git conflict marker (1-based), with its text.
fn conflict_marker(bytes: &[u8]) -> Option<(usize, String)> {
    let text = String::from_utf8_lossy(bytes);
    text.lines().enumerate().find_map(|(i, line)| {
        let line = line.trim_end_matches('\r');
        let marker = ["<<<<<<<", ">>>>>>>", "|||||||"]
            .iter()
            .any(|m| line.starts_with(m))
            || line == "=======";
        marker.then(|| (i + 1, line.chars().take(60).collect()))
    })
}

/// Three-way merge of one canonical file at `path`: its kind comes from
/// [`layout::schema_for`]. None means the file is absent on that side.
///
/// Errors: `path` is not canonical ([`handles`] is false), ours or theirs
/// does not parse or validate (conflict markers are named as such), or an
/// episode or interaction was changed ([`Error::Integrity`]), or a batch's
/// items were.
pub fn merge_file(
    path: &str,
    base: Option<&[u8]>,
    ours: Option<&[u8]>,
    theirs: Option<&[u8]>,
) -> Result<FileMerge> {
    let kind = Kind::of(path).ok_or_else(|| Error::Invalid {
        file: path.to_string(),
        pointer: String::new(),
        rule: "canonical_path",
        message: "not a canonical cairn file; it is merged as text".into(),
    })?;
    let o = ours
        .map(|b| Side::read(kind, path, "ours", b))
        .transpose()?;
    let t = theirs
        .map(|b| Side::read(kind, path, "theirs", b))
        .transpose()?;
    // A base that does not read (say, conflict markers both sides have since
    // fixed) is no common ground: merge as an add/add.
    let b = base.and_then(|b| Side::read(kind, path, "base", b).ok());

    let keep = |s: &Option<Side<'_>>| FileMerge {
        merged: s.as_ref().map(|s| s.bytes.to_vec()),
        conflicts: Vec::new(),
    };
    if bytes(&o) == bytes(&t) {
        return Ok(keep(&o));
    }
    for by_value in [false, true] {
        let same = |x: &Option<Side<'_>>, y: &Option<Side<'_>>| {
            if by_value {
                values(x) == values(y)
            } else {
                bytes(x) == bytes(y)
            }
        };
        if by_value && same(&o, &t) {
            break; // equal values in different bytes: written canonically below
        }
        for (unchanged, changed, name) in [(&o, &t, "theirs"), (&t, &o, "ours")] {
            if !same(unchanged, &b) {
                continue;
            }
            if kind.immutable() {
                match (changed, &b) {
                    (None, Some(_)) => return Ok(immutable::kept_deleted(&b, &o, &t)),
                    (Some(c), Some(was)) if c.value != was.value => {
                        return Err(immutable::changed(kind, path, Some(name)));
                    }
                    _ => {}
                }
            }
            return Ok(keep(changed));
        }
    }
    match (b, o, t) {
        (Some(b), None, Some(changed)) | (Some(b), Some(changed), None) => {
            delete_vs_modify(kind, path, b, changed, ours.is_none())
        }
        (b, Some(o), Some(t)) => {
            if kind.immutable() {
                // Only an add/add of the same content merges.
                if b.is_none() && o.value == t.value {
                    return Ok(FileMerge {
                        merged: Some(serialize(kind, path, &o.value)?),
                        conflicts: Vec::new(),
                    });
                }
                return Err(immutable::changed(kind, path, None));
            }
            let base = b.map(|b| b.value).unwrap_or(Value::Object(Map::new()));
            merge_both(kind, path, &base, &o.value, &t.value)
        }
        _ => unreachable!("absent on both sides, or on one side and in base, is settled above"),
    }
}

/// One side deleted the file, the other changed it: the change is kept.
fn delete_vs_modify(
    kind: Kind,
    path: &str,
    base: Side<'_>,
    changed: Side<'_>,
    ours_deleted: bool,
) -> Result<FileMerge> {
    if kind.immutable() {
        let side = if ours_deleted { "theirs" } else { "ours" };
        return Err(immutable::changed(kind, path, Some(side)));
    }
    let (merged, kept) = if kind == Kind::Memory {
        let mut v = changed.value.clone();
        v["disputed"] = Value::Bool(true);
        (serialize(kind, path, &v)?, v)
    } else {
        (changed.bytes.to_vec(), changed.value.clone())
    };
    let (o, t) = if ours_deleted {
        (None, Some(changed.value))
    } else {
        (Some(changed.value), None)
    };
    Ok(FileMerge {
        merged: Some(merged),
        conflicts: vec![FieldConflict {
            pointer: String::new(),
            rule: "delete_vs_modify",
            base: Some(base.value),
            ours: o,
            theirs: t,
            kept: Some(kept),
        }],
    })
}

/// Both sides changed the file (or both added it): the kind's rules.
fn merge_both(kind: Kind, path: &str, b: &Value, o: &Value, t: &Value) -> Result<FileMerge> {
    let prefer = kind.prefer(o, t);
    let (merged, conflicts) = match kind {
        Kind::Memory => memory::merge_item(prefer, b, o, t),
        Kind::Batch => memory::merge_batch(path, prefer, b, o, t)?,
        Kind::Registry => project::merge_registry(prefer, b, o, t),
        Kind::State => project::merge_state(prefer, b, o, t),
        Kind::WorkingSet => working_set::merge(prefer, b, o, t),
        Kind::Config => {
            let mut m = Merger::new(prefer);
            let v = m
                .value("", Some(b), Some(o), Some(t))
                .unwrap_or(Value::Null);
            (v, m.conflicts)
        }
        Kind::Episode | Kind::Interaction => unreachable!("immutable kinds never merge"),
    };
    if let Some(done) = finish(kind, path, &merged, conflicts)? {
        return Ok(done);
    }
    // The field-wise result broke the schema (fields that only make sense
    // together): keep the later whole document instead, and say so.
    let mut kept = prefer
        .pick(Some(o), Some(t))
        .cloned()
        .expect("both sides are present");
    if kind == Kind::Memory {
        kept["disputed"] = Value::Bool(true);
    }
    let conflict = FieldConflict {
        pointer: String::new(),
        rule: "merge_invalid",
        base: Some(b.clone()),
        ours: Some(o.clone()),
        theirs: Some(t.clone()),
        kept: Some(kept.clone()),
    };
    finish(kind, path, &kept, vec![conflict])?.ok_or_else(|| Error::Integrity {
        subject: path.to_string(),
        message: "neither the merge nor either side's document validates".into(),
    })
}

/// The merged file if `merged` validates and is written canonically.
fn finish(
    kind: Kind,
    path: &str,
    merged: &Value,
    mut conflicts: Vec<FieldConflict>,
) -> Result<Option<FileMerge>> {
    if !schema::violations(kind.schema(), merged).is_empty() {
        return Ok(None);
    }
    let Ok(bytes) = serialize(kind, path, merged) else {
        return Ok(None);
    };
    // What is written must read back as valid: the guarantee, checked.
    let reread = schema::parse_document(
        path,
        &bytes,
        schema::ParseLimits {
            max_bytes: u64::MAX,
            max_depth: 64,
        },
    )?;
    if !schema::violations(kind.schema(), &reread).is_empty() {
        return Ok(None);
    }
    conflicts.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    Ok(Some(FileMerge {
        merged: Some(bytes),
        conflicts,
    }))
}

/// A value as cairn writes its kind.
fn serialize(kind: Kind, path: &str, value: &Value) -> Result<Vec<u8>> {
    fn typed<T: serde::de::DeserializeOwned>(path: &str, value: &Value) -> Result<T> {
        serde_json::from_value(value.clone()).map_err(|e| Error::Integrity {
            subject: path.to_string(),
            message: format!("the merged document does not read back: {e}"),
        })
    }
    let text = match kind {
        Kind::Memory => typed::<crate::memory::MemoryItem>(path, value)?.to_yaml(),
        Kind::Batch => typed::<crate::memory::Batch>(path, value)?.to_yaml(),
        Kind::WorkingSet => typed::<crate::working_set::WorkingSet>(path, value)?.to_yaml(),
        Kind::Registry => typed::<crate::project::Registry>(path, value)?.to_yaml(),
        Kind::State => {
            crate::project::state_yaml(&typed::<crate::project::ProjectState>(path, value)?)
        }
        Kind::Episode => typed::<crate::episode::Episode>(path, value)?.to_yaml(),
        Kind::Config | Kind::Interaction => schema::to_yaml(&in_schema_order(kind.schema(), value)),
    };
    Ok(text.into_bytes())
}

/// A value with its object keys in the order the schema lists its
/// properties (keys the schema does not list keep their order, after).
fn in_schema_order(name: &str, value: &Value) -> Value {
    let root: Value = serde_json::from_str(schema::text(name).expect("kinds name known schemas"))
        .expect("embedded schemas are valid JSON (tested)");
    reorder(&root, &root, value)
}

fn reorder(root: &Value, schema: &Value, value: &Value) -> Value {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with("#/") => root.pointer(&r[1..]).unwrap_or(schema),
        _ => schema,
    };
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    if let Some(v) = map.get(k) {
                        out.insert(k.clone(), reorder(root, sub, v));
                    }
                }
            }
            let extra = schema.get("additionalProperties").filter(|s| s.is_object());
            for (k, v) in map {
                if !out.contains_key(k) {
                    let v = match extra {
                        Some(sub) => reorder(root, sub, v),
                        None => v.clone(),
                    };
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let sub = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(items.iter().map(|v| reorder(root, sub, v)).collect())
        }
        other => other.clone(),
    }
}

/// The generic three-way JSON merge every kind builds on (see the module
/// docs): objects merge key by key, a field one side changed takes the
/// change, a field both changed differently keeps the value of the document
/// with the later top-level `updated_at` (else the greater by canonical
/// JSON) and is returned as a conflict. Symmetric in `ours` and `theirs`.
pub fn merge_values(base: &Value, ours: &Value, theirs: &Value) -> (Value, Vec<FieldConflict>) {
    let mut m = Merger::new(Prefer::by_time(ours, theirs, "updated_at"));
    let merged = m
        .value("", Some(base), Some(ours), Some(theirs))
        .unwrap_or(Value::Null);
    let mut conflicts = m.conflicts;
    conflicts.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    (merged, conflicts)
}
