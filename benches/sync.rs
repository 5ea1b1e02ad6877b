//! The sync benchmark (the sync issue): a merge of two sides with 1,000
//! changed items each on a large store, `cairn sync` of one new commit
//! against a `file://` remote beside `git pull` + `git push` of the same,
//! and 8 processes syncing to one remote in a loop.
//!
//! Run with `cargo bench --bench sync`. Settings (environment):
//! - `CAIRN_BENCH_BIG`: items in the large store (default 100000).
//! - `CAIRN_BENCH_CHANGED`: items each side of the merge changes (default 1000).
//! - `CAIRN_BENCH_OPS`: timed merges / syncs per row (default 20).
//! - `CAIRN_BENCH_WRITERS`: processes in the loop row (default 8).
//! - `CAIRN_BENCH_SECS`: how long the loop row runs (default 60).
//! - `CAIRN_BENCH_ONLY`: `merge`, `sync` or `loop` to run one row.
//!
//! Rows: `merge-N` times `sync::integrate` of their side into ours (the
//! merge planned kind by kind, conflict records for the items both sides
//! changed, the mirror derived, one commit), once with the mirror on and
//! once in a store whose mirror is off; `sync-N` times `cairn sync` in
//! a clone that has one new commit to fetch and fast-forward to, and
//! `git-pull-push-N` the same through plain git clones of the same files;
//! `loop` runs writers that each patch their own run and sync, then checks
//! that every acknowledged write reached the remote.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::store::{Changes, Mutation};
use cairn::sync::{self, SyncOptions, SyncReport};
use cairn::working_set::{self, BootRequest};
use cairn::{layout, ledger, Store, StoreOptions};
use common::{cpu_now, num, report};
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn item_yaml(i: usize, round: usize) -> Vec<u8> {
    let id = format!("mem_{:026}", i);
    let item = json!({
        "_schema_version": "2.1", "id": id, "type": "fact", "scope": "global",
        "content": format!("benchmark memory item {i}, version {round}"),
        "confidence": 0.7, "status": "active", "source_refs": ["run:bench"],
        "created_at": "2026-01-18T10:00:00.000Z",
        "updated_at": format!("2026-01-18T10:{:02}:00.000Z", round % 60),
    });
    cairn::schema::to_yaml(&item).into_bytes()
}

fn item_path(i: usize) -> String {
    layout::memory_item("global", None, &format!("mem_{:026}", i))
}

/// A store of `n` items, written in one commit; with `mirror` false the
/// store's mirror is switched off (to tell the merge from the rendering).
fn populate(dir: &Path, bare: bool, n: usize, mirror: bool) -> Store {
    let store = Store::init(dir, bare, StoreOptions::default()).expect("init");
    let cfg = String::from_utf8(
        store
            .read_file(store.require_tip().unwrap(), layout::CONFIG)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let cfg = if mirror {
        cfg
    } else {
        cfg.replace("  enabled: true", "  enabled: false")
    };
    let t = Instant::now();
    store
        .transact(None, |_| {
            let mut changes = Changes::new();
            changes.insert(layout::CONFIG.into(), Some(cfg.clone().into_bytes()));
            for i in 0..n {
                changes.insert(item_path(i), Some(item_yaml(i, 0)));
            }
            Ok(Mutation {
                changes,
                event: ledger::EventDraft::new(ledger::EventType::MemoryImported, "populate"),
                tags: Vec::new(),
            })
        })
        .expect("populate");
    eprintln!("populated {n} items in {:.1} s", t.elapsed().as_secs_f64());
    store
}

/// One commit changing `items` to version `round`.
fn change(store: &Store, items: impl Iterator<Item = usize>, round: usize) -> git2::Oid {
    let items: Vec<usize> = items.collect();
    store
        .transact(None, |_| {
            let mut changes = Changes::new();
            for &i in &items {
                changes.insert(item_path(i), Some(item_yaml(i, round)));
            }
            Ok(Mutation {
                changes,
                event: ledger::EventDraft::new(ledger::EventType::ManualEdit, "edit items"),
                tags: Vec::new(),
            })
        })
        .expect("change")
        .commit
}

fn merge_row(root: &Path, n: usize, changed: usize, ops: usize, mirror: bool) {
    let dir = root.join(if mirror { "merge" } else { "merge-nomirror" });
    let store = populate(&dir, true, n, mirror);
    let branch = store.branch().to_string();
    let base = store.require_tip().unwrap();
    // Theirs: items [0, changed); ours: [changed/2, changed/2 + changed):
    // half of each side's items were changed by the other side too.
    let theirs = change(&store, 0..changed, 1);
    git(&dir, &["update-ref", &branch, &base.to_string()]);
    let ours = change(&store, changed / 2..changed / 2 + changed, 2);
    let mut ms = Vec::new();
    let mut cpu = Vec::new();
    let mut conflicts = 0;
    for _ in 0..ops {
        git(&dir, &["update-ref", &branch, &ours.to_string()]);
        let mut report_ = SyncReport::default();
        let (t, c) = (Instant::now(), cpu_now());
        sync::integrate(&store, theirs, &mut report_).expect("merge");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        cpu.push((cpu_now() - c).as_secs_f64() * 1000.0);
        conflicts = report_.conflicts.len();
    }
    let label = if mirror { "" } else { ", mirror off" };
    report(&format!("merge-{n} ({changed} each{label})"), ms);
    report("  CPU (user+sys, all threads)", cpu);
    println!("    conflict records per merge: {conflicts}");
}

fn sync_rows(root: &Path, n: usize, ops: usize) {
    let remote = root.join("remote.git");
    git(
        root,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    let url = format!("file://{}", remote.display());
    let a_dir = root.join("sync-a");
    let a = populate(&a_dir, false, n, true);
    let run = working_set::boot(
        &a,
        &BootRequest {
            objective: "bench".into(),
            run_id: Some("run_bench".into()),
            ..Default::default()
        },
        None,
    )
    .expect("boot")
    .0
    .run_id;
    git(&a_dir, &["remote", "add", "origin", &url]);
    sync::sync(&a, &SyncOptions::default()).expect("first push");
    git(root, &["clone", "-q", &url, "sync-b"]);
    let b = Store::open(&root.join("sync-b"), StoreOptions::default()).expect("open b");
    let mut ms = Vec::new();
    for round in 0..ops {
        let seq = working_set::show_at_commit(&a, &run, a.require_tip().unwrap())
            .unwrap()
            .update_seq;
        let patch = json!({"expected_seq": seq, "set": {"next_action": format!("step {round}")}});
        working_set::patch(&a, &run, &patch, "bench", None).expect("patch");
        sync::sync(&a, &SyncOptions::default()).expect("push");
        let t = Instant::now();
        let done = sync::sync(&b, &SyncOptions::default()).expect("sync b");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(done.fast_forwarded);
    }
    report(&format!("cairn-sync-{n}"), ms);

    // The peer: plain git clones of the same files, one commit pulled and
    // pushed back the same way.
    let peer = root.join("peer.git");
    git(
        root,
        &["clone", "-q", "--bare", &url, peer.to_str().unwrap()],
    );
    let purl = format!("file://{}", peer.display());
    git(root, &["clone", "-q", &purl, "peer-a"]);
    git(root, &["clone", "-q", &purl, "peer-b"]);
    let (pa, pb) = (root.join("peer-a"), root.join("peer-b"));
    let mut ms = Vec::new();
    for round in 0..ops {
        std::fs::write(pa.join("notes.txt"), format!("round {round}\n")).unwrap();
        git(&pa, &["add", "notes.txt"]);
        git(&pa, &["commit", "-q", "--no-verify", "-m", "round"]);
        git(&pa, &["push", "-q"]);
        let t = Instant::now();
        git(&pb, &["pull", "-q", "--no-rebase"]);
        git(&pb, &["push", "-q"]);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report(&format!("git-pull-push-{n}"), ms);
}

/// A writer process of the loop row: patches its run and syncs until the
/// deadline; prints the acknowledged count.
fn worker(dir: &Path, run: &str, secs: u64) {
    let store = Store::open(dir, StoreOptions::default()).expect("open clone");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut acked = 0u64;
    let mut failed = 0u64;
    let mut written = 0u64;
    while Instant::now() < deadline {
        written += 1;
        let tip = store.require_tip().unwrap();
        let seq = working_set::show_at_commit(&store, run, tip)
            .unwrap()
            .update_seq;
        let patch = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": format!("w{written}"), "content": "x"}]}});
        working_set::patch(&store, run, &patch, "bench", None).expect("patch");
        match sync::sync(
            &store,
            &SyncOptions {
                attempts: 50,
                ..Default::default()
            },
        ) {
            Ok(r) if r.pushed => acked += 1,
            _ => failed += 1,
        }
    }
    println!("ACKED {acked} FAILED {failed}");
}

fn loop_row(root: &Path, writers: usize, secs: u64) {
    let remote = root.join("loop.git");
    git(
        root,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    let url = format!("file://{}", remote.display());
    let seed = root.join("loop-seed");
    let store = Store::init(&seed, true, StoreOptions::default()).expect("init");
    let mut runs = Vec::new();
    for w in 0..writers {
        let req = BootRequest {
            objective: format!("writer {w}"),
            run_id: Some(format!("run_w{w}")),
            ..Default::default()
        };
        runs.push(
            working_set::boot(&store, &req, None)
                .expect("boot")
                .0
                .run_id,
        );
    }
    git(&seed, &["remote", "add", "origin", &url]);
    sync::sync(&store, &SyncOptions::default()).expect("seed push");
    let mut children = Vec::new();
    for (w, run) in runs.iter().enumerate() {
        let dir = root.join(format!("loop-{w}"));
        git(
            root,
            &["clone", "-q", "--bare", &url, dir.to_str().unwrap()],
        );
        git(
            &dir,
            &[
                "config",
                "remote.origin.fetch",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        );
        children.push(
            Command::new(std::env::current_exe().unwrap())
                .env(
                    "CAIRN_BENCH_SYNC_WORKER",
                    format!("{}|{run}|{secs}", dir.display()),
                )
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn writer"),
        );
    }
    let t = Instant::now();
    let mut acked = Vec::new();
    let mut failed = 0u64;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("ACKED"))
            .expect("writer report");
        let parts: Vec<&str> = line.split_whitespace().collect();
        acked.push(parts[1].parse::<u64>().unwrap());
        failed += parts[3].parse::<u64>().unwrap();
    }
    let wall = t.elapsed().as_secs_f64();
    // Every acknowledged write is on the remote: each run's seq is at least
    // its writer's acknowledged count (a failed round's patch may have
    // landed too, with a later sync).
    let check = root.join("loop-check");
    git(root, &["clone", "-q", &url, check.to_str().unwrap()]);
    let final_store = Store::open(&check, StoreOptions::default()).expect("open check");
    let tip = final_store.require_tip().unwrap();
    let mut lost = 0u64;
    for (run, n) in runs.iter().zip(&acked) {
        // Each patch takes one seq on the merged line (replayed or not).
        let ws = working_set::show_at_commit(&final_store, run, tip).unwrap();
        lost += n.saturating_sub(ws.update_seq);
    }
    let total: u64 = acked.iter().sum();
    println!(
        "loop: {writers} writers, {wall:.1} s: {total} acknowledged writes ({:.1}/s), {failed} sync rounds gave up, {lost} lost; per writer {acked:?}",
        total as f64 / wall
    );
}

fn main() {
    if let Ok(spec) = std::env::var("CAIRN_BENCH_SYNC_WORKER") {
        let mut parts = spec.splitn(3, '|');
        let (dir, run, secs) = (
            PathBuf::from(parts.next().unwrap()),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse().unwrap(),
        );
        worker(&dir, &run, secs);
        return;
    }
    let n = num("CAIRN_BENCH_BIG", 100_000);
    let changed = num("CAIRN_BENCH_CHANGED", 1000);
    let ops = num("CAIRN_BENCH_OPS", 20);
    let writers = num("CAIRN_BENCH_WRITERS", 8);
    let secs = num("CAIRN_BENCH_SECS", 60) as u64;
    let only = std::env::var("CAIRN_BENCH_ONLY").unwrap_or_default();
    let tmp = tempfile::TempDir::new().unwrap();
    println!("sync benchmark: {n} items, {changed} changed per side, {ops} ops, {writers} writers for {secs} s");
    if only.is_empty() || only == "merge" {
        merge_row(tmp.path(), n, changed, ops, true);
        merge_row(tmp.path(), n, changed, ops, false);
    }
    if only.is_empty() || only == "sync" {
        sync_rows(tmp.path(), n, ops);
    }
    if only.is_empty() || only == "loop" {
        loop_row(tmp.path(), writers, secs);
    }
}
