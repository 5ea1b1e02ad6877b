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
