//! The brief: trust order, budgets and caps, whole items only, determinism
//! (golden files).

mod common;

use cairn::brief::{self, BriefRequest};
use cairn::working_set::{self, BootRequest};
use cairn::{memory, project, Store};
use common::setup;
use serde_json::json;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::TempDir::new().unwrap();
    let options = setup::at("2026-01-18T00:00:00Z");
    let store = Store::init(dir.path(), true, options).unwrap();
    project::add(&store, "cairn", &["cairn-store".into()], None, None).unwrap();
    project::state_set(
        &store,
        "cairn",
        "status",
        "phase",
        "implementation",
        Some("human"),
        None,
    )
    .unwrap();
    project::state_set(
        &store,
        "cairn-store",
        "decision",
        "database",
        "git is the database",
        None,
        None,
    )
    .unwrap();
    let req = BootRequest {
        objective: "Ship the search index for memory".into(),
        acceptance_criteria: vec![
            "Search reflects the tip".into(),
            "Ranking is deterministic".into(),
        ],
        constraints: vec!["No network calls".into()],
        project: Some("Cairn-Store".into()),
        run_id: Some("run_brief".into()),
        ..Default::default()
    };
    working_set::boot(&store, &req, None).unwrap();
    let patch = json!({"expected_seq": 0, "set": {"status": "BUSY", "current_stage": "BUILD", "next_action": "Write the index catch-up"},
    "append": {
        "pinned_context": [{"id": "pin-rule", "content": "Every mutation is one commit.", "priority": 9, "timestamp": "2026-01-17T00:00:00Z"}],
        "sliding_context": [
            {"id": "obs-1", "content": "tantivy commit payload can hold the indexed commit id", "priority": 3, "timestamp": "2026-01-17T01:00:00Z"},
            {"id": "obs-2", "content": "git diff between trees gives the changed memory files", "priority": 6, "timestamp": "2026-01-17T02:00:00Z"}
        ]}});
    working_set::patch(&store, "run_brief", &patch, "p", None).unwrap();
    let mcrs = json!([
        {"op": "add", "type": "decision", "scope": "project", "scope_id": "cairn", "content": "The search index lives under .cairn/index and is never tracked", "confidence": 0.9},
        {"op": "add", "type": "fact", "scope": "global", "content": "Index catch-up reads the git diff since the indexed commit", "confidence": 0.7},
        {"op": "add", "type": "preference", "scope": "global", "content": "Prefer small crates over frameworks", "confidence": 0.6}
    ]);
    let (b, _) =
        memory::propose(&store, "run_brief", &mcrs, Default::default(), "m", None).unwrap();
    memory::commit_batch(&store, &b.batch_id, true, None).unwrap();
    (dir, store)
}

/// The markdown with memory ids (`mem_` and a ULID, random in its low
/// bits) shown as `mem_<id>`, so snapshots stay stable.
fn masked_ids(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("mem_") {
        out.push_str(&rest[..at + 4]);
        let tail = &rest[at + 4..];
        let len = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        out.push_str(if len == 26 { "<id>" } else { &tail[..len] });
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

fn usage(b: &brief::Brief) -> serde_json::Value {
    json!({"budget": b.budget, "used": b.used, "sections": b.sections, "dropped": b.dropped})
}

#[test]
fn a_loose_budget_keeps_everything_in_trust_order() {
    let (_d, store) = store();
    let b = brief::brief(
        &store,
        &BriefRequest {
            run_id: "run_brief".into(),
            query: Some("search index catch-up".into()),
            budget: Some(6000),
        },
    )
    .unwrap();
    assert!(b.dropped.is_empty());
    let order = [
        "Trusted project state",
        "Objective",
        "Acceptance criteria",
        "Constraints",
        "Pinned context",
        "Recent context",
        "Relevant memories",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|h| b.markdown.find(h).unwrap_or_else(|| panic!("{h} missing")))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{}", b.markdown);
    assert!(b.markdown.contains("(curated)"));
    insta::assert_snapshot!("brief_loose", masked_ids(&b.markdown));
    insta::assert_json_snapshot!("brief_loose_usage", usage(&b));
}

#[test]
fn a_tight_budget_drops_the_least_valuable_whole_items() {
    let (_d, store) = store();
    let b = brief::brief(
        &store,
        &BriefRequest {
            run_id: "run_brief".into(),
            query: Some("search index catch-up".into()),
            budget: Some(90),
        },
    )
    .unwrap();
    assert!(b.used <= 90, "used {}", b.used);
    assert!(!b.dropped.is_empty());
    // Memories go before anything more trusted; state and the objective stay.
    assert_eq!(b.dropped[0].section, "memories");
    assert!(b.markdown.contains("Ship the search index for memory"));
    assert!(b.markdown.contains("status / phase"));
    // Never a cut item: every kept line is whole.
    for d in &b.dropped {
        assert!(
            !b.markdown.contains(&d.item) || d.section == "state",
            "{} half kept",
            d.item
        );
    }
    insta::assert_snapshot!("brief_tight", masked_ids(&b.markdown));
    insta::assert_json_snapshot!("brief_tight_usage", usage(&b));
}

#[test]
fn the_brief_is_deterministic_and_uses_a_store_template() {
    let (_d, store) = store();
    let req = BriefRequest {
        run_id: "run_brief".into(),
        query: None,
        budget: None,
    };
    let a = brief::brief(&store, &req).unwrap();
    let b = brief::brief(&store, &req).unwrap();
    assert_eq!(a.markdown, b.markdown);
    assert_eq!(
        a.query,
        "Ship the search index for memory Write the index catch-up"
    );
    // A store's own template wins.
    store
        .transact(None, |_| {
            let mut changes = cairn::store::Changes::new();
            changes.insert(
                brief::TEMPLATE_PATH.into(),
                Some(b"OBJECTIVE={{ objective }}\n".to_vec()),
            );
            Ok(cairn::store::Mutation {
                changes,
                event: cairn::ledger::EventDraft::new(
                    cairn::ledger::EventType::ConfigChanged,
                    "template",
                ),
                tags: Vec::new(),
            })
        })
        .unwrap();
    let c = brief::brief(&store, &req).unwrap();
    assert_eq!(c.markdown, "OBJECTIVE=Ship the search index for memory\n");
}
