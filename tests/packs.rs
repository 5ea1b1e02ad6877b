//! How writes store their objects: one pack per write, merged as they pile
//! up, never loose objects; git reads every pack cairn writes.

mod common;

use std::fs;
use std::path::Path;

use cairn::ledger::{self, LogQuery};

/// Files in the loose-object fan-out folders (`objects/00` … `objects/ff`).
fn loose_objects(git_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in fs::read_dir(git_dir.join("objects")).unwrap().flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name.len() == 2 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            for f in fs::read_dir(dir.path()).unwrap().flatten() {
                found.push(format!("{name}/{}", f.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn pack_files(git_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(git_dir.join("objects/pack"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn writes_leave_a_few_packs_and_no_loose_objects() {
    let dir = tempfile::TempDir::new().unwrap();
    let home = tempfile::TempDir::new().unwrap();
    let store = common::workers::init_store_with_run(dir.path(), true, "run_packs");
    let writes = 150;
    for i in 0..writes {
        common::workers::patch_until_landed(&store, "run_packs", &format!("item{i}"), "pack test");
    }
    assert_eq!(loose_objects(dir.path()), Vec::<String>::new());
    let files = pack_files(dir.path());
    let idx = files.iter().filter(|f| f.ends_with(".idx")).count();
    let packs = files.iter().filter(|f| f.ends_with(".pack")).count();
    assert_eq!(idx, packs, "every pack has its index: {files:?}");
    // Merged geometrically: at most the 8 newest small packs beside a
    // doubling series of merged ones (log2 of ~2,000 objects is 11).
    assert!(
        idx <= 8 + 12,
        "{idx} packs after {writes} writes: {files:?}"
    );
    assert!(
        !files.iter().any(|f| f.starts_with("tmp_")),
        "no temp files: {files:?}"
    );
    common::workers::assert_git_fsck_clean(dir.path(), home.path(), "after the writes");
    // Every write is readable from a fresh handle.
    let reopened = cairn::Store::open(dir.path(), Default::default()).unwrap();
    let events = ledger::query(&reopened, &LogQuery::default()).unwrap();
    assert_eq!(events.len(), writes + 2, "init + boot + the writes");
    let ws = cairn::working_set::show(&reopened, "run_packs", None).unwrap();
    assert_eq!(ws.update_seq, writes as u64);
}

#[test]
fn a_killed_writers_temp_pack_is_cleared_by_the_next_write() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = common::workers::init_store_with_run(dir.path(), true, "run_packs");
    let stale = dir.path().join("objects/pack/tmp_pack_cairn_1_01DEAD");
    fs::write(&stale, b"PACK half written").unwrap();
    common::workers::patch_until_landed(&store, "run_packs", "after-crash", "temp pack test");
    assert!(!stale.exists(), "the stale temp pack is gone");
}

#[test]
fn trees_are_in_git_order_and_deletes_prune_empty_folders() {
    use cairn::store::{Changes, Mutation};
    let dir = tempfile::TempDir::new().unwrap();
    let home = tempfile::TempDir::new().unwrap();
    let store = common::workers::init_store_with_run(dir.path(), true, "run_packs");
    // '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f), '0' after it: a
    // folder `a` sorts as `a/`, between them.
    let paths = [
        "notes/a-b",
        "notes/a/x",
        "notes/a.c",
        "notes/a0",
        "notes/a/y/z",
    ];
    let write = |changes: Changes| {
        store
            .transact(None, |_| {
                Ok(Mutation {
                    changes: changes.clone(),
                    event: ledger::EventDraft::new(ledger::EventType::ManualEdit, "notes"),
                    tags: Vec::new(),
                })
            })
            .unwrap()
    };
    write(
        paths
            .iter()
            .map(|p| (p.to_string(), Some(format!("{p}\n").into_bytes())))
            .collect(),
    );
    common::workers::assert_git_fsck_clean(dir.path(), home.path(), "after adding");
    let listed = common::workers::git(
        dir.path(),
        home.path(),
        &["ls-tree", "-r", "--name-only", "main", "notes"],
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut want: Vec<&str> = paths.to_vec();
    // A recursive listing in tree order is plain byte order of the paths.
    want.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
    write(
        ["notes/a/x", "notes/a/y/z"]
            .iter()
            .map(|p| (p.to_string(), None))
            .collect(),
    );
    common::workers::assert_git_fsck_clean(dir.path(), home.path(), "after deleting");
    let listed = common::workers::git(
        dir.path(),
        home.path(),
        &["ls-tree", "-r", "-t", "--name-only", "main", "notes"],
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["notes", "notes/a-b", "notes/a.c", "notes/a0"],
        "the emptied folders are gone"
    );
}

#[test]
fn a_reader_opened_before_packs_are_merged_still_reads_everything() {
    let dir = tempfile::TempDir::new().unwrap();
    let writer = common::workers::init_store_with_run(dir.path(), true, "run_packs");
    for i in 0..5 {
        common::workers::patch_until_landed(&writer, "run_packs", &format!("early{i}"), "before");
    }
    // A second handle (as another process would hold), which has read from
    // the packs that exist now.
    let reader = cairn::Store::open(dir.path(), Default::default()).unwrap();
    let before = cairn::working_set::show(&reader, "run_packs", None).unwrap();
    assert_eq!(before.update_seq, 5);
    let packs_before = pack_files(dir.path());
    for i in 0..40 {
        common::workers::patch_until_landed(&writer, "run_packs", &format!("late{i}"), "after");
    }
    let gone = packs_before
        .iter()
        .filter(|f| f.ends_with(".pack"))
        .filter(|f| !dir.path().join("objects/pack").join(f).exists())
        .count();
    assert!(
        gone > 0,
        "the writes merged some of the reader's packs away"
    );
    // The reader sees the new tip and every old state, whose objects now
    // live in merged packs.
    let after = cairn::working_set::show(&reader, "run_packs", None).unwrap();
    assert_eq!(after.update_seq, 45);
    for seq in [1u64, 5, 20] {
        let at = cairn::working_set::At::Seq(seq);
        let ws = cairn::working_set::show(&reader, "run_packs", Some(&at)).unwrap();
        assert_eq!(ws.update_seq, seq);
    }
    let events = ledger::query(&reader, &LogQuery::default()).unwrap();
    assert_eq!(events.len(), 47);
}

#[test]
fn packs_git_made_with_deltas_are_merged_too() {
    let dir = tempfile::TempDir::new().unwrap();
    let home = tempfile::TempDir::new().unwrap();
    let store = common::workers::init_store_with_run(dir.path(), true, "run_packs");
    for i in 0..10 {
        common::workers::patch_until_landed(&store, "run_packs", &format!("a{i}"), "before repack");
    }
    // git's own repack: one pack, successive working sets stored as deltas.
    let out = common::workers::git(dir.path(), home.path(), &["repack", "-a", "-d", "-f", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let git_pack: Vec<String> = pack_files(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".pack"))
        .collect();
    assert_eq!(git_pack.len(), 1);
    let idx = dir
        .path()
        .join("objects/pack")
        .join(git_pack[0].replace(".pack", ".idx"));
    let verify = common::workers::git(
        dir.path(),
        home.path(),
        &["verify-pack", "-v", idx.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("chain length"),
        "git stored some objects as deltas"
    );
    for i in 0..60 {
        common::workers::patch_until_landed(&store, "run_packs", &format!("b{i}"), "after repack");
    }
    assert!(
        !dir.path().join("objects/pack").join(&git_pack[0]).exists(),
        "git's pack was merged"
    );
    common::workers::assert_git_fsck_clean(dir.path(), home.path(), "after merging git's pack");
    let reopened = cairn::Store::open(dir.path(), Default::default()).unwrap();
    for seq in [1u64, 10, 70] {
        let at = cairn::working_set::At::Seq(seq);
        let ws = cairn::working_set::show(&reopened, "run_packs", Some(&at)).unwrap();
        assert_eq!(ws.update_seq, seq);
    }
}
