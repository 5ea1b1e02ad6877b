//! Watcher torture (issue 22, item 8): the `cairn watch` process under a
//! burst of new memory files with editors' atomic saves (temp file, rename)
//! mixed in, then an inotify queue overflow: the watcher is stopped with
//! SIGSTOP, more events than `/proc/sys/fs/inotify/max_queued_events` holds
//! are made on files it ignores, then new files, saves and deletes whose
//! events the kernel drops, and the watcher is continued; it must see the
//! overflow and rescan. After each, the mirror folder must settle within
//! the limit after the last file change and then equal, byte for byte, a
//! full render of the same work tree from scratch: `cairn watch --once` in a
//! copy of the store whose `mirror/` was deleted (`cairn mirror` renders the
//! committed tip, which the hand-written files are not in).
//!
//! Between them, a backlog phase: the watcher stopped while files are
//! written, saved and deleted (fewer events than the queue holds).
//!
//! Settings: `CAIRN_WATCH_BURST` files in the burst (default 3000; 50000 for
//! the figure), `CAIRN_WATCH_SETTLE_MS` the limit (default 5000, for
//! CI on a shared, loaded machine; the issue asks for 1000). The overflow
//! phase makes enough events to overflow the queue whatever the setting.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::layout;
use common::setup::{self, opts};

const RUN: &str = "run_torture";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn cairn(root: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    common::hermetic(&mut c, home);
    c.arg("--store")
        .arg(root)
        .env("CAIRN_NOW", setup::CLOCK)
        .stdin(Stdio::null());
    c
}

/// The running `cairn watch`, killed when dropped.
struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Watcher {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sends a signal to our own child, which has not been reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A memory item file's text.
fn item(id: &str, content: &str, status: &str) -> String {
    cairn::schema::to_yaml(&serde_json::json!({
        "_schema_version": "2.1", "id": id, "type": "fact",
        "scope": "global", "content": content, "confidence": 0.5,
        "status": status, "source_refs": [],
        "created_at": "2026-01-18T10:00:00Z", "updated_at": "2026-01-18T10:00:00Z"
    }))
}

fn item_path(root: &Path, i: usize) -> PathBuf {
    root.join(layout::memory_item("global", None, &format!("mem_{i:026}")))
}

/// Writes memory item `i` in place (create or overwrite).
fn write_item(root: &Path, i: usize, content: &str) {
    let path = item_path(root, i);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = if i.is_multiple_of(10) {
        "candidate"
    } else {
        "active"
    };
    std::fs::write(&path, item(&format!("mem_{i:026}"), content, status)).unwrap();
}

/// Saves `text` to `path` the way editors do: a temp file beside it, renamed over it.
fn atomic_save(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Sets the working set's objective by an atomic save.
fn save_objective(root: &Path, objective: &str) {
    let p = root.join(layout::working_set(RUN));
    let text = setup::read(&p);
    let start = text.find("objective:").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    atomic_save(
        &p,
        &format!("{}objective: {objective}{}", &text[..start], &text[end..]),
    );
}

/// What the edits of a stopped watcher's phase did.
struct Edits {
    written: usize,
    saved: usize,
    deleted: usize,
}

/// New files `from..from + new`, then atomic saves of up to 300 earlier
/// items and deletes of up to 200 (both picked by `round`), and the
/// objective saved.
fn edits(root: &Path, burst: usize, from: usize, new: usize, round: usize) -> Edits {
    for i in from..from + new {
        write_item(root, i, &format!("late item {i} {round}"));
    }
    let mut saved = 0;
    for j in (round..burst).step_by(13).take(300) {
        atomic_save(
            &item_path(root, j),
            &item(
                &format!("mem_{j:026}"),
                &format!("stopped {j} {round}"),
                "active",
            ),
        );
        saved += 1;
    }
    let mut deleted = 0;
    for j in (round + 5..burst).step_by(17).take(200) {
        if std::fs::remove_file(item_path(root, j)).is_ok() {
            deleted += 1;
        }
    }
    save_objective(root, &format!("while stopped {round}"));
    Edits {
        written: new,
        saved,
        deleted,
    }
}

/// What each mirror file looks like from outside (size, mtime, inode):
/// cheap to poll, and a page rewritten by the watcher changes it.
fn signature(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, u64)> {
    setup::files_under(&root.join("mirror"))
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, (m.len(), m.mtime(), m.mtime_nsec(), m.ino())))
        })
        .collect()
}

/// The CPU time the process `pid` (all its threads) has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses:
    // utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum()
}

/// Polls the mirror folder from `end` (the last file change) until it has
/// not changed for `quiet` and the watcher has been idle (at most 20 ms of
/// CPU) for the last second, so a long pass that has not written yet is not
/// taken for the end; returns how long after `end` the mirror last changed.
fn settle(root: &Path, pid: u32, end: Instant, quiet: Duration) -> Duration {
    let mut last = signature(root);
    let mut changed = end;
    let mut cpu: std::collections::VecDeque<(Instant, u64)> = Default::default();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = signature(root);
        let ticks = cpu_ticks(pid);
        cpu.push_back((Instant::now(), ticks));
        while cpu.len() > 1 && cpu[1].0.elapsed() >= Duration::from_secs(1) {
            cpu.pop_front();
        }
        let idle = cpu[0].0.elapsed() >= Duration::from_millis(900) && ticks - cpu[0].1 <= 2;
        if now != last {
            last = now;
            changed = Instant::now();
        } else if changed.elapsed() >= quiet && idle {
            return changed.saturating_duration_since(end);
        }
        assert!(
            end.elapsed() < Duration::from_secs(600),
            "the mirror kept changing for 10 minutes"
        );
    }
}

/// The mirror folder's files and bytes.
fn pages(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mirror = root.join("mirror");
    setup::files_under(&mirror)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&mirror)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A full render from scratch of `root`'s work tree: `cairn watch --once`
/// in a copy without `mirror/`.
fn fresh_render(root: &Path, home: &Path, scratch: &Path) -> BTreeMap<String, Vec<u8>> {
    let _ = std::fs::remove_dir_all(scratch);
    let out = Command::new("cp")
        .arg("-a")
        .arg(root)
        .arg(scratch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(scratch.join("mirror")).unwrap();
    let out = cairn(scratch, home)
        .args(["watch", "--once"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "watch --once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pages(scratch)
}

/// Asserts that the watcher's mirror equals a fresh render, naming the
/// pages that differ.
fn assert_same(phase: &str, root: &Path, home: &Path, scratch: &Path, w: &Watcher) {
    let got = pages(root);
    let want = fresh_render(root, home, scratch);
    if got != want {
        let diff: std::collections::BTreeSet<&String> = got
            .keys()
            .chain(want.keys())
            .filter(|k| got.get(*k) != want.get(*k))
            .collect();
        // The first differing lines of a few pages.
        let mut lines = String::new();
        for page in diff.iter().take(4) {
            let text = |m: &BTreeMap<String, Vec<u8>>| {
                String::from_utf8_lossy(m.get(*page).map_or(&[][..], |b| b)).into_owned()
            };
            let (g, f) = (text(&got), text(&want));
            let at = g.lines().zip(f.lines()).position(|(a, b)| a != b);
            let n = at.unwrap_or(g.lines().count().min(f.lines().count()));
            lines.push_str(&format!(
                "{page} line {}:\n  watcher: {:?}\n  fresh:   {:?}\n",
                n + 1,
                g.lines().nth(n).unwrap_or("<end>"),
                f.lines().nth(n).unwrap_or("<end>")
            ));
        }
        panic!(
            "{phase}: the watcher's mirror differs from a fresh render in {} page(s): {diff:?}\n{lines}watcher log:\n{}",
            diff.len(),
            w.log()
        );
    }
}

#[test]
fn bursts_atomic_saves_and_queue_overflow_end_like_a_fresh_render() {
    let burst = env_u64("CAIRN_WATCH_BURST", 3000) as usize;
    let limit = Duration::from_millis(env_u64("CAIRN_WATCH_SETTLE_MS", 5000));
    // Settled: no page changed for this long, and the watcher idle.
    let quiet = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let (root, home, scratch) = (base.join("store"), base.join("home"), base.join("fresh"));
    std::fs::create_dir_all(&home).unwrap();
    drop(setup::booted(&root, false, opts(), "torture", Some(RUN)));

    let log = base.join("watch.log");
    let child = cairn(&root, &home)
        .args(["watch", "--debounce-ms", "100"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let w = Watcher { child, log };
    // Live once an edit shows on the run page.
    save_objective(&root, "watcher is live");
    let page = root.join(cairn::mirror::run_page(RUN));
    let started = Instant::now();
    while !std::fs::read_to_string(&page).is_ok_and(|t| t.contains("watcher is live")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the watcher did not start:\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // 1. The burst: new files, with atomic saves of earlier ones and of the
    // working set every 50 files.
    let t0 = Instant::now();
    for i in 0..burst {
        write_item(&root, i, &format!("item {i}"));
        if i % 50 == 49 {
            let j = i / 2;
            atomic_save(
                &item_path(&root, j),
                &item(&format!("mem_{j:026}"), &format!("saved {i}"), "candidate"),
            );
            save_objective(&root, &format!("objective after {i}"));
        }
    }
    let end = Instant::now();
    let written = end - t0;
    let took = settle(&root, w.child.id(), end, quiet);
    assert_same("burst", &root, &home, &scratch, &w);
    eprintln!(
        "watch torture: burst of {burst} files (+{} atomic saves) written in {:.2}s; mirror settled {} ms after the last write",
        2 * (burst / 50),
        written.as_secs_f64(),
        took.as_millis()
    );
    assert!(
        took <= limit,
        "burst: the mirror settled {} ms after the last write (limit {} ms)\n{}",
        took.as_millis(),
        limit.as_millis(),
        w.log()
    );

    // 2. A backlog: the watcher is stopped while files are written, saved
    // and deleted (fewer events than the queue holds), then continued.
    w.signal(libc::SIGSTOP);
    let e = edits(&root, burst, burst, 600, 1);
    w.signal(libc::SIGCONT);
    let end = Instant::now();
    let took = settle(&root, w.child.id(), end, quiet);
    assert_same("backlog", &root, &home, &scratch, &w);
    eprintln!(
        "watch torture: {} files written, {} saved, {} deleted while stopped; mirror settled {} ms after SIGCONT",
        e.written,
        e.saved,
        e.deleted,
        took.as_millis()
    );
    assert!(
        took <= limit,
        "backlog: the mirror settled {} ms after SIGCONT (limit {} ms)\n{}",
        took.as_millis(),
        limit.as_millis(),
        w.log()
    );

    // 3. Queue overflow: the watcher is stopped, the kernel's queue is
    // filled past its limit with events the watcher ignores (appends to two
    // scratch files, alternating so the kernel cannot merge them), and then
    // the real edits happen, whose events the kernel drops: only the
    // rescan that the overflow asks for can find them.
    let max_queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    // The scratch folder is made first, so the watcher watches it.
    let scratch_dir = root.join("scratch");
    std::fs::create_dir_all(&scratch_dir).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let log_before = w.log().len();
    w.signal(libc::SIGSTOP);
    let mut noise: Vec<std::fs::File> = ["a.txt", "b.txt"]
        .iter()
        .map(|n| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(scratch_dir.join(n))
                .unwrap()
        })
        .collect();
    for k in 0..max_queued + 1000 {
        use std::io::Write;
        noise[k % 2].write_all(b"x").unwrap();
    }
    let e = edits(&root, burst, burst + 1000, 600, 2);
    w.signal(libc::SIGCONT);
    let end = Instant::now();
    let took = settle(&root, w.child.id(), end, quiet);
    assert_same("overflow", &root, &home, &scratch, &w);
    assert!(
        w.log()[log_before..].contains("(full pass)"),
        "overflow: no full pass after SIGCONT\n{}",
        w.log()
    );
    eprintln!(
        "watch torture: {} events queued past the limit of {max_queued}, then {} files written, {} saved, {} deleted while stopped; mirror settled {} ms after SIGCONT (after a full pass)",
        max_queued + 1000,
        e.written,
        e.saved,
        e.deleted,
        took.as_millis()
    );
    assert!(
        took <= limit,
        "overflow: the mirror settled {} ms after SIGCONT (limit {} ms)\n{}",
        took.as_millis(),
        limit.as_millis(),
        w.log()
    );
}
