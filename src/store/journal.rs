//! The work-tree journal: before its ref moves, a write records the paths and
//! tags it will update after, so a writer killed in between is finished by
//! the next one, and so a power cut that drops the work-tree files' renames
//! (cairn does not fsync the work tree or git's index on each write) is
//! repaired after the reboot.
//!
//! The journal is appended to, never rewritten, between flushes: one entry
//! per write (`<old> <new>`, then `P <path>` and `T <tag> <message>` lines),
//! fsync'd before the ref moves, and a `D <boot id>` line once the write has
//! updated the work tree (not fsync'd). Every work-tree file and index entry
//! an entry names may come back after a power cut at any version its writes
//! passed through, so the entries stay until a flush has fsync'd those files,
//! their folders and the index: after a reboot (the boot id differs), when
//! the journal grows past [`FLUSH_BYTES`], or when the boot id is unknown.
//! Truncating the journal (or rewriting it in place) earlier could keep the
//! journal's new, empty state while losing the renames it vouched for.
//!
//! Cost on the write path: the same one fsync per write as before; the
//! flush's fsyncs are paid once per [`FLUSH_BYTES`] of journal and once
//! after each reboot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use git2::{ObjectType, Oid};

use super::{Changes, Store};
use crate::error::{Error, Result};

/// The journal size past which a finished write flushes it.
const FLUSH_BYTES: u64 = 64 * 1024;

/// More distinct paths than this are flushed by one `syncfs` of the work
/// tree's file system instead of an fsync per file and folder.
const SYNCFS_PATHS: usize = 64;

/// One write in the journal.
#[derive(Debug, Default)]
struct Entry {
    old: Option<Oid>,
    new: Option<Oid>,
    paths: Vec<String>,
    tags: Vec<(String, String)>,
    /// The boot in which the write left nothing pending (its work tree
    /// updated, or its ref never moved).
    done: Option<String>,
}

/// Reads the entries of a journal. Only whole lines count (a cut append
/// leaves a partial last line); a header line that does not parse starts an
/// entry with unknown commits, so the paths after it are still looked at.
fn parse(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        if let Some(p) = line.strip_prefix("P ") {
            if let Some(e) = entries.last_mut() {
                e.paths.push(p.to_string());
            }
        } else if let Some(t) = line.strip_prefix("T ") {
            if let (Some(e), Some((name, msg))) = (entries.last_mut(), t.split_once(' ')) {
                if let Ok(msg) = serde_json::from_str::<String>(msg) {
                    e.tags.push((name.to_string(), msg));
                }
            }
        } else if let Some(b) = line.strip_prefix("D ") {
            if let Some(e) = entries.last_mut() {
                e.done = Some(b.to_string());
            }
        } else if !line.is_empty() {
            let mut ids = line.split(' ').map(|s| Oid::from_str(s).ok());
            entries.push(Entry {
                old: ids.next().flatten(),
                new: ids.next().flatten(),
                ..Default::default()
            });
        }
    }
    entries
}

/// This boot of the machine (Linux: `/proc/sys/kernel/random/boot_id`),
/// or `None` where it cannot be told.
fn boot_id() -> Option<String> {
    #[cfg(feature = "failpoints")]
    if let Some(id) = crate::failpoint::trace::boot_id_override() {
        return Some(id);
    }
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
    })
    .clone()
}

/// When this boot of the machine began (Linux: `btime` in `/proc/stat`).
fn boot_time() -> Option<SystemTime> {
    #[cfg(feature = "failpoints")]
    if let Some(t) = crate::failpoint::trace::boot_time_override() {
        return Some(t);
    }
    static BOOT: OnceLock<Option<SystemTime>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let secs: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    })
}

/// Whether the file at `path` was last written before this boot, so no
/// live process can be writing it.
fn before_this_boot(path: &Path) -> bool {
    match (fs::metadata(path).and_then(|m| m.modified()), boot_time()) {
        (Ok(written), Some(boot)) => written < boot,
        _ => false,
    }
}

/// Whether nothing in `entries` can be pending: the last write finished in
/// this boot (each write recovers the ones before it first), so the page
/// cache holds every work-tree change the journal names.
fn settled(entries: &[Entry]) -> bool {
    match entries.last() {
        None => true,
        Some(e) => e.done.is_some() && e.done == boot_id(),
    }
}

impl Store {
    pub(super) fn journal_path(&self) -> PathBuf {
        self.local_dir.join("worktree-journal")
    }

    /// Records what a commit is about to do after its ref moves (work-tree
    /// paths to update, tags to create), so a crash in between can be
    /// finished by the next write.
    pub(super) fn write_journal(
        &self,
        old: Option<Oid>,
        new: Oid,
        changes: &Changes,
        tags: &[(String, String)],
    ) -> Result<()> {
        crate::failpoint::failpoint!("store::journal_write");
        let has_worktree = self.workdir().is_some();
        let mut text = format!(
            "{} {}\n",
            old.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
            new
        );
        if has_worktree {
            for path in changes.keys() {
                text.push_str(&format!("P {path}\n"));
            }
        }
        for (name, message) in tags {
            let message = serde_json::to_string(message).expect("strings serialize");
            text.push_str(&format!("T {name} {message}\n"));
        }
        // Appended to one file, not created anew: new inodes are what writes
        // pay for most on ext4. It is fsync'd (and its folder, when it is
        // new) before the ref moves: after a power cut that kept the moved
        // ref, the journal is what tells the next write which work-tree
        // files and which ref lock were this write's.
        let path = self.journal_path();
        fs::create_dir_all(&self.local_dir).map_err(|e| Error::io("create", &self.local_dir, e))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io("write", &path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
        crate::failpoint::trace::append(&path);
        crate::failpoint::trace::fsync(&path);
        file.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
        if !existed {
            crate::failpoint::trace::fsync(&self.local_dir);
            fs::File::open(&self.local_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync", &self.local_dir, e))?;
        }
        Ok(())
    }

    /// Marks the journal's last write as leaving nothing pending: its work
    /// tree and tags are updated, or its ref never moved. The entry stays
    /// (the work-tree files it names are not durable yet) until the journal
    /// is flushed: once it outgrows [`FLUSH_BYTES`], or at once where the
    /// boot cannot be told. Errors are ignored: the entry then stays pending
    /// and the next write finishes it.
    pub(super) fn clear_journal(&self) {
        let path = self.journal_path();
        let boot = match (self.workdir(), boot_id()) {
            (Some(_), Some(boot)) => boot,
            _ => {
                let _ = self.flush_journal();
                return;
            }
        };
        let Ok(mut file) = OpenOptions::new().append(true).open(&path) else {
            return;
        };
        if file.write_all(format!("D {boot}\n").as_bytes()).is_err() {
            return;
        }
        crate::failpoint::trace::append(&path);
        if file.metadata().is_ok_and(|m| m.len() > FLUSH_BYTES) {
            let _ = self.flush_journal();
        }
    }

    /// Makes durable every work-tree file and folder the journal names, and
    /// git's index, then empties the journal.
    fn flush_journal(&self) -> Result<()> {
        let path = self.journal_path();
        if let Some(workdir) = self.workdir() {
            let entries = match fs::read_to_string(&path) {
                Ok(t) => parse(&t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            let paths: BTreeSet<&str> = entries
                .iter()
                .flat_map(|e| e.paths.iter().map(String::as_str))
                .collect();
            let mut files = Vec::new();
            let mut dirs = BTreeSet::new();
            for p in paths {
                let full = workdir.join(p);
                if full.is_file() {
                    files.push(full.clone());
                }
                let mut dir = full.parent();
                while let Some(d) = dir {
                    if !d.starts_with(workdir) {
                        break;
                    }
                    if d.is_dir() {
                        dirs.insert(d.to_path_buf());
                    }
                    dir = d.parent();
                }
            }
            let index = self.repo.path().join("index");
            if index.is_file() {
                files.push(index);
                dirs.insert(self.repo.path().to_path_buf());
            }
            if !(files.len() > SYNCFS_PATHS && syncfs(workdir)) {
                for f in &files {
                    fs::File::open(f)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| Error::io("fsync", f, e))?;
                }
                for d in &dirs {
                    fs::File::open(d)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| Error::io("fsync", d, e))?;
                }
            }
            for f in &files {
                crate::failpoint::trace::fsync(f);
            }
            for d in &dirs {
                crate::failpoint::trace::fsync(d);
            }
        }
        match OpenOptions::new().write(true).open(&path) {
            Ok(f) => {
                f.set_len(0).map_err(|e| Error::io("truncate", &path, e))?;
                crate::failpoint::trace::write(&path);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("open", &path, e)),
        }
    }

    /// Finishes what a crashed writer left half done after its ref moved,
    /// and what a power cut undid: journalled tags are created, and each
    /// journalled path still showing a version one of the journalled writes
    /// passed through (or an empty file, a rename kept without its data) is
    /// brought to the tip. Then the journal is flushed.
    pub(super) fn recover_worktree(&self) -> Result<()> {
        // An index lock written before the machine booted belongs to no
        // live process (a power cut can keep a lock's creation and lose its
        // rename, and the marker that says it was cairn's).
        if self.workdir().is_some() {
            let index_lock = self.repo.path().join("index.lock");
            if before_this_boot(&index_lock) {
                let _ = fs::remove_file(&index_lock);
            }
        }
        self.repair_empty_index()?;
        let entries = match fs::read_to_string(self.journal_path()) {
            Ok(t) => parse(&t),
            Err(_) => return Ok(()),
        };
        if settled(&entries) {
            return Ok(());
        }
        let Some(tip) = self.tip()? else {
            return self.flush_journal();
        };
        // Each path's versions the journalled writes passed through.
        let mut seen: BTreeMap<&str, BTreeSet<Option<Oid>>> = BTreeMap::new();
        for entry in &entries {
            let landed = match entry.new {
                Some(n) => self.repo_has(n) && (n == tip || self.is_ancestor(n, tip)?),
                None => false,
            };
            if entry.done.is_none() {
                if let Some(new) = entry.new {
                    self.remove_ref_lock_of(new);
                    if landed {
                        self.create_tags(new, &entry.tags)?;
                    }
                }
            }
            for path in &entry.paths {
                let versions = seen.entry(path.as_str()).or_default();
                versions.insert(match entry.old {
                    Some(o) => self.blob_id(o, path)?,
                    None => None,
                });
                if let (true, Some(n)) = (landed, entry.new) {
                    versions.insert(self.blob_id(n, path)?);
                }
            }
        }
        if let Some(workdir) = self.workdir() {
            // Likewise the index lock of a writer killed while writing the
            // index, which its marker says. Any other index.lock belongs to a
            // live git command and is left alone.
            if fs::metadata(self.index_marker()).is_ok_and(|m| m.len() > 0) {
                let _ = fs::remove_file(self.repo.path().join("index.lock"));
                self.mark_index_write(false);
            }
            let mut index = self.repo.index().map_err(|e| Error::git("open index", e))?;
            index.read(false).map_err(|e| Error::git("read index", e))?;
            let mut changes = Changes::new();
            let empty = Oid::hash_object(ObjectType::Blob, b"")
                .map_err(|e| Error::git("hash the empty blob", e))?;
            for (path, versions) in &seen {
                let full = workdir.join(path);
                let on_disk = if full.is_file() {
                    Oid::hash_file(ObjectType::Blob, &full).ok()
                } else {
                    None
                };
                let staged = index.get_path(Path::new(path), 0).map(|e| e.id);
                let tip_blob = self.blob_id(tip, path)?;
                // The crash may have come between the file rename and the
                // index write, and a power cut may keep any of the renames of
                // the writes since the last flush, or one without its data
                // (an empty file): each side holds one of those versions.
                let ours =
                    |v: Option<Oid>| v == tip_blob || v == Some(empty) || versions.contains(&v);
                if ours(on_disk) && ours(staged) && (on_disk != tip_blob || staged != tip_blob) {
                    changes.insert(path.to_string(), self.read_file(tip, path)?);
                }
                remove_stale_temp_files(&full);
            }
            drop(index);
            self.sync_worktree(&changes)?;
        }
        self.flush_journal()
    }

    /// Removes git's lock file of the branch left by a writer killed inside
    /// the ref update: it is ours (we hold the store lock) when it names the
    /// journalled commit `new`.
    fn remove_ref_lock_of(&self, new: Oid) {
        let ref_lock = self.repo.path().join(format!("{}.lock", self.branch));
        if let Ok(content) = fs::read_to_string(&ref_lock) {
            let content = content.trim();
            if content.is_empty() || new.to_string().starts_with(content) {
                let _ = fs::remove_file(&ref_lock);
                let _ =
                    fs::remove_file(self.repo.path().join(format!("logs/{}.lock", self.branch)));
            }
        }
    }

    /// Rebuilds a zero-length git index from the tip. cairn and git write
    /// the index without fsync (see `Store::stage`), so a power cut can keep
    /// the rename of a new index without its data; git and libgit2 refuse
    /// such a file, so nothing is lost by replacing it.
    fn repair_empty_index(&self) -> Result<()> {
        if self.workdir().is_none() {
            return Ok(());
        }
        let path = self.repo.path().join("index");
        if !fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Ok(());
        }
        let Some(tip) = self.tip()? else {
            return Ok(());
        };
        let tree = self.tree_of(tip)?;
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        let mut index = git2::Index::open(&path).map_err(|e| Error::git("open index", e))?;
        index
            .read_tree(&tree)
            .and_then(|()| index.write())
            .map_err(|e| Error::git("rebuild the index from the tip", e))
    }

    /// Finishes a cairn write that committed but could not update the work
    /// tree and index yet (a git command held the index): the hooks call it
    /// before comparing the index with the tip. Takes no lock: call it under
    /// the store lock.
    pub fn finish_pending_write(&self) -> Result<()> {
        self.recover_worktree()
    }

    /// Whether a committed cairn write still has to update the work tree.
    pub fn has_pending_write(&self) -> bool {
        fs::read_to_string(self.journal_path()).is_ok_and(|t| !settled(&parse(&t)))
    }
}

/// Removes the temp files a killed `write_atomic` may have left beside `file`.
fn remove_stale_temp_files(file: &Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Flushes the whole file system holding `dir` (Linux `syncfs`): cheaper
/// than an fsync per file for many files. False where it is not available
/// or fails.
fn syncfs(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(d) = fs::File::open(dir) {
            // SAFETY: `syncfs` only reads the descriptor, which `d` keeps open.
            return unsafe { libc::syncfs(d.as_raw_fd()) } == 0;
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}
