//! Pages in a work tree: writing and removing them, putting back pages the
//! watcher rewrote before a commit replaces them, untracked mirrors (pages
//! kept out of git, rendered into the work tree on each write), and
//! [`WorkTreeMirror`], the watcher's incremental engine.
//!
//! Invariant: mirror pages are never hand-edited; the work tree's pages are
//! what a render from the canonical files gives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::Oid;

use super::cache::ItemCache;
use super::index::{advance_events, put_index, Index};
use super::plan::{
    apply_changes, finish, plan, prepare_queue, render_dirty, render_everything, Dirty,
};
use super::render::{Pass, Renderer, Templates};
use super::source::{read_registry, walk, GoodSource, MapSource, Overlay, Source, WorkTreeSource};
use super::{horizon_of, is_watched, validate_file, Problem, DIR, TEMPLATE_DIR};
use crate::config::MirrorConfig;
use crate::error::{Error, Result};
use crate::layout;
use crate::store::{Changes, Snapshot, Store};

/// Mirror pages are never hand-edited: a page the watcher rewrote in the work
/// tree goes back to the tip's version, so the commit may replace it.
pub(super) fn reset_worktree_pages(
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

pub(super) fn extend_untracked(
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
        if !apply_changes(&mut idx, &old, &new, &pages, &paths, &mut dirty)?
            || !prepare_queue(&mut idx, &old_idx, &pages, &self.cfg, &dirty)?
        {
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
        // The work tree names no blob ids: nothing to look up in the item cache.
        let cache = ItemCache::off();
        let r = Renderer {
            src: &new,
            items: Default::default(),
            cache: &cache,
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
