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

    fn blob_id(&self, path: &str) -> Result<Option<Oid>> {
        if let Some(files) = self.bulk()? {
            return Ok(files.get(path).copied());
        }
        match self.commit {
            Some(c) => self.store.blob_id(c, path),
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
