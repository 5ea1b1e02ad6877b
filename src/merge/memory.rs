//! Merge rules of long-term memory: items and staged batches.
//!
//! An item's lifecycle only moves forward (candidate → active → superseded,
//! and anything → invalid), so when both sides moved it differently the
//! furthest status wins and the dispute is recorded; provenance and tags only
//! accumulate. A batch's items are what was proposed: they never change, so a
//! difference in them is an integrity problem, not a merge.

use serde_json::{Map, Value};

use super::values::{field, Merger, Prefer};
use super::FieldConflict;
use crate::error::{Error, Result};

/// Fields of an item with their own rule.
const ITEM_SPECIAL: [&str; 5] = ["status", "tags", "source_refs", "updated_at", "disputed"];

fn item_rank(status: &str) -> Option<u8> {
    match status {
        "candidate" => Some(0),
        "active" => Some(1),
        "superseded" => Some(2),
        "invalid" => Some(3),
        _ => None,
    }
}

fn batch_rank(status: &str) -> Option<u8> {
    match status {
        "proposed" => Some(0),
        "rejected" => Some(1),
        "committed" => Some(2),
        _ => None,
    }
}

fn object(v: &Value) -> &Map<String, Value> {
    v.as_object().expect("validated documents are objects")
}

/// Merges two versions of a memory item.
pub(super) fn merge_item(
    prefer: Prefer,
    b: &Value,
    o: &Value,
    t: &Value,
) -> (Value, Vec<FieldConflict>) {
    let (bm, om, tm) = (b.as_object(), object(o), object(t));
    let mut m = Merger::new(prefer);
    let mut out = m.object("", bm, om, tm, &ITEM_SPECIAL);
    let status = m.ranked(
        "/status",
        "status_precedence",
        item_rank,
        field(bm, "status"),
        om.get("status"),
        tm.get("status"),
    );
    for key in ["tags", "source_refs"] {
        let merged = m.set(&format!("/{key}"), field(bm, key), om.get(key), tm.get(key));
        if let Some(v) = merged {
            out.insert(key.into(), v);
        }
    }
    let updated = m.latest(
        "/updated_at",
        field(bm, "updated_at"),
        om.get("updated_at"),
        tm.get("updated_at"),
    );
    // Either side's flag stands; any conflict in this merge raises it.
    let flagged = |v: Option<&Value>| v == Some(&Value::Bool(true));
    let disputed = match super::values::settled(
        field(bm, "disputed"),
        om.get("disputed"),
        tm.get("disputed"),
    ) {
        Some(v) => flagged(v.as_ref()),
        None => flagged(om.get("disputed")) || flagged(tm.get("disputed")),
    } || !m.conflicts.is_empty();
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    if let Some(u) = updated {
        out.insert("updated_at".into(), u);
    }
    if disputed {
        out.insert("disputed".into(), Value::Bool(true));
    }
    (Value::Object(out), m.conflicts)
}

/// Merges two versions of a staged batch. Its items are immutable.
pub(super) fn merge_batch(
    path: &str,
    prefer: Prefer,
    b: &Value,
    o: &Value,
    t: &Value,
) -> Result<(Value, Vec<FieldConflict>)> {
    let (bm, om, tm) = (b.as_object(), object(o), object(t));
    let base_items = bm.and_then(|m| m.get("items"));
    let changed = match base_items {
        Some(items) => [("ours", o), ("theirs", t)]
            .into_iter()
            .find(|(_, side)| side.get("items") != Some(items))
            .map(|(name, _)| format!("the {name} side changed them")),
        None => (o.get("items") != t.get("items"))
            .then(|| "both sides added the batch with different items".to_string()),
    };
    if let Some(how) = changed {
        return Err(Error::Integrity {
            subject: path.to_string(),
            message: format!(
                "a batch's items are immutable once proposed, but {how}; restore them on that side (history has them), or propose a new batch"
            ),
        });
    }
    let mut m = Merger::new(prefer);
    let mut out = m.object("", bm, om, tm, &["status"]);
    let status = m.ranked(
        "/status",
        "status_precedence",
        batch_rank,
        bm.and_then(|m| m.get("status")),
        om.get("status"),
        tm.get("status"),
    );
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    Ok((Value::Object(out), m.conflicts))
}
