//! Agent integration: the glue between coding agents (Claude Code, Codex,
//! Cursor) and a store.
//!
//! - [`setup`]: writes a client's configuration (hooks and the MCP server
//!   registration), merged into what is there, idempotent, reversible byte
//!   for byte, with a check of what is installed.
//! - [`session`]: what a session-start hook prints — the run's brief in the
//!   client's exact output schema, fitted to the clients' 10,000-character cap.
//! - [`capture`]: what a stop hook records — the turn (prompt and response) as
//!   an interaction of the session's run, one commit (INTERACTION_CAPTURED)
//!   per turn, idempotent per session and turn, never lost by concurrent hooks
//!   (each turn is spooled under `.cairn/agent-spool/` before it is committed,
//!   and any hook that gets the store lock commits what is spooled).
//!
//! Invariants: nothing here prints or reads the environment (the CLI passes
//! the clock, the paths and the kill switch); hooks never write a config
//! file; setup never writes a store. Capture feeds memory only through the
//! normal propose → review path: an interaction is not memory.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::rfc3339;
use crate::store::Store;

pub mod capture;
pub mod session;
pub mod setup;

/// The agents cairn integrates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// Anthropic's Claude Code.
    Claude,
    /// OpenAI's Codex CLI.
    Codex,
    /// Cursor.
    Cursor,
}

impl Client {
    /// Every client, in the order the docs list them.
    pub const ALL: [Client; 3] = [Client::Claude, Client::Codex, Client::Cursor];

    /// Parses `claude`, `codex` or `cursor`.
    pub fn parse(s: &str) -> Option<Client> {
        match s.to_ascii_lowercase().as_str() {
            "claude" | "claude-code" => Some(Client::Claude),
            "codex" => Some(Client::Codex),
            "cursor" => Some(Client::Cursor),
            _ => None,
        }
    }

    /// The name on the command line (`cairn setup claude`).
    pub fn as_str(self) -> &'static str {
        match self {
            Client::Claude => "claude",
            Client::Codex => "codex",
            Client::Cursor => "cursor",
        }
    }

    /// The name recorded in interactions (`client`).
    pub fn label(self) -> &'static str {
        match self {
            Client::Claude => "claude-code",
            Client::Codex => "codex",
            Client::Cursor => "cursor",
        }
    }
}

/// The `agents:` section of `cairn.yaml` (every setting optional).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AgentsConfig {
    /// Capture turns at all (the config kill switch; `CAIRN_CAPTURE=0` is the other).
    pub capture: bool,
    /// When a stop hook finds no run for its session, boot one (RUN_BOOTED,
    /// `thread_id` = the session id). False: the turn is not captured and
    /// the reason is logged.
    pub boot_session_runs: bool,
    /// Longest captured response (and prompt), in bytes; longer ones are cut
    /// at a character boundary and marked `truncated`.
    pub max_response_bytes: usize,
    /// Prompts shorter than this many characters (acknowledgements, slash
    /// commands) are not captured.
    pub min_prompt_chars: usize,
    /// Hard time limit of a session-start hook, in milliseconds.
    pub session_start_budget_ms: u64,
    /// Hard time limit of a stop hook (including its wait for the store lock), in milliseconds.
    pub stop_budget_ms: u64,
    /// Longest context a session-start hook prints, in characters (the clients' cap is 10,000).
    pub brief_chars: usize,
}

/// The clients' cap on injected context, in characters.
pub const CLIENT_CONTEXT_CAP: usize = 10_000;

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            capture: true,
            boot_session_runs: true,
            max_response_bytes: 50_000,
            min_prompt_chars: 15,
            session_start_budget_ms: 500,
            stop_budget_ms: 3_000,
            brief_chars: CLIENT_CONTEXT_CAP,
        }
    }
}

impl AgentsConfig {
    /// The `agents:` section of the tip's `cairn.yaml` (defaults when absent).
    pub fn of(store: &Store) -> Result<AgentsConfig> {
        let Some(tip) = store.tip()? else {
            return Ok(AgentsConfig::default());
        };
        let Some(bytes) = store.read_file(tip, crate::layout::CONFIG)? else {
            return Ok(AgentsConfig::default());
        };
        let value = crate::store::parse_yaml(crate::layout::CONFIG, &bytes)?;
        Ok(Self::from_config_value(&value))
    }

    /// The section out of a parsed (schema-valid) `cairn.yaml`.
    pub fn from_config_value(value: &Value) -> AgentsConfig {
        let mut c: AgentsConfig = value
            .get("agents")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        c.brief_chars = c.brief_chars.min(CLIENT_CONTEXT_CAP);
        c
    }
}

/// The local log of the agent hooks: `<local dir>/agent.log`.
pub const LOG_FILE: &str = "agent.log";

/// Appends one line to `<dir>/agent.log`: time, client, hook, message.
/// Best effort: a log that cannot be written is not an error for a hook.
pub fn log_line(dir: &Path, now: OffsetDateTime, client: &str, hook: &str, message: &str) {
    let _ = std::fs::create_dir_all(dir);
    let line = format!(
        "{} {client} {hook} {}\n",
        rfc3339(now),
        message.replace(['\n', '\r'], " ")
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// What a hook was handed on stdin, normalised across clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookInput {
    /// The session (Claude, Codex: `session_id`; Cursor: `conversation_id`).
    pub session_id: Option<String>,
    /// The folder the agent works in (Cursor: the first workspace root).
    pub cwd: Option<String>,
    /// Why the session started: startup, resume, clear, compact.
    pub source: Option<String>,
    /// The client's transcript (JSON lines), if it names one.
    pub transcript_path: Option<String>,
    /// The agent's last message, when the payload carries it.
    pub last_assistant_message: Option<String>,
    /// The turn (Codex: `turn_id`; Cursor: `generation_id`).
    pub turn_id: Option<String>,
    /// The prompt, when the payload carries it.
    pub prompt: Option<String>,
    /// Extra string fields kept as interaction metadata (model, status, …).
    pub metadata: Vec<(String, String)>,
}

impl HookInput {
    /// Reads a hook's stdin JSON; an empty input is an empty [`HookInput`].
    pub fn parse(client: Client, bytes: &[u8]) -> Result<HookInput> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(HookInput::default());
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Parse {
            file: "<stdin>".into(),
            format: "JSON",
            message: e.to_string(),
        })?;
        if !value.is_object() {
            return Err(Error::Invalid {
                file: "<stdin>".into(),
                pointer: String::new(),
                rule: "hook_input",
                message: "a hook's input is a JSON object".into(),
            });
        }
        let text = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let mut input = HookInput {
            session_id: text("session_id"),
            cwd: text("cwd"),
            source: text("source"),
            transcript_path: text("transcript_path"),
            last_assistant_message: text("last_assistant_message"),
            turn_id: text("turn_id"),
            prompt: text("prompt"),
            metadata: Vec::new(),
        };
        if client == Client::Cursor {
            input.session_id = text("conversation_id").or(input.session_id);
            input.turn_id = text("generation_id").or(input.turn_id);
            if input.cwd.is_none() {
                input.cwd = value
                    .get("workspace_roots")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
        }
        for k in ["model", "permission_mode", "status", "hook_event_name"] {
            if let Some(v) = text(k) {
                input.metadata.push((k.to_string(), v));
            }
        }
        Ok(input)
    }
}
