//! The hooks benchmark (issue 6): what the pre-commit hook costs a one-file
//! hand edit, at 1k and 100k memory items, with the process start included.
//!
//! Run with `cargo bench --bench hooks`. Settings (environment):
//! - `CAIRN_BENCH_OPS`: timed edits per row (default 100).
//! - `CAIRN_BENCH_SIZES`: store sizes (default `1000,100000`).
//! - `CAIRN_BENCH_KEEP`: a folder to build the stores in and keep (for
//!   profiling); an existing store there is reused.
//!
//! For each size: a work-tree store with N memory items and the mirror on,
//! hooks installed, the search index built. Each edit changes one memory
//! item's confidence and stages it. Rows:
//! - `hook-N`: `cairn hook pre-commit` run as its own process, as git runs it;
//! - `commit-hooks-N`: the whole `git commit` with cairn's hooks (pre-commit,
//!   commit-msg, post-commit with the index catch-up in the foreground);
//! - `commit-no-hooks-N`: the peer, the same kind of edit committed by git
//!   with no hooks at all (`-c core.hooksPath=/dev/null`), measured after the
//!   hook rows.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cairn::store::{Changes, Mutation};
use cairn::{hooks, layout, ledger, search, Store, StoreOptions};
use common::{num, report};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_cairn");

fn item_path(i: usize) -> String {
    layout::memory_item("global", None, &format!("mem_{i:026}"))
}

fn populate(dir: &Path, n: usize) -> Store {
    let store = Store::init(dir, false, StoreOptions::default()).expect("init");
    let t = Instant::now();
    store
        .transact(None, |_| {
            let mut changes = Changes::new();
            for i in 0..n {
                let item = json!({
                    "_schema_version": "2.1", "id": format!("mem_{i:026}"), "type": "fact",
                    "scope": "global", "content": format!("benchmark memory item number {i} with some words"),
                    "confidence": 0.7, "status": "active", "source_refs": ["run:bench"],
                    "created_at": "2026-01-18T10:00:00Z", "updated_at": "2026-01-18T10:00:00Z"
                });
                changes.insert(item_path(i), Some(cairn::schema::to_yaml(&item).into_bytes()));
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

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .env("CAIRN_HOOK_FOREGROUND", "1");
    c
}

fn run(mut c: Command) -> f64 {
    let t = Instant::now();
    let out = c.output().expect("spawn");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// Changes one item's confidence in the work tree and stages it.
fn edit(root: &Path, i: usize, round: usize) {
    let path = item_path(i);
    let full = root.join(&path);
    let text = std::fs::read_to_string(&full).expect("read item");
    // A value the item did not hold before, also in a kept store.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let conf = format!("confidence: 0.{:02}{:04}", 10 + round % 80, nanos % 10_000);
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with("confidence:") {
                conf.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&full, edited).expect("write item");
    run({
        let mut c = git(root);
        c.args(["add", &path]);
        c
    });
}

fn size_rows(n: usize, ops: usize) {
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let root = match std::env::var_os("CAIRN_BENCH_KEEP") {
        Some(dir) => Path::new(&dir).join(format!("store-{n}")),
        None => tmp.path().join("store"),
    };
    let store = match Store::open(&root, StoreOptions::default()) {
        Ok(s) => s,
        Err(_) => populate(&root, n),
    };
    hooks::install(&store, Path::new(EXE)).expect("install hooks");
    search::open(&store, &|_, _| {}).expect("build the search index");
    // One untimed commit through the hooks brings the mirror up to date (a
    // kept store may end with the peer's hook-less commits).
    run({
        let mut c = git(&root);
        c.args(["commit", "-q", "--allow-empty", "-m", "warm up"]);
        c
    });
    let (mut hook, mut with_hooks, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..ops {
        edit(&root, (k * 7919) % n, k);
        hook.push(run({
            let mut c = Command::new(EXE);
            c.current_dir(&root).args(["hook", "pre-commit"]);
            c
        }));
        with_hooks.push(run({
            let mut c = git(&root);
            c.args(["commit", "-q", "-m", "hand edit"]);
            c
        }));
    }
    for k in 0..ops {
        edit(&root, (k * 7919 + 1) % n, k + 1);
        peer.push(run({
            let mut c = git(&root);
            c.args([
                "-c",
                "core.hooksPath=/dev/null",
                "commit",
                "-q",
                "-m",
                "hand edit",
            ]);
            c
        }));
    }
    let h = report(&format!("hook-{n}"), hook);
    let c = report(&format!("commit-hooks-{n}"), with_hooks);
    let p = report(&format!("commit-no-hooks-{n}"), peer);
    println!(
        "ratio at {n}: commit with hooks / without = {:.2}x; hook alone / commit without = {:.2}x",
        c / p,
        h / p
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ops = num("CAIRN_BENCH_OPS", 100);
    let sizes = std::env::var("CAIRN_BENCH_SIZES").unwrap_or_else(|_| "1000,100000".into());
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        size_rows(n, ops);
    }
}
