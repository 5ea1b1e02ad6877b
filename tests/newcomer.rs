//! Regression tests for issue 23, a newcomer's first hour: errors keep the
//! `--json` envelope whatever failed (usage errors included), identities
//! follow git's rules, messages carry no Rust debug text, and canonical
//! files cannot be deleted by hand behind cairn's back.

mod common;

use common::cli::Env;
use serde_json::{json, Value};

/// Runs cairn with exactly `args` (no `--store`), returns (exit code, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The USAGE envelope a usage error must print under `--json`.
fn usage_envelope(env: &Env, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(env, args);
    let out: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a JSON envelope ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(code, 2, "{out}");
    assert_eq!(out["ok"], json!(false), "{out}");
    assert_eq!(out["error"]["category"], json!("USAGE"), "{out}");
    assert_eq!(out["error"]["code"], json!("USAGE"), "{out}");
    assert!(stderr.is_empty(), "clap's text leaked to stderr: {stderr}");
    out["error"].clone()
}

#[test]
fn issue_23_usage_errors_keep_the_json_envelope() {
    let env = Env::store();
    let root = env.root();
    let store = root.to_str().unwrap();

    let err = usage_envelope(&env, &["bogus", "--json"]);
    assert!(
        err["message"].as_str().unwrap().contains("'bogus'"),
        "{err}"
    );
    assert!(err["details"]["usage"]
        .as_str()
        .unwrap()
        .contains("Usage: cairn"));

    // A missing positional, the flag before or after the subcommand.
    for args in [
        vec!["--store", store, "ws", "patch", "--json"],
        vec!["--json", "--store", store, "ws", "patch"],
    ] {
        let err = usage_envelope(&env, &args);
        let message = err["message"].as_str().unwrap();
        assert!(message.contains("<RUN>"), "{err}");
    }

    // A missing subcommand is a failure too.
    let err = usage_envelope(&env, &["ws", "--json"]);
    assert!(err["details"]["usage"].as_str().unwrap().contains("patch"));

    // An invalid value.
    let err = usage_envelope(&env, &["--json", "log", "--limit", "many"]);
    assert!(err["message"].as_str().unwrap().contains("many"), "{err}");
}

#[test]
fn issue_23_without_json_usage_errors_are_clap_text() {
    let env = Env::store();
    let (code, stdout, stderr) = run(&env, &["bogus"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("unrecognized subcommand 'bogus'"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: cairn"), "{stderr}");

    // `--json` after `--` is a value, not the flag.
    let (code, stdout, _) = run(&env, &["bogus", "--", "--json"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");

    // Help is not a failure, with or without --json.
    for args in [vec!["--help"], vec!["ws", "--help", "--json"]] {
        let (code, stdout, _) = run(&env, &args);
        assert_eq!(code, 0);
        assert!(stdout.contains("Usage: cairn"), "{stdout}");
    }
}

/// `%an|%ae|%cn|%ce` of `rev` in the store.
fn who(env: &Env, rev: &str) -> String {
    env.git(&["log", "-1", "--format=%an|%ae|%cn|%ce", rev])
        .trim()
        .to_string()
}

/// git in the store with the hermetic environment (HOME, no system config,
/// the global config /dev/null unless `vars` say otherwise) and `vars`.
fn hand_git(env: &Env, vars: &[(&str, &str)]) -> std::process::Command {
    let mut git = std::process::Command::new("git");
    common::hermetic(&mut git, env.home.path())
        .env("CAIRN_HOOK_FOREGROUND", "1")
        .current_dir(env.root())
        .envs(vars.iter().copied());
    git
}

/// Runs one cairn write and one hand `git commit` with the same
/// environment `vars` (on top of the hermetic one), and returns who git
/// says made each: (cairn's commit, git's commit).
fn cairn_and_git_with(env: &Env, vars: &[(&str, &str)]) -> (String, String) {
    let out = env
        .cmd()
        .args(["--store", env.root().to_str().unwrap(), "--json"])
        .args(["run", "boot", "--objective", "identity"])
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cairn_commit = env.head();
    let out = hand_git(env, vars)
        .args(["commit", "-q", "--allow-empty", "-m", "hand"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_ne!(env.head(), cairn_commit);
    (who(env, &cairn_commit), who(env, "HEAD"))
}

#[test]
fn issue_23_identity_follows_gits_rules_like_git_commit() {
    let env = Env::store();
    let home = env.home.path();
    // A ~/.gitconfig git must not read while GIT_CONFIG_GLOBAL names another file.
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Home Config\n\temail = home@example.com\n",
    )
    .unwrap();
    let global = home.join("global.gitconfig");
    std::fs::write(
        &global,
        "[user]\n\tname = Global User\n\temail = global@example.com\n[committer]\n\tname = Global Committer\n",
    )
    .unwrap();
    let global = global.to_str().unwrap();

    // The config file GIT_CONFIG_GLOBAL names; committer.name beats user.name.
    let (cairn, git) = cairn_and_git_with(&env, &[("GIT_CONFIG_GLOBAL", global)]);
    assert_eq!(
        cairn,
        "Global User|global@example.com|Global Committer|global@example.com"
    );
    assert_eq!(cairn, git);

    // The environment beats the config, for each field on its own; git's
    // trimming of names applies.
    let vars = [
        ("GIT_CONFIG_GLOBAL", global),
        ("GIT_AUTHOR_NAME", "  <Env Author>. "),
        ("GIT_AUTHOR_EMAIL", "author@example.com"),
        ("GIT_COMMITTER_EMAIL", "committer@example.com"),
    ];
    let (cairn, git) = cairn_and_git_with(&env, &vars);
    assert_eq!(
        cairn,
        "Env Author.|author@example.com|Global Committer|committer@example.com"
    );
    assert_eq!(cairn, git);

    // The ledger's actor is the author.
    let log = env.ok(&["log", "--limit", "3"]);
    let actors: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&"Env Author."), "{log}");

    // Without GIT_CONFIG_GLOBAL, ~/.gitconfig is git's global config.
    let vars = [("GIT_COMMITTER_NAME", "C")];
    let out = env
        .cmd()
        .env_remove("GIT_CONFIG_GLOBAL")
        .args(["--store", env.root().to_str().unwrap(), "--json"])
        .args(["run", "boot", "--objective", "home"])
        .envs(vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cairn_commit = env.head();
    let out = hand_git(&env, &vars)
        .env_remove("GIT_CONFIG_GLOBAL")
        .args(["commit", "-q", "--allow-empty", "-m", "hand"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cairn = who(&env, &cairn_commit);
    assert_eq!(cairn, "Home Config|home@example.com|C|home@example.com");
    assert_eq!(cairn, who(&env, "HEAD"));
}

/// The refused patch's error (VALIDATION, nothing changed), from stdin.
fn refused_patch(env: &Env, run: &str, patch: &[u8]) -> Value {
    common::cli::refused(
        env,
        &["ws", "patch", run, "-"],
        Some(patch),
        "VALIDATION",
        3,
    )
}

/// Text no user should read: Rust's debug rendering of an enum or struct.
fn assert_no_debug_text(message: &str) {
    for leak in ["budget breached", " { ", "Nodes", "Some(", "8388609"] {
        assert!(!message.contains(leak), "{leak:?} in {message:?}");
    }
}

#[test]
fn issue_23_alias_bombs_say_which_budget_they_broke() {
    let (env, run) = Env::with_run();
    let mut bomb = String::from("expected_seq: 0\nset:\n  constraints: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let mut prev = "a".to_string();
    for level in ["b", "c", "d", "e", "f", "g", "h", "i"] {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("  x_{level}: &{level} [{refs}]\n"));
        prev = level.to_string();
    }
    let err = refused_patch(&env, &run, bomb.as_bytes());
    let message = err["message"].as_str().unwrap();
    assert_no_debug_text(message);
    assert!(
        message.contains("4,096")
            && message.contains("aliases make")
            && message.contains("alias bomb"),
        "{message}"
    );
}

#[test]
fn issue_23_sizes_are_in_units_people_read() {
    let (env, run) = Env::with_run();
    let big = format!("expected_seq: 0\n# {}\n", "x".repeat(9 << 20));
    let file = common::cli::write(env.home.path(), "big.yaml", &big);
    let err = common::cli::refused(
        &env,
        &["ws", "patch", &run, "--file", &file],
        None,
        "VALIDATION",
        3,
    );
    let message = err["message"].as_str().unwrap();
    assert_no_debug_text(message);
    assert!(
        message.contains("is 9 MiB, over the limit of 8 MiB"),
        "{message}"
    );
    assert_eq!(err["details"]["limit"], json!(8 << 20));

    // From stdin cairn stops reading past the limit: it does not know the size.
    let err = refused_patch(&env, &run, big.as_bytes());
    let message = err["message"].as_str().unwrap();
    assert_no_debug_text(message);
    assert!(
        message.contains("<stdin> is larger than the limit of 8 MiB"),
        "{message}"
    );
}

#[test]
fn issue_23_a_remove_of_the_wrong_shape_says_what_remove_holds() {
    let (env, run) = Env::with_run();
    for patch in [
        "expected_seq: 0\nremove:\n  pinned_context: [rule1]\n",
        "expected_seq: 0\nremove:\n  - id: rule1\n",
        "expected_seq: 0\nremove: rule1\n",
    ] {
        let err = refused_patch(&env, &run, patch.as_bytes());
        let message = err["message"].as_str().unwrap();
        assert!(message.contains("at /remove"), "{message}");
        assert!(
            message.contains("expected: Ids of context items (pinned or sliding) to remove"),
            "{patch}: {message}"
        );
    }
}

/// The store path of the one file under `prefix` whose name is `file`.
fn tracked(env: &Env, prefix: &str, file: &str) -> String {
    env.git(&["ls-files", prefix])
        .lines()
        .find(|p| p.ends_with(&format!("/{file}")))
        .unwrap_or_else(|| panic!("no {file} under {prefix}"))
        .to_string()
}

/// A hand `git rm PATH` + `git commit`: refused by pre-commit with nothing
/// changed by the refusal; returns the hook's stderr.
fn hand_delete_refused(env: &Env, path: &str) -> String {
    env.git(&["rm", "-q", path]);
    let before = env.state();
    let out = env.git_output(&["commit", "-m", "tidy up"]);
    assert!(
        !out.status.success(),
        "the hand deletion of {path} was committed"
    );
    assert_eq!(env.state(), before, "the refused commit changed something");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn issue_23_canonical_files_cannot_be_deleted_by_hand() {
    let (env, run) = Env::with_run();
    let f = common::cli::write(
        env.home.path(),
        "import.jsonl",
        "{\"content\": \"the parser takes UTF-8 only\", \"type\": \"fact\"}\n",
    );
    env.ok(&["memory", "import", &f]);
    let listed = env.ok(&["memory", "list"]);
    let id = listed["items"][0]["id"].as_str().unwrap().to_string();
    let item = tracked(&env, "memory", &format!("{id}.yaml"));
    let stderr = hand_delete_refused(&env, &item);
    assert!(stderr.contains("kept_file_deleted"), "{stderr}");
    assert!(stderr.contains("cairn memory"), "{stderr}");
    assert!(stderr.contains(&format!("git restore --staged --worktree {item}")));
    env.git(&["restore", "--staged", "--worktree", &item]);

    // Run files and trusted state too.
    let ws = tracked(&env, "runs", "working_set.yaml");
    assert!(ws.contains(&run));
    let stderr = hand_delete_refused(&env, &ws);
    assert!(stderr.contains("kept_file_deleted"), "{stderr}");
    env.git(&["restore", "--staged", "--worktree", &ws]);
    env.ok(&["project", "add", "alpha"]);
    env.ok(&["state", "set", "alpha", "build", "tool", "cargo"]);
    let state = tracked(&env, "state", "alpha.yaml");
    let stderr = hand_delete_refused(&env, &state);
    assert!(stderr.contains("cairn state invalidate alpha"), "{stderr}");
    env.git(&["restore", "--staged", "--worktree", &state]);
    assert!(env.git(&["status", "--porcelain"]).trim().is_empty());

    // Past the hooks: fsck names the commit, history still has the item.
    env.git(&["rm", "-q", &item]);
    env.git(&["commit", "-q", "--no-verify", "-m", "tidy up"]);
    let bypass = env.head();
    let findings = env.fsck_findings();
    let found = findings
        .iter()
        .find(|f| f["rule"] == json!("kept_file_deleted"))
        .unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(found["subject"], json!(item));
    assert_eq!(found["commit"], json!(bypass));
    let (code, _) = env.json(&["memory", "show", &id]);
    assert_eq!(code, 5);
    let history = env.ok(&["memory", "history", &id]);
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{history}");
    assert_eq!(
        versions[0]["item"]["content"],
        json!("the parser takes UTF-8 only")
    );
    let (code, out) = env.json(&["memory", "history", "mem_never"]);
    assert_eq!(code, 5, "{out}");

    // The repair puts it back.
    let repaired = env.ok(&["fsck", "--repair"]);
    assert!(
        repaired["actions"][0]
            .as_str()
            .unwrap()
            .contains("deleted by hand"),
        "{repaired}"
    );
    env.ok(&["fsck"]);
    assert_eq!(
        env.ok(&["memory", "show", &id])["content"],
        json!("the parser takes UTF-8 only")
    );
}

#[test]
fn issue_23_the_brief_says_what_it_left_out_and_keeps_what_is_trusted() {
    let env = Env::store();
    let run = env.ok(&[
        "run",
        "boot",
        "--objective",
        "Fix the parser",
        "--criterion",
        "the parser tests pass",
        "--constraint",
        "No new dependencies in the parser",
    ])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = json!({"expected_seq": 0, "set": {"next_action": "Read the parser errors"},
    "append": {
        "pinned_context": [{"id": "pin-utf8", "content": "The parser takes UTF-8 only and refuses anything else with a clear error", "priority": 9}],
        "sliding_context": [
            {"id": "obs-1", "content": "the parser keeps line numbers for every token it reads", "priority": 3},
            {"id": "obs-2", "content": "parser errors today name the byte offset, not the line", "priority": 4}
        ]}});
    let f = common::cli::write(env.home.path(), "patch.json", &patch.to_string());
    env.ok(&["ws", "patch", &run, "--file", &f]);
    // Noise: keyword-heavy items that fill the memory slots.
    let mut lines = String::new();
    for i in 0..30 {
        lines.push_str(&format!(
            "{}\n",
            json!({"id": format!("noise_{i:02}"), "content": format!("parser parser parser turn {i}: the user said parser again and the parser answered"), "type": "episodic"})
        ));
    }
    let f = common::cli::write(env.home.path(), "noise.jsonl", &lines);
    env.ok(&["memory", "import", &f]);
    env.ok(&[
        "milestone",
        &run,
        "--reason",
        "parser errors understood",
        "--next-entry-point",
        "Start at the error type of the parser",
    ]);

    // Loose: memory ids are shown, the milestone too, nothing is left out.
    let loose = env.ok(&["brief", &run, "--format", "json"]);
    let md = loose["markdown"].as_str().unwrap();
    assert!(md.contains("(mem_"), "memory ids are shown:\n{md}");
    assert!(md.contains("## Last milestone (ep_"), "{md}");
    assert!(
        md.contains("Next entry point: Start at the error type of the parser"),
        "{md}"
    );
    assert!(!md.contains("## Left out"), "{md}");

    // Tight: pinned and constraints stay, the rest goes least trusted first
    // and the brief says so, one line per section.
    let tight = env.ok(&["brief", &run, "--format", "json", "--budget", "120"]);
    let md = tight["markdown"].as_str().unwrap();
    assert!(md.contains("No new dependencies in the parser"), "{md}");
    assert!(md.contains("The parser takes UTF-8 only"), "{md}");
    assert!(md.contains("the parser tests pass"), "{md}");
    assert!(!md.contains("(mem_"), "{md}");
    let left_out = md
        .split("## Left out\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{md}"));
    let dropped = tight["dropped"].as_array().unwrap();
    let memories = dropped
        .iter()
        .filter(|d| d["section"] == json!("memories"))
        .count();
    assert!(memories > 0, "{tight}");
    assert!(
        left_out.contains(&format!("- memories: {memories} items (")),
        "{left_out}"
    );
    assert!(left_out.contains("recent context: 2 items ("), "{left_out}");
    assert!(dropped
        .iter()
        .all(|d| d["section"] == json!("memories") || d["section"] == json!("sliding")));

    // Tighter than the trusted sections: they stay and the brief says it is over.
    let tiny = env.ok(&["brief", &run, "--format", "json", "--budget", "10"]);
    let md = tiny["markdown"].as_str().unwrap();
    assert!(md.contains("The parser takes UTF-8 only"), "{md}");
    assert!(md.contains("over the budget of 10"), "{md}");
    assert!(tiny["used"].as_u64().unwrap() > 10);
}
