//! Agent integration end to end, through the real binary: `cairn setup`
//! for each client (empty configs, foreign entries kept, idempotent,
//! `--remove` byte for byte, `--check` states, `--dry-run`, bad configs
//! refused), the session-start hook's output in each client's schema, every
//! failure mode failing open, and capture on stop (retries, the kill
//! switch, truncation, eight concurrent hooks on one store).
//!
//! Hook inputs are the documented stdin JSON of each client, kept under
//! `tests/fixtures/agents/<client>/` with `{{PLACEHOLDERS}}` for the paths
//! and texts a test chooses.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{cairn, Env, NOW};
use serde_json::{json, Value};

const CLIENTS: [&str; 3] = ["claude", "codex", "cursor"];
const PROMPT: &str = "Please explain how the parser handles nested blocks";

fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `text` with each `{{KEY}}` replaced by `value`, escaped for a JSON string.
fn fill(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        let escaped = serde_json::to_string(v).unwrap();
        out = out.replace(&format!("{{{{{k}}}}}"), &escaped[1..escaped.len() - 1]);
    }
    out
}

/// The cairn binary in HOME, with the fixed clock, fed `stdin`.
fn hook_cmd(env: &Env, client: &str, hook: &str, extra: &[(&str, &str)]) -> Command {
    let mut c = cairn(env.home.path());
    c.env("CAIRN_NOW", NOW)
        .current_dir(env.home.path())
        .args(["hook-agent", client, hook]);
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

struct HookRun {
    code: i32,
    stdout: String,
    elapsed: Duration,
}

fn run_hook(env: &Env, client: &str, hook: &str, stdin: &[u8], extra: &[(&str, &str)]) -> HookRun {
    use std::io::Write;
    let started = Instant::now();
    let mut child = hook_cmd(env, client, hook, extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().unwrap();
    HookRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn transcript_name(client: &str) -> &'static str {
    match client {
        "codex" => "codex/rollout.jsonl",
        _ => "claude/transcript.jsonl",
    }
}

/// A stop payload of `client` for one turn, its transcript written beside HOME.
fn stop_input(
    env: &Env,
    client: &str,
    session: &str,
    turn: &str,
    prompt: &str,
    response: &str,
) -> Vec<u8> {
    let dir = env.home.path().join("transcripts");
    std::fs::create_dir_all(&dir).unwrap();
    let transcript = dir.join(format!("{client}-{session}-{turn}.jsonl"));
    let tname = if client == "cursor" {
        "cursor/transcript.jsonl"
    } else {
        transcript_name(client)
    };
    std::fs::write(&transcript, fill(&fixture(tname), &[("PROMPT", prompt)])).unwrap();
    let root = env.root();
    let vars = [
        ("SESSION", session),
        ("TURN", turn),
        ("CWD", root.to_str().unwrap()),
        ("TRANSCRIPT", transcript.to_str().unwrap()),
        ("RESPONSE", response),
    ];
    fill(&fixture(&format!("{client}/stop.json")), &vars).into_bytes()
}

fn start_input(env: &Env, client: &str, session: &str, source: &str) -> Vec<u8> {
    let root = env.root();
    let vars = [
        ("SESSION", session),
        ("CWD", root.to_str().unwrap()),
        ("TRANSCRIPT", "/nonexistent/transcript.jsonl"),
        ("SOURCE", source),
    ];
    fill(&fixture(&format!("{client}/session_start.json")), &vars).into_bytes()
}

fn interactions(env: &Env, run: &str) -> Vec<Value> {
    env.ok(&["interactions", run])["interactions"]
        .as_array()
        .unwrap()
        .clone()
}

fn captured_events(env: &Env) -> usize {
    env.ok(&["log", "--type", "INTERACTION_CAPTURED"])["events"]
        .as_array()
        .unwrap()
        .len()
}

fn agent_log(env: &Env) -> String {
    std::fs::read_to_string(env.root().join(".cairn/agent.log")).unwrap_or_default()
}

/// Commits a change to `cairn.yaml` by hand (the git hooks check it).
fn set_config(env: &Env, extra: &str) {
    env.edit("cairn.yaml", |t| format!("{t}{extra}"));
    env.git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qam",
        "agents settings",
    ]);
}

// ---------------------------------------------------------------- setup

/// A project folder beside the store (setup there names the store with --store).
struct Project {
    env: Env,
    dir: PathBuf,
}

impl Project {
    fn new() -> Project {
        let env = Env::store();
        let dir = env.home.path().join("project");
        std::fs::create_dir_all(&dir).unwrap();
        Project { env, dir }
    }

    fn setup(&self, args: &[&str]) -> (i32, Value) {
        let out = self
            .env
            .cmd()
            .current_dir(&self.dir)
            .arg("--store")
            .arg(self.env.root())
            .arg("--json")
            .arg("setup")
            .args(args)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), v)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, v) = self.setup(args);
        assert_eq!(code, 0, "setup {args:?}: {v}");
        v["data"].clone()
    }

    /// Every file under the project folder, with its bytes.
    fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        walkdir::WalkDir::new(&self.dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
            .collect()
    }

    fn dirs(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(&self.dir)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.path().to_path_buf())
            .collect()
    }

    fn put(&self, rel: &str, text: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn json(&self, rel: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join(rel)).unwrap()).unwrap()
    }

    fn text(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).unwrap()
    }

    /// Seeds each client's config files with foreign entries.
    fn seed_foreign(&self, client: &str) {
        match client {
            "claude" => {
                self.put(
                    ".claude/settings.json",
                    &fixture("configs/claude_settings.json"),
                );
                self.put(".mcp.json", &fixture("configs/mcp.json"));
            }
            "codex" => {
                self.put(".codex/hooks.json", &fixture("configs/codex_hooks.json"));
                self.put(".codex/config.toml", &fixture("configs/codex_config.toml"));
            }
            _ => {
                self.put(".cursor/hooks.json", &fixture("configs/cursor_hooks.json"));
                self.put(".cursor/mcp.json", &fixture("configs/mcp.json"));
            }
        }
    }
}

fn commands_of(hooks: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![hooks.clone()];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(c)) = m.get("command") {
                    out.push(c.clone());
                }
                stack.extend(m.into_iter().map(|(_, v)| v));
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out.sort();
    out
}

#[test]
fn setup_into_empty_configs_writes_each_clients_exact_format() {
    let p = Project::new();
    let store = p.env.root();
    let store = store.to_str().unwrap();

    p.ok(&["claude"]);
    let s = p.json(".claude/settings.json");
    let start = &s["hooks"]["SessionStart"][0];
    assert_eq!(start["matcher"], "startup|resume|clear|compact");
    assert_eq!(start["hooks"][0]["type"], "command");
    let cmd = start["hooks"][0]["command"].as_str().unwrap();
    assert!(
        cmd.ends_with(&format!("hook-agent claude session-start --store {store}")),
        "{cmd}"
    );
    assert!(s["hooks"]["Stop"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .contains("hook-agent claude stop"));
    let mcp = p.json(".mcp.json");
    assert_eq!(
        mcp["mcpServers"]["cairn"]["args"],
        json!(["mcp", "--store", store])
    );

    p.ok(&["codex"]);
    let h = p.json(".codex/hooks.json");
    assert_eq!(
        h["hooks"]["SessionStart"][0]["matcher"],
        "startup|resume|clear|compact"
    );
    assert!(h["hooks"]["Stop"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .contains("hook-agent codex stop"));
    let toml = p.text(".codex/config.toml");
    let doc: toml_edit::DocumentMut = toml.parse().unwrap();
    assert_eq!(
        doc["features"]["codex_hooks"].as_bool(),
        Some(true),
        "{toml}"
    );
    assert_eq!(
        doc["mcp_servers"]["cairn"]["args"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(
        !toml.contains("[mcp_servers]\n"),
        "no empty parent table: {toml}"
    );

    p.ok(&["cursor"]);
    let c = p.json(".cursor/hooks.json");
    assert_eq!(c["version"], 1);
    assert!(c["hooks"]["sessionStart"][0]["command"]
        .as_str()
        .unwrap()
        .contains("hook-agent cursor session-start"));
    assert!(c["hooks"]["stop"][0]["command"]
        .as_str()
        .unwrap()
        .contains("hook-agent cursor stop"));
    let rule = p.text(".cursor/rules/cairn.mdc");
    assert!(
        rule.starts_with("---\n") && rule.contains("alwaysApply: true\n"),
        "{rule}"
    );
    assert!(rule.contains("cairn memory propose"));
    assert_eq!(
        p.json(".cursor/mcp.json")["mcpServers"]["cairn"]["command"],
        c["hooks"]["stop"][0]["command"]
            .as_str()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
    );
}

#[test]
fn setup_in_the_store_itself_lets_hooks_find_the_store_from_the_session() {
    let env = Env::store();
    env.cmd()
        .current_dir(env.root())
        .args(["setup", "claude"])
        .assert()
        .success();
    let s: Value = serde_json::from_str(&env.read(".claude/settings.json")).unwrap();
    let cmd = s["hooks"]["Stop"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap();
    assert!(
        cmd.ends_with("hook-agent claude stop"),
        "no --store needed: {cmd}"
    );
}

#[test]
fn setup_keeps_foreign_entries_and_a_second_run_changes_nothing() {
    for client in CLIENTS {
        let p = Project::new();
        p.seed_foreign(client);
        let foreign = p.files();
        let data = p.ok(&[client]);
        assert!(
            data["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["action"] == "update"),
            "{data}"
        );
        let after = p.files();
        // Every foreign entry is still there.
        match client {
            "claude" => {
                let cmds = commands_of(&p.json(".claude/settings.json"));
                for c in ["echo welcome", "python /opt/capture_stop.py", "./guard.sh"] {
                    assert!(
                        cmds.contains(&c.to_string()),
                        "{client}: {c} lost: {cmds:?}"
                    );
                }
                let s = p.json(".claude/settings.json");
                assert_eq!(s["permissions"]["allow"][0], "Bash(cargo test:*)");
                assert_eq!(
                    s["hooks"]["SessionStart"][0]["matcher"], "startup",
                    "foreign group first, untouched"
                );
                assert!(p.json(".mcp.json")["mcpServers"]["github"].is_object());
            }
            "codex" => {
                let cmds = commands_of(&p.json(".codex/hooks.json"));
                assert!(cmds.contains(&"notify-send done".to_string()), "{cmds:?}");
                let toml = p.text(".codex/config.toml");
                assert!(
                    toml.starts_with(
                        "# my Codex settings\nmodel = \"gpt-5-codex\"   # the default model\n"
                    ),
                    "{toml}"
                );
                let doc: toml_edit::DocumentMut = toml.parse().unwrap();
                assert_eq!(doc["features"]["web_search"].as_bool(), Some(true));
                assert_eq!(doc["features"]["codex_hooks"].as_bool(), Some(true));
                assert_eq!(
                    doc["mcp_servers"]["docs"]["command"].as_str(),
                    Some("docs-server")
                );
            }
            _ => {
                let cmds = commands_of(&p.json(".cursor/hooks.json"));
                for c in ["./format.sh", "./audit.sh"] {
                    assert!(cmds.contains(&c.to_string()), "{c} lost: {cmds:?}");
                }
                assert!(p.json(".cursor/mcp.json")["mcpServers"]["github"].is_object());
            }
        }
        // Twice: byte for byte the same, every file "unchanged".
        let again = p.ok(&[client]);
        assert!(
            again["files"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["action"] == "unchanged"),
            "{again}"
        );
        assert_eq!(p.files(), after, "{client}: a second setup changed files");
        assert_ne!(after, foreign);
        let (code, v) = p.setup(&[client, "--check"]);
        assert_eq!(
            (code, v["data"]["state"].clone()),
            (0, json!("installed")),
            "{v}"
        );
    }
}

#[test]
fn remove_restores_what_was_there_byte_for_byte() {
    for client in CLIENTS {
        // Into foreign configs.
        let p = Project::new();
        p.seed_foreign(client);
        let (files, dirs) = (p.files(), p.dirs());
        p.ok(&[client]);
        let data = p.ok(&[client, "--remove"]);
        assert!(
            data["files"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["undo"] != "stripped"),
            "{data}"
        );
        assert_eq!(
            p.files(),
            files,
            "{client}: --remove did not restore the bytes"
        );
        assert_eq!(p.dirs(), dirs, "{client}: folders setup made are left");
        let (code, _) = p.setup(&[client, "--check"]);
        assert_eq!(code, 11, "{client}: missing after remove");

        // Into nothing: nothing left.
        let p = Project::new();
        p.ok(&[client]);
        p.ok(&[client, "--remove"]);
        assert!(p.files().is_empty(), "{client}: {:?}", p.files().keys());
        assert_eq!(p.dirs(), vec![p.dir.clone()], "{client}");
    }
}

#[test]
fn remove_after_a_hand_edit_keeps_the_edit_and_drops_only_cairns_entries() {
    let p = Project::new();
    p.seed_foreign("claude");
    p.ok(&["claude"]);
    let mut s = p.json(".claude/settings.json");
    s["env"] = json!({"FOO": "1"});
    p.put(
        ".claude/settings.json",
        &serde_json::to_string_pretty(&s).unwrap(),
    );
    let data = p.ok(&["claude", "--remove"]);
    assert!(
        data["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["undo"] == "stripped"),
        "{data}"
    );
    let s = p.json(".claude/settings.json");
    assert_eq!(s["env"]["FOO"], "1");
    let cmds = commands_of(&s);
    assert!(cmds.iter().all(|c| !c.contains("hook-agent")), "{cmds:?}");
    assert!(cmds.contains(&"python /opt/capture_stop.py".to_string()));
    // The MCP file was not touched by hand: restored exactly.
    assert_eq!(p.text(".mcp.json"), fixture("configs/mcp.json"));
}

#[test]
fn check_says_missing_installed_or_outdated_with_distinct_exit_codes() {
    for client in CLIENTS {
        let p = Project::new();
        let (code, v) = p.setup(&[client, "--check"]);
        assert_eq!(
            (code, v["data"]["state"].clone()),
            (11, json!("missing")),
            "{v}"
        );
        assert!(p.files().is_empty(), "--check wrote files");
        p.ok(&[client]);
        let (code, v) = p.setup(&[client, "--check"]);
        assert_eq!(
            (code, v["data"]["state"].clone()),
            (0, json!("installed")),
            "{v}"
        );
        // Another cairn executable: what is there is outdated.
        let (code, v) = p.setup(&[client, "--check", "--command", "/opt/other/cairn"]);
        assert_eq!(
            (code, v["data"]["state"].clone()),
            (10, json!("outdated")),
            "{v}"
        );
        // Setting up again with it brings it current (entries replaced, not added).
        p.ok(&[client, "--command", "/opt/other/cairn"]);
        let (code, _) = p.setup(&[client, "--check", "--command", "/opt/other/cairn"]);
        assert_eq!(code, 0);
        let hooks = match client {
            "claude" => ".claude/settings.json",
            "codex" => ".codex/hooks.json",
            _ => ".cursor/hooks.json",
        };
        let cmds = commands_of(&p.json(hooks));
        assert_eq!(cmds.len(), 2, "{client}: {cmds:?}");
        assert!(
            cmds.iter().all(|c| c.starts_with("/opt/other/cairn ")),
            "{cmds:?}"
        );
    }
}

#[test]
fn dry_run_writes_nothing() {
    for client in CLIENTS {
        let p = Project::new();
        p.seed_foreign(client);
        let before = p.files();
        let records = p.env.root().join(".cairn/agent-setup");
        let data = p.ok(&[client, "--dry-run"]);
        assert_eq!(data["dry_run"], true);
        assert!(data["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"] != "unchanged"));
        assert_eq!(p.files(), before, "{client}: --dry-run wrote");
        assert!(!records.exists(), "--dry-run wrote undo records");
        p.ok(&[client]);
        let installed = p.files();
        p.ok(&[client, "--remove", "--dry-run"]);
        assert_eq!(p.files(), installed, "{client}: --remove --dry-run wrote");
    }
}

#[test]
fn a_config_that_does_not_parse_is_refused_naming_the_file_and_nothing_changes() {
    for (client, rel, fixture_name, format) in [
        (
            "claude",
            ".claude/settings.json",
            "configs/invalid.json",
            "JSON",
        ),
        (
            "codex",
            ".codex/config.toml",
            "configs/invalid.toml",
            "TOML",
        ),
        (
            "cursor",
            ".cursor/hooks.json",
            "configs/invalid.json",
            "JSON",
        ),
    ] {
        let p = Project::new();
        p.put(rel, &fixture(fixture_name));
        let before = p.files();
        let head = p.env.head();
        for extra in [&[][..], &["--remove"][..]] {
            let args: Vec<&str> = [&[client][..], extra].concat();
            let (code, v) = p.setup(&args);
            assert_eq!(code, 3, "{v}");
            assert_eq!(v["error"]["category"], "VALIDATION");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(rel) && msg.contains(format), "{msg}");
            assert_eq!(p.files(), before, "{client}: a refused setup changed files");
            assert_eq!(p.env.head(), head);
            assert!(!p.env.root().join(".cairn/agent-setup").exists());
        }
    }
    // Valid JSON of the wrong shape is refused the same way, with the field.
    let p = Project::new();
    p.put(".claude/settings.json", r#"{"hooks": []}"#);
    let (code, v) = p.setup(&["claude"]);
    assert_eq!(code, 3, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(".claude/settings.json") && msg.contains("/hooks"),
        "{msg}"
    );
    assert!(!p.dir.join(".mcp.json").exists());
}

#[test]
fn print_instructions_says_which_commands_and_when() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["setup", "--print-instructions"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "cairn search",
        "cairn memory propose",
        "cairn milestone",
        "cairn ws patch",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

// ---------------------------------------------------------------- session start

#[test]
fn session_start_prints_the_brief_in_each_clients_schema() {
    let (env, run) = Env::with_run();
    let codex_schema: Value =
        serde_json::from_str(&fixture("codex/session_start.output.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&codex_schema).unwrap();
    for client in CLIENTS {
        let r = run_hook(
            &env,
            client,
            "session-start",
            &start_input(&env, client, "s-1", "startup"),
            &[],
        );
        assert_eq!(r.code, 0);
        let out: Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("{client}: {e}: {}", r.stdout));
        let text = match client {
            "claude" => {
                assert_eq!(
                    out.as_object().unwrap().keys().collect::<Vec<_>>(),
                    vec!["hookSpecificOutput"]
                );
                assert_eq!(out["hookSpecificOutput"]["hookEventName"], "SessionStart");
                out["hookSpecificOutput"]["additionalContext"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
            "codex" => {
                let errors: Vec<String> =
                    validator.iter_errors(&out).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{errors:?}: {out}");
                out["hookSpecificOutput"]["additionalContext"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
            _ => {
                let mut keys: Vec<&String> = out.as_object().unwrap().keys().collect();
                keys.sort();
                assert_eq!(keys, vec!["additional_context", "continue"]);
                assert_eq!(out["continue"], true);
                out["additional_context"].as_str().unwrap().to_string()
            }
        };
        assert!(
            text.contains(&run) && text.contains("Ship it") && text.contains("tests pass"),
            "{text}"
        );
        assert!(text.chars().count() <= 10_000);
    }
}

#[test]
fn session_start_stays_under_the_clients_cap_and_reinjects_on_resume() {
    let (env, run) = Env::with_run();
    // A working set far over 10,000 characters.
    let mut patch = String::from("expected_seq: 0\nappend:\n  pinned_context:\n");
    for i in 0..30 {
        patch.push_str(&format!(
            "    - {{id: p{i}, content: \"{}\", priority: 5}}\n",
            "pinned fact ".repeat(60)
        ));
    }
    let file = common::cli::write(env.home.path(), "patch.yaml", &patch);
    env.ok(&["ws", "patch", &run, "--file", &file]);
    for source in ["startup", "resume", "compact"] {
        let r = run_hook(
            &env,
            "claude",
            "session-start",
            &start_input(&env, "claude", "s-2", source),
            &[],
        );
        let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
        let text = out["hookSpecificOutput"]["additionalContext"]
            .as_str()
            .unwrap();
        assert!(text.chars().count() <= 10_000, "{}", text.chars().count());
        assert!(text.contains("Ship it"));
        if source != "startup" {
            assert!(
                text.contains(&format!("The session was {source}d")),
                "{text}"
            );
        }
    }
}

#[test]
fn session_start_picks_the_sessions_own_run_over_the_newest() {
    let (env, first) = Env::with_run();
    // The session's turn is captured into the first run...
    let r = run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(&env, "claude", "s-own", "t1", PROMPT, "ok"),
        &[],
    );
    assert_eq!(r.code, 0);
    assert_eq!(interactions(&env, &first).len(), 1);
    // ...then a newer run appears: the session still gets its own.
    let second = env.boot();
    let r = run_hook(
        &env,
        "claude",
        "session-start",
        &start_input(&env, "claude", "s-own", "resume"),
        &[],
    );
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let text = out["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        text.contains(&format!("run `{first}` (this session's run)")),
        "{text}"
    );
    // Another session gets the newest active run.
    let r = run_hook(
        &env,
        "claude",
        "session-start",
        &start_input(&env, "claude", "s-new", "startup"),
        &[],
    );
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let text = out["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(text.contains(&format!("run `{second}`")), "{text}");
}

fn assert_neutral(client: &str, stdout: &str) {
    match client {
        "claude" => assert_eq!(stdout.trim(), "", "Claude's neutral answer is no output"),
        "codex" => {
            let v: Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(
                v,
                json!({"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": ""}})
            );
        }
        _ => assert_eq!(
            serde_json::from_str::<Value>(stdout.trim()).unwrap(),
            json!({"continue": true})
        ),
    }
}

#[test]
fn session_start_fails_open_without_a_store() {
    let env = Env::new();
    let nowhere = env.home.path().join("not-a-store");
    std::fs::create_dir_all(&nowhere).unwrap();
    for client in CLIENTS {
        let input = fill(
            &fixture(&format!("{client}/session_start.json")),
            &[
                ("SESSION", "s"),
                ("CWD", nowhere.to_str().unwrap()),
                ("TRANSCRIPT", ""),
                ("SOURCE", "startup"),
            ],
        );
        let r = run_hook(&env, client, "session-start", input.as_bytes(), &[]);
        assert_eq!(r.code, 0);
        assert_neutral(client, &r.stdout);
    }
    let log = std::fs::read_to_string(env.home.path().join(".cairn/agent.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("no store")).count(),
        3,
        "{log}"
    );
}

#[test]
fn session_start_fails_open_on_a_corrupt_store_and_garbage_stdin() {
    let (env, _) = Env::with_run();
    for client in CLIENTS {
        let r = run_hook(&env, client, "session-start", b"{not json at all", &[]);
        assert_eq!(r.code, 0);
        assert_neutral(client, &r.stdout);
    }
    // The hook ran outside the store (HOME): the reason goes to ~/.cairn/agent.log.
    let home_log = std::fs::read_to_string(env.home.path().join(".cairn/agent.log")).unwrap();
    assert_eq!(
        home_log.lines().filter(|l| l.contains("bad input")).count(),
        3,
        "{home_log}"
    );
    // Corrupt: the branch points at an object that is not there.
    let head = env.git(&["symbolic-ref", "HEAD"]);
    let ref_file = env.root().join(".git").join(head.trim());
    std::fs::write(&ref_file, "0123456789abcdef0123456789abcdef01234567\n").unwrap();
    for client in CLIENTS {
        let r = run_hook(
            &env,
            client,
            "session-start",
            &start_input(&env, client, "s", "startup"),
            &[],
        );
        assert_eq!(r.code, 0);
        assert_neutral(client, &r.stdout);
        let r = run_hook(
            &env,
            client,
            "stop",
            &stop_input(&env, client, "s", "t", PROMPT, "x"),
            &[],
        );
        assert_eq!(r.code, 0);
    }
    let log = agent_log(&env);
    assert!(
        log.lines()
            .filter(|l| l.contains(" session-start ") && l.contains("no store"))
            .count()
            == 3,
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains(" stop ")), "{log}");
}

#[test]
fn session_start_gives_up_within_its_budget_when_the_index_is_held() {
    let (env, _) = Env::with_run();
    // Someone holds the search index's writer lock (a long rebuild).
    let lock_path = env.root().join(".cairn/index.lock");
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    for client in CLIENTS {
        let r = run_hook(
            &env,
            client,
            "session-start",
            &start_input(&env, client, "s", "startup"),
            &[("CAIRN_HOOK_BUDGET_MS", "300")],
        );
        assert_eq!(r.code, 0);
        assert_neutral(client, &r.stdout);
        // Well within a client's timeout (the budget plus process start).
        assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    }
    drop(lock);
    assert_eq!(
        agent_log(&env)
            .lines()
            .filter(|l| l.contains("time budget"))
            .count(),
        3,
        "{}",
        agent_log(&env)
    );
}

// ---------------------------------------------------------------- capture

#[test]
fn stop_captures_the_turn_for_each_client() {
    let (env, run) = Env::with_run();
    for client in CLIENTS {
        let r = run_hook(
            &env,
            client,
            "stop",
            &stop_input(
                &env,
                client,
                &format!("s-{client}"),
                "turn-1",
                PROMPT,
                "It recurses.",
            ),
            &[],
        );
        assert_eq!(r.code, 0);
        match client {
            "cursor" => assert_eq!(r.stdout.trim(), "{}"),
            _ => assert_eq!(r.stdout.trim(), ""),
        }
    }
    let list = interactions(&env, &run);
    assert_eq!(list.len(), 3, "{list:?}");
    let by_client: BTreeMap<String, &Value> = list
        .iter()
        .map(|v| (v["client"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(
        by_client.keys().collect::<Vec<_>>(),
        vec!["claude-code", "codex", "cursor"]
    );
    for v in &list {
        assert_eq!(
            v["prompt"], PROMPT,
            "the transcript's last real prompt: {v}"
        );
        assert_eq!(v["run_id"], json!(run));
    }
    assert_eq!(by_client["claude-code"]["response"], "It recurses.");
    assert_eq!(by_client["codex"]["metadata"]["turn"], "turn-1");
    // Cursor's stop payload has no response: the transcript's last answer.
    assert_eq!(
        by_client["cursor"]["response"],
        "Renamed the module and updated its imports."
    );
    assert_eq!(captured_events(&env), 3);
    // Captured turns are not memory.
    assert_eq!(
        env.ok(&["memory", "queue"])["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        0
    );
}

#[test]
fn a_retried_stop_hook_makes_one_record() {
    let (env, run) = Env::with_run();
    for client in CLIENTS {
        let input = stop_input(&env, client, "s-retry", "t-7", PROMPT, "answer");
        for _ in 0..3 {
            assert_eq!(run_hook(&env, client, "stop", &input, &[]).code, 0);
        }
    }
    assert_eq!(interactions(&env, &run).len(), 3, "one per client");
    assert_eq!(captured_events(&env), 3);
    // A new turn of the same session is a new record.
    let input = stop_input(
        &env,
        "claude",
        "s-retry",
        "t-8",
        "A different question about the lexer",
        "other",
    );
    run_hook(&env, "claude", "stop", &input, &[]);
    assert_eq!(interactions(&env, &run).len(), 4);
    assert!(agent_log(&env).contains("(already captured)"));
}

#[test]
fn the_kill_switch_captures_nothing() {
    let (env, run) = Env::with_run();
    let head = env.head();
    for (k, v) in [("CAIRN_CAPTURE", "0"), ("CAIRN_CAPTURE_DISABLED", "1")] {
        let r = run_hook(
            &env,
            "claude",
            "stop",
            &stop_input(&env, "claude", "s", "t", PROMPT, "x"),
            &[(k, v)],
        );
        assert_eq!(r.code, 0);
    }
    assert_eq!(env.head(), head);
    assert!(interactions(&env, &run).is_empty());
    assert!(agent_log(&env).contains("capture is switched off"));
    // The config switch.
    set_config(&env, "agents:\n  capture: false\n");
    let head = env.head();
    run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(&env, "claude", "s", "t", PROMPT, "x"),
        &[],
    );
    assert_eq!(env.head(), head);
    assert!(interactions(&env, &run).is_empty());
}

#[test]
fn a_5_mb_response_is_cut_to_the_limit() {
    let (env, run) = Env::with_run();
    let big = "é".repeat(2_500_000); // 5,000,000 bytes
    let r = run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(&env, "claude", "s-big", "t", PROMPT, &big),
        &[],
    );
    assert_eq!(r.code, 0);
    let list = interactions(&env, &run);
    assert_eq!(list.len(), 1, "{}", agent_log(&env));
    let v = &list[0];
    assert_eq!(v["truncated"], true);
    assert_eq!(v["response_bytes"], 5_000_000);
    let kept = v["response"].as_str().unwrap();
    assert_eq!(
        kept.len(),
        50_000,
        "the documented default, agents.max_response_bytes"
    );
    assert!(kept.chars().all(|c| c == 'é'));
}

#[test]
fn without_a_run_a_session_run_is_booted_unless_the_store_says_no() {
    let env = Env::store();
    set_config(&env, "agents:\n  boot_session_runs: false\n");
    let head = env.head();
    run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(&env, "claude", "s-nb", "t", PROMPT, "x"),
        &[],
    );
    assert_eq!(env.head(), head, "no run booted against the policy");
    assert!(
        agent_log(&env).contains("agents.boot_session_runs is false"),
        "{}",
        agent_log(&env)
    );
    assert!(!env
        .root()
        .join(".cairn/agent-spool")
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false));

    let env = Env::store();
    run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(&env, "claude", "s-boot", "t", PROMPT, "x"),
        &[],
    );
    let runs = env.ok(&["run", "list"])["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    let run = runs[0]["run_id"].as_str().unwrap();
    let ws = env.ok(&["ws", "show", run]);
    assert_eq!(ws["thread_id"], "s-boot", "{ws}");
    assert_eq!(interactions(&env, run).len(), 1);
    assert!(agent_log(&env).contains("(booted the run)"));
}

#[test]
fn a_stop_hook_that_cannot_get_the_lock_spools_the_turn_and_the_next_one_commits_it() {
    let (env, run) = Env::with_run();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.root().join(".cairn/lock"))
        .unwrap();
    lock.lock().unwrap();
    let r = run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(&env, "claude", "s-l", "t1", PROMPT, "first"),
        &[("CAIRN_HOOK_BUDGET_MS", "300")],
    );
    assert_eq!(r.code, 0);
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    assert!(interactions(&env, &run).is_empty());
    assert!(
        agent_log(&env).contains("still spooled") || agent_log(&env).contains("time budget"),
        "{}",
        agent_log(&env)
    );
    drop(lock);
    run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(
            &env,
            "claude",
            "s-l",
            "t2",
            "A second question about the lexer",
            "second",
        ),
        &[],
    );
    let list = interactions(&env, &run);
    let responses: Vec<&str> = list
        .iter()
        .map(|v| v["response"].as_str().unwrap())
        .collect();
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert!(responses.contains(&"first") && responses.contains(&"second"));
}

#[test]
fn eight_concurrent_stop_hooks_on_one_store_lose_nothing() {
    let (env, run) = Env::with_run();
    let inputs: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            stop_input(
                &env,
                "claude",
                &format!("s-{i}"),
                "t",
                &format!("{PROMPT} number {i}"),
                &format!("answer {i}"),
            )
        })
        .collect();
    let children: Vec<_> = inputs
        .iter()
        .map(|input| {
            use std::io::Write;
            let mut c = hook_cmd(&env, "claude", "stop", &[("CAIRN_HOOK_BUDGET_MS", "20000")])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(input).unwrap();
            c
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let list = interactions(&env, &run);
    let mut responses: Vec<String> = list
        .iter()
        .map(|v| v["response"].as_str().unwrap().to_string())
        .collect();
    responses.sort();
    assert_eq!(
        responses,
        (0..8).map(|i| format!("answer {i}")).collect::<Vec<_>>(),
        "{}",
        agent_log(&env)
    );
    assert_eq!(captured_events(&env), 8);
    let (code, out) = env.json(&["fsck"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn captured_turns_are_searchable_only_when_asked() {
    let (env, run) = Env::with_run();
    run_hook(
        &env,
        "claude",
        "stop",
        &stop_input(
            &env,
            "claude",
            "s-q",
            "t",
            "How does the zeppelin lexer tokenize strings",
            "With a state machine",
        ),
        &[],
    );
    assert_eq!(interactions(&env, &run).len(), 1);
    let plain = env.ok(&["search", "zeppelin"]);
    assert_eq!(
        plain["hits"].as_array().unwrap().len(),
        0,
        "interactions stay out of memory search: {plain}"
    );
    let hits = env.ok(&["search", "zeppelin", "--type", "interaction"]);
    let hits = hits["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["type"], "interaction");
    assert!(hits[0]["content"]
        .as_str()
        .unwrap()
        .contains("state machine"));
}
