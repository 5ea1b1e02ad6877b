//! SIGKILL where `tests/crash.rs` does not reach (issue 22, item 3): during
//! `cairn sync` merges, during the hooks of a hand `git commit`, and during
//! search index rebuilds and catch-ups. Each kill lands at a random point
//! (a delay drawn up to the measured length of the operation). After each:
//!
//! - the next command works: `cairn sync` (sync), a retried `git commit`
//!   and a cairn write (hooks), `cairn search` (index);
//! - everything acknowledged before the kill is there: every appended item
//!   of both clones after the next sync, every hand commit git reported
//!   done, every item a search found;
//! - `cairn fsck` and `git fsck --strict` are clean and `git status` shows
//!   no tracked change; a rebuilt or caught-up index answers exactly what a
//!   fresh index answers.
//!
//! Only the cairn process is killed (as `tests/crash.rs` kills its writer);
//! a git child it started finishes on its own before the checks run.
//! `CAIRN_CRASH_ITERATIONS` sets the kills per test (default 12, so CI stays
//! short; 1,000 for the long run), `CAIRN_CRASH_SEED` replays a run.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::cli::{self, Env};
use common::net::{Clone as Peer, Net};
use serde_json::{json, Value};

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

#[test]
fn sigkill_during_sync_merges() {
    let mut rng = Rng(seed("sync"));
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    let run_a = a.boot("from a");
    let run_b = b.boot("from b");
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

/// Pids of `cairn hook NAME` processes running in `dir`.
fn hook_pids(dir: &Path, name: &str) -> Vec<libc::pid_t> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: libc::pid_t = p.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_hook = args
                .windows(2)
                .any(|w| w == [b"hook".as_slice(), name.as_bytes()]);
            let cwd = std::fs::read_link(p.path().join("cwd")).ok()?;
            (is_hook && cwd == dir).then_some(pid)
        })
        .collect()
}

/// Runs `git commit` in `env`'s store and SIGKILLs its `cairn hook NAME`
/// process `delay` after it starts (if it starts). Returns (kill landed,
/// commit succeeded).
fn commit_killing_hook(env: &Env, name: &str, delay: Duration, ctx: &str) -> (bool, bool) {
    let dir = env.root().canonicalize().unwrap();
    let mut child = env
        .git_cmd()
        .args(["commit", "-q", "-m", ctx])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut landed = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if let Some(pid) = hook_pids(&dir, name).first() {
            std::thread::sleep(delay);
            // SAFETY: plain syscall; the pid is a hook process of this test
            // (if it ended meanwhile, ESRCH).
            landed = unsafe { libc::kill(*pid, libc::SIGKILL) } == 0;
            break;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    let status = child.wait().unwrap();
    (landed, status.success())
}

/// Appends item `id` to `run` through `cairn ws patch`.
fn append(env: &Env, run: &str, id: &str) {
    let seq = env.ok(&["ws", "show", run])["_update_seq"]
        .as_u64()
        .unwrap();
    let patch = json!({"expected_seq": seq, "append": {"sliding_context": [{"id": id, "content": format!("note {id}")}]}});
    let (code, out) = env.json_stdin(
        &["ws", "patch", run, "--file", "-"],
        Some(patch.to_string().as_bytes()),
    );
    assert_eq!(code, 0, "append {id}: {out}");
}

fn assert_store_healthy(env: &Env, ctx: &str) {
    let (code, out) = env.json(&["fsck"]);
    assert_eq!(code, 0, "{ctx}: cairn fsck: {out}");
    let fsck = env.git_output(&["fsck", "--strict", "--no-progress", "--no-dangling"]);
    assert!(
        fsck.status.success() && fsck.stdout.is_empty(),
        "{ctx}: git fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let status = env.git(&["status", "--porcelain", "--untracked-files=no"]);
    assert_eq!(status, "", "{ctx}: tracked changes");
}

#[test]
fn sigkill_during_commit_hooks() {
    let mut rng = Rng(seed("hooks"));
    let (env, run) = Env::with_run();
    let ws = cairn::layout::working_set(&run);
    let edit = |n: &str| {
        env.edit(&ws, |t| {
            let start = t.find("objective:").unwrap();
            let end = start + t[start..].find('\n').unwrap();
            format!("{}objective: hand edit {n}{}", &t[..start], &t[end..])
        });
        env.git(&["add", &ws]);
    };
    // Calibrate: a hand commit whose hooks run to the end.
    edit("cal");
    let longest = timed(env.git_cmd().args(["commit", "-q", "-m", "cal"]));
    let mut acked_items = Vec::new();
    let mut acked_commits = vec![env.head()];
    let (mut landed, mut committed) = (0, 0);
    let iterations = iterations();
    let started = Instant::now();
    for i in 0..iterations {
        let hook = if i % 2 == 0 {
            "pre-commit"
        } else {
            "post-commit"
        };
        let ctx = format!("hook kill {i} ({hook})");
        append(&env, &run, &format!("c{i}"));
        acked_items.push(format!("c{i}"));
        edit(&i.to_string());
        let before = env.head();
        let (hit, ok) = commit_killing_hook(&env, hook, rng.delay(longest / 2), &ctx);
        landed += usize::from(hit);
        if ok {
            committed += 1;
            acked_commits.push(env.head());
        } else {
            // A killed pre-commit hook fails the commit: nothing moved, the
            // edit stays staged, and the commit goes through when retried.
            assert_eq!(env.head(), before, "{ctx}: a failed commit moved HEAD");
            let out = env.git_output(&["commit", "-q", "-m", &format!("{ctx}, retried")]);
            assert!(
                out.status.success(),
                "{ctx}: the retried commit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            acked_commits.push(env.head());
        }
        // The next cairn write works and nothing acknowledged is lost.
        append(&env, &run, &format!("after{i}"));
        acked_items.push(format!("after{i}"));
        let shown = env.ok(&["ws", "show", &run]);
        let ids: Vec<&str> = shown["sliding_context"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        for id in &acked_items {
            assert!(
                ids.contains(&id.as_str()),
                "{ctx}: {id} is missing: {ids:?}"
            );
        }
        for c in &acked_commits {
            let out = env.git_output(&["merge-base", "--is-ancestor", c, "HEAD"]);
            assert!(
                out.status.success(),
                "{ctx}: hand commit {c} is not on the branch"
            );
        }
        assert_store_healthy(&env, &ctx);
    }
    eprintln!(
        "hooks: {iterations} kills ({landed} inside a hook; {committed} commits went through at once) \
         in {:.1}s; an unkilled hand commit took {} ms",
        started.elapsed().as_secs_f64(),
        longest.as_millis()
    );
}

/// The hits of `cairn search QUERY`, as (id, score) pairs.
fn hits(env: &Env, query: &str) -> Vec<Value> {
    let out = env.ok(&["search", query]);
    out["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("search output: {out}"))
        .iter()
        .map(|h| json!([h["id"], h["score"]]))
        .collect()
}

#[test]
fn sigkill_during_search_index_rebuilds() {
    let mut rng = Rng(seed("index"));
    let env = Env::store();
    let import = |from: usize, n: usize| {
        let lines: Vec<String> = (from..from + n)
            .map(|k| {
                json!({"content": format!("note {k} about the build cache and item {}", k % 7), "type": "fact"})
                    .to_string()
            })
            .collect();
        let f = cli::write(env.home.path(), "items.jsonl", &(lines.join("\n") + "\n"));
        env.ok(&["memory", "import", &f]);
    };
    import(0, 200);
    let index = env.root().join(".cairn/index");
    let search = || {
        let mut c = cli::cairn(env.home.path());
        c.env("CAIRN_NOW", cli::NOW)
            .current_dir(env.home.path())
            .arg("--store")
            .arg(env.root())
            .args(["--json", "search", "build cache"]);
        c
    };
    // Calibrate on a rebuild from nothing.
    std::fs::remove_dir_all(&index).unwrap();
    let longest = timed(&mut search());
    let mut found_before = hits(&env, "build cache");
    let (mut landed, mut rebuilds) = (0, 0);
    let iterations = iterations();
    let started = Instant::now();
    for i in 0..iterations {
        // Even kills: a rebuild from nothing; odd ones: a catch-up after a write.
        let what = if i % 2 == 0 {
            rebuilds += 1;
            std::fs::remove_dir_all(&index).unwrap();
            "rebuild"
        } else {
            import(1000 + i * 10, 10);
            "catch-up"
        };
        let ctx = format!("index kill {i} ({what})");
        landed += usize::from(kill_after(&mut search(), rng.delay(longest), &ctx));
        let answer = hits(&env, "build cache");
        std::fs::remove_dir_all(&index).unwrap();
        let fresh = hits(&env, "build cache");
        assert_eq!(
            answer, fresh,
            "{ctx}: the index after the kill answers otherwise than a fresh one"
        );
        if what == "rebuild" {
            assert_eq!(
                answer, found_before,
                "{ctx}: nothing changed, yet the answer did"
            );
        }
        found_before = fresh;
        assert_store_healthy(&env, &ctx);
    }
    eprintln!(
        "index: {iterations} kills ({landed} inside the search, {rebuilds} during rebuilds) in {:.1}s; \
         an unkilled rebuild took {} ms",
        started.elapsed().as_secs_f64(),
        longest.as_millis()
    );
}
