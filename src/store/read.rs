//! Reading the store at a commit: the [`Snapshot`] a transaction plans
//! against, and files, folders, blobs and tags read from git objects.
//!
//! Reads never touch the work tree or the index: what a commit holds is the
//! truth. A missing path is `None`, never an error.

use std::path::Path;

use git2::{ObjectType, Oid};
use serde_json::Value;
use time::OffsetDateTime;

use super::{not_found_to_none, Store};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::schema;

/// A read-only view of the store at one commit.
pub struct Snapshot<'a> {
    pub(super) store: &'a Store,
    pub(super) commit: Option<Oid>,
    pub(super) config: StoreConfig,
}

impl Snapshot<'_> {
    /// The commit this snapshot reads (`None` for an unborn branch).
    pub fn commit(&self) -> Option<Oid> {
        self.commit
    }

    /// The store this snapshot reads.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// The store configuration at this commit.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The bytes of a file, if it exists at this commit.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.commit {
            Some(c) => self.store.read_file(c, path),
            None => Ok(None),
        }
    }

    /// A file turned into a value by `parse`, if it exists at this commit.
    /// Values are kept per process by content (see [`Store::remember_parsed`]),
    /// so `parse` runs only for bytes this process has not seen as a `T`.
    pub fn parsed<T: Clone + Send + 'static>(
        &self,
        path: &str,
        parse: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(blob) = self
            .commit
            .map(|c| self.store.blob_id(c, path))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        self.store.parse_cached(blob, parse).map(Some)
    }

    /// The current time of the store's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.store.now()
    }
}

impl Store {
    /// The blob id of `path` at `commit`, if it exists there as a file.
    pub fn blob_id(&self, commit: Oid, path: &str) -> Result<Option<Oid>> {
        let tree = self.tree_of(commit)?;
        let entry = not_found_to_none(tree.get_path(Path::new(path)))
            .map_err(|e| Error::git(format!("look up {path} at {commit}"), e))?;
        Ok(entry
            .filter(|e| e.kind() == Some(ObjectType::Blob))
            .map(|e| e.id()))
    }

    /// The bytes of `path` at `commit`, if it exists there.
    pub fn read_file(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>> {
        match self.blob_id(commit, path)? {
            Some(id) => {
                let blob = self
                    .repo
                    .find_blob(id)
                    .map_err(|e| Error::git(format!("read {path} at {commit}"), e))?;
                Ok(Some(blob.content().to_vec()))
            }
            None => Ok(None),
        }
    }

    /// The entries of folder `dir` at `commit`: (name, is_folder), sorted.
    pub fn list_dir(&self, commit: Oid, dir: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .dir_entries(commit, dir)?
            .into_iter()
            .map(|(name, _, is_dir)| (name, is_dir))
            .collect())
    }

    /// The entries of folder `dir` at `commit` with their object ids:
    /// (name, id, is_folder), in the tree's order. Empty when `dir` is not
    /// a folder there.
    pub fn dir_entries(&self, commit: Oid, dir: &str) -> Result<Vec<(String, Oid, bool)>> {
        let Some(tree) = self.subtree(commit, dir)? else {
            return Ok(Vec::new());
        };
        Ok(tree
            .iter()
            .filter_map(|e| {
                let name = e.name().ok()?.to_string();
                Some((name, e.id(), e.kind() == Some(ObjectType::Tree)))
            })
            .collect())
    }

    /// The tree of folder `dir` at `commit` (the root for `""`), if it is one.
    fn subtree(&self, commit: Oid, dir: &str) -> Result<Option<git2::Tree<'_>>> {
        let root = self.tree_of(commit)?;
        if dir.is_empty() {
            return Ok(Some(root));
        }
        let entry = not_found_to_none(root.get_path(Path::new(dir)))
            .map_err(|e| Error::git(format!("look up {dir}"), e))?;
        match entry {
            Some(e) if e.kind() == Some(ObjectType::Tree) => self
                .repo
                .find_tree(e.id())
                .map(Some)
                .map_err(|e| Error::git(format!("read {dir}"), e)),
            _ => Ok(None),
        }
    }

    /// Every file under `dir` at `commit` as (path, blob id, is_regular_file),
    /// sorted by path. Walks only that folder's subtree.
    pub fn walk_files(&self, commit: Oid, dir: &str) -> Result<Vec<(String, Oid, bool)>> {
        let Some(tree) = self.subtree(commit, dir)? else {
            return Ok(Vec::new());
        };
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                let path = format!("{prefix}{parent}{}", entry.name().unwrap_or_default());
                let regular = matches!(entry.filemode(), 0o100644 | 0o100755);
                out.push((path, entry.id(), regular));
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(|e| Error::git("walk tree", e))?;
        out.sort();
        Ok(out)
    }

    /// The blob at `path` in `commit` and whether it is a regular file.
    pub fn entry(&self, commit: Oid, path: &str) -> Result<Option<(Oid, bool)>> {
        let tree = self.tree_of(commit)?;
        let entry = not_found_to_none(tree.get_path(Path::new(path)))
            .map_err(|e| Error::git(format!("look up {path} at {commit}"), e))?;
        Ok(entry
            .filter(|e| e.kind() == Some(ObjectType::Blob))
            .map(|e| (e.id(), matches!(e.filemode(), 0o100644 | 0o100755))))
    }

    /// The bytes of a blob.
    pub fn read_blob(&self, id: Oid) -> Result<Vec<u8>> {
        self.repo
            .find_blob(id)
            .map(|b| b.content().to_vec())
            .map_err(|e| Error::git(format!("read blob {id}"), e))
    }

    /// The size of a blob in bytes, without reading it.
    pub fn blob_size(&self, id: Oid) -> Result<u64> {
        let odb = self.repo.odb().map_err(|e| Error::git("open odb", e))?;
        let (size, _) = odb
            .read_header(id)
            .map_err(|e| Error::git(format!("read blob {id}"), e))?;
        Ok(size as u64)
    }

    /// Annotated tags under `refs/tags/<prefix>`: (name without `refs/tags/`, message), sorted.
    pub fn tags_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let refs = self
            .repo
            .references_glob(&format!("refs/tags/{prefix}*"))
            .map_err(|e| Error::git("list tags", e))?;
        for r in refs {
            let r = r.map_err(|e| Error::git("read tag", e))?;
            let Ok(Some(name)) = r
                .name()
                .map(|n| n.strip_prefix("refs/tags/").map(str::to_string))
            else {
                continue;
            };
            let message = r
                .peel_to_tag()
                .ok()
                .and_then(|t| {
                    t.message_bytes()
                        .map(|m| String::from_utf8_lossy(m).into_owned())
                })
                .unwrap_or_default();
            out.push((name, message));
        }
        out.sort();
        Ok(out)
    }

    /// Whether the object database holds `id`.
    pub fn repo_has(&self, id: Oid) -> bool {
        self.repo.odb().map(|odb| odb.exists(id)).unwrap_or(false)
    }
}

/// Reads a value out of a YAML or JSON file at the tip, validating nothing.
pub fn parse_yaml(file: &str, bytes: &[u8]) -> Result<Value> {
    schema::parse_document(
        file,
        bytes,
        schema::ParseLimits {
            max_bytes: u64::MAX,
            max_depth: 64,
        },
    )
}
