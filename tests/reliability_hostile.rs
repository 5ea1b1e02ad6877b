//! Hostile stores: commits from a remote (or made behind cairn's back)
//! holding paths that leave the store (`..`), paths into git's folder
//! (`.git/hooks/…`, `.GIT`), symlinks, and a work tree whose folder was
//! replaced by a symlink pointing out of the store. cairn reads and writes
//! nothing outside the store, runs no code, refuses with a clear error
//! naming the path, and `cairn fsck` names each problem.

mod common;

use std::path::Path;

use common::cli::Env;
use common::net::Net;
use git2::{ObjectType, Oid, Repository};

/// One raw tree entry: mode, name, id.
type Entry = (u32, Vec<u8>, Oid);

/// Writes a tree object from raw entries, bypassing libgit2's name checks
/// (as a hostile client would), sorted the way git sorts tree entries.
fn raw_tree(repo: &Repository, mut entries: Vec<Entry>) -> Oid {
    let key = |e: &Entry| {
        let mut k = e.1.clone();
        if e.0 == 0o040000 {
            k.push(b'/');
        }
        k
    };
    entries.sort_by_key(key);
    let mut bytes = Vec::new();
    for (mode, name, id) in entries {
        bytes.extend_from_slice(format!("{mode:o} ").as_bytes());
        bytes.extend_from_slice(&name);
        bytes.push(0);
        bytes.extend_from_slice(id.as_bytes());
    }
    repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
}

/// The tip tree's entries of `branch`, raw.
fn tip_entries<'r>(repo: &'r Repository, branch: &str) -> (git2::Commit<'r>, Vec<Entry>) {
    let commit = repo
        .find_reference(branch)
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let entries = commit
        .tree()
        .unwrap()
        .iter()
        .map(|e| (e.filemode() as u32, e.name_bytes().to_vec(), e.id()))
        .collect();
    (commit, entries)
}

/// A tree holding `path` (slash-separated raw names) as a blob with `mode`.
fn nested(repo: &Repository, path: &[&[u8]], blob: Oid, mode: u32) -> (Vec<u8>, Oid, u32) {
    let (first, rest) = path.split_first().unwrap();
    if rest.is_empty() {
        return (first.to_vec(), blob, mode);
    }
    let (name, id, m) = nested(repo, rest, blob, mode);
    let tree = raw_tree(repo, vec![(m, name, id)]);
    (first.to_vec(), tree, 0o040000)
}

/// Commits, on `branch` of `repo`, the tip tree plus `path` holding
/// `content` (mode `mode`), without any of git's or cairn's checks.
fn hostile_commit(
    repo: &Repository,
    branch: &str,
    path: &[&[u8]],
    content: &[u8],
    mode: u32,
) -> Oid {
    let (parent, mut entries) = tip_entries(repo, branch);
    let blob = repo.blob(content).unwrap();
    let (name, id, m) = nested(repo, path, blob, mode);
    entries.retain(|e| e.1 != name);
    entries.push((m, name, id));
    let tree = repo.find_tree(raw_tree(repo, entries)).unwrap();
    let sig = git2::Signature::now("Mallory", "mallory@example.com").unwrap();
    repo.commit(Some(branch), &sig, &sig, "hostile", &tree, &[&parent])
        .unwrap()
}

/// A hostile entry: its path (raw names), content and mode.
type Payload = (Vec<&'static [u8]>, &'static [u8], u32);

/// The payloads.
fn payloads() -> Vec<Payload> {
    vec![
        (
            vec![b"..", b"escape.txt"],
            b"written outside the store\n",
            0o100644,
        ),
        (
            vec![b".git", b"hooks", b"post-merge"],
            b"#!/bin/sh\ntouch \"$HOME/pwned\"\n",
            0o100755,
        ),
        (
            vec![b".GIT", b"hooks", b"post-checkout"],
            b"#!/bin/sh\ntouch \"$HOME/pwned\"\n",
            0o100755,
        ),
        (vec![b"notes", b"link"], b"/etc", 0o120000),
    ]
}

fn display(path: &[&[u8]]) -> String {
    path.iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Nothing was written outside the clone, and no hook ran.
fn assert_nothing_outside(home: &Path, clone: &Path) {
    assert!(
        !home.join("escape.txt").exists(),
        "a file was written outside the store"
    );
    assert!(!home.join("pwned").exists(), "a hostile hook ran");
    // cairn installs its own hooks; none of them may hold the payload.
    for hook in ["post-merge", "post-checkout"] {
        let text = std::fs::read_to_string(clone.join(".git/hooks").join(hook)).unwrap_or_default();
        assert!(
            !text.contains("pwned"),
            "a hostile hook was written into .git/hooks"
        );
    }
}

#[test]
fn cairn_sync_refuses_a_remote_commit_with_a_path_out_of_the_store_or_a_link() {
    for (path, content, mode) in payloads() {
        let (net, a) = Net::new();
        let remote = Repository::open_bare(net.home.path().join("remote.git")).unwrap();
        hostile_commit(&remote, "refs/heads/main", &path, content, mode);
        let head = a.head();
        let (code, env) = a.json(&["sync"]);
        let shown = display(&path);
        assert_eq!(code, 8, "{shown}: {env}");
        assert_eq!(env["error"]["category"], "INTEGRITY", "{shown}: {env}");
        let message = env["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&shown),
            "{shown}: the error names the path: {env}"
        );
        assert_eq!(a.head(), head, "{shown}: HEAD moved");
        assert_eq!(
            a.git(&["status", "--porcelain"]),
            "",
            "{shown}: the work tree changed"
        );
        assert_nothing_outside(net.home.path(), &a.dir);
        // The store is still sound and still writable.
        a.ok(&["fsck"]);
        a.ok(&["run", "boot", "--objective", "after the refusal"]);
    }
}

#[test]
fn fsck_names_each_hostile_path_and_writes_are_refused_until_repaired() {
    for (path, content, mode) in payloads() {
        let env = Env::store();
        let repo = Repository::open(env.root()).unwrap();
        let branch = repo.head().unwrap().name().unwrap().to_string();
        hostile_commit(&repo, &branch, &path, content, mode);
        drop(repo);
        let shown = display(&path);
        let findings = env.fsck_findings();
        let rule = if mode == 0o120000 {
            "regular_file"
        } else {
            "safe_path"
        };
        assert!(
            findings
                .iter()
                .any(|f| f["subject"] == shown.as_str() && f["rule"] == rule),
            "{shown}: fsck names it ({rule}): {findings:?}"
        );
        // A write on top of it is refused and changes nothing.
        let before = env.state();
        let (code, out) = env.json(&["run", "boot", "--objective", "x"]);
        assert_eq!(code, 8, "{shown}: {out}");
        assert_eq!(out["error"]["code"], "TIP_INVALID", "{shown}: {out}");
        assert_eq!(
            env.state(),
            before,
            "{shown}: a refused write changed the store"
        );
        assert_nothing_outside(env.home.path(), &env.root());
    }
}

#[test]
fn a_work_tree_folder_replaced_by_a_symlink_out_of_the_store_is_not_written_through() {
    let (env, run) = Env::with_run();
    let outside = env.home.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // `runs/` becomes a link to a folder outside the store (uncommitted).
    let runs = env.root().join("runs");
    let moved = env.home.path().join("runs-moved");
    std::fs::rename(&runs, &moved).unwrap();
    std::os::unix::fs::symlink(&outside, &runs).unwrap();
    let head = env.head();
    let (code, out) = env.json(&[
        "run",
        "boot",
        "--objective",
        "escape",
        "--run-id",
        "run_escape",
    ]);
    assert_eq!(code, 8, "{out}");
    assert_eq!(out["error"]["category"], "INTEGRITY", "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().contains("runs"),
        "{out}"
    );
    assert_eq!(env.head(), head, "HEAD moved");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside the store"
    );
    // A patch of the existing run goes through the same check.
    let (code, out) = env.json_stdin(
        &["ws", "patch", &run, "-"],
        Some(br#"{"expected_seq": 0, "set": {"status": "BUSY"}}"#),
    );
    assert_eq!(code, 8, "{out}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // With the folder restored, writes go on.
    std::fs::remove_file(&runs).unwrap();
    std::fs::rename(&moved, &runs).unwrap();
    env.ok(&["run", "boot", "--objective", "back", "--run-id", "run_back"]);
    env.ok(&["fsck"]);
}
