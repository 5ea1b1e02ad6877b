//! Properties of the three-way merge (`cairn::merge`), on random memory
//! items, working sets and project registries, each side a random series of
//! edits of a random base:
//! - the trivial cases: merge(b, x, x) = x, merge(b, b, t) = t,
//!   merge(b, o, b) = o, also when the unchanged side is b reformatted;
//! - symmetry: swapping ours and theirs gives the same bytes;
//! - the merged file validates against its schema;
//! - nothing acknowledged is lost: every value a side changed or added is in
//!   the merged file or in a conflict record.

use cairn::layout;
use cairn::memory::MemoryItem;
use cairn::merge::{merge_file, FileMerge};
use cairn::schema;
use cairn::working_set::WorkingSet;
use proptest::prelude::*;
use serde_json::{json, Value};

const MEM: &str = "mem_01JHZK4M0N1P2Q3R4S5T6V7W8Y";
const LINKS: [&str; 2] = [
    "mem_01JHZK4M0N1P2Q3R4S5T6V7W8Z",
    "mem_01JHZK4M0N1P2Q3R4S5T6V7W90",
];
const RUN: &str = "run_01JHZK3M4N5P6Q7R8S9T0V1W2X";
const WORDS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];

fn ts(day: u64) -> String {
    format!("2026-01-{:02}T00:00:00.000Z", day.clamp(1, 28))
}

fn parse(path: &str, bytes: &[u8]) -> Value {
    schema::parse_document(path, bytes, Default::default()).expect("merged files parse")
}

/// Every scalar in a value.
fn leaves(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
        other => out.push(other.clone()),
    }
}

/// Fields whose merge rule computes a new value (max, +1) or that the merge
/// itself sets: their side values need not survive.
const COMPUTED: [&str; 4] = ["updated_at", "_update_seq", "superseded_at", "disputed"];

/// The scalars `side` changed or added relative to `base`. List items are
/// matched by `id` when they have one, else by equality.
fn changes(base: Option<&Value>, side: &Value, out: &mut Vec<Value>) {
    if Some(side) == base {
        return;
    }
    match side {
        Value::Object(m) => {
            for (k, v) in m {
                if !COMPUTED.contains(&k.as_str()) {
                    changes(base.and_then(|b| b.get(k)), v, out);
                }
            }
        }
        Value::Array(items) => {
            let empty = Vec::new();
            let b = base.and_then(Value::as_array).unwrap_or(&empty);
            for item in items {
                if b.contains(item) {
                    continue;
                }
                let same_id = item
                    .get("id")
                    .and_then(|id| b.iter().find(|x| x.get("id") == Some(id)));
                changes(same_id, item, out);
            }
        }
        other => out.push(other.clone()),
    }
}

/// Runs every property on one (base, ours, theirs) triple.
fn check(path: &str, b: Option<&[u8]>, o: &[u8], t: &[u8]) -> Result<FileMerge, TestCaseError> {
    // Trivial cases.
    let same = merge_file(path, b, Some(o), Some(o)).unwrap();
    prop_assert_eq!(same.merged.as_deref(), Some(o));
    if let Some(b) = b {
        let m = merge_file(path, Some(b), Some(b), Some(t)).unwrap();
        prop_assert_eq!(m.merged.as_deref(), Some(t));
        let m = merge_file(path, Some(b), Some(o), Some(b)).unwrap();
        prop_assert_eq!(m.merged.as_deref(), Some(o));
        if t != b {
            let reformatted = serde_json::to_vec(&parse(path, b)).unwrap();
            let m = merge_file(path, Some(b), Some(&reformatted), Some(t)).unwrap();
            prop_assert_eq!(m.merged.as_deref(), Some(t));
        }
    }
    // Symmetry.
    let m = merge_file(path, b, Some(o), Some(t)).unwrap();
    let swapped = merge_file(path, b, Some(t), Some(o)).unwrap();
    prop_assert_eq!(&m.merged, &swapped.merged, "merge depends on the side");
    prop_assert_eq!(m.conflicts.len(), swapped.conflicts.len());
    // Valid.
    let merged = parse(path, m.merged.as_deref().expect("both sides kept the file"));
    let name = layout::schema_for(path).unwrap();
    let violations = schema::violations(name, &merged);
    prop_assert!(violations.is_empty(), "{:?}", violations);
    // Nothing lost.
    let mut kept = Vec::new();
    leaves(&merged, &mut kept);
    for c in &m.conflicts {
        for v in [&c.base, &c.ours, &c.theirs, &c.kept].into_iter().flatten() {
            leaves(v, &mut kept);
        }
    }
    let base = b.map(|b| parse(path, b));
    for side in [o, t] {
        let mut changed = Vec::new();
        changes(base.as_ref(), &parse(path, side), &mut changed);
        for v in changed {
            prop_assert!(kept.contains(&v), "{} lost from {}", v, path);
        }
    }
    Ok(m)
}

// ---------------------------------------------------------------- memory items

#[derive(Debug, Clone)]
enum ItemEdit {
    Content(usize),
    Confidence(usize),
    Status(usize),
    Kind(usize),
    Tag(usize),
    SourceRef(usize),
    Rationale(Option<usize>),
    Supersedes(Option<usize>),
    Expires(Option<u64>),
}

fn item_edit() -> impl Strategy<Value = ItemEdit> {
    prop_oneof![
        (0..WORDS.len()).prop_map(ItemEdit::Content),
        (0..4usize).prop_map(ItemEdit::Confidence),
        (0..4usize).prop_map(ItemEdit::Status),
        (0..3usize).prop_map(ItemEdit::Kind),
        (0..5usize).prop_map(ItemEdit::Tag),
        (0..4usize).prop_map(ItemEdit::SourceRef),
        proptest::option::of(0..WORDS.len()).prop_map(ItemEdit::Rationale),
        proptest::option::of(0..2usize).prop_map(ItemEdit::Supersedes),
        proptest::option::of(1..28u64).prop_map(ItemEdit::Expires),
    ]
}

const STATUSES: [&str; 4] = ["candidate", "active", "superseded", "invalid"];
const REFS: [&str; 4] = ["run:r1", "batch:b1", "commit:c1", "interaction:i1"];

fn toggle(list: &mut Value, v: &str) {
    let a = list.as_array_mut().unwrap();
    match a.iter().position(|x| x == v) {
        Some(i) => {
            a.remove(i);
        }
        None => a.push(json!(v)),
    }
}

fn edit_item(base: &Value, edits: &[ItemEdit], day: u64) -> Value {
    let mut v = base.clone();
    for e in edits {
        match e {
            ItemEdit::Content(i) => v["content"] = json!(WORDS[*i]),
            ItemEdit::Confidence(i) => v["confidence"] = json!([0.25, 0.5, 0.75, 1.0][*i]),
            ItemEdit::Status(i) => v["status"] = json!(STATUSES[*i]),
            ItemEdit::Kind(i) => v["type"] = json!(["fact", "decision", "preference"][*i]),
            ItemEdit::Tag(i) => toggle(&mut v["tags"], ["a", "b", "c", "d", "e"][*i]),
            ItemEdit::SourceRef(i) => toggle(&mut v["source_refs"], REFS[*i]),
            ItemEdit::Rationale(r) => v["rationale"] = json!(r.map(|i| WORDS[i])),
            ItemEdit::Supersedes(s) => v["supersedes"] = json!(s.map(|i| LINKS[i])),
            ItemEdit::Expires(d) => v["expires_at"] = json!(d.map(ts)),
        }
    }
    if !edits.is_empty() {
        v["updated_at"] = json!(ts(day));
    }
    // `rationale: null` is not in the schema: absent instead.
    if v["rationale"].is_null() {
        v.as_object_mut().unwrap().remove("rationale");
    }
    v
}

fn item_bytes(v: &Value) -> Vec<u8> {
    let item: MemoryItem = serde_json::from_value(v.clone()).expect("generated items are typed");
    item.to_yaml().into_bytes()
}

fn base_item() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(item_edit(), 0..6), 1..4u64).prop_map(|(edits, day)| {
        let seed = json!({
            "_schema_version": "2.1", "id": MEM, "type": "fact", "scope": "project",
            "scope_id": "cairn", "project": "cairn", "content": "seed", "confidence": 0.5,
            "status": "candidate", "source_refs": ["run:r1"], "tags": [],
            "created_at": ts(1), "updated_at": ts(day)
        });
        edit_item(&seed, &edits, day)
    })
}

// ---------------------------------------------------------------- working sets

#[derive(Debug, Clone)]
enum WsEdit {
    Status(usize),
    Stage(Option<usize>),
    Next(usize),
    Append(usize, usize),
    Remove(usize),
    Rewrite(usize, usize),
    Pin(usize),
}

fn ws_edit() -> impl Strategy<Value = WsEdit> {
    prop_oneof![
        (0..5usize).prop_map(WsEdit::Status),
        proptest::option::of(0..WORDS.len()).prop_map(WsEdit::Stage),
        (0..WORDS.len()).prop_map(WsEdit::Next),
        (0..6usize, 0..WORDS.len()).prop_map(|(i, w)| WsEdit::Append(i, w)),
        (0..8usize).prop_map(WsEdit::Remove),
        (0..8usize, 0..WORDS.len()).prop_map(|(i, w)| WsEdit::Rewrite(i, w)),
        (0..8usize).prop_map(WsEdit::Pin),
    ]
}

fn ids(v: &Value) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for list in ["pinned_context", "sliding_context"] {
        for x in v[list].as_array().unwrap() {
            out.push((x["id"].as_str().unwrap().to_string(), list));
        }
    }
    out
}

fn edit_ws(base: &Value, edits: &[WsEdit], day: u64) -> Value {
    let mut v = base.clone();
    for e in edits {
        let present = ids(&v);
        let nth = |i: usize| (!present.is_empty()).then(|| present[i % present.len()].clone());
        match e {
            WsEdit::Status(i) => {
                v["status"] = json!(["IDLE", "BUSY", "BLOCKED", "DONE", "FAILED"][*i])
            }
            WsEdit::Stage(s) => match s {
                Some(i) => v["current_stage"] = json!(WORDS[*i]),
                None => {
                    v.as_object_mut().unwrap().remove("current_stage");
                }
            },
            WsEdit::Next(i) => v["next_action"] = json!(WORDS[*i]),
            WsEdit::Append(i, w) => {
                let id = format!("c{i}");
                if !present.iter().any(|(x, _)| *x == id) {
                    let item = json!({"id": id, "content": WORDS[*w], "timestamp": ts(day), "priority": *i as u64});
                    v["sliding_context"].as_array_mut().unwrap().push(item);
                }
            }
            WsEdit::Remove(i) | WsEdit::Pin(i) | WsEdit::Rewrite(i, _) => {
                let Some((id, list)) = nth(*i) else { continue };
                let items = v[list].as_array_mut().unwrap();
                let at = items.iter().position(|x| x["id"] == id).unwrap();
                match e {
                    WsEdit::Remove(_) => {
                        items.remove(at);
                    }
                    WsEdit::Rewrite(_, w) => items[at]["content"] = json!(WORDS[*w]),
                    _ if list == "sliding_context" => {
                        let item = items.remove(at);
                        v["pinned_context"].as_array_mut().unwrap().push(item);
                    }
                    _ => {}
                }
            }
        }
    }
    if !edits.is_empty() {
        let seq = v["_update_seq"].as_u64().unwrap() + edits.len() as u64;
        v["_update_seq"] = json!(seq);
        v["updated_at"] = json!(ts(day));
    }
    v
}

fn ws_bytes(v: &Value) -> Vec<u8> {
    let ws: WorkingSet =
        serde_json::from_value(v.clone()).expect("generated working sets are typed");
    ws.to_yaml().into_bytes()
}

fn base_ws() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(ws_edit(), 0..8), 1..4u64).prop_map(|(edits, day)| {
        let seed = json!({
            "_schema_version": "2.1", "_update_seq": 0, "run_id": RUN, "objective": "ship it",
            "status": "IDLE", "pinned_context": [], "sliding_context": [],
            "budget": {"max_sliding_tokens": 4000, "max_pinned_items": 32},
            "created_at": ts(1), "updated_at": ts(1)
        });
        edit_ws(&seed, &edits, day)
    })
}

// ---------------------------------------------------------------- registries

const PROJECTS: [&str; 4] = ["api", "cairn", "web", "zeta"];
const ALIASES: [&str; 5] = ["x", "Y", "front", "back", "web"];

#[derive(Debug, Clone)]
enum RegEdit {
    Add(usize),
    Alias(usize, usize),
    Describe(usize, Option<usize>),
}

fn reg_edit() -> impl Strategy<Value = RegEdit> {
    prop_oneof![
        (0..PROJECTS.len()).prop_map(RegEdit::Add),
        (0..PROJECTS.len(), 0..ALIASES.len()).prop_map(|(p, a)| RegEdit::Alias(p, a)),
        (0..PROJECTS.len(), proptest::option::of(0..WORDS.len()))
            .prop_map(|(p, d)| RegEdit::Describe(p, d)),
    ]
}

fn edit_registry(base: &Value, edits: &[RegEdit]) -> Value {
    let mut v = base.clone();
    for e in edits {
        let projects = v["projects"].as_array_mut().unwrap();
        match e {
            RegEdit::Add(p) => {
                if !projects.iter().any(|x| x["id"] == PROJECTS[*p]) {
                    projects.push(json!({"id": PROJECTS[*p], "aliases": [], "created_at": ts(1)}));
                    projects.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                }
            }
            RegEdit::Alias(p, a) => {
                if let Some(x) = projects.iter_mut().find(|x| x["id"] == PROJECTS[*p]) {
                    toggle(&mut x["aliases"], ALIASES[*a]);
                }
            }
            RegEdit::Describe(p, d) => {
                if let Some(x) = projects.iter_mut().find(|x| x["id"] == PROJECTS[*p]) {
                    match d {
                        Some(d) => x["description"] = json!(WORDS[*d]),
                        None => {
                            x.as_object_mut().unwrap().remove("description");
                        }
                    }
                }
            }
        }
    }
    v
}

fn base_registry() -> impl Strategy<Value = Value> {
    proptest::collection::vec(reg_edit(), 0..8)
        .prop_map(|edits| edit_registry(&json!({"_schema_version": "2.1", "projects": []}), &edits))
}

fn reg_bytes(v: &Value) -> Vec<u8> {
    schema::to_yaml(v).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn memory_items_merge_by_the_rules(
        base in base_item(),
        ours in proptest::collection::vec(item_edit(), 0..5),
        theirs in proptest::collection::vec(item_edit(), 0..5),
        (od, td) in (4..9u64, 4..9u64),
        add_add in proptest::bool::weighted(0.15),
    ) {
        let path = layout::memory_item("project", Some("cairn"), MEM);
        let (o, t) = (edit_item(&base, &ours, od), edit_item(&base, &theirs, td));
        let b = item_bytes(&base);
        let m = check(&path, (!add_add).then_some(&b[..]), &item_bytes(&o), &item_bytes(&t))?;
        let merged = parse(&path, m.merged.as_deref().unwrap());
        // The later updated_at, and a dispute is flagged on the item.
        let latest = [&o, &t].iter().map(|v| v["updated_at"].as_str().unwrap().to_string()).max().unwrap();
        prop_assert_eq!(merged["updated_at"].as_str().unwrap(), latest.as_str());
        if !m.conflicts.is_empty() {
            prop_assert_eq!(&merged["disputed"], &json!(true));
        }
        // Status: the higher of two different changes, never lower than both.
        let rank = |v: &Value| STATUSES.iter().position(|s| v["status"] == *s).unwrap();
        if !add_add && o["status"] != base["status"] && t["status"] != base["status"] {
            prop_assert_eq!(rank(&merged), rank(&o).max(rank(&t)));
        }
    }

    #[test]
    fn working_sets_merge_by_the_rules(
        base in base_ws(),
        ours in proptest::collection::vec(ws_edit(), 0..6),
        theirs in proptest::collection::vec(ws_edit(), 0..6),
        (od, td) in (4..9u64, 4..9u64),
    ) {
        let path = layout::working_set(RUN);
        let (o, t) = (edit_ws(&base, &ours, od), edit_ws(&base, &theirs, td));
        let m = check(&path, Some(&ws_bytes(&base)), &ws_bytes(&o), &ws_bytes(&t))?;
        let merged = parse(&path, m.merged.as_deref().unwrap());
        let seq = |v: &Value| v["_update_seq"].as_u64().unwrap();
        if !ours.is_empty() && !theirs.is_empty() && o != t {
            prop_assert_eq!(seq(&merged), seq(&o).max(seq(&t)) + 1);
        }
        // Context ids stay unique across both lists.
        let all = ids(&merged);
        let mut unique: Vec<&String> = all.iter().map(|(id, _)| id).collect();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn registries_merge_by_the_rules(
        base in base_registry(),
        ours in proptest::collection::vec(reg_edit(), 0..6),
        theirs in proptest::collection::vec(reg_edit(), 0..6),
        add_add in proptest::bool::weighted(0.15),
    ) {
        let path = layout::REGISTRY;
        let (o, t) = (edit_registry(&base, &ours), edit_registry(&base, &theirs));
        let b = reg_bytes(&base);
        let m = check(path, (!add_add).then_some(&b[..]), &reg_bytes(&o), &reg_bytes(&t))?;
        let merged = parse(path, m.merged.as_deref().unwrap());
        let projects = merged["projects"].as_array().unwrap();
        // Sorted by id, and every name means at most one project, if the
        // merge had to decide (the sides themselves may break it by hand).
        let ids: Vec<&str> = projects.iter().map(|p| p["id"].as_str().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        prop_assert_eq!(&ids, &sorted);
        if o != t && (add_add || (o != base && t != base)) {
            let mut names: Vec<String> = Vec::new();
            for p in projects {
                let mut own: Vec<String> = vec![p["id"].as_str().unwrap().to_lowercase()];
                for a in p["aliases"].as_array().unwrap() {
                    own.push(a.as_str().unwrap().to_lowercase());
                }
                own.sort();
                own.dedup();
                names.extend(own);
            }
            let n = names.len();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), n, "a name claimed twice survived");
        }
    }
}
