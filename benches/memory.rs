//! The memory benchmark: propose + commit of a 100-item batch, `memory list
//! --scope` and `memory history`, in stores holding 1k and 100k items.
//!
//! Run: `cargo bench --bench memory`. Settings: `CAIRN_BENCH_BIG` (default
//! 100000), `CAIRN_BENCH_REPS` (timed repetitions per row, default 30).
//! The stores are filled through `memory::import` with the mirror switched
//! off (`mirror.enabled: false`), so the figures are the memory code's own.
//!
//! Two rows go through the `cairn` binary, as a user would: `cairn memory
//! import` of `CAIRN_BENCH_IMPORT` items (default 100000; 0 skips it) from a
//! JSON Lines file into a fresh work-tree store with the mirror on, with its
//! wall time and peak RSS (the child's own `ru_maxrss`, from `wait4`); and
//! `cairn log --json` without filters on the big store once it holds
//! `CAIRN_BENCH_EVENTS` commits (default 2000). `CAIRN_BIN` runs another
//! build of the binary (an older one, for a before/after in one sitting).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cairn::memory::{self, ListQuery, ScopeFilter};
use cairn::working_set::{self, BootRequest};
use cairn::{Store, StoreOptions};
use common::{num, table_header, table_row};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_cairn");

/// The binary the CLI rows run: `CAIRN_BIN`, else this build's.
fn exe() -> String {
    std::env::var("CAIRN_BIN").unwrap_or_else(|_| EXE.to_string())
}

/// Runs `cmd` to its end; returns (wall ms, peak RSS in MB, stdout).
fn run_measured(mut cmd: Command) -> (f64, f64, String) {
    let out_file = tempfile::NamedTempFile::new().expect("tmp");
    cmd.stdout(out_file.reopen().expect("reopen"))
        .stderr(Stdio::null());
    let t = Instant::now();
    // Reaped by `wait4` below, which also gives its own peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn cairn");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, whose pid is live until reaped here.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let out = std::fs::read_to_string(out_file.path()).expect("read output");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: {out}"
    );
    (ms, usage.ru_maxrss as f64 / 1024.0, out)
}

fn cli(store: &Path) -> Command {
    let mut c = Command::new(exe());
    c.arg("--store").arg(store).arg("--json");
    c
}

/// `cairn memory import` of `n` items into a fresh work-tree store.
fn import_row(n: usize) {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let root = tmp.path().join("store");
    let mut init = Command::new(exe());
    init.arg("--json").arg("init").arg(&root);
    run_measured(init);
    let file = tmp.path().join("items.jsonl");
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        let mut r = json!({"id": format!("ext-{i}"), "content": format!("imported item {i} about topic {} and detail {}", i % 97, i % 13), "type": "fact", "tags": [format!("t{}", i % 7)]});
        if i % 100 == 0 {
            r["scope"] = json!("project");
            r["scope_id"] = json!("p1");
        }
        text.push_str(&r.to_string());
        text.push('\n');
    }
    std::fs::write(&file, text).expect("write items");
    let mut c = cli(&root);
    c.args(["memory", "import"]).arg(&file);
    let (ms, rss, out) = run_measured(c);
    let envelope: serde_json::Value = serde_json::from_str(&out).expect("json");
    let report = &envelope["data"];
    assert_eq!(report["imported"], json!(n), "{}", envelope["error"]);
    println!(
        "cairn memory import of {n} items (work tree, mirror on): {:.1} s wall, {rss:.0} MB peak RSS, {} commits",
        ms / 1000.0,
        report["commits"]
    );
}

/// `cairn log --json` without filters, timed `reps` times after one warm-up.
fn log_row(store_dir: &Path, label: &str, reps: usize) {
    let mut times = Vec::new();
    let mut events = 0;
    let mut rss_max: f64 = 0.0;
    for r in 0..=reps {
        let mut c = cli(store_dir);
        c.arg("log");
        let (ms, rss, out) = run_measured(c);
        let envelope: serde_json::Value = serde_json::from_str(&out).expect("json");
        events = envelope["data"]["events"].as_array().map_or(0, Vec::len);
        if r > 0 {
            times.push(ms);
            rss_max = rss_max.max(rss);
        }
    }
    table_row(&format!("cairn log ({events} events) @ {label}"), times, 1);
    println!("# cairn log peak RSS {rss_max:.0} MB");
}

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
    let import = num("CAIRN_BENCH_IMPORT", 100_000);
    let events = num("CAIRN_BENCH_EVENTS", 2000);
    if import > 0 {
        import_row(import);
    }
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
        if size == big {
            // More events for the log row: working-set patches, untimed.
            let have = cairn::ledger::query(&store, &Default::default())
                .expect("log")
                .len();
            for i in have..events {
                let p = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": format!("e{i}"), "content": "x"}]}});
                seq = working_set::patch(&store, &run, &p, "bench", None)
                    .expect("patch")
                    .working_set
                    .update_seq;
            }
            log_row(tmp.path(), &format!("{size} items"), reps.min(10));
        }
    }
}
