//! End-to-end tests of the `cairn` binary in a hermetic environment: cleared
//! env, no global or system git config, a fixed clock. Every bad input the
//! foundation names gets a test asserting the error category (exit code and
//! `--json` envelope), that the message names the file/field/rule, and that
//! HEAD and the work tree are unchanged.

mod common;

use common::cli::{refused, write, Env};
use serde_json::{json, Value};

#[test]
fn init_boot_patch_show_log_round_trip() {
    let (env, run) = Env::with_run();
    let ws = env.ok(&["ws", "show", &run]);
    assert_eq!(ws["_update_seq"], json!(0));
    assert_eq!(ws["status"], json!("IDLE"));
    assert_eq!(ws["created_at"], json!("2026-01-18T00:00:00.000Z"));

    // The seed's patch body, verbatim, as the HTTP body wrapper.
    let seed = r#"{"patch": {"_schema_version": "2.1", "expected_seq": 0, "set": {"status": "BUSY", "current_stage": "PLAN", "next_action": "Write strict schemas for all artifacts.", "sliding_context": [{"id": "ctx1", "content": "Use pinned+sliding contexts.", "timestamp": "2026-01-18T00:00:00Z", "priority": 2}]}}}"#;
    let f = write(env.home.path(), "seed.json", seed);
    let out = env.ok(&["ws", "patch", &run, "--file", &f]);
    assert_eq!(out["seq"], json!(1));
    assert_eq!(out["working_set"]["current_stage"], json!("PLAN"));

    // YAML from stdin with --expected-seq.
    let (code, out) = env.json_stdin(
        &["ws", "patch", &run, "--expected-seq", "1", "-"],
        Some(b"unset: [next_action]\nappend:\n  pinned_context:\n    - id: rule1\n      content: Never skip tests\n"),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out["data"]["working_set"]["pinned_context"][0]["priority"],
        json!(5)
    );
    assert!(out["data"]["working_set"].get("next_action").is_none());

    let at1 = env.ok(&["ws", "show", &run, "--at", "1"]);
    assert_eq!(
        at1["next_action"],
        json!("Write strict schemas for all artifacts.")
    );
    let commit = out["data"]["event"]["commit"].as_str().unwrap().to_string();
    let at_commit = env.ok(&["ws", "show", &run, "--at", &commit]);
    assert_eq!(at_commit["_update_seq"], json!(2));

    let runs = env.ok(&["run", "list"]);
    assert_eq!(runs["runs"][0]["run_id"], json!(run));
    assert_eq!(runs["runs"][0]["seq"], json!(2));

    let log = env.ok(&["log", "--run", &run]);
    let types: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["RUN_BOOTED", "WS_UPDATE_APPLIED", "WS_UPDATE_APPLIED"]
    );
    // The work tree shows what the tip holds and nothing is left unstaged.
    assert_eq!(env.git(&["status", "--porcelain"]), "");
    env.ok(&["fsck"]);
}

#[test]
fn log_jsonl_lines_are_schema_valid_ledger_events() {
    let (env, run) = Env::with_run();
    env.ok(&[
        "ws",
        "patch",
        &run,
        "--file",
        &write(
            env.home.path(),
            "p.yaml",
            "expected_seq: 0\nset: {status: BUSY}\n",
        ),
    ]);
    let out = env
        .cmd()
        .args(["--store", env.root().to_str().unwrap(), "log", "--jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            cairn::schema::violations("ledger_event", &event),
            vec![],
            "{line}"
        );
    }
    // Filters.
    let only = env.ok(&["log", "--type", "ws_update_applied"]);
    assert_eq!(only["events"].as_array().unwrap().len(), 1);
    let limited = env.ok(&["log", "--limit", "1"]);
    assert_eq!(
        limited["events"][0]["event_type"],
        json!("WS_UPDATE_APPLIED")
    );
    let none = env.ok(&["log", "--since", "2027-01-01T00:00:00Z"]);
    assert_eq!(none["events"], json!([]));
    let by_actor = env.ok(&["log", "--actor", "nobody"]);
    assert_eq!(by_actor["events"], json!([]));
}

#[test]
fn actor_flag_becomes_commit_author_and_event_actor() {
    let env = Env::store();
    env.ok(&[
        "--actor",
        "Agent Smith <smith@example.com>",
        "run",
        "boot",
        "--objective",
        "x",
    ]);
    assert_eq!(
        env.git(&["log", "-1", "--format=%an <%ae>"]).trim(),
        "Agent Smith <smith@example.com>"
    );
    let log = env.ok(&["log", "--limit", "1"]);
    assert_eq!(log["events"][0]["actor"], json!("Agent Smith"));
}

#[test]
fn idempotency_key_replays_without_a_second_commit() {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"status": "BUSY"}}"#,
    );
    let first = env.ok(&[
        "--idempotency-key",
        "step-1",
        "ws",
        "patch",
        &run,
        "--file",
        &f,
    ]);
    let head = env.git(&["rev-parse", "HEAD"]);
    let again = env.ok(&[
        "--idempotency-key",
        "step-1",
        "ws",
        "patch",
        &run,
        "--file",
        &f,
    ]);
    assert_eq!(again["replayed"], json!(true));
    assert_eq!(again["event"]["commit"], first["event"]["commit"]);
    assert_eq!(again["seq"], json!(1));
    assert_eq!(env.git(&["rev-parse", "HEAD"]), head);
    // The cache is disposable: without it the key is found in history.
    std::fs::remove_file(env.root().join(".cairn/idempotency")).unwrap();
    let third = env.ok(&[
        "--idempotency-key",
        "step-1",
        "ws",
        "patch",
        &run,
        "--file",
        &f,
    ]);
    assert_eq!(third["event"]["commit"], first["event"]["commit"]);
    // Boot too.
    let b1 = env.ok(&[
        "--idempotency-key",
        "boot-1",
        "run",
        "boot",
        "--objective",
        "y",
    ]);
    let b2 = env.ok(&[
        "--idempotency-key",
        "boot-1",
        "run",
        "boot",
        "--objective",
        "y",
    ]);
    assert_eq!(b1["run_id"], b2["run_id"]);
    assert_eq!(
        env.ok(&["run", "list"])["runs"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn eviction_is_deterministic_and_listed() {
    let (env, run) = Env::with_run();
    let big = "word ".repeat(40); // 200 chars = 50 tokens
    let patch = json!({
        "expected_seq": 0,
        "set": {"budget": {"max_sliding_tokens": 100, "max_pinned_items": 2}},
        "append": {"sliding_context": [
            {"id": "a", "content": big, "timestamp": "2026-01-01T00:00:00Z", "priority": 3},
            {"id": "b", "content": big, "timestamp": "2026-01-02T00:00:00Z", "priority": 1},
            {"id": "c", "content": big, "timestamp": "2026-01-01T00:00:00Z", "priority": 1},
        ]}
    });
    let f = write(env.home.path(), "p.json", &patch.to_string());
    let out = env.ok(&["ws", "patch", &run, "--file", &f]);
    assert_eq!(out["evicted"][0]["id"], json!("c"));
    let kept: Vec<&str> = out["working_set"]["sliding_context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["a", "b"]);
    let listed = env.ok(&["ws", "evicted", &run]);
    assert_eq!(listed["evicted"][0]["item"]["id"], json!("c"));
    assert_eq!(listed["evicted"][0]["item"]["content"], json!(big));
    assert_eq!(listed["evicted"][0]["commit"], out["event"]["commit"]);
}

#[test]
fn bare_store_supports_every_command() {
    let env = Env::new();
    env.ok(&["init", "--bare", env.root().to_str().unwrap()]);
    assert!(env.root().join("HEAD").exists());
    let run = env.boot();
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"status": "DONE"}}"#,
    );
    env.ok(&["ws", "patch", &run, "--file", &f]);
    assert_eq!(env.ok(&["ws", "show", &run])["status"], json!("DONE"));
    env.ok(&["ws", "evicted", &run]);
    env.ok(&["log"]);
    env.ok(&["run", "list"]);
    env.ok(&["fsck"]);
}

#[test]
fn store_is_found_by_env_and_by_walking_up() {
    let env = Env::store();
    env.boot();
    let sub = env.root().join("runs");
    let out = env
        .cmd()
        .current_dir(&sub)
        .args(["--json", "run", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env
        .cmd()
        .env("CAIRN_STORE", env.root())
        .current_dir("/")
        .args(["--json", "run", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn init_in_an_existing_repository_keeps_its_history() {
    let env = Env::new();
    std::fs::create_dir_all(env.root()).unwrap();
    env.git(&["init", "-q", "-b", "trunk"]);
    env.put("notes.txt", "hello\n");
    env.git(&["add", "notes.txt"]);
    env.git(&["commit", "-qm", "first"]);
    env.init();
    assert_eq!(env.git(&["log", "--format=%s"]).lines().count(), 2);
    assert_eq!(
        env.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "trunk"
    );
    assert_eq!(env.git(&["config", "core.fsync"]).trim(), "committed,index");
    // A second init is refused.
    let (code, out) = env.json(&["init", env.root().to_str().unwrap()]);
    assert_eq!(code, 4, "{out}");
}

#[test]
fn schema_commands_list_show_export() {
    let env = Env::new();
    let list = env.ok(&["schema", "list"]);
    assert_eq!(
        list["schemas"].as_array().unwrap().len(),
        cairn::schema::SCHEMAS.len()
    );
    let ws = env.ok(&["schema", "show", "working_set"]);
    assert_eq!(ws["additionalProperties"], json!(false));
    let dir = env.home.path().join("out");
    env.ok(&["schema", "export", dir.to_str().unwrap()]);
    assert!(dir.join("ws_patch.v2.1.schema.json").exists());
    let (code, _) = env.json(&["schema", "show", "nope"]);
    assert_eq!(code, 5);
}

#[test]
fn fsck_reports_a_bypassing_commit() {
    let (env, run) = Env::with_run();
    std::fs::write(env.ws_file(&run), "_schema_version: \"2.1\"\nbogus: 1\n").unwrap();
    env.git(&["commit", "--no-verify", "-qam", "hand edit"]);
    let (code, out) = env.json(&["fsck"]);
    assert_eq!(code, 8, "{out}");
    let findings = out["error"]["details"]["findings"].as_array().unwrap();
    assert!(findings
        .iter()
        .any(|f| f["subject"].as_str().unwrap().ends_with("working_set.yaml")));
    // The hand commit reads back as a MANUAL_EDIT event of that run.
    let log = env.ok(&["log", "--limit", "1"]);
    assert_eq!(log["events"][0]["event_type"], json!("MANUAL_EDIT"));
    assert_eq!(log["events"][0]["run_id"], json!(run));
    assert_eq!(log["events"][0]["actor"], json!("Hand"));
}

#[test]
fn human_output_and_no_color() {
    let env = Env::store();
    let out = env
        .cmd()
        .env("NO_COLOR", "1")
        .args(["--store", env.root().to_str().unwrap(), "run", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("no runs yet"));
    assert!(!text.contains('\u{1b}'));
}

#[test]
fn demo_runs_end_to_end() {
    let env = Env::new();
    let root = env.home.path().join("demo");
    let out = env
        .cmd()
        .args(["demo", "--root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains("evicted"), "{text}");
    assert!(text.contains("fsck: clean"), "{text}");
}

// ---- bad input: each refused with its category, naming the file/field, changing nothing ----

#[test]
fn bad_input_unknown_field() {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"bogus": 1}}"#,
    );
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("p.json") && msg.contains("/set") && msg.contains("bogus"),
        "{msg}"
    );
    assert_eq!(
        err["details"]["violations"][0]["rule"],
        json!("additionalProperties")
    );
}

#[test]
fn bad_input_wrong_type() {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "p.yaml",
        "expected_seq: 0\nset:\n  status: 5\n",
    );
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["details"]["file"], json!(f));
    let v = &err["details"]["violations"];
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|v| v["pointer"] == json!("/set/status")),
        "{v}"
    );
}

#[test]
fn bad_input_missing_required_field() {
    let (env, run) = Env::with_run();
    let f = write(env.home.path(), "p.json", r#"{"set": {"status": "BUSY"}}"#);
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["details"]["violations"][0]["rule"], json!("required"));
    assert!(err["message"].as_str().unwrap().contains("expected_seq"));
}

#[test]
fn bad_input_malformed_json_and_yaml() {
    let (env, run) = Env::with_run();
    let f = write(env.home.path(), "p.json", r#"{"expected_seq": 0, "set": {"#);
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["code"], json!("PARSE_ERROR"));
    assert!(err["message"].as_str().unwrap().contains("p.json"));
    assert!(err["message"].as_str().unwrap().contains("line 1"));
    let f = write(
        env.home.path(),
        "p.yaml",
        "expected_seq: 0\nset: [unclosed\n  status: : :\n",
    );
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["code"], json!("PARSE_ERROR"));
    assert!(err["message"].as_str().unwrap().contains("p.yaml"));
}

#[test]
fn bad_input_100_mb() {
    let (env, run) = Env::with_run();
    let p = env.home.path().join("huge.json");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(100 * 1024 * 1024).unwrap();
    let ps = p.to_str().unwrap().to_string();
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &ps],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["code"], json!("TOO_LARGE"));
    assert!(err["message"].as_str().unwrap().contains("max_input_bytes"));
    // Through stdin the limit holds without reading it all.
    let big = vec![b' '; 9 * 1024 * 1024];
    let err = refused(
        &env,
        &["ws", "patch", &run, "-"],
        Some(&big),
        "VALIDATION",
        3,
    );
    assert_eq!(err["code"], json!("TOO_LARGE"));
}

#[test]
fn bad_input_deep_nesting() {
    let (env, run) = Env::with_run();
    let deep = format!(
        r#"{{"expected_seq": 0, "set": {}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let f = write(env.home.path(), "deep.json", &deep);
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["code"], json!("TOO_DEEP"));
    assert!(err["message"].as_str().unwrap().contains("deep.json"));
    // Block-style YAML nesting too.
    let mut yaml = String::from("expected_seq: 0\nset:\n");
    for depth in 1..200 {
        yaml.push_str(&format!("{}k{depth}:\n", "  ".repeat(depth)));
    }
    let f = write(env.home.path(), "deep.yaml", &yaml);
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert!(
        err["message"].as_str().unwrap().contains("deep.yaml"),
        "{err}"
    );
}

#[test]
fn bad_input_yaml_alias_bomb() {
    let (env, run) = Env::with_run();
    let mut bomb = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
    }
    bomb.push_str("expected_seq: 0\n");
    let f = write(env.home.path(), "bomb.yaml", &bomb);
    let started = std::time::Instant::now();
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert!(started.elapsed().as_secs() < 10);
    assert!(
        err["message"].as_str().unwrap().contains("bomb.yaml"),
        "{err}"
    );
}

#[test]
fn bad_input_stale_expected_seq() {
    let (env, run) = Env::with_run();
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"status": "BUSY"}}"#,
    );
    env.ok(&["ws", "patch", &run, "--file", &f]);
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "CONFLICT",
        4,
    );
    assert_eq!(err["retryable"], json!(true));
    assert_eq!(err["details"]["current_seq"], json!(1));
    assert!(err["message"].as_str().unwrap().contains(&run));
}

#[test]
fn bad_input_patch_for_unknown_run() {
    let (env, _) = Env::with_run();
    let f = write(env.home.path(), "p.json", r#"{"expected_seq": 0}"#);
    let err = refused(
        &env,
        &["ws", "patch", "run_nope", "--file", &f],
        None,
        "NOT_FOUND",
        5,
    );
    assert!(err["message"].as_str().unwrap().contains("run_nope"));
}

#[test]
fn bad_input_not_a_store() {
    let env = Env::new();
    let plain = env.home.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let out = env
        .cmd()
        .args(["--json", "--store", plain.to_str().unwrap(), "run", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["category"], json!("NOT_FOUND"));
    assert!(v["error"]["message"].as_str().unwrap().contains("plain"));
    assert!(v["error"]["details"]["hint"]
        .as_str()
        .unwrap()
        .contains("cairn init"));
    assert_eq!(
        std::fs::read_dir(&plain).unwrap().count(),
        0,
        "nothing was written"
    );
    // A git repository that is not a store is not one either.
    std::fs::create_dir_all(env.root()).unwrap();
    env.git(&["init", "-q"]);
    let (code, _) = env.json(&["run", "list"]);
    assert_eq!(code, 5);
}

#[test]
fn bad_input_hand_edits_in_the_way() {
    let (env, run) = Env::with_run();
    std::fs::write(env.ws_file(&run), "# my notes\n").unwrap();
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"status": "BUSY"}}"#,
    );
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "CONFLICT",
        4,
    );
    assert_eq!(err["code"], json!("HAND_EDITS_IN_THE_WAY"));
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("working_set.yaml"));
    // Staged (but not committed) edits are in the way too.
    env.git(&["checkout", "--", "."]);
    std::fs::write(env.ws_file(&run), "# staged\n").unwrap();
    env.git(&["add", "-A"]);
    refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "CONFLICT",
        4,
    );
    // Staged while the file on disk is back to the tip's: only the index
    // shows the edit, in any index format git writes.
    env.git(&["reset", "-q", "--hard"]);
    let tip_bytes = std::fs::read(env.ws_file(&run)).unwrap();
    for version in ["2", "3", "4"] {
        std::fs::write(env.ws_file(&run), "# staged only\n").unwrap();
        env.git(&["add", "-A"]);
        std::fs::write(env.ws_file(&run), &tip_bytes).unwrap();
        env.git(&["update-index", "--index-version", version]);
        let err = refused(
            &env,
            &["ws", "patch", &run, "--file", &f],
            None,
            "CONFLICT",
            4,
        );
        assert_eq!(
            err["code"],
            json!("HAND_EDITS_IN_THE_WAY"),
            "index v{version}"
        );
        env.git(&["reset", "-q"]);
    }
    // With nothing in the way, a version 4 index (paths prefix-compressed)
    // lets the write through.
    env.git(&["update-index", "--index-version", "4"]);
    let (code, out) = env.json(&["ws", "patch", &run, "--file", &f]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn bad_input_invalid_run_id_and_duplicate_run() {
    let (env, run) = Env::with_run();
    let err = refused(
        &env,
        &["run", "boot", "--objective", "x", "--run-id", "../escape"],
        None,
        "VALIDATION",
        3,
    );
    assert!(err["message"].as_str().unwrap().contains("run_id"));
    refused(
        &env,
        &["run", "boot", "--objective", "x", "--run-id", &run],
        None,
        "CONFLICT",
        4,
    );
}

#[test]
fn bad_input_pinned_over_cap_is_refused_not_cut() {
    let (env, run) = Env::with_run();
    let patch = json!({"expected_seq": 0, "set": {"budget": {"max_sliding_tokens": 100, "max_pinned_items": 1}},
        "append": {"pinned_context": [{"id": "p1", "content": "a"}, {"id": "p2", "content": "b"}]}});
    let f = write(env.home.path(), "p.json", &patch.to_string());
    let err = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "VALIDATION",
        3,
    );
    assert_eq!(err["details"]["rule"], json!("max_pinned_items"));
    assert_eq!(err["details"]["pointer"], json!("/pinned_context"));
}

#[test]
fn bad_input_lock_busy_is_transient() {
    let (env, run) = Env::with_run();
    // Hold the store lock from this process (an OS lock, like a live writer).
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(env.root().join(".cairn/lock"))
        .unwrap();
    lock.lock().unwrap();
    let cfg = env.read("cairn.yaml");
    assert!(cfg.contains("lock_timeout_ms: 10000"));
    let f = write(env.home.path(), "p.json", r#"{"expected_seq": 0}"#);
    let before = env.state();
    let started = std::time::Instant::now();
    let (code, out) = env.json(&["ws", "patch", &run, "--file", &f]);
    assert!(started.elapsed().as_secs() >= 9);
    assert_eq!(code, 7, "{out}");
    assert_eq!(out["error"]["category"], json!("TRANSIENT"));
    assert!(out["error"]["message"]
        .as_str()
        .unwrap()
        .contains(".cairn/lock"));
    assert!(out["error"]["details"]["hint"]
        .as_str()
        .unwrap()
        .contains("remove"));
    assert_eq!(env.state(), before);
    drop(lock);
    env.ok(&["ws", "patch", &run, "--file", &f]);
}

#[test]
fn log_follow_streams_new_events() {
    use std::io::{BufRead, BufReader};
    let (env, run) = Env::with_run();
    let mut child = common::cli::cairn(env.home.path())
        .args([
            "--store",
            env.root().to_str().unwrap(),
            "log",
            "--follow",
            "--jsonl",
            "--run",
            &run,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first: Value =
        serde_json::from_str(&rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .unwrap();
    assert_eq!(first["event_type"], json!("RUN_BOOTED"));
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"status": "BUSY"}}"#,
    );
    env.ok(&["ws", "patch", &run, "--file", &f]);
    env.ok(&["run", "boot", "--objective", "another run, filtered out"]);
    let next: Value =
        serde_json::from_str(&rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(next["event_type"], json!("WS_UPDATE_APPLIED"));
    assert_eq!(next["seq"], json!(1));
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "the other run's event is filtered"
    );
}
