//! `cairn setup`: a client's configuration, merged into what is there.
//!
//! Each client has a few target files (hooks, the MCP server registration,
//! Cursor's rule). For each, setup parses what is there (refusing, before
//! anything is written, a file it cannot parse, naming it), removes cairn's
//! own entries (recognised by their command: `… hook-agent <client> …`, the
//! `cairn` MCP server, the `cairn.mdc` rule) and adds the current ones. When
//! the result equals what is there, the file is left untouched: a second
//! setup changes nothing.
//!
//! Undo is byte for byte: before a file is first changed, its original bytes
//! (or its absence) are recorded under the store's local folder
//! (`agent-setup/`), with the digest of what setup wrote. `--remove` puts the
//! original back when the file still holds exactly what setup wrote; when
//! someone changed it since, it removes cairn's entries alone and keeps the
//! rest (and says so).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::Client;
use crate::error::{Error, Result};

/// The short section `cairn setup --print-instructions` prints for an
/// AGENTS.md / CLAUDE.md (and the body of Cursor's rule).
pub const INSTRUCTIONS: &str = "\
## Memory: cairn

This project keeps its agent memory in a cairn store: schema-checked files in
git, one commit per change. A session-start hook injects the current run's
brief (objective, acceptance criteria, constraints, working context, relevant
memory); each finished turn is captured as an interaction of that run.

- Look things up: `cairn search \"words\"` (memory), `cairn search --type
  interaction \"words\"` (past turns), `cairn brief RUN`, `cairn run list`.
- Keep the working state current: `cairn ws show RUN`, then `cairn ws patch
  RUN --file patch.yaml` with `expected_seq` set to the `_update_seq` you read.
- Propose memory when something durable is learned (a decision, a fact about
  the code, a preference of the user): `cairn memory propose RUN --file
  mcrs.json`. Proposals are candidates until a person reviews them (`cairn
  memory queue`); memory files are not edited by hand.
- Take a milestone when a stage of the work is done (tests green, a feature
  merged): `cairn milestone RUN --reason \"...\"`, with `--commit-batch BATCH`
  to commit the proposals made for it.
- Every command takes `--json`; an error carries its category and whether a
  retry can help.
";

/// Seconds each client may give a session-start hook (cairn stops itself far earlier).
pub const SESSION_START_TIMEOUT_S: u64 = 5;
/// Seconds each client may give a stop hook.
pub const STOP_TIMEOUT_S: u64 = 15;
/// The matcher of Claude Code's and Codex's SessionStart entry.
pub const SESSION_START_MATCHER: &str = "startup|resume|clear|compact";

/// What to set up.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    /// The client.
    pub client: Client,
    /// The project folder, or with `global` the home folder.
    pub root: PathBuf,
    /// The user's configuration (`~/.claude/…`) instead of the project's.
    pub global: bool,
    /// The `cairn` executable the hooks and the MCP server run.
    pub program: String,
    /// `--store` for the hook commands (`None`: they find the store from
    /// the session's folder).
    pub hook_store: Option<PathBuf>,
    /// `--store` of the MCP server.
    pub mcp_store: PathBuf,
}

/// The state of one file, or of a whole client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Everything setup writes is there, as it would write it now.
    Installed,
    /// Some of it is there, or it differs (another cairn, another store, an older format).
    Outdated,
    /// None of it is there.
    Missing,
}

impl State {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Installed => "installed",
            State::Outdated => "outdated",
            State::Missing => "missing",
        }
    }

    /// The state of several files together.
    pub fn combine(states: impl IntoIterator<Item = State>) -> State {
        let all: Vec<State> = states.into_iter().collect();
        if all.iter().all(|s| *s == State::Installed) {
            State::Installed
        } else if all.iter().all(|s| *s == State::Missing) {
            State::Missing
        } else {
            State::Outdated
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Claude Code's settings.json or Codex's hooks.json (event → matcher groups → hooks).
    GroupedHooks,
    /// Cursor's hooks.json (`version`, event → hooks).
    CursorHooks,
    /// `mcpServers.cairn` in a JSON file (`.mcp.json`, `~/.claude.json`, `.cursor/mcp.json`).
    McpJson,
    /// Codex's config.toml: `[features] codex_hooks` and `[mcp_servers.cairn]`.
    CodexToml,
    /// Cursor's rule file, all cairn's.
    Rule,
}

/// One file setup manages.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it is.
    pub path: PathBuf,
    kind: Kind,
    /// What it is for, in words.
    pub role: &'static str,
}

/// The files setup manages for a request.
pub fn targets(req: &SetupRequest) -> Vec<Target> {
    let r = &req.root;
    let t = |path: PathBuf, kind: Kind, role: &'static str| Target { path, kind, role };
    match (req.client, req.global) {
        (Client::Claude, false) => vec![
            t(r.join(".claude/settings.json"), Kind::GroupedHooks, "hooks"),
            t(r.join(".mcp.json"), Kind::McpJson, "MCP server"),
        ],
        (Client::Claude, true) => vec![
            t(r.join(".claude/settings.json"), Kind::GroupedHooks, "hooks"),
            t(r.join(".claude.json"), Kind::McpJson, "MCP server"),
        ],
        (Client::Codex, _) => vec![
            t(r.join(".codex/hooks.json"), Kind::GroupedHooks, "hooks"),
            t(
                r.join(".codex/config.toml"),
                Kind::CodexToml,
                "hooks feature and MCP server",
            ),
        ],
        (Client::Cursor, false) => vec![
            t(r.join(".cursor/hooks.json"), Kind::CursorHooks, "hooks"),
            t(r.join(".cursor/rules/cairn.mdc"), Kind::Rule, "rule"),
            t(r.join(".cursor/mcp.json"), Kind::McpJson, "MCP server"),
        ],
        // Cursor keeps user rules in its settings, not in files: no rule globally.
        (Client::Cursor, true) => vec![
            t(r.join(".cursor/hooks.json"), Kind::CursorHooks, "hooks"),
            t(r.join(".cursor/mcp.json"), Kind::McpJson, "MCP server"),
        ],
    }
}

/// `s` quoted for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@%+=-,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command a client runs for `hook` (`session-start` or `stop`).
pub fn hook_command(req: &SetupRequest, hook: &str) -> String {
    let mut cmd = format!(
        "{} hook-agent {} {hook}",
        shell_quote(&req.program),
        req.client.as_str()
    );
    if let Some(s) = &req.hook_store {
        cmd.push_str(&format!(" --store {}", shell_quote(&s.to_string_lossy())));
    }
    cmd
}

/// Whether a hook command is one of cairn's for `client`.
pub fn is_our_command(cmd: &str, client: Client) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| w[0] == "hook-agent" && w[1] == client.as_str())
}

/// The rule file's content.
pub fn rule_text() -> String {
    format!(
        "---\ndescription: cairn, this project's agent memory\nalwaysApply: true\n---\n\n{INSTRUCTIONS}"
    )
}

fn mcp_args(req: &SetupRequest) -> Vec<String> {
    vec![
        "mcp".into(),
        "--store".into(),
        req.mcp_store.to_string_lossy().into_owned(),
    ]
}

fn invalid(path: &Path, pointer: &str, message: String) -> Error {
    Error::Invalid {
        file: path.display().to_string(),
        pointer: pointer.to_string(),
        rule: "agent_config_shape",
        message,
    }
}

fn parse_json(path: &Path, bytes: Option<&[u8]>) -> Result<Map<String, Value>> {
    let Some(bytes) = bytes else {
        return Ok(Map::new());
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Parse {
        file: path.display().to_string(),
        format: "JSON",
        message: e.to_string(),
    })?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(invalid(path, "", "the file must hold a JSON object".into())),
    }
}

fn object_at<'a>(
    path: &Path,
    map: &'a mut Map<String, Value>,
    key: &str,
    pointer: &str,
) -> Result<&'a mut Map<String, Value>> {
    let v = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    v.as_object_mut()
        .ok_or_else(|| invalid(path, pointer, format!("{key:?} must be an object")))
}

fn array_at<'a>(
    path: &Path,
    map: &'a mut Map<String, Value>,
    key: &str,
    pointer: &str,
) -> Result<&'a mut Vec<Value>> {
    let v = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    v.as_array_mut()
        .ok_or_else(|| invalid(path, pointer, format!("{key:?} must be an array")))
}

/// The events a client's hooks file names: (event key, matcher, hook).
fn events(client: Client) -> [(&'static str, Option<&'static str>, &'static str); 2] {
    match client {
        Client::Claude | Client::Codex => [
            ("SessionStart", Some(SESSION_START_MATCHER), "session-start"),
            ("Stop", None, "stop"),
        ],
        Client::Cursor => [
            ("sessionStart", None, "session-start"),
            ("stop", None, "stop"),
        ],
    }
}

fn command_of(v: &Value) -> Option<&str> {
    v.get("command").and_then(Value::as_str)
}

/// Removes cairn's hooks from a hooks map (either shape); empty arrays and
/// groups left behind by the removal go too. Returns whether any were found.
fn strip_hooks(
    path: &Path,
    root: &mut Map<String, Value>,
    client: Client,
    grouped: bool,
) -> Result<bool> {
    let Some(hooks) = root.get_mut("hooks") else {
        return Ok(false);
    };
    let hooks = hooks
        .as_object_mut()
        .ok_or_else(|| invalid(path, "/hooks", "\"hooks\" must be an object".into()))?;
    let mut found = false;
    for (event, _, _) in events(client) {
        let Some(list) = hooks.get_mut(event) else {
            continue;
        };
        let pointer = format!("/hooks/{event}");
        let list = list
            .as_array_mut()
            .ok_or_else(|| invalid(path, &pointer, format!("{event:?} must be an array")))?;
        let before = list.len();
        if grouped {
            let mut kept = Vec::new();
            for mut group in std::mem::take(list) {
                let inner = group.get_mut("hooks").and_then(Value::as_array_mut);
                match inner {
                    Some(inner) => {
                        let n = inner.len();
                        inner.retain(|h| !command_of(h).is_some_and(|c| is_our_command(c, client)));
                        if inner.len() != n {
                            found = true;
                            if inner.is_empty() {
                                continue;
                            }
                        }
                        kept.push(group);
                    }
                    None => kept.push(group),
                }
            }
            *list = kept;
        } else {
            list.retain(|h| !command_of(h).is_some_and(|c| is_our_command(c, client)));
            found |= list.len() != before;
        }
        if list.is_empty() && found {
            hooks.remove(event);
        }
    }
    if hooks.is_empty() && found {
        root.remove("hooks");
    }
    Ok(found)
}

fn add_hooks(
    path: &Path,
    root: &mut Map<String, Value>,
    req: &SetupRequest,
    grouped: bool,
) -> Result<()> {
    if !grouped && !root.contains_key("version") {
        root.insert("version".into(), json!(1));
    }
    let hooks = object_at(path, root, "hooks", "/hooks")?;
    for (event, matcher, hook) in events(req.client) {
        let timeout = if hook == "stop" {
            STOP_TIMEOUT_S
        } else {
            SESSION_START_TIMEOUT_S
        };
        let list = array_at(path, hooks, event, &format!("/hooks/{event}"))?;
        let handler = if grouped {
            json!({"type": "command", "command": hook_command(req, hook), "timeout": timeout})
        } else {
            json!({"command": hook_command(req, hook), "timeout": timeout})
        };
        if grouped {
            let mut group = Map::new();
            if let Some(m) = matcher {
                group.insert("matcher".into(), json!(m));
            }
            group.insert("hooks".into(), json!([handler]));
            list.push(Value::Object(group));
        } else {
            list.push(handler);
        }
    }
    Ok(())
}

fn strip_mcp(path: &Path, root: &mut Map<String, Value>) -> Result<bool> {
    let Some(servers) = root.get_mut("mcpServers") else {
        return Ok(false);
    };
    let servers = servers.as_object_mut().ok_or_else(|| {
        invalid(
            path,
            "/mcpServers",
            "\"mcpServers\" must be an object".into(),
        )
    })?;
    let found = servers.remove("cairn").is_some();
    if found && servers.is_empty() {
        root.remove("mcpServers");
    }
    Ok(found)
}

fn add_mcp(path: &Path, root: &mut Map<String, Value>, req: &SetupRequest) -> Result<()> {
    let servers = object_at(path, root, "mcpServers", "/mcpServers")?;
    let entry = if req.client == Client::Claude {
        json!({"type": "stdio", "command": req.program, "args": mcp_args(req)})
    } else {
        json!({"command": req.program, "args": mcp_args(req)})
    };
    servers.insert("cairn".into(), entry);
    Ok(())
}

fn json_bytes(map: Map<String, Value>) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(&Value::Object(map)).expect("JSON values serialize");
    s.push('\n');
    s.into_bytes()
}

fn parse_toml(path: &Path, bytes: Option<&[u8]>) -> Result<toml_edit::DocumentMut> {
    let text = match bytes {
        None => "",
        Some(b) => std::str::from_utf8(b).map_err(|e| Error::Parse {
            file: path.display().to_string(),
            format: "TOML",
            message: format!("not UTF-8: {e}"),
        })?,
    };
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| Error::Parse {
            file: path.display().to_string(),
            format: "TOML",
            message: e.to_string().trim().to_string(),
        })
}

fn strip_toml(path: &Path, doc: &mut toml_edit::DocumentMut) -> Result<bool> {
    let Some(servers) = doc.get_mut("mcp_servers") else {
        return Ok(false);
    };
    let servers = servers
        .as_table_like_mut()
        .ok_or_else(|| invalid(path, "mcp_servers", "mcp_servers must be a table".into()))?;
    let found = servers.remove("cairn").is_some();
    if found && servers.is_empty() {
        doc.remove("mcp_servers");
    }
    Ok(found)
}

fn add_toml(path: &Path, doc: &mut toml_edit::DocumentMut, req: &SetupRequest) -> Result<()> {
    let features = doc
        .entry("features")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| invalid(path, "features", "features must be a table".into()))?;
    if features.get("codex_hooks").and_then(|v| v.as_bool()) != Some(true) {
        features.insert("codex_hooks", toml_edit::value(true));
    }
    let servers = doc
        .entry("mcp_servers")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| invalid(path, "mcp_servers", "mcp_servers must be a table".into()))?;
    let mut server = toml_edit::Table::new();
    server.insert("command", toml_edit::value(req.program.clone()));
    let mut args = toml_edit::Array::new();
    for a in mcp_args(req) {
        args.push(a);
    }
    server.insert("args", toml_edit::value(args));
    servers.insert("cairn", toml_edit::Item::Table(server));
    Ok(())
}

/// What `bytes` become with cairn's entries removed, and whether there were
/// any. `None`: the file would hold nothing and is better deleted.
fn stripped(
    target: &Target,
    req: &SetupRequest,
    bytes: Option<&[u8]>,
) -> Result<(Option<Vec<u8>>, bool)> {
    let path = &target.path;
    match target.kind {
        Kind::GroupedHooks | Kind::CursorHooks | Kind::McpJson => {
            let mut map = parse_json(path, bytes)?;
            let found = match target.kind {
                Kind::McpJson => strip_mcp(path, &mut map)?,
                k => strip_hooks(path, &mut map, req.client, k == Kind::GroupedHooks)?,
            };
            if !found {
                return Ok((bytes.map(<[u8]>::to_vec), false));
            }
            let only_version =
                map.len() == 1 && map.contains_key("version") && target.kind == Kind::CursorHooks;
            if map.is_empty() || only_version {
                return Ok((None, true));
            }
            Ok((Some(json_bytes(map)), true))
        }
        Kind::CodexToml => {
            let mut doc = parse_toml(path, bytes)?;
            let found = strip_toml(path, &mut doc)?;
            if !found {
                return Ok((bytes.map(<[u8]>::to_vec), false));
            }
            Ok((Some(doc.to_string().into_bytes()), true))
        }
        Kind::Rule => Ok((None, bytes.is_some())),
    }
}

/// Whether a config.toml already holds exactly what setup would put there.
fn toml_is_current(doc: &toml_edit::DocumentMut, req: &SetupRequest) -> bool {
    let hooks_on = doc
        .get("features")
        .and_then(|f| f.get("codex_hooks"))
        .and_then(|v| v.as_bool())
        == Some(true);
    let Some(server) = doc
        .get("mcp_servers")
        .and_then(|s| s.get("cairn"))
        .and_then(|s| s.as_table_like())
    else {
        return false;
    };
    let args: Option<Vec<String>> = server.get("args").and_then(|a| a.as_array()).map(|a| {
        a.iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    });
    hooks_on
        && server.len() == 2
        && server.get("command").and_then(|c| c.as_str()) == Some(req.program.as_str())
        && args == Some(mcp_args(req))
}

/// What `bytes` become with cairn's current entries in place.
fn installed(target: &Target, req: &SetupRequest, bytes: Option<&[u8]>) -> Result<Vec<u8>> {
    let path = &target.path;
    match target.kind {
        Kind::GroupedHooks | Kind::CursorHooks | Kind::McpJson => {
            let original = parse_json(path, bytes)?;
            let mut map = original.clone();
            match target.kind {
                Kind::McpJson => {
                    strip_mcp(path, &mut map)?;
                    add_mcp(path, &mut map, req)?;
                }
                k => {
                    let grouped = k == Kind::GroupedHooks;
                    strip_hooks(path, &mut map, req.client, grouped)?;
                    add_hooks(path, &mut map, req, grouped)?;
                }
            }
            match bytes {
                Some(b) if map == original => Ok(b.to_vec()),
                _ => Ok(json_bytes(map)),
            }
        }
        Kind::CodexToml => {
            let mut doc = parse_toml(path, bytes)?;
            if let (Some(b), true) = (bytes, toml_is_current(&doc, req)) {
                return Ok(b.to_vec());
            }
            strip_toml(path, &mut doc)?;
            add_toml(path, &mut doc, req)?;
            Ok(doc.to_string().into_bytes())
        }
        Kind::Rule => Ok(rule_text().into_bytes()),
    }
}

/// The state of one file.
fn state_of(target: &Target, req: &SetupRequest, bytes: Option<&[u8]>) -> Result<State> {
    let Some(b) = bytes else {
        return Ok(State::Missing);
    };
    let (_, ours) = stripped(target, req, Some(b))?;
    if !ours {
        return Ok(State::Missing);
    }
    if installed(target, req, Some(b))? == b {
        Ok(State::Installed)
    } else {
        Ok(State::Outdated)
    }
}

/// One file's part of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    /// The file.
    pub path: PathBuf,
    /// What it is for.
    pub role: &'static str,
    /// Its state before.
    pub state: State,
    /// `create`, `update`, `delete`, `restore` or `unchanged`.
    pub action: &'static str,
    /// How `--remove` undid it: `restored` (the original bytes), `stripped`
    /// (cairn's entries removed, the file changed since setup), or nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<&'static str>,
    #[serde(skip)]
    before: Option<Vec<u8>>,
    /// The content after (`None`: the file is absent after).
    #[serde(skip)]
    pub after: Option<Vec<u8>>,
}

impl FilePlan {
    /// Whether applying it changes the file.
    pub fn changes(&self) -> bool {
        self.before != self.after
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// What setup would change, file by file. Reads and parses every target
/// first: a file that cannot be parsed fails the whole plan, naming it.
pub fn plan_install(req: &SetupRequest) -> Result<Vec<FilePlan>> {
    let mut out = Vec::new();
    for t in targets(req) {
        let before = read_opt(&t.path)?;
        let state = state_of(&t, req, before.as_deref())?;
        let after = installed(&t, req, before.as_deref())?;
        let action = match &before {
            None => "create",
            Some(b) if *b == after => "unchanged",
            Some(_) => "update",
        };
        out.push(FilePlan {
            path: t.path.clone(),
            role: t.role,
            state,
            action,
            undo: None,
            before,
            after: Some(after),
        });
    }
    Ok(out)
}

/// The state of each file of a request.
pub fn check(req: &SetupRequest) -> Result<Vec<FilePlan>> {
    let mut out = Vec::new();
    for t in targets(req) {
        let before = read_opt(&t.path)?;
        let state = state_of(&t, req, before.as_deref())?;
        out.push(FilePlan {
            path: t.path.clone(),
            role: t.role,
            state,
            action: "unchanged",
            undo: None,
            after: before.clone(),
            before,
        });
    }
    Ok(out)
}

/// What setup recorded about a file before it first changed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    path: String,
    /// The original text; `None` with `original_hex` unset: the file did not exist.
    original: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_hex: Option<String>,
    /// False when the file had changed between two setups while holding
    /// cairn's entries: the original can no longer be put back as is.
    restorable: bool,
    /// Folders setup created for the file (removed again when empty).
    #[serde(default)]
    created_dirs: Vec<String>,
    /// sha256 of what setup last wrote.
    written_sha256: String,
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn record_path(record_dir: &Path, req: &SetupRequest, file: &Path) -> PathBuf {
    let scope = if req.global { "global" } else { "project" };
    let digest = sha(file.to_string_lossy().as_bytes());
    record_dir.join(format!(
        "{}-{scope}-{}.json",
        req.client.as_str(),
        &digest[..16]
    ))
}

fn read_record(path: &Path) -> Option<Record> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn original_of(rec: &Record) -> Option<Vec<u8>> {
    if let Some(h) = &rec.original_hex {
        return (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
            .collect();
    }
    rec.original.clone().map(String::into_bytes)
}

fn encode_original(bytes: Option<&[u8]>) -> (Option<String>, Option<String>) {
    match bytes {
        None => (None, None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(b.iter().map(|x| format!("{x:02x}")).collect())),
        },
    }
}

/// Writes a planned install: the undo records first, then each changed file
/// (temp file, fsync, rename). `record_dir` is the store's
/// `<local dir>/agent-setup`.
pub fn apply_install(req: &SetupRequest, plans: &[FilePlan], record_dir: &Path) -> Result<()> {
    for p in plans.iter().filter(|p| p.changes()) {
        let after = p.after.as_deref().expect("installs write every target");
        let rpath = record_path(record_dir, req, &p.path);
        let mut created_dirs = Vec::new();
        let mut dir = p.path.parent();
        while let Some(d) = dir {
            if d.exists() || d == req.root {
                break;
            }
            created_dirs.push(d.to_string_lossy().into_owned());
            dir = d.parent();
        }
        let rec = match read_record(&rpath) {
            None => {
                let (original, original_hex) = encode_original(p.before.as_deref());
                Record {
                    path: p.path.to_string_lossy().into_owned(),
                    original,
                    original_hex,
                    restorable: true,
                    created_dirs,
                    written_sha256: sha(after),
                }
            }
            Some(mut rec) => {
                let current = p.before.as_deref().map(sha);
                if current.as_deref() != Some(rec.written_sha256.as_str()) {
                    // Changed since setup wrote it: what is there now is the
                    // new original, if it holds nothing of cairn's.
                    if p.state == State::Missing {
                        let (original, original_hex) = encode_original(p.before.as_deref());
                        rec.original = original;
                        rec.original_hex = original_hex;
                        rec.restorable = true;
                        rec.created_dirs = created_dirs;
                    } else {
                        rec.restorable = false;
                    }
                }
                rec.written_sha256 = sha(after);
                rec
            }
        };
        let bytes = serde_json::to_vec_pretty(&rec).expect("records serialize");
        crate::store::write_atomic(&rpath, &bytes, true)?;
        crate::store::write_atomic(&p.path, after, true)?;
    }
    Ok(())
}

/// What `--remove` would do, file by file: the original bytes back when the
/// file still holds what setup wrote, else cairn's entries removed.
pub fn plan_remove(req: &SetupRequest, record_dir: &Path) -> Result<Vec<FilePlan>> {
    let mut out = Vec::new();
    for t in targets(req) {
        let before = read_opt(&t.path)?;
        let state = state_of(&t, req, before.as_deref())?;
        let rec = read_record(&record_path(record_dir, req, &t.path));
        let unchanged_since = rec.as_ref().is_some_and(|r| {
            r.restorable && before.as_deref().map(sha).as_deref() == Some(r.written_sha256.as_str())
        });
        let (after, undo) = if unchanged_since {
            (rec.as_ref().and_then(original_of), Some("restored"))
        } else {
            let (after, found) = stripped(&t, req, before.as_deref())?;
            (after, found.then_some("stripped"))
        };
        let action = match (&before, &after) {
            (a, b) if a == b => "unchanged",
            (_, None) => "delete",
            (None, Some(_)) => "create",
            _ if undo == Some("restored") => "restore",
            _ => "update",
        };
        out.push(FilePlan {
            path: t.path.clone(),
            role: t.role,
            state,
            action,
            undo,
            before,
            after,
        });
    }
    Ok(out)
}

/// Carries out a planned removal and drops the undo records.
pub fn apply_remove(req: &SetupRequest, plans: &[FilePlan], record_dir: &Path) -> Result<()> {
    let mut made_dirs: Vec<String> = Vec::new();
    for p in plans {
        let rpath = record_path(record_dir, req, &p.path);
        if p.changes() {
            match &p.after {
                Some(bytes) => crate::store::write_atomic(&p.path, bytes, true)?,
                None => match std::fs::remove_file(&p.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &p.path, e)),
                },
            }
        }
        if let Some(rec) = read_record(&rpath) {
            made_dirs.extend(rec.created_dirs);
        }
        match std::fs::remove_file(&rpath) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &rpath, e)),
        }
    }
    // Folders setup made (one file's record may hold a folder another file
    // also used), deepest first, where they are empty now.
    made_dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    made_dirs.dedup();
    for d in made_dirs {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_commands_are_told_from_foreign_ones() {
        assert!(is_our_command(
            "/usr/bin/cairn hook-agent claude stop",
            Client::Claude
        ));
        assert!(is_our_command(
            "cairn hook-agent claude session-start --store /s",
            Client::Claude
        ));
        assert!(!is_our_command(
            "cairn hook-agent codex stop",
            Client::Claude
        ));
        assert!(!is_our_command("python capture_stop.py", Client::Claude));
    }

    #[test]
    fn quoting_leaves_plain_paths_alone() {
        assert_eq!(shell_quote("/usr/local/bin/cairn"), "/usr/local/bin/cairn");
        assert_eq!(shell_quote("/a b/cairn"), "'/a b/cairn'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
