//! Crash and race paths of the one transaction path, driven by failpoints.
//! Run with `--features failpoints` (the README's test command does).
#![cfg(feature = "failpoints")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn::working_set;
use cairn::{Store, StoreOptions};
use common::setup;
use serde_json::json;

// Failpoints are process-global: the tests here take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// A store at `dir` with one booted run; returns the run id too.
fn store(dir: &std::path::Path, bare: bool) -> (Store, String) {
    setup::booted(dir, bare, StoreOptions::default(), "race", None)
}

/// Commits a hand-made file on the branch with a separate git handle.
fn foreign_commit(dir: &std::path::Path) {
    let repo = git2::Repository::open(dir).unwrap();
    let head = repo.head().unwrap();
    let branch = head.name().unwrap().to_string();
    let parent = head.peel_to_commit().unwrap();
    let blob = repo.blob(b"written by someone else\n").unwrap();
    let mut tb = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
    tb.insert("NOTES.txt", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let sig = git2::Signature::now("Other", "other@example.com").unwrap();
    let id = repo
        .commit(None, &sig, &sig, "someone else", &tree, &[&parent])
        .unwrap();
    repo.reference(&branch, id, true, "foreign").unwrap();
}

#[test]
fn a_branch_that_moves_during_the_write_is_retried_and_the_write_succeeds() {
    let _g = SERIAL.lock().unwrap();
    for bare in [false, true] {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().to_path_buf();
        let (store, run) = store(&dir, bare);
        let fired = Arc::new(AtomicBool::new(false));
        let (f, d) = (fired.clone(), dir.clone());
        fail::cfg_callback("store::before_cas", move || {
            if !f.swap(true, Ordering::SeqCst) {
                foreign_commit(&d);
            }
        })
        .unwrap();
        let patch = json!({"expected_seq": 0, "set": {"status": "BUSY"}});
        let out = working_set::patch(&store, &run, &patch, "p", None).unwrap();
        fail::remove("store::before_cas");
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(out.working_set.update_seq, 1);
        // Our commit sits on top of the foreign one: nothing was lost.
        let repo = git2::Repository::open(&dir).unwrap();
        let tip = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(tip.id().to_string(), out.committed.event.commit);
        assert_eq!(
            tip.parent(0).unwrap().summary().unwrap(),
            Some("someone else")
        );
        let tree = tip.tree().unwrap();
        assert!(tree.get_path(std::path::Path::new("NOTES.txt")).is_ok());
        assert!(cairn::fsck::fsck(&store).unwrap().is_empty());
    }
}

#[test]
fn a_crash_between_ref_update_and_work_tree_update_is_repaired_by_the_next_write() {
    let _g = SERIAL.lock().unwrap();
    let tmp = tempfile::TempDir::new().unwrap();
    let (store, run) = store(tmp.path(), false);
    fail::cfg("store::after_cas", "panic").unwrap();
    let patch = json!({"expected_seq": 0, "set": {"status": "BUSY"}});
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        working_set::patch(&store, &run, &patch, "p", None)
    }));
    fail::remove("store::after_cas");
    assert!(crashed.is_err(), "the failpoint fired");
    // The commit landed (acknowledged by the ref), the work tree lags behind.
    let ws = working_set::show(&store, &run, None).unwrap();
    assert_eq!(ws.update_seq, 1);
    let path = tmp.path().join(cairn::layout::working_set(&run));
    assert!(setup::read(&path).contains("_update_seq: 0"));
    // The next write finishes the work-tree update and proceeds.
    let next = json!({"expected_seq": 1, "set": {"status": "DONE"}});
    working_set::patch(&store, &run, &next, "p2", None).unwrap();
    assert!(setup::read(&path).contains("_update_seq: 2"));
    let status = setup::git(tmp.path(), &["status", "--porcelain"]);
    assert_eq!(status, "");
}

#[test]
fn a_failed_commit_before_the_ref_moves_changes_nothing() {
    let _g = SERIAL.lock().unwrap();
    let tmp = tempfile::TempDir::new().unwrap();
    let (store, run) = store(tmp.path(), false);
    let before = store.tip().unwrap();
    fail::cfg("store::before_cas", "panic").unwrap();
    let patch = json!({"expected_seq": 0, "set": {"status": "BUSY"}});
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        working_set::patch(&store, &run, &patch, "p", None)
    }));
    fail::remove("store::before_cas");
    assert!(crashed.is_err());
    assert_eq!(store.tip().unwrap(), before);
    // The next write is not blocked and sees seq 0.
    working_set::patch(&store, &run, &patch, "p", None).unwrap();
}

// ---------------------------------------------------------------------------
// Every step of the write path has a named failpoint (`cairn::failpoint`).
// Each is fired once and persistently; before the ref moves the write is all
// or nothing, after it the write is committed and the next write finishes
// the work tree; in every case the next operation succeeds and the store is
// clean (`cairn fsck`, `git status`).

/// What a failure at a failpoint means for the write that hits it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Before the branch moves: the write fails and nothing changes.
    Before,
    /// After the branch moved: the write is committed (with a warning); the
    /// work tree, index or tags catch up on the next write.
    After,
    /// A crash point after the branch moved (drives `panic` only).
    CrashAfter,
    /// The search index: the query fails or rebuilds; the next one answers.
    Derived,
}

/// Each failpoint, with what its failure means. Must list exactly
/// `cairn::failpoint::FAILPOINTS`.
const KINDS: &[(&str, Kind)] = &[
    ("idempotency::cache_write", Kind::Before),
    ("mirror::derive", Kind::Before),
    ("pack::write", Kind::Before),
    ("pack::fsync_pack", Kind::Before),
    ("pack::fsync_idx", Kind::Before),
    ("pack::rename_pack", Kind::Before),
    ("pack::rename_idx", Kind::Before),
    ("pack::fsync_dir", Kind::Before),
    ("store::journal_write", Kind::Before),
    ("store::before_cas", Kind::Before),
    ("store::ref_cas", Kind::Before),
    ("store::after_cas", Kind::CrashAfter),
    ("store::tags", Kind::After),
    ("store::worktree_write", Kind::After),
    ("fs::atomic_fsync", Kind::After),
    ("fs::atomic_rename", Kind::After),
    ("store::index_write", Kind::After),
    ("git_index::rename", Kind::After),
    ("store::consolidate", Kind::After),
    ("search::index_commit", Kind::Derived),
];

/// Every `failpoint!("…")` and `fail_point!("…"` in `src/`.
fn failpoints_in_source() -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        if e.path().extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        for marker in ["failpoint!(\"", "fail_point!(\""] {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                let name = &rest[..rest.find('"').unwrap()];
                found.insert(name.to_string());
            }
        }
    }
    found
}

#[test]
fn the_failpoint_list_matches_the_source_and_this_test() {
    let listed: std::collections::BTreeSet<String> = cairn::failpoint::FAILPOINTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        listed.len(),
        cairn::failpoint::FAILPOINTS.len(),
        "a failpoint is listed twice"
    );
    assert_eq!(
        failpoints_in_source(),
        listed,
        "every failpoint in src/ is in cairn::failpoint::FAILPOINTS and nothing else is"
    );
    let driven: std::collections::BTreeSet<String> =
        KINDS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(driven, listed, "every failpoint has its kind in KINDS here");
}

/// HEAD, `git status`, the work tree's files, and the ledger's length.
type State = (
    Option<git2::Oid>,
    String,
    std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    usize,
);

fn state(store: &Store, dir: &std::path::Path) -> State {
    let status = setup::git(dir, &["status", "--porcelain", "--untracked-files=all"]);
    let mut files = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git" && e.file_name() != ".cairn")
    {
        let e = e.unwrap();
        if e.file_type().is_file() {
            files.insert(e.path().to_path_buf(), std::fs::read(e.path()).unwrap());
        }
    }
    let ledger = cairn::ledger::query(store, &Default::default())
        .unwrap()
        .len();
    (store.tip().unwrap(), status, files, ledger)
}

/// The operation a failpoint is driven with: write `n`, a ws patch under
/// an idempotency key, or a milestone (which tags) for `store::tags`. A
/// retry of write `n` sends the same request (the seq it first expected).
fn write(store: &Store, run: &str, name: &str, n: u64) -> cairn::Result<cairn::store::Committed> {
    static EXPECTED: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());
    let id = run.to_string();
    let seq = {
        let mut memo = EXPECTED.lock().unwrap();
        match memo.iter().find(|(s, m, _)| *s == id && *m == n) {
            Some((_, _, seq)) => *seq,
            None => {
                let seq = working_set::show(store, run, None)?.update_seq;
                memo.push((id, n, seq));
                seq
            }
        }
    };
    if name == "store::tags" {
        let req = cairn::episode::MilestoneRequest {
            reason: format!("checkpoint {n}"),
            ..Default::default()
        };
        return cairn::episode::milestone(store, run, &req, Some(&format!("m-{n}")))
            .map(|(_, c)| c);
    }
    let patch = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": format!("w{n}"), "content": format!("write {n}")}]}});
    working_set::patch(store, run, &patch, "p", Some(&format!("k-{n}"))).map(|o| o.committed)
}

/// The store is sound: cairn's fsck, git's fsck, and a work tree equal to HEAD.
fn assert_clean(store: &Store, dir: &std::path::Path, ctx: &str) {
    let findings = cairn::fsck::fsck(store).unwrap();
    assert!(findings.is_empty(), "{ctx}: fsck findings {findings:?}");
    let status = setup::git(dir, &["status", "--porcelain", "--untracked-files=all"]);
    assert_eq!(status, "", "{ctx}: the work tree differs from HEAD");
    let out = setup::git_output(dir, &["fsck", "--strict", "--no-dangling"]);
    assert!(
        out.status.success(),
        "{ctx}: git fsck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn drive(name: &str, kind: Kind, action: &str) {
    let ctx = format!("{name} ({action})");
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path();
    let (store, run) = setup::booted(dir, false, setup::opts(), "failpoints", None);
    // A first write, so the idempotency cache and the index exist.
    write(&store, &run, name, 0).unwrap();
    let persistent = !action.starts_with("1*");
    match kind {
        Kind::Before => {
            let before = state(&store, dir);
            fail::cfg(name, action).unwrap();
            let e = write(&store, &run, name, 1).expect_err(&ctx);
            assert!(
                format!("{e}").contains(name) || format!("{e:?}").contains(name),
                "{ctx}: {e:?}"
            );
            assert_eq!(
                state(&store, dir),
                before,
                "{ctx}: a failed write changed the store"
            );
            if persistent {
                let e = write(&store, &run, name, 1).expect_err(&ctx);
                assert!(format!("{e:?}").contains(name), "{ctx}: {e:?}");
                assert_eq!(
                    state(&store, dir),
                    before,
                    "{ctx}: a failed retry changed the store"
                );
            }
            fail::remove(name);
            // The same request under the same key now lands, once.
            let c = write(&store, &run, name, 1).unwrap();
            assert!(!c.replayed, "{ctx}: the failed write had landed");
            assert!(c.warnings.is_empty(), "{ctx}: {:?}", c.warnings);
            assert_eq!(store.tip().unwrap(), Some(c.commit));
            assert_eq!(state(&store, dir).3, before.3 + 1, "{ctx}: one event");
        }
        Kind::After => {
            let before = state(&store, dir);
            fail::cfg(name, action).unwrap();
            let c = write(&store, &run, name, 1).unwrap();
            assert_eq!(store.tip().unwrap(), Some(c.commit), "{ctx}: committed");
            assert!(
                c.warnings.iter().any(|w| w.contains(name)),
                "{ctx}: the failure is reported: {:?}",
                c.warnings
            );
            assert_eq!(state(&store, dir).3, before.3 + 1, "{ctx}: one event");
            if persistent {
                // Another write while the step still fails: committed with a
                // warning, or (when the work tree it must finish first
                // cannot be written) refused with nothing changed.
                let mid = state(&store, dir);
                match write(&store, &run, name, 2) {
                    Ok(c2) => {
                        assert_eq!(store.tip().unwrap(), Some(c2.commit), "{ctx}");
                        assert!(!c2.warnings.is_empty(), "{ctx}");
                    }
                    Err(e) => {
                        assert!(format!("{e:?}").contains(name), "{ctx}: {e:?}");
                        assert_eq!(
                            state(&store, dir),
                            mid,
                            "{ctx}: a refused write changed the store"
                        );
                    }
                }
            }
            fail::remove(name);
            let c = write(&store, &run, name, 3).unwrap();
            assert!(c.warnings.is_empty(), "{ctx}: {:?}", c.warnings);
        }
        Kind::CrashAfter => {
            let before = state(&store, dir);
            fail::cfg(name, action).unwrap();
            let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write(&store, &run, name, 1)
            }));
            assert!(crashed.is_err(), "{ctx}: the failpoint fired");
            // The ref moved before the crash: the write is in history.
            assert_eq!(state(&store, dir).3, before.3 + 1, "{ctx}: committed");
            if persistent {
                let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write(&store, &run, name, 2)
                }));
                assert!(again.is_err(), "{ctx}");
            }
            fail::remove(name);
            // The crashed write's retry replays it; the next write finishes the work tree.
            let c = write(&store, &run, name, 1).unwrap();
            assert!(c.replayed, "{ctx}: a retry after the crash wrote again");
            write(&store, &run, name, 3).unwrap();
        }
        Kind::Derived => {
            let q = cairn::ledger::LogQuery {
                run_id: Some(run.clone()),
                ..Default::default()
            };
            let ids = |events: Vec<cairn::ledger::Event>| -> Vec<String> {
                events.into_iter().map(|e| e.event_id).collect()
            };
            let truth = ids(cairn::ledger::query(&store, &q).unwrap());
            let before = state(&store, dir);
            fail::cfg(name, action).unwrap();
            let first = cairn::search::log(&store, &q, &|_, _| {});
            if persistent {
                let e = first.expect_err(&ctx);
                assert!(format!("{e:?}").contains(name), "{ctx}: {e:?}");
            } else if let Ok(events) = first {
                // Fired once, then rebuilt: the answer is still the truth.
                assert_eq!(ids(events), truth, "{ctx}");
            }
            assert_eq!(
                state(&store, dir),
                before,
                "{ctx}: a query changed the store"
            );
            fail::remove(name);
            assert_eq!(
                ids(cairn::search::log(&store, &q, &|_, _| {}).unwrap()),
                truth,
                "{ctx}"
            );
            // And after a write, the index follows.
            write(&store, &run, name, 1).unwrap();
            let truth = ids(cairn::ledger::query(&store, &q).unwrap());
            assert_eq!(
                ids(cairn::search::log(&store, &q, &|_, _| {}).unwrap()),
                truth,
                "{ctx}"
            );
        }
    }
    assert_clean(&store, dir, &ctx);
}

#[test]
fn every_failpoint_once_and_persistently_leaves_a_sound_store_and_the_next_write_succeeds() {
    let _g = SERIAL.lock().unwrap();
    for &(name, kind) in KINDS {
        for action in ["1*return", "return"] {
            let action = if kind == Kind::CrashAfter {
                if action == "return" {
                    "panic"
                } else {
                    "1*panic"
                }
            } else {
                action
            };
            drive(name, kind, action);
        }
    }
}
