//! The snapshot and backup benchmark (the resume-pack issue): snapshot and
//! load of a run with N memory items in scope, and backup create (full and
//! incremental) and verify at the large size.
//!
//! Run with `cargo bench --bench resume`. Settings (environment):
//! - `CAIRN_BENCH_BIG`: the large store size (default 100000).
//! - `CAIRN_BENCH_OPS`: timed operations per row at 1k items (default 10);
//!   the large rows take a third as many (at least 3).
//! - `CAIRN_BENCH_BACKUPS=0`: leave out the backup rows.
//!
//! Rows: `snapshot-N` times `resume::snapshot` (pack built, written as a
//! folder, the event recorded once per state); `load-N` times
//! `resume::load` of that pack into a fresh store (verification, one commit
//! with the N items as candidates, the mirror rendered); `backup-full-N`,
//! `backup-incr-N` (after one patch) and `backup-verify-N` time
//! `backup::create` (each verified at creation by a test restore and fsck)
//! and `backup::verify`.

mod common;

use std::path::Path;
use std::time::Instant;

use cairn::resume::{self, LoadOptions, SnapshotOptions};
use cairn::store::{Changes, Mutation};
use cairn::working_set::{self, BootRequest};
use cairn::{backup, layout, ledger, Store, StoreOptions};
use common::{num, report};
use serde_json::json;

/// A bare store with `n` active global memory items and one run.
fn populate(dir: &Path, n: usize) -> (Store, String) {
    let store = Store::init(dir, true, StoreOptions::default()).expect("init");
    store
        .transact(None, |_| {
            let mut changes = Changes::new();
            for i in 0..n {
                let id = format!("mem_{:026}", i);
                let item = json!({
                    "_schema_version": "2.1", "id": id, "type": "fact", "scope": "global",
                    "content": format!("benchmark memory item {i}"), "confidence": 0.7,
                    "status": "active", "source_refs": ["run:bench"],
                    "created_at": "2026-01-18T10:00:00.000Z", "updated_at": "2026-01-18T10:00:00.000Z"
                });
                changes.insert(
                    layout::memory_item("global", None, &id),
                    Some(cairn::schema::to_yaml(&item).into_bytes()),
                );
            }
            Ok(Mutation {
                changes,
                event: ledger::EventDraft::new(ledger::EventType::MemoryImported, "populate"),
                tags: Vec::new(),
            })
        })
        .expect("populate");
    let req = BootRequest {
        objective: "bench".into(),
        run_id: Some("run_bench".into()),
        ..Default::default()
    };
    let run = working_set::boot(&store, &req, None)
        .expect("boot")
        .0
        .run_id;
    (store, run)
}

fn rows(root: &Path, n: usize, ops: usize, backups: bool) {
    let (store, run) = populate(&root.join(format!("src-{n}")), n);
    let packs = root.join(format!("packs-{n}"));
    std::fs::create_dir_all(&packs).unwrap();
    let mut ms = Vec::new();
    let mut last = None;
    for i in 0..ops {
        let out = packs.join(format!("pack-{i}"));
        let t = Instant::now();
        let done = resume::snapshot(
            &store,
            &run,
            &SnapshotOptions::default(),
            Some(&out),
            &packs,
        )
        .expect("snapshot");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(done.path);
    }
    report(&format!("snapshot-{n}"), ms);
    let pack = last.expect("a pack");
    let mut ms = Vec::new();
    for i in 0..ops {
        let target = Store::init(
            &root.join(format!("into-{n}-{i}")),
            true,
            StoreOptions::default(),
        )
        .expect("init target");
        // Untrusted: the items arrive as candidates in the review queue.
        let t = Instant::now();
        resume::load(&target, &pack, &LoadOptions::default(), None).expect("load");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report(&format!("load-{n}"), ms);
    if !backups {
        return;
    }
    let dest = root.join(format!("backups-{n}"));
    let (mut full, mut incr, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ops {
        let t = Instant::now();
        let made = backup::create(&store, &dest, false).expect("full backup");
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        let bundle = made.bundle.expect("a full backup writes a bundle");
        let seq = working_set::show_at_commit(&store, &run, store.require_tip().unwrap())
            .unwrap()
            .update_seq;
        let patch = json!({"expected_seq": seq, "set": {"next_action": format!("round {round}")}});
        working_set::patch(&store, &run, &patch, "bench", None).expect("patch");
        let t = Instant::now();
        backup::create(&store, &dest, true).expect("incremental backup");
        incr.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        backup::verify(&bundle).expect("verify");
        verify.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report(&format!("backup-full-{n}"), full);
    report(&format!("backup-incr-{n}"), incr);
    report(&format!("backup-verify-{n}"), verify);
}

fn main() {
    let big = num("CAIRN_BENCH_BIG", 100_000);
    let ops = num("CAIRN_BENCH_OPS", 10);
    let tmp = tempfile::TempDir::new().unwrap();
    println!("resume benchmark: 1000 and {big} items in scope, {ops} ops at 1k");
    rows(tmp.path(), 1000, ops, false);
    let backups = num("CAIRN_BENCH_BACKUPS", 1) != 0;
    rows(tmp.path(), big, (ops / 3).max(3), backups);
}
