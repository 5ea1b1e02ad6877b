//! Watcher torture (issue 22, item 8): `cairn watch` (the real binary, its
//! default 150 ms debounce) over a work-tree store while
//!
//! 1. a burst of new memory files lands, mixed with editors' atomic saves
//!    (temp file, rename over the original) of the working set and of items
//!    written earlier in the burst, and deletes;
//! 2. the watcher is stopped (SIGSTOP) while every item is saved again by
//!    rename and a tenth deleted: far more events than the kernel's inotify
//!    queue holds (`max_queued_events`, 16,384 by default), so the queue
//!    overflows; then it is continued (SIGCONT).
//!
//! After each burst ends, the watcher's last pass must end within the
//! deadline (default 1 s) and the work tree's `mirror/` must then equal a
//! full render of the work tree from scratch, page for page.
//!
//! `CAIRN_WATCH_FILES` (default 5,000) sets the burst's size (50,000 for the
//! long run); `CAIRN_WATCH_DEADLINE_MS` the deadline.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::mirror::{self, WorkTreeSource};
use cairn::{layout, Store};
use common::setup::{self, opts};

const RUN: &str = "run_w";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

/// The work tree's pages.
fn work_pages(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for path in setup::files_under(&root.join("mirror")) {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
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

fn item_id(i: usize) -> String {
    format!("mem_{i:026}")
}

/// The YAML of memory item `i`, version `v`.
fn item(i: usize, v: usize) -> String {
    let item = serde_json::json!({
        "_schema_version": "2.1", "id": item_id(i), "type": if i % 2 == 0 { "fact" } else { "decision" },
        "scope": "global", "content": format!("item {i} version {v}"), "confidence": 0.5,
        "status": if i % 10 == 0 { "candidate" } else { "active" },
        "source_refs": [], "created_at": "2026-01-18T10:00:00Z", "updated_at": "2026-01-18T10:00:00Z"
    });
    cairn::schema::to_yaml(&item)
}

fn item_path(root: &Path, i: usize) -> std::path::PathBuf {
    root.join(layout::memory_item("global", None, &item_id(i)))
}

/// An editor's save: a temp file beside the target, renamed over it.
fn atomic_save(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `cairn watch` on `root`, with the time of each pass line it prints.
struct Watcher {
    child: Child,
    passes: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Watcher {
    fn start(root: &Path, home: &Path) -> Watcher {
        let mut cmd = common::cli::cairn(home);
        let mut child = cmd
            .env("CAIRN_NOW", setup::CLOCK)
            .arg("--store")
            .arg(root)
            .arg("watch")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let passes = Arc::new(Mutex::new(Vec::new()));
        let seen = passes.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                seen.lock().unwrap().push((Instant::now(), line));
            }
        });
        let w = Watcher { child, passes };
        w.wait_quiet(Duration::from_millis(500), Duration::from_secs(60));
        w
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on the pid of a child we have not reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    /// Waits until no pass line came for `quiet` (at most `limit`); returns
    /// the time of the last line.
    fn wait_quiet(&self, quiet: Duration, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        loop {
            let last = self.passes.lock().unwrap().last().map(|(t, _)| *t);
            let since = last.map_or(start, |t| t.max(start));
            if since.elapsed() >= quiet {
                return last;
            }
            assert!(start.elapsed() < limit, "the watcher never went quiet");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pass lines printed after `t`.
    fn lines_after(&self, t: Instant) -> Vec<String> {
        self.passes
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at > t)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Waits for the watcher to settle after a burst that ended at `end`; asserts
/// the mirror equals a fresh render and the last pass ended in time.
fn settled(w: &Watcher, store: &Store, root: &Path, end: Instant, what: &str) -> Duration {
    let deadline = Duration::from_millis(env_or("CAIRN_WATCH_DEADLINE_MS", 1000));
    // Quiet for well over the debounce: the watcher has nothing left to do.
    let last = w.wait_quiet(Duration::from_secs(3), Duration::from_secs(600));
    let lines = w.lines_after(end);
    let latency = last
        .filter(|t| *t > end)
        .map_or(Duration::ZERO, |t| t - end);
    assert!(
        !lines.iter().any(|l| l.starts_with("error")),
        "{what}: the watcher reported errors: {lines:?}"
    );
    let pages = work_pages(root);
    let expected = fresh(store, root);
    let differ: Vec<&String> = expected
        .keys()
        .chain(pages.keys())
        .filter(|k| pages.get(*k) != expected.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} page(s) differ from a fresh render, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
    eprintln!(
        "{what}: settled {} ms after the burst ended; passes: {lines:?}",
        latency.as_millis()
    );
    assert!(
        latency <= deadline,
        "{what}: the last pass ended {} ms after the burst (deadline {} ms)",
        latency.as_millis(),
        deadline.as_millis()
    );
    latency
}

#[test]
fn bursts_atomic_saves_and_a_queue_overflow_end_like_a_fresh_render() {
    let n = env_or("CAIRN_WATCH_FILES", 5000) as usize;
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().canonicalize().unwrap().join("store");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let store = setup::booted(&root, false, opts(), "watch me", Some(RUN)).0;
    let ws = root.join(layout::working_set(RUN));
    let ws_text = setup::read(&ws);
    let w = Watcher::start(&root, &home);

    // 1. The live burst: new files, atomic saves among them, deletes.
    let started = Instant::now();
    for i in 0..n {
        let path = item_path(&root, i);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, item(i, 0)).unwrap();
        if i % 50 == 49 {
            atomic_save(&item_path(&root, i - 25), &item(i - 25, 1));
            atomic_save(
                &ws,
                &ws_text.replacen(
                    "objective: watch me",
                    &format!("objective: saved at {i}"),
                    1,
                ),
            );
        }
        if i % 100 == 99 {
            std::fs::remove_file(item_path(&root, i - 60)).unwrap();
        }
    }
    let end = Instant::now();
    eprintln!(
        "burst of {n} files written in {} ms",
        (end - started).as_millis()
    );
    settled(&w, &store, &root, end, &format!("live burst of {n} files"));

    // 2. The watcher stopped while every item is saved again and a tenth
    //    deleted: the inotify queue overflows.
    w.signal(libc::SIGSTOP);
    let mut events = 0usize;
    for i in 0..n {
        let path = item_path(&root, i);
        if !path.exists() {
            continue;
        }
        if i % 10 == 3 {
            std::fs::remove_file(&path).unwrap();
            events += 1;
        } else {
            atomic_save(&path, &item(i, 2));
            // create, modify, close, moved-from, moved-to
            events += 5;
        }
    }
    atomic_save(
        &ws,
        &ws_text.replacen("objective: watch me", "objective: after the overflow", 1),
    );
    let queue: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    eprintln!("{events} events while stopped; the kernel queue holds {queue}");
    assert!(
        events > queue,
        "{events} events do not overflow a queue of {queue}: raise CAIRN_WATCH_FILES"
    );
    w.signal(libc::SIGCONT);
    let end = Instant::now();
    settled(&w, &store, &root, end, &format!("{n} saves while stopped"));
    assert!(std::fs::read_to_string(root.join(mirror::run_page(RUN)))
        .unwrap()
        .contains("after the overflow"));
}
