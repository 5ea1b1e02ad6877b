//! SIGKILL where `tests/crash.rs` does not reach (issue 22, item 3): during
//! `cairn sync` merges, during the `cairn hook` processes git runs, and
//! during search index rebuilds and catch-ups. Each kill lands at a random
//! point: a delay drawn up to the measured length of the same unkilled run.
//!
//! - **sync**: two clones through a bare remote; b's merging `cairn sync` is
//!   killed. The next sync works without conflicts and holds every
//!   acknowledged item of both clones.
//! - **hooks**: `pre-commit`, `commit-msg` and `post-commit` of a hand
//!   commit, and `post-merge` of a plain `git pull`, each killed alone (git
//!   goes on). A commit a killed hook stopped is made by the next `git
//!   commit`; the next cairn write works; every hand edit and write is there.
//! - **index**: `cairn search` killed while it rebuilds the index from
//!   nothing or catches up an index left behind the tip; the next searches
//!   answer exactly (ids, order, scores) what a fresh index answers.
//!
//! After each kill `cairn fsck` and `git fsck --strict` are clean and `git
//! status` is clean. Only the cairn process is killed (as `tests/crash.rs`
//! kills its writer); a git child it started finishes on its own before the
//! checks run. `CAIRN_CRASH_ITERATIONS` sets the kills per test (default 12,
//! so CI stays short; 1,000 for the long run), `CAIRN_CRASH_SEED` replays a
//! run, `CAIRN_KILL_INDEX_ITEMS` sizes the index test's store (default 3,000
//! memory items).

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::cli::{self, Env};
use common::net::{Clone as Peer, Net};
use serde_json::json;

/// xorshift64*: small and seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay up to `max`.
    fn delay(&mut self, max: Duration) -> Duration {
        let max = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % (max + 1))
    }
}

fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CAIRN_CRASH_SEED") {
        Ok(s) => s.parse().expect("CAIRN_CRASH_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (rerun with CAIRN_CRASH_SEED={seed})");
    seed | 1
}

fn iterations() -> usize {
    std::env::var("CAIRN_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// Whether a process of process group `pgid` is still running (not a zombie).
fn group_alive(pgid: u32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// Runs `cmd` in its own process group and SIGKILLs the process itself
/// after `delay` (unless it finished first), then waits until the children
/// it left (git) have finished. Returns whether the kill landed.
fn kill_after(cmd: &mut Command, delay: Duration, ctx: &str) -> bool {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pgid = child.id();
    std::thread::sleep(delay);
    let landed = match child.try_wait().unwrap() {
        Some(_) => false,
        None => {
            // SAFETY: plain syscall on the pid of a child we have not reaped yet.
            let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            assert_eq!(rc, 0, "{ctx}: kill: {}", std::io::Error::last_os_error());
            child.wait().unwrap();
            true
        }
    };
    let start = Instant::now();
    while group_alive(pgid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{ctx}: the killed process's children still run after 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    landed
}

/// How long `cmd` takes when nothing kills it.
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    start.elapsed()
}

/// `cairn sync` in clone `c` as the sync tests run it.
fn sync_cmd(net: &Net, c: &Peer) -> Command {
    let mut cmd = cli::cairn(net.home.path());
    cmd.current_dir(&c.dir)
        .env("CAIRN_NOW", cli::NOW)
        .env("CAIRN_HOOK_FOREGROUND", "1")
        .args(["--json", "sync"]);
    cmd
}

/// Rounds per run: a long run boots new runs before the sliding context's
/// token budget (4,000) starts evicting the items the test counts.
const ROTATE: usize = 50;

#[test]
fn sigkill_during_sync_merges() {
    let mut rng = Rng(seed("sync"));
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    // As in the hook test: git's automatic gc (after a fetch) is not
    // detached, so it never prunes under the checks' `git fsck`.
    for c in [&a, &b] {
        c.git(&["config", "gc.autoDetach", "false"]);
    }
    let mut run_a = a.boot("from a");
    let mut run_b = b.boot("from b");
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    // Calibrate: a sync that fetches a's new commit, merges and pushes.
    a.append(&run_a, "a_cal");
    a.ok(&["sync"]);
    b.append(&run_b, "b_cal");
    let longest = timed(&mut sync_cmd(&net, &b));
    let (mut acked_a, mut acked_b) = (vec!["a_cal".to_string()], vec!["b_cal".to_string()]);
    let mut landed = 0;
    let iterations = iterations();
    let started = Instant::now();
    for i in 0..iterations {
        let ctx = format!("sync kill {i}");
        if i > 0 && i % ROTATE == 0 {
            run_a = a.boot(&format!("from a, part {}", i / ROTATE));
            run_b = b.boot(&format!("from b, part {}", i / ROTATE));
            acked_a.clear();
            acked_b.clear();
        }
        // Both sides write; a's write reaches the remote, b's is local.
        a.append(&run_a, &format!("a{i}"));
        a.ok(&["sync"]);
        acked_a.push(format!("a{i}"));
        b.append(&run_b, &format!("b{i}"));
        acked_b.push(format!("b{i}"));
        landed += usize::from(kill_after(
            &mut sync_cmd(&net, &b),
            rng.delay(longest),
            &ctx,
        ));
        // The next sync finishes the job: both sides' writes, one history.
        let out = b.ok(&["sync"]);
        assert_eq!(out["conflicts"], json!([]), "{ctx}: {out}");
        assert_eq!(b.sliding_ids(&run_a), acked_a, "{ctx}: a's writes on b");
        assert_eq!(b.sliding_ids(&run_b), acked_b, "{ctx}: b's writes on b");
        b.assert_healthy();
        if i % 4 == 3 || i + 1 == iterations {
            a.ok(&["sync"]);
            assert_eq!(a.head(), b.head(), "{ctx}: a and b after a's sync");
            a.assert_healthy();
        }
    }
    eprintln!(
        "sync: {iterations} kills ({landed} inside the sync, the rest after it ended) in {:.1}s; \
         an unkilled merge sync took {} ms",
        started.elapsed().as_secs_f64(),
        longest.as_millis()
    );
}

// ---------------------------------------------------------------------------
// Hook runs

/// The processes descending from `pid` (children, theirs, ...).
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// The pid of a `cairn hook NAME` process descending from `pid`, if one runs.
fn hook_pid(pid: i32, name: &str) -> Option<i32> {
    descendants(pid).into_iter().find(|p| {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.len() > 2
            && args[0].ends_with(b"/cairn")
            && args[1] == b"hook"
            && args[2] == name.as_bytes()
    })
}

/// Whether process `pid` runs (not gone, not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// What a git command did while its `cairn hook` process was SIGKILLed.
struct HookRun {
    /// Whether git exited 0.
    ok: bool,
    /// git's stderr.
    stderr: String,
    /// Whether the kill landed (the hook was still running).
    landed: bool,
    /// How long the hook ran after it was seen (`None`: it ran and ended
    /// between two looks, so it was never seen).
    ran: Option<Duration>,
}

/// Runs git `cmd` in its own process group; `delay` after its `cairn hook
/// NAME` process appears, SIGKILLs that process alone (unless it ended
/// first; `None`: never). Waits for every process of the group. The hook
/// is looked for every 0.1 ms, so one that ends sooner may go unseen (and
/// unkilled).
fn kill_hook(cmd: &mut Command, name: &str, delay: Option<Duration>, ctx: &str) -> HookRun {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = child.id();
    let started = Instant::now();
    let mut seen: Option<(i32, Instant)> = None;
    let (mut landed, mut ran) = (false, None);
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{ctx}: git still runs after 120 s"
        );
        match seen {
            None => {
                if let Some(pid) = hook_pid(pgid as i32, name) {
                    seen = Some((pid, Instant::now()));
                    if let Some(d) = delay {
                        std::thread::sleep(d);
                        if running(pid) {
                            // SAFETY: plain syscall on a pid of our child's process group.
                            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                            landed = rc == 0;
                        }
                    }
                }
            }
            Some((pid, at)) if !landed && ran.is_none() && !running(pid) => {
                ran = Some(at.elapsed());
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let out = child.wait_with_output().unwrap();
    while group_alive(pgid) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{ctx}: the hook's children still run after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    HookRun {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        landed,
        ran: ran.or_else(|| seen.map(|(_, at)| at.elapsed())),
    }
}

/// git in clone `c` as a person runs it (hooks in the foreground), as
/// `common::net` runs it.
fn git_cmd(net: &Net, c: &Peer, args: &[&str]) -> Command {
    let mut cmd = common::setup::git_cmd(&c.dir);
    cmd.env("HOME", net.home.path())
        .env("CAIRN_NOW", cli::NOW)
        .env("CAIRN_HOOK_FOREGROUND", "1")
        .args(args);
    cmd
}

/// Adds a sliding context item `id` to `run`'s working set by hand (the
/// file edited, not committed).
fn hand_edit(c: &Peer, run: &str, id: &str) {
    let path = c.dir.join(cairn::layout::working_set(run));
    let bytes = std::fs::read(&path).unwrap();
    let mut ws = cairn::schema::parse_document(
        &path.display().to_string(),
        &bytes,
        cairn::schema::ParseLimits::default(),
    )
    .unwrap();
    ws["sliding_context"].as_array_mut().unwrap().push(json!({
        "id": id,
        "content": format!("hand note {id}"),
        "timestamp": cli::NOW,
        "priority": 5,
    }));
    std::fs::write(&path, cairn::schema::to_yaml(&ws)).unwrap();
}

/// The hooks killed, in the order `git commit` runs the first three.
const HOOKS: [&str; 4] = ["pre-commit", "commit-msg", "post-commit", "post-merge"];

#[test]
fn sigkill_during_hook_runs() {
    let mut rng = Rng(seed("hooks"));
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    let mut run_a = a.boot("hand edits on a");
    let run_b = b.boot("writes on b");
    b.ok(&["sync"]);
    // git's automatic gc runs inside the git command that starts it, not
    // detached: a detached one prunes loose objects while the checks' `git
    // fsck` reads them (a 1,000-kill run failed so).
    for c in [&a, &b] {
        c.git(&["config", "gc.autoDetach", "false"]);
    }
    let mut acked_a: Vec<String> = Vec::new();
    let mut acked_b: Vec<String> = Vec::new();
    let commit = |i: usize| {
        let msg = format!("hand note {i}");
        git_cmd(&net, &a, &["commit", "-qam", &msg])
    };
    let pull = || git_cmd(&net, &a, &["pull", "--no-rebase", "--no-edit", "-q"]);
    // Calibrate: how long each hook runs when nothing kills it.
    let mut longest = std::collections::BTreeMap::new();
    for (n, hook) in HOOKS.iter().enumerate() {
        let ctx = format!("calibrating {hook}");
        let run = if *hook == "post-merge" {
            b.append(&run_b, &format!("b_cal{n}"));
            b.ok(&["sync"]);
            acked_b.push(format!("b_cal{n}"));
            kill_hook(&mut pull(), hook, None, &ctx)
        } else {
            hand_edit(&a, &run_a, &format!("h_cal{n}"));
            acked_a.push(format!("h_cal{n}"));
            kill_hook(&mut commit(n), hook, None, &ctx)
        };
        assert!(run.ok, "{ctx}: {}", run.stderr);
        // A hook quicker than a look at the process table is killed anywhere in its first millisecond.
        longest.insert(*hook, run.ran.unwrap_or(Duration::from_millis(1)));
    }
    a.assert_healthy();
    let (mut landed, mut refused) = (0, 0);
    let iterations = iterations();
    let started = Instant::now();
    for i in 0..iterations {
        let ctx = format!("hook kill {i}");
        if i > 0 && i % ROTATE == 0 {
            // A fresh run before the sliding context's token budget evicts.
            run_a = a.boot(&format!("hand edits on a, part {}", i / ROTATE));
            acked_a.clear();
        }
        let hook = HOOKS[(rng.next() % HOOKS.len() as u64) as usize];
        let delay = rng.delay(longest[hook]);
        let head = a.head();
        if hook == "post-merge" {
            // b's write comes in by a plain `git pull`: a merge when a has
            // written since its last pull, else a fast-forward.
            let id = format!("b{i}");
            b.append(&run_b, &id);
            b.ok(&["sync"]);
            acked_b.push(id);
            if rng.next().is_multiple_of(2) {
                let id = format!("m{i}");
                a.append(&run_a, &id);
                acked_a.push(id);
            }
            let run = kill_hook(&mut pull(), hook, Some(delay), &ctx);
            landed += usize::from(run.landed);
            assert!(run.ok, "{ctx}: git pull failed: {}", run.stderr);
            assert!(
                !a.dir.join(".git/MERGE_HEAD").exists(),
                "{ctx}: git pull left a merge in progress"
            );
        } else {
            let id = format!("h{i}");
            hand_edit(&a, &run_a, &id);
            let run = kill_hook(&mut commit(i), hook, Some(delay), &ctx);
            landed += usize::from(run.landed);
            if a.head() == head {
                // The killed hook stopped the commit: the next one works.
                assert!(!run.ok, "{ctx}: git commit succeeded but made no commit");
                refused += 1;
                let out = commit(i).output().unwrap();
                assert!(
                    out.status.success(),
                    "{ctx}: the git commit after a killed {hook}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                assert!(run.ok, "{ctx}: {}", run.stderr);
            }
            acked_a.push(id);
        }
        // The next cairn write works, and all is whole.
        let id = format!("c{i}");
        a.append(&run_a, &id);
        acked_a.push(id);
        assert_eq!(a.sliding_ids(&run_a), acked_a, "{ctx}: a's writes");
        a.ok(&["mirror", "--check"]);
        a.assert_healthy();
    }
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(a.head(), b.head(), "a and b after syncing");
    for c in [&a, &b] {
        assert_eq!(c.sliding_ids(&run_a), acked_a, "a's writes on {}", c.name());
        assert_eq!(c.sliding_ids(&run_b), acked_b, "b's writes on {}", c.name());
        c.assert_healthy();
    }
    eprintln!(
        "hooks: {iterations} kills ({landed} inside the hook, {refused} commits stopped) in {:.1}s; \
         unkilled: {}",
        started.elapsed().as_secs_f64(),
        longest
            .iter()
            .map(|(h, d)| format!("{h} {} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ---------------------------------------------------------------------------
// Search index rebuilds and catch-ups

/// Words the generated memory items are made of: a small vocabulary, so
/// many items tie on a query's score.
const WORDS: [&str; 24] = [
    "parser", "cache", "deploy", "release", "schema", "index", "merge", "branch", "token",
    "budget", "queue", "worker", "socket", "timeout", "retry", "ledger", "mirror", "hook",
    "commit", "tag", "batch", "stream", "lock", "journal",
];

const INDEX_QUERIES: [&str; 5] = [
    "parser",
    "cache deploy",
    "release notes",
    "lock journal",
    "queue",
];

/// `n` memory items as `cairn memory import` lines: 4 to 6 distinct words
/// each, drawn from [`WORDS`] by `rng`. Items of one length that hold a
/// query word score alike, so the ties run past the ranking's candidates.
fn corpus(rng: &mut Rng, n: usize, tag: &str) -> String {
    let mut text = String::new();
    for i in 0..n {
        let len = 4 + (rng.next() % 3) as usize;
        let mut words: Vec<&str> = Vec::with_capacity(len);
        while words.len() < len {
            let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
            if !words.contains(&w) {
                words.push(w);
            }
        }
        let line = json!({"id": format!("{tag}{i}"), "content": words.join(" "), "type": "fact"});
        text.push_str(&format!("{line}\n"));
    }
    text
}

/// Each query's hits (id and score), in order.
fn index_answers(env: &Env) -> Vec<Vec<(String, f64)>> {
    INDEX_QUERIES
        .iter()
        .map(|q| {
            env.ok(&["search", q])["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["id"].as_str().unwrap().to_string(),
                        h["score"].as_f64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Copies the files of folder `from` into a fresh folder `to`.
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn index_items() -> usize {
    std::env::var("CAIRN_KILL_INDEX_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

#[test]
fn sigkill_during_index_rebuilds() {
    let mut rng = Rng(seed("index"));
    let env = Env::store();
    let n = index_items();
    let index = env.path(".cairn/index");
    let behind = env.home.path().join("index-behind");
    let import = |name: &str, text: &str| {
        let f = cli::write(env.home.path(), name, text);
        env.ok(&["memory", "import", &f]);
    };
    // Half the items, an index made there (the one a catch-up starts from),
    // then the other half.
    import("first.jsonl", &corpus(&mut rng, n / 2, "first"));
    env.ok(&["index", "rebuild"]);
    copy_dir(&index, &behind);
    import("second.jsonl", &corpus(&mut rng, n - n / 2, "second"));
    env.ok(&["index", "rebuild"]);
    let fresh = index_answers(&env);
    assert!(
        fresh.iter().filter(|h| !h.is_empty()).count() >= 4,
        "the queries find items: {fresh:?}"
    );
    let search = || {
        let mut cmd = cli::cairn(env.home.path());
        cmd.current_dir(env.home.path())
            .env("CAIRN_NOW", cli::NOW)
            .arg("--store")
            .arg(env.root())
            .args(["--json", "search", INDEX_QUERIES[0]]);
        cmd
    };
    // Calibrate on each starting point: the unkilled answer is the fresh one.
    let mut longest = [Duration::ZERO; 2];
    for (k, what) in ["rebuild", "catch-up"].iter().enumerate() {
        let _ = std::fs::remove_dir_all(&index);
        if k == 1 {
            copy_dir(&behind, &index);
        }
        longest[k] = timed(&mut search());
        assert_eq!(index_answers(&env), fresh, "an unkilled {what}");
    }
    let (mut landed, iterations, started) = (0, iterations(), Instant::now());
    for i in 0..iterations {
        let k = i % 2;
        let ctx = format!("index kill {i} ({})", ["rebuild", "catch-up"][k]);
        let _ = std::fs::remove_dir_all(&index);
        if k == 1 {
            copy_dir(&behind, &index);
        }
        landed += usize::from(kill_after(&mut search(), rng.delay(longest[k]), &ctx));
        assert_eq!(index_answers(&env), fresh, "{ctx}");
    }
    eprintln!(
        "index: {iterations} kills ({landed} inside the search) in {:.1}s over {n} items; \
         unkilled: rebuild {} ms, catch-up {} ms",
        started.elapsed().as_secs_f64(),
        longest[0].as_millis(),
        longest[1].as_millis()
    );
}
