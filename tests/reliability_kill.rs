//! SIGKILL where `tests/crash.rs` does not reach (issue 22, item 3): during
//! `cairn sync` merges. Each kill lands at a random point (a delay drawn up
//! to the measured length of an unkilled merging sync). After each:
//!
//! - the next `cairn sync` works and records no conflict;
//! - everything acknowledged before the kill is there: every appended item
//!   of both clones;
//! - `cairn fsck` and `git fsck --strict` are clean and `git status` is
//!   clean, on the killed clone and (every 4th kill) on the other.
//!
//! Only the cairn process is killed (as `tests/crash.rs` kills its writer);
//! a git child it started finishes on its own before the checks run.
//! `CAIRN_CRASH_ITERATIONS` sets the kills per test (default 12, so CI stays
//! short; 1,000 for the long run), `CAIRN_CRASH_SEED` replays a run.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::cli;
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

#[test]
#[ignore = "finds an open bug: after a killed `cairn sync`, the next sync can leave the index staged ahead of HEAD (see RELIABILITY.md)"]
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
