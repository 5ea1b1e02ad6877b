//! Helpers for the multi-process tests (`concurrency.rs`, `crash.rs`,
//! `packs.rs`).
//!
//! `concurrency.rs` and `crash.rs` re-execute their own test binary as worker processes: the
//! parent spawns `current_exe() --exact <worker fn> --ignored --nocapture`
//! with a hermetic environment, and the `#[ignore]`d worker fn, seeing its
//! env vars, drives the library in-process and prints one `ACK` line per
//! write that returned `Ok`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cairn::ledger::{self, EventType, LogQuery};
use cairn::store::Actor;
use cairn::working_set;
use cairn::{Error, Store, StoreOptions};
use serde_json::{json, Value};

/// The sliding budget every test patch sets: small, so eviction keeps the
/// working set file (and so each commit) small. Eviction is recorded in the
/// ledger, so it hides nothing from the checks.
pub const SLIDING_TOKENS: u64 = 24;

/// Clears the environment of a child and sets only what git and cairn need
/// ([`super::hermetic`] in the C locale).
pub fn hermetic<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    super::hermetic(cmd, home).env("LC_ALL", "C")
}

/// Runs the git binary hermetically in `dir`.
pub fn git(dir: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    hermetic(&mut cmd, home)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the git binary runs")
}

/// Asserts that `git fsck --full --strict` finds nothing wrong. Dangling
/// objects (a killed writer's unreferenced commit) are not corruption and are
/// not listed.
pub fn assert_git_fsck_clean(git_dir: &Path, home: &Path, context: &str) {
    let dir = git_dir.to_str().expect("utf-8 temp path");
    let out = git(
        git_dir,
        home,
        &[
            "--git-dir",
            dir,
            "fsck",
            "--full",
            "--strict",
            "--no-dangling",
            "--no-progress",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "{context}: git fsck is not clean ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
}

/// Asserts that cairn's own fsck has no findings.
pub fn assert_cairn_fsck_clean(store: &Store, context: &str) {
    let findings = cairn::fsck::fsck(store).expect("fsck runs");
    assert!(
        findings.is_empty(),
        "{context}: cairn fsck findings: {findings:#?}"
    );
}

/// Store options for tests: a fixed actor and the given lock timeout.
pub fn options(actor: &str, lock_timeout: Duration) -> StoreOptions {
    StoreOptions {
        now: None,
        actor: Some(Actor {
            name: actor.to_string(),
            email: format!("{actor}@test.invalid"),
        }),
        lock_timeout: Some(lock_timeout),
        git_env: None,
    }
}

/// Makes a store at `path` and boots run `run_id` in it (seq 0).
pub fn init_store_with_run(path: &Path, bare: bool, run_id: &str) -> Store {
    let setup = options("setup", Duration::from_secs(60));
    super::setup::booted(path, bare, setup, "survive the test", Some(run_id)).0
}

/// The patch every test writer sends: append one tiny sliding item.
pub fn append_patch(expected_seq: u64, item_id: &str) -> Value {
    json!({
        "expected_seq": expected_seq,
        "set": {"budget": {"max_sliding_tokens": SLIDING_TOKENS, "max_pinned_items": 32}},
        "append": {"sliding_context": [{"id": item_id, "content": item_id}]},
    })
}

/// A write acknowledged by a worker: `ACK <item id> <seq> <commit>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ack {
    /// The appended item's id.
    pub item: String,
    /// The run's `_update_seq` after the write.
    pub seq: u64,
    /// The write's commit id.
    pub commit: String,
}

impl Ack {
    /// The line a worker prints for this ack.
    pub fn line(&self) -> String {
        format!("ACK {} {} {}", self.item, self.seq, self.commit)
    }

    /// Reads an ack line back; `None` for any other line.
    pub fn parse(line: &str) -> Option<Ack> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        let ack = Ack {
            item: parts.next()?.to_string(),
            seq: parts.next()?.parse().ok()?,
            commit: parts.next()?.to_string(),
        };
        parts.next().is_none().then_some(ack)
    }
}

/// Appends `item_id` to the run, re-reading the seq and retrying for as long
/// as the optimistic lock reports a stale `expected_seq`. Returns the ack and
/// how many attempts conflicted; panics with `ctx` on any other error.
pub fn patch_until_landed(store: &Store, run_id: &str, item_id: &str, ctx: &str) -> (Ack, u64) {
    let mut conflicts = 0;
    loop {
        let seq = working_set::show(store, run_id, None)
            .unwrap_or_else(|e| panic!("{ctx}: show {run_id}: {e}"))
            .update_seq;
        match working_set::patch(store, run_id, &append_patch(seq, item_id), "<test>", None) {
            Ok(out) => {
                let ack = Ack {
                    item: item_id.to_string(),
                    seq: out.working_set.update_seq,
                    commit: out.committed.commit.to_string(),
                };
                return (ack, conflicts);
            }
            Err(Error::SeqConflict { .. }) => conflicts += 1,
            Err(e) => panic!("{ctx}: patch {item_id} against seq {seq}: {e} ({e:?})"),
        }
    }
}

/// Files named `*.lock` under `dir` (git's ref, index and packed-refs locks).
pub fn lock_files(dir: &Path) -> Vec<String> {
    super::setup::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .map(|p| p.strip_prefix(dir).unwrap_or(&p).display().to_string())
        .collect()
}

/// Prints an ack line and flushes, so the parent sees it even if we die next.
pub fn print_ack(ack: &Ack) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", ack.line()).expect("write the ack");
    out.flush().expect("flush the ack");
}

/// Spawns this test binary as a worker running the `#[ignore]`d test `entry`.
pub fn spawn_self(entry: &str, home: &Path, envs: &[(&str, String)]) -> std::process::Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    hermetic(&mut cmd, home)
        .args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn a worker")
}

/// The run's WS_UPDATE_APPLIED events, oldest first.
pub fn ws_updates(store: &Store, run_id: &str) -> Vec<ledger::Event> {
    ledger::query(
        store,
        &LogQuery {
            run_id: Some(run_id.to_string()),
            event_type: Some(EventType::WsUpdateApplied),
            ..Default::default()
        },
    )
    .expect("query the ledger")
}

/// The ids an event's payload says it appended.
pub fn appended_ids(event: &ledger::Event) -> Vec<String> {
    event.payload["appended"]
        .as_array()
        .unwrap_or_else(|| panic!("event {} has no appended list", event.commit))
        .iter()
        .map(|v| v.as_str().expect("appended ids are strings").to_string())
        .collect()
}

/// Checks the whole run's history: WS_UPDATE_APPLIED seqs are exactly
/// 1..=N in order, each appended id appears once, every ack is the event at
/// its seq, and every appended item is either still in the working set or
/// recorded as evicted. Returns N.
pub fn check_ledger_against_acks(store: &Store, run_id: &str, acks: &[Ack], context: &str) -> u64 {
    let events = ws_updates(store, run_id);
    let mut appended_once = BTreeSet::new();
    let mut evicted = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            Some(i as u64 + 1),
            "{context}: ledger seqs are not gap-free 1..=N at commit {}",
            e.commit
        );
        for id in appended_ids(e) {
            assert!(
                appended_once.insert(id.clone()),
                "{context}: item {id} appended twice (again at seq {:?})",
                e.seq
            );
        }
        for item in e.payload["evicted"].as_array().into_iter().flatten() {
            evicted.insert(item["id"].as_str().expect("evicted ids").to_string());
        }
    }
    for ack in acks {
        let e = events
            .get((ack.seq as usize).wrapping_sub(1))
            .unwrap_or_else(|| panic!("{context}: acknowledged {ack:?} is past the ledger's end"));
        assert_eq!(
            (e.commit.as_str(), appended_ids(e)),
            (ack.commit.as_str(), vec![ack.item.clone()]),
            "{context}: the ledger event at seq {} is not the acknowledged write {ack:?}",
            ack.seq
        );
    }
    let n = events.len() as u64;
    let ws = working_set::show(store, run_id, None).expect("show the working set");
    assert_eq!(ws.update_seq, n, "{context}: _update_seq vs ledger");
    let live: BTreeSet<String> = ws.sliding_context.iter().map(|i| i.id.clone()).collect();
    let accounted: BTreeSet<String> = live.union(&evicted).cloned().collect();
    assert_eq!(
        accounted, appended_once,
        "{context}: appended items neither in the working set nor evicted (or vice versa)"
    );
    n
}
