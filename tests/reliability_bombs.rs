//! Bombs measured: each hostile input is handed to the real `cairn` binary
//! (`ws patch --file`, or stdin), which must refuse it with a VALIDATION
//! error naming the input and leave the store unchanged. The process's wall
//! time and peak RSS (`wait4`'s `ru_maxrss`) are measured and bounded:
//! peak RSS under 64 MB always; wall time under `CAIRN_BOMB_MAX_MS`
//! (default 2,000 ms in a debug build, 500 ms in release: the whole process,
//! spawn and store open included, on a shared machine). Set
//! `CAIRN_BOMB_REPORT=1` to print each measurement.

mod common;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::{cairn, Env, NOW};
use serde_json::Value;

const MAX_RSS_KB: i64 = 64 * 1024;

/// What a finished cairn process did.
struct Measured {
    code: i32,
    envelope: Value,
    wall: Duration,
    max_rss_kb: i64,
}

/// Writes a bomb to a stream, a piece at a time: the test process stays
/// small, since a child's `ru_maxrss` starts from its parent's at spawn.
type Gen = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

/// Runs `cairn --json ARGS` on `env`'s store, feeding `stdin` if given,
/// and measures it.
fn measure(env: &Env, args: &[&str], stdin: Option<Gen>) -> Measured {
    let started = Instant::now();
    let mut child = cairn(env.home.path())
        .env("CAIRN_NOW", NOW)
        .current_dir(env.home.path())
        .arg("--store")
        .arg(env.root())
        .arg("--json")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // Fed from a thread: cairn may stop reading (and exit) at its limit.
    let feeder = std::thread::spawn(move || {
        if let Some(generate) = stdin {
            let _ = generate(&mut input);
        }
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, once; std's Child is not waited again.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let wall = started.elapsed();
    feeder.join().unwrap();
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    let envelope = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "not a JSON envelope ({e}): {}",
            String::from_utf8_lossy(&out)
        )
    });
    std::mem::forget(child);
    Measured {
        code,
        envelope,
        wall,
        max_rss_kb: usage.ru_maxrss,
    }
}

fn max_ms() -> u128 {
    std::env::var("CAIRN_BOMB_MAX_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 2_000 } else { 500 })
}

/// Feeds the bomb to `ws patch`, from a file (`stdin` false) or stdin, and
/// checks the refusal, the unchanged store, the time and the peak RSS.
fn refuse(env: &Env, run: &str, name: &str, bomb: Gen, stdin: bool, code: &str) {
    let path = env.home.path().join(name);
    let before = env.state();
    let m = if stdin {
        measure(env, &["ws", "patch", run, "-"], Some(bomb))
    } else {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        bomb(&mut f).unwrap();
        f.flush().unwrap();
        drop(f);
        measure(
            env,
            &["ws", "patch", run, "--file", path.to_str().unwrap()],
            None,
        )
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    let e = &m.envelope["error"];
    if std::env::var_os("CAIRN_BOMB_REPORT").is_some() {
        eprintln!(
            "BOMB {name}: {size} bytes on disk, {} in {} ms, peak RSS {} KB",
            e["code"],
            m.wall.as_millis(),
            m.max_rss_kb
        );
    }
    assert_eq!(m.code, 3, "{name}: {}", m.envelope);
    assert_eq!(e["category"], "VALIDATION", "{name}: {e}");
    assert_eq!(e["code"], code, "{name}: {e}");
    let label = if stdin { "<stdin>" } else { name };
    assert!(
        e["message"].as_str().unwrap().contains(label),
        "{name}: {e}"
    );
    assert_eq!(
        env.state(),
        before,
        "{name}: a refused input changed the store"
    );
    assert!(
        m.max_rss_kb < MAX_RSS_KB,
        "{name}: peak RSS {} KB",
        m.max_rss_kb
    );
    assert!(
        m.wall.as_millis() < max_ms(),
        "{name}: refused in {} ms",
        m.wall.as_millis()
    );
}

/// The classic billion laughs: nine levels of nine aliases each.
fn alias_bomb() -> Gen {
    Box::new(|w| {
        writeln!(
            w,
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"
        )?;
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            writeln!(w, "a{i}: &a{i} [{}]", vec![prev; 9].join(","))?;
        }
        writeln!(w, "expected_seq: 0")
    })
}

/// `n` levels of flow nesting (JSON), then a scalar.
fn deep_flow(n: usize) -> Gen {
    Box::new(move |w| {
        write!(
            w,
            "{{\"expected_seq\": 0, \"set\": {}1{}}}",
            "[".repeat(n),
            "]".repeat(n)
        )
    })
}

/// `n` levels of block sequences (YAML `- - - ... 1`).
fn deep_block(n: usize) -> Gen {
    Box::new(move |w| write!(w, "expected_seq: 0\nset:\n{}1\n", "- ".repeat(n)))
}

/// `n` bytes of spaces, a megabyte at a time.
fn blank(n: usize) -> Gen {
    Box::new(move |w| {
        let chunk = vec![b' '; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            w.write_all(&chunk[..k])?;
            left -= k;
        }
        Ok(())
    })
}

/// A flat map of `n` keys (`{"expected_seq": 0, "k0": 0, ...}`).
fn many_keys(n: usize) -> Gen {
    Box::new(move |w| {
        write!(w, "{{\"expected_seq\": 0")?;
        for i in 0..n {
            write!(w, ", \"k{i}\": 0")?;
        }
        write!(w, "}}")
    })
}

/// One line of about `n` bytes: a string value in an otherwise valid patch.
fn long_line(n: usize) -> Gen {
    Box::new(move |w| {
        write!(w, "{{\"expected_seq\": 0, \"set\": {{\"next_action\": \"")?;
        blank(n)(w)?;
        write!(w, "\"}}}}")
    })
}

#[test]
fn bombs_are_refused_quickly_in_little_memory_and_change_nothing() {
    let (env, run) = Env::with_run();
    let base = measure(&env, &["ws", "show", &run], None);
    assert_eq!(base.code, 0, "{}", base.envelope);
    if std::env::var_os("CAIRN_BOMB_REPORT").is_some() {
        eprintln!(
            "BASELINE ws show: {} ms, peak RSS {} KB",
            base.wall.as_millis(),
            base.max_rss_kb
        );
    }
    // Billion laughs.
    refuse(
        &env,
        &run,
        "alias-bomb.yaml",
        alias_bomb(),
        false,
        "PARSE_ERROR",
    );
    // 10,000-deep nesting, flow (JSON) and block (YAML) style.
    refuse(
        &env,
        &run,
        "deep.json",
        deep_flow(10_000),
        false,
        "TOO_DEEP",
    );
    refuse(
        &env,
        &run,
        "deep.yaml",
        deep_block(10_000),
        false,
        "TOO_DEEP",
    );
    // 100 MB: by its size on disk, and streamed on stdin.
    refuse(
        &env,
        &run,
        "huge.yaml",
        blank(100 << 20),
        false,
        "TOO_LARGE",
    );
    refuse(
        &env,
        &run,
        "huge-stdin",
        blank(100 << 20),
        true,
        "TOO_LARGE",
    );
    // Very long lines: over the input limit (8 MiB), and just under it.
    refuse(
        &env,
        &run,
        "long-line.json",
        long_line(9 << 20),
        false,
        "TOO_LARGE",
    );
    refuse(
        &env,
        &run,
        "long-line-fits.json",
        long_line(7 << 20),
        false,
        "TOO_LARGE",
    );
    // A million keys (over the input limit), and half a million (under it,
    // over the most a working set may hold, which a patch may not exceed).
    refuse(
        &env,
        &run,
        "million-keys.json",
        many_keys(1_000_000),
        false,
        "TOO_LARGE",
    );
    refuse(
        &env,
        &run,
        "many-keys.json",
        many_keys(500_000),
        false,
        "TOO_LARGE",
    );
}
