//! Long-term memory: proposals, the double-key commit, the review queue.
//!
//! Invariants:
//! - Memory changes are staged as a batch of MCRs (`propose`); the items a
//!   batch would add exist from then on as `candidate` files, visible in the
//!   review queue. A batch becomes memory only when it is committed at a
//!   milestone, or through the explicit, logged `--allow-outside-milestone`
//!   override; single candidates can be promoted or rejected by review.
//! - Nothing is ever removed: `update` edits in place (history keeps the old
//!   text), `supersede` keeps the old item as `superseded` with links both
//!   ways, `delete` marks the item `invalid`.
//! - Every status change is named in its event's payload (`items`: id and new
//!   status), so replaying the ledger gives the statuses in the files.
//! - Each item is one file under `memory/<scope>/...`, sharded (see `layout`).

use std::collections::BTreeMap;

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result, Violation};
use crate::event::{parse_rfc3339, rfc3339};
use crate::ledger::{self, EventDraft, EventType};
use crate::project::Registry;
use crate::store::{Changes, Committed, Mutation, Snapshot, Store};
use crate::working_set::WorkingSet;
use crate::{layout, schema};

/// The scopes memory can live in.
pub const SCOPES: [&str; 5] = ["global", "user", "org", "project", "run"];

/// The status of a memory item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum ItemStatus {
    Candidate,
    Active,
    Superseded,
    Invalid,
}

impl ItemStatus {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Candidate => "candidate",
            ItemStatus::Active => "active",
            ItemStatus::Superseded => "superseded",
            ItemStatus::Invalid => "invalid",
        }
    }

    /// Parses a lower-case status name.
    pub fn parse(s: &str) -> Option<ItemStatus> {
        serde_json::from_value(Value::String(s.to_ascii_lowercase())).ok()
    }
}

/// One long-term memory item, in the key order of its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct MemoryItem {
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub content: String,
    pub confidence: f64,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    pub source_refs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disputed: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl MemoryItem {
    /// The file this item lives in.
    pub fn path(&self) -> String {
        layout::memory_item(&self.scope, self.scope_id.as_deref(), &self.id)
    }

    /// Canonical YAML.
    pub fn to_yaml(&self) -> String {
        schema::to_yaml(&serde_json::to_value(self).expect("memory items serialize"))
    }

    /// Parses and validates an item file.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<MemoryItem> {
        schema::load("memory_item", file, bytes)
    }

    /// Whether the item has expired at `now` (it stays in history either way).
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at
            .as_deref()
            .and_then(parse_rfc3339)
            .is_some_and(|t| t <= now)
    }

    /// The status shown in listings: `expired` for an active item past its TTL.
    pub fn effective_status(&self, now: OffsetDateTime) -> &'static str {
        if self.status == ItemStatus::Active && self.expired(now) {
            "expired"
        } else {
            self.status.as_str()
        }
    }
}

/// A status change, as recorded in event payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemChange {
    /// The item.
    pub id: String,
    /// Its status after the event.
    pub status: ItemStatus,
}

/// A staged batch of memory change requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Batch {
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    pub batch_id: String,
    pub run_id: String,
    pub status: String,
    #[serde(default)]
    pub scope_filters: Map<String, Value>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_in: Option<String>,
    pub items: Vec<Value>,
    pub item_ids: Vec<Option<String>>,
    #[serde(default)]
    pub target_blobs: BTreeMap<String, String>,
}

impl Batch {
    pub(crate) fn to_yaml(&self) -> String {
        schema::to_yaml(&serde_json::to_value(self).expect("batches serialize"))
    }

    fn from_bytes(file: &str, bytes: &[u8]) -> Result<Batch> {
        schema::load("mcr_batch", file, bytes)
    }
}

/// Parses an ISO 8601 duration (`P30D`, `PT12H`, `P1Y2M3DT4H`); years are 365
/// days and months 30, so expiry is deterministic.
pub fn parse_ttl(ttl: &str) -> Option<time::Duration> {
    let rest = ttl.strip_prefix('P')?;
    let (date, clock) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut seconds: i64 = 0;
    let mut parts = |text: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| *u == c)?.1;
                seconds = seconds.checked_add(num.parse::<i64>().ok()?.checked_mul(unit)?)?;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    parts(
        date,
        &[
            ('Y', 365 * 86400),
            ('M', 30 * 86400),
            ('W', 7 * 86400),
            ('D', 86400),
        ],
    )?;
    if let Some(t) = clock {
        parts(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    Some(time::Duration::seconds(seconds))
}

/// Where an item lives at a commit, found by id alone.
pub fn locate(store: &Store, commit: Oid, id: &str) -> Result<Option<String>> {
    let shard = layout::shard(id);
    for scope in SCOPES {
        if scope == "global" {
            let p = layout::memory_item("global", None, id);
            if store.blob_id(commit, &p)?.is_some() {
                return Ok(Some(p));
            }
            continue;
        }
        for (sid_shard, _) in store.list_dir(commit, &format!("{}/{scope}", layout::MEMORY))? {
            for (sid, _) in
                store.list_dir(commit, &format!("{}/{scope}/{sid_shard}", layout::MEMORY))?
            {
                let p = format!(
                    "{}/{scope}/{sid_shard}/{sid}/{shard}/{id}.yaml",
                    layout::MEMORY
                );
                if store.blob_id(commit, &p)?.is_some() {
                    return Ok(Some(p));
                }
            }
        }
    }
    Ok(None)
}

fn load_item(store: &Store, commit: Oid, id: &str) -> Result<(String, MemoryItem)> {
    let path = locate(store, commit, id)?.ok_or_else(|| Error::NotFound {
        what: format!("memory item {id}"),
    })?;
    let bytes = store
        .read_file(commit, &path)?
        .expect("located items exist");
    Ok((path.clone(), MemoryItem::from_bytes(&path, &bytes)?))
}

fn snap_commit(snap: &Snapshot<'_>) -> Result<Oid> {
    snap.commit().ok_or_else(|| Error::NotFound {
        what: "a commit (the store is empty)".into(),
    })
}

/// What `propose` accepts: a list of MCRs, the seed's `{"mcrs": [...], "scope_filters": {...}}`, or one MCR.
pub fn mcrs_of(input: &Value) -> (Vec<Value>, Map<String, Value>) {
    match input {
        Value::Array(a) => (a.clone(), Map::new()),
        Value::Object(m) if m.contains_key("mcrs") => (
            m["mcrs"].as_array().cloned().unwrap_or_default(),
            m.get("scope_filters")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        ),
        other => (vec![other.clone()], Map::new()),
    }
}

/// Stages MCRs as one batch of run `run_id` (MEMORY_PROPOSED).
pub fn propose(
    store: &Store,
    run_id: &str,
    input: &Value,
    scope_filters: Map<String, Value>,
    file: &str,
    key: Option<&str>,
) -> Result<(Batch, Committed)> {
    let committed = store.transact(crate::idempotency::keyed(key, "memory.propose", || vec![json!(run_id), input.clone(), Value::Object(scope_filters.clone())]).as_ref(), |snap| {
        let (mcrs, mut filters) = mcrs_of(input);
        filters.extend(scope_filters.clone());
        let commit = snap_commit(snap)?;
        let ws = crate::working_set::read(snap, run_id)?;
        if mcrs.is_empty() {
            return Err(Error::Invalid {
                file: file.to_string(),
                pointer: "/mcrs".into(),
                rule: "minItems",
                message: "a batch needs at least one MCR".into(),
            });
        }
        // Schema first, every item, all problems at once.
        let mut violations = Vec::new();
        for (i, m) in mcrs.iter().enumerate() {
            for v in schema::violations("mcr", m) {
                violations.push(Violation {
                    pointer: format!("/mcrs/{i}{}", v.pointer),
                    ..v
                });
            }
        }
        if !violations.is_empty() {
            return Err(Error::Schema {
                file: file.to_string(),
                schema: "mcr".into(),
                violations,
            });
        }
        let registry = Registry::read(snap)?;
        let now = snap.now();
        let batch_id = ledger::new_id("batch", now);
        let mut changes = Changes::new();
        let mut items = Vec::new();
        let mut item_ids = Vec::new();
        let mut target_blobs = BTreeMap::new();
        let mut created = Vec::new();
        for (i, mcr) in mcrs.iter().enumerate() {
            let at = |field: &str| format!("/mcrs/{i}/{field}");
            let op = mcr["op"].as_str().unwrap_or_default();
            let mut mcr = mcr.as_object().cloned().unwrap_or_default();
            let target = match mcr.get("target_id").and_then(Value::as_str) {
                Some(t) if op != "add" => {
                    let path = locate(store, commit, t)?.ok_or_else(|| Error::Invalid {
                        file: file.to_string(),
                        pointer: at("target_id"),
                        rule: "target_exists",
                        message: format!("no memory item {t} to {op}"),
                    })?;
                    let item = MemoryItem::from_bytes(&path, &snap.read(&path)?.unwrap_or_default())?;
                    if !matches!(item.status, ItemStatus::Active | ItemStatus::Candidate) {
                        return Err(Error::Invalid {
                            file: file.to_string(),
                            pointer: at("target_id"),
                            rule: "target_status",
                            message: format!("memory item {t} is {}; only active or candidate items can be changed", item.status.as_str()),
                        });
                    }
                    let blob = store.blob_id(commit, &path)?.expect("located");
                    target_blobs.insert(t.to_string(), blob.to_string());
                    Some(item)
                }
                _ => None,
            };
            let new_id = match op {
                "add" | "supersede" => {
                    let base = target.as_ref();
                    let scope = mcr
                        .get("scope")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| base.map(|b| b.scope.clone()))
                        .unwrap_or_default();
                    let scope_id = resolve_scope_id(
                        &scope,
                        mcr.get("scope_id").and_then(Value::as_str).map(str::to_string).or_else(|| {
                            if mcr.contains_key("scope") { None } else { base.and_then(|b| b.scope_id.clone()) }
                        }),
                        &ws,
                        &registry,
                        file,
                        &at("scope_id"),
                    )?;
                    if let Some(sid) = &scope_id {
                        mcr.insert("scope_id".into(), json!(sid));
                    }
                    let id = ledger::new_id("mem", now);
                    let mut source_refs: Vec<String> = mcr
                        .get("source_refs")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    for r in [format!("run:{run_id}"), format!("batch:{batch_id}")] {
                        if !source_refs.contains(&r) {
                            source_refs.push(r);
                        }
                    }
                    let expires_at = match mcr.get("ttl").and_then(Value::as_str) {
                        Some(ttl) => Some(rfc3339(now + parse_ttl(ttl).ok_or_else(|| Error::Invalid {
                            file: file.to_string(),
                            pointer: at("ttl"),
                            rule: "ttl",
                            message: format!("{ttl:?} is not an ISO 8601 duration"),
                        })?)),
                        None => None,
                    };
                    let project = project_of(&scope, scope_id.as_deref(), &ws);
                    let item = MemoryItem {
                        schema_version: schema::SCHEMA_VERSION.into(),
                        id: id.clone(),
                        kind: mcr
                            .get("type")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or_else(|| base.map(|b| b.kind.clone()))
                            .unwrap_or_default(),
                        scope,
                        scope_id,
                        project,
                        content: mcr["content"].as_str().unwrap_or_default().to_string(),
                        confidence: mcr
                            .get("confidence")
                            .and_then(Value::as_f64)
                            .or(base.map(|b| b.confidence))
                            .unwrap_or(0.5),
                        status: ItemStatus::Candidate,
                        rationale: mcr.get("rationale").and_then(Value::as_str).map(str::to_string),
                        source_refs,
                        supersedes: (op == "supersede").then(|| target.as_ref().map(|t| t.id.clone())).flatten(),
                        superseded_by: None,
                        tags: mcr
                            .get("tags")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                            .unwrap_or_default(),
                        disputed: false,
                        created_at: rfc3339(now),
                        updated_at: rfc3339(now),
                        expires_at,
                    };
                    changes.insert(item.path(), Some(item.to_yaml().into_bytes()));
                    created.push(ItemChange { id: id.clone(), status: ItemStatus::Candidate });
                    Some(id)
                }
                _ => target.as_ref().map(|t| t.id.clone()),
            };
            items.push(Value::Object(mcr));
            item_ids.push(new_id);
        }
        let batch = Batch {
            schema_version: schema::SCHEMA_VERSION.into(),
            batch_id: batch_id.clone(),
            run_id: run_id.to_string(),
            status: "proposed".into(),
            scope_filters: filters,
            created_at: rfc3339(now),
            committed_at: None,
            committed_in: None,
            items,
            item_ids,
            target_blobs,
        };
        changes.insert(layout::batch(run_id, &batch_id), Some(batch.to_yaml().into_bytes()));
        Ok(Mutation {
            tags: Vec::new(),
            changes,
            event: EventDraft::new(
                EventType::MemoryProposed,
                format!("propose {} memory change(s) in {batch_id}", batch.items.len()),
            )
            .run(run_id, None)
            .payload(json!({"batch_id": batch_id, "mcrs": batch.items.len(), "items": created})),
        })
    })?;
    let batch_id = committed.event.payload["batch_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let batch = read_batch_at(store, committed.commit, run_id, &batch_id)?;
    Ok((batch, committed))
}

fn resolve_scope_id(
    scope: &str,
    given: Option<String>,
    ws: &WorkingSet,
    registry: &Registry,
    file: &str,
    pointer: &str,
) -> Result<Option<String>> {
    let invalid = |message: String| Error::Invalid {
        file: file.to_string(),
        pointer: pointer.to_string(),
        rule: "scope_id",
        message,
    };
    match (scope, given) {
        ("global", None) => Ok(None),
        ("global", Some(_)) => Err(invalid("global memory has no scope_id".into())),
        ("project", given) => {
            let name = given.or_else(|| ws.project.clone()).ok_or_else(|| {
                invalid("project scope needs a scope_id (or a run with a project)".into())
            })?;
            Ok(Some(registry.canonicalize(&name)))
        }
        ("run", given) => Ok(Some(given.unwrap_or_else(|| ws.run_id.clone()))),
        (scope, _) if !SCOPES.contains(&scope) => Err(invalid(format!("unknown scope {scope:?}"))),
        (_, Some(sid)) => Ok(Some(sid)),
        (scope, None) => Err(invalid(format!("{scope} scope needs a scope_id"))),
    }
}

fn project_of(scope: &str, scope_id: Option<&str>, ws: &WorkingSet) -> Option<String> {
    match scope {
        "project" => scope_id.map(str::to_string),
        "run" => ws.project.clone(),
        _ => None,
    }
}

fn read_batch_at(store: &Store, commit: Oid, run_id: &str, batch_id: &str) -> Result<Batch> {
    let path = layout::batch(run_id, batch_id);
    let bytes = store
        .read_file(commit, &path)?
        .ok_or_else(|| Error::NotFound {
            what: format!("batch {batch_id}"),
        })?;
    Batch::from_bytes(&path, &bytes)
}

/// Finds the run a batch belongs to.
pub fn batch_run(store: &Store, commit: Oid, batch_id: &str) -> Result<String> {
    for (shard, _) in store.list_dir(commit, layout::RUNS)? {
        for (run, _) in store.list_dir(commit, &format!("{}/{shard}", layout::RUNS))? {
            if store
                .blob_id(commit, &layout::batch(&run, batch_id))?
                .is_some()
            {
                return Ok(run);
            }
        }
    }
    Err(Error::NotFound {
        what: format!("batch {batch_id}"),
    })
}

/// Items being rewritten within one transaction, read through once.
struct Workspace<'a> {
    store: &'a Store,
    commit: Oid,
    items: BTreeMap<String, (String, MemoryItem)>,
    changes: Vec<ItemChange>,
}

impl<'a> Workspace<'a> {
    fn new(store: &'a Store, commit: Oid) -> Self {
        Workspace {
            store,
            commit,
            items: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    fn get(&mut self, id: &str) -> Result<&mut MemoryItem> {
        if !self.items.contains_key(id) {
            let loaded = load_item(self.store, self.commit, id)?;
            self.items.insert(id.to_string(), loaded);
        }
        Ok(&mut self.items.get_mut(id).expect("just inserted").1)
    }

    fn set_status(&mut self, id: &str, status: ItemStatus, now: &str) -> Result<()> {
        let item = self.get(id)?;
        item.status = status;
        item.updated_at = now.to_string();
        self.changes.push(ItemChange {
            id: id.to_string(),
            status,
        });
        Ok(())
    }

    /// Makes a candidate active, performing the supersession it carries.
    fn activate(&mut self, id: &str, now: &str) -> Result<()> {
        self.set_status(id, ItemStatus::Active, now)?;
        if let Some(old) = self.get(id)?.supersedes.clone() {
            let status = self.get(&old)?.status;
            if !matches!(status, ItemStatus::Active | ItemStatus::Candidate) {
                return Err(Error::Conflict {
                    subject: format!("memory item {id}"),
                    rule: "supersede_live_target",
                    message: format!("it supersedes {old}, which is now {}", status.as_str()),
                });
            }
            self.set_status(&old, ItemStatus::Superseded, now)?;
            self.get(&old)?.superseded_by = Some(id.to_string());
        }
        Ok(())
    }

    fn into_changes(self, changes: &mut Changes) -> Vec<ItemChange> {
        for (_, (path, item)) in self.items {
            changes.insert(path, Some(item.to_yaml().into_bytes()));
        }
        self.changes
    }
}

/// Applies a proposed batch inside a transaction: the ops, then the batch's
/// own status. Returns the status changes.
pub(crate) fn apply_batch(
    store: &Store,
    snap: &Snapshot<'_>,
    batch_id: &str,
    committed_in: &str,
    changes: &mut Changes,
) -> Result<(Batch, Vec<ItemChange>)> {
    let commit = snap_commit(snap)?;
    let run_id = batch_run(store, commit, batch_id)?;
    let mut batch = read_batch_at(store, commit, &run_id, batch_id)?;
    if batch.status != "proposed" {
        return Err(Error::Conflict {
            subject: format!("batch {batch_id}"),
            rule: "batch_committed_once",
            message: format!(
                "is already {} (in {}); a batch is committed once",
                batch.status,
                batch.committed_in.as_deref().unwrap_or("?")
            ),
        });
    }
    // Targets must be as they were when the batch was proposed.
    let mut changed = Vec::new();
    for (id, blob) in &batch.target_blobs {
        let now_blob = match locate(store, commit, id)? {
            Some(p) => store.blob_id(commit, &p)?.map(|b| b.to_string()),
            None => None,
        };
        if now_blob.as_deref() != Some(blob.as_str()) {
            changed.push(id.clone());
        }
    }
    if !changed.is_empty() {
        return Err(Error::Conflict {
            subject: format!("batch {batch_id}"),
            rule: "targets_unchanged",
            message: format!(
                "memory item(s) changed since the batch was proposed: {}; propose again against the current items",
                changed.join(", ")
            ),
        });
    }
    let now = rfc3339(snap.now());
    let mut ws = Workspace::new(store, commit);
    for (mcr, id) in batch.items.iter().zip(batch.item_ids.iter()) {
        let Some(id) = id else { continue };
        match mcr["op"].as_str().unwrap_or_default() {
            // A reviewer may already have promoted or rejected it.
            "add" | "supersede" if ws.get(id)?.status == ItemStatus::Candidate => {
                ws.activate(id, &now)?;
            }
            "update" => {
                let item = ws.get(id)?;
                if let Some(c) = mcr.get("content").and_then(Value::as_str) {
                    item.content = c.to_string();
                }
                if let Some(c) = mcr.get("confidence").and_then(Value::as_f64) {
                    item.confidence = c;
                }
                if let Some(r) = mcr.get("rationale").and_then(Value::as_str) {
                    item.rationale = Some(r.to_string());
                }
                if let Some(t) = mcr.get("type").and_then(Value::as_str) {
                    item.kind = t.to_string();
                }
                if let Some(tags) = mcr.get("tags").and_then(Value::as_array) {
                    item.tags = tags
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                }
                if let Some(ttl) = mcr.get("ttl").and_then(Value::as_str).and_then(parse_ttl) {
                    item.expires_at = Some(rfc3339(snap.now() + ttl));
                }
                let r = format!("batch:{batch_id}");
                if !item.source_refs.contains(&r) {
                    item.source_refs.push(r);
                }
                let status = item.status;
                ws.set_status(id, status, &now)?;
            }
            "delete" => ws.set_status(id, ItemStatus::Invalid, &now)?,
            _ => {}
        }
    }
    let items = ws.into_changes(changes);
    batch.status = "committed".into();
    batch.committed_at = Some(now);
    batch.committed_in = Some(committed_in.to_string());
    changes.insert(
        layout::batch(&run_id, batch_id),
        Some(batch.to_yaml().into_bytes()),
    );
    Ok((batch, items))
}

/// Commits a batch outside a milestone: refused (POLICY) unless `allow_outside_milestone`.
pub fn commit_batch(
    store: &Store,
    batch_id: &str,
    allow_outside_milestone: bool,
    key: Option<&str>,
) -> Result<(Batch, Committed)> {
    if !allow_outside_milestone {
        return Err(Error::Policy {
            rule: "MEMORY_COMMIT_OUTSIDE_MILESTONE",
            message: format!(
                "batch {batch_id} becomes memory at a milestone: run `cairn milestone RUN --reason R --commit-batch {batch_id}`, or pass --allow-outside-milestone to commit it now (logged as an override)"
            ),
        });
    }
    let committed = store.transact(
        crate::idempotency::keyed(key, "memory.commit", || {
            vec![json!(batch_id), json!(allow_outside_milestone)]
        })
        .as_ref(),
        |snap| {
            let mut changes = Changes::new();
            let (batch, items) =
                apply_batch(store, snap, batch_id, "outside-milestone", &mut changes)?;
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(
                    EventType::MemoryCommitted,
                    format!("commit {batch_id} outside a milestone (override)"),
                )
                .run(&batch.run_id, None)
                .payload(
                    json!({"batch_id": batch_id, "committed_in": "outside-milestone",
                "override": "allow_outside_milestone", "items": items}),
                ),
            })
        },
    )?;
    let run = committed.event.run_id.clone().unwrap_or_default();
    let batch = read_batch_at(store, committed.commit, &run, batch_id)?;
    Ok((batch, committed))
}

fn review(
    store: &Store,
    id: &str,
    reason: Option<&str>,
    promote: bool,
    key: Option<&str>,
) -> Result<(MemoryItem, Committed)> {
    let committed = store.transact(
        crate::idempotency::keyed(
            key,
            if promote {
                "memory.promote"
            } else {
                "memory.reject"
            },
            || vec![json!(id), json!(reason)],
        )
        .as_ref(),
        |snap| {
            let commit = snap_commit(snap)?;
            let now = rfc3339(snap.now());
            let mut ws = Workspace::new(store, commit);
            let item = ws.get(id)?;
            if item.status != ItemStatus::Candidate {
                return Err(Error::Conflict {
                    subject: format!("memory item {id}"),
                    rule: "review_candidates_only",
                    message: format!("is {}; only candidates are reviewed", item.status.as_str()),
                });
            }
            let run = item
                .source_refs
                .iter()
                .find_map(|r| r.strip_prefix("run:").map(str::to_string));
            if promote {
                ws.activate(id, &now)?;
            } else {
                ws.set_status(id, ItemStatus::Invalid, &now)?;
            }
            let mut changes = Changes::new();
            let items = ws.into_changes(&mut changes);
            let (kind, verb) = if promote {
                (EventType::MemoryPromoted, "promote")
            } else {
                (EventType::MemoryRejected, "reject")
            };
            let mut event = EventDraft::new(kind, format!("{verb} {id}"))
                .payload(json!({"id": id, "reason": reason, "items": items}));
            if let Some(run) = run {
                event = event.run(&run, None);
            }
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event,
            })
        },
    )?;
    let (_, item) = load_item(store, committed.commit, id)?;
    Ok((item, committed))
}

/// Promotes a candidate to active (MEMORY_PROMOTED).
pub fn promote(
    store: &Store,
    id: &str,
    reason: Option<&str>,
    key: Option<&str>,
) -> Result<(MemoryItem, Committed)> {
    review(store, id, reason, true, key)
}

/// Rejects a candidate: it becomes invalid (MEMORY_REJECTED).
pub fn reject(
    store: &Store,
    id: &str,
    reason: &str,
    key: Option<&str>,
) -> Result<(MemoryItem, Committed)> {
    review(store, id, Some(reason), false, key)
}

/// Fields of a candidate a reviewer may edit.
const EDITABLE: [&str; 6] = [
    "content",
    "confidence",
    "rationale",
    "tags",
    "type",
    "expires_at",
];

/// Edits a candidate before review (MEMORY_EDITED). `edit` holds the fields to replace.
pub fn edit(
    store: &Store,
    id: &str,
    edit: &Value,
    file: &str,
    key: Option<&str>,
) -> Result<(MemoryItem, Committed)> {
    let committed = store.transact(
        crate::idempotency::keyed(key, "memory.edit", || vec![json!(id), edit.clone()]).as_ref(),
        |snap| {
            let commit = snap_commit(snap)?;
            let (path, item) = load_item(store, commit, id)?;
            if item.status != ItemStatus::Candidate {
                return Err(Error::Conflict {
                    subject: format!("memory item {id}"),
                    rule: "edit_candidates_only",
                    message: format!(
                        "is {}; only candidates are edited (use an update MCR for active items)",
                        item.status.as_str()
                    ),
                });
            }
            let Some(fields) = edit.as_object() else {
                return Err(Error::Invalid {
                    file: file.to_string(),
                    pointer: String::new(),
                    rule: "type",
                    message: "an edit is a mapping of fields to replace".into(),
                });
            };
            let mut doc = serde_json::to_value(&item).expect("items serialize");
            for (k, v) in fields {
                if !EDITABLE.contains(&k.as_str()) {
                    return Err(Error::Invalid {
                        file: file.to_string(),
                        pointer: format!("/{k}"),
                        rule: "editable_field",
                        message: format!("{k} cannot be edited; editable: {}", EDITABLE.join(", ")),
                    });
                }
                doc[k] = v.clone();
            }
            doc["updated_at"] = json!(rfc3339(snap.now()));
            schema::validate("memory_item", file, &doc)?;
            let edited: MemoryItem = serde_json::from_value(doc).map_err(|e| Error::Invalid {
                file: file.to_string(),
                pointer: String::new(),
                rule: "memory_item",
                message: e.to_string(),
            })?;
            let mut changes = Changes::new();
            changes.insert(path, Some(edited.to_yaml().into_bytes()));
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(EventType::MemoryEdited, format!("edit candidate {id}"))
                    .payload(
                        json!({"id": id, "fields": fields.keys().collect::<Vec<_>>(),
                    "items": [{"id": id, "status": "candidate"}]}),
                    ),
            })
        },
    )?;
    let (_, item) = load_item(store, committed.commit, id)?;
    Ok((item, committed))
}

/// A `--scope` filter: `global`, `run`, or `run:<id>`, `project:<name>`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeFilter {
    /// The scope.
    pub scope: String,
    /// The scope id, if given.
    pub scope_id: Option<String>,
}

impl ScopeFilter {
    /// Parses `scope[:id]`, canonicalizing project names through the registry.
    pub fn parse(text: &str, registry: &Registry) -> Result<ScopeFilter> {
        let (scope, id) = match text.split_once(':') {
            Some((s, i)) => (s, Some(i.to_string())),
            None => (text, None),
        };
        if !SCOPES.contains(&scope) {
            return Err(Error::Invalid {
                file: "--scope".into(),
                pointer: String::new(),
                rule: "scope",
                message: format!("unknown scope {scope:?}; one of {}", SCOPES.join(", ")),
            });
        }
        let id = match (scope, id) {
            ("project", Some(p)) => Some(registry.canonicalize(&p)),
            (_, id) => id,
        };
        Ok(ScopeFilter {
            scope: scope.to_string(),
            scope_id: id,
        })
    }
}

/// Filters for listing memory.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this scope (and scope id).
    pub scope: Option<ScopeFilter>,
    /// Only this type.
    pub kind: Option<String>,
    /// Only this status (`expired` selects active items past their TTL).
    pub status: Option<String>,
    /// Only items of this (canonical) project.
    pub project: Option<String>,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// Memory items at the tip matching `q`, sorted by creation time then id.
pub fn list(store: &Store, q: &ListQuery) -> Result<Vec<MemoryItem>> {
    let Some(tip) = store.tip()? else {
        return Ok(Vec::new());
    };
    let now = store.now();
    let dir = match &q.scope {
        Some(ScopeFilter {
            scope,
            scope_id: Some(id),
        }) if scope != "global" => layout::memory_scope_dir(scope, Some(id)),
        Some(ScopeFilter { scope, .. }) => format!("{}/{scope}", layout::MEMORY),
        None => layout::MEMORY.to_string(),
    };
    let mut out = Vec::new();
    for (path, blob, _) in store.walk_files(tip, &dir)? {
        if !path.ends_with(".yaml") {
            continue;
        }
        let item = MemoryItem::from_bytes(&path, &store.read_blob(blob)?)?;
        if q.kind.as_ref().is_some_and(|k| &item.kind != k)
            || q.project
                .as_ref()
                .is_some_and(|p| item.project.as_ref() != Some(p))
            || q.tag.as_ref().is_some_and(|t| !item.tags.contains(t))
            || q.status
                .as_ref()
                .is_some_and(|s| item.effective_status(now) != s.as_str())
        {
            continue;
        }
        out.push(item);
    }
    out.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    if let Some(l) = q.limit {
        out.truncate(l);
    }
    Ok(out)
}

/// The review queue: candidates, oldest first.
pub fn queue(store: &Store, q: &ListQuery) -> Result<Vec<MemoryItem>> {
    let q = ListQuery {
        status: Some("candidate".into()),
        ..q.clone()
    };
    list(store, &q)
}

/// One item at the tip.
pub fn show(store: &Store, id: &str) -> Result<MemoryItem> {
    Ok(load_item(store, store.require_tip()?, id)?.1)
}

/// One version of an item in history.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// The commit that wrote this version.
    pub commit: String,
    /// The ledger event of that commit.
    pub event_type: EventType,
    /// The event id.
    pub event_id: String,
    /// When.
    pub timestamp: String,
    /// Who.
    pub actor: String,
    /// The item as that commit left it.
    pub item: MemoryItem,
}

/// Where item `id` last lived on the history of `tip`, when it is no
/// longer at the tip (deleted, by hand or by a repair): the newest commit
/// that removed or changed a memory file named after the id.
fn locate_in_history(store: &Store, commits: &[Oid], id: &str) -> Result<Option<String>> {
    let file = format!("/{}/{id}.yaml", layout::shard(id));
    for &commit in commits {
        let parent = store.commit_info(commit)?.parents.first().copied();
        let found = store
            .tree_changes(parent, commit)?
            .into_iter()
            .find(|c| c.path.starts_with("memory/") && c.path.ends_with(&file));
        if let Some(c) = found {
            return Ok(Some(c.path));
        }
    }
    Ok(None)
}

/// Every version of an item, oldest first, with the commit and event that
/// made it; for any id that ever existed, including an item deleted since.
pub fn history(store: &Store, id: &str) -> Result<Vec<Version>> {
    let tip = store.require_tip()?;
    let commits = store.history(tip, None)?;
    let path = match locate(store, tip, id)? {
        Some(p) => Some(p),
        None if layout::valid_id(id) => locate_in_history(store, &commits, id)?,
        None => None,
    };
    let path = path.ok_or_else(|| Error::NotFound {
        what: format!("memory item {id} (at the tip or anywhere in history)"),
    })?;
    let mut out = Vec::new();
    for commit in commits {
        let info = store.commit_info(commit)?;
        let now_blob = store.blob_id(commit, &path)?;
        let parent_blob = match info.parents.first() {
            Some(p) => store.blob_id(*p, &path)?,
            None => None,
        };
        if now_blob == parent_blob {
            continue;
        }
        let Some(blob) = now_blob else { continue };
        let event = ledger::event_of(store, commit)?;
        out.push(Version {
            commit: commit.to_string(),
            event_type: event.event_type,
            event_id: event.event_id,
            timestamp: event.timestamp,
            actor: event.actor,
            item: MemoryItem::from_bytes(&path, &store.read_blob(blob)?)?,
        });
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_durations() {
        assert_eq!(parse_ttl("P30D"), Some(time::Duration::days(30)));
        assert_eq!(parse_ttl("PT12H"), Some(time::Duration::hours(12)));
        assert_eq!(
            parse_ttl("P1DT1M"),
            Some(time::Duration::seconds(86400 + 60))
        );
        assert_eq!(parse_ttl("P2W"), Some(time::Duration::days(14)));
        assert_eq!(parse_ttl("30D"), None);
        assert_eq!(parse_ttl("P3X"), None);
    }
}

/// What `import` did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Items created.
    pub imported: usize,
    /// Commits made.
    pub commits: usize,
    /// The new ids, in input order.
    pub ids: Vec<String>,
}

/// The most violations an import reports; the rest are counted.
const MAX_IMPORT_VIOLATIONS: usize = 1000;

/// Bulk-imports memory items as active memory, `batch` items per commit
/// (MEMORY_IMPORTED). Each record is an object with `content` (or `text`) and
/// optionally `type` (default knowledge), `scope` (default global),
/// `scope_id`, `confidence` (default 0.5), `tags`, `rationale`,
/// `source_refs`, `created_at` and an external `id` (kept as `import:<id>`).
/// Every record is checked before anything is written: one bad record and
/// nothing is imported. See [`import_stream`] for input that does not fit in
/// memory.
pub fn import(
    store: &Store,
    records: &[Value],
    source: &str,
    batch: usize,
    progress: &dyn Fn(u64, u64),
) -> Result<ImportReport> {
    import_stream(
        store,
        || Ok(records.iter().cloned().map(Ok)),
        source,
        batch,
        progress,
    )
}

/// [`import`] over records read twice from `records` (each call starts the
/// input again): a first pass checks every record and keeps nothing but the
/// violations (at most 1,000 are listed, the rest counted), a second pass
/// writes the items `batch` per commit; the last commit renders the mirror
/// pages once for all of them (the ones before it hold the items only, and
/// an import stopped part way leaves the next write to catch the mirror
/// up, as after a hand commit). What stays in memory is one batch and the new
/// ids, whatever the size of the input. A record the reader cannot give (an
/// error from the iterator) stops the import before anything is written
/// when the first pass meets it.
pub fn import_stream<R, I>(
    store: &Store,
    mut records: R,
    source: &str,
    batch: usize,
    progress: &dyn Fn(u64, u64),
) -> Result<ImportReport>
where
    R: FnMut() -> Result<I>,
    I: Iterator<Item = Result<Value>>,
{
    let registry = Registry::at_tip(store)?;
    let now = store.now();
    let mut violations = Vec::new();
    let mut more = 0usize;
    let mut total = 0u64;
    for (line, r) in records()?.enumerate() {
        let r = r?;
        total += 1;
        if let Err(found) = import_item(&registry, now, source, line, &r) {
            for v in found {
                if violations.len() < MAX_IMPORT_VIOLATIONS {
                    violations.push(v);
                } else {
                    more += 1;
                }
            }
        }
    }
    if more > 0 {
        violations.push(Violation {
            pointer: String::new(),
            rule: "max_violations".into(),
            message: format!("and {more} more violation(s) not listed"),
        });
    }
    if !violations.is_empty() {
        return Err(Error::Schema {
            file: source.to_string(),
            schema: "memory_item".into(),
            violations,
        });
    }
    let batch = batch.max(1);
    let mut commits = 0;
    let mut ids = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut chunk = Vec::with_capacity(batch.min(usize::try_from(total).unwrap_or(batch)));
    let mut input = records()?.enumerate();
    loop {
        chunk.clear();
        for (line, r) in input.by_ref() {
            let item = import_item(&registry, now, source, line, &r?).map_err(|v| {
                // The input changed between the passes.
                Error::Schema {
                    file: source.to_string(),
                    schema: "memory_item".into(),
                    violations: v,
                }
            })?;
            chunk.push(item);
            if chunk.len() == batch {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let first = ids.len();
        // Only the last commit renders the mirror, once for every item:
        // rendering it per commit re-rendered every page each time.
        let last = (first + chunk.len()) as u64 >= total;
        let build = |_: &crate::store::Snapshot<'_>| {
            let mut changes = Changes::new();
            for item in &chunk {
                changes.insert(item.path(), Some(item.to_yaml().into_bytes()));
            }
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(
                    EventType::MemoryImported,
                    format!("import {} memory item(s) from {source}", chunk.len()),
                )
                .payload(json!({"source": source, "first_record": first + 1, "count": chunk.len(),
                    "items": chunk.iter().map(|i| ItemChange { id: i.id.clone(), status: ItemStatus::Active }).collect::<Vec<_>>()})),
            })
        };
        if last {
            store.transact(None, build)?;
        } else {
            store.transact_underived(build)?;
        }
        commits += 1;
        ids.extend(chunk.iter().map(|i| i.id.clone()));
        progress(ids.len() as u64, total);
    }
    Ok(ImportReport {
        imported: ids.len(),
        commits,
        ids,
    })
}

/// The item record `line` of an import becomes, or what is wrong with it.
fn import_item(
    registry: &Registry,
    now: OffsetDateTime,
    source: &str,
    line: usize,
    r: &Value,
) -> std::result::Result<MemoryItem, Vec<Violation>> {
    let at = |field: &str| format!("/{line}/{field}");
    let Some(obj) = r.as_object() else {
        return Err(vec![Violation {
            pointer: format!("/{line}"),
            rule: "type".into(),
            message: "a record is an object".into(),
        }]);
    };
    let content = obj
        .get("content")
        .or_else(|| obj.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let scope = obj
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("global")
        .to_string();
    let mut scope_id = obj
        .get("scope_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if scope == "project" {
        scope_id = scope_id.map(|s| registry.canonicalize(&s));
    }
    let created = match obj.get("created_at").and_then(Value::as_str) {
        Some(t) => parse_rfc3339(t).ok_or_else(|| {
            vec![Violation {
                pointer: at("created_at"),
                rule: "format".into(),
                message: format!("{t:?} is not an RFC 3339 time"),
            }]
        })?,
        None => now,
    };
    let mut source_refs: Vec<String> = obj
        .get("source_refs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ext) = obj.get("id").and_then(|v| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
    }) {
        source_refs.push(format!("import:{ext}"));
    }
    source_refs.push(format!("file:{source}#{}", line + 1));
    let item = MemoryItem {
        schema_version: schema::SCHEMA_VERSION.into(),
        id: ledger::new_id("mem", created),
        kind: obj
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("knowledge")
            .to_string(),
        project: if scope == "project" {
            scope_id.clone()
        } else {
            None
        },
        scope,
        scope_id,
        content: content.to_string(),
        confidence: obj.get("confidence").and_then(Value::as_f64).unwrap_or(0.5),
        status: ItemStatus::Active,
        rationale: obj
            .get("rationale")
            .and_then(Value::as_str)
            .map(str::to_string),
        source_refs,
        supersedes: None,
        superseded_by: None,
        tags: obj
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        disputed: false,
        created_at: rfc3339(created),
        updated_at: rfc3339(created),
        expires_at: None,
    };
    let value = serde_json::to_value(&item).expect("items serialize");
    let found: Vec<Violation> = schema::violations("memory_item", &value)
        .into_iter()
        .map(|v| Violation {
            pointer: format!("/{line}{}", v.pointer),
            ..v
        })
        .collect();
    if found.is_empty() {
        Ok(item)
    } else {
        Err(found)
    }
}
