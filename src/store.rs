//! The store: the one module that talks to git2, and the one transaction path.
//!
//! Invariants kept here:
//! - Every mutation goes through [`Store::transact`]: take the store lock, read
//!   the tip, let the caller plan changes against that snapshot, validate every
//!   changed canonical file, build trees from git objects (never through the
//!   work tree or the index), write one commit carrying the ledger trailers,
//!   and move the branch by compare-and-swap, retrying from the top if it
//!   moved. Only then are the work tree and the git index brought up to date,
//!   for the changed paths alone.
//! - Paths with uncommitted hand edits are never overwritten: the write is
//!   refused before any commit is made.
//! - An acknowledged write is durable: a commit's objects go into one pack
//!   whose files and folder are fsync'd before the branch moves, and libgit2
//!   fsyncs the moved ref. So the ref never points at objects a power loss
//!   could take.
//! - A crash between the ref update and the work-tree update is repaired by
//!   the next write through a small journal in `.cairn/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use git2::{ErrorCode, ObjectType, Oid, Repository, Tree};
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::ledger::{self, Event, EventDraft};
use crate::{idempotency, layout, pack, schema};

/// How a store is opened: clock, actor and lock settings chosen by the caller.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// A fixed clock (`CAIRN_NOW` in the CLI); `None` reads the system clock.
    pub now: Option<OffsetDateTime>,
    /// Who writes; `None` takes git's `user.name`/`user.email`, then a default.
    pub actor: Option<Actor>,
    /// Overrides `limits.lock_timeout_ms` of `cairn.yaml`.
    pub lock_timeout: Option<Duration>,
}

/// The author of commits, and the actor of ledger events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Display name; the ledger's `actor`.
    pub name: String,
    /// E-mail for the git signature.
    pub email: String,
}

impl Default for Actor {
    fn default() -> Self {
        Actor {
            name: "cairn".into(),
            email: "cairn@localhost".into(),
        }
    }
}

/// One planned change: a file written (`Some`) or removed (`None`).
pub type Changes = BTreeMap<String, Option<Vec<u8>>>;

/// What a transaction wants to commit.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The files to write or remove, by store-relative path.
    pub changes: Changes,
    /// The ledger event the commit records.
    pub event: EventDraft,
    /// Annotated tags (name under `refs/tags/`, message) to point at the new commit.
    pub tags: Vec<(String, String)>,
}

/// The result of a committed (or replayed) transaction.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The commit that holds the change.
    pub commit: Oid,
    /// The ledger event of that commit.
    pub event: Event,
    /// True when an idempotency key matched an earlier commit and nothing new was written.
    pub replayed: bool,
    /// Things that did not stop the write but need saying.
    pub warnings: Vec<String>,
}

/// A read-only view of the store at one commit.
pub struct Snapshot<'a> {
    store: &'a Store,
    commit: Option<Oid>,
    config: StoreConfig,
}

impl Snapshot<'_> {
    /// The commit this snapshot reads (`None` for an unborn branch).
    pub fn commit(&self) -> Option<Oid> {
        self.commit
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

/// A cairn store: a git repository with `cairn.yaml` at the tip of its branch.
pub struct Store {
    repo: Repository,
    branch: String,
    local_dir: PathBuf,
    options: StoreOptions,
    actor: Actor,
    parsed: std::cell::RefCell<ParsedFiles>,
}

/// Values parsed from blobs, by blob id and type: content-addressed, so an
/// entry is never stale. A process that writes a file and reads it back in
/// its next write (a server, a library user patching one run) finds the
/// value it wrote instead of parsing the file again. Holds a few entries.
#[derive(Default)]
struct ParsedFiles(Vec<((Oid, std::any::TypeId), Box<dyn std::any::Any + Send>)>);

impl ParsedFiles {
    const CAPACITY: usize = 16;

    fn get<T: Clone + 'static>(&self, blob: Oid) -> Option<T> {
        let key = (blob, std::any::TypeId::of::<T>());
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.downcast_ref::<T>().cloned())
    }

    fn put<T: Clone + Send + 'static>(&mut self, blob: Oid, value: T) {
        let key = (blob, std::any::TypeId::of::<T>());
        self.0.retain(|(k, _)| *k != key);
        if self.0.len() >= Self::CAPACITY {
            self.0.remove(0);
        }
        self.0.push((key, Box::new(value)));
    }
}

/// A commit as the ledger sees it.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// The commit id.
    pub id: Oid,
    /// Parent commit ids.
    pub parents: Vec<Oid>,
    /// The full commit message.
    pub message: String,
    /// Author name.
    pub author: String,
    /// Author time, seconds since the epoch.
    pub time: i64,
}

static GIT_INIT: Once = Once::new();

/// Sets libgit2's process-wide options once: fsync of the objects and refs
/// libgit2 writes (git2 has no switch for it), and no per-entry existence
/// check when building trees.
fn init_libgit2() {
    GIT_INIT.call_once(|| {
        git2::opts::strict_object_creation(false);
        // Reads do not re-hash every object with collision-detecting SHA-1
        // (a large share of a write's CPU); zlib's checksum still catches a
        // damaged object, and `git fsck --full` verifies every hash.
        git2::opts::strict_hash_verification(false);
        // SAFETY: git_libgit2_opts with ENABLE_FSYNC_GITDIR takes one int;
        // git2 already initialised libgit2 in the call above.
        let rc = unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as libc::c_int,
                1,
            )
        };
        debug_assert_eq!(rc, 0, "libgit2 accepts ENABLE_FSYNC_GITDIR");
        // libgit2 caches trees only up to 4 KiB, and a store's shard folders
        // hold hundreds of entries: every path lookup would read, inflate and
        // hash-verify them again. Keep trees up to 1 MiB in the object cache.
        // SAFETY: sets a process-wide libgit2 option once, before any repository is opened.
        let cached = unsafe { git2::opts::set_cache_object_limit(ObjectType::Tree, 1 << 20) };
        debug_assert!(cached.is_ok(), "libgit2 accepts a tree cache limit");
    });
}

fn not_found_to_none<T>(
    r: std::result::Result<T, git2::Error>,
) -> std::result::Result<Option<T>, git2::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).expect("UTC times always format")
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

impl Store {
    /// Makes a store at `path` (running `git init` first when needed) and
    /// records STORE_INIT as its first commit.
    pub fn init(path: &Path, bare: bool, options: StoreOptions) -> Result<Store> {
        init_libgit2();
        fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
        let repo = match Repository::open(path) {
            Ok(r) => r,
            Err(_) => {
                let mut init = git2::RepositoryInitOptions::new();
                init.bare(bare).initial_head("main").mkpath(true);
                Repository::init_opts(path, &init)
                    .map_err(|e| Error::git(format!("init {}", path.display()), e))?
            }
        };
        let store = Store::from_repo(repo, options)?;
        if store.is_store()? {
            return Err(Error::AlreadyAStore {
                path: path.to_path_buf(),
            });
        }
        let mut cfg = store
            .repo
            .config()
            .map_err(|e| Error::git("open config", e))?;
        // Hand commits through the git CLI are as durable as cairn's own.
        for (k, v) in [
            ("core.fsync", "committed,index"),
            ("core.fsyncMethod", "fsync"),
        ] {
            cfg.set_str(k, v)
                .map_err(|e| Error::git(format!("set {k}"), e))?;
        }
        store.transact(None, |snap| {
            let mut changes = Changes::new();
            changes.insert(
                layout::CONFIG.into(),
                Some(StoreConfig::initial_yaml().into_bytes()),
            );
            changes.insert(
                layout::GITIGNORE.into(),
                Some(with_lines(snap.read(layout::GITIGNORE)?, &[".cairn/"])),
            );
            changes.insert(
                layout::GITATTRIBUTES.into(),
                Some(with_lines(
                    snap.read(layout::GITATTRIBUTES)?,
                    &["*.yaml text eol=lf", "mirror/** linguist-generated=true"],
                )),
            );
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(ledger::EventType::StoreInit, "init cairn store")
                    .payload(serde_json::json!({"bare": bare})),
            })
        })?;
        Ok(store)
    }

    /// Opens the store at exactly `path` (a work tree or a bare repository).
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        init_libgit2();
        let repo = Repository::open(path).map_err(|e| Error::NotAStore {
            path: path.to_path_buf(),
            source: Some(e),
        })?;
        Self::checked(repo, path, options)
    }

    /// Finds the store containing `start`, walking up like git does.
    pub fn discover(start: &Path, options: StoreOptions) -> Result<Store> {
        init_libgit2();
        let repo = Repository::discover(start).map_err(|e| Error::NotAStore {
            path: start.to_path_buf(),
            source: Some(e),
        })?;
        Self::checked(repo, start, options)
    }

    fn checked(repo: Repository, path: &Path, options: StoreOptions) -> Result<Store> {
        let store = Store::from_repo(repo, options)?;
        if !store.is_store()? {
            return Err(Error::NotAStore {
                path: path.to_path_buf(),
                source: None,
            });
        }
        Ok(store)
    }

    fn from_repo(repo: Repository, options: StoreOptions) -> Result<Store> {
        let head = repo
            .find_reference("HEAD")
            .map_err(|e| Error::git("read HEAD", e))?;
        let branch = match head.symbolic_target() {
            Ok(Some(t)) => t.to_string(),
            _ => return Err(Error::DetachedHead),
        };
        let local_dir = match repo.workdir() {
            Some(w) => w.join(".cairn"),
            None => repo.path().join(".cairn"),
        };
        let actor = match &options.actor {
            Some(a) => a.clone(),
            None => repo
                .signature()
                .ok()
                .and_then(|s| {
                    Some(Actor {
                        name: s.name().ok()?.to_string(),
                        email: s.email().ok()?.to_string(),
                    })
                })
                .unwrap_or_default(),
        };
        drop(head);
        Ok(Store {
            repo,
            branch,
            local_dir,
            options,
            actor,
            parsed: Default::default(),
        })
    }

    fn is_store(&self) -> Result<bool> {
        match self.tip()? {
            Some(tip) => Ok(self.read_file(tip, layout::CONFIG)?.is_some()),
            None => Ok(false),
        }
    }

    /// The branch the store lives on (`refs/heads/...`).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The work tree, or `None` for a bare store.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The git directory.
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// The local-only folder (`.cairn/`): lock, caches, journals.
    pub fn local_dir(&self) -> &Path {
        &self.local_dir
    }

    /// Who this store writes as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The store clock.
    pub fn now(&self) -> OffsetDateTime {
        self.options.now.unwrap_or_else(OffsetDateTime::now_utc)
    }

    /// The commit at the tip of the store's branch.
    pub fn tip(&self) -> Result<Option<Oid>> {
        let r = not_found_to_none(self.repo.refname_to_id(&self.branch))
            .map_err(|e| Error::git(format!("read {}", self.branch), e))?;
        Ok(r)
    }

    /// The tip, or an error when the branch has no commit yet.
    pub fn require_tip(&self) -> Result<Oid> {
        self.tip()?.ok_or_else(|| Error::NotAStore {
            path: self.repo.path().to_path_buf(),
            source: None,
        })
    }

    /// The store configuration at the tip.
    pub fn config(&self) -> Result<StoreConfig> {
        self.config_at(self.tip()?)
    }

    fn config_at(&self, commit: Option<Oid>) -> Result<StoreConfig> {
        let Some(commit) = commit else {
            return Ok(StoreConfig::default());
        };
        let Some(blob) = self.blob_id(commit, layout::CONFIG)? else {
            return Ok(StoreConfig::default());
        };
        // Every transaction reads the config: parse each version once.
        self.parse_cached(blob, |bytes| {
            let value =
                schema::parse_document(layout::CONFIG, bytes, schema::ParseLimits::default())?;
            Ok(StoreConfig::from_value(value))
        })
    }

    /// The value `parse` makes of a blob, from the parsed-files cache when
    /// this process has seen the blob as a `T`.
    fn parse_cached<T: Clone + Send + 'static>(
        &self,
        blob: Oid,
        parse: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        if let Some(hit) = self.parsed.borrow().get::<T>(blob) {
            return Ok(hit);
        }
        let value = parse(&self.read_blob(blob)?)?;
        self.parsed.borrow_mut().put(blob, value.clone());
        Ok(value)
    }

    /// Resolves a revision (commit id, prefix, ref name) to a commit id.
    pub fn resolve(&self, rev: &str) -> Result<Oid> {
        let obj = self
            .repo
            .revparse_single(rev)
            .map_err(|_| Error::NotFound {
                what: format!("commit {rev}"),
            })?;
        obj.peel_to_commit()
            .map(|c| c.id())
            .map_err(|_| Error::NotFound {
                what: format!("commit {rev}"),
            })
    }

    fn tree_of(&self, commit: Oid) -> Result<Tree<'_>> {
        self.repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| Error::git(format!("read tree of {commit}"), e))
    }

    /// Records that `bytes` parse to `value`, for [`Snapshot::parsed`]: a
    /// writer calls it with what it committed, so its next read of the file
    /// costs a lookup. `value` must be what parsing `bytes` gives.
    pub fn remember_parsed<T: Clone + Send + 'static>(&self, bytes: &[u8], value: T) {
        if let Ok(blob) = Oid::hash_object(ObjectType::Blob, bytes) {
            self.parsed.borrow_mut().put(blob, value);
        }
    }

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
        let root = self.tree_of(commit)?;
        let tree = if dir.is_empty() {
            root
        } else {
            let entry = not_found_to_none(root.get_path(Path::new(dir)))
                .map_err(|e| Error::git(format!("look up {dir}"), e))?;
            match entry {
                Some(e) if e.kind() == Some(ObjectType::Tree) => self
                    .repo
                    .find_tree(e.id())
                    .map_err(|e| Error::git(format!("read {dir}"), e))?,
                _ => return Ok(Vec::new()),
            }
        };
        Ok(tree
            .iter()
            .filter_map(|e| {
                let name = e.name().ok()?.to_string();
                Some((name, e.kind() == Some(ObjectType::Tree)))
            })
            .collect())
    }

    /// Every file under `dir` at `commit` as (path, blob id, is_regular_file), sorted by path.
    pub fn walk_files(&self, commit: Oid, dir: &str) -> Result<Vec<(String, Oid, bool)>> {
        let root = self.tree_of(commit)?;
        let mut out = Vec::new();
        root.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                let path = format!("{parent}{}", entry.name().unwrap_or_default());
                if dir.is_empty() || path.starts_with(&format!("{dir}/")) {
                    let regular = matches!(entry.filemode(), 0o100644 | 0o100755);
                    out.push((path, entry.id(), regular));
                }
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

    /// A snapshot at the tip for reading.
    pub fn snapshot(&self) -> Result<Snapshot<'_>> {
        let commit = self.tip()?;
        Ok(Snapshot {
            store: self,
            commit,
            config: self.config_at(commit)?,
        })
    }

    /// The one transaction path. `build` plans the change against a snapshot
    /// of the tip and may be called more than once if the branch moves.
    ///
    /// With an idempotency `key` that an earlier commit already carries, the
    /// earlier result is returned and nothing is written.
    ///
    /// A tip that fails validation (a `git commit --no-verify` broke a rule)
    /// is refused with [`Error::TipInvalid`] until it is repaired.
    pub fn transact<F>(&self, key: Option<&str>, build: F) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        self.transact_with(key, true, build)
    }

    /// [`Store::transact`] for repairs: builds on the tip even when it fails
    /// validation. Only `fsck --repair` uses it.
    pub fn transact_repair<F>(&self, build: F) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        self.transact_with(None, false, build)
    }

    fn transact_with<F>(
        &self,
        key: Option<&str>,
        verify_tip: bool,
        mut build: F,
    ) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        let timeout = match self.options.lock_timeout {
            Some(t) => t,
            None => Duration::from_millis(self.config()?.limits.lock_timeout_ms),
        };
        let _lock = StoreLock::acquire(&self.local_dir, timeout)?;
        self.recover_worktree()?;
        const MAX_ATTEMPTS: u32 = 32;
        for _ in 0..MAX_ATTEMPTS {
            let snap = self.snapshot()?;
            if let Some(key) = key {
                if let Some(commit) = idempotency::lookup(self, key)? {
                    let event = ledger::event_of(self, commit)?;
                    return Ok(Committed {
                        commit,
                        event,
                        replayed: true,
                        warnings: Vec::new(),
                    });
                }
            }
            if let (true, Some(tip)) = (verify_tip, snap.commit) {
                let limits = schema::ParseLimits {
                    max_bytes: snap.config().limits.max_file_bytes,
                    max_depth: snap.config().limits.max_depth,
                };
                let findings = crate::rules::check_tip(self, tip, limits)?;
                if !findings.is_empty() {
                    return Err(Error::TipInvalid {
                        commit: tip.to_string(),
                        findings,
                    });
                }
            }
            let mut mutation = build(&snap)?;
            let limits = limits_for(&snap, &mutation.changes)?;
            let parsed =
                self.validate_changes(&snap, mutation.changes.iter(), &limits, !verify_tip)?;
            let planned: BTreeSet<String> = mutation.changes.keys().cloned().collect();
            crate::mirror::extend_parsed(self, &snap, &mut mutation.changes, parsed)?;
            // What the mirror added is checked too (paths, sizes), by the same limits.
            let added = mutation
                .changes
                .iter()
                .filter(|(p, _)| !planned.contains(*p));
            self.validate_changes(&snap, added, &limits, !verify_tip)?;
            let base_tree = match snap.commit {
                Some(c) => Some(self.tree_of(c)?),
                None => None,
            };
            self.check_hand_edits(base_tree.as_ref(), &mutation.changes)?;
            drop(base_tree);
            let now = self.now();
            let (message, event) = ledger::compose(
                &mutation.event,
                key,
                &self.actor.name,
                now,
                snap.commit,
                mutation.changes.keys().cloned().collect(),
            );
            let sig = git2::Signature::new(
                &self.actor.name,
                &self.actor.email,
                &git2::Time::new(now.unix_timestamp(), 0),
            )
            .map_err(|e| Error::git("make signature", e))?;
            let commit =
                self.write_commit_packed(snap.commit, &mutation.changes, &message, &sig)?;
            self.write_journal(snap.commit, commit, &mutation.changes, &mutation.tags)?;
            fail::fail_point!("store::before_cas");
            let moved = match snap.commit {
                Some(old) => self.repo.reference_matching(
                    &self.branch,
                    commit,
                    true,
                    old,
                    &format!("cairn: {}", event.event_type.as_str()),
                ),
                None => self.repo.reference(
                    &self.branch,
                    commit,
                    false,
                    &format!("cairn: {}", event.event_type.as_str()),
                ),
            };
            match moved {
                Ok(_) => {}
                Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists) => {
                    // Someone moved the branch (a hand commit, a pull): plan again on the new tip.
                    self.clear_journal();
                    continue;
                }
                Err(e) if e.code() == ErrorCode::Locked => {
                    // A git process holds the ref lock right now: nothing was written.
                    self.clear_journal();
                    return Err(Error::LockBusy {
                        path: self.repo.path().join(format!("{}.lock", self.branch)),
                        holder: "a git process".into(),
                        waited_ms: 0,
                    });
                }
                Err(e) => return Err(Error::git(format!("update {}", self.branch), e)),
            }
            fail::fail_point!("store::after_cas");
            let event = Event {
                commit: commit.to_string(),
                ..event
            };
            // The ref moved: the write is durable and acknowledged. What
            // follows only updates derived places; if it fails, the journal
            // stays and the next write finishes it.
            let mut warnings = Vec::new();
            let finish = self
                .create_tags(commit, &mutation.tags)
                .and_then(|()| self.sync_worktree(&mutation.changes));
            match finish {
                Ok(()) => self.clear_journal(),
                Err(e) => warnings.push(format!(
                    "committed {commit}, but the work tree or tags are not updated yet ({e}); the next write finishes it"
                )),
            }
            if let Err(e) = self.consolidate_packs() {
                warnings.push(format!(
                    "committed {commit}, but merging small packs failed ({e}); the next write tries again"
                ));
            }
            return Ok(Committed {
                commit,
                event,
                replayed: false,
                warnings,
            });
        }
        Err(Error::BranchUnstable {
            branch: self.branch.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Checks each changed file (path, size, episode immutability, schema)
    /// against `limits` and returns the parsed value of each changed
    /// canonical file. A `repair` may write an episode back to the content of
    /// its tag, and nothing else to an existing episode.
    fn validate_changes<'c>(
        &self,
        snap: &Snapshot<'_>,
        changes: impl Iterator<Item = (&'c String, &'c Option<Vec<u8>>)>,
        limits: &crate::config::Limits,
        repair: bool,
    ) -> Result<BTreeMap<String, Value>> {
        let mut parsed = BTreeMap::new();
        for (path, content) in changes {
            if !crate::git_index::plain_path(path) {
                return Err(Error::Invalid {
                    file: path.clone(),
                    pointer: String::new(),
                    rule: "safe_path",
                    message:
                        "paths must be relative, without `.`/`..` segments, `.git` or empty parts"
                            .into(),
                });
            }
            if layout::schema_for(path) == Some("episode")
                && snap.read(path)?.is_some()
                && !(repair && self.episode_tag_message(path)? == *content)
            {
                return Err(Error::Policy {
                    rule: "EPISODE_IMMUTABLE",
                    message: format!("{path} is an episode: episodes are never edited or deleted"),
                });
            }
            let Some(bytes) = content else { continue };
            if bytes.len() as u64 > limits.max_file_bytes {
                return Err(Error::TooLarge {
                    file: path.clone(),
                    bytes: bytes.len() as u64,
                    limit: limits.max_file_bytes,
                    setting: "max_file_bytes",
                });
            }
            if let Some(name) = layout::schema_for(path) {
                let value = schema::parse_document(
                    path,
                    bytes,
                    schema::ParseLimits {
                        max_bytes: limits.max_file_bytes,
                        max_depth: limits.max_depth,
                    },
                )?;
                schema::validate(name, path, &value)?;
                parsed.insert(path.clone(), value);
            }
        }
        Ok(parsed)
    }

    /// The message of the tag of the episode at `path`, if it has one.
    fn episode_tag_message(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some((run, ep)) = layout::episode_of_path(path) else {
            return Ok(None);
        };
        let name = layout::episode_tag(run, ep);
        Ok(self
            .tags_with_prefix(&name)?
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.into_bytes()))
    }

    /// Refuses when a path about to change differs, in the work tree or the
    /// index, from what the tip holds.
    fn check_hand_edits(&self, base: Option<&Tree<'_>>, changes: &Changes) -> Result<()> {
        let Some(workdir) = self.repo.workdir() else {
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
            .filter(|p| !p.starts_with("mirror/"))
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
    fn sync_worktree(&self, changes: &Changes) -> Result<()> {
        let Some(workdir) = self.repo.workdir() else {
            return Ok(());
        };
        for (path, content) in changes {
            let full = workdir.join(path);
            match content {
                Some(bytes) => write_atomic(&full, bytes, false)?,
                None => {
                    match fs::remove_file(&full) {
                        Ok(()) => {}
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
        self.mark_index_write(true);
        let staged = match crate::git_index::update(&self.repo.path().join("index"), &ids) {
            Ok(true) => Ok(()),
            Ok(false) => self.stage(None, changes),
            Err(e) => Err(e),
        };
        self.mark_index_write(false);
        staged
    }

    /// The marker that says a cairn process is inside an index write (so an
    /// `index.lock` left by a crash is known to be cairn's).
    fn index_marker(&self) -> PathBuf {
        self.local_dir.join("index-writing")
    }

    /// Sets or clears the marker, rewriting one file in place.
    fn mark_index_write(&self, writing: bool) {
        let _ = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.index_marker())
            .and_then(|mut f| if writing { f.write_all(b"1") } else { Ok(()) });
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

    /// Writes the commit for `changes` on top of `base` as one pack (see
    /// [`crate::pack`]): the new blobs, the trees along the changed paths and
    /// the commit are serialized and hashed here, from the base trees, and
    /// written as one `.pack` + `.idx`. Loose objects would cost a new file
    /// each, and libgit2's object writes re-scan the pack folder for every
    /// new object.
    fn write_commit_packed(
        &self,
        base: Option<Oid>,
        changes: &Changes,
        message: &str,
        sig: &git2::Signature<'_>,
    ) -> Result<Oid> {
        let mut objects = Vec::new();
        let base_tree = match base {
            Some(c) => Some(self.tree_of(c)?),
            None => None,
        };
        let mut nested: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for (k, v) in changes {
            nested.insert(k.clone(), v.clone());
        }
        let tree = match self.build_tree(base_tree.as_ref(), &nested, &mut objects)? {
            Some(id) => id,
            // An empty store root: the empty tree.
            None => new_object(pack::Kind::Tree, Vec::new(), &mut objects),
        };
        let mut text = format!("tree {}\n", pack::hex(&tree));
        if let Some(p) = base {
            text.push_str(&format!("parent {p}\n"));
        }
        let who = signature_line(sig);
        text.push_str(&format!("author {who}\ncommitter {who}\n\n{message}"));
        let commit = new_object(pack::Kind::Commit, text.into_bytes(), &mut objects);
        pack::write(&self.repo.path().join("objects").join("pack"), &mut objects)?;
        self.repo
            .odb()
            .and_then(|o| o.refresh())
            .map_err(|e| Error::git("refresh object database", e))?;
        Oid::from_bytes(&commit).map_err(|e| Error::git("make commit id", e))
    }

    /// The tree `base` becomes with `changes` (paths relative to it), its
    /// new objects pushed to `out`; `None` when nothing is left in it.
    fn build_tree(
        &self,
        base: Option<&Tree<'_>>,
        changes: &BTreeMap<String, Option<Vec<u8>>>,
        out: &mut Vec<pack::Object>,
    ) -> Result<Option<[u8; 20]>> {
        // name → (mode, id)
        let mut entries: BTreeMap<Vec<u8>, (i32, [u8; 20])> = BTreeMap::new();
        if let Some(t) = base {
            for e in t.iter() {
                let id = e
                    .id()
                    .as_bytes()
                    .try_into()
                    .expect("SHA-1 ids are 20 bytes");
                entries.insert(e.name_bytes().to_vec(), (e.filemode(), id));
            }
        }
        let mut sub: BTreeMap<&str, BTreeMap<String, Option<Vec<u8>>>> = BTreeMap::new();
        for (path, content) in changes {
            match path.split_once('/') {
                Some((dir, rest)) => {
                    sub.entry(dir)
                        .or_default()
                        .insert(rest.to_string(), content.clone());
                }
                None => match content {
                    Some(bytes) => {
                        let id = new_object(pack::Kind::Blob, bytes.clone(), out);
                        entries.insert(path.as_bytes().to_vec(), (0o100644, id));
                    }
                    None => {
                        entries.remove(path.as_bytes());
                    }
                },
            }
        }
        for (dir, inner) in sub {
            let existing = match entries.get(dir.as_bytes()) {
                Some((mode, id)) if *mode == 0o040000 => {
                    let oid = Oid::from_bytes(id).map_err(|e| Error::git("read a tree id", e))?;
                    Some(
                        self.repo
                            .find_tree(oid)
                            .map_err(|e| Error::git(format!("read tree {dir}"), e))?,
                    )
                }
                _ => None,
            };
            match self.build_tree(existing.as_ref(), &inner, out)? {
                Some(id) => {
                    entries.insert(dir.as_bytes().to_vec(), (0o040000, id));
                }
                None => {
                    entries.remove(dir.as_bytes());
                }
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        // git orders entries by name, a folder's name as if it ended in '/'.
        let mut sorted: Vec<(Vec<u8>, i32, [u8; 20])> = entries
            .into_iter()
            .map(|(name, (mode, id))| {
                let mut key = name;
                if mode == 0o040000 {
                    key.push(b'/');
                }
                (key, mode, id)
            })
            .collect();
        sorted.sort();
        let mut data = Vec::with_capacity(sorted.len() * 48);
        for (mut name, mode, id) in sorted {
            if mode == 0o040000 {
                name.pop();
            }
            data.extend_from_slice(format!("{mode:o} ").as_bytes());
            data.extend_from_slice(&name);
            data.push(0);
            data.extend_from_slice(&id);
        }
        Ok(Some(new_object(pack::Kind::Tree, data, out)))
    }

    /// Keeps the number of packs small: every write adds one, so once
    /// [`ROLLUP_AT`] or more small packs break the geometric progression
    /// (each pack kept holds at least twice the objects of all smaller packs
    /// together), they are merged into one. Packs with a `.keep` or
    /// `.promisor` file are left alone. Runs under the store lock; the new
    /// pack is durable before the merged ones are deleted. Returns how many
    /// packs were merged.
    fn consolidate_packs(&self) -> Result<usize> {
        let dir = self.repo.path().join("objects").join("pack");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut packs: Vec<(u64, PathBuf)> = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp_pack_cairn_") {
                // Every cairn pack is written under the store lock we hold:
                // this one was left by a writer that died.
                let _ = fs::remove_file(e.path());
                continue;
            }
            let Some(stem) = name.strip_suffix(".idx") else {
                continue;
            };
            let stem = dir.join(stem);
            let kept = ["keep", "promisor"]
                .iter()
                .any(|ext| stem.with_extension(ext).exists());
            if let (false, Some(n)) = (kept, pack::object_count(&e.path())) {
                packs.push((u64::from(n), stem));
            }
        }
        packs.sort();
        let mut rollup = 0;
        let mut smaller = 0u64;
        for (j, (n, _)) in packs.iter().enumerate() {
            if *n < 2 * smaller {
                rollup = j + 1;
            }
            smaller += n;
        }
        if rollup < ROLLUP_AT {
            return Ok(0);
        }
        let merged = &packs[..rollup];
        // Where each object sits: the first merged pack listing it, its CRC
        // and the byte range of its entry.
        let mut packed = Vec::with_capacity(merged.len());
        let mut at: BTreeMap<[u8; 20], (usize, u32, usize, usize)> = BTreeMap::new();
        for (i, (_, stem)) in merged.iter().enumerate() {
            let idx = stem.with_extension("idx");
            let unreadable = || Error::Integrity {
                subject: idx.display().to_string(),
                message: "not a readable version 2 pack index".into(),
            };
            let mut entries = pack::index_entries(&idx).ok_or_else(unreadable)?;
            let file = stem.with_extension("pack");
            let bytes = fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
            entries.sort_by_key(|e| e.2);
            let ends: Vec<u64> = entries
                .iter()
                .skip(1)
                .map(|e| e.2)
                .chain([bytes.len().saturating_sub(20) as u64])
                .collect();
            for ((id, crc, start), end) in entries.into_iter().zip(ends) {
                if start > end || end as usize > bytes.len() {
                    return Err(unreadable());
                }
                at.entry(id)
                    .or_insert((i, crc, start as usize, end as usize));
            }
            packed.push(bytes);
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| Error::git("open object database", e))?;
        let mut writer = pack::Writer::new(&dir, at.len())?;
        for (id, (i, crc, start, end)) in at {
            let entry = &packed[i][start..end];
            // Whole objects are copied as they are; deltas (from git's own
            // packs) and anything whose CRC does not check are re-read.
            if (1..=4).contains(&pack::entry_type(entry)) && crc32fast::hash(entry) == crc {
                writer.add_raw(id, crc, entry)?;
                continue;
            }
            let oid = Oid::from_bytes(&id).map_err(|e| Error::git("read a pack index", e))?;
            let obj = odb
                .read(oid)
                .map_err(|e| Error::git(format!("read object {oid}"), e))?;
            writer.add(id, pack_kind(obj.kind()), obj.data())?;
        }
        // The new pack is fsync'd before the merged ones go.
        let fresh = writer.finish()?.with_extension("");
        // A multi-pack index may list the merged packs; it is optional, and
        // git rebuilds it when asked to.
        let _ = fs::remove_file(dir.join("multi-pack-index"));
        for (_, stem) in merged {
            if *stem == fresh {
                continue;
            }
            for ext in ["idx", "pack", "rev", "bitmap", "mtimes"] {
                let _ = fs::remove_file(stem.with_extension(ext));
            }
        }
        odb.refresh()
            .map_err(|e| Error::git("refresh object database", e))?;
        Ok(merged.len())
    }

    fn journal_path(&self) -> PathBuf {
        self.local_dir.join("worktree-journal")
    }

    /// Records what a commit is about to do after its ref moves (work-tree
    /// paths to update, tags to create), so a crash in between can be
    /// finished by the next write.
    fn write_journal(
        &self,
        old: Option<Oid>,
        new: Oid,
        changes: &Changes,
        tags: &[(String, String)],
    ) -> Result<()> {
        let has_worktree = self.repo.workdir().is_some();
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
        // pay for most on ext4. A torn journal only makes recovery do less.
        fs::create_dir_all(&self.local_dir).map_err(|e| Error::io("create", &self.local_dir, e))?;
        fs::write(self.journal_path(), text.as_bytes())
            .map_err(|e| Error::io("write", self.journal_path(), e))
    }

    /// Creates annotated tags pointing at `commit`; an existing tag with the
    /// same target is left alone.
    fn create_tags(&self, commit: Oid, tags: &[(String, String)]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let object = self
            .repo
            .find_object(commit, Some(ObjectType::Commit))
            .map_err(|e| Error::git(format!("read commit {commit}"), e))?;
        let sig = git2::Signature::new(
            &self.actor.name,
            &self.actor.email,
            &git2::Time::new(self.now().unix_timestamp(), 0),
        )
        .map_err(|e| Error::git("make signature", e))?;
        for (name, message) in tags {
            let existing = not_found_to_none(self.repo.refname_to_id(&format!("refs/tags/{name}")))
                .map_err(|e| Error::git(format!("read tag {name}"), e))?;
            if existing.is_some() {
                continue;
            }
            self.repo
                .tag(name, &object, &sig, message, false)
                .map_err(|e| Error::git(format!("create tag {name}"), e))?;
        }
        Ok(())
    }

    /// An empty journal means nothing is pending.
    fn clear_journal(&self) {
        if let Ok(f) = OpenOptions::new().write(true).open(self.journal_path()) {
            let _ = f.set_len(0);
        }
    }

    /// Finishes what a crashed writer left half done after its ref moved:
    /// journalled tags are created, and each journalled path still showing
    /// the old commit's content is brought to the tip.
    fn recover_worktree(&self) -> Result<()> {
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
        if let Some(workdir) = self.repo.workdir() {
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
                let ours = |v: Option<Oid>| v == old_blob || v == tip_blob;
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
}

/// The limits a write is checked against: those of the config it writes, if
/// it writes one, else the tip's.
fn limits_for(snap: &Snapshot<'_>, changes: &Changes) -> Result<crate::config::Limits> {
    Ok(match changes.get(layout::CONFIG) {
        Some(Some(bytes)) => {
            let v = schema::parse_document(layout::CONFIG, bytes, schema::ParseLimits::default())?;
            schema::validate("store_config", layout::CONFIG, &v)?;
            StoreConfig::from_value(v).limits
        }
        _ => snap.config().limits.clone(),
    })
}

/// Hashes an object as git does, pushes it to `out` and returns its id.
fn new_object(kind: pack::Kind, data: Vec<u8>, out: &mut Vec<pack::Object>) -> [u8; 20] {
    let id = pack::object_id(kind, &data);
    out.push(pack::Object { id, kind, data });
    id
}

/// `Name <email> seconds +hhmm`, as commit headers write a signature.
fn signature_line(sig: &git2::Signature<'_>) -> String {
    let when = sig.when();
    let offset = when.offset_minutes();
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    format!(
        "{} <{}> {} {sign}{:02}{:02}",
        String::from_utf8_lossy(sig.name_bytes()),
        String::from_utf8_lossy(sig.email_bytes()),
        when.seconds(),
        offset / 60,
        offset % 60
    )
}

/// Packs above this many that break the geometric progression are merged
/// (see [`Store::consolidate_packs`]).
const ROLLUP_AT: usize = 8;

fn pack_kind(kind: ObjectType) -> pack::Kind {
    match kind {
        ObjectType::Commit => pack::Kind::Commit,
        ObjectType::Tree => pack::Kind::Tree,
        ObjectType::Tag => pack::Kind::Tag,
        _ => pack::Kind::Blob,
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

fn with_lines(existing: Option<Vec<u8>>, lines: &[&str]) -> Vec<u8> {
    let mut text = existing
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    for line in lines {
        if !text.lines().any(|l| l.trim() == *line) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    text.into_bytes()
}

fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Writes a file durably-if-asked: temp file in the same folder, optional
/// fsync, rename, and folder fsync.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    if durable {
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))?;
    if durable {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The store lock: an OS file lock on `.cairn/lock`, so a lock held by a
/// process that died is released by the kernel and recovered automatically.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the store lock, waiting up to `timeout`.
    pub fn acquire(local_dir: &Path, timeout: Duration) -> Result<StoreLock> {
        Self::acquire_named(local_dir, "lock", timeout)
    }

    /// Takes the lock file `name` in `local_dir`, waiting up to `timeout`.
    pub fn acquire_named(local_dir: &Path, name: &str, timeout: Duration) -> Result<StoreLock> {
        fs::create_dir_all(local_dir).map_err(|e| Error::io("create", local_dir, e))?;
        let path = local_dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(Error::LockBusy {
                            path,
                            holder: if holder.is_empty() {
                                "an unknown process".into()
                            } else {
                                holder.to_string()
                            },
                            waited_ms: start.elapsed().as_millis() as u64,
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
        }
        // Who holds it, for the message another writer prints when it times out.
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("pid {}\n", std::process::id()).as_bytes());
        Ok(StoreLock { _file: file })
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

impl Store {
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

/// Hand commits: reading and writing the git index that `git commit` is
/// building, for the store's hooks. These go through git's own plumbing
/// (`diff-index`, `update-index`): the index is git's file, the hook runs
/// inside a git command, and git handles every index format (split, sparse,
/// v4) and skips re-hashing a large index on read, which libgit2 does not.
impl Store {
    /// `git` for this repository, committing to `index_file` (else the default index).
    fn git_index_command(&self, index_file: Option<&Path>) -> std::process::Command {
        let mut c = std::process::Command::new("git");
        c.arg("--git-dir").arg(self.repo.path());
        if let Some(w) = self.repo.workdir() {
            c.arg("--work-tree").arg(w).current_dir(w);
        }
        match index_file {
            Some(p) if p.is_absolute() => {
                c.env("GIT_INDEX_FILE", p);
            }
            Some(p) => {
                let base = self.repo.workdir().unwrap_or(self.repo.path());
                c.env("GIT_INDEX_FILE", base.join(p));
            }
            None => {
                c.env_remove("GIT_INDEX_FILE");
            }
        }
        c
    }

    fn run_git(
        &self,
        mut c: std::process::Command,
        what: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        use std::process::Stdio;
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

    /// The size of a blob in bytes, without reading it.
    pub fn blob_size(&self, id: Oid) -> Result<u64> {
        let odb = self.repo.odb().map_err(|e| Error::git("open odb", e))?;
        let (size, _) = odb
            .read_header(id)
            .map_err(|e| Error::git(format!("read blob {id}"), e))?;
        Ok(size as u64)
    }

    /// Stages file contents (or removals) in a git index in one update,
    /// writing the blobs first; regular, non-executable files only.
    pub fn stage(&self, index_file: Option<&Path>, files: &Changes) -> Result<()> {
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

    /// git's effective hooks folder: `core.hooksPath` (relative to the work
    /// tree) if set, else `hooks/` in the common git folder.
    pub fn hooks_dir(&self) -> Result<PathBuf> {
        let cfg = self
            .repo
            .config()
            .map_err(|e| Error::git("read config", e))?;
        match cfg.get_path("core.hooksPath") {
            Ok(p) if p.is_absolute() => Ok(p),
            Ok(p) => Ok(self.repo.workdir().unwrap_or(self.repo.path()).join(p)),
            Err(_) => Ok(self.repo.commondir().join("hooks")),
        }
    }

    /// The newest commit reachable from `from` that changed `path` (against
    /// its first parent), looking at most `limit` commits back.
    pub fn last_change(&self, from: Oid, path: &str, limit: usize) -> Result<Option<Oid>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(bare: bool) -> (tempfile::TempDir, Store) {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::init(dir.path(), bare, StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn put(store: &Store, changes: Vec<(&str, Option<&str>)>) -> Result<Committed> {
        store.transact(None, |_| {
            Ok(Mutation {
                tags: Vec::new(),
                changes: changes
                    .iter()
                    .map(|(p, c)| (p.to_string(), c.map(|c| c.as_bytes().to_vec())))
                    .collect(),
                event: EventDraft::new(ledger::EventType::ManualEdit, "test"),
            })
        })
    }

    #[test]
    fn nested_writes_and_deletes_build_trees_from_objects() {
        let (dir, store) = fresh(false);
        put(
            &store,
            vec![("a/b/c.txt", Some("1")), ("a/d.txt", Some("2"))],
        )
        .unwrap();
        let tip = store.tip().unwrap().unwrap();
        assert_eq!(
            store.read_file(tip, "a/b/c.txt").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/b/c.txt")).unwrap(),
            "1"
        );
        // Deleting the last file of a folder removes the folder from the tree and the work tree.
        put(&store, vec![("a/b/c.txt", None)]).unwrap();
        let tip = store.tip().unwrap().unwrap();
        assert!(store
            .list_dir(tip, "a")
            .unwrap()
            .iter()
            .all(|(n, _)| n != "b"));
        assert!(!dir.path().join("a/b").exists());
        let changed: Vec<String> = store
            .changed_paths(tip)
            .unwrap()
            .into_iter()
            .filter(|p| !p.starts_with("mirror/"))
            .collect();
        assert_eq!(changed, vec!["a/b/c.txt".to_string()]);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let (_dir, store) = fresh(true);
        for p in ["../x", "/abs", "a//b", ".git/config", "a/./b"] {
            let err = put(&store, vec![(p, Some("x"))]).unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT", "{p}");
        }
    }

    #[test]
    fn canonical_files_are_validated_on_write() {
        let (_dir, store) = fresh(true);
        let before = store.tip().unwrap();
        let err = put(
            &store,
            vec![("runs/00/run_x/working_set.yaml", Some("objective: 1\n"))],
        )
        .unwrap_err();
        assert_eq!(err.category(), crate::Category::Validation);
        assert!(err.to_string().contains("working_set.yaml"));
        assert_eq!(store.tip().unwrap(), before);
    }

    #[test]
    fn oversized_files_are_refused() {
        let (_dir, store) = fresh(true);
        let big = "x".repeat(2 * 1024 * 1024);
        let err = put(&store, vec![("notes.txt", Some(&big))]).unwrap_err();
        assert_eq!(err.code(), "TOO_LARGE");
    }

    #[test]
    fn the_lock_times_out_with_a_transient_error_naming_it() {
        let (_dir, store) = fresh(true);
        let _held = StoreLock::acquire(store.local_dir(), Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        // flock locks are per open file description: a second open in this process contends.
        let err = StoreLock::acquire(store.local_dir(), Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(err.category(), crate::Category::Transient);
        assert!(err.to_string().contains("lock"));
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
    }

    #[test]
    fn rfc3339_has_milliseconds_and_parses_back() {
        let t = parse_rfc3339("2026-01-18T00:00:00+02:00").unwrap();
        assert_eq!(rfc3339(t), "2026-01-17T22:00:00.000Z");
    }
}
