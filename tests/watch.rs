//! `cairn watch`: the work-tree mirror follows hand edits (issue 5).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::mirror::{self, WorkTreeSource};
use cairn::watch::{self, WatchOptions};
use cairn::{layout, Store};
use common::setup::{self, opts};

const RUN: &str = "run_w";

/// A work-tree store at `dir` with run `RUN` booted.
fn watched_store(dir: &Path) -> Store {
    setup::booted(dir, false, opts(), "watch me", Some(RUN)).0
}

/// The work tree's pages.
fn work_pages(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    // The watcher may be replacing a page (temp file + rename) right now: a
    // file that vanishes between listing and reading is skipped.
    for path in setup::files_under(&root.join("mirror")) {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if let Ok(bytes) = std::fs::read(&path) {
            out.insert(rel, bytes);
        }
    }
    out
}

/// A render from scratch of the work tree, as the watcher should leave it.
fn fresh(store: &Store, root: &Path) -> BTreeMap<String, Vec<u8>> {
    let tip = store.tip().unwrap().unwrap();
    let horizon = store.commit_info(tip).unwrap().parents.first().copied();
    let cfg = store.config().unwrap().mirror;
    mirror::render_all(store, &WorkTreeSource::new(root), horizon, &cfg, &[]).unwrap()
}

fn ws_path(root: &Path) -> std::path::PathBuf {
    root.join(layout::working_set(RUN))
}

/// Edits the working set's objective the way editors save: temp file, rename.
fn atomic_save(root: &Path, objective: &str) {
    let p = ws_path(root);
    let text = setup::read(&p);
    let start = text.find("objective:").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let new = format!("{}objective: {objective}{}", &text[..start], &text[end..]);
    let tmp = p.with_file_name(".working_set.yaml.swp");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

struct Running {
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

fn start(root: &Path) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicUsize::new(0));
    let (s, r, n, root) = (
        stop.clone(),
        ready.clone(),
        passes.clone(),
        root.to_path_buf(),
    );
    let handle = std::thread::spawn(move || {
        let store = Store::open(&root, opts()).unwrap();
        let o = WatchOptions {
            debounce: Duration::from_millis(100),
            update_index: false,
            ..Default::default()
        };
        watch::watch(&store, &o, &s, &mut |_| {
            n.fetch_add(1, Ordering::SeqCst);
            r.store(true, Ordering::SeqCst)
        })
        .unwrap();
    });
    wait_for("the first pass", || ready.load(Ordering::SeqCst));
    Running {
        stop,
        passes,
        handle: Some(handle),
    }
}

fn run_page(root: &Path) -> String {
    std::fs::read_to_string(root.join(mirror::run_page("run_w"))).unwrap_or_default()
}

#[test]
fn atomic_saves_invalid_files_and_deletes() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    let store = watched_store(root);
    let _w = start(root);
    // An editor's atomic save.
    atomic_save(root, "edited by hand");
    wait_for("the run page", || run_page(root).contains("edited by hand"));
    wait_for("a settled mirror", || {
        work_pages(root) == fresh(&store, root)
    });
    // An invalid file: the last good page stays, the problem is reported.
    let good = run_page(root);
    let p = ws_path(root);
    setup::edit(&p, |t| t.replace("status: IDLE", "status: SLEEPY"));
    wait_for("the problem", || {
        setup::read(root.join("mirror/README.md")).contains("SLEEPY")
    });
    let readme = setup::read(root.join("mirror/README.md"));
    assert!(
        readme.contains("working_set.yaml` field `/status` (rule: enum)"),
        "{readme}"
    );
    assert_eq!(run_page(root), good);
    // Fixed again: the problem goes away.
    atomic_save(root, "fixed");
    setup::edit(&p, |t| t.replace("SLEEPY", "IDLE"));
    wait_for("the fix", || run_page(root).contains("fixed"));
    wait_for("the problem to clear", || {
        !setup::read(root.join("mirror/README.md")).contains("SLEEPY")
    });
    // A delete: the run page goes.
    std::fs::remove_file(&p).unwrap();
    wait_for("the page to go", || {
        !root.join(mirror::run_page("run_w")).exists()
    });
    wait_for("a settled mirror", || {
        work_pages(root) == fresh(&store, root)
    });
}

#[test]
fn its_own_reads_and_writes_start_no_pass() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    let _store = watched_store(root);
    let w = start(root);
    let quiet = Duration::from_millis(800);
    // The first pass read every file and wrote every page: nothing follows.
    std::thread::sleep(quiet);
    assert_eq!(w.passes.load(Ordering::SeqCst), 1, "passes while idle");
    atomic_save(root, "one edit");
    wait_for("the run page", || run_page(root).contains("one edit"));
    std::thread::sleep(quiet);
    let after = w.passes.load(Ordering::SeqCst);
    assert!(after <= 3, "one save took {} passes", after - 1);
    std::thread::sleep(quiet);
    assert_eq!(w.passes.load(Ordering::SeqCst), after, "passes while idle");
}

#[test]
fn a_burst_of_5000_files_is_one_pass_and_ends_like_a_fresh_render() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    let store = watched_store(root);
    let _w = start(root);
    // What a checkout of thousands of memory files looks like.
    for i in 0..5000 {
        let id = format!("mem_{:026}", i);
        let item = serde_json::json!({
            "_schema_version": "2.1", "id": id, "type": if i % 2 == 0 { "fact" } else { "decision" },
            "scope": "global", "content": format!("item {i}"), "confidence": 0.5,
            "status": if i % 10 == 0 { "candidate" } else { "active" },
            "source_refs": [], "created_at": "2026-01-18T10:00:00Z", "updated_at": "2026-01-18T10:00:00Z"
        });
        let path = root.join(layout::memory_item("global", None, &id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, cairn::schema::to_yaml(&item)).unwrap();
    }
    wait_for("the burst", || {
        setup::read(root.join("mirror/queue.md")).contains("500 candidate(s)")
    });
    wait_for("a settled mirror", || {
        work_pages(root) == fresh(&store, root)
    });
    // Deleting them all (a checkout back) empties the memory pages.
    std::fs::remove_dir_all(root.join("memory")).unwrap();
    wait_for("the memory pages to go", || {
        !root.join("mirror/memory").exists()
    });
    wait_for("a settled mirror", || {
        work_pages(root) == fresh(&store, root)
    });
}

#[test]
fn once_does_one_pass_and_the_cli_reports_problems() {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    let _store = watched_store(root);
    let p = ws_path(root);
    setup::edit(&p, |t| t.replace("status: IDLE", "status: 7"));
    let out = assert_cmd::Command::cargo_bin("cairn")
        .unwrap()
        .args(["--store"])
        .arg(root)
        .args(["watch", "--once"])
        .env("CAIRN_NOW", setup::CLOCK)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("working_set.yaml field /status"),
        "{stderr}"
    );
    let readme = setup::read(root.join("mirror/README.md"));
    assert!(readme.contains("## Problems"));
    assert!(readme.contains("/status"));
}
