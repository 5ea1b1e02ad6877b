//! The work tree and git's index: refusing to overwrite hand edits, bringing
//! changed paths up to date after a commit, and the git plumbing hand
//! commits use (the hooks read and write the index `git commit` is
//! building).
//!
//! Index writes happen in process under git's lock for the index file
//! ([`crate::git_index::update`]): cairn's own commits, and the pages the
//! hooks stage in the index `git commit` is building. What that writer hands
//! back, and the hooks' comparison of the index with the tip, go through
//! git's own plumbing (`update-index`, `diff-index`): the index is git's
//! file, and git handles every index format (split, sparse).
//!
//! Nothing is written through a link: a changed path whose folder in the
//! work tree is a symlink (or a file) is refused before the commit and again
//! before the work-tree write, so a write never lands outside the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Tree};

use super::{not_found_to_none, write_atomic, Changes, PathChange, Store};
use crate::error::{Error, Result};
use crate::layout;

/// Refuses a path whose folders in the work tree include a symlink (or
/// something that is not a folder): writing there could land outside the
/// store. `checked` remembers the folders already seen.
fn check_parents(workdir: &Path, path: &str, checked: &mut BTreeSet<PathBuf>) -> Result<()> {
    let mut at = workdir.to_path_buf();
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        if checked.contains(&at) {
            continue;
        }
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {
                checked.insert(at.clone());
            }
            Ok(_) => {
                return Err(Error::Integrity {
                    subject: parts[..=i].join("/"),
                    message: format!(
                        "is a symlink or a file in the work tree, and {path} would be written through it; cairn writes only inside the store: restore the folder (`git checkout -- {}`)",
                        parts[..=i].join("/")
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", at, e)),
        }
    }
    Ok(())
}

impl Store {
    /// Refuses when a path about to change differs, in the work tree or the
    /// index, from what the tip holds.
    pub(super) fn check_hand_edits(
        &self,
        base: Option<&Tree<'_>>,
        changes: &Changes,
    ) -> Result<()> {
        let Some(workdir) = self.workdir() else {
            return Ok(());
        };
        // A git command is updating the index: writing now would commit but
        // fail to update the work tree, so wait and retry instead.
        let index_lock = self.repo.path().join("index.lock");
        if index_lock.exists() {
            return Err(Error::LockBusy {
                path: index_lock,
                holder: "a git process".into(),
                waited_ms: 0,
            });
        }
        // Mirror pages are derived, never hand edits: a page the pre-commit
        // hook staged for a commit in progress is rendered again here.
        let paths: BTreeSet<&str> = changes
            .keys()
            .map(String::as_str)
            .filter(|p| !layout::is_derived(p))
            .collect();
        let index_file = self.repo.path().join("index");
        let staged_ids = match crate::git_index::staged(&index_file, &paths)? {
            Some(ids) => ids,
            None => {
                let mut index = self.repo.index().map_err(|e| Error::git("open index", e))?;
                index.read(false).map_err(|e| Error::git("read index", e))?;
                paths
                    .iter()
                    .filter_map(|p| Some((p.to_string(), index.get_path(Path::new(p), 0)?.id)))
                    .collect()
            }
        };
        let mut checked = BTreeSet::new();
        for path in changes.keys() {
            check_parents(workdir, path, &mut checked)?;
        }
        let mut dirty = Vec::new();
        for path in paths {
            let head = match base {
                Some(t) => not_found_to_none(t.get_path(Path::new(path)))
                    .map_err(|e| Error::git(format!("look up {path}"), e))?
                    .map(|e| e.id()),
                None => None,
            };
            let staged = staged_ids.get(path).copied();
            let full = workdir.join(path);
            let on_disk = match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_file() => Some(
                    Oid::hash_file(ObjectType::Blob, &full)
                        .map_err(|e| Error::git(format!("hash {path}"), e))?,
                ),
                Ok(_) => Some(Oid::ZERO_SHA1),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("stat", full, e)),
            };
            if staged != head || on_disk != head {
                dirty.push(path.to_string());
            }
        }
        if dirty.is_empty() {
            Ok(())
        } else {
            Err(Error::HandEdited { paths: dirty })
        }
    }

    /// Brings the work tree and index up to date for `changes`, which the
    /// branch tip now holds.
    pub(super) fn sync_worktree(&self, changes: &Changes) -> Result<()> {
        let Some(workdir) = self.workdir() else {
            return Ok(());
        };
        crate::failpoint::failpoint!("store::worktree_write");
        let mut checked = BTreeSet::new();
        for (path, content) in changes {
            check_parents(workdir, path, &mut checked)?;
            let full = workdir.join(path);
            match content {
                Some(bytes) => write_atomic(&full, bytes, false)?,
                None => {
                    match fs::remove_file(&full) {
                        Ok(()) => crate::failpoint::trace::remove(&full),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("remove", full, e)),
                    }
                    remove_empty_parents(workdir, &full);
                }
            }
        }
        // The index is updated under git's lock, read only after taking it;
        // libgit2 reads first and locks to write, which could drop what a
        // concurrent `git add` staged in between. `git_index::update` does
        // it in process (spawning `git update-index`, which also hashes the
        // whole index with a collision-detecting SHA-1, was about a third of
        // a write at 10k files) and hands back what it leaves to git.
        let mut ids = BTreeMap::new();
        for (path, content) in changes {
            let id = match content {
                Some(bytes) => Some(
                    Oid::hash_object(ObjectType::Blob, bytes)
                        .map_err(|e| Error::git(format!("hash {path}"), e))?,
                ),
                None => None,
            };
            ids.insert(path.as_str(), id);
        }
        crate::failpoint::failpoint!("store::index_write");
        self.mark_index_write(true);
        let staged = match crate::git_index::update_resuming(
            &self.repo.path().join("index"),
            &ids,
            &self.index_midstates(),
        ) {
            Ok(true) => Ok(()),
            Ok(false) => self.stage_with_git(None, changes),
            Err(e) => Err(e),
        };
        self.mark_index_write(false);
        staged
    }

    /// Where the SHA-1 midstates of the repository's index are kept (see
    /// [`crate::git_index::update_resuming`]).
    fn index_midstates(&self) -> PathBuf {
        self.local_dir.join("index-sha1")
    }

    /// The marker that says a cairn process is inside an index write (so an
    /// `index.lock` left by a crash is known to be cairn's).
    pub(super) fn index_marker(&self) -> PathBuf {
        self.local_dir.join("index-writing")
    }

    /// Sets or clears the marker, rewriting one file in place.
    pub(super) fn mark_index_write(&self, writing: bool) {
        let _ = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.index_marker())
            .and_then(|mut f| if writing { f.write_all(b"1") } else { Ok(()) });
        crate::failpoint::trace::write(&self.index_marker());
    }

    /// `git` for this repository, committing to `index_file` (else the default index).
    pub(super) fn git_index_command(&self, index_file: Option<&Path>) -> std::process::Command {
        let mut c = std::process::Command::new("git");
        c.arg("--git-dir").arg(self.repo.path());
        if let Some(w) = self.workdir() {
            c.arg("--work-tree").arg(w).current_dir(w);
        }
        match index_file {
            Some(p) if p.is_absolute() => {
                c.env("GIT_INDEX_FILE", p);
            }
            Some(p) => {
                let base = self.workdir().unwrap_or(self.repo.path());
                c.env("GIT_INDEX_FILE", base.join(p));
            }
            None => {
                c.env_remove("GIT_INDEX_FILE");
            }
        }
        c
    }

    pub(super) fn run_git(
        &self,
        mut c: std::process::Command,
        what: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        // The child dies with this process: a `git update-index` that
        // outlived a killed cairn (a hook killed while staging) would finish
        // its index write after the git command that ran the hook had rolled
        // that index back, and leave `index.lock` behind, refusing every git
        // command. The child is always waited for below, so the thread that
        // spawns it outlives it.
        // SAFETY: prctl is async-signal-safe, as a pre_exec closure requires.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| Error::io("run git in", self.repo.path(), e))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)
                .map_err(|e| Error::io("write to git in", self.repo.path(), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("run git in", self.repo.path(), e))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::GitCommand {
                args: what.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// The paths whose staged content differs from the tip, sorted. `index_file`
    /// is the index git is committing (`GIT_INDEX_FILE`), else the repository's.
    pub fn staged_changes(&self, index_file: Option<&Path>) -> Result<Vec<PathChange>> {
        const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let base = match self.tip()? {
            Some(c) => c.to_string(),
            None => EMPTY_TREE.to_string(),
        };
        let mut c = self.git_index_command(index_file);
        c.args([
            "diff-index",
            "--cached",
            "--raw",
            "-z",
            "--no-renames",
            "--full-index",
            "--ignore-submodules=none",
            &base,
        ]);
        let out = self.run_git(c, "diff-index --cached", None)?;
        // Records: ":<old mode> <new mode> <old id> <new id> <status>\0<path>\0".
        let mut fields = out.split(|b| *b == 0);
        let mut changes = Vec::new();
        while let Some(meta) = fields.next() {
            if meta.is_empty() {
                continue;
            }
            let Some(path) = fields.next() else { break };
            let meta = String::from_utf8_lossy(meta);
            let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
            let [_, new_mode, old_id, new_id, ..] = parts.as_slice() else {
                continue;
            };
            let id = |s: &str| Oid::from_str(s).ok().filter(|o| !o.is_zero());
            let new = id(new_id).map(|o| (o, matches!(*new_mode, "100644" | "100755")));
            changes.push(PathChange {
                path: String::from_utf8_lossy(path).into_owned(),
                old: id(old_id),
                new,
            });
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }

    /// Stages file contents (or removals) in a git index in one update,
    /// writing the blobs first; regular, non-executable files only.
    /// `index_file` is as for [`Store::staged_changes`]. The index is
    /// rewritten in process ([`crate::git_index::update`], under git's lock
    /// for that file) unless it is in a form left to `git update-index`.
    pub fn stage(&self, index_file: Option<&Path>, files: &Changes) -> Result<()> {
        let mut ids = BTreeMap::new();
        for (path, content) in files {
            let id = match content {
                Some(bytes) => Some(
                    self.repo
                        .blob(bytes)
                        .map_err(|e| Error::git(format!("write blob for {path}"), e))?,
                ),
                None => None,
            };
            ids.insert(path.as_str(), id);
        }
        let done = match index_file {
            Some(p) if p.is_absolute() => crate::git_index::update(p, &ids)?,
            Some(p) => {
                let base = self.workdir().unwrap_or(self.repo.path());
                crate::git_index::update(&base.join(p), &ids)?
            }
            None => crate::git_index::update_resuming(
                &self.repo.path().join("index"),
                &ids,
                &self.index_midstates(),
            )?,
        };
        if done {
            return Ok(());
        }
        self.stage_with_git(index_file, files)
    }

    /// [`Store::stage`] through `git update-index --index-info`.
    fn stage_with_git(&self, index_file: Option<&Path>, files: &Changes) -> Result<()> {
        let mut input = Vec::new();
        for (path, content) in files {
            match content {
                Some(bytes) => {
                    let id = self
                        .repo
                        .blob(bytes)
                        .map_err(|e| Error::git(format!("write blob for {path}"), e))?;
                    input.extend_from_slice(format!("100644 {id}\t{path}").as_bytes());
                }
                None => {
                    input.extend_from_slice(format!("0 {}\t{path}", Oid::ZERO_SHA1).as_bytes());
                }
            }
            input.push(0);
        }
        let mut c = self.git_index_command(index_file);
        // The index is a view of the tip, like the work-tree files beside it,
        // which are not fsync'd either: the journal redoes both after a killed
        // writer, and a power loss can leave both behind the tip (as git's
        // default settings can), never the commit. The index's fsync
        // (`core.fsync=index`, kept for hand commits) was a quarter of a
        // work-tree write at 100k files.
        c.args(["-c", "core.fsync=committed"]);
        c.args(["update-index", "-z", "--index-info"]);
        self.run_git(c, "update-index --index-info", Some(&input))?;
        Ok(())
    }

    /// The git operation in progress in the work tree (`merge`, `rebase`,
    /// `cherry-pick`, `revert`, `am`), if any, and the paths with conflicted
    /// index entries (also reported alone, as `conflicts`, when the index
    /// holds conflicts without an operation, e.g. after `git stash pop`).
    /// A bare store has no work tree, so nothing is ever in progress.
    pub fn merge_state(&self) -> Result<Option<(&'static str, Vec<String>)>> {
        use git2::RepositoryState as S;
        if self.workdir().is_none() {
            return Ok(None);
        }
        let state = match self.repo.state() {
            S::Merge => Some("merge"),
            S::Revert | S::RevertSequence => Some("revert"),
            S::CherryPick | S::CherryPickSequence => Some("cherry-pick"),
            S::Rebase | S::RebaseInteractive | S::RebaseMerge => Some("rebase"),
            S::ApplyMailbox | S::ApplyMailboxOrRebase => Some("am"),
            S::Clean | S::Bisect => None,
        };
        let mut conflicted = Vec::new();
        let mut index = self.repo.index().map_err(|e| Error::git("open index", e))?;
        index.read(false).map_err(|e| Error::git("read index", e))?;
        if index.has_conflicts() {
            let conflicts = index
                .conflicts()
                .map_err(|e| Error::git("read index conflicts", e))?;
            for c in conflicts.flatten() {
                let entry = c.our.or(c.their).or(c.ancestor);
                if let Some(e) = entry {
                    conflicted.push(String::from_utf8_lossy(&e.path).into_owned());
                }
            }
        }
        conflicted.sort();
        conflicted.dedup();
        // git runs post-merge before it removes MERGE_HEAD: a merge whose
        // commit is made (HEAD has MERGE_HEAD as a parent) is over.
        let state = match state {
            Some("merge") if conflicted.is_empty() && self.merge_concluded() => None,
            Some("rebase") if conflicted.is_empty() && self.rebase_concluded() => None,
            other => other,
        };
        Ok(match (state, conflicted.is_empty()) {
            (Some(s), _) => Some((s, conflicted)),
            (None, false) => Some(("conflict resolution", conflicted)),
            (None, true) => None,
        })
    }

    /// Whether git's state files say a merge, rebase, cherry-pick, revert or
    /// am has started in the work tree (cheap: the index is not read; see
    /// [`Store::merge_state`] for the whole answer).
    pub fn git_operation_started(&self) -> bool {
        use git2::RepositoryState as S;
        self.workdir().is_some() && !matches!(self.repo.state(), S::Clean | S::Bisect)
    }

    /// Whether a rebase has put the branch back: git runs post-rewrite
    /// after it re-attaches HEAD to the rebased branch and before it
    /// removes its state folder.
    fn rebase_concluded(&self) -> bool {
        let attached = self
            .repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string));
        attached.as_deref() == Some(self.branch.as_str())
    }

    /// Whether the tip is the merge commit of the MERGE_HEAD git still has.
    fn merge_concluded(&self) -> bool {
        let Some(merging) = fs::read_to_string(self.repo.path().join("MERGE_HEAD"))
            .ok()
            .and_then(|t| Oid::from_str(t.lines().next()?.trim()).ok())
        else {
            return false;
        };
        let Ok(Some(tip)) = self.tip() else {
            return false;
        };
        self.repo
            .find_commit(tip)
            .is_ok_and(|c| c.parent_count() > 1 && c.parent_ids().any(|p| p == merging))
    }

    /// Refuses a write while [`Store::merge_state`] says an operation is
    /// in progress: committing on HEAD now would hide the incoming side.
    /// Only git's state files are looked at first (cheap); a conflicted
    /// index entry without an operation shows as a hand edit of that path.
    pub(super) fn refuse_mid_merge(&self) -> Result<()> {
        if !self.git_operation_started() {
            return Ok(());
        }
        match self.merge_state()? {
            Some((state, conflicted)) => Err(Error::MergeInProgress { state, conflicted }),
            None => Ok(()),
        }
    }

    /// The commit being merged in (`MERGE_HEAD`, or the rebase's upstream),
    /// while a merge or rebase is in progress.
    pub fn incoming_head(&self) -> Option<Oid> {
        let git = self.repo.path();
        [
            "MERGE_HEAD",
            "rebase-merge/onto",
            "rebase-apply/onto",
            "CHERRY_PICK_HEAD",
            "REVERT_HEAD",
        ]
        .iter()
        .find_map(|f| {
            let text = fs::read_to_string(git.join(f)).ok()?;
            Oid::from_str(text.lines().next()?.trim()).ok()
        })
    }

    /// Abandons the operation in progress (`git merge --abort`, `git rebase
    /// --abort`, ...), restoring the work tree and index to the tip.
    pub fn abort_in_progress(&self) -> Result<()> {
        let Some((state, _)) = self.merge_state()? else {
            return Ok(());
        };
        let args: &[&str] = match state {
            "rebase" => &["rebase", "--abort"],
            "cherry-pick" => &["cherry-pick", "--abort"],
            "revert" => &["revert", "--abort"],
            "am" => &["am", "--abort"],
            "merge" => &["merge", "--abort"],
            _ => &["reset", "--merge"],
        };
        let mut c = self.git_index_command(None);
        c.args(args);
        self.run_git(c, &args.join(" "), None).map(|_| ())
    }

    /// git's three-way text merge of one file's contents (`git merge-file`):
    /// the merged bytes, or `None` when the sides truly conflict.
    pub fn merge_text(&self, base: &[u8], ours: &[u8], theirs: &[u8]) -> Result<Option<Vec<u8>>> {
        let dir = self.local_dir.join("merge-tmp");
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let stem = format!("{}-{}", std::process::id(), crate::event::rand_u128());
        let files: Vec<PathBuf> = ["ours", "base", "theirs"]
            .iter()
            .map(|n| dir.join(format!("{stem}.{n}")))
            .collect();
        for (file, bytes) in files.iter().zip([ours, base, theirs]) {
            fs::write(file, bytes).map_err(|e| Error::io("write", file, e))?;
        }
        let out = std::process::Command::new("git")
            .args(["merge-file", "-p", "-q"])
            .args(&files)
            .stdin(std::process::Stdio::null())
            .output();
        for file in &files {
            let _ = fs::remove_file(file);
        }
        let out = out.map_err(|e| Error::io("run git merge-file in", &dir, e))?;
        match out.status.code() {
            Some(0) => Ok(Some(out.stdout)),
            Some(n) if n > 0 && n < 128 => Ok(None),
            _ => Err(Error::GitCommand {
                args: "merge-file".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    /// git's effective hooks folder: `core.hooksPath` (relative to the work
    /// tree) if set, else `hooks/` in the common git folder.
    pub fn hooks_dir(&self) -> Result<PathBuf> {
        let cfg = self
            .repo
            .config()
            .map_err(|e| Error::git("read config", e))?;
        match cfg.get_path("core.hooksPath") {
            Ok(p) if p.is_absolute() => Ok(p),
            Ok(p) => Ok(self.workdir().unwrap_or(self.repo.path()).join(p)),
            Err(_) => Ok(self.repo.commondir().join("hooks")),
        }
    }

    /// Runs `git fsck --connectivity-only` through the git binary.
    pub fn git_connectivity_check(&self) -> Result<()> {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(self.repo.path())
            .args([
                "fsck",
                "--connectivity-only",
                "--no-progress",
                "--no-dangling",
            ])
            .output()
            .map_err(|e| Error::io("run git fsck in", self.repo.path(), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::GitCommand {
                args: "fsck --connectivity-only".into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        crate::failpoint::trace::remove(d);
        dir = d.parent();
    }
}
