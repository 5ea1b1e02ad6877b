//! Opening a store as cairn uses it: the transaction path of
//! [`crate::store`] wired to the layers above it.
//!
//! The store layer names no domain module; this one does. [`CairnSteps`] are
//! the [`Steps`] every cairn write takes (the tip check of [`crate::rules`]
//! and the pages of [`crate::mirror`]), and [`Store::open`],
//! [`Store::discover`] and [`Store::init`] open a store with them.
//! [`Store::init`] also decides what a new store's first commit holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use git2::Oid;
use serde_json::Value;

use crate::config::StoreConfig;
use crate::error::{Finding, Result};
use crate::event::{EventDraft, EventType};
use crate::store::{Changes, Mutation, Snapshot, Steps, Store, StoreOptions};
use crate::sync::driver;
use crate::{layout, mirror, rules, schema};

/// What every cairn write adds to the bare transaction: a tip broken by a
/// `--no-verify` commit stops writes ([`rules::check_tip`]), and the mirror
/// pages a change affects are rendered into the same commit
/// ([`mirror::extend_parsed`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CairnSteps;

impl Steps for CairnSteps {
    fn check_tip(
        &self,
        store: &Store,
        tip: Oid,
        limits: schema::ParseLimits,
    ) -> Result<Vec<Finding>> {
        rules::check_tip(store, tip, limits)
    }

    fn derive(
        &self,
        store: &Store,
        snap: &Snapshot<'_>,
        changes: &mut Changes,
        parsed: BTreeMap<String, Value>,
    ) -> Result<()> {
        mirror::extend_parsed(store, snap, changes, parsed)
    }
}

fn cairn_steps() -> Arc<dyn Steps> {
    Arc::new(CairnSteps)
}

impl Store {
    /// Makes a store at `path` (running `git init` first when needed) and
    /// records STORE_INIT as its first commit: the default `cairn.yaml`, and
    /// `.gitignore` / `.gitattributes` lines added to any already there.
    pub fn init(path: &Path, bare: bool, options: StoreOptions) -> Result<Store> {
        let store = Store::init_with(path, bare, options, cairn_steps(), first_commit(bare))?;
        // Milestone tags travel with a plain `git push` too, and a plain
        // `git pull` merges (cairn's drivers keep both sides; a rebase
        // replays commits whose seq trailers cannot change).
        store.set_config("push.followTags", "true")?;
        if store.get_config("pull.rebase")?.is_none() {
            store.set_config("pull.rebase", "false")?;
        }
        Ok(store)
    }

    /// Keeps a store on branch `branch` of the code repository around
    /// `path` (see [`Store::init_on_branch_with`]); returns the store and
    /// whether it was made (false: an existing store on that branch, or on a
    /// remote's branch of that name, was attached).
    pub fn init_on_branch(
        path: &Path,
        branch: &str,
        options: StoreOptions,
    ) -> Result<(Store, bool)> {
        // push.followTags is left alone: it would change how the code's own
        // tags travel. `cairn sync` pushes the milestone tags itself.
        Store::init_on_branch_with(path, branch, options, cairn_steps(), first_commit(true))
    }

    /// Opens the store at exactly `path` (a work tree or a bare repository).
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        Store::open_with(path, options, cairn_steps())
    }

    /// Finds the store containing `start`, walking up like git does.
    pub fn discover(start: &Path, options: StoreOptions) -> Result<Store> {
        Store::discover_with(start, options, cairn_steps())
    }
}

/// What a new store's first commit holds (STORE_INIT): the default
/// `cairn.yaml`, and `.gitignore` / `.gitattributes` lines added to any
/// already there.
fn first_commit(bare: bool) -> impl FnMut(&Snapshot<'_>) -> Result<Mutation> {
    move |snap| {
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
                &[
                    &["*.yaml text eol=lf", "mirror/** linguist-generated=true"],
                    driver::ATTRIBUTES,
                ]
                .concat(),
            )),
        );
        Ok(Mutation {
            tags: Vec::new(),
            changes,
            event: EventDraft::new(EventType::StoreInit, "init cairn store")
                .payload(serde_json::json!({"bare": bare})),
        })
    }
}

/// `existing` with each of `lines` appended unless already present.
pub(crate) fn with_lines(existing: Option<Vec<u8>>, lines: &[&str]) -> Vec<u8> {
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
