//! Long-term memory: propose, review, commit, read; requests and reports.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Result;
use crate::ledger::Event;
use crate::memory::{self, Batch, ListQuery, MemoryItem, ScopeFilter, Version};
use crate::project::Registry;
use crate::Store;

/// Stage memory change requests as one batch of a run.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryProposeRequest {
    /// The run proposing.
    pub run: String,
    /// The memory change requests (schema `mcr`): a list of MCRs, one MCR,
    /// or the seed's `{"mcrs": [...]}`. Each has `op`: `add` (with `type`,
    /// `scope`, `content`, optional `confidence`, `tags`, `rationale`), or
    /// `update`, `supersede` (with `content`) or `delete` with `target_id`.
    pub mcrs: Value,
    /// Scope filters recorded with the batch (key to value).
    #[serde(default)]
    pub scope_filters: Map<String, Value>,
}

/// What staging a batch reports.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryProposeReport {
    /// The batch id.
    pub batch_id: String,
    /// The batch, with the candidate ids it made.
    pub batch: Batch,
    /// The MEMORY_PROPOSED event.
    pub event: Event,
    /// True when an idempotency key matched an earlier proposal.
    pub replayed: bool,
}

/// Stages MCRs (a parsed document, named `file` in errors) as one batch.
pub fn memory_propose_document(
    store: &Store,
    run: &str,
    mcrs: &Value,
    scope_filters: Map<String, Value>,
    file: &str,
    key: Option<&str>,
) -> Result<MemoryProposeReport> {
    let (batch, c) = memory::propose(store, run, mcrs, scope_filters, file, key)?;
    Ok(MemoryProposeReport {
        batch_id: batch.batch_id.clone(),
        batch,
        event: c.event,
        replayed: c.replayed,
    })
}

/// Stages a [`MemoryProposeRequest`] (its MCRs are named `mcrs` in errors).
pub fn memory_propose(
    store: &Store,
    req: &MemoryProposeRequest,
    key: Option<&str>,
) -> Result<MemoryProposeReport> {
    memory_propose_document(
        store,
        &req.run,
        &req.mcrs,
        req.scope_filters.clone(),
        "mcrs",
        key,
    )
}

/// Commit a batch outside a milestone.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryCommitRequest {
    /// The batch.
    pub batch: String,
    /// Commit now, outside a milestone (an explicit, logged override).
    #[arg(long)]
    #[serde(default)]
    pub allow_outside_milestone: bool,
}

/// What committing a batch reports.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryCommitReport {
    /// The batch, committed.
    pub batch: Batch,
    /// The MEMORY_COMMITTED event.
    pub event: Event,
    /// True when an idempotency key matched an earlier commit.
    pub replayed: bool,
}

/// Commits a batch outside a milestone.
pub fn memory_commit(
    store: &Store,
    req: &MemoryCommitRequest,
    key: Option<&str>,
) -> Result<MemoryCommitReport> {
    let (batch, c) = memory::commit_batch(store, &req.batch, req.allow_outside_milestone, key)?;
    Ok(MemoryCommitReport {
        batch,
        event: c.event,
        replayed: c.replayed,
    })
}

/// Filters for listing memory items and the review queue.
#[derive(clap::Args, Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryListRequest {
    /// scope or scope:id, e.g. global, run:run_..., project:NAME.
    #[arg(long)]
    #[serde(default)]
    pub scope: Option<String>,
    /// Only this type (fact, preference, decision, ...).
    #[arg(long = "type")]
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Only this status (candidate, active, superseded, invalid, expired).
    #[arg(long)]
    #[serde(default)]
    pub status: Option<String>,
    /// Only this project (id or alias).
    #[arg(long)]
    #[serde(default)]
    pub project: Option<String>,
    /// Only items with this tag.
    #[arg(long)]
    #[serde(default)]
    pub tag: Option<String>,
    /// At most this many.
    #[arg(long)]
    #[serde(default)]
    pub limit: Option<usize>,
}

impl MemoryListRequest {
    /// The library's list query (project names canonicalized).
    pub fn to_query(&self, store: &Store) -> Result<ListQuery> {
        let registry = Registry::at_tip(store)?;
        Ok(ListQuery {
            scope: self
                .scope
                .as_deref()
                .map(|s| ScopeFilter::parse(s, &registry))
                .transpose()?,
            kind: self.kind.clone(),
            status: self.status.clone(),
            project: self.project.as_deref().map(|p| registry.canonicalize(p)),
            tag: self.tag.clone(),
            limit: self.limit,
        })
    }
}

/// A memory item as listed: the item and its status now (an active item
/// past its TTL is `expired`).
#[derive(Debug, Clone, Serialize)]
pub struct ListedItem {
    /// The item.
    #[serde(flatten)]
    pub item: MemoryItem,
    /// Its status at the store's clock.
    pub effective_status: &'static str,
}

/// Memory items (a listing or the review queue).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryListReport {
    /// The items, sorted by creation time then id.
    pub items: Vec<ListedItem>,
    /// How many.
    pub count: usize,
}

fn listing(store: &Store, items: Vec<MemoryItem>) -> MemoryListReport {
    let now = store.now();
    let items: Vec<ListedItem> = items
        .into_iter()
        .map(|item| ListedItem {
            effective_status: item.effective_status(now),
            item,
        })
        .collect();
    MemoryListReport {
        count: items.len(),
        items,
    }
}

/// Lists memory items.
pub fn memory_list(store: &Store, req: &MemoryListRequest) -> Result<MemoryListReport> {
    let q = req.to_query(store)?;
    Ok(listing(store, memory::list(store, &q)?))
}

/// The review queue: candidates awaiting promotion or rejection.
pub fn memory_queue(store: &Store, req: &MemoryListRequest) -> Result<MemoryListReport> {
    let q = req.to_query(store)?;
    Ok(listing(store, memory::queue(store, &q)?))
}

/// One memory item.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryShowRequest {
    /// The memory item id.
    pub id: String,
}

/// Shows one memory item.
pub fn memory_show(store: &Store, req: &MemoryShowRequest) -> Result<MemoryItem> {
    memory::show(store, &req.id)
}

/// Every version of an item.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryHistoryReport {
    /// The item id.
    pub id: String,
    /// Its versions, oldest first, with the commit and event that made each.
    pub versions: Vec<Version>,
}

/// Every version of an item.
pub fn memory_history(store: &Store, req: &MemoryShowRequest) -> Result<MemoryHistoryReport> {
    Ok(MemoryHistoryReport {
        id: req.id.clone(),
        versions: memory::history(store, &req.id)?,
    })
}

/// Promote a candidate to active memory.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryPromoteRequest {
    /// The candidate.
    pub id: String,
    /// Why (recorded in the ledger).
    #[arg(long)]
    #[serde(default)]
    pub reason: Option<String>,
}

/// Reject a candidate (it becomes invalid; history keeps it).
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryRejectRequest {
    /// The candidate.
    pub id: String,
    /// Why (recorded in the ledger).
    #[arg(long)]
    pub reason: String,
}

/// What a review (promote, reject, edit) reports.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReviewReport {
    /// The item after the change.
    pub item: MemoryItem,
    /// The event.
    pub event: Event,
}

/// Promotes a candidate.
pub fn memory_promote(
    store: &Store,
    req: &MemoryPromoteRequest,
    key: Option<&str>,
) -> Result<MemoryReviewReport> {
    let (item, c) = memory::promote(store, &req.id, req.reason.as_deref(), key)?;
    Ok(MemoryReviewReport {
        item,
        event: c.event,
    })
}

/// Rejects a candidate.
pub fn memory_reject(
    store: &Store,
    req: &MemoryRejectRequest,
    key: Option<&str>,
) -> Result<MemoryReviewReport> {
    let (item, c) = memory::reject(store, &req.id, &req.reason, key)?;
    Ok(MemoryReviewReport {
        item,
        event: c.event,
    })
}

/// Edits a candidate before review: `fields` (a parsed document, named
/// `file` in errors) holds the fields to replace.
pub fn memory_edit(
    store: &Store,
    id: &str,
    fields: &Value,
    file: &str,
    key: Option<&str>,
) -> Result<MemoryReviewReport> {
    let (item, c) = memory::edit(store, id, fields, file, key)?;
    Ok(MemoryReviewReport {
        item,
        event: c.event,
    })
}
