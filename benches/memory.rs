//! The memory benchmark: propose + commit of a 100-item batch, `memory list
//! --scope` and `memory history`, in stores holding 1k and 100k items.
//!
//! Run: `cargo bench --bench memory`. Settings: `CAIRN_BENCH_BIG` (default
//! 100000), `CAIRN_BENCH_REPS` (timed repetitions per row, default 30).
//! The stores are filled through `memory::import` with the mirror switched
//! off (`mirror.enabled: false`), so the figures are the memory code's own.

mod common;

use std::time::Instant;

use cairn::memory::{self, ListQuery, ScopeFilter};
use cairn::working_set::{self, BootRequest};
use cairn::{Store, StoreOptions};
use common::{num, table_header, table_row};
use serde_json::json;

fn store_with(items: usize, dir: &std::path::Path) -> (Store, String, String) {
    let store = Store::init(dir, true, StoreOptions::default()).expect("init");
    store
        .transact(None, |snap| {
            let text =
                String::from_utf8(snap.read("cairn.yaml")?.unwrap_or_default()).unwrap_or_default();
            let mut changes = cairn::store::Changes::new();
            changes.insert(
                "cairn.yaml".into(),
                Some(
                    text.replace("mirror:\n  enabled: true", "mirror:\n  enabled: false")
                        .into_bytes(),
                ),
            );
            Ok(cairn::store::Mutation {
                changes,
                event: cairn::ledger::EventDraft::new(
                    cairn::ledger::EventType::ConfigChanged,
                    "mirror off",
                ),
                tags: Vec::new(),
            })
        })
        .expect("config");
    let (ws, _) = working_set::boot(
        &store,
        &BootRequest {
            objective: "bench".into(),
            run_id: Some("run_bench".into()),
            ..Default::default()
        },
        None,
    )
    .expect("boot");
    // 1% of the items sit in one project scope, the rest are global.
    let records: Vec<serde_json::Value> = (0..items)
        .map(|i| {
            let mut r = json!({"content": format!("memory item {i} about topic {} and detail {}", i % 97, i % 13), "type": "fact"});
            if i % 100 == 0 {
                r["scope"] = json!("project");
                r["scope_id"] = json!("p1");
            }
            r
        })
        .collect();
    let report = memory::import(&store, &records, "bench", 10_000, &|_, _| {}).expect("import");
    (store, ws.run_id, report.ids[0].clone())
}

fn main() {
    let big = num("CAIRN_BENCH_BIG", 100_000);
    let reps = num("CAIRN_BENCH_REPS", 30);
    table_header();
    for size in [1000, big] {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let started = Instant::now();
        let (store, run, first) = store_with(size, tmp.path());
        println!(
            "# store with {size} items built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        for r in 0..reps {
            let mcrs: Vec<_> = (0..100).map(|i| json!({"op": "add", "type": "fact", "scope": "global", "content": format!("batch {r} item {i}")})).collect();
            let t = Instant::now();
            let (b, _) = memory::propose(
                &store,
                &run,
                &json!(mcrs),
                Default::default(),
                "bench",
                None,
            )
            .expect("propose");
            memory::commit_batch(&store, &b.batch_id, true, None).expect("commit");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        table_row(&format!("propose+commit 100 items @ {size}"), times, 1);
        let q = ListQuery {
            scope: Some(ScopeFilter {
                scope: "project".into(),
                scope_id: Some("p1".into()),
            }),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..reps {
            let t = Instant::now();
            n = memory::list(&store, &q).expect("list").len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        table_row(
            &format!("memory list --scope project:p1 ({n} items) @ {size}"),
            times,
            1,
        );
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let v = memory::history(&store, &first).expect("history");
            assert!(!v.is_empty());
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        table_row(&format!("memory history @ {size}"), times, 1);
        let mut seq = working_set::show(&store, &run, None)
            .expect("ws")
            .update_seq;
        let mut times = Vec::new();
        for i in 0..reps.max(100) {
            let p = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": format!("b{i}"), "content": "x"}]}});
            let t = Instant::now();
            seq = working_set::patch(&store, &run, &p, "bench", None)
                .expect("patch")
                .working_set
                .update_seq;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        table_row(&format!("ws patch (library, bare) @ {size}"), times, 2);
    }
}
