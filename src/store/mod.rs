//! The store: the git layer and the one transaction path.
//!
//! This module sits below every domain module: it knows paths, bytes, git
//! objects, refs, the work tree and the ledger's commit format
//! ([`crate::event`]), and nothing of runs, memory or the mirror. What the
//! layers above add to every write (the tip check, derived files such as the
//! mirror) reaches it as a [`Steps`] value handed in when the store is opened.
//!
//! - [`read`]: the snapshot a transaction plans against, and reads of files,
//!   folders, blobs and tags at a commit.
//! - [`history`]: commits, ancestry, and tree diffs that descend only into
//!   changed subtrees.
//! - [`transaction`]: [`Store::transact`], validation of changed files.
//! - [`objects`]: one pack per commit, pack merging, annotated tags.
//! - [`journal`]: finishing a write that crashed after its ref moved.
//! - [`worktree`]: the work tree and git's index, and git plumbing for hand
//!   commits.
//! - [`lock`]: the store lock and atomic file writes.
//! - [`remote`] and [`bundle`]: fetch, push and git bundles through the
//!   user's `git` binary.
//! - [`idempotency`]: idempotency keys.
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

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use git2::{ErrorCode, ObjectType, Oid, Repository, Tree};
use time::OffsetDateTime;

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::{layout, schema};

pub mod bundle;
pub mod history;
pub mod idempotency;
pub mod identity;
mod journal;
pub mod lock;
mod objects;
pub mod read;
pub mod remote;
pub mod transaction;
mod worktree;

pub use crate::event::{parse_rfc3339, rfc3339, CommitInfo};
pub use history::PathChange;
pub use lock::{write_atomic, StoreLock};
pub use read::{parse_yaml, Snapshot};
pub use remote::Pushed;
pub use transaction::{Committed, Mutation, NoSteps, Steps};

/// How a store is opened: clock, actor and lock settings chosen by the caller.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// A fixed clock (`CAIRN_NOW` in the CLI); `None` reads the system clock.
    pub now: Option<OffsetDateTime>,
    /// Who writes (author and committer); `None` follows git's rules (see
    /// [`identity`]) with `git_env`, else takes git's
    /// `user.name`/`user.email`, then a default.
    pub actor: Option<Actor>,
    /// Overrides `limits.lock_timeout_ms` of `cairn.yaml`.
    pub lock_timeout: Option<Duration>,
    /// The environment git's identity rules read (`GIT_AUTHOR_NAME`,
    /// `GIT_CONFIG_GLOBAL`, ...), when no `actor` is given.
    pub git_env: Option<identity::GitEnv>,
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

/// The repository config key naming a store's dedicated branch.
pub const DEDICATED_BRANCH_KEY: &str = "cairn.branch";

/// One planned change: a file written (`Some`) or removed (`None`).
pub type Changes = BTreeMap<String, Option<Vec<u8>>>;

/// A cairn store: a git repository with `cairn.yaml` at the tip of its branch.
pub struct Store {
    repo: Repository,
    branch: String,
    /// Whether the store's branch is checked out in `repo`'s work tree (a
    /// store on a dedicated branch of a code repository works bare).
    worktree: bool,
    local_dir: PathBuf,
    options: StoreOptions,
    actor: Actor,
    /// Who commits (the same as `actor` unless git's rules say otherwise).
    committer: Actor,
    /// What the layers above add to every write.
    steps: Arc<dyn Steps>,
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

impl Store {
    /// Makes a store at `path` (running `git init` first when needed) and
    /// commits `first` as its first commit: the layers above decide what a
    /// new store holds (see `Store::init`). Refuses a repository whose
    /// branch already holds a store.
    pub fn init_with<F>(
        path: &Path,
        bare: bool,
        options: StoreOptions,
        steps: Arc<dyn Steps>,
        first: F,
    ) -> Result<Store>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
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
        let store = Store::from_repo(repo, options, steps)?;
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
        store.transact(None, first)?;
        Ok(store)
    }

    /// Keeps a store on branch `branch` of the git repository around `path`
    /// (a code repository), beside the code: the branch is recorded as
    /// `cairn.branch` in the repository's own config and the store works on
    /// it as a bare store, never touching the code's work tree or index.
    /// When the branch (or a remote's branch of that name, which becomes the
    /// local branch) already holds a store, the repository is attached to it;
    /// otherwise `first` makes the store's first commit, with no parent.
    pub fn init_on_branch_with<F>(
        path: &Path,
        branch: &str,
        options: StoreOptions,
        steps: Arc<dyn Steps>,
        first: F,
    ) -> Result<(Store, bool)>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        init_libgit2();
        if !crate::git_index::plain_path(branch) || branch.contains(['.', ' ', ':', '~', '^']) {
            return Err(Error::Invalid {
                file: "--branch".into(),
                pointer: String::new(),
                rule: "branch_name",
                message: format!(
                    "{branch:?} is not a plain branch name (letters, digits, '-', '_', '/')"
                ),
            });
        }
        let repo = Repository::discover(path).map_err(|e| Error::NotAStore {
            path: path.to_path_buf(),
            source: Some(e),
        })?;
        let full = format!("refs/heads/{branch}");
        if not_found_to_none(repo.refname_to_id(&full))
            .map_err(|e| Error::git(format!("read {full}"), e))?
            .is_none()
        {
            // A clone of a repository whose store lives on `branch`.
            let remote = repo
                .references_glob(&format!("refs/remotes/*/{branch}"))
                .map_err(|e| Error::git("list remote branches", e))?
                .flatten()
                .find_map(|r| r.target());
            if let Some(id) = remote {
                repo.reference(
                    &full,
                    id,
                    false,
                    "cairn: the store's branch from its remote",
                )
                .map_err(|e| Error::git(format!("create {full}"), e))?;
            }
        }
        repo.config()
            .and_then(|c| c.open_level(git2::ConfigLevel::Local))
            .and_then(|mut c| c.set_str(DEDICATED_BRANCH_KEY, branch))
            .map_err(|e| Error::git(format!("set {DEDICATED_BRANCH_KEY}"), e))?;
        let store = Store::from_repo(repo, options, steps)?;
        if store.is_store()? {
            return Ok((store, false));
        }
        store.transact(None, first)?;
        Ok((store, true))
    }

    /// Opens the store at exactly `path` (a work tree or a bare repository),
    /// its writes taking `steps`.
    pub fn open_with(path: &Path, options: StoreOptions, steps: Arc<dyn Steps>) -> Result<Store> {
        init_libgit2();
        let repo = Repository::open(path).map_err(|e| Error::NotAStore {
            path: path.to_path_buf(),
            source: Some(e),
        })?;
        Self::checked(repo, path, options, steps)
    }

    /// Finds the store containing `start`, walking up like git does; its
    /// writes take `steps`.
    pub fn discover_with(
        start: &Path,
        options: StoreOptions,
        steps: Arc<dyn Steps>,
    ) -> Result<Store> {
        init_libgit2();
        let repo = Repository::discover(start).map_err(|e| Error::NotAStore {
            path: start.to_path_buf(),
            source: Some(e),
        })?;
        Self::checked(repo, start, options, steps)
    }

    fn checked(
        repo: Repository,
        path: &Path,
        options: StoreOptions,
        steps: Arc<dyn Steps>,
    ) -> Result<Store> {
        let store = Store::from_repo(repo, options, steps)?;
        if !store.is_store()? {
            return Err(Error::NotAStore {
                path: path.to_path_buf(),
                source: None,
            });
        }
        Ok(store)
    }

    fn from_repo(repo: Repository, options: StoreOptions, steps: Arc<dyn Steps>) -> Result<Store> {
        let head = repo
            .find_reference("HEAD")
            .map_err(|e| Error::git("read HEAD", e))?;
        let checked_out = match head.symbolic_target() {
            Ok(Some(t)) => Some(t.to_string()),
            // A rebase detaches HEAD while it replays commits: the branch
            // being rebased is the store's (writes wait for the rebase to
            // finish; git's merge driver needs the store meanwhile).
            _ => ["rebase-merge/head-name", "rebase-apply/head-name"]
                .iter()
                .find_map(|f| std::fs::read_to_string(repo.path().join(f)).ok())
                .map(|name| name.trim().to_string())
                .filter(|name| name.starts_with("refs/heads/")),
        };
        // A store on a dedicated branch of a code repository (`cairn init
        // --branch`): `cairn.branch` in the repository's config names it.
        // Unless that branch is checked out here (a `git worktree` for
        // editing it), the store works as a bare one: the code's work tree
        // and index are never touched.
        let dedicated = repo
            .config()
            .ok()
            .and_then(|c| c.get_string(DEDICATED_BRANCH_KEY).ok())
            .filter(|b| !b.is_empty());
        let (branch, worktree) = match (dedicated, checked_out) {
            (Some(b), head) => {
                let full = format!("refs/heads/{b}");
                let here = head.as_deref() == Some(full.as_str());
                (full, here)
            }
            (None, Some(head)) => (head, true),
            (None, None) => return Err(Error::DetachedHead),
        };
        let shared = repo
            .config()
            .ok()
            .and_then(|c| c.get_string(DEDICATED_BRANCH_KEY).ok())
            .is_some();
        let local_dir = match (shared, repo.workdir()) {
            // One lock and journal for every worktree of the repository.
            (true, _) => repo.commondir().join("cairn"),
            (false, Some(w)) => w.join(".cairn"),
            (false, None) => repo.path().join(".cairn"),
        };
        let (actor, committer) = match (&options.actor, &options.git_env) {
            (Some(a), _) => (a.clone(), a.clone()),
            (None, Some(env)) => {
                let by_rules = |role| {
                    let ident = identity::resolve(env, repo.commondir(), role);
                    let default = Actor::default();
                    Actor {
                        name: ident.name.unwrap_or(default.name),
                        email: ident.email.unwrap_or(default.email),
                    }
                };
                (by_rules("author"), by_rules("committer"))
            }
            (None, None) => {
                let a = repo
                    .signature()
                    .ok()
                    .and_then(|s| {
                        Some(Actor {
                            name: s.name().ok()?.to_string(),
                            email: s.email().ok()?.to_string(),
                        })
                    })
                    .unwrap_or_default();
                (a.clone(), a)
            }
        };
        drop(head);
        Ok(Store {
            repo,
            branch,
            worktree,
            local_dir,
            options,
            actor,
            committer,
            steps,
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
        self.repo.workdir().filter(|_| self.worktree)
    }

    /// The repository's work tree, even when the store's branch is not
    /// checked out in it (a dedicated branch of a code repository).
    pub fn repo_workdir(&self) -> Option<&Path> {
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

    /// Who this store writes as: the commits' author and the ledger's actor.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Who commits this store's writes (and tags its milestones).
    pub fn committer(&self) -> &Actor {
        &self.committer
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

    /// A value of the repository's own git config (`.git/config`).
    pub fn get_config(&self, key: &str) -> Result<Option<String>> {
        let cfg = self
            .repo
            .config()
            .and_then(|c| c.open_level(git2::ConfigLevel::Local))
            .map_err(|e| Error::git("read config", e))?;
        not_found_to_none(cfg.get_string(key)).map_err(|e| Error::git(format!("read {key}"), e))
    }

    /// Sets a value in the repository's own git config (never global).
    pub fn set_config(&self, key: &str, value: &str) -> Result<()> {
        self.repo
            .config()
            .and_then(|c| c.open_level(git2::ConfigLevel::Local))
            .and_then(|mut c| c.set_str(key, value))
            .map_err(|e| Error::git(format!("set {key}"), e))
    }

    /// Removes a key from the repository's own git config, if set.
    pub fn unset_config(&self, key: &str) -> Result<()> {
        let mut cfg = self
            .repo
            .config()
            .and_then(|c| c.open_level(git2::ConfigLevel::Local))
            .map_err(|e| Error::git("open config", e))?;
        match cfg.remove(key) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(Error::git(format!("unset {key}"), e)),
        }
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
}
