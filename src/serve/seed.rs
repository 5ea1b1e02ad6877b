//! The AoS Context v2.1 seed's routes (`/runs/...`), with the reference
//! server's request and response shapes (bare JSON objects, so the seed
//! README's curl flow runs unmodified), each answered by the library
//! function the matching CLI command calls. Responses add cairn's own
//! fields (`event`, `replayed`, ...) beside the seed's.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{Body, IdemKey, JsonDoc, Params, PathId, BODY};
use super::AppState;
use crate::brief::{self, BriefRequest};
use crate::episode::{self, MilestoneRequest};
use crate::memory::{self, Batch};
use crate::resume::{self, LoadOptions, SnapshotOptions};
use crate::search;
use crate::working_set::{self, BootRequest};
use crate::{api, layout, Error, Store};

/// The seed's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/runs/boot", post(boot))
        .route("/runs/resume/load", post(resume_load))
        .route("/runs/{run_id}/ws", get(get_ws))
        .route("/runs/{run_id}/step/update", post(step_update))
        .route("/runs/{run_id}/milestone", post(milestone))
        .route("/runs/{run_id}/memory/propose", post(memory_propose))
        .route("/runs/{run_id}/memory/commit", post(memory_commit))
        .route("/runs/{run_id}/memory/search", get(memory_search))
        .route("/runs/{run_id}/resume/snapshot", post(resume_snapshot))
}

/// Liveness: no store access, no token needed.
#[utoipa::path(get, path = "/health", tag = "seed",
    responses((status = 200, description = "{status: ok, version, cairn}")))]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": "2.1.0", "cairn": env!("CARGO_PKG_VERSION")}))
}

/// Checks an id given in a body field.
pub(crate) fn body_id(pointer: &str, id: &str) -> ApiResult<()> {
    if layout::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            BODY,
            pointer,
            "pattern",
            format!("{id:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"),
        ))
    }
}

/// Boots a run (`cairn run boot`).
pub(crate) fn boot_run(
    store: &Store,
    doc: &Value,
    key: Option<&str>,
) -> ApiResult<(working_set::WorkingSet, crate::store::Committed)> {
    let req = BootRequest::from_value(BODY, doc)?;
    Ok(working_set::boot(store, &req, key)?)
}

/// `POST /runs/boot`: boot a run (body: the seed's boot request, schema `run_boot`).
#[utoipa::path(post, path = "/runs/boot", tag = "seed",
    request_body(content = Object, description = "run_boot: objective (required), acceptance_criteria, constraints, project, task_id, thread_id, run_id"),
    params(("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key")),
    responses(
        (status = 200, description = "{run_id, ws, event, replayed}"),
        (status = 409, description = "run exists"),
        (status = 422, description = "schema violation"),
    ))]
pub async fn boot(
    State(state): State<AppState>,
    key: IdemKey,
    JsonDoc(doc): JsonDoc,
) -> ApiResult<Json<Value>> {
    state
        .run(move |store| {
            let (ws, c) = boot_run(store, &doc, key.get())?;
            Ok(Json(json!({
                "run_id": ws.run_id,
                "ws": ws,
                "event": c.event,
                "replayed": c.replayed,
            })))
        })
        .await
}

/// `GET /runs/{run_id}/ws`: the working set.
#[utoipa::path(get, path = "/runs/{run_id}/ws", tag = "seed",
    params(("run_id" = String, Path, description = "the run")),
    responses(
        (status = 200, description = "the working set"),
        (status = 404, description = "unknown run"),
    ))]
pub async fn get_ws(State(state): State<AppState>, PathId(run): PathId) -> ApiResult<Json<Value>> {
    state
        .run(move |store| Ok(Json(json!(working_set::show(store, &run, None)?))))
        .await
}

/// `POST /runs/{run_id}/step/update`: apply a WS patch under the optimistic lock.
#[utoipa::path(post, path = "/runs/{run_id}/step/update", tag = "seed",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body(content = Object, description = "{patch: ws_patch} or the bare ws_patch"),
    responses(
        (status = 200, description = "{ws, context_brief, seq, evicted, event, replayed}"),
        (status = 404, description = "unknown run"),
        (status = 409, description = "stale expected_seq"),
        (status = 422, description = "invalid patch"),
    ))]
pub async fn step_update(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    JsonDoc(doc): JsonDoc,
) -> ApiResult<Json<Value>> {
    state
        .run(move |store| {
            let out = working_set::patch(store, &run, &doc, BODY, key.get())?;
            // The write is done: a brief that cannot be made is reported, not an error.
            let (brief, warnings) = match brief::brief(
                store,
                &BriefRequest {
                    run_id: run.clone(),
                    query: None,
                    budget: None,
                },
            ) {
                Ok(b) => (json!(b.markdown), json!(out.committed.warnings)),
                Err(e) => {
                    let mut w = out.committed.warnings.clone();
                    w.push(format!("no context brief: {e}"));
                    (Value::Null, json!(w))
                }
            };
            Ok(Json(json!({
                "ws": out.working_set,
                "context_brief": brief,
                "seq": out.working_set.update_seq,
                "evicted": out.evicted,
                "event": out.committed.event,
                "replayed": out.committed.replayed,
                "warnings": warnings,
            })))
        })
        .await
}

/// The seed's milestone body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedMilestone {
    /// Why the checkpoint is taken (default `manual`).
    #[serde(default)]
    pub reason: Option<String>,
    /// Where to pick up from.
    #[serde(default)]
    pub next_entry_point: Option<String>,
    /// A proposed batch of this run to commit as memory.
    #[serde(default)]
    pub memory_batch_id: Option<String>,
    /// More batches to commit.
    #[serde(default)]
    pub memory_batch_ids: Vec<String>,
}

/// The item ids a committed batch made active.
fn batch_items(store: &Store, commit: git2::Oid, run: &str, batch: &str) -> ApiResult<Vec<String>> {
    let path = layout::batch(run, batch);
    let Some(bytes) = store.read_file(commit, &path)? else {
        return Ok(Vec::new());
    };
    let value = crate::store::parse_yaml(&path, &bytes)?;
    let b: Batch = serde_json::from_value(value).map_err(|e| Error::Integrity {
        subject: path.clone(),
        message: format!("not a batch: {e}"),
    })?;
    Ok(b.item_ids.into_iter().flatten().collect())
}

/// `POST /runs/{run_id}/milestone`: write the episode, commit the batches, tag it.
#[utoipa::path(post, path = "/runs/{run_id}/milestone", tag = "seed",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = SeedMilestone,
    responses(
        (status = 200, description = "{episode_id, episode_path, tag, committed_memory_ids, milestone_token: null, episode, event, replayed}"),
        (status = 404, description = "unknown run or batch"),
        (status = 409, description = "a batch was committed already"),
        (status = 422, description = "bad body"),
    ))]
pub async fn milestone(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    Body(body): Body<SeedMilestone>,
) -> ApiResult<Json<Value>> {
    let mut batches = Vec::new();
    if let Some(b) = body.memory_batch_id {
        body_id("/memory_batch_id", &b)?;
        batches.push(b);
    }
    for (i, b) in body.memory_batch_ids.into_iter().enumerate() {
        body_id(&format!("/memory_batch_ids/{i}"), &b)?;
        batches.push(b);
    }
    let req = MilestoneRequest {
        reason: body.reason.unwrap_or_else(|| "manual".into()),
        next_entry_point: body.next_entry_point,
        batches,
    };
    state
        .run(move |store| {
            let (ep, c) = episode::milestone(store, &run, &req, key.get())?;
            let mut committed = Vec::new();
            for b in &ep.memory_batches {
                committed.extend(batch_items(store, c.commit, &run, b)?);
            }
            Ok(Json(json!({
                "episode_id": ep.episode_id,
                "episode_path": layout::episode(&run, &ep.episode_id),
                "tag": ep.tag,
                "committed_memory_ids": committed,
                "milestone_token": null,
                "episode": ep,
                "event": c.event,
                "replayed": c.replayed,
            })))
        })
        .await
}

/// `POST /runs/{run_id}/memory/propose`: stage MCRs as one batch.
#[utoipa::path(post, path = "/runs/{run_id}/memory/propose", tag = "seed",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body(content = Object, description = "{mcrs: [mcr, ...] (at least one), scope_filters: {}}"),
    responses(
        (status = 200, description = "{ok, batch_id, staged_count, item_ids, batch, event, replayed}"),
        (status = 404, description = "unknown run"),
        (status = 422, description = "invalid MCRs"),
    ))]
pub async fn memory_propose(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    JsonDoc(doc): JsonDoc,
) -> ApiResult<Json<Value>> {
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::invalid(
            BODY,
            "",
            "type",
            "the body must be an object {\"mcrs\": [...], \"scope_filters\": {}}",
        ));
    };
    for k in obj.keys() {
        if k != "mcrs" && k != "scope_filters" {
            return Err(ApiError::invalid(
                BODY,
                &format!("/{k}"),
                "unknown_field",
                format!("unknown field `{k}`, expected `mcrs` or `scope_filters`"),
            ));
        }
    }
    if !obj.get("mcrs").is_some_and(Value::is_array) {
        return Err(ApiError::invalid(
            BODY,
            "/mcrs",
            "required",
            "`mcrs` must be a list of memory change requests",
        ));
    }
    if obj.get("scope_filters").is_some_and(|v| !v.is_object()) {
        return Err(ApiError::invalid(
            BODY,
            "/scope_filters",
            "type",
            "`scope_filters` must be an object",
        ));
    }
    state
        .run(move |store| {
            let (batch, c) = memory::propose(store, &run, &doc, Map::new(), BODY, key.get())?;
            let ids: Vec<&String> = batch.item_ids.iter().flatten().collect();
            Ok(Json(json!({
                "ok": true,
                "batch_id": batch.batch_id,
                "staged_count": batch.items.len(),
                "item_ids": ids,
                "batch": batch,
                "event": c.event,
                "replayed": c.replayed,
            })))
        })
        .await
}

/// The seed's memory commit body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedCommit {
    /// The batch to commit.
    pub batch_id: String,
    /// Commit now, outside a milestone (logged as an override).
    #[serde(default)]
    pub allow_outside_milestone: bool,
    /// Accepted for compatibility; cairn has no milestone tokens.
    #[serde(default)]
    pub milestone_token: Option<String>,
}

/// `batch` exists and is one of `run`'s batches (NOT_FOUND otherwise).
pub(crate) fn check_batch_of(store: &Store, run: &str, batch: &str) -> ApiResult<()> {
    working_set::show(store, run, None)?;
    let tip = store.require_tip()?;
    let owner = memory::batch_run(store, tip, batch)?;
    if owner != run {
        return Err(Error::NotFound {
            what: format!("batch {batch} of run {run}"),
        }
        .into());
    }
    Ok(())
}

/// `POST /runs/{run_id}/memory/commit`: commit a batch outside a milestone (POLICY unless allowed).
#[utoipa::path(post, path = "/runs/{run_id}/memory/commit", tag = "seed",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key"),
    ),
    request_body = SeedCommit,
    responses(
        (status = 200, description = "{ok, committed_ids, batch, event, replayed}"),
        (status = 403, description = "outside a milestone without allow_outside_milestone"),
        (status = 404, description = "unknown run or batch"),
        (status = 409, description = "batch committed already"),
    ))]
pub async fn memory_commit(
    State(state): State<AppState>,
    PathId(run): PathId,
    key: IdemKey,
    Body(body): Body<SeedCommit>,
) -> ApiResult<Json<Value>> {
    body_id("/batch_id", &body.batch_id)?;
    state
        .run(move |store| {
            check_batch_of(store, &run, &body.batch_id)?;
            let (batch, c) = memory::commit_batch(
                store,
                &body.batch_id,
                body.allow_outside_milestone,
                key.get(),
            )?;
            let ids: Vec<&String> = batch.item_ids.iter().flatten().collect();
            Ok(Json(json!({
                "ok": true,
                "committed_ids": ids,
                "batch": batch,
                "event": c.event,
                "replayed": c.replayed,
            })))
        })
        .await
}

/// A search from query parameters (shared with `/v1/search`): the api's
/// request, after each parameter was checked and named.
pub(crate) struct SearchParams(api::SearchRequest);

impl SearchParams {
    pub(crate) fn take(
        p: &mut Params,
        query_name: &str,
        default_k: u64,
    ) -> ApiResult<SearchParams> {
        let text = p.text(query_name);
        let since = p.text("since");
        let until = p.text("until");
        for (name, v) in [("since", &since), ("until", &until)] {
            if let Some(v) = v {
                if crate::event::parse_rfc3339(v).is_none() {
                    return Err(ApiError::invalid(
                        name,
                        "",
                        "format",
                        format!("query parameter {name} = {v:?} is not an RFC 3339 time"),
                    ));
                }
            }
        }
        Ok(SearchParams(api::SearchRequest {
            query: text.into_iter().collect(),
            scope: p.text("scope"),
            kind: p.text("type"),
            status: p.text("status"),
            project: p.text("project"),
            tag: p.text("tag"),
            since,
            until,
            top_k: p.number("top_k", 1, 1000)?.unwrap_or(default_k) as usize,
            syntax: p.flag("syntax")?,
            plain: p.flag("plain")?,
        }))
    }

    /// The `scope` asked for.
    pub(crate) fn scope_mut(&mut self) -> &mut Option<String> {
        &mut self.0.scope
    }

    /// The `status` asked for.
    pub(crate) fn status_mut(&mut self) -> &mut Option<String> {
        &mut self.0.status
    }

    pub(crate) fn run(self, store: &Store) -> ApiResult<search::SearchResults> {
        Ok(api::search(store, &self.0, &|_, _| {})?)
    }
}

/// `GET /runs/{run_id}/memory/search`: search memory (`cairn search`).
#[utoipa::path(get, path = "/runs/{run_id}/memory/search", tag = "seed",
    params(
        ("run_id" = String, Path, description = "the run"),
        ("q" = Option<String>, Query, description = "words, \"phrases\", field:value"),
        ("top_k" = Option<u64>, Query, description = "how many hits (default 8, 1..=1000)"),
        ("scope" = Option<String>, Query, description = "global, user, org, project[:NAME], run[:ID]; `run` alone is this run"),
        ("status" = Option<String>, Query, description = "default active; `any` for all"),
        ("type" = Option<String>, Query, description = "only this type"),
        ("project" = Option<String>, Query, description = "only this project"),
        ("tag" = Option<String>, Query, description = "only this tag"),
    ),
    responses(
        (status = 200, description = "{ok, items: [{memory_id, content, confidence, type, scope, scope_id, status, score, bm25, matched}], count, warnings, took_ms}"),
        (status = 404, description = "unknown run"),
        (status = 422, description = "bad parameter"),
    ))]
pub async fn memory_search(
    State(state): State<AppState>,
    PathId(run): PathId,
    mut p: Params,
) -> ApiResult<Json<Value>> {
    let mut sp = SearchParams::take(&mut p, "q", 8)?;
    p.finish()?;
    if sp.scope_mut().as_deref() == Some("run") {
        *sp.scope_mut() = Some(format!("run:{run}"));
    }
    if sp.status_mut().as_deref() == Some("active") {
        *sp.status_mut() = None;
    }
    state
        .run(move |store| {
            working_set::show(store, &run, None)?;
            let results = sp.run(store)?;
            let items: Vec<Value> = results
                .hits
                .iter()
                .map(|h| {
                    json!({
                        "memory_id": h.id,
                        "content": h.content,
                        "confidence": h.confidence,
                        "type": h.kind,
                        "scope": h.scope,
                        "scope_id": h.scope_id,
                        "status": h.status,
                        "score": h.score,
                        "bm25": h.bm25,
                        "matched": h.matched,
                    })
                })
                .collect();
            Ok(Json(json!({
                "ok": true,
                "count": items.len(),
                "items": items,
                "warnings": results.warnings,
                "took_ms": results.took_ms,
            })))
        })
        .await
}

/// The seed's snapshot body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedSnapshot {
    /// A zip file (default) or a folder.
    #[serde(default = "yes")]
    pub zip_pack: bool,
    /// Only `ledger_last_seq` is accepted (cairn computes it, as the reference did).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub pointers: Map<String, Value>,
    /// Only the run's ledger events from this seq on.
    #[serde(default)]
    pub ledger_since: Option<u64>,
}

fn yes() -> bool {
    true
}

/// `POST /runs/{run_id}/resume/snapshot`: write a resume pack into the packs folder.
#[utoipa::path(post, path = "/runs/{run_id}/resume/snapshot", tag = "seed",
    params(("run_id" = String, Path, description = "the run")),
    request_body = SeedSnapshot,
    responses(
        (status = 200, description = "{ok, pack_id, pack_zip, pack_dir, manifest_path, head_commit, manifest, commit, replayed}"),
        (status = 404, description = "unknown run"),
        (status = 422, description = "bad body"),
    ))]
pub async fn resume_snapshot(
    State(state): State<AppState>,
    PathId(run): PathId,
    Body(body): Body<SeedSnapshot>,
) -> ApiResult<Json<Value>> {
    if let Some(k) = body.pointers.keys().find(|k| *k != "ledger_last_seq") {
        return Err(ApiError::invalid(
            BODY,
            &format!("/pointers/{k}"),
            "pointer",
            format!(
                "cairn packs carry the pointers cairn computes (ledger_last_seq); {k:?} is not one"
            ),
        ));
    }
    let dir = state.packs_dir().to_path_buf();
    let zip = body.zip_pack;
    let opts = SnapshotOptions {
        ledger_since: body.ledger_since,
        zip,
    };
    state
        .run(move |store| {
            let done = snapshot_into(store, &run, &opts, &dir)?;
            let path = done.path.display().to_string();
            let mut v = json!(done);
            v["ok"] = json!(true);
            v["pack_zip"] = if zip { json!(path) } else { Value::Null };
            v["pack_dir"] = if zip { Value::Null } else { json!(path) };
            v["manifest_path"] = if zip {
                Value::Null
            } else {
                json!(done.path.join(resume::MANIFEST).display().to_string())
            };
            Ok(Json(v))
        })
        .await
}

/// Snapshots into the packs folder. The pack is written under a temporary
/// name and renamed into place; a pack of the same id already there has the
/// same bytes (the id is the hash of the content), so it is kept.
pub(crate) fn snapshot_into(
    store: &Store,
    run: &str,
    opts: &SnapshotOptions,
    dir: &Path,
) -> ApiResult<resume::Snapshotted> {
    working_set::show(store, run, None)?;
    let tmp = dir.join(format!(
        ".tmp-{}{}",
        crate::event::new_id("pack", store.now()),
        if opts.zip { ".zip" } else { "" }
    ));
    let mut done = resume::snapshot(store, run, opts, Some(&tmp), dir)?;
    let id = &done.pack_id;
    let path = dir.join(if opts.zip {
        format!("{id}.zip")
    } else {
        id.clone()
    });
    let kept = if std::fs::symlink_metadata(&path).is_ok() {
        Ok(())
    } else {
        std::fs::rename(&tmp, &path)
    };
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_file(&tmp);
    kept.map_err(|e| Error::Io {
        op: "rename into",
        path: path.clone(),
        source: e,
    })?;
    done.path = path;
    Ok(done)
}

/// Resolves a pack named in a request to a path inside the packs folder.
pub(crate) fn pack_in(dir: &Path, field: &str, given: &str) -> ApiResult<PathBuf> {
    let candidate = if layout::valid_id(given) {
        let zip = dir.join(format!("{given}.zip"));
        if zip.exists() || given.ends_with(".zip") {
            if given.ends_with(".zip") {
                dir.join(given)
            } else {
                zip
            }
        } else {
            dir.join(given)
        }
    } else {
        let p = Path::new(given);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let outside = || {
        ApiError::from(Error::Policy {
            rule: "PACK_OUTSIDE_PACKS_DIR",
            message: format!(
                "{field} {given:?} is outside the server's packs folder {}; the server reads packs only there",
                dir.display()
            ),
        })
    };
    // Refused before looking at the file system: whether a path outside exists is not told.
    if candidate
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || !candidate.starts_with(dir)
    {
        return Err(outside());
    }
    let real = candidate.canonicalize().map_err(|_| Error::NotFound {
        what: format!("pack {given} in the packs folder"),
    })?;
    // A symlink inside may still point outside.
    if !real.starts_with(dir) || real == dir {
        return Err(outside());
    }
    Ok(real)
}

/// The seed's load body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedLoad {
    /// A pack id, file name or path inside the packs folder.
    pub pack_path: String,
    /// The new run's id (default run_<ULID>).
    #[serde(default)]
    pub new_run_id: Option<String>,
    /// Continue this run instead.
    #[serde(default)]
    pub into_run: Option<String>,
    /// Keep memory statuses (else memory arrives as candidates).
    #[serde(default)]
    pub trust: bool,
}

/// `POST /runs/resume/load`: verify a pack and boot a run from it.
#[utoipa::path(post, path = "/runs/resume/load", tag = "seed",
    params(("Idempotency-Key" = Option<String>, Header, description = "cairn idempotency key")),
    request_body = SeedLoad,
    responses(
        (status = 200, description = "{ok, run_id, ws, pack_id, resumed_from, memory_added, memory_skipped, memory_status, episodes, interactions, state_written, commit}"),
        (status = 403, description = "pack outside the packs folder"),
        (status = 404, description = "no such pack"),
        (status = 409, description = "run exists"),
        (status = 422, description = "bad pack or body"),
    ))]
pub async fn resume_load(
    State(state): State<AppState>,
    key: IdemKey,
    Body(body): Body<SeedLoad>,
) -> ApiResult<Json<Value>> {
    let v = load_pack(
        &state,
        key,
        body.pack_path,
        "pack_path",
        body.new_run_id,
        body.into_run,
        body.trust,
    )
    .await?;
    let mut v = v;
    v["ok"] = json!(true);
    if let Some(ws) = v.as_object_mut().and_then(|o| o.remove("working_set")) {
        v["ws"] = ws;
    }
    Ok(Json(v))
}

/// Loads a pack named in a request (shared with `/v1/resume/load`).
pub(crate) async fn load_pack(
    state: &AppState,
    key: IdemKey,
    pack: String,
    field: &'static str,
    new_run_id: Option<String>,
    into_run: Option<String>,
    trust: bool,
) -> ApiResult<Value> {
    if let Some(r) = &new_run_id {
        body_id("/new_run_id", r)?;
    }
    if let Some(r) = &into_run {
        body_id("/into_run", r)?;
    }
    if new_run_id.is_some() && into_run.is_some() {
        return Err(ApiError::invalid(
            BODY,
            "/into_run",
            "exclusive",
            "give new_run_id or into_run, not both",
        ));
    }
    let path = pack_in(state.packs_dir(), field, &pack)?;
    state
        .run(move |store| {
            let done = resume::load(
                store,
                &path,
                &LoadOptions {
                    new_run_id,
                    into_run,
                    trust,
                },
                key.get(),
            )?;
            Ok(json!(done))
        })
        .await
}
