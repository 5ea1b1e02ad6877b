//! The derived index: the aggregates the pages need (run rows, memory
//! groups and their counts, candidate counts, disputed items, milestones,
//! recent events), kept in `mirror/index.json` and updated by deltas; the
//! groups' active counts by id shard in `mirror/shards.json`; and the
//! candidates themselves, one file an id shard, in
//! `mirror/candidates/<shard>.json`.
//!
//! Invariants: applying a change as a delta gives the same index as a scan
//! from scratch; the shard counts are read and written only when a memory
//! item changes (`shards_loaded`); a candidate shard's list is read only when
//! a change or a page needs it, and written only when it changed, so no
//! derived file grows with the whole review queue; the events are those of
//! the commits up to the index's horizon, newest first.

use std::collections::{BTreeMap, BTreeSet};

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::source::Source;
use super::{CANDIDATES, DIR, INDEX, INDEX_VERSION, MILESTONES, QUEUE, SHARDS};
use crate::episode::Episode;
use crate::error::Result;
use crate::layout;
use crate::ledger::{self, EventType};
use crate::memory::{ItemStatus, MemoryItem};
use crate::project::Registry;
use crate::store::{Changes, Store};
use crate::working_set::WorkingSet;

/// One run's row in the overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunRow {
    pub(super) status: String,
    pub(super) stage: Option<String>,
    next_action: Option<String>,
    updated_at: String,
    pub(super) project: Option<String>,
    pub(super) objective: String,
    seq: u64,
}

/// One ledger event as the pages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct EventRow {
    commit: String,
    timestamp: String,
    event_type: String,
    run_id: Option<String>,
    seq: Option<u64>,
    subject: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct MilestoneRow {
    created_at: String,
    episode_id: String,
    pub(super) run_id: String,
    ordinal: u64,
    reason: String,
    tag: String,
}

/// A run page's path relative to `mirror/` (templates prefix it with `root`).
pub(super) fn run_link(run_id: &str) -> String {
    format!("runs/{}/{run_id}.md", layout::shard(run_id))
}

/// The items of one (scope, scope_id, type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Group {
    pub(super) scope: String,
    pub(super) scope_id: Option<String>,
    pub(super) kind: String,
    /// Items by status.
    pub(super) counts: BTreeMap<String, u64>,
    /// Active items by the shard of their id. Stored in [`SHARDS`], not in
    /// the index.
    #[serde(skip)]
    shards: Shards,
}

/// Counts by id shard (`00`..`ff`), stored as one string of `shard:count`
/// pairs: a group at scale has all 256 shards, and as a JSON map they were
/// most of the index's parse and write time.
#[derive(Debug, Clone, Default, PartialEq)]
struct Shards(Vec<u64>);

impl Shards {
    fn add(&mut self, shard: &str, sign: i64) {
        let Ok(i) = usize::from_str_radix(shard, 16) else {
            return;
        };
        if self.0.is_empty() {
            self.0 = vec![0; 256];
        }
        if let Some(n) = self.0.get_mut(i) {
            *n = (*n as i64 + sign).max(0) as u64;
        }
        if self.0.iter().all(|n| *n == 0) {
            self.0.clear();
        }
    }

    /// The count of one shard.
    fn get(&self, shard: &str) -> u64 {
        usize::from_str_radix(shard, 16)
            .ok()
            .and_then(|i| self.0.get(i).copied())
            .unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-empty shards by name, in order.
    fn iter(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (format!("{i:02x}"), *n))
    }
}

impl Serialize for Shards {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(self.0.len() * 8);
        for (i, n) in self.0.iter().enumerate().filter(|(_, n)| **n > 0) {
            if !text.is_empty() {
                text.push(' ');
            }
            let _ = write!(text, "{i:02x}:{n}");
        }
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let mut counts = vec![0u64; 256];
        for pair in text.split_whitespace() {
            let (k, n) = pair
                .split_once(':')
                .ok_or_else(|| serde::de::Error::custom("shard counts are shard:count"))?;
            let n: u64 = n.parse().map_err(serde::de::Error::custom)?;
            if let Some(slot) = usize::from_str_radix(k, 16)
                .ok()
                .and_then(|i| counts.get_mut(i))
            {
                *slot += n;
            }
        }
        if counts.iter().all(|n| *n == 0) {
            counts.clear();
        }
        Ok(Shards(counts))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Index {
    pub(super) version: u32,
    /// The newest commit whose event is included.
    pub(super) horizon: Option<String>,
    pub(super) runs: BTreeMap<String, RunRow>,
    pub(super) groups: BTreeMap<String, Group>,
    /// Candidates by the shard of their id (`shard:count` pairs).
    #[serde(default)]
    candidate_counts: Shards,
    /// The candidates (id → item path) of the shards read so far, by shard:
    /// all of them after a scan, those a change or a page needed otherwise.
    /// Stored one file a shard under [`CANDIDATES`].
    #[serde(skip)]
    candidates: BTreeMap<String, BTreeMap<String, String>>,
    /// Shards whose candidate list changed since it was read (what
    /// [`put_index`] writes).
    #[serde(skip)]
    candidates_changed: BTreeSet<String>,
    pub(super) disputed: BTreeMap<String, String>,
    pub(super) states: BTreeSet<String>,
    pub(super) milestones: Vec<MilestoneRow>,
    pub(super) events: Vec<EventRow>,
    pub(super) run_events: BTreeMap<String, Vec<EventRow>>,
    /// Open merge conflicts by id (absent from older indexes, which had none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) conflicts: BTreeMap<String, ConflictRow>,
    /// Whether the groups' shard counts are in memory (a full scan, a format
    /// 2 index, or [`Index::load_shards`]); only then is [`SHARDS`] written.
    #[serde(skip)]
    pub(super) shards_loaded: bool,
}

/// One open merge conflict as the pages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ConflictRow {
    pub(super) path: String,
    pub(super) pointer: String,
    pub(super) rule: String,
}

impl Index {
    /// Notes a conflict record's state: open ones are listed, resolved or
    /// removed ones leave the list.
    pub(super) fn apply_conflict(&mut self, id: &str, record: Option<&crate::sync::Conflict>) {
        match record.filter(|c| c.is_open()) {
            Some(c) => {
                self.conflicts.insert(
                    id.to_string(),
                    ConflictRow {
                        path: c.path.clone(),
                        pointer: c.pointer.clone(),
                        rule: c.rule.clone(),
                    },
                );
            }
            None => {
                self.conflicts.remove(id);
            }
        }
    }
}

pub(super) fn group_key(scope: &str, scope_id: Option<&str>, kind: &str) -> String {
    format!("{scope}/{}/{kind}", scope_id.unwrap_or("-"))
}

/// The page (or the index page of a split family) of a memory group.
pub(super) fn group_page(g: &Group) -> String {
    match &g.scope_id {
        Some(sid) => format!("{DIR}/memory/{}/{sid}/{}.md", g.scope, g.kind),
        None => format!("{DIR}/memory/{}/{}.md", g.scope, g.kind),
    }
}

pub(super) fn part_page(g: &Group, prefix: &str) -> String {
    let page = group_page(g);
    format!("{}/{prefix}.md", page.trim_end_matches(".md"))
}

/// How many hex digits of the shard split a group's pages (0 = one page).
pub(super) fn level_of(g: &Group, max_items: usize) -> usize {
    let counts = &g.shards.0;
    if counts.iter().sum::<u64>() as usize <= max_items {
        return 0;
    }
    // Level 1 splits by the first hex digit: sixteen runs of sixteen shards.
    if counts
        .chunks(16)
        .all(|c| c.iter().sum::<u64>() as usize <= max_items)
    {
        return 1;
    }
    2
}

/// The part prefixes of a group at its level, with their active item counts.
pub(super) fn parts_of(g: &Group, level: usize) -> BTreeMap<String, u64> {
    let mut parts: BTreeMap<String, u64> = BTreeMap::new();
    for (shard, n) in g.shards.iter() {
        *parts.entry(shard[..level].to_string()).or_default() += n;
    }
    parts
}

/// Every page path a group family occupies.
pub(super) fn family_pages(g: &Group, max_items: usize) -> Vec<String> {
    let level = level_of(g, max_items);
    let mut out = vec![group_page(g)];
    if level > 0 {
        out.extend(parts_of(g, level).keys().map(|p| part_page(g, p)));
    }
    out
}

impl Index {
    pub(super) fn apply_run(&mut self, run_id: &str, ws: Option<&WorkingSet>) {
        match ws {
            Some(ws) => {
                self.runs.insert(
                    run_id.to_string(),
                    RunRow {
                        status: ws.status.as_str().to_string(),
                        stage: ws.current_stage.clone(),
                        next_action: ws.next_action.clone(),
                        updated_at: ws.updated_at.clone(),
                        project: ws.project.clone(),
                        objective: ws.objective.clone(),
                        seq: ws.update_seq,
                    },
                );
            }
            None => {
                self.runs.remove(run_id);
            }
        }
    }

    pub(super) fn apply_item(&mut self, path: &str, item: &MemoryItem, sign: i64) {
        let key = group_key(&item.scope, item.scope_id.as_deref(), &item.kind);
        let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
            scope: item.scope.clone(),
            scope_id: item.scope_id.clone(),
            kind: item.kind.clone(),
            ..Default::default()
        });
        let bump = |m: &mut BTreeMap<String, u64>, k: String| {
            let v = m.entry(k.clone()).or_default();
            *v = (*v as i64 + sign).max(0) as u64;
            if *v == 0 {
                m.remove(&k);
            }
        };
        bump(&mut g.counts, item.status.as_str().to_string());
        if item.status == ItemStatus::Active {
            g.shards.add(&layout::shard(&item.id), sign);
        }
        if g.counts.is_empty() {
            self.groups.remove(&key);
        }
        let add = sign > 0;
        if item.status == ItemStatus::Candidate {
            let shard = layout::shard(&item.id);
            debug_assert!(
                self.candidates.contains_key(&shard) || self.candidate_counts.get(&shard) == 0,
                "a candidate shard is read before it changes"
            );
            self.candidate_counts.add(&shard, sign);
            let list = self.candidates.entry(shard.clone()).or_default();
            if add {
                list.insert(item.id.clone(), path.to_string());
            } else {
                list.remove(&item.id);
            }
            self.candidates_changed.insert(shard);
        }
        if item.disputed {
            if add {
                self.disputed.insert(item.id.clone(), path.to_string());
            } else {
                self.disputed.remove(&item.id);
            }
        }
    }

    pub(super) fn add_milestone(&mut self, ep: &Episode) {
        let row = MilestoneRow {
            created_at: ep.created_at.clone(),
            episode_id: ep.episode_id.clone(),
            run_id: ep.run_id.clone(),
            ordinal: ep.ordinal,
            reason: ep.reason.clone(),
            tag: ep.tag.clone(),
        };
        if !self
            .milestones
            .iter()
            .any(|m| m.episode_id == row.episode_id)
        {
            self.milestones.push(row);
        }
        self.milestones
            .sort_by(|a, b| (&b.created_at, &b.episode_id).cmp(&(&a.created_at, &a.episode_id)));
        self.milestones.truncate(MILESTONES);
    }

    fn push_event(&mut self, e: EventRow, keep: usize) {
        if let Some(run) = &e.run_id {
            let list = self.run_events.entry(run.clone()).or_default();
            list.insert(0, e.clone());
            list.truncate(keep);
        }
        self.events.insert(0, e);
        self.events.truncate(keep);
    }

    /// Projects with a page: registered, or named by a run, a state file or a project scope.
    pub(super) fn projects(&self, registry: &Registry) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = registry.projects.iter().map(|p| p.id.clone()).collect();
        out.extend(self.states.iter().cloned());
        out.extend(self.runs.values().filter_map(|r| r.project.clone()));
        out.extend(
            self.groups
                .values()
                .filter(|g| g.scope == "project")
                .filter_map(|g| g.scope_id.clone()),
        );
        out.retain(|p| layout::valid_id(p));
        out
    }
}

/// The file listing the candidates of one id shard.
pub(super) fn candidates_file(shard: &str) -> String {
    format!("{CANDIDATES}/{shard}.json")
}

/// The page of the review queue's part for one id shard.
pub(super) fn queue_part(shard: &str) -> String {
    format!("{DIR}/queue/{shard}.md")
}

impl Index {
    /// An empty index in the current format.
    pub(super) fn new() -> Self {
        Index {
            version: INDEX_VERSION,
            ..Default::default()
        }
    }

    /// How many candidates wait for review.
    pub(super) fn candidate_total(&self) -> u64 {
        self.candidate_counts.total()
    }

    /// Non-empty candidate shards with their counts, in order.
    pub(super) fn candidate_shards(&self) -> Vec<(String, u64)> {
        self.candidate_counts.iter().collect()
    }

    /// Whether the review queue is split into one page an id shard: it
    /// holds more than `max_items` candidates.
    pub(super) fn queue_split(&self, max_items: usize) -> bool {
        self.candidate_total() as usize > max_items
    }

    /// The candidates of one shard (read before), id → item path.
    pub(super) fn candidates_in(&self, shard: &str) -> impl Iterator<Item = (&String, &String)> {
        self.candidates.get(shard).into_iter().flatten()
    }

    /// Reads the candidate list of `shard` from `pages` unless it is in
    /// memory. False when the file is missing or does not match the count
    /// (a full render rebuilds them).
    pub(super) fn load_candidates(&mut self, pages: &dyn Source, shard: &str) -> Result<bool> {
        if self.candidates.contains_key(shard) {
            return Ok(true);
        }
        let expected = self.candidate_counts.get(shard);
        let list = if expected == 0 {
            BTreeMap::new()
        } else {
            let Some(bytes) = pages.read(&candidates_file(shard))? else {
                return Ok(false);
            };
            match serde_json::from_slice::<BTreeMap<String, String>>(&bytes) {
                Ok(list) if list.len() as u64 == expected => list,
                _ => return Ok(false),
            }
        };
        self.candidates.insert(shard.to_string(), list);
        Ok(true)
    }

    /// Reads what the queue pages about to be rendered need: every list
    /// when the queue is one page or changes between one page and parts
    /// (`was_split` is the old layout), else the shards in `dirty` (which
    /// a change read already).
    pub(super) fn load_for_queue(
        &mut self,
        pages: &dyn Source,
        max_items: usize,
        was_split: bool,
        dirty: &BTreeSet<String>,
    ) -> Result<bool> {
        let split = self.queue_split(max_items);
        let shards: Vec<String> = if split && was_split {
            dirty.iter().cloned().collect()
        } else {
            self.candidate_counts.iter().map(|(s, _)| s).collect()
        };
        for shard in shards {
            if !self.load_candidates(pages, &shard)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Forgets which candidate lists changed (before a new set of changes).
    pub(super) fn start_changes(&mut self) {
        self.candidates_changed.clear();
    }

    /// After a scan: every list is read, and every non-empty one is written.
    pub(super) fn scanned(&mut self) {
        self.candidates_changed = self.candidates.keys().cloned().collect();
        self.shards_loaded = true;
    }
}

/// Every page of the review queue at its layout.
pub(super) fn queue_pages(idx: &Index, max_items: usize) -> Vec<String> {
    let mut out = vec![QUEUE.to_string()];
    if idx.queue_split(max_items) {
        out.extend(idx.candidate_counts.iter().map(|(s, _)| queue_part(&s)));
    }
    out
}

/// The candidate files an index describes.
pub(super) fn candidate_files(idx: &Index) -> Vec<String> {
    idx.candidate_counts
        .iter()
        .map(|(s, _)| candidates_file(&s))
        .collect()
}

fn event_row(store: &Store, commit: Oid) -> Result<EventRow> {
    let info = store.commit_info(commit)?;
    let parsed = crate::event::parse_message(&info.message);
    // The run of a hand commit comes from its paths; cairn commits name it.
    let run_id = match parsed.trailer("Cairn-Run") {
        Some(r) => Some(r.to_string()),
        None => ledger::event_of(store, commit)?.run_id,
    };
    let event_type = parsed
        .trailer("Cairn-Event")
        .and_then(EventType::parse)
        .unwrap_or(EventType::ManualEdit);
    let timestamp = parsed
        .trailer("Cairn-Timestamp")
        .and_then(crate::event::parse_rfc3339)
        .or_else(|| time::OffsetDateTime::from_unix_timestamp(info.time).ok())
        .map(crate::event::rfc3339)
        .unwrap_or_default();
    Ok(EventRow {
        commit: commit.to_string()[..12].to_string(),
        timestamp,
        event_type: event_type.as_str().to_string(),
        run_id,
        seq: parsed.trailer("Cairn-Seq").and_then(|s| s.parse().ok()),
        subject: parsed.subject.clone(),
    })
}

/// How far back a first-parent walk looks for a known commit.
pub(super) const CHAIN_WALK: usize = 1000;

/// The commits from `from` back to `until` (excluded), newest first, when
/// `until` is reached by first parents through single-parent commits within
/// `bound` steps.
fn first_parent_chain(
    store: &Store,
    from: Oid,
    until: Oid,
    bound: usize,
) -> Result<Option<Vec<Oid>>> {
    let mut chain = Vec::new();
    let mut at = from;
    while at != until {
        if chain.len() >= bound {
            return Ok(None);
        }
        let parents = store.commit_info(at)?.parents;
        if parents.len() != 1 {
            return Ok(None);
        }
        chain.push(at);
        at = parents[0];
    }
    Ok(Some(chain))
}

/// Brings the index's events from its horizon up to `horizon`.
pub(super) fn advance_events(
    idx: &mut Index,
    store: &Store,
    horizon: Option<Oid>,
    keep: usize,
) -> Result<()> {
    let current = idx.horizon.as_deref().and_then(|h| Oid::from_str(h).ok());
    if current == horizon {
        return Ok(());
    }
    let Some(h) = horizon else {
        idx.events.clear();
        idx.run_events.clear();
        idx.horizon = None;
        return Ok(());
    };
    let linear = match current {
        Some(c) if store.repo_has(c) => match first_parent_chain(store, h, c, CHAIN_WALK)? {
            Some(chain) => Some(chain),
            None if store.is_ancestor(c, h)? => {
                let new = store.history(h, Some(c))?;
                let mut linear = true;
                for id in &new {
                    if store.commit_info(*id)?.parents.len() > 1 {
                        linear = false;
                    }
                }
                linear.then_some(new)
            }
            None => None,
        },
        _ => None,
    };
    match linear {
        Some(new) => {
            for id in new.iter().rev() {
                let row = event_row(store, *id)?;
                idx.push_event(row, keep);
            }
        }
        None => {
            idx.events.clear();
            idx.run_events.clear();
            for id in store.history(h, None)?.iter().rev() {
                let row = event_row(store, *id)?;
                idx.push_event(row, keep);
            }
        }
    }
    idx.horizon = Some(h.to_string());
    Ok(())
}

fn index_bytes(idx: &Index) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(idx).expect("the index serializes");
    b.push(b'\n');
    b
}

/// The parsed index of the current pages, if usable for an incremental pass.
pub(super) fn load_index(pages: &dyn Source) -> Result<Option<Index>> {
    Ok(pages.read(INDEX)?.and_then(|bytes| parse_index(&bytes)))
}

/// An index in a format this build reads, or `None`.
pub(super) fn parse_index(bytes: &[u8]) -> Option<Index> {
    let idx = serde_json::from_slice::<Index>(bytes).ok()?;
    if idx.version != INDEX_VERSION {
        return None;
    }
    Some(idx)
}

impl Index {
    /// Reads the groups' shard counts from [`SHARDS`] in `pages`. False when
    /// the file is missing or does not match the groups (a full render
    /// rebuilds both).
    pub(super) fn load_shards(&mut self, pages: &dyn Source) -> Result<bool> {
        if self.shards_loaded {
            return Ok(true);
        }
        let Some(bytes) = pages.read(SHARDS)? else {
            return Ok(false);
        };
        let Ok(all) = serde_json::from_slice::<BTreeMap<String, Shards>>(&bytes) else {
            return Ok(false);
        };
        for (key, shards) in all {
            match self.groups.get_mut(&key) {
                Some(g) => g.shards = shards,
                None => return Ok(false),
            }
        }
        self.shards_loaded = true;
        Ok(true)
    }
}

/// Puts the index into a pass's output, the shard counts when they were
/// loaded (otherwise they did not change and their file stays as it is), and
/// the candidate lists that changed.
pub(super) fn put_index(out: &mut Changes, idx: &Index) {
    out.insert(INDEX.into(), Some(index_bytes(idx)));
    for shard in &idx.candidates_changed {
        let list = idx.candidates.get(shard).filter(|l| !l.is_empty());
        let bytes = list.map(|l| {
            let mut b = serde_json::to_vec_pretty(l).expect("candidate lists serialize");
            b.push(b'\n');
            b
        });
        out.insert(candidates_file(shard), bytes);
    }
    if idx.shards_loaded {
        let counts: BTreeMap<&String, &Shards> = idx
            .groups
            .iter()
            .filter(|(_, g)| !g.shards.0.is_empty())
            .map(|(k, g)| (k, &g.shards))
            .collect();
        let mut b = serde_json::to_vec_pretty(&counts).expect("shard counts serialize");
        b.push(b'\n');
        out.insert(SHARDS.into(), Some(b));
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::MapSource;
    use super::{parse_index, put_index, Index, Shards, INDEX, SHARDS};
    use crate::memory::MemoryItem;
    use crate::store::Changes;
    use std::collections::BTreeMap;

    fn item(id: &str, kind: &str) -> MemoryItem {
        serde_json::from_value(serde_json::json!({
            "_schema_version": "2.1", "id": id, "type": kind, "scope": "global",
            "content": "c", "confidence": 0.5, "status": "active", "source_refs": [],
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    /// An index with shard counts in two groups, as a full scan leaves it.
    fn scanned() -> Index {
        let mut idx = Index::new();
        idx.scanned();
        for (i, kind) in ["fact", "fact", "decision"].iter().enumerate() {
            let it = item(&format!("mem_0{i}abc"), kind);
            idx.apply_item(&it.path(), &it, 1);
        }
        idx
    }

    #[test]
    fn shard_counts_live_in_their_own_file_and_load_only_when_asked() {
        let idx = scanned();
        let mut out = Changes::new();
        put_index(&mut out, &idx);
        let files: BTreeMap<String, Vec<u8>> =
            out.into_iter().map(|(p, c)| (p, c.unwrap())).collect();
        let text = String::from_utf8(files[INDEX].clone()).unwrap();
        assert!(!text.contains("shards"), "{text}");
        // Read back: the groups come without their counts until asked.
        let mut back = parse_index(&files[INDEX]).unwrap();
        assert!(!back.shards_loaded);
        assert!(back.groups.values().all(|g| g.shards.0.is_empty()));
        let mut again = Changes::new();
        put_index(&mut again, &back);
        assert_eq!(
            again.keys().collect::<Vec<_>>(),
            [INDEX],
            "counts not loaded, not written"
        );
        assert!(back.load_shards(&MapSource(&files)).unwrap());
        assert_eq!(back.groups, idx.groups);
        // A missing file or one that names a group the index lacks: not usable.
        let mut only_index = files.clone();
        only_index.remove(SHARDS);
        assert!(!parse_index(&files[INDEX])
            .unwrap()
            .load_shards(&MapSource(&only_index))
            .unwrap());
        let mut stray = files.clone();
        stray.insert(SHARDS.into(), br#"{"global/-/identity": "00:1"}"#.to_vec());
        assert!(!parse_index(&files[INDEX])
            .unwrap()
            .load_shards(&MapSource(&stray))
            .unwrap());
    }

    #[test]
    fn older_index_formats_are_not_read() {
        let idx = scanned();
        let mut old = serde_json::to_value(&idx).unwrap();
        for v in [2, 3, 4] {
            old["version"] = v.into();
            assert!(parse_index(&serde_json::to_vec(&old).unwrap()).is_none());
        }
        old["version"] = super::INDEX_VERSION.into();
        assert!(parse_index(&serde_json::to_vec(&old).unwrap()).is_some());
    }

    #[test]
    fn shard_counts_round_trip_through_their_compact_text() {
        let mut s = Shards::default();
        s.add("00", 3);
        s.add("a7", 1);
        s.add("ff", 12);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, r#""00:3 a7:1 ff:12""#);
        assert_eq!(serde_json::from_str::<Shards>(&text).unwrap(), s);
        let empty: Shards = serde_json::from_str(r#""00:0""#).unwrap();
        assert_eq!(empty, Shards::default(), "all-zero counts are no counts");
        assert!(serde_json::from_str::<Shards>(r#""00-3""#).is_err());
    }
}
