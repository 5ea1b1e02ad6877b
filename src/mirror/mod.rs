//! The human mirror: deterministic markdown pages under `mirror/`, derived
//! from the canonical files and never edited by hand.
//!
//! Pages: `mirror/README.md` (the store at a glance), `mirror/runs/<shard>/<run>.md`
//! (sharded like the runs themselves, see [`run_page`]),
//! `mirror/projects/<project>.md`, `mirror/memory/<scope>[/<scope_id>]/<type>.md`
//! (split by the shard of the item id into `<type>/<prefix>.md` parts when a
//! page would hold more than `mirror.max_page_items` items) and
//! `mirror/queue.md`. They are rendered with minijinja from the templates in
//! `templates/mirror/` (a store may override any of them with its own file at
//! the same path). Every page opens with a do-not-edit banner naming the
//! canonical files to edit instead and the sha256 of its inputs (the template
//! and the data it was given): a page whose checksum is unchanged is not
//! rewritten.
//!
//! Invariants:
//! - Output is a pure function of the canonical files and of the history up
//!   to the *horizon*: pages committed in commit X show the events of X's
//!   ancestors (X's own event cannot be in X). No wall-clock time appears.
//! - Incremental updates and a render from scratch give identical bytes.
//!   Aggregates that would otherwise need the whole store on every write
//!   (counts, the run table, the candidate list, recent events) live in
//!   `mirror/index.json`, a derived file updated by deltas: a write reads the
//!   old and new versions of the files it changes and nothing else, so its
//!   cost does not grow with the store. The memory groups' counts by id
//!   shard (what splits their pages) are in `mirror/shards.json`, read and
//!   rewritten only by a change to a memory item.
//! - The renderer reads through [`Source`], so the same code renders from git
//!   objects (commits) and from the work tree (the watcher).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{MirrorConfig, StoreConfig};
use crate::episode::Episode;
use crate::error::{Error, Result};
use crate::ledger::{self, EventDraft, EventType};
use crate::memory::{Batch, ItemStatus, MemoryItem};
use crate::project::{ProjectState, Registry};
use crate::store::{Changes, Committed, Mutation, Snapshot, Store};
use crate::working_set::WorkingSet;
use crate::{layout, schema};

/// The folder of the mirror.
pub const DIR: &str = "mirror";
/// The derived aggregates the incremental renderer carries from commit to commit.
pub const INDEX: &str = "mirror/index.json";
/// The active-item counts of the memory groups by id shard, which decide how
/// a group's pages split. Kept apart from [`INDEX`] because at scale they
/// are most of its bytes and only a memory change moves them: a write that
/// changes no memory item does not read or rewrite this file.
pub const SHARDS: &str = "mirror/shards.json";
/// The store overview page.
pub const README: &str = "mirror/README.md";
/// The review queue page.
pub const QUEUE: &str = "mirror/queue.md";
/// Where a store keeps its own templates.
pub const TEMPLATE_DIR: &str = "templates/mirror";
/// Bumped whenever the shape of the output changes: forces a full render.
const VERSION: u32 = 2;
/// The format of [`INDEX`]. Format 2 carried the shard counts inline; it is
/// still read (the counts move to [`SHARDS`] on the next write), so a store
/// written by an older cairn does not pay a full render to upgrade.
const INDEX_VERSION: u32 = 3;
/// How deep a supersession chain is shown under the item that replaced it.
const MAX_CHAIN: usize = 8;
/// How many milestones the overview lists.
const MILESTONES: usize = 10;

/// The built-in templates, by file name under `templates/mirror/`.
pub const TEMPLATES: [(&str, &str); 6] = [
    (
        "readme.md.j2",
        include_str!("../../templates/mirror/readme.md.j2"),
    ),
    (
        "run.md.j2",
        include_str!("../../templates/mirror/run.md.j2"),
    ),
    (
        "project.md.j2",
        include_str!("../../templates/mirror/project.md.j2"),
    ),
    (
        "memory.md.j2",
        include_str!("../../templates/mirror/memory.md.j2"),
    ),
    (
        "memory_index.md.j2",
        include_str!("../../templates/mirror/memory_index.md.j2"),
    ),
    (
        "queue.md.j2",
        include_str!("../../templates/mirror/queue.md.j2"),
    ),
];

/// Where the renderer reads canonical files from.
pub trait Source {
    /// The bytes of a file, if it exists.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// The entries of a folder as (name, is_folder), sorted by name.
    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>>;
    /// A canonical file parsed and checked against its schema, if it exists.
    fn parsed(&self, path: &str) -> Result<Option<Value>> {
        match self.read(path)? {
            Some(b) => parse_valid(path, &b).map(Some),
            None => Ok(None),
        }
    }
}

/// A commit of the store (or the empty store for `None`).
///
/// Reads look each path up from the root tree. A pass that reads many files
/// (a full render) switches, after [`BULK_READS`] reads, to one walk of the
/// whole tree and reads blobs by id from then on.
pub struct GitSource<'a> {
    store: &'a Store,
    commit: Option<Oid>,
    reads: std::cell::Cell<usize>,
    /// Every file of the commit and its blob, once the pass is a bulk one.
    files: std::cell::OnceCell<BTreeMap<String, Oid>>,
}

/// Path lookups a [`GitSource`] makes before it walks the whole tree once.
const BULK_READS: usize = 512;

impl<'a> GitSource<'a> {
    /// Reads `commit` of `store`.
    pub fn new(store: &'a Store, commit: Option<Oid>) -> Self {
        GitSource {
            store,
            commit,
            reads: std::cell::Cell::new(0),
            files: std::cell::OnceCell::new(),
        }
    }

    /// The file map, when this source has turned bulk (or should now).
    fn bulk(&self) -> Result<Option<&BTreeMap<String, Oid>>> {
        if let Some(files) = self.files.get() {
            return Ok(Some(files));
        }
        let Some(c) = self.commit else {
            return Ok(None);
        };
        self.reads.set(self.reads.get() + 1);
        if self.reads.get() < BULK_READS {
            return Ok(None);
        }
        let files = self
            .store
            .walk_files(c, "")?
            .into_iter()
            .map(|(path, id, _)| (path, id))
            .collect();
        Ok(Some(self.files.get_or_init(|| files)))
    }
}

impl Source for GitSource<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if let Some(files) = self.bulk()? {
            return files
                .get(path)
                .map(|id| self.store.read_blob(*id))
                .transpose();
        }
        match self.commit {
            Some(c) => self.store.read_file(c, path),
            None => Ok(None),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        if let Some(files) = self.bulk()? {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let mut out = Vec::new();
            let mut from = prefix.clone();
            while let Some((path, _)) = files.range(from.clone()..).next() {
                let Some(rest) = path.strip_prefix(&prefix) else {
                    break;
                };
                match rest.split_once('/') {
                    Some((sub, _)) => {
                        out.push((sub.to_string(), true));
                        // Skip the folder's contents: '0' follows '/'.
                        from = format!("{prefix}{sub}0");
                    }
                    None => {
                        out.push((rest.to_string(), false));
                        from = format!("{path}\0");
                    }
                }
            }
            return Ok(out);
        }
        match self.commit {
            Some(c) => self.store.list_dir(c, dir),
            None => Ok(Vec::new()),
        }
    }
}

/// The files of a work tree.
pub struct WorkTreeSource {
    root: PathBuf,
}

impl WorkTreeSource {
    /// Reads the work tree at `root`.
    pub fn new(root: &Path) -> Self {
        WorkTreeSource {
            root: root.to_path_buf(),
        }
    }
}

impl Source for WorkTreeSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let full = self.root.join(path);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("stat", full, e)),
        }
        match std::fs::read(&full) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", full, e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let full = self.root.join(dir);
        let entries = match std::fs::read_dir(&full) {
            Ok(e) => e,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(Error::io("list", full, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Editors' temp and backup files are not store files.
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() || kind.is_file() {
                out.push((name, kind.is_dir()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A source with planned changes laid over it.
pub struct Overlay<'a> {
    base: &'a dyn Source,
    changes: &'a Changes,
}

impl<'a> Overlay<'a> {
    /// `base` as it reads once `changes` are applied.
    pub fn new(base: &'a dyn Source, changes: &'a Changes) -> Self {
        Overlay { base, changes }
    }
}

impl Source for Overlay<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.changes.get(path) {
            Some(c) => Ok(c.clone()),
            None => self.base.read(path),
        }
    }

    fn parsed(&self, path: &str) -> Result<Option<Value>> {
        match self.changes.get(path) {
            Some(Some(b)) => parse_valid(path, b).map(Some),
            Some(None) => Ok(None),
            None => self.base.parsed(path),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let mut entries: BTreeMap<String, bool> = self.base.list(dir)?.into_iter().collect();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        for (path, content) in self.changes.range(prefix.clone()..) {
            let Some(rest) = path.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((sub, _)) => {
                    if content.is_some() {
                        entries.insert(sub.to_string(), true);
                    }
                }
                None => match content {
                    Some(_) => {
                        entries.insert(rest.to_string(), false);
                    }
                    None => {
                        entries.remove(rest);
                    }
                },
            }
        }
        Ok(entries.into_iter().collect())
    }
}

/// A source that remembers what it read: one pass reads the same files (old
/// pages, the index, the registry) more than once.
struct Cached<'a> {
    inner: &'a dyn Source,
    reads: std::cell::RefCell<std::collections::HashMap<String, Option<Vec<u8>>>>,
    lists: std::cell::RefCell<std::collections::HashMap<String, Vec<(String, bool)>>>,
    /// Valid files parsed so far (a file is parsed for the index delta and again for its page).
    values: std::cell::RefCell<std::collections::HashMap<String, Option<Value>>>,
}

impl<'a> Cached<'a> {
    fn new(inner: &'a dyn Source) -> Self {
        Cached {
            inner,
            reads: Default::default(),
            lists: Default::default(),
            values: Default::default(),
        }
    }
}

impl Source for Cached<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if let Some(hit) = self.reads.borrow().get(path) {
            return Ok(hit.clone());
        }
        let got = self.inner.read(path)?;
        self.reads
            .borrow_mut()
            .insert(path.to_string(), got.clone());
        Ok(got)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        if let Some(hit) = self.lists.borrow().get(dir) {
            return Ok(hit.clone());
        }
        let got = self.inner.list(dir)?;
        self.lists.borrow_mut().insert(dir.to_string(), got.clone());
        Ok(got)
    }

    fn parsed(&self, path: &str) -> Result<Option<Value>> {
        if let Some(hit) = self.values.borrow().get(path) {
            return Ok(hit.clone());
        }
        let got = match self.read(path)? {
            Some(b) => Some(parse_valid(path, &b)?),
            None => None,
        };
        self.values
            .borrow_mut()
            .insert(path.to_string(), got.clone());
        Ok(got)
    }
}

/// A canonical file the mirror could not use, shown in the overview's problems section.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// The JSON pointer of the offending field ("" for the whole file).
    pub field: String,
    /// The rule broken.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// The problem a validation error describes.
    pub fn from_error(file: &str, e: &Error) -> Problem {
        let (field, rule) = match e {
            Error::Schema { violations, .. } => violations
                .first()
                .map(|v| (v.pointer.clone(), v.rule.clone()))
                .unwrap_or_default(),
            Error::Invalid { pointer, rule, .. } => (pointer.clone(), rule.to_string()),
            Error::Parse { .. } => (String::new(), "syntax".into()),
            Error::TooLarge { setting, .. } => (String::new(), setting.to_string()),
            Error::TooDeep { .. } => (String::new(), "max_depth".into()),
            _ => (String::new(), e.code().to_ascii_lowercase()),
        };
        Problem {
            file: file.to_string(),
            field,
            rule,
            message: e.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------
// The derived index.

/// One run's row in the overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunRow {
    status: String,
    stage: Option<String>,
    next_action: Option<String>,
    updated_at: String,
    project: Option<String>,
    objective: String,
    seq: u64,
}

/// One ledger event as the pages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventRow {
    commit: String,
    timestamp: String,
    event_type: String,
    run_id: Option<String>,
    seq: Option<u64>,
    subject: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MilestoneRow {
    created_at: String,
    episode_id: String,
    run_id: String,
    ordinal: u64,
    reason: String,
    tag: String,
}

/// The page of a run: `mirror/runs/<shard>/<run_id>.md`, sharded like
/// `runs/` so that no folder of the mirror grows without bound.
pub fn run_page(run_id: &str) -> String {
    format!("{DIR}/{}", run_link(run_id))
}

/// A run page's path relative to `mirror/` (templates prefix it with `root`).
fn run_link(run_id: &str) -> String {
    format!("runs/{}/{run_id}.md", layout::shard(run_id))
}

/// The items of one (scope, scope_id, type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    scope: String,
    scope_id: Option<String>,
    kind: String,
    /// Items by status.
    counts: BTreeMap<String, u64>,
    /// Active items by the shard of their id. Stored in [`SHARDS`], not in
    /// the index (format 2 indexes had them here, and are still read).
    #[serde(default, skip_serializing)]
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
struct Index {
    version: u32,
    /// The newest commit whose event is included.
    horizon: Option<String>,
    runs: BTreeMap<String, RunRow>,
    groups: BTreeMap<String, Group>,
    candidates: BTreeMap<String, String>,
    disputed: BTreeMap<String, String>,
    states: BTreeSet<String>,
    milestones: Vec<MilestoneRow>,
    events: Vec<EventRow>,
    run_events: BTreeMap<String, Vec<EventRow>>,
    /// Whether the groups' shard counts are in memory (a full scan, a format
    /// 2 index, or [`Index::load_shards`]); only then is [`SHARDS`] written.
    #[serde(skip)]
    shards_loaded: bool,
}

fn group_key(scope: &str, scope_id: Option<&str>, kind: &str) -> String {
    format!("{scope}/{}/{kind}", scope_id.unwrap_or("-"))
}

/// The page (or the index page of a split family) of a memory group.
fn group_page(g: &Group) -> String {
    match &g.scope_id {
        Some(sid) => format!("{DIR}/memory/{}/{sid}/{}.md", g.scope, g.kind),
        None => format!("{DIR}/memory/{}/{}.md", g.scope, g.kind),
    }
}

fn part_page(g: &Group, prefix: &str) -> String {
    let page = group_page(g);
    format!("{}/{prefix}.md", page.trim_end_matches(".md"))
}

/// How many hex digits of the shard split a group's pages (0 = one page).
fn level_of(g: &Group, max_items: usize) -> usize {
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
fn parts_of(g: &Group, level: usize) -> BTreeMap<String, u64> {
    let mut parts: BTreeMap<String, u64> = BTreeMap::new();
    for (shard, n) in g.shards.iter() {
        *parts.entry(shard[..level].to_string()).or_default() += n;
    }
    parts
}

/// Every page path a group family occupies.
fn family_pages(g: &Group, max_items: usize) -> Vec<String> {
    let level = level_of(g, max_items);
    let mut out = vec![group_page(g)];
    if level > 0 {
        out.extend(parts_of(g, level).keys().map(|p| part_page(g, p)));
    }
    out
}

impl Index {
    fn apply_run(&mut self, run_id: &str, ws: Option<&WorkingSet>) {
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

    fn apply_item(&mut self, path: &str, item: &MemoryItem, sign: i64) {
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
            if add {
                self.candidates.insert(item.id.clone(), path.to_string());
            } else {
                self.candidates.remove(&item.id);
            }
        }
        if item.disputed {
            if add {
                self.disputed.insert(item.id.clone(), path.to_string());
            } else {
                self.disputed.remove(&item.id);
            }
        }
    }

    fn add_milestone(&mut self, ep: &Episode) {
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
    fn projects(&self, registry: &Registry) -> BTreeSet<String> {
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

fn event_row(store: &Store, commit: Oid) -> Result<EventRow> {
    let info = store.commit_info(commit)?;
    let parsed = ledger::parse_message(&info.message);
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
        .and_then(crate::store::parse_rfc3339)
        .or_else(|| time::OffsetDateTime::from_unix_timestamp(info.time).ok())
        .map(crate::store::rfc3339)
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
const CHAIN_WALK: usize = 1000;

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
fn advance_events(idx: &mut Index, store: &Store, horizon: Option<Oid>, keep: usize) -> Result<()> {
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

// ---------------------------------------------------------------------------
// Parsing canonical files.

fn parse_valid(path: &str, bytes: &[u8]) -> Result<Value> {
    let value = crate::store::parse_yaml(path, bytes)?;
    if let Some(name) = layout::schema_for(path) {
        schema::validate(name, path, &value)?;
    }
    Ok(value)
}

fn typed<T: serde::de::DeserializeOwned>(path: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Integrity {
        subject: path.to_string(),
        message: e.to_string(),
    })
}

/// Checks a canonical file the way a commit would: parse and schema.
pub fn validate_file(path: &str, bytes: &[u8]) -> Result<()> {
    parse_valid(path, bytes).map(|_| ())
}

fn read_typed<T: serde::de::DeserializeOwned>(src: &dyn Source, path: &str) -> Result<Option<T>> {
    match src.parsed(path)? {
        Some(v) => Ok(Some(typed(path, v)?)),
        None => Ok(None),
    }
}

fn read_registry(src: &dyn Source) -> Result<Registry> {
    Ok(read_typed(src, layout::REGISTRY)?.unwrap_or_default())
}

/// Every file under `dir`, recursively, sorted.
fn walk(src: &dyn Source, dir: &str, out: &mut Vec<String>) -> Result<()> {
    for (name, is_dir) in src.list(dir)? {
        let path = format!("{dir}/{name}");
        if is_dir {
            walk(src, &path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Run ids present under `runs/`.
fn run_ids(src: &dyn Source) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (shard, d) in src.list(layout::RUNS)? {
        if !d {
            continue;
        }
        for (run, d) in src.list(&format!("{}/{shard}", layout::RUNS))? {
            if d && layout::valid_id(&run) {
                out.push(run);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn yaml_files(src: &dyn Source, dir: &str) -> Result<Vec<String>> {
    Ok(src
        .list(dir)?
        .into_iter()
        .filter(|(n, d)| !d && n.ends_with(".yaml"))
        .map(|(n, _)| format!("{dir}/{n}"))
        .collect())
}

// ---------------------------------------------------------------------------
// Templates and pages.

struct Templates {
    env: minijinja::Environment<'static>,
    digests: BTreeMap<String, [u8; 32]>,
}

/// Compiled template sets of this process, by their texts: compiling the six
/// templates costs more than rendering a page, and a store's templates
/// rarely change.
static COMPILED: std::sync::Mutex<Vec<(Vec<String>, std::sync::Arc<Templates>)>> =
    std::sync::Mutex::new(Vec::new());
/// How many template sets [`COMPILED`] keeps (a process may serve several stores).
const COMPILED_SETS: usize = 4;

impl Templates {
    /// The templates `src` uses: its own files under `templates/mirror/`,
    /// the built-in ones for the rest; compiled once per process.
    fn load(src: &dyn Source) -> Result<std::sync::Arc<Templates>> {
        // One folder lookup answers the common case: no overrides at all.
        let overrides: BTreeSet<String> = src
            .list(TEMPLATE_DIR)?
            .into_iter()
            .filter(|(_, dir)| !dir)
            .map(|(name, _)| name)
            .collect();
        let mut texts = Vec::with_capacity(TEMPLATES.len());
        for (name, builtin) in TEMPLATES {
            let text = if overrides.contains(name) {
                match src.read(&format!("{TEMPLATE_DIR}/{name}"))? {
                    Some(b) => String::from_utf8_lossy(&b).into_owned(),
                    None => builtin.to_string(),
                }
            } else {
                builtin.to_string()
            };
            texts.push(text);
        }
        let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cache.iter().position(|(t, _)| *t == texts) {
            let hit = cache.remove(at);
            let compiled = hit.1.clone();
            cache.insert(0, hit);
            return Ok(compiled);
        }
        let compiled = std::sync::Arc::new(Templates::compile(&texts)?);
        cache.insert(0, (texts, compiled.clone()));
        cache.truncate(COMPILED_SETS);
        Ok(compiled)
    }

    fn compile(texts: &[String]) -> Result<Templates> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(TEMPLATE_DIR, &e))?;
        env.set_syntax(syntax);
        let mut digests = BTreeMap::new();
        for ((name, _), text) in TEMPLATES.iter().zip(texts) {
            let path = format!("{TEMPLATE_DIR}/{name}");
            digests.insert(name.to_string(), Sha256::digest(text.as_bytes()).into());
            env.add_template_owned(name.to_string(), text.clone())
                .map_err(|e| template_error(&path, &e))?;
        }
        Ok(Templates { env, digests })
    }
}

fn template_error(path: &str, e: &minijinja::Error) -> Error {
    Error::Invalid {
        file: path.to_string(),
        pointer: e.line().map(|l| format!("(line {l})")).unwrap_or_default(),
        rule: "template",
        message: e.to_string(),
    }
}

/// The `../` prefix that leads from a page back to `mirror/`.
fn root_of(page: &str) -> String {
    let depth = page.matches('/').count().saturating_sub(1);
    "../".repeat(depth)
}

/// The checksum a page's banner carries, if it has one.
fn banner_checksum(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(2048)];
    let text = std::str::from_utf8(head).ok()?;
    let at = text.find("inputs: sha256:")? + "inputs: sha256:".len();
    text.get(at..at + 64).map(str::to_string)
}

/// The pages being produced by one pass: path → new bytes (`None` = delete).
struct Pass<'a> {
    templates: &'a Templates,
    /// Where the current pages are read from (to skip unchanged ones).
    pages: &'a dyn Source,
    out: Changes,
}

impl Pass<'_> {
    fn emit(&mut self, page: &str, template: &str, edit: &[String], mut ctx: Value) -> Result<()> {
        let root = root_of(page);
        if let Value::Object(m) = &mut ctx {
            m.insert("root".into(), Value::String(root));
        }
        let mut h = Sha256::new();
        h.update(VERSION.to_le_bytes());
        h.update(
            self.templates
                .digests
                .get(template)
                .copied()
                .unwrap_or_default(),
        );
        h.update(serde_json::to_vec(&ctx).expect("JSON values serialize"));
        h.update(edit.join("\n").as_bytes());
        let checksum = hex(&h.finalize());
        if let Some(old) = self.pages.read(page)? {
            if banner_checksum(&old).as_deref() == Some(checksum.as_str()) {
                self.out.remove(page);
                return Ok(());
            }
        }
        let body = self
            .templates
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
            .map_err(|e| template_error(&format!("{TEMPLATE_DIR}/{template}"), &e))?;
        let mut text = String::with_capacity(body.len() + 400);
        text.push_str("<!--\n  Generated by cairn. Do not edit: changes here are overwritten.\n  Edit the canonical files instead (through the cairn CLI or by hand):\n");
        for e in edit {
            text.push_str("    ");
            text.push_str(e);
            text.push('\n');
        }
        text.push_str("  inputs: sha256:");
        text.push_str(&checksum);
        text.push_str("\n-->\n\n");
        // Templates stay readable with blank lines around blocks; the pages get at most one.
        let mut blank = 0;
        for line in body.trim().lines() {
            let line = line.trim_end();
            blank = if line.is_empty() { blank + 1 } else { 0 };
            if blank < 2 {
                text.push_str(line);
                text.push('\n');
            }
        }
        self.out.insert(page.to_string(), Some(text.into_bytes()));
        Ok(())
    }

    fn delete(&mut self, page: &str) -> Result<()> {
        if self.pages.read(page)?.is_some() {
            self.out.insert(page.to_string(), None);
        } else {
            self.out.remove(page);
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn item_ctx(item: &MemoryItem) -> Value {
    json!({
        "id": item.id,
        "type": item.kind,
        "scope": item.scope,
        "scope_id": item.scope_id,
        "project": item.project,
        "content": item.content,
        "confidence": format!("{:.2}", item.confidence),
        "status": item.status.as_str(),
        "rationale": item.rationale,
        "source_refs": item.source_refs,
        "supersedes": item.supersedes,
        "superseded_by": item.superseded_by,
        "tags": item.tags,
        "disputed": item.disputed,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "expires_at": item.expires_at,
    })
}

/// The items an item replaced, newest first, read from the same scope.
fn chain_of(src: &dyn Source, item: &MemoryItem) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = item.supersedes.clone();
    let mut seen = BTreeSet::new();
    while let Some(id) = next.take() {
        if out.len() >= MAX_CHAIN || !seen.insert(id.clone()) {
            break;
        }
        let path = layout::memory_item(&item.scope, item.scope_id.as_deref(), &id);
        let Some(old) = read_item(src, &path)? else {
            break;
        };
        out.push(item_ctx(&old));
        next = old.supersedes.clone();
    }
    Ok(out)
}

fn read_item(src: &dyn Source, path: &str) -> Result<Option<MemoryItem>> {
    read_typed(src, path)
}

/// The renderer over one state of the store.
struct Renderer<'a> {
    src: &'a dyn Source,
    /// Items parsed during this pass: a scope folder holds every type, so
    /// each of its type pages would otherwise parse every item again.
    items: std::cell::RefCell<Items>,
    cfg: &'a MirrorConfig,
    idx: &'a Index,
    registry: &'a Registry,
    problems: &'a [Problem],
}

impl Renderer<'_> {
    fn readme(&self, pass: &mut Pass<'_>) -> Result<()> {
        let runs: Vec<Value> = self
            .idx
            .runs
            .iter()
            .map(|(id, r)| json!({"id": id, "row": r, "link": run_link(id)}))
            .collect();
        let projects: Vec<Value> = self
            .idx
            .projects(self.registry)
            .into_iter()
            .map(|p| {
                let description = self
                    .registry
                    .projects
                    .iter()
                    .find(|r| r.id == p)
                    .and_then(|r| r.description.clone());
                json!({"id": p, "description": description, "registered": self.registry.find(&p).is_some()})
            })
            .collect();
        let groups: Vec<Value> = self
            .idx
            .groups
            .values()
            .map(|g| {
                json!({"scope": g.scope, "scope_id": g.scope_id, "type": g.kind, "counts": g.counts,
                       "link": group_page(g).trim_start_matches("mirror/")})
            })
            .collect();
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for g in self.idx.groups.values() {
            for (s, n) in &g.counts {
                *totals.entry(s.clone()).or_default() += n;
            }
        }
        let ctx = json!({
            "runs": runs,
            "projects": projects,
            "groups": groups,
            "totals": totals,
            "queue_size": self.idx.candidates.len(),
            "milestones": self.idx.milestones.iter().map(|m| {
                let mut v = serde_json::to_value(m).expect("rows serialize");
                v["run_link"] = Value::String(run_link(&m.run_id));
                v
            }).collect::<Vec<Value>>(),
            "events": self.idx.events,
            "problems": self.problems,
        });
        pass.emit(
            README,
            "readme.md.j2",
            &[
                "runs/<shard>/<run_id>/working_set.yaml  (cairn ws patch)".into(),
                "memory/**/*.yaml  (cairn memory propose|promote|reject|edit)".into(),
                "registry/projects.yaml, state/<project>.yaml  (cairn project, cairn state)".into(),
            ],
            ctx,
        )
    }

    fn run(&self, pass: &mut Pass<'_>, run_id: &str) -> Result<()> {
        let page = run_page(run_id);
        let ws_path = layout::working_set(run_id);
        let Some(ws) = read_typed::<WorkingSet>(self.src, &ws_path)? else {
            return pass.delete(&page);
        };
        let dir = layout::run_dir(run_id);
        let mut episodes = Vec::new();
        for path in yaml_files(self.src, &format!("{dir}/episodes"))? {
            if let Some(ep) = read_typed::<Episode>(self.src, &path)? {
                episodes.push(json!({
                    "episode_id": ep.episode_id, "ordinal": ep.ordinal, "reason": ep.reason,
                    "summary": ep.summary, "next_entry_point": ep.next_entry_point,
                    "tag": ep.tag, "created_at": ep.created_at, "batches": ep.memory_batches,
                }));
            }
        }
        episodes.sort_by_key(|e| e["ordinal"].as_u64());
        let mut batches = Vec::new();
        for path in yaml_files(self.src, &format!("{dir}/proposals"))? {
            if let Some(b) = read_typed::<Batch>(self.src, &path)? {
                let items: Vec<Value> = b
                    .items
                    .iter()
                    .zip(b.item_ids.iter().chain(std::iter::repeat(&None)))
                    .map(|(mcr, id)| {
                        json!({"id": id, "op": mcr.get("op"), "type": mcr.get("type"),
                               "scope": mcr.get("scope"), "content": mcr.get("content")})
                    })
                    .collect();
                batches.push(json!({
                    "batch_id": b.batch_id, "status": b.status, "created_at": b.created_at,
                    "committed_at": b.committed_at, "committed_in": b.committed_in, "items": items,
                }));
            }
        }
        batches.sort_by(|a, b| {
            (a["created_at"].as_str(), a["batch_id"].as_str())
                .cmp(&(b["created_at"].as_str(), b["batch_id"].as_str()))
        });
        let ctx = json!({
            "ws": ws,
            "project_link": ws.project.as_ref().filter(|p| layout::valid_id(p)).map(|p| format!("projects/{p}.md")),
            "episodes": episodes,
            "batches": batches,
            "events": self.idx.run_events.get(run_id).cloned().unwrap_or_default(),
        });
        pass.emit(
            &page,
            "run.md.j2",
            &[
                format!("{ws_path}  (cairn ws patch {run_id})"),
                format!("{dir}/proposals/*.yaml  (cairn memory propose)"),
            ],
            ctx,
        )
    }

    fn project(&self, pass: &mut Pass<'_>, project: &str, exists: bool) -> Result<()> {
        let page = format!("{DIR}/projects/{project}.md");
        if !exists {
            return pass.delete(&page);
        }
        let state_path = layout::project_state(project);
        let state: Option<ProjectState> = read_typed(self.src, &state_path)?;
        let entries: Vec<Value> = state
            .map(|s| {
                s.entries
                    .iter()
                    .filter(|e| e.status == crate::project::EntryStatus::Active)
                    .map(|e| serde_json::to_value(e).expect("entries serialize"))
                    .collect()
            })
            .unwrap_or_default();
        let memories: Vec<Value> = self
            .idx
            .groups
            .values()
            .filter(|g| g.scope == "project" && g.scope_id.as_deref() == Some(project))
            .map(|g| json!({"type": g.kind, "counts": g.counts, "link": group_page(g).trim_start_matches("mirror/")}))
            .collect();
        let runs: Vec<Value> = self
            .idx
            .runs
            .iter()
            .filter(|(_, r)| r.project.as_deref() == Some(project))
            // Only what the page shows, so a patch that changes none of it leaves the page alone.
            .map(|(id, r)| json!({"id": id, "link": run_link(id), "row": {"status": r.status, "stage": r.stage, "objective": r.objective}}))
            .collect();
        let mut disputed = Vec::new();
        for path in self.idx.disputed.values() {
            if let Some(item) = read_item(self.src, path)? {
                if item.project.as_deref() == Some(project)
                    || (item.scope == "project" && item.scope_id.as_deref() == Some(project))
                {
                    disputed.push(item_ctx(&item));
                }
            }
        }
        let reg = self.registry.find(project).filter(|p| p.id == project);
        let ctx = json!({
            "project": project,
            "registered": reg.is_some(),
            "aliases": reg.map(|p| p.aliases.clone()).unwrap_or_default(),
            "description": reg.and_then(|p| p.description.clone()),
            "state": entries,
            "memories": memories,
            "runs": runs,
            "disputed": disputed,
        });
        pass.emit(
            &page,
            "project.md.j2",
            &[
                format!("{state_path}  (cairn state set {project} ...)"),
                format!("{}  (cairn project add)", layout::REGISTRY),
                format!(
                    "{}/**  (cairn memory ...)",
                    layout::memory_scope_dir("project", Some(project))
                ),
            ],
            ctx,
        )
    }

    /// Active items of a group whose id shard starts with `prefix`, by id.
    fn group_items(&self, g: &Group, prefix: &str) -> Result<Vec<Value>> {
        let dir = layout::memory_scope_dir(&g.scope, g.scope_id.as_deref());
        let mut items = Vec::new();
        for (shard, is_dir) in self.src.list(&dir)? {
            if !is_dir || shard.len() != 2 || !shard.starts_with(prefix) {
                continue;
            }
            for path in yaml_files(self.src, &format!("{dir}/{shard}"))? {
                let cached = self.items.borrow().get(&path).cloned();
                let item = match cached {
                    Some(i) => i,
                    None => {
                        let i = read_item(self.src, &path)?;
                        self.items.borrow_mut().insert(path.clone(), i.clone());
                        i
                    }
                };
                let Some(item) = item else {
                    continue;
                };
                if item.kind != g.kind || item.status != ItemStatus::Active {
                    continue;
                }
                let mut ctx = item_ctx(&item);
                ctx["superseded"] = Value::Array(chain_of(self.src, &item)?);
                items.push(ctx);
            }
        }
        items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(items)
    }

    /// Renders a group's pages: all of them, or only the parts in `dirty`.
    fn group(
        &self,
        pass: &mut Pass<'_>,
        g: &Group,
        dirty: Option<&BTreeSet<String>>,
    ) -> Result<()> {
        let level = level_of(g, self.cfg.max_page_items);
        let page = group_page(g);
        let dir = layout::memory_scope_dir(&g.scope, g.scope_id.as_deref());
        let edit = vec![format!(
            "{dir}/**/*.yaml  (cairn memory edit|promote|reject)"
        )];
        let base =
            json!({"scope": g.scope, "scope_id": g.scope_id, "type": g.kind, "counts": g.counts});
        if level == 0 {
            let mut ctx = base;
            ctx["items"] = Value::Array(self.group_items(g, "")?);
            ctx["part"] = Value::Null;
            return pass.emit(&page, "memory.md.j2", &edit, ctx);
        }
        let parts = parts_of(g, level);
        let name = page
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".md");
        let mut ctx = base.clone();
        ctx["parts"] = Value::Array(
            parts
                .iter()
                .map(|(p, n)| json!({"prefix": p, "count": n, "link": format!("{name}/{p}.md")}))
                .collect(),
        );
        pass.emit(&page, "memory_index.md.j2", &edit, ctx)?;
        for prefix in parts.keys() {
            if let Some(d) = dirty {
                if !d.iter().any(|s| s.starts_with(prefix.as_str())) {
                    continue;
                }
            }
            let mut ctx = base.clone();
            ctx["items"] = Value::Array(self.group_items(g, prefix)?);
            ctx["part"] = json!({"prefix": prefix, "index": format!("../{name}.md")});
            pass.emit(&part_page(g, prefix), "memory.md.j2", &edit, ctx)?;
        }
        Ok(())
    }

    fn queue(&self, pass: &mut Pass<'_>) -> Result<()> {
        let mut items = Vec::new();
        for path in self.idx.candidates.values() {
            if let Some(item) = read_item(self.src, path)? {
                items.push(item_ctx(&item));
            }
        }
        items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        pass.emit(
            QUEUE,
            "queue.md.j2",
            &[
                "memory/**/*.yaml  (cairn memory promote ID | cairn memory reject ID --reason ...)"
                    .into(),
            ],
            json!({"items": items}),
        )
    }
}

// ---------------------------------------------------------------------------
// Full and incremental passes.

/// The memory items parsed by a pass, by path.
type Items = std::collections::HashMap<String, Option<MemoryItem>>;

/// Builds the index of a state from scratch, and the problems found on the
/// way; the memory items it parsed go to `items` for the pages.
fn scan(src: &dyn Source, problems: &mut Vec<Problem>, items: &mut Items) -> Result<Index> {
    let mut idx = Index {
        version: INDEX_VERSION,
        shards_loaded: true,
        ..Default::default()
    };
    let mut keep = |path: &str, r: Result<()>| -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.category() == crate::Category::Validation || e.code() == "INTEGRITY" => {
                problems.push(Problem::from_error(path, &e));
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    for run in run_ids(src)? {
        let path = layout::working_set(&run);
        let r = read_typed::<WorkingSet>(src, &path).map(|ws| idx.apply_run(&run, ws.as_ref()));
        keep(&path, r)?;
        for path in yaml_files(src, &format!("{}/episodes", layout::run_dir(&run)))? {
            let r = read_typed::<Episode>(src, &path).map(|ep| {
                if let Some(ep) = ep {
                    idx.add_milestone(&ep);
                }
            });
            keep(&path, r)?;
        }
    }
    let mut files = Vec::new();
    walk(src, layout::MEMORY, &mut files)?;
    for path in files {
        if layout::schema_for(&path) != Some("memory_item") {
            continue;
        }
        let r = read_item(src, &path).map(|item| {
            if let Some(item) = &item {
                idx.apply_item(&path, item, 1);
            }
            items.insert(path.clone(), item);
        });
        keep(&path, r)?;
    }
    for path in yaml_files(src, "state")? {
        let name = path["state/".len()..].trim_end_matches(".yaml").to_string();
        idx.states.insert(name);
    }
    Ok(idx)
}

/// Renders every page of a state into `pass`, deleting pages that should not exist.
fn render_everything(
    src: &dyn Source,
    store: &Store,
    horizon: Option<Oid>,
    cfg: &MirrorConfig,
    pass: &mut Pass<'_>,
    extra_problems: &[Problem],
) -> Result<Index> {
    let mut problems = extra_problems.to_vec();
    let mut items = Items::new();
    let mut idx = scan(src, &mut problems, &mut items)?;
    advance_events(&mut idx, store, horizon, cfg.recent_events)?;
    let registry = match read_registry(src) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem::from_error(layout::REGISTRY, &e));
            Registry::default()
        }
    };
    problems.sort();
    problems.dedup();
    let r = Renderer {
        src,
        items: std::cell::RefCell::new(items),
        cfg,
        idx: &idx,
        registry: &registry,
        problems: &problems,
    };
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    r.readme(pass)?;
    wanted.insert(README.into());
    r.queue(pass)?;
    wanted.insert(QUEUE.into());
    for run in idx.runs.keys() {
        r.run(pass, run)?;
        wanted.insert(run_page(run));
    }
    for p in idx.projects(&registry) {
        r.project(pass, &p, true)?;
        wanted.insert(format!("{DIR}/projects/{p}.md"));
    }
    for g in idx.groups.values() {
        r.group(pass, g, None)?;
        wanted.extend(family_pages(g, cfg.max_page_items));
    }
    wanted.insert(INDEX.into());
    wanted.insert(SHARDS.into());
    let mut existing = Vec::new();
    walk(pass.pages, DIR, &mut existing)?;
    for path in existing {
        if !wanted.contains(&path) {
            pass.out.insert(path, None);
        }
    }
    Ok(idx)
}

fn index_bytes(idx: &Index) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(idx).expect("the index serializes");
    b.push(b'\n');
    b
}

/// What changed pages a state change needs.
#[derive(Default)]
struct Dirty {
    readme: bool,
    queue: bool,
    runs: BTreeSet<String>,
    projects: BTreeSet<String>,
    all_projects: bool,
    /// Group key → dirty shards (the whole family when a level changes).
    groups: BTreeMap<String, BTreeSet<String>>,
}

/// Applies the changes of `paths` (old state `old`, new state `new`) to `idx`
/// and notes the pages they touch. Returns false when only a full render will do.
fn apply_changes(
    idx: &mut Index,
    old: &dyn Source,
    new: &dyn Source,
    paths: &[String],
    dirty: &mut Dirty,
) -> Result<bool> {
    for path in paths {
        if path.starts_with(&format!("{DIR}/")) {
            continue;
        }
        if path.starts_with(&format!("{TEMPLATE_DIR}/")) || path == layout::CONFIG {
            return Ok(false);
        }
        match layout::schema_for(path) {
            Some("working_set") => {
                let run = layout::run_of(path).unwrap_or_default().to_string();
                let before = idx.runs.get(&run).and_then(|r| r.project.clone());
                let ws: Option<WorkingSet> = read_typed(new, path)?;
                idx.apply_run(&run, ws.as_ref());
                let after = ws.and_then(|w| w.project);
                dirty.projects.extend(before);
                dirty.projects.extend(after);
                dirty.runs.insert(run);
                dirty.readme = true;
            }
            Some("episode") => {
                let run = layout::run_of(path).unwrap_or_default().to_string();
                match read_typed::<Episode>(new, path)? {
                    Some(ep) => idx.add_milestone(&ep),
                    // Episodes are never deleted through cairn; the
                    // milestones list cannot take one back.
                    None => return Ok(false),
                }
                dirty.runs.insert(run);
            }
            Some("mcr_batch") => {
                dirty
                    .runs
                    .insert(layout::run_of(path).unwrap_or_default().to_string());
            }
            Some("memory_item") => {
                // The groups' pages split by their shard counts.
                if !idx.shards_loaded {
                    return Ok(false);
                }
                let before = read_item(old, path)?;
                let after = read_item(new, path)?;
                for (item, sign) in [(&before, -1), (&after, 1)] {
                    let Some(item) = item else { continue };
                    let key = group_key(&item.scope, item.scope_id.as_deref(), &item.kind);
                    let shards = dirty.groups.entry(key).or_default();
                    shards.insert(layout::shard(&item.id));
                    idx.apply_item(path, item, sign);
                    if item.status == ItemStatus::Candidate {
                        dirty.queue = true;
                    }
                    if let Some(p) = &item.project {
                        dirty.projects.insert(p.clone());
                    }
                    if item.scope == "project" {
                        dirty.projects.extend(item.scope_id.clone());
                    }
                    // A superseded item is shown under the one that replaced it.
                    if let Some(by) = &item.superseded_by {
                        let p = layout::memory_item(&item.scope, item.scope_id.as_deref(), by);
                        if let Some(newer) = read_item(new, &p)? {
                            let key =
                                group_key(&newer.scope, newer.scope_id.as_deref(), &newer.kind);
                            dirty
                                .groups
                                .entry(key)
                                .or_default()
                                .insert(layout::shard(by));
                        }
                    }
                }
                dirty.readme = true;
            }
            Some("project_registry") => {
                dirty.all_projects = true;
                dirty.readme = true;
            }
            Some("project_state") => {
                let name = path["state/".len()..].trim_end_matches(".yaml").to_string();
                if new.read(path)?.is_some() {
                    idx.states.insert(name.clone());
                } else {
                    idx.states.remove(&name);
                }
                dirty.projects.insert(name);
                dirty.readme = true;
            }
            _ => {}
        }
    }
    Ok(true)
}

/// Renders the pages `dirty` names from the updated index.
fn render_dirty(
    r: &Renderer<'_>,
    old_idx: &Index,
    old_registry: &Registry,
    dirty: &Dirty,
    pass: &mut Pass<'_>,
) -> Result<()> {
    r.readme(pass)?;
    if dirty.queue {
        r.queue(pass)?;
    }
    for run in &dirty.runs {
        r.run(pass, run)?;
    }
    let before = old_idx.projects(old_registry);
    let after = r.idx.projects(r.registry);
    let mut projects: BTreeSet<String> = dirty.projects.clone();
    if dirty.all_projects {
        projects.extend(before.iter().cloned());
        projects.extend(after.iter().cloned());
    }
    projects.extend(before.symmetric_difference(&after).cloned());
    for p in projects {
        r.project(pass, &p, after.contains(&p))?;
    }
    let max = r.cfg.max_page_items;
    for (key, shards) in &dirty.groups {
        let old_g = old_idx.groups.get(key);
        let new_g = r.idx.groups.get(key);
        let old_pages: BTreeSet<String> = old_g
            .map(|g| family_pages(g, max).into_iter().collect())
            .unwrap_or_default();
        match new_g {
            Some(g) => {
                let same_level = old_g.is_some_and(|o| level_of(o, max) == level_of(g, max));
                r.group(pass, g, same_level.then_some(shards))?;
                let new_pages: BTreeSet<String> = family_pages(g, max).into_iter().collect();
                for p in old_pages.difference(&new_pages) {
                    pass.delete(p)?;
                }
            }
            None => {
                for p in &old_pages {
                    pass.delete(p)?;
                }
            }
        }
    }
    Ok(())
}

/// The parsed index of the current pages, if usable for an incremental pass.
fn load_index(pages: &dyn Source) -> Result<Option<Index>> {
    Ok(pages.read(INDEX)?.and_then(|bytes| parse_index(&bytes)))
}

/// An index in a format this build reads, or `None`.
fn parse_index(bytes: &[u8]) -> Option<Index> {
    let mut idx = serde_json::from_slice::<Index>(bytes).ok()?;
    match idx.version {
        // Format 2 carried the shard counts inline; the next write moves them.
        2 => {
            idx.version = INDEX_VERSION;
            idx.shards_loaded = true;
        }
        INDEX_VERSION => {}
        _ => return None,
    }
    Some(idx)
}

impl Index {
    /// Reads the groups' shard counts from [`SHARDS`] in `pages`. False when
    /// the file is missing or does not match the groups (a full render
    /// rebuilds both).
    fn load_shards(&mut self, pages: &dyn Source) -> Result<bool> {
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

/// Puts the index into a pass's output, and the shard counts when they were
/// loaded (otherwise they did not change and their file stays as it is).
fn put_index(out: &mut Changes, idx: &Index) {
    out.insert(INDEX.into(), Some(index_bytes(idx)));
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

fn config_after(snap: &Snapshot<'_>, changes: &Changes) -> StoreConfig {
    match changes.get(layout::CONFIG) {
        Some(Some(bytes)) => {
            schema::parse_document(layout::CONFIG, bytes, schema::ParseLimits::default())
                .map(StoreConfig::from_value)
                .unwrap_or_else(|_| snap.config().clone())
        }
        _ => snap.config().clone(),
    }
}

/// Adds the regenerated pages to a transaction's changes, so the commit that
/// changes canonical files carries the mirror pages that show them.
///
/// Called by [`Store::transact`] once the mutation is planned. Changes that
/// already touch `mirror/` are left alone (their author rendered it). With
/// `mirror.tracked: false` the pages go to the work tree instead of the commit.
pub fn extend(store: &Store, snap: &Snapshot<'_>, changes: &mut Changes) -> Result<()> {
    extend_parsed(store, snap, changes, BTreeMap::new())
}

/// [`extend`] for a caller that already parsed and validated the changed
/// canonical files: `parsed` maps their paths to their values, which the
/// pages are rendered from instead of parsing the files again.
pub fn extend_parsed(
    store: &Store,
    snap: &Snapshot<'_>,
    changes: &mut Changes,
    parsed: BTreeMap<String, Value>,
) -> Result<()> {
    if changes.keys().any(|p| p.starts_with("mirror/")) {
        return Ok(());
    }
    let cfg = config_after(snap, changes).mirror;
    if !cfg.enabled {
        return Ok(());
    }
    let git = GitSource::new(store, snap.commit());
    let base = Cached::new(&git);
    if !cfg.tracked {
        return extend_untracked(store, snap, &base, changes, &cfg);
    }
    let overlay = Overlay::new(&base, changes);
    let new = Cached::new(&overlay);
    new.values.borrow_mut().extend(
        parsed
            .into_iter()
            .filter(|(path, _)| matches!(changes.get(path), Some(Some(_))))
            .map(|(path, v)| (path, Some(v))),
    );
    let pass = plan(
        store,
        snap.commit(),
        &base,
        &new,
        &base,
        changes,
        &cfg,
        true,
    )?;
    if let Some(workdir) = store.workdir() {
        reset_worktree_pages(store, snap, workdir, &pass)?;
    }
    changes.extend(pass);
    Ok(())
}

thread_local! {
    static FULL_RENDERS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times a write on this thread had to render the whole mirror
/// instead of the pages its changes touch (tests and benchmarks watch it).
pub fn full_renders_on_this_thread() -> u64 {
    FULL_RENDERS.with(|c| c.get())
}

/// The page changes for moving from `old` to `new` (`changes` are the canonical paths).
///
/// `horizon` is the commit the change applies to (the tip); `pages` holds
/// the current pages. When `pages` is the tip's tree (`catch_up`) and the
/// index there was not written by the tip itself (a hand commit, a pull
/// came in between), the pass starts from the commit that wrote it and
/// applies every canonical change since then as a delta.
#[allow(clippy::too_many_arguments)]
fn plan(
    store: &Store,
    horizon: Option<Oid>,
    old: &dyn Source,
    new: &dyn Source,
    pages: &dyn Source,
    changes: &Changes,
    cfg: &MirrorConfig,
    catch_up: bool,
) -> Result<Changes> {
    let templates = Templates::load(new)?;
    let paths: Vec<String> = changes.keys().cloned().collect();
    let parent = horizon.map(|h| store.commit_info(h)).transpose()?;
    let loaded = load_index(pages)?;
    let own = match (&loaded, &parent) {
        // The index must have been written by the commit it sits in.
        (Some(idx), Some(info)) if info.parents.len() == 1 => {
            idx.horizon.as_deref() == Some(info.parents[0].to_string().as_str())
        }
        _ => false,
    };
    if let (true, Some(old_idx)) = (own, loaded) {
        let mut pass = Pass {
            templates: &templates,
            pages,
            out: Changes::new(),
        };
        if incremental(store, horizon, old_idx, old, new, &paths, cfg, &mut pass)? {
            return finish(pass);
        }
    } else if let (true, Some(tip)) = (catch_up, horizon) {
        if let Some((base, old_idx)) = writer_of_index(store, tip)? {
            let git = GitSource::new(store, Some(base));
            let then = Cached::new(&git);
            let mut since: BTreeSet<String> =
                store.diff_paths(Some(base), tip, "")?.into_iter().collect();
            // Pages that differ from the ones the index describes go back to them
            // (or to their new render).
            let stray: Vec<String> = since
                .iter()
                .filter(|p| p.starts_with(&format!("{DIR}/")))
                .cloned()
                .collect();
            since.extend(paths.iter().cloned());
            let since: Vec<String> = since.into_iter().collect();
            let mut pass = Pass {
                templates: &templates,
                pages: &then,
                out: Changes::new(),
            };
            if incremental(store, horizon, old_idx, &then, new, &since, cfg, &mut pass)? {
                let mut out = std::mem::take(&mut pass.out);
                for p in stray {
                    if !out.contains_key(&p) {
                        out.insert(p.clone(), then.read(&p)?);
                    }
                }
                let mut changed = Changes::new();
                for (path, content) in out {
                    if pages.read(&path)? != content {
                        changed.insert(path, content);
                    }
                }
                return Ok(changed);
            }
        }
    }
    FULL_RENDERS.with(|c| c.set(c.get() + 1));
    let mut pass = Pass {
        templates: &templates,
        pages,
        out: Changes::new(),
    };
    let idx = render_everything(new, store, horizon, cfg, &mut pass, &[])?;
    put_index(&mut pass.out, &idx);
    finish(pass)
}

/// The nearest commit on the first-parent line of `tip` that wrote the
/// mirror index, with that index, when the index describes that commit
/// (its horizon is the commit's parent). `None` when there is none within
/// [`CHAIN_WALK`] commits or the nearest index was written some other way.
fn writer_of_index(store: &Store, tip: Oid) -> Result<Option<(Oid, Index)>> {
    let mut at = tip;
    for _ in 0..CHAIN_WALK {
        let info = store.commit_info(at)?;
        let parent = info.parents.first().copied();
        // A merge's index came from one of its sides: look further back.
        if info.parents.len() <= 1 {
            let here = store.blob_id(at, INDEX)?;
            let before = match parent {
                Some(p) => store.blob_id(p, INDEX)?,
                None => None,
            };
            if let Some(blob) = here.filter(|_| here != before) {
                let idx = parse_index(&store.read_blob(blob)?);
                let parent = parent.map(|p| p.to_string());
                return Ok(idx.filter(|i| i.horizon == parent).map(|i| (at, i)));
            }
        }
        match parent {
            Some(p) => at = p,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Applies `paths` (old state `old`, new state `new`) to `old_idx` and
/// renders the pages they touch into `pass`, the index included. Returns
/// false when only a full render will do.
#[allow(clippy::too_many_arguments)]
fn incremental(
    store: &Store,
    horizon: Option<Oid>,
    old_idx: Index,
    old: &dyn Source,
    new: &dyn Source,
    paths: &[String],
    cfg: &MirrorConfig,
    pass: &mut Pass<'_>,
) -> Result<bool> {
    let mut old_idx = old_idx;
    let memory_changed = paths
        .iter()
        .any(|p| layout::schema_for(p) == Some("memory_item"));
    if memory_changed && !old_idx.load_shards(pass.pages)? {
        return Ok(false);
    }
    let mut idx = old_idx.clone();
    let mut dirty = Dirty::default();
    if !apply_changes(&mut idx, old, new, paths, &mut dirty)? {
        return Ok(false);
    }
    advance_events(&mut idx, store, horizon, cfg.recent_events)?;
    // Runs whose timeline gained events.
    for (run, events) in &idx.run_events {
        if idx.runs.contains_key(run) && old_idx.run_events.get(run) != Some(events) {
            dirty.runs.insert(run.clone());
        }
    }
    let old_registry = read_registry(old)?;
    let registry = read_registry(new)?;
    let r = Renderer {
        src: new,
        items: Default::default(),
        cfg,
        idx: &idx,
        registry: &registry,
        problems: &[],
    };
    render_dirty(&r, &old_idx, &old_registry, &dirty, pass)?;
    put_index(&mut pass.out, &idx);
    Ok(true)
}

/// Drops writes that would not change a page.
fn finish(pass: Pass<'_>) -> Result<Changes> {
    let mut out = Changes::new();
    for (path, content) in pass.out {
        let current = pass.pages.read(&path)?;
        if current != content {
            out.insert(path, content);
        }
    }
    Ok(out)
}

/// Mirror pages are never hand-edited: a page the watcher rewrote in the work
/// tree goes back to the tip's version, so the commit may replace it.
fn reset_worktree_pages(
    store: &Store,
    snap: &Snapshot<'_>,
    workdir: &Path,
    pages: &Changes,
) -> Result<()> {
    for path in pages.keys() {
        let full = workdir.join(path);
        let on_disk = std::fs::read(&full).ok();
        let at_tip = snap.read(path)?;
        if on_disk == at_tip {
            continue;
        }
        match at_tip {
            Some(bytes) => crate::store::write_atomic(&full, &bytes, false)?,
            None => match std::fs::remove_file(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", full, e)),
            },
        }
    }
    let _ = store;
    Ok(())
}

fn extend_untracked(
    store: &Store,
    snap: &Snapshot<'_>,
    base: &dyn Source,
    changes: &mut Changes,
    cfg: &MirrorConfig,
) -> Result<()> {
    // Pages leave git and `mirror/` is ignored from now on.
    let mut leaving = Vec::new();
    if let Some(tip) = snap.commit() {
        for (path, _, _) in store.walk_files(tip, DIR)? {
            leaving.push(path);
        }
    }
    let ignore = snap.read(layout::GITIGNORE)?.unwrap_or_default();
    let ignored = String::from_utf8_lossy(&ignore)
        .lines()
        .any(|l| l.trim() == "mirror/");
    if !leaving.is_empty() || !ignored {
        for p in leaving {
            changes.insert(p, None);
        }
        let mut text = String::from_utf8_lossy(&ignore).into_owned();
        if !ignored {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("mirror/\n");
            changes.insert(layout::GITIGNORE.into(), Some(text.into_bytes()));
        }
        // The pages come back in the work tree with the next write or `cairn mirror`.
        return Ok(());
    }
    let Some(workdir) = store.workdir() else {
        return Ok(());
    };
    let pages = WorkTreeSource::new(workdir);
    let new = Overlay::new(base, changes);
    let out = plan(
        store,
        snap.commit(),
        base,
        &new,
        &pages,
        changes,
        cfg,
        false,
    )?;
    write_pages(workdir, &out)
}

/// Writes page changes into a work tree.
pub fn write_pages(workdir: &Path, pages: &Changes) -> Result<()> {
    for (path, content) in pages {
        let full = workdir.join(path);
        match content {
            Some(bytes) => crate::store::write_atomic(&full, bytes, false)?,
            None => match std::fs::remove_file(&full) {
                Ok(()) => {
                    let mut dir = full.parent();
                    while let Some(d) = dir {
                        if d == workdir || std::fs::remove_dir(d).is_err() {
                            break;
                        }
                        dir = d.parent();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", full, e)),
            },
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Whole-store operations.

/// Renders every page of `src` from scratch: path → bytes, `mirror/index.json`
/// and `mirror/shards.json` included.
///
/// `horizon` is the newest commit whose event the pages show.
pub fn render_all(
    store: &Store,
    src: &dyn Source,
    horizon: Option<Oid>,
    cfg: &MirrorConfig,
    problems: &[Problem],
) -> Result<BTreeMap<String, Vec<u8>>> {
    let empty = EmptySource;
    let templates = Templates::load(src)?;
    let mut pass = Pass {
        templates: &templates,
        pages: &empty,
        out: Changes::new(),
    };
    let idx = render_everything(src, store, horizon, cfg, &mut pass, problems)?;
    put_index(&mut pass.out, &idx);
    Ok(pass
        .out
        .into_iter()
        .filter_map(|(p, c)| c.map(|c| (p, c)))
        .collect())
}

struct EmptySource;

impl Source for EmptySource {
    fn read(&self, _: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn list(&self, _: &str) -> Result<Vec<(String, bool)>> {
        Ok(Vec::new())
    }
}

/// The horizon of the pages a commit holds: its first parent.
fn horizon_of(store: &Store, commit: Oid) -> Result<Option<Oid>> {
    Ok(store.commit_info(commit)?.parents.first().copied())
}

/// How the pages at a place differ from a fresh render.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Pages whose bytes differ from a fresh render.
    pub differ: Vec<String>,
    /// Pages a fresh render has and the store lacks.
    pub missing: Vec<String>,
    /// Files under `mirror/` a fresh render would not produce.
    pub extra: Vec<String>,
}

impl CheckReport {
    /// Whether the mirror matches a fresh render.
    pub fn clean(&self) -> bool {
        self.differ.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

fn compare(fresh: &BTreeMap<String, Vec<u8>>, pages: &dyn Source) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut existing = Vec::new();
    walk(pages, DIR, &mut existing)?;
    for path in &existing {
        if !fresh.contains_key(path) {
            report.extra.push(path.clone());
        }
    }
    for (path, bytes) in fresh {
        match pages.read(path)? {
            Some(b) if &b == bytes => {}
            Some(_) => report.differ.push(path.clone()),
            None => report.missing.push(path.clone()),
        }
    }
    Ok(report)
}

/// Compares the mirror at the tip (in git, or in the work tree when it is
/// untracked) with a fresh render. Nothing is written.
pub fn check(store: &Store) -> Result<CheckReport> {
    let snap = store.snapshot()?;
    let cfg = snap.config().mirror.clone();
    let tip = store.require_tip()?;
    let src = GitSource::new(store, Some(tip));
    if !cfg.enabled {
        return Ok(CheckReport::default());
    }
    if cfg.tracked {
        let fresh = render_all(store, &src, horizon_of(store, tip)?, &cfg, &[])?;
        compare(&fresh, &src)
    } else {
        let Some(workdir) = store.workdir() else {
            return Ok(CheckReport::default());
        };
        // Untracked pages were last rendered by the commit at the tip.
        let fresh = render_all(store, &src, horizon_of(store, tip)?, &cfg, &[])?;
        compare(&fresh, &WorkTreeSource::new(workdir))
    }
}

/// What [`regenerate`] did.
#[derive(Debug, Clone)]
pub struct Regenerated {
    /// The pages written or removed.
    pub pages: Vec<String>,
    /// The commit that holds them (tracked mirrors that changed).
    pub commit: Option<Committed>,
}

/// Regenerates every page from scratch: one commit when anything differs
/// (untracked mirrors are written to the work tree, no commit).
pub fn regenerate(store: &Store) -> Result<Regenerated> {
    let snap = store.snapshot()?;
    let cfg = snap.config().mirror.clone();
    if !cfg.enabled {
        return Ok(Regenerated {
            pages: Vec::new(),
            commit: None,
        });
    }
    let report = check(store)?;
    let mut pages: Vec<String> = report
        .differ
        .iter()
        .chain(&report.missing)
        .chain(&report.extra)
        .cloned()
        .collect();
    pages.sort();
    if report.clean() {
        return Ok(Regenerated {
            pages,
            commit: None,
        });
    }
    if !cfg.tracked {
        let tip = store.require_tip()?;
        let Some(workdir) = store.workdir() else {
            return Ok(Regenerated {
                pages: Vec::new(),
                commit: None,
            });
        };
        let src = GitSource::new(store, Some(tip));
        let fresh = render_all(store, &src, horizon_of(store, tip)?, &cfg, &[])?;
        let wt = WorkTreeSource::new(workdir);
        let mut out = Changes::new();
        for p in &pages {
            out.insert(p.clone(), fresh.get(p).cloned());
        }
        let _ = wt;
        write_pages(workdir, &out)?;
        return Ok(Regenerated {
            pages,
            commit: None,
        });
    }
    let committed = store.transact(None, |snap| {
        let base = GitSource::new(store, snap.commit());
        let fresh = render_all(store, &base, snap.commit(), &cfg, &[])?;
        let mut changes = Changes::new();
        let mut existing = Vec::new();
        walk(&base, DIR, &mut existing)?;
        for p in existing {
            if !fresh.contains_key(&p) {
                changes.insert(p, None);
            }
        }
        for (p, bytes) in &fresh {
            if base.read(p)?.as_deref() != Some(bytes.as_slice()) {
                changes.insert(p.clone(), Some(bytes.clone()));
            }
        }
        if let Some(workdir) = store.workdir() {
            reset_worktree_pages(store, snap, workdir, &changes)?;
        }
        Ok(Mutation {
            changes,
            event: EventDraft::new(EventType::MirrorRegenerated, "regenerate the mirror")
                .payload(json!({"mirror": {"pages": pages.len()}})),
            tags: Vec::new(),
        })
    })?;
    Ok(Regenerated {
        pages,
        commit: Some(committed),
    })
}

// ---------------------------------------------------------------------------
// The watcher's incremental state over a work tree.

/// A work tree's mirror kept current from file changes (the engine of `cairn watch`).
///
/// It remembers the last valid bytes of every canonical file it has seen, so
/// a file that turns invalid leaves the pages built from its last good
/// version in place, and a change can be applied as a delta.
pub struct WorkTreeMirror {
    root: PathBuf,
    cfg: MirrorConfig,
    /// Last valid bytes of canonical files under runs/, memory/, state/, registry.
    good: BTreeMap<String, Vec<u8>>,
    problems: BTreeMap<String, Problem>,
    idx: Index,
}

/// A canonical file the watcher cares about.
pub fn is_watched(path: &str) -> bool {
    !path.starts_with("mirror/")
        && (layout::schema_for(path).is_some() || path.starts_with(&format!("{TEMPLATE_DIR}/")))
}

/// A source that serves remembered good bytes.
struct GoodSource<'a> {
    good: &'a BTreeMap<String, Vec<u8>>,
    wt: WorkTreeSource,
}

impl Source for GoodSource<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if layout::schema_for(path).is_some() && path != layout::CONFIG {
            return Ok(self.good.get(path).cloned());
        }
        self.wt.read(path)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let prefix = format!("{dir}/");
        let mut entries: BTreeMap<String, bool> = BTreeMap::new();
        for path in self.good.range(prefix.clone()..) {
            let Some(rest) = path.0.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((sub, _)) => entries.insert(sub.to_string(), true),
                None => entries.insert(rest.to_string(), false),
            };
        }
        if dir == DIR || dir.starts_with("mirror/") || dir.starts_with(TEMPLATE_DIR) {
            return self.wt.list(dir);
        }
        Ok(entries.into_iter().collect())
    }
}

impl WorkTreeMirror {
    /// Scans the work tree of `store` and renders every page that differs.
    /// Returns the engine and the pages written.
    pub fn start(store: &Store) -> Result<(WorkTreeMirror, Vec<String>)> {
        let root = store.workdir().ok_or_else(|| Error::Policy {
            rule: "WORK_TREE_REQUIRED",
            message: "the watcher needs a work tree; this store is bare".into(),
        })?;
        let mut m = WorkTreeMirror {
            root: root.to_path_buf(),
            cfg: store.config()?.mirror,
            good: BTreeMap::new(),
            problems: BTreeMap::new(),
            idx: Index::default(),
        };
        let written = m.rescan(store)?;
        Ok((m, written))
    }

    /// The problems currently reported.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems.values().cloned().collect()
    }

    fn horizon(store: &Store) -> Result<Option<Oid>> {
        match store.tip()? {
            Some(t) => horizon_of(store, t),
            None => Ok(None),
        }
    }

    /// Reads one canonical file: remembers it when valid, reports it when not.
    fn load(&mut self, path: &str) -> Result<()> {
        let wt = WorkTreeSource::new(&self.root);
        match wt.read(path)? {
            None => {
                self.good.remove(path);
                self.problems.remove(path);
            }
            Some(bytes) => match validate_file(path, &bytes) {
                Ok(()) => {
                    self.good.insert(path.to_string(), bytes);
                    self.problems.remove(path);
                }
                Err(e) => {
                    self.problems
                        .insert(path.to_string(), Problem::from_error(path, &e));
                }
            },
        }
        Ok(())
    }

    /// Forgets everything and renders from scratch (start, dropped events, bursts).
    pub fn rescan(&mut self, store: &Store) -> Result<Vec<String>> {
        self.cfg = store.config()?.mirror;
        let wt = WorkTreeSource::new(&self.root);
        let mut files = Vec::new();
        for dir in [layout::RUNS, layout::MEMORY, "state", "registry"] {
            walk(&wt, dir, &mut files)?;
        }
        let keep: BTreeSet<&String> = files.iter().collect();
        self.good.retain(|p, _| keep.contains(p));
        self.problems.retain(|p, _| keep.contains(p));
        for path in &files {
            if layout::schema_for(path).is_some() {
                self.load(path)?;
            }
        }
        let src = GoodSource {
            good: &self.good,
            wt: WorkTreeSource::new(&self.root),
        };
        let pages = WorkTreeSource::new(&self.root);
        let templates = Templates::load(&src)?;
        let mut pass = Pass {
            templates: &templates,
            pages: &pages,
            out: Changes::new(),
        };
        let problems = self.problems();
        if !self.cfg.enabled {
            return Ok(Vec::new());
        }
        self.idx = render_everything(
            &src,
            store,
            Self::horizon(store)?,
            &self.cfg,
            &mut pass,
            &problems,
        )?;
        put_index(&mut pass.out, &self.idx);
        let out = finish(pass)?;
        write_pages(&self.root, &out)?;
        Ok(out.into_keys().collect())
    }

    /// Applies changed work-tree paths and rewrites the pages they affect.
    pub fn update(&mut self, store: &Store, paths: &BTreeSet<String>) -> Result<Vec<String>> {
        let paths: Vec<String> = paths.iter().filter(|p| is_watched(p)).cloned().collect();
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        if paths
            .iter()
            .any(|p| p == layout::CONFIG || p.starts_with(TEMPLATE_DIR))
        {
            return self.rescan(store);
        }
        let old_good = self.good.clone_subset(&paths);
        for p in &paths {
            self.load(p)?;
        }
        if !self.cfg.enabled {
            return Ok(Vec::new());
        }
        let old = MapSource(&old_good);
        let new = GoodSource {
            good: &self.good,
            wt: WorkTreeSource::new(&self.root),
        };
        let pages = WorkTreeSource::new(&self.root);
        let templates = Templates::load(&new)?;
        let mut pass = Pass {
            templates: &templates,
            pages: &pages,
            out: Changes::new(),
        };
        let old_idx = self.idx.clone();
        let mut idx = self.idx.clone();
        let mut dirty = Dirty::default();
        let old_registry = read_registry(&old)
            .or_else(|_| read_registry(&new))
            .unwrap_or_default();
        let old_registry = if paths.iter().any(|p| p == layout::REGISTRY) {
            old_registry
        } else {
            read_registry(&new).unwrap_or_default()
        };
        if !apply_changes(&mut idx, &old, &new, &paths, &mut dirty)? {
            return self.rescan(store);
        }
        advance_events(
            &mut idx,
            store,
            Self::horizon(store)?,
            self.cfg.recent_events,
        )?;
        let registry = read_registry(&new).unwrap_or_default();
        let problems = self.problems();
        let r = Renderer {
            src: &new,
            items: Default::default(),
            cfg: &self.cfg,
            idx: &idx,
            registry: &registry,
            problems: &problems,
        };
        render_dirty(&r, &old_idx, &old_registry, &dirty, &mut pass)?;
        put_index(&mut pass.out, &idx);
        let out = finish(pass)?;
        write_pages(&self.root, &out)?;
        self.idx = idx;
        Ok(out.into_keys().collect())
    }
}

trait Subset {
    fn clone_subset(&self, keys: &[String]) -> BTreeMap<String, Vec<u8>>;
}

impl Subset for BTreeMap<String, Vec<u8>> {
    fn clone_subset(&self, keys: &[String]) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = keys
            .iter()
            .filter_map(|k| self.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        if let Some(r) = self.get(layout::REGISTRY) {
            out.insert(layout::REGISTRY.into(), r.clone());
        }
        out
    }
}

/// Old versions of a few files, for deltas.
struct MapSource<'a>(&'a BTreeMap<String, Vec<u8>>);

impl Source for MapSource<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(path).cloned())
    }
    fn list(&self, _: &str) -> Result<Vec<(String, bool)>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_index, put_index, Index, MapSource, Shards, INDEX, SHARDS};
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
        let mut idx = Index {
            version: super::INDEX_VERSION,
            shards_loaded: true,
            ..Default::default()
        };
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
    fn a_format_2_index_with_inline_counts_is_still_read() {
        let idx = scanned();
        let mut v2 = serde_json::to_value(&idx).unwrap();
        v2["version"] = 2.into();
        for (key, g) in &idx.groups {
            v2["groups"][key]["shards"] = serde_json::to_value(&g.shards).unwrap();
        }
        let back = parse_index(&serde_json::to_vec(&v2).unwrap()).unwrap();
        assert_eq!(back.version, super::INDEX_VERSION);
        assert!(back.shards_loaded, "the next write moves the counts out");
        assert_eq!(back.groups, idx.groups);
        v2["version"] = 1.into();
        assert!(parse_index(&serde_json::to_vec(&v2).unwrap()).is_none());
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
