//! A local cache of parsed memory items, kept beside the store (under its
//! local folder, never committed) so that rendering a memory page does not
//! parse again the YAML of every item it shows.
//!
//! A page of a large group shows a few hundred items; a write that touches
//! many scattered items (a merge, an import) dirties nearly every page, and
//! parsing the items again was most of its cost. The cache holds, for each
//! item folder (`memory/<scope>[/<scope_id>]/<shard>`), the items of its
//! files with the git blob id each was parsed from.
//!
//! Invariants:
//! - Content-addressed: an entry is used only when the file's blob id (from
//!   the commit's tree, or the hash of planned bytes) equals the entry's, so
//!   an entry is never stale; the bytes behind a blob id never change.
//! - Only items that passed their schema check are stored, by the same
//!   build of cairn (the file names the version): what the cache gives is
//!   what parsing the file would give.
//! - Best effort: a missing, unreadable or foreign cache file is an empty
//!   one, and failing to write it changes nothing but speed. Sources that
//!   cannot name blob ids (the work tree) bypass it.
//! - Concurrent writers each write a whole file and rename it into place:
//!   the last one wins, and every version is valid.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::render::read_item;
use super::source::Source;
use crate::error::Result;
use crate::memory::MemoryItem;

/// Bumped when the file's shape changes.
const FORMAT: u32 = 1;

/// One cached item: the blob it was parsed from, and the item.
#[derive(Serialize, Deserialize)]
struct Entry {
    blob: String,
    item: MemoryItem,
}

/// One item folder's cache file.
#[derive(Serialize, Deserialize)]
struct Folder {
    format: u32,
    cairn: String,
    /// File name → entry.
    entries: BTreeMap<String, Entry>,
    #[serde(skip)]
    changed: bool,
}

impl Folder {
    fn empty() -> Self {
        Folder {
            format: FORMAT,
            cairn: env!("CARGO_PKG_VERSION").to_string(),
            entries: BTreeMap::new(),
            changed: false,
        }
    }

    fn load(file: &Path) -> Self {
        std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Folder>(&b).ok())
            .filter(|f| f.format == FORMAT && f.cairn == env!("CARGO_PKG_VERSION"))
            .unwrap_or_else(Folder::empty)
    }
}

/// The parsed-item cache of one store, for one pass of the renderer.
pub(super) struct ItemCache {
    /// Where the cache files live (`None`: no caching).
    root: Option<PathBuf>,
    folders: RefCell<BTreeMap<String, Folder>>,
}

impl ItemCache {
    /// The cache under a store's local folder.
    pub(super) fn under(local_dir: &Path) -> Self {
        ItemCache {
            root: Some(local_dir.join("cache").join("mirror-items")),
            folders: RefCell::default(),
        }
    }

    /// No caching: every item is parsed.
    pub(super) fn off() -> Self {
        ItemCache {
            root: None,
            folders: RefCell::default(),
        }
    }

    /// The memory item at `path` in `src`, from the cache when its blob is
    /// the one cached, else parsed (and remembered).
    pub(super) fn item(&self, src: &dyn Source, path: &str) -> Result<Option<MemoryItem>> {
        let (Some(root), Some((folder, name))) = (&self.root, path.rsplit_once('/')) else {
            return read_item(src, path);
        };
        let Some(blob) = src.blob_id(path)? else {
            return read_item(src, path);
        };
        let blob = blob.to_string();
        let mut folders = self.folders.borrow_mut();
        let entry = folders
            .entry(folder.to_string())
            .or_insert_with(|| Folder::load(&cache_file(root, folder)));
        if let Some(e) = entry.entries.get(name).filter(|e| e.blob == blob) {
            return Ok(Some(e.item.clone()));
        }
        drop(folders);
        let item = read_item(src, path)?;
        if let Some(item) = &item {
            let mut folders = self.folders.borrow_mut();
            let f = folders
                .get_mut(folder)
                .expect("the folder was loaded above");
            f.entries.insert(
                name.to_string(),
                Entry {
                    blob,
                    item: item.clone(),
                },
            );
            f.changed = true;
        }
        Ok(item)
    }

    /// Writes the folders that gained entries. Failures are ignored: the
    /// cache only saves time.
    pub(super) fn flush(&self) {
        let Some(root) = &self.root else {
            return;
        };
        for (folder, f) in self.folders.borrow_mut().iter_mut() {
            if !f.changed {
                continue;
            }
            let file = cache_file(root, folder);
            let _ = write_atomically(&file, &serde_json::to_vec(f).unwrap_or_default());
            f.changed = false;
        }
    }
}

/// The cache file of an item folder (its path components are ids).
fn cache_file(root: &Path, folder: &str) -> PathBuf {
    root.join(format!("{folder}.json"))
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("cache"),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes)?;
    crate::failpoint::trace::write(&tmp);
    crate::failpoint::trace::rename(&tmp, file);
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Blob ids of planned bytes, as git would name them.
pub(super) fn blob_of(bytes: &[u8]) -> Option<Oid> {
    Oid::hash_object(git2::ObjectType::Blob, bytes).ok()
}
