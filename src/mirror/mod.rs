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
//! canonical files to edit instead and a sha256 of the page (output
//! version, template, edit hints and rendered text): a page whose checksum
//! is unchanged is not rewritten.
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
//! - Parsed memory items are cached beside the store (`cache`, under its
//!   local folder, never committed), keyed by the git blob id they were
//!   parsed from: a write that dirties many pages (a merge, an import) does
//!   not parse every item they show again, and a cache entry can never be
//!   stale. The cache changes speed only, never bytes.
//!
//! The code is split along its seams:
//! - `source`: the [`Source`] trait, the places pages are rendered from
//!   (git commits, the work tree, overlays, caches) and the helpers that
//!   read and parse canonical files through it;
//! - `index`: the derived aggregate index (`mirror/index.json`,
//!   `mirror/shards.json`), its deltas, the memory groups' page naming and
//!   the recent events;
//! - `render`: templates, the page banner and checksum, and the renderer of
//!   each kind of page;
//! - `plan`: full and incremental passes, and the plan that picks between
//!   them for a write;
//! - `cache`: the parsed-item cache;
//! - `worktree`: pages in a work tree: untracked mirrors, resetting pages
//!   the watcher rewrote, and [`WorkTreeMirror`], the watcher's engine.

mod cache;
mod index;
mod plan;
mod render;
mod source;
mod worktree;

use std::collections::BTreeMap;

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{MirrorConfig, StoreConfig};
use crate::error::{Error, Result};
use crate::ledger::{EventDraft, EventType};
use crate::store::{Changes, Committed, Mutation, Snapshot, Store};
use crate::{layout, schema};

pub use source::{GitSource, Overlay, Source, WorkTreeSource};
pub use worktree::{write_pages, WorkTreeMirror};

use index::{put_index, run_link};
use plan::{plan, render_everything};
use render::{Pass, Templates};
use source::{parse_valid, walk, Cached, EmptySource};
use worktree::{extend_untracked, reset_worktree_pages};

/// The folder of the mirror.
pub const DIR: &str = "mirror";
/// The derived aggregates the incremental renderer carries from commit to commit.
pub const INDEX: &str = "mirror/index.json";
/// The active-item counts of the memory groups by id shard, which decide how
/// a group's pages split. Kept apart from [`INDEX`] because at scale they
/// are most of its bytes and only a memory change moves them: a write that
/// changes no memory item does not read or rewrite this file.
pub const SHARDS: &str = "mirror/shards.json";
/// Where the candidates are listed, one file an id shard (derived, like [`INDEX`]).
pub const CANDIDATES: &str = "mirror/candidates";
/// The store overview page.
pub const README: &str = "mirror/README.md";
/// The review queue page.
pub const QUEUE: &str = "mirror/queue.md";
/// Where a store keeps its own templates.
pub const TEMPLATE_DIR: &str = "templates/mirror";
/// Bumped whenever the shape of the output changes (with [`INDEX_VERSION`],
/// so that the next write renders every page again).
const VERSION: u32 = 3;
/// The format of [`INDEX`]. Format 4 moved the candidate list out to
/// [`CANDIDATES`]; format 5 marks the banner's page checksum (it was a
/// hash of the inputs). Older formats are not read (the next write renders
/// the mirror from scratch once).
const INDEX_VERSION: u32 = 5;
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

/// The page of a run: `mirror/runs/<shard>/<run_id>.md`, sharded like
/// `runs/` so that no folder of the mirror grows without bound.
pub fn run_page(run_id: &str) -> String {
    format!("{DIR}/{}", run_link(run_id))
}

/// Checks a canonical file the way a commit would: parse and schema.
pub fn validate_file(path: &str, bytes: &[u8]) -> Result<()> {
    parse_valid(path, bytes).map(|_| ())
}

/// A canonical file the watcher cares about.
pub fn is_watched(path: &str) -> bool {
    !path.starts_with("mirror/")
        && (layout::schema_for(path).is_some() || path.starts_with(&format!("{TEMPLATE_DIR}/")))
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
    crate::failpoint::failpoint!("mirror::derive");
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
