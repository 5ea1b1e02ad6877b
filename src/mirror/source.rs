//! Where the renderer reads canonical files from: the [`Source`] trait and
//! its implementations (a git commit, a work tree, planned changes laid over
//! a source, a read cache, remembered good bytes, a few old files), and the
//! helpers that read and parse canonical files through any of them.
//!
//! Every source lists a folder's entries sorted by name, and `parsed` gives
//! a file checked against its schema, as a commit would check it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Oid;
use serde_json::Value;

use super::{DIR, TEMPLATE_DIR};
use crate::error::{Error, Result};
use crate::project::Registry;
use crate::store::{Changes, Store};
use crate::{layout, schema};

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
    /// The git blob id of a file, when this source knows it without
    /// reading the file (a commit's tree, planned bytes); `None` otherwise.
    fn blob_id(&self, _path: &str) -> Result<Option<Oid>> {
        Ok(None)
    }
}

/// A commit of the store (or the empty store for `None`).
///
/// Each folder's tree is read once per source and kept (names, blob ids),
/// so a pass costs what the folders it visits hold, not what the store
/// holds: reading every item of one memory shard reads one tree.
pub struct GitSource<'a> {
    store: &'a Store,
    commit: Option<Oid>,
    /// Folders read so far, by path.
    dirs: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<Folder>>>,
}

/// One folder of a commit: its entries in the tree's order, and by name.
struct Folder {
    order: Vec<(String, bool)>,
    ids: std::collections::HashMap<String, (Oid, bool)>,
}

impl<'a> GitSource<'a> {
    /// Reads `commit` of `store`.
    pub fn new(store: &'a Store, commit: Option<Oid>) -> Self {
        GitSource {
            store,
            commit,
            dirs: Default::default(),
        }
    }

    /// The folder `dir` (empty when there is none).
    fn folder(&self, dir: &str) -> Result<std::rc::Rc<Folder>> {
        if let Some(f) = self.dirs.borrow().get(dir) {
            return Ok(f.clone());
        }
        let entries = match self.commit {
            Some(c) => self.store.dir_entries(c, dir)?,
            None => Vec::new(),
        };
        let folder = std::rc::Rc::new(Folder {
            order: entries.iter().map(|(n, _, d)| (n.clone(), *d)).collect(),
            ids: entries.into_iter().map(|(n, id, d)| (n, (id, d))).collect(),
        });
        self.dirs
            .borrow_mut()
            .insert(dir.to_string(), folder.clone());
        Ok(folder)
    }

    /// The blob id of the file at `path`, if there is one.
    fn file(&self, path: &str) -> Result<Option<Oid>> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Ok(match self.folder(dir)?.ids.get(name) {
            Some((id, false)) => Some(*id),
            _ => None,
        })
    }
}

impl Source for GitSource<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.file(path)?
            .map(|id| self.store.read_blob(id))
            .transpose()
    }

    fn blob_id(&self, path: &str) -> Result<Option<Oid>> {
        self.file(path)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        Ok(self.folder(dir)?.order.clone())
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

    fn blob_id(&self, path: &str) -> Result<Option<Oid>> {
        match self.changes.get(path) {
            Some(Some(b)) => Ok(super::cache::blob_of(b)),
            Some(None) => Ok(None),
            None => self.base.blob_id(path),
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
pub(super) struct Cached<'a> {
    inner: &'a dyn Source,
    reads: std::cell::RefCell<std::collections::HashMap<String, Option<Vec<u8>>>>,
    lists: std::cell::RefCell<std::collections::HashMap<String, Vec<(String, bool)>>>,
    /// Valid files parsed so far (a file is parsed for the index delta and again for its page).
    pub(super) values: std::cell::RefCell<std::collections::HashMap<String, Option<Value>>>,
}

impl<'a> Cached<'a> {
    pub(super) fn new(inner: &'a dyn Source) -> Self {
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

    fn blob_id(&self, path: &str) -> Result<Option<Oid>> {
        self.inner.blob_id(path)
    }
}

pub(super) struct EmptySource;

impl Source for EmptySource {
    fn read(&self, _: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn list(&self, _: &str) -> Result<Vec<(String, bool)>> {
        Ok(Vec::new())
    }
}

/// A source that serves remembered good bytes.
pub(super) struct GoodSource<'a> {
    pub(super) good: &'a BTreeMap<String, Vec<u8>>,
    pub(super) wt: WorkTreeSource,
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

/// Old versions of a few files, for deltas.
pub(super) struct MapSource<'a>(pub(super) &'a BTreeMap<String, Vec<u8>>);

impl Source for MapSource<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(path).cloned())
    }
    fn list(&self, _: &str) -> Result<Vec<(String, bool)>> {
        Ok(Vec::new())
    }
}

// ---------------------------------------------------------------------------
// Parsing canonical files.

pub(super) fn parse_valid(path: &str, bytes: &[u8]) -> Result<Value> {
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

pub(super) fn read_typed<T: serde::de::DeserializeOwned>(
    src: &dyn Source,
    path: &str,
) -> Result<Option<T>> {
    match src.parsed(path)? {
        Some(v) => Ok(Some(typed(path, v)?)),
        None => Ok(None),
    }
}

pub(super) fn read_registry(src: &dyn Source) -> Result<Registry> {
    Ok(read_typed(src, layout::REGISTRY)?.unwrap_or_default())
}

/// Every file under `dir`, recursively, sorted.
pub(super) fn walk(src: &dyn Source, dir: &str, out: &mut Vec<String>) -> Result<()> {
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
pub(super) fn run_ids(src: &dyn Source) -> Result<Vec<String>> {
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

pub(super) fn yaml_files(src: &dyn Source, dir: &str) -> Result<Vec<String>> {
    Ok(src
        .list(dir)?
        .into_iter()
        .filter(|(n, d)| !d && n.ends_with(".yaml"))
        .map(|(n, _)| format!("{dir}/{n}"))
        .collect())
}
