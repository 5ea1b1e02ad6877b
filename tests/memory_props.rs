//! Property: any sequence of propose / commit / promote / reject / update /
//! supersede / delete leaves every item in exactly one valid status, keeps
//! supersession links consistent both ways, and the statuses in the files
//! equal what replaying the ledger from the first commit gives.

mod common;

use std::collections::BTreeMap;

use cairn::episode::{self, MilestoneRequest};
use cairn::ledger::{self, LogQuery};
use cairn::memory::{self, ItemStatus, ListQuery};
use cairn::StoreOptions;
use common::setup;
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Propose(u8),
    Commit(usize),
    Milestone(usize),
    Promote(usize),
    Reject(usize),
    Update(usize),
    Supersede(usize),
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..4).prop_map(Op::Propose),
        any::<usize>().prop_map(Op::Commit),
        any::<usize>().prop_map(Op::Milestone),
        any::<usize>().prop_map(Op::Promote),
        any::<usize>().prop_map(Op::Reject),
        any::<usize>().prop_map(Op::Update),
        any::<usize>().prop_map(Op::Supersede),
        any::<usize>().prop_map(Op::Delete),
    ]
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()].clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn statuses_are_valid_and_equal_the_ledger_replay(ops in proptest::collection::vec(op(), 1..14)) {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, run) = setup::booted(dir.path(), true, StoreOptions::default(), "props", None);
        let mut batches: Vec<String> = Vec::new();
        let mut items: Vec<String> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let before = store.tip().unwrap();
            let change = |target: Option<String>, op: &str| -> Option<serde_json::Value> {
                target.map(|t| json!([{"op": op, "target_id": t, "content": format!("{op} #{n}")}]))
            };
            let result: Result<(), cairn::Error> = match op.clone() {
                Op::Propose(k) => {
                    let mcrs: Vec<_> = (0..k)
                        .map(|i| json!({"op": "add", "type": "fact", "scope": "global", "content": format!("item {n}.{i}")}))
                        .collect();
                    memory::propose(&store, &run, &json!(mcrs), Default::default(), "p", None).map(|(b, _)| {
                        items.extend(b.item_ids.iter().flatten().cloned());
                        batches.push(b.batch_id);
                    })
                }
                Op::Commit(i) => match pick(&batches, i) {
                    Some(b) => memory::commit_batch(&store, &b, true, None).map(|_| ()),
                    None => Ok(()),
                },
                Op::Milestone(i) => {
                    let req = MilestoneRequest { reason: "m".into(), batches: pick(&batches, i).into_iter().collect(), ..Default::default() };
                    episode::milestone(&store, &run, &req, None).map(|_| ())
                }
                Op::Promote(i) => match pick(&items, i) {
                    Some(id) => memory::promote(&store, &id, None, None).map(|_| ()),
                    None => Ok(()),
                },
                Op::Reject(i) => match pick(&items, i) {
                    Some(id) => memory::reject(&store, &id, "no", None).map(|_| ()),
                    None => Ok(()),
                },
                Op::Update(i) | Op::Supersede(i) | Op::Delete(i) => {
                    let kind = match op { Op::Update(_) => "update", Op::Supersede(_) => "supersede", _ => "delete" };
                    match change(pick(&items, i), kind) {
                        Some(body) => memory::propose(&store, &run, &body, Default::default(), "p", None).map(|(b, _)| {
                            items.extend(b.item_ids.iter().flatten().filter(|id| !items.contains(id)).cloned().collect::<Vec<_>>());
                            batches.push(b.batch_id);
                        }),
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                // A refused operation changes nothing.
                prop_assert_eq!(store.tip().unwrap(), before, "{:?} failed with {} but moved the tip", op, e);
                prop_assert!(!matches!(e.category(), cairn::Category::Internal), "{:?}: {}", op, e);
            }
        }
        let files: BTreeMap<String, ItemStatus> = memory::list(&store, &ListQuery::default())
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.status))
            .collect();
        let mut replay: BTreeMap<String, ItemStatus> = BTreeMap::new();
        for event in ledger::query(&store, &LogQuery::default()).unwrap() {
            if let Some(changes) = event.payload.get("items").and_then(|v| v.as_array()) {
                for c in changes {
                    let id = c["id"].as_str().unwrap().to_string();
                    let status = ItemStatus::parse(c["status"].as_str().unwrap()).unwrap();
                    replay.insert(id, status);
                }
            }
        }
        prop_assert_eq!(&files, &replay);
        // Supersession links hold both ways; the successor went live (it may
        // itself have been superseded or deleted since: chains are kept).
        for item in memory::list(&store, &ListQuery::default()).unwrap() {
            if item.status == ItemStatus::Superseded {
                let by = memory::show(&store, item.superseded_by.as_deref().unwrap()).unwrap();
                prop_assert_eq!(by.supersedes.as_deref(), Some(item.id.as_str()));
                prop_assert!(by.status != ItemStatus::Candidate, "{} superseded by a candidate", item.id);
            }
        }
        prop_assert!(cairn::fsck::fsck(&store).unwrap().is_empty());
    }
}
