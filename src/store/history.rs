//! Commits and what they changed: ancestry, history walks, and tree diffs
//! that descend only into subtrees whose ids differ, so their cost follows
//! the change and not the size of the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::{Oid, Repository};

use super::{not_found_to_none, Store};
use crate::error::{Error, Result};
use crate::event::{build_event_from, parse_message, CommitInfo, Event};

impl Store {
    /// The ledger event of one commit: its message's trailers, or a
    /// MANUAL_EDIT event for a commit made by hand.
    pub fn event_of(&self, commit: Oid) -> Result<Event> {
        let info = self.commit_info(commit)?;
        let parsed = parse_message(&info.message);
        let paths = self.changed_paths(commit)?;
        Ok(build_event_from(&info, &parsed, paths))
    }

    /// One commit's ledger-relevant fields.
    pub fn commit_info(&self, id: Oid) -> Result<CommitInfo> {
        let c = self
            .repo
            .find_commit(id)
            .map_err(|e| Error::git(format!("read commit {id}"), e))?;
        let author = String::from_utf8_lossy(c.author().name_bytes()).into_owned();
        Ok(CommitInfo {
            id,
            parents: c.parent_ids().collect(),
            message: String::from_utf8_lossy(c.message_bytes()).into_owned(),
            author,
            time: c.time().seconds(),
        })
    }

    /// Commits reachable from `from`, newest first (topological), stopping
    /// before `until` and its ancestors when given.
    pub fn history(&self, from: Oid, until: Option<Oid>) -> Result<Vec<Oid>> {
        let mut walk = self.repo.revwalk().map_err(|e| Error::git("revwalk", e))?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(|e| Error::git("revwalk", e))?;
        walk.push(from).map_err(|e| Error::git("revwalk", e))?;
        if let Some(u) = until {
            walk.hide(u).map_err(|e| Error::git("revwalk", e))?;
        }
        walk.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::git("revwalk", e))
    }

    /// At most `limit` commits reachable from `from`, newest first by commit
    /// time. Unlike [`Store::history`] it never walks the whole history
    /// (no topological sort): its cost is bounded by `limit`.
    pub fn recent_history(&self, from: Oid, limit: usize) -> Result<Vec<Oid>> {
        let mut walk = self.repo.revwalk().map_err(|e| Error::git("revwalk", e))?;
        walk.set_sorting(git2::Sort::TIME)
            .map_err(|e| Error::git("revwalk", e))?;
        walk.push(from).map_err(|e| Error::git("revwalk", e))?;
        walk.take(limit)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::git("revwalk", e))
    }

    /// The first commit of the history behind `from` (following first
    /// parents): the store's root, which every clone shares.
    pub fn root_commit(&self, from: Oid) -> Result<Oid> {
        let mut walk = self.repo.revwalk().map_err(|e| Error::git("revwalk", e))?;
        walk.push(from).map_err(|e| Error::git("revwalk", e))?;
        walk.simplify_first_parent()
            .map_err(|e| Error::git("revwalk", e))?;
        let mut last = from;
        for id in walk {
            last = id.map_err(|e| Error::git("revwalk", e))?;
        }
        Ok(last)
    }

    /// The best common ancestor of two commits, if they share history.
    pub fn merge_base(&self, a: Oid, b: Oid) -> Result<Option<Oid>> {
        not_found_to_none(self.repo.merge_base(a, b))
            .map_err(|e| Error::git(format!("merge base of {a} and {b}"), e))
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(descendant, ancestor)
            .map_err(|e| Error::git("ancestry", e))
    }

    /// The paths a commit changed against its first parent, sorted.
    pub fn changed_paths(&self, id: Oid) -> Result<Vec<String>> {
        let c = self
            .repo
            .find_commit(id)
            .map_err(|e| Error::git(format!("read commit {id}"), e))?;
        let parent = c.parent_id(0).ok();
        Ok(self
            .tree_changes(parent, id)?
            .into_iter()
            .map(|c| c.path)
            .collect())
    }

    /// Paths under `prefix` that differ between two commits (`old` = `None`
    /// means the empty tree), sorted.
    pub fn diff_paths(&self, old: Option<Oid>, new: Oid, prefix: &str) -> Result<Vec<String>> {
        let at = |commit: Option<Oid>| -> Result<Option<(Oid, i32)>> {
            let Some(commit) = commit else {
                return Ok(None);
            };
            let tree = self.tree_of(commit)?;
            if prefix.is_empty() {
                return Ok(Some((tree.id(), 0o040000)));
            }
            let entry = not_found_to_none(tree.get_path(Path::new(prefix)))
                .map_err(|e| Error::git(format!("look up {prefix} at {commit}"), e))?;
            Ok(entry.map(|e| (e.id(), e.filemode())))
        };
        let mut out = Vec::new();
        diff_entries(&self.repo, at(old)?, at(Some(new))?, prefix, &mut out)?;
        let mut paths: Vec<String> = out.into_iter().map(|c| c.path).collect();
        paths.sort();
        Ok(paths)
    }

    /// The paths that differ between two commits (`old` = `None`: the empty tree), sorted.
    pub fn tree_changes(&self, old: Option<Oid>, new: Oid) -> Result<Vec<PathChange>> {
        let root = |c: Option<Oid>| -> Result<Option<(Oid, i32)>> {
            Ok(match c {
                Some(c) => Some((self.tree_of(c)?.id(), 0o040000)),
                None => None,
            })
        };
        let mut out = Vec::new();
        diff_entries(&self.repo, root(old)?, root(Some(new))?, "", &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The newest commit reachable from `from` that changed `path` (against
    /// its first parent), looking at most `limit` commits back.
    pub fn last_change(&self, from: Oid, path: &str, limit: usize) -> Result<Option<Oid>> {
        if path.is_empty() || Path::new(path).is_absolute() {
            // Not a path in the tree (a finding about the repository itself).
            return Ok(None);
        }
        let mut walk = self.repo.revwalk().map_err(|e| Error::git("revwalk", e))?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL)
            .map_err(|e| Error::git("revwalk", e))?;
        walk.push(from).map_err(|e| Error::git("revwalk", e))?;
        walk.simplify_first_parent()
            .map_err(|e| Error::git("revwalk", e))?;
        for id in walk.take(limit) {
            let id = id.map_err(|e| Error::git("revwalk", e))?;
            let c = self
                .repo
                .find_commit(id)
                .map_err(|e| Error::git(format!("read commit {id}"), e))?;
            let here = self.blob_id(id, path)?;
            let before = match c.parent_id(0) {
                Ok(p) => self.blob_id(p, path)?,
                Err(_) => None,
            };
            if here != before {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

/// One path that differs between two trees, or between a tree and a git index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// The path, relative to the store root.
    pub path: String,
    /// The blob before, if the path existed.
    pub old: Option<Oid>,
    /// The blob after and whether it is a regular file (not a symlink or a
    /// submodule), if the path exists after.
    pub new: Option<(Oid, bool)>,
}

const TREE_MODE: i32 = 0o040000;

/// The entries of a tree by name: (id, file mode).
fn tree_entries(repo: &Repository, id: Option<Oid>) -> Result<BTreeMap<String, (Oid, i32)>> {
    let mut out = BTreeMap::new();
    if let Some(id) = id {
        let tree = repo
            .find_tree(id)
            .map_err(|e| Error::git(format!("read tree {id}"), e))?;
        for e in tree.iter() {
            let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
            out.insert(name, (e.id(), e.filemode()));
        }
    }
    Ok(out)
}

/// Compares two tree entries at `path` (trees, blobs or missing), descending
/// only into subtrees whose ids differ: the cost follows the change, not the
/// size of the store.
fn diff_entries(
    repo: &Repository,
    old: Option<(Oid, i32)>,
    new: Option<(Oid, i32)>,
    path: &str,
    out: &mut Vec<PathChange>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let is_tree = |e: Option<(Oid, i32)>| e.filter(|(_, m)| *m == TREE_MODE).map(|(id, _)| id);
    let (old_tree, new_tree) = (is_tree(old), is_tree(new));
    if old_tree.is_some() || new_tree.is_some() {
        let (a, b) = (tree_entries(repo, old_tree)?, tree_entries(repo, new_tree)?);
        let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for name in names {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            diff_entries(
                repo,
                a.get(name).copied(),
                b.get(name).copied(),
                &child,
                out,
            )?;
        }
    }
    let old_blob = old.filter(|(_, m)| *m != TREE_MODE);
    let new_blob = new.filter(|(_, m)| *m != TREE_MODE);
    if old_blob.is_some() || new_blob.is_some() {
        out.push(PathChange {
            path: path.to_string(),
            old: old_blob.map(|(id, _)| id),
            new: new_blob.map(|(id, m)| (id, matches!(m, 0o100644 | 0o100755))),
        });
    }
    Ok(())
}
