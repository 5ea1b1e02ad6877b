//! The agents benchmark (issue 17): the session-start and stop hooks end to
//! end, each spawned as its own process the way a client runs it, at 1k and
//! 100k memory items.
//!
//! Run with `cargo bench --bench agents`. Settings (environment):
//! - `CAIRN_BENCH_OPS`: timed hook runs per row (default 50).
//! - `CAIRN_BENCH_SIZES`: store sizes (default `1000,100000`).
//!
//! For each size: a work-tree store with N active memory items (one
//! commit, mirror on), one booted run whose objective matches some of
//! them, the search index built. Rows:
//! - `session-start-N`: `cairn hook-agent claude session-start` fed Claude
//!   Code's SessionStart JSON (a new session id each time, so the run is
//!   found through the recent history, not the session map), until its JSON
//!   is printed. The row also counts neutral answers (the 500 ms budget spent).
//! - `stop-N`: `cairn hook-agent claude stop` fed a Stop JSON with a
//!   transcript, each a new turn: one INTERACTION_CAPTURED commit each.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cairn::search;
use cairn::working_set::{self, BootRequest};
use common::{num, populate_memory, table_header, table_row};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_cairn");

/// Runs one hook process with `input` on stdin; (milliseconds, stdout).
fn hook(home: &Path, hook: &str, input: &[u8]) -> (f64, String) {
    let t = Instant::now();
    let mut child = Command::new(EXE)
        .args(["hook-agent", "claude", hook])
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "hooks exit 0");
    (ms, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn size_rows(n: usize, ops: usize) {
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let root = tmp.path().join("store");
    let store = populate_memory(&root, n);
    working_set::boot(
        &store,
        &BootRequest {
            objective: "Make the parser handle nested blocks".into(),
            ..BootRequest::default()
        },
        None,
    )
    .expect("boot");
    let t = Instant::now();
    search::status(&store, &|_, _| {}).expect("index");
    eprintln!("indexed in {:.1} s", t.elapsed().as_secs_f64());
    let cwd = root.to_string_lossy().into_owned();

    // Session start.
    let start = |i: usize| {
        json!({"session_id": format!("bench-start-{i}"), "transcript_path": null, "cwd": cwd,
               "hook_event_name": "SessionStart", "source": "startup"})
        .to_string()
        .into_bytes()
    };
    hook(tmp.path(), "session-start", &start(usize::MAX)); // warm the page cache
    let mut ms = Vec::new();
    let mut neutral = 0;
    for i in 0..ops {
        let (t, out) = hook(tmp.path(), "session-start", &start(i));
        if !out.contains("Make the parser") {
            neutral += 1;
        }
        ms.push(t);
    }
    table_row(&format!("session-start-{n} (neutral: {neutral})"), ms, 1);

    // Stop: one new turn each.
    let transcript = tmp.path().join("transcript.jsonl");
    let mut ms = Vec::new();
    for i in 0..ops {
        let line = json!({"type": "user", "message": {"role": "user",
            "content": format!("Turn {i}: how does the parser treat nested blocks here?")}});
        std::fs::write(&transcript, format!("{line}\n")).expect("transcript");
        let input = json!({"session_id": "bench-stop", "transcript_path": transcript, "cwd": cwd,
            "hook_event_name": "Stop", "stop_hook_active": false,
            "last_assistant_message": format!("Answer {i}: it recurses into each block.")})
        .to_string()
        .into_bytes();
        let (t, _) = hook(tmp.path(), "stop", &input);
        ms.push(t);
    }
    table_row(&format!("stop-{n}"), ms, 1);
    let captured =
        cairn::agent::capture::list(&store, &working_set::list(&store).expect("runs")[0].run_id)
            .expect("interactions")
            .len();
    assert_eq!(captured, ops, "every stop captured its turn");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ops = num("CAIRN_BENCH_OPS", 50);
    let sizes = std::env::var("CAIRN_BENCH_SIZES").unwrap_or_else(|_| "1000,100000".into());
    table_header();
    for s in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let n: usize = s.trim().parse().expect("CAIRN_BENCH_SIZES holds numbers");
        size_rows(n, ops);
    }
}
