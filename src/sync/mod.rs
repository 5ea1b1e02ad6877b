//! Sync: many clones of one store converge, with nothing silently lost.
//!
//! `sync` fetches the remote's branch and milestone tags through the user's
//! `git`, integrates what came (nothing, a fast-forward, or a merge made in
//! process), and pushes; when the push is refused because someone pushed
//! meanwhile, it fetches and integrates again (bounded, with jitter).
//!
//! A merge never touches the work tree with conflict markers. [`merge_trees`]
//! computes the merged tree as changes on top of ours, kind by kind (the
//! rules of [`crate::merge`]; working sets changed on both sides replay the
//! other side's patches, see [`replay`]); what no rule can decide becomes a
//! conflict record ([`conflicts`]) beside a schema-valid canonical file. The
//! merge is committed through the one transaction path with both parents and
//! a SYNC_MERGE event; derived files (the mirror) are never merged but
//! rendered again from the merged files by the transaction's steps.
//!
//! Invariants: every change either side made to a canonical file is in the
//! merged file or in a conflict record; episodes are never merged (the same
//! id with different content is an INTEGRITY error); the merge is a pure
//! function of the three commits and the clock.

pub mod conflicts;
pub mod driver;
pub mod replay;

use std::collections::BTreeMap;
use std::time::Duration;

use git2::Oid;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::event::{EventDraft, EventType};
use crate::store::{Changes, Mutation, Pushed, Snapshot, Store};
use crate::working_set::WorkingSet;
use crate::{layout, merge, schema};

pub use conflicts::{Conflict, Take};

/// How a sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The remote (name or URL); `None`: the branch's upstream, else `origin`.
    pub remote: Option<String>,
    /// The remote branch; `None`: the store's own branch name.
    pub branch: Option<String>,
    /// How many times to fetch, merge and push before giving up when the
    /// remote keeps moving.
    pub attempts: u32,
    /// Fetch and integrate only (no push).
    pub no_push: bool,
    /// First finish a merge or rebase a plain `git pull` left half done:
    /// abort it and make the same merge by the schemas.
    pub resolve: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            remote: None,
            branch: None,
            attempts: 8,
            no_push: false,
            resolve: false,
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The remote.
    pub remote: String,
    /// The remote branch.
    pub branch: String,
    /// The tip before.
    pub before: Option<String>,
    /// The tip after.
    pub after: Option<String>,
    /// The remote's tip as last fetched (`None`: it had no such branch).
    pub fetched: Option<String>,
    /// Commits that came in (fast-forwarded or merged).
    pub received: usize,
    /// Merge commits made.
    pub merges: Vec<String>,
    /// Whether a fast-forward happened.
    pub fast_forwarded: bool,
    /// Conflict records the merges wrote.
    pub conflicts: Vec<String>,
    /// Whether the remote now has our tip.
    pub pushed: bool,
    /// Fetch-merge-push rounds it took.
    pub attempts: u32,
    /// Things worth saying.
    pub warnings: Vec<String>,
}

/// Fetches, integrates and pushes (see the module doc).
pub fn sync(store: &Store, opts: &SyncOptions) -> Result<SyncReport> {
    let remote = match &opts.remote {
        Some(r) => r.clone(),
        None => store.default_remote()?,
    };
    let branch = opts
        .branch
        .clone()
        .unwrap_or_else(|| store.branch_name().to_string());
    let mut report = SyncReport {
        before: store.tip()?.map(|t| t.to_string()),
        remote: remote.clone(),
        branch: branch.clone(),
        ..SyncReport::default()
    };
    if opts.resolve {
        resolve_in_progress(store, &mut report)?;
    }
    // A sync killed after its merge moved the branch left the work tree
    // behind it; with that merge already holding the remote's tip, nothing
    // below would write, so the journal is finished here.
    store.finish_interrupted_write()?;
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        report.attempts = attempt;
        let theirs = store.fetch(&remote, &branch)?;
        report.fetched = theirs.map(|t| t.to_string());
        if let Some(theirs) = theirs {
            integrate(store, theirs, &mut report)?;
        }
        let tip = store.require_tip()?;
        report.after = Some(tip.to_string());
        if opts.no_push {
            report.pushed = theirs == Some(tip);
            return Ok(report);
        }
        // Pushed even when the remote branch is at our tip: milestone tags
        // made since (or pushed by a plain `git push` without them) travel.
        match store.push(&remote, &branch, tip)? {
            Pushed::Accepted => {
                report.pushed = true;
                if !store.has_upstream()? {
                    store.set_upstream(&remote, &branch)?;
                }
                return Ok(report);
            }
            Pushed::Rejected => {
                // Someone pushed meanwhile: back off a little, with full
                // jitter so that writers racing for the remote fall out of
                // step; growing linearly and capped, so a writer that lost
                // a few rounds is not starved by one that keeps winning.
                let spread = (25 * u64::from(attempt)).min(250);
                let jitter = (crate::event::rand_u128() % u128::from(spread)) as u64;
                std::thread::sleep(Duration::from_millis(jitter));
            }
        }
    }
    Err(Error::Remote {
        remote,
        action: "push",
        stderr: format!(
            "the remote's {branch} kept moving: pushed {attempts} times, refused each time; run sync again"
        ),
    })
}

/// Finishes a merge or rebase that a plain git command left half done (a
/// clone without cairn's drivers, or a conflict in a file cairn does not
/// own): the operation is aborted, which restores the tip's files, and the
/// commit it was bringing in is merged by the schemas instead. Nothing in
/// progress: nothing to do.
pub fn resolve_in_progress(store: &Store, report: &mut SyncReport) -> Result<bool> {
    let Some((state, _)) = store.merge_state()? else {
        return Ok(false);
    };
    let Some(theirs) = store.incoming_head() else {
        return Err(Error::MergeInProgress {
            state,
            conflicted: vec![
                "(cannot tell which commit it brings in: finish or abort it with git)".into(),
            ],
        });
    };
    store.abort_in_progress()?;
    integrate(store, theirs, report)?;
    Ok(true)
}

/// Commits the conflict records git's merge driver left (see
/// [`driver`]); the same commit renders the mirror again for the merged
/// files. Returns the commit, if there was anything to record.
pub fn commit_pending(store: &Store) -> Result<Option<crate::store::Committed>> {
    let pending = driver::pending(store)?;
    if pending.is_empty() {
        return Ok(None);
    }
    let committed = store.transact(None, |_| {
        let mut changes = Changes::new();
        for (_, c) in &pending {
            changes.insert(c.file(), Some(c.to_yaml().into_bytes()));
        }
        Ok(Mutation {
            changes,
            event: EventDraft::new(
                EventType::SyncMerge,
                format!("record {} conflict(s) of a git merge", pending.len()),
            )
            .payload(json!({
                "via": "merge-driver",
                "conflicts": pending.iter().map(|(_, c)| &c.conflict_id).collect::<Vec<_>>(),
            })),
            tags: Vec::new(),
        })
    })?;
    for (file, _) in &pending {
        let _ = std::fs::remove_file(file);
    }
    Ok(Some(committed))
}

/// Brings `theirs` into the store's branch: nothing when we have it, a
/// fast-forward when we have nothing it lacks, else a merge commit.
pub fn integrate(store: &Store, theirs: Oid, report: &mut SyncReport) -> Result<()> {
    let Some(ours) = store.tip()? else {
        store.fast_forward(theirs)?;
        report.fast_forwarded = true;
        report.received += store.history(theirs, None)?.len();
        return Ok(());
    };
    if store.is_ancestor(theirs, ours)? {
        return Ok(());
    }
    if store.is_ancestor(ours, theirs)? {
        report.received += store.history(theirs, Some(ours))?.len();
        store.fast_forward(theirs)?;
        report.fast_forwarded = true;
        return Ok(());
    }
    report.received += store.history(theirs, Some(ours))?.len();
    let mut recorded = Vec::new();
    let committed = store.transact_merge(theirs, |snap| {
        let ours = snap.commit().expect("a store with a tip");
        let base = store.merge_base(ours, theirs)?;
        let merged = merge_trees(snap, base, theirs)?;
        recorded = merged
            .conflicts
            .iter()
            .map(|c| c.conflict_id.clone())
            .collect();
        let mut changes = merged.changes;
        for c in &merged.conflicts {
            changes.insert(c.file(), Some(c.to_yaml().into_bytes()));
        }
        let draft = EventDraft::new(
            EventType::SyncMerge,
            format!(
                "sync: merge {} into {}{}",
                short(theirs),
                short(ours),
                match merged.conflicts.len() {
                    0 => String::new(),
                    n => format!(", {n} conflict(s)"),
                }
            ),
        )
        .payload(json!({
            "ours": ours.to_string(),
            "theirs": theirs.to_string(),
            "base": base.map(|b| b.to_string()),
            "conflicts": merged.conflicts.iter().map(|c| &c.conflict_id).collect::<Vec<_>>(),
            "replayed": merged.replayed,
            "evicted": merged.evicted,
        }));
        Ok(Mutation {
            changes,
            event: draft,
            tags: Vec::new(),
        })
    })?;
    report.merges.push(committed.commit.to_string());
    report.conflicts.extend(recorded);
    report.warnings.extend(committed.warnings);
    Ok(())
}

fn short(id: Oid) -> String {
    id.to_string()[..10].to_string()
}

/// A merged tree, as changes on top of ours.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The files that differ from ours in the merged tree.
    pub changes: Changes,
    /// What no rule could decide.
    pub conflicts: Vec<Conflict>,
    /// Working-set patches replayed, by run: (their commit, new seq).
    pub replayed: BTreeMap<String, Vec<(String, u64)>>,
    /// Context items the token budget evicted while replaying.
    pub evicted: Vec<Value>,
}

/// Merges `theirs` into the snapshot's commit (ours) over `base`, kind by
/// kind (see the module doc). Derived files are left to the transaction's
/// steps, which render them from the merged canonical files.
pub fn merge_trees(snap: &Snapshot<'_>, base: Option<Oid>, theirs: Oid) -> Result<Merged> {
    let store = snap.store();
    let ours = snap.commit().expect("a merge has our side");
    let ours_changed: BTreeMap<String, Option<Oid>> = store
        .tree_changes(base, ours)?
        .into_iter()
        .map(|c| (c.path, c.new.map(|(id, _)| id)))
        .collect();
    let mut out = Merged::default();
    for change in store.tree_changes(base, theirs)? {
        let path = change.path;
        if layout::is_derived(&path) {
            continue;
        }
        let their_blob = change.new.map(|(id, _)| id);
        let read = |id: Option<Oid>| id.map(|i| store.read_blob(i)).transpose();
        let Some(our_blob) = ours_changed.get(&path) else {
            // Only their side changed it.
            out.changes.insert(path, read(their_blob)?);
            continue;
        };
        if *our_blob == their_blob {
            continue;
        }
        let base_bytes = read(change.old)?;
        let our_bytes = read(*our_blob)?;
        let their_bytes = read(their_blob)?;
        let merged = merge_path(
            snap,
            base,
            theirs,
            true,
            &path,
            base_bytes.as_deref(),
            our_bytes.as_deref(),
            their_bytes.as_deref(),
            &mut out,
        )?;
        if merged != our_bytes {
            out.changes.insert(path, merged);
        }
    }
    out.conflicts
        .sort_by(|a, b| a.conflict_id.cmp(&b.conflict_id));
    out.conflicts
        .dedup_by(|a, b| a.conflict_id == b.conflict_id);
    Ok(out)
}

/// Merges one file both sides changed: `None` content means absent on that
/// side; returns the merged content (`None`: the file goes). Working sets
/// replay their side's patches when `replay` allows and history permits;
/// canonical files follow [`crate::merge`]; other files git's text merge.
/// Conflicts are added to `out` as records.
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge_path(
    snap: &Snapshot<'_>,
    base: Option<Oid>,
    theirs: Oid,
    replay: bool,
    path: &str,
    base_bytes: Option<&[u8]>,
    our_bytes: Option<&[u8]>,
    their_bytes: Option<&[u8]>,
    out: &mut Merged,
) -> Result<Option<Vec<u8>>> {
    let store = snap.store();
    let ours = snap.commit().expect("a merge has our side");
    let now = snap.now();
    let kind = layout::schema_for(path);
    if replay && kind == Some("working_set") {
        if let Some(done) = replay_working_set(snap, base, theirs, path, our_bytes, out)? {
            return Ok(Some(done));
        }
    }
    if merge::handles(path) {
        let file = merge::merge_file(path, base_bytes, our_bytes, their_bytes)?;
        if kind == Some("working_set") {
            note_new_seqs(path, our_bytes, their_bytes, file.merged.as_deref(), out)?;
        }
        for c in file.conflicts {
            out.conflicts.push(conflicts::record(
                conflicts::Found {
                    kind: kind.unwrap_or("file").to_string(),
                    path: path.to_string(),
                    pointer: c.pointer,
                    rule: c.rule.to_string(),
                    base: c.base,
                    ours: c.ours,
                    theirs: c.theirs,
                    kept: c.kept,
                },
                base,
                ours,
                theirs,
                now,
            ));
        }
        return Ok(file.merged);
    }
    // A file cairn does not own: git's text merge; a true conflict keeps
    // ours in the file and both sides in a record, never markers.
    if let (Some(o), Some(t)) = (our_bytes, their_bytes) {
        if let Some(merged) = store.merge_text(base_bytes.unwrap_or_default(), o, t)? {
            return Ok(Some(merged));
        }
    }
    let text = |b: Option<&[u8]>| b.map(|b| Value::String(String::from_utf8_lossy(b).into_owned()));
    out.conflicts.push(conflicts::record(
        conflicts::Found {
            kind: "file".into(),
            path: path.to_string(),
            pointer: String::new(),
            rule: if our_bytes.is_none() || their_bytes.is_none() {
                "delete_vs_modify".into()
            } else {
                "text_conflict".into()
            },
            base: text(base_bytes),
            ours: text(our_bytes),
            theirs: text(their_bytes),
            kept: text(our_bytes.or(their_bytes)),
        },
        base,
        ours,
        theirs,
        now,
    ));
    Ok(our_bytes.or(their_bytes).map(<[u8]>::to_vec))
}

/// A working set merged field by field takes a seq past both sides': the
/// SYNC_MERGE payload names the seqs it took (as replays do), so the run's
/// ledger still ends at the file's seq.
fn note_new_seqs(
    path: &str,
    ours: Option<&[u8]>,
    theirs: Option<&[u8]>,
    merged: Option<&[u8]>,
    out: &mut Merged,
) -> Result<()> {
    let seq_of = |b: Option<&[u8]>| -> Result<Option<(String, u64)>> {
        let Some(b) = b else { return Ok(None) };
        let v = crate::store::parse_yaml(path, b)?;
        Ok(Some((
            v.get("run_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            v.get("_update_seq").and_then(Value::as_u64).unwrap_or(0),
        )))
    };
    let (Some((run, merged_seq)), ours, theirs) = (seq_of(merged)?, seq_of(ours)?, seq_of(theirs)?)
    else {
        return Ok(());
    };
    let sides = ours.map_or(0, |o| o.1).max(theirs.map_or(0, |t| t.1));
    let taken = out.replayed.entry(run).or_default();
    for seq in sides + 1..=merged_seq {
        taken.push(("field-wise merge".into(), seq));
    }
    Ok(())
}

/// The working-set fields a patch can set (the `ws_patch` schema's `set`).
const REPLAYED_FIELDS: [&str; 12] = [
    "objective",
    "status",
    "task_id",
    "thread_id",
    "project",
    "acceptance_criteria",
    "constraints",
    "current_stage",
    "next_action",
    "pinned_context",
    "sliding_context",
    "budget",
];

/// Replays their patches of one run onto our working set; `None` when their
/// side holds more than plain patches (the caller merges field by field).
fn replay_working_set(
    snap: &Snapshot<'_>,
    base: Option<Oid>,
    theirs: Oid,
    path: &str,
    ours: Option<&[u8]>,
    out: &mut Merged,
) -> Result<Option<Vec<u8>>> {
    let store = snap.store();
    let Some(ours_bytes) = ours else {
        return Ok(None);
    };
    let Some(commits) = replay::patches_of(store, base, theirs, path)? else {
        return Ok(None);
    };
    let ours_ws: WorkingSet = schema::load("working_set", path, ours_bytes)?;
    let done = replay::replay(store, ours_ws.clone(), &commits, path)?;
    let run = ours_ws.run_id.clone();
    let our_commit = snap.commit().expect("a merge has our side");
    for (commit, patch, why) in &done.refused {
        out.conflicts.push(conflicts::record(
            conflicts::Found {
                kind: "working_set".into(),
                path: path.to_string(),
                pointer: String::new(),
                rule: "patch_no_longer_applies".into(),
                base: None,
                ours: Some(serde_json::to_value(&ours_ws).expect("working sets serialize")),
                theirs: store
                    .read_file(*commit, path)?
                    .map(|b| crate::store::parse_yaml(path, &b))
                    .transpose()?,
                kept: Some(
                    json!({"refused_patch": patch, "commit": commit.to_string(), "why": why}),
                ),
            },
            base,
            our_commit,
            theirs,
            snap.now(),
        ));
    }
    // Their patches replayed last win a field both sides set since the
    // base; ours is then kept in a record, never silently replaced. A list
    // their patch replaced keeps ours' appended items only in the record too.
    let base_ws = match base {
        Some(b) => store
            .read_file(b, path)?
            .map(|bytes| crate::store::parse_yaml(path, &bytes))
            .transpose()?,
        None => None,
    }
    .unwrap_or(Value::Null);
    let ours_v = serde_json::to_value(&ours_ws).expect("working sets serialize");
    let merged_v = serde_json::to_value(&done.working_set).expect("working sets serialize");
    let evicted: Vec<&str> = done
        .evicted
        .iter()
        .filter_map(|i| i.get("id").and_then(Value::as_str))
        .collect();
    for field in REPLAYED_FIELDS {
        let (b, o, m) = (base_ws.get(field), ours_v.get(field), merged_v.get(field));
        if o == b || m == o {
            continue;
        }
        let lost = match field {
            "pinned_context" | "sliding_context" => {
                let ids = |v: Option<&Value>| -> Vec<String> {
                    v.and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| {
                                    i.get("id").and_then(Value::as_str).map(str::to_string)
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let (base_ids, merged_ids) = (ids(b), ids(m));
                ids(o).iter().any(|id| {
                    !base_ids.contains(id)
                        && !merged_ids.contains(id)
                        && !evicted.contains(&id.as_str())
                })
            }
            _ => true,
        };
        if lost {
            out.conflicts.push(conflicts::record(
                conflicts::Found {
                    kind: "working_set".into(),
                    path: path.to_string(),
                    pointer: format!("/{field}"),
                    rule: "both_changed".into(),
                    base: b.cloned(),
                    ours: o.cloned(),
                    theirs: m.cloned(),
                    kept: m.cloned(),
                },
                base,
                our_commit,
                theirs,
                snap.now(),
            ));
        }
    }
    out.evicted.extend(done.evicted.iter().cloned());
    out.replayed.insert(
        run,
        done.applied
            .iter()
            .map(|(c, seq)| (c.to_string(), *seq))
            .collect(),
    );
    Ok(Some(done.working_set.to_yaml().into_bytes()))
}
