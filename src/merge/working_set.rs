//! The fallback merge of a working set changed on both sides.
//!
//! Sync prefers replaying one side's patches onto the other (the seq then
//! tells the story); this is what it falls back to when it cannot. Scalars
//! merge field-wise with the document of the higher `_update_seq` (then the
//! later `updated_at`) winning a clash; context merges by item id, so an item
//! either side appended survives and an item one side removed stays removed
//! unless the other changed it. The merged seq is past both sides', so the
//! next patch of either side fails its optimistic lock and re-reads.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::values::{Merger, Order, Prefer};
use super::FieldConflict;

const LISTS: [&str; 2] = ["pinned_context", "sliding_context"];

/// The later document: the higher seq, then the later `updated_at`.
pub(super) fn prefer(o: &Value, t: &Value) -> Prefer {
    let seq = |v: &Value| v.get("_update_seq").and_then(Value::as_u64);
    match seq(o).cmp(&seq(t)) {
        Ordering::Equal => Prefer::by_time(o, t, "updated_at"),
        ord => Prefer::from_ordering(ord),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Drops the conflicts recorded inside sliding item `i`, which the merge
/// removed (the `context_id_twice` record holds it), and renumbers the
/// pointers of the items after it.
fn forget_item(conflicts: &mut Vec<FieldConflict>, i: usize) {
    let prefix = "/sliding_context/";
    conflicts.retain_mut(|c| {
        let Some(rest) = c.pointer.strip_prefix(prefix) else {
            return true;
        };
        let (index, tail) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
        match index.parse::<usize>() {
            Ok(j) if j == i => false,
            Ok(j) if j > i => {
                let sep = if tail.is_empty() { "" } else { "/" };
                c.pointer = format!("{prefix}{}{sep}{tail}", j - 1);
                true
            }
            _ => true,
        }
    });
}

/// Merges two versions of a working set.
pub(super) fn merge(
    prefer: Prefer,
    b: &Value,
    o: &Value,
    t: &Value,
) -> (Value, Vec<FieldConflict>) {
    let empty = Map::new();
    let bm = b.as_object();
    let (om, tm) = (
        o.as_object().unwrap_or(&empty),
        t.as_object().unwrap_or(&empty),
    );
    let get = |k: &str| (bm.and_then(|m| m.get(k)), om.get(k), tm.get(k));
    let mut m = Merger::new(prefer);
    let mut out = m.object(
        "",
        bm,
        om,
        tm,
        &["_update_seq", "updated_at", LISTS[0], LISTS[1]],
    );
    let (bs, os, ts) = get("_update_seq");
    // Both moved the seq (even to the same number): the merge is a state
    // neither side has seen, so it moves past both.
    let both_moved = o != t && bs.is_some() && os != bs && ts != bs;
    let past_both = || {
        let max = os.and_then(Value::as_u64).max(ts.and_then(Value::as_u64));
        Some(Value::from(max.unwrap_or(0) + 1))
    };
    let seq = match super::values::settled(bs, os, ts) {
        Some(settled) if !both_moved => settled,
        _ => past_both(),
    };
    let (bu, ou, tu) = get("updated_at");
    let updated = m.latest("/updated_at", bu, ou, tu);
    let sort_key = |v: &Value| format!("{}\u{0}{}", str_of(v, "timestamp"), str_of(v, "id"));
    let mut lists = Vec::new();
    for list in LISTS {
        let (bl, ol, tl) = get(list);
        let pointer = format!("/{list}");
        let merged = match super::values::settled(bl, ol, tl) {
            Some(v) => v.and_then(|v| v.as_array().cloned()).unwrap_or_default(),
            None => {
                let arr =
                    |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
                m.keyed(
                    &pointer,
                    &arr(bl),
                    &arr(ol),
                    &arr(tl),
                    &|item| str_of(item, "id").to_string(),
                    Order::BaseThenAdded(&sort_key),
                    &mut |m, at, b, o, t| m.value(at, b, o, t),
                )
            }
        };
        lists.push(merged);
    }
    let [pinned, mut sliding]: [Vec<Value>; 2] = lists.try_into().expect("two lists");
    // An id lives in one list: one side moved it while the other changed it.
    let mut i = 0;
    while i < sliding.len() {
        let id = str_of(&sliding[i], "id").to_string();
        let Some(p) = pinned.iter().position(|x| str_of(x, "id") == id) else {
            i += 1;
            continue;
        };
        let find = |doc: Option<&Value>| {
            LISTS.iter().find_map(|l| {
                doc?.get(l)?
                    .as_array()?
                    .iter()
                    .find(|x| str_of(x, "id") == id)
                    .cloned()
            })
        };
        m.record(
            &format!("/pinned_context/{p}"),
            "context_id_twice",
            find(Some(b)).as_ref(),
            find(Some(o)).as_ref(),
            find(Some(t)).as_ref(),
            Some(&pinned[p]),
        );
        sliding.remove(i);
        forget_item(&mut m.conflicts, i);
    }
    if let Some(s) = seq {
        out.insert("_update_seq".into(), s);
    }
    if let Some(u) = updated {
        out.insert("updated_at".into(), u);
    }
    out.insert(LISTS[0].into(), Value::Array(pinned));
    out.insert(LISTS[1].into(), Value::Array(sliding));
    (Value::Object(out), m.conflicts)
}
