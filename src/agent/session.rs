//! What a session-start hook injects: which run a session belongs to, the
//! context text (the run's brief, written as facts), and the envelope each
//! client's hook schema requires.
//!
//! Invariants: reading only — a session start never writes the store; it
//! reads what it needs (the local session map, at most [`HISTORY_WINDOW`]
//! recent commits, the chosen run's working set and the brief's search)
//! and never scans every run; the text never exceeds the clients' cap of
//! 10,000 characters ([`super::CLIENT_CONTEXT_CAP`]).

use std::path::Path;

use serde_json::{json, Value};

use super::{AgentsConfig, Client, HookInput};
use crate::brief::{self, BriefRequest};
use crate::error::Result;
use crate::event::{parse_message, EventType};
use crate::project::{self, Registry};
use crate::store::Store;
use crate::working_set::{self, Status};

/// How many recent commits run resolution looks at, at most.
pub const HISTORY_WINDOW: usize = 500;
/// The local map of sessions to runs, in the store's local folder.
pub const SESSION_MAP: &str = "agent-sessions";

/// The run a session works in, and how it was chosen.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunChoice {
    /// The run.
    pub run_id: String,
    /// `session` (the session's own run) or `newest_active` (the newest
    /// active run of the project).
    pub how: &'static str,
}

/// The run recorded for `session` in the local session map, if any.
pub fn mapped_run(local_dir: &Path, session: &str) -> Option<String> {
    let text = std::fs::read_to_string(local_dir.join(SESSION_MAP)).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(s, _)| *s == session)
        .map(|(_, r)| r.trim().to_string())
        .next_back()
}

/// Records that `session` works in `run` (one appended line; best effort:
/// the map is a cache, the ledger is the truth).
pub fn map_session(local_dir: &Path, session: &str, run: &str) {
    use std::io::Write;
    if session.contains(['\t', '\n']) || mapped_run(local_dir, session).as_deref() == Some(run) {
        return;
    }
    let _ = std::fs::create_dir_all(local_dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(local_dir.join(SESSION_MAP))
    {
        let _ = f.write_all(format!("{session}\t{run}\n").as_bytes());
    }
}

/// The registered project a folder names: the first of the folder and its
/// parents (eight levels up) whose name is a project id or alias.
pub fn project_of(store: &Store, cwd: Option<&str>) -> Result<Option<String>> {
    let Some(cwd) = cwd else { return Ok(None) };
    let registry = Registry::at_tip(store)?;
    if registry.projects.is_empty() {
        return Ok(None);
    }
    for dir in Path::new(cwd).ancestors().take(8) {
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
            if let Some(p) = registry.find(name) {
                return Ok(Some(p.id.clone()));
            }
        }
    }
    Ok(None)
}

fn is_active(status: Status) -> bool {
    matches!(status, Status::Idle | Status::Busy | Status::Blocked)
}

/// Picks the run of a session: the session's own run (the local map, else
/// an INTERACTION_CAPTURED of this session among the recent commits), else
/// the newest active run of `project` (of any project when `None`) among
/// the runs the recent commits touched, else none.
pub fn choose_run(
    store: &Store,
    session: Option<&str>,
    project: Option<&str>,
) -> Result<Option<RunChoice>> {
    let Some(tip) = store.tip()? else {
        return Ok(None);
    };
    let exists = |run: &str| -> Result<bool> {
        Ok(store
            .entry(tip, &crate::layout::working_set(run))?
            .is_some())
    };
    if let Some(s) = session {
        if let Some(run) = mapped_run(store.local_dir(), s) {
            if exists(&run)? {
                return Ok(Some(RunChoice {
                    run_id: run,
                    how: "session",
                }));
            }
        }
    }
    let mut touched: Vec<String> = Vec::new();
    for id in store.recent_history(tip, HISTORY_WINDOW)? {
        let info = store.commit_info(id)?;
        let parsed = parse_message(&info.message);
        let Some(run) = parsed.trailer("Cairn-Run").map(str::to_string) else {
            continue;
        };
        if let (Some(s), Some(EventType::InteractionCaptured)) = (
            session,
            parsed.trailer("Cairn-Event").and_then(EventType::parse),
        ) {
            let same = parsed
                .payload
                .as_ref()
                .and_then(|p| p.get("session_id"))
                .and_then(Value::as_str)
                == Some(s);
            if same && exists(&run)? {
                return Ok(Some(RunChoice {
                    run_id: run,
                    how: "session",
                }));
            }
        }
        if !touched.contains(&run) {
            touched.push(run);
        }
    }
    let snap = store.snapshot()?;
    for run in touched {
        let Ok(ws) = working_set::read(&snap, &run) else {
            continue;
        };
        if !is_active(ws.status) {
            continue;
        }
        if let Some(p) = project {
            if ws.project.as_deref() != Some(p) {
                continue;
            }
        }
        return Ok(Some(RunChoice {
            run_id: run,
            how: "newest_active",
        }));
    }
    Ok(None)
}

/// What a session start injects.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionContext {
    /// The text (markdown), at most `brief_chars` characters.
    pub text: String,
    /// The run it describes, if one was chosen.
    pub run: Option<RunChoice>,
    /// The project the session's folder names, if any.
    pub project: Option<String>,
    /// Whether the text was cut to the cap.
    pub cut: bool,
}

/// Builds the context of a session start: facts about the store and the
/// chosen run, then the run's brief, within `config.brief_chars`.
pub fn context(store: &Store, input: &HookInput, config: &AgentsConfig) -> Result<SessionContext> {
    let project = project_of(store, input.cwd.as_deref())?;
    let run = choose_run(store, input.session_id.as_deref(), project.as_deref())?;
    let cap = config.brief_chars.min(super::CLIENT_CONTEXT_CAP);
    let store_path = store
        .workdir()
        .unwrap_or_else(|| store.git_dir())
        .components()
        .collect::<std::path::PathBuf>()
        .display()
        .to_string();
    let mut text = String::from("# cairn context\n\n");
    match &run {
        Some(choice) => {
            let snap = store.snapshot()?;
            let ws = working_set::read(&snap, &choice.run_id)?;
            let why = match choice.how {
                "session" => "this session's run",
                _ => "the newest active run of this project",
            };
            text.push_str(&format!(
                "cairn store `{store_path}`; run `{}` ({why}): status {}, seq {}{}.\n",
                ws.run_id,
                ws.status.as_str(),
                ws.update_seq,
                ws.project
                    .as_deref()
                    .map(|p| format!(", project `{p}`"))
                    .unwrap_or_default()
            ));
            if matches!(input.source.as_deref(), Some("resume" | "compact")) {
                text.push_str(&format!(
                    "The session was {}d; what follows is the run's working set as it is now.\n",
                    input.source.as_deref().unwrap_or("resume")
                ));
            }
            text.push('\n');
            // The brief's budget in tokens (~4 characters each), leaving room
            // for the lines above; the cut below is the hard limit.
            let room = cap.saturating_sub(text.chars().count() + 64) as u64 / 4;
            let budget = store.config()?.budgets.brief_tokens.min(room).max(1);
            let b = brief::brief_with_hint(
                store,
                &BriefRequest {
                    run_id: choice.run_id.clone(),
                    query: None,
                    budget: Some(budget),
                },
                project.as_deref(),
            )?;
            text.push_str(b.markdown.trim_end());
            text.push('\n');
        }
        None => {
            text.push_str(&format!(
                "cairn store `{store_path}`; no active run matches this session{}. Turns are captured into a run of their own when capture is on.\n",
                project
                    .as_deref()
                    .map(|p| format!(" in project `{p}`"))
                    .unwrap_or_default()
            ));
            if let Some(p) = &project {
                let (_, entries) = project::state_get(store, p, None)?;
                if !entries.is_empty() {
                    text.push_str(&format!("\n## Trusted state of `{p}` (curated)\n\n"));
                    for e in entries {
                        text.push_str(&format!("- {} / {}: {}\n", e.category, e.key, e.value));
                    }
                }
            }
        }
    }
    let (text, cut) = cut_to(text, cap);
    Ok(SessionContext {
        text,
        run,
        project,
        cut,
    })
}

/// `text` cut to at most `cap` characters, at a line boundary when one is
/// near, with a closing note saying it was cut.
pub fn cut_to(text: String, cap: usize) -> (String, bool) {
    if text.chars().count() <= cap {
        return (text, false);
    }
    const NOTE: &str = "\n[cairn: context cut at the clients' character cap]\n";
    let keep = cap.saturating_sub(NOTE.chars().count());
    let byte_end = text
        .char_indices()
        .nth(keep)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let mut head = &text[..byte_end];
    if let Some(nl) = head.rfind('\n') {
        if nl > byte_end / 2 {
            head = &head[..nl];
        }
    }
    (format!("{head}{NOTE}"), true)
}

/// The JSON a session-start hook prints for `client`: the context, or with
/// `None` the neutral answer (Claude Code: nothing at all; Codex: an empty
/// `additionalContext`; Cursor: `{"continue": true}`).
pub fn envelope(client: Client, context: Option<&str>) -> Option<String> {
    let value = match (client, context) {
        (Client::Claude, None) => return None,
        (Client::Claude | Client::Codex, text) => json!({
            "hookSpecificOutput": {
                "hookEventName": "SessionStart",
                "additionalContext": text.unwrap_or(""),
            }
        }),
        (Client::Cursor, Some(text)) => json!({"continue": true, "additional_context": text}),
        (Client::Cursor, None) => json!({"continue": true}),
    };
    Some(value.to_string())
}

/// The JSON a stop hook prints for `client` (Cursor expects an object;
/// Claude Code and Codex read an empty output as "carry on").
pub fn stop_envelope(client: Client) -> Option<String> {
    match client {
        Client::Cursor => Some("{}".into()),
        Client::Claude | Client::Codex => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutting_keeps_the_cap_and_says_so() {
        let text = "line\n".repeat(5000);
        let (cut, was) = cut_to(text, 10_000);
        assert!(was);
        assert!(cut.chars().count() <= 10_000);
        assert!(cut.ends_with("cap]\n"));
        let (same, was) = cut_to("short".into(), 10);
        assert_eq!((same.as_str(), was), ("short", false));
    }

    #[test]
    fn neutral_envelopes_fit_each_client() {
        assert_eq!(envelope(Client::Claude, None), None);
        assert_eq!(
            envelope(Client::Cursor, None).unwrap(),
            r#"{"continue":true}"#
        );
        let codex: Value = serde_json::from_str(&envelope(Client::Codex, None).unwrap()).unwrap();
        assert_eq!(codex["hookSpecificOutput"]["additionalContext"], "");
    }
}
