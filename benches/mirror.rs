//! The mirror benchmark (issue 5): what the mirror adds to a write, a full
//! render at scale, and the watcher's latency from a saved edit to the page.
//!
//! Run with `cargo bench --bench mirror`. Settings (environment):
//! - `CAIRN_BENCH_OPS`: timed patches per row (default 300).
//! - `CAIRN_BENCH_BIG`: the large store size (default 100000).
//! - `CAIRN_BENCH_EDITS`: watcher edits (default 200).
//!
//! Rows: `lib-bare-N-on|off` time `working_set::patch` in two bare stores
//! holding N memory items, one with the mirror on and one off, patched in
//! alternation (the `mirror-N` line gives their ratio and difference); `render-N` times
//! `mirror::render_all` from scratch; `watch-1000` times an atomic save of the
//! working set until the run page shows it, with the watcher's default debounce.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::mirror::{self, GitSource};
use cairn::store::{Changes, Mutation};
use cairn::watch::{self, WatchOptions};
use cairn::working_set::{self, BootRequest};
use cairn::{layout, ledger, Store, StoreOptions};
use common::{num, pct, report_as, sorted};
use serde_json::json;

const RUN: &str = "run_bench";
const TYPES: [&str; 8] = [
    "fact",
    "preference",
    "decision",
    "identity",
    "episodic",
    "knowledge",
    "adaptation",
    "project",
];

/// Prints one row in this benchmark's format (name 24 wide, 3 decimals).
fn report(name: &str, ms: Vec<f64>) {
    report_as(name, ms, 24, 3);
}

/// A store with `n` memory items and one booted run; the mirror on or off.
fn populate(dir: &Path, bare: bool, n: usize, mirror_on: bool) -> Store {
    let store = Store::init(dir, bare, StoreOptions::default()).expect("init");
    let cfg = String::from_utf8(
        store
            .read_file(store.tip().unwrap().unwrap(), layout::CONFIG)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let cfg = if mirror_on {
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
                let id = format!("mem_{:026}", i);
                let item = json!({
                    "_schema_version": "2.1", "id": id, "type": TYPES[i % TYPES.len()],
                    "scope": "global", "content": format!("benchmark memory item number {i} with some words"),
                    "confidence": 0.7, "status": "active", "source_refs": ["run:bench"],
                    "created_at": "2026-01-18T10:00:00Z", "updated_at": "2026-01-18T10:00:00Z"
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
    eprintln!(
        "populated {n} items (mirror {}) in {:.1} s",
        if mirror_on { "on" } else { "off" },
        t.elapsed().as_secs_f64()
    );
    let req = BootRequest {
        objective: "bench".into(),
        run_id: Some(RUN.into()),
        ..Default::default()
    };
    working_set::boot(&store, &req, None).expect("boot");
    store
}

/// Patches two stores of `n` items side by side, one with the mirror off
/// and one with it on, alternating which goes first each round, so both
/// rows (and the per-round difference) see the same moments of a noisy
/// machine. Then times the mirror's own parts on the mirror-on store.
fn patch_rows(n: usize, ops: usize) {
    let dir_off = tempfile::TempDir::new().unwrap();
    let dir_on = tempfile::TempDir::new().unwrap();
    let off = populate(dir_off.path(), true, n, false);
    let store = populate(dir_on.path(), true, n, true);
    let (mut ms_off, mut ms_on, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ops + 10 {
        let patch = json!({"_schema_version": "2.1", "expected_seq": i,
            "append": {"sliding_context": [{"id": format!("s{i}"), "content": "x".repeat(200), "timestamp": "2026-01-18T10:00:00Z", "priority": 1}]}});
        let time = |s: &Store| {
            let t = Instant::now();
            working_set::patch(s, RUN, &patch, "bench", None).expect("patch");
            t.elapsed().as_secs_f64() * 1000.0
        };
        let (a, b) = if i % 2 == 0 {
            let a = time(&off);
            (a, time(&store))
        } else {
            let b = time(&store);
            (time(&off), b)
        };
        if i >= 10 {
            ms_off.push(a);
            ms_on.push(b);
            added.push(b - a);
        }
    }
    let p50 = |v: &[f64]| pct(&sorted(v.to_vec()), 0.5);
    println!(
        "mirror-{n}: on/off p50 ratio {:.2}x, p50 on - p50 off {:+.3} ms, median of per-round differences {:+.3} ms",
        p50(&ms_on) / p50(&ms_off),
        p50(&ms_on) - p50(&ms_off),
        p50(&added)
    );
    report(&format!("lib-bare-{n}-off"), ms_off);
    report(&format!("lib-bare-{n}-on"), ms_on);
    drop(off);
    {
        extend_row(&store, n, ops);
        catchup_row(&store, n);
        let tip = store.tip().unwrap().unwrap();
        let cfg = store.config().unwrap().mirror;
        let src = GitSource::new(&store, Some(tip));
        let mut ms = Vec::new();
        let mut pages = 0;
        for _ in 0..3 {
            let t = Instant::now();
            pages = mirror::render_all(&store, &src, Some(tip), &cfg, &[])
                .unwrap()
                .len();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        report(&format!("render-{n} ({pages} pages)"), ms);
    }
}

/// `mirror::extend` alone: the pages a working-set change needs, planned
/// against the tip and not committed (no git objects written).
fn extend_row(store: &Store, n: usize, ops: usize) {
    let path = layout::working_set(RUN);
    let mut ms = Vec::new();
    for i in 0..ops + 10 {
        let snap = store.snapshot().unwrap();
        let text = String::from_utf8(snap.read(&path).unwrap().unwrap()).unwrap();
        let start = text.find("objective:").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        let new = format!("{}objective: plan {i}{}", &text[..start], &text[end..]);
        let mut changes = Changes::new();
        changes.insert(path.clone(), Some(new.into_bytes()));
        let t = Instant::now();
        mirror::extend(store, &snap, &mut changes).unwrap();
        if i >= 10 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    report(&format!("extend-{n}"), ms);
}

/// A hand commit made with plain git (it changes one memory item and no
/// page), then the first cairn write after it, which brings the mirror up
/// to date.
fn catchup_row(store: &Store, n: usize) {
    let git = |args: &[&str], input: Option<&str>, env: &[(&str, &str)]| -> String {
        use std::io::Write;
        let mut cmd = std::process::Command::new("git");
        cmd.arg("--git-dir")
            .arg(store.git_dir())
            .args(["-c", "user.name=bench", "-c", "user.email=b@b"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = input {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let tip = store.tip().unwrap().unwrap().to_string();
    let id = format!("mem_{:026}", 7);
    let path = layout::memory_item("global", None, &id);
    let text = String::from_utf8(
        store
            .read_file(store.tip().unwrap().unwrap(), &path)
            .unwrap()
            .unwrap(),
    )
    .unwrap()
    .replace("with some words", "edited by hand");
    let blob = git(&["hash-object", "-w", "--stdin"], Some(&text), &[]);
    let index = store.git_dir().join("bench-index");
    let index = index.to_str().unwrap();
    let env = [("GIT_INDEX_FILE", index)];
    git(&["read-tree", &tip], None, &env);
    git(
        &[
            "update-index",
            "--cacheinfo",
            &format!("100644,{blob},{path}"),
        ],
        None,
        &env,
    );
    let tree = git(&["write-tree"], None, &env);
    let commit = git(
        &["commit-tree", &tree, "-p", &tip, "-m", "hand edit"],
        None,
        &[],
    );
    git(&["update-ref", store.branch(), &commit, &tip], None, &[]);
    let _ = std::fs::remove_file(index);
    let seq = working_set::read(&store.snapshot().unwrap(), RUN)
        .unwrap()
        .update_seq;
    let patch = json!({"_schema_version": "2.1", "expected_seq": seq,
        "set": {"next_action": "after the hand commit"}});
    let t = Instant::now();
    working_set::patch(store, RUN, &patch, "bench", None).expect("patch");
    report(
        &format!("catchup-{n}"),
        vec![t.elapsed().as_secs_f64() * 1000.0],
    );
}

fn watch_row(n: usize, edits: usize) {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().to_path_buf();
    let store = populate(&root, false, n, true);
    drop(store);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, r, rt, p) = (stop.clone(), ready.clone(), root.clone(), passes.clone());
    let h = std::thread::spawn(move || {
        let store = Store::open(&rt, StoreOptions::default()).unwrap();
        let o = WatchOptions {
            update_index: false,
            ..Default::default()
        };
        watch::watch(&store, &o, &s, &mut |pass| {
            if let (Ok(pass), true) = (pass, r.load(Ordering::SeqCst)) {
                p.lock().unwrap().push(pass.elapsed_ms);
            }
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    });
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ws = root.join(layout::working_set(RUN));
    let page = root.join(mirror::run_page(RUN));
    let mut ms = Vec::new();
    for i in 0..edits {
        let text = std::fs::read_to_string(&ws).unwrap();
        let start = text.find("objective:").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        let marker = format!("edit number {i}");
        let new = format!("{}objective: {marker}{}", &text[..start], &text[end..]);
        let tmp = ws.with_file_name(".working_set.yaml.tmp");
        std::fs::write(&tmp, new).unwrap();
        let t = Instant::now();
        std::fs::rename(&tmp, &ws).unwrap();
        loop {
            if std::fs::read_to_string(&page)
                .map(|p| p.contains(&format!("{marker}\n")))
                .unwrap_or(false)
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                panic!("watcher did not update the page");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    report(&format!("watch-{n} (debounce 150 ms)"), ms);
    let passes = passes.lock().unwrap().clone();
    report(&format!("watch-{n} pass alone"), passes);
}

fn main() {
    let ops = num("CAIRN_BENCH_OPS", 300);
    let big = num("CAIRN_BENCH_BIG", 100_000);
    let edits = num("CAIRN_BENCH_EDITS", 200);
    for n in [1000, big] {
        patch_rows(n, ops);
    }
    watch_row(1000, edits);
}
