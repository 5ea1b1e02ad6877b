//! Milestones: immutable episode checkpoints, stored as a file and a tag.
//!
//! A milestone writes `runs/<run>/episodes/<episode_id>.yaml` — the working
//! set at that point, the commit range and event counts since the previous
//! episode, the memory batches it commits, a deterministic summary and the
//! next entry point — and commits the chosen batches, all in one commit; the
//! annotated tag `cairn/<run>/<episode_id>` carries the same YAML as its
//! message. Episodes are never edited or deleted through cairn (the store
//! refuses the write) and `fsck` reports any that were changed by other means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::event::rfc3339;
use crate::ledger::{self, parse_message, EventDraft, EventType};
use crate::memory::{self, ItemChange};
use crate::store::{Changes, Committed, Mutation, Store};
use crate::working_set::WorkingSet;
use crate::{layout, schema};

/// An episode, in the key order of its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Episode {
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    pub episode_id: String,
    pub run_id: String,
    pub ordinal: u64,
    pub reason: String,
    pub working_set: WorkingSet,
    pub commit_range: CommitRange,
    pub event_counts: BTreeMap<String, u64>,
    pub memory_batches: Vec<String>,
    pub summary: String,
    #[serde(default)]
    pub next_entry_point: Option<String>,
    pub tag: String,
    pub created_at: String,
}

/// The commits an episode covers: after `from` (the previous milestone) up to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRange {
    /// The previous episode's milestone commit, or null for the first episode.
    pub from: Option<String>,
    /// The last commit before this milestone.
    pub to: String,
}

impl Episode {
    /// Canonical YAML (also the tag message).
    pub fn to_yaml(&self) -> String {
        schema::to_yaml(&serde_json::to_value(self).expect("episodes serialize"))
    }

    /// Parses and validates an episode file.
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Episode> {
        schema::load("episode", file, bytes)
    }
}

fn episodes_at(store: &Store, commit: git2::Oid, run_id: &str) -> Result<Vec<Episode>> {
    let dir = format!("{}/episodes", layout::run_dir(run_id));
    let mut out = Vec::new();
    for (path, blob, _) in store.walk_files(commit, &dir)? {
        out.push(Episode::from_bytes(&path, &store.read_blob(blob)?)?);
    }
    out.sort_by_key(|e| e.ordinal);
    Ok(out)
}

/// A run's episodes at the tip, by ordinal.
pub fn list(store: &Store, run_id: &str) -> Result<Vec<Episode>> {
    let tip = store.require_tip()?;
    if store
        .read_file(tip, &layout::working_set(run_id))?
        .is_none()
    {
        return Err(Error::RunNotFound {
            run_id: run_id.to_string(),
        });
    }
    episodes_at(store, tip, run_id)
}

/// One episode by id (`ep_...`) or tag (`cairn/<run>/<ep>`).
pub fn show(store: &Store, id_or_tag: &str) -> Result<Episode> {
    let tip = store.require_tip()?;
    let id = id_or_tag.rsplit('/').next().unwrap_or(id_or_tag);
    for (shard, _) in store.list_dir(tip, layout::RUNS)? {
        for (run, _) in store.list_dir(tip, &format!("{}/{shard}", layout::RUNS))? {
            let path = layout::episode(&run, id);
            if let Some(bytes) = store.read_file(tip, &path)? {
                return Episode::from_bytes(&path, &bytes);
            }
        }
    }
    Err(Error::NotFound {
        what: format!("episode {id_or_tag}"),
    })
}

/// What a milestone needs.
#[derive(Debug, Clone, Default)]
pub struct MilestoneRequest {
    /// Why the checkpoint is taken.
    pub reason: String,
    /// Where to pick up from.
    pub next_entry_point: Option<String>,
    /// Batches of this run to commit as memory.
    pub batches: Vec<String>,
}

fn summarize(ep: &Episode, ws: &WorkingSet, items: &[ItemChange]) -> String {
    let total: u64 = ep.event_counts.values().sum();
    let counts = ep
        .event_counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!(
        "Episode {} of run {}: {}. {} event(s) since the {} ({}).",
        ep.ordinal,
        ep.run_id,
        ep.reason,
        total,
        if ep.ordinal == 1 {
            "run began"
        } else {
            "previous episode"
        },
        if counts.is_empty() {
            "none".into()
        } else {
            counts
        }
    );
    s.push_str(&format!(" Status {}", ws.status.as_str()));
    if let Some(stage) = &ws.current_stage {
        s.push_str(&format!(", stage {stage}"));
    }
    s.push_str(&format!(", seq {}.", ws.update_seq));
    if !ep.memory_batches.is_empty() {
        let active = items
            .iter()
            .filter(|i| i.status == memory::ItemStatus::Active)
            .count();
        s.push_str(&format!(
            " Committed {} batch(es), {} item(s) now active.",
            ep.memory_batches.len(),
            active
        ));
    }
    if let Some(next) = &ws.next_action {
        s.push_str(&format!(" Next action: {next}"));
    }
    s
}

/// Takes a milestone of a run (MILESTONE_CREATED): the episode, its batches, its tag.
pub fn milestone(
    store: &Store,
    run_id: &str,
    req: &MilestoneRequest,
    key: Option<&str>,
) -> Result<(Episode, Committed)> {
    let committed = store.transact(
        crate::idempotency::keyed(key, "milestone", || {
            vec![
                json!(run_id),
                json!(req.reason),
                json!(req.next_entry_point),
                json!(req.batches),
            ]
        })
        .as_ref(),
        |snap| {
            let tip = snap.commit().ok_or_else(|| Error::RunNotFound {
                run_id: run_id.to_string(),
            })?;
            let ws = crate::working_set::read(snap, run_id)?;
            if req.reason.trim().is_empty() {
                return Err(Error::Invalid {
                    file: "--reason".into(),
                    pointer: "/reason".into(),
                    rule: "minLength",
                    message: "a milestone needs a reason".into(),
                });
            }
            let previous = episodes_at(store, tip, run_id)?;
            let from = match previous.last() {
                Some(p) => Some(store.resolve(&format!("refs/tags/{}", p.tag))?),
                None => None,
            };
            let mut event_counts: BTreeMap<String, u64> = BTreeMap::new();
            for id in store.history(tip, from)? {
                let info = store.commit_info(id)?;
                let parsed = parse_message(&info.message);
                if parsed.trailer("Cairn-Run") == Some(run_id) {
                    let t = parsed.trailer("Cairn-Event").unwrap_or("MANUAL_EDIT");
                    *event_counts.entry(t.to_string()).or_default() += 1;
                }
            }
            let now = snap.now();
            let episode_id = ledger::new_id("ep", now);
            let mut changes = Changes::new();
            let mut items = Vec::new();
            for b in &req.batches {
                let run_of_batch = memory::batch_run(store, tip, b)?;
                if run_of_batch != run_id {
                    return Err(Error::Invalid {
                        file: "--commit-batch".into(),
                        pointer: String::new(),
                        rule: "batch_of_run",
                        message: format!("batch {b} belongs to run {run_of_batch}, not {run_id}"),
                    });
                }
                let (_, changed) = memory::apply_batch(store, snap, b, &episode_id, &mut changes)?;
                items.extend(changed);
            }
            let tag = layout::episode_tag(run_id, &episode_id);
            let mut episode = Episode {
                schema_version: schema::SCHEMA_VERSION.into(),
                episode_id: episode_id.clone(),
                run_id: run_id.to_string(),
                ordinal: previous.len() as u64 + 1,
                reason: req.reason.clone(),
                working_set: ws.clone(),
                commit_range: CommitRange {
                    from: from.map(|f| f.to_string()),
                    to: tip.to_string(),
                },
                event_counts,
                memory_batches: req.batches.clone(),
                summary: String::new(),
                next_entry_point: req.next_entry_point.clone(),
                tag: tag.clone(),
                created_at: rfc3339(now),
            };
            episode.summary = summarize(&episode, &ws, &items);
            let yaml = episode.to_yaml();
            changes.insert(
                layout::episode(run_id, &episode_id),
                Some(yaml.clone().into_bytes()),
            );
            Ok(Mutation {
                tags: vec![(tag.clone(), yaml)],
                changes,
                event: EventDraft::new(
                    EventType::MilestoneCreated,
                    format!("milestone {} of {run_id}: {}", episode.ordinal, req.reason),
                )
                .run(run_id, None)
                .payload(
                    json!({"episode_id": episode_id, "ordinal": episode.ordinal, "tag": tag,
                "batches": req.batches, "items": items}),
                ),
            })
        },
    )?;
    let id = committed.event.payload["episode_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let path = layout::episode(run_id, &id);
    let bytes = store
        .read_file(committed.commit, &path)?
        .ok_or_else(|| Error::NotFound {
            what: format!("episode {id}"),
        })?;
    Ok((Episode::from_bytes(&path, &bytes)?, committed))
}

/// Checks every episode at the tip against its tag, for `fsck`.
pub(crate) fn check(store: &Store) -> Result<Vec<crate::error::Finding>> {
    use crate::error::Finding;
    let tip = store.require_tip()?;
    let mut findings = Vec::new();
    let mut tagged = std::collections::BTreeSet::new();
    for (name, message) in store.tags_with_prefix("cairn/")? {
        let Some((run, ep)) = layout::episode_of_tag(&name) else {
            continue;
        };
        let path = layout::episode(run, ep);
        tagged.insert(path.clone());
        match store.read_file(tip, &path)? {
            None => findings.push(
                Finding::new(
                    path,
                    "episode_immutable",
                    format!("the episode of tag {name} was deleted"),
                )
                .fix("`cairn fsck --repair` restores it from its tag"),
            ),
            Some(bytes) if bytes != message.as_bytes() => findings.push(
                Finding::new(
                    path,
                    "episode_immutable",
                    format!("the episode differs from its tag {name}: episodes are never edited"),
                )
                .fix("`cairn fsck --repair` restores it from its tag"),
            ),
            Some(_) => {}
        }
    }
    for (path, _, _) in store.walk_files(tip, layout::RUNS)? {
        if layout::schema_for(&path) == Some("episode") && !tagged.contains(&path) {
            findings.push(Finding::new(
                path,
                "episode_tagged",
                "the episode has no tag cairn/<run>/<episode>",
            ));
        }
    }
    Ok(findings)
}
