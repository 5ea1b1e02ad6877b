//! Full and incremental passes: a scan that builds the index from scratch
//! and renders every page, the deltas that update the index from the files
//! a change touches and render only the pages they dirty, and the plan that
//! picks between them for a write.
//!
//! Invariant: an incremental pass gives the same bytes as a full one; when
//! it cannot (no usable index, templates or config changed, a deleted
//! episode, missing shard counts) the plan falls back to a full render.

use std::collections::{BTreeMap, BTreeSet};

use git2::Oid;

use super::cache::ItemCache;
use super::index::{
    advance_events, candidate_files, family_pages, group_key, level_of, load_index, parse_index,
    put_index, queue_pages, Index, CHAIN_WALK,
};
use super::render::{read_item, Items, Pass, Renderer, Templates};
use super::source::{
    read_registry, read_typed, run_ids, walk, yaml_files, Cached, GitSource, Source,
};
use super::{run_page, Problem, DIR, FULL_RENDERS, INDEX, README, SHARDS, TEMPLATE_DIR};
use crate::config::MirrorConfig;
use crate::episode::Episode;
use crate::error::Result;
use crate::layout;
use crate::memory::ItemStatus;
use crate::project::Registry;
use crate::store::{Changes, Store};
use crate::working_set::WorkingSet;

/// Builds the index of a state from scratch, and the problems found on the
/// way; the memory items it parsed go to `items` for the pages.
fn scan(
    src: &dyn Source,
    cache: &ItemCache,
    problems: &mut Vec<Problem>,
    items: &mut Items,
) -> Result<Index> {
    let mut idx = Index::new();
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
        let r = cache.item(src, &path).map(|item| {
            if let Some(item) = &item {
                idx.apply_item(&path, item, 1);
            }
            items.insert(path.clone(), item.map(std::sync::Arc::new));
        });
        keep(&path, r)?;
    }
    for path in yaml_files(src, "state")? {
        let name = path["state/".len()..].trim_end_matches(".yaml").to_string();
        idx.states.insert(name);
    }
    let mut files = Vec::new();
    walk(src, layout::CONFLICTS, &mut files)?;
    for path in files {
        if layout::schema_for(&path) != Some("conflict_record") {
            continue;
        }
        let r = read_typed::<crate::sync::Conflict>(src, &path).map(|c| {
            if let Some(c) = c {
                idx.apply_conflict(&c.conflict_id.clone(), Some(&c));
            }
        });
        keep(&path, r)?;
    }
    idx.scanned();
    Ok(idx)
}

/// Renders every page of a state into `pass`, deleting pages that should not exist.
pub(super) fn render_everything(
    src: &dyn Source,
    store: &Store,
    horizon: Option<Oid>,
    cfg: &MirrorConfig,
    pass: &mut Pass<'_>,
    extra_problems: &[Problem],
) -> Result<Index> {
    let mut problems = extra_problems.to_vec();
    let mut items = Items::new();
    let cache = ItemCache::under(store.local_dir());
    let mut idx = scan(src, &cache, &mut problems, &mut items)?;
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
        cache: &cache,
        cfg,
        idx: &idx,
        registry: &registry,
        problems: &problems,
    };
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    r.readme(pass)?;
    wanted.insert(README.into());
    r.queue(pass, None)?;
    wanted.extend(queue_pages(&idx, cfg.max_page_items));
    wanted.extend(candidate_files(&idx));
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
    cache.flush();
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

/// What changed pages a state change needs.
#[derive(Default)]
pub(super) struct Dirty {
    readme: bool,
    queue: bool,
    /// Id shards whose candidates changed (their queue parts, when split).
    queue_shards: BTreeSet<String>,
    runs: BTreeSet<String>,
    projects: BTreeSet<String>,
    all_projects: bool,
    /// Group key → dirty shards (the whole family when a level changes).
    groups: BTreeMap<String, BTreeSet<String>>,
}

/// Applies the changes of `paths` (old state `old`, new state `new`) to `idx`
/// and notes the pages they touch; derived lists the changes need are read
/// from `pages`. Returns false when only a full render will do.
pub(super) fn apply_changes(
    idx: &mut Index,
    old: &dyn Source,
    new: &dyn Source,
    pages: &dyn Source,
    paths: &[String],
    dirty: &mut Dirty,
) -> Result<bool> {
    idx.start_changes();
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
                    let shard = layout::shard(&item.id);
                    if item.status == ItemStatus::Candidate {
                        if !idx.load_candidates(pages, &shard)? {
                            return Ok(false);
                        }
                        dirty.queue = true;
                        dirty.queue_shards.insert(shard.clone());
                    }
                    dirty.groups.entry(key).or_default().insert(shard);
                    idx.apply_item(path, item, sign);
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
            Some("conflict_record") => {
                let id = path
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(".yaml")
                    .to_string();
                let record: Option<crate::sync::Conflict> = read_typed(new, path)?;
                idx.apply_conflict(&id, record.as_ref());
                dirty.readme = true;
                dirty.queue = true;
            }
            _ => {}
        }
    }
    Ok(true)
}

/// Renders the pages `dirty` names from the updated index.
pub(super) fn render_dirty(
    r: &Renderer<'_>,
    old_idx: &Index,
    old_registry: &Registry,
    dirty: &Dirty,
    pass: &mut Pass<'_>,
) -> Result<()> {
    r.readme(pass)?;
    if dirty.queue {
        let max = r.cfg.max_page_items;
        let same_layout = old_idx.queue_split(max) == r.idx.queue_split(max);
        r.queue(pass, same_layout.then_some(&dirty.queue_shards))?;
        let now: BTreeSet<String> = queue_pages(r.idx, max).into_iter().collect();
        for p in queue_pages(old_idx, max) {
            if !now.contains(&p) {
                pass.delete(&p)?;
            }
        }
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

/// The page changes for moving from `old` to `new` (`changes` are the canonical paths).
///
/// `horizon` is the commit the change applies to (the tip); `pages` holds
/// the current pages. When `pages` is the tip's tree (`catch_up`) and the
/// index there was not written by the tip itself (a hand commit, a pull
/// came in between), the pass starts from the commit that wrote it and
/// applies every canonical change since then as a delta.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
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
    if !apply_changes(&mut idx, old, new, pass.pages, paths, &mut dirty)? {
        return Ok(false);
    }
    if !prepare_queue(&mut idx, &old_idx, pass.pages, cfg, &dirty)? {
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
    let cache = ItemCache::under(store.local_dir());
    let r = Renderer {
        src: new,
        items: Default::default(),
        cache: &cache,
        cfg,
        idx: &idx,
        registry: &registry,
        problems: &[],
    };
    render_dirty(&r, &old_idx, &old_registry, &dirty, pass)?;
    cache.flush();
    put_index(&mut pass.out, &idx);
    Ok(true)
}

/// Reads the candidate lists the queue pages `dirty` names need. False when
/// one is unusable (only a full render will do).
pub(super) fn prepare_queue(
    idx: &mut Index,
    old_idx: &Index,
    pages: &dyn Source,
    cfg: &MirrorConfig,
    dirty: &Dirty,
) -> Result<bool> {
    if !dirty.queue {
        return Ok(true);
    }
    let max = cfg.max_page_items;
    idx.load_for_queue(pages, max, old_idx.queue_split(max), &dirty.queue_shards)
}

/// Drops writes that would not change a page.
pub(super) fn finish(pass: Pass<'_>) -> Result<Changes> {
    let mut out = Changes::new();
    for (path, content) in pass.out {
        let current = pass.pages.read(&path)?;
        if current != content {
            out.insert(path, content);
        }
    }
    Ok(out)
}
