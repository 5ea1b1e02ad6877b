//! The ledger: the store's history read as events, and queries over it.
//!
//! Every commit is one event (see [`crate::event`] for how a commit message
//! carries it): [`event_of`] reads one back, [`query`] filters the history by
//! run, type, actor and time, and [`find_seq`] finds the commit of a run's seq.

use git2::Oid;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::parse_rfc3339;
use crate::store::Store;

pub use crate::event::{
    build_event_from, is_cairn_commit, new_id, parse_message, CommitInfo, Event, EventDraft,
    EventType, Parsed,
};

/// The ledger event of one commit.
pub fn event_of(store: &Store, commit: Oid) -> Result<Event> {
    store.event_of(commit)
}

/// The (run, seq) pairs a SYNC_MERGE commit gave the patches it replayed
/// (its payload's `replayed`: run → [(their commit, new seq)]).
pub fn replayed_seqs(parsed: &Parsed) -> Vec<(String, u64)> {
    if parsed.trailer("Cairn-Event") != Some(EventType::SyncMerge.as_str()) {
        return Vec::new();
    }
    let Some(replayed) = parsed
        .payload
        .as_ref()
        .and_then(|p| p.get("replayed"))
        .and_then(serde_json::Value::as_object)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (run, list) in replayed {
        for pair in list.as_array().into_iter().flatten() {
            if let Some(seq) = pair.get(1).and_then(serde_json::Value::as_u64) {
                out.push((run.clone(), seq));
            }
        }
    }
    out
}

/// Filters for [`query`].
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only events of this run.
    pub run_id: Option<String>,
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events at or before this time.
    pub until: Option<OffsetDateTime>,
    /// Only events by this actor.
    pub actor: Option<String>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// Whether an event passes a query's filters (not its limit).
pub fn matches(q: &LogQuery, e: &Event) -> bool {
    q.matches(e)
}

impl LogQuery {
    fn matches(&self, e: &Event) -> bool {
        if let Some(r) = &self.run_id {
            if e.run_id.as_deref() != Some(r.as_str()) {
                return false;
            }
        }
        if let Some(t) = self.event_type {
            if e.event_type != t {
                return false;
            }
        }
        if let Some(a) = &self.actor {
            if &e.actor != a {
                return false;
            }
        }
        let ts = parse_rfc3339(&e.timestamp);
        if let (Some(since), Some(ts)) = (self.since, ts) {
            if ts < since {
                return false;
            }
        }
        if let (Some(until), Some(ts)) = (self.until, ts) {
            if ts > until {
                return false;
            }
        }
        true
    }
}

/// Events matching `q`, oldest first (the newest `limit` of them).
pub fn query(store: &Store, q: &LogQuery) -> Result<Vec<Event>> {
    let Some(tip) = store.tip()? else {
        return Ok(Vec::new());
    };
    events_between(store, tip, None, q)
}

/// Events of commits reachable from `tip` but not from `after`, matching `q`, oldest first.
pub fn events_between(
    store: &Store,
    tip: Oid,
    after: Option<Oid>,
    q: &LogQuery,
) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for id in store.history(tip, after)? {
        let info = store.commit_info(id)?;
        let parsed = parse_message(&info.message);
        // Cheap filters first: trailers decide most queries without a diff.
        if let Some(r) = &q.run_id {
            if let Some(run) = parsed.trailer("Cairn-Run") {
                if run != r {
                    continue;
                }
            }
        }
        let event = build_event_from(&info, &parsed, store.changed_paths(id)?);
        if q.matches(&event) {
            out.push(event);
            if q.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// The commit of a run's event with the given seq.
pub fn find_seq(store: &Store, run_id: &str, seq: u64) -> Result<Oid> {
    let tip = store.require_tip()?;
    for id in store.history(tip, None)? {
        let info = store.commit_info(id)?;
        let parsed = parse_message(&info.message);
        if parsed.trailer("Cairn-Run") == Some(run_id)
            && parsed
                .trailer("Cairn-Seq")
                .and_then(|s| s.parse::<u64>().ok())
                == Some(seq)
        {
            return Ok(id);
        }
        // A replayed patch's state is the merge commit's (the state after
        // all the patches it replayed).
        if replayed_seqs(&parsed).contains(&(run_id.to_string(), seq)) {
            return Ok(id);
        }
    }
    Err(Error::NotFound {
        what: format!("seq {seq} of run {run_id}"),
    })
}
