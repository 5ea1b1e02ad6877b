//! The work-tree journal: before its ref moves, a write records the paths and
//! tags it will update after, so a writer killed in between is finished by
//! the next one. An empty journal means nothing is pending.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};

use super::{Changes, Store};
use crate::error::{Error, Result};

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
        // Rewritten in place, not created anew: new inodes are what writes
        // pay for most on ext4. It is fsync'd (and its folder, when it is
        // new) before the ref moves: after a power cut that kept the moved
        // ref, the journal is what tells the next write which work-tree
        // files and which ref lock were this write's.
        let path = self.journal_path();
        fs::create_dir_all(&self.local_dir).map_err(|e| Error::io("create", &self.local_dir, e))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io("write", &path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
        crate::failpoint::trace::write(&path);
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

    /// An empty journal means nothing is pending.
    pub(super) fn clear_journal(&self) {
        if let Ok(f) = OpenOptions::new().write(true).open(self.journal_path()) {
            let _ = f.set_len(0);
            crate::failpoint::trace::write(&self.journal_path());
        }
    }

    /// Finishes what a crashed writer left half done after its ref moved:
    /// journalled tags are created, and each journalled path still showing
    /// the old commit's content is brought to the tip.
    pub(super) fn recover_worktree(&self) -> Result<()> {
        self.repair_empty_index()?;
        let text = match fs::read_to_string(self.journal_path()) {
            Ok(t) if !t.trim().is_empty() => t,
            _ => return Ok(()),
        };
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let mut ids = header.split(' ').map(|s| Oid::from_str(s).ok());
        let old = ids.next().flatten();
        let new = ids.next().flatten();
        let Some(tip) = self.tip()? else {
            self.clear_journal();
            return Ok(());
        };
        let landed = match new {
            Some(n) => self.repo_has(n) && self.is_ancestor(n, tip)?,
            None => false,
        };
        let mut paths = Vec::new();
        let mut tags = Vec::new();
        for line in lines {
            if let Some(p) = line.strip_prefix("P ") {
                paths.push(p.to_string());
            } else if let Some(t) = line.strip_prefix("T ") {
                if let Some((name, msg)) = t.split_once(' ') {
                    if let Ok(msg) = serde_json::from_str::<String>(msg) {
                        tags.push((name.to_string(), msg));
                    }
                }
            }
        }
        // A writer killed inside the ref update leaves git's lock file: it is
        // ours (we hold the store lock) when it names the journalled commit.
        if let Some(new) = new {
            let ref_lock = self.repo.path().join(format!("{}.lock", self.branch));
            if let Ok(content) = fs::read_to_string(&ref_lock) {
                let content = content.trim();
                if content.is_empty() || new.to_string().starts_with(content) {
                    let _ = fs::remove_file(&ref_lock);
                    let _ = fs::remove_file(
                        self.repo.path().join(format!("logs/{}.lock", self.branch)),
                    );
                }
            }
        }
        if landed {
            self.create_tags(new.expect("landed implies an id"), &tags)?;
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
            for path in &paths {
                let old_blob = match old {
                    Some(o) => self.blob_id(o, path)?,
                    None => None,
                };
                let full = workdir.join(path);
                let on_disk = if full.is_file() {
                    Oid::hash_file(ObjectType::Blob, &full).ok()
                } else {
                    None
                };
                let staged = index.get_path(Path::new(path), 0).map(|e| e.id);
                let tip_blob = self.blob_id(tip, path)?;
                // The crash may have come between the file rename and the
                // index write: each side holds the old or the new version.
                // A power cut may also keep the rename of a work-tree file
                // (not fsync'd) without its data: an empty file is ours too.
                let ours = |v: Option<Oid>| v == old_blob || v == tip_blob || v == Some(empty);
                if ours(on_disk) && ours(staged) && (on_disk != tip_blob || staged != tip_blob) {
                    changes.insert(path.to_string(), self.read_file(tip, path)?);
                }
                remove_stale_temp_files(&full);
            }
            drop(index);
            self.sync_worktree(&changes)?;
        }
        self.clear_journal();
        Ok(())
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
        fs::metadata(self.journal_path()).is_ok_and(|m| m.len() > 0)
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
