//! The indexes this process has opened, kept so that a search at an
//! unchanged tip skips opening, verifying and pinning the index again
//! (most of a warm search's time otherwise).
//!
//! An entry is used only while the store's tip is the one it was opened
//! at and every file of the index directory has the size, modification
//! time and inode it had then: a catch-up, rebuild or damage in any
//! process changes a file and sends the next search through the full
//! open (with its checksum verification) again. A few entries are kept,
//! the oldest dropped first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::Oid;

use super::SearchIndex;

/// How many indexes are kept open.
const ENTRIES: usize = 4;

struct Entry {
    path: PathBuf,
    tip: Oid,
    files: String,
    index: SearchIndex,
}

static OPEN: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Size, modification time and inode of every file of the index
/// directory (tantivy's dot-file locks aside), sorted by name; `None` when
/// the directory cannot be read.
fn files_key(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(path).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let meta = entry.metadata().ok()?;
        lines.push(format!(
            "{name} {} {}.{} {}",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        ));
    }
    lines.sort();
    Some(lines.join("\n"))
}

/// The index opened at `tip` from `path`, if it is kept and its files
/// have not changed since.
pub(super) fn get(path: &Path, tip: Oid) -> Option<SearchIndex> {
    let files = files_key(path)?;
    let open = OPEN.lock().ok()?;
    open.iter()
        .find(|e| e.path == path && e.tip == tip && e.files == files)
        .map(|e| e.index.share())
}

/// Keeps `index`, just opened at `tip` from `path` with the index lock held.
pub(super) fn put(path: &Path, tip: Oid, index: &SearchIndex) {
    let Some(files) = files_key(path) else {
        return;
    };
    let Ok(mut open) = OPEN.lock() else {
        return;
    };
    open.retain(|e| e.path != path);
    if open.len() >= ENTRIES {
        open.remove(0);
    }
    open.push(Entry {
        path: path.to_path_buf(),
        tip,
        files,
        index: index.share(),
    });
}
