//! Conflict records: what a merge could not decide, kept as data.
//!
//! Each conflict is one schema-valid file, `conflicts/<shard>/<id>.yaml`
//! (`conflict_record`): the kind and path of the conflicting file, the JSON
//! pointer of the field, the base, ours and theirs values, what the merged
//! file holds, and the commits. The merged canonical file is always valid;
//! the record keeps the value it could not hold. `resolve` writes the chosen
//! value back into the file and marks the record resolved, in one commit
//! (CONFLICT_RESOLVED). Records stay in the tree once resolved, so the
//! decision is visible next to the data; `list` shows open ones by default.

use std::collections::BTreeMap;

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::{rfc3339, EventDraft, EventType};
use crate::store::{Changes, Committed, Mutation, Snapshot, Store};
use crate::{layout, schema};

/// One conflict, as `conflict_record` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Always "2.1".
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    /// `cf_<ULID>`.
    pub conflict_id: String,
    /// `open` or `resolved`.
    pub status: String,
    /// The schema of the conflicting file, or `file`.
    pub kind: String,
    /// The conflicting file.
    pub path: String,
    /// The field in it (empty: the whole file).
    pub pointer: String,
    /// The merge rule that found it.
    pub rule: String,
    /// The base value (absent: did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Value>,
    /// Our value (absent: deleted or missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ours: Option<Value>,
    /// Their value (absent: deleted or missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theirs: Option<Value>,
    /// What the merged file holds.
    pub kept: Value,
    /// The merge's commits.
    pub commits: Commits,
    /// The run the file belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// When the merge recorded it.
    pub created_at: String,
    /// How it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// The commits of the merge that found a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commits {
    /// The merge base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Our side (the merge's first parent).
    pub ours: String,
    /// Their side.
    pub theirs: String,
}

/// How a conflict was resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// `ours`, `theirs` or `file`.
    pub took: String,
    /// When.
    pub resolved_at: String,
    /// Who.
    pub resolved_by: String,
}

/// Which value `resolve` writes back.
#[derive(Debug, Clone, PartialEq)]
pub enum Take {
    /// The value of the side that made the merge.
    Ours,
    /// The value of the side merged in.
    Theirs,
    /// A value the user supplies: for a field, a YAML/JSON document holding
    /// the value; for a whole file, the file's bytes.
    Value(Vec<u8>),
}

impl Conflict {
    /// Canonical YAML.
    pub fn to_yaml(&self) -> String {
        schema::to_yaml(&serde_json::to_value(self).expect("conflicts serialize"))
    }

    /// Parses and validates a record file.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Conflict> {
        schema::load("conflict_record", file, bytes)
    }

    /// The file this record lives in.
    pub fn file(&self) -> String {
        layout::conflict(&self.conflict_id)
    }

    /// Whether it still needs a decision.
    pub fn is_open(&self) -> bool {
        self.status == "open"
    }
}

/// What a merge found, before it becomes a record.
#[derive(Debug, Clone)]
pub struct Found {
    /// The schema of the file, or `file`.
    pub kind: String,
    /// The file.
    pub path: String,
    /// The field.
    pub pointer: String,
    /// The rule.
    pub rule: String,
    /// Base value.
    pub base: Option<Value>,
    /// Our value.
    pub ours: Option<Value>,
    /// Their value.
    pub theirs: Option<Value>,
    /// What the merged file holds.
    pub kept: Option<Value>,
}

/// Turns what a merge found into a record. The id is stamped with `now` and
/// its random part derived from the conflict and the commits, so the same
/// merge made twice records the same ids.
pub fn record(
    found: Found,
    base: Option<Oid>,
    ours: Oid,
    theirs: Oid,
    now: OffsetDateTime,
) -> Conflict {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        found.path.as_str(),
        found.pointer.as_str(),
        found.rule.as_str(),
        &ours.to_string(),
        &theirs.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut random: u128 = 0;
    for b in &digest[..10] {
        random = (random << 8) | u128::from(*b);
    }
    let ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let id = format!("cf_{}", ulid::Ulid::from_parts(ms, random));
    Conflict {
        schema_version: schema::SCHEMA_VERSION.into(),
        conflict_id: id,
        status: "open".into(),
        run_id: layout::run_of(&found.path).map(str::to_string),
        kind: found.kind,
        path: found.path,
        pointer: found.pointer,
        rule: found.rule,
        base: found.base,
        ours: found.ours,
        theirs: found.theirs,
        kept: found.kept.unwrap_or(Value::Null),
        commits: Commits {
            base: base.map(|b| b.to_string()),
            ours: ours.to_string(),
            theirs: theirs.to_string(),
        },
        created_at: rfc3339(now),
        resolution: None,
    }
}

/// Every conflict record at the snapshot, oldest first; open ones only
/// unless `all`.
pub fn list(snap: &Snapshot<'_>, all: bool) -> Result<Vec<Conflict>> {
    let Some(commit) = snap.commit() else {
        return Ok(Vec::new());
    };
    let store = snap.store();
    let mut out = Vec::new();
    // Folder by folder: the rest of the store is never walked.
    for (shard, is_dir) in store.list_dir(commit, layout::CONFLICTS)? {
        if !is_dir {
            continue;
        }
        let dir = format!("{}/{shard}", layout::CONFLICTS);
        for (name, is_dir) in store.list_dir(commit, &dir)? {
            let path = format!("{dir}/{name}");
            if is_dir || layout::schema_for(&path) != Some("conflict_record") {
                continue;
            }
            let Some(bytes) = store.read_file(commit, &path)? else {
                continue;
            };
            let record = Conflict::from_bytes(&path, &bytes)?;
            if all || record.is_open() {
                out.push(record);
            }
        }
    }
    out.sort_by(|a, b| a.conflict_id.cmp(&b.conflict_id));
    Ok(out)
}

/// One record by id.
pub fn show(snap: &Snapshot<'_>, id: &str) -> Result<Conflict> {
    if !id.starts_with("cf_") || !layout::valid_id(id) {
        return Err(Error::Invalid {
            file: "CONFLICT_ID".into(),
            pointer: String::new(),
            rule: "conflict_id",
            message: format!("{id:?} is not a conflict id (cf_<ULID>)"),
        });
    }
    let path = layout::conflict(id);
    let bytes = snap.read(&path)?.ok_or_else(|| Error::NotFound {
        what: format!("conflict {id}"),
    })?;
    Conflict::from_bytes(&path, &bytes)
}

/// Resolves conflict `id`: writes the chosen value into the conflicting file
/// (a whole file, or the field at the record's pointer) and marks the record
/// resolved, in one commit (CONFLICT_RESOLVED). The file is validated like
/// any write; a working set's seq and a memory item's `updated_at` move on.
pub fn resolve(
    store: &Store,
    id: &str,
    take: &Take,
    key: Option<&str>,
) -> Result<(Conflict, Committed)> {
    let mut resolved: Option<Conflict> = None;
    let committed = store.transact(crate::idempotency::keyed(key, "conflict.resolve", || vec![json!(id), match take { Take::Ours => json!("ours"), Take::Theirs => json!("theirs"), Take::Value(bytes) => json!({"value": crate::idempotency::bytes_digest(bytes)}) }]).as_ref(), |snap| {
        let mut record = show(snap, id)?;
        if !record.is_open() {
            return Err(Error::Conflict {
                subject: id.to_string(),
                rule: "CONFLICT_RESOLVED_ALREADY",
                message: "this conflict is resolved already; `cairn conflicts show` says how".into(),
            });
        }
        let (took, chosen) = match take {
            Take::Ours => ("ours", record.ours.clone()),
            Take::Theirs => ("theirs", record.theirs.clone()),
            Take::Value(bytes) => ("file", Some(value_of_input(&record, bytes)?)),
        };
        let mut changes = Changes::new();
        let current = snap.read(&record.path)?;
        if !matches!(take, Take::Value(_)) {
            refuse_if_stale(&record, current.as_deref())?;
        }
        let content = write_back(snap, &record, current, chosen)?;
        changes.insert(record.path.clone(), content);
        record.status = "resolved".into();
        record.resolution = Some(Resolution {
            took: took.into(),
            resolved_at: rfc3339(snap.now()),
            resolved_by: store.actor().name.clone(),
        });
        changes.insert(record.file(), Some(record.to_yaml().into_bytes()));
        let mut draft = EventDraft::new(
            EventType::ConflictResolved,
            format!("resolve conflict {id}: took {took}"),
        )
        .payload(json!({"conflict_id": id, "path": record.path, "pointer": record.pointer, "took": took}));
        if let Some(run) = &record.run_id {
            // A working set resolved is one more step of its run: the event
            // carries the seq the file now has, as patches do.
            let seq = match (record.kind.as_str(), changes.get(&record.path)) {
                ("working_set", Some(Some(bytes))) => crate::store::parse_yaml(&record.path, bytes)?
                    .get("_update_seq")
                    .and_then(Value::as_u64),
                _ => None,
            };
            draft = draft.run(run, seq);
        }
        resolved = Some(record);
        Ok(Mutation {
            changes,
            event: draft,
            tags: Vec::new(),
        })
    })?;
    let record = match resolved.filter(|_| !committed.replayed) {
        Some(r) => r,
        None => show(&store.snapshot()?, id)?,
    };
    Ok((record, committed))
}

/// Refuses to write a side's value over a field that changed since the
/// merge kept its value: that later write would be lost without a trace.
/// A value the user supplies (`--take FILE`) is their decision and goes in.
fn refuse_if_stale(record: &Conflict, current: Option<&[u8]>) -> Result<()> {
    if record.kind == "file"
        || record.pointer.is_empty()
        || record.rule == "patch_no_longer_applies"
    {
        return Ok(());
    }
    let doc = match current {
        Some(bytes) => crate::store::parse_yaml(&record.path, bytes)?,
        None => Value::Null,
    };
    let now = doc.pointer(&record.pointer).cloned().unwrap_or(Value::Null);
    // A trusted-state value stays current only while its entry is active.
    let superseded = record.kind == "project_state"
        && record
            .pointer
            .strip_suffix("/value")
            .and_then(|entry| doc.pointer(&format!("{entry}/status")))
            .is_some_and(|s| s != "active");
    if now != record.kept || superseded {
        return Err(Error::Conflict {
            subject: record.conflict_id.clone(),
            rule: "CONFLICT_STALE",
            message: format!(
                "{}{} changed since the merge kept {} (it now holds {}{}): taking a side would overwrite that later write; edit the file, or resolve with --take FILE holding the value to keep",
                record.path,
                record.pointer,
                record.kept,
                now,
                if superseded { ", in an entry superseded since" } else { "" }
            ),
        });
    }
    Ok(())
}

/// The value a user-supplied file means for this record: the file's text
/// for a whole file cairn does not own, else the parsed document.
fn value_of_input(record: &Conflict, bytes: &[u8]) -> Result<Value> {
    if record.kind == "file" {
        return Ok(Value::String(String::from_utf8_lossy(bytes).into_owned()));
    }
    crate::store::parse_yaml("--take FILE", bytes)
}

/// The new content of the conflicting file with `chosen` in place.
fn write_back(
    snap: &Snapshot<'_>,
    record: &Conflict,
    current: Option<Vec<u8>>,
    chosen: Option<Value>,
) -> Result<Option<Vec<u8>>> {
    if record.kind == "file" {
        return Ok(chosen.map(|v| match v {
            Value::String(s) => s.into_bytes(),
            other => schema::to_yaml(&other).into_bytes(),
        }));
    }
    let mut doc = match (record.pointer.as_str(), chosen) {
        ("", None) => return Ok(None),
        ("", Some(v)) => v,
        (pointer, chosen) => {
            let bytes = current.ok_or_else(|| Error::NotFound {
                what: format!(
                    "{} (the file of conflict {})",
                    record.path, record.conflict_id
                ),
            })?;
            let mut doc = crate::store::parse_yaml(&record.path, &bytes)?;
            set_pointer(&mut doc, pointer, chosen, &record.path)?;
            doc
        }
    };
    let now = rfc3339(snap.now());
    match record.kind.as_str() {
        "working_set" => {
            // The resolution is one more step of the run.
            let seq = snap
                .read(&record.path)?
                .map(|b| crate::store::parse_yaml(&record.path, &b))
                .transpose()?
                .and_then(|v| v.get("_update_seq").and_then(Value::as_u64))
                .unwrap_or(0);
            doc["_update_seq"] = json!(seq + 1);
            doc["updated_at"] = json!(now);
        }
        "memory_item" => doc["updated_at"] = json!(now),
        _ => {}
    }
    Ok(Some(schema::to_yaml(&doc).into_bytes()))
}

/// Sets (or, with `None`, removes) the value at a JSON pointer, creating
/// missing object members on the way.
fn set_pointer(doc: &mut Value, pointer: &str, value: Option<Value>, file: &str) -> Result<()> {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = parts.split_last() else {
        return Ok(());
    };
    let bad = || Error::Invalid {
        file: file.to_string(),
        pointer: pointer.to_string(),
        rule: "conflict_pointer",
        message:
            "the conflict's field no longer exists in this shape; resolve it by editing the file"
                .into(),
    };
    let mut at = doc;
    for p in path {
        at = match at {
            Value::Object(m) => m
                .entry(p.clone())
                .or_insert_with(|| Value::Object(Default::default())),
            Value::Array(a) => a
                .get_mut(p.parse::<usize>().map_err(|_| bad())?)
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
    }
    match (at, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.clone(), v);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(v)) => {
            let i: usize = last.parse().map_err(|_| bad())?;
            if i < a.len() {
                a[i] = v;
            } else if i == a.len() {
                a.push(v);
            } else {
                return Err(bad());
            }
        }
        (Value::Array(a), None) => {
            let i: usize = last.parse().map_err(|_| bad())?;
            if i < a.len() {
                a.remove(i);
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// Open conflicts by path, for warnings.
pub fn open_by_path(snap: &Snapshot<'_>) -> Result<BTreeMap<String, Vec<Conflict>>> {
    let mut out: BTreeMap<String, Vec<Conflict>> = BTreeMap::new();
    for c in list(snap, false)? {
        out.entry(c.path.clone()).or_default().push(c);
    }
    Ok(out)
}
