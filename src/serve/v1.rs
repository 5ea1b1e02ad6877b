//! cairn's own routes under `/v1/`: each answers the `--json` envelope
//! of the CLI command it mirrors, `{"ok": true, "data": ...}`, whose `data`
//! is the report of the same [`crate::api`] function the CLI renders, so
//! HTTP and `--json` cannot drift apart. Query parameters and bodies are
//! read into the api's request types after the checks in `extract`.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, IdemKey, JsonDoc, Params, PathId, BODY};
use super::seed::{body_id, load_pack, snapshot_into, SearchParams};
use super::{envelope, AppState};
use crate::api;
use crate::ledger::{EventType, LogQuery};
use crate::resume::SnapshotOptions;
use crate::working_set::BootRequest;

/// The `/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/runs", get(runs_list).post(runs_boot))
        .route("/v1/runs/{run_id}/ws", get(ws_show).post(ws_patch))
        .route("/v1/runs/{run_id}/ws/evicted", get(ws_evicted))
        .route("/v1/runs/{run_id}/brief", get(run_brief))
        .route("/v1/runs/{run_id}/episodes", get(episodes_list))
        .route("/v1/runs/{run_id}/milestone", post(run_milestone))
        .route("/v1/runs/{run_id}/memory", post(memory_propose))
        .route("/v1/runs/{run_id}/snapshot", post(run_snapshot))
        .route("/v1/resume/load", post(resume_load))
        .route("/v1/episodes/{episode_id}", get(episode_show))
        .route("/v1/ledger", get(ledger_query))
        .route("/v1/search", get(search))
        .route("/v1/memory", get(memory_list))
        .route("/v1/memory/queue", get(memory_queue))
        .route("/v1/memory/{id}", get(memory_show))
        .route("/v1/memory/{id}/history", get(memory_history))
        .route("/v1/memory/{id}/promote", post(memory_promote))
        .route("/v1/memory/{id}/reject", post(memory_reject))
        .route("/v1/batches/{batch_id}/commit", post(batch_commit))
        .route("/v1/projects", get(projects_list).post(projects_add))
        .route("/v1/projects/{name}/state", get(state_get).post(state_set))
        .route("/v1/fsck", get(fsck))
}

/// `GET /v1/runs` (`cairn run list`).
#[utoipa::path(get, path = "/v1/runs", tag = "v1",
    responses((status = 200, description = "{ok, data: {runs: [...]}}")))]
pub async fn runs_list(State(state): State<AppState>) -> ApiResult<Response> {
    state
        .run(|store| Ok(envelope(json!(api::run_list(store)?))))
        .await
}

/// `POST /v1/runs` (`cairn run boot`).
#[utoipa::path(post, path = "/v1/runs", tag = "v1",
    params(("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key")),
    request_body(content = Object, description = "run_boot"),
    responses(
        (status = 200, description = "{ok, data: {run_id, working_set, event, replayed}}"),
        (status = 409, description = "run exists"),
        (status = 422, description = "schema violation"),
    ))]
pub async fn runs_boot(
    State(state): State<AppState>,
    key: IdemKey,
    JsonDoc(doc): JsonDoc,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = BootRequest::from_value(BODY, &doc)?;
            Ok(envelope(json!(api::run_boot(store, &req, key.get())?)))
        })
        .await
}

/// `GET /v1/runs/{run_id}/ws[?at=SEQ|COMMIT]` (`cairn ws show`).
#[utoipa::path(get, path = "/v1/runs/{run_id}/ws", tag = "v1",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("at" = Option<String>, Query, description = "a seq (digits) or a commit (id or prefix)"),
    ),
    responses(
        (status = 200, description = "{ok, data: working_set}"),
        (status = 404, description = "unknown run, seq or commit"),
    ))]
pub async fn ws_show(
    State(state): State<AppState>,
    PathId(run): PathId,
    mut p: Params,
) -> ApiResult<Response> {
    let at = match p.text("at") {
        None => None,
        Some(s) if s.len() < 7 && s.chars().all(|c| c.is_ascii_digit()) => Some(s),
        Some(s) if (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(s)
        }
        Some(s) => {
            return Err(ApiError::invalid(
                "at",
                "",
                "seq_or_commit",
                format!("at = {s:?} is neither a seq nor a commit id (7 to 40 hex digits)"),
            ))
        }
    };
    p.finish()?;
    state
        .run(move |store| {
            let req = api::WsShowRequest { run, at };
            Ok(envelope(json!(api::ws_show(store, &req)?)))
        })
        .await
}

/// `POST /v1/runs/{run_id}/ws` (`cairn ws patch`).
#[utoipa::path(post, path = "/v1/runs/{run_id}/ws", tag = "v1",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body(content = Object, description = "a ws_patch, or {patch: ws_patch}"),
    responses(
        (status = 200, description = "{ok, data: {run_id, seq, working_set, evicted, event, replayed}}"),
        (status = 404, description = "unknown run"),
        (status = 409, description = "stale expected_seq"),
        (status = 422, description = "invalid patch"),
    ))]
pub async fn ws_patch(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    JsonDoc(doc): JsonDoc,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            Ok(envelope(json!(api::ws_patch_document(
                store,
                &run,
                &doc,
                BODY,
                key.get()
            )?)))
        })
        .await
}

/// `GET /v1/runs/{run_id}/ws/evicted` (`cairn ws evicted`).
#[utoipa::path(get, path = "/v1/runs/{run_id}/ws/evicted", tag = "v1",
    params(("run_id" = String, Path, description = "the run")),
    responses((status = 200, description = "{ok, data: {run_id, evicted}}"), (status = 404, description = "unknown run")))]
pub async fn ws_evicted(State(state): State<AppState>, PathId(run): PathId) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = api::WsEvictedRequest { run };
            Ok(envelope(json!(api::ws_evicted(store, &req)?)))
        })
        .await
}

/// `GET /v1/runs/{run_id}/brief` (`cairn brief --format json`).
#[utoipa::path(get, path = "/v1/runs/{run_id}/brief", tag = "v1",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("query" = Option<String>, Query, description = "the memory query (default: objective and next action)"),
        ("budget" = Option<u64>, Query, description = "the token budget"),
    ),
    responses((status = 200, description = "{ok, data: brief}"), (status = 404, description = "unknown run")))]
pub async fn run_brief(
    State(state): State<AppState>,
    PathId(run): PathId,
    mut p: Params,
) -> ApiResult<Response> {
    let query = p.text("query");
    let budget = p.number("budget", 1, 10_000_000)?;
    p.finish()?;
    state
        .run(move |store| {
            let req = api::BriefRequest { run, query, budget };
            Ok(envelope(json!(api::brief(store, &req)?)))
        })
        .await
}

/// `GET /v1/runs/{run_id}/episodes` (`cairn episode list`).
#[utoipa::path(get, path = "/v1/runs/{run_id}/episodes", tag = "v1",
    params(("run_id" = String, Path, description = "the run")),
    responses((status = 200, description = "{ok, data: {episodes}}"), (status = 404, description = "unknown run")))]
pub async fn episodes_list(
    State(state): State<AppState>,
    PathId(run): PathId,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            // An unknown run is NOT_FOUND, not an empty list.
            crate::working_set::show(store, &run, None)?;
            let req = api::EpisodeListRequest { run };
            Ok(envelope(json!(api::episode_list(store, &req)?)))
        })
        .await
}

/// `GET /v1/episodes/{episode_id}` (`cairn episode show`).
#[utoipa::path(get, path = "/v1/episodes/{episode_id}", tag = "v1",
    params(("episode_id" = String, Path, description = "the episode")),
    responses((status = 200, description = "{ok, data: episode}"), (status = 404, description = "unknown episode")))]
pub async fn episode_show(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            Ok(envelope(json!(api::episode_show(
                store,
                &api::EpisodeShowRequest { id }
            )?)))
        })
        .await
}

/// The milestone body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneBody {
    /// Why the checkpoint is taken.
    pub reason: String,
    /// Where to pick up from.
    #[serde(default)]
    pub next_entry_point: Option<String>,
    /// Proposed batches of this run to commit as memory.
    #[serde(default)]
    pub batches: Vec<String>,
}

/// `POST /v1/runs/{run_id}/milestone` (`cairn milestone`).
#[utoipa::path(post, path = "/v1/runs/{run_id}/milestone", tag = "v1",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = MilestoneBody,
    responses(
        (status = 200, description = "{ok, data: {episode, event, replayed}}"),
        (status = 404, description = "unknown run or batch"),
        (status = 409, description = "a batch was committed already"),
        (status = 422, description = "bad body"),
    ))]
pub async fn run_milestone(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    Body(body): Body<MilestoneBody>,
) -> ApiResult<Response> {
    for (i, b) in body.batches.iter().enumerate() {
        body_id(&format!("/batches/{i}"), b)?;
    }
    let req = api::MilestoneRequest {
        run,
        reason: body.reason,
        next_entry_point: body.next_entry_point,
        batches: body.batches,
    };
    state
        .run(move |store| Ok(envelope(json!(api::milestone(store, &req, key.get())?))))
        .await
}

/// `POST /v1/runs/{run_id}/memory` (`cairn memory propose`).
#[utoipa::path(post, path = "/v1/runs/{run_id}/memory", tag = "v1",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body(content = Object, description = "{mcrs: [...], scope_filters: {}}, a list of MCRs, or one MCR"),
    responses(
        (status = 200, description = "{ok, data: {batch_id, batch, event, replayed}}"),
        (status = 404, description = "unknown run"),
        (status = 422, description = "invalid MCRs"),
    ))]
pub async fn memory_propose(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    JsonDoc(doc): JsonDoc,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            Ok(envelope(json!(api::memory_propose_document(
                store,
                &run,
                &doc,
                Map::new(),
                BODY,
                key.get()
            )?)))
        })
        .await
}

/// The snapshot body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    /// One zip file instead of a folder.
    #[serde(default)]
    pub zip: bool,
    /// Only the run's ledger events from this seq on.
    #[serde(default)]
    pub ledger_since: Option<u64>,
}

/// `POST /v1/runs/{run_id}/snapshot` (`cairn snapshot`), into the packs folder.
#[utoipa::path(post, path = "/v1/runs/{run_id}/snapshot", tag = "v1",
    params(("run_id" = String, Path, description = "the run")),
    request_body = SnapshotBody,
    responses((status = 200, description = "{ok, data: {pack_id, path, head_commit, manifest, commit, replayed}}"), (status = 404, description = "unknown run")))]
pub async fn run_snapshot(
    State(state): State<AppState>,
    PathId(run): PathId,
    Body(body): Body<SnapshotBody>,
) -> ApiResult<Response> {
    let dir = state.packs_dir().to_path_buf();
    let opts = SnapshotOptions {
        ledger_since: body.ledger_since,
        zip: body.zip,
    };
    state
        .run(move |store| Ok(envelope(json!(snapshot_into(store, &run, &opts, &dir)?))))
        .await
}

/// The load body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    /// A pack id, file name or path inside the packs folder.
    pub pack: String,
    /// The new run's id.
    #[serde(default)]
    pub new_run_id: Option<String>,
    /// Continue this run instead.
    #[serde(default)]
    pub into_run: Option<String>,
    /// Keep memory statuses.
    #[serde(default)]
    pub trust: bool,
}

/// `POST /v1/resume/load` (`cairn resume load`).
#[utoipa::path(post, path = "/v1/resume/load", tag = "v1",
    params(("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key")),
    request_body = LoadBody,
    responses(
        (status = 200, description = "{ok, data: loaded}"),
        (status = 403, description = "pack outside the packs folder"),
        (status = 404, description = "no such pack"),
    ))]
pub async fn resume_load(
    State(state): State<AppState>,
    key: IdemKey,
    Body(b): Body<LoadBody>,
) -> ApiResult<Response> {
    let v = load_pack(
        &state,
        key,
        b.pack,
        "pack",
        b.new_run_id,
        b.into_run,
        b.trust,
    )
    .await?;
    Ok(envelope(v))
}

/// `GET /v1/ledger` (`cairn log`).
#[utoipa::path(get, path = "/v1/ledger", tag = "v1",
    params(
        ("run" = Option<String>, Query, description = "only this run"),
        ("type" = Option<String>, Query, description = "only this event type"),
        ("since" = Option<String>, Query, description = "at or after this RFC 3339 time"),
        ("until" = Option<String>, Query, description = "at or before this RFC 3339 time"),
        ("actor" = Option<String>, Query, description = "only this actor"),
        ("limit" = Option<u64>, Query, description = "the newest N"),
    ),
    responses((status = 200, description = "{ok, data: {events}}"), (status = 422, description = "bad parameter")))]
pub async fn ledger_query(State(state): State<AppState>, mut p: Params) -> ApiResult<Response> {
    let run_id = p.text("run");
    if let Some(r) = &run_id {
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
    let q = LogQuery {
        run_id,
        event_type,
        since: p.time("since")?,
        until: p.time("until")?,
        actor: p.text("actor"),
        limit: p.number("limit", 1, 1_000_000)?.map(|n| n as usize),
    };
    p.finish()?;
    state
        .run(move |store| {
            let events = api::log_events(store, &q, &|_, _| {})?;
            Ok(envelope(json!(api::LogReport { events })))
        })
        .await
}

/// `GET /v1/search` (`cairn search`).
#[utoipa::path(get, path = "/v1/search", tag = "v1",
    params(
        ("q" = Option<String>, Query, description = "plain words (any text); with syntax=true: words, \"phrases\", field:value"),
        ("scope" = Option<String>, Query, description = "scope or scope:id"),
        ("type" = Option<String>, Query, description = "only this type"),
        ("status" = Option<String>, Query, description = "default active; `any` for all"),
        ("project" = Option<String>, Query, description = "only this project"),
        ("tag" = Option<String>, Query, description = "only this tag"),
        ("since" = Option<String>, Query, description = "created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "created at or before (RFC 3339)"),
        ("top_k" = Option<u64>, Query, description = "how many hits (default 10)"),
        ("syntax" = Option<bool>, Query, description = "read q as the query syntax"),
        ("plain" = Option<bool>, Query, description = "plain words (the default; kept for old clients)"),
    ),
    responses((status = 200, description = "{ok, data: {hits, warnings, took_ms}}"), (status = 422, description = "bad parameter")))]
pub async fn search(State(state): State<AppState>, mut p: Params) -> ApiResult<Response> {
    let sp = SearchParams::take(&mut p, "q", 10)?;
    p.finish()?;
    state
        .run(move |store| Ok(envelope(json!(sp.run(store)?))))
        .await
}

fn list_request(p: &mut Params) -> ApiResult<api::MemoryListRequest> {
    Ok(api::MemoryListRequest {
        scope: p.text("scope"),
        kind: p.text("type"),
        status: p.text("status"),
        project: p.text("project"),
        tag: p.text("tag"),
        limit: p.number("limit", 1, 10_000_000)?.map(|n| n as usize),
    })
}

/// `GET /v1/memory` (`cairn memory list`).
#[utoipa::path(get, path = "/v1/memory", tag = "v1",
    params(
        ("scope" = Option<String>, Query, description = "scope or scope:id"),
        ("type" = Option<String>, Query, description = "only this type"),
        ("status" = Option<String>, Query, description = "candidate, active, superseded, invalid, expired"),
        ("project" = Option<String>, Query, description = "only this project"),
        ("tag" = Option<String>, Query, description = "only this tag"),
        ("limit" = Option<u64>, Query, description = "at most this many"),
    ),
    responses((status = 200, description = "{ok, data: {items, count}}")))]
pub async fn memory_list(State(state): State<AppState>, mut p: Params) -> ApiResult<Response> {
    let req = list_request(&mut p)?;
    p.finish()?;
    state
        .run(move |store| Ok(envelope(json!(api::memory_list(store, &req)?))))
        .await
}

/// `GET /v1/memory/queue` (`cairn memory queue`).
#[utoipa::path(get, path = "/v1/memory/queue", tag = "v1",
    params(
        ("scope" = Option<String>, Query, description = "scope or scope:id"),
        ("type" = Option<String>, Query, description = "only this type"),
        ("project" = Option<String>, Query, description = "only this project"),
        ("tag" = Option<String>, Query, description = "only this tag"),
        ("limit" = Option<u64>, Query, description = "at most this many"),
    ),
    responses((status = 200, description = "{ok, data: {items, count}}")))]
pub async fn memory_queue(State(state): State<AppState>, mut p: Params) -> ApiResult<Response> {
    let req = list_request(&mut p)?;
    p.finish()?;
    state
        .run(move |store| Ok(envelope(json!(api::memory_queue(store, &req)?))))
        .await
}

/// `GET /v1/memory/{id}` (`cairn memory show`).
#[utoipa::path(get, path = "/v1/memory/{id}", tag = "v1",
    params(("id" = String, Path, description = "the memory item")),
    responses((status = 200, description = "{ok, data: item}"), (status = 404, description = "unknown item")))]
pub async fn memory_show(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Response> {
    state
        .run(move |store| {
            Ok(envelope(json!(api::memory_show(
                store,
                &api::MemoryShowRequest { id }
            )?)))
        })
        .await
}

/// `GET /v1/memory/{id}/history` (`cairn memory history`).
#[utoipa::path(get, path = "/v1/memory/{id}/history", tag = "v1",
    params(("id" = String, Path, description = "the memory item")),
    responses((status = 200, description = "{ok, data: {id, versions}}"), (status = 404, description = "unknown item")))]
pub async fn memory_history(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = api::MemoryShowRequest { id };
            Ok(envelope(json!(api::memory_history(store, &req)?)))
        })
        .await
}

/// The promote body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// Why (recorded in the ledger).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/memory/{id}/promote` (`cairn memory promote`).
#[utoipa::path(post, path = "/v1/memory/{id}/promote", tag = "v1",
    params(
        ("id" = String, Path, description = "the candidate"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = PromoteBody,
    responses(
        (status = 200, description = "{ok, data: {item, event}}"),
        (status = 404, description = "unknown item"),
        (status = 409, description = "not a candidate"),
    ))]
pub async fn memory_promote(
    State(state): State<AppState>,
    PathId(id): PathId,
    key: IdemKey,
    Body(b): Body<PromoteBody>,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = api::MemoryPromoteRequest {
                id,
                reason: b.reason,
            };
            Ok(envelope(json!(api::memory_promote(
                store,
                &req,
                key.get()
            )?)))
        })
        .await
}

/// The reject body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why (required; recorded in the ledger).
    pub reason: String,
}

/// `POST /v1/memory/{id}/reject` (`cairn memory reject`).
#[utoipa::path(post, path = "/v1/memory/{id}/reject", tag = "v1",
    params(
        ("id" = String, Path, description = "the candidate"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = RejectBody,
    responses(
        (status = 200, description = "{ok, data: {item, event}}"),
        (status = 404, description = "unknown item"),
        (status = 409, description = "not a candidate"),
        (status = 422, description = "no reason"),
    ))]
pub async fn memory_reject(
    State(state): State<AppState>,
    PathId(id): PathId,
    key: IdemKey,
    Body(b): Body<RejectBody>,
) -> ApiResult<Response> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::invalid(
            BODY,
            "/reason",
            "required",
            "a rejection needs a reason",
        ));
    }
    state
        .run(move |store| {
            let req = api::MemoryRejectRequest {
                id,
                reason: b.reason,
            };
            Ok(envelope(json!(api::memory_reject(store, &req, key.get())?)))
        })
        .await
}

/// The batch commit body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Commit now, outside a milestone (logged as an override).
    #[serde(default)]
    pub allow_outside_milestone: bool,
}

/// `POST /v1/batches/{batch_id}/commit` (`cairn memory commit`).
#[utoipa::path(post, path = "/v1/batches/{batch_id}/commit", tag = "v1",
    params(
        ("batch_id" = String, Path, description = "the batch"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = CommitBody,
    responses(
        (status = 200, description = "{ok, data: {batch, event, replayed}}"),
        (status = 403, description = "outside a milestone"),
        (status = 404, description = "unknown batch"),
    ))]
pub async fn batch_commit(
    State(state): State<AppState>,
    PathId(batch): PathId,
    key: IdemKey,
    Body(b): Body<CommitBody>,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = api::MemoryCommitRequest {
                batch,
                allow_outside_milestone: b.allow_outside_milestone,
            };
            Ok(envelope(json!(api::memory_commit(store, &req, key.get())?)))
        })
        .await
}

/// `GET /v1/projects` (`cairn project list`).
#[utoipa::path(get, path = "/v1/projects", tag = "v1",
    responses((status = 200, description = "{ok, data: {projects}}")))]
pub async fn projects_list(State(state): State<AppState>) -> ApiResult<Response> {
    state
        .run(|store| Ok(envelope(json!(api::project_list(store)?))))
        .await
}

/// The project body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectBody {
    /// The canonical id.
    pub id: String,
    /// Other names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /v1/projects` (`cairn project add`).
#[utoipa::path(post, path = "/v1/projects", tag = "v1",
    params(("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key")),
    request_body = ProjectBody,
    responses((status = 200, description = "{ok, data: {project, event}}"), (status = 409, description = "taken"), (status = 422, description = "bad id")))]
pub async fn projects_add(
    State(state): State<AppState>,
    key: IdemKey,
    Body(b): Body<ProjectBody>,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = api::ProjectAddRequest {
                id: b.id,
                aliases: b.aliases,
                description: b.description,
            };
            Ok(envelope(json!(api::project_add(store, &req, key.get())?)))
        })
        .await
}

/// `GET /v1/projects/{name}/state` (`cairn state get`).
#[utoipa::path(get, path = "/v1/projects/{name}/state", tag = "v1",
    params(
        ("name" = String, Path, description = "the project (id or alias)"),
        ("category" = Option<String>, Query, description = "only this category"),
    ),
    responses((status = 200, description = "{ok, data: {project, entries}}")))]
pub async fn state_get(
    State(state): State<AppState>,
    PathId(name): PathId,
    mut p: Params,
) -> ApiResult<Response> {
    let category = p.text("category");
    p.finish()?;
    state
        .run(move |store| {
            let req = api::StateGetRequest {
                project: name,
                category,
            };
            Ok(envelope(json!(api::state_get(store, &req)?)))
        })
        .await
}

/// The state entry body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    /// The category.
    pub category: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Where it comes from.
    #[serde(default)]
    pub source: Option<String>,
}

/// `POST /v1/projects/{name}/state` (`cairn state set`).
#[utoipa::path(post, path = "/v1/projects/{name}/state", tag = "v1",
    params(
        ("name" = String, Path, description = "the project (id or alias)"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = StateBody,
    responses((status = 200, description = "{ok, data: {project, entry, event}}"), (status = 422, description = "bad entry")))]
pub async fn state_set(
    State(state): State<AppState>,
    PathId(name): PathId,
    key: IdemKey,
    Body(b): Body<StateBody>,
) -> ApiResult<Response> {
    state
        .run(move |store| {
            let req = api::StateSetRequest {
                project: name,
                category: b.category,
                key: b.key,
                value: b.value,
                source: b.source,
            };
            Ok(envelope(json!(api::state_set(store, &req, key.get())?)))
        })
        .await
}

/// `GET /v1/fsck` (`cairn fsck`): problems are the INTEGRITY error, as the CLI exits 8.
#[utoipa::path(get, path = "/v1/fsck", tag = "v1",
    responses((status = 200, description = "{ok, data: {findings: [], commit}}"), (status = 500, description = "INTEGRITY: details.findings")))]
pub async fn fsck(State(state): State<AppState>) -> ApiResult<Response> {
    state
        .run(|store| {
            let findings = crate::fsck::fsck(store)?;
            if !findings.is_empty() {
                return Err(crate::Error::FsckFailed { findings }.into());
            }
            let tip = store.require_tip()?;
            Ok(envelope(json!({"findings": [], "commit": tip.to_string()})))
        })
        .await
}
