//! The merge rules, kind by kind, one test per rule and per conflict case.
//!
//! Every merge here goes through [`run`], which also checks the two
//! invariants every merge keeps: the merged bytes are the same with the
//! sides swapped (and the conflicts mirror), and the merged file validates.

use serde_json::{json, Value};

use super::*;
use crate::error::Category;

const MEM: &str = "mem_01JHZK4M0N1P2Q3R4S5T6V7W8Y";
const MEM2: &str = "mem_01JHZK4M0N1P2Q3R4S5T6V7W8Z";
const MEM3: &str = "mem_01JHZK4M0N1P2Q3R4S5T6V7W90";
const RUN: &str = "run_01JHZK3M4N5P6Q7R8S9T0V1W2X";
const BATCH: &str = "batch_01JHZK3Z9Y8X7W6V5T4S3R2Q1P";
const EP: &str = "ep_01JHZK4A5B6C7D8E9F0G1H2J3K";
const EP2: &str = "ep_01JHZK4A5B6C7D8E9F0G1H2J3M";

fn ts(day: u32) -> String {
    format!("2026-01-{day:02}T00:00:00.000Z")
}

/// `v` with `changes` applied at the top level; "<unset>" removes a key.
fn with(v: &Value, changes: Value) -> Value {
    let mut v = v.clone();
    for (k, x) in changes.as_object().expect("changes are an object") {
        if x == "<unset>" {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v
}

/// A document as cairn writes it at `path`.
fn canon(path: &str, v: &Value) -> Vec<u8> {
    serialize(Kind::of(path).unwrap(), path, v).unwrap()
}

fn parse(path: &str, bytes: &[u8]) -> Value {
    let v = schema::parse_document(path, bytes, Default::default()).unwrap();
    schema::validate(layout::schema_for(path).unwrap(), path, &v)
        .unwrap_or_else(|e| panic!("merged {path} does not validate: {e}"));
    v
}

/// Merges, checking symmetry and validity.
fn run(path: &str, b: Option<&[u8]>, o: Option<&[u8]>, t: Option<&[u8]>) -> FileMerge {
    let m = merge_file(path, b, o, t).unwrap();
    let swapped = merge_file(path, b, t, o).unwrap();
    assert_eq!(m.merged, swapped.merged, "merged bytes depend on the side");
    let mirrored: Vec<FieldConflict> = swapped
        .conflicts
        .iter()
        .map(|c| FieldConflict {
            ours: c.theirs.clone(),
            theirs: c.ours.clone(),
            ..c.clone()
        })
        .collect();
    assert_eq!(m.conflicts, mirrored, "conflicts do not mirror");
    if let Some(bytes) = &m.merged {
        parse(path, bytes);
    }
    m
}

/// Merges three documents written canonically; returns the merged value.
fn run_values(
    path: &str,
    b: Option<&Value>,
    o: Option<&Value>,
    t: Option<&Value>,
) -> (Value, Vec<FieldConflict>) {
    let (b, o, t) = (
        b.map(|v| canon(path, v)),
        o.map(|v| canon(path, v)),
        t.map(|v| canon(path, v)),
    );
    let m = run(path, b.as_deref(), o.as_deref(), t.as_deref());
    let merged = m
        .merged
        .as_deref()
        .map(|x| parse(path, x))
        .unwrap_or(Value::Null);
    (merged, m.conflicts)
}

fn rules(conflicts: &[FieldConflict]) -> Vec<(&str, &str)> {
    conflicts
        .iter()
        .map(|c| (c.pointer.as_str(), c.rule))
        .collect()
}

// ---------------------------------------------------------------- memory items

fn mem_path() -> String {
    layout::memory_item("project", Some("cairn"), MEM)
}

fn item() -> Value {
    json!({
        "_schema_version": "2.1", "id": MEM, "type": "fact", "scope": "project",
        "scope_id": "cairn", "project": "cairn", "content": "The parser is LL(1)",
        "confidence": 0.8, "status": "candidate", "rationale": "read the grammar",
        "source_refs": ["run:run_1", format!("batch:{BATCH}")], "tags": ["parser", "grammar"],
        "created_at": ts(1), "updated_at": ts(1)
    })
}

#[test]
fn trivial_cases_take_the_changed_side_byte_for_byte() {
    let path = mem_path();
    let b = canon(&path, &item());
    // Not canonical (JSON), but valid: returned as is, not rewritten.
    let t = serde_json::to_vec_pretty(&with(&item(), json!({"content": "changed"}))).unwrap();
    assert_eq!(
        run(&path, Some(&b), Some(&b), Some(&t)).merged,
        Some(t.clone())
    );
    assert_eq!(
        run(&path, Some(&b), Some(&t), Some(&t)).merged,
        Some(t.clone())
    );
    assert_eq!(run(&path, Some(&b), Some(&b), None).merged, None);
    assert_eq!(run(&path, None, None, Some(&b)).merged, Some(b.clone()));
    assert_eq!(run(&path, None, None, None).merged, None);
    assert!(run(&path, Some(&b), Some(&b), Some(&t)).is_clean());
}

#[test]
fn a_side_equal_to_base_in_value_counts_as_unchanged() {
    let path = mem_path();
    let b = canon(&path, &item());
    let reformatted = serde_json::to_vec(&item()).unwrap();
    let t = canon(&path, &with(&item(), json!({"content": "changed"})));
    let m = run(&path, Some(&b), Some(&reformatted), Some(&t));
    assert_eq!(m.merged, Some(t));
    assert!(m.is_clean());
    // Deleting a file the other side only reformatted deletes it.
    assert_eq!(run(&path, Some(&b), Some(&reformatted), None).merged, None);
}

#[test]
fn equal_values_in_different_bytes_are_written_canonically() {
    let path = mem_path();
    let v = with(&item(), json!({"content": "new"}));
    let json_bytes = serde_json::to_vec(&v).unwrap();
    let m = run(
        &path,
        Some(&canon(&path, &item())),
        Some(&json_bytes),
        Some(&canon(&path, &v)),
    );
    assert_eq!(m.merged, Some(canon(&path, &v)));
    assert!(m.is_clean());
}

#[test]
fn memory_fields_changed_on_one_side_each_merge_cleanly() {
    let path = mem_path();
    let o = with(
        &item(),
        json!({"content": "The parser is LL(2)", "updated_at": ts(2)}),
    );
    let t = with(
        &item(),
        json!({"confidence": 0.95, "rationale": "<unset>", "updated_at": ts(3)}),
    );
    let (m, conflicts) = run_values(&path, Some(&item()), Some(&o), Some(&t));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    assert_eq!(m["content"], "The parser is LL(2)");
    assert_eq!(m["confidence"], 0.95);
    assert!(m.get("rationale").is_none());
    assert_eq!(m["updated_at"], ts(3), "updated_at is the later");
    assert!(m.get("disputed").is_none());
}

#[test]
fn memory_field_both_changed_keeps_the_later_side_and_marks_the_item_disputed() {
    let path = mem_path();
    let o = with(&item(), json!({"content": "ours", "updated_at": ts(5)}));
    let t = with(
        &item(),
        json!({"content": "theirs", "confidence": 0.1, "updated_at": ts(4)}),
    );
    let (m, conflicts) = run_values(&path, Some(&item()), Some(&o), Some(&t));
    assert_eq!(rules(&conflicts), vec![("/content", "both_changed")]);
    let c = &conflicts[0];
    assert_eq!(c.base, Some(json!("The parser is LL(1)")));
    assert_eq!(
        (c.ours.clone(), c.theirs.clone()),
        (Some(json!("ours")), Some(json!("theirs")))
    );
    assert_eq!(c.kept, Some(json!("ours")), "ours has the later updated_at");
    assert_eq!(m["content"], "ours");
    assert_eq!(m["confidence"], 0.1);
    assert_eq!(m["updated_at"], ts(5));
    assert_eq!(m["disputed"], true);
}

#[test]
fn memory_tie_on_updated_at_keeps_the_greater_value() {
    let path = mem_path();
    let o = with(&item(), json!({"type": "decision", "updated_at": ts(2)}));
    let t = with(&item(), json!({"type": "knowledge", "updated_at": ts(2)}));
    let (m, conflicts) = run_values(&path, Some(&item()), Some(&o), Some(&t));
    assert_eq!(rules(&conflicts), vec![("/type", "both_changed")]);
    assert_eq!(m["type"], "knowledge", "\"knowledge\" > \"decision\"");
}

#[test]
fn memory_status_follows_precedence_and_records_the_dispute() {
    let path = mem_path();
    let o = with(&item(), json!({"status": "active", "updated_at": ts(3)}));
    let t = with(&item(), json!({"status": "invalid", "updated_at": ts(2)}));
    let (m, conflicts) = run_values(&path, Some(&item()), Some(&o), Some(&t));
    assert_eq!(
        m["status"], "invalid",
        "invalid > active even from the earlier side"
    );
    assert_eq!(rules(&conflicts), vec![("/status", "status_precedence")]);
    assert_eq!(conflicts[0].ours, Some(json!("active")));
    assert_eq!(conflicts[0].theirs, Some(json!("invalid")));
    assert_eq!(m["disputed"], true);
    // superseded > active
    let base = with(&item(), json!({"status": "active"}));
    let o = with(
        &base,
        json!({"status": "superseded", "superseded_by": MEM2, "updated_at": ts(2)}),
    );
    let t = with(&base, json!({"status": "candidate", "updated_at": ts(3)}));
    let (m, conflicts) = run_values(&path, Some(&base), Some(&o), Some(&t));
    assert_eq!(m["status"], "superseded");
    assert_eq!(m["superseded_by"], MEM2);
    assert_eq!(rules(&conflicts), vec![("/status", "status_precedence")]);
    // One side alone may move it any way.
    let t = with(&base, json!({"status": "candidate", "updated_at": ts(3)}));
    let (m, conflicts) = run_values(&path, Some(&base), Some(&base), Some(&t));
    assert_eq!(m["status"], "candidate");
    assert!(conflicts.is_empty());
}

#[test]
fn memory_tags_and_source_refs_are_unions() {
    let path = mem_path();
    let o = with(
        &item(),
        json!({
            "tags": ["grammar", "zeta", "alpha"],
            "source_refs": ["run:run_1", format!("batch:{BATCH}"), "commit:abc"],
            "updated_at": ts(2)
        }),
    );
    let t = with(
        &item(),
        json!({
            "tags": ["parser", "grammar", "beta"],
            "source_refs": ["run:run_1", "interaction:ix_1"],
            "updated_at": ts(3)
        }),
    );
    let (m, conflicts) = run_values(&path, Some(&item()), Some(&o), Some(&t));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    // "parser" was removed by ours and kept by theirs: removed.
    assert_eq!(m["tags"], json!(["grammar", "alpha", "beta", "zeta"]));
    assert_eq!(
        m["source_refs"],
        json!(["run:run_1", "commit:abc", "interaction:ix_1"])
    );
    // Both add to an absent set.
    let base = with(&item(), json!({"tags": "<unset>"}));
    let o = with(&base, json!({"tags": ["b", "a"]}));
    let t = with(&base, json!({"tags": ["c", "a"]}));
    let (m, _) = run_values(&path, Some(&base), Some(&o), Some(&t));
    assert_eq!(m["tags"], json!(["a", "b", "c"]));
}

#[test]
fn memory_links_are_scalars_and_a_link_beats_null() {
    let path = mem_path();
    let base = with(&item(), json!({"supersedes": null}));
    let o = with(&base, json!({"supersedes": MEM2}));
    let t = with(&base, json!({"content": "x"}));
    let (m, conflicts) = run_values(&path, Some(&base), Some(&o), Some(&t));
    assert!(conflicts.is_empty());
    assert_eq!(m["supersedes"], MEM2);
    // Both set it differently: a conflict; removed vs set keeps the link.
    let t = with(&base, json!({"supersedes": MEM3}));
    let (m, conflicts) = run_values(&path, Some(&base), Some(&o), Some(&t));
    assert_eq!(rules(&conflicts), vec![("/supersedes", "both_changed")]);
    assert_eq!(m["supersedes"], MEM3, "tie on updated_at: the greater id");
    let base = with(&item(), json!({"superseded_by": MEM2}));
    let o = with(&base, json!({"superseded_by": null, "updated_at": ts(9)}));
    let t = with(&base, json!({"superseded_by": MEM3}));
    let (m, conflicts) = run_values(&path, Some(&base), Some(&o), Some(&t));
    assert_eq!(
        rules(&conflicts),
        vec![("/superseded_by", "delete_vs_modify")]
    );
    assert_eq!(m["superseded_by"], MEM3, "the link survives the later null");
}

#[test]
fn memory_delete_vs_modify_keeps_the_modified_item_disputed() {
    let path = mem_path();
    let t = with(&item(), json!({"content": "edited"}));
    let (m, conflicts) = run_values(&path, Some(&item()), None, Some(&t));
    assert_eq!(rules(&conflicts), vec![("", "delete_vs_modify")]);
    assert_eq!(conflicts[0].ours, None);
    assert_eq!(conflicts[0].theirs, Some(t.clone()));
    assert_eq!(m["content"], "edited");
    assert_eq!(m["disputed"], true);
}

#[test]
fn memory_add_add_merges_against_an_empty_base() {
    let path = mem_path();
    let o = with(&item(), json!({"tags": ["a"], "updated_at": ts(2)}));
    let t = with(
        &item(),
        json!({"content": "other text", "tags": ["b"], "updated_at": ts(3)}),
    );
    let (m, conflicts) = run_values(&path, None, Some(&o), Some(&t));
    assert_eq!(rules(&conflicts), vec![("/content", "both_changed")]);
    assert_eq!(conflicts[0].base, None);
    assert_eq!(m["content"], "other text", "theirs is later");
    assert_eq!(m["tags"], json!(["a", "b"]));
    assert_eq!(m["disputed"], true);
}

#[test]
fn a_merge_that_breaks_the_schema_keeps_the_later_whole_document() {
    // Hand edits: ours makes the item global (no scope_id), theirs moves
    // its scope_id. Field by field that is a global item with a scope_id.
    let path = mem_path();
    let o = with(
        &item(),
        json!({"scope": "global", "scope_id": "<unset>", "updated_at": ts(2)}),
    );
    let t = with(&item(), json!({"scope_id": "other", "updated_at": ts(3)}));
    let (m, conflicts) = run_values(&path, Some(&item()), Some(&o), Some(&t));
    assert_eq!(rules(&conflicts), vec![("", "merge_invalid")]);
    assert_eq!(m["scope_id"], "other");
    assert_eq!(m["scope"], "project");
    assert_eq!(m["disputed"], true);
}

#[test]
fn conflict_markers_are_refused_naming_the_file() {
    let path = mem_path();
    let b = canon(&path, &item());
    let marked = format!(
        "<<<<<<< HEAD\n{}=======\n{}>>>>>>> theirs\n",
        String::from_utf8(b.clone()).unwrap(),
        String::from_utf8(b.clone()).unwrap()
    );
    let err = merge_file(&path, Some(&b), Some(marked.as_bytes()), Some(&b)).unwrap_err();
    assert_eq!(err.category(), Category::Validation);
    assert!(
        matches!(&err, Error::Invalid { file, rule: "conflict_markers", .. } if *file == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("conflict markers"), "{err}");
    assert!(err.to_string().contains("ours"), "{err}");
}

#[test]
fn invalid_input_is_refused_naming_the_file() {
    let path = mem_path();
    let b = canon(&path, &item());
    let bad = serde_json::to_vec(&with(&item(), json!({"confidence": 7}))).unwrap();
    let err = merge_file(&path, Some(&b), Some(&b), Some(&bad)).unwrap_err();
    assert!(
        matches!(&err, Error::Schema { file, .. } if *file == path),
        "{err:?}"
    );
    let err = merge_file(&path, Some(&b), Some(b"a: [unclosed"), Some(&b)).unwrap_err();
    assert_eq!(err.category(), Category::Validation);
    assert!(err.to_string().contains(&path), "{err}");
}

#[test]
fn a_broken_base_is_read_as_absent() {
    let path = mem_path();
    let o = with(&item(), json!({"tags": ["a"]}));
    let t = with(&item(), json!({"tags": ["b"]}));
    let m = run(
        &path,
        Some(b"<<<<<<< HEAD\n=======\n>>>>>>> x\n"),
        Some(&canon(&path, &o)),
        Some(&canon(&path, &t)),
    );
    let v = parse(&path, m.merged.as_ref().unwrap());
    assert_eq!(v["tags"], json!(["a", "b"]), "merged as an add/add");
}

#[test]
fn only_canonical_paths_are_handled() {
    assert!(handles(&mem_path()));
    assert!(handles("cairn.yaml"));
    assert!(handles(layout::REGISTRY));
    assert!(handles(&layout::project_state("cairn")));
    assert!(handles(&layout::working_set(RUN)));
    assert!(handles(&layout::batch(RUN, BATCH)));
    assert!(handles(&layout::episode(RUN, EP)));
    assert!(handles(&interaction_path()));
    assert!(!handles("mirror/index.md"));
    assert!(!handles("README.md"));
    assert!(!handles(".gitattributes"));
    let err = merge_file("README.md", None, Some(b"a"), Some(b"b")).unwrap_err();
    assert_eq!(err.category(), Category::Validation);
}

// ---------------------------------------------------------------- generic values

#[test]
fn merge_values_merges_objects_key_by_key() {
    let b = json!({"a": 1, "n": {"x": 1, "y": 1}, "list": [1, 2], "gone": true});
    let o = json!({"a": 2, "n": {"x": 2, "y": 1}, "list": [1, 2, 3], "gone": true, "new_o": 1});
    let t = json!({"a": 1, "n": {"x": 1, "y": 3}, "list": [2], "new_t": 1});
    let (m, conflicts) = merge_values(&b, &o, &t);
    assert_eq!(
        m,
        json!({"a": 2, "n": {"x": 2, "y": 3}, "list": [2], "new_o": 1, "new_t": 1})
    );
    assert_eq!(rules(&conflicts), vec![("/list", "both_changed")]);
    assert_eq!(conflicts[0].kept, Some(json!([2])), "\"[2]\" > \"[1,2,3]\"");
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["a", "n", "list", "new_o", "new_t"],
        "base order, then added sorted"
    );
    // Symmetric.
    let (m2, _) = merge_values(&b, &t, &o);
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        serde_json::to_string(&m2).unwrap()
    );
}

#[test]
fn merge_values_prefers_the_later_document_then_keeps_values_over_deletions() {
    let b = json!({"v": "b", "w": "b", "updated_at": ts(1)});
    let o = json!({"v": "o", "updated_at": ts(2)});
    let t = json!({"v": "t", "w": "t", "updated_at": ts(3)});
    let (m, conflicts) = merge_values(&b, &o, &t);
    assert_eq!(m["v"], "t");
    assert_eq!(m["w"], "t");
    assert_eq!(
        rules(&conflicts),
        vec![
            ("/updated_at", "both_changed"),
            ("/v", "both_changed"),
            ("/w", "delete_vs_modify")
        ]
    );
    let (m, _) = merge_values(&b, &t, &o);
    assert_eq!(m["v"], "t");
}

// ---------------------------------------------------------------- batches

fn batch_path() -> String {
    layout::batch(RUN, BATCH)
}

fn batch() -> Value {
    json!({
        "_schema_version": "2.1", "batch_id": BATCH, "run_id": RUN, "status": "proposed",
        "scope_filters": {}, "created_at": ts(1),
        "items": [{"op": "add", "type": "fact", "scope": "global", "content": "x"}],
        "item_ids": [MEM], "target_blobs": {}
    })
}

#[test]
fn batch_status_committed_or_rejected_beats_proposed() {
    let path = batch_path();
    let o = with(
        &batch(),
        json!({"status": "committed", "committed_at": ts(2), "committed_in": EP}),
    );
    let t = with(&batch(), json!({"scope_filters": {"k": 1}}));
    let (m, conflicts) = run_values(&path, Some(&batch()), Some(&o), Some(&t));
    assert!(conflicts.is_empty());
    assert_eq!(m["status"], "committed");
    assert_eq!(m["scope_filters"], json!({"k": 1}));
    // committed vs rejected: a conflict; committed is kept (an episode names it).
    let t = with(&batch(), json!({"status": "rejected"}));
    let (m, conflicts) = run_values(&path, Some(&batch()), Some(&o), Some(&t));
    assert_eq!(m["status"], "committed");
    assert_eq!(m["committed_in"], EP);
    assert_eq!(rules(&conflicts), vec![("/status", "status_precedence")]);
}

#[test]
fn a_batch_committed_twice_keeps_the_later_commit_whole() {
    let path = batch_path();
    let o = with(
        &batch(),
        json!({"status": "committed", "committed_at": ts(2), "committed_in": EP2}),
    );
    let t = with(
        &batch(),
        json!({"status": "committed", "committed_at": ts(3), "committed_in": EP}),
    );
    let (m, conflicts) = run_values(&path, Some(&batch()), Some(&o), Some(&t));
    assert_eq!(
        (m["committed_at"].clone(), m["committed_in"].clone()),
        (json!(ts(3)), json!(EP))
    );
    assert_eq!(
        rules(&conflicts),
        vec![
            ("/committed_at", "both_changed"),
            ("/committed_in", "both_changed")
        ]
    );
}

#[test]
fn batch_items_are_immutable() {
    let path = batch_path();
    let b = canon(&path, &batch());
    let changed_items = with(
        &batch(),
        json!({"items": [{"op": "add", "type": "fact", "scope": "global", "content": "y"}]}),
    );
    let o = canon(&path, &with(&batch(), json!({"status": "committed"})));
    let err = merge_file(
        &path,
        Some(&b),
        Some(&o),
        Some(&canon(&path, &changed_items)),
    )
    .unwrap_err();
    assert_eq!(err.category(), Category::Integrity);
    assert!(
        err.to_string().contains(&path) && err.to_string().contains("theirs"),
        "{err}"
    );
    // Two adds of one batch id with different items.
    let err = merge_file(&path, None, Some(&b), Some(&canon(&path, &changed_items))).unwrap_err();
    assert_eq!(err.category(), Category::Integrity);
}

// ---------------------------------------------------------------- episodes, interactions

fn episode(reason: &str) -> Value {
    let mut ws: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/schemas/valid/working_set.json"
    ))
    .unwrap();
    ws["run_id"] = json!(RUN);
    json!({
        "_schema_version": "2.1", "episode_id": EP, "run_id": RUN, "ordinal": 1, "reason": reason,
        "working_set": ws, "commit_range": {"from": null, "to": "a".repeat(40)},
        "event_counts": {"RUN_BOOTED": 1}, "memory_batches": [], "summary": "s",
        "next_entry_point": null, "tag": layout::episode_tag(RUN, EP), "created_at": ts(1)
    })
}

fn interaction_path() -> String {
    format!(
        "{}/interactions/ab/ix_01JHZK5A0B1C2D3E4F5G6H7J8K.yaml",
        layout::run_dir(RUN)
    )
}

#[test]
fn episodes_added_on_both_sides_with_the_same_content_merge() {
    let path = layout::episode(RUN, EP);
    let e = canon(&path, &episode("checkpoint"));
    let m = run(&path, None, Some(&e), Some(&e));
    assert_eq!(m.merged, Some(e.clone()));
    let json_form = serde_json::to_vec(&episode("checkpoint")).unwrap();
    let m = run(&path, None, Some(&json_form), Some(&e));
    assert_eq!(m.merged, Some(e), "equal values are written canonically");
    assert!(m.is_clean());
}

#[test]
fn episodes_with_different_content_are_an_integrity_error() {
    let path = layout::episode(RUN, EP);
    let a = canon(&path, &episode("a"));
    let b = canon(&path, &episode("b"));
    let err = merge_file(&path, None, Some(&a), Some(&b)).unwrap_err();
    assert_eq!(err.category(), Category::Integrity);
    assert!(
        err.to_string().contains(&path) && err.to_string().contains("immutable"),
        "{err}"
    );
    // A change to an existing episode, on either side, however small.
    for (o, t) in [(&a, &b), (&b, &a)] {
        let err = merge_file(&path, Some(&a), Some(o), Some(t)).unwrap_err();
        assert_eq!(err.category(), Category::Integrity);
    }
    // Changed on one side, deleted on the other.
    let err = merge_file(&path, Some(&a), None, Some(&b)).unwrap_err();
    assert_eq!(err.category(), Category::Integrity);
    // Changed identically on both sides is still a change.
    let err = merge_file(&path, Some(&a), Some(&b), Some(&b));
    assert!(err.is_ok(), "identical sides are the trivial case");
}

#[test]
fn an_episode_deleted_on_one_side_is_kept() {
    let path = layout::episode(RUN, EP);
    let e = canon(&path, &episode("checkpoint"));
    let m = run(&path, Some(&e), None, Some(&e));
    assert_eq!(m.merged, Some(e.clone()));
    assert_eq!(rules(&m.conflicts), vec![("", "immutable_deleted")]);
    assert_eq!(m.conflicts[0].ours, None);
    // Reformatted but equal on the keeping side: kept too.
    let json_form = serde_json::to_vec(&episode("checkpoint")).unwrap();
    let m = run(&path, Some(&e), Some(&json_form), None);
    assert_eq!(m.merged, Some(json_form));
    // Deleted on both sides: nothing to keep from.
    assert_eq!(run(&path, Some(&e), None, None).merged, None);
}

#[test]
fn interactions_are_immutable_too() {
    let path = interaction_path();
    let ix: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/schemas/valid/interaction.json"
    ))
    .unwrap();
    let a = canon(&path, &ix);
    let b = canon(&path, &with(&ix, json!({"response": "other"})));
    assert_eq!(run(&path, None, Some(&a), Some(&a)).merged, Some(a.clone()));
    let m = run(&path, Some(&a), Some(&a), None);
    assert_eq!(rules(&m.conflicts), vec![("", "immutable_deleted")]);
    let err = merge_file(&path, Some(&a), Some(&a), Some(&b)).unwrap_err();
    assert_eq!(err.category(), Category::Integrity);
    assert!(
        err.to_string().contains("interactions are immutable"),
        "{err}"
    );
    // Written in the schema's key order.
    let text = String::from_utf8(a).unwrap();
    assert!(
        text.starts_with("_schema_version: '2.1'\ninteraction_id:")
            || text.starts_with("_schema_version: \"2.1\"\ninteraction_id:"),
        "{text}"
    );
}

// ---------------------------------------------------------------- project registry

fn project(id: &str, aliases: &[&str]) -> Value {
    json!({"id": id, "aliases": aliases, "created_at": ts(1)})
}

fn registry(projects: Vec<Value>) -> Value {
    json!({"_schema_version": "2.1", "projects": projects})
}

#[test]
fn registry_is_a_union_of_projects_and_of_aliases() {
    let path = layout::REGISTRY;
    let b = registry(vec![project("cairn", &["cairn-store"])]);
    let o = registry(vec![
        project("cairn", &["cairn-store", "cs"]),
        project("zeta", &[]),
    ]);
    let t = registry(vec![
        project("alpha", &["a"]),
        project("cairn", &["cairn-store", "store"]),
    ]);
    let (m, conflicts) = run_values(path, Some(&b), Some(&o), Some(&t));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let ids: Vec<&str> = m["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "cairn", "zeta"], "sorted by id");
    assert_eq!(
        m["projects"][1]["aliases"],
        json!(["cairn-store", "cs", "store"])
    );
}

#[test]
fn registry_descriptions_merge_field_wise() {
    let path = layout::REGISTRY;
    let b = registry(vec![project("cairn", &[])]);
    let o = registry(vec![with(
        &project("cairn", &[]),
        json!({"description": "ours"}),
    )]);
    let t = registry(vec![with(
        &project("cairn", &[]),
        json!({"description": "theirs"}),
    )]);
    let (m, conflicts) = run_values(path, Some(&b), Some(&o), Some(&t));
    assert_eq!(
        rules(&conflicts),
        vec![("/projects/0/description", "both_changed")]
    );
    assert_eq!(m["projects"][0]["description"], "theirs");
    // One side only.
    let (m, conflicts) = run_values(
        path,
        Some(&b),
        Some(&o),
        Some(&registry(vec![project("cairn", &["c"])])),
    );
    assert!(conflicts.is_empty());
    assert_eq!(m["projects"][0]["description"], "ours");
    assert_eq!(m["projects"][0]["aliases"], json!(["c"]));
}

#[test]
fn an_alias_claimed_by_two_projects_goes_to_the_smaller_id() {
    let path = layout::REGISTRY;
    let b = registry(vec![project("api", &[]), project("web", &[])]);
    let o = registry(vec![project("api", &[]), project("web", &["Front"])]);
    let t = registry(vec![project("api", &["front"]), project("web", &[])]);
    let (m, conflicts) = run_values(path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["projects"][0]["aliases"], json!(["front"]));
    assert_eq!(m["projects"][1]["aliases"], json!([]));
    assert_eq!(
        rules(&conflicts),
        vec![("/projects/0/aliases/0", "alias_claimed_twice")]
    );
    let c = &conflicts[0];
    assert_eq!(
        (c.base.clone(), c.ours.clone(), c.theirs.clone()),
        (None, Some(json!(["web"])), Some(json!(["api"])))
    );
    assert_eq!(c.kept, Some(json!("api")));
}

#[test]
fn an_alias_stays_with_the_project_that_had_it_in_base() {
    let path = layout::REGISTRY;
    let b = registry(vec![project("api", &[]), project("web", &["shared"])]);
    let o = registry(vec![
        project("api", &["shared"]),
        project("web", &["shared"]),
    ]);
    let t = registry(vec![project("api", &[]), project("web", &["shared", "w"])]);
    let (m, conflicts) = run_values(path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["projects"][0]["aliases"], json!([]));
    assert_eq!(m["projects"][1]["aliases"], json!(["shared", "w"]));
    assert_eq!(
        rules(&conflicts),
        vec![("/projects/1/aliases/0", "alias_claimed_twice")]
    );
    assert_eq!(conflicts[0].kept, Some(json!("web")));
}

#[test]
fn an_alias_that_is_another_projects_id_yields_to_the_id() {
    let path = layout::REGISTRY;
    let b = registry(vec![project("zed", &[])]);
    let o = registry(vec![project("web", &[]), project("zed", &[])]);
    let t = registry(vec![project("zed", &["WEB"])]);
    let (m, conflicts) = run_values(path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["projects"][1]["aliases"], json!([]));
    assert_eq!(
        rules(&conflicts),
        vec![("/projects/0/id", "alias_claimed_twice")]
    );
    assert_eq!(conflicts[0].kept, Some(json!("web")));
}

// ---------------------------------------------------------------- trusted state

fn entry(key: &str, value: &str, status: &str, day: u32) -> Value {
    json!({"category": "status", "key": key, "value": value, "status": status, "updated_at": ts(day)})
}

fn state(entries: Vec<Value>) -> Value {
    json!({"_schema_version": "2.1", "project": "cairn", "entries": entries})
}

fn retired(e: Value, status: &str, day: u32) -> Value {
    with(&e, json!({"status": status, "superseded_at": ts(day)}))
}

#[test]
fn state_set_on_one_side_is_taken() {
    let path = layout::project_state("cairn");
    let phase = entry("phase", "design", "active", 1);
    let b = state(vec![phase.clone()]);
    let o = state(vec![
        retired(phase.clone(), "superseded", 2),
        entry("phase", "build", "active", 2),
    ]);
    let t = state(vec![phase.clone(), entry("owner", "ana", "active", 3)]);
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    assert_eq!(
        m["entries"],
        json!([
            retired(phase, "superseded", 2),
            entry("phase", "build", "active", 2),
            entry("owner", "ana", "active", 3)
        ])
    );
}

#[test]
fn state_key_set_on_both_sides_keeps_both_entries_and_the_later_active() {
    let path = layout::project_state("cairn");
    let phase = entry("phase", "design", "active", 1);
    let b = state(vec![phase.clone()]);
    let o = state(vec![
        retired(phase.clone(), "superseded", 3),
        entry("phase", "build", "active", 3),
    ]);
    let t = state(vec![
        retired(phase.clone(), "superseded", 2),
        entry("phase", "ship", "active", 2),
    ]);
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(
        m["entries"],
        json!([
            retired(phase, "superseded", 3),
            retired(entry("phase", "ship", "active", 2), "superseded", 3),
            entry("phase", "build", "active", 3),
        ])
    );
    assert_eq!(
        rules(&conflicts),
        vec![("/entries/2/value", "state_key_set_twice")]
    );
    let c = &conflicts[0];
    assert_eq!(
        (c.base.clone(), c.ours.clone(), c.theirs.clone()),
        (
            Some(json!("design")),
            Some(json!("build")),
            Some(json!("ship"))
        )
    );
    assert_eq!(c.kept, Some(json!("build")));
}

#[test]
fn state_key_set_to_the_same_value_on_both_sides_is_no_conflict() {
    let path = layout::project_state("cairn");
    let o = state(vec![entry("phase", "build", "active", 3)]);
    let t = state(vec![entry("phase", "build", "active", 2)]);
    let (m, conflicts) = run_values(&path, Some(&state(vec![])), Some(&o), Some(&t));
    assert!(conflicts.is_empty());
    let statuses: Vec<&str> = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "active"]);
}

#[test]
fn state_invalidated_on_one_side_and_replaced_on_the_other() {
    let path = layout::project_state("cairn");
    let phase = entry("phase", "design", "active", 1);
    let b = state(vec![phase.clone()]);
    let o = state(vec![retired(phase.clone(), "invalid", 2)]);
    let t = state(vec![
        retired(phase.clone(), "superseded", 3),
        entry("phase", "ship", "active", 3),
    ]);
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["entries"][0]["status"], "invalid", "invalid > superseded");
    assert_eq!(m["entries"][0]["superseded_at"], ts(3));
    assert_eq!(m["entries"][1], entry("phase", "ship", "active", 3));
    assert_eq!(
        rules(&conflicts),
        vec![("/entries/0/status", "status_precedence")]
    );
}

#[test]
fn a_state_entry_removed_by_hand_and_retired_on_the_other_side_is_kept() {
    let path = layout::project_state("cairn");
    let phase = entry("phase", "design", "active", 1);
    let b = state(vec![phase.clone(), entry("owner", "ana", "active", 1)]);
    let o = state(vec![entry("owner", "ana", "active", 1)]);
    let t = state(vec![
        retired(phase.clone(), "invalid", 2),
        entry("owner", "ana", "active", 1),
    ]);
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["entries"][0], retired(phase, "invalid", 2));
    assert_eq!(rules(&conflicts), vec![("/entries/0", "delete_vs_modify")]);
}

// ---------------------------------------------------------------- working sets

fn ctx(id: &str, day: u32) -> Value {
    json!({"id": id, "content": format!("about {id}"), "timestamp": ts(day), "priority": 5})
}

fn ws(seq: u64, day: u32, pinned: Vec<Value>, sliding: Vec<Value>) -> Value {
    json!({
        "_schema_version": "2.1", "_update_seq": seq, "run_id": RUN, "objective": "ship",
        "status": "BUSY", "pinned_context": pinned, "sliding_context": sliding,
        "budget": {"max_sliding_tokens": 4000, "max_pinned_items": 32},
        "created_at": ts(1), "updated_at": ts(day)
    })
}

#[test]
fn working_set_scalars_merge_field_wise_and_the_seq_moves_past_both() {
    let path = layout::working_set(RUN);
    let b = ws(3, 1, vec![], vec![]);
    let o = with(
        &ws(5, 2, vec![], vec![]),
        json!({"status": "BLOCKED", "next_action": "ask"}),
    );
    let t = with(
        &ws(4, 3, vec![], vec![]),
        json!({"status": "DONE", "current_stage": "SHIP"}),
    );
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["_update_seq"], 6);
    assert_eq!(m["updated_at"], ts(3));
    assert_eq!(m["status"], "BLOCKED", "ours has the higher seq");
    assert_eq!(m["next_action"], "ask");
    assert_eq!(m["current_stage"], "SHIP");
    assert_eq!(rules(&conflicts), vec![("/status", "both_changed")]);
    // Same seq: the later updated_at wins.
    let o = with(&ws(4, 2, vec![], vec![]), json!({"status": "BLOCKED"}));
    let (m, _) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["status"], "DONE");
    assert_eq!(m["_update_seq"], 5);
}

#[test]
fn working_set_context_merges_by_item_id() {
    let path = layout::working_set(RUN);
    let b = ws(1, 1, vec![ctx("p1", 1)], vec![ctx("s1", 1), ctx("s2", 1)]);
    // Ours removes s1 and appends s4; theirs appends s3 (earlier) and pins p2.
    let o = ws(2, 2, vec![ctx("p1", 1)], vec![ctx("s2", 1), ctx("s4", 2)]);
    let t = ws(
        2,
        2,
        vec![ctx("p1", 1), ctx("p2", 3)],
        vec![ctx("s1", 1), ctx("s2", 1), ctx("s3", 1)],
    );
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let ids = |list: &str| -> Vec<String> {
        m[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("pinned_context"), ["p1", "p2"]);
    assert_eq!(
        ids("sliding_context"),
        ["s2", "s3", "s4"],
        "s1 stays removed; additions by timestamp"
    );
    assert_eq!(m["_update_seq"], 3);
}

#[test]
fn a_context_item_removed_on_one_side_and_changed_on_the_other_is_kept() {
    let path = layout::working_set(RUN);
    let b = ws(1, 1, vec![], vec![ctx("s1", 1)]);
    let o = ws(2, 2, vec![], vec![]);
    let t = ws(
        2,
        2,
        vec![],
        vec![with(&ctx("s1", 1), json!({"priority": 9}))],
    );
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["sliding_context"][0]["priority"], 9);
    assert_eq!(
        rules(&conflicts),
        vec![("/sliding_context/0", "delete_vs_modify")]
    );
    // Both changed one item: field by field.
    let o = ws(
        2,
        2,
        vec![],
        vec![with(&ctx("s1", 1), json!({"content": "ours"}))],
    );
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert!(conflicts.is_empty());
    assert_eq!(
        m["sliding_context"][0],
        with(&ctx("s1", 1), json!({"content": "ours", "priority": 9}))
    );
}

#[test]
fn a_context_item_pinned_on_one_side_and_changed_on_the_other_stays_pinned() {
    let path = layout::working_set(RUN);
    let b = ws(1, 1, vec![], vec![ctx("s1", 1)]);
    let o = ws(2, 2, vec![ctx("s1", 1)], vec![]);
    let t = ws(
        2,
        2,
        vec![],
        vec![with(&ctx("s1", 1), json!({"content": "edited"}))],
    );
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["pinned_context"], json!([ctx("s1", 1)]));
    assert_eq!(m["sliding_context"], json!([]));
    assert_eq!(
        rules(&conflicts),
        vec![("/pinned_context/0", "context_id_twice")]
    );
    let c = &conflicts[0];
    assert_eq!(
        c.theirs.as_ref().unwrap()["content"],
        "edited",
        "the edit is in the record"
    );
}

#[test]
fn working_set_delete_vs_modify_keeps_the_modified_file() {
    let path = layout::working_set(RUN);
    let b = ws(1, 1, vec![], vec![]);
    let o = ws(2, 2, vec![], vec![ctx("s1", 2)]);
    let (m, conflicts) = run_values(&path, Some(&b), Some(&o), None);
    assert_eq!(m["_update_seq"], 2);
    assert_eq!(rules(&conflicts), vec![("", "delete_vs_modify")]);
    assert_eq!(conflicts[0].theirs, None);
}

// ---------------------------------------------------------------- store config

#[test]
fn store_config_merges_field_wise_in_schema_key_order() {
    let path = layout::CONFIG;
    let b: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/schemas/valid/store_config.json"
    ))
    .unwrap();
    let mut o = b.clone();
    o["budgets"]["brief_tokens"] = json!(8000);
    o["scope_weights"]["run"] = json!(2.0);
    o["store"]["name"] = json!("ours");
    let mut t = b.clone();
    t["limits"]["max_depth"] = json!(16);
    o["search"]["tag_weights"] = json!({"z:b": 0.5, "role:assistant": 0.6});
    t["search"]["tag_weights"] = json!({"team": 1.5});
    t["store"]["name"] = json!("theirs");
    let (m, conflicts) = run_values(path, Some(&b), Some(&o), Some(&t));
    assert_eq!(m["budgets"]["brief_tokens"], 8000);
    assert_eq!(m["limits"]["max_depth"], 16);
    assert_eq!(m["scope_weights"]["run"], 2.0);
    let tag_keys: Vec<&String> = m["search"]["tag_weights"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        tag_keys,
        ["role:assistant", "team", "z:b"],
        "both added: sorted"
    );
    assert_eq!(m["store"]["name"], "theirs", "no clock: the greater value");
    assert_eq!(rules(&conflicts), vec![("/store/name", "both_changed")]);
    // Written in the schema's order, even if the sides were not.
    let mut shuffled = serde_json::Map::new();
    for (k, v) in t.as_object().unwrap().iter().rev() {
        shuffled.insert(k.clone(), v.clone());
    }
    let merged = run(
        path,
        Some(&canon(path, &b)),
        Some(&canon(path, &o)),
        Some(&serde_json::to_vec(&shuffled).unwrap()),
    );
    let v = parse(path, merged.merged.as_ref().unwrap());
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "_schema_version",
            "store",
            "budgets",
            "eviction",
            "scope_weights",
            "search",
            "limits",
            "mirror"
        ]
    );
}

// ---------------------------------------------------------------- add/add of shared files

#[test]
fn a_registry_created_on_both_sides_is_the_union() {
    // Two clones of a store without projects each register one.
    let path = layout::REGISTRY;
    let o = registry(vec![project("cairn", &["store"])]);
    let t = registry(vec![project("api", &["store"]), project("cairn", &["c"])]);
    let (m, conflicts) = run_values(path, None, Some(&o), Some(&t));
    assert_eq!(
        m["projects"],
        json!([project("api", &["store"]), project("cairn", &["c"])])
    );
    assert_eq!(
        rules(&conflicts),
        vec![("/projects/0/aliases/0", "alias_claimed_twice")]
    );
    assert_eq!(conflicts[0].kept, Some(json!("api")), "the smaller id");
}

#[test]
fn a_state_file_created_on_both_sides_keeps_every_entry() {
    let path = layout::project_state("cairn");
    let o = state(vec![entry("phase", "build", "active", 2)]);
    let t = state(vec![
        entry("owner", "ana", "active", 1),
        entry("phase", "ship", "active", 3),
    ]);
    let (m, conflicts) = run_values(&path, None, Some(&o), Some(&t));
    assert_eq!(
        m["entries"],
        json!([
            entry("owner", "ana", "active", 1),
            retired(entry("phase", "build", "active", 2), "superseded", 3),
            entry("phase", "ship", "active", 3),
        ])
    );
    assert_eq!(
        rules(&conflicts),
        vec![("/entries/2/value", "state_key_set_twice")]
    );
    assert_eq!(conflicts[0].base, None);
}
