//! Working sets changed on both sides of a merge: the patches the other side
//! applied are read back from its ledger (one WS_UPDATE_APPLIED commit each)
//! and applied again, in commit order, on top of our working set. Each replayed
//! patch takes the next `_update_seq`, so the run's seqs stay gap-free on the
//! merged line.
//!
//! A patch is rebuilt from its commit: the payload names the fields it set or
//! unset and the ids it removed or appended; the values come from the
//! working set the commit wrote (or, for an item the budget evicted at once,
//! from the event's evicted list). A patch that no longer applies (a pinned
//! cap, a context id reused) becomes a conflict, never a silent drop.

use git2::Oid;
use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::event::{parse_rfc3339, EventType};
use crate::store::Store;
use crate::working_set::{self, WorkingSet};

/// What replaying one side's patches onto a working set gave.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The working set after every patch that applied.
    pub working_set: WorkingSet,
    /// The commits whose patches were applied, with the seq each now has.
    pub applied: Vec<(Oid, u64)>,
    /// The commits whose patches no longer apply, with why.
    pub refused: Vec<(Oid, Value, String)>,
    /// Items the token budget evicted during the replay.
    pub evicted: Vec<Value>,
}

/// The commits on `theirs`' side (reachable from it, not from `base`) that
/// changed `path`, oldest first; `None` when one of them is not a plain
/// working-set patch (a hand edit, a merge, a boot), so replay cannot
/// reproduce the side and the caller merges field by field instead.
pub fn patches_of(
    store: &Store,
    base: Option<Oid>,
    theirs: Oid,
    path: &str,
) -> Result<Option<Vec<Oid>>> {
    let mut out = Vec::new();
    for id in store.history(theirs, base)? {
        let info = store.commit_info(id)?;
        let parent = info.parents.first().copied();
        let before = match parent {
            Some(p) => store.blob_id(p, path)?,
            None => None,
        };
        if store.blob_id(id, path)? == before {
            continue;
        }
        let event = store.event_of(id)?;
        if event.event_type != EventType::WsUpdateApplied || info.parents.len() != 1 {
            return Ok(None);
        }
        out.push(id);
    }
    out.reverse();
    Ok(Some(out))
}

/// Rebuilds the patch a WS_UPDATE_APPLIED commit applied to `path`,
/// against `expected_seq`.
pub fn patch_of(store: &Store, commit: Oid, path: &str, expected_seq: u64) -> Result<Value> {
    let event = store.event_of(commit)?;
    let after: Value = match store.read_file(commit, path)? {
        Some(bytes) => crate::store::parse_yaml(path, &bytes)?,
        None => Value::Null,
    };
    let payload = &event.payload;
    let names = |key: &str| crate::schema::strings_at(payload, key);
    let mut patch = Map::new();
    patch.insert("_schema_version".into(), json!("2.1"));
    patch.insert("expected_seq".into(), json!(expected_seq));
    let unset = names("unset");
    if !unset.is_empty() {
        patch.insert("unset".into(), json!(unset));
    }
    let mut set = Map::new();
    for key in names("set") {
        if let Some(v) = after.get(&key) {
            set.insert(key, v.clone());
        }
    }
    if !set.is_empty() {
        patch.insert("set".into(), Value::Object(set));
    }
    let removed = names("removed");
    if !removed.is_empty() {
        patch.insert("remove".into(), json!(removed));
    }
    let evicted: Vec<&Value> = payload
        .get("evicted")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut append: Map<String, Value> = Map::new();
    for id in names("appended") {
        let find = |list: &str| {
            after
                .get(list)
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .find(|it| it.get("id").and_then(Value::as_str) == Some(&id))
                })
                .cloned()
        };
        let (list, item) = match (find("pinned_context"), find("sliding_context")) {
            (Some(item), _) => ("pinned_context", item),
            (None, Some(item)) => ("sliding_context", item),
            (None, None) => match evicted
                .iter()
                .find(|it| it.get("id").and_then(Value::as_str) == Some(&id))
            {
                Some(item) => ("sliding_context", (*item).clone()),
                None => continue,
            },
        };
        append
            .entry(list)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("inserted as an array")
            .push(item);
    }
    if !append.is_empty() {
        patch.insert("append".into(), Value::Object(append));
    }
    Ok(Value::Object(patch))
}

/// Applies `commits`' patches, oldest first, on top of `ours`.
pub fn replay(store: &Store, ours: WorkingSet, commits: &[Oid], path: &str) -> Result<Replayed> {
    let mut current = ours;
    let mut out = Replayed {
        working_set: current.clone(),
        applied: Vec::new(),
        refused: Vec::new(),
        evicted: Vec::new(),
    };
    for &commit in commits {
        let mut patch = patch_of(store, commit, path, current.update_seq)?;
        // Both sides may have removed the same item: what is gone already
        // is no conflict. An item both sides appended (same id and content)
        // is there already too.
        let present = |id: &str| {
            current
                .pinned_context
                .iter()
                .chain(&current.sliding_context)
                .any(|it| it.id == id)
        };
        if let Some(Value::Array(ids)) = patch.get_mut("remove") {
            ids.retain(|id| id.as_str().is_some_and(present));
            if ids.is_empty() {
                patch.as_object_mut().map(|m| m.remove("remove"));
            }
        }
        if let Some(Value::Object(lists)) = patch.get_mut("append") {
            for items in lists.values_mut() {
                if let Value::Array(items) = items {
                    items.retain(|it| !it.get("id").and_then(Value::as_str).is_some_and(present));
                }
            }
        }
        let event = store.event_of(commit)?;
        let when = parse_rfc3339(&event.timestamp).unwrap_or_else(|| store.now());
        match working_set::apply_patch(&current, &patch, when, path) {
            Ok(applied) => {
                out.evicted.extend(
                    applied
                        .evicted
                        .iter()
                        .map(|i| serde_json::to_value(i).expect("items serialize")),
                );
                current = applied.working_set;
                out.applied.push((commit, current.update_seq));
            }
            Err(e) => out.refused.push((commit, patch, e.to_string())),
        }
    }
    out.working_set = current;
    Ok(out)
}
