//! The one transaction path: plan against a snapshot of the tip, validate,
//! derive, commit with the ledger's trailers, move the branch by
//! compare-and-swap, then bring the work tree up to date.
//!
//! The transaction knows a write only as a set of path changes and an event
//! draft. What the layers above add to every write (the tip check of the
//! hooks' rules, the mirror's pages) comes in as [`Steps`], handed to the
//! store when it is opened: this module names no domain module.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use git2::{ErrorCode, Oid};
use serde_json::Value;

use super::{idempotency, Changes, Snapshot, Store, StoreLock};
use crate::config::{Limits, StoreConfig};
use crate::error::{Error, Finding, Result};
use crate::event::{self, Event, EventDraft};
use crate::{layout, schema};

/// What the layers above the transaction add to every write. A store is
/// opened with one ([`Store::open_with`]); `Store::open` hands in cairn's own
/// (the hooks' tip check and the mirror).
pub trait Steps: Send + Sync {
    /// The rule violations at `tip` that must stop ordinary writes until
    /// `fsck --repair` fixes them (a `git commit --no-verify` broke a rule);
    /// empty when the tip is sound. `limits` are the tip's parse limits.
    fn check_tip(
        &self,
        store: &Store,
        tip: Oid,
        limits: schema::ParseLimits,
    ) -> Result<Vec<Finding>>;

    /// Adds the files derived from a planned change (the mirror's pages) to
    /// `changes`. `parsed` holds the validated value of each changed
    /// canonical file, so derivation need not parse them again. What is
    /// added is checked by the same path and size rules as the plan.
    fn derive(
        &self,
        store: &Store,
        snap: &Snapshot<'_>,
        changes: &mut Changes,
        parsed: BTreeMap<String, Value>,
    ) -> Result<()>;
}

/// No steps: writes commit exactly what they plan, on any tip. For tools and
/// tests that use the git layer alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSteps;

impl Steps for NoSteps {
    fn check_tip(&self, _: &Store, _: Oid, _: schema::ParseLimits) -> Result<Vec<Finding>> {
        Ok(Vec::new())
    }

    fn derive(
        &self,
        _: &Store,
        _: &Snapshot<'_>,
        _: &mut Changes,
        _: BTreeMap<String, Value>,
    ) -> Result<()> {
        Ok(())
    }
}

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

impl Store {
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
    /// earlier result is returned and nothing is written; when that commit
    /// was made for a different request (another digest), the write is
    /// refused with CONFLICT `IDEMPOTENCY_KEY_REUSED` and nothing is written.
    ///
    /// A tip that fails validation (a `git commit --no-verify` broke a rule)
    /// is refused with [`Error::TipInvalid`] until it is repaired.
    pub fn transact<F>(&self, key: Option<&idempotency::Keyed>, build: F) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        self.transact_with(key, true, &[], true, build)
    }

    /// [`Store::transact`] without the derived files (the mirror's pages):
    /// the commit holds what `build` planned and nothing else, like a hand
    /// commit, and the next write that derives catches the derived files up
    /// from the last commit that wrote them. For bulk writes made of many
    /// commits (an import), whose last commit derives once for all of them.
    pub fn transact_underived<F>(&self, build: F) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        self.transact_with(None, true, &[], false, build)
    }

    /// [`Store::transact`] for repairs: builds on the tip even when it fails
    /// validation. Only `fsck --repair` uses it.
    pub fn transact_repair<F>(&self, build: F) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        self.transact_with(None, false, &[], true, build)
    }

    /// [`Store::transact`] for a merge: the commit gets `theirs` as its
    /// second parent. `build` plans, against a snapshot of the tip (ours),
    /// the changes that make the merged tree; if the branch moves meanwhile
    /// it plans again on the new tip.
    pub fn transact_merge<F>(&self, theirs: Oid, build: F) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        self.transact_with(None, true, &[theirs], true, build)
    }

    pub(super) fn transact_with<F>(
        &self,
        key: Option<&idempotency::Keyed>,
        verify_tip: bool,
        merged: &[Oid],
        derive: bool,
        mut build: F,
    ) -> Result<Committed>
    where
        F: FnMut(&Snapshot<'_>) -> Result<Mutation>,
    {
        let _lock = self.lock_for_writing()?;
        const MAX_ATTEMPTS: u32 = 32;
        for _ in 0..MAX_ATTEMPTS {
            let snap = self.snapshot()?;
            if let Some(key) = key {
                if let Some(commit) = idempotency::lookup(self, &key.key)? {
                    idempotency::check_same_request(self, key, commit)?;
                    let event = self.event_of(commit)?;
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
                let findings = self.steps.check_tip(self, tip, limits)?;
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
            if derive {
                self.steps
                    .derive(self, &snap, &mut mutation.changes, parsed)?;
            }
            // What derivation added is checked too (paths, sizes), by the same limits.
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
            let parents: Vec<Oid> = snap.commit.iter().chain(merged).copied().collect();
            let (mut message, event) = event::compose(
                &mutation.event,
                key.map(|k| k.key.as_str()),
                &self.actor.name,
                now,
                &parents,
                mutation.changes.keys().cloned().collect(),
            );
            if let Some(key) = key {
                message.push_str(&format!(
                    "{}: {}\n",
                    idempotency::DIGEST_TRAILER,
                    key.digest
                ));
            }
            let when = git2::Time::new(now.unix_timestamp(), 0);
            let sig = |who: &super::Actor| {
                git2::Signature::new(&who.name, &who.email, &when)
                    .map_err(|e| Error::git("make signature", e))
            };
            let (author, committer) = (sig(&self.actor)?, sig(&self.committer)?);
            let commit = self.write_commit_packed(
                snap.commit,
                merged,
                &mutation.changes,
                &message,
                (&author, &committer),
            )?;
            self.write_journal(snap.commit, commit, &mutation.changes, &mutation.tags)?;
            crate::failpoint::failpoint!("store::before_cas");
            let moved = (|| {
                fail::fail_point!("store::ref_cas", |_| Err(git2::Error::from_str(
                    "failpoint store::ref_cas fired"
                )));
                match snap.commit {
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
                }
            })();
            match moved {
                Ok(_) => {
                    crate::failpoint::trace::libgit2_ref_update(self.repo.path(), &self.branch)
                }
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

    /// Takes the store lock for a write (waiting up to the configured
    /// timeout), refuses while git has a merge or rebase half done, and
    /// finishes what a crashed writer left in the journal.
    fn lock_for_writing(&self) -> Result<StoreLock> {
        let timeout = match self.options.lock_timeout {
            Some(t) => t,
            None => Duration::from_millis(self.config()?.limits.lock_timeout_ms),
        };
        let lock = StoreLock::acquire(&self.local_dir, timeout)?;
        self.refuse_mid_merge()?;
        self.recover_worktree()?;
        Ok(lock)
    }

    /// Finishes, under the store lock, what a killed writer left half done
    /// after its ref moved (the work-tree files, index entries and tags its
    /// journal names); nothing when no write is pending. Writes do this
    /// first anyway: a command that may end without writing (a sync with
    /// nothing to integrate) calls it, or the work tree would stay behind
    /// the tip until the next write.
    pub fn finish_interrupted_write(&self) -> Result<()> {
        if !self.has_pending_write() {
            return Ok(());
        }
        self.lock_for_writing().map(drop)
    }

    /// Moves the branch forward to `to`, a descendant of the tip (a
    /// fast-forward after a fetch), and brings the work tree and index up to
    /// date for the paths that differ. Nothing new is committed: `to` and its
    /// ancestors are already in the object database. Refused (CONFLICT) when
    /// `to` does not descend from the tip, and when a path about to change
    /// holds hand edits. Returns the previous tip.
    pub fn fast_forward(&self, to: Oid) -> Result<Option<Oid>> {
        let _lock = self.lock_for_writing()?;
        let tip = self.tip()?;
        if tip == Some(to) {
            return Ok(tip);
        }
        if let Some(old) = tip {
            if !self.is_ancestor(old, to)? {
                return Err(Error::Conflict {
                    rule: "NOT_A_FAST_FORWARD",
                    subject: self.branch.clone(),
                    message: format!("{to} does not descend from the tip {old}; merge instead"),
                });
            }
        }
        let mut changes = Changes::new();
        for change in self.tree_changes(tip, to)? {
            // Commits from elsewhere are checked before anything is written:
            // a path out of the store (`..`, `.git`) or a link would make the
            // work-tree update write outside it.
            if !crate::git_index::plain_path(&change.path) {
                return Err(Error::Integrity {
                    subject: change.path.clone(),
                    message: format!(
                        "commit {to} holds a path that leaves the store (`..`, `.git` or an empty part); refused, nothing was written"
                    ),
                });
            }
            if matches!(change.new, Some((_, false))) {
                return Err(Error::Integrity {
                    subject: change.path.clone(),
                    message: format!(
                        "commit {to} makes it a symlink or a submodule; store files are regular files; refused, nothing was written"
                    ),
                });
            }
            let content = match change.new {
                Some((id, _)) => Some(self.read_blob(id)?),
                None => None,
            };
            changes.insert(change.path, content);
        }
        let base_tree = match tip {
            Some(c) => Some(self.tree_of(c)?),
            None => None,
        };
        self.check_hand_edits(base_tree.as_ref(), &changes)?;
        drop(base_tree);
        self.write_journal(tip, to, &changes, &[])?;
        let moved = match tip {
            Some(old) => {
                self.repo
                    .reference_matching(&self.branch, to, true, old, "cairn: fast-forward")
            }
            None => self
                .repo
                .reference(&self.branch, to, false, "cairn: fast-forward"),
        };
        if let Err(e) = moved {
            self.clear_journal();
            return Err(match e.code() {
                ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked => Error::LockBusy {
                    path: self.repo.path().join(format!("{}.lock", self.branch)),
                    holder: "a git process".into(),
                    waited_ms: 0,
                },
                _ => Error::git(format!("update {}", self.branch), e),
            });
        }
        // The ref moved; the work tree follows, or the next write finishes it.
        if self.sync_worktree(&changes).is_ok() {
            self.clear_journal();
        }
        Ok(tip)
    }

    /// Checks each changed file (path, size, episode immutability, schema)
    /// against `limits` and returns the parsed value of each changed
    /// canonical file. A `repair` may write an episode back to the content of
    /// its tag, and nothing else to an existing episode.
    pub(super) fn validate_changes<'c>(
        &self,
        snap: &Snapshot<'_>,
        changes: impl Iterator<Item = (&'c String, &'c Option<Vec<u8>>)>,
        limits: &Limits,
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
    pub(super) fn episode_tag_message(&self, path: &str) -> Result<Option<Vec<u8>>> {
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
}

/// The limits a write is checked against: those of the config it writes, if
/// it writes one, else the tip's.
fn limits_for(snap: &Snapshot<'_>, changes: &Changes) -> Result<Limits> {
    Ok(match changes.get(layout::CONFIG) {
        Some(Some(bytes)) => {
            let v = schema::parse_document(layout::CONFIG, bytes, schema::ParseLimits::default())?;
            schema::validate("store_config", layout::CONFIG, &v)?;
            StoreConfig::from_value(v).limits
        }
        _ => snap.config().limits.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::event::EventType;
    use crate::store::StoreOptions;

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
                event: EventDraft::new(EventType::ManualEdit, "test"),
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
}
