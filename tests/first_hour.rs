//! Regression tests for issue 23's everyday commands and discoverability,
//! through the real CLI: `run show` / `run close` (a closed run refuses
//! patches), `memory delete`, completions and the man page, help that
//! groups global flags and offers write flags only on writes, the example
//! MCR file and schema long names, hand edits of memory items, a plain
//! `git pull` of divergent clones, and the brief's project fallback and
//! relevance floor.

mod common;

use common::cli::{refused, write, Env};
use common::net::Net;
use serde_json::{json, Value};

/// Runs cairn with exactly `args` (no `--store`, no `--json`): (exit code, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The stdout of a command that must succeed.
fn stdout(env: &Env, args: &[&str]) -> String {
    let (code, out, err) = run(env, args);
    assert_eq!(code, 0, "cairn {args:?}: {err}");
    out
}

fn patch(env: &Env, run: &str, doc: &Value) -> Value {
    let f = write(env.home.path(), "patch.json", &doc.to_string());
    env.ok(&["ws", "patch", run, "--file", &f])
}

/// Imports active memory items (JSON objects with an external `id`, one a
/// line); returns the ids cairn gave them, in order.
fn import(env: &Env, items: &[Value]) -> Vec<String> {
    let lines: String = items.iter().map(|i| format!("{i}\n")).collect();
    let f = write(env.home.path(), "items.jsonl", &lines);
    env.ok(&["memory", "import", &f]);
    let listed = env.ok(&["memory", "list"]);
    let listed = listed["items"].as_array().unwrap();
    items
        .iter()
        .map(|i| {
            let mark = json!(format!("import:{}", i["id"].as_str().unwrap()));
            let found = listed
                .iter()
                .find(|m| m["source_refs"].as_array().unwrap().contains(&mark))
                .unwrap_or_else(|| panic!("{mark} not imported"));
            found["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn status_of(env: &Env, id: &str) -> Value {
    env.ok(&["memory", "show", id])["status"].clone()
}

#[test]
fn issue_23_run_show_and_close_and_a_closed_run_refuses_patches() {
    let (env, run) = Env::with_run();
    patch(
        &env,
        &run,
        &json!({"expected_seq": 0, "set": {"next_action": "Write the grammar"}}),
    );
    env.ok(&[
        "milestone",
        &run,
        "--reason",
        "grammar drafted",
        "--next-entry-point",
        "the lexer",
    ]);
    let shown = env.ok(&["run", "show", &run]);
    assert_eq!(shown["working_set"]["_update_seq"], json!(1), "{shown}");
    assert_eq!(shown["episodes"], json!(1));
    assert_eq!(
        shown["last_episode"]["next_entry_point"],
        json!("the lexer")
    );
    let text = stdout(
        &env,
        &["--store", env.root().to_str().unwrap(), "run", "show", &run],
    );
    assert!(text.contains("next action: Write the grammar"), "{text}");
    assert!(text.contains("criterion: tests pass"), "{text}");
    assert!(text.contains("grammar drafted; next: the lexer"), "{text}");
    refused(&env, &["run", "show", "run_nope"], None, "NOT_FOUND", 5);

    // A second, open run stays in the list.
    let other = env.boot();
    let closed = env.ok(&[
        "run",
        "close",
        &run,
        "--outcome",
        "failed",
        "--summary",
        "the grammar is ambiguous",
    ]);
    let ws = &closed["working_set"];
    assert_eq!(ws["status"], json!("FAILED"));
    assert_eq!(ws["_update_seq"], json!(2));
    assert_eq!(ws["closed"]["summary"], json!("the grammar is ambiguous"));
    assert_eq!(closed["event"]["event_type"], json!("RUN_CLOSED"));
    assert_eq!(closed["event"]["seq"], json!(2));

    // Patches are refused, clearly, and change nothing.
    let f = write(
        env.home.path(),
        "late.json",
        &json!({"expected_seq": 2, "set": {"status": "BUSY"}}).to_string(),
    );
    let e = refused(
        &env,
        &["ws", "patch", &run, "--file", &f],
        None,
        "POLICY",
        6,
    );
    assert_eq!(e["code"], json!("RUN_CLOSED"), "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("closed") && msg.contains(&run), "{msg}");
    // Closing again is refused too.
    let e = refused(&env, &["run", "close", &run], None, "POLICY", 6);
    assert_eq!(e["code"], json!("RUN_CLOSED"));
    refused(
        &env,
        &["run", "close", &other, "--outcome", "maybe"],
        None,
        "USAGE",
        2,
    );

    // It leaves the list of open runs; --all shows it, marked.
    let open: Vec<Value> = env.ok(&["run", "list"])["runs"].as_array().unwrap().clone();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["run_id"], json!(other));
    let all = env.ok(&["run", "list", "--all"]);
    assert_eq!(all["runs"].as_array().unwrap().len(), 2);
    let listed = stdout(
        &env,
        &["--store", env.root().to_str().unwrap(), "run", "list"],
    );
    assert!(
        listed.contains("1 closed run(s) not shown (--all)"),
        "{listed}"
    );

    // The ledger and fsck agree with the working set.
    let log = env.ok(&["log", "--run", &run, "--type", "RUN_CLOSED"]);
    assert_eq!(log["events"].as_array().unwrap().len(), 1);
    env.ok(&["fsck"]);
    // The other run still takes patches.
    patch(
        &env,
        &other,
        &json!({"expected_seq": 0, "set": {"status": "BUSY"}}),
    );
}

#[test]
fn issue_23_memory_delete_goes_through_the_gate_or_its_logged_override() {
    let (env, run) = Env::with_run();
    let ids = import(
        &env,
        &[
            json!({"id": "make", "content": "the build uses make", "type": "fact"}),
            json!({"id": "fast", "content": "the flag --fast exists", "type": "fact"}),
        ],
    );
    // Staged: a one-item delete batch, the item still active until a milestone.
    let staged = env.ok(&[
        "memory",
        "delete",
        &ids[0],
        "--reason",
        "we moved to cargo",
        "--run",
        &run,
    ]);
    let batch = staged["proposed"]["batch_id"].as_str().unwrap().to_string();
    assert_eq!(staged["committed"], Value::Null);
    let mcrs = &staged["proposed"]["batch"]["items"];
    assert_eq!(mcrs.as_array().unwrap().len(), 1, "{staged}");
    assert_eq!(mcrs[0]["op"], json!("delete"));
    assert_eq!(mcrs[0]["rationale"], json!("we moved to cargo"));
    assert_eq!(status_of(&env, &ids[0]), json!("active"));
    env.ok(&[
        "milestone",
        &run,
        "--reason",
        "cleanup",
        "--commit-batch",
        &batch,
    ]);
    assert_eq!(status_of(&env, &ids[0]), json!("invalid"));

    // The documented override commits at once, logged as such.
    let now = env.ok(&[
        "memory",
        "delete",
        &ids[1],
        "--reason",
        "the flag was removed",
        "--run",
        &run,
        "--allow-outside-milestone",
    ]);
    assert_eq!(
        now["committed"]["event"]["event_type"],
        json!("MEMORY_COMMITTED")
    );
    assert_eq!(status_of(&env, &ids[1]), json!("invalid"));
    // History keeps every version.
    let history = env.ok(&["memory", "history", &ids[1]]);
    assert!(
        history["versions"].as_array().unwrap().len() >= 2,
        "{history}"
    );

    // A delete of something that is not an item, or without a reason, changes nothing.
    let e = refused(
        &env,
        &[
            "memory",
            "delete",
            "mem_01KKJZS2YFSTBQQ5W6ASQZ1Y2K",
            "--reason",
            "r",
            "--run",
            &run,
        ],
        None,
        "VALIDATION",
        3,
    );
    assert!(
        e["message"].as_str().unwrap().contains("no memory item"),
        "{e}"
    );
    refused(
        &env,
        &["memory", "delete", &ids[1], "--run", &run],
        None,
        "USAGE",
        2,
    );
    env.ok(&["fsck"]);
}

#[test]
fn issue_23_completions_for_bash_zsh_and_fish_and_a_man_page() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let script = stdout(&env, &["completions", shell]);
        assert!(script.contains(marker), "{shell}: {script:.300}");
        // Subcommands and their own flags are completed.
        for word in [
            "memory",
            "propose",
            "close",
            "outcome",
            "allow-outside-milestone",
        ] {
            assert!(script.contains(word), "{shell} misses {word}");
        }
    }
    // The bash script is valid bash.
    let bash = stdout(&env, &["completions", "bash"]);
    let f = write(env.home.path(), "cairn.bash", &bash);
    let check = std::process::Command::new("bash").args(["-n", &f]).output();
    if let Ok(out) = check {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, _, err) = run(&env, &["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");

    let page = stdout(&env, &["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH cairn"),
        "{page:.300}"
    );
    assert!(page.contains("memory"), "{page:.300}");
    let dir = env.home.path().join("man1");
    let out = env.ok(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(dir.join("cairn.1").is_file(), "{out}");
    assert!(dir.join("cairn-run-close.1").is_file(), "{out}");
}

#[test]
fn issue_23_help_groups_global_flags_and_offers_write_flags_only_on_writes() {
    let (env, run) = Env::with_run();
    let help = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--help");
        stdout(&env, &a)
    };
    for read in [
        &["log"][..],
        &["search"],
        &["brief"],
        &["ws", "show"],
        &["run", "list"],
        &["memory", "list"],
    ] {
        let h = help(read);
        assert!(h.contains("Global options:"), "{read:?}: {h}");
        assert!(
            h.contains("--json") && h.contains("--store"),
            "{read:?}: {h}"
        );
        assert!(!h.contains("--idempotency-key"), "{read:?}: {h}");
        assert!(!h.contains("Write options"), "{read:?}: {h}");
    }
    // `log --actor` is a filter, said so.
    let log = help(&["log"]);
    assert!(log.contains("--actor <NAME>"), "{log}");
    assert!(log.contains("it does not set who writes"), "{log}");
    assert!(!help(&["search"]).contains("--actor"));
    for write_cmd in [
        &["run", "boot"][..],
        &["ws", "patch"],
        &["memory", "propose"],
        &["milestone"],
    ] {
        let h = help(write_cmd);
        assert!(h.contains("Write options:"), "{write_cmd:?}: {h}");
        assert!(
            h.contains("--actor <NAME>") && h.contains("--idempotency-key <KEY>"),
            "{h}"
        );
    }
    // Writes that do not replay a retry take --actor only.
    let sync = help(&["sync"]);
    assert!(
        sync.contains("--actor") && !sync.contains("--idempotency-key"),
        "{sync}"
    );

    // After the command or before it, a write flag works...
    env.ok(&[
        "run",
        "boot",
        "--objective",
        "x",
        "--actor",
        "Agent Smith <smith@example.com>",
    ]);
    assert_eq!(
        env.git(&["log", "-1", "--format=%an <%ae>"]).trim(),
        "Agent Smith <smith@example.com>"
    );
    let f = write(
        env.home.path(),
        "p.json",
        r#"{"expected_seq": 0, "set": {"status": "BUSY"}}"#,
    );
    let first = env.ok(&["ws", "patch", &run, "--file", &f, "--idempotency-key", "k1"]);
    let again = env.ok(&["--idempotency-key", "k1", "ws", "patch", &run, "--file", &f]);
    assert_eq!(again["replayed"], json!(true));
    assert_eq!(again["event"]["commit"], first["event"]["commit"]);
    // ...and a read refuses one, as a usage error (under --json too).
    let e = refused(&env, &["--idempotency-key", "k2", "log"], None, "USAGE", 2);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("`cairn log` does not take it"),
        "{e}"
    );
    refused(&env, &["search", "x", "--actor", "me"], None, "USAGE", 2);
    // log's own --actor filters.
    let by = env.ok(&["log", "--actor", "Agent Smith"]);
    assert_eq!(by["events"].as_array().unwrap().len(), 1, "{by}");
}

/// The example MCR file of `memory propose --help`, as it stands in the help.
fn example_mcrs(help: &str) -> String {
    let start = help
        .find("  # add:")
        .expect("the example starts with the add");
    let end = help[start..].find("\n\n").map_or(help.len(), |e| start + e);
    help[start..end]
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn issue_23_the_propose_help_example_works_and_schemas_answer_to_long_names() {
    let (env, run) = Env::with_run();
    let help = stdout(&env, &["memory", "propose", "--help"]);
    let example = example_mcrs(&help);
    for op in ["op: add", "op: update", "op: supersede", "op: delete"] {
        assert!(example.contains(op), "{op} missing from:\n{example}");
    }
    // The example with its ids made real stages and commits as shown.
    let ids = import(
        &env,
        &[
            json!({"id": "a", "content": "The parser accepts UTF-8 input only.", "type": "fact", "scope": "project", "scope_id": "parser"}),
            json!({"id": "b", "content": "Releases are cut on Mondays.", "type": "decision"}),
            json!({"id": "c", "content": "The --legacy flag exists.", "type": "fact"}),
        ],
    );
    let mut file = example.clone();
    let placeholders: Vec<&str> = example
        .lines()
        .filter_map(|l| l.trim().strip_prefix("target_id: "))
        .collect();
    assert_eq!(placeholders.len(), 3, "{example}");
    for (placeholder, id) in placeholders.iter().zip(&ids) {
        file = file.replace(placeholder, id);
    }
    let f = write(env.home.path(), "mcrs.yaml", &file);
    let staged = env.ok(&["memory", "propose", &run, "--file", &f]);
    let batch = staged["batch_id"].as_str().unwrap();
    env.ok(&[
        "milestone",
        &run,
        "--reason",
        "example",
        "--commit-batch",
        batch,
    ]);
    assert_eq!(
        env.ok(&["memory", "show", &ids[0]])["content"],
        json!("The parser accepts UTF-8 and UTF-16 input.")
    );
    assert_eq!(status_of(&env, &ids[1]), json!("superseded"));
    assert_eq!(status_of(&env, &ids[2]), json!("invalid"));
    let added = env.ok(&["memory", "list", "--tag", "encoding"]);
    assert_eq!(added["count"], json!(1), "{added}");

    // The README shows the same kind of file.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for op in [
        "- op: add",
        "- op: update",
        "- op: supersede",
        "- op: delete",
    ] {
        assert!(readme.contains(op), "README lacks {op}");
    }

    // Schema names: short, long, file name, any case.
    let mcr = env.ok(&["schema", "show", "mcr"]);
    for name in [
        "memory_change_request",
        "Memory-Change-Request",
        "mcr.v2.1.schema.json",
    ] {
        assert_eq!(env.ok(&["schema", "show", name]), mcr, "{name}");
    }
    assert_eq!(
        env.ok(&["schema", "show", "memory_change_request_batch"]),
        env.ok(&["schema", "show", "mcr_batch"])
    );
    let list = env.ok(&["schema", "list"]);
    assert_eq!(list["aliases"]["memory_change_request"], json!("mcr"));
    refused(
        &env,
        &["schema", "show", "memory_thing"],
        None,
        "NOT_FOUND",
        5,
    );
}

#[test]
fn issue_23_a_hand_edit_of_a_memory_item_bumps_updated_at_in_its_own_quotes() {
    let env = Env::store();
    let id = import(
        &env,
        &[json!({"id": "utf8", "content": "the parser takes UTF-8", "type": "fact"})],
    )
    .remove(0);
    let path = env
        .git(&["ls-files", "memory"])
        .lines()
        .find(|l| l.contains(&id))
        .unwrap()
        .to_string();
    let before = env.ok(&["memory", "show", &id]);
    let commit = |now: &str| {
        env.git_cmd()
            .env("CAIRN_NOW", now)
            .args(["commit", "-q", "-am", "hand edit"])
            .output()
            .unwrap()
    };

    // 1. The file as cairn wrote it (double quotes), content edited by hand
    //    with a comment: only updated_at changes besides.
    let original = env.read(&path);
    let stamp = original
        .lines()
        .find(|l| l.starts_with("updated_at: "))
        .unwrap()
        .to_string();
    assert!(stamp.starts_with("updated_at: \""), "{original}");
    let edited = original.replace(
        "content: the parser takes UTF-8",
        "content: \"the parser takes UTF-8 only\" # checked",
    );
    assert_ne!(edited, original, "{original}");
    env.put(&path, &edited);
    let out = commit("2026-02-01T00:00:00Z");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = env.git(&["show", &format!("HEAD:{path}")]);
    let new_stamp = committed
        .lines()
        .find(|l| l.starts_with("updated_at: "))
        .unwrap();
    assert!(
        new_stamp.starts_with("updated_at: \"2026-02-01T00:00:00"),
        "{committed}"
    );
    assert_eq!(
        committed.replace(new_stamp, &stamp),
        edited,
        "nothing but updated_at changed"
    );
    assert_eq!(
        env.read(&path),
        committed,
        "the work tree holds what was committed"
    );
    let after = env.ok(&["memory", "show", &id]);
    assert_eq!(after["content"], json!("the parser takes UTF-8 only"));
    assert_eq!(after["created_at"], before["created_at"]);
    assert_ne!(after["updated_at"], before["updated_at"]);

    // 2. A file whose updated_at is single-quoted keeps single quotes.
    let single = committed
        .replace(new_stamp, &new_stamp.replace('"', "'"))
        .replace("UTF-8 only\"", "UTF-8 only, always\"");
    env.put(&path, &single);
    assert!(commit("2026-03-01T00:00:00Z").status.success());
    let committed = env.git(&["show", &format!("HEAD:{path}")]);
    assert!(
        committed.contains("updated_at: '2026-03-01T00:00:00"),
        "{committed}"
    );

    // 3. An edit that sets updated_at itself is left as written.
    let own = committed
        .lines()
        .map(|l| {
            if l.starts_with("updated_at: ") {
                "updated_at: \"2026-03-05T12:00:00Z\"".to_string()
            } else {
                l.replace("always", "always and everywhere")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    env.put(&path, &own);
    assert!(commit("2026-04-01T00:00:00Z").status.success());
    assert_eq!(env.git(&["show", &format!("HEAD:{path}")]), own);
    env.ok(&["fsck"]);
}

#[test]
fn issue_23_a_plain_git_pull_of_divergent_clones_merges() {
    let (net, a) = Net::new();
    let b = net.clone("b", true);
    for c in [&a, &b] {
        assert_eq!(c.git(&["config", "--local", "pull.rebase"]).trim(), "false");
    }
    a.ok(&["state", "set", "proj", "deploy", "region", "eu-west"]);
    b.ok(&["state", "set", "proj", "owner", "team", "parsers"]);
    a.ok(&["sync"]);
    let (theirs, ours) = (a.head(), b.head());
    // No flags: what a newcomer types.
    let out = b.git_output(&["pull", "--no-edit"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("Need to specify how to reconcile"), "{err}");
    // A merge of both sides (the post-merge hook may commit after it).
    for side in [&theirs, &ours] {
        let merged = b.git_output(&["merge-base", "--is-ancestor", side, "HEAD"]);
        assert!(merged.status.success(), "{side} is not in HEAD");
    }
    let merges = b.git(&["rev-list", "--merges", &format!("{ours}..HEAD")]);
    assert_eq!(merges.lines().count(), 1, "one merge commit: {merges}");
    let state = b.ok(&["state", "get", "proj"]).to_string();
    assert!(
        state.contains("eu-west") && state.contains("parsers"),
        "{state}"
    );
    b.assert_healthy();
}

#[test]
fn issue_23_a_run_without_project_gets_the_only_or_the_folders_project() {
    let env = Env::store();
    env.ok(&["project", "add", "parser"]);
    env.ok(&["state", "set", "parser", "status", "phase", "beta"]);
    let run = env.boot();
    assert_eq!(env.ok(&["ws", "show", &run]).get("project"), None);
    let b = env.ok(&["brief", &run, "--format", "json"]);
    assert_eq!(b["project"], json!("parser"));
    assert_eq!(b["project_from"], json!("only"));
    let md = b["markdown"].as_str().unwrap();
    assert!(
        md.contains("## Trusted project state: parser (curated; the store's only project"),
        "{md}"
    );
    assert!(md.contains("**status / phase**: beta"), "{md}");

    // Two projects: none is guessed, but the folder the brief runs in names one.
    env.ok(&["project", "add", "website", "--alias", "www"]);
    env.ok(&["state", "set", "website", "status", "phase", "launch"]);
    let b = env.ok(&["brief", &run, "--format", "json"]);
    assert_eq!(b.get("project"), None, "{b}");
    assert!(!b["markdown"]
        .as_str()
        .unwrap()
        .contains("Trusted project state"));
    let folder = env.home.path().join("www").join("src");
    std::fs::create_dir_all(&folder).unwrap();
    let out = env
        .cmd()
        .current_dir(&folder)
        .args(["--store", env.root().to_str().unwrap(), "brief", &run])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("## Trusted project state: website"), "{md}");
    assert!(md.contains("**status / phase**: launch"), "{md}");
    // --project names it too; an unknown name is refused, not ignored.
    let b = env.ok(&["brief", &run, "--format", "json", "--project", "PARSER"]);
    assert_eq!(b["project"], json!("parser"));
    refused(
        &env,
        &["brief", &run, "--project", "nope"],
        None,
        "USAGE",
        2,
    );
    // A run that names its project keeps it.
    let own = env.ok(&["run", "boot", "--objective", "site", "--project", "www"])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = env.ok(&["brief", &own, "--format", "json", "--project", "parser"]);
    assert_eq!(b["project"], json!("website"));
    assert_eq!(b["project_from"], json!("run"));
}

/// How many noise turns the relevance test imports (CAIRN_TEST_NOISE to change).
fn noise_turns() -> usize {
    std::env::var("CAIRN_TEST_NOISE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

#[test]
fn issue_23_the_brief_leaves_out_weak_matches_and_ranks_facts_above_turns() {
    let env = Env::store();
    env.ok(&["project", "add", "parser"]);
    let run = env.ok(&[
        "run",
        "boot",
        "--project",
        "parser",
        "--objective",
        "Fix the parser error messages",
    ])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    patch(
        &env,
        &run,
        &json!({"expected_seq": 0, "set": {"next_action": "Make parser errors name the line"}}),
    );
    // Noise: keyword-heavy conversation turns that all say "parser".
    let mut items: Vec<Value> = (0..noise_turns())
        .map(|i| {
            json!({"id": format!("noise_{i:05}"), "type": "episodic",
                "content": format!("turn {i}: the user asked about the parser again and the parser parser parser answered"),
                "tags": [format!("session:s{}", i / 40)]})
        })
        .collect();
    // A few short, exact facts and decisions, and one off-topic.
    let facts = [
        (
            "fact_line",
            "fact",
            "global",
            None,
            "Parser errors must name the line and column",
        ),
        (
            "decision_msg",
            "decision",
            "project",
            Some("parser"),
            "Error messages quote the offending token",
        ),
        (
            "fact_utf8",
            "fact",
            "project",
            Some("parser"),
            "The parser takes UTF-8 only",
        ),
        (
            "turn_error",
            "episodic",
            "global",
            None,
            "the user said the error messages of the parser were confusing",
        ),
        (
            "fact_deploy",
            "fact",
            "global",
            None,
            "Deploys go through the staging cluster",
        ),
    ];
    for (id, kind, scope, scope_id, content) in facts {
        let mut item = json!({"id": id, "type": kind, "scope": scope, "content": content});
        if let Some(s) = scope_id {
            item["scope_id"] = json!(s);
        }
        items.push(item);
    }
    import(&env, &items);

    let b = env.ok(&["brief", &run, "--format", "json"]);
    let md = b["markdown"].as_str().unwrap();
    let memories = md
        .split("## Relevant memories\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap_or_else(|| panic!("{md}"));
    let lines: Vec<&str> = memories.lines().filter(|l| l.starts_with("- ")).collect();
    // Only the memories that match the objective and next action well.
    assert!(!memories.contains("turn 1"), "noise took a slot:\n{md}");
    assert!(!memories.contains("Deploys"), "{md}");
    for want in [
        "Parser errors must name the line and column",
        "Error messages quote the offending token",
        "the error messages of the parser were confusing",
    ] {
        assert!(memories.contains(want), "{want} missing:\n{md}");
    }
    // Nothing else but the fact in the run's project (it shares only the
    // word every turn has, so the floor may leave it out too).
    assert!(
        lines.len() == 3 || (lines.len() == 4 && memories.contains("UTF-8 only")),
        "{memories}"
    );
    // Decisions and facts above the conversation turn that matches as well.
    let pos = |s: &str| lines.iter().position(|l| l.contains(s)).unwrap();
    assert!(pos("the error messages of the parser") > pos("Parser errors must name"));
    assert!(pos("the error messages of the parser") > pos("Error messages quote"));
    // The brief says what the floor left out.
    let below = b["below_floor"].as_u64().unwrap();
    assert!(below > 0, "{b}");
    let left_out = md
        .split("## Left out\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{md}"));
    assert!(
        left_out.contains(&format!("memories: {below} weaker matches of the objective and next action (below the relevance floor)")),
        "{left_out}"
    );
}
