//! `GET /v1/events`: the ledger as Server-Sent Events.
//!
//! One watcher thread reads the branch tip every [`POLL`] and publishes it;
//! it sees every commit that moves the branch, whoever made it (this
//! server, the CLI in another process, a hand `git commit`, a sync). Each
//! subscriber remembers the last tip it has sent up to and, when the tip
//! moves, sends the events of the commits reachable from the new tip and
//! not from that one ([`ledger::events_between`]), oldest first. The SSE
//! `id` is the commit, so a reconnect with `Last-Event-ID` resumes exactly
//! after the last event received: nothing missed, nothing twice.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use git2::Oid;
use tokio::sync::watch;

use super::error::{ApiError, ApiResult};
use super::extract::Params;
use super::AppState;
use crate::ledger::{self, EventType, LogQuery};
use crate::{Result, Store};

/// How often the watcher reads the branch tip.
pub const POLL: Duration = Duration::from_millis(25);

/// The thread publishing the branch tip; stops when dropped.
pub struct TipWatcher {
    rx: watch::Receiver<Option<String>>,
    stop: Arc<AtomicBool>,
}

impl TipWatcher {
    /// Starts watching the branch of `store` (from a store of its own).
    pub fn start(store: &Store) -> Result<TipWatcher> {
        let path = store
            .workdir()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| store.git_dir().to_path_buf());
        let own = Store::discover(&path, crate::StoreOptions::default())?;
        let first = own.tip()?.map(|t| t.to_string());
        let (tx, rx) = watch::channel(first);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("cairn-tip-watch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    // A failed read (a ref being rewritten) is retried next round.
                    if let Ok(tip) = own.tip() {
                        let tip = tip.map(|t| t.to_string());
                        tx.send_if_modified(|cur| {
                            if *cur != tip {
                                *cur = tip;
                                true
                            } else {
                                false
                            }
                        });
                    }
                }
            })
            .map_err(|e| crate::Error::Io {
                op: "start the tip watcher for",
                path,
                source: e,
            })?;
        Ok(TipWatcher { rx, stop })
    }

    /// A receiver of the tip.
    pub fn receiver(&self) -> watch::Receiver<Option<String>> {
        self.rx.clone()
    }
}

impl Drop for TipWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The event stream's route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

/// Where a subscription starts.
enum Start {
    /// After this commit.
    After(String),
    /// From the first commit, keeping events at or after this time (if any).
    From(Option<time::OffsetDateTime>),
    /// At the current tip: live events only.
    Tip,
}

fn commit_like(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Ledger events as Server-Sent Events: `id` = commit, `event: ledger`,
/// `data` = the ledger_event JSON.
#[utoipa::path(get, path = "/v1/events", tag = "v1",
    params(
        ("since" = Option<String>, Query, description = "a commit id (events after it), an RFC 3339 time (events at or after it) or `start`; default: the current tip"),
        ("run" = Option<String>, Query, description = "only this run's events"),
        ("type" = Option<String>, Query, description = "only this event type"),
        ("actor" = Option<String>, Query, description = "only this actor's events"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this commit (wins over since)"),
    ),
    responses(
        (status = 200, description = "text/event-stream of ledger events", content_type = "text/event-stream"),
        (status = 404, description = "unknown commit"),
        (status = 422, description = "a bad parameter"),
    ))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut p: Params,
) -> ApiResult<Response> {
    let since = p.text("since");
    let run = p.text("run");
    if let Some(r) = &run {
        if !crate::layout::valid_id(r) {
            return Err(ApiError::invalid(
                "run",
                "",
                "pattern",
                format!("run = {r:?} is not a run id"),
            ));
        }
    }
    let event_type = match p.text("type") {
        Some(t) => Some(EventType::parse(&t).ok_or_else(|| {
            ApiError::invalid(
                "type",
                "",
                "event_type",
                format!("unknown event type {t:?}"),
            )
        })?),
        None => None,
    };
    let actor = p.text("actor");
    p.finish()?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let start = match (last_id, since) {
        (Some(id), _) => {
            if !commit_like(&id) {
                return Err(ApiError::invalid(
                    "Last-Event-ID",
                    "",
                    "commit",
                    format!("Last-Event-ID {id:?} is not a commit id"),
                ));
            }
            Start::After(id)
        }
        (None, Some(s)) if s == "start" => Start::From(None),
        (None, Some(s)) if commit_like(&s) => Start::After(s),
        (None, Some(s)) => match crate::event::parse_rfc3339(&s) {
            Some(t) => Start::From(Some(t)),
            None => {
                return Err(ApiError::invalid(
                    "since",
                    "",
                    "format",
                    format!("since = {s:?} is neither a commit id, an RFC 3339 time nor `start`"),
                ))
            }
        },
        (None, None) => Start::Tip,
    };
    let filter = LogQuery {
        run_id: run,
        event_type,
        actor,
        ..LogQuery::default()
    };
    // Watch first, then read: a commit landing in between is seen as a change.
    let mut tips = state.tips();
    tips.mark_changed();
    let backlog_q = LogQuery {
        since: match start {
            Start::From(t) => t,
            _ => None,
        },
        ..filter.clone()
    };
    let (mut last, backlog) = state
        .run(move |store| {
            let tip = store.tip()?;
            let after = match &start {
                Start::After(c) => Some(store.resolve(c)?),
                _ => None,
            };
            let backlog = match (&start, tip) {
                (Start::Tip, _) | (_, None) => Vec::new(),
                (_, Some(t)) => ledger::events_between(store, t, after, &backlog_q)?,
            };
            Ok((tip, backlog))
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<SseEvent, Infallible>>(256);
    tokio::spawn(async move {
        for e in backlog {
            if tx.send(Ok(sse_of(&e))).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                changed = tips.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
            let tip = tips
                .borrow_and_update()
                .as_deref()
                .and_then(|t| Oid::from_str(t).ok());
            let Some(tip) = tip else { continue };
            if Some(tip) == last {
                continue;
            }
            let q = filter.clone();
            let after = last;
            let batch = state
                .run(move |store| {
                    // The watcher may still publish a tip older than the one
                    // this subscriber has sent up to (its backlog read the
                    // branch directly): nothing to send, and `last` must not
                    // move back, or the next tip would send those events again.
                    if let Some(a) = after {
                        if store.is_ancestor(tip, a)? {
                            return Ok(None);
                        }
                    }
                    Ok(Some(ledger::events_between(store, tip, after, &q)?))
                })
                .await;
            match batch {
                Ok(None) => {}
                Ok(Some(events)) => {
                    for e in events {
                        if tx.send(Ok(sse_of(&e))).await.is_err() {
                            return;
                        }
                    }
                    last = Some(tip);
                }
                // A transient failure (say, a pack being written): try again on the next poll.
                Err(_) => {
                    tokio::time::sleep(POLL).await;
                    tips.mark_changed();
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response())
}

fn sse_of(e: &ledger::Event) -> SseEvent {
    SseEvent::default()
        .id(e.commit.clone())
        .event("ledger")
        .data(serde_json::to_string(e).expect("events serialize"))
}
