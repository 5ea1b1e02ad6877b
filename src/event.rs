//! The ledger's record format: one event per commit, written as a commit
//! message with trailers and read back from it.
//!
//! A cairn commit message is a human subject line, the event payload as one
//! line of JSON, and a trailer block (`Cairn-Event`, `Cairn-Event-Id`,
//! `Cairn-Timestamp`, `Cairn-Run`, `Cairn-Seq`, `Cairn-Idempotency-Key`). The
//! commit itself supplies the actor (author), parents and changed paths, so
//! the history *is* the ledger and [`build_event_from`] turns any commit back
//! into a schema-valid `ledger_event`. Commits made by hand, without
//! trailers, read back as MANUAL_EDIT events with an id derived from the
//! commit id. This module knows nothing of git objects or the store: the
//! transaction composes messages with it, and [`crate::ledger`] queries them.

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// A commit as the ledger sees it.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// The commit id.
    pub id: Oid,
    /// Parent commit ids.
    pub parents: Vec<Oid>,
    /// The full commit message.
    pub message: String,
    /// Author name.
    pub author: String,
    /// Author time, seconds since the epoch.
    pub time: i64,
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).expect("UTC times always format")
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// The kinds of ledger events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum EventType {
    StoreInit,
    RunBooted,
    RunClosed,
    WsUpdateApplied,
    WsConflictResolved,
    MemoryProposed,
    MemoryCommitted,
    MemoryPromoted,
    MemoryRejected,
    MemoryEdited,
    MemoryImported,
    MilestoneCreated,
    ResumeSnapshot,
    ResumeLoaded,
    InteractionCaptured,
    ProjectRegistered,
    ProjectStateSet,
    ProjectStateInvalidated,
    ManualEdit,
    SyncMerge,
    ConfigChanged,
    FsckRepair,
    MirrorRegenerated,
    ConflictResolved,
}

impl EventType {
    /// The upper-case name used in trailers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StoreInit => "STORE_INIT",
            EventType::RunBooted => "RUN_BOOTED",
            EventType::RunClosed => "RUN_CLOSED",
            EventType::WsUpdateApplied => "WS_UPDATE_APPLIED",
            EventType::WsConflictResolved => "WS_CONFLICT_RESOLVED",
            EventType::MemoryProposed => "MEMORY_PROPOSED",
            EventType::MemoryCommitted => "MEMORY_COMMITTED",
            EventType::MemoryPromoted => "MEMORY_PROMOTED",
            EventType::MemoryRejected => "MEMORY_REJECTED",
            EventType::MemoryEdited => "MEMORY_EDITED",
            EventType::MemoryImported => "MEMORY_IMPORTED",
            EventType::MilestoneCreated => "MILESTONE_CREATED",
            EventType::ResumeSnapshot => "RESUME_SNAPSHOT",
            EventType::ResumeLoaded => "RESUME_LOADED",
            EventType::InteractionCaptured => "INTERACTION_CAPTURED",
            EventType::ProjectRegistered => "PROJECT_REGISTERED",
            EventType::ProjectStateSet => "PROJECT_STATE_SET",
            EventType::ProjectStateInvalidated => "PROJECT_STATE_INVALIDATED",
            EventType::ManualEdit => "MANUAL_EDIT",
            EventType::SyncMerge => "SYNC_MERGE",
            EventType::ConfigChanged => "CONFIG_CHANGED",
            EventType::FsckRepair => "FSCK_REPAIR",
            EventType::MirrorRegenerated => "MIRROR_REGENERATED",
            EventType::ConflictResolved => "CONFLICT_RESOLVED",
        }
    }

    /// Parses an upper-case event type name.
    pub fn parse(s: &str) -> Option<EventType> {
        serde_json::from_value(Value::String(s.to_ascii_uppercase())).ok()
    }
}

/// What a mutation wants recorded; the store fills in ids, time and actor.
#[derive(Debug, Clone)]
pub struct EventDraft {
    /// The event type.
    pub event_type: EventType,
    /// The commit subject line.
    pub subject: String,
    /// The run the event belongs to.
    pub run_id: Option<String>,
    /// The run's `_update_seq` after the event.
    pub seq: Option<u64>,
    /// Event-specific data.
    pub payload: Value,
}

impl EventDraft {
    /// A draft with an empty payload.
    pub fn new(event_type: EventType, subject: impl Into<String>) -> Self {
        EventDraft {
            event_type,
            subject: subject.into(),
            run_id: None,
            seq: None,
            payload: Value::Object(Default::default()),
        }
    }

    /// Sets the run and its seq after the event.
    pub fn run(mut self, run_id: &str, seq: Option<u64>) -> Self {
        self.run_id = Some(run_id.to_string());
        self.seq = seq;
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }
}

/// A ledger event, as the `ledger_event` schema describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always "2.1".
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    /// `ev_<ULID>`.
    pub event_id: String,
    /// The event type.
    pub event_type: EventType,
    /// The run, if the event belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The run's `_update_seq` after the event, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When it happened (RFC 3339 UTC).
    pub timestamp: String,
    /// Who did it (the commit author).
    pub actor: String,
    /// The commit that is this event.
    pub commit: String,
    /// Parent commits.
    pub parents: Vec<String>,
    /// Paths the commit changed.
    pub paths: Vec<String>,
    /// Event-specific data.
    pub payload: Value,
    /// The idempotency key the write carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The commit subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn new_event_id(now: OffsetDateTime) -> String {
    let ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let ulid = ulid::Ulid::from_parts(ms, rand_u128());
    format!("ev_{ulid}")
}

/// Random bits for ULIDs (the ulid crate's generator needs its `std` clock;
/// cairn's clock may be pinned, so it supplies the time and only asks for randomness).
pub(crate) fn rand_u128() -> u128 {
    ulid::Ulid::new().random()
}

/// A new `<prefix>_<ULID>` id stamped with `now`.
pub fn new_id(prefix: &str, now: OffsetDateTime) -> String {
    let ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    format!("{prefix}_{}", ulid::Ulid::from_parts(ms, rand_u128()))
}

/// Builds the commit message and the event for a draft.
pub(crate) fn compose(
    draft: &EventDraft,
    key: Option<&str>,
    actor: &str,
    now: OffsetDateTime,
    parents: &[Oid],
    paths: Vec<String>,
) -> (String, Event) {
    let event = Event {
        schema_version: crate::schema::SCHEMA_VERSION.into(),
        event_id: new_event_id(now),
        event_type: draft.event_type,
        run_id: draft.run_id.clone(),
        seq: draft.seq,
        timestamp: rfc3339(now),
        actor: actor.to_string(),
        commit: String::new(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        paths,
        payload: draft.payload.clone(),
        idempotency_key: key.map(str::to_string),
        message: Some(one_line(&draft.subject)),
    };
    let mut msg = format!("{}\n\n", one_line(&draft.subject));
    msg.push_str(&serde_json::to_string(&draft.payload).expect("JSON values serialize"));
    msg.push_str("\n\n");
    msg.push_str(&format!("Cairn-Event: {}\n", draft.event_type.as_str()));
    msg.push_str(&format!("Cairn-Event-Id: {}\n", event.event_id));
    msg.push_str(&format!("Cairn-Timestamp: {}\n", event.timestamp));
    if let Some(run) = &draft.run_id {
        msg.push_str(&format!("Cairn-Run: {run}\n"));
    }
    if let Some(seq) = draft.seq {
        msg.push_str(&format!("Cairn-Seq: {seq}\n"));
    }
    if let Some(key) = key {
        msg.push_str(&format!("Cairn-Idempotency-Key: {key}\n"));
    }
    (msg, event)
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// The parsed parts of a commit message.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The subject line.
    pub subject: String,
    /// The JSON payload, if the message has one.
    pub payload: Option<Value>,
    /// Trailers in order.
    pub trailers: Vec<(String, String)>,
}

impl Parsed {
    /// The first value of a trailer.
    pub fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a commit message into subject, payload and trailers.
pub fn parse_message(message: &str) -> Parsed {
    let paragraphs: Vec<&str> = message
        .split("\n\n")
        .map(|p| p.trim_matches('\n'))
        .filter(|p| !p.trim().is_empty())
        .collect();
    let mut parsed = Parsed {
        subject: paragraphs.first().map(|s| one_line(s)).unwrap_or_default(),
        ..Parsed::default()
    };
    let mut body: &[&str] = paragraphs.get(1..).unwrap_or(&[]);
    if let Some(last) = body.last() {
        let lines: Vec<(String, String)> = last
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                ok.then(|| (k.to_string(), v.trim().to_string()))
            })
            .collect();
        if !lines.is_empty() && lines.len() == last.lines().count() {
            parsed.trailers = lines;
            body = &body[..body.len() - 1];
        }
    }
    for p in body {
        if p.trim_start().starts_with('{') {
            if let Ok(v) = serde_json::from_str::<Value>(p) {
                parsed.payload = Some(v);
            }
        }
    }
    parsed
}

/// Whether a commit was written by cairn (it carries the event trailer).
pub fn is_cairn_commit(parsed: &Parsed) -> bool {
    parsed.trailer("Cairn-Event").is_some()
}

/// Builds the event of a commit from its parsed message and changed paths.
pub fn build_event_from(info: &CommitInfo, parsed: &Parsed, paths: Vec<String>) -> Event {
    let event_type = parsed
        .trailer("Cairn-Event")
        .and_then(EventType::parse)
        .unwrap_or(EventType::ManualEdit);
    let commit_time =
        OffsetDateTime::from_unix_timestamp(info.time).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let timestamp = parsed
        .trailer("Cairn-Timestamp")
        .and_then(parse_rfc3339)
        .unwrap_or(commit_time);
    let event_id = parsed
        .trailer("Cairn-Event-Id")
        .filter(|id| id.starts_with("ev_") && id.len() == 29)
        .map(str::to_string)
        .unwrap_or_else(|| derived_event_id(info.id, commit_time));
    let run_id = parsed.trailer("Cairn-Run").map(str::to_string).or_else(|| {
        // A hand edit that touched exactly one run belongs to it.
        let mut runs: Vec<&str> = paths
            .iter()
            .filter_map(|p| crate::layout::run_of(p))
            .collect();
        runs.dedup();
        (runs.len() == 1).then(|| runs[0].to_string())
    });
    Event {
        schema_version: crate::schema::SCHEMA_VERSION.into(),
        event_id,
        event_type,
        run_id,
        seq: parsed.trailer("Cairn-Seq").and_then(|s| s.parse().ok()),
        timestamp: rfc3339(timestamp),
        actor: if info.author.is_empty() {
            "unknown".into()
        } else {
            info.author.clone()
        },
        commit: info.id.to_string(),
        parents: info.parents.iter().map(|p| p.to_string()).collect(),
        paths,
        payload: parsed
            .payload
            .clone()
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::Object(Default::default())),
        idempotency_key: parsed.trailer("Cairn-Idempotency-Key").map(str::to_string),
        message: Some(parsed.subject.clone()),
    }
}

/// A stable event id for a commit without trailers: its time plus 80 bits of its id.
fn derived_event_id(commit: Oid, time: OffsetDateTime) -> String {
    let bytes = commit.as_bytes();
    let mut random: u128 = 0;
    for b in &bytes[..10] {
        random = (random << 8) | u128::from(*b);
    }
    let ms = (time.unix_timestamp().max(0) as u64) * 1000;
    format!("ev_{}", ulid::Ulid::from_parts(ms, random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composed_message_parses_back() {
        let draft = EventDraft::new(
            EventType::WsUpdateApplied,
            "ws run_1: seq 3\nsecond line ignored",
        )
        .run("run_1", Some(3))
        .payload(serde_json::json!({"evicted": [], "note": "a\n\nb"}));
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let (msg, event) = compose(&draft, Some("key-1"), "agent", now, &[], vec!["x".into()]);
        let parsed = parse_message(&msg);
        assert_eq!(parsed.subject, "ws run_1: seq 3");
        assert_eq!(parsed.trailer("Cairn-Event"), Some("WS_UPDATE_APPLIED"));
        assert_eq!(parsed.trailer("Cairn-Seq"), Some("3"));
        assert_eq!(parsed.trailer("Cairn-Run"), Some("run_1"));
        assert_eq!(parsed.trailer("Cairn-Idempotency-Key"), Some("key-1"));
        assert_eq!(
            parsed.trailer("Cairn-Event-Id"),
            Some(event.event_id.as_str())
        );
        assert_eq!(parsed.payload, Some(draft.payload.clone()));
        assert_eq!(event.timestamp, "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn a_hand_message_has_no_trailers() {
        let parsed = parse_message("fix typo\n\nI changed: the wording\nand more\n");
        assert!(!is_cairn_commit(&parsed));
        assert_eq!(parsed.subject, "fix typo");
    }

    #[test]
    fn derived_event_ids_are_stable_and_valid() {
        let oid = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a = derived_event_id(oid, t);
        assert_eq!(a, derived_event_id(oid, t));
        assert_eq!(a.len(), 29);
        assert!(a.starts_with("ev_"));
    }

    #[test]
    fn event_types_round_trip() {
        for t in [
            EventType::StoreInit,
            EventType::ManualEdit,
            EventType::ProjectStateInvalidated,
        ] {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
        assert_eq!(
            EventType::parse("ws_update_applied"),
            Some(EventType::WsUpdateApplied)
        );
        assert_eq!(EventType::parse("NOPE"), None);
    }

    #[test]
    fn rfc3339_has_milliseconds_and_parses_back() {
        let t = parse_rfc3339("2026-01-18T00:00:00+02:00").unwrap();
        assert_eq!(rfc3339(t), "2026-01-17T22:00:00.000Z");
    }
}
