//! Capture on stop: a finished turn (the user's prompt and the agent's
//! response) becomes an interaction of the session's run, in one commit
//! (INTERACTION_CAPTURED).
//!
//! Invariants:
//! - One record per turn: the commit carries the idempotency key
//!   `agent-capture:<digest of client, session, turn>`, so a retried hook
//!   (the same turn again) replays the first commit and writes nothing.
//! - Nothing acknowledged by the spool is lost: a turn is first written to
//!   `<local dir>/agent-spool/<key digest>.json` (temp file, fsync, rename),
//!   then committed, then its spool file removed. A hook that cannot get the
//!   store lock within its budget leaves the turn spooled; whichever hook
//!   gets the lock next commits every spooled turn ([`drain`]). A crash at
//!   any point leaves either the spool file or the commit (or both, which the
//!   key makes harmless).
//! - Responses (and prompts) are cut to `agents.max_response_bytes` at a
//!   character boundary; the record says `truncated` and the full size.
//! - An interaction is not memory: it reaches memory only through the
//!   normal propose → review path.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::session::{self, choose_run, map_session};
use super::{AgentsConfig, Client, HookInput};
use crate::error::{Error, Result};
use crate::event::{new_id, rfc3339, EventDraft, EventType};
use crate::store::{Changes, Mutation, Store};
use crate::working_set::{self, BootRequest};
use crate::{layout, schema};

/// The spool folder, in the store's local folder.
pub const SPOOL_DIR: &str = "agent-spool";
/// The most of a transcript read from its end, in bytes (the last turn is there).
pub const TRANSCRIPT_TAIL_BYTES: u64 = 16 * 1024 * 1024;

/// A finished turn, ready to be spooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The idempotency key of its capture.
    pub key: String,
    /// The client's name (`claude-code`, `codex`, `cursor`).
    pub client: String,
    /// The client's session id.
    pub session_id: String,
    /// The turn: the client's turn id, else a digest of prompt and response.
    pub turn: String,
    /// The prompt, possibly cut.
    pub prompt: String,
    /// The response, possibly cut.
    pub response: String,
    /// Whether the response (or the prompt) was cut.
    pub truncated: bool,
    /// The full response's size in bytes.
    pub response_bytes: u64,
    /// The full prompt's size in bytes.
    pub prompt_bytes: u64,
    /// The folder the agent worked in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra fields from the hook's payload.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the hook ran.
    pub created_at: String,
}

/// Why a turn was not captured (not an error: the hook did its job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Capture is switched off (`CAIRN_CAPTURE=0` or `agents.capture: false`).
    Disabled,
    /// No session id in the payload.
    NoSession,
    /// No user prompt found (payload and transcript).
    NoPrompt,
    /// The prompt is shorter than `agents.min_prompt_chars`.
    Trivial,
}

impl Skip {
    /// Words for the log.
    pub fn describe(&self) -> &'static str {
        match self {
            Skip::Disabled => "capture is switched off",
            Skip::NoSession => "the payload names no session",
            Skip::NoPrompt => "no user prompt in the payload or transcript",
            Skip::Trivial => "the prompt is too short to keep (agents.min_prompt_chars)",
        }
    }
}

fn hex_digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` cut to at most `max` bytes at a character boundary; whether it was cut.
pub fn truncate(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// The text of a message's content: a string, or the text blocks of a list.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Array(blocks) => {
            let parts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| match b {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(_) => {
                        let kind = b.get("type").and_then(Value::as_str).unwrap_or("text");
                        if matches!(kind, "text" | "input_text" | "output_text") {
                            b.get("text").and_then(Value::as_str)
                        } else {
                            None
                        }
                    }
                    _ => None,
                })
                .collect();
            Some(parts.join("\n").trim().to_string())
        }
        _ => None,
    }
}

/// (role, text) of one transcript line, for the transcript shapes of Claude
/// Code (`type` + `message.content`), Codex rollouts (`response_item`
/// messages, `event_msg` user/agent messages) and Cursor (`role` +
/// `message.content`). Meta entries (`isMeta`) are skipped.
fn transcript_entry(entry: &Value) -> Option<(&'static str, String)> {
    if entry.get("isMeta").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let role_of = |s: &str| match s {
        "user" | "human" => Some("user"),
        "assistant" | "agent" => Some("assistant"),
        _ => None,
    };
    if let Some(payload) = entry.get("payload").filter(|p| p.is_object()) {
        return match payload.get("type").and_then(Value::as_str) {
            Some("message") => Some((
                role_of(payload.get("role")?.as_str()?)?,
                content_text(payload.get("content")?)?,
            )),
            Some("user_message") => Some(("user", content_text(payload.get("message")?)?)),
            Some("agent_message") => Some(("assistant", content_text(payload.get("message")?)?)),
            _ => None,
        };
    }
    let role = entry
        .get("type")
        .and_then(Value::as_str)
        .and_then(role_of)
        .or_else(|| entry.get("role").and_then(Value::as_str).and_then(role_of))
        .or_else(|| {
            entry
                .get("message")
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str)
                .and_then(role_of)
        })?;
    let content = entry
        .get("message")
        .and_then(|m| m.get("content"))
        .or_else(|| entry.get("content"))
        .or_else(|| entry.get("text"))?;
    Some((role, content_text(content)?))
}

/// The last real user prompt and the last assistant text of a transcript
/// (JSON lines). As the seed's hook reads it: meta entries, command and
/// system XML (text starting with `<`) and prompts shorter than
/// `min_prompt_chars` are skipped. Reads at most the last
/// [`TRANSCRIPT_TAIL_BYTES`]; a missing or unreadable file gives nothing.
pub fn read_transcript(path: &Path, min_prompt_chars: usize) -> (Option<String>, Option<String>) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (None, None);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if len > TRANSCRIPT_TAIL_BYTES
        && file
            .seek(SeekFrom::Start(len - TRANSCRIPT_TAIL_BYTES))
            .is_err()
    {
        return (None, None);
    }
    if file.read_to_end(&mut bytes).is_err() {
        return (None, None);
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut prompt = None;
    let mut answer = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match transcript_entry(&entry) {
            Some(("user", t)) if !t.starts_with('<') && t.chars().count() >= min_prompt_chars => {
                prompt = Some(t);
                answer = None;
            }
            Some(("assistant", t)) if !t.is_empty() => answer = Some(t),
            _ => {}
        }
    }
    (prompt, answer)
}

/// The turn a stop hook was handed, or why there is nothing to capture.
/// The prompt comes from the payload, else the transcript's last user
/// prompt; the response from the payload's `last_assistant_message`, else
/// the transcript's last assistant text.
pub fn turn_of(
    client: Client,
    input: &HookInput,
    config: &AgentsConfig,
    now: OffsetDateTime,
) -> std::result::Result<Turn, Skip> {
    let session = input.session_id.clone().ok_or(Skip::NoSession)?;
    let (t_prompt, t_answer) = match &input.transcript_path {
        Some(p) => read_transcript(Path::new(p), config.min_prompt_chars),
        None => (None, None),
    };
    let prompt = input.prompt.clone().or(t_prompt).ok_or(Skip::NoPrompt)?;
    if prompt.trim().chars().count() < config.min_prompt_chars {
        return Err(Skip::Trivial);
    }
    let response = input
        .last_assistant_message
        .clone()
        .or(t_answer)
        .unwrap_or_default();
    let turn = input
        .turn_id
        .clone()
        .unwrap_or_else(|| hex_digest(&[&prompt, &response])[..24].to_string());
    let key = format!(
        "agent-capture:{}",
        &hex_digest(&[client.label(), &session, &turn])[..40]
    );
    let (p, p_cut) = truncate(&prompt, config.max_response_bytes);
    let (r, r_cut) = truncate(&response, config.max_response_bytes);
    let mut metadata: BTreeMap<String, String> = input.metadata.iter().cloned().collect();
    metadata.insert("turn".into(), turn.clone());
    if p_cut {
        metadata.insert("prompt_truncated".into(), "true".into());
    }
    Ok(Turn {
        key,
        client: client.label().to_string(),
        session_id: session,
        turn,
        prompt: p,
        response: r,
        truncated: p_cut || r_cut,
        response_bytes: response.len() as u64,
        prompt_bytes: prompt.len() as u64,
        cwd: input.cwd.clone(),
        metadata,
        created_at: rfc3339(now),
    })
}

fn spool_dir(local_dir: &Path) -> PathBuf {
    local_dir.join(SPOOL_DIR)
}

/// Writes a turn to the spool (temp file, fsync, rename); returns its path.
/// The file is named by the turn's key, so a retried hook rewrites the same file.
pub fn spool(local_dir: &Path, turn: &Turn) -> Result<PathBuf> {
    let name = hex_digest(&[&turn.key]);
    let path = spool_dir(local_dir).join(format!("{}.json", &name[..32]));
    let bytes = serde_json::to_vec(turn).expect("turns serialize");
    crate::store::write_atomic(&path, &bytes, true)?;
    Ok(path)
}

/// The spooled turns, oldest first (then by file name).
pub fn spooled(local_dir: &Path) -> Vec<(PathBuf, Option<Turn>)> {
    let Ok(entries) = std::fs::read_dir(spool_dir(local_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Option<Turn>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let turn = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Turn>(&b).ok());
            (p, turn)
        })
        .collect();
    out.sort_by(|a, b| {
        let ka =
            a.1.as_ref()
                .map(|t| t.created_at.clone())
                .unwrap_or_default();
        let kb =
            b.1.as_ref()
                .map(|t| t.created_at.clone())
                .unwrap_or_default();
        (ka, &a.0).cmp(&(kb, &b.0))
    });
    out
}

/// A committed (or replayed) capture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Captured {
    /// The interaction's id.
    pub interaction_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The commit that holds it.
    pub commit: String,
    /// True when the turn had been captured before (nothing new written).
    pub replayed: bool,
    /// True when a run was booted for the session first.
    pub booted: bool,
    /// Whether the response or prompt was cut.
    pub truncated: bool,
}

/// What became of one spooled turn.
#[derive(Debug)]
pub enum Outcome {
    /// Committed (or replayed).
    Captured(Captured),
    /// Refused for good (e.g. no run and `boot_session_runs: false`): the
    /// spool file was removed.
    Dropped(Error),
    /// Not committed now (the lock was busy, the budget ran out): still spooled.
    Kept(Error),
}

/// Commits one turn: into the session's run (see [`choose_run`]), else a run
/// booted for the session when `agents.boot_session_runs` allows it.
pub fn commit_turn(store: &Store, turn: &Turn, config: &AgentsConfig) -> Result<Captured> {
    let project = session::project_of(store, turn.cwd.as_deref())?;
    let mut booted = false;
    let run_id = match choose_run(store, Some(&turn.session_id), project.as_deref())? {
        Some(choice) => choice.run_id,
        None if config.boot_session_runs => {
            let key = format!(
                "agent-boot:{}",
                &hex_digest(&[&turn.client, &turn.session_id])[..40]
            );
            let (ws, committed) = working_set::boot(
                store,
                &BootRequest {
                    objective: format!("{} session {}", turn.client, turn.session_id),
                    project: project.clone(),
                    thread_id: Some(turn.session_id.clone()),
                    ..BootRequest::default()
                },
                Some(&key),
            )?;
            booted = !committed.replayed;
            ws.run_id
        }
        None => {
            return Err(Error::Policy {
                rule: "agents.boot_session_runs",
                message: format!(
                    "no run for session {} and agents.boot_session_runs is false in cairn.yaml: boot one (cairn run boot --thread-id) or allow it",
                    turn.session_id
                ),
            })
        }
    };
    map_session(store.local_dir(), &turn.session_id, &run_id);
    let committed = store.transact(
        Some(&crate::idempotency::Keyed::new(
            &turn.key,
            "capture",
            &[json!(turn.client), json!(turn.session_id), json!(turn.turn)],
        )),
        |snap| {
            let ws = working_set::read(snap, &run_id)?;
            let id = new_id("ix", snap.now());
            let path = format!(
                "{}/interactions/{}/{id}.yaml",
                layout::run_dir(&run_id),
                layout::shard(&id)
            );
            let mut doc = json!({
                "_schema_version": schema::SCHEMA_VERSION,
                "interaction_id": id,
                "run_id": run_id,
                "session_id": turn.session_id,
            });
            if let Some(p) = &ws.project {
                doc["project"] = json!(p);
            }
            doc["client"] = json!(turn.client);
            doc["prompt"] = json!(turn.prompt);
            doc["response"] = json!(turn.response);
            if turn.truncated {
                doc["truncated"] = json!(true);
            }
            doc["response_bytes"] = json!(turn.response_bytes);
            let mut metadata = turn.metadata.clone();
            if let Some(cwd) = &turn.cwd {
                metadata.insert("cwd".into(), cwd.clone());
            }
            doc["metadata"] = json!(metadata);
            doc["created_at"] = json!(rfc3339(snap.now()));
            let mut changes = Changes::new();
            changes.insert(path.clone(), Some(schema::to_yaml(&doc).into_bytes()));
            Ok(Mutation {
                changes,
                tags: Vec::new(),
                event: EventDraft::new(
                    EventType::InteractionCaptured,
                    format!("capture a {} turn", turn.client),
                )
                .run(&run_id, None)
                .payload(json!({
                    "interaction_id": id,
                    "path": path,
                    "client": turn.client,
                    "session_id": turn.session_id,
                    "turn": turn.turn,
                    "truncated": turn.truncated,
                    "response_bytes": turn.response_bytes,
                })),
            })
        },
    )?;
    let interaction_id = committed
        .event
        .payload
        .get("interaction_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Captured {
        interaction_id,
        run_id: committed.event.run_id.clone().unwrap_or(run_id),
        commit: committed.commit.to_string(),
        replayed: committed.replayed,
        booted,
        truncated: turn.truncated,
    })
}

/// Commits every spooled turn, oldest first, until `deadline`: each
/// committed (or refused for good) turn's spool file is removed; a turn
/// that hits a retryable error (the lock busy) stays spooled for the next
/// hook, and so does every turn after the deadline.
pub fn drain(store: &Store, config: &AgentsConfig, deadline: Instant) -> Vec<(PathBuf, Outcome)> {
    let mut out = Vec::new();
    for (path, turn) in spooled(store.local_dir()) {
        let Some(turn) = turn else {
            // Unreadable: a torn write cannot happen (rename), so this is
            // foreign or damaged; leave it for a person to look at.
            continue;
        };
        if Instant::now() >= deadline {
            out.push((
                path,
                Outcome::Kept(Error::Policy {
                    rule: "agents.stop_budget_ms",
                    message: "the stop hook's time budget ran out".into(),
                }),
            ));
            continue;
        }
        match commit_turn(store, &turn, config) {
            Ok(c) => {
                let _ = std::fs::remove_file(&path);
                out.push((path, Outcome::Captured(c)));
            }
            Err(e) if e.retryable() => out.push((path, Outcome::Kept(e))),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                out.push((path, Outcome::Dropped(e)));
            }
        }
    }
    out
}

/// The interactions of a run, oldest first (by `created_at`, then id).
pub fn list(store: &Store, run_id: &str) -> Result<Vec<Value>> {
    let tip = store.require_tip()?;
    if store.entry(tip, &layout::working_set(run_id))?.is_none() {
        return Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        });
    }
    let mut out = Vec::new();
    let dir = format!("{}/interactions", layout::run_dir(run_id));
    for (path, blob, _) in store.walk_files(tip, &dir)? {
        if layout::schema_for(&path) != Some("interaction") {
            continue;
        }
        let value = crate::store::parse_yaml(&path, &store.read_blob(blob)?)?;
        out.push(value);
    }
    let key = |v: &Value| {
        (
            v.get("created_at")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            v.get("interaction_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    };
    out.sort_by_key(key);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let (t, cut) = truncate("héllo", 2);
        assert_eq!((t.as_str(), cut), ("h", true));
        let (t, cut) = truncate("abc", 10);
        assert_eq!((t.as_str(), cut), ("abc", false));
    }

    #[test]
    fn transcript_shapes_of_each_client_are_read() {
        let claude = json!({"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "Please explain the backup system"}]}});
        assert_eq!(
            transcript_entry(&claude),
            Some(("user", "Please explain the backup system".into()))
        );
        let codex = json!({"type": "response_item", "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]}});
        assert_eq!(
            transcript_entry(&codex),
            Some(("assistant", "Done.".into()))
        );
        let codex_user = json!({"type": "event_msg", "payload": {"type": "user_message", "message": "Fix the flaky test please"}});
        assert_eq!(
            transcript_entry(&codex_user),
            Some(("user", "Fix the flaky test please".into()))
        );
        let cursor = json!({"role": "user", "message": {"content": [{"type": "text", "text": "Rename the module"}]}});
        assert_eq!(
            transcript_entry(&cursor),
            Some(("user", "Rename the module".into()))
        );
        let meta = json!({"type": "user", "isMeta": true, "message": {"content": "x"}});
        assert_eq!(transcript_entry(&meta), None);
    }
}
