//! The watcher behind `cairn watch`: keeps the mirror in the work tree
//! current while people edit canonical files by hand.
//!
//! File-system events are debounced here (every path an event names is
//! collected until the events pause), so an editor's atomic save (write a
//! temp file, rename it over the original) or a `git checkout` of thousands
//! of files arrives as one batch. A batch maps to
//! store paths; only canonical files and store templates count, so the
//! watcher's own writes under `mirror/` never trigger another pass. A batch
//! too large to be worth a delta, a directory move, an event the OS dropped
//! (notify asks for a rescan) or a watcher error all lead to a full rescan.
//! Events that queue up while a pass runs make one batch for the next pass.
//! After each pass the search index catches up with the branch tip.
//!
//! Nothing here prints: each pass is reported to a callback.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::error::{Error, Result};
use crate::mirror::{self, Problem, WorkTreeMirror};
use crate::store::Store;

/// How the watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after the last event before a batch is processed.
    pub debounce: Duration,
    /// A batch with more changed paths than this is handled by a full rescan.
    pub burst: usize,
    /// Bring the search index up to date after each pass.
    pub update_index: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(150),
            burst: 2000,
            update_index: true,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PassReport {
    /// Store paths that changed (empty for a rescan).
    pub changed: Vec<String>,
    /// Whether this pass rendered everything from scratch.
    pub rescan: bool,
    /// Mirror pages written or removed.
    pub pages: Vec<String>,
    /// Invalid files, whose last good version the pages keep showing.
    pub problems: Vec<Problem>,
    /// How long the pass took, in milliseconds.
    pub elapsed_ms: f64,
    /// An error of the search index catch-up, if any (the mirror pass succeeded).
    pub index_error: Option<String>,
}

/// One pass over the whole work tree (`cairn watch --once`).
pub fn once(store: &Store, opts: &WatchOptions) -> Result<PassReport> {
    first_pass(store, opts).map(|(_, report)| report)
}

/// The full first pass: every page rendered from the work tree.
fn first_pass(store: &Store, opts: &WatchOptions) -> Result<(WorkTreeMirror, PassReport)> {
    let started = Instant::now();
    let (m, pages) = WorkTreeMirror::start(store)?;
    let mut report = PassReport {
        rescan: true,
        pages,
        problems: m.problems(),
        ..Default::default()
    };
    finish_pass(store, opts, &mut report, started);
    Ok((m, report))
}

fn finish_pass(store: &Store, opts: &WatchOptions, report: &mut PassReport, started: Instant) {
    if opts.update_index {
        if let Err(e) = crate::search::open(store, &|_, _| {}) {
            report.index_error = Some(e.to_string());
        }
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
}

/// The store path of an absolute event path, if it is inside the work tree.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let s = rel.to_str()?.replace('\\', "/");
    (!s.is_empty()).then_some(s)
}

/// What a batch of events asks for.
enum Batch {
    Paths(BTreeSet<String>),
    Rescan,
}

impl Batch {
    /// Both batches as one.
    fn merge(self, other: Batch) -> Batch {
        match (self, other) {
            (Batch::Paths(mut a), Batch::Paths(b)) => {
                a.extend(b);
                Batch::Paths(a)
            }
            _ => Batch::Rescan,
        }
    }

    /// A batch with more paths than `burst` becomes a rescan.
    fn capped(self, burst: usize) -> Batch {
        match self {
            Batch::Paths(p) if p.len() > burst => Batch::Rescan,
            other => other,
        }
    }
}

/// What one raw event asks for. Every path an event names counts, whatever
/// the event says happened to it: the pass reads the file again anyway.
fn classify(root: &Path, event: notify::Result<notify::Event>) -> Batch {
    let ev = match event {
        Ok(ev) => ev,
        Err(_) => return Batch::Rescan,
    };
    if ev.need_rescan() {
        return Batch::Rescan;
    }
    let mut paths = BTreeSet::new();
    if ev.kind.is_access() {
        // Reading a file (the watcher's own passes read every file they
        // render) is no change; counting it would loop forever.
        return Batch::Paths(paths);
    }
    for p in &ev.paths {
        let Some(rel) = relative(root, p) else {
            continue;
        };
        let top = rel.split('/').next().unwrap_or_default();
        if matches!(top, ".git" | ".cairn" | "mirror") {
            continue;
        }
        if mirror::is_watched(&rel) || rel == crate::layout::CONFIG {
            paths.insert(rel);
        } else if matches!(top, "runs" | "memory" | "state" | "registry" | "templates")
            && !rel.ends_with(".yaml")
            && !rel.ends_with(".j2")
            && !rel
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with('.') || n.ends_with('~') || n.contains(".tmp"))
        {
            // A folder appeared, vanished or moved: its files are unknown.
            return Batch::Rescan;
        }
    }
    Batch::Paths(paths)
}

/// The longest a batch waits for quiet: a stream of changes that never
/// pauses for `debounce` (a long checkout) still gets a pass this often.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);

/// Watches the work tree until `stop` is set, reporting every pass to `on_pass`.
///
/// The first pass renders everything (like `--once`); later passes follow
/// file changes. Errors of a pass are reported and the watcher goes on; only
/// a failure to watch at all ends it.
pub fn watch(
    store: &Store,
    opts: &WatchOptions,
    stop: &AtomicBool,
    on_pass: &mut dyn FnMut(std::result::Result<&PassReport, &Error>),
) -> Result<()> {
    let root: PathBuf = store
        .workdir()
        .ok_or_else(|| Error::Policy {
            rule: "WORK_TREE_REQUIRED",
            message: "the watcher needs a work tree; this store is bare".into(),
        })?
        .to_path_buf();
    // Raw events, debounced here: a batch collects every path named until
    // no event came for `opts.debounce`. (notify-debouncer-full merged a
    // rename over a file followed by its removal into nothing at all, so
    // an editor's save followed by a delete went unseen.)
    let (tx, rx) = mpsc::channel();
    let watch_err = |e: notify::Error| Error::Io {
        op: "watch",
        path: root.clone(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut watcher = notify::recommended_watcher(tx).map_err(watch_err)?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(watch_err)?;
    let (mut engine, report) = first_pass(store, opts)?;
    on_pass(Ok(&report));
    while !stop.load(Ordering::SeqCst) {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = classify(&root, first);
        let opened = Instant::now();
        while opened.elapsed() < MAX_BATCH_WAIT {
            match rx.recv_timeout(opts.debounce) {
                Ok(ev) => batch = batch.merge(classify(&root, ev)),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcome = match batch.capped(opts.burst) {
            Batch::Paths(paths) if paths.is_empty() => continue,
            Batch::Paths(paths) => engine.update(store, &paths).map(|pages| PassReport {
                changed: paths.into_iter().collect(),
                pages,
                ..Default::default()
            }),
            Batch::Rescan => engine.rescan(store).map(|pages| PassReport {
                rescan: true,
                pages,
                ..Default::default()
            }),
        };
        match outcome {
            Ok(mut report) => {
                report.problems = engine.problems();
                finish_pass(store, opts, &mut report, started);
                on_pass(Ok(&report));
            }
            Err(e) => on_pass(Err(&e)),
        }
    }
    Ok(())
}
